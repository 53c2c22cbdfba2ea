//! The files people write, as serde types: `release-trains/<channel>.toml`,
//! `release-trains/components.toml` and `base-images.lock`.
//!
//! These types depend on nothing but [`crate::model`]; they refuse unknown keys
//! (`deny_unknown_fields`) and use `BTreeMap` so anything serialized from them is ordered.
//! Validation across fields (skew, pins, paths) happens in [`crate::config`], which names the
//! file and key of every refusal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Channel, Digest, PinnedRef, Platform, Version};

/// `release-trains/<channel>.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Train {
    pub channel: Channel,
    /// What the spec says of this channel, for humans.
    pub description: String,
    pub cadence: Cadence,
    /// How long a release of this channel is supported, in days.
    pub support_window_days: u32,
    /// Whether `release` of this channel needs a `v<version>` tag on the released commit.
    pub require_tag: bool,
    #[serde(default)]
    pub promotion: Option<Promotion>,
    /// How many release manifests the channel keeps for rollback (spec §5.3: `K` versions
    /// back). The release the channel points at is always kept.
    #[serde(default = "default_history_keep")]
    pub history_keep: u32,
    /// Days a signed channel pointer stays valid after it is signed; a client refuses it after
    /// (freeze attack). Re-sign before: `cargo xtask promote <current> --to <channel>`.
    #[serde(default = "default_pointer_expiry_days")]
    pub pointer_expiry_days: u32,
    pub kit: KitContents,
    /// Differences between the build-time SBOM and the scan that this channel accepts.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// The transparency log of this channel's releases (spec §2.3).
    #[serde(default)]
    pub transparency_log: TransparencyLog,
    /// A second party's rebuild as a promotion gate: `promote --to` this channel needs a
    /// passing rebuild verdict (`repro --against`'s VSA) by one of these keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_verdict: Option<RebuildVerdict>,
}

/// `[rebuild-verdict]` of a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RebuildVerdict {
    /// Public key files (SPKI PEM, relative to the repository root) of the rebuilders whose
    /// passing verdict a promotion to this channel needs (one of them). Never the release key.
    pub required_from: Vec<String>,
}

/// `[transparency-log]` of a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransparencyLog {
    /// Whether a release of the channel needs a log: refused before any work without one
    /// (`url` here or `--rekor-url`), and `verify` fails without every entry logged.
    #[serde(default)]
    pub required: bool,
    /// The log's base URL (Rekor API); `--rekor-url` (STELLAOPS_REKOR_URL) takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Which of Rekor's APIs the log speaks (`v1`, the default; `v2`, the tiled log);
    /// `--rekor-api` takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<RekorApi>,
}

/// Rekor's entry APIs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RekorApi {
    /// `/api/v1/log/entries`: an entry with its inclusion proof and signed entry timestamp.
    #[default]
    V1,
    /// `/api/v2/log/entries` (Rekor v2, a tiled log): a `TransparencyLogEntry` with its
    /// inclusion proof and checkpoint; no signed entry timestamp.
    V2,
}

fn default_history_keep() -> u32 {
    5
}
fn default_pointer_expiry_days() -> u32 {
    14
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DriftPolicy {
    #[serde(default)]
    pub accept: Vec<AcceptedDrift>,
}

/// One accepted difference: exactly this change of exactly this item, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AcceptedDrift {
    /// `added` (in the image, not declared), `removed` (declared, not in the image), `changed`.
    pub change: DriftChange,
    /// `file`, or a package type: deb, rust-crate, npm, python, go-module, dotnet.
    #[serde(rename = "type")]
    pub kind: String,
    /// Package name, or absolute file path.
    pub name: String,
    /// Package version or file sha256 as found; any when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// Only for this component; any when absent.
    #[serde(default)]
    pub component: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftChange {
    Added,
    Removed,
    Changed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cadence {
    Weekly,
    Monthly,
    Quarterly,
}

/// Where a release of this channel may be promoted, and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Promotion {
    pub to: Channel,
    /// Minimum days a release spends on this channel before promotion.
    pub min_days: u32,
}

/// What the channel's offline kit holds (spec §3.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KitContents {
    /// Component names, or `["*"]` for every component of the bundle.
    pub components: Vec<String>,
    /// Directories of the kit: a subset of images, sboms, attest, charts, compose, plugins, policy.
    pub sections: Vec<KitSection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KitSection {
    Images,
    Sboms,
    Attest,
    Charts,
    Compose,
    Plugins,
    Policy,
}

/// `release-trains/components.toml`: the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Bundle {
    pub release: ReleaseSection,
    #[serde(rename = "skew-rule", default)]
    pub skew_rules: Vec<SkewRule>,
    #[serde(rename = "component")]
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReleaseSection {
    /// `MAJOR.MINOR.PATCH`, or `MAJOR.MINOR.PATCH (YYYY.MM)` whose calendar must then match
    /// SOURCE_DATE_EPOCH.
    pub version: String,
    /// Where images are published: `host/namespace`.
    pub registry: String,
    /// The repository's canonical URL (`https://HOST/PATH` or `ssh://HOST/PATH`, no
    /// credentials), recorded as the source of every provenance; without it, the `origin`
    /// remote's URL (credentials stripped) is used ([`crate::config::source_url`]).
    #[serde(default)]
    pub source: Option<String>,
    /// Registries that receive the same content by digest after the primary (spec §3.1).
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<MirrorSection>,
    /// How the daemonless builder gzips component layers ([`LayerGzip`]): `1` when absent.
    #[serde(default, skip_serializing_if = "LayerGzip::is_v1")]
    pub layer_gzip: LayerGzip,
    /// Which commit time stamps the images ([`ImageEpoch`]): `release` when absent.
    #[serde(default, skip_serializing_if = "ImageEpoch::is_release")]
    pub image_epoch: ImageEpoch,
}

/// `[release] image-epoch`: the SOURCE_DATE_EPOCH (layer mtimes, `created`) and revision the
/// images of a component carry. Part of a release's inputs, like [`LayerGzip`]: a tag rebuilds
/// with the rule it was made with.
/// - `release` (the default, and what every release made before the key existed used): the
///   released commit's time and id, for every image. A new commit changes every image.
/// - `component`: per component, the time and id of the newest commit (first-parent history
///   from the released commit) that changed one of the component's inputs: its source tree,
///   its own entry of the bundle, the `[release]` keys images carry, and the bases and
///   toolchain it uses in `base-images.lock`. An unchanged component keeps its digests from
///   one commit to the next (what the build cache reuses). Needs the whole history: a shallow
///   clone is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageEpoch {
    #[default]
    Release,
    Component,
}

