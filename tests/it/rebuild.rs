//! `repro --against`: a published release rebuilt from its commit and compared, on a kit, a
//! release directory and a registry; a release whose image was replaced by another image
//! signed with the same key is caught and named; the verdict is a signed SLSA VSA that the
//! in-toto attestation library validates, that `verify --vsa` checks, and that `promote`
//! requires where `[rebuild-verdict]` says so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use crate::support::{registry, run_ok, verifier, xtask_cmd, Repo, EPOCH};

fn day(days: f64) -> String {
    schema::model::rfc3339(EPOCH + (days * 86_400.0) as i64)
}

/// A rebuilder's key pair (the second party), empty passphrase.
fn rebuilder_key(repo: &Repo) -> PathBuf {
    use verifier::keys::{KeyKind, Secret, SigningKey};
    let key = repo.path().join("target/keys/rebuilder.key");
    SigningKey::generate(KeyKind::EcdsaP256).write(&key, &key.with_extension("pub"), &Secret::new(String::new())).expect("write key");
    key
}

fn against(repo: &Repo, what: &str, release_pub: &Path, rebuilder: &Path, vsa: &Path, extra: &[&str]) -> crate::support::Run {
    let log = crate::tlog::shared_log();
    let mut args = vec!["repro", "--against", what, "--release-key", release_pub.to_str().unwrap()];
    args.extend(["--key", rebuilder.to_str().unwrap(), "--vsa", vsa.to_str().unwrap(), "--rekor-key", log.public.to_str().unwrap()]);
    args.extend(extra);
    args.push("--json");
    repo.xtask(&args)
}

/// The statement inside a VSA envelope, written beside it for the Python checker.
fn statement_of(vsa: &Path) -> (serde_json::Value, PathBuf) {
    let env: serde_json::Value = serde_json::from_slice(&fs::read(vsa).unwrap()).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    let body = base64::engine::general_purpose::STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    let path = vsa.with_extension("statement.json");
    fs::write(&path, &body).unwrap();
    (serde_json::from_slice(&body).unwrap(), path)
}

