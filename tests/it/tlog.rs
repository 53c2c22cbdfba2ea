//! The transparency log (issue 16, point 3), end to end: releases entered in a test log on
//! loopback, `verify` checking every entry offline against the log's pinned key, and the log
//! down: the release completes, `promote` refuses it, `attest resubmit` sends the queue and
//! signs its record, then the release is promotable and verifies.
//!
//! No Rekor server is packaged for Debian, so the log is a fake of the edge ([`TestLog`]):
//! Rekor v1's entry API (`POST /api/v1/log/entries`, `GET .../entries/<uuid>`, 201 / 409 with
//! `Location`), storing each entry as Rekor canonicalizes it (`hashedrekord` as sent, `dsse` as
//! envelope hash, payload hash and signatures), in a real RFC 6962 Merkle tree. Its tree and
//! audit paths are computed here by the RFC's recursive definitions (MTH, PATH), independently
//! of the verifier's iterative check; its checkpoints are signed notes and its signed entry
//! timestamps are signed with its own ECDSA P-256 key, so the verifier's checks have something
//! real to refuse. It can be told to lie in its v1 answers ([`Lie`]), so that the release's own
//! check of each answer has something real to refuse too.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::Digest as _;

use crate::support::{xtask_cmd, Repo, Run};
use crate::trust::{keygen, PASS};

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn sha(b: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(b).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// RFC 6962 §2.1, as written there.
fn leaf(body: &[u8]) -> [u8; 32] {
    sha(&[&[0u8][..], body].concat())
}
fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    sha(&[&[1u8][..], l, r].concat())
}
fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}
fn mth(d: &[[u8; 32]]) -> [u8; 32] {
    if d.len() == 1 {
        return d[0];
    }
    let k = k_of(d.len());
    node(&mth(&d[..k]), &mth(&d[k..]))
}
fn path(m: usize, d: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if d.len() == 1 {
        return Vec::new();
    }
    let k = k_of(d.len());
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// A signed note (checkpoint) over `text`, signed by `key` under `name`: the 4-byte key hint
/// (sha256 of the SPKI DER) then the DER signature.
pub(crate) fn signed_note(text: &str, name: &str, key: &verifier::keys::SigningKey) -> String {
    let id = key.public().key_id();
    let mut sig: Vec<u8> = (0..4).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()).collect();
    sig.extend(key.sign(text.as_bytes()));
    format!("{text}\n\u{2014} {name} {}\n", b64().encode(sig))
}

/// How the test log lies in its Rekor v1 answers (the entries are stored honestly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lie {
    Not,
    /// An audit path with one more hash than the tree has: it does not recompute the root.
    InclusionProof,
    /// The checkpoint signed by another key (under the log's name).
    CheckpointSigner,
    /// The signed entry timestamp signed by another key.
    EntryTimestampSigner,
}

struct LogState {
    key: verifier::keys::SigningKey,
    /// What signs when the log lies about its signer.
    impostor: verifier::keys::SigningKey,
    lie: Lie,
    leaves: Vec<[u8; 32]>,
    /// Seconds added to the clock for the integrated time of new entries ([`TestLog::shift_time`]).
    shift: i64,
    /// uuid -> (index, body base64, integrated time)
    entries: BTreeMap<String, (usize, String, i64)>,
}

impl LogState {
    /// Rekor's canonical body of a proposed entry.
    fn canonical(proposed: &serde_json::Value) -> Result<Vec<u8>, String> {
        match proposed["kind"].as_str() {
            Some("hashedrekord") => Ok(proposed.to_string().into_bytes()),
            Some("dsse") => {
                let content = &proposed["spec"]["proposedContent"];
                let envelope = content["envelope"].as_str().ok_or("no envelope")?;
                let env: serde_json::Value = serde_json::from_str(envelope).map_err(|e| e.to_string())?;
                let payload = b64().decode(env["payload"].as_str().ok_or("no payload")?).map_err(|e| e.to_string())?;
                let verifier = content["verifiers"][0].as_str().ok_or("no verifier")?;
                let sigs: Vec<serde_json::Value> = env["signatures"]
                    .as_array()
                    .ok_or("no signatures")?
                    .iter()
                    .map(|s| serde_json::json!({ "signature": s["sig"], "verifier": verifier }))
                    .collect();
                Ok(serde_json::json!({
                    "apiVersion": "0.0.1",
                    "kind": "dsse",
                    "spec": {
                        "envelopeHash": { "algorithm": "sha256", "value": hex(&sha(envelope.as_bytes())) },
                        "payloadHash": { "algorithm": "sha256", "value": hex(&sha(&payload)) },
                        "signatures": sigs,
                    },
                })
                .to_string()
                .into_bytes())
            }
            k => Err(format!("unsupported kind {k:?}")),
        }
    }

