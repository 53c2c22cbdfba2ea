//! `cargo xtask`: the command line of the Stella Ops release pipeline.
//!
//! Thin by design: parse flags, set up logging and progress, call `pipeline`, render the
//! result or the error, return the exit code. Everything else lives in the `pipeline` crate.

mod bench;
mod kit;
mod ops;
mod progress;
mod publish;
mod rebuild;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use schema::exit::Code;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pipeline::release::{self, RunOptions};
use pipeline::stages::plan::{PlanOptions, Tree};
use schema::model::Channel;

use crate::progress::{Mode, Progress};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "Cut, reproduce and check Stella Ops releases",
    long_about = "Cut, reproduce and check Stella Ops releases.\n\n\
        A release is a pure function of the git tree at the tag, the lock files frozen there, \
        base-images.lock, release-trains/ and the toolchain. The embedded daemonless builder \
        needs no Docker engine and no registry.",
    after_help = "Exit codes: 0 success; 1 refused (bad input, failed check, reproducibility \
        mismatch); 2 internal error (a bug); 3 environment (I/O, network, missing tool); \
        64 bad command line."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// No progress output; errors only.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what would be released: version, epoch, components x platforms, pinned bases,
    /// outputs. No side effects.
    Plan {
        #[command(flatten)]
        target: Target,
        /// Print the plan as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Cut a release into target/releases/<version>-<channel>/ (refuses a dirty tree).
    Release {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        build: BuildFlags,
        /// Release directory (default: target/releases/<version>-<channel>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Do not run the release gates of release-trains/gates.toml (tests, dependency audit,
        /// performance budgets); the release records them as `skipped` and cannot be promoted.
        #[arg(long)]
        skip_gates: bool,
        /// Build every image instead of reusing unchanged ones from the build cache
        /// (`<cache>/builds`, see `--cache`), and store nothing there. Without it, an image whose
        /// inputs (base digest, source tree, recipe, build arguments, toolchain, image epoch,
        /// release version and channel, pipeline version) match a cache entry is taken from it,
        /// every blob checked against its digest. `build` and `repro` never use the cache.
        #[arg(long)]
        no_cache: bool,
        /// After the build, remove the build cache's least recently used entries until the
        /// rest fit in SIZE (`10GiB`, `512MiB`, `0` keeps only this release's); this release's
        /// entries are never removed. Leftovers of killed releases go too.
        #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = parse_size)]
        cache_max_size: u64,
        /// Emit progress events and the result as JSON lines on stdout (for CI).
        #[arg(long)]
        json: bool,
        /// Then publish it (as `cargo xtask publish`): by digest to the registry and mirrors,
        /// tags last.
        #[arg(long)]
        publish: bool,
        #[command(flatten)]
        publishing: publish::PublishFlags,
    },
    /// Push a release directory to its registry and mirrors by digest: every blob, manifest,
    /// index, signature and referrer (referrers API, or the `sha256-<hex>` fallback index),
    /// checked, then the version and channel tags last. With a trust repository in the channel
    /// store (`trust init`): the version tag, then the trust repository (`<NAMESPACE>/trust`),
    /// then the channel tags, moved to what the signed pointers name (as `trust publish`).
    /// Retries transient failures; `--resume` continues an interrupted publish.
    Publish(publish::PublishArgs),
    /// Check the environment.
    #[command(subcommand)]
    Doctor(publish::DoctorCommand),
    /// Build the images of HEAD into DIR without the checks of a release (used by `repro`;
    /// uncommitted changes are not built).
    Build {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        build: BuildFlags,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make the whole release twice (images, evidence, signatures with one throwaway key,
    /// release.yaml, chart, compose file, kit; no gates, log or publish) under different TZ,
    /// locale, umask, thread count and temporary directory, and compare every file: images
    /// index by index, manifest, config and layer, the rest byte for byte. What differs by
    /// design (provenance run details) is pinned in both builds and reported.
    Repro {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        build: BuildFlags,
        /// Keep both builds under DIR/build-1 and DIR/build-2 for inspection (diffoscope);
        /// with `--against`, the rebuilt release under DIR/rebuilt.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// Rebuild a published release from its commit and compare: a release directory, a
        /// kit (`.tar.zst`), or `docker://HOST[:PORT]/NAMESPACE` (with `--release`). The
        /// published release is verified with `--release-key` first; the commit is its images'
        /// revision label, checked out from `--source`'s repository; every image, SBOM (both
        /// encodings), chart and compose file release.yaml states is compared. The verdict is a
        /// SLSA Verification Summary Attestation signed with `--key` (the verifier's own key),
        /// written to `--vsa`, passed or failed. Exit 1 when anything differs.
        #[arg(long, value_name = "DIR|KIT|docker://HOST/NS", requires = "release_key")]
        against: Option<String>,
        /// `--against`: the published release's public key (SPKI PEM), obtained out of band.
        #[arg(long, value_name = "FILE")]
        release_key: Option<PathBuf>,
        /// `--against docker://...`: the directory holding the release's signed `release.yaml`
        /// and `release.yaml.sig` (the registry holds the images, not the manifest).
        #[arg(long, value_name = "DIR")]
        release: Option<PathBuf>,
        /// `--against docker://...`: Docker config file with credentials for the registry.
        #[arg(long, value_name = "FILE")]
        docker_config: Option<PathBuf>,
        /// `--against`: where to write the signed verdict (DSSE envelope of the VSA statement).
        /// Default: target/vsa/<version>-<channel>.vsa.json under `--source`.
        #[arg(long, value_name = "FILE")]
        vsa: Option<PathBuf>,
        /// `--against`: the verifier's identity in the VSA (`predicate.verifier.id`).
        /// Default: `https://stella-ops.org/rebuilder#<key id>`.
        #[arg(long, value_name = "URI")]
        verifier_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Refresh base-images.lock: resolve each pinned package in the mirror, fetch it, assemble
    /// the base and pin its digest. Review the diff before committing it. `lock add` adds a
    /// base from a registry, an OCI layout or a `docker save` archive.
    #[command(args_conflicts_with_subcommands = true)]
    Lock {
        #[command(subcommand)]
        action: Option<LockCommand>,
        /// Repository root (default: the current directory's repository).
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        /// Debian mirror base URL (default: the host's apt sources).
        #[arg(long, value_name = "URL", env = "STELLAOPS_APT_MIRROR")]
        apt_mirror: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Measure layer writing and hashing against `tar | gzip -6`, `pigz -6` and `sha256sum` on
    /// the same input, in one run; report ratios and peak memory.
    Bench(bench::BenchArgs),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Offline kits: build one from a release, import one (fail-closed) into an OCI layout.
    #[command(subcommand)]
    Kit(kit::KitCommand),
    /// Attestations and the transparency log.
    #[command(subcommand)]
    Attest(AttestCommand),
    /// Verify a release directory or an offline kit offline with a pinned public key (or a
    /// keyless release directory or kit with `--trusted-root` and an identity policy):
    /// release.yaml's signature, bundle and checksum, every image blob, signature and label,
    /// every SBOM and provenance envelope; for a kit also every entry against its signed
    /// inventory (what `kit import` checks, without importing). Prints a checklist; exits 1 if
    /// any check fails.
    Verify {
        /// The release directory (target/releases/<version>-<channel>), a kit (.tar.zst), or a
        /// channel pointer (.json: as `verify-pointer`, with its state file from
        /// STELLAOPS_POINTER_STATE and its clock from STELLAOPS_NOW).
        dir: PathBuf,
        /// For a delta kit: the OCI layout holding the release it applies to.
        #[arg(long, value_name = "DIR")]
        base: Option<PathBuf>,
        /// The release's public key (SPKI PEM), obtained out of band.
        #[arg(long, value_name = "FILE", required_unless_present = "trusted_root", conflicts_with = "trusted_root")]
        key: Option<PathBuf>,
        /// A keyless release (a directory or its kit): the sigstore trusted root
        /// (`trusted_root.json`) naming the Fulcio CA, the transparency log's key and any CT
        /// logs, in place of `--key`. The certificate in `release.yaml.sigstore.json` must chain
        /// to that CA, name the identity and issuer below (and carry an SCT of a CT log the root
        /// names, if it names any); every signature is checked with its key and every log
        /// entry's signed time must lie within its validity.
        #[arg(long, value_name = "FILE", requires = "certificate_oidc_issuer")]
        trusted_root: Option<PathBuf>,
        /// With `--trusted-root`: the signer's identity (the certificate's email or URI), exactly.
        #[arg(long, value_name = "SUBJECT", requires = "trusted_root", required_unless_present_any = ["key", "certificate_identity_regexp"])]
        certificate_identity: Option<String>,
        /// With `--trusted-root`: a regular expression the identity matches (unanchored, as
        /// cosign's: anchor it, `^https://github\.com/ORG/REPO/\.github/workflows/release\.yml@refs/tags/v.*$`).
        #[arg(long, value_name = "RE", requires = "trusted_root", conflicts_with = "certificate_identity")]
        certificate_identity_regexp: Option<String>,
        /// With `--trusted-root`: the OIDC issuer that vouched for the identity (e.g.
        /// `https://token.actions.githubusercontent.com`), exactly.
        #[arg(long, value_name = "ISSUER", requires = "trusted_root")]
        certificate_oidc_issuer: Option<String>,
        /// FIPS mode: refuse anything but ES256.
        #[arg(long)]
        fips: bool,
        /// The transparency log's public key (SPKI PEM), pinned: every log entry of the release
        /// (inclusion proof, signed checkpoint, signed entry timestamp) is checked with it. A
        /// release with entries cannot be verified without it; `stable` and `lts` must have them.
        #[arg(long, value_name = "FILE", env = "STELLAOPS_REKOR_KEY")]
        rekor_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Check the release as published on this registry (`HOST[:PORT]/NAMESPACE`) instead
        /// of the directory's images: every digest resolvable, tags on the release, every
        /// signature and referrer present and signed.
        #[arg(long, value_name = "HOST/NAMESPACE")]
        registry: Option<String>,
        /// Docker config file with credentials for `--registry`.
        #[arg(long, value_name = "FILE")]
        docker_config: Option<PathBuf>,
        /// Also require a passing rebuild verdict for this release: the SLSA Verification
        /// Summary Attestation that `repro --against` wrote (a DSSE envelope), signed by
        /// `--vsa-key`, saying PASSED about this release.yaml's digest.
        #[arg(long, value_name = "FILE", requires = "vsa_key")]
        vsa: Option<PathBuf>,
        /// The rebuilder's public key for `--vsa` (a second party's, not the release key).
        #[arg(long, value_name = "FILE", requires = "vsa")]
        vsa_key: Option<PathBuf>,
    },
    #[command(flatten)]
    Ops(ops::OpsCommand),
}

#[derive(Debug, Subcommand)]
enum AttestCommand {
    /// Send a release's pending transparency-log entries (attest/tlog/pending) to the log;
    /// an entry the log already has counts as sent.
    Resubmit {
        /// The release directory.
        dir: PathBuf,
        #[arg(long, value_name = "URL", env = "STELLAOPS_REKOR_URL")]
        rekor_url: String,
        /// Which of Rekor's APIs the log speaks.
        #[arg(long, value_enum, default_value = "v1", env = "STELLAOPS_REKOR_API")]
        rekor_api: RekorApiArg,
        /// The release's signing key (the one that signed release.yaml; passphrase from
        /// STELLAOPS_KEY_PASSPHRASE): it signs the record of what was sent,
        /// `attest/tlog/resubmitted.dsse.json`.
        #[arg(long, value_name = "FILE", env = "STELLAOPS_SIGNING_KEY")]
        key: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LockCommand {
    /// Append a new `[[base]]` to base-images.lock, pinned by digest per platform. The tag of
    /// `--from` is resolved once, now, to the digest of the index or manifest it names; only
    /// that digest is written (`HOST/REPO@sha256:...`), never the tag. Every pin is pulled and
    /// verified (each blob hashed, the config's platform checked) before the file is written
    /// (a temporary file, then renamed); the rest of the file is kept byte for byte. Refused:
    /// a NAME already in the lock (remove it, or run `cargo xtask lock` to refresh it), a
    /// reference that does not resolve, a platform the index lacks, something not an image.
    Add {
        /// Name of the new base (what `base = "..."` in components.toml refers to).
        name: String,
        /// `docker://HOST/REPO:TAG` or `docker://HOST/REPO@sha256:...` (a registry, read
        /// anonymously; loopback hosts over plain HTTP), `oci:DIR[:REF]` (a local OCI layout
        /// inside the repository; REF a ref name or digest, optional when the layout holds one
        /// manifest), or `docker-archive:FILE` (a `docker save` tarball inside the repository).
        #[arg(long, value_name = "SOURCE")]
        from: pipeline::lock::BaseFrom,
        /// Platform to pin (repeatable; default: linux/amd64 and linux/arm64).
        #[arg(long = "platform", value_name = "OS/ARCH")]
        platforms: Vec<schema::model::Platform>,
        /// Repository root (default: the current directory's repository).
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        /// Print the pins as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a new key pair: FILE (encrypted PKCS#8 PEM, mode 0600, passphrase from
    /// STELLAOPS_KEY_PASSPHRASE) and FILE.pub (SPKI PEM); or, with `--pkcs11 URI`, make the
    /// pair on a PKCS#11 token (private key sensitive and not extractable: it never leaves the
    /// token) and print its public key (or write it to `--public FILE`). Never overwrites.
    Generate {
        /// Private key path; the public key goes to the same path with `.pub`.
        #[arg(long, value_name = "FILE", required_unless_present = "pkcs11", conflicts_with = "pkcs11")]
        out: Option<PathBuf>,
        /// Make the key on a token: `pkcs11:token=LABEL;object=NEWKEY[;id=%XX..]` (module and
        /// PIN as for `release --key`).
        #[arg(long, value_name = "URI")]
        pkcs11: Option<String>,
        /// With `--pkcs11`: where to write the public key (SPKI PEM); default stdout.
        #[arg(long, value_name = "FILE", requires = "pkcs11")]
        public: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        algorithm: Algorithm,
        /// FIPS mode: ES256 only.
        #[arg(long)]
        fips: bool,
    },
    /// Write the public key of a signing key: a key file (ours, decrypted with
    /// STELLAOPS_KEY_PASSPHRASE; a cosign.key with COSIGN_PASSWORD) or a `pkcs11:` URI (read
    /// from the token; the private key stays there). For `verify --key`, openssl or cosign.
    ExportPublic {
        /// The key: FILE or `pkcs11:` URI.
        key: PathBuf,
        /// Write here (never overwritten) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "pem")]
        format: PublicFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PublicFormat {
    /// SPKI PEM (`PUBLIC KEY`): what `verify --key` and openssl read.
    Pem,
    /// cosign's `cosign.pub`: cosign writes public keys as SPKI PEM too, so the bytes are
    /// the same; `cosign verify --key` reads it.
    Cosign,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Algorithm {
    EcdsaP256,
    Ed25519,
}

#[derive(Debug, Args)]
struct Target {
    /// Release channel.
    #[arg(long, value_enum, default_value = "edge")]
    channel: ChannelArg,
    /// Repository root (default: the current directory's repository).
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BuildFlags {
    /// Signing key: passphrase-encrypted PKCS#8 PEM (`cargo xtask keys generate`; passphrase
    /// in STELLAOPS_KEY_PASSPHRASE), cosign's encrypted `cosign.key` (passphrase in
    /// COSIGN_PASSWORD, else STELLAOPS_KEY_PASSPHRASE), or a key in a PKCS#11 token named by
    /// an RFC 7512 URI, `pkcs11:token=LABEL;object=KEY[?module-path=FILE&pin-source=file:PATH]`
    /// (module default STELLAOPS_PKCS11_MODULE, then Debian's SoftHSM2; PIN default
    /// STELLAOPS_PKCS11_PIN). Default: a development key made under target/keys/ on first use.
    #[arg(long, value_name = "FILE|URI", env = "STELLAOPS_SIGNING_KEY", conflicts_with = "keyless")]
    key: Option<PathBuf>,
    /// Sign keyless (no key to keep): a one-time ECDSA P-256 key, never written anywhere,
    /// certified for an OIDC identity by the Fulcio CA at `--fulcio-url`; every signature goes
    /// to the transparency log (required) and `release.yaml.sigstore.json` carries the
    /// certificate. The token: `--identity-token FILE`, else SIGSTORE_ID_TOKEN, else, in GitHub
    /// Actions (a job with `id-token: write`), the workflow's token for audience `sigstore`.
    /// Verify with `verify --trusted-root FILE --certificate-identity ... --certificate-oidc-issuer ...`.
    #[arg(long, requires = "fulcio_url")]
    keyless: bool,
    /// The Fulcio CA's base URL (`POST /api/v2/signingCert`), for `--keyless`.
    #[arg(long, value_name = "URL", env = "STELLAOPS_FULCIO_URL")]
    fulcio_url: Option<String>,
    /// The OIDC identity token (a JWT, audience `sigstore`) for `--keyless`, in a file.
    #[arg(long, value_name = "FILE", requires = "keyless")]
    identity_token: Option<PathBuf>,
    /// FIPS mode: ES256 (ECDSA P-256) keys only.
    #[arg(long)]
    fips: bool,
    /// Transparency log (Rekor API) to record every signature in. When it cannot be reached,
    /// the release completes with its entries pending (`cargo xtask attest resubmit`).
    #[arg(long, value_name = "URL", env = "STELLAOPS_REKOR_URL")]
    rekor_url: Option<String>,
    /// Which of Rekor's APIs the log speaks: `v1` (`/api/v1/log/entries`), `v2` (the tiled
    /// log, `/api/v2/log/entries`). Default: the channel's `[transparency-log] api`, else v1.
    #[arg(long, value_enum, value_name = "API", env = "STELLAOPS_REKOR_API")]
    rekor_api: Option<RekorApiArg>,
    /// The transparency log's public key (SPKI PEM), pinned: each answer of the log is checked
    /// with it (checkpoint and signed entry timestamp signed by it) before it is kept; an
    /// answer that does not check leaves its entry pending. Without it, only what needs no key
    /// is checked (the body, the inclusion proof). For `repro --against`: the published
    /// release's log key, every entry of it checked before the rebuild.
    #[arg(long, value_name = "FILE", env = "STELLAOPS_REKOR_KEY")]
    rekor_key: Option<PathBuf>,
    /// Directory of .deb files for air-gapped builds (instead of the apt mirror).
    #[arg(long, value_name = "DIR", env = "STELLAOPS_DEB_DIR")]
    deb_dir: Option<PathBuf>,
    /// Debian mirror base URL (default: the host's apt sources).
    #[arg(long, value_name = "URL", env = "STELLAOPS_APT_MIRROR")]
    apt_mirror: Option<String>,
    /// Cache of fetched packages and sources (default: target/stellaops-cache).
    #[arg(long, value_name = "DIR", env = "STELLAOPS_CACHE")]
    cache: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Builder: `daemonless` builds every component from its recipe layers; `buildkit` builds
    /// components whose recipe has a `dockerfile` with BuildKit (the others daemonless).
    #[arg(long, value_enum, default_value = "daemonless", env = "STELLAOPS_BACKEND")]
    backend: BackendArg,
    /// A BuildKit endpoint: a Docker engine socket, `unix:///path/docker.sock`, or an engine
    /// over TCP with mutual TLS, `tcp://HOST:PORT` (see `--builder-tls-*`); optionally keyed by
    /// the platforms it builds (`linux/arm64=tcp://10.0.0.7:2376`). Repeat for a pool (default:
    /// `DOCKER_HOST`).
    #[arg(long = "builder", value_name = "ENDPOINT")]
    builders: Vec<String>,
    /// CA certificate (PEM) that signed the `tcp://` builders' server certificates. With
    /// `--builder-tls-cert` and `--builder-tls-key`; without the three, `DOCKER_CERT_PATH`'s
    /// `ca.pem`, `cert.pem` and `key.pem`. A `tcp://` builder without either is refused.
    #[arg(long, value_name = "FILE", requires_all = ["builder_tls_cert", "builder_tls_key"])]
    builder_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to the `tcp://` builders (extendedKeyUsage
    /// clientAuth, signed by a CA the engines trust with `--tlsverify`).
    #[arg(long, value_name = "FILE", requires_all = ["builder_tls_ca", "builder_tls_key"])]
    builder_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["builder_tls_ca", "builder_tls_cert"])]
    builder_tls_key: Option<PathBuf>,
    /// Share BuildKit's cache between builders and releases through a registry repository,
    /// `HOST[:PORT]/REPO`: each Dockerfile component's cache is pushed there as
    /// `REPO/<component>:<os>-<arch>-inline-cache` (BuildKit's inline cache) and imported by
    /// later builds, which then skip the steps it holds. Digests do not change; the build
    /// record names the cache and the cached steps. Without it, no cache is used at all.
    #[arg(long, value_name = "REPO", env = "STELLAOPS_BUILD_CACHE")]
    build_cache: Option<String>,
    /// BuildKit builds at once per endpoint.
    #[arg(long, value_name = "N", default_value_t = 2)]
    builds_per_builder: usize,
    /// Registry `HOST:PORT/PATH` into which pinned bases are pushed by digest for BuildKit to
    /// pull (needed for bases that are not in a registry, e.g. Debian-assembled ones).
    #[arg(long, value_name = "REPO", env = "STELLAOPS_BASE_MIRROR")]
    base_mirror: Option<String>,
}

/// `--rekor-api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RekorApiArg {
    V1,
    V2,
}

impl From<RekorApiArg> for pipeline::stages::sign::tlog::RekorApi {
    fn from(a: RekorApiArg) -> Self {
        match a {
            RekorApiArg::V1 => Self::V1,
            RekorApiArg::V2 => Self::V2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Daemonless,
    Buildkit,
}

impl BuildFlags {
    fn backend(&self) -> release::BackendChoice {
        match self.backend {
            BackendArg::Daemonless => release::BackendChoice::Daemonless,
            BackendArg::Buildkit => {
                let endpoints =
                    if self.builders.is_empty() { std::env::var("DOCKER_HOST").into_iter().collect() } else { self.builders.clone() };
                release::BackendChoice::BuildKit(pipeline::stages::build::buildkit::BuildKitOptions {
                    endpoints,
                    per_endpoint: self.builds_per_builder,
                    base_mirror: self.base_mirror.clone(),
                    tls: self.builder_tls(),
                    build_cache: self.build_cache.clone(),
                    limits: pipeline::stages::build::buildkit::StreamLimits::from_env(),
                })
            }
        }
    }

    /// The `tcp://` builders' TLS files: the flags, else `DOCKER_CERT_PATH` (checked, with
    /// the file named, by the health check).
    fn builder_tls(&self) -> Option<pipeline::stages::build::buildkit::TlsFiles> {
        use pipeline::stages::build::buildkit::TlsFiles;
        match (&self.builder_tls_ca, &self.builder_tls_cert, &self.builder_tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() }),
            _ => std::env::var_os("DOCKER_CERT_PATH").filter(|d| !d.is_empty()).map(|d| TlsFiles::in_dir(std::path::Path::new(&d))),
        }
    }

    /// The flags again, for the child processes of `repro`.
    fn backend_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if self.backend == BackendArg::Buildkit {
            args.extend(["--backend".into(), "buildkit".into()]);
            for b in &self.builders {
                args.extend(["--builder".into(), b.into()]);
            }
            args.extend(["--builds-per-builder".into(), self.builds_per_builder.to_string().into()]);
            if let Some(m) = &self.base_mirror {
                args.extend(["--base-mirror".into(), m.into()]);
            }
            if let (Some(ca), Some(cert), Some(key)) = (&self.builder_tls_ca, &self.builder_tls_cert, &self.builder_tls_key) {
                args.extend(["--builder-tls-ca".into(), ca.into(), "--builder-tls-cert".into(), cert.into()]);
                args.extend(["--builder-tls-key".into(), key.into()]);
            }
            if let Some(c) = &self.build_cache {
                args.extend(["--build-cache".into(), c.into()]);
            }
        }
        args
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ChannelArg {
    Lts,
    Stable,
    Edge,
}
impl From<ChannelArg> for Channel {
    fn from(c: ChannelArg) -> Channel {
        match c {
            ChannelArg::Lts => Channel::Lts,
            ChannelArg::Stable => Channel::Stable,
            ChannelArg::Edge => Channel::Edge,
        }
    }
}

/// A panic is a bug: say so plainly and name where it happened. `main` then exits 2 (not
/// Rust's 101) once the unwinding has run every drop (staging directories are removed).
fn on_panic(info: &std::panic::PanicHookInfo<'_>) {
    let what = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
    progress::eprint(&format!(
        "internal error: {what}{place}\n  this is a bug in cargo xtask, not in your input; please report it with the command line and this message"
    ));
}

fn exit(code: Code) -> ExitCode {
    ExitCode::from(u8::try_from(code.status()).unwrap_or(u8::MAX))
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(on_panic));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { Code::Usage } else { Code::Success };
            // Nothing more can be said when stderr itself is gone.
            let _ = e.print();
            return exit(code);
        }
    };
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        (false, _) => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::env::var_os("NO_COLOR").is_none())
        .without_time()
        .init();
    // A panic on any thread reaches here (rayon and our joins propagate it), after the hook
    // printed it; the drops of the unwound frames have cleaned up.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    let Ok(result) = result else { return exit(Code::Internal) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            progress::eprint(&format!("error: {message}"));
            exit(code)
        }
    }
}

/// Takes the lock of a state (see `oci::statelock`) for the rest of the command, saying on
/// stderr whom it waits for.
pub(crate) fn hold(path: &Path, what: &str) -> Result<oci::statelock::StateLock, Failure> {
    oci::statelock::StateLock::acquire(path, what, &|m| progress::eprint(&format!("note: {m}")))
        .map_err(|source| pipeline::Error::Io { path: path.to_owned(), source }.into())
}

pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl From<pipeline::Error> for Failure {
    fn from(e: pipeline::Error) -> Self {
        // The library's hints are data; they are drawn here, under the message.
        let mut message = e.to_string().trim_end().to_owned();
        if let Some(hint) = e.hint() {
            message.push_str(&format!("\n  hint: {hint}"));
        }
        Failure { code: e.exit_code(), message }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        let mut message = format!("{e:#}");
        if let Some(full) = pipeline::error::DiskFull::in_chain(e.as_ref()) {
            message.push_str(&format!("\n  hint: {}", full.hint()));
        }
        Failure { code: schema::exit::ENVIRONMENT, message }
    }
}

pub(crate) fn root_of(source: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let dir = match source {
        Some(s) => s,
        None => std::env::current_dir()
            .map_err(|e| Failure { code: schema::exit::Code::Environment, message: format!("cannot read the current directory: {e}") })?,
    };
    // The repository root: the nearest ancestor holding release-trains/.
    let mut at = dir.as_path();
    loop {
        if at.join("release-trains").is_dir() {
            return Ok(at.to_owned());
        }
        match at.parent() {
            Some(p) => at = p,
            None => return Ok(dir),
        }
    }
}

fn run_options(
    target: &Target,
    build: &BuildFlags,
    tree: Tree,
    out: Option<PathBuf>,
    gates: release::Gates,
) -> Result<RunOptions, Failure> {
    let root = root_of(target.source.clone())?;
    // The channel store of `promote` (`STELLAOPS_CHANNELS`, else target/channels).
    let channels = std::env::var_os("STELLAOPS_CHANNELS").map(PathBuf::from).unwrap_or_else(|| root.join("target/channels"));
    Ok(RunOptions {
        plan: PlanOptions { root, channel: target.channel.into(), tree, out },
        debs: release::deb_source(build.deb_dir.clone(), build.apt_mirror.clone())?,
        cache: build.cache.clone(),
        jobs: build.jobs,
        backend: build.backend(),
        key: build.key.clone(),
        keyless: match (build.keyless, &build.fulcio_url) {
            (true, Some(fulcio)) => {
                Some(pipeline::signer::keyless::KeylessOptions { fulcio: fulcio.clone(), token: build.identity_token.clone() })
            }
            _ => None,
        },
        rekor: build.rekor_url.clone(),
        rekor_api: build.rekor_api.map(Into::into),
        rekor_key: build.rekor_key.clone(),
        fips: if build.fips { verifier::keys::Fips::On } else { verifier::keys::Fips::Off },
        gates,
        // `release` turns it on (unless `--no-cache`); `build` (and so `repro`) never uses it.
        build_cache: release::BuildCacheUse::Off,
        build_cache_max: pipeline::stages::build::cache::DEFAULT_MAX_BYTES,
        channels: Some(channels),
    })
}

/// A size as `--cache-max-size` takes it: a whole number of bytes, or one with a binary unit
/// (`KiB`, `MiB`, `GiB`, `TiB`; `K`, `M`, `G`, `T` mean the same). Ten lines, so no crate.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a size: give a number and a unit, such as `10GiB`"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        other => return Err(format!("`{other}` is not a size unit: use KiB, MiB, GiB or TiB")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("`{s}` is too large"))
}

/// Writes a public key PEM to a new file (never over an existing one).
fn write_public(path: &Path, pem: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let io = |e: std::io::Error| Failure { code: schema::exit::ENVIRONMENT, message: format!("`{}`: {e}", path.display()) };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::from(pipeline::Error::from(verifier::keys::KeyError::Exists(path.to_owned())))
        } else {
            io(e)
        }
    })?;
    f.write_all(pem.as_bytes()).map_err(io)
}

