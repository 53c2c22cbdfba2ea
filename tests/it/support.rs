//! Shared test support: a scratch git repository holding a copy of this project's release
//! configuration and stand-ins, and a runner for the real `cargo xtask` binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (where `release-trains/` is).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent").to_owned()
}

/// One cache of fetched `.deb` files for every test (entries are content-addressed and
/// written atomically, so tests may share it).
pub fn cache() -> PathBuf {
    workspace().join("target/stellaops-cache")
}

/// A scratch repository: `release-trains/`, `base-images.lock` and `components/` copied from
/// the workspace and committed at a fixed time.
pub struct Repo {
    /// Under `$TMPDIR`, locked while this process lives: removed when dropped, and by the next
    /// test run when this one did not drop it (a repository shared by a module is leaked on
    /// purpose; a killed run drops nothing).
    pub dir: oci::dirs::Scratch,
    /// Set by [`Repo::release_key`]: the key every later `xtask` call signs with.
    key: std::cell::RefCell<Option<PathBuf>>,
}

/// `release-trains/gates.toml` of a scratch repository: the real audit, a trivial test gate.
pub const TEST_GATES: &str =
    "[audit]\nadvisories = \"release-trains/advisories.osv.json\"\n\n[[test]]\nname = \"smoke\"\ncommand = [\"true\"]\n";

/// Commit time of the first commit: 2027-06-20T12:00:00Z (the spec's example date).
pub const EPOCH: i64 = 1_813_492_800;

impl Repo {
    pub fn new() -> Repo {
        let dir = oci::dirs::Scratch::new("stellaops-it-repo-").expect("temp dir");
        let root = workspace();
        for item in ["release-trains", "components", "templates", "policy", "base-images.lock"] {
            copy(&root.join(item), &dir.path().join(item));
        }
        fs::write(dir.path().join(".gitignore"), "/target\n").expect("write .gitignore");
        // The repository's gates run its whole test suite and benches: a scratch repository
        // keeps the audit and gets a cheap command (tests/it/ops.rs sets its own gates).
        fs::write(dir.path().join("release-trains/gates.toml"), TEST_GATES).expect("write gates.toml");
        let repo = Repo { dir, key: Default::default() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.commit_all("initial", EPOCH);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "it")
            .env("GIT_AUTHOR_EMAIL", "it@example.invalid")
            .env("GIT_COMMITTER_NAME", "it")
            .env("GIT_COMMITTER_EMAIL", "it@example.invalid")
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Commits everything with author and committer time `epoch`.
    pub fn commit_all(&self, message: &str, epoch: i64) {
        self.git(&["add", "-A"]);
        let date = format!("@{epoch} +0000");
        let out = Command::new("git")
            .args(["commit", "-q", "--allow-empty", "-m", message])
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "it")
            .env("GIT_AUTHOR_EMAIL", "it@example.invalid")
            .env("GIT_COMMITTER_NAME", "it")
            .env("GIT_COMMITTER_EMAIL", "it@example.invalid")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .expect("run git commit");
        assert!(out.status.success(), "git commit: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path().join(rel)).expect("read file")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write file");
    }

    /// Replaces `from` by `to` in `rel`, asserting that `from` was there.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "`{from}` not in {rel}");
        self.write(rel, &text.replacen(from, to, 1));
    }

    /// Runs `cargo xtask ARGS` with `--source` this repository and the shared cache.
    pub fn xtask(&self, args: &[&str]) -> Run {
        let mut cmd = xtask_cmd();
        if let Some(key) = &*self.key.borrow() {
            cmd.env("STELLAOPS_SIGNING_KEY", key);
        }
        cmd.args(args).arg("--source").arg(self.path());
        Run::of(cmd.output().expect("run xtask"))
    }

    /// Makes a release key (`target/keys/release.key`, `.pub` beside it, empty passphrase) and
    /// signs every later `xtask` call with it (`STELLAOPS_SIGNING_KEY`): stable and lts are
    /// never signed with the development key. Returns the public key's path.
    pub fn release_key(&self) -> PathBuf {
        use verifier::keys::{KeyKind, Secret, SigningKey};
        let key = self.path().join("target/keys/release.key");
        if !key.exists() {
            SigningKey::generate(KeyKind::EcdsaP256)
                .write(&key, &key.with_extension("pub"), &Secret::new(String::new()))
                .expect("write key");
        }
        *self.key.borrow_mut() = Some(key.clone());
        key.with_extension("pub")
    }

    /// Signs every later `xtask` call with the key at `key` (`STELLAOPS_SIGNING_KEY`).
    pub fn sign_with(&self, key: &Path) {
        *self.key.borrow_mut() = Some(key.to_owned());
    }

    pub fn releases(&self) -> PathBuf {
        self.path().join("target/releases")
    }
}

