//! Publishing a release to registries: Debian's docker-registry (distribution 2.8: no referrers
//! API) started by each test on loopback and read back with skopeo; `TestServerPlaying*`, a
//! small HTTP server in this file in front of that real registry, plays what cannot be
//! installed here: a registry that serves the referrers API behind a bearer token service, and
//! a faulty network that drops connections and answers 503 on a schedule.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;

use crate::support::{run_ok, tool, xtask_cmd, Repo, Run};

/// One release for every test of this module (each publishes it to its own registry).
fn release() -> &'static Path {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE.get_or_init(|| {
        let repo = Box::leak(Box::new(Repo::new()));
        repo.xtask(&["release", "--channel", "edge"]).ok();
        repo.releases().join("2.4.1-edge")
    })
}

fn dev_pub() -> PathBuf {
    release().parent().unwrap().parent().unwrap().join("keys/dev.pub")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_ok(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("HTTP/")
}

/// Debian's docker-registry, private to one test, stopped (by its pid) when dropped.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&Path>) -> Option<Registry> {
        Registry::start_on(free_port(), htpasswd)
    }

    fn start_on(port: u16, htpasswd: Option<&Path>) -> Option<Registry> {
        let bin = tool("docker-registry")?;
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let auth =
            htpasswd.map(|p| format!("auth:\n  htpasswd:\n    realm: stellaops-test\n    path: {}\n", p.display())).unwrap_or_default();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n{auth}http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let r = Registry { child, addr, _dir: dir };
        for _ in 0..150 {
            if http_ok(&r.addr) {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry on {} did not start", r.addr);
    }

    fn target(&self) -> String {
        format!("{}/stellaops", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the test server in front of the registry does.
#[derive(Debug, Default, Clone)]
struct Behaviour {
    /// Answer 503 to every n-th request.
    fail_every: Option<usize>,
    /// Close the connection without an answer on every n-th request.
    drop_every: Option<usize>,
    /// Serve `GET /v2/<name>/referrers/<digest>` and answer `OCI-Subject` to manifests with
    /// a subject, as an OCI 1.1 registry does.
    referrers_api: bool,
    /// Demand bearer tokens from its own token service, given for this user and password.
    bearer: Option<(String, String)>,
    /// Wait this long before each answer.
    delay: Duration,
}

/// A small HTTP server in front of a real registry: forwards every request, one per
/// connection, and plays the parts of [`Behaviour`]. Every request line is logged.
struct TestServerPlaying {
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

type Referrers = Arc<Mutex<BTreeMap<(String, String), Vec<serde_json::Value>>>>;

impl TestServerPlaying {
    fn start(upstream: &str, behaviour: Behaviour) -> TestServerPlaying {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let referrers: Referrers = Arc::default();
        let (upstream, a, l, s) = (upstream.to_owned(), addr.clone(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (up, b, a, l, c, r) = (upstream.clone(), behaviour.clone(), a.clone(), l.clone(), count.clone(), referrers.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &b, &a, &l, &c, &r);
                });
            }
        });
        TestServerPlaying { addr, log, stop }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestServerPlaying {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)
}

fn serve(
    mut conn: TcpStream,
    upstream: &str,
    b: &Behaviour,
    addr: &str,
    log: &Mutex<Vec<String>>,
    count: &AtomicUsize,
    referrers: &Referrers,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
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
    assert!(header("Transfer-Encoding").is_none(), "the test server reads Content-Length bodies only: {request_line}");
    let len: usize = header("Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    log.lock().unwrap().push(format!("{method} {path}"));
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    std::thread::sleep(b.delay);
    if b.drop_every.is_some_and(|k| n.is_multiple_of(k)) {
        return Ok(()); // dropped: no answer
    }
    if b.fail_every.is_some_and(|k| n.is_multiple_of(k)) {
        return respond(&mut conn, "503 Service Unavailable", &[], b"playing an overloaded registry");
    }
    if let Some((user, pass)) = &b.bearer {
        if path.starts_with("/token") {
            let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
            return if header("Authorization").as_deref() == Some(expected.as_str()) {
                respond(&mut conn, "200 OK", &[("Content-Type", "application/json".into())], br#"{"token":"test-token-1"}"#)
            } else {
                respond(&mut conn, "401 Unauthorized", &[], b"{}")
            };
        }
        if header("Authorization").as_deref() != Some("Bearer test-token-1") {
            let challenge = format!(r#"Bearer realm="http://{addr}/token",service="stellaops-test""#);
            return respond(&mut conn, "401 Unauthorized", &[("WWW-Authenticate", challenge)], b"{}");
        }
    }
    // /v2/<name>/referrers/<digest>
    if b.referrers_api && method == "GET" {
        if let Some((name, digest)) = path.strip_prefix("/v2/").and_then(|p| p.split_once("/referrers/")) {
            let list = referrers.lock().unwrap().get(&(name.to_owned(), digest.to_owned())).cloned().unwrap_or_default();
            let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": list});
            return respond(
                &mut conn,
                "200 OK",
                &[("Content-Type", "application/vnd.oci.image.index.v1+json".into())],
                &serde_json::to_vec(&index).unwrap(),
            );
        }
    }
    // Forward, one request per connection.
    let mut up = TcpStream::connect(upstream)?;
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for h in headers.iter().filter(|h| {
        let k = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
        k != "connection" && k != "authorization" || (b.bearer.is_none() && k == "authorization")
    }) {
        out += h;
        out += "\r\n";
    }
    out += "Connection: close\r\n\r\n";
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    let mut extra = String::new();
    if b.referrers_api && method == "PUT" && answer.starts_with(b"HTTP/1.1 201") {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let (Some(subject), Some(name)) =
            (v["subject"]["digest"].as_str(), path.strip_prefix("/v2/").and_then(|p| p.split_once("/manifests/")).map(|(n, _)| n))
        {
            let digest = format!("sha256:{:x}", sha2::Sha256::digest(&body));
            let mut d =
                serde_json::json!({"mediaType": v["mediaType"], "digest": digest, "size": body.len(), "artifactType": v["artifactType"]});
            if v["annotations"].is_object() {
                d["annotations"] = v["annotations"].clone();
            }
            let mut map = referrers.lock().unwrap();
            let list = map.entry((name.to_owned(), subject.to_owned())).or_default();
            if !list.iter().any(|x| x["digest"] == d["digest"]) {
                list.push(d);
            }
            extra = format!("OCI-Subject: {subject}\r\n");
        }
    }
    if !extra.is_empty() {
        let at = answer.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        answer.splice(at..at, extra.into_bytes());
    }
    conn.write_all(&answer)
}

fn publish(target: &str, extra: &[&str]) -> Run {
    let mut cmd = xtask_cmd();
    cmd.arg("publish").arg(release()).args(["--registry", target, "--json"]).args(extra);
    Run::of(cmd.output().unwrap())
}

fn verify_registry(target: &str, extra: &[&str]) -> Run {
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(release()).arg("--key").arg(dev_pub()).args(["--registry", target, "--json"]).args(extra);
    Run::of(cmd.output().unwrap())
}

/// (component, index digest) from release.yaml.
fn released_images() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(release().join("release.yaml")).unwrap();
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c["image"].as_str().unwrap().rsplit_once('@').unwrap().1.to_owned()))
        .collect()
}

/// Referrers in the release layout: subject digest -> (referrer digest, artifactType).
fn layout_referrers() -> BTreeMap<String, Vec<(String, String)>> {
    let layout = release().join("images");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for d in index["manifests"].as_array().unwrap().iter().filter(|d| d["annotations"]["org.opencontainers.image.ref.name"].is_null()) {
        let digest = d["digest"].as_str().unwrap();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()).unwrap();
        assert_eq!(m["artifactType"], d["artifactType"], "index.json pulls up the artifactType");
        out.entry(m["subject"]["digest"].as_str().unwrap().to_owned())
            .or_default()
            .push((digest.to_owned(), m["artifactType"].as_str().unwrap().to_owned()));
    }
    out
}

fn skopeo_raw(skopeo: &Path, reference: &str) -> Vec<u8> {
    run_ok(Command::new(skopeo).args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{reference}"))).into_bytes()
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(b))
}

#[test]
fn the_release_layout_holds_every_referrer_with_subject_and_artifact_type() {
    let refs = layout_referrers();
    let images = released_images();
    assert_eq!(images.len(), 8);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for list in refs.values() {
        for (_, t) in list {
            *kinds.entry(t.clone()).or_default() += 1;
        }
    }
    // 16 platform images x (SBOM JSON, SBOM protobuf, 3 envelopes: SBOM JSON, SBOM protobuf,
    // provenance; signature) + 8 indexes x (signature, drift report, drift envelope).
    assert_eq!(refs.len(), 24, "every index and platform manifest is a subject");
    assert_eq!(kinds["application/vnd.cyclonedx+json"], 16);
    assert_eq!(kinds["application/x.vnd.cyclonedx+protobuf"], 16);
    assert_eq!(kinds["application/vnd.dsse.envelope.v1+json"], 16 * 3 + 8);
    assert_eq!(kinds["application/vnd.dev.cosign.artifact.sig.v1+json"], 24);
    assert_eq!(kinds["application/vnd.stellaops.drift-report.v1+json"], 8);
    for (_, index) in images {
        assert_eq!(refs[&index].len(), 3, "the index has its signature and the drift report");
    }
}

#[test]
fn publishes_to_debian_registry_by_digest_with_fallback_referrers_verifies_and_a_second_publish_changes_nothing() {
    let (Some(reg), Some(skopeo)) = (Registry::start(None), tool("skopeo")) else { return };
    let target = reg.target();
    let run = publish(&target, &[]);
    run.ok();
    let report = &run.json()["publish"]["destinations"][0];
    assert_eq!(report["status"], "published");
    assert_eq!(report["push"]["referrers_mode"], "fallback", "distribution 2.8 has no referrers API");
    assert_eq!(report["push"]["referrers"], 120);
    // skopeo reads the same digests as release.yaml, by tag and by digest.
    for (name, digest) in released_images() {
        for reference in [format!("{target}/{name}:2.4.1"), format!("{target}/{name}:edge"), format!("{target}/{name}@{digest}")] {
            assert_eq!(sha256(&skopeo_raw(&skopeo, &reference)), digest, "{reference}");
        }
    }
    // The fallback index of every subject lists every referrer, with its artifactType.
    let owners: BTreeMap<String, String> = released_images().into_iter().map(|(n, d)| (d, n)).collect();
    for (subject, expected) in layout_referrers() {
        let repo = owners.get(&subject).cloned().unwrap_or_else(|| {
            // A platform manifest: its component's index lists it.
            released_images()
                .into_iter()
                .find(|(_, d)| std::fs::read_to_string(release().join("images/blobs/sha256").join(&d[7..])).unwrap().contains(&subject))
                .unwrap()
                .0
        });
        let raw = skopeo_raw(&skopeo, &format!("{target}/{repo}:sha256-{}", &subject[7..]));
        let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let listed: Vec<(String, String)> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["digest"].as_str().unwrap().to_owned(), d["artifactType"].as_str().unwrap_or("MISSING").to_owned()))
            .collect();
        assert_eq!(listed, expected, "fallback index of {subject}");
    }
    let v = verify_registry(&target, &[]);
    v.ok();
    assert_eq!(v.json()["verified"], true);
    // Publishing twice changes nothing: nothing uploaded or put, every tag where it was.
    let tags_before = run_ok(Command::new(&skopeo).args(["list-tags", "--tls-verify=false"]).arg(format!("docker://{target}/authority")));
    let again = publish(&target, &[]);
    again.ok();
    let p = &again.json()["publish"]["destinations"][0]["push"];
    for counter in ["blobs_uploaded", "blobs_mounted", "manifests_put", "fallback_indexes_written", "signature_tags_written"] {
        assert_eq!(p[counter], 0, "{counter} on a second publish: {p}");
    }
    let tags_after = run_ok(Command::new(&skopeo).args(["list-tags", "--tls-verify=false"]).arg(format!("docker://{target}/authority")));
    assert_eq!(tags_before, tags_after);
    // The doctor sees a registry without the referrers API.
    let mut cmd = xtask_cmd();
    cmd.args(["doctor", "registries", "--registry", &target, "--json"]);
    let d = Run::of(cmd.output().unwrap());
    d.ok();
    let caps = &d.json()["registries"][0];
    assert_eq!(
        (caps["reachable"].as_bool(), caps["referrers"].as_str(), caps["auth"].as_str()),
        (Some(true), Some("fallback"), Some("none"))
    );
}

