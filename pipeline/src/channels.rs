//! The channel store: what each channel points at, every pointer it ever signed, and the last
//! `K` release manifests it pointed at (spec §5.3). It is a directory, published as is (a web
//! server or an offline kit serves it read-only to clients):
//!
//! ```text
//! <channels>/<channel>/pointer.json                the current pointer (DSSE envelope)
//! <channels>/<channel>/log/<sequence>.json         every pointer signed, by sequence
//! <channels>/<channel>/releases/<version>-<hex12>/ release.yaml (+ .sig, .sigstore.json),
//!                                                  gates.json, attest/gates.dsse.json, plan.json
//! ```
//!
//! Operations (each signs with the release key, checks everything it reads with its public
//! half, and writes the log entry before the pointer):
//! - [`promote`]: put a release on a channel, if its gates passed, if it spent the source
//!   channel's `[promotion] min-days` there, and (quarterly cadence) if no other LTS line was cut
//!   this quarter; promoting the current release again re-signs its pointer (new expiry);
//! - [`history`]: the kept releases and the log;
//! - [`rollback`]: render a kept release's compose file and chart by digest (from the templates
//!   of its own commit when the repository has it), then sign a pointer back to it, marked
//!   `rollback`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use schema::files::Cadence;
use schema::model::{rfc3339, Channel, Digest, Version};
use verifier::keys::{PublicKey, Signer};
use verifier::sign::Envelope;

use crate::stages::gates;
use verifier::ops::{io, OpsError, SignedRelease, KEPT_FILES};
use verifier::pointer::{self, Pointer, Previous, POINTER_TYPE};

/// A channel store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// One release kept by a channel.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub version: Version,
    pub release_yaml: Digest,
    /// The release's own channel (the one it was cut for).
    pub cut_for: String,
    pub calendar: String,
    pub dir: PathBuf,
    /// The last sequence that pointed at it.
    pub last_sequence: u64,
    pub current: bool,
}

impl Store {
    pub fn new(root: &Path) -> Store {
        Store { root: root.to_owned() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    fn dir(&self, c: Channel) -> PathBuf {
        self.root.join(c.as_str())
    }
    pub fn pointer_path(&self, c: Channel) -> PathBuf {
        self.dir(c).join("pointer.json")
    }
    fn releases(&self, c: Channel) -> PathBuf {
        self.dir(c).join("releases")
    }

    /// Every pointer of the channel, checked: signed by `key`, for this channel, sequences
    /// 1, 2, 3... without a gap; and `pointer.json` is the last one.
    ///
    /// With a trust repository, a pointer may be signed by any release key of any of its root
    /// versions (keys rotate), and by a revoked one only if issued before its revocation.
    pub fn log(&self, c: Channel, key: &PublicKey) -> Result<Vec<Pointer>, OpsError> {
        let trusted = self.trusted(key)?;
        let open = |env: &verifier::sign::Envelope| -> Result<Pointer, String> {
            let mut last = String::from("no trusted key");
            for k in &trusted {
                match pointer::open(env, &k.key) {
                    Ok((p, _)) if k.trusted_at(p.issued_at().unwrap_or(i64::MAX)) => return Ok(p),
                    Ok((p, _)) => {
                        last = format!(
                            "signed by the key {} on {}, after its revocation ({})",
                            k.key.key_id(),
                            p.issued,
                            k.revoked.as_ref().map(|(_, r)| r.as_str()).unwrap_or_default()
                        )
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let dir = self.dir(c).join("log");
        let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
            Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&dir)(e)),
        };
        files.sort();
        let mut out = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let env = pointer::read_envelope(f)?;
            let p = open(&env).map_err(|e| OpsError::Invalid(format!("`{}`: {e}", f.display())))?;
            if p.channel != c || p.sequence != i as u64 + 1 {
                return Err(OpsError::Invalid(format!(
                    "`{}`: expected the pointer of `{c}` with sequence {}, found `{}` sequence {}",
                    f.display(),
                    i + 1,
                    p.channel,
                    p.sequence
                )));
            }
            out.push(p);
        }
        let current = self.pointer_path(c);
        if let Some(last) = out.last() {
            let env = pointer::read_envelope(&current)?;
            let p = open(&env).map_err(|e| OpsError::Invalid(format!("`{}`: {e}", current.display())))?;
            if &p != last {
                return Err(OpsError::Invalid(format!(
                    "`{}` is sequence {}, the log ends at {}: a move was interrupted; re-run it",
                    current.display(),
                    p.sequence,
                    last.sequence
                )));
            }
        }
        Ok(out)
    }

    /// The keys whose signatures this store trusts: `key`, and with a trust repository every
    /// release key of its root versions (with their revocations).
    pub fn trusted(&self, key: &PublicKey) -> Result<Vec<crate::tuf::TrustedKey>, OpsError> {
        let repo = crate::tuf::Repo::of(&self.root);
        let mut keys = if repo.exists() { repo.history_keys()? } else { Vec::new() };
        if !keys.iter().any(|k| k.key.key_id() == key.key_id()) {
            keys.push(crate::tuf::TrustedKey { key: key.clone(), revoked: None });
        }
        Ok(keys)
    }

    /// The releases the channel keeps, most recently pointed at first.
    pub fn kept(&self, c: Channel, log: &[Pointer]) -> Result<Vec<Kept>, OpsError> {
        let dir = self.releases(c);
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&dir)(e)),
        };
        let current = log.last().map(|p| p.release_yaml.clone());
        for e in rd.flatten() {
            let path = e.path().join("release.yaml");
            let Ok(bytes) = fs::read(&path) else { continue };
            let digest = Digest::of(&bytes);
            let doc = verifier::manifest::parse(&bytes).map_err(|m| OpsError::Invalid(format!("`{}`: {m}", path.display())))?;
            let version: Version = doc.release.version;
            let last_sequence = log.iter().rev().find(|p| p.release_yaml == digest).map(|p| p.sequence).unwrap_or(0);
            out.push(Kept {
                version,
                current: current.as_ref() == Some(&digest),
                release_yaml: digest,
                cut_for: doc.release.channel.to_string(),
                calendar: doc.release.calendar,
                dir: e.path(),
                last_sequence,
            });
        }
        out.sort_by_key(|k| std::cmp::Reverse(k.last_sequence));
        Ok(out)
    }

    fn kept_dir(&self, c: Channel, version: &Version, digest: &Digest) -> PathBuf {
        self.releases(c).join(format!("{version}-{}", &digest.hex()[..12]))
    }

    /// Writes a move: the log entry `<sequence>.json` (never over another: that is a move made
    /// meanwhile), then the pointer. Both are written in full under temporary names first, so a
    /// full disk stops the move before anything is visible; what follows needs no space
    /// (renames and a hard link). The move is undone when the returned [`Issued`] is dropped
    /// without [`Issued::keep`]: a later step that fails leaves the channel as it was.
    fn issue(&self, c: Channel, env: &Envelope, sequence: u64) -> Result<Issued, OpsError> {
        let log = self.dir(c).join("log");
        fs::create_dir_all(&log).map_err(io(&log))?;
        let entry = log.join(format!("{sequence:08}.json"));
        let mut bytes = serde_json::to_vec_pretty(env).expect("an envelope serializes");
        bytes.push(b'\n');
        let pointer = self.pointer_path(c);
        // 1. Both files in full, under temporary names beside their final ones.
        let staged_entry = staged(&log, LOG_TMP, &bytes).map_err(io(&entry))?;
        let staged_pointer = staged(&self.dir(c), POINTER_TMP, &bytes).map_err(io(&pointer))?;
        // 2. The current pointer under a second name (a hard link), to put back on undo.
        let previous = self.dir(c).join(PREVIOUS_POINTER);
        let _ = fs::remove_file(&previous);
        let previous = match fs::hard_link(&pointer, &previous) {
            Ok(()) => Some(previous),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&previous)(e)),
        };
        // 3. The log entry, refused over an existing one; then the pointer.
        staged_entry.persist_noclobber(&entry).map_err(|e| {
            if let Some(p) = &previous {
                let _ = fs::remove_file(p);
            }
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                OpsError::Refused(format!(
                    "`{}` exists: another move of `{c}` happened meanwhile; look at `history` and retry",
                    entry.display()
                ))
            } else {
                io(&entry)(e.error)
            }
        })?;
        let issued = Issued { entry, pointer: pointer.clone(), previous, kept: false };
        oci::pause::at("promote:logged");
        staged_pointer.persist(&pointer).map_err(|e| io(&pointer)(e.error))?;
        Ok(issued)
    }

    /// Keeps the `keep` releases most recently pointed at (always the current one): the others
    /// are moved aside (`<channel>/.pruned-<name>`, out of `releases/`), put back if the move
    /// fails later, removed by [`Pruned::keep`].
    fn prune(&self, c: Channel, keep: usize, log: &[Pointer]) -> Result<Pruned, OpsError> {
        let kept = self.kept(c, log)?;
        let mut pruned = Pruned { moved: Vec::new(), versions: Vec::new(), kept: false };
        for k in kept.iter().skip(keep.max(1)).filter(|k| !k.current) {
            let name = k.dir.file_name().and_then(|n| n.to_str()).unwrap_or("release");
            let aside = self.dir(c).join(format!(".pruned-{name}"));
            let _ = fs::remove_dir_all(&aside);
            fs::rename(&k.dir, &aside).map_err(io(&k.dir))?;
            pruned.moved.push((k.dir.clone(), aside));
            pruned.versions.push(k.version);
        }
        Ok(pruned)
    }

    /// Finishes the moves a killed command left half done, and removes its temporary files.
    /// A move writes its log entry, then the pointer: when the log of a channel ends one entry
    /// past `pointer.json` (or there is no pointer yet), that entry (signed and checked like
    /// every other) becomes the pointer. Call it holding the store's lock, before a move.
    pub fn recover(&self, key: &PublicKey) -> Result<Vec<Channel>, OpsError> {
        let mut finished = Vec::new();
        for c in Channel::ALL {
            let log_dir = self.dir(c).join("log");
            oci::dirs::sweep(&log_dir, LOG_TMP).map_err(io(&log_dir))?;
            let dir = self.dir(c);
            oci::dirs::sweep(&dir, POINTER_TMP).map_err(io(&dir))?;
            // A move killed after its pointer was in place, before it was kept: the link to
            // the pointer it replaced is no longer needed.
            let _ = fs::remove_file(dir.join(PREVIOUS_POINTER));
            // Releases a killed move pruned (it pointed already, so it is finished below).
            oci::dirs::sweep(&dir, ".pruned-").map_err(io(&dir))?;
            let releases = self.releases(c);
            oci::dirs::sweep(&releases, KEPT_STAGING).map_err(io(&releases))?;
            let mut files: Vec<PathBuf> = match fs::read_dir(&log_dir) {
                Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&log_dir)(e)),
            };
            files.sort();
            let Some(last) = files.last() else { continue };
            let pointer = self.pointer_path(c);
            let behind = match fs::read(&pointer) {
                Ok(current) => {
                    let last_bytes = fs::read(last).map_err(io(last))?;
                    let before = files.len().checked_sub(2).map(|i| &files[i]);
                    current != last_bytes && before.map(|b| fs::read(b).map_err(io(b))).transpose()?.is_some_and(|b| b == current)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => files.len() == 1,
                Err(e) => return Err(io(&pointer)(e)),
            };
            if !behind {
                continue;
            }
            // Only an entry that checks out (signature, channel, sequence) is put in place.
            let trusted = self.trusted(key)?;
            let env = pointer::read_envelope(last)?;
            let (p, _) = trusted
                .iter()
                .find_map(|k| pointer::open(&env, &k.key).ok())
                .ok_or_else(|| OpsError::Invalid(format!("`{}`: signed by no trusted key", last.display())))?;
            if p.channel != c || p.sequence != files.len() as u64 {
                return Err(OpsError::Invalid(format!(
                    "`{}`: expected the pointer of `{c}` with sequence {}, found `{}` sequence {}",
                    last.display(),
                    files.len(),
                    p.channel,
                    p.sequence
                )));
            }
            let bytes = fs::read(last).map_err(io(last))?;
            oci::write_atomic(&pointer, &bytes).map_err(io(&pointer))?;
            finished.push(c);
        }
        Ok(finished)
    }
}

