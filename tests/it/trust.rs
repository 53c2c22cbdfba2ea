//! Trust: keys, DSSE envelopes checked by securesystemslib and in-toto, image signatures by the
//! openssl recipe of VERIFIERS.md and by the sigstore crate's cosign verifier (from a registry),
//! release.yaml's shape and checksum by plain shell tools, and `verify` failing on each kind of
//! tampering, naming it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use crate::support::{run_ok, verifier, xtask_cmd, Repo, Run};

pub(crate) const PASS: &str = "correct horse battery staple";

/// `cargo xtask keys generate` into the repository's target directory.
pub(crate) fn keygen(repo: &Repo, name: &str, algorithm: &str) -> (PathBuf, PathBuf) {
    let key = repo.path().join(format!("target/{name}.key"));
    let out = xtask_cmd()
        .args(["keys", "generate", "--algorithm", algorithm, "--out"])
        .arg(&key)
        .env("STELLAOPS_KEY_PASSPHRASE", PASS)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (key.clone(), key.with_extension("pub"))
}

fn release_with(repo: &Repo, key: &Path, extra: &[&str]) -> Run {
    let mut cmd = xtask_cmd();
    cmd.args(["release", "--channel", "edge", "--key"])
        .arg(key)
        .args(extra)
        .arg("--source")
        .arg(repo.path())
        .env("STELLAOPS_KEY_PASSPHRASE", PASS);
    Run::of(cmd.output().unwrap())
}

fn verify(dir: &Path, public: &Path, extra: &[&str]) -> Run {
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(dir).arg("--key").arg(public).args(extra);
    Run::of(cmd.output().unwrap())
}

