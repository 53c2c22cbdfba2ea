//! `cargo xtask preflight --from <release> --to <release>`: the upgrade safety checklist of
//! spec appendix B over the release running now and the one to install, before anything moves.
//!
//! Each check has an id; a violation fails the preflight (exit 1), a warning does not:
//! 1. `manifest-signature`: the target's `release.yaml` signature and checksum (violation);
//!    the current one's too (warning: it is what runs already);
//! 2. `component-versions`: each component's version, read from its image's
//!    `org.opencontainers.image.version` label, reached from the signed `release.yaml`
//!    through digests only (index, manifest, config: each blob checked against its digest);
//! 3. `trust-triangle`: Authority, Signer and Attestor on the same minor in the target;
//! 4. `upgrade-order`: every component has a place in the rolling order of spec §5.2
//!    ([`UPGRADE_ORDER`]); a component that goes down is a rollback (warning);
//! 5. `skew`: after every step of that order (old versions for the steps not yet done, new
//!    for those done), the skew rules of `release-trains/components.toml` hold. When the
//!    triangle changes minor, Authority and Signer/Attestor are rolled as one step (spec §12.3);
//! 6. `backup-age`: database backups older than 24 h, or an age not given (warning);
//! 7. `ilm`: a reminder that this tool cannot check ILM purges (note).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::keys::PublicKey;
use oci::{ImageConfig, Index, Layout, Manifest, MEDIA_INDEX};
use schema::model::{PinnedRef, Version};

use crate::ops::SignedRelease;

/// The rolling upgrade order of spec §5.2, one step per line.
pub const UPGRADE_ORDER: &[&[&str]] =
    &[&["authority"], &["signer", "attestor"], &["scanner-web", "scanner-worker"], &["concelier"], &["excititor"], &["web-ui"]];
/// The components that must share a minor (spec §1.3, appendix B).
pub const TRUST_TRIANGLE: [&str; 3] = ["authority", "signer", "attestor"];
/// Backups older than this are flagged (appendix B).
pub const MAX_BACKUP_AGE: i64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Violation,
    Warning,
    Note,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub from: String,
    pub to: String,
    /// The rolling steps, each with `component: old -> new`.
    pub steps: Vec<Vec<String>>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Violation)
    }
    pub fn render(&self) -> String {
        let mut s = format!("preflight {} -> {}\n", self.from, self.to);
        for (i, step) in self.steps.iter().enumerate() {
            s += &format!("  step {}: {}\n", i + 1, step.join(", "));
        }
        for f in &self.findings {
            let mark = match f.severity {
                Severity::Violation => "VIOLATION",
                Severity::Warning => "warning  ",
                Severity::Note => "note     ",
            };
            s += &format!("[{mark}] {}: {}\n", f.check, f.message);
        }
        let n = self.findings.iter().filter(|f| f.severity == Severity::Violation).count();
        s += &format!("{n} violation(s)");
        s
    }
}

#[derive(Debug)]
pub struct Preflight<'a> {
    pub root: &'a Path,
    pub from: &'a Path,
    pub to: &'a Path,
    /// The key the target (`to`) is signed with.
    pub key: &'a PublicKey,
    /// The key the running release (`from`) is signed with (the same, unless keyless: each
    /// keyless release has its own).
    pub from_key: &'a PublicKey,
    /// Age of the newest database backup, in seconds, as the operator states it.
    pub backup_age: Option<i64>,
}

struct Side {
    label: String,
    versions: BTreeMap<String, Version>,
}

