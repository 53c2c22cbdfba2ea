//! Offline kits (spec §3.3, §10.2, §15): `stellaops-kit-<version>-<channel>.tar.zst`.
//!
//! # Format
//! A zstd stream (level [`ZSTD_LEVEL`], multithreaded mode, frame checksum) of a tar archive
//! (GNU headers, regular files only, mode 0644, owner 0:0, mtime = the release's
//! SOURCE_DATE_EPOCH) whose entries are, in this order:
//! 1. `manifest/release.yaml`, `manifest/release.yaml.sig`, `manifest/release.yaml.sigstore.json`
//!    (the signed release, spec §6.1) and `manifest/kit.dsse.json`: the kit's inventory, a DSSE
//!    envelope signed with the release key around an in-toto statement whose subject is
//!    release.yaml and whose predicate ([`Inventory`]) lists every other entry with its sha256
//!    and size, the total size, and for a delta kit the blobs the target must already hold;
//! 2. every other entry sorted by path: `images/` (one OCI layout: every image, its
//!    signatures and referrers), `sboms/`, `attest/`, `charts/`, `compose/`, `plugins/`,
//!    `policy/`, as the channel's `[kit]` in release-trains/ selects.
//!
//! The same release and key give the same kit bytes (ECDSA signatures are RFC 6979).
//!
//! # Import (fails closed; there is no switch that weakens it)
//! 1. read `manifest/` first and verify release.yaml (signature, bundle, checksum) and then the
//!    inventory's envelope with the pinned public key: nothing else is trusted before this;
//! 2. stream every other entry into a staging directory beside the target, hashing it; refuse
//!    anything the inventory does not list with that digest and size, links, devices, FIFOs,
//!    directories, absolute or `..` paths, duplicates, missing entries, and a stream that
//!    decompresses past the declared total;
//! 3. for a delta kit, hash the blobs it requires in the target;
//! 4. verify every image signature and attestation envelope ([`crate::verify::verify_tree`]);
//! 5. only then make the content visible: new blobs renamed into the target layout, the
//!    release's files into `stellaops/<version>-<channel>/`, `index.json` written last.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::{Fips, PublicKey, SigningKey};
use crate::layer::{HashingReader, HashingWriter};
use crate::manifest;
use crate::model::Digest;
use crate::oci::{Descriptor, Index, Layout, Manifest, ANNOTATION_REF_NAME, MEDIA_INDEX};
use crate::report::{Event, Reporter, Stage};
use crate::schema::{KitContents, KitSection};
use crate::sign::{self, Envelope};
use crate::verify::{self, VerifyReport};

/// Predicate type of the inventory statement.
pub const KIT_PREDICATE: &str = "https://stella-ops.org/offline-kit/v1";
/// zstd level of every kit (part of the format: another level gives other bytes).
pub const ZSTD_LEVEL: i32 = 3;
/// Largest `manifest/` entry read before anything is verified.
const MANIFEST_MAX: u64 = 16 << 20;
/// The entries that open every kit, in order.
const MANIFEST_ENTRIES: [&str; 4] =
    ["manifest/release.yaml", "manifest/release.yaml.sig", "manifest/release.yaml.sigstore.json", "manifest/kit.dsse.json"];
/// Tar overhead allowed per entry on top of its content: its header, a GNU long-name header
/// and its name, and the padding of the content to 512 bytes.
const ENTRY_OVERHEAD: u64 = 4 * 512;
/// The end-of-archive blocks and the padding to a 10 KiB record some tar writers add.
const ARCHIVE_TAIL: u64 = 20 * 512;

/// The file name of a kit.
pub fn kit_name(version: &str, channel: &str) -> String {
    format!("stellaops-kit-{version}-{channel}.tar.zst")
}