/// Exit 1 with every needle in the checklist (stdout) or the error (stderr).
#[track_caller]
fn rejected(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 1, "expected exit 1\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    for n in needles {
        assert!(all.contains(n), "output lacks `{n}`:\n{all}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    fs::write(path, b).unwrap();
}

#[test]
fn keys_are_encrypted_0600_and_never_printed() {
    let repo = Repo::new();
    let (key, public) = keygen(&repo, "release", "ecdsa-p256");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let pem = fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    // openssl reads it with the passphrase, and derives the same public key.
    let der = run_ok(Command::new("openssl").args(["pkey", "-pubout", "-passin", &format!("pass:{PASS}"), "-in"]).arg(&key));
    assert_eq!(der.trim(), fs::read_to_string(&public).unwrap().trim());
    // A wrong passphrase is refused with the variable to set, and nothing secret is printed.
    let mut cmd = xtask_cmd();
    cmd.args(["release", "--key"]).arg(&key).arg("--source").arg(repo.path()).env("STELLAOPS_KEY_PASSPHRASE", "wrong");
    let run = Run::of(cmd.output().unwrap());
    run.refused(&["cannot decrypt", "STELLAOPS_KEY_PASSPHRASE"]);
    assert!(!run.stderr.contains("wrong") && !run.stderr.contains(PASS));
    // FIPS mode refuses Ed25519, for generation and for release.
    let out = xtask_cmd()
        .args(["keys", "generate", "--fips", "--algorithm", "ed25519", "--out"])
        .arg(repo.path().join("target/x.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FIPS mode allows ES256"));
    let (ed, _) = keygen(&repo, "ed", "ed25519");
    release_with(&repo, &ed, &["--fips"]).refused(&["FIPS mode allows ES256"]);
    assert!(!repo.releases().join("2.4.1-edge").exists());
}

#[test]
fn envelopes_and_image_signatures_verify_with_other_peoples_tools() {
    let (Some(py), Some(scripts)) = (verifier("STELLAOPS_VERIFY_PYTHON"), verifier("STELLAOPS_VERIFY_SCRIPTS")) else {
        return;
    };
    let repo = Repo::new();
    let (key, public) = keygen(&repo, "release", "ecdsa-p256");
    release_with(&repo, &key, &[]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    // 1. securesystemslib verifies every DSSE envelope; in-toto accepts every statement.
    let mut envelopes: Vec<PathBuf> = Vec::new();
    for c in fs::read_dir(dir.join("attest")).unwrap() {
        let p = c.unwrap().path();
        if p.is_dir() {
            envelopes.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            envelopes.push(p);
        }
    }
    assert_eq!(envelopes.len(), 50, "16 images x (SBOM JSON, SBOM protobuf, provenance) + drift + the gate record");
    let out = run_ok(Command::new(&py).arg(scripts.join("dsse_verify.py")).arg(&public).args(&envelopes));
    assert!(out.contains("50 verified, 0 failed"), "{out}");
    // 2. Image signatures, by the openssl recipe: the signature tag of each image, its
    //    simple-signing payload naming the digest, the signature over it.
    let index: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images/index.json")).unwrap()).unwrap();
    let refs: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        // Referrers (no ref name) are checked in tests/it/publish.rs.
        .filter_map(|d| {
            Some((d["annotations"]["org.opencontainers.image.ref.name"].as_str()?.to_owned(), d["digest"].as_str()?.to_owned()))
        })
        .collect();
    let blob = |d: &str| dir.join("images/blobs/sha256").join(d.trim_start_matches("sha256:"));
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (name, digest) in refs.iter().filter(|(n, _)| !n.ends_with(".sig")) {
        let tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
        let (_, sig_manifest) = refs.iter().find(|(n, _)| *n == tag).unwrap_or_else(|| panic!("{name}: no {tag}"));
        let m: serde_json::Value = serde_json::from_slice(&fs::read(blob(sig_manifest)).unwrap()).unwrap();
        let layer = &m["layers"][0];
        assert_eq!(layer["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
        let payload = blob(layer["digest"].as_str().unwrap());
        let p: serde_json::Value = serde_json::from_slice(&fs::read(&payload).unwrap()).unwrap();
        assert_eq!(p["critical"]["type"], "cosign container image signature");
        assert_eq!(p["critical"]["image"]["docker-manifest-digest"], digest.as_str());
        let sig = base64::engine::general_purpose::STANDARD
            .decode(layer["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap())
            .unwrap();
        let sig_file = tmp.path().join(format!("{checked}.sig"));
        fs::write(&sig_file, sig).unwrap();
        let out = run_ok(
            Command::new("openssl").args(["dgst", "-sha256", "-verify"]).arg(&public).arg("-signature").arg(&sig_file).arg(&payload),
        );
        assert!(out.contains("Verified OK"), "{name}: {out}");
        checked += 1;
    }
    assert_eq!(checked, 24, "8 indexes and 16 manifests");
    // 3. The release.yaml signature, by openssl too.
    let sig = base64::engine::general_purpose::STANDARD.decode(fs::read_to_string(dir.join("release.yaml.sig")).unwrap().trim()).unwrap();
    fs::write(tmp.path().join("r.sig"), sig).unwrap();
    let out = run_ok(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(tmp.path().join("r.sig"))
            .arg(dir.join("release.yaml")),
    );
    assert!(out.contains("Verified OK"));
}

/// `cosign verify --key` as the `sigstore` crate does it (tests/verifiers/cosign-rs): every
/// image of a fresh release, pushed with its signature artifacts into the loopback registry
/// (skopeo), has a signature the crate's cosign client fetches by the `sha256-<hex>.sig` tag and
/// verifies with only the public key. Another key, a missing signature, a tampered signature
/// and another image's (genuine) signature are each refused, naming the image.
#[test]
fn image_signatures_verify_with_the_sigstore_crate_from_a_registry() {
    let Some((_, registry)) = crate::support::services() else { return };
    let (Some(cosign_rs), Some(skopeo)) = (verifier("STELLAOPS_VERIFY_COSIGN_RS"), crate::support::tool("skopeo")) else {
        return;
    };
    let repo = Repo::new();
    let (key, public) = keygen(&repo, "release", "ecdsa-p256");
    let (_, other) = keygen(&repo, "other", "ecdsa-p256");
    release_with(&repo, &key, &[]).ok();
    let layout = repo.releases().join("2.4.1-edge/images");
    let refs = crate::support::digests(&layout);
    let blob = |layout: &Path, d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let sig_tag = |d: &str| format!("sha256-{}.sig", d.trim_start_matches("sha256:"));
    // skopeo copy, digests kept: `tag` of an OCI layout to `dest` (REPO:TAG) in the registry.
    let push = |from: &Path, tag: &str, dest: &str| {
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--all", "--preserve-digests", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:{tag}", from.display()))
                .arg(format!("docker://{registry}/{dest}")),
        );
    };
    // A component's index digest and its per-platform manifest digests.
    let images = |component: &str| -> Vec<String> {
        let index: serde_json::Value = serde_json::from_slice(&fs::read(blob(&layout, &refs[component])).unwrap()).unwrap();
        let mut all = vec![refs[component].clone()];
        all.extend(index["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_owned()));
        all
    };
    let cosign_verify = |public: &Path, images: &[String]| -> Run {
        Run::of(Command::new(&cosign_rs).arg("--key").arg(public).arg("--allow-http-registry").args(images).output().unwrap())
    };

    // 1. Every image and its signature, pushed as a publisher would; all 24 verify.
    let components: Vec<&String> = refs.keys().filter(|n| !n.contains("-linux-")).collect();
    assert_eq!(components.len(), 8);
    let mut pushed = Vec::new();
    for c in &components {
        let repository = format!("stellaops-cosign-rs/{c}");
        push(&layout, c, &format!("{repository}:edge"));
        for d in images(c) {
            push(&layout, &sig_tag(&d), &format!("{repository}:{}", sig_tag(&d)));
            pushed.push(format!("{registry}/{repository}@{d}"));
        }
    }
    assert_eq!(pushed.len(), 24, "8 indexes and 16 manifests");
    let run = cosign_verify(&public, &pushed);
    run.ok();
    assert!(run.stdout.contains("24 verified, 0 failed"), "{}", run.stdout);

    // 2. Another public key: every image refused.
    let run = cosign_verify(&other, &pushed);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("0 verified, 24 failed"), "{}", run.stdout);
    assert!(run.stderr.contains(&format!("FAILED {}: no signature of", pushed[0])), "{}", run.stderr);
    assert!(run.stderr.contains("verifies with the public key"), "{}", run.stderr);

    // 3. A signature removed: web-ui pushed without its index's signature.
    let web = images("web-ui");
    let by_digest = |repository: &str| -> Vec<String> { web.iter().map(|d| format!("{registry}/{repository}@{d}")).collect() };
    push(&layout, "web-ui", "stellaops-cosign-rs-unsigned/web-ui:edge");
    for d in &web[1..] {
        push(&layout, &sig_tag(d), &format!("stellaops-cosign-rs-unsigned/web-ui:{}", sig_tag(d)));
    }
    let unsigned = by_digest("stellaops-cosign-rs-unsigned/web-ui");
    let run = cosign_verify(&public, &unsigned);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("2 verified, 1 failed"), "{}", run.stdout);
    assert!(run.stderr.contains(&format!("FAILED {}: no signature: ", unsigned[0])), "{}", run.stderr);

    // 4. Tampered: the index's signature with one character of its base64 changed; the amd64
    //    manifest given, as its signature, the (genuine) signature of another image.
    let tiny = tempfile::tempdir().unwrap();
    // (the signature artifacts' names are left out of `digests`: look them up in index.json)
    let layout_index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let sig_manifest = layout_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == sig_tag(&web[0]).as_str())
        .and_then(|d| d["digest"].as_str())
        .expect("the index's signature artifact");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(blob(&layout, sig_manifest)).unwrap()).unwrap();
    let sig = m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap().to_owned();
    let changed = if &sig[20..21] == "A" { "B" } else { "A" };
    m["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] = format!("{}{changed}{}", &sig[..20], &sig[21..]).into();
    let bytes = serde_json::to_vec(&m).unwrap();
    use sha2::Digest as _;
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&bytes));
    fs::create_dir_all(tiny.path().join("blobs/sha256")).unwrap();
    fs::write(blob(tiny.path(), &digest), &bytes).unwrap();
    for part in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
        fs::copy(blob(&layout, part.as_str().unwrap()), blob(tiny.path(), part.as_str().unwrap())).unwrap();
    }
    fs::write(tiny.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "tampered"}}]});
    fs::write(tiny.path().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let tampered_repo = "stellaops-cosign-rs-tampered/web-ui";
    push(&layout, "web-ui", &format!("{tampered_repo}:edge"));
    push(tiny.path(), "tampered", &format!("{tampered_repo}:{}", sig_tag(&web[0])));
    push(&layout, &sig_tag(&refs["authority"]), &format!("{tampered_repo}:{}", sig_tag(&web[1])));
    push(&layout, &sig_tag(&web[2]), &format!("{tampered_repo}:{}", sig_tag(&web[2])));
    let tampered = by_digest(tampered_repo);
    let run = cosign_verify(&public, &tampered);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("1 verified, 2 failed"), "{}", run.stdout);
    assert!(run.stderr.contains(&format!("FAILED {}: no signature of", tampered[0])), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("FAILED {}: no signature: ", tampered[1])), "{}", run.stderr);
    assert!(run.stdout.contains(&format!("verified {}", tampered[2])), "{}", run.stdout);

    // 5. Usage: no key, exit 64.
    let out = Command::new(&cosign_rs).arg(&pushed[0]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn the_release_yaml_bundle_verifies_with_sigstore_js_offline() {
    let Some(script) = verifier("STELLAOPS_VERIFY_SIGSTORE") else {
        return;
    };
    let repo = Repo::new();
    let (key, public) = keygen(&repo, "release", "ecdsa-p256");
    let (_, other) = keygen(&repo, "other", "ecdsa-p256");
    release_with(&repo, &key, &[]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let bundle = dir.join("release.yaml.sigstore.json");
    let out = run_ok(Command::new("node").arg(&script).arg(&bundle).arg(dir.join("release.yaml")).arg(&public));
    assert!(out.contains("bundle verified"));
    // Another key, or another byte, and it refuses.
    let bad = Command::new("node").arg(&script).arg(&bundle).arg(dir.join("release.yaml")).arg(&other).output().unwrap();
    assert!(!bad.status.success());
    let tampered = repo.path().join("target/release.yaml");
    fs::copy(dir.join("release.yaml"), &tampered).unwrap();
    flip_byte(&tampered, 20);
    let bad = Command::new("node").arg(&script).arg(&bundle).arg(&tampered).arg(&public).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("signature verification failed"));
}

#[test]
fn release_yaml_has_exactly_the_shape_of_the_spec_and_its_checksum_recomputes() {
    let repo = Repo::new();
    let (key, _) = keygen(&repo, "release", "ecdsa-p256");
    release_with(&repo, &key, &[]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let text = fs::read_to_string(dir.join("release.yaml")).unwrap();
    // The documented recomputation, with plain shell tools.
    let out =
        run_ok(Command::new("sh").arg("-c").arg(format!("sed '/^checksums:/,$d' '{}' | sha256sum", dir.join("release.yaml").display())));
    let computed = out.split_whitespace().next().unwrap();
    assert!(text.contains(&format!("checksums:\n  sha256: \"{computed}\"\n")), "{text}");
    // Exactly the §6.1 keys, as a generic YAML value, and per component one more after them,
    // `platforms` (every platform's references; README "release.yaml").
    let v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let keys =
        |m: &serde_norway::Value| -> Vec<String> { m.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect() };
    // One more top-level key after `compose`: `tools`, the customer tool (README "release.yaml").
    assert_eq!(keys(&v), ["release", "components", "charts", "compose", "tools", "checksums"]);
    let tools = v["tools"].as_sequence().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(keys(&tools[0]), ["name", "platform", "file", "digest", "signature", "sbom", "provenance"]);
    assert_eq!(tools[0]["file"].as_str(), Some("tools/stellaops"));
    assert_eq!(keys(&v["release"]), ["version", "channel", "date", "calendar"]);
    assert_eq!(v["release"]["version"].as_str(), Some("2.4.1"));
    assert_eq!(v["release"]["date"].as_str(), Some("2027-06-20T12:00:00Z"));
    assert_eq!(v["release"]["calendar"].as_str(), Some("2027.06"));
    let components = v["components"].as_sequence().unwrap();
    assert_eq!(components.len(), 8);
    for c in components {
        assert_eq!(keys(c), ["name", "image", "sbom", "provenance", "signature", "platforms"]);
        for p in c["platforms"].as_sequence().unwrap() {
            assert_eq!(keys(p), ["platform", "image", "sbom", "sbomProtobuf", "provenance"]);
        }
        assert!(c["image"].as_str().unwrap().contains("@sha256:"));
        assert_eq!(keys(&c["signature"]), ["rekorUUID"]);
    }
    assert_eq!(keys(&v["compose"]), ["file", "digest"]);
    // The compose file and the chart are the release's, by digest, and pin only its images.
    let compose = fs::read(dir.join("compose/docker-compose.yml")).unwrap();
    use sha2::Digest as _;
    assert_eq!(v["compose"]["digest"].as_str().unwrap(), format!("sha256:{:x}", sha2::Sha256::digest(&compose)));
    let released: Vec<&str> = components.iter().map(|c| c["image"].as_str().unwrap()).collect();
    let pinned: Vec<String> = String::from_utf8_lossy(&compose)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:").map(|i| i.trim().trim_matches('"').to_owned()))
        .collect();
    assert_eq!(pinned.len(), 8, "{pinned:?}");
    for i in &pinned {
        assert!(released.contains(&i.as_str()), "{i} is not an image of the release");
    }
    // Debian's docker-compose accepts the release's own compose file.
    if let Some(dc) = crate::support::tool("docker-compose") {
        let out = run_ok(
            Command::new(dc)
                .arg("-f")
                .arg(dir.join("compose/docker-compose.yml"))
                .arg("--env-file")
                .arg(dir.join("compose/.env.template"))
                .arg("config"),
        );
        for i in &pinned {
            assert!(out.contains(i.as_str()), "docker-compose config lost {i}");
        }
    }
    let chart = &v["charts"][0];
    assert_eq!(chart["name"].as_str(), Some("platform"));
    let tgz = fs::read(dir.join("charts/platform-2.4.1.tgz")).unwrap();
    assert_eq!(chart["digest"].as_str().unwrap(), format!("sha256:{:x}", sha2::Sha256::digest(&tgz)));
    assert_eq!(keys(&v["checksums"]), ["sha256"]);
}

#[test]
fn verify_passes_on_a_fresh_release_and_names_each_tampering() {
    let repo = Repo::new();
    let (key, public) = keygen(&repo, "release", "ecdsa-p256");
    let (_, other) = keygen(&repo, "other", "ecdsa-p256");
    let (ed_key, ed_public) = keygen(&repo, "ed", "ed25519");
    release_with(&repo, &key, &[]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let ok = verify(&dir, &public, &["--json"]);
    ok.ok();
    assert_eq!(ok.json()["verified"], true);
    let checks = ok.json()["checks"].as_array().unwrap().len();
    assert!(checks > 100, "{checks} checks");

    let scratch = tempfile::tempdir().unwrap();
    let case = |name: &str, tamper: &dyn Fn(&Path)| -> Run {
        let d = scratch.path().join(name);
        copy_dir(&dir, &d);
        tamper(&d);
        verify(&d, &public, &[])
    };
    // A byte of release.yaml.
    case("yaml", &|d| flip_byte(&d.join("release.yaml"), 40)).rejected_by(&["does not verify", "[FAIL] release.yaml signature"]);
    // A byte of a layer.
    let layer = crate::support::last_layer(&dir, "authority");
    let run = case("layer", &|d| flip_byte(&d.join("images/blobs/sha256").join(&layer), 100));
    run.rejected_by(&["[FAIL] authority linux/amd64", "blobs match their digests", &layer[..12]]);
    // A byte of an SBOM.
    case("sbom", &|d| flip_byte(&d.join("sboms/authority/linux-amd64.cdx.json"), 30))
        .rejected_by(&["[FAIL] authority linux/amd64: SBOM signed and about this image", "is not the signed document"]);
    // One image's SBOM swapped for another's.
    let run = case("swap", &|d| {
        fs::rename(d.join("sboms/signer/linux-amd64.cdx.json"), d.join("tmp.json")).unwrap();
        fs::copy(d.join("sboms/authority/linux-amd64.cdx.json"), d.join("sboms/signer/linux-amd64.cdx.json")).unwrap();
        fs::rename(d.join("tmp.json"), d.join("sboms/authority/linux-amd64.cdx.json")).unwrap();
    });
    run.rejected_by(&["[FAIL] authority linux/amd64: SBOM signed", "[FAIL] signer linux/amd64: SBOM signed"]);
    // A byte of the compose file.
    case("compose", &|d| flip_byte(&d.join("compose/docker-compose.yml"), 10)).rejected_by(&["[FAIL] compose file docker-compose.yml"]);
    // A signature removed: release.yaml's, and an image's.
    case("nosig", &|d| fs::remove_file(d.join("release.yaml.sig")).unwrap()).rejected_by(&["release.yaml.sig is missing"]);
    let run = case("noimagesig", &|d| {
        let p = d.join("images/index.json");
        let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        let digest = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "web-ui")
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_owned();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != format!("sha256-{digest}.sig").as_str());
        fs::write(&p, serde_json::to_vec(&index).unwrap()).unwrap();
    });
    run.rejected_by(&["[FAIL] web-ui: index signature", "no signature"]);
    // Another public key: everything signed fails, each named.
    let run = verify(&dir, &other, &[]);
    run.rejected_by(&["[FAIL] release.yaml signature", "[FAIL] drift report signed", "[FAIL] concelier linux/arm64: image signature"]);
    // Ed25519 in FIPS mode: a release signed with Ed25519 verifies, but not under --fips.
    let ed_dir = repo.path().join("target/ed");
    release_with(&repo, &ed_key, &["--out", ed_dir.to_str().unwrap()]).ok();
    verify(&ed_dir, &ed_public, &[]).ok();
    verify(&ed_dir, &ed_public, &["--fips"]).rejected_by(&["FIPS mode allows ES256"]);
}

/// Issue 14: release.yaml names every platform's SBOMs (JSON and protobuf) and provenance, by
/// digest, and `verify` fails naming the file when the arm64 SBOM or the protobuf SBOM of any
/// image is altered, in a release directory and in a kit packed from it.
#[test]
fn verify_names_an_altered_arm64_sbom_or_protobuf_sbom_in_a_directory_and_a_kit() {
    let repo = Repo::new();
    repo.xtask(&["release", "--channel", "edge"]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let public = repo.path().join("target/keys/dev.pub");
    verify(&dir, &public, &[]).ok();

    // Every platform listed, each digest the file's (hashed here, not by the verifier).
    use sha2::Digest as _;
    let sha = |p: &Path| format!("sha256:{:x}", sha2::Sha256::digest(fs::read(p).unwrap()));
    let v: serde_norway::Value = serde_norway::from_slice(&fs::read(dir.join("release.yaml")).unwrap()).unwrap();
    let components = v["components"].as_sequence().unwrap();
    assert_eq!(components.len(), 8);
    for c in components {
        let name = c["name"].as_str().unwrap();
        let platforms = c["platforms"].as_sequence().unwrap();
        let listed: Vec<&str> = platforms.iter().map(|p| p["platform"].as_str().unwrap()).collect();
        assert_eq!(listed, ["linux/amd64", "linux/arm64"], "{name}");
        // §6.1's `sbom` and `provenance` stay, naming the linux/amd64 ones.
        assert_eq!(c["sbom"], platforms[0]["sbom"], "{name}");
        assert_eq!(c["provenance"], platforms[0]["provenance"], "{name}");
        for p in platforms {
            let slug = p["platform"].as_str().unwrap().replace('/', "-");
            let stated = |k: &str| p[k].as_str().unwrap().rsplit_once('@').unwrap().1.to_owned();
            assert_eq!(stated("sbom"), sha(&dir.join(format!("sboms/{name}/{slug}.cdx.json"))), "{name} {slug}");
            assert_eq!(stated("sbomProtobuf"), sha(&dir.join(format!("sboms/{name}/{slug}.cdx.pb"))), "{name} {slug}");
            assert_eq!(stated("provenance"), sha(&dir.join(format!("attest/{name}/{slug}.provenance.dsse.json"))), "{name} {slug}");
            assert!(p["sbomProtobuf"]
                .as_str()
                .unwrap()
                .starts_with(&format!("oci://registry.stella-ops.org/stellaops/{name}/referrers/cdx-protobuf@")));
            assert!(p["image"].as_str().unwrap().contains("@sha256:"));
            // The protobuf SBOM's envelope names it by digest, about this image.
            let env: serde_json::Value =
                serde_json::from_slice(&fs::read(dir.join(format!("attest/{name}/{slug}.sbom-protobuf.dsse.json"))).unwrap()).unwrap();
            let st: serde_json::Value =
                serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(env["payload"].as_str().unwrap()).unwrap())
                    .unwrap();
            assert_eq!(format!("sha256:{}", st["predicate"]["digest"]["sha256"].as_str().unwrap()), stated("sbomProtobuf"));
            assert_eq!(
                format!(
                    "{}@sha256:{}",
                    c["image"].as_str().unwrap().split('@').next().unwrap(),
                    st["subject"][0]["digest"]["sha256"].as_str().unwrap()
                ),
                p["image"].as_str().unwrap()
            );
        }
    }

    let scratch = tempfile::tempdir().unwrap();
    let altered = |name: &str, file: &str| -> PathBuf {
        let d = scratch.path().join(name);
        copy_dir(&dir, &d);
        flip_byte(&d.join(file), 40);
        d
    };
    for (name, file, label) in [
        ("arm64-json", "sboms/signer/linux-arm64.cdx.json", "signer linux/arm64"),
        ("amd64-pb", "sboms/signer/linux-amd64.cdx.pb", "signer linux/amd64"),
        ("arm64-pb", "sboms/web-ui/linux-arm64.cdx.pb", "web-ui linux/arm64"),
    ] {
        let d = altered(name, file);
        let run = verify(&d, &public, &[]);
        rejected(&run, &[&format!("[FAIL] {label}"), "hashes to", "release.yaml states"]);
        // Only that image's checks fail, and a failure names the file.
        let failed: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("[FAIL]")).collect();
        assert!(failed.iter().all(|l| l.contains(label)), "{name}: {failed:#?}");
        assert!(failed.iter().any(|l| l.contains(&format!("{file}` hashes to"))), "{name}: {failed:#?}");
        // Packed into a kit (its inventory signed anew over the altered file), `verify KIT`
        // fails the same way.
        let kit = scratch.path().join(format!("{name}.tar.zst"));
        repo.xtask(&["kit", "build", d.to_str().unwrap(), "--out", kit.to_str().unwrap()]).ok();
        let run = verify(&kit, &public, &[]);
        rejected(&run, &["refused", label, "hashes to", "release.yaml states"]);
        let failed: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("  - ")).collect();
        assert!(failed.iter().all(|l| l.contains(label)), "{name} (kit): {failed:#?}");
        assert!(failed.iter().any(|l| l.contains(&format!("{file}` hashes to"))), "{name} (kit): {failed:#?}");
    }
    // A kit without `sboms/` (the channel's `[kit] sections`): its SBOMs are checked as the
    // referrer blobs of `images/`, and it verifies.
    repo.edit("release-trains/edge.toml", "\"sboms\", ", "");
    let lean = scratch.path().join("lean.tar.zst");
    repo.xtask(&["kit", "build", dir.to_str().unwrap(), "--out", lean.to_str().unwrap()]).ok();
    let listing = crate::support::run_ok(Command::new("sh").arg("-c").arg(format!("zstd -dc '{}' | tar -t", lean.display())));
    assert!(!listing.contains("sboms/") && listing.contains("attest/web-ui/linux-arm64.sbom-protobuf.dsse.json"), "{listing}");
    let run = verify(&lean, &public, &["--json"]);
    run.ok();
    let checks = run.json()["report"]["checks"]["checks"].as_array().unwrap().clone();
    let pb = checks
        .iter()
        .find(|c| c["what"].as_str().unwrap().starts_with("web-ui linux/arm64: SBOM protobuf"))
        .unwrap_or_else(|| panic!("{checks:#?}"));
    assert_eq!(pb["ok"], true, "{pb}");

    // The protobuf SBOM's envelope swapped for another image's (genuine, signed): refused.
    let d = scratch.path().join("pb-envelope");
    copy_dir(&dir, &d);
    fs::copy(
        d.join("attest/authority/linux-amd64.sbom-protobuf.dsse.json"),
        d.join("attest/authority/linux-arm64.sbom-protobuf.dsse.json"),
    )
    .unwrap();
    rejected(&verify(&d, &public, &[]), &["[FAIL] authority linux/arm64: SBOM protobuf", "not this image"]);
    // The arm64 entry removed from release.yaml (re-signing is not possible without the key,
    // so the signature fails too; the check of the entry itself is named).
    let d = scratch.path().join("no-arm64-entry");
    copy_dir(&dir, &d);
    let yaml = fs::read_to_string(d.join("release.yaml")).unwrap();
    let start = yaml.find("      - platform: \"linux/arm64\"").unwrap();
    let end = start + yaml[start..].find("provenance: ").unwrap();
    let end = end + yaml[end..].find('\n').unwrap() + 1;
    fs::write(d.join("release.yaml"), format!("{}{}", &yaml[..start], &yaml[end..])).unwrap();
    rejected(&verify(&d, &public, &[]), &["[FAIL] release.yaml signature", "`platforms` has no `linux/arm64` entry"]);
}

trait RejectedBy {
    fn rejected_by(&self, needles: &[&str]);
}
impl RejectedBy for Run {
    #[track_caller]
    fn rejected_by(&self, needles: &[&str]) {
        rejected(self, needles);
    }
}
