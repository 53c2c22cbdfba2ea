//! Build: each planned component x platform becomes an OCI image in one layout, and each
//! component an image index (multi-arch).
//!
//! ```text
//! plan ─► bases (pinned, verified) ─► jobs (component x platform, in parallel) ─► indexes
//! ```
//!
//! Backends sit behind [`Backend`]. The embedded default, [`Daemonless`], assembles the pinned
//! base plus deterministic layers from the component's recipe, with no daemon and no registry.
//! Images carry the six labels of spec §6.2 and `created` = SOURCE_DATE_EPOCH.

pub mod base;
pub mod buildkit;
pub mod debian;
pub mod dockerfile;
pub mod rootfs;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::stages::plan::source::{self, SourceError};
use crate::stages::plan::{Plan, PlannedComponent, PlannedImage, PlannedSource};
use base::{BaseError, BaseImage, Fetch};
use oci::cmd::{Cmd, CmdError};
use oci::layer::{LayerError, LayerWriter, Modes};
use oci::{self, Descriptor, Index, Layout, LayoutError, Manifest};
use schema::config::Config;
use schema::model::{Digest, Platform};
use schema::report::{Event, Reporter, Stage};

pub use schema::labels::{LABEL_CALENDAR, LABEL_CHANNEL, LABEL_CREATED, LABEL_PROVENANCE, LABEL_REVISION, LABEL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Base(#[from] BaseError),
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
    Dockerfile(Vec<crate::stages::build::dockerfile::Problem>),
    #[error(transparent)]
    BuildKit(#[from] crate::stages::build::buildkit::BuildKitError),
}

/// What one job made.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltImage {
    pub component: String,
    pub platform: Platform,
    pub manifest: Descriptor,
    pub config: Digest,
    pub layers: Vec<Digest>,
    pub base: Digest,
    /// The lock files of the component's source (and of what its build produced).
    pub lock_files: Vec<LockFile>,
    /// What the build knew, for the build-time SBOM (not repeated in images.json).
    #[serde(skip)]
    pub known: Known,
    /// How BuildKit built it (endpoint, Dockerfile, build arguments with secrets redacted);
    /// absent for the daemonless backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buildkit: Option<crate::stages::build::buildkit::Record>,
}

/// What a build knew about what it put in an image.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The base's packages (from its pins).
    pub base_packages: Vec<crate::stages::build::base::BasePackage>,
    /// The Debian suite of the base, when it is a Debian base.
    pub base_suite: Option<String>,
    /// Regular files the build's own layers added.
    pub files: Vec<oci::layer::FileRecord>,
    /// Number of layers that are the base's.
    pub base_layers: usize,
}

/// A lock file of a component: where it is, its sha256, where it lands in the image (when a
/// layer carries it) and the packages it pins.
#[derive(Debug, Clone, Serialize)]
pub struct LockFile {
    /// Path relative to the component's source (`$OUT/...` for build output).
    pub path: String,
    pub sha256: String,
    /// Absolute path in the image, when a layer carries it.
    pub image_path: Option<String>,
    #[serde(skip)]
    pub packages: Vec<crate::stages::evidence::sbom::locks::LockedPackage>,
}

/// What the build stage made: per component, its index and its images.
#[derive(Debug, Clone, Serialize)]
pub struct Images {
    pub components: BTreeMap<String, ComponentImages>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentImages {
    pub repository: String,
    pub index: Descriptor,
    pub images: Vec<BuiltImage>,
}

/// Inputs of one job, prepared by the build stage.
#[derive(Debug)]
pub struct Job<'a> {
    pub plan: &'a Plan,
    pub component: &'a PlannedComponent,
    pub image: &'a PlannedImage,
    pub base: &'a BaseImage,
    /// Debian suite of the base, for package URLs.
    pub base_suite: Option<String>,
    /// Repository holding the component's source and the commit to read.
    pub repo: &'a Path,
    pub commit: &'a str,
    pub subdir: &'a str,
}

