//! Multi-stage Dockerfiles with several pinned bases (`recipe.build-bases`): a build stage on
//! another base of the lock, the last stage on the component's own, both pushed to the
//! mirror by digest; both named by digest in the provenance and images.json, the build base a
//! build input of the SBOM. Needs dockerd and a registry (tests/run.sh: `DOCKER_HOST`,
//! `STELLAOPS_TEST_REGISTRY`); the refusal needs neither.

use std::fs;
use std::process::Command;

use crate::support::{digests, last_layer, run_ok, tool, Repo, EPOCH};

/// Stage 1 on the build base writes a file with a RUN step; stage 2, on the component's base,
/// copies it.
const DOCKERFILE: &str = r#"ARG STELLAOPS_BASE
ARG STELLAOPS_BASE_BUILDER
FROM ${STELLAOPS_BASE_BUILDER} AS build
RUN /bin/busybox mkdir -p /out && /bin/busybox sh -c 'echo "made in the build stage" > /out/built'
FROM ${STELLAOPS_BASE}
COPY --from=build /out/built /usr/share/multistage/built
"#;

/// A second base, `builder`: the busybox packages with another epoch, so another digest.
/// Pinned for amd64 only (the component's one platform); `PIN` is replaced by its digest.
fn builder_base(lock: &str, pin: &str) -> String {
    let amd64 = lock.split("[[base.platform.\"linux/amd64\".packages]]").nth(1).unwrap();
    let package = amd64.split("[base.platform.\"linux/arm64\"]").next().unwrap().trim();
    format!(
        "{lock}\n[[base]]\nname = \"builder\"\nsource = \"debian\"\nsuite = \"bookworm\"\nepoch = 1767225601\ndirectories = [\"tmp\"]\n\n\
         [base.symlinks]\n\"bin/sh\" = \"busybox\"\n\n[base.platform.\"linux/amd64\"]\ndigest = \"{pin}\"\n\n\
         [[base.platform.\"linux/amd64\".packages]]\n{package}\n"
    )
}

/// A repository with the `builder` base pinned (its digest read from the refusal a wrong pin
/// gets: what the pipeline assembles) and a component `multistage` built from `DOCKERFILE`.
fn repo() -> Repo {
    let repo = Repo::new();
    let lock = repo.read("base-images.lock");
    let wrong = format!("sha256:{}", "0".repeat(64));
    repo.write("base-images.lock", &builder_base(&lock, &wrong));
    repo.write("components/multistage/Dockerfile", DOCKERFILE);
    let bundle = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{bundle}\n[[component]]\nname = \"multistage\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"busybox\"\nsource = {{ path = \"components/multistage\" }}\n\n[component.recipe]\ndockerfile = \"Dockerfile\"\nbuild-bases = [\"builder\"]\nentrypoint = [\"/bin/busybox\"]\n"
        ),
    );
    repo.commit_all("multistage: a Dockerfile with a build base", EPOCH);
    let run = repo.xtask(&["release", "--channel", "edge", "--backend", "buildkit", "--builder", "unix:///nonexistent/docker.sock"]);
    let needle = "base `builder` (linux/amd64) assembles to `";
    let at = run.stderr.find(needle).unwrap_or_else(|| panic!("no digest mismatch for `builder`:\n{}", run.stderr)) + needle.len();
    let pin = &run.stderr[at..at + 71];
    assert!(pin.starts_with("sha256:"), "{pin}");
    repo.write("base-images.lock", &builder_base(&lock, pin));
    repo.commit_all("pin the builder base", EPOCH);
    repo
}

fn release(repo: &Repo, builder: &str, mirror: &str) -> crate::support::Run {
    repo.xtask(&["release", "--channel", "edge", "--backend", "buildkit", "--builder", builder, "--base-mirror", mirror])
}

/// The digest `base-images.lock` of `repo` pins for `base` on linux/amd64 (the first platform
/// of each base in the lock).
fn pinned(repo: &Repo, base: &str) -> String {
    let lock = repo.read("base-images.lock");
    let from = lock.find(&format!("name = \"{base}\"")).unwrap();
    let rest = &lock[from..];
    let at = rest.find("[base.platform.\"linux/amd64\"]\ndigest = \"").unwrap() + "[base.platform.\"linux/amd64\"]\ndigest = \"".len();
    rest[at..at + 71].to_owned()
}

