//! `repro --against`: rebuild a published release from its tagged commit and prove (or
//! disprove) that what was published is what that source builds.
//!
//! 1. **Verify what was published** before trusting a byte of it, with the release's public
//!    key only: a release directory as `verify` does, a kit as `kit import` does (into a
//!    temporary layout), a registry release as `verify --registry` does (its signed
//!    release.yaml given beside it).
//! 2. **Find the commit**: the source commit every component's provenance names (they must
//!    agree; the images' revision labels name each component's own stamp, see
//!    [`Opened::revision`]); check it out from `--source`'s repository into a
//!    temporary clone (tags come along: the plan reads them).
//! 3. **Rebuild** it in a child process (`build`, signed with a throwaway key, no log, no
//!    publish; the `.deb` cache of `--source` unless `--cache`/`--deb-dir` is given, so it
//!    works offline).
//! 4. **Compare** what release.yaml states of each: every component's index and platform
//!    images, both SBOM encodings of each platform, the charts and the compose file. What
//!    differs by design is [`AGAINST_MASKED`]. An image that differs is explained as `repro`
//!    explains one (first differing file and header field of the first differing layer).
//! 5. **A verdict**: [`Verdict`], and the in-toto VSA statement ([`vsa_statement`]) that the
//!    command signs with the verifier's key, passed or failed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::repro::{Masked, ReproError};
use oci::cmd::{Cmd, CmdError};
use oci::distribution::RegistryTarget;
use oci::{Descriptor, Index, Layout, Manifest};
use schema::model::Digest;
use schema::release::ReleaseYaml;
use schema::report::Reporter;
use verifier::keys::{Fips, PublicKey};

/// What a rebuild cannot reproduce by design, compared with that part masked.
pub const AGAINST_MASKED: &[Masked] = &[
    Masked {
        what: "provenance (`provenance` of each component and platform)",
        files: "release.yaml `components[].provenance`, `components[].platforms[].provenance`",
        how: "not compared: it records the run that made it (builder, invocation, times); its subject is the image, which is compared",
    },
    Masked {
        what: "signatures and log entries (`signature.rekorUUID`, `checksums`)",
        files: "release.yaml `components[].signature`, `checksums`; the images' signature and attestation referrers",
        how: "not compared: the rebuild signs with a throwaway key and no log; the published ones are verified with the release key first",
    },
];

/// Where the published release is.
#[derive(Debug, Clone)]
pub enum Published {
    /// A release directory (`target/releases/<version>-<channel>`).
    Dir(PathBuf),
    /// An offline kit (`.tar.zst`).
    Kit(PathBuf),
    /// A registry namespace (`docker://HOST/NS`), with the directory holding the release's
    /// signed `release.yaml` (and `release.yaml.sig`).
    Registry { target: RegistryTarget, release: PathBuf, docker_config: Option<PathBuf> },
}

impl Published {
    /// The resource the verdict is about, as the user named it.
    pub fn uri(&self) -> String {
        match self {
            Published::Dir(d) => format!("file://{}", d.display()),
            Published::Kit(k) => format!("file://{}", k.display()),
            Published::Registry { target, .. } => format!("docker://{}/{}", target.host, target.namespace),
        }
    }
}

/// How to rebuild.
#[derive(Debug)]
pub struct AgainstOptions<'a> {
    pub published: Published,
    /// The published release's public key.
    pub key: &'a PublicKey,
    /// The transparency log's key, when the release has log entries.
    pub log: Option<&'a PublicKey>,
    /// The repository holding the tagged commit.
    pub source: PathBuf,
    /// This program (`cargo xtask`), run as the rebuild's child process.
    pub exe: PathBuf,
    /// `build` flags for the rebuild (`--cache`, `--deb-dir`, backend...).
    pub build_args: Vec<OsString>,
    /// Keep the rebuilt release directory (and the source checkout) here.
    pub keep: Option<PathBuf>,
}

