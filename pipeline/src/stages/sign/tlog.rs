//! The transparency log (Rekor's `/api/v1/log/entries`, or Rekor v2's `/api/v2/log/entries`),
//! when one is configured.
//!
//! Every image signature (`hashedrekord`), every DSSE envelope (`dsse`) and release.yaml's
//! signature is submitted. The log's answer (the entry, with its inclusion proof when the log
//! gives one) is kept beside the bundles in `attest/tlog/`. An entry the log already has
//! (409) counts as logged. When the log cannot be reached or fails (connection refused,
//! timeout, 5xx), the release still completes (spec §12.2): the entry goes to
//! `attest/tlog/pending/`, release.yaml says `pending`, and `cargo xtask attest resubmit`
//! sends the queue later (and signs its record, `attest/tlog/resubmitted.dsse.json`). With no
//! log configured, nothing is sent. Rekor v2 takes the same entries as `CreateEntryRequest`s
//! ([`v2_request`]) and answers with `TransparencyLogEntry`s. What is kept is checked offline
//! by `verifier::tlog`.
//!
//! An answer is checked before it is kept ([`check`], `verifier::tlog::check_answer`): it must
//! be about the entry sent (body, UUID) and proven (the inclusion proof recomputes the root its
//! checkpoint states); with the log's key pinned (`--rekor-key`, [`Log::key`]), its checkpoint
//! and signed entry timestamp must also be signed by that key. An answer that does not check is
//! not kept: the entry is queued as for a log that is down, with the reason, so the release is
//! not promotable until an honest log has taken it (`attest resubmit`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use oci::write_atomic;

/// One entry to log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// What it is, relative to the release directory (`release.yaml`, `attest/...`,
    /// `images/sha256-<hex>.sig`).
    pub id: String,
    /// The request body (Rekor's proposed entry).
    pub body: serde_json::Value,
}

/// A signature over an artifact's sha256 (`hashedrekord`).
pub fn hashed_rekord(id: &str, artifact: &[u8], signature: &[u8], public_pem: &str) -> Entry {
    let b64 = base64::engine::general_purpose::STANDARD;
    Entry {
        id: id.to_owned(),
        body: serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "signature": { "content": b64.encode(signature), "publicKey": { "content": b64.encode(public_pem) } },
                "data": { "hash": { "algorithm": "sha256", "value": schema::model::Digest::of(artifact).hex() } },
            },
        }),
    }
}

/// A DSSE envelope (`dsse`).
pub fn dsse(id: &str, envelope_json: &str, public_pem: &str) -> Entry {
    let b64 = base64::engine::general_purpose::STANDARD;
    Entry {
        id: id.to_owned(),
        body: serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": { "proposedContent": { "envelope": envelope_json, "verifiers": [b64.encode(public_pem)] } },
        }),
    }
}

/// What the log said of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Logged {
    Logged { uuid: String },
    Pending { reason: String },
}

impl Logged {
    /// What release.yaml says: the entry's UUID, or `pending`.
    pub fn rekor_uuid(&self) -> String {
        match self {
            Logged::Logged { uuid } => uuid.clone(),
            Logged::Pending { .. } => "pending".to_owned(),
        }
    }
}

fn file_name(id: &str) -> String {
    verifier::tlog::file_stem(id)
}

pub fn tlog_dir(release: &Path) -> PathBuf {
    release.join("attest/tlog")
}

/// A transparency log: where it is, which of Rekor's APIs it speaks, and its public key (SPKI
/// PEM) when pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub url: String,
    pub api: RekorApi,
    pub key: Option<String>,
}

