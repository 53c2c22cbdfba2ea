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

/// The scratch repository's channel store with a trust repository a client can load: `trust
/// init` (a new root key, `release_pub` the release key) and `trust refresh` (targets,
/// snapshot, timestamp, signed with the release key). Returns the first root (what a customer
/// pins).
fn published_trust(repo: &Repo, release_pub: &Path) -> PathBuf {
    let (_, _, trusted_root) = crate::tuf::init_trust(repo, &[release_pub]);
    repo.xtask(&["trust", "refresh", "--now", &schema::model::rfc3339(crate::support::EPOCH)]).ok();
    trusted_root
}

/// The files of a kit entry under `prefix`, by name (read without verifying: the tests compare).
fn kit_entries(kit: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    crate::kit::unpack(kit).into_iter().map(|r| (crate::kit::name_of(&r), r.data)).filter(|(n, _)| n.starts_with(prefix)).collect()
}

/// `openssl` checking the tool's raw signature with the release's public key, as the README
/// tells a customer to: `dgst -sha256` for ECDSA P-256, `pkeyutl -rawin` for Ed25519.
fn openssl_verifies(openssl: &Path, dir: &Path, kind: verifier::keys::KeyKind, program: &str) -> Run {
    let mut cmd = Command::new(openssl);
    match kind {
        verifier::keys::KeyKind::EcdsaP256 => {
            cmd.args(["dgst", "-sha256", "-verify", "release.pub", "-signature", "tools/stellaops.sig", program]);
        }
        verifier::keys::KeyKind::Ed25519 => {
            cmd.args([
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                "release.pub",
                "-rawin",
                "-in",
                program,
                "-sigfile",
                "tools/stellaops.sig",
            ]);
        }
    }
    Run::of(cmd.current_dir(dir).output().expect("run openssl"))
}

/// A root file system of Debian packages only (apt's own download, no image pull): the C
/// library and the GCC runtime the tool links (`ldd`), and an empty `/tmp`. No shell, no Rust.
fn debian_rootfs(dir: &Path) -> PathBuf {
    let debs = dir.join("debs");
    fs::create_dir_all(&debs).unwrap();
    crate::support::run_ok(Command::new("apt-get").args(["download", "-q", "libc6", "libgcc-s1"]).current_dir(&debs));
    let rootfs = dir.join("rootfs");
    for deb in fs::read_dir(&debs).unwrap() {
        crate::support::run_ok(Command::new("dpkg-deb").arg("-x").arg(deb.unwrap().path()).arg(&rootfs));
    }
    fs::create_dir_all(rootfs.join("tmp")).unwrap();
    fs::create_dir_all(rootfs.join("kit")).unwrap();
    fs::create_dir_all(rootfs.join("out")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    }
    fn names(dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                names(&e.path(), out);
            }
        }
    }
    let mut all = Vec::new();
    names(&rootfs, &mut all);
    let found: Vec<&String> = all.iter().filter(|n| ["cargo", "rustc", "sh", "busybox", "openssl"].contains(&n.as_str())).collect();
    assert!(found.is_empty(), "the air-gapped root file system has {found:?}");
    let tar = dir.join("rootfs.tar");
    crate::support::run_ok(Command::new("tar").arg("-C").arg(&rootfs).args(["--sort=name", "-cf"]).arg(&tar).arg("."));
    tar
}

