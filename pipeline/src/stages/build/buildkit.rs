//! The BuildKit backend: components whose recipe has a `dockerfile` are built by a Docker
//! engine's embedded BuildKit; the others fall through to [`Daemonless`].
//!
//! ```text
//! prepare: Dockerfile FROM lines vs base-images.lock ─► ping every endpoint ─► bases pushed
//!          to the mirror by digest (BuildKit pulls `mirror/<base>@sha256:...`)
//! job:     source (git objects) ─► context tar (sorted, epoch mtimes, normalized modes)
//!          ─► endpoint from the pool ─► POST /build?version=2, networkmode=none, tar exporter,
//!             SOURCE_DATE_EPOCH and STELLAOPS_* build args, no cache
//!          ─► exported rootfs tar ─► rootfs::diff_layer against the pinned base's layers
//!          ─► base layers + that layer + build::assemble (same config as daemonless)
//! ```
//!
//! 1. Never trust a daemon's layers: BuildKit in Docker 20.10 has no `oci` exporter and
//!    ignores SOURCE_DATE_EPOCH, and a daemon's compression would decide our digests. The
//!    filesystem comes out through the `tar` exporter and [`crate::stages::build::rootfs`] rewrites it.
//! 2. Endpoints form a pool: each builds at most `per_endpoint` jobs at once; an endpoint that
//!    fails its ping (before the build stage, or after a transport error mid-build) is dropped
//!    and its job retried on another; with none left, the error names each endpoint and why.
//! 3. Progress: BuildKit's status stream (vertices, logs) goes to the [`Reporter`]; a failed
//!    step is reported with the tail of its log.
//! 4. An engine is not trusted to be well-behaved ([`StreamLimits`]): a status stream that is
//!    not Docker's JSON, that exceeds the output bound, that falls silent past the idle bound
//!    or outlasts the build bound, or that names more steps than any Dockerfile has, takes its
//!    endpoint out of the pool at once (the job goes to another, as for a dead endpoint),
//!    naming what it did. A body that is not valid HTTP chunking reads as a lost connection
//!    (the health check decides, as in 2). Of the stream only the last
//!    [`LOG_TAIL`] lines of each step are kept, each cut at [`MAX_LINE`] bytes.
//!
//! 5. Shared cache (`--build-cache HOST:PORT/REPO`): Docker 20.10's BuildKit (the "docker"
//!    driver) exports only the *inline* cache, inside an image. The config build gets
//!    `BUILDKIT_INLINE_CACHE=1` and its image is pushed as `REPO/<component>:<os>-<arch>-inline-cache`
//!    before it is removed; the export build of any later job imports it (`cachefrom`) and
//!    may use the engine's own cache (`nocache` only without the flag). The cache decides
//!    which steps run, never the bytes: the rootfs is normalized as always, so the digests
//!    do not change, and the record names the cache and the steps taken from it. Not for a
//!    component with secret build arguments: the image's history carries their values.
//!
//! Endpoints are Docker engines, optionally keyed by the platforms they build
//! (`linux/arm64=unix:///...`): a socket (`unix:///path` or a path), or `tcp://HOST:PORT`
//! spoken to with mutual TLS only ([`TlsFiles`]: a CA, a client certificate and key; an
//! endpoint without them is refused, never spoken to in clear). A standalone `buildkitd` (its
//! Control API over gRPC) is not supported: Debian packages none, so there is nothing here to
//! test it against; its `tcp://` address would reach the Docker API client and fail the
//! health check.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bollard::models::BuildInfoAux;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion, ImageBuildOutput};
use bollard::Docker;
use futures_util::StreamExt;

use crate::stages::build::backend::{self as build, Backend, BuiltImage, Job, Record, StageBase};
use crate::stages::build::daemonless::Daemonless;
use crate::stages::build::dockerfile::{self, build_base_arg, Origin, BASE_ARG};
use crate::stages::build::error::{BuildError, BuildKitError};
use crate::stages::build::rootfs;
use oci::layer::{LayerWriter, Modes};
use oci::{self, Layout};
use schema::config::Config;
use schema::files::BaseSource;
use schema::model::Platform;
use schema::report::{Event, Reporter};

/// Lines of a failed step's log shown in the error (and all that is kept of a step's log).
const LOG_TAIL: usize = 20;
/// Longest log line kept (a longer one, or an unterminated one, is cut there).
const MAX_LINE: usize = 4096;
/// Most distinct steps (vertices) a build's status stream may name.
const MAX_VERTICES: usize = 10_000;
/// How long a health check may take.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Transport failures of one job before its endpoint is dropped even though it answers pings.
const MAX_TRANSPORT_FAILURES: u32 = 3;
/// How BuildKit names the vertex that imports a `cachefrom` reference.
const CACHE_IMPORT_VERTEX: &str = "importing cache manifest from ";
/// The value recorded for secret build arguments.
pub const REDACTED: &str = "<redacted>";

/// Bounds on one build's status stream: past any of them the engine is taken for broken or
/// hostile and leaves the pool (module doc, 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Longest silence of the engine during a build. BuildKit says nothing while a step runs
    /// without output, so this is long.
    pub idle: Duration,
    /// Longest build (one attempt, on one engine).
    pub total: Duration,
    /// Most status bytes (log text, step names, stream text) one build may send. BuildKit
    /// clips each step's log at 2 MiB by default, so a well-behaved engine stays far below.
    pub output: u64,
}

impl Default for StreamLimits {
    fn default() -> StreamLimits {
        StreamLimits { idle: Duration::from_secs(30 * 60), total: Duration::from_secs(6 * 3600), output: 256 << 20 }
    }
}

impl StreamLimits {
    /// The hidden test variable that lowers the bounds (`idle=SECS,total=SECS,output=BYTES`,
    /// any of them), so that tests need not wait half an hour; undocumented for users.
    pub const TEST_VAR: &'static str = "STELLAOPS_TEST_BUILDKIT_LIMITS";

    /// The defaults, with what [`Self::TEST_VAR`] sets.
    pub fn from_env() -> StreamLimits {
        let mut limits = StreamLimits::default();
        let spec = std::env::var(Self::TEST_VAR).unwrap_or_default();
        for (k, v) in spec.split(',').filter_map(|kv| kv.split_once('=')) {
            let Ok(n) = v.trim().parse::<u64>() else { continue };
            match k.trim() {
                "idle" => limits.idle = Duration::from_secs(n),
                "total" => limits.total = Duration::from_secs(n),
                "output" => limits.output = n,
                _ => {}
            }
        }
        limits
    }
}

/// Options of the BuildKit backend (CLI: `--backend buildkit`, `--builder`, `--base-mirror`,
/// `--builder-tls-*`, `--build-cache`).
#[derive(Debug, Clone)]
pub struct BuildKitOptions {
    /// Docker engines: `unix:///path/docker.sock`, a path, or `tcp://HOST:PORT` (mutual TLS).
    pub endpoints: Vec<String>,
    /// Builds at once per endpoint.
    pub per_endpoint: usize,
    /// `host:port/path` of a registry into which the pinned bases are pushed by digest, for
    /// BuildKit to pull them from.
    pub base_mirror: Option<String>,
    /// The client's TLS material for `tcp://` endpoints (every one of them).
    pub tls: Option<TlsFiles>,
    /// `host:port/path` of a registry repository holding BuildKit's inline cache, shared by
    /// the endpoints of the pool (and by later releases).
    pub build_cache: Option<String>,
    /// Bounds on each build's status stream.
    pub limits: StreamLimits,
}

