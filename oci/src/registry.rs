//! Reading images from OCI registries, by digest only, through oci-client.
//!
//! Every manifest and blob is hashed as it arrives and refused when its digest is not the one
//! asked for; a blob lands in the layout only whole and verified. Loopback registries
//! (`127.0.0.0/8`, `localhost`, `[::1]`) are spoken to over plain HTTP, as Docker and BuildKit
//! do; every other registry over HTTPS. Anonymous access (with the bearer-token dance that
//! oci-client performs) is enough for public bases; credentials come with the publish stage.

use std::io::Write;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::image;
use crate::layout::{self as oci, Layout, LayoutError};
use schema::model::{Digest, PinnedRef, Platform};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{reference}`: {message}")]
    Fetch { reference: String, message: String },
    #[error("`{reference}`: the registry sent content hashing to `{actual}`, not the pinned `{expected}`")]
    DigestMismatch { reference: String, expected: Digest, actual: Digest },
    #[error("`{reference}`: {source}")]
    Layout {
        reference: String,
        #[source]
        source: LayoutError,
    },
}

/// True for hosts that are spoken to over plain HTTP.
pub fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

fn client(host: &str) -> Client {
    // rustls is built with the ring provider only (see Cargo.toml); install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if is_loopback(host) { ClientProtocol::Http } else { ClientProtocol::Https };
    Client::new(ClientConfig { protocol, ..Default::default() })
}

fn runtime(reference: &str) -> Result<tokio::runtime::Runtime, RegistryError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RegistryError::Fetch { reference: reference.to_owned(), message: format!("cannot start an I/O runtime: {e}") })
}

/// Copies the image pinned by `r` for `platform`, with every blob its manifest names, into
/// `layout`; returns the manifest's digest and bytes (stored and verified as the registry sent
/// them, never re-serialized). `r` may pin an image manifest (OCI, with or without
/// `mediaType`, or Docker v2 schema 2) or an index (OCI index, Docker manifest list): then the
/// platform's manifest is chosen from it and fetched by its digest, which the index pins.
pub fn pull_image(r: &PinnedRef, platform: Platform, layout: &Layout) -> Result<(Digest, Vec<u8>), RegistryError> {
    let name = r.to_string();
    let fetch = |message: String| RegistryError::Fetch { reference: name.clone(), message };
    let rt = runtime(&name)?;
    let c = client(&r.registry);
    let accept = [oci::MEDIA_MANIFEST, oci::MEDIA_DOCKER_MANIFEST, oci::MEDIA_INDEX, oci::MEDIA_DOCKER_LIST];
    rt.block_on(async {
        let get = |digest: Digest| {
            let reference = Reference::with_digest(r.registry.clone(), r.repository.clone(), digest.to_string());
            let c = &c;
            let name = &name;
            async move {
                let (bytes, _) = c
                    .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, &accept)
                    .await
                    .map_err(|e| RegistryError::Fetch { reference: name.clone(), message: format!("{digest}: {e}") })?;
                let actual = Digest::of(&bytes);
                if actual != digest {
                    return Err(RegistryError::DigestMismatch { reference: name.clone(), expected: digest, actual });
                }
                Ok::<_, RegistryError>(bytes.to_vec())
            }
        };
        let mut digest = r.digest.clone();
        let mut bytes = get(digest.clone()).await?;
        let manifest = match image::parse(&bytes).map_err(|e| fetch(format!("{digest}: {e}")))? {
            image::Document::Manifest(_, m) => m,
            image::Document::Index(_, index) => {
                let d = image::select_platform(&index, platform).map_err(|e| fetch(format!("{digest}: {e}")))?;
                digest = d.digest;
                bytes = get(digest.clone()).await?;
                match image::parse(&bytes).map_err(|e| fetch(format!("{digest}: {e}")))? {
                    image::Document::Manifest(_, m) => m,
                    image::Document::Index(..) => return Err(fetch(format!("{digest}: an index inside an index is not an image"))),
                }
            }
        };
        let reference = Reference::with_digest(r.registry.clone(), r.repository.clone(), digest.to_string());
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if layout.blob_path(&d.digest).is_file() {
                continue;
            }
            let mut stream = c.pull_blob_stream(&reference, d.digest.as_str()).await.map_err(|e| fetch(e.to_string()))?.stream;
            // Chunks are written as they arrive; nothing is held whole. A blob of another
            // digest is discarded by `commit`.
            let layout_err = |source| RegistryError::Layout { reference: name.clone(), source };
            let mut w = layout.blob_writer().map_err(layout_err)?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| fetch(format!("blob {}: {e}", d.digest)))?;
                w.write_all(&chunk).map_err(|source| layout_err(LayoutError::Io { path: layout.root().to_owned(), source }))?;
            }
            w.commit(Some(&d.digest)).map_err(|e| match e {
                LayoutError::DigestMismatch { expected, actual, .. } => {
                    RegistryError::DigestMismatch { reference: format!("{name} blob {expected}"), expected, actual }
                }
                other => layout_err(other),
            })?;
        }
        layout.put_blob(oci::MEDIA_MANIFEST, &bytes).map_err(|source| RegistryError::Layout { reference: name.clone(), source })?;
        Ok((digest, bytes))
    })
}

/// Pushes the image manifest `digest` of `layout` (its config and layers first) into
/// `repository` (`host[:port]/path`) by digest: the bytes land unchanged, so the registry
/// serves the same digest. Blobs the registry already has are not sent again. Used to seed a
/// mirror from which BuildKit pulls pinned bases; the release's own images are published by
/// the publish stage.
pub fn push_manifest(layout: &Layout, digest: &Digest, repository: &str) -> Result<(), RegistryError> {
    let name = format!("{repository}@{digest}");
    let fetch = |message: String| RegistryError::Fetch { reference: name.clone(), message };
    let (registry, repo) = repository.split_once('/').ok_or_else(|| fetch("is not `host/repository`".to_owned()))?;
    let layout_err = |source| RegistryError::Layout { reference: name.clone(), source };
    let bytes = layout.read_blob(digest).map_err(layout_err)?;
    let manifest: oci::Manifest = serde_json::from_slice(&bytes).map_err(|e| fetch(format!("not an image manifest: {e}")))?;
    let rt = runtime(&name)?;
    let c = client(registry);
    let reference = Reference::with_digest(registry.to_owned(), repo.to_owned(), digest.to_string());
    rt.block_on(async {
        c.auth(&reference, &RegistryAuth::Anonymous, oci_client::RegistryOperation::Push).await.map_err(|e| fetch(e.to_string()))?;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if c.blob_exists(&reference, d.digest.as_str()).await.unwrap_or(false) {
                continue;
            }
            // Bases are pinned, verified blobs of modest size; one blob at a time in memory.
            let blob = std::fs::read(layout.blob_path(&d.digest))
                .map_err(|source| layout_err(LayoutError::Io { path: layout.blob_path(&d.digest), source }))?;
            c.push_blob(&reference, blob, d.digest.as_str()).await.map_err(|e| fetch(format!("push blob {}: {e}", d.digest)))?;
        }
        // The manifest's own kind (a Docker v2s2 base stays Docker: the bytes are the pin).
        let media = image::parse(&bytes).map_err(|e| fetch(e.to_string()))?.kind().media_type();
        let content_type = media.parse().map_err(|e| fetch(format!("media type `{media}`: {e}")))?;
        c.push_manifest_raw(&reference, bytes, content_type).await.map_err(|e| fetch(format!("push manifest: {e}")))?;
        Ok(())
    })
}

/// Resolves `host/repository` at `reference` (a tag or a digest) to the digest of the
/// manifest or index the registry serves, with its bytes as sent. A digest reference is
/// checked against the bytes. Used once, by `cargo xtask lock add`; the tag is not kept.
pub fn resolve(registry: &str, repository: &str, reference: &str) -> Result<(Digest, Vec<u8>), RegistryError> {
    let sep = if reference.starts_with("sha256:") { '@' } else { ':' };
    let name = format!("{registry}/{repository}{sep}{reference}");
    let rt = runtime(&name)?;
    let c = client(registry);
    let accept = [oci::MEDIA_MANIFEST, oci::MEDIA_DOCKER_MANIFEST, oci::MEDIA_INDEX, oci::MEDIA_DOCKER_LIST];
    let r = if sep == '@' {
        Reference::with_digest(registry.to_owned(), repository.to_owned(), reference.to_owned())
    } else {
        Reference::with_tag(registry.to_owned(), repository.to_owned(), reference.to_owned())
    };
    let bytes = rt.block_on(async {
        c.pull_manifest_raw(&r, &RegistryAuth::Anonymous, &accept)
            .await
            .map_err(|e| RegistryError::Fetch { reference: name.clone(), message: e.to_string() })
    })?;
    let actual = Digest::of(&bytes.0);
    if sep == '@' {
        let expected: Digest = reference
            .parse()
            .map_err(|e: schema::model::ParseError| RegistryError::Fetch { reference: name.clone(), message: e.to_string() })?;
        if actual != expected {
            return Err(RegistryError::DigestMismatch { reference: name, expected, actual });
        }
    }
    Ok((actual, bytes.0.to_vec()))
}
