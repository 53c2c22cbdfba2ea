//! What every build backend shares: the [`Backend`] trait, a [`Job`] (one component x
//! platform), what a job made ([`BuiltImage`]), the lock files it found, and `assemble`, the
//! config and manifest every backend ends with (so images differ only in their layers).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Serialize;

use oci::{self, Descriptor, Layout, Manifest};
use schema::config::Config;
use schema::files::Recipe;
use schema::labels::{LABEL_CALENDAR, LABEL_CHANNEL, LABEL_CREATED, LABEL_PROVENANCE, LABEL_REVISION, LABEL_VERSION};
use schema::model::{Digest, Platform};

use super::base::{BaseImage, BasePackage};
use super::error::BuildError;
use crate::stages::plan::{Plan, PlannedComponent, PlannedImage};

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
    pub buildkit: Option<Record>,
    /// How `recipe.go` was compiled (toolchain, modules, flags).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<super::golang::GoRecord>,
}

/// What a build knew about what it put in an image.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The base's packages (from its pins).
    pub base_packages: Vec<BasePackage>,
    /// The Debian suite of the base, when it is a Debian base.
    pub base_suite: Option<String>,
    /// Regular files the build's own layers added.
    pub files: Vec<oci::layer::FileRecord>,
    /// Number of layers that are the base's.
    pub base_layers: usize,
    /// What the base holds on its own (made once per base digest, cached): the build-time
    /// SBOM lists it as the base's contribution and the drift gate subtracts it from the scan.
    /// Every backend sets it; the evidence stage refuses an image without it.
    pub base_inventory: Option<std::sync::Arc<crate::stages::evidence::inventory::BaseInventory>>,
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

