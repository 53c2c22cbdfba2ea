//! The build cache: what a daemonless job (one component x platform) made, kept under
//! `<cache>/builds/` and reused by a later release whose job has the same inputs.
//!
//! ```text
//! job ─► key parts (base, source tree, recipe, build args, toolchain, stamp, release, pipeline)
//!     ─► sha256 of the parts = entry name ─► hit: blobs copied in, each digest checked
//!                                         └► miss: built, then stored (temp dir + rename)
//! ```
//!
//! An entry is `<key>/entry.json` (the parts and what the build knew, for the evidence stage)
//! and `<key>/blobs/sha256/<hex>` (the image's manifest, config and own layers; the base's are
//! materialized from the lock as always). `by-image/<component>-<os>-<arch>` names the last
//! entry stored for that image, so a miss says which parts changed. Entries are written into a
//! temporary directory beside them and renamed into place: a reader sees a whole entry or none,
//! and two releases storing one entry leave one. A blob whose digest does not check, or an
//! entry that does not read, is a miss with a note, and the entry is removed. `repro` and
//! `rebuild` never use the cache (they run `build`, which does not read or write it).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use oci::{Descriptor, Layout};
use schema::config::Config;
use schema::model::{Digest, Platform};

use super::backend::{BuiltImage, Job, Known, LockFile};
use super::golang::GoRecord;
use crate::stages::evidence::sbom::locks::LockedPackage;

/// The entry format: a change makes every older entry a miss.
const FORMAT: u32 = 1;

/// The cache directory of one release: `<cache>/builds`.
#[derive(Debug, Clone)]
pub struct BuildCache {
    pub dir: PathBuf,
    /// The size the entries are pruned to after a release ([`BuildCache::prune`]).
    pub max_bytes: u64,
}

/// The default of `release --cache-max-size`: 10 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;

/// What [`BuildCache::prune`] did, for `--json` and the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pruned {
    /// Entries removed, least recently used first, and their bytes.
    pub entries: usize,
    pub bytes: u64,
    /// What the cache's entries hold after the prune, and its limit.
    pub kept_bytes: u64,
    pub max_bytes: u64,
    /// Leftovers of killed runs removed: unlocked `.tmp-*` and `.discard-*` directories.
    pub leftovers: usize,
}

