//! The BuildKit backend against the real thing: Debian's dockerd and its embedded BuildKit,
//! and a loopback registry as the mirror BuildKit pulls the pinned bases from (both started by
//! tests/run.sh: `DOCKER_HOST`, `STELLAOPS_TEST_REGISTRY`). The refusals need neither: they
//! happen before any endpoint is contacted.

use std::fs;
use std::process::Command;

use crate::support::{digests, run_ok, tool, Repo, EPOCH};

/// `DOCKER_HOST` and the registry, or `None` with a loud message (a failure under `CI`).
pub(crate) const DOCKERFILE: &str = r#"# The BuildKit demo: COPY and RUN on the pinned base.
ARG STELLAOPS_BASE
FROM ${STELLAOPS_BASE}
ARG STELLAOPS_VERSION
ARG GREETING
ARG BKDEMO_TOKEN
COPY bin/ /usr/bin/
RUN /bin/busybox mkdir -p /var/lib/bkdemo/cache \
 && /bin/busybox sh -c 'echo "$GREETING from $STELLAOPS_VERSION" > /var/lib/bkdemo/greeting' \
 && /bin/busybox chmod 0750 /var/lib/bkdemo \
 && /bin/busybox ln -s greeting /var/lib/bkdemo/link \
 && /bin/busybox test -n "$BKDEMO_TOKEN"
"#;

const SECRET: &str = "s3cr3t-value-never-recorded";

/// Every regular file under `dir`.
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir_files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// A repository with one more component, `bkdemo` (amd64), built from `dockerfile`.
pub(crate) fn repo_with(dockerfile: &str) -> Repo {
    repo_with_recipe(
        dockerfile,
        "entrypoint = [\"/usr/bin/stellaops-standin\"]\ncmd = [\"serve\"]\nenv = { PORT = \"8450\" }\nbuild-args = { GREETING = \"hello\" }\nsecret-build-args = [\"BKDEMO_TOKEN\"]\n",
    )
}

/// A repository with one more component, `bkdemo` (amd64), built from `dockerfile`, whose
/// recipe is `dockerfile = "Dockerfile"` and the keys in `recipe`.
fn repo_with_recipe(dockerfile: &str, recipe: &str) -> Repo {
    let repo = Repo::new();
    repo.write("components/bkdemo/Dockerfile", dockerfile);
    repo.write("components/bkdemo/bin/stellaops-standin", &repo.read("components/standin/bin/stellaops-standin"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(repo.path().join("components/bkdemo/bin/stellaops-standin"), fs::Permissions::from_mode(0o755)).unwrap();
    let bundle = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{bundle}\n[[component]]\nname = \"bkdemo\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"busybox\"\nsource = {{ path = \"components/bkdemo\" }}\n\n[component.recipe]\ndockerfile = \"Dockerfile\"\n{recipe}"
        ),
    );
    repo.commit_all("bkdemo: a Dockerfile component", EPOCH);
    repo
}

/// `release` with the BuildKit backend and the given extra flags.
pub(crate) fn release(repo: &Repo, extra: &[&str]) -> crate::support::Run {
    let mut args = vec!["release", "--channel", "edge", "--backend", "buildkit"];
    args.extend_from_slice(extra);
    let mut cmd = crate::support::xtask_cmd();
    cmd.args(&args).arg("--source").arg(repo.path()).env("BKDEMO_TOKEN", SECRET);
    crate::support::Run::of(cmd.output().unwrap())
}

