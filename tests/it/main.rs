//! End-to-end tests of `cargo xtask`: one test binary (link time), topic modules.
//!
//! They run the real binary against a scratch git repository, real Debian packages (fetched
//! from the apt mirror once, then cached), and other people's tools (umoci, skopeo, Docker's
//! engine) started by `tests/run.sh`. A test whose tool is missing fails under `CI`.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod arm64;
mod bases;
mod builders;
mod buildkit;
mod cache;
mod compiled;
mod disk;
mod docker;
mod ecosystems;
mod evidence;
mod faults;
mod fuzz_corpus;
mod hostile;
mod hostile_engine;
mod hsm;
mod keyless;
mod kills;
mod kit;
mod lock_add;
mod locks;
mod multistage;
mod oci_tools;
mod ops;
mod publish;
mod rebuild;
mod refusals;
mod release;
mod support;
mod templates;
mod thirdparty;
mod tlog;
mod tool;
mod trust;
mod tuf;
mod tuf_registry;