/// What the cache did for one image, for `--json` and the progress display.
#[derive(Debug, Clone, Serialize)]
pub struct CacheOutcome {
    pub component: String,
    pub platform: Platform,
    /// `cached` or `built`.
    pub status: &'static str,
    /// On a miss: the key parts that differ from the last entry of this image (empty when
    /// there was none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Why an entry was not used or not stored (corrupted, unreadable), if anything went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The inputs that determine a job's image, by name. Their digest names the entry.
pub type Parts = BTreeMap<String, String>;

/// An entry's `entry.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    format: u32,
    parts: Parts,
    manifest: Descriptor,
    config: Digest,
    layers: Vec<Digest>,
    /// The layers the image adds to its base (the blobs the entry holds, with the manifest and
    /// config).
    own_layers: Vec<Digest>,
    lock_files: Vec<CachedLock>,
    files: Vec<oci::layer::FileRecord>,
    go: Option<CachedGo>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedLock {
    path: String,
    sha256: String,
    image_path: Option<String>,
    packages: Vec<LockedPackage>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedGo {
    record: GoRecord,
    module_dir: String,
    go_sum: Option<(String, String)>,
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The key parts of `job`, built by the backend named `backend`.
pub fn parts(job: &Job<'_>, cfg: &Config, backend: &str) -> Result<Parts, String> {
    let c = job.component;
    let plan = job.plan;
    let mut recipe = c.recipe.clone();
    let build_args = (std::mem::take(&mut recipe.build_args), std::mem::take(&mut recipe.secret_build_args));
    let toolchain = c.recipe.go.as_ref().and_then(|g| cfg.toolchain(&g.toolchain)).map(json).unwrap_or_default();
    let mut p = Parts::new();
    p.insert("pipeline".into(), format!("{} (cache format {FORMAT}, layers {})", env!("CARGO_PKG_VERSION"), plan.compressor));
    p.insert("backend".into(), backend.to_owned());
    p.insert("image".into(), format!("{} {} {}", c.name, c.repository, job.image.platform));
    p.insert("base".into(), job.base.digest.to_string());
    p.insert("source".into(), source_tree(job.repo, job.commit, job.subdir)?);
    p.insert("recipe".into(), json(&recipe));
    p.insert("build-args".into(), json(&build_args));
    p.insert("toolchain".into(), toolchain);
    p.insert("stamp".into(), format!("{} {}", c.stamp.epoch, c.stamp.revision));
    p.insert("release".into(), format!("{} {} {}", c.version, plan.version, plan.channel));
    Ok(p)
}

/// The git tree id of `subdir` in `commit`: the source a job reads, as one id.
fn source_tree(repo: &Path, commit: &str, subdir: &str) -> Result<String, String> {
    let r = git2::Repository::open(repo).map_err(|e| format!("open `{}`: {e}", repo.display()))?;
    let c = git2::Oid::from_str(commit).and_then(|o| r.find_commit(o)).map_err(|e| format!("find commit `{commit}`: {e}"))?;
    let tree = c.tree().map_err(|e| format!("read the tree of `{commit}`: {e}"))?;
    let sub = subdir.trim_matches('/');
    if sub.is_empty() || sub == "." {
        return Ok(tree.id().to_string());
    }
    tree.get_path(Path::new(sub)).map(|e| e.id().to_string()).map_err(|e| format!("find `{sub}` in `{commit}`: {e}"))
}

/// Marks the entry at `dir` used now (its `entry.json`'s time): a prune removes it last.
fn touch(dir: &Path) {
    if let Ok(f) = fs::File::options().append(true).open(dir.join("entry.json")) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

fn key_of(parts: &Parts) -> Digest {
    Digest::of(json(parts).as_bytes())
}

impl BuildCache {
    pub fn new(cache: &Path) -> BuildCache {
        BuildCache { dir: cache.join("builds"), max_bytes: DEFAULT_MAX_BYTES }
    }

    /// Removes the least recently used entries (by the time of their `entry.json`, which a hit
    /// refreshes) until the rest fit in `max_bytes`, never one used since `since` (this
    /// release's), with the scans of the images removed; then the leftovers of killed runs.
    /// An entry is renamed aside before it is removed: a release reading it meanwhile finds it
    /// gone and builds the image (a miss, never a wrong hit). Errors are notes, as in
    /// [`BuildCache::store`].
    pub fn prune(&self, since: std::time::SystemTime) -> Result<Pruned, String> {
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e: io::Error| format!("`{}`: {e}", p.display())
        };
        let mut pruned = Pruned { max_bytes: self.max_bytes, ..Pruned::default() };
        let read = match fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(pruned),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        // (last use, bytes, name) of every whole entry.
        let mut entries = Vec::new();
        for e in read.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".discard-") {
                // Renamed aside by a run that died before removing it: nobody reads it.
                if fs::remove_dir_all(e.path()).is_ok() {
                    pruned.leftovers += 1;
                }
                continue;
            }
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(meta) = fs::metadata(e.path().join("entry.json")) else { continue };
            let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            let blobs: u64 = fs::read_dir(e.path().join("blobs/sha256"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|b| Some(b.metadata().ok()?.len()))
                .sum();
            let bytes = meta.len() + blobs;
            entries.push((used, bytes, name));
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        for (used, bytes, name) in &entries {
            if total <= self.max_bytes || *used >= since {
                break;
            }
            let dir = self.dir.join(name);
            // Read only for an entry that goes: its image's scan goes with it.
            let manifest = fs::read(dir.join("entry.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
                .map(|entry| entry.manifest.digest.hex().to_owned());
            let aside = self.dir.join(format!(".discard-{}-{name}", std::process::id()));
            if fs::rename(&dir, &aside).is_err() {
                continue;
            }
            match fs::remove_dir_all(&aside) {
                // Another release's prune swept it first (a `.discard-*` is nobody's).
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(&aside)(e)),
                _ => {}
            }
            if let Some(hex) = manifest {
                let scans = self.dir.join("scans");
                for s in fs::read_dir(&scans).into_iter().flatten().flatten() {
                    if s.file_name().to_string_lossy().ends_with(&format!("-{hex}.json")) {
                        let _ = fs::remove_file(s.path());
                    }
                }
            }
            total -= bytes;
            pruned.entries += 1;
            pruned.bytes += bytes;
        }
        pruned.kept_bytes = total;
        // Temporary entries of runs that were killed (a live run holds its lock).
        pruned.leftovers += oci::dirs::remove_orphans(&self.dir, ".tmp-").map_err(io(&self.dir))?;
        Ok(pruned)
    }

    fn entry_dir(&self, key: &Digest) -> PathBuf {
        self.dir.join(key.hex())
    }

    fn pointer(&self, job: &Job<'_>) -> PathBuf {
        self.dir.join("by-image").join(format!("{}-{}", job.component.name, job.image.platform.slug()))
    }

    /// The image of `job` from the cache, its blobs copied into `layout` (each checked against
    /// its digest), or why not: `Err` holds the outcome of the miss.
    pub fn load(&self, job: &Job<'_>, parts: &Parts, layout: &Layout) -> Result<BuiltImage, CacheOutcome> {
        let key = key_of(parts);
        let dir = self.entry_dir(&key);
        let miss = |note: Option<String>| CacheOutcome {
            component: job.component.name.clone(),
            platform: job.image.platform,
            status: "built",
            changed: if note.is_some() { Vec::new() } else { self.changed(job, parts) },
            note,
        };
        let bytes = match fs::read(dir.join("entry.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(miss(None)),
            Err(e) => return Err(miss(Some(format!("`{}`: {e}", dir.join("entry.json").display())))),
        };
        let entry: Entry = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => return Err(miss(Some(self.discard(&dir, &format!("`entry.json` does not read: {e}"))))),
        };
        if entry.format != FORMAT || &entry.parts != parts {
            return Err(miss(Some(self.discard(&dir, "its recorded key parts are not the ones it is named by"))));
        }
        // 1. Every blob of the entry, streamed into the layout and checked against its digest;
        //    a blob that does not check is discarded and the entry removed (fail closed).
        let blobs = std::iter::once(&entry.manifest.digest).chain(std::iter::once(&entry.config)).chain(&entry.own_layers);
        for d in blobs {
            match copy_checked(&dir.join("blobs/sha256").join(d.hex()), d, layout) {
                Ok(()) => {}
                Err(BringIn::Corrupt(why)) => return Err(miss(Some(self.discard(&dir, &why)))),
                // The release's side failed (a full disk): the entry is not at fault.
                Err(BringIn::Io(why)) => return Err(miss(Some(format!("cache entry `{}` not used: {why}", dir.display())))),
            }
        }
        // 2. The base's layers are in the layout already (materialized from the lock); the
        //    manifest must name exactly them, then the entry's own.
        let base = &job.base.manifest.layers;
        let expected: Vec<&Digest> = base.iter().map(|l| &l.digest).chain(&entry.own_layers).collect();
        if entry.layers.iter().collect::<Vec<_>>() != expected {
            return Err(miss(Some(self.discard(&dir, "its layers are not its base's followed by its own"))));
        }
        touch(&dir);
        Ok(BuiltImage {
            component: job.component.name.clone(),
            platform: job.image.platform,
            manifest: entry.manifest,
            config: entry.config,
            layers: entry.layers,
            base: job.base.digest.clone(),
            lock_files: entry
                .lock_files
                .into_iter()
                .map(|l| LockFile { path: l.path, sha256: l.sha256, image_path: l.image_path, packages: l.packages })
                .collect(),
            known: Known {
                base_packages: job.base.packages.clone(),
                base_suite: job.base_suite.clone(),
                files: entry.files,
                base_layers: base.len(),
                base_inventory: Some(job.base_inventory.clone()),
            },
            buildkit: None,
            go: entry.go.map(|g| GoRecord { module_dir: g.module_dir, go_sum: g.go_sum, ..g.record }),
        })
    }

    /// The parts that differ from the last entry stored for this image.
    fn changed(&self, job: &Job<'_>, parts: &Parts) -> Vec<String> {
        let Ok(key) = fs::read_to_string(self.pointer(job)) else { return Vec::new() };
        let Ok(bytes) = fs::read(self.dir.join(key.trim()).join("entry.json")) else { return Vec::new() };
        let Ok(last) = serde_json::from_slice::<Entry>(&bytes) else { return Vec::new() };
        let names: std::collections::BTreeSet<&String> = parts.keys().chain(last.parts.keys()).collect();
        names.into_iter().filter(|n| parts.get(*n) != last.parts.get(*n)).cloned().collect()
    }

    /// Removes the entry at `dir` (renamed aside first, so no reader sees half of it) and
    /// says why.
    fn discard(&self, dir: &Path, why: &str) -> String {
        let aside = self.dir.join(format!(".discard-{}-{}", std::process::id(), dir.file_name().and_then(|n| n.to_str()).unwrap_or("")));
        if fs::rename(dir, &aside).is_ok() {
            let _ = fs::remove_dir_all(&aside);
        }
        format!("cache entry `{}` removed: {why}", dir.display())
    }

    /// Stores what `job` built. Errors are returned as a note: a cache that cannot be written
    /// costs the next release a build, never this one.
    pub fn store(&self, job: &Job<'_>, parts: &Parts, img: &BuiltImage, layout: &Layout) -> Result<(), String> {
        let key = key_of(parts);
        let dest = self.entry_dir(&key);
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e: io::Error| format!("`{}`: {e}", p.display())
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let own_layers: Vec<Digest> = img.layers[img.known.base_layers.min(img.layers.len())..].to_vec();
        if !dest.join("entry.json").is_file() {
            // Locked while in use: a prune removes only those of killed runs.
            let tmp = oci::dirs::Scratch::new_in(&self.dir, ".tmp-").map_err(io(&self.dir))?;
            let blobs = tmp.path().join("blobs/sha256");
            fs::create_dir_all(&blobs).map_err(io(&blobs))?;
            for d in std::iter::once(&img.manifest.digest).chain(std::iter::once(&img.config)).chain(&own_layers) {
                let to = blobs.join(d.hex());
                // A copy, never a hard link: whoever edits a release's blob in place must not
                // change the cache's (it would be caught, but cost a build).
                fs::copy(layout.blob_path(d), &to).map_err(io(&to))?;
            }
            let entry = Entry {
                format: FORMAT,
                parts: parts.clone(),
                manifest: img.manifest.clone(),
                config: img.config.clone(),
                layers: img.layers.clone(),
                own_layers,
                lock_files: img
                    .lock_files
                    .iter()
                    .map(|l| CachedLock {
                        path: l.path.clone(),
                        sha256: l.sha256.clone(),
                        image_path: l.image_path.clone(),
                        packages: l.packages.clone(),
                    })
                    .collect(),
                files: img.known.files.clone(),
                go: img.go.as_ref().map(|g| CachedGo { record: g.clone(), module_dir: g.module_dir.clone(), go_sum: g.go_sum.clone() }),
            };
            let path = tmp.path().join("entry.json");
            fs::write(&path, serde_json::to_vec_pretty(&entry).map_err(|e| e.to_string())?).map_err(io(&path))?;
            let tmp = tmp.keep();
            // Another release may have stored the same entry meanwhile: then keep that one.
            if fs::rename(&tmp, &dest).is_err() {
                let _ = fs::remove_dir_all(&tmp);
            }
        }
        // Stored now, or by another release meanwhile: used by this one either way.
        touch(&dest);
        let pointer = self.pointer(job);
        if let Some(p) = pointer.parent() {
            fs::create_dir_all(p).map_err(io(p))?;
        }
        oci::write_atomic(&pointer, key.hex().as_bytes()).map_err(io(&pointer))
    }
}

/// Why a blob of an entry did not come in.
enum BringIn {
    /// The entry's blob is missing, unreadable or holds other bytes: the entry goes.
    Corrupt(String),
    /// Writing into the release failed: the entry stays.
    Io(String),
}

/// Brings the blob at `from` into `layout` if its digest is `digest`: hashed first, then
/// hard-linked (copied across file systems), so a hit costs one read of each blob, not a copy.
/// Nothing reaches the layout unless it checks. The link shares the file with the release: a
/// release blob edited in place changes the entry, which the next hit finds (and rebuilds).
fn copy_checked(from: &Path, digest: &Digest, layout: &Layout) -> Result<(), BringIn> {
    let (actual, _) = oci::layer::hash_file(from).map_err(|e| BringIn::Corrupt(format!("`{}`: {e}", from.display())))?;
    if &actual != digest {
        return Err(BringIn::Corrupt(format!("blob `{}` holds `{actual}`, not `{digest}`", from.display())));
    }
    let dest = layout.blob_path(digest);
    if dest.exists() {
        return Ok(());
    }
    match fs::hard_link(from, &dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => {
            // Another file system: a copy, checked again on its way in.
            let io = |e: &dyn std::fmt::Display| BringIn::Io(format!("`{}`: {e}", dest.display()));
            let mut file = fs::File::open(from).map_err(|e| BringIn::Corrupt(format!("`{}`: {e}", from.display())))?;
            let mut w = layout.blob_writer().map_err(|e| io(&e))?;
            io::copy(&mut file, &mut w).map_err(|e| io(&e))?;
            w.commit(Some(digest)).map(|_| ()).map_err(|e| match e {
                oci::LayoutError::DigestMismatch { actual, .. } => {
                    BringIn::Corrupt(format!("blob `{}` holds `{actual}`, not `{digest}`", from.display()))
                }
                other => io(&other),
            })
        }
    }
}