/// Checks the log's `answer` to `entry` (module doc): what the entry was about and the key it
/// was signed with are read back from the request as sent.
pub fn check(log: &Log, entry: &Entry, answer: &serde_json::Value) -> Result<(), String> {
    use verifier::keys::PublicKey;
    use verifier::tlog::Expected;
    let b64 = base64::engine::general_purpose::STANDARD;
    let spec = &entry.body["spec"];
    let key_of = |v: &serde_json::Value| -> Result<PublicKey, String> {
        let pem = b64.decode(v.as_str().unwrap_or_default()).map_err(|e| format!("the request's public key: {e}"))?;
        verifier::keyless::key_of_pem(&String::from_utf8_lossy(&pem))
    };
    let (expected, release_key) = match entry.body["kind"].as_str() {
        Some("hashedrekord") => {
            let hex = spec["data"]["hash"]["value"].as_str().unwrap_or_default();
            let artifact: schema::model::Digest = format!("sha256:{hex}").parse().map_err(|e| format!("the request's digest: {e}"))?;
            let signature = b64
                .decode(spec["signature"]["content"].as_str().unwrap_or_default())
                .map_err(|e| format!("the request's signature: {e}"))?;
            (Expected::Signature { artifact, signature }, key_of(&spec["signature"]["publicKey"]["content"])?)
        }
        Some("dsse") => {
            let content = &spec["proposedContent"];
            let sent = content["envelope"].as_str().unwrap_or_default().to_owned();
            let envelope = serde_json::from_str(&sent).map_err(|e| format!("the request's envelope: {e}"))?;
            (Expected::Envelope { sent, envelope }, key_of(&content["verifiers"][0])?)
        }
        k => return Err(format!("no check for entries of kind {k:?}")),
    };
    let pinned = log.key.as_deref().map(PublicKey::from_pem).transpose().map_err(|e| format!("the log's pinned key: {e}"))?;
    verifier::tlog::check_answer(answer, &expected, &release_key, pinned.as_ref()).map(|_| ())
}

pub use schema::files::RekorApi;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(20))).http_status_as_error(false).build().into()
}

/// Submits one entry; `Err` (the entry stays queued) for anything but an accepted or
/// already-present entry whose answer was read.
fn submit(log: &Log, entry: &Entry) -> Result<(String, serde_json::Value), String> {
    match log.api {
        RekorApi::V1 => submit_v1(&log.url, entry),
        RekorApi::V2 => submit_v2(&log.url, entry),
    }
}

fn submit_v1(url: &str, entry: &Entry) -> Result<(String, serde_json::Value), String> {
    let agent = agent();
    let endpoint = format!("{}/api/v1/log/entries", url.trim_end_matches('/'));
    let mut resp =
        agent.post(&endpoint).header("Content-Type", "application/json").send(entry.body.to_string()).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let location = resp.headers().get("Location").and_then(|l| l.to_str().ok()).map(str::to_owned);
    let text = resp.body_mut().read_to_string().map_err(|e| format!("the log answered {status}, unreadably: {e}"))?;
    match status {
        200 | 201 => {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("the log answered {status} with no entry: {e}"))?;
            let uuid = v.as_object().and_then(|o| o.keys().next().cloned()).ok_or("the log answered with no entry UUID")?;
            Ok((uuid, v))
        }
        409 => {
            // Already logged: that is success. Fetch the existing entry for its proof.
            let uuid = location
                .as_deref()
                .and_then(|l| l.rsplit('/').next())
                .map(str::to_owned)
                .ok_or("the log said the entry exists but not where")?;
            let mut r = agent
                .get(&format!("{}/api/v1/log/entries/{uuid}", url.trim_end_matches('/')))
                .call()
                .map_err(|e| format!("the log has the entry `{uuid}` and did not serve it: {e}"))?;
            let t = r.body_mut().read_to_string().map_err(|e| format!("the entry `{uuid}`: {e}"))?;
            let existing = serde_json::from_str(&t).map_err(|e| format!("the entry `{uuid}` is not JSON: {e}"))?;
            Ok((uuid, existing))
        }
        s => Err(format!("the log answered {s}: {}", text.chars().take(200).collect::<String>())),
    }
}

