//! The release orchestrator: [`release`] calls each stage of [`crate::stages`] once, in order,
//! handing each the typed outputs of the ones before:
//!
//! 1. plan (everything decided: version, epoch, components, backend, gates) -> `Plan`;
//! 2. build (every component x platform, one OCI layout) -> `Images`;
//! 3. gates (audit, tests, budgets; skipped or off by flag) -> `GateReport`;
//! 4. evidence (SBOMs, scans, drift gate, provenance, per image in parallel) -> `Evidence`;
//! 5. templates (chart and compose by digest), the customer tool (`tools/`) and the channel
//!    store's trust repository (`trust/`) -> `Deployables`;
//! 6. sign (image signatures, DSSE envelopes, referrers, transparency log) -> `Signed`;
//! 7. manifest (release.yaml from `Signed`'s digests, its signature and bundle) -> `Manifest`;
//! 8. the gate record about release.yaml, policy and plugins, the kit -> `KitSummary`;
//! 9. plan.json and images.json, then the staging directory renamed into place.
//!
//! Outputs are written into a temporary directory beside the release directory and renamed
//! into place when complete: a release directory is either absent, the previous one, or whole.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::stages::build::base::Fetch;
use crate::stages::build::buildkit::{BuildKit, BuildKitOptions};
use crate::stages::build::debian::{self, DebSource};
use crate::stages::build::{self, Backend, BuildOptions, Daemonless, Images};
use crate::stages::evidence::provenance::RunTimes;
use crate::stages::plan::{self, Plan, PlanOptions};
use oci::{write_atomic, Layout};
use schema::model::Channel;
use schema::report::{Event, Reporter, Stage};

/// Where `.deb` files and fetched git sources are cached: `<root>/target/stellaops-cache`.
pub fn default_cache(root: &Path) -> PathBuf {
    root.join("target/stellaops-cache")
}

/// How bases are fetched, from flags: a local directory of `.deb` files, a mirror, or the
/// host's apt mirror.
pub fn deb_source(deb_dir: Option<PathBuf>, mirror: Option<String>) -> Result<DebSource, Error> {
    Ok(match (deb_dir, mirror) {
        (Some(d), _) => DebSource::Dir(d),
        (None, Some(m)) => DebSource::Mirror(m),
        (None, None) => DebSource::Mirror(debian::host_mirror().map_err(|e| {
            Error::Build(build::BuildError::Base(crate::stages::build::base::BaseError::Deb {
                base: "*".into(),
                platform: schema::model::Platform::LinuxAmd64,
                source: e,
            }))
        })?),
    })
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub plan: PlanOptions,
    pub debs: DebSource,
    pub cache: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub backend: BackendChoice,
    /// The signing key: a key file (encrypted PKCS#8 PEM or cosign's `cosign.key`) or a
    /// `pkcs11:` URI ([`crate::signer::KeyRef::from_arg`]); `None` for the development key
    /// under `target/keys/` (made on first use).
    pub key: Option<PathBuf>,
    /// `--keyless`: sign with a one-time key certified by Fulcio for an OIDC identity
    /// ([`crate::signer::keyless`]) instead of `key`.
    pub keyless: Option<crate::signer::keyless::KeylessOptions>,
    pub fips: verifier::keys::Fips,
    /// The transparency log (Rekor) to record signatures in; none when `None` (then the
    /// channel's `[transparency-log] url`, if any).
    pub rekor: Option<String>,
    /// Its API (`--rekor-api`); else the channel's `[transparency-log] api`; else v1.
    pub rekor_api: Option<crate::stages::sign::tlog::RekorApi>,
    /// The log's public key (SPKI PEM, `--rekor-key`): every answer of the log is checked with
    /// it before it is kept (`crate::stages::sign::tlog::check`).
    pub rekor_key: Option<PathBuf>,
    /// Whether the release gates of `release-trains/gates.toml` run (spec §2.4).
    pub gates: Gates,
    /// Whether the build reads and writes the build cache (`<cache>/builds`).
    pub build_cache: BuildCacheUse,
    /// What the build cache's entries are pruned to after the build (least recently used
    /// first; never this release's).
    pub build_cache_max: u64,
    /// The channel store whose trust repository (`<channels>/tuf/`, if any) lists the release
    /// keys: a stable or lts release signed with another key is refused before the build.
    pub channels: Option<PathBuf>,
}

