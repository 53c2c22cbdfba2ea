//! The channels' trust repository as a TUF client reads it (`tough`'s client, awslabs'
//! implementation; python-tuf's `ngclient` is the independent one in the tests): from a
//! trusted root, every role's signatures and thresholds (two release keys for `stable` and
//! `lts`), versions, hashes and expiry against the wall clock; then each channel's pointer
//! target with its custom metadata.
//!
//! Two places to read it from: a directory (an air-gapped copy of the repository, or a kit's),
//! and a registry, where `publish` puts it as OCI artifacts (one per file) in the repository
//! `<namespace>/trust` ([`TRUST_REPOSITORY`]):
//!
//! ```text
//! <ns>/trust:<N>.<role>     metadata `<N>.<role>.json` (root chain, targets, delegated roles, snapshot)
//! <ns>/trust:timestamp      `timestamp.json` (moved last: the commit point, as on disk)
//! <ns>/trust:root           `root.json`, the newest root (for a first look; clients trust a pinned one)
//! <ns>/trust:target.<hex>   the target whose sha256 is <hex> (a channel pointer, a release.yaml)
//! ```
//!
//! Each artifact is an image manifest with `artifactType` [`ARTIFACT_METADATA`] or
//! [`ARTIFACT_TARGET`], the empty config, and one layer: the file's bytes, titled with its name.
//! The registry is not trusted: what it serves is checked by the TUF client exactly as files
//! are (a registry that swaps a file, replays an old timestamp or serves expired metadata is
//! refused); the manifest and blob digests are only checked on the way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::ops::OpsError;
use oci::distribution::{Client, RegistryTarget};
use schema::model::{Channel, Digest};

/// The repository, under the release's namespace, holding the trust repository.
pub use schema::model::TRUST_REPOSITORY;
/// `artifactType` of a TUF metadata file.
pub const ARTIFACT_METADATA: &str = "application/vnd.stellaops.tuf.metadata.v1+json";
/// `artifactType` of a TUF target (a channel pointer, a release.yaml).
pub const ARTIFACT_TARGET: &str = "application/vnd.stellaops.tuf.target.v1";
/// The layer's media type: the file as is.
pub const LAYER_METADATA: &str = "application/json";
pub const LAYER_TARGET: &str = "application/octet-stream";
/// The largest file read back (a release.yaml is a few kB; metadata grows with the targets).
pub const FILE_LIMIT: u64 = 32 << 20;

/// The tag of a metadata file (`3.snapshot.json` -> `3.snapshot`, `timestamp.json` ->
/// `timestamp`), `None` for a name that is not one.
pub fn metadata_tag(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".json")?;
    let ok = !stem.is_empty() && stem.len() <= 128 && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then(|| stem.to_owned())
}

/// The tag of a target file stored under its hash (`<hex>.<name>` -> `target.<hex>`).
pub fn target_tag(file: &str) -> Option<String> {
    let (hex, _) = file.split_once('.')?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("target.{}", hex.to_ascii_lowercase()))
}

/// A channel as a TUF client sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTarget {
    pub channel: Channel,
    /// The target's custom metadata (version, sequence, releaseYaml, rollback, supportEnds...).
    pub custom: BTreeMap<String, Value>,
    /// sha256 of the pointer document.
    pub pointer: Digest,
}

/// Loads the repository whose metadata and targets are in `metadata` and `targets`, trusting
/// `trusted_root` (a client's copy of a root it trusts); returns each channel's target.
pub fn check(metadata: &Path, targets: &Path, trusted_root: &Path) -> Result<Vec<ChannelTarget>, OpsError> {
    let (meta, targets_url) = (dir_url(metadata)?, dir_url(targets)?);
    load(trusted_root, meta, targets_url, None, &format!("`{}`", metadata.display()), Expiry::Now)
}

/// A directory as the `file:` URL tough reads it from.
fn dir_url(p: &Path) -> Result<url::Url, OpsError> {
    let p: PathBuf =
        if p.is_absolute() { p.to_owned() } else { std::env::current_dir().map(|c| c.join(p)).unwrap_or_else(|_| p.to_owned()) };
    url::Url::from_directory_path(&p).map_err(|_| OpsError::Invalid(format!("`{}`: not an absolute directory", p.display())))
}

