//! cosign's encrypted private key files (`cosign.key`), read so that a key made by
//! `cosign generate-key-pair` (or the `sigstore` crate) can sign a release ([`crate::keys`]).
//!
//! In: a PEM block labelled `ENCRYPTED SIGSTORE PRIVATE KEY` (or the older `ENCRYPTED COSIGN
//! PRIVATE KEY`) whose body is JSON: `kdf` (scrypt: `params` `N`, `r`, `p` and a base64 `salt`),
//! `cipher` (`nacl/secretbox` with a base64 24-byte `nonce`) and base64 `ciphertext`. Out: the
//! PKCS#8 DER inside.
//!
//! 1. the label says cosign; the JSON is parsed with every field required, unknown ones refused;
//! 2. the KDF and cipher must be the two above, and scrypt's cost at most what cosign writes
//!    (N <= 2^16, r = 8, p = 1), so a crafted file cannot make us spend gigabytes;
//! 3. scrypt(passphrase, salt) gives the 32-byte key; XSalsa20-Poly1305 (NaCl secretbox: the
//!    16-byte tag before the ciphertext) opens the ciphertext, failing on a wrong passphrase.
//!
//! Written here, not taken from the `sigstore` crate: that crate reads these files too, but it
//! belongs to the next RustCrypto generation (p256 0.14, pkcs8 0.11, sha2 0.11) and brings
//! x509, URL and async dependencies, a second copy of everything we link, for this one
//! function. The cryptography is RustCrypto's (`scrypt`, `crypto_secretbox`); only the JSON
//! envelope, a dozen lines, is ours. tests/it/hsm.rs signs with a key the sigstore crate made.

use base64::Engine as _;
use serde::Deserialize;

/// The PEM labels cosign and the sigstore libraries write.
pub const LABELS: [&str; 2] = ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"];

/// The most scrypt work a file may ask for: what cosign and the sigstore crate write at most.
const MAX_LOG_N: u8 = 16;

#[derive(Debug)]
pub enum Error {
    /// Not the format (or a cost beyond the bound): the message says what.
    Format(String),
    /// The passphrase does not open the key (or the file was altered).
    Decrypt(String),
}

/// Whether `pem` is a cosign private key (its first PEM label says so).
pub fn is_cosign(pem: &str) -> bool {
    pem_rfc7468::decode_label(pem.trim_start().as_bytes()).is_ok_and(|l| LABELS.contains(&l))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cipher {
    name: String,
    nonce: String,
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| Error::Format(format!("`{field}` is not base64: {e}")))
}

/// The PKCS#8 DER inside a cosign private key (steps in the module's comment).
pub fn decrypt(pem: &str, passphrase: &[u8]) -> Result<Vec<u8>, Error> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    // 1.
    let (label, body) = pem_rfc7468::decode_vec(pem.trim().as_bytes()).map_err(|e| Error::Format(format!("PEM: {e}")))?;
    if !LABELS.contains(&label) {
        return Err(Error::Format(format!("its PEM label is `{label}`, not `{}`", LABELS[0])));
    }
    let env: Envelope = serde_json::from_slice(&body).map_err(|e| Error::Format(format!("its JSON: {e}")))?;
    // 2.
    if env.kdf.name != "scrypt" {
        return Err(Error::Format(format!("`kdf.name` is `{}`, not `scrypt`", env.kdf.name)));
    }
    if env.cipher.name != "nacl/secretbox" {
        return Err(Error::Format(format!("`cipher.name` is `{}`, not `nacl/secretbox`", env.cipher.name)));
    }
    let ScryptParams { n, r, p } = env.kdf.params;
    if !n.is_power_of_two() || n < 2 || n.trailing_zeros() > u32::from(MAX_LOG_N) || r != 8 || p != 1 {
        return Err(Error::Format(format!(
            "scrypt parameters N={n}, r={r}, p={p}: cosign writes N=32768 or 65536, r=8, p=1 (at most N=2^{MAX_LOG_N} is read)"
        )));
    }
    let salt = b64("kdf.salt", &env.kdf.salt)?;
    let nonce = b64("cipher.nonce", &env.cipher.nonce)?;
    let ciphertext = b64("ciphertext", &env.ciphertext)?;
    if nonce.len() != 24 {
        return Err(Error::Format(format!("`cipher.nonce` has {} bytes, not 24", nonce.len())));
    }
    // 3.
    let log_n = n.trailing_zeros() as u8;
    let params = scrypt::Params::new(log_n, r, p, 32).map_err(|e| Error::Format(format!("scrypt parameters: {e}")))?;
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    scrypt::scrypt(passphrase, &salt, &params, key.as_mut_slice()).map_err(|e| Error::Format(format!("scrypt: {e}")))?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(key.as_slice()));
    cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(&nonce), ciphertext.as_slice())
        .map_err(|_| Error::Decrypt("the passphrase does not open it (or the file was altered)".to_owned()))
}

/// The key type of a PKCS#8 key we cannot sign with (for the refusal).
pub fn describe(info: &pkcs8::PrivateKeyInfo<'_>) -> String {
    let alg = info.algorithm.oid.to_string();
    let param = info.algorithm.parameters_oid().map(|o| o.to_string()).unwrap_or_default();
    match (alg.as_str(), param.as_str()) {
        ("1.2.840.113549.1.1.1", _) => "RSA".to_owned(),
        ("1.2.840.10045.2.1", "1.3.132.0.34") => "ECDSA P-384".to_owned(),
        ("1.2.840.10045.2.1", "1.3.132.0.35") => "ECDSA P-521".to_owned(),
        ("1.2.840.10045.2.1", p) => format!("ECDSA on curve {p}"),
        (a, _) => format!("algorithm {a}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(n: u64) -> String {
        let body = format!(
            r#"{{"kdf":{{"name":"scrypt","params":{{"N":{n},"r":8,"p":1}},"salt":"AAAA"}},"cipher":{{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},"ciphertext":"AAAA"}}"#
        );
        pem_rfc7468::encode_string(LABELS[0], pem_rfc7468::LineEnding::LF, body.as_bytes()).unwrap()
    }

    #[test]
    fn a_cosign_key_asking_for_more_scrypt_work_than_cosign_writes_is_refused() {
        let pem = envelope(1 << 20);
        assert!(is_cosign(&pem));
        let Err(Error::Format(m)) = decrypt(&pem, b"x") else { panic!("accepted N=2^20") };
        assert!(m.contains("N=1048576"), "{m}");
    }

    #[test]
    fn a_wrong_passphrase_is_a_decrypt_error() {
        assert!(matches!(decrypt(&envelope(1 << 10), b"x"), Err(Error::Decrypt(_))));
    }

    #[test]
    fn other_pem_is_not_cosign() {
        assert!(!is_cosign("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"));
    }
}
