//! The offline kit format (spec §3.3): its name, entry order, limits and signed inventory,
//! shared by the writer (the engine's kit stage) and the reader (`verifier::kit`).

use serde::{Deserialize, Serialize};

use crate::model::Digest;

/// Predicate type of the inventory statement.
pub const KIT_PREDICATE: &str = "https://stella-ops.org/offline-kit/v1";
/// zstd level of every kit (part of the format: another level gives other bytes).
pub const ZSTD_LEVEL: i32 = 3;
/// Largest `manifest/` entry read before anything is verified.
pub const MANIFEST_MAX: u64 = 16 << 20;
/// The entries that open every kit, in order.
pub const MANIFEST_ENTRIES: [&str; 4] =
    ["manifest/release.yaml", "manifest/release.yaml.sig", "manifest/release.yaml.sigstore.json", "manifest/kit.dsse.json"];
/// Tar overhead allowed per entry on top of its content: its header, a GNU long-name header
/// and its name, and the padding of the content to 512 bytes.
pub const ENTRY_OVERHEAD: u64 = 4 * 512;
/// The end-of-archive blocks and the padding to a 10 KiB record some tar writers add.
pub const ARCHIVE_TAIL: u64 = 20 * 512;

/// The file name of a kit.
pub fn kit_name(version: &str, channel: &str) -> String {
    format!("stellaops-kit-{version}-{channel}.tar.zst")
}

/// What a kit holds, signed: the predicate of `manifest/kit.dsse.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inventory {
    pub version: String,
    pub channel: String,
    /// `full`, or `delta` (needs [`Inventory::requires`] in the target).
    pub kind: KitKind,
    /// The components whose images, SBOMs and attestations the kit carries.
    pub components: Vec<String>,
    /// The release.yaml (sha256) of the release a delta kit applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_from: Option<String>,
    /// Every entry after `manifest/`, sorted by path.
    pub entries: Vec<Entry>,
    /// Blobs a delta kit does not carry and the target must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Entry>,
    /// Sum of the sizes of `entries`.
    pub total_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KitKind {
    Full,
    Delta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
}