/// A builder backend: turns one component x platform into an image in `layout`.
pub trait Backend: Sync {
    fn name(&self) -> &'static str;
    /// Checks and preparation for all jobs at once, before any job starts (bases are in
    /// `layout` by then): refusals that need no build happen here.
    fn prepare(&self, cfg: &Config, jobs: &[Job<'_>], layout: &Layout) -> Result<(), BuildError> {
        let _ = (cfg, layout);
        Daemonless.check(jobs)
    }
    fn build(&self, job: &Job<'_>, layout: &Layout) -> Result<BuiltImage, BuildError>;
}

/// Options of the build stage.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub fetch: Fetch,
    /// Worker threads; `None` for one per core.
    pub jobs: Option<usize>,
}

/// Builds every planned image into `layout` and writes its `index.json`.
pub fn build(
    plan: &Plan,
    cfg: &Config,
    layout: &Layout,
    opts: &BuildOptions,
    backend: &dyn Backend,
    reporter: &dyn Reporter,
) -> Result<Images, BuildError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.unwrap_or(0))
        .build()
        .map_err(|e| BuildError::Io { path: PathBuf::from("<thread pool>"), source: io::Error::other(e) })?;
    pool.install(|| build_in_pool(plan, cfg, layout, opts, backend, reporter))
}

fn build_in_pool(
    plan: &Plan,
    cfg: &Config,
    layout: &Layout,
    opts: &BuildOptions,
    backend: &dyn Backend,
    reporter: &dyn Reporter,
) -> Result<Images, BuildError> {
    // 1. Bases: each (base, platform) once, verified against its pin.
    let mut wanted: Vec<(String, Platform)> =
        plan.components.iter().flat_map(|c| c.images.iter().map(|i| (i.base.clone(), i.platform))).collect();
    wanted.sort();
    wanted.dedup();
    reporter.event(Event::StageStarted { stage: Stage::Bases, jobs: wanted.len() });
    let bases: Vec<BaseImage> = wanted
        .par_iter()
        .map(|(name, platform)| {
            let job = format!("{name} {platform}");
            reporter.event(Event::JobStarted { stage: Stage::Bases, job: job.clone() });
            let b = cfg.base(name).expect("planned bases exist");
            let img = base::materialize(b, *platform, &opts.fetch, layout)?;
            reporter.event(Event::JobFinished { stage: Stage::Bases, job, detail: img.digest.to_string() });
            Ok(img)
        })
        .collect::<Result<_, BuildError>>()?;
    reporter.event(Event::StageFinished { stage: Stage::Bases });
    let base_of = |name: &str, p: Platform| bases.iter().find(|b| b.name == name && b.platform == p).expect("fetched above");

    // 2. Git sources are fetched once, before the parallel jobs.
    let mut repos: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for c in &plan.components {
        if let PlannedSource::Git { url, commit, .. } = &c.source {
            let path = source::fetch_git(url, commit, &opts.fetch.cache)
                .map_err(|source| BuildError::Fetch { component: c.name.clone(), source })?;
            repos.insert(&c.name, path);
        }
    }

    // 3. Jobs: component x platform.
    let jobs: Vec<Job<'_>> = plan
        .components
        .iter()
        .flat_map(|c| {
            let (repo, commit, subdir) = match &c.source {
                PlannedSource::Path { path, commit } => (plan.source.workdir.as_path(), commit.as_str(), path.as_str()),
                PlannedSource::Git { commit, subdir, .. } => (repos[c.name.as_str()].as_path(), commit.as_str(), subdir.as_str()),
            };
            c.images.iter().map(move |image| Job {
                plan,
                component: c,
                image,
                base: base_of(&image.base, image.platform),
                base_suite: cfg.base(&image.base).and_then(|b| b.suite.clone()),
                repo,
                commit,
                subdir,
            })
        })
        .collect();
    backend.prepare(cfg, &jobs, layout)?;
    reporter.event(Event::StageStarted { stage: Stage::Build, jobs: jobs.len() });
    let built: Vec<BuiltImage> = jobs
        .par_iter()
        .map(|job| {
            let name = format!("{} {}", job.component.name, job.image.platform);
            reporter.event(Event::JobStarted { stage: Stage::Build, job: name.clone() });
            let img = backend.build(job, layout)?;
            reporter.event(Event::JobFinished { stage: Stage::Build, job: name, detail: img.manifest.digest.to_string() });
            Ok(img)
        })
        .collect::<Result<_, BuildError>>()?;
    reporter.event(Event::StageFinished { stage: Stage::Build });

    // 4. One index per component; the layout's index.json names every index and manifest.
    reporter.event(Event::StageStarted { stage: Stage::Index, jobs: plan.components.len() });
    let mut components = BTreeMap::new();
    let mut top = Vec::new();
    for c in &plan.components {
        let images: Vec<BuiltImage> = built.iter().filter(|b| b.component == c.name).cloned().collect();
        let index = Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_INDEX.to_owned()),
            manifests: images.iter().map(|i| i.manifest.clone()).collect(),
            annotations: BTreeMap::from([
                (LABEL_CREATED.to_owned(), plan.created.clone()),
                (LABEL_REVISION.to_owned(), plan.source.commit.clone()),
                (LABEL_VERSION.to_owned(), c.version.clone()),
            ]),
        };
        let mut desc = layout.put_json(oci::MEDIA_INDEX, &index).map_err(BuildError::Index)?;
        reporter.event(Event::JobFinished { stage: Stage::Index, job: c.name.clone(), detail: desc.digest.to_string() });
        let mut named = desc.clone();
        named.annotations.insert(oci::ANNOTATION_REF_NAME.to_owned(), c.name.clone());
        top.push(named);
        for (i, planned) in images.iter().zip(&c.images) {
            let mut m = i.manifest.clone();
            m.annotations.insert(oci::ANNOTATION_REF_NAME.to_owned(), planned.ref_name.clone());
            top.push(m);
        }
        desc.annotations.clear();
        components.insert(c.name.clone(), ComponentImages { repository: c.repository.clone(), index: desc, images });
    }
    layout
        .write_index(&Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_INDEX.to_owned()),
            manifests: top,
            annotations: BTreeMap::new(),
        })
        .map_err(BuildError::Index)?;
    reporter.event(Event::StageFinished { stage: Stage::Index });
    Ok(Images { components })
}

