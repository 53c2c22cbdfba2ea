//! Keyless signatures: a short-lived X.509 certificate from a Fulcio CA binds the release's
//! one-time public key to an OIDC identity; `verify` checks it under an identity policy in
//! place of a pinned key.
//!
//! In: a sigstore `trusted_root.json` (the Fulcio CA's certificate chain, the transparency
//! log's key), the leaf certificate of the release (`release.yaml.sigstore.json`'s
//! `verificationMaterial.certificate`), and the policy (`--certificate-identity` or
//! `--certificate-identity-regexp`, `--certificate-oidc-issuer`). Out: the certificate's
//! public key and validity, with which [`crate::release`] checks every signature and requires
//! every log entry's signed time to lie inside that validity.
//!
//! Checked, every failure collected:
//! 1. the leaf is signed by the first certificate of a CA chain of the trusted root whose
//!    subject is the leaf's issuer (ECDSA: P-256 with SHA-256, or P-384 with SHA-384), and that
//!    CA is one (basic constraints); the leaf itself is not a CA;
//! 2. it allows code signing (extended key usage `1.3.6.1.5.5.7.3.3`);
//! 3. one of its subject alternative names (email, URI) is the identity, or matches the
//!    pattern (unanchored, as cosign's `--certificate-identity-regexp`: anchor it with `^...$`);
//! 4. its OIDC issuer extension (`1.3.6.1.4.1.57264.1.8`, a UTF8String; else the deprecated
//!    `1.3.6.1.4.1.57264.1.1`, raw bytes) is the issuer;
//! 5. when the trusted root names certificate transparency logs (`ctlogs`), one of its
//!    embedded signed certificate timestamps is from one of them and verifies ([`check_scts`]).
//!
//! The signing time is checked by [`crate::tlog::check_entry`] (step 6) with the validity
//! returned here: a certificate says nothing about when it was used; the log's signed entry
//! time does.

use std::path::Path;

use base64::Engine as _;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};
use x509_cert::Certificate;

use crate::keys::PublicKey;

/// Fulcio's OIDC issuer extension (v2, DER UTF8String).
pub const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
/// Fulcio's OIDC issuer extension (v1, deprecated: the issuer's bytes as they are).
pub const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// Extended key usage: code signing.
pub const OID_CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
/// ecdsa-with-SHA256 (a P-256 CA, as the tests' and many private Fulcios).
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
/// ecdsa-with-SHA384 (a P-384 CA, as public-good Fulcio's intermediate).
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Which identity the certificate must name.
#[derive(Debug, Clone)]
pub enum Identity {
    /// `--certificate-identity`: one subject alternative name, exactly.
    Exact(String),
    /// `--certificate-identity-regexp`: a pattern one of them matches.
    Pattern(regex::Regex),
}

impl Identity {
    fn matches(&self, san: &str) -> bool {
        match self {
            Identity::Exact(s) => s == san,
            Identity::Pattern(r) => r.is_match(san),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Exact(s) => write!(f, "`{s}`"),
            Identity::Pattern(r) => write!(f, "the pattern `{}`", r.as_str()),
        }
    }
}

/// The identity policy: who must have signed, and which OIDC issuer vouched for them.
#[derive(Debug, Clone)]
pub struct Policy {
    pub identity: Identity,
    pub issuer: String,
}

impl Policy {
    /// From the command line's `--certificate-identity` or `--certificate-identity-regexp`, and
    /// `--certificate-oidc-issuer`; why not, naming the flag.
    pub fn new(identity: Option<&str>, pattern: Option<&str>, issuer: Option<&str>) -> Result<Policy, String> {
        let identity = match (identity, pattern) {
            (Some(s), None) => Identity::Exact(s.to_owned()),
            (None, Some(p)) => Identity::Pattern(
                regex::Regex::new(p).map_err(|e| format!("`--certificate-identity-regexp`: `{p}` is not a regular expression: {e}"))?,
            ),
            (Some(_), Some(_)) => return Err("give `--certificate-identity` or `--certificate-identity-regexp`, not both".into()),
            (None, None) => return Err("a keyless release is verified under an identity policy: `--certificate-identity SUBJECT` or `--certificate-identity-regexp RE`".into()),
        };
        let issuer = issuer.ok_or("a keyless release is verified under an identity policy: `--certificate-oidc-issuer ISSUER`")?.to_owned();
        Ok(Policy { identity, issuer })
    }
}

/// A sigstore trusted root (`trusted_root.json`, protobuf JSON), the parts keyless
/// verification reads: each CA's certificate chain (issuing certificate first), each log's key.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    pub authorities: Vec<Vec<Vec<u8>>>,
    pub logs: Vec<PublicKey>,
    /// The certificate transparency logs (`ctlogs`): when any is named, a certificate must
    /// carry a signed certificate timestamp from one of them (step 5).
    pub ct_logs: Vec<PublicKey>,
}