/// Reads one release for preflight: its manifest (signed or not: `signature_severity` says
/// how a bad signature counts) and each component's version from its image.
fn side(dir: &Path, key: &PublicKey, which: &str, signature_severity: Severity, findings: &mut Vec<Finding>) -> Option<Side> {
    let doc_dir = SignedRelease::locate(dir);
    let doc = match SignedRelease::open(dir, key) {
        Ok(r) => {
            findings.push(Finding {
                check: "manifest-signature",
                severity: Severity::Note,
                message: format!("{which} `{}`: release.yaml signature and checksum verify", dir.display()),
            });
            r.doc
        }
        Err(problems) => {
            for p in problems {
                findings.push(Finding { check: "manifest-signature", severity: signature_severity, message: format!("{which}: {p}") });
            }
            let bytes = std::fs::read(doc_dir.join("release.yaml")).ok()?;
            crate::manifest::parse(&bytes).ok()?
        }
    };
    let layout = match Layout::open(&dir.join("images")) {
        Ok(l) => l,
        Err(e) => {
            findings.push(Finding {
                check: "component-versions",
                severity: Severity::Violation,
                message: format!("{which} `{}`: no image layout to read component versions from: {e}", dir.display()),
            });
            return Some(Side { label: doc.release.version.to_string(), versions: BTreeMap::new() });
        }
    };
    let mut versions = BTreeMap::new();
    for c in &doc.components {
        match version_of(&layout, &c.image) {
            Ok(v) => {
                versions.insert(c.name.clone(), v);
            }
            Err(e) => findings.push(Finding {
                check: "component-versions",
                severity: Severity::Violation,
                message: format!("{which}: `{}`: {e}", c.name),
            }),
        }
    }
    Some(Side { label: format!("{} ({})", doc.release.version, doc.release.calendar), versions })
}

/// The `org.opencontainers.image.version` label of the image `repo@digest`, through digests.
fn version_of(layout: &Layout, image: &PinnedRef) -> Result<Version, String> {
    let index: Index = layout.read_json(&image.digest, "an image index").map_err(|e| e.to_string())?;
    let m = index.manifests.iter().find(|m| m.media_type != MEDIA_INDEX).ok_or("its index lists no image")?;
    let manifest: Manifest = layout.read_json(&m.digest, "an image manifest").map_err(|e| e.to_string())?;
    let config: ImageConfig = layout.read_json(&manifest.config.digest, "an image config").map_err(|e| e.to_string())?;
    let v = config
        .config
        .labels
        .get(schema::labels::LABEL_VERSION)
        .ok_or_else(|| format!("its image has no `{}` label", schema::labels::LABEL_VERSION))?;
    v.parse().map_err(|e| format!("label `{}`: {e}", schema::labels::LABEL_VERSION))
}

fn step_of(name: &str) -> Option<usize> {
    UPGRADE_ORDER.iter().position(|s| s.contains(&name))
}

