//! OCI mechanisms shared by the engine and the verifier: the image layout on disk and its
//! types ([`layout`], re-exported here), the deterministic layer writer and streaming hashes
//! ([`layer`], [`pgzip`]), the registry client ([`distribution`], [`auth`], [`registry`] for
//! pulls by digest) and the push of a whole layout by digest with its referrers ([`push`],
//! [`referrers`]).
//!
//! It knows nothing of releases, stages or keys: it moves and checks content-addressed bytes.

pub mod auth;
pub mod cmd;
pub mod dirs;
pub mod distribution;
pub mod image;
pub mod layer;
pub mod layout;
pub mod pause;
pub mod pgzip;
pub mod pipe;
pub mod push;
pub mod referrers;
pub mod registry;
pub mod statelock;

pub use layout::*;