/// Whether a load checks that the metadata has not expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Now: a client reading the live repository (a stale timestamp may be a freeze attack).
    Now,
    /// Not at all: the copy a release or kit carries (`trust/`) is an archive of the metadata
    /// as it was when the release was cut, and is read days or months later on an air-gapped
    /// host. Its root chain, signatures, thresholds, versions and hashes are still checked;
    /// its freshness is a question only the live repository answers (`channel check`).
    Archived,
}

/// [`check`] of the archived copy a release or kit carries (`trust/`): everything but expiry
/// (see [`Expiry::Archived`]).
pub fn check_archived(metadata: &Path, targets: &Path, trusted_root: &Path) -> Result<Vec<ChannelTarget>, OpsError> {
    let (meta, targets_url) = (dir_url(metadata)?, dir_url(targets)?);
    load(trusted_root, meta, targets_url, None, &format!("`{}`", metadata.display()), Expiry::Archived)
}

/// The same check, reading the repository from `<target>/trust` on a registry (see the module
/// documentation for the layout); `client` speaks to `target`'s host.
pub fn check_registry(client: Client, target: &RegistryTarget, trusted_root: &Path) -> Result<Vec<ChannelTarget>, OpsError> {
    let transport = RegistryTransport { client: Arc::new(client), repo: target.repository(TRUST_REPOSITORY) };
    let base = |dir: &str| url::Url::parse(&format!("oci://trust/{dir}/")).expect("a constant URL");
    load(
        trusted_root,
        base("metadata"),
        base("targets"),
        Some(transport),
        &format!("`{}/{}`", target.host, target.repository(TRUST_REPOSITORY)),
        Expiry::Now,
    )
}

fn load(
    trusted_root: &Path,
    meta: url::Url,
    targets_url: url::Url,
    transport: Option<RegistryTransport>,
    what: &str,
    expiry: Expiry,
) -> Result<Vec<ChannelTarget>, OpsError> {
    let root_bytes = std::fs::read(trusted_root).map_err(crate::ops::io(trusted_root))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| OpsError::Environment(e.to_string()))?;
    rt.block_on(async {
        let mut loader = tough::RepositoryLoader::new(&root_bytes, meta, targets_url);
        if let Some(t) = transport {
            loader = loader.transport(t);
        }
        if expiry == Expiry::Archived {
            loader = loader.expiration_enforcement(tough::ExpirationEnforcement::Unsafe);
        }
        let loaded = loader.load().await.map_err(|e| refusal(what, &e))?;
        let mut out = Vec::new();
        for (name, target) in loaded.targets().signed.targets_iter() {
            let Some(channel) = name.raw().strip_prefix("channel-").and_then(|n| n.strip_suffix(".json")) else { continue };
            let channel: Channel = channel.parse().map_err(|e| OpsError::Invalid(format!("target `{}`: {e}", name.raw())))?;
            let mut stream = loaded
                .read_target(name)
                .await
                .map_err(|e| OpsError::Refused(format!("target `{}`: {e}", name.raw())))?
                .ok_or_else(|| OpsError::Refused(format!("target `{}` is listed but absent", name.raw())))?;
            let mut bytes = Vec::new();
            use futures_util::StreamExt as _;
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk.map_err(|e| OpsError::Refused(format!("target `{}`: {e}", name.raw())))?);
            }
            let custom = target.custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            out.push(ChannelTarget { channel, custom, pointer: Digest::of(&bytes) });
        }
        out.sort_by_key(|t| t.channel);
        Ok(out)
    })
}

