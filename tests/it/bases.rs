//! Base sources other than Debian packages: a local OCI layout, a registry by digest and a
//! `docker save` archive, with images written by other tools (umoci: no `mediaType`; skopeo:
//! OCI and Docker v2 schema 2; Docker's CLI: a manifest list; an OCI index); and component
//! sources from a git repository at a pinned commit.

use std::fs;
use std::path::Path;
use std::process::Command;

use oci::{Index, Layout, ANNOTATION_REF_NAME, MEDIA_INDEX};
use schema::model::Digest;

use crate::support::{run_ok, tool, Repo, EPOCH};

/// The base digests (amd64, arm64) that a release of `repo` used for `component`.
pub(crate) fn bases_of(release: &Path, component: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(release.join("images.json")).unwrap()).unwrap();
    v["components"][component]["images"].as_array().unwrap().iter().map(|i| i["base"].as_str().unwrap().to_owned()).collect()
}

/// Copies the base image `digest` (manifest, config, layers) from a release layout into a new
/// layout at `dest`, named `name`.
pub(crate) fn extract_base(from: &Path, digest: &str, dest: &Path, name: &str) {
    let src = Layout::open(from).unwrap();
    let dst = Layout::create(dest).unwrap();
    let d: Digest = digest.parse().unwrap();
    let manifest: oci::Manifest = src.read_json(&d, "manifest").unwrap();
    for blob in std::iter::once(&manifest.config.digest).chain(manifest.layers.iter().map(|l| &l.digest)).chain([&d]) {
        pipeline::stages::build::base::copy_blob(&src, &dst, blob).unwrap();
    }
    let mut desc = oci::Descriptor::new(oci::MEDIA_MANIFEST, d.clone(), fs::metadata(src.blob_path(&d)).unwrap().len());
    desc.annotations.insert(ANNOTATION_REF_NAME.into(), name.into());
    let mut index = dst.index().unwrap_or(Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.into()),
        manifests: vec![],
        annotations: Default::default(),
    });
    index.manifests.push(desc);
    dst.write_index(&index).unwrap();
}

/// Adds a base to the lock and points `authority` at it.
fn use_base(repo: &Repo, block: &str) {
    repo.write("base-images.lock", &format!("{}\n{block}", repo.read("base-images.lock")));
    repo.edit("release-trains/components.toml", "name = \"authority\"\nversion = \"2.4.1\"\nskew-group = \"trust\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\nbase = \"busybox\"", "name = \"authority\"\nversion = \"2.4.1\"\nskew-group = \"trust\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\nbase = \"other\"");
}

#[test]
fn a_base_from_a_local_oci_layout_is_copied_and_verified() {
    let repo = Repo::new();
    repo.xtask(&["release"]).ok();
    let release = repo.releases().join("2.4.1-edge");
    let [amd, arm] = <[String; 2]>::try_from(bases_of(&release, "signer")).unwrap();
    let layout = repo.path().join("bases/busybox");
    extract_base(&release.join("images"), &amd, &layout, "amd64");
    extract_base(&release.join("images"), &arm, &layout, "arm64");
    use_base(&repo, &format!("[[base]]\nname = \"other\"\nsource = \"oci-layout\"\n\n[base.platform.\"linux/amd64\"]\ndigest = \"{amd}\"\nlayout = \"bases/busybox\"\n\n[base.platform.\"linux/arm64\"]\ndigest = \"{arm}\"\nlayout = \"bases/busybox\"\n"));
    repo.commit_all("authority on a layout base", EPOCH);
    repo.xtask(&["release"]).ok();
    assert_eq!(bases_of(&release, "authority"), [amd.clone(), arm.clone()]);

    // A corrupted blob in that layout is refused, naming the blob.
    let d: Digest = amd.parse().unwrap();
    let manifest: oci::Manifest = Layout::open(&layout).unwrap().read_json(&d, "m").unwrap();
    let config = layout.join("blobs/sha256").join(manifest.config.digest.hex());
    fs::write(&config, b"{}").unwrap();
    repo.xtask(&["build", "--out", repo.path().join("target/x").to_str().unwrap()]).refused(&[
        "base `other`",
        manifest.config.digest.hex(),
        "corrupt",
    ]);
}