#[test]
fn the_kit_s_own_tool_checked_by_openssl_verifies_and_imports_the_kit_in_a_container_without_rust_or_the_repository() {
    let Some(_) = crate::support::services() else { return };
    let (Some(docker), Some(openssl), Some(_)) =
        (crate::support::tool("docker"), crate::support::tool("openssl"), crate::support::tool("apt-get"))
    else {
        return;
    };
    let repo = Repo::new();
    let release_pub = repo.release_key();
    let trusted_root = published_trust(&repo, &release_pub);
    let rel = repo.path().join("target/r1");
    repo.xtask(&["release", "--channel", "edge", "--out", rel.to_str().unwrap()]).ok();
    let kit = rel.join("stellaops-kit-2.4.1-edge.tar.zst");

    // The host: the kit, the published public key and the pinned trust root, nothing else.
    let host = tempfile::Builder::new().prefix("stellaops-airgap-").tempdir().unwrap();
    let h = host.path();
    fs::copy(&kit, h.join("kit.tar.zst")).unwrap();
    fs::copy(&release_pub, h.join("release.pub")).unwrap();
    fs::copy(&trusted_root, h.join("root.json")).unwrap();
    // The README's steps: take the tool out of the kit, check its signature with openssl.
    crate::support::run_ok(Command::new("tar").args(["--zstd", "-xf", "kit.tar.zst", "tools/"]).current_dir(h));
    let checked = openssl_verifies(&openssl, h, verifier::keys::KeyKind::EcdsaP256, "tools/stellaops");
    checked.ok();
    assert!(checked.stdout.contains("Verified OK"), "{}", checked.stdout);
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(h.join("tools/stellaops")).unwrap().permissions().mode() & 0o777, 0o755);
    }
    assert_eq!(fs::read(h.join("tools/stellaops")).unwrap(), fs::read(rel.join("tools/stellaops")).unwrap());
    // One flipped byte and openssl says no.
    let mut flipped = fs::read(h.join("tools/stellaops")).unwrap();
    let at = flipped.len() / 3;
    flipped[at] ^= 0x20;
    fs::write(h.join("flipped"), &flipped).unwrap();
    assert_ne!(openssl_verifies(&openssl, h, verifier::keys::KeyKind::EcdsaP256, "flipped").code, 0, "openssl accepted a flipped tool");

    // The container: Debian's libc6 and libgcc-s1 only, imported (no pull), no network; the
    // kit, key and root read-only; the import target the only writable mount.
    let scratch = tempfile::tempdir().unwrap();
    let rootfs = debian_rootfs(scratch.path());
    let image = format!("stellaops-airgap-it:{}", std::process::id());
    crate::support::run_ok(Command::new(&docker).arg("import").arg(&rootfs).arg(&image));
    let out = h.join("out");
    fs::create_dir_all(&out).unwrap();
    let in_container = |args: &[&str]| {
        let mut cmd = Command::new(&docker);
        cmd.args(["run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"])
            .arg("-v")
            .arg(format!("{}:/kit/kit.tar.zst:ro", h.join("kit.tar.zst").display()))
            .arg("-v")
            .arg(format!("{}:/kit/release.pub:ro", h.join("release.pub").display()))
            .arg("-v")
            .arg(format!("{}:/kit/root.json:ro", h.join("root.json").display()))
            .arg("-v")
            .arg(format!("{}:/usr/local/bin/stellaops:ro", h.join("tools/stellaops").display()))
            .arg("-v")
            .arg(format!("{}:/out", out.display()))
            .arg(&image)
            .arg("/usr/local/bin/stellaops")
            .args(args);
        Run::of(cmd.output().expect("run docker"))
    };
    let verified = in_container(&[
        "offline",
        "kit",
        "verify",
        "/kit/kit.tar.zst",
        "--key",
        "/kit/release.pub",
        "--trust-root",
        "/kit/root.json",
        "--json",
    ]);
    let imported = in_container(&[
        "offline",
        "kit",
        "import",
        "/kit/kit.tar.zst",
        "--into",
        "/out/layout",
        "--key",
        "/kit/release.pub",
        "--trust-root",
        "/kit/root.json",
    ]);
    let _ = Command::new(&docker).args(["rmi", "-f", &image]).output();
    verified.ok();
    let checks = verified.json()["report"]["checks"]["checks"].clone();
    for what in ["customer tool `tools/stellaops` (linux/amd64): signature", "trust repository `trust/` (TUF) from the pinned root"] {
        assert!(
            checks.as_array().unwrap().iter().any(|c| c["ok"] == true && c["what"].as_str().unwrap().starts_with(what)),
            "no passed check `{what}`: {checks}"
        );
    }
    imported.ok();
    assert!(imported.stdout.contains("imported into /out/layout"), "{}", imported.stdout);
    let files = out.join("layout/stellaops/2.4.1-edge");
    assert_eq!(fs::read(files.join("manifest/release.yaml")).unwrap(), fs::read(rel.join("release.yaml")).unwrap());
    assert_eq!(fs::read(files.join("tools/stellaops")).unwrap(), fs::read(rel.join("tools/stellaops")).unwrap());
    assert!(files.join("trust/metadata/1.root.json").is_file() && files.join("trust/metadata/timestamp.json").is_file());
    assert_eq!(crate::support::digests(&out.join("layout")), crate::support::digests(&rel.join("images")));
}

