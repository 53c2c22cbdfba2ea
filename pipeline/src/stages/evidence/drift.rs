//! The drift gate: what the build declared against what the image holds, counted apart for
//! the base and for the component's own layers.
//!
//! - **Base**: its inventory ([`BaseInventory`], the scan of the pinned base's own layers) is
//!   what the base brings; the build-time SBOM lists it (`stellaops:base`). The image's first
//!   layers must be the base's.
//! - **Packages** by (type, name, version): every package the SBOM declares in the image (the
//!   base's and the component's lock files') against every package the scan found.
//! - **Files** of the component's layers by (path, sha256): the regular files the build
//!   declared its layers write (the SBOM's file components without `stellaops:base`) against
//!   those the scan found written by a layer after the base's; and the base's regular files
//!   that are not in the image against the removals the build declared (whiteouts).
//!
//! Every difference is listed (added: in the image but not declared; removed: declared but not
//! in the image; changed: same package or path, other version or content), with the layer that
//! added, changed or removed it; the release stops unless the channel's policy accepts that
//! exact difference, with a reason, which the report records. A pristine base, whatever made
//! it, gives no difference: its files no package owns are the base's, not the component's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::stages::evidence::inventory::BaseInventory;
use crate::stages::evidence::sbom::generate::{is_removed, BASE, ECOSYSTEM, EVIDENCE};
use crate::stages::evidence::sbom::{Bom, ComponentType};
use crate::stages::evidence::scan::ScanResult;
use schema::files::{AcceptedDrift, DriftChange};
use schema::model::Platform;

/// The report's types (and `drift.json`'s) are `schema::drift`'s.
pub use schema::drift::*;

type Items = BTreeMap<(String, String), BTreeSet<String>>;

/// What the SBOM declares in the image.
#[derive(Default)]
struct Declared {
    /// Every package (the base's and the component's).
    packages: Items,
    /// The packages of the component (the SBOM's without `stellaops:base`).
    component_packages: Items,
    /// The component's files: path -> sha256.
    files: BTreeMap<String, String>,
    base_files: usize,
    /// Paths the component's layers remove (as `generate::removed_paths` gives them).
    removed: Vec<String>,
}

fn declared(bom: &Bom) -> Declared {
    let mut d = Declared::default();
    for c in &bom.components {
        let prop = |n: &str| c.properties.iter().find(|p| p.name == n).map(|p| p.value.as_str());
        if prop(EVIDENCE) != Some("image") {
            continue;
        }
        let of_base = prop(BASE).is_some();
        if c.kind == ComponentType::File {
            if of_base {
                d.base_files += 1;
                continue;
            }
            let (dir, name) = c.name.rsplit_once('/').unwrap_or(("", c.name.as_str()));
            if name == ".wh..wh..opq" {
                d.removed.push(format!("{dir}/"));
            } else if let Some(n) = name.strip_prefix(".wh.") {
                d.removed.push(format!("{dir}/{n}"));
            } else {
                let sha = c.hashes.iter().find(|h| h.alg == "SHA-256").map(|h| h.content.clone()).unwrap_or_default();
                d.files.insert(c.name.clone(), sha);
            }
        } else if let Some(eco) = prop(ECOSYSTEM) {
            if !of_base {
                d.component_packages.entry((eco.to_owned(), c.name.clone())).or_default().insert(c.version.clone());
            }
            d.packages.entry((eco.to_owned(), c.name.clone())).or_default().insert(c.version.clone());
        }
    }
    d
}

fn found_packages(scan: &ScanResult) -> Items {
    let mut packages = Items::new();
    for p in &scan.packages {
        packages.entry((p.kind.clone(), p.name.clone())).or_default().insert(p.version.clone());
    }
    packages
}

fn difference(change: DriftChange, kind: &str, name: &str, declared: Option<&String>, found: Option<&String>) -> Difference {
    Difference {
        change,
        kind: kind.to_owned(),
        name: name.to_owned(),
        declared: declared.cloned(),
        found: found.cloned(),
        accepted: None,
        layer: None,
    }
}

