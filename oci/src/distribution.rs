//! A blocking client for the OCI distribution API (v1.1), for the publish stage: blobs
//! (exists, cross-repository mount, monolithic or chunked upload streamed from a file),
//! manifests by digest or tag, the referrers API, and the registry's auth challenge (`Basic`,
//! or the `Bearer` token flow of spec §3.2).
//!
//! Hand-written on ureq rather than with oci-client (which [`crate::registry`] uses to read
//! bases) because publishing needs what oci-client keeps to itself: the status of each
//! response (to tell a 503 or a dropped connection, which are retried, from a refusal, which
//! is not), the `Docker-Content-Digest` the registry computed (checked against ours), the
//! `OCI-Subject` header and the referrers endpoint, the `Location` of a mount that fell back to
//! an upload, chunked uploads from a file that can be re-read on retry, and credentials from
//! Docker's config file. Each of those is a header or a status code on a plain HTTP call.
//!
//! Retries: every operation is retried as a whole (a blob upload restarts with a new upload
//! session) on a transport error (reset, refused, timeout) or a 408/429/5xx, with exponential
//! backoff ([`RetryPolicy`]); any other status fails at once. Loopback registries are spoken to
//! over plain HTTP, every other one over HTTPS ([`crate::registry::is_loopback`]).
//!
//! A registry is not trusted (issue 18, `tests/it/hostile.rs`): what it sends is bounded
//! (manifests and indexes at [`MANIFEST_LIMIT`], token answers at 1 MiB, error bodies quoted at
//! 300 characters; more is [`DistError::TooLarge`], not retried), time-bounded ([`Timeouts`]),
//! checked against the digest asked for, and at most 5 redirects are followed
//! ([`DistError::Protocol`] past that). The credentials of a host go to that host only: never
//! with a redirect, and to a token service only on the same host (over HTTPS unless loopback).

use std::fs::File;
use std::io::{Read as _, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use ureq::http;

use crate::auth::{Credentials, Password};
use schema::model::Digest;

pub use schema::model::RegistryTarget;

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled for each next one.
    pub base: Duration,
    /// Longest wait between two tries.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 8, base: Duration::from_millis(250), max: Duration::from_secs(20) }
    }
}

impl RetryPolicy {
    fn wait(&self, retry: u32) -> Duration {
        self.base.saturating_mul(1 << retry.min(16)).min(self.max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("`{host}`: {what}: {message}")]
    Transport { host: String, what: String, message: String },
    #[error("`{host}`: {what}: the registry answered {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status { host: String, what: String, status: u16, body: String },
    #[error("`{host}`: {what}: {message}")]
    Unauthorized { host: String, what: String, message: String },
    /// The server breaks the protocol in a way another try would not mend (a redirect loop).
    #[error("`{host}`: {what}: {message}")]
    Protocol { host: String, what: String, message: String },
    #[error("`{host}`: {what}: the registry says it stored `{actual}`, not `{expected}`")]
    DigestMismatch { host: String, what: String, expected: Digest, actual: String },
    #[error("`{host}`: {what}: the answer is larger than the {limit} bytes read for it (refused, not retried)\n  hint: the distribution specification bounds manifests and indexes at 4 MiB; a registry that answers more is broken or not what it claims")]
    TooLarge { host: String, what: String, limit: u64 },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DistError {
    /// Worth another try: the network or the registry hiccupped.
    pub fn is_transient(&self) -> bool {
        match self {
            DistError::Transport { .. } => true,
            DistError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            _ => false,
        }
    }
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            DistError::Unauthorized { .. } | DistError::DigestMismatch { .. } | DistError::TooLarge { .. } => schema::exit::REJECTED,
            _ => schema::exit::ENVIRONMENT,
        }
    }
}

/// Counters of what a client did (for reports and tests).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub blobs_uploaded: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub blobs_mounted: AtomicU64,
}

/// What the registry asked for in its `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum Challenge {
    None,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

impl Challenge {
    /// Parses `Basic realm="x"` or `Bearer realm="...",service="...",scope="..."`.
    pub fn parse(header: &str) -> Challenge {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let param = |name: &str| {
            params.split(',').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Challenge::Basic
        } else if scheme.eq_ignore_ascii_case("bearer") {
            match param("realm") {
                Some(realm) => Challenge::Bearer { realm, service: param("service") },
                None => Challenge::None,
            }
        } else {
            Challenge::None
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Challenge::None => "none",
            Challenge::Basic => "basic",
            Challenge::Bearer { .. } => "bearer",
        }
    }
}

