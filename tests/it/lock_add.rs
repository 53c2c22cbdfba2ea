//! `cargo xtask lock add`: a base pushed to a registry under a tag is added to
//! `base-images.lock` pinned by digest per platform (never by tag), a release stands on it,
//! and a name already locked or a platform the index lacks is refused.

use std::fs;
use std::process::Command;

use oci::{Layout, ANNOTATION_REF_NAME, MEDIA_INDEX, MEDIA_MANIFEST};
use schema::model::Digest;

use crate::bases::{bases_of, extract_base, point};
use crate::support::{tool, Repo, EPOCH};

#[test]
fn lock_add_pins_a_tagged_registry_base_by_digest_per_platform() {
    let Some(registry) = crate::support::registry() else {
        return;
    };
    let Some(skopeo) = tool("skopeo") else { return };
    let repo = Repo::new();
    repo.xtask(&["release"]).ok();
    let release = repo.releases().join("2.4.1-edge");
    let images = release.join("images");
    let ns = format!("{registry}/lock-add-{}", std::process::id());
    let copy = |from: String, to: &str| {
        crate::support::push(&skopeo, &from, to);
        let raw = Command::new(&skopeo).args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{to}")).output().unwrap();
        assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
        raw.stdout
    };

    // The signer's two-platform OCI index, pushed under a tag.
    let raw = copy(format!("oci:{}:signer", images.display()), &format!("{ns}/base:v1"));
    let top = Digest::of(&raw).to_string();
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let of = |arch: &str| {
        index["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == arch).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (amd, arm) = (of("amd64"), of("arm64"));

    let before = repo.read("base-images.lock");
    let run = repo.xtask(&["lock", "add", "other", "--from", &format!("docker://{ns}/base:v1"), "--json"]);
    run.ok();
    let v = run.json();
    assert_eq!(v["base"], "other");
    assert_eq!(v["reference"], format!("{ns}/base@{top}"));
    assert_eq!(v["pins"][0]["platform"], "linux/amd64");
    assert_eq!(v["pins"][0]["digest"], amd.as_str());
    assert_eq!(v["pins"][1]["platform"], "linux/arm64");
    assert_eq!(v["pins"][1]["digest"], arm.as_str());
    let after = repo.read("base-images.lock");
    let added = inserted(&before, &after);
    assert!(!added.contains(":v1"), "a tag was written:\n{added}");
    assert_eq!(added.matches(&format!("reference = \"{ns}/base@{top}\"")).count(), 2, "{added}");
    assert!(added.contains(&format!("digest = \"{amd}\"")) && added.contains(&format!("digest = \"{arm}\"")), "{added}");
    assert!(added.contains("source = \"registry\""), "{added}");

    // A release stands on it: `lock` re-verifies the pins unchanged, `release` pulls them.
    point(&repo, "authority", "other");
    repo.commit_all("authority on a base added by lock add", EPOCH);
    let lock = repo.xtask(&["lock", "--json"]);
    lock.ok();
    assert_eq!(lock.json()["changes"].as_array().unwrap().len(), 0, "{}", lock.stdout);
    repo.xtask(&["release"]).ok();
    assert_eq!(bases_of(&release, "authority"), [amd.clone(), arm.clone()]);

    // Refused, the lock untouched: a name already locked; a platform the index lacks; a digest
    // the registry does not have.
    let locked = repo.read("base-images.lock");
    repo.xtask(&["lock", "add", "other", "--from", &format!("docker://{ns}/base:v1")])
        .refused(&["base `other` is already", "cargo xtask lock"]);
    let only = repo.path().join("target/amd-only");
    extract_base(&images, &amd, &only, "amd64");
    let layout = Layout::open(&only).unwrap();
    let size = fs::metadata(layout.blob_path(&amd.parse().unwrap())).unwrap().len();
    let one = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [
        {"mediaType": MEDIA_MANIFEST, "digest": amd, "size": size, "platform": {"architecture": "amd64", "os": "linux"}}]});
    let mut desc = layout.put_blob(MEDIA_INDEX, &serde_json::to_vec(&one).unwrap()).unwrap();
    desc.annotations.insert(ANNOTATION_REF_NAME.into(), "only".into());
    let mut idx = layout.index().unwrap();
    idx.manifests.push(desc);
    layout.write_index(&idx).unwrap();
    copy(format!("oci:{}:only", only.display()), &format!("{ns}/amd-only:v1"));
    repo.xtask(&["lock", "add", "amd", "--from", &format!("docker://{ns}/amd-only:v1")]).refused(&["has no image for linux/arm64"]);
    // With `--platform linux/amd64` the same index is enough.
    let run = repo.xtask(&["lock", "add", "amd", "--from", &format!("docker://{ns}/amd-only:v1"), "--platform", "linux/amd64"]);
    run.ok();
    assert!(run.stdout.contains(&amd), "{}", run.stdout);
    let with_amd = repo.read("base-images.lock");
    assert!(!inserted(&locked, &with_amd).contains("linux/arm64"), "{with_amd}");
    let missing = format!("sha256:{}", "e".repeat(64));
    repo.xtask(&["lock", "add", "gone", "--from", &format!("docker://{ns}/base@{missing}")]).refused(&["does not resolve", &missing]);
    assert_eq!(repo.read("base-images.lock"), with_amd);

    // A local OCI layout inside the repository (`oci:DIR:REF`), stored by its relative path.
    let run = repo.xtask(&["lock", "add", "lay", "--from", &format!("oci:{}:only", only.display()), "--platform", "linux/amd64", "--json"]);
    run.ok();
    assert_eq!(run.json()["source"], "oci-layout");
    assert_eq!(run.json()["pins"][0]["digest"], amd.as_str());
    let with_lay = repo.read("base-images.lock");
    assert!(inserted(&with_amd, &with_lay).contains("layout = \"target/amd-only\""), "{with_lay}");
    // Not an image: the release's signature artifact.
    let sig = Layout::open(&images)
        .unwrap()
        .index()
        .unwrap()
        .manifests
        .iter()
        .find_map(|d| d.annotations.get(ANNOTATION_REF_NAME).filter(|n| n.ends_with(".sig")).cloned())
        .unwrap();
    repo.xtask(&["lock", "add", "sig", "--from", &format!("oci:{}:{sig}", images.display()), "--platform", "linux/amd64"])
        .refused(&["base `sig`", "cannot carry"]);
    assert_eq!(repo.read("base-images.lock"), with_lay);
}

/// What `lock add` inserted into the lock (one block, after the bases and before the
/// toolchains); the rest of the file must be unchanged.
fn inserted<'a>(before: &str, after: &'a str) -> &'a str {
    let head = before.bytes().zip(after.bytes()).take_while(|(x, y)| x == y).count();
    let tail = before[head..].bytes().rev().zip(after[head..].bytes().rev()).take_while(|(x, y)| x == y).count();
    assert_eq!(before.len(), head + tail, "the rest of the lock changed:\n{after}");
    &after[head..after.len() - tail]
}
