//! The channels' trust repository: a TUF repository (The Update Framework, spec 1.0) beside the
//! channel store, so that any TUF client (python-tuf's `ngclient`, `tough`) can check what a
//! channel points at with TUF's protections: rollback (versions only grow), freeze (short
//! `timestamp` expiry), mix-and-match (`snapshot`), and keys with thresholds in `root`.
//!
//! ```text
//! <channels>/tuf/metadata/1.root.json, root.json   root keys (offline), thresholds; `root.json` is a copy of the newest
//! <channels>/tuf/metadata/<N>.targets.json          the targets: each channel's pointer and its kept release.yaml files
//! <channels>/tuf/metadata/<N>.snapshot.json         which targets.json is current
//! <channels>/tuf/metadata/timestamp.json            which snapshot is current (short expiry: re-sign with `trust refresh`)
//! <channels>/tuf/targets/<sha256>.channel-<channel>.json
//! <channels>/tuf/targets/<sha256>.release-<channel>-<version>-<hex12>.yaml
//! ```
//!
//! Target names have no `/`: with consistent snapshots python-tuf fetches `dir/<hash>.file` and
//! `tough` fetches `<hash>.dir/file`, so only flat names are read alike by both.
//!
//! Targets (consistent snapshots: every file is stored under its sha256, never overwritten):
//! - `channel-<channel>.json`: the channel's current pointer document (the bytes the DSSE
//!   pointer signs), with `custom` metadata: channel, version, calendar, sequence, releaseYaml,
//!   rollback, emergency, supportEnds (the release date plus the channel's
//!   `support-window-days`);
//! - `release-<channel>-<version>-<hex12>.yaml`: every release.yaml the channel keeps.
//!
//! Roles: `root` (the root keys of `trust init`, a threshold); `targets`, `snapshot` and
//! `timestamp` (the release keys). Every move of a channel (`promote`, `rollback`) re-signs
//! targets, snapshot and timestamp with versions + 1; `trust refresh` re-signs them without a
//! move (a timestamp expires after a day).
//!
//! Why the metadata is written here rather than by `tough`'s `RepositoryEditor`: the editor
//! serializes its `HashMap`s (keys, roles, targets) in a per-process order, so the same inputs
//! and keys give different bytes, and snapshot and timestamp (which hash those bytes) differ
//! too. Here every document is canonical JSON (sorted keys, no whitespace: OLPC canonical
//! JSON, what TUF signs, for signatures; sorted compact JSON for the files), so files are
//! reproducible; `tough`'s client reads them back
//! ([`check`]) and python-tuf's `ngclient` is the independent client in the tests.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use schema::model::{hex, rfc3339, Channel, Digest};
use verifier::keys::{KeyKind, PublicKey, Signer, SigningKey};
use verifier::ops::{io, OpsError};

/// The TUF specification version written.
const SPEC_VERSION: &str = "1.0.31";
/// How long a timestamp is valid: a client that sees nothing newer for a day stops trusting
/// the channels (freeze attack), so `trust refresh` runs daily.
pub const TIMESTAMP_HOURS: i64 = 24;

/// The trust repository of a channel store.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
}

impl Repo {
    /// The trust repository of the channel store at `store`.
    pub fn of(store: &Path) -> Repo {
        Repo { dir: store.join("tuf") }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn metadata(&self) -> PathBuf {
        self.dir.join("metadata")
    }
    pub fn targets(&self) -> PathBuf {
        self.dir.join("targets")
    }
    /// Whether `trust init` made one.
    pub fn exists(&self) -> bool {
        self.metadata().join("1.root.json").is_file()
    }

    /// The newest root: its version and document (`signed`).
    pub fn root(&self) -> Result<(u64, Value), OpsError> {
        let v = self.newest("root")?.ok_or_else(|| {
            OpsError::Refused(format!(
                "`{}` has no TUF root\n  hint: make one with `cargo xtask trust init --root-key ROOT.key --release-key RELEASE.pub`",
                self.metadata().display()
            ))
        })?;
        let path = self.metadata().join(format!("{v}.root.json"));
        let doc = read_json(&path)?;
        Ok((v, doc["signed"].clone()))
    }

    /// The highest `N` of the files `N.<role>.json`.
    fn newest(&self, role: &str) -> Result<Option<u64>, OpsError> {
        let dir = self.metadata();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&dir)(e)),
        };
        let suffix = format!(".{role}.json");
        Ok(rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(&suffix)).and_then(|n| n.parse::<u64>().ok()))
            .max())
    }

    /// Whether `key` may sign the channels' targets (is one of the root's `targets` keys).
    pub fn may_sign_targets(&self, key: &PublicKey) -> Result<bool, OpsError> {
        let (_, root) = self.root()?;
        let id = key_id(&tuf_key(key));
        Ok(root["roles"]["snapshot"]["keyids"].as_array().is_some_and(|ids| ids.iter().any(|k| k.as_str() == Some(id.as_str()))))
    }
}

