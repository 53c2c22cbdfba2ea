//! The documents of the Stella Ops release pipeline, typed: what people write (the
//! configuration files of `release-trains/` and `base-images.lock`, [`files`], loaded and
//! validated by [`config`], with the skew rules of spec §1.3 in [`skew`]) and what the
//! pipeline writes and reads back (`release.yaml` in [`release`], the kit inventory in
//! [`kit`], the signed channel pointer and the client's state file in
//! [`pointer`](mod@pointer), the drift report in [`drift`], the release gates' record in
//! [`gates`], image labels in [`labels`], in-toto types in [`intoto`], progress events in
//! [`report`]), with the newtypes that keep them apart ([`model`]: `Digest`, `PinnedRef`,
//! `Platform`, `Channel`, `Version`...), and the exit codes every command shares ([`exit`]).
//!
//! This crate is the bottom of the workspace: it depends on serde and small parsing crates,
//! never on the engine (`pipeline`), the registry mechanisms (`oci`) or the checks
//! (`verifier`).

pub mod config;
pub mod drift;
pub mod exit;
pub mod files;
pub mod gates;
pub mod intoto;
pub mod kit;
pub mod labels;
pub mod model;
pub mod pointer;
pub mod release;
pub mod report;
pub mod skew;