#[derive(Debug, Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by scope.
    tokens: std::collections::BTreeMap<String, Password>,
}

/// The body of a request: nothing, bytes, or a range of a file (re-opened on every try).
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File { path: &'a Path, offset: u64, len: u64 },
}

/// One registry, with its credentials, auth state and retry policy.
#[derive(Debug)]
pub struct Client {
    pub host: String,
    base: String,
    agent: ureq::Agent,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
    pub policy: RetryPolicy,
    pub stats: Stats,
    /// A message for each retry, drained by [`Client::take_notes`] (progress).
    notes: Mutex<Vec<String>>,
}

/// A response whose status the caller reads.
struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: ureq::Body,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
    /// The body, at most `limit` bytes.
    fn bytes(mut self, limit: u64) -> Result<Vec<u8>, ureq::Error> {
        self.body.with_config().limit(limit).read_to_vec()
    }
    /// The first 4 KiB of an error body (the rest is not read).
    fn text(mut self) -> String {
        let mut buf = Vec::new();
        // An error body that cannot be read is quoted as far as it was.
        let _ = self.body.as_reader().take(4096).read_to_end(&mut buf);
        error_body(&buf)
    }
}

/// The `host[:port]` of an absolute URL (`https://auth.example.org/token` → `auth.example.org`).
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let a = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    Some(a.rsplit_once('@').map_or(a, |(_, host)| host))
}

/// What an error message quotes of a registry's error body: its text on one line, at most 300
/// characters (the body is the registry's, untrusted: never more).
pub fn error_body(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    s.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
}

/// The bearer token of a token service's answer (distribution "token authentication"):
/// `token`, else `access_token`.
pub fn token_of(bytes: &[u8]) -> Result<Password, String> {
    #[derive(serde::Deserialize)]
    struct Token {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
    }
    let t: Token = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    t.token.or(t.access_token).map(Password::new).ok_or_else(|| "neither `token` nor `access_token`".to_owned())
}

/// A manifest fetched from a registry.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// The result of a cross-repository mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Mounted,
    /// The registry did not mount; it opened an upload session there instead.
    Session(String),
}

/// What `PUT` of a manifest said.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The `OCI-Subject` header: the registry indexed the manifest's subject for the
    /// referrers API.
    pub subject_indexed: bool,
}

/// The largest manifest or index read (the distribution specification's limit).
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// How long a registry may take: to accept the connection, to start answering, and to send a
/// whole body (a body that drips slower fails with a timeout, and is retried as any transport
/// error).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    pub body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(10), response: Duration::from_secs(120), body: Duration::from_secs(600) }
    }
}

/// The HTTP agent of a client: statuses are answers, not errors; at most 5 redirects, which
/// never carry the `Authorization` header (ureq's default: credentials stay with their host).
fn agent(t: Timeouts) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(t.connect))
        .timeout_recv_response(Some(t.response))
        .timeout_recv_body(Some(t.body))
        .timeout_send_body(Some(t.body))
        .max_redirects(5)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
        .build()
        .into()
}

