//! Releasing only what changed: per-component image epochs (`[release] image-epoch =
//! "component"`) and the build cache (`target/stellaops-cache/builds/`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{digests, Repo, EPOCH};

/// Component name -> its stamped epoch, from a release's `images.json`.
fn epochs(release: &Path) -> BTreeMap<String, i64> {
    let images: serde_json::Value = serde_json::from_slice(&std::fs::read(release.join("images.json")).unwrap()).unwrap();
    images["components"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, c)| (name.clone(), c["epoch"]["source-date-epoch"].as_i64().unwrap_or_else(|| panic!("{name}: no epoch in {c}"))))
        .collect()
}

/// The ref names (`<component>-<os>-<arch>`, and the component's index) whose digests differ.
fn changed(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter().filter(|(k, v)| b[*k] != **v).map(|(k, _)| k.clone()).collect()
}

#[test]
fn a_commit_that_touches_one_component_changes_only_its_images() {
    let repo = Repo::new();
    let out = repo.path().join("target/out");
    let (a, b) = (out.join("a"), out.join("b"));
    repo.xtask(&["build", "--out", a.to_str().unwrap()]).ok();
    // An hour later: one recipe field of `authority`, and a file no component reads.
    repo.edit("release-trains/components.toml", "env = { PORT = \"8440\" }", "env = { PORT = \"8441\" }");
    repo.write("NOTES.md", "unrelated\n");
    repo.commit_all("authority listens elsewhere", EPOCH + 3600);
    repo.xtask(&["build", "--out", b.to_str().unwrap()]).ok();

    let (da, db) = (digests(&a.join("images")), digests(&b.join("images")));
    assert_eq!(changed(&da, &db), ["authority", "authority-linux-amd64", "authority-linux-arm64"], "{da:#?}\n{db:#?}");
    let (ea, eb) = (epochs(&a), epochs(&b));
    assert!(ea.values().all(|e| *e == EPOCH), "{ea:?}");
    for (name, e) in &eb {
        assert_eq!(*e, if name == "authority" { EPOCH + 3600 } else { EPOCH }, "{name}: {eb:?}");
    }
    // release.yaml's date stays the released commit's.
    let yaml = std::fs::read_to_string(b.join("release.yaml")).unwrap();
    assert!(yaml.contains(&schema::model::rfc3339(EPOCH + 3600)), "{yaml}");
}

#[test]
fn a_shallow_clone_is_refused_when_images_are_dated_per_component() {
    let repo = Repo::new();
    repo.write("NOTES.md", "second\n");
    repo.commit_all("second", EPOCH + 60);
    let clone = tempfile::tempdir().unwrap();
    let dest = clone.path().join("shallow");
    crate::support::run_ok(
        std::process::Command::new("git").args(["clone", "-q", "--depth", "1"]).arg(format!("file://{}", repo.path().display())).arg(&dest),
    );
    let run = crate::support::xtask_cmd().args(["plan", "--source"]).arg(&dest).output().unwrap();
    let run = crate::support::Run::of(run);
    run.refused(&["is a shallow clone", "image-epoch = \"component\"", "hint:", "fetch-depth: 0"]);
    // The whole history plans.
    repo.xtask(&["plan"]).ok();
}

/// A commit time no earlier run of these tests used (so no cache entry of it exists yet), in the
/// month of [`EPOCH`] (the calendar tag, which images carry, stays the same).
fn fresh_time() -> i64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    EPOCH + 60 + ((nanos / 1000 + u128::from(std::process::id())) % 600_000) as i64
}

/// `release --channel edge --skip-gates --json [extra]` into `target/out/<name>`: the result.
fn release(repo: &Repo, name: &str, extra: &[&str]) -> serde_json::Value {
    let out = repo.path().join("target/out").join(name);
    let mut args = vec!["release", "--channel", "edge", "--skip-gates", "--json", "--out", out.to_str().unwrap()];
    args.extend(extra);
    repo.xtask(&args).ok().json()
}

/// Per component: whether every image was `cached` or `built`, and the key parts named as changed.
fn cache_of(result: &serde_json::Value) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for o in result["release"]["cache"].as_array().unwrap_or_else(|| panic!("no cache outcomes: {result}")) {
        let name = o["component"].as_str().unwrap().to_owned();
        let status = o["status"].as_str().unwrap().to_owned();
        let changed: Vec<String> =
            o["changed"].as_array().map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect()).unwrap_or_default();
        let e = out.entry(name.clone()).or_insert_with(|| (status.clone(), changed.clone()));
        assert_eq!(e.0, status, "{name}: its platforms disagree: {result}");
    }
    out
}