impl ImageEpoch {
    pub fn is_release(&self) -> bool {
        *self == ImageEpoch::Release
    }
}

/// `[release] layer-gzip`: the gzip format of the layers the daemonless builder writes. Other
/// compressed bytes are other layer digests, so the format is part of a release's inputs: a
/// tag built with one format rebuilds with it, whatever the pipeline's version.
/// - `1` (the default, and what every release made before the key existed used): zlib-rs
///   deflate level 6 in 128 KiB blocks, each primed with the previous 32 KiB, one gzip member.
/// - `2`: libdeflate level 4, one gzip member per 128 KiB block (no dictionary). The layer
///   writer takes about half the CPU time of format 1; output about 3% larger. Every gzip reader that layers meet
///   (Go's `compress/gzip` in Docker, containerd, skopeo and umoci; GNU gzip; flate2's
///   `MultiGzDecoder`) reads multi-member streams.
/// - `3`: format 2 at libdeflate level 2 (the fastest level whose output on the bench tree
///   stays under `umoci insert`'s), and a block whose 4 KiB samples (start, middle, end) do
///   not shrink by more than 1/32 at level 1 is stored instead of deflated (media, archives,
///   encrypted data: level 4 deflated pure noise at 105 MB/s for nothing; storing runs at
///   2.6 GB/s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum LayerGzip {
    #[default]
    V1,
    V2,
    V3,
}

impl LayerGzip {
    pub fn is_v1(&self) -> bool {
        *self == LayerGzip::V1
    }
}

impl TryFrom<u32> for LayerGzip {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        match n {
            1 => Ok(LayerGzip::V1),
            2 => Ok(LayerGzip::V2),
            3 => Ok(LayerGzip::V3),
            _ => Err(format!("layer-gzip `{n}` is not a known format: use 1 (zlib-rs with dictionaries, the default), 2 (libdeflate, one member per block) or 3 (2, with incompressible blocks stored)")),
        }
    }
}

impl From<LayerGzip> for u32 {
    fn from(f: LayerGzip) -> u32 {
        match f {
            LayerGzip::V1 => 1,
            LayerGzip::V2 => 2,
            LayerGzip::V3 => 3,
        }
    }
}

/// `[[release.mirror]]`: a registry that mirrors the primary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MirrorSection {
    /// `host/namespace`.
    pub registry: String,
    /// When true, a release whose push to this mirror fails is not tagged anywhere; when false
    /// (the default) the failure is reported and `publish --resume` retries it.
    #[serde(default)]
    pub required: bool,
}

/// One skew rule of spec §1.3: the minor versions of `left` and `right` groups differ by at
/// most `max-minor-distance` (and the majors are equal). With only `left`, the rule applies
/// among the members of `left`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SkewRule {
    pub id: String,
    pub description: String,
    pub left: Vec<String>,
    #[serde(default)]
    pub right: Vec<String>,
    pub max_minor_distance: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Component {
    pub name: String,
    pub version: Version,
    /// Skew group named by the skew rules (`trust`, `scanner`, `feeds`, `ui`, ...).
    pub skew_group: String,
    pub platforms: Vec<Platform>,
    /// Name of a base in `base-images.lock`.
    pub base: String,
    pub source: Source,
    pub recipe: Recipe,
}

/// Where a component's source is: a directory of this repository, or a git repository at a
/// pinned commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Source {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub git: Option<String>,
    /// Full 40-hex commit id (with `git`).
    #[serde(default)]
    pub rev: Option<String>,
    /// Directory inside the git repository (with `git`).
    #[serde(default)]
    pub subdir: Option<String>,
}

