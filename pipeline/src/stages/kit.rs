//! The kit stage: a release directory to `stellaops-kit-<version>-<channel>.tar.zst`
//! (format: [`schema::kit`]; the reader and `kit import`: `verifier::kit`). Besides the
//! channel's `[kit] sections`, every kit carries `tools/` (the customer tool, its signature,
//! SBOM and provenance), when the release has one, `trust/` (the trust repository), and the
//! release trains with the base lock (`release-trains/*.toml`, `base-images.lock`: the skew
//! rules of the customer tool's upgrade preflight).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use oci::layer::HashingReader;
use oci::{Descriptor, Index, Layout, Manifest, ANNOTATION_REF_NAME, MEDIA_INDEX};
use schema::files::{KitContents, KitSection};
use schema::kit::*;
use schema::model::Digest;
use schema::report::{Event, Reporter, Stage};
use verifier::keys::Signer;
use verifier::kit::{hash_file, io_err, read_file, KitError};
use verifier::manifest;
use verifier::sign::{self, Envelope};

/// The configuration files `schema::config::load` reads, shipped in every release (and kit) so
/// that the upgrade preflight runs where the repository is not.
pub const PREFLIGHT_RULES: [&str; 5] = [
    "release-trains/components.toml",
    "release-trains/edge.toml",
    "release-trains/stable.toml",
    "release-trains/lts.toml",
    "base-images.lock",
];

/// A kit to write.
#[derive(Debug)]
pub struct KitRequest<'a> {
    /// The release directory (`target/releases/<version>-<channel>`).
    pub release: &'a Path,
    /// What the channel's kit holds (`release-trains/<channel>.toml` `[kit]`).
    pub contents: &'a KitContents,
    pub key: &'a dyn Signer,
    /// A delta kit against this previous release (its release.yaml or directory) or kit.
    pub delta_from: Option<&'a Path>,
    /// The kit file to write (through a temporary file beside it).
    pub out: &'a Path,
    /// zstd workers (the bytes do not depend on it).
    pub threads: u32,
}

