//! Reading image documents written by other tools: OCI image manifests (with or without the
//! optional `mediaType`, as umoci writes them), OCI image indexes, Docker v2 schema 2 manifests
//! and Docker manifest lists; choosing a platform's manifest in an index; and what each layer
//! media type means for a release built on it.
//!
//! Parsing never re-serializes: a pin is checked against the bytes as stored, and the caller
//! keeps those bytes.

use serde::Deserialize;

use crate::layer::HashingReader;
use crate::layout::{
    Descriptor, Index, Manifest, MEDIA_DOCKER_LAYER, MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST,
};
use crate::layout::{Layout, LayoutError};
use crate::pgzip::ParallelGzEncoder;
use schema::model::{Digest, Platform};

/// Docker's image config (`docker save`, v2 schema 2): the same JSON as OCI's config.
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// An uncompressed OCI layer (`docker save` since Engine 25 writes these).
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// An uncompressed Docker layer.
pub const MEDIA_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Which kind of document a manifest blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OCI image manifest (`mediaType` given or absent).
    OciManifest,
    /// Docker v2 schema 2 image manifest.
    DockerManifest,
    /// OCI image index (`mediaType` given or absent).
    OciIndex,
    /// Docker manifest list.
    DockerList,
}

impl Kind {
    /// The media type of the document (what a registry is told on push).
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::OciManifest => MEDIA_MANIFEST,
            Kind::DockerManifest => MEDIA_DOCKER_MANIFEST,
            Kind::OciIndex => MEDIA_INDEX,
            Kind::DockerList => MEDIA_DOCKER_LIST,
        }
    }
}

/// A parsed manifest or index; the bytes it came from stay with the caller.
#[derive(Debug, Clone)]
pub enum Document {
    Manifest(Kind, Box<Manifest>),
    Index(Kind, Index),
}

impl Document {
    pub fn kind(&self) -> Kind {
        match self {
            Document::Manifest(k, _) | Document::Index(k, _) => *k,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("schemaVersion {0}: only version 2 (OCI, Docker v2 schema 2) is read; Docker v2 schema 1 is deprecated and unsigned")]
    SchemaVersion(u64),
    #[error("media type `{0}` is not an image manifest or index")]
    MediaType(String),
    #[error("no `mediaType` and neither `manifests` (an index) nor `config` and `layers` (a manifest)")]
    Shape,
    #[error("`{media_type}` document does not parse: {message}")]
    Malformed { media_type: &'static str, message: String },
    #[error("the index lists no manifest for {platform} (it has: {available})")]
    NoPlatform { platform: Platform, available: String },
    #[error("the index lists {count} manifests for {platform}; pin one of them: {digests}")]
    Ambiguous { platform: Platform, count: usize, digests: String },
}

/// Parses a manifest or index as its bytes stand.
pub fn parse(bytes: &[u8]) -> Result<Document, ImageError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u64>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| ImageError::NotJson(e.to_string()))?;
    match probe.schema_version {
        Some(2) => {}
        Some(v) => return Err(ImageError::SchemaVersion(v)),
        None => return Err(ImageError::Malformed { media_type: "image manifest", message: "no `schemaVersion`".to_owned() }),
    }
    let kind = match probe.media_type.as_deref() {
        Some(MEDIA_MANIFEST) => Kind::OciManifest,
        Some(MEDIA_DOCKER_MANIFEST) => Kind::DockerManifest,
        Some(MEDIA_INDEX) => Kind::OciIndex,
        Some(MEDIA_DOCKER_LIST) => Kind::DockerList,
        Some(other) => return Err(ImageError::MediaType(other.to_owned())),
        // The image spec makes `mediaType` optional; the shape decides.
        None => match (probe.manifests.is_some(), probe.config.is_some() && probe.layers.is_some()) {
            (true, false) => Kind::OciIndex,
            (false, true) => Kind::OciManifest,
            _ => return Err(ImageError::Shape),
        },
    };
    let malformed = |e: serde_json::Error| ImageError::Malformed { media_type: kind.media_type(), message: e.to_string() };
    Ok(match kind {
        Kind::OciManifest | Kind::DockerManifest => Document::Manifest(kind, Box::new(serde_json::from_slice(bytes).map_err(malformed)?)),
        Kind::OciIndex | Kind::DockerList => Document::Index(kind, serde_json::from_slice(bytes).map_err(malformed)?),
    })
}

