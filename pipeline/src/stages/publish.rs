//! The publish stage: a finished release directory to its registries (primary and mirrors),
//! through [`oci::push`], the only code that writes to a registry; `doctor registries`.

use oci::push::*;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use oci::distribution::{Client, Mount, RegistryTarget, RetryPolicy};
use oci::{self, Layout};
use schema::model::Digest;
use schema::report::{Event, Reporter};
/// A registry a release goes to.
#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub target: RegistryTarget,
    /// A mirror (else the primary).
    pub mirror: bool,
    /// A failure here stops the release before any tag is written.
    pub required: bool,
}

/// The primary registry and the mirrors of `release-trains/components.toml` under `root`.
pub fn destinations(root: &Path) -> Result<Vec<Destination>, PublishError> {
    let cfg = schema::config::load(root).map_err(|e| PublishError::Release { message: e.to_string() })?;
    let primary: RegistryTarget = cfg
        .bundle
        .release
        .registry
        .parse()
        .map_err(|e| PublishError::Release { message: format!("`release-trains/components.toml`: `release.registry`: {e}") })?;
    let mut out = vec![Destination { target: primary, mirror: false, required: true }];
    for (i, m) in cfg.bundle.release.mirrors.iter().enumerate() {
        let target = m.registry.parse().map_err(|e| PublishError::Release {
            message: format!("`release-trains/components.toml`: `release.mirror[{i}].registry`: {e}"),
        })?;
        out.push(Destination { target, mirror: true, required: m.required });
    }
    Ok(out)
}

/// How to publish a release directory.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The primary first, then mirrors.
    pub destinations: Vec<Destination>,
    /// Push options; `tags` and `journal` are set per release and destination.
    pub push: PushOptions,
    /// The channel store. With a trust repository (`trust init`), the release gets its version
    /// tag only: channel tags follow the signed pointers, after the trust repository
    /// ([`crate::stages::publish_trust`], run on every destination that got the release).
    /// Without one, the release's own channel is tagged too.
    pub channels: Option<crate::channels::Store>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Content checked and tags written.
    Published,
    /// The journal records a finished publish (`--resume`).
    AlreadyPublished,
    /// Failed; nothing of this destination is tagged. `--resume` retries it.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationReport {
    pub target: String,
    pub mirror: bool,
    pub required: bool,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushReport>,
    pub journal: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseReport {
    pub version: String,
    pub channel: String,
    pub tags: Vec<String>,
    pub destinations: Vec<DestinationReport>,
    /// The trust repository and channel tags, per destination (a store with a trust repository).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<crate::stages::publish_trust::TrustPublished>,
}

impl ReleaseReport {
    /// Destinations that failed (all optional mirrors, or the call would have failed).
    pub fn failed(&self) -> usize {
        self.destinations.iter().filter(|d| matches!(d.status, Status::Failed)).count()
    }
}

/// `cargo xtask publish <dir>`: pushes the release in `dir` to every destination by digest,
/// then tags each component index with the release's version and channel.
///
/// 1. content and check on each destination in turn: a failure of the primary or of a required
///    mirror stops here, before any tag anywhere; a failing optional mirror is reported;
/// 2. tags, primary first, on every destination whose content checked out;
/// 3. with a trust repository in the channel store: the channel tag is not written in step 2;
///    the trust repository is published to each destination that has the release, and only
///    then do channel tags move, to what the signed pointers name.
pub fn publish_release(dir: &Path, opts: &ReleaseOptions, reporter: &dyn Reporter) -> Result<ReleaseReport, crate::Error> {
    let trust = opts.channels.as_ref().filter(|s| crate::tuf::Repo::of(s.root()).exists());
    let mut report = push_and_tag(dir, opts, trust.is_some(), reporter)?;
    // 3. The trust repository, then the channel tags.
    if let Some(store) = trust {
        for (d, r) in opts.destinations.iter().zip(report.destinations.iter_mut()) {
            if matches!(r.status, Status::Failed) {
                continue;
            }
            match crate::stages::publish_trust::publish_trust(store, &d.target, &opts.push, None) {
                Ok(t) => report.trust.push(t),
                Err(e) if d.mirror && !d.required => {
                    r.status = Status::Failed;
                    r.error = Some(format!("the trust repository: {e}"));
                }
                Err(e) => return Err(crate::stages::publish_trust::at(&d.target, e).into()),
            }
        }
    }
    Ok(report)
}

