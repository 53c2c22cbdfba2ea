//! What customers and operators run without the build side: check a release directory
//! ([`release`]), a published release in a registry ([`published`]) or an offline kit, and
//! import a kit fail-closed ([`kit`]); check a channel pointer as a client ([`pointer`](mod@pointer)); the
//! upgrade preflight of appendix B ([`preflight`]). With them, the trust primitives the
//! engine signs with: keys ([`keys`]), keyless certificates and identity policies ([`keyless`]), DSSE envelopes and cosign image signatures ([`sign`]),
//! release.yaml's rendering, checksum and signatures ([`manifest`]).
//!
//! This crate must not depend on bollard, git2, the BuildKit code or the builders
//! (`tests/run.sh` checks `cargo tree -p verifier`): it is what ships to air-gapped sites.

pub mod cosign_key;
pub mod keyless;
pub mod keys;
pub mod kit;
pub mod manifest;
pub mod ops;
pub mod pointer;
pub mod preflight;
pub mod published;
pub mod release;
pub mod sign;
pub mod tlog;
pub mod tuf_client;
pub mod vsa;