/// What a kit holds, signed: the predicate of `manifest/kit.dsse.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inventory {
    pub version: String,
    pub channel: String,
    /// `full`, or `delta` (needs [`Inventory::requires`] in the target).
    pub kind: KitKind,
    /// The components whose images, SBOMs and attestations the kit carries.
    pub components: Vec<String>,
    /// The release.yaml (sha256) of the release a delta kit applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_from: Option<String>,
    /// Every entry after `manifest/`, sorted by path.
    pub entries: Vec<Entry>,
    /// Blobs a delta kit does not carry and the target must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Entry>,
    /// Sum of the sizes of `entries`.
    pub total_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KitKind {
    Full,
    Delta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{release}` cannot be packed: {reason}")]
    Release { release: PathBuf, reason: String },
    #[error("kit `{kit}` refused: {reason}\n  nothing was imported; the target is as it was")]
    Refused { kit: PathBuf, reason: String },
    #[error("kit `{kit}` refused: {} checks failed:\n{}\n  nothing was imported; the target is as it was", .report.checks.iter().filter(|c| !c.ok).count(), failed_lines(.report))]
    Unverified { kit: PathBuf, report: VerifyReport },
    #[error("the delta kit `{kit}` needs content the target `{target}` does not hold:\n{}\n  hint: import the kit of release `{from}` first, or use the full kit", .missing.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    MissingBase { kit: PathBuf, target: String, from: String, missing: Vec<String> },
    #[error("`{target}` cannot receive a kit: {reason}")]
    Target { target: PathBuf, reason: String },
    #[error("pushing to `{target}`: {reason}")]
    Push { target: String, reason: String },
}

fn failed_lines(report: &VerifyReport) -> String {
    report.checks.iter().filter(|c| !c.ok).map(|c| format!("  - {}: {}", c.what, c.detail)).collect::<Vec<_>>().join("\n")
}

impl KitError {
    pub fn exit_code(&self) -> i32 {
        match self {
            KitError::Io { .. } | KitError::Push { .. } => crate::exit::ENVIRONMENT,
            _ => crate::exit::REJECTED,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KitError + '_ {
    move |source| KitError::Io { path: path.to_owned(), source }
}

// ---------------------------------------------------------------------------------------------
// Writing

/// A kit to write.
#[derive(Debug)]
pub struct KitRequest<'a> {
    /// The release directory (`target/releases/<version>-<channel>`).
    pub release: &'a Path,
    /// What the channel's kit holds (release-trains/<channel>.toml `[kit]`).
    pub contents: &'a KitContents,
    pub key: &'a SigningKey,
    /// A delta kit against this previous release (its release.yaml or directory) or kit.
    pub delta_from: Option<&'a Path>,
    /// The kit file to write (through a temporary file beside it).
    pub out: &'a Path,
    /// zstd workers (the bytes do not depend on it).
    pub threads: u32,
}

/// What [`write`] made.
#[derive(Debug, Clone, Serialize)]
pub struct KitSummary {
    pub path: PathBuf,
    /// Size of the `.tar.zst` file.
    pub size: u64,
    /// Sum of the entries' sizes (uncompressed content).
    pub content_size: u64,
    pub entries: usize,
    pub kind: KitKind,
    /// For a delta kit: how many blobs (and bytes) it leaves to the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_blobs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_size: Option<u64>,
}

/// Writes the kit of a release.
pub fn write(req: &KitRequest<'_>, reporter: &dyn Reporter) -> Result<KitSummary, KitError> {
    let release = req.release;
    let bad = |reason: String| KitError::Release { release: release.to_owned(), reason };
    let yaml_path = release.join("release.yaml");
    let yaml = fs::read(&yaml_path).map_err(|e| bad(format!("release.yaml: {e} (is this a release directory?)")))?;
    let doc = manifest::parse(&yaml).map_err(|e| bad(format!("release.yaml: {e}")))?;
    let epoch = time::OffsetDateTime::parse(&doc.release.date, &time::format_description::well_known::Rfc3339)
        .map_err(|e| bad(format!("release.yaml: `release.date` `{}`: {e}", doc.release.date)))?
        .unix_timestamp();
    for s in [KitSection::Images, KitSection::Attest] {
        if !req.contents.sections.contains(&s) {
            return Err(bad(format!(
                "the channel's `[kit] sections` lacks `{}`: import verifies images against their signed attestations",
                section_name(s)
            )));
        }
    }
    let all: Vec<String> = doc.components.iter().map(|c| c.name.clone()).collect();
    let components: Vec<String> = if req.contents.components.iter().any(|c| c == "*") {
        all.clone()
    } else {
        for c in &req.contents.components {
            if !all.contains(c) {
                return Err(bad(format!("the channel's `[kit] components` names `{c}`, which is not in this release")));
            }
        }
        all.iter().filter(|c| req.contents.components.contains(c)).cloned().collect()
    };

    // Every file of the kit but manifest/, with where it comes from.
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let layout = Layout::open(&release.join("images")).map_err(|e| bad(e.to_string()))?;
    let (index, blobs) = select_images(&layout, &components, components.len() == all.len()).map_err(bad)?;
    // The release's own index.json when the kit holds every component, else the subset's.
    let staged_index = tempfile::NamedTempFile::new().map_err(io_err(Path::new("index.json")))?;
    if components.len() == all.len() {
        files.insert("images/index.json".into(), release.join("images/index.json"));
    } else {
        let mut index_bytes = serde_json::to_vec(&index).map_err(|e| bad(e.to_string()))?;
        index_bytes.push(b'\n');
        fs::write(staged_index.path(), &index_bytes).map_err(io_err(staged_index.path()))?;
        files.insert("images/index.json".into(), staged_index.path().to_owned());
    }
    files.insert("images/oci-layout".into(), release.join("images/oci-layout"));
    let mut blob_sizes: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    for (d, size) in &blobs {
        let rel = format!("images/blobs/sha256/{}", d.hex());
        blob_sizes.insert(rel.clone(), (d.clone(), *size));
        files.insert(rel, layout.blob_path(d));
    }
    for section in &req.contents.sections {
        let name = section_name(*section);
        match section {
            KitSection::Images => {}
            KitSection::Sboms => {
                for c in &components {
                    add_tree(&mut files, release, &format!("sboms/{c}"))?;
                }
            }
            KitSection::Attest => {
                let attest = release.join("attest");
                for e in fs::read_dir(&attest).map_err(io_err(&attest))? {
                    let e = e.map_err(io_err(&attest))?;
                    let n = e.file_name().to_string_lossy().into_owned();
                    let is_component_dir = all.contains(&n);
                    if !is_component_dir || components.contains(&n) {
                        add_tree(&mut files, release, &format!("attest/{n}"))?;
                    }
                }
            }
            _ => add_tree(&mut files, release, name)?,
        }
    }

    // A delta kit leaves out the blobs the previous release already has.
    let mut requires = Vec::new();
    let mut delta_from = None;
    if let Some(prev) = req.delta_from {
        let (prev_yaml, prev_blobs) = previous_blobs(prev)?;
        delta_from = Some(prev_yaml.to_string());
        for (rel, (d, size)) in &blob_sizes {
            if prev_blobs.get(d) == Some(size) {
                files.remove(rel);
                requires.push(Entry { path: rel.clone(), digest: d.clone(), size: *size });
            }
        }
    }

    // The inventory: blob digests are their names (checked again while writing); other files
    // are hashed here.
    reporter.event(Event::StageStarted { stage: Stage::Kit, jobs: files.len() });
    let mut entries = Vec::with_capacity(files.len());
    for (rel, src) in &files {
        let (digest, size) = match blob_sizes.get(rel) {
            Some((d, _)) => (d.clone(), fs::metadata(src).map_err(io_err(src))?.len()),
            None => hash_file(src)?,
        };
        entries.push(Entry { path: rel.clone(), digest, size });
    }
    let total_size = entries.iter().map(|e| e.size).sum();
    let inventory = Inventory {
        version: doc.release.version.clone(),
        channel: doc.release.channel.clone(),
        kind: if req.delta_from.is_some() { KitKind::Delta } else { KitKind::Full },
        components: components.clone(),
        delta_from,
        entries,
        requires,
        total_size,
    };
    let yaml_digest = Digest::of(&yaml);
    let statement = sign::statement(
        &[("release.yaml".to_owned(), &yaml_digest)],
        KIT_PREDICATE,
        serde_json::to_value(&inventory).map_err(|e| bad(e.to_string()))?,
    );
    let envelope = sign::sign_envelope(req.key, sign::PAYLOAD_TYPE, &statement);
    let mut envelope_bytes = serde_json::to_vec_pretty(&envelope).map_err(|e| bad(e.to_string()))?;
    envelope_bytes.push(b'\n');

    // The archive, through a temporary file renamed when complete.
    let out = req.out;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = tempfile::Builder::new().prefix(".kit-").tempfile_in(dir).map_err(io_err(dir))?;
    let file = tmp.as_file().try_clone().map_err(io_err(tmp.path()))?;
    // (The kit's own sha256 is not computed here: a second hash of every byte on this thread
    // would cost a third of the throughput; `sha256sum` it when publishing.)
    let mut enc = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 20, file), ZSTD_LEVEL).map_err(io_err(out))?;
    // Multithreaded mode always: its bytes differ from single-threaded mode but not with the
    // number of workers.
    enc.multithread(req.threads.max(1)).map_err(io_err(out))?;
    enc.include_checksum(true).map_err(io_err(out))?;
    let mut tar = tar::Builder::new(enc);
    tar.mode(tar::HeaderMode::Deterministic);
    for (name, bytes) in [
        (MANIFEST_ENTRIES[0], yaml.clone()),
        (MANIFEST_ENTRIES[1], read(&release.join("release.yaml.sig"))?),
        (MANIFEST_ENTRIES[2], read(&release.join("release.yaml.sigstore.json"))?),
        (MANIFEST_ENTRIES[3], envelope_bytes),
    ] {
        append(&mut tar, name, bytes.len() as u64, epoch, &mut bytes.as_slice()).map_err(io_err(out))?;
    }
    for e in &inventory.entries {
        let src = &files[&e.path];
        let f = fs::File::open(src).map_err(io_err(src))?;
        let mut r = HashingReader::new(BufReader::with_capacity(1 << 20, f));
        append(&mut tar, &e.path, e.size, epoch, &mut r).map_err(io_err(src))?;
        let (d, n) = r.finish();
        if d != e.digest || n != e.size {
            return Err(bad(format!("`{}` changed while it was packed, or does not hash to its name", src.display())));
        }
        reporter.event(Event::JobFinished { stage: Stage::Kit, job: e.path.clone(), detail: e.size.to_string() });
    }
    let enc = tar.into_inner().map_err(io_err(out))?;
    let mut buf = enc.finish().map_err(io_err(out))?;
    buf.flush().map_err(io_err(out))?;
    drop(buf);
    tmp.as_file().sync_all().map_err(io_err(out))?;
    let size = tmp.as_file().metadata().map_err(io_err(out))?.len();
    tmp.persist(out).map_err(|e| KitError::Io { path: out.to_owned(), source: e.error })?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(out, fs::Permissions::from_mode(0o644)).map_err(io_err(out))?;
    }
    reporter.event(Event::StageFinished { stage: Stage::Kit });
    let required_size: u64 = inventory.requires.iter().map(|e| e.size).sum();
    Ok(KitSummary {
        path: out.to_owned(),
        size,
        content_size: inventory.total_size,
        entries: inventory.entries.len() + MANIFEST_ENTRIES.len(),
        kind: inventory.kind,
        required_blobs: (inventory.kind == KitKind::Delta).then_some(inventory.requires.len()),
        required_size: (inventory.kind == KitKind::Delta).then_some(required_size),
    })
}

fn section_name(s: KitSection) -> &'static str {
    match s {
        KitSection::Images => "images",
        KitSection::Sboms => "sboms",
        KitSection::Attest => "attest",
        KitSection::Charts => "charts",
        KitSection::Compose => "compose",
        KitSection::Plugins => "plugins",
        KitSection::Policy => "policy",
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KitError> {
    fs::read(path).map_err(io_err(path))
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, size: u64, epoch: i64, data: &mut dyn Read) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch.max(0) as u64);
    tar.append_data(&mut h, path, data)
}

fn hash_file(path: &Path) -> Result<(Digest, u64), KitError> {
    crate::layer::hash_file(path).map_err(io_err(path))
}

/// Adds every regular file under `release/rel` (if it exists), by relative path.
fn add_tree(files: &mut BTreeMap<String, PathBuf>, release: &Path, rel: &str) -> Result<(), KitError> {
    let root = release.join(rel);
    if !root.exists() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(&root).sort_by_file_name() {
        let e = e.map_err(|e| KitError::Io { path: root.clone(), source: e.into() })?;
        let ft = e.file_type();
        if ft.is_dir() {
            continue;
        }
        let sub = e.path().strip_prefix(release).unwrap_or(e.path());
        let name = sub
            .to_str()
            .ok_or_else(|| KitError::Release { release: release.to_owned(), reason: format!("`{}` is not UTF-8", sub.display()) })?;
        if !ft.is_file() {
            return Err(KitError::Release {
                release: release.to_owned(),
                reason: format!("`{name}` is not a regular file: a kit carries regular files only"),
            });
        }
        files.insert(name.to_owned(), e.path().to_owned());
    }
    Ok(())
}

/// The index.json of the kit's layout and every blob it reaches. With `all`, every entry of
/// the release's index; otherwise the named components' images and whatever refers to them
/// (cosign `sha256-<hex>.sig` tags, OCI 1.1 referrers).
fn select_images(layout: &Layout, components: &[String], all: bool) -> Result<(Index, BTreeMap<Digest, u64>), String> {
    let index = layout.index().map_err(|e| e.to_string())?;
    let mut keep: Vec<Descriptor> = Vec::new();
    let mut blobs = BTreeMap::new();
    let mut images = BTreeSet::new();
    for d in &index.manifests {
        let name = d.annotations.get(ANNOTATION_REF_NAME);
        if all || name.is_some_and(|n| components.contains(n)) {
            reach(layout, d, &mut blobs, &mut images)?;
            keep.push(d.clone());
        }
    }
    if !all {
        for d in &index.manifests {
            if keep.contains(d) {
                continue;
            }
            let sig_of = d
                .annotations
                .get(ANNOTATION_REF_NAME)
                .and_then(|n| n.strip_prefix("sha256-"))
                .and_then(|n| n.strip_suffix(".sig"))
                .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok());
            // An OCI 1.1 referrer (manifest or index) names what it is about in `subject`.
            let subject = layout
                .read_json::<serde_json::Value>(&d.digest, "a manifest")
                .ok()
                .and_then(|v| v["subject"]["digest"].as_str().and_then(|s| s.parse::<Digest>().ok()));
            if sig_of.or(subject).is_some_and(|s| images.contains(&s)) {
                reach(layout, d, &mut blobs, &mut BTreeSet::new())?;
                keep.push(d.clone());
            }
        }
    }
    Ok((Index { manifests: keep, ..index }, blobs))
}

/// Records `d` and every blob below it.
fn reach(layout: &Layout, d: &Descriptor, blobs: &mut BTreeMap<Digest, u64>, images: &mut BTreeSet<Digest>) -> Result<(), String> {
    if blobs.insert(d.digest.clone(), d.size).is_some() {
        return Ok(());
    }
    images.insert(d.digest.clone());
    let json_kinds = [MEDIA_INDEX, crate::oci::MEDIA_DOCKER_LIST];
    if json_kinds.contains(&d.media_type.as_str()) {
        let i: Index = layout.read_json(&d.digest, "an image index").map_err(|e| e.to_string())?;
        for m in &i.manifests {
            reach(layout, m, blobs, images)?;
        }
    } else if d.media_type == crate::oci::MEDIA_MANIFEST || d.media_type == crate::oci::MEDIA_DOCKER_MANIFEST {
        let m: Manifest = layout.read_json(&d.digest, "an image manifest").map_err(|e| e.to_string())?;
        for b in std::iter::once(&m.config).chain(&m.layers) {
            blobs.insert(b.digest.clone(), b.size);
        }
    }
    Ok(())
}

/// The release.yaml digest and the blobs of a previous release (directory, its release.yaml,
/// or its kit).
fn previous_blobs(prev: &Path) -> Result<(Digest, BTreeMap<Digest, u64>), KitError> {
    let bad = |reason: String| KitError::Release { release: prev.to_owned(), reason: format!("as `--delta-from`: {reason}") };
    if prev.to_string_lossy().ends_with(".tar.zst") {
        let (yaml, inv) = read_inventory_unverified(prev).map_err(bad)?;
        let blobs = inv
            .entries
            .iter()
            .chain(&inv.requires)
            .filter(|e| e.path.starts_with("images/blobs/sha256/"))
            .map(|e| (e.digest.clone(), e.size))
            .collect();
        return Ok((Digest::of(&yaml), blobs));
    }
    let dir = if prev.is_dir() { prev.to_owned() } else { prev.parent().unwrap_or(Path::new(".")).to_owned() };
    let yaml = fs::read(dir.join("release.yaml")).map_err(|e| bad(format!("release.yaml: {e}")))?;
    let layout = Layout::open(&dir.join("images")).map_err(|e| bad(e.to_string()))?;
    let (_, blobs) = select_images(&layout, &[], true).map_err(bad)?;
    Ok((Digest::of(&yaml), blobs))
}

/// release.yaml and the inventory of a kit, read but not verified (for `--delta-from`: the
/// previous kit is our own output; import verifies everything).
fn read_inventory_unverified(kit: &Path) -> Result<(Vec<u8>, Inventory), String> {
    let f = fs::File::open(kit).map_err(|e| e.to_string())?;
    let dec = zstd::stream::read::Decoder::new(f).map_err(|e| e.to_string())?;
    let mut ar = tar::Archive::new(dec.take(4 * (MANIFEST_MAX + ENTRY_OVERHEAD)));
    let mut yaml = Vec::new();
    for e in ar.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let path = e.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
        if path == MANIFEST_ENTRIES[0] {
            e.read_to_end(&mut yaml).map_err(|e| e.to_string())?;
        } else if path == MANIFEST_ENTRIES[3] {
            let env: Envelope = serde_json::from_reader(&mut e).map_err(|e| e.to_string())?;
            let body = base64_decode(&env.payload)?;
            let st: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let inv = serde_json::from_value(st["predicate"].clone()).map_err(|e| e.to_string())?;
            return Ok((yaml, inv));
        }
    }
    Err("no manifest/kit.dsse.json".into())
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Reading and importing

/// Where `kit import` loads a kit.
#[derive(Debug, Clone)]
pub enum Target {
    /// An OCI image layout directory (made when absent).
    Dir(PathBuf),
    /// A registry: images pushed by digest under `<namespace>/<component>`, signatures and
    /// attestations as referrers, the version tag last ([`crate::publish::push_layout`]).
    Registry { target: crate::distribution::RegistryTarget, docker_config: Option<PathBuf> },
}

impl std::str::FromStr for Target {
    type Err = String;
    /// `docker://HOST[:PORT]/NAMESPACE` for a registry; anything else is a directory.
    fn from_str(s: &str) -> Result<Target, String> {
        match s.strip_prefix("docker://") {
            Some(r) => Ok(Target::Registry { target: r.parse()?, docker_config: None }),
            None => Ok(Target::Dir(PathBuf::from(s))),
        }
    }
}

