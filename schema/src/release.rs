//! `release.yaml` (spec §6.1), typed: what the manifest stage writes and every reader (verify,
//! publish, kit, promote, rollback, preflight) reads back.
//!
//! The bytes are written by `verifier::manifest`'s own emitter (every scalar double-quoted,
//! in the order of §6.1) from the `Display` of each field; these types are what a reader gets
//! after parsing, so a value that cannot be what §6.1 says (an image pinned by a tag, a digest
//! that is not `sha256:`, an unknown channel) is refused at the edge, with the key it came from.
//!
//! Per-platform references: §6.1 gives a component one `sbom` and one `provenance`; they are
//! kept, naming the component's first platform's (linux/amd64 for the default bundle). Every
//! platform's image, SBOMs (CycloneDX JSON and protobuf) and provenance are listed in an extra
//! key, `platforms`, written after §6.1's keys of the component: a reader of §6.1 that looks
//! up the keys it knows (as YAML readers do) reads the same document as before; this
//! pipeline's readers accept a release.yaml without it (releases cut before it existed are
//! still promoted, rolled back and preflighted) and `verify` refuses one without it.

use serde::{Deserialize, Serialize};

use crate::model::{Channel, Digest, PinnedRef, Platform, Version};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseYaml {
    pub release: ReleaseInfo,
    pub components: Vec<ComponentEntry>,
    pub charts: Vec<ChartEntry>,
    pub compose: ComposeEntry,
    /// The customer tool built with the release (not in §6.1: see [`ToolEntry`]). Empty in a
    /// release.yaml written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolEntry>,
    pub checksums: Checksums,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseInfo {
    /// `MAJOR.MINOR.PATCH`, without the calendar tag (that is [`ReleaseInfo::calendar`]).
    pub version: Version,
    /// The channel the release was cut for.
    pub channel: Channel,
    /// RFC 3339 UTC time of SOURCE_DATE_EPOCH.
    pub date: String,
    /// `YYYY.MM`.
    pub calendar: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    pub name: String,
    /// `repository@sha256:...` of the component's multi-arch index.
    pub image: PinnedRef,
    pub sbom: String,
    pub provenance: String,
    pub signature: SignatureEntry,
    /// Every platform's image and evidence, in the component's platform order (not in §6.1:
    /// see the module's documentation). Empty in a release.yaml written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformEntry>,
}

/// One platform image of a component and its evidence, each named as §6.1 names the
/// component's: `oci://<repository>/<kind>@sha256:<digest of the file>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlatformEntry {
    pub platform: Platform,
    /// `repository@sha256:...` of the platform's image manifest.
    pub image: PinnedRef,
    /// `oci://<repository>/referrers/cdx-json@sha256:...`: the CycloneDX JSON SBOM.
    pub sbom: String,
    /// `oci://<repository>/referrers/cdx-protobuf@sha256:...`: the CycloneDX protobuf SBOM.
    pub sbom_protobuf: String,
    /// `oci://<repository>/attest/provenance@sha256:...`: the signed provenance envelope.
    pub provenance: String,
}

/// The customer tool (`stellaops`) as the release built it, in an extra key `tools` after
/// §6.1's `compose` (a reader of §6.1 reads the same document as before, as for `platforms`).
/// Paths are relative to the release directory (and to a kit's root); `sbom` and `provenance`
/// name their file's digest as `<path>@sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolEntry {
    /// The program's name: `stellaops`.
    pub name: String,
    /// What it runs on: `linux/amd64`.
    pub platform: Platform,
    /// `tools/stellaops`.
    pub file: String,
    /// sha256 of the program.
    pub digest: Digest,
    /// `tools/stellaops.sig`: the release key's raw signature over the program (DER ECDSA over
    /// SHA-256, or the 64 bytes of Ed25519), checked by `openssl` with the release's public key.
    pub signature: String,
    /// `tools/stellaops.cdx.json@sha256:...`: its CycloneDX SBOM (the crates it links).
    pub sbom: String,
    /// `tools/stellaops.provenance.dsse.json@sha256:...`: its signed SLSA provenance.
    pub provenance: String,
}

/// The digest an `oci://...@sha256:<hex>` reference of release.yaml names, or why it names none.
pub fn stated_digest(reference: &str) -> Result<Digest, String> {
    let (_, d) = reference.rsplit_once('@').ok_or_else(|| format!("`{reference}` names no digest"))?;
    d.parse().map_err(|e| format!("`{reference}`: {e}"))
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
    /// The chart's own version (`Chart.yaml`), free text to this document.
    pub version: String,
    /// sha256 of the packaged chart.
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeEntry {
    /// Path of the compose file in the release; empty when the release has none.
    pub file: String,
    /// sha256 of the compose file; `None` (written `""`) when the release has none.
    #[serde(with = "empty_is_none")]
    pub digest: Option<Digest>,
}

impl ComposeEntry {
    /// The entry of a release without a compose file: `file: ""`, `digest: ""`.
    pub fn none() -> Self {
        ComposeEntry { file: String::new(), digest: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksums {
    /// Lowercase hex sha256 (no `sha256:` prefix) of the bytes before `checksums:`.
    pub sha256: String,
}

/// An optional digest written as `""` when absent (the shape §6.1 has always had).
mod empty_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::Digest;

    pub fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_ref().map(Digest::as_str).unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_compose_digest_is_none_and_a_bad_one_is_refused() {
        let none: ComposeEntry = serde_json::from_str(r#"{"file":"","digest":""}"#).unwrap();
        assert_eq!(none, ComposeEntry::none());
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"file":"","digest":""}"#);
        let d = Digest::of(b"compose");
        let some: ComposeEntry = serde_json::from_str(&format!(r#"{{"file":"c.yaml","digest":"{d}"}}"#)).unwrap();
        assert_eq!(some.digest, Some(d));
        assert!(serde_json::from_str::<ComposeEntry>(r#"{"file":"c.yaml","digest":"md5:00"}"#).is_err());
    }

    #[test]
    fn a_stated_digest_is_the_sha256_after_the_last_at() {
        let d = Digest::of(b"sbom");
        assert_eq!(stated_digest(&format!("oci://r.example/ns/x/referrers/cdx-json@{d}")).unwrap(), d);
        assert!(stated_digest("oci://r.example/ns/x/referrers/cdx-json").unwrap_err().contains("names no digest"));
        assert!(stated_digest("oci://r.example/x@sha256:abc").is_err());
    }
}
