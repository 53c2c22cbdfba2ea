//! Plan: everything decided before any work. Reads the configuration and the git facts,
//! enforces the refusals that need no build (dirty tree, missing tag, lock files changed since
//! the tag, calendar mismatch, skew), and lists each component x platform with its pinned
//! base digest and the outputs. No side effects.

pub mod source;

use std::path::{Path, PathBuf};

use serde::Serialize;

use schema::config::{self, Config, Problem, BUNDLE_FILE};
use schema::exit;
use schema::files::{DriftPolicy, ImageEpoch, KitContents, Recipe};
use schema::model::{rfc3339, Channel, Digest, Platform, ReleaseVersion};
use source::SourceFacts;

/// Whether uncommitted changes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// `release`: the tree must be clean.
    MustBeClean,
    /// `plan`, `build`, `repro`: uncommitted changes are reported; HEAD is what gets built.
    MayBeDirty,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Repository root.
    pub root: PathBuf,
    pub channel: Channel,
    pub tree: Tree,
    /// Release directory; default `<root>/target/releases/<version>-<channel>`.
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// `MAJOR.MINOR.PATCH (YYYY.MM)`.
    pub version: ReleaseVersion,
    pub channel: Channel,
    pub source: SourceFacts,
    pub source_date_epoch: i64,
    /// SOURCE_DATE_EPOCH as RFC 3339: the `created` time of every image.
    pub created: String,
    pub registry: String,
    pub backend: &'static str,
    pub compressor: &'static str,
    /// The layer gzip format (`[release] layer-gzip`), recorded as `compressor`.
    #[serde(skip)]
    pub layer_gzip: schema::files::LayerGzip,
    pub components: Vec<PlannedComponent>,
    /// Where the release is written.
    pub output: PathBuf,
    #[serde(skip)]
    pub root: PathBuf,
    /// What the channel's offline kit holds (`[kit]` of `release-trains/<channel>.toml`).
    #[serde(skip)]
    pub kit: KitContents,
    /// The differences between build-time SBOM and scan the channel accepts (`[[drift.accept]]`).
    #[serde(skip)]
    pub drift: DriftPolicy,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedComponent {
    pub name: String,
    pub version: String,
    pub skew_group: String,
    /// `registry/namespace/name`.
    pub repository: String,
    pub source: PlannedSource,
    /// Whether the channel's kit carries this component.
    pub in_kit: bool,
    pub images: Vec<PlannedImage>,
    /// When and where its inputs last changed, under `[release] image-epoch = "component"`
    /// (absent under the default rule: the release's commit stamps every image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<source::ComponentEpoch>,
    /// What its images are stamped with: the component's epoch, else the release's.
    #[serde(skip)]
    pub stamp: Stamp,
    #[serde(skip)]
    pub recipe: Recipe,
}

