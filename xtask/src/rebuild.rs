//! `cargo xtask repro --against`: flags to [`pipeline::rebuild`], the verdict signed as a VSA.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pipeline::rebuild::{self, AgainstOptions, Published};
use schema::exit::Code;

use crate::progress::{self, Progress};
use crate::{mode_of, print_json, BuildFlags, Failure};

pub(crate) struct Request {
    pub against: String,
    pub release_key: Option<PathBuf>,
    pub release: Option<PathBuf>,
    pub rekor_key: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub vsa: Option<PathBuf>,
    pub verifier_id: Option<String>,
    pub keep: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

fn refused(message: impl Into<String>) -> Failure {
    Failure { code: Code::Rejected, message: message.into() }
}

pub(crate) fn run(root: &Path, build: &BuildFlags, r: Request) -> Result<(), Failure> {
    // The verdict is signed: by a key the verifier names (never the development key: a VSA
    // is a second party's word).
    let Some(key_arg) = &build.key else {
        return Err(refused(
            "`repro --against` signs its verdict (a VSA) with the verifier's own key, and none was given\n  hint: `--key FILE|pkcs11:URI` (or STELLAOPS_SIGNING_KEY); `cargo xtask keys generate` makes one",
        ));
    };
    let key_ref = pipeline::signer::KeyRef::from_arg(key_arg).map_err(pipeline::Error::from)?;
    let signer = pipeline::signer::load(&key_ref).map_err(pipeline::Error::from)?;
    let release_key = r.release_key.as_deref().expect("clap requires --release-key with --against");
    let public = verifier::keys::PublicKey::load(release_key).map_err(pipeline::Error::from)?;
    let log = r.rekor_key.as_deref().map(verifier::keys::PublicKey::load).transpose().map_err(pipeline::Error::from)?;
    let published = if let Some(rest) = r.against.strip_prefix("docker://") {
        let target: oci::distribution::RegistryTarget = rest.parse().map_err(|e| refused(format!("`--against {}`: {e}", r.against)))?;
        let Some(release) = r.release.clone() else {
            return Err(refused(format!(
                "`--against {}`: the registry holds the images, not the signed release.yaml\n  hint: `--release DIR` names the directory holding `release.yaml` and `release.yaml.sig`",
                r.against
            )));
        };
        Published::Registry { target, release, docker_config: r.docker_config.clone() }
    } else {
        let p = PathBuf::from(&r.against);
        if p.is_dir() {
            Published::Dir(p)
        } else if p.is_file() {
            Published::Kit(p)
        } else {
            return Err(refused(format!(
                "`--against {}`: no such release directory or kit\n  hint: a release directory (target/releases/<version>-<channel>), a kit (.tar.zst), or docker://HOST/NAMESPACE",
                r.against
            )));
        }
    };
    let exe =
        std::env::current_exe().map_err(|e| Failure { code: Code::Environment, message: format!("cannot find this program: {e}") })?;
    // The rebuild reads the pinned packages from this repository's cache (offline), unless
    // told otherwise.
    let mut build_args: Vec<OsString> = Vec::new();
    if let Some(d) = &build.deb_dir {
        build_args.extend(["--deb-dir".into(), d.into()]);
    }
    if let Some(m) = &build.apt_mirror {
        build_args.extend(["--apt-mirror".into(), m.into()]);
    }
    let cache = build.cache.clone().unwrap_or_else(|| pipeline::release::default_cache(root));
    build_args.extend(["--cache".into(), cache.into()]);
    build_args.extend(build.backend_args());
    let opts =
        AgainstOptions { published, key: &public, log: log.as_ref(), source: root.to_owned(), exe, build_args, keep: r.keep.clone() };
    if !r.quiet && !r.json {
        progress::eprint(&format!("repro: verifying {}, then rebuilding it from its commit...", opts.published.uri()));
    }
    let reporter = Progress::new(mode_of(r.json, r.quiet));
    let verdict = rebuild::against(&opts, &reporter);
    reporter.finish();
    let verdict = verdict.map_err(pipeline::Error::from)?;

    let verifier_id = r.verifier_id.clone().unwrap_or_else(|| format!("https://stella-ops.org/rebuilder#{}", signer.public().key_id()));
    // The one wall-clock read of a rebuild: when the verdict was reached.
    let now =
        schema::model::rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0));
    let statement = rebuild::vsa_statement(&verdict, &verifier_id, &now);
    let envelope =
        verifier::sign::sign_envelope(signer.as_ref(), verifier::sign::PAYLOAD_TYPE, &statement).map_err(pipeline::Error::from)?;
    let vsa_path =
        r.vsa.clone().unwrap_or_else(|| root.join("target/vsa").join(format!("{}-{}.vsa.json", verdict.version, verdict.channel)));
    if let Some(parent) = vsa_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Failure { code: Code::Environment, message: format!("`{}`: {e}", parent.display()) })?;
    }
    let mut bytes = serde_json::to_vec_pretty(&envelope).expect("an envelope serializes");
    bytes.push(b'\n');
    oci::layout::write_atomic(&vsa_path, &bytes)
        .map_err(|e| Failure { code: Code::Environment, message: format!("`{}`: {e}", vsa_path.display()) })?;

    if r.json {
        print_json(&serde_json::json!({"event": "result", "reproducible": verdict.passed, "verdict": verdict, "vsa": vsa_path}));
    } else {
        let mut s = format!(
            "{} {} {} (commit {}) rebuilt: {} of {} artifacts identical\n",
            if verdict.passed { "identical:" } else { "DIFFERS:" },
            verdict.version,
            verdict.channel,
            verdict.commit,
            verdict.compared.iter().filter(|c| c.identical).count(),
            verdict.compared.len()
        );
        for c in verdict.differences() {
            s += &format!("  - {}: published `{}`, rebuilt `{}`", c.name, c.published, c.rebuilt);
            if let Some(d) = &c.difference {
                s += &format!("\n      first difference: {d}");
            }
            s.push('\n');
        }
        for m in verdict.masked {
            s += &format!("  by design: {}: {}\n", m.what, m.how);
        }
        s += &format!("verdict (SLSA VSA, signed by `{}`): {}", signer.public().key_id(), vsa_path.display());
        progress::out(&s);
    }
    if verdict.passed {
        Ok(())
    } else {
        let names: Vec<&str> = verdict.differences().map(|c| c.name.as_str()).collect();
        Err(refused(format!("the published release differs from its rebuild: {}", names.join(", "))))
    }
}
