//! Kill at every step (issue 18): `release`, `kit import`, `publish` and `promote` are killed
//! with SIGKILL (`Child::kill`) at each stage boundary they report (`--json` progress events),
//! at the points between their renames (the `pause@<point>` test hook, `oci::pause`, stops
//! them there to be killed), and after random delays. After every kill the visible state is
//! the old one or the new one, checked by the tools a user has (`verify`, `verify-pointer`,
//! `trust check`, the registry's own answers); the next run is not blocked by a lock, completes
//! (publish with `--resume`), and leaves nothing of the killed runs behind.
//!
//! The random delays come from a seed printed in every assertion message; set
//! `STELLAOPS_KILL_SEED` to replay one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{xtask_cmd, Repo, Run, EPOCH};

/// A small deterministic generator (xorshift64*) seeded from the clock or `STELLAOPS_KILL_SEED`.
struct Rng {
    seed: u64,
    state: u64,
}

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("STELLAOPS_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
        eprintln!("kill seed {seed} (replay with STELLAOPS_KILL_SEED={seed})");
        Rng { seed, state: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A delay in `[0, max)`.
    fn delay(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.next() % (max.as_micros().max(1) as u64))
    }
}

/// When to kill a run.
#[derive(Debug, Clone)]
enum At {
    /// When a line of its output (stdout or stderr) contains this text.
    Line(String),
    /// At the `pause@<point>` test hook.
    Pause(&'static str),
    /// After this long.
    After(Duration),
}

/// How a run ended.
#[derive(Debug)]
struct Ended {
    /// Killed (else it finished first, with this output).
    killed: bool,
    code: Option<i32>,
    output: String,
}

/// Runs `cmd`, killing it with SIGKILL at `at` (or letting it finish if it gets there first).
fn run_killed(mut cmd: Command, at: &At) -> Ended {
    if let At::Pause(point) = at {
        cmd.env("STELLAOPS_TEST_FAULT", format!("pause@{point}"));
    }
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start xtask");
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().unwrap())] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let needle = match at {
        At::Line(s) => Some(s.clone()),
        At::Pause(point) => Some(format!("paused at {point}")),
        At::After(_) => None,
    };
    let mut seen = Vec::new();
    let killed = loop {
        let wait = match at {
            At::After(d) => d.saturating_sub(started.elapsed()),
            _ => Duration::from_secs(300),
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                let hit = needle.as_deref().is_some_and(|n| line.contains(n));
                seen.push(line);
                if hit {
                    break child.kill().is_ok();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if matches!(at, At::After(_)) => break child.kill().is_ok(),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no line with {needle:?} in 300 s; output:\n{}", seen.join("\n")),
            // Both streams closed: it finished.
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
        }
    };
    let status = child.wait().unwrap();
    seen.extend(rx.try_iter());
    // A process that exited just before the kill was not killed.
    let killed = killed && status.code().is_none();
    if needle.is_some() && !killed {
        panic!("the run ended ({status}) before it reached {at:?}; output:\n{}", seen.join("\n"));
    }
    Ended { killed, code: status.code(), output: seen.join("\n") }
}

/// A scratch repository with a bundle of one component (authority, two platforms): a release
/// takes seconds, so it can be killed many times.
fn small_repo() -> Repo {
    let repo = Repo::new();
    let bundle = repo.read("release-trains/components.toml");
    let head = &bundle[..bundle.find("[[skew-rule]]").expect("a skew rule")];
    let start = bundle.find("[[component]]\nname = \"authority\"").expect("the authority component");
    let end = start + bundle[start..].find("\n# Signer").expect("the component after authority");
    let small = format!(
        "{head}[[skew-rule]]\nid = \"trust\"\ndescription = \"one group\"\nleft = [\"trust\"]\nmax-minor-distance = 0\n\n{}",
        &bundle[start..end]
    );
    repo.write("release-trains/components.toml", &small);
    repo.write("templates/compose/docker-compose.yml", "version: \"3.9\"\nservices:\n  authority:\n    image: \"@@image:authority@@\"\n");
    for e in fs::read_dir(repo.path().join("templates/helm/platform/templates")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "authority.yaml" {
            fs::remove_file(e.path()).unwrap();
        }
    }
    repo.commit_all("a bundle of one component", EPOCH);
    repo
}

