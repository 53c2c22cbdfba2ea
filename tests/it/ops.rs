//! Release operations (issue 8), end to end with real releases of a scratch repository and the
//! real `cargo xtask` binary: promotion with a controlled clock (`--now`), signed channel
//! pointers checked as a client does, rollback rendering by digest, upgrade preflight on a
//! crafted pair of releases, the release gates, and the GitHub workflows checked by other
//! people's tools (zizmor, actionlint).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{run_ok, verifier, workspace, xtask_cmd, Repo, Run};

/// 2027-06-20T12:00:00Z + `days` (the scratch repository's commit time is day 0).
fn day(days: f64) -> String {
    schema::model::rfc3339(crate::support::EPOCH + (days * 86_400.0) as i64)
}

/// Cuts a release into `target/releases/<name>` (with the repository's gates), its entries in
/// the tests' transparency log (stable and lts take only logged releases).
fn release(repo: &Repo, name: &str, channel: &str, extra: &[&str]) -> PathBuf {
    let out = repo.releases().join(name);
    let log = &crate::tlog::shared_log().url;
    let mut args = vec!["release", "--channel", channel, "--rekor-url", log, "--out", out.to_str().unwrap()];
    args.extend(extra);
    repo.xtask(&args).ok();
    out
}

fn public_key(repo: &Repo) -> PathBuf {
    repo.path().join("target/keys/dev.pub")
}

/// Sets the bundle version (`[release] version`) and commits.
fn bump(repo: &Repo, from: &str, to: &str, day: i64) {
    repo.edit("release-trains/components.toml", &format!("version = \"{from}\"\nregistry"), &format!("version = \"{to}\"\nregistry"));
    repo.commit_all(&format!("bundle {to}"), crate::support::EPOCH + day * 86_400);
}

/// A second key pair at `path` (and `.pub`), empty passphrase.
fn other_key(path: &Path) -> verifier::keys::SigningKey {
    use verifier::keys::{KeyKind, Secret, SigningKey};
    let k = SigningKey::generate(KeyKind::EcdsaP256);
    k.write(path, &path.with_extension("pub"), &Secret::new(String::new())).unwrap();
    k
}

fn verify_pointer(pointer: &Path, key: &Path, state: &Path, now: &str) -> Run {
    let mut cmd = xtask_cmd();
    cmd.arg("verify-pointer").arg(pointer).arg("--key").arg(key).arg("--state").arg(state).args(["--now", now, "--json"]);
    Run::of(cmd.output().unwrap())
}

#[test]
fn ops_promotion_refused_before_min_days_with_the_eligible_date_then_allowed() {
    let repo = Repo::new();
    let release_pub = repo.release_key();
    let dir = release(&repo, "edge-1", "edge", &[]);
    let d = dir.to_str().unwrap();
    // On edge at day 0 (edge itself has no minimum).
    repo.xtask(&["promote", d, "--to", "edge", "--now", &day(0.0)]).ok();
    // Two days later stable refuses it, and says from when it may.
    let r = repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(2.0)]);
    r.refused(&["has been on `edge` since 2027-06-20T12:00:00Z", "min-days", &format!("eligible from {}", day(7.0))]);
    // One second short of seven days: still refused.
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &schema::model::rfc3339(crate::support::EPOCH + 7 * 86_400 - 1)])
        .refused(&["eligible from"]);
    // Not with the development key, whatever the dates.
    let dev = repo.path().join("target/keys/dev.key");
    other_key(&dev);
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(7.0), "--key", dev.to_str().unwrap()])
        .refused(&["`stable` is never signed with the development key"]);
    // Seven days on: promoted, sequence 1 of stable, the edge release's own release.yaml.
    let ok = repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(7.0), "--json"]);
    ok.ok();
    let p = &ok.json()["promoted"]["pointer"];
    assert_eq!(p["channel"], "stable");
    assert_eq!(p["sequence"], 1);
    assert_eq!(p["rollback"], false);
    let yaml = fs::read(dir.join("release.yaml")).unwrap();
    assert_eq!(p["releaseYaml"], schema::model::Digest::of(&yaml).to_string());
    // history lists it as current.
    let h = repo.xtask(&["history", "--channel", "stable", "--key", release_pub.to_str().unwrap(), "--json"]);
    h.ok();
    let kept = &h.json()["history"]["kept"];
    assert_eq!(kept.as_array().unwrap().len(), 1, "{kept}");
    assert_eq!(kept[0]["version"], "2.4.1");
    assert_eq!(kept[0]["current"], true);
}