fn diff(declared: &Items, found: &Items, out: &mut Vec<Difference>) {
    let keys: BTreeSet<&(String, String)> = declared.keys().chain(found.keys()).collect();
    for key in keys {
        let (d, f) = (declared.get(key), found.get(key));
        let mk = |change, declared: Option<&String>, found: Option<&String>| difference(change, &key.0, &key.1, declared, found);
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

/// Compares one image's build-time SBOM with its scan, less what its base brings (`base`),
/// under the channel's `policy`.
pub fn compare(
    component: &str,
    platform: Platform,
    bom: &Bom,
    scan: &ScanResult,
    base: &BaseInventory,
    policy: &[AcceptedDrift],
) -> DriftReport {
    let declared = declared(bom);
    let found = found_packages(scan);
    let layer_ref = |index: usize| scan.layers.get(index).map(|d| LayerRef { index, digest: d.to_string() });
    // The image's first layers are the base's; were they not, every layer counts as the
    // component's (and everything the base holds shows up as a difference).
    let n = if scan.layers.starts_with(&base.layers) { base.layers.len() } else { 0 };
    let mut differences = Vec::new();

    // 1. Packages: everything declared in the image against everything found, each named
    //    with the layer that wrote its package database (or removed it).
    diff(&declared.packages, &found, &mut differences);
    for d in &mut differences {
        let kind_name = |p: &crate::stages::evidence::scan::Found| p.kind == d.kind && p.name == d.name;
        let located = match (&d.found, &d.declared) {
            (Some(v), _) => scan.packages.iter().find(|p| kind_name(p) && &p.version == v).map(|p| p.location.clone()),
            (None, Some(v)) => base.packages.iter().find(|p| kind_name(p) && &p.version == v).map(|p| p.location.clone()),
            (None, None) => None,
        };
        d.layer = located.and_then(|l| scan.layer_of(&l)).and_then(layer_ref);
    }

    // 2. The component's files: declared against written by a layer after the base's.
    let written: BTreeMap<&String, &crate::stages::evidence::scan::Written> = scan.tree.iter().filter(|(_, w)| w.layer >= n).collect();
    let paths: BTreeSet<&String> = declared.files.keys().chain(written.keys().copied()).collect();
    for path in paths {
        let mut d = match (declared.files.get(path), written.get(path)) {
            (Some(d), Some(w)) if *d == w.sha256 => continue,
            (Some(d), Some(w)) => difference(DriftChange::Changed, "file", path, Some(d), Some(&w.sha256)),
            // Written by a component layer, not declared: a new file, or a base file changed.
            (None, Some(w)) => match base.tree.get(path.as_str()) {
                Some(was) => difference(DriftChange::Changed, "file", path, Some(was), Some(&w.sha256)),
                None => difference(DriftChange::Added, "file", path, None, Some(&w.sha256)),
            },
            (Some(d), None) => difference(DriftChange::Removed, "file", path, Some(d), scan.tree.get(path).map(|w| &w.sha256)),
            (None, None) => continue,
        };
        d.layer = scan.layer_of(path).and_then(layer_ref);
        differences.push(d);
    }

    // 3. The base's files that are not in the image: each removal must be declared.
    let mut found_removed = 0;
    for (path, sha) in &base.tree {
        if scan.tree.contains_key(path) {
            continue;
        }
        found_removed += 1;
        if !is_removed(path, &declared.removed) {
            let mut d = difference(DriftChange::Removed, "file", path, Some(sha), None);
            d.layer = scan.gone.get(path).copied().and_then(layer_ref);
            differences.push(d);
        }
    }

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
    let in_base = |p: &crate::stages::evidence::scan::Found| base.packages.contains(p);
    DriftReport {
        component: component.to_owned(),
        platform,
        image: bom.metadata.component.purl.clone().unwrap_or_default(),
        declared_packages: declared.packages.values().map(BTreeSet::len).sum(),
        found_packages: found.values().map(BTreeSet::len).sum(),
        declared_files: declared.base_files + declared.files.len(),
        found_files: scan.files.len(),
        from_base: BaseContribution {
            digest: base.base.to_string(),
            layers: base.layers.len(),
            packages: base.packages.len(),
            files: base.files.len(),
        },
        from_component: ComponentContribution {
            layers: (n..scan.layers.len()).filter_map(layer_ref).collect(),
            declared_packages: declared.component_packages.values().map(BTreeSet::len).sum(),
            found_packages: scan.packages.iter().filter(|p| !in_base(p)).count(),
            declared_files: declared.files.len(),
            found_files: written.len(),
            declared_removed: declared.removed.len(),
            found_removed,
        },
        differences,
    }
}

/// A layer as the table shows it: `#<index> <digest, cut>`.
fn layer_cell(l: &Option<LayerRef>) -> String {
    match l {
        Some(l) => format!("#{} {}…", l.index, l.digest.chars().take(19).collect::<String>()),
        None => "-".to_owned(),
    }
}

/// A readable table of the differences of `reports` (all of them, accepted ones marked), each
/// with the layer it comes from.
pub fn table(reports: &[DriftReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:<12} {:<8} {:<10} {:<40} {:<24} {:<24} {:<24} policy",
        "component", "platform", "change", "type", "name", "declared", "found", "layer"
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
                "{:<16} {:<12} {:<8} {:<10} {:<40} {:<24} {:<24} {:<24} {}",
                r.component,
                r.platform.as_str(),
                change,
                d.kind,
                d.name,
                short(&d.declared),
                short(&d.found),
                layer_cell(&d.layer),
                d.accepted.as_deref().map(|a| format!("accepted: {a}")).unwrap_or_else(|| "REJECTED".into())
            );
        }
    }
    s
}

