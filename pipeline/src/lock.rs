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
            LockError::Parse(_) | LockError::Resolve { .. } => schema::exit::REJECTED,
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
    let (mut changes, mut unchanged) = (Vec::new(), 0);
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
    let body = toml::to_string_pretty(&lock).map_err(|e| LockError::Parse(e.to_string()))?;
    write_atomic(&path, format!("{HEADER}\n{body}").as_bytes()).map_err(|source| LockError::Io { path: path.clone(), source })?;
    Ok(LockReport { file: path, changes, unchanged })
}
