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

pub mod backend;
pub mod base;
pub mod buildkit;
pub mod cache;
pub mod daemonless;
pub mod debian;
pub mod dockerfile;
pub mod error;
pub mod golang;
pub mod rootfs;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use crate::stages::evidence::inventory::{self, BaseInventory};
use crate::stages::plan::source::{self};
use crate::stages::plan::{Plan, PlannedSource};
use base::{BaseImage, Fetch};
use oci::{self, Descriptor, Index, Layout};
use schema::config::Config;
use schema::model::Platform;
use schema::report::{Event, Reporter, Stage};

pub use schema::labels::{LABEL_CALENDAR, LABEL_CHANNEL, LABEL_CREATED, LABEL_PROVENANCE, LABEL_REVISION, LABEL_VERSION};

pub use backend::{Backend, BuiltImage, Job, Known, LockFile};
pub use daemonless::Daemonless;
pub use error::{BuildError, BuildKitError};

/// What the build stage made: per component, its index and its images.
#[derive(Debug, Clone, Serialize)]
pub struct Images {
    pub components: BTreeMap<String, ComponentImages>,
    /// Every base used, per platform: its pin, the media type of its manifest and what the
    /// release's (always OCI) images carry of each of its layers.
    pub bases: Vec<BaseRecord>,
    /// What the build cache did for each image (empty without the cache); not in images.json:
    /// a release made from the cache is the same release.
    #[serde(skip)]
    pub cache: Vec<cache::CacheOutcome>,
    /// What went wrong with the cache without failing the build (not in images.json).
    #[serde(skip)]
    pub cache_notes: Vec<String>,
}

/// A base as `images.json` records it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseRecord {
    pub name: String,
    pub platform: Platform,
    pub source: &'static str,
    /// The pin: the digest of the manifest as stored.
    pub digest: schema::model::Digest,
    /// The media type of that manifest (Docker v2 schema 2 bases are kept as they are).
    pub media_type: &'static str,
    pub layers: Vec<base::BaseLayer>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentImages {
    pub repository: String,
    pub index: Descriptor,
    pub images: Vec<BuiltImage>,
    /// The commit and time its images are stamped with, under `[release] image-epoch =
    /// "component"` (absent under the default rule: the release's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<crate::stages::plan::source::ComponentEpoch>,
}