#[test]
fn a_base_from_a_registry_is_pulled_by_digest_and_verified() {
    let Some(registry) = crate::support::registry() else {
        return;
    };
    let Some(skopeo) = tool("skopeo") else { return };
    let repo = Repo::new();
    repo.xtask(&["release"]).ok();
    let release = repo.releases().join("2.4.1-edge");
    let [amd, arm] = <[String; 2]>::try_from(bases_of(&release, "signer")).unwrap();
    let layout = repo.path().join("target/base-layout");
    extract_base(&release.join("images"), &amd, &layout, "amd64");
    extract_base(&release.join("images"), &arm, &layout, "arm64");
    for arch in ["amd64", "arm64"] {
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--preserve-digests", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:{arch}", layout.display()))
                .arg(format!("docker://{registry}/base/busybox:{arch}")),
        );
    }
    // The tag stays as a comment of where the digest came from; only the digest is used.
    use_base(&repo, &format!("[[base]]\nname = \"other\"\nsource = \"registry\"\n\n[base.platform.\"linux/amd64\"]\ndigest = \"{amd}\"\nreference = \"{registry}/base/busybox:amd64@{amd}\"\n\n[base.platform.\"linux/arm64\"]\ndigest = \"{arm}\"\nreference = \"{registry}/base/busybox:arm64@{arm}\"\n"));
    repo.commit_all("authority on a registry base", EPOCH);
    repo.xtask(&["release"]).ok();
    assert_eq!(bases_of(&release, "authority"), [amd.clone(), arm.clone()]);
    // `lock` re-verifies the registry pins and changes nothing.
    let lock = repo.xtask(&["lock", "--json"]);
    lock.ok();
    assert_eq!(lock.json()["changes"].as_array().unwrap().len(), 0, "{}", lock.stdout);

    // A digest the registry does not have is refused.
    let missing = format!("sha256:{}", "e".repeat(64));
    let lock = repo.read("base-images.lock");
    let (head, other) = lock.split_at(lock.find("name = \"other\"").unwrap());
    assert!(other.contains(&format!("{registry}/base/busybox:amd64@{amd}")), "lock lost the tag comment:\n{other}");
    repo.write("base-images.lock", &format!("{head}{}", other.replacen(&amd, &missing, 2)));
    repo.commit_all("pin a digest that is not there", EPOCH);
    let run = repo.xtask(&["release"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("base `other`") && run.stderr.contains(&missing), "{}", run.stderr);
}

#[test]
fn a_component_from_a_git_repository_at_a_pinned_commit() {
    let upstream = Repo::new();
    upstream.write("svc/bin/stellaops-extra", "#!/bin/sh\necho extra\n");
    upstream.commit_all("extra service", EPOCH);
    let rev = upstream.git(&["rev-parse", "HEAD"]);
    // A later commit must not be what gets built.
    upstream.write("svc/bin/stellaops-extra", "#!/bin/sh\necho moved on\n");
    upstream.commit_all("moved on", EPOCH + 10);

    let repo = Repo::new();
    let url = format!("file://{}", upstream.path().display());
    let text = repo.read("release-trains/components.toml");
    let component = |rev: &str| {
        format!("{text}\n[[component]]\nname = \"extra\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"busybox\"\nsource = {{ git = \"{url}\", rev = \"{rev}\", subdir = \"svc\" }}\n\n[component.recipe]\nentrypoint = [\"/usr/bin/stellaops-extra\"]\n\n[[component.recipe.layer]]\nfrom = \"bin\"\nto = \"/usr/bin\"\n")
    };
    repo.write("release-trains/components.toml", &component("main"));
    repo.commit_all("extra by branch", EPOCH);
    repo.xtask(&["plan"]).refused(&["`components[8].source.rev`", "`main` is not a full 40-hex commit id"]);

    repo.write("release-trains/components.toml", &component(&rev));
    repo.commit_all("extra pinned", EPOCH);
    repo.xtask(&["release"]).ok();
    let release = repo.releases().join("2.4.1-edge");
    let layer = crate::support::last_layer(&release, "extra");
    let blob = fs::File::open(release.join("images/blobs/sha256").join(layer)).unwrap();
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(blob));
    let mut found = None;
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("usr/bin/stellaops-extra") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            found = Some((s, e.header().mode().unwrap()));
        }
    }
    assert_eq!(found, Some(("#!/bin/sh\necho extra\n".to_owned(), 0o644)));
}

