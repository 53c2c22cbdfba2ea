//! Full disks (issue 18): `release`, `kit import`, `publish` and `promote` on a filesystem that
//! runs out of space part-way. Each test mounts a size-limited tmpfs (we run as root), sized
//! from what the command wrote into a roomy directory (printed), lets the command fail on it,
//! then checks: exit 3, the message names the path (the registry, for publish) and says the
//! disk is full with a hint, nothing half-written under a final name. Then it frees space
//! (`mount -o remount,size=`, or removes a filler file) and runs the same command to success.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::{digests, run_ok, tool, xtask_cmd, Repo, Run, EPOCH};

const KIT: &str = "stellaops-kit-2.4.1-edge.tar.zst";

/// A size-limited tmpfs on a fresh directory, unmounted when dropped (also on a panic).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::Builder::new().prefix("stellaops-disk-").tempdir().unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"]).arg(dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (these tests need root): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Frees space: the same mount, `bytes` large.
    fn resize(&self, bytes: u64) {
        run_ok(Command::new("mount").args(["-o", &format!("remount,size={bytes}")]).arg(self.path()));
    }

    /// Bytes free, as `statfs` reports them to an unprivileged writer.
    fn free(&self) -> u64 {
        let out = run_ok(Command::new("stat").args(["-f", "-c", "%a %S"]).arg(self.path()));
        let (blocks, size) = out.trim().split_once(' ').unwrap();
        blocks.parse::<u64>().unwrap() * size.parse::<u64>().unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a registry still holding a file open must not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Bytes a tree takes on disk (`du`: blocks, as a tmpfs counts them).
fn disk_usage(p: &Path) -> u64 {
    run_ok(Command::new("du").args(["-s", "-B1"]).arg(p)).split_whitespace().next().unwrap().parse().unwrap()
}

/// Every file under `dir` with its length and sha256, `skip`ped names left out: the visible
/// state, for before/after comparisons (an empty directory a failed command made is not).
fn listing(dir: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    use sha2::Digest as _;
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        if e.file_type().is_dir() || skip.iter().any(|s| rel == *s || rel.starts_with(&format!("{s}/"))) {
            continue;
        }
        let b = fs::read(e.path()).unwrap();
        out.insert(rel, format!("{} {:x}", b.len(), sha2::Sha256::digest(&b)));
    }
    out
}

/// Asserts the failure a full disk must give: exit 3, the message names `place` (a path on
/// `disk`) and says the disk is full, and the hint names `disk`'s mount point.
#[track_caller]
fn assert_disk_full(run: &Run, disk: &Tmpfs, place: &Path) {
    assert_eq!(run.code, 3, "expected exit 3 (environment)\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let place = place.display().to_string();
    assert!(run.stderr.contains(&format!("`{place}")), "the error does not name `{place}`:\n{}", run.stderr);
    assert!(run.stderr.to_lowercase().contains("no space left on device"), "the error does not say the disk is full:\n{}", run.stderr);
    let hint = format!("hint: the filesystem mounted at `{}` is full", disk.path().display());
    assert!(run.stderr.contains(&hint), "no `{hint}`:\n{}", run.stderr);
    assert!(!run.stderr.contains("internal error"), "{}", run.stderr);
}

/// One scratch repository and its edge release, cut into a roomy directory: what the tests
/// measure against and import, publish and promote.
struct Shared {
    source: PathBuf,
    release: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let repo = Box::leak(Box::new(Repo::new()));
        let release = repo.releases().join("2.4.1-edge");
        repo.xtask(&["release", "--channel", "edge", "--out", release.to_str().unwrap()]).ok();
        Shared { source: repo.path().to_owned(), release }
    })
}

fn xtask(args: &[&str]) -> Run {
    let mut cmd = xtask_cmd();
    cmd.args(args).arg("--source").arg(&shared().source);
    Run::of(cmd.output().unwrap())
}

