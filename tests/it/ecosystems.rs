//! Scan breadth: .NET (`*.deps.json`), Java archives (nested ones too) and Rust programs with
//! cargo-auditable data, each in a recipe layer of a daemonless component, released, scanned,
//! compared with syft (same (type, name, version) set, the documented differences aside) and
//! with the build-time SBOM (no drift: the lock files the layers carry declare them).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{cache, run_ok, tool, verifier, Repo, EPOCH};

type Set = BTreeSet<(String, String, String)>;

/// Debian's build of Apache Commons Lang 3 (a jar with `pom.properties` and an OSGi
/// manifest), fetched from the apt mirror once into the shared cache, unpacked into `dir`.
fn commons_lang3(dir: &Path) -> Option<PathBuf> {
    let (apt, dpkg) = (tool("apt-get")?, tool("dpkg-deb")?);
    let debs = cache().join("it-debs");
    fs::create_dir_all(&debs).unwrap();
    let find = || {
        fs::read_dir(&debs).unwrap().flatten().map(|e| e.path()).find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("libcommons-lang3-java_") && p.extension().is_some_and(|x| x == "deb")
        })
    };
    let deb = match find() {
        Some(d) => d,
        None => {
            // Into a scratch directory first: another test may be fetching it too.
            let tmp = tempfile::tempdir_in(&debs).unwrap();
            run_ok(Command::new(apt).args(["download", "-q", "libcommons-lang3-java"]).current_dir(tmp.path()));
            let got = fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.path()).next().expect("apt-get download wrote nothing");
            let to = debs.join(got.file_name().unwrap());
            fs::rename(&got, &to).unwrap();
            to
        }
    };
    run_ok(Command::new(dpkg).arg("-x").arg(&deb).arg(dir));
    let jar = dir.join("usr/share/java/commons-lang3.jar");
    assert!(jar.is_file(), "no {} in {}", jar.display(), deb.display());
    Some(jar)
}

/// The JSON cargo-auditable embeds: the program's own crate, a runtime and a build dependency.
const AUDIT_JSON: &str = r#"{"packages":[{"name":"hello","version":"0.1.0","source":"local","dependencies":[1,2],"root":true},{"name":"itoa","version":"1.0.11","source":"crates.io"},{"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"}]}"#;

/// A Rust program (compiled here by rustc) with a `.dep-v0` section, added by objcopy as
/// cargo-auditable's linker step would: zlib-compressed JSON.
fn auditable_program(work: &Path, json: &str) -> Option<PathBuf> {
    let (rustc, objcopy) = (tool("rustc")?, tool("objcopy")?);
    fs::write(work.join("hello.rs"), "fn main() { println!(\"hello\"); }\n").unwrap();
    run_ok(Command::new(rustc).args(["-O", "-C", "strip=symbols", "-o"]).arg(work.join("hello.plain")).arg(work.join("hello.rs")));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(json.as_bytes()).unwrap();
    fs::write(work.join("dep-v0.zlib"), z.finish().unwrap()).unwrap();
    let out = work.join("hello");
    run_ok(
        Command::new(objcopy)
            .arg(format!("--add-section=.dep-v0={}", work.join("dep-v0.zlib").display()))
            .arg(work.join("hello.plain"))
            .arg(&out),
    );
    Some(out)
}

