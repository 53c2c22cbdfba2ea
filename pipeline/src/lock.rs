//! `cargo xtask lock`: refreshes `base-images.lock`.
//!
//! For a Debian base, each package named in the lock is resolved in the mirror's `Packages`
//! index (version, pool file name, sha256), fetched, checked, and the base assembled to
//! learn its digest, which is pinned per platform. Local OCI layouts are re-verified. The file
//! is rewritten atomically; what changed is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::stages::build::base::{self, BaseError, Fetch};
use crate::stages::build::debian::{self, DebError, DebSource};
use oci::{write_atomic, Layout};
use schema::config::LOCK_FILE;
use schema::files::{BaseLock, BaseSource};
use schema::model::{Digest, Platform};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("`{LOCK_FILE}`: {0}")]
    Parse(String),
    #[error("`{LOCK_FILE}`: `{key}`: {message}")]
    Resolve { key: String, message: String },
    /// `cargo xtask lock add` refused: the message names what and how to fix it.
    #[error("lock add: {0}")]
    Add(String),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LockError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            LockError::Parse(_) | LockError::Resolve { .. } | LockError::Add(_) => schema::exit::REJECTED,
            LockError::Deb(DebError::NotInIndex { .. } | DebError::Sha256Mismatch { .. }) => schema::exit::REJECTED,
            _ => schema::exit::ENVIRONMENT,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LockChange {
    pub base: String,
    pub platform: Platform,
    pub before: Digest,
    pub after: Digest,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    pub file: PathBuf,
    pub changes: Vec<LockChange>,
    /// Toolchains whose packages changed.
    pub toolchains_changed: Vec<String>,
    pub unchanged: usize,
}

const HEADER: &str = "\
# Base images, pinned by digest, per platform. Written by `cargo xtask lock`; every build
# re-verifies each pin (package sha256s and the assembled base's manifest digest).
# A tag never appears here except as a comment of where a digest came from.
";

