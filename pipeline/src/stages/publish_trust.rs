//! The publish stage's second half: the channels' trust repository (`<channels>/tuf/`, see
//! [`crate::tuf`]) to a registry, then the channel tags. Only the publish stage writes to a
//! registry; this is the part that follows the channel store rather than a release directory.
//!
//! In: the channel store (its trust repository and kept release manifests), a destination
//! `HOST/NAMESPACE`. Out: every file of the trust repository as an OCI artifact in
//! `<namespace>/trust` (layout: [`verifier::tuf_client`]), and each channel's tag
//! (`<namespace>/<component>:<channel>`) on the component index its pointer names.
//!
//! 1. targets first, then the versioned metadata (root chain, targets, delegated roles,
//!    snapshot), then `root`, then `timestamp`: a client reading the registry meanwhile sees
//!    the old timestamp, which names only files already there. A versioned file the registry
//!    holds with other bytes is refused (two stores publishing to one namespace);
//! 2. the repository read back from the registry by a TUF client (`tough`) from the trusted
//!    root: only what verifies there moves a tag;
//! 3. each channel's tag moved to the index its pointer's release.yaml names (the release must
//!    have been published to this destination). A kill or a failure before this step leaves
//!    every channel tag where it was.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use oci::distribution::{DistError, RegistryTarget};
use oci::push::PushOptions;
use schema::model::{Channel, Digest};
use verifier::ops::{io, OpsError};
use verifier::tuf_client::{self, ARTIFACT_METADATA, ARTIFACT_TARGET, LAYER_METADATA, LAYER_TARGET, TRUST_REPOSITORY};

/// The empty config of an artifact manifest (image-spec 1.1).
const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// What [`publish_trust`] did on one destination.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustPublished {
    pub target: String,
    /// `<namespace>/trust`.
    pub repository: String,
    /// Tags written (files new on the registry, and the moved `root` and `timestamp`).
    pub pushed: Vec<String>,
    /// Files the registry had already, byte for byte.
    pub present: usize,
    /// Each channel the registry's trust repository names, and its tags.
    pub channels: Vec<ChannelTags>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTags {
    pub channel: Channel,
    pub version: String,
    pub release_yaml: String,
    pub tags: Vec<MovedTag>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MovedTag {
    /// `<namespace>/<component>:<channel>`.
    pub reference: String,
    pub digest: Digest,
    /// False when the tag was there already.
    pub moved: bool,
}

/// `e` with the destination it happened on, the kind (and so the exit code) kept.
pub fn at(target: &RegistryTarget, e: OpsError) -> OpsError {
    let m = |s: String| format!("`{target}`: publishing the trust repository: {s}");
    match e {
        OpsError::Refused(s) => OpsError::Refused(m(s)),
        OpsError::Invalid(s) => OpsError::Invalid(m(s)),
        OpsError::Environment(s) => OpsError::Environment(m(s)),
        other => other,
    }
}

fn dist(e: DistError) -> OpsError {
    match e.exit_code() {
        schema::exit::Code::Rejected => OpsError::Refused(e.to_string()),
        _ => OpsError::Environment(e.to_string()),
    }
}

/// One file of the trust repository and its tag.
struct File {
    path: PathBuf,
    tag: String,
    target: bool,
}

/// The files in publishing order (step 1).
fn files(repo: &crate::tuf::Repo) -> Result<Vec<File>, OpsError> {
    let list = |dir: &Path| -> Result<Vec<PathBuf>, OpsError> {
        let mut out: Vec<PathBuf> = match fs::read_dir(dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(dir)(e)),
        };
        out.sort();
        Ok(out)
    };
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for path in list(&repo.targets())? {
        let n = name(&path);
        // Temporary files of a write in progress have no hash prefix: not targets.
        if let Some(tag) = tuf_client::target_tag(&n) {
            out.push(File { path, tag, target: true });
        }
    }
    let (mut last, mut versioned) = (Vec::new(), Vec::new());
    for path in list(&repo.metadata())? {
        let n = name(&path);
        let Some(tag) = tuf_client::metadata_tag(&n) else { continue };
        match n.as_str() {
            "root.json" => last.insert(0, File { path, tag, target: false }),
            "timestamp.json" => last.push(File { path, tag, target: false }),
            _ if n.split('.').next().is_some_and(|v| v.parse::<u64>().is_ok()) => versioned.push(File { path, tag, target: false }),
            _ => {}
        }
    }
    out.extend(versioned);
    out.extend(last);
    Ok(out)
}