/// The temporary name of a log entry being written (`<channel>/log/.entry-*`).
const LOG_TMP: &str = ".entry-";
/// The temporary name of a pointer being written (`<channel>/.pointer-*`).
const POINTER_TMP: &str = ".pointer-";
/// The pointer a move in progress replaced, kept (a hard link) to put back if it fails.
const PREVIOUS_POINTER: &str = ".pointer.json.previous";
/// A kept release being copied (`<channel>/releases/.staging-*`).
const KEPT_STAGING: &str = ".staging-";

/// Kept releases a move in progress prunes: put back when dropped unkept (the move failed).
struct Pruned {
    /// (kept directory, where it was moved aside).
    moved: Vec<(PathBuf, PathBuf)>,
    versions: Vec<Version>,
    kept: bool,
}

impl Pruned {
    /// The move is complete: removes what was moved aside; returns the versions pruned.
    fn keep(mut self) -> Vec<Version> {
        self.kept = true;
        for (_, aside) in &self.moved {
            let _ = fs::remove_dir_all(aside);
        }
        std::mem::take(&mut self.versions)
    }
}

impl Drop for Pruned {
    fn drop(&mut self) {
        if !self.kept {
            for (dir, aside) in &self.moved {
                let _ = fs::rename(aside, dir);
            }
        }
    }
}

/// A move written by [`Store::issue`]: undone when dropped (the entry removed, the previous
/// pointer put back; renames and removals only, which a full disk allows) unless kept.
#[must_use = "a move not kept is undone"]
struct Issued {
    entry: PathBuf,
    pointer: PathBuf,
    /// A hard link to the pointer the move replaced; none for a channel's first move.
    previous: Option<PathBuf>,
    kept: bool,
}

impl Issued {
    fn keep(mut self) {
        self.kept = true;
        if let Some(p) = &self.previous {
            let _ = fs::remove_file(p);
        }
    }
}

impl Drop for Issued {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let _ = match &self.previous {
            Some(p) => fs::rename(p, &self.pointer),
            None => fs::remove_file(&self.pointer),
        };
        let _ = fs::remove_file(&self.entry);
    }
}

/// A kept release copied by a move in progress: removed when dropped unkept (the move failed).
struct Placed(Option<PathBuf>);

impl Placed {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// `bytes` in a temporary file in `dir`, synced and readable by all (as pointers are served).
fn staged(dir: &Path, prefix: &str, bytes: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut tmp = tempfile::Builder::new().prefix(prefix).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o644))?;
    Ok(tmp)
}

/// Which release to promote.
#[derive(Debug, Clone)]
pub enum ReleaseRef {
    /// A release directory (or an unpacked kit).
    Dir(PathBuf),
    /// A version kept by the source channel of the promotion.
    Version(Version),
}

