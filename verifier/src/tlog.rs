//! Transparency-log entries (Rekor v1 and v2), checked offline against the log's pinned public
//! key.
//!
//! In: a release directory (or an unpacked kit), the release key, the log's public key. Out:
//! checks added to the [`VerifyReport`] of [`crate::release`], and [`promotable`], which
//! `pipeline::channels::promote` asks before it signs a pointer.
//!
//! What the release holds: for every entry it sends (each image signature, each DSSE envelope
//! with the gate record, release.yaml's signature; ids such as `images/sha256-<hex>.sig`,
//! `attest/web-ui/linux-amd64.sbom.dsse.json`, `release.yaml`) the log's answer,
//! `attest/tlog/<id, `/` as `__`>.rekor.json` (`{ "<uuid>": { body, integratedTime, logID,
//! logIndex, verification: { inclusionProof, signedEntryTimestamp } } }`), or, when the log was
//! down, the entry queued in `attest/tlog/pending/`. `attest resubmit` sends the queue and
//! signs `attest/tlog/resubmitted.dsse.json` (subject: release.yaml by digest; predicate: each
//! entry sent and its UUID).
//!
//! Checked for each entry, offline:
//! 1. the body the log stored is about this release: `hashedrekord` names the sha256 of the
//!    signed artifact (the cosign payload, release.yaml), carries its signature and the
//!    release's public key; `dsse` names the sha256 of the envelope as sent and of its payload,
//!    its signature and the release's public key;
//! 2. the UUID is the body's leaf hash (RFC 6962: `SHA-256(0x00 || body)`; a 16-hex tree id
//!    may precede it);
//! 3. the inclusion proof recomputes, from the leaf and its audit path, the proof's root hash
//!    (RFC 9162 §2.1.3.2);
//! 4. the checkpoint (a signed note: origin, tree size, root hash) states that size and root,
//!    and is signed by the pinned log key (key hint: the first 4 bytes of the sha256 of its
//!    SPKI DER, then the signature);
//! 5. the signed entry timestamp (the log's promise over `body`, `integratedTime`, `logID`,
//!    `logIndex`, as canonical JSON) verifies with the pinned key, and `logID` is that key's id;
//! 6. the integrated time lies within the release key's validity, when one is known.
//!
//! Rekor v2 (the tiled log) answers with a `TransparencyLogEntry` (the sigstore bundle's
//! form: base64 hashes, 64-bit integers as strings) and `hashedrekord`/`dsse` bodies of
//! version 0.0.2 (digests in base64, keys as DER); steps 1-4 apply, with the leaf hash in place
//! of a UUID (v2 has none); v2 signs no entry time (time comes from a timestamp authority), so
//! steps 5 and 6 do not.
//!
//! Why by hand: the `sigstore` crate (0.15) verifies Rekor entries only inside its
//! cosign/bundle flows, pulls tokio, reqwest and openssl, and must not ship in this crate (what
//! air-gapped sites run; `tests/run.sh` checks its dependencies). `sigstore_protobuf_specs`
//! holds the message types only. RFC 6962's hashing and the checkpoint note are a few dozen
//! lines over the sha2 and p256/ed25519 code this crate already has; the test log in
//! `tests/it/tlog.rs` builds its tree by the RFC's recursive definition, independently of the
//! iterative check here.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::Digest as _;

use crate::keys::PublicKey;
use crate::sign::{self, Envelope};
use oci::Layout;
use schema::model::{Channel, Digest};

/// The predicate type of `attest/tlog/resubmitted.dsse.json`.
pub const RESUBMISSION_PREDICATE: &str = "https://stella-ops.org/attestations/tlog-resubmission/v1";
/// Where the resubmission record lives, relative to the release directory.
pub const RESUBMITTED: &str = "attest/tlog/resubmitted.dsse.json";
/// The signed gate record (`pipeline::stages::gates`), entered like the other envelopes.
pub const GATES_RECORD: &str = schema::gates::GATES_ENVELOPE;
/// `rekorUUID` of release.yaml when no log was configured.
pub const NONE: &str = "none";
/// `rekorUUID` of release.yaml when the log was down.
pub const PENDING: &str = "pending";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Whether a channel's releases must have every entry in a log (spec §2.3): `stable` and `lts`.
pub fn required_for(channel: Channel) -> bool {
    matches!(channel, Channel::Stable | Channel::Lts)
}

/// The file name of an entry id under `attest/tlog/`.
pub fn file_stem(id: &str) -> String {
    id.replace('/', "__")
}

/// Where the log's answer for `id` is kept.
pub fn entry_path(release: &Path, id: &str) -> PathBuf {
    release.join("attest/tlog").join(format!("{}.rekor.json", file_stem(id)))
}