    /// Rekor v2's canonical body (version 0.0.2) of a `CreateEntryRequest`.
    fn canonical_v2(request: &serde_json::Value) -> Result<Vec<u8>, String> {
        if let Some(h) = request.get("hashedRekordRequestV002") {
            return Ok(serde_json::json!({
                "apiVersion": "0.0.2",
                "kind": "hashedrekord",
                "spec": { "hashedRekordV002": {
                    "data": { "algorithm": "SHA2_256", "digest": h["digest"] },
                    "signature": h["signature"],
                }},
            })
            .to_string()
            .into_bytes());
        }
        let d = request.get("dsseRequestV002").ok_or("neither hashedRekordRequestV002 nor dsseRequestV002")?;
        let payload = b64().decode(d["envelope"]["payload"].as_str().ok_or("no payload")?).map_err(|e| e.to_string())?;
        let sigs: Vec<serde_json::Value> = d["envelope"]["signatures"]
            .as_array()
            .ok_or("no signatures")?
            .iter()
            .map(|s| serde_json::json!({ "content": s["sig"], "verifier": d["verifiers"][0] }))
            .collect();
        Ok(serde_json::json!({
            "apiVersion": "0.0.2",
            "kind": "dsse",
            "spec": { "dsseV002": {
                "payloadHash": { "algorithm": "SHA2_256", "digest": b64().encode(sha(&payload)) },
                "signatures": sigs,
            }},
        })
        .to_string()
        .into_bytes())
    }

    /// Rekor v2's answer: a `TransparencyLogEntry` (protobuf JSON), proven against the
    /// current tree.
    fn answer_v2(&self, uuid: &str) -> String {
        let (index, body, _) = &self.entries[uuid];
        let size = self.leaves.len();
        let root = mth(&self.leaves);
        let checkpoint = signed_note(&format!("rekor.test - 2\n{size}\n{}\n", b64().encode(root)), "rekor.test", &self.key);
        let decoded: serde_json::Value = serde_json::from_slice(&b64().decode(body).unwrap()).unwrap();
        let key_id: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&self.key.public().key_id()[2 * i..2 * i + 2], 16).unwrap()).collect();
        serde_json::json!({
            "logIndex": index.to_string(),
            "logId": { "keyId": b64().encode(key_id) },
            "kindVersion": { "kind": decoded["kind"], "version": decoded["apiVersion"] },
            "inclusionProof": {
                "logIndex": index.to_string(),
                "rootHash": b64().encode(root),
                "treeSize": size.to_string(),
                "hashes": path(*index, &self.leaves).iter().map(|h| b64().encode(h)).collect::<Vec<_>>(),
                "checkpoint": { "envelope": checkpoint },
            },
            "canonicalizedBody": body,
        })
        .to_string()
    }

    /// The log's answer for `uuid`, proven against the current tree.
    fn answer(&self, uuid: &str) -> String {
        let (index, body, time) = &self.entries[uuid];
        let size = self.leaves.len();
        let root = mth(&self.leaves);
        let log_id = self.key.public().key_id();
        let note_key = if self.lie == Lie::CheckpointSigner { &self.impostor } else { &self.key };
        let checkpoint = signed_note(&format!("rekor.test - 1\n{size}\n{}\n", b64().encode(root)), "rekor.test", note_key);
        let promise = serde_json::json!({ "body": body, "integratedTime": time, "logID": log_id, "logIndex": index });
        let set_key = if self.lie == Lie::EntryTimestampSigner { &self.impostor } else { &self.key };
        let set = b64().encode(set_key.sign(promise.to_string().as_bytes()));
        let mut hashes: Vec<String> = path(*index, &self.leaves).iter().map(|h| hex(h)).collect();
        if self.lie == Lie::InclusionProof {
            hashes.push(hex(&sha(b"not in the tree")));
        }
        serde_json::json!({ uuid: {
            "body": body,
            "integratedTime": time,
            "logID": log_id,
            "logIndex": index,
            "verification": {
                "inclusionProof": {
                    "checkpoint": checkpoint,
                    "hashes": hashes,
                    "logIndex": index,
                    "rootHash": hex(&root),
                    "treeSize": size,
                },
                "signedEntryTimestamp": set,
            },
        }})
        .to_string()
    }
}

