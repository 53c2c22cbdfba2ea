//! `cargo xtask publish`, `release --publish`, `verify --registry`, `doctor registries`: flags
//! to options, the library call, the rendering.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use oci::distribution::{RegistryTarget, RetryPolicy};
use oci::push::{PushOptions, ReferrersMode};
use pipeline::stages::publish::{self, Destination, ReleaseOptions, ReleaseReport, Status};

use crate::progress::{self, Mode, Progress};
use crate::Failure;

/// Where and how to publish.
#[derive(Debug, Args, Clone)]
pub struct PublishFlags {
    /// Primary registry `HOST[:PORT]/NAMESPACE` (default: `[release] registry` of
    /// release-trains/components.toml, with its `[[release.mirror]]`s). When given, the
    /// configuration is not read: mirrors come from `--mirror` only.
    #[arg(long, value_name = "HOST/NAMESPACE", env = "STELLAOPS_REGISTRY")]
    pub registry: Option<String>,
    /// A mirror `HOST[:PORT]/NAMESPACE` (repeat for several), pushed after the primary.
    #[arg(long = "mirror", value_name = "HOST/NAMESPACE")]
    pub mirrors: Vec<String>,
    /// The `--mirror`s are required: if one fails, no tag is written anywhere.
    #[arg(long)]
    pub mirrors_required: bool,
    /// Continue an interrupted publish from its journal (<release>/publish/*.journal):
    /// finished steps are not redone, finished uploads not sent again.
    #[arg(long)]
    pub resume: bool,
    /// Blobs larger than this many bytes are uploaded in chunks of this size.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub chunk_size: u64,
    /// Tries per request on 5xx, 429, timeouts and dropped connections (backoff doubles from
    /// --retry-base-ms).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub retries: u32,
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub retry_base_ms: u64,
    /// Docker config file with credentials (default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json); credential helpers it names are used.
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// The channel store (default: target/channels under the repository). When it has a trust
    /// repository (`trust init`), the release gets its version tag only; the trust repository
    /// is pushed to `<NAMESPACE>/trust` and then each channel tag moves to what its signed
    /// pointer names (as `trust publish`).
    #[arg(long, value_name = "DIR", env = "STELLAOPS_CHANNELS")]
    pub channels: Option<PathBuf>,
}

impl PublishFlags {
    pub fn push_options(&self) -> PushOptions {
        PushOptions {
            chunk_size: self.chunk_size.max(1),
            retry: RetryPolicy {
                attempts: self.retries.max(1),
                base: Duration::from_millis(self.retry_base_ms),
                max: Duration::from_secs(20),
            },
            resume: self.resume,
            docker_config: self.docker_config.clone(),
            ..PushOptions::default()
        }
    }