#[derive(Debug)]
pub struct Promote<'a> {
    /// Repository root (for `release-trains/`).
    pub root: &'a Path,
    pub store: &'a Store,
    pub release: ReleaseRef,
    pub to: Channel,
    pub key: &'a dyn Signer,
    pub now: i64,
    /// `--emergency REASON`: put the release on `to` without its time on the source channel
    /// (recorded in the pointer).
    pub emergency: Option<String>,
    /// `--vsa FILE`: rebuild verdicts offered for `to`'s `[rebuild-verdict]` gate.
    pub vsa: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Promoted {
    pub pointer: Pointer,
    /// The release was already current: its pointer was re-signed (new expiry).
    pub refreshed: bool,
    /// Where the release came from, and since when it was there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_source_since: Option<String>,
    pub pointer_file: PathBuf,
    pub pruned: Vec<Version>,
    /// The trust repository's new versions, when the store has one (`trust init`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<crate::tuf::Published>,
    /// Two-person rule: the move is proposed (`pointer_file` is the proposal), not made, until
    /// `promote --cosign` by a second release key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

fn days(n: u32) -> i64 {
    i64::from(n) * 86_400
}

/// Finds a kept release of `version` on `channel` (the one pointed at last).
fn find_kept(store: &Store, c: Channel, version: &Version, key: &PublicKey) -> Result<Option<Kept>, OpsError> {
    let log = store.log(c, key)?;
    Ok(store.kept(c, &log)?.into_iter().find(|k| &k.version == version))
}

/// The first day of the quarter after the one holding `t`, and the quarter's name.
fn quarter(t: i64) -> (String, i64) {
    let d = time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let q = (u8::from(d.month()) - 1) / 3;
    let (y, m) = if q == 3 { (d.year() + 1, 1u8) } else { (d.year(), q * 3 + 4) };
    let next = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap_or(time::Month::January), 1)
        .map(|date| date.midnight().assume_utc().unix_timestamp())
        .unwrap_or(t);
    (format!("{} Q{}", d.year(), q + 1), next)
}