/// `verify DIR|KIT --trusted-root FILE` and an identity policy (identity, pattern, issuer): a
/// keyless release directory or its kit.
/// What `verify` checks beyond the release itself: its images on a registry (`--registry`,
/// with the registry's credentials) and a rebuild verdict (`--vsa FILE`, `--vsa-key PUB`).
struct Also<'a> {
    registry: Option<&'a str>,
    docker_config: Option<PathBuf>,
    vsa: Option<(&'a Path, &'a Path)>,
}

fn verify_keyless(
    dir: &Path,
    root: Option<&Path>,
    (identity, pattern, issuer): (Option<&str>, Option<&str>, Option<&str>),
    rekor_key: Option<&Path>,
    (fips, json, quiet): (bool, bool, bool),
    base: Option<&Path>,
    also: Also<'_>,
) -> Result<(), Failure> {
    let refused = |message: String| Failure { code: schema::exit::REJECTED, message };
    if !(dir.is_dir() || dir.is_file()) || (dir.is_file() && (also.registry.is_some() || also.vsa.is_some())) {
        return Err(refused(format!(
            "`{}`: `--registry` and `--vsa` are checked against a release directory (the signed release.yaml, its bundle and log entry)\n  hint: `kit import` a kit into a directory first, then verify `DIR/stellaops/<version>-<channel>`",
            dir.display()
        )));
    }
    let root_path = root.ok_or_else(|| refused("keyless verification needs `--trusted-root FILE`".into()))?;
    let (root, policy) = kit::identity_policy(root_path, identity, pattern, issuer)?;
    let policy = &policy;
    let log = rekor_key.map(verifier::keys::PublicKey::load).transpose().map_err(pipeline::Error::from)?;
    let fips = if fips { verifier::keys::Fips::On } else { verifier::keys::Fips::Off };
    if dir.is_file() {
        return kit::verify(dir, verifier::keyless::Anchor::Identity { root: &root, policy }, log.as_ref(), fips, base, json, quiet);
    }
    // The release's certificate under the policy and release.yaml's log entry give the key that
    // signed everything (one-time, certified); the registry and the verdict are then checked
    // as for a keyed release, with that key.
    let mut report = match also.registry {
        Some(registry) => {
            publish::verify_registry(dir, verifier::keyless::Anchor::Identity { root: &root, policy }, registry, also.docker_config)?
        }
        None => verifier::release::verify_keyless(dir, &root, policy, log.as_ref(), fips),
    };
    if let Some(vsa) = also.vsa {
        match verifier::release::keyless_manifest(dir, &root, policy) {
            Ok(key) => check_vsa(&mut report, dir, vsa, &key)?,
            Err(reasons) => report.fail("rebuild verdict (VSA): the release it is about", reasons.join("; ")),
        }
    }
    verify_result(&report, json, &format!("`{}` does not verify under the identity policy", dir.display()))
}