/// Finds the lock files of the component's source and of its build output, with where each
/// lands in the image, and parses those the SBOM reads. A malformed one is refused.
pub(crate) fn find_lock_files(c: &PlannedComponent, platform: Platform, src: &Path, out: &Path) -> Result<Vec<LockFile>, BuildError> {
    use crate::stages::evidence::sbom::locks;
    let mut found = Vec::new();
    for (root, prefix) in [(src, ""), (out, "$OUT/")] {
        for e in walkdir::WalkDir::new(root).sort_by_file_name().into_iter().filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy();
            let wanted = crate::stages::plan::source::LOCK_FILE_NAMES.contains(&name.as_ref()) || locks::READ.contains(&name.as_ref());
            if !e.file_type().is_file() || !wanted {
                continue;
            }
            let rel = e.path().strip_prefix(root).unwrap_or(e.path()).to_string_lossy().into_owned();
            let path = format!("{prefix}{rel}");
            let bytes = fs::read(e.path()).map_err(|source| BuildError::Io { path: e.path().to_owned(), source })?;
            let text = String::from_utf8_lossy(&bytes);
            let label = format!("{} {path}", c.name);
            let packages =
                locks::parse(&label, &text).map_err(|source| BuildError::LockFile { component: c.name.clone(), platform, source })?;
            // Where a recipe layer puts it, if one does.
            let image_path = c.recipe.layers.iter().find_map(|l| {
                let from = l.from.trim_end_matches('/');
                let inside = if from == "." || from == "$OUT" {
                    Some(path.trim_start_matches("$OUT/"))
                } else {
                    path.strip_prefix(&format!("{from}/"))
                };
                let keep = (from.starts_with("$OUT") == path.starts_with("$OUT/")) || from == ".";
                inside.filter(|_| keep).map(|r| format!("{}/{r}", l.to.trim_end_matches('/')))
            });
            found.push(LockFile { path, sha256: schema::model::Digest::of(&bytes).hex().to_owned(), image_path, packages });
        }
    }
    Ok(found)
}

/// The embedded default backend: no daemon, no registry.
#[derive(Debug, Default, Clone, Copy)]
pub struct Daemonless;

/// Variables a recipe's build command sees; nothing else of the caller's environment leaks
/// in (TZ and the locale are fixed so that a command that formats a date or sorts text does
/// not depend on who runs it).
fn build_env(job: &Job<'_>, out: &Path, home: &Path) -> Vec<(String, String)> {
    let plan = job.plan;
    vec![
        ("PATH".into(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())),
        ("HOME".into(), home.display().to_string()),
        ("TZ".into(), "UTC".into()),
        ("LC_ALL".into(), "C".into()),
        ("SOURCE_DATE_EPOCH".into(), plan.source_date_epoch.to_string()),
        ("OUT".into(), out.display().to_string()),
        ("STELLAOPS_COMPONENT".into(), job.component.name.clone()),
        ("STELLAOPS_VERSION".into(), job.component.version.clone()),
        ("STELLAOPS_PLATFORM".into(), job.image.platform.to_string()),
        ("STELLAOPS_ARCH".into(), job.image.platform.arch().into()),
        ("STELLAOPS_CHANNEL".into(), plan.channel.to_string()),
    ]
}

