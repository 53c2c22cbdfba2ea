//! What the release operations share (spec §1.1, §2.4, §5.2–5.3, §10, §12.3, appendix B):
//! their error ([`OpsError`]), the clock they judge time by ([`Clock`]: the wall clock, or a
//! fixed time given with `--now` / `STELLAOPS_NOW`, for tests and audits), and a signed
//! release read back and checked ([`SignedRelease`]). The client checks built on them are
//! [`crate::pointer`] and [`crate::preflight`]; the channel store (promote, history,
//! rollback) is the engine's `pipeline::channels`; the gates are its `stages::gates`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::keys::PublicKey;
use crate::manifest::{self, ReleaseYaml};
use schema::model::Digest;

/// Why an operation stopped.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A policy said no (too young, gates not passed, wrong channel, a bad pointer...).
    #[error("{0}")]
    Refused(String),
    /// A file does not have the expected shape; the message names the file and field.
    #[error("{0}")]
    Invalid(String),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The environment failed (I/O of a helper, a missing tool); the message names it.
    #[error("{0}")]
    Environment(String),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Signer(#[from] crate::keys::SignerError),
    #[error(transparent)]
    Config(#[from] schema::config::ConfigError),
}

impl OpsError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            OpsError::Refused(_) | OpsError::Invalid(_) | OpsError::Config(_) => schema::exit::REJECTED,
            OpsError::Io { .. } | OpsError::Environment(_) => schema::exit::ENVIRONMENT,
            OpsError::Key(e) => e.exit_code(),
            OpsError::Signer(e) => e.exit_code(),
        }
    }
}

pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OpsError + '_ {
    move |source| OpsError::Io { path: path.to_owned(), source }
}

/// Where "now" comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    Wall,
    /// A fixed unix time (`--now`): for tests and audits.
    Fixed(i64),
}

impl Clock {
    pub fn now(self) -> i64 {
        match self {
            Clock::Fixed(t) => t,
            Clock::Wall => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
        }
    }
}

/// Parses an RFC 3339 time (`2027-06-20T12:00:00Z`) to a unix time.
pub fn parse_time(s: &str) -> Result<i64, String> {
    schema::model::parse_rfc3339(s)
}

/// Parses a duration: a number followed by `s`, `m`, `h` or `d` (`30h`, `2d`, `90m`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a duration: write a number and a unit, `s`, `m`, `h` or `d` (e.g. `30h`, `2d`)");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// The files of a release that operations keep and check: `release.yaml` with its signature
/// and sigstore bundle, the gate record (`gates.json`, `attest/gates.dsse.json`) and, when
/// present, `plan.json` (names the source commit, used to render past templates) and the
/// transparency log's resubmission record (a release whose release.yaml says `pending` is
/// promoted on from a kept copy only with it: [`crate::tlog::promotable`]).
pub const KEPT_FILES: &[&str] = &[
    "release.yaml",
    "release.yaml.sig",
    "release.yaml.sigstore.json",
    "gates.json",
    "attest/gates.dsse.json",
    "plan.json",
    "attest/tlog/resubmitted.dsse.json",
    // A keyless release's proof that it was signed while its certificate was valid.
    "attest/tlog/release.yaml.rekor.json",
];

/// A release's `release.yaml`, read from a release directory (or an unpacked kit, which
/// holds it under `manifest/`), checked against a public key.
#[derive(Debug, Clone)]
pub struct SignedRelease {
    /// The directory holding `release.yaml`.
    pub dir: PathBuf,
    pub bytes: Vec<u8>,
    /// sha256 of `release.yaml`.
    pub digest: Digest,
    pub doc: ReleaseYaml,
}

impl SignedRelease {
    /// Where `release.yaml` is under `dir`: at the top (release directory) or under
    /// `manifest/` (offline kit, spec §3.3).
    pub fn locate(dir: &Path) -> PathBuf {
        if !dir.join("release.yaml").exists() && dir.join("manifest/release.yaml").exists() {
            dir.join("manifest")
        } else {
            dir.to_owned()
        }
    }

    /// Reads and checks, in order, collecting every failure:
    /// 1. `release.yaml.sig` over the file with `key`;
    /// 2. its checksum section;
    /// 3. its shape (spec §6.1).
    pub fn open(dir: &Path, key: &PublicKey) -> Result<SignedRelease, Vec<String>> {
        let dir = Self::locate(dir);
        let path = dir.join("release.yaml");
        let bytes = fs::read(&path).map_err(|e| vec![format!("`{}`: {e}", path.display())])?;
        let mut problems = Vec::new();
        let sig_path = dir.join("release.yaml.sig");
        match fs::read_to_string(&sig_path) {
            Ok(sig) if manifest::verify_blob(key, &bytes, &sig) => {}
            Ok(_) => problems.push(format!("`{}`: does not verify `release.yaml` with key {}", sig_path.display(), short(&key.key_id()))),
            Err(e) => problems.push(format!("`{}`: {e}", sig_path.display())),
        }
        match manifest::checksum(&bytes) {
            Ok((stated, computed)) if stated == computed => {}
            Ok((stated, computed)) => {
                problems.push(format!("`{}`: `checksums.sha256` states `{stated}`, the file hashes to `{computed}`", path.display()))
            }
            Err(e) => problems.push(format!("`{}`: {e}", path.display())),
        }
        let doc = match manifest::parse(&bytes) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("`{}`: {e}", path.display()));
                None
            }
        };
        match doc {
            Some(doc) if problems.is_empty() => Ok(SignedRelease { digest: Digest::of(&bytes), dir, bytes, doc }),
            _ => Err(problems),
        }
    }

    /// `release.version` (typed since parsing; kept a `Result` for its callers).
    pub fn version(&self) -> Result<schema::model::Version, OpsError> {
        Ok(self.doc.release.version)
    }
}

/// The first 16 hex digits of an id, for messages.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(16)]
}

/// Copies `name` from `from` to `to` (both directories) atomically, when it exists.
pub fn copy_kept(from: &Path, to: &Path, name: &str) -> Result<bool, OpsError> {
    let src = from.join(name);
    if !src.exists() {
        return Ok(false);
    }
    let bytes = fs::read(&src).map_err(io(&src))?;
    let dst = to.join(name);
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d).map_err(io(d))?;
    }
    oci::write_atomic(&dst, &bytes).map_err(io(&dst))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse_or_say_why() {
        assert_eq!(parse_duration("30h"), Ok(30 * 3600));
        assert_eq!(parse_duration("2d"), Ok(2 * 86_400));
        assert_eq!(parse_duration("90m"), Ok(5400));
        for bad in ["", "h", "30", "30x", "-3h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(parse_time("2027-06-20T12:00:00Z"), Ok(1_813_492_800));
        assert!(parse_time("2027-06-20").unwrap_err().contains("RFC 3339"));
    }
}
