//! Evidence: SBOMs checked by CycloneDX's own validator and protobuf definitions, our scan
//! against syft, the drift gate, provenance checked by the in-toto attestation library.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{digests, run_ok, verifier, Repo, EPOCH};

fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(dir).into_iter().filter(|p| p.to_string_lossy().ends_with(suffix)).collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A component with packages of four ecosystems on top of the Debian base: npm (node_modules
/// and package-lock.json), Rust crates (a Cargo.lock shipped in the image), Python (a
/// dist-info and a pinned requirements.txt).
fn add_fixture(repo: &Repo, npm_installed: &[(&str, &str)], npm_locked: &[(&str, &str)]) {
    let base = "components/fixture";
    for (name, version) in npm_installed {
        repo.write(
            &format!("{base}/app/node_modules/{name}/package.json"),
            &format!("{{\"name\": \"{name}\", \"version\": \"{version}\", \"license\": \"MIT\"}}\n"),
        );
    }
    let packages: Vec<String> =
        npm_locked.iter().map(|(n, v)| format!("\"node_modules/{n}\": {{\"version\": \"{v}\", \"license\": \"MIT\"}}")).collect();
    repo.write(
        &format!("{base}/app/package-lock.json"),
        &format!("{{\"name\": \"app\", \"lockfileVersion\": 3, \"packages\": {{\"\": {{\"name\": \"app\"}}, {}}}}}\n", packages.join(", ")),
    );
    repo.write(
        &format!("{base}/app/Cargo.lock"),
        "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [\"itoa\"]\n\n[[package]]\nname = \"itoa\"\nversion = \"1.0.11\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"49f1f14873335454500d59611f1cf4a4b0f786f9ac11f4312a78e4cf2566695b\"\n",
    );
    repo.write(
        &format!("{base}/py/requirements.txt"),
        "six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254\n",
    );
    repo.write(
        &format!("{base}/py/six-1.16.0.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\n\nSix is a Python 2 and 3 compatibility library.\n",
    );
    repo.write(&format!("{base}/py/six-1.16.0.dist-info/RECORD"), "six.py,,\n");
    repo.write(&format!("{base}/py/six.py"), "# six\n");
    let text = repo.read("release-trains/components.toml");
    repo.write(
        "release-trains/components.toml",
        &format!("{text}\n[[component]]\nname = \"fixture\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"busybox\"\nsource = {{ path = \"{base}\" }}\n\n[component.recipe]\nentrypoint = [\"/bin/sh\"]\n\n[[component.recipe.layer]]\nfrom = \"app\"\nto = \"/opt/app\"\n\n[[component.recipe.layer]]\nfrom = \"py\"\nto = \"/usr/lib/python3/dist-packages\"\n"),
    );
    repo.commit_all("fixture component", EPOCH);
}

#[test]
fn sboms_pass_cyclonedx_validation_and_both_encodings_agree() {
    let (Some(py), Some(scripts), Some(pb2json), Some(proto)) = (
        verifier("STELLAOPS_VERIFY_PYTHON"),
        verifier("STELLAOPS_VERIFY_SCRIPTS"),
        verifier("STELLAOPS_VERIFY_PB2JSON"),
        verifier("STELLAOPS_VERIFY_CDX_PROTO"),
    ) else {
        return;
    };
    let repo = Repo::new();
    add_fixture(&repo, &[("left-pad", "1.3.0")], &[("left-pad", "1.3.0")]);
    repo.xtask(&["release"]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let jsons = files_under(&dir.join("sboms"), ".cdx.json");
    assert_eq!(jsons.len(), 17, "{jsons:?}");
    // 1. CycloneDX's own validator (official 1.6 schema).
    let out = run_ok(Command::new(&py).arg(scripts.join("cdx_validate.py")).args(&jsons));
    assert!(out.contains("17 valid, 0 invalid"), "{out}");
    for j in &jsons {
        let text = fs::read(j).unwrap();
        let bom = pipeline::stages::evidence::sbom::Bom::from_json(&text).unwrap();
        // 2. What the validators do not check: the spec version and dangling references.
        assert_eq!(bom.spec_version, "1.6");
        assert!(bom.dangling_refs().is_empty(), "{}: {:?}", j.display(), bom.dangling_refs());
        // 3. The protobuf: protoc with CycloneDX's definitions, no unknown field.
        let pb = j.with_extension("").with_extension("cdx.pb");
        let decoded = run_ok(
            Command::new("protoc")
                .arg(format!("--proto_path={}", proto.display()))
                .args(["--decode=cyclonedx.v1_6.Bom", "bom-1.6.proto"])
                .stdin(fs::File::open(&pb).unwrap()),
        );
        let unknown: Vec<&str> = decoded.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).collect();
        assert!(unknown.is_empty(), "{}: unknown fields {unknown:?}", pb.display());
        assert!(decoded.contains("spec_version: \"1.6\""));
        // 4. Its JSON form, by CycloneDX's protobuf package, equals our JSON SBOM.
        let from_pb: serde_json::Value = serde_json::from_str(&run_ok(Command::new("node").arg(&pb2json).arg(&pb))).unwrap();
        let ours: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(from_pb, ours, "{}", pb.display());
        // 5. And our own round trip is exact.
        let back = pipeline::stages::evidence::sbom::proto::decode(&fs::read(&pb).unwrap()).unwrap();
        assert_eq!(back.to_json(), text, "{}", j.display());
    }
    // The fixture's SBOM declares what its layers carry, and what the build only read.
    let fixture = fs::read_to_string(dir.join("sboms/fixture/linux-amd64.cdx.json")).unwrap();
    for purl in ["pkg:npm/left-pad@1.3.0", "pkg:cargo/itoa@1.0.11", "pkg:pypi/six@1.16.0", "pkg:deb/debian/busybox-static@1%3A1.35.0"] {
        assert!(fixture.contains(purl), "{purl} missing");
    }
    assert!(fixture.contains("\"file:/opt/app/node_modules/left-pad/package.json\""));
}

#[test]
fn our_scan_agrees_with_syft_on_deb_rust_npm_and_python_packages() {
    let Some(syft) = verifier("STELLAOPS_VERIFY_SYFT") else {
        return;
    };
    let Some(skopeo) = crate::support::tool("skopeo") else {
        return;
    };
    let repo = Repo::new();
    add_fixture(&repo, &[("left-pad", "1.3.0"), ("@scope/util", "2.0.1")], &[("left-pad", "1.3.0"), ("@scope/util", "2.0.1")]);
    repo.xtask(&["release"]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    // syft reads a one-image layout: copy the fixture's image out.
    let one = repo.path().join("target/one");
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:fixture-linux-amd64", dir.join("images").display()))
            .arg(format!("oci:{}:img", one.display())),
    );
    let out = run_ok(
        Command::new(&syft)
            .arg(format!("oci-dir:{}", one.display()))
            .args(["-q", "-o", "json", "--select-catalogers", "+rust-cargo-lock-cataloger"])
            .env("SYFT_CHECK_FOR_APP_UPDATE", "false"),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let wanted = ["deb", "rust-crate", "npm", "python"];
    let theirs: BTreeSet<(String, String, String)> = v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["type"].as_str().unwrap().to_owned(), a["name"].as_str().unwrap().to_owned(), a["version"].as_str().unwrap().to_owned())
        })
        .filter(|(t, _, _)| wanted.contains(&t.as_str()))
        .collect();
    let scan: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("scans/fixture/linux-amd64.json")).unwrap()).unwrap();
    let ours: BTreeSet<(String, String, String)> = scan["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["kind"].as_str().unwrap().to_owned(), p["name"].as_str().unwrap().to_owned(), p["version"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(ours, theirs);
    for t in wanted {
        assert!(ours.iter().any(|(k, _, _)| k == t), "no {t} package in the fixture: {ours:?}");
    }
}