#[test]
fn a_published_release_rebuilds_identically_from_a_kit_and_a_registry_and_a_replaced_image_is_named() {
    let Some(host) = registry() else { return };
    let python = verifier("STELLAOPS_VERIFY_PYTHON");
    let repo = Repo::new();
    // A second commit that changes no component's input: under `image-epoch = "component"`
    // every image keeps the first commit as its revision label, and only the provenance names
    // the released commit (which is what must be rebuilt).
    let first = repo.git(&["rev-parse", "HEAD"]);
    repo.write("NOTES.md", "release notes\n");
    repo.commit_all("notes", crate::support::EPOCH + 3600);
    let release_pub = repo.release_key();
    let rebuilder = rebuilder_key(&repo);
    let log = crate::tlog::shared_log();
    // The genuine release (edge, logged so that it can go on to stable).
    let genuine = repo.releases().join("genuine");
    repo.xtask(&["release", "--channel", "edge", "--rekor-url", &log.url, "--out", genuine.to_str().unwrap()]).ok();
    let kit = genuine.join("stellaops-kit-2.4.1-edge.tar.zst");
    let vsa_kit = repo.path().join("target/vsa-kit.json");

    // 1. Against the kit: verified, rebuilt from the images' commit, every artifact identical.
    let r = against(&repo, kit.to_str().unwrap(), &release_pub, &rebuilder, &vsa_kit, &[]);
    r.ok();
    let v = r.json();
    assert_eq!(v["reproducible"], true, "{}", r.stdout);
    let head = repo.git(&["rev-parse", "HEAD"]);
    assert_eq!(v["verdict"]["commit"], head.as_str());
    let images = fs::read_to_string(genuine.join("images.json")).unwrap();
    assert!(images.contains(&first), "the images are stamped with the first commit: {images}");
    let compared = v["verdict"]["compared"].as_array().unwrap();
    // 8 components: index, SBOM, and per platform image + two SBOM encodings; chart, compose, version.
    assert_eq!(compared.len(), 8 * (2 + 2 * 3) + 3, "{compared:#?}");
    assert!(compared.iter().all(|c| c["identical"] == true));
    // The verdict: a signed VSA about this release.yaml, PASSED, valid for the in-toto library.
    let (st, st_path) = statement_of(&vsa_kit);
    assert_eq!(st["predicateType"], "https://slsa.dev/verification_summary/v1");
    assert_eq!(st["predicate"]["verificationResult"], "PASSED");
    let yaml_digest = schema::model::Digest::of(&fs::read(genuine.join("release.yaml")).unwrap());
    assert_eq!(st["subject"][0]["digest"]["sha256"], yaml_digest.hex());
    if let Some(python) = &python {
        let scripts = verifier("STELLAOPS_VERIFY_SCRIPTS").expect("checker scripts");
        let out = run_ok(Command::new(python).arg(scripts.join("intoto_check.py")).arg(&st_path));
        assert!(out.contains("1 valid, 0 invalid"), "{out}");
    }
    // A release that does not verify with the key given is not rebuilt.
    let stranger = repo.path().join("target/keys/rebuilder.pub");
    against(&repo, kit.to_str().unwrap(), &stranger, &rebuilder, &repo.path().join("target/x.json"), &[])
        .refused(&["does not verify, so it is not rebuilt", "--release-key"]);
    assert!(!repo.path().join("target/x.json").exists());
    // `verify --vsa`: passes with the rebuilder's key; the release key is not a second party.
    let rebuilder_pub = rebuilder.with_extension("pub");
    let vk = |vsa: &Path, key: &Path| {
        let mut cmd = xtask_cmd();
        cmd.args(["verify"]).arg(&genuine).arg("--key").arg(&release_pub).arg("--rekor-key").arg(&log.public);
        cmd.arg("--vsa").arg(vsa).arg("--vsa-key").arg(key);
        crate::support::Run::of(cmd.output().unwrap())
    };
    vk(&vsa_kit, &rebuilder_pub).ok();
    let r = vk(&vsa_kit, &release_pub);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("rebuild verdict") && r.stdout.contains("signed by the release key itself"), "{}", r.stdout);

    // 2. Against the registry: the genuine release published, rebuilt, identical.
    let ns = format!("{host}/rebuild-{}", std::process::id());
    let mut publish = xtask_cmd();
    publish.arg("publish").arg(&genuine).args(["--registry", &ns, "--json"]);
    crate::support::Run::of(publish.output().unwrap()).ok();
    let vsa_reg = repo.path().join("target/vsa-registry.json");
    let docker_ns = format!("docker://{ns}");
    let r = against(&repo, &docker_ns, &release_pub, &rebuilder, &vsa_reg, &["--release", genuine.to_str().unwrap()]);
    r.ok();
    assert_eq!(r.json()["reproducible"], true);
    // Without the signed release.yaml, a registry cannot be rebuilt against.
    against(&repo, &docker_ns, &release_pub, &rebuilder, &vsa_reg, &[]).refused(&["--release DIR"]);

    // 3. A release of the same commit whose `authority` image carries a file its build did
    //    not make, signed with the same key (by someone who also told the drift gate to let
    //    it through, uncommitted): it verifies, and the rebuild names the image and the file.
    let edge = fs::read_to_string(repo.path().join("release-trains/edge.toml")).unwrap();
    fs::write(
        repo.path().join("release-trains/edge.toml"),
        format!("{edge}\n[[drift.accept]]\nchange = \"added\"\ntype = \"file\"\nname = \"/opt/backdoor\"\nreason = \"forged\"\n"),
    )
    .unwrap();
    let forged = repo.releases().join("forged");
    let mut cmd = xtask_cmd();
    cmd.env("STELLAOPS_SIGNING_KEY", repo.path().join("target/keys/release.key"));
    cmd.args(["build", "--channel", "edge", "--rekor-url", &log.url, "--out"]).arg(&forged).arg("--source").arg(repo.path());
    cmd.env("STELLAOPS_TEST_FAULT", "stowaway@authority=/opt/backdoor");
    crate::support::Run::of(cmd.output().unwrap()).ok();
    repo.git(&["checkout", "release-trains/edge.toml"]);
    let mut verify = xtask_cmd();
    verify.arg("verify").arg(&forged).arg("--key").arg(&release_pub).arg("--rekor-key").arg(&log.public);
    crate::support::Run::of(verify.output().unwrap()).ok();
    let vsa_forged = repo.path().join("target/vsa-forged.json");
    let r = against(&repo, forged.to_str().unwrap(), &release_pub, &rebuilder, &vsa_forged, &[]);
    r.refused(&["differs from its rebuild", "authority linux/amd64 image", "authority linux/arm64 image"]);
    let v = r.json();
    assert_eq!(v["reproducible"], false);
    let differing: Vec<&str> = v["verdict"]["compared"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["identical"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // Only authority's artifacts, and the chart and compose file that name its digest.
    assert!(differing.iter().all(|n| n.starts_with("authority ") || *n == "chart platform" || *n == "compose file"), "{differing:?}");
    assert!(differing.contains(&"chart platform") && differing.contains(&"compose file"), "{differing:?}");
    let amd64 = v["verdict"]["compared"].as_array().unwrap().iter().find(|c| c["name"] == "authority linux/amd64 image").unwrap();
    // The first difference inside the image: the directory the stowaway file sits in.
    assert!(amd64["difference"].as_str().unwrap_or_default().contains("file `opt/`, presence"), "{amd64}");
    let (st, _) = statement_of(&vsa_forged);
    assert_eq!(st["predicate"]["verificationResult"], "FAILED");
    // The same forgery published: named from the registry too.
    let ns2 = format!("{ns}-forged");
    let mut publish = xtask_cmd();
    publish.arg("publish").arg(&forged).args(["--registry", &ns2, "--json"]);
    crate::support::Run::of(publish.output().unwrap()).ok();
    let r = against(&repo, &format!("docker://{ns2}"), &release_pub, &rebuilder, &vsa_forged, &["--release", forged.to_str().unwrap()]);
    r.refused(&["authority linux/amd64 image"]);
    let amd64 =
        r.json()["verdict"]["compared"].as_array().unwrap().iter().find(|c| c["name"] == "authority linux/amd64 image").cloned().unwrap();
    assert!(amd64["difference"].as_str().unwrap_or_default().contains("file `opt/`, presence"), "{amd64}");

    // 4. `promote --to stable` with `[rebuild-verdict]`: refused without a verdict, with a
    //    failed one or one about another release; taken with the passing one.
    let stable = fs::read_to_string(repo.path().join("release-trains/stable.toml")).unwrap();
    fs::write(
        repo.path().join("release-trains/stable.toml"),
        format!("{stable}\n[rebuild-verdict]\nrequired-from = [\"target/keys/rebuilder.pub\"]\n"),
    )
    .unwrap();
    repo.commit_all("stable needs a rebuild verdict", EPOCH + 86_400);
    repo.xtask(&["promote", genuine.to_str().unwrap(), "--to", "edge", "--now", &day(0.0)]).ok();
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(8.0)]).refused(&["passing rebuild verdict", "--vsa FILE"]);
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(8.0), "--vsa", vsa_forged.to_str().unwrap()])
        .refused(&["FAILED", "not this release's"]);
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(8.0), "--vsa", vsa_kit.to_str().unwrap()]).ok();
}
