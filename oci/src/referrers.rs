//! OCI 1.1 referrers in the release's `images/` layout: every SBOM, attestation, drift report
//! and signature as an artifact manifest whose `subject` is the image it is about.
//!
//! In: the layout after the sign stage, the evidence files of the release directory and the
//! cosign signatures. Out: one artifact manifest per (subject, kind), its blobs in the layout,
//! and its descriptor in `images/index.json` *without* a ref name (as oras' OCI store keeps
//! referrers), so that copying or packaging the layout carries them and tools that resolve
//! images by ref name (umoci, skopeo) never see them. The publish stage pushes them by digest
//! and lists them through the referrers API or the fallback tag `sha256-<hex>`.
//!
//! | kind | subject | `artifactType` | layer media type |
//! |---|---|---|---|
//! | `sbom-cyclonedx-json` | platform manifest | `application/vnd.cyclonedx+json` | the same |
//! | `sbom-cyclonedx-protobuf` | platform manifest | `application/x.vnd.cyclonedx+protobuf` | the same |
//! | `sbom-attestation` | platform manifest | `application/vnd.dsse.envelope.v1+json` | the same |
//! | `sbom-protobuf-attestation` | platform manifest | `application/vnd.dsse.envelope.v1+json` | the same |
//! | `provenance-attestation` | platform manifest | `application/vnd.dsse.envelope.v1+json` | the same |
//! | `signature` | platform manifest, index | `application/vnd.dev.cosign.artifact.sig.v1+json` | cosign simple signing |
//! | `drift-report` | index | `application/vnd.stellaops.drift-report.v1+json` | the same |
//! | `drift-attestation` | index | `application/vnd.dsse.envelope.v1+json` | the same |
//!
//! The DSSE envelopes share one `artifactType`, the envelope's own media type (what the bytes
//! are), and say what they attest in the annotation `in-toto.io/predicate-type` (BuildKit's
//! key for the same fact), so a client filters on both without pulling the envelope. Every
//! artifact manifest carries `org.stellaops.referrer` (the kind above) and
//! `org.opencontainers.image.created` (SOURCE_DATE_EPOCH): the manifests are a function of
//! their content, so releases stay reproducible wherever their content is (the provenance
//! envelope holds run times and is the one that differs between two builds). The config is the
//! empty descriptor of image-spec 1.1; cosign signatures keep their legacy `sha256-<hex>.sig`
//! tagged manifests beside these.

use std::collections::BTreeMap;

use crate::layout::{self as oci, Descriptor, Layout, LayoutError};
use schema::model::Digest;
use serde::{Deserialize, Serialize};

pub const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const ARTIFACT_SBOM_JSON: &str = "application/vnd.cyclonedx+json";
pub const ARTIFACT_SBOM_PROTOBUF: &str = "application/x.vnd.cyclonedx+protobuf";
pub const ARTIFACT_DSSE: &str = "application/vnd.dsse.envelope.v1+json";
pub const ARTIFACT_DRIFT: &str = "application/vnd.stellaops.drift-report.v1+json";
pub const ARTIFACT_COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const ANNOTATION_KIND: &str = "org.stellaops.referrer";
pub const ANNOTATION_PREDICATE: &str = "in-toto.io/predicate-type";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

/// The kinds every platform image has, and every component index has.
pub const IMAGE_KINDS: [&str; 6] = [
    "sbom-cyclonedx-json",
    "sbom-cyclonedx-protobuf",
    "sbom-attestation",
    "sbom-protobuf-attestation",
    "provenance-attestation",
    "signature",
];
pub const INDEX_KINDS: [&str; 3] = ["signature", "drift-report", "drift-attestation"];

/// An image-spec 1.1 artifact manifest (a manifest with `artifactType` and `subject`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactManifest {
    pub schema_version: u32,
    pub media_type: String,
    pub artifact_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub subject: Descriptor,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ArtifactManifest {
    /// The descriptor that lists this manifest in a referrers response or fallback index:
    /// its `artifactType` and annotations pulled up, as distribution-spec 1.1 requires.
    pub fn descriptor(&self, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            artifact_type: Some(self.artifact_type.clone()),
            annotations: self.annotations.clone(),
            ..Descriptor::new(oci::MEDIA_MANIFEST, digest, size)
        }
    }
}

/// The descriptor of the empty config (`{}`).
pub fn empty_config(layout: &Layout) -> Result<Descriptor, LayoutError> {
    layout.put_blob(MEDIA_EMPTY, b"{}")
}

/// An `index.json` entry that lists a referrer (no ref name, an `artifactType`).
pub fn is_referrer_entry(d: &Descriptor) -> bool {
    d.artifact_type.is_some() && !d.annotations.contains_key(oci::ANNOTATION_REF_NAME)
}

/// A referrer found in a layout: its descriptor (artifactType and annotations pulled up) and
/// its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub descriptor: Descriptor,
    pub subject: Descriptor,
}

/// Every manifest named in `index.json` (with or without a ref name) that has a `subject`.
pub fn in_layout(layout: &Layout) -> Result<Vec<Referrer>, LayoutError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WithSubject {
        #[serde(default)]
        artifact_type: Option<String>,
        config: Option<Descriptor>,
        subject: Option<Descriptor>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let mut out = Vec::new();
    for d in layout.index()?.manifests.iter().filter(|d| d.media_type == oci::MEDIA_MANIFEST) {
        let m: WithSubject = layout.read_json(&d.digest, "a manifest")?;
        if let Some(subject) = m.subject {
            // distribution-spec: the artifactType, else the config's media type.
            let artifact_type = m.artifact_type.or(m.config.map(|c| c.media_type));
            let descriptor =
                Descriptor { artifact_type, annotations: m.annotations, ..Descriptor::new(&d.media_type, d.digest.clone(), d.size) };
            out.push(Referrer { descriptor, subject });
        }
    }
    Ok(out)
}
