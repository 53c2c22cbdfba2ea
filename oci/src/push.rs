//! The publish stage: the only code that writes to a registry. An OCI layout (a release's
//! `images/`, or an offline kit's) goes to a registry by digest; human-readable tags come last.
//!
//! 1. **Place**: every entry of the layout's `index.json` is given a repository. A named
//!    image or index that is no other named index's child is a *root*: it goes to
//!    `<namespace>/<ref name>` with everything it reaches. A cosign `sha256-<hex>.sig`
//!    manifest and every referrer (a manifest with a `subject`) go where their subject went.
//! 2. **Content** (per repository, children before parents): each blob is skipped when the
//!    registry has it, mounted from another repository of the same registry that has it, or
//!    uploaded (streamed; chunked above [`PushOptions::chunk_size`]); each manifest is put by
//!    digest. The digest the registry reports is checked every time.
//! 3. **Signatures and referrers**: the `sha256-<hex>.sig` tags (merged with signatures
//!    already there); then, for registries without the referrers API (probed once per
//!    registry), the fallback index under the tag `sha256-<hex>` of every subject, merged with
//!    what is there (entries lacking `artifactType` or annotations, as some writers leave them,
//!    are repaired from their manifests).
//! 4. **Check**: every manifest resolves by digest, every blob exists, every referrer is
//!    listed (API or fallback) with its `artifactType`.
//! 5. **Tags**, last and only when 4 passed: each root gets [`PushOptions::tags`].
//!
//! Every step done is appended to a journal (JSON lines, one per finished step). With
//! `resume`, steps the journal records are not done again: a publish killed mid-way continues
//! without re-uploading what finished. Steps 4 and 5 always run in full.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::distribution::{Client, DistError, Mount, RegistryTarget, RetryPolicy};
use crate::layout::{self as oci, Descriptor, Index, Layout, LayoutError};
use crate::referrers::{self, Referrer};
use schema::model::Digest;
use schema::report::{Event, Reporter, Stage};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Registry(#[from] DistError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("`{layout}`: {message}")]
    Place { layout: PathBuf, message: String },
    #[error("`{path}`: {message}")]
    Journal { path: PathBuf, message: String },
    #[error("`{target}`: the pushed content does not check out ({} problem{}); no tag was written:\n{}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Incomplete { target: String, problems: Vec<String> },
    #[error("{message}")]
    Release { message: String },
    #[error("{role} `{target}`: {source}\n  no tag was written on any registry")]
    Stopped {
        role: &'static str,
        target: String,
        #[source]
        source: Box<PublishError>,
    },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PublishError {
    /// What the user can do about it (the CLI prints it as a `hint:` line).
    pub fn hint(&self) -> Option<String> {
        match self {
            PublishError::Stopped { source, .. } if source.registry_full() => Some(
                "the registry's storage is full (it answered `no space left on device`): free space on the registry's disk, \
                 then run again with `--resume` (what was uploaded is kept)"
                    .to_owned(),
            ),
            PublishError::Stopped { .. } => Some("fix the cause and run again with `--resume` (what was uploaded is kept)".to_owned()),
            _ => None,
        }
    }

    /// Whether a registry failed because its own disk is full: a 5xx whose body says so (as
    /// distribution's filesystem driver reports `ENOSPC`, in words or as `"Err":28`).
    fn registry_full(&self) -> bool {
        let mut at: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = at {
            // `Registry` is transparent: its `DistError` is not a link of the chain.
            let dist = e.downcast_ref::<DistError>().or(match e.downcast_ref::<PublishError>() {
                Some(PublishError::Registry(d)) => Some(d),
                _ => None,
            });
            if let Some(DistError::Status { status, body, .. }) = dist {
                let body = body.to_ascii_lowercase();
                if *status >= 500 && (body.contains("no space left on device") || body.contains("\"err\":28")) {
                    return true;
                }
            }
            at = e.source();
        }
        false
    }

    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            PublishError::Registry(e) => e.exit_code(),
            PublishError::Stopped { source, .. } => source.exit_code(),
            PublishError::Place { .. } | PublishError::Incomplete { .. } | PublishError::Release { .. } => schema::exit::REJECTED,
            PublishError::Layout(LayoutError::DigestMismatch { .. } | LayoutError::NotALayout(_)) => schema::exit::REJECTED,
            PublishError::Auth(_) | PublishError::Journal { .. } => schema::exit::REJECTED,
            _ => schema::exit::ENVIRONMENT,
        }
    }
}