#[test]
fn ops_promotion_refuses_a_release_whose_gates_did_not_pass() {
    let repo = Repo::new();
    // Gates skipped: recorded as such, signed, and refused.
    let skipped = release(&repo, "skipped", "edge", &["--skip-gates"]);
    let report: serde_json::Value = serde_json::from_slice(&fs::read(skipped.join("gates.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "skipped");
    repo.xtask(&["promote", skipped.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).refused(&["gates were skipped"]);
    // A gate record edited after signing: refused.
    let passed = release(&repo, "passed", "edge", &[]);
    let env_path = passed.join("attest/gates.dsse.json");
    let mut env: serde_json::Value = serde_json::from_slice(&fs::read(&env_path).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    env["payload"] = b64.encode(body.replace("\"passed\":true", "\"passed\":false")).into();
    fs::write(&env_path, serde_json::to_vec(&env).unwrap()).unwrap();
    repo.xtask(&["promote", passed.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).refused(&["no signature verifies"]);
    // Nothing was put on the channel.
    assert!(!repo.path().join("target/channels/edge/pointer.json").exists());
}

#[test]
fn ops_verify_pointer_refuses_lower_sequence_and_expired_accepts_a_signed_rollback_whose_compose_pins_its_digests() {
    let repo = Repo::new();
    let first = release(&repo, "r1", "edge", &[]);
    repo.xtask(&["promote", first.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).ok();
    bump(&repo, "2.4.1", "2.4.2", 1);
    let second = release(&repo, "r2", "edge", &[]);
    repo.xtask(&["promote", second.to_str().unwrap(), "--to", "edge", "--now", &day(1.0)]).ok();

    let key = public_key(&repo);
    let log = repo.path().join("target/channels/edge/log");
    let state = repo.path().join("client-state.json");
    let (seq1, seq2) = (log.join("00000001.json"), log.join("00000002.json"));
    verify_pointer(&seq1, &key, &state, &day(0.5)).ok();
    let r = verify_pointer(&seq2, &key, &state, &day(1.5));
    r.ok();
    assert_eq!(r.json()["pointer"]["movement"]["kind"], "forward");
    // The old pointer again: a replay.
    let r = verify_pointer(&seq1, &key, &state, &day(1.5));
    r.refused(&["sequence 1 is lower than 2", "rollback attack"]);
    // `verify` on a pointer file does the same checks (state and clock from the environment).
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(&seq1).arg("--key").arg(&key).env("STELLAOPS_POINTER_STATE", &state).env("STELLAOPS_NOW", day(1.5));
    Run::of(cmd.output().unwrap()).refused(&["sequence 1 is lower than 2"]);
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(&seq2).arg("--key").arg(&key).env("STELLAOPS_POINTER_STATE", &state).env("STELLAOPS_NOW", day(15.5));
    Run::of(cmd.output().unwrap()).refused(&["expired at"]);
    // The current pointer after its expiry (14 days, release-trains/edge.toml): a freeze.
    verify_pointer(&seq2, &key, &state, &day(15.5)).refused(&["expired at", "freeze attack"]);
    // A pointer signed by another key.
    let other = repo.path().join("other.key");
    other_key(&other);
    verify_pointer(&seq2, &other.with_extension("pub"), &state, &day(1.5)).refused(&["no signature verifies"]);

    // A deliberate rollback to 2.4.1: rendered by digest, then signed with the marker.
    let out = repo.path().join("target/rb");
    // What a killed rollback leaves beside `out` (its staging and template directories, not
    // locked by any live process), and an earlier rollback's output at `out`: the leftovers
    // are removed, `out` is replaced whole.
    for leftover in [".rollback-killed", ".templates-killed"] {
        fs::create_dir_all(repo.path().join("target").join(leftover).join("sub")).unwrap();
    }
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("stale.txt"), "an earlier rollback").unwrap();
    let rb = repo.xtask(&["rollback", "--channel", "edge", "--to", "2.4.1", "--out", out.to_str().unwrap(), "--now", &day(2.0), "--json"]);
    rb.ok();
    let beside: Vec<String> =
        fs::read_dir(repo.path().join("target")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!beside.iter().any(|n| n.starts_with(".rollback-") || n.starts_with(".templates-") || n.starts_with(".rb")), "{beside:?}");
    assert!(!out.join("stale.txt").exists() && out.join("values.yaml").is_file());
    let done = &rb.json()["rollback"];
    assert_eq!(done["pointer"]["sequence"], 3);
    assert_eq!(done["pointer"]["rollback"], true);
    assert_eq!(done["pointer"]["previous"]["version"], "2.4.2");
    // Its templates came from the release's own commit: same compose and chart bytes.
    assert!(done["templates"].as_str().unwrap().starts_with("commit "), "{done}");
    assert_eq!(done["composeMatchesRelease"], true, "{done}");
    assert_eq!(done["chartMatchesRelease"], true, "{done}");
    // Every image of the compose file is the digest release.yaml of 2.4.1 records, and every
    // component is there.
    let doc: serde_norway::Value = serde_norway::from_slice(&fs::read(first.join("release.yaml")).unwrap()).unwrap();
    let recorded: std::collections::BTreeSet<String> =
        doc["components"].as_sequence().unwrap().iter().map(|c| c["image"].as_str().unwrap().to_owned()).collect();
    let compose: serde_norway::Value = serde_norway::from_slice(&fs::read(out.join("compose/docker-compose.yml")).unwrap()).unwrap();
    let used: std::collections::BTreeSet<String> =
        compose["services"].as_mapping().unwrap().values().map(|s| s["image"].as_str().unwrap().to_owned()).collect();
    assert_eq!(used, recorded);
    let second_doc = String::from_utf8(fs::read(second.join("release.yaml")).unwrap()).unwrap();
    assert!(used.iter().all(|i| i.contains("@sha256:")));
    assert!(used.iter().any(|i| !second_doc.contains(i.as_str())), "2.4.2's images differ (its labels carry its version)");
    assert!(out.join("values.yaml").is_file() && out.join("charts/platform-2.4.1.tgz").is_file());
    // The client accepts the rollback pointer and says it is one.
    let r = verify_pointer(&repo.path().join("target/channels/edge/pointer.json"), &key, &state, &day(2.5));
    r.ok();
    let m = &r.json()["pointer"]["movement"];
    assert_eq!((m["kind"].as_str(), m["from"].as_str(), m["to"].as_str()), (Some("rollback"), Some("2.4.2"), Some("2.4.1")));
    // Without --json it says ROLLBACK.
    let mut cmd = xtask_cmd();
    cmd.arg("verify-pointer").arg(repo.path().join("target/channels/edge/pointer.json")).arg("--key").arg(&key);
    cmd.arg("--state").arg(repo.path().join("fresh-state.json")).args(["--now", &day(2.5)]);
    assert!(Run::of(cmd.output().unwrap()).ok().stdout.contains("ROLLBACK"));
    // A second rollback to a version the channel does not keep is refused, naming what it keeps.
    repo.xtask(&["rollback", "--channel", "edge", "--to", "2.3.0", "--now", &day(2.0)]).refused(&["keeps no release `2.3.0`", "2.4.1"]);
}

#[test]
fn ops_lts_takes_one_new_line_per_quarter_and_stable_refuses_going_back() {
    let repo = Repo::new();
    let release_pub = repo.release_key();
    let a = release(&repo, "a", "edge", &[]);
    repo.xtask(&["promote", a.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).ok();
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(7.0)]).ok();
    repo.xtask(&["promote", "2.4.1", "--to", "lts", "--now", &day(7.0)]).ok();
    bump(&repo, "2.4.1", "2.5.0", 1);
    let b = release(&repo, "b", "edge", &[]);
    repo.xtask(&["promote", b.to_str().unwrap(), "--to", "edge", "--now", &day(1.0)]).ok();
    // An edge release cannot skip stable.
    repo.xtask(&["promote", b.to_str().unwrap(), "--to", "lts", "--now", &day(8.0)])
        .refused(&["is not on `stable`, the channel(s) that promote to `lts`", "--emergency REASON"]);
    repo.xtask(&["promote", "2.5.0", "--to", "stable", "--now", &day(8.0)]).ok();
    // 2027-06-28: LTS cut 2.4 this quarter (2027 Q2): 2.5 waits for 2027-07-01.
    repo.xtask(&["promote", "2.5.0", "--to", "lts", "--now", &day(8.0)]).refused(&[
        "quarterly",
        "line 2.4 was cut on 2027-06-27T12:00:00Z",
        "2027 Q2",
        "from 2027-07-01T00:00:00Z",
    ]);
    repo.xtask(&["promote", "2.5.0", "--to", "lts", "--now", "2027-07-01T00:00:00Z"]).ok();
    // Promotion never moves a channel back.
    repo.xtask(&["promote", a.to_str().unwrap(), "--to", "stable", "--now", &day(20.0)]).refused(&["is older", "cargo xtask rollback"]);
    // Promoting the current release again re-signs it (a later expiry), sequence + 1.
    let r = repo.xtask(&["promote", "2.5.0", "--to", "stable", "--now", &day(20.0), "--json"]);
    r.ok();
    assert_eq!(r.json()["promoted"]["refreshed"], true);
    assert_eq!(r.json()["promoted"]["pointer"]["sequence"], 3);
    assert_eq!(r.json()["promoted"]["pointer"]["expires"], day(34.0));
    let _ = release_pub;
}

#[test]
fn ops_a_stable_release_goes_through_edge_unless_an_emergency_is_recorded() {
    let repo = Repo::new();
    let release_pub = repo.release_key();
    repo.git(&["tag", "v2.4.1"]);
    // Cut for stable (a `v*` tag), it still starts on edge: straight to stable is refused.
    let s = release(&repo, "s", "stable", &[]);
    repo.xtask(&["promote", s.to_str().unwrap(), "--to", "stable", "--now", &day(0.0)]).refused(&[
        "is not on `edge`",
        "a release reaches `stable` only from there",
        "cargo xtask promote",
    ]);
    repo.xtask(&["promote", s.to_str().unwrap(), "--to", "lts", "--now", &day(0.0)]).refused(&["is not on `stable`"]);
    // Edge, the entry channel, takes a release cut for a channel it leads to.
    repo.xtask(&["promote", s.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).ok();
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(1.0)]).refused(&["eligible from"]);
    // An emergency needs a reason, and is recorded in the signed pointer.
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(1.0), "--emergency", " "]).refused(&["needs a reason"]);
    let r = repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(1.0), "--emergency", "CVE-2027-0001 fix", "--json"]);
    r.ok();
    assert_eq!(r.json()["promoted"]["pointer"]["emergency"], "CVE-2027-0001 fix");
    let env: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.path().join("target/channels/stable/pointer.json")).unwrap()).unwrap();
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    assert!(String::from_utf8(body).unwrap().contains("\"emergency\":\"CVE-2027-0001 fix\""));
    let h = repo.xtask(&["history", "--channel", "stable", "--key", release_pub.to_str().unwrap()]);
    assert!(h.ok().stdout.contains("EMERGENCY: CVE-2027-0001 fix"), "{}", h.stdout);
}

