//! The stages of a release, in the order [`crate::release::release`] runs them. Each takes
//! typed inputs and returns typed outputs; none reads back a file an earlier stage wrote to
//! learn what it could have been handed.
//!
//! ```text
//!  plan ──► build ──► gates ──► evidence ──► sign ──► manifest ──► kit      publish
//!  (config,  (bases,   (audit,   (SBOM, scan, (images,  (release.yaml (offline (a finished
//!   git,      backends: tests,    drift,       DSSE,     and its       kit)     release to
//!   skew)     daemonless budgets) provenance)  tlog,     signatures)            registries)
//!             or BuildKit)                     referrers)
//! ```

pub mod build;
pub mod evidence;
pub mod gates;
pub mod kit;
pub mod manifest;
pub mod plan;
pub mod publish;
pub mod publish_trust;
pub mod sign;
pub mod tool;
