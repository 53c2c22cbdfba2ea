//! The sign stage: sign every image and index (cosign artifacts in the layout), wrap every
//! SBOM, provenance and the drift report in DSSE, attach them as referrers, and enter every
//! signature in the transparency log when one is configured. Out: [`Signed`], which the
//! manifest stage ([`crate::stages::manifest`]) turns into `release.yaml`.
//!
//! 1. image signatures: one cosign artifact per manifest and per index, named
//!    `sha256-<hex>.sig` in the layout's `index.json`;
//! 2. `attest/<component>/<platform>.sbom.dsse.json` (statement: subject the manifest,
//!    predicate the CycloneDX JSON), `attest/<component>/<platform>.sbom-protobuf.dsse.json`
//!    (subject the manifest, predicate the `.cdx.pb` file by sha256 and size),
//!    `attest/<component>/<platform>.provenance.dsse.json`, `attest/drift.dsse.json`
//!    (subjects: every image);
//! 3. the same documents and signatures as OCI 1.1 referrers in the layout ([`crate::stages::sign::referrers`]);
//! 4. the transparency log: every signature and envelope entered (or queued when it is down);
//!    signed keyless, each envelope also as a sigstore bundle with the certificate and its entry
//!    (`attest/<component>/<platform>.<kind>.sigstore.json`, `attest/drift.sigstore.json`).

pub mod referrers;
pub mod tlog;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::stages::build::Images;
use crate::stages::evidence::Evidence;
use crate::stages::plan::Plan;
use oci::{Layout, LayoutError};
use schema::model::{Digest, Platform};
use schema::report::{Event, Reporter, Stage};
use verifier::keys::Signer;
use verifier::sign;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] verifier::keys::KeyError),
    #[error(transparent)]
    Signer(#[from] verifier::keys::SignerError),
    #[error(
        "the signature manifest `{digest}` has no `{}` annotation, so its transparency-log entry cannot name it",
        oci::ANNOTATION_REF_NAME
    )]
    UnnamedSignature { digest: Digest },
}

impl SignError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            SignError::Key(k) => k.exit_code(),
            SignError::Signer(e) => e.exit_code(),
            _ => schema::exit::ENVIRONMENT,
        }
    }
}

fn image_error(e: sign::SignImageError) -> SignError {
    match e {
        sign::SignImageError::Signer(e) => SignError::Signer(e),
        sign::SignImageError::Layout(e) => SignError::Layout(e),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SignError + '_ {
    move |source| SignError::Io { path: path.to_owned(), source }
}

/// What the sign stage made: counts for the report, and what the manifest stage needs.
#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    pub key_id: String,
    pub image_signatures: usize,
    pub envelopes: usize,
    /// OCI referrers added to the layout ([`crate::stages::sign::referrers`]).
    pub referrers: usize,
    /// The transparency log, when one is configured.
    #[serde(skip)]
    pub rekor: Option<tlog::Log>,
    /// Transparency log results by entry id (`images/sha256-<hex>.sig`, `attest/...`).
    #[serde(skip)]
    pub logged: BTreeMap<String, tlog::Logged>,
    /// sha256 of each image's CycloneDX JSON SBOM and signed provenance envelope, as written.
    #[serde(skip)]
    pub documents: BTreeMap<(String, Platform), SignedDocuments>,
}

/// The digests of one image's evidence documents, from the bytes this stage read or wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDocuments {
    /// The platform image manifest the documents are about.
    pub manifest: Digest,
    pub sbom_json: Digest,
    pub sbom_protobuf: Digest,
    pub provenance_envelope: Digest,
}

/// What the release made before this stage.
#[derive(Debug)]
pub struct Made<'a> {
    /// The transparency log, when one is configured.
    pub rekor: Option<&'a tlog::Log>,
    pub plan: &'a Plan,
    pub layout: &'a Layout,
    pub images: &'a Images,
    pub evidence: &'a Evidence,
}