/// Inputs of one job, prepared by the build stage.
#[derive(Debug)]
pub struct Job<'a> {
    pub plan: &'a Plan,
    pub component: &'a PlannedComponent,
    pub image: &'a PlannedImage,
    pub base: &'a BaseImage,
    /// What `base` holds on its own (see [`Known::base_inventory`]).
    pub base_inventory: std::sync::Arc<crate::stages::evidence::inventory::BaseInventory>,
    /// The recipe's `build-bases` for this platform, in the recipe's order (BuildKit only).
    pub build_bases: Vec<&'a BaseImage>,
    /// Debian suite of the base, for package URLs.
    pub base_suite: Option<String>,
    /// The toolchain of `recipe.go`, unpacked.
    pub toolchain: Option<&'a super::golang::GoToolchain>,
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
        recipe_layers_only(jobs)
    }
    fn build(&self, job: &Job<'_>, layout: &Layout) -> Result<BuiltImage, BuildError>;
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
/// What a backend made, for [`assemble`].
pub(crate) struct Made {
    /// Every layer: the base's, then the component's.
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    pub history: Vec<oci::History>,
    pub lock_files: Vec<LockFile>,
    /// Regular files the component's layers added (for the build-time SBOM).
    pub files: Vec<oci::layer::FileRecord>,
    pub buildkit: Option<Record>,
    /// The image config the engine made of the Dockerfile (BuildKit), merged with the recipe.
    pub dockerfile_config: Option<DockerfileConfig>,
    /// How `recipe.go` was compiled (daemonless).
    pub go: Option<super::golang::GoRecord>,
}

/// The run config `docker build` gives a Dockerfile (the base's config as the Dockerfile
/// changed it, by BuildKit's own rules), and the Dockerfile as the bundle names it.
pub(crate) struct DockerfileConfig {
    pub file: String,
    pub config: oci::RunConfig,
}

/// `recipe.ports`, as exposed TCP ports.
fn recipe_ports(r: &Recipe) -> BTreeMap<String, serde_json::Value> {
    r.ports.iter().map(|p| (format!("{p}/tcp"), serde_json::json!({}))).collect()
}

/// `recipe.healthcheck`, as Docker's `HEALTHCHECK CMD` with the pipeline's timings.
fn recipe_healthcheck(r: &Recipe) -> Option<oci::Healthcheck> {
    (!r.healthcheck.is_empty()).then(|| oci::Healthcheck {
        test: std::iter::once("CMD".to_owned()).chain(r.healthcheck.iter().cloned()).collect(),
        interval: 5_000_000_000,
        timeout: 3_000_000_000,
        retries: 3,
        ..Default::default()
    })
}

/// The config of a Dockerfile image: `docker` (what the engine made of `base` and the
/// Dockerfile) with the recipe's fields on it, then the pipeline's variables and labels.
///
/// A field counts as the Dockerfile's when it differs from the base's and is not empty; a
/// recipe field the Dockerfile also sets, to another value, is a problem (every one is
/// returned). Ports add up. A recipe `entrypoint` clears a `Cmd` inherited from the base, as
/// `ENTRYPOINT` does. Env keeps the engine's order; new variables are appended, sorted.
pub(crate) fn merge_dockerfile_config(
    base: &oci::RunConfig,
    docker: oci::RunConfig,
    r: &Recipe,
    pipeline_env: &BTreeMap<String, String>,
    pipeline_labels: BTreeMap<String, String>,
) -> Result<oci::RunConfig, Vec<String>> {
    let mut out = docker;
    let mut problems = Vec::new();
    let mut conflict = |instruction: &str, key: &str, dockerfile: String, recipe: String| {
        problems.push(format!("`{instruction}` is {dockerfile} in the Dockerfile but `{key}` is {recipe} in the recipe"));
    };
    let entrypoint_by_dockerfile = !out.entrypoint.is_empty() && out.entrypoint != base.entrypoint;
    let cmd_by_dockerfile = !out.cmd.is_empty() && out.cmd != base.cmd;
    if !r.entrypoint.is_empty() {
        if entrypoint_by_dockerfile && out.entrypoint != r.entrypoint {
            conflict("ENTRYPOINT", "recipe.entrypoint", shown(&out.entrypoint), shown(&r.entrypoint));
        } else {
            if !entrypoint_by_dockerfile && !cmd_by_dockerfile {
                out.cmd.clear();
            }
            out.entrypoint = r.entrypoint.clone();
        }
    }
    if !r.cmd.is_empty() {
        if cmd_by_dockerfile && out.cmd != r.cmd {
            conflict("CMD", "recipe.cmd", shown(&out.cmd), shown(&r.cmd));
        } else {
            out.cmd = r.cmd.clone();
        }
    }
    if let Some(w) = &r.workdir {
        if !out.working_dir.is_empty() && out.working_dir != base.working_dir && &out.working_dir != w {
            conflict("WORKDIR", "recipe.workdir", shown(&out.working_dir), shown(w));
        } else {
            out.working_dir = w.clone();
        }
    }
    if let Some(h) = recipe_healthcheck(r) {
        match &out.healthcheck {
            Some(d) if out.healthcheck != base.healthcheck && *d != h => conflict("HEALTHCHECK", "recipe.healthcheck", shown(d), shown(&h)),
            _ => out.healthcheck = Some(h),
        }
    }
    out.exposed_ports.extend(recipe_ports(r));
    let var = |list: &[String], k: &str| list.iter().find_map(|kv| kv.split_once('=').filter(|(n, _)| *n == k).map(|(_, v)| v.to_owned()));
    for (k, v) in &r.env {
        let here = var(&out.env, k);
        if let Some(d) = here.as_ref().filter(|d| Some(*d) != var(&base.env, k).as_ref() && *d != v) {
            conflict(&format!("ENV {k}"), &format!("recipe.env.{k}"), shown(d), shown(v));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut overlay: BTreeMap<String, String> = r.env.clone();
    overlay.extend(pipeline_env.clone());
    for kv in &mut out.env {
        if let Some(v) = kv.split_once('=').and_then(|(k, _)| overlay.remove(k).map(|v| (k.to_owned(), v))) {
            *kv = format!("{}={}", v.0, v.1);
        }
    }
    out.env.extend(overlay.into_iter().map(|(k, v)| format!("{k}={v}")));
    out.labels.extend(pipeline_labels);
    if out.entrypoint.is_empty() && out.cmd.is_empty() {
        return Err(vec![
            "neither the Dockerfile (`ENTRYPOINT`, `CMD`), its base nor `recipe.entrypoint` says what the image starts".to_owned()
        ]);
    }
    Ok(out)
}

/// A value as a problem shows it: JSON, so lists and strings read as a Dockerfile writes them.
fn shown<T: Serialize + ?Sized>(v: &T) -> String {
    format!("`{}`", serde_json::to_string(v).unwrap_or_default())
}

/// The config and manifest of one image whose layers are in `layout` (the base's, then the
/// component's): the base's config plus the recipe, the pipeline's variables and the six
/// labels; `created` = SOURCE_DATE_EPOCH. Shared by every backend, so that images differ only
/// in their layers.
pub(crate) fn assemble(job: &Job<'_>, layout: &Layout, made: Made) -> Result<BuiltImage, BuildError> {
    let Made { layers, diff_ids, history, lock_files, files, buildkit, dockerfile_config, go } = made;
    let c = job.component;
    let platform = job.image.platform;
    let plan = job.plan;
    let layout_err = |source| BuildError::Layout { component: c.name.clone(), platform, source };
    {
        // 4. Config: the base's (or, for a Dockerfile, what the engine made of the base and
        //    the Dockerfile), plus the recipe, the pipeline's variables and labels.
        let r = &c.recipe;
        let pipeline_env = BTreeMap::from([
            ("STELLAOPS_COMPONENT".to_owned(), c.name.clone()),
            ("STELLAOPS_VERSION".to_owned(), c.version.clone()),
            ("STELLAOPS_RELEASE".to_owned(), plan.version.to_string()),
            ("STELLAOPS_CHANNEL".to_owned(), plan.channel.to_string()),
            ("STELLAOPS_CALENDAR".to_owned(), plan.version.calendar.to_string()),
        ]);
        let labels = BTreeMap::from([
            (LABEL_VERSION.to_owned(), c.version.clone()),
            (LABEL_REVISION.to_owned(), c.stamp.revision.clone()),
            (LABEL_CREATED.to_owned(), c.stamp.created.clone()),
            (LABEL_CALENDAR.to_owned(), plan.version.calendar.to_string()),
            (LABEL_CHANNEL.to_owned(), plan.channel.to_string()),
            // The provenance is made after the image and names the image's digest, so the
            // image can only point at where its referrers live, not at one digest.
            (LABEL_PROVENANCE.to_owned(), format!("oci://{}/referrers?artifactType=application/vnd.in-toto+json", c.repository)),
        ]);
        let run = match dockerfile_config {
            Some(d) => merge_dockerfile_config(&job.base.config.config, d.config, r, &pipeline_env, labels).map_err(|problems| {
                BuildError::DockerfileConfig { component: c.name.clone(), platform, dockerfile: d.file.clone(), problems }
            })?,
            None => {
                let mut env: BTreeMap<String, String> = job
                    .base
                    .config
                    .config
                    .env
                    .iter()
                    .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                    .collect();
                env.extend(r.env.clone());
                env.extend(pipeline_env);
                oci::RunConfig {
                    env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    entrypoint: r.entrypoint.clone(),
                    cmd: r.cmd.clone(),
                    working_dir: r.workdir.clone().unwrap_or_default(),
                    exposed_ports: recipe_ports(r),
                    labels,
                    healthcheck: recipe_healthcheck(r),
                    ..Default::default()
                }
            }
        };
        let config = oci::ImageConfig {
            created: c.stamp.created.clone(),
            architecture: platform.arch().to_owned(),
            os: platform.os().to_owned(),
            variant: oci::PlatformSpec::from(platform).variant,
            config: run,
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
                (LABEL_CREATED.to_owned(), c.stamp.created.clone()),
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
                base_inventory: Some(job.base_inventory.clone()),
            },
            buildkit,
            go,
        })
    }
}

/// A component with only a Dockerfile cannot be built without BuildKit.
pub fn recipe_layers_only<'a, 'b: 'a>(jobs: impl IntoIterator<Item = &'a Job<'b>>) -> Result<(), BuildError> {
    match jobs.into_iter().find(|j| j.component.recipe.layers.is_empty()) {
        Some(j) => Err(BuildError::NeedsBuildKit { component: j.component.name.clone() }),
        None => Ok(()),
    }
}

