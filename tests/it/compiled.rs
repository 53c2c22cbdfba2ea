//! The compiled component of the default bundle: excititor is a Go program compiled offline by
//! the daemonless backend with the pinned toolchain of base-images.lock, its modules vendored
//! from the toolchain's Debian packages and checked against go.sum.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::process::Command;

use crate::support::{run_ok, verifier, Repo, EPOCH};

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The file `path` of the last layer of excititor's image for `platform`.
fn program(release: &std::path::Path, platform: usize) -> Vec<u8> {
    let images = json(&release.join("images.json"));
    let layer =
        images["components"]["excititor"]["images"][platform]["layers"].as_array().unwrap().last().unwrap().as_str().unwrap().to_owned();
    let blob = release.join("images/blobs/sha256").join(layer.trim_start_matches("sha256:"));
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(fs::File::open(blob).unwrap()));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().trim_start_matches("./") == "usr/bin/stellaops-excititor" {
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            return b;
        }
    }
    panic!("no /usr/bin/stellaops-excititor in the last layer of excititor");
}

#[test]
fn the_default_release_compiles_excititor_from_go_and_its_evidence_names_the_vendored_modules() {
    let repo = Repo::new();
    repo.xtask(&["release", "--channel", "edge"]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let wanted: BTreeSet<String> =
        ["pkg:golang/github.com/google/uuid@v1.3.0", "pkg:golang/github.com/pkg/errors@v0.9.1", "pkg:golang/stdlib@go1.19.8"]
            .map(String::from)
            .into();
    for (i, (platform, machine)) in [("linux-amd64", 0x3e_u16), ("linux-arm64", 0xb7)].into_iter().enumerate() {
        // The build-time SBOM: the modules go.sum pins, as linked into the program (in the image).
        let sbom = json(&dir.join(format!("sboms/excititor/{platform}.cdx.json")));
        let golang: BTreeSet<String> = sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["purl"].as_str().is_some_and(|p| p.starts_with("pkg:golang/")))
            .inspect(|c| {
                let evidence = c["properties"].as_array().unwrap().iter().find(|p| p["name"] == "stellaops:evidence").unwrap();
                assert_eq!(evidence["value"], "image", "{c}");
            })
            .map(|c| c["purl"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(golang, wanted, "{platform}");
        // The scan found the same in the program's build information; no drift.
        let scan = json(&dir.join(format!("scans/excititor/{platform}.json")));
        let found: BTreeSet<(String, String)> = scan["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == "go-module")
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p["version"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        let drift = json(&dir.join("drift.json"));
        let report = drift["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["component"] == "excititor" && r["platform"] == platform.replace('-', "/"))
            .unwrap();
        assert_eq!(report["declared_packages"], 4, "busybox-static and the three Go packages: {report}");
        assert_eq!(report["found_packages"], 4, "{report}");
        assert_eq!(report["differences"].as_array().unwrap().len(), 0, "{report}");
        // The provenance names the toolchain's packages and how it compiled.
        let prov = json(&dir.join(format!("provenance/excititor/{platform}.intoto.json")));
        let def = &prov["predicate"]["buildDefinition"];
        let deps: Vec<&str> = def["resolvedDependencies"].as_array().unwrap().iter().filter_map(|d| d["uri"].as_str()).collect();
        assert!(deps.iter().any(|u| u.starts_with("pkg:deb/debian/golang-1.19-go@1.19.8-2?arch=amd64")), "{deps:?}");
        assert!(deps.iter().any(|u| u.starts_with("pkg:deb/debian/golang-github-google-uuid-dev@")), "{deps:?}");
        let go = &def["internalParameters"]["go"];
        assert_eq!(go["goarch"], platform.trim_start_matches("linux-"));
        assert_eq!(go["vendor"], "toolchain");
        // A real program for the platform: ELF, of the platform's machine.
        let bin = program(&dir, i);
        assert_eq!(&bin[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([bin[18], bin[19]]), machine, "{platform}: e_machine");
        if platform == "linux-amd64" {
            // It runs here, and says which modules it was linked with.
            let exe = repo.path().join("target/stellaops-excititor");
            fs::write(&exe, &bin).unwrap();
            fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            let out = run_ok(Command::new(&exe).arg("modules"));
            assert_eq!(out, "go1.19.8\ngithub.com/google/uuid v1.3.0\ngithub.com/pkg/errors v0.9.1\n");
            let out = run_ok(
                Command::new(&exe)
                    .arg("version")
                    .env("STELLAOPS_COMPONENT", "excititor")
                    .env("STELLAOPS_VERSION", "2.4.0")
                    .env("STELLAOPS_CHANNEL", "edge"),
            );
            assert!(out.starts_with("excititor 2.4.0 channel=edge"), "{out}");
        }
    }

    // syft, on the same image, finds the same Go modules.
    let (Some(syft), Some(skopeo)) = (verifier("STELLAOPS_VERIFY_SYFT"), crate::support::tool("skopeo")) else {
        return;
    };
    let one = repo.path().join("target/one");
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:excititor-linux-amd64", dir.join("images").display()))
            .arg(format!("oci:{}:img", one.display())),
    );
    let out = run_ok(
        Command::new(&syft).arg(format!("oci-dir:{}", one.display())).args(["-q", "-o", "json"]).env("SYFT_CHECK_FOR_APP_UPDATE", "false"),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let theirs: BTreeSet<String> = v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["purl"].as_str())
        .filter(|p| p.starts_with("pkg:golang/"))
        .map(String::from)
        .collect();
    let ours: BTreeSet<String> = wanted.iter().filter(|p| !p.contains("/stdlib@")).cloned().collect();
    assert!(ours.is_subset(&theirs), "syft found {theirs:?}");
}

#[test]
fn a_module_tree_unlike_go_sum_an_unsupported_go_mod_and_a_vulnerable_module_are_refused() {
    let repo = Repo::new();
    // go.sum pins another tree for uuid: refused naming go.sum, the module and both hashes.
    let sum = repo.read("components/excititor/go.sum");
    repo.write("components/excititor/go.sum", &sum.replacen("h1:2Ajak", "h1:3Ajak", 1));
    repo.commit_all("a go.sum that does not match the package", EPOCH);
    let r = repo.xtask(&["release", "--channel", "edge"]);
    r.refused(&[
        "component `excititor`",
        "components/excititor/go.sum",
        "`github.com/google/uuid` v1.3.0",
        "go.sum pins `h1:3Ajak",
        "hint:",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!repo.releases().join("2.4.1-edge").exists());
    repo.write("components/excititor/go.sum", &sum);

    // A `replace` would build something go.sum does not pin: refused with its line.
    let gomod = repo.read("components/excititor/go.mod");
    repo.write("components/excititor/go.mod", &format!("{gomod}\nreplace github.com/pkg/errors => ../errors\n"));
    repo.commit_all("replace", EPOCH);
    let r = repo.xtask(&["release", "--channel", "edge"]);
    r.refused(&["components/excititor/go.mod`: line 10", "`replace` is not supported"]);
    assert_eq!(r.code, 1);
    repo.write("components/excititor/go.mod", &gomod);

    // A module version the toolchain's package does not carry.
    repo.edit("components/excititor/go.mod", "github.com/pkg/errors v0.9.1", "github.com/pkg/errors v0.9.2");
    repo.commit_all("a version no package carries", EPOCH);
    repo.xtask(&["release", "--channel", "edge"]).refused(&["`github.com/pkg/errors` v0.9.2 is required", "carries v0.9.1"]);
    repo.edit("components/excititor/go.mod", "github.com/pkg/errors v0.9.2", "github.com/pkg/errors v0.9.1");

    // The dependency audit reads go.sum: an advisory on a module it pins stops the release.
    repo.write(
        "release-trains/advisories.osv.json",
        r#"[{"id": "STELLA-TEST-GO-1", "summary": "a test advisory",
  "affected": [{"package": {"ecosystem": "Go", "name": "github.com/pkg/errors"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.9.2"}]}]}]}]
"#,
    );
    repo.commit_all("an advisory on a Go module", EPOCH);
    repo.xtask(&["release", "--channel", "edge"]).refused(&[
        "release gates failed",
        "`github.com/pkg/errors` v0.9.1",
        "STELLA-TEST-GO-1",
        "excititor",
    ]);
}
