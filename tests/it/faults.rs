//! Failures are loud: a lost evidence file stops the release naming it (never an empty digest
//! in a signed release.yaml), and a panic is reported as an internal error with exit 2. The
//! faults are injected by the release's hidden test hook (`STELLAOPS_TEST_FAULT`,
//! `pipeline::fault`), at the boundary after a stage.

use crate::support::{xtask_cmd, Repo, Run};

fn release_with_fault(repo: &Repo, fault: &str) -> Run {
    let mut cmd = xtask_cmd();
    cmd.args(["release", "--channel", "edge", "--skip-gates", "--source"]).arg(repo.path()).env("STELLAOPS_TEST_FAULT", fault);
    Run::of(cmd.output().expect("run xtask"))
}

#[track_caller]
pub(crate) fn assert_nothing_released(repo: &Repo) {
    let left: Vec<_> = match std::fs::read_dir(repo.releases()) {
        Ok(dir) => dir.map(|e| e.unwrap().file_name()).filter(|n| !n.to_string_lossy().ends_with(".json")).collect(),
        Err(_) => Vec::new(),
    };
    assert!(left.is_empty(), "a failed release left {left:?} in {}", repo.releases().display());
}

#[test]
fn an_unreadable_sbom_stops_the_release_naming_it() {
    let repo = Repo::new();
    let run = release_with_fault(&repo, "unreadable@evidence=sboms/web-ui/linux-amd64.cdx.json");
    assert!(run.code == 1 || run.code == 3, "expected exit 1 or 3, got {}\nstdout:\n{}\nstderr:\n{}", run.code, run.stdout, run.stderr);
    assert!(run.stderr.contains("sboms/web-ui/linux-amd64.cdx.json"), "the error does not name the file:\n{}", run.stderr);
    assert!(!run.stderr.contains("internal error"), "{}", run.stderr);
    assert_nothing_released(&repo);
}

#[test]
fn an_unreadable_provenance_stops_the_release_naming_it() {
    let repo = Repo::new();
    let run = release_with_fault(&repo, "unreadable@evidence=provenance/signer/linux-arm64.intoto.json");
    assert!(run.code == 1 || run.code == 3, "expected exit 1 or 3, got {}\nstderr:\n{}", run.code, run.stderr);
    assert!(run.stderr.contains("provenance/signer/linux-arm64.intoto.json"), "the error does not name the file:\n{}", run.stderr);
    assert_nothing_released(&repo);
}

#[test]
fn a_panic_exits_2_saying_internal_error() {
    let repo = Repo::new();
    let run = release_with_fault(&repo, "panic@plan");
    assert_eq!(run.code, 2, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("internal error"), "{}", run.stderr);
    assert!(run.stderr.contains("this is a bug"), "{}", run.stderr);
    assert_nothing_released(&repo);
}