/// `[rebuild-verdict]`: one of `req.vsa` is a passing verdict about `release_yaml` by one of
/// the configured rebuilder keys (none of which may be the release key). No emergency skips it.
fn rebuild_gate(
    req: &Promote<'_>,
    gate: &schema::files::RebuildVerdict,
    release_yaml: &Digest,
    release_key: &PublicKey,
) -> Result<(), String> {
    let config = format!("`release-trains/{}.toml` [rebuild-verdict] required-from", req.to);
    let mut keys = Vec::new();
    for k in &gate.required_from {
        let path = req.root.join(k);
        let key = PublicKey::load(&path).map_err(|e| format!("{config}: `{k}`: {e}"))?;
        if key.key_id() == release_key.key_id() {
            return Err(format!("{config}: `{k}` is the release key itself; a rebuild verdict is a second party's"));
        }
        keys.push(key);
    }
    if req.vsa.is_empty() {
        return Err(format!(
            "`{}` takes a release only with a passing rebuild verdict by one of {} ({config})\n  hint: a rebuilder runs `cargo xtask repro --against <release> --release-key <release.pub> --key <rebuilder key> --vsa FILE`; pass it with `--vsa FILE`",
            req.to,
            gate.required_from.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        ));
    }
    let mut why = Vec::new();
    for f in &req.vsa {
        let bytes = std::fs::read(f).map_err(|e| format!("`{}`: {e}", f.display()))?;
        match verifier::vsa::check_any(&bytes, &keys, release_yaml) {
            Ok(_) => return Ok(()),
            Err(e) => why.push(format!("`{}`:\n{}", f.display(), e.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"))),
        }
    }
    Err(format!("no passing rebuild verdict by a key of {config}:\n  {}", why.join("\n  ")))
}

/// `cargo xtask promote`:
/// 1. read `release-trains/` and the release (directory, or the version kept by a channel
///    that promotes to `to`, or by `to` itself);
/// 2. check `release.yaml`'s signature and checksum, and the signed gate record (passed);
/// 3. policy: not older than the channel's current release (that is `rollback`); if the
///    release is on a channel whose `[promotion] to` is `to`, at least `min-days` there
///    (counted from the first pointer of that channel naming it); otherwise only a release cut
///    for `to` itself goes there directly; a quarterly channel takes one new MAJOR.MINOR line
///    per calendar quarter;
/// 4. keep the release's manifest files, sign the pointer (sequence + 1), write log then
///    pointer, prune to the channel's `history-keep`.
pub fn promote(req: &Promote<'_>) -> Result<Promoted, OpsError> {
    let public = req.key.public();
    refuse_dev_key(req.root, req.to, public)?;
    refuse_unlisted_key(req.store, public)?;
    // A move killed part-way is finished first (the caller holds the store's lock).
    req.store.recover(public)?;
    if let Some(reason) = &req.emergency {
        if reason.trim().is_empty() {
            return Err(OpsError::Refused("`--emergency` needs a reason (it is recorded in the pointer)".to_owned()));
        }
    }
    // 1.
    let cfg = schema::config::load(req.root)?;
    let to_train = cfg.train(req.to);
    let sources: Vec<(Channel, u32)> =
        cfg.trains.iter().filter_map(|(c, t)| t.promotion.as_ref().filter(|p| p.to == req.to).map(|p| (*c, p.min_days))).collect();
    let dir = match &req.release {
        ReleaseRef::Dir(d) => d.clone(),
        ReleaseRef::Version(v) => {
            let mut found = None;
            for c in std::iter::once(req.to).chain(sources.iter().map(|(c, _)| *c)) {
                if let Some(k) = find_kept(req.store, c, v, public)? {
                    found = Some(k.dir);
                    break;
                }
            }
            found.ok_or_else(|| {
                let from: Vec<&str> = sources.iter().map(|(c, _)| c.as_str()).collect();
                OpsError::Refused(format!(
                    "no channel that promotes to `{}` ({}) keeps version `{v}` in `{}`\n  hint: `cargo xtask history --channel <channel>` lists what each keeps; or pass the release directory",
                    req.to,
                    if from.is_empty() { "none".to_owned() } else { from.join(", ") },
                    req.store.root().display()
                ))
            })?
        }
    };
    // 2.
    let (rel, signer) = open_release(req.store, &dir, public)
        .map_err(|p| OpsError::Refused(format!("`{}` does not verify, so it cannot be promoted:\n{}", dir.display(), bullet(&p))))?;
    let version = rel.version()?;
    gates::check_record(&rel.dir, &signer, &rel.digest)
        .map_err(|e| OpsError::Refused(format!("`{version}` cannot be promoted to `{}`: {e}", req.to)))?;
    verifier::tlog::promotable(&rel.dir, public, to_train.transparency_log.required)
        .map_err(|e| OpsError::Refused(format!("`{version}` cannot be promoted to `{}`: {e}", req.to)))?;
    if let Some(gate) = &to_train.rebuild_verdict {
        rebuild_gate(req, gate, &rel.digest, public)
            .map_err(|e| OpsError::Refused(format!("`{version}` cannot be promoted to `{}`: {e}", req.to)))?;
    }

    // 3.
    let log = req.store.log(req.to, public)?;
    let current = log.last().cloned();
    let refreshed = current.as_ref().is_some_and(|c| c.release_yaml == rel.digest);
    let (mut from, mut since) = (None, None);
    if !refreshed {
        if let Some(c) = &current {
            if version < c.version {
                return Err(OpsError::Refused(format!(
                    "`{}` points at {}; `{version}` is older\n  hint: moving a channel back is `cargo xtask rollback --channel {} --to {version}`",
                    req.to, c.version, req.to
                )));
            }
        }
        let mut placed = false;
        for (src, min_days) in &sources {
            let src_log = req.store.log(*src, public)?;
            let Some(first) = src_log.iter().find(|p| p.release_yaml == rel.digest) else { continue };
            let on = first.issued_at().map_err(OpsError::Invalid)?;
            let eligible = on + days(*min_days);
            if req.now < eligible && req.emergency.is_none() {
                return Err(OpsError::Refused(format!(
                    "`{version}` has been on `{src}` since {} ({} day(s)); `{}` takes releases after {min_days} days there (`release-trains/{src}.toml` [promotion] min-days): eligible from {}\n  hint: a fix that cannot wait is `--emergency REASON` (recorded in the pointer)",
                    first.issued,
                    (req.now - on).max(0) / 86_400,
                    req.to,
                    rfc3339(eligible)
                )));
            }
            (from, since, placed) = (Some(*src), Some(first.issued.clone()), true);
            break;
        }
        // A channel that others promote to takes releases only from them (spec §2.4: stable
        // after its week on edge, lts from stable); an entry channel (no source) takes releases
        // cut for it or for any channel downstream of it.
        if !placed && req.emergency.is_none() {
            if !sources.is_empty() {
                let from: Vec<String> = sources.iter().map(|(c, _)| format!("`{c}`")).collect();
                return Err(OpsError::Refused(format!(
                    "`{version}` is not on {}, the channel(s) that promote to `{}`: a release reaches `{}` only from there\n  hint: put it there first: `cargo xtask promote {} --to {}`; a fix that cannot wait is `--emergency REASON`",
                    from.join(" or "),
                    req.to,
                    req.to,
                    dir.display(),
                    sources[0].0
                )));
            }
            let cut_for = rel.doc.release.channel;
            if cut_for != req.to && !downstream(&cfg, req.to).contains(&cut_for) {
                return Err(OpsError::Refused(format!(
                    "`{version}` was cut for `{cut_for}`, which `{}` does not promote to\n  hint: promote it onto a channel that leads to `{cut_for}`",
                    req.to
                )));
            }
        }
        if to_train.cadence == Cadence::Quarterly {
            if let Some(c) = &current {
                if (c.version.major, c.version.minor) != (version.major, version.minor) {
                    // When the current line was cut: its first pointer after another line's.
                    let line_start = log
                        .iter()
                        .rev()
                        .take_while(|p| (p.version.major, p.version.minor) == (c.version.major, c.version.minor))
                        .last()
                        .map(|p| p.issued.clone())
                        .unwrap_or_else(|| c.issued.clone());
                    let started = verifier::ops::parse_time(&line_start).map_err(OpsError::Invalid)?;
                    let (q_then, _) = quarter(started);
                    let (q_now, next) = quarter(req.now);
                    if q_then == q_now {
                        return Err(OpsError::Refused(format!(
                            "`{}` is quarterly: line {}.{} was cut on {line_start}, in {q_now}; a new line ({}.{}) may be cut from {}\n  hint: patches of {}.{} may go any time",
                            req.to,
                            c.version.major,
                            c.version.minor,
                            version.major,
                            version.minor,
                            rfc3339(next),
                            c.version.major,
                            c.version.minor
                        )));
                    }
                }
            }
        }
    }

    // 4.
    let kept = req.store.kept_dir(req.to, &version, &rel.digest);
    // The kept copy made by this move is taken back if the move fails (dropped unkept).
    let mut placed = Placed(None);
    if !kept.join("release.yaml").exists() {
        let staging = kept.with_file_name(format!("{KEPT_STAGING}{}", kept.file_name().and_then(|n| n.to_str()).unwrap_or("release")));
        let _ = fs::remove_dir_all(&staging);
        let copied = (|| {
            fs::create_dir_all(&staging).map_err(io(&staging))?;
            for f in KEPT_FILES {
                verifier::ops::copy_kept(&rel.dir, &staging, f)?;
            }
            oci::pause::at("promote:kept-copied");
            fs::rename(&staging, &kept).map_err(io(&kept))
        })();
        if copied.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        copied?;
        placed = Placed(Some(kept.clone()));
    }
    let mut p = next_pointer(req.to, &rel, version, current.as_ref(), req.now, to_train, false);
    p.emergency = req.emergency.clone();
    let env = pointer::sign(&p, req.key)?;
    if let Some(proposal) = propose_move(req.store, &p, &env, &log, req.key, req.now)? {
        placed.keep();
        return Ok(Promoted {
            pointer: p,
            refreshed,
            from,
            on_source_since: since,
            pointer_file: proposal,
            pruned: Vec::new(),
            trust: None,
            pending: true,
        });
    }
    let issued = req.store.issue(req.to, &env, p.sequence)?;
    let mut log = log;
    log.push(p.clone());
    oci::pause::at("promote:pointed");
    let pruned = req.store.prune(req.to, to_train.history_keep as usize, &log)?;
    let trust = publish_trust(req.store, &cfg, req.key, req.now)?;
    issued.keep();
    placed.keep();
    let pruned = pruned.keep();
    Ok(Promoted {
        pointer: p,
        refreshed,
        from,
        on_source_since: since,
        pointer_file: req.store.pointer_path(req.to),
        pruned,
        trust,
        pending: false,
    })
}

fn next_pointer(
    c: Channel,
    rel: &SignedRelease,
    version: Version,
    current: Option<&Pointer>,
    now: i64,
    train: &schema::files::Train,
    rollback: bool,
) -> Pointer {
    // The channel's support window runs from the release's date (spec §1.1).
    let support_ends = verifier::ops::parse_time(&rel.doc.release.date).ok().map(|d| rfc3339(d + days(train.support_window_days)));
    Pointer {
        kind: POINTER_TYPE.to_owned(),
        channel: c,
        version,
        calendar: rel.doc.release.calendar.clone(),
        release_yaml: rel.digest.clone(),
        sequence: current.map(|c| c.sequence + 1).unwrap_or(1),
        issued: rfc3339(now),
        expires: rfc3339(now + days(train.pointer_expiry_days)),
        rollback,
        previous: current.map(|c| Previous { version: c.version, sequence: c.sequence, release_yaml: c.release_yaml.clone() }),
        emergency: None,
        support_ends,
    }
}

/// The channels `c` promotes to, directly or through others.
fn downstream(cfg: &schema::config::Config, c: Channel) -> Vec<Channel> {
    let mut out = Vec::new();
    let mut at = c;
    while let Some(next) = cfg.trains.get(&at).and_then(|t| t.promotion.as_ref()).map(|p| p.to) {
        if out.contains(&next) || next == c {
            break;
        }
        out.push(next);
        at = next;
    }
    out
}

/// A move waiting for its second signature (`<channels>/<channel>/proposal.json`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Proposal {
    /// The pointer, signed by the first key (DSSE).
    pub envelope: Envelope,
    /// The channel's TUF role metadata for the move, signed by the first key.
    pub role: crate::tuf::RoleProposal,
}

impl Store {
    pub fn proposal_path(&self, c: Channel) -> PathBuf {
        self.dir(c).join("proposal.json")
    }
}

/// Under the two-person rule (a trust repository listing two or more release keys), a move of
/// stable or lts is written as a proposal signed by the first key; `None` when the move may be
/// made at once.
fn propose_move(
    store: &Store,
    p: &Pointer,
    env: &Envelope,
    log: &[Pointer],
    key: &dyn Signer,
    now: i64,
) -> Result<Option<PathBuf>, OpsError> {
    let repo = crate::tuf::Repo::of(store.root());
    let c = p.channel;
    if !repo.exists() || !crate::tuf::TWO_PERSON.contains(&c) {
        return Ok(None);
    }
    if !repo.two_person()? {
        return Err(OpsError::Refused(format!(
            "`{c}` needs two release keys (two-person rule) and the trust root lists one\n  hint: add a second: `cargo xtask trust rotate --root-key ROOT.key --release-key A.pub --release-key B.pub --key A.key`"
        )));
    }
    let path = store.proposal_path(c);
    if path.exists() {
        return Err(OpsError::Refused(format!(
            "a move of `{c}` is already proposed (`{}`)\n  hint: a second release key completes it with `cargo xtask promote --cosign --to {c}`; remove the file to withdraw it",
            path.display()
        )));
    }
    let kept = store.kept(c, log)?;
    let support_ends = p.support_ends.clone();
    let kept = kept
        .iter()
        .map(|k| (k.dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned(), k.dir.join("release.yaml")))
        .collect();
    let state = crate::tuf::ChannelState { channel: c, pointer: p.clone(), kept, support_ends };
    let role = crate::tuf::propose(&repo, &state, key, now)?;
    let bytes = serde_json::to_vec_pretty(&Proposal { envelope: env.clone(), role }).expect("a proposal serializes");
    oci::write_atomic(&path, &bytes).map_err(io(&path))?;
    Ok(Some(path))
}

/// `cargo xtask promote --cosign --to <stable|lts>`: the second release key checks the proposed
/// move (the first key's signatures, that the channel has not moved since) and completes it.
#[derive(Debug)]
pub struct Cosign<'a> {
    pub root: &'a Path,
    pub store: &'a Store,
    pub to: Channel,
    pub key: &'a dyn Signer,
    pub now: i64,
}