/// Runs the stage into `out` (the staging release directory).
pub fn sign(made: &Made<'_>, key: &dyn Signer, out: &Path, reporter: &dyn Reporter) -> Result<Signed, SignError> {
    let Made { rekor, plan, layout, images, evidence } = *made;
    // 1. Image signatures.
    let mut sigs = Vec::new();
    for c in images.components.values() {
        for i in &c.images {
            sigs.push(sign::sign_image(key, layout, &c.repository, &i.manifest.digest).map_err(image_error)?);
        }
        sigs.push(sign::sign_image(key, layout, &c.repository, &c.index.digest).map_err(image_error)?);
    }
    reporter.event(Event::StageStarted { stage: Stage::Sign, jobs: sigs.len() });
    let mut index = layout.index()?;
    index.manifests.retain(|d| !d.annotations.get(oci::ANNOTATION_REF_NAME).is_some_and(|n| n.ends_with(".sig")));
    let image_signatures = sigs.len();
    // The signer as the log names it: the public key, or a keyless signer's certificate.
    let pem = verifier::keys::log_verifier(key);
    let mut log_entries: Vec<tlog::Entry> = sigs
        .iter()
        .map(|s| {
            let tag = s
                .descriptor
                .annotations
                .get(oci::ANNOTATION_REF_NAME)
                .ok_or_else(|| SignError::UnnamedSignature { digest: s.descriptor.digest.clone() })?;
            Ok(tlog::hashed_rekord(&format!("images/{tag}"), &s.payload, &s.signature, &pem))
        })
        .collect::<Result<_, SignError>>()?;
    index.manifests.extend(sigs.into_iter().map(|s| s.descriptor));
    layout.write_index(&index)?;

    // 2. DSSE envelopes.
    let mut envelopes = 0;
    let mut documents = BTreeMap::new();
    let mut subjects: Vec<(String, Digest)> = Vec::new();
    for e in &evidence.images {
        let c = &images.components[&e.component];
        let image = c.images.iter().find(|i| i.platform == e.platform).expect("evidence names built images");
        let name = format!("{}@{}", c.repository, image.manifest.digest);
        subjects.push((name.clone(), image.manifest.digest.clone()));
        let sbom_path = out.join(&e.sbom_json);
        let sbom_bytes = fs::read(&sbom_path).map_err(io(&sbom_path))?;
        let sbom: serde_json::Value = serde_json::from_slice(&sbom_bytes).map_err(|e| io(&sbom_path)(e.into()))?;
        let statement = sign::statement(&[(name.clone(), &image.manifest.digest)], sign::SBOM_PREDICATE, sbom);
        let slug = image.platform.slug();
        let dir = out.join("attest").join(&e.component);
        let sbom_env = sign::sign_envelope(key, sign::PAYLOAD_TYPE, &statement)?;
        write_envelope(&dir.join(format!("{slug}.sbom.dsse.json")), &sbom_env)?;
        // The protobuf SBOM, by digest: the same subject, signed the same way.
        let pb_path = out.join(&e.sbom_protobuf);
        let pb_bytes = fs::read(&pb_path).map_err(io(&pb_path))?;
        let pb_statement = sign::statement(
            &[(name.clone(), &image.manifest.digest)],
            sign::SBOM_PROTOBUF_PREDICATE,
            sign::protobuf_sbom_predicate(&format!("{slug}.cdx.pb"), &pb_bytes),
        );
        let pb_env = sign::sign_envelope(key, sign::PAYLOAD_TYPE, &pb_statement)?;
        write_envelope(&dir.join(format!("{slug}.sbom-protobuf.dsse.json")), &pb_env)?;
        let prov_path = out.join(&e.provenance);
        let prov = fs::read(&prov_path).map_err(io(&prov_path))?;
        let prov_env = sign::sign_envelope(key, sign::PAYLOAD_TYPE, &prov)?;
        let prov_digest = write_envelope(&dir.join(format!("{slug}.provenance.dsse.json")), &prov_env)?;
        documents.insert(
            (e.component.clone(), image.platform),
            SignedDocuments {
                manifest: image.manifest.digest.clone(),
                sbom_json: Digest::of(&sbom_bytes),
                sbom_protobuf: Digest::of(&pb_bytes),
                provenance_envelope: prov_digest,
            },
        );
        for (kind, env) in [("sbom", &sbom_env), ("sbom-protobuf", &pb_env), ("provenance", &prov_env)] {
            let id = format!("attest/{}/{slug}.{kind}.dsse.json", e.component);
            log_entries.push(tlog::dsse(&id, &serde_json::to_string(env).map_err(|e| io(out)(e.into()))?, &pem));
        }
        envelopes += 3;
        reporter.event(Event::JobFinished { stage: Stage::Sign, job: format!("{} {}", e.component, e.platform), detail: "signed".into() });
    }
    let drift: serde_json::Value =
        serde_json::from_slice(&fs::read(&evidence.drift).map_err(io(&evidence.drift))?).map_err(|e| io(&evidence.drift)(e.into()))?;
    let refs: Vec<(String, &Digest)> = subjects.iter().map(|(n, d)| (n.clone(), d)).collect();
    let drift_statement = sign::statement(&refs, sign::DRIFT_PREDICATE, drift);
    let drift_env = sign::sign_envelope(key, sign::PAYLOAD_TYPE, &drift_statement)?;
    write_envelope(&out.join("attest/drift.dsse.json"), &drift_env)?;
    log_entries.push(tlog::dsse("attest/drift.dsse.json", &serde_json::to_string(&drift_env).map_err(|e| io(out)(e.into()))?, &pem));
    envelopes += 1;
    // The customer tool's raw signature and provenance envelope (the tool stage signed them,
    // before this stage): entered like the others, so a keyless release shows they were made
    // while certified.
    let (program, signature) = (out.join(crate::stages::tool::FILE), out.join(crate::stages::tool::SIGNATURE));
    if program.is_file() && signature.is_file() {
        let bytes = fs::read(&program).map_err(io(&program))?;
        let sig = fs::read(&signature).map_err(io(&signature))?;
        log_entries.push(tlog::hashed_rekord(crate::stages::tool::FILE, &bytes, &sig, &pem));
    }
    let tool_env = out.join(crate::stages::tool::PROVENANCE_ENVELOPE);
    if tool_env.is_file() {
        let env: sign::Envelope =
            serde_json::from_slice(&fs::read(&tool_env).map_err(io(&tool_env))?).map_err(|e| io(&tool_env)(e.into()))?;
        let sent = serde_json::to_string(&env).map_err(|e| io(&tool_env)(e.into()))?;
        log_entries.push(tlog::dsse(crate::stages::tool::PROVENANCE_ENVELOPE, &sent, &pem));
    }
    // Every SBOM, envelope, drift report and signature again as an OCI 1.1 referrer.
    let referrers = referrers::attach(layout, images, evidence, out, plan.source_date_epoch)?.referrers;
    reporter.event(Event::StageFinished { stage: Stage::Sign });

    // The transparency log, when one is configured; what it cannot take now is queued.
    let logged: BTreeMap<String, tlog::Logged> = match rekor {
        Some(log) => {
            let url = &log.url;
            let results = tlog::submit_all(log, &log_entries, out).map_err(io(out))?;
            tlog::require_logged(key, log, &results)?;
            tlog::write_envelope_bundles(key, out, &results).map_err(io(out))?;
            let pending: Vec<(&String, &String)> = results
                .iter()
                .filter_map(|(id, l)| match l {
                    tlog::Logged::Pending { reason } => Some((id, reason)),
                    tlog::Logged::Logged { .. } => None,
                })
                .collect();
            if let Some((id, reason)) = pending.first() {
                reporter.event(Event::Note {
                    message: format!(
                        "transparency log `{url}`: {} of {} entries pending (queued in attest/tlog/pending; send them with `cargo xtask attest resubmit`); the first, `{id}`: {reason}",
                        pending.len(),
                        results.len()
                    ),
                });
            }
            results.into_iter().collect()
        }
        None => BTreeMap::new(),
    };
    Ok(Signed { key_id: key.public().key_id(), image_signatures, envelopes, referrers, rekor: rekor.cloned(), logged, documents })
}

fn write_envelope(path: &Path, env: &sign::Envelope) -> Result<Digest, SignError> {
    sign::write_json(path, env).map_err(io(path))
}