/// One artifact compared.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    /// `authority linux/amd64 image`, `chart platform`...
    pub name: String,
    /// The published digest (`-` when the published release has none).
    pub published: String,
    /// The rebuilt digest (`-` when the rebuild has none).
    pub rebuilt: String,
    pub identical: bool,
    /// Where they first differ, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<String>,
}

/// The outcome of a rebuild.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub version: String,
    pub channel: String,
    pub commit: String,
    pub resource_uri: String,
    /// sha256 of the published (verified) release.yaml.
    pub release_yaml: Digest,
    pub compared: Vec<Compared>,
    pub masked: &'static [Masked],
    pub passed: bool,
    /// The rebuilt release directory, when kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<PathBuf>,
}

impl Verdict {
    pub fn differences(&self) -> impl Iterator<Item = &Compared> {
        self.compared.iter().filter(|c| !c.identical)
    }
}

/// Steps 1 to 4.
pub fn against(opts: &AgainstOptions<'_>, reporter: &dyn Reporter) -> Result<Verdict, ReproError> {
    let work = tempfile::Builder::new()
        .prefix("stellaops-rebuild-")
        .tempdir()
        .map_err(|source| ReproError::Io { path: std::env::temp_dir(), source })?;
    // 1.
    let published = open_published(opts, work.path(), reporter)?;
    let yaml = read(&published.release_dir.join("release.yaml"))?;
    let release_yaml = Digest::of(&yaml);
    let doc = verifier::manifest::parse(&yaml)
        .map_err(|e| ReproError::Against(format!("`{}`: {e}", published.release_dir.join("release.yaml").display())))?;
    // 2.
    let commit = published.revision(&doc)?;
    let checkout = work.path().join("source");
    check_out(&opts.source, &commit, &checkout)?;
    // 3.
    let out = work.path().join("rebuilt");
    rebuild(opts, &doc, &checkout, &out)?;
    let rebuilt_yaml = read(&out.join("release.yaml"))?;
    let rebuilt = verifier::manifest::parse(&rebuilt_yaml).map_err(|e| ReproError::Against(format!("the rebuild's release.yaml: {e}")))?;
    // 4.
    let mut compared = compare_stated(&doc, &rebuilt);
    let rebuilt_layout = Layout::open(&out.join("images"))?;
    for c in compared.iter_mut().filter(|c| !c.identical && c.name.ends_with(" image") && c.published != "-" && c.rebuilt != "-") {
        c.difference = published.explain(c, &rebuilt_layout, work.path()).unwrap_or_else(|e| Some(format!("(not explained: {e})")));
    }
    let passed = compared.iter().all(|c| c.identical);
    let kept = match &opts.keep {
        Some(keep) => {
            fs::create_dir_all(keep).map_err(|source| ReproError::Io { path: keep.clone(), source })?;
            let dest = keep.join("rebuilt");
            let _ = fs::remove_dir_all(&dest);
            fs::rename(&out, &dest).map_err(|source| ReproError::Io { path: dest.clone(), source })?;
            Some(dest)
        }
        None => None,
    };
    Ok(Verdict {
        version: doc.release.version.to_string(),
        channel: doc.release.channel.to_string(),
        commit,
        resource_uri: opts.published.uri(),
        release_yaml,
        compared,
        masked: AGAINST_MASKED,
        passed,
        kept,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, ReproError> {
    fs::read(path).map_err(|source| ReproError::Io { path: path.to_owned(), source })
}

/// The published release, verified.
struct Opened {
    /// Holds release.yaml (and the SBOM files, for a directory or a kit).
    release_dir: PathBuf,
    /// Its images, for a directory or a kit.
    layout: Option<Layout>,
    /// Its registry, for a registry release.
    registry: Option<(RegistryTarget, oci::distribution::Client)>,
}

fn failures(report: &verifier::release::VerifyReport) -> String {
    report.checks.iter().filter(|c| !c.ok).map(|c| format!("  - {}: {}", c.what, c.detail)).collect::<Vec<_>>().join("\n")
}

fn open_published(opts: &AgainstOptions<'_>, work: &Path, reporter: &dyn Reporter) -> Result<Opened, ReproError> {
    match &opts.published {
        Published::Dir(dir) => {
            let report = verifier::release::verify(dir, opts.key, opts.log, Fips::Off);
            if !report.ok() {
                return Err(ReproError::NotVerified { what: dir.display().to_string(), failures: failures(&report) });
            }
            Ok(Opened { release_dir: dir.clone(), layout: Some(Layout::open(&dir.join("images"))?), registry: None })
        }
        Published::Kit(kit) => {
            // The import verifies everything (signatures, log entries, every blob) before it
            // writes a byte into the layout.
            let into = work.join("kit");
            let report = verifier::kit::import(kit, &verifier::kit::Target::Dir(into.clone()), opts.key, opts.log, Fips::Off, reporter)
                .map_err(|e| ReproError::NotVerified { what: kit.display().to_string(), failures: format!("  - {e}") })?;
            // The kit keeps the signed manifest under `manifest/` of the release's files.
            let release_dir = into.join("stellaops").join(format!("{}-{}", report.version, report.channel)).join("manifest");
            Ok(Opened { release_dir, layout: Some(Layout::open(&into)?), registry: None })
        }
        Published::Registry { target, release, docker_config } => {
            let push = oci::push::PushOptions { docker_config: docker_config.clone(), ..Default::default() };
            let report = verifier::published::verify(release, opts.key, target, &push);
            if !report.ok() {
                return Err(ReproError::NotVerified {
                    what: format!("docker://{}/{} (release.yaml from `{}`)", target.host, target.namespace, release.display()),
                    failures: failures(&report),
                });
            }
            let client = oci::push::client_for(target, &push).map_err(|e| ReproError::Against(e.to_string()))?;
            Ok(Opened { release_dir: release.clone(), layout: None, registry: Some((target.clone(), client)) })
        }
    }
}

/// Small JSON documents (manifests, configs) read from a registry.
const SMALL: u64 = 4 << 20;
/// The largest layer fetched to explain a difference (held in memory while it is compared).
const EXPLAIN_LAYER_LIMIT: u64 = 256 << 20;

impl Opened {
    fn manifest_bytes(&self, repo_of: &str, digest: &Digest) -> Result<Vec<u8>, String> {
        match (&self.layout, &self.registry) {
            (Some(l), _) => l.read_blob(digest).map_err(|e| e.to_string()),
            (None, Some((t, c))) => c
                .get_manifest(&t.repository(repo_of), digest.as_str())
                .map_err(|e| e.to_string())?
                .map(|f| f.bytes)
                .ok_or_else(|| format!("`{}@{digest}` is not in the registry", t.repository(repo_of))),
            (None, None) => Err("no images".into()),
        }
    }

    fn blob(&self, repo_of: &str, digest: &Digest, limit: u64) -> Result<Vec<u8>, String> {
        match (&self.layout, &self.registry) {
            (Some(l), _) => l.read_blob(digest).map_err(|e| e.to_string()),
            (None, Some((t, c))) => c.get_blob(&t.repository(repo_of), digest, limit).map_err(|e| e.to_string()),
            (None, None) => Err("no images".into()),
        }
    }

    /// The commit the release was built from, as every component's provenance (verified in
    /// step 1) names its source: the `gitCommit` of `resolvedDependencies`. The images'
    /// revision labels are not enough: under `[release] image-epoch = "component"` each names
    /// the newest commit that changed its own component, not the released one.
    fn revision(&self, doc: &ReleaseYaml) -> Result<String, ReproError> {
        use base64::Engine as _;
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in &doc.components {
            let what = |e: String| ReproError::Against(format!("component `{}`: its provenance `{}`: {e}", c.name, c.provenance));
            let digest: Digest =
                c.provenance.rsplit_once('@').and_then(|(_, d)| d.parse().ok()).ok_or_else(|| what("not a reference by digest".into()))?;
            let envelope: serde_json::Value =
                serde_json::from_slice(&self.blob(&c.name, &digest, SMALL).map_err(what)?).map_err(|e| what(e.to_string()))?;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(envelope["payload"].as_str().unwrap_or_default())
                .map_err(|e| what(format!("its payload: {e}")))?;
            let statement: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| what(format!("its payload: {e}")))?;
            let rev = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|d| d["digest"]["gitCommit"].as_str())
                .unwrap_or_default()
                .to_owned();
            seen.entry(rev).or_default().push(c.name.clone());
        }
        match seen.len() {
            1 => {
                let (rev, _) = seen.into_iter().next().expect("one");
                if rev.len() < 40 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ReproError::Against(format!(
                        "the provenance names no source commit (`resolvedDependencies` has no `gitCommit`, or `{rev}`)\n  hint: only releases made by this pipeline from a git commit can be rebuilt"
                    )));
                }
                Ok(rev)
            }
            0 => Err(ReproError::Against("the release has no components".into())),
            _ => Err(ReproError::Against(format!(
                "the provenance names different source commits ({}): a release is built from one",
                seen.iter().map(|(r, cs)| format!("`{r}`: {}", cs.join(", "))).collect::<Vec<_>>().join("; ")
            ))),
        }
    }

    /// Explains why a published image differs from the rebuilt one: `repro`'s explanation
    /// of the two manifests (config path, first differing layer and tar header field).
    fn explain(&self, c: &Compared, rebuilt: &Layout, work: &Path) -> Result<Option<String>, ReproError> {
        let component = c.name.split(' ').next().unwrap_or_default().to_owned();
        let (published, ours): (Digest, Digest) = match (c.published.parse(), c.rebuilt.parse()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return Ok(None),
        };
        // Both sides as one-image layouts under one name, so `repro::compare` explains them.
        let pub_dir = work.join(format!("explain-published-{}", published.hex()));
        let ours_dir = work.join(format!("explain-rebuilt-{}", ours.hex()));
        let a = Layout::create(&pub_dir)?;
        let b = Layout::create(&ours_dir)?;
        let copy_into = |into: &Layout, get: &Fetch<'_>, d: &Digest| -> Result<(), ReproError> {
            let bytes = get(d, true).map_err(ReproError::Against)?;
            let media = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
                .unwrap_or_else(|| oci::MEDIA_MANIFEST.to_owned());
            if media == oci::MEDIA_INDEX {
                return Err(ReproError::Against("an index: its platform images are compared one by one".into()));
            }
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| ReproError::Against(format!("manifest `{d}`: {e}")))?;
            into.put_blob(&media, &bytes)?;
            into.put_blob(&m.config.media_type, &get(&m.config.digest, false).map_err(ReproError::Against)?)?;
            for l in &m.layers {
                into.put_blob(&l.media_type, &get(&l.digest, false).map_err(ReproError::Against)?)?;
            }
            let mut desc = Descriptor::new(&media, d.clone(), bytes.len() as u64);
            desc.annotations.insert(oci::ANNOTATION_REF_NAME.to_owned(), component.clone());
            into.write_index(&Index {
                schema_version: 2,
                media_type: Some(oci::MEDIA_INDEX.to_owned()),
                manifests: vec![desc],
                annotations: BTreeMap::new(),
            })?;
            Ok(())
        };
        let from_published = |d: &Digest, manifest: bool| {
            if manifest {
                self.manifest_bytes(&component, d)
            } else {
                self.blob(&component, d, EXPLAIN_LAYER_LIMIT)
            }
        };
        let from_rebuilt = |d: &Digest, _: bool| rebuilt.read_blob(d).map_err(|e| e.to_string());
        if let Err(e) = copy_into(&a, &from_published, &published).and_then(|()| copy_into(&b, &from_rebuilt, &ours)) {
            return match e {
                ReproError::Against(m) if m.starts_with("an index") => Ok(None),
                other => Err(other),
            };
        }
        let (mismatches, _, _) = crate::repro::compare(&a, &b)?;
        Ok(mismatches.first().map(|m| {
            let s = m.to_string();
            s.split_once(": ").map(|(_, rest)| rest.to_owned()).unwrap_or(s)
        }))
    }
}