/// Where a queued entry waits.
pub fn pending_path(release: &Path, id: &str) -> PathBuf {
    release.join("attest/tlog/pending").join(format!("{}.json", file_stem(id)))
}

// --- RFC 6962 ---

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2), or why the proof is malformed.
pub fn root_from_inclusion_proof(index: u64, size: u64, leaf: [u8; 32], path: &[[u8; 32]]) -> Result<[u8; 32], String> {
    if index >= size {
        return Err(format!("log index {index} is not below the tree size {size}"));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf;
    for p in path {
        if s == 0 {
            return Err(format!("the audit path has {} hashes, more than a tree of {size} needs", path.len()));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(format!("the audit path has {} hashes, fewer than a tree of {size} needs", path.len()));
    }
    Ok(r)
}

use schema::model::hex;

fn unhex32(s: &str) -> Result<[u8; 32], String> {
    schema::model::unhex(s).and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| format!("`{s}` is not 64 hex digits"))
}

/// Steps 2-3 of both APIs: the proof is for the entry's index, and its audit path leads from
/// the leaf to the root it states.
fn check_inclusion(index: u64, log_index: u64, size: u64, leaf: [u8; 32], path: &[[u8; 32]], root: [u8; 32]) -> Result<(), String> {
    if index != log_index {
        return Err(format!("the inclusion proof is for index {index}, the entry is at {log_index}"));
    }
    let computed = root_from_inclusion_proof(index, size, leaf, path).map_err(|m| format!("inclusion proof: {m}"))?;
    if computed != root {
        return Err(format!(
            "inclusion proof: the audit path leads to root {}, the proof states {} (tree size {size})",
            hex(&computed),
            hex(&root)
        ));
    }
    Ok(())
}

/// The 4-byte key hint of a note signature: the start of the sha256 of the key's SPKI DER.
pub fn key_hint(key: &PublicKey) -> [u8; 4] {
    let id = unhex32(&key.key_id()).expect("a key id is a sha256");
    [id[0], id[1], id[2], id[3]]
}

/// A checkpoint (signed note) checked against `log`: its text names `size` and `root`, and one
/// of its signatures is `log`'s.
pub fn check_checkpoint(note: &str, log: &PublicKey, size: u64, root: &[u8; 32]) -> Result<(), String> {
    check_note(note, Some(log), size, root)
}

/// [`check_checkpoint`]; without a pinned key (`None`), its text alone.
fn check_note(note: &str, log: Option<&PublicKey>, size: u64, root: &[u8; 32]) -> Result<(), String> {
    let (text, sigs) = note.split_once("\n\n").ok_or("the checkpoint has no signature block (no blank line)")?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let origin = lines.next().unwrap_or_default();
    if origin.is_empty() {
        return Err("the checkpoint names no origin".into());
    }
    let stated_size: u64 = lines.next().and_then(|l| l.parse().ok()).ok_or("the checkpoint's second line is not a tree size")?;
    let stated_root = lines.next().and_then(|l| b64().decode(l).ok()).ok_or("the checkpoint's third line is not a base64 root hash")?;
    if stated_size != size {
        return Err(format!("the checkpoint is of tree size {stated_size}, the proof of {size}"));
    }
    if stated_root != root {
        return Err(format!("the checkpoint's root hash is {}, the proof's {}", hex(&stated_root), hex(root)));
    }
    let Some(log) = log else { return Ok(()) };
    let hint = key_hint(log);
    let mut seen = Vec::new();
    for line in sigs.lines().filter(|l| !l.is_empty()) {
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| format!("`{line}` is not a note signature line"))?;
        let (name, sig) = rest.rsplit_once(' ').ok_or_else(|| format!("`{line}` is not a note signature line"))?;
        let raw = b64().decode(sig).map_err(|e| format!("the signature of `{name}` is not base64: {e}"))?;
        if raw.len() < 5 {
            return Err(format!("the signature of `{name}` is too short"));
        }
        if raw[..4] != hint {
            seen.push(format!("`{name}` (key hint {})", hex(&raw[..4])));
            continue;
        }
        return if log.verify(text.as_bytes(), &raw[4..]) {
            Ok(())
        } else {
            Err(format!("the checkpoint's signature by `{name}` does not verify with the pinned log key"))
        };
    }
    Err(format!(
        "the checkpoint is not signed by the pinned log key (key hint {}); it is signed by {}",
        hex(&hint),
        if seen.is_empty() { "nobody".to_owned() } else { seen.join(", ") }
    ))
}

