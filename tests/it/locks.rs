//! Commands on the same state are serialized: a second `release` of the same output, a
//! `promote` on the same channel store, a `kit import` into the same target or a `publish` of
//! the same release to the same registry repository waits for the lock and says who holds it;
//! a lock whose holder was killed is taken over; no lock file is left behind.
//!
//! Two real commands race here: the first is paused (SIGSTOP) once its lock file names it, so
//! the second is sure to find the lock held, by a process caught somewhere inside its work.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use oci::statelock::StateLock;

use crate::support::{tool, xtask_cmd, Repo, EPOCH};

/// Starts `xtask ARGS [--source repo]` with stderr read line by line into a channel.
fn start(repo: Option<&Repo>, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = xtask_cmd();
    cmd.args(args);
    if let Some(repo) = repo {
        cmd.arg("--source").arg(repo.path());
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a stderr line containing `needle`; every line seen so far on failure.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) if l.contains(needle) => return l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with `{needle}`; stderr so far:\n{}", seen.join("\n")),
        }
    }
}

fn finish(mut child: Child, rx: mpsc::Receiver<String>) -> (bool, String) {
    let ok = child.wait().unwrap().success();
    (ok, rx.try_iter().collect::<Vec<_>>().join("\n"))
}

fn no_lock_files(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "lock files left in {}: {left:?}", dir.display());
}