/// The test log (see the module's comment). Serves until the test ends.
pub(crate) struct TestLog {
    pub url: String,
    /// The log's public key (SPKI PEM), what `verify --rekor-key` pins.
    pub public: PathBuf,
    state: Arc<Mutex<LogState>>,
}

impl TestLog {
    pub fn start(dir: &Path) -> TestLog {
        let key = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256);
        let public = dir.join("rekor.pub");
        fs::write(&public, key.public().pem()).unwrap();
        let impostor = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256);
        let state = Arc::new(Mutex::new(LogState { key, impostor, lie: Lie::Not, leaves: Vec::new(), shift: 0, entries: BTreeMap::new() }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut parts = request_line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let mut st = shared.lock().unwrap();
                let (status, headers, reply) = if method == "POST" && target == "/api/v1/log/entries" {
                    match serde_json::from_slice(&body).map_err(|e| e.to_string()).and_then(|v| LogState::canonical(&v)) {
                        Err(e) => ("400 Bad Request", String::new(), serde_json::json!({ "message": e }).to_string()),
                        Ok(canonical) => {
                            let l = leaf(&canonical);
                            let uuid = hex(&l);
                            if st.entries.contains_key(&uuid) {
                                (
                                    "409 Conflict",
                                    format!("Location: /api/v1/log/entries/{uuid}\r\n"),
                                    "{\"message\":\"an equivalent entry already exists\"}".to_owned(),
                                )
                            } else {
                                let index = st.leaves.len();
                                st.leaves.push(l);
                                let now =
                                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + st.shift;
                                st.entries.insert(uuid.clone(), (index, b64().encode(&canonical), now));
                                ("201 Created", String::new(), st.answer(&uuid))
                            }
                        }
                    }
                } else if method == "POST" && target == "/api/v2/log/entries" {
                    match serde_json::from_slice(&body).map_err(|e| e.to_string()).and_then(|v| LogState::canonical_v2(&v)) {
                        Err(e) => ("400 Bad Request", String::new(), serde_json::json!({ "message": e }).to_string()),
                        Ok(canonical) => {
                            let l = leaf(&canonical);
                            let uuid = hex(&l);
                            // A duplicate is answered with the entry the log has.
                            let status = if st.entries.contains_key(&uuid) { "200 OK" } else { "201 Created" };
                            if !st.entries.contains_key(&uuid) {
                                let index = st.leaves.len();
                                st.leaves.push(l);
                                st.entries.insert(uuid.clone(), (index, b64().encode(&canonical), 0));
                            }
                            (status, String::new(), st.answer_v2(&uuid))
                        }
                    }
                } else if let Some(uuid) = target.strip_prefix("/api/v1/log/entries/").filter(|u| st.entries.contains_key(*u)) {
                    ("200 OK", String::new(), st.answer(uuid))
                } else {
                    ("404 Not Found", String::new(), "{}".to_owned())
                };
                drop(st);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        TestLog { url, public, state }
    }

    pub fn size(&self) -> usize {
        self.state.lock().unwrap().leaves.len()
    }

    /// From now on, new entries are logged at the clock's time plus `secs` (a log whose signed
    /// entry time lies outside a signing certificate's validity).
    pub fn shift_time(&self, secs: i64) {
        self.state.lock().unwrap().shift = secs;
    }

    /// From now on, answers lie as `lie` says.
    pub fn lie(&self, lie: Lie) {
        self.state.lock().unwrap().lie = lie;
    }
}

/// One test log for every test of the binary that only needs releases to be logged.
pub(crate) fn shared_log() -> &'static TestLog {
    static LOG: std::sync::OnceLock<TestLog> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let dir = crate::support::workspace().join("target/tmp/shared-test-log");
        fs::create_dir_all(&dir).unwrap();
        TestLog::start(&dir)
    })
}

/// A loopback URL nothing listens on (connections refused): the log is down.
fn down() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn verify(dir: &Path, public: &Path, rekor: Option<&Path>) -> Run {
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(dir).arg("--key").arg(public);
    if let Some(r) = rekor {
        cmd.arg("--rekor-key").arg(r);
    }
    Run::of(cmd.output().unwrap())
}

