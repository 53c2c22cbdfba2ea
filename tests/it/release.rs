//! Releases: reproducible digests, `repro`, the release directory, `--json`, labels.

use std::fs;

use crate::support::{digests, Repo, EPOCH};

#[test]
fn two_releases_of_the_same_tree_give_identical_digests_and_repro_passes() {
    let repo = Repo::new();
    let a = repo.path().join("target/a");
    let b = repo.path().join("target/b");
    repo.xtask(&["release", "--channel", "edge", "--out", a.to_str().unwrap(), "-j", "1"]).ok();
    repo.xtask(&["release", "--channel", "edge", "--out", b.to_str().unwrap(), "-j", "3"]).ok();
    let (da, db) = (digests(&a.join("images")), digests(&b.join("images")));
    // 8 components: one index and two platform manifests each.
    assert_eq!(da.len(), 24, "{da:?}");
    assert_eq!(da, db);
    // The evidence too: SBOMs in both encodings and the drift report, byte for byte.
    let mut compared = 0;
    for sub in ["sboms", "scans"] {
        for e in walkdir(&a.join(sub)) {
            let rel = e.strip_prefix(&a).unwrap();
            assert_eq!(fs::read(&e).unwrap(), fs::read(b.join(rel)).unwrap(), "{} differs", rel.display());
            compared += 1;
        }
    }
    assert_eq!(compared, 48, "16 images x (JSON, protobuf, scan)");
    assert_eq!(fs::read(a.join("drift.json")).unwrap(), fs::read(b.join("drift.json")).unwrap());
    let r = repo.xtask(&["repro", "--json"]);
    r.ok();
    let v = r.json();
    assert_eq!(v["reproducible"], true);
    assert_eq!(v["report"]["images"], 48, "24 images and indexes, 24 signatures");
}

#[test]
fn release_writes_the_release_directory_with_labels_calendar_and_json_events() {
    let repo = Repo::new();
    let run = repo.xtask(&["release", "--channel", "edge", "--json"]);
    run.ok();
    // Every stdout line is a JSON event; the last one is the result.
    let lines: Vec<serde_json::Value> = run.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|e| e["event"] == "job-finished" && e["stage"] == "build"));
    let result = run.json();
    assert_eq!(result["release"]["version"], "2.4.1 (2027.06)");
    let dir = repo.releases().join("2.4.1-edge");
    assert_eq!(result["release"]["output"], dir.to_str().unwrap());
    for f in ["images/index.json", "images/oci-layout", "plan.json", "images.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // No staging directory is left beside it.
    let left: Vec<_> = fs::read_dir(repo.releases()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("2.4.1-edge")]);

    // The config of one image: the six labels of spec §6.2 and created = SOURCE_DATE_EPOCH.
    let images: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images.json")).unwrap()).unwrap();
    let signer = &images["components"]["concelier"]["images"][1];
    assert_eq!(signer["platform"], "linux/arm64");
    let config_digest = signer["config"].as_str().unwrap().trim_start_matches("sha256:");
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("images/blobs/sha256").join(config_digest)).unwrap()).unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], "2.4.0");
    assert_eq!(labels["org.opencontainers.image.created"], "2027-06-20T12:00:00Z");
    assert_eq!(labels["org.stellaops.release.calendar"], "2027.06");
    assert_eq!(labels["org.stellaops.release.channel"], "edge");
    assert_eq!(labels["org.opencontainers.image.revision"].as_str().unwrap(), repo.git(&["rev-parse", "HEAD"]));
    assert!(labels["org.stellaops.build.slsaProvenance"].as_str().unwrap().starts_with("oci://"));
    assert_eq!(config["created"], "2027-06-20T12:00:00Z");
    assert_eq!(config["architecture"], "arm64");
    let plan: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["source_date_epoch"], EPOCH);
}