/// Points `component` at the base `base` in the scratch repository's bundle.
pub(crate) fn point(repo: &Repo, component: &str, base: &str) {
    let text = repo.read("release-trains/components.toml");
    let at = text.find(&format!("name = \"{component}\"")).unwrap();
    let rel = text[at..].find("base = \"busybox\"").unwrap();
    let mut out = text.clone();
    out.replace_range(at + rel..at + rel + "base = \"busybox\"".len(), &format!("base = \"{base}\""));
    repo.write("release-trains/components.toml", &out);
}

/// A base made by umoci in `layout` (its manifests carry no `mediaType`): per platform an
/// image of the busybox layer of the release `release` (uncompressed, added with `umoci raw
/// add-layer`, which gzips it). Returns the manifest digests (amd64, arm64).
fn umoci_base(umoci: &Path, release: &Path, layout: &Path) -> [String; 2] {
    run_ok(Command::new(umoci).args(["init", "--layout"]).arg(layout));
    let src = Layout::open(&release.join("images")).unwrap();
    let mut out = Vec::new();
    let scratch = tempfile::tempdir().unwrap();
    for (digest, arch) in bases_of(release, "signer").iter().zip(["amd64", "arm64"]) {
        let m: oci::Manifest = src.read_json(&digest.parse().unwrap(), "manifest").unwrap();
        let tar = scratch.path().join(format!("busybox-{arch}.tar"));
        let mut gz = flate2::read::MultiGzDecoder::new(fs::File::open(src.blob_path(&m.layers[0].digest)).unwrap());
        std::io::copy(&mut gz, &mut fs::File::create(&tar).unwrap()).unwrap();
        let image = format!("{}:{arch}", layout.display());
        run_ok(Command::new(umoci).args(["new", "--image", &image]));
        run_ok(Command::new(umoci).args(["config", "--image", &image, "--os", "linux", "--architecture", arch]));
        run_ok(Command::new(umoci).args(["raw", "add-layer", "--image", &image]).arg(&tar));
        let d = crate::support::digests(layout)[arch].clone();
        let bytes = fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v.get("mediaType").is_none(), "umoci wrote a mediaType: {v}");
        out.push(d);
    }
    out.try_into().unwrap()
}

/// `images.json`'s record of `base` for each platform.
fn base_records(release: &Path, base: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(release.join("images.json")).unwrap()).unwrap();
    v["bases"].as_array().unwrap().iter().filter(|b| b["name"] == base).cloned().collect()
}

/// Every layer of every image of `component` in the release is OCI `tar+gzip`.
fn assert_oci_layers(release: &Path, component: &str) {
    let layout = Layout::open(&release.join("images")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&fs::read(release.join("images.json")).unwrap()).unwrap();
    for image in v["components"][component]["images"].as_array().unwrap() {
        let d: Digest = image["manifest"]["digest"].as_str().unwrap().parse().unwrap();
        let bytes = layout.read_blob(&d).unwrap();
        let m: oci::Manifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(m.media_type.as_deref(), Some(oci::MEDIA_MANIFEST));
        assert_eq!(m.config.media_type, oci::MEDIA_CONFIG);
        assert!(m.layers.iter().all(|l| l.media_type == oci::MEDIA_LAYER_GZIP), "{component}: {m:?}");
    }
}

