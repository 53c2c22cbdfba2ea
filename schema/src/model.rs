//! Newtypes for the values that must not be confused: [`Digest`], [`PinnedRef`],
//! [`Platform`], [`Version`], [`ReleaseVersion`], [`Channel`].
//!
//! Each one is parsed once, at the edge (config files, CLI flags), and carries its invariant
//! from then on: a [`PinnedRef`] cannot be built from a tag, a [`ReleaseVersion`] always has a
//! calendar tag, a [`Digest`] is always `sha256:` and 64 lowercase hex digits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value was refused. The caller adds the file and key it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

/// A content digest: `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Builds a digest from raw sha256 output.
    pub fn from_sha256(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex(bytes)))
    }
    /// The hex part, as used for blob file names.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The sha256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Self::from_sha256(&sha2::Sha256::digest(data))
    }
}

/// Lowercase hex. Written here because it is four lines; a crate for it would add more to
/// review than it saves.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Lowercase or uppercase hex back to bytes; `None` for an odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let Some(h) = s.strip_prefix("sha256:") else {
            return Err(err(format!("`{s}` is not a digest: expected `sha256:` and 64 hex digits")));
        };
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(err(format!("`{s}` is not a digest: expected `sha256:` and 64 lowercase hex digits")));
        }
        Ok(Digest(s.to_owned()))
    }
}
impl TryFrom<String> for Digest {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}
impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registry reference pinned by digest: `host[:port]/path[:tag]@sha256:...`. A tag may be
/// present as a comment of where the digest came from; it is never used to fetch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PinnedRef {
    /// `host[:port]`.
    pub registry: String,
    /// Repository path inside the registry.
    pub repository: String,
    /// A tag kept as a comment of where the digest came from; never used to fetch.
    pub tag: Option<String>,
    pub digest: Digest,
}

impl PinnedRef {
    /// `host[:port]/path`: the full repository name, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl FromStr for PinnedRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let Some((name, digest)) = s.split_once('@') else {
            return Err(err(format!(
                "`{s}` is not pinned by digest: a tag can move; write `NAME@sha256:...` (run `cargo xtask lock` to resolve it once)"
            )));
        };
        let digest: Digest = digest.parse()?;
        let Some((registry, path)) = name.split_once('/') else {
            return Err(err(format!("`{s}` has no registry host: write `HOST/REPOSITORY@sha256:...`")));
        };
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(err(format!("`{s}` has no registry host: write `HOST/REPOSITORY@sha256:...`")));
        }
        // Drop a tag kept as a comment (`repo:tag@sha256:...`).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag.to_owned())),
            None => (path, None),
        };
        let valid = !repository.is_empty()
            && repository
                .split('/')
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
        if !valid {
            return Err(err(format!("`{s}`: repository `{repository}` is not a valid OCI repository name")));
        }
        Ok(PinnedRef { registry: registry.to_owned(), repository: repository.to_owned(), tag, digest })
    }
}
impl TryFrom<String> for PinnedRef {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}
impl From<PinnedRef> for String {
    fn from(r: PinnedRef) -> String {
        r.to_string()
    }
}
impl fmt::Display for PinnedRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(t) => write!(f, "{}/{}:{t}@{}", self.registry, self.repository, self.digest),
            None => write!(f, "{}/{}@{}", self.registry, self.repository, self.digest),
        }
    }
}