/// `App.deps.json` as `dotnet publish` writes it for a self-contained linux-x64 app.
const DEPS_JSON: &str = r#"{
  "runtimeTarget": {
    "name": ".NETCoreApp,Version=v8.0/linux-x64",
    "signature": ""
  },
  "compilationOptions": {},
  "targets": {
    ".NETCoreApp,Version=v8.0": {},
    ".NETCoreApp,Version=v8.0/linux-x64": {
      "App/1.0.0": {
        "dependencies": {
          "Newtonsoft.Json": "13.0.3",
          "Serilog": "3.1.1"
        },
        "runtime": {
          "App.dll": {}
        }
      },
      "Newtonsoft.Json/13.0.3": {
        "runtime": {
          "lib/net6.0/Newtonsoft.Json.dll": {
            "assemblyVersion": "13.0.0.0",
            "fileVersion": "13.0.3.27908"
          }
        }
      },
      "Serilog/3.1.1": {
        "runtime": {
          "lib/net7.0/Serilog.dll": {
            "assemblyVersion": "2.0.0.0",
            "fileVersion": "3.1.1.0"
          }
        }
      }
    }
  },
  "libraries": {
    "App/1.0.0": {
      "type": "project",
      "serviceable": false,
      "sha512": ""
    },
    "Newtonsoft.Json/13.0.3": {
      "type": "package",
      "serviceable": true,
      "sha512": "sha512-HrC5BXdl00IP9zeV+0Z848QWPAoCr9P3bDEZguI+gkLcBKAOxix/tLEAAHC+UvDNPv4a2d18lOReHMOagPa+zQ==",
      "path": "newtonsoft.json/13.0.3",
      "hashPath": "newtonsoft.json.13.0.3.nupkg.sha512"
    },
    "Serilog/3.1.1": {
      "type": "package",
      "serviceable": true,
      "sha512": "sha512-P6G4/4Kt9bT635bhuwdXlJ2SCqqn2nhh4gqFqQueCOr9bK/e7W9ll/IoX1Ter948cV2Z/5+5v8pAfJYUISY03A==",
      "path": "serilog/3.1.1",
      "hashPath": "serilog.3.1.1.nupkg.sha512"
    }
  }
}
"#;

/// The restore's lock file, as `dotnet restore --use-lock-file` writes it (the publish's input).
const PACKAGES_LOCK: &str = r#"{
  "version": 1,
  "dependencies": {
    "net8.0": {
      "Newtonsoft.Json": {
        "type": "Direct",
        "requested": "[13.0.3, )",
        "resolved": "13.0.3",
        "contentHash": "HrC5BXdl00IP9zeV+0Z848QWPAoCr9P3bDEZguI+gkLcBKAOxix/tLEAAHC+UvDNPv4a2d18lOReHMOagPa+zQ=="
      },
      "Serilog": {
        "type": "Direct",
        "requested": "[3.1.1, )",
        "resolved": "3.1.1",
        "contentHash": "P6G4/4Kt9bT635bhuwdXlJ2SCqqn2nhh4gqFqQueCOr9bK/e7W9ll/IoX1Ter948cV2Z/5+5v8pAfJYUISY03A=="
      }
    },
    "net8.0/linux-x64": {}
  }
}
"#;

const GRADLE_LOCK: &str = "# This is a Gradle generated file for dependency locking.\n# Manual edits can break the build and are not advised.\n# This file is expected to be part of source control.\norg.apache.commons:commons-lang3:3.12.0=compileClasspath,runtimeClasspath\nempty=annotationProcessor\n";

const CARGO_LOCK: &str = "version = 3\n\n[[package]]\nname = \"cc\"\nversion = \"1.0.83\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n[[package]]\nname = \"hello\"\nversion = \"0.1.0\"\ndependencies = [\"cc\", \"itoa\"]\n\n[[package]]\nname = \"itoa\"\nversion = \"1.0.11\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n";

