//! The channel pointer (spec §1.1, §10), typed: which release a channel names now, as the
//! document signed into a DSSE envelope (payload type [`PAYLOAD_TYPE`]), and the client's state
//! file (the last pointer it accepted per channel).
//!
//! Signing, opening and the client's checks (replay, freeze, equivocation, unmarked downgrade)
//! are `verifier::pointer`'s; these are the bytes they sign and read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Channel, Digest, Version};

/// The DSSE payload type of a pointer.
pub const PAYLOAD_TYPE: &str = "application/vnd.stellaops.channel-pointer.v1+json";
/// The `_type` of a pointer document.
pub const POINTER_TYPE: &str = "https://stella-ops.org/channel-pointer/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pointer {
    #[serde(rename = "_type")]
    pub kind: String,
    pub channel: Channel,
    pub version: Version,
    pub calendar: String,
    /// `sha256:...` of the release's `release.yaml`.
    pub release_yaml: Digest,
    /// 1 for the channel's first pointer, then one more at every move.
    pub sequence: u64,
    /// When it was signed (RFC 3339).
    pub issued: String,
    /// After this time (RFC 3339) clients refuse it.
    pub expires: String,
    /// A deliberate move back to an earlier release.
    pub rollback: bool,
    /// The pointer this one replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// Why the release went onto this channel without its time on the source channel
    /// (`promote --emergency REASON`): shown by clients and `history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Previous {
    pub version: Version,
    pub sequence: u64,
    pub release_yaml: Digest,
}

impl Pointer {
    /// `issued` as a unix time.
    pub fn issued_at(&self) -> Result<i64, String> {
        crate::model::parse_rfc3339(&self.issued)
    }
    /// `expires` as a unix time.
    pub fn expires_at(&self) -> Result<i64, String> {
        crate::model::parse_rfc3339(&self.expires)
    }
}

/// What a client remembers of each channel: the last pointer it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientState {
    #[serde(default)]
    pub channels: BTreeMap<Channel, Seen>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Seen {
    pub sequence: u64,
    pub version: Version,
    pub release_yaml: Digest,
    /// sha256 of the pointer document accepted at this sequence.
    pub pointer: Digest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_say_why_not() {
        let mut p = Pointer {
            kind: POINTER_TYPE.into(),
            channel: Channel::Stable,
            version: "2.4.1".parse().unwrap(),
            calendar: "2027.06".into(),
            release_yaml: Digest::of(b"2.4.1"),
            sequence: 1,
            issued: "2027-06-20T12:00:00Z".into(),
            expires: "2027-07-04T12:00:00Z".into(),
            rollback: false,
            previous: None,
            emergency: None,
        };
        assert_eq!(p.issued_at(), Ok(1_813_492_800));
        assert_eq!(p.expires_at(), Ok(1_813_492_800 + 14 * 86_400));
        p.expires = "2027-07-04".into();
        assert!(p.expires_at().unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn client_state_without_channels_is_empty_and_unknown_keys_are_refused() {
        assert_eq!(serde_json::from_str::<ClientState>("{}").unwrap(), ClientState::default());
        assert_eq!(serde_json::to_string(&ClientState::default()).unwrap(), r#"{"channels":{}}"#);
        assert!(serde_json::from_str::<ClientState>(r#"{"chanels":{}}"#).is_err());
    }
}
