//! `stellaops`: what a customer runs on the air-gapped host, without this repository or a Rust
//! toolchain. Built from the consumer crates only (`verifier`, `oci`, `schema`): it verifies
//! a release directory, a kit or a registry release with the release's public key, and
//! imports a kit, failing closed (nothing is loaded before everything verified).
//!
//! Exit codes: 0 success; 1 refused (a failed check, bad input); 2 internal error; 3 the
//! environment failed (I/O, the registry); 64 the command line does not parse.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use schema::exit::Code;
use schema::report::{Event, Reporter};
use verifier::keyless::Anchor;
use verifier::keys::{Fips, PublicKey};
use verifier::kit::{KitError, KitReport, Target};

#[derive(Debug, Parser)]
#[command(
    name = "stellaops",
    version,
    about = "Verify Stella Ops releases and import offline kits",
    long_about = "Verify Stella Ops releases and import offline kits, on a host without the source repository.\n\n\
        Trust comes from the release's public key (SPKI PEM) obtained out of band, and for releases \
        with transparency-log entries, the log's public key; for a keyless release, from a sigstore \
        trusted root (the Fulcio CA, the log's key) and an identity policy. Nothing is trusted before it verifies.",
    after_help = "Exit codes: 0 success; 1 refused (a failed check, bad input); 2 internal error; \
        3 environment failure (I/O, registry); 64 usage."
)]
struct Cli {
    /// Print the result as one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify a release directory, an offline kit (.tar.zst), or (with --registry) the release
    /// as published on a registry: release.yaml's signature and checksum, every image
    /// signature, SBOM, provenance and log entry.
    Verify {
        /// Release directory (with release.yaml) or kit file.
        path: PathBuf,
        #[command(flatten)]
        keys: Keys,
        /// Check the release as published on this registry (`HOST[:PORT]/NAMESPACE`), against
        /// the release directory's signed release.yaml.
        #[arg(long, value_name = "HOST/NAMESPACE")]
        registry: Option<String>,
    },
    /// Channels as a TUF client sees them, from a copy of the trust repository (its
    /// `metadata/` and `targets/`) and a root you trust: every role's signatures and
    /// thresholds (two release keys for stable and lts), versions, hashes and expiry; then each
    /// channel's pointer (version, sequence, support end).
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Offline kits.
    Offline {
        #[command(subcommand)]
        command: Offline,
    },
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Check the trust repository and show each channel (or one, which must be there).
    Check {
        /// The trust repository (a directory with `metadata/` and `targets/`).
        repo: PathBuf,
        /// The root you trust (`1.root.json` of the repository, obtained out of band).
        #[arg(long, value_name = "FILE")]
        root: PathBuf,
        /// Require this channel: `edge`, `stable` or `lts`.
        #[arg(long, value_name = "CHANNEL")]
        channel: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum Offline {
    Kit {
        #[command(subcommand)]
        command: KitCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KitCommand {
    /// Verify a kit without importing it.
    Verify {
        kit: PathBuf,
        #[command(flatten)]
        keys: Keys,
    },
    /// Import a kit into an OCI image layout directory or a registry, failing closed:
    /// release.yaml's signature, every entry against the signed inventory, every image
    /// signature and attestation; only then is anything made visible in the target.
    Import {
        kit: PathBuf,
        /// `DIR` (an OCI image layout, made if absent; the release's files under
        /// DIR/stellaops/<version>-<channel>/) or `docker://HOST[:PORT]/NAMESPACE`.
        #[arg(long, value_name = "DIR|docker://HOST/NAMESPACE")]
        into: String,
        /// Docker config file with credentials for a registry target.
        #[arg(long, value_name = "FILE")]
        docker_config: Option<PathBuf>,
        #[command(flatten)]
        keys: Keys,
    },
    /// The upgrade checklist (spec appendix B) for going from the release running now to the
    /// kit's, before anything moves: the kit is verified first (as `verify`), then the
    /// target's signature, Authority/Signer/Attestor on one minor, version skew after every
    /// step of the rolling order (with the skew rules the kit carries), backup age. Exits 1 on
    /// any violation.
    Preflight {
        /// The kit to install.
        kit: PathBuf,
        /// The release running now: its kit, or a release directory or unpacked kit.
        #[arg(long, value_name = "KIT|DIR")]
        from: PathBuf,
        /// Age of the newest database backup (`30h`, `2d`, `90m`); over 24 h warns.
        #[arg(long, value_name = "AGE", value_parser = verifier::ops::parse_duration)]
        backup_age: Option<i64>,
        #[command(flatten)]
        keys: Keys,
    },
}

#[derive(Debug, clap::Args)]
struct Keys {
    /// The release's public key (SPKI PEM), obtained out of band.
    #[arg(long, value_name = "FILE", required_unless_present = "trusted_root")]
    key: Option<PathBuf>,
    /// A keyless release (a directory or its kit): the sigstore trusted root
    /// (`trusted_root.json`: the Fulcio CA, the transparency log's key) in place of `--key`,
    /// with the identity policy below; every signature is checked with the certificate's key
    /// and every log entry's signed time must lie within its validity.
    #[arg(long, value_name = "FILE", conflicts_with = "key", requires = "certificate_oidc_issuer")]
    trusted_root: Option<PathBuf>,
    /// With `--trusted-root`: the signer's identity (the certificate's email or URI), exactly.
    #[arg(long, value_name = "SUBJECT", requires = "trusted_root")]
    certificate_identity: Option<String>,
    /// With `--trusted-root`: a regular expression the identity matches (unanchored: anchor it
    /// with `^...$`).
    #[arg(long, value_name = "RE", requires = "trusted_root", conflicts_with = "certificate_identity")]
    certificate_identity_regexp: Option<String>,
    /// With `--trusted-root`: the OIDC issuer that vouched for the identity, exactly.
    #[arg(long, value_name = "ISSUER", requires = "trusted_root")]
    certificate_oidc_issuer: Option<String>,
    /// The transparency log's public key (SPKI PEM): every log entry is checked with it.
    #[arg(long, value_name = "FILE", env = "STELLAOPS_REKOR_KEY")]
    rekor_key: Option<PathBuf>,
    /// FIPS mode: ES256 keys only.
    #[arg(long)]
    fips: bool,
    /// The channels' TUF root you trust (`1.root.json`, obtained out of band): the kit's
    /// `trust/` must verify from it (without it, from the kit's own first root).
    #[arg(long, value_name = "FILE")]
    trust_root: Option<PathBuf>,
}

struct Failure {
    code: Code,
    message: String,
}

/// What a release must be signed by, loaded: a key, or a trusted root and an identity policy.
enum Signer {
    Key(PublicKey),
    Keyless(verifier::keyless::TrustedRoot, verifier::keyless::Policy),
}

impl Signer {
    fn anchor(&self) -> Anchor<'_> {
        match self {
            Signer::Key(k) => Anchor::Key(k),
            Signer::Keyless(root, policy) => Anchor::Identity { root, policy },
        }
    }
}

impl Keys {
    fn load(&self) -> Result<(Signer, Option<PublicKey>, Fips), Failure> {
        let key_failure = |e: verifier::keys::KeyError| {
            let hint = e.hint().map(|h| format!("\n  hint: {h}")).unwrap_or_default();
            Failure { code: e.exit_code(), message: format!("{e}{hint}") }
        };
        let signer = match (&self.key, &self.trusted_root) {
            (Some(key), _) => Signer::Key(PublicKey::load(key).map_err(key_failure)?),
            (None, Some(root)) => {
                let policy = verifier::keyless::Policy::new(
                    self.certificate_identity.as_deref(),
                    self.certificate_identity_regexp.as_deref(),
                    self.certificate_oidc_issuer.as_deref(),
                )
                .map_err(|message| Failure { code: Code::Rejected, message })?;
                let root = verifier::keyless::TrustedRoot::load(root)
                    .map_err(|e| Failure { code: e.exit_code(), message: format!("{e}\n  hint: {}", e.hint()) })?;
                Signer::Keyless(root, policy)
            }
            (None, None) => return Err(Failure { code: Code::Rejected, message: "give `--key FILE` or `--trusted-root FILE`".into() }),
        };
        let log = self.rekor_key.as_deref().map(PublicKey::load).transpose().map_err(key_failure)?;
        let fips = if self.fips { Fips::On } else { Fips::Off };
        Ok((signer, log, fips))
    }
}

/// Progress notes on stderr, one line each (the library never prints).
struct Lines {
    quiet: bool,
}

impl Reporter for Lines {
    fn event(&self, event: Event) {
        if self.quiet {
            return;
        }
        match event {
            Event::Note { message } => eprintln!("note: {message}"),
            Event::StageStarted { stage, .. } => eprintln!("{}...", stage.as_str()),
            _ => {}
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { Code::Usage } else { Code::Success };
            let _ = e.print();
            return ExitCode::from(code.status() as u8);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code.status() as u8)
        }
    }
}

/// `verify PATH --key FILE`: a directory or a registry; a kit is checked and reported here
/// (`None`).
fn verify_keyed(
    cli: &Cli,
    path: &Path,
    keys: &Keys,
    registry: Option<&str>,
    reporter: &Lines,
) -> Result<Option<verifier::release::VerifyReport>, Failure> {
    let (signer, log, fips) = keys.load()?;
    if path.is_file() && registry.is_none() {
        kit_result(
            cli.json,
            "verified",
            verifier::kit::verify_kit_pinned(path, signer.anchor(), log.as_ref(), fips, None, keys.trust_root.as_deref(), reporter),
        )?;
        return Ok(None);
    }
    let Signer::Key(key) = signer else {
        return Err(Failure {
            code: Code::Rejected,
            message: format!(
                "`{}`: a keyless release is verified as a release directory (also with `--registry`) or a kit\n  hint: `offline kit import` a kit into a directory first",
                path.display()
            ),
        });
    };
    Ok(Some(match registry {
        Some(r) => {
            let target = r.parse().map_err(|e| Failure { code: Code::Rejected, message: format!("`--registry {r}`: {e}") })?;
            verifier::published::verify(path, &key, &target, &oci::push::PushOptions::default())
        }
        None => verifier::release::verify_tree(
            &verifier::release::Tree::release(path).with_log(log.clone()).with_trust_root(keys.trust_root.clone()),
            &key,
            fips,
        ),
    }))
}

/// `verify DIR --trusted-root FILE` with an identity policy: the directory, or (with
/// `--registry`) the release as published there.
fn verify_keyless(path: &Path, root: &Path, keys: &Keys, registry: Option<&str>) -> Result<verifier::release::VerifyReport, Failure> {
    let refused = |message: String| Failure { code: Code::Rejected, message };
    let policy = verifier::keyless::Policy::new(
        keys.certificate_identity.as_deref(),
        keys.certificate_identity_regexp.as_deref(),
        keys.certificate_oidc_issuer.as_deref(),
    )
    .map_err(refused)?;
    let root = verifier::keyless::TrustedRoot::load(root)
        .map_err(|e| Failure { code: e.exit_code(), message: format!("{e}\n  hint: {}", e.hint()) })?;
    let log =
        keys.rekor_key.as_deref().map(PublicKey::load).transpose().map_err(|e| Failure { code: e.exit_code(), message: e.to_string() })?;
    let fips = if keys.fips { Fips::On } else { Fips::Off };
    if let Some(r) = registry {
        let target = r.parse().map_err(|e| Failure { code: Code::Rejected, message: format!("`--registry {r}`: {e}") })?;
        return Ok(verifier::published::verify_keyless(path, &root, &policy, &target, &oci::push::PushOptions::default()));
    }
    Ok(verifier::release::verify_keyless(path, &root, &policy, log.as_ref(), fips))
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let reporter = Lines { quiet: cli.json };
    match &cli.command {
        Command::Verify { path, keys, registry } => {
            let report = match (&keys.trusted_root, registry) {
                (Some(root), registry) if path.is_dir() => verify_keyless(path, root, keys, registry.as_deref())?,
                _ => match verify_keyed(cli, path, keys, registry.as_deref(), &reporter)? {
                    Some(report) => report,
                    None => return Ok(()),
                },
            };
            if cli.json {
                println!("{}", serde_json::json!({"verified": report.ok(), "checks": report.checks}));
            } else {
                println!("{}", report.render());
            }
            if report.ok() {
                Ok(())
            } else {
                let failed = report.checks.iter().filter(|c| !c.ok).count();
                Err(Failure { code: Code::Rejected, message: format!("`{}` does not verify ({failed} failed checks)", path.display()) })
            }
        }
        Command::Channel { command: ChannelCommand::Check { repo, root, channel } } => {
            let want: Option<schema::model::Channel> = channel
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| Failure { code: Code::Rejected, message: format!("`--channel`: {e}") })?;
            let channels = verifier::tuf_client::check(&repo.join("metadata"), &repo.join("targets"), root)
                .map_err(|e| Failure { code: e.exit_code(), message: e.to_string() })?;
            if let Some(w) = want {
                if !channels.iter().any(|c| c.channel == w) {
                    return Err(Failure { code: Code::Rejected, message: format!("the trust repository has no pointer for `{w}`") });
                }
            }
            let shown: Vec<_> = channels.iter().filter(|c| want.is_none_or(|w| c.channel == w)).collect();
            if cli.json {
                println!("{}", serde_json::json!({ "verified": true, "channels": shown }));
            } else {
                for c in shown {
                    let field = |k: &str| {
                        c.custom.get(k).map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).unwrap_or_default()
                    };
                    println!(
                        "{}: {} (sequence {}), release.yaml {}, support ends {}, pointer {}",
                        c.channel,
                        field("version"),
                        field("sequence"),
                        field("releaseYaml"),
                        field("supportEnds"),
                        c.pointer
                    );
                }
            }
            Ok(())
        }
        Command::Offline { command: Offline::Kit { command } } => match command {
            KitCommand::Verify { kit, keys } => {
                let (signer, log, fips) = keys.load()?;
                kit_result(
                    cli.json,
                    "verified",
                    verifier::kit::verify_kit_pinned(kit, signer.anchor(), log.as_ref(), fips, None, keys.trust_root.as_deref(), &reporter),
                )
            }
            KitCommand::Import { kit, into, docker_config, keys } => {
                let (signer, log, fips) = keys.load()?;
                let mut target: Target =
                    into.parse().map_err(|e| Failure { code: Code::Rejected, message: format!("`--into {into}`: {e}") })?;
                if let Target::Registry { docker_config: d, .. } = &mut target {
                    d.clone_from(docker_config);
                }
                // One import at a time into a target: the second waits for the first.
                let (lock, what) = match &target {
                    Target::Dir(d) => {
                        let d = std::env::current_dir().map(|c| c.join(d)).unwrap_or_else(|_| d.clone());
                        (oci::statelock::beside(&d), format!("the import target `{}`", d.display()))
                    }
                    Target::Registry { target, .. } => {
                        (oci::statelock::for_remote(&target.to_string()), format!("the import target `{target}`"))
                    }
                };
                let _held = hold(&lock, &what)?;
                kit_result(
                    cli.json,
                    "imported",
                    verifier::kit::import_pinned(kit, &target, signer.anchor(), log.as_ref(), fips, keys.trust_root.as_deref(), &reporter),
                )
            }
            KitCommand::Preflight { kit, from, backup_age, keys } => preflight(cli.json, kit, from, *backup_age, keys, &reporter),
        },
    }
}