/// A public key as Rekor v2 names it: its DER and `keyDetails`.
/// A keyless signer's certificate is named as `x509Certificate` (DER).
fn v2_verifier(pem: &str) -> Result<serde_json::Value, String> {
    let key = verifier::keyless::key_of_pem(pem)?;
    let details = match key.kind {
        verifier::keys::KeyKind::EcdsaP256 => "PKIX_ECDSA_P256_SHA_256",
        verifier::keys::KeyKind::Ed25519 => "PKIX_ED25519",
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        let der = verifier::keyless::pem_der(pem)?;
        return Ok(serde_json::json!({ "x509Certificate": { "rawBytes": b64.encode(der) }, "keyDetails": details }));
    }
    Ok(serde_json::json!({ "publicKey": { "rawBytes": b64.encode(key.der()) }, "keyDetails": details }))
}

/// Rekor v2's `CreateEntryRequest` for an entry queued in v1's form (the queue is written
/// once, whichever log later takes it).
pub fn v2_request(entry: &Entry) -> Result<serde_json::Value, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let spec = &entry.body["spec"];
    let pem = |v: &serde_json::Value| -> Result<String, String> {
        let bytes = b64.decode(v.as_str().unwrap_or_default()).map_err(|e| format!("`{}`: public key: {e}", entry.id))?;
        String::from_utf8(bytes).map_err(|e| format!("`{}`: public key: {e}", entry.id))
    };
    match entry.body["kind"].as_str() {
        Some("hashedrekord") => {
            let hex = spec["data"]["hash"]["value"].as_str().unwrap_or_default();
            let digest: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("`{}`: digest: {e}", entry.id))?;
            Ok(serde_json::json!({ "hashedRekordRequestV002": {
                "digest": b64.encode(digest),
                "signature": { "content": spec["signature"]["content"], "verifier": v2_verifier(&pem(&spec["signature"]["publicKey"]["content"])?)? },
            }}))
        }
        Some("dsse") => {
            let content = &spec["proposedContent"];
            let envelope: serde_json::Value = serde_json::from_str(content["envelope"].as_str().unwrap_or_default())
                .map_err(|e| format!("`{}`: envelope: {e}", entry.id))?;
            let verifiers = content["verifiers"]
                .as_array()
                .ok_or_else(|| format!("`{}`: no verifiers", entry.id))?
                .iter()
                .map(|v| pem(v).and_then(|p| v2_verifier(&p)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(serde_json::json!({ "dsseRequestV002": { "envelope": envelope, "verifiers": verifiers } }))
        }
        k => Err(format!("`{}`: no Rekor v2 request for kind {k:?}", entry.id)),
    }
}

/// Rekor v2: the answer is a `TransparencyLogEntry` (bundle form); its id here is the leaf
/// hash of its canonicalized body (Rekor v2 has no UUIDs). A duplicate is answered with the
/// existing entry.
fn submit_v2(url: &str, entry: &Entry) -> Result<(String, serde_json::Value), String> {
    let request = v2_request(entry)?;
    let endpoint = format!("{}/api/v2/log/entries", url.trim_end_matches('/'));
    let mut resp =
        agent().post(&endpoint).header("Content-Type", "application/json").send(request.to_string()).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().map_err(|e| format!("the log answered {status}, unreadably: {e}"))?;
    if !matches!(status, 200 | 201) {
        return Err(format!("the log answered {status}: {}", text.chars().take(200).collect::<String>()));
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("the log answered {status} with no entry: {e}"))?;
    let body = base64::engine::general_purpose::STANDARD
        .decode(v["canonicalizedBody"].as_str().ok_or("the log answered with no `canonicalizedBody`")?)
        .map_err(|e| format!("`canonicalizedBody` is not base64: {e}"))?;
    let leaf = verifier::tlog::leaf_hash(&body);
    Ok((leaf.iter().map(|b| format!("{b:02x}")).collect(), v))
}