#[test]
fn buildkit_images_are_reproducible_run_and_record_their_build_args() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let (Some(docker), Some(skopeo)) = (tool("docker"), tool("skopeo")) else {
        return;
    };
    let repo = repo_with(DOCKERFILE);
    let mirror = format!("{registry}/stellaops-it-bases");
    let run = release(&repo, &["--builder", &docker_host, "--base-mirror", &mirror]);
    run.ok();
    // BuildKit's steps reached the reporter.
    assert!(run.stderr.contains("RUN /bin/busybox mkdir"), "{}", run.stderr);
    let dir = repo.releases().join("2.4.1-edge");
    let first = digests(&dir.join("images"));

    // Built again twice under varied TZ, locale, umask, threads and wall clock: same digests.
    let mut cmd = crate::support::xtask_cmd();
    cmd.args(["repro", "--json", "--backend", "buildkit", "--builder", &docker_host])
        .args(["--base-mirror", &mirror])
        .arg("--source")
        .arg(repo.path())
        .env("BKDEMO_TOKEN", SECRET);
    let r = crate::support::Run::of(cmd.output().unwrap());
    r.ok();
    let report = r.json();
    assert_eq!(report["reproducible"], true, "{}", r.stdout);
    for name in ["bkdemo", "bkdemo-linux-amd64"] {
        assert_eq!(report["report"]["digests"][name].as_str(), Some(first[name].as_str()), "{name}: {}", r.stdout);
    }

    // images.json records how BuildKit built it; the secret is redacted.
    let images_json = fs::read_to_string(dir.join("images.json")).unwrap();
    assert!(!images_json.contains(SECRET));
    let images: serde_json::Value = serde_json::from_str(&images_json).unwrap();
    let img = &images["components"]["bkdemo"]["images"][0];
    let bk = &img["buildkit"];
    assert_eq!(bk["endpoint"], docker_host.as_str());
    assert_eq!(bk["network"], "none");
    assert_eq!(bk["build_args"]["BKDEMO_TOKEN"], "<redacted>");
    assert_eq!(bk["build_args"]["GREETING"], "hello");
    assert_eq!(bk["build_args"]["SOURCE_DATE_EPOCH"], EPOCH.to_string());
    assert!(bk["build_args"]["STELLAOPS_BASE"].as_str().unwrap().starts_with(&format!("{mirror}/busybox@sha256:")));
    // The provenance says BuildKit built it, with the same redacted build arguments; the
    // secret is nowhere in the release directory (images, SBOMs, provenance, JSON).
    let prov: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("provenance/bkdemo/linux-amd64.intoto.json")).unwrap()).unwrap();
    let def = &prov["predicate"]["buildDefinition"];
    assert_eq!(def["buildType"], "https://stella-ops.org/release-pipeline/buildkit/v1");
    assert_eq!(def["internalParameters"]["builder"], "buildkit");
    assert_eq!(def["internalParameters"]["buildkit"]["build_args"]["BKDEMO_TOKEN"], "<redacted>");
    assert!(dir.join("sboms/bkdemo/linux-amd64.cdx.json").is_file());
    for e in walkdir_files(&dir) {
        let bytes = fs::read(&e).unwrap();
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret leaked into {}", e.display());
    }
    // Daemonless components carry no BuildKit record.
    assert!(images["components"]["signer"]["images"][0].get("buildkit").is_none());

    // The component layer: clamped times, the Dockerfile's modes, only what changed.
    let layer = img["layers"].as_array().unwrap().last().unwrap().as_str().unwrap();
    let blob = fs::File::open(dir.join("images/blobs/sha256").join(layer.trim_start_matches("sha256:"))).unwrap();
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(blob));
    let mut entries = Vec::new();
    for e in tar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), EPOCH as u64, "{:?}", e.path());
        entries.push((e.path().unwrap().to_string_lossy().into_owned(), h.mode().unwrap()));
    }
    let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    assert!(names.contains(&"usr/bin/stellaops-standin"), "{names:?}");
    assert!(names.contains(&"var/lib/bkdemo/greeting"), "{names:?}");
    assert!(!names.contains(&"bin/busybox"), "base file copied: {names:?}");
    assert!(entries.contains(&("var/lib/bkdemo/".to_owned(), 0o750)), "{entries:?}");
    let mut sorted = names.clone();
    sorted.sort_by_key(|p| p.trim_end_matches('/').split('/').map(str::to_owned).collect::<Vec<_>>());
    assert_eq!(names, sorted, "entries are not in walk order");

    // The image runs with no network and says its version and channel.
    let tag = format!("{registry}/stellaops-it/bkdemo:edge");
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "--all", "--preserve-digests", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:bkdemo", dir.join("images").display()))
            .arg(format!("docker://{tag}")),
    );
    let by_digest = format!("{registry}/stellaops-it/bkdemo@{}", first["bkdemo"]);
    run_ok(Command::new(&docker).args(["pull", "--quiet", &by_digest]));
    let out = run_ok(Command::new(&docker).args(["run", "--rm", "--network", "none", &by_digest, "version"]));
    assert_eq!(out.trim(), "bkdemo 2.4.1 channel=edge release=\"2.4.1 (2027.06)\" calendar=2027.06");
    let out = run_ok(Command::new(&docker).args([
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/busybox",
        &by_digest,
        "cat",
        "/var/lib/bkdemo/link",
    ]));
    assert_eq!(out.trim(), "hello from 2.4.1");
}