/// Per image, one line of what the base and the component's own layers bring (the base's
/// counts from its inventory; the component's as declared and as found).
pub fn contributions(reports: &[DriftReport]) -> String {
    let mut s = String::new();
    for r in reports {
        let (b, c) = (&r.from_base, &r.from_component);
        let layers = match (c.layers.first(), c.layers.last()) {
            (Some(f), Some(l)) if f.index == l.index => format!("layer #{}", f.index),
            (Some(f), Some(l)) => format!("layers #{}-#{}", f.index, l.index),
            _ => "no layer".to_owned(),
        };
        let _ = writeln!(
            s,
            "{} {}: base {} ({} layer{}): {} packages, {} files no package owns; component ({layers}): declared {} packages, {} files, {} removals; found {} packages, {} files, {} removals",
            r.component,
            r.platform.as_str(),
            b.digest.chars().take(19).collect::<String>(),
            b.layers,
            if b.layers == 1 { "" } else { "s" },
            b.packages,
            b.files,
            c.declared_packages,
            c.declared_files,
            c.declared_removed,
            c.found_packages,
            c.found_files,
            c.found_removed,
        );
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stages::evidence::sbom::{Component, Hash, Metadata, Property, Tools};
    use crate::stages::evidence::scan::{Found, Written};
    use schema::model::Digest;

    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const SHA_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
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

    /// The image's layers: the base's, then the component's.
    fn layers() -> Vec<Digest> {
        vec![Digest::of(b"base layer"), Digest::of(b"component layer")]
    }

    /// The base of every test: a Debian package database (the two deb packages), and
    /// `/etc/group`, which no package owns.
    fn inv() -> BaseInventory {
        let deb = |name: &str, version: &str| Found {
            kind: "deb".into(),
            name: name.into(),
            version: version.into(),
            location: "/var/lib/dpkg/status".into(),
        };
        BaseInventory {
            format: crate::stages::evidence::inventory::FORMAT,
            base: Digest::of(b"base"),
            layers: layers()[..1].to_vec(),
            os: Some("debian 12".into()),
            packages: [deb("libc6", "2.36-9"), deb("libssl3", "3.0.11-1")].into(),
            files: [("/etc/group".to_owned(), SHA_C.to_owned())].into(),
            tree: [("/etc/group".to_owned(), SHA_C.to_owned()), ("/var/lib/dpkg/status".to_owned(), SHA_C.to_owned())].into(),
        }
    }

    /// The scan of an image of the base plus one component layer holding `files` and the
    /// package metadata of the non-deb `packages` (deb ones are in the base's database).
    fn scan(packages: &[(&str, &str, &str)], files: &[(&str, &str)]) -> ScanResult {
        let mut tree: BTreeMap<String, Written> = inv().tree.into_iter().map(|(p, sha256)| (p, Written { sha256, layer: 0 })).collect();
        tree.extend(files.iter().map(|&(p, s)| (p.to_owned(), Written { sha256: s.to_owned(), layer: 1 })));
        tree.insert("/x".into(), Written { sha256: SHA_C.into(), layer: 1 });
        ScanResult {
            os: Some("debian 12".into()),
            packages: packages
                .iter()
                .map(|&(kind, name, version)| Found {
                    kind: kind.into(),
                    name: name.into(),
                    version: version.into(),
                    location: if kind == "deb" { "/var/lib/dpkg/status".into() } else { "/x".into() },
                })
                .collect(),
            files: std::iter::once(("/etc/group".to_owned(), SHA_C.to_owned()))
                .chain(files.iter().map(|&(p, s)| (p.to_owned(), s.to_owned())))
                .collect(),
            file_count: tree.len(),
            tree,
            gone: BTreeMap::new(),
            layers: layers(),
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
            file("/x", SHA_C),
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
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &base_scan(), &inv(), &[]);
        assert!(r.differences.is_empty(), "{:?}", r.differences);
        assert_eq!(r.rejected().count(), 0);
        // Files: the component's two, and `/etc/group` of the base, which no package owns.
        assert_eq!((r.declared_packages, r.found_packages, r.declared_files, r.found_files), (3, 3, 2, 2));
        assert_eq!((r.from_base.layers, r.from_base.packages, r.from_base.files), (1, 2, 1));
        let c = &r.from_component;
        assert_eq!(c.layers, [LayerRef { index: 1, digest: layers()[1].to_string() }]);
        assert_eq!((c.declared_packages, c.found_packages, c.declared_files, c.found_files), (3, 1, 2, 2));
        assert_eq!((c.declared_removed, c.found_removed), (0, 0));
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
        let r = compare("api", Platform::LinuxAmd64, &b, &base_scan(), &inv(), &[]);
        assert!(r.differences.is_empty(), "{:?}", r.differences);
        assert_eq!(r.declared_packages, 3);
    }

    #[test]
    fn a_package_only_in_the_scan_is_added() {
        let mut s = base_scan();
        s.packages.insert(Found { kind: "deb".into(), name: "curl".into(), version: "7.88.1-10".into(), location: "/x".into() });
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
        assert_eq!(summary(&r), vec![(DriftChange::Added, "deb", "curl", None, Some("7.88.1-10"))]);
        assert_eq!((r.declared_packages, r.found_packages), (3, 4));
        assert_eq!(r.rejected().count(), 1);
    }

    #[test]
    fn a_declared_package_missing_from_the_scan_is_removed() {
        let s = scan(&[("deb", "libc6", "2.36-9"), ("rust-crate", "serde", "1.0.200")], &[("/usr/local/bin/api", SHA_A)]);
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
        assert_eq!(summary(&r), vec![(DriftChange::Removed, "deb", "libssl3", Some("3.0.11-1"), None)]);
        assert_eq!((r.declared_packages, r.found_packages), (3, 2));
    }

    #[test]
    fn a_missing_or_extra_file_is_removed_or_added() {
        let s = scan(
            &[("deb", "libc6", "2.36-9"), ("deb", "libssl3", "3.0.11-1"), ("rust-crate", "serde", "1.0.200")],
            &[("/etc/api.toml", SHA_B)],
        );
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
        assert_eq!(
            summary(&r),
            vec![
                (DriftChange::Added, "file", "/etc/api.toml", None, Some(SHA_B)),
                (DriftChange::Removed, "file", "/usr/local/bin/api", Some(SHA_A), None),
            ]
        );
        assert_eq!((r.declared_files, r.found_files), (2, 2));
    }

    #[test]
    fn another_version_or_content_is_changed() {
        let s = scan(
            &[("deb", "libc6", "2.36-9"), ("deb", "libssl3", "3.0.13-1"), ("rust-crate", "serde", "1.0.200")],
            &[("/usr/local/bin/api", SHA_B)],
        );
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
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
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
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
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
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
        let r = compare("api", Platform::LinuxAmd64, &b, &s, &inv(), &[]);
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
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &inv(), &policy);
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
            let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &inv(), std::slice::from_ref(&entry));
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
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &inv(), &policy);
        assert_eq!(r.rejected().count(), 0, "{:?}", r.differences);
        let reasons: Vec<&str> = r.differences.iter().map(|d| d.accepted.as_deref().unwrap()).collect();
        assert_eq!(reasons, vec!["curl, any version, for api", "renamed", "security update"]);

        // The changed entry names the version found: the declared one does not match.
        let policy = [accept(DriftChange::Changed, "deb", "libssl3", Some("3.0.11-1"), None, "declared version")];
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &inv(), &policy);
        assert_eq!(r.rejected().count(), 3);
    }

    /// The layer of the component, as a difference names it.
    fn component_layer() -> Option<LayerRef> {
        Some(LayerRef { index: 1, digest: layers()[1].to_string() })
    }

    /// (change, name, declared, found, layer index) of each difference.
    type LayeredRow<'a> = (DriftChange, &'a str, Option<&'a str>, Option<&'a str>, Option<usize>);

    fn with_layers(r: &DriftReport) -> Vec<LayeredRow<'_>> {
        r.differences
            .iter()
            .map(|d| (d.change, d.name.as_str(), d.declared.as_deref(), d.found.as_deref(), d.layer.as_ref().map(|l| l.index)))
            .collect()
    }

    #[test]
    fn the_base_files_no_package_owns_are_the_bases_and_not_differences() {
        // Regression: every file of a debootstrap base no package owns (`/etc/group`, ...) was
        // reported as added. The SBOM lists it as the base's; the gate counts it apart.
        let mut b = base_bom();
        let mut group = file("/etc/group", SHA_C);
        group.properties.push(prop(BASE, &Digest::of(b"base").to_string()));
        b.components.push(group);
        let r = compare("api", Platform::LinuxAmd64, &b, &base_scan(), &inv(), &[]);
        assert!(r.differences.is_empty(), "{:?}", r.differences);
        assert_eq!((r.from_base.files, r.from_component.declared_files, r.from_component.found_files), (1, 2, 2));
        // Without the base's inventory in the SBOM, the gate still subtracts the base: the
        // SBOM's base part is its own listing, not the comparison.
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &base_scan(), &inv(), &[]);
        assert!(r.differences.is_empty(), "{:?}", r.differences);
    }

    #[test]
    fn an_undeclared_file_or_package_of_a_component_layer_is_added_naming_the_layer() {
        let mut s = base_scan();
        s.tree.insert("/usr/local/bin/stowaway".into(), Written { sha256: SHA_B.into(), layer: 1 });
        s.packages.insert(Found { kind: "npm".into(), name: "stowaway".into(), version: "6.6.6".into(), location: "/x".into() });
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
        assert_eq!(
            with_layers(&r),
            [
                (DriftChange::Added, "/usr/local/bin/stowaway", None, Some(SHA_B), Some(1)),
                (DriftChange::Added, "stowaway", None, Some("6.6.6"), Some(1)),
            ]
        );
        assert_eq!(r.differences[0].layer, component_layer());
        assert_eq!(r.rejected().count(), 2);
        assert_eq!((r.from_component.found_packages, r.from_component.found_files), (2, 3));
    }

    #[test]
    fn a_base_file_a_component_layer_changes_or_removes_undeclared_is_caught() {
        // Changed: the component layer wrote `/etc/group` anew; the build did not declare it.
        let mut s = base_scan();
        s.tree.insert("/etc/group".into(), Written { sha256: SHA_B.into(), layer: 1 });
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
        assert_eq!(with_layers(&r), [(DriftChange::Changed, "/etc/group", Some(SHA_C), Some(SHA_B), Some(1))]);
        // Declared (a recipe layer that carries its own `/etc/group`): no difference.
        let mut b = base_bom();
        b.components.push(file("/etc/group", SHA_B));
        assert!(compare("api", Platform::LinuxAmd64, &b, &s, &inv(), &[]).differences.is_empty());

        // Removed by a whiteout of the component layer, undeclared: named with that layer.
        let mut s = base_scan();
        s.tree.remove("/etc/group");
        s.gone.insert("/etc/group".into(), 1);
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
        assert_eq!(with_layers(&r), [(DriftChange::Removed, "/etc/group", Some(SHA_C), None, Some(1))]);
        assert_eq!((r.from_component.declared_removed, r.from_component.found_removed), (0, 1));
        // Declared: the build recorded the whiteout (BuildKit), of the file or of its directory.
        for whiteout in ["/etc/.wh.group", "/.wh.etc", "/etc/.wh..wh..opq"] {
            let mut b = base_bom();
            b.components.push(file(whiteout, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
            let r = compare("api", Platform::LinuxAmd64, &b, &s, &inv(), &[]);
            assert!(r.differences.is_empty(), "{whiteout}: {:?}", r.differences);
            assert_eq!((r.from_component.declared_removed, r.from_component.found_removed), (1, 1), "{whiteout}");
        }
    }

    #[test]
    fn an_image_that_does_not_stand_on_its_base_counts_every_layer_as_the_components() {
        let mut s = base_scan();
        s.layers[0] = Digest::of(b"another base layer");
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &s, &inv(), &[]);
        let names: Vec<&str> = r.differences.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["/etc/group", "/var/lib/dpkg/status"], "{:?}", r.differences);
        assert!(r.differences.iter().all(|d| d.layer.as_ref().is_some_and(|l| l.index == 0)));
        assert_eq!(r.from_component.layers.len(), 2);
    }

    #[test]
    fn table_names_every_difference_and_marks_the_rejected_ones() {
        let policy = [accept(DriftChange::Added, "deb", "curl", None, None, "health checks")];
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &drifted_scan(), &inv(), &policy);
        let t = table(std::slice::from_ref(&r));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("component"), "{t}");
        let line = |name: &str| *lines.iter().find(|l| l.contains(name)).unwrap();
        let curl = line("curl");
        assert!(curl.starts_with("api") && curl.contains("linux/amd64") && curl.contains("added"), "{curl}");
        assert!(curl.ends_with("accepted: health checks"), "{curl}");
        // The layer that wrote the package database it is in: the base's here.
        assert!(curl.contains(&format!("#0 {}…", &layers()[0].to_string()[..19])), "{curl}");
        let ssl = line("libssl3");
        assert!(ssl.contains("changed") && ssl.contains("3.0.11-1") && ssl.contains("3.0.13-1"), "{ssl}");
        assert!(ssl.ends_with("REJECTED"), "{ssl}");
        let f = line("/usr/local/bin/api");
        assert!(f.contains("removed") && f.ends_with("REJECTED"), "{f}");
        // A sha256 is cut to 21 characters and an ellipsis; an absent value is `-`.
        assert!(f.contains(&format!("{}…", &SHA_A[..21])) && !f.contains(SHA_A), "{f}");
        assert!(f.contains(" - "), "{f}");
        assert_eq!(t.matches("REJECTED").count(), 2);
        // What the base and the component bring, one line per image.
        let c = contributions(std::slice::from_ref(&r));
        assert_eq!(c.lines().count(), 1, "{c}");
        assert!(c.starts_with("api linux/amd64: base sha256:"), "{c}");
        assert!(c.contains("(1 layer): 2 packages, 1 files no package owns; component (layer #1): declared 3 packages, 2 files, 0 removals; found 3 packages, 1 files, 0 removals"), "{c}");
    }

    #[test]
    fn table_of_no_differences_is_the_header() {
        let r = compare("api", Platform::LinuxAmd64, &base_bom(), &base_scan(), &inv(), &[]);
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
            layer: None,
        };
        let r0 = compare("c", Platform::LinuxAmd64, &base_bom(), &base_scan(), &inv(), &[]);
        let report = DriftReport {
            component: "c".into(),
            platform: Platform::LinuxAmd64,
            image: "i".into(),
            declared_packages: 0,
            found_packages: 1,
            declared_files: 0,
            found_files: 0,
            from_base: r0.from_base,
            from_component: r0.from_component,
            differences: vec![d],
        };
        let t = table(&[report]);
        assert!(t.contains(&format!("{}…", long.chars().take(21).collect::<String>())), "{t}");
    }
}