/// Options of the build stage.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub fetch: Fetch,
    /// Worker threads; `None` for one per core.
    pub jobs: Option<usize>,
    /// The build cache, when this build may read and write it (a release without
    /// `--no-cache`, daemonless backend).
    pub cache: Option<cache::BuildCache>,
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
    //    With the build bases of Dockerfile recipes (`recipe.build-bases`): BuildKit pulls
    //    them from the mirror, pushed from here.
    let mut wanted: Vec<(String, Platform)> = plan
        .components
        .iter()
        .flat_map(|c| {
            c.images.iter().flat_map(move |i| {
                std::iter::once((i.base.clone(), i.platform)).chain(c.recipe.build_bases.iter().map(move |b| (b.clone(), i.platform)))
            })
        })
        .collect();
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
    // 1a. What each image base holds on its own (scanned once per digest, then cached): the
    //     build-time SBOM and the drift gate need it.
    let image_bases: Vec<&BaseImage> = bases
        .iter()
        .filter(|b| plan.components.iter().any(|c| c.images.iter().any(|i| i.base == b.name && i.platform == b.platform)))
        .map(|b| (&b.digest, b))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    let inventories: BTreeMap<schema::model::Digest, std::sync::Arc<BaseInventory>> =
        image_bases
            .par_iter()
            .map(|b| {
                let inv = inventory::of_base(layout, &b.digest, &b.manifest, &opts.fetch.cache)
                    .map_err(|source| BuildError::Inventory { base: b.name.clone(), platform: b.platform, source })?;
                Ok((b.digest.clone(), std::sync::Arc::new(inv)))
            })
            .collect::<Result<_, BuildError>>()?;
    reporter.event(Event::StageFinished { stage: Stage::Bases });
    let base_of = |name: &str, p: Platform| bases.iter().find(|b| b.name == name && b.platform == p).expect("fetched above");

    // 1b. Toolchains of compiled components (`recipe.go`): fetched and unpacked once.
    let mut toolchains: BTreeMap<String, golang::GoToolchain> = BTreeMap::new();
    for c in &plan.components {
        if let Some(g) = &c.recipe.go {
            if !toolchains.contains_key(&g.toolchain) {
                let t = cfg.toolchain(&g.toolchain).expect("checked when the configuration was loaded");
                let job = format!("toolchain {}", t.name);
                reporter.event(Event::JobStarted { stage: Stage::Bases, job: job.clone() });
                let tc = golang::prepare(t, &opts.fetch).map_err(|source| BuildError::Go {
                    component: c.name.clone(),
                    platform: None,
                    source,
                })?;
                reporter.event(Event::JobFinished { stage: Stage::Bases, job, detail: tc.version.clone() });
                toolchains.insert(g.toolchain.clone(), tc);
            }
        }
    }

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
    let toolchains = &toolchains;
    let inventories = &inventories;
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
                base_inventory: inventories[&base_of(&image.base, image.platform).digest].clone(),
                build_bases: c.recipe.build_bases.iter().map(|b| base_of(b, image.platform)).collect(),
                base_suite: cfg.base(&image.base).and_then(|b| b.suite.clone()),
                toolchain: c.recipe.go.as_ref().and_then(|g| toolchains.get(&g.toolchain)),
                repo,
                commit,
                subdir,
            })
        })
        .collect();
    backend.prepare(cfg, &jobs, layout)?;
    reporter.event(Event::StageStarted { stage: Stage::Build, jobs: jobs.len() });
    let made: Vec<(BuiltImage, Option<cache::CacheOutcome>)> = jobs
        .par_iter()
        // One job per split: a free thread takes the next job (a job from the cache takes a
        // fraction of one built, so halves of the list would leave one thread with the work).
        .with_max_len(1)
        .map(|job| {
            let name = format!("{} {}", job.component.name, job.image.platform);
            reporter.event(Event::JobStarted { stage: Stage::Build, job: name.clone() });
            let (img, outcome) = match &opts.cache {
                Some(c) => build_cached(c, cfg, job, layout, backend, reporter)?,
                None => (backend.build(job, layout)?, None),
            };
            let detail = match &outcome {
                Some(o) if o.status == "cached" => format!("{} (cached)", img.manifest.digest),
                Some(o) if !o.changed.is_empty() => format!("{} (built: {} changed)", img.manifest.digest, o.changed.join(", ")),
                _ => img.manifest.digest.to_string(),
            };
            reporter.event(Event::JobFinished { stage: Stage::Build, job: name, detail });
            Ok((img, outcome))
        })
        .collect::<Result<_, BuildError>>()?;
    let (built, outcomes): (Vec<BuiltImage>, Vec<Option<cache::CacheOutcome>>) = made.into_iter().unzip();
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
                (LABEL_CREATED.to_owned(), c.stamp.created.clone()),
                (LABEL_REVISION.to_owned(), c.stamp.revision.clone()),
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
        components
            .insert(c.name.clone(), ComponentImages { repository: c.repository.clone(), index: desc, images, epoch: c.epoch.clone() });
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
    let bases = bases
        .iter()
        .map(|b| BaseRecord {
            name: b.name.clone(),
            platform: b.platform,
            source: schema::config::source_name(cfg.base(&b.name).expect("planned bases exist").source),
            digest: b.digest.clone(),
            media_type: b.media_type,
            layers: b.layers.clone(),
        })
        .collect();
    Ok(Images { components, bases, cache: outcomes.into_iter().flatten().collect(), cache_notes: Vec::new() })
}

/// One job through the build cache: its entry when the key matches and every blob checks,
/// else built by `backend` and stored. The cache never fails a build: what goes wrong with it
/// is a note and a build.
fn build_cached(
    cache: &cache::BuildCache,
    cfg: &Config,
    job: &Job<'_>,
    layout: &Layout,
    backend: &dyn Backend,
    reporter: &dyn Reporter,
) -> Result<(BuiltImage, Option<cache::CacheOutcome>), BuildError> {
    let outcome = |status, note| cache::CacheOutcome {
        component: job.component.name.clone(),
        platform: job.image.platform,
        status,
        changed: Vec::new(),
        note,
    };
    let parts = match cache::parts(job, cfg, backend.name()) {
        Ok(p) => p,
        Err(why) => {
            let note = format!("build cache not used for `{}` ({}): {why}", job.component.name, job.image.platform);
            reporter.event(Event::Note { message: note.clone() });
            return Ok((backend.build(job, layout)?, Some(outcome("built", Some(note)))));
        }
    };
    match cache.load(job, &parts, layout) {
        Ok(img) => Ok((img, Some(outcome("cached", None)))),
        Err(mut miss) => {
            if let Some(n) = &miss.note {
                reporter.event(Event::Note { message: n.clone() });
            }
            let img = backend.build(job, layout)?;
            if let Err(why) = cache.store(job, &parts, &img, layout) {
                let note = format!("build cache: could not store `{}` ({}): {why}", job.component.name, job.image.platform);
                reporter.event(Event::Note { message: note.clone() });
                miss.note.get_or_insert(note);
            }
            Ok((img, Some(miss)))
        }
    }
}
