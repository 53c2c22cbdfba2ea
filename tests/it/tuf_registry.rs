//! The trust repository on the registry (issue 15, point 5): `publish` and `trust publish` push
//! it as OCI artifacts into `<namespace>/trust`; python-tuf's `ngclient` (reading the registry
//! with its own fetcher, tests/verifiers/tuf_client.py) and `trust check --registry` (`tough`)
//! verify it from a pinned root; channel tags move only after the signed pointer is there and
//! verifies, so a kill before that leaves the old tag.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{verifier, xtask_cmd, Repo, Run};
use crate::tuf::{bump, day, init_trust, keypair, ngclient, release};

/// Each component's index digest, from a release's images.json.
fn indexes(dir: &Path) -> BTreeMap<String, String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images.json")).unwrap()).unwrap();
    v["components"].as_object().unwrap().iter().map(|(n, c)| (n.clone(), c["index"]["digest"].as_str().unwrap().to_owned())).collect()
}

/// Runs `cmd` with the `pause@<point>` test hook, kills it (SIGKILL) once it says it paused.
fn killed_at(mut cmd: Command, point: &str) {
    cmd.env("STELLAOPS_TEST_FAULT", format!("pause@{point}")).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        seen += &line;
        seen.push('\n');
        if line.contains(&format!("paused at {point}")) {
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "never paused at {point} ({status}):\n{seen}");
}