/// Reads a blob by digest (`true`: a manifest) from one side of a comparison.
type Fetch<'a> = dyn Fn(&Digest, bool) -> Result<Vec<u8>, String> + 'a;

/// Clones `source` into `into` and checks out `commit` (detached), or says why not.
fn check_out(source: &Path, commit: &str, into: &Path) -> Result<(), ReproError> {
    let git = |what: &str| {
        let what = what.to_owned();
        move |e: git2::Error| ReproError::Git(format!("{what}: {}", e.message()))
    };
    let url = format!("file://{}", source.canonicalize().map_err(|e| ReproError::Io { path: source.to_owned(), source: e })?.display());
    let repo = git2::build::RepoBuilder::new().clone(&url, into).map_err(git(&format!("cloning `{}`", source.display())))?;
    let oid = git2::Oid::from_str(commit).map_err(git(&format!("`{commit}`")))?;
    let object = repo.find_object(oid, None).map_err(|_| {
        ReproError::Against(format!(
            "commit `{commit}` (the provenance's source) is not in the repository `{}`\n  hint: fetch the release's tag into it (`git fetch --tags`), or pass `--source` a clone that has it",
            source.display()
        ))
    })?;
    repo.checkout_tree(&object, Some(git2::build::CheckoutBuilder::new().force())).map_err(git("checking out"))?;
    repo.set_head_detached(oid).map_err(git("checking out"))?;
    Ok(())
}

