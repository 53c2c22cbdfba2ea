//! The build stage's errors: [`BuildError`] (every backend returns it) and the BuildKit
//! backend's own [`BuildKitError`]. Below the backends, so that no backend imports the stage.

use std::io;
use std::path::PathBuf;

use oci::layer::LayerError;
use oci::LayoutError;
use schema::config::BUNDLE_FILE;
use schema::model::Platform;

use super::base::BaseError;
use super::dockerfile;
use super::rootfs::RootfsError;
use crate::stages::plan::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error("base `{base}` ({platform}): inventory: {source}")]
    Inventory {
        base: String,
        platform: Platform,
        #[source]
        source: crate::stages::evidence::inventory::InventoryError,
    },
    #[error("component `{component}` ({platform}): {source}")]
    Source {
        component: String,
        platform: Platform,
        #[source]
        source: SourceError,
    },
    #[error("component `{component}`: {source}")]
    Fetch {
        component: String,
        #[source]
        source: SourceError,
    },
    #[error("component `{component}` ({platform}): build command `{command}` {status}\n{stderr}")]
    Command { component: String, platform: Platform, command: String, status: String, stderr: String },
    #[error("component `{component}` ({platform}): {source}")]
    LockFile {
        component: String,
        platform: Platform,
        #[source]
        source: crate::stages::evidence::sbom::locks::LockFileError,
    },
    #[error("component `{component}` ({platform}): recipe layer `{from}` is not a directory in the source (or `$OUT`)")]
    MissingLayerSource { component: String, platform: Platform, from: String },
    #[error("component `{component}` ({platform}): {source}")]
    Layer {
        component: String,
        platform: Platform,
        #[source]
        source: LayerError,
    },
    #[error("component `{component}` ({platform}): {source}")]
    Layout {
        component: String,
        platform: Platform,
        #[source]
        source: LayoutError,
    },
    #[error(transparent)]
    Index(LayoutError),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("component `{component}` has no recipe layers, only a Dockerfile\n  hint: build it with `--backend buildkit`")]
    NeedsBuildKit { component: String },
    #[error("refused before building: {} problem{} in Dockerfiles\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|p| format!("- {p}")).collect::<Vec<_>>().join("\n"))]
    Dockerfile(Vec<dockerfile::Problem>),
    #[error("component `{component}` ({platform}): the Dockerfile `{dockerfile}` and the component's recipe in `{BUNDLE_FILE}` do not agree on the image config:\n{}\n  hint: set each field in one place: drop the recipe key, or the Dockerfile instruction", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    DockerfileConfig { component: String, platform: Platform, dockerfile: String, problems: Vec<String> },
    #[error(transparent)]
    BuildKit(#[from] BuildKitError),
    #[error("component `{component}`{}: {source}", .platform.map(|p| format!(" ({p})")).unwrap_or_default())]
    Go {
        component: String,
        platform: Option<Platform>,
        #[source]
        source: super::golang::GoError,
    },
}

/// What one job made.

#[derive(Debug, thiserror::Error)]
pub enum BuildKitError {
    #[error("no BuildKit endpoint is usable:\n{}\n  hint: start the Docker engine, or pass working endpoints with `--builder unix:///path/docker.sock` or `--builder tcp://HOST:PORT` (default: `DOCKER_HOST`)", .0.iter().map(|(e, why)| format!("  - `{e}`: {why}")).collect::<Vec<_>>().join("\n"))]
    NoEndpoint(Vec<(String, String)>),
    #[error("endpoint `{0}` is not `[PLATFORM[,PLATFORM]=]unix:///path/docker.sock` or `[PLATFORM[,PLATFORM]=]tcp://HOST:PORT`\n  hint: a standalone buildkitd (its gRPC API) is not supported: point `--builder` at a Docker engine")]
    BadEndpoint(String),
    #[error("endpoint `{0}`: a Docker engine over TCP is spoken to with mutual TLS only, and no TLS material was given\n  hint: pass `--builder-tls-ca`, `--builder-tls-cert` and `--builder-tls-key`, or set `DOCKER_CERT_PATH` to a directory with `ca.pem`, `cert.pem` and `key.pem`")]
    NoTls(String),
    #[error("`{path}`: the builders' TLS {role}: {message}\n  hint: `--builder-tls-ca`, `--builder-tls-cert`, `--builder-tls-key` (or `DOCKER_CERT_PATH`) name PEM files")]
    TlsFile { role: &'static str, path: PathBuf, message: String },
    #[error("`--build-cache` `{0}` is not `HOST[:PORT]/REPOSITORY` (no tag, no digest)")]
    BadBuildCache(String),
    #[error("component `{component}` ({platform}) on `{endpoint}`: cannot push the build cache `{reference}`: {message}\n  hint: the engine pushes it: the registry must be reachable from the engine (a loopback registry is insecure by default)")]
    CachePush { component: String, platform: Platform, endpoint: String, reference: String, message: String },
    #[error("base `{base}` ({platform}) is not in a registry BuildKit can pull from\n  hint: pass `--base-mirror HOST:PORT/PATH` (the pipeline pushes the pinned base there by digest), or pin the base with `source = \"registry\"`")]
    NoBaseSource { base: String, platform: Platform },
    #[error("base `{base}` ({platform}): cannot push it to the mirror: {source}")]
    Mirror {
        base: String,
        platform: Platform,
        #[source]
        source: oci::registry::RegistryError,
    },
    #[error("`{BUNDLE_FILE}`: component `{component}`: `recipe.secret-build-args`: `{name}` is not set in the environment")]
    MissingSecret { component: String, name: String },
    #[error("component `{component}` ({platform}): cannot read its Dockerfile `{file}`: {message}")]
    Dockerfile { component: String, platform: Platform, file: String, message: String },
    #[error("component `{component}` ({platform}) on `{endpoint}`: {}{message}{}", .step.as_ref().map(|s| format!("step `{s}` failed: ")).unwrap_or_default(), if .log.is_empty() { String::new() } else { format!("\n  log tail:\n{}", .log.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")) })]
    Failed { component: String, platform: Platform, endpoint: String, step: Option<String>, message: String, log: Vec<String> },
    #[error("component `{component}` ({platform}): {source}")]
    Rootfs {
        component: String,
        platform: Platform,
        #[source]
        source: RootfsError,
    },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl BuildKitError {
    pub fn exit_code(&self) -> schema::exit::Code {
        use schema::exit;
        match self {
            BuildKitError::BadEndpoint(_)
            | BuildKitError::NoTls(_)
            | BuildKitError::TlsFile { .. }
            | BuildKitError::BadBuildCache(_)
            | BuildKitError::NoBaseSource { .. }
            | BuildKitError::MissingSecret { .. }
            | BuildKitError::Failed { .. }
            | BuildKitError::Rootfs { source: RootfsError::Unsupported { .. }, .. } => exit::REJECTED,
            _ => exit::ENVIRONMENT,
        }
    }
}