/// A key that signed the channels at some root version, and whether the newest root revokes it.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: PublicKey,
    /// When (unix time) and why the newest root revoked it.
    pub revoked: Option<(i64, String)>,
}

impl TrustedKey {
    /// Whether a signature this key made at `time` (a signed `issued` time) is still trusted:
    /// always for a key never revoked; before its revocation time for a revoked one (the
    /// revocation rule: what a key signed while it was trusted stays valid, and the rotation
    /// that revoked it re-vouched for it in the new targets; nothing it signs later is).
    pub fn trusted_at(&self, time: i64) -> bool {
        self.revoked.as_ref().is_none_or(|(at, _)| time < *at)
    }
}

impl Repo {
    /// Every root version, oldest first (`N.root.json` for N = 1, 2, ...).
    pub fn roots(&self) -> Result<Vec<Value>, OpsError> {
        let newest = self.newest("root")?.unwrap_or(0);
        (1..=newest).map(|v| read_json(&self.metadata().join(format!("{v}.root.json"))).map(|d| d["signed"].clone())).collect()
    }

    /// Every key that any root version listed for `targets` (the release keys, past and
    /// present), with the newest root's revocations.
    pub fn history_keys(&self) -> Result<Vec<TrustedKey>, OpsError> {
        let roots = self.roots()?;
        let revoked = revocations(roots.last().unwrap_or(&Value::Null));
        let mut out: Vec<TrustedKey> = Vec::new();
        for root in &roots {
            for id in root["roles"]["snapshot"]["keyids"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
                let Some(key) = public_of(&root["keys"][id]) else { continue };
                if out.iter().any(|k| k.key.key_id() == key.key_id()) {
                    continue;
                }
                out.push(TrustedKey { revoked: revoked.get(id).cloned(), key });
            }
        }
        Ok(out)
    }
}

/// The `revoked` list of a root (our field, kept by every later root): key id -> (time, reason).
fn revocations(root: &Value) -> BTreeMap<String, (i64, String)> {
    root["revoked"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let at = verifier::ops::parse_time(r["time"].as_str()?).ok()?;
            Some((r["keyid"].as_str()?.to_owned(), (at, r["reason"].as_str().unwrap_or_default().to_owned())))
        })
        .collect()
}

/// A TUF key object back as a public key (ECDSA: its PEM; Ed25519: the raw key in hex).
fn public_of(obj: &Value) -> Option<PublicKey> {
    let public = obj["keyval"]["public"].as_str()?;
    match obj["keytype"].as_str()? {
        "ecdsa" | "ecdsa-sha2-nistp256" => PublicKey::from_pem(public).ok(),
        "ed25519" => PublicKey::from_ed25519_raw(&schema::model::unhex(public)?).ok(),
        _ => None,
    }
}

/// `key` as a TUF key object: ECDSA P-256 as securesystemslib writes it (`ecdsa`, PEM), Ed25519
/// as the raw public key in hex.
pub fn tuf_key(key: &PublicKey) -> Value {
    match key.kind {
        KeyKind::EcdsaP256 => json!({"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": key.pem()}}),
        KeyKind::Ed25519 => {
            let der = key.der();
            let raw = &der[der.len().saturating_sub(32)..];
            json!({"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": hex(raw)}})
        }
    }
}

