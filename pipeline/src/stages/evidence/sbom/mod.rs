//! CycloneDX 1.6 SBOMs: the model, its JSON form and its protobuf form ([`proto`]).
//!
//! Own serde types rather than a crate: cyclonedx-bom writes 1.3–1.5 only and no protobuf,
//! serde-cyclonedx has no protobuf either (shared/CRATES.md). The model holds the subset this
//! pipeline emits, so that JSON → model → protobuf → model → JSON is exact.
//!
//! Byte stability: components are sorted by (type, name, version, purl, bom-ref), hashes by
//! algorithm, dependencies by ref with sorted `dependsOn`; `metadata.timestamp` is
//! SOURCE_DATE_EPOCH; `serialNumber` is a UUID v5 of the document's canonical content without
//! the serial number ([`Bom::seal`]).

pub mod generate;
pub mod locks;
pub mod proto;

use serde::{Deserialize, Serialize};

pub const SPEC_VERSION: &str = "1.6";
pub const SCHEMA: &str = "http://cyclonedx.org/schema/bom-1.6.schema.json";
/// Namespace of the UUID v5 serial numbers (a fixed, random UUID of this project).
const SERIAL_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f1c_2a7e_5d3b_4c8e_9a41_0b7d_e2f3_c9a5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bom {
    #[serde(rename = "$schema")]
    pub schema: String,
    pub bom_format: String,
    pub spec_version: String,
    pub serial_number: String,
    pub version: i32,
    pub metadata: Metadata,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub timestamp: String,
    pub tools: Tools,
    pub component: Component,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tools {
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentType {
    Application,
    Framework,
    Library,
    Container,
    OperatingSystem,
    File,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    #[serde(rename = "type")]
    pub kind: ComponentType,
    #[serde(rename = "bom-ref")]
    pub bom_ref: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<Hash>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<License>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hash {
    pub alg: String,
    pub content: String,
}

impl Hash {
    pub fn sha256(hex: &str) -> Hash {
        Hash { alg: "SHA-256".into(), content: hex.to_owned() }
    }
}

/// A licence: an SPDX id, a name, or an SPDX expression.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum License {
    License { license: LicenseId },
    Expression { expression: String },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl License {
    /// From what a package states: a single SPDX-looking id becomes `id`, an expression with
    /// operators `expression`, anything else `name`.
    pub fn from_stated(text: &str) -> License {
        let t = text.trim();
        if t.contains(" OR ") || t.contains(" AND ") || t.contains(" WITH ") || t.starts_with('(') {
            License::Expression { expression: t.to_owned() }
        } else if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b)) {
            License::License { license: LicenseId { id: Some(t.to_owned()), name: None } }
        } else {
            License::License { license: LicenseId { id: None, name: Some(t.to_owned()) } }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Property {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dependency {
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
}

impl Bom {
    /// A CycloneDX 1.6 document of these parts, in canonical order, with its serial number.
    pub fn sealed(metadata: Metadata, components: Vec<Component>, dependencies: Vec<Dependency>) -> Bom {
        let mut bom = Bom {
            schema: SCHEMA.to_owned(),
            bom_format: "CycloneDX".to_owned(),
            spec_version: SPEC_VERSION.to_owned(),
            serial_number: String::new(),
            version: 1,
            metadata,
            components,
            dependencies,
        };
        bom.seal();
        bom
    }

    /// Sorts everything into the canonical order.
    pub fn canonicalize(&mut self) {
        fn sort_component(c: &mut Component) {
            c.hashes.sort();
            c.hashes.dedup();
            c.licenses.sort();
            c.licenses.dedup();
            c.properties.sort();
        }
        for c in &mut self.components {
            sort_component(c);
        }
        sort_component(&mut self.metadata.component);
        self.metadata.properties.sort();
        self.components
            .sort_by(|a, b| (a.kind, &a.name, &a.version, &a.purl, &a.bom_ref).cmp(&(b.kind, &b.name, &b.version, &b.purl, &b.bom_ref)));
        self.components.dedup_by(|a, b| a.bom_ref == b.bom_ref);
        for d in &mut self.dependencies {
            d.depends_on.sort();
            d.depends_on.dedup();
        }
        self.dependencies.sort();
        self.dependencies.dedup_by(|a, b| a.reference == b.reference);
    }

    /// Canonical order, then the serial number derived from the content.
    pub fn seal(&mut self) {
        self.canonicalize();
        self.serial_number = String::new();
        let content = self.to_json();
        self.serial_number = format!("urn:uuid:{}", uuid::Uuid::new_v5(&SERIAL_NAMESPACE, &content));
    }

    /// Pretty JSON with a final newline; the bytes are a function of the model.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a BOM always serializes");
        v.push(b'\n');
        v
    }

    pub fn from_json(bytes: &[u8]) -> Result<Bom, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Every `dependsOn` (and `ref`) that names no `bom-ref` of the document.
    pub fn dangling_refs(&self) -> Vec<String> {
        let known: std::collections::BTreeSet<&str> =
            std::iter::once(self.metadata.component.bom_ref.as_str()).chain(self.components.iter().map(|c| c.bom_ref.as_str())).collect();
        self.dependencies
            .iter()
            .flat_map(|d| std::iter::once(&d.reference).chain(&d.depends_on))
            .filter(|r| !known.contains(r.as_str()))
            .cloned()
            .collect()
    }
}

/// Percent-encodes a purl segment (name, version, qualifier value) per the purl spec.
pub fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b".-_~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