/// Whether a run uses the build cache ([`crate::stages::build::cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildCacheUse {
    /// `release`: unchanged images come from the cache (daemonless backend).
    Use,
    /// `release --no-cache`, `build` (so `repro` and `rebuild`, which run it): every image is
    /// built, and nothing is stored.
    Off,
}

/// The release gates ([`crate::stages::gates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gates {
    /// Run them; any failure stops the release; the signed record goes into the release.
    Run,
    /// `--skip-gates`: record `skipped` (promotion refuses such a release).
    Skip,
    /// Not a release (`build`, `repro`): no gates, no record.
    Off,
}

/// The development key: `<root>/target/keys/dev.key` (and `.pub`), made on first use,
/// encrypted with `STELLAOPS_KEY_PASSPHRASE` (empty when unset). For local releases only: a
/// real release names its key with `--key`.
pub fn dev_key_path(root: &Path) -> PathBuf {
    root.join("target/keys/dev.key")
}

/// Whether `key` is this repository's development key (`target/keys/dev.pub`).
pub fn is_dev_key(root: &Path, key: &verifier::keys::PublicKey) -> bool {
    verifier::keys::PublicKey::load(&dev_key_path(root).with_extension("pub")).is_ok_and(|dev| dev.key_id() == key.key_id())
}

fn load_key(opts: &RunOptions, root: &Path, reporter: &dyn Reporter) -> Result<Box<dyn verifier::keys::Signer>, Error> {
    if let Some(k) = &opts.keyless {
        // The one-time key is ECDSA P-256 (ES256): FIPS mode has nothing to refuse.
        return Ok(Box::new(crate::signer::keyless::KeylessSigner::new(k)?));
    }
    signing_key(opts.key.as_deref(), root, opts.fips, reporter)
}

/// The signing key `key` names (a file or a `pkcs11:` URI), or the development key of the
/// repository at `root`; checked against FIPS mode.
pub fn signing_key(
    key: Option<&Path>,
    root: &Path,
    fips: verifier::keys::Fips,
    reporter: &dyn Reporter,
) -> Result<Box<dyn verifier::keys::Signer>, Error> {
    use verifier::keys::{KeyKind, Secret, SigningKey};
    let pass = Secret::from_env();
    let key: Box<dyn verifier::keys::Signer> = match key {
        Some(p) => crate::signer::load(&crate::signer::KeyRef::from_arg(p)?)?,
        None => {
            let path = dev_key_path(root);
            // Made once, under a lock: two first releases at once would both make it, and
            // one could read the other's half-written file.
            let lock_path = oci::statelock::beside(&path);
            let _lock =
                oci::statelock::StateLock::acquire(&lock_path, "the development key", &|message| reporter.event(Event::Note { message }))
                    .map_err(|source| verifier::keys::KeyError::Io { path: lock_path.clone(), source })?;
            if !path.exists() {
                SigningKey::generate(KeyKind::EcdsaP256).write(&path, &path.with_extension("pub"), &pass)?;
            }
            reporter.event(Event::Note {
                message: format!(
                    "signing with the development key `{}` (public key beside it); pass `--key` for a real release",
                    path.display()
                ),
            });
            Box::new(SigningKey::load(&path, &pass)?)
        }
    };
    key.public().check_fips(fips, "the signing key")?;
    Ok(key)
}

/// Which builder builds the components (`--backend`).
#[derive(Debug, Clone)]
pub enum BackendChoice {
    /// Every component from its recipe layers, with no daemon.
    Daemonless,
    /// Components with a `dockerfile` by BuildKit, the others daemonless.
    BuildKit(BuildKitOptions),
}

/// What a release (or a build) wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub version: String,
    pub channel: String,
    pub output: PathBuf,
    pub images: Images,
    pub evidence: crate::stages::evidence::Evidence,
    pub signed: crate::stages::sign::Signed,
    /// sha256 of the release.yaml written.
    pub manifest: schema::model::Digest,
    pub kit: crate::stages::kit::KitSummary,
    /// What the build cache did for each image (absent when it was not used).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache: Vec<build::cache::CacheOutcome>,
    /// What the prune after the build removed (absent when the cache was not used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_pruned: Option<build::cache::Pruned>,
    /// What went wrong with the cache without failing the release.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_notes: Vec<String>,
}