#[test]
fn test_server_playing_a_registry_with_the_referrers_api_and_bearer_tokens_gives_the_same_verified_state() {
    let Some(reg) = Registry::start(None) else { return };
    let front = TestServerPlaying::start(
        &reg.addr,
        Behaviour { referrers_api: true, bearer: Some(("ci".into(), "tok-pass".into())), ..Default::default() },
    );
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("ci:tok-pass");
    std::fs::write(config.path().join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, front.addr)).unwrap();
    let target = format!("{}/stellaops", front.addr);
    let docker_config = config.path().join("config.json");
    let run = publish(&target, &["--docker-config", docker_config.to_str().unwrap()]);
    run.ok();
    let p = &run.json()["publish"]["destinations"][0]["push"];
    assert_eq!(p["referrers_mode"], "api");
    assert_eq!(p["fallback_indexes_written"], 0, "no fallback tags where the API is served");
    assert_eq!(p["referrers"], 120);
    assert!(front.requests().iter().any(|r| r.starts_with("GET /token")), "the bearer token flow ran");
    // No `sha256-<hex>` fallback tag in the registry behind it, only cosign's `.sig` tags.
    let tags = |repo: &str| -> Vec<String> {
        let mut s = TcpStream::connect(&reg.addr).unwrap();
        write!(s, "GET /v2/stellaops/{repo}/tags/list HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        serde_json::from_str::<serde_json::Value>(body).unwrap()["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    };
    let t = tags("authority");
    assert!(t.iter().all(|t| t == "2.4.1" || t == "edge" || t.ends_with(".sig")), "{t:?}");
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(release()).arg("--key").arg(dev_pub()).args([
        "--registry",
        &target,
        "--json",
        "--docker-config",
        docker_config.to_str().unwrap(),
    ]);
    let v = Run::of(cmd.output().unwrap());
    v.ok();
    // A wrong password is refused by the token service, clearly, and never printed.
    std::fs::write(
        config.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"username":"ci","password":"wrong-pass-77"}}}}}}"#, front.addr),
    )
    .unwrap();
    let bad = publish(&target, &["--docker-config", docker_config.to_str().unwrap(), "-vv"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("refused the credentials of `ci`"), "{}", bad.stderr);
    assert!(!bad.stderr.contains("wrong-pass-77") && !bad.stdout.contains("wrong-pass-77"));
}