/// What the entry of the log must be about.
#[derive(Debug, Clone)]
pub enum Expected {
    /// A signature over an artifact (`hashedrekord`).
    Signature { artifact: Digest, signature: Vec<u8> },
    /// A DSSE envelope (`dsse`): the envelope as it was sent (compact JSON).
    Envelope { sent: String, envelope: Envelope },
}

/// One entry as the log answered it.
#[derive(Debug, Clone)]
pub struct LoggedEntry {
    /// Rekor v1's UUID; for Rekor v2 (no UUIDs), the leaf hash.
    pub uuid: String,
    pub log_index: u64,
    /// The log's signed entry time (Rekor v1); Rekor v2 signs none.
    pub integrated_time: Option<i64>,
}

/// Checks the log's answer `answer` (the JSON of a `.rekor.json` file) for an entry about
/// `expected`, signed with `release_key`, against the pinned `log` key (steps 1-6 of the
/// module's list). `validity`: the release key's validity (unix times), when known.
pub fn check_entry(
    answer: &serde_json::Value,
    expected: &Expected,
    release_key: &PublicKey,
    log: &PublicKey,
    validity: Option<(i64, i64)>,
) -> Result<LoggedEntry, String> {
    let entry = check_answer(answer, expected, release_key, Some(log))?;
    // 6. The time, within the key's validity.
    if let (Some((from, until)), Some(integrated_time)) = (validity, entry.integrated_time) {
        if integrated_time < from || integrated_time > until {
            return Err(format!(
                "logged at {}, outside the release key's validity ({} to {})",
                schema::model::rfc3339(integrated_time),
                schema::model::rfc3339(from),
                schema::model::rfc3339(until)
            ));
        }
    }
    Ok(entry)
}

/// Steps 1-5 of the module's list for the log's answer `answer` to an entry about `expected`,
/// as the release checks it when the log answers: with the log's key pinned (`log`), all of
/// them; without, what needs no key (the body, the UUID, the inclusion proof, the checkpoint's
/// size and root), so that a log answering with a proof of something else is caught even then.
pub fn check_answer(
    answer: &serde_json::Value,
    expected: &Expected,
    release_key: &PublicKey,
    log: Option<&PublicKey>,
) -> Result<LoggedEntry, String> {
    if answer.get("canonicalizedBody").is_some() {
        return check_entry_v2(answer, expected, release_key, log);
    }
    let obj = answer.as_object().filter(|o| o.len() == 1).ok_or("not one entry keyed by its UUID")?;
    let (uuid, e) = obj.iter().next().ok_or("no entry")?;
    let body_b64 = e["body"].as_str().ok_or("the entry has no `body`")?;
    let body = b64().decode(body_b64).map_err(|err| format!("`body` is not base64: {err}"))?;
    // 1. The body.
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|err| format!("`body` is not JSON: {err}"))?;
    check_body(&v, expected, release_key)?;
    // 2. UUID = leaf hash.
    let leaf = leaf_hash(&body);
    let leaf_hex = hex(&leaf);
    if !(uuid.len() == 64 || uuid.len() == 80) || !uuid.ends_with(&leaf_hex) {
        return Err(format!("the UUID `{uuid}` is not the leaf hash of its body (`{leaf_hex}`)"));
    }
    let log_index = e["logIndex"].as_u64().ok_or("the entry has no `logIndex`")?;
    let integrated_time = e["integratedTime"].as_i64().ok_or("the entry has no `integratedTime`")?;
    let log_id = e["logID"].as_str().ok_or("the entry has no `logID`")?;
    if let Some(log) = log.filter(|l| l.key_id() != log_id) {
        return Err(format!("its `logID` `{log_id}` is not the pinned log key's `{}`", log.key_id()));
    }
    // 3. The inclusion proof.
    let proof = &e["verification"]["inclusionProof"];
    if proof.is_null() {
        return Err("the entry has no inclusion proof".into());
    }
    let index = proof["logIndex"].as_u64().ok_or("the inclusion proof has no `logIndex`")?;
    let size = proof["treeSize"].as_u64().ok_or("the inclusion proof has no `treeSize`")?;
    let root = unhex32(proof["rootHash"].as_str().unwrap_or_default()).map_err(|m| format!("the inclusion proof's `rootHash`: {m}"))?;
    let path = proof["hashes"]
        .as_array()
        .ok_or("the inclusion proof has no `hashes`")?
        .iter()
        .map(|h| unhex32(h.as_str().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| format!("the inclusion proof's `hashes`: {m}"))?;
    check_inclusion(index, log_index, size, leaf, &path, root)?;
    // 4. The checkpoint.
    let checkpoint = proof["checkpoint"].as_str().ok_or("the inclusion proof has no `checkpoint`")?;
    check_note(checkpoint, log, size, &root).map_err(|m| format!("checkpoint: {m}"))?;
    // 5. The signed entry timestamp, over canonical JSON (keys sorted, no spaces).
    let Some(log) = log else {
        return Ok(LoggedEntry { uuid: uuid.clone(), log_index, integrated_time: Some(integrated_time) });
    };
    let set = b64()
        .decode(e["verification"]["signedEntryTimestamp"].as_str().ok_or("the entry has no `signedEntryTimestamp`")?)
        .map_err(|err| format!("`signedEntryTimestamp` is not base64: {err}"))?;
    let promise = serde_json::json!({ "body": body_b64, "integratedTime": integrated_time, "logID": log_id, "logIndex": log_index });
    if !log.verify(promise.to_string().as_bytes(), &set) {
        return Err("the signed entry timestamp does not verify with the pinned log key".into());
    }
    Ok(LoggedEntry { uuid: uuid.clone(), log_index, integrated_time: Some(integrated_time) })
}

