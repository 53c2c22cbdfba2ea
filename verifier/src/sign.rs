//! Signing: DSSE envelopes for the SBOMs, provenance and drift report, and cosign-compatible
//! image signatures, all offline with a key ([`crate::keys`]).
//!
//! - DSSE (`application/vnd.in-toto+json`): the signature is over the pre-authentication
//!   encoding `"DSSEv1 " len(type) " " type " " len(body) " " body`; `keyid` is the key's id
//!   (sha256 of its SPKI DER), so securesystemslib can bind a trusted key to it.
//! - SBOMs are wrapped in an in-toto Statement v1 (predicate type `https://cyclonedx.org/bom`)
//!   whose subject is the image manifest; the drift report in one whose subjects are every
//!   image (predicate type of this pipeline).
//! - The protobuf SBOM (binary, so not a JSON predicate) in a statement of the same subject
//!   whose predicate ([`SBOM_PROTOBUF_PREDICATE`]) names the `.cdx.pb` file by sha256 and size
//!   ([`protobuf_sbom_predicate`]): the signature covers the file through its digest.
//! - Image signatures: cosign's "simple signing" payload naming the manifest (or index)
//!   digest, signed, stored as the cosign signature artifact in the OCI layout under the tag
//!   `sha256-<hex>.sig`: a manifest whose one layer is the payload, with the base64 signature
//!   in the annotation `dev.cosignproject.cosign/signature` (signed keyless, with the
//!   certificate and its chain in `dev.sigstore.cosign/certificate` and `.../chain`).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, Signer, SignerError};
use oci::{self, Descriptor, Layout, LayoutError, Manifest};
use schema::model::Digest;

pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const SBOM_PREDICATE: &str = "https://cyclonedx.org/bom";
pub const DRIFT_PREDICATE: &str = "https://stella-ops.org/attestations/drift/v1";
/// The predicate type of the statement about an image's CycloneDX protobuf SBOM.
pub const SBOM_PROTOBUF_PREDICATE: &str = "https://stella-ops.org/attestations/cyclonedx-protobuf/v1";
pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// A keyless signature's certificate (PEM), as cosign annotates it.
pub const COSIGN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// The rest of its chain (PEM, concatenated).
pub const COSIGN_CHAIN: &str = "dev.sigstore.cosign/chain";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: String,
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn sign_envelope(key: &dyn Signer, payload_type: &str, body: &[u8]) -> Result<Envelope, SignerError> {
    let sig = key.try_sign(&pae(payload_type, body))?;
    Ok(Envelope {
        payload_type: payload_type.to_owned(),
        payload: b64().encode(body),
        signatures: vec![EnvelopeSignature { keyid: key.public().key_id(), sig: b64().encode(sig) }],
    })
}

/// The payload of an envelope one of whose signatures `key` verifies, or why not.
pub fn verify_envelope(key: &PublicKey, env: &Envelope) -> Result<Vec<u8>, String> {
    let body = b64().decode(&env.payload).map_err(|e| format!("payload is not base64: {e}"))?;
    let msg = pae(&env.payload_type, &body);
    let ok = env.signatures.iter().any(|s| b64().decode(&s.sig).map(|sig| key.verify(&msg, &sig)).unwrap_or(false));
    if !ok {
        return Err("no signature verifies with the given public key".to_owned());
    }
    Ok(body)
}