#[track_caller]
fn fails_with(run: &Run, needles: &[&str]) {
    assert_eq!(run.code, 1, "expected exit 1\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    for n in needles {
        assert!(all.contains(n), "output lacks `{n}`:\n{all}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    crate::support::run_ok(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}

/// The `.rekor.json` of entry `id` in `dir`, parsed; and a writer for it.
fn entry(dir: &Path, id: &str) -> (PathBuf, serde_json::Value) {
    let p = dir.join("attest/tlog").join(format!("{}.rekor.json", id.replace('/', "__")));
    let v = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    (p, v)
}

/// A stable release entered in the test log verifies with the log's key and fails, naming the
/// entry, on a flipped byte of an inclusion proof, on a checkpoint signed by another key, on an
/// entry removed, on another log's key, and without the log key at all. A stable release is
/// refused before any work when no log is configured, and one cut without a log (its channel's
/// `required` turned off) does not verify.
#[test]
fn tlog_verify_checks_every_entry_of_a_stable_release_against_a_fake_rekor_v1_edge_log() {
    let repo = Repo::new();
    repo.git(&["tag", "v2.4.1"]);
    let (key, public) = keygen(&repo, "release", "ecdsa-p256");
    let scratch = tempfile::tempdir().unwrap();
    let log = TestLog::start(scratch.path());
    let stable = |extra: &[&str]| {
        let mut cmd = xtask_cmd();
        cmd.args(["release", "--channel", "stable", "--skip-gates", "--key"])
            .arg(&key)
            .args(extra)
            .arg("--source")
            .arg(repo.path())
            .env("STELLAOPS_KEY_PASSPHRASE", PASS);
        Run::of(cmd.output().unwrap())
    };
    // 1. No log: refused before any work, with the hint.
    stable(&[]).refused(&[
        "a `stable` release needs a transparency log",
        "[transparency-log]",
        "hint: set `url` under `[transparency-log]` in `release-trains/stable.toml`, or pass `--rekor-url URL`",
    ]);
    assert!(!repo.releases().join("2.4.1-stable").exists());

    // 2. With the log: every signature and envelope entered (24 image signatures, 48 SBOM and
    //    provenance envelopes, the drift report, release.yaml, the gate record), each verified offline.
    stable(&["--rekor-url", &log.url]).ok();
    assert_eq!(log.size(), 77);
    let dir = repo.releases().join("2.4.1-stable");
    let yaml = fs::read_to_string(dir.join("release.yaml")).unwrap();
    assert!(!yaml.contains("pending") && !yaml.contains("\"none\""), "{yaml}");
    let run = verify(&dir, &public, Some(&log.public));
    run.ok();
    let checked = run.stdout.lines().filter(|l| l.starts_with("[ok  ] transparency log: `") && l.contains("inclusion proof")).count();
    assert_eq!(checked, 77, "{}", run.stdout);
    // release.yaml's rekorUUID is the UUID of the index signature's entry.
    let (_, e) = entry(&dir, &format!("images/sha256-{}.sig", &yaml[yaml.find("authority@sha256:").unwrap() + 17..][..64]));
    let uuid = e.as_object().unwrap().keys().next().unwrap().clone();
    assert!(yaml.contains(&format!("rekorUUID: \"{uuid}\"")), "{uuid}\n{yaml}");

    // The release's kit carries the entries: `verify KIT` checks them too, and needs the key.
    let kit = dir.join("stellaops-kit-2.4.1-stable.tar.zst");
    let run = verify(&kit, &public, Some(&log.public));
    run.ok();
    fails_with(&verify(&kit, &public, None), &["refused", "--rekor-key FILE"]);

    let case = |name: &str, tamper: &dyn Fn(&Path)| -> Run {
        let d = scratch.path().join(name);
        copy_dir(&dir, &d);
        tamper(&d);
        verify(&d, &public, Some(&log.public))
    };
    // 3. A flipped byte in an inclusion proof's audit path.
    let id = "attest/signer/linux-arm64.provenance.dsse.json";
    let run = case("proof", &|d| {
        let (p, mut v) = entry(d, id);
        let e = v.as_object_mut().unwrap().values_mut().next().unwrap();
        let h = e["verification"]["inclusionProof"]["hashes"][0].as_str().unwrap().to_owned();
        let flipped = format!("{}{}", if h.starts_with('0') { "1" } else { "0" }, &h[1..]);
        e["verification"]["inclusionProof"]["hashes"][0] = flipped.into();
        fs::write(p, v.to_string()).unwrap();
    });
    fails_with(&run, &[&format!("[FAIL] transparency log: `{id}`"), "inclusion proof: the audit path leads to root"]);
    assert_eq!(run.stdout.lines().filter(|l| l.starts_with("[FAIL]")).count(), 1, "{}", run.stdout);
    // 4. The checkpoint re-signed by another key (same text: a log that is not the pinned one).
    let rogue = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256);
    let id = "release.yaml";
    let run = case("checkpoint", &|d| {
        let (p, mut v) = entry(d, id);
        let e = v.as_object_mut().unwrap().values_mut().next().unwrap();
        let note = e["verification"]["inclusionProof"]["checkpoint"].as_str().unwrap().to_owned();
        let text = &note[..note.find("\n\n").unwrap() + 1];
        e["verification"]["inclusionProof"]["checkpoint"] = signed_note(text, "rekor.test", &rogue).into();
        fs::write(p, v.to_string()).unwrap();
    });
    fails_with(&run, &["[FAIL] transparency log: `release.yaml`", "checkpoint: the checkpoint is not signed by the pinned log key"]);
    // 4b. Another artifact's entry (genuine, proven) in an entry's place: its body is not about
    //     this signature / this envelope.
    let sig_of = |c: &str| format!("images/sha256-{}.sig", &yaml[yaml.find(&format!("{c}@sha256:")).unwrap() + c.len() + 8..][..64]);
    let (authority, signer) = (sig_of("authority"), sig_of("signer"));
    let run = case("swapped-sig", &|d| {
        fs::copy(entry(d, &authority).0, entry(d, &signer).0).unwrap();
    });
    fails_with(&run, &[&format!("[FAIL] transparency log: `{signer}`"), "the logged body is about `sha256:"]);
    let run = case("swapped-dsse", &|d| {
        fs::copy(entry(d, "attest/web-ui/linux-amd64.sbom.dsse.json").0, entry(d, "attest/web-ui/linux-arm64.sbom.dsse.json").0).unwrap();
    });
    fails_with(
        &run,
        &["[FAIL] transparency log: `attest/web-ui/linux-arm64.sbom.dsse.json`", "the logged envelope hash is not the envelope's"],
    );
    // 5. An entry removed: named.
    let id = "attest/drift.dsse.json";
    let run = case("removed", &|d| fs::remove_file(entry(d, id).0).unwrap());
    fails_with(&run, &["[FAIL] transparency log: `attest/drift.dsse.json`", "no log entry"]);
    // 6. Another log's key: every entry refused; no log key: refused with the flag to pass.
    let other_log = scratch.path().join("other");
    fs::create_dir_all(&other_log).unwrap();
    let other = TestLog::start(&other_log);
    let run = verify(&dir, &public, Some(&other.public));
    fails_with(&run, &["is not the pinned log key's"]);
    assert_eq!(run.stdout.lines().filter(|l| l.starts_with("[FAIL] transparency log: `")).count(), 77);
    fails_with(&verify(&dir, &public, None), &["[FAIL] transparency log", "--rekor-key FILE"]);

    // 7. Other people's verifier: release.yaml's sigstore bundle carries its log entry
    //    (`tlogEntries`, bundle v0.3), and npm @sigstore/verify, with a trusted root naming only
    //    the test log's key, checks its body, SET, signed checkpoint and inclusion proof; it
    //    refuses another log's key, a flipped byte of the proof and a checkpoint signed by
    //    another key.
    if let Some(script) = crate::support::verifier("STELLAOPS_VERIFY_SIGSTORE") {
        let bundle = dir.join("release.yaml.sigstore.json");
        let node = |bundle: &Path, rekor: &Path| {
            Run::of(
                std::process::Command::new("node")
                    .arg(&script)
                    .arg(bundle)
                    .arg(dir.join("release.yaml"))
                    .arg(&public)
                    .arg(rekor)
                    .output()
                    .unwrap(),
            )
        };
        let run = node(&bundle, &log.public);
        run.ok();
        assert!(run.stdout.contains("bundle verified"), "{run:?}");
        let run = node(&bundle, &other.public);
        assert_ne!(run.code, 0, "{run:?}");
        let edited = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
            let mut b: serde_json::Value = serde_json::from_slice(&fs::read(&bundle).unwrap()).unwrap();
            edit(&mut b["verificationMaterial"]["tlogEntries"][0]);
            let p = scratch.path().join(name);
            fs::write(&p, b.to_string()).unwrap();
            p
        };
        let proof = edited("bundle-proof.json", &|e| {
            let mut h = b64().decode(e["inclusionProof"]["hashes"][0].as_str().unwrap()).unwrap();
            h[0] ^= 1;
            e["inclusionProof"]["hashes"][0] = b64().encode(h).into();
        });
        let run = node(&proof, &log.public);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains("calculated root hash does not match inclusion proof"), "{run:?}");
        let checkpoint = edited("bundle-checkpoint.json", &|e| {
            let note = e["inclusionProof"]["checkpoint"]["envelope"].as_str().unwrap().to_owned();
            e["inclusionProof"]["checkpoint"]["envelope"] =
                signed_note(&note[..note.find("\n\n").unwrap() + 1], "rekor.test", &rogue).into();
        });
        let run = node(&checkpoint, &log.public);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains("invalid checkpoint signature"), "{run:?}");
    }

    // 8. A stable release without log entries: its channel's `required` turned off in a
    //    commit, cut with no log, it is released and does not verify.
    repo.edit("release-trains/stable.toml", "required = true", "required = false");
    repo.commit_all("no log", crate::support::EPOCH);
    repo.git(&["tag", "-f", "v2.4.1"]);
    let bare = scratch.path().join("bare");
    stable(&["--out", bare.to_str().unwrap()]).ok();
    fails_with(
        &verify(&bare, &public, Some(&log.public)),
        &["[FAIL] transparency log", "a `stable` release must have every signature in a transparency log"],
    );
}