#[test]
fn ops_history_keeps_the_last_k_manifests_per_channel() {
    let repo = Repo::new();
    repo.edit("release-trains/edge.toml", "history-keep = 4", "history-keep = 2");
    repo.commit_all("keep 2", crate::support::EPOCH);
    for (i, v) in ["2.4.1", "2.4.2", "2.4.3"].iter().enumerate() {
        if i > 0 {
            bump(&repo, ["2.4.1", "2.4.2"][i - 1], v, i as i64);
        }
        let d = release(&repo, v, "edge", &[]);
        repo.xtask(&["promote", d.to_str().unwrap(), "--to", "edge", "--now", &day(i as f64)]).ok();
    }
    let h = repo.xtask(&["history", "--channel", "edge", "--json"]);
    h.ok();
    let kept: Vec<String> =
        h.json()["history"]["kept"].as_array().unwrap().iter().map(|k| k["version"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kept, ["2.4.3", "2.4.2"]);
    assert_eq!(h.json()["history"]["log"].as_array().unwrap().len(), 3, "the log keeps every pointer");
    assert!(repo.xtask(&["history", "--channel", "edge"]).ok().stdout.contains("* 2.4.3"));
}

/// A crafted pair: from `a` (web-ui 2.3.0, the rest 2.4.x) to `b`, cut with the trust rule
/// relaxed: authority 2.5.0 but signer and attestor 2.4.1, scanner and feeds 2.5.0, a
/// component the upgrade order does not know, and release.yaml.sig replaced by another key's.
#[test]
fn ops_preflight_flags_each_appendix_b_violation_of_a_crafted_pair() {
    let repo = Repo::new();
    let bundle = "release-trains/components.toml";
    repo.edit(bundle, "version = \"2.4.1\"\nskew-group = \"ui\"", "version = \"2.3.0\"\nskew-group = \"ui\"");
    repo.commit_all("ui 2.3", crate::support::EPOCH);
    let a = release(&repo, "a", "edge", &[]);
    let rules = repo.read(bundle);
    let mut b_rules = rules.replacen("left = [\"trust\"]\nmax-minor-distance = 0", "left = [\"trust\"]\nmax-minor-distance = 1", 1);
    b_rules = b_rules.replacen("version = \"2.4.1\"\nregistry", "version = \"2.5.0\"\nregistry", 1);
    for c in ["authority", "scanner-web", "scanner-worker"] {
        b_rules = b_rules.replacen(&format!("name = \"{c}\"\nversion = \"2.4.1\""), &format!("name = \"{c}\"\nversion = \"2.5.0\""), 1);
    }
    for c in ["concelier", "excititor"] {
        b_rules = b_rules.replacen(&format!("name = \"{c}\"\nversion = \"2.4.0\""), &format!("name = \"{c}\"\nversion = \"2.5.0\""), 1);
    }
    b_rules = b_rules.replacen("version = \"2.3.0\"\nskew-group = \"ui\"", "version = \"2.4.1\"\nskew-group = \"ui\"", 1);
    let scheduler = b_rules[b_rules.find("# Excititor").unwrap()..b_rules.find("# Web UI").unwrap()]
        .replace("Excititor: VEX ingestion and consensus", "Scheduler")
        .replace("name = \"excititor\"", "name = \"scheduler\"");
    b_rules.push('\n');
    b_rules.push_str(&scheduler);
    repo.write(bundle, &b_rules);
    repo.commit_all("b", crate::support::EPOCH + 86_400);
    let b = release(&repo, "b", "edge", &[]);
    // Back to the real rules for the preflight.
    repo.write(bundle, &rules);
    repo.commit_all("rules", crate::support::EPOCH + 2 * 86_400);
    let k = other_key(&repo.path().join("other.key"));
    let yaml = fs::read(b.join("release.yaml")).unwrap();
    fs::write(b.join("release.yaml.sig"), verifier::manifest::blob_signature(&k, &yaml).unwrap()).unwrap();

    let key = public_key(&repo);
    let (a_s, b_s, k_s) = (a.to_str().unwrap(), b.to_str().unwrap(), key.to_str().unwrap());
    let r = repo.xtask(&["preflight", "--from", a_s, "--to", b_s, "--key", k_s, "--backup-age", "30h", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let report = &r.json()["preflight"];
    let findings = report["findings"].as_array().unwrap();
    let has = |check: &str, severity: &str, needle: &str| {
        findings.iter().any(|f| f["check"] == check && f["severity"] == severity && f["message"].as_str().unwrap().contains(needle))
    };
    assert!(has("manifest-signature", "violation", "target"), "{report:#}");
    assert!(has("trust-triangle", "violation", "authority 2.5.0, signer 2.4.1, attestor 2.4.1"), "{report:#}");
    assert!(has("upgrade-order", "violation", "`scheduler` has no place"), "{report:#}");
    // After the triangle step, web-ui is still 2.3.0 and authority is 2.5.0: two minors apart.
    assert!(has("skew", "violation", "after step 1 (authority, signer, attestor): skew rule `ui-backend`"), "{report:#}");
    assert!(has("skew", "violation", "2.3.0"), "{report:#}");
    assert!(has("backup-age", "warning", "30 h old"), "{report:#}");
    assert!(r.stderr.contains("manifest-signature") && r.stderr.contains("trust-triangle") && r.stderr.contains("skew"), "{}", r.stderr);
    // A safe pair (a release to itself, fresh backups) passes: the checks can say yes.
    let r = repo.xtask(&["preflight", "--from", a_s, "--to", a_s, "--key", k_s, "--backup-age", "2h"]);
    r.ok();
    assert!(r.stdout.contains("0 violation(s)"), "{}", r.stdout);
}

#[test]
fn ops_gates_a_lock_file_package_in_the_advisory_file_fails_the_release_naming_it() {
    let repo = Repo::new();
    repo.write(
        "components/standin/Cargo.lock",
        "version = 3\n\n[[package]]\nname = \"smallvec\"\nversion = \"1.6.0\"\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.200\"\n",
    );
    repo.write(
        "release-trains/advisories.osv.json",
        r#"[
  {"id": "STELLA-TEST-0001", "summary": "buffer overflow in insert_many",
   "affected": [{"package": {"ecosystem": "crates.io", "name": "smallvec"},
                 "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.3.0"}, {"fixed": "1.6.1"}]}]}]},
  {"id": "STELLA-TEST-0002", "summary": "fixed long ago",
   "affected": [{"package": {"ecosystem": "crates.io", "name": "serde"}, "versions": ["1.0.1"]}]}
]
"#,
    );
    repo.commit_all("a vulnerable lock file", crate::support::EPOCH);
    let r = repo.xtask(&["release", "--channel", "edge"]);
    r.refused(&["release gates failed", "`smallvec` 1.6.0", "STELLA-TEST-0001", "Cargo.lock", "authority"]);
    assert!(!r.stderr.contains("STELLA-TEST-0002"), "serde 1.0.200 is not affected:\n{}", r.stderr);
    assert!(!repo.releases().join("2.4.1-edge").exists(), "no release written");
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.releases().join("2.4.1-edge.gates-rejected.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["gates"][0]["findings"][0]["package"], "smallvec");
}

