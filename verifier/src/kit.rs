//! Offline kits (spec §3.3, §10.2, §15): `stellaops-kit-<version>-<channel>.tar.zst`.
//!
//! # Format
//! A zstd stream (level [`ZSTD_LEVEL`], multithreaded mode, frame checksum) of a tar archive
//! (GNU headers, regular files only, mode 0644 (0755 for `tools/stellaops`), owner 0:0, mtime = the release's
//! SOURCE_DATE_EPOCH) whose entries are, in this order:
//! 1. `manifest/release.yaml`, `manifest/release.yaml.sig`, `manifest/release.yaml.sigstore.json`
//!    (the signed release, spec §6.1) and `manifest/kit.dsse.json`: the kit's inventory, a DSSE
//!    envelope signed with the release key around an in-toto statement whose subject is
//!    release.yaml and whose predicate ([`Inventory`]) lists every other entry with its sha256
//!    and size, the total size, and for a delta kit the blobs the target must already hold;
//! 2. every other entry sorted by path: `images/` (one OCI layout: every image, its
//!    signatures and referrers), `sboms/`, `attest/`, `charts/`, `compose/`, `plugins/`,
//!    `policy/`, as the channel's `[kit]` in release-trains/ selects; and in every kit
//!    `tools/` (the customer tool, mode 0755, its raw signature, SBOM and provenance) and, when
//!    the release has one, `trust/` (the channels' TUF repository).
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
//! 4. verify every image signature and attestation envelope, the customer tool (`tools/`:
//!    digest, raw signature, SBOM, provenance) and the trust repository (`trust/`, from the
//!    customer's pinned TUF root when given) ([`crate::release::verify_tree`]);
//! 5. only then make the content visible: new blobs renamed into the target layout, the
//!    release's files into `stellaops/<version>-<channel>/`, `index.json` written last.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::keyless::Anchor;
use crate::keys::{Fips, PublicKey};
use crate::manifest;
use crate::release::{self, VerifyReport};
use crate::sign::{self, Envelope};
use oci::layer::HashingWriter;
use oci::{Index, Layout, ANNOTATION_REF_NAME, MEDIA_INDEX};
use schema::kit::*;
use schema::model::Digest;
use schema::report::{Event, Reporter, Stage};

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
    /// The kit's inventory could not be signed.
    #[error(transparent)]
    Signer(#[from] crate::keys::SignerError),
}

fn failed_lines(report: &VerifyReport) -> String {
    report.checks.iter().filter(|c| !c.ok).map(|c| format!("  - {}: {}", c.what, c.detail)).collect::<Vec<_>>().join("\n")
}

impl KitError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            KitError::Io { .. } | KitError::Push { .. } | KitError::Signer(_) => schema::exit::ENVIRONMENT,
            _ => schema::exit::REJECTED,
        }
    }
}

/// `KitError::Io` naming `path` (for `map_err`).
pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KitError + '_ {
    move |source| KitError::Io { path: path.to_owned(), source }
}