#[test]
fn a_down_endpoint_is_dropped_and_the_release_completes_on_the_other() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let repo = repo_with(DOCKERFILE);
    let bogus = format!("unix://{}/no-such-docker.sock", repo.path().display());
    let run = release(&repo, &["--builder", &bogus, "--builder", &docker_host, "--base-mirror", &format!("{registry}/stellaops-it-bases")]);
    run.ok();
    assert!(run.stderr.contains(&format!("builder `{bogus}` is down")) && run.stderr.contains("dropped from the pool"), "{}", run.stderr);
    let images: serde_json::Value = serde_json::from_slice(&fs::read(repo.releases().join("2.4.1-edge/images.json")).unwrap()).unwrap();
    assert_eq!(images["components"]["bkdemo"]["images"][0]["buildkit"]["endpoint"], docker_host.as_str());
}

#[test]
fn an_endpoint_keyed_to_another_platform_does_not_take_the_job() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let repo = repo_with(DOCKERFILE);
    let run =
        release(&repo, &["--builder", &format!("linux/arm64={docker_host}"), "--base-mirror", &format!("{registry}/stellaops-it-bases")]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("`{docker_host}`: builds only linux/arm64, not linux/amd64")), "{}", run.stderr);
}

#[test]
fn with_every_endpoint_down_the_error_names_each_one() {
    // Needs no service: both endpoints are bogus on purpose.
    let repo = repo_with(DOCKERFILE);
    let a = format!("unix://{}/a.sock", repo.path().display());
    let b = format!("unix://{}/b.sock", repo.path().display());
    let run = release(&repo, &["--builder", &a, "--builder", &b, "--base-mirror", "127.0.0.1:9/x"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("no BuildKit endpoint is usable")
            && run.stderr.contains(&format!("`{a}`"))
            && run.stderr.contains(&format!("`{b}`")),
        "{}",
        run.stderr
    );
    assert!(!repo.releases().join("2.4.1-edge").exists());
}

#[test]
fn a_failing_run_step_fails_the_release_with_its_log_tail_and_no_partial_image() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let repo = repo_with(
        "ARG STELLAOPS_BASE\nFROM ${STELLAOPS_BASE}\nCOPY bin/ /usr/bin/\nRUN /bin/busybox echo 'compiling the thing' && /bin/busybox echo 'error: the thing is broken' && /bin/busybox false\n",
    );
    let run = release(&repo, &["--builder", &docker_host, "--base-mirror", &format!("{registry}/stellaops-it-bases")]);
    run.refused(&[
        "component `bkdemo` (linux/amd64)",
        "step `[3/3] RUN /bin/busybox echo 'compiling the thing'",
        "  | error: the thing is broken",
    ]);
    let left: Vec<_> = fs::read_dir(repo.releases()).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn unpinned_from_lines_are_refused_before_building_naming_dockerfile_and_line() {
    // Refused before any endpoint is contacted: the endpoint here does not exist.
    let lock = Repo::new().read("base-images.lock");
    let pin = |platform: &str| {
        let at = lock.find(&format!("[base.platform.\"{platform}\"]")).unwrap();
        let line = lock[at..].lines().find(|l| l.starts_with("digest")).unwrap();
        line.split('"').nth(1).unwrap().to_owned()
    };
    let arm64 = pin("linux/arm64");
    let missing = format!("sha256:{}", "e".repeat(64));
    for (from, needle) in [
        ("busybox:1.36".to_owned(), "is not pinned by digest".to_owned()),
        (format!("127.0.0.1:5000/base/busybox@{missing}"), format!("digest `{missing}` is not pinned in `base-images.lock`")),
        (format!("127.0.0.1:5000/base/busybox@{arm64}"), "as base `busybox` for linux/arm64, not for linux/amd64".to_owned()),
    ] {
        let repo = repo_with(&format!("# demo\nFROM {from}\nCOPY bin/ /usr/bin/\n"));
        let run = release(&repo, &["--builder", "unix:///nonexistent/docker.sock"]);
        run.refused(&["`components/bkdemo/Dockerfile` line 2", &needle]);
        assert!(!run.stderr.contains("endpoint"), "{}", run.stderr);
        assert!(!repo.releases().exists() || fs::read_dir(repo.releases()).unwrap().next().is_none());
    }
}

#[test]
fn a_dockerfile_only_component_needs_the_buildkit_backend() {
    let repo = repo_with(DOCKERFILE);
    repo.xtask(&["release", "--channel", "edge"]).refused(&["component `bkdemo`", "--backend buildkit"]);
}

/// Every config instruction of issue 13 (point 1), on the pinned base.
const CONFIG_DOCKERFILE: &str = r#"ARG STELLAOPS_BASE
FROM ${STELLAOPS_BASE}
COPY bin/ /usr/bin/
RUN /bin/busybox mkdir -p /srv/app /data && /bin/busybox chown 10001:10001 /srv/app /data
USER 10001:10001
WORKDIR /srv/app
ENV APP_MODE=production APP_HOME=/srv/app
EXPOSE 8080/tcp
ENTRYPOINT ["/usr/bin/stellaops-standin"]
CMD ["serve", "--port", "8080"]
LABEL org.example.team="release" org.example.tier="backend"
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=4 CMD ["/usr/bin/stellaops-standin", "version"]
VOLUME ["/data"]
SHELL ["/bin/sh", "-eu", "-c"]
"#;

/// The config (`config.config`) of `name` in the OCI layout at `layout`.
fn layout_run_config(layout: &std::path::Path, name: &str) -> serde_json::Value {
    let blob = |d: &str| fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&digests(layout)[name])).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    config["config"].clone()
}