/// The log down (spec §12.2): the release completes with every entry queued and release.yaml
/// saying `pending`; `promote` refuses it; `attest resubmit` with the log back sends the queue
/// and signs `attest/tlog/resubmitted.dsse.json`; then `promote` accepts it and `verify` checks
/// the new entries. A second release against the same log gets its entries back as 409s.
#[test]
fn tlog_log_down_release_completes_promote_refuses_resubmit_to_a_fake_rekor_v1_edge_makes_it_promotable() {
    let repo = Repo::new();
    // Every `xtask` call signs with a release key (stable is never signed with the dev key).
    let public = repo.release_key();
    let key = public.with_extension("key");
    let scratch = tempfile::tempdir().unwrap();
    let run = repo.xtask(&["release", "--channel", "edge", "--rekor-url", &down()]);
    run.ok();
    assert!(run.stderr.contains("entries pending"), "{}", run.stderr);
    let dir = repo.releases().join("2.4.1-edge");
    let yaml = fs::read_to_string(dir.join("release.yaml")).unwrap();
    assert_eq!(yaml.matches("rekorUUID: \"pending\"").count(), 8, "{yaml}");
    let queue = || fs::read_dir(dir.join("attest/tlog/pending")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(queue(), 77);
    // Edge does not require a log: nothing logged, the release verifies, saying so.
    let run = verify(&dir, &public, None);
    run.ok();
    assert!(run.stdout.contains("transparency log: nothing logged, 77 entries pending"), "{}", run.stdout);

    // An edge release cut without a log is promotable on edge, never into stable (which
    // requires a log: `[transparency-log] required` of stable.toml).
    let plain = repo.path().join("target/plain");
    repo.xtask(&["release", "--channel", "edge", "--out", plain.to_str().unwrap()]).ok();
    repo.xtask(&["promote", plain.to_str().unwrap(), "--to", "stable"])
        .refused(&["cannot be promoted to `stable`", "the channel requires a transparency log and this release was cut without one"]);

    // Not promotable while entries wait.
    let d = dir.to_str().unwrap();
    repo.xtask(&["promote", d, "--to", "edge"]).refused(&[
        "cannot be promoted to `edge`",
        "77 transparency-log entries are pending",
        "attest resubmit",
    ]);

    // The log back: resubmit (with the release's key) sends all, records them, signed.
    let log = TestLog::start(scratch.path());
    let resubmit = |key: &Path| {
        let mut cmd = xtask_cmd();
        cmd.args(["attest", "resubmit"]).arg(&dir).args(["--rekor-url", &log.url, "--json", "--key"]).arg(key);
        Run::of(cmd.output().unwrap())
    };
    // Another key is refused before anything is sent.
    let (other, _) = keygen(&repo, "other", "ecdsa-p256");
    let mut cmd = xtask_cmd();
    cmd.args(["attest", "resubmit"]).arg(&dir).args(["--rekor-url", &log.url, "--key"]).arg(&other).env("STELLAOPS_KEY_PASSPHRASE", PASS);
    Run::of(cmd.output().unwrap()).refused(&["does not verify with the given key"]);
    assert_eq!(log.size(), 0);
    let run = resubmit(&key);
    run.ok();
    assert_eq!(run.json()["sent"], 77);
    assert_eq!(queue(), 0);
    assert_eq!(log.size(), 77);
    assert!(dir.join("attest/tlog/resubmitted.dsse.json").is_file());

    // Promotable now; verify checks the new entries, and the record for release.yaml's
    // `pending` index signatures.
    repo.xtask(&["promote", d, "--to", "edge"]).ok();
    let run = verify(&dir, &public, Some(&log.public));
    run.ok();
    let checked = run.stdout.lines().filter(|l| l.starts_with("[ok  ] transparency log: `") && l.contains("inclusion proof")).count();
    assert_eq!(checked, 77, "{}", run.stdout);
    // Without the record, release.yaml's `pending` is not taken as logged.
    let bare = scratch.path().join("no-record");
    copy_dir(&dir, &bare);
    fs::remove_file(bare.join("attest/tlog/resubmitted.dsse.json")).unwrap();
    fails_with(&verify(&bare, &public, Some(&log.public)), &["release.yaml states `pending` and no signed resubmission record"]);
    // A record signed by another key is refused, named.
    let forged = scratch.path().join("forged");
    copy_dir(&dir, &forged);
    let other_key = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256);
    let st = verifier::tlog::resubmission_statement(
        &schema::model::Digest::of(&fs::read(dir.join("release.yaml")).unwrap()),
        &log.url,
        &BTreeMap::new(),
    );
    verifier::sign::write_json(
        &forged.join("attest/tlog/resubmitted.dsse.json"),
        &verifier::sign::sign_envelope(&other_key, verifier::sign::PAYLOAD_TYPE, &st).unwrap(),
    )
    .unwrap();
    fails_with(&verify(&forged, &public, Some(&log.public)), &["[FAIL] transparency log: resubmission record"]);

    // A second release against the same log: the repeated entries come back as 409s, fetched
    // with their proofs, and verify.
    let again = repo.path().join("target/again");
    repo.xtask(&["release", "--channel", "edge", "--rekor-url", &log.url, "--out", again.to_str().unwrap()]).ok();
    let yaml = fs::read_to_string(again.join("release.yaml")).unwrap();
    assert!(!yaml.contains("pending") && !yaml.contains("\"none\""), "{yaml}");
    verify(&again, &public, Some(&log.public)).ok();
}