/// Refreshes the lock at `<root>/base-images.lock`. `now` is the epoch given to a new base.
pub fn lock(root: &Path, mirror: Option<&str>, cache: &Path, now: i64) -> Result<LockReport, LockError> {
    let path = root.join(LOCK_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| LockError::Io { path: path.clone(), source })?;
    let mut lock: BaseLock = toml::from_str(&text).map_err(|e| LockError::Parse(e.to_string()))?;
    let mirror = match mirror {
        Some(m) => m.to_owned(),
        None => debian::host_mirror()?,
    };
    let scratch = tempfile::tempdir().map_err(|source| LockError::Io { path: std::env::temp_dir(), source })?;
    let layout =
        Layout::create(scratch.path()).map_err(|e| LockError::Io { path: scratch.path().to_owned(), source: std::io::Error::other(e) })?;
    let fetch = Fetch { debs: DebSource::Mirror(mirror.clone()), cache: cache.to_owned(), root: root.to_owned() };
    let mut indexes: BTreeMap<(String, String), (String, BTreeMap<String, debian::IndexEntry>)> = BTreeMap::new();
    let (mut changes, mut unchanged, mut toolchain_changes) = (Vec::new(), 0, Vec::new());
    for (i, b) in lock.bases.iter_mut().enumerate() {
        if b.source == BaseSource::Debian && b.epoch.is_none() {
            b.epoch = Some(now);
        }
        let platforms: Vec<Platform> = b.platforms.keys().copied().collect();
        for platform in platforms {
            let before = b.platforms[&platform].digest.clone();
            let after = match b.source {
                BaseSource::Debian => {
                    let suite = b.suite.clone().ok_or_else(|| LockError::Resolve {
                        key: format!("base[{i}].suite"),
                        message: "a Debian base needs its suite".into(),
                    })?;
                    let pin = b.platforms.get_mut(&platform).expect("listed above");
                    for (j, p) in pin.packages.iter_mut().enumerate() {
                        let arch = if p.arch == "all" { platform.deb_arch().to_owned() } else { p.arch.clone() };
                        let key = (suite.clone(), arch.clone());
                        if !indexes.contains_key(&key) {
                            indexes.insert(key.clone(), debian::read_index(&mirror, &suite, &arch)?);
                        }
                        let (url, index) = &indexes[&key];
                        let entry = index.get(&p.name).ok_or_else(|| DebError::NotInIndex {
                            name: p.name.clone(),
                            arch: arch.clone(),
                            url: url.clone(),
                        })?;
                        let _ = j;
                        p.version = entry.version.clone();
                        p.filename = entry.filename.clone();
                        p.sha256 = entry.sha256.clone();
                    }
                    base::assemble_debian(b, platform, &fetch, &layout)?.digest
                }
                BaseSource::OciLayout => {
                    let pin = &b.platforms[&platform];
                    let key = |k: &str| format!("base[{i}].platform.\"{platform}\".{k}");
                    let from = Layout::open(&root.join(pin.layout.as_deref().unwrap_or("")))
                        .map_err(|e| LockError::Resolve { key: key("layout"), message: e.to_string() })?;
                    let bytes =
                        from.read_blob(&pin.digest).map_err(|e| LockError::Resolve { key: key("digest"), message: e.to_string() })?;
                    // A pinned index is resolved to the platform's manifest: the lock pins those.
                    match oci::image::parse(&bytes).map_err(|e| LockError::Resolve { key: key("digest"), message: e.to_string() })? {
                        oci::image::Document::Index(_, index) => {
                            oci::image::select_platform(&index, platform)
                                .map_err(|e| LockError::Resolve { key: key("digest"), message: e.to_string() })?
                                .digest
                        }
                        oci::image::Document::Manifest(..) => pin.digest.clone(),
                    }
                }
                BaseSource::Registry | BaseSource::DockerArchive => {
                    // Re-verified: the manifest and every blob are fetched and hashed; a
                    // reference to an index gives the platform's manifest.
                    base::resolve(b, platform, &fetch, &layout)?.digest
                }
            };
            if after == before {
                unchanged += 1;
            } else {
                changes.push(LockChange { base: b.name.clone(), platform, before, after: after.clone() });
            }
            b.platforms.get_mut(&platform).expect("listed above").digest = after;
        }
    }
    // Toolchains: each package re-resolved in the index of the build machine (amd64); no
    // digest to compare, so a change shows as a change of the pins.
    for t in lock.toolchains.iter_mut() {
        let key = (t.suite.clone(), "amd64".to_owned());
        if !indexes.contains_key(&key) {
            indexes.insert(key.clone(), debian::read_index(&mirror, &t.suite, "amd64")?);
        }
        let (url, index) = &indexes[&key];
        let mut changed = false;
        for p in t.packages.iter_mut() {
            let entry = index.get(&p.name).ok_or_else(|| DebError::NotInIndex {
                name: p.name.clone(),
                arch: "amd64".to_owned(),
                url: url.clone(),
            })?;
            changed |= p.sha256 != entry.sha256;
            p.version = entry.version.clone();
            p.filename = entry.filename.clone();
            p.sha256 = entry.sha256.clone();
        }
        if changed {
            toolchain_changes.push(t.name.clone());
        } else {
            unchanged += 1;
        }
    }
    let body = toml::to_string_pretty(&lock).map_err(|e| LockError::Parse(e.to_string()))?;
    write_atomic(&path, format!("{HEADER}\n{body}").as_bytes()).map_err(|source| LockError::Io { path: path.clone(), source })?;
    Ok(LockReport { file: path, changes, toolchains_changed: toolchain_changes, unchanged })
}

/// One platform's pin written by [`add`].
#[derive(Debug, Clone, Serialize)]
pub struct AddedPin {
    pub platform: Platform,
    pub digest: Digest,
}

#[derive(Debug, Clone, Serialize)]
pub struct AddReport {
    pub file: PathBuf,
    pub base: String,
    pub source: BaseSource,
    /// `source = "registry"`: `HOST/REPO@sha256:...` (the index or manifest the tag named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub pins: Vec<AddedPin>,
}

/// Where `cargo xtask lock add --from` reads a base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseFrom {
    /// `docker://HOST/REPO:TAG` or `docker://HOST/REPO@sha256:...`.
    Registry { registry: String, repository: String, reference: String },
    /// `oci:DIR[:REF]` (REF: a ref name in `index.json`, or a digest).
    Layout { dir: String, reference: Option<String> },
    /// `docker-archive:FILE`.
    Archive { path: String },
}

