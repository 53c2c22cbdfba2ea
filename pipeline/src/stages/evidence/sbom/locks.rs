//! Lock files, read for the build-time SBOM: Cargo.lock, package-lock.json (v2/v3), go.sum,
//! .NET packages.lock.json, Gradle's gradle.lockfile and pinned requirements.txt. A malformed
//! file is refused with its path and line.
//!
//! Names are those the scan finds in images, so that the drift gate compares like with like:
//! NuGet ids as packages.lock.json and `*.deps.json` both spell them; Java packages as
//! `groupId:artifactId` (the scan's name when an archive's pom.properties gives the group).

use serde::Serialize;

/// The package ecosystems, named as syft names its package types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ecosystem {
    Deb,
    RustCrate,
    Npm,
    GoModule,
    Dotnet,
    Python,
    JavaArchive,
}

impl Ecosystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::RustCrate => "rust-crate",
            Ecosystem::Npm => "npm",
            Ecosystem::GoModule => "go-module",
            Ecosystem::Dotnet => "dotnet",
            Ecosystem::Python => "python",
            Ecosystem::JavaArchive => "java-archive",
        }
    }

    pub fn parse(s: &str) -> Option<Ecosystem> {
        [
            Ecosystem::Deb,
            Ecosystem::RustCrate,
            Ecosystem::Npm,
            Ecosystem::GoModule,
            Ecosystem::Dotnet,
            Ecosystem::Python,
            Ecosystem::JavaArchive,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }

    /// The purl of a package of this ecosystem (`distro` for Debian, e.g. `debian-12`).
    pub fn purl(self, name: &str, version: &str, arch: Option<&str>, distro: Option<&str>) -> String {
        use super::purl_encode as e;
        match self {
            Ecosystem::Deb => {
                let mut q = Vec::new();
                if let Some(a) = arch {
                    q.push(format!("arch={}", e(a)));
                }
                if let Some(d) = distro {
                    q.push(format!("distro={}", e(d)));
                }
                let q = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
                format!("pkg:deb/debian/{}@{}{q}", e(name), e(version))
            }
            Ecosystem::RustCrate => format!("pkg:cargo/{}@{}", e(name), e(version)),
            Ecosystem::Npm => match name.strip_prefix('@').and_then(|n| n.split_once('/')) {
                Some((scope, n)) => format!("pkg:npm/%40{}/{}@{}", e(scope), e(n), e(version)),
                None => format!("pkg:npm/{}@{}", e(name), e(version)),
            },
            Ecosystem::GoModule => {
                let path: Vec<String> = name.split('/').map(e).collect();
                format!("pkg:golang/{}@{}", path.join("/"), e(version))
            }
            Ecosystem::Dotnet => format!("pkg:nuget/{}@{}", e(name), e(version)),
            Ecosystem::Python => format!("pkg:pypi/{}@{}", e(&python_name(name)), e(version)),
            // `groupId:artifactId`, or an artifact whose group is unknown.
            Ecosystem::JavaArchive => match name.split_once(':') {
                Some((group, artifact)) => format!("pkg:maven/{}/{}@{}", e(group), e(artifact), e(version)),
                None => format!("pkg:maven/{}@{}", e(name), e(version)),
            },
        }
    }
}

