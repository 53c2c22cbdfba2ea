//! The Stella Ops release pipeline engine: a tagged source tree in, a release anyone can
//! verify out.
//!
//! ```text
//!  config ──► plan ──► build ──► gates ──► evidence ──► templates ──► sign ──► manifest ──► kit ──► write
//!  (schema)  (version, (bases,   (audit,   (per image,  (chart,       (images, (release.yaml (offline (release dir
//!             epoch,    daemon-   tests,    parallel:    compose,      DSSE,    last, then    kit)     renamed into
//!             skew,     less or   budgets)  SBOM, scan,  by digest)    tlog,    its .sig and           place whole)
//!             tag,      BuildKit)           drift,                     refer-   bundle)
//!             locks)                        provenance)                rers)
//! ```
//!
//! Beside templates, the tool stage builds the customer tool `stellaops` from the pipeline's
//! own workspace, with its SBOM, provenance and signatures (`tools/`, listed in release.yaml),
//! and the channel store's trust repository is copied in (`trust/`); every kit carries both.
//!
//! The workspace, bottom up (Cargo enforces the direction):
//! - `schema`: every document written or read, typed; exit codes; progress events;
//! - `oci`: the OCI layout, layer writer, registry client and layout push (mechanisms);
//! - `verifier`: keys and signatures, and everything a customer runs without the build side
//!   (verify, kit import, channel pointer check, preflight);
//! - this crate: [`stages`] in release order, the orchestrator [`release`], and the commands
//!   around it: [`repro`] (build twice, compare), [`lock`] (refresh pins), [`channels`]
//!   (promote, history, rollback), [`templates`] (chart and compose by digest), `oci::cmd` (the one
//!   way to run a subprocess), and [`bench`](mod@bench) (layer, SBOM and kit timings against the
//!   machine's own tools);
//! - `xtask`: flags and progress drawing only.
//!
//! The library never prints: progress goes through [`schema::report::Reporter`].

pub mod bench;
pub mod channels;
pub mod error;
pub mod fault;
pub mod keyless_policy;
pub mod lock;
pub mod rebuild;
pub mod release;
pub mod repro;
pub mod signer;
pub mod stages;
pub mod templates;
pub mod tuf;

pub use error::Error;