#[test]
fn trust_on_the_registry_ngclient_and_tough_verify_it_refuse_replay_expiry_and_a_revoked_key_and_channel_tags_move_last() {
    let Some(registry) = crate::support::registry() else { return };
    let (Some(py), Some(scripts)) = (verifier("STELLAOPS_VERIFY_PYTHON"), verifier("STELLAOPS_VERIFY_SCRIPTS")) else { return };
    let repo = Repo::new();
    let old_pub = repo.release_key();
    let old_key = old_pub.with_extension("key");
    let (channels, _meta, trusted_root) = init_trust(&repo, &[&old_pub]);
    let ns = format!("tuf-it-{}-{}", std::process::id(), crate::support::EPOCH % 997);
    let target = format!("{registry}/{ns}");
    let trust_repo = format!("{ns}/trust");
    let client = oci::distribution::Client::new(&registry, None, oci::distribution::RetryPolicy::default());
    let tag = |component: &str, t: &str| client.head_manifest(&format!("{ns}/{component}"), t).unwrap();
    let oci_url = format!("oci://{target}");
    let reader = |dir: &str, targets: &[&str]| ngclient(&py, &scripts, &oci_url, &repo.path().join(dir), &trusted_root, targets);
    let trust_publish = || {
        let mut cmd = xtask_cmd();
        cmd.args(["trust", "publish", "--registry", &target, "--json", "--source"]).arg(repo.path());
        cmd
    };
    let check = || repo.xtask(&["trust", "check", "--registry", &target, "--root", trusted_root.to_str().unwrap(), "--json"]);

    // A release published while the store has a trust repository gets its version tag, not the
    // channel tag: nothing points at it yet.
    let r1 = release(&repo, "r1");
    let published = repo.xtask(&["publish", r1.to_str().unwrap(), "--registry", &target, "--json"]);
    published.ok();
    assert_eq!(published.json()["publish"]["tags"], serde_json::json!(["2.4.1"]), "{}", published.stdout);
    let r1_index = indexes(&r1);
    for (c, d) in &r1_index {
        assert_eq!(tag(c, "2.4.1").as_deref(), Some(d.as_str()));
        assert_eq!(tag(c, "edge"), None, "`{c}:edge` exists before any pointer");
    }
    // The root is there already (`trust init`), as `1.root` and `root`.
    assert!(client.head_manifest(&trust_repo, "1.root").unwrap().is_some());

    // Promoted to edge: the tag moves with `trust publish`, after the pointer is on the registry.
    repo.xtask(&["promote", r1.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).ok();
    assert_eq!(tag("authority", "edge"), None, "promote alone moved a registry tag");
    let done = Run::of(trust_publish().output().unwrap());
    done.ok();
    let report = done.json()["trust"].clone();
    assert_eq!(report["channels"][0]["channel"], "edge", "{report}");
    assert_eq!(report["channels"][0]["tags"].as_array().unwrap().len(), r1_index.len(), "{report}");
    for (c, d) in &r1_index {
        assert_eq!(tag(c, "edge").as_deref(), Some(d.as_str()), "`{c}:edge`");
    }
    // Each file is an artifact with its documented type; the same run again pushes nothing.
    let m = client.get_manifest(&trust_repo, "timestamp").unwrap().unwrap();
    let mv: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    assert_eq!(mv["artifactType"], "application/vnd.stellaops.tuf.metadata.v1+json");
    let again = Run::of(trust_publish().output().unwrap());
    again.ok();
    assert_eq!(again.json()["trust"]["pushed"], serde_json::json!([]), "{}", again.stdout);

    // python-tuf, reading the registry, downloads and verifies the pointer and release.yaml.
    let kept = fs::read_dir(channels.join("edge/releases")).unwrap().next().unwrap().unwrap().file_name();
    let r1_target = format!("release-edge-{}.yaml", kept.to_str().unwrap());
    let got = reader("target/client", &["channel-edge.json", &r1_target]);
    got.ok();
    let v = got.json();
    assert_eq!(v["channel-edge.json"]["custom"]["version"], "2.4.1");
    assert_eq!(v[&r1_target]["sha256"], schema::model::Digest::of(&fs::read(r1.join("release.yaml")).unwrap()).hex());
    let by_tough = check();
    by_tough.ok();
    assert_eq!(by_tough.json()["channels"][0]["custom"]["version"], "2.4.1", "{}", by_tough.stdout);
    let old_timestamp = client.get_manifest(&trust_repo, "timestamp").unwrap().unwrap();

    // A second release: published (edge stays on 2.4.1), promoted, then `trust publish`
    // killed before the timestamp (clients still see 2.4.1) and before the tags (clients see
    // 2.4.2; the tag still names 2.4.1). The next run moves it.
    bump(&repo, "2.4.1", "2.4.2", 1);
    let r2 = release(&repo, "r2");
    repo.xtask(&["publish", r2.to_str().unwrap(), "--registry", &target]).ok();
    assert_eq!(tag("authority", "edge").as_deref(), Some(r1_index["authority"].as_str()));
    repo.xtask(&["promote", r2.to_str().unwrap(), "--to", "edge", "--now", &day(1.0)]).ok();
    killed_at(trust_publish(), "trust-publish:before-timestamp");
    let fresh = reader("target/fresh-1", &["channel-edge.json"]);
    fresh.ok();
    assert_eq!(fresh.json()["channel-edge.json"]["custom"]["version"], "2.4.1");
    assert_eq!(tag("authority", "edge").as_deref(), Some(r1_index["authority"].as_str()));
    killed_at(trust_publish(), "trust-publish:before-tags");
    let seen = reader("target/client", &["channel-edge.json"]);
    seen.ok();
    assert_eq!(seen.json()["channel-edge.json"]["custom"]["version"], "2.4.2");
    for (c, d) in &r1_index {
        assert_eq!(tag(c, "edge").as_deref(), Some(d.as_str()), "killed before the tags, `{c}:edge` moved");
    }
    Run::of(trust_publish().output().unwrap()).ok();
    for (c, d) in &indexes(&r2) {
        assert_eq!(tag(c, "edge").as_deref(), Some(d.as_str()), "`{c}:edge` after the resumed run");
    }
    // `verify --registry` of the release edge moved away from: its version tag is checked, its
    // channel tag is the pointers' business.
    let log = crate::tlog::shared_log();
    let rekor_key = log.public.to_str().unwrap();
    let mut verify = xtask_cmd();
    verify.arg("verify").arg(&r1).arg("--key").arg(&old_pub).args(["--rekor-key", rekor_key, "--registry", &target]);
    Run::of(verify.output().unwrap()).ok();

    // A registry replaying the old timestamp: refused by the client that saw the newer one.
    let new_timestamp = client.get_manifest(&trust_repo, "timestamp").unwrap().unwrap();
    client.put_manifest(&trust_repo, "timestamp", &old_timestamp.bytes, &old_timestamp.media_type).unwrap();
    let replayed = reader("target/client", &["channel-edge.json"]);
    assert_ne!(replayed.code, 0, "a replayed timestamp was accepted: {}", replayed.stdout);
    assert!(replayed.stderr.contains("BadVersionNumberError"), "{}", replayed.stderr);
    client.put_manifest(&trust_repo, "timestamp", &new_timestamp.bytes, &new_timestamp.media_type).unwrap();
    reader("target/client", &["channel-edge.json"]).ok();

    // An expired timestamp: `trust publish` pushes it but its own read-back refuses it, so no
    // tag moves; both clients refuse it from the registry. Refreshed, all is well again.
    repo.xtask(&["trust", "refresh", "--now", "2020-01-01T00:00:00Z"]).ok();
    Run::of(trust_publish().output().unwrap()).refused(&["does not verify", &trust_repo]);
    let expired = reader("target/client", &["channel-edge.json"]);
    assert_ne!(expired.code, 0, "an expired timestamp was accepted: {}", expired.stdout);
    assert!(expired.stderr.contains("ExpiredMetadataError"), "{}", expired.stderr);
    check().refused(&["does not verify"]);
    repo.xtask(&["trust", "refresh", "--now", &day(1.0)]).ok();
    Run::of(trust_publish().output().unwrap()).ok();
    reader("target/client", &["channel-edge.json"]).ok();

    // A rollback is a move like any other: the tag follows the signed pointer back.
    let out = repo.path().join("target/rollback");
    repo.xtask(&["rollback", "--channel", "edge", "--to", "2.4.1", "--now", &day(1.5), "--out", out.to_str().unwrap()]).ok();
    assert_eq!(tag("authority", "edge").as_deref(), Some(indexes(&r2)["authority"].as_str()), "rollback alone moved a registry tag");
    Run::of(trust_publish().output().unwrap()).ok();
    for (c, d) in &r1_index {
        assert_eq!(tag(c, "edge").as_deref(), Some(d.as_str()), "`{c}:edge` after the rollback");
    }
    let back = reader("target/client", &["channel-edge.json"]);
    back.ok();
    assert_eq!(back.json()["channel-edge.json"]["custom"]["version"], "2.4.1");
    assert_eq!(back.json()["channel-edge.json"]["custom"]["rollback"], true);

    // Rotation: the old release key is revoked. Its holder signs newer metadata in a copy of
    // the store and serves it (with the rotated root) from a namespace it controls: clients
    // that trust the first root refuse it.
    let attacker = repo.path().join("target/attacker");
    crate::support::copy(&channels, &attacker);
    let new_pub = keypair(&repo.path().join("target/keys/release2.key"));
    let root_key = repo.path().join("target/keys/root.key");
    repo.xtask(&[
        "trust",
        "rotate",
        "--root-key",
        root_key.to_str().unwrap(),
        "--release-key",
        new_pub.to_str().unwrap(),
        "--revoke",
        old_pub.to_str().unwrap(),
        "--reason",
        "laptop lost",
        "--key",
        new_pub.with_extension("key").to_str().unwrap(),
        "--now",
        &day(2.0),
    ])
    .ok();
    Run::of(trust_publish().output().unwrap()).ok();
    let rotated = reader("target/client", &["channel-edge.json"]);
    rotated.ok();
    assert_eq!(rotated.json()["channel-edge.json"]["custom"]["version"], "2.4.1");
    for d in 3..6 {
        let at = attacker.to_str().unwrap();
        repo.xtask(&["trust", "refresh", "--channels", at, "--key", old_key.to_str().unwrap(), "--now", &day(f64::from(d))]).ok();
    }
    for f in ["2.root.json", "root.json"] {
        fs::copy(channels.join("tuf/metadata").join(f), attacker.join("tuf/metadata").join(f)).unwrap();
    }
    // Our own publisher will not even tag it: its read-back refuses the revoked key's metadata.
    let forged_target = format!("{target}-forged");
    let mut forge = xtask_cmd();
    forge.args(["trust", "publish", "--registry", &forged_target, "--channels"]).arg(&attacker).arg("--source").arg(repo.path());
    forge.args(["--root"]).arg(&trusted_root);
    Run::of(forge.output().unwrap()).refused(&["does not verify"]);
    let forged = ngclient(
        &py,
        &scripts,
        &format!("oci://{forged_target}"),
        &repo.path().join("target/client"),
        &trusted_root,
        &["channel-edge.json"],
    );
    assert_ne!(forged.code, 0, "metadata signed by a revoked key was accepted: {}", forged.stdout);
    assert!(forged.stderr.contains("UnsignedMetadataError"), "{}", forged.stderr);
    repo.xtask(&["trust", "check", "--registry", &forged_target, "--root", trusted_root.to_str().unwrap()]).refused(&["does not verify"]);

    // A second store publishing other history into the same namespace is refused, naming the file.
    let other = repo.path().join("target/other-store");
    crate::support::copy(&attacker, &other);
    let mut clash = xtask_cmd();
    clash.args(["trust", "publish", "--registry", &target, "--channels"]).arg(&other).arg("--source").arg(repo.path());
    Run::of(clash.output().unwrap()).refused(&["TUF files never change once published", "another channel store publishes"]);
    // A destination that never got the release edge points at: no channel tag could name it.
    let mut bare = xtask_cmd();
    bare.args(["trust", "publish", "--registry", &format!("{target}-bare"), "--source"]).arg(repo.path());
    Run::of(bare.output().unwrap()).refused(&["points at 2.4.1", "is not on", "hint: publish the release first"]);
    assert_eq!(client.head_manifest(&format!("{ns}-bare/authority"), "edge").unwrap(), None);
    // A registry that is not there: the environment's failure (exit 3), not a verdict.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down =
        repo.xtask(&["trust", "check", "--registry", &format!("127.0.0.1:{port}/nothing"), "--root", trusted_root.to_str().unwrap()]);
    assert_eq!(down.code, 3, "{}\n{}", down.stdout, down.stderr);
    assert!(down.stderr.contains("could not be read") && down.stderr.contains("hint:"), "{}", down.stderr);
}