#[test]
fn ops_gates_the_audit_checks_the_debian_packages_of_the_bases_with_debian_version_order() {
    let repo = Repo::new();
    // busybox-static 1:1.35.0-4+deb12u1+b1 is in every image's base. The first advisory is
    // fixed by a later Debian revision (affected); the second was fixed before it (not), which
    // only Debian's ordering tells apart (`+deb12u1+b1` vs `+deb12u1`, epochs).
    repo.write(
        "release-trains/advisories.osv.json",
        r#"[
  {"id": "DSA-TEST-1", "summary": "a test advisory on busybox",
   "affected": [{"package": {"ecosystem": "Debian:12", "name": "busybox-static"},
                 "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.35.0-4+deb12u2"}]}]}]},
  {"id": "DSA-TEST-2", "summary": "fixed before this build",
   "affected": [{"package": {"ecosystem": "Debian:12", "name": "busybox-static"},
                 "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.35.0-4+deb12u1"}]}]}]}
]
"#,
    );
    repo.commit_all("an advisory on a base package", crate::support::EPOCH);
    let r = repo.xtask(&["release", "--channel", "edge"]);
    r.refused(&[
        "release gates failed",
        "`busybox-static` 1:1.35.0-4+deb12u1+b1 (deb) at `/var/lib/dpkg/status` in image `authority (linux/arm64)`",
        "DSA-TEST-1",
    ]);
    assert!(!r.stderr.contains("DSA-TEST-2"), "fixed in an earlier revision:\n{}", r.stderr);
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.releases().join("2.4.1-edge.gates-rejected.json")).unwrap()).unwrap();
    let audit = &report["gates"][0];
    // 8 components x 2 platforms, each with busybox-static.
    assert_eq!(audit["findings"].as_array().unwrap().len(), 16, "{audit}");
    let file = fs::read(repo.path().join("release-trains/advisories.osv.json")).unwrap();
    use sha2::Digest as _;
    assert_eq!(audit["advisories"]["sha256"], format!("{:x}", sha2::Sha256::digest(&file)));
    assert_eq!(audit["advisories"]["records"], 2);

    // Fixed: an advisory whose fix is older than the package passes, and the record pins the file.
    repo.write("release-trains/advisories.osv.json", "[]\n");
    repo.commit_all("no advisories", crate::support::EPOCH);
    repo.xtask(&["release", "--channel", "edge"]).ok();
    let gates: serde_json::Value = serde_json::from_slice(&fs::read(repo.releases().join("2.4.1-edge/gates.json")).unwrap()).unwrap();
    assert_eq!(gates["gates"][0]["advisories"]["sha256"], format!("{:x}", sha2::Sha256::digest(b"[]\n")));
    assert!(gates["gates"][0]["detail"].as_str().unwrap().contains("found in 16 image(s)"), "{}", gates["gates"][0]["detail"]);
}

