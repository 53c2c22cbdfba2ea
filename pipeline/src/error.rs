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
    #[error("a `{channel}` release must be signed with a named release key, not the development key")]
    KeyRequired { channel: schema::model::Channel },
    #[error("a `{channel}` release is never signed with the development key `{path}`")]
    DevKey { channel: schema::model::Channel, path: PathBuf },
    #[error("a `{channel}` release needs a transparency log (spec §2.3; `release-trains/{channel}.toml` `[transparency-log] required = true`) and none is configured")]
    LogRequired { channel: schema::model::Channel },
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

    /// What the user can do about it, as data (the CLI prints it as a `hint:` line); `None`
    /// where the message itself already says it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::At { source, .. } => source.hint(),
            Error::Plan(p) => p.hint(),
            Error::Source(s) => s.hint(),
            Error::KeyRequired { channel } | Error::DevKey { channel, .. } => Some(format!(
                "make one once with `cargo xtask keys generate --out release.key` (keep it offline), then \
                 `cargo xtask release --channel {channel} --key release.key` with STELLAOPS_KEY_PASSPHRASE set"
            )),
            Error::LogRequired { channel } => Some(format!(
                "set `url` under `[transparency-log]` in `release-trains/{channel}.toml`, or pass `--rekor-url URL` \
                 (STELLAOPS_REKOR_URL); a log that is down does not stop the release, its entries wait for `cargo xtask attest resubmit`"
            )),
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
        match self {
            Error::At { source, .. } => source.exit_code(),
            Error::Plan(p) => p.exit_code(),
            Error::KeyRequired { .. } | Error::DevKey { .. } | Error::LogRequired { .. } => exit::REJECTED,
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