/// Adds component `ecosys`: a .NET app's deps.json, a jar and a war nesting it, a Rust program
/// with cargo-auditable data, each beside the lock file that declares its packages.
fn add_ecosystems(repo: &Repo) -> Option<()> {
    let work = tempfile::tempdir().unwrap();
    let jar = commons_lang3(&work.path().join("deb"))?;
    let program = auditable_program(work.path(), AUDIT_JSON)?;
    let base = repo.path().join("components/ecosys");
    // Java: the jar as Debian ships it, and a war (zipped by Python's zipfile) nesting it.
    fs::create_dir_all(base.join("java/lib")).unwrap();
    fs::copy(&jar, base.join("java/lib/commons-lang3.jar")).unwrap();
    let war = work.path().join("war");
    fs::create_dir_all(war.join("WEB-INF/lib")).unwrap();
    fs::copy(&jar, war.join("WEB-INF/lib/commons-lang3.jar")).unwrap();
    fs::write(war.join("index.html"), "<p>hello</p>\n").unwrap();
    run_ok(
        Command::new(tool("python3")?)
            .args(["-m", "zipfile", "-c"])
            .arg(base.join("java/web.war"))
            .args(["WEB-INF", "index.html"])
            .current_dir(&war),
    );
    fs::write(base.join("java/gradle.lockfile"), GRADLE_LOCK).unwrap();
    // .NET.
    fs::create_dir_all(base.join("dotnet")).unwrap();
    fs::write(base.join("dotnet/App.deps.json"), DEPS_JSON).unwrap();
    fs::write(base.join("dotnet/packages.lock.json"), PACKAGES_LOCK).unwrap();
    // Rust.
    fs::create_dir_all(base.join("rust")).unwrap();
    fs::copy(&program, base.join("rust/hello")).unwrap();
    fs::write(base.join("rust/Cargo.lock"), CARGO_LOCK).unwrap();
    let text = repo.read("release-trains/components.toml");
    let mut c = format!("{text}\n[[component]]\nname = \"ecosys\"\nversion = \"2.4.1\"\nskew-group = \"scanner\"\nplatforms = [\"linux/amd64\"]\nbase = \"busybox\"\nsource = {{ path = \"components/ecosys\" }}\n\n[component.recipe]\nentrypoint = [\"/bin/sh\"]\n");
    for (from, to) in [("java", "/opt/java"), ("dotnet", "/opt/dotnet"), ("rust", "/opt/rust")] {
        c.push_str(&format!("\n[[component.recipe.layer]]\nfrom = \"{from}\"\nto = \"{to}\"\n"));
    }
    repo.write("release-trains/components.toml", &c);
    repo.commit_all("ecosys component", EPOCH);
    Some(())
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

const TYPES: [&str; 3] = ["dotnet", "java-archive", "rust-crate"];

#[test]
fn dotnet_java_and_cargo_auditable_packages_agree_with_syft_and_do_not_drift() {
    let (Some(syft), Some(skopeo)) = (verifier("STELLAOPS_VERIFY_SYFT"), tool("skopeo")) else {
        return;
    };
    let repo = Repo::new();
    if add_ecosystems(&repo).is_none() {
        return;
    }
    repo.xtask(&["release"]).ok();
    let dir = repo.releases().join("2.4.1-edge");

    // 1. What we found, and where.
    let scan = json(&dir.join("scans/ecosys/linux-amd64.json"));
    let found: Vec<(String, String, String, String)> = scan["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| TYPES.contains(&p["kind"].as_str().unwrap()))
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_owned();
            (s("kind"), s("name"), s("version"), s("location"))
        })
        .collect();
    let at =
        |location: &str| -> Set { found.iter().filter(|f| f.3 == location).map(|f| (f.0.clone(), f.1.clone(), f.2.clone())).collect() };
    let set = |items: &[(&str, &str, &str)]| -> Set {
        items.iter().map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned())).collect()
    };
    assert_eq!(
        at("/opt/dotnet/App.deps.json"),
        set(&[("dotnet", "Newtonsoft.Json", "13.0.3"), ("dotnet", "Serilog", "3.1.1")]),
        "{found:?}"
    );
    let lang = set(&[("java-archive", "org.apache.commons:commons-lang3", "3.12.0")]);
    assert_eq!(at("/opt/java/lib/commons-lang3.jar"), lang, "{found:?}");
    assert_eq!(at("/opt/java/web.war:WEB-INF/lib/commons-lang3.jar"), lang, "the nested jar: {found:?}");
    // The program's runtime crates (not the build dependency `cc`).
    assert_eq!(at("/opt/rust/hello"), set(&[("rust-crate", "hello", "0.1.0"), ("rust-crate", "itoa", "1.0.11")]), "{found:?}");

    // 2. The build declared them (the lock files beside them): no drift for this image.
    let drift = json(&dir.join("drift.json"));
    let report = drift["images"].as_array().unwrap().iter().find(|r| r["component"] == "ecosys").unwrap();
    assert_eq!(report["differences"].as_array().unwrap().len(), 0, "{report}");
    let sbom = fs::read_to_string(dir.join("sboms/ecosys/linux-amd64.cdx.json")).unwrap();
    for purl in ["pkg:nuget/Newtonsoft.Json@13.0.3", "pkg:maven/org.apache.commons/commons-lang3@3.12.0", "pkg:cargo/itoa@1.0.11"] {
        assert!(sbom.contains(&format!("\"purl\": \"{purl}\"")), "{purl} not in the build-time SBOM");
    }

    // 3. syft on the same image.
    let one = repo.path().join("target/one");
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:ecosys-linux-amd64", dir.join("images").display()))
            .arg(format!("oci:{}:img", one.display())),
    );
    let syft_json = |extra: &[&str]| -> serde_json::Value {
        let out = run_ok(
            Command::new(&syft)
                .arg(format!("oci-dir:{}", one.display()))
                .args(["-q", "-o", "json"])
                .args(extra)
                .env("SYFT_CHECK_FOR_APP_UPDATE", "false"),
        );
        serde_json::from_str(&out).unwrap()
    };
    let artifacts = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["artifacts"].as_array().unwrap().iter().filter(|a| TYPES.contains(&a["type"].as_str().unwrap())).cloned().collect()
    };
    let key = |a: &serde_json::Value| {
        (a["type"].as_str().unwrap().to_owned(), a["name"].as_str().unwrap().to_owned(), a["version"].as_str().unwrap().to_owned())
    };
    // syft reads Cargo.lock and `*.deps.json` in images only when asked (its catalogers of
    // "declared" packages run on directories by default).
    let theirs_all = artifacts(&syft_json(&["--select-catalogers", "+rust-cargo-lock-cataloger,+dotnet-deps-cataloger"]));
    let theirs: Set = theirs_all
        .iter()
        .map(key)
        // By design (README, "Scan"): the application's own project in a deps.json is the
        // component, not a package.
        .filter(|(t, n, v)| !(t == "dotnet" && n == "App" && v == "1.0.0"))
        .collect();
    // By design (README, "Scan"): Java packages are named `groupId:artifactId` when the group is
    // known; syft names them by the artifactId (and has the group in the purl, checked below).
    let ours: Set = found.iter().map(|(t, n, v, _)| (t.clone(), n.rsplit(':').next().unwrap().to_owned(), v.clone())).collect();
    assert_eq!(ours, theirs, "ours (left) and syft's (right)");
    assert!(
        theirs_all.iter().any(|a| a["type"] == "dotnet" && a["name"] == "App"),
        "syft lists the project: the documented difference is real"
    );
    for (t, n, v, _) in found.iter().filter(|f| f.0 == "java-archive") {
        let (g, a) = n.split_once(':').unwrap();
        let purl = format!("pkg:maven/{g}/{a}@{v}");
        assert!(theirs_all.iter().any(|x| x["type"] == t.as_str() && x["purl"] == purl.as_str()), "syft has no {purl}");
    }
    // The nested jar is found inside the war by both.
    assert!(theirs_all.iter().any(|a| a["metadata"]["virtualPath"] == "/opt/java/web.war:WEB-INF/lib/commons-lang3.jar"));
    // The program's crates alone (without Cargo.lock): syft's default catalogers read them too.
    let program: Set = artifacts(&syft_json(&[]))
        .iter()
        .filter(|a| a["locations"].as_array().unwrap().iter().any(|l| l["path"] == "/opt/rust/hello"))
        .map(key)
        .collect();
    assert_eq!(at("/opt/rust/hello"), program);
}

