//! Keyless signing (issue 16, points 1 and 5), end to end: a release signed with a one-time key
//! that a Fulcio CA certified for an OIDC identity, every signature in the transparency log,
//! then verified under an identity policy by `verify --trusted-root` and by npm
//! `@sigstore/verify`, and refused for another subject, another issuer, a certificate from
//! another CA, a signing time outside the certificate's validity and a tampered inclusion
//! proof.
//!
//! Neither Fulcio nor an OIDC issuer is packaged for Debian, so both are fakes of the edge,
//! real HTTP servers on loopback started here: [`Issuer`] serves an OpenID discovery document
//! and its JWKS, mints ES256 tokens for the subject a test picks, and plays GitHub Actions'
//! token endpoint (bearer, `audience`); [`Fulcio`] answers `POST /api/v2/signingCert` as
//! Fulcio does: it fetches the token's issuer's JWKS over HTTP, verifies the token (signature,
//! audience, expiry, an issuer it trusts), checks the proof of possession (the `sub` signed
//! with the key to certify), and issues a short-lived certificate with Fulcio's extensions
//! (subject alternative name, code signing, OIDC issuer v1 and v2) from a CA made here. The
//! log is [`TestLog`] (`tests/it/tlog.rs`).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use sha2::Digest as _;
use x509_cert::der::asn1::{BitString, Ia5String, OctetString, UtcTime, Utf8StringRef};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use crate::support::{xtask_cmd, Repo, Run};
use crate::tlog::TestLog;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}
fn b64url() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A request as a handler sees it: method, target, headers (lowercase names), body.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

type Handler = Box<dyn Fn(&Request) -> (u16, String) + Send + Sync>;

/// A one-request-per-connection HTTP/1.1 server on loopback, serving until the test ends.
fn serve(listener: TcpListener, handler: Handler) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((n, v)) = h.split_once(':') {
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let req = Request {
                method: parts.next().unwrap_or_default().to_owned(),
                target: parts.next().unwrap_or_default().to_owned(),
                headers,
                body,
            };
            let (status, reply) = handler(&req);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
}

/// GET `url` (plain HTTP on loopback); the status and body.
fn get(url: &str) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".to_owned()));
    let mut s = TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut all = String::new();
    s.read_to_string(&mut all).map_err(|e| e.to_string())?;
    let (head, body) = all.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or("no status")?;
    Ok((status, body.to_owned()))
}

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// The test OIDC issuer (module doc).
struct Issuer {
    url: String,
    key: Arc<p256::ecdsa::SigningKey>,
    /// The bearer its GitHub Actions token endpoint takes.
    bearer: String,
}

const KID: &str = "test-key-1";

fn mint(key: &p256::ecdsa::SigningKey, claims: &serde_json::Value) -> String {
    let header = b64url().encode(serde_json::json!({ "alg": "ES256", "kid": KID, "typ": "JWT" }).to_string());
    let payload = b64url().encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64url().encode(sig.to_bytes()))
}

/// The subject GitHub Actions' tokens of this issuer name: a workflow at a tag.
const WORKFLOW: &str = "https://github.com/stella-ops/release/.github/workflows/release.yml@refs/tags/v2.4.1";

impl Issuer {
    fn start() -> Issuer {
        let key = Arc::new(p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng));
        let (l, url) = listener();
        let bearer = format!("runner-{}", now());
        let (k, u, b) = (key.clone(), url.clone(), bearer.clone());
        serve(
            l,
            Box::new(move |r| {
                let point = k.verifying_key().to_encoded_point(false);
                match (r.method.as_str(), r.target.as_str()) {
                    ("GET", "/.well-known/openid-configuration") => {
                        (200, serde_json::json!({ "issuer": u, "jwks_uri": format!("{u}/jwks") }).to_string())
                    }
                    ("GET", "/jwks") => (
                        200,
                        serde_json::json!({ "keys": [{
                            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
                            "x": b64url().encode(point.x().unwrap()), "y": b64url().encode(point.y().unwrap()),
                        }]})
                        .to_string(),
                    ),
                    // GitHub Actions' token endpoint: `ACTIONS_ID_TOKEN_REQUEST_URL` with
                    // `&audience=`, the bearer in `Authorization`.
                    ("GET", t) if t.starts_with("/github-token?") => {
                        if r.header("authorization") != Some(&format!("bearer {b}")) {
                            return (401, "{\"message\":\"bad bearer\"}".to_owned());
                        }
                        let aud = t.split(['?', '&']).find_map(|p| p.strip_prefix("audience=")).unwrap_or("").to_owned();
                        let claims = serde_json::json!({ "iss": u, "sub": WORKFLOW, "aud": aud, "iat": now(), "exp": now() + 300 });
                        (200, serde_json::json!({ "value": mint(&k, &claims) }).to_string())
                    }
                    _ => (404, "{}".to_owned()),
                }
            }),
        );
        Issuer { url, key, bearer }
    }

    /// A token for `sub`, audience `sigstore`, valid for `ttl` seconds from now (negative: expired).
    fn token(&self, sub: &str, ttl: i64) -> String {
        mint(&self.key, &serde_json::json!({ "iss": self.url, "sub": sub, "aud": "sigstore", "iat": now(), "exp": now() + ttl }))
    }
}

/// A certificate authority: its key, name and self-signed certificate.
struct Ca {
    key: p256::ecdsa::SigningKey,
    name: Name,
    der: Vec<u8>,
}

const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";

fn ext(oid: &str, critical: bool, value: Vec<u8>) -> Extension {
    Extension { extn_id: ObjectIdentifier::new_unwrap(oid), critical, extn_value: OctetString::new(value).unwrap() }
}

fn time(t: i64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(t as u64)).unwrap())
}

/// A certificate for `spki` (DER) named `subject`, signed by `issuer`'s key under its name.
fn certify(
    issuer: (&Name, &p256::ecdsa::SigningKey),
    subject: Name,
    spki: &[u8],
    validity: (i64, i64),
    extensions: Vec<Extension>,
) -> Vec<u8> {
    sign_tbs(tbs_of(issuer.0, subject, spki, validity, extensions), issuer.1)
}

/// The to-be-signed part of [`certify`]'s certificate.
fn tbs_of(issuer: &Name, subject: Name, spki: &[u8], validity: (i64, i64), extensions: Vec<Extension>) -> TbsCertificate {
    let alg = AlgorithmIdentifierOwned { oid: ObjectIdentifier::new_unwrap(ECDSA_SHA256), parameters: None };
    let serial: [u8; 16] = sha2::Sha256::digest(format!("{spki:?}{}", now()))[..16].try_into().unwrap();
    TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[&[0x01u8][..], &serial[1..]].concat()).unwrap(),
        signature: alg,
        issuer: issuer.clone(),
        validity: Validity { not_before: time(validity.0), not_after: time(validity.1) },
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki).unwrap(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    }
}

