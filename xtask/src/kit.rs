//! `cargo xtask kit build|import`: offline kits (spec §3.3). The work is in `pipeline::stages::kit`.

use std::path::PathBuf;

use clap::Subcommand;
use pipeline::stages::kit;
use verifier::keyless::Anchor;
use verifier::keys::{Fips, PublicKey};
use verifier::kit::{self as kit_import, KitError, KitReport};

use crate::progress::{self, Progress};
use crate::{mode_of, print_json, root_of, Failure};

#[derive(Debug, Subcommand)]
pub enum KitCommand {
    /// Write the offline kit of a release directory (`cargo xtask release` already writes one
    /// into it): stellaops-kit-<version>-<channel>.tar.zst, holding what the channel's `[kit]`
    /// in release-trains/ selects. The same release and key give the same bytes. A keyless
    /// release is refused: its one-time key is gone, and the kit `release` wrote is its kit.
    Build {
        /// The release directory (target/releases/<version>-<channel>).
        release: PathBuf,
        /// Kit file (default: the release directory's stellaops-kit-<version>-<channel>.tar.zst,
        /// or ...-delta.tar.zst with --delta-from).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Write a delta kit: only the blobs that this previous release (its directory or
        /// release.yaml) or kit lacks, plus the full signed manifest. Its import needs that
        /// release already imported into the target.
        #[arg(long, value_name = "PATH")]
        delta_from: Option<PathBuf>,
        /// Signing key for the kit's inventory (the release's key, a file or a `pkcs11:` URI;
        /// default: the development key).
        #[arg(long, value_name = "FILE|URI", env = "STELLAOPS_SIGNING_KEY")]
        key: Option<PathBuf>,
        /// Repository root whose release-trains/ says what the channel's kit holds.
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Verify a kit without importing it: what `kit import` checks (the same as `verify KIT`).
    Verify {
        /// The kit (stellaops-kit-<version>-<channel>.tar.zst).
        kit: PathBuf,
        /// For a delta kit: the OCI layout holding the release it applies to.
        #[arg(long, value_name = "DIR")]
        base: Option<PathBuf>,
        /// The release's public key (SPKI PEM), obtained out of band (or, for a keyless
        /// release's kit, `--trusted-root` and an identity policy).
        #[arg(long, value_name = "FILE", required_unless_present = "trusted_root", conflicts_with = "trusted_root")]
        key: Option<PathBuf>,
        #[command(flatten)]
        identity: IdentityArgs,
        /// The transparency log's public key (SPKI PEM), pinned.
        #[arg(long, value_name = "FILE", env = "STELLAOPS_REKOR_KEY")]
        rekor_key: Option<PathBuf>,
        /// FIPS mode: refuse anything but ES256.
        #[arg(long)]
        fips: bool,
        #[arg(long)]
        json: bool,
    },
    /// Import a kit into an OCI image layout directory (made if absent) or a registry, failing
    /// closed: release.yaml's signature and checksum first, then every entry against the signed
    /// inventory (digest, size, type, path), then every image signature and attestation; only
    /// then is anything made visible in the target. Connects to nothing but the target registry
    /// (and to nothing at all for a directory). A keyless release's kit is checked under an
    /// identity policy (`--trusted-root`, `--certificate-identity[-regexp]`,
    /// `--certificate-oidc-issuer`) in place of `--key`.
    Import {
        /// The kit (stellaops-kit-<version>-<channel>.tar.zst).
        kit: PathBuf,
        /// Target: an OCI image layout directory (images keep their component names; the
        /// release's other files go to DIR/stellaops/<version>-<channel>/), or
        /// `docker://HOST[:PORT]/NAMESPACE`: images pushed by digest to NAMESPACE/<component>
        /// with their signatures and attestations as referrers, tagged with the version last
        /// (credentials from the Docker config file).
        #[arg(long, value_name = "DIR|docker://REGISTRY/NAMESPACE")]
        into: String,
        /// Docker config file for registry credentials (default: $DOCKER_CONFIG/config.json or
        /// ~/.docker/config.json).
        #[arg(long, value_name = "FILE")]
        docker_config: Option<PathBuf>,
        /// The release's public key (SPKI PEM), obtained out of band (or, for a keyless
        /// release's kit, `--trusted-root` and an identity policy).
        #[arg(long, value_name = "FILE", required_unless_present = "trusted_root", conflicts_with = "trusted_root")]
        key: Option<PathBuf>,
        #[command(flatten)]
        identity: IdentityArgs,
        /// The transparency log's public key (SPKI PEM), pinned: every log entry the kit
        /// carries is checked with it (a `stable` or `lts` kit must carry them all).
        #[arg(long, value_name = "FILE", env = "STELLAOPS_REKOR_KEY")]
        rekor_key: Option<PathBuf>,
        /// FIPS mode: refuse anything but ES256.
        #[arg(long)]
        fips: bool,
        #[arg(long)]
        json: bool,
    },
}

/// A keyless release (or its kit) is verified under an identity policy in place of `--key`.
#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    /// A keyless release's kit: the sigstore trusted root (`trusted_root.json`) naming the
    /// Fulcio CA and the transparency log's key, in place of `--key`. The certificate in
    /// `manifest/release.yaml.sigstore.json` must chain to that CA and name the identity and
    /// issuer below; every signature is checked with its key, every log entry's signed time
    /// must lie within its validity.
    #[arg(long, value_name = "FILE", requires = "certificate_oidc_issuer")]
    pub trusted_root: Option<PathBuf>,
    /// With `--trusted-root`: the signer's identity (the certificate's email or URI), exactly.
    #[arg(long, value_name = "SUBJECT", requires = "trusted_root", required_unless_present_any = ["key", "certificate_identity_regexp"])]
    pub certificate_identity: Option<String>,
    /// With `--trusted-root`: a regular expression the identity matches (unanchored: anchor it
    /// with `^...$`).
    #[arg(long, value_name = "RE", requires = "trusted_root", conflicts_with = "certificate_identity")]
    pub certificate_identity_regexp: Option<String>,
    /// With `--trusted-root`: the OIDC issuer that vouched for the identity, exactly.
    #[arg(long, value_name = "ISSUER", requires = "trusted_root")]
    pub certificate_oidc_issuer: Option<String>,
}

