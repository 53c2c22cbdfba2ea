//! Channel pointers: which release a channel names now, as a signed document a client can
//! check offline (spec §1.1, §10).
//!
//! A pointer names the channel, the release's version and calendar tag, the sha256 of its
//! `release.yaml`, a sequence number that grows by one at every move, when it was signed and
//! when it expires. It travels as a DSSE envelope (payload type [`PAYLOAD_TYPE`]) signed with
//! the release key ([`crate::sign`]).
//!
//! What a client refuses, and why:
//! - a sequence lower than the last one it accepted for the channel: an old pointer replayed
//!   (rollback attack);
//! - the same sequence with a different document: two pointers signed for one position;
//! - a pointer past `expires`: a mirror serving a stale view (freeze attack);
//! - a move to an older version without the `rollback` marker.
//!
//! A deliberate rollback is a new pointer (sequence + 1) to an older release with
//! `rollback: true` and `previous` naming what it rolls back from; it is accepted and reported
//! as a rollback.

use std::path::Path;

use serde::Serialize;

use crate::keys::{PublicKey, Signer, SignerError};
use crate::sign::{self, Envelope};
use schema::model::{rfc3339, Channel, Digest, Version};

use crate::ops::{io, OpsError};

/// The pointer document and the client's state file are `schema::pointer`'s.
pub use schema::pointer::*;

/// Signs `pointer` into a DSSE envelope.
pub fn sign(pointer: &Pointer, key: &dyn Signer) -> Result<Envelope, SignerError> {
    let body = serde_json::to_vec(pointer).expect("a pointer serializes");
    sign::sign_envelope(key, PAYLOAD_TYPE, &body)
}

/// The pointer inside an envelope, if `key` signed it and it has the pointer's shape.
pub fn open(env: &Envelope, key: &PublicKey) -> Result<(Pointer, Digest), String> {
    if env.payload_type != PAYLOAD_TYPE {
        return Err(format!("payload type is `{}`, not `{PAYLOAD_TYPE}`", env.payload_type));
    }
    let body = sign::verify_envelope(key, env)?;
    let p: Pointer = serde_json::from_slice(&body).map_err(|e| format!("not a channel pointer: {e}"))?;
    if p.kind != POINTER_TYPE {
        return Err(format!("`_type` is `{}`, not `{POINTER_TYPE}`", p.kind));
    }
    p.issued_at()?;
    p.expires_at()?;
    Ok((p, Digest::of(&body)))
}

pub fn read_envelope(path: &Path) -> Result<Envelope, OpsError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| OpsError::Invalid(format!("`{}`: not a DSSE envelope: {e}", path.display())))
}