/// `linux/amd64` or `linux/arm64`: the platforms this pipeline releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Platform {
    LinuxAmd64,
    LinuxArm64,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::LinuxAmd64, Platform::LinuxArm64];
    pub fn os(self) -> &'static str {
        "linux"
    }
    /// OCI / Go architecture name.
    pub fn arch(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "amd64",
            Platform::LinuxArm64 => "arm64",
        }
    }
    /// Debian architecture name (the same two words for these platforms).
    pub fn deb_arch(self) -> &'static str {
        self.arch()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "linux/amd64",
            Platform::LinuxArm64 => "linux/arm64",
        }
    }
    /// `linux-amd64`: for file and tag names.
    pub fn slug(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "linux-amd64",
            Platform::LinuxArm64 => "linux-arm64",
        }
    }
}
impl FromStr for Platform {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "linux/amd64" => Ok(Platform::LinuxAmd64),
            "linux/arm64" | "linux/arm64/v8" => Ok(Platform::LinuxArm64),
            _ => Err(err(format!("`{s}` is not a supported platform: use `linux/amd64` or `linux/arm64`"))),
        }
    }
}
impl TryFrom<String> for Platform {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}
impl From<Platform> for String {
    fn from(p: Platform) -> String {
        p.as_str().to_owned()
    }
}
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release channel (spec §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Lts,
    Stable,
    Edge,
}
impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Lts, Channel::Stable, Channel::Edge];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Lts => "lts",
            Channel::Stable => "stable",
            Channel::Edge => "edge",
        }
    }
}
impl FromStr for Channel {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "lts" => Ok(Channel::Lts),
            "stable" => Ok(Channel::Stable),
            "edge" => Ok(Channel::Edge),
            _ => Err(err(format!("`{s}` is not a channel: use `lts`, `stable` or `edge`"))),
        }
    }
}
impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A semantic version core `MAJOR.MINOR.PATCH`, no leading zeros, no pre-release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

fn number(part: &str, what: &str, whole: &str) -> Result<u64, ParseError> {
    let ok = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) && (part == "0" || !part.starts_with('0'));
    if !ok {
        return Err(err(format!("`{whole}`: {what} `{part}` is not a number without leading zeros")));
    }
    part.parse().map_err(|_| err(format!("`{whole}`: {what} `{part}` is too large")))
}

impl FromStr for Version {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let parts: Vec<&str> = s.split('.').collect();
        let [major, minor, patch] = parts[..] else {
            return Err(err(format!("`{s}` is not MAJOR.MINOR.PATCH (three numbers, e.g. `2.4.1`)")));
        };
        Ok(Version { major: number(major, "MAJOR", s)?, minor: number(minor, "MINOR", s)?, patch: number(patch, "PATCH", s)? })
    }
}
impl TryFrom<String> for Version {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}
impl From<Version> for String {
    fn from(v: Version) -> String {
        v.to_string()
    }
}
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The calendar tag `YYYY.MM`: UTC year and month of SOURCE_DATE_EPOCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Calendar {
    pub year: u16,
    pub month: u8,
}
impl Calendar {
    /// The UTC year and month of a unix time.
    pub fn from_epoch(epoch: i64) -> Calendar {
        let t = time::OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        Calendar { year: t.year().clamp(0, 9999) as u16, month: u8::from(t.month()) }
    }
}
impl FromStr for Calendar {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || err(format!("calendar tag `{s}` is not YYYY.MM (four-digit year, two-digit month 01-12)"));
        let (y, m) = s.split_once('.').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let month: u8 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Calendar { year: y.parse().map_err(|_| bad())?, month })
    }
}
impl fmt::Display for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}.{:02}", self.year, self.month)
    }
}

/// `MAJOR.MINOR.PATCH (YYYY.MM)` (spec §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReleaseVersion {
    pub version: Version,
    pub calendar: Calendar,
}
impl ReleaseVersion {
    /// The version with the calendar tag of `epoch`.
    pub fn at(version: Version, epoch: i64) -> Self {
        ReleaseVersion { version, calendar: Calendar::from_epoch(epoch) }
    }
}
impl FromStr for ReleaseVersion {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let shape = || err(format!("`{s}` is not a release version: expected `MAJOR.MINOR.PATCH (YYYY.MM)`, e.g. `2.4.1 (2027.06)`"));
        let (v, rest) = s.split_once(" (").ok_or_else(shape)?;
        let cal = rest.strip_suffix(')').ok_or_else(shape)?;
        let version: Version = v.parse().map_err(|e: ParseError| err(format!("{}; {}", shape().0, e.0)))?;
        let calendar: Calendar = cal.parse().map_err(|e: ParseError| err(format!("{}; {}", shape().0, e.0)))?;
        Ok(ReleaseVersion { version, calendar })
    }
}
impl TryFrom<String> for ReleaseVersion {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}
impl From<ReleaseVersion> for String {
    fn from(v: ReleaseVersion) -> String {
        v.to_string()
    }
}
impl fmt::Display for ReleaseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.version, self.calendar)
    }
}