/// `release --json` of `repo` into `out`, its temporary directory `target/tmp` of the
/// repository (so that what a killed run leaves there is seen).
fn release_cmd(repo: &Repo, out: &Path, gates: bool) -> Command {
    let tmp = repo.path().join("target/tmp");
    fs::create_dir_all(&tmp).unwrap();
    let mut cmd = xtask_cmd();
    cmd.env("TMPDIR", &tmp);
    cmd.args(["release", "--channel", "edge", "--json", "--out"]).arg(out).arg("--source").arg(repo.path());
    if !gates {
        cmd.arg("--skip-gates");
    }
    cmd
}

fn run(mut cmd: Command) -> Run {
    Run::of(cmd.output().expect("run xtask"))
}

/// The names in `dir` that a killed run may leave: temporary directories and files, lock
/// files, directories moved aside.
fn leftovers(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.contains(".tmp") || n.ends_with(".lock") || n.ends_with(".old"))
        .collect();
    names.sort();
    names
}

/// The ref names of an OCI layout's index.
fn ref_names(index: &Path) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(index).unwrap()).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_owned))
        .collect()
}

fn verify(dir: &Path, key: &Path) -> Run {
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(dir).arg("--key").arg(key);
    run(cmd)
}

#[test]
fn release_killed_at_every_stage_boundary_and_at_random_leaves_no_release_or_a_whole_one() {
    let repo = small_repo();
    let mut rng = Rng::new();
    let seed = rng.seed;
    let out = repo.releases().join("2.4.1-edge");
    let key = repo.path().join("target/keys/dev.pub");
    let check = |what: &str, ended: &Ended| {
        if out.exists() {
            let v = verify(&out, &key);
            assert_eq!(v.code, 0, "seed {seed}: after {what}, `{}` is there but does not verify:\n{}{}", out.display(), v.stdout, v.stderr);
        }
        assert!(!ended.output.contains("waiting for"), "seed {seed}: after {what}, a lock held the next run:\n{}", ended.output);
    };

    // 1. Every boundary the release reports, with no release before.
    let stages = ["plan", "bases", "build", "index", "evidence", "sign", "kit", "write"];
    // The stages without events (templates, manifest) and the last step before the rename.
    let mut points: Vec<At> = ["release:sign", "release:manifest", "release:write"].into_iter().map(At::Pause).collect();
    for s in stages {
        points.push(At::Line(format!("{{\"event\":\"stage-started\",\"stage\":\"{s}\"")));
        // Inside the stages that work in scratch directories: at their first job.
        if ["bases", "build", "evidence", "kit"].contains(&s) {
            let job = if s == "kit" { "job-finished" } else { "job-started" };
            points.push(At::Line(format!("{{\"event\":\"{job}\",\"stage\":\"{s}\"")));
        }
        points.push(At::Line(format!("{{\"event\":\"stage-finished\",\"stage\":\"{s}\"")));
    }
    let mut previous = Ended { killed: false, code: None, output: String::new() };
    for at in &points {
        let ended = run_killed(release_cmd(&repo, &out, false), at);
        check(&format!("{at:?}"), &previous);
        assert!(ended.killed, "seed {seed}: {at:?}: not killed");
        // Before the rename nothing is in place; after the last event the release may be whole.
        if !matches!(at, At::Line(l) if l.contains("\"write\"")) {
            assert!(!out.exists(), "seed {seed}: killed at {at:?}, yet `{}` exists", out.display());
        }
        check(&format!("the kill at {at:?}"), &ended);
        previous = ended;
    }

    // 2. A whole release, then kills while a new one replaces it: the old one stays whole
    // until the new one takes its place in one rename.
    let first = Instant::now();
    run(release_cmd(&repo, &out, false)).ok();
    let took = first.elapsed();
    verify(&out, &key).ok();
    let mut kills = vec![At::Pause("release:write")];
    for _ in 0..3 {
        kills.push(At::After(rng.delay(took)));
    }
    for at in &kills {
        let ended = run_killed(release_cmd(&repo, &out, false), at);
        assert!(out.join("release.yaml").is_file(), "seed {seed}: killed at {at:?}, the previous release is gone");
        check(&format!("the kill at {at:?}"), &ended);
    }

    // 3. The next run completes and cleans up after the killed ones.
    let last = run(release_cmd(&repo, &out, false));
    last.ok();
    assert!(!last.stdout.contains("waiting for"), "seed {seed}: {}", last.stdout);
    verify(&out, &key).ok();
    assert_eq!(leftovers(&repo.releases()), Vec::<String>::new(), "seed {seed}: left in {}", repo.releases().display());
    let tmp: Vec<_> = fs::read_dir(repo.path().join("target/tmp")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(tmp.is_empty(), "seed {seed}: the killed runs left {tmp:?} in their temporary directory");
}

fn import_cmd(kit: &Path, into: &Path, key: &Path) -> Command {
    let mut cmd = xtask_cmd();
    cmd.args(["kit", "import", "--json"]).arg(kit).arg("--into").arg(into).arg("--key").arg(key);
    cmd
}

/// Every manifest the layout's index names has its blob.
fn index_complete(layout: &Path) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).map_err(|e| e.to_string())?).unwrap();
    for d in v["manifests"].as_array().unwrap() {
        let digest = d["digest"].as_str().unwrap();
        let blob = layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        if !blob.is_file() {
            return Err(format!("index.json names `{digest}`, which is not in blobs/"));
        }
    }
    Ok(())
}