/// `tbs` signed by `key` (ECDSA P-256, SHA-256).
fn sign_tbs(tbs: TbsCertificate, key: &p256::ecdsa::SigningKey) -> Vec<u8> {
    let alg = tbs.signature.clone();
    let sig: p256::ecdsa::DerSignature = key.sign(&tbs.to_der().unwrap());
    Certificate { tbs_certificate: tbs, signature_algorithm: alg, signature: BitString::from_bytes(sig.as_bytes()).unwrap() }
        .to_der()
        .unwrap()
}

/// Embeds in `tbs` a signed certificate timestamp of the CT log `ct` (RFC 6962 §3.2, as a CT
/// log signs a precertificate entry: the TBS without the SCT extension, and the SHA-256 of the
/// issuer's key `issuer_spki`), in the SCT list extension.
fn embed_sct(tbs: &mut TbsCertificate, issuer_spki: &[u8], ct: &p256::ecdsa::SigningKey) {
    let precert = tbs.to_der().unwrap();
    let timestamp = (now() as u64) * 1000;
    let mut signed = vec![0u8, 0u8];
    signed.extend_from_slice(&timestamp.to_be_bytes());
    signed.extend_from_slice(&1u16.to_be_bytes());
    signed.extend_from_slice(&sha2::Sha256::digest(issuer_spki));
    signed.extend_from_slice(&(precert.len() as u32).to_be_bytes()[1..]);
    signed.extend_from_slice(&precert);
    signed.extend_from_slice(&0u16.to_be_bytes());
    let sig: p256::ecdsa::DerSignature = ct.sign(&signed);
    let mut sct = vec![0u8];
    sct.extend_from_slice(&sha2::Sha256::digest(ct.verifying_key().to_public_key_der().unwrap().as_bytes()));
    sct.extend_from_slice(&timestamp.to_be_bytes());
    sct.extend_from_slice(&0u16.to_be_bytes());
    sct.extend_from_slice(&[4, 3]);
    sct.extend_from_slice(&(sig.as_bytes().len() as u16).to_be_bytes());
    sct.extend_from_slice(sig.as_bytes());
    let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&(sct.len() as u16).to_be_bytes());
    list.extend_from_slice(&sct);
    let value = OctetString::new(list).unwrap().to_der().unwrap();
    tbs.extensions.as_mut().unwrap().push(ext(verifier::keyless::OID_SCT_LIST, false, value));
}

impl Ca {
    /// A CA named `CN=test fulcio,O=stella-ops.test` (two of them share the name: a chain to
    /// the other is a chain to another CA, not a missing one).
    fn new() -> Ca {
        let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let name: Name = "CN=test fulcio,O=stella-ops.test".parse().unwrap();
        let spki = key.verifying_key().to_public_key_der().unwrap();
        let exts = vec![
            ext("2.5.29.19", true, BasicConstraints { ca: true, path_len_constraint: Some(0) }.to_der().unwrap()),
            ext("2.5.29.15", true, KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign).to_der().unwrap()),
        ];
        let der = certify((&name, &key), name.clone(), spki.as_bytes(), (now() - 86_400, now() + 365 * 86_400), exts);
        Ca { key, name, der }
    }
}

/// How the test Fulcio issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Issue {
    /// Valid from a minute ago for ten minutes, as Fulcio.
    Honest,
    /// Already expired (its validity ended ten minutes ago).
    Expired,
    /// For another key than the one it was asked to certify.
    OtherKey,
    /// Not at all: 503.
    Unavailable,
}

/// The test Fulcio (module doc).
struct Fulcio {
    url: String,
    ca: Arc<Ca>,
    mode: Arc<Mutex<Issue>>,
    /// How many certificates it issued.
    issued: Arc<Mutex<usize>>,
    /// The key of the CT log whose timestamp (SCT) each certificate embeds.
    ct: Arc<p256::ecdsa::SigningKey>,
}

