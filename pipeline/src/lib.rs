//! The Stella Ops release pipeline: a tagged source tree in, a release anyone can verify out.
//!
//! ```text
//!   config ──► plan ──► bases ──► build ──► index ──► write
//!  (trains,   (version, (pinned,  (component (one image  (release dir,
//!   bundle,    epoch,    verified) x platform, index per  renamed into
//!   lock)      skew)               parallel)  component)  place whole)
//! ```
//!
//! - [`config`] reads and validates `release-trains/` and `base-images.lock` ([`schema`] types);
//! - [`plan`] decides everything before any work ([`source`] for git facts, [`skew`] rules);
//! - [`build`] turns each component x platform into an OCI image ([`base`], [`debian`],
//!   [`layer`], [`oci`]) through a [`build::Backend`]: daemonless, or [`buildkit`] for
//!   components with a Dockerfile ([`dockerfile`] checks its `FROM` pins, [`rootfs`] turns
//!   BuildKit's exported filesystem into a deterministic layer);
//! - [`referrers`] adds every SBOM, attestation and signature to the layout as OCI 1.1
//!   referrers; [`publish`] pushes a layout by digest ([`distribution`], [`auth`]), tags last;
//!   [`verify_registry`] reads a published release back;
//! - [`templates`] renders the Helm chart and compose file with every image by digest;
//! - [`release`] runs the stages; [`repro`] builds twice and compares; [`lock`] refreshes pins;
//! - [`ops`] after a release: gates (a stage of `release`), channel pointers, promotion,
//!   history and rollback, upgrade preflight.
//!
//! The library never prints: progress goes through [`report::Reporter`].

pub mod auth;
pub mod base;
pub mod build;
pub mod buildkit;
pub mod config;
pub mod debian;
pub mod distribution;
pub mod dockerfile;
pub mod drift;
pub mod evidence;
pub mod keys;
pub mod kit;
pub mod layer;
pub mod lock;
pub mod manifest;
pub mod model;
pub mod oci;
pub mod ops;
pub mod pgzip;
pub mod plan;
pub mod provenance;
pub mod publish;
pub mod referrers;
pub mod registry;
pub mod release;
pub mod report;
pub mod repro;
pub mod rootfs;
pub mod sbom;
pub mod scan;
pub mod schema;
pub mod sign;
pub mod skew;
pub mod source;
pub mod templates;
pub mod tlog;
pub mod trust;
pub mod verify;
pub mod verify_registry;

use std::path::PathBuf;

/// Every way the pipeline can fail, grouped by stage. [`Error::exit_code`] maps each to the
/// documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("the bundle breaks the version skew rules of spec §1.3:\n{}\n  hint: align the versions in `release-trains/components.toml`", .0.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n"))]
    Skew(Vec<skew::Violation>),
    #[error(transparent)]
    Build(#[from] build::BuildError),
    #[error(transparent)]
    Layout(#[from] oci::LayoutError),
    #[error(transparent)]
    Repro(#[from] repro::ReproError),
    #[error(transparent)]
    Evidence(#[from] evidence::EvidenceError),
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Templates(#[from] templates::TemplateError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Kit(#[from] kit::KitError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    #[error(transparent)]
    Gates(#[from] ops::gates::GateError),
    #[error(transparent)]
    Ops(#[from] ops::OpsError),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Exit codes (README "Exit codes").
pub mod exit {
    /// Refused: bad input, a failed check, a reproducibility mismatch.
    pub const REJECTED: i32 = 1;
    /// A bug in this tool.
    pub const INTERNAL: i32 = 2;
    /// The environment failed: I/O, network, a missing tool.
    pub const ENVIRONMENT: i32 = 3;
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        use base::BaseError as B;
        use build::BuildError as E;
        match self {
            Error::Config(_) | Error::Skew(_) => exit::REJECTED,
            Error::Source(source::SourceError::Io { .. }) => exit::ENVIRONMENT,
            Error::Source(source::SourceError::Git { .. }) => exit::ENVIRONMENT,
            Error::Source(_) => exit::REJECTED,
            Error::Build(e) => match e {
                E::Base(B::Deb {
                    source: debian::DebError::Sha256Mismatch { .. } | debian::DebError::BadDeb { .. } | debian::DebError::NotInIndex { .. },
                    ..
                })
                | E::Base(B::DigestMismatch { .. } | B::NotAManifest { .. })
                | E::Base(B::Layout {
                    source: oci::LayoutError::DigestMismatch { .. } | oci::LayoutError::NotALayout(_) | oci::LayoutError::Json { .. },
                    ..
                })
                | E::Base(B::Registry { source: registry::RegistryError::DigestMismatch { .. }, .. })
                | E::Command { .. }
                | E::LockFile { .. }
                | E::MissingLayerSource { .. }
                | E::Layer { source: layer::LayerError::Unsupported { .. } | layer::LayerError::BadDestination(_), .. } => exit::REJECTED,
                E::Source { source: source::SourceError::Unsupported { .. }, .. } => exit::REJECTED,
                E::NeedsBuildKit { .. } | E::Dockerfile(_) => exit::REJECTED,
                E::BuildKit(e) => e.exit_code(),
                _ => exit::ENVIRONMENT,
            },
            Error::Layout(
                oci::LayoutError::DigestMismatch { .. } | oci::LayoutError::NotALayout(_) | oci::LayoutError::NoSuchRef { .. },
            ) => exit::REJECTED,
            Error::Layout(_) | Error::Io { .. } => exit::ENVIRONMENT,
            Error::Repro(e) => e.exit_code(),
            Error::Evidence(e) => e.exit_code(),
            Error::Trust(e) => e.exit_code(),
            Error::Key(e) => e.exit_code(),
            Error::Templates(e) => e.exit_code(),
            Error::Lock(e) => e.exit_code(),
            Error::Kit(e) => e.exit_code(),
            Error::Publish(e) => e.exit_code(),
            Error::Gates(e) => e.exit_code(),
            Error::Ops(e) => e.exit_code(),
        }
    }
}
