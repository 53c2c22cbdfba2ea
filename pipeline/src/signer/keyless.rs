//! Keyless signing: a one-time ECDSA P-256 key, certified for an OIDC identity by a Fulcio
//! CA, that signs the release and is then forgotten.
//!
//! In: `--fulcio-url` and an OIDC identity token: `--identity-token FILE`, else
//! `SIGSTORE_ID_TOKEN`, else, in GitHub Actions (`ACTIONS_ID_TOKEN_REQUEST_URL` and
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, a job with `id-token: write`), a token requested from the
//! runner with audience `sigstore`. Out: a [`Signer`] whose [`Signer::certificate_chain`] is
//! the certificate Fulcio issued; every log entry then names that certificate, and
//! `release.yaml.sigstore.json` carries it.
//!
//! 1. the key is generated in memory (never written anywhere) when the signer is made; a token
//!    given as a file or variable is read and its claims checked then (`sub`, `exp`), so a
//!    wrong token stops the release before the build;
//! 2. at the first signature (a certificate lives minutes, a build may take longer), the token
//!    is read (or requested from GitHub), the token's `sub` is signed with the key (proof of
//!    possession), and `POST <fulcio>/api/v2/signingCert` returns the certificate chain;
//! 3. the leaf must certify this key; every signature is made only while the clock lies
//!    within the leaf's validity;
//! 4. the release sends every signature to the transparency log (required: its signed time,
//!    inside the certificate's validity, is what shows the key was used while certified; an
//!    entry that cannot be logged fails the release, see
//!    `crate::stages::sign::tlog::require_logged`).
//!
//! Why a small client over ureq rather than the `sigstore` crate's `fulcio` feature: that
//! feature brings about 60 crates this workspace does not build today (reqwest, openidconnect,
//! oauth2, rsa, p384 and a second generation of the RustCrypto crates: p256 0.14, der 0.8, ...;
//! counted with `cargo tree` against this lock file), a cost every cold CI build pays: built
//! cold on its own (`sigstore` 0.13, `fulcio` + `rustls-tls`, release profile) it took 231 s of
//! CPU, against 80 s for what this client uses (ureq, x509-cert, p256, p384, serde_json), both
//! measured on the 2-core CI-sized machine; the
//! client is one JSON request over the HTTP client the pipeline already has, and the
//! certificate is read with `x509-cert` (and a P-384 CA checked with `p384`: four new crates in
//! all), which the verifier needs anyway.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use schema::exit;
use verifier::keyless::Leaf;
use verifier::keys::{KeyKind, PublicKey, Signer, SignerError, SigningKey};

/// The token variable sigstore's clients read.
pub const TOKEN_ENV: &str = "SIGSTORE_ID_TOKEN";
/// GitHub Actions' OIDC token endpoint and its bearer (a job with `permissions: id-token: write`).
pub const GITHUB_URL_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
pub const GITHUB_BEARER_ENV: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";
/// The audience a token for Fulcio carries.
pub const AUDIENCE: &str = "sigstore";

/// A token or bearer; never printed.
struct Hidden(String);
impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the identity token comes from.
#[derive(Debug)]
enum Source {
    File(PathBuf),
    Env(Hidden),
    GitHub { url: String, bearer: Hidden },
}

impl Source {
    fn shown(&self) -> String {
        match self {
            Source::File(p) => format!("`{}`", p.display()),
            Source::Env(_) => format!("`{TOKEN_ENV}`"),
            Source::GitHub { .. } => format!("GitHub Actions' OIDC token (`{GITHUB_URL_ENV}`)"),
        }
    }
}

/// The certificate Fulcio issued, read.
#[derive(Debug)]
struct Issued {
    chain: Vec<String>,
    leaf: Leaf,
}

/// What keyless signing needs from the command line.
#[derive(Debug, Clone)]
pub struct KeylessOptions {
    /// Fulcio's base URL.
    pub fulcio: String,
    /// `--identity-token FILE`; else the environment.
    pub token: Option<PathBuf>,
}

/// The keyless signer (the module's steps).
pub struct KeylessSigner {
    key: SigningKey,
    fulcio: String,
    source: Source,
    issued: OnceLock<Result<Issued, SignerError>>,
}