/// Issue 14: `verify --registry` checks every platform's referrers against the digests
/// release.yaml states. A release whose layout hangs the linux/amd64 protobuf SBOM on the
/// linux/arm64 image of `signer` (a genuine blob, in a well-formed referrer) publishes, and
/// verify names the referrer and the digest release.yaml states.
#[test]
fn verify_registry_names_an_arm64_protobuf_sbom_that_is_not_the_one_release_yaml_states() {
    let Some(reg) = Registry::start(None) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("release");
    run_ok(Command::new("cp").arg("-a").arg(release()).arg(&dir));
    let layout = dir.join("images");
    let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let doc: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(dir.join("release.yaml")).unwrap()).unwrap();
    let signer = doc["components"].as_array().unwrap().iter().find(|c| c["name"] == "signer").unwrap();
    let stated = |i: usize, k: &str| signer["platforms"][i][k].as_str().unwrap().rsplit_once('@').unwrap().1.to_owned();
    let (amd64_pb, arm64_pb, arm64_image) = (stated(0, "sbomProtobuf"), stated(1, "sbomProtobuf"), stated(1, "image"));
    let path = layout.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut swapped = 0;
    for d in index["manifests"].as_array_mut().unwrap() {
        if d["artifactType"] != "application/x.vnd.cyclonedx+protobuf" {
            continue;
        }
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(d["digest"].as_str().unwrap())).unwrap()).unwrap();
        if m["subject"]["digest"] != arm64_image.as_str() {
            continue;
        }
        assert_eq!(m["layers"][0]["digest"], arm64_pb.as_str());
        m["layers"][0]["digest"] = amd64_pb.clone().into();
        m["layers"][0]["size"] = std::fs::metadata(blob(&amd64_pb)).unwrap().len().into();
        let bytes = serde_json::to_vec(&m).unwrap();
        let digest = sha256(&bytes);
        std::fs::write(blob(&digest), &bytes).unwrap();
        d["digest"] = digest.into();
        d["size"] = bytes.len().into();
        swapped += 1;
    }
    assert_eq!(swapped, 1);
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    let mut cmd = xtask_cmd();
    cmd.arg("publish").arg(&dir).args(["--registry", &reg.target(), "--json"]);
    Run::of(cmd.output().unwrap()).ok();
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(&dir).arg("--key").arg(dev_pub()).args(["--registry", &reg.target()]);
    let v = Run::of(cmd.output().unwrap());
    assert_eq!(v.code, 1, "{}\n{}", v.stdout, v.stderr);
    let failed: Vec<&str> = v.stdout.lines().filter(|l| l.starts_with("[FAIL]")).collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(failed[0].contains("signer linux/arm64: referrer sbom-cyclonedx-protobuf"), "{}", failed[0]);
    assert!(failed[0].contains(&format!("it holds `{amd64_pb}`, release.yaml states `{arm64_pb}`")), "{}", failed[0]);
    // The release as made verifies on the same registry once published whole.
    let good = Registry::start(None).unwrap();
    publish(&good.target(), &[]).ok();
    verify_registry(&good.target(), &[]).ok();
}