#[test]
fn dockerfile_config_instructions_reach_the_image_config_as_docker_build_sets_them() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let (Some(docker), Some(skopeo)) = (tool("docker"), tool("skopeo")) else {
        return;
    };
    let repo = repo_with_recipe(CONFIG_DOCKERFILE, "");
    let mirror = format!("{registry}/stellaops-it-bases");
    let run = release(&repo, &["--builder", &docker_host, "--base-mirror", &mirror]);
    run.ok();
    let dir = repo.releases().join("2.4.1-edge");
    let ours = layout_run_config(&dir.join("images"), "bkdemo-linux-amd64");
    // The temporary image of the config build is gone.
    let left = run_ok(Command::new(&docker).args(["image", "ls", "--quiet", "stellaops-tmp/bkdemo"]));
    assert_eq!(left.trim(), "", "temporary images left behind");

    // `docker build` of the same context and Dockerfile on the same engine (its default
    // builder), from the same pinned base.
    let images: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images.json")).unwrap()).unwrap();
    let base = images["components"]["bkdemo"]["images"][0]["buildkit"]["build_args"]["STELLAOPS_BASE"].as_str().unwrap().to_owned();
    let tag = format!("stellaops-it-compare/bkdemo:{}", std::process::id());
    run_ok(
        Command::new(&docker)
            .args(["build", "--quiet", "--network", "none", "--build-arg", &format!("STELLAOPS_BASE={base}"), "-t", &tag])
            .arg(repo.path().join("components/bkdemo")),
    );
    let inspect: serde_json::Value = serde_json::from_str(&run_ok(Command::new(&docker).args(["image", "inspect", &tag]))).unwrap();
    run_ok(Command::new(&docker).args(["image", "rm", "--force", &tag]));
    let theirs = &inspect[0]["Config"];

    // Field by field, except the pipeline's own labels and STELLAOPS_* variables.
    let pipeline_labels = [
        schema::labels::LABEL_VERSION,
        schema::labels::LABEL_REVISION,
        schema::labels::LABEL_CREATED,
        schema::labels::LABEL_CALENDAR,
        schema::labels::LABEL_CHANNEL,
        schema::labels::LABEL_PROVENANCE,
    ];
    let mut our_labels = ours["Labels"].as_object().cloned().unwrap_or_default();
    for l in pipeline_labels {
        assert!(our_labels.remove(l).is_some(), "pipeline label {l} missing: {ours}");
    }
    assert_eq!(serde_json::Value::Object(our_labels), theirs["Labels"], "Labels");
    let our_env: Vec<&str> = ours["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(our_env.contains(&"STELLAOPS_COMPONENT=bkdemo"), "{our_env:?}");
    let our_env: Vec<&str> = our_env.into_iter().filter(|kv| !kv.starts_with("STELLAOPS_")).collect();
    assert_eq!(serde_json::json!(our_env), theirs["Env"], "Env");
    let null = serde_json::Value::Null;
    for field in ["User", "WorkingDir", "ExposedPorts", "Entrypoint", "Cmd", "StopSignal", "Healthcheck", "Volumes", "Shell", "OnBuild"] {
        let theirs = match &theirs[field] {
            // `docker image inspect` shows an unset string as "" and an unset list as null.
            serde_json::Value::String(s) if s.is_empty() => &null,
            v => v,
        };
        assert_eq!(ours.get(field).unwrap_or(&null), theirs, "{field}: ours {ours}\ntheirs {}", inspect[0]["Config"]);
    }
    // The Dockerfile's values, spelled out (so that an engine that dropped them all would not pass).
    assert_eq!(ours["User"], "10001:10001");
    assert_eq!(ours["WorkingDir"], "/srv/app");
    assert_eq!(ours["StopSignal"], "SIGTERM");
    assert_eq!(ours["Shell"], serde_json::json!(["/bin/sh", "-eu", "-c"]));
    assert_eq!(ours["Healthcheck"]["StartPeriod"], 10_000_000_000_u64);

    // The image runs as the Dockerfile's user, in its working directory.
    let pushed = format!("{registry}/stellaops-it/bkdemo-config:edge");
    crate::support::push(&skopeo, &format!("oci:{}:bkdemo", dir.join("images").display()), &pushed);
    let by_digest = format!("{registry}/stellaops-it/bkdemo-config@{}", digests(&dir.join("images"))["bkdemo"]);
    run_ok(Command::new(&docker).args(["pull", "--quiet", &by_digest]));
    let out = run_ok(Command::new(&docker).args([
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/busybox",
        &by_digest,
        "sh",
        "-c",
        "id -u; id -g; pwd",
    ]));
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["10001", "10001", "/srv/app"]);
    run_ok(Command::new(&docker).args(["image", "rm", "--force", &by_digest]));
}

#[test]
fn a_variable_set_by_both_the_recipe_and_the_dockerfile_to_different_values_is_refused_naming_both() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let repo = repo_with_recipe(CONFIG_DOCKERFILE, "env = { APP_MODE = \"debug\", OTHER = \"x\" }\n");
    let run = release(&repo, &["--builder", &docker_host, "--base-mirror", &format!("{registry}/stellaops-it-bases")]);
    run.refused(&[
        "component `bkdemo` (linux/amd64)",
        "the Dockerfile `components/bkdemo/Dockerfile` and the component's recipe in `release-trains/components.toml`",
        "`ENV APP_MODE` is `\"production\"` in the Dockerfile but `recipe.env.APP_MODE` is `\"debug\"` in the recipe",
    ]);
    assert!(!run.stderr.contains("OTHER"), "{}", run.stderr);
    assert!(!repo.releases().join("2.4.1-edge").exists());
}