/// The wall clock, as RFC 3339: read only for provenance run times.
fn now() -> (i64, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    (secs, schema::model::rfc3339(secs))
}

/// `cargo xtask release`: plan, build, evidence, into the release directory.
pub fn release(opts: &RunOptions, reporter: &dyn Reporter) -> Result<Outcome, Error> {
    let (started_secs, started) = now();
    reporter.event(Event::StageStarted { stage: Stage::Plan, jobs: 1 });
    let (mut plan, cfg) = plan::plan(&opts.plan).map_err(at(Stage::Plan))?;
    let buildkit;
    let backend: &dyn Backend = match &opts.backend {
        BackendChoice::Daemonless => &Daemonless,
        BackendChoice::BuildKit(o) => {
            buildkit = BuildKit::new(o.clone(), reporter);
            &buildkit
        }
    };
    plan.backend = backend.name();
    // The gates' configuration is read before any work: a mistake in it costs no build.
    let gates_cfg = match opts.gates {
        Gates::Run => Some(crate::stages::gates::load(&plan.root)?),
        Gates::Skip | Gates::Off => None,
    };
    // So is the signing key: a stable or lts release names its key (the development key is
    // for trying the pipeline out), and a wrong passphrase is found before the build, not after.
    if opts.key.is_none() && opts.keyless.is_none() && matches!(plan.channel, Channel::Stable | Channel::Lts) {
        return Err(Error::KeyRequired { channel: plan.channel }.at(Stage::Plan));
    }
    let key = load_key(opts, &plan.root, reporter).map_err(|e| e.at(Stage::Plan))?;
    if matches!(plan.channel, Channel::Stable | Channel::Lts) && is_dev_key(&plan.root, key.public()) {
        return Err(Error::DevKey { channel: plan.channel, path: dev_key_path(&plan.root) }.at(Stage::Plan));
    }
    // A keyless release is vouched for by its identity (the verifier's policy), not by a key
    // the trust root lists: its key exists for one release only.
    if let (true, None, Some(store)) = (matches!(plan.channel, Channel::Stable | Channel::Lts), &opts.keyless, &opts.channels) {
        let repo = crate::tuf::Repo::of(store);
        if repo.exists() && !repo.may_sign_targets(key.public()).map_err(|e| Error::from(e).at(Stage::Plan))? {
            return Err(Error::Ops(verifier::ops::OpsError::Refused(format!(
                "a `{}` release is signed with a release key of the trust root `{}`; `{}` is not one\n  hint: `--key` names a release key the root lists (add one with `cargo xtask trust rotate`)",
                plan.channel,
                repo.metadata().display(),
                key.public().key_id()
            )))
            .at(Stage::Plan));
        }
    }
    // And the transparency log: the flag, else the channel's `[transparency-log] url`; a
    // channel that requires one (stable, lts) is refused without it.
    let log = cfg.train(plan.channel).transparency_log.clone();
    let rekor_key = match &opts.rekor_key {
        Some(path) => {
            let pem = fs::read_to_string(path).map_err(|source| Error::Io { path: path.clone(), source })?;
            verifier::keys::PublicKey::from_pem(&pem).map_err(|e| {
                Error::Ops(verifier::ops::OpsError::Refused(format!(
                    "`{}`: not the transparency log's public key: {e}\n  hint: `--rekor-key` names the log's public key as an SPKI PEM file",
                    path.display()
                )))
                .at(Stage::Plan)
            })?;
            Some(pem)
        }
        None => None,
    };
    let rekor = opts.rekor.clone().or(log.url).map(|url| crate::stages::sign::tlog::Log {
        url,
        api: opts.rekor_api.or(log.api).unwrap_or_default(),
        key: rekor_key,
    });
    if rekor.is_none() && log.required {
        return Err(Error::LogRequired { channel: plan.channel }.at(Stage::Plan));
    }
    if opts.keyless.is_some() && rekor.as_ref().is_none_or(|l| l.api != crate::stages::sign::tlog::RekorApi::V1) {
        return Err(Error::KeylessNeedsLog.at(Stage::Plan));
    }
    reporter.event(Event::StageFinished { stage: Stage::Plan });
    let out = plan.output.clone();
    let parent = out.parent().unwrap_or(Path::new(".")).to_owned();
    fs::create_dir_all(&parent).map_err(|source| Error::Io { path: parent.clone(), source })?;
    // One release into `out` at a time: a second waits (and says for whom) rather than racing
    // it to the final rename.
    let lock_path = oci::statelock::beside(&out);
    let _lock = oci::statelock::StateLock::acquire(&lock_path, &format!("the release `{}`", out.display()), &|message| {
        reporter.event(Event::Note { message })
    })
    .map_err(|source| Error::Io { path: lock_path.clone(), source })?;
    // What a release of `out` killed part-way left (its staging directory, the previous
    // release moved aside) is cleaned up first, under the lock: nothing else writes them.
    let staging_prefix = format!(".staging-{}-", out.file_name().and_then(|n| n.to_str()).unwrap_or("release"));
    oci::dirs::recover(&out).map_err(|source| Error::Io { path: oci::dirs::aside(&out), source })?;
    oci::dirs::sweep(&parent, &staging_prefix).map_err(|source| Error::Io { path: parent.clone(), source })?;
    let staging = tempfile::Builder::new()
        .prefix(&staging_prefix)
        .tempdir_in(&parent)
        .map_err(|source| Error::Io { path: parent.clone(), source })?;

    let layout = Layout::create(&staging.path().join("images"))?;
    let fetch =
        Fetch { debs: opts.debs.clone(), cache: opts.cache.clone().unwrap_or_else(|| default_cache(&plan.root)), root: plan.root.clone() };
    crate::fault::at("plan", staging.path());
    // The build cache, for the daemonless backend: BuildKit's builds are keyed by the engine's
    // own cache (`--build-cache`), not by this one.
    // Nor with a test fault (`crate::fault`), which changes what a build makes behind the key.
    let faulted = std::env::var_os(crate::fault::VAR).is_some();
    let build_cache = (opts.build_cache == BuildCacheUse::Use && matches!(opts.backend, BackendChoice::Daemonless) && !faulted)
        .then(|| build::cache::BuildCache { max_bytes: opts.build_cache_max, ..build::cache::BuildCache::new(&fetch.cache) });
    let scan_cache = build_cache.clone();
    let build_started = std::time::SystemTime::now();
    let mut images = build::build(&plan, &cfg, &layout, &BuildOptions { fetch, jobs: opts.jobs, cache: build_cache }, backend, reporter)
        .map_err(at(Stage::Build))?;
    // Entries this build used or stored are newer than its start: the prune keeps them.
    let cache_pruned = scan_cache.as_ref().map(|c| match c.prune(build_started) {
        Ok(p) => p,
        Err(why) => {
            images.cache_notes.push(format!("build cache: not pruned: {why}"));
            build::cache::Pruned::default()
        }
    });
    crate::fault::at("build", staging.path());
    let (_, finished) = now();
    // What runs this release: read once, here, with the run's times.
    let env = |k: &str| std::env::var(k).ok();
    let builder = crate::stages::evidence::provenance::Builder::from_env(env);
    let times = if std::env::var_os(crate::repro::PINNED_RUN_ENV).is_some() {
        // A build of `repro` (never published): see `repro::MASKED`.
        RunTimes {
            invocation_id: crate::repro::PINNED_INVOCATION.to_owned(),
            started: plan.created.clone(),
            finished: plan.created.clone(),
            builder,
        }
    } else {
        let invocation_id = crate::stages::evidence::provenance::Builder::github_invocation(env)
            .unwrap_or_else(|| uuid_of(&format!("{}:{}:{started_secs}", plan.source.commit, std::process::id())));
        RunTimes { invocation_id, started, finished, builder }
    };
    let failed_report = parent.join(format!("{}.drift-rejected.json", out.file_name().and_then(|n| n.to_str()).unwrap_or("release")));
    let _ = fs::remove_file(&failed_report);
    let outputs = crate::stages::evidence::Outputs {
        dir: staging.path(),
        failed_report: &failed_report,
        times: &times,
        scan_cache: scan_cache.as_ref().map(|c| c.dir.join("scans")),
    };
    let evidence = crate::stages::evidence::run(&plan, &layout, &images, &outputs, reporter).map_err(at(Stage::Evidence))?;
    crate::fault::at("evidence", staging.path());
    // The gates after the evidence: the audit checks what the scans found in every image.
    let gates = gates(opts.gates, gates_cfg.as_ref(), (&plan, &images, &evidence), staging.path(), &out, reporter)
        .map_err(|e| e.at(Stage::Gates))?;
    // The chart and compose file, every image by its index digest.
    let template_images: Vec<crate::templates::TemplateImage> = images
        .components
        .iter()
        .map(|(name, c)| crate::templates::TemplateImage {
            component: name.clone(),
            repository: c.repository.clone(),
            digest: c.index.digest.clone(),
        })
        .collect();
    let rendered = crate::templates::render(
        &plan.root,
        &plan.version.version.to_string(),
        plan.channel,
        plan.source_date_epoch,
        &template_images,
        staging.path(),
    )
    .map_err(at(Stage::Templates))?;
    // The customer tool, built from the pipeline's workspace, with its SBOM, provenance and
    // signatures (`tools/`).
    reporter.event(Event::StageStarted { stage: Stage::Tool, jobs: 1 });
    let workspace = crate::stages::tool::workspace();
    let tool = crate::stages::tool::build(&crate::stages::tool::ToolRequest {
        workspace: &workspace,
        source_date_epoch: plan.source_date_epoch,
        key: key.as_ref(),
        out: staging.path(),
        times: &times,
    })
    .map_err(at(Stage::Tool))?;
    reporter.event(Event::JobFinished { stage: Stage::Tool, job: tool.entry.name.clone(), detail: tool.entry.digest.to_string() });
    reporter.event(Event::StageFinished { stage: Stage::Tool });
    // The channel store's trust repository as it is now (`trust/`): the kit carries it, so the
    // air-gapped host checks channels and rotations without the store. Only once published
    // (`timestamp.json`, written by `promote` or `trust refresh`): a root alone is not a
    // repository a client can load.
    if let Some(store) = &opts.channels {
        let repo = crate::tuf::Repo::of(store);
        if repo.exists() && repo.metadata().join("timestamp.json").is_file() {
            copy_tree(&repo.metadata(), &staging.path().join("trust/metadata"))?;
            copy_tree(&repo.targets(), &staging.path().join("trust/targets"))?;
        }
    }
    let deployables = crate::stages::manifest::Deployables {
        tools: vec![tool.entry.clone()],
        charts: vec![verifier::manifest::ChartEntry {
            name: rendered.chart_name.clone(),
            version: rendered.chart_version.clone(),
            digest: rendered.chart_digest.clone(),
        }],
        compose: Some(verifier::manifest::ComposeEntry {
            file: crate::templates::COMPOSE_FILE.to_owned(),
            digest: Some(rendered.compose_digest.clone()),
        }),
    };
    let made = crate::stages::sign::Made { rekor: rekor.as_ref(), plan: &plan, layout: &layout, images: &images, evidence: &evidence };
    let signed = crate::stages::sign::sign(&made, key.as_ref(), staging.path(), reporter).map_err(at(Stage::Sign))?;
    crate::fault::at("sign", staging.path());
    let manifest =
        crate::stages::manifest::write(&plan, &images, &signed, &deployables, key.as_ref(), staging.path()).map_err(at(Stage::Manifest))?;
    crate::fault::at("manifest", staging.path());
    if let Some(report) = &gates {
        record_gates(report, key.as_ref(), &manifest.digest, staging.path()).map_err(|e| e.at(Stage::Gates))?;
        // The gate record is a signed envelope too: into the log (or its queue) like the others.
        if let Some(log) = rekor.as_ref() {
            log_gate_record(log, key.as_ref(), staging.path(), reporter).map_err(|e| e.at(Stage::Gates))?;
        }
    }

    // Example policies and restart-time plugins ship as they are at the tag (spec §3.3).
    for dir in ["policy", "plugins"] {
        copy_tree(&plan.root.join(dir), &staging.path().join(dir))?;
    }
    // So do the release trains and the bundle's skew rules (with the base lock they are read
    // with): the customer tool's upgrade preflight checks a kit against them.
    for file in crate::stages::kit::PREFLIGHT_RULES {
        copy_tree(&plan.root.join(file), &staging.path().join(file))?;
    }
    // The channel's offline kit, inside the release directory.
    let kit_file = schema::kit::kit_name(&plan.version.version.to_string(), plan.channel.as_str());
    let mut kit = crate::stages::kit::write(
        &crate::stages::kit::KitRequest {
            release: staging.path(),
            contents: &plan.kit,
            key: key.as_ref(),
            delta_from: None,
            out: &staging.path().join(&kit_file),
            threads: opts.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())) as u32,
        },
        reporter,
    )
    .map_err(at(Stage::Kit))?;
    kit.path = out.join(&kit_file);

    reporter.event(Event::StageStarted { stage: Stage::Write, jobs: 2 });
    // plan.json records no local path: where this machine wrote the release is not part of it.
    let mut plan_json = serde_json::to_value(&plan).map_err(|e| Error::Io { path: staging.path().join("plan.json"), source: e.into() })?;
    if let Some(o) = plan_json.as_object_mut() {
        o.remove("output");
    }
    write_json(&staging.path().join("plan.json"), &plan_json).map_err(|e| e.at(Stage::Write))?;
    write_json(&staging.path().join("images.json"), &images).map_err(|e| e.at(Stage::Write))?;
    crate::fault::at("write", staging.path());
    publish_dir(staging.keep(), &out).map_err(|e| e.at(Stage::Write))?;
    reporter.event(Event::StageFinished { stage: Stage::Write });
    let cache = std::mem::take(&mut images.cache);
    Ok(Outcome {
        cache,
        cache_pruned,
        cache_notes: std::mem::take(&mut images.cache_notes),
        version: plan.version.to_string(),
        channel: plan.channel.to_string(),
        output: out,
        images,
        evidence,
        signed,
        manifest: manifest.digest,
        kit,
    })
}