#[test]
fn faulty_proxy_dropping_connections_and_answering_503_on_a_schedule_publish_completes_with_retries() {
    let Some(reg) = Registry::start(None) else { return };
    let front = TestServerPlaying::start(&reg.addr, Behaviour { fail_every: Some(7), drop_every: Some(11), ..Default::default() });
    let target = format!("{}/stellaops", front.addr);
    // About one request in four fails, and an upload is several requests, restarted whole on a
    // failure: with four repositories at once an upload can draw several failures in a row, so
    // the test allows more tries than the default 7 (a real registry fails far less often).
    let run = publish(&target, &["--retry-base-ms", "5", "--retries", "30"]);
    run.ok();
    let p = &run.json()["publish"]["destinations"][0]["push"];
    assert!(p["retries"].as_u64().unwrap() > 20, "{p}");
    // Everything is there, read straight from the registry.
    verify_registry(&reg.target(), &[]).ok();
}

#[test]
fn killed_midway_resume_finishes_without_reuploading_and_no_tag_points_at_an_incomplete_release() {
    let (Some(reg), Some(skopeo)) = (Registry::start(None), tool("skopeo")) else { return };
    // Slow enough to be killed in the middle of its uploads.
    let slow = TestServerPlaying::start(&reg.addr, Behaviour { delay: Duration::from_millis(15), ..Default::default() });
    let target = format!("{}/stellaops", slow.addr);
    let journal = release().join("publish").join(format!("{}.journal", target.replace(['/', ':'], "_")));
    let mut child = xtask_cmd().arg("publish").arg(release()).args(["--registry", &target, "--quiet"]).spawn().unwrap();
    loop {
        let lines = std::fs::read_to_string(&journal).map(|t| t.lines().count()).unwrap_or(0);
        if lines > 60 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "publish finished before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // No version or channel tag anywhere.
    for (name, _) in released_images() {
        let out = Command::new(&skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/{name}:2.4.1", reg.target()))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}:2.4.1 exists after a killed publish");
    }
    let done: Vec<String> =
        std::fs::read_to_string(&journal).unwrap().lines().skip(1).filter_map(|l| serde_json::from_str(l).ok()).collect();
    // (repository, digest) of each blob the journal records as in place.
    let uploaded_before: Vec<(String, String)> =
        done.iter().filter_map(|s| s.strip_prefix("blob ")?.split_once(' ')).map(|(r, d)| (r.to_owned(), d.to_owned())).collect();
    assert!(!uploaded_before.is_empty());
    // Resume through a counting server.
    let counting = TestServerPlaying::start(&reg.addr, Behaviour::default());
    let target2 = format!("{}/stellaops", counting.addr);
    // The journal is named after the target: carry it over to the new address.
    std::fs::copy(&journal, release().join("publish").join(format!("{}.journal", target2.replace(['/', ':'], "_")))).unwrap();
    let text = std::fs::read_to_string(release().join("publish").join(format!("{}.journal", target2.replace(['/', ':'], "_")))).unwrap();
    std::fs::write(
        release().join("publish").join(format!("{}.journal", target2.replace(['/', ':'], "_"))),
        text.replacen(&target, &target2, 1),
    )
    .unwrap();
    let run = publish(&target2, &["--resume"]);
    run.ok();
    let p = &run.json()["publish"]["destinations"][0]["push"];
    assert!(p["resumed_steps"].as_u64().unwrap() >= uploaded_before.len() as u64, "{p}");
    let requests = counting.requests();
    for (repo, d) in &uploaded_before {
        // Neither uploaded (`PUT .../uploads/<id>?digest=`) nor mounted (`POST ...?mount=`)
        // into that repository again.
        let again = requests.iter().find(|r| r.contains(&format!("/v2/{repo}/blobs/uploads/")) && r.contains(d.as_str()));
        assert!(again.is_none(), "{repo} {d} was sent again: {again:?}");
    }
    verify_registry(&reg.target(), &[]).ok();
}

#[test]
fn htpasswd_registry_publishes_from_a_docker_config_and_a_wrong_password_fails_without_leaking_it() {
    let Some(htpasswd) = tool("htpasswd") else { return };
    let dir = tempfile::tempdir().unwrap();
    let entry = run_ok(Command::new(htpasswd).args(["-Bbn", "stella", "c0rrect-h0rse"]));
    std::fs::write(dir.path().join("htpasswd"), entry.trim()).unwrap();
    let Some(reg) = Registry::start(Some(&dir.path().join("htpasswd"))) else { return };
    let config = dir.path().join("config.json");
    let write = |user: &str, pass: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        std::fs::write(&config, format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr)).unwrap();
    };
    // No credentials: a clear refusal.
    let none = publish(&reg.target(), &["--docker-config", dir.path().join("absent.json").to_str().unwrap()]);
    assert_eq!(none.code, 1, "{}", none.stderr);
    assert!(none.stderr.contains("none are configured"), "{}", none.stderr);
    write("stella", "wr0ng-battery");
    let bad = Run::of(
        xtask_cmd()
            .args(["-vv", "publish"])
            .arg(release())
            .args(["--registry", &reg.target(), "--docker-config", config.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("refused the credentials of `stella`"), "{}", bad.stderr);
    let b64 = base64::engine::general_purpose::STANDARD.encode("stella:wr0ng-battery");
    for secret in ["wr0ng-battery", b64.as_str()] {
        assert!(!bad.stderr.contains(secret) && !bad.stdout.contains(secret), "the password leaked");
    }
    write("stella", "c0rrect-h0rse");
    let ok = Run::of(
        xtask_cmd()
            .args(["-vv", "publish"])
            .arg(release())
            .args(["--registry", &reg.target(), "--docker-config", config.to_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    ok.ok();
    assert!(!ok.stderr.contains("c0rrect-h0rse") && !ok.stdout.contains("c0rrect-h0rse"));
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(release()).arg("--key").arg(dev_pub()).args([
        "--registry",
        &reg.target(),
        "--docker-config",
        config.to_str().unwrap(),
    ]);
    Run::of(cmd.output().unwrap()).ok();
}

#[test]
fn a_mirror_that_is_down_is_reported_and_retried_by_resume_and_fails_the_release_only_when_required() {
    let (Some(primary), Some(skopeo)) = (Registry::start(None), tool("skopeo")) else { return };
    let port = free_port();
    let mirror = format!("127.0.0.1:{port}/stellaops");
    let fast = ["--retries", "2", "--retry-base-ms", "5"];
    // Optional: the primary is published and tagged, the mirror reported.
    let run = publish(&primary.target(), &[&["--mirror", &mirror][..], &fast].concat());
    run.ok();
    let d = &run.json()["publish"]["destinations"];
    assert_eq!((d[0]["status"].as_str(), d[1]["status"].as_str()), (Some("published"), Some("failed")));
    assert!(run.stderr.contains("--resume"), "{}", run.stderr);
    assert_eq!(sha256(&skopeo_raw(&skopeo, &format!("{}/authority:edge", primary.target()))), released_images()[0].1);
    // Required, on a fresh primary: the release fails and nothing is tagged.
    let Some(other) = Registry::start(None) else { return };
    let failed = publish(&other.target(), &[&["--mirror", &mirror, "--mirrors-required"][..], &fast].concat());
    assert_eq!(failed.code, 3, "{}", failed.stderr);
    assert!(failed.stderr.contains("no tag was written"), "{}", failed.stderr);
    let out = Command::new(&skopeo)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/authority:edge", other.target()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a tag points at a release whose required mirror failed");
    // The mirror comes up: `--resume` publishes it and leaves the finished primary alone.
    let Some(_up) = Registry::start_on(port, None) else { return };
    let resumed = publish(&primary.target(), &[&["--mirror", &mirror, "--resume"][..], &fast].concat());
    resumed.ok();
    let d = &resumed.json()["publish"]["destinations"];
    assert_eq!((d[0]["status"].as_str(), d[1]["status"].as_str()), (Some("already-published"), Some("published")));
    verify_registry(&mirror, &[]).ok();
}
