//! The drift report (`drift.json` in a release, signed as `attest/drift.dsse.json`), typed:
//! per image, the differences between the build-time SBOM and the post-build scan, each with
//! the policy's reason when the channel accepts it and the layer it comes from; and the two
//! contributions to the image, counted apart: the base's (its inventory) and the component's
//! own layers' (declared by the build, found by the scan minus the base inventory).
//!
//! The comparison and the table are the engine's (`pipeline::stages::evidence::drift`).

use serde::{Deserialize, Serialize};

use crate::files::DriftChange;
use crate::model::{Channel, Platform, ReleaseVersion};

/// `drift.json`: every image's report. Written with [`DriftFile::to_json`]: every object's
/// keys in alphabetical order (the file has always been written through a
/// `serde_json::Value`), not in the order of the fields below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftFile {
    pub channel: Channel,
    pub images: Vec<DriftReport>,
    pub version: ReleaseVersion,
}

impl DriftFile {
    /// The bytes of `drift.json`: pretty JSON, keys sorted, a final newline.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut doc = serde_json::to_vec_pretty(&serde_json::to_value(self)?)?;
        doc.push(b'\n');
        Ok(doc)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    pub change: DriftChange,
    /// `file`, or a package type (deb, rust-crate, npm, python, go-module, dotnet, java-archive).
    #[serde(rename = "type")]
    pub kind: String,
    /// Package name, or absolute file path.
    pub name: String,
    /// Version or sha256 in the build-time SBOM.
    pub declared: Option<String>,
    /// Version or sha256 found by the scan.
    pub found: Option<String>,
    /// The policy's reason, when it accepts this difference.
    pub accepted: Option<String>,
    /// The layer that added, changed or removed it (none for something declared that no
    /// layer put in the image).
    pub layer: Option<LayerRef>,
}

/// A layer of an image: its index in the manifest (0 is the base's first) and its digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRef {
    pub index: usize,
    pub digest: String,
}

/// What the base brings to an image, from its inventory (a scan of the base's own layers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseContribution {
    /// The base's pin (its manifest digest).
    pub digest: String,
    /// How many of the image's first layers are the base's.
    pub layers: usize,
    pub packages: usize,
    /// Regular files no package owns.
    pub files: usize,
}

/// What the component's own layers bring: as the build declared it and as the scan found it
/// (the image minus the base inventory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentContribution {
    /// The component's layers (after the base's).
    pub layers: Vec<LayerRef>,
    /// Packages the build declared (lock files whose packages a layer carries).
    pub declared_packages: usize,
    /// Packages in the image that the base does not hold.
    pub found_packages: usize,
    /// Regular files the build declared its layers write.
    pub declared_files: usize,
    /// Regular files the component's layers write.
    pub found_files: usize,
    /// Paths of the base the build declared its layers remove (whiteouts).
    pub declared_removed: usize,
    /// Regular files of the base that are not in the image.
    pub found_removed: usize,
}

/// The drift report of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftReport {
    pub component: String,
    /// Written `linux/amd64`.
    pub platform: Platform,
    /// The image's purl.
    pub image: String,
    /// Packages the build-time SBOM declares in the image (the base's and the component's).
    pub declared_packages: usize,
    /// Packages the scan found in the image.
    pub found_packages: usize,
    /// Files the build-time SBOM lists in the image (the base's no package owns, and those
    /// of the component's layers).
    pub declared_files: usize,
    /// Files in the image no package owns, as the scan found them.
    pub found_files: usize,
    /// What the base brings (not compared: the base inventory is the scan of the pinned base).
    pub from_base: BaseContribution,
    /// What the component's own layers bring, declared and found.
    pub from_component: ComponentContribution,
    /// The component's differences (a pristine base adds none).
    pub differences: Vec<Difference>,
}

impl DriftReport {
    /// Differences the policy does not accept.
    pub fn rejected(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| d.accepted.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_file_json_is_the_untyped_document_it_replaced() {
        let d = |change, accepted: Option<&str>| Difference {
            change,
            kind: "npm".into(),
            name: "left-pad".into(),
            declared: None,
            found: Some("1.3.0".into()),
            accepted: accepted.map(str::to_owned),
            layer: Some(LayerRef { index: 1, digest: "sha256:0abc".into() }),
        };
        let report = DriftReport {
            component: "api".into(),
            platform: Platform::LinuxArm64,
            image: "pkg:oci/api@sha256%3A0123?arch=arm64".into(),
            declared_packages: 3,
            found_packages: 4,
            declared_files: 1,
            found_files: 1,
            from_base: BaseContribution { digest: "sha256:0base".into(), layers: 1, packages: 2, files: 1 },
            from_component: ComponentContribution {
                layers: vec![LayerRef { index: 1, digest: "sha256:0abc".into() }],
                declared_packages: 1,
                found_packages: 2,
                declared_files: 1,
                found_files: 1,
                declared_removed: 0,
                found_removed: 0,
            },
            differences: vec![d(DriftChange::Added, None), d(DriftChange::Changed, Some("tracked in STELLA-123"))],
        };
        assert_eq!(report.rejected().count(), 1);
        let file = DriftFile { channel: Channel::Edge, images: vec![report.clone()], version: "2.4.1 (2027.06)".parse().unwrap() };
        // What the evidence stage wrote before the type existed, with what was added since
        // (`from_base`, `from_component`, each difference's `layer`).
        let untyped = serde_json::json!({ "channel": "edge", "version": "2.4.1 (2027.06)", "images": [{
            "component": "api",
            "platform": "linux/arm64",
            "image": "pkg:oci/api@sha256%3A0123?arch=arm64",
            "declared_packages": 3,
            "found_packages": 4,
            "declared_files": 1,
            "found_files": 1,
            "from_base": { "digest": "sha256:0base", "layers": 1, "packages": 2, "files": 1 },
            "from_component": {
                "layers": [{ "index": 1, "digest": "sha256:0abc" }],
                "declared_packages": 1, "found_packages": 2, "declared_files": 1, "found_files": 1,
                "declared_removed": 0, "found_removed": 0,
            },
            "differences": [
                { "change": "added", "type": "npm", "name": "left-pad", "declared": null, "found": "1.3.0", "accepted": null,
                  "layer": { "index": 1, "digest": "sha256:0abc" } },
                { "change": "changed", "type": "npm", "name": "left-pad", "declared": null, "found": "1.3.0", "accepted": "tracked in STELLA-123",
                  "layer": { "index": 1, "digest": "sha256:0abc" } },
            ],
        }]});
        let mut bytes = serde_json::to_vec_pretty(&untyped).unwrap();
        bytes.push(b'\n');
        assert_eq!(String::from_utf8(file.to_json().unwrap()).unwrap(), String::from_utf8(bytes).unwrap());
        // Keys sorted at every level, not in the order of the fields.
        let text = String::from_utf8(file.to_json().unwrap()).unwrap();
        assert!(text.find("\"accepted\"").unwrap() < text.find("\"change\"").unwrap(), "{text}");
        assert!(text.find("\"declared_files\"").unwrap() < text.find("\"platform\"").unwrap(), "{text}");
        assert_eq!(serde_json::from_value::<DriftFile>(untyped).unwrap(), file);
    }
}