/// How the daemonless builder assembles the component: an optional build command, then one
/// layer per `layer` entry on top of the base.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recipe {
    /// Command run in a copy of the source before layering, with `OUT` (a fresh directory),
    /// `SOURCE_DATE_EPOCH`, `STELLAOPS_PLATFORM` and `STELLAOPS_VERSION` set. Optional.
    #[serde(default)]
    pub build: Vec<String>,
    #[serde(rename = "layer", default)]
    pub layers: Vec<LayerSpec>,
    /// Required unless the component is built from a `dockerfile` only (then its `ENTRYPOINT`
    /// or `CMD` may say what the image starts).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Command run inside the container to check health (Docker `HEALTHCHECK CMD`).
    #[serde(default)]
    pub healthcheck: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// A Dockerfile for the BuildKit backend, relative to the source. With `--backend
    /// buildkit` the component is built from it (its filesystem, and the image config the
    /// engine gives it, with this recipe's config keys on top: a key the Dockerfile also sets,
    /// to another value, is refused); otherwise from `layer`. One of the two must be there.
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Build arguments passed to BuildKit (recorded in `images.json`).
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Build arguments whose values come from the pipeline's environment variable of the same
    /// name; recorded as `<redacted>`.
    #[serde(default)]
    pub secret_build_args: Vec<String>,
    /// Bases of `base-images.lock` the Dockerfile's build stages may stand on (besides the
    /// component's own base, which the last stage must use): each is pushed to the base
    /// mirror, pinned for the platform, and passed as `STELLAOPS_BASE_<NAME>` (upper case,
    /// `-` and `.` as `_`). Recorded in the provenance; not part of the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_bases: Vec<String>,
    /// A Go program compiled by the daemonless backend before the build command, offline,
    /// with a pinned toolchain of `base-images.lock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<GoRecipe>,
}

/// `[component.recipe.go]`: `go build` of one package of a Go module of the source, with a
/// `[[toolchain]]` of `base-images.lock`, with `-mod=vendor`, `-trimpath`, no cgo and no
/// network. The module's requirements come from its committed `vendor/` directory, or else
/// from the toolchain's pinned packages (checked against `go.sum`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GoRecipe {
    /// A `[[toolchain]]` of `base-images.lock` of kind `go`.
    pub toolchain: String,
    /// Directory of `go.mod`, relative to the source.
    #[serde(default = "dot")]
    pub module: String,
    /// The package to build, relative to the module (`./cmd/server`).
    #[serde(default = "dot")]
    pub package: String,
    /// Where the program goes, relative to `$OUT` (a `layer` from `$OUT/...` carries it).
    pub output: String,
}

fn dot() -> String {
    ".".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LayerSpec {
    /// Directory relative to the source (or `$OUT/...` for the build command's output).
    pub from: String,
    /// Absolute path in the image where the directory's content goes.
    pub to: String,
}

/// `base-images.lock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BaseLock {
    pub lock_version: u32,
    #[serde(rename = "base", default)]
    pub bases: Vec<Base>,
    #[serde(rename = "toolchain", default, skip_serializing_if = "Vec::is_empty")]
    pub toolchains: Vec<Toolchain>,
}

/// A compiler from pinned Debian packages, run on the build machine (linux/amd64) by the
/// daemonless backend; it cross-compiles for every platform. Not part of any image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Toolchain {
    pub name: String,
    pub kind: ToolchainKind,
    /// Debian suite the packages come from.
    pub suite: String,
    /// `GOROOT` inside the unpacked packages (`usr/lib/go-1.19`).
    pub root: String,
    /// Go modules whose source a package of the toolchain carries under
    /// `usr/share/gocode/src/<module>`: module path -> package name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub go_modules: BTreeMap<String, String>,
    /// Every package, pinned by sha256 (architecture `amd64` or `all`).
    pub packages: Vec<DebPin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolchainKind {
    Go,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Base {
    pub name: String,
    pub source: BaseSource,
    /// Debian suite the packages come from (`source = "debian"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Modification time of every entry of an assembled base layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Symlinks added after the packages are unpacked: path in the image -> target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub symlinks: BTreeMap<String, String>,
    /// Empty directories added after the packages are unpacked (e.g. `tmp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directories: Vec<String>,
    #[serde(rename = "platform")]
    pub platforms: BTreeMap<Platform, BasePin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseSource {
    /// Assembled from pinned Debian packages.
    Debian,
    /// An image in a local OCI layout.
    OciLayout,
    /// An image in a registry, by digest.
    Registry,
    /// A `docker save` tarball.
    DockerArchive,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BasePin {
    /// Digest of the base image manifest for this platform.
    pub digest: Digest,
    /// `source = "registry"`: where to fetch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<PinnedRef>,
    /// `source = "oci-layout"`: the layout directory, relative to the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// `source = "docker-archive"`: the `docker save` tarball, relative to the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `source = "debian"`: every package, pinned by sha256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<DebPin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DebPin {
    pub name: String,
    pub arch: String,
    /// Filled in by `cargo xtask lock`.
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub sha256: String,
    /// Path in the archive's pool (from the Packages index).
    #[serde(default)]
    pub filename: String,
}