/// Adds to `report` whether the rebuild verdict `vsa` (signed by `vsa_key`, not by the release's
/// own key `release`) passes for the release.yaml of `dir`.
fn check_vsa(
    report: &mut verifier::release::VerifyReport,
    dir: &Path,
    (vsa, vsa_key): (&Path, &Path),
    release: &verifier::keys::PublicKey,
) -> Result<(), Failure> {
    let rebuilder = verifier::keys::PublicKey::load(vsa_key).map_err(pipeline::Error::from)?;
    let result = std::fs::read(vsa).map_err(|e| format!("`{}`: {e}", vsa.display())).and_then(|bytes| {
        let yaml = std::fs::read(dir.join("release.yaml")).map_err(|e| format!("`{}`: {e}", dir.join("release.yaml").display()))?;
        if rebuilder.key_id() == release.key_id() {
            return Err("it is signed by the release key itself: a rebuild verdict is a second party's".to_owned());
        }
        verifier::vsa::check(&bytes, &rebuilder, &schema::model::Digest::of(&yaml))
    });
    report.checks.push(verifier::release::Check {
        ok: result.is_ok(),
        what: format!("rebuild verdict `{}` (VSA) passes, signed by `{}`", vsa.display(), vsa_key.display()),
        detail: result.err().unwrap_or_default(),
    });
    Ok(())
}