#[test]
fn ops_gates_failing_tests_and_budgets_fail_the_release_and_a_passing_run_is_recorded() {
    let repo = Repo::new();
    repo.write(
        "release-trains/gates.toml",
        r#"[[test]]
name = "unit"
command = ["sh", "-c", "echo boom >&2; exit 3"]

[[budget]]
name = "sbom compose"
command = ["sh", "-c", "echo '{\"seconds\": 2.5}'"]
metric = "/seconds"
max = 1.0

[[budget]]
name = "diff"
command = ["sh", "-c", "echo '{\"seconds\": 0.2}'"]
metric = "/seconds"
max = 1.0
"#,
    );
    repo.commit_all("gates", crate::support::EPOCH);
    let r = repo.xtask(&["release", "--channel", "edge"]);
    r.refused(&["unit: exited with 3", "boom", "sbom compose: `/seconds` is 2.5, over its budget of 1"]);
    assert!(!r.stderr.contains("  - diff"), "a budget within bounds is not a failure:\n{}", r.stderr);
    // A bad gates file is refused before any build, naming the key.
    repo.write("release-trains/gates.toml", "[[budget]]\nname = \"x\"\ncommand = [\"true\"]\n");
    repo.commit_all("bad gates", crate::support::EPOCH);
    repo.xtask(&["release", "--channel", "edge"]).refused(&["release-trains/gates.toml", "`budget[0]`", "max-seconds"]);
    // Passing gates are recorded, signed, about this release.yaml.
    repo.write("release-trains/gates.toml", "[[budget]]\nname = \"fast\"\ncommand = [\"true\"]\nmax-seconds = 60\n");
    repo.commit_all("good gates", crate::support::EPOCH);
    let dir = release(&repo, "ok", "edge", &[]);
    let key = verifier::keys::PublicKey::load(&public_key(&repo)).unwrap();
    let yaml = schema::model::Digest::of(&fs::read(dir.join("release.yaml")).unwrap());
    let report = pipeline::stages::gates::check_record(&dir, &key, &yaml).unwrap();
    assert_eq!(report.gates[0].name, "fast");
    assert!(dir.join("gates/fast.log").is_file());
}

/// Every `uses:` of every workflow, with its line.
fn uses_lines(text: &str) -> Vec<String> {
    text.lines().filter(|l| l.trim_start().trim_start_matches("- ").starts_with("uses:")).map(|l| l.trim().to_owned()).collect()
}