/// What a verified kit is, and where its content was staged.
#[derive(Debug)]
struct Checked {
    inventory: Inventory,
    report: VerifyReport,
    staging: tempfile::TempDir,
}

/// What `verify <kit>` and `kit import` report.
#[derive(Debug, Clone, Serialize)]
pub struct KitReport {
    pub kit: PathBuf,
    pub version: String,
    pub channel: String,
    pub kind: KitKind,
    pub entries: usize,
    pub content_size: u64,
    pub checks: VerifyReport,
    /// For an import: the target and how many blobs were new to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_blobs: Option<usize>,
}

/// `verify <kit>`: steps 1–4 of the import, without importing. A delta kit is checked against
/// the content of `base` (an OCI layout holding the release it applies to) when given.
pub fn verify_kit(kit: &Path, key: &PublicKey, fips: Fips, base: Option<&Path>, reporter: &dyn Reporter) -> Result<KitReport, KitError> {
    let tmp = std::env::temp_dir();
    let checked = check(kit, key, fips, &tmp, base, reporter)?;
    Ok(report_of(kit, &checked, None, None))
}

fn report_of(kit: &Path, c: &Checked, target: Option<String>, new_blobs: Option<usize>) -> KitReport {
    KitReport {
        kit: kit.to_owned(),
        version: c.inventory.version.clone(),
        channel: c.inventory.channel.clone(),
        kind: c.inventory.kind,
        entries: c.inventory.entries.len() + MANIFEST_ENTRIES.len(),
        content_size: c.inventory.total_size,
        checks: c.report.clone(),
        target,
        new_blobs,
    }
}

