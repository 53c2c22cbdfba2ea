//! Releasing only what changed: per-component image epochs (`[release] image-epoch =
//! "component"`) and the build cache (`target/stellaops-cache/builds/`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{digests, Repo, EPOCH};

/// Component name -> its stamped epoch, from a release's `images.json`.
fn epochs(release: &Path) -> BTreeMap<String, i64> {
    let images: serde_json::Value = serde_json::from_slice(&std::fs::read(release.join("images.json")).unwrap()).unwrap();
    images["components"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, c)| (name.clone(), c["epoch"]["source-date-epoch"].as_i64().unwrap_or_else(|| panic!("{name}: no epoch in {c}"))))
        .collect()
}

/// The ref names (`<component>-<os>-<arch>`, and the component's index) whose digests differ.
fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter().filter(|(k, v)| b[*k] != **v).map(|(k, _)| k.clone()).collect()
}

#[test]
fn a_commit_that_touches_one_component_changes_only_its_images() {
    let repo = Repo::new();
    let out = repo.path().join("target/out");
    let (a, b) = (out.join("a"), out.join("b"));
    repo.xtask(&["build", "--out", a.to_str().unwrap()]).ok();
    // An hour later: one recipe field of `authority`, and a file no component reads.
    repo.edit("release-trains/components.toml", "env = { PORT = \"8440\" }", "env = { PORT = \"8441\" }");
    repo.write("NOTES.md", "unrelated\n");
    repo.commit_all("authority listens elsewhere", EPOCH + 3600);
    repo.xtask(&["build", "--out", b.to_str().unwrap()]).ok();

    let (da, db) = (digests(&a.join("images")), digests(&b.join("images")));
    assert_eq!(changed(&da, &db), ["authority", "authority-linux-amd64", "authority-linux-arm64"], "{da:#?}\n{db:#?}");
    let (ea, eb) = (epochs(&a), epochs(&b));
    assert!(ea.values().all(|e| *e == EPOCH), "{ea:?}");
    for (name, e) in &eb {
        assert_eq!(*e, if name == "authority" { EPOCH + 3600 } else { EPOCH }, "{name}: {eb:?}");
    }
    // release.yaml's date stays the released commit's.
    let yaml = std::fs::read_to_string(b.join("release.yaml")).unwrap();
    assert!(yaml.contains(&schema::model::rfc3339(EPOCH + 3600)), "{yaml}");
}

#[test]
fn a_shallow_clone_is_refused_when_images_are_dated_per_component() {
    let repo = Repo::new();
    repo.write("NOTES.md", "second\n");
    repo.commit_all("second", EPOCH + 60);
    let clone = tempfile::tempdir().unwrap();
    let dest = clone.path().join("shallow");
    crate::support::run_ok(
        std::process::Command::new("git").args(["clone", "-q", "--depth", "1"]).arg(format!("file://{}", repo.path().display())).arg(&dest),
    );
    let run = crate::support::xtask_cmd().args(["plan", "--source"]).arg(&dest).output().unwrap();
    let run = crate::support::Run::of(run);
    run.refused(&["is a shallow clone", "image-epoch = \"component\"", "hint:", "fetch-depth: 0"]);
    // The whole history plans.
    repo.xtask(&["plan"]).ok();
}
