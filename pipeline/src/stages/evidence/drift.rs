//! The drift gate: the build-time SBOM against the post-build scan, by (type, name, version)
//! for packages and (path, sha256) for files. Every difference is listed (added: in the image
//! but not declared; removed: declared but not in the image; changed: same package or path,
//! other version or content); the release stops unless the channel's policy accepts that exact
//! difference, with a reason, which the report records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::stages::evidence::sbom::generate::{ECOSYSTEM, EVIDENCE};
use crate::stages::evidence::sbom::{Bom, ComponentType};
use crate::stages::evidence::scan::ScanResult;
use schema::files::{AcceptedDrift, DriftChange};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Difference {
    pub change: DriftChange,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// Version or sha256 in the build-time SBOM.
    pub declared: Option<String>,
    /// Version or sha256 found by the scan.
    pub found: Option<String>,
    /// The policy's reason, when it accepts this difference.
    pub accepted: Option<String>,
}

/// The drift report of one image.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub component: String,
    pub platform: String,
    pub image: String,
    pub declared_packages: usize,
    pub found_packages: usize,
    pub declared_files: usize,
    pub found_files: usize,
    pub differences: Vec<Difference>,
}

impl DriftReport {
    /// Differences the policy does not accept.
    pub fn rejected(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| d.accepted.is_none())
    }
}

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
pub fn compare(component: &str, platform: &str, bom: &Bom, scan: &ScanResult, policy: &[AcceptedDrift]) -> DriftReport {
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
        platform: platform.to_owned(),
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
                v.as_deref().map(|v| if v.len() > 22 { format!("{}…", &v[..21]) } else { v.to_owned() }).unwrap_or_else(|| "-".into())
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
                r.platform,
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
