//! The BuildKit backend against a hostile Docker engine (issue 18, point 5). A real engine
//! cannot be made to misbehave on demand, so `TestServerPlayingAnEngine` plays one: real HTTP
//! on a Unix socket (`--builder unix:///...`) or on loopback TCP behind mutual TLS (`--builder
//! tcp://...`: the backend speaks to a TCP engine with mutual TLS only; certificates by openssl,
//! the server side by rustls), one thread per connection, answering what the backend asks
//! before a build as a Docker engine does (`GET /version`, `GET /_ping`; `POST /session` is
//! refused, the build's status stream is what is tested) and then answering `POST /build` with
//! garbage, a body that is not HTTP chunking, an endless log, or silence.
//!
//! Each must fail the release with exit 3 (an environment failure) naming the builder and what
//! it did, within the stream's bounds (`StreamLimits`, lowered here through its hidden test
//! variable), with nothing released; with a healthy builder beside it, the job goes there.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::builders::Certs;
use crate::buildkit::{repo_with, DOCKERFILE};
use crate::faults::assert_nothing_released;
use crate::support::{xtask_cmd, Repo, Run};

/// How the engine answers `POST /build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Build {
    /// A status line, then bytes that are not JSON.
    Garbage,
    /// A chunked body whose chunk size line is not hexadecimal.
    BadChunking,
    /// A step that starts and logs forever (1 KiB messages, no newline).
    EndlessLogs,
    /// A status line, then nothing, the connection held open.
    Stall,
}

/// One connection to the engine: a Unix socket, or TLS over TCP.
trait Conn: Read + Write + Send + 'static {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
}

impl Conn for UnixStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, d)
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.sock.set_read_timeout(d)
    }
}

/// Where the engine listens.
enum Listen {
    Unix(PathBuf),
    /// Loopback TCP; the server's TLS config (its certificate, client certificates of the CA
    /// required).
    Tls(String),
}

/// A Docker engine that answers health checks and then plays [`Build`].
struct TestServerPlayingAnEngine {
    listen: Listen,
    /// Bytes of build status sent (endless logs).
    sent: Arc<AtomicU64>,
    /// `POST /build` requests received.
    builds: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TestServerPlayingAnEngine {
    /// On a Unix socket in `dir`, or (with `tls`: the certificates) on loopback TCP.
    fn start(dir: &Path, build: Build, tls: Option<&Certs>) -> TestServerPlayingAnEngine {
        let (sent, builds, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (s, b, st) = (sent.clone(), builds.clone(), stop.clone());
        let listen = match tls {
            None => {
                let socket = dir.join(format!("hostile-engine-{build:?}.sock").to_ascii_lowercase());
                let listener = UnixListener::bind(&socket).unwrap();
                std::thread::spawn(move || {
                    for conn in listener.incoming() {
                        if st.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (s, b, st) = (s.clone(), b.clone(), st.clone());
                        std::thread::spawn(move || {
                            let _ = serve(conn, build, &s, &b, &st);
                        });
                    }
                });
                Listen::Unix(socket)
            }
            Some(certs) => {
                let config = server_tls(certs);
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                std::thread::spawn(move || {
                    for conn in listener.incoming() {
                        if st.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let Ok(tls) = rustls::ServerConnection::new(config.clone()) else { continue };
                        let (s, b, st) = (s.clone(), b.clone(), st.clone());
                        std::thread::spawn(move || {
                            let _ = serve(rustls::StreamOwned::new(tls, conn), build, &s, &b, &st);
                        });
                    }
                });
                Listen::Tls(addr)
            }
        };
        TestServerPlayingAnEngine { listen, sent, builds, stop }
    }

    fn endpoint(&self) -> String {
        match &self.listen {
            Listen::Unix(socket) => format!("unix://{}", socket.display()),
            Listen::Tls(addr) => format!("tcp://{addr}"),
        }
    }
}

impl Drop for TestServerPlayingAnEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        match &self.listen {
            Listen::Unix(socket) => drop(UnixStream::connect(socket)),
            Listen::Tls(addr) => drop(TcpStream::connect(addr)),
        }
    }
}

