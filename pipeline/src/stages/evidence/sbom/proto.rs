//! The protobuf form of the SBOM, per CycloneDX's bom-1.6 protobuf specification
//! (`package cyclonedx.v1_6`). The messages are written here by hand with prost's derive, from
//! the specification's message names and field numbers, for the fields this pipeline uses;
//! no .proto file is vendored and no build script runs protoc.
//!
//! prost encodes fields in tag order and the schema has no maps, so the bytes are a function
//! of the model.

use prost::Message;

use super::{Bom, Component, ComponentType, Dependency, Hash, License, LicenseId, Metadata, Property, Tools};

#[derive(Clone, PartialEq, Message)]
pub struct PbBom {
    #[prost(string, tag = "1")]
    pub spec_version: String,
    #[prost(int32, optional, tag = "2")]
    pub version: Option<i32>,
    #[prost(string, optional, tag = "3")]
    pub serial_number: Option<String>,
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<PbMetadata>,
    #[prost(message, repeated, tag = "5")]
    pub components: Vec<PbComponent>,
    #[prost(message, repeated, tag = "8")]
    pub dependencies: Vec<PbDependency>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbTimestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbMetadata {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<PbTimestamp>,
    #[prost(message, optional, tag = "2")]
    pub tools: Option<PbTool>,
    #[prost(message, optional, tag = "4")]
    pub component: Option<PbComponent>,
    #[prost(message, repeated, tag = "8")]
    pub properties: Vec<PbProperty>,
}

/// `Tool` (1.5+ shape: the tools are components).
#[derive(Clone, PartialEq, Message)]
pub struct PbTool {
    #[prost(message, repeated, tag = "6")]
    pub components: Vec<PbComponent>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbComponent {
    /// `Classification`.
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(string, optional, tag = "3")]
    pub bom_ref: Option<String>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(string, tag = "9")]
    pub version: String,
    #[prost(string, optional, tag = "10")]
    pub description: Option<String>,
    #[prost(message, repeated, tag = "12")]
    pub hashes: Vec<PbHash>,
    #[prost(message, repeated, tag = "13")]
    pub licenses: Vec<PbLicenseChoice>,
    #[prost(string, optional, tag = "16")]
    pub purl: Option<String>,
    #[prost(message, repeated, tag = "22")]
    pub properties: Vec<PbProperty>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbHash {
    /// `HashAlg`.
    #[prost(int32, tag = "1")]
    pub alg: i32,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbLicenseChoice {
    #[prost(message, optional, tag = "1")]
    pub license: Option<PbLicense>,
    #[prost(string, optional, tag = "2")]
    pub expression: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbLicense {
    #[prost(string, optional, tag = "1")]
    pub id: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbProperty {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbDependency {
    #[prost(string, tag = "1")]
    pub reference: String,
    #[prost(message, repeated, tag = "2")]
    pub dependencies: Vec<PbDependency>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("not a CycloneDX protobuf document: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the protobuf document has {0}, which this pipeline never writes")]
    Unsupported(String),
    #[error("the SBOM cannot be written as CycloneDX protobuf: {0}")]
    Unencodable(String),
}

const CLASSIFICATIONS: [(ComponentType, i32); 6] = [
    (ComponentType::Application, 1),
    (ComponentType::Framework, 2),
    (ComponentType::Library, 3),
    (ComponentType::OperatingSystem, 4),
    (ComponentType::File, 6),
    (ComponentType::Container, 7),
];

const HASH_ALGS: [(&str, i32); 5] = [("MD5", 1), ("SHA-1", 2), ("SHA-256", 3), ("SHA-384", 4), ("SHA-512", 5)];

fn component_to(c: &Component) -> Result<PbComponent, ProtoError> {
    let kind =
        CLASSIFICATIONS.iter().find(|(k, _)| *k == c.kind).map(|(_, v)| *v).ok_or_else(|| {
            ProtoError::Unencodable(format!("component `{}`: classification {:?} has no protobuf value", c.bom_ref, c.kind))
        })?;
    let hashes = c
        .hashes
        .iter()
        .map(|h| match HASH_ALGS.iter().find(|(a, _)| *a == h.alg) {
            Some((_, alg)) => Ok(PbHash { alg: *alg, value: h.content.clone() }),
            None => Err(ProtoError::Unencodable(format!("component `{}`: hash algorithm `{}` has no protobuf value", c.bom_ref, h.alg))),
        })
        .collect::<Result<_, _>>()?;
    Ok(PbComponent {
        kind,
        bom_ref: Some(c.bom_ref.clone()),
        name: c.name.clone(),
        version: c.version.clone(),
        description: c.description.clone(),
        hashes,
        licenses: c
            .licenses
            .iter()
            .map(|l| match l {
                License::License { license } => {
                    PbLicenseChoice { license: Some(PbLicense { id: license.id.clone(), name: license.name.clone() }), expression: None }
                }
                License::Expression { expression } => PbLicenseChoice { license: None, expression: Some(expression.clone()) },
            })
            .collect(),
        purl: c.purl.clone(),
        properties: c.properties.iter().map(|p| PbProperty { name: p.name.clone(), value: Some(p.value.clone()) }).collect(),
    })
}

fn component_from(c: PbComponent) -> Result<Component, ProtoError> {
    let kind = CLASSIFICATIONS
        .iter()
        .find(|(_, v)| *v == c.kind)
        .map(|(k, _)| *k)
        .ok_or_else(|| ProtoError::Unsupported(format!("component classification {}", c.kind)))?;
    let hashes = c
        .hashes
        .into_iter()
        .map(|h| {
            let alg = HASH_ALGS
                .iter()
                .find(|(_, v)| *v == h.alg)
                .map(|(a, _)| *a)
                .ok_or_else(|| ProtoError::Unsupported(format!("hash algorithm {}", h.alg)))?;
            Ok(Hash { alg: alg.to_owned(), content: h.value })
        })
        .collect::<Result<_, ProtoError>>()?;
    let licenses = c
        .licenses
        .into_iter()
        .map(|l| match (l.license, l.expression) {
            (Some(x), None) => Ok(License::License { license: LicenseId { id: x.id, name: x.name } }),
            (None, Some(e)) => Ok(License::Expression { expression: e }),
            _ => Err(ProtoError::Unsupported("a licence choice with neither or both of licence and expression".into())),
        })
        .collect::<Result<_, ProtoError>>()?;
    Ok(Component {
        kind,
        bom_ref: c.bom_ref.unwrap_or_default(),
        name: c.name,
        version: c.version,
        description: c.description,
        hashes,
        licenses,
        purl: c.purl,
        properties: c.properties.into_iter().map(|p| Property { name: p.name, value: p.value.unwrap_or_default() }).collect(),
    })
}

/// Seconds of an RFC 3339 UTC timestamp with second precision (what [`Bom`] carries).
fn seconds_of(ts: &str) -> Result<i64, ProtoError> {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| ProtoError::Unencodable(format!("metadata.timestamp `{ts}` is not RFC 3339: {e}")))
}

/// Encodes the model as CycloneDX protobuf; panics on a model [`try_encode`] refuses (which
/// the stages never build). Release files are written with [`try_encode`].
pub fn encode(bom: &Bom) -> Vec<u8> {
    try_encode(bom).unwrap_or_else(|e| panic!("{e}"))
}

/// Encodes the model as CycloneDX protobuf; a value protobuf cannot carry (an unknown hash
/// algorithm, a timestamp that is not RFC 3339) is an error, never a silent default.
pub fn try_encode(bom: &Bom) -> Result<Vec<u8>, ProtoError> {
    let m = &bom.metadata;
    Ok(PbBom {
        spec_version: bom.spec_version.clone(),
        version: Some(bom.version),
        serial_number: Some(bom.serial_number.clone()),
        metadata: Some(PbMetadata {
            timestamp: Some(PbTimestamp { seconds: seconds_of(&m.timestamp)?, nanos: 0 }),
            tools: Some(PbTool { components: m.tools.components.iter().map(component_to).collect::<Result<_, _>>()? }),
            component: Some(component_to(&m.component)?),
            properties: m.properties.iter().map(|p| PbProperty { name: p.name.clone(), value: Some(p.value.clone()) }).collect(),
        }),
        components: bom.components.iter().map(component_to).collect::<Result<_, _>>()?,
        dependencies: bom
            .dependencies
            .iter()
            .map(|d| PbDependency {
                reference: d.reference.clone(),
                dependencies: d.depends_on.iter().map(|r| PbDependency { reference: r.clone(), dependencies: vec![] }).collect(),
            })
            .collect(),
    }
    .encode_to_vec())
}

/// Decodes CycloneDX protobuf into the model.
pub fn decode(bytes: &[u8]) -> Result<Bom, ProtoError> {
    let pb = PbBom::decode(bytes)?;
    let m = pb.metadata.ok_or_else(|| ProtoError::Unsupported("no metadata".into()))?;
    let component = m.component.ok_or_else(|| ProtoError::Unsupported("no metadata.component".into()))?;
    Ok(Bom {
        schema: super::SCHEMA.to_owned(),
        bom_format: "CycloneDX".to_owned(),
        spec_version: pb.spec_version,
        serial_number: pb.serial_number.unwrap_or_default(),
        version: pb.version.unwrap_or(1),
        metadata: Metadata {
            timestamp: schema::model::rfc3339(m.timestamp.map(|t| t.seconds).unwrap_or(0)),
            tools: Tools {
                components: m.tools.map(|t| t.components).unwrap_or_default().into_iter().map(component_from).collect::<Result<_, _>>()?,
            },
            component: component_from(component)?,
            properties: m.properties.into_iter().map(|p| Property { name: p.name, value: p.value.unwrap_or_default() }).collect(),
        },
        components: pb.components.into_iter().map(component_from).collect::<Result<_, _>>()?,
        dependencies: pb
            .dependencies
            .into_iter()
            .map(|d| Dependency { reference: d.reference, depends_on: d.dependencies.into_iter().map(|x| x.reference).collect() })
            .collect(),
    })
}
