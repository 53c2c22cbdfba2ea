//! Reproducibility: make the whole release twice under different conditions (evidence,
//! signatures with one throwaway key, release.yaml, chart, compose file, kit; no gates, no
//! log, no publish) and compare every file of the two release directories: the images index
//! by index, manifest, config and layer; everything else byte for byte. On a mismatch, say
//! where: component, platform, layer, and the first differing file and header field (mtime,
//! mode, owner, content...), or the JSON path of the first differing value, or the first
//! differing entry of the kit. What may differ by design is [`MASKED`], and only that.
//!
//! The two builds run as separate processes (umask is per process), at the same time, each
//! with its own temporary directory, TZ, locale, umask and thread count.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use oci::cmd::{Cmd, CmdError};
use oci::{self, Descriptor, Index, Layout, LayoutError, Manifest};
use schema::model::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ReproError {
    #[error("the two builds differ ({} difference{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Mismatch(Vec<Mismatch>),
    #[error("the two release directories differ ({} file{}):\n{}{}\n  hint: `--keep DIR` keeps both trees (diffoscope DIR/build-1 DIR/build-2)", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"), if .1.is_empty() { String::new() } else { format!("\nand in images/:\n{}", .1.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n")) })]
    Files(Vec<FileMismatch>, Vec<Mismatch>),
    #[error("build {run} ({conditions}) failed with exit code {code}:\n{stderr}")]
    BuildFailed { run: usize, conditions: String, code: i32, stderr: String },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// `--against`: the published release does not verify with the given key.
    #[error(
        "`{what}` does not verify, so it is not rebuilt:\n{failures}\n  hint: check `--release-key` (the release's public key) and `--rekor-key`"
    )]
    NotVerified { what: String, failures: String },
    /// `--against`: the published release cannot be rebuilt as given.
    #[error("{0}")]
    Against(String),
    #[error("git: {0}")]
    Git(String),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ReproError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            ReproError::Mismatch(_) | ReproError::Files(..) | ReproError::NotVerified { .. } | ReproError::Against(_) => {
                schema::exit::REJECTED
            }
            ReproError::Git(_) => schema::exit::ENVIRONMENT,
            ReproError::BuildFailed { code, .. } => schema::exit::Code::from_status(*code),
            ReproError::Layout(_) | ReproError::Io { .. } => schema::exit::ENVIRONMENT,
        }
    }
}

/// Writes an unencrypted ECDSA P-256 key pair `throwaway.key`/`.pub` into `dir` (made if
/// absent): what the builds of `repro` and `repro --against` sign with. Returns the key's path.
pub fn throwaway_key(dir: &Path) -> Result<PathBuf, ReproError> {
    fs::create_dir_all(dir).map_err(|source| ReproError::Io { path: dir.to_owned(), source })?;
    let key = dir.join("throwaway.key");
    verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256)
        .write(&key, &key.with_extension("pub"), &verifier::keys::Secret::new(String::new()))
        .map_err(|e| ReproError::Io { path: key.clone(), source: io::Error::other(e.to_string()) })?;
    Ok(key)
}

/// Set in the environment of `repro`'s two builds, and only there (see [`MASKED`]).
pub const PINNED_RUN_ENV: &str = "STELLAOPS_REPRO_BUILD";
/// The provenance `invocationId` of a `repro` build: says what it is wherever it ends up.
pub const PINNED_INVOCATION: &str = "stellaops-repro-check";

/// What differs between two builds of one source by design, and how `repro` compares it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Masked {
    pub what: &'static str,
    pub files: &'static str,
    pub how: &'static str,
}

/// The one place that lists what may differ by design.
pub const MASKED: &[Masked] = &[Masked {
    what: "provenance run details (`runDetails.metadata`: invocationId, startedOn, finishedOn)",
    files: "provenance/*/*.intoto.json and their envelopes, and what names their digests (release.yaml, its signatures, the referrers in images/, the kit)",
    how: "pinned in both builds (invocationId `stellaops-repro-check`, both times = SOURCE_DATE_EPOCH), then compared byte for byte like the rest",
}];

/// A file of the release directory (outside `images/`) that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMismatch {
    /// Path relative to the release directory.
    pub file: String,
    /// Where inside: a JSON path, a kit entry and header field, or a byte offset.
    pub at: String,
    pub a: String,
    pub b: String,
}

