//! The registry client (`oci::distribution::Client`, what `publish`, `verify --registry` and
//! `kit import docker://` speak through) against a hostile registry. A real hostile registry
//! cannot be installed, so `TestServerPlaying` here plays one: real HTTP on loopback, one
//! thread per connection, answering each request as the test says and recording what reached
//! it (request line and `Authorization` header). Each answer below must be refused, or time
//! out, with an error that says what happened; credentials never reach another host.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci::auth::{Credentials, Password};
use oci::distribution::{Client, DistError, RetryPolicy, Timeouts};
use schema::model::Digest;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// How the server answers one request.
enum Answer {
    /// Status line, headers, body.
    Full(&'static str, Vec<(&'static str, String)>, Vec<u8>),
    /// 200 with a chunked body that never ends.
    Endless,
    /// 200 declaring `len` bytes, sent one byte every `every`.
    Drip { len: usize, every: Duration },
}

type Handler = dyn Fn(&Seen) -> Answer + Send + Sync;

struct TestServerPlaying {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl TestServerPlaying {
    /// A server on `ip` (any address of 127/8 is loopback: a second "host").
    fn start(ip: &str, handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> TestServerPlaying {
        let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, h, st) = (s.clone(), handler.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &s, &*h, &st);
                });
            }
        });
        TestServerPlaying { addr, seen, stop }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestServerPlaying {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(mut conn: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler, stop: &AtomicBool) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end().to_owned();
            if line.is_empty() {
                break;
            }
            headers.push(line);
        }
        let header = |name: &str| {
            headers.iter().find_map(|h| h.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned()))
        };
        let len: usize = header("Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let mut parts = request_line.split_whitespace();
        let s = Seen {
            method: parts.next().unwrap_or_default().to_owned(),
            path: parts.next().unwrap_or_default().to_owned(),
            authorization: header("Authorization"),
        };
        seen.lock().unwrap().push(s.clone());
        match handler(&s) {
            Answer::Full(status, hs, body) => {
                let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in hs {
                    head += &format!("{k}: {v}\r\n");
                }
                head += "\r\n";
                conn.write_all(head.as_bytes())?;
                conn.write_all(&body)?;
            }
            Answer::Endless => {
                conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n",
                )?;
                let chunk = vec![b' '; 64 << 10];
                while !stop.load(Ordering::SeqCst) {
                    conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                    conn.write_all(&chunk)?;
                    conn.write_all(b"\r\n")?;
                }
                return Ok(());
            }
            Answer::Drip { len, every } => {
                conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())?;
                for _ in 0..len {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    conn.write_all(b"{")?;
                    std::thread::sleep(every);
                }
                return Ok(());
            }
        }
    }
}

fn ok(body: impl Into<Vec<u8>>, content_type: &str) -> Answer {
    Answer::Full("200 OK", vec![("Content-Type", content_type.to_owned())], body.into())
}

/// A client with a short retry policy (transient failures are retried once).
fn client(host: &str, creds: Option<Credentials>) -> Client {
    Client::new(host, creds, RetryPolicy { attempts: 2, base: Duration::from_millis(10), max: Duration::from_millis(10) })
}