/// Where `kit import` loads a kit.
#[derive(Debug, Clone)]
pub enum Target {
    /// An OCI image layout directory (made when absent).
    Dir(PathBuf),
    /// A registry: images pushed by digest under `<namespace>/<component>`, signatures and
    /// attestations as referrers, the version tag last ([`oci::push::push_layout`]).
    Registry { target: oci::distribution::RegistryTarget, docker_config: Option<PathBuf> },
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
    /// Held (`flock`) while in use: a killed import's is removed by the next one.
    staging: oci::dirs::Scratch,
    /// The key that signed the release: the pinned one, or a keyless release's certified key.
    key: PublicKey,
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

impl KitReport {
    /// The checklist, then what the kit is and where it went (for people; `--json` for CI).
    pub fn render(&self) -> String {
        let mut s = self.checks.render();
        s += &format!(
            "\nkit {} ({} {}, {:?}): {} entries, {} bytes, verified",
            self.kit.display(),
            self.version,
            self.channel,
            self.kind,
            self.entries,
            self.content_size
        );
        if let (Some(t), Some(n)) = (&self.target, self.new_blobs) {
            s += &format!("\nimported into {t} ({n} new blobs)");
        }
        s
    }
}

/// `verify <kit>`: steps 1–4 of the import, without importing. A delta kit is checked against
/// the content of `base` (an OCI layout holding the release it applies to) when given.
pub fn verify_kit(
    kit: &Path,
    key: &PublicKey,
    log: Option<&PublicKey>,
    fips: Fips,
    base: Option<&Path>,
    reporter: &dyn Reporter,
) -> Result<KitReport, KitError> {
    verify_kit_pinned(kit, Anchor::Key(key), log, fips, base, None, reporter)
}

/// [`verify_kit`], with the release signed as `anchor` says (a key, or a keyless release's
/// identity), and the kit's `trust/` checked from `trust_root`, a TUF root the customer pinned
/// (a kit without `trust/` then fails).
pub fn verify_kit_pinned(
    kit: &Path,
    anchor: Anchor<'_>,
    log: Option<&PublicKey>,
    fips: Fips,
    base: Option<&Path>,
    trust_root: Option<&Path>,
    reporter: &dyn Reporter,
) -> Result<KitReport, KitError> {
    let tmp = std::env::temp_dir();
    let checked = check(kit, (anchor, log), fips, &tmp, ".stellaops-kit-verify-", (base, trust_root), reporter)?;
    Ok(report_of(kit, &checked, None, None))
}

/// Steps 1–4 into a temporary directory under `parent`, kept for the caller while it holds the
/// returned [`oci::dirs::Scratch`]: the verified release as an unpacked kit (`manifest/`,
/// `images/`, ...), and the key that signed it. The tool's preflight reads releases there.
#[allow(clippy::too_many_arguments)]
pub fn unpack_verified(
    kit: &Path,
    anchor: Anchor<'_>,
    log: Option<&PublicKey>,
    fips: Fips,
    trust_root: Option<&Path>,
    parent: &Path,
    reporter: &dyn Reporter,
) -> Result<(KitReport, oci::dirs::Scratch, PublicKey), KitError> {
    let checked = check(kit, (anchor, log), fips, parent, ".stellaops-kit-unpacked-", (None, trust_root), reporter)?;
    let report = report_of(kit, &checked, None, None);
    Ok((report, checked.staging, checked.key))
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
pub fn import(
    kit: &Path,
    target: &Target,
    key: &PublicKey,
    log: Option<&PublicKey>,
    fips: Fips,
    reporter: &dyn Reporter,
) -> Result<KitReport, KitError> {
    import_pinned(kit, target, Anchor::Key(key), log, fips, None, reporter)
}

/// [`import`], with the release signed as `anchor` says and the kit's `trust/` checked from
/// `trust_root` (see [`verify_kit_pinned`]).
pub fn import_pinned(
    kit: &Path,
    target: &Target,
    anchor: Anchor<'_>,
    log: Option<&PublicKey>,
    fips: Fips,
    trust_root: Option<&Path>,
    reporter: &dyn Reporter,
) -> Result<KitReport, KitError> {
    let dir = match target {
        Target::Dir(dir) => dir,
        Target::Registry { target, docker_config } => {
            return import_registry(kit, target, docker_config.clone(), (anchor, log), fips, trust_root, reporter)
        }
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
    // What an import into `dir` killed part-way left beside it (its staging directory, a fresh
    // target being assembled) and inside it (a release directory moved aside). The caller
    // holds the target's lock (`cargo xtask kit import` does), so nothing else writes these.
    for prefix in [format!(".{name}.import-"), format!(".{name}.new-")] {
        oci::dirs::sweep(&parent, &prefix).map_err(io_err(&parent))?;
    }
    let releases = dir.join("stellaops");
    if releases.is_dir() {
        let names: Vec<String> = fs::read_dir(&releases)
            .map_err(io_err(&releases))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(io_err(&releases))?;
        for n in names {
            if let Some(rel) = n.strip_prefix('.').and_then(|n| n.strip_suffix(".old")) {
                oci::dirs::recover(&releases.join(rel)).map_err(io_err(&releases.join(&n)))?;
            }
        }
    }
    // Staging beside the target (same file system: the final moves are renames).
    let checked = check(kit, (anchor, log), fips, &parent, &format!(".{name}.import-"), (base, trust_root), reporter)?;
    let new_blobs = load_dir(&checked, &dir, name, &parent)?;
    Ok(report_of(kit, &checked, Some(dir.display().to_string()), Some(new_blobs)))
}

/// Steps 1–4 in a temporary directory, then step 5 for a registry: every blob, manifest and
/// referrer pushed by digest and checked, the version tag last. A delta kit's base would have
/// to be fetched back and hashed: delta kits import into a directory only.
fn import_registry(
    kit: &Path,
    target: &oci::distribution::RegistryTarget,
    docker_config: Option<PathBuf>,
    keys: (Anchor<'_>, Option<&PublicKey>),
    fips: Fips,
    trust_root: Option<&Path>,
    reporter: &dyn Reporter,
) -> Result<KitReport, KitError> {
    let checked = check(kit, keys, fips, &std::env::temp_dir(), ".stellaops-kit-import-", (None, trust_root), reporter)?;
    if checked.inventory.kind == KitKind::Delta {
        return Err(KitError::Target {
            target: PathBuf::from(format!("docker://{}/{}", target.host, target.namespace)),
            reason: "a delta kit imports into an OCI layout directory only; import the full kit into a registry".into(),
        });
    }
    let opts = oci::push::PushOptions { tags: vec![checked.inventory.version.clone()], docker_config, ..Default::default() };
    let pushed = oci::push::push_layout(&checked.staging.path().join("images"), target, &opts, reporter)
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
    // index.json: the merge of what was there and the kit's, the kit's names winning. Written
    // in full under a temporary name before anything moves (a full disk stops the import
    // here, with the target as it was), renamed into place last.
    let kit_index: Index = serde_json::from_slice(&read_file(&staged.join("images/index.json"))?)
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
    let index_path = into.join("index.json");
    let staged_index = stage_file(&into, &serde_json::to_vec_pretty(&index).expect("an index serializes")).map_err(io_err(&index_path))?;

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
    oci::pause::at("kit-import:blobs-moved");
    swap_dir(&files, &rel_dir)?;
    oci::pause::at("kit-import:files-moved");
    // index.json last.
    staged_index.persist(&index_path).map_err(|e| io_err(&index_path)(e.error))?;
    if fresh {
        fs::rename(&into, dir).map_err(io_err(dir))?;
    }
    Ok(new_blobs)
}

/// `bytes` in a temporary file in `dir`, synced and readable by all, to be renamed into place.
fn stage_file(dir: &Path, bytes: &[u8]) -> io::Result<tempfile::NamedTempFile> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644))?;
    Ok(tmp)
}

/// Puts directory `from` at `to`, replacing what was there (renames only).
fn swap_dir(from: &Path, to: &Path) -> Result<(), KitError> {
    oci::dirs::replace_dir(from, to).map_err(io_err(to))
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
    (anchor, log): (Anchor<'_>, Option<&PublicKey>),
    fips: Fips,
    staging_parent: &Path,
    staging_prefix: &str,
    (base, trust_root): (Option<&Path>, Option<&Path>),
    reporter: &dyn Reporter,
) -> Result<Checked, KitError> {
    let refuse = |reason: String| KitError::Refused { kit: kit.to_owned(), reason };
    if let Anchor::Key(key) = anchor {
        key.check_fips(fips, "the public key").map_err(|e| refuse(e.to_string()))?;
    }
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
    let staging = oci::dirs::Scratch::new_in(staging_parent, staging_prefix).map_err(io_err(staging_parent))?;

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
    // The release's key: the pinned one, or the key the release's certificate certifies for an
    // identity the policy accepts (its chain, identity, issuer and code-signing use checked
    // here; its signing time in step 4, from the log entries).
    let keyless_bundle =
        serde_json::from_slice::<serde_json::Value>(bundle).ok().is_some_and(|v| crate::keyless::bundle_certificate(&v).is_some());
    let (key, leaf) = match anchor {
        Anchor::Key(_) if keyless_bundle => {
            return Err(refuse(
                "`manifest/release.yaml.sigstore.json` carries a certificate: the kit of a keyless release\n  hint: verify it with `--trusted-root FILE` and an identity policy (`--certificate-identity[-regexp]`, `--certificate-oidc-issuer`) in place of `--key`".into(),
            ))
        }
        Anchor::Key(key) => (key.clone(), None),
        Anchor::Identity { root, policy } => {
            let leaf = crate::keyless::certified(bundle, root, policy)
                .map_err(|e| refuse(format!("`manifest/release.yaml.sigstore.json`: the release's certificate is refused: {e}")))?;
            leaf.key.check_fips(fips, "the certified key").map_err(|e| refuse(e.to_string()))?;
            (leaf.key.clone(), Some(leaf))
        }
    };
    let key = &key;
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
    if inventory.version != doc.release.version.to_string() || inventory.channel != doc.release.channel.as_str() {
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
    if Some(inventory.total_size) != inventory.entries.iter().try_fold(0u64, |sum, e| sum.checked_add(e.size)) {
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
        let overhead = ENTRY_OVERHEAD.saturating_mul(inventory.entries.len() as u64 + 1).saturating_add(ARCHIVE_TAIL);
        l.limit = l.read.saturating_add(inventory.total_size).saturating_add(overhead);
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
        // Read errors are the kit's; write errors (a full disk) are the staging file's.
        let mut src = (&mut e).take(want.size);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(stream_err(err)),
            };
            w.write_all(&buf[..n]).map_err(io_err(&dest))?;
        }
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
    let mut tree = release::Tree::kit(staging.path(), only).with_trust_root(trust_root.map(Path::to_owned));
    let mut report = VerifyReport::default();
    match (&anchor, &leaf) {
        (Anchor::Identity { root, .. }, Some(leaf)) => {
            let entry = fs::read(crate::tlog::entry_path(staging.path(), "release.yaml")).ok();
            tree = tree.with_log(crate::keyless::log_key(root, entry.as_deref(), log)).certified(leaf.not_before, leaf.not_after);
            report.checks.push(release::Check {
                ok: true,
                what: release::certified_line("keyless certificate (`manifest/release.yaml.sigstore.json`)", leaf),
                detail: String::new(),
            });
        }
        _ => tree = tree.with_log(log.cloned()),
    }
    report.checks.extend(release::verify_tree(&tree, key, fips).checks);
    if !report.ok() {
        return Err(KitError::Unverified { kit: kit.to_owned(), report });
    }
    reporter.event(Event::StageFinished { stage: Stage::Kit });
    Ok(Checked { inventory, report, staging, key: key.clone() })
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

/// A (small) file of a kit or release, read whole.
pub fn read_file(path: &Path) -> Result<Vec<u8>, KitError> {
    fs::read(path).map_err(io_err(path))
}

/// sha256 and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(Digest, u64), KitError> {
    oci::layer::hash_file(path).map_err(io_err(path))
}
