//! The engine's error: one variant per stage or mechanism that can fail, each carrying the
//! stage's own error type; [`Error::exit_code`] maps every one to the documented exit code
//! ([`schema::exit`]).

use std::path::PathBuf;

use schema::exit;

/// Every way the pipeline can fail, grouped by stage. [`Error::exit_code`] maps each to the
/// documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] schema::config::ConfigError),
    #[error(transparent)]
    Source(#[from] crate::stages::plan::source::SourceError),
    #[error(transparent)]
    Plan(#[from] crate::stages::plan::PlanError),
    /// A failure of one stage of a release, tagged with the stage by the orchestrator.
    #[error("{} stage: {source}", .stage.as_str())]
    At {
        stage: schema::report::Stage,
        #[source]
        source: Box<Error>,
    },
    #[error(transparent)]
    Build(#[from] crate::stages::build::BuildError),
    #[error(transparent)]
    Layout(#[from] oci::LayoutError),
    #[error(transparent)]
    Repro(#[from] crate::repro::ReproError),
    #[error(transparent)]
    Evidence(#[from] crate::stages::evidence::EvidenceError),
    #[error(transparent)]
    Sign(#[from] crate::stages::sign::SignError),
    #[error(transparent)]
    Manifest(#[from] crate::stages::manifest::ManifestError),
    #[error(transparent)]
    Key(#[from] verifier::keys::KeyError),
    #[error(transparent)]
    KeyLoad(#[from] crate::signer::LoadError),
    #[error(transparent)]
    Pkcs11(#[from] crate::signer::Pkcs11Error),
    #[error(transparent)]
    Signer(#[from] verifier::keys::SignerError),
    #[error(transparent)]
    Templates(#[from] crate::templates::TemplateError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Kit(#[from] verifier::kit::KitError),
    #[error(transparent)]
    Publish(#[from] oci::push::PublishError),
    #[error(transparent)]
    Gates(#[from] crate::stages::gates::GateError),
    #[error(transparent)]
    Ops(#[from] verifier::ops::OpsError),
    #[error(transparent)]
    Tool(#[from] crate::stages::tool::ToolError),
    #[error("a `{channel}` release must be signed with a named release key, not the development key")]
    KeyRequired { channel: schema::model::Channel },
    #[error("a `{channel}` release is never signed with the development key `{path}`")]
    DevKey { channel: schema::model::Channel, path: PathBuf },
    #[error("a `{channel}` release needs a transparency log (spec §2.3; `release-trains/{channel}.toml` `[transparency-log] required = true`) and none is configured")]
    LogRequired { channel: schema::model::Channel },
    #[error("a keyless release needs a transparency log that signs its entries' times (Rekor v1's API): they show the one-time key was used while certified; none is configured, or it is a Rekor v2 log (which leaves time to a timestamp authority, not supported here)")]
    KeylessNeedsLog,
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Tags the error with the release stage it happened in (once: the innermost tag wins).
    pub fn at(self, stage: schema::report::Stage) -> Error {
        match self {
            Error::At { .. } => self,
            e => Error::At { stage, source: Box::new(e) },
        }
    }

    /// The release stage that failed, when the error came through the orchestrator.
    pub fn stage(&self) -> Option<schema::report::Stage> {
        match self {
            Error::At { stage, .. } => Some(*stage),
            _ => None,
        }
    }

    /// The full disk behind this error, if it is one (`ENOSPC` anywhere in its chain).
    pub fn disk_full(&self) -> Option<DiskFull> {
        DiskFull::in_chain(self)
    }

    /// What the user can do about it, as data (the CLI prints it as a `hint:` line); `None`
    /// where the message itself already says it.
    pub fn hint(&self) -> Option<String> {
        if let Some(full) = self.disk_full() {
            return Some(full.hint());
        }
        match self {
            Error::At { source, .. } => source.hint(),
            Error::Publish(p) => p.hint(),
            Error::Plan(p) => p.hint(),
            Error::Source(s) => s.hint(),
            Error::KeyRequired { channel } | Error::DevKey { channel, .. } => Some(format!(
                "make one once with `cargo xtask keys generate --out release.key` (keep it offline), then \
                 `cargo xtask release --channel {channel} --key release.key` with STELLAOPS_KEY_PASSPHRASE set; \
                 or sign keyless: `--keyless --fulcio-url URL` with an OIDC identity token"
            )),
            Error::Tool(t) => t.hint(),
            Error::LogRequired { channel } => Some(format!(
                "set `url` under `[transparency-log]` in `release-trains/{channel}.toml`, or pass `--rekor-url URL` \
                 (STELLAOPS_REKOR_URL); a log that is down does not stop the release, its entries wait for `cargo xtask attest resubmit`"
            )),
            Error::KeylessNeedsLog => {
                Some("pass `--rekor-url URL` (STELLAOPS_REKOR_URL), or set `url` under `[transparency-log]` of the channel".to_owned())
            }
            Error::Key(k) | Error::Ops(verifier::ops::OpsError::Key(k)) => k.hint(),
            Error::KeyLoad(k) => k.hint(),
            Error::Pkcs11(k) => k.hint(),
            Error::Signer(s)
            | Error::Ops(verifier::ops::OpsError::Signer(s))
            | Error::Sign(crate::stages::sign::SignError::Signer(s))
            | Error::Manifest(crate::stages::manifest::ManifestError::Signer(s))
            | Error::Kit(verifier::kit::KitError::Signer(s)) => s.hint.clone(),
            Error::Io { .. } => Some("check that the path exists, is readable and that the disk has room".to_owned()),
            _ => None,
        }
    }

    pub fn exit_code(&self) -> schema::exit::Code {
        use crate::stages::build::base::BaseError as B;
        use crate::stages::build::BuildError as E;
        // A full disk is the environment's, whichever stage met it.
        if self.disk_full().is_some() {
            return exit::ENVIRONMENT;
        }
        match self {
            Error::At { source, .. } => source.exit_code(),
            Error::Plan(p) => p.exit_code(),
            Error::KeyRequired { .. } | Error::DevKey { .. } | Error::LogRequired { .. } | Error::KeylessNeedsLog => exit::REJECTED,
            Error::Config(_) => exit::REJECTED,
            Error::Source(crate::stages::plan::source::SourceError::Io { .. }) => exit::ENVIRONMENT,
            Error::Source(crate::stages::plan::source::SourceError::Git { .. }) => exit::ENVIRONMENT,
            Error::Source(_) => exit::REJECTED,
            Error::Build(e) => match e {
                E::Base(B::Deb {
                    source:
                        crate::stages::build::debian::DebError::Sha256Mismatch { .. }
                        | crate::stages::build::debian::DebError::BadDeb { .. }
                        | crate::stages::build::debian::DebError::NotInIndex { .. },
                    ..
                })
                | E::Base(B::DigestMismatch { .. } | B::NotAManifest { .. } | B::Archive { .. })
                | E::Base(B::Layout {
                    source: oci::LayoutError::DigestMismatch { .. } | oci::LayoutError::NotALayout(_) | oci::LayoutError::Json { .. },
                    ..
                })
                | E::Base(B::Registry { source: oci::registry::RegistryError::DigestMismatch { .. }, .. })
                | E::Inventory {
                    source:
                        crate::stages::evidence::inventory::InventoryError::Scan(
                            crate::stages::evidence::scan::ScanError::Malformed { .. }
                            | crate::stages::evidence::scan::ScanError::TextTooLarge { .. },
                        ),
                    ..
                }
                | E::Command { .. }
                | E::LockFile { .. }
                | E::MissingLayerSource { .. }
                | E::Layer { source: oci::layer::LayerError::Unsupported { .. } | oci::layer::LayerError::BadDestination(_), .. } => {
                    exit::REJECTED
                }
                E::Source { source: crate::stages::plan::source::SourceError::Unsupported { .. }, .. } => exit::REJECTED,
                E::NeedsBuildKit { .. } | E::Dockerfile(_) | E::DockerfileConfig { .. } => exit::REJECTED,
                E::BuildKit(e) => e.exit_code(),
                E::Go { source, .. } => source.exit_code(),
                _ => exit::ENVIRONMENT,
            },
            Error::Layout(
                oci::LayoutError::DigestMismatch { .. } | oci::LayoutError::NotALayout(_) | oci::LayoutError::NoSuchRef { .. },
            ) => exit::REJECTED,
            Error::Layout(_) | Error::Io { .. } => exit::ENVIRONMENT,
            Error::Tool(e) => e.exit_code(),
            Error::Repro(e) => e.exit_code(),
            Error::Evidence(e) => e.exit_code(),
            Error::Sign(e) => e.exit_code(),
            Error::Manifest(e) => e.exit_code(),
            Error::Key(e) => e.exit_code(),
            Error::KeyLoad(e) => e.exit_code(),
            Error::Pkcs11(e) => e.exit_code(),
            Error::Signer(e) => e.exit_code(),
            Error::Templates(e) => e.exit_code(),
            Error::Lock(e) => e.exit_code(),
            Error::Kit(e) => e.exit_code(),
            Error::Publish(e) => e.exit_code(),
            Error::Gates(e) => e.exit_code(),
            Error::Ops(e) => e.exit_code(),
        }
    }
}

/// A write that failed because its filesystem is full (`ENOSPC`, "no space left on device"):
/// an environment failure (exit 3) whatever stage met it, with a hint naming the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFull {
    /// The path the failed write named, when an error of the chain names one (`` `path`: ``).
    pub path: Option<PathBuf>,
    /// Where the filesystem holding `path` is mounted (its nearest existing ancestor's).
    pub mount: Option<PathBuf>,
}

impl DiskFull {
    /// Looks for `ENOSPC` through `e` and its sources; the path is the innermost one an error
    /// of the chain names in backticks (every `Io` variant of this workspace prints
    /// `` `path`: source ``).
    pub fn in_chain(e: &(dyn std::error::Error + 'static)) -> Option<DiskFull> {
        let mut path = None;
        let mut at = Some(e);
        while let Some(err) = at {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if is_storage_full(io) {
                    let mount = path.as_deref().and_then(mount_of);
                    return Some(DiskFull { path, mount });
                }
            } else if let Some(p) = named_path(&err.to_string()) {
                path = Some(p);
            }
            at = err.source();
        }
        None
    }

    /// The `hint:` line: which filesystem to free space on.
    pub fn hint(&self) -> String {
        match (&self.mount, &self.path) {
            (Some(m), _) | (None, Some(m)) => format!(
                "the filesystem mounted at `{}` is full: free space on it (`df -h {}` shows it) and run the same command again",
                m.display(),
                m.display()
            ),
            (None, None) => "the disk is full: free space on it and run the same command again".to_owned(),
        }
    }
}

/// `ENOSPC` (or a quota's `EDQUOT`): the filesystem has no room for the write.
pub fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// The first backticked absolute path of a message, if any.
fn named_path(message: &str) -> Option<PathBuf> {
    let (_, rest) = message.split_once('`')?;
    let (inside, _) = rest.split_once('`')?;
    inside.starts_with('/').then(|| PathBuf::from(inside))
}

/// The mount point of the filesystem holding `path` (or the nearest ancestor that exists: the
/// failed file itself may not).
fn mount_of(path: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let mut at = path.ancestors().find(|a| a.exists())?;
    let dev = std::fs::metadata(at).ok()?.dev();
    while let Some(parent) = at.parent() {
        if std::fs::metadata(parent).ok()?.dev() != dev {
            break;
        }
        at = parent;
    }
    Some(at.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_anywhere_in_the_chain_is_an_environment_failure_with_a_hint_naming_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging/blob");
        let enospc = std::io::Error::from_raw_os_error(28);
        let e = Error::Io { path: path.clone(), source: enospc }.at(schema::report::Stage::Sign);
        assert_eq!(e.exit_code(), exit::ENVIRONMENT);
        let full = e.disk_full().unwrap();
        assert_eq!(full.path.as_deref(), Some(path.as_path()));
        // The mount point: an ancestor of the path's nearest existing one.
        let mount = full.mount.unwrap();
        assert!(dir.path().starts_with(&mount), "{}", mount.display());
        assert!(e.hint().unwrap().contains(&format!("`{}` is full", mount.display())), "{:?}", e.hint());
        // Another I/O error keeps its own hint.
        let other = Error::Io { path, source: std::io::Error::from_raw_os_error(13) };
        assert!(other.disk_full().is_none());
        assert!(other.hint().unwrap().contains("readable"));
    }
}