#[test]
fn a_second_release_of_the_same_output_waits_for_the_first_and_a_killed_holder_does_not_block() {
    let repo = Repo::new();
    let releases = repo.releases();
    std::fs::create_dir_all(&releases).unwrap();
    let lock = releases.join(".2.4.1-edge.lock");

    // Held here (as another `release` would hold it): the release waits and names us.
    let held = StateLock::acquire(&lock, "test", &|m| panic!("{m}")).unwrap();
    let (child, rx) = start(Some(&repo), &["release", "--channel", "edge"]);
    let line = wait_for(&rx, "waiting for the release");
    assert!(line.contains(&format!("held by PID {}", std::process::id())), "{line}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!releases.join("2.4.1-edge").exists(), "the release went on while the lock was held");
    drop(held);
    let (ok, rest) = finish(child, rx);
    assert!(ok, "{rest}");
    assert!(releases.join("2.4.1-edge/release.yaml").is_file());
    no_lock_files(&releases);

    // A kit import into a directory another import holds waits too.
    let into = repo.path().join("target/imported");
    let held = StateLock::acquire(&repo.path().join("target/.imported.lock"), "test", &|m| panic!("{m}")).unwrap();
    let kit = releases.join("2.4.1-edge/stellaops-kit-2.4.1-edge.tar.zst");
    let key = repo.path().join("target/keys/dev.pub");
    let (child, rx) =
        start(None, &["kit", "import", kit.to_str().unwrap(), "--into", into.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    wait_for(&rx, "waiting for the import target");
    assert!(!into.exists(), "imported while the target was locked");
    drop(held);
    let (ok, rest) = finish(child, rx);
    assert!(ok, "{rest}");
    assert!(into.join("oci-layout").is_file());
    no_lock_files(&repo.path().join("target"));

    // Held by a process that is then killed: the kernel drops its lock, the release goes on.
    let holder = Command::new("flock").arg("-o").arg(&lock).args(["sleep", "300"]).spawn();
    let Ok(mut holder) = holder else {
        assert!(std::env::var_os("CI").is_none(), "`flock` (util-linux) is missing");
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    let (child, rx) = start(Some(&repo), &["release", "--channel", "edge"]);
    wait_for(&rx, "waiting for the release");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let (ok, rest) = finish(child, rx);
    assert!(ok, "{rest}");
    no_lock_files(&releases);
}

#[test]
fn a_promote_waits_for_the_channel_store_held_by_another_command() {
    let repo = Repo::new();
    let out = repo.releases().join("edge-1");
    repo.xtask(&["release", "--channel", "edge", "--out", out.to_str().unwrap()]).ok();
    let store = repo.path().join("target/channels");
    std::fs::create_dir_all(&store).unwrap();
    let held = StateLock::acquire(&store.join(".lock"), "test", &|m| panic!("{m}")).unwrap();
    let now = schema::model::rfc3339(EPOCH);
    let (child, rx) = start(Some(&repo), &["promote", out.to_str().unwrap(), "--to", "edge", "--now", &now]);
    let line = wait_for(&rx, "waiting for the channel store");
    assert!(line.contains(&format!("held by PID {}", std::process::id())), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!store.join("edge/pointer.json").exists() && !store.join("edge/log").exists(), "promoted while the store was locked");
    drop(held);
    let (ok, rest) = finish(child, rx);
    assert!(ok, "{rest}");
    no_lock_files(&store);
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to `pid` with util-linux's `kill`.
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{signal} {pid} failed");
}

/// Whether the lock file at `lock` names `pid` as its holder.
fn names(lock: &Path, pid: u32) -> bool {
    std::fs::read_to_string(lock).is_ok_and(|t| t.starts_with(&format!("PID {pid} ")))
}

/// Starts `xtask ARGS` and pauses it (SIGSTOP) inside its locked section: once the lock file
/// names it, and still names it after the stop (the holder removes the file before unlocking,
/// so a file naming a stopped process is a lock it holds). A run that finished before it could
/// be caught is started again (a few times).
fn start_paused_holding(args: &[&str], lock: &Path) -> (Child, mpsc::Receiver<String>) {
    for _ in 0..5 {
        let (mut child, rx) = start(None, args);
        let pid = child.id();
        loop {
            if names(lock, pid) {
                signal(pid, "STOP");
                if names(lock, pid) {
                    return (child, rx);
                }
                signal(pid, "CONT");
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::yield_now();
        }
        let (ok, rest) = finish(child, rx);
        assert!(ok, "`{}` failed before it could be paused:\n{rest}", args.join(" "));
    }
    panic!("`{}` finished five times before its lock could be seen", args.join(" "));
}

/// Pauses a first run of `args` inside its lock; starts a second that must wait naming the
/// first's PID; then either lets the first go on (`end: "CONT"`) or kills it (`"KILL"`).
/// Returns whether each succeeded (the killed one counts as failed) and the second's stderr.
fn race(args: &[&str], lock: &Path, waiting_for: &str, end: &str) -> (bool, bool) {
    let (first, first_rx) = start_paused_holding(args, lock);
    let (second, rx) = start(None, args);
    let line = wait_for(&rx, &format!("waiting for {waiting_for}"));
    assert!(line.contains(&format!("held by PID {}", first.id())), "{line}");
    // Paused or not, the first still holds it: the second stays waiting.
    assert!(names(lock, first.id()), "the lock changed hands while its holder was paused");
    signal(first.id(), end);
    let (first_ok, first_rest) = finish(first, first_rx);
    let (second_ok, rest) = finish(second, rx);
    assert!(second_ok, "the second `{}` failed:\n{rest}", args.join(" "));
    if end == "CONT" {
        assert!(first_ok, "the first `{}` failed:\n{first_rest}", args.join(" "));
    }
    (first_ok, second_ok)
}

/// Every file under `dir` (relative path -> sha256, `dir` for a directory).
fn listing(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest as _;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(rel, "dir".to_owned());
                todo.push(p);
            } else {
                out.insert(rel, format!("{:x}", sha2::Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    out
}

#[test]
fn two_kit_imports_into_one_target_run_one_after_the_other_and_a_killed_importer_does_not_block() {
    if tool("kill").is_none() {
        return;
    }
    let repo = Repo::new();
    repo.xtask(&["release", "--channel", "edge"]).ok();
    let kit = repo.releases().join("2.4.1-edge/stellaops-kit-2.4.1-edge.tar.zst");
    let key = repo.path().join("target/keys/dev.pub");
    let target = repo.path().join("target");
    let import = |into: &Path| {
        vec!["kit".to_owned(), "import".to_owned(), kit.display().to_string(), "--into".to_owned(), into.display().to_string()]
            .into_iter()
            .chain(["--key".to_owned(), key.display().to_string()])
            .collect::<Vec<String>>()
    };
    // What one import alone makes.
    let alone = target.join("alone");
    let args = import(&alone);
    let (child, rx) = start(None, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, rest) = finish(child, rx);
    assert!(ok, "{rest}");

    // Two at once: the second waits for the first, which goes on; the target is one whole
    // import (the same files as the import made alone), with no lock file left.
    let into = target.join("imported");
    let args = import(&into);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    race(&args, &target.join(".imported.lock"), "the import target", "CONT");
    assert_eq!(listing(&into), listing(&alone), "two imports at once left another target than one import");
    no_lock_files(&target);

    // The holder killed part-way: the waiting import takes the lock over and completes.
    let into = target.join("imported-after-kill");
    let args = import(&into);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (first_ok, _) = race(&args, &target.join(".imported-after-kill.lock"), "the import target", "KILL");
    assert!(!first_ok, "the killed import reported success");
    assert_eq!(listing(&into), listing(&alone), "the import after a killed one left another target than one import");
    no_lock_files(&target);
}

#[test]
fn two_publishes_of_one_release_to_one_repository_run_one_after_the_other_and_a_killed_publisher_does_not_block() {
    let (Some(registry), Some(_)) = (crate::support::registry(), tool("kill")) else {
        return;
    };
    let repo = Repo::new();
    repo.xtask(&["release", "--channel", "edge"]).ok();
    let rel = repo.releases().join("2.4.1-edge");
    let key = repo.path().join("target/keys/dev.pub");
    let verify = |dest: &str| {
        let mut cmd = xtask_cmd();
        cmd.arg("verify").arg(&rel).arg("--key").arg(&key).args(["--registry", dest]);
        crate::support::Run::of(cmd.output().unwrap()).ok();
    };
    for (n, end) in [(0, "CONT"), (1, "KILL")] {
        // A repository of its own on the shared registry.
        let dest = format!("{registry}/stellaops-it-locks-{}-{n}", std::process::id());
        let args = ["publish", rel.to_str().unwrap(), "--registry", &dest];
        let (first_ok, _) = race(&args, &oci::statelock::for_remote(&dest), &format!("publishing to `{dest}`"), end);
        assert_eq!(first_ok, end == "CONT");
        // Every tag of the release points at its complete, signed images.
        verify(&dest);
        assert!(!oci::statelock::for_remote(&dest).exists(), "the lock file is left behind");
    }
}
