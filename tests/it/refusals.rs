//! Bad input: each refusal names the file and key, exits 1, and writes nothing to the release
//! directory.

use crate::support::{xtask_cmd, Repo, Run, EPOCH};

/// Runs `release --channel edge` and asserts a refusal naming `needles`, with no release
/// directory (nor staging directory) left behind.
#[track_caller]
fn refused(repo: &Repo, needles: &[&str]) {
    repo.xtask(&["release", "--channel", "edge"]).refused(needles);
    assert_nothing_released(repo);
}

/// No release directory, and no staging directory left beside where it would be.
#[track_caller]
fn assert_nothing_released(repo: &Repo) {
    let left: Vec<_> = match std::fs::read_dir(repo.releases()) {
        Ok(dir) => dir.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(left.is_empty(), "a refused release left {left:?} in {}", repo.releases().display());
}

#[test]
fn a_tag_only_base_is_refused() {
    let repo = Repo::new();
    repo.write(
        "base-images.lock",
        &format!(
            "{}\n[[base]]\nname = \"debian\"\nsource = \"registry\"\n\n[base.platform.\"linux/amd64\"]\ndigest = \"sha256:{}\"\nreference = \"127.0.0.1:5000/library/debian:12\"\n",
            repo.read("base-images.lock"),
            "a".repeat(64)
        ),
    );
    repo.commit_all("add a tag-only base", EPOCH);
    refused(&repo, &["`base-images.lock`", "`127.0.0.1:5000/library/debian:12` is not pinned by digest", "line"]);
}

#[test]
fn a_deb_whose_sha256_differs_from_the_lock_is_refused() {
    let repo = Repo::new();
    // An air-gapped mirror directory holding a tampered package under the pinned file name.
    let debs = repo.path().join("target/debs");
    std::fs::create_dir_all(&debs).unwrap();
    let lock = repo.read("base-images.lock");
    for file in lock.lines().filter(|l| l.starts_with("filename")) {
        let name = file.rsplit('/').next().unwrap().trim_end_matches('"');
        std::fs::write(debs.join(name), b"!<arch>\nnot the package that was locked\n").unwrap();
    }
    let run = repo.xtask(&[
        "release",
        "--channel",
        "edge",
        "--cache",
        repo.path().join("target/empty-cache").to_str().unwrap(),
        "--deb-dir",
        debs.to_str().unwrap(),
    ]);
    run.refused(&["busybox-static", "`base-images.lock` pins", "sha256"]);
    assert_nothing_released(&repo);
}

#[test]
fn a_dirty_tree_is_refused() {
    let repo = Repo::new();
    repo.write("components/standin/bin/new-tool", "#!/bin/sh\n");
    refused(&repo, &["uncommitted changes", "components/standin/bin/new-tool (new)"]);
    // plan still works (no side effects) and warns.
    let plan = repo.xtask(&["plan"]);
    plan.ok();
    assert!(plan.stdout.contains("uncommitted"), "{}", plan.stdout);
}

#[test]
fn a_lock_file_changed_since_the_tag_is_refused() {
    let repo = Repo::new();
    repo.write("components/standin/package-lock.json", "{\"lockfileVersion\": 3, \"packages\": {}}\n");
    repo.commit_all("add a lock file", EPOCH);
    repo.git(&["tag", "v2.4.1"]);
    repo.write("components/standin/package-lock.json", "{\"lockfileVersion\": 3, \"packages\": {\"x\": {}}}\n");
    repo.commit_all("bump a dependency after the tag", EPOCH + 60);
    refused(&repo, &["tag `v2.4.1`", "components/standin/package-lock.json (changed since the tag)"]);
}

#[test]
fn stable_needs_the_release_tag_on_the_commit_and_a_named_key() {
    let repo = Repo::new();
    repo.xtask(&["release", "--channel", "stable"]).refused(&["channel `stable`", "tag `v2.4.1`"]);
    assert_nothing_released(&repo);
    repo.git(&["tag", "v2.4.1"]);
    // Regression: a stable release without `--key` was signed with a throwaway development key.
    repo.xtask(&["release", "--channel", "stable"]).refused(&[
        "plan stage",
        "a `stable` release must be signed with a named release key",
        "hint: make one once with `cargo xtask keys generate",
    ]);
    assert_nothing_released(&repo);
    assert!(!repo.path().join("target/keys/dev.key").exists(), "a refused stable release made a development key");
    // Nor with the development key named by `--key` (anyone's checkout makes one).
    repo.xtask(&["release", "--channel", "edge", "--out", repo.path().join("target/edge-first").to_str().unwrap(), "--skip-gates"]).ok();
    assert!(repo.path().join("target/keys/dev.key").exists());
    let dev = repo.path().join("target/keys/dev.key");
    repo.xtask(&["release", "--channel", "stable", "--key", dev.to_str().unwrap()]).refused(&[
        "plan stage",
        "a `stable` release is never signed with the development key",
        "hint: make one once",
    ]);
    assert_nothing_released(&repo);
    let (key, _) = crate::trust::keygen(&repo, "release", "ecdsa-p256");
    let stable = |extra: &[&str]| {
        let mut cmd = xtask_cmd();
        cmd.args(["release", "--channel", "stable", "--key"])
            .arg(&key)
            .args(extra)
            .arg("--source")
            .arg(repo.path())
            .env("STELLAOPS_KEY_PASSPHRASE", crate::trust::PASS);
        Run::of(cmd.output().unwrap())
    };
    // Issue 16: and a transparency log (`[transparency-log] required = true` of stable.toml).
    stable(&[]).refused(&["plan stage", "a `stable` release needs a transparency log", "hint: set `url` under `[transparency-log]`"]);
    assert_nothing_released(&repo);
    // A log that is down does not stop it (its entries wait for `attest resubmit`).
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    stable(&["--rekor-url", &format!("http://{down}")]).ok();
    assert!(repo.releases().join("2.4.1-stable/images/index.json").is_file());
}

#[test]
fn a_skew_violation_is_refused() {
    let repo = Repo::new();
    repo.edit("release-trains/components.toml", "name = \"signer\"\nversion = \"2.4.1\"", "name = \"signer\"\nversion = \"2.5.0\"");
    repo.commit_all("signer ahead", EPOCH);
    refused(&repo, &["skew rule `trust-triangle`", "`signer` is `2.5.0`", "same minor"]);
}

#[test]
fn an_unknown_key_in_any_config_file_is_refused() {
    for (file, anchor) in [
        ("release-trains/edge.toml", "cadence = \"weekly\""),
        ("release-trains/components.toml", "registry = \"registry.stella-ops.org/stellaops\""),
        ("base-images.lock", "suite = \"bookworm\""),
    ] {
        let repo = Repo::new();
        repo.edit(file, anchor, &format!("{anchor}\nfrobnicate = true"));
        repo.commit_all("typo", EPOCH);
        refused(&repo, &[&format!("`{file}`"), "unknown field `frobnicate`"]);
    }
}

#[test]
fn an_unknown_layer_gzip_format_is_refused_naming_the_known_ones() {
    let repo = Repo::new();
    repo.edit("release-trains/components.toml", "layer-gzip = 3", "layer-gzip = 4");
    repo.commit_all("a format that does not exist", EPOCH);
    refused(&repo, &["`release-trains/components.toml`", "layer-gzip `4` is not a known format", "use 1", "2 (", "or 3", "(line "]);
}

#[test]
fn a_version_without_patch_or_with_a_short_month_is_refused() {
    let repo = Repo::new();
    repo.edit("release-trains/components.toml", "version = \"2.4.1\"\nregistry", "version = \"2.4 (2027.6)\"\nregistry");
    repo.commit_all("bad version", EPOCH);
    refused(&repo, &["`release-trains/components.toml`", "`release.version`", "`2.4 (2027.6)` is not a release version"]);
}

#[test]
fn a_calendar_tag_that_disagrees_with_the_commit_time_is_refused() {
    let repo = Repo::new();
    repo.edit("release-trains/components.toml", "version = \"2.4.1\"\nregistry", "version = \"2.4.1 (2027.05)\"\nregistry");
    repo.commit_all("wrong month", EPOCH);
    refused(&repo, &["`release.version`", "calendar `2027.05`", "`2027.06`"]);
}

#[test]
fn a_component_named_like_the_trust_repository_is_refused() {
    let repo = Repo::new();
    repo.edit("release-trains/components.toml", "name = \"authority\"", "name = \"trust\"");
    repo.commit_all("a reserved name", EPOCH);
    refused(&repo, &["`release-trains/components.toml`", "`components[0].name`", "`trust` is reserved", "trust repository"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let repo = Repo::new();
    repo.edit("release-trains/components.toml", "base = \"busybox\"", "base = \"nonexistent\"");
    repo.edit("release-trains/components.toml", "to = \"/usr/bin\"", "to = \"usr/bin\"");
    repo.commit_all("two mistakes", EPOCH);
    refused(&repo, &["2 problems", "`components[0].base`", "`nonexistent` is not a base", "`components[0].recipe.layer[0].to`"]);
}
