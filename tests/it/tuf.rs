//! The channels' TUF trust repository (issue 15): written by `trust init`, `promote` and
//! `trust refresh`, read by python-tuf's `ngclient` (an independent client, served over HTTP on
//! loopback) and by `trust check` (the `tough` crate's client).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::{verifier, Repo, Run};

pub(crate) fn day(days: f64) -> String {
    schema::model::rfc3339(crate::support::EPOCH + (days * 86_400.0) as i64)
}

pub(crate) fn bump(repo: &Repo, from: &str, to: &str, day: i64) {
    repo.edit("release-trains/components.toml", &format!("version = \"{from}\"\nregistry"), &format!("version = \"{to}\"\nregistry"));
    repo.commit_all(&format!("bundle {to}"), crate::support::EPOCH + day * 86_400);
}

/// An edge release, its entries in the tests' transparency log (stable takes only logged ones).
pub(crate) fn release(repo: &Repo, name: &str) -> PathBuf {
    let out = repo.releases().join(name);
    let log = &crate::tlog::shared_log().url;
    repo.xtask(&["release", "--channel", "edge", "--rekor-url", log, "--out", out.to_str().unwrap()]).ok();
    out
}

/// A static HTTP server for `dir` on a free loopback port (python's http.server).
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(dir: &Path) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Served { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs python-tuf's client (tests/verifiers/tuf_client.py) with its state in `client`.
pub(crate) fn ngclient(py: &Path, scripts: &Path, url: &str, client: &Path, root: &Path, targets: &[&str]) -> Run {
    let out = Command::new(py).arg(scripts.join("tuf_client.py")).arg(url).arg(client).arg(root).args(targets).output().unwrap();
    Run::of(out)
}

#[test]
fn python_tuf_reads_channel_pointers_and_refuses_a_replayed_snapshot_an_expired_timestamp_and_an_unlisted_key() {
    let (Some(py), Some(scripts)) = (verifier("STELLAOPS_VERIFY_PYTHON"), verifier("STELLAOPS_VERIFY_SCRIPTS")) else { return };
    let repo = Repo::new();
    let release_pub = repo.release_key();
    let root_key = repo.path().join("target/keys/root.key");
    verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256)
        .write(&root_key, &root_key.with_extension("pub"), &verifier::keys::Secret::new(String::new()))
        .unwrap();
    let channels = repo.path().join("target/channels");
    let meta = channels.join("tuf/metadata");
    repo.xtask(&[
        "trust",
        "init",
        "--root-key",
        root_key.to_str().unwrap(),
        "--release-key",
        release_pub.to_str().unwrap(),
        "--now",
        &day(0.0),
    ])
    .ok();
    // A second init would replace the root: refused.
    repo.xtask(&["trust", "init", "--root-key", root_key.to_str().unwrap(), "--release-key", release_pub.to_str().unwrap()])
        .refused(&["already has a TUF root"]);
    let trusted_root = repo.path().join("target/trusted-root.json");
    fs::copy(meta.join("1.root.json"), &trusted_root).unwrap();

    // A promotion signs targets, snapshot and timestamp (version 1).
    let r1 = release(&repo, "r1");
    let p = repo.xtask(&["promote", r1.to_str().unwrap(), "--to", "edge", "--now", &day(0.0), "--json"]);
    p.ok();
    assert_eq!(p.json()["promoted"]["trust"]["timestampVersion"], 1, "{}", p.stdout);
    let served = Served::start(&channels.join("tuf"));
    let client = repo.path().join("target/client");
    let kept = fs::read_dir(channels.join("edge/releases")).unwrap().next().unwrap().unwrap().file_name();
    let release_target = format!("release-edge-{}.yaml", kept.to_str().unwrap());
    let got = ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json", &release_target]);
    got.ok();
    let v = got.json();
    let pointer = &v["channel-edge.json"];
    assert_eq!(pointer["custom"]["version"], "2.4.1");
    assert_eq!(pointer["custom"]["sequence"], 1);
    assert_eq!(pointer["custom"]["rollback"], false);
    // The edge release's date plus edge's 7-day support window.
    assert_eq!(pointer["custom"]["supportEnds"], day(7.0));
    // The pointer target is the document the DSSE pointer signs; the release.yaml is the release's.
    let env: serde_json::Value = serde_json::from_slice(&fs::read(channels.join("edge/pointer.json")).unwrap()).unwrap();
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    assert_eq!(pointer["sha256"], schema::model::Digest::of(&payload).hex());
    assert_eq!(v[&release_target]["sha256"], schema::model::Digest::of(&fs::read(r1.join("release.yaml")).unwrap()).hex());
    assert_eq!(pointer["custom"]["releaseYaml"], schema::model::Digest::of(&fs::read(r1.join("release.yaml")).unwrap()).to_string());

    // tough's client agrees.
    let check = repo.xtask(&["trust", "check", "--root", trusted_root.to_str().unwrap(), "--json"]);
    check.ok();
    assert_eq!(check.json()["channels"][0]["custom"]["version"], "2.4.1");
    // `history` shows what clients see beside the log.
    let history = |json: bool| {
        let mut args = vec!["history", "--channel", "edge", "--key", release_pub.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let run = repo.xtask(&args);
        run.ok();
        run
    };
    let h = history(true).json();
    let published = &h["history"]["published"];
    assert_eq!((&published["custom"]["version"], &published["custom"]["sequence"]), (&"2.4.1".into(), &1.into()), "{h}");
    assert_eq!(published["current"], true, "{h}");
    assert!(published.get("clientsRefuse").is_none(), "{h}");
    assert!(history(false).stdout.contains("what TUF clients see): version 2.4.1, sequence 1, the newest pointer"));

    // Keep the first timestamp and snapshot, then move the channel.
    let old_timestamp = fs::read(meta.join("timestamp.json")).unwrap();
    bump(&repo, "2.4.1", "2.4.2", 1);
    let r2 = release(&repo, "r2");
    repo.xtask(&["promote", r2.to_str().unwrap(), "--to", "edge", "--now", &day(1.0)]).ok();
    let got = ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json"]);
    got.ok();
    assert_eq!(got.json()["channel-edge.json"]["custom"]["version"], "2.4.2");

    // A mirror replaying the old timestamp (and so the old snapshot): refused by the client
    // that has seen the newer one.
    let new_timestamp = fs::read(meta.join("timestamp.json")).unwrap();
    fs::write(meta.join("timestamp.json"), &old_timestamp).unwrap();
    let replayed = ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json"]);
    assert_ne!(replayed.code, 0, "a replayed timestamp was accepted: {}", replayed.stdout);
    assert!(replayed.stderr.contains("BadVersionNumberError"), "{}", replayed.stderr);
    fs::write(meta.join("timestamp.json"), &new_timestamp).unwrap();

    // A timestamp past its expiry (signed on a day long gone): refused by both clients.
    repo.xtask(&["trust", "refresh", "--now", "2020-01-01T00:00:00Z"]).ok();
    let expired = ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json"]);
    assert_ne!(expired.code, 0, "an expired timestamp was accepted: {}", expired.stdout);
    assert!(expired.stderr.contains("ExpiredMetadataError"), "{}", expired.stderr);
    repo.xtask(&["trust", "check", "--root", trusted_root.to_str().unwrap()]).refused(&["does not verify"]);
    let h = history(true).json();
    assert!(h["history"]["published"]["clientsRefuse"].as_str().is_some_and(|w| w.contains("does not verify")), "{h}");
    assert_eq!(h["history"]["published"]["custom"]["version"], "2.4.2", "{h}");
    assert!(history(false).stdout.contains("clients refuse it now:"));
    repo.xtask(&["trust", "refresh", "--now", &day(1.0)]).ok();
    ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json"]).ok();

    // A key the root does not list moves nothing, and writes nothing.
    let stranger = repo.path().join("target/keys/stranger.key");
    verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256)
        .write(&stranger, &stranger.with_extension("pub"), &verifier::keys::Secret::new(String::new()))
        .unwrap();
    let before: Vec<_> = fs::read_dir(&meta).unwrap().map(|e| e.unwrap().file_name()).collect();
    repo.xtask(&["trust", "refresh", "--key", stranger.to_str().unwrap(), "--now", &day(1.0)])
        .refused(&["is not a release key of the trust root"]);
    repo.xtask(&["promote", r2.to_str().unwrap(), "--to", "edge", "--key", stranger.to_str().unwrap(), "--now", &day(1.0)])
        .refused(&["is not a release key of the trust root"]);
    let after: Vec<_> = fs::read_dir(&meta).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before.len(), after.len());

    // The same state and keys give the same bytes (deterministic signatures, canonical JSON).
    let copy = repo.path().join("target/channels-copy");
    crate::support::copy(&channels, &copy);
    repo.xtask(&["trust", "refresh", "--now", &day(2.0)]).ok();
    repo.xtask(&["trust", "refresh", "--now", &day(2.0), "--channels", copy.to_str().unwrap()]).ok();
    for f in ["timestamp.json", "5.snapshot.json", "5.edge.json", "1.targets.json", "1.stable-gate.json"] {
        assert_eq!(fs::read(meta.join(f)).unwrap(), fs::read(copy.join("tuf/metadata").join(f)).unwrap(), "{f} differs");
    }
}