/// Prints a verification report (JSON or text) and turns its failures into exit 1, saying
/// `refusal` and how many checks failed.
fn verify_result(report: &verifier::release::VerifyReport, json: bool, refusal: &str) -> Result<(), Failure> {
    if json {
        print_json(&serde_json::json!({"event": "result", "verified": report.ok(), "checks": report.checks}));
    } else {
        progress::out(&report.render());
    }
    if report.ok() {
        Ok(())
    } else {
        let failed = report.checks.iter().filter(|c| !c.ok).count();
        Err(Failure { code: schema::exit::REJECTED, message: format!("{refusal} ({failed} failed checks)") })
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    let text = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    progress::out(&text);
}

/// Progress mode from `--json` and `--quiet`.
fn mode_of(json: bool, quiet: bool) -> Mode {
    if json {
        Mode::Json
    } else if quiet {
        Mode::Quiet
    } else {
        Mode::Auto
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let mode = |json: bool| mode_of(json, cli.quiet);
    match cli.command {
        Command::Plan { target, json } => {
            let root = root_of(target.source.clone())?;
            let plan = release::plan_only(&PlanOptions { root, channel: target.channel.into(), tree: Tree::MayBeDirty, out: None })?;
            if json {
                progress::out(&serde_json::to_string_pretty(&plan).unwrap_or_default());
            } else {
                progress::out(&progress::render_plan(&plan));
            }
            Ok(())
        }
        Command::Release { target, build, out, skip_gates, no_cache, cache_max_size, json, publish, publishing } => {
            let gates = if skip_gates { release::Gates::Skip } else { release::Gates::Run };
            let mut opts = run_options(&target, &build, Tree::MustBeClean, out, gates)?;
            opts.build_cache = if no_cache { release::BuildCacheUse::Off } else { release::BuildCacheUse::Use };
            opts.build_cache_max = cache_max_size;
            let reporter = Progress::new(mode(json));
            let outcome = release::release(&opts, &reporter);
            reporter.finish();
            let outcome = outcome?;
            let published =
                if publish { Some(publish::publish_dir(&outcome.output, &publishing, &opts.plan.root, mode(json))?) } else { None };
            if json {
                print_json(&serde_json::json!({"event": "result", "release": outcome, "publish": published}));
            } else {
                progress::out(&progress::render_outcome(&outcome));
                if let Some(p) = &published {
                    progress::out(&publish::render(p));
                }
            }
            Ok(())
        }
        Command::Publish(args) => {
            let root = root_of(args.source.clone())?;
            let m = mode(args.json);
            publish::run_publish(args, &root, m)
        }
        Command::Doctor(cmd) => {
            let publish::DoctorCommand::Registries { source, .. } = &cmd;
            let root = root_of(source.clone())?;
            publish::run_doctor(cmd, &root)
        }
        Command::Build { target, build, out, json } => {
            let opts = run_options(&target, &build, Tree::MayBeDirty, Some(out), release::Gates::Off)?;
            let reporter = Progress::new(mode(json));
            let outcome = release::release(&opts, &reporter);
            reporter.finish();
            let outcome = outcome?;
            if json {
                print_json(&serde_json::json!({"event": "result", "build": outcome}));
            } else {
                progress::out(&progress::render_outcome(&outcome));
            }
            Ok(())
        }
        Command::Repro { target, build, keep, against: Some(against), release_key, release, docker_config, vsa, verifier_id, json } => {
            let root = root_of(target.source.clone())?;
            let request = rebuild::Request {
                against,
                release_key,
                release,
                rekor_key: build.rekor_key.clone(),
                docker_config,
                vsa,
                verifier_id,
                keep,
                json,
                quiet: cli.quiet,
            };
            rebuild::run(&root, &build, request)
        }
        Command::Repro { target, build, keep, json, .. } => {
            let root = root_of(target.source.clone())?;
            let exe = std::env::current_exe()
                .map_err(|e| Failure { code: schema::exit::Code::Environment, message: format!("cannot find this program: {e}") })?;
            // Both builds sign with one throwaway key (signatures are deterministic, so they
            // compare too); made here, gone with the command.
            let keys = tempfile::Builder::new().prefix("stellaops-repro-key-").tempdir().map_err(|e| Failure {
                code: schema::exit::Code::Environment,
                message: format!("cannot make a temporary directory: {e}"),
            })?;
            let key = pipeline::repro::throwaway_key(keys.path()).map_err(pipeline::Error::from)?;
            let mut args: Vec<OsString> = vec![
                "--quiet".into(),
                "build".into(),
                "--channel".into(),
                target.channel_name().into(),
                "--source".into(),
                root.into(),
                "--key".into(),
                key.into(),
            ];
            if let Some(d) = &build.deb_dir {
                args.extend(["--deb-dir".into(), d.into()]);
            }
            if let Some(m) = &build.apt_mirror {
                args.extend(["--apt-mirror".into(), m.into()]);
            }
            if let Some(c) = &build.cache {
                args.extend(["--cache".into(), c.into()]);
            }
            args.extend(build.backend_args());
            if !cli.quiet && !json {
                progress::eprint("repro: making the release twice (varied TZ, locale, umask, threads, temp dirs)...");
            }
            let result = pipeline::repro::run(&exe, &args, keep.as_deref()).map_err(pipeline::Error::from);
            match (&result, json) {
                (Ok(report), true) => print_json(&serde_json::json!({"event": "result", "reproducible": true, "report": report})),
                (Ok(report), false) => progress::out(&format!(
                    "reproducible: {} images, {} blobs and {} other files of the release compared, identical under\n  1: {}\n  2: {}\n{}",
                    report.images,
                    report.blobs_compared,
                    report.files_compared,
                    report.conditions[0],
                    report.conditions[1],
                    report.masked.iter().map(|m| format!("  by design: {}: {}", m.what, m.how)).collect::<Vec<_>>().join("\n")
                )),
                (Err(pipeline::Error::Repro(pipeline::repro::ReproError::Mismatch(m))), true) => {
                    print_json(&serde_json::json!({"event": "result", "reproducible": false, "mismatches": m}))
                }
                (Err(pipeline::Error::Repro(pipeline::repro::ReproError::Files(f, m))), true) => {
                    print_json(&serde_json::json!({"event": "result", "reproducible": false, "files": f, "mismatches": m}))
                }
                _ => {}
            }
            result.map(|_| ()).map_err(Failure::from)
        }
        Command::Lock { action: Some(LockCommand::Add { name, from, platforms, source, json }), .. } => {
            let root = root_of(source)?;
            let cache = release::default_cache(&root);
            let platforms = if platforms.is_empty() { schema::model::Platform::ALL.to_vec() } else { platforms };
            let report = pipeline::lock::add(&root, &name, &from, &platforms, &cache).map_err(pipeline::Error::from)?;
            if json {
                print_json(&report);
            } else {
                let mut s = format!("{}: added base `{}`", report.file.display(), report.base);
                if let Some(r) = &report.reference {
                    s += &format!(" from {r}");
                }
                for p in &report.pins {
                    s += &format!("\n  {} {}", p.platform, p.digest);
                }
                progress::out(&s);
            }
            Ok(())
        }
        Command::Lock { action: None, source, apt_mirror, json } => {
            let root = root_of(source)?;
            let cache = release::default_cache(&root);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
            let report = pipeline::lock::lock(&root, apt_mirror.as_deref(), &cache, now).map_err(pipeline::Error::from)?;
            if json {
                print_json(&report);
            } else {
                let mut s = format!("{}: {} pin(s) unchanged, {} changed", report.file.display(), report.unchanged, report.changes.len());
                for c in &report.changes {
                    s += &format!("\n  {} {}: {} -> {}", c.base, c.platform, c.before, c.after);
                }
                for t in &report.toolchains_changed {
                    s += &format!("\n  toolchain {t}: packages changed (see the diff of the lock file)");
                }
                progress::out(&s);
            }
            Ok(())
        }
        Command::Ops(c) => ops::run(c),
        Command::Bench(args) => bench::run(&args).map_err(Failure::from),
        Command::Keys(KeysCommand::Generate { out, pkcs11, public, algorithm, fips }) => {
            use verifier::keys::{KeyKind, Secret, SigningKey};
            let kind = match algorithm {
                Algorithm::EcdsaP256 => KeyKind::EcdsaP256,
                Algorithm::Ed25519 => KeyKind::Ed25519,
            };
            let fips = if fips { verifier::keys::Fips::On } else { verifier::keys::Fips::Off };
            if fips == verifier::keys::Fips::On && kind != KeyKind::EcdsaP256 {
                return Err(pipeline::Error::from(verifier::keys::KeyError::NotFips { what: "the requested key".to_owned(), kind }).into());
            }
            if let Some(uri) = pkcs11 {
                let uri: pipeline::signer::Pkcs11Uri = uri.parse().map_err(pipeline::Error::from)?;
                if let Some(p) = &public {
                    if p.exists() {
                        return Err(pipeline::Error::from(verifier::keys::KeyError::Exists(p.clone())).into());
                    }
                }
                let key = pipeline::signer::pkcs11::generate(&uri, kind).map_err(pipeline::Error::from)?;
                match public {
                    Some(p) => {
                        write_public(&p, key.pem())?;
                        progress::out(&format!("{uri}\n{}\nkey id {}", p.display(), key.key_id()));
                    }
                    None => progress::out(key.pem().trim_end()),
                }
                return Ok(());
            }
            let out = out.ok_or_else(|| Failure {
                code: schema::exit::Code::Usage,
                message: "`--out FILE` or `--pkcs11 URI` is needed".to_owned(),
            })?;
            let key = SigningKey::generate(kind);
            if std::env::var_os(verifier::keys::PASSPHRASE_ENV).is_none() {
                progress::eprint(&format!(
                    "warning: {} is not set: the private key is encrypted with an empty passphrase",
                    verifier::keys::PASSPHRASE_ENV
                ));
            }
            let public = out.with_extension("pub");
            key.write(&out, &public, &Secret::from_env()).map_err(pipeline::Error::from)?;
            progress::out(&format!("{}\n{}\nkey id {}", out.display(), public.display(), key.public().key_id()));
            Ok(())
        }
        Command::Keys(KeysCommand::ExportPublic { key, out, format }) => {
            let key = pipeline::signer::KeyRef::from_arg(&key).map_err(pipeline::Error::from)?;
            let public = pipeline::signer::public_key(&key).map_err(pipeline::Error::from)?;
            // cosign.pub is SPKI PEM as well: both formats are these bytes.
            let (PublicFormat::Pem | PublicFormat::Cosign) = format;
            match out {
                Some(p) => write_public(&p, public.pem()),
                None => {
                    progress::out(public.pem().trim_end());
                    Ok(())
                }
            }
        }
        Command::Attest(AttestCommand::Resubmit { dir, rekor_url, rekor_api, key, json }) => {
            // A key file, a cosign.key or a `pkcs11:` URI, like every `--key`.
            let key = pipeline::signer::KeyRef::from_arg(&key).map_err(pipeline::Error::from)?;
            let key = pipeline::signer::load(&key).map_err(pipeline::Error::from)?;
            let results = pipeline::stages::sign::tlog::resubmit(
                &pipeline::stages::sign::tlog::Log { url: rekor_url, api: rekor_api.into(), key: None },
                &dir,
                key.as_ref(),
            )
            .map_err(|e| Failure { code: e.exit_code(), message: format!("`{}`: {e}", dir.display()) })?;
            let pending = results.iter().filter(|(_, l)| matches!(l, pipeline::stages::sign::tlog::Logged::Pending { .. })).count();
            if json {
                print_json(
                    &serde_json::json!({"event": "result", "sent": results.len() - pending, "pending": pending, "entries": results}),
                );
            } else {
                for (id, l) in &results {
                    progress::out(&format!(
                        "{id}: {}",
                        match l {
                            pipeline::stages::sign::tlog::Logged::Logged { uuid } => format!("logged {uuid}"),
                            pipeline::stages::sign::tlog::Logged::Pending { reason } => format!("still pending ({reason})"),
                        }
                    ));
                }
                progress::out(&format!("{} sent, {pending} pending", results.len() - pending));
            }
            if pending == 0 {
                Ok(())
            } else {
                Err(Failure { code: schema::exit::ENVIRONMENT, message: format!("{pending} entries are still pending") })
            }
        }
        Command::Kit(cmd) => kit::run(cmd, cli.quiet),
        Command::Verify {
            dir,
            base,
            key,
            trusted_root,
            certificate_identity,
            certificate_identity_regexp,
            certificate_oidc_issuer,
            fips,
            rekor_key,
            json,
            registry,
            docker_config,
            vsa,
            vsa_key,
        } => {
            let Some(key) = key else {
                return verify_keyless(
                    &dir,
                    trusted_root.as_deref(),
                    (certificate_identity.as_deref(), certificate_identity_regexp.as_deref(), certificate_oidc_issuer.as_deref()),
                    rekor_key.as_deref(),
                    (fips, json, cli.quiet),
                    base.as_deref(),
                    Also { registry: registry.as_deref(), docker_config, vsa: vsa.as_deref().zip(vsa_key.as_deref()) },
                );
            };
            if dir.is_file() && dir.extension().is_some_and(|e| e == "json") && registry.is_none() {
                return ops::run(ops::OpsCommand::VerifyPointer {
                    pointer: dir,
                    key: vec![key],
                    state: std::env::var_os("STELLAOPS_POINTER_STATE").map(PathBuf::from),
                    channel: None,
                    release: None,
                    clock: ops::ClockArg::from_env()?,
                    json,
                });
            }
            let public = verifier::keys::PublicKey::load(&key).map_err(pipeline::Error::from)?;
            let fips = if fips { verifier::keys::Fips::On } else { verifier::keys::Fips::Off };
            let log = rekor_key.as_deref().map(verifier::keys::PublicKey::load).transpose().map_err(pipeline::Error::from)?;
            if dir.is_file() && registry.is_none() {
                if vsa.is_some() {
                    return Err(Failure {
                        code: schema::exit::REJECTED,
                        message: format!(
                            "`--vsa` is checked against a release directory, and `{}` is a kit\n  hint: `kit import` it into a directory, then `verify DIR/stellaops/<version>-<channel> --vsa ...`",
                            dir.display()
                        ),
                    });
                }
                return kit::verify(&dir, verifier::keyless::Anchor::Key(&public), log.as_ref(), fips, base.as_deref(), json, cli.quiet);
            }
            let mut report = match &registry {
                Some(r) => {
                    public.check_fips(fips, "the public key").map_err(pipeline::Error::from)?;
                    publish::verify_registry(&dir, verifier::keyless::Anchor::Key(&public), r, docker_config)?
                }
                None => verifier::release::verify(&dir, &public, log.as_ref(), fips),
            };
            if let (Some(vsa), Some(vsa_key)) = (&vsa, &vsa_key) {
                check_vsa(&mut report, &dir, (vsa, vsa_key), &public)?;
            }
            verify_result(&report, json, &format!("`{}` does not verify", dir.display()))
        }
    }
}

impl Target {
    fn channel_name(&self) -> &'static str {
        Channel::from(self.channel).as_str()
    }
}

#[cfg(test)]
mod tests {
    /// clap's own checks of the command line (unique names, valid `requires`...), which it
    /// otherwise makes only when a subcommand is first parsed.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn sizes_take_binary_units_and_refuse_others() {
        use super::parse_size;
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("3 g"), Ok(3 << 30));
        assert!(parse_size("10GB").unwrap_err().contains("KiB, MiB, GiB or TiB"));
        assert!(parse_size("GiB").unwrap_err().contains("not a size"));
        assert!(parse_size("99999999999TiB").unwrap_err().contains("too large"));
    }
}
