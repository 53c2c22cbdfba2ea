//! `release.yaml` (spec §6.1), its checksum, and its signatures.
//!
//! The document is written by this module's own emitter, in the exact shape and order of
//! §6.1, every scalar double-quoted (so no YAML reader takes a version for a number or a date
//! for a timestamp). `checksums.sha256` is the sha256 of every byte of the file *before* the
//! line `checksums:` — the section is last, so the digest covers the whole document but
//! itself; `sed '/^checksums:/,$d' release.yaml | sha256sum` recomputes it.
//!
//! Signatures, over the whole file: `release.yaml.sig` (cosign `sign-blob` style: base64 of
//! the DER signature) and `release.yaml.sigstore.json`, a sigstore bundle v0.3 with a
//! public-key hint (the key id) and a message signature.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};
use schema::model::Digest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseYaml {
    pub release: ReleaseInfo,
    pub components: Vec<ComponentEntry>,
    pub charts: Vec<ChartEntry>,
    pub compose: ComposeEntry,
    pub checksums: Checksums,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInfo {
    pub version: String,
    pub channel: String,
    pub date: String,
    pub calendar: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    pub name: String,
    /// `repository@sha256:...` of the component's multi-arch index.
    pub image: String,
    pub sbom: String,
    pub provenance: String,
    pub signature: SignatureEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// The transparency-log entry, `pending` while the log could not be reached, `none`
    /// when no log is configured.
    #[serde(rename = "rekorUUID")]
    pub rekor_uuid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartEntry {
    pub name: String,
    pub version: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeEntry {
    pub file: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksums {
    pub sha256: String,
}

/// A double-quoted YAML scalar (JSON string escaping is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The document's bytes before `checksums:`.
fn body(doc: &ReleaseYaml) -> String {
    let mut s = String::new();
    let r = &doc.release;
    s += &format!(
        "release:\n  version: {}\n  channel: {}\n  date: {}\n  calendar: {}\n",
        q(&r.version),
        q(&r.channel),
        q(&r.date),
        q(&r.calendar)
    );
    s += "components:\n";
    for c in &doc.components {
        s += &format!(
            "  - name: {}\n    image: {}\n    sbom: {}\n    provenance: {}\n    signature: {{ rekorUUID: {} }}\n",
            q(&c.name),
            q(&c.image),
            q(&c.sbom),
            q(&c.provenance),
            q(&c.signature.rekor_uuid)
        );
    }
    if doc.charts.is_empty() {
        s += "charts: []\n";
    } else {
        s += "charts:\n";
        for c in &doc.charts {
            s += &format!("  - name: {}\n    version: {}\n    digest: {}\n", q(&c.name), q(&c.version), q(&c.digest));
        }
    }
    s += &format!("compose:\n  file: {}\n  digest: {}\n", q(&doc.compose.file), q(&doc.compose.digest));
    s
}

/// Renders the document, computing `checksums.sha256`.
pub fn render(doc: &mut ReleaseYaml) -> Vec<u8> {
    let head = body(doc);
    doc.checksums.sha256 = Digest::of(head.as_bytes()).hex().to_owned();
    format!("{head}checksums:\n  sha256: {}\n", q(&doc.checksums.sha256)).into_bytes()
}

/// Recomputes the checksum of a release.yaml's bytes: (stated, computed).
pub fn checksum(bytes: &[u8]) -> Result<(String, String), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "release.yaml is not UTF-8".to_owned())?;
    let at = text.find("\nchecksums:\n").ok_or("release.yaml has no `checksums:` section")? + 1;
    let computed = Digest::of(&bytes[..at]).hex().to_owned();
    let doc: ReleaseYaml = serde_norway::from_str(text).map_err(|e| format!("release.yaml does not have the shape of spec §6.1: {e}"))?;
    Ok((doc.checksums.sha256, computed))
}

pub fn parse(bytes: &[u8]) -> Result<ReleaseYaml, String> {
    serde_norway::from_slice(bytes).map_err(|e| format!("release.yaml does not have the shape of spec §6.1: {e}"))
}

/// `release.yaml.sig`: base64 of the signature over the file.
pub fn blob_signature(key: &SigningKey, bytes: &[u8]) -> String {
    blob_signature_raw(key, bytes).0
}

/// [`blob_signature`] and the raw signature bytes it encodes (for a transparency log entry).
pub fn blob_signature_raw(key: &SigningKey, bytes: &[u8]) -> (String, Vec<u8>) {
    let raw = key.sign(bytes);
    (base64::engine::general_purpose::STANDARD.encode(&raw), raw)
}

/// `release.yaml.sigstore.json`: a sigstore bundle v0.3 with a public-key hint.
pub fn bundle(key: &SigningKey, bytes: &[u8], signature_b64: &str) -> serde_json::Value {
    let digest = sha2::Sha256::digest_bytes(bytes);
    serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": { "hint": key.public().key_id() },
            "tlogEntries": [],
            "timestampVerificationData": { "rfc3161Timestamps": [] },
        },
        "messageSignature": {
            "messageDigest": { "algorithm": "SHA2_256", "digest": base64::engine::general_purpose::STANDARD.encode(digest) },
            "signature": signature_b64,
        },
    })
}