/// The SOURCE_DATE_EPOCH, `created` time and revision a component's images carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub epoch: i64,
    /// `epoch` as RFC 3339.
    pub created: String,
    /// The commit id the images' revision label names.
    pub revision: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PlannedSource {
    /// A directory of this repository, read from commit `commit`.
    Path {
        path: String,
        commit: String,
    },
    Git {
        url: String,
        commit: String,
        subdir: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedImage {
    pub platform: Platform,
    pub base: String,
    pub base_digest: Digest,
    /// The ref name of this image in the release's OCI layout.
    pub ref_name: String,
}

/// Why there is no plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("the bundle breaks the version skew rules of spec §1.3:\n{}", .0.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n"))]
    Skew(Vec<schema::skew::Violation>),
}

impl PlanError {
    pub fn exit_code(&self) -> exit::Code {
        match self {
            PlanError::Source(source::SourceError::Io { .. } | source::SourceError::Git { .. }) => exit::ENVIRONMENT,
            PlanError::Config(_) | PlanError::Source(_) | PlanError::Skew(_) => exit::REJECTED,
        }
    }

    /// What the user can do about it (drawn by the CLI).
    pub fn hint(&self) -> Option<String> {
        match self {
            PlanError::Skew(_) => Some("align the versions in `release-trains/components.toml`".to_owned()),
            PlanError::Source(s) => s.hint(),
            PlanError::Config(_) => None,
        }
    }
}

/// Makes the plan, or says every reason there cannot be one.
pub fn plan(opts: &PlanOptions) -> Result<(Plan, Config), PlanError> {
    let cfg = config::load(&opts.root)?;
    let tag_name = format!("v{}", cfg.version);
    let facts = source::facts(&cfg.root, &tag_name, cfg.bundle.release.source.as_deref())?;
    let epoch = facts.source_date_epoch;
    let version = ReleaseVersion::at(cfg.version, epoch);
    if let Some(declared) = cfg.declared {
        if declared.calendar != version.calendar {
            return Err(config::ConfigError(vec![Problem {
                file: BUNDLE_FILE.to_owned(),
                key: "release.version".to_owned(),
                message: format!(
                    "`{declared}` declares calendar `{}` but SOURCE_DATE_EPOCH {epoch} ({}) of commit `{}` is in `{}`",
                    declared.calendar,
                    rfc3339(epoch),
                    &facts.commit[..12],
                    version.calendar
                ),
                hint: Some("write the version without its calendar tag, which is derived from the commit time".to_owned()),
            }])
            .into());
        }
    }
    if opts.tree == Tree::MustBeClean && !facts.dirty.is_empty() {
        return Err(source::SourceError::Dirty(facts.dirty.clone()).into());
    }
    let train = cfg.train(opts.channel);
    if train.require_tag && facts.tag.is_none() {
        return Err(source::SourceError::TagRequired {
            channel: opts.channel.to_string(),
            tag: tag_name,
            commit: facts.commit[..12].to_owned(),
        }
        .into());
    }
    // Lock files are frozen at the release tag, wherever it points.
    if let Some(tag) = facts.tag.as_ref().or(facts.tag_elsewhere.as_ref()) {
        let dirs: Vec<&str> = cfg.bundle.components.iter().filter_map(|c| c.source.path.as_deref()).collect();
        source::check_frozen(&cfg.root, tag, &dirs)?;
    }
    let violations = schema::skew::check(&cfg.bundle);
    if !violations.is_empty() {
        return Err(PlanError::Skew(violations));
    }

    let registry = cfg.bundle.release.registry.clone();
    let kit_all = train.kit.components.iter().any(|c| c == "*");
    let components = cfg
        .bundle
        .components
        .iter()
        .map(|c| {
            let base = cfg.base(&c.base).expect("validated by config::load");
            let source = match (&c.source.path, &c.source.git) {
                (Some(p), _) => PlannedSource::Path { path: p.clone(), commit: facts.commit.clone() },
                (None, Some(url)) => PlannedSource::Git {
                    url: url.clone(),
                    commit: c.source.rev.clone().unwrap_or_default(),
                    subdir: c.source.subdir.clone().unwrap_or_else(|| ".".to_owned()),
                },
                (None, None) => unreachable!("validated by config::load"),
            };
            PlannedComponent {
                name: c.name.clone(),
                version: c.version.to_string(),
                skew_group: c.skew_group.clone(),
                repository: format!("{registry}/{}", c.name),
                source,
                in_kit: kit_all || train.kit.components.contains(&c.name),
                images: c
                    .platforms
                    .iter()
                    .map(|&platform| PlannedImage {
                        platform,
                        base: c.base.clone(),
                        base_digest: base.platforms[&platform].digest.clone(),
                        ref_name: format!("{}-{}", c.name, platform.slug()),
                    })
                    .collect(),
                epoch: None,
                stamp: Stamp { epoch, created: rfc3339(epoch), revision: facts.commit.clone() },
                recipe: c.recipe.clone(),
            }
        })
        .collect::<Vec<_>>();
    let mut components = components;
    if cfg.bundle.release.image_epoch == ImageEpoch::Component {
        let inputs: Vec<source::ComponentInputs> = cfg
            .bundle
            .components
            .iter()
            .map(|c| source::ComponentInputs {
                name: c.name.clone(),
                path: c.source.path.clone(),
                bases: std::iter::once(c.base.clone()).chain(c.recipe.build_bases.iter().cloned()).collect(),
                toolchain: c.recipe.go.as_ref().map(|g| g.toolchain.clone()),
            })
            .collect();
        let epochs = source::component_epochs(&cfg.root, &facts.commit, &inputs)?;
        for (c, e) in components.iter_mut().zip(epochs) {
            c.stamp = Stamp { epoch: e.source_date_epoch, created: rfc3339(e.source_date_epoch), revision: e.commit.clone() };
            c.epoch = Some(e);
        }
    }
    let output = opts.out.clone().unwrap_or_else(|| release_dir(&cfg.root, &version, opts.channel));
    let plan = Plan {
        version,
        channel: opts.channel,
        source: facts,
        source_date_epoch: epoch,
        created: rfc3339(epoch),
        registry,
        backend: "daemonless",
        compressor: oci::layer::compressor(cfg.bundle.release.layer_gzip),
        layer_gzip: cfg.bundle.release.layer_gzip,
        components,
        output,
        root: cfg.root.clone(),
        kit: cfg.train(opts.channel).kit.clone(),
        drift: cfg.train(opts.channel).drift.clone(),
    };
    Ok((plan, cfg))
}

/// `<root>/target/releases/<version>-<channel>`.
pub fn release_dir(root: &Path, version: &ReleaseVersion, channel: Channel) -> PathBuf {
    root.join("target/releases").join(format!("{}-{channel}", version.version))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use schema::skew::Violation;
    use source::SourceError;

    fn violation() -> Violation {
        Violation {
            rule: "api-web".into(),
            description: "the UI talks to the API".into(),
            a: ("api".into(), "2.4.0".into()),
            b: ("web".into(), "2.6.0".into()),
            allowed: 1,
        }
    }

    fn git_error() -> git2::Error {
        git2::Error::from_str("object not found")
    }

    #[test]
    fn release_dir_is_version_dash_channel_under_target_releases() {
        let v: ReleaseVersion = "2.4.1 (2027.06)".parse().unwrap();
        assert_eq!(release_dir(Path::new("/repo"), &v, Channel::Stable), PathBuf::from("/repo/target/releases/2.4.1-stable"));
        assert_eq!(release_dir(Path::new("/repo"), &v, Channel::Lts), PathBuf::from("/repo/target/releases/2.4.1-lts"));
        // The calendar tag is not part of the name: the same version in another month is the same directory.
        let later: ReleaseVersion = "2.4.1 (2027.09)".parse().unwrap();
        assert_eq!(release_dir(Path::new("/repo"), &v, Channel::Edge), release_dir(Path::new("/repo"), &later, Channel::Edge));
        assert_eq!(release_dir(Path::new("rel"), &v, Channel::Edge), PathBuf::from("rel/target/releases/2.4.1-edge"));
    }

    #[test]
    fn skew_is_rejected_with_a_hint_naming_the_bundle_file() {
        let e = PlanError::Skew(vec![violation(), violation()]);
        assert_eq!(e.exit_code(), exit::REJECTED);
        let hint = e.hint().unwrap();
        assert!(hint.contains("release-trains/components.toml"), "{hint}");
        assert!(hint.contains(BUNDLE_FILE), "{hint}");
        let text = e.to_string();
        assert!(text.starts_with("the bundle breaks the version skew rules of spec §1.3:\n  - skew rule `api-web`"), "{text}");
        assert_eq!(text.matches("\n  - ").count(), 2, "{text}");
    }

    #[test]
    fn io_and_git_failures_are_the_environment() {
        let io = PlanError::from(SourceError::Io { path: "/repo/x".into(), source: std::io::Error::other("disk full") });
        assert_eq!(io.exit_code(), exit::ENVIRONMENT);
        assert_eq!(io.hint(), None);
        let git = PlanError::from(SourceError::Git { what: "read HEAD".into(), source: git_error() });
        assert_eq!(git.exit_code(), exit::ENVIRONMENT);
        assert_eq!(git.hint(), None);
    }

    #[test]
    fn refusals_of_the_source_and_the_configuration_are_rejected() {
        let refusals = [
            (SourceError::NotARepo { path: "/tmp/x".into(), source: git_error() }, Some("pass `--source DIR`")),
            (SourceError::Dirty(vec!["README.md".into()]), Some("commit or stash them")),
            (SourceError::LockFilesChanged { tag: "v2.4.1".into(), changes: vec!["Cargo.lock".into()] }, Some("restore them from the tag")),
            (
                SourceError::TagRequired { channel: "stable".into(), tag: "v2.4.1".into(), commit: "0123456789ab".into() },
                Some("`git tag v2.4.1 0123456789ab`"),
            ),
            (SourceError::Unsupported { path: "sub".into(), commit: "0123456789ab".into(), kind: "submodule" }, None),
            (SourceError::NoRepositoryUrl { reason: "no origin".into() }, Some("`[release] source = \"https://HOST/PATH\"`")),
        ];
        for (r, hint) in refusals {
            let e = PlanError::from(r);
            assert_eq!(e.exit_code(), exit::REJECTED, "{e}");
            // Hints are data, drawn by the CLI: never inside the message.
            assert!(!e.to_string().contains("hint:"), "{e}");
            match hint {
                Some(h) => assert!(e.hint().is_some_and(|got| got.contains(h)), "{e}: {:?}", e.hint()),
                None => assert_eq!(e.hint(), None, "{e}"),
            }
        }
        let e = PlanError::from(config::ConfigError(vec![Problem {
            file: BUNDLE_FILE.into(),
            key: "release.version".into(),
            message: "bad".into(),
            hint: Some("fix it".into()),
        }]));
        assert_eq!(e.exit_code(), exit::REJECTED);
        assert_eq!(e.hint(), None);
    }
}