pub fn cosign(req: &Cosign<'_>) -> Result<Promoted, OpsError> {
    let public = req.key.public();
    refuse_dev_key(req.root, req.to, public)?;
    refuse_unlisted_key(req.store, public)?;
    // A move killed part-way is finished first (the caller holds the store's lock).
    req.store.recover(public)?;
    let cfg = schema::config::load(req.root)?;
    let path = req.store.proposal_path(req.to);
    let bytes = fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            OpsError::Refused(format!("no move of `{}` is proposed (`{}` does not exist)", req.to, path.display()))
        } else {
            io(&path)(e)
        }
    })?;
    let mut proposal: Proposal =
        serde_json::from_slice(&bytes).map_err(|e| OpsError::Invalid(format!("`{}`: not a proposal: {e}", path.display())))?;
    if proposal.envelope.signatures.iter().any(|s| s.keyid == public.key_id()) {
        return Err(OpsError::Refused(
            "this key already signed the proposal: the second signature must come from another release key (two people)".to_owned(),
        ));
    }
    let trusted = req.store.trusted(public)?;
    let p = trusted
        .iter()
        .filter(|k| k.revoked.is_none())
        .find_map(|k| pointer::open(&proposal.envelope, &k.key).ok().map(|(p, _)| p))
        .ok_or_else(|| OpsError::Refused(format!("`{}`: no release key of the trust root signed this pointer", path.display())))?;
    let log = req.store.log(req.to, public)?;
    if p.channel != req.to || p.sequence != log.len() as u64 + 1 {
        return Err(OpsError::Refused(format!(
            "`{}` proposes sequence {} of `{}`, but `{}` is at sequence {}: the channel moved since\n  hint: remove the proposal and promote again",
            path.display(),
            p.sequence,
            p.channel,
            req.to,
            log.len()
        )));
    }
    let repo = crate::tuf::Repo::of(req.store.root());
    crate::tuf::cosign(&repo, &mut proposal.role, req.key)?;
    // The second DSSE signature is over the same bytes as the first: the envelope's payload.
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&proposal.envelope.payload)
        .map_err(|e| OpsError::Invalid(format!("`{}`: payload: {e}", path.display())))?;
    let msg = verifier::sign::pae(&proposal.envelope.payload_type, &payload);
    let named = &proposal.role.signed["targets"][format!("channel-{}.json", req.to)]["hashes"]["sha256"];
    if named.as_str() != Some(Digest::of(&payload).hex()) {
        return Err(OpsError::Refused(format!("`{}`: the TUF role and the pointer it proposes do not match: withdraw it", path.display())));
    }
    proposal.envelope.signatures.push(verifier::sign::EnvelopeSignature {
        keyid: public.key_id(),
        sig: base64::engine::general_purpose::STANDARD.encode(req.key.try_sign(&msg)?),
    });
    crate::tuf::write_role(&repo, &proposal.role)?;
    let issued = req.store.issue(req.to, &proposal.envelope, p.sequence)?;
    let mut log = log;
    log.push(p.clone());
    let pruned = req.store.prune(req.to, cfg.train(req.to).history_keep as usize, &log)?;
    let trust = publish_trust(req.store, &cfg, req.key, req.now)?;
    issued.keep();
    let pruned = pruned.keep();
    fs::remove_file(&path).map_err(io(&path))?;
    Ok(Promoted {
        pointer: p,
        refreshed: false,
        from: None,
        on_source_since: None,
        pointer_file: req.store.pointer_path(req.to),
        pruned,
        trust,
        pending: false,
    })
}

/// A release signed by `key` or, with a trust repository, by a release key of one of its root
/// versions that is not revoked (a release cut before a rotation stays promotable; one signed
/// by a revoked key is not); a keyless release under the store's identity policy
/// ([`crate::keyless_policy`]). Returns the key that verified.
fn open_release(store: &Store, dir: &Path, key: &PublicKey) -> Result<(SignedRelease, PublicKey), Vec<String>> {
    if crate::keyless_policy::is_keyless(dir) {
        return open_keyless(store, dir);
    }
    let trusted = store.trusted(key).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    for k in trusted.iter().filter(|k| k.revoked.is_none()) {
        match SignedRelease::open(dir, &k.key) {
            Ok(rel) => return Ok((rel, k.key.clone())),
            Err(p) => problems = p,
        }
    }
    if let Some(k) = trusted.iter().find(|k| k.revoked.is_some() && SignedRelease::open(dir, &k.key).is_ok()) {
        let (at, reason) = k.revoked.clone().unwrap_or_default();
        return Err(vec![format!("release.yaml is signed by the key {}, revoked on {} ({reason})", k.key.key_id(), rfc3339(at))]);
    }
    Err(problems)
}

/// A keyless release under the store's identity policy: its certificate, its log entry at a
/// signed time within the certificate's validity, then release.yaml's signature and checksum
/// with the certified key.
fn open_keyless(store: &Store, dir: &Path) -> Result<(SignedRelease, PublicKey), Vec<String>> {
    let Some((root, policy)) = crate::keyless_policy::load(store.root()).map_err(|e| vec![e.to_string()])? else {
        return Err(vec![format!(
            "release.yaml is signed keyless (`release.yaml.sigstore.json` carries a certificate) and the channel store `{}` has no identity policy to check it under\n  hint: `cargo xtask trust keyless --trusted-root FILE --certificate-identity-regexp RE --certificate-oidc-issuer URL`",
            store.root().display()
        )]);
    };
    let key = verifier::release::keyless_manifest(dir, &root, &policy)?;
    let rel = SignedRelease::open(dir, &key)?;
    Ok((rel, key))
}

/// One kept release, re-verified by a rotation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    pub channel: Channel,
    pub version: Version,
    pub release_yaml: Digest,
    /// The key id (sha256 of the SPKI) that signed its release.yaml.
    pub signed_by: String,
    /// `"trusted"`, `"keyless"` (checked under the identity policy), or
    /// `"revoked-after-signing: <reason>"` (kept by the revocation rule).
    pub status: String,
}

/// What `trust rotate` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationReport {
    pub root: crate::tuf::Rotated,
    /// Every release the channels keep, checked before the new root was written.
    pub checked: Vec<Checked>,
    pub trust: Option<crate::tuf::Published>,
    /// Two-person channels whose metadata a revoked key had signed: two release keys must
    /// re-sign them (promote the current release again, then `promote --cosign`).
    pub resign: Vec<Channel>,
}

