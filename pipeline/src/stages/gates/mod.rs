//! Release gates (spec §2.4), a stage of `release` after the build: every gate must pass or
//! the release stops, naming what failed.
//!
//! Configured in `release-trains/gates.toml`:
//! - `[audit] advisories = "<file>"`: a dependency audit of every lock file of every component
//!   (the lock files the build found, parsed by [`crate::stages::evidence::sbom::locks`]) against an offline
//!   advisory database: a JSON array of OSV records (format below);
//! - `[[test]]`: the project's tests, as commands run in the repository root;
//! - `[[budget]]`: performance budgets for hot paths, as commands whose wall time
//!   (`max-seconds`) and/or a number they print (`metric`, a JSON pointer into the last line of
//!   their stdout, with `max` and/or `min`) must stay within bounds.
//!
//! The result (`gates.json`) is written into the release and signed with the release key as
//! `attest/gates.dsse.json` (an in-toto statement whose subject is `release.yaml`), so that
//! promotion can check it later without trusting the file system. `--skip-gates` records
//! `skipped`, which promotion refuses.
//!
//! ## The advisory file
//!
//! A JSON array of records in the OSV schema (<https://ossf.github.io/osv-schema/>), of
//! which this reads: `id`, `summary`, `withdrawn` (such records are ignored), and per
//! `affected` entry `package.ecosystem` (`crates.io`, `npm`, `Go`, `NuGet`, `PyPI`), `package.name`,
//! `versions` (exact affected versions) and `ranges` of type `SEMVER` or `ECOSYSTEM` with
//! `introduced`, `fixed` and `last_affected` events. Ranges are compared as semantic versions
//! (a leading `v` dropped); a range that cannot be compared that way for a package that is in a
//! lock file stops the audit (fail closed): list its versions instead. An OSV export (one
//! record per file) becomes this file with `jq -s . *.json`.

pub mod versions;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci::cmd::{Cmd, CmdError};
use serde::Deserialize;

use crate::stages::build::Images;
use crate::stages::evidence::sbom::locks::Ecosystem;

/// The gates' configuration file, relative to the repository root.
pub const GATES_FILE: &str = "release-trains/gates.toml";

/// The record (`gates.json`, `attest/gates.dsse.json`): its types and file names are
/// `schema::gates`'s.
pub use schema::gates::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GatesConfig {
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    #[serde(rename = "test", default)]
    pub tests: Vec<CommandGate>,
    #[serde(rename = "budget", default)]
    pub budgets: Vec<BudgetGate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditConfig {
    /// The advisory file, relative to the repository root.
    pub advisories: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CommandGate {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BudgetGate {
    pub name: String,
    /// The hot path measured (for humans).
    #[serde(default)]
    pub description: String,
    pub command: Vec<String>,
    /// The command's wall time must not exceed this.
    #[serde(default)]
    pub max_seconds: Option<f64>,
    /// A JSON pointer into the last line of the command's stdout (`/layer/ratio_vs_tar_gzip6`).
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    3600
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("`{GATES_FILE}`: {0}\n  hint: see the comments at the top of `{GATES_FILE}`")]
    Config(String),
    #[error("`{file}`: {message}")]
    Advisories { file: String, message: String },
    #[error("the release gates failed (spec §2.4); report: `{}`\n{}", .report_path.display(), .report.failures().iter().map(|f| format!("  - {f}")).collect::<Vec<_>>().join("\n"))]
    Failed { report: Box<GateReport>, report_path: PathBuf },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl GateError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            GateError::Io { .. } => schema::exit::ENVIRONMENT,
            _ => schema::exit::REJECTED,
        }
    }
}