/// The one manifest of `index` for `platform`. An arm64 entry matches with variant `v8` or
/// none (`v8` is preferred when both are listed); entries of other platforms, and
/// attestation manifests (`unknown/unknown`), are ignored.
pub fn select_platform(index: &Index, platform: Platform) -> Result<Descriptor, ImageError> {
    let want = crate::layout::PlatformSpec::from(platform);
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.media_type == MEDIA_MANIFEST || d.media_type == MEDIA_DOCKER_MANIFEST)
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os == want.os && p.architecture == want.architecture))
        .collect();
    let exact: Vec<&Descriptor> =
        candidates.iter().copied().filter(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref()).collect();
    let chosen = if exact.is_empty() {
        candidates.iter().copied().filter(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none())).collect()
    } else {
        exact
    };
    match chosen.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ImageError::NoPlatform {
            platform,
            available: index
                .manifests
                .iter()
                .map(|d| match &d.platform {
                    Some(p) => format!("{}/{}{}", p.os, p.architecture, p.variant.as_ref().map(|v| format!("/{v}")).unwrap_or_default()),
                    None => "no platform".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
        many => Err(ImageError::Ambiguous {
            platform,
            count: many.len(),
            digests: many.iter().map(|d| d.digest.to_string()).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// What a layer media type is to a release built on the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// gzip-compressed tar (OCI or Docker): taken as it is, named `tar+gzip`.
    Gzip,
    /// Uncompressed tar (OCI or Docker): gzipped by the pipeline's deterministic writer.
    Tar,
}

/// The kind of a layer by its media type; `None` for what a release cannot carry (zstd,
/// Docker's foreign layers, non-distributable layers, anything unknown).
pub fn layer_kind(media_type: &str) -> Option<LayerKind> {
    match media_type {
        MEDIA_LAYER_GZIP | MEDIA_DOCKER_LAYER => Some(LayerKind::Gzip),
        MEDIA_LAYER_TAR | MEDIA_DOCKER_LAYER_TAR => Some(LayerKind::Tar),
        _ => None,
    }
}

/// Gzips the uncompressed layer `digest` of `from` into `to` with the layer writer's pinned
/// gzip ([`crate::pgzip`], level 6): the same tar gives the same bytes on every run and
/// machine. The tar is hashed as it is read and must be `digest` (which is also its diff_id,
/// so the image config does not change). Returns the gzip blob's descriptor (`tar+gzip`).
pub fn gzip_layer(from: &Layout, digest: &Digest, to: &Layout) -> Result<Descriptor, LayoutError> {
    let path = from.blob_path(digest);
    let file = std::fs::File::open(&path).map_err(|source| LayoutError::Io { path: path.clone(), source })?;
    let mut reader = HashingReader::new(std::io::BufReader::with_capacity(1 << 20, file));
    let (gz, size, ()) = to.put_blob_with(|w| {
        let mut enc = ParallelGzEncoder::new(w, 6);
        std::io::copy(&mut reader, &mut enc)?;
        enc.finish().map(|_| ())
    })?;
    let (actual, _) = reader.finish();
    if &actual != digest {
        let _ = std::fs::remove_file(to.blob_path(&gz));
        return Err(LayoutError::DigestMismatch { path, expected: digest.clone(), actual });
    }
    Ok(Descriptor::new(MEDIA_LAYER_GZIP, gz, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":10}"#;
    const LAYER: &str = r#"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":20}"#;

    fn entry(media: &str, digit: char, platform: &str) -> String {
        format!(r#"{{"mediaType":"{media}","digest":"sha256:{}","size":5,"platform":{platform}}}"#, digit.to_string().repeat(64))
    }

    #[test]
    fn an_oci_manifest_without_media_type_is_a_manifest() {
        // umoci writes manifests without `mediaType`.
        let bytes = format!(r#"{{"schemaVersion":2,"config":{CONFIG},"layers":[{LAYER}]}}"#);
        let doc = parse(bytes.as_bytes()).unwrap();
        assert_eq!(doc.kind(), Kind::OciManifest);
        let Document::Manifest(_, m) = doc else { panic!() };
        assert_eq!(m.media_type, None);
        assert_eq!(m.layers.len(), 1);
    }

    #[test]
    fn docker_v2s2_manifest_and_list_are_recognised() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_DOCKER_MANIFEST}","config":{{"mediaType":"{MEDIA_DOCKER_CONFIG}","size":7,"digest":"sha256:{}"}},"layers":[{{"mediaType":"{MEDIA_DOCKER_LAYER}","size":9,"digest":"sha256:{}"}}]}}"#,
            "3".repeat(64),
            "4".repeat(64)
        );
        let doc = parse(docker.as_bytes()).unwrap();
        assert_eq!(doc.kind(), Kind::DockerManifest);
        let Document::Manifest(_, m) = doc else { panic!() };
        assert_eq!(layer_kind(&m.layers[0].media_type), Some(LayerKind::Gzip));

        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_DOCKER_LIST}","manifests":[{}]}}"#,
            entry(MEDIA_DOCKER_MANIFEST, 'a', r#"{"architecture":"amd64","os":"linux"}"#)
        );
        assert_eq!(parse(list.as_bytes()).unwrap().kind(), Kind::DockerList);
    }

    #[test]
    fn an_index_without_media_type_is_an_index() {
        let bytes =
            format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, entry(MEDIA_MANIFEST, 'a', r#"{"architecture":"amd64","os":"linux"}"#));
        assert_eq!(parse(bytes.as_bytes()).unwrap().kind(), Kind::OciIndex);
    }

    #[test]
    fn what_is_not_an_image_is_refused() {
        assert!(matches!(parse(b"not json"), Err(ImageError::NotJson(_))));
        assert_eq!(parse(br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#).unwrap_err(), ImageError::SchemaVersion(1));
        assert_eq!(parse(br#"{"schemaVersion":2}"#).unwrap_err(), ImageError::Shape);
        let artifact = br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.config.v1+json"}"#;
        assert!(matches!(parse(artifact), Err(ImageError::MediaType(m)) if m.contains("helm")));
        // Both shapes at once is not a guess we make.
        let both = format!(r#"{{"schemaVersion":2,"config":{CONFIG},"layers":[],"manifests":[]}}"#);
        assert_eq!(parse(both.as_bytes()).unwrap_err(), ImageError::Shape);
    }

    #[test]
    fn the_platform_manifest_is_chosen_from_an_index() {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_INDEX}","manifests":[{},{},{},{}]}}"#,
            entry(MEDIA_MANIFEST, 'a', r#"{"architecture":"amd64","os":"linux"}"#),
            entry(MEDIA_MANIFEST, 'b', r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#),
            entry(MEDIA_MANIFEST, 'c', r#"{"architecture":"arm","os":"linux","variant":"v7"}"#),
            entry(MEDIA_MANIFEST, 'd', r#"{"architecture":"unknown","os":"unknown"}"#),
        );
        let Document::Index(_, index) = parse(bytes.as_bytes()).unwrap() else { panic!() };
        assert_eq!(select_platform(&index, Platform::LinuxAmd64).unwrap().digest.hex(), "a".repeat(64));
        assert_eq!(select_platform(&index, Platform::LinuxArm64).unwrap().digest.hex(), "b".repeat(64));

        // arm64 without a variant is arm64/v8.
        let no_variant = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            entry(MEDIA_DOCKER_MANIFEST, 'e', r#"{"architecture":"arm64","os":"linux"}"#)
        );
        let Document::Index(_, index) = parse(no_variant.as_bytes()).unwrap() else { panic!() };
        assert_eq!(select_platform(&index, Platform::LinuxArm64).unwrap().digest.hex(), "e".repeat(64));
        let err = select_platform(&index, Platform::LinuxAmd64).unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");

        let two = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{}]}}"#,
            entry(MEDIA_MANIFEST, 'a', r#"{"architecture":"amd64","os":"linux"}"#),
            entry(MEDIA_MANIFEST, 'f', r#"{"architecture":"amd64","os":"linux"}"#)
        );
        let Document::Index(_, index) = parse(two.as_bytes()).unwrap() else { panic!() };
        assert!(matches!(select_platform(&index, Platform::LinuxAmd64), Err(ImageError::Ambiguous { count: 2, .. })));
    }

    #[test]
    fn an_uncompressed_layer_is_gzipped_the_same_way_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let a = Layout::create(&dir.path().join("a")).unwrap();
        let b = Layout::create(&dir.path().join("b")).unwrap();
        let tar: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let d = a.put_blob(MEDIA_LAYER_TAR, &tar).unwrap().digest;
        let x = gzip_layer(&a, &d, &b).unwrap();
        std::fs::remove_file(b.blob_path(&x.digest)).unwrap();
        let y = gzip_layer(&a, &d, &b).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.media_type, MEDIA_LAYER_GZIP);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(std::fs::File::open(b.blob_path(&y.digest)).unwrap()), &mut back)
            .unwrap();
        assert_eq!(back, tar);
        // A blob that is not what its name says is refused, and nothing is left behind.
        std::fs::write(a.blob_path(&d), b"other bytes").unwrap();
        std::fs::remove_file(b.blob_path(&y.digest)).unwrap();
        assert!(matches!(gzip_layer(&a, &d, &b), Err(LayoutError::DigestMismatch { .. })));
        assert_eq!(std::fs::read_dir(b.root().join("blobs/sha256")).unwrap().count(), 0);
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(layer_kind(MEDIA_LAYER_GZIP), Some(LayerKind::Gzip));
        assert_eq!(layer_kind(MEDIA_DOCKER_LAYER), Some(LayerKind::Gzip));
        assert_eq!(layer_kind(MEDIA_LAYER_TAR), Some(LayerKind::Tar));
        assert_eq!(layer_kind(MEDIA_DOCKER_LAYER_TAR), Some(LayerKind::Tar));
        assert_eq!(layer_kind("application/vnd.oci.image.layer.v1.tar+zstd"), None);
        assert_eq!(layer_kind("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"), None);
    }
}
