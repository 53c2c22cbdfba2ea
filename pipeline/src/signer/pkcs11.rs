//! Signing with a key that stays in a PKCS#11 token (an HSM, a smart card, SoftHSM2), through
//! the `cryptoki` crate.
//!
//! In: an RFC 7512 URI, `pkcs11:token=release;object=release-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin`.
//! Path attributes select the token (`token`, `serial`, `manufacturer`, `model`, `slot-id`) and
//! the key (`object` = CKA_LABEL, `id` = CKA_ID, `type` = `private`); query attributes give the
//! module (`module-path`, else `STELLAOPS_PKCS11_MODULE`, else Debian's SoftHSM2 module) and the
//! user PIN (`pin-value`, `pin-source` = a file, else `STELLAOPS_PKCS11_PIN`). Any other
//! attribute is refused, never ignored. Out: a [`Pkcs11Signer`], which implements
//! [`verifier::keys::Signer`].
//!
//! Opening a key:
//! 1. load the module and initialize it; find the one token the path attributes select;
//! 2. open a session and log in as the user (a wrong PIN is named, the PIN never printed);
//! 3. find the one private key named by `object`/`id`; its type must be ECDSA on P-256 or
//!    Ed25519;
//! 4. read the public key from the public-key object of the same label and id (CKA_EC_POINT),
//!    or from the private key's CKA_PUBLIC_KEY_INFO;
//! 5. sign a probe message in the token and verify it with that public key: the pair matches.
//!
//! Signing sends the token only what it signs: for ECDSA the SHA-256 digest we compute
//! (CKM_ECDSA), whose raw `r || s` answer becomes ASN.1 DER (what cosign, openssl and the
//! verifier read); for Ed25519 the message (CKM_EDDSA). A token's ECDSA nonces are its own, so
//! unlike a key file's RFC 6979 signatures these differ from one release to the next.
//!
//! [`generate`] makes a key pair on a token with CKA_SENSITIVE and CKA_TOKEN set and
//! CKA_EXTRACTABLE cleared: the private key can sign and never be read out.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::Digest as _;
use verifier::keys::{KeyKind, PublicKey, Signer, SignerError};

pub const SCHEME: &str = "pkcs11:";
/// The module when neither the URI nor the environment names one: Debian's SoftHSM2.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The PKCS#11 module (a shared library) when the URI has no `module-path`.
pub const MODULE_ENV: &str = "STELLAOPS_PKCS11_MODULE";
/// The user PIN when the URI has no `pin-value` or `pin-source`.
pub const PIN_ENV: &str = "STELLAOPS_PKCS11_PIN";

/// DER of the OID of P-256 (prime256v1), CKA_EC_PARAMS of an ECDSA P-256 key.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID of Ed25519 (1.3.101.112), CKA_EC_PARAMS of an Ed25519 key.
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER of the printable string `edwards25519`, the curve name PKCS#11 3.0 also allows.
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";

const PATH_ATTRS: &[&str] = &["token", "serial", "manufacturer", "model", "slot-id", "object", "id", "type"];
const QUERY_ATTRS: &[&str] = &["module-path", "pin-value", "pin-source"];

/// An RFC 7512 URI naming a private key. `Display` and `Debug` mask the PIN.
#[derive(Clone)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub slot_id: Option<u64>,
    /// CKA_LABEL of the key.
    pub object: Option<String>,
    /// CKA_ID of the key.
    pub id: Option<Vec<u8>>,
    pub module_path: Option<PathBuf>,
    pin: Option<PinFrom>,
    /// The URI as given, `pin-value` masked.
    shown: String,
}

#[derive(Clone)]
enum PinFrom {
    Value(String),
    Source(PathBuf),
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pkcs11Uri").field(&self.shown).finish()
    }
}