/// Reads and checks `release-trains/gates.toml`.
pub fn load(root: &Path) -> Result<GatesConfig, GateError> {
    let path = root.join(GATES_FILE);
    let text = fs::read_to_string(&path).map_err(|e| GateError::Config(format!("cannot be read: {e}")))?;
    let cfg: GatesConfig = toml::from_str(&text).map_err(|e| GateError::Config(e.message().to_owned()))?;
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for (i, t) in cfg.tests.iter().enumerate() {
        if t.command.is_empty() {
            problems.push(format!("`test[{i}].command` is empty"));
        }
        if !names.insert(t.name.clone()) {
            problems.push(format!("`test[{i}].name`: `{}` appears twice", t.name));
        }
    }
    for (i, b) in cfg.budgets.iter().enumerate() {
        if b.command.is_empty() {
            problems.push(format!("`budget[{i}].command` is empty"));
        }
        if !names.insert(b.name.clone()) {
            problems.push(format!("`budget[{i}].name`: `{}` appears twice", b.name));
        }
        if b.max_seconds.is_none() && b.metric.is_none() {
            problems.push(format!("`budget[{i}]` (`{}`) sets neither `max-seconds` nor `metric`", b.name));
        }
        if b.metric.is_some() && b.max.is_none() && b.min.is_none() {
            problems.push(format!("`budget[{i}].metric` needs `max` or `min`"));
        }
        if b.metric.is_none() && (b.max.is_some() || b.min.is_some()) {
            problems.push(format!("`budget[{i}]`: `max`/`min` bound a `metric`, which is missing"));
        }
        if b.metric.as_deref().is_some_and(|m| !m.starts_with('/')) {
            problems.push(format!("`budget[{i}].metric` is a JSON pointer: it starts with `/`"));
        }
    }
    if let Some(a) = &cfg.audit {
        if a.advisories.starts_with('/') || a.advisories.split('/').any(|c| c == "..") {
            problems.push(format!("`audit.advisories`: `{}` must be relative to the repository, without `..`", a.advisories));
        }
    }
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(GateError::Config(problems.join("; ")))
    }
}