#[test]
fn a_build_stage_on_a_listed_base_feeds_the_last_stage_and_both_bases_are_recorded() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    if tool("tar").is_none() {
        return;
    }
    let repo = repo();
    let (busybox, builder) = (pinned(&repo, "busybox"), pinned(&repo, "builder"));
    assert_ne!(busybox, builder);
    let mirror = format!("{registry}/stellaops-it-multistage");
    let run = release(&repo, &docker_host, &mirror);
    run.ok();
    let dir = repo.releases().join("2.4.1-edge");
    let first = digests(&dir.join("images"));

    // The file the build stage made is in the image (the component layer, over busybox).
    let layer = dir.join("images/blobs/sha256").join(last_layer(&dir, "multistage"));
    let out = run_ok(Command::new("tar").arg("-xzOf").arg(&layer).arg("usr/share/multistage/built"));
    assert_eq!(out, "made in the build stage\n");
    // Nothing of the build base but that file: its layers are not the image's.
    let images: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images.json")).unwrap()).unwrap();
    let img = &images["components"]["multistage"]["images"][0];
    assert_eq!(img["base"], busybox.as_str());
    let bk = &img["buildkit"];
    assert_eq!(bk["build_args"]["STELLAOPS_BASE"], format!("{mirror}/busybox@{busybox}").as_str());
    assert_eq!(bk["build_args"]["STELLAOPS_BASE_BUILDER"], format!("{mirror}/builder@{builder}").as_str());
    let bases: Vec<(&str, &str, &str)> = bk["bases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap(), b["digest"].as_str().unwrap(), b["role"].as_str().unwrap()))
        .collect();
    assert_eq!(bases, [("busybox", busybox.as_str(), "component"), ("builder", builder.as_str(), "build")]);
    // Daemonless components carry no BuildKit record.
    assert!(images["components"]["authority"]["images"][0].get("buildkit").is_none());

    // The provenance names both bases by digest.
    let prov: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("provenance/multistage/linux-amd64.intoto.json")).unwrap()).unwrap();
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    let by_name = |n: &str| deps.iter().find(|d| d["name"] == n).unwrap_or_else(|| panic!("no `{n}` in {deps:#?}"));
    assert_eq!(by_name("base image")["digest"]["sha256"], busybox.trim_start_matches("sha256:"));
    assert_eq!(by_name("build base image")["digest"]["sha256"], builder.trim_start_matches("sha256:"));
    assert_eq!(by_name("build base image")["uri"], format!("oci://stellaops-base/builder@{builder}").as_str());

    // The SBOM: the build base is a build input (not compared by the drift gate, which passed).
    let sbom: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("sboms/multistage/linux-amd64.cdx.json")).unwrap()).unwrap();
    let c = sbom["components"].as_array().unwrap().iter().find(|c| c["name"] == "builder").expect("builder in the SBOM");
    assert_eq!(c["type"], "container");
    let evidence = c["properties"].as_array().unwrap().iter().find(|p| p["name"] == "stellaops:evidence").unwrap();
    assert_eq!(evidence["value"], "build-input");
    assert_eq!(c["hashes"][0]["content"], builder.trim_start_matches("sha256:"));

    // Built again twice under varied environments: the same digests.
    let mut cmd = crate::support::xtask_cmd();
    cmd.args(["repro", "--json", "--backend", "buildkit", "--builder", &docker_host, "--base-mirror", &mirror])
        .arg("--source")
        .arg(repo.path());
    let r = crate::support::Run::of(cmd.output().unwrap());
    r.ok();
    let report = r.json();
    assert_eq!(report["reproducible"], true, "{}", r.stdout);
    for name in ["multistage", "multistage-linux-amd64"] {
        assert_eq!(report["report"]["digests"][name].as_str(), Some(first[name].as_str()), "{name}: {}", r.stdout);
    }
}

#[test]
fn a_base_variable_the_recipe_does_not_list_is_refused_naming_the_line_and_the_recipe_key() {
    let repo = repo();
    let text = DOCKERFILE.replace(
        "ARG STELLAOPS_BASE_BUILDER\n",
        "ARG STELLAOPS_BASE_BUILDER\nARG STELLAOPS_BASE_OTHER\nFROM ${STELLAOPS_BASE_OTHER} AS other\n",
    );
    repo.write("components/multistage/Dockerfile", &text);
    repo.commit_all("an unlisted base", EPOCH);
    // Refused before any endpoint is contacted.
    let run = release(&repo, "unix:///nonexistent/docker.sock", "127.0.0.1:1/none");
    run.refused(&[
        "`components/multistage/Dockerfile` line 4",
        "`STELLAOPS_BASE_OTHER` names no base of the component's `recipe.build-bases`",
    ]);
    assert!(!repo.releases().join("2.4.1-edge").exists());
}

#[test]
fn build_bases_must_be_bases_of_the_lock_pinned_for_every_platform_of_the_component() {
    let repo = Repo::new();
    let lock = repo.read("base-images.lock");
    repo.write("base-images.lock", &builder_base(&lock, &format!("sha256:{}", "0".repeat(64))));
    repo.write("components/multistage/Dockerfile", DOCKERFILE);
    let bundle = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{bundle}\n[[component]]\nname = \"multistage\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\nbase = \"busybox\"\nsource = {{ path = \"components/multistage\" }}\n\n[component.recipe]\ndockerfile = \"Dockerfile\"\nbuild-bases = [\"builder\", \"nope\", \"busybox\"]\n"
        ),
    );
    repo.commit_all("build bases that cannot be used", EPOCH);
    let run = repo.xtask(&["release", "--channel", "edge", "--backend", "buildkit", "--builder", "unix:///nonexistent/docker.sock"]);
    run.refused(&[
        "`release-trains/components.toml`: `components[8].recipe.build-bases[0]`: build base `builder` is not pinned for `linux/arm64` in `base-images.lock`, a platform of `multistage`",
        "`components[8].recipe.build-bases[1]`: `nope` is not a base of `base-images.lock`",
        "`components[8].recipe.build-bases[2]`: `busybox` is the component's own base",
    ]);
}
