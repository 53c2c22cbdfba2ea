//! Verification Summary Attestations (SLSA VSA v1) about a release: what `repro --against`
//! signs after rebuilding a published release from its tag, and what `verify --vsa` and
//! `promote` check. The statement's shape and the one rule of what "passing for this
//! release" means live here, so the writer (`pipeline::rebuild`) and the checkers agree.
//!
//! A VSA is an in-toto Statement v1 in a DSSE envelope (payload type in-toto):
//! - `subject`: `release.yaml` (its sha256), then every artifact that was compared, each
//!   with its published digest and, in `annotations`, the rebuilt digest and the result;
//! - `predicate`: the VSA v1 fields only (`verifier.id`, `timeVerified`, `resourceUri`,
//!   `policy`, `inputAttestations`, `verificationResult`, `verifiedLevels`, `slsaVersion`), so
//!   that parsers which refuse unknown fields (the in-toto attestation library) accept it.
//!
//! It passes for a release when its envelope verifies with the expected key, it is a VSA,
//! its result is `PASSED`, and its `release.yaml` subject has that release's digest.

use serde_json::Value;

use crate::keys::PublicKey;
use crate::sign::{verify_envelope, Envelope, PAYLOAD_TYPE};
use schema::model::Digest;

/// The VSA v1 predicate type.
pub const PREDICATE: &str = "https://slsa.dev/verification_summary/v1";
/// The policy a rebuild verdict applies (its digest is of the policy document itself).
pub const REBUILD_POLICY: &str = "https://stella-ops.org/policy/rebuild/v1";
/// The subject that names the release.
pub const RELEASE_SUBJECT: &str = "release.yaml";

/// What a passing VSA says, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub verifier: String,
    pub time_verified: String,
    pub resource_uri: String,
    pub artifacts: usize,
    pub key_id: String,
}

/// Checks that `envelope` (a DSSE envelope as JSON bytes) is a passing VSA signed by `key`
/// for the release whose `release.yaml` has digest `release_yaml`; every reason it is not is
/// in the error.
pub fn check(envelope: &[u8], key: &PublicKey, release_yaml: &Digest) -> Result<Summary, String> {
    let env: Envelope = serde_json::from_slice(envelope).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(format!("its payload type is `{}`, not `{PAYLOAD_TYPE}`", env.payload_type));
    }
    let body = verify_envelope(key, &env).map_err(|e| format!("signature: {e} (key `{}`)", key.key_id()))?;
    let st: Value = serde_json::from_slice(&body).map_err(|e| format!("the statement is not JSON: {e}"))?;
    if st["_type"] != schema::intoto::STATEMENT_TYPE {
        return Err(format!("`_type` is {}, not `{}`", st["_type"], schema::intoto::STATEMENT_TYPE));
    }
    if st["predicateType"] != PREDICATE {
        return Err(format!("`predicateType` is {}, not `{PREDICATE}`", st["predicateType"]));
    }
    let p = &st["predicate"];
    let mut problems = Vec::new();
    if p["verificationResult"] != "PASSED" {
        problems.push(format!("`predicate.verificationResult` is {}: the rebuild did not match", p["verificationResult"]));
    }
    let subjects = st["subject"].as_array().cloned().unwrap_or_default();
    let named = subjects.iter().find(|s| s["name"] == RELEASE_SUBJECT);
    match named.and_then(|s| s["digest"]["sha256"].as_str()) {
        Some(hex) if hex == release_yaml.hex() => {}
        Some(hex) => problems.push(format!("it is about the release.yaml `sha256:{hex}`, not this release's `{release_yaml}`")),
        None => problems.push(format!("no `{RELEASE_SUBJECT}` subject with a sha256")),
    }
    let differing: Vec<String> = subjects
        .iter()
        .filter(|s| s["name"] != RELEASE_SUBJECT && s["annotations"]["result"] != "identical")
        .map(|s| s["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    if !differing.is_empty() {
        problems.push(format!("artifacts not identical: {}", differing.join(", ")));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Summary {
        verifier: p["verifier"]["id"].as_str().unwrap_or_default().to_owned(),
        time_verified: p["timeVerified"].as_str().unwrap_or_default().to_owned(),
        resource_uri: p["resourceUri"].as_str().unwrap_or_default().to_owned(),
        artifacts: subjects.len().saturating_sub(1),
        key_id: key.key_id(),
    })
}

/// [`check`] against several acceptable keys: passes when one of them passes; else every
/// key's reason.
pub fn check_any(envelope: &[u8], keys: &[PublicKey], release_yaml: &Digest) -> Result<Summary, String> {
    let mut why = Vec::new();
    for k in keys {
        match check(envelope, k, release_yaml) {
            Ok(s) => return Ok(s),
            Err(e) => why.push(format!("key `{}`: {e}", k.key_id())),
        }
    }
    Err(why.join("\n"))
}
