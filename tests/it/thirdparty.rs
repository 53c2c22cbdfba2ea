//! A component on a third-party base: a Debian minbase root filesystem made by debootstrap
//! from the host's apt mirror, packed into an OCI image by umoci, pinned by `lock add`. The
//! base's files no package owns (`/etc/group`, `/etc/ld.so.cache`, ...) are the base's: the
//! release has no drift. What a component layer adds, changes or removes that the build did
//! not declare stops it, naming the layer.
//!
//! debootstrap takes a minute or more: the root filesystem (a tar) and the OCI layout umoci
//! makes of it are cached under the shared test cache (`target/stellaops-cache/thirdparty/`),
//! keyed by debootstrap's inputs (suite, variant, architecture, mirror).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use schema::model::Digest;

use crate::support::{cache, run_ok, tool, Repo, EPOCH};

const SUITE: &str = "bookworm";

/// The OCI layout (image `minbase`) of a debootstrap minbase root filesystem, made once and
/// cached; `None` (a failure under `CI`) when debootstrap or umoci is missing.
fn minbase_layout() -> Option<PathBuf> {
    static MAKING: Mutex<()> = Mutex::new(());
    let (Some(debootstrap), Some(umoci)) = (tool("debootstrap"), tool("umoci")) else {
        return None;
    };
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    let mirror = pipeline::stages::build::debian::host_mirror().unwrap();
    let inputs = format!("debootstrap --variant=minbase --arch=amd64 {SUITE} {mirror}");
    let key = Digest::of(inputs.as_bytes()).hex()[..16].to_owned();
    let dir = cache().join("thirdparty");
    fs::create_dir_all(&dir).unwrap();

    // 1. The root filesystem, as a tar (without the downloaded .deb files and device nodes,
    //    as the Debian images of registries have it).
    let tar = dir.join(format!("debian-minbase-{SUITE}-{key}.tar"));
    if !tar.is_file() {
        eprintln!("making the debootstrap base ({inputs}); cached as {}", tar.display());
        let tmp = tempfile::Builder::new().prefix("debootstrap-").tempdir_in(&dir).unwrap();
        let rootfs = tmp.path().join("rootfs");
        run_ok(Command::new(&debootstrap).args(["--variant=minbase", "--arch=amd64", SUITE]).arg(&rootfs).arg(&mirror));
        let part = tmp.path().join("rootfs.tar");
        run_ok(
            Command::new("tar")
                .args(["--numeric-owner", "--exclude=./var/cache/apt/archives/*.deb", "--exclude=./dev/*", "-C"])
                .arg(&rootfs)
                .arg("-cf")
                .arg(&part)
                .arg("."),
        );
        fs::rename(&part, &tar).unwrap();
    }

    // 2. The image, by umoci: a new image, unpacked, the root filesystem copied in, repacked.
    let layout = dir.join(format!("debian-minbase-{SUITE}-{key}-oci"));
    if !layout.is_dir() {
        let tmp = tempfile::Builder::new().prefix("umoci-").tempdir_in(&dir).unwrap();
        let (part, bundle) = (tmp.path().join("layout"), tmp.path().join("bundle"));
        let image = format!("{}:minbase", part.display());
        run_ok(Command::new(&umoci).arg("init").arg("--layout").arg(&part));
        run_ok(Command::new(&umoci).args(["new", "--image", &image]));
        run_ok(Command::new(&umoci).args(["unpack", "--image", &image]).arg(&bundle));
        run_ok(Command::new("tar").args(["--numeric-owner", "-xpf"]).arg(&tar).arg("-C").arg(bundle.join("rootfs")));
        run_ok(Command::new(&umoci).args(["repack", "--image", &image]).arg(&bundle));
        fs::rename(&part, &layout).unwrap();
    }
    Some(layout)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A scratch repository whose bundle has `thirdparty`, a daemonless component on the
/// debootstrap base (pinned by `lock add`): a program in `/usr/local/bin` and its own
/// `/etc/hostname` (a file of the base that its recipe layer replaces, so declares).
fn repo_on_minbase(layout: &Path) -> Repo {
    let repo = Repo::new();
    // Inside the repository (the lock names layouts by relative paths), outside git.
    let here = repo.path().join("target/debian-minbase");
    copy_dir(layout, &here);
    let run =
        repo.xtask(&["lock", "add", "debian", "--from", &format!("oci:{}:minbase", here.display()), "--platform", "linux/amd64", "--json"]);
    run.ok();
    assert_eq!(run.json()["source"], "oci-layout");
    repo.write("components/thirdparty/bin/thirdparty", "#!/bin/sh\necho thirdparty\n");
    repo.write("components/thirdparty/etc/hostname", "thirdparty\n");
    let bundle = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{bundle}\n[[component]]\nname = \"thirdparty\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"debian\"\nsource = {{ path = \"components/thirdparty\" }}\n\n[component.recipe]\nentrypoint = [\"/usr/local/bin/thirdparty\"]\n\n[[component.recipe.layer]]\nfrom = \"bin\"\nto = \"/usr/local/bin\"\n\n[[component.recipe.layer]]\nfrom = \"etc\"\nto = \"/etc\"\n"
        ),
    );
    repo.commit_all("thirdparty: a component on a debootstrap base", EPOCH);
    repo
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The report of `thirdparty` in a drift document.
fn report(drift: &serde_json::Value) -> serde_json::Value {
    drift["images"].as_array().unwrap().iter().find(|i| i["component"] == "thirdparty").unwrap().clone()
}