impl TrustedRoot {
    pub fn load(path: &Path) -> Result<TrustedRoot, TrustedRootError> {
        let bytes = std::fs::read(path).map_err(|source| TrustedRootError::Io { path: path.to_owned(), source })?;
        Self::parse(&bytes).map_err(|message| TrustedRootError::Format { path: path.to_owned(), message })
    }

    pub fn parse(bytes: &[u8]) -> Result<TrustedRoot, String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let raw = |x: &serde_json::Value, what: &str| -> Result<Vec<u8>, String> {
            b64().decode(x["rawBytes"].as_str().ok_or_else(|| format!("{what} has no `rawBytes`"))?).map_err(|e| format!("{what}: {e}"))
        };
        let mut authorities = Vec::new();
        for (i, ca) in v["certificateAuthorities"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            let chain = ca["certChain"]["certificates"]
                .as_array()
                .ok_or_else(|| format!("`certificateAuthorities[{i}]` has no `certChain.certificates`"))?
                .iter()
                .enumerate()
                .map(|(j, c)| raw(c, &format!("`certificateAuthorities[{i}].certChain.certificates[{j}]`")))
                .collect::<Result<Vec<_>, _>>()?;
            if chain.is_empty() {
                return Err(format!("`certificateAuthorities[{i}]` has an empty chain"));
            }
            authorities.push(chain);
        }
        let mut logs = Vec::new();
        for (i, log) in v["tlogs"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            let der = raw(&log["publicKey"], &format!("`tlogs[{i}].publicKey`"))?;
            logs.push(PublicKey::from_spki_der(&der).map_err(|e| format!("`tlogs[{i}].publicKey`: {e}"))?);
        }
        let mut ct_logs = Vec::new();
        for (i, log) in v["ctlogs"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            let der = raw(&log["publicKey"], &format!("`ctlogs[{i}].publicKey`"))?;
            ct_logs.push(PublicKey::from_spki_der(&der).map_err(|e| format!("`ctlogs[{i}].publicKey`: {e}"))?);
        }
        if authorities.is_empty() {
            return Err("it names no certificate authority (`certificateAuthorities`)".into());
        }
        if logs.is_empty() {
            return Err("it names no transparency log (`tlogs`): keyless signatures are checked by their log entries".into());
        }
        Ok(TrustedRoot { authorities, logs, ct_logs })
    }
}

/// Why a trusted root could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TrustedRootError {
    #[error("`{path}`: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}`: not a sigstore trusted root: {message}")]
    Format { path: std::path::PathBuf, message: String },
}

impl TrustedRootError {
    pub fn hint(&self) -> &'static str {
        match self {
            TrustedRootError::Io { .. } => "check that the path exists and is readable",
            TrustedRootError::Format { .. } => {
                "a sigstore `trusted_root.json` naming the Fulcio CA (`certificateAuthorities`) and the log (`tlogs`)"
            }
        }
    }
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            TrustedRootError::Io { .. } => schema::exit::ENVIRONMENT,
            TrustedRootError::Format { .. } => schema::exit::REJECTED,
        }
    }
}

/// A leaf certificate, read: what signing and verification need of it.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub der: Vec<u8>,
    pub key: PublicKey,
    /// Validity, unix seconds (both ends included).
    pub not_before: i64,
    pub not_after: i64,
    /// Subject alternative names: emails and URIs.
    pub identities: Vec<String>,
    /// The OIDC issuer extension, when present.
    pub issuer: Option<String>,
}

impl Leaf {
    pub fn parse(der: &[u8]) -> Result<Leaf, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let tbs = &cert.tbs_certificate;
        let spki = tbs.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
        let key = PublicKey::from_spki_der(&spki)?;
        let secs = |t: x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
        let identities = match tbs.get::<SubjectAltName>() {
            Ok(Some((_, san))) => san
                .0
                .iter()
                .filter_map(|n| match n {
                    GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("its subject alternative names: {e}")),
        };
        let mut issuer = None;
        for ext in tbs.extensions.as_deref().unwrap_or_default() {
            let oid = ext.extn_id.to_string();
            if oid == OID_ISSUER_V2 {
                let s = x509_cert::der::asn1::Utf8StringRef::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| format!("its issuer extension `{OID_ISSUER_V2}` is not a UTF8String: {e}"))?;
                issuer = Some(s.as_str().to_owned());
            } else if oid == OID_ISSUER_V1 && issuer.is_none() {
                issuer = Some(String::from_utf8_lossy(ext.extn_value.as_bytes()).into_owned());
            }
        }
        Ok(Leaf {
            der: der.to_vec(),
            key,
            not_before: secs(tbs.validity.not_before),
            not_after: secs(tbs.validity.not_after),
            identities,
            issuer,
        })
    }

    /// From a PEM certificate (the first of a chain).
    pub fn from_pem(pem: &str) -> Result<Leaf, String> {
        Self::parse(&pem_der(pem)?)
    }

    /// Whether `t` (unix seconds) lies within the validity.
    pub fn valid_at(&self, t: i64) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