#[test]
fn a_kit_or_release_whose_tool_was_changed_fails_verify_naming_tools_stellaops_and_a_foreign_trust_root_is_refused() {
    let tool = built_tool();
    let repo = Repo::new();
    let release_pub = repo.release_key();
    published_trust(&repo, &release_pub);
    let rel = repo.path().join("target/r1");
    repo.xtask(&["release", "--channel", "edge", "--out", rel.to_str().unwrap()]).ok();
    let host = tempfile::Builder::new().prefix("stellaops-host-").tempdir().unwrap();
    let h = host.path();
    fs::copy(&tool, h.join("stellaops")).unwrap();
    fs::copy(&release_pub, h.join("release.pub")).unwrap();
    fs::copy(rel.join("stellaops-kit-2.4.1-edge.tar.zst"), h.join("kit.tar.zst")).unwrap();
    on_host(h, &["offline", "kit", "verify", "kit.tar.zst", "--key", "release.pub"]).ok();

    // A kit's `trust/` is an archive read later: a release cut while the channels' timestamp
    // was fresh still verifies once that timestamp has expired (here: signed in 2026-01, a day
    // long), while the live repository with that timestamp is refused as expired.
    repo.xtask(&["trust", "refresh", "--now", "2026-01-01T00:00:00Z"]).ok();
    let stale = repo.path().join("target/r-stale");
    repo.xtask(&["release", "--channel", "edge", "--out", stale.to_str().unwrap()]).ok();
    fs::copy(stale.join("stellaops-kit-2.4.1-edge.tar.zst"), h.join("stale-kit.tar.zst")).unwrap();
    fs::copy(repo.path().join("target/channels/tuf/metadata/1.root.json"), h.join("root.json")).unwrap();
    on_host(h, &["offline", "kit", "verify", "stale-kit.tar.zst", "--key", "release.pub", "--trust-root", "root.json"]).ok();
    let live = repo.path().join("target/channels/tuf");
    let r = on_host(h, &["channel", "check", live.to_str().unwrap(), "--root", "root.json"]);
    assert_eq!(r.code, 1, "the live repository with an expired timestamp was accepted:\n{}\n{}", r.stdout, r.stderr);
    assert!(format!("{}{}", r.stdout, r.stderr).to_lowercase().contains("expired"), "{}\n{}", r.stdout, r.stderr);
    repo.xtask(&["trust", "refresh", "--now", &schema::model::rfc3339(crate::support::EPOCH)]).ok();

    // release.yaml lists the tool (an additive key after §6.1's), signed with the rest.
    let yaml: serde_norway::Value = serde_norway::from_slice(&fs::read(rel.join("release.yaml")).unwrap()).unwrap();
    let t = &yaml["tools"][0];
    assert_eq!(
        (t["name"].as_str(), t["platform"].as_str(), t["file"].as_str()),
        (Some("stellaops"), Some("linux/amd64"), Some("tools/stellaops"))
    );
    let digest = format!("sha256:{}", crate::kit::sha256_file(&rel.join("tools/stellaops")));
    assert_eq!(t["digest"].as_str(), Some(digest.as_str()));
    // Its provenance names the compiler; its SBOM the crates it links (and not the build side's).
    let prov: serde_json::Value = serde_json::from_slice(&fs::read(rel.join("tools/stellaops.provenance.intoto.json")).unwrap()).unwrap();
    let rustc = prov["predicate"]["buildDefinition"]["internalParameters"]["rustc"]["version"].as_str().unwrap().to_owned();
    let local = String::from_utf8(Command::new("rustc").arg("--version").current_dir(crate::support::workspace()).output().unwrap().stdout)
        .unwrap();
    assert_eq!(rustc, local.trim());
    let sbom: serde_json::Value = serde_json::from_slice(&fs::read(rel.join("tools/stellaops.cdx.json")).unwrap()).unwrap();
    let names: Vec<&str> = sbom["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for linked in ["verifier", "oci", "schema", "clap", "p256", "tough", "zstd"] {
        assert!(names.contains(&linked), "the SBOM lacks `{linked}`: {names:?}");
    }
    for build_side in ["pipeline", "bollard", "git2", "xtask", "thiserror-impl", "serde_derive"] {
        assert!(!names.contains(&build_side), "the SBOM lists `{build_side}`, which the tool does not link");
    }

    // A kit whose tool has one byte changed (re-packed: the archive itself is sound).
    let mut entries = crate::kit::unpack(&h.join("kit.tar.zst"));
    let e = entries.iter_mut().find(|r| crate::kit::name_of(r) == "tools/stellaops").expect("the kit carries tools/stellaops");
    let at = e.data.len() / 2;
    e.data[at] ^= 0x01;
    crate::kit::pack(&entries, &h.join("flipped.tar.zst"));
    for args in [
        &["offline", "kit", "verify", "flipped.tar.zst", "--key", "release.pub"][..],
        &["offline", "kit", "import", "flipped.tar.zst", "--into", "layout", "--key", "release.pub"][..],
    ] {
        let r = on_host(h, args);
        r.refused(&["`tools/stellaops`", "nothing was imported"]);
    }
    assert!(!h.join("layout").exists(), "a refused import made its target");

    // A release directory whose tool was swapped: `verify` names it.
    fs::create_dir_all(h.join("release")).unwrap();
    crate::support::copy(&rel, &h.join("release"));
    on_host(h, &["verify", "release", "--key", "release.pub"]).ok();
    fs::write(h.join("release/tools/stellaops"), b"#!/bin/sh\necho trust me\n").unwrap();
    let r = on_host(h, &["verify", "release", "--key", "release.pub"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("[FAIL] customer tool `tools/stellaops` (linux/amd64): the sha256 release.yaml states"), "{}", r.stdout);
    assert!(r.stdout.contains("[FAIL] customer tool `tools/stellaops` (linux/amd64): signature `tools/stellaops.sig`"), "{}", r.stdout);

    // A release.yaml without `tools` (as written before the tool was built), signed: refused.
    fs::remove_dir_all(h.join("release")).unwrap();
    crate::support::copy(&rel, &h.join("release"));
    let key = verifier::keys::SigningKey::load(&release_pub.with_extension("key"), &verifier::keys::Secret::new(String::new())).unwrap();
    let mut doc = verifier::manifest::parse(&fs::read(rel.join("release.yaml")).unwrap()).unwrap();
    doc.tools.clear();
    let bytes = verifier::manifest::render(&mut doc);
    let sig = verifier::manifest::blob_signature(&key, &bytes).unwrap();
    fs::write(h.join("release/release.yaml"), &bytes).unwrap();
    fs::write(h.join("release/release.yaml.sig"), format!("{sig}\n")).unwrap();
    fs::write(h.join("release/release.yaml.sigstore.json"), serde_json::to_vec(&verifier::manifest::bundle(&key, &bytes, &sig)).unwrap())
        .unwrap();
    let r = on_host(h, &["verify", "release", "--key", "release.pub"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("[FAIL] customer tool listed in release.yaml: release.yaml lists no `tools`"), "{}", r.stdout);
    assert!(r.stdout.contains("[ok  ] release.yaml signature"), "{}", r.stdout);

    // A trust root the customer pinned that is not this repository's: refused, nothing imported.
    let other = Repo::new();
    let other_pub = other.release_key();
    let foreign_root = published_trust(&other, &other_pub);
    fs::copy(&foreign_root, h.join("foreign-root.json")).unwrap();
    let r = on_host(
        h,
        &["offline", "kit", "import", "kit.tar.zst", "--into", "layout", "--key", "release.pub", "--trust-root", "foreign-root.json"],
    );
    r.refused(&["trust repository `trust/` (TUF) from the pinned root `foreign-root.json`", "nothing was imported"]);
    assert!(!h.join("layout").exists(), "a refused import made its target");
}

#[test]
fn two_releases_from_the_same_inputs_and_keys_give_byte_identical_kits_with_the_tool_and_the_trust_repository() {
    let repo = Repo::new();
    let release_pub = repo.release_key();
    published_trust(&repo, &release_pub);
    let (a, b) = (repo.path().join("target/a"), repo.path().join("target/b"));
    for (out, jobs, tz, lang) in [(&a, "1", "UTC", "C"), (&b, "3", "Pacific/Kiritimati", "de_DE.UTF-8")] {
        // The provenance run details pinned as `repro` pins them, and no gates (their record
        // holds how long each gate ran): what differs by design, as `repro` leaves it out.
        let mut cmd = crate::support::xtask_cmd();
        cmd.env("STELLAOPS_SIGNING_KEY", release_pub.with_extension("key"))
            .env(pipeline::repro::PINNED_RUN_ENV, "1")
            .env("TZ", tz)
            .env("LANG", lang)
            .args(["release", "--channel", "edge", "--skip-gates", "--out", out.to_str().unwrap(), "-j", jobs, "--source"])
            .arg(repo.path());
        Run::of(cmd.output().unwrap()).ok();
    }
    let kit = "stellaops-kit-2.4.1-edge.tar.zst";
    let (ka, kb) = (a.join(kit), b.join(kit));
    let tools = kit_entries(&ka, "tools/");
    let names: Vec<&str> = tools.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "tools/stellaops",
            "tools/stellaops.cdx.json",
            "tools/stellaops.provenance.dsse.json",
            "tools/stellaops.provenance.intoto.json",
            "tools/stellaops.sig"
        ]
    );
    let trust = kit_entries(&ka, "trust/");
    for needed in
        ["trust/metadata/1.root.json", "trust/metadata/timestamp.json", "trust/metadata/1.snapshot.json", "trust/metadata/1.targets.json"]
    {
        assert!(trust.iter().any(|(n, _)| n == needed), "the kit lacks `{needed}`: {:?}", trust.iter().map(|t| &t.0).collect::<Vec<_>>());
    }
    assert_eq!(tools, kit_entries(&kb, "tools/"));
    assert_eq!(trust, kit_entries(&kb, "trust/"));
    assert_eq!(crate::kit::sha256_file(&ka), crate::kit::sha256_file(&kb), "two kits of the same inputs and keys differ");
}