/// The engine's side of mutual TLS: its certificate (`server-cert.pem`, for `IP:127.0.0.1`),
/// and a client certificate signed by the CA (`ca.pem`) required.
fn server_tls(certs: &Certs) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let chain = CertificateDer::pem_file_iter(certs.dir.join("server-cert.pem")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.dir.join("server-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Serves the requests of one connection (HTTP/1.1, kept alive).
fn serve<C: Conn>(conn: C, build: Build, sent: &AtomicU64, builds: &AtomicUsize, stop: &AtomicBool) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
            let h = h.to_ascii_lowercase();
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
        }
        // The request body (the build context), read whole.
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
            }
        } else {
            std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        }
        let path = path.split('?').next().unwrap_or("");
        let out = reader.get_mut();
        if path.ends_with("/_ping") {
            respond(out, "200 OK", "text/plain", b"OK")?;
        } else if path.ends_with("/version") {
            let version = br#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64","KernelVersion":"6.1.0","GoVersion":"go1.19.8"}"#;
            respond(out, "200 OK", "application/json", version)?;
        } else if path.ends_with("/build") {
            builds.fetch_add(1, Ordering::SeqCst);
            return play(reader.into_inner(), build, sent, stop);
        } else {
            // `/session` (BuildKit's file transfer) and anything else: refused, closed.
            respond(out, "404 Not Found", "application/json", br#"{"message":"page not found"}"#)?;
            return Ok(());
        }
    }
}

fn respond(out: &mut impl Write, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    write!(out, "HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n", body.len())?;
    out.write_all(body)?;
    out.flush()
}

fn chunk(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    write!(out, "{:x}\r\n", data.len())?;
    out.write_all(data)?;
    out.write_all(b"\r\n")?;
    out.flush()
}