/// PEP 503 normalized name.
pub fn python_name(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct LockedPackage {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// (CycloneDX algorithm name, hex) when the lock file states a checksum.
    pub checksum: Option<(String, String)>,
    pub license: Option<String>,
    /// Names of the packages it depends on, as the lock file states them.
    pub depends: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("`{file}`: line {line}: {message}\n  hint: regenerate the lock file with its own tool; a hand-edited lock file cannot be trusted")]
pub struct LockFileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The lock file names this module reads.
pub const READ: &[&str] = &["Cargo.lock", "package-lock.json", "go.sum", "packages.lock.json", "gradle.lockfile", "requirements.txt"];

/// Parses the lock file `file` (a path, for messages; its name picks the format).
pub fn parse(file: &str, text: &str) -> Result<Vec<LockedPackage>, LockFileError> {
    // `file` may be a label, `<component> <path>`: the name is after the last `/` or space.
    let name = file.rsplit(['/', ' ']).next().unwrap_or(file);
    let err = |line: usize, message: String| LockFileError { file: file.to_owned(), line, message };
    let mut out = match name {
        "Cargo.lock" => cargo(text).map_err(|(l, m)| err(l, m))?,
        "package-lock.json" => npm(text).map_err(|(l, m)| err(l, m))?,
        "go.sum" => go_sum(text).map_err(|(l, m)| err(l, m))?,
        "packages.lock.json" => nuget(text).map_err(|(l, m)| err(l, m))?,
        "requirements.txt" => requirements(text).map_err(|(l, m)| err(l, m))?,
        "gradle.lockfile" => gradle(text).map_err(|(l, m)| err(l, m))?,
        _ => Vec::new(),
    };
    out.sort();
    out.dedup();
    Ok(out)
}

type Parsed = Result<Vec<LockedPackage>, (usize, String)>;

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn hex_of_base64(b64: &str) -> Option<String> {
    // Only for checksums stated in base64 (npm integrity, NuGet contentHash): a few lines of
    // standard-alphabet decoding, not worth a dependency.
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in b64.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(schema::model::hex(&out))
}

fn cargo(text: &str) -> Parsed {
    #[derive(serde::Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<Pkg>,
    }
    #[derive(serde::Deserialize)]
    struct Pkg {
        name: String,
        version: String,
        #[serde(default)]
        checksum: Option<String>,
        #[serde(default)]
        dependencies: Vec<String>,
    }
    let lock: Lock = toml::from_str(text).map_err(|e| (e.span().map(|s| line_at(text, s.start)).unwrap_or(1), e.message().to_owned()))?;
    lock.package
        .into_iter()
        .map(|p| {
            // Build metadata (`0.18.8+1.9.7`) is part of semantic versioning: the core is checked.
            let core = p.version.split('+').next().unwrap_or(&p.version);
            if core.parse::<schema::model::Version>().is_err() && !core.contains('-') {
                let at = text.find(&format!("name = \"{}\"", p.name)).unwrap_or(0);
                return Err((line_at(text, at), format!("package `{}` has version `{}`, not a semantic version", p.name, p.version)));
            }
            Ok(LockedPackage {
                ecosystem: Ecosystem::RustCrate,
                checksum: p.checksum.map(|c| ("SHA-256".to_owned(), c)),
                license: None,
                depends: p.dependencies.iter().map(|d| d.split_whitespace().next().unwrap_or(d).to_owned()).collect(),
                name: p.name,
                version: p.version,
            })
        })
        .collect()
}

fn json_line(e: &serde_json::Error) -> usize {
    e.line().max(1)
}

fn npm(text: &str) -> Parsed {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| (json_line(&e), e.to_string()))?;
    let Some(packages) = v.get("packages").and_then(|p| p.as_object()) else {
        return Err((1, "no `packages` object: lockfileVersion 2 or 3 is required (run `npm install` with npm 7 or later)".into()));
    };
    let mut out = Vec::new();
    for (key, p) in packages {
        let Some(idx) = key.rfind("node_modules/") else {
            continue;
        };
        if p.get("link").and_then(|l| l.as_bool()) == Some(true) {
            continue;
        }
        let name = &key[idx + "node_modules/".len()..];
        let Some(version) = p.get("version").and_then(|v| v.as_str()) else {
            let at = text.find(&format!("\"{key}\"")).unwrap_or(0);
            return Err((line_at(text, at), format!("`{key}` has no `version`")));
        };
        let checksum = p.get("integrity").and_then(|i| i.as_str()).and_then(|i| {
            let (alg, b64) = i.split_once('-')?;
            let alg = match alg {
                "sha512" => "SHA-512",
                "sha256" => "SHA-256",
                "sha1" => "SHA-1",
                _ => return None,
            };
            Some((alg.to_owned(), hex_of_base64(b64)?))
        });
        out.push(LockedPackage {
            ecosystem: Ecosystem::Npm,
            name: name.to_owned(),
            version: version.to_owned(),
            checksum,
            license: p.get("license").and_then(|l| l.as_str()).map(str::to_owned),
            depends: p.get("dependencies").and_then(|d| d.as_object()).map(|d| d.keys().cloned().collect()).unwrap_or_default(),
        });
    }
    Ok(out)
}

fn go_sum(text: &str) -> Parsed {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [module, version, hash] = parts[..] else {
            return Err((i + 1, format!("`{line}` is not `MODULE VERSION h1:HASH`")));
        };
        if !hash.starts_with("h1:") || !version.starts_with('v') {
            return Err((i + 1, format!("`{line}` is not `MODULE VERSION h1:HASH`")));
        }
        if version.ends_with("/go.mod") {
            continue;
        }
        out.push(LockedPackage {
            ecosystem: Ecosystem::GoModule,
            name: module.to_owned(),
            version: version.to_owned(),
            checksum: None,
            license: None,
            depends: Vec::new(),
        });
    }
    Ok(out)
}

