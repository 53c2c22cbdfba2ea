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

use schema::model::{rfc3339, Channel, Digest};
use verifier::keys::{KeyKind, PublicKey, SigningKey};
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
        Ok(root["roles"]["targets"]["keyids"].as_array().is_some_and(|ids| ids.iter().any(|k| k.as_str() == Some(id.as_str()))))
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `{"signed": doc, "signatures": [...]}`, signed by each key (over the canonical JSON of
/// `doc`). The file is plain JSON with sorted keys and no whitespace: canonical JSON leaves
/// control characters (the newlines of a PEM key) unescaped, which JSON parsers refuse.
fn sign_doc(doc: &Value, keys: &[&SigningKey]) -> Vec<u8> {
    let body = canonical(doc);
    let mut sigs: Vec<Value> = keys.iter().map(|k| json!({"keyid": key_id(&tuf_key(k.public())), "sig": hex(&k.sign(&body))})).collect();
    sigs.sort_by(|a, b| a["keyid"].as_str().cmp(&b["keyid"].as_str()));
    sigs.dedup_by(|a, b| a["keyid"] == b["keyid"]);
    // serde_json's maps are sorted (no `preserve_order` feature in this workspace).
    serde_json::to_vec(&json!({"signed": doc, "signatures": sigs})).expect("a JSON value serializes")
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
    let mut ids = |list: &mut dyn Iterator<Item = &PublicKey>| -> Vec<String> {
        let mut out: Vec<String> = list
            .map(|k| {
                let obj = tuf_key(k);
                let id = key_id(&obj);
                keys.insert(id.clone(), obj);
                id
            })
            .collect();
        out.sort();
        out.dedup();
        out
    };
    let root_ids = ids(&mut req.root_keys.iter().map(|k| k.public()));
    let release_ids = ids(&mut req.release_keys.iter());
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
            "targets": role(&release_ids, 1),
            "snapshot": role(&release_ids, 1),
            "timestamp": role(&release_ids, 1),
        },
    });
    let signers: Vec<&SigningKey> = req.root_keys.iter().collect();
    let bytes = sign_doc(&doc, &signers);
    let meta = req.repo.metadata();
    let first = meta.join("1.root.json");
    write_new(&first, &bytes)?;
    write_new(&meta.join("root.json"), &bytes)?;
    Ok(first)
}

/// What [`publish`] wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub targets_version: u64,
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
    key: &SigningKey,
    now: i64,
) -> Result<Option<Published>, OpsError> {
    if !repo.exists() {
        return Ok(None);
    }
    if !repo.may_sign_targets(key.public())? {
        return Err(OpsError::Refused(format!(
            "the key `{}` is not a release key of the trust root `{}`\n  hint: sign with a key the root lists for `targets`, or rotate the root to add it",
            key.public().key_id(),
            repo.metadata().display()
        )));
    }
    let mut targets = BTreeMap::new();
    let mut names = BTreeMap::new();
    for state in channels {
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
        add_target(repo, &format!("channel-{}.json", c.as_str()), &pointer_bytes, Some(custom), &mut targets, &mut names)?;
        for (dir, path) in &state.kept {
            let bytes = fs::read(path).map_err(io(path))?;
            add_target(repo, &format!("release-{}-{dir}.yaml", c.as_str()), &bytes, None, &mut targets, &mut names)?;
        }
    }
    let expires = rfc3339(now + i64::from(expiry_days) * 86_400);
    let meta = repo.metadata();
    let next = |role: &str| -> Result<u64, OpsError> { Ok(repo.newest(role)?.unwrap_or(0) + 1) };

    let tv = next("targets")?;
    let targets_doc = json!({"_type": "targets", "spec_version": SPEC_VERSION, "version": tv, "expires": expires, "targets": targets});
    let targets_bytes = sign_doc(&targets_doc, &[key]);
    write_new(&meta.join(format!("{tv}.targets.json")), &targets_bytes)?;

    let sv = next("snapshot")?;
    let snapshot_doc = json!({
        "_type": "snapshot", "spec_version": SPEC_VERSION, "version": sv, "expires": expires,
        "meta": {"targets.json": file_meta(tv, &targets_bytes)},
    });
    let snapshot_bytes = sign_doc(&snapshot_doc, &[key]);
    write_new(&meta.join(format!("{sv}.snapshot.json")), &snapshot_bytes)?;

    let ts_path = meta.join("timestamp.json");
    let tsv = if ts_path.exists() { read_json(&ts_path)?["signed"]["version"].as_u64().unwrap_or(0) + 1 } else { 1 };
    let timestamp_expires = rfc3339(now + TIMESTAMP_HOURS * 3600);
    let timestamp_doc = json!({
        "_type": "timestamp", "spec_version": SPEC_VERSION, "version": tsv, "expires": timestamp_expires,
        "meta": {"snapshot.json": file_meta(sv, &snapshot_bytes)},
    });
    write_new(&ts_path, &sign_doc(&timestamp_doc, &[key]))?;
    Ok(Some(Published { targets_version: tv, snapshot_version: sv, timestamp_version: tsv, timestamp_expires, targets: names }))
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

/// A channel as a TUF client sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTarget {
    pub channel: Channel,
    pub custom: BTreeMap<String, Value>,
    pub pointer: Digest,
}

/// Reads the trust repository with `tough`'s client (a second implementation: python-tuf is
/// the third, in the tests), from the trusted root `trusted_root` (a client's copy), checking
/// every signature, threshold, version and hash; expiry against the wall clock. Returns each
/// channel's target.
pub fn check(repo: &Repo, trusted_root: &Path) -> Result<Vec<ChannelTarget>, OpsError> {
    let root_bytes = fs::read(trusted_root).map_err(io(trusted_root))?;
    let url = |p: PathBuf| {
        url::Url::from_directory_path(&p).map_err(|_| OpsError::Invalid(format!("`{}`: not an absolute directory", p.display())))
    };
    let (meta, targets) = (url(repo.metadata())?, url(repo.targets())?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| OpsError::Environment(e.to_string()))?;
    rt.block_on(async {
        let loaded = tough::RepositoryLoader::new(&root_bytes, meta, targets)
            .load()
            .await
            .map_err(|e| OpsError::Refused(format!("the trust repository `{}` does not verify: {e}", repo.dir().display())))?;
        let mut out = Vec::new();
        for (name, target) in loaded.targets().signed.targets_iter() {
            let Some(channel) = name.raw().strip_prefix("channel-").and_then(|n| n.strip_suffix(".json")) else { continue };
            let channel: Channel = channel.parse().map_err(|e| OpsError::Invalid(format!("target `{}`: {e}", name.raw())))?;
            let mut stream = loaded
                .read_target(name)
                .await
                .map_err(|e| OpsError::Refused(format!("target `{}`: {e}", name.raw())))?
                .ok_or_else(|| OpsError::Refused(format!("target `{}` is listed but absent", name.raw())))?;
            let mut bytes = Vec::new();
            use futures_util::StreamExt as _;
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk.map_err(|e| OpsError::Refused(format!("target `{}`: {e}", name.raw())))?);
            }
            let custom = target.custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            out.push(ChannelTarget { channel, custom, pointer: Digest::of(&bytes) });
        }
        out.sort_by_key(|t| t.channel);
        Ok(out)
    })
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
