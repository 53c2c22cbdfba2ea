//! The release-operations commands: `promote`, `history`, `rollback`, `verify-pointer`,
//! `preflight`. Flags and rendering only; the work is in `verifier::ops`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use pipeline::channels::{self, ReleaseRef, Store};
use schema::model::{Channel, Version};
use verifier::keys::{PublicKey, Secret, Signer, SigningKey};
use verifier::ops::{Clock, OpsError};
use verifier::{pointer, preflight};

use crate::{print_json, progress, root_of, ChannelArg, Failure};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The channel store: pointers, their log and the kept release manifests
    /// (default: target/channels under the repository).
    #[arg(long, value_name = "DIR", env = "STELLAOPS_CHANNELS")]
    channels: Option<PathBuf>,
    /// Repository root, for release-trains/ (default: the current directory's repository).
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ClockArg {
    /// Use this time as "now" (RFC 3339, e.g. 2027-06-27T12:00:00Z) instead of the system clock.
    /// For tests and audits ("was this valid on that day?"), not for daily use.
    #[arg(long, value_name = "TIME", env = "STELLAOPS_NOW", value_parser = verifier::ops::parse_time)]
    now: Option<i64>,
}

impl ClockArg {
    /// The clock of `STELLAOPS_NOW` (for commands that have no `--now`).
    pub fn from_env() -> Result<ClockArg, Failure> {
        let now = match std::env::var("STELLAOPS_NOW") {
            Ok(t) => Some(
                verifier::ops::parse_time(&t)
                    .map_err(|e| Failure { code: schema::exit::Code::Usage, message: format!("STELLAOPS_NOW: {e}") })?,
            ),
            Err(_) => None,
        };
        Ok(ClockArg { now })
    }