#[test]
fn a_base_written_by_umoci_without_media_type_is_accepted_and_reproducible() {
    let Some(umoci) = tool("umoci") else { return };
    let repo = Repo::new();
    repo.xtask(&["release"]).ok();
    let release = repo.releases().join("2.4.1-edge");
    let layout = repo.path().join("bases/umoci");
    fs::create_dir_all(layout.parent().unwrap()).unwrap();
    let [amd, arm] = umoci_base(&umoci, &release, &layout);
    use_base(&repo, &format!("[[base]]\nname = \"other\"\nsource = \"oci-layout\"\n\n[base.platform.\"linux/amd64\"]\ndigest = \"{amd}\"\nlayout = \"bases/umoci\"\n\n[base.platform.\"linux/arm64\"]\ndigest = \"{arm}\"\nlayout = \"bases/umoci\"\n"));
    repo.commit_all("authority on a umoci base", EPOCH);
    fs::remove_dir_all(&release).unwrap();
    repo.xtask(&["release"]).ok();
    assert_eq!(bases_of(&release, "authority"), [amd.clone(), arm.clone()]);
    let records = base_records(&release, "other");
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["mediaType"] == oci::MEDIA_MANIFEST && r["source"] == "oci-layout"), "{records:?}");
    assert_oci_layers(&release, "authority");
    // Two builds, the same digests.
    repo.xtask(&["repro"]).ok();
}

