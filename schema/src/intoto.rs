//! in-toto and SLSA type URIs shared by the writers (evidence, sign, gates, kit) and the
//! checkers of the verifier.

/// in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA Provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