/// Tags a stage's error with the stage (for `map_err`).
fn at<E: Into<Error>>(stage: Stage) -> impl FnOnce(E) -> Error {
    move |e| e.into().at(stage)
}

/// The gates stage: runs them (after the build, which found every lock file, and the evidence,
/// whose scans list what each image holds), or records that
/// they were skipped. A failure writes its report beside the release
/// (`<release>.gates-rejected.json`) and stops the release.
fn gates(
    mode: Gates,
    cfg: Option<&crate::stages::gates::GatesConfig>,
    (plan, images, evidence): (&Plan, &Images, &crate::stages::evidence::Evidence),
    staging: &Path,
    out: &Path,
    reporter: &dyn Reporter,
) -> Result<Option<crate::stages::gates::GateReport>, Error> {
    use crate::stages::gates::{self, GateError, GateReport, GateStatus};
    let rejected = out.with_file_name(format!("{}.gates-rejected.json", out.file_name().and_then(|n| n.to_str()).unwrap_or("release")));
    let _ = fs::remove_file(&rejected);
    let cfg = match (mode, cfg) {
        (Gates::Off, _) => return Ok(None),
        (Gates::Skip, _) | (Gates::Run, None) => {
            reporter.event(Event::Note {
                message: "release gates skipped (--skip-gates): recorded as `skipped`; this release cannot be promoted".into(),
            });
            return Ok(Some(GateReport::skipped()));
        }
        (Gates::Run, Some(c)) => c,
    };
    let jobs = usize::from(cfg.audit.is_some()) + cfg.tests.len() + cfg.budgets.len();
    reporter.event(Event::StageStarted { stage: Stage::Gates, jobs });
    // The scans the evidence stage wrote, read back as written.
    let mut scans = Vec::new();
    for e in &evidence.images {
        let path = staging.join(&e.scan);
        let bytes = fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let scan = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Io { path: path.clone(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, e) })?;
        scans.push(gates::ScannedImage { component: e.component.clone(), platform: e.platform, scan });
    }
    let report = gates::run(&plan.root, cfg, images, &scans, staging, reporter)?;
    reporter.event(Event::StageFinished { stage: Stage::Gates });
    if report.status != GateStatus::Passed {
        write_json(&rejected, &report)?;
        // Keep the commands' logs beside the report: the staging directory goes away.
        let logs = staging.join("gates");
        if logs.is_dir() {
            let dest = rejected.with_extension("logs");
            let _ = fs::remove_dir_all(&dest);
            let _ = fs::rename(&logs, &dest);
        }
        return Err(GateError::Failed { report: Box::new(report), report_path: rejected }.into());
    }
    Ok(Some(report))
}

