//! `cosign-rs-verify --key PUB.pem [--allow-http-registry] REGISTRY/REPO@sha256:HEX...`
//!
//! For each image reference, what `cosign verify --key` does, with the `sigstore` crate's own
//! code only: resolve the digest, fetch the signature image `sha256-<hex>.sig` from the same
//! repository, keep its simple-signing layers whose payload names that digest, and require one
//! whose signature verifies with the PEM public key (`PublicKeyVerifier`). Nothing else is
//! trusted: the trust root is empty (no Fulcio certificates, no Rekor keys).
//!
//! Exit codes: 0 every reference has a valid signature; 1 one or more do not, or could not be
//! checked (each named on stderr: verification fails closed); 2 the client cannot be built;
//! 64 usage (bad arguments, unreadable or unparsable key).

use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
use sigstore::cosign::{ClientBuilder, CosignCapabilities};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
use sigstore::trust::ManualTrustRoot;

const USAGE: &str = "usage: cosign-rs-verify --key PUB.pem [--allow-http-registry] REGISTRY/REPO@sha256:HEX...

Verifies the cosign signature (tag sha256-<hex>.sig) of each image in its registry with the
sigstore crate, using only the given public key (PEM, ECDSA P-256 or Ed25519).
  --key FILE               the public key (required)
  --allow-http-registry    talk plain HTTP to the registry (a loopback test registry)
Exit: 0 all verified, 1 a signature missing, invalid or not checkable, 64 usage.";

fn usage(msg: &str) -> ! {
    eprintln!("cosign-rs-verify: {msg}\n\n{USAGE}");
    std::process::exit(64)
}

/// A key that cannot be used: named, without the whole usage text.
fn bad_key(msg: &str) -> ! {
    eprintln!("cosign-rs-verify: {msg}");
    std::process::exit(64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut key = None;
    let mut http = false;
    let mut refs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--key" => key = Some(args.next().unwrap_or_else(|| usage("--key needs a file"))),
            "--allow-http-registry" => http = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            s if s.starts_with('-') => usage(&format!("unknown option `{s}`")),
            s => refs.push(s.to_owned()),
        }
    }
    let key = key.unwrap_or_else(|| usage("--key is required"));
    if refs.is_empty() {
        usage("no image reference given");
    }
    let pem = std::fs::read(&key).unwrap_or_else(|e| bad_key(&format!("cannot read the key {key}: {e}")));
    // The signing scheme follows from the key (P-256: ECDSA_P256_SHA256_ASN1, as cosign).
    let verifier = PublicKeyVerifier::try_from(&pem).unwrap_or_else(|e| bad_key(&format!("{key} is not a PEM public key: {e}")));
    let constraints: VerificationConstraintVec = vec![Box::new(verifier)];

    let trust = ManualTrustRoot::default();
    let config = ClientConfig { protocol: if http { ClientProtocol::Http } else { ClientProtocol::Https }, ..Default::default() };
    let mut client =
        ClientBuilder::default().with_trust_repository(&trust).and_then(|b| b.with_oci_client_config(config).build()).unwrap_or_else(|e| {
            eprintln!("cosign-rs-verify: cannot build the sigstore client: {e}");
            std::process::exit(2)
        });

    let mut failed = 0;
    for r in &refs {
        let result = verify(&mut client, r, &constraints).await;
        match result {
            Ok(sig) => println!("verified {r} (signature {sig})"),
            Err(why) => {
                eprintln!("FAILED {r}: {why}");
                failed += 1;
            }
        }
    }
    println!("{} verified, {failed} failed", refs.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The reference of the signature image that verified, or why none did.
async fn verify(client: &mut sigstore::cosign::Client, r: &str, constraints: &VerificationConstraintVec) -> Result<String, String> {
    let image: OciReference = r.parse().map_err(|e| format!("not an image reference: {e}"))?;
    if image.digest().is_none() {
        return Err("give the image by digest (REPO@sha256:...)".to_owned());
    }
    let auth = Auth::Anonymous;
    let (sig_image, digest) = client.triangulate(&image, &auth).await.map_err(|e| format!("cannot resolve the image: {e}"))?;
    if Some(digest.as_str()) != image.digest() {
        return Err(format!("the registry serves {digest} for this reference"));
    }
    let layers = client.trusted_signature_layers(&auth, &image).await.map_err(|e| format!("cannot read signatures: {e}"))?;
    if layers.is_empty() {
        return Err(format!("no signature: {sig_image} is missing or has no simple-signing layer naming {digest}"));
    }
    sigstore::cosign::verify_constraints(&layers, constraints.iter())
        .map_err(|_| format!("no signature of {sig_image} ({} layer(s)) verifies with the public key", layers.len()))?;
    Ok(sig_image.to_string())
}
