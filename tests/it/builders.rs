//! A pool of remote builders (issue 13, point 5): Docker engines over TCP with mutual TLS, a
//! shared BuildKit cache in a registry, and a builder killed mid-build.
//!
//! Each test starts its own `dockerd` processes on loopback TCP ports with `--tlsverify`
//! ([`TlsEngine`], stopped on drop with their containerd), with certificates made by openssl
//! ([`Certs`]: a CA, a server and a client certificate, and a client certificate of another
//! CA). The registry (cache and base mirror) is tests/run.sh's (`STELLAOPS_TEST_REGISTRY`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{digests, run_ok, tool, Repo, Run, EPOCH};

/// A short RUN step, long enough to kill its builder while it runs.
const DOCKERFILE: &str = r#"ARG STELLAOPS_BASE
FROM ${STELLAOPS_BASE}
ARG STELLAOPS_VERSION
RUN /bin/busybox sleep 3 \
 && /bin/busybox mkdir -p /var/lib/pooldemo \
 && /bin/busybox sh -c 'echo "built for $STELLAOPS_VERSION" > /var/lib/pooldemo/stamp'
RUN /bin/busybox sh -c 'echo second > /var/lib/pooldemo/second'
ENTRYPOINT ["/bin/busybox", "cat", "/var/lib/pooldemo/stamp"]
"#;

/// The step to kill a builder in.
const SLOW_STEP: &str = "RUN /bin/busybox sleep 3";

/// openssl, dockerd, docker and the registry, or `None` with a loud message (a failure under
/// `CI`).
fn services() -> Option<(PathBuf, PathBuf, String)> {
    let registry = crate::support::registry()?;
    let (Some(openssl), Some(dockerd), Some(_docker)) = (tool("openssl"), tool("dockerd"), tool("docker")) else {
        return None;
    };
    Some((openssl, dockerd, registry))
}

/// Certificates made by openssl in `dir`.
pub(crate) struct Certs {
    pub(crate) dir: PathBuf,
}

impl Certs {
    /// A CA; a server certificate for `IP:127.0.0.1` (serverAuth); a client certificate
    /// (clientAuth) in `client/` (`ca.pem`, `cert.pem`, `key.pem`: `DOCKER_CERT_PATH`'s
    /// layout); and in `wrong/` a client certificate signed by another CA.
    pub(crate) fn make(openssl: &Path, dir: &Path) -> Certs {
        let ossl = |args: &[&str]| {
            run_ok(Command::new(openssl).args(args).current_dir(dir));
        };
        let key = |name: &str| ossl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name]);
        for ca in ["ca", "other-ca"] {
            key(&format!("{ca}-key.pem"));
            ossl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                &format!("{ca}-key.pem"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=stellaops-it {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        let sign = |name: &str, ca: &str, cn: &str, ext: &str| {
            key(&format!("{name}-key.pem"));
            ossl(&["req", "-new", "-key", &format!("{name}-key.pem"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={cn}")]);
            fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            ossl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}-key.pem"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}-cert.pem"),
            ]);
        };
        sign("server", "ca", "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
        sign("client", "ca", "stellaops-it client", "extendedKeyUsage=clientAuth\n");
        sign("wrong", "other-ca", "stellaops-it wrong client", "extendedKeyUsage=clientAuth\n");
        for (sub, name, ca) in [("client", "client", "ca"), ("wrong", "wrong", "ca"), ("untrusting", "client", "other-ca")] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).unwrap();
            // The wrong client trusts the right CA for the server: only its own certificate
            // is wrong. The untrusting one has the right certificate but not the engines' CA.
            fs::copy(dir.join(format!("{ca}.pem")), d.join("ca.pem")).unwrap();
            fs::copy(dir.join(format!("{name}-cert.pem")), d.join("cert.pem")).unwrap();
            fs::copy(dir.join(format!("{name}-key.pem")), d.join("key.pem")).unwrap();
        }
        Certs { dir: dir.to_owned() }
    }

    /// `DOCKER_CERT_PATH` of the right client.
    pub(crate) fn client(&self) -> PathBuf {
        self.dir.join("client")
    }

    /// `DOCKER_CERT_PATH` of a client whose certificate another CA signed.
    fn wrong(&self) -> PathBuf {
        self.dir.join("wrong")
    }

    /// `DOCKER_CERT_PATH` of a client that does not trust the engines' CA.
    fn untrusting(&self) -> PathBuf {
        self.dir.join("untrusting")
    }
}