/// Runs every gate: the audit over `images`' lock files and what `scans` found, then the tests, then the budgets (one
/// at a time: budgets measure). Logs go to `<out>/gates/`. Returns the report whatever the
/// outcome; the caller fails the release when its status is not `passed`.
pub fn run(
    root: &Path,
    cfg: &GatesConfig,
    images: &Images,
    scans: &[ScannedImage],
    out: &Path,
    reporter: &dyn schema::report::Reporter,
) -> Result<GateReport, GateError> {
    use schema::report::{Event, Stage};
    let mut gates = Vec::new();
    if let Some(a) = &cfg.audit {
        let t = Instant::now();
        let db = Advisories::load(&root.join(&a.advisories), &a.advisories)?;
        let (packages, unaudited) = shipped(images, scans);
        let findings = audit(&db, &packages).map_err(|message| GateError::Advisories { file: a.advisories.clone(), message })?;
        let lock_files: BTreeSet<(&str, &str)> = packages.iter().filter(|p| p.image.is_none()).map(|p| (p.component, p.location)).collect();
        let in_images = packages.iter().filter(|p| p.image.is_some()).count();
        let passed = findings.is_empty();
        let detail = format!(
            "{} package(s) of {} lock file(s) and {in_images} found in {} image(s){} against {} advisories in `{}` (sha256 {}): {} finding(s)",
            packages.len() - in_images,
            lock_files.len(),
            scans.len(),
            if unaudited > 0 {
                format!(" ({unaudited} of an ecosystem without advisories here or a Java archive of unknown group, not audited)")
            } else {
                String::new()
            },
            db.records.len(),
            a.advisories,
            db.sha256,
            findings.len()
        );
        reporter.event(Event::JobFinished { stage: Stage::Gates, job: "dependency audit".into(), detail: detail.clone() });
        gates.push(GateResult {
            name: "dependency audit".into(),
            kind: GateKind::Audit,
            passed,
            detail,
            seconds: t.elapsed().as_secs_f64(),
            measured: None,
            findings,
            log: None,
            advisories: Some(schema::gates::AdvisoryFile {
                path: a.advisories.clone(),
                sha256: db.sha256.clone(),
                records: db.records.len(),
            }),
        });
    }
    let logs = out.join("gates");
    for t in &cfg.tests {
        reporter.event(Event::JobStarted { stage: Stage::Gates, job: t.name.clone() });
        let r = run_command(root, &t.name, &t.command, t.timeout_seconds, &logs)?;
        let passed = r.outcome == Outcome::Exited(0);
        let detail = if passed { "passed".to_owned() } else { format!("{}; last lines:\n{}", r.outcome, r.tail) };
        reporter.event(Event::JobFinished {
            stage: Stage::Gates,
            job: t.name.clone(),
            detail: if passed { "passed".into() } else { "FAILED".into() },
        });
        gates.push(GateResult {
            name: t.name.clone(),
            kind: GateKind::Test,
            passed,
            detail,
            seconds: r.seconds,
            measured: None,
            findings: vec![],
            log: Some(r.log),
            advisories: None,
        });
    }
    for b in &cfg.budgets {
        reporter.event(Event::JobStarted { stage: Stage::Gates, job: b.name.clone() });
        let r = run_command(root, &b.name, &b.command, b.timeout_seconds, &logs)?;
        let mut problems = Vec::new();
        let mut measured = None;
        if r.outcome != Outcome::Exited(0) {
            problems.push(format!("{}; last lines:\n{}", r.outcome, r.tail));
        } else {
            if let Some(max) = b.max_seconds {
                if r.seconds > max {
                    problems.push(format!("took {:.2} s, over its budget of {max} s", r.seconds));
                }
            }
            if let Some(ptr) = &b.metric {
                let last = r.stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
                match serde_json::from_str::<serde_json::Value>(last).ok().and_then(|v| v.pointer(ptr).and_then(|x| x.as_f64())) {
                    None => problems.push(format!("its last line of output has no number at `{ptr}`: `{last}`")),
                    Some(v) => {
                        measured = Some(v);
                        if b.max.is_some_and(|m| v > m) {
                            problems.push(format!("`{ptr}` is {v}, over its budget of {}", b.max.unwrap_or_default()));
                        }
                        if b.min.is_some_and(|m| v < m) {
                            problems.push(format!("`{ptr}` is {v}, under its floor of {}", b.min.unwrap_or_default()));
                        }
                    }
                }
            }
        }
        let passed = problems.is_empty();
        let detail = if passed {
            match measured {
                Some(v) => format!("{:.2} s; `{}` = {v}", r.seconds, b.metric.as_deref().unwrap_or_default()),
                None => format!("{:.2} s", r.seconds),
            }
        } else {
            problems.join("; ")
        };
        reporter.event(Event::JobFinished {
            stage: Stage::Gates,
            job: b.name.clone(),
            detail: if passed { detail.clone() } else { "FAILED".into() },
        });
        gates.push(GateResult {
            name: b.name.clone(),
            kind: GateKind::Budget,
            passed,
            detail,
            seconds: r.seconds,
            measured,
            findings: vec![],
            log: Some(r.log),
            advisories: None,
        });
    }
    let status = if gates.iter().all(|g| g.passed) { GateStatus::Passed } else { GateStatus::Failed };
    Ok(GateReport { status, gates })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Exited(i32),
    Signal,
    TimedOut(u64),
    NotFound(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(c) => write!(f, "exited with {c}"),
            Outcome::Signal => write!(f, "killed by a signal"),
            Outcome::TimedOut(s) => write!(f, "timed out after {s} s (stopped)"),
            Outcome::NotFound(e) => write!(f, "could not start: {e}"),
        }
    }
}

struct Ran {
    outcome: Outcome,
    seconds: f64,
    stdout: String,
    tail: String,
    /// Relative to the release directory.
    log: String,
}