#[test]
fn a_component_on_a_debootstrap_base_releases_with_zero_drift_and_undeclared_changes_name_the_layer() {
    let Some(layout) = minbase_layout() else { return };
    let repo = repo_on_minbase(&layout);

    // 1. Pristine base: no difference; the base's contribution counted apart.
    let first = repo.xtask(&["release"]);
    first.ok();
    let release = repo.releases().join("2.4.1-edge");
    let drift = json(&release.join("drift.json"));
    let r = report(&drift);
    assert_eq!(r["differences"], serde_json::json!([]), "{r:#}");
    let base = &r["from_base"];
    let (packages, files) = (base["packages"].as_u64().unwrap(), base["files"].as_u64().unwrap());
    // About 90 packages in a bookworm minbase; hundreds of files no package owns.
    assert!(packages > 50 && files > 100, "{base}");
    assert_eq!(base["layers"], 1);
    let own = &r["from_component"];
    assert_eq!(own["layers"].as_array().unwrap().iter().map(|l| l["index"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "{own}");
    assert_eq!((own["declared_files"].as_u64(), own["found_files"].as_u64()), (Some(2), Some(2)), "{own}");
    assert_eq!((own["found_packages"].as_u64(), own["found_removed"].as_u64()), (Some(0), Some(0)), "{own}");
    // The progress line of the image says the same.
    let line =
        format!("0 differences; base: {packages} packages, {files} files no package owns; component: 0 packages, 2 files, 0 removals");
    assert!(first.stderr.contains(&line), "{line}\n{}", first.stderr);
    // The build-time SBOM lists the base's own files as the base's.
    let sbom = json(&release.join("sboms/thirdparty/linux-amd64.cdx.json"));
    let pin = base["digest"].as_str().unwrap();
    let of_base = |name: &str| {
        sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .is_some_and(|c| c["properties"].as_array().unwrap().iter().any(|p| p["name"] == "stellaops:base" && p["value"] == pin))
    };
    assert!(of_base("/etc/group") && of_base("/etc/ld.so.cache") && of_base("libc6"), "base files missing from the SBOM");
    assert!(!of_base("/etc/hostname"), "the component's /etc/hostname is listed as the base's");
    // The inventory is cached by the base's digest.
    let hex = pin.trim_start_matches("sha256:");
    assert!(cache().join(format!("base-inventory/v1-{hex}.json")).is_file());

    // 2. A file, a package and a removal in the component's last layer that the build did not
    //    declare (a test fault: the layer carries them, the build's record does not): each is
    //    a difference naming that layer, and the release stops.
    repo.write("components/thirdparty/etc/node_modules/leftover/package.json", "{\"name\": \"leftover\", \"version\": \"0.0.1\"}\n");
    repo.commit_all("a package no lock file declares", EPOCH);
    let mut cmd = crate::support::xtask_cmd();
    cmd.env("STELLAOPS_TEST_FAULT", "stowaway@thirdparty=/usr/local/share/stowaway,/etc/.wh.debian_version");
    let run = crate::support::Run::of(cmd.args(["release", "--source"]).arg(repo.path()).output().unwrap());
    run.refused(&["drift", "/usr/local/share/stowaway", "/etc/debian_version", "leftover", "#2 sha256:", "REJECTED"]);
    let rejected = json(&repo.releases().join("2.4.1-edge.drift-rejected.json"));
    let r = report(&rejected);
    let last = r["from_component"]["layers"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["index"], 2);
    let diffs: Vec<(String, String, serde_json::Value)> = r["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["change"].as_str().unwrap().to_owned(), d["name"].as_str().unwrap().to_owned(), d["layer"].clone()))
        .collect();
    let want = |change: &str, name: &str| (change.to_owned(), name.to_owned(), last.clone());
    assert_eq!(
        diffs,
        [want("added", "/usr/local/share/stowaway"), want("added", "leftover"), want("removed", "/etc/debian_version")],
        "{r:#}"
    );
    // Only the component is to blame: the other images have no difference.
    for other in rejected["images"].as_array().unwrap().iter().filter(|i| i["component"] != "thirdparty") {
        assert_eq!(other["differences"], serde_json::json!([]), "{other:#}");
    }
    // The printed summary counts the base and the component apart.
    assert!(run.stderr.contains(&format!("thirdparty linux/amd64: base {}", &pin[..19])), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("{packages} packages, {files} files no package owns")), "{}", run.stderr);
}

/// A Dockerfile build on the debootstrap base: what its RUN step removes and changes of the
/// base is declared by the build's own record (the layer is the rootfs diff, whiteouts
/// included), so only what no lock file declares, a package, stops the release.
const DOCKERFILE: &str = r#"ARG STELLAOPS_BASE
FROM ${STELLAOPS_BASE}
COPY bin/ /usr/local/bin/
RUN rm /etc/debian_version \
 && echo "built by BuildKit" >> /etc/issue.net \
 && mkdir -p /opt/app/node_modules/undeclared \
 && printf '{"name": "undeclared", "version": "1.0.0"}\n' > /opt/app/node_modules/undeclared/package.json
"#;

#[test]
fn a_dockerfile_on_a_debootstrap_base_declares_what_it_changes_and_removes_but_not_a_package() {
    let Some((docker_host, registry)) = crate::support::services() else {
        return;
    };
    let Some(layout) = minbase_layout() else { return };
    let repo = repo_on_minbase(&layout);
    repo.write("components/bkthird/Dockerfile", DOCKERFILE);
    repo.write("components/bkthird/bin/bkthird", "#!/bin/sh\necho bkthird\n");
    let bundle = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!(
            "{bundle}\n[[component]]\nname = \"bkthird\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"debian\"\nsource = {{ path = \"components/bkthird\" }}\n\n[component.recipe]\ndockerfile = \"Dockerfile\"\nentrypoint = [\"/bin/sh\", \"/usr/local/bin/bkthird\"]\n"
        ),
    );
    repo.commit_all("bkthird: a Dockerfile component on the debootstrap base", EPOCH);
    let mirror = format!("{registry}/stellaops-it-thirdparty");
    let mut cmd = crate::support::xtask_cmd();
    cmd.args(["release", "--backend", "buildkit", "--builder", &docker_host, "--base-mirror", &mirror]).arg("--source").arg(repo.path());
    let run = crate::support::Run::of(cmd.output().unwrap());
    run.refused(&["drift", "undeclared", "1.0.0", "#1 sha256:", "REJECTED"]);
    let rejected = json(&repo.releases().join("2.4.1-edge.drift-rejected.json"));
    let r = rejected["images"].as_array().unwrap().iter().find(|i| i["component"] == "bkthird").unwrap().clone();
    // One layer after the base's: the rootfs diff of the Dockerfile.
    let own = &r["from_component"];
    let layers = own["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{own}");
    assert_eq!(layers[0]["index"], 1);
    // The removal and the change of a file a package owns are declared; the package is not.
    assert_eq!((own["declared_removed"].as_u64(), own["found_removed"].as_u64()), (Some(1), Some(1)), "{own}");
    let diffs = r["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 1, "{r:#}");
    assert_eq!(
        (diffs[0]["change"].as_str(), diffs[0]["type"].as_str(), diffs[0]["name"].as_str()),
        (Some("added"), Some("npm"), Some("undeclared"))
    );
    assert_eq!(diffs[0]["layer"], layers[0]);
    // The daemonless component on the same base: still no difference.
    let other = rejected["images"].as_array().unwrap().iter().find(|i| i["component"] == "thirdparty").unwrap();
    assert_eq!(other["differences"], serde_json::json!([]), "{other:#}");
}