/// Every way a token key can fail; each names the URI (PIN masked).
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("`{uri}`: not a usable PKCS#11 URI: {message}")]
    Uri { uri: String, message: String },
    #[error("`{uri}`: the PKCS#11 module `{module}` {problem}")]
    Module { uri: String, module: PathBuf, problem: String },
    #[error("`{uri}`: no user PIN: the URI has no `pin-value` or `pin-source` and `{PIN_ENV}` is not set")]
    NoPin { uri: String },
    #[error("`{uri}`: cannot read the PIN file `{path}`: {source}")]
    PinSource {
        uri: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{uri}`: no token matches (tokens present: {present})")]
    NoToken { uri: String, present: String },
    #[error("`{uri}`: {count} tokens match ({present}); name one")]
    ManyTokens { uri: String, count: usize, present: String },
    #[error("`{uri}`: the token refused the PIN")]
    WrongPin { uri: String },
    #[error("`{uri}`: the token's user PIN is locked")]
    PinLocked { uri: String },
    #[error("`{uri}`: no private key on the token has this {what}")]
    NoKey { uri: String, what: String },
    #[error("`{uri}`: {count} private keys on the token have this {what}; name one (`id=`)")]
    ManyKeys { uri: String, count: usize, what: String },
    #[error("`{uri}`: the key is {kind}; ECDSA P-256 and Ed25519 keys can sign")]
    Unsupported { uri: String, kind: String },
    #[error(
        "`{uri}`: the token has no public key for this private key (no public-key object of the same label and id, no CKA_PUBLIC_KEY_INFO)"
    )]
    NoPublicKey { uri: String },
    #[error("`{uri}`: {message}")]
    Unusable { uri: String, message: String },
    #[error("`{uri}`: the public key on the token does not verify the private key's signature")]
    Mismatch { uri: String },
    #[error("`{uri}`: an object with this label or id already exists on the token; refusing to add a second key")]
    Exists { uri: String },
    #[error("`{uri}`: {what}: {source}")]
    Token {
        uri: String,
        what: &'static str,
        #[source]
        source: CkError,
    },
}

impl Pkcs11Error {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Pkcs11Error::Uri { .. } => format!(
                "write `pkcs11:token=LABEL;object=KEY?module-path=FILE&pin-source=file:PINFILE` (path attributes: {}; query: {})",
                PATH_ATTRS.join(", "),
                QUERY_ATTRS.join(", ")
            ),
            Pkcs11Error::Module { .. } => format!(
                "install the token's module (Debian: `apt-get install softhsm2` for {DEFAULT_MODULE}), or name it with `module-path=` or `{MODULE_ENV}`"
            ),
            Pkcs11Error::NoPin { .. } => format!("set `{PIN_ENV}`, or add `pin-source=file:PATH` to the URI"),
            Pkcs11Error::PinSource { .. } => "check that the file exists and is readable".to_owned(),
            Pkcs11Error::NoToken { .. } | Pkcs11Error::ManyTokens { .. } => {
                "list the tokens with `pkcs11-tool --module MODULE --list-token-slots`; select one with `token=` or `serial=`".to_owned()
            }
            Pkcs11Error::WrongPin { .. } => format!(
                "check `pin-value`, `pin-source` or `{PIN_ENV}`; tokens lock the PIN after a few wrong tries"
            ),
            Pkcs11Error::PinLocked { .. } => "unlock it with the security officer PIN (`softhsm2-util`, `pkcs11-tool --init-pin`)".to_owned(),
            Pkcs11Error::NoKey { .. } | Pkcs11Error::ManyKeys { .. } => {
                "list the keys with `pkcs11-tool --module MODULE --login --list-objects`, or make one with `cargo xtask keys generate --pkcs11 URI`".to_owned()
            }
            Pkcs11Error::Unsupported { .. } => "make an ECDSA P-256 key: `cargo xtask keys generate --pkcs11 URI`".to_owned(),
            Pkcs11Error::NoPublicKey { .. } => "import the public key to the token with the same label and id".to_owned(),
            Pkcs11Error::Mismatch { .. } => "the public-key object of this label and id belongs to another key: fix the token".to_owned(),
            Pkcs11Error::Exists { .. } => "choose another `object=` and `id=`, or use the existing key".to_owned(),
            Pkcs11Error::Unusable { .. } => "check the key's attributes with `pkcs11-tool --list-objects` (CKA_SIGN must be set)".to_owned(),
            Pkcs11Error::Token { .. } => return None,
        })
    }

    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            Pkcs11Error::Module { .. } | Pkcs11Error::PinSource { .. } | Pkcs11Error::Token { .. } => schema::exit::ENVIRONMENT,
            _ => schema::exit::REJECTED,
        }
    }
}

/// RFC 3986 percent-decoding of one attribute value.
fn pct_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .ok_or_else(|| format!("`{s}`: `%` without two hex digits"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("`{s}`: `%{hex}` is not a hex escape"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

impl FromStr for Pkcs11Uri {
    type Err = Pkcs11Error;

    fn from_str(text: &str) -> Result<Pkcs11Uri, Pkcs11Error> {
        let shown = mask_pin(text);
        let err = |message: String| Pkcs11Error::Uri { uri: shown.clone(), message };
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| err(format!("it does not start with `{SCHEME}`")))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut u = Pkcs11Uri {
            token: None,
            serial: None,
            manufacturer: None,
            model: None,
            slot_id: None,
            object: None,
            id: None,
            module_path: None,
            pin: None,
            shown: shown.clone(),
        };
        let mut seen = std::collections::BTreeSet::new();
        let attrs = path.split(';').map(|a| (a, true)).chain(query.split('&').map(|a| (a, false)));
        for (attr, in_path) in attrs.filter(|(a, _)| !a.is_empty()) {
            let (name, raw) = attr.split_once('=').ok_or_else(|| err(format!("`{}` has no `=`", mask_pin(attr))))?;
            let allowed = if in_path { PATH_ATTRS } else { QUERY_ATTRS };
            if !allowed.contains(&name) {
                let place = if in_path { "path" } else { "query" };
                return Err(err(format!("the {place} attribute `{name}` is not supported")));
            }
            if !seen.insert(name) {
                return Err(err(format!("`{name}` is given twice")));
            }
            let bytes = pct_decode(raw).map_err(&err)?;
            let text = || String::from_utf8(bytes.clone()).map_err(|_| err(format!("`{name}` is not UTF-8")));
            match name {
                "token" => u.token = Some(text()?),
                "serial" => u.serial = Some(text()?),
                "manufacturer" => u.manufacturer = Some(text()?),
                "model" => u.model = Some(text()?),
                "slot-id" => u.slot_id = Some(text()?.parse().map_err(|_| err(format!("`slot-id` is not a number: `{raw}`")))?),
                "object" => u.object = Some(text()?),
                "id" => u.id = Some(bytes),
                "type" if raw == "private" => {}
                "type" => return Err(err(format!("`type={raw}`: a signing key is `type=private`"))),
                "module-path" => u.module_path = Some(PathBuf::from(text()?)),
                "pin-value" if seen.contains("pin-source") => return Err(err("both `pin-value` and `pin-source`".to_owned())),
                "pin-source" if seen.contains("pin-value") => return Err(err("both `pin-value` and `pin-source`".to_owned())),
                "pin-value" => u.pin = Some(PinFrom::Value(text()?)),
                "pin-source" => {
                    let t = text()?;
                    let p = t.strip_prefix("file://").or_else(|| t.strip_prefix("file:")).unwrap_or(&t);
                    u.pin = Some(PinFrom::Source(PathBuf::from(p)));
                }
                _ => unreachable!("checked against the attribute lists"),
            }
        }
        if u.object.is_none() && u.id.is_none() {
            return Err(err("it names no key: add `object=LABEL` or `id=%XX...`".to_owned()));
        }
        Ok(u)
    }
}

/// The URI with the value of `pin-value` replaced by `***`.
fn mask_pin(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let q: Vec<String> =
        query.split('&').map(|a| if a.starts_with("pin-value=") { "pin-value=***".to_owned() } else { a.to_owned() }).collect();
    format!("{head}?{}", q.join("&"))
}

impl Pkcs11Uri {
    fn module(&self) -> PathBuf {
        self.module_path
            .clone()
            .or_else(|| std::env::var_os(MODULE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE))
    }

    fn pin(&self) -> Result<AuthPin, Pkcs11Error> {
        let pin = match &self.pin {
            Some(PinFrom::Value(v)) => v.clone(),
            Some(PinFrom::Source(p)) => {
                let text = std::fs::read_to_string(p).map_err(|source| Pkcs11Error::PinSource {
                    uri: self.shown.clone(),
                    path: p.clone(),
                    source,
                })?;
                text.trim_end_matches(['\n', '\r']).to_owned()
            }
            None => std::env::var(PIN_ENV).map_err(|_| Pkcs11Error::NoPin { uri: self.shown.clone() })?,
        };
        Ok(AuthPin::from(pin))
    }

    /// The attributes that find the key: its label and id, when given.
    fn key_template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![Attribute::Class(class)];
        if let Some(l) = &self.object {
            t.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(id) = &self.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }

    fn what(&self) -> String {
        match (&self.object, &self.id) {
            (Some(o), Some(_)) => format!("label `{o}` and id"),
            (Some(o), None) => format!("label `{o}`"),
            _ => "id".to_owned(),
        }
    }

    fn token_err(&self, what: &'static str) -> impl FnOnce(CkError) -> Pkcs11Error + '_ {
        move |source| Pkcs11Error::Token { uri: self.shown.clone(), what, source }
    }
}

/// Steps 1 and 2: the module, the token, a logged-in session.
fn session(uri: &Pkcs11Uri, rw: bool) -> Result<Session, Pkcs11Error> {
    let module = uri.module();
    let module_err = |problem: String| Pkcs11Error::Module { uri: uri.shown.clone(), module: module.clone(), problem };
    if !module.is_file() {
        return Err(module_err("does not exist".to_owned()));
    }
    let ctx = Pkcs11::new(&module).map_err(|e| module_err(format!("cannot be loaded: {e}")))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(module_err(format!("does not initialize: {e}"))),
    }
    let slots = ctx.get_slots_with_token().map_err(uri.token_err("listing the slots"))?;
    let mut present = Vec::new();
    let mut chosen: Vec<Slot> = Vec::new();
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(uri.token_err("reading a token's information"))?;
        if !info.token_initialized() {
            continue;
        }
        let (label, serial) = (info.label().trim_end(), info.serial_number().trim_end());
        present.push(format!("`{label}` serial {serial}"));
        let matches = uri.token.as_deref().is_none_or(|t| t == label)
            && uri.serial.as_deref().is_none_or(|s| s == serial)
            && uri.manufacturer.as_deref().is_none_or(|m| m == info.manufacturer_id().trim_end())
            && uri.model.as_deref().is_none_or(|m| m == info.model().trim_end())
            && uri.slot_id.is_none_or(|id| id == slot.id());
        if matches {
            chosen.push(slot);
        }
    }
    let shown = || if present.is_empty() { "none".to_owned() } else { present.join(", ") };
    let slot = match chosen.as_slice() {
        [one] => *one,
        [] => return Err(Pkcs11Error::NoToken { uri: uri.shown.clone(), present: shown() }),
        many => return Err(Pkcs11Error::ManyTokens { uri: uri.shown.clone(), count: many.len(), present: shown() }),
    };
    let pin = uri.pin()?;
    let session = if rw { ctx.open_rw_session(slot) } else { ctx.open_ro_session(slot) }.map_err(uri.token_err("opening a session"))?;
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
            Err(Pkcs11Error::WrongPin { uri: uri.shown.clone() })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked { uri: uri.shown.clone() }),
        Err(e) => Err(uri.token_err("logging in")(e)),
    }
}

/// A private key in a token, ready to sign. The session is shared behind a lock (PKCS#11
/// sessions are not for concurrent use).
pub struct Pkcs11Signer {
    shown: String,
    kind: KeyKind,
    public: PublicKey,
    key: ObjectHandle,
    session: Mutex<Session>,
}

impl fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Signer").field("uri", &self.shown).field("kind", &self.kind).finish_non_exhaustive()
    }
}

fn one(uri: &Pkcs11Uri, found: Vec<ObjectHandle>) -> Result<ObjectHandle, Pkcs11Error> {
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::NoKey { uri: uri.shown.clone(), what: uri.what() }),
        many => Err(Pkcs11Error::ManyKeys { uri: uri.shown.clone(), count: many.len(), what: uri.what() }),
    }
}

/// The key type from CKA_KEY_TYPE and CKA_EC_PARAMS.
fn kind_of(uri: &Pkcs11Uri, session: &Session, key: ObjectHandle) -> Result<KeyKind, Pkcs11Error> {
    let attrs =
        session.get_attributes(key, &[AttributeType::KeyType, AttributeType::EcParams]).map_err(uri.token_err("reading the key's type"))?;
    let (mut ty, mut params) = (None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => ty = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    let unsupported = |kind: String| Pkcs11Error::Unsupported { uri: uri.shown.clone(), kind };
    match (ty, params.as_deref()) {
        (Some(KeyType::EC), Some(P256_PARAMS)) => Ok(KeyKind::EcdsaP256),
        (Some(KeyType::EC), p) => Err(unsupported(format!("ECDSA on another curve (CKA_EC_PARAMS {})", hex(p.unwrap_or_default())))),
        (Some(KeyType::EC_EDWARDS), Some(ED25519_OID | ED25519_NAME)) => Ok(KeyKind::Ed25519),
        (Some(KeyType::EC_EDWARDS), p) => {
            Err(unsupported(format!("EdDSA on another curve (CKA_EC_PARAMS {})", hex(p.unwrap_or_default()))))
        }
        (Some(t), _) => Err(unsupported(format!("of key type {}", t.to_string().trim_start_matches("CKK_")))),
        (None, _) => Err(unsupported("of no key type".to_owned())),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11); some tokens give the bare
/// point. Either way, the point.
fn unwrap_point(v: &[u8], bare_len: usize) -> &[u8] {
    if v.len() == bare_len + 2 && v[0] == 0x04 && usize::from(v[1]) == bare_len {
        &v[2..]
    } else {
        v
    }
}

/// Step 4: the public key of `key`.
fn public_of(uri: &Pkcs11Uri, session: &Session, key: ObjectHandle, kind: KeyKind) -> Result<PublicKey, Pkcs11Error> {
    let bad = |message: String| Pkcs11Error::Unusable { uri: uri.shown.clone(), message: format!("the token's public key: {message}") };
    let publics = session.find_objects(&uri.key_template(ObjectClass::PUBLIC_KEY)).map_err(uri.token_err("finding the public key"))?;
    if let [p] = publics.as_slice() {
        let attrs = session.get_attributes(*p, &[AttributeType::EcPoint]).map_err(uri.token_err("reading the public key"))?;
        if let Some(Attribute::EcPoint(v)) = attrs.into_iter().next() {
            return match kind {
                KeyKind::EcdsaP256 => PublicKey::from_p256_point(unwrap_point(&v, 65)).map_err(bad),
                KeyKind::Ed25519 => PublicKey::from_ed25519_bytes(unwrap_point(&v, 32)).map_err(bad),
            };
        }
    }
    // PKCS#11 3.0 tokens may keep the SPKI on the private key itself.
    if let Ok(attrs) = session.get_attributes(key, &[AttributeType::PublicKeyInfo]) {
        if let Some(Attribute::PublicKeyInfo(spki)) =
            attrs.into_iter().next().filter(|a| matches!(a, Attribute::PublicKeyInfo(v) if !v.is_empty()))
        {
            let pem = pem_of(&spki);
            return PublicKey::from_pem(&pem).map_err(bad);
        }
    }
    Err(Pkcs11Error::NoPublicKey { uri: uri.shown.clone() })
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

/// One signature in the token (ECDSA: over our SHA-256 digest, answer converted to DER).
fn sign_with(session: &Session, key: ObjectHandle, kind: KeyKind, msg: &[u8]) -> Result<Vec<u8>, String> {
    match kind {
        KeyKind::EcdsaP256 => {
            let digest = sha2::Sha256::digest(msg);
            let raw = session.sign(&Mechanism::Ecdsa, key, &digest).map_err(|e| e.to_string())?;
            let sig = p256::ecdsa::Signature::from_slice(&raw).map_err(|e| format!("the token's signature is not P-256 `r || s`: {e}"))?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
        KeyKind::Ed25519 => {
            session.sign(&Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), key, msg).map_err(|e| e.to_string())
        }
    }
}

impl Pkcs11Signer {
    /// Opens the key (steps 1 to 5 of the module's comment).
    pub fn open(uri: &Pkcs11Uri) -> Result<Pkcs11Signer, Pkcs11Error> {
        let session = session(uri, false)?;
        let found = session.find_objects(&uri.key_template(ObjectClass::PRIVATE_KEY)).map_err(uri.token_err("finding the key"))?;
        let key = one(uri, found)?;
        let kind = kind_of(uri, &session, key)?;
        let public = public_of(uri, &session, key, kind)?;
        let probe = b"stellaops: does the token's key match its public key";
        let sig = sign_with(&session, key, kind, probe).map_err(|message| Pkcs11Error::Unusable {
            uri: uri.shown.clone(),
            message: format!("the token cannot sign with the key: {message}"),
        })?;
        if !public.verify(probe, &sig) {
            return Err(Pkcs11Error::Mismatch { uri: uri.shown.clone() });
        }
        Ok(Pkcs11Signer { shown: uri.shown.clone(), kind, public, key, session: Mutex::new(session) })
    }

    /// Whether the token says the private key can be read out: (CKA_SENSITIVE, CKA_EXTRACTABLE).
    pub fn protection(&self) -> Result<(bool, bool), SignerError> {
        let session = self.session.lock().map_err(|_| self.error("the session lock is poisoned".to_owned()))?;
        let attrs = session
            .get_attributes(self.key, &[AttributeType::Sensitive, AttributeType::Extractable])
            .map_err(|e| self.error(e.to_string()))?;
        let (mut sensitive, mut extractable) = (false, true);
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => sensitive = v,
                Attribute::Extractable(v) => extractable = v,
                _ => {}
            }
        }
        Ok((sensitive, extractable))
    }

    fn error(&self, message: String) -> SignerError {
        SignerError {
            key: self.shown.clone(),
            message,
            hint: Some("check that the token is present and its session alive, then run the command again".to_owned()),
            code: schema::exit::ENVIRONMENT,
        }
    }
}

impl Signer for Pkcs11Signer {
    fn public(&self) -> &PublicKey {
        &self.public
    }

    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        let session = self.session.lock().map_err(|_| self.error("the session lock is poisoned".to_owned()))?;
        sign_with(&session, self.key, self.kind, msg).map_err(|m| self.error(m))
    }
}

/// Makes a key pair of `kind` on the token, labelled `object` with id `id` (the sha256 of the
/// label's first 8 bytes when the URI has none). The private key is a token object, sensitive,
/// not extractable, private; the public key a token object anyone may read. Refuses when an
/// object of that label or id exists. Returns the public key, read back through [`Pkcs11Signer::open`].
pub fn generate(uri: &Pkcs11Uri, kind: KeyKind) -> Result<PublicKey, Pkcs11Error> {
    let label = uri
        .object
        .clone()
        .ok_or_else(|| Pkcs11Error::Uri { uri: uri.shown.clone(), message: "a new key needs a label: add `object=NAME`".to_owned() })?;
    let id = uri.id.clone().unwrap_or_else(|| sha2::Sha256::digest(label.as_bytes())[..8].to_vec());
    let session = session(uri, true)?;
    for t in [vec![Attribute::Label(label.as_bytes().to_vec())], vec![Attribute::Id(id.clone())]] {
        if !session.find_objects(&t).map_err(uri.token_err("looking for existing objects"))?.is_empty() {
            return Err(Pkcs11Error::Exists { uri: uri.shown.clone() });
        }
    }
    let (mechanism, params) = match kind {
        KeyKind::EcdsaP256 => (Mechanism::EccKeyPairGen, P256_PARAMS),
        KeyKind::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, ED25519_OID),
    };
    let common = [Attribute::Token(true), Attribute::Label(label.as_bytes().to_vec()), Attribute::Id(id.clone())];
    let public: Vec<Attribute> =
        common.iter().cloned().chain([Attribute::Private(false), Attribute::Verify(true), Attribute::EcParams(params.to_vec())]).collect();
    let private: Vec<Attribute> = common
        .iter()
        .cloned()
        .chain([Attribute::Private(true), Attribute::Sensitive(true), Attribute::Extractable(false), Attribute::Sign(true)])
        .collect();
    session.generate_key_pair(&mechanism, &public, &private).map_err(|e| match e {
        CkError::Pkcs11(RvError::MechanismInvalid | RvError::CurveNotSupported | RvError::DomainParamsInvalid, _) => {
            Pkcs11Error::Unsupported { uri: uri.shown.clone(), kind: format!("{kind:?}, which this token cannot generate") }
        }
        e => uri.token_err("generating the key pair")(e),
    })?;
    drop(session);
    let mut named = uri.clone();
    named.object = Some(label);
    named.id = Some(id);
    Ok(Pkcs11Signer::open(&named)?.public.clone())
}

/// `pkcs11:` URIs are refused before any module is loaded when they cannot be parsed: the
/// parser's cases.
#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_uri_with_token_object_id_module_and_pin_parses_and_masks_the_pin() {
        let u: Pkcs11Uri = "pkcs11:token=Release%20HSM;object=release;id=%01%a0?module-path=/usr/lib/x.so&pin-value=1234".parse().unwrap();
        assert_eq!(u.token.as_deref(), Some("Release HSM"));
        assert_eq!(u.object.as_deref(), Some("release"));
        assert_eq!(u.id.as_deref(), Some(&[0x01, 0xa0][..]));
        assert_eq!(u.module_path.as_deref(), Some(Path::new("/usr/lib/x.so")));
        assert!(!format!("{u} {u:?}").contains("1234"));
        assert!(u.to_string().contains("pin-value=***"));
    }

    #[test]
    fn unknown_or_repeated_attributes_and_uris_naming_no_key_are_refused() {
        for (uri, needle) in [
            ("pkcs11:token=a;object=k;colour=red", "`colour`"),
            ("pkcs11:token=a;object=k?module-name=softhsm2", "`module-name`"),
            ("pkcs11:token=a;object=k;object=j", "twice"),
            ("pkcs11:token=a", "names no key"),
            ("pkcs11:object=k;type=public", "type=private"),
            ("pkcs11:object=k?pin-value=1&pin-source=/p", "both"),
            ("pkcs11:object=%zz", "hex"),
        ] {
            let e = uri.parse::<Pkcs11Uri>().err().unwrap_or_else(|| panic!("{uri} parsed"));
            assert!(e.to_string().contains(needle), "{uri}: {e}");
            assert!(e.hint().is_some());
        }
        let e = "pkcs11:object=k;x=1?pin-value=secret".parse::<Pkcs11Uri>().err().unwrap();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn pin_source_takes_a_file_uri_or_a_path() {
        for s in ["file:/run/pin", "file:///run/pin", "/run/pin"] {
            let u: Pkcs11Uri = format!("pkcs11:object=k?pin-source={s}").parse().unwrap();
            assert!(matches!(&u.pin, Some(PinFrom::Source(p)) if p == Path::new("/run/pin")), "{s}");
        }
    }
}
