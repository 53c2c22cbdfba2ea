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
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::build::Images;
use crate::evidence::Evidence;
use crate::model::{rfc3339, Digest};
use crate::oci::{self, Descriptor, Layout, LayoutError};
use crate::sign;

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
pub const IMAGE_KINDS: [&str; 5] =
    ["sbom-cyclonedx-json", "sbom-cyclonedx-protobuf", "sbom-attestation", "provenance-attestation", "signature"];
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

/// One artifact to attach: its kind, `artifactType`, blob media type, file name and bytes.
struct Artifact<'a> {
    kind: &'static str,
    artifact_type: &'static str,
    predicate: Option<&'a str>,
    title: String,
    bytes: Vec<u8>,
}

/// A bare subject descriptor (media type, digest, size).
fn subject_of(d: &Descriptor) -> Descriptor {
    Descriptor::new(&d.media_type, d.digest.clone(), d.size)
}

fn read(dir: &Path, rel: &str) -> Result<Vec<u8>, LayoutError> {
    let path = dir.join(rel);
    fs::read(&path).map_err(|source| LayoutError::Io { path, source })
}

fn put_artifact(layout: &Layout, subject: &Descriptor, a: Artifact<'_>, created: &str) -> Result<Descriptor, LayoutError> {
    let mut layer = layout.put_blob(a.artifact_type, &a.bytes)?;
    layer.annotations.insert(ANNOTATION_TITLE.to_owned(), a.title);
    let mut annotations =
        BTreeMap::from([(ANNOTATION_CREATED.to_owned(), created.to_owned()), (ANNOTATION_KIND.to_owned(), a.kind.to_owned())]);
    if let Some(p) = a.predicate {
        annotations.insert(ANNOTATION_PREDICATE.to_owned(), p.to_owned());
    }
    let m = ArtifactManifest {
        schema_version: 2,
        media_type: oci::MEDIA_MANIFEST.to_owned(),
        artifact_type: a.artifact_type.to_owned(),
        config: empty_config(layout)?,
        layers: vec![layer],
        subject: subject_of(subject),
        annotations,
    };
    let d = layout.put_json(oci::MEDIA_MANIFEST, &m)?;
    Ok(m.descriptor(d.digest, d.size))
}

/// The cosign signature of `signed` again, as a referrer: the same simple-signing layer (with
/// its signature annotation) in an artifact manifest whose subject is the signed manifest.
fn put_signature(layout: &Layout, subject: &Descriptor, created: &str) -> Result<Descriptor, LayoutError> {
    let legacy = layout.find_ref(&sign::signature_tag(&subject.digest))?;
    let m: oci::Manifest = layout.read_json(&legacy.digest, "a signature manifest")?;
    let a = ArtifactManifest {
        schema_version: 2,
        media_type: oci::MEDIA_MANIFEST.to_owned(),
        artifact_type: ARTIFACT_COSIGN_SIGNATURE.to_owned(),
        config: empty_config(layout)?,
        layers: m.layers,
        subject: subject_of(subject),
        annotations: BTreeMap::from([
            (ANNOTATION_CREATED.to_owned(), created.to_owned()),
            (ANNOTATION_KIND.to_owned(), "signature".to_owned()),
        ]),
    };
    let d = layout.put_json(oci::MEDIA_MANIFEST, &a)?;
    Ok(a.descriptor(d.digest, d.size))
}

/// What [`attach`] added.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attached {
    pub referrers: usize,
}

/// Adds every referrer of the release to `layout` and lists them in its `index.json` (after
/// the named images and signatures, in component, platform, kind order). `dir` is the
/// (staging) release directory holding the evidence and `attest/` files; `epoch` is
/// SOURCE_DATE_EPOCH. Replaces referrers listed by an earlier run.
pub fn attach(layout: &Layout, images: &Images, evidence: &Evidence, dir: &Path, epoch: i64) -> Result<Attached, LayoutError> {
    let created = rfc3339(epoch);
    let mut added = Vec::new();
    let drift = fs::read(&evidence.drift).map_err(|source| LayoutError::Io { path: evidence.drift.clone(), source })?;
    let drift_env = read(dir, "attest/drift.dsse.json")?;
    for (name, c) in &images.components {
        for image in &c.images {
            let slug = image.platform.slug();
            let Some(e) = evidence.images.iter().find(|e| &e.component == name && e.platform == image.platform.as_str()) else {
                continue;
            };
            let artifacts = [
                Artifact {
                    kind: IMAGE_KINDS[0],
                    artifact_type: ARTIFACT_SBOM_JSON,
                    predicate: None,
                    title: format!("{slug}.cdx.json"),
                    bytes: read(dir, &e.sbom_json)?,
                },
                Artifact {
                    kind: IMAGE_KINDS[1],
                    artifact_type: ARTIFACT_SBOM_PROTOBUF,
                    predicate: None,
                    title: format!("{slug}.cdx.pb"),
                    bytes: read(dir, &e.sbom_protobuf)?,
                },
                Artifact {
                    kind: IMAGE_KINDS[2],
                    artifact_type: ARTIFACT_DSSE,
                    predicate: Some(sign::SBOM_PREDICATE),
                    title: format!("{slug}.sbom.dsse.json"),
                    bytes: read(dir, &format!("attest/{name}/{slug}.sbom.dsse.json"))?,
                },
                Artifact {
                    kind: IMAGE_KINDS[3],
                    artifact_type: ARTIFACT_DSSE,
                    predicate: Some(crate::provenance::PREDICATE_TYPE),
                    title: format!("{slug}.provenance.dsse.json"),
                    bytes: read(dir, &format!("attest/{name}/{slug}.provenance.dsse.json"))?,
                },
            ];
            for a in artifacts {
                added.push(put_artifact(layout, &image.manifest, a, &created)?);
            }
            added.push(put_signature(layout, &image.manifest, &created)?);
        }
        added.push(put_signature(layout, &c.index, &created)?);
        let index_artifacts = [
            Artifact {
                kind: INDEX_KINDS[1],
                artifact_type: ARTIFACT_DRIFT,
                predicate: None,
                title: "drift.json".to_owned(),
                bytes: drift.clone(),
            },
            Artifact {
                kind: INDEX_KINDS[2],
                artifact_type: ARTIFACT_DSSE,
                predicate: Some(sign::DRIFT_PREDICATE),
                title: "drift.dsse.json".to_owned(),
                bytes: drift_env.clone(),
            },
        ];
        for a in index_artifacts {
            added.push(put_artifact(layout, &c.index, a, &created)?);
        }
    }
    let mut index = layout.index()?;
    index.manifests.retain(|d| !is_referrer_entry(d));
    let referrers = added.len();
    index.manifests.extend(added);
    layout.write_index(&index)?;
    Ok(Attached { referrers })
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
