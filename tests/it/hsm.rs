//! Keys outside files: a release signed through PKCS#11 by a SoftHSM2 token (the private key
//! made on the token and never read out), and one signed with a `cosign.key` that the `sigstore`
//! crate wrote (tests/verifiers/cosign-rs). Each release verifies with the public key exported
//! from the token or written by the other implementation; openssl checks the token's signature
//! too; wrong PINs, missing tokens, keys and modules, and wrong passphrases are refused before
//! any work, naming the key (never the PIN).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use crate::support::{run_ok, tool, verifier, xtask_cmd, Repo, Run};

const PIN: &str = "314159";
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token of its own: `SOFTHSM2_CONF` points at a config whose token directory is a
/// temporary directory; one token, labelled `stellaops`, initialized with [`PIN`].
struct Token {
    dir: tempfile::TempDir,
}

impl Token {
    /// `None` (a failure under `CI`) when SoftHSM2 or OpenSC is not installed.
    fn new() -> Option<Token> {
        tool("softhsm2-util")?;
        tool("pkcs11-tool")?;
        if !Path::new(MODULE).is_file() {
            let msg = format!("`{MODULE}` is missing: tests/run.sh installs softhsm2");
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED (not a pass): {msg}");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("stellaops-hsm-").tempdir().unwrap();
        fs::create_dir(dir.path().join("tokens")).unwrap();
        fs::write(
            dir.path().join("softhsm2.conf"),
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", dir.path().join("tokens").display()),
        )
        .unwrap();
        let t = Token { dir };
        run_ok(t.cmd("softhsm2-util").args(["--init-token", "--free", "--label", "stellaops", "--pin", PIN, "--so-pin", "271828"]));
        Some(t)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// A command that sees this token only.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", self.conf());
        c
    }

    /// `cargo xtask ...` seeing this token, the PIN in the environment unless `pin` is `None`.
    fn xtask(&self, args: &[&str], pin: Option<&str>) -> Run {
        let mut c = xtask_cmd();
        c.env("SOFTHSM2_CONF", self.conf()).env_remove("STELLAOPS_PKCS11_PIN").env_remove("STELLAOPS_PKCS11_MODULE").args(args);
        if let Some(pin) = pin {
            c.env("STELLAOPS_PKCS11_PIN", pin);
        }
        Run::of(c.output().unwrap())
    }
}

fn release(repo: &Repo, token: &Token, key: &str) -> Run {
    token.xtask(&["release", "--channel", "edge", "--key", key, "--source", repo.path().to_str().unwrap()], None)
}

fn verify(dir: &Path, public: &Path) -> Run {
    Run::of(xtask_cmd().arg("verify").arg(dir).arg("--key").arg(public).output().unwrap())
}

/// openssl checks `release.yaml.sig` with `public`.
fn openssl_verifies_release_yaml(dir: &Path, public: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let sig = base64::engine::general_purpose::STANDARD.decode(fs::read_to_string(dir.join("release.yaml.sig")).unwrap().trim()).unwrap();
    fs::write(tmp.path().join("r.sig"), sig).unwrap();
    let out = run_ok(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(public)
            .arg("-signature")
            .arg(tmp.path().join("r.sig"))
            .arg(dir.join("release.yaml")),
    );
    assert!(out.contains("Verified OK"), "{out}");
}

/// The token's own account of the private key, asked through PyKCS11 (Debian's
/// python3-pykcs11, tests/verifiers/pkcs11_probe.py), not through the code under test: the
/// token withholds CKA_VALUE, CKA_SENSITIVE and CKA_NEVER_EXTRACTABLE are set, CKA_EXTRACTABLE is
/// cleared; OpenSC's pkcs11-tool lists it as sensitive and never extractable.
fn assert_private_key_unreadable(token: &Token, label: &str) {
    let python = Path::new("/usr/bin/python3");
    let out = run_ok(
        token
            .cmd(python)
            .arg(crate::support::workspace().join("tests/verifiers/pkcs11_probe.py"))
            .args([MODULE, "stellaops", label])
            .env("STELLAOPS_PKCS11_PIN", PIN),
    );
    for line in ["value: withheld", "sensitive: True", "extractable: False", "never-extractable: True"] {
        assert!(out.lines().any(|l| l.starts_with(line)), "{label}: lacks `{line}`:\n{out}");
    }
    let listing = run_ok(token.cmd("pkcs11-tool").args([
        "--module",
        MODULE,
        "--token-label",
        "stellaops",
        "--login",
        "--pin",
        PIN,
        "--list-objects",
        "--type",
        "privkey",
    ]));
    let entry = listing
        .split("Private Key Object")
        .find(|e| e.contains(&format!("label:      {label}\n")))
        .unwrap_or_else(|| panic!("{label} not listed:\n{listing}"));
    assert!(entry.contains("sensitive") && entry.contains("never extractable"), "{entry}");
}

/// The acceptance test of issue 16 for hardware keys: a key pair made on a SoftHSM2 token, a
/// whole release signed through it, `verify` with the public key exported from the token, and
/// openssl checking the release.yaml signature with that key; `promote` signs its channel
/// pointer through the token; the private key cannot be read.
#[test]
fn a_release_signed_through_softhsm2_verifies_with_the_exported_public_key() {
    let Some(token) = Token::new() else { return };
    let repo = Repo::new();
    let uri = "pkcs11:token=stellaops;object=release";
    let made = token.dir.path().join("made.pub");
    let run = token.xtask(&["keys", "generate", "--pkcs11", uri, "--public", made.to_str().unwrap()], Some(PIN));
    run.ok();
    // The public key again, exported from the token as a customer would receive it.
    let exported = token.dir.path().join("release.pub");
    token.xtask(&["keys", "export-public", uri, "--out", exported.to_str().unwrap()], Some(PIN)).ok();
    assert_eq!(fs::read_to_string(&made).unwrap(), fs::read_to_string(&exported).unwrap());
    // openssl reads it as a P-256 key.
    let text = run_ok(Command::new("openssl").args(["pkey", "-pubin", "-noout", "-text", "-in"]).arg(&exported));
    assert!(text.contains("prime256v1") || text.contains("P-256"), "{text}");

    // The release, the PIN from a file named in the URI (and nothing in the environment).
    let pin_file = token.dir.path().join("pin");
    fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let key = format!("{uri}?module-path={MODULE}&pin-source=file:{}", pin_file.display());
    release(&repo, &token, &key).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let v = verify(&dir, &exported);
    assert_eq!(v.code, 0, "verify failed:\n{}\n{}", v.stdout, v.stderr);
    openssl_verifies_release_yaml(&dir, &exported);
    // Another key does not verify it.
    let other = token.dir.path().join("other.pub");
    token
        .xtask(&["keys", "generate", "--pkcs11", "pkcs11:token=stellaops;object=other", "--public", other.to_str().unwrap()], Some(PIN))
        .ok();
    assert_eq!(verify(&dir, &other).code, 1);

    // The channel pointer is signed through the token too, and checks with the exported key.
    let now = schema::model::rfc3339(crate::support::EPOCH + 3600);
    let src = repo.path().to_str().unwrap();
    token.xtask(&["promote", dir.to_str().unwrap(), "--to", "edge", "--key", &key, "--now", &now, "--source", src], None).ok();
    let pointer = repo.path().join("target/channels/edge/pointer.json");
    let state = token.dir.path().join("state.json");
    let check = Run::of(
        xtask_cmd()
            .arg("verify-pointer")
            .arg(&pointer)
            .arg("--key")
            .arg(&exported)
            .arg("--state")
            .arg(&state)
            .args(["--now", &now])
            .output()
            .unwrap(),
    );
    assert_eq!(check.code, 0, "verify-pointer:\n{}\n{}", check.stdout, check.stderr);

    assert_private_key_unreadable(&token, "release");
}

/// Ed25519 where the token has it (SoftHSM2 does): made on the token, exported, and the
/// token's signature over the probe verified with it on the way ([`pipeline::signer::pkcs11`]
/// signs and verifies before it hands out a key); openssl reads the exported key.
#[test]
fn an_ed25519_key_on_the_token_signs_and_exports() {
    let Some(token) = Token::new() else { return };
    let uri = "pkcs11:token=stellaops;object=ed;id=%ed%25";
    let made = token.xtask(&["keys", "generate", "--algorithm", "ed25519", "--pkcs11", uri], Some(PIN));
    made.ok();
    assert!(made.stdout.contains("BEGIN PUBLIC KEY"), "{}", made.stdout);
    let exported = token.xtask(&["keys", "export-public", "pkcs11:token=stellaops;id=%ed%25"], Some(PIN));
    exported.ok();
    assert_eq!(made.stdout.trim(), exported.stdout.trim());
    let f = token.dir.path().join("ed.pub");
    fs::write(&f, &exported.stdout).unwrap();
    let text = run_ok(Command::new("openssl").args(["pkey", "-pubin", "-noout", "-text", "-in"]).arg(&f));
    assert!(text.contains("ED25519"), "{text}");
    // FIPS mode refuses it before touching the token.
    let fips =
        token.xtask(&["keys", "generate", "--fips", "--algorithm", "ed25519", "--pkcs11", "pkcs11:token=stellaops;object=ed2"], Some(PIN));
    assert_eq!(fips.code, 1, "{}", fips.stderr);
    assert_private_key_unreadable(&token, "ed");
}

/// Every refusal names the URI (the PIN masked) with a hint, exits with its code, and stops the
/// release before any work: nothing under the output directory.
#[test]
fn a_wrong_pin_or_a_missing_token_key_or_module_stops_the_release_before_any_work() {
    let Some(token) = Token::new() else { return };
    let repo = Repo::new();
    token.xtask(&["keys", "generate", "--pkcs11", "pkcs11:token=stellaops;object=release"], Some(PIN)).ok();
    // A second key of the same label is refused, nothing made.
    let again = token.xtask(&["keys", "generate", "--pkcs11", "pkcs11:token=stellaops;object=release"], Some(PIN));
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("already exists on the token"), "{}", again.stderr);
    // Keys of types we do not sign with, made by OpenSC's pkcs11-tool.
    for (ty, label) in [("rsa:2048", "rsa"), ("EC:secp384r1", "p384")] {
        run_ok(token.cmd("pkcs11-tool").args([
            "--module",
            MODULE,
            "--token-label",
            "stellaops",
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            ty,
            "--label",
            label,
        ]));
    }
    let cases: [(&str, i32, &str); 8] = [
        ("pkcs11:token=stellaops;object=rsa?pin-value=314159", 1, "the key is of key type RSA"),
        ("pkcs11:token=stellaops;object=p384?pin-value=314159", 1, "the key is ECDSA on another curve"),
        ("pkcs11:token=stellaops;object=release?pin-value=000000", 1, "the token refused the PIN"),
        ("pkcs11:token=elsewhere;object=release?pin-value=314159", 1, "no token matches (tokens present: `stellaops`"),
        ("pkcs11:token=stellaops;object=nothing?pin-value=314159", 1, "no private key on the token has this label `nothing`"),
        (
            "pkcs11:token=stellaops;object=release?module-path=/nonexistent/libpkcs11.so&pin-value=314159",
            3,
            "the PKCS#11 module `/nonexistent/libpkcs11.so` does not exist",
        ),
        ("pkcs11:token=stellaops;object=release;colour=blue?pin-value=314159", 1, "the path attribute `colour` is not supported"),
        ("pkcs11:token=stellaops;object=release", 1, "no user PIN"),
    ];
    for (key, code, needle) in cases {
        let run = release(&repo, &token, key);
        assert_eq!(run.code, code, "{key}: expected exit {code}\n{}", run.stderr);
        assert!(run.stderr.contains(needle), "{key}: lacks `{needle}`:\n{}", run.stderr);
        assert!(run.stderr.contains("hint: "), "{key}: no hint:\n{}", run.stderr);
        assert!(!run.stderr.contains("314159") && !run.stderr.contains("000000"), "{key}: the PIN was printed:\n{}", run.stderr);
        let shown = key.split('?').next().unwrap();
        assert!(run.stderr.contains(shown), "{key}: the URI is not named:\n{}", run.stderr);
        let left: Vec<_> = fs::read_dir(repo.releases()).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{key}: a refused release left {left:?}");
    }
}