/// `offline kit preflight`:
/// 1. the kit (and `--from` when it is a kit) verified as `verify` does, unpacked into a
///    temporary directory: nothing is read from an unverified kit;
/// 2. the skew rules from the kit (`release-trains/`, `base-images.lock`, as released);
/// 3. the checklist of `verifier::preflight` from `--from` to the kit.
fn preflight(json: bool, kit: &Path, from: &Path, backup_age: Option<i64>, keys: &Keys, reporter: &Lines) -> Result<(), Failure> {
    let (signer, log, fips) = keys.load()?;
    let unpack = |k: &Path| {
        verifier::kit::unpack_verified(k, signer.anchor(), log.as_ref(), fips, keys.trust_root.as_deref(), &std::env::temp_dir(), reporter)
            .map_err(|e| Failure { code: e.exit_code(), message: e.to_string() })
    };
    let (_, to, key) = unpack(kit)?;
    let (current, from_key) = if from.is_file() {
        let (_, dir, key) = unpack(from)?;
        (Some(dir), key)
    } else {
        (None, from_key(&signer, from).unwrap_or_else(|| key.clone()))
    };
    let from_dir = current.as_ref().map_or(from, |s| s.path());
    if !to.path().join("release-trains/components.toml").is_file() {
        return Err(Failure {
            code: Code::Rejected,
            message: format!(
                "kit `{}` carries no skew rules (`release-trains/components.toml`)\n  hint: it was cut by a pipeline older than the preflight; run `cargo xtask preflight` where its repository is",
                kit.display()
            ),
        });
    }
    let req = verifier::preflight::Preflight { root: to.path(), from: from_dir, to: to.path(), key: &key, from_key: &from_key, backup_age };
    let mut report = verifier::preflight::run(&req).map_err(|e| Failure { code: e.exit_code(), message: e.to_string() })?;
    // Name what the customer gave, not the temporary directories.
    report.from = from.display().to_string();
    report.to = kit.display().to_string();
    if json {
        println!("{}", serde_json::json!({ "ok": report.ok(), "preflight": report }));
    } else {
        println!("{}", report.render());
    }
    if report.ok() {
        Ok(())
    } else {
        let ids: std::collections::BTreeSet<&str> =
            report.findings.iter().filter(|f| f.severity == verifier::preflight::Severity::Violation).map(|f| f.check).collect();
        Err(Failure {
            code: Code::Rejected,
            message: format!("the upgrade is not safe: {}", ids.into_iter().collect::<Vec<_>>().join(", ")),
        })
    }
}