impl std::str::FromStr for BaseFrom {
    type Err = LockError;
    fn from_str(s: &str) -> Result<Self, LockError> {
        let bad = |why: &str| LockError::Add(format!("`--from {s}`: {why}"));
        if let Some(rest) = s.strip_prefix("docker://") {
            let (name, reference) = match rest.split_once('@') {
                Some((name, digest)) => {
                    let d: Digest = digest.parse().map_err(|e: schema::model::ParseError| bad(&e.0))?;
                    (name, d.to_string())
                }
                None => match rest.rsplit_once(':') {
                    Some((name, tag)) if !tag.contains('/') && !tag.is_empty() => (name, tag.to_owned()),
                    _ => return Err(bad("name a tag or a digest: `docker://HOST/REPO:TAG` or `docker://HOST/REPO@sha256:...`")),
                },
            };
            let Some((registry, repository)) = name.split_once('/') else {
                return Err(bad("write `docker://HOST/REPO:TAG` (the registry host first)"));
            };
            if !(registry.contains('.') || registry.contains(':') || registry == "localhost") || repository.is_empty() {
                return Err(bad("write `docker://HOST/REPO:TAG` (the registry host first)"));
            }
            return Ok(BaseFrom::Registry { registry: registry.to_owned(), repository: repository.to_owned(), reference });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, reference) = match rest.split_once(":sha256:") {
                Some((dir, hex)) => (dir, Some(format!("sha256:{hex}"))),
                None => match rest.rsplit_once(':') {
                    Some((dir, r)) if !r.contains('/') && !r.is_empty() => (dir, Some(r.to_owned())),
                    _ => (rest, None),
                },
            };
            if dir.is_empty() {
                return Err(bad("write `oci:DIR[:REF]`"));
            }
            return Ok(BaseFrom::Layout { dir: dir.to_owned(), reference });
        }
        if let Some(path) = s.strip_prefix("docker-archive:") {
            if path.is_empty() {
                return Err(bad("write `docker-archive:FILE`"));
            }
            return Ok(BaseFrom::Archive { path: path.to_owned() });
        }
        Err(bad("use `docker://HOST/REPO:TAG`, `oci:DIR[:REF]` or `docker-archive:FILE`"))
    }
}

/// `path` relative to `root` (the lock stores repository-relative paths); refused outside it.
fn relative(root: &Path, path: &str) -> Result<String, LockError> {
    let p = Path::new(path);
    let abs = if p.is_absolute() { p.to_owned() } else { std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_owned()) };
    let canon = |q: &Path| q.canonicalize().map_err(|e| LockError::Add(format!("`{}`: {e}", q.display())));
    let (abs, root) = (canon(&abs)?, canon(root)?);
    abs.strip_prefix(&root).map(|r| r.to_string_lossy().into_owned()).map_err(|_| {
        LockError::Add(format!(
            "`{path}` is outside the repository `{}`: the lock names bases by repository-relative paths",
            root.display()
        ))
    })
}