/// A `cosign.key` written by another implementation (the `sigstore` crate's, through
/// tests/verifiers/cosign-rs) signs a release: passphrase from `COSIGN_PASSWORD`, verified with
/// the crate's `cosign.pub`; `keys export-public --format cosign` gives that public key back; a
/// wrong passphrase is refused naming the file and the variable.
#[test]
fn a_cosign_key_made_by_the_sigstore_crate_signs_a_release_that_verifies() {
    let Some(keygen) = verifier("STELLAOPS_VERIFY_COSIGN_KEYGEN") else { return };
    let repo = Repo::new();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("cosign");
    run_ok(Command::new(&keygen).arg(&prefix).env("COSIGN_PASSWORD", "cosign pass"));
    let (key, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    assert!(fs::read_to_string(&key).unwrap().starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));

    let exported = Run::of(
        xtask_cmd()
            .args(["keys", "export-public", "--format", "cosign"])
            .arg(&key)
            .env("COSIGN_PASSWORD", "cosign pass")
            .env_remove("STELLAOPS_KEY_PASSPHRASE")
            .output()
            .unwrap(),
    );
    exported.ok();
    let body = |pem: &str| pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    assert_eq!(body(&exported.stdout), body(&fs::read_to_string(&public).unwrap()));

    let wrong = Run::of(
        xtask_cmd()
            .args(["release", "--channel", "edge", "--key"])
            .arg(&key)
            .arg("--source")
            .arg(repo.path())
            .env("COSIGN_PASSWORD", "not it")
            .output()
            .unwrap(),
    );
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("cannot decrypt the private key") && wrong.stderr.contains("COSIGN_PASSWORD"), "{}", wrong.stderr);
    assert!(!repo.releases().exists() || fs::read_dir(repo.releases()).unwrap().next().is_none());

    let run = Run::of(
        xtask_cmd()
            .args(["release", "--channel", "edge", "--key"])
            .arg(&key)
            .arg("--source")
            .arg(repo.path())
            .env("COSIGN_PASSWORD", "cosign pass")
            .env_remove("STELLAOPS_KEY_PASSPHRASE")
            .output()
            .unwrap(),
    );
    run.ok();
    let dir = repo.releases().join("2.4.1-edge");
    let v = verify(&dir, &public);
    assert_eq!(v.code, 0, "verify failed:\n{}\n{}", v.stdout, v.stderr);
    openssl_verifies_release_yaml(&dir, &public);
    // The crate reads back the key it wrote, and names the same public key.
    let again = run_ok(Command::new(&keygen).arg("--public").arg(&key).env("COSIGN_PASSWORD", "cosign pass"));
    assert_eq!(body(&again), body(&fs::read_to_string(&public).unwrap()));
}