/// How referrers are listed on a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferrersMode {
    /// The registry serves `GET /v2/<name>/referrers/<digest>`.
    Api,
    /// The tag schema: an index under the tag `sha256-<hex>` of the subject.
    Fallback,
}

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Tags given to every root (component index) last: e.g. the version and the channel.
    pub tags: Vec<String>,
    /// Blobs larger than this are uploaded in `PATCH` chunks of this size.
    pub chunk_size: u64,
    pub retry: RetryPolicy,
    /// The journal file; none for no journal.
    pub journal: Option<PathBuf>,
    /// Skip the steps the journal records as done.
    pub resume: bool,
    /// The Docker config file (default: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Skip step 5 (the caller tags later, e.g. after every mirror has the content).
    pub defer_tags: bool,
    /// Repositories pushed at once.
    pub jobs: usize,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            tags: Vec::new(),
            chunk_size: 64 << 20,
            retry: RetryPolicy::default(),
            journal: None,
            resume: false,
            docker_config: None,
            defer_tags: false,
            jobs: 4,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    pub target: String,
    pub referrers_mode: Option<ReferrersMode>,
    /// Repository -> its roots (`ref name` -> digest).
    pub repositories: BTreeMap<String, BTreeMap<String, Digest>>,
    pub blobs: usize,
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    pub blobs_mounted: u64,
    pub blobs_present: usize,
    pub manifests_put: usize,
    pub manifests_present: usize,
    pub referrers: usize,
    pub fallback_indexes_written: usize,
    pub signature_tags_written: usize,
    /// Steps skipped because the journal records them (`resume`).
    pub resumed_steps: usize,
    pub tags: Vec<String>,
    pub requests: u64,
    pub retries: u64,
}

/// One repository's share of the layout.
#[derive(Debug, Default)]
struct RepoPlan {
    /// Ref name -> (digest, media type) of each root.
    roots: BTreeMap<String, (Digest, String)>,
    blobs: BTreeMap<Digest, u64>,
    /// Manifests and indexes, children first.
    manifests: Vec<(Digest, String)>,
    /// cosign `sha256-<hex>.sig` tags: tag -> manifest digest.
    sig_tags: BTreeMap<String, Digest>,
    referrers: Vec<Referrer>,
}

/// Where each part of the layout goes: repository name (relative to the namespace) -> plan.
#[derive(Debug, Default)]
struct Placement {
    repos: BTreeMap<String, RepoPlan>,
}

fn place_err(layout: &Layout, message: String) -> PublishError {
    PublishError::Place { layout: layout.root().to_owned(), message }
}