#[test]
fn bases_in_oci_and_docker_formats_and_indexes_from_a_registry_are_accepted_and_reproducible() {
    let Some(registry) = crate::support::registry() else {
        return;
    };
    let (Some(umoci), Some(skopeo)) = (tool("umoci"), tool("skopeo")) else { return };
    let repo = Repo::new();
    repo.xtask(&["release"]).ok();
    let release = repo.releases().join("2.4.1-edge");
    let scratch = tempfile::tempdir().unwrap();
    let layout = scratch.path().join("umoci");
    let umoci_pins = umoci_base(&umoci, &release, &layout);
    let ns = format!(
        "{registry}/bases-{}",
        repo.path().file_name().unwrap().to_string_lossy().to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    let copy = |from: String, to: &str, extra: &[&str]| -> String {
        let digest_file = scratch.path().join("digest");
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .args(extra)
                .arg("--digestfile")
                .arg(&digest_file)
                .arg(from)
                .arg(format!("docker://{to}")),
        );
        fs::read_to_string(&digest_file).unwrap().trim().to_owned()
    };
    let mut oci_pins = Vec::new();
    let mut docker_pins = Vec::new();
    for (arch, pin) in ["amd64", "arm64"].iter().zip(&umoci_pins) {
        // OCI as skopeo keeps it (no mediaType, digests preserved) ...
        let d = copy(format!("oci:{}:{arch}", layout.display()), &format!("{ns}/oci:{arch}"), &["--preserve-digests", "--format", "oci"]);
        assert_eq!(&d, pin);
        oci_pins.push(d);
        // ... and converted to Docker v2 schema 2 (Docker media types, another digest).
        let d = copy(format!("oci:{}:{arch}", layout.display()), &format!("{ns}/docker:{arch}"), &["--format", "v2s2"]);
        let raw = run_ok(Command::new(&skopeo).args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{ns}/docker@{d}")));
        assert!(raw.contains(oci::MEDIA_DOCKER_MANIFEST) && raw.contains(oci::MEDIA_DOCKER_LAYER), "{raw}");
        docker_pins.push(d);
    }
    // A Docker manifest list of the two Docker manifests, made by Docker's CLI.
    let Some(docker) = tool("docker") else { return };
    let list = format!("{ns}/list:1");
    let docker_cli = || {
        let mut c = Command::new(&docker);
        c.env("DOCKER_CONFIG", scratch.path().join("docker-config"));
        c
    };
    run_ok(docker_cli().args(["manifest", "create", "--insecure", &list]).args(docker_pins.iter().map(|d| format!("{ns}/docker@{d}"))));
    let pushed = run_ok(docker_cli().args(["manifest", "push", "--insecure", &list]));
    let list_digest = pushed.lines().last().unwrap().trim().to_owned();
    let raw =
        run_ok(Command::new(&skopeo).args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{ns}/list@{list_digest}")));
    assert!(raw.contains(oci::MEDIA_DOCKER_LIST), "{raw}");

    // An OCI index of two platforms (the signer's, copied by skopeo with digests preserved):
    // the reference pins the index, the lock each platform's manifest.
    let index = crate::support::digests(&release.join("images"))["signer"].clone();
    let d = copy(format!("oci:{}:signer", release.join("images").display()), &format!("{ns}/index:1"), &["--all", "--preserve-digests"]);
    assert_eq!(d, index);
    let signer = bases_of(&release, "signer");
    let signer_images: Vec<String> = {
        let v: serde_json::Value = serde_json::from_slice(&fs::read(release.join("images.json")).unwrap()).unwrap();
        v["components"]["signer"]["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["manifest"]["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(signer.len(), 2);

    let block = |name: &str, repo_name: &str, pins: &[String], refs: &[String]| {
        format!(
            "[[base]]\nname = \"{name}\"\nsource = \"registry\"\n\n[base.platform.\"linux/amd64\"]\ndigest = \"{}\"\nreference = \"{ns}/{repo_name}@{}\"\n\n[base.platform.\"linux/arm64\"]\ndigest = \"{}\"\nreference = \"{ns}/{repo_name}@{}\"\n",
            pins[0], refs[0], pins[1], refs[1]
        )
    };
    let lock = format!(
        "{}\n{}\n{}\n{}\n{}",
        repo.read("base-images.lock"),
        block("oci", "oci", &oci_pins, &oci_pins),
        block("docker", "docker", &docker_pins, &docker_pins),
        block("index", "index", &signer_images, &[index.clone(), index.clone()]),
        block("list", "list", &docker_pins, &[list_digest.clone(), list_digest.clone()]),
    );
    repo.write("base-images.lock", &lock);
    point(&repo, "authority", "oci");
    point(&repo, "signer", "docker");
    point(&repo, "attestor", "index");
    point(&repo, "scanner-web", "list");
    repo.commit_all("bases from a registry in three formats", EPOCH);
    fs::remove_dir_all(&release).unwrap();
    repo.xtask(&["release"]).ok();
    assert_eq!(bases_of(&release, "authority"), oci_pins);
    assert_eq!(bases_of(&release, "signer"), docker_pins);
    assert_eq!(bases_of(&release, "attestor"), signer_images);
    assert_eq!(bases_of(&release, "scanner-web"), docker_pins);
    let docker = base_records(&release, "docker");
    assert!(docker.iter().all(|r| r["mediaType"] == oci::MEDIA_DOCKER_MANIFEST), "{docker:?}");
    assert!(docker.iter().all(|r| r["layers"][0]["mediaType"] == oci::MEDIA_DOCKER_LAYER), "{docker:?}");
    for c in ["authority", "signer", "attestor", "scanner-web"] {
        assert_oci_layers(&release, c);
    }
    // The Docker manifest is kept as the registry served it (its bytes are the pin).
    let stored = Layout::open(&release.join("images")).unwrap().read_blob(&docker_pins[0].parse().unwrap()).unwrap();
    assert!(String::from_utf8_lossy(&stored).contains(oci::MEDIA_DOCKER_MANIFEST));
    // `lock` re-resolves every pin and changes nothing.
    let run = repo.xtask(&["lock", "--json"]);
    run.ok();
    assert_eq!(run.json()["changes"].as_array().unwrap().len(), 0, "{}", run.stdout);
    // Two builds, the same digests.
    repo.xtask(&["repro"]).ok();

    // A pin that is not the platform's manifest of the index is refused, naming base and
    // digests; `lock` puts the platform's manifest back.
    let text = repo.read("base-images.lock");
    let at = text.find("name = \"index\"").unwrap();
    let wrong = format!(
        "{}{}",
        &text[..at],
        text[at..].replacen(&format!("digest = \"{}\"", signer_images[0]), &format!("digest = \"{}\"", docker_pins[0]), 1)
    );
    repo.write("base-images.lock", &wrong);
    repo.commit_all("a wrong pin", EPOCH);
    repo.xtask(&["build", "--out", repo.path().join("target/x").to_str().unwrap()]).refused(&[
        "base `index` (linux/amd64) resolves to",
        &signer_images[0],
        &docker_pins[0],
    ]);
    let run = repo.xtask(&["lock", "--json"]);
    run.ok();
    assert_eq!(run.json()["changes"].as_array().unwrap().len(), 1, "{}", run.stdout);
    assert!(repo.read("base-images.lock").contains(&format!("digest = \"{}\"", signer_images[0])));
}

#[test]
fn a_docker_save_archive_is_a_base_gzipped_deterministically() {
    let Some(_) = crate::support::services() else { return };
    let Some(docker) = tool("docker") else { return };
    let repo = Repo::new();
    repo.xtask(&["release"]).ok();
    let release = repo.releases().join("2.4.1-edge");
    // The busybox layer, imported into the engine and saved: `manifest.json`, the config as
    // Docker writes it (`"Cmd": null`, history without `created_by`) and an uncompressed tar.
    let src = Layout::open(&release.join("images")).unwrap();
    let m: oci::Manifest = src.read_json(&bases_of(&release, "signer")[0].parse().unwrap(), "manifest").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let tar = scratch.path().join("busybox.tar");
    let mut gz = flate2::read::MultiGzDecoder::new(fs::File::open(src.blob_path(&m.layers[0].digest)).unwrap());
    std::io::copy(&mut gz, &mut fs::File::create(&tar).unwrap()).unwrap();
    let tag = format!("stellaops-it/saved-{}:1", std::process::id());
    run_ok(Command::new(&docker).args(["import", "--change", "ENV PATH=/usr/bin:/bin"]).arg(&tar).arg(&tag));
    fs::create_dir_all(repo.path().join("bases")).unwrap();
    run_ok(Command::new(&docker).args(["save", "-o"]).arg(repo.path().join("bases/saved.tar")).arg(&tag));
    run_ok(Command::new(&docker).args(["image", "rm", &tag]));
    let zero = format!("sha256:{}", "0".repeat(64));
    repo.write("base-images.lock", &format!("{}\n[[base]]\nname = \"saved\"\nsource = \"docker-archive\"\n\n[base.platform.\"linux/amd64\"]\ndigest = \"{zero}\"\npath = \"bases/saved.tar\"\n", repo.read("base-images.lock")));
    repo.edit(
        "release-trains/components.toml",
        "name = \"authority\"\nversion = \"2.4.1\"\nskew-group = \"trust\"\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\nbase = \"busybox\"",
        "name = \"authority\"\nversion = \"2.4.1\"\nskew-group = \"trust\"\nplatforms = [\"linux/amd64\"]\nbase = \"saved\"",
    );
    repo.commit_all("authority on a docker save archive", EPOCH);
    // A wrong pin is refused, naming the base and both digests.
    repo.xtask(&["build", "--out", repo.path().join("target/x").to_str().unwrap()]).refused(&["base `saved` (linux/amd64)", &zero]);
    // `lock` records the digest of the assembled manifest (layers gzipped by the pinned writer).
    let run = repo.xtask(&["lock", "--json"]);
    run.ok();
    let changes = run.json()["changes"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 1, "{}", run.stdout);
    let pin = changes[0]["after"].as_str().unwrap().to_owned();
    repo.commit_all("lock the saved base", EPOCH);
    fs::remove_dir_all(&release).unwrap();
    repo.xtask(&["release"]).ok();
    assert_eq!(bases_of(&release, "authority"), [pin]);
    let records = base_records(&release, "saved");
    assert_eq!(records[0]["source"], "docker-archive");
    assert_eq!(records[0]["layers"][0]["mediaType"], oci::image::MEDIA_DOCKER_LAYER_TAR);
    assert!(records[0]["layers"][0]["gzipped"].is_string(), "{records:?}");
    assert_oci_layers(&release, "authority");
    // Same archive, same digests: twice in one run, and `lock` again changes nothing.
    repo.xtask(&["repro"]).ok();
    let run = repo.xtask(&["lock", "--json"]);
    run.ok();
    assert_eq!(run.json()["changes"].as_array().unwrap().len(), 0, "{}", run.stdout);
}