/// Steps 1 and 2; `trust`: the channel tag is left to step 3.
fn push_and_tag(dir: &Path, opts: &ReleaseOptions, trust: bool, reporter: &dyn Reporter) -> Result<ReleaseReport, PublishError> {
    let yaml_path = dir.join("release.yaml");
    let yaml = fs::read(&yaml_path).map_err(|source| PublishError::Io { path: yaml_path.clone(), source })?;
    let doc = verifier::manifest::parse(&yaml)
        .map_err(|message| PublishError::Release { message: format!("`{}`: {message}", yaml_path.display()) })?;
    let tags =
        if trust { vec![doc.release.version.to_string()] } else { vec![doc.release.version.to_string(), doc.release.channel.to_string()] };
    let layout = Layout::open(&dir.join("images"))?;
    let index_path = layout.root().join("index.json");
    let layout_digest = Digest::of(&fs::read(&index_path).map_err(|source| PublishError::Io { path: index_path, source })?);
    let clients: Vec<Client> = opts.destinations.iter().map(|d| client_for(&d.target, &opts.push)).collect::<Result<_, _>>()?;
    let pushes: Vec<PushOptions> = opts
        .destinations
        .iter()
        .map(|d| PushOptions { tags: tags.clone(), journal: Some(journal_path(dir, &d.target)), defer_tags: true, ..opts.push.clone() })
        .collect();
    let mut reports = Vec::new();
    let mut sessions: Vec<Option<Session<'_>>> = Vec::new();
    for ((d, client), push) in opts.destinations.iter().zip(&clients).zip(&pushes) {
        let journal = push.journal.clone().unwrap_or_default();
        let mut report = DestinationReport {
            target: d.target.to_string(),
            mirror: d.mirror,
            required: d.required,
            status: Status::Published,
            error: None,
            push: None,
            journal: journal.clone(),
        };
        if push.resume && journal_finished(&journal, &layout_digest, &d.target) {
            report.status = Status::AlreadyPublished;
            reports.push(report);
            sessions.push(None);
            continue;
        }
        let attempt = Session::new(&layout, &d.target, client, push).and_then(|mut s| {
            let r = s.content(reporter).and_then(|()| s.check());
            for note in client.take_notes() {
                reporter.event(Event::Note { message: format!("{}: {note}", d.target) });
            }
            r.map(|()| s)
        });
        match attempt {
            Ok(s) => {
                reports.push(report);
                sessions.push(Some(s));
            }
            Err(e) if d.mirror && !d.required => {
                reporter.event(Event::Note {
                    message: format!("mirror `{}` failed (not required; `publish --resume` retries it): {e}", d.target),
                });
                report.status = Status::Failed;
                report.error = Some(e.to_string());
                reports.push(report);
                sessions.push(None);
            }
            Err(e) => {
                return Err(PublishError::Stopped {
                    role: if d.mirror { "required mirror" } else { "primary registry" },
                    target: d.target.to_string(),
                    source: Box::new(e),
                })
            }
        }
    }
    // 2. Tags, last.
    for (s, report) in sessions.iter_mut().zip(reports.iter_mut()) {
        if let Some(s) = s {
            match s.tag(&tags) {
                Ok(()) => report.push = Some(s.report()),
                Err(e) if report.mirror && !report.required => {
                    report.status = Status::Failed;
                    report.error = Some(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(ReleaseReport {
        version: doc.release.version.to_string(),
        channel: doc.release.channel.to_string(),
        tags,
        destinations: reports,
        trust: Vec::new(),
    })
}

/// What `doctor registries` found for one destination.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    pub target: String,
    pub mirror: bool,
    pub reachable: bool,
    /// `none`, `basic` or `bearer`.
    pub auth: String,
    /// Where credentials for it come from, when any (never the secret).
    pub credentials: Option<String>,
    /// `api`, `fallback` (tag schema), or unknown when it could not be asked.
    pub referrers: Option<ReferrersMode>,
    /// The answer to a cross-repository mount request of a blob it does not have: `202`
    /// means the registry accepts mount requests (and opened an upload session instead).
    pub mount: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// `cargo xtask doctor registries`: each destination's reachability, auth scheme, referrers
/// API or fallback, and answer to a mount request. Read-only but for an upload session that a
/// mount request may open (the registry expires it).
pub fn doctor(destinations: &[Destination], opts: &PushOptions) -> Vec<Capabilities> {
    destinations
        .iter()
        .map(|d| {
            let mut c = Capabilities {
                target: d.target.to_string(),
                mirror: d.mirror,
                reachable: false,
                auth: "unknown".into(),
                credentials: None,
                referrers: None,
                mount: None,
                problems: Vec::new(),
            };
            let client = match client_for(&d.target, &PushOptions { retry: RetryPolicy { attempts: 2, ..opts.retry }, ..opts.clone() }) {
                Ok(cl) => cl,
                Err(e) => {
                    c.problems.push(e.to_string());
                    return c;
                }
            };
            c.credentials = client.credentials().map(|cr| format!("`{}` from {}", cr.username, cr.source));
            match client.ping() {
                Ok(ch) => {
                    c.reachable = true;
                    c.auth = ch.name().into();
                }
                Err(e) => {
                    c.problems.push(e.to_string());
                    return c;
                }
            }
            let repo = d.target.repository("stellaops-doctor");
            match probe_referrers(&client, &repo) {
                Ok(m) => c.referrers = Some(m),
                Err(e) => c.problems.push(e.to_string()),
            }
            let probe = Digest::of(b"stellaops mount probe");
            match client.mount_blob(&repo, &probe, &d.target.repository("stellaops-doctor-source")) {
                Ok(Mount::Mounted) => c.mount = Some("201 mounted".into()),
                Ok(Mount::Session(_)) => c.mount = Some("202 mount requests accepted (blob absent: upload session opened)".into()),
                Err(e) => c.problems.push(e.to_string()),
            }
            c
        })
        .collect()
}