fn creds() -> Credentials {
    Credentials { username: "alice".into(), password: Password::new("s3cret-for-one-host".into()), source: "the test".into() }
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn test_server_playing_a_hostile_registry_serves_a_manifest_and_a_blob_not_matching_their_digests_and_both_are_refused() {
    let asked = Digest::of(b"what was asked for");
    let server = TestServerPlaying::start("127.0.0.1", |_| ok(&b"{\"schemaVersion\":2,\"something\":\"else\"}"[..], MANIFEST));
    let c = client(&server.addr, None);
    let e = c.get_manifest("stellaops/x", asked.as_str()).unwrap_err();
    assert!(matches!(&e, DistError::DigestMismatch { expected, .. } if *expected == asked), "{e}");
    assert_eq!(e.exit_code(), schema::exit::REJECTED);
    let e = c.get_blob("stellaops/x", &asked, 1 << 20).unwrap_err();
    assert!(matches!(&e, DistError::DigestMismatch { .. }), "{e}");
    assert!(e.to_string().contains(asked.as_str()), "{e}");
    // Refusals are not retried: one request each.
    assert_eq!(server.seen().len(), 2, "{:?}", server.seen());
}

#[test]
fn test_server_playing_a_hostile_registry_a_manifest_over_4_mib_and_an_endless_body_are_refused_at_the_limit_without_retrying() {
    let big = vec![b' '; usize::try_from(oci::distribution::MANIFEST_LIMIT).unwrap() + 1];
    let server =
        TestServerPlaying::start(
            "127.0.0.1",
            move |s| if s.path.contains("endless") { Answer::Endless } else { ok(big.clone(), MANIFEST) },
        );
    let c = client(&server.addr, None);
    for repo in ["stellaops/big", "stellaops/endless"] {
        let started = Instant::now();
        let e = c.get_manifest(repo, "2.4.1").unwrap_err();
        assert!(matches!(&e, DistError::TooLarge { limit, .. } if *limit == 4 << 20), "{repo}: {e}");
        assert!(e.to_string().contains("larger than the 4194304 bytes"), "{e}");
        assert_eq!(e.exit_code(), schema::exit::REJECTED);
        assert!(started.elapsed() < Duration::from_secs(30), "{repo}: {:?}", started.elapsed());
    }
    assert_eq!(server.seen().len(), 2, "refused, not retried: {:?}", server.seen());
}

#[test]
fn test_server_playing_a_hostile_registry_a_slow_drip_body_times_out_naming_the_registry() {
    let server = TestServerPlaying::start("127.0.0.1", |_| Answer::Drip { len: 10_000, every: Duration::from_millis(50) });
    let c = client(&server.addr, None).with_timeouts(Timeouts {
        connect: Duration::from_secs(5),
        response: Duration::from_secs(5),
        body: Duration::from_secs(1),
    });
    let started = Instant::now();
    let e = c.get_manifest("stellaops/x", "2.4.1").unwrap_err();
    // Two tries of one second each, not the 500 seconds the drip would take.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(matches!(&e, DistError::Transport { .. }), "{e}");
    assert!(e.to_string().contains(&server.addr) && e.to_string().contains("timeout"), "{e}");
    assert_eq!(e.exit_code(), schema::exit::ENVIRONMENT);
}

#[test]
fn test_server_playing_a_hostile_registry_a_redirect_loop_is_refused_after_5_redirects_without_retrying() {
    let server =
        TestServerPlaying::start("127.0.0.1", |s| Answer::Full("307 Temporary Redirect", vec![("Location", s.path.clone())], Vec::new()));
    let c = client(&server.addr, None);
    let e = c.get_manifest("stellaops/x", "2.4.1").unwrap_err();
    assert!(matches!(&e, DistError::Protocol { .. }), "{e}");
    assert!(e.to_string().contains("redirect loop"), "{e}");
    let n = server.seen().len();
    assert!((6..=7).contains(&n), "the request and its redirects, once, not retried: {:?}", server.seen());
}

#[test]
fn test_server_playing_a_hostile_registry_a_token_realm_and_a_redirect_on_another_host_never_receive_the_credentials() {
    // The second "host": another loopback address, where the token service and the redirect point.
    let elsewhere = TestServerPlaying::start("127.0.0.2", |s| {
        if s.path.starts_with("/token") {
            Answer::Full("401 Unauthorized", vec![], b"{}".to_vec())
        } else {
            ok(&b"{}"[..], MANIFEST)
        }
    });
    let other = elsewhere.addr.clone();
    let expected = creds().basic();
    // The registry: Basic auth for manifests (then a redirect to the other host); a bearer
    // challenge whose realm is on the other host for referrers.
    let registry = TestServerPlaying::start("127.0.0.1", move |s| {
        if s.path.contains("/referrers/") {
            let challenge = format!(r#"Bearer realm="http://{other}/token",service="registry""#);
            return Answer::Full("401 Unauthorized", vec![("WWW-Authenticate", challenge)], b"{}".to_vec());
        }
        if s.authorization.as_deref() != Some(expected.as_str()) {
            return Answer::Full("401 Unauthorized", vec![("WWW-Authenticate", r#"Basic realm="r""#.to_owned())], b"{}".to_vec());
        }
        Answer::Full("302 Found", vec![("Location", format!("http://{other}/elsewhere{}", s.path))], Vec::new())
    });
    let c = client(&registry.addr, Some(creds()));
    let fetched = c.get_manifest("stellaops/x", "2.4.1").unwrap().unwrap();
    assert_eq!(fetched.bytes, b"{}");
    let e = c.referrers("stellaops/x", &Digest::of(b"x")).unwrap_err();
    assert!(matches!(&e, DistError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("are not sent to another host"), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");

    let reached = elsewhere.seen();
    assert!(reached.iter().any(|s| s.path.starts_with("/token")), "the token service was asked: {reached:?}");
    assert!(reached.iter().any(|s| s.path.starts_with("/elsewhere/")), "the redirect was followed: {reached:?}");
    for s in &reached {
        assert_eq!(s.authorization, None, "an Authorization header reached the other host: {} {}", s.method, s.path);
    }
    assert!(registry.seen().iter().any(|s| s.authorization.is_some()), "the registry itself got the credentials");
}

#[test]
fn test_server_playing_a_hostile_registry_malformed_json_and_error_bodies_are_refused_with_a_short_quote() {
    let tokens = TestServerPlaying::start("127.0.0.1", |_| ok(&b"{\"token\": 42,"[..], "application/json"));
    let realm = format!("http://{}/token", tokens.addr);
    let registry = TestServerPlaying::start("127.0.0.1", move |s| {
        if s.path.contains("/referrers/") {
            return ok(&b"{\"schemaVersion\": 2, \"manifests\": [{\"digest\": \"md5:x\"}"[..], "application/vnd.oci.image.index.v1+json");
        }
        if s.path.contains("/manifests/") {
            let mut body = b"<html>".to_vec();
            body.extend(vec![b'x'; 1 << 20]);
            return Answer::Full("400 Bad Request", vec![], body);
        }
        Answer::Full("401 Unauthorized", vec![("WWW-Authenticate", format!("Bearer realm=\"{realm}\""))], Vec::new())
    });
    let c = client(&registry.addr, None);
    // A referrers index that is not JSON.
    let e = c.referrers("stellaops/x", &Digest::of(b"x")).unwrap_err();
    assert!(e.to_string().contains("not an image index"), "{e}");
    // An error body of a megabyte: quoted, at most 300 characters of it.
    let e = c.get_manifest("stellaops/x", "2.4.1").unwrap_err();
    assert!(matches!(&e, DistError::Status { status: 400, body, .. } if body.starts_with("<html>") && body.chars().count() <= 300), "{e}");
    // A token service answering broken JSON.
    let e = c.blob_exists("stellaops/x", &Digest::of(b"x")).unwrap_err();
    assert!(e.to_string().contains("sent no token"), "{e}");
}

/// A one-image layout: a config, a layer, a manifest named `app` in `index.json`.
fn tiny_layout(dir: &std::path::Path) {
    let layout = oci::Layout::create(dir).unwrap();
    let config = layout.put_blob(oci::MEDIA_CONFIG, b"{\"architecture\":\"amd64\",\"os\":\"linux\"}").unwrap();
    let layer = layout.put_blob(oci::MEDIA_LAYER_GZIP, b"not really gzip, the registry does not look").unwrap();
    let manifest = oci::Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
        config,
        layers: vec![layer],
        subject: None,
        annotations: Default::default(),
    };
    let mut d = layout.put_json(oci::MEDIA_MANIFEST, &manifest).unwrap();
    d.annotations.insert(oci::ANNOTATION_REF_NAME.to_owned(), "app".to_owned());
    let index = oci::Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_INDEX.to_owned()),
        manifests: vec![d],
        annotations: Default::default(),
    };
    layout.write_index(&index).unwrap();
}

#[test]
fn test_server_playing_a_hostile_registry_that_reports_other_digests_than_it_was_sent_gets_no_tag() {
    // Blob uploads answer with the digest of other content; with `lie_about_manifests`, manifest
    // puts too (the blobs then check out).
    for lie_about_manifests in [false, true] {
        let other = Digest::of(b"something else").to_string();
        let lie = other.clone();
        let server = TestServerPlaying::start("127.0.0.1", move |s| {
            let digest_of_put = s.path.split("digest=").nth(1).map(|d| d.replace("%3A", ":")).unwrap_or_default();
            match (s.method.as_str(), s.path.as_str()) {
                ("GET", "/v2/") => ok(&b"{}"[..], "application/json"),
                ("HEAD", p) if p.contains("/blobs/") => Answer::Full("404 Not Found", vec![], Vec::new()),
                ("POST", p) if p.contains("/blobs/uploads/") => {
                    Answer::Full("202 Accepted", vec![("Location", "/v2/stellaops/app/blobs/uploads/1".to_owned())], Vec::new())
                }
                ("PUT", p) if p.contains("/blobs/uploads/") => {
                    let reported = if lie_about_manifests { digest_of_put } else { lie.clone() };
                    Answer::Full("201 Created", vec![("Docker-Content-Digest", reported)], Vec::new())
                }
                ("PUT", p) if p.contains("/manifests/") => {
                    Answer::Full("201 Created", vec![("Docker-Content-Digest", lie.clone())], Vec::new())
                }
                _ => Answer::Full("404 Not Found", vec![], Vec::new()),
            }
        });
        let dir = tempfile::tempdir().unwrap();
        tiny_layout(&dir.path().join("images"));
        let target: oci::distribution::RegistryTarget = format!("{}/stellaops", server.addr).parse().unwrap();
        let opts = oci::push::PushOptions {
            tags: vec!["2.4.1".to_owned(), "edge".to_owned()],
            retry: RetryPolicy { attempts: 2, base: Duration::from_millis(10), max: Duration::from_millis(10) },
            docker_config: Some(dir.path().join("no-docker-config.json")),
            ..Default::default()
        };
        let e = oci::push::push_layout(&dir.path().join("images"), &target, &opts, &schema::report::Silent).unwrap_err();
        assert!(e.to_string().contains("the registry says it stored") && e.to_string().contains(&other), "{e}");
        assert_eq!(e.exit_code(), schema::exit::REJECTED, "{e}");
        let seen = server.seen();
        assert!(seen.iter().any(|s| s.method == "PUT"), "something was pushed: {seen:?}");
        let tagged: Vec<&Seen> =
            seen.iter().filter(|s| s.method == "PUT" && s.path.contains("/manifests/") && !s.path.contains("sha256:")).collect();
        assert!(tagged.is_empty(), "a tag was written: {tagged:?}");
    }
}
