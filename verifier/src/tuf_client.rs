//! The channels' trust repository as a TUF client reads it (`tough`'s client, awslabs'
//! implementation; python-tuf's `ngclient` is the independent one in the tests): from a
//! trusted root, every role's signatures and thresholds (two release keys for `stable` and
//! `lts`), versions, hashes and expiry against the wall clock; then each channel's pointer
//! target with its custom metadata. Local directories only (an air-gapped copy of the
//! repository, or a kit's): no network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::ops::OpsError;
use schema::model::{Channel, Digest};

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
    let root_bytes = std::fs::read(trusted_root).map_err(crate::ops::io(trusted_root))?;
    let url = |p: &Path| {
        let p: PathBuf =
            if p.is_absolute() { p.to_owned() } else { std::env::current_dir().map(|c| c.join(p)).unwrap_or_else(|_| p.to_owned()) };
        url::Url::from_directory_path(&p).map_err(|_| OpsError::Invalid(format!("`{}`: not an absolute directory", p.display())))
    };
    let (meta, targets_url) = (url(metadata)?, url(targets)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| OpsError::Environment(e.to_string()))?;
    rt.block_on(async {
        let loaded = tough::RepositoryLoader::new(&root_bytes, meta, targets_url)
            .load()
            .await
            .map_err(|e| OpsError::Refused(format!("the trust repository `{}` does not verify: {e}", metadata.display())))?;
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
