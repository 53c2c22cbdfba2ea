//! The evidence stage: for every image, in parallel, the build-time SBOM (JSON and protobuf),
//! the post-build scan, the drift check between them, and the SLSA provenance.
//!
//! ```text
//! built image ─┬─► build-time SBOM ──┐
//!              └─► scan (layers) ────┴─► drift ─► gate (channel policy)
//!              └─► provenance            ▲
//! base inventory (made by the build, ────┘ (and into the SBOM: the base's contribution)
//!   cached per base digest: `inventory`)
//! ```
//!
//! Outputs, under the release directory: `sboms/<component>/<platform>.cdx.json|.cdx.pb`,
//! `scans/<component>/<platform>.json`, `provenance/<component>/<platform>.intoto.json`,
//! `drift.json` (every image's report, accepted differences with their reasons).

pub mod auditable;
pub mod drift;
pub mod goinfo;
pub mod inventory;
pub mod java;
pub mod provenance;
pub mod sbom;
pub mod scan;

use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::stages::build::{BuiltImage, Images};
use crate::stages::evidence::sbom::{generate, proto};
use crate::stages::plan::Plan;
use drift::{DriftFile, DriftReport};
use oci::{write_atomic, Layout, Manifest};
use provenance::RunTimes;
use schema::model::Platform;
use schema::report::{Event, Reporter, Stage};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("image `{component}` ({platform}): scan: {source}")]
    Scan {
        component: String,
        platform: String,
        #[source]
        source: scan::ScanError,
    },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Layout(#[from] oci::LayoutError),
    #[error("`{path}`: cannot serialize the {what}: {source}")]
    Serialize {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{path}`: {source}")]
    Proto {
        path: PathBuf,
        #[source]
        source: proto::ProtoError,
    },
    #[error("image `{component}` ({platform}): the build gave no base inventory (this is a bug)")]
    NoBaseInventory { component: String, platform: String },
    #[error("image `{component}` ({platform}): provenance: {message}")]
    Provenance { component: String, platform: String, message: String },
    #[error("drift between the build-time SBOM and the scan of the image ({count} difference{} not accepted by the `{channel}` policy); report: `{}`\n{table}  hint: fix the build, or accept the exact difference with a reason in `release-trains/{channel}.toml` ([[drift.accept]])", if *.count == 1 { "" } else { "s" }, .report.display())]
    Drift { count: usize, channel: String, table: String, report: PathBuf },
}

impl EvidenceError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            EvidenceError::Scan { source: scan::ScanError::Malformed { .. } | scan::ScanError::TextTooLarge { .. }, .. }
            | EvidenceError::Drift { .. } => schema::exit::REJECTED,
            EvidenceError::Scan { source: scan::ScanError::Layout(oci::LayoutError::DigestMismatch { .. }), .. } => schema::exit::REJECTED,
            _ => schema::exit::ENVIRONMENT,
        }
    }
}

/// What the evidence stage wrote for one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageEvidence {
    pub component: String,
    pub platform: Platform,
    /// Paths relative to the release directory.
    pub sbom_json: PathBuf,
    pub sbom_protobuf: PathBuf,
    pub provenance: PathBuf,
    pub scan: PathBuf,
    pub packages: usize,
    pub files: usize,
    pub accepted_drift: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// In plan order (component, then platform).
    pub images: Vec<ImageEvidence>,
    pub drift: PathBuf,
}

impl Evidence {
    /// The evidence of one image.
    pub fn get(&self, component: &str, platform: Platform) -> Option<&ImageEvidence> {
        self.images.iter().find(|e| e.component == component && e.platform == platform)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    let io = |source| EvidenceError::Io { path: path.to_owned(), source };
    fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
    write_atomic(path, bytes).map_err(|source| EvidenceError::Io { path: path.to_owned(), source })
}

/// `value` as pretty JSON, for the file `rel` under `out`: a value that does not serialize
/// fails the stage (never an empty file).
fn pretty(out: &Path, rel: String, what: &'static str, value: &impl Serialize) -> Result<(String, Vec<u8>), EvidenceError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| EvidenceError::Serialize { path: out.join(&rel), what, source })?;
    Ok((rel, bytes))
}

/// Where the stage writes, and the run's times.
#[derive(Debug)]
pub struct Outputs<'a> {
    /// The (staging) release directory.
    pub dir: &'a Path,
    /// Where the drift report goes when the gate stops the release.
    pub failed_report: &'a Path,
    pub times: &'a RunTimes,
    /// Where scans are kept by image manifest digest (`<cache>/builds/scans`), when the build
    /// cache is on: an image from the cache is not scanned again.
    pub scan_cache: Option<PathBuf>,
}

/// The scan of the image `manifest` (digest `digest`): kept in `cache` by the manifest digest
/// and the pipeline version (the same manifest is the same bytes: every blob was checked on its
/// way into the layout), else made and kept. A kept scan that does not read is made again.
fn scan_kept(
    layout: &Layout,
    manifest: &Manifest,
    digest: &schema::model::Digest,
    cache: Option<&Path>,
) -> Result<scan::ScanResult, scan::ScanError> {
    let Some(dir) = cache else { return scan::scan(layout, manifest) };
    let path = dir.join(format!("{}-{}.json", env!("CARGO_PKG_VERSION"), digest.hex()));
    if let Ok(bytes) = fs::read(&path) {
        if let Ok(kept) = serde_json::from_slice::<scan::KeptScan>(&bytes) {
            if &kept.manifest == digest {
                return Ok(kept.into_result());
            }
        }
    }
    let s = scan::scan(layout, manifest)?;
    // A scan that cannot be kept costs the next release a scan, never this one.
    if let Ok(bytes) = serde_json::to_vec(&scan::KeptScan::of(digest, &s)) {
        let _ = fs::create_dir_all(dir).and_then(|()| write_atomic(&path, &bytes));
    }
    Ok(s)
}

/// Runs the stage for every image; writes under `out`; `failed_report` is where the drift
/// report goes when the gate stops the release (the release directory is then not made).
pub fn run(plan: &Plan, layout: &Layout, images: &Images, out: &Outputs<'_>, reporter: &dyn Reporter) -> Result<Evidence, EvidenceError> {
    let (times, failed_report, scan_cache) = (out.times, out.failed_report, out.scan_cache.as_deref());
    let out = out.dir;
    let policy = &plan.drift.accept;
    // The toolchain is recorded in the provenance: a source tree without `rust-toolchain.toml`
    // (or without a `channel` in it) records "unknown", but a file that cannot be read fails.
    let toolchain_file = plan.root.join("rust-toolchain.toml");
    let toolchain = match fs::read_to_string(&toolchain_file) {
        Ok(t) => t.lines().find_map(|l| l.strip_prefix("channel = ").map(|v| v.trim_matches('"').to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(EvidenceError::Io { path: toolchain_file, source }),
    }
    .unwrap_or_else(|| "unknown".to_owned());
    let jobs: Vec<(&crate::stages::plan::PlannedComponent, &BuiltImage, &schema::model::Digest)> = plan
        .components
        .iter()
        .flat_map(|c| {
            let ci = &images.components[&c.name];
            ci.images.iter().map(move |i| (c, i, &ci.index.digest))
        })
        .collect();
    reporter.event(Event::StageStarted { stage: Stage::Evidence, jobs: jobs.len() });
    let results: Vec<(ImageEvidence, DriftReport)> = jobs
        .par_iter()
        // One job per split: a free thread takes the next job (a job from the cache takes a
        // fraction of one built, so halves of the list would leave one thread with the work).
        .with_max_len(1)
        .map(|(c, image, index)| {
            let job = format!("{} {}", c.name, image.platform);
            reporter.event(Event::JobStarted { stage: Stage::Evidence, job: job.clone() });
            let slug = image.platform.slug();
            let manifest: Manifest = layout.read_json(&image.manifest.digest, "an image manifest")?;
            let (bom, scanned) = rayon::join(|| generate::build_time(plan, c, image, index), || scan_kept(layout, &manifest, &image.manifest.digest, scan_cache));
            let scanned = scanned.map_err(|source| EvidenceError::Scan {
                component: c.name.clone(),
                platform: image.platform.to_string(),
                source,
            })?;
            let base = image
                .known
                .base_inventory
                .as_deref()
                .ok_or_else(|| EvidenceError::NoBaseInventory { component: c.name.clone(), platform: image.platform.to_string() })?;
            let report = drift::compare(&c.name, image.platform, &bom, &scanned, base, policy);
            let statement = provenance::statement(plan, c, image, index, &toolchain, times).map_err(|message| {
                EvidenceError::Provenance { component: c.name.clone(), platform: image.platform.to_string(), message }
            })?;
            let rel = |dir: &str, ext: &str| format!("{dir}/{}/{slug}.{ext}", c.name);
            let files = [
                (rel("sboms", "cdx.json"), bom.to_json()),
                (
                    rel("sboms", "cdx.pb"),
                    proto::try_encode(&bom).map_err(|source| EvidenceError::Proto { path: out.join(rel("sboms", "cdx.pb")), source })?,
                ),
                pretty(out, rel("scans", "json"), "scan", &scanned)?,
                pretty(out, rel("provenance", "intoto.json"), "provenance statement", &statement)?,
            ];
            for (path, bytes) in &files {
                write(&out.join(path), bytes)?;
            }
            reporter.event(Event::JobFinished {
                stage: Stage::Evidence,
                job,
                detail: format!(
                    "{} components, {} differences; base: {} packages, {} files no package owns; component: {} packages, {} files, {} removals",
                    bom.components.len(),
                    report.differences.len(),
                    report.from_base.packages,
                    report.from_base.files,
                    report.from_component.found_packages,
                    report.from_component.found_files,
                    report.from_component.found_removed,
                ),
            });
            Ok((
                ImageEvidence {
                    component: c.name.clone(),
                    platform: image.platform,
                    sbom_json: PathBuf::from(&files[0].0),
                    sbom_protobuf: PathBuf::from(&files[1].0),
                    scan: PathBuf::from(&files[2].0),
                    provenance: PathBuf::from(&files[3].0),
                    packages: scanned.packages.len(),
                    files: scanned.files.len(),
                    accepted_drift: report.differences.iter().filter(|d| d.accepted.is_some()).count(),
                },
                report,
            ))
        })
        .collect::<Result<_, EvidenceError>>()?;
    let (evidence, reports): (Vec<ImageEvidence>, Vec<DriftReport>) = results.into_iter().unzip();
    let rejected: usize = reports.iter().map(|r| r.rejected().count()).sum();
    let table = if rejected > 0 {
        let with_differences: Vec<DriftReport> = reports.iter().filter(|r| r.rejected().count() > 0).cloned().collect();
        format!("{}{}", drift::table(&reports), drift::contributions(&with_differences))
    } else {
        String::new()
    };
    let doc = DriftFile { channel: plan.channel, images: reports, version: plan.version }
        .to_json()
        .map_err(|source| EvidenceError::Serialize { path: out.join("drift.json"), what: "drift report", source })?;
    reporter.event(Event::StageFinished { stage: Stage::Evidence });
    if rejected > 0 {
        write(failed_report, &doc)?;
        return Err(EvidenceError::Drift { count: rejected, channel: plan.channel.to_string(), table, report: failed_report.to_owned() });
    }
    write(&out.join("drift.json"), &doc)?;
    Ok(Evidence { images: evidence, drift: out.join("drift.json") })
}