/// How BuildKit built an image, for `images.json` and the evidence stage.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub endpoint: String,
    pub dockerfile: String,
    pub exporter: &'static str,
    pub network: &'static str,
    /// Every build argument passed; secrets as `<redacted>`.
    pub build_args: BTreeMap<String, String>,
    /// Paths the component layer adds or changes, and whiteouts, relative to the base.
    pub changed_paths: usize,
    pub removed_paths: usize,
    /// Every base a stage of the Dockerfile may stand on, by digest for the platform: the
    /// component's own (`STELLAOPS_BASE`) first, then the recipe's `build-bases`. Left out
    /// when there is no build base (the component's base is the image's `base`), so records
    /// of single-base Dockerfiles keep their bytes.
    #[serde(skip_serializing_if = "no_build_base")]
    pub bases: Vec<StageBase>,
    /// The shared cache the builder was allowed to trust (`--build-cache`); absent without
    /// it, so records of uncached builds keep their bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_cache: Option<BuildCache>,
}

/// BuildKit's inline cache in a registry, as one build used it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildCache {
    /// The reference imported from (`cachefrom`) and pushed to.
    pub reference: String,
    /// The steps the engine did not run, taking their result from a cache (the registry's,
    /// or the engine's own from an earlier build).
    pub cached_steps: Vec<String>,
    /// `reference@digest`: the cache image this build pushed.
    pub exported: String,
}