impl Daemonless {
    /// A component with only a Dockerfile cannot be built without BuildKit.
    pub fn check<'a, 'b: 'a>(&self, jobs: impl IntoIterator<Item = &'a Job<'b>>) -> Result<(), BuildError> {
        match jobs.into_iter().find(|j| j.component.recipe.layers.is_empty()) {
            Some(j) => Err(BuildError::NeedsBuildKit { component: j.component.name.clone() }),
            None => Ok(()),
        }
    }
}

impl Backend for Daemonless {
    fn name(&self) -> &'static str {
        "daemonless"
    }

    fn build(&self, job: &Job<'_>, layout: &Layout) -> Result<BuiltImage, BuildError> {
        let c = job.component;
        let platform = job.image.platform;
        let plan = job.plan;
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| BuildError::Io { path, source }
        };
        // 1. The source, from git objects, into a scratch directory of this job alone.
        let scratch = tempfile::Builder::new().prefix("stellaops-build-").tempdir().map_err(io_err(Path::new("$TMPDIR")))?;
        let src = scratch.path().join("src");
        let out = scratch.path().join("out");
        let home = scratch.path().join("home");
        source::materialize(job.repo, job.commit, job.subdir, &src).map_err(|source| BuildError::Source {
            component: c.name.clone(),
            platform,
            source,
        })?;
        fs::create_dir_all(&out).map_err(io_err(&out))?;
        fs::create_dir_all(&home).map_err(io_err(&home))?;

        // 2. The recipe's build command, if any.
        if let Some((program, args)) = c.recipe.build.split_first() {
            let what = format!("the build command of `{}` ({platform})", c.name);
            Cmd::new(program, what).args(args).current_dir(&src).env_clear().envs(build_env(job, &out, &home)).run().map_err(|e| {
                let (status, stderr) = match e {
                    CmdError::Start { source, .. } => (format!("could not start: {source}"), String::new()),
                    CmdError::Failed { status, tail, .. } => (format!("failed with {status}"), tail),
                    CmdError::TimedOut { seconds, tail, .. } => (format!("timed out after {seconds} s"), tail),
                };
                BuildError::Command { component: c.name.clone(), platform, command: c.recipe.build.join(" "), status, stderr }
            })?;
        }

        // 3. One deterministic layer per recipe entry.
        let layout_err = |source| BuildError::Layout { component: c.name.clone(), platform, source };
        let mut layers = job.base.manifest.layers.clone();
        let mut diff_ids = job.base.config.rootfs.diff_ids.clone();
        let mut history = job.base.config.history.clone();
        let lock_files = find_lock_files(c, platform, &src, &out)?;
        let mut files = Vec::new();
        for spec in &c.recipe.layers {
            let dir = match spec.from.strip_prefix("$OUT") {
                Some(rest) => out.join(rest.trim_start_matches('/')),
                None => src.join(&spec.from),
            };
            if !dir.is_dir() {
                return Err(BuildError::MissingLayerSource { component: c.name.clone(), platform, from: spec.from.clone() });
            }
            let (digest, size, info) = layout
                .put_blob_with(|w| {
                    let mut lw = LayerWriter::new(w, plan.source_date_epoch);
                    lw.record_files();
                    lw.add_tree(&dir, &spec.to, Modes::Normalize).map_err(io::Error::other)?;
                    lw.finish().map(|(_, info)| info)
                })
                .map_err(|e| match e {
                    LayoutError::Io { path, source } => match source.downcast::<LayerError>() {
                        Ok(le) => BuildError::Layer { component: c.name.clone(), platform, source: le },
                        Err(source) => layout_err(LayoutError::Io { path, source }),
                    },
                    other => layout_err(other),
                })?;
            files.extend(info.files.iter().cloned());
            layers.push(Descriptor::new(oci::MEDIA_LAYER_GZIP, digest, size));
            diff_ids.push(info.diff_id);
            history.push(oci::History {
                created: plan.created.clone(),
                created_by: format!("stellaops daemonless: layer {} -> {}", spec.from, spec.to),
                comment: None,
                empty_layer: false,
            });
        }

        assemble(job, layout, Made { layers, diff_ids, history, lock_files, files, buildkit: None })
    }
}