fn rebuild(opts: &AgainstOptions<'_>, doc: &ReleaseYaml, checkout: &Path, out: &Path) -> Result<(), ReproError> {
    let key = crate::repro::throwaway_key(&out.with_file_name("keys"))?;
    let cmd = Cmd::new(&opts.exe, format!("rebuild {} of `{}` from its commit", doc.release.version, doc.release.channel))
        .args(["--quiet", "build", "--channel", doc.release.channel.as_str(), "--source"])
        .arg(checkout)
        .arg("--key")
        .arg(&key)
        .arg("--out")
        .arg(out)
        .args(&opts.build_args)
        .env(verifier::keys::PASSPHRASE_ENV, "")
        .env_remove("STELLAOPS_SIGNING_KEY")
        .env_remove("STELLAOPS_REKOR_URL");
    let command = cmd.command_line();
    let output = cmd.output().map_err(|e| match e {
        CmdError::Start { source, .. } => ReproError::Io { path: opts.exe.clone(), source },
        other => ReproError::Io { path: opts.exe.clone(), source: std::io::Error::other(other.to_string()) },
    })?;
    if !output.success() {
        return Err(ReproError::BuildFailed {
            run: 1,
            conditions: "rebuild from the release's commit".into(),
            code: output.code.unwrap_or(schema::exit::ENVIRONMENT.status()),
            stderr: format!("`{command}`\n{}", String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(())
}

/// Every artifact release.yaml states, published against rebuilt, by name.
pub fn compare_stated(published: &ReleaseYaml, rebuilt: &ReleaseYaml) -> Vec<Compared> {
    fn stated(doc: &ReleaseYaml) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert("release version".to_owned(), format!("{} {} {}", doc.release.version, doc.release.channel, doc.release.calendar));
        for c in &doc.components {
            out.insert(format!("{} index image", c.name), c.image.digest.to_string());
            out.insert(format!("{} sbom", c.name), digest_of(&c.sbom));
            for p in &c.platforms {
                out.insert(format!("{} {} image", c.name, p.platform), p.image.digest.to_string());
                out.insert(format!("{} {} sbom (CycloneDX JSON)", c.name, p.platform), digest_of(&p.sbom));
                out.insert(format!("{} {} sbom (CycloneDX protobuf)", c.name, p.platform), digest_of(&p.sbom_protobuf));
            }
        }
        for ch in &doc.charts {
            out.insert(format!("chart {}", ch.name), format!("{} ({})", ch.digest, ch.version));
        }
        out.insert("compose file".to_owned(), doc.compose.digest.as_ref().map(|d| d.to_string()).unwrap_or_else(|| "-".into()));
        out
    }
    fn digest_of(reference: &str) -> String {
        schema::release::stated_digest(reference).map(|d| d.to_string()).unwrap_or_else(|_| reference.to_owned())
    }
    let (a, b) = (stated(published), stated(rebuilt));
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .map(|n| {
            let (x, y) = (a.get(n).cloned().unwrap_or_else(|| "-".into()), b.get(n).cloned().unwrap_or_else(|| "-".into()));
            Compared { name: n.clone(), identical: x == y, published: x, rebuilt: y, difference: None }
        })
        .collect()
}

/// The verdict as an in-toto Statement v1 with the SLSA VSA v1 predicate (see
/// [`verifier::vsa`] for its shape and what a checker requires of it).
pub fn vsa_statement(v: &Verdict, verifier_id: &str, time_verified: &str) -> Vec<u8> {
    let mut subject = vec![serde_json::json!({
        "name": verifier::vsa::RELEASE_SUBJECT,
        "digest": { "sha256": v.release_yaml.hex() },
        "annotations": { "version": v.version, "channel": v.channel, "commit": v.commit },
    })];
    for c in &v.compared {
        let mut annotations = serde_json::json!({
            "result": if c.identical { "identical" } else { "differs" },
            "published": c.published,
            "rebuilt": c.rebuilt,
        });
        if let Some(d) = &c.difference {
            annotations["difference"] = d.clone().into();
        }
        let mut s = serde_json::json!({ "name": c.name, "annotations": annotations });
        // A subject names its artifact by digest; the version line is the only one without.
        match c.published.split_whitespace().next().and_then(|d| d.parse::<Digest>().ok()) {
            Some(d) => s["digest"] = serde_json::json!({ "sha256": d.hex() }),
            None => s["digest"] = serde_json::json!({ "sha256": Digest::of(c.published.as_bytes()).hex() }),
        }
        subject.push(s);
    }
    let policy = serde_json::to_vec(&serde_json::json!({
        "compared": "every image (index and platform), SBOM (CycloneDX JSON and protobuf), chart and compose file release.yaml states, by digest",
        "masked": v.masked,
    }))
    .unwrap_or_default();
    let predicate = serde_json::json!({
        "verifier": { "id": verifier_id },
        "timeVerified": time_verified,
        "resourceUri": v.resource_uri,
        "policy": { "uri": verifier::vsa::REBUILD_POLICY, "digest": { "sha256": Digest::of(&policy).hex() } },
        "inputAttestations": [{ "uri": "release.yaml", "digest": { "sha256": v.release_yaml.hex() } }],
        "verificationResult": if v.passed { "PASSED" } else { "FAILED" },
        "verifiedLevels": if v.passed { vec!["SLSA_BUILD_LEVEL_1", "STELLAOPS_REBUILT_IDENTICAL"] } else { Vec::new() },
        "slsaVersion": "1.0",
    });
    let mut out = serde_json::to_vec(&serde_json::json!({
        "_type": schema::intoto::STATEMENT_TYPE,
        "subject": subject,
        "predicateType": verifier::vsa::PREDICATE,
        "predicate": predicate,
    }))
    .expect("a statement serializes");
    out.push(b'\n');
    out
}