/// Adds each key object to `keys` under its id; returns the ids, sorted, once each.
fn register(keys: &mut BTreeMap<String, Value>, objs: impl IntoIterator<Item = Value>) -> Vec<String> {
    let mut ids: Vec<String> = objs
        .into_iter()
        .map(|obj| {
            let id = key_id(&obj);
            keys.insert(id.clone(), obj);
            id
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A TUF key id: the sha256 of the key object's canonical JSON (TUF 4.2).
pub fn key_id(key: &Value) -> String {
    Digest::of(&canonical(key)).hex().to_owned()
}

/// OLPC canonical JSON: what TUF signs, and what key ids hash.
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    v.serialize(&mut ser).expect("a JSON value serializes");
    out
}

/// `{"signed": doc, "signatures": [...]}`, signed by each key (over the canonical JSON of
/// `doc`). The file is plain JSON with sorted keys and no whitespace: canonical JSON leaves
/// control characters (the newlines of a PEM key) unescaped, which JSON parsers refuse.
fn sign_doc(doc: &Value, keys: &[&dyn Signer]) -> Result<Vec<u8>, OpsError> {
    let body = canonical(doc);
    let mut sigs = Vec::new();
    for k in keys {
        sigs.push(json!({"keyid": key_id(&tuf_key(k.public())), "sig": hex(&k.try_sign(&body)?)}));
    }
    sigs.sort_by(|a, b| a["keyid"].as_str().cmp(&b["keyid"].as_str()));
    sigs.dedup_by(|a, b| a["keyid"] == b["keyid"]);
    // serde_json's maps are sorted (no `preserve_order` feature in this workspace).
    Ok(serde_json::to_vec(&json!({"signed": doc, "signatures": sigs})).expect("a JSON value serializes"))
}

fn read_json(path: &Path) -> Result<Value, OpsError> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| OpsError::Invalid(format!("`{}`: not JSON: {e}", path.display())))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), OpsError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    oci::write_atomic(path, bytes).map_err(io(path))
}

/// `cargo xtask trust init`.
#[derive(Debug)]
pub struct Init<'a> {
    pub repo: &'a Repo,
    /// The root keys (kept offline); every one signs the root.
    pub root_keys: &'a [SigningKey],
    /// How many root keys must sign a new root.
    pub threshold: u64,
    /// The release keys: they sign targets, snapshot and timestamp.
    pub release_keys: &'a [PublicKey],
    pub now: i64,
    pub root_days: u32,
}

/// Writes `1.root.json` (refused when a root exists: rotating is a new root version).
pub fn init(req: &Init<'_>) -> Result<PathBuf, OpsError> {
    if req.repo.exists() {
        return Err(OpsError::Refused(format!(
            "`{}` already has a TUF root; a new root is a rotation, not an init",
            req.repo.metadata().display()
        )));
    }
    if req.root_keys.is_empty() || req.release_keys.is_empty() {
        return Err(OpsError::Refused("`trust init` needs at least one `--root-key` and one `--release-key`".to_owned()));
    }
    if req.threshold == 0 || req.threshold > req.root_keys.len() as u64 {
        return Err(OpsError::Refused(format!(
            "`--root-threshold {}` must be between 1 and the number of root keys ({})",
            req.threshold,
            req.root_keys.len()
        )));
    }
    let mut keys = BTreeMap::new();
    let root_ids = register(&mut keys, req.root_keys.iter().map(|k| tuf_key(k.public())));
    let release_ids = register(&mut keys, req.release_keys.iter().map(tuf_key));
    let role = |ids: &[String], threshold: u64| json!({"keyids": ids, "threshold": threshold});
    let doc = json!({
        "_type": "root",
        "spec_version": SPEC_VERSION,
        "consistent_snapshot": true,
        "version": 1,
        "expires": rfc3339(req.now + i64::from(req.root_days) * 86_400),
        "keys": keys,
        "roles": {
            "root": role(&root_ids, req.threshold),
            "targets": role(&root_ids, req.threshold),
            "snapshot": role(&release_ids, 1),
            "timestamp": role(&release_ids, 1),
        },
    });
    let signers: Vec<&dyn Signer> = req.root_keys.iter().map(|k| k as &dyn Signer).collect();
    let bytes = sign_doc(&doc, &signers)?;
    let meta = req.repo.metadata();
    let first = meta.join("1.root.json");
    let release: Vec<Value> = req.release_keys.iter().map(tuf_key).collect();
    write_delegations(req.repo, &release, &signers, req.threshold, req.now + i64::from(req.root_days) * 86_400)?;
    write_new(&first, &bytes)?;
    write_new(&meta.join("root.json"), &bytes)?;
    Ok(first)
}

/// `cargo xtask trust rotate`: a new root version.
#[derive(Debug)]
pub struct Rotate<'a> {
    pub repo: &'a Repo,
    /// Keys of the current root role: at least its threshold of them sign the new root.
    pub root_keys: &'a [SigningKey],
    /// The new root role's keys (they sign the new root too); empty: the current root keys.
    pub new_root_keys: &'a [SigningKey],
    /// The new root threshold; `None`: the current one.
    pub threshold: Option<u64>,
    /// The new release keys (targets, snapshot, timestamp); empty: the current ones, less the
    /// revoked.
    pub release_keys: &'a [PublicKey],
    /// Keys to revoke, with the reason.
    pub revoke: &'a [(PublicKey, String)],
    pub now: i64,
    pub root_days: u32,
}