impl fmt::Debug for KeylessSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeylessSigner").field("fulcio", &self.fulcio).field("source", &self.source).finish_non_exhaustive()
    }
}

fn refused(key: &str, message: String, hint: Option<String>, code: exit::Code) -> SignerError {
    SignerError { key: key.to_owned(), message, hint, code }
}

/// The claims of a JWT (not verified here: Fulcio verifies it against its issuer).
fn claims(token: &str) -> Result<serde_json::Value, String> {
    let payload = token.split('.').nth(1).ok_or("not a JWT (header.payload.signature)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("its payload is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("its payload is not JSON: {e}"))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The `sub` of a token, after checking it has not expired.
fn subject(token: &str) -> Result<String, String> {
    let c = claims(token)?;
    let sub = c["sub"].as_str().filter(|s| !s.is_empty()).ok_or("it has no `sub` claim")?;
    if let Some(exp) = c["exp"].as_i64() {
        if exp < now() {
            return Err(format!("it expired at {}", schema::model::rfc3339(exp)));
        }
    }
    Ok(sub.to_owned())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).http_status_as_error(false).build().into()
}

impl KeylessSigner {
    /// Step 1: the one-time key, and the token's source (a given token checked now).
    pub fn new(opts: &KeylessOptions) -> Result<KeylessSigner, SignerError> {
        let shown = "keyless";
        let source = match (&opts.token, std::env::var(TOKEN_ENV).ok().filter(|t| !t.trim().is_empty())) {
            (Some(p), _) => Source::File(p.clone()),
            (None, Some(t)) => Source::Env(Hidden(t.trim().to_owned())),
            (None, None) => match (std::env::var(GITHUB_URL_ENV), std::env::var(GITHUB_BEARER_ENV)) {
                (Ok(url), Ok(bearer)) if !url.is_empty() && !bearer.is_empty() => Source::GitHub { url, bearer: Hidden(bearer) },
                _ => {
                    return Err(refused(
                        shown,
                        "keyless signing needs an OIDC identity token, and none was given".to_owned(),
                        Some(format!(
                        "pass `--identity-token FILE` or set `{TOKEN_ENV}`; in GitHub Actions give the job `permissions: id-token: write`"
                    )),
                        exit::REJECTED,
                    ))
                }
            },
        };
        let signer = KeylessSigner {
            key: SigningKey::generate(KeyKind::EcdsaP256),
            fulcio: opts.fulcio.trim_end_matches('/').to_owned(),
            source,
            issued: OnceLock::new(),
        };
        if !matches!(signer.source, Source::GitHub { .. }) {
            let token = signer.token()?;
            subject(&token).map_err(|m| {
                refused(
                    shown,
                    format!("the identity token {} is not usable: {m}", signer.source.shown()),
                    Some("get a fresh token from the OIDC issuer".to_owned()),
                    exit::REJECTED,
                )
            })?;
        }
        Ok(signer)
    }

