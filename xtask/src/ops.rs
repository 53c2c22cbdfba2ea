//! The release-operations commands: `promote`, `history`, `rollback`, `verify-pointer`,
//! `preflight`. Flags and rendering only; the work is in `verifier::ops`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use pipeline::channels::{self, ReleaseRef, Store};
use schema::model::{Channel, Version};
use verifier::keys::{PublicKey, Secret, SigningKey};
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
    Promote {
        /// A release directory, or a version kept by a channel that promotes to `--to`.
        release: String,
        #[arg(long, value_enum)]
        to: ChannelArg,
        /// Put the release on `--to` without its time on the source channel, for a fix that
        /// cannot wait; the reason is recorded in the signed pointer and shown by `history`.
        #[arg(long, value_name = "REASON")]
        emergency: Option<String>,
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
    /// it signed.
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
    /// Check a channel pointer as a client does: its signature with the pinned key, its
    /// expiry, and its sequence against the last one accepted (kept in a state file). Refuses a
    /// replayed (lower) sequence, an expired pointer, and a move back without the `rollback`
    /// marker; a signed rollback is accepted and reported as one. Records the pointer on success.
    VerifyPointer {
        /// The pointer (`<channels>/<channel>/pointer.json`).
        pointer: PathBuf,
        /// The release public key (SPKI PEM), obtained out of band.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
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

#[derive(Debug, clap::Args)]
pub struct KeyArg {
    /// The release signing key (passphrase in STELLAOPS_KEY_PASSPHRASE; default: the
    /// development key target/keys/dev.key).
    #[arg(long, value_name = "FILE", env = "STELLAOPS_SIGNING_KEY")]
    key: Option<PathBuf>,
}

impl KeyArg {
    fn load(&self, root: &Path) -> Result<SigningKey, Failure> {
        let path = self.key.clone().unwrap_or_else(|| pipeline::release::dev_key_path(root));
        Ok(SigningKey::load(&path, &Secret::from_env()).map_err(pipeline::Error::from)?)
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
}

pub fn run(cmd: OpsCommand) -> Result<(), Failure> {
    match cmd {
        OpsCommand::Promote { release, to, emergency, store, key, clock, json } => {
            let (root, store) = store_of(&store)?;
            let key = key.load(&root)?;
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
                key: &key,
                now: clock.clock().now(),
                emergency,
            };
            let done = channels::promote(&req).map_err(ops)?;
            if json {
                print_json(&serde_json::json!({"event": "result", "promoted": done}));
            } else {
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
            let req = channels::Rollback { root: &root, store: &store, channel, to, key: &key, now: clock.clock().now(), out: &out };
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
            let public = PublicKey::load(&key).map_err(pipeline::Error::from)?;
            let state_path = state.unwrap_or_else(default_state);
            let mut st = pointer::load_state(&state_path).map_err(ops)?;
            let env = pointer::read_envelope(&path).map_err(ops)?;
            let mut checked = pointer::check(&env, &public, &mut st, clock.clock().now(), channel.map(Channel::from));
            if let (Some(dir), Some(p)) = (&release, &checked.pointer) {
                match verifier::ops::SignedRelease::open(dir, &public) {
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
                preflight::run(&preflight::Preflight { root: &root, from: &from, to: &to, key: &public, backup_age }).map_err(ops)?;
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

fn default_state() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("stellaops/pointer-state.json")
}