/// The `cargo xtask` binary with the shared cache and no terminal.
pub fn xtask_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.env("STELLAOPS_CACHE", cache()).env("NO_COLOR", "1").stdin(std::process::Stdio::null());
    cmd
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts a refusal (exit 1) whose message contains every one of `needles`.
    #[track_caller]
    pub fn refused(&self, needles: &[&str]) -> &Run {
        assert_eq!(self.code, 1, "expected exit 1\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks `{n}`:\n{}", self.stderr);
        }
        self
    }

    pub fn json(&self) -> serde_json::Value {
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
    }
}

pub fn copy(from: &Path, to: &Path) {
    let meta = fs::symlink_metadata(from).expect("stat");
    if meta.is_dir() {
        fs::create_dir_all(to).expect("mkdir");
        for e in fs::read_dir(from).expect("read dir") {
            let e = e.expect("dir entry");
            copy(&e.path(), &to.join(e.file_name()));
        }
    } else {
        fs::copy(from, to).expect("copy file");
    }
}

/// A tool other people wrote, or `None` with a loud message. Under `CI` a missing tool fails
/// the test: a skip is never a pass there.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        let msg = format!("`{name}` is not installed: run the README's test command (tests/run.sh), which installs it");
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED (not a pass): {msg}");
    }
    found
}

/// Runs a command and asserts success; returns stdout.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Digests by ref name from a release's `images/index.json` (images and indexes; the
/// signature artifacts `sha256-<hex>.sig` and the unnamed referrers left out).
pub fn digests(layout: &Path) -> std::collections::BTreeMap<String, String> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index.json")).expect("json");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        // Referrers are listed without a ref name.
        .filter_map(|d| {
            Some((d["annotations"]["org.opencontainers.image.ref.name"].as_str()?.to_owned(), d["digest"].as_str()?.to_owned()))
        })
        .filter(|(name, _)| !name.ends_with(".sig"))
        .collect()
}

/// An independent checker installed by tests/run.sh, named by its environment variable, or
/// `None` with a loud message (a failure under `CI`).
pub fn verifier(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            let msg = format!("`{var}` is not set: run the tests with tests/run.sh, which installs the verifiers");
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED (not a pass): {msg}");
            None
        }
    }
}

/// The hex digest of the last layer of `component`'s first image, from a release's images.json.
pub fn last_layer(release: &Path, component: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(release.join("images.json")).expect("images.json")).expect("json");
    v["components"][component]["images"][0]["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l.as_str())
        .expect("a layer")
        .trim_start_matches("sha256:")
        .to_owned()
}

/// The Docker engine and loopback registry that tests/run.sh starts: (DOCKER_HOST, registry),
/// or `None` with a loud message (a failure under `CI`).
pub fn services() -> Option<(String, String)> {
    match (std::env::var("DOCKER_HOST").ok(), std::env::var("STELLAOPS_TEST_REGISTRY").ok()) {
        (Some(d), Some(r)) => Some((d, r)),
        _ => {
            let msg =
                "DOCKER_HOST and STELLAOPS_TEST_REGISTRY are not set: run the tests with tests/run.sh, which starts dockerd and a registry";
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED (not a pass): {msg}");
            None
        }
    }
}

/// `STELLAOPS_TEST_REGISTRY` alone (tests that need no Docker engine), or `None` with a loud
/// message (a failure under `CI`).
pub fn registry() -> Option<String> {
    let found = std::env::var("STELLAOPS_TEST_REGISTRY").ok();
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "STELLAOPS_TEST_REGISTRY is not set: run tests/run.sh");
        eprintln!("SKIPPED (not a pass): STELLAOPS_TEST_REGISTRY is not set");
    }
    found
}

/// `skopeo copy --all --preserve-digests` of `from` (any skopeo source) to `docker://{dest}` on
/// the loopback registry (plain HTTP).
pub fn push(skopeo: &Path, from: &str, dest: &str) {
    run_ok(
        Command::new(skopeo)
            .args(["copy", "--all", "--preserve-digests", "--quiet", "--dest-tls-verify=false"])
            .arg(from)
            .arg(format!("docker://{dest}")),
    );
}