/// `kit import <kit> --into <target>`.
pub fn import(kit: &Path, target: &Target, key: &PublicKey, fips: Fips, reporter: &dyn Reporter) -> Result<KitReport, KitError> {
    let dir = match target {
        Target::Dir(dir) => dir,
        Target::Registry { target, docker_config } => return import_registry(kit, target, docker_config.clone(), key, fips, reporter),
    };
    let dir = if dir.is_absolute() { dir.clone() } else { std::env::current_dir().map_err(io_err(dir))?.join(dir) };
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| KitError::Target { target: dir.clone(), reason: "name a directory".into() })?;
    let parent = dir.parent().unwrap_or(Path::new("/")).to_owned();
    if dir.exists() {
        let empty = fs::read_dir(&dir).map_err(io_err(&dir))?.next().is_none();
        if !empty && !dir.join("oci-layout").is_file() {
            return Err(KitError::Target {
                target: dir.clone(),
                reason: "it is neither empty nor an OCI image layout (no `oci-layout`)".into(),
            });
        }
    } else {
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    }
    let base = dir.join("oci-layout").is_file().then_some(dir.as_path());
    // Staging beside the target (same file system: the final moves are renames).
    let checked = check(kit, key, fips, &parent, base, reporter)?;
    let new_blobs = load_dir(&checked, &dir, name, &parent)?;
    Ok(report_of(kit, &checked, Some(dir.display().to_string()), Some(new_blobs)))
}