pub(crate) fn keypair(path: &Path) -> PathBuf {
    verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256)
        .write(path, &path.with_extension("pub"), &verifier::keys::Secret::new(String::new()))
        .unwrap();
    path.with_extension("pub")
}

/// `trust init` of the scratch repository's channel store with a new root key and the given
/// release public keys; returns the store, its metadata directory and a copy of the first root
/// (what a client trusts).
pub(crate) fn init_trust(repo: &Repo, release_keys: &[&Path]) -> (PathBuf, PathBuf, PathBuf) {
    let root_key = repo.path().join("target/keys/root.key");
    keypair(&root_key);
    let mut args = vec!["trust".to_owned(), "init".to_owned(), "--root-key".to_owned(), root_key.to_str().unwrap().to_owned()];
    for k in release_keys {
        args.extend(["--release-key".to_owned(), k.to_str().unwrap().to_owned()]);
    }
    args.extend(["--now".to_owned(), day(0.0)]);
    repo.xtask(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    let channels = repo.path().join("target/channels");
    let meta = channels.join("tuf/metadata");
    let trusted_root = repo.path().join("target/trusted-root.json");
    fs::copy(meta.join("1.root.json"), &trusted_root).unwrap();
    (channels, meta, trusted_root)
}

#[test]
fn after_a_rotation_releases_cut_before_still_verify_and_the_revoked_key_signs_nothing_clients_accept() {
    let (Some(py), Some(scripts)) = (verifier("STELLAOPS_VERIFY_PYTHON"), verifier("STELLAOPS_VERIFY_SCRIPTS")) else { return };
    let repo = Repo::new();
    let old_pub = repo.release_key();
    let old_key = old_pub.with_extension("key");
    let (channels, meta, trusted_root) = init_trust(&repo, &[&old_pub]);
    let root_key = repo.path().join("target/keys/root.key");
    let r1 = release(&repo, "r1");
    repo.xtask(&["promote", r1.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).ok();
    let kept = fs::read_dir(channels.join("edge/releases")).unwrap().next().unwrap().unwrap().file_name();
    let r1_target = format!("release-edge-{}.yaml", kept.to_str().unwrap());
    let served = Served::start(&channels.join("tuf"));
    let client = repo.path().join("target/client");
    ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json"]).ok();
    // What a holder of the old key keeps: the store as it was before the rotation.
    let attacker = repo.path().join("target/attacker");
    crate::support::copy(&channels, &attacker);

    // Rotate: a new release key; the old one is revoked (its laptop was lost). Without the
    // current root key, or signing with the key being revoked: refused, nothing written.
    let new_pub = keypair(&repo.path().join("target/keys/release2.key"));
    let new_key = new_pub.with_extension("key");
    let stranger = keypair(&repo.path().join("target/keys/stranger.key"));
    let rotate = |root: &Path, key: &Path| {
        repo.xtask(&[
            "trust",
            "rotate",
            "--root-key",
            root.to_str().unwrap(),
            "--release-key",
            new_pub.to_str().unwrap(),
            "--revoke",
            old_pub.to_str().unwrap(),
            "--reason",
            "laptop lost",
            "--key",
            key.to_str().unwrap(),
            "--now",
            &day(2.0),
            "--json",
        ])
    };
    rotate(&stranger.with_extension("key"), &new_key).refused(&["is not a root key of root version 1"]);
    rotate(&root_key, &old_key).refused(&["a key this rotation revokes"]);
    rotate(&root_key, &stranger.with_extension("key")).refused(&["is not a release key of the new root"]);
    assert!(!meta.join("2.root.json").exists());
    let done = rotate(&root_key, &new_key);
    done.ok();
    let report = &done.json()["rotation"];
    assert_eq!(report["root"]["version"], 2);
    let checked = report["checked"].as_array().unwrap();
    assert_eq!(checked.len(), 1, "{report}");
    assert_eq!(checked[0]["version"], "2.4.1");
    assert_eq!(checked[0]["status"], "revoked-after-signing: laptop lost");

    // A stable release signed with the revoked key, or a key the root never listed, is refused
    // before any work.
    repo.git(&["tag", "v2.4.1"]);
    let log = &crate::tlog::shared_log().url;
    for key in [&old_key, &stranger.with_extension("key")] {
        let out = repo.releases().join("stable-refused");
        repo.xtask(&["release", "--channel", "stable", "--key", key.to_str().unwrap(), "--rekor-url", log, "--out", out.to_str().unwrap()])
            .refused(&["plan stage", "is signed with a release key of the trust root", "is not one"]);
        assert!(!out.exists());
    }

    // A client that knows only the first root follows the rotation, and the release cut before
    // it still verifies (vouched for by targets the new key signed).
    let fresh = repo.path().join("target/fresh-client");
    let got = ngclient(&py, &scripts, &served.url, &fresh, &trusted_root, &["channel-edge.json", &r1_target]);
    got.ok();
    assert_eq!(got.json()["channel-edge.json"]["custom"]["version"], "2.4.1");
    assert_eq!(got.json()[&r1_target]["sha256"], schema::model::Digest::of(&fs::read(r1.join("release.yaml")).unwrap()).hex());
    ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json"]).ok();

    // The old key moves nothing any more; the new one does.
    repo.xtask(&["promote", r1.to_str().unwrap(), "--to", "edge", "--key", old_key.to_str().unwrap(), "--now", &day(3.0)])
        .refused(&["is not a release key of the trust root"]);
    repo.sign_with(&new_key);
    bump(&repo, "2.4.1", "2.4.2", 3);
    let r2 = release(&repo, "r2");
    repo.xtask(&["promote", r2.to_str().unwrap(), "--to", "edge", "--now", &day(3.0)]).ok();
    let got = ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json"]);
    got.ok();
    assert_eq!(got.json()["channel-edge.json"]["custom"]["version"], "2.4.2");
    // A release signed by the revoked key after the revocation is not promotable.
    repo.sign_with(&old_key);
    bump(&repo, "2.4.2", "2.4.3", 4);
    let r3 = release(&repo, "r3");
    repo.sign_with(&new_key);
    repo.xtask(&["promote", r3.to_str().unwrap(), "--to", "edge", "--now", &day(4.0)]).refused(&["revoked on", "laptop lost"]);

    // The holder of the revoked key signs newer metadata in its copy (still on root 1) and
    // serves it with the rotated root: clients refuse it.
    for d in 5..9 {
        repo.xtask(&[
            "trust",
            "refresh",
            "--channels",
            attacker.to_str().unwrap(),
            "--key",
            old_key.to_str().unwrap(),
            "--now",
            &day(f64::from(d)),
        ])
        .ok();
    }
    for f in ["2.root.json", "root.json"] {
        fs::copy(meta.join(f), attacker.join("tuf/metadata").join(f)).unwrap();
    }
    let forged = Served::start(&attacker.join("tuf"));
    let refused = ngclient(&py, &scripts, &forged.url, &client, &trusted_root, &["channel-edge.json"]);
    assert_ne!(refused.code, 0, "metadata signed by a revoked key was accepted: {}", refused.stdout);
    assert!(refused.stderr.contains("UnsignedMetadataError"), "{}", refused.stderr);
    let tough = repo.xtask(&["trust", "check", "--channels", attacker.to_str().unwrap(), "--root", trusted_root.to_str().unwrap()]);
    tough.refused(&["does not verify"]);
}

#[test]
fn a_stable_move_needs_two_release_keys_one_signature_is_refused_by_clients() {
    let (Some(py), Some(scripts)) = (verifier("STELLAOPS_VERIFY_PYTHON"), verifier("STELLAOPS_VERIFY_SCRIPTS")) else { return };
    let repo = Repo::new();
    let alice_pub = repo.release_key();
    let alice = alice_pub.with_extension("key");
    let bob_pub = keypair(&repo.path().join("target/keys/bob.key"));
    let bob = bob_pub.with_extension("key");
    let (channels, meta, trusted_root) = init_trust(&repo, &[&alice_pub, &bob_pub]);
    let r1 = release(&repo, "r1");
    // Edge moves with one key.
    repo.xtask(&["promote", r1.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).ok();
    // Stable: alice proposes; nothing moves yet.
    let proposed = repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(7.0), "--json"]);
    proposed.ok();
    assert_eq!(proposed.json()["promoted"]["pending"], true, "{}", proposed.stdout);
    assert!(!channels.join("stable/pointer.json").exists());
    let proposal = channels.join("stable/proposal.json");
    assert!(proposal.is_file());
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(7.0)]).refused(&["already proposed", "--cosign"]);
    let stable_history = || {
        let run = repo.xtask(&["history", "--channel", "stable", "--key", alice_pub.to_str().unwrap(), "--json"]);
        run.ok();
        run.json()["history"]["published"].clone()
    };
    let pending = stable_history();
    assert_eq!((&pending["proposed"], &pending["current"]), (&"2.4.1".into(), &false.into()), "{pending}");
    assert!(pending.get("custom").is_none(), "{pending}");
    // The same key cannot be the second person.
    repo.xtask(&["promote", "--cosign", "--to", "stable", "--now", &day(7.0)]).refused(&["already signed the proposal", "two people"]);

    // Published with one signature (as if someone bypassed the tool): clients refuse it.
    let served = Served::start(&channels.join("tuf"));
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&proposal).unwrap()).unwrap();
    // The proposed pointer (one DSSE signature) as a client would get it: `verify-pointer`
    // refuses it even with both release keys pinned.
    let one_signed = repo.path().join("target/one-signed-stable.json");
    fs::write(&one_signed, serde_json::to_vec(&doc["envelope"]).unwrap()).unwrap();
    let verify_pointer = |pointer: &Path, keys: &[&Path]| {
        let mut cmd = crate::support::xtask_cmd();
        cmd.arg("verify-pointer").arg(pointer).arg("--state").arg(repo.path().join("target/pointer-state.json"));
        for k in keys {
            cmd.arg("--key").arg(k);
        }
        Run::of(cmd.args(["--now", &day(7.0)]).output().unwrap())
    };
    verify_pointer(&one_signed, &[&alice_pub, &bob_pub]).refused(&["needs the signatures of two release keys", "1 of the 2 key(s)"]);
    let forged = serde_json::json!({"signed": doc["role"]["signed"], "signatures": doc["role"]["signatures"]});
    fs::write(meta.join("1.stable.json"), serde_json::to_vec(&forged).unwrap()).unwrap();
    repo.xtask(&["trust", "refresh", "--now", &day(7.0)]).ok();
    let client = repo.path().join("target/client");
    let one = ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-stable.json"]);
    assert_ne!(one.code, 0, "a stable pointer with one signature was accepted: {}", one.stdout);
    assert!(one.stderr.contains("UnsignedMetadataError") && one.stderr.contains("1/2"), "{}", one.stderr);
    // The customer tool (tough's client) refuses it too, from a copy of the repository.
    let tool = crate::tool::built_tool();
    let channel_check = |channel: &str| {
        let mut cmd = Command::new(&tool);
        cmd.args(["channel", "check"]).arg(channels.join("tuf")).arg("--root").arg(&trusted_root).args(["--channel", channel, "--json"]);
        Run::of(cmd.output().unwrap())
    };
    let refused = channel_check("stable");
    assert_eq!(refused.code, 1, "the customer tool accepted a stable pointer with one signature:\n{}\n{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("does not verify"), "{}", refused.stderr);
    // Edge, one key, is unaffected.
    ngclient(&py, &scripts, &served.url, &client, &trusted_root, &["channel-edge.json"]).ok();
    fs::remove_file(meta.join("1.stable.json")).unwrap();

    // Nor can one release key go around the gates: top-level targets it signs (delegations
    // dropped, stable listed directly) are refused; only the root keys sign those.
    let top: serde_json::Value = serde_json::from_slice(&fs::read(meta.join("1.targets.json")).unwrap()).unwrap();
    let mut doc = top["signed"].clone();
    doc["version"] = 2.into();
    doc.as_object_mut().unwrap().remove("delegations");
    doc["targets"] = serde_json::json!({"channel-stable.json": {"length": 1, "hashes": {"sha256": "00".repeat(32)}}});
    let alice_key = verifier::keys::SigningKey::load(&alice, &verifier::keys::Secret::new(String::new())).unwrap();
    let sig: String = alice_key.sign(&pipeline::tuf::canonical(&doc)).iter().map(|b| format!("{b:02x}")).collect();
    let keyid = pipeline::tuf::key_id(&pipeline::tuf::tuf_key(alice_key.public()));
    let forged = serde_json::json!({"signed": doc, "signatures": [{"keyid": keyid, "sig": sig}]});
    fs::write(meta.join("2.targets.json"), serde_json::to_vec(&forged).unwrap()).unwrap();
    repo.xtask(&["trust", "refresh", "--now", &day(7.0)]).ok();
    let bypass = ngclient(&py, &scripts, &served.url, &repo.path().join("target/bypass-client"), &trusted_root, &["channel-stable.json"]);
    assert_ne!(bypass.code, 0, "top-level targets signed by one release key were accepted: {}", bypass.stdout);
    assert!(bypass.stderr.contains("UnsignedMetadataError"), "{}", bypass.stderr);
    fs::remove_file(meta.join("2.targets.json")).unwrap();
    repo.xtask(&["trust", "refresh", "--now", &day(7.0)]).ok();

    // Bob co-signs: the move is made; both clients accept it.
    let done = repo.xtask(&["promote", "--cosign", "--to", "stable", "--key", bob.to_str().unwrap(), "--now", &day(7.0), "--json"]);
    done.ok();
    assert_eq!(done.json()["promoted"]["pointer"]["sequence"], 1);
    assert!(!proposal.exists());
    let env: serde_json::Value = serde_json::from_slice(&fs::read(channels.join("stable/pointer.json")).unwrap()).unwrap();
    assert_eq!(env["signatures"].as_array().unwrap().len(), 2, "{env}");
    // `verify-pointer`: with one release key pinned it cannot see two people (refused, with the
    // hint); with both, accepted.
    verify_pointer(&channels.join("stable/pointer.json"), &[&alice_pub]).refused(&["two-person rule", "--key A.pub --key B.pub"]);
    verify_pointer(&channels.join("stable/pointer.json"), &[&alice_pub, &bob_pub]).ok();
    let fresh = repo.path().join("target/fresh-client");
    let two = ngclient(&py, &scripts, &served.url, &fresh, &trusted_root, &["channel-stable.json", "channel-edge.json"]);
    two.ok();
    assert_eq!(two.json()["channel-stable.json"]["custom"]["version"], "2.4.1");
    assert_eq!(two.json()["channel-stable.json"]["custom"]["supportEnds"], day(90.0));
    let by_tool = channel_check("stable");
    by_tool.ok();
    assert_eq!(by_tool.json()["channels"][0]["custom"]["version"], "2.4.1", "{}", by_tool.stdout);
    let moved = stable_history();
    assert_eq!((&moved["custom"]["version"], &moved["current"]), (&"2.4.1".into(), &true.into()), "{moved}");
    assert!(moved.get("proposed").is_none(), "{moved}");
    let check = repo.xtask(&["trust", "check", "--root", trusted_root.to_str().unwrap(), "--json"]);
    check.ok();
    let mut seen: Vec<String> =
        check.json()["channels"].as_array().unwrap().iter().map(|c| c["channel"].as_str().unwrap().to_owned()).collect();
    seen.sort();
    assert_eq!(seen, ["edge", "stable"], "{}", check.stdout);
    // Nothing to co-sign any more.
    repo.xtask(&["promote", "--cosign", "--to", "stable", "--key", bob.to_str().unwrap(), "--now", &day(8.0)])
        .refused(&["no move of `stable` is proposed"]);
}

