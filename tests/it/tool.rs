//! The customer tool, `stellaops` (the `tool/` crate): built from the consumer crates only,
//! run where there is no repository and no Rust toolchain on `PATH`, it verifies a kit and a
//! release directory, imports a kit, and refuses a tampered kit and a foreign key.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{workspace, Repo, Run};

/// Builds the tool (incremental: its dependencies are the test build's) and returns it.
pub(crate) fn built_tool() -> PathBuf {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--locked", "--quiet", "-p", "stellaops", "--message-format=json"]).current_dir(workspace());
    // Without what `cargo test` set for this package: build scripts that watch it (ring's)
    // would rebuild their crates for this build and again for the next (see the gates).
    for k in pipeline::stages::gates::cargo_run_env() {
        cmd.env_remove(k);
    }
    let out = cmd.output().expect("run cargo build -p stellaops");
    assert!(out.status.success(), "cargo build -p stellaops: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "stellaops")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the stellaops executable")
}

/// The tool copied into `host` (a directory standing for the air-gapped host) and run there:
/// no environment but a `PATH` of the system's directories (no cargo, no rustc), no
/// repository around it.
fn on_host(host: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(host.join("stellaops"));
    cmd.args(args).current_dir(host).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("HOME", host);
    Run::of(cmd.output().expect("run stellaops"))
}

#[test]
fn the_customer_tool_verifies_and_imports_a_kit_on_a_host_without_the_repository_or_a_toolchain() {
    let tool = built_tool();
    let repo = Repo::new();
    let rel = repo.path().join("target/r1");
    repo.xtask(&["release", "--channel", "edge", "--out", rel.to_str().unwrap()]).ok();
    // The host: the tool, the kit and the public key, in a directory outside any repository.
    let host = tempfile::Builder::new().prefix("stellaops-host-").tempdir().unwrap();
    let h = host.path();
    fs::copy(&tool, h.join("stellaops")).unwrap();
    fs::copy(rel.join("stellaops-kit-2.4.1-edge.tar.zst"), h.join("kit.tar.zst")).unwrap();
    fs::copy(repo.path().join("target/keys/dev.pub"), h.join("release.pub")).unwrap();
    let which = Command::new("sh")
        .args(["-c", "command -v cargo || command -v rustc || true"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert!(which.stdout.is_empty(), "the host's PATH has a Rust toolchain: {}", String::from_utf8_lossy(&which.stdout));
    assert!(Command::new("git").args(["rev-parse"]).current_dir(h).output().map(|o| !o.status.success()).unwrap_or(true));

    on_host(h, &["--help"]).ok();
    let v = on_host(h, &["offline", "kit", "verify", "kit.tar.zst", "--key", "release.pub", "--json"]);
    v.ok();
    assert_eq!(v.json()["verified"], true);
    let i = on_host(h, &["offline", "kit", "import", "kit.tar.zst", "--into", "layout", "--key", "release.pub"]);
    i.ok();
    assert!(i.stdout.contains("imported into"), "{}", i.stdout);
    assert!(h.join("layout/index.json").is_file() && h.join("layout/stellaops/2.4.1-edge/manifest/release.yaml").is_file());
    // The release directory verifies too, and `verify` of the kit is the same check.
    fs::create_dir_all(h.join("release")).unwrap();
    crate::support::copy(&rel, &h.join("release"));
    on_host(h, &["verify", "release", "--key", "release.pub"]).ok();
    on_host(h, &["verify", "kit.tar.zst", "--key", "release.pub"]).ok();

    // Refusals: a key that did not sign it; a kit with one byte changed; a usage error.
    let other = h.join("other.key");
    verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256)
        .write(&other, &h.join("other.pub"), &verifier::keys::Secret::new(String::new()))
        .unwrap();
    let r = on_host(h, &["offline", "kit", "import", "kit.tar.zst", "--into", "layout2", "--key", "other.pub"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(!h.join("layout2").exists(), "a refused import made its target");
    let mut bytes = fs::read(h.join("kit.tar.zst")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(h.join("bad.tar.zst"), &bytes).unwrap();
    let r = on_host(h, &["offline", "kit", "verify", "bad.tar.zst", "--key", "release.pub"]);
    assert_ne!(r.code, 0, "a tampered kit verified: {}", r.stdout);
    assert_eq!(on_host(h, &["offline", "kit", "import"]).code, 64);
}