/// The DER of the first `CERTIFICATE` block of `pem`.
pub fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    let start = pem.find("-----BEGIN CERTIFICATE-----").ok_or("no PEM certificate")?;
    let end = pem[start..].find("-----END CERTIFICATE-----").ok_or("an unterminated PEM certificate")? + start + 25;
    let (label, der) = pem_rfc7468::decode_vec(&pem.as_bytes()[start..end]).map_err(|e| format!("bad PEM: {e}"))?;
    if label != "CERTIFICATE" {
        return Err(format!("a PEM `{label}`, not a certificate"));
    }
    Ok(der)
}

/// The DER as PEM.
pub fn der_pem(der: &[u8]) -> String {
    pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der).expect("PEM encoding of bytes cannot fail")
}

/// Checks `leaf` (DER) against `root` and `policy` (steps 1-4 of the module's list); every
/// failure, or the certificate read.
pub fn check_leaf(leaf: &[u8], root: &TrustedRoot, policy: &Policy) -> Result<Leaf, Vec<String>> {
    let cert = Certificate::from_der(leaf).map_err(|e| vec![format!("not an X.509 certificate: {e}")])?;
    let read = Leaf::parse(leaf).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    // 1. The chain.
    match issued_by_trusted_ca(&cert, root) {
        Err(e) => problems.push(e),
        // 5. Certificate transparency, when the trusted root names CT logs.
        Ok(issuer_spki) if !root.ct_logs.is_empty() => {
            if let Err(e) = check_scts(&cert, &issuer_spki, &root.ct_logs) {
                problems.push(e);
            }
        }
        Ok(_) => {}
    }
    if matches!(cert.tbs_certificate.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca) {
        problems.push("the certificate is a CA's, not a signer's".to_owned());
    }
    // 2. Code signing.
    let code_signing = x509_cert::der::oid::ObjectIdentifier::new_unwrap(OID_CODE_SIGNING);
    match cert.tbs_certificate.get::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) if eku.0.contains(&code_signing) => {}
        Ok(_) => problems.push(format!("the certificate does not allow code signing (extended key usage `{OID_CODE_SIGNING}`)")),
        Err(e) => problems.push(format!("its extended key usage: {e}")),
    }
    // 3. The identity.
    if !read.identities.iter().any(|s| policy.identity.matches(s)) {
        problems.push(format!(
            "the certificate's identity is {}, not {}",
            if read.identities.is_empty() {
                "none".to_owned()
            } else {
                read.identities.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            },
            policy.identity
        ));
    }
    // 4. The issuer.
    match &read.issuer {
        Some(i) if *i == policy.issuer => {}
        Some(i) => problems.push(format!("the certificate's OIDC issuer is `{i}`, not `{}`", policy.issuer)),
        None => problems.push(format!("the certificate names no OIDC issuer (extension `{OID_ISSUER_V2}`)")),
    }
    if problems.is_empty() {
        Ok(read)
    } else {
        Err(problems)
    }
}

/// Step 1: some CA chain of the trusted root issued `cert`; the issuing CA's public key (SPKI
/// DER).
fn issued_by_trusted_ca(cert: &Certificate, root: &TrustedRoot) -> Result<Vec<u8>, String> {
    let alg = cert.signature_algorithm.oid.to_string();
    if alg != OID_ECDSA_SHA256 && alg != OID_ECDSA_SHA384 {
        return Err(format!(
            "the certificate is signed with algorithm `{alg}`; ecdsa-with-SHA256 (`{OID_ECDSA_SHA256}`) and ecdsa-with-SHA384 (`{OID_ECDSA_SHA384}`) are supported"
        ));
    }
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let sig = cert.signature.as_bytes().ok_or("the certificate's signature is not whole bytes")?;
    let mut seen = Vec::new();
    // Two CAs of one name (a key rotated): any of them may have issued it.
    let mut refused = None;
    for chain in &root.authorities {
        let Ok(ca) = Certificate::from_der(&chain[0]) else { continue };
        if ca.tbs_certificate.subject != cert.tbs_certificate.issuer {
            seen.push(ca.tbs_certificate.subject.to_string());
            continue;
        }
        let name = &ca.tbs_certificate.subject;
        let spki = ca.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
        match ca_signed(&spki, &alg, &tbs, sig) {
            Err(e) => refused = Some(format!("the trusted CA `{name}`: {e}")),
            Ok(false) => {
                refused = Some(format!(
                    "the certificate names the trusted CA `{name}` as its issuer, and that CA's key did not sign it (a chain to another CA)"
                ))
            }
            Ok(true) if !matches!(ca.tbs_certificate.get::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca) => {
                refused = Some(format!("`{name}` of the trusted root is not a CA (basic constraints)"))
            }
            Ok(true) => return Ok(spki),
        }
    }
    Err(refused.unwrap_or_else(|| {
        format!(
            "the certificate was issued by `{}`, which the trusted root does not name (it names {})",
            cert.tbs_certificate.issuer,
            seen.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        )
    }))
}