#[test]
fn ops_workflows_are_yaml_pin_every_action_by_sha_and_test_yml_runs_the_readme_command() {
    let dir = workspace().join(".github/workflows");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.iter().any(|f| f.ends_with("release.yml")) && files.iter().any(|f| f.ends_with("test.yml")));
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", f.display()));
        assert_eq!(doc["permissions"], serde_norway::Value::Mapping(Default::default()), "{}: top-level `permissions: {{}}`", f.display());
        for job in doc["jobs"].as_mapping().unwrap().values() {
            assert!(job.get("permissions").is_some(), "{}: every job states its permissions", f.display());
        }
        for line in uses_lines(&text) {
            let value = line.trim_start_matches("- ").trim_start_matches("uses:").trim();
            if value.starts_with("./") {
                continue; // a workflow of this repository
            }
            let (action, rest) = value.split_once('@').unwrap_or_else(|| panic!("{}: `{line}` names no ref", f.display()));
            let (sha, comment) = rest.split_once(" # ").unwrap_or((rest, ""));
            assert!(!action.is_empty() && action.contains('/'), "{}: `{line}`", f.display());
            assert!(
                sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{}: `{line}` is not pinned to a 40-hex commit",
                f.display()
            );
            assert!(comment.starts_with('v'), "{}: `{line}` lacks its `# vX.Y.Z` comment", f.display());
        }
    }
    // test.yml runs the README's test command on every push.
    let readme = fs::read_to_string(workspace().join("README.md")).unwrap();
    assert!(readme.contains("tests/run.sh                           # the tests"), "the README's test command moved");
    let test: serde_norway::Value = serde_norway::from_str(&fs::read_to_string(dir.join("test.yml")).unwrap()).unwrap();
    assert!(test["on"].get("push").is_some(), "test.yml runs on push");
    let runs: Vec<&str> = test["jobs"]["test"]["steps"].as_sequence().unwrap().iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(runs.iter().any(|r| r.lines().any(|l| l.trim() == "bash tests/run.sh")), "{runs:?}");
    // release.yml: runs on tags, tests first, releases, publishes, uploads the kit.
    let rel_text = fs::read_to_string(dir.join("release.yml")).unwrap();
    let rel: serde_norway::Value = serde_norway::from_str(&rel_text).unwrap();
    assert!(rel["on"]["push"]["tags"].as_sequence().is_some());
    assert_eq!(rel["jobs"]["test"]["uses"], "./.github/workflows/test.yml");
    assert_eq!(rel["jobs"]["release"]["needs"], "test");
    for needle in [
        "cargo xtask release --channel",
        "cargo xtask verify",
        "cargo xtask publish",
        "stellaops-kit-*.tar.zst",
        "actions/upload-artifact@",
    ] {
        assert!(rel_text.contains(needle), "release.yml lacks `{needle}`");
    }
}

#[test]
fn ops_workflows_pass_zizmor_and_actionlint() {
    let dir = workspace().join(".github/workflows");
    if let Some(zizmor) = verifier("STELLAOPS_VERIFY_ZIZMOR") {
        // Medium and above: unpinned actions, broad permissions, template injection,
        // persisted credentials. (Below: informational style hints.)
        run_ok(Command::new(zizmor).env("NO_COLOR", "1").args(["--offline", "--no-progress", "--min-severity", "medium"]).arg(&dir));
    }
    if let Some(actionlint) = verifier("STELLAOPS_VERIFY_ACTIONLINT") {
        let files: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        run_ok(Command::new(actionlint).arg("-no-color").args(&files).current_dir(workspace()));
    }
}