#[test]
fn drift_between_build_and_image_stops_the_release_unless_the_policy_accepts_it() {
    let repo = Repo::new();
    // The image carries `stowaway`, which no lock file declares, and lacks `ghost`, which one does.
    add_fixture(&repo, &[("left-pad", "1.3.0"), ("stowaway", "6.6.6")], &[("left-pad", "1.3.0"), ("ghost", "1.0.0")]);
    let run = repo.xtask(&["release"]);
    run.refused(&["drift", "added", "stowaway", "6.6.6", "removed", "ghost", "1.0.0", "REJECTED", "[[drift.accept]]"]);
    assert!(!repo.releases().join("2.4.1-edge").exists(), "a rejected release left its directory");
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.releases().join("2.4.1-edge.drift-rejected.json")).unwrap()).unwrap();
    let fixture = report["images"].as_array().unwrap().iter().find(|i| i["component"] == "fixture").unwrap();
    let diffs: Vec<(String, String)> = fixture["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["change"].as_str().unwrap().to_owned(), d["name"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(diffs, [("added".to_owned(), "stowaway".to_owned()), ("removed".to_owned(), "ghost".to_owned())]);

    // Accepting one of the two is not enough.
    let policy = "\n[[drift.accept]]\nchange = \"added\"\ntype = \"npm\"\nname = \"stowaway\"\nversion = \"6.6.6\"\nreason = \"vendored by the UI team, tracked in STELLA-123\"\n";
    repo.write("release-trains/edge.toml", &(repo.read("release-trains/edge.toml") + policy));
    repo.commit_all("accept the stowaway", EPOCH);
    repo.xtask(&["release"]).refused(&["ghost", "1 difference"]);
    // Accepting both lets the release through, and the report records why.
    let policy = "\n[[drift.accept]]\nchange = \"removed\"\ntype = \"npm\"\nname = \"ghost\"\ncomponent = \"fixture\"\nreason = \"optional dependency, not installed on linux\"\n";
    repo.write("release-trains/edge.toml", &(repo.read("release-trains/edge.toml") + policy));
    repo.commit_all("accept the ghost", EPOCH);
    repo.xtask(&["release"]).ok();
    let drift = fs::read_to_string(repo.releases().join("2.4.1-edge/drift.json")).unwrap();
    assert!(
        drift.contains("vendored by the UI team, tracked in STELLA-123") && drift.contains("optional dependency, not installed on linux")
    );
}