/// Step 5: the certificate's embedded signed certificate timestamps (RFC 6962 §3.3, extension
/// `1.3.6.1.4.1.11129.2.4.2`): at least one is from a log of `logs` (its log id, the SHA-256
/// of the log's key) and verifies with that log's key over the precertificate entry: the
/// certificate's TBS without the SCT extension, and the SHA-256 of the issuer's key
/// (`issuer_spki`). SCTs from logs the root does not name are ignored, as in sigstore's
/// verifiers.
pub fn check_scts(cert: &Certificate, issuer_spki: &[u8], logs: &[PublicKey]) -> Result<usize, String> {
    use sha2::Digest as _;
    let sct_oid = x509_cert::der::oid::ObjectIdentifier::new_unwrap(OID_SCT_LIST);
    let exts = cert.tbs_certificate.extensions.as_deref().unwrap_or_default();
    let ext = exts.iter().find(|e| e.extn_id == sct_oid).ok_or_else(|| {
        format!("the certificate carries no signed certificate timestamp (extension `{OID_SCT_LIST}`), and the trusted root names CT logs")
    })?;
    let list = x509_cert::der::asn1::OctetString::from_der(ext.extn_value.as_bytes())
        .map_err(|e| format!("its SCT list is not an OCTET STRING: {e}"))?;
    let scts = parse_sct_list(list.as_bytes())?;
    // The precertificate's TBS: this one without the SCT extension.
    let mut tbs = cert.tbs_certificate.clone();
    tbs.extensions = Some(exts.iter().filter(|e| e.extn_id != sct_oid).cloned().collect());
    let tbs = tbs.to_der().map_err(|e| e.to_string())?;
    let issuer_hash = sha2::Sha256::digest(issuer_spki);
    let mut problems = Vec::new();
    let mut valid = 0;
    for (i, sct) in scts.iter().enumerate() {
        let Some(log) = logs.iter().find(|k| sha2::Sha256::digest(k.der()).as_slice() == sct.log_id) else { continue };
        let mut signed = vec![0u8, 0u8]; // v1, certificate_timestamp
        signed.extend_from_slice(&sct.timestamp.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
        signed.extend_from_slice(&issuer_hash);
        signed.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&(sct.extensions.len() as u16).to_be_bytes());
        signed.extend_from_slice(&sct.extensions);
        if log.verify(&signed, &sct.signature) {
            valid += 1;
        } else {
            problems.push(format!("SCT {i} of the CT log {} does not verify", &log.key_id()[..16]));
        }
    }
    if valid > 0 {
        return Ok(valid);
    }
    if problems.is_empty() {
        problems.push(format!("none of its {} SCT(s) is from a CT log of the trusted root", scts.len()));
    }
    Err(format!("certificate transparency: {}", problems.join("; ")))
}

/// The extension holding a certificate's embedded SCTs (RFC 6962).
pub const OID_SCT_LIST: &str = "1.3.6.1.4.1.11129.2.4.2";

/// One signed certificate timestamp (RFC 6962 §3.2), the parts checked.
struct Sct {
    log_id: Vec<u8>,
    timestamp: u64,
    extensions: Vec<u8>,
    /// The DER ECDSA signature (SHA-256).
    signature: Vec<u8>,
}

