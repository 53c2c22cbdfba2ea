//! The drift report (`drift.json` in a release, signed as `attest/drift.dsse.json`), typed:
//! per image, the differences between the build-time SBOM and the post-build scan, each with
//! the policy's reason when the channel accepts it.
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
    pub declared_packages: usize,
    pub found_packages: usize,
    pub declared_files: usize,
    pub found_files: usize,
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
        };
        let report = DriftReport {
            component: "api".into(),
            platform: Platform::LinuxArm64,
            image: "pkg:oci/api@sha256%3A0123?arch=arm64".into(),
            declared_packages: 3,
            found_packages: 4,
            declared_files: 1,
            found_files: 1,
            differences: vec![d(DriftChange::Added, None), d(DriftChange::Changed, Some("tracked in STELLA-123"))],
        };
        assert_eq!(report.rejected().count(), 1);
        let file = DriftFile { channel: Channel::Edge, images: vec![report.clone()], version: "2.4.1 (2027.06)".parse().unwrap() };
        // What the evidence stage wrote before the type existed.
        let untyped = serde_json::json!({ "channel": "edge", "version": "2.4.1 (2027.06)", "images": [{
            "component": "api",
            "platform": "linux/arm64",
            "image": "pkg:oci/api@sha256%3A0123?arch=arm64",
            "declared_packages": 3,
            "found_packages": 4,
            "declared_files": 1,
            "found_files": 1,
            "differences": [
                { "change": "added", "type": "npm", "name": "left-pad", "declared": null, "found": "1.3.0", "accepted": null },
                { "change": "changed", "type": "npm", "name": "left-pad", "declared": null, "found": "1.3.0", "accepted": "tracked in STELLA-123" },
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