#[test]
fn release_on_a_full_disk_exits_3_naming_the_path_leaves_no_release_and_succeeds_once_space_is_freed() {
    let roomy = shared();
    let size = disk_usage(&roomy.release);
    // Half the release: the build has written for a while when the space runs out.
    let small = size / 2;
    eprintln!("the roomy release takes {size} bytes; the full disk has {small}");
    let disk = Tmpfs::mount(small);
    let out = disk.path().join("2.4.1-edge");
    let run = xtask(&["release", "--channel", "edge", "--out", out.to_str().unwrap()]);
    assert_disk_full(&run, &disk, disk.path());
    // Nothing under the final name, and no staging directory left behind.
    let left: Vec<_> = fs::read_dir(disk.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| n.to_string_lossy().starts_with(".lock")), "a failed release left {left:?}");
    assert!(disk.free() > small * 9 / 10, "the staging directory's bytes were not given back: {} free", disk.free());

    disk.resize(size * 3);
    xtask(&["release", "--channel", "edge", "--out", out.to_str().unwrap()]).ok();
    assert_eq!(digests(&out.join("images")), digests(&roomy.release.join("images")), "the re-run released other images");
    // (release.yaml differs: provenance records when it ran.) The whole release verifies.
    let mut verify = xtask_cmd();
    verify.arg("verify").arg(&out).arg("--key").arg(roomy.source.join("target/keys/dev.pub"));
    Run::of(verify.output().unwrap()).ok();
}

fn import(into: &Path) -> Run {
    import_kit(&shared().release.join(KIT), &shared().source.join("target/keys/dev.pub"), into)
}

fn import_kit(kit: &Path, key: &Path, into: &Path) -> Run {
    let mut cmd = xtask_cmd();
    cmd.args(["kit", "import"]).arg(kit).arg("--into").arg(into).arg("--key").arg(key);
    Run::of(cmd.output().unwrap())
}

#[test]
fn kit_import_on_a_full_disk_exits_3_naming_the_path_leaves_the_target_as_it_was_and_succeeds_once_space_is_freed() {
    let roomy = tempfile::tempdir().unwrap();
    import(&roomy.path().join("imported")).ok();
    let size = disk_usage(&roomy.path().join("imported"));
    let small = size / 2;
    eprintln!("the roomy import takes {size} bytes; the full disk has {small}");
    let disk = Tmpfs::mount(small);
    let target = disk.path().join("imported");
    let run = import(&target);
    assert_disk_full(&run, &disk, disk.path());
    assert!(!target.exists(), "a failed import left `{}`", target.display());
    let left: Vec<_> = fs::read_dir(disk.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.iter().all(|n| n.to_string_lossy().starts_with(".lock")), "a failed import left {left:?}");

    disk.resize(size * 3);
    import(&target).ok();
    assert_eq!(listing(&target, &[]), listing(&roomy.path().join("imported"), &[]));
}

