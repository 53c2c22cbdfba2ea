//! The drift gate: the build-time SBOM against the post-build scan, by (type, name, version)
//! for packages and (path, sha256) for files. Every difference is listed (added: in the image
//! but not declared; removed: declared but not in the image; changed: same package or path,
//! other version or content); the release stops unless the channel's policy accepts that exact
//! difference, with a reason, which the report records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::stages::evidence::sbom::generate::{ECOSYSTEM, EVIDENCE};
use crate::stages::evidence::sbom::{Bom, ComponentType};
use crate::stages::evidence::scan::ScanResult;
use schema::files::{AcceptedDrift, DriftChange};
use schema::model::Platform;

/// The report's types (and `drift.json`'s) are `schema::drift`'s.
pub use schema::drift::*;

type Items = BTreeMap<(String, String), BTreeSet<String>>;

fn declared(bom: &Bom) -> (Items, Items) {
    let (mut packages, mut files) = (Items::new(), Items::new());
    for c in &bom.components {
        let prop = |n: &str| c.properties.iter().find(|p| p.name == n).map(|p| p.value.as_str());
        if prop(EVIDENCE) != Some("image") {
            continue;
        }
        if c.kind == ComponentType::File {
            let sha = c.hashes.iter().find(|h| h.alg == "SHA-256").map(|h| h.content.clone()).unwrap_or_default();
            files.entry(("file".into(), c.name.clone())).or_default().insert(sha);
        } else if let Some(eco) = prop(ECOSYSTEM) {
            packages.entry((eco.to_owned(), c.name.clone())).or_default().insert(c.version.clone());
        }
    }
    (packages, files)
}

fn found(scan: &ScanResult) -> (Items, Items) {
    let (mut packages, mut files) = (Items::new(), Items::new());
    for p in &scan.packages {
        packages.entry((p.kind.clone(), p.name.clone())).or_default().insert(p.version.clone());
    }
    for (path, sha) in &scan.files {
        files.entry(("file".into(), path.clone())).or_default().insert(sha.clone());
    }
    (packages, files)
}

fn diff(declared: &Items, found: &Items, out: &mut Vec<Difference>) {
    let keys: BTreeSet<&(String, String)> = declared.keys().chain(found.keys()).collect();
    for key in keys {
        let (d, f) = (declared.get(key), found.get(key));
        let mk = |change, declared: Option<&String>, found: Option<&String>| Difference {
            change,
            kind: key.0.clone(),
            name: key.1.clone(),
            declared: declared.cloned(),
            found: found.cloned(),
            accepted: None,
        };
        match (d, f) {
            (Some(d), None) => out.extend(d.iter().map(|v| mk(DriftChange::Removed, Some(v), None))),
            (None, Some(f)) => out.extend(f.iter().map(|v| mk(DriftChange::Added, None, Some(v)))),
            (Some(d), Some(f)) if d != f => {
                let only_d: Vec<&String> = d.difference(f).collect();
                let only_f: Vec<&String> = f.difference(d).collect();
                if only_d.len() == 1 && only_f.len() == 1 {
                    out.push(mk(DriftChange::Changed, Some(only_d[0]), Some(only_f[0])));
                } else {
                    out.extend(only_d.into_iter().map(|v| mk(DriftChange::Removed, Some(v), None)));
                    out.extend(only_f.into_iter().map(|v| mk(DriftChange::Added, None, Some(v))));
                }
            }
            _ => {}
        }
    }
}

/// Compares one image's build-time SBOM with its scan under the channel's `policy`.
pub fn compare(component: &str, platform: Platform, bom: &Bom, scan: &ScanResult, policy: &[AcceptedDrift]) -> DriftReport {
    let (dp, df) = declared(bom);
    let (fp, ff) = found(scan);
    let mut differences = Vec::new();
    diff(&dp, &fp, &mut differences);
    diff(&df, &ff, &mut differences);
    for d in &mut differences {
        let value = d.found.as_ref().or(d.declared.as_ref());
        d.accepted = policy
            .iter()
            .find(|a| {
                a.change == d.change
                    && a.kind == d.kind
                    && a.name == d.name
                    && a.version.as_ref().is_none_or(|v| Some(v) == value)
                    && a.component.as_deref().is_none_or(|c| c == component)
            })
            .map(|a| a.reason.clone());
    }
    differences.sort();
    DriftReport {
        component: component.to_owned(),
        platform,
        image: bom.metadata.component.purl.clone().unwrap_or_default(),
        declared_packages: dp.values().map(BTreeSet::len).sum(),
        found_packages: fp.values().map(BTreeSet::len).sum(),
        declared_files: df.len(),
        found_files: ff.len(),
        differences,
    }
}

