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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(path: &str, content: &[u8]) -> Entry {
        Entry { path: path.to_owned(), digest: Digest::of(content), size: content.len() as u64 }
    }

    /// A fixed delta inventory, built as the kit writer builds it (entries sorted by path,
    /// `total_size` their sum).
    fn fixed() -> Inventory {
        let entries = vec![
            entry("attest/authority/provenance.intoto.jsonl", b"provenance"),
            entry("images/blobs/sha256/aa", b"layer bytes"),
            entry("images/index.json", b"{}"),
            entry("sboms/authority/linux-amd64.cdx.json", b"sbom"),
        ];
        Inventory {
            version: "2.4.1".to_owned(),
            channel: "stable".to_owned(),
            kind: KitKind::Delta,
            components: vec!["authority".to_owned(), "scanner".to_owned()],
            delta_from: Some(Digest::of(b"previous release.yaml").to_string()),
            total_size: entries.iter().map(|e| e.size).sum(),
            entries,
            requires: vec![entry("images/blobs/sha256/bb", b"base layer")],
        }
    }

    /// The predicate exactly as the kit writer puts it in the statement
    /// (`serde_json::to_value`, then compact JSON).
    fn predicate(inv: &Inventory) -> String {
        serde_json::to_string(&serde_json::to_value(inv).unwrap()).unwrap()
    }

    #[test]
    fn inventory_predicate_json() {
        insta::assert_snapshot!("kit_inventory_predicate", predicate(&fixed()));
    }

    #[test]
    fn inventory_round_trips_and_keeps_its_invariants() {
        let inv = fixed();
        let back: Inventory = serde_json::from_str(&predicate(&inv)).unwrap();
        assert_eq!(back, inv);
        assert_eq!(back.total_size, 10 + 11 + 2 + 4);
        let mut paths: Vec<&str> = back.entries.iter().map(|e| e.path.as_str()).collect();
        let in_order = paths.clone();
        paths.sort_unstable();
        assert_eq!(paths, in_order, "entries are sorted by path");
        assert!(back.entries.iter().all(|e| !e.path.starts_with("manifest/")));
        assert!(back.requires.iter().all(|r| !back.entries.iter().any(|e| e.path == r.path)), "a required blob is not carried");
    }

    #[test]
    fn full_kit_leaves_out_delta_fields_and_unknown_fields_are_refused() {
        let mut inv = fixed();
        inv.kind = KitKind::Full;
        inv.delta_from = None;
        inv.requires.clear();
        let json = predicate(&inv);
        assert!(json.contains("\"kind\":\"full\""), "{json}");
        assert!(!json.contains("deltaFrom") && !json.contains("requires"), "{json}");
        assert!(json.contains("\"totalSize\":27"), "{json}");
        let extra = json.replacen('{', "{\"extra\":1,", 1);
        assert!(serde_json::from_str::<Inventory>(&extra).unwrap_err().to_string().contains("unknown field `extra`"));
        assert!(serde_json::from_str::<KitKind>("\"partial\"").is_err());
    }

    #[test]
    fn kit_name_and_manifest_entries() {
        assert_eq!(kit_name("2.4.1", "stable"), "stellaops-kit-2.4.1-stable.tar.zst");
        assert_eq!(MANIFEST_ENTRIES[0], "manifest/release.yaml");
        assert_eq!(MANIFEST_ENTRIES[3], "manifest/kit.dsse.json");
        assert!(MANIFEST_ENTRIES.iter().all(|e| e.starts_with("manifest/")));
        assert_eq!(ZSTD_LEVEL, 3);
    }
}