/// `cargo xtask trust rotate` (spec §9): re-verifies every release the channels keep (and
/// every pointer of their logs) with the keys the trust repository has trusted, refusing the
/// rotation if any fails; writes the new root; re-signs targets, snapshot and timestamp with
/// `key`, a release key of the new root.
pub fn rotate_trust(
    store: &Store,
    cfg: &schema::config::Config,
    req: &crate::tuf::Rotate<'_>,
    key: &dyn Signer,
) -> Result<RotationReport, OpsError> {
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    let revoking: Vec<String> = req.revoke.iter().map(|(k, _)| k.key_id()).collect();
    let trusted = store.trusted(key.public())?;
    for &c in cfg.trains.keys() {
        let log = store.log(c, key.public())?;
        for k in store.kept(c, &log)? {
            if crate::keyless_policy::is_keyless(&k.dir) {
                // Vouched for by its identity, not by a key the rotation changes.
                match open_keyless(store, &k.dir) {
                    Ok((_, key)) => checked.push(Checked {
                        channel: c,
                        version: k.version,
                        release_yaml: k.release_yaml.clone(),
                        signed_by: key.key_id(),
                        status: "keyless".to_owned(),
                    }),
                    Err(p) => problems.push(format!("`{c}` keeps `{}` ({}): {}", k.version, k.dir.display(), p.join("; "))),
                }
                continue;
            }
            let found = trusted.iter().find_map(|t| SignedRelease::open(&k.dir, &t.key).ok().map(|_| t));
            match found {
                Some(t) => {
                    let reason = req.revoke.iter().find(|(r, _)| r.key_id() == t.key.key_id()).map(|(_, why)| why.clone());
                    let status = match t.revoked.as_ref().map(|(_, why)| why.clone()).or(reason) {
                        Some(why) => format!("revoked-after-signing: {why}"),
                        None => "trusted".to_owned(),
                    };
                    checked.push(Checked {
                        channel: c,
                        version: k.version,
                        release_yaml: k.release_yaml.clone(),
                        signed_by: t.key.key_id(),
                        status,
                    });
                }
                None => problems.push(format!("`{c}` keeps `{}` ({}): no trusted key verifies it", k.version, k.dir.display())),
            }
        }
    }
    if !problems.is_empty() {
        return Err(OpsError::Refused(format!("the rotation was not written: kept releases do not verify:\n{}", bullet(&problems))));
    }
    if revoking.contains(&key.public().key_id()) {
        return Err(OpsError::Refused("`--key` is a key this rotation revokes: sign with a new release key".to_owned()));
    }
    let listed = if req.release_keys.is_empty() {
        req.repo.may_sign_targets(key.public())?
    } else {
        req.release_keys.iter().any(|k| k.key_id() == key.public().key_id())
    };
    if !listed {
        return Err(OpsError::Refused(format!(
            "`--key` ({}) is not a release key of the new root: give it with `--release-key`",
            key.public().key_id()
        )));
    }
    let root = crate::tuf::rotate(req)?;
    let trust = publish_trust(store, cfg, key, req.now)?;
    let resign = req.repo.under_signed()?;
    Ok(RotationReport { root, checked, trust, resign })
}

/// Re-signs the store's trust repository (if it has one) from every channel's current state.
pub fn publish_trust(
    store: &Store,
    cfg: &schema::config::Config,
    key: &dyn Signer,
    now: i64,
) -> Result<Option<crate::tuf::Published>, OpsError> {
    let repo = crate::tuf::Repo::of(store.root());
    if !repo.exists() {
        return Ok(None);
    }
    refuse_unlisted_key(store, key.public())?;
    let mut states = Vec::new();
    for &c in cfg.trains.keys() {
        let log = store.log(c, key.public())?;
        let Some(pointer) = log.last().cloned() else { continue };
        let kept = store.kept(c, &log)?;
        // The pointer carries its end of support (pointers signed before that field: none).
        let support_ends = pointer.support_ends.clone();
        let kept = kept
            .iter()
            .map(|k| (k.dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned(), k.dir.join("release.yaml")))
            .collect();
        states.push(crate::tuf::ChannelState { channel: c, pointer, kept, support_ends });
    }
    let expiry_days = cfg.trains.values().map(|t| t.pointer_expiry_days).min().unwrap_or(14);
    crate::tuf::publish(&repo, &states, expiry_days, key, now)
}

/// With a trust repository, only its release keys move channels: a key the root does not list
/// is refused before anything is written.
fn refuse_unlisted_key(store: &Store, key: &PublicKey) -> Result<(), OpsError> {
    let repo = crate::tuf::Repo::of(store.root());
    if repo.exists() && !repo.may_sign_targets(key)? {
        return Err(OpsError::Refused(format!(
            "the key `{}` is not a release key of the trust root `{}`\n  hint: sign with a key the root lists for `targets`",
            key.key_id(),
            repo.metadata().display()
        )));
    }
    Ok(())
}

/// Stable and lts pointers are never signed with the development key (made on first use by
/// any checkout, so anyone has one): spec §14, keys live offline or in hardware.
pub fn refuse_dev_key(root: &Path, c: Channel, key: &PublicKey) -> Result<(), OpsError> {
    if matches!(c, Channel::Stable | Channel::Lts) && crate::release::is_dev_key(root, key) {
        return Err(OpsError::Refused(format!(
            "`{c}` is never signed with the development key `{}`\n  hint: use the release key: `--key FILE` (make one with `cargo xtask keys generate --out release.key`)",
            crate::release::dev_key_path(root).display()
        )));
    }
    Ok(())
}

fn bullet(lines: &[String]) -> String {
    lines.iter().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n")
}

/// `cargo xtask history`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub channel: Channel,
    pub keep: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<Pointer>,
    pub kept: Vec<Kept>,
    pub log: Vec<Pointer>,
    /// What TUF clients see of the channel, when the store has a trust repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<PublishedChannel>,
}

/// A channel as the store's trust repository publishes it, read back by `tough`'s client from
/// the repository's first root (following every rotation since), as a client would.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedChannel {
    /// The channel target's custom metadata (version, sequence, releaseYaml, rollback,
    /// supportEnds, emergency); none when the repository has no target for the channel, or
    /// does not read (then `clientsRefuse` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<BTreeMap<String, serde_json::Value>>,
    /// Whether the target names the log's newest pointer (same sequence and release.yaml).
    pub current: bool,
    /// Why a client reading the repository now refuses it (an expired timestamp: run `trust
    /// refresh`), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients_refuse: Option<String>,
    /// The version of a move signed by one key, waiting for `promote --cosign`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed: Option<String>,
}

pub fn history(root: &Path, store: &Store, channel: Channel, key: &PublicKey) -> Result<History, OpsError> {
    let cfg = schema::config::load(root)?;
    let log = store.log(channel, key)?;
    let kept = store.kept(channel, &log)?;
    let published = published(store, channel, log.last());
    Ok(History { channel, keep: cfg.train(channel).history_keep, current: log.last().cloned(), kept, log, published })
}

/// [`PublishedChannel`] of `channel`, whose log's newest pointer is `newest`; `None` without a
/// trust repository.
fn published(store: &Store, channel: Channel, newest: Option<&Pointer>) -> Option<PublishedChannel> {
    let repo = crate::tuf::Repo::of(store.root());
    if !repo.exists() {
        return None;
    }
    let first = repo.metadata().join("1.root.json");
    let (custom, clients_refuse) = match verifier::tuf_client::check_archived(&repo.metadata(), &repo.targets(), &first) {
        Ok(targets) => {
            let custom = targets.into_iter().find(|t| t.channel == channel).map(|t| t.custom);
            (custom, crate::tuf::check(&repo, &first).err().map(|e| e.to_string()))
        }
        Err(e) => (None, Some(e.to_string())),
    };
    let current = match (&custom, newest) {
        (Some(c), Some(p)) => {
            c.get("sequence").and_then(serde_json::Value::as_u64) == Some(p.sequence)
                && c.get("releaseYaml").and_then(serde_json::Value::as_str) == Some(p.release_yaml.to_string().as_str())
        }
        _ => false,
    };
    let proposed = fs::read(store.proposal_path(channel)).ok().and_then(|b| serde_json::from_slice::<Proposal>(&b).ok()).and_then(|p| {
        let name = format!("channel-{}.json", channel.as_str());
        p.role.signed["targets"][name.as_str()]["custom"]["version"].as_str().map(str::to_owned)
    });
    Some(PublishedChannel { custom, current, clients_refuse, proposed })
}