/// A `dockerd` on a loopback TCP port with `--tlsverify`, in its own directories; killed
/// (with the containerd it started) on drop.
struct TlsEngine {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl TlsEngine {
    fn start(dockerd: &Path, certs: &Certs, name: &str) -> TlsEngine {
        let dir = tempfile::Builder::new().prefix(&format!("stellaops-it-{name}-")).tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path().to_owned();
        let log = fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new(dockerd)
            .args(["--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=vfs"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--tlsverify", "--tlscacert"])
            .arg(certs.dir.join("ca.pem"))
            .arg("--tlscert")
            .arg(certs.dir.join("server-cert.pem"))
            .arg("--tlskey")
            .arg(certs.dir.join("server-key.pem"))
            .args(["-H", &format!("tcp://127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let engine = TlsEngine { child, dir, port };
        // Ready when it answers over TLS (bounded: its log is shown if it never does).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = engine.docker(certs).args(["version", "--format", "{{.Server.Version}}"]).output().unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd `{name}` did not answer on {}:\n{}",
                engine.endpoint(),
                fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The docker CLI against this engine, with the right client certificate.
    fn docker(&self, certs: &Certs) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", self.endpoint()).env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", certs.client());
        cmd
    }

    /// SIGKILL: the engine dies as a crashed machine's would, mid-whatever.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TlsEngine {
    fn drop(&mut self) {
        self.kill();
        // The containerd dockerd started (and whatever it runs) outlives a killed dockerd.
        let pidfile = self.dir.path().join("exec/containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
        // Its shims, whose parent was that containerd, are killed by pid too.
        let dir = self.dir.path().to_string_lossy().into_owned();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                let _ = Command::new("kill").args(["-KILL", &entry.file_name().to_string_lossy()]).stderr(Stdio::null()).status();
            }
        }
        // A killed dockerd leaves its mounts (the data root bind-mounted on itself): unmounted,
        // deepest first, so that the temporary directory can go.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&dir)).collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).stderr(Stdio::null()).status();
        }
    }
}

/// A repository with one more component, `pooldemo` (amd64 only), built from [`DOCKERFILE`]
/// (the others are daemonless: the deployment templates name them all).
fn pool_repo() -> Repo {
    pool_repo_with(DOCKERFILE, "")
}

/// As [`pool_repo`], with `dockerfile` and more keys of the recipe.
fn pool_repo_with(dockerfile: &str, recipe: &str) -> Repo {
    let repo = Repo::new();
    repo.write("components/pooldemo/Dockerfile", dockerfile);
    let bundle = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{bundle}\n[[component]]\nname = \"pooldemo\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"busybox\"\nsource = {{ path = \"components/pooldemo\" }}\n\n[component.recipe]\ndockerfile = \"Dockerfile\"\n{recipe}"
        ),
    );
    repo.commit_all("pooldemo: one Dockerfile component", EPOCH);
    repo
}

/// `cargo xtask release --json --backend buildkit` of `repo` into `out`, with the given
/// builders, TLS material (`DOCKER_CERT_PATH`) and extra flags.
fn release_cmd(repo: &Repo, out: &Path, builders: &[String], cert_path: &Path, extra: &[&str]) -> Command {
    let mut cmd = crate::support::xtask_cmd();
    cmd.args(["release", "--json", "--channel", "edge", "--backend", "buildkit", "--out"]).arg(out);
    for b in builders {
        cmd.args(["--builder", b]);
    }
    cmd.args(extra).arg("--source").arg(repo.path()).env("DOCKER_CERT_PATH", cert_path).env_remove("DOCKER_HOST");
    cmd
}

/// The JSON events of a `--json` run.
fn events(run: &Run) -> Vec<serde_json::Value> {
    run.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The messages of the note events.
fn notes(events: &[serde_json::Value]) -> Vec<String> {
    events.iter().filter(|e| e["event"] == "note").map(|e| e["message"].as_str().unwrap_or_default().to_owned()).collect()
}

/// The steps of job `pooldemo linux/amd64` with status `status`.
fn steps(events: &[serde_json::Value], status: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["status"] == status && e["job"] == "pooldemo linux/amd64")
        .map(|e| e["step"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The `buildkit` record of `pooldemo`'s image in a release's images.json.
fn record(dir: &Path) -> serde_json::Value {
    let images: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images.json")).unwrap()).unwrap();
    images["components"]["pooldemo"]["images"][0]["buildkit"].clone()
}

#[test]
fn a_tcp_builder_without_usable_tls_material_is_refused_naming_the_endpoint_or_file() {
    // Refused before any connection: no engine needed.
    let repo = pool_repo();
    let out = repo.path().join("target/releases/x");
    let endpoint = "tcp://127.0.0.1:9".to_owned();
    let mut cmd = release_cmd(&repo, &out, std::slice::from_ref(&endpoint), Path::new(""), &["--base-mirror", "127.0.0.1:9/x"]);
    cmd.env_remove("DOCKER_CERT_PATH");
    let run = Run::of(cmd.output().unwrap());
    run.refused(&[&format!("endpoint `{endpoint}`"), "mutual TLS only", "DOCKER_CERT_PATH"]);
    let missing = repo.path().join("no-such-key.pem");
    let ca = repo.path().join("base-images.lock");
    let mut cmd = release_cmd(&repo, &out, std::slice::from_ref(&endpoint), Path::new(""), &["--base-mirror", "127.0.0.1:9/x"]);
    cmd.arg("--builder-tls-ca").arg(&ca).arg("--builder-tls-cert").arg(&ca).arg("--builder-tls-key").arg(&missing);
    let run = Run::of(cmd.output().unwrap());
    // base-images.lock is no PEM: the first file is named.
    run.refused(&[&format!("`{}`: the builders' TLS CA certificate: holds no PEM block", ca.display())]);
    assert!(!out.exists());
}

#[test]
fn a_client_certificate_of_another_ca_is_refused_by_the_health_check_naming_the_endpoint() {
    let Some((openssl, dockerd, registry)) = services() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::make(&openssl, tmp.path());
    let engine = TlsEngine::start(&dockerd, &certs, "a");
    let repo = pool_repo();
    let out = repo.path().join("target/releases/wrong");
    let mirror = format!("{registry}/stellaops-it-bases");
    let run = Run::of(release_cmd(&repo, &out, &[engine.endpoint()], &certs.wrong(), &["--base-mirror", &mirror]).output().unwrap());
    assert_eq!(run.code, 3, "expected exit 3 (no usable endpoint)\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no BuildKit endpoint is usable")
            && run.stderr.contains(&format!("`{}`: the TLS handshake was refused", engine.endpoint())),
        "{}",
        run.stderr
    );
    assert!(!out.exists());
    eprintln!("with a client certificate of another CA:\n{}", run.stderr);
    // A client that does not trust the engine's CA refuses the engine.
    let run = Run::of(release_cmd(&repo, &out, &[engine.endpoint()], &certs.untrusting(), &["--base-mirror", &mirror]).output().unwrap());
    assert_eq!(run.code, 3, "expected exit 3 (no usable endpoint)\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&format!("`{}`: the engine's certificate was refused", engine.endpoint())), "{}", run.stderr);
    eprintln!("with a CA that did not sign the engine's certificate:\n{}", run.stderr);
    // The right certificate passes the same health check (the refusal was the certificate).
    let run = Run::of(release_cmd(&repo, &out, &[engine.endpoint()], &certs.client(), &["--base-mirror", &mirror]).output().unwrap());
    run.ok();
}

#[test]
fn a_shared_cache_spares_a_fresh_builder_its_run_steps_and_a_builder_killed_mid_build_hands_its_job_over() {
    let Some((openssl, dockerd, registry)) = services() else {
        return;
    };
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::make(&openssl, tmp.path());
    let mut a = TlsEngine::start(&dockerd, &certs, "a");
    let b = TlsEngine::start(&dockerd, &certs, "b");
    let repo = pool_repo();
    let mirror = format!("{registry}/stellaops-it-bases");
    // A cache repository of this run alone.
    let cache = format!("{registry}/stellaops-it-cache-{}-{}", std::process::id(), a.port);
    let flags = ["--base-mirror", mirror.as_str(), "--build-cache", cache.as_str()];

    // (b) On A alone: every step runs, and the cache is pushed.
    let out_a = repo.path().join("target/releases/on-a");
    let run = Run::of(release_cmd(&repo, &out_a, &[a.endpoint()], &certs.client(), &flags).output().unwrap());
    run.ok();
    let ev = events(&run);
    assert!(steps(&ev, "done").iter().any(|s| s.contains(SLOW_STEP)), "{}", run.stdout);
    assert!(!steps(&ev, "cached").iter().any(|s| s.contains("RUN")), "A had no cache: {}", run.stdout);
    // The first build finds no cache, and says so.
    assert!(notes(&ev).iter().any(|n| n.contains("no build cache imported")), "{}", run.stdout);
    let on_a = digests(&out_a.join("images"));
    let rec = record(&out_a);
    let reference = format!("{cache}/pooldemo:linux-amd64-inline-cache");
    assert_eq!(rec["endpoint"], a.endpoint().as_str());
    assert_eq!(rec["build_cache"]["reference"], reference.as_str(), "{rec}");
    let exported = rec["build_cache"]["exported"].as_str().unwrap();
    assert!(exported.starts_with(&format!("{cache}/pooldemo@sha256:")), "{rec}");
    // Neither the temporary image nor the cache's tag is left on the engine.
    let left = run_ok(a.docker(&certs).args(["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(!left.contains("stellaops-tmp/") && !left.contains("inline-cache"), "left on A: {left}");
    eprintln!("on A: pooldemo {}, cache exported as {exported} ({:?})", on_a["pooldemo"], started.elapsed());

    // On B alone, a fresh engine with the same cache: the RUN steps come from the cache, and
    // the images are the same.
    let out_b = repo.path().join("target/releases/on-b");
    let run = Run::of(release_cmd(&repo, &out_b, &[b.endpoint()], &certs.client(), &flags).output().unwrap());
    run.ok();
    let ev = events(&run);
    let cached = steps(&ev, "cached");
    assert!(cached.iter().any(|s| s.contains(SLOW_STEP)), "not cached on B: {}", run.stdout);
    assert!(cached.iter().any(|s| s.contains("echo second")), "not cached on B: {}", run.stdout);
    assert!(!steps(&ev, "started").iter().any(|s| s.contains("RUN")), "a RUN step ran on B: {}", run.stdout);
    assert!(ev.iter().any(|e| e["event"] == "step" && e["step"].as_str().unwrap_or_default().contains("importing cache manifest")));
    assert_eq!(digests(&out_b.join("images")), on_a, "the cache changed the digests");
    let rec = record(&out_b);
    assert_eq!(rec["endpoint"], b.endpoint().as_str());
    assert_eq!(rec["build_cache"]["reference"], reference.as_str(), "{rec}");
    let recorded: Vec<&str> = rec["build_cache"]["cached_steps"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
    assert!(recorded.iter().any(|s| s.contains(SLOW_STEP)), "{rec}");
    // The provenance names the cache the builder trusted.
    let prov: serde_json::Value =
        serde_json::from_slice(&fs::read(out_b.join("provenance/pooldemo/linux-amd64.intoto.json")).unwrap()).unwrap();
    assert_eq!(prov["predicate"]["buildDefinition"]["internalParameters"]["buildkit"]["build_cache"]["reference"], reference.as_str());
    eprintln!("on B: cached {cached:?} ({:?})", started.elapsed());

    // (c) A and B, no cache (every step runs); A is killed once the slow step started on it
    // (A comes first in the pool and this is the only job): the job moves to B.
    let out_ab = repo.path().join("target/releases/on-a-and-b");
    let mut child = release_cmd(&repo, &out_ab, &[a.endpoint(), b.endpoint()], &certs.client(), &["--base-mirror", &mirror])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut lines = Vec::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if !killed {
            let e: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if e["event"] == "step" && e["status"] == "started" && e["step"].as_str().unwrap_or_default().contains(SLOW_STEP) {
                a.kill();
                killed = true;
                eprintln!("killed A mid-step ({:?})", started.elapsed());
            }
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    let run = Run { code: status.code().unwrap_or(-1), stdout: lines.join("\n"), stderr: stderr.join().unwrap() };
    assert!(killed, "the slow step never started: {}", run.stdout);
    run.ok();
    let ev = events(&run);
    let dropped = format!("builder `{}` failed", a.endpoint());
    let note = notes(&ev).into_iter().find(|n| n.contains(&dropped) && n.contains("dropped from the pool"));
    let note = note.unwrap_or_else(|| panic!("no note of the dropped builder: {}", run.stdout));
    eprintln!("{note}");
    assert_eq!(record(&out_ab)["endpoint"], b.endpoint().as_str());
    assert!(record(&out_ab).get("build_cache").is_none());
    assert_eq!(digests(&out_ab.join("images")), on_a, "the retried build changed the digests");
    eprintln!("on A and B, A killed: pooldemo {} ({:?})", digests(&out_ab.join("images"))["pooldemo"], started.elapsed());
}

#[test]
fn a_build_cache_that_cannot_be_pushed_fails_the_release_naming_it() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let repo = pool_repo();
    let out = repo.path().join("target/releases/no-cache");
    // Nothing listens on port 9: the import finds nothing (a note), the push fails.
    let cache = "127.0.0.1:9/stellaops-cache";
    let flags = ["--base-mirror", &format!("{registry}/stellaops-it-bases"), "--build-cache", cache].map(|s| s.to_owned());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cmd = release_cmd(&repo, &out, std::slice::from_ref(&docker_host), Path::new(""), &flags);
    cmd.env_remove("DOCKER_CERT_PATH");
    let run = Run::of(cmd.output().unwrap());
    assert_eq!(run.code, 3, "expected exit 3\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("on `{docker_host}`: cannot push the build cache `{cache}/pooldemo:linux-amd64-inline-cache`")),
        "{}",
        run.stderr
    );
    assert!(notes(&events(&run)).iter().any(|n| n.contains("no build cache imported")), "{}", run.stdout);
    assert!(!out.exists());
    eprintln!("with a cache registry that is not there:\n{}", run.stderr);
}

#[test]
fn a_component_with_secret_build_args_is_built_without_the_cache_so_that_its_secret_is_not_pushed() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    const SECRET: &str = "pooldemo-secret-never-pushed";
    let repo = pool_repo_with(
        "ARG STELLAOPS_BASE\nFROM ${STELLAOPS_BASE}\nARG POOL_TOKEN\nRUN /bin/busybox test -n \"$POOL_TOKEN\" && /bin/busybox mkdir /srv\nENTRYPOINT [\"/bin/busybox\"]\n",
        "secret-build-args = [\"POOL_TOKEN\"]\n",
    );
    let out = repo.path().join("target/releases/secret");
    // Nothing listens on port 9: a push (or an import) there would fail the release.
    let flags =
        ["--base-mirror".to_owned(), format!("{registry}/stellaops-it-bases"), "--build-cache".to_owned(), "127.0.0.1:9/c".to_owned()];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cmd = release_cmd(&repo, &out, std::slice::from_ref(&docker_host), Path::new(""), &flags);
    cmd.env_remove("DOCKER_CERT_PATH").env("POOL_TOKEN", SECRET);
    let run = Run::of(cmd.output().unwrap());
    run.ok();
    let ev = events(&run);
    assert!(
        notes(&ev).iter().any(|n| n.contains("built without the build cache") && n.contains("`recipe.secret-build-args` (POOL_TOKEN)")),
        "{}",
        run.stdout
    );
    assert!(!ev.iter().any(|e| e["step"].as_str().unwrap_or_default().contains("importing cache")), "{}", run.stdout);
    assert!(record(&out).get("build_cache").is_none(), "{}", record(&out));
}
