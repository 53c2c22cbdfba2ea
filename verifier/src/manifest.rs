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

use crate::keys::{PublicKey, Signer, SignerError};
use base64::Engine as _;
use schema::model::Digest;

// The document's types live in `schema::release`; re-exported so `verifier::manifest::ReleaseYaml`
// and the rest keep their paths.
pub use schema::release::*;

/// A double-quoted YAML scalar: JSON string escaping (valid YAML), and `\uXXXX` for what JSON
/// leaves as it is but a YAML reader does not read back as written: DEL and the C1 controls
/// (not printable in YAML; NEL is a line break in YAML 1.1), the line and paragraph separators
/// (line breaks in YAML 1.1: folded into a space), the byte-order mark and U+FFFE, U+FFFF.
fn q(s: &str) -> String {
    let json = serde_json::to_string(s).expect("a string serializes");
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// The document's bytes before `checksums:`.
fn body(doc: &ReleaseYaml) -> String {
    let mut s = String::new();
    let r = &doc.release;
    s += &format!(
        "release:\n  version: {}\n  channel: {}\n  date: {}\n  calendar: {}\n",
        q(&r.version.to_string()),
        q(r.channel.as_str()),
        q(&r.date),
        q(&r.calendar)
    );
    s += "components:\n";
    for c in &doc.components {
        s += &format!(
            "  - name: {}\n    image: {}\n    sbom: {}\n    provenance: {}\n    signature: {{ rekorUUID: {} }}\n",
            q(&c.name),
            q(&c.image.to_string()),
            q(&c.sbom),
            q(&c.provenance),
            q(&c.signature.rekor_uuid)
        );
        // Not in §6.1: every platform's references, after the keys §6.1 gives a component.
        if !c.platforms.is_empty() {
            s += "    platforms:\n";
            for p in &c.platforms {
                s += &format!(
                    "      - platform: {}\n        image: {}\n        sbom: {}\n        sbomProtobuf: {}\n        provenance: {}\n",
                    q(p.platform.as_str()),
                    q(&p.image.to_string()),
                    q(&p.sbom),
                    q(&p.sbom_protobuf),
                    q(&p.provenance)
                );
            }
        }
    }
    if doc.charts.is_empty() {
        s += "charts: []\n";
    } else {
        s += "charts:\n";
        for c in &doc.charts {
            s += &format!("  - name: {}\n    version: {}\n    digest: {}\n", q(&c.name), q(&c.version), q(c.digest.as_str()));
        }
    }
    s += &format!(
        "compose:\n  file: {}\n  digest: {}\n",
        q(&doc.compose.file),
        q(doc.compose.digest.as_ref().map(Digest::as_str).unwrap_or(""))
    );
    // Not in §6.1: the customer tool, after §6.1's keys (see `schema::release::ToolEntry`).
    if !doc.tools.is_empty() {
        s += "tools:\n";
        for t in &doc.tools {
            s += &format!(
                "  - name: {}\n    platform: {}\n    file: {}\n    digest: {}\n    signature: {}\n    sbom: {}\n    provenance: {}\n",
                q(&t.name),
                q(t.platform.as_str()),
                q(&t.file),
                q(t.digest.as_str()),
                q(&t.signature),
                q(&t.sbom),
                q(&t.provenance)
            );
        }
    }
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
pub fn blob_signature(key: &dyn Signer, bytes: &[u8]) -> Result<String, SignerError> {
    Ok(blob_signature_raw(key, bytes)?.0)
}

/// [`blob_signature`] and the raw signature bytes it encodes (for a transparency log entry).
pub fn blob_signature_raw(key: &dyn Signer, bytes: &[u8]) -> Result<(String, Vec<u8>), SignerError> {
    let raw = key.try_sign(bytes)?;
    Ok((base64::engine::general_purpose::STANDARD.encode(&raw), raw))
}

/// `release.yaml.sigstore.json`: a sigstore bundle v0.3 with a public-key hint, or, signed
/// keyless, with the leaf certificate (v0.3 carries the leaf only: the chain is the trusted
/// root's).
pub fn bundle(key: &dyn Signer, bytes: &[u8], signature_b64: &str) -> serde_json::Value {
    let digest = sha2::Sha256::digest_bytes(bytes);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut material = serde_json::json!({
        "tlogEntries": [],
        "timestampVerificationData": { "rfc3161Timestamps": [] },
    });
    match key.certificate_chain().as_ref().and_then(|c| c.first()).and_then(|pem| crate::keyless::pem_der(pem).ok()) {
        Some(der) => material["certificate"] = serde_json::json!({ "rawBytes": b64.encode(der) }),
        None => material["publicKey"] = serde_json::json!({ "hint": key.public().key_id() }),
    }
    serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": material,
        "messageSignature": {
            "messageDigest": { "algorithm": "SHA2_256", "digest": b64.encode(digest) },
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
    use schema::model::Channel;

    /// A fixed release.yaml: two components (the first with per-platform references, the
    /// second without, as written before they existed), one chart, the compose file.
    fn fixed() -> ReleaseYaml {
        let component = |name: &str, rekor: &str| ComponentEntry {
            name: name.to_owned(),
            image: format!("registry.stella-ops.org/stellaops/{name}@{}", Digest::of(format!("{name} index").as_bytes())).parse().unwrap(),
            sbom: format!("sbom/{name}.cdx.json"),
            provenance: format!("provenance/{name}.intoto.jsonl"),
            signature: SignatureEntry { rekor_uuid: rekor.to_owned() },
            platforms: Vec::new(),
        };
        let platform = |name: &str, platform: schema::model::Platform| {
            let d = |what: &str| Digest::of(format!("{name} {platform} {what}").as_bytes());
            let repo = format!("registry.stella-ops.org/stellaops/{name}");
            PlatformEntry {
                platform,
                image: format!("{repo}@{}", d("manifest")).parse().unwrap(),
                sbom: format!("oci://{repo}/referrers/cdx-json@{}", d("json")),
                sbom_protobuf: format!("oci://{repo}/referrers/cdx-protobuf@{}", d("pb")),
                provenance: format!("oci://{repo}/attest/provenance@{}", d("provenance")),
            }
        };
        let mut authority = component("authority", "pending");
        authority.platforms =
            vec![platform("authority", schema::model::Platform::LinuxAmd64), platform("authority", schema::model::Platform::LinuxArm64)];
        ReleaseYaml {
            release: ReleaseInfo {
                version: "2.4.1".parse().unwrap(),
                channel: Channel::Stable,
                date: "2027-06-15T12:00:00Z".to_owned(),
                calendar: "2027.06".to_owned(),
            },
            components: vec![authority, component("scanner", "none")],
            charts: vec![ChartEntry { name: "stellaops".to_owned(), version: "2.4.1".to_owned(), digest: Digest::of(b"chart") }],
            compose: ComposeEntry { file: "compose/docker-compose.yaml".to_owned(), digest: Some(Digest::of(b"compose")) },
            tools: Vec::new(),
            checksums: Checksums { sha256: String::new() },
        }
    }

    fn rendered() -> (ReleaseYaml, String) {
        let mut doc = fixed();
        let bytes = render(&mut doc);
        (doc, String::from_utf8(bytes).unwrap())
    }

    /// Regression (fuzzing, issue 18: `fuzz/regressions/release_yaml/`): a value holding a
    /// line separator (U+2028) read back with a space after it, because JSON escaping leaves it
    /// as it is and YAML 1.1 readers take it for a line break; the C1 controls and DEL were
    /// refused by the reader.
    #[test]
    fn values_with_characters_json_leaves_unescaped_read_back_as_written() {
        for c in ['\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffe}', '\u{ffff}', '\u{a0}', '\u{1f600}']
        {
            let mut doc = fixed();
            doc.components[0].sbom = format!("a{c}\\ b{c}");
            doc.release.date = format!("{c}");
            let bytes = render(&mut doc);
            let back = parse(&bytes).unwrap_or_else(|e| panic!("U+{:04X}: {e}", u32::from(c)));
            assert_eq!(back, doc, "U+{:04X}", u32::from(c));
            let (stated, computed) = checksum(&bytes).unwrap();
            assert_eq!(stated, computed);
        }
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

    #[test]
    fn a_component_image_not_pinned_by_digest_is_refused() {
        let (doc, text) = rendered();
        let image = doc.components[0].image.to_string();
        for unpinned in ["registry.stella-ops.org/stellaops/authority:2.4.1", "registry.stella-ops.org/stellaops/authority"] {
            let edited = text.replace(&image, unpinned);
            assert_ne!(edited, text);
            let e = parse(edited.as_bytes()).unwrap_err();
            assert!(e.contains("is not pinned by digest"), "{e}");
            assert!(checksum(edited.as_bytes()).is_err());
        }
        // A digest that is not sha256 and 64 hex digits is not a pin either.
        let short = text.replace(image.rsplit_once('@').unwrap().1, "sha256:abc");
        assert!(parse(short.as_bytes()).is_err());
    }

    #[test]
    fn typed_fields_are_refused_at_parse() {
        let (_, text) = rendered();
        for (from, to) in [("\"stable\"", "\"beta\""), ("\"2.4.1\"\n  channel", "\"2.4\"\n  channel")] {
            let edited = text.replacen(from, to, 1);
            assert_ne!(edited, text);
            assert!(parse(edited.as_bytes()).is_err(), "{edited}");
        }
        let chart = Digest::of(b"chart").to_string();
        assert!(parse(text.replace(&chart, "sha256:chart").as_bytes()).is_err());
    }

    #[test]
    fn platforms_follow_the_spec_keys_and_their_entries_are_typed() {
        let (doc, text) = rendered();
        // After §6.1's keys of the component, in the plan's platform order.
        let authority = &text[text.find("name: \"authority\"").unwrap()..text.find("name: \"scanner\"").unwrap()];
        let at = |k: &str| authority.find(k).unwrap();
        assert!(at("signature:") < at("platforms:") && at("\"linux/amd64\"") < at("\"linux/arm64\""), "{authority}");
        // A component without them (written before they existed) reads as an empty list.
        assert!(doc.components[1].platforms.is_empty());
        assert!(!text[text.find("name: \"scanner\"").unwrap()..].contains("platforms:"));
        // An unknown key, an unknown platform or an image not pinned by digest is refused.
        for (from, to) in [
            ("        sbomProtobuf: ", "        sbomProtobufs: "),
            ("platform: \"linux/arm64\"", "platform: \"linux/s390x\""),
            (doc.components[0].platforms[1].image.to_string().as_str(), "registry.stella-ops.org/stellaops/authority:2.4.1"),
        ] {
            let edited = text.replacen(from, to, 1);
            assert_ne!(edited, text);
            assert!(parse(edited.as_bytes()).is_err(), "{to}");
        }
    }

    #[test]
    fn a_release_without_compose_writes_and_reads_empty_strings() {
        let mut doc = fixed();
        doc.compose = ComposeEntry::none();
        let text = String::from_utf8(render(&mut doc)).unwrap();
        assert!(text.contains("\ncompose:\n  file: \"\"\n  digest: \"\"\nchecksums:\n"), "{text}");
        assert_eq!(parse(text.as_bytes()).unwrap(), doc);
    }
}
