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

use crate::keys::{PublicKey, SigningKey};
use crate::sign::{self, Envelope};
use schema::model::{rfc3339, Channel, Digest, Version};

use crate::ops::{io, OpsError};

/// The pointer document and the client's state file are `schema::pointer`'s.
pub use schema::pointer::*;

/// Signs `pointer` into a DSSE envelope.
pub fn sign(pointer: &Pointer, key: &SigningKey) -> Envelope {
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
}

/// Checks a pointer as a client does, and on success records it in `state`:
/// 1. the envelope's signature with the pinned key, and the document's shape;
/// 2. the channel, when the client expects one;
/// 3. not expired at `now`;
/// 4. against the last pointer accepted for the channel: a lower sequence is refused; the
///    same sequence must be the same document; a higher one that names an older version must
///    carry the `rollback` marker.
///
/// Every failure is reported, not only the first.
pub fn check(env: &Envelope, key: &PublicKey, state: &mut ClientState, now: i64, expect: Option<Channel>) -> Checked {
    // 1.
    let (p, doc_digest) = match open(env, key) {
        Ok(x) => x,
        Err(e) => return Checked { accepted: false, pointer: None, movement: None, problems: vec![format!("signature or shape: {e}")] },
    };
    let mut problems = Vec::new();
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
        return Checked { accepted: false, pointer: Some(p), movement: None, problems };
    }
    state
        .channels
        .insert(p.channel, Seen { sequence: p.sequence, version: p.version, release_yaml: p.release_yaml.clone(), pointer: doc_digest });
    Checked { accepted: true, pointer: Some(p), movement: Some(movement), problems }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyKind;

    fn pointer(seq: u64, version: &str, rollback: bool, issued: i64) -> Pointer {
        Pointer {
            kind: POINTER_TYPE.into(),
            channel: Channel::Stable,
            version: version.parse().unwrap(),
            calendar: "2027.06".into(),
            release_yaml: Digest::of(version.as_bytes()),
            sequence: seq,
            issued: rfc3339(issued),
            expires: rfc3339(issued + 14 * 86_400),
            rollback,
            previous: None,
            emergency: None,
        }
    }

    #[test]
    fn client_refuses_replay_expiry_equivocation_and_unmarked_downgrade() {
        let key = SigningKey::generate(KeyKind::EcdsaP256);
        let t = 1_813_492_800;
        let mut st = ClientState::default();
        let p1 = sign(&pointer(1, "2.4.1", false, t), &key);
        let p2 = sign(&pointer(2, "2.5.0", false, t + 86_400), &key);
        let c = check(&p1, key.public(), &mut st, t + 10, Some(Channel::Stable));
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
        let seen = &st.channels[&Channel::Stable];
        assert_eq!((seen.sequence, seen.version.to_string()), (2, "2.5.0".to_owned()));
        assert_eq!(seen.release_yaml, Digest::of(b"2.5.0"));
        // A sequence jump is allowed (only lower ones are refused); a marked move to a newer
        // version is still reported as a rollback.
        let c = check(&sign(&pointer(7, "2.6.0", true, t + 20), &key), key.public(), &mut st, t + 21, None);
        assert_eq!(c.movement, Some(Move::Rollback { from: "2.5.0".parse().unwrap(), to: "2.6.0".parse().unwrap() }), "{c:?}");
        assert_eq!(st.channels[&Channel::Stable].sequence, 7);
        // A refused pointer leaves the state as it was, and every problem is listed.
        let before = st.clone();
        let c = check(&sign(&pointer(3, "2.4.1", false, t), &key), key.public(), &mut st, t + 15 * 86_400, Some(Channel::Edge));
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
        assert_eq!(check(&sign(&lts, &key), key.public(), &mut st, t, None).movement, Some(Move::First));
        assert_eq!(st.channels.len(), 2);
    }
}