/// The files of a mutual-TLS client: the CA that signed the engines' certificates, and this
/// client's certificate and key (`DOCKER_CERT_PATH`'s `ca.pem`, `cert.pem`, `key.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `DIR/ca.pem`, `DIR/cert.pem`, `DIR/key.pem` (Docker's `DOCKER_CERT_PATH` layout).
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") }
    }

    /// Each file is readable and holds PEM (bollard reads the client certificate and key only
    /// during the handshake, where a missing file would go unnoticed and no certificate be
    /// sent).
    fn check(&self) -> Result<(), BuildKitError> {
        for (role, path) in [("CA certificate", &self.ca), ("client certificate", &self.cert), ("client key", &self.key)] {
            let message = match fs::read(path) {
                Ok(bytes) if bytes.windows(11).any(|w| w == b"-----BEGIN ") => continue,
                Ok(_) => "holds no PEM block".to_owned(),
                Err(e) => e.to_string(),
            };
            return Err(BuildKitError::TlsFile { role, path: path.clone(), message });
        }
        Ok(())
    }
}

/// The Docker engine's BuildKit, through a pool of endpoints.
pub struct BuildKit<'r> {
    opts: BuildKitOptions,
    pool: Pool,
    reporter: &'r dyn Reporter,
    /// What BuildKit pulls for `${STELLAOPS_BASE}`, by (base, platform); set by `prepare`.
    base_refs: Mutex<BTreeMap<(String, Platform), String>>,
}

impl std::fmt::Debug for BuildKit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildKit").field("opts", &self.opts).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct EndpointState {
    up: bool,
    busy: usize,
    why_down: String,
}

#[derive(Debug)]
struct Pool {
    /// Endpoint addresses (`unix:///...`).
    names: Vec<String>,
    /// The platforms each endpoint builds; `None` for every platform.
    platforms: Vec<Option<BTreeSet<Platform>>>,
    state: Mutex<Vec<EndpointState>>,
    freed: Condvar,
    per_endpoint: usize,
}

/// `[PLATFORM[,PLATFORM]=]ENDPOINT`: an endpoint, optionally keyed by the platforms it builds
/// (`linux/arm64=unix:///srv/arm/docker.sock` for a native arm64 engine).
pub fn parse_endpoint(spec: &str) -> Result<(String, Option<BTreeSet<Platform>>), BuildKitError> {
    let (platforms, address) = match spec.split_once('=') {
        Some((p, a)) => {
            let set = p
                .split(',')
                .map(|x| x.trim().parse::<Platform>())
                .collect::<Result<BTreeSet<_>, _>>()
                .map_err(|_| BuildKitError::BadEndpoint(spec.to_owned()))?;
            (Some(set), a)
        }
        None => (None, spec),
    };
    address_of(address)?;
    Ok((address.to_owned(), platforms))
}

impl Pool {
    fn new(specs: Vec<(String, Option<BTreeSet<Platform>>)>, per_endpoint: usize) -> Pool {
        let (names, platforms): (Vec<String>, Vec<_>) = specs.into_iter().unzip();
        let state = names.iter().map(|_| EndpointState { up: true, busy: 0, why_down: String::new() }).collect();
        Pool { names, platforms, state: Mutex::new(state), freed: Condvar::new(), per_endpoint: per_endpoint.max(1) }
    }

    fn serves(&self, i: usize, platform: Platform) -> bool {
        self.platforms[i].as_ref().is_none_or(|set| set.contains(&platform))
    }

    /// Every endpoint and why it cannot build `platform` (or why it is down).
    fn down_list(&self, state: &[EndpointState], platform: Option<Platform>) -> Vec<(String, String)> {
        self.names
            .iter()
            .enumerate()
            .zip(state)
            .map(|((i, n), s)| {
                let why = match (platform, &self.platforms[i]) {
                    (Some(p), Some(set)) if !set.contains(&p) => {
                        format!("builds only {}, not {p}", set.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                    }
                    _ => s.why_down.clone(),
                };
                (n.clone(), why)
            })
            .collect()
    }

    /// Whether some endpoint that is up builds `platform`.
    fn can_build(&self, platform: Platform) -> Result<(), BuildKitError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if (0..self.names.len()).any(|i| state[i].up && self.serves(i, platform)) {
            Ok(())
        } else {
            Err(BuildKitError::NoEndpoint(self.down_list(&state, Some(platform))))
        }
    }

    /// The least busy endpoint that is up and builds `platform`, waiting while all are at their
    /// limit.
    fn acquire(&self, platform: Platform) -> Result<usize, BuildKitError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !(0..self.names.len()).any(|i| state[i].up && self.serves(i, platform)) {
                return Err(BuildKitError::NoEndpoint(self.down_list(&state, Some(platform))));
            }
            let best = state
                .iter()
                .enumerate()
                .filter(|(i, s)| s.up && s.busy < self.per_endpoint && self.serves(*i, platform))
                .min_by_key(|(i, s)| (s.busy, *i))
                .map(|(i, _)| i);
            if let Some(i) = best {
                state[i].busy += 1;
                return Ok(i);
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn release(&self, i: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state[i].busy = state[i].busy.saturating_sub(1);
        self.freed.notify_all();
    }

    /// Takes endpoint `i` out of the pool; true if it was in.
    fn drop_endpoint(&self, i: usize, why: &str) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let was = state[i].up;
        state[i].up = false;
        state[i].why_down = why.to_owned();
        self.freed.notify_all();
        was
    }
}

/// Where an engine listens.
#[derive(Debug, PartialEq, Eq)]
enum Address {
    /// A socket path.
    Unix(String),
    /// `HOST:PORT`, spoken to with mutual TLS only.
    Tcp(String),
}

/// `unix:///x.sock` or `/x.sock` -> the socket path; `tcp://HOST:PORT` -> `HOST:PORT`.
fn address_of(endpoint: &str) -> Result<Address, BuildKitError> {
    if let Some(p) = endpoint.strip_prefix("unix://") {
        return Ok(Address::Unix(p.to_owned()));
    }
    if endpoint.starts_with('/') {
        return Ok(Address::Unix(endpoint.to_owned()));
    }
    if let Some(hp) = endpoint.strip_prefix("tcp://") {
        let hp = hp.trim_end_matches('/');
        let port_ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if port_ok && !hp.contains('/') {
            return Ok(Address::Tcp(hp.to_owned()));
        }
    }
    Err(BuildKitError::BadEndpoint(endpoint.to_owned()))
}

/// `HOST[:PORT]/REPOSITORY`, lower case, without a tag or digest (the pipeline adds the tag).
fn check_build_cache(cache: &str) -> Result<(), BuildKitError> {
    let bad = || BuildKitError::BadBuildCache(cache.to_owned());
    let (host, repo) = cache.trim_end_matches('/').split_once('/').ok_or_else(bad)?;
    let repo_ok = !repo.is_empty()
        && repo.split('/').all(|p| !p.is_empty())
        && repo.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-/".contains(ch));
    if host.is_empty() || host.contains('@') || !repo_ok {
        return Err(bad());
    }
    Ok(())
}