/// A TLS-encoded `SignedCertificateTimestampList`.
fn parse_sct_list(bytes: &[u8]) -> Result<Vec<Sct>, String> {
    let bad = |why: &str| format!("its SCT list is malformed: {why}");
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>, String> {
        if b.len() < n {
            return Err(bad("truncated"));
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h.to_vec())
    };
    let u16_of = |v: &[u8]| usize::from(u16::from_be_bytes([v[0], v[1]]));
    let mut b = bytes;
    let total = u16_of(&take(&mut b, 2)?);
    if total != b.len() {
        return Err(bad("its length is not the extension's"));
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u16_of(&take(&mut b, 2)?);
        let mut s: &[u8] = &take(&mut b, n)?;
        let version = take(&mut s, 1)?[0];
        if version != 0 {
            return Err(bad(&format!("version {version}, not v1")));
        }
        let log_id = take(&mut s, 32)?;
        let timestamp = u64::from_be_bytes(take(&mut s, 8)?.try_into().map_err(|_| bad("timestamp"))?);
        let n = u16_of(&take(&mut s, 2)?);
        let extensions = take(&mut s, n)?;
        let algs = take(&mut s, 2)?;
        if algs != [4, 3] {
            return Err(bad(&format!("signature algorithm {algs:?}, not ECDSA with SHA-256")));
        }
        let n = u16_of(&take(&mut s, 2)?);
        let signature = take(&mut s, n)?;
        if !s.is_empty() {
            return Err(bad("bytes after an SCT"));
        }
        out.push(Sct { log_id, timestamp, extensions, signature });
    }
    Ok(out)
}

/// Whether the CA key `spki` (DER) made `sig` over `tbs` with `alg` (an ECDSA OID above).
fn ca_signed(spki: &[u8], alg: &str, tbs: &[u8], sig: &[u8]) -> Result<bool, String> {
    if alg == OID_ECDSA_SHA384 {
        use p384::ecdsa::signature::Verifier as _;
        use p384::pkcs8::DecodePublicKey as _;
        let key =
            p384::ecdsa::VerifyingKey::from_public_key_der(spki).map_err(|e| format!("not a P-384 key for ecdsa-with-SHA384: {e}"))?;
        return Ok(p384::ecdsa::Signature::from_der(sig).is_ok_and(|s| key.verify(tbs, &s).is_ok()));
    }
    Ok(PublicKey::from_spki_der(spki)?.verify(tbs, sig))
}

/// The leaf certificate a sigstore bundle carries (v0.3 `certificate`, or the first of a
/// v0.1/v0.2 `x509CertificateChain`), if any.
pub fn bundle_certificate(bundle: &serde_json::Value) -> Option<Result<Vec<u8>, String>> {
    let m = &bundle["verificationMaterial"];
    let raw = m["certificate"]["rawBytes"].as_str().or_else(|| m["x509CertificateChain"]["certificates"][0]["rawBytes"].as_str())?;
    Some(b64().decode(raw).map_err(|e| format!("the bundle's certificate is not base64: {e}")))
}

/// What a release must be signed by: a key obtained out of band, or (keyless) a certificate
/// from a CA of a trusted root naming an identity the policy accepts.
#[derive(Debug, Clone, Copy)]
pub enum Anchor<'a> {
    Key(&'a PublicKey),
    Identity { root: &'a TrustedRoot, policy: &'a Policy },
}

/// The certificate of a release's sigstore bundle (`release.yaml.sigstore.json`, the bytes),
/// checked against `root` and `policy` ([`check_leaf`]): its key and validity, or every reason
/// it is refused, joined.
pub fn certified(bundle: &[u8], root: &TrustedRoot, policy: &Policy) -> Result<Leaf, String> {
    let v: serde_json::Value = serde_json::from_slice(bundle).map_err(|e| format!("not JSON: {e}"))?;
    let der = bundle_certificate(&v)
        .unwrap_or_else(|| Err("the bundle carries no certificate: not a keyless release (verify it with `--key`)".to_owned()))?;
    check_leaf(&der, root, policy).map_err(|problems| problems.join("; "))
}

/// The log key to check a keyless release's entries with: `given` (`--rekor-key`), else the
/// trusted root's log whose key id the release.yaml entry (`entry`, the bytes of
/// `attest/tlog/release.yaml.rekor.json`) names (a root may list several logs; an entry in
/// another log then fails its `logID` check), else the root's first log.
pub fn log_key(root: &TrustedRoot, entry: Option<&[u8]>, given: Option<&PublicKey>) -> Option<PublicKey> {
    let logged_by = entry
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|a| a.as_object().and_then(|o| o.values().next()).and_then(|e| e["logID"].as_str()).map(str::to_owned));
    given
        .cloned()
        .or_else(|| root.logs.iter().find(|k| logged_by.as_deref() == Some(k.key_id().as_str())).cloned())
        .or_else(|| root.logs.first().cloned())
}