/// A protobuf-JSON 64-bit integer: a string (or a number).
fn int64(v: &serde_json::Value) -> Option<u64> {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64())
}

fn b64_32(v: &serde_json::Value) -> Result<[u8; 32], String> {
    let b = b64().decode(v.as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
    b.try_into().map_err(|b: Vec<u8>| format!("{} bytes, not a sha256", b.len()))
}

/// Rekor v2: the answer is a `TransparencyLogEntry` (protobuf JSON, as in a sigstore bundle).
/// Steps 1-4 of the module's list; there is no signed entry timestamp (Rekor v2 leaves time to
/// a timestamp authority), so step 5 and 6 do not apply.
fn check_entry_v2(
    answer: &serde_json::Value,
    expected: &Expected,
    release_key: &PublicKey,
    log: Option<&PublicKey>,
) -> Result<LoggedEntry, String> {
    let body = b64()
        .decode(answer["canonicalizedBody"].as_str().unwrap_or_default())
        .map_err(|e| format!("`canonicalizedBody` is not base64: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("`canonicalizedBody` is not JSON: {e}"))?;
    if answer["kindVersion"]["kind"] != v["kind"] || answer["kindVersion"]["version"] != v["apiVersion"] {
        return Err("`kindVersion` is not the body's kind and version".into());
    }
    check_body(&v, expected, release_key)?;
    let leaf = leaf_hash(&body);
    let key_id = b64().decode(answer["logId"]["keyId"].as_str().unwrap_or_default()).map_err(|e| format!("`logId.keyId`: {e}"))?;
    if let Some(log) = log.filter(|l| hex(&key_id) != l.key_id()) {
        return Err(format!("its `logId` `{}` is not the pinned log key's `{}`", hex(&key_id), log.key_id()));
    }
    let proof = &answer["inclusionProof"];
    let log_index = int64(&answer["logIndex"]).ok_or("the entry has no `logIndex`")?;
    let index = int64(&proof["logIndex"]).ok_or("the inclusion proof has no `logIndex`")?;
    let size = int64(&proof["treeSize"]).ok_or("the inclusion proof has no `treeSize`")?;
    let root = b64_32(&proof["rootHash"]).map_err(|m| format!("the inclusion proof's `rootHash`: {m}"))?;
    let path = proof["hashes"]
        .as_array()
        .ok_or("the inclusion proof has no `hashes`")?
        .iter()
        .map(b64_32)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| format!("the inclusion proof's `hashes`: {m}"))?;
    check_inclusion(index, log_index, size, leaf, &path, root)?;
    let checkpoint = proof["checkpoint"]["envelope"].as_str().ok_or("the inclusion proof has no `checkpoint.envelope`")?;
    check_note(checkpoint, log, size, &root).map_err(|m| format!("checkpoint: {m}"))?;
    Ok(LoggedEntry { uuid: hex(&leaf), log_index, integrated_time: None })
}

/// A Rekor v2 `Verifier` (`publicKey.rawBytes`: SPKI DER, base64; or, keyless,
/// `x509Certificate.rawBytes`) naming `key`.
fn same_key_v2(v: &serde_json::Value, key: &PublicKey) -> Result<(), String> {
    let der = match v["x509Certificate"]["rawBytes"].as_str() {
        Some(cert) => {
            let der = b64().decode(cert).map_err(|e| format!("its certificate: {e}"))?;
            crate::keyless::Leaf::parse(&der).map_err(|e| format!("its certificate: {e}"))?.key.der().to_vec()
        }
        None => b64().decode(v["publicKey"]["rawBytes"].as_str().unwrap_or_default()).map_err(|e| format!("its public key: {e}"))?,
    };
    if der == key.der() {
        Ok(())
    } else {
        Err(format!("it names the key {}, not the release key {}", &hex(&sha2::Sha256::digest(&der))[..16], &key.key_id()[..16]))
    }
}

fn same_key(b64_pem: &str, key: &PublicKey) -> Result<(), String> {
    let pem = b64().decode(b64_pem).map_err(|e| format!("its public key is not base64: {e}"))?;
    // A key, or (keyless) the certificate whose key it is.
    let k = crate::keyless::key_of_pem(&String::from_utf8_lossy(&pem)).map_err(|e| format!("its public key: {e}"))?;
    if k.key_id() == key.key_id() {
        Ok(())
    } else {
        Err(format!("it names the key {}, not the release key {}", &k.key_id()[..16], &key.key_id()[..16]))
    }
}

fn check_body(v: &serde_json::Value, expected: &Expected, key: &PublicKey) -> Result<(), String> {
    if v["apiVersion"] == "0.0.2" {
        return check_body_v2(v, expected, key);
    }
    let spec = &v["spec"];
    match (v["kind"].as_str(), expected) {
        (Some("hashedrekord"), Expected::Signature { artifact, signature }) => {
            let hash = &spec["data"]["hash"];
            if hash["algorithm"] != "sha256" || hash["value"].as_str() != Some(artifact.hex()) {
                return Err(format!("the logged body is about `sha256:{}`, not `{artifact}`", hash["value"].as_str().unwrap_or("?")));
            }
            let sig = b64().decode(spec["signature"]["content"].as_str().unwrap_or_default()).unwrap_or_default();
            if &sig != signature {
                return Err("the logged signature is not the release's".into());
            }
            same_key(spec["signature"]["publicKey"]["content"].as_str().unwrap_or_default(), key)
        }
        (Some("dsse"), Expected::Envelope { sent, envelope }) => {
            let sha = |b: &[u8]| hex(&sha2::Sha256::digest(b));
            if spec["envelopeHash"]["value"].as_str() != Some(&sha(sent.as_bytes())) {
                return Err("the logged envelope hash is not the envelope's".into());
            }
            let payload = b64().decode(&envelope.payload).map_err(|e| format!("the envelope's payload is not base64: {e}"))?;
            if spec["payloadHash"]["value"].as_str() != Some(&sha(&payload)) {
                return Err("the logged payload hash is not the envelope's".into());
            }
            let sigs = spec["signatures"].as_array().ok_or("the logged body has no signatures")?;
            let ours = envelope.signatures.first().ok_or("the envelope has no signature")?;
            let s = sigs.iter().find(|s| s["signature"].as_str() == Some(&ours.sig)).ok_or("the logged signature is not the envelope's")?;
            same_key(s["verifier"].as_str().unwrap_or_default(), key)
        }
        (kind, _) => Err(format!("the logged body is of kind `{}`, not the kind of this entry", kind.unwrap_or("?"))),
    }
}

/// Rekor v2's bodies (`hashedrekord` and `dsse` 0.0.2): digests in base64, keys as DER.
fn check_body_v2(v: &serde_json::Value, expected: &Expected, key: &PublicKey) -> Result<(), String> {
    let spec = &v["spec"];
    let sha = |b: &[u8]| b64().encode(sha2::Sha256::digest(b));
    match (v["kind"].as_str(), expected) {
        (Some("hashedrekord"), Expected::Signature { artifact, signature }) => {
            let s = &spec["hashedRekordV002"];
            let stated = b64().decode(s["data"]["digest"].as_str().unwrap_or_default()).unwrap_or_default();
            if s["data"]["algorithm"] != "SHA2_256" || hex(&stated) != artifact.hex() {
                return Err(format!("the logged body is about `sha256:{}`, not `{artifact}`", hex(&stated)));
            }
            if b64().decode(s["signature"]["content"].as_str().unwrap_or_default()).unwrap_or_default() != *signature {
                return Err("the logged signature is not the release's".into());
            }
            same_key_v2(&s["signature"]["verifier"], key)
        }
        (Some("dsse"), Expected::Envelope { envelope, .. }) => {
            let s = &spec["dsseV002"];
            let payload = b64().decode(&envelope.payload).map_err(|e| format!("the envelope's payload is not base64: {e}"))?;
            if s["payloadHash"]["algorithm"] != "SHA2_256" || s["payloadHash"]["digest"].as_str() != Some(&sha(&payload)) {
                return Err("the logged payload hash is not the envelope's".into());
            }
            let ours = envelope.signatures.first().ok_or("the envelope has no signature")?;
            let sigs = s["signatures"].as_array().ok_or("the logged body has no signatures")?;
            let found =
                sigs.iter().find(|x| x["content"].as_str() == Some(&ours.sig)).ok_or("the logged signature is not the envelope's")?;
            same_key_v2(&found["verifier"], key)
        }
        (kind, _) => Err(format!("the logged body is of kind `{}`, not the kind of this entry", kind.unwrap_or("?"))),
    }
}

/// The customer tool, its raw signature and its provenance envelope (`pipeline::stages::tool`).
pub const TOOL: &str = "tools/stellaops";
pub const TOOL_SIGNATURE: &str = "tools/stellaops.sig";
pub const TOOL_PROVENANCE: &str = "tools/stellaops.provenance.dsse.json";

/// Every entry a release sends to the log, with what each must be about: each image's and
/// index's signature (`images/sha256-<hex>.sig`), each envelope of `attest/` the sign stage
/// writes, the customer tool's raw signature and provenance envelope, release.yaml. `components`: the components to look at (all of release.yaml's, or a
/// kit's subset).
pub fn expected_entries(
    root: &Path,
    manifest_dir: &Path,
    layout: &Layout,
    components: &[(String, Digest)],
) -> Result<Vec<(String, Expected)>, String> {
    let mut out = Vec::new();
    let index = layout.index().map_err(|e| e.to_string())?;
    let mut slugs = Vec::new();
    for (name, index_digest) in components {
        let idx: oci::Index = layout.read_json(index_digest, "an image index").map_err(|e| e.to_string())?;
        let mut digests = vec![index_digest.clone()];
        for m in idx.manifests.iter().filter(|m| m.media_type != oci::MEDIA_INDEX) {
            digests.push(m.digest.clone());
            if let Some(p) = &m.platform {
                slugs.push((name.clone(), format!("{}-{}", p.os, p.architecture)));
            }
        }
        for d in digests {
            let tag = sign::signature_tag(&d);
            let desc = index
                .manifests
                .iter()
                .find(|x| x.annotations.get(oci::ANNOTATION_REF_NAME) == Some(&tag))
                .ok_or_else(|| format!("no signature `{tag}` in the layout"))?;
            let m: oci::Manifest = layout.read_json(&desc.digest, "a signature manifest").map_err(|e| e.to_string())?;
            let l = m.layers.first().ok_or_else(|| format!("`{tag}` has no layer"))?;
            let sig = l
                .annotations
                .get(sign::COSIGN_SIGNATURE)
                .and_then(|s| b64().decode(s).ok())
                .ok_or_else(|| format!("`{tag}` has no signature annotation"))?;
            out.push((format!("images/{tag}"), Expected::Signature { artifact: l.digest.clone(), signature: sig }));
        }
    }
    let mut envelopes: Vec<String> = Vec::new();
    for (c, slug) in &slugs {
        for kind in ["sbom", "sbom-protobuf", "provenance"] {
            envelopes.push(format!("attest/{c}/{slug}.{kind}.dsse.json"));
        }
    }
    envelopes.push("attest/drift.dsse.json".into());
    // The signed gate record, when the release has one (`build` and `repro` make none).
    if root.join(GATES_RECORD).exists() {
        envelopes.push(GATES_RECORD.into());
    }
    // The customer tool's raw signature and provenance envelope, when the release ships it.
    let (program, signature) = (root.join(TOOL), root.join(TOOL_SIGNATURE));
    if program.exists() && signature.exists() {
        let bytes = fs::read(&program).map_err(|e| format!("`{}`: {e}", program.display()))?;
        let sig = fs::read(&signature).map_err(|e| format!("`{}`: {e}", signature.display()))?;
        out.push((TOOL.into(), Expected::Signature { artifact: Digest::of(&bytes), signature: sig }));
    }
    if root.join(TOOL_PROVENANCE).exists() {
        envelopes.push(TOOL_PROVENANCE.into());
    }
    for id in envelopes {
        let path = root.join(&id);
        let bytes = fs::read(&path).map_err(|e| format!("`{}`: {e}", path.display()))?;
        let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| format!("`{}`: not a DSSE envelope: {e}", path.display()))?;
        let sent = serde_json::to_string(&envelope).map_err(|e| e.to_string())?;
        out.push((id, Expected::Envelope { sent, envelope }));
    }
    let yaml = fs::read(manifest_dir.join("release.yaml")).map_err(|e| format!("release.yaml: {e}"))?;
    let sig = fs::read_to_string(manifest_dir.join("release.yaml.sig")).map_err(|e| format!("release.yaml.sig: {e}"))?;
    let sig = b64().decode(sig.trim()).map_err(|e| format!("release.yaml.sig is not base64: {e}"))?;
    out.push(("release.yaml".into(), Expected::Signature { artifact: Digest::of(&yaml), signature: sig }));
    Ok(out)
}

/// The log's answer for an entry (Rekor v1 JSON) as a sigstore bundle v0.3 `tlogEntries` item
/// (protobuf JSON: 64-bit integers as strings, hashes and ids in base64), so that other
/// people's verifiers (npm `@sigstore/verify`) can check the entry of `release.yaml.sigstore.json`.
pub fn bundle_entry(answer: &serde_json::Value) -> Result<serde_json::Value, String> {
    if answer.get("canonicalizedBody").is_some() {
        // Rekor v2 answers in the bundle's own form.
        return Ok(answer.clone());
    }
    let (_, e) = answer.as_object().and_then(|o| o.iter().next()).ok_or("no entry")?;
    let body_b64 = e["body"].as_str().ok_or("no `body`")?;
    let body: serde_json::Value = serde_json::from_slice(&b64().decode(body_b64).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let proof = &e["verification"]["inclusionProof"];
    let hex_to_b64 = |h: &serde_json::Value| unhex32(h.as_str().unwrap_or_default()).map(|b| b64().encode(b));
    let log_id = unhex32(e["logID"].as_str().unwrap_or_default())?;
    Ok(serde_json::json!({
        "logIndex": e["logIndex"].as_u64().ok_or("no `logIndex`")?.to_string(),
        "logId": { "keyId": b64().encode(log_id) },
        "kindVersion": { "kind": body["kind"], "version": body["apiVersion"] },
        "integratedTime": e["integratedTime"].as_i64().ok_or("no `integratedTime`")?.to_string(),
        "inclusionPromise": { "signedEntryTimestamp": e["verification"]["signedEntryTimestamp"] },
        "inclusionProof": {
            "logIndex": proof["logIndex"].as_u64().ok_or("no proof `logIndex`")?.to_string(),
            "rootHash": hex_to_b64(&proof["rootHash"])?,
            "treeSize": proof["treeSize"].as_u64().ok_or("no proof `treeSize`")?.to_string(),
            "hashes": proof["hashes"].as_array().ok_or("no proof `hashes`")?.iter().map(hex_to_b64).collect::<Result<Vec<_>, _>>()?,
            "checkpoint": { "envelope": proof["checkpoint"] },
        },
        "canonicalizedBody": body_b64,
    }))
}

/// `attest/tlog/resubmitted.dsse.json`, opened: signed by `key`, about release.yaml of
/// digest `release_yaml`; the entries it records (id -> UUID).
pub fn open_resubmission(root: &Path, key: &PublicKey, release_yaml: &Digest) -> Result<Option<BTreeMap<String, String>>, String> {
    let path = root.join(RESUBMITTED);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("`{RESUBMITTED}`: {e}")),
    };
    let env: Envelope = serde_json::from_slice(&bytes).map_err(|e| format!("`{RESUBMITTED}`: not a DSSE envelope: {e}"))?;
    let body = sign::verify_envelope(key, &env).map_err(|e| format!("`{RESUBMITTED}`: {e}"))?;
    let st: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("`{RESUBMITTED}`: not a statement: {e}"))?;
    if st["predicateType"] != RESUBMISSION_PREDICATE {
        return Err(format!("`{RESUBMITTED}`: its predicate type is `{}`", st["predicateType"]));
    }
    if st["subject"][0]["digest"]["sha256"].as_str() != Some(release_yaml.hex()) {
        return Err(format!("`{RESUBMITTED}`: it is about another release.yaml than this one ({release_yaml})"));
    }
    let entries = st["predicate"]["entries"].as_object().ok_or_else(|| format!("`{RESUBMITTED}`: no `predicate.entries`"))?;
    Ok(Some(entries.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()))
}

