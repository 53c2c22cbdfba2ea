//! arm64 without an arm64 machine: one amd64 Docker engine builds a Dockerfile component for
//! both platforms, its BuildKit running the arm64 RUN steps under QEMU user-mode emulation
//! (Debian's `qemu-user-static` and `binfmt-support`, registered by tests/run.sh), and the
//! arm64 image runs under emulation. Services from tests/run.sh: `DOCKER_HOST`,
//! `STELLAOPS_TEST_REGISTRY`.

use std::fs;
use std::process::Command;

use crate::support::{digests, run_ok, tool, xtask_cmd, Repo, Run, EPOCH};

/// A RUN step that records the machine it ran on: under emulation, `aarch64`.
const DOCKERFILE: &str = r#"ARG STELLAOPS_BASE
FROM ${STELLAOPS_BASE}
RUN /bin/busybox mkdir -p /var/lib/armdemo \
 && /bin/busybox sh -c '/bin/busybox uname -m > /var/lib/armdemo/built-on'
"#;

/// Whether the kernel runs aarch64 binaries through QEMU (what tests/run.sh sets up).
fn emulation_registered() -> bool {
    let ok = fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_ok_and(|s| s.starts_with("enabled"));
    if !ok {
        let msg = "qemu-aarch64 is not registered with binfmt_misc: run the tests with tests/run.sh, which sets it up";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED (not a pass): {msg}");
    }
    ok
}

fn repo_with_armdemo() -> Repo {
    let repo = Repo::new();
    repo.write("components/armdemo/Dockerfile", DOCKERFILE);
    let bundle = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{bundle}\n[[component]]\nname = \"armdemo\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\nbase = \"busybox\"\nsource = {{ path = \"components/armdemo\" }}\n\n[component.recipe]\ndockerfile = \"Dockerfile\"\nentrypoint = [\"/bin/busybox\"]\ncmd = [\"cat\", \"/var/lib/armdemo/built-on\"]\n"
        ),
    );
    repo.commit_all("armdemo: a Dockerfile component for both platforms", EPOCH);
    repo
}

#[test]
fn both_platforms_build_on_one_amd64_engine_and_the_arm64_image_runs_under_emulation() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let (Some(docker), Some(skopeo)) = (tool("docker"), tool("skopeo")) else {
        return;
    };
    if !emulation_registered() {
        return;
    }
    let repo = repo_with_armdemo();
    let mirror = format!("{registry}/stellaops-it-bases");
    let mut cmd = xtask_cmd();
    cmd.args(["release", "--channel", "edge", "--backend", "buildkit", "--builder", &docker_host, "--base-mirror", &mirror])
        .arg("--source")
        .arg(repo.path());
    let run = Run::of(cmd.output().unwrap());
    run.ok();
    let dir = repo.releases().join("2.4.1-edge");
    let built = digests(&dir.join("images"));
    for name in ["armdemo", "armdemo-linux-amd64", "armdemo-linux-arm64"] {
        assert!(built.contains_key(name), "{name} missing: {built:?}");
    }
    // The arm64 image is an arm64 image: its config says so.
    let images: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images.json")).unwrap()).unwrap();
    let arm = images["components"]["armdemo"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["platform"] == "linux/arm64")
        .expect("an arm64 image")
        .clone();
    let config = dir.join("images/blobs/sha256").join(arm["config"].as_str().unwrap().trim_start_matches("sha256:"));
    let config: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
    assert_eq!(config["architecture"], "arm64");

    // Pushed by digest and run with `--platform linux/arm64` on this amd64 engine: the RUN step
    // ran on aarch64 (emulated), and so does the container.
    crate::support::push(
        &skopeo,
        &format!("oci:{}:armdemo", dir.join("images").display()),
        &format!("{registry}/stellaops-it/armdemo:edge"),
    );
    let by_digest = format!("{registry}/stellaops-it/armdemo@{}", built["armdemo-linux-arm64"]);
    run_ok(Command::new(&docker).args(["pull", "--quiet", "--platform", "linux/arm64", &by_digest]));
    let built_on = run_ok(Command::new(&docker).args(["run", "--rm", "--network", "none", "--platform", "linux/arm64", &by_digest]));
    assert_eq!(built_on.trim(), "aarch64", "the arm64 RUN step did not run on aarch64");
    let runs_on = run_ok(Command::new(&docker).args([
        "run",
        "--rm",
        "--network",
        "none",
        "--platform",
        "linux/arm64",
        "--entrypoint",
        "/bin/busybox",
        &by_digest,
        "uname",
        "-m",
    ]));
    assert_eq!(runs_on.trim(), "aarch64");
    // And the amd64 image's RUN step ran natively.
    let amd = format!("{registry}/stellaops-it/armdemo@{}", built["armdemo-linux-amd64"]);
    run_ok(Command::new(&docker).args(["pull", "--quiet", "--platform", "linux/amd64", &amd]));
    let out = run_ok(Command::new(&docker).args(["run", "--rm", "--network", "none", "--platform", "linux/amd64", &amd]));
    assert_eq!(out.trim(), "x86_64");
}