/// Rekor v2 (the tiled log's API, `--rekor-api v2`): every entry is sent as a
/// `CreateEntryRequest` and kept as the `TransparencyLogEntry` the log answers (bodies of
/// version 0.0.2); `verify` checks them all offline, refuses a flipped byte of a proof, and the
/// bundle's entry verifies with @sigstore/verify (inclusion proof and checkpoint; v2 signs no
/// entry time). The log down, the queue goes to the v2 log with `attest resubmit --rekor-api v2`.
#[test]
fn tlog_rekor_v2_entries_from_a_fake_rekor_v2_edge_log_verify_offline() {
    let repo = Repo::new();
    let scratch = tempfile::tempdir().unwrap();
    let log = TestLog::start(scratch.path());
    repo.xtask(&["release", "--channel", "edge", "--skip-gates", "--rekor-url", &log.url, "--rekor-api", "v2"]).ok();
    assert_eq!(log.size(), 77);
    let dir = repo.releases().join("2.4.1-edge");
    let public = repo.path().join("target/keys/dev.pub");
    let (_, answer) = entry(&dir, "release.yaml");
    assert_eq!(answer["kindVersion"]["version"], "0.0.2", "{answer}");
    let run = verify(&dir, &public, Some(&log.public));
    run.ok();
    let checked = run.stdout.lines().filter(|l| l.starts_with("[ok  ] transparency log: `") && l.contains("(Rekor v2)")).count();
    assert_eq!(checked, 77, "{}", run.stdout);
    // release.yaml's rekorUUID: the leaf hash of the index signature's entry.
    let yaml = fs::read_to_string(dir.join("release.yaml")).unwrap();
    assert!(!yaml.contains("pending") && !yaml.contains("\"none\""), "{yaml}");

    // A flipped byte in an audit path.
    let d = scratch.path().join("proof");
    copy_dir(&dir, &d);
    let id = "attest/web-ui/linux-amd64.sbom.dsse.json";
    let (p, mut v) = entry(&d, id);
    let mut h = b64().decode(v["inclusionProof"]["hashes"][0].as_str().unwrap()).unwrap();
    h[5] ^= 0x80;
    v["inclusionProof"]["hashes"][0] = b64().encode(h).into();
    fs::write(p, v.to_string()).unwrap();
    let run = verify(&d, &public, Some(&log.public));
    fails_with(&run, &[&format!("[FAIL] transparency log: `{id}`"), "inclusion proof: the audit path leads to root"]);
    assert_eq!(run.stdout.lines().filter(|l| l.starts_with("[FAIL]")).count(), 1, "{}", run.stdout);

    if let Some(script) = crate::support::verifier("STELLAOPS_VERIFY_SIGSTORE") {
        let run = Run::of(
            std::process::Command::new("node")
                .arg(&script)
                .arg(dir.join("release.yaml.sigstore.json"))
                .arg(dir.join("release.yaml"))
                .arg(&public)
                .arg(&log.public)
                .output()
                .unwrap(),
        );
        run.ok();
        assert!(run.stdout.contains("bundle verified"), "{run:?}");
    }

    // The log down, then back: resubmitted to the v2 log, and verified.
    let down_dir = repo.path().join("target/down");
    repo.xtask(&["release", "--channel", "edge", "--skip-gates", "--rekor-url", &down(), "--out", down_dir.to_str().unwrap()]).ok();
    let other = scratch.path().join("v2-again");
    fs::create_dir_all(&other).unwrap();
    let log2 = TestLog::start(&other);
    let mut cmd = xtask_cmd();
    cmd.args(["attest", "resubmit"])
        .arg(&down_dir)
        .args(["--rekor-url", &log2.url, "--rekor-api", "v2", "--key"])
        .arg(repo.path().join("target/keys/dev.key"));
    Run::of(cmd.output().unwrap()).ok();
    assert_eq!(log2.size(), 77);
    verify(&down_dir, &public, Some(&log2.public)).ok();
}