    pub fn destinations(&self, root: &Path) -> Result<Vec<Destination>, Failure> {
        let usage = |e: String| Failure { code: schema::exit::Code::Usage, message: e };
        let mut out = match &self.registry {
            Some(r) => vec![Destination {
                target: r.parse().map_err(|e: String| usage(format!("--registry: {e}")))?,
                mirror: false,
                required: true,
            }],
            None => publish::destinations(root).map_err(pipeline::Error::from)?,
        };
        for m in &self.mirrors {
            let target: RegistryTarget = m.parse().map_err(|e: String| usage(format!("--mirror: {e}")))?;
            out.push(Destination { target, mirror: true, required: self.mirrors_required });
        }
        Ok(out)
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The release directory (target/releases/<version>-<channel>).
    pub dir: PathBuf,
    #[command(flatten)]
    pub flags: PublishFlags,
    /// Repository root, for release-trains/components.toml (default: the current directory's).
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DoctorCommand {
    /// Each configured registry: reachable, auth scheme, credentials found, referrers API or
    /// tag-schema fallback, answer to a cross-repository mount request.
    Registries {
        #[command(flatten)]
        flags: PublishFlags,
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Publishes `dir` and renders the report.
pub fn publish_dir(dir: &Path, flags: &PublishFlags, root: &Path, mode: Mode) -> Result<ReleaseReport, Failure> {
    let store = pipeline::channels::Store::new(&flags.channels.clone().unwrap_or_else(|| root.join("target/channels")));
    let trust = pipeline::tuf::Repo::of(store.root()).exists();
    let opts = ReleaseOptions { destinations: flags.destinations(root)?, push: flags.push_options(), channels: Some(store.clone()) };
    // The store's pointers are read to move channel tags: no move meanwhile.
    let _store_lock = if trust {
        Some(crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?)
    } else {
        None
    };
    // One publish at a time per destination (in a stable order: no two runs wait on each other).
    let mut keys: Vec<String> = opts.destinations.iter().map(|d| d.target.to_string()).collect();
    keys.sort();
    keys.dedup();
    let _locks =
        keys.iter().map(|k| crate::hold(&oci::statelock::for_remote(k), &format!("publishing to `{k}`"))).collect::<Result<Vec<_>, _>>()?;
    let reporter = Progress::new(mode);
    let report = publish::publish_release(dir, &opts, &reporter);
    reporter.finish();
    let report = report?;
    for d in report.destinations.iter().filter(|d| matches!(d.status, Status::Failed)) {
        progress::eprint(&format!(
            "warning: mirror `{}` did not get the release: {}\n  run `cargo xtask publish {} --resume` to retry it",
            d.target,
            d.error.as_deref().unwrap_or_default(),
            dir.display()
        ));
    }
    Ok(report)
}

pub fn render(r: &ReleaseReport) -> String {
    let mut s = format!("release {} ({}) tags {}\n", r.version, r.channel, r.tags.join(", "));
    for d in &r.destinations {
        let role = if d.mirror {
            if d.required {
                "mirror (required)"
            } else {
                "mirror"
            }
        } else {
            "primary"
        };
        let status = match d.status {
            Status::Published => "published",
            Status::AlreadyPublished => "already published (journal)",
            Status::Failed => "FAILED",
        };
        s += &format!("  {} [{role}]: {status}\n", d.target);
        if let Some(p) = &d.push {
            s += &format!(
                "    {} blobs ({} uploaded, {} mounted, {} present), {} manifests put, {} referrers ({}), {} retries, {} steps resumed\n",
                p.blobs,
                p.blobs_uploaded,
                p.blobs_mounted,
                p.blobs_present,
                p.manifests_put,
                p.referrers,
                match p.referrers_mode {
                    Some(ReferrersMode::Api) => "referrers API",
                    _ => "fallback tags",
                },
                p.retries,
                p.resumed_steps
            );
        }
    }
    s.trim_end().to_owned()
}

pub fn run_publish(args: PublishArgs, root: &Path, mode: Mode) -> Result<(), Failure> {
    let json = args.json;
    let report = publish_dir(&args.dir, &args.flags, root, mode)?;
    if json {
        crate::print_json(&serde_json::json!({"event": "result", "publish": report}));
    } else {
        progress::out(&render(&report));
    }
    Ok(())
}

pub fn run_doctor(cmd: DoctorCommand, root: &Path) -> Result<(), Failure> {
    let DoctorCommand::Registries { flags, json, .. } = cmd;
    let caps = publish::doctor(&flags.destinations(root)?, &flags.push_options());
    if json {
        crate::print_json(&serde_json::json!({"event": "result", "registries": caps}));
    } else {
        let mut s = String::new();
        for c in &caps {
            s += &format!("{}{}\n", c.target, if c.mirror { " (mirror)" } else { "" });
            s += &format!("  reachable: {}\n  auth: {}\n", c.reachable, c.auth);
            s += &format!("  credentials: {}\n", c.credentials.as_deref().unwrap_or("none configured"));
            let referrers = match c.referrers {
                Some(ReferrersMode::Api) => "referrers API",
                Some(ReferrersMode::Fallback) => "no referrers API: tag-schema fallback (sha256-<hex>)",
                None => "unknown",
            };
            s += &format!("  referrers: {referrers}\n  mount: {}\n", c.mount.as_deref().unwrap_or("unknown"));
            for p in &c.problems {
                s += &format!("  problem: {p}\n");
            }
        }
        progress::out(s.trim_end());
    }
    if caps.iter().all(|c| c.problems.is_empty()) {
        Ok(())
    } else {
        Err(Failure { code: schema::exit::ENVIRONMENT, message: "a registry has problems (listed above)".into() })
    }
}

/// `verify DIR --key K --registry R`.
pub fn verify_registry(
    dir: &Path,
    anchor: verifier::keyless::Anchor<'_>,
    registry: &str,
    docker_config: Option<PathBuf>,
) -> Result<verifier::release::VerifyReport, Failure> {
    let target: RegistryTarget =
        registry.parse().map_err(|e: String| Failure { code: schema::exit::Code::Usage, message: format!("--registry: {e}") })?;
    let opts = PushOptions { docker_config, ..PushOptions::default() };
    Ok(match anchor {
        verifier::keyless::Anchor::Key(key) => verifier::published::verify(dir, key, &target, &opts),
        verifier::keyless::Anchor::Identity { root, policy } => verifier::published::verify_keyless(dir, root, policy, &target, &opts),
    })
}