/// Releases the scratch repository (the cache warm for it), applies `change` and commits it, then
/// releases again: exactly `affected` are built, each naming `part` among the changed key
/// parts; the others come from the cache; and a `--no-cache` release of the same commit has
/// the same digests.
fn one_change(setup: impl FnOnce(&Repo), change: impl FnOnce(&Repo), affected: &[&str], part: &str) {
    let repo = Repo::new();
    // A registry of this test's own: its keys are its own (other tests share the cache and may
    // edit a release's blobs in place, which a hit's hard link shares with the cache).
    repo.edit(
        "release-trains/components.toml",
        "registry = \"registry.stella-ops.org/stellaops\"",
        &format!("registry = \"registry.stella-ops.org/cache-{part}\""),
    );
    setup(&repo);
    repo.commit_all("setup", EPOCH);
    release(&repo, "warm", &[]);
    change(&repo);
    repo.commit_all("the change", fresh_time());
    let cached = release(&repo, "cached", &[]);
    let got = cache_of(&cached);
    assert_eq!(got.len(), 8, "{got:?}");
    for (name, (status, changed)) in &got {
        if affected.contains(&name.as_str()) {
            assert_eq!(status, "built", "{name}: {got:?}");
            assert!(changed.iter().any(|c| c == part), "{name}: `{part}` not among the changed parts: {got:?}");
        } else {
            assert_eq!(status, "cached", "{name}: {got:?}");
        }
    }
    let fresh = release(&repo, "fresh", &["--no-cache"]);
    assert!(fresh["release"].get("cache").is_none(), "--no-cache used the cache: {fresh}");
    let out = repo.path().join("target/out");
    assert_eq!(digests(&out.join("cached/images")), digests(&out.join("fresh/images")));
    // The evidence too: SBOMs and scans (kept scans read back as made) and the drift report.
    for rel in ["images.json", "drift.json"] {
        assert_eq!(std::fs::read(out.join("cached").join(rel)).unwrap(), std::fs::read(out.join("fresh").join(rel)).unwrap(), "{rel}");
    }
    for dir in ["sboms", "scans"] {
        assert_eq!(files(&out.join("cached").join(dir)), files(&out.join("fresh").join(dir)), "{dir}");
    }
}

/// Every file under `dir`: relative path -> bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().strip_prefix(dir).unwrap().display().to_string(), std::fs::read(e.path()).unwrap()))
        .collect()
}

#[test]
fn a_changed_source_file_rebuilds_only_its_component() {
    let main = "components/excititor/cmd/stellaops-excititor/main.go";
    one_change(|_| {}, |r| r.edit(main, "package main\n", "package main\n\n// touched by the cache test\n"), &["excititor"], "source");
}

#[test]
fn a_changed_recipe_field_rebuilds_only_its_component() {
    one_change(
        |_| {},
        |r| r.edit("release-trains/components.toml", "env = { PORT = \"8440\" }", "env = { PORT = \"8449\" }"),
        &["authority"],
        "recipe",
    );
}

#[test]
fn a_changed_build_argument_rebuilds_only_its_component() {
    let signer = "env = { PORT = \"8441\" }";
    one_change(
        |r| {
            r.edit(
                "release-trains/components.toml",
                signer,
                &format!("{signer}\ndockerfile = \"Dockerfile\"\nbuild-args = {{ FLAVOR = \"a\" }}"),
            )
        },
        |r| r.edit("release-trains/components.toml", "FLAVOR = \"a\"", "FLAVOR = \"b\""),
        &["signer"],
        "build-args",
    );
}

#[test]
fn a_changed_toolchain_rebuilds_only_the_components_it_compiles() {
    // The same packages listed in another order: another toolchain entry, the same compiler.
    let uuid = "[[toolchain.packages]]\nname = \"golang-github-google-uuid-dev\"";
    let errors = "[[toolchain.packages]]\nname = \"golang-github-pkg-errors-dev\"";
    one_change(
        |_| {},
        |r| {
            let lock = r.read("base-images.lock");
            let (head, tail) = lock.split_at(lock.find(uuid).unwrap());
            let (uuid_pkg, errors_pkg) = tail.split_at(tail.find(errors).unwrap());
            r.write("base-images.lock", &format!("{head}{}\n\n{}\n", errors_pkg.trim_end(), uuid_pkg.trim_end()));
        },
        &["excititor"],
        "toolchain",
    );
}