fn slug(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

/// What `cargo run` (how `cargo xtask` starts this program) adds to its environment about
/// the package it runs: `CARGO`, `CARGO_MANIFEST_DIR`, `CARGO_MANIFEST_PATH`, `CARGO_PKG_*`,
/// `CARGO_CRATE_NAME`, `CARGO_BIN_NAME`, `CARGO_PRIMARY_PACKAGE`, `OUT_DIR`. A gate's own
/// `cargo` must not inherit them: build scripts that watch them (ring's declares
/// `rerun-if-env-changed=CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`...) would see them changed, so
/// the gate would rebuild ring and all that depends on it, and the next `cargo xtask` would
/// rebuild it all again (issue 17, "no rebuild thrash").
pub fn cargo_run_env() -> Vec<std::ffi::OsString> {
    const EXACT: &[&str] =
        &["CARGO", "CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"];
    std::env::vars_os().map(|(k, _)| k).filter(|k| k.to_str().is_some_and(|k| EXACT.contains(&k) || k.starts_with("CARGO_PKG_"))).collect()
}

/// Runs one gate command in `root`: stdout is captured (for gates that parse it), both streams
/// go to `<logs>/<name>.log` once it ended; stopped after `timeout` seconds.
fn run_command(root: &Path, name: &str, argv: &[String], timeout: u64, logs: &Path) -> Result<Ran, GateError> {
    let ioe = |path: &Path| {
        let path = path.to_owned();
        move |source| GateError::Io { path, source }
    };
    fs::create_dir_all(logs).map_err(ioe(logs))?;
    let base = slug(name);
    let (log_path, out_path) = (logs.join(format!("{base}.log")), logs.join(format!("{base}.out")));
    let t = Instant::now();
    tracing::debug!(gate = name, ?argv, "running a release gate");
    let mut cmd =
        Cmd::new(&argv[0], format!("release gate `{name}`")).args(&argv[1..]).current_dir(root).timeout(Duration::from_secs(timeout));
    for var in cargo_run_env() {
        cmd = cmd.env_remove(var);
    }
    let (outcome, stdout, err) = match cmd.output_bounded() {
        Err(CmdError::Start { source, .. }) => (Outcome::NotFound(format!("`{}`: {source}", argv[0])), String::new(), String::new()),
        // `output_bounded` reports a time bound in its flag, not as an error.
        Err(e @ (CmdError::Failed { .. } | CmdError::TimedOut { .. })) => (Outcome::NotFound(e.to_string()), String::new(), String::new()),
        Ok((f, timed_out)) => {
            let outcome = match (timed_out, f.code) {
                (true, _) => Outcome::TimedOut(timeout),
                (false, Some(c)) => Outcome::Exited(c),
                (false, None) => Outcome::Signal,
            };
            (outcome, String::from_utf8_lossy(&f.stdout).into_owned(), String::from_utf8_lossy(&f.stderr).into_owned())
        }
    };
    let seconds = t.elapsed().as_secs_f64();
    // The log: stderr, then stdout, in one file for people. Stdout is kept only in `Ran`: a
    // `.out` file of an earlier run is removed.
    let combined = format!("$ {}\n{err}{stdout}", argv.join(" "));
    fs::write(&log_path, &combined).map_err(ioe(&log_path))?;
    match fs::remove_file(&out_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(ioe(&out_path)(e)),
        _ => {}
    }
    let lines: Vec<&str> = combined.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].iter().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n");
    Ok(Ran { outcome, seconds, stdout, tail, log: format!("gates/{base}.log") })
}