/// The statement of a resubmission record: `entries` (id -> UUID) sent to `log` for the
/// release.yaml of digest `release_yaml`.
pub fn resubmission_statement(release_yaml: &Digest, log: &str, entries: &BTreeMap<String, String>) -> Vec<u8> {
    sign::statement(
        &[("release.yaml".to_owned(), release_yaml)],
        RESUBMISSION_PREDICATE,
        serde_json::json!({ "log": log, "entries": entries }),
    )
}

/// The entries still queued in `attest/tlog/pending/`, by file name.
pub fn queued(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("attest/tlog/pending");
    match fs::read_dir(&dir) {
        Ok(rd) => {
            let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("`{}`: {e}", dir.display())),
    }
}

/// Whether a release may be promoted as far as the transparency log goes: nothing queued in
/// `attest/tlog/pending/`; every component release.yaml marks `pending` recorded by a
/// resubmission record signed by `key` (so a kept copy of the manifest files, without the
/// queue, is judged too); and, for a channel that requires a log (`log_required`: its
/// `[transparency-log] required`), no component without an entry (`none`): an `edge` release
/// cut without a log does not become a `stable` one by promotion. `dir`: the release directory
/// or the channel's kept copy.
pub fn promotable(dir: &Path, key: &PublicKey, log_required: bool) -> Result<(), String> {
    let hint = format!(
        "hint: when the log is back, `cargo xtask attest resubmit {} --rekor-url URL --key KEY` sends them and signs `{RESUBMITTED}`",
        dir.display()
    );
    let queue = queued(dir)?;
    if !queue.is_empty() {
        return Err(format!(
            "{} transparency-log entries are pending (the log could not be reached), e.g. `attest/tlog/pending/{}`: the release is not promotable\n  {hint}",
            queue.len(),
            queue[0]
        ));
    }
    let yaml_path = dir.join("release.yaml");
    let yaml = fs::read(&yaml_path).map_err(|e| format!("`{}`: {e}", yaml_path.display()))?;
    let doc = crate::manifest::parse(&yaml)?;
    let unlogged: Vec<&str> = doc.components.iter().filter(|c| c.signature.rekor_uuid == NONE).map(|c| c.name.as_str()).collect();
    if log_required && !unlogged.is_empty() {
        return Err(format!(
            "the channel requires a transparency log and this release was cut without one (release.yaml states `rekorUUID: \"none\"` for {})\n  hint: cut it again with a log (`--rekor-url`, or `[transparency-log] url` of its channel)",
            unlogged.join(", ")
        ));
    }
    let pending: Vec<&str> = doc.components.iter().filter(|c| c.signature.rekor_uuid == PENDING).map(|c| c.name.as_str()).collect();
    if pending.is_empty() {
        return Ok(());
    }
    let recorded = open_resubmission(dir, key, &Digest::of(&yaml))?;
    if recorded.is_none() {
        return Err(format!(
            "release.yaml marks the index signatures of {} `pending` and no signed resubmission record (`{RESUBMITTED}`) says they were logged: the release is not promotable\n  {hint}",
            pending.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 6962 §2.1's recursive MTH and PATH, as the test's reference.
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = split(leaves.len());
        node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
    }
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }
    fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let k = split(leaves.len());
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    #[test]
    fn every_inclusion_proof_of_trees_up_to_33_leaves_recomputes_the_root_and_a_changed_hash_does_not() {
        for n in 1..=33usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf_hash(format!("entry {i}").as_bytes())).collect();
            let root = mth(&leaves);
            for m in 0..n {
                let p = path(m, &leaves);
                assert_eq!(root_from_inclusion_proof(m as u64, n as u64, leaves[m], &p).unwrap(), root, "{m} of {n}");
                if !p.is_empty() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(root_from_inclusion_proof(m as u64, n as u64, leaves[m], &bad).unwrap(), root);
                    // One hash too few or too many is malformed.
                    assert!(root_from_inclusion_proof(m as u64, n as u64, leaves[m], &p[1..]).is_err());
                }
                let mut long = p.clone();
                long.push([0; 32]);
                assert!(root_from_inclusion_proof(m as u64, n as u64, leaves[m], &long).is_err());
            }
            assert!(root_from_inclusion_proof(n as u64, n as u64, leaves[0], &[]).is_err());
        }
    }

    #[test]
    fn a_checkpoint_verifies_only_with_its_key_size_and_root() {
        use crate::keys::{KeyKind, SigningKey};
        let log = SigningKey::generate(KeyKind::EcdsaP256);
        let other = SigningKey::generate(KeyKind::EcdsaP256);
        let root = [7u8; 32];
        let note = |k: &SigningKey| {
            let text = format!("log.test - 1\n5\n{}\n", b64().encode(root));
            let mut sig = key_hint(k.public()).to_vec();
            sig.extend(k.sign(text.as_bytes()));
            format!("{text}\n\u{2014} log.test {}\n", b64().encode(sig))
        };
        check_checkpoint(&note(&log), log.public(), 5, &root).unwrap();
        assert!(check_checkpoint(&note(&other), log.public(), 5, &root).unwrap_err().contains("not signed by the pinned log key"));
        assert!(check_checkpoint(&note(&log), log.public(), 6, &root).unwrap_err().contains("tree size 5"));
        assert!(check_checkpoint(&note(&log), log.public(), 5, &[8u8; 32]).unwrap_err().contains("root hash"));
        // A line added to the signed text after signing.
        let forged = note(&log).replacen("\n\n", "\nTimestamp: 1\n\n", 1);
        assert!(check_checkpoint(&forged, log.public(), 5, &root).unwrap_err().contains("does not verify"));
    }
}