#[test]
fn kit_import_of_a_second_release_into_a_target_on_a_full_disk_leaves_the_target_as_it_was_up_to_the_last_write() {
    // Release 2.4.2 of another scratch repository, imported over the shared 2.4.1.
    let repo = Repo::new();
    repo.edit("release-trains/components.toml", "version = \"2.4.1\"\nregistry", "version = \"2.4.2\"\nregistry");
    repo.commit_all("bundle 2.4.2", EPOCH + 86_400);
    let out = repo.releases().join("2.4.2-edge");
    repo.xtask(&["release", "--channel", "edge", "--out", out.to_str().unwrap()]).ok();
    let (kit, key) = (out.join("stellaops-kit-2.4.2-edge.tar.zst"), repo.path().join("target/keys/dev.pub"));
    let roomy = tempfile::tempdir().unwrap();
    import_kit(&kit, &key, &roomy.path().join("imported")).ok();
    let estimate = disk_usage(&roomy.path().join("imported"));

    // The target holds 2.4.1; a pristine copy puts it back after an import that fits.
    let disk = Tmpfs::mount(4 * estimate);
    let target = disk.path().join("imported");
    import(&target).ok();
    let pristine = roomy.path().join("pristine");
    run_ok(Command::new("cp").arg("-a").arg(&target).arg(&pristine));
    let before = listing(&target, &[".lock"]);
    let filler = disk.path().join("filler");
    // The import with `free` bytes left: whether it fitted; a failure's message is kept in
    // `last`; the target checked (or put back) afterwards.
    let last = std::cell::RefCell::new(String::new());
    let attempt = |free: u64| -> bool {
        let _ = fs::remove_file(&filler);
        run_ok(Command::new("fallocate").args(["-l", &(disk.free() - free).to_string()]).arg(&filler));
        let run = import_kit(&kit, &key, &target);
        fs::remove_file(&filler).unwrap();
        if run.code == 0 {
            run_ok(Command::new("rm").arg("-rf").arg(&target));
            run_ok(Command::new("cp").arg("-a").arg(&pristine).arg(&target));
            return true;
        }
        assert_disk_full(&run, &disk, disk.path());
        *last.borrow_mut() = run.stderr.clone();
        assert_eq!(listing(&target, &[".lock"]), before, "an import that failed with {free} bytes free changed the target");
        let left: Vec<_> = fs::read_dir(disk.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.iter().all(|n| n == "imported" || n.to_string_lossy().starts_with(".lock")), "a failed import left {left:?}");
        false
    };
    // The least room it fits in, to the page (bisection), then the pages just below it: there
    // the import fails on its last writes, after every entry was staged.
    let (mut lo, mut hi) = (estimate / 4096 / 2, estimate / 4096 * 2);
    assert!(!attempt(lo * 4096) && attempt(hi * 4096), "the import does not fit in {hi} pages or fits in {lo}");
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if attempt(mid * 4096) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    eprintln!("a 2.4.2 import of {estimate} bytes into the 2.4.1 target fits in {hi} pages free, not in {lo}");
    for pages in [hi - 2, hi - 1] {
        assert!(!attempt(pages * 4096));
    }
    // One page short, the last write fails: the target's new index.json (staged in full before
    // anything moves into the target, renamed into place last).
    assert!(last.borrow().contains(&target.join("index.json").display().to_string()), "{}", last.borrow());
    // Room: the same command succeeds, and both releases are in the target.
    import_kit(&kit, &key, &target).ok();
    assert!(target.join("stellaops/2.4.1-edge").is_dir() && target.join("stellaops/2.4.2-edge").is_dir());
    let names = digests(&target);
    for (name, digest) in digests(&roomy.path().join("imported")) {
        assert_eq!(names.get(&name), Some(&digest), "`{name}` is not 2.4.2's");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET http://{addr}{path}`: status and body.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Debian's docker-registry keeping its storage under `root`, stopped (by its pid) when dropped.
struct Registry {
    child: Child,
    addr: String,
    _config: tempfile::TempDir,
}

impl Registry {
    fn start(root: &Path) -> Option<Registry> {
        let bin = tool("docker-registry")?;
        let config = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let yml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            root.display()
        );
        fs::write(config.path().join("config.yml"), yml).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(config.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(config.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        let r = Registry { child, addr, _config: config };
        for _ in 0..150 {
            if http_get(&r.addr, "/v2/").is_some() {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry on {} did not start", r.addr);
    }

    /// Tags of `stellaops/<component>` (none when the repository does not exist).
    fn tags(&self, component: &str) -> Vec<String> {
        let (status, body) = http_get(&self.addr, &format!("/v2/stellaops/{component}/tags/list")).unwrap();
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["tags"].as_array().map(|t| t.iter().map(|t| t.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The components of the shared release (release.yaml).
fn components() -> Vec<String> {
    let doc: serde_json::Value = serde_norway::from_slice(&fs::read(shared().release.join("release.yaml")).unwrap()).unwrap();
    doc["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

fn publish(registry: &Registry, extra: &[&str]) -> Run {
    let mut cmd = xtask_cmd();
    cmd.arg("publish")
        .arg(&shared().release)
        .args(["--registry", &format!("{}/stellaops", registry.addr), "--retry-base-ms", "5", "--retries", "2"])
        .args(extra);
    Run::of(cmd.output().unwrap())
}

#[test]
fn publish_to_a_registry_whose_disk_fills_exits_3_naming_the_registry_writes_no_tag_and_resume_completes_once_space_is_freed() {
    // The registry stores each blob once: what it needs is about the release's images.
    let size = disk_usage(&shared().release.join("images"));
    let small = size / 2;
    eprintln!("the release's images take {size} bytes; the registry's full disk has {small}");
    let disk = Tmpfs::mount(small);
    let Some(registry) = Registry::start(&disk.path().join("registry")) else { return };
    let run = publish(&registry, &[]);
    assert_eq!(run.code, 3, "expected exit 3\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&registry.addr), "the error does not name the registry:\n{}", run.stderr);
    assert!(run.stderr.contains("blob sha256:"), "the error does not name the blob:\n{}", run.stderr);
    assert!(run.stderr.contains("hint: the registry's storage is full"), "no hint naming the registry's full disk:\n{}", run.stderr);
    assert!(!run.stderr.contains("internal error"), "{}", run.stderr);
    // Blobs were stored until the space ran out; no tag of the release was written (the
    // registry has no referrers API: `sha256-<hex>` tags are referrer indexes of a digest).
    assert!(disk.free() < small / 4, "the registry had room left ({} bytes): the test did not fill it", disk.free());
    for c in components() {
        let tags = registry.tags(&c);
        assert!(tags.iter().all(|t| t.starts_with("sha256-")), "`{c}` has tags after a failed publish: {tags:?}");
    }
    // Every blob goes before the first manifest, so the space ran out on a blob: the registry
    // (distribution keeps manifests and tags under `_manifests/`) holds no manifest at all.
    let manifests: Vec<_> = walkdir::WalkDir::new(disk.path()).into_iter().flatten().filter(|e| e.file_name() == "_manifests").collect();
    assert!(manifests.is_empty(), "manifests were sent before every blob was in place: {manifests:?}");

    disk.resize(size * 3);
    publish(&registry, &["--resume"]).ok();
    for c in components() {
        let tags = registry.tags(&c);
        assert!(tags.iter().any(|t| t == "2.4.1") && tags.iter().any(|t| t == "edge"), "`{c}`: {tags:?}");
    }
}

/// 2027-06-20T12:00:00Z + `days`.
fn day(days: i64) -> String {
    schema::model::rfc3339(EPOCH + days * 86_400)
}

fn promote(store: &Path, release: &str, now: &str) -> Run {
    let mut cmd = xtask_cmd();
    cmd.args(["promote", release, "--to", "edge", "--now", now, "--json"]).arg("--source").arg(&shared().source);
    cmd.env("STELLAOPS_CHANNELS", store);
    Run::of(cmd.output().unwrap())
}

/// Runs the move `promote(now)` with a few pages free, one more each time, until it fits:
/// every write of the move meets a full disk once. Each failure must leave the store as it
/// was. Returns the successful run.
fn promote_page_by_page(disk: &Tmpfs, store: &Path, now: &str) -> Run {
    let rel = shared().release.to_str().unwrap();
    let filler = disk.path().join("filler");
    let before = listing(store, &[".lock"]);
    // Each failure is one more page: `pages` counts them.
    for pages in 0u64.. {
        let _ = fs::remove_file(&filler);
        let fill = disk.free() - pages * 4096;
        run_ok(Command::new("fallocate").args(["-l", &fill.to_string()]).arg(&filler));
        let run = promote(store, rel, now);
        if run.code == 0 {
            eprintln!("the move at {now} failed with 0 to {} pages free, and fit in {pages}", pages - 1);
            assert!(pages > 1, "the move failed only at its first write ({pages} failures)");
            fs::remove_file(&filler).unwrap();
            return run;
        }
        assert_disk_full(&run, disk, store);
        assert_eq!(listing(store, &[".lock"]), before, "a move that failed with {pages} pages free changed the store");
        assert!(pages < 300, "the move never fitted");
    }
    unreachable!()
}

#[test]
fn promote_on_a_full_disk_exits_3_naming_the_path_leaves_pointer_and_trust_as_they_were_and_succeeds_once_space_is_freed() {
    use verifier::keys::{KeyKind, Secret, SigningKey};
    let disk = Tmpfs::mount(8 << 20);
    let store = disk.path().join("channels");
    // A trust repository (TUF) whose release key is the development key the release used.
    let keys = tempfile::tempdir().unwrap();
    let root_key = keys.path().join("root.key");
    SigningKey::generate(KeyKind::EcdsaP256).write(&root_key, &root_key.with_extension("pub"), &Secret::new(String::new())).unwrap();
    let dev_pub = shared().source.join("target/keys/dev.pub");
    let mut init = xtask_cmd();
    init.args(["trust", "init", "--root-key"]).arg(&root_key).arg("--release-key").arg(&dev_pub);
    init.args(["--now", &day(0)]).arg("--source").arg(&shared().source).env("STELLAOPS_CHANNELS", &store);
    Run::of(init.output().unwrap()).ok();

    // The channel's first move: the kept copy of the release, log entry, pointer, trust.
    let first = promote_page_by_page(&disk, &store, &day(0));
    assert_eq!(first.json()["promoted"]["pointer"]["sequence"], 1, "{}", first.stdout);
    // A move over an existing pointer (the same release a day on: log entry, pointer, trust).
    let second = promote_page_by_page(&disk, &store, &day(1));
    assert_eq!(second.json()["promoted"]["pointer"]["sequence"], 2, "{}", second.stdout);
    assert_eq!(second.json()["promoted"]["trust"]["timestampVersion"], 2, "{}", second.stdout);
}