/// `gates.json` and its signed envelope `attest/gates.dsse.json`, about `release.yaml`.
fn record_gates(
    report: &crate::stages::gates::GateReport,
    key: &dyn verifier::keys::Signer,
    release_yaml: &schema::model::Digest,
    dir: &Path,
) -> Result<(), Error> {
    use crate::stages::gates;
    write_json(&dir.join(gates::GATES_JSON), report)?;
    write_json(&dir.join(gates::GATES_ENVELOPE), &gates::sign_record(key, report, release_yaml)?)
}

/// Enters `attest/gates.dsse.json` in the transparency log at `url` (queued when it is down).
fn log_gate_record(
    log: &crate::stages::sign::tlog::Log,
    key: &dyn verifier::keys::Signer,
    dir: &Path,
    reporter: &dyn Reporter,
) -> Result<(), Error> {
    use crate::stages::sign::tlog;
    let rel = crate::stages::gates::GATES_ENVELOPE;
    let path = dir.join(rel);
    let io = |source: std::io::Error| Error::Io { path: path.clone(), source };
    let env: verifier::sign::Envelope = serde_json::from_slice(&fs::read(&path).map_err(io)?).map_err(|e| io(e.into()))?;
    let sent = serde_json::to_string(&env).map_err(|e| io(e.into()))?;
    let results = tlog::submit_all(log, &[tlog::dsse(rel, &sent, &verifier::keys::log_verifier(key))], dir).map_err(io)?;
    tlog::require_logged(key, log, &results)?;
    tlog::write_envelope_bundles(key, dir, &results).map_err(io)?;
    if results.iter().any(|(_, l)| matches!(l, tlog::Logged::Pending { .. })) {
        reporter.event(Event::Note {
            message: format!("transparency log `{}`: the gate record `{rel}` is pending (queued in attest/tlog/pending)", log.url),
        });
    }
    Ok(())
}