    fn token(&self) -> Result<String, SignerError> {
        match &self.source {
            Source::File(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_owned())
                .map_err(|e| refused("keyless", format!("the identity token `{}`: {e}", p.display()), None, exit::ENVIRONMENT)),
            Source::Env(t) => Ok(t.0.clone()),
            Source::GitHub { url, bearer } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                let env_error = |m: String| refused("keyless", m, None, exit::ENVIRONMENT);
                let mut resp = agent()
                    .get(&format!("{url}{sep}audience={AUDIENCE}"))
                    .header("Authorization", &format!("bearer {}", bearer.0))
                    .call()
                    .map_err(|e| env_error(format!("GitHub Actions' OIDC token endpoint: {e}")))?;
                let status = resp.status().as_u16();
                let text = resp.body_mut().read_to_string().map_err(|e| env_error(format!("GitHub Actions' OIDC token: {e}")))?;
                if status != 200 {
                    return Err(refused(
                        "keyless",
                        format!("GitHub Actions' OIDC token endpoint answered {status}: {}", text.chars().take(200).collect::<String>()),
                        Some("give the job `permissions: id-token: write`".to_owned()),
                        if status >= 500 { exit::ENVIRONMENT } else { exit::REJECTED },
                    ));
                }
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| env_error(format!("GitHub Actions' OIDC token: {e}")))?;
                v["value"].as_str().map(str::to_owned).ok_or_else(|| env_error("GitHub Actions' OIDC answer has no `value`".to_owned()))
            }
        }
    }

    /// Step 2 and the first half of step 3, once.
    fn issued(&self) -> Result<&Issued, SignerError> {
        self.issued.get_or_init(|| self.issue()).as_ref().map_err(Clone::clone)
    }

    fn issue(&self) -> Result<Issued, SignerError> {
        let endpoint = format!("{}/api/v2/signingCert", self.fulcio);
        let token = self.token()?;
        let sub = subject(&token).map_err(|m| {
            refused("keyless", format!("the identity token {} is not usable: {m}", self.source.shown()), None, exit::REJECTED)
        })?;
        // Proof of possession: the token's subject, signed with the key to be certified.
        let proof = self.key.sign(sub.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD;
        let request = serde_json::json!({
            "credentials": { "oidcIdentityToken": token },
            "publicKeyRequest": {
                "publicKey": { "algorithm": "ECDSA", "content": self.key.public().pem() },
                "proofOfPossession": b64.encode(proof),
            },
        });
        let env_error = |m: String| {
            refused(
                "keyless",
                format!("Fulcio `{endpoint}`: {m}"),
                Some("check `--fulcio-url` and that the CA is up".to_owned()),
                exit::ENVIRONMENT,
            )
        };
        let mut resp = agent()
            .post(&endpoint)
            .header("Content-Type", "application/json")
            .send(request.to_string())
            .map_err(|e| env_error(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| env_error(format!("answered {status}, unreadably: {e}")))?;
        if !matches!(status, 200 | 201) {
            let said = text.chars().take(300).collect::<String>();
            return Err(if status >= 500 {
                env_error(format!("answered {status}: {said}"))
            } else {
                refused(
                    "keyless",
                    format!("Fulcio `{endpoint}` refused to certify the identity of {} ({status}): {said}", self.source.shown()),
                    Some("the token must come from an issuer the CA trusts, with audience `sigstore`, and not be expired".to_owned()),
                    exit::REJECTED,
                )
            });
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| env_error(format!("answered {status} with no JSON: {e}")))?;
        let chain: Vec<String> = ["signedCertificateEmbeddedSct", "signedCertificateDetachedSct"]
            .iter()
            .find_map(|k| v[*k]["chain"]["certificates"].as_array())
            .ok_or_else(|| env_error("its answer has no `chain.certificates`".to_owned()))?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        let leaf_pem = chain.first().ok_or_else(|| env_error("its answer's chain is empty".to_owned()))?;
        let leaf = Leaf::from_pem(leaf_pem).map_err(|m| env_error(format!("its leaf certificate: {m}")))?;
        if leaf.key.der() != self.key.public().der() {
            return Err(refused(
                "keyless",
                format!("Fulcio `{endpoint}` certified another key than the one it was asked to"),
                None,
                exit::REJECTED,
            ));
        }
        Ok(Issued { chain, leaf })
    }
}

impl Signer for KeylessSigner {
    fn public(&self) -> &PublicKey {
        self.key.public()
    }

    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        let issued = self.issued()?;
        // Step 3: a signature only while certified. The wall clock is read here (and in
        // provenance) because a certificate's validity is wall-clock time.
        let t = now();
        if !issued.leaf.valid_at(t) {
            return Err(refused(
                "keyless",
                format!(
                    "the signing certificate is valid from {} to {}, and the time now, {}, is outside it",
                    schema::model::rfc3339(issued.leaf.not_before),
                    schema::model::rfc3339(issued.leaf.not_after),
                    schema::model::rfc3339(t)
                ),
                Some("check this machine's clock (and the CA's); run the release again for a new certificate".to_owned()),
                exit::REJECTED,
            ));
        }
        Ok(self.key.sign(msg))
    }

    fn certificate_chain(&self) -> Option<Vec<String>> {
        self.issued().ok().map(|i| i.chain.clone())
    }
}