#[test]
fn the_documented_openssl_command_checks_a_tool_signature_of_either_key_type() {
    let Some(openssl) = crate::support::tool("openssl") else { return };
    use verifier::keys::{KeyKind, Secret, SigningKey};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("tools")).unwrap();
    let program = b"\x7fELF a program".repeat(1000);
    fs::write(d.join("tools/stellaops"), &program).unwrap();
    for kind in [KeyKind::EcdsaP256, KeyKind::Ed25519] {
        let key = SigningKey::generate(kind);
        let _ = (fs::remove_file(d.join("release.key")), fs::remove_file(d.join("release.pub")));
        key.write(&d.join("release.key"), &d.join("release.pub"), &Secret::new(String::new())).unwrap();
        // What the tool stage writes: the key's signature over the program's bytes.
        let signer: &dyn verifier::keys::Signer = &key;
        fs::write(d.join("tools/stellaops.sig"), signer.try_sign(&program).unwrap()).unwrap();
        let r = openssl_verifies(&openssl, d, kind, "tools/stellaops");
        r.ok();
        assert!(r.stdout.contains("Verified"), "{kind:?}: {}", r.stdout);
        let mut bad = program.clone();
        bad[7] ^= 1;
        fs::write(d.join("bad"), &bad).unwrap();
        assert_ne!(openssl_verifies(&openssl, d, kind, "bad").code, 0, "{kind:?}: openssl accepted a changed program");
    }
}