fn nuget(text: &str) -> Parsed {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| (json_line(&e), e.to_string()))?;
    let Some(frameworks) = v.get("dependencies").and_then(|d| d.as_object()) else {
        return Err((1, "no `dependencies` object".into()));
    };
    let mut out = Vec::new();
    for deps in frameworks.values() {
        for (name, d) in deps.as_object().into_iter().flatten() {
            if d.get("type").and_then(|t| t.as_str()) == Some("Project") {
                continue;
            }
            let Some(version) = d.get("resolved").and_then(|r| r.as_str()) else {
                let at = text.find(&format!("\"{name}\"")).unwrap_or(0);
                return Err((line_at(text, at), format!("`{name}` has no `resolved` version")));
            };
            out.push(LockedPackage {
                ecosystem: Ecosystem::Dotnet,
                name: name.clone(),
                version: version.to_owned(),
                checksum: d.get("contentHash").and_then(|h| h.as_str()).and_then(hex_of_base64).map(|h| ("SHA-512".to_owned(), h)),
                license: None,
                depends: d.get("dependencies").and_then(|x| x.as_object()).map(|x| x.keys().cloned().collect()).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Gradle's dependency lock (`./gradlew dependencies --write-locks`): one
/// `group:artifact:version=configuration,...` line per module, `empty=...` for configurations
/// with none. Only modules of a runtime classpath ship in an archive: the others (compile-only,
/// annotation processors) are left out.
fn gradle(text: &str) -> Parsed {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("empty=") {
            continue;
        }
        let bad = || (i + 1, format!("`{line}` is not `GROUP:ARTIFACT:VERSION=CONFIGURATIONS`"));
        let (coordinate, configurations) = line.split_once('=').ok_or_else(bad)?;
        let parts: Vec<&str> = coordinate.split(':').collect();
        let [group, artifact, version] = parts[..] else {
            return Err(bad());
        };
        if group.is_empty() || artifact.is_empty() || version.is_empty() {
            return Err(bad());
        }
        if !configurations.split(',').any(|c| c.trim() == "runtimeClasspath" || c.trim().ends_with("RuntimeClasspath")) {
            continue;
        }
        out.push(LockedPackage {
            ecosystem: Ecosystem::JavaArchive,
            name: format!("{group}:{artifact}"),
            version: version.to_owned(),
            checksum: None,
            license: None,
            depends: Vec::new(),
        });
    }
    Ok(out)
}

fn requirements(text: &str) -> Parsed {
    let mut out = Vec::new();
    let joined = text.replace("\\\n", " ");
    for (i, line) in joined.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('-') {
            continue;
        }
        let mut words = line.split_whitespace();
        let spec = words.next().unwrap_or_default();
        let Some((name, version)) = spec.split_once("==") else {
            return Err((i + 1, format!("`{spec}` is not pinned: a lock file pins every package as `NAME==VERSION`")));
        };
        let name = name.split('[').next().unwrap_or(name);
        let checksum = words.find_map(|w| w.strip_prefix("--hash=sha256:")).map(|h| ("SHA-256".to_owned(), h.to_owned()));
        out.push(LockedPackage {
            ecosystem: Ecosystem::Python,
            name: python_name(name),
            version: version.trim_end_matches(';').to_owned(),
            checksum,
            license: None,
            depends: Vec::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_at_the_source_root_labelled_with_its_component_is_read() {
        let lock = "version = 3\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\n";
        assert_eq!(parse("authority Cargo.lock", lock).unwrap().len(), 1);
        assert_eq!(parse("authority sub/Cargo.lock", lock).unwrap().len(), 1);
    }

    #[test]
    fn cargo_lock_packages_and_a_malformed_one_by_line() {
        let ok = "version = 3\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nchecksum = \"ab\"\ndependencies = [\"b 0.2.0\"]\n\n[[package]]\nname = \"b\"\nversion = \"0.2.0\"\n";
        let p = parse("x/Cargo.lock", ok).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].depends, ["b"]);
        let bad = "version = 3\n\n[[package]]\nname = \"a\"\nversion = 1\n";
        let e = parse("x/Cargo.lock", bad).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.to_string().contains("`x/Cargo.lock`: line 5"));
        // Build metadata is semantic versioning (libgit2-sys `0.18.8+1.9.7`, this workspace's own).
        let meta = "version = 3\n\n[[package]]\nname = \"libgit2-sys\"\nversion = \"0.18.8+1.9.7\"\n";
        assert_eq!(parse("Cargo.lock", meta).unwrap()[0].version, "0.18.8+1.9.7");
        let bad = "version = 3\n\n[[package]]\nname = \"a\"\nversion = \"1.0+x\"\n";
        assert_eq!(parse("Cargo.lock", bad).unwrap_err().line, 4);
    }

    #[test]
    fn gradle_lockfile_runtime_modules_and_a_malformed_line() {
        let lock = "# This is a Gradle generated file for dependency locking.\n# Manual edits can break the build and are not advised.\n# This file is expected to be part of source control.\norg.apache.commons:commons-lang3:3.12.0=compileClasspath,runtimeClasspath\norg.projectlombok:lombok:1.18.30=annotationProcessor,compileClasspath\ncom.example:x:1.0=testRuntimeClasspath\nempty=\n";
        let p = parse("app/gradle.lockfile", lock).unwrap();
        let got: Vec<(&str, &str)> = p.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(got, [("com.example:x", "1.0"), ("org.apache.commons:commons-lang3", "3.12.0")]);
        assert_eq!(Ecosystem::JavaArchive.purl(&p[1].name, &p[1].version, None, None), "pkg:maven/org.apache.commons/commons-lang3@3.12.0");
        assert_eq!(Ecosystem::JavaArchive.purl("app", "1.0", None, None), "pkg:maven/app@1.0");
        assert_eq!(Ecosystem::parse("java-archive"), Some(Ecosystem::JavaArchive));
        let e = parse("app/gradle.lockfile", "# c\norg.a:b:1=runtimeClasspath\norg.a:b=runtimeClasspath\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert_eq!(parse("app/gradle.lockfile", "org.a:b:1\n").unwrap_err().line, 1);
    }

    #[test]
    fn nuget_lock_names_and_versions_are_those_deps_json_carries() {
        // packages.lock.json lists a package once per target (framework, then runtime): one package.
        let lock = r#"{"version": 1, "dependencies": {
  "net8.0": {"Newtonsoft.Json": {"type": "Direct", "requested": "[13.0.3, )", "resolved": "13.0.3", "contentHash": "HrC5BXdl00IP9zeV+0Z848QWPAoCr9P3bDEZguI+gkLcBKAOxix/tLEAAHC+UvDNPv4a2d18lOReHMOagPa+zQ=="},
             "Lib": {"type": "Project"}},
  "net8.0/linux-x64": {"Newtonsoft.Json": {"type": "Direct", "requested": "[13.0.3, )", "resolved": "13.0.3", "contentHash": "HrC5BXdl00IP9zeV+0Z848QWPAoCr9P3bDEZguI+gkLcBKAOxix/tLEAAHC+UvDNPv4a2d18lOReHMOagPa+zQ=="}}}}"#;
        let p = parse("app/packages.lock.json", lock).unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].name.as_str(), p[0].version.as_str()), ("Newtonsoft.Json", "13.0.3"));
        assert_eq!(Ecosystem::Dotnet.purl(&p[0].name, &p[0].version, None, None), "pkg:nuget/Newtonsoft.Json@13.0.3");
        assert_eq!(p[0].checksum.as_ref().unwrap().0, "SHA-512");
    }

    #[test]
    fn npm_and_requirements_and_go_sum() {
        let lock = r#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/@s/x":{"version":"1.2.3","license":"MIT","integrity":"sha512-AAAA"},"node_modules/y":{"version":"0.1.0","dependencies":{"@s/x":"^1"}}}}"#;
        let p = parse("package-lock.json", lock).unwrap();
        assert_eq!(p.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect::<Vec<_>>(), [("@s/x", "1.2.3"), ("y", "0.1.0")]);
        assert_eq!(Ecosystem::Npm.purl("@s/x", "1.2.3", None, None), "pkg:npm/%40s/x@1.2.3");
        let r = parse("requirements.txt", "Foo_Bar==2.0 \\\n  --hash=sha256:abcd\n# c\nbaz==1\n").unwrap();
        assert_eq!(r[1].name, "foo-bar");
        assert_eq!(r[1].checksum.as_ref().unwrap().1, "abcd");
        assert_eq!(parse("requirements.txt", "ok==1\nloose>=2\n").unwrap_err().line, 2);
        let g = parse("go.sum", "golang.org/x/text v0.3.0 h1:abc=\ngolang.org/x/text v0.3.0/go.mod h1:def=\n").unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(parse("go.sum", "oops\n").unwrap_err().line, 1);
    }
}