/// Steps 1–4 in a temporary directory, then step 5 for a registry: every blob, manifest and
/// referrer pushed by digest and checked, the version tag last. A delta kit's base would have
/// to be fetched back and hashed: delta kits import into a directory only.
fn import_registry(
    kit: &Path,
    target: &crate::distribution::RegistryTarget,
    docker_config: Option<PathBuf>,
    key: &PublicKey,
    fips: Fips,
    reporter: &dyn Reporter,
) -> Result<KitReport, KitError> {
    let checked = check(kit, key, fips, &std::env::temp_dir(), None, reporter)?;
    if checked.inventory.kind == KitKind::Delta {
        return Err(KitError::Target {
            target: PathBuf::from(format!("docker://{}/{}", target.host, target.namespace)),
            reason: "a delta kit imports into an OCI layout directory only; import the full kit into a registry".into(),
        });
    }
    let opts = crate::publish::PushOptions { tags: vec![checked.inventory.version.clone()], docker_config, ..Default::default() };
    let pushed = crate::publish::push_layout(&checked.staging.path().join("images"), target, &opts, reporter)
        .map_err(|e| KitError::Push { target: format!("{}/{}", target.host, target.namespace), reason: e.to_string() })?;
    Ok(report_of(kit, &checked, Some(format!("docker://{}/{}", target.host, target.namespace)), Some(pushed.blobs_uploaded as usize)))
}