/// The advisory database.
#[derive(Debug, Clone)]
pub struct Advisories {
    pub records: Vec<Osv>,
    /// The sha256 of the file as read (recorded in the gate record: which advisories a
    /// release was checked against).
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Osv {
    pub id: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub affected: Vec<Affected>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Affected {
    pub package: OsvPackage,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub ranges: Vec<Range>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvPackage {
    pub ecosystem: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub events: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// OSV's ecosystem names for ours (Debian's `Debian:12` style too).
fn ecosystem_of(osv: &str) -> Option<Ecosystem> {
    Some(match osv.split(':').next().unwrap_or(osv) {
        "crates.io" => Ecosystem::RustCrate,
        "npm" => Ecosystem::Npm,
        "Go" => Ecosystem::GoModule,
        "NuGet" => Ecosystem::Dotnet,
        "PyPI" => Ecosystem::Python,
        "Debian" => Ecosystem::Deb,
        "Maven" => Ecosystem::JavaArchive,
        _ => return None,
    })
}

impl Advisories {
    pub fn load(path: &Path, label: &str) -> Result<Advisories, GateError> {
        let bytes =
            fs::read(path).map_err(|e| GateError::Advisories { file: label.to_owned(), message: format!("cannot be read: {e}") })?;
        let records: Vec<Osv> = serde_json::from_slice(&bytes).map_err(|e| GateError::Advisories {
            file: label.to_owned(),
            message: format!("line {}: not a JSON array of OSV records: {e}", e.line()),
        })?;
        let mut problems = Vec::new();
        for (i, r) in records.iter().enumerate() {
            for (j, a) in r.affected.iter().enumerate() {
                if ecosystem_of(&a.package.ecosystem).is_none() {
                    problems.push(format!(
                        "`[{i}].affected[{j}].package.ecosystem` (`{}`): `{}` is not one of crates.io, npm, Go, NuGet, PyPI, Debian",
                        r.id, a.package.ecosystem
                    ));
                }
                for (k, rg) in a.ranges.iter().enumerate() {
                    if rg.kind != "SEMVER" && rg.kind != "ECOSYSTEM" {
                        problems.push(format!(
                            "`[{i}].affected[{j}].ranges[{k}].type` (`{}`): `{}` cannot be evaluated offline; list `versions`",
                            r.id, rg.kind
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(Advisories {
                records: records.into_iter().filter(|r| r.withdrawn.is_none()).collect(),
                sha256: schema::model::Digest::of(&bytes).hex().to_owned(),
            })
        } else {
            Err(GateError::Advisories { file: label.to_owned(), message: problems.join("; ") })
        }
    }
}

/// Whether `version` is in the range, or why it cannot be told. `SEMVER` ranges order by
/// semantic versions; `ECOSYSTEM` ranges by the ecosystem's own order (dpkg's for Debian,
/// PEP 440 for PyPI).
fn in_range(range: &Range, ecosystem: Ecosystem, version: &str) -> Result<bool, String> {
    use std::cmp::Ordering;
    let by_semver = range.kind == "SEMVER";
    let cmp = |a: &str, b: &str| -> Option<Ordering> {
        if by_semver {
            Some(versions::semver(a)?.cmp(&versions::semver(b)?))
        } else {
            versions::compare(ecosystem, a, b)
        }
    };
    let what = if by_semver { "a semantic version".to_owned() } else { format!("a {} version", ecosystem.as_str()) };
    cmp(version, version).ok_or_else(|| format!("version `{version}` is not {what}"))?;
    let mut events: Vec<(&str, &str)> = Vec::new();
    for e in &range.events {
        let (k, val) = e.iter().next().ok_or("an empty range event")?;
        let val = val.as_str().ok_or_else(|| format!("range event `{k}` is not a string"))?;
        if !(k == "introduced" && val == "0") && cmp(val, val).is_none() {
            return Err(format!("range event `{k}: {val}` is not {what}"));
        }
        events.push((val, k.as_str()));
    }
    // "0" is before every version.
    let order = |a: &str, b: &str| match (a == "0", b == "0") {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => cmp(a, b).unwrap_or(Ordering::Equal),
    };
    events.sort_by(|a, b| order(a.0, b.0));
    let mut affected = false;
    for (at, kind) in &events {
        let at_or_below = order(at, version) != Ordering::Greater;
        match *kind {
            "introduced" if at_or_below => affected = true,
            "fixed" if at_or_below => affected = false,
            "last_affected" if order(at, version) == Ordering::Less => affected = false,
            "introduced" | "fixed" | "last_affected" | "limit" => {}
            other => return Err(format!("unknown range event `{other}`")),
        }
    }
    Ok(affected)
}

/// A package the audit checks: from a lock file of the source, or found in an image.
#[derive(Debug, Clone)]
pub struct Audited<'a> {
    pub ecosystem: Ecosystem,
    pub name: &'a str,
    pub version: &'a str,
    pub component: &'a str,
    /// `<component> (<platform>)` for a package found in an image.
    pub image: Option<String>,
    /// The lock file, or the path in the image where the scan found it.
    pub location: &'a str,
}

/// Everything shipped: every package of every lock file, and every package the scans found
/// in every image (the bases' Debian packages included). Packages of ecosystems no advisory
/// format covers here (Alpine's) and Java archives whose group is unknown (OSV names Maven
/// packages `group:artifact`) are not audited; the record counts them.
pub fn shipped<'a>(images: &'a Images, scans: &'a [ScannedImage]) -> (Vec<Audited<'a>>, usize) {
    let mut out = Vec::new();
    for (component, ci) in &images.components {
        for lf in ci.images.iter().flat_map(|i| &i.lock_files) {
            for p in &lf.packages {
                out.push(Audited {
                    ecosystem: p.ecosystem,
                    name: &p.name,
                    version: &p.version,
                    component,
                    image: None,
                    location: &lf.path,
                });
            }
        }
    }
    let mut unaudited = 0;
    for s in scans {
        for p in &s.scan.packages {
            // A Java archive whose group is unknown cannot be named as OSV names Maven packages.
            match Ecosystem::parse(&p.kind).filter(|e| *e != Ecosystem::JavaArchive || p.name.contains(':')) {
                Some(ecosystem) => out.push(Audited {
                    ecosystem,
                    name: &p.name,
                    version: &p.version,
                    component: &s.component,
                    image: Some(format!("{} ({})", s.component, s.platform)),
                    location: &p.location,
                }),
                None => unaudited += 1,
            }
        }
    }
    (out, unaudited)
}

/// One image's scan, for the audit.
#[derive(Debug, Clone)]
pub struct ScannedImage {
    pub component: String,
    pub platform: schema::model::Platform,
    pub scan: crate::stages::evidence::scan::ScanResult,
}

/// Every audited package an advisory lists.
pub fn audit(db: &Advisories, packages: &[Audited<'_>]) -> Result<Vec<Finding>, String> {
    let mut findings = BTreeSet::new();
    for p in packages {
        for r in &db.records {
            for a in &r.affected {
                if ecosystem_of(&a.package.ecosystem) != Some(p.ecosystem) || !same_name(p.ecosystem, &a.package.name, p.name) {
                    continue;
                }
                let mut hit = a.versions.iter().any(|v| v == p.version || v.strip_prefix('v') == Some(p.version));
                for rg in &a.ranges {
                    hit |= in_range(rg, p.ecosystem, p.version).map_err(|e| {
                        format!(
                            "advisory `{}` for `{}` (in `{}` of `{}`): {e}; list its affected `versions` instead",
                            r.id, p.name, p.location, p.component
                        )
                    })?;
                }
                if hit {
                    findings.insert(Finding {
                        advisory: r.id.clone(),
                        summary: r.summary.clone(),
                        ecosystem: p.ecosystem.as_str().to_owned(),
                        package: p.name.to_owned(),
                        version: p.version.to_owned(),
                        component: p.component.to_owned(),
                        lock_file: p.location.to_owned(),
                        image: p.image.clone(),
                    });
                }
            }
        }
    }
    Ok(findings.into_iter().collect())
}

fn same_name(e: Ecosystem, a: &str, b: &str) -> bool {
    match e {
        Ecosystem::Python => crate::stages::evidence::sbom::locks::python_name(a) == crate::stages::evidence::sbom::locks::python_name(b),
        Ecosystem::Dotnet => a.eq_ignore_ascii_case(b),
        _ => a == b,
    }
}

/// The signed record: an in-toto statement whose subject is `release.yaml`, predicate the
/// report.
pub fn sign_record(
    key: &dyn verifier::keys::Signer,
    report: &GateReport,
    release_yaml: &schema::model::Digest,
) -> Result<verifier::sign::Envelope, verifier::keys::SignerError> {
    let predicate = serde_json::to_value(report).expect("a report serializes");
    let st = verifier::sign::statement(&[("release.yaml".to_owned(), release_yaml)], GATES_PREDICATE, predicate);
    verifier::sign::sign_envelope(key, verifier::sign::PAYLOAD_TYPE, &st)
}

/// Checks a release's signed gate record: signed by `key`, about this `release.yaml`, passed.
pub fn check_record(dir: &Path, key: &verifier::keys::PublicKey, release_yaml: &schema::model::Digest) -> Result<GateReport, String> {
    let path = dir.join(GATES_ENVELOPE);
    let bytes =
        fs::read(&path).map_err(|e| format!("no signed gate record `{}`: {e} (the release was cut without gates)", path.display()))?;
    let env: verifier::sign::Envelope =
        serde_json::from_slice(&bytes).map_err(|e| format!("`{}`: not a DSSE envelope: {e}", path.display()))?;
    let body = verifier::sign::verify_envelope(key, &env).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let st: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("`{}`: {e}", path.display()))?;
    if st["predicateType"] != GATES_PREDICATE || st["subject"][0]["digest"]["sha256"] != release_yaml.hex() {
        return Err(format!("`{}` is not the gate record of this release.yaml", path.display()));
    }
    let report: GateReport = serde_json::from_value(st["predicate"].clone()).map_err(|e| format!("`{}`: {e}", path.display()))?;
    match report.status {
        GateStatus::Passed => Ok(report),
        GateStatus::Skipped => Err("its gates were skipped (`--skip-gates`): cut it again with its gates".to_owned()),
        GateStatus::Failed => Err(format!("its gates failed: {}", report.failures().join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(events: &[(&str, &str)]) -> Range {
        Range {
            kind: "SEMVER".into(),
            events: events
                .iter()
                .map(|(k, v)| {
                    let mut m = serde_json::Map::new();
                    m.insert((*k).to_owned(), serde_json::Value::String((*v).to_owned()));
                    m
                })
                .collect(),
        }
    }

    #[test]
    fn osv_ranges_introduced_fixed_last_affected() {
        let r = range(&[("introduced", "0"), ("fixed", "1.2.3")]);
        assert_eq!(in_range(&r, Ecosystem::Npm, "1.2.2"), Ok(true));
        assert_eq!(in_range(&r, Ecosystem::Npm, "1.2.3"), Ok(false));
        let r = range(&[("introduced", "2.0.0"), ("last_affected", "2.1.0"), ("introduced", "3.0.0")]);
        assert_eq!(in_range(&r, Ecosystem::Npm, "1.9.0"), Ok(false));
        assert_eq!(in_range(&r, Ecosystem::Npm, "2.1.0"), Ok(true));
        assert_eq!(in_range(&r, Ecosystem::Npm, "2.1.1"), Ok(false));
        assert_eq!(in_range(&r, Ecosystem::Npm, "3.4.0"), Ok(true));
        assert_eq!(in_range(&r, Ecosystem::Npm, "v3.4.0"), Ok(true));
        assert!(in_range(&r, Ecosystem::Npm, "1:2.3-4").unwrap_err().contains("not a semantic version"));
    }

    fn ecosystem_range(events: &[(&str, &str)]) -> Range {
        Range { kind: "ECOSYSTEM".into(), ..range(events) }
    }

    #[test]
    fn ecosystem_ranges_order_debian_and_python_versions_their_own_way() {
        // Debian: epochs, `~` before the release, `+debNuM` point releases.
        let r = ecosystem_range(&[("introduced", "0"), ("fixed", "1:1.35.0-4+deb12u2")]);
        assert_eq!(in_range(&r, Ecosystem::Deb, "1:1.35.0-4+deb12u1+b1"), Ok(true));
        assert_eq!(in_range(&r, Ecosystem::Deb, "1:1.35.0-4+deb12u2"), Ok(false));
        assert_eq!(in_range(&r, Ecosystem::Deb, "1.36.0-1"), Ok(true), "no epoch is epoch 0, before 1:");
        let r = ecosystem_range(&[("introduced", "3.0.11-1~deb12u1"), ("fixed", "3.0.11-1")]);
        assert_eq!(in_range(&r, Ecosystem::Deb, "3.0.11-1~deb12u2"), Ok(true));
        assert_eq!(in_range(&r, Ecosystem::Deb, "3.0.11-1"), Ok(false));
        // PEP 440: a pre-release is before its release, a post-release after.
        let r = ecosystem_range(&[("introduced", "2.0rc1"), ("fixed", "2.0.post1")]);
        assert_eq!(in_range(&r, Ecosystem::Python, "2.0"), Ok(true));
        assert_eq!(in_range(&r, Ecosystem::Python, "2.0b9"), Ok(false));
        assert_eq!(in_range(&r, Ecosystem::Python, "2.0.post1"), Ok(false));
        assert!(in_range(&r, Ecosystem::Python, "two").unwrap_err().contains("not a python version"));
    }

    #[test]
    fn maven_advisories_name_group_artifact_and_order_maven_versions() {
        // Maven's order: a release candidate is before its release, `-jre` after `-android`.
        let r = ecosystem_range(&[("introduced", "0"), ("fixed", "3.12.0")]);
        assert_eq!(in_range(&r, Ecosystem::JavaArchive, "3.12.0-RC1"), Ok(true));
        assert_eq!(in_range(&r, Ecosystem::JavaArchive, "3.9"), Ok(true), "3.9 is before 3.12");
        assert_eq!(in_range(&r, Ecosystem::JavaArchive, "3.12"), Ok(false), "3.12 is 3.12.0");
        let db = Advisories {
            records: vec![Osv {
                id: "GHSA-test-maven".into(),
                summary: "a test advisory".into(),
                withdrawn: None,
                affected: vec![Affected {
                    package: OsvPackage { ecosystem: "Maven".into(), name: "org.apache.commons:commons-lang3".into() },
                    versions: Vec::new(),
                    ranges: vec![ecosystem_range(&[("introduced", "3.0"), ("fixed", "3.13.0")])],
                }],
            }],
            sha256: String::new(),
        };
        let shipped = |name: &'static str, version: &'static str| Audited {
            ecosystem: Ecosystem::JavaArchive,
            name,
            version,
            component: "web",
            image: Some("web (linux/amd64)".into()),
            location: "/opt/java/app.war:WEB-INF/lib/commons-lang3.jar",
        };
        let found =
            audit(&db, &[shipped("org.apache.commons:commons-lang3", "3.12.0"), shipped("org.apache.commons:commons-lang3", "3.13.0")])
                .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].package.as_str(), found[0].version.as_str()), ("org.apache.commons:commons-lang3", "3.12.0"));
        // The artifact alone (an archive without a known group) is not that package.
        assert!(audit(&db, &[shipped("commons-lang3", "3.12.0")]).unwrap().is_empty());
    }
}