/// `cargo` as a developer's shell runs it: without what `cargo test` (or `cargo run`) set for
/// the running package.
fn plain_cargo(repo: &Repo, extra_env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new("cargo");
    cmd.args(["build", "--offline", "--manifest-path", "gatecrate/Cargo.toml", "--target-dir", "target/gatecrate"])
        .current_dir(repo.path());
    for k in pipeline::stages::gates::cargo_run_env() {
        cmd.env_remove(k);
    }
    cmd.envs(extra_env.iter().copied());
    let out = cmd.output().expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn ops_gates_a_cargo_gate_does_not_rebuild_what_the_developers_cargo_built() {
    // A crate whose build script watches what `cargo run` sets for the package it runs, as
    // ring's does: inherited by a gate, those would make it rebuild, then rebuild again after.
    let repo = Repo::new();
    repo.write("gatecrate/Cargo.toml", "[package]\nname = \"gatecrate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n");
    repo.write(
        "gatecrate/build.rs",
        "fn main() {\n    println!(\"cargo:rerun-if-changed=build.rs\");\n    println!(\"cargo:rerun-if-env-changed=CARGO_MANIFEST_DIR\");\n    println!(\"cargo:rerun-if-env-changed=CARGO_PKG_NAME\");\n}\n",
    );
    repo.write("gatecrate/src/lib.rs", "pub fn gate() {}\n");
    repo.write(
        "release-trains/gates.toml",
        "[[test]]\nname = \"cargo\"\ncommand = [\"cargo\", \"build\", \"--offline\", \"--manifest-path\", \"gatecrate/Cargo.toml\", \"--target-dir\", \"target/gatecrate\"]\n",
    );
    // (The first build writes the crate's Cargo.lock, committed with it.)
    assert!(plain_cargo(&repo, &[]).contains("Compiling gatecrate"));
    repo.commit_all("a cargo gate", crate::support::EPOCH);
    assert!(!plain_cargo(&repo, &[]).contains("Compiling"), "a second plain build compiles nothing");
    // The crate is sensitive to what this test process carries (`cargo test` sets these too).
    assert!(plain_cargo(&repo, &[("CARGO_PKG_NAME", "xtask")]).contains("Compiling gatecrate"));
    assert!(plain_cargo(&repo, &[]).contains("Compiling gatecrate"));
    // This process has CARGO_PKG_NAME and CARGO_MANIFEST_DIR of `xtask` (set by `cargo test`),
    // as `cargo xtask` has them from `cargo run`: the release's gate compiles nothing, and
    // neither does the developer's next build.
    assert_eq!(std::env::var("CARGO_PKG_NAME").as_deref(), Ok("xtask"));
    let dir = release(&repo, "gated", "edge", &[]);
    let log = fs::read_to_string(dir.join("gates/cargo.log")).unwrap();
    assert!(!log.contains("Compiling"), "the gate rebuilt what was built:\n{log}");
    assert!(!plain_cargo(&repo, &[]).contains("Compiling"), "the developer's build after the gate compiles nothing");
}

/// What in a workflow is not pinned: an action not named by a full commit SHA, a container or
/// service image not named by digest, a script piped into a shell, a download not checked by
/// sha256, or release-environment pins that differ from `pins` (name → value) when given.
fn unpinned(name: &str, text: &str, pins: &mut Vec<(String, String)>) -> Vec<String> {
    let doc: serde_norway::Value = serde_norway::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut found = Vec::new();
    let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let pinned_image = |image: &str| image.rsplit_once("@sha256:").is_some_and(|(_, h)| is_hex(h, 64));
    for (key, value) in doc["env"].as_mapping().into_iter().flatten() {
        let (k, v) = (key.as_str().unwrap_or_default().to_owned(), value.as_str().unwrap_or_default().to_owned());
        match pins.iter().find(|(pk, _)| *pk == k) {
            Some((_, pv)) if *pv != v => found.push(format!("{name}: env `{k}` is `{v}`, another workflow says `{pv}`")),
            Some(_) => {}
            None => pins.push((k, v)),
        }
    }
    for (job_name, job) in doc["jobs"].as_mapping().into_iter().flatten() {
        let job_name = job_name.as_str().unwrap_or_default();
        let container = &job["container"];
        let image = container["image"].as_str().or(container.as_str());
        if let Some(image) = image {
            if !pinned_image(image) {
                found.push(format!("{name}: job `{job_name}`: container image `{image}` is not pinned by digest"));
            }
            if let Some(recorded) = job["env"]["STELLAOPS_BUILDER_IMAGE"].as_str() {
                if recorded != image {
                    found.push(format!("{name}: job `{job_name}`: STELLAOPS_BUILDER_IMAGE `{recorded}` is not the container `{image}`"));
                }
            }
        }
        for (_, service) in job["services"].as_mapping().into_iter().flatten() {
            let image = service["image"].as_str().unwrap_or_default();
            if !pinned_image(image) {
                found.push(format!("{name}: job `{job_name}`: service image `{image}` is not pinned by digest"));
            }
        }
        if let Some(uses) = job["uses"].as_str() {
            if !uses.starts_with("./") {
                found.push(format!("{name}: job `{job_name}` calls `{uses}`, outside this repository"));
            }
        }
        for step in job["steps"].as_sequence().into_iter().flatten() {
            if let Some(uses) = step["uses"].as_str() {
                let pinned = uses.starts_with("./") || uses.rsplit_once('@').is_some_and(|(_, r)| is_hex(r, 40));
                if !pinned {
                    found.push(format!("{name}: job `{job_name}`: `{uses}` is not pinned by commit SHA"));
                }
                if let Some(image) = uses.strip_prefix("docker://") {
                    if !pinned_image(image) {
                        found.push(format!("{name}: job `{job_name}`: `{uses}` is not pinned by digest"));
                    }
                }
            }
            let run = step["run"].as_str().unwrap_or_default();
            for piped in run.split('|').skip(1) {
                let command = piped.split_whitespace().next().unwrap_or_default();
                if ["sh", "bash", "dash", "zsh"].contains(&command.rsplit('/').next().unwrap_or_default()) {
                    found.push(format!("{name}: job `{job_name}`: a script is piped into a shell (`| {command}`)"));
                }
            }
            let downloads = ["curl ", "wget "].iter().any(|d| run.contains(d));
            if downloads && !run.contains("sha256sum -c") {
                found.push(format!("{name}: job `{job_name}`: a download is not checked with `sha256sum -c`"));
            }
        }
    }
    found
}

#[test]
fn ops_workflows_pin_every_action_image_package_source_and_installer() {
    let dir = workspace().join(".github/workflows");
    let mut pins = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut found = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        found.extend(unpinned(&f.file_name().unwrap().to_string_lossy(), &text, &mut pins));
        for k in ["STELLAOPS_DEBIAN_SNAPSHOT", "STELLAOPS_RUSTUP_VERSION", "STELLAOPS_RUSTUP_SHA256"] {
            assert!(text.contains(&format!("\n  {k}: ")), "{}: no workflow-level `{k}`", f.display());
        }
    }
    assert!(found.is_empty(), "unpinned:\n{}", found.join("\n"));
    let release = fs::read_to_string(dir.join("release.yml")).unwrap();
    assert!(release.contains("snapshot.debian.org/archive/debian/$STELLAOPS_DEBIAN_SNAPSHOT"), "packages come from the pinned snapshot");
    // The checker itself finds what it looks for.
    let bad = "jobs:\n  a:\n    container:\n      image: debian:12\n    services:\n      reg:\n        image: registry:2\n    env:\n      STELLAOPS_BUILDER_IMAGE: debian:11\n    steps:\n      - uses: actions/checkout@v5\n      - run: curl -sSf https://sh.rustup.rs | sh -s -- -y\n      - run: wget https://example.invalid/x.tar.gz\n";
    let found = unpinned("bad.yml", bad, &mut Vec::new());
    for needle in [
        "container image `debian:12`",
        "service image `registry:2`",
        "`actions/checkout@v5`",
        "piped into a shell",
        "not checked",
        "STELLAOPS_BUILDER_IMAGE `debian:11`",
    ] {
        assert!(found.iter().any(|f| f.contains(needle)), "`{needle}` not found in {found:?}");
    }
    let mut other = vec![("STELLAOPS_RUSTUP_VERSION".to_owned(), "1.0.0".to_owned())];
    let found = unpinned("drift.yml", "env:\n  STELLAOPS_RUSTUP_VERSION: 1.29.0\njobs: {}\n", &mut other);
    assert!(found.iter().any(|f| f.contains("another workflow says `1.0.0`")), "{found:?}");

    // Keyless by default (issue 16): the release job signs keyless with the workflow's token
    // and verifies under the identity policy; promote checks under the release workflow's
    // identity. The checker finds each way back to a key.
    let promote = fs::read_to_string(dir.join("promote.yml")).unwrap();
    let found = not_keyless(&release, &promote);
    assert!(found.is_empty(), "not keyless:\n{}", found.join("\n"));
    let keyed = release
        .replace("--keyless --fulcio-url https://fulcio.sigstore.dev", "--key \"$RUNNER_TEMP/release.key\"")
        .replace("      id-token: write\n", "");
    let found = not_keyless(&keyed, &promote.replace("cargo xtask trust keyless", "true"));
    for needle in ["lacks `permissions: id-token: write`", "lacks `--keyless`", "signs with `--key`", "promote.yml: job `promote`"] {
        assert!(found.iter().any(|f| f.contains(needle)), "`{needle}` not found in {found:?}");
    }
    let found = not_keyless(
        &release.replace("    permissions:\n      # Pushes", "    permissions:\n      id-token: write\n      # Pushes"),
        &promote,
    );
    assert!(found.iter().any(|f| f.contains("job `edge` asks for an OIDC token")), "{found:?}");
}