impl fmt::Display for FileMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` at {}: `{}` vs `{}`", self.file, self.at, self.a, self.b)
    }
}

/// One difference between the two builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The ref name in the layout (`authority`, `authority-linux-amd64`).
    pub image: String,
    pub component: String,
    pub platform: Option<String>,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum What {
    /// The image is in one layout only.
    Missing { in_first: bool },
    /// A layer differs: `file` and `field` name the first difference inside it.
    Layer { index: usize, first: Digest, second: Digest, file: String, field: String, a: String, b: String },
    /// The config differs at `path`.
    Config { path: String, a: String, b: String },
    /// The manifest differs outside config and layers (annotations, media type...).
    Manifest { path: String, a: String, b: String },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let platform = self.platform.as_deref().map(|p| format!(" {p}")).unwrap_or_default();
        write!(f, "component `{}`{platform}: ", self.component)?;
        match &self.what {
            What::Missing { in_first } => write!(f, "only in the {} build", if *in_first { "first" } else { "second" }),
            What::Layer { index, first, second, file, field, a, b } => {
                write!(f, "layer {index} ({first} vs {second}): first difference at file `{file}`, {field}: `{a}` vs `{b}`")
            }
            What::Config { path, a, b } => write!(f, "config at `{path}`: `{a}` vs `{b}`"),
            What::Manifest { path, a, b } => write!(f, "manifest at `{path}`: `{a}` vs `{b}`"),
        }
    }
}

/// Conditions of one build.
#[derive(Debug, Clone, Serialize)]
pub struct Conditions {
    pub tz: String,
    pub lang: String,
    pub umask: String,
    pub jobs: usize,
}

impl fmt::Display for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TZ={} LANG={} umask {} {} thread{}", self.tz, self.lang, self.umask, self.jobs, if self.jobs == 1 { "" } else { "s" })
    }
}

/// The two sets of conditions `repro` uses.
pub fn variations() -> [Conditions; 2] {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    [
        Conditions { tz: "UTC".into(), lang: "C.UTF-8".into(), umask: "0022".into(), jobs: 1 },
        Conditions { tz: "Pacific/Kiritimati".into(), lang: "fr_FR.UTF-8".into(), umask: "0077".into(), jobs: (cores * 2).max(3) },
    ]
}

/// What `repro` found.
#[derive(Debug, Clone, Serialize)]
pub struct ReproReport {
    pub conditions: [Conditions; 2],
    pub images: usize,
    pub blobs_compared: usize,
    /// Files of the release directory outside `images/`, compared byte for byte.
    pub files_compared: usize,
    /// Ref name -> digest, identical in both builds.
    pub digests: BTreeMap<String, Digest>,
    /// What differs by design and how it was compared.
    pub masked: &'static [Masked],
}

/// Runs `exe args... --out <dir> --jobs <n>` twice under [`variations`], then compares.
/// `exe` is the `cargo xtask` binary and `args` its `build` subcommand with options.
pub fn run(exe: &Path, args: &[OsString], keep: Option<&Path>) -> Result<ReproReport, ReproError> {
    let conditions = variations();
    let mut outs = Vec::new();
    let mut temps = Vec::new();
    let mut cmds = Vec::new();
    for (i, cond) in conditions.iter().enumerate() {
        // Different parent directories, and different depths, for the two outputs.
        let tmp = tempfile::Builder::new()
            .prefix(&format!("stellaops-repro-{}-", i + 1))
            .tempdir()
            .map_err(|source| ReproError::Io { path: std::env::temp_dir(), source })?;
        let out = if i == 0 { tmp.path().join("out") } else { tmp.path().join("a/deeper/place/out") };
        let tmpdir = tmp.path().join("tmp");
        fs::create_dir_all(&tmpdir).map_err(|source| ReproError::Io { path: tmpdir.clone(), source })?;
        let cmd = Cmd::new("sh", format!("build {} of `repro` ({cond})", i + 1))
            .arg("-c")
            .arg(format!("umask {} && exec \"$0\" \"$@\"", cond.umask))
            .arg(exe)
            .args(args)
            .arg("--out")
            .arg(&out)
            .arg("--jobs")
            .arg(cond.jobs.to_string())
            .env("TZ", &cond.tz)
            .env("LANG", &cond.lang)
            .env("LC_ALL", &cond.lang)
            .env("TMPDIR", &tmpdir)
            .env("RAYON_NUM_THREADS", cond.jobs.to_string())
            .env(PINNED_RUN_ENV, "1")
            // The throwaway key `repro` passes is not encrypted.
            .env(verifier::keys::PASSPHRASE_ENV, "")
            // A reproducibility check records nothing in a transparency log.
            .env_remove("STELLAOPS_REKOR_URL");
        cmds.push(cmd);
        outs.push(out);
        temps.push(tmp);
    }
    // The two builds run at once: the first is single-threaded by design, so alone it would
    // leave the other cores idle; together they take about as long as the slower one.
    let results: Vec<_> = std::thread::scope(|scope| {
        let running: Vec<_> = cmds.into_iter().map(|cmd| scope.spawn(move || (cmd.command_line(), cmd.output()))).collect();
        running.into_iter().map(|h| h.join().expect("a build's waiting thread does not panic")).collect()
    });
    for (i, ((command, output), cond)) in results.into_iter().zip(&conditions).enumerate() {
        let output = output.map_err(|e| match e {
            CmdError::Start { source, .. } => ReproError::Io { path: exe.to_owned(), source },
            // No time bound is set, so nothing else can come from `output`.
            other => ReproError::Io { path: exe.to_owned(), source: io::Error::other(other.to_string()) },
        })?;
        if !output.success() {
            return Err(ReproError::BuildFailed {
                run: i + 1,
                conditions: cond.to_string(),
                code: output.code.unwrap_or(schema::exit::ENVIRONMENT.status()),
                stderr: format!("`{command}`\n{}", String::from_utf8_lossy(&output.stderr)),
            });
        }
    }
    let a = Layout::open(&outs[0].join("images"))?;
    let b = Layout::open(&outs[1].join("images"))?;
    let result = compare(&a, &b);
    let files = compare_trees(&outs[0], &outs[1]);
    if let Some(keep) = keep {
        for (i, out) in outs.iter().enumerate() {
            let dest = keep.join(format!("build-{}", i + 1));
            let _ = fs::remove_dir_all(&dest);
            fs::create_dir_all(keep).map_err(|source| ReproError::Io { path: keep.to_owned(), source })?;
            fs::rename(out, &dest).map_err(|source| ReproError::Io { path: dest.clone(), source })?;
        }
    }
    let (mismatches, digests, blobs) = result?;
    let (file_mismatches, files_compared) = files?;
    // A file that differs (an SBOM, release.yaml) is where to look first; the images it is
    // attached to as a referrer differ because of it.
    if !file_mismatches.is_empty() {
        return Err(ReproError::Files(file_mismatches, mismatches));
    }
    if !mismatches.is_empty() {
        return Err(ReproError::Mismatch(mismatches));
    }
    Ok(ReproReport { conditions, images: digests.len(), blobs_compared: blobs, files_compared, digests, masked: MASKED })
}

/// Every file of two release directories outside `images/` (which [`compare`] explains),
/// byte for byte; each that differs is explained.
pub fn compare_trees(a: &Path, b: &Path) -> Result<(Vec<FileMismatch>, usize), ReproError> {
    let list = |root: &Path| -> Result<std::collections::BTreeSet<String>, ReproError> {
        let mut out = std::collections::BTreeSet::new();
        for e in walkdir::WalkDir::new(root).into_iter().filter_entry(|e| e.depth() != 1 || e.file_name() != "images") {
            let e = e.map_err(|e| ReproError::Io { path: root.to_owned(), source: e.into() })?;
            if !e.file_type().is_dir() {
                out.insert(e.path().strip_prefix(root).unwrap_or(e.path()).to_string_lossy().into_owned());
            }
        }
        Ok(out)
    };
    let (la, lb) = (list(a)?, list(b)?);
    let mut out = Vec::new();
    let mut compared = 0;
    for rel in la.union(&lb) {
        let (pa, pb) = (a.join(rel), b.join(rel));
        match (la.contains(rel), lb.contains(rel)) {
            (true, false) | (false, true) => {
                let first = la.contains(rel);
                out.push(FileMismatch {
                    file: rel.clone(),
                    at: "presence".into(),
                    a: if first { "present" } else { "absent" }.into(),
                    b: if first { "absent" } else { "present" }.into(),
                });
                continue;
            }
            _ => {}
        }
        compared += 1;
        let hash = |p: &Path| -> Result<Digest, ReproError> {
            let mut f = fs::File::open(p).map_err(|source| ReproError::Io { path: p.to_owned(), source })?;
            content_digest(&mut f).map_err(|source| ReproError::Io { path: p.to_owned(), source })
        };
        if hash(&pa)? == hash(&pb)? {
            continue;
        }
        out.push(explain(rel, &pa, &pb)?);
    }
    Ok((out, compared))
}

/// Where two versions of one release file first differ.
fn explain(rel: &str, a: &Path, b: &Path) -> Result<FileMismatch, ReproError> {
    let mk = |at: String, x: String, y: String| FileMismatch { file: rel.to_owned(), at, a: x, b: y };
    if rel.ends_with(".tar.zst") {
        let (entry, field, x, y) = first_zstd_tar_difference(a, b)?;
        return Ok(mk(format!("entry `{entry}`, {field}"), x, y));
    }
    let read = |p: &Path| fs::read(p).map_err(|source| ReproError::Io { path: p.to_owned(), source });
    let (xa, xb) = (read(a)?, read(b)?);
    if rel.ends_with(".json") {
        if let (Ok(ja), Ok(jb)) = (serde_json::from_slice::<serde_json::Value>(&xa), serde_json::from_slice::<serde_json::Value>(&xb)) {
            if let Some((path, x, y)) = first_json_difference(&ja, &jb, "$".into()) {
                return Ok(mk(format!("JSON path `{path}`"), x, y));
            }
        }
    }
    if rel.ends_with(".yaml") || rel.ends_with(".yml") {
        if let (Ok(ja), Ok(jb)) = (serde_norway::from_slice::<serde_json::Value>(&xa), serde_norway::from_slice::<serde_json::Value>(&xb)) {
            if let Some((path, x, y)) = first_json_difference(&ja, &jb, "$".into()) {
                return Ok(mk(format!("YAML path `{path}`"), x, y));
            }
        }
    }
    let at = xa.iter().zip(&xb).position(|(x, y)| x != y).unwrap_or(xa.len().min(xb.len()));
    let around = |v: &[u8]| String::from_utf8_lossy(&v[at.min(v.len())..(at + 32).min(v.len())]).into_owned();
    Ok(mk(format!("byte {at}"), around(&xa), around(&xb)))
}

type Compared = (Vec<Mismatch>, BTreeMap<String, Digest>, usize);

/// Compares two layouts image by image (by ref name).
pub fn compare(a: &Layout, b: &Layout) -> Result<Compared, ReproError> {
    let named = |l: &Layout| -> Result<BTreeMap<String, Descriptor>, ReproError> {
        Ok(l.index()?.manifests.into_iter().filter_map(|d| d.annotations.get(oci::ANNOTATION_REF_NAME).cloned().map(|n| (n, d))).collect())
    };
    let (ia, ib) = (named(a)?, named(b)?);
    let mut out = Vec::new();
    let mut digests = BTreeMap::new();
    let mut blobs = 0;
    for (name, da) in &ia {
        let component = name.split("-linux-").next().unwrap_or(name).to_owned();
        let Some(db) = ib.get(name) else {
            // A signature is named after the digest it signs: when that image differs, the
            // image's own mismatch says why, and its signature is naturally elsewhere.
            if !name.ends_with(".sig") {
                out.push(Mismatch { image: name.clone(), component, platform: None, what: What::Missing { in_first: true } });
            }
            continue;
        };
        blobs += 1;
        if da.digest == db.digest {
            digests.insert(name.clone(), da.digest.clone());
            continue;
        }
        // An index differs because a manifest does: the manifests are compared under their
        // own ref names, so only plain manifests are explained here.
        if da.media_type == oci::MEDIA_INDEX {
            let xa: Index = a.read_json(&da.digest, "an image index")?;
            let xb: Index = b.read_json(&db.digest, "an image index")?;
            let same_children = xa.manifests.iter().map(|m| &m.digest).eq(xb.manifests.iter().map(|m| &m.digest));
            if same_children {
                out.push(json_mismatch(name, &component, None, &xa, &xb, true));
            }
            continue;
        }
        let platform = da.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture));
        let ma: Manifest = a.read_json(&da.digest, "an image manifest")?;
        let mb: Manifest = b.read_json(&db.digest, "an image manifest")?;
        if ma.config.digest != mb.config.digest {
            blobs += 1;
            let mut ca: serde_json::Value = a.read_json(&ma.config.digest, "an image config")?;
            let mut cb: serde_json::Value = b.read_json(&mb.config.digest, "an image config")?;
            // diff_ids follow the layers, which are explained below, one by one.
            for c in [&mut ca, &mut cb] {
                if let Some(r) = c.get_mut("rootfs") {
                    r["diff_ids"] = serde_json::Value::Null;
                }
            }
            if let Some((path, x, y)) = first_json_difference(&ca, &cb, "$".into()) {
                out.push(Mismatch {
                    image: name.clone(),
                    component: component.clone(),
                    platform: platform.clone(),
                    what: What::Config { path, a: x, b: y },
                });
            }
        }
        for (i, (la, lb)) in ma.layers.iter().zip(&mb.layers).enumerate() {
            blobs += 1;
            if la.digest != lb.digest {
                let (file, field, x, y) = first_tar_difference(&a.blob_path(&la.digest), &b.blob_path(&lb.digest))?;
                out.push(Mismatch {
                    image: name.clone(),
                    component: component.clone(),
                    platform: platform.clone(),
                    what: What::Layer { index: i, first: la.digest.clone(), second: lb.digest.clone(), file, field, a: x, b: y },
                });
            }
        }
        let layers_same = ma.layers.len() == mb.layers.len() && ma.layers.iter().zip(&mb.layers).all(|(x, y)| x.digest == y.digest);
        if ma.config.digest == mb.config.digest && layers_same {
            out.push(json_mismatch(name, &component, platform, &ma, &mb, false));
        } else if ma.layers.len() != mb.layers.len() {
            out.push(Mismatch {
                image: name.clone(),
                component,
                platform,
                what: What::Manifest {
                    path: "$.layers".into(),
                    a: format!("{} layers", ma.layers.len()),
                    b: format!("{} layers", mb.layers.len()),
                },
            });
        }
    }
    for name in ib.keys().filter(|n| !ia.contains_key(*n) && !n.ends_with(".sig")) {
        let component = name.split("-linux-").next().unwrap_or(name).to_owned();
        out.push(Mismatch { image: name.clone(), component, platform: None, what: What::Missing { in_first: false } });
    }
    Ok((out, digests, blobs))
}

fn json_mismatch<T: Serialize>(name: &str, component: &str, platform: Option<String>, a: &T, b: &T, _index: bool) -> Mismatch {
    let va = serde_json::to_value(a).unwrap_or_default();
    let vb = serde_json::to_value(b).unwrap_or_default();
    let (path, x, y) =
        first_json_difference(&va, &vb, "$".into()).unwrap_or_else(|| ("$".into(), "(same value, other bytes)".into(), String::new()));
    Mismatch { image: name.to_owned(), component: component.to_owned(), platform, what: What::Manifest { path, a: x, b: y } }
}

/// The first path where two JSON values differ, with both values (compact).
pub fn first_json_difference(a: &serde_json::Value, b: &serde_json::Value, path: String) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p =
                    if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') { format!("{path}.{k}") } else { format!("{path}[{k:?}]") };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => {
                        if let Some(d) = first_json_difference(u, v, p) {
                            return Some(d);
                        }
                    }
                    (u, v) => return Some((p, show(u), show(v))),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_json_difference(u, v, format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| (format!("{path}.length"), x.len().to_string(), y.len().to_string()))
        }
        _ => (a != b).then(|| (path, a.to_string(), b.to_string())),
    }
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into())
}

/// The first difference between two gzip'd tar layers: (file, field, a, b). Streams both.
pub fn first_tar_difference(a: &Path, b: &Path) -> Result<(String, String, String, String), ReproError> {
    let open = |p: &Path| -> Result<tar::Archive<flate2::read::MultiGzDecoder<io::BufReader<fs::File>>>, ReproError> {
        let f = fs::File::open(p).map_err(|source| ReproError::Io { path: p.to_owned(), source })?;
        Ok(tar::Archive::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f))))
    };
    let (ta, tb) = (open(a)?, open(b)?);
    first_entry_difference(ta, tb, a, b, "(whole layer)")
}

/// The first difference between two zstd'd tar archives (kits): (entry, field, a, b).
fn first_zstd_tar_difference(a: &Path, b: &Path) -> Result<(String, String, String, String), ReproError> {
    let open = |p: &Path| -> Result<tar::Archive<zstd::stream::read::Decoder<'static, io::BufReader<fs::File>>>, ReproError> {
        let f = fs::File::open(p).map_err(|source| ReproError::Io { path: p.to_owned(), source })?;
        Ok(tar::Archive::new(zstd::stream::read::Decoder::new(f).map_err(|source| ReproError::Io { path: p.to_owned(), source })?))
    };
    first_entry_difference(open(a)?, open(b)?, a, b, "(whole archive)")
}

/// Entry by entry, in order: path, then each header field, then content.
fn first_entry_difference<X: Read, Y: Read>(
    mut ta: tar::Archive<X>,
    mut tb: tar::Archive<Y>,
    a: &Path,
    b: &Path,
    whole: &str,
) -> Result<(String, String, String, String), ReproError> {
    let io_a = |source| ReproError::Io { path: a.to_owned(), source };
    let io_b = |source| ReproError::Io { path: b.to_owned(), source };
    let mut ea = ta.entries().map_err(io_a)?;
    let mut eb = tb.entries().map_err(io_b)?;
    loop {
        match (ea.next(), eb.next()) {
            (None, None) => {
                return Ok((
                    whole.into(),
                    "compression".into(),
                    "same tar entries".into(),
                    "other compressed bytes (compressor or gzip header)".into(),
                ));
            }
            (Some(x), None) => {
                let x = x.map_err(io_a)?;
                return Ok((path_of(&x), "presence".into(), "present".into(), "absent".into()));
            }
            (None, Some(y)) => {
                let y = y.map_err(io_b)?;
                return Ok((path_of(&y), "presence".into(), "absent".into(), "present".into()));
            }
            (Some(x), Some(y)) => {
                let mut x = x.map_err(io_a)?;
                let mut y = y.map_err(io_b)?;
                let (px, py) = (path_of(&x), path_of(&y));
                if px != py {
                    return Ok((px.clone(), "path (entry order)".into(), px, py));
                }
                let (hx, hy) = (x.header().clone(), y.header().clone());
                let fields: [(&str, String, String); 8] = [
                    ("type", format!("{:?}", hx.entry_type()), format!("{:?}", hy.entry_type())),
                    ("mtime", fmt_opt(hx.mtime()), fmt_opt(hy.mtime())),
                    (
                        "mode",
                        hx.mode().map(|m| format!("{m:o}")).unwrap_or_default(),
                        hy.mode().map(|m| format!("{m:o}")).unwrap_or_default(),
                    ),
                    ("owner (uid)", fmt_opt(hx.uid()), fmt_opt(hy.uid())),
                    ("owner (gid)", fmt_opt(hx.gid()), fmt_opt(hy.gid())),
                    ("owner (user name)", format!("{:?}", hx.username()), format!("{:?}", hy.username())),
                    ("link target", format!("{:?}", x.link_name().ok().flatten()), format!("{:?}", y.link_name().ok().flatten())),
                    ("size", fmt_opt(hx.size()), fmt_opt(hy.size())),
                ];
                for (field, u, v) in fields {
                    if u != v {
                        return Ok((px, field.into(), u, v));
                    }
                }
                let (cx, cy) = (content_digest(&mut x).map_err(io_a)?, content_digest(&mut y).map_err(io_b)?);
                if cx != cy {
                    return Ok((px, "content".into(), cx.to_string(), cy.to_string()));
                }
                if hx.as_bytes()[..] != hy.as_bytes()[..] {
                    return Ok((px, "header bytes".into(), "other tar header".into(), "other tar header".into()));
                }
            }
        }
    }
}

fn path_of<R: Read>(e: &tar::Entry<'_, R>) -> String {
    e.path().map(|p| p.display().to_string()).unwrap_or_else(|_| "<bad path>".into())
}

fn fmt_opt<T: fmt::Display>(v: io::Result<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|e| format!("<{e}>"))
}

fn content_digest(r: &mut impl Read) -> io::Result<Digest> {
    let mut h = oci::layer::HashingReader::new(r);
    io::copy(&mut h, &mut io::sink())?;
    Ok(h.finish().0)
}