/// A base a Dockerfile stage stands on.
#[derive(Debug, Clone, Serialize)]
pub struct StageBase {
    pub name: String,
    pub digest: Digest,
    /// `component` (the image's base) or `build` (a build stage's only).
    pub role: &'static str,
    /// The build argument that names it (`STELLAOPS_BASE`, `STELLAOPS_BASE_<NAME>`).
    pub build_arg: String,
}

fn no_build_base(bases: &[StageBase]) -> bool {
    bases.iter().all(|b| b.role != "build")
}

impl Record {
    /// The build-only bases (`recipe.build-bases`).
    pub fn build_bases(&self) -> impl Iterator<Item = &StageBase> {
        self.bases.iter().filter(|b| b.role == "build")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(toml_text: &str) -> Recipe {
        toml::from_str(&format!("dockerfile = \"Dockerfile\"\n{toml_text}")).unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn base() -> oci::RunConfig {
        oci::RunConfig { env: strings(&["PATH=/bin"]), cmd: strings(&["sh"]), ..Default::default() }
    }

    /// What the engine makes of `base` and a Dockerfile with every config instruction.
    fn docker() -> oci::RunConfig {
        oci::RunConfig {
            user: "10001:10001".into(),
            env: strings(&["PATH=/bin", "Z=1", "A=2"]),
            entrypoint: strings(&["/x"]),
            cmd: strings(&["serve"]),
            working_dir: "/srv".into(),
            exposed_ports: BTreeMap::from([("8080/tcp".to_owned(), serde_json::json!({}))]),
            labels: BTreeMap::from([("team".to_owned(), "r".to_owned())]),
            healthcheck: Some(oci::Healthcheck { test: strings(&["CMD", "/x", "health"]), interval: 1, ..Default::default() }),
            stop_signal: "SIGTERM".into(),
            volumes: BTreeMap::from([("/data".to_owned(), serde_json::json!({}))]),
            shell: strings(&["/bin/sh", "-c"]),
        }
    }

    fn pipeline() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        (
            BTreeMap::from([("STELLAOPS_COMPONENT".to_owned(), "c".to_owned())]),
            BTreeMap::from([(LABEL_VERSION.to_owned(), "1.0.0".to_owned()), ("team".to_owned(), "pipeline".to_owned())]),
        )
    }

    #[test]
    fn the_dockerfile_config_is_kept_and_the_pipeline_adds_its_variables_and_labels_last() {
        let (env, labels) = pipeline();
        let got = merge_dockerfile_config(&base(), docker(), &recipe(""), &env, labels).unwrap();
        let mut want = docker();
        want.env.push("STELLAOPS_COMPONENT=c".into());
        want.labels = BTreeMap::from([(LABEL_VERSION.to_owned(), "1.0.0".to_owned()), ("team".to_owned(), "pipeline".to_owned())]);
        assert_eq!(got, want);
    }

    #[test]
    fn recipe_keys_fill_in_agree_or_are_refused_naming_the_recipe_key() {
        let (env, labels) = pipeline();
        // Agreeing values, new variables (appended, sorted), a variable the base set, ports added.
        let r = recipe("entrypoint = [\"/x\"]\nworkdir = \"/srv\"\nenv = { A = \"2\", PATH = \"/usr/bin\", B = \"3\" }\nports = [9090]\n");
        let got = merge_dockerfile_config(&base(), docker(), &r, &env, labels.clone()).unwrap();
        assert_eq!(got.env, strings(&["PATH=/usr/bin", "Z=1", "A=2", "B=3", "STELLAOPS_COMPONENT=c"]));
        assert_eq!(got.exposed_ports.keys().collect::<Vec<_>>(), ["8080/tcp", "9090/tcp"]);
        assert_eq!(got.cmd, strings(&["serve"]));
        // Every disagreement at once.
        let r = recipe("entrypoint = [\"/y\"]\ncmd = [\"run\"]\nworkdir = \"/app\"\nenv = { A = \"9\" }\nhealthcheck = [\"/y\", \"ok\"]\n");
        let p = merge_dockerfile_config(&base(), docker(), &r, &env, labels.clone()).unwrap_err();
        assert_eq!(
            p,
            [
                "`ENTRYPOINT` is `[\"/x\"]` in the Dockerfile but `recipe.entrypoint` is `[\"/y\"]` in the recipe",
                "`CMD` is `[\"serve\"]` in the Dockerfile but `recipe.cmd` is `[\"run\"]` in the recipe",
                "`WORKDIR` is `\"/srv\"` in the Dockerfile but `recipe.workdir` is `\"/app\"` in the recipe",
                "`HEALTHCHECK` is `{\"Test\":[\"CMD\",\"/x\",\"health\"],\"Interval\":1}` in the Dockerfile but `recipe.healthcheck` is `{\"Test\":[\"CMD\",\"/y\",\"ok\"],\"Interval\":5000000000,\"Timeout\":3000000000,\"Retries\":3}` in the recipe",
                "`ENV A` is `\"2\"` in the Dockerfile but `recipe.env.A` is `\"9\"` in the recipe",
            ]
        );
    }

    #[test]
    fn what_the_base_set_is_the_recipes_to_change_and_a_recipe_entrypoint_clears_the_base_cmd() {
        let (env, labels) = pipeline();
        // The Dockerfile changed nothing: the base's config as the engine passed it on.
        let mut plain = base();
        plain.working_dir = String::new();
        let got = merge_dockerfile_config(&base(), plain.clone(), &recipe("entrypoint = [\"/y\"]\n"), &env, labels.clone()).unwrap();
        assert_eq!((got.entrypoint, got.cmd), (strings(&["/y"]), vec![]));
        let got = merge_dockerfile_config(&base(), plain.clone(), &recipe("cmd = [\"run\"]\n"), &env, labels.clone()).unwrap();
        assert_eq!((got.entrypoint, got.cmd), (vec![], strings(&["run"])));
        // Nothing to start at all.
        plain.cmd.clear();
        let p = merge_dockerfile_config(&oci::RunConfig::default(), plain, &recipe(""), &env, labels).unwrap_err();
        assert!(p[0].contains("says what the image starts"), "{p:?}");
    }
}
