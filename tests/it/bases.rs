//! Base sources other than Debian packages: a local OCI layout and a registry by digest; and
//! component sources from a git repository at a pinned commit.

use std::fs;
use std::path::Path;
use std::process::Command;

use oci::{Index, Layout, ANNOTATION_REF_NAME, MEDIA_INDEX};
use schema::model::Digest;

use crate::support::{run_ok, tool, Repo, EPOCH};

/// The base digests (amd64, arm64) that a release of `repo` used for `component`.
fn bases_of(release: &Path, component: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(release.join("images.json")).unwrap()).unwrap();
    v["components"][component]["images"].as_array().unwrap().iter().map(|i| i["base"].as_str().unwrap().to_owned()).collect()
}

/// Copies the base image `digest` (manifest, config, layers) from a release layout into a new
/// layout at `dest`, named `name`.
fn extract_base(from: &Path, digest: &str, dest: &Path, name: &str) {
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
    let Ok(registry) = std::env::var("STELLAOPS_TEST_REGISTRY") else {
        assert!(std::env::var_os("CI").is_none(), "STELLAOPS_TEST_REGISTRY is not set: run tests/run.sh");
        eprintln!("SKIPPED (not a pass): STELLAOPS_TEST_REGISTRY is not set");
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
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
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