/// What keeps the workflows from signing keyless by default: the release job without
/// `id-token: write`, `release` without `--keyless` and public-good Fulcio and Rekor or with a
/// key, a `verify` there not under the identity policy (GitHub's issuer), another job asking for
/// an OIDC token, and a job that moves channels (`edge`, `promote`) without writing the
/// identity policy of this repository's release workflow at a version tag.
fn not_keyless(release: &str, promote: &str) -> Vec<String> {
    const ISSUER: &str = "--certificate-oidc-issuer https://token.actions.githubusercontent.com";
    let mut found = Vec::new();
    let runs = |job: &serde_norway::Value| -> String {
        let steps = job["steps"].as_sequence().map(|s| s.iter().filter_map(|st| st["run"].as_str()).collect::<Vec<_>>());
        steps.unwrap_or_default().join("\n").replace("\\\n", " ")
    };
    let rel: serde_norway::Value = serde_norway::from_str(release).unwrap();
    let job = &rel["jobs"]["release"];
    if job["permissions"]["id-token"].as_str() != Some("write") {
        found.push("release.yml: the release job lacks `permissions: id-token: write`".to_owned());
    }
    let commands = runs(job);
    let cut = commands.lines().find(|l| l.contains("cargo xtask release")).unwrap_or_default();
    for flag in ["--keyless", "--fulcio-url https://fulcio.sigstore.dev", "--rekor-url https://rekor.sigstore.dev"] {
        if !cut.contains(flag) {
            found.push(format!("release.yml: `cargo xtask release` lacks `{flag}`: `{cut}`"));
        }
    }
    if cut.contains("--key ") || serde_norway::to_string(job).unwrap().contains("secrets.STELLAOPS_SIGNING_KEY") {
        found.push(format!("release.yml: the release job signs with `--key` (or holds the key secret): `{cut}`"));
    }
    for l in commands.lines().filter(|l| l.contains("cargo xtask verify")) {
        if !(l.contains("--trusted-root") && l.contains(ISSUER)) {
            found.push(format!("release.yml: `{}` is not under the identity policy", l.trim()));
        }
    }
    let policy = |file: &str, name: &str, job: &serde_norway::Value, found: &mut Vec<String>| {
        let commands = runs(job);
        let writes = commands
            .lines()
            .any(|l| l.contains("cargo xtask trust keyless") && l.contains("--certificate-identity-regexp") && l.contains(ISSUER));
        let pattern = commands.contains(r"/\.github/workflows/release\.yml@refs/tags/v'");
        if !(writes && pattern) {
            found.push(format!("{file}: job `{name}` moves a channel without the release workflow's identity policy (`trust keyless`)"));
        }
    };
    let prom: serde_norway::Value = serde_norway::from_str(promote).unwrap();
    policy("release.yml", "edge", &rel["jobs"]["edge"], &mut found);
    policy("promote.yml", "promote", &prom["jobs"]["promote"], &mut found);
    for (file, doc) in [("release.yml", &rel), ("promote.yml", &prom)] {
        for (name, job) in doc["jobs"].as_mapping().unwrap() {
            let name = name.as_str().unwrap_or_default();
            if (file, name) != ("release.yml", "release") && !job["permissions"]["id-token"].is_null() {
                found.push(format!("{file}: job `{name}` asks for an OIDC token; only the release job signs keyless"));
            }
        }
    }
    found
}
