//! The embedded default backend: the pinned base plus one deterministic layer per recipe
//! entry, built from the component's source (read from git objects) and its recipe's build
//! command, with no daemon and no registry.

use std::fs;
use std::io;
use std::path::Path;

use oci::cmd::{Cmd, CmdError};
use oci::layer::{EntryData, LayerError, LayerWriter, Modes};
use oci::{Descriptor, Layout, LayoutError};

use super::backend::{assemble, find_lock_files, Backend, BuiltImage, Job, LockFile, Made};
use super::error::BuildError;
use super::golang;
use crate::stages::plan::source;

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
        ("SOURCE_DATE_EPOCH".into(), job.component.stamp.epoch.to_string()),
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
        super::backend::recipe_layers_only(jobs)
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
        let scratch = oci::dirs::Scratch::new("stellaops-build-").map_err(io_err(Path::new("$TMPDIR")))?;
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

        // 2. The recipe's Go program, if any, then its build command, if any.
        let go = match (&c.recipe.go, job.toolchain) {
            (Some(g), Some(tc)) => {
                let shown = if job.subdir.is_empty() { ".".to_owned() } else { job.subdir.trim_end_matches('/').to_owned() };
                Some(
                    golang::build(tc, g, &golang::Dirs { src: &src, shown: &shown, out: &out, home: &home }, platform, c.stamp.epoch)
                        .map_err(|source| BuildError::Go { component: c.name.clone(), platform: Some(platform), source })?,
                )
            }
            _ => None,
        };
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
        let mut lock_files = find_lock_files(c, platform, &src, &out)?;
        if let Some(g) = &go {
            // What the program links is in the image (inside the binary), not a build input:
            // go.sum's entry becomes the list of linked modules, at the program's path.
            let (path, sha256) = g.go_sum.clone().unwrap_or_default();
            // The vendor tree the pipeline made is not the source's: its files are no lock files.
            let vendor = format!("{}vendor/", g.module_dir);
            lock_files.retain(|l| l.path != path && !(g.vendor == "toolchain" && l.path.starts_with(&vendor)));
            lock_files.push(LockFile { path, sha256, image_path: golang::image_path(&c.recipe.layers, &g.output), packages: g.linked() });
        }
        let mut files = Vec::new();
        let stowaways = crate::fault::stowaways(&c.name);
        for (i, spec) in c.recipe.layers.iter().enumerate() {
            let last = i + 1 == c.recipe.layers.len();
            let dir = match spec.from.strip_prefix("$OUT") {
                Some(rest) => out.join(rest.trim_start_matches('/')),
                None => src.join(&spec.from),
            };
            if !dir.is_dir() {
                return Err(BuildError::MissingLayerSource { component: c.name.clone(), platform, from: spec.from.clone() });
            }
            let (digest, size, info) = layout
                .put_blob_with(|w| {
                    let mut lw = LayerWriter::with_gzip(w, c.stamp.epoch, plan.layer_gzip);
                    lw.record_files();
                    lw.add_tree(&dir, &spec.to, Modes::Normalize).map_err(io::Error::other)?;
                    for p in stowaways.iter().filter(|_| last) {
                        // A test fault (`crate::fault`): a file the build does not record.
                        let bytes =
                            if p.rsplit('/').next().is_some_and(|n| n.starts_with(".wh.")) { &b""[..] } else { crate::fault::STOWAWAY };
                        lw.add_entry(p, 0o644, (0, 0), EntryData::File { size: bytes.len() as u64, data: &mut &bytes[..] })?;
                    }
                    lw.finish().map(|(_, info)| info)
                })
                .map_err(|e| match e {
                    LayoutError::Io { path, source } => match source.downcast::<LayerError>() {
                        Ok(le) => BuildError::Layer { component: c.name.clone(), platform, source: le },
                        Err(source) => layout_err(LayoutError::Io { path, source }),
                    },
                    other => layout_err(other),
                })?;
            files.extend(info.files.iter().filter(|f| !stowaways.contains(&f.path)).cloned());
            layers.push(Descriptor::new(oci::MEDIA_LAYER_GZIP, digest, size));
            diff_ids.push(info.diff_id);
            history.push(oci::History {
                created: c.stamp.created.clone(),
                created_by: format!("stellaops daemonless: layer {} -> {}", spec.from, spec.to),
                comment: None,
                empty_layer: false,
            });
        }

        assemble(job, layout, Made { layers, diff_ids, history, lock_files, files, buildkit: None, dockerfile_config: None, go })
    }
}
