//! Where the signing key is, and the [`Signer`] that uses it: the one way every command that
//! signs (`release`, `kit build`, `promote`, `rollback`) turns its `--key` into something that
//! signs.
//!
//! In: `--key` as given: a file path (our encrypted PKCS#8 PEM, or cosign's `cosign.key`, both
//! read by [`verifier::keys::SigningKey::load`]) or an RFC 7512 `pkcs11:` URI naming a key in a
//! token ([`pkcs11`]: the key never leaves it). Out: a boxed [`Signer`] with its public key.
//! The signing stages and the channel code take `&dyn Signer` and do not know which it is.
//! `release --keyless` signs with a one-time key certified by Fulcio instead ([`keyless`]).

pub mod keyless;
pub mod pkcs11;

use std::fmt;
use std::path::{Path, PathBuf};

use verifier::keys::{KeyError, Secret, Signer, SigningKey};

pub use pkcs11::{Pkcs11Error, Pkcs11Uri};

/// A signing key as the user named it.
#[derive(Debug, Clone)]
pub enum KeyRef {
    /// A key file: encrypted PKCS#8 PEM or cosign's encrypted `cosign.key`.
    File(PathBuf),
    /// A key in a PKCS#11 token.
    Pkcs11(Box<Pkcs11Uri>),
}

impl KeyRef {
    /// `--key`: a `pkcs11:` URI when it starts so, else a file path.
    pub fn from_arg(arg: &Path) -> Result<KeyRef, Pkcs11Error> {
        match arg.to_str() {
            Some(s) if s.starts_with(pkcs11::SCHEME) => Ok(KeyRef::Pkcs11(Box::new(s.parse()?))),
            _ => Ok(KeyRef::File(arg.to_owned())),
        }
    }
}

impl fmt::Display for KeyRef {
    /// The path, or the URI with its PIN masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::File(p) => write!(f, "{}", p.display()),
            KeyRef::Pkcs11(u) => write!(f, "{u}"),
        }
    }
}

/// Why a key could not be made ready to sign.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] KeyError),
    #[error(transparent)]
    Pkcs11(#[from] Pkcs11Error),
}

impl LoadError {
    pub fn hint(&self) -> Option<String> {
        match self {
            LoadError::File(e) => e.hint(),
            LoadError::Pkcs11(e) => e.hint(),
        }
    }
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            LoadError::File(e) => e.exit_code(),
            LoadError::Pkcs11(e) => e.exit_code(),
        }
    }
}

/// The public key of `key`: a public key file as it is, a private key file decrypted, a token
/// key read from the token ([`load`]).
pub fn public_key(key: &KeyRef) -> Result<verifier::keys::PublicKey, LoadError> {
    if let KeyRef::File(p) = key {
        if let Ok(public) = verifier::keys::PublicKey::load(p) {
            return Ok(public);
        }
    }
    Ok(load(key)?.public().clone())
}

/// Opens the key: a file is decrypted with the passphrase of the environment
/// (`STELLAOPS_KEY_PASSPHRASE`, `COSIGN_PASSWORD` for a cosign key); a token is logged in to
/// and the key checked by signing and verifying a probe, so a wrong PIN or a public key that
/// does not match stops a command before any work.
pub fn load(key: &KeyRef) -> Result<Box<dyn Signer>, LoadError> {
    match key {
        KeyRef::File(p) => Ok(Box::new(SigningKey::load(p, &Secret::from_env())?)),
        KeyRef::Pkcs11(u) => Ok(Box::new(pkcs11::Pkcs11Signer::open(u)?)),
    }
}