/// Reads the client's state file; a missing file is an empty state (a first use).
pub fn load_state(path: &Path) -> Result<ClientState, OpsError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| OpsError::Invalid(format!("`{}`: not a pointer state file: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientState::default()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes the client's state file.
pub fn save_state(state: &ClientState, path: &Path) -> Result<(), OpsError> {
    sign::write_json(path, state).map(|_| ()).map_err(io(path))
}

/// How an accepted pointer relates to what the client saw before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Move {
    /// The first pointer seen for this channel.
    First,
    /// The pointer already accepted (same sequence, same document).
    Unchanged,
    /// A newer pointer, forward (or re-signed for the same release).
    Forward { from: Version },
    /// A signed, deliberate move back.
    Rollback { from: Version, to: Version },
}

/// The outcome of [`check`]: the pointer and how it moves, or every reason it is refused.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<Pointer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub movement: Option<Move>,
    pub problems: Vec<String>,
    /// Accepted, but worth telling the user (support ending soon).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How long before a release's end of support a client starts warning.
pub const SUPPORT_WARNING_DAYS: i64 = 14;

/// The channels whose pointers need the signatures of two release keys.
pub const TWO_PERSON: [Channel; 2] = [Channel::Stable, Channel::Lts];

/// [`check_signed`] with one pinned key (a `stable` or `lts` pointer is so always refused).
pub fn check(env: &Envelope, key: &PublicKey, state: &mut ClientState, now: i64, expect: Option<Channel>) -> Checked {
    check_signed(env, std::slice::from_ref(key), state, now, expect)
}

/// Checks a pointer as a client does, and on success records it in `state`:
/// 1. the envelope's signature with one of the pinned release keys, and the document's shape;
///    for `stable` and `lts`, signatures by two distinct keys of them;
/// 2. the channel, when the client expects one;
/// 3. not expired at `now`;
/// 4. against the last pointer accepted for the channel: a lower sequence is refused; the
///    same sequence must be the same document; a higher one that names an older version must
///    carry the `rollback` marker.
///
/// Every failure is reported, not only the first.
pub fn check_signed(env: &Envelope, keys: &[PublicKey], state: &mut ClientState, now: i64, expect: Option<Channel>) -> Checked {
    // 1.
    let mut opened = Err("no release key given".to_owned());
    for key in keys {
        opened = open(env, key);
        if opened.is_ok() {
            break;
        }
    }
    let (p, doc_digest) = match opened {
        Ok(x) => x,
        Err(e) => {
            return Checked {
                accepted: false,
                pointer: None,
                movement: None,
                problems: vec![format!("signature or shape: {e}")],
                warnings: Vec::new(),
            }
        }
    };
    let mut problems = Vec::new();
    if TWO_PERSON.contains(&p.channel) {
        let mut signers: Vec<String> = keys.iter().filter(|k| sign::verify_envelope(k, env).is_ok()).map(|k| k.key_id()).collect();
        signers.sort();
        signers.dedup();
        if signers.len() < 2 {
            problems.push(format!(
                "a `{}` pointer needs the signatures of two release keys (two-person rule); {} of the {} key(s) given signed it{}",
                p.channel,
                signers.len(),
                keys.len(),
                if keys.len() < 2 { "\n  hint: give both release public keys: `--key A.pub --key B.pub`" } else { "" }
            ));
        }
    }
    // 2.
    if let Some(c) = expect {
        if p.channel != c {
            problems.push(format!("the pointer is for channel `{}`, not `{c}`", p.channel));
        }
    }
    // 3.
    let expires = p.expires_at().unwrap_or(i64::MIN);
    if now >= expires {
        problems.push(format!(
            "expired at {} (now {}): a pointer that is not re-signed in time may be a frozen mirror (freeze attack)",
            p.expires,
            rfc3339(now)
        ));
    }
    // 3b. The support window (spec §1.1): refused after its end, a warning before.
    let mut warnings = Vec::new();
    if let Some(ends) = &p.support_ends {
        match crate::ops::parse_time(ends) {
            Ok(end) if now >= end => {
                problems.push(format!("support for {} on `{}` ended on {ends}: upgrade to a supported release", p.version, p.channel))
            }
            Ok(end) if now >= end - SUPPORT_WARNING_DAYS * 86_400 => {
                warnings.push(format!("support for {} on `{}` ends on {ends} ({} day(s) left)", p.version, p.channel, (end - now) / 86_400))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("`supportEnds`: {e}")),
        }
    }
    // 4.
    let movement = match state.channels.get(&p.channel) {
        None => Move::First,
        Some(seen) if p.sequence < seen.sequence => {
            problems.push(format!(
                "sequence {} is lower than {} already accepted for `{}` ({}): an old pointer replayed (rollback attack)",
                p.sequence, seen.sequence, p.channel, seen.version
            ));
            Move::Unchanged
        }
        Some(seen) if p.sequence == seen.sequence => {
            if seen.pointer != doc_digest {
                problems.push(format!(
                    "sequence {} was already accepted with another document (`{}`): two pointers signed for one position",
                    p.sequence, seen.pointer
                ));
            }
            Move::Unchanged
        }
        Some(seen) if p.version < seen.version => {
            if !p.rollback {
                problems.push(format!("moves `{}` back from {} to {} without the `rollback` marker", p.channel, seen.version, p.version));
            }
            Move::Rollback { from: seen.version, to: p.version }
        }
        Some(seen) if p.rollback => Move::Rollback { from: seen.version, to: p.version },
        Some(seen) => Move::Forward { from: seen.version },
    };
    if !problems.is_empty() {
        return Checked { accepted: false, pointer: Some(p), movement: None, problems, warnings };
    }
    state
        .channels
        .insert(p.channel, Seen { sequence: p.sequence, version: p.version, release_yaml: p.release_yaml.clone(), pointer: doc_digest });
    Checked { accepted: true, pointer: Some(p), movement: Some(movement), problems, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyKind, SigningKey};

    /// A file key cannot fail to sign.
    fn sign(p: &Pointer, key: &SigningKey) -> Envelope {
        super::sign(p, key).unwrap()
    }

    fn pointer(seq: u64, version: &str, rollback: bool, issued: i64) -> Pointer {
        Pointer {
            kind: POINTER_TYPE.into(),
            channel: Channel::Edge,
            version: version.parse().unwrap(),
            calendar: "2027.06".into(),
            release_yaml: Digest::of(version.as_bytes()),
            sequence: seq,
            issued: rfc3339(issued),
            expires: rfc3339(issued + 14 * 86_400),
            rollback,
            previous: None,
            emergency: None,
            support_ends: None,
        }
    }

    #[test]
    fn client_refuses_replay_expiry_equivocation_and_unmarked_downgrade() {
        let key = SigningKey::generate(KeyKind::EcdsaP256);
        let t = 1_813_492_800;
        let mut st = ClientState::default();
        let p1 = sign(&pointer(1, "2.4.1", false, t), &key);
        let p2 = sign(&pointer(2, "2.5.0", false, t + 86_400), &key);
        let c = check(&p1, key.public(), &mut st, t + 10, Some(Channel::Edge));
        assert!(c.accepted && c.movement == Some(Move::First), "{c:?}");
        assert!(check(&p2, key.public(), &mut st, t + 86_401, None).accepted);
        // Replay of sequence 1.
        let c = check(&p1, key.public(), &mut st, t + 86_402, None);
        assert!(!c.accepted && c.problems[0].contains("rollback attack"), "{c:?}");
        // Expired.
        let c = check(&p2, key.public(), &mut st, t + 86_400 + 14 * 86_400, None);
        assert!(!c.accepted && c.problems[0].contains("expired"), "{c:?}");
        // Same sequence, another document.
        let c = check(&sign(&pointer(2, "2.5.1", false, t + 86_400), &key), key.public(), &mut st, t + 86_402, None);
        assert!(!c.accepted && c.problems[0].contains("two pointers"), "{c:?}");
        // Older version without the marker.
        let c = check(&sign(&pointer(3, "2.4.1", false, t + 2 * 86_400), &key), key.public(), &mut st, t + 2 * 86_400, None);
        assert!(!c.accepted && c.problems[0].contains("without the `rollback` marker"), "{c:?}");
        // A signed rollback.
        let c = check(&sign(&pointer(3, "2.4.1", true, t + 2 * 86_400), &key), key.public(), &mut st, t + 2 * 86_400, None);
        assert_eq!(c.movement, Some(Move::Rollback { from: "2.5.0".parse().unwrap(), to: "2.4.1".parse().unwrap() }), "{c:?}");
        // Another key.
        let other = SigningKey::generate(KeyKind::EcdsaP256);
        let c = check(&sign(&pointer(4, "2.6.0", false, t + 3 * 86_400), &other), key.public(), &mut st, t + 3 * 86_400, None);
        assert!(!c.accepted && c.problems[0].contains("signature"), "{c:?}");
        // Wrong channel.
        let c = check(&sign(&pointer(4, "2.6.0", false, t + 3 * 86_400), &key), key.public(), &mut st, t + 3 * 86_400, Some(Channel::Lts));
        assert!(!c.accepted && c.problems[0].contains("not `lts`"), "{c:?}");
    }

    #[test]
    fn pointer_json_as_signed() {
        let mut p = pointer(2, "2.5.0", true, 1_813_492_800);
        p.channel = Channel::Stable;
        p.previous = Some(Previous { version: "2.5.1".parse().unwrap(), sequence: 1, release_yaml: Digest::of(b"2.5.1") });
        let body = String::from_utf8(serde_json::to_vec(&p).unwrap()).unwrap();
        insta::assert_snapshot!("pointer_json", body);
        // Without `previous`, the key is absent rather than null.
        let first = serde_json::to_string(&pointer(1, "2.4.1", false, 1_813_492_800)).unwrap();
        assert!(!first.contains("previous"), "{first}");
        assert_eq!(serde_json::from_str::<Pointer>(&body).unwrap(), p);
    }

    #[test]
    fn client_state_records_forward_unchanged_and_marked_rollback() {
        let key = SigningKey::generate(KeyKind::EcdsaP256);
        let t = 1_813_492_800;
        let mut st = ClientState::default();
        let p1 = sign(&pointer(1, "2.4.1", false, t), &key);
        assert_eq!(check(&p1, key.public(), &mut st, t, None).movement, Some(Move::First));
        // The same envelope again: unchanged, state untouched.
        let before = st.clone();
        let c = check(&p1, key.public(), &mut st, t + 1, None);
        assert!(c.accepted && c.movement == Some(Move::Unchanged), "{c:?}");
        assert_eq!(st, before);
        // Forward to a newer version: recorded.
        let c = check(&sign(&pointer(2, "2.5.0", false, t + 10), &key), key.public(), &mut st, t + 11, None);
        assert_eq!(c.movement, Some(Move::Forward { from: "2.4.1".parse().unwrap() }), "{c:?}");
        let seen = &st.channels[&Channel::Edge];
        assert_eq!((seen.sequence, seen.version.to_string()), (2, "2.5.0".to_owned()));
        assert_eq!(seen.release_yaml, Digest::of(b"2.5.0"));
        // A sequence jump is allowed (only lower ones are refused); a marked move to a newer
        // version is still reported as a rollback.
        let c = check(&sign(&pointer(7, "2.6.0", true, t + 20), &key), key.public(), &mut st, t + 21, None);
        assert_eq!(c.movement, Some(Move::Rollback { from: "2.5.0".parse().unwrap(), to: "2.6.0".parse().unwrap() }), "{c:?}");
        assert_eq!(st.channels[&Channel::Edge].sequence, 7);
        // A refused pointer leaves the state as it was, and every problem is listed.
        let before = st.clone();
        let c = check(&sign(&pointer(3, "2.4.1", false, t), &key), key.public(), &mut st, t + 15 * 86_400, Some(Channel::Lts));
        assert!(!c.accepted && c.movement.is_none());
        assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
        assert_eq!(st, before);
        // Expiry is exclusive: refused exactly at `expires`, accepted one second before.
        let p8 = sign(&pointer(8, "2.6.1", false, t), &key);
        let mut st2 = st.clone();
        assert!(!check(&p8, key.public(), &mut st2, t + 14 * 86_400, None).accepted);
        assert!(check(&p8, key.public(), &mut st, t + 14 * 86_400 - 1, None).accepted);
        // Another channel's history is separate.
        let mut lts = pointer(1, "1.0.0", false, t);
        lts.channel = Channel::Lts;
        // (Signed by two release keys: the two-person rule.)
        let second = SigningKey::generate(KeyKind::EcdsaP256);
        let mut env = sign(&lts, &key);
        env.signatures.extend(sign(&lts, &second).signatures);
        let keys = [key.public().clone(), second.public().clone()];
        assert_eq!(check_signed(&env, &keys, &mut st, t, None).movement, Some(Move::First));
        assert_eq!(st.channels.len(), 2);
    }

    #[test]
    fn stable_and_lts_pointers_need_two_release_keys() {
        let (a, b) = (SigningKey::generate(KeyKind::EcdsaP256), SigningKey::generate(KeyKind::Ed25519));
        let t = 1_813_492_800;
        let keys = [a.public().clone(), b.public().clone()];
        for c in TWO_PERSON {
            let mut p = pointer(1, "2.4.1", false, t);
            p.channel = c;
            let one = sign(&p, &a);
            // One signature: refused with both keys pinned, and with one.
            let r = check_signed(&one, &keys, &mut ClientState::default(), t, None);
            assert!(!r.accepted && r.problems[0].contains("1 of the 2 key(s) given signed it"), "{r:?}");
            let r = check(&one, a.public(), &mut ClientState::default(), t, None);
            assert!(!r.accepted && r.problems[0].contains("--key A.pub --key B.pub"), "{r:?}");
            // The same key twice is one person.
            let mut twice = one.clone();
            twice.signatures.push(twice.signatures[0].clone());
            assert!(!check_signed(&twice, &keys, &mut ClientState::default(), t, None).accepted);
            // Two keys: accepted.
            let mut both = one.clone();
            both.signatures.extend(sign(&p, &b).signatures);
            let r = check_signed(&both, &keys, &mut ClientState::default(), t, Some(c));
            assert!(r.accepted, "{r:?}");
        }
        // Edge: one key is enough.
        let r = check_signed(&sign(&pointer(1, "2.4.1", false, t), &a), &keys, &mut ClientState::default(), t, None);
        assert!(r.accepted, "{r:?}");
    }

    #[test]
    fn support_window_warns_before_its_end_and_refuses_after() {
        let key = SigningKey::generate(KeyKind::EcdsaP256);
        let mut p = pointer(1, "2.4.1", false, 1_813_492_800);
        p.support_ends = Some(rfc3339(1_813_492_800 + 90 * 86_400));
        p.expires = rfc3339(1_813_492_800 + 200 * 86_400);
        let env = sign(&p, &key);
        // Long before the end: accepted, no warning.
        let r = check(&env, key.public(), &mut ClientState::default(), 1_813_492_800 + 86_400, None);
        assert!(r.accepted && r.warnings.is_empty(), "{r:?}");
        // Ten days before: accepted, with a warning naming the date.
        let r = check(&env, key.public(), &mut ClientState::default(), 1_813_492_800 + 80 * 86_400, None);
        assert!(r.accepted, "{r:?}");
        assert!(r.warnings[0].contains("ends on 2027-09-18T12:00:00Z (10 day(s) left)"), "{r:?}");
        // After: refused.
        let r = check(&env, key.public(), &mut ClientState::default(), 1_813_492_800 + 91 * 86_400, None);
        assert!(!r.accepted);
        assert!(r.problems.iter().any(|m| m.contains("support for 2.4.1 on `edge` ended on 2027-09-18T12:00:00Z")), "{r:?}");
    }
}