#[test]
fn kit_import_killed_part_way_leaves_the_target_as_it_was_or_with_the_whole_kit() {
    let repo = small_repo();
    let mut rng = Rng::new();
    let seed = rng.seed;
    let key = repo.path().join("target/keys/dev.pub");
    let r1 = repo.releases().join("r1");
    run(release_cmd(&repo, &r1, false)).ok();
    let kit1 = r1.join("stellaops-kit-2.4.1-edge.tar.zst");
    let into = repo.path().join("target/imported");

    // A fresh target: assembled beside it and renamed, so after a kill it is absent.
    let started = Instant::now();
    let mut kills = vec![At::Pause("kit-import:blobs-moved"), At::Pause("kit-import:files-moved")];
    kills.push(At::After(rng.delay(Duration::from_millis(800))));
    for at in &kills {
        let ended = run_killed(import_cmd(&kit1, &into, &key), at);
        if ended.killed {
            assert!(!into.exists(), "seed {seed}: killed at {at:?}, the fresh target `{}` exists", into.display());
        } else {
            assert_eq!(ended.code, Some(0), "seed {seed}: {}", ended.output);
            fs::remove_dir_all(&into).unwrap();
        }
    }
    let imported = run(import_cmd(&kit1, &into, &key));
    imported.ok();
    let took = started.elapsed() / 4;
    index_complete(&into).unwrap();
    let old_index = fs::read(into.join("index.json")).unwrap();

    // A target holding 2.4.1 gets 2.4.2: index.json (the layout's commit point) is the old one
    // or names all of the new kit, and names nothing whose blob is missing.
    repo.edit("release-trains/components.toml", "version = \"2.4.1\"\nregistry", "version = \"2.4.2\"\nregistry");
    repo.commit_all("bundle 2.4.2", EPOCH + 86_400);
    let r2 = repo.releases().join("r2");
    run(release_cmd(&repo, &r2, false)).ok();
    let kit2 = r2.join("stellaops-kit-2.4.2-edge.tar.zst");
    let new_names = ref_names(&r2.join("images/index.json"));
    let mut kills = vec![At::Pause("kit-import:blobs-moved"), At::Pause("kit-import:files-moved")];
    kills.push(At::After(rng.delay(took.max(Duration::from_millis(200)))));
    for at in &kills {
        let ended = run_killed(import_cmd(&kit2, &into, &key), at);
        let index = fs::read(into.join("index.json")).unwrap();
        if index != old_index {
            let names = ref_names(&into.join("index.json"));
            assert!(new_names.is_subset(&names), "seed {seed}: killed at {at:?}: index.json is neither the old one nor the new one");
        }
        index_complete(&into).unwrap_or_else(|e| panic!("seed {seed}: killed at {at:?}: {e}"));
        assert!(!ended.output.contains("waiting for"), "seed {seed}: {}", ended.output);
    }
    run(import_cmd(&kit2, &into, &key)).ok();
    assert!(new_names.is_subset(&ref_names(&into.join("index.json"))));
    index_complete(&into).unwrap();
    let kept: Vec<String> =
        fs::read_dir(into.join("stellaops")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for v in ["2.4.1-edge", "2.4.2-edge"] {
        assert!(
            into.join("stellaops").join(v).join("manifest/release.yaml").is_file(),
            "seed {seed}: no `stellaops/{v}/manifest/release.yaml` in {kept:?}: {:?}",
            fs::read_dir(into.join("stellaops").join(v)).map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>())
        );
    }
    // Nothing of the killed imports beside the target or inside it.
    let beside: Vec<String> = leftovers(&repo.path().join("target")).into_iter().filter(|n| n.contains("imported")).collect();
    assert_eq!(beside, Vec::<String>::new(), "seed {seed}");
    assert_eq!(leftovers(&into.join("stellaops")), Vec::<String>::new(), "seed {seed}");
}