pub fn run(req: &Preflight<'_>) -> Result<Report, crate::ops::OpsError> {
    // The rules only: `root` may be a release's copy of the configuration, without sources.
    let cfg = schema::config::load_rules(req.root)?;
    let mut findings = Vec::new();
    // 1-2.
    let from = side(req.from, req.from_key, "current", Severity::Warning, &mut findings);
    let to = side(req.to, req.key, "target", Severity::Violation, &mut findings);
    let (Some(from), Some(to)) = (from, to) else {
        findings.push(Finding {
            check: "manifest-signature",
            severity: Severity::Violation,
            message: "a release.yaml cannot be read".into(),
        });
        return Ok(Report { from: req.from.display().to_string(), to: req.to.display().to_string(), steps: vec![], findings });
    };

    // 3.
    let triangle: Vec<(&str, Option<&Version>)> = TRUST_TRIANGLE.iter().map(|c| (*c, to.versions.get(*c))).collect();
    let minors: BTreeSet<(u64, u64)> = triangle.iter().filter_map(|(_, v)| v.map(|v| (v.major, v.minor))).collect();
    let missing: Vec<&str> = triangle.iter().filter(|(_, v)| v.is_none()).map(|(c, _)| *c).collect();
    if !missing.is_empty() {
        findings.push(Finding {
            check: "trust-triangle",
            severity: Severity::Violation,
            message: format!("the target has no version for {}", missing.join(", ")),
        });
    }
    if minors.len() > 1 {
        let list: Vec<String> = triangle.iter().filter_map(|(c, v)| v.map(|v| format!("{c} {v}"))).collect();
        findings.push(Finding {
            check: "trust-triangle",
            severity: Severity::Violation,
            message: format!("Authority, Signer and Attestor must be on the same minor (spec §1.3); the target has {}", list.join(", ")),
        });
    }

    // 4.
    let names: BTreeSet<&String> = from.versions.keys().chain(to.versions.keys()).collect();
    for n in &names {
        if step_of(n).is_none() {
            findings.push(Finding {
                check: "upgrade-order",
                severity: Severity::Violation,
                message: format!("`{n}` has no place in the rolling upgrade order of spec §5.2 (authority; signer, attestor; scanner-web, scanner-worker; concelier; excititor; web-ui)"),
            });
        }
        if let (Some(a), Some(b)) = (from.versions.get(*n), to.versions.get(*n)) {
            if b < a {
                findings.push(Finding {
                    check: "upgrade-order",
                    severity: Severity::Warning,
                    message: format!("`{n}` goes down from {a} to {b}: this is a rollback; roll the trust triangle together (spec §12.3)"),
                });
            }
        }
    }

    // 5. The steps, merging the triangle's when its minor moves.
    let minor_of = |s: &Side, c: &str| s.versions.get(c).map(|v| (v.major, v.minor));
    let triangle_moves = TRUST_TRIANGLE.iter().any(|c| minor_of(&from, c) != minor_of(&to, c));
    let mut groups: Vec<Vec<&str>> = UPGRADE_ORDER.iter().map(|s| s.to_vec()).collect();
    if triangle_moves {
        let first = groups.remove(0);
        groups[0].splice(0..0, first);
        findings.push(Finding {
            check: "upgrade-order",
            severity: Severity::Note,
            message: "the trust triangle changes minor: roll Authority, Signer and Attestor together, as one step (spec §12.3)".into(),
        });
    }
    let mut steps = Vec::new();
    let mut seen = BTreeSet::new();
    for (k, _) in groups.iter().enumerate() {
        let done: BTreeSet<&str> = groups[..=k].iter().flatten().copied().collect();
        let mut bundle = cfg.bundle.clone();
        bundle.components.clear();
        for n in &names {
            if step_of(n).is_none() {
                continue;
            }
            let v = if done.contains(n.as_str()) { to.versions.get(*n) } else { from.versions.get(*n) };
            let Some(v) = v else { continue };
            match cfg.bundle.components.iter().find(|c| &c.name == *n) {
                Some(c) => {
                    let mut c = c.clone();
                    c.version = *v;
                    bundle.components.push(c);
                }
                None => {
                    if seen.insert(format!("unknown {n}")) {
                        findings.push(Finding {
                            check: "skew",
                            severity: Severity::Violation,
                            message: format!("`{n}` is not in `release-trains/components.toml`: its skew group is unknown"),
                        });
                    }
                }
            }
        }
        for v in schema::skew::check(&bundle) {
            let id = v.to_string();
            if seen.insert(id.clone()) {
                findings.push(Finding {
                    check: "skew",
                    severity: Severity::Violation,
                    message: format!("after step {} ({}): {id}", k + 1, groups[k].join(", ")),
                });
            }
        }
        steps.push(
            groups[k]
                .iter()
                .filter(|c| names.iter().any(|n| n.as_str() == **c))
                .map(|c| {
                    let show = |v: Option<&Version>| v.map(|v| v.to_string()).unwrap_or_else(|| "absent".into());
                    format!("{c} {} -> {}", show(from.versions.get(*c)), show(to.versions.get(*c)))
                })
                .collect(),
        );
    }

    // 6-7.
    match req.backup_age {
        None => findings.push(Finding {
            check: "backup-age",
            severity: Severity::Warning,
            message: "no backup age given (`--backup-age`): check that the database backups are less than 24 h old".into(),
        }),
        Some(age) if age > MAX_BACKUP_AGE => findings.push(Finding {
            check: "backup-age",
            severity: Severity::Warning,
            message: format!("the newest database backup is {} h old, over 24 h: take one before upgrading", age / 3600),
        }),
        Some(_) => {}
    }
    findings.push(Finding {
        check: "ilm",
        severity: Severity::Note,
        message: "not checked by this tool: confirm ILM will not purge compliance artifacts during the upgrade window".into(),
    });
    findings.sort_by_key(|f| f.severity);
    Ok(Report { from: from.label, to: to.label, steps, findings })
}