/// An invocation id: a UUID derived from the commit, the process and the start time.
fn uuid_of(seed: &str) -> String {
    let d = schema::model::Digest::of(seed.as_bytes());
    let h = d.hex();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Io { path: path.to_owned(), source: e.into() })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).map_err(|source| Error::Io { path: path.to_owned(), source })
}

/// Moves a finished staging directory to `dest`, replacing a previous one in one step.
fn publish_dir(staging: PathBuf, dest: &Path) -> Result<(), Error> {
    oci::dirs::replace_dir(&staging, dest).map_err(|source| Error::Io { path: dest.to_owned(), source })
}

/// Copies the regular files under `from` (if it exists; or `from` itself, a file) to `to`,
/// sorted; nothing else.
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    if from.is_file() {
        if let Some(p) = to.parent() {
            fs::create_dir_all(p).map_err(|source| Error::Io { path: p.to_owned(), source })?;
        }
        let bytes = fs::read(from).map_err(|source| Error::Io { path: from.to_owned(), source })?;
        return write_atomic(to, &bytes).map_err(|source| Error::Io { path: to.to_owned(), source });
    }
    if !from.is_dir() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(from).sort_by_file_name() {
        let e = e.map_err(|e| Error::Io { path: from.to_owned(), source: e.into() })?;
        if !e.file_type().is_file() {
            continue;
        }
        let dest = to.join(e.path().strip_prefix(from).unwrap_or(e.path()));
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(|source| Error::Io { path: p.to_owned(), source })?;
        }
        let bytes = fs::read(e.path()).map_err(|source| Error::Io { path: e.path().to_owned(), source })?;
        write_atomic(&dest, &bytes).map_err(|source| Error::Io { path: dest.clone(), source })?;
    }
    Ok(())
}

/// The plan alone (for `cargo xtask plan`).
pub fn plan_only(opts: &PlanOptions) -> Result<Plan, Error> {
    plan::plan(opts).map(|(p, _)| p).map_err(Error::from)
}
