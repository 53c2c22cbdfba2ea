//! The built images really run: pushed by digest into a loopback registry (skopeo), pulled by
//! digest and run by Docker's engine with no network. Needs the services that tests/run.sh
//! starts: `DOCKER_HOST` and `STELLAOPS_TEST_REGISTRY`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{digests, run_ok, tool, Repo};

#[test]
fn docker_runs_every_component_by_digest_and_it_says_its_version_and_channel() {
    let Some((_, registry)) = crate::support::services() else { return };
    let (Some(docker), Some(skopeo)) = (tool("docker"), tool("skopeo")) else {
        return;
    };
    let repo = Repo::new();
    repo.xtask(&["release", "--channel", "edge"]).ok();
    let layout = repo.releases().join("2.4.1-edge/images");
    let refs = digests(&layout);
    let bundle = repo.read("release-trains/components.toml");
    for name in ["authority", "signer", "attestor", "scanner-web", "scanner-worker", "concelier", "excititor", "web-ui"] {
        let index = &refs[name];
        let tag = format!("{registry}/stellaops-it/{name}:edge");
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--all", "--preserve-digests", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:{name}", layout.display()))
                .arg(format!("docker://{tag}")),
        );
        // Pull by digest only (spec §3.1): the index digest resolves to the amd64 image.
        let by_digest = format!("{registry}/stellaops-it/{name}@{index}");
        run_ok(Command::new(&docker).args(["pull", "--quiet", &by_digest]));
        let out = run_ok(Command::new(&docker).args(["run", "--rm", "--network", "none", &by_digest, "version"]));
        let version = if matches!(name, "concelier" | "excititor") { "2.4.0" } else { "2.4.1" };
        let expected = format!("{name} {version} channel=edge release=\"2.4.1 (2027.06)\" calendar=2027.06");
        assert_eq!(out.trim(), expected, "{name}");
        assert!(bundle.contains(&format!("name = \"{name}\"")));
    }

    // Started with its default command, a component answers its health check.
    let by_digest = format!("{registry}/stellaops-it/authority@{}", refs["authority"]);
    let id = run_ok(Command::new(&docker).args(["run", "-d", "--network", "none", &by_digest])).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        let out = Command::new(&docker).args(["exec", &id, "/usr/bin/stellaops-standin", "health"]).output().unwrap();
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let logs = run_ok(Command::new(&docker).args(["logs", &id]));
    let _ = Command::new(&docker).args(["rm", "-f", &id]).output();
    assert!(health.contains("\"status\":\"ok\"") && health.contains("\"channel\":\"edge\""), "health: {health}");
    assert!(logs.contains("authority 2.4.1 channel=edge"), "logs: {logs}");
}