/// `base-images.lock` with a second base `other`: busybox's packages with another epoch (so
/// another digest), pinned with `pins` (amd64, arm64).
fn other_base(lock: &str, pins: (&str, &str)) -> String {
    let pkg = |p: &str| {
        let after = lock.split(&format!("[[base.platform.\"{p}\".packages]]")).nth(1).unwrap();
        after.split("\n[").next().unwrap().trim().to_owned()
    };
    format!(
        "{lock}\n[[base]]\nname = \"other\"\nsource = \"debian\"\nsuite = \"bookworm\"\nepoch = 1767225602\ndirectories = [\"tmp\"]\n\n\
         [base.symlinks]\n\"bin/sh\" = \"busybox\"\n\n\
         [base.platform.\"linux/amd64\"]\ndigest = \"{}\"\n\n[[base.platform.\"linux/amd64\".packages]]\n{}\n\n\
         [base.platform.\"linux/arm64\"]\ndigest = \"{}\"\n\n[[base.platform.\"linux/arm64\".packages]]\n{}\n",
        pins.0,
        pkg("linux/amd64"),
        pins.1,
        pkg("linux/arm64")
    )
}

#[test]
fn a_changed_base_digest_rebuilds_only_the_components_on_it() {
    one_change(
        |_| {},
        |r| {
            // Pin the second base by what the pipeline assembles (read from the refusal of a
            // wrong pin), then move `web-ui` onto it.
            let bundle = r.read("release-trains/components.toml");
            let at = bundle.find("name = \"web-ui\"").unwrap();
            let (head, tail) = bundle.split_at(at);
            r.write("release-trains/components.toml", &format!("{head}{}", tail.replacen("base = \"busybox\"", "base = \"other\"", 1)));
            let lock = r.read("base-images.lock");
            let mut pins = (format!("sha256:{}", "0".repeat(64)), format!("sha256:{}", "1".repeat(64)));
            for _ in 0..2 {
                r.write("base-images.lock", &other_base(&lock, (&pins.0, &pins.1)));
                r.commit_all("pin the other base", EPOCH);
                let run = r.xtask(&["build", "--out", r.path().join("target/out/pins").to_str().unwrap()]);
                if !run.stderr.contains("base `other` (") {
                    break;
                }
                for (platform, pin) in [("linux/amd64", &mut pins.0), ("linux/arm64", &mut pins.1)] {
                    let needle = format!("base `other` ({platform}) assembles to `");
                    if let Some(at) = run.stderr.find(&needle) {
                        *pin = run.stderr[at + needle.len()..at + needle.len() + 71].to_owned();
                    }
                }
            }
            r.write("base-images.lock", &other_base(&lock, (&pins.0, &pins.1)));
        },
        &["web-ui"],
        "base",
    );
}