/// Checks `release.yaml.sig` over `bytes`.
pub fn verify_blob(key: &PublicKey, bytes: &[u8], signature_b64: &str) -> bool {
    base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()).map(|s| key.verify(bytes, &s)).unwrap_or(false)
}

trait DigestBytes {
    fn digest_bytes(b: &[u8]) -> Vec<u8>;
}
impl DigestBytes for sha2::Sha256 {
    fn digest_bytes(b: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        sha2::Sha256::digest(b).to_vec()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fixed release.yaml: two components, one chart, the compose file.
    fn fixed() -> ReleaseYaml {
        let component = |name: &str, rekor: &str| ComponentEntry {
            name: name.to_owned(),
            image: format!("registry.stella-ops.org/stellaops/{name}@{}", Digest::of(format!("{name} index").as_bytes())),
            sbom: format!("sbom/{name}.cdx.json"),
            provenance: format!("provenance/{name}.intoto.jsonl"),
            signature: SignatureEntry { rekor_uuid: rekor.to_owned() },
        };
        ReleaseYaml {
            release: ReleaseInfo {
                version: "2.4.1".to_owned(),
                channel: "stable".to_owned(),
                date: "2027-06-15T12:00:00Z".to_owned(),
                calendar: "2027.06".to_owned(),
            },
            components: vec![component("authority", "pending"), component("scanner", "none")],
            charts: vec![ChartEntry {
                name: "stellaops".to_owned(),
                version: "2.4.1".to_owned(),
                digest: Digest::of(b"chart").to_string(),
            }],
            compose: ComposeEntry { file: "compose/docker-compose.yaml".to_owned(), digest: Digest::of(b"compose").to_string() },
            checksums: Checksums { sha256: String::new() },
        }
    }

    fn rendered() -> (ReleaseYaml, String) {
        let mut doc = fixed();
        let bytes = render(&mut doc);
        (doc, String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn release_yaml_bytes() {
        let (_, text) = rendered();
        insta::assert_snapshot!("release_yaml", text);
    }

    #[test]
    fn release_yaml_round_trips_and_checksum_matches() {
        let (doc, text) = rendered();
        assert_eq!(parse(text.as_bytes()).unwrap(), doc);
        let (stated, computed) = checksum(text.as_bytes()).unwrap();
        assert_eq!(stated, computed);
        assert_eq!(stated, doc.checksums.sha256);
        assert_eq!(stated.len(), 64);
        // Every scalar is double-quoted: no YAML reader takes the version for a number.
        assert!(text.contains("  version: \"2.4.1\"\n"), "{text}");
    }

    #[test]
    fn checksum_detects_an_edit_before_the_checksums_section() {
        let (_, text) = rendered();
        let edited = text.replace("\"scanner\"", "\"scanner2\"");
        let (stated, computed) = checksum(edited.as_bytes()).unwrap();
        assert_ne!(stated, computed);
        assert!(checksum(b"release: {}\n").unwrap_err().contains("no `checksums:` section"));
    }

    #[test]
    fn no_charts_render_as_an_empty_list() {
        let mut doc = fixed();
        doc.charts.clear();
        let text = String::from_utf8(render(&mut doc)).unwrap();
        assert!(text.contains("\ncharts: []\ncompose:\n"), "{text}");
        assert_eq!(parse(text.as_bytes()).unwrap().charts, Vec::new());
    }
}