/// Fulcio's verification of an OIDC token: the issuer trusted, its JWKS fetched over HTTP,
/// the ES256 signature, audience and expiry. The token's `sub`.
fn verify_token(token: &str, trusted_issuer: &str) -> Result<String, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, sig] = parts[..] else { return Err("not a JWT".into()) };
    let h: serde_json::Value = serde_json::from_slice(&b64url().decode(header).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let c: serde_json::Value = serde_json::from_slice(&b64url().decode(payload).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let iss = c["iss"].as_str().ok_or("no iss")?;
    if iss != trusted_issuer {
        return Err(format!("issuer `{iss}` is not trusted"));
    }
    let (_, disco) = get(&format!("{iss}/.well-known/openid-configuration"))?;
    let disco: serde_json::Value = serde_json::from_str(&disco).map_err(|e| e.to_string())?;
    let (_, jwks) = get(disco["jwks_uri"].as_str().ok_or("no jwks_uri")?)?;
    let jwks: serde_json::Value = serde_json::from_str(&jwks).map_err(|e| e.to_string())?;
    let jwk = jwks["keys"].as_array().into_iter().flatten().find(|k| k["kid"] == h["kid"]).ok_or("unknown kid")?;
    let coord = |n: &str| b64url().decode(jwk[n].as_str().unwrap_or_default()).map_err(|e| e.to_string());
    let (x, y) = (coord("x")?, coord("y")?);
    let point = p256::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
    let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point).map_err(|e| e.to_string())?;
    let sig = p256::ecdsa::Signature::from_slice(&b64url().decode(sig).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    key.verify(format!("{header}.{payload}").as_bytes(), &sig).map_err(|_| "bad token signature".to_owned())?;
    if c["aud"] != "sigstore" {
        return Err(format!("audience {} is not `sigstore`", c["aud"]));
    }
    if c["exp"].as_i64().unwrap_or(0) < now() {
        return Err("token expired".into());
    }
    c["sub"].as_str().map(str::to_owned).ok_or_else(|| "no sub".to_owned())
}

impl Fulcio {
    fn start(issuer: &str, ca: Ca) -> Fulcio {
        let ca = Arc::new(ca);
        let mode = Arc::new(Mutex::new(Issue::Honest));
        let issued = Arc::new(Mutex::new(0));
        let (l, url) = listener();
        let ct = Arc::new(p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng));
        let (ca2, mode2, issued2, trusted, ct2) = (ca.clone(), mode.clone(), issued.clone(), issuer.to_owned(), ct.clone());
        serve(
            l,
            Box::new(move |r| {
                if (r.method.as_str(), r.target.as_str()) != ("POST", "/api/v2/signingCert") {
                    return (404, "{}".to_owned());
                }
                let fail = |code: u16, m: String| (code, serde_json::json!({ "code": code, "message": m }).to_string());
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else { return fail(400, "not JSON".into()) };
                let sub = match verify_token(v["credentials"]["oidcIdentityToken"].as_str().unwrap_or_default(), &trusted) {
                    Ok(s) => s,
                    Err(e) => return fail(401, format!("error processing the identity token: {e}")),
                };
                let pk = &v["publicKeyRequest"];
                let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pk["publicKey"]["content"].as_str().unwrap_or_default())
                else {
                    return fail(400, "bad public key".into());
                };
                let proof = b64().decode(pk["proofOfPossession"].as_str().unwrap_or_default()).unwrap_or_default();
                let ok = p256::ecdsa::Signature::from_der(&proof).is_ok_and(|s| key.verify(sub.as_bytes(), &s).is_ok());
                if !ok {
                    return fail(400, "the proof of possession does not verify".into());
                }
                let san = if sub.contains('@') {
                    GeneralName::Rfc822Name(Ia5String::new(&sub).unwrap())
                } else {
                    GeneralName::UniformResourceIdentifier(Ia5String::new(&sub).unwrap())
                };
                let exts = vec![
                    ext("2.5.29.15", true, KeyUsage(KeyUsages::DigitalSignature.into()).to_der().unwrap()),
                    ext("2.5.29.37", false, ExtendedKeyUsage(vec![ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3")]).to_der().unwrap()),
                    ext("2.5.29.17", true, SubjectAltName(vec![san]).to_der().unwrap()),
                    ext("1.3.6.1.4.1.57264.1.1", false, trusted.as_bytes().to_vec()),
                    ext("1.3.6.1.4.1.57264.1.8", false, Utf8StringRef::new(&trusted).unwrap().to_der().unwrap()),
                ];
                let mode = *mode2.lock().unwrap();
                let validity = match mode {
                    Issue::Expired => (now() - 1200, now() - 600),
                    Issue::Unavailable => return fail(503, "unavailable".into()),
                    Issue::Honest | Issue::OtherKey => (now() - 60, now() + 600),
                };
                let spki = match mode {
                    Issue::OtherKey => p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
                        .verifying_key()
                        .to_public_key_der()
                        .unwrap(),
                    _ => key.to_public_key_der().unwrap(),
                };
                let mut tbs = tbs_of(&ca2.name, Name::default(), spki.as_bytes(), validity, exts);
                embed_sct(&mut tbs, ca2.key.verifying_key().to_public_key_der().unwrap().as_bytes(), &ct2);
                let leaf = sign_tbs(tbs, &ca2.key);
                *issued2.lock().unwrap() += 1;
                let chain = [verifier::keyless::der_pem(&leaf), verifier::keyless::der_pem(&ca2.der)];
                (201, serde_json::json!({ "signedCertificateEmbeddedSct": { "chain": { "certificates": chain } } }).to_string())
            }),
        );
        Fulcio { url, ca, mode, issued, ct }
    }

    fn issue(&self, mode: Issue) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// A sigstore trusted root naming `ca` and the log, after another log (as a root listing
/// several logs does): the entries' log is found by its key id.
fn trusted_root(path: &Path, ca: &[u8], log: &TestLog, ct: &p256::ecdsa::SigningKey) -> PathBuf {
    let key = verifier::keys::PublicKey::load(&log.public).unwrap();
    let other = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256).public().clone();
    let tlog = |key: &verifier::keys::PublicKey, url: &str| {
        serde_json::json!({
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": { "rawBytes": b64().encode(key.der()), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": { "start": "2020-01-01T00:00:00Z" } },
            "logId": { "keyId": b64().encode(sha2::Sha256::digest(key.der())) },
        })
    };
    let root = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [tlog(&other, "https://another-rekor.test"), tlog(&key, "https://rekor.test")],
        "certificateAuthorities": [{
            "subject": { "organization": "stella-ops.test", "commonName": "test fulcio" },
            "uri": "https://fulcio.test",
            "certChain": { "certificates": [{ "rawBytes": b64().encode(ca) }] },
            "validFor": { "start": "2020-01-01T00:00:00Z" },
        }],
        "ctlogs": [tlog(&verifier::keys::PublicKey::from_spki_der(ct.verifying_key().to_public_key_der().unwrap().as_bytes()).unwrap(), "https://ctfe.test")],
        "timestampAuthorities": [],
    });
    fs::write(path, root.to_string()).unwrap();
    path.to_owned()
}

/// `verify DIR --trusted-root ROOT --certificate-identity[-regexp] ID --certificate-oidc-issuer ISS`.
fn verify(dir: &Path, root: &Path, identity: (&str, &str), issuer: &str) -> Run {
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(dir).arg("--trusted-root").arg(root).args([identity.0, identity.1, "--certificate-oidc-issuer", issuer]);
    Run::of(cmd.output().unwrap())
}

#[track_caller]
fn fails_with(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 1, "expected exit 1\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    for n in needles {
        assert!(all.contains(n), "output lacks `{n}`:\n{all}");
    }
}

/// npm @sigstore/verify on a release directory's release.yaml bundle (or on an envelope's
/// bundle file), under the policy, with `root`: the
/// script of this checkout beside a link to the installed verifiers' `node_modules` (ES
/// modules resolve packages from the script's own directory). `None` when not installed
/// (a failure under CI, in `support::verifier`).
fn sigstore_js(scratch: &Path) -> Option<impl Fn(&Path, &Path, &str, &str) -> Run> {
    let installed = crate::support::verifier("STELLAOPS_VERIFY_SIGSTORE")?;
    let dir = scratch.join("sigstore-js");
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(installed.parent().unwrap().join("node_modules"), dir.join("node_modules")).unwrap();
    let script = dir.join("sigstore_verify_keyless.mjs");
    fs::copy(crate::support::workspace().join("tests/verifiers/sigstore_verify_keyless.mjs"), &script).unwrap();
    Some(move |release: &Path, root: &Path, identity: &str, issuer: &str| {
        // A release directory: release.yaml's bundle; a bundle file: an envelope's.
        let (bundle, artifact) = if release.is_dir() {
            (release.join("release.yaml.sigstore.json"), release.join("release.yaml"))
        } else {
            (release.to_owned(), PathBuf::from("-"))
        };
        Run::of(
            std::process::Command::new("node").arg(&script).arg(bundle).arg(artifact).arg(root).args([identity, issuer]).output().unwrap(),
        )
    })
}