/// Submits `entries` to `log`, keeping proofs or queueing what failed, under
/// `release` (the staging or final release directory).
pub fn submit_all(log: &Log, entries: &[Entry], release: &Path) -> std::io::Result<Vec<(String, Logged)>> {
    let dir = tlog_dir(release);
    fs::create_dir_all(dir.join("pending"))?;
    let mut out = Vec::new();
    for e in entries {
        let name = file_name(&e.id);
        let checked = submit(log, e).and_then(|(uuid, proof)| match check(log, e, &proof) {
            Ok(()) => Ok((uuid, proof)),
            Err(why) => Err(format!("the log's answer does not check, so it is not kept: {why}")),
        });
        match checked {
            Ok((uuid, proof)) => {
                write_atomic(&dir.join(format!("{name}.rekor.json")), &serde_json::to_vec_pretty(&proof).map_err(std::io::Error::other)?)?;
                let _ = fs::remove_file(dir.join("pending").join(format!("{name}.json")));
                out.push((e.id.clone(), Logged::Logged { uuid }));
            }
            Err(reason) => {
                write_atomic(
                    &dir.join("pending").join(format!("{name}.json")),
                    &serde_json::to_vec_pretty(e).map_err(std::io::Error::other)?,
                )?;
                out.push((e.id.clone(), Logged::Pending { reason }));
            }
        }
    }
    Ok(out)
}

/// A keyless signature must be in the log while its certificate is valid (its signed entry
/// time is the proof the key was used then): an entry the log did not take fails the release
/// instead of waiting in the queue. Nothing to check for a key.
pub fn require_logged(
    key: &dyn verifier::keys::Signer,
    log: &Log,
    results: &[(String, Logged)],
) -> Result<(), verifier::keys::SignerError> {
    if key.certificate_chain().is_none() {
        return Ok(());
    }
    let pending: Vec<(&String, &String)> = results
        .iter()
        .filter_map(|(id, l)| match l {
            Logged::Pending { reason } => Some((id, reason)),
            Logged::Logged { .. } => None,
        })
        .collect();
    match pending.first() {
        None => Ok(()),
        Some((id, reason)) => Err(verifier::keys::SignerError {
            key: "keyless".to_owned(),
            message: format!(
                "the transparency log `{}` did not take {} of {} keyless entries (the first, `{id}`: {reason}); a keyless signature is only good with its log entry",
                log.url,
                pending.len(),
                results.len()
            ),
            hint: Some("bring the log back and run the release again (a new certificate; `attest resubmit` cannot help: the certificate expires in minutes)".to_owned()),
            code: schema::exit::ENVIRONMENT,
        }),
    }
}

/// Keyless: beside each logged envelope `attest/.../X.dsse.json`, `X.sigstore.json`, a sigstore
/// bundle v0.3 holding the envelope, the leaf certificate and the log entry, for verifiers that
/// read bundles (npm `@sigstore/verify`, `cosign verify-blob-attestation --bundle`). A key's
/// envelopes get none: their verifier holds the key, and the entries stay in `attest/tlog/`.
/// Returns how many were written.
pub fn write_envelope_bundles(key: &dyn verifier::keys::Signer, release: &Path, results: &[(String, Logged)]) -> std::io::Result<usize> {
    let Some(leaf) = key.certificate_chain().and_then(|c| c.into_iter().next()) else { return Ok(0) };
    let der = verifier::keyless::pem_der(&leaf).map_err(std::io::Error::other)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut written = 0;
    for (id, _) in results.iter().filter(|(id, l)| matches!(l, Logged::Logged { .. }) && id.ends_with(".dsse.json")) {
        let answer_path = verifier::tlog::entry_path(release, id);
        let answer: serde_json::Value = serde_json::from_slice(&fs::read(&answer_path)?).map_err(std::io::Error::other)?;
        let entry =
            verifier::tlog::bundle_entry(&answer).map_err(|m| std::io::Error::other(format!("`{}`: {m}", answer_path.display())))?;
        let envelope: verifier::sign::Envelope = serde_json::from_slice(&fs::read(release.join(id))?).map_err(std::io::Error::other)?;
        let bundle = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": { "rawBytes": b64.encode(&der) },
                "tlogEntries": [entry],
                "timestampVerificationData": { "rfc3161Timestamps": [] },
            },
            "dsseEnvelope": envelope,
        });
        let path = release.join(format!("{}.sigstore.json", id.trim_end_matches(".dsse.json")));
        verifier::sign::write_json(&path, &bundle)?;
        written += 1;
    }
    Ok(written)
}