/// The root a rotation wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotated {
    pub version: u64,
    pub path: PathBuf,
    pub release_keys: Vec<String>,
    /// Every revocation the new root carries (key id, time, reason).
    pub revoked: Vec<Value>,
}

/// Writes root N+1, signed by the threshold of root N's keys (which `root_keys` must reach) and
/// by every new root key, as TUF clients require to follow a root rotation.
pub fn rotate(req: &Rotate<'_>) -> Result<Rotated, OpsError> {
    let (version, old) = req.repo.root()?;
    let old_root_ids: Vec<&str> = old["roles"]["root"]["keyids"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    let old_threshold = old["roles"]["root"]["threshold"].as_u64().unwrap_or(1);
    let mut signing: Vec<&str> = Vec::new();
    let given: Vec<String> = req.root_keys.iter().map(|k| key_id(&tuf_key(k.public()))).collect();
    for id in &given {
        if !old_root_ids.contains(&id.as_str()) {
            return Err(OpsError::Refused(format!("`--root-key` {id} is not a root key of root version {version}")));
        }
        signing.push(id);
    }
    signing.sort();
    signing.dedup();
    if (signing.len() as u64) < old_threshold {
        return Err(OpsError::Refused(format!(
            "root version {version} needs {old_threshold} of its root keys to sign a new root; {} given",
            signing.len()
        )));
    }
    let mut revoked: Vec<Value> = old["revoked"].as_array().cloned().unwrap_or_default();
    let mut revoked_ids: Vec<String> = revoked.iter().filter_map(|r| r["keyid"].as_str().map(str::to_owned)).collect();
    for (key, reason) in req.revoke {
        if reason.trim().is_empty() {
            return Err(OpsError::Refused("a revocation needs a reason (`--reason`)".to_owned()));
        }
        let id = key_id(&tuf_key(key));
        if !revoked_ids.contains(&id) {
            revoked.push(json!({"keyid": id, "time": rfc3339(req.now), "reason": reason}));
            revoked_ids.push(id);
        }
    }
    let new_root_keys: Vec<&SigningKey> =
        if req.new_root_keys.is_empty() { req.root_keys.iter().collect() } else { req.new_root_keys.iter().collect() };
    let mut keys = BTreeMap::new();
    let root_ids = register(&mut keys, new_root_keys.iter().map(|k| tuf_key(k.public())));
    // The new release keys: those given, and the current ones not revoked.
    let mut release_objs: Vec<Value> = req.release_keys.iter().map(tuf_key).collect();
    release_objs.extend(
        old["roles"]["snapshot"]["keyids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str())
            .filter(|id| !revoked_ids.iter().any(|r| r == id))
            .map(|id| old["keys"][id].clone()),
    );
    let release_ids = register(&mut keys, release_objs);
    for id in root_ids.iter().chain(&release_ids) {
        if revoked_ids.contains(id) {
            return Err(OpsError::Refused(format!("key {id} is revoked: it cannot be a key of the new root")));
        }
    }
    if release_ids.is_empty() {
        return Err(OpsError::Refused("the new root would have no release key: give `--release-key`".to_owned()));
    }
    let threshold = req.threshold.unwrap_or(old_threshold);
    if threshold == 0 || threshold > root_ids.len() as u64 {
        return Err(OpsError::Refused(format!("a root threshold of {threshold} with {} root key(s)", root_ids.len())));
    }
    let role = |ids: &[String], threshold: u64| json!({"keyids": ids, "threshold": threshold});
    let next = version + 1;
    let mut doc = json!({
        "_type": "root",
        "spec_version": SPEC_VERSION,
        "consistent_snapshot": true,
        "version": next,
        "expires": rfc3339(req.now + i64::from(req.root_days) * 86_400),
        "keys": keys.clone(),
        "roles": {
            "root": role(&root_ids, threshold),
            "targets": role(&root_ids, threshold),
            "snapshot": role(&release_ids, 1),
            "timestamp": role(&release_ids, 1),
        },
    });
    if !revoked.is_empty() {
        doc["revoked"] = Value::Array(revoked.clone());
    }
    let mut signers: Vec<&dyn Signer> = req.root_keys.iter().map(|k| k as &dyn Signer).collect();
    signers.extend(new_root_keys.iter().map(|k| *k as &dyn Signer));
    let bytes = sign_doc(&doc, &signers)?;
    let meta = req.repo.metadata();
    let path = meta.join(format!("{next}.root.json"));
    let release: Vec<Value> = release_ids.iter().map(|id| keys[id].clone()).collect();
    let new_signers: Vec<&dyn Signer> = new_root_keys.iter().map(|k| *k as &dyn Signer).collect();
    write_delegations(req.repo, &release, &new_signers, threshold, req.now + i64::from(req.root_days) * 86_400)?;
    write_new(&path, &bytes)?;
    write_new(&meta.join("root.json"), &bytes)?;
    Ok(Rotated { version: next, path, release_keys: release_ids, revoked })
}

/// What [`publish`] wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// The top-level targets (delegations, signed by the root keys at `init` and `rotate`).
    pub targets_version: u64,
    /// The edge role, re-signed by every publish.
    pub edge_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    /// When the timestamp expires (RFC 3339).
    pub timestamp_expires: String,
    /// Every target, by name, with its sha256.
    pub targets: BTreeMap<String, Digest>,
}

/// One channel's state, as the channel store has it.
#[derive(Debug, Clone)]
pub struct ChannelState {
    pub channel: Channel,
    /// The current pointer.
    pub pointer: schema::pointer::Pointer,
    /// The kept releases: directory name (`<version>-<hex12>`) and `release.yaml` path.
    pub kept: Vec<(String, PathBuf)>,
    /// When support for the current release ends (RFC 3339), if known.
    pub support_ends: Option<String>,
}

/// Re-signs the trust repository from the channel store's current state: the targets (each
/// channel's pointer and kept releases), then snapshot, then timestamp (the commit point: a
/// client sees the new state only once `timestamp.json` names it). `None` when the store has no
/// trust repository. `expiry_days`: how long targets and snapshot are valid.
pub fn publish(
    repo: &Repo,
    channels: &[ChannelState],
    expiry_days: u32,
    key: &dyn Signer,
    now: i64,
) -> Result<Option<Published>, OpsError> {
    if !repo.exists() {
        return Ok(None);
    }
    // A publication that fails part-way (a full disk) takes back the files it wrote: what
    // clients see moves only with `timestamp.json`, written last, and nothing is left over.
    let dirs = [repo.metadata(), repo.targets()];
    let before = files_in(&dirs);
    let published = publish_files(repo, channels, expiry_days, key, now);
    if published.is_err() {
        for f in files_in(&dirs).difference(&before) {
            let _ = fs::remove_file(f);
        }
    }
    published.map(Some)
}

/// The files directly in `dirs` (none for a directory that does not exist).
fn files_in(dirs: &[PathBuf]) -> std::collections::BTreeSet<PathBuf> {
    dirs.iter().filter_map(|d| fs::read_dir(d).ok()).flat_map(|rd| rd.flatten().map(|e| e.path())).collect()
}

fn publish_files(repo: &Repo, channels: &[ChannelState], expiry_days: u32, key: &dyn Signer, now: i64) -> Result<Published, OpsError> {
    if !repo.may_sign_targets(key.public())? {
        return Err(OpsError::Refused(format!(
            "the key `{}` is not a release key of the trust root `{}`\n  hint: sign with a key the root lists for `targets`, or rotate the root to add it",
            key.public().key_id(),
            repo.metadata().display()
        )));
    }
    // The roles that move with one release key (edge): their metadata is re-signed here.
    // Stable and lts (two-person) are written only by `promote` + `promote --cosign`.
    let (mut targets, mut names) = (BTreeMap::new(), BTreeMap::new());
    for state in channels.iter().filter(|s| !TWO_PERSON.contains(&s.channel)) {
        channel_targets(repo, state, &mut targets, &mut names)?;
    }
    let expires = rfc3339(now + i64::from(expiry_days) * 86_400);
    let meta = repo.metadata();
    let next = |role: &str| -> Result<u64, OpsError> { Ok(repo.newest(role)?.unwrap_or(0) + 1) };
    let edge = Channel::Edge.as_str();
    let ev = next(edge)?;
    let edge_doc = json!({"_type": "targets", "spec_version": SPEC_VERSION, "version": ev, "expires": expires, "targets": targets});
    write_new(&meta.join(format!("{ev}.{edge}.json")), &sign_doc(&edge_doc, &[key])?)?;
    // The snapshot names the newest version of every targets metadata file.
    let mut snapshot_meta = BTreeMap::new();
    for role in ["targets", "edge", "stable-gate", "lts-gate", "stable", "lts"] {
        if let Some(v) = repo.newest(role)? {
            let path = meta.join(format!("{v}.{role}.json"));
            let bytes = fs::read(&path).map_err(io(&path))?;
            snapshot_meta.insert(format!("{role}.json"), file_meta(v, &bytes));
        }
    }
    let tv = repo.newest("targets")?.unwrap_or(0);

    let sv = next("snapshot")?;
    let snapshot_doc = json!({
        "_type": "snapshot", "spec_version": SPEC_VERSION, "version": sv, "expires": expires,
        "meta": snapshot_meta,
    });
    let snapshot_bytes = sign_doc(&snapshot_doc, &[key])?;
    write_new(&meta.join(format!("{sv}.snapshot.json")), &snapshot_bytes)?;
    oci::pause::at("trust:snapshot-written");

    let ts_path = meta.join("timestamp.json");
    let tsv = if ts_path.exists() { read_json(&ts_path)?["signed"]["version"].as_u64().unwrap_or(0) + 1 } else { 1 };
    let timestamp_expires = rfc3339(now + TIMESTAMP_HOURS * 3600);
    let timestamp_doc = json!({
        "_type": "timestamp", "spec_version": SPEC_VERSION, "version": tsv, "expires": timestamp_expires,
        "meta": {"snapshot.json": file_meta(sv, &snapshot_bytes)},
    });
    write_new(&ts_path, &sign_doc(&timestamp_doc, &[key])?)?;
    Ok(Published { targets_version: tv, edge_version: ev, snapshot_version: sv, timestamp_version: tsv, timestamp_expires, targets: names })
}

/// The targets of one channel: its pointer (with custom metadata) and its kept release.yaml files.
fn channel_targets(
    repo: &Repo,
    state: &ChannelState,
    targets: &mut BTreeMap<String, Value>,
    names: &mut BTreeMap<String, Digest>,
) -> Result<(), OpsError> {
    let (c, current) = (state.channel, &state.pointer);
    let pointer_bytes = serde_json::to_vec(current).expect("a pointer serializes");
    let mut custom = json!({
        "channel": c.as_str(),
        "version": current.version.to_string(),
        "calendar": current.calendar,
        "sequence": current.sequence,
        "releaseYaml": current.release_yaml.to_string(),
        "rollback": current.rollback,
    });
    if let Some(reason) = &current.emergency {
        custom["emergency"] = reason.clone().into();
    }
    if let Some(ends) = &state.support_ends {
        custom["supportEnds"] = ends.clone().into();
    }
    add_target(repo, &format!("channel-{}.json", c.as_str()), &pointer_bytes, Some(custom), targets, names)?;
    for (dir, path) in &state.kept {
        let bytes = fs::read(path).map_err(io(path))?;
        add_target(repo, &format!("release-{}-{dir}.yaml", c.as_str()), &bytes, None, targets, names)?;
    }
    Ok(())
}

/// The channels under the two-person rule (spec §14 "4-eyes"): delegated TUF roles whose
/// metadata needs two release keys' signatures.
pub const TWO_PERSON: [Channel; 2] = [Channel::Stable, Channel::Lts];
/// How long a two-person role's metadata is valid: a year (freeze protection is the
/// timestamp's; re-signing a stable pointer needs two people, so not every fortnight).
const ROLE_DAYS: i64 = 365;

impl Repo {
    /// Whether the two-person rule holds: the newest root lists two or more release keys
    /// (with one, a stable or lts move is refused: there is no second person).
    pub fn two_person(&self) -> Result<bool, OpsError> {
        let (_, root) = self.root()?;
        Ok(root["roles"]["snapshot"]["keyids"].as_array().is_some_and(|ids| ids.len() >= 2))
    }
}

impl Repo {
    /// The two-person channels whose current metadata no longer has two signatures by release
    /// keys of the newest root (after a rotation revoked a signer): clients refuse them until
    /// two release keys re-sign (`promote` of the current release, then `promote --cosign`).
    pub fn under_signed(&self) -> Result<Vec<Channel>, OpsError> {
        let (_, root) = self.root()?;
        let listed: Vec<&str> = root["roles"]["snapshot"]["keyids"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        let mut out = Vec::new();
        for c in TWO_PERSON {
            let Some(v) = self.newest(c.as_str())? else { continue };
            let doc = read_json(&self.metadata().join(format!("{v}.{c}.json")))?;
            let n = doc["signatures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["keyid"].as_str().is_some_and(|id| listed.contains(&id)))
                .count();
            if n < 2 {
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// A two-person role's next metadata, signed by one release key so far.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RoleProposal {
    pub role: String,
    pub signed: Value,
    pub signatures: Vec<Value>,
}

/// The metadata of `state.channel`'s delegated role for its new state, signed by `key`.
pub fn propose(repo: &Repo, state: &ChannelState, key: &dyn Signer, now: i64) -> Result<RoleProposal, OpsError> {
    let (mut targets, mut names) = (BTreeMap::new(), BTreeMap::new());
    channel_targets(repo, state, &mut targets, &mut names)?;
    let role = state.channel.as_str().to_owned();
    let version = repo.newest(&role)?.unwrap_or(0) + 1;
    let doc = json!({
        "_type": "targets", "spec_version": SPEC_VERSION, "version": version,
        "expires": rfc3339(now + ROLE_DAYS * 86_400), "targets": targets,
    });
    let sig = json!({"keyid": key_id(&tuf_key(key.public())), "sig": hex(&key.try_sign(&canonical(&doc))?)});
    Ok(RoleProposal { role, signed: doc, signatures: vec![sig] })
}

/// Adds `key`'s signature to a proposal after checking the signatures it has: each by a
/// release key of the root, none by `key` (two people, not one key twice).
pub fn cosign(repo: &Repo, proposal: &mut RoleProposal, key: &dyn Signer) -> Result<(), OpsError> {
    let (_, root) = repo.root()?;
    let body = canonical(&proposal.signed);
    let mine = key_id(&tuf_key(key.public()));
    let listed = |id: &str| root["roles"]["snapshot"]["keyids"].as_array().is_some_and(|ids| ids.iter().any(|k| k.as_str() == Some(id)));
    for sig in &proposal.signatures {
        let id = sig["keyid"].as_str().unwrap_or_default();
        if id == mine {
            return Err(OpsError::Refused(
                "this key already signed the proposal: the second signature must come from another release key (two people)".to_owned(),
            ));
        }
        let public = public_of(&root["keys"][id])
            .filter(|_| listed(id))
            .ok_or_else(|| OpsError::Refused(format!("the proposal is signed by {id}, not a release key of the trust root")))?;
        let raw = schema::model::unhex(sig["sig"].as_str().unwrap_or_default()).unwrap_or_default();
        if !public.verify(&body, &raw) {
            return Err(OpsError::Refused(format!("the proposal's signature by {id} does not verify: it was altered")));
        }
    }
    if !listed(&mine) {
        return Err(OpsError::Refused(format!("the key {mine} is not a release key of the trust root")));
    }
    proposal.signatures.push(json!({"keyid": mine, "sig": hex(&key.try_sign(&body)?)}));
    Ok(())
}

/// Writes a role's metadata (`N.<role>.json`); the next [`publish`] lists it in the snapshot.
pub fn write_role(repo: &Repo, proposal: &RoleProposal) -> Result<PathBuf, OpsError> {
    let version = proposal.signed["version"].as_u64().unwrap_or(0);
    let mut sigs = proposal.signatures.clone();
    sigs.sort_by(|a, b| a["keyid"].as_str().cmp(&b["keyid"].as_str()));
    let bytes = serde_json::to_vec(&json!({"signed": proposal.signed, "signatures": sigs})).expect("a JSON value serializes");
    let path = repo.metadata().join(format!("{version}.{}.json", proposal.role));
    write_new(&path, &bytes)?;
    Ok(path)
}

/// The offline part of the repository, signed by the root keys at `init` and `rotate`: the
/// top-level targets, which delegate `edge` to the release keys (threshold 1) and `stable` and
/// `lts` to a gate each; each gate delegates its channel to the release keys with a threshold
/// of two. A release key can so sign edge alone, never stable or lts, and cannot change the
/// delegations (the root keys can). The gates exist because `tough`'s client stops loading
/// a role's delegations at the first one without metadata: with stable and lts each behind its
/// own gate, a channel not yet moved hides no other.
fn write_delegations(repo: &Repo, release: &[Value], root_signers: &[&dyn Signer], threshold: u64, expires: i64) -> Result<(), OpsError> {
    let release_ids = register(&mut BTreeMap::new(), release.iter().cloned());
    let root_objs: Vec<Value> = root_signers.iter().map(|k| tuf_key(k.public())).collect();
    let root_ids = register(&mut BTreeMap::new(), root_objs.iter().cloned());
    let keys_of =
        |objs: &[&[Value]]| -> BTreeMap<String, Value> { objs.iter().flat_map(|o| o.iter()).map(|k| (key_id(k), k.clone())).collect() };
    let expires = rfc3339(expires);
    let meta = repo.metadata();
    let next = |role: &str| -> Result<u64, OpsError> { Ok(repo.newest(role)?.unwrap_or(0) + 1) };
    let paths = |c: &str| json!([format!("channel-{c}.json"), format!("release-{c}-*")]);
    let mut roles = vec![json!({"name": "edge", "keyids": release_ids, "threshold": 1, "terminating": true, "paths": paths("edge")})];
    for c in TWO_PERSON {
        let gate = format!("{c}-gate");
        roles.push(json!({"name": gate, "keyids": root_ids, "threshold": threshold, "terminating": true, "paths": paths(c.as_str())}));
        let gate_doc = json!({
            "_type": "targets", "spec_version": SPEC_VERSION, "version": next(&gate)?, "expires": expires, "targets": {},
            "delegations": {
                "keys": keys_of(&[release]),
                "roles": [{"name": c.as_str(), "keyids": release_ids, "threshold": 2, "terminating": true, "paths": paths(c.as_str())}],
            },
        });
        write_new(&meta.join(format!("{}.{gate}.json", next(&gate)?)), &sign_doc(&gate_doc, root_signers)?)?;
    }
    let top = json!({
        "_type": "targets", "spec_version": SPEC_VERSION, "version": next("targets")?, "expires": expires, "targets": {},
        "delegations": {"keys": keys_of(&[release, &root_objs]), "roles": roles},
    });
    write_new(&meta.join(format!("{}.targets.json", next("targets")?)), &sign_doc(&top, root_signers)?)
}

fn file_meta(version: u64, bytes: &[u8]) -> Value {
    json!({"version": version, "length": bytes.len(), "hashes": {"sha256": Digest::of(bytes).hex()}})
}

/// Stores a target under its hash (consistent snapshots) and lists it.
fn add_target(
    repo: &Repo,
    name: &str,
    bytes: &[u8],
    custom: Option<Value>,
    targets: &mut BTreeMap<String, Value>,
    names: &mut BTreeMap<String, Digest>,
) -> Result<(), OpsError> {
    let digest = Digest::of(bytes);
    let path = repo.targets().join(format!("{}.{name}", digest.hex()));
    if !path.exists() {
        write_new(&path, bytes)?;
    }
    let mut entry = json!({"length": bytes.len(), "hashes": {"sha256": digest.hex()}});
    if let Some(c) = custom {
        entry["custom"] = c;
    }
    targets.insert(name.to_owned(), entry);
    names.insert(name.to_owned(), digest);
    Ok(())
}

pub use verifier::tuf_client::ChannelTarget;

/// Reads the trust repository with `tough`'s client ([`verifier::tuf_client::check`], what
/// the customer tool runs too), from the trusted root `trusted_root`.
pub fn check(repo: &Repo, trusted_root: &Path) -> Result<Vec<ChannelTarget>, OpsError> {
    verifier::tuf_client::check(&repo.metadata(), &repo.targets(), trusted_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The root as `tough` reads it: every key id is the one `tough` computes, and the root's
    /// signatures verify under its own `root` role (ECDSA and Ed25519 keys).
    #[test]
    fn tough_agrees_on_key_ids_and_root_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::of(dir.path());
        let roots = [SigningKey::generate(KeyKind::EcdsaP256), SigningKey::generate(KeyKind::Ed25519)];
        let release = SigningKey::generate(KeyKind::EcdsaP256);
        let req = Init {
            repo: &repo,
            root_keys: &roots,
            threshold: 2,
            release_keys: &[release.public().clone()],
            now: 1_813_492_800,
            root_days: 365,
        };
        let path = init(&req).unwrap();
        let root: tough::schema::Signed<tough::schema::Root> = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(root.signed.keys.len(), 3);
        for (id, key) in &root.signed.keys {
            assert_eq!(&key.key_id().unwrap(), id);
        }
        root.signed.verify_role(&root).unwrap();
        assert!(repo.may_sign_targets(release.public()).unwrap());
        assert!(!repo.may_sign_targets(roots[0].public()).unwrap());
        // A second init, a threshold above the key count: refused.
        assert!(init(&req).unwrap_err().to_string().contains("already has a TUF root"));
        let other = tempfile::tempdir().unwrap();
        let repo2 = Repo::of(other.path());
        let bad = Init { repo: &repo2, threshold: 3, ..req };
        assert!(init(&bad).unwrap_err().to_string().contains("between 1 and the number of root keys (2)"));
    }
}