#[test]
fn malformed_deps_json_and_auditable_data_are_refused_with_file_and_line() {
    let repo = Repo::new();
    if add_ecosystems(&repo).is_none() {
        return;
    }
    let deps = "components/ecosys/dotnet/App.deps.json";
    let good = repo.read(deps);
    repo.write(
        deps,
        &good.replace(
            "\"type\": \"package\",\n      \"serviceable\": true,\n      \"sha512\": \"sha512-P6G4",
            "\"type\": package,\n      \"serviceable\": true,\n      \"sha512\": \"sha512-P6G4",
        ),
    );
    repo.commit_all("a broken deps.json", EPOCH);
    repo.xtask(&["release"]).refused(&["/opt/dotnet/App.deps.json", "line 51"]);
    repo.write(deps, &good);
    // A program whose section says a crate has no version.
    let work = tempfile::tempdir().unwrap();
    let Some(bad) = auditable_program(work.path(), r#"{"packages":[{"name":"hello","version":"0.1.0"},{"name":"itoa"}]}"#) else {
        return;
    };
    fs::copy(bad, repo.path().join("components/ecosys/rust/hello")).unwrap();
    repo.commit_all("a program with bad auditable data", EPOCH);
    repo.xtask(&["release"]).refused(&[
        "/opt/rust/hello (cargo-auditable `.dep-v0` section)",
        "line 1",
        "`packages[1]` has no `name` or no `version`",
    ]);
    assert!(!repo.releases().join("2.4.1-edge").exists());
}

