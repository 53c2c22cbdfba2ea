//! The channel store's identity policy for keyless releases: under which sigstore trusted root,
//! for which identity and OIDC issuer, `promote` (and `rollback`, and a rotation re-checking
//! kept releases) accepts a release signed keyless.
//!
//! In: `cargo xtask trust keyless --trusted-root FILE --certificate-identity[-regexp] ...
//! --certificate-oidc-issuer ...`, which writes `<channels>/keyless-policy.json` (the trusted
//! root embedded, so the policy does not depend on a file elsewhere). Out: the trusted root and
//! [`verifier::keyless::Policy`] that [`crate::channels`] checks a keyless release under
//! ([`verifier::release::keyless_manifest`]).
//!
//! A release signed with a key is checked against the trust root's release keys, as before;
//! the policy is for releases whose `release.yaml.sigstore.json` carries a certificate. The
//! pointers that move channels stay signed by release keys (TUF has no keyless roles), and the
//! two-person rule for stable and lts applies to them as before.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use verifier::keyless::{Policy, TrustedRoot};
use verifier::ops::{io, OpsError};

/// The file in the channel store.
pub const FILE: &str = "keyless-policy.json";

/// `<channels>/keyless-policy.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessPolicy {
    /// The sigstore trusted root (`trusted_root.json`), as given.
    pub trusted_root: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_identity_regexp: Option<String>,
    pub certificate_oidc_issuer: String,
}

impl KeylessPolicy {
    /// The policy of the command line, checked: the trusted root parses (a CA, a log) and the
    /// pattern compiles.
    pub fn new(root_file: &Path, identity: Option<&str>, pattern: Option<&str>, issuer: &str) -> Result<KeylessPolicy, OpsError> {
        let bytes = fs::read(root_file).map_err(io(root_file))?;
        TrustedRoot::parse(&bytes).map_err(|e| {
            OpsError::Refused(format!(
                "`{}`: not a usable sigstore trusted root: {e}\n  hint: give the `trusted_root.json` naming the Fulcio CA and the transparency log",
                root_file.display()
            ))
        })?;
        Policy::new(identity, pattern, Some(issuer)).map_err(OpsError::Refused)?;
        let trusted_root = serde_json::from_slice(&bytes).map_err(|e| OpsError::Refused(format!("`{}`: {e}", root_file.display())))?;
        Ok(KeylessPolicy {
            trusted_root,
            certificate_identity: identity.map(str::to_owned),
            certificate_identity_regexp: pattern.map(str::to_owned),
            certificate_oidc_issuer: issuer.to_owned(),
        })
    }

    /// The trusted root and policy to check releases with.
    pub fn resolve(&self, path: &Path) -> Result<(TrustedRoot, Policy), OpsError> {
        let invalid =
            |e: String| OpsError::Invalid(format!("`{}`: {e}\n  hint: write it again with `cargo xtask trust keyless`", path.display()));
        let root = TrustedRoot::parse(self.trusted_root.to_string().as_bytes()).map_err(|e| invalid(format!("`trustedRoot`: {e}")))?;
        let policy = Policy::new(
            self.certificate_identity.as_deref(),
            self.certificate_identity_regexp.as_deref(),
            Some(&self.certificate_oidc_issuer),
        )
        .map_err(invalid)?;
        Ok((root, policy))
    }
}

/// Where the store at `store` keeps its policy.
pub fn path(store: &Path) -> PathBuf {
    store.join(FILE)
}

/// Writes the policy (whole or not at all).
pub fn write(store: &Path, policy: &KeylessPolicy) -> Result<PathBuf, OpsError> {
    let p = path(store);
    fs::create_dir_all(store).map_err(io(store))?;
    let mut bytes = serde_json::to_vec_pretty(policy).map_err(|e| OpsError::Invalid(e.to_string()))?;
    bytes.push(b'\n');
    oci::write_atomic(&p, &bytes).map_err(io(&p))?;
    Ok(p)
}

/// The store's policy, if it has one.
pub fn load(store: &Path) -> Result<Option<(TrustedRoot, Policy)>, OpsError> {
    let p = path(store);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&p)(e)),
    };
    let policy: KeylessPolicy = serde_json::from_slice(&bytes)
        .map_err(|e| OpsError::Invalid(format!("`{}`: {e}\n  hint: write it again with `cargo xtask trust keyless`", p.display())))?;
    policy.resolve(&p).map(Some)
}

/// Whether the release in `dir` is signed keyless (its bundle carries a certificate).
pub fn is_keyless(dir: &Path) -> bool {
    fs::read(dir.join("release.yaml.sigstore.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| verifier::keyless::bundle_certificate(&v).is_some())
}