/// A channel store made before the trust repository (pointers, logs and kept releases only:
/// what `promote` writes without `trust init`, as older versions of this tool did) is migrated
/// by `trust init --key --cosign-key`: every channel's current pointer and kept release become
/// TUF targets that python-tuf and `trust check` verify, stable under two signatures.
#[test]
fn trust_init_on_a_store_made_before_tuf_migrates_every_kept_pointer_into_targets() {
    let (Some(py), Some(scripts)) = (verifier("STELLAOPS_VERIFY_PYTHON"), verifier("STELLAOPS_VERIFY_SCRIPTS")) else { return };
    let repo = Repo::new();
    let alice_pub = repo.release_key();
    let alice = alice_pub.with_extension("key");
    let bob_pub = keypair(&repo.path().join("target/keys/bob.key"));
    let bob = bob_pub.with_extension("key");
    let channels = repo.path().join("target/channels");
    // The old store: edge twice, stable once, one key, no `tuf/`.
    let r1 = release(&repo, "r1");
    repo.xtask(&["promote", r1.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).ok();
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(7.0)]).ok();
    bump(&repo, "2.4.1", "2.4.2", 8);
    let r2 = release(&repo, "r2");
    repo.xtask(&["promote", r2.to_str().unwrap(), "--to", "edge", "--now", &day(8.0)]).ok();
    assert!(!channels.join("tuf").exists());
    let stable_before = fs::read(channels.join("stable/pointer.json")).unwrap();

    let root_key = repo.path().join("target/keys/root.key");
    keypair(&root_key);
    let init = |extra: &[&str]| {
        let mut args = vec!["trust", "init", "--root-key", root_key.to_str().unwrap()];
        args.extend(["--release-key", alice_pub.to_str().unwrap(), "--release-key", bob_pub.to_str().unwrap()]);
        let now = day(9.0);
        args.extend(["--now", now.as_str()]);
        args.extend(extra);
        args.push("--json");
        repo.xtask(&args)
    };
    // Without the key that signed the pointers, or without a second key for stable: refused,
    // nothing written.
    init(&[]).refused(&["already has channel pointers", "`edge`", "`stable`", "--key RELEASE.key"]);
    init(&["--key", alice.to_str().unwrap()]).refused(&["two-person rule", "--cosign-key"]);
    init(&["--key", alice.to_str().unwrap(), "--cosign-key", alice.to_str().unwrap()]).refused(&["must be another release key"]);
    let stranger = keypair(&repo.path().join("target/keys/stranger.key"));
    init(&["--key", stranger.with_extension("key").to_str().unwrap(), "--cosign-key", bob.to_str().unwrap()])
        .refused(&["is not among the `--release-key`s"]);
    assert!(!channels.join("tuf").exists(), "a refused migration left a trust repository");

    let done = init(&["--key", alice.to_str().unwrap(), "--cosign-key", bob.to_str().unwrap()]);
    done.ok();
    let migrated = &done.json()["migrated"]["channels"];
    let summary: Vec<(String, String, u64, usize)> = migrated
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_owned(),
                c["current"]["version"].as_str().unwrap().to_owned(),
                c["pointers"].as_u64().unwrap(),
                c["kept"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(summary, [("stable".into(), "2.4.1".into(), 1, 1), ("edge".into(), "2.4.2".into(), 2, 2)], "{}", done.stdout);

    // python-tuf reads every channel's pointer and every kept release.yaml from the migrated
    // repository; `trust check` (tough) agrees.
    let trusted_root = repo.path().join("target/trusted-root.json");
    fs::copy(channels.join("tuf/metadata/1.root.json"), &trusted_root).unwrap();
    let served = Served::start(&channels.join("tuf"));
    let mut names = vec!["channel-edge.json".to_owned(), "channel-stable.json".to_owned()];
    for c in ["edge", "stable"] {
        for e in fs::read_dir(channels.join(c).join("releases")).unwrap() {
            names.push(format!("release-{c}-{}.yaml", e.unwrap().file_name().to_str().unwrap()));
        }
    }
    assert_eq!(names.len(), 5);
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let got = ngclient(&py, &scripts, &served.url, &repo.path().join("target/client"), &trusted_root, &wanted);
    got.ok();
    let v = got.json();
    assert_eq!(v["channel-edge.json"]["custom"]["version"], "2.4.2");
    assert_eq!(v["channel-edge.json"]["custom"]["sequence"], 2);
    assert_eq!(v["channel-stable.json"]["custom"]["version"], "2.4.1");
    let yaml = |d: &Path| schema::model::Digest::of(&fs::read(d.join("release.yaml")).unwrap()).hex().to_owned();
    let mut seen: Vec<String> = names[2..].iter().map(|n| v[n]["sha256"].as_str().unwrap().to_owned()).collect();
    seen.sort();
    let mut expected = vec![yaml(&r1), yaml(&r1), yaml(&r2)];
    expected.sort();
    assert_eq!(seen, expected);
    let check = repo.xtask(&["trust", "check", "--root", trusted_root.to_str().unwrap(), "--json"]);
    check.ok();
    let mut listed: Vec<(String, String)> = check.json()["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["channel"].as_str().unwrap().to_owned(), c["custom"]["version"].as_str().unwrap().to_owned()))
        .collect();
    listed.sort();
    assert_eq!(listed, [("edge".to_owned(), "2.4.2".to_owned()), ("stable".to_owned(), "2.4.1".to_owned())]);

    // The stable pointer is the same document, now with both signatures (verify-pointer takes
    // it with both keys); its log entry is the same file; history still reads the store.
    let after = fs::read(channels.join("stable/pointer.json")).unwrap();
    assert_ne!(after, stable_before);
    assert_eq!(after, fs::read(channels.join("stable/log/00000001.json")).unwrap());
    let before: serde_json::Value = serde_json::from_slice(&stable_before).unwrap();
    let now: serde_json::Value = serde_json::from_slice(&after).unwrap();
    assert_eq!(before["payload"], now["payload"]);
    let mut cmd = crate::support::xtask_cmd();
    cmd.arg("verify-pointer").arg(channels.join("stable/pointer.json")).arg("--key").arg(&alice_pub).arg("--key").arg(&bob_pub);
    cmd.arg("--state").arg(repo.path().join("target/state.json")).args(["--now", &day(9.0)]);
    Run::of(cmd.output().unwrap()).ok();
    let h = repo.xtask(&["history", "--channel", "edge", "--key", alice_pub.to_str().unwrap(), "--json"]);
    h.ok();
    assert_eq!(h.json()["history"]["log"].as_array().unwrap().len(), 2);
    // The next move works on the migrated store as on any other.
    repo.xtask(&["trust", "refresh", "--now", &day(9.0)]).ok();
    ngclient(&py, &scripts, &served.url, &repo.path().join("target/client"), &trusted_root, &["channel-stable.json"]).ok();
}