/// Every manifest and blob under `reference` in `repo` is on the registry.
fn complete(client: &oci::distribution::Client, repo: &str, reference: &str) -> Result<(), String> {
    let got = client.get_manifest(repo, reference).map_err(|e| e.to_string())?.ok_or(format!("`{repo}@{reference}` is missing"))?;
    let v: serde_json::Value = serde_json::from_slice(&got.bytes).map_err(|e| e.to_string())?;
    for m in v["manifests"].as_array().into_iter().flatten() {
        complete(client, repo, m["digest"].as_str().unwrap_or_default())?;
    }
    for b in v["layers"].as_array().into_iter().flatten().chain(v.get("config")) {
        let d: schema::model::Digest = b["digest"].as_str().unwrap_or_default().parse().map_err(|e| format!("{e:?}"))?;
        if client.blob_exists(repo, &d).map_err(|e| e.to_string())?.is_none() {
            return Err(format!("blob `{d}` of `{repo}@{reference}` is missing"));
        }
    }
    Ok(())
}

#[test]
fn publish_killed_part_way_tags_nothing_incomplete_and_resume_finishes() {
    let Some(registry) = crate::support::registry() else { return };
    let repo = small_repo();
    let mut rng = Rng::new();
    let seed = rng.seed;
    let out = repo.releases().join("2.4.1-edge");
    run(release_cmd(&repo, &out, false)).ok();
    let first_ns = format!("kills-{}-{}", std::process::id(), rng.next() % 1_000_000);
    let publish = |ns: &str, resume: bool| {
        let mut cmd = xtask_cmd();
        cmd.arg("publish").arg(&out).args(["--registry", &format!("{registry}/{ns}"), "--json"]).arg("--source").arg(repo.path());
        if resume {
            cmd.arg("--resume");
        }
        cmd
    };
    // The roots publish tags: each component's index.
    let images: serde_json::Value = serde_json::from_slice(&fs::read(out.join("images.json")).unwrap()).unwrap();
    let roots: BTreeMap<String, String> = images["components"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, c)| (name.clone(), c["index"]["digest"].as_str().unwrap().to_owned()))
        .collect();
    assert!(!roots.is_empty());
    let client = oci::distribution::Client::new(&registry, None, oci::distribution::RetryPolicy::default());
    let check_tags = |ns: &str, what: &str| {
        for (name, digest) in &roots {
            for tag in ["2.4.1", "edge"] {
                let repo_name = format!("{ns}/{name}");
                match client.head_manifest(&repo_name, tag).unwrap() {
                    None => {}
                    Some(d) => {
                        assert!(d.is_empty() || &d == digest, "seed {seed}: after {what}, `{repo_name}:{tag}` is `{d}`, not `{digest}`");
                        complete(&client, &repo_name, tag)
                            .unwrap_or_else(|e| panic!("seed {seed}: after {what}, a tag names an incomplete release: {e}"));
                    }
                }
            }
        }
    };
    let started = Instant::now();
    let first = run_killed(publish(&first_ns, false), &At::After(rng.delay(Duration::from_millis(1500))));
    let took = started.elapsed();
    check_tags(&first_ns, "a kill at random");
    // The kill between two tags needs a destination not yet tagged: when the first run
    // finished before its kill, or was killed once it had put a tag (the kill can land between
    // the tags, or after the last and before the journal says so), a second namespace (its
    // journal then says nothing of it).
    let tagged = roots
        .keys()
        .any(|name| ["2.4.1", "edge"].iter().any(|tag| client.head_manifest(&format!("{first_ns}/{name}"), tag).unwrap().is_some()));
    let ns = if first.killed && !tagged {
        first_ns.clone()
    } else {
        if !first.killed {
            assert_eq!(first.code, Some(0), "seed {seed} ({took:?}): {}", first.output);
        }
        format!("{first_ns}-b")
    };
    let ended = run_killed(publish(&ns, true), &At::Pause("publish:tagged-one"));
    check_tags(&ns, "a kill between two tags");
    assert!(!ended.output.contains("waiting for"), "seed {seed}: {}", ended.output);
    let done = run(publish(&ns, true));
    done.ok();
    assert!(!done.stdout.contains("waiting for"), "seed {seed}: {}", done.stdout);
    check_tags(&ns, "the resumed publish");
    for (name, digest) in &roots {
        for tag in ["2.4.1", "edge"] {
            assert_eq!(client.head_manifest(&format!("{ns}/{name}"), tag).unwrap().as_deref(), Some(digest.as_str()), "seed {seed}");
        }
    }
    let target = format!("{registry}/{ns}");
    let mut cmd = xtask_cmd();
    cmd.arg("verify").arg(&out).arg("--key").arg(repo.path().join("target/keys/dev.pub")).args(["--registry", &target]);
    run(cmd).ok();
    // The lock of the destination is gone, and no journal is left half written under a temp name.
    let lock = oci::statelock::for_remote(&target);
    assert!(!lock.exists(), "seed {seed}: `{}` is left", lock.display());
    assert_eq!(leftovers(&out.join("publish")), Vec::<String>::new(), "seed {seed}");
}