/// An in-toto Statement v1 around any predicate.
pub fn statement(subjects: &[(String, &Digest)], predicate_type: &str, predicate: serde_json::Value) -> Vec<u8> {
    let subject: Vec<serde_json::Value> =
        subjects.iter().map(|(name, d)| serde_json::json!({ "name": name, "digest": { "sha256": d.hex() } })).collect();
    let mut v = serde_json::to_vec(&serde_json::json!({
        "_type": schema::intoto::STATEMENT_TYPE,
        "subject": subject,
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .expect("a statement serializes");
    v.push(b'\n');
    v
}

/// The predicate of the statement about a protobuf SBOM: the file `name` (`linux-amd64.cdx.pb`)
/// by media type, sha256 and size (an in-toto ResourceDescriptor's fields).
pub fn protobuf_sbom_predicate(name: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "mediaType": oci::referrers::ARTIFACT_SBOM_PROTOBUF,
        "digest": { "sha256": Digest::of(bytes).hex() },
        "size": bytes.len(),
    })
}

/// The sha256 a protobuf SBOM statement's predicate names, or why it names none.
pub fn protobuf_sbom_digest(statement: &serde_json::Value) -> Result<Digest, String> {
    if statement["predicateType"] != SBOM_PROTOBUF_PREDICATE {
        return Err(format!("its predicate type is {}, not `{SBOM_PROTOBUF_PREDICATE}`", statement["predicateType"]));
    }
    let hex = statement["predicate"]["digest"]["sha256"].as_str().ok_or("its predicate names no `digest.sha256`")?;
    format!("sha256:{hex}").parse().map_err(|e| format!("its predicate's digest: {e}"))
}

/// cosign's simple-signing payload for `digest` in `repository`.
pub fn simple_signing_payload(repository: &str, digest: &Digest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": repository },
            "image": { "docker-manifest-digest": digest.as_str() },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("a payload serializes")
}

/// The tag of cosign's signature artifact for `digest`: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// Signs `digest` (a manifest or an index of `repository`) and stores the cosign signature
/// artifact in `layout`; returns its manifest descriptor (not yet named in `index.json`).
pub fn sign_image(key: &dyn Signer, layout: &Layout, repository: &str, digest: &Digest) -> Result<ImageSignature, SignImageError> {
    let payload = simple_signing_payload(repository, digest);
    let raw = key.try_sign(&payload)?;
    let sig = b64().encode(&raw);
    let mut layer = layout.put_blob(SIMPLESIGNING, &payload)?;
    layer.annotations.insert(COSIGN_SIGNATURE.to_owned(), sig);
    // Keyless: cosign's annotations for the certificate and the rest of its chain (PEM).
    if let Some((leaf, chain)) = key.certificate_chain().as_ref().and_then(|c| c.split_first()) {
        layer.annotations.insert(COSIGN_CERTIFICATE.to_owned(), leaf.clone());
        if !chain.is_empty() {
            layer.annotations.insert(COSIGN_CHAIN.to_owned(), chain.concat());
        }
    }
    // cosign's signature images carry an (almost) empty config.
    let config =
        layout.put_blob(oci::MEDIA_CONFIG, br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
        config,
        layers: vec![layer],
        subject: None,
        annotations: BTreeMap::new(),
    };
    let mut desc = layout.put_json(oci::MEDIA_MANIFEST, &manifest)?;
    desc.annotations.insert(oci::ANNOTATION_REF_NAME.to_owned(), signature_tag(digest));
    Ok(ImageSignature { descriptor: desc, payload, signature: raw })
}

/// Why an image could not be signed: the signer failed, or the layout could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SignImageError {
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// A cosign signature artifact: its manifest's descriptor, the payload and the raw signature.
#[derive(Debug, Clone)]
pub struct ImageSignature {
    pub descriptor: Descriptor,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Checks the cosign signature artifact of `digest` in `layout` with `key`.
pub fn verify_image(key: &PublicKey, layout: &Layout, digest: &Digest) -> Result<(), String> {
    let desc = layout.find_ref(&signature_tag(digest)).map_err(|_| format!("no signature `{}`", signature_tag(digest)))?;
    let m: Manifest = layout.read_json(&desc.digest, "a signature manifest").map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    for l in m.layers.iter().filter(|l| l.media_type == SIMPLESIGNING) {
        let payload = match layout.read_blob(&l.digest) {
            Ok(p) => p,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let sig = match l.annotations.get(COSIGN_SIGNATURE).map(|s| b64().decode(s)) {
            Some(Ok(sig)) => sig,
            Some(Err(e)) => {
                problems.push(format!("layer `{}`: the `{COSIGN_SIGNATURE}` annotation is not base64: {e}", l.digest));
                continue;
            }
            None => {
                problems.push(format!("layer `{}` has no `{COSIGN_SIGNATURE}` annotation", l.digest));
                continue;
            }
        };
        if !key.verify(&payload, &sig) {
            problems.push("the signature does not verify with the given public key".to_owned());
            continue;
        }
        let v: serde_json::Value = match serde_json::from_slice(&payload) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("the signed payload `{}` is not JSON: {e}", l.digest));
                continue;
            }
        };
        let Some(named) = v["critical"]["image"]["docker-manifest-digest"].as_str() else {
            problems.push(format!("the signed payload `{}` has no `critical.image.docker-manifest-digest`", l.digest));
            continue;
        };
        if named != digest.as_str() || v["critical"]["type"] != "cosign container image signature" {
            problems.push(format!("the signed payload names `{named}`, not `{digest}`"));
            continue;
        }
        return Ok(());
    }
    Err(if problems.is_empty() { "no simple-signing layer".to_owned() } else { problems.join("; ") })
}

/// Writes `value` as pretty JSON plus a newline, atomically, creating directories; returns
/// the sha256 of the bytes written.
pub fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<Digest> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    oci::write_atomic(path, &bytes)?;
    Ok(Digest::of(&bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_protobuf_sbom_statement_names_the_file_by_digest_and_nothing_else_is_taken_for_one() {
        let pb = b"\x0a\x03bom";
        let image = Digest::of(b"manifest");
        let body = statement(
            &[("r.example/x@sha256:...".to_owned(), &image)],
            SBOM_PROTOBUF_PREDICATE,
            protobuf_sbom_predicate("linux-arm64.cdx.pb", pb),
        );
        let st: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(protobuf_sbom_digest(&st).unwrap(), Digest::of(pb));
        assert_eq!(st["predicate"]["size"], 5);
        assert_eq!(st["predicate"]["mediaType"], oci::referrers::ARTIFACT_SBOM_PROTOBUF);
        // A JSON SBOM's statement (another predicate type) is not one.
        let json = statement(&[("x".to_owned(), &image)], SBOM_PREDICATE, serde_json::json!({"bomFormat": "CycloneDX"}));
        let e = protobuf_sbom_digest(&serde_json::from_slice(&json).unwrap()).unwrap_err();
        assert!(e.contains("predicate type"), "{e}");
        // Nor one whose digest is missing or not sha256 hex.
        let mut bad = st.clone();
        bad["predicate"]["digest"]["sha256"] = "xyz".into();
        assert!(protobuf_sbom_digest(&bad).is_err());
        bad["predicate"]["digest"] = serde_json::json!({});
        assert!(protobuf_sbom_digest(&bad).unwrap_err().contains("names no"));
    }
}