#[test]
fn the_tool_s_preflight_checks_an_upgrade_from_one_kit_to_the_next_with_the_skew_rules_the_kit_carries() {
    let tool = built_tool();
    let repo = Repo::new();
    let release_pub = repo.release_key();
    let (r1, r2) = (repo.path().join("target/r1"), repo.path().join("target/r2"));
    repo.xtask(&["release", "--channel", "edge", "--out", r1.to_str().unwrap()]).ok();
    repo.edit("release-trains/components.toml", "version = \"2.4.1\"\nregistry", "version = \"2.4.2\"\nregistry");
    repo.commit_all("bundle 2.4.2", crate::support::EPOCH + 86_400);
    repo.xtask(&["release", "--channel", "edge", "--out", r2.to_str().unwrap()]).ok();
    let host = tempfile::Builder::new().prefix("stellaops-host-").tempdir().unwrap();
    let h = host.path();
    fs::copy(&tool, h.join("stellaops")).unwrap();
    fs::copy(&release_pub, h.join("release.pub")).unwrap();
    fs::copy(r1.join("stellaops-kit-2.4.1-edge.tar.zst"), h.join("old.tar.zst")).unwrap();
    fs::copy(r2.join("stellaops-kit-2.4.2-edge.tar.zst"), h.join("new.tar.zst")).unwrap();

    let p = on_host(
        h,
        &["offline", "kit", "preflight", "new.tar.zst", "--from", "old.tar.zst", "--key", "release.pub", "--backup-age", "2h", "--json"],
    );
    p.ok();
    let v = p.json();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["preflight"]["from"], "old.tar.zst");
    let steps = v["preflight"]["steps"].as_array().unwrap();
    assert!(steps.iter().flat_map(|s| s.as_array().unwrap()).any(|s| s.as_str().unwrap().starts_with("authority")), "{v}");
    let checks: Vec<&str> = v["preflight"]["findings"].as_array().unwrap().iter().map(|f| f["check"].as_str().unwrap()).collect();
    assert!(checks.contains(&"manifest-signature") && checks.contains(&"ilm"), "{checks:?}");

    // The rules come from the kit: a kit signed by another key is refused before they are read;
    // an old backup only warns.
    let other = h.join("other.key");
    verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256)
        .write(&other, &h.join("other.pub"), &verifier::keys::Secret::new(String::new()))
        .unwrap();
    let r = on_host(h, &["offline", "kit", "preflight", "new.tar.zst", "--from", "old.tar.zst", "--key", "other.pub"]);
    r.refused(&["kit `new.tar.zst` refused"]);
    let w =
        on_host(h, &["offline", "kit", "preflight", "new.tar.zst", "--from", "old.tar.zst", "--key", "release.pub", "--backup-age", "3d"]);
    w.ok();
    assert!(w.stdout.contains("[warning  ] backup-age"), "{}", w.stdout);
}