/// `cargo xtask trust publish` (and the end of `publish` for a store with a trust repository):
/// the steps of the module documentation. `trusted_root`: the root the read-back trusts
/// (default: the repository's own first root).
pub fn publish_trust(
    store: &crate::channels::Store,
    target: &RegistryTarget,
    opts: &PushOptions,
    trusted_root: Option<&Path>,
) -> Result<TrustPublished, OpsError> {
    let repo = crate::tuf::Repo::of(store.root());
    if !repo.exists() {
        return Err(OpsError::Refused(format!(
            "`{}` has no trust repository to publish\n  hint: `cargo xtask trust init --root-key ROOT.key --release-key RELEASE.pub`",
            store.root().display()
        )));
    }
    let client = oci::push::client_for(target, opts).map_err(|e| OpsError::Environment(e.to_string()))?;
    let trust_repo = target.repository(TRUST_REPOSITORY);
    let mut report =
        TrustPublished { target: target.to_string(), repository: trust_repo.clone(), pushed: Vec::new(), present: 0, channels: Vec::new() };

    // 1.
    let scratch = tempfile::tempdir().map_err(|e| OpsError::Environment(format!("a temporary directory: {e}")))?;
    let empty = scratch.path().join("empty.json");
    fs::write(&empty, b"{}").map_err(io(&empty))?;
    let empty_digest = Digest::of(b"{}");
    // Every file's manifest, and what the registry has under its tag: a versioned file with
    // other bytes there stops the publication before anything is pushed.
    let mut todo = Vec::new();
    for f in files(&repo)? {
        let bytes = fs::read(&f.path).map_err(io(&f.path))?;
        let digest = Digest::of(&bytes);
        let title = f.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let (artifact, layer) = if f.target { (ARTIFACT_TARGET, LAYER_TARGET) } else { (ARTIFACT_METADATA, LAYER_METADATA) };
        // serde_json's maps are sorted: the same file gives the same manifest, byte for byte.
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": oci::MEDIA_MANIFEST,
            "artifactType": artifact,
            "config": {"mediaType": MEDIA_EMPTY, "digest": empty_digest, "size": 2},
            "layers": [{"mediaType": layer, "digest": digest, "size": bytes.len(), "annotations": {"org.opencontainers.image.title": title}}],
        }))
        .expect("a JSON value serializes");
        let manifest_digest = Digest::of(&manifest);
        let remote = client.head_manifest(&trust_repo, &f.tag).map_err(dist)?;
        if remote.as_deref() == Some(manifest_digest.as_str()) {
            report.present += 1;
            continue;
        }
        let moving = f.tag == "timestamp" || f.tag == "root";
        if let (Some(other), false) = (&remote, moving) {
            return Err(OpsError::Refused(format!(
                "`{trust_repo}:{}` on the registry is `{other}`, not this store's `{}` ({manifest_digest}): TUF files never change once published, so another channel store publishes to `{target}`\n  hint: publish each channel store to its own namespace, or publish from the store that wrote it",
                f.tag,
                f.path.display()
            )));
        }
        todo.push((f, digest, bytes.len() as u64, manifest));
    }
    for (f, digest, size, manifest) in todo {
        if f.tag == "timestamp" {
            oci::pause::at("trust-publish:before-timestamp");
        }
        for (blob, path, size) in [(&empty_digest, empty.as_path(), 2u64), (&digest, f.path.as_path(), size)] {
            if client.blob_exists(&trust_repo, blob).map_err(dist)?.is_none() {
                client.upload_blob(&trust_repo, blob, path, size, opts.chunk_size.max(1)).map_err(dist)?;
            }
        }
        client.put_manifest(&trust_repo, &f.tag, &manifest, oci::MEDIA_MANIFEST).map_err(dist)?;
        report.pushed.push(f.tag);
    }
    oci::pause::at("trust-publish:before-tags");
    // Nothing signed yet (`trust init` made the root; no channel moved): no channel tag to move.
    if !repo.metadata().join("timestamp.json").is_file() {
        return Ok(report);
    }

    // 2.
    let first_root = repo.metadata().join("1.root.json");
    let trusted = trusted_root.unwrap_or(&first_root);
    let reader = oci::push::client_for(target, opts).map_err(|e| OpsError::Environment(e.to_string()))?;
    let channels = tuf_client::check_registry(reader, target, trusted)?;

    // 3.
    for c in channels {
        let release_yaml = c.custom.get("releaseYaml").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let version = c.custom.get("version").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let wanted: Digest = release_yaml
            .parse()
            .map_err(|e| OpsError::Invalid(format!("`{trust_repo}`: `channel-{}.json`: `releaseYaml`: {e}", c.channel)))?;
        let path = kept_release(store, c.channel, &wanted)?;
        let bytes = fs::read(&path).map_err(io(&path))?;
        let doc = verifier::manifest::parse(&bytes).map_err(|m| OpsError::Invalid(format!("`{}`: {m}", path.display())))?;
        // Every index first (all there, or no tag moves), then the tags.
        let mut indexes = Vec::new();
        for comp in &doc.components {
            if comp.name == TRUST_REPOSITORY {
                return Err(OpsError::Invalid(format!(
                    "`{}`: a component named `{TRUST_REPOSITORY}` would share `{trust_repo}` with the trust repository\n  hint: rename the component in `release-trains/components.toml`",
                    path.display()
                )));
            }
            let repo_name = target.repository(&comp.name);
            let digest = comp.image.digest.clone();
            let got = client.get_manifest(&repo_name, digest.as_str()).map_err(dist)?.ok_or_else(|| {
                OpsError::Refused(format!(
                    "`{}` points at {version}, whose `{}` (`{repo_name}@{digest}`) is not on `{target}`: the channel tag would name nothing\n  hint: publish the release first: `cargo xtask publish <release directory> --registry {target}`",
                    c.channel, comp.name
                ))
            })?;
            indexes.push((repo_name, digest, got));
        }
        let mut tags = Vec::new();
        for (repo_name, digest, got) in indexes {
            let tag = c.channel.as_str();
            let moved = client.head_manifest(&repo_name, tag).map_err(dist)?.as_deref() != Some(digest.as_str());
            if moved {
                client.put_manifest(&repo_name, tag, &got.bytes, &got.media_type).map_err(dist)?;
            }
            tags.push(MovedTag { reference: format!("{repo_name}:{tag}"), digest, moved });
        }
        report.channels.push(ChannelTags { channel: c.channel, version, release_yaml, tags });
    }
    Ok(report)
}

/// The kept `release.yaml` of `channel` whose sha256 is `digest`.
fn kept_release(store: &crate::channels::Store, channel: Channel, digest: &Digest) -> Result<PathBuf, OpsError> {
    let dir = store.root().join(channel.as_str()).join("releases");
    let rd = fs::read_dir(&dir).map_err(io(&dir))?;
    for e in rd.flatten() {
        let path = e.path().join("release.yaml");
        if fs::read(&path).is_ok_and(|b| &Digest::of(&b) == digest) {
            return Ok(path);
        }
    }
    Err(OpsError::Invalid(format!(
        "`{}` keeps no release.yaml {digest}, which the trust repository names for `{channel}`\n  hint: publish from the channel store that made the move",
        dir.display()
    )))
}