/// The trusted root and policy of `--trusted-root` and the identity flags.
pub fn identity_policy(
    root: &std::path::Path,
    identity: Option<&str>,
    pattern: Option<&str>,
    issuer: Option<&str>,
) -> Result<(verifier::keyless::TrustedRoot, verifier::keyless::Policy), Failure> {
    let policy =
        verifier::keyless::Policy::new(identity, pattern, issuer).map_err(|message| Failure { code: schema::exit::REJECTED, message })?;
    let root = verifier::keyless::TrustedRoot::load(root)
        .map_err(|e| Failure { code: e.exit_code(), message: format!("{e}\n  hint: {}", e.hint()) })?;
    Ok((root, policy))
}

type Keyless = (verifier::keyless::TrustedRoot, verifier::keyless::Policy);

/// The trusted root and policy of the identity flags, when no key was given.
fn keyless_of(no_key: bool, identity: &IdentityArgs) -> Result<Option<Keyless>, Failure> {
    match (no_key, &identity.trusted_root) {
        (true, Some(root)) => Ok(Some(identity_policy(
            root,
            identity.certificate_identity.as_deref(),
            identity.certificate_identity_regexp.as_deref(),
            identity.certificate_oidc_issuer.as_deref(),
        )?)),
        _ => Ok(None),
    }
}

/// What the kit must be signed by: the key, else the identity policy.
fn anchor_of<'a>(key: Option<&'a PublicKey>, keyless: Option<&'a Keyless>) -> Result<Anchor<'a>, Failure> {
    match (key, keyless) {
        (Some(k), _) => Ok(Anchor::Key(k)),
        (None, Some((root, policy))) => Ok(Anchor::Identity { root, policy }),
        (None, None) => Err(Failure { code: schema::exit::REJECTED, message: "give `--key FILE` or `--trusted-root FILE`".into() }),
    }
}

