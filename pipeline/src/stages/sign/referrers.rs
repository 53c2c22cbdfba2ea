//! Attaching the release's evidence and signatures to its images as OCI 1.1 referrers (the
//! format, media types and kinds: [`oci::referrers`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::stages::build::Images;
use crate::stages::evidence::Evidence;
use oci::referrers::*;
use oci::{self, Descriptor, Layout, LayoutError};
use schema::model::rfc3339;
use verifier::sign;

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

fn read(dir: &Path, rel: impl AsRef<Path>) -> Result<Vec<u8>, LayoutError> {
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
            let Some(e) = evidence.get(name, image.platform) else {
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
                    bytes: read(dir, format!("attest/{name}/{slug}.sbom.dsse.json"))?,
                },
                Artifact {
                    kind: IMAGE_KINDS[3],
                    artifact_type: ARTIFACT_DSSE,
                    predicate: Some(sign::SBOM_PROTOBUF_PREDICATE),
                    title: format!("{slug}.sbom-protobuf.dsse.json"),
                    bytes: read(dir, format!("attest/{name}/{slug}.sbom-protobuf.dsse.json"))?,
                },
                Artifact {
                    kind: IMAGE_KINDS[4],
                    artifact_type: ARTIFACT_DSSE,
                    predicate: Some(crate::stages::evidence::provenance::PREDICATE_TYPE),
                    title: format!("{slug}.provenance.dsse.json"),
                    bytes: read(dir, format!("attest/{name}/{slug}.provenance.dsse.json"))?,
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