/// Step 5 for a directory: move new blobs into the layout, the release's files into
/// `stellaops/<version>-<channel>/`, and write `index.json` last.
fn load_dir(c: &Checked, dir: &Path, name: &str, parent: &Path) -> Result<usize, KitError> {
    let staged = c.staging.path();
    // A fresh target is assembled whole beside it and renamed into place.
    let fresh = !dir.join("oci-layout").is_file();
    let building;
    let into = if fresh {
        building = tempfile::Builder::new().prefix(&format!(".{name}.new-")).tempdir_in(parent).map_err(io_err(parent))?;
        building.path().to_owned()
    } else {
        dir.to_owned()
    };
    let layout = if fresh { Layout::create(&into) } else { Layout::open(&into) }
        .map_err(|e| KitError::Target { target: dir.to_owned(), reason: e.to_string() })?;
    let mut new_blobs = 0;
    let blobs = staged.join("images/blobs/sha256");
    let target_blobs = into.join("blobs/sha256");
    fs::create_dir_all(&target_blobs).map_err(io_err(&target_blobs))?;
    if blobs.exists() {
        for e in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let e = e.map_err(io_err(&blobs))?;
            let dest = target_blobs.join(e.file_name());
            if !dest.exists() {
                fs::rename(e.path(), &dest).map_err(io_err(&dest))?;
                new_blobs += 1;
            }
        }
    }
    // The release's other files.
    let rel_dir = into.join("stellaops").join(format!("{}-{}", c.inventory.version, c.inventory.channel));
    let files = staged.join(".release");
    fs::create_dir_all(&files).map_err(io_err(&files))?;
    for e in fs::read_dir(staged).map_err(io_err(staged))? {
        let e = e.map_err(io_err(staged))?;
        let n = e.file_name();
        if n != "images" && n != ".release" {
            fs::rename(e.path(), files.join(&n)).map_err(io_err(&files))?;
        }
    }
    fs::create_dir_all(rel_dir.parent().unwrap_or(&into)).map_err(io_err(&rel_dir))?;
    swap_dir(&files, &rel_dir)?;
    // index.json last: the merge of what was there and the kit's, the kit's names winning.
    let kit_index: Index = serde_json::from_slice(&read(&staged.join("images/index.json"))?)
        .map_err(|e| KitError::Target { target: dir.to_owned(), reason: format!("index.json: {e}") })?;
    let mut index = if fresh {
        Index { schema_version: 2, media_type: Some(MEDIA_INDEX.to_owned()), manifests: Vec::new(), annotations: BTreeMap::new() }
    } else {
        layout.index().map_err(|e| KitError::Target { target: dir.to_owned(), reason: e.to_string() })?
    };
    let names: BTreeSet<&String> = kit_index.manifests.iter().filter_map(|d| d.annotations.get(ANNOTATION_REF_NAME)).collect();
    index
        .manifests
        .retain(|d| !d.annotations.get(ANNOTATION_REF_NAME).is_some_and(|n| names.contains(n)) && !kit_index.manifests.contains(d));
    index.manifests.extend(kit_index.manifests.iter().cloned());
    layout.write_index(&index).map_err(|e| KitError::Target { target: dir.to_owned(), reason: e.to_string() })?;
    if fresh {
        fs::rename(&into, dir).map_err(io_err(dir))?;
    }
    Ok(new_blobs)
}

/// Puts directory `from` at `to`, replacing what was there (renames only).
fn swap_dir(from: &Path, to: &Path) -> Result<(), KitError> {
    if to.exists() {
        let old = to.with_file_name(format!(".{}.old", to.file_name().and_then(|n| n.to_str()).unwrap_or("release")));
        let _ = fs::remove_dir_all(&old);
        fs::rename(to, &old).map_err(io_err(to))?;
        fs::rename(from, to).map_err(io_err(to))?;
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    } else {
        fs::rename(from, to).map_err(io_err(to))?;
    }
    Ok(())
}

/// A reader that fails once more than `limit` bytes have passed: the guard against a stream
/// that decompresses past what the kit declares.
struct Limited<R> {
    inner: R,
    read: u64,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.exceeded = true;
            return Err(io::Error::other(format!("the stream decompresses past the {} bytes the kit declares", self.limit)));
        }
        Ok(n)
    }
}