/// A log that answers with a wrong inclusion proof, a checkpoint signed by another key, or a
/// signed entry timestamp signed by another key is not believed at release time: the release
/// checks each answer before keeping it (with the log's key pinned by `--rekor-key`; the proof
/// needs no key), keeps none of the lies, queues every entry as for a log that is down (saying
/// why), and is not promotable. An honest log's answers all pass the same check.
#[test]
fn tlog_a_fake_rekor_v1_edge_log_lying_in_its_proofs_or_signatures_is_not_believed_at_release_time() {
    let repo = Repo::new();
    repo.release_key();
    let scratch = tempfile::tempdir().unwrap();
    let log = TestLog::start(scratch.path());
    let pinned = log.public.to_str().unwrap().to_owned();
    let kept = |dir: &Path| {
        fs::read_dir(dir.join("attest/tlog"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".rekor.json"))
            .count()
    };
    let queued = |dir: &Path| fs::read_dir(dir.join("attest/tlog/pending")).map(|d| d.count()).unwrap_or(0);
    let cases = [
        (Lie::InclusionProof, false, "inclusion proof: "),
        (Lie::InclusionProof, true, "inclusion proof: "),
        (Lie::CheckpointSigner, true, "checkpoint: the checkpoint is not signed by the pinned log key"),
        (Lie::EntryTimestampSigner, true, "the signed entry timestamp does not verify with the pinned log key"),
    ];
    for (i, (lie, pin, says)) in cases.into_iter().enumerate() {
        log.lie(lie);
        let out = repo.path().join(format!("target/lie-{i}"));
        let mut args = vec!["release", "--channel", "edge", "--rekor-url", &log.url, "--out", out.to_str().unwrap()];
        if pin {
            args.extend(["--rekor-key", &pinned]);
        }
        let run = repo.xtask(&args);
        run.ok();
        for s in ["entries pending", "the log's answer does not check, so it is not kept", says] {
            assert!(run.stderr.contains(s), "{lie:?} (key pinned: {pin}): no `{s}` in:\n{}", run.stderr);
        }
        // None of its answers kept; every entry queued; release.yaml says `pending`.
        assert_eq!(kept(&out), 0, "{lie:?}: a lying answer was kept");
        assert_eq!(queued(&out), 77, "{lie:?}");
        let yaml = fs::read_to_string(out.join("release.yaml")).unwrap();
        assert_eq!(yaml.matches("rekorUUID: \"pending\"").count(), 8, "{lie:?}: {yaml}");
        repo.xtask(&["promote", out.to_str().unwrap(), "--to", "edge"])
            .refused(&["transparency-log entries are pending", "attest resubmit"]);
    }
    // The same log, honest: with its key pinned, every answer passes and is kept.
    log.lie(Lie::Not);
    let out = repo.path().join("target/honest");
    let run =
        repo.xtask(&["release", "--channel", "edge", "--rekor-url", &log.url, "--rekor-key", &pinned, "--out", out.to_str().unwrap()]);
    run.ok();
    assert!(!run.stderr.contains("pending"), "{}", run.stderr);
    assert_eq!((kept(&out), queued(&out)), (77, 0));
}
