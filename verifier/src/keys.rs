//! Signing keys: ECDSA P-256 (ES256) or, outside FIPS mode, Ed25519.
//!
//! Private keys are PKCS#8 PEM encrypted with a passphrase (PBES2, through RustCrypto's
//! `pkcs8`), written with mode 0600; public keys are SPKI PEM. A key's id is the sha256 of its
//! SPKI DER, in hex. Private keys and passphrases are wrapped so that `Debug` shows nothing.
//! ECDSA signatures are ASN.1 DER over SHA-256 (what cosign, openssl and securesystemslib
//! use), with RFC 6979 nonces: the same key and message give the same signature.
//!
//! [`Signer`] is what every signing function takes: a key file loaded here ([`SigningKey`],
//! our PKCS#8 or cosign's `cosign.key`, [`crate::cosign_key`]) or a key that never leaves a
//! hardware token (the pipeline's PKCS#11 signer). Both sign the same bytes the same way.

use std::fmt;
use std::path::{Path, PathBuf};

use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::OsRng;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    /// ECDSA on P-256 with SHA-256 (JOSE `ES256`).
    EcdsaP256,
    Ed25519,
}

impl KeyKind {
    /// securesystemslib's scheme name.
    pub fn scheme(self) -> &'static str {
        match self {
            KeyKind::EcdsaP256 => "ecdsa-sha2-nistp256",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

/// Whether only FIPS-approved algorithms may be used (spec §9: ES256 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fips {
    On,
    Off,
}

/// What signs: a private key, wherever it is, with its public key. Implemented by
/// [`SigningKey`] (a key file held in memory) and by the pipeline's PKCS#11 signer (the key
/// stays in the token; only the message digest goes in and the signature comes out).
pub trait Signer: fmt::Debug + Send + Sync {
    fn public(&self) -> &PublicKey;
    /// Signs `msg` as [`SigningKey::sign`] does: ECDSA over SHA-256 as ASN.1 DER, Ed25519 as
    /// the 64 raw bytes.
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError>;
    /// The certificate chain (PEM, leaf first) binding the public key to an identity, for a
    /// keyless signer (a Fulcio certificate); `None` for a key. Asked after a signature was
    /// made (a keyless signer gets its certificate with its first signature).
    fn certificate_chain(&self) -> Option<Vec<String>> {
        None
    }
}

/// What a transparency-log entry names as the signer: the leaf certificate of a keyless
/// signer, else the public key (both PEM, as Rekor takes them).
pub fn log_verifier(key: &dyn Signer) -> String {
    key.certificate_chain().and_then(|c| c.into_iter().next()).unwrap_or_else(|| key.public().pem().to_owned())
}

/// A signer that could not sign (a token removed, a session lost): names the key, never a PIN.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{key}`: cannot sign: {message}")]
pub struct SignerError {
    /// The key as the user named it (a path, or a `pkcs11:` URI with its PIN masked).
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
    /// Environment (a token gone, a service down) or rejected (a certificate refused).
    pub code: schema::exit::Code,
}

impl SignerError {
    pub fn exit_code(&self) -> schema::exit::Code {
        self.code
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}`: cannot decrypt the private key: {message}")]
    Decrypt { path: PathBuf, message: String, env: &'static str },
    #[error("`{path}`: a cosign key of type {kind}; ECDSA P-256 and Ed25519 keys can sign")]
    Unsupported { path: PathBuf, kind: String },
    #[error("`{path}`: not a {what}: {message}")]
    Format { path: PathBuf, what: &'static str, message: String },
    #[error("FIPS mode allows ES256 (ECDSA P-256) only; `{what}` is {kind:?}")]
    NotFips { what: String, kind: KeyKind },
    #[error("`{0}` exists; refusing to overwrite a key")]
    Exists(PathBuf),
}

impl KeyError {
    /// What the user can do about it (printed by the CLI as a `hint:` line).
    pub fn hint(&self) -> Option<String> {
        match self {
            KeyError::Decrypt { env, .. } => Some(format!("set the passphrase in `{env}`")),
            KeyError::Unsupported { .. } => {
                Some("make an ECDSA P-256 key: `cosign generate-key-pair`, or `cargo xtask keys generate`".to_owned())
            }
            KeyError::NotFips { .. } => Some("generate an ECDSA key with `cargo xtask keys generate --algorithm ecdsa-p256`".to_owned()),
            KeyError::Exists(_) => Some("remove it first, or choose another path".to_owned()),
            KeyError::Io { .. } | KeyError::Format { .. } => None,
        }
    }

    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            KeyError::Io { .. } => schema::exit::ENVIRONMENT,
            _ => schema::exit::REJECTED,
        }
    }
}

/// The environment variable holding the private key's passphrase.
pub const PASSPHRASE_ENV: &str = "STELLAOPS_KEY_PASSPHRASE";

/// cosign's environment variable for the passphrase of a `cosign.key`; read for cosign keys
/// before [`PASSPHRASE_ENV`].
pub const COSIGN_PASSPHRASE_ENV: &str = "COSIGN_PASSWORD";

/// A passphrase; never printed. A cosign key may have its own (`COSIGN_PASSWORD`).
pub struct Secret(String, Option<String>);
impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s, None)
    }
    /// From `STELLAOPS_KEY_PASSPHRASE` (empty when unset), and `COSIGN_PASSWORD` for cosign keys.
    pub fn from_env() -> Secret {
        Secret(std::env::var(PASSPHRASE_ENV).unwrap_or_default(), std::env::var(COSIGN_PASSPHRASE_ENV).ok())
    }
    /// The passphrase of a cosign key and the variable it came from.
    fn for_cosign(&self) -> (&str, &'static str) {
        match &self.1 {
            Some(p) => (p, COSIGN_PASSPHRASE_ENV),
            None => (&self.0, PASSPHRASE_ENV),
        }
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

enum Inner {
    P256(p256::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
}

/// A private key, ready to sign.
pub struct SigningKey {
    inner: Inner,
    public: PublicKey,
}
impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kind", &self.public.kind).field("key_id", &self.public.key_id()).finish_non_exhaustive()
    }
}

/// A public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub kind: KeyKind,
    der: Vec<u8>,
    pem: String,
}

impl PublicKey {
    pub fn pem(&self) -> &str {
        &self.pem
    }
    /// The SPKI DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// sha256 of the SPKI DER, hex.
    pub fn key_id(&self) -> String {
        schema::model::Digest::of(&self.der).hex().to_owned()
    }

    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        Self::from_pem(&pem).map_err(|message| KeyError::Format { path: path.to_owned(), what: "public key (SPKI PEM)", message })
    }

    /// An ECDSA P-256 public key from its SEC1 point (`04 || x || y`, as a token stores it).
    pub fn from_p256_point(point: &[u8]) -> Result<PublicKey, String> {
        let k = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|e| format!("not a P-256 point: {e}"))?;
        Self::from_der_doc(KeyKind::EcdsaP256, k.to_public_key_der().map_err(|e| e.to_string())?)
    }

    /// An Ed25519 public key from its 32 raw bytes.
    pub fn from_ed25519_bytes(raw: &[u8]) -> Result<PublicKey, String> {
        let raw: &[u8; 32] = raw.try_into().map_err(|_| format!("an Ed25519 key has 32 bytes, not {}", raw.len()))?;
        let k = ed25519_dalek::VerifyingKey::from_bytes(raw).map_err(|e| format!("not an Ed25519 point: {e}"))?;
        Self::from_der_doc(KeyKind::Ed25519, k.to_public_key_der().map_err(|e| e.to_string())?)
    }

    fn from_der_doc(kind: KeyKind, doc: pkcs8::Document) -> Result<PublicKey, String> {
        let pem = doc.to_pem("PUBLIC KEY", LineEnding::LF).map_err(|e| e.to_string())?;
        Ok(PublicKey { kind, der: doc.as_bytes().to_vec(), pem })
    }

    /// A public key from its SPKI DER (as certificates and sigstore trusted roots carry it).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        use pkcs8::DecodePublicKey;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Self::from_der_doc(KeyKind::EcdsaP256, k.to_public_key_der().map_err(|e| e.to_string())?);
        }
        match ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            Ok(k) => Self::from_der_doc(KeyKind::Ed25519, k.to_public_key_der().map_err(|e| e.to_string())?),
            Err(e) => Err(format!("neither an ECDSA P-256 nor an Ed25519 key: {e}")),
        }
    }

    pub fn from_pem(pem: &str) -> Result<PublicKey, String> {
        use pkcs8::DecodePublicKey;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            let der = k.to_public_key_der().map_err(|e| e.to_string())?.as_bytes().to_vec();
            return Ok(PublicKey { kind: KeyKind::EcdsaP256, der, pem: pem.to_owned() });
        }
        match ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            Ok(k) => {
                let der = k.to_public_key_der().map_err(|e| e.to_string())?.as_bytes().to_vec();
                Ok(PublicKey { kind: KeyKind::Ed25519, der, pem: pem.to_owned() })
            }
            Err(e) => Err(format!("neither an ECDSA P-256 nor an Ed25519 key: {e}")),
        }
    }

    /// An Ed25519 key from its 32 raw bytes (as TUF metadata writes it).
    pub fn from_ed25519_raw(raw: &[u8]) -> Result<PublicKey, String> {
        let raw: [u8; 32] = raw.try_into().map_err(|_| format!("{} bytes, not an Ed25519 key", raw.len()))?;
        let k = ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|e| e.to_string())?;
        let der = k.to_public_key_der().map_err(|e| e.to_string())?.as_bytes().to_vec();
        let pem = k.to_public_key_pem(LineEnding::LF).map_err(|e| e.to_string())?;
        Ok(PublicKey { kind: KeyKind::Ed25519, der, pem })
    }

    /// Checks `sig` over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        use pkcs8::DecodePublicKey;
        match self.kind {
            KeyKind::EcdsaP256 => {
                use p256::ecdsa::signature::Verifier;
                let (Ok(k), Ok(s)) = (p256::ecdsa::VerifyingKey::from_public_key_der(&self.der), p256::ecdsa::Signature::from_der(sig))
                else {
                    return false;
                };
                k.verify(msg, &s).is_ok()
            }
            KeyKind::Ed25519 => {
                use ed25519_dalek::Verifier;
                let (Ok(k), Ok(s)) =
                    (ed25519_dalek::VerifyingKey::from_public_key_der(&self.der), ed25519_dalek::Signature::from_slice(sig))
                else {
                    return false;
                };
                k.verify(msg, &s).is_ok()
            }
        }
    }

    pub fn check_fips(&self, fips: Fips, what: &str) -> Result<(), KeyError> {
        if fips == Fips::On && self.kind != KeyKind::EcdsaP256 {
            return Err(KeyError::NotFips { what: what.to_owned(), kind: self.kind });
        }
        Ok(())
    }
}

impl SigningKey {
    pub fn generate(kind: KeyKind) -> SigningKey {
        let inner = match kind {
            KeyKind::EcdsaP256 => Inner::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
            KeyKind::Ed25519 => Inner::Ed(ed25519_dalek::SigningKey::generate(&mut OsRng)),
        };
        Self::from_inner(inner)
    }

    fn from_inner(inner: Inner) -> SigningKey {
        let (kind, doc) = match &inner {
            Inner::P256(k) => (KeyKind::EcdsaP256, k.verifying_key().to_public_key_der()),
            Inner::Ed(k) => (KeyKind::Ed25519, k.verifying_key().to_public_key_der()),
        };
        let doc = doc.expect("a generated key encodes");
        let pem = doc.to_pem("PUBLIC KEY", LineEnding::LF).expect("PEM of a public key");
        SigningKey { inner, public: PublicKey { kind, der: doc.as_bytes().to_vec(), pem } }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `msg` (ECDSA: SHA-256 and DER; Ed25519: the 64 raw bytes).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.inner {
            Inner::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Inner::Ed(k) => {
                use ed25519_dalek::Signer;
                k.sign(msg).to_bytes().to_vec()
            }
        }
    }

    /// Writes the encrypted private key (mode 0600, refusing to overwrite) and the public key.
    pub fn write(&self, private: &Path, public: &Path, passphrase: &Secret) -> Result<(), KeyError> {
        for p in [private, public] {
            if p.exists() {
                return Err(KeyError::Exists(p.to_owned()));
            }
        }
        let pem = self.encrypted_pem(passphrase).map_err(|e| KeyError::Format {
            path: private.to_owned(),
            what: "key to encrypt",
            message: e.to_string(),
        })?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| KeyError::Io { path: p, source }
        };
        if let Some(d) = private.parent() {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(private).map_err(io(private))?;
        f.write_all(pem.as_bytes()).map_err(io(private))?;
        std::fs::write(public, &self.public.pem).map_err(io(public))?;
        Ok(())
    }

    /// PBES2 with PBKDF2-HMAC-SHA256 (600 000 iterations) and AES-256-CBC: what openssl reads
    /// by default (pkcs8's default, scrypt, exceeds openssl's memory limit for scrypt).
    fn encrypted_pem(&self, passphrase: &Secret) -> Result<String, pkcs8::Error> {
        use rand_core::RngCore;
        let (mut salt, mut iv) = ([0u8; 16], [0u8; 16]);
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut iv);
        let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(600_000, &salt, &iv).map_err(pkcs8::Error::from)?;
        let plain = match &self.inner {
            Inner::P256(k) => k.to_pkcs8_der()?,
            Inner::Ed(k) => k.to_pkcs8_der()?,
        };
        let info = pkcs8::PrivateKeyInfo::try_from(plain.as_bytes())?;
        let enc = info.encrypt_with_params(params, passphrase.0.as_bytes())?;
        Ok(enc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)?.to_string())
    }

    /// Loads an encrypted private key: PKCS#8 PEM (ours, openssl's) or cosign's `cosign.key`
    /// (passphrase from `COSIGN_PASSWORD` when set, else `STELLAOPS_KEY_PASSPHRASE`).
    pub fn load(path: &Path, passphrase: &Secret) -> Result<SigningKey, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        if crate::cosign_key::is_cosign(&pem) {
            return Self::load_cosign(path, &pem, passphrase);
        }
        let decrypt = |message: String| KeyError::Decrypt { path: path.to_owned(), message, env: PASSPHRASE_ENV };
        let (label, doc) = pkcs8::SecretDocument::from_pem(&pem).map_err(|e| KeyError::Format {
            path: path.to_owned(),
            what: "PEM private key",
            message: e.to_string(),
        })?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(KeyError::Format {
                path: path.to_owned(),
                what: "passphrase-encrypted PKCS#8 key",
                message: format!("its PEM label is `{label}`; keys are kept encrypted"),
            });
        }
        let enc = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| decrypt(e.to_string()))?;
        let plain = enc.decrypt(passphrase.0.as_bytes()).map_err(|e| decrypt(e.to_string()))?;
        Self::from_pkcs8(path, plain.as_bytes())
    }

    /// A cosign key: its envelope opened ([`crate::cosign_key`]), then the PKCS#8 inside.
    fn load_cosign(path: &Path, pem: &str, passphrase: &Secret) -> Result<SigningKey, KeyError> {
        let (pass, env) = passphrase.for_cosign();
        let plain = crate::cosign_key::decrypt(pem, pass.as_bytes()).map_err(|e| match e {
            crate::cosign_key::Error::Decrypt(message) => KeyError::Decrypt { path: path.to_owned(), message, env },
            crate::cosign_key::Error::Format(message) => KeyError::Format { path: path.to_owned(), what: "cosign private key", message },
        })?;
        let key = Self::from_pkcs8(path, &plain);
        if let Err(KeyError::Format { .. }) = &key {
            if let Ok(info) = pkcs8::PrivateKeyInfo::try_from(plain.as_slice()) {
                return Err(KeyError::Unsupported { path: path.to_owned(), kind: crate::cosign_key::describe(&info) });
            }
        }
        key
    }

    fn from_pkcs8(path: &Path, der: &[u8]) -> Result<SigningKey, KeyError> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Ok(Self::from_inner(Inner::P256(k)));
        }
        match ed25519_dalek::SigningKey::from_pkcs8_der(der) {
            Ok(k) => Ok(Self::from_inner(Inner::Ed(k))),
            Err(e) => Err(KeyError::Format { path: path.to_owned(), what: "ECDSA P-256 or Ed25519 key", message: e.to_string() }),
        }
    }
}

impl Signer for SigningKey {
    fn public(&self) -> &PublicKey {
        &self.public
    }
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.sign(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_encrypted_files_and_verify() {
        let d = tempfile::tempdir().unwrap();
        for kind in [KeyKind::EcdsaP256, KeyKind::Ed25519] {
            let k = SigningKey::generate(kind);
            let (pk, pubk) = (d.path().join(format!("{kind:?}.key")), d.path().join(format!("{kind:?}.pub")));
            k.write(&pk, &pubk, &Secret::new("s3cret".into())).unwrap();
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&pk).unwrap().permissions().mode() & 0o777, 0o600);
            assert!(std::fs::read_to_string(&pk).unwrap().starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
            let loaded = SigningKey::load(&pk, &Secret::new("s3cret".into())).unwrap();
            let sig = loaded.sign(b"hello");
            let public = PublicKey::load(&pubk).unwrap();
            assert!(public.verify(b"hello", &sig));
            assert!(!public.verify(b"hellO", &sig));
            assert!(SigningKey::load(&pk, &Secret::new("wrong".into())).is_err());
            assert!(k.write(&pk, &pubk, &Secret::new("x".into())).is_err(), "overwrote a key");
            assert_eq!(public.check_fips(Fips::On, "k").is_ok(), kind == KeyKind::EcdsaP256);
            assert!(!format!("{loaded:?}").contains("s3cret"));
        }
    }
}