#[test]
fn a_corrupted_cache_entry_is_rebuilt_and_repro_never_reads_the_cache() {
    let repo = Repo::new();
    // A registry no other test uses: every key of this test is its own (other tests share the
    // cache and must not meet the corrupted entry).
    repo.edit(
        "release-trains/components.toml",
        "registry = \"registry.stella-ops.org/stellaops\"",
        "registry = \"registry.stella-ops.org/cache-test\"",
    );
    repo.commit_all("its own registry", fresh_time());
    let warm = release(&repo, "warm", &[]);
    assert!(cache_of(&warm).values().all(|(s, _)| s == "built"), "{warm}");
    // 1. Flip a byte of the largest blob of authority's amd64 entry.
    let builds = crate::support::cache().join("builds");
    let key = std::fs::read_to_string(builds.join("by-image/authority-linux-amd64")).unwrap();
    let entry = builds.join(key.trim());
    let blob = std::fs::read_dir(entry.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    // A hard link may share the blob with the release's layout: write a new file instead.
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, &bytes).unwrap();
    // 2. `repro` builds twice without the cache: reproducible, and the entry untouched (a read
    //    would have found the corruption and removed it).
    let r = repo.xtask(&["repro", "--json"]);
    assert_eq!(r.json()["reproducible"], true, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(std::fs::read(&blob).unwrap(), bytes, "repro touched the cache");
    // 3. A release finds the corruption: that image is rebuilt (with a note naming the entry),
    //    the others come from the cache, and every digest is the warm release's.
    let again = release(&repo, "again", &[]);
    let outcomes = again["release"]["cache"].as_array().unwrap();
    for o in outcomes {
        let corrupted = o["component"] == "authority" && o["platform"] == "linux/amd64";
        assert_eq!(o["status"], if corrupted { "built" } else { "cached" }, "{o}");
        if corrupted {
            let note = o["note"].as_str().unwrap_or_default();
            assert!(note.contains(key.trim()) && note.contains("removed") && note.contains("holds"), "{note}");
        }
    }
    let out = repo.path().join("target/out");
    assert_eq!(digests(&out.join("warm/images")), digests(&out.join("again/images")));
    // The entry was stored again, whole.
    let third = release(&repo, "third", &[]);
    assert!(cache_of(&third).values().all(|(s, _)| s == "cached"), "{third}");
}

#[test]
fn two_releases_storing_the_same_entries_at_once_leave_whole_entries() {
    let repo = Repo::new();
    repo.edit(
        "release-trains/components.toml",
        "registry = \"registry.stella-ops.org/stellaops\"",
        "registry = \"registry.stella-ops.org/cache-race\"",
    );
    repo.commit_all("its own registry", fresh_time());
    // Two releases of one commit into two directories, at once: every key is new to both.
    // Both are the first use of the repository's development key: one makes it, under a
    // lock, and both sign with it.
    assert!(!repo.path().join("target/keys/dev.key").exists());
    let spawn = |name: &str| {
        let out = repo.path().join("target/out").join(name);
        crate::support::xtask_cmd()
            .args(["release", "--channel", "edge", "--skip-gates", "--json", "--out"])
            .arg(&out)
            .arg("--source")
            .arg(repo.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    for child in [a, b] {
        crate::support::Run::of(child.wait_with_output().unwrap()).ok();
    }
    // Whatever the interleaving, the entries are whole: a third release takes every image from
    // the cache, with the same digests.
    let third = release(&repo, "third", &[]);
    assert!(cache_of(&third).values().all(|(s, _)| s == "cached"), "{third}");
    let out = repo.path().join("target/out");
    assert_eq!(digests(&out.join("a/images")), digests(&out.join("third/images")));
    assert_eq!(digests(&out.join("b/images")), digests(&out.join("third/images")));
    // Both signed with the one development key.
    let dev = repo.path().join("target/keys/dev.pub");
    for dir in ["a", "b"] {
        crate::support::Run::of(crate::support::xtask_cmd().arg("verify").arg(out.join(dir)).arg("--key").arg(&dev).output().unwrap()).ok();
    }
}

/// The entries of a build cache (`<cache>/builds/<64 hex>`): name -> bytes (entry.json and blobs).
fn entry_sizes(builds: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(builds)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().len() == 64)
        .map(|e| {
            let bytes = walkdir::WalkDir::new(e.path())
                .into_iter()
                .map(|f| f.unwrap())
                .filter(|f| f.file_type().is_file())
                .map(|f| f.metadata().unwrap().len())
                .sum();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

/// A hand-made entry `name` of `bytes` (one blob), last used `age_days` ago.
fn planted_entry(builds: &Path, name: &str, bytes: usize, age_days: u64) {
    let dir = builds.join(name);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(name), vec![7u8; bytes]).unwrap();
    std::fs::write(dir.join("entry.json"), "{}").unwrap();
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(age_days * 86_400);
    std::fs::File::options().append(true).open(dir.join("entry.json")).unwrap().set_modified(when).unwrap();
}

#[test]
fn the_cache_is_pruned_to_its_size_least_recently_used_first_never_this_release_s_and_leftovers_go() {
    let repo = Repo::new();
    repo.edit(
        "release-trains/components.toml",
        "registry = \"registry.stella-ops.org/stellaops\"",
        "registry = \"registry.stella-ops.org/cache-prune\"",
    );
    repo.commit_all("its own registry", fresh_time());
    // A cache of its own (a limit on the shared one would prune other tests' entries), holding
    // the shared one's packages and toolchains by hard link.
    let own = tempfile::tempdir().unwrap();
    let cache = own.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for e in std::fs::read_dir(crate::support::cache()).unwrap().map(|e| e.unwrap()) {
        if e.file_name() != "builds" {
            crate::support::run_ok(std::process::Command::new("cp").arg("-al").arg(e.path()).arg(cache.join(e.file_name())));
        }
    }
    let builds = cache.join("builds");
    let c = cache.to_str().unwrap();
    let warm = release(&repo, "warm", &["--cache", c]);
    assert!(cache_of(&warm).values().all(|(s, _)| s == "built"), "{warm}");
    let first = entry_sizes(&builds);
    assert_eq!(first.len(), 16, "{first:?}");

    // 1. A commit that changes authority, released with `--cache-max-size 0`: its two new
    //    entries are stored, the 14 reused ones are this release's too, and only authority's
    //    two old entries (not used by it) go.
    repo.edit("release-trains/components.toml", "env = { PORT = \"8440\" }", "env = { PORT = \"8442\" }");
    repo.commit_all("authority moves", fresh_time());
    let pruned = release(&repo, "pruned", &["--cache", c, "--cache-max-size", "0"]);
    let got = cache_of(&pruned);
    assert!(got.iter().all(|(n, (s, _))| s == if n == "authority" { "built" } else { "cached" }), "{got:?}");
    let after = entry_sizes(&builds);
    let gone: Vec<&String> = first.keys().filter(|k| !after.contains_key(*k)).collect();
    assert_eq!(gone.len(), 2, "{first:?}\n{after:?}");
    assert_eq!(after.len(), 16, "{after:?}");
    let p = &pruned["release"]["cache_pruned"];
    assert_eq!(p["entries"], 2, "{p}");
    assert_eq!(p["bytes"], gone.iter().map(|k| first[*k]).sum::<u64>(), "{p}");
    assert_eq!(p["kept_bytes"], after.values().sum::<u64>(), "{p}");
    assert_eq!(p["max_bytes"], 0, "{p}");
    // Their scans went with them; the kept images' scans stay.
    assert_eq!(std::fs::read_dir(builds.join("scans")).unwrap().count(), 16);

    // 2. Two entries last used 3 and 2 days ago (1 MiB each), a temporary entry and a discarded
    //    one left by killed runs, and a temporary entry a live run holds locked. With room for
    //    this release's entries and one MiB more, the older planted entry goes, the younger
    //    stays, the leftovers go and the held one stays.
    let (old, young) = ("a".repeat(64), "b".repeat(64));
    planted_entry(&builds, &old, 1 << 20, 3);
    planted_entry(&builds, &young, 1 << 20, 2);
    std::fs::create_dir_all(builds.join(".tmp-killed/blobs")).unwrap();
    std::fs::create_dir_all(builds.join(format!(".discard-1-{}", "c".repeat(64)))).unwrap();
    std::fs::create_dir_all(builds.join(".tmp-live")).unwrap();
    let held = std::fs::File::open(builds.join(".tmp-live")).unwrap();
    held.lock().unwrap();
    let limit = after.values().sum::<u64>() + (1 << 20) + 4096;
    let third = release(&repo, "third", &["--cache", c, "--cache-max-size", &limit.to_string()]);
    assert!(cache_of(&third).values().all(|(s, _)| s == "cached"), "{third}");
    let p = &third["release"]["cache_pruned"];
    assert_eq!((p["entries"].as_u64(), p["leftovers"].as_u64()), (Some(1), Some(2)), "{p}");
    assert!(!builds.join(&old).exists() && builds.join(&young).exists());
    assert!(!builds.join(".tmp-killed").exists());
    assert!(builds.join(".tmp-live").exists(), "a live run's temporary entry was removed");
    drop(held);
    // The summary a person reads says it: with 1 MiB allowed, the younger planted entry goes
    //    too, and this release's 16 stay (more than the limit).
    let out = repo.path().join("target/out/text");
    let text = repo.xtask(&[
        "release",
        "--channel",
        "edge",
        "--skip-gates",
        "--cache",
        c,
        "--cache-max-size",
        "1MiB",
        "--out",
        out.to_str().unwrap(),
    ]);
    let line = text.ok().stdout.lines().find(|l| l.contains("build cache")).map(str::to_owned);
    let line = line.unwrap_or_else(|| panic!("no build cache line: {}", text.stdout));
    assert!(
        line.contains("16 of 16 images reused; 1 least recently used entries removed (1 MiB)") && line.contains("of 1 MiB allowed"),
        "{line}"
    );
    assert!(!builds.join(&young).exists());
    assert_eq!(entry_sizes(&builds).len(), 16);
}