/// A readable reason for a failure to reach an engine: the error and its sources, with TLS
/// failures (rustls, through hyper) said as such.
fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.iter().any(|c| c.contains(&text)) {
            chain.push(text);
        }
        source = s.source();
    }
    let all = chain.join(": ");
    let lower = all.to_ascii_lowercase();
    let tls = if lower.contains("certificate") || lower.contains("received fatal alert") || lower.contains("handshake") {
        if lower.contains("unknownissuer") || lower.contains("unknown issuer") || lower.contains("invalid peer certificate") {
            Some("the engine's certificate was refused: it is not signed by the CA given (`--builder-tls-ca`)")
        } else {
            Some("the TLS handshake was refused: the engine did not accept the client certificate (signed by a CA it does not trust?)")
        }
    } else {
        None
    };
    // An engine that dies mid-build (killed, its machine gone) shows as a reset or an EOF.
    let lost = ["connection reset", "unexpected eof", "broken pipe", "connection closed"];
    match tls {
        Some(why) => format!("{why} ({all})"),
        // hyper says no more when a body breaks off, or when it is not valid HTTP chunking.
        None if lower.contains("error reading a body") => {
            format!("the connection to the engine was lost, or its answer is not valid HTTP ({all})")
        }
        None if lost.iter().any(|l| lower.contains(l)) => format!("the connection to the engine was lost ({all})"),
        None => all,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, BuildKitError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BuildKitError::Io { path: PathBuf::from("<tokio runtime>"), source })
}

/// A client of the engine at `host_port` over mutual TLS that trusts the CA of `tls` alone.
///
/// Written here rather than bollard's `connect_with_ssl`, which adds the system's root
/// certificates to the CA given: any engine with a publicly signed certificate for the name
/// would then pass for a builder. The client certificate is sent on every handshake.
fn mutual_tls(host_port: &str, tls: &TlsFiles) -> Result<Docker, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pem_err = |role: &str, path: &Path, e: rustls_pki_types::pem::Error| format!("the {role} `{}`: {e}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&tls.ca).map_err(|e| pem_err("CA certificate", &tls.ca, e))? {
        roots
            .add(c.map_err(|e| pem_err("CA certificate", &tls.ca, e))?)
            .map_err(|e| format!("the CA certificate `{}`: {e}", tls.ca.display()))?;
    }
    let chain = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| pem_err("client certificate", &tls.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("client certificate", &tls.cert, e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| pem_err("client key", &tls.key, e))?;
    // The provider is named: with `tough` in the build, rustls has both `ring` and `aws-lc-rs`
    // compiled in and cannot pick a process default by itself.
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the client certificate `{}` and key `{}`: {e}", tls.cert.display(), tls.key.display()))?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnector::from((http, config));
    let mut builder = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.pool_max_idle_per_host(0);
    let client = builder.build(https);
    let transport = move |req: bollard::BollardRequest| {
        let client = client.clone();
        async move { client.request(req).await.map_err(bollard::errors::Error::from) }
    };
    Docker::connect_with_custom_transport(transport, Some(format!("https://{host_port}")), 3600, bollard::API_DEFAULT_VERSION)
        .map_err(|e| reason(&e))
}

/// A client of the engine at `endpoint` that answered its version and a ping. A `tcp://`
/// endpoint is spoken to over mutual TLS only (`tls`, checked by the health check).
async fn connect(endpoint: &str, tls: Option<&TlsFiles>) -> Result<Docker, String> {
    let docker = match address_of(endpoint).map_err(|e| e.to_string())? {
        Address::Unix(path) => Docker::connect_with_unix(&path, 3600, bollard::API_DEFAULT_VERSION).map_err(|e| reason(&e))?,
        Address::Tcp(host_port) => {
            let tls = tls.ok_or_else(|| "a `tcp://` endpoint needs TLS material".to_owned())?;
            mutual_tls(&host_port, tls)?
        }
    };
    let docker = tokio::time::timeout(PING_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| format!("no answer within {}s", PING_TIMEOUT.as_secs()))?
        .map_err(|e| reason(&e))?;
    tokio::time::timeout(PING_TIMEOUT, docker.ping())
        .await
        .map_err(|_| format!("no answer to ping within {}s", PING_TIMEOUT.as_secs()))?
        .map_err(|e| reason(&e))?;
    Ok(docker)
}

/// The health check: the engine answers a ping and its version.
fn ping(endpoint: &str, tls: Option<&TlsFiles>) -> Result<(), String> {
    let rt = runtime().map_err(|e| e.to_string())?;
    rt.block_on(connect(endpoint, tls)).map(|_| ())
}

/// Build arguments: as passed to BuildKit, and as recorded (secrets redacted).
struct BuildArgs {
    passed: BTreeMap<String, String>,
    recorded: BTreeMap<String, String>,
}

/// One build, as sent to an endpoint.
#[derive(Clone, Copy)]
struct Request<'a> {
    job_name: &'a str,
    /// The build context: a gzip tar of the source.
    context: &'a [u8],
    dockerfile: &'a str,
    platform: Platform,
    args: &'a BTreeMap<String, String>,
    /// Where the `tar` exporter writes the rootfs; `None` for the config build (the engine's
    /// image exporter, tagged `tag`, steps from the cache, no progress reported).
    export: Option<&'a Path>,
    tag: Option<&'a str>,
    /// The inline cache (`--build-cache`): the export build imports it (`cachefrom`), the
    /// config build carries it in its image (`BUILDKIT_INLINE_CACHE=1`) to be pushed there.
    cache: Option<&'a str>,
}

/// What an export build tells besides its rootfs: the steps the engine did not run.
struct Outcome {
    cached_steps: Vec<String>,
}

/// Why one attempt failed: the endpoint (retry elsewhere) or the build (fail the job).
enum Attempt {
    Endpoint(String),
    /// The engine misbehaved (garbage, endless output, silence): it leaves the pool at once.
    Hostile(String),
    /// The build went through but its cache could not be pushed (fails the job: the cache
    /// was asked for).
    CachePush(String),
    Build {
        step: Option<String>,
        message: String,
        log: Vec<String>,
    },
}

/// One vertex (step) of the build, as the status stream tells it.
#[derive(Default)]
struct Vertex {
    name: String,
    started: bool,
    done: bool,
    error: String,
    log: Vec<String>,
    partial: String,
}