/// A failed load: a registry that could not be reached is the environment's failure (exit 3);
/// anything else (signatures, versions, expiry, hashes) a refusal.
fn refusal(what: &str, e: &tough::error::Error) -> OpsError {
    // tough's messages often repeat their source's: each cause once.
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut unreachable = None;
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.contains(&text) {
            chain += &format!(": {text}");
        }
        if let Some(u) = s.downcast_ref::<RegistryUnreachable>() {
            unreachable = Some(u.0.clone());
        }
        source = s.source();
    }
    match unreachable {
        Some(why) => OpsError::Environment(format!(
            "the trust repository {what} could not be read: {why}\n  hint: check that the registry is up and reachable, and its credentials (`--docker-config`)"
        )),
        None => OpsError::Refused(format!(
            "the trust repository {what} does not verify: {chain}\n  hint: `--root` must be a root you trust (a copy of `1.root.json` obtained out of band); an expired timestamp is re-signed by `trust refresh`, then `trust publish`"
        )),
    }
}

/// A registry error that is not a verdict on the repository (network, registry down, auth).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RegistryUnreachable(String);

/// `tough`'s transport over a registry: a file name to its tag, the tag's manifest, its one layer.
#[derive(Clone)]
struct RegistryTransport {
    client: Arc<Client>,
    repo: String,
}

impl std::fmt::Debug for RegistryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryTransport").field("repo", &self.repo).finish_non_exhaustive()
    }
}

/// Reads the file an artifact of `repo` tagged `tag` holds: `None` when the tag is absent.
pub fn read_artifact(client: &Client, repo: &str, tag: &str) -> Result<Option<Vec<u8>>, String> {
    let Some(got) = client.get_manifest(repo, tag).map_err(|e| e.to_string())? else { return Ok(None) };
    let m: Value = serde_json::from_slice(&got.bytes).map_err(|e| format!("`{repo}:{tag}`: not a manifest: {e}"))?;
    let kind = m["artifactType"].as_str().unwrap_or_default();
    if kind != ARTIFACT_METADATA && kind != ARTIFACT_TARGET {
        return Err(format!("`{repo}:{tag}`: artifactType `{kind}`, not a file of the trust repository"));
    }
    let layers = m["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let [layer] = layers else { return Err(format!("`{repo}:{tag}`: {} layers, not one", layers.len())) };
    let digest: Digest =
        layer["digest"].as_str().unwrap_or_default().parse().map_err(|e| format!("`{repo}:{tag}`: the layer's digest: {e}"))?;
    client.get_blob(repo, &digest, FILE_LIMIT).map(Some).map_err(|e| e.to_string())
}

#[tough::async_trait]
impl tough::Transport for RegistryTransport {
    async fn fetch(&self, url: url::Url) -> Result<tough::TransportStream, tough::TransportError> {
        use tough::{TransportError, TransportErrorKind};
        let file = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default().to_owned();
        let tag = if url.path().starts_with("/targets/") { target_tag(&file) } else { metadata_tag(&file) };
        let Some(tag) = tag else { return Err(TransportError::new(TransportErrorKind::FileNotFound, url)) };
        // The client is blocking; this runtime has one thread and nothing else to run meanwhile.
        match read_artifact(&self.client, &self.repo, &tag) {
            Ok(Some(bytes)) => {
                let chunk: Result<tough::Bytes, TransportError> = Ok(tough::Bytes::from(bytes));
                Ok(Box::pin(futures_util::stream::iter([chunk])))
            }
            Ok(None) => Err(TransportError::new(TransportErrorKind::FileNotFound, url)),
            Err(e) => Err(TransportError::new_with_cause(TransportErrorKind::Other, url, RegistryUnreachable(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_to_tags() {
        assert_eq!(metadata_tag("3.snapshot.json").as_deref(), Some("3.snapshot"));
        assert_eq!(metadata_tag("timestamp.json").as_deref(), Some("timestamp"));
        assert_eq!(metadata_tag("1.stable-gate.json").as_deref(), Some("1.stable-gate"));
        assert_eq!(metadata_tag("a/b.json"), None);
        assert_eq!(metadata_tag("x.yaml"), None);
        let hex = "ab".repeat(32);
        assert_eq!(target_tag(&format!("{hex}.release-edge-2.4.1+b-0123456789ab.yaml")), Some(format!("target.{hex}")));
        assert_eq!(target_tag("channel-edge.json"), None);
    }
}