/// Adds `digest` (a manifest or index) and everything it reaches to `repo`, children first.
fn walk(
    layout: &Layout,
    repo: &mut RepoPlan,
    digest: &Digest,
    media_type: &str,
    owner: &mut BTreeMap<Digest, String>,
    name: &str,
) -> Result<(), PublishError> {
    if repo.manifests.iter().any(|(d, _)| d == digest) {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Any {
        #[serde(default)]
        manifests: Vec<Descriptor>,
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let m: Any = layout.read_json(digest, "a manifest or index")?;
    for child in &m.manifests {
        walk(layout, repo, &child.digest, &child.media_type, owner, name)?;
    }
    for b in m.config.iter().chain(&m.layers) {
        repo.blobs.insert(b.digest.clone(), b.size);
    }
    repo.manifests.push((digest.clone(), media_type.to_owned()));
    owner.entry(digest.clone()).or_insert_with(|| name.to_owned());
    Ok(())
}

fn place(layout: &Layout) -> Result<Placement, PublishError> {
    let index = layout.index()?;
    let mut children = BTreeSet::new();
    for d in index.manifests.iter().filter(|d| d.media_type == oci::MEDIA_INDEX || d.media_type == oci::MEDIA_DOCKER_LIST) {
        let i: Index = layout.read_json(&d.digest, "an image index")?;
        children.extend(i.manifests.into_iter().map(|m| m.digest));
    }
    let mut p = Placement::default();
    // Manifest digest -> the repository it went to.
    let mut owner: BTreeMap<Digest, String> = BTreeMap::new();
    let named = |d: &Descriptor| d.annotations.get(oci::ANNOTATION_REF_NAME).cloned();
    for d in &index.manifests {
        let Some(name) = named(d) else { continue };
        if name.starts_with("sha256-") || children.contains(&d.digest) {
            continue;
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            return Err(place_err(layout, format!("ref name `{name}` in index.json is not a repository name (a-z, 0-9, `.`, `_`, `-`)")));
        }
        let repo = p.repos.entry(name.clone()).or_default();
        walk(layout, repo, &d.digest, &d.media_type, &mut owner, &name)?;
        repo.roots.insert(name.clone(), (d.digest.clone(), d.media_type.clone()));
    }
    // Signatures and referrers follow their subjects; a referrer of a referrer too, so loop
    // until nothing more can be placed.
    let mut pending: Vec<Descriptor> =
        index.manifests.iter().filter(|d| named(d).is_none_or(|n| n.starts_with("sha256-"))).cloned().collect();
    let referrers: BTreeMap<Digest, Referrer> =
        referrers::in_layout(layout)?.into_iter().map(|r| (r.descriptor.digest.clone(), r)).collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut left = Vec::new();
        for d in pending {
            let sig_subject = named(&d).and_then(|n| subject_of_tag(&n));
            let subject = sig_subject.clone().or_else(|| referrers.get(&d.digest).map(|r| r.subject.digest.clone()));
            let Some(subject) = subject else {
                return Err(place_err(
                    layout,
                    format!("`{}` in index.json has no ref name and no subject: cannot tell where it goes", d.digest),
                ));
            };
            let Some(repo_name) = owner.get(&subject).cloned() else {
                left.push(d);
                continue;
            };
            let repo = p.repos.get_mut(&repo_name).expect("owners name placed repositories");
            walk(layout, repo, &d.digest, &d.media_type, &mut owner, &repo_name)?;
            match (named(&d), referrers.get(&d.digest)) {
                (Some(tag), _) if sig_subject.is_some() => {
                    repo.sig_tags.insert(tag, d.digest.clone());
                }
                (_, Some(r)) => repo.referrers.push(r.clone()),
                _ => {}
            }
        }
        if left.len() == before {
            let d = &left[0];
            return Err(place_err(layout, format!("`{}` in index.json is about a manifest that is not in the layout", d.digest)));
        }
        pending = left;
    }
    Ok(p)
}

/// The subject digest of a `sha256-<hex>` or `sha256-<hex>.sig` tag.
fn subject_of_tag(tag: &str) -> Option<Digest> {
    let hex = tag.strip_prefix("sha256-")?;
    let hex = hex.split('.').next()?;
    format!("sha256:{hex}").parse().ok()
}

/// The fallback tag of a subject: `sha256-<hex>`.
pub fn fallback_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The journal: one JSON line per finished step.
#[derive(Debug)]
struct Journal {
    path: Option<PathBuf>,
    done: BTreeSet<String>,
    resumed: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    layout: Digest,
    target: String,
}

impl Journal {
    /// Opens the journal; with `resume`, reads the steps it records (refusing a journal of
    /// another layout or target); otherwise starts it anew.
    fn open(path: Option<&Path>, resume: bool, layout: &Digest, target: &str) -> Result<Journal, PublishError> {
        let Some(path) = path else {
            return Ok(Journal { path: None, done: BTreeSet::new(), resumed: 0 });
        };
        let jerr = |message: String| PublishError::Journal { path: path.to_owned(), message };
        let mut done = BTreeSet::new();
        if resume && path.exists() {
            let f = fs::File::open(path).map_err(|e| jerr(e.to_string()))?;
            let mut lines = std::io::BufReader::new(f).lines();
            let first = lines.next().transpose().map_err(|e| jerr(e.to_string()))?.unwrap_or_default();
            let h: Header = serde_json::from_str(&first).map_err(|e| jerr(format!("not a publish journal: {e}")))?;
            if &h.layout != layout || h.target != target {
                return Err(jerr(format!(
                    "records a publish of layout `{}` to `{}`, not of `{layout}` to `{target}`; run without `--resume` to start anew",
                    h.layout, h.target
                )));
            }
            // A line cut short by a crash is the one step not known to be done.
            for line in lines {
                let line = line.map_err(|e| jerr(e.to_string()))?;
                if let Ok(step) = serde_json::from_str::<String>(&line) {
                    done.insert(step);
                }
            }
        } else {
            if let Some(d) = path.parent() {
                fs::create_dir_all(d).map_err(|e| jerr(e.to_string()))?;
            }
            let mut head =
                serde_json::to_string(&Header { layout: layout.clone(), target: target.to_owned() }).map_err(|e| jerr(e.to_string()))?;
            head.push('\n');
            crate::layout::write_atomic(path, head.as_bytes()).map_err(|e| jerr(e.to_string()))?;
        }
        Ok(Journal { path: Some(path.to_owned()), done, resumed: 0 })
    }

    fn is_done(&mut self, step: &str) -> bool {
        let d = self.done.contains(step);
        if d {
            self.resumed += 1;
        }
        d
    }

    /// Records `step` (appended and flushed to disk before the next step starts).
    fn record(&mut self, step: String) -> Result<(), PublishError> {
        if let Some(path) = &self.path {
            let jerr = |e: std::io::Error| PublishError::Journal { path: path.clone(), message: e.to_string() };
            let mut f = fs::OpenOptions::new().append(true).open(path).map_err(jerr)?;
            let mut line = serde_json::to_string(&step).unwrap_or_default();
            line.push('\n');
            f.write_all(line.as_bytes()).map_err(jerr)?;
            f.sync_data().map_err(jerr)?;
        }
        self.done.insert(step);
        Ok(())
    }
}

/// A client for `target`'s host with credentials from the Docker config.
pub fn client_for(target: &RegistryTarget, opts: &PushOptions) -> Result<Client, PublishError> {
    let creds = crate::auth::lookup(&target.host, opts.docker_config.as_deref())?;
    Ok(Client::new(&target.host, creds, opts.retry))
}

/// Probes once whether `client`'s registry serves the referrers API, in `repo`.
pub fn probe_referrers(client: &Client, repo: &str) -> Result<ReferrersMode, DistError> {
    // Any digest will do: a registry with the API answers an empty index for an unknown one.
    let probe = Digest::of(b"stellaops referrers probe");
    Ok(if client.referrers(repo, &probe)?.is_some() { ReferrersMode::Api } else { ReferrersMode::Fallback })
}

/// Pushes the OCI layout at `layout` to `target` by digest: every blob, manifest and index,
/// the cosign `sha256-<hex>.sig` tags, and every referrer (through the referrers API when the
/// registry serves it, else the `sha256-<hex>` fallback index); checks it all; then, last,
/// tags each root (named image or index, pushed to `<namespace>/<ref name>`) with
/// `opts.tags`. Retries transient failures; with `opts.journal` and `opts.resume`, continues
/// an interrupted push without redoing finished steps. Credentials come from the Docker
/// config file or its credential helpers.
pub fn push_layout(
    layout: &Path,
    target: &RegistryTarget,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<PushReport, PublishError> {
    let layout = Layout::open(layout)?;
    let client = client_for(target, opts)?;
    let mut s = Session::new(&layout, target, &client, opts)?;
    s.content(reporter)?;
    s.check()?;
    if !opts.defer_tags {
        s.tag(&opts.tags)?;
    }
    Ok(s.report())
}

/// One push of one layout to one registry.
#[derive(Debug)]
pub struct Session<'a> {
    layout: &'a Layout,
    target: &'a RegistryTarget,
    client: &'a Client,
    opts: &'a PushOptions,
    placement: Placement,
    journal: Mutex<Journal>,
    report: Mutex<PushReport>,
    /// Blobs known to be in a repository of this registry: digest -> repository.
    have: Mutex<BTreeMap<Digest, String>>,
}

impl<'a> Session<'a> {
    pub fn new(
        layout: &'a Layout,
        target: &'a RegistryTarget,
        client: &'a Client,
        opts: &'a PushOptions,
    ) -> Result<Session<'a>, PublishError> {
        let placement = place(layout)?;
        let index_path = layout.root().join("index.json");
        let index_bytes = fs::read(&index_path).map_err(|source| PublishError::Io { path: index_path, source })?;
        let journal = Journal::open(opts.journal.as_deref(), opts.resume, &Digest::of(&index_bytes), &target.to_string())?;
        let report = PushReport {
            target: target.to_string(),
            repositories: placement
                .repos
                .iter()
                .map(|(name, r)| (target.repository(name), r.roots.iter().map(|(n, (d, _))| (n.clone(), d.clone())).collect()))
                .collect(),
            ..Default::default()
        };
        Ok(Session {
            layout,
            target,
            client,
            opts,
            placement,
            journal: Mutex::new(journal),
            report: Mutex::new(report),
            have: Mutex::new(BTreeMap::new()),
        })
    }

    fn j(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn rep(&self) -> std::sync::MutexGuard<'_, PushReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn have(&self) -> std::sync::MutexGuard<'_, BTreeMap<Digest, String>> {
        self.have.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Steps 2 and 3: the blobs of every repository, then manifests, signature tags and
    /// referrers; repositories in parallel ([`PushOptions::jobs`] at once), each one's steps in
    /// order. Every blob is in place before the first manifest is sent: the bulk of the bytes
    /// moves first, so a registry that runs out of room does so on a blob upload, which it
    /// stages and can take again, not on a manifest (distribution 2.8 writes a manifest's bytes
    /// in place under its digest: a full disk can leave them empty there, for good).
    pub fn content(&mut self, reporter: &dyn Reporter) -> Result<(), PublishError> {
        let names: Vec<String> = self.placement.repos.keys().cloned().collect();
        let jobs = self.placement.repos.values().map(|r| r.blobs.len() + r.manifests.len()).sum();
        reporter.event(Event::StageStarted { stage: Stage::Publish, jobs });
        let mode = match names.first() {
            Some(first) => probe_referrers(self.client, &self.target.repository(first))?,
            None => ReferrersMode::Fallback,
        };
        self.rep().referrers_mode = Some(mode);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.opts.jobs.max(1))
            .build()
            .map_err(|e| PublishError::Release { message: format!("cannot start worker threads: {e}") })?;
        let this = &*self;
        pool.install(|| {
            use rayon::prelude::*;
            names.par_iter().try_for_each(|name| this.blobs(name, &this.target.repository(name), reporter))?;
            names.par_iter().try_for_each(|name| {
                let repo = this.target.repository(name);
                this.manifests(name, &repo)?;
                this.signature_tags(name, &repo)?;
                if mode == ReferrersMode::Fallback {
                    this.fallback_indexes(name, &repo)?;
                }
                this.rep().referrers += this.placement.repos[name].referrers.len();
                for note in this.client.take_notes() {
                    reporter.event(Event::Note { message: format!("{}: {note}", this.target) });
                }
                reporter.event(Event::JobFinished {
                    stage: Stage::Publish,
                    job: repo.clone(),
                    detail: format!("{} by digest", this.target.host),
                });
                Ok::<(), PublishError>(())
            })
        })?;
        reporter.event(Event::StageFinished { stage: Stage::Publish });
        Ok(())
    }

    fn blobs(&self, name: &str, repo: &str, reporter: &dyn Reporter) -> Result<(), PublishError> {
        let blobs: Vec<(Digest, u64)> = self.placement.repos[name].blobs.iter().map(|(d, s)| (d.clone(), *s)).collect();
        for (digest, size) in blobs {
            self.rep().blobs += 1;
            let step = format!("blob {repo} {digest}");
            if self.j().is_done(&step) {
                self.have().entry(digest).or_insert_with(|| repo.to_owned());
                continue;
            }
            if unanswered(self.client.blob_exists(repo, &digest))?.is_some() {
                self.rep().blobs_present += 1;
            } else {
                let from = self.have().get(&digest).cloned();
                let mounted = match from {
                    Some(from) if from != repo => self.client.mount_blob(repo, &digest, &from)? == Mount::Mounted,
                    _ => false,
                };
                if !mounted {
                    let path = self.layout.blob_path(&digest);
                    self.client.upload_blob(repo, &digest, &path, size, self.opts.chunk_size)?;
                    reporter.event(Event::JobFinished { stage: Stage::Publish, job: format!("{repo} blob"), detail: digest.to_string() });
                }
            }
            self.have().entry(digest).or_insert_with(|| repo.to_owned());
            self.j().record(step)?;
        }
        Ok(())
    }

    fn manifests(&self, name: &str, repo: &str) -> Result<(), PublishError> {
        let manifests = self.placement.repos[name].manifests.clone();
        for (digest, media_type) in manifests {
            let step = format!("manifest {repo} {digest}");
            if self.j().is_done(&step) {
                continue;
            }
            if unanswered(self.client.head_manifest(repo, digest.as_str()))?.is_some_and(|d| d.is_empty() || d == digest.as_str()) {
                self.rep().manifests_present += 1;
            } else {
                let bytes = self.layout.read_blob(&digest)?;
                self.client.put_manifest(repo, digest.as_str(), &bytes, &media_type)?;
                self.rep().manifests_put += 1;
            }
            self.j().record(step)?;
        }
        Ok(())
    }

    /// cosign's `sha256-<hex>.sig` tags, merged with the signatures already under the tag.
    fn signature_tags(&self, name: &str, repo: &str) -> Result<(), PublishError> {
        let tags = self.placement.repos[name].sig_tags.clone();
        for (tag, digest) in tags {
            let step = format!("sig-tag {repo} {tag} {digest}");
            if self.j().is_done(&step) {
                continue;
            }
            let ours: oci::Manifest = self.layout.read_json(&digest, "a signature manifest")?;
            let existing = unanswered(self.client.get_manifest(repo, &tag))?;
            let merged = match existing {
                Some(f) if f.digest == digest => None,
                Some(f) => match serde_json::from_slice::<oci::Manifest>(&f.bytes) {
                    Ok(mut theirs) => {
                        let missing: Vec<Descriptor> = ours.layers.iter().filter(|l| !theirs.layers.contains(l)).cloned().collect();
                        if missing.is_empty() {
                            None
                        } else {
                            // Their layers stay; ours are added (blobs are already pushed).
                            theirs.layers.extend(missing);
                            Some(serde_json::to_vec(&theirs).map_err(|e| place_err(self.layout, e.to_string()))?)
                        }
                    }
                    // Not a manifest we can merge into: ours replaces it.
                    Err(_) => Some(self.layout.read_blob(&digest)?),
                },
                None => Some(self.layout.read_blob(&digest)?),
            };
            if let Some(bytes) = merged {
                self.client.put_manifest(repo, &tag, &bytes, oci::MEDIA_MANIFEST)?;
                self.rep().signature_tags_written += 1;
            }
            self.j().record(step)?;
        }
        Ok(())
    }

    /// The referrers tag schema: for each subject, the index under `sha256-<hex>` lists every
    /// referrer with its `artifactType` and annotations; merged with what is there.
    fn fallback_indexes(&self, name: &str, repo: &str) -> Result<(), PublishError> {
        let mut by_subject: BTreeMap<Digest, Vec<Descriptor>> = BTreeMap::new();
        for r in &self.placement.repos[name].referrers {
            by_subject.entry(r.subject.digest.clone()).or_default().push(r.descriptor.clone());
        }
        for (subject, ours) in by_subject {
            let tag = fallback_tag(&subject);
            let step = format!("fallback {repo} {tag} {}", Digest::of(serde_json::to_string(&ours).unwrap_or_default().as_bytes()));
            if self.j().is_done(&step) {
                continue;
            }
            let existing = unanswered(self.client.get_manifest(repo, &tag))?;
            let mut manifests: Vec<Descriptor> = Vec::new();
            if let Some(f) = &existing {
                let v: serde_json::Value = serde_json::from_slice(&f.bytes).unwrap_or_default();
                for d in v["manifests"].as_array().into_iter().flatten() {
                    // Lenient: an entry we cannot read as a descriptor is dropped.
                    let Ok(mut d) = serde_json::from_value::<Descriptor>(d.clone()) else { continue };
                    if ours.iter().any(|o| o.digest == d.digest) || manifests.iter().any(|m| m.digest == d.digest) {
                        continue;
                    }
                    if d.artifact_type.is_none() {
                        self.repair(repo, &mut d)?;
                    }
                    manifests.push(d);
                }
            }
            manifests.extend(ours);
            let index = Index { schema_version: 2, media_type: Some(oci::MEDIA_INDEX.to_owned()), manifests, annotations: BTreeMap::new() };
            let bytes = serde_json::to_vec(&index).map_err(|e| place_err(self.layout, e.to_string()))?;
            if existing.as_ref().map(|f| &f.bytes) != Some(&bytes) {
                self.client.put_manifest(repo, &tag, &bytes, oci::MEDIA_INDEX)?;
                self.rep().fallback_indexes_written += 1;
            }
            self.j().record(step)?;
        }
        Ok(())
    }

    /// Pulls up `artifactType` (else the config's media type) and annotations from the
    /// manifest a fallback entry lists (sigstore/cosign#4641 left them out).
    fn repair(&self, repo: &str, d: &mut Descriptor) -> Result<(), PublishError> {
        if let Some(f) = self.client.get_manifest(repo, d.digest.as_str())? {
            let v: serde_json::Value = serde_json::from_slice(&f.bytes).unwrap_or_default();
            d.artifact_type = v["artifactType"].as_str().or(v["config"]["mediaType"].as_str()).map(str::to_owned);
            if let Some(a) = v["annotations"].as_object() {
                d.annotations = a.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect();
            }
        }
        Ok(())
    }

    /// Step 4: every manifest resolves by digest, every blob exists, every referrer is listed.
    pub fn check(&mut self) -> Result<(), PublishError> {
        let mut problems = Vec::new();
        let mode = self.rep().referrers_mode.unwrap_or(ReferrersMode::Fallback);
        for (name, plan) in &self.placement.repos {
            let repo = self.target.repository(name);
            for (d, _) in &plan.manifests {
                match self.client.head_manifest(&repo, d.as_str())? {
                    Some(got) if got.is_empty() || got == d.as_str() => {}
                    Some(got) => problems.push(format!("`{repo}@{d}` resolves to `{got}`")),
                    None => problems.push(format!("`{repo}@{d}` is missing")),
                }
            }
            for d in plan.blobs.keys() {
                if self.client.blob_exists(&repo, d)?.is_none() {
                    problems.push(format!("blob `{d}` is missing from `{repo}`"));
                }
            }
            for (tag, d) in &plan.sig_tags {
                if self.client.head_manifest(&repo, tag)?.is_none() {
                    problems.push(format!("`{repo}:{tag}` (signature of {d}) is missing"));
                }
            }
            let mut listed: BTreeMap<Digest, Vec<Descriptor>> = BTreeMap::new();
            for r in &plan.referrers {
                if !listed.contains_key(&r.subject.digest) {
                    let l = list_referrers(self.client, &repo, &r.subject.digest, mode)?;
                    listed.insert(r.subject.digest.clone(), l);
                }
                let found = listed[&r.subject.digest].iter().find(|d| d.digest == r.descriptor.digest);
                match found {
                    Some(d) if d.artifact_type == r.descriptor.artifact_type => {}
                    Some(d) => problems.push(format!(
                        "referrer `{}` of `{repo}@{}` is listed with artifactType `{}`, not `{}`",
                        r.descriptor.digest,
                        r.subject.digest,
                        d.artifact_type.as_deref().unwrap_or("none"),
                        r.descriptor.artifact_type.as_deref().unwrap_or("none")
                    )),
                    None => problems
                        .push(format!("referrer `{}` of `{repo}@{}` is not listed ({mode:?})", r.descriptor.digest, r.subject.digest)),
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PublishError::Incomplete { target: self.target.to_string(), problems })
        }
    }

    /// Step 5: the human-readable tags, on every root. Only after [`Session::check`] passed.
    pub fn tag(&mut self, tags: &[String]) -> Result<(), PublishError> {
        for (name, plan) in &self.placement.repos {
            let repo = self.target.repository(name);
            for (root, (digest, media_type)) in &plan.roots {
                let bytes = self.layout.read_blob(digest)?;
                for t in tags {
                    if unanswered(self.client.head_manifest(&repo, t))?.as_deref() != Some(digest.as_str()) {
                        self.client.put_manifest(&repo, t, &bytes, media_type)?;
                        crate::pause::at("publish:tagged-one");
                    }
                    self.rep().tags.push(format!("{repo}:{t} ({root}) -> {digest}"));
                }
            }
        }
        self.j().record(format!("tagged {}", tags.join(",")))?;
        Ok(())
    }

    pub fn report(&self) -> PushReport {
        let mut r = self.rep().clone();
        r.resumed_steps = self.j().resumed;
        r.requests = self.client.stats.requests.load(Ordering::Relaxed);
        r.retries = self.client.stats.retries.load(Ordering::Relaxed);
        r.blobs_uploaded = self.client.stats.blobs_uploaded.load(Ordering::Relaxed);
        r.bytes_uploaded = self.client.stats.bytes_uploaded.load(Ordering::Relaxed);
        r.blobs_mounted = self.client.stats.blobs_mounted.load(Ordering::Relaxed);
        r
    }
}

/// The referrers of `subject` in `repo`: from the API, or from the fallback index.
pub fn list_referrers(client: &Client, repo: &str, subject: &Digest, mode: ReferrersMode) -> Result<Vec<Descriptor>, DistError> {
    Ok(match mode {
        ReferrersMode::Api => client.referrers(repo, subject)?.map(|i| i.manifests).unwrap_or_default(),
        ReferrersMode::Fallback => match client.get_manifest(repo, &fallback_tag(subject))? {
            Some(f) => serde_json::from_slice::<Index>(&f.bytes).map(|i| i.manifests).unwrap_or_default(),
            None => Vec::new(),
        },
    })
}

/// A read that only decides whether to write (is the blob, manifest or tag there?), with a 5xx
/// that outlasted the retries taken as "not there": the write that follows rewrites it, and
/// step 4 reads everything back. A registry whose disk filled up answers 500 to a blob, manifest
/// or tag whose link file the full disk left empty, until it is written again.
fn unanswered<T>(read: Result<Option<T>, DistError>) -> Result<Option<T>, DistError> {
    match read {
        Err(DistError::Status { status, ref what, .. }) if status >= 500 => {
            tracing::warn!("{what}: the registry answered {status}: writing it again");
            Ok(None)
        }
        r => r,
    }
}

/// The journal of publishing `dir` to `target`: `<dir>/publish/<target>.journal`.
pub fn journal_path(dir: &Path, target: &RegistryTarget) -> PathBuf {
    dir.join("publish").join(format!("{}.journal", target.slug()))
}

/// Whether the journal at `path` records a finished publish (tags written).
pub fn journal_finished(path: &Path, layout: &Digest, target: &RegistryTarget) -> bool {
    let Ok(text) = fs::read_to_string(path) else { return false };
    let mut lines = text.lines();
    let same = lines
        .next()
        .and_then(|l| serde_json::from_str::<Header>(l).ok())
        .is_some_and(|h| &h.layout == layout && h.target == target.to_string());
    same && lines.any(|l| serde_json::from_str::<String>(l).is_ok_and(|s| s.starts_with("tagged ")))
}