#[test]
fn packages_no_carried_lock_file_declares_are_drift() {
    let repo = Repo::new();
    if add_ecosystems(&repo).is_none() {
        return;
    }
    for lock in ["java/gradle.lockfile", "dotnet/packages.lock.json", "rust/Cargo.lock"] {
        fs::remove_file(repo.path().join("components/ecosys").join(lock)).unwrap();
    }
    repo.commit_all("no lock files", EPOCH);
    let run = repo.xtask(&["release"]);
    run.refused(&["drift", "REJECTED"]);
    let report = json(&repo.releases().join("2.4.1-edge.drift-rejected.json"));
    let image = report["images"].as_array().unwrap().iter().find(|i| i["component"] == "ecosys").unwrap();
    let diffs: BTreeSet<(String, String, String)> = image["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (s("change"), s("type"), s("name"))
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("added", "dotnet", "Newtonsoft.Json"),
        ("added", "dotnet", "Serilog"),
        ("added", "java-archive", "org.apache.commons:commons-lang3"),
        ("added", "rust-crate", "hello"),
        ("added", "rust-crate", "itoa"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(diffs, want, "{image}");
}

#[test]
fn a_maven_advisory_on_a_jar_nested_in_a_war_stops_the_release() {
    let repo = Repo::new();
    if add_ecosystems(&repo).is_none() {
        return;
    }
    // Maven's order: 3.12.0 is before 3.12.1 (and after 3.12.0-RC1).
    repo.write(
        "release-trains/advisories.osv.json",
        r#"[{"id": "STELLA-TEST-MAVEN-1", "summary": "a test advisory",
  "affected": [{"package": {"ecosystem": "Maven", "name": "org.apache.commons:commons-lang3"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "3.12.0-RC1"}, {"fixed": "3.12.1"}]}]}]}]
"#,
    );
    repo.commit_all("an advisory on commons-lang3", EPOCH);
    repo.xtask(&["release"]).refused(&[
        "release gates failed",
        "STELLA-TEST-MAVEN-1",
        "`org.apache.commons:commons-lang3` 3.12.0",
        "/opt/java/web.war:WEB-INF/lib/commons-lang3.jar",
        "ecosys (linux/amd64)",
    ]);
}