/// A readable table of the differences of `reports` (all of them, accepted ones marked).
pub fn table(reports: &[DriftReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:<12} {:<8} {:<10} {:<40} {:<24} {:<24} policy",
        "component", "platform", "change", "type", "name", "declared", "found"
    );
    for r in reports {
        for d in &r.differences {
            let short = |v: &Option<String>| {
                v.as_deref()
                    .map(|v| if v.chars().count() > 22 { format!("{}…", v.chars().take(21).collect::<String>()) } else { v.to_owned() })
                    .unwrap_or_else(|| "-".into())
            };
            let change = match d.change {
                DriftChange::Added => "added",
                DriftChange::Removed => "removed",
                DriftChange::Changed => "changed",
            };
            let _ = writeln!(
                s,
                "{:<16} {:<12} {:<8} {:<10} {:<40} {:<24} {:<24} {}",
                r.component,
                r.platform.as_str(),
                change,
                d.kind,
                d.name,
                short(&d.declared),
                short(&d.found),
                d.accepted.as_deref().map(|a| format!("accepted: {a}")).unwrap_or_else(|| "REJECTED".into())
            );
        }
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stages::evidence::sbom::{Component, Hash, Metadata, Property, Tools};
    use crate::stages::evidence::scan::Found;

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const IMAGE_PURL: &str = "pkg:oci/api@sha256%3A0123?arch=amd64&repository_url=registry.example%2Fapi";

    fn prop(name: &str, value: &str) -> Property {
        Property { name: name.to_owned(), value: value.to_owned() }
    }

    /// A package component as `generate::build_time` writes it.
    fn package(eco: &str, name: &str, version: &str, evidence: &str) -> Component {
        Component {
            kind: ComponentType::Library,
            bom_ref: format!("pkg:{eco}/{name}@{version}"),
            name: name.to_owned(),
            version: version.to_owned(),
            description: None,
            hashes: Vec::new(),
            licenses: Vec::new(),
            purl: Some(format!("pkg:{eco}/{name}@{version}")),
            properties: vec![prop(ECOSYSTEM, eco), prop(EVIDENCE, evidence)],
        }
    }

    /// A file component as `generate::build_time` writes it.
    fn file(path: &str, sha: &str) -> Component {
        Component {
            kind: ComponentType::File,
            bom_ref: format!("file:{path}"),
            name: path.to_owned(),
            version: String::new(),
            description: None,
            hashes: vec![Hash::sha256(sha)],
            licenses: Vec::new(),
            purl: None,
            properties: vec![prop(EVIDENCE, "image"), prop("stellaops:mode", "755")],
        }
    }

    fn bom(components: Vec<Component>) -> Bom {
        let image = Component {
            kind: ComponentType::Container,
            bom_ref: "image".into(),
            name: "registry.example/api".into(),
            version: "1.2.3".into(),
            description: None,
            hashes: Vec::new(),
            licenses: Vec::new(),
            purl: Some(IMAGE_PURL.into()),
            properties: Vec::new(),
        };
        let metadata = Metadata {
            timestamp: "2027-06-01T00:00:00Z".into(),
            tools: Tools { components: Vec::new() },
            component: image,
            properties: Vec::new(),
        };
        Bom::sealed(metadata, components, Vec::new())
    }

    fn scan(packages: &[(&str, &str, &str)], files: &[(&str, &str)]) -> ScanResult {
        ScanResult {
            os: Some("debian 12".into()),
            packages: packages
                .iter()
                .map(|&(kind, name, version)| Found {
                    kind: kind.into(),
                    name: name.into(),
                    version: version.into(),
                    location: "/var/lib/dpkg/status".into(),
                })
                .collect(),
            files: files.iter().map(|&(p, s)| (p.to_owned(), s.to_owned())).collect(),
            file_count: files.len(),
        }
    }

    fn accept(change: DriftChange, kind: &str, name: &str, version: Option<&str>, component: Option<&str>, reason: &str) -> AcceptedDrift {
        AcceptedDrift {
            change,
            kind: kind.into(),
            name: name.into(),
            version: version.map(Into::into),
            component: component.map(Into::into),
            reason: reason.into(),
        }
    }

    /// The SBOM every test starts from: two deb packages, one crate, one file.
    fn base_bom() -> Bom {
        bom(vec![
            package("deb", "libc6", "2.36-9", "image"),
            package("deb", "libssl3", "3.0.11-1", "image"),
            package("rust-crate", "serde", "1.0.200", "image"),
            file("/usr/local/bin/api", SHA_A),
        ])
    }

    fn base_scan() -> ScanResult {
        scan(
            &[("deb", "libc6", "2.36-9"), ("deb", "libssl3", "3.0.11-1"), ("rust-crate", "serde", "1.0.200")],
            &[("/usr/local/bin/api", SHA_A)],
        )
    }

    /// (change, type, name, declared, found) of each difference.
    type Row<'a> = (DriftChange, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

    fn summary(r: &DriftReport) -> Vec<Row<'_>> {
        r.differences.iter().map(|d| (d.change, d.kind.as_str(), d.name.as_str(), d.declared.as_deref(), d.found.as_deref())).collect()
    }

    #[test]
    fn identical_inputs_have_no_differences() {
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &base_scan(), &[]);
        assert!(r.differences.is_empty(), "{:?}", r.differences);
        assert_eq!(r.rejected().count(), 0);
        assert_eq!((r.declared_packages, r.found_packages, r.declared_files, r.found_files), (3, 3, 1, 1));
        assert_eq!(r.component, "api");
        assert_eq!(r.platform.as_str(), "linux/amd64");
        assert_eq!(r.image, IMAGE_PURL);
    }

    #[test]
    fn build_input_packages_and_unrelated_components_are_not_compared() {
        let mut b = base_bom();
        // Compiled in, never visible to a file-system scan.
        b.components.push(package("rust-crate", "tokio", "1.38.0", "build-input"));
        // No evidence property at all (e.g. a component of a scan-made SBOM).
        let mut bare = package("npm", "left-pad", "1.3.0", "image");
        bare.properties.retain(|p| p.name != EVIDENCE);
        b.components.push(bare);
        let r = compare("api", Platform::LinuxAmd64, &b, &base_scan(), &[]);
        assert!(r.differences.is_empty(), "{:?}", r.differences);
        assert_eq!(r.declared_packages, 3);
    }

    #[test]
    fn a_package_only_in_the_scan_is_added() {
        let mut s = base_scan();
        s.packages.insert(Found { kind: "deb".into(), name: "curl".into(), version: "7.88.1-10".into(), location: "/x".into() });
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &[]);
        assert_eq!(summary(&r), vec![(DriftChange::Added, "deb", "curl", None, Some("7.88.1-10"))]);
        assert_eq!((r.declared_packages, r.found_packages), (3, 4));
        assert_eq!(r.rejected().count(), 1);
    }

    #[test]
    fn a_declared_package_missing_from_the_scan_is_removed() {
        let s = scan(&[("deb", "libc6", "2.36-9"), ("rust-crate", "serde", "1.0.200")], &[("/usr/local/bin/api", SHA_A)]);
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &[]);
        assert_eq!(summary(&r), vec![(DriftChange::Removed, "deb", "libssl3", Some("3.0.11-1"), None)]);
        assert_eq!((r.declared_packages, r.found_packages), (3, 2));
    }

    #[test]
    fn a_missing_or_extra_file_is_removed_or_added() {
        let s = scan(
            &[("deb", "libc6", "2.36-9"), ("deb", "libssl3", "3.0.11-1"), ("rust-crate", "serde", "1.0.200")],
            &[("/etc/api.toml", SHA_B)],
        );
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &[]);
        assert_eq!(
            summary(&r),
            vec![
                (DriftChange::Added, "file", "/etc/api.toml", None, Some(SHA_B)),
                (DriftChange::Removed, "file", "/usr/local/bin/api", Some(SHA_A), None),
            ]
        );
        assert_eq!((r.declared_files, r.found_files), (1, 1));
    }

    #[test]
    fn another_version_or_content_is_changed() {
        let s = scan(
            &[("deb", "libc6", "2.36-9"), ("deb", "libssl3", "3.0.13-1"), ("rust-crate", "serde", "1.0.200")],
            &[("/usr/local/bin/api", SHA_B)],
        );
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &[]);
        assert_eq!(
            summary(&r),
            vec![
                (DriftChange::Changed, "deb", "libssl3", Some("3.0.11-1"), Some("3.0.13-1")),
                (DriftChange::Changed, "file", "/usr/local/bin/api", Some(SHA_A), Some(SHA_B)),
            ]
        );
        assert_eq!(r.rejected().count(), 2);
    }

    #[test]
    fn the_same_name_in_another_ecosystem_is_not_the_same_package() {
        let s = scan(
            &[("deb", "libc6", "2.36-9"), ("deb", "libssl3", "3.0.11-1"), ("npm", "serde", "1.0.200")],
            &[("/usr/local/bin/api", SHA_A)],
        );
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &[]);
        assert_eq!(
            summary(&r),
            vec![
                (DriftChange::Added, "npm", "serde", None, Some("1.0.200")),
                (DriftChange::Removed, "rust-crate", "serde", Some("1.0.200"), None),
            ]
        );
    }

    #[test]
    fn several_versions_of_one_package_are_compared_as_sets() {
        // One extra version next to the declared one: added, not changed.
        let mut s = base_scan();
        s.packages.insert(Found { kind: "rust-crate".into(), name: "serde".into(), version: "0.9.15".into(), location: "/x".into() });
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &[]);
        assert_eq!(summary(&r), vec![(DriftChange::Added, "rust-crate", "serde", None, Some("0.9.15"))]);

        // Two declared, two other found: no pairing is guessed, each is removed or added.
        let mut b = base_bom();
        b.components.push(package("rust-crate", "serde", "1.0.100", "image"));
        let s = scan(
            &[
                ("deb", "libc6", "2.36-9"),
                ("deb", "libssl3", "3.0.11-1"),
                ("rust-crate", "serde", "1.0.300"),
                ("rust-crate", "serde", "1.0.400"),
            ],
            &[("/usr/local/bin/api", SHA_A)],
        );
        let r = compare("api", Platform::LinuxAmd64, &b, &s, &[]);
        assert_eq!(
            summary(&r),
            vec![
                (DriftChange::Added, "rust-crate", "serde", None, Some("1.0.300")),
                (DriftChange::Added, "rust-crate", "serde", None, Some("1.0.400")),
                (DriftChange::Removed, "rust-crate", "serde", Some("1.0.100"), None),
                (DriftChange::Removed, "rust-crate", "serde", Some("1.0.200"), None),
            ]
        );
        assert_eq!((r.declared_packages, r.found_packages), (4, 4));
    }

    /// The scan of the policy tests: curl added, libssl3 changed, the file removed.
    fn drifted_scan() -> ScanResult {
        scan(
            &[("deb", "libc6", "2.36-9"), ("deb", "libssl3", "3.0.13-1"), ("deb", "curl", "7.88.1-10"), ("rust-crate", "serde", "1.0.200")],
            &[],
        )
    }

    #[test]
    fn a_policy_entry_accepts_exactly_its_difference_and_records_the_reason() {
        let policy = [accept(DriftChange::Added, "deb", "curl", Some("7.88.1-10"), None, "health checks need curl")];
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &policy);
        assert_eq!(r.differences.len(), 3);
        let curl = r.differences.iter().find(|d| d.name == "curl").unwrap();
        assert_eq!(curl.change, DriftChange::Added);
        assert_eq!(curl.accepted.as_deref(), Some("health checks need curl"));
        let rejected: Vec<(DriftChange, &str)> = r.rejected().map(|d| (d.change, d.name.as_str())).collect();
        assert_eq!(rejected, vec![(DriftChange::Removed, "/usr/local/bin/api"), (DriftChange::Changed, "libssl3")]);
    }

    #[test]
    fn a_policy_entry_does_not_accept_a_near_miss() {
        let near_misses = [
            // Another change of the same package.
            accept(DriftChange::Removed, "deb", "curl", None, None, "wrong change"),
            // Another version than the one found.
            accept(DriftChange::Added, "deb", "curl", Some("7.88.1-9"), None, "wrong version"),
            // Another package type.
            accept(DriftChange::Added, "apk", "curl", None, None, "wrong type"),
            // Another name.
            accept(DriftChange::Added, "deb", "wget", None, None, "wrong name"),
            // Another component.
            accept(DriftChange::Added, "deb", "curl", None, Some("web"), "wrong component"),
        ];
        for entry in near_misses {
            let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), std::slice::from_ref(&entry));
            assert_eq!(r.rejected().count(), 3, "{} accepted something", entry.reason);
            assert!(r.differences.iter().all(|d| d.accepted.is_none()), "{}", entry.reason);
        }
    }

    #[test]
    fn a_policy_entry_without_version_or_component_accepts_any() {
        let policy = [
            accept(DriftChange::Added, "deb", "curl", None, Some("api"), "curl, any version, for api"),
            // A changed package is matched on the version found, a removed file on its declared sha256.
            accept(DriftChange::Changed, "deb", "libssl3", Some("3.0.13-1"), None, "security update"),
            accept(DriftChange::Removed, "file", "/usr/local/bin/api", Some(SHA_A), None, "renamed"),
        ];
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &policy);
        assert_eq!(r.rejected().count(), 0, "{:?}", r.differences);
        let reasons: Vec<&str> = r.differences.iter().map(|d| d.accepted.as_deref().unwrap()).collect();
        assert_eq!(reasons, vec!["curl, any version, for api", "renamed", "security update"]);

        // The changed entry names the version found: the declared one does not match.
        let policy = [accept(DriftChange::Changed, "deb", "libssl3", Some("3.0.11-1"), None, "declared version")];
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &policy);
        assert_eq!(r.rejected().count(), 3);
    }

    #[test]
    fn table_names_every_difference_and_marks_the_rejected_ones() {
        let policy = [accept(DriftChange::Added, "deb", "curl", None, None, "health checks")];
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &policy);
        let t = table(std::slice::from_ref(&r));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("component"), "{t}");
        let line = |name: &str| *lines.iter().find(|l| l.contains(name)).unwrap();
        let curl = line("curl");
        assert!(curl.starts_with("api") && curl.contains("linux/amd64") && curl.contains("added"), "{curl}");
        assert!(curl.ends_with("accepted: health checks"), "{curl}");
        let ssl = line("libssl3");
        assert!(ssl.contains("changed") && ssl.contains("3.0.11-1") && ssl.contains("3.0.13-1"), "{ssl}");
        assert!(ssl.ends_with("REJECTED"), "{ssl}");
        let f = line("/usr/local/bin/api");
        assert!(f.contains("removed") && f.ends_with("REJECTED"), "{f}");
        // A sha256 is cut to 21 characters and an ellipsis; an absent value is `-`.
        assert!(f.contains(&format!("{}…", &SHA_A[..21])) && !f.contains(SHA_A), "{f}");
        assert!(f.contains(" - "), "{f}");
        assert_eq!(t.matches("REJECTED").count(), 2);
    }

    #[test]
    fn table_of_no_differences_is_the_header() {
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &base_scan(), &[]);
        assert_eq!(table(&[r]).lines().count(), 1);
        assert_eq!(table(&[]).lines().count(), 1);
    }

    #[test]
    fn table_shortens_a_long_non_ascii_value_without_panicking() {
        // Regression: values were cut at byte 21, which panics inside a multi-byte character.
        let long = "1.0.0-βββββββββββββββββββββ";
        let d = Difference {
            change: DriftChange::Added,
            kind: "npm".into(),
            name: "odd".into(),
            declared: None,
            found: Some(long.into()),
            accepted: None,
        };
        let report = DriftReport {
            component: "c".into(),
            platform: Platform::LinuxAmd64,
            image: "i".into(),
            declared_packages: 0,
            found_packages: 1,
            declared_files: 0,
            found_files: 0,
            differences: vec![d],
        };
        let t = table(&[report]);
        assert!(t.contains(&format!("{}…", long.chars().take(21).collect::<String>())), "{t}");
    }
}