impl<'r> BuildKit<'r> {
    pub fn new(opts: BuildKitOptions, reporter: &'r dyn Reporter) -> BuildKit<'r> {
        // Specs are checked in `prepare` (health check); one that does not parse is kept as
        // its own address and refused there.
        let specs = opts.endpoints.iter().map(|e| parse_endpoint(e).unwrap_or_else(|_| (e.clone(), None))).collect();
        let pool = Pool::new(specs, opts.per_endpoint);
        BuildKit { opts, pool, reporter, base_refs: Mutex::new(BTreeMap::new()) }
    }

    fn note(&self, message: String) {
        self.reporter.event(Event::Note { message });
    }

    /// Pings every endpoint; those that do not answer leave the pool.
    fn health_check(&self) -> Result<(), BuildKitError> {
        if self.opts.endpoints.is_empty() {
            return Err(BuildKitError::NoEndpoint(vec![(
                "(none)".to_owned(),
                "no endpoint given and `DOCKER_HOST` is not set".to_owned(),
            )]));
        }
        // Every endpoint parses, and a `tcp://` one has readable TLS material: never a Docker
        // API in clear, never a handshake that silently sends no client certificate.
        if let Some(cache) = &self.opts.build_cache {
            check_build_cache(cache)?;
        }
        let mut checked_tls = false;
        for spec in &self.opts.endpoints {
            let (address, _) = parse_endpoint(spec)?;
            if let Address::Tcp(_) = address_of(&address)? {
                let tls = self.opts.tls.as_ref().ok_or_else(|| BuildKitError::NoTls(address.clone()))?;
                if !checked_tls {
                    tls.check()?;
                    checked_tls = true;
                }
            }
        }
        for i in 0..self.opts.endpoints.len() {
            let e = &self.pool.names[i];
            match ping(e, self.opts.tls.as_ref()) {
                Ok(()) => self.note(format!("builder `{e}`: up")),
                Err(why) => {
                    self.pool.drop_endpoint(i, &why);
                    self.note(format!("builder `{e}` is down ({why}): dropped from the pool"));
                }
            }
        }
        let state = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.iter().all(|s| !s.up) {
            return Err(BuildKitError::NoEndpoint(self.pool.down_list(&state, None)));
        }
        Ok(())
    }

    /// The reference BuildKit pulls for base `base` on `platform`.
    fn base_ref(
        &self,
        cfg: &Config,
        base: &str,
        platform: Platform,
        layout: &Layout,
        digest: &schema::model::Digest,
    ) -> Result<String, BuildKitError> {
        if let Some(mirror) = &self.opts.base_mirror {
            let repo = format!("{}/{base}", mirror.trim_end_matches('/'));
            oci::registry::push_manifest(layout, digest, &repo).map_err(|source| BuildKitError::Mirror {
                base: base.to_owned(),
                platform,
                source,
            })?;
            return Ok(format!("{repo}@{digest}"));
        }
        let b = cfg.base(base).expect("planned bases exist");
        match (b.source, b.platforms.get(&platform).and_then(|p| p.reference.as_ref())) {
            (BaseSource::Registry, Some(r)) => Ok(format!("{}/{}@{}", r.registry, r.repository, r.digest)),
            _ => Err(BuildKitError::NoBaseSource { base: base.to_owned(), platform }),
        }
    }

    fn build_args(&self, job: &Job<'_>) -> Result<BuildArgs, BuildKitError> {
        let c = job.component;
        let plan = job.plan;
        let platform = job.image.platform;
        let mut args: BTreeMap<String, String> = c.recipe.build_args.clone();
        let base_ref = self.base_refs.lock().unwrap_or_else(|e| e.into_inner()).get(&(job.base.name.clone(), platform)).cloned();
        if let Some(r) = base_ref {
            args.insert(BASE_ARG.to_owned(), r);
        }
        // `recipe.build-bases`: each pinned for the platform, pushed in `prepare`.
        for b in &job.build_bases {
            let r = self.base_refs.lock().unwrap_or_else(|e| e.into_inner()).get(&(b.name.clone(), platform)).cloned();
            if let Some(r) = r {
                args.insert(build_base_arg(&b.name), r);
            }
        }
        for (k, v) in [
            ("SOURCE_DATE_EPOCH", c.stamp.epoch.to_string()),
            ("STELLAOPS_COMPONENT", c.name.clone()),
            ("STELLAOPS_VERSION", c.version.clone()),
            ("STELLAOPS_RELEASE", plan.version.to_string()),
            ("STELLAOPS_CHANNEL", plan.channel.to_string()),
            ("STELLAOPS_CALENDAR", plan.version.calendar.to_string()),
            ("STELLAOPS_PLATFORM", platform.to_string()),
            ("STELLAOPS_ARCH", platform.arch().to_owned()),
        ] {
            args.insert(k.to_owned(), v);
        }
        let mut recorded = args.clone();
        for name in &c.recipe.secret_build_args {
            let value = std::env::var(name).map_err(|_| BuildKitError::MissingSecret { component: c.name.clone(), name: name.clone() })?;
            args.insert(name.clone(), value);
            recorded.insert(name.clone(), REDACTED.to_owned());
        }
        Ok(BuildArgs { passed: args, recorded })
    }

    /// One build on one endpoint: the exported rootfs lands in `export`.
    async fn attempt(&self, endpoint: &str, req: &Request<'_>) -> Result<Outcome, Attempt> {
        let docker = connect(endpoint, self.opts.tls.as_ref()).await.map_err(Attempt::Endpoint)?;
        self.run_build(&docker, req).await
    }

    /// Where the inline cache of `component` for `platform` lives under `--build-cache`: one
    /// tag per component and platform, the same from release to release (each release's
    /// push replaces it).
    fn cache_ref(&self, component: &str, platform: Platform) -> Option<String> {
        self.opts.build_cache.as_ref().map(|c| {
            format!("{}/{}:{}-inline-cache", c.trim_end_matches('/'), component.to_ascii_lowercase(), platform.as_str().replace('/', "-"))
        })
    }

    /// Tags the config build's image `tag` as `reference` (the cache), pushes it, and removes
    /// that tag again; returns `reference@digest` as pushed.
    async fn push_cache(&self, docker: &Docker, tag: &str, reference: &str) -> Result<String, String> {
        use bollard::query_parameters::{PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder};
        let (repo, cache_tag) = reference.rsplit_once(':').ok_or_else(|| format!("`{reference}` has no tag"))?;
        docker
            .tag_image(tag, Some(TagImageOptionsBuilder::new().repo(repo).tag(cache_tag).build()))
            .await
            .map_err(|e| format!("tagging: {}", reason(&e)))?;
        // Anonymous credentials: engine 20.10 refuses a push without an `X-Registry-Auth`.
        let mut stream = docker.push_image(
            repo,
            Some(PushImageOptionsBuilder::new().tag(cache_tag).build()),
            Some(bollard::auth::DockerCredentials::default()),
        );
        let mut pushed: Result<String, String> = Err("the engine reported no digest".to_owned());
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        pushed = Err(e);
                        break;
                    }
                    // `<tag>: digest: sha256:... size: N`
                    if let Some(d) =
                        info.status.as_deref().and_then(|s| s.split("digest: ").nth(1)).and_then(|s| s.split_whitespace().next())
                    {
                        pushed = Ok(format!("{repo}@{d}"));
                    }
                }
                Err(e) => {
                    pushed = Err(reason(&e));
                    break;
                }
            }
        }
        let untagged = docker.remove_image(reference, Some(RemoveImageOptionsBuilder::new().noprune(true).build()), None).await;
        if let Err(e) = untagged {
            self.note(format!("could not remove the tag `{reference}` after pushing it: {e}"));
        }
        pushed
    }

    /// The config `docker build` gives the Dockerfile: the same build again (same context,
    /// Dockerfile, build arguments, platform, no network) through the engine's own image
    /// exporter under a temporary tag, every step a cache hit of the build just made; the
    /// image's config is read back and the image removed, whatever happened.
    ///
    /// Why a second build: the engine (dockerd 20.10's BuildKit) runs one exporter per build,
    /// and the `tar` exporter returns no config. The config is computed by the Dockerfile
    /// frontend from the Dockerfile and the base's config alone, so it does not depend on
    /// whether a step came from the cache.
    ///
    /// With `--build-cache`, the image also carries BuildKit's inline cache (its config holds
    /// the cache keys of every step; the layers are the steps' results) and is pushed to the
    /// cache reference before it is removed: returned as `reference@digest`.
    async fn image_config(&self, endpoint: &str, req: &Request<'_>, component: &str) -> Result<(oci::RunConfig, Option<String>), Attempt> {
        use bollard::query_parameters::RemoveImageOptionsBuilder;
        let docker = connect(endpoint, self.opts.tls.as_ref()).await.map_err(Attempt::Endpoint)?;
        static TAGS: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let tag = format!(
            "stellaops-tmp/{}:{:x}{:08x}{:x}",
            component.to_ascii_lowercase(),
            std::process::id(),
            nanos,
            TAGS.fetch_add(1, Ordering::Relaxed)
        );
        let built = self.run_build(&docker, &Request { export: None, tag: Some(&tag), ..*req }).await;
        let inspected = match built {
            Ok(_) => docker.inspect_image(&tag).await.map_err(|e| Attempt::Endpoint(format!("inspecting `{tag}`: {}", reason(&e)))),
            Err(e) => Err(e),
        };
        let pushed = match (&inspected, req.cache) {
            (Ok(_), Some(reference)) => Some(self.push_cache(&docker, &tag, reference).await),
            _ => None,
        };
        // Removed even when the build or the inspection failed (a missing image is fine).
        let removed = docker.remove_image(&tag, Some(RemoveImageOptionsBuilder::new().force(true).noprune(false).build()), None).await;
        if let (Ok(_), Err(e)) = (&inspected, &removed) {
            self.note(format!("builder `{endpoint}`: could not remove the temporary image `{tag}`: {e}"));
        }
        // An image without a config would sign an image that runs as nobody asked: refuse it.
        let config = inspected?.config.ok_or_else(|| Attempt::Build {
            step: None,
            message: format!("the engine's image `{tag}` has no config to read the Dockerfile's settings from"),
            log: Vec::new(),
        })?;
        let pushed = pushed.transpose().map_err(Attempt::CachePush)?;
        Ok((run_config(config), pushed))
    }

    /// Sends one build and follows its status stream to the end.
    async fn run_build(&self, docker: &Docker, req: &Request<'_>) -> Result<Outcome, Attempt> {
        let Request { job_name, context, dockerfile, platform, args, export, tag, cache } = *req;
        let report = export.is_some();
        let mut buildargs = args.clone();
        if cache.is_some() && export.is_none() {
            // The cache keys go into the image's config, which is pushed as the cache.
            buildargs.insert("BUILDKIT_INLINE_CACHE".to_owned(), "1".to_owned());
        }
        static SESSIONS: AtomicU64 = AtomicU64::new(0);
        let session = format!("stellaops-{}-{}", std::process::id(), SESSIONS.fetch_add(1, Ordering::Relaxed));
        let options = BuildImageOptions {
            dockerfile: dockerfile.to_owned(),
            // Hermetic: RUN steps get no network; a release reuses no cache unless it was
            // asked to (`--build-cache`: the registry's inline cache, and the engine's own).
            networkmode: Some("none".to_owned()),
            // The config build reuses the steps the release build just made.
            nocache: export.is_some() && cache.is_none(),
            cachefrom: cache.filter(|_| export.is_some()).map(|c| vec![c.to_owned()]),
            rm: true,
            forcerm: true,
            platform: platform.to_string(),
            buildargs: Some(buildargs.into_iter().collect()),
            version: BuilderVersion::BuilderBuildKit,
            session: Some(session),
            outputs: export.map(|e| ImageBuildOutput::Tar(e.display().to_string())),
            t: tag.map(str::to_owned),
            ..Default::default()
        };
        let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.to_vec().into())));
        let mut vertices: BTreeMap<String, Vertex> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut failure: Option<String> = None;
        let mut cached_steps: Vec<String> = Vec::new();
        let limits = self.opts.limits;
        let started = tokio::time::Instant::now();
        let mut output: u64 = 0;
        loop {
            // Every wait is bounded: by the idle bound, and by what is left of the build bound.
            let left = limits.total.saturating_sub(started.elapsed());
            let item = match tokio::time::timeout(limits.idle.min(left), stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) if left <= limits.idle => {
                    return Err(Attempt::Hostile(format!(
                        "the build of `{job_name}` ran past the bound of {} (`StreamLimits::total`)",
                        shown_duration(limits.total)
                    )))
                }
                Err(_) => {
                    return Err(Attempt::Hostile(format!(
                        "it sent nothing for {} during the build of `{job_name}` (stalled; bound: `StreamLimits::idle`)",
                        shown_duration(limits.idle)
                    )))
                }
            };
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    use bollard::errors::Error as E;
                    match e {
                        E::DockerStreamError { error } => {
                            failure = Some(error);
                            break;
                        }
                        E::DockerResponseServerError { message, .. } => {
                            failure = Some(message);
                            break;
                        }
                        E::JsonDataError { message, .. } => {
                            return Err(Attempt::Hostile(format!(
                                "its answer to the build of `{job_name}` is not Docker's JSON status stream ({})",
                                quote(&message)
                            )))
                        }
                        E::JsonSerdeError { err } => {
                            return Err(Attempt::Hostile(format!(
                                "its answer to the build of `{job_name}` is not Docker's JSON status stream ({})",
                                quote(&err.to_string())
                            )))
                        }
                        // A body that breaks off and one that is not HTTP (bad chunking) read
                        // the same through bollard, which keeps only hyper's outer message: a
                        // transport failure, retried as for an engine that died.
                        other => return Err(Attempt::Endpoint(reason(&other))),
                    }
                }
            };
            // What the engine sent, counted against the output bound.
            output = output.saturating_add(status_bytes(&info));
            if output > limits.output {
                return Err(Attempt::Hostile(format!(
                    "it sent more than {} of build output for `{job_name}` (endless logs?; bound: `StreamLimits::output`)",
                    shown_bytes(limits.output)
                )));
            }
            if let Some(d) = info.error_detail.and_then(|d| d.message) {
                failure = Some(d);
            }
            let Some(BuildInfoAux::BuildKit(status)) = info.aux else {
                continue;
            };
            if vertices.len() + status.vertexes.len() + status.logs.len() > MAX_VERTICES
                && status.vertexes.iter().map(|v| &v.digest).chain(status.logs.iter().map(|l| &l.vertex)).any(|d| !vertices.contains_key(d))
            {
                return Err(Attempt::Hostile(format!(
                    "its status stream for `{job_name}` names more than {MAX_VERTICES} steps (no Dockerfile has that many)"
                )));
            }
            for v in status.vertexes {
                let entry = vertices.entry(v.digest.clone()).or_insert_with(|| {
                    order.push(v.digest.clone());
                    Vertex::default()
                });
                entry.name = v.name.clone();
                if !report {
                    entry.done |= v.completed.is_some();
                    entry.error.clone_from(&v.error);
                    continue;
                }
                // A cache hit is reported once, as `cached`: the engine sends it again with a
                // start and completion time, which are not a run.
                if v.cached {
                    if !entry.done {
                        entry.done = true;
                        entry.started = true;
                        cached_steps.push(v.name.clone());
                        self.reporter.event(Event::Step { job: job_name.to_owned(), step: v.name.clone(), status: "cached".to_owned() });
                    }
                    continue;
                }
                if v.started.is_some() && !entry.started {
                    entry.started = true;
                    self.reporter.event(Event::Step { job: job_name.to_owned(), step: v.name.clone(), status: "started".to_owned() });
                }
                if v.completed.is_some() && !entry.done {
                    entry.done = true;
                    entry.error = v.error.clone();
                    self.reporter.event(Event::Step {
                        job: job_name.to_owned(),
                        step: v.name.clone(),
                        status: if v.error.is_empty() { "done".to_owned() } else { "failed".to_owned() },
                    });
                }
            }
            for l in status.logs {
                let entry = vertices.entry(l.vertex.clone()).or_insert_with(|| {
                    order.push(l.vertex.clone());
                    Vertex::default()
                });
                entry.partial.push_str(&String::from_utf8_lossy(&l.msg));
                loop {
                    // A line ends at a newline, or is cut at `MAX_LINE` bytes.
                    let end = match entry.partial.find('\n') {
                        Some(i) if i < MAX_LINE => i + 1,
                        _ if entry.partial.len() >= MAX_LINE => floor_char_boundary(&entry.partial, MAX_LINE),
                        _ => break,
                    };
                    let line: String = entry.partial.drain(..end).collect();
                    let line = line.trim_end().to_owned();
                    if report {
                        self.reporter.event(Event::Log { job: job_name.to_owned(), step: entry.name.clone(), line: line.clone() });
                    }
                    entry.log.push(line);
                    if entry.log.len() > LOG_TAIL {
                        entry.log.remove(0);
                    }
                }
            }
        }
        // BuildKit names the cache import `importing cache manifest from REF`; a cache not
        // there yet (the first build) fails that vertex, not the build: every step runs.
        let is_cache_import = |v: &Vertex| v.name.starts_with(CACHE_IMPORT_VERTEX);
        if report {
            if let Some(v) = order.iter().filter_map(|d| vertices.get(d)).find(|v| is_cache_import(v) && !v.error.is_empty()) {
                self.note(format!("`{job_name}`: no build cache imported ({}): every step runs", v.error));
            }
        }
        let failed_vertex = order.iter().filter_map(|d| vertices.get(d)).find(|v| !v.error.is_empty() && !is_cache_import(v));
        match (failure, failed_vertex) {
            (None, None) if export.is_none_or(Path::is_file) => Ok(Outcome { cached_steps }),
            (None, None) => Err(Attempt::Endpoint("the build ended without a result (connection lost?)".to_owned())),
            (message, Some(v)) => {
                let mut log = v.log.clone();
                if !v.partial.trim().is_empty() {
                    log.push(v.partial.trim_end().to_owned());
                }
                Err(Attempt::Build { step: Some(v.name.clone()), message: message.unwrap_or_else(|| v.error.clone()), log })
            }
            (Some(message), None) => Err(Attempt::Build { step: None, message, log: Vec::new() }),
        }
    }
}