/// What a backend made, for [`assemble`].
pub(crate) struct Made {
    /// Every layer: the base's, then the component's.
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    pub history: Vec<oci::History>,
    pub lock_files: Vec<LockFile>,
    /// Regular files the component's layers added (for the build-time SBOM).
    pub files: Vec<oci::layer::FileRecord>,
    pub buildkit: Option<crate::stages::build::buildkit::Record>,
}

/// The config and manifest of one image whose layers are in `layout` (the base's, then the
/// component's): the base's config plus the recipe, the pipeline's variables and the six
/// labels; `created` = SOURCE_DATE_EPOCH. Shared by every backend, so that images differ only
/// in their layers.
pub(crate) fn assemble(job: &Job<'_>, layout: &Layout, made: Made) -> Result<BuiltImage, BuildError> {
    let Made { layers, diff_ids, history, lock_files, files, buildkit } = made;
    let c = job.component;
    let platform = job.image.platform;
    let plan = job.plan;
    let layout_err = |source| BuildError::Layout { component: c.name.clone(), platform, source };
    {
        // 4. Config: the base's, plus the recipe, the pipeline's variables and labels.
        let r = &c.recipe;
        let mut env: BTreeMap<String, String> =
            job.base.config.config.env.iter().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
        env.extend(r.env.clone());
        env.insert("STELLAOPS_COMPONENT".into(), c.name.clone());
        env.insert("STELLAOPS_VERSION".into(), c.version.clone());
        env.insert("STELLAOPS_RELEASE".into(), plan.version.to_string());
        env.insert("STELLAOPS_CHANNEL".into(), plan.channel.to_string());
        env.insert("STELLAOPS_CALENDAR".into(), plan.version.calendar.to_string());
        let labels = BTreeMap::from([
            (LABEL_VERSION.to_owned(), c.version.clone()),
            (LABEL_REVISION.to_owned(), plan.source.commit.clone()),
            (LABEL_CREATED.to_owned(), plan.created.clone()),
            (LABEL_CALENDAR.to_owned(), plan.version.calendar.to_string()),
            (LABEL_CHANNEL.to_owned(), plan.channel.to_string()),
            // The provenance is made after the image and names the image's digest, so the
            // image can only point at where its referrers live, not at one digest.
            (LABEL_PROVENANCE.to_owned(), format!("oci://{}/referrers?artifactType=application/vnd.in-toto+json", c.repository)),
        ]);
        let config = oci::ImageConfig {
            created: plan.created.clone(),
            architecture: platform.arch().to_owned(),
            os: platform.os().to_owned(),
            variant: oci::PlatformSpec::from(platform).variant,
            config: oci::RunConfig {
                user: String::new(),
                env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
                entrypoint: r.entrypoint.clone(),
                cmd: r.cmd.clone(),
                working_dir: r.workdir.clone().unwrap_or_default(),
                exposed_ports: r.ports.iter().map(|p| (format!("{p}/tcp"), serde_json::json!({}))).collect(),
                labels,
                healthcheck: (!r.healthcheck.is_empty()).then(|| oci::Healthcheck {
                    test: std::iter::once("CMD".to_owned()).chain(r.healthcheck.iter().cloned()).collect(),
                    interval: 5_000_000_000,
                    timeout: 3_000_000_000,
                    retries: 3,
                }),
            },
            rootfs: oci::RootFs { kind: "layers".to_owned(), diff_ids },
            history,
        };
        let config_desc = layout.put_json(oci::MEDIA_CONFIG, &config).map_err(layout_err)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
            config: config_desc.clone(),
            layers: layers.clone(),
            subject: None,
            annotations: BTreeMap::from([
                ("org.opencontainers.image.base.digest".to_owned(), job.base.digest.to_string()),
                ("org.opencontainers.image.base.name".to_owned(), format!("stellaops-base/{}", job.base.name)),
                (LABEL_CREATED.to_owned(), plan.created.clone()),
            ]),
        };
        let mut desc = layout.put_json(oci::MEDIA_MANIFEST, &manifest).map_err(layout_err)?;
        desc.platform = Some(platform.into());
        Ok(BuiltImage {
            component: c.name.clone(),
            platform,
            manifest: desc,
            config: config_desc.digest,
            layers: layers.into_iter().map(|l| l.digest).collect(),
            base: job.base.digest.clone(),
            lock_files,
            known: Known {
                base_packages: job.base.packages.clone(),
                base_suite: job.base_suite.clone(),
                files,
                base_layers: job.base.manifest.layers.len(),
            },
            buildkit,
        })
    }
}
