//! The manifest stage: `release.yaml` (spec §6.1), written last, then `release.yaml.sig` and
//! `release.yaml.sigstore.json`, and the log entry of release.yaml when a log is configured.
//! Each component lists, beside §6.1's keys (whose `sbom` and `provenance` are its first
//! platform's), every platform's image, SBOMs and provenance (`platforms`, see
//! [`schema::release`]).
//!
//! In: the plan, the built images, the sign stage's [`Signed`] (the digests of every SBOM and
//! provenance envelope, from the bytes it read or wrote; the transparency log's answers) and
//! the rendered chart and compose file. Nothing here reads back a file to learn a digest: a
//! digest missing from its inputs is an internal error, never an empty string.

use std::path::{Path, PathBuf};

use oci::write_atomic;
use schema::exit;
use schema::model::{rfc3339, Digest, PinnedRef};
use verifier::keys::Signer;
use verifier::manifest::{
    self, ChartEntry, Checksums, ComponentEntry, ComposeEntry, PlatformEntry, ReleaseInfo, ReleaseYaml, SignatureEntry,
};
use verifier::sign;

use crate::stages::build::Images;
use crate::stages::plan::Plan;
use crate::stages::sign::{tlog, Signed};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest stage: `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest stage: {0}")]
    Signer(#[from] verifier::keys::SignerError),
    /// An input the stage needs was not handed to it: a bug in the orchestrator.
    #[error("manifest stage: internal error: {0}")]
    Missing(String),
}

impl ManifestError {
    pub fn exit_code(&self) -> exit::Code {
        match self {
            ManifestError::Io { .. } => exit::ENVIRONMENT,
            ManifestError::Signer(e) => e.exit_code(),
            ManifestError::Missing(_) => exit::INTERNAL,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Io { path: path.to_owned(), source }
}

/// Chart and compose file rendered for the release (when the templates stage ran).
#[derive(Debug, Clone, Default)]
pub struct Deployables {
    pub charts: Vec<ChartEntry>,
    pub compose: Option<ComposeEntry>,
    /// The customer tool ([`crate::stages::tool`]).
    pub tools: Vec<schema::release::ToolEntry>,
}

/// What the stage wrote.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    /// sha256 of release.yaml.
    pub digest: Digest,
    pub doc: ReleaseYaml,
}

/// The document itself, from typed inputs (pure; [`write`](fn@write) adds the files and signatures).
pub fn document(plan: &Plan, images: &Images, signed: &Signed, deployables: &Deployables) -> Result<ReleaseYaml, ManifestError> {
    let rekor_of = |digest: &Digest| match &signed.rekor {
        None => "none".to_owned(),
        Some(_) => signed
            .logged
            .get(&format!("images/{}", sign::signature_tag(digest)))
            .map(tlog::Logged::rekor_uuid)
            .unwrap_or_else(|| "pending".into()),
    };
    let mut components = Vec::with_capacity(plan.components.len());
    for pc in &plan.components {
        let c = images.components.get(&pc.name).ok_or_else(|| ManifestError::Missing(format!("no images for component `{}`", pc.name)))?;
        let pinned = |digest: &Digest| -> Result<PinnedRef, ManifestError> {
            format!("{}@{digest}", c.repository)
                .parse()
                .map_err(|e| ManifestError::Missing(format!("component `{}`: image reference: {e}", pc.name)))
        };
        // Every platform's references, in the plan's platform order.
        let mut platforms = Vec::with_capacity(pc.images.len());
        for i in &pc.images {
            let docs = signed
                .documents
                .get(&(pc.name.clone(), i.platform))
                .ok_or_else(|| ManifestError::Missing(format!("no signed SBOM and provenance for `{}` {}", pc.name, i.platform)))?;
            platforms.push(PlatformEntry {
                platform: i.platform,
                image: pinned(&docs.manifest)?,
                sbom: format!("oci://{}/referrers/cdx-json@{}", c.repository, docs.sbom_json),
                sbom_protobuf: format!("oci://{}/referrers/cdx-protobuf@{}", c.repository, docs.sbom_protobuf),
                provenance: format!("oci://{}/attest/provenance@{}", c.repository, docs.provenance_envelope),
            });
        }
        // §6.1 names one SBOM and one provenance per component: its first platform's.
        let first = platforms.first().ok_or_else(|| ManifestError::Missing(format!("component `{}` has no platform", pc.name)))?;
        components.push(ComponentEntry {
            name: pc.name.clone(),
            image: pinned(&c.index.digest)?,
            sbom: first.sbom.clone(),
            provenance: first.provenance.clone(),
            signature: SignatureEntry { rekor_uuid: rekor_of(&c.index.digest) },
            platforms,
        });
    }
    Ok(ReleaseYaml {
        release: ReleaseInfo {
            version: plan.version.version,
            channel: plan.channel,
            date: rfc3339(plan.source_date_epoch),
            calendar: plan.version.calendar.to_string(),
        },
        components,
        charts: deployables.charts.clone(),
        compose: deployables.compose.clone().unwrap_or_else(ComposeEntry::none),
        tools: deployables.tools.clone(),
        checksums: Checksums { sha256: String::new() },
    })
}

/// Writes release.yaml into `out` (the staging release directory), then its signature and
/// sigstore bundle, and enters it in the transparency log when one is configured.
pub fn write(
    plan: &Plan,
    images: &Images,
    signed: &Signed,
    deployables: &Deployables,
    key: &dyn Signer,
    out: &Path,
) -> Result<Manifest, ManifestError> {
    let mut doc = document(plan, images, signed, deployables)?;
    let bytes = manifest::render(&mut doc);
    let path = out.join("release.yaml");
    write_atomic(&path, &bytes).map_err(io(&path))?;
    let (sig, raw) = manifest::blob_signature_raw(key, &bytes)?;
    let sig_path = out.join("release.yaml.sig");
    write_atomic(&sig_path, format!("{sig}\n").as_bytes()).map_err(io(&sig_path))?;
    let bundle_path = out.join("release.yaml.sigstore.json");
    sign::write_json(&bundle_path, &manifest::bundle(key, &bytes, &sig)).map_err(io(&bundle_path))?;
    if let Some(log) = &signed.rekor {
        let pem = verifier::keys::log_verifier(key);
        let results = tlog::submit_all(log, &[tlog::hashed_rekord("release.yaml", &bytes, &raw, &pem)], out).map_err(io(out))?;
        tlog::require_logged(key, log, &results)?;
        tlog::record_in_bundle(out).map_err(io(&bundle_path))?;
    }
    Ok(Manifest { path, digest: Digest::of(&bytes), doc })
}