/// `cargo xtask lock add`: resolves `from` once (a tag to the digest it names now) and
/// appends a `[[base]]` named `name`, pinned by digest for every platform of `platforms`, to
/// `<root>/base-images.lock`. The rest of the file is kept byte for byte; no tag is written.
/// Every pin is then pulled/read and verified like a build does before the file is written.
pub fn add(root: &Path, name: &str, from: &BaseFrom, platforms: &[Platform], cache: &Path) -> Result<AddReport, LockError> {
    use schema::files::{Base, BasePin};
    use schema::model::PinnedRef;
    let path = root.join(LOCK_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| LockError::Io { path: path.clone(), source })?;
    let lock: BaseLock = toml::from_str(&text).map_err(|e| LockError::Parse(e.to_string()))?;
    if lock.bases.iter().any(|b| b.name == name) {
        return Err(LockError::Add(format!(
            "base `{name}` is already in `{LOCK_FILE}`: remove its `[[base]]` first, or run `cargo xtask lock` to refresh its pins"
        )));
    }
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !valid {
        return Err(LockError::Add(format!("`{name}` is not a base name: use lower-case letters, digits, `.`, `_` and `-`")));
    }
    let mut platforms: Vec<Platform> = platforms.to_vec();
    platforms.sort();
    platforms.dedup();
    let pin = |digest: Digest| BasePin { digest, reference: None, layout: None, path: None, packages: vec![] };
    let placeholder = Digest::of(b"");
    // The digest each platform resolves to, chosen from an index where there is one.
    let per_platform = |what: &str, top: &Digest, bytes: &[u8]| -> Result<Vec<(Platform, Digest)>, LockError> {
        match oci::image::parse(bytes).map_err(|e| LockError::Add(format!("{what} (`{top}`) is not an image: {e}")))? {
            oci::image::Document::Manifest(..) => Ok(platforms.iter().map(|p| (*p, top.clone())).collect()),
            oci::image::Document::Index(_, index) => platforms
                .iter()
                .map(|p| {
                    oci::image::select_platform(&index, *p).map(|d| (*p, d.digest)).map_err(|e| {
                        LockError::Add(format!("{what} (`{top}`) has no image for {p}: {e}; choose platforms with `--platform`"))
                    })
                })
                .collect(),
        }
    };
    let (source, reference, pins) = match from {
        BaseFrom::Registry { registry, repository, reference } => {
            let what = format!("`{registry}/{repository}{}{reference}`", if reference.starts_with("sha256:") { "@" } else { ":" });
            let (top, bytes) = oci::registry::resolve(registry, repository, reference)
                .map_err(|e| LockError::Add(format!("{what} does not resolve: {e}")))?;
            let r = PinnedRef { registry: registry.clone(), repository: repository.clone(), tag: None, digest: top.clone() };
            let pins = per_platform(&what, &top, &bytes)?
                .into_iter()
                .map(|(p, d)| (p, BasePin { reference: Some(r.clone()), ..pin(d) }))
                .collect::<BTreeMap<_, _>>();
            (BaseSource::Registry, Some(r.to_string()), pins)
        }
        BaseFrom::Layout { dir, reference } => {
            let rel = relative(root, dir)?;
            let what = format!("`oci:{dir}{}`", reference.as_deref().map(|r| format!(":{r}")).unwrap_or_default());
            let layout = Layout::open(&root.join(&rel)).map_err(|e| LockError::Add(format!("{what}: {e}")))?;
            let index = layout.index().map_err(|e| LockError::Add(format!("{what}: {e}")))?;
            let top: Digest = match reference {
                Some(r) if r.starts_with("sha256:") => {
                    r.parse().map_err(|e: schema::model::ParseError| LockError::Add(format!("{what}: {}", e.0)))?
                }
                Some(r) => layout.find_ref(r).map_err(|e| LockError::Add(format!("{what}: {e}")))?.digest,
                None => match index.manifests.as_slice() {
                    [one] => one.digest.clone(),
                    many => {
                        let names: Vec<String> = many.iter().filter_map(|m| m.annotations.get(oci::ANNOTATION_REF_NAME).cloned()).collect();
                        return Err(LockError::Add(format!(
                            "{what}: the layout holds {} manifests; name one: `oci:{dir}:REF` ({})",
                            many.len(),
                            names.join(", ")
                        )));
                    }
                },
            };
            let bytes = layout.read_blob(&top).map_err(|e| LockError::Add(format!("{what}: {e}")))?;
            let pins =
                per_platform(&what, &top, &bytes)?.into_iter().map(|(p, d)| (p, BasePin { layout: Some(rel.clone()), ..pin(d) })).collect();
            (BaseSource::OciLayout, None, pins)
        }
        BaseFrom::Archive { path: file } => {
            let rel = relative(root, file)?;
            let pins = platforms.iter().map(|p| (*p, BasePin { path: Some(rel.clone()), ..pin(placeholder.clone()) })).collect();
            (BaseSource::DockerArchive, None, pins)
        }
    };
    let mut base =
        Base { name: name.to_owned(), source, suite: None, epoch: None, symlinks: BTreeMap::new(), directories: vec![], platforms: pins };
    // Verified as a build would: every blob fetched and hashed, the config's platform checked.
    let scratch = tempfile::tempdir().map_err(|source| LockError::Io { path: std::env::temp_dir(), source })?;
    let layout =
        Layout::create(scratch.path()).map_err(|e| LockError::Io { path: scratch.path().to_owned(), source: std::io::Error::other(e) })?;
    let fetch = Fetch { debs: DebSource::Mirror(String::new()), cache: cache.to_owned(), root: root.to_owned() };
    for p in platforms.iter() {
        let image = base::resolve(&base, *p, &fetch, &layout).map_err(|e| LockError::Add(format!("base `{name}` for {p}: {e}")))?;
        base.platforms.get_mut(p).expect("one pin per platform").digest = image.digest;
    }
    #[derive(Serialize)]
    struct Block<'a> {
        #[serde(rename = "base")]
        bases: [&'a Base; 1],
    }
    let block = toml::to_string_pretty(&Block { bases: [&base] }).map_err(|e| LockError::Parse(e.to_string()))?;
    let sep = if text.is_empty() || text.ends_with("\n\n") {
        ""
    } else if text.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    // After the last base, before the toolchains: where `cargo xtask lock` writes bases, so
    // that a later `lock` leaves the file as it is.
    let out = match text.find("\n[[toolchain]]") {
        Some(at) => format!("{}{block}\n{}", &text[..at + 1], &text[at + 1..]),
        None => format!("{text}{sep}{block}"),
    };
    // What is written must read back as the lock with one more base.
    let back: BaseLock = toml::from_str(&out).map_err(|e| LockError::Parse(format!("the appended entry does not parse: {e}")))?;
    if back.bases.len() != lock.bases.len() + 1 {
        return Err(LockError::Parse("the appended entry did not read back as one more `[[base]]`".into()));
    }
    write_atomic(&path, out.as_bytes()).map_err(|source| LockError::Io { path: path.clone(), source })?;
    Ok(AddReport {
        file: path,
        base: name.to_owned(),
        source,
        reference,
        pins: base.platforms.iter().map(|(p, b)| AddedPin { platform: *p, digest: b.digest.clone() }).collect(),
    })
}