#[test]
fn a_second_commit_changes_the_epoch_and_the_digests_but_not_the_bases() {
    let repo = Repo::new();
    let a = repo.path().join("target/a");
    repo.xtask(&["build", "--out", a.to_str().unwrap()]).ok();
    repo.commit_all("later", EPOCH + 86_400 * 40);
    let b = repo.path().join("target/b");
    let run = repo.xtask(&["build", "--out", b.to_str().unwrap(), "--json"]);
    run.ok();
    assert_eq!(run.json()["build"]["version"], "2.4.1 (2027.07)");
    let (da, db) = (digests(&a.join("images")), digests(&b.join("images")));
    assert_ne!(da["authority"], db["authority"], "the epoch is part of every image");
    let bases = |dir: &std::path::Path| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images.json")).unwrap()).unwrap();
        v["components"]["authority"]["images"].as_array().unwrap().iter().map(|i| i["base"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(bases(&a), bases(&b), "bases are pinned, whatever the release epoch");
}

#[test]
fn repro_names_the_file_that_is_not_reproducible() {
    let repo = Repo::new();
    // A component whose build command stamps the wall clock into a file.
    let text = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{text}\n[[component]]\nname = \"stamper\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"busybox\"\nsource = {{ path = \"components/standin\" }}\n\n[component.recipe]\nbuild = [\"sh\", \"-c\", \"mkdir -p $OUT/share && date +%s%N > $OUT/share/built-at\"]\nentrypoint = [\"/bin/sh\"]\n\n[[component.recipe.layer]]\nfrom = \"$OUT/share\"\nto = \"/usr/share/stamper\"\n"
        ),
    );
    repo.commit_all("add a stamping component", EPOCH);
    let run = repo.xtask(&["repro"]);
    run.refused(&["component `stamper` linux/amd64", "layer 1", "usr/share/stamper/built-at", "content"]);
    // The other components are reproducible and not listed.
    assert!(!run.stderr.contains("component `authority`"), "{}", run.stderr);
    let json = repo.xtask(&["repro", "--json"]);
    assert_eq!(json.code, 1);
    let v = json.json();
    assert_eq!(v["reproducible"], false);
    let m = &v["mismatches"][0];
    assert_eq!(m["what"]["file"], "usr/share/stamper/built-at");
    assert_eq!(m["what"]["field"], "content");
}

#[test]
fn repro_compares_every_file_of_the_release_and_names_the_json_path_of_an_sbom_that_differs() {
    let repo = Repo::new();
    let run = repo.xtask(&["repro", "--json"]);
    run.ok();
    let v = run.json();
    // Beyond the images: SBOMs, scans, provenance, envelopes, release.yaml and its signatures,
    // chart, compose file, the kit.
    let files = v["report"]["files_compared"].as_u64().unwrap();
    assert!(files > 100, "{files} files compared");
    assert!(v["report"]["masked"][0]["what"].as_str().unwrap().contains("run details"), "{}", v["report"]["masked"]);

    // A generator whose output order depends on its environment (the second build only).
    let mut cmd = crate::support::xtask_cmd();
    cmd.args(["repro", "--json", "--source"])
        .arg(repo.path())
        .env("STELLAOPS_TEST_FAULT", "reorder@evidence=sboms/web-ui/linux-amd64.cdx.json");
    let run = crate::support::Run::of(cmd.output().unwrap());
    assert_eq!(run.code, 1, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["reproducible"], false);
    let sbom = v["files"].as_array().unwrap().iter().find(|f| f["file"] == "sboms/web-ui/linux-amd64.cdx.json").expect("the SBOM is named");
    assert!(sbom["at"].as_str().unwrap().starts_with("JSON path `$.components[0]"), "{sbom}");
    // Only what depends on that SBOM differs: not another component's SBOM.
    assert!(v["files"].as_array().unwrap().iter().all(|f| !f["file"].as_str().unwrap().starts_with("sboms/authority/")));
    let text = repo.xtask(&["repro"]);
    assert_eq!(text.code, 0, "without the fault: {}", text.stderr);
}

#[test]
fn repro_names_the_header_field_when_a_symlink_target_leaks_from_the_build() {
    let repo = Repo::new();
    let text = repo.read("release-trains/components.toml");
    // The build writes a file whose mtime is "now" (layers set every mtime to the epoch, so
    // that one is reproducible) and a symlink whose target is the build's PID (not
    // reproducible, and named as such).
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{text}\n[[component]]\nname = \"linker\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"busybox\"\nsource = {{ path = \"components/standin\" }}\n\n[component.recipe]\nbuild = [\"sh\", \"-c\", \"mkdir -p $OUT/d && touch $OUT/d/fresh && ln -s /proc/$$ $OUT/d/pid\"]\nentrypoint = [\"/bin/sh\"]\n\n[[component.recipe.layer]]\nfrom = \"$OUT/d\"\nto = \"/opt/linker\"\n"
        ),
    );
    repo.commit_all("add a linking component", EPOCH);
    repo.xtask(&["repro"]).refused(&["component `linker`", "opt/linker/pid", "link target"]);
}