/// What [`write`](fn@write) made.
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
    let staged = oci::dirs::Scratch::new("stellaops-kit-index-").map_err(io_err(&std::env::temp_dir()))?;
    if components.len() == all.len() {
        files.insert("images/index.json".into(), release.join("images/index.json"));
    } else {
        let mut index_bytes = serde_json::to_vec(&index).map_err(|e| bad(e.to_string()))?;
        index_bytes.push(b'\n');
        let staged_index = staged.path().join("index.json");
        fs::write(&staged_index, &index_bytes).map_err(io_err(&staged_index))?;
        files.insert("images/index.json".into(), staged_index);
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

    // Every kit carries the customer tool with its evidence (`tools/`) and the channels' trust
    // repository when the release has one (`trust/`), whatever the channel's `[kit] sections`.
    for always in ["tools", "trust"] {
        add_tree(&mut files, release, always)?;
    }
    // And the release trains and skew rules the customer tool's preflight reads.
    for file in PREFLIGHT_RULES {
        add_tree(&mut files, release, file)?;
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
        version: doc.release.version.to_string(),
        channel: doc.release.channel.to_string(),
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
    let envelope = sign::sign_envelope(req.key, sign::PAYLOAD_TYPE, &statement)?;
    let mut envelope_bytes = serde_json::to_vec_pretty(&envelope).map_err(|e| bad(e.to_string()))?;
    envelope_bytes.push(b'\n');

    // The archive, through a temporary file renamed when complete.
    let out = req.out;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    // A kit build of `out` killed part-way left its temporary file: removed first.
    let tmp_prefix = format!(".{}.tmp-", out.file_name().and_then(|n| n.to_str()).unwrap_or("kit"));
    oci::dirs::sweep(dir, &tmp_prefix).map_err(io_err(dir))?;
    let tmp = tempfile::Builder::new().prefix(&tmp_prefix).tempfile_in(dir).map_err(io_err(dir))?;
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
        (MANIFEST_ENTRIES[1], read_file(&release.join("release.yaml.sig"))?),
        (MANIFEST_ENTRIES[2], read_file(&release.join("release.yaml.sigstore.json"))?),
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

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, size: u64, epoch: i64, data: &mut dyn Read) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    // The customer tool is a program: `tar --zstd -xf KIT tools/` gives one that runs.
    h.set_mode(if path == crate::stages::tool::FILE { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(epoch.max(0) as u64);
    tar.append_data(&mut h, path, data)
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
                // A ref name that is not `sha256-<hex>.sig` is just not a signature tag.
                .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok());
            // An OCI 1.1 referrer (manifest or index) names what it is about in `subject`; a
            // manifest that cannot be read fails the kit (it would be left out unnoticed).
            let v = layout.read_json::<serde_json::Value>(&d.digest, "a manifest").map_err(|e| e.to_string())?;
            let subject = match v["subject"]["digest"].as_str() {
                Some(s) => Some(s.parse::<Digest>().map_err(|e| format!("manifest `{}`: `subject.digest` `{s}`: {e}", d.digest))?),
                None => None,
            };
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
    let json_kinds = [MEDIA_INDEX, oci::MEDIA_DOCKER_LIST];
    if json_kinds.contains(&d.media_type.as_str()) {
        let i: Index = layout.read_json(&d.digest, "an image index").map_err(|e| e.to_string())?;
        for m in &i.manifests {
            reach(layout, m, blobs, images)?;
        }
    } else if d.media_type == oci::MEDIA_MANIFEST || d.media_type == oci::MEDIA_DOCKER_MANIFEST {
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

/// `cargo xtask kit build`: what to write for a finished release directory, decided from its
/// signed `release.yaml` and the repository's trains (the channel's `[kit]`).
#[derive(Debug)]
pub struct RebuildRequest<'a> {
    /// The release directory (`target/releases/<version>-<channel>`).
    pub release: &'a Path,
    /// The repository whose `release-trains/` say what the channel's kit holds.
    pub root: &'a Path,
    pub key: &'a dyn Signer,
    /// A delta kit against this previous release (its release.yaml or directory) or kit.
    pub delta_from: Option<&'a Path>,
    /// The kit file; default: `stellaops-kit-<version>-<channel>.tar.zst` in the release
    /// directory (`-delta.tar.zst` for a delta kit).
    pub out: Option<&'a Path>,
}

/// (Re)writes the kit of a finished release: same release and key, same bytes.
pub fn rebuild(req: &RebuildRequest<'_>, reporter: &dyn Reporter) -> Result<KitSummary, crate::error::Error> {
    use crate::error::Error;
    let cfg = schema::config::load(req.root)?;
    let yaml_path = req.release.join("release.yaml");
    let yaml = fs::read(&yaml_path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::Kit(KitError::Release {
            release: req.release.to_owned(),
            reason: "it has no `release.yaml` (is this a release directory?)".to_owned(),
        }),
        _ => Error::Io { path: yaml_path.clone(), source },
    })?;
    let doc = verifier::manifest::parse(&yaml)
        .map_err(|reason| Error::Kit(KitError::Release { release: req.release.to_owned(), reason: format!("`release.yaml`: {reason}") }))?;
    let channel = doc.release.channel;
    // A keyless release's one-time key is gone: its kit (written by `release`, signed while the
    // certificate was valid) is the only one; a kit signed by another key would not verify
    // under the release's certificate.
    let bundle = req.release.join("release.yaml.sigstore.json");
    let keyless = fs::read(&bundle)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| verifier::keyless::bundle_certificate(&v).is_some());
    if keyless {
        return Err(Error::Kit(KitError::Release {
            release: req.release.to_owned(),
            reason: format!(
                "it is a keyless release (`{}` carries a certificate): its one-time key signed its kit during `release` and is gone, so no other kit of it can be signed\n  hint: ship the kit `release` wrote (`{}`); delta kits are made of releases signed with a key (`release --key`)",
                bundle.display(),
                req.release.join(schema::kit::kit_name(&doc.release.version.to_string(), doc.release.channel.as_str())).display()
            ),
        }));
    }
    let train = cfg.trains.get(&channel).ok_or_else(|| {
        Error::Kit(KitError::Release { release: req.release.to_owned(), reason: format!("`release-trains/` has no `{channel}` channel") })
    })?;
    let name = schema::kit::kit_name(&doc.release.version.to_string(), channel.as_str());
    let out = match req.out {
        Some(o) => o.to_owned(),
        None if req.delta_from.is_some() => req.release.join(name.replace(".tar.zst", "-delta.tar.zst")),
        None => req.release.join(name),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let request = KitRequest { release: req.release, contents: &train.kit, key: req.key, delta_from: req.delta_from, out: &out, threads };
    Ok(write(&request, reporter)?)
}
