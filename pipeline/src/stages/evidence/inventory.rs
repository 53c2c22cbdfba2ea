//! The base inventory: what a pinned base image holds on its own (its packages, the regular
//! files no package owns, and every regular file with its sha256), made by the post-build
//! scanner ([`scan::scan`]) from the base's layers alone, once per base digest.
//!
//! ```text
//! base (pinned, in the layout) ─► scan of its layers ─► BaseInventory ─► <cache>/base-inventory/v1-<hex>.json
//!                                                            │
//!                  build-time SBOM (base components) ◄───────┤
//!                  drift gate (image scan minus the base) ◄──┘
//! ```
//!
//! The build stage makes it when the base is ready and every image on that base carries it
//! ([`crate::stages::build::Known::base_inventory`]). The cache is keyed by the base's manifest
//! digest and the inventory format ([`FORMAT`]): a base's content is fixed by its digest, so an
//! entry never goes stale; it is written to a temporary file and renamed. An entry that cannot
//! be read, or that describes other layers than the base's, is refused naming the file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scan::{self, Found, ScanError};
use oci::{Layout, Manifest};
use schema::model::Digest;

/// The inventory format; part of the cache key, so a scanner that finds more (or another
/// format) never reads an older entry.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("scan of the base's layers: {0}")]
    Scan(#[from] ScanError),
    #[error("base inventory cache `{path}`: {message}\n  hint: the entry is made again when it is removed: `rm {path}`")]
    Cache { path: PathBuf, message: String },
}

/// A base's own content, as the scanner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseInventory {
    pub format: u32,
    /// The base's pin: the digest of its manifest.
    pub base: Digest,
    /// Its layers, as the release's images carry them (the first layers of every image on it).
    pub layers: Vec<Digest>,
    pub os: Option<String>,
    pub packages: BTreeSet<Found>,
    /// Regular files no package owns (outside the package databases): path -> sha256.
    pub files: BTreeMap<String, String>,
    /// Every regular file: path -> sha256 (what the image's own layers are compared against).
    pub tree: BTreeMap<String, String>,
}

/// Where the inventory of `base` is cached under `cache`.
pub fn cache_path(cache: &Path, base: &Digest) -> PathBuf {
    cache.join("base-inventory").join(format!("v{FORMAT}-{}.json", base.hex()))
}

/// The inventory of the base whose pin is `base` and whose manifest, as the release's images
/// carry it, is `manifest` (its blobs in `layout`): read from `cache` when made before,
/// otherwise scanned and cached.
pub fn of_base(layout: &Layout, base: &Digest, manifest: &Manifest, cache: &Path) -> Result<BaseInventory, InventoryError> {
    let path = cache_path(cache, base);
    let layers: Vec<Digest> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
    let cache_err = |message: String| InventoryError::Cache { path: path.clone(), message };
    match fs::read(&path) {
        Ok(bytes) => {
            let inv: BaseInventory = serde_json::from_slice(&bytes).map_err(|e| cache_err(format!("not a base inventory: {e}")))?;
            if inv.format != FORMAT || &inv.base != base || inv.layers != layers {
                return Err(cache_err(format!(
                    "describes base `{}` (format {}, {} layers), not `{base}` (format {FORMAT}, {} layers)",
                    inv.base,
                    inv.format,
                    inv.layers.len(),
                    layers.len()
                )));
            }
            return Ok(inv);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(cache_err(e.to_string())),
    }
    let scanned = scan::scan(layout, manifest)?;
    let inv = BaseInventory {
        format: FORMAT,
        base: base.clone(),
        layers,
        os: scanned.os,
        packages: scanned.packages,
        files: scanned.files,
        tree: scanned.tree.into_iter().map(|(p, w)| (p, w.sha256)).collect(),
    };
    // Plain data with string keys: it always serializes.
    #[allow(clippy::expect_used)]
    let bytes = serde_json::to_vec(&inv).expect("a base inventory serializes");
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| cache_err(e.to_string()))?;
    oci::write_atomic(&path, &bytes).map_err(|e| cache_err(e.to_string()))?;
    Ok(inv)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use oci::layer::{EntryData, LayerWriter};

    /// A layout holding one image of one layer with `files` (path, content).
    fn image(dir: &Path, files: &[(&str, &str)]) -> (Layout, Manifest) {
        let layout = Layout::create(dir).unwrap();
        let (digest, size, _) = layout
            .put_blob_with(|w| {
                let mut lw = LayerWriter::new(w, 0);
                for (p, c) in files {
                    lw.add_entry(p, 0o644, (0, 0), EntryData::File { size: c.len() as u64, data: &mut c.as_bytes() })?;
                }
                lw.finish().map(|_| ())
            })
            .unwrap();
        let config = layout.put_json(oci::MEDIA_CONFIG, &serde_json::json!({})).unwrap();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
            config,
            layers: vec![oci::Descriptor::new(oci::MEDIA_LAYER_GZIP, digest, size)],
            subject: None,
            annotations: Default::default(),
        };
        (layout, manifest)
    }

    #[test]
    fn an_inventory_is_scanned_once_then_read_from_the_cache_and_a_wrong_entry_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let status = "Package: a\nVersion: 1\nStatus: install ok installed\n\n";
        let (layout, manifest) = image(
            &tmp.path().join("layout"),
            &[
                ("etc/group", "root:x:0:\n"),
                ("var/lib/dpkg/status", status),
                ("var/lib/dpkg/info/a.list", "/usr/bin/a\n"),
                ("usr/bin/a", "a"),
            ],
        );
        let base = Digest::of(b"the base");
        let cache = tmp.path().join("cache");
        let inv = of_base(&layout, &base, &manifest, &cache).unwrap();
        assert_eq!(inv.files.keys().collect::<Vec<_>>(), ["/etc/group"]);
        assert_eq!(inv.tree.len(), 4);
        assert_eq!(inv.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a"]);
        let path = cache_path(&cache, &base);
        assert!(path.is_file());
        // Read back from the cache: the layout's blobs are not needed any more.
        fs::remove_dir_all(tmp.path().join("layout/blobs")).unwrap();
        assert_eq!(of_base(&layout, &base, &manifest, &cache).unwrap(), inv);
        // An entry of other layers (or unreadable) is refused, naming the file.
        let mut other = manifest.clone();
        other.layers[0].digest = Digest::of(b"other layer");
        let err = of_base(&layout, &base, &other, &cache).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("hint: "), "{err}");
        fs::write(&path, b"{").unwrap();
        let err = of_base(&layout, &base, &manifest, &cache).unwrap_err().to_string();
        assert!(err.contains("not a base inventory"), "{err}");
    }
}