#[test]
fn a_fresh_clone_of_this_repository_cuts_an_edge_release_without_docker_or_registry() {
    // The README's first command, on what is committed here (a clone has no build output, no
    // cache of its own and no uncommitted change).
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    crate::support::run_ok(std::process::Command::new("git").args(["clone", "--quiet"]).arg(crate::support::workspace()).arg(&clone));
    let mut cmd = crate::support::xtask_cmd();
    // No Docker engine, no registry: whatever the test environment has, the release does not
    // reach for them.
    cmd.env_remove("DOCKER_HOST").env_remove("STELLAOPS_TEST_REGISTRY").env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    // The repository's gates (unit tests, release-mode benches: release-trains/gates.toml) would
    // compile the workspace twice from nothing in the clone; they are not what this tests.
    cmd.args(["release", "--channel", "edge", "--skip-gates", "--source"]).arg(&clone);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let releases: Vec<_> = fs::read_dir(clone.join("target/releases")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(releases.len(), 1, "{releases:?}");
    let refs = digests(&releases[0].join("images"));
    for name in ["authority", "signer", "attestor", "scanner-web", "scanner-worker", "concelier", "excititor", "web-ui"] {
        assert!(refs.contains_key(name) && refs.contains_key(&format!("{name}-linux-arm64")), "{name} missing: {refs:?}");
    }
}

/// Issue 14: the provenance names the repository by its canonical URL, never a path of the
/// machine: two clones of one commit at different paths give provenance statements that
/// differ only in `runDetails`. Without `[release] source`, the `origin` remote's URL is used
/// with its credentials stripped; an `origin` that is a local path is refused in plan.
#[test]
fn two_clones_at_different_paths_give_provenance_that_differs_only_in_run_details() {
    let repo = Repo::new();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("somewhere/else/entirely/b");
    let release = |clone: &std::path::Path| {
        crate::support::run_ok(std::process::Command::new("git").args(["clone", "--quiet"]).arg(repo.path()).arg(clone));
        let mut cmd = crate::support::xtask_cmd();
        cmd.args(["release", "--channel", "edge", "--skip-gates", "--source"]).arg(clone);
        crate::support::Run::of(cmd.output().unwrap()).ok();
        clone.join("target/releases/2.4.1-edge")
    };
    let (ra, rb) = (release(&a), release(&b));
    let commit = repo.git(&["rev-parse", "HEAD"]);
    let statements = walkdir(&ra.join("provenance"));
    assert_eq!(statements.len(), 16);
    let mut run_details_differ = 0;
    for sa in &statements {
        let rel = sa.strip_prefix(&ra).unwrap();
        let text = fs::read_to_string(sa).unwrap();
        // Neither clone's path (nor the repository they were cloned from) is in it.
        for path in [&a, &b, &repo.path().to_owned()] {
            assert!(!text.contains(path.to_str().unwrap()), "{} names `{}`", rel.display(), path.display());
        }
        let mut va: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut vb: serde_json::Value = serde_json::from_slice(&fs::read(rb.join(rel)).unwrap()).unwrap();
        let source = &va["predicate"]["buildDefinition"]["resolvedDependencies"][0];
        assert_eq!(source["uri"], format!("git+https://git.stella-ops.org/stella-ops/release.git@{commit}"), "{}", rel.display());
        assert_eq!(source["digest"]["gitCommit"], commit.as_str());
        let (da, db) =
            (va["predicate"].as_object_mut().unwrap().remove("runDetails"), vb["predicate"].as_object_mut().unwrap().remove("runDetails"));
        assert!(da.is_some() && db.is_some());
        run_details_differ += usize::from(da != db);
        assert_eq!(va, vb, "{}: the provenance of two clones differs outside runDetails", rel.display());
    }
    // (The invocation ids differ: what was compared is not two copies of one file.)
    assert_eq!(run_details_differ, 16);

    // Without `[release] source`: the clone's `origin` is a local path, refused with the hint.
    repo.edit("release-trains/components.toml", "source = \"https://git.stella-ops.org/stella-ops/release.git\"\n", "");
    repo.commit_all("no configured source", EPOCH);
    let c = tmp.path().join("c");
    crate::support::run_ok(std::process::Command::new("git").args(["clone", "--quiet"]).arg(repo.path()).arg(&c));
    let plan = |args: &[&str]| {
        let mut cmd = crate::support::xtask_cmd();
        cmd.arg("plan").args(args).arg("--source").arg(&c);
        crate::support::Run::of(cmd.output().unwrap())
    };
    plan(&[]).refused(&["no canonical URL", "the `origin` remote", "is a local path", "hint:", "[release] source"]);
    // No remote at all: refused too, naming both places the URL can come from.
    crate::support::run_ok(std::process::Command::new("git").args(["remote", "remove", "origin"]).current_dir(&c));
    plan(&[]).refused(&["sets no `[release] source`", "no `origin` remote"]);
    // An `origin` with credentials: recorded without them, and never printed.
    crate::support::run_ok(
        std::process::Command::new("git")
            .args(["remote", "add", "origin", "https://ci-bot:s3cr3t-t0ken@git.example.org/team/release.git"])
            .current_dir(&c),
    );
    let run = plan(&["--json"]);
    run.ok();
    assert!(!run.stdout.contains("s3cr3t") && !run.stderr.contains("s3cr3t"), "{}{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["source"]["url"], serde_json::json!({"url": "https://git.example.org/team/release.git", "from": "origin"}));
    // A configured URL with credentials is refused by the configuration's check.
    let bundle = fs::read_to_string(c.join("release-trains/components.toml")).unwrap();
    fs::write(
        c.join("release-trains/components.toml"),
        bundle.replacen("registry = ", "source = \"https://me:pw@git.example.org/x.git\"\nregistry = ", 1),
    )
    .unwrap();
    plan(&[]).refused(&["release-trains/components.toml", "`release.source`", "carries credentials"]);
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
