//! `cosign-rs-keygen OUT`: an ECDSA P-256 key pair in cosign's formats, made by the `sigstore`
//! crate (not by the code under test): `OUT.key` is cosign's encrypted private key (PEM
//! `ENCRYPTED SIGSTORE PRIVATE KEY`: scrypt and NaCl secretbox around PKCS#8), encrypted with
//! `COSIGN_PASSWORD`; `OUT.pub` its public key (PEM `PUBLIC KEY`).
//!
//! `cosign-rs-keygen --public KEY` decrypts a cosign private key (passphrase from
//! `COSIGN_PASSWORD`) with the crate and prints its public key: a reader for files that another
//! implementation wrote.
//!
//! Exit codes: 0 done; 1 the crate refused (message on stderr); 64 usage.

use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::signing_key::SigStoreKeyPair;

const USAGE: &str = "usage: cosign-rs-keygen OUT | cosign-rs-keygen --public KEY   (passphrase in COSIGN_PASSWORD)";

fn fail(msg: &str, code: i32) -> ! {
    eprintln!("cosign-rs-keygen: {msg}");
    std::process::exit(code)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
    match args.as_slice() {
        [flag, key] if flag == "--public" => {
            let pem = std::fs::read(key).unwrap_or_else(|e| fail(&format!("{key}: {e}"), 64));
            let pair = SigStoreKeyPair::from_encrypted_pem(&pem, password.as_bytes())
                .unwrap_or_else(|e| fail(&format!("{key}: {e}"), 1));
            print!("{}", pair.public_key_to_pem().unwrap_or_else(|e| fail(&e.to_string(), 1)));
        }
        [out] if !out.starts_with('-') => {
            let keys = ECDSAKeys::new(EllipticCurve::P256).unwrap_or_else(|e| fail(&e.to_string(), 1));
            let pair = SigStoreKeyPair::ECDSA(keys);
            let private = pair.private_key_to_encrypted_pem(password.as_bytes()).unwrap_or_else(|e| fail(&e.to_string(), 1));
            let public = pair.public_key_to_pem().unwrap_or_else(|e| fail(&e.to_string(), 1));
            for (path, text) in [(format!("{out}.key"), private.as_str()), (format!("{out}.pub"), public.as_str())] {
                std::fs::write(&path, text).unwrap_or_else(|e| fail(&format!("{path}: {e}"), 1));
            }
        }
        _ => fail(USAGE, 64),
    }
}