/// RFC 3339 UTC time of a unix timestamp, second precision (`2027-06-20T12:00:00Z`).
/// An RFC 3339 time as a unix time (`--now`, pointer times, release dates).
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("`{s}` is not an RFC 3339 time (e.g. `2027-06-20T12:00:00Z`): {e}"))
}

pub fn rfc3339(epoch: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&fmt).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions_round_trip_and_refuse_short_forms() {
        let v: ReleaseVersion = "2.4.1 (2027.06)".parse().unwrap();
        assert_eq!(v.to_string(), "2.4.1 (2027.06)");
        for bad in ["2.4 (2027.6)", "2.4.1 (2027.6)", "2.4.1", "02.4.1 (2027.06)", "2.4.1 (2027.13)", "2.4.1(2027.06)"] {
            assert!(bad.parse::<ReleaseVersion>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn calendar_is_utc_year_and_month() {
        // 2027-06-30T23:30:00Z is still June in UTC, whatever TZ says.
        assert_eq!(Calendar::from_epoch(1_814_398_200).to_string(), "2027.06");
        assert_eq!(rfc3339(1_814_398_200), "2027-06-30T23:30:00Z");
    }

    #[test]
    fn pinned_refs_refuse_tags() {
        assert!("debian:12".parse::<PinnedRef>().is_err());
        assert!("127.0.0.1:5000/base/busybox:1.36".parse::<PinnedRef>().is_err());
        let d = format!("sha256:{}", "a".repeat(64));
        let r: PinnedRef = format!("127.0.0.1:5000/base/busybox:1.36@{d}").parse().unwrap();
        assert_eq!(r.repository, "base/busybox");
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/base/busybox:1.36@{d}"));
        assert_eq!(r.name(), "127.0.0.1:5000/base/busybox");
    }

    #[test]
    fn pinned_ref_name_is_host_and_path() {
        let d = format!("sha256:{}", "b".repeat(64));
        let r: PinnedRef = format!("registry.stella-ops.org/stellaops/scanner@{d}").parse().unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("registry.stella-ops.org", "stellaops/scanner"));
        assert_eq!(r.name(), "registry.stella-ops.org/stellaops/scanner");
        assert_eq!(format!("{}@{}", r.name(), r.digest), r.to_string());
    }
}

/// The repository, under a release's namespace, that holds the channels' trust repository (TUF
/// metadata and targets as OCI artifacts): no component may take its name.
pub const TRUST_REPOSITORY: &str = "trust";

/// Where a release is published: `host[:port]/namespace`; a component `c` goes to the
/// repository `namespace/c`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RegistryTarget {
    /// `host[:port]`.
    pub host: String,
    /// Repository prefix, without leading or trailing `/`.
    pub namespace: String,
}

impl RegistryTarget {
    /// The repository (path on the registry) of `name`.
    pub fn repository(&self, name: &str) -> String {
        if self.namespace.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.namespace)
        }
    }
    /// A file-name-safe form, for journals.
    pub fn slug(&self) -> String {
        format!("{}/{}", self.host, self.namespace)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect()
    }
}

impl fmt::Display for RegistryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.namespace)
    }
}

impl FromStr for RegistryTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, ns) = s.split_once('/').ok_or_else(|| format!("`{s}` is not `HOST[:PORT]/NAMESPACE`"))?;
        let ns = ns.trim_matches('/');
        let valid_ns =
            ns.split('/').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
        if host.is_empty() || host.contains('@') || !valid_ns {
            return Err(format!("`{s}` is not `HOST[:PORT]/NAMESPACE` (a namespace of lowercase path components)"));
        }
        Ok(RegistryTarget { host: host.to_owned(), namespace: ns.to_owned() })
    }
}