/// Shares the byte limit between the tar reader and the check after the archive's end.
struct Shared<R>(std::rc::Rc<std::cell::RefCell<Limited<R>>>);
impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}
impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// Steps 1–4: read and verify the manifest, stream and check every entry into a staging
/// directory under `staging_parent`, check a delta's base in `base`, verify signatures.
fn check(
    kit: &Path,
    key: &PublicKey,
    fips: Fips,
    staging_parent: &Path,
    base: Option<&Path>,
    reporter: &dyn Reporter,
) -> Result<Checked, KitError> {
    let refuse = |reason: String| KitError::Refused { kit: kit.to_owned(), reason };
    key.check_fips(fips, "the public key").map_err(|e| refuse(e.to_string()))?;
    let file = fs::File::open(kit).map_err(io_err(kit))?;
    let dec = zstd::stream::read::Decoder::new(file).map_err(io_err(kit))?;
    let limited = Shared(std::rc::Rc::new(std::cell::RefCell::new(Limited {
        inner: dec,
        read: 0,
        limit: MANIFEST_ENTRIES.len() as u64 * (MANIFEST_MAX + ENTRY_OVERHEAD),
        exceeded: false,
    })));
    let mut archive = tar::Archive::new(limited.clone());
    let stream_err = |e: io::Error| -> KitError {
        let l = limited.0.borrow();
        if l.exceeded {
            refuse(format!("the stream decompresses past the {} bytes the kit declares (a decompression bomb?)", l.limit))
        } else {
            refuse(format!("the zstd stream or the tar archive is truncated or corrupt: {e}"))
        }
    };
    let mut entries = archive.entries().map_err(stream_err)?;
    let staging = tempfile::Builder::new().prefix(".stellaops-kit-import-").tempdir_in(staging_parent).map_err(io_err(staging_parent))?;

    // 1. manifest/ first.
    let mut manifest: Vec<Vec<u8>> = Vec::new();
    for expected in MANIFEST_ENTRIES {
        let mut e = match entries.next() {
            Some(e) => e.map_err(stream_err)?,
            None => return Err(refuse(format!("the kit ends before `{expected}`"))),
        };
        let path = entry_path(&e).map_err(&refuse)?;
        check_type(&e, &path).map_err(&refuse)?;
        if path != expected {
            return Err(refuse(format!("entry `{path}` where `{expected}` must be: a kit opens with its manifest")));
        }
        if e.size() > MANIFEST_MAX {
            return Err(refuse(format!("entry `{path}` is {} bytes, more than a manifest may be", e.size())));
        }
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).map_err(stream_err)?;
        manifest.push(bytes);
    }
    let (yaml, sig, bundle, env) = (&manifest[0], &manifest[1], &manifest[2], &manifest[3]);
    let sig = String::from_utf8_lossy(sig);
    if !manifest::verify_blob(key, yaml, sig.trim()) {
        return Err(refuse("`manifest/release.yaml.sig` does not verify release.yaml with the given public key".into()));
    }
    let (stated, computed) = manifest::checksum(yaml).map_err(|e| refuse(format!("`manifest/release.yaml`: {e}")))?;
    if stated != computed {
        return Err(refuse(format!("`manifest/release.yaml` states checksum `{stated}` but hashes to `{computed}`")));
    }
    let doc = manifest::parse(yaml).map_err(|e| refuse(format!("`manifest/release.yaml`: {e}")))?;
    let _ = bundle; // verified with the rest of the release in step 4
    let env: Envelope = serde_json::from_slice(env).map_err(|e| refuse(format!("`manifest/kit.dsse.json`: not a DSSE envelope: {e}")))?;
    let body = sign::verify_envelope(key, &env).map_err(|e| refuse(format!("`manifest/kit.dsse.json`: {e}")))?;
    let st: serde_json::Value = serde_json::from_slice(&body).map_err(|e| refuse(format!("`manifest/kit.dsse.json`: {e}")))?;
    if st["predicateType"] != KIT_PREDICATE {
        return Err(refuse(format!("`manifest/kit.dsse.json`: predicate type `{}` is not `{KIT_PREDICATE}`", st["predicateType"])));
    }
    let yaml_digest = Digest::of(yaml);
    if st["subject"][0]["digest"]["sha256"].as_str() != Some(yaml_digest.hex()) {
        return Err(refuse("`manifest/kit.dsse.json` is the inventory of another release.yaml".into()));
    }
    let inventory: Inventory =
        serde_json::from_value(st["predicate"].clone()).map_err(|e| refuse(format!("`manifest/kit.dsse.json`: inventory: {e}")))?;
    if inventory.version != doc.release.version || inventory.channel != doc.release.channel {
        return Err(refuse("`manifest/kit.dsse.json` names another version or channel than release.yaml".into()));
    }
    let mut listed: BTreeMap<&str, &Entry> = BTreeMap::new();
    for e in inventory.entries.iter().chain(&inventory.requires) {
        safe_path(&e.path).map_err(|r| refuse(format!("the inventory lists `{}`: {r}", e.path)))?;
        // A blob's name is its digest: checking the content against the inventory then checks
        // it against the name, and step 4 need not hash blobs again.
        if let Some(hex) = e.path.strip_prefix("images/blobs/sha256/") {
            if hex != e.digest.hex() {
                return Err(refuse(format!("the inventory lists `{}` with digest `{}`", e.path, e.digest)));
            }
        }
    }
    for e in &inventory.entries {
        if e.path.starts_with("manifest/") || listed.insert(e.path.as_str(), e).is_some() {
            return Err(refuse(format!("the inventory lists `{}` twice", e.path)));
        }
    }
    if inventory.total_size != inventory.entries.iter().map(|e| e.size).sum::<u64>() {
        return Err(refuse("the inventory's total size is not the sum of its entries".into()));
    }
    reporter.event(Event::Note {
        message: format!(
            "kit of {} ({}) verified: release.yaml signature and checksum, inventory of {} entries ({} bytes)",
            doc.release.version,
            doc.release.channel,
            inventory.entries.len(),
            inventory.total_size
        ),
    });

    // 2. Every other entry, as the inventory lists it.
    reporter.event(Event::StageStarted { stage: Stage::Kit, jobs: inventory.entries.len() });
    {
        let mut l = limited.0.borrow_mut();
        l.limit = l.read + inventory.total_size + ENTRY_OVERHEAD * (inventory.entries.len() as u64 + 1) + ARCHIVE_TAIL;
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for e in entries {
        let mut e = e.map_err(stream_err)?;
        let path = entry_path(&e).map_err(&refuse)?;
        check_type(&e, &path).map_err(&refuse)?;
        let Some(want) = listed.get(path.as_str()) else {
            return Err(refuse(if MANIFEST_ENTRIES.contains(&path.as_str()) || seen.contains(&path) {
                format!("entry `{path}` appears twice")
            } else {
                format!("entry `{path}` is not in the signed inventory")
            }));
        };
        if !seen.insert(path.clone()) {
            return Err(refuse(format!("entry `{path}` appears twice")));
        }
        if e.size() != want.size || e.header().entry_size().unwrap_or(u64::MAX) != want.size {
            return Err(refuse(format!("entry `{path}` is {} bytes; the inventory says {}", e.size(), want.size)));
        }
        let dest = staging.path().join(&path);
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(io_err(p))?;
        }
        let f = fs::File::create(&dest).map_err(io_err(&dest))?;
        let mut w = HashingWriter::new(BufWriter::with_capacity(1 << 20, f));
        io::copy(&mut (&mut e).take(want.size), &mut w).map_err(stream_err)?;
        let (mut f, digest, n) = w.finish();
        f.flush().map_err(io_err(&dest))?;
        if n != want.size {
            return Err(refuse(format!("entry `{path}` is truncated: {n} of {} bytes", want.size)));
        }
        if digest != want.digest {
            return Err(refuse(format!("entry `{path}` hashes to `{digest}`; the inventory says `{}`", want.digest)));
        }
        reporter.event(Event::JobFinished { stage: Stage::Kit, job: path, detail: n.to_string() });
    }
    // After the archive's end only zeros may follow, and the stream must end cleanly within
    // the declared size (the zstd frame checksum is checked by the decoder at its end).
    {
        let mut rest = limited.clone();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = rest.read(&mut buf).map_err(stream_err)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().any(|b| *b != 0) {
                return Err(refuse("data follows the end of the tar archive".into()));
            }
        }
    }
    let missing: Vec<&str> = listed.keys().filter(|p| !seen.contains(**p)).copied().collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "{} entries of the signed inventory are missing: {}",
            missing.len(),
            missing.iter().take(10).map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
        )));
    }
    for (i, name) in MANIFEST_ENTRIES.iter().enumerate().take(3) {
        let dest = staging.path().join(name);
        fs::create_dir_all(staging.path().join("manifest")).map_err(io_err(staging.path()))?;
        fs::write(&dest, &manifest[i]).map_err(io_err(&dest))?;
    }

    // 3. A delta kit's base, hashed where it is.
    if !inventory.requires.is_empty() {
        let mut missing = Vec::new();
        for r in &inventory.requires {
            let hex = r.path.strip_prefix("images/blobs/sha256/").unwrap_or_default();
            let found = base.map(|b| b.join("blobs/sha256").join(hex));
            let ok = match &found {
                Some(p) if p.is_file() => match hash_file(p) {
                    Ok((d, n)) if d == r.digest && n == r.size => true,
                    Ok(_) => {
                        missing.push(format!("blob `{}` is corrupt in the target", r.digest));
                        continue;
                    }
                    Err(_) => false,
                },
                _ => false,
            };
            if !ok {
                missing.push(format!("blob `{}` ({} bytes)", r.digest, r.size));
                continue;
            }
            let dest = staging.path().join(&r.path);
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p).map_err(io_err(p))?;
            }
            let src = found.unwrap_or_default();
            if fs::hard_link(&src, &dest).is_err() {
                fs::copy(&src, &dest).map_err(io_err(&dest))?;
            }
        }
        if !missing.is_empty() {
            return Err(KitError::MissingBase {
                kit: kit.to_owned(),
                target: base.map(|b| b.display().to_string()).unwrap_or_else(|| "(an empty target)".into()),
                from: inventory.delta_from.clone().unwrap_or_default(),
                missing,
            });
        }
    }

    // 4. Signatures and attestations, as `verify` checks a release.
    let only = Some(inventory.components.iter().cloned().collect());
    let report = verify::verify_tree(&verify::Tree::kit(staging.path(), only), key, fips);
    if !report.ok() {
        return Err(KitError::Unverified { kit: kit.to_owned(), report });
    }
    reporter.event(Event::StageFinished { stage: Stage::Kit });
    Ok(Checked { inventory, report, staging })
}