/// A public key PEM, or the key of a PEM certificate (what a transparency-log entry of a
/// keyless signature names). Here, not in `keys`, so that `keys` does not depend on this module.
pub fn key_of_pem(pem: &str) -> Result<PublicKey, String> {
    if pem.contains("-----BEGIN CERTIFICATE-----") {
        return Leaf::from_pem(pem).map(|l| l.key);
    }
    PublicKey::from_pem(pem)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey;
    use x509_cert::der::asn1::{BitString, Ia5String, OctetString, UtcTime, Utf8StringRef};
    use x509_cert::der::oid::ObjectIdentifier;
    use x509_cert::ext::Extension;
    use x509_cert::name::Name;
    use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
    use x509_cert::time::{Time, Validity};

    fn ext(oid: &str, value: Vec<u8>) -> Extension {
        Extension { extn_id: ObjectIdentifier::new_unwrap(oid), critical: false, extn_value: OctetString::new(value).unwrap() }
    }

    fn cert(issuer: &Name, key: &p256::ecdsa::SigningKey, subject: Name, spki: &[u8], exts: Vec<Extension>) -> Vec<u8> {
        let sign = |tbs: &[u8]| -> Vec<u8> {
            let sig: p256::ecdsa::DerSignature = key.sign(tbs);
            sig.as_bytes().to_vec()
        };
        cert_by(issuer, OID_ECDSA_SHA256, &sign, subject, spki, exts)
    }

    fn cert_by(issuer: &Name, oid: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>, subject: Name, spki: &[u8], exts: Vec<Extension>) -> Vec<u8> {
        let alg = AlgorithmIdentifierOwned { oid: ObjectIdentifier::new_unwrap(oid), parameters: None };
        let t = |s: u64| Time::UtcTime(UtcTime::from_unix_duration(std::time::Duration::from_secs(s)).unwrap());
        let tbs = x509_cert::TbsCertificate {
            version: x509_cert::Version::V3,
            serial_number: x509_cert::serial_number::SerialNumber::new(&[1]).unwrap(),
            signature: alg.clone(),
            issuer: issuer.clone(),
            validity: Validity { not_before: t(1_800_000_000), not_after: t(1_800_000_600) },
            subject,
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki).unwrap(),
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(exts),
        };
        let sig = sign(&tbs.to_der().unwrap());
        Certificate { tbs_certificate: tbs, signature_algorithm: alg, signature: BitString::from_bytes(&sig).unwrap() }.to_der().unwrap()
    }

    struct Fixture {
        ca_key: p256::ecdsa::SigningKey,
        ca_name: Name,
        root: TrustedRoot,
        leaf_spki: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let ca_key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let ca_name: Name = "CN=unit fulcio".parse().unwrap();
        let ca_spki = ca_key.verifying_key().to_public_key_der().unwrap();
        let bc = x509_cert::ext::pkix::BasicConstraints { ca: true, path_len_constraint: None }.to_der().unwrap();
        let ca = cert(&ca_name, &ca_key, ca_name.clone(), ca_spki.as_bytes(), vec![ext("2.5.29.19", bc)]);
        let log = crate::keys::SigningKey::generate(crate::keys::KeyKind::EcdsaP256).public().clone();
        let leaf_key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let leaf_spki = leaf_key.verifying_key().to_public_key_der().unwrap().as_bytes().to_vec();
        Fixture { ca_key, ca_name, root: TrustedRoot { authorities: vec![vec![ca]], logs: vec![log], ct_logs: vec![] }, leaf_spki }
    }

    /// Fulcio's extensions, with `eku` or not, for `who` from `issuer`.
    fn fulcio_exts(who: &str, issuer: &str, eku: bool) -> Vec<Extension> {
        let san = x509_cert::ext::pkix::SubjectAltName(vec![GeneralName::Rfc822Name(Ia5String::new(who).unwrap())]);
        let mut v =
            vec![ext("2.5.29.17", san.to_der().unwrap()), ext(OID_ISSUER_V2, Utf8StringRef::new(issuer).unwrap().to_der().unwrap())];
        if eku {
            let e = ExtendedKeyUsage(vec![ObjectIdentifier::new_unwrap(OID_CODE_SIGNING)]);
            v.push(ext("2.5.29.37", e.to_der().unwrap()));
        }
        v
    }

    fn policy(who: &str) -> Policy {
        Policy::new(Some(who), None, Some("https://issuer.test")).unwrap()
    }

    #[test]
    fn a_leaf_is_checked_for_chain_identity_issuer_and_code_signing_and_every_failure_is_reported() {
        let f = fixture();
        let good = cert(&f.ca_name, &f.ca_key, Name::default(), &f.leaf_spki, fulcio_exts("a@test", "https://issuer.test", true));
        let leaf = check_leaf(&good, &f.root, &policy("a@test")).unwrap();
        assert_eq!((leaf.identities.clone(), leaf.issuer.as_deref()), (vec!["a@test".to_owned()], Some("https://issuer.test")));
        assert_eq!(leaf.key.der(), f.leaf_spki.as_slice());
        assert!(leaf.valid_at(1_800_000_000) && leaf.valid_at(1_800_000_600) && !leaf.valid_at(1_800_000_601));
        // A pattern, unanchored as cosign's.
        check_leaf(&good, &f.root, &Policy::new(None, Some(r"@test$"), Some("https://issuer.test")).unwrap()).unwrap();
        assert!(Policy::new(None, Some("("), Some("x")).unwrap_err().contains("not a regular expression"));
        assert!(Policy::new(Some("a"), None, None).unwrap_err().contains("--certificate-oidc-issuer"));

        // No code signing, another subject, another issuer: all three said at once.
        let bad = cert(&f.ca_name, &f.ca_key, Name::default(), &f.leaf_spki, fulcio_exts("b@test", "https://other.test", false));
        let problems = check_leaf(&bad, &f.root, &policy("a@test")).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("does not allow code signing"), "{problems:?}");
        assert!(problems[1].contains("identity is `b@test`, not `a@test`"), "{problems:?}");
        assert!(problems[2].contains("OIDC issuer is `https://other.test`, not `https://issuer.test`"), "{problems:?}");

        // Signed by another key under the CA's name; issued by a CA the root does not name.
        let other = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let forged = cert(&f.ca_name, &other, Name::default(), &f.leaf_spki, fulcio_exts("a@test", "https://issuer.test", true));
        assert!(check_leaf(&forged, &f.root, &policy("a@test")).unwrap_err()[0].contains("a chain to another CA"));
        let stranger: Name = "CN=somewhere else".parse().unwrap();
        let foreign = cert(&stranger, &other, Name::default(), &f.leaf_spki, fulcio_exts("a@test", "https://issuer.test", true));
        assert!(check_leaf(&foreign, &f.root, &policy("a@test")).unwrap_err()[0].contains("which the trusted root does not name"));

        // A CA certificate is not a signer's.
        let mut exts = fulcio_exts("a@test", "https://issuer.test", true);
        exts.push(ext("2.5.29.19", x509_cert::ext::pkix::BasicConstraints { ca: true, path_len_constraint: None }.to_der().unwrap()));
        let ca_leaf = cert(&f.ca_name, &f.ca_key, Name::default(), &f.leaf_spki, exts);
        assert!(check_leaf(&ca_leaf, &f.root, &policy("a@test")).unwrap_err()[0].contains("is a CA's"));
    }

    /// An SCT list of one SCT by `ct` over the precertificate entry of `exts` (SCT-less).
    fn sct_ext(f: &Fixture, exts: &[Extension], ct: &p256::ecdsa::SigningKey, tamper: bool) -> Extension {
        use sha2::Digest as _;
        // The TBS as `cert` builds it, without the SCT extension.
        let probe = cert(&f.ca_name, &f.ca_key, Name::default(), &f.leaf_spki, exts.to_vec());
        let tbs = Certificate::from_der(&probe).unwrap().tbs_certificate.to_der().unwrap();
        let ca_spki = f.ca_key.verifying_key().to_public_key_der().unwrap();
        let mut signed = vec![0u8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
        signed.extend_from_slice(&sha2::Sha256::digest(ca_spki.as_bytes()));
        signed.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&[0, 0]);
        let der: p256::ecdsa::DerSignature = ct.sign(&signed);
        let mut sig = der.as_bytes().to_vec();
        if tamper {
            let n = sig.len();
            sig[n - 1] ^= 1;
        }
        let mut sct = vec![0u8];
        sct.extend_from_slice(&sha2::Sha256::digest(ct.verifying_key().to_public_key_der().unwrap().as_bytes()));
        sct.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 4, 3]);
        sct.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        sct.extend_from_slice(&sig);
        let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&(sct.len() as u16).to_be_bytes());
        list.extend_from_slice(&sct);
        ext(OID_SCT_LIST, OctetString::new(list).unwrap().to_der().unwrap())
    }

    #[test]
    fn with_ct_logs_in_the_root_a_leaf_needs_a_verifying_sct_from_one_of_them() {
        let mut f = fixture();
        let ct = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        f.root.ct_logs = vec![PublicKey::from_spki_der(ct.verifying_key().to_public_key_der().unwrap().as_bytes()).unwrap()];
        let exts = fulcio_exts("a@test", "https://issuer.test", true);
        let with = |sct: Extension| {
            let mut e = exts.clone();
            e.push(sct);
            cert(&f.ca_name, &f.ca_key, Name::default(), &f.leaf_spki, e)
        };
        check_leaf(&with(sct_ext(&f, &exts, &ct, false)), &f.root, &policy("a@test")).unwrap();
        let refused = |leaf: &[u8], says: &str| {
            let p = check_leaf(leaf, &f.root, &policy("a@test")).unwrap_err();
            assert!(p.iter().any(|m| m.contains(says)), "`{says}` not in {p:?}");
        };
        refused(&with(sct_ext(&f, &exts, &ct, true)), "does not verify");
        let other = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        refused(&with(sct_ext(&f, &exts, &other, false)), "none of its 1 SCT(s) is from a CT log of the trusted root");
        refused(&cert(&f.ca_name, &f.ca_key, Name::default(), &f.leaf_spki, exts.clone()), "carries no signed certificate timestamp");
        refused(&with(ext(OID_SCT_LIST, OctetString::new(vec![0, 9, 0]).unwrap().to_der().unwrap())), "SCT list is malformed");
        // Without CT logs in the root, none is needed.
        f.root.ct_logs.clear();
        check_leaf(&cert(&f.ca_name, &f.ca_key, Name::default(), &f.leaf_spki, exts.clone()), &f.root, &policy("a@test")).unwrap();
    }

    /// Public-good Fulcio's intermediate is a P-384 CA signing with ecdsa-with-SHA384.
    #[test]
    fn a_leaf_from_a_p384_ca_verifies_and_one_signed_by_another_p384_key_does_not() {
        use p384::pkcs8::EncodePublicKey as _;
        let f = fixture();
        let ca_key = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let sign_with = |k: &p384::ecdsa::SigningKey| {
            let k = k.clone();
            move |tbs: &[u8]| -> Vec<u8> {
                let sig: p384::ecdsa::DerSignature = k.sign(tbs);
                sig.as_bytes().to_vec()
            }
        };
        let name: Name = "CN=sigstore-intermediate,O=sigstore.dev".parse().unwrap();
        let spki = ca_key.verifying_key().to_public_key_der().unwrap();
        let bc = x509_cert::ext::pkix::BasicConstraints { ca: true, path_len_constraint: Some(0) }.to_der().unwrap();
        let ca = cert_by(&name, OID_ECDSA_SHA384, &sign_with(&ca_key), name.clone(), spki.as_bytes(), vec![ext("2.5.29.19", bc)]);
        let root = TrustedRoot { authorities: vec![vec![ca]], logs: f.root.logs.clone(), ct_logs: vec![] };
        let exts = || fulcio_exts("a@test", "https://issuer.test", true);
        let leaf = cert_by(&name, OID_ECDSA_SHA384, &sign_with(&ca_key), Name::default(), &f.leaf_spki, exts());
        check_leaf(&leaf, &root, &policy("a@test")).unwrap();
        let other = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let forged = cert_by(&name, OID_ECDSA_SHA384, &sign_with(&other), Name::default(), &f.leaf_spki, exts());
        assert!(check_leaf(&forged, &root, &policy("a@test")).unwrap_err()[0].contains("a chain to another CA"));
        // A P-384 CA's name on a leaf that claims ecdsa-with-SHA256: its key is not one for that.
        let confused = cert_by(&name, OID_ECDSA_SHA256, &sign_with(&ca_key), Name::default(), &f.leaf_spki, exts());
        assert!(check_leaf(&confused, &root, &policy("a@test")).unwrap_err()[0].contains("the trusted CA `CN=sigstore-intermediate"));
    }

    #[test]
    fn a_trusted_root_without_a_ca_or_a_log_or_with_a_bad_key_is_refused_naming_the_field() {
        let f = fixture();
        let ca = b64().encode(&f.root.authorities[0][0]);
        let log = b64().encode(f.root.logs[0].der());
        let root = |cas: &str, logs: &str| TrustedRoot::parse(format!(r#"{{"certificateAuthorities":{cas},"tlogs":{logs}}}"#).as_bytes());
        let cas = format!(r#"[{{"certChain":{{"certificates":[{{"rawBytes":"{ca}"}}]}}}}]"#);
        let logs = format!(r#"[{{"publicKey":{{"rawBytes":"{log}"}}}}]"#);
        let parsed = root(&cas, &logs).unwrap();
        assert_eq!((parsed.authorities.len(), parsed.logs[0].key_id()), (1, f.root.logs[0].key_id()));
        assert!(root("[]", &logs).unwrap_err().contains("no certificate authority"));
        assert!(root(&cas, "[]").unwrap_err().contains("no transparency log"));
        assert!(root(&cas, r#"[{"publicKey":{"rawBytes":"AAAA"}}]"#).unwrap_err().contains("`tlogs[0].publicKey`"));
        assert!(root(r#"[{"certChain":{}}]"#, &logs).unwrap_err().contains("`certificateAuthorities[0]` has no `certChain.certificates`"));
    }
}