pub fn run(cmd: KitCommand, quiet: bool) -> Result<(), Failure> {
    match cmd {
        KitCommand::Build { release, out, delta_from, key, source, json } => {
            let root = root_of(source)?;
            let signing = pipeline::release::signing_key(key.as_deref(), &root, Fips::Off, &schema::report::Silent)?;
            let reporter = Progress::new(mode_of(json, quiet));
            let summary = kit::rebuild(
                &kit::RebuildRequest {
                    release: &release,
                    root: &root,
                    key: signing.as_ref(),
                    delta_from: delta_from.as_deref(),
                    out: out.as_deref(),
                },
                &reporter,
            );
            reporter.finish();
            let summary = summary?;
            if json {
                print_json(&serde_json::json!({"event": "result", "kit": summary}));
            } else {
                let mut s = format!(
                    "{} ({:?} kit): {} entries, {} bytes of content, {} bytes compressed",
                    summary.path.display(),
                    summary.kind,
                    summary.entries,
                    summary.content_size,
                    summary.size
                );
                if let (Some(n), Some(b)) = (summary.required_blobs, summary.required_size) {
                    s += &format!("\n  leaves {n} blobs ({b} bytes) to the target, which must hold the previous release");
                }
                progress::out(&s);
            }
            Ok(())
        }
        KitCommand::Verify { kit: path, base, key, identity, rekor_key, fips, json } => {
            let public = key.as_deref().map(PublicKey::load).transpose().map_err(pipeline::Error::from)?;
            let keyless = keyless_of(public.is_none(), &identity)?;
            let log = rekor_key.as_deref().map(PublicKey::load).transpose().map_err(pipeline::Error::from)?;
            let fips = if fips { Fips::On } else { Fips::Off };
            verify(&path, anchor_of(public.as_ref(), keyless.as_ref())?, log.as_ref(), fips, base.as_deref(), json, quiet)
        }
        KitCommand::Import { kit: path, into, docker_config, key, identity, rekor_key, fips, json } => {
            let mut into: kit_import::Target =
                into.parse().map_err(|e: String| Failure { code: schema::exit::Code::Usage, message: format!("--into: {e}") })?;
            if let kit_import::Target::Registry { docker_config: c, .. } = &mut into {
                *c = docker_config;
            }
            let public = key.as_deref().map(PublicKey::load).transpose().map_err(pipeline::Error::from)?;
            let keyless = keyless_of(public.is_none(), &identity)?;
            let anchor = anchor_of(public.as_ref(), keyless.as_ref())?;
            let log = rekor_key.as_deref().map(PublicKey::load).transpose().map_err(pipeline::Error::from)?;
            let fips = if fips { Fips::On } else { Fips::Off };
            let (lock, what) = match &into {
                kit_import::Target::Dir(d) => {
                    let d = std::env::current_dir().map(|c| c.join(d)).unwrap_or_else(|_| d.clone());
                    (oci::statelock::beside(&d), format!("the import target `{}`", d.display()))
                }
                kit_import::Target::Registry { target, .. } => {
                    (oci::statelock::for_remote(&target.to_string()), format!("the import target `{target}`"))
                }
            };
            let _lock = crate::hold(&lock, &what)?;
            checked("imported", json, quiet, |reporter| kit_import::import_pinned(&path, &into, anchor, log.as_ref(), fips, None, reporter))
        }
    }
}

/// `verify <kit>`.
pub fn verify(
    path: &std::path::Path,
    anchor: Anchor<'_>,
    log: Option<&PublicKey>,
    fips: Fips,
    base: Option<&std::path::Path>,
    json: bool,
    quiet: bool,
) -> Result<(), Failure> {
    checked("verified", json, quiet, |reporter| kit_import::verify_kit_pinned(path, anchor, log, fips, base, None, reporter))
}

/// Runs a kit check (`verify` or `import`) with progress, then prints its report or failure.
fn checked(done: &str, json: bool, quiet: bool, run: impl FnOnce(&Progress) -> Result<KitReport, KitError>) -> Result<(), Failure> {
    let reporter = Progress::new(mode_of(json, quiet));
    let report = run(&reporter);
    reporter.finish();
    let report = report.map_err(|e| kit_failure(e, json))?;
    if json {
        print_json(&serde_json::json!({"event": "result", done: true, "report": report}));
    } else {
        progress::out(&report.render());
    }
    Ok(())
}

/// A refused kit: with `--json`, the checklist (or the reason) as the result on stdout too.
fn kit_failure(e: KitError, json: bool) -> Failure {
    if json {
        let checks = match &e {
            KitError::Unverified { report, .. } => serde_json::to_value(&report.checks).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        print_json(&serde_json::json!({"event": "result", "verified": false, "error": e.to_string(), "checks": checks}));
    }
    Failure::from(pipeline::Error::from(e))
}