    fn clock(&self) -> Clock {
        self.now.map(Clock::Fixed).unwrap_or(Clock::Wall)
    }
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Put a release on a channel by signing a new channel pointer. Refuses a release whose
    /// signature or gates do not check out, one younger than the source channel's
    /// `[promotion] min-days` (the message gives the date it becomes eligible), one older than
    /// the channel's current release, and on a quarterly channel a second new MAJOR.MINOR line
    /// in one quarter. Promoting the current release again re-signs its pointer (new expiry).
    /// A release reaches `stable` only from `edge` and `lts` only from `stable`; stable and lts
    /// pointers are never signed with the development key.
    /// The channels' TUF trust repository (`<channels>/tuf/`): `init` writes its root,
    /// `refresh` re-signs targets, snapshot and timestamp (run daily: a timestamp expires after
    /// a day), `check` reads it as a TUF client does. Every `promote` and `rollback` of a store
    /// that has one re-signs it, and only its release keys may move a channel.
    #[command(subcommand)]
    Trust(TrustCommand),
    ///
    /// Under the two-person rule (a trust repository with two or more release keys), a move of
    /// stable or lts is only proposed (`<channels>/<channel>/proposal.json`); a second release
    /// key completes it with `promote --cosign --to <channel>`.
    Promote {
        /// A release directory, or a version kept by a channel that promotes to `--to`.
        #[arg(required_unless_present = "cosign")]
        release: Option<String>,
        /// Complete the move proposed for `--to` with a second release key (two-person rule).
        #[arg(long, conflicts_with_all = ["release", "emergency"])]
        cosign: bool,
        #[arg(long, value_enum)]
        to: ChannelArg,
        /// Put the release on `--to` without its time on the source channel, for a fix that
        /// cannot wait; the reason is recorded in the signed pointer and shown by `history`.
        #[arg(long, value_name = "REASON")]
        emergency: Option<String>,
        /// A rebuild verdict (`repro --against`'s signed VSA) for a channel whose
        /// `[rebuild-verdict]` requires one; repeat to offer several.
        #[arg(long, value_name = "FILE", conflicts_with = "cosign")]
        vsa: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        clock: ClockArg,
        #[arg(long)]
        json: bool,
    },
    /// List the release manifests a channel keeps (its last `history-keep`) and every pointer
    /// it signed; with a trust repository, also what TUF clients see of the channel (its target,
    /// read back with tough from the repository's first root), whether a client reading it now
    /// refuses it (an expired timestamp), and a move waiting for `promote --cosign`.
    History {
        #[arg(long, value_enum)]
        channel: ChannelArg,
        #[command(flatten)]
        store: StoreArgs,
        /// The release public key (default: target/keys/dev.pub).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Move a channel back to a release it keeps: render that release's compose file, Helm chart
    /// and values with every image by the digest its release.yaml records, then sign a pointer
    /// to it marked `rollback`.
    Rollback {
        #[arg(long, value_enum)]
        channel: ChannelArg,
        /// The version to go back to.
        #[arg(long, value_name = "VERSION")]
        to: Version,
        /// Where the compose file, chart and values go (default: target/rollback/<channel>-<version>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        clock: ClockArg,
        #[arg(long)]
        json: bool,
    },
    /// Check a channel pointer as a client does: its signature with a pinned release key, its
    /// expiry, and its sequence against the last one accepted (kept in a state file). Refuses a
    /// replayed (lower) sequence, an expired pointer, a move back without the `rollback`
    /// marker, and a `stable` or `lts` pointer not signed by two of the given release keys
    /// (two-person rule); a signed rollback is accepted and reported as one. Records the
    /// pointer on success.
    VerifyPointer {
        /// The pointer (`<channels>/<channel>/pointer.json`).
        pointer: PathBuf,
        /// A release public key (SPKI PEM), obtained out of band; repeat for each release key
        /// (a `stable` or `lts` pointer needs the signatures of two of them).
        #[arg(long, value_name = "FILE", required = true)]
        key: Vec<PathBuf>,
        /// The client's state file (default: $XDG_STATE_HOME/stellaops/pointer-state.json).
        #[arg(long, value_name = "FILE", env = "STELLAOPS_POINTER_STATE")]
        state: Option<PathBuf>,
        /// Refuse a pointer for another channel.
        #[arg(long, value_enum)]
        channel: Option<ChannelArg>,
        /// Also check that this release directory's release.yaml is the one the pointer names.
        #[arg(long, value_name = "DIR")]
        release: Option<PathBuf>,
        #[command(flatten)]
        clock: ClockArg,
        #[arg(long)]
        json: bool,
    },
    /// The upgrade checklist of spec appendix B for going from one release to another: the
    /// target's manifest signature, Authority/Signer/Attestor on one minor, version skew after
    /// every step of the rolling order of §5.2, backup age. Exits 1 on any violation.
    Preflight {
        /// The release running now (release directory or unpacked kit).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The release to install.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// The release public key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Age of the newest database backup (`30h`, `2d`, `90m`); over 24 h warns.
        #[arg(long, value_name = "AGE", value_parser = verifier::ops::parse_duration)]
        backup_age: Option<i64>,
        /// Repository root, for the skew rules of release-trains/components.toml.
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Write the trust root (`1.root.json`): the root keys (kept offline) and their threshold,
    /// and the release keys that sign the channels' targets, snapshot and timestamp.
    Init {
        /// A root private key (repeat for several; each signs the root).
        #[arg(long = "root-key", value_name = "FILE", required = true)]
        root_keys: Vec<PathBuf>,
        /// How many root keys must sign a new root version (default: 1).
        #[arg(long, default_value_t = 1)]
        root_threshold: u64,
        /// A release public key (repeat for several).
        #[arg(long = "release-key", value_name = "FILE", required = true)]
        release_keys: Vec<PathBuf>,
        /// How long the root is valid, in days.
        #[arg(long, default_value_t = 365)]
        root_days: u32,
        /// A store made before the trust repository (pointers and logs only): the release key
        /// that signed its pointers (file or `pkcs11:` URI); its pointers and kept releases are
        /// migrated into the repository, signed with it.
        #[arg(long, value_name = "FILE|URI")]
        key: Option<PathBuf>,
        /// Migrating stable or lts pointers: a second release key, for the two-person rule.
        #[arg(long, value_name = "FILE|URI", requires = "key")]
        cosign_key: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        clock: ClockArg,
        #[arg(long)]
        json: bool,
    },
    /// Rotate keys: write root version N+1, signed by the threshold of the current root keys
    /// and by every new root key, after re-verifying every release the channels keep (listed);
    /// then re-sign targets, snapshot and timestamp with `--key`, a release key of the new root.
    /// `--revoke PUB --reason TEXT` records a revocation: nothing the key signs later is
    /// trusted; what it signed before (kept releases, pointers) stays, and is listed.
    Rotate {
        /// Current root private keys (at least the current root threshold of them).
        #[arg(long = "root-key", value_name = "FILE", required = true)]
        root_keys: Vec<PathBuf>,
        /// The new root keys (private: each signs the new root); default: the current ones.
        #[arg(long = "new-root-key", value_name = "FILE")]
        new_root_keys: Vec<PathBuf>,
        /// The new root threshold (default: the current one).
        #[arg(long)]
        root_threshold: Option<u64>,
        /// The new release public keys (default: the current ones, less the revoked).
        #[arg(long = "release-key", value_name = "FILE")]
        release_keys: Vec<PathBuf>,
        /// A public key to revoke (repeatable); needs `--reason`.
        #[arg(long, value_name = "FILE", requires = "reason")]
        revoke: Vec<PathBuf>,
        /// Why the keys are revoked (recorded in the root).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value_t = 365)]
        root_days: u32,
        #[command(flatten)]
        store: StoreArgs,
        /// A release key of the new root, to re-sign targets, snapshot and timestamp.
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        clock: ClockArg,
        #[arg(long)]
        json: bool,
    },
    /// Set the identity policy under which `promote` (and `rollback`, and a rotation's re-check
    /// of kept releases) accepts keyless releases: the sigstore trusted root (embedded in
    /// `<channels>/keyless-policy.json`), the signer's identity or a pattern, and the OIDC
    /// issuer, e.g. `--certificate-identity-regexp
    /// '^https://github\.com/ORG/REPO/\.github/workflows/release\.yml@refs/tags/v'
    /// --certificate-oidc-issuer https://token.actions.githubusercontent.com`. Releases signed
    /// with a key are still checked against the root's release keys; channel pointers are
    /// still signed by release keys (two of them for stable and lts).
    Keyless {
        /// The sigstore trusted root (`trusted_root.json`): the Fulcio CA and the log's key.
        #[arg(long, value_name = "FILE")]
        trusted_root: PathBuf,
        /// The signer's identity (the certificate's email or URI), exactly.
        #[arg(long, value_name = "SUBJECT", required_unless_present = "certificate_identity_regexp")]
        certificate_identity: Option<String>,
        /// A regular expression the identity matches (unanchored: anchor it with `^...$`).
        #[arg(long, value_name = "RE", conflicts_with = "certificate_identity")]
        certificate_identity_regexp: Option<String>,
        /// The OIDC issuer that vouched for the identity, exactly.
        #[arg(long, value_name = "ISSUER")]
        certificate_oidc_issuer: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Re-sign targets, snapshot and timestamp from the store's current pointers.
    Refresh {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        clock: ClockArg,
        #[arg(long)]
        json: bool,
    },
    /// Read the trust repository as a TUF client (the `tough` crate) from a trusted root:
    /// signatures, thresholds, versions, hashes, expiry (wall clock); print each channel.
    /// With `--registry`, read it from the registry (`<NAMESPACE>/trust`) instead of the store.
    Check {
        /// The root the client trusts (default: `<channels>/tuf/metadata/1.root.json`).
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
        /// Read the repository that `trust publish` put on this registry (`HOST[:PORT]/NAMESPACE`).
        #[arg(long, value_name = "HOST/NAMESPACE")]
        registry: Option<String>,
        /// Docker config file with credentials for `--registry`.
        #[arg(long, value_name = "FILE")]
        docker_config: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Publish the trust repository to a registry, then move the channel tags: every file as an
    /// OCI artifact in `<NAMESPACE>/trust` (tags `<N>.<role>`, `root`, `target.<sha256>`, and
    /// `timestamp` last), read back and verified as a TUF client does from the trusted root;
    /// then `<NAMESPACE>/<component>:<channel>` moves to the index each verified pointer names.
    /// Run it after every `promote`, `rollback` and `trust refresh` (`publish` of a release
    /// does it too). A kill or failure before the last step leaves every channel tag as it was.
    Publish {
        /// `HOST[:PORT]/NAMESPACE` (the release's registry namespace).
        #[arg(long, value_name = "HOST/NAMESPACE", env = "STELLAOPS_REGISTRY")]
        registry: String,
        /// The root the read-back trusts (default: `<channels>/tuf/metadata/1.root.json`).
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
        /// Docker config file with credentials for `--registry`.
        #[arg(long, value_name = "FILE")]
        docker_config: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct KeyArg {
    /// The release signing key: a key file (passphrase in STELLAOPS_KEY_PASSPHRASE; a
    /// cosign.key's in COSIGN_PASSWORD) or a `pkcs11:` URI (PIN in the URI or
    /// STELLAOPS_PKCS11_PIN). Default: the development key target/keys/dev.key.
    #[arg(long, value_name = "FILE|URI", env = "STELLAOPS_SIGNING_KEY")]
    key: Option<PathBuf>,
}

impl KeyArg {
    fn load(&self, root: &Path) -> Result<Box<dyn Signer>, Failure> {
        let path = self.key.clone().unwrap_or_else(|| pipeline::release::dev_key_path(root));
        let key = pipeline::signer::KeyRef::from_arg(&path).map_err(pipeline::Error::from)?;
        Ok(pipeline::signer::load(&key).map_err(pipeline::Error::from)?)
    }
}

fn ops(e: OpsError) -> Failure {
    Failure::from(pipeline::Error::from(e))
}

fn store_of(args: &StoreArgs) -> Result<(PathBuf, Store), Failure> {
    let root = root_of(args.source.clone())?;
    let dir = args.channels.clone().unwrap_or_else(|| root.join("target/channels"));
    Ok((root, Store::new(&dir)))
}

fn describe(p: &pointer::Pointer) -> String {
    format!(
        "{} -> {} ({}) sequence {}, release.yaml {}, signed {}, expires {}{}",
        p.channel,
        p.version,
        p.calendar,
        p.sequence,
        p.release_yaml,
        p.issued,
        p.expires,
        if p.rollback { ", ROLLBACK" } else { "" }
    ) + &p.emergency.as_ref().map(|r| format!(", EMERGENCY: {r}")).unwrap_or_default()
        + &p.support_ends.as_ref().map(|e| format!(", supported until {e}")).unwrap_or_default()
}

pub fn run(cmd: OpsCommand) -> Result<(), Failure> {
    match cmd {
        OpsCommand::Trust(t) => trust(t),
        OpsCommand::Promote { release, cosign, to, emergency, vsa, store, key, clock, json } => {
            let (root, store) = store_of(&store)?;
            let key = key.load(&root)?;
            if cosign {
                let _lock = crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?;
                let req = channels::Cosign { root: &root, store: &store, to: to.into(), key: key.as_ref(), now: clock.clock().now() };
                let done = channels::cosign(&req).map_err(ops)?;
                if json {
                    print_json(&serde_json::json!({"event": "result", "promoted": done}));
                } else {
                    progress::out(&format!("co-signed: {}\n{}", describe(&done.pointer), done.pointer_file.display()));
                }
                return Ok(());
            }
            let release = release.unwrap_or_default();
            let what = if Path::new(&release).is_dir() {
                ReleaseRef::Dir(PathBuf::from(&release))
            } else {
                ReleaseRef::Version(release.parse().map_err(|e| Failure {
                    code: schema::exit::Code::Usage,
                    message: format!("`{release}` is neither a release directory nor a version: {e}"),
                })?)
            };
            let _lock = crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?;
            let req = channels::Promote {
                root: &root,
                store: &store,
                release: what,
                to: to.into(),
                key: key.as_ref(),
                now: clock.clock().now(),
                emergency,
                vsa,
            };
            let done = channels::promote(&req).map_err(ops)?;
            if json {
                print_json(&serde_json::json!({"event": "result", "promoted": done}));
            } else {
                if done.pending {
                    progress::out(&format!(
                        "proposed (two-person rule): {}\n{}\nanother release key completes it: cargo xtask promote --cosign --to {}",
                        describe(&done.pointer),
                        done.pointer_file.display(),
                        done.pointer.channel
                    ));
                    return Ok(());
                }
                let mut s = format!("{}{}", if done.refreshed { "re-signed: " } else { "" }, describe(&done.pointer));
                if let (Some(f), Some(since)) = (done.from, &done.on_source_since) {
                    s += &format!("\non `{f}` since {since}");
                }
                if !done.pruned.is_empty() {
                    s += &format!("\nno longer kept: {}", done.pruned.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "));
                }
                s += &format!("\n{}", done.pointer_file.display());
                progress::out(&s);
            }
            Ok(())
        }
        OpsCommand::History { channel, store, key, json } => {
            let (root, store) = store_of(&store)?;
            let key_path = key.unwrap_or_else(|| pipeline::release::dev_key_path(&root).with_extension("pub"));
            let public = PublicKey::load(&key_path).map_err(pipeline::Error::from)?;
            let h = channels::history(&root, &store, channel.into(), &public).map_err(ops)?;
            if json {
                print_json(&serde_json::json!({"event": "result", "history": h}));
            } else {
                let mut s = format!("{}: keeps the last {} release manifests\n", h.channel, h.keep);
                for k in &h.kept {
                    s += &format!(
                        "  {} {} ({}, cut for {}) release.yaml {} last pointed at by sequence {}\n",
                        if k.current { "*" } else { " " },
                        k.version,
                        k.calendar,
                        k.cut_for,
                        k.release_yaml,
                        k.last_sequence
                    );
                }
                s += "pointers:\n";
                for p in &h.log {
                    s += &format!("  {}\n", describe(p));
                }
                if let Some(p) = &h.published {
                    let field =
                        |k: &str| p.custom.as_ref().and_then(|c| c.get(k)).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
                    s += &match (field("version"), field("sequence")) {
                        (Some(v), Some(q)) => format!(
                            "trust repository (what TUF clients see): version {v}, sequence {q}{}\n",
                            if p.current { ", the newest pointer" } else { ", NOT the newest pointer of the log" }
                        ),
                        _ => "trust repository (what TUF clients see): no target for this channel\n".to_owned(),
                    };
                    if let Some(why) = &p.clients_refuse {
                        s += &format!("  clients refuse it now: {why}\n");
                    }
                    if let Some(v) = &p.proposed {
                        s += &format!(
                            "  proposed: {v}, signed by one release key (a second completes it: `promote --cosign --to {}`)\n",
                            h.channel
                        );
                    }
                }
                progress::out(s.trim_end());
            }
            Ok(())
        }
        OpsCommand::Rollback { channel, to, out, store, key, clock, json } => {
            let (root, store) = store_of(&store)?;
            let key = key.load(&root)?;
            let channel: Channel = channel.into();
            let out = out.unwrap_or_else(|| root.join(format!("target/rollback/{channel}-{to}")));
            let _lock = crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?;
            let req =
                channels::Rollback { root: &root, store: &store, channel, to, key: key.as_ref(), now: clock.clock().now(), out: &out };
            let done = channels::rollback(&req).map_err(ops)?;
            if json {
                print_json(&serde_json::json!({"event": "result", "rollback": done}));
            } else {
                let mut s = describe(&done.pointer);
                s += &format!(
                    "\nrendered from the templates of the {}: compose {} release.yaml, chart {}\n  {}\n  {}\n  {}",
                    done.templates,
                    if done.compose_matches_release { "matches" } else { "DIFFERS from" },
                    if done.chart_matches_release { "matches" } else { "DIFFERS" },
                    done.compose.display(),
                    done.chart.display(),
                    done.values.display()
                );
                s += &format!("\nthen: docker compose -f {} up -d   (or helm upgrade with the chart and values)", done.compose.display());
                progress::out(&s);
            }
            Ok(())
        }
        OpsCommand::VerifyPointer { pointer: path, key, state, channel, release, clock, json } => {
            let keys = key.iter().map(|k| PublicKey::load(k)).collect::<Result<Vec<_>, _>>().map_err(pipeline::Error::from)?;
            let state_path = state.unwrap_or_else(default_state);
            let mut st = pointer::load_state(&state_path).map_err(ops)?;
            let env = pointer::read_envelope(&path).map_err(ops)?;
            let mut checked = pointer::check_signed(&env, &keys, &mut st, clock.clock().now(), channel.map(Channel::from));
            if let (Some(dir), Some(p)) = (&release, &checked.pointer) {
                let opened = keys.iter().map(|k| verifier::ops::SignedRelease::open(dir, k)).reduce(|a, b| a.or(b));
                match opened.unwrap_or_else(|| Err(vec!["no release key given".to_owned()])) {
                    Ok(r) if r.digest == p.release_yaml => {}
                    Ok(r) => checked.problems.push(format!(
                        "`{}` has release.yaml {}, the pointer names {}",
                        dir.display(),
                        r.digest,
                        p.release_yaml
                    )),
                    Err(e) => checked.problems.extend(e),
                }
                checked.accepted = checked.problems.is_empty();
            }
            if checked.accepted {
                pointer::save_state(&st, &state_path).map_err(ops)?;
            }
            for w in &checked.warnings {
                progress::eprint(&format!("warning: {w}"));
            }
            if json {
                print_json(&serde_json::json!({"event": "result", "pointer": checked, "state": state_path}));
            } else if let (true, Some(p)) = (checked.accepted, &checked.pointer) {
                let how = match &checked.movement {
                    Some(pointer::Move::Rollback { from, to }) => format!("ROLLBACK from {from} to {to} (signed, deliberate)"),
                    Some(pointer::Move::Forward { from }) => format!("forward from {from}"),
                    Some(pointer::Move::Unchanged) => "unchanged".into(),
                    Some(pointer::Move::First) | None => "first pointer seen for this channel".into(),
                };
                progress::out(&format!("ok: {}\n{how}", describe(p)));
            }
            if checked.accepted {
                Ok(())
            } else {
                Err(Failure {
                    code: schema::exit::REJECTED,
                    message: format!(
                        "`{}` is refused:\n{}",
                        path.display(),
                        checked.problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
                    ),
                })
            }
        }
        OpsCommand::Preflight { from, to, key, backup_age, source, json } => {
            let root = root_of(source)?;
            let public = PublicKey::load(&key).map_err(pipeline::Error::from)?;
            let report =
                preflight::run(&preflight::Preflight { root: &root, from: &from, to: &to, key: &public, from_key: &public, backup_age })
                    .map_err(ops)?;
            if json {
                print_json(&serde_json::json!({"event": "result", "ok": report.ok(), "preflight": report}));
            } else {
                progress::out(&report.render());
            }
            if report.ok() {
                Ok(())
            } else {
                let ids: std::collections::BTreeSet<&str> =
                    report.findings.iter().filter(|f| f.severity == preflight::Severity::Violation).map(|f| f.check).collect();
                Err(Failure {
                    code: schema::exit::REJECTED,
                    message: format!("the upgrade is not safe: {}", ids.into_iter().collect::<Vec<_>>().join(", ")),
                })
            }
        }
    }
}

fn registry_target(r: &str) -> Result<oci::distribution::RegistryTarget, Failure> {
    r.parse().map_err(|e: String| Failure { code: schema::exit::Code::Usage, message: format!("--registry: {e}") })
}

fn default_state() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("stellaops/pointer-state.json")
}

fn trust(cmd: TrustCommand) -> Result<(), Failure> {
    use pipeline::tuf;
    match cmd {
        TrustCommand::Init { root_keys, root_threshold, release_keys, root_days, key, cosign_key, store, clock, json } => {
            let (root, store) = store_of(&store)?;
            let pass = Secret::from_env();
            let root_keys =
                root_keys.iter().map(|p| SigningKey::load(p, &pass)).collect::<Result<Vec<_>, _>>().map_err(pipeline::Error::from)?;
            let release_keys =
                release_keys.iter().map(|p| PublicKey::load(p)).collect::<Result<Vec<_>, _>>().map_err(pipeline::Error::from)?;
            let signer = |p: &Option<PathBuf>| -> Result<Option<Box<dyn Signer>>, Failure> {
                let Some(p) = p else { return Ok(None) };
                let k = pipeline::signer::KeyRef::from_arg(p).map_err(pipeline::Error::from)?;
                Ok(Some(pipeline::signer::load(&k).map_err(pipeline::Error::from)?))
            };
            let (key, cosign_key) = (signer(&key)?, signer(&cosign_key)?);
            let repo = tuf::Repo::of(store.root());
            let _lock = crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?;
            let now = clock.clock().now();
            // A store made before the trust repository: checked before the root is written.
            let migrating = if store.root().exists() && !repo.exists() {
                let cfg = schema::config::load(&root).map_err(|e| ops(e.into()))?;
                let plan =
                    channels::migration_plan(&root, &store, &cfg, &release_keys, key.as_deref(), cosign_key.as_deref()).map_err(ops)?;
                Some((cfg, plan)).filter(|(_, p)| !p.is_empty())
            } else {
                None
            };
            let fresh = !repo.dir().exists();
            let req =
                tuf::Init { repo: &repo, root_keys: &root_keys, threshold: root_threshold, release_keys: &release_keys, now, root_days };
            let path = tuf::init(&req).map_err(ops)?;
            let migrated = match (&migrating, key.as_deref()) {
                (Some((cfg, plan)), Some(key)) => match channels::migrate(&store, cfg, plan, key, cosign_key.as_deref(), now) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        // Nothing half made is left: the store stays as it was before `init`.
                        if fresh {
                            let _ = std::fs::remove_dir_all(repo.dir());
                        }
                        return Err(ops(e));
                    }
                },
                _ => None,
            };
            if json {
                print_json(&serde_json::json!({"event": "result", "root": path, "migrated": migrated}));
            } else {
                let mut s = format!("{}", path.display());
                for c in migrated.iter().flat_map(|m| &m.channels) {
                    s += &format!(
                        "\nmigrated `{}`: {} pointer(s), current {}, {} kept release(s) now targets",
                        c.channel,
                        c.pointers,
                        describe(&c.current),
                        c.kept.len()
                    );
                }
                progress::out(&s);
            }
            Ok(())
        }
        TrustCommand::Rotate {
            root_keys,
            new_root_keys,
            root_threshold,
            release_keys,
            revoke,
            reason,
            root_days,
            store,
            key,
            clock,
            json,
        } => {
            let (root, store) = store_of(&store)?;
            let pass = Secret::from_env();
            let load_private = |paths: &[PathBuf]| {
                paths.iter().map(|p| SigningKey::load(p, &pass)).collect::<Result<Vec<_>, _>>().map_err(pipeline::Error::from)
            };
            let load_public =
                |paths: &[PathBuf]| paths.iter().map(|p| PublicKey::load(p)).collect::<Result<Vec<_>, _>>().map_err(pipeline::Error::from);
            let (root_keys, new_root_keys) = (load_private(&root_keys)?, load_private(&new_root_keys)?);
            let release_keys = load_public(&release_keys)?;
            let reason = reason.unwrap_or_default();
            let revoke: Vec<(PublicKey, String)> = load_public(&revoke)?.into_iter().map(|k| (k, reason.clone())).collect();
            let key = key.load(&root)?;
            let cfg = schema::config::load(&root).map_err(|e| ops(e.into()))?;
            let repo = tuf::Repo::of(store.root());
            let _lock = crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?;
            let req = tuf::Rotate {
                repo: &repo,
                root_keys: &root_keys,
                new_root_keys: &new_root_keys,
                threshold: root_threshold,
                release_keys: &release_keys,
                revoke: &revoke,
                now: clock.clock().now(),
                root_days,
            };
            let done = channels::rotate_trust(&store, &cfg, &req, key.as_ref()).map_err(ops)?;
            if json {
                print_json(&serde_json::json!({"event": "result", "rotation": done}));
            } else {
                let mut s = format!("root version {}: {}\nre-verified:\n", done.root.version, done.root.path.display());
                for c in &done.checked {
                    s +=
                        &format!("  {} {} release.yaml {} signed by {}: {}\n", c.channel, c.version, c.release_yaml, c.signed_by, c.status);
                }
                progress::out(s.trim_end());
            }
            Ok(())
        }
        TrustCommand::Keyless { trusted_root, certificate_identity, certificate_identity_regexp, certificate_oidc_issuer, store, json } => {
            let (_, store) = store_of(&store)?;
            let policy = pipeline::keyless_policy::KeylessPolicy::new(
                &trusted_root,
                certificate_identity.as_deref(),
                certificate_identity_regexp.as_deref(),
                &certificate_oidc_issuer,
            )
            .map_err(ops)?;
            let _lock = crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?;
            let written = pipeline::keyless_policy::write(store.root(), &policy).map_err(ops)?;
            if json {
                print_json(&serde_json::json!({"event": "result", "keylessPolicy": written}));
            } else {
                let who = certificate_identity
                    .map(|i| format!("`{i}`"))
                    .or(certificate_identity_regexp.map(|r| format!("the pattern `{r}`")))
                    .unwrap_or_default();
                progress::out(&format!("keyless releases by {who} from `{certificate_oidc_issuer}`: {}", written.display()));
            }
            Ok(())
        }
        TrustCommand::Refresh { store, key, clock, json } => {
            let (root, store) = store_of(&store)?;
            let key = key.load(&root)?;
            let cfg = schema::config::load(&root).map_err(|e| ops(e.into()))?;
            let _lock = crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?;
            let done = channels::publish_trust(&store, &cfg, key.as_ref(), clock.clock().now()).map_err(ops)?.ok_or_else(|| {
                ops(OpsError::Refused(format!(
                    "`{}` has no trust repository\n  hint: `cargo xtask trust init --root-key ROOT.key --release-key RELEASE.pub`",
                    store.root().display()
                )))
            })?;
            if json {
                print_json(&serde_json::json!({"event": "result", "trust": done}));
            } else {
                progress::out(&format!(
                    "targets {}, snapshot {}, timestamp {} (expires {})",
                    done.targets_version, done.snapshot_version, done.timestamp_version, done.timestamp_expires
                ));
            }
            Ok(())
        }
        TrustCommand::Publish { registry, root, docker_config, store, json } => {
            let (_, store) = store_of(&store)?;
            let target = registry_target(&registry)?;
            let opts = oci::push::PushOptions { docker_config, ..Default::default() };
            let _lock = crate::hold(&store.root().join(".lock"), &format!("the channel store `{}`", store.root().display()))?;
            let _remote = crate::hold(&oci::statelock::for_remote(&target.to_string()), &format!("publishing to `{target}`"))?;
            let done = pipeline::stages::publish_trust::publish_trust(&store, &target, &opts, root.as_deref())
                .map_err(|e| ops(pipeline::stages::publish_trust::at(&target, e)))?;
            if json {
                print_json(&serde_json::json!({"event": "result", "trust": done}));
            } else {
                let mut s = format!("{}: {} file(s) pushed, {} already there\n", done.repository, done.pushed.len(), done.present);
                for c in &done.channels {
                    let moved = c.tags.iter().filter(|t| t.moved).count();
                    s += &format!("{} -> {}: {} tag(s) moved, {} already there\n", c.channel, c.version, moved, c.tags.len() - moved);
                }
                progress::out(s.trim_end());
            }
            Ok(())
        }
        TrustCommand::Check { root, registry, docker_config, store, json } => {
            let (_, store) = store_of(&store)?;
            let repo = tuf::Repo::of(store.root());
            let trusted = root.unwrap_or_else(|| repo.metadata().join("1.root.json"));
            let channels = match registry {
                Some(r) => {
                    let target = registry_target(&r)?;
                    // A client's check: a few tries, not a publisher's patience.
                    let retry = oci::distribution::RetryPolicy { attempts: 3, ..Default::default() };
                    let opts = oci::push::PushOptions { docker_config, retry, ..Default::default() };
                    let client = oci::push::client_for(&target, &opts).map_err(pipeline::Error::from)?;
                    verifier::tuf_client::check_registry(client, &target, &trusted).map_err(ops)?
                }
                None => tuf::check(&repo, &trusted).map_err(ops)?,
            };
            if json {
                print_json(&serde_json::json!({"event": "result", "channels": channels}));
            } else {
                let lines: Vec<String> = channels
                    .iter()
                    .map(|c| {
                        format!(
                            "{} -> {} (sequence {}){}",
                            c.channel,
                            c.custom.get("version").and_then(|v| v.as_str()).unwrap_or("?"),
                            c.custom.get("sequence").map(|v| v.to_string()).unwrap_or_default(),
                            c.custom
                                .get("supportEnds")
                                .and_then(|v| v.as_str())
                                .map(|e| format!(", supported until {e}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                progress::out(&lines.join("\n"));
            }
            Ok(())
        }
    }
}
