//! Commands on the same state are serialized: a second `release` of the same output, or a
//! `promote` on the same channel store, waits for the lock and says who holds it; a lock whose
//! holder was killed is taken over; no lock file is left behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use oci::statelock::StateLock;

use crate::support::{xtask_cmd, Repo, EPOCH};

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