#[derive(Debug)]
pub struct Rollback<'a> {
    pub root: &'a Path,
    pub store: &'a Store,
    pub channel: Channel,
    pub to: Version,
    pub key: &'a dyn Signer,
    pub now: i64,
    /// Where the compose file, chart and values go (replaced whole).
    pub out: &'a Path,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    pub pointer: Pointer,
    pub out: PathBuf,
    pub compose: PathBuf,
    pub chart: PathBuf,
    pub values: PathBuf,
    /// Every image of the compose file, as release.yaml records it.
    pub images: BTreeMap<String, String>,
    /// Which templates were rendered: `commit <sha>` (the release's own) or `working tree`.
    pub templates: String,
    /// Whether the rendered compose file and chart have the digests release.yaml states.
    pub compose_matches_release: bool,
    pub chart_matches_release: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<crate::tuf::Published>,
    /// Two-person rule: the proposal a second key completes with `promote --cosign`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<PathBuf>,
}

/// `cargo xtask rollback`:
/// 1. the channel's current pointer, and the kept release of `to` (refused when it is not
///    kept, not older, or already current);
/// 2. its `release.yaml` signature, checksum and gate record;
/// 3. render its compose file and chart, every image the digest release.yaml records: from the
///    templates of the release's own commit (`plan.json`) when the repository has it, else
///    from the working tree; compare the digests with release.yaml's;
/// 4. only then sign the pointer back to it (sequence + 1, `rollback: true`).
pub fn rollback(req: &Rollback<'_>) -> Result<RolledBack, OpsError> {
    let public = req.key.public();
    refuse_dev_key(req.root, req.channel, public)?;
    refuse_unlisted_key(req.store, public)?;
    // A move killed part-way is finished first (the caller holds the store's lock).
    req.store.recover(public)?;
    let cfg = schema::config::load(req.root)?;
    // 1.
    let log = req.store.log(req.channel, public)?;
    let current =
        log.last().cloned().ok_or_else(|| OpsError::Refused(format!("`{}` points at nothing yet: nothing to roll back", req.channel)))?;
    let kept = req.store.kept(req.channel, &log)?;
    let target = kept.iter().find(|k| k.version == req.to).ok_or_else(|| {
        let have: Vec<String> = kept.iter().map(|k| k.version.to_string()).collect();
        OpsError::Refused(format!(
            "`{}` keeps no release `{}` (it keeps the last {}: {})",
            req.channel,
            req.to,
            cfg.train(req.channel).history_keep,
            if have.is_empty() { "none".to_owned() } else { have.join(", ") }
        ))
    })?;
    if target.current {
        return Err(OpsError::Refused(format!("`{}` already points at `{}`", req.channel, req.to)));
    }
    if req.to > current.version {
        return Err(OpsError::Refused(format!(
            "`{}` is newer than the current `{}`: that is a promotion, not a rollback\n  hint: `cargo xtask promote {} --to {}`",
            req.to, current.version, req.to, req.channel
        )));
    }
    // 2.
    let (rel, signer) = open_release(req.store, &target.dir, public)
        .map_err(|p| OpsError::Refused(format!("the kept release `{}` does not verify:\n{}", req.to, bullet(&p))))?;
    gates::check_record(&rel.dir, &signer, &rel.digest).map_err(|e| OpsError::Refused(format!("`{}`: {e}", req.to)))?;

    // 3.
    let mut images = Vec::new();
    let mut refs = BTreeMap::new();
    for c in &rel.doc.components {
        // Pinned by digest since parsing: release.yaml with a tag is refused there.
        refs.insert(c.name.clone(), c.image.to_string());
        images.push(crate::templates::TemplateImage {
            component: c.name.clone(),
            repository: c.image.name(),
            digest: c.image.digest.clone(),
        });
    }
    let epoch = verifier::ops::parse_time(&rel.doc.release.date)
        .map_err(|e| OpsError::Invalid(format!("`{}`: `release.date`: {e}", rel.dir.display())))?;
    let cut_for: Channel = rel.doc.release.channel;
    let parent = req.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    // Locked while in use (`oci::dirs::Scratch`): those of a rollback that was killed are
    // removed here, by the next one.
    let staging = oci::dirs::Scratch::new_in(parent, ".rollback-").map_err(io(parent))?;
    let sources = oci::dirs::Scratch::new_in(parent, ".templates-").map_err(io(parent))?;
    oci::dirs::recover(req.out).map_err(io(req.out))?;
    let (template_root, templates) = match commit_of(&rel.dir).and_then(|c| templates_at(req.root, &c, sources.path()).ok().map(|_| c)) {
        Some(c) => (sources.path().to_owned(), format!("commit {c}")),
        None => (req.root.to_owned(), "working tree".to_owned()),
    };
    let rendered = crate::templates::render(&template_root, &rel.doc.release.version.to_string(), cut_for, epoch, &images, staging.path())?;
    let values_path = staging.path().join("values.yaml");
    let values = values_of(&rendered.chart).map_err(io(&rendered.chart))?;
    oci::write_atomic(&values_path, &values).map_err(io(&values_path))?;
    for f in ["release.yaml", "release.yaml.sig"] {
        verifier::ops::copy_kept(&rel.dir, staging.path(), f)?;
    }
    let compose_matches_release = rel.doc.compose.digest.as_ref() == Some(&rendered.compose_digest);
    let chart_matches_release = rel.doc.charts.iter().any(|c| c.digest == rendered.chart_digest);
    let staged = staging.keep();
    // In one step where the file system allows: a reader of `out` sees the previous rollback
    // or this one, never a mix.
    oci::dirs::replace_dir(&staged, req.out).map_err(io(req.out))?;

    // 4.
    let p = next_pointer(req.channel, &rel, req.to, Some(&current), req.now, cfg.train(req.channel), true);
    let env = pointer::sign(&p, req.key)?;
    let pending = propose_move(req.store, &p, &env, &log, req.key, req.now)?;
    let trust = if pending.is_none() {
        let issued = req.store.issue(req.channel, &env, p.sequence)?;
        let trust = publish_trust(req.store, &cfg, req.key, req.now)?;
        issued.keep();
        trust
    } else {
        None
    };
    let rel_path = |abs: &Path| req.out.join(abs.strip_prefix(&staged).unwrap_or(abs));
    Ok(RolledBack {
        pointer: p,
        out: req.out.to_owned(),
        compose: rel_path(&rendered.compose),
        chart: rel_path(&rendered.chart),
        values: req.out.join("values.yaml"),
        images: refs,
        templates,
        compose_matches_release,
        chart_matches_release,
        trust,
        pending,
    })
}

/// The source commit a release names in its `plan.json`, if kept.
fn commit_of(dir: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("plan.json")).ok()?).ok()?;
    let c = v["source"]["commit"].as_str()?;
    (c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit())).then(|| c.to_owned())
}

/// Writes `templates/` as of `commit` under `out/templates/`.
fn templates_at(root: &Path, commit: &str, out: &Path) -> Result<(), git2::Error> {
    let repo = git2::Repository::discover(root)?;
    let commit = repo.find_commit(git2::Oid::from_str(commit)?)?;
    let tree = commit.tree()?.get_path(Path::new("templates"))?.to_object(&repo)?.peel_to_tree()?;
    let mut failed = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(git2::ObjectType::Blob) {
            let path = out.join("templates").join(dir).join(entry.name().unwrap_or_default());
            let written = repo.find_blob(entry.id()).map_err(|e| e.to_string()).and_then(|b| {
                fs::create_dir_all(path.parent().unwrap_or(out)).and_then(|_| fs::write(&path, b.content())).map_err(|e| e.to_string())
            });
            if let Err(e) = written {
                failed = Some(e);
                return git2::TreeWalkResult::Abort;
            }
        }
        git2::TreeWalkResult::Ok
    })?;
    match failed {
        Some(e) => Err(git2::Error::from_str(&e)),
        None => Ok(()),
    }
}