#[test]
fn provenance_passes_in_toto_checks_and_names_subjects_bases_and_lock_files() {
    let (Some(py), Some(scripts)) = (verifier("STELLAOPS_VERIFY_PYTHON"), verifier("STELLAOPS_VERIFY_SCRIPTS")) else {
        return;
    };
    let repo = Repo::new();
    add_fixture(&repo, &[("left-pad", "1.3.0")], &[("left-pad", "1.3.0")]);
    repo.xtask(&["release"]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let statements = files_under(&dir.join("provenance"), ".intoto.json");
    assert_eq!(statements.len(), 17);
    let out = run_ok(Command::new(&py).arg(scripts.join("intoto_check.py")).args(&statements));
    assert!(out.contains("17 valid, 0 invalid"), "{out}");
    let refs = digests(&dir.join("images"));
    let images: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("images.json")).unwrap()).unwrap();
    for s in &statements {
        let v: serde_json::Value = serde_json::from_slice(&fs::read(s).unwrap()).unwrap();
        let component = s.parent().unwrap().file_name().unwrap().to_str().unwrap();
        let slug = s.file_name().unwrap().to_str().unwrap().trim_end_matches(".intoto.json");
        let subjects: Vec<String> =
            v["subject"].as_array().unwrap().iter().map(|x| format!("sha256:{}", x["digest"]["sha256"].as_str().unwrap())).collect();
        assert_eq!(subjects, [refs[&format!("{component}-{slug}")].clone(), refs[component].clone()], "{}", s.display());
        let deps = v["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
        let image = images["components"][component]["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["platform"].as_str().unwrap().replace('/', "-") == slug)
            .unwrap();
        assert!(deps.contains(image["base"].as_str().unwrap().trim_start_matches("sha256:")), "base digest missing in {}", s.display());
        for lf in image["lock_files"].as_array().unwrap() {
            assert!(deps.contains(lf["sha256"].as_str().unwrap()), "lock file {} missing in {}", lf["path"], s.display());
        }
        assert!(deps.contains(&repo.git(&["rev-parse", "HEAD"])));
    }
    let fixture = fs::read_to_string(dir.join("provenance/fixture/linux-amd64.intoto.json")).unwrap();
    assert!(
        fixture.contains("file:fixture/app/Cargo.lock")
            && fixture.contains("file:fixture/app/package-lock.json")
            && fixture.contains("file:fixture/py/requirements.txt")
    );
}

#[test]
fn a_malformed_lock_file_or_package_database_is_refused_with_file_and_line() {
    let repo = Repo::new();
    add_fixture(&repo, &[("left-pad", "1.3.0")], &[("left-pad", "1.3.0")]);
    repo.write("components/fixture/py/requirements.txt", "six==1.16.0\nrequests>=2\n");
    repo.commit_all("unpinned requirement", EPOCH);
    repo.xtask(&["release"]).refused(&["fixture py/requirements.txt", "line 2", "`requests>=2` is not pinned"]);
    repo.write("components/fixture/py/requirements.txt", "six==1.16.0\n");
    repo.write("components/fixture/app/Cargo.lock", "version = 3\n\n[[package]]\nname = \"app\"\nversion = 0.1\n");
    repo.commit_all("broken Cargo.lock", EPOCH);
    repo.xtask(&["release"]).refused(&["fixture app/Cargo.lock", "line 5"]);
    assert!(!repo.releases().join("2.4.1-edge").exists());
    // A package database in the image that cannot be read: the scan names it.
    repo.write("components/fixture/app/Cargo.lock", "version = 3\n");
    repo.write("components/fixture/app/node_modules/broken/package.json", "{\"name\": \"broken\",\n \"version\": }\n");
    repo.commit_all("broken package.json", EPOCH);
    repo.xtask(&["release"]).refused(&["/opt/app/node_modules/broken/package.json", "line 2"]);
}
