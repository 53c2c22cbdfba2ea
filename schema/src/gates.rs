//! The release gates' record (spec §2.4), typed: `gates.json` in a release, and the same
//! report as the predicate ([`GATES_PREDICATE`]) of the in-toto statement signed into
//! `attest/gates.dsse.json`, whose subject is `release.yaml`. Promotion checks it later without
//! trusting the file system; `skipped` (`--skip-gates`) is a record promotion refuses.
//!
//! Running the gates, signing and checking the record are the engine's
//! (`pipeline::stages::gates`).

use serde::{Deserialize, Serialize};

/// Predicate type of the signed gate record.
pub const GATES_PREDICATE: &str = "https://stella-ops.org/attestations/gates/v1";
/// Where the record goes in a release.
pub const GATES_JSON: &str = "gates.json";
/// Where its signed statement goes in a release.
pub const GATES_ENVELOPE: &str = "attest/gates.dsse.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateStatus {
    Passed,
    Failed,
    /// `--skip-gates`: nothing ran; promotion refuses such a release.
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateKind {
    Audit,
    Test,
    Budget,
}

/// `gates.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateReport {
    pub status: GateStatus,
    pub gates: Vec<GateResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateResult {
    pub name: String,
    pub kind: GateKind,
    pub passed: bool,
    pub detail: String,
    pub seconds: f64,
    /// A budget's measured metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<f64>,
    /// The audit's findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// The command's output (`gates/<name>.log` in the release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The audit's advisory file, pinned by its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisories: Option<AdvisoryFile>,
}

/// The advisory file an audit read: its path in the repository, its sha256 and how many
/// (not withdrawn) advisories it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdvisoryFile {
    pub path: String,
    pub sha256: String,
    pub records: usize,
}

/// A locked package an advisory lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub advisory: String,
    pub summary: String,
    pub ecosystem: String,
    pub package: String,
    pub version: String,
    pub component: String,
    /// The lock file, or where in the image the scan found the package.
    pub lock_file: String,
    /// `<component> (<platform>)` when the package was found in that image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl GateReport {
    /// The record of `--skip-gates`: nothing ran.
    pub fn skipped() -> GateReport {
        GateReport { status: GateStatus::Skipped, gates: Vec::new() }
    }
    /// One line per failure, naming the gate and what failed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in self.gates.iter().filter(|g| !g.passed) {
            if g.findings.is_empty() {
                out.push(format!("{}: {}", g.name, g.detail));
            }
            for f in &g.findings {
                let place = match &f.image {
                    Some(image) => format!("at `{}` in image `{image}`", f.lock_file),
                    None => format!("in `{}` of `{}`", f.lock_file, f.component),
                };
                out.push(format!(
                    "{}: `{}` {} ({}) {place} is affected by {}: {}",
                    g.name, f.package, f.version, f.ecosystem, f.advisory, f.summary
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_json_omits_empty_optionals_and_failures_name_each_finding() {
        assert_eq!(serde_json::to_string(&GateReport::skipped()).unwrap(), r#"{"status":"skipped","gates":[]}"#);
        let finding = Finding {
            advisory: "GHSA-1".into(),
            summary: "prototype pollution".into(),
            ecosystem: "npm".into(),
            package: "left-pad".into(),
            version: "1.3.0".into(),
            component: "ui".into(),
            lock_file: "ui/package-lock.json".into(),
            image: None,
        };
        let report = GateReport {
            status: GateStatus::Failed,
            gates: vec![
                GateResult {
                    name: "audit".into(),
                    kind: GateKind::Audit,
                    passed: false,
                    detail: "1 finding".into(),
                    seconds: 0.5,
                    measured: None,
                    findings: vec![finding],
                    log: None,
                    advisories: None,
                },
                GateResult {
                    name: "unit".into(),
                    kind: GateKind::Test,
                    passed: false,
                    detail: "exit status 1".into(),
                    seconds: 2.0,
                    measured: None,
                    findings: Vec::new(),
                    log: Some("gates/unit.log".into()),
                    advisories: None,
                },
            ],
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains(r#""lockFile":"ui/package-lock.json""#) && !json.contains("measured"), "{json}");
        assert!(
            json.contains(r#"{"name":"unit","kind":"test","passed":false,"detail":"exit status 1","seconds":2.0,"log":"gates/unit.log"}"#),
            "{json}"
        );
        assert_eq!(
            report.failures(),
            [
                "audit: `left-pad` 1.3.0 (npm) in `ui/package-lock.json` of `ui` is affected by GHSA-1: prototype pollution",
                "unit: exit status 1",
            ]
        );
        let back: GateReport = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}