/// `<chart>/values.yaml` out of a chart archive.
fn values_of(chart: &Path) -> std::io::Result<Vec<u8>> {
    let f = fs::File::open(chart)?;
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
    for e in ar.entries()? {
        let mut e = e?;
        let path = e.path()?.into_owned();
        if path.components().count() == 2 && path.ends_with("values.yaml") {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v)?;
            return Ok(v);
        }
    }
    Err(std::io::Error::other("the chart has no values.yaml"))
}

/// A template that cannot be rendered stops the operation with the template's own exit code.
impl From<crate::templates::TemplateError> for OpsError {
    fn from(e: crate::templates::TemplateError) -> OpsError {
        match e.exit_code() {
            schema::exit::Code::Rejected => OpsError::Invalid(e.to_string()),
            _ => OpsError::Environment(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters_and_the_next_one() {
        // 2027-06-20 is in Q2; Q3 starts 2027-07-01.
        assert_eq!(quarter(1_813_492_800), ("2027 Q2".to_owned(), verifier::ops::parse_time("2027-07-01T00:00:00Z").unwrap()));
        // December rolls into the next year.
        let dec = verifier::ops::parse_time("2027-12-31T23:00:00Z").unwrap();
        assert_eq!(quarter(dec), ("2027 Q4".to_owned(), verifier::ops::parse_time("2028-01-01T00:00:00Z").unwrap()));
    }
}

/// What [`migrate`] put into a new trust repository.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Migrated {
    /// Each channel that had pointers, its current one (now a TUF target) and how many it signed.
    pub channels: Vec<MigratedChannel>,
    pub trust: Option<crate::tuf::Published>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigratedChannel {
    pub channel: Channel,
    pub current: Pointer,
    pub pointers: usize,
    /// The release manifests it keeps, each now a target.
    pub kept: Vec<Version>,
}

/// `cargo xtask trust init` on a channel store made before the trust repository (pointers and
/// logs only, as older versions wrote): the checks [`migrate`] needs, run before the root is
/// written. Returns the channels that have pointers.
///
/// Every channel's log must verify with `key` (the release key that signed it, which must be a
/// release key of the new root); stable and lts, under the two-person rule, need `cosign`, a
/// second release key.
pub fn migration_plan(
    root: &Path,
    store: &Store,
    cfg: &schema::config::Config,
    release_keys: &[PublicKey],
    key: Option<&dyn Signer>,
    cosign: Option<&dyn Signer>,
) -> Result<Vec<Channel>, OpsError> {
    let with_pointers: Vec<Channel> = cfg.trains.keys().copied().filter(|c| store.pointer_path(*c).is_file()).collect();
    if with_pointers.is_empty() {
        return Ok(with_pointers);
    }
    let names = with_pointers.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
    let Some(key) = key else {
        return Err(OpsError::Refused(format!(
            "`{}` already has channel pointers ({names}), made before the trust repository: `trust init` migrates them into it, signed by a release key\n  hint: add `--key RELEASE.key` (the key that signed them; its public half among `--release-key`)",
            store.root().display()
        )));
    };
    for &c in &with_pointers {
        refuse_dev_key(root, c, key.public())?;
        if let Some(second) = cosign {
            refuse_dev_key(root, c, second.public())?;
        }
    }
    let listed = |k: &PublicKey| release_keys.iter().any(|r| r.key_id() == k.key_id());
    if !listed(key.public()) {
        return Err(OpsError::Refused(format!(
            "`--key` ({}) is not among the `--release-key`s of the new root: it could not sign the migrated targets",
            key.public().key_id()
        )));
    }
    for &c in &with_pointers {
        store.log(c, key.public()).map_err(|e| {
            OpsError::Refused(format!(
                "`{c}` cannot be migrated: {e}\n  hint: `--key` must be the release key that signed the store's pointers"
            ))
        })?;
    }
    let two: Vec<Channel> = with_pointers.iter().copied().filter(|c| crate::tuf::TWO_PERSON.contains(c)).collect();
    if !two.is_empty() {
        let names = two.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
        let Some(second) = cosign else {
            return Err(OpsError::Refused(format!(
                "{names} must be signed by two release keys in the trust repository (two-person rule)\n  hint: add `--cosign-key SECOND.key`, another release key among `--release-key`"
            )));
        };
        if second.public().key_id() == key.public().key_id() || !listed(second.public()) {
            return Err(OpsError::Refused(format!(
                "`--cosign-key` ({}) must be another release key among `--release-key` than `--key`",
                second.public().key_id()
            )));
        }
    }
    Ok(with_pointers)
}

/// Migrates the pointers of a store made before the trust repository into the one `trust init`
/// just wrote ([`migration_plan`] checked it first):
/// 1. stable and lts: the channel's role signed by `key` and `cosign` (two people), and the
///    current DSSE pointer co-signed by both (in its log entry and `pointer.json`: the same
///    document, one more signature), so that `verify-pointer` finds two signatures too;
/// 2. the other channels, snapshot and timestamp signed by `key` ([`publish_trust`]).
///
/// Every kept release of every channel becomes a target.
pub fn migrate(
    store: &Store,
    cfg: &schema::config::Config,
    channels: &[Channel],
    key: &dyn Signer,
    cosign: Option<&dyn Signer>,
    now: i64,
) -> Result<Migrated, OpsError> {
    let repo = crate::tuf::Repo::of(store.root());
    let mut out = Vec::new();
    for &c in channels {
        let log = store.log(c, key.public())?;
        let Some(current) = log.last().cloned() else { continue };
        let kept = store.kept(c, &log)?;
        if crate::tuf::TWO_PERSON.contains(&c) {
            let second = cosign.ok_or_else(|| OpsError::Refused(format!("`{c}` needs `--cosign-key` (two-person rule)")))?;
            // 1.
            let state = crate::tuf::ChannelState {
                channel: c,
                pointer: current.clone(),
                kept: kept
                    .iter()
                    .map(|k| (k.dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned(), k.dir.join("release.yaml")))
                    .collect(),
                support_ends: current.support_ends.clone(),
            };
            let mut role = crate::tuf::propose(&repo, &state, key, now)?;
            crate::tuf::cosign(&repo, &mut role, second)?;
            crate::tuf::write_role(&repo, &role)?;
            let entry = store.dir(c).join("log").join(format!("{:08}.json", current.sequence));
            let mut env = pointer::read_envelope(&entry)?;
            use base64::Engine as _;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(&env.payload)
                .map_err(|e| OpsError::Invalid(format!("`{}`: payload: {e}", entry.display())))?;
            let msg = verifier::sign::pae(&env.payload_type, &payload);
            for signer in [key, second] {
                if !env.signatures.iter().any(|s| s.keyid == signer.public().key_id()) {
                    env.signatures.push(verifier::sign::EnvelopeSignature {
                        keyid: signer.public().key_id(),
                        sig: base64::engine::general_purpose::STANDARD.encode(signer.try_sign(&msg)?),
                    });
                }
            }
            let mut bytes = serde_json::to_vec_pretty(&env).expect("an envelope serializes");
            bytes.push(b'\n');
            // The same document either way: a kill between the two leaves a log that checks.
            oci::write_atomic(&entry, &bytes).map_err(io(&entry))?;
            let pointer_file = store.pointer_path(c);
            oci::write_atomic(&pointer_file, &bytes).map_err(io(&pointer_file))?;
        }
        out.push(MigratedChannel { channel: c, current, pointers: log.len(), kept: kept.iter().map(|k| k.version).collect() });
    }
    // 2.
    let trust = publish_trust(store, cfg, key, now)?;
    Ok(Migrated { channels: out, trust })
}