fn entry_path<R: Read>(e: &tar::Entry<'_, R>) -> Result<String, String> {
    let raw = e.path_bytes();
    let path = std::str::from_utf8(&raw).map_err(|_| format!("entry `{}` has a name that is not UTF-8", String::from_utf8_lossy(&raw)))?;
    safe_path(path).map_err(|r| format!("entry `{path}`: {r}"))?;
    Ok(path.to_owned())
}

/// A relative path of plain names: no root, no `..`, no `.`, no empty parts.
fn safe_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        return Err("is an absolute path".into());
    }
    if path.is_empty() || path.ends_with('/') || path.contains("//") {
        return Err("is not the path of a file".into());
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err("climbs out of the kit with `..`".into()),
            _ => return Err("is not a plain relative path".into()),
        }
    }
    Ok(())
}

fn check_type<R: Read>(e: &tar::Entry<'_, R>, path: &str) -> Result<(), String> {
    use tar::EntryType as T;
    let t = e.header().entry_type();
    let what = match t {
        T::Regular | T::Continuous => return Ok(()),
        T::Symlink => "a symbolic link",
        T::Link => "a hard link",
        T::Char => "a character device",
        T::Block => "a block device",
        T::Fifo => "a FIFO",
        T::Directory => "a directory",
        _ => "not a regular file",
    };
    let target = e.link_name_bytes().map(|l| format!(" to `{}`", String::from_utf8_lossy(&l))).unwrap_or_default();
    Err(format!("entry `{path}` is {what}{target}: a kit holds regular files only"))
}