/// The key the running release (`--from`, a directory) is checked with: the pinned key, or a
/// keyless release's certified key (its certificate checked under the policy; `None` when it
/// does not pass, and the preflight then reports its signature as not verifying).
fn from_key(signer: &Signer, from: &Path) -> Option<PublicKey> {
    match signer {
        Signer::Key(k) => Some(k.clone()),
        Signer::Keyless(root, policy) => ["release.yaml.sigstore.json", "manifest/release.yaml.sigstore.json"]
            .iter()
            .find_map(|f| std::fs::read(from.join(f)).ok())
            .and_then(|b| verifier::keyless::certified(&b, root, policy).ok())
            .map(|l| l.key),
    }
}

fn hold(path: &Path, what: &str) -> Result<oci::statelock::StateLock, Failure> {
    oci::statelock::StateLock::acquire(path, what, &|m| eprintln!("note: {m}"))
        .map_err(|e| Failure { code: Code::Environment, message: e.to_string() })
}

fn kit_result(json: bool, done: &str, result: Result<KitReport, KitError>) -> Result<(), Failure> {
    match result {
        Ok(r) => {
            if json {
                println!("{}", serde_json::json!({ done: true, "report": r }));
            } else {
                println!("{}", r.render());
            }
            Ok(())
        }
        Err(e) => {
            if json {
                let checks = match &e {
                    KitError::Unverified { report, .. } => serde_json::to_value(&report.checks).unwrap_or_default(),
                    _ => serde_json::Value::Null,
                };
                println!("{}", serde_json::json!({ done: false, "error": e.to_string(), "checks": checks }));
            }
            Err(Failure { code: e.exit_code(), message: e.to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
