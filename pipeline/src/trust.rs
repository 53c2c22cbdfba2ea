//! The sign and manifest stages: sign every image and index (cosign artifacts in the layout),
//! wrap every SBOM, provenance and the drift report in DSSE, then write `release.yaml` last,
//! and its signature and bundle.
//!
//! 1. image signatures: one cosign artifact per manifest and per index, named
//!    `sha256-<hex>.sig` in the layout's `index.json`;
//! 2. `attest/<component>/<platform>.sbom.dsse.json` (statement: subject the manifest,
//!    predicate the CycloneDX JSON), `attest/<component>/<platform>.provenance.dsse.json`,
//!    `attest/drift.dsse.json` (subjects: every image);
//! 3. the same documents and signatures as OCI 1.1 referrers in the layout ([`crate::referrers`]);
//! 4. `release.yaml` (spec §6.1), then `release.yaml.sig` and `release.yaml.sigstore.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::Images;
use crate::evidence::Evidence;
use crate::keys::SigningKey;
use crate::manifest::{self, ChartEntry, Checksums, ComponentEntry, ComposeEntry, ReleaseInfo, ReleaseYaml, SignatureEntry};
use crate::model::{rfc3339, Digest};
use crate::oci::{write_atomic, Layout, LayoutError};
use crate::plan::Plan;
use crate::report::{Event, Reporter, Stage};
use crate::sign;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
}