fn day(days: f64) -> String {
    schema::model::rfc3339(EPOCH + (days * 86_400.0) as i64)
}

#[test]
fn promote_killed_between_its_writes_leaves_the_old_or_the_new_pointer_and_a_rerun_finishes() {
    let repo = small_repo();
    let mut rng = Rng::new();
    let seed = rng.seed;
    let release_pub = repo.release_key();
    let (store, _, trusted_root) = crate::tuf::init_trust(&repo, &[&release_pub]);
    let r1 = repo.releases().join("r1");
    let mut cmd = release_cmd(&repo, &r1, true);
    cmd.env("STELLAOPS_SIGNING_KEY", release_pub.with_extension("key"));
    run(cmd).ok();
    let promote = |at_day: f64| {
        let mut cmd = xtask_cmd();
        cmd.env("STELLAOPS_SIGNING_KEY", release_pub.with_extension("key"));
        cmd.arg("promote").arg(&r1).args(["--to", "edge", "--now", &day(at_day), "--json"]).arg("--source").arg(repo.path());
        cmd
    };
    let state = repo.path().join("target/pointer-state.json");
    // What a client sees: the pointer (never older than what it saw before) and the TUF
    // repository (through tough); returns the pointer's sequence.
    let client = |what: &str, at_day: f64| -> u64 {
        if !store.join("edge/pointer.json").exists() {
            assert!(
                !store.join("edge/log").exists() || fs::read_dir(store.join("edge/log")).unwrap().count() <= 1,
                "seed {seed}: after {what}, no pointer but a log"
            );
            return 0;
        }
        let mut cmd = xtask_cmd();
        cmd.arg("verify-pointer").arg(store.join("edge/pointer.json")).arg("--key").arg(&release_pub).arg("--state").arg(&state);
        cmd.args(["--now", &day(at_day), "--json"]);
        let v = run(cmd);
        assert_eq!(v.code, 0, "seed {seed}: after {what}, the pointer does not verify:\n{}{}", v.stdout, v.stderr);
        let t = repo.xtask(&["trust", "check", "--root", trusted_root.to_str().unwrap(), "--json"]);
        assert_eq!(t.code, 0, "seed {seed}: after {what}, the trust repository does not check:\n{}{}", t.stdout, t.stderr);
        let p: serde_json::Value = serde_json::from_slice(&fs::read(store.join("edge/pointer.json")).unwrap()).unwrap();
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.decode(p["payload"].as_str().unwrap()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["sequence"].as_u64().unwrap()
    };
    // The first promotion of the channel, killed before its pointer exists: no pointer, or
    // (at the second point) a log entry that the next run puts in place.
    for at in [At::Pause("promote:kept-copied"), At::Pause("promote:logged")] {
        run_killed(promote(0.0), &at);
        assert_eq!(client(&format!("the kill at {at:?}"), 0.0), 0, "seed {seed}: killed at {at:?}, yet a pointer is there");
    }
    run(promote(0.0)).ok();
    let mut seq = client("the first promotion", 0.0);
    assert_eq!(seq, 2, "seed {seed}: the interrupted first move is finished, then this one");
    // Moves of a channel that has a pointer.
    let mut kills: Vec<At> = ["promote:logged", "promote:pointed", "trust:snapshot-written"].into_iter().map(At::Pause).collect();
    kills.push(At::After(rng.delay(Duration::from_millis(400))));
    for (i, at) in kills.iter().enumerate() {
        let now = 0.1 * (i + 1) as f64;
        let ended = run_killed(promote(now), at);
        assert!(!ended.output.contains("waiting for"), "seed {seed}: {}", ended.output);
        let got = client(&format!("the kill at {at:?}"), now);
        assert!(got == seq || got == seq + 1, "seed {seed}: killed at {at:?}: sequence {got} after {seq}");
        seq = got;
        // The next run finishes the move, whatever the kill left.
        let rerun = run(promote(now + 0.01));
        rerun.ok();
        let got = client(&format!("the run after the kill at {at:?}"), now + 0.01);
        assert!(got > seq, "seed {seed}: the run after {at:?} did not move the channel ({got} after {seq})");
        seq = got;
    }
    let history = repo.xtask(&["history", "--channel", "edge", "--key", release_pub.to_str().unwrap(), "--json"]);
    history.ok();
    assert!(!store.join(".lock").exists(), "seed {seed}: the store's lock file is left");
    assert_eq!(leftovers(&store.join("edge/log")), Vec::<String>::new(), "seed {seed}");
    assert_eq!(leftovers(&store.join("edge/releases")), Vec::<String>::new(), "seed {seed}");
}

#[test]
fn kit_import_into_a_registry_killed_between_two_tags_tags_nothing_incomplete_and_the_next_import_cleans_up() {
    let Some(registry) = crate::support::registry() else { return };
    let repo = small_repo();
    let mut rng = Rng::new();
    let seed = rng.seed;
    let key = repo.path().join("target/keys/dev.pub");
    let r1 = repo.releases().join("r1");
    run(release_cmd(&repo, &r1, false)).ok();
    let kit = r1.join("stellaops-kit-2.4.1-edge.tar.zst");
    let ns = format!("kills-kit-{}-{}", std::process::id(), rng.next() % 1_000_000);
    let into = format!("docker://{registry}/{ns}");
    // The import stages the kit under its temporary directory: private here, to see leftovers.
    let tmp = repo.path().join("target/import-tmp");
    fs::create_dir_all(&tmp).unwrap();
    let import = || {
        let mut cmd = import_cmd(&kit, Path::new(&into), &key);
        cmd.env("TMPDIR", &tmp);
        cmd
    };
    let images: serde_json::Value = serde_json::from_slice(&fs::read(r1.join("images.json")).unwrap()).unwrap();
    let client = oci::distribution::Client::new(&registry, None, oci::distribution::RetryPolicy::default());
    let check_tags = |what: &str| {
        for (name, c) in images["components"].as_object().unwrap() {
            let repo_name = format!("{ns}/{name}");
            if let Some(d) = client.head_manifest(&repo_name, "2.4.1").unwrap() {
                let want = c["index"]["digest"].as_str().unwrap();
                assert!(d.is_empty() || d == want, "seed {seed}: after {what}, `{repo_name}:2.4.1` is `{d}`, not `{want}`");
                complete(&client, &repo_name, "2.4.1").unwrap_or_else(|e| panic!("seed {seed}: after {what}: {e}"));
            }
        }
    };
    for at in [At::Pause("publish:tagged-one"), At::After(rng.delay(Duration::from_millis(600)))] {
        let ended = run_killed(import(), &at);
        check_tags(&format!("the kill at {at:?}"));
        assert!(!ended.output.contains("waiting for"), "seed {seed}: {}", ended.output);
    }
    run(import()).ok();
    check_tags("the import after the kills");
    for (name, c) in images["components"].as_object().unwrap() {
        let got = client.head_manifest(&format!("{ns}/{name}"), "2.4.1").unwrap();
        assert_eq!(got.as_deref(), c["index"]["digest"].as_str(), "seed {seed}: `{ns}/{name}:2.4.1`");
    }
    // Only the (empty) directory of the registry locks, which stays.
    let mut left = Vec::new();
    for e in fs::read_dir(&tmp).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("stellaops-locks-") {
            left.extend(fs::read_dir(e.path()).unwrap().map(|l| l.unwrap().path()));
        } else {
            left.push(e.path());
        }
    }
    assert!(left.is_empty(), "seed {seed}: the killed imports left {left:?} in their temporary directory");
}