/// The bytes of a status message that count against [`StreamLimits::output`]: its texts and,
/// of BuildKit's status, step names, errors and log bytes.
fn status_bytes(info: &bollard::models::BuildInfo) -> u64 {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let mut n = text(&info.stream) + text(&info.status) + text(&info.id);
    if let Some(BuildInfoAux::BuildKit(status)) = &info.aux {
        n += status.vertexes.iter().map(|v| v.name.len() + v.error.len() + v.digest.len()).sum::<usize>();
        n += status.logs.iter().map(|l| l.msg.len() + l.vertex.len()).sum::<usize>();
        n += status.statuses.iter().map(|s| s.id.len() + s.name.len()).sum::<usize>();
    }
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// At most 200 characters of what an engine said, on one line.
fn quote(text: &str) -> String {
    let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None => one_line,
    }
}

/// The largest char boundary of `s` above 0 and at or below `at` (`s`'s length if none).
fn floor_char_boundary(s: &str, at: usize) -> usize {
    (1..=at.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(s.len())
}

fn shown_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn shown_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Reads `path` of `commit` from the git repository at `repo`.
fn read_git_file(repo: &Path, commit: &str, path: &str) -> Result<String, String> {
    let r = git2::Repository::open(repo).map_err(|e| e.message().to_owned())?;
    let oid = git2::Oid::from_str(commit).map_err(|e| e.message().to_owned())?;
    let tree = r.find_commit(oid).and_then(|c| c.tree()).map_err(|e| e.message().to_owned())?;
    let entry = tree.get_path(Path::new(path)).map_err(|_| format!("`{path}` is not in commit `{}`", &commit[..12.min(commit.len())]))?;
    let blob = r.find_blob(entry.id()).map_err(|e| e.message().to_owned())?;
    String::from_utf8(blob.content().to_vec()).map_err(|_| "is not UTF-8".to_owned())
}

/// The Dockerfile `file` of `job`'s component as messages name it: its path in the repository,
/// after the git source's URL for a git source.
fn shown_dockerfile(job: &Job<'_>, file: &str) -> String {
    let in_repo = join_rel(job.subdir, file);
    match &job.component.source {
        crate::stages::plan::PlannedSource::Path { .. } => in_repo,
        crate::stages::plan::PlannedSource::Git { url, .. } => format!("{url}#{in_repo}"),
    }
}

/// The engine's image config (`docker image inspect`'s `Config`) as ours.
fn run_config(c: bollard::models::ImageConfig) -> oci::RunConfig {
    let set = |v: Option<Vec<String>>| v.unwrap_or_default().into_iter().map(|k| (k, serde_json::json!({}))).collect();
    oci::RunConfig {
        user: c.user.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        exposed_ports: set(c.exposed_ports),
        labels: c.labels.unwrap_or_default().into_iter().collect(),
        healthcheck: c.healthcheck.filter(|h| h.test.as_ref().is_some_and(|t| !t.is_empty())).map(|h| {
            let ns = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
            oci::Healthcheck {
                test: h.test.unwrap_or_default(),
                interval: ns(h.interval),
                timeout: ns(h.timeout),
                start_period: ns(h.start_period),
                start_interval: ns(h.start_interval),
                retries: u32::try_from(h.retries.unwrap_or(0)).unwrap_or(0),
            }
        }),
        stop_signal: c.stop_signal.unwrap_or_default(),
        volumes: set(c.volumes),
        shell: c.shell.unwrap_or_default(),
    }
}

/// `subdir/file` with `.` and empty parts dropped.
fn join_rel(subdir: &str, file: &str) -> String {
    subdir.split('/').chain(file.split('/')).filter(|p| !p.is_empty() && *p != ".").collect::<Vec<_>>().join("/")
}

impl Backend for BuildKit<'_> {
    fn name(&self) -> &'static str {
        "buildkit"
    }

    fn prepare(&self, cfg: &Config, jobs: &[Job<'_>], layout: &Layout) -> Result<(), BuildError> {
        let (docker_jobs, plain): (Vec<&Job<'_>>, Vec<&Job<'_>>) = jobs.iter().partition(|j| j.component.recipe.dockerfile.is_some());
        Daemonless.check(plain)?;
        if docker_jobs.is_empty() {
            return Ok(());
        }
        // 1. Every FROM of every Dockerfile, for every platform, before anything else.
        let mut problems: Vec<dockerfile::Problem> = Vec::new();
        let mut uses_base: BTreeSet<(String, Platform)> = BTreeSet::new();
        for j in &docker_jobs {
            let file = j.component.recipe.dockerfile.as_deref().unwrap_or_default();
            let in_repo = join_rel(j.subdir, file);
            let shown = shown_dockerfile(j, file);
            let text = read_git_file(j.repo, j.commit, &in_repo).map_err(|message| BuildKitError::Dockerfile {
                component: j.component.name.clone(),
                platform: j.image.platform,
                file: shown.clone(),
                message,
            })?;
            match dockerfile::check(&shown, &text, j.image.platform, &j.base.name, &j.component.recipe.build_bases, &cfg.lock) {
                Ok(stages) => {
                    if stages.iter().any(|s| s.from == Origin::ComponentBase) {
                        uses_base.insert((j.base.name.clone(), j.image.platform));
                    }
                    // Every listed build base is pushed and passed, used or not: the build
                    // arguments (and the record) do not depend on how the Dockerfile is read.
                    for b in &j.build_bases {
                        uses_base.insert((b.name.clone(), b.platform));
                    }
                }
                Err(p) => {
                    for p in p {
                        if !problems.contains(&p) {
                            problems.push(p);
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(BuildError::Dockerfile(problems));
        }
        // 2. The pool: endpoints that do not answer are dropped now; every platform to build
        //    needs an endpoint that is up and builds it.
        self.health_check()?;
        let platforms: BTreeSet<Platform> = docker_jobs.iter().map(|j| j.image.platform).collect();
        for p in platforms {
            self.pool.can_build(p)?;
        }
        // 3. Bases where BuildKit can pull them by digest.
        for b in docker_jobs.iter().flat_map(|j| std::iter::once(j.base).chain(j.build_bases.iter().copied())) {
            let key = (b.name.clone(), b.platform);
            if !uses_base.contains(&key) {
                continue;
            }
            if self.base_refs.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key) {
                continue;
            }
            let r = self.base_ref(cfg, &b.name, b.platform, layout, &b.digest)?;
            self.base_refs.lock().unwrap_or_else(|e| e.into_inner()).insert(key, r);
        }
        Ok(())
    }

    fn build(&self, job: &Job<'_>, layout: &Layout) -> Result<BuiltImage, BuildError> {
        let Some(dockerfile) = job.component.recipe.dockerfile.clone() else {
            return Daemonless.build(job, layout);
        };
        let c = job.component;
        let platform = job.image.platform;
        let job_name = format!("{} {platform}", c.name);
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| BuildKitError::Io { path, source }
        };
        // 1. The source from git objects, and the build context made from it.
        let scratch = oci::dirs::Scratch::new("stellaops-buildkit-").map_err(io_err(Path::new("$TMPDIR")))?;
        let src = scratch.path().join("src");
        crate::stages::plan::source::materialize(job.repo, job.commit, job.subdir, &src).map_err(|source| BuildError::Source {
            component: c.name.clone(),
            platform,
            source,
        })?;
        let context = {
            let mut lw = LayerWriter::new(Vec::new(), c.stamp.epoch);
            lw.add_tree(&src, "/", Modes::Normalize).map_err(|source| BuildError::Layer { component: c.name.clone(), platform, source })?;
            lw.finish().map_err(io_err(&src))?.0
        };
        let BuildArgs { passed, recorded } = self.build_args(job)?;
        // A component with secret build arguments gets no cache: BuildKit writes the build
        // arguments a RUN step uses into the image's history (`RUN |1 TOKEN=... `), and that
        // image is what would be pushed to the cache registry.
        let cache_ref = match (&self.opts.build_cache, c.recipe.secret_build_args.is_empty()) {
            (Some(_), false) => {
                self.note(format!(
                    "`{job_name}`: built without the build cache: its image history would carry the values of `recipe.secret-build-args` ({}) to the cache registry",
                    c.recipe.secret_build_args.join(", ")
                ));
                None
            }
            _ => self.cache_ref(&c.name, platform),
        };
        let export = scratch.path().join("rootfs.tar");
        let request = Request {
            job_name: &job_name,
            context: &context,
            dockerfile: &dockerfile,
            platform,
            args: &passed,
            export: Some(&export),
            tag: None,
            cache: cache_ref.as_deref(),
        };

        // 2. On the pool, retrying elsewhere when an endpoint fails under us.
        let rt = runtime()?;
        let mut transport_failures = 0;
        let (endpoint, engine_config, outcome, pushed) = loop {
            let i = self.pool.acquire(platform)?;
            let endpoint = self.pool.names[i].clone();
            let _ = fs::remove_file(&export);
            let result = rt.block_on(async {
                let outcome = self.attempt(&endpoint, &request).await?;
                let (config, pushed) = self.image_config(&endpoint, &request, &c.name).await?;
                Ok((outcome, config, pushed))
            });
            self.pool.release(i);
            match result {
                Ok((outcome, config, pushed)) => break (endpoint, config, outcome, pushed),
                Err(Attempt::Endpoint(why)) => {
                    // The health check decides: an endpoint that still answers keeps its place
                    // (a transient failure), up to a bound on retries of this job.
                    transport_failures += 1;
                    let health = ping(&endpoint, self.opts.tls.as_ref());
                    if health.is_ok() && transport_failures < MAX_TRANSPORT_FAILURES {
                        self.note(format!("builder `{endpoint}` failed `{job_name}` ({why}) but answers its health check: retrying"));
                    } else if self.pool.drop_endpoint(i, &why) {
                        self.note(format!("builder `{endpoint}` failed ({why}): dropped from the pool; retrying `{job_name}` elsewhere"));
                    }
                }
                Err(Attempt::Hostile(why)) => {
                    if self.pool.drop_endpoint(i, &why) {
                        self.note(format!(
                            "builder `{endpoint}` misbehaved ({why}): dropped from the pool; retrying `{job_name}` elsewhere"
                        ));
                    }
                }
                Err(Attempt::CachePush(message)) => {
                    return Err(BuildKitError::CachePush {
                        component: c.name.clone(),
                        platform,
                        endpoint,
                        reference: cache_ref.unwrap_or_default(),
                        message,
                    }
                    .into())
                }
                Err(Attempt::Build { step, message, log }) => {
                    return Err(BuildKitError::Failed { component: c.name.clone(), platform, endpoint, step, message, log }.into())
                }
            }
        };

        // 3. Normalization: the base's layers as pinned, plus the difference as one layer.
        let diff = rootfs::diff_layer(layout, &job.base.manifest.layers, &export, c.stamp.epoch)
            .map_err(|source| BuildKitError::Rootfs { component: c.name.clone(), platform, source })?;
        let mut layers = job.base.manifest.layers.clone();
        let mut diff_ids = job.base.config.rootfs.diff_ids.clone();
        let mut history = job.base.config.history.clone();
        layers.push(diff.descriptor.clone());
        diff_ids.push(diff.info.diff_id.clone());
        history.push(oci::History {
            created: c.stamp.created.clone(),
            created_by: format!("stellaops buildkit: {dockerfile} (rootfs difference, normalized)"),
            comment: None,
            empty_layer: false,
        });
        // Lock files of the source, for the evidence stage (where they land in the image is
        // the Dockerfile's business, so it is not recorded).
        let lock_files = build::find_lock_files(c, platform, &src, &scratch.path().join("out"))?;
        build::assemble(
            job,
            layout,
            build::Made {
                layers,
                diff_ids,
                history,
                lock_files,
                files: diff.info.files.clone(),
                go: None,
                dockerfile_config: Some(build::DockerfileConfig { file: shown_dockerfile(job, &dockerfile), config: engine_config }),
                buildkit: Some(Record {
                    endpoint,
                    dockerfile,
                    exporter: "tar",
                    network: "none",
                    build_args: recorded,
                    build_cache: cache_ref.map(|reference| build::BuildCache {
                        reference,
                        cached_steps: outcome.cached_steps,
                        exported: pushed.unwrap_or_default(),
                    }),
                    changed_paths: diff.changed,
                    removed_paths: diff.removed,
                    bases: std::iter::once(StageBase {
                        name: job.base.name.clone(),
                        digest: job.base.digest.clone(),
                        role: "component",
                        build_arg: BASE_ARG.to_owned(),
                    })
                    .chain(job.build_bases.iter().map(|b| StageBase {
                        name: b.name.clone(),
                        digest: b.digest.clone(),
                        role: "build",
                        build_arg: build_base_arg(&b.name),
                    }))
                    .collect(),
                }),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_spreads_jobs_bounds_each_endpoint_and_names_every_endpoint_when_all_are_down() {
        let pool = Pool::new(vec![("unix:///a".into(), None), ("unix:///b".into(), None)], 2);
        let amd = Platform::LinuxAmd64;
        // Least busy first, ties by order: a, b, a, b.
        let got: Vec<usize> = (0..4).map(|_| pool.acquire(amd).unwrap()).collect();
        assert_eq!(got, [0, 1, 0, 1]);
        // Both at their limit: the next acquire waits until one is released.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.acquire(amd).unwrap());
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "acquire did not wait at the limit");
            pool.release(1);
            assert_eq!(waiter.join().unwrap(), 1);
        });
        // A dropped endpoint gets no more jobs; its busy slots do not matter.
        assert!(pool.drop_endpoint(0, "socket gone"));
        assert!(!pool.drop_endpoint(0, "socket gone"), "dropped twice");
        pool.release(1);
        assert_eq!(pool.acquire(amd).unwrap(), 1);
        assert!(pool.drop_endpoint(1, "no answer to ping"));
        let e = pool.acquire(amd).unwrap_err().to_string();
        assert!(e.contains("`unix:///a`: socket gone") && e.contains("`unix:///b`: no answer to ping"), "{e}");
    }

    #[test]
    fn an_endpoint_keyed_by_platform_builds_only_that_platform() {
        let (addr, only) = parse_endpoint("linux/arm64=unix:///arm.sock").unwrap();
        assert_eq!(addr, "unix:///arm.sock");
        let pool = Pool::new(vec![("unix:///any".into(), None), (addr, only)], 1);
        assert_eq!(pool.acquire(Platform::LinuxArm64).unwrap(), 0);
        pool.release(0);
        pool.drop_endpoint(0, "gone");
        assert_eq!(pool.acquire(Platform::LinuxArm64).unwrap(), 1);
        let e = pool.acquire(Platform::LinuxAmd64).unwrap_err().to_string();
        assert!(e.contains("`unix:///any`: gone") && e.contains("`unix:///arm.sock`: builds only linux/arm64, not linux/amd64"), "{e}");
        assert!(pool.can_build(Platform::LinuxAmd64).is_err());
        assert!(parse_endpoint("linux/s390x=unix:///x").is_err());
    }

    #[test]
    fn endpoints_are_unix_sockets_or_tcp_with_a_port() {
        assert_eq!(address_of("unix:///run/d.sock").unwrap(), Address::Unix("/run/d.sock".into()));
        assert_eq!(address_of("/run/d.sock").unwrap(), Address::Unix("/run/d.sock".into()));
        assert_eq!(address_of("tcp://10.0.0.1:2376").unwrap(), Address::Tcp("10.0.0.1:2376".into()));
        assert_eq!(address_of("tcp://builder.example:2376/").unwrap(), Address::Tcp("builder.example:2376".into()));
        for bad in ["tcp://10.0.0.1", "tcp://:2376", "tcp://h:99999", "ssh://h", "https://h:2376", "docker.sock"] {
            let e = address_of(bad).unwrap_err();
            assert_eq!(e.exit_code(), schema::exit::REJECTED);
            assert!(e.to_string().contains(&format!("`{bad}`")) && e.to_string().contains("buildkitd"), "{e}");
        }
        let (addr, only) = parse_endpoint("linux/arm64=tcp://10.0.0.2:2376").unwrap();
        assert_eq!((addr.as_str(), only.map(|s| s.len())), ("tcp://10.0.0.2:2376", Some(1)));
    }

    #[test]
    fn a_tcp_endpoint_without_tls_material_is_refused_before_any_connection() {
        let reporter = schema::report::Silent;
        let opts = BuildKitOptions {
            endpoints: vec!["tcp://127.0.0.1:9".into()],
            per_endpoint: 1,
            base_mirror: None,
            tls: None,
            build_cache: None,
            limits: StreamLimits::default(),
        };
        let e = BuildKit::new(opts.clone(), &reporter).health_check().unwrap_err();
        assert!(matches!(e, BuildKitError::NoTls(ref a) if a == "tcp://127.0.0.1:9"), "{e}");
        assert!(e.to_string().contains("DOCKER_CERT_PATH"), "{e}");
        assert_eq!(e.exit_code(), schema::exit::REJECTED);
        // A missing file is named.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let tls = TlsFiles::in_dir(dir.path());
        let e = BuildKit::new(BuildKitOptions { tls: Some(tls.clone()), ..opts.clone() }, &reporter).health_check().unwrap_err();
        assert!(matches!(e, BuildKitError::TlsFile { role: "client certificate", ref path, .. } if *path == tls.cert), "{e}");
        assert!(e.to_string().contains(&format!("`{}`", tls.cert.display())), "{e}");
        // A file that is not PEM.
        fs::write(&tls.cert, "not a certificate").unwrap();
        let e = BuildKit::new(BuildKitOptions { tls: Some(tls), ..opts }, &reporter).health_check().unwrap_err();
        assert!(e.to_string().contains("holds no PEM block"), "{e}");
    }

    #[test]
    fn a_build_cache_is_a_repository_without_tag_or_digest() {
        assert!(check_build_cache("127.0.0.1:5000/stellaops/cache").is_ok());
        assert!(check_build_cache("registry.example/cache/").is_ok());
        for bad in ["127.0.0.1:5000", "127.0.0.1:5000/cache:tag", "r.example/cache@sha256:00", "r.example/Cache", "/cache", "r.example//c"]
        {
            let e = check_build_cache(bad).unwrap_err();
            assert_eq!(e.exit_code(), schema::exit::REJECTED, "{bad}");
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn tls_failures_read_as_such() {
        let e = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert!(reason(&e).starts_with("the engine's certificate was refused"), "{}", reason(&e));
        let e = std::io::Error::other("received fatal alert: BadCertificate");
        assert!(reason(&e).starts_with("the TLS handshake was refused"), "{}", reason(&e));
        let e = std::io::Error::other("error reading a body from connection");
        assert!(reason(&e).starts_with("the connection to the engine was lost, or its answer is not valid HTTP"), "{}", reason(&e));
        let e = std::io::Error::other("connection reset by peer");
        assert!(reason(&e).starts_with("the connection to the engine was lost ("), "{}", reason(&e));
        let e = std::io::Error::other("connection refused");
        assert_eq!(reason(&e), "connection refused");
    }

    #[test]
    fn rel_paths_join_without_dots() {
        assert_eq!(join_rel(".", "Dockerfile"), "Dockerfile");
        assert_eq!(join_rel("components/x", "./docker/Dockerfile"), "components/x/docker/Dockerfile");
    }
}