/// Holds the connection open, silent, until the server stops or the client goes.
fn hold<C: Conn>(mut out: C, stop: &AtomicBool) -> std::io::Result<()> {
    out.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::SeqCst) {
        match out.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The answer to `POST /build`.
fn play<C: Conn>(mut out: C, build: Build, sent: &AtomicU64, stop: &AtomicBool) -> std::io::Result<()> {
    out.write_all(b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    match build {
        Build::BadChunking => {
            out.write_all(b"zz-not-a-chunk-size\r\n{\"stream\":\"Step 1/3\"}\r\n")?;
            out.flush()?;
        }
        Build::Garbage => {
            chunk(&mut out, status(Some("[1/3] FROM hostile"), None).as_bytes())?;
            chunk(&mut out, b"\x00\x17 this is not JSON \xff\xfe {{{ ]]\n")?;
        }
        Build::Stall => chunk(&mut out, status(Some("[3/3] RUN make"), None).as_bytes())?,
        Build::EndlessLogs => {
            chunk(&mut out, status(Some("[3/3] RUN yes"), None).as_bytes())?;
            let message = status(None, Some(&[b'y'; 1024]));
            while !stop.load(Ordering::SeqCst) {
                chunk(&mut out, message.as_bytes())?;
                sent.fetch_add(1024, Ordering::SeqCst);
            }
        }
    }
    hold(out, stop)
}

/// One line of Docker's build stream carrying BuildKit's status (`moby.buildkit.trace`: a
/// base64 protobuf `StatusResponse`): a started step `name`, and/or a log message `log` of it.
fn status(name: Option<&str>, log: Option<&[u8]>) -> String {
    const DIGEST: &[u8] = b"sha256:0000000000000000000000000000000000000000000000000000000000000001";
    let mut response = Vec::new();
    if let Some(name) = name {
        let mut vertex = field(1, DIGEST);
        vertex.extend(field(3, name.as_bytes()));
        // `started`: a Timestamp with seconds = 1.
        vertex.extend(field(5, &[0x08, 0x01]));
        response.extend(field(1, &vertex));
    }
    if let Some(msg) = log {
        let mut entry = field(1, DIGEST);
        entry.extend(field(4, msg));
        response.extend(field(3, &entry));
    }
    let aux = base64::engine::general_purpose::STANDARD.encode(response);
    format!("{{\"id\":\"moby.buildkit.trace\",\"aux\":\"{aux}\"}}\n")
}

/// A length-delimited protobuf field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

/// `release --backend buildkit` on `builders` (`tcp://` ones with the client certificate of
/// `certs`), the stream bounds lowered to `limits`.
fn release_on(repo: &Repo, registry: &str, builders: &[String], certs: Option<&Certs>, limits: &str) -> Run {
    let mut cmd = xtask_cmd();
    if let Some(certs) = certs {
        cmd.env("DOCKER_CERT_PATH", certs.client());
    }
    cmd.args(["release", "--channel", "edge", "--backend", "buildkit", "--base-mirror", &format!("{registry}/stellaops-it-bases")]);
    for b in builders {
        cmd.args(["--builder", b]);
    }
    cmd.arg("--source").arg(repo.path()).env("BKDEMO_TOKEN", "token").env("STELLAOPS_TEST_BUILDKIT_LIMITS", limits);
    Run::of(cmd.output().unwrap())
}

#[test]
fn test_server_playing_a_hostile_engine_garbage_bad_chunking_endless_logs_and_silence_each_fail_the_release_naming_the_builder() {
    let (Some(registry), Some(openssl)) = (crate::support::registry(), crate::support::tool("openssl")) else { return };
    let repo = repo_with(DOCKERFILE);
    let sockets = tempfile::tempdir().unwrap();
    let certs = Certs::make(&openssl, sockets.path());
    // (what the engine does, the bounds, what the error says, the note on dropping it)
    let misbehaved = "misbehaved";
    let cases: [(Build, &str, &[&str], &str); 4] = [
        (Build::Garbage, "idle=120,output=67108864", &["is not Docker's JSON status stream", "`bkdemo linux/amd64`"], misbehaved),
        // Read as a lost connection (bollard keeps only "error reading a body"): the engine
        // still answers its health check, so the job is tried on it again, then it is dropped.
        (
            Build::BadChunking,
            "idle=120,output=67108864",
            &["the connection to the engine was lost, or its answer is not valid HTTP"],
            "failed",
        ),
        (
            Build::EndlessLogs,
            "idle=120,output=1048576",
            &["sent more than 1 MiB of build output", "endless logs?", "`bkdemo linux/amd64`"],
            misbehaved,
        ),
        (Build::Stall, "idle=3", &["sent nothing for 3 s during the build", "stalled", "`bkdemo linux/amd64`"], misbehaved),
    ];
    // Each on a Unix socket, and on TCP behind mutual TLS (a remote builder).
    for ((build, limits, says, note), tls) in cases.into_iter().flat_map(|c| [(c, None), (c, Some(&certs))]) {
        let engine = TestServerPlayingAnEngine::start(sockets.path(), build, tls);
        let endpoint = engine.endpoint();
        let started = Instant::now();
        let run = release_on(&repo, &registry, std::slice::from_ref(&endpoint), tls, limits);
        let took = started.elapsed();
        let why = run.stderr.lines().find(|l| l.starts_with("  - ")).unwrap_or_default();
        eprintln!("{build:?} on `{endpoint}`: refused in {took:.1?}:\n{why}");
        assert_eq!(run.code, 3, "{build:?}: expected exit 3\nstderr:\n{}", run.stderr);
        assert!(engine.builds.load(Ordering::SeqCst) >= 1, "{build:?}: the build never reached the engine:\n{}", run.stderr);
        // Named: the builder, what it did, and the job's component.
        assert!(run.stderr.contains("no BuildKit endpoint is usable"), "{build:?}:\n{}", run.stderr);
        assert!(run.stderr.contains(&format!("`{endpoint}`: ")), "{build:?}: the builder is not named:\n{}", run.stderr);
        for s in says {
            assert!(run.stderr.contains(s), "{build:?}: no `{s}` in:\n{}", run.stderr);
        }
        assert!(run.stderr.contains(&format!("builder `{endpoint}` {note}")), "{build:?}:\n{}", run.stderr);
        assert!(run.stderr.contains("dropped from the pool"), "{build:?}:\n{}", run.stderr);
        assert!(!run.stderr.contains("internal error"), "{build:?}:\n{}", run.stderr);
        assert_nothing_released(&repo);
        if build == Build::EndlessLogs {
            // The client stopped reading soon after its bound: far less than unbounded.
            let sent = engine.sent.load(Ordering::SeqCst);
            eprintln!("EndlessLogs: {sent} bytes of log sent before the client stopped reading");
            assert!(sent < 16 << 20, "the endless log was read to {sent} bytes, past the 1 MiB bound");
        }
    }
}

#[test]
fn test_server_playing_a_hostile_engine_beside_a_healthy_one_loses_the_job_to_it() {
    let Some((docker_host, registry)) = crate::support::services() else { return };
    let repo = repo_with(DOCKERFILE);
    let sockets = tempfile::tempdir().unwrap();
    let engine = TestServerPlayingAnEngine::start(sockets.path(), Build::Garbage, None);
    let hostile = engine.endpoint();
    // The hostile one first: with both idle, the pool gives it the job.
    let run = release_on(&repo, &registry, &[hostile.clone(), docker_host.clone()], None, "");
    run.ok();
    assert_eq!(engine.builds.load(Ordering::SeqCst), 1, "the hostile engine got {} builds", engine.builds.load(Ordering::SeqCst));
    assert!(
        run.stderr.contains(&format!("builder `{hostile}` misbehaved"))
            && run.stderr.contains("is not Docker's JSON status stream")
            && run.stderr.contains("retrying `bkdemo linux/amd64` elsewhere"),
        "{}",
        run.stderr
    );
    let images: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.releases().join("2.4.1-edge/images.json")).unwrap()).unwrap();
    assert_eq!(images["components"]["bkdemo"]["images"][0]["buildkit"]["endpoint"], docker_host.as_str());
}