impl Client {
    pub fn new(host: &str, creds: Option<Credentials>, policy: RetryPolicy) -> Client {
        let scheme = if crate::registry::is_loopback(host) { "http" } else { "https" };
        let agent = agent(Timeouts::default());
        Client {
            host: host.to_owned(),
            base: format!("{scheme}://{host}"),
            agent,
            creds,
            auth: Mutex::new(AuthState::default()),
            policy,
            stats: Stats::default(),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// The same client with other time bounds (tests of slow servers; the defaults suit a
    /// registry across the Internet).
    pub fn with_timeouts(mut self, t: Timeouts) -> Client {
        self.agent = agent(t);
        self
    }

    /// The retry messages since the last call.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    fn transport(&self, what: &str, message: String) -> DistError {
        DistError::Transport { host: self.host.clone(), what: what.to_owned(), message }
    }

    /// A body that could not be read whole: larger than `limit` (refused, not retried), or cut.
    fn body_err(&self, what: &str, e: ureq::Error, limit: u64) -> DistError {
        match e {
            ureq::Error::BodyExceedsLimit(_) => DistError::TooLarge { host: self.host.clone(), what: what.to_owned(), limit },
            e => self.transport(what, e.to_string()),
        }
    }

    fn status(&self, what: &str, r: Resp) -> DistError {
        DistError::Status { host: self.host.clone(), what: what.to_owned(), status: r.status, body: r.text() }
    }

    /// Runs `op` until it succeeds, fails for good, or the policy's tries are spent.
    pub fn retry<T>(&self, what: &str, mut op: impl FnMut() -> Result<T, DistError>) -> Result<T, DistError> {
        let mut tried = 0;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && tried + 1 < self.policy.attempts => {
                    let wait = self.policy.wait(tried);
                    tried += 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let note = format!("{e}; retry {tried} of {} in {} ms", self.policy.attempts - 1, wait.as_millis());
                    self.notes.lock().unwrap_or_else(|p| p.into_inner()).push(note);
                    tracing::info!(host = %self.host, what, "retrying: {e}");
                    std::thread::sleep(wait);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One HTTP exchange, answering the registry's auth challenge once. `scope` is the token
    /// scope (`repository:NAME:pull,push`, space-separated when several).
    fn call(&self, method: &str, url: &str, scope: &str, headers: &[(&str, &str)], body: Body<'_>, what: &str) -> Result<Resp, DistError> {
        let mut answered = false;
        loop {
            let authz = self.authorization(scope, what)?;
            let mut b = http::Request::builder().method(method).uri(self.url(url));
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            if let Some(a) = &authz {
                b = b.header("Authorization", a.expose());
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let result = match body {
                Body::Empty => {
                    let b = if matches!(method, "PUT" | "POST" | "PATCH") { b.header("Content-Length", "0") } else { b };
                    self.agent.run(b.body(()).map_err(|e| self.transport(what, e.to_string()))?)
                }
                Body::Bytes(bytes) => self.agent.run(b.body(bytes).map_err(|e| self.transport(what, e.to_string()))?),
                Body::File { path, offset, len } => {
                    let io = |source| DistError::Io { path: path.to_owned(), source };
                    let mut f = File::open(path).map_err(io)?;
                    f.seek(SeekFrom::Start(offset)).map_err(io)?;
                    let mut reader = f.take(len);
                    let send = ureq::SendBody::from_reader(&mut reader);
                    let req = b.header("Content-Length", len.to_string()).body(send).map_err(|e| self.transport(what, e.to_string()))?;
                    self.agent.run(req)
                }
            };
            let resp = match result {
                Ok(r) => r,
                Err(ureq::Error::TooManyRedirects) => {
                    return Err(DistError::Protocol {
                        host: self.host.clone(),
                        what: what.to_owned(),
                        message: "more than 5 redirects (a redirect loop?)".to_owned(),
                    })
                }
                Err(e) => return Err(self.transport(what, e.to_string())),
            };
            let (parts, body) = resp.into_parts();
            let r = Resp { status: parts.status.as_u16(), headers: parts.headers, body };
            if r.status != 401 {
                return Ok(r);
            }
            let challenge = r.header("WWW-Authenticate").map(|h| Challenge::parse(&h)).unwrap_or(Challenge::None);
            let refused = |message: String| DistError::Unauthorized { host: self.host.clone(), what: what.to_owned(), message };
            if answered || challenge == Challenge::None {
                return Err(refused(match (&self.creds, authz.is_some()) {
                    (Some(c), true) => format!("the registry refused the credentials of `{}` (from {})", c.username, c.source),
                    (None, _) => {
                        "the registry wants credentials and none are configured for this host (Docker config file or credential helper)"
                            .to_owned()
                    }
                    (Some(_), false) => "the registry refused the request".to_owned(),
                }));
            }
            if challenge == Challenge::Basic && self.creds.is_none() {
                return Err(refused("the registry wants credentials (Basic) and none are configured for this host (Docker config file or credential helper)".to_owned()));
            }
            let mut st = self.auth.lock().unwrap_or_else(|p| p.into_inner());
            st.challenge = Some(challenge);
            st.tokens.remove(scope);
            drop(st);
            answered = true;
        }
    }

    /// The `Authorization` header value for `scope`, fetching a bearer token when needed.
    fn authorization(&self, scope: &str, what: &str) -> Result<Option<Password>, DistError> {
        let st = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        match st.challenge.clone() {
            None | Some(Challenge::None) => Ok(None),
            Some(Challenge::Basic) => Ok(self.creds.as_ref().map(|c| Password::new(c.basic()))),
            Some(Challenge::Bearer { realm, service }) => {
                if let Some(t) = st.tokens.get(scope) {
                    return Ok(Some(Password::new(format!("Bearer {}", t.expose()))));
                }
                drop(st);
                let token = self.fetch_token(&realm, service.as_deref(), scope, what)?;
                let value = Password::new(format!("Bearer {}", token.expose()));
                self.auth.lock().unwrap_or_else(|p| p.into_inner()).tokens.insert(scope.to_owned(), token);
                Ok(Some(value))
            }
        }
    }

    /// The token flow (distribution "token authentication"): GET the realm with `service` and
    /// `scope`, with Basic credentials when there are any; the answer's `token` (or
    /// `access_token`) is the bearer token.
    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str, what: &str) -> Result<Password, DistError> {
        let mut url = realm.to_owned();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url += &format!("{sep}service={}", encode(s));
            sep = '&';
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            url += &format!("{sep}scope={}", encode(s));
            sep = '&';
        }
        // The credentials are this registry's: they go to its token service only when that is
        // on the same host (and over HTTPS, or on loopback); a realm elsewhere gets none.
        let realm_host = authority(realm).unwrap_or_default();
        let same_host =
            realm_host.eq_ignore_ascii_case(&self.host) && (realm.starts_with("https://") || crate::registry::is_loopback(&self.host));
        let mut b = http::Request::builder().method("GET").uri(&url);
        if let Some(c) = self.creds.as_ref().filter(|_| same_host) {
            b = b.header("Authorization", c.basic());
        }
        let req = b.body(()).map_err(|e| self.transport(what, e.to_string()))?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.agent.run(req).map_err(|e| self.transport(&format!("{what}: token service `{realm}`"), e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let r = Resp { status: parts.status.as_u16(), headers: parts.headers, body };
        match r.status {
            200 => {}
            401 | 403 => {
                return Err(DistError::Unauthorized {
                    host: self.host.clone(),
                    what: what.to_owned(),
                    message: match &self.creds {
                        Some(_) if !same_host => format!(
                            "the token service `{realm}` wants credentials; those of `{}` are not sent to another host (`{realm_host}`) or in clear\n  hint: a registry whose token service is elsewhere is not supported with credentials",
                            self.host
                        ),
                        Some(c) => format!("the token service `{realm}` refused the credentials of `{}` (from {})", c.username, c.source),
                        None => format!("the token service `{realm}` wants credentials and none are configured for this host"),
                    },
                })
            }
            _ => return Err(self.status(&format!("{what}: token service `{realm}`"), r)),
        }
        let bytes = r.bytes(1 << 20).map_err(|e| self.body_err(what, e, 1 << 20))?;
        token_of(&bytes).map_err(|e| self.transport(what, format!("token service `{realm}` sent no token: {e}")))
    }

    /// `GET /v2/`: whether the registry answers, and its auth challenge.
    pub fn ping(&self) -> Result<Challenge, DistError> {
        self.retry("ping", || {
            let resp =
                self.agent.run(http::Request::builder().uri(self.url("/v2/")).body(()).map_err(|e| self.transport("ping", e.to_string()))?);
            let resp = resp.map_err(|e| self.transport("ping", e.to_string()))?;
            let status = resp.status().as_u16();
            let challenge = resp.headers().get("WWW-Authenticate").and_then(|v| v.to_str().ok()).map(Challenge::parse);
            match status {
                200 => Ok(Challenge::None),
                401 => Ok(challenge.unwrap_or(Challenge::None)),
                s => Err(DistError::Status { host: self.host.clone(), what: "ping".into(), status: s, body: String::new() }),
            }
        })
    }

    pub fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, DistError> {
        let what = format!("HEAD blob {digest} in `{repo}`");
        self.retry(&what, || {
            let r = self.call("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &pull(repo), &[], Body::Empty, &what)?;
            match r.status {
                200 => Ok(Some(r.header("Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0))),
                404 => Ok(None),
                _ => Err(self.status(&what, r)),
            }
        })
    }

    /// Asks the registry to mount `digest` from `from` into `repo` (same registry).
    pub fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<Mount, DistError> {
        let what = format!("mount blob {digest} from `{from}` into `{repo}`");
        let scope = format!("{} {}", push(repo), pull(from));
        self.retry(&what, || {
            let r = self.call("POST", &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"), &scope, &[], Body::Empty, &what)?;
            match r.status {
                201 => {
                    self.stats.blobs_mounted.fetch_add(1, Ordering::Relaxed);
                    Ok(Mount::Mounted)
                }
                202 => Ok(Mount::Session(r.header("Location").ok_or_else(|| self.transport(&what, "202 without a Location".into()))?)),
                _ => Err(self.status(&what, r)),
            }
        })
    }

    /// Uploads the blob at `path` (`size` bytes, digest `digest`) into `repo`: in one `PUT`,
    /// or in `PATCH` chunks of `chunk` bytes when it is larger; checks the digest the registry
    /// reports. The file is streamed, never held in memory.
    pub fn upload_blob(&self, repo: &str, digest: &Digest, path: &Path, size: u64, chunk: u64) -> Result<(), DistError> {
        let what = format!("upload blob {digest} to `{repo}`");
        self.retry(&what, || {
            let r = self.call("POST", &format!("/v2/{repo}/blobs/uploads/"), &push(repo), &[], Body::Empty, &what)?;
            if r.status != 202 {
                return Err(self.status(&what, r));
            }
            let mut location = r.header("Location").ok_or_else(|| self.transport(&what, "202 without a Location".into()))?;
            let body = if size > chunk {
                let mut offset = 0;
                while offset < size {
                    let len = chunk.min(size - offset);
                    let range = format!("{offset}-{}", offset + len - 1);
                    let r = self.call(
                        "PATCH",
                        &location,
                        &push(repo),
                        &[("Content-Type", "application/octet-stream"), ("Content-Range", &range)],
                        Body::File { path, offset, len },
                        &what,
                    )?;
                    if r.status != 202 {
                        return Err(self.status(&what, r));
                    }
                    location = r.header("Location").unwrap_or(location);
                    offset += len;
                }
                Body::Empty
            } else {
                Body::File { path, offset: 0, len: size }
            };
            let sep = if location.contains('?') { '&' } else { '?' };
            let r = self.call(
                "PUT",
                &format!("{location}{sep}digest={digest}"),
                &push(repo),
                &[("Content-Type", "application/octet-stream")],
                body,
                &what,
            )?;
            if r.status != 201 {
                return Err(self.status(&what, r));
            }
            self.check_digest(&what, digest, r.header("Docker-Content-Digest"))?;
            self.stats.blobs_uploaded.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
            Ok(())
        })
    }

    fn check_digest(&self, what: &str, expected: &Digest, reported: Option<String>) -> Result<(), DistError> {
        match reported {
            Some(d) if d != expected.as_str() => {
                Err(DistError::DigestMismatch { host: self.host.clone(), what: what.to_owned(), expected: expected.clone(), actual: d })
            }
            _ => Ok(()),
        }
    }

    /// Puts a manifest or index under `reference` (its digest, or a tag); checks the digest
    /// the registry reports against the bytes' own.
    pub fn put_manifest(&self, repo: &str, reference: &str, bytes: &[u8], media_type: &str) -> Result<Stored, DistError> {
        let digest = Digest::of(bytes);
        let what = format!("put manifest {digest} as `{repo}:{reference}`");
        self.retry(&what, || {
            let r = self.call(
                "PUT",
                &format!("/v2/{repo}/manifests/{reference}"),
                &push(repo),
                &[("Content-Type", media_type)],
                Body::Bytes(bytes),
                &what,
            )?;
            if r.status != 201 && r.status != 200 {
                return Err(self.status(&what, r));
            }
            self.check_digest(&what, &digest, r.header("Docker-Content-Digest"))?;
            Ok(Stored { subject_indexed: r.header("OCI-Subject").is_some() })
        })
    }

    /// A manifest by digest or tag, `None` when the registry has none. Fetched by digest, its
    /// bytes must hash to that digest.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<Option<Fetched>, DistError> {
        let what = format!("get manifest `{repo}:{reference}`");
        let accept = [
            crate::layout::MEDIA_INDEX,
            crate::layout::MEDIA_MANIFEST,
            crate::layout::MEDIA_DOCKER_MANIFEST,
            crate::layout::MEDIA_DOCKER_LIST,
        ]
        .join(", ");
        self.retry(&what, || {
            let r =
                self.call("GET", &format!("/v2/{repo}/manifests/{reference}"), &pull(repo), &[("Accept", &accept)], Body::Empty, &what)?;
            match r.status {
                200 => {}
                404 => return Ok(None),
                _ => return Err(self.status(&what, r)),
            }
            let media_type = r.header("Content-Type").unwrap_or_default();
            let bytes = r.bytes(MANIFEST_LIMIT).map_err(|e| self.body_err(&what, e, MANIFEST_LIMIT))?;
            let digest = Digest::of(&bytes);
            if let Ok(asked) = reference.parse::<Digest>() {
                if asked != digest {
                    return Err(DistError::DigestMismatch {
                        host: self.host.clone(),
                        what: what.clone(),
                        expected: asked,
                        actual: digest.to_string(),
                    });
                }
            }
            Ok(Some(Fetched { bytes, media_type, digest }))
        })
    }

    /// A small blob (a signature payload, an envelope), refused unless it hashes to `digest`.
    pub fn get_blob(&self, repo: &str, digest: &Digest, limit: u64) -> Result<Vec<u8>, DistError> {
        let what = format!("get blob {digest} from `{repo}`");
        self.retry(&what, || {
            let r = self.call("GET", &format!("/v2/{repo}/blobs/{digest}"), &pull(repo), &[], Body::Empty, &what)?;
            if r.status != 200 {
                return Err(self.status(&what, r));
            }
            let bytes = r.bytes(limit).map_err(|e| self.body_err(&what, e, limit))?;
            let actual = Digest::of(&bytes);
            if &actual != digest {
                return Err(DistError::DigestMismatch {
                    host: self.host.clone(),
                    what: what.clone(),
                    expected: digest.clone(),
                    actual: actual.to_string(),
                });
            }
            Ok(bytes)
        })
    }

    /// `HEAD` of a manifest: its digest as the registry reports it, `None` when absent.
    pub fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<String>, DistError> {
        let what = format!("head manifest `{repo}:{reference}`");
        let accept = [crate::layout::MEDIA_INDEX, crate::layout::MEDIA_MANIFEST].join(", ");
        self.retry(&what, || {
            let r =
                self.call("HEAD", &format!("/v2/{repo}/manifests/{reference}"), &pull(repo), &[("Accept", &accept)], Body::Empty, &what)?;
            match r.status {
                200 => Ok(Some(r.header("Docker-Content-Digest").unwrap_or_default())),
                404 => Ok(None),
                _ => Err(self.status(&what, r)),
            }
        })
    }

    /// `GET /v2/<repo>/referrers/<digest>`: the referrers index, or `None` when the registry
    /// does not serve the API (404 or another answer than an image index).
    pub fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<crate::layout::Index>, DistError> {
        let what = format!("referrers of {digest} in `{repo}`");
        self.retry(&what, || {
            let r = self.call(
                "GET",
                &format!("/v2/{repo}/referrers/{digest}"),
                &pull(repo),
                &[("Accept", crate::layout::MEDIA_INDEX)],
                Body::Empty,
                &what,
            )?;
            match r.status {
                200 => {}
                404 | 405 | 400 => return Ok(None),
                _ => return Err(self.status(&what, r)),
            }
            let is_index = r.header("Content-Type").is_some_and(|t| t.starts_with(crate::layout::MEDIA_INDEX));
            let bytes = r.bytes(MANIFEST_LIMIT).map_err(|e| self.body_err(&what, e, MANIFEST_LIMIT))?;
            if !is_index {
                return Ok(None);
            }
            serde_json::from_slice(&bytes).map(Some).map_err(|e| self.transport(&what, format!("not an image index: {e}")))
        })
    }
}

fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges_and_targets() {
        assert_eq!(Challenge::parse(r#"Basic realm="Registry Realm""#), Challenge::Basic);
        assert_eq!(
            Challenge::parse(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#),
            Challenge::Bearer { realm: "https://auth.example/token".into(), service: Some("registry.example".into()) }
        );
        let t: RegistryTarget = "127.0.0.1:5000/stellaops".parse().unwrap();
        assert_eq!(t.repository("authority"), "stellaops/authority");
        assert!("no-namespace".parse::<RegistryTarget>().is_err());
        assert!("host/Upper".parse::<RegistryTarget>().is_err());
        assert_eq!(encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy { attempts: 5, base: Duration::from_millis(100), max: Duration::from_millis(500) };
        assert_eq!([0, 1, 2, 3].map(|i| p.wait(i).as_millis()), [100, 200, 400, 500]);
    }
}