/// The queue of a release: entries still to send.
pub fn pending(release: &Path) -> std::io::Result<Vec<Entry>> {
    let dir = tlog_dir(release).join("pending");
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)?.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let e: Entry = serde_json::from_slice(&fs::read(&p)?).map_err(std::io::Error::other)?;
        out.push(e);
    }
    Ok(out)
}

/// When release.yaml's own entry is logged: writes it into `release.yaml.sigstore.json`'s
/// `verificationMaterial.tlogEntries` (bundle v0.3 form), for verifiers that read bundles.
pub fn record_in_bundle(release: &Path) -> std::io::Result<()> {
    let answer_path = verifier::tlog::entry_path(release, "release.yaml");
    let answer: serde_json::Value = match fs::read(&answer_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let entry = verifier::tlog::bundle_entry(&answer).map_err(|m| std::io::Error::other(format!("`{}`: {m}", answer_path.display())))?;
    let path = release.join("release.yaml.sigstore.json");
    let mut bundle: serde_json::Value = serde_json::from_slice(&fs::read(&path)?).map_err(std::io::Error::other)?;
    bundle["verificationMaterial"]["tlogEntries"] = serde_json::json!([entry]);
    verifier::sign::write_json(&path, &bundle)?;
    Ok(())
}

/// Why `attest resubmit` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ResubmitError {
    /// The release or the key is not the one expected; the message names the file.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Signer(#[from] verifier::keys::SignerError),
}

impl ResubmitError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            ResubmitError::Refused(_) => schema::exit::REJECTED,
            ResubmitError::Io(_) => schema::exit::ENVIRONMENT,
            ResubmitError::Signer(e) => e.exit_code(),
        }
    }
}

/// `cargo xtask attest resubmit`:
/// 1. release.yaml must verify with `key`'s public half (the record is signed with it);
/// 2. send the queue (`attest/tlog/pending/`), keeping each answer beside the others;
/// 3. record every entry sent (with those of earlier resubmissions) in
///    `attest/tlog/resubmitted.dsse.json`, signed with `key`, about release.yaml by digest.
///
/// Why a record rather than a new release.yaml: release.yaml's digest is what its own log
/// entry, the signed gate record, the kit's inventory and every channel pointer name; writing
/// the UUIDs into it would make another release that none of them vouches for. release.yaml
/// keeps `pending`, and `verify` reads `pending` plus a signed record naming the entry (whose
/// inclusion it checks like any other) as logged; `promote` refuses a release with a queue,
/// or with `pending` in release.yaml and no record.
pub fn resubmit(log: &Log, release: &Path, key: &dyn verifier::keys::Signer) -> Result<Vec<(String, Logged)>, ResubmitError> {
    // 1.
    let rel = verifier::ops::SignedRelease::open(release, key.public()).map_err(|p| {
        ResubmitError::Refused(format!(
            "`{}` does not verify with the given key, so its entries are not resubmitted: {}",
            release.display(),
            p.join("; ")
        ))
    })?;
    // 2.
    let queue = pending(release)?;
    let results = submit_all(log, &queue, release)?;
    // 3.
    let mut recorded =
        verifier::tlog::open_resubmission(release, key.public(), &rel.digest).map_err(ResubmitError::Refused)?.unwrap_or_default();
    let before = recorded.len();
    for (id, l) in &results {
        if let Logged::Logged { uuid } = l {
            recorded.insert(id.clone(), uuid.clone());
        }
    }
    if results.iter().any(|(id, l)| id == "release.yaml" && matches!(l, Logged::Logged { .. })) {
        record_in_bundle(release)?;
    }
    if recorded.len() != before || results.iter().any(|(_, l)| matches!(l, Logged::Logged { .. })) {
        let statement = verifier::tlog::resubmission_statement(&rel.digest, &log.url, &recorded);
        let env = verifier::sign::sign_envelope(key, verifier::sign::PAYLOAD_TYPE, &statement)?;
        let path = release.join(verifier::tlog::RESUBMITTED);
        verifier::sign::write_json(&path, &env)?;
    }
    Ok(results)
}