impl TrustError {
    pub fn exit_code(&self) -> i32 {
        match self {
            TrustError::Key(k) => k.exit_code(),
            _ => crate::exit::ENVIRONMENT,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io { path: path.to_owned(), source }
}

/// Chart and compose file rendered for the release (when the templates stage ran).
#[derive(Debug, Clone, Default)]
pub struct Deployables {
    pub charts: Vec<ChartEntry>,
    pub compose: Option<ComposeEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    pub key_id: String,
    pub image_signatures: usize,
    pub envelopes: usize,
    /// OCI referrers added to the layout ([`crate::referrers`]).
    pub referrers: usize,
    pub release_yaml: PathBuf,
}

/// What the release made before this stage.
#[derive(Debug)]
pub struct Made<'a> {
    /// The transparency log's URL, when one is configured.
    pub rekor: Option<&'a str>,
    pub plan: &'a Plan,
    pub layout: &'a Layout,
    pub images: &'a Images,
    pub evidence: &'a Evidence,
    pub deployables: &'a Deployables,
}

/// Runs both stages into `out` (the staging release directory).
pub fn run(made: &Made<'_>, key: &SigningKey, out: &Path, reporter: &dyn Reporter) -> Result<Signed, TrustError> {
    let Made { rekor, plan, layout, images, evidence, deployables } = *made;
    // 1. Image signatures.
    let mut sigs = Vec::new();
    for c in images.components.values() {
        for i in &c.images {
            sigs.push(sign::sign_image(key, layout, &c.repository, &i.manifest.digest)?);
        }
        sigs.push(sign::sign_image(key, layout, &c.repository, &c.index.digest)?);
    }
    reporter.event(Event::StageStarted { stage: Stage::Sign, jobs: sigs.len() });
    let mut index = layout.index()?;
    index.manifests.retain(|d| !d.annotations.get(crate::oci::ANNOTATION_REF_NAME).is_some_and(|n| n.ends_with(".sig")));
    let image_signatures = sigs.len();
    let pem = key.public().pem().to_owned();
    let mut log_entries: Vec<crate::tlog::Entry> = sigs
        .iter()
        .map(|s| {
            let tag = s.descriptor.annotations.get(crate::oci::ANNOTATION_REF_NAME).cloned().unwrap_or_default();
            crate::tlog::hashed_rekord(&format!("images/{tag}"), &s.payload, &s.signature, &pem)
        })
        .collect();
    index.manifests.extend(sigs.into_iter().map(|s| s.descriptor));
    layout.write_index(&index)?;

    // 2. DSSE envelopes.
    let mut envelopes = 0;
    let mut subjects: Vec<(String, Digest)> = Vec::new();
    for e in &evidence.images {
        let c = &images.components[&e.component];
        let image = c.images.iter().find(|i| i.platform.as_str() == e.platform).expect("evidence names built images");
        let name = format!("{}@{}", c.repository, image.manifest.digest);
        subjects.push((name.clone(), image.manifest.digest.clone()));
        let sbom_path = out.join(&e.sbom_json);
        let sbom: serde_json::Value =
            serde_json::from_slice(&fs::read(&sbom_path).map_err(io(&sbom_path))?).map_err(|e| io(&sbom_path)(e.into()))?;
        let statement = sign::statement(&[(name.clone(), &image.manifest.digest)], sign::SBOM_PREDICATE, sbom);
        let slug = image.platform.slug();
        let dir = out.join("attest").join(&e.component);
        let sbom_env = sign::sign_envelope(key, sign::PAYLOAD_TYPE, &statement);
        write_envelope(&dir.join(format!("{slug}.sbom.dsse.json")), &sbom_env)?;
        let prov_path = out.join(&e.provenance);
        let prov = fs::read(&prov_path).map_err(io(&prov_path))?;
        let prov_env = sign::sign_envelope(key, sign::PAYLOAD_TYPE, &prov);
        write_envelope(&dir.join(format!("{slug}.provenance.dsse.json")), &prov_env)?;
        for (kind, env) in [("sbom", &sbom_env), ("provenance", &prov_env)] {
            let id = format!("attest/{}/{slug}.{kind}.dsse.json", e.component);
            log_entries.push(crate::tlog::dsse(&id, &serde_json::to_string(env).unwrap_or_default(), &pem));
        }
        envelopes += 2;
        reporter.event(Event::JobFinished { stage: Stage::Sign, job: format!("{} {}", e.component, e.platform), detail: "signed".into() });
    }
    let drift: serde_json::Value =
        serde_json::from_slice(&fs::read(&evidence.drift).map_err(io(&evidence.drift))?).map_err(|e| io(&evidence.drift)(e.into()))?;
    let refs: Vec<(String, &Digest)> = subjects.iter().map(|(n, d)| (n.clone(), d)).collect();
    let drift_statement = sign::statement(&refs, sign::DRIFT_PREDICATE, drift);
    let drift_env = sign::sign_envelope(key, sign::PAYLOAD_TYPE, &drift_statement);
    write_envelope(&out.join("attest/drift.dsse.json"), &drift_env)?;
    log_entries.push(crate::tlog::dsse("attest/drift.dsse.json", &serde_json::to_string(&drift_env).unwrap_or_default(), &pem));
    envelopes += 1;
    // Every SBOM, envelope, drift report and signature again as an OCI 1.1 referrer.
    let referrers = crate::referrers::attach(layout, images, evidence, out, plan.source_date_epoch)?.referrers;
    reporter.event(Event::StageFinished { stage: Stage::Sign });

    // The transparency log, when one is configured; what it cannot take now is queued.
    let logged: BTreeMap<String, crate::tlog::Logged> = match rekor {
        Some(url) => {
            let results = crate::tlog::submit_all(url, &log_entries, out).map_err(io(out))?;
            let pending = results.iter().filter(|(_, l)| matches!(l, crate::tlog::Logged::Pending { .. })).count();
            if pending > 0 {
                reporter.event(Event::Note {
                    message: format!("transparency log `{url}`: {pending} of {} entries pending (queued in attest/tlog/pending; send them with `cargo xtask attest resubmit`)", results.len()),
                });
            }
            results.into_iter().collect()
        }
        None => BTreeMap::new(),
    };
    let rekor_of = |digest: &Digest| match rekor {
        None => "none".to_owned(),
        Some(_) => {
            logged.get(&format!("images/{}", sign::signature_tag(digest))).map(|l| l.rekor_uuid()).unwrap_or_else(|| "pending".into())
        }
    };

    // 4. release.yaml, last, then its signatures.
    let mut doc = ReleaseYaml {
        release: ReleaseInfo {
            version: plan.version.version.to_string(),
            channel: plan.channel.to_string(),
            date: rfc3339(plan.source_date_epoch),
            calendar: plan.version.calendar.to_string(),
        },
        components: plan
            .components
            .iter()
            .map(|pc| {
                let c = &images.components[&pc.name];
                let first = evidence.images.iter().find(|e| e.component == pc.name);
                let digest_of = |rel: Option<&String>| {
                    rel.and_then(|r| fs::read(out.join(r)).ok()).map(|b| Digest::of(&b).to_string()).unwrap_or_default()
                };
                let prov_env = first.map(|e| format!("attest/{}/{}.provenance.dsse.json", e.component, e.platform.replace('/', "-")));
                ComponentEntry {
                    name: pc.name.clone(),
                    image: format!("{}@{}", c.repository, c.index.digest),
                    sbom: format!("oci://{}/referrers/cdx-json@{}", c.repository, digest_of(first.map(|e| &e.sbom_json))),
                    provenance: format!("oci://{}/attest/provenance@{}", c.repository, digest_of(prov_env.as_ref())),
                    signature: SignatureEntry { rekor_uuid: rekor_of(&c.index.digest) },
                }
            })
            .collect(),
        charts: deployables.charts.clone(),
        compose: deployables.compose.clone().unwrap_or(ComposeEntry { file: String::new(), digest: String::new() }),
        checksums: Checksums { sha256: String::new() },
    };
    let bytes = manifest::render(&mut doc);
    let path = out.join("release.yaml");
    write_atomic(&path, &bytes).map_err(io(&path))?;
    let sig = manifest::blob_signature(key, &bytes);
    let sig_path = out.join("release.yaml.sig");
    write_atomic(&sig_path, format!("{sig}\n").as_bytes()).map_err(io(&sig_path))?;
    let bundle_path = out.join("release.yaml.sigstore.json");
    sign::write_json(&bundle_path, &manifest::bundle(key, &bytes, &sig)).map_err(io(&bundle_path))?;
    if let Some(url) = rekor {
        let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &sig).unwrap_or_default();
        crate::tlog::submit_all(url, &[crate::tlog::hashed_rekord("release.yaml", &bytes, &raw, &pem)], out).map_err(io(out))?;
    }
    Ok(Signed { key_id: key.public().key_id(), image_signatures, envelopes, referrers, release_yaml: path })
}

fn write_envelope(path: &Path, env: &sign::Envelope) -> Result<(), TrustError> {
    sign::write_json(path, env).map_err(io(path))
}