fn copy_dir(from: &Path, to: &Path) {
    crate::support::run_ok(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}

const SIGNER: &str = "release-manager@stella-ops.test";
/// How long the tests' tokens for a release live: the first signature (when the token is read)
/// comes after the build, which with a cold cache on a loaded machine can take longer than
/// GitHub's ten minutes.
const TOKEN_TTL: i64 = 3600;

/// The acceptance case: a keyless edge release with a token of the local issuer (a file)
/// verifies under the identity policy with our `verify` and npm @sigstore/verify; another
/// subject, another issuer, a chain to another CA (same name, other key) and a flipped byte of
/// an inclusion proof are refused by both; each envelope's bundle verifies with
/// @sigstore/verify as well, each image signature carries the certificate (cosign's
/// annotations); a release whose log entries are timed after the
/// certificate expired is refused by both. The customer tool verifies it too. Nothing of the
/// one-time key is on disk.
/// `release --channel edge --keyless` of `repo` into `out`: a certificate from the Fulcio at
/// `fulcio` for `token`, every entry in the log at `rekor`; `extra` arguments after them.
fn keyless_edge(repo: &Repo, fulcio: &str, token: &Path, rekor: &str, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["release", "--channel", "edge", "--keyless", "--fulcio-url", fulcio];
    args.extend(["--identity-token", token.to_str().unwrap(), "--rekor-url", rekor, "--out", out.to_str().unwrap()]);
    args.extend(extra);
    repo.xtask(&args)
}

#[test]
fn keyless_release_with_a_token_from_a_local_oidc_issuer_and_fake_fulcio_edge_verifies_under_an_identity_policy() {
    let repo = Repo::new();
    let scratch = tempfile::tempdir().unwrap();
    let log = TestLog::start(scratch.path());
    let issuer = Issuer::start();
    let fulcio = Fulcio::start(&issuer.url, Ca::new());
    let token = scratch.path().join("token");
    fs::write(&token, issuer.token(SIGNER, TOKEN_TTL)).unwrap();
    let release = |out: &Path| keyless_edge(&repo, &fulcio.url, &token, &log.url, out, &["--skip-gates"]);
    let dir = repo.path().join("target/keyless");
    release(&dir).ok();
    assert_eq!(*fulcio.issued.lock().unwrap(), 1, "one certificate for the whole release");
    assert_eq!(log.size(), 77);
    // The bundle carries the leaf; no key file was written anywhere in the repository.
    let bundle: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("release.yaml.sigstore.json")).unwrap()).unwrap();
    assert!(bundle["verificationMaterial"]["certificate"]["rawBytes"].is_string(), "{bundle}");
    assert!(bundle["verificationMaterial"]["publicKey"].is_null(), "{bundle}");
    assert_eq!(bundle["verificationMaterial"]["tlogEntries"].as_array().unwrap().len(), 1);
    // Beside each envelope, its bundle: the envelope, the certificate, its log entry.
    let files = walk(&dir.join("attest"));
    let envelopes: Vec<&PathBuf> = files.iter().filter(|p| p.to_string_lossy().ends_with(".dsse.json")).collect();
    assert_eq!(envelopes.len(), 50, "48 SBOM and provenance envelopes, the drift report, the gate record");
    assert!(dir.join("tools/stellaops.provenance.sigstore.json").is_file(), "the tool's provenance envelope is logged and bundled");
    for e in &envelopes {
        let b: serde_json::Value =
            serde_json::from_slice(&fs::read(e.to_string_lossy().replace(".dsse.json", ".sigstore.json")).unwrap()).unwrap();
        assert_eq!(b["dsseEnvelope"], serde_json::from_slice::<serde_json::Value>(&fs::read(e).unwrap()).unwrap());
        assert_eq!(b["verificationMaterial"]["certificate"], bundle["verificationMaterial"]["certificate"]);
    }
    // Each image signature carries the certificate as cosign annotates it.
    let leaf_pem =
        verifier::keyless::der_pem(&b64().decode(bundle["verificationMaterial"]["certificate"]["rawBytes"].as_str().unwrap()).unwrap());
    let layout = oci::Layout::open(&dir.join("images")).unwrap();
    let sigs: Vec<oci::Descriptor> = layout
        .index()
        .unwrap()
        .manifests
        .into_iter()
        .filter(|d| d.annotations.get(oci::ANNOTATION_REF_NAME).is_some_and(|n| n.ends_with(".sig")))
        .collect();
    assert_eq!(sigs.len(), 24);
    for d in &sigs {
        let m: oci::Manifest = layout.read_json(&d.digest, "a signature manifest").unwrap();
        assert_eq!(m.layers[0].annotations.get(verifier::sign::COSIGN_CERTIFICATE), Some(&leaf_pem), "{}", d.digest);
        assert_eq!(m.layers[0].annotations.get(verifier::sign::COSIGN_CHAIN), Some(&verifier::keyless::der_pem(&fulcio.ca.der)));
    }
    let keys: Vec<_> = walk(repo.path()).into_iter().filter(|p| p.to_string_lossy().ends_with(".key")).collect();
    assert!(keys.is_empty(), "key files written: {keys:?}");

    let root = trusted_root(&scratch.path().join("trusted_root.json"), &fulcio.ca.der, &log, &fulcio.ct);
    let exact = ("--certificate-identity", SIGNER);
    let run = verify(&dir, &root, exact, &issuer.url);
    run.ok();
    assert!(
        run.stdout.contains(&format!(
            "keyless certificate (`{}`): `{SIGNER}` from `{}`",
            dir.join("release.yaml.sigstore.json").display(),
            issuer.url
        )),
        "{}",
        run.stdout
    );
    let logged = run.stdout.lines().filter(|l| l.starts_with("[ok  ] transparency log: `") && l.contains("signed entry timestamp")).count();
    assert_eq!(logged, 77, "{}", run.stdout);
    verify(&dir, &root, ("--certificate-identity-regexp", r"^release-manager@stella-ops\.test$"), &issuer.url).ok();

    // The customer tool (built from the consumer crates only) checks the same way.
    let tool = crate::tool::built_tool();
    let stellaops = |subject: &str| {
        let mut cmd = std::process::Command::new(&tool);
        cmd.arg("verify").arg(&dir).arg("--trusted-root").arg(&root).args([
            "--certificate-identity",
            subject,
            "--certificate-oidc-issuer",
            &issuer.url,
        ]);
        Run::of(cmd.output().unwrap())
    };
    stellaops(SIGNER).ok();
    fails_with(&stellaops("someone-else@stella-ops.test"), &["[FAIL] keyless certificate", "not `someone-else@stella-ops.test`"]);

    keyless_kit_checks(&dir, &root, (&issuer.url, &fulcio.ca.der), (&tool, &log.public), scratch.path());
    keyless_registry_and_vsa_checks(&dir, &root, &issuer.url, &tool, scratch.path());

    // Verified with a key instead: refused, saying what the release is; a trusted root that
    // is not there: the environment's failure (exit 3), named.
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(&dir).arg("--key").arg(&log.public);
    fails_with(
        &Run::of(cmd.output().unwrap()),
        &["[FAIL] release.yaml sigstore bundle", "a keyless release; verify it with `--trusted-root FILE`"],
    );
    let missing = verify(&dir, &scratch.path().join("absent.json"), exact, &issuer.url);
    assert_eq!(missing.code, 3, "{missing:?}");
    assert!(missing.stderr.contains("absent.json`: No such file"), "{missing:?}");

    // Another subject, another issuer: refused, naming what the certificate says.
    fails_with(
        &verify(&dir, &root, ("--certificate-identity", "someone-else@stella-ops.test"), &issuer.url),
        &["[FAIL] keyless certificate", &format!("the certificate's identity is `{SIGNER}`, not `someone-else@stella-ops.test`")],
    );
    fails_with(&verify(&dir, &root, ("--certificate-identity-regexp", "^ci@"), &issuer.url), &["not the pattern `^ci@`"]);
    fails_with(
        &verify(&dir, &root, exact, "https://accounts.example.com"),
        &[&format!("the certificate's OIDC issuer is `{}`, not `https://accounts.example.com`", issuer.url)],
    );
    // A trusted root naming another CA of the same name: the chain does not hold.
    let rogue = trusted_root(&scratch.path().join("rogue_root.json"), &Ca::new().der, &log, &fulcio.ct);
    fails_with(&verify(&dir, &rogue, exact, &issuer.url), &["that CA's key did not sign it (a chain to another CA)"]);
    // A trusted root naming another CT log: the certificate's SCT is from none of its logs.
    let other_ct = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let no_ct = trusted_root(&scratch.path().join("other_ct_root.json"), &fulcio.ca.der, &log, &other_ct);
    fails_with(
        &verify(&dir, &no_ct, exact, &issuer.url),
        &["[FAIL] keyless certificate", "certificate transparency: none of its 1 SCT(s) is from a CT log of the trusted root"],
    );
    // A flipped byte in release.yaml's inclusion proof (the entry file and the bundle's copy).
    let tampered = scratch.path().join("tampered");
    copy_dir(&dir, &tampered);
    let entry = tampered.join("attest/tlog/release.yaml.rekor.json");
    let mut e: serde_json::Value = serde_json::from_slice(&fs::read(&entry).unwrap()).unwrap();
    let uuid = e.as_object().unwrap().keys().next().unwrap().clone();
    let h = e[&uuid]["verification"]["inclusionProof"]["hashes"][0].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", if h.starts_with('0') { '1' } else { '0' }, &h[1..]);
    e[&uuid]["verification"]["inclusionProof"]["hashes"][0] = flipped.into();
    fs::write(&entry, e.to_string()).unwrap();
    let bundle_path = tampered.join("release.yaml.sigstore.json");
    let mut b: serde_json::Value = serde_json::from_slice(&fs::read(&bundle_path).unwrap()).unwrap();
    let mut raw = b64().decode(b["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][0].as_str().unwrap()).unwrap();
    raw[0] ^= 1;
    b["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][0] = b64().encode(raw).into();
    fs::write(&bundle_path, b.to_string()).unwrap();
    fails_with(&verify(&tampered, &root, exact, &issuer.url), &["[FAIL] transparency log: `release.yaml`", "inclusion proof"]);

    // Signed while certified, logged (the log's signed time) after the certificate expired.
    log.shift_time(3600);
    let late = repo.path().join("target/late");
    release(&late).ok();
    log.shift_time(0);
    fails_with(
        &verify(&late, &root, exact, &issuer.url),
        &["[FAIL] transparency log: `release.yaml`", "outside the release key's validity"],
    );

    // Other people's verifier: npm @sigstore/verify, offline, with the same trusted root.
    if let Some(node) = sigstore_js(scratch.path()) {
        let run = node(&dir, &root, SIGNER, &issuer.url);
        run.ok();
        assert!(run.stdout.contains("bundle verified"), "{run:?}");
        let refused = |run: Run, says: &str| {
            assert_ne!(run.code, 0, "{run:?}");
            assert!(run.stderr.contains(says), "`{says}` not in {run:?}");
        };
        // An attestation's bundle (the drift report's envelope) too.
        let drift = dir.join("attest/drift.sigstore.json");
        node(&drift, &root, SIGNER, &issuer.url).ok();
        // The customer tool's provenance envelope is logged and bundled like the others.
        node(&dir.join("tools/stellaops.provenance.sigstore.json"), &root, SIGNER, &issuer.url).ok();
        refused(node(&drift, &root, "someone-else@stella-ops.test", &issuer.url), "certificate identity error");
        refused(node(&dir, &root, "someone-else@stella-ops.test", &issuer.url), "certificate identity error");
        refused(node(&dir, &root, SIGNER, "https://accounts.example.com"), "invalid certificate extension");
        refused(node(&dir, &rogue, SIGNER, &issuer.url), "certificate");
        refused(node(&dir, &no_ct, SIGNER, &issuer.url), "SCT");
        refused(node(&tampered, &root, SIGNER, &issuer.url), "calculated root hash does not match inclusion proof");
        refused(node(&late, &root, SIGNER, &issuer.url), "certificate is not valid or expired");
    }
}

/// A keyless release published to the loopback registry: `verify DIR --registry` (xtask) and
/// the customer tool's `verify DIR --registry` accept it under the identity policy (the
/// certificate and release.yaml's log entry give the key the registry's images and signatures
/// are checked with) and refuse another subject; a kit with `--registry` is refused with a hint;
/// `verify DIR --vsa` takes a rebuilder's verdict about this release.yaml and refuses one about
/// another release.
fn keyless_registry_and_vsa_checks(dir: &Path, root: &Path, issuer: &str, tool: &Path, scratch: &Path) {
    let Some(registry) = crate::support::registry() else { return };
    let ns = format!("{registry}/keyless-{}", std::process::id());
    let mut cmd = xtask_cmd();
    cmd.arg("publish").arg(dir).args(["--registry", &ns]);
    Run::of(cmd.output().unwrap()).ok();
    let policy = |subject: &str| {
        ["--trusted-root", root.to_str().unwrap(), "--certificate-identity", subject, "--certificate-oidc-issuer", issuer]
            .map(str::to_owned)
    };
    let xtask = |extra: &[&str], subject: &str| {
        let mut cmd = xtask_cmd();
        cmd.arg("verify").arg(dir).args(policy(subject)).args(extra);
        Run::of(cmd.output().unwrap())
    };
    let by_tool = |subject: &str| {
        let mut cmd = std::process::Command::new(tool);
        cmd.arg("verify").arg(dir).args(policy(subject)).args(["--registry", &ns]);
        Run::of(cmd.output().unwrap())
    };
    let run = xtask(&["--registry", &ns], SIGNER);
    run.ok();
    assert!(
        run.stdout.contains("[ok  ] keyless: the certificate of `release.yaml.sigstore.json` is under the identity policy"),
        "{}",
        run.stdout
    );
    let signatures = run.stdout.lines().filter(|l| l.starts_with("[ok  ]") && l.contains("signature")).count();
    assert!(signatures >= 24, "{}", run.stdout);
    by_tool(SIGNER).ok();
    let other = "someone-else@stella-ops.test";
    let says = ["[FAIL] keyless: the release's certificate and log entry", &format!("not `{other}`")];
    fails_with(&xtask(&["--registry", &ns], other), &says);
    fails_with(&by_tool(other), &says);
    // A kit with --registry: refused with the way to do it.
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(dir.join("stellaops-kit-2.4.1-edge.tar.zst")).args(policy(SIGNER)).args(["--registry", &ns]);
    Run::of(cmd.output().unwrap()).refused(&["are checked against a release directory", "hint: `kit import`"]);

    // A rebuilder's verdict (its own key) about this release.yaml, then about another.
    let rebuilder = scratch.join("rebuilder.key");
    let rebuilder_key = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256);
    rebuilder_key.write(&rebuilder, &rebuilder.with_extension("pub"), &verifier::keys::Secret::new(String::new())).unwrap();
    let verdict = |release_yaml: schema::model::Digest| {
        let v = pipeline::rebuild::Verdict {
            version: "2.4.1".into(),
            channel: "edge".into(),
            commit: "0".repeat(40),
            resource_uri: format!("file://{}", dir.display()),
            release_yaml,
            compared: Vec::new(),
            masked: &[],
            passed: true,
            kept: None,
        };
        let statement = pipeline::rebuild::vsa_statement(&v, "https://rebuilder.stella-ops.test", "2027-06-21T00:00:00Z");
        let env = verifier::sign::sign_envelope(&rebuilder_key, verifier::sign::PAYLOAD_TYPE, &statement).unwrap();
        serde_json::to_vec(&env).unwrap()
    };
    let (good, bad) = (scratch.join("good.vsa.json"), scratch.join("other.vsa.json"));
    fs::write(&good, verdict(schema::model::Digest::of(&fs::read(dir.join("release.yaml")).unwrap()))).unwrap();
    fs::write(&bad, verdict(schema::model::Digest::of(b"another release.yaml"))).unwrap();
    let vsa =
        |file: &Path| xtask(&["--vsa", file.to_str().unwrap(), "--vsa-key", rebuilder.with_extension("pub").to_str().unwrap()], SIGNER);
    let run = vsa(&good);
    run.ok();
    assert!(run.stdout.contains("[ok  ] rebuild verdict"), "{}", run.stdout);
    fails_with(&vsa(&bad), &["[FAIL] rebuild verdict"]);
}

/// The kit `release` wrote into a keyless release: verified and imported under the identity
/// policy by `cargo xtask` and by the customer tool (offline kit verify, import); refused for
/// another subject, with `--key`, and with a flipped byte; not re-made by `kit build` (the
/// one-time key is gone); and its customer tool checked with openssl alone, as the README's
/// air-gapped steps say: the certificate beside the signature chains to the pinned CA, names
/// the signer, and its key verifies the tool's raw signature.
fn keyless_kit_checks(dir: &Path, root: &Path, (issuer, ca): (&str, &[u8]), (tool, some_key): (&Path, &Path), scratch: &Path) {
    let kit = dir.join("stellaops-kit-2.4.1-edge.tar.zst");
    let policy = |subject: &str| {
        ["--trusted-root", root.to_str().unwrap(), "--certificate-identity", subject, "--certificate-oidc-issuer", issuer]
            .map(str::to_owned)
    };
    let xtask = |args: &[&str], subject: &str| {
        let mut cmd = xtask_cmd();
        cmd.args(args).args(policy(subject));
        Run::of(cmd.output().unwrap())
    };
    let stellaops = |args: &[&str], subject: &str| {
        let mut cmd = std::process::Command::new(tool);
        cmd.args(args).args(policy(subject));
        Run::of(cmd.output().unwrap())
    };
    let k = kit.to_str().unwrap();
    let run = xtask(&["verify", k], SIGNER);
    run.ok();
    assert!(
        run.stdout.contains(&format!("[ok  ] keyless certificate (`manifest/release.yaml.sigstore.json`): `{SIGNER}` from `{issuer}`")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.lines().any(|l| l.starts_with("[ok  ] transparency log: `release.yaml`")), "{}", run.stdout);
    let into = scratch.join("imported-xtask");
    xtask(&["kit", "import", k, "--into", into.to_str().unwrap()], SIGNER).ok();
    assert_eq!(fs::read(into.join("stellaops/2.4.1-edge/manifest/release.yaml")).unwrap(), fs::read(dir.join("release.yaml")).unwrap());
    stellaops(&["offline", "kit", "verify", k], SIGNER).ok();
    let into = scratch.join("imported-tool");
    stellaops(&["offline", "kit", "import", k, "--into", into.to_str().unwrap()], SIGNER).ok();
    assert!(into.join("stellaops/2.4.1-edge/tools/stellaops").is_file());
    // The upgrade preflight from the kit to itself: both sides verified under the policy, each
    // release.yaml's signature checked with its certified key (a note, not a violation).
    let pre = stellaops(&["offline", "kit", "preflight", k, "--from", k, "--backup-age", "2h", "--json"], SIGNER);
    pre.ok();
    let findings = pre.json()["preflight"]["findings"].clone();
    let signature = |side: &str| {
        findings.as_array().unwrap().iter().any(|f| {
            f["check"] == "manifest-signature" && f["severity"] == "note" && f["message"].as_str().unwrap_or_default().starts_with(side)
        })
    };
    assert!(signature("current") && signature("target"), "{findings}");

    // Another subject: refused by both at the certificate, nothing imported.
    let other = "someone-else@stella-ops.test";
    let says = ["the release's certificate is refused", &format!("the certificate's identity is `{SIGNER}`, not `{other}`")];
    fails_with(&xtask(&["verify", k], other), &says);
    fails_with(&xtask(&["kit", "verify", k], other), &says);
    xtask(&["kit", "verify", k], SIGNER).ok();
    let refused_into = scratch.join("refused");
    fails_with(&xtask(&["kit", "import", k, "--into", refused_into.to_str().unwrap()], other), &says);
    fails_with(&stellaops(&["offline", "kit", "import", k, "--into", refused_into.to_str().unwrap()], other), &says);
    assert!(!refused_into.exists());
    // With a key: refused, saying what the kit is.
    let mut cmd = std::process::Command::new(tool);
    cmd.args(["offline", "kit", "verify", k, "--key"]).arg(some_key);
    Run::of(cmd.output().unwrap()).refused(&["the kit of a keyless release", "hint: verify it with `--trusted-root FILE`"]);
    // A flipped byte in the kit: refused (exit 1) by both.
    let mut bytes = fs::read(&kit).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let flipped = scratch.join("flipped.tar.zst");
    fs::write(&flipped, bytes).unwrap();
    let f = flipped.to_str().unwrap();
    fails_with(&xtask(&["verify", f], SIGNER), &["kit `", "refused"]);
    fails_with(&stellaops(&["offline", "kit", "import", f, "--into", refused_into.to_str().unwrap()], SIGNER), &["refused"]);
    assert!(!refused_into.exists());
    // `kit build` of a keyless release: refused, pointing at the kit `release` wrote.
    let mut cmd = xtask_cmd();
    cmd.args(["kit", "build"]).arg(dir).arg("--out").arg(scratch.join("rebuilt.tar.zst"));
    Run::of(cmd.output().unwrap()).refused(&["it is a keyless release", "hint: ship the kit `release` wrote"]);
    assert!(!scratch.join("rebuilt.tar.zst").exists());

    // The air-gapped bootstrap of the tool, with openssl only (README): the certificate beside
    // the signature chains to the pinned CA (its validity ended minutes after the release: the
    // log's signed time is what shows it was used in time, checked by the tool afterwards),
    // names the signer, and its key verifies the tool.
    let ca_pem = scratch.join("fulcio-root.pem");
    fs::write(&ca_pem, verifier::keyless::der_pem(ca)).unwrap();
    let tools = into.join("stellaops/2.4.1-edge/tools");
    let cert = tools.join("stellaops.sig.pem");
    let openssl = |args: &[&std::ffi::OsStr]| Run::of(std::process::Command::new("openssl").args(args).output().unwrap());
    let os = |s: &str| std::ffi::OsString::from(s);
    let chain = openssl(&[&os("verify"), &os("-no_check_time"), &os("-CAfile"), ca_pem.as_os_str(), cert.as_os_str()]);
    chain.ok();
    assert!(chain.stdout.contains(": OK"), "{chain:?}");
    let san = openssl(&[&os("x509"), &os("-in"), cert.as_os_str(), &os("-noout"), &os("-ext"), &os("subjectAltName")]);
    san.ok();
    assert!(san.stdout.contains(&format!("email:{SIGNER}")), "{san:?}");
    let public = scratch.join("tool-signer.pem");
    let run = openssl(&[&os("x509"), &os("-in"), cert.as_os_str(), &os("-noout"), &os("-pubkey"), &os("-out"), public.as_os_str()]);
    run.ok();
    let dgst = |file: &Path| {
        openssl(&[
            &os("dgst"),
            &os("-sha256"),
            &os("-verify"),
            public.as_os_str(),
            &os("-signature"),
            tools.join("stellaops.sig").as_os_str(),
            file.as_os_str(),
        ])
    };
    let good = dgst(&tools.join("stellaops"));
    good.ok();
    assert!(good.stdout.contains("Verified OK"), "{good:?}");
    // The same steps refuse another CA's root and a changed program.
    let rogue = scratch.join("rogue-root.pem");
    fs::write(&rogue, verifier::keyless::der_pem(&Ca::new().der)).unwrap();
    let refused = openssl(&[&os("verify"), &os("-no_check_time"), &os("-CAfile"), rogue.as_os_str(), cert.as_os_str()]);
    assert_ne!(refused.code, 0, "{refused:?}");
    let mut program = fs::read(tools.join("stellaops")).unwrap();
    program[1000] ^= 1;
    let changed = scratch.join("stellaops-changed");
    fs::write(&changed, program).unwrap();
    assert_ne!(dgst(&changed).code, 0);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// In GitHub Actions (the runner's token endpoint and bearer in the environment) a `stable`
/// release signs keyless with the workflow's identity: it needs no key, so the rule "never the
/// development key" holds, and it verifies under a pattern policy on the workflow URI. Refused
/// before any work: a keyless release without a log or with a Rekor v2 log (no signed entry
/// time), an expired token, no token; refused at the first signature, with nothing released: a
/// token from an issuer the CA does not trust, a certificate that has already expired, one for
/// another key; failed (exit 3), with nothing released: the log down, the CA down.
#[test]
fn keyless_stable_release_in_github_actions_from_a_fake_runner_token_endpoint_verifies_and_bad_tokens_are_refused() {
    let repo = Repo::new();
    repo.git(&["tag", "v2.4.1"]);
    let scratch = tempfile::tempdir().unwrap();
    let log = TestLog::start(scratch.path());
    let issuer = Issuer::start();
    let fulcio = Fulcio::start(&issuer.url, Ca::new());
    let github = |extra: &[&str]| {
        let mut cmd = xtask_cmd();
        cmd.args(["release", "--channel", "stable", "--skip-gates", "--keyless", "--fulcio-url", &fulcio.url])
            .args(extra)
            .arg("--source")
            .arg(repo.path())
            .env_remove("SIGSTORE_ID_TOKEN")
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", format!("{}/github-token?api-version=2.0", issuer.url))
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &issuer.bearer);
        Run::of(cmd.output().unwrap())
    };
    // No log: refused before any work.
    github(&[]).refused(&["a `stable` release needs a transparency log"]);
    let mut cmd = xtask_cmd();
    cmd.args(["release", "--channel", "edge", "--keyless", "--fulcio-url", &fulcio.url, "--source"])
        .arg(repo.path())
        .env("SIGSTORE_ID_TOKEN", issuer.token(SIGNER, 600));
    Run::of(cmd.output().unwrap()).refused(&["a keyless release needs a transparency log", "hint: pass `--rekor-url URL`"]);
    // Nor with a Rekor v2 log: it signs no entry time, so nothing would show when the key was used.
    github(&["--rekor-url", &log.url, "--rekor-api", "v2"])
        .refused(&["a keyless release needs a transparency log that signs its entries' times", "Rekor v2"]);
    // An expired token (from SIGSTORE_ID_TOKEN): refused before any work, naming the variable.
    let mut cmd = xtask_cmd();
    cmd.args(["release", "--channel", "edge", "--keyless", "--fulcio-url", &fulcio.url, "--rekor-url", &log.url, "--source"])
        .arg(repo.path())
        .env("SIGSTORE_ID_TOKEN", issuer.token(SIGNER, -60));
    Run::of(cmd.output().unwrap()).refused(&["the identity token `SIGSTORE_ID_TOKEN` is not usable: it expired at"]);
    assert_eq!((log.size(), *fulcio.issued.lock().unwrap()), (0, 0));

    // The workflow's token, requested from the runner: released, verified by workflow identity.
    github(&["--rekor-url", &log.url]).ok();
    let dir = repo.releases().join("2.4.1-stable");
    let root = trusted_root(&scratch.path().join("trusted_root.json"), &fulcio.ca.der, &log, &fulcio.ct);
    let pattern = r"^https://github\.com/stella-ops/release/\.github/workflows/release\.yml@refs/tags/v";
    let run = verify(&dir, &root, ("--certificate-identity-regexp", pattern), &issuer.url);
    run.ok();
    assert!(run.stdout.contains(&format!("`{WORKFLOW}` from `{}`", issuer.url)), "{}", run.stdout);
    fails_with(
        &verify(&dir, &root, ("--certificate-identity-regexp", r"^https://github\.com/someone/fork/"), &issuer.url),
        &["[FAIL] keyless certificate", &format!("the certificate's identity is `{WORKFLOW}`")],
    );
    if let Some(node) = sigstore_js(scratch.path()) {
        node(&dir, &root, WORKFLOW, &issuer.url).ok();
    }

    // No token at all: refused before any work, naming the ways to give one.
    let mut cmd = xtask_cmd();
    cmd.args(["release", "--channel", "edge", "--keyless", "--fulcio-url", &fulcio.url, "--rekor-url", &log.url, "--source"])
        .arg(repo.path())
        .env_remove("SIGSTORE_ID_TOKEN")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL");
    Run::of(cmd.output().unwrap()).refused(&["keyless signing needs an OIDC identity token", "--identity-token FILE", "id-token: write"]);
    // A token from an issuer the CA does not trust: Fulcio refuses it at the first signature;
    // nothing is released.
    let stranger = Issuer::start();
    let token = scratch.path().join("stranger.jwt");
    fs::write(&token, stranger.token(SIGNER, 600)).unwrap();
    let out = repo.path().join("target/stranger");
    keyless_edge(&repo, &fulcio.url, &token, &log.url, &out, &[]).refused(&[
        "refused to certify the identity of `",
        "(401)",
        &format!("issuer `{}` is not trusted", stranger.url),
    ]);
    assert!(!out.exists());
    // The log down: a keyless signature is only good with its entry, so the release fails
    // (environment, exit 3) rather than queueing what could never be logged in time.
    let down = TcpListener::bind("127.0.0.1:0").unwrap();
    let down_url = format!("http://{}", down.local_addr().unwrap());
    drop(down);
    fs::write(&token, issuer.token(SIGNER, 600)).unwrap();
    let run = keyless_edge(&repo, &fulcio.url, &token, &down_url, &out, &[]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains(&format!("the transparency log `{down_url}` did not take 75 of 75 keyless entries")), "{}", run.stderr);
    assert!(!out.exists());

    // A CA that issues certificates already expired: the first signature is refused, the
    // release fails (exit 1) and leaves nothing behind.
    fulcio.issue(Issue::Expired);
    let out = repo.path().join("target/expired");
    github(&["--rekor-url", &log.url, "--out", out.to_str().unwrap()]).refused(&[
        "the signing certificate is valid from",
        "is outside it",
        "hint: check this machine's clock",
    ]);
    assert!(!out.exists());
    // A CA that certifies another key: refused. A CA that is down: the environment (exit 3).
    fulcio.issue(Issue::OtherKey);
    github(&["--rekor-url", &log.url, "--out", out.to_str().unwrap()]).refused(&["certified another key than the one it was asked to"]);
    fulcio.issue(Issue::Unavailable);
    let run = github(&["--rekor-url", &log.url, "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("/api/v2/signingCert`: answered 503"), "{}", run.stderr);
    assert!(!out.exists());
}

/// Keyless promotion (issue 16, point 2): a keyless edge release (its gates run) is refused by
/// `promote` while the channel store has no identity policy, and under a policy naming another
/// identity; under the store's policy (`trust keyless`, a workflow-style pattern) it goes onto
/// edge, is refused for stable before edge's `min-days`, and after them is proposed for stable
/// by one release key and completed by a second (the two-person rule on the pointer, signed by
/// release keys of the TUF root); the kept manifest (with release.yaml's log entry) is what is
/// checked then. A byte changed in the kept log entry's signed time is refused. A root rotation
/// re-checks the kept keyless release under the policy.
#[test]
fn keyless_edge_release_promotes_to_stable_under_the_stores_identity_policy_and_another_identity_is_refused() {
    use crate::tuf::day;
    let repo = Repo::new();
    let scratch = tempfile::tempdir().unwrap();
    let log = TestLog::start(scratch.path());
    let issuer = Issuer::start();
    let fulcio = Fulcio::start(&issuer.url, Ca::new());
    let token = scratch.path().join("token");
    fs::write(&token, issuer.token(SIGNER, TOKEN_TTL)).unwrap();
    let dir = repo.releases().join("keyless");
    keyless_edge(&repo, &fulcio.url, &token, &log.url, &dir, &[]).ok();
    let root = trusted_root(&scratch.path().join("trusted_root.json"), &fulcio.ca.der, &log, &fulcio.ct);
    // Pointers are signed by release keys of the TUF root: two, for the two-person rule.
    let alice = repo.release_key();
    let bob = crate::tuf::keypair(&repo.path().join("target/keys/bob.key"));
    let (channels, _, _) = crate::tuf::init_trust(&repo, &[&alice, &bob]);
    let d = dir.to_str().unwrap();

    // No policy: refused, saying how to set one.
    repo.xtask(&["promote", d, "--to", "edge", "--now", &day(0.0)]).refused(&[
        "is signed keyless",
        "has no identity policy",
        "hint: `cargo xtask trust keyless --trusted-root FILE",
    ]);
    // A policy naming another identity: refused, naming the certificate's.
    let policy = |identity: (&str, &str)| {
        repo.xtask(&[
            "trust",
            "keyless",
            "--trusted-root",
            root.to_str().unwrap(),
            identity.0,
            identity.1,
            "--certificate-oidc-issuer",
            &issuer.url,
        ])
    };
    policy(("--certificate-identity", "someone-else@stella-ops.test")).ok();
    repo.xtask(&["promote", d, "--to", "edge", "--now", &day(0.0)]).refused(&[
        "does not verify, so it cannot be promoted",
        "the release's certificate is refused",
        &format!("the certificate's identity is `{SIGNER}`, not `someone-else@stella-ops.test`"),
    ]);
    assert!(!channels.join("edge/pointer.json").exists());
    // A bad pattern is refused when the policy is written.
    policy(("--certificate-identity-regexp", "(")).refused(&["`--certificate-identity-regexp`", "not a regular expression"]);

    // Under the store's policy: onto edge, then stable after edge's min-days (7).
    policy(("--certificate-identity-regexp", r"^release-manager@stella-ops\.test$")).ok();
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(channels.join("keyless-policy.json")).unwrap()).unwrap();
    assert_eq!(stored["certificateOidcIssuer"], issuer.url.as_str());
    repo.xtask(&["promote", d, "--to", "edge", "--now", &day(0.0)]).ok();
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(3.0)]).refused(&["takes releases after 7 days", "eligible from"]);
    // The kept manifest carries release.yaml's log entry: a changed signed time is refused.
    let kept = fs::read_dir(channels.join("edge/releases")).unwrap().next().unwrap().unwrap().path();
    let entry = kept.join("attest/tlog/release.yaml.rekor.json");
    let good = fs::read(&entry).unwrap();
    let mut e: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let uuid = e.as_object().unwrap().keys().next().unwrap().clone();
    e[&uuid]["integratedTime"] = (e[&uuid]["integratedTime"].as_i64().unwrap() + 1).into();
    fs::write(&entry, e.to_string()).unwrap();
    repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(7.0)]).refused(&["transparency log: `release.yaml`"]);
    fs::write(&entry, good).unwrap();
    let proposed = repo.xtask(&["promote", "2.4.1", "--to", "stable", "--now", &day(7.0), "--json"]);
    proposed.ok();
    assert_eq!(proposed.json()["promoted"]["pending"], true, "{}", proposed.stdout);
    assert!(!channels.join("stable/pointer.json").exists());
    let bob_key = bob.with_extension("key");
    repo.xtask(&["promote", "--cosign", "--to", "stable", "--key", bob_key.to_str().unwrap(), "--now", &day(7.0)]).ok();
    let pointer: serde_json::Value = serde_json::from_slice(&fs::read(channels.join("stable/pointer.json")).unwrap()).unwrap();
    assert_eq!(pointer["signatures"].as_array().unwrap().len(), 2, "{pointer}");
    let history = repo.xtask(&["history", "--channel", "stable", "--key", alice.to_str().unwrap(), "--json"]);
    history.ok();
    assert_eq!(history.json()["history"]["kept"][0]["version"], "2.4.1", "{}", history.stdout);
    // A root rotation re-checks every kept release: the keyless one (kept by edge and stable)
    // under the store's policy.
    let root_key = repo.path().join("target/keys/root.key");
    let rotated = repo.xtask(&["trust", "rotate", "--root-key", root_key.to_str().unwrap(), "--now", &day(8.0), "--json"]);
    rotated.ok();
    let checked = rotated.json()["rotation"]["checked"].clone();
    let statuses: Vec<&str> = checked.as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["keyless", "keyless"], "{checked}");
}
