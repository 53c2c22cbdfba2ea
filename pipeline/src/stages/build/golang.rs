//! Go programs compiled offline by the daemonless backend (`[component.recipe.go]`).
//!
//! ```text
//! [[toolchain]] of base-images.lock ─► .debs (sha256-checked) ─► unpacked once into the cache
//! go.mod + go.sum of the source ─► vendor/: committed, or made from the toolchain's packages
//!                                   (each module tree's dirhash must equal go.sum's h1)
//! go build -mod=vendor -trimpath -buildvcs=false -ldflags=-buildid=, CGO_ENABLED=0,
//!          GOOS/GOARCH of the platform, GOPROXY=off, nothing of the caller's environment
//! ─► $OUT/<output>, and what it linked (modules + the standard library) for the SBOM
//! ```
//!
//! The same source, toolchain and platform give the same bytes wherever the toolchain and the
//! source are unpacked (`-trimpath`, no build id, no VCS stamp), so `repro` holds. Go's own
//! build cache (`GOCACHE`) is shared between builds: it is content-addressed by Go and only
//! saves time.
//!
//! `go.mod` is read by hand: it is a small line format, and the only crate for it
//! (`gomod-rs`) is a young parser that would still leave the directive checks below to us.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use oci::cmd::{Cmd, CmdError};
use schema::files::{DebPin, GoRecipe, Toolchain};
use schema::model::Platform;

use super::base::Fetch;
use super::debian::{self, DebError};
use crate::stages::evidence::sbom::locks::{Ecosystem, LockedPackage};

/// Where Debian's Go library packages put module sources.
const GOCODE: &str = "usr/share/gocode/src";

#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("toolchain `{toolchain}`: {source}")]
    Fetch {
        toolchain: String,
        #[source]
        source: DebError,
    },
    #[error("toolchain `{toolchain}`: `{root}/bin/go` is not in its packages\n  hint: `root` of the `[[toolchain]]` in `base-images.lock` must be the GOROOT the packages install (e.g. `usr/lib/go-1.19`)")]
    NoGo { toolchain: String, root: String },
    #[error("`{file}`: line {line}: {message}\n  hint: {hint}")]
    Syntax { file: String, line: usize, message: String, hint: String },
    #[error("`{file}`: {message}\n  hint: {hint}")]
    Module { file: String, message: String, hint: String },
    #[error("`go build` of `{package}` {status}\n{stderr}")]
    Compile { package: String, status: String, stderr: String },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl GoError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            GoError::Fetch { .. } | GoError::Io { .. } => schema::exit::ENVIRONMENT,
            _ => schema::exit::REJECTED,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> GoError + '_ {
    move |source| GoError::Io { path: path.to_owned(), source }
}

/// A toolchain's package as the provenance records it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ToolchainPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub sha256: String,
}

/// A Go toolchain unpacked from its pinned packages.
#[derive(Debug, Clone)]
pub struct GoToolchain {
    pub name: String,
    /// The unpacked packages.
    pub dir: PathBuf,
    pub goroot: PathBuf,
    /// `go1.19.8`, from `$GOROOT/VERSION`.
    pub version: String,
    pub packages: Vec<ToolchainPackage>,
    /// Module path -> the package carrying its source.
    pub go_modules: BTreeMap<String, String>,
    /// `GOCACHE`, shared by the builds of this toolchain.
    pub cache: PathBuf,
}

/// Fetches the toolchain's packages (each checked against its sha256) and unpacks them once
/// into `<cache>/toolchains/<name>-<hash of the pins>`, made under a temporary name and
/// renamed when complete.
pub fn prepare(t: &Toolchain, fetch: &Fetch) -> Result<GoToolchain, GoError> {
    let fetch_err = |source| GoError::Fetch { toolchain: t.name.clone(), source };
    let mut key = Sha256::new();
    key.update(t.root.as_bytes());
    let mut debs = Vec::new();
    for p in &t.packages {
        debs.push(debian::fetch(p, &fetch.debs, &fetch.cache).map_err(fetch_err)?);
        key.update(format!("\n{} {}", p.name, p.sha256).as_bytes());
    }
    let key = schema::model::hex(&key.finalize())[..16].to_owned();
    let parent = fetch.cache.join("toolchains");
    let dir = parent.join(format!("{}-{key}", t.name));
    if !dir.join(".complete").is_file() {
        fs::create_dir_all(&parent).map_err(io_at(&parent))?;
        let tmp = oci::dirs::Scratch::new_in(&parent, &format!(".{}-", t.name)).map_err(io_at(&parent))?;
        for deb in &debs {
            debian::unpack(deb, tmp.path()).map_err(fetch_err)?;
        }
        fs::write(tmp.path().join(".complete"), b"").map_err(io_at(tmp.path()))?;
        let made = tmp.keep();
        if let Err(e) = fs::rename(&made, &dir) {
            // Another build unpacked it first: theirs is as good as ours.
            let _ = fs::remove_dir_all(&made);
            if !dir.join(".complete").is_file() {
                return Err(GoError::Io { path: dir, source: e });
            }
        }
    }
    let goroot = dir.join(&t.root);
    if !goroot.join("bin/go").is_file() {
        return Err(GoError::NoGo { toolchain: t.name.clone(), root: t.root.clone() });
    }
    let version_file = goroot.join("VERSION");
    let version = fs::read_to_string(&version_file).map_err(io_at(&version_file))?.lines().next().unwrap_or_default().trim().to_owned();
    let cache = fetch.cache.join("go-build").join(&key);
    fs::create_dir_all(&cache).map_err(io_at(&cache))?;
    Ok(GoToolchain {
        name: t.name.clone(),
        dir,
        goroot,
        version,
        packages: t
            .packages
            .iter()
            .map(|p: &DebPin| ToolchainPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                sha256: p.sha256.clone(),
            })
            .collect(),
        go_modules: t.go_modules.clone(),
        cache,
    })
}

/// What `go.mod` says that the build uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoMod {
    pub module: String,
    /// The `go` directive (`1.19`).
    pub go: Option<String>,
    /// `require`d modules, in file order: (path, version, indirect).
    pub require: Vec<(String, String, bool)>,
}

/// Parses `go.mod`. Directives that would change what is built from what this reads
/// (`replace`, `exclude`, `retract`, `toolchain`, `godebug`) are refused, never ignored.
pub fn parse_go_mod(file: &str, text: &str) -> Result<GoMod, GoError> {
    let syntax = |line: usize, message: String, hint: &str| GoError::Syntax { file: file.to_owned(), line, message, hint: hint.to_owned() };
    let mut module = None;
    let mut go = None;
    let mut require = Vec::new();
    let mut in_block: Option<&str> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let (code, comment) = match raw.find("//") {
            Some(p) => (&raw[..p], raw[p + 2..].trim()),
            None => (raw, ""),
        };
        let code = code.trim();
        if code.is_empty() {
            continue;
        }
        if let Some(block) = in_block {
            if code == ")" {
                in_block = None;
                continue;
            }
            match block {
                "require" => require.push(require_line(code, comment).map_err(|m| syntax(n, m, "a requirement is `PATH VERSION`"))?),
                other => return Err(refused(file, n, other)),
            }
            continue;
        }
        let (verb, rest) = code.split_once(char::is_whitespace).map(|(v, r)| (v, r.trim())).unwrap_or((code, ""));
        match verb {
            "module" => module = Some(unquote(rest)),
            "go" => go = Some(rest.to_owned()),
            "require" if rest == "(" => in_block = Some("require"),
            "require" => require.push(require_line(rest, comment).map_err(|m| syntax(n, m, "a requirement is `PATH VERSION`"))?),
            "replace" | "exclude" | "retract" | "toolchain" | "godebug" => return Err(refused(file, n, verb)),
            other => return Err(syntax(n, format!("`{other}` is not a go.mod directive"), "see https://go.dev/ref/mod#go-mod-file")),
        }
    }
    if in_block.is_some() {
        return Err(syntax(text.lines().count(), "a `(` block is not closed".to_owned(), "close it with `)`"));
    }
    let module = module.ok_or_else(|| GoError::Module {
        file: file.to_owned(),
        message: "has no `module` line".to_owned(),
        hint: "a Go module starts with `module PATH`".to_owned(),
    })?;
    Ok(GoMod { module, go, require })
}

fn refused(file: &str, line: usize, verb: &str) -> GoError {
    GoError::Syntax {
        file: file.to_owned(),
        line,
        message: format!("`{verb}` is not supported by the pipeline's Go builds"),
        hint: match verb {
            "replace" => {
                "a replaced module would be built from something else than `go.sum` pins: vendor the fork under its own path and version"
                    .to_owned()
            }
            _ => format!("remove the `{verb}` directive (the pipeline builds exactly the required versions with the pinned toolchain)"),
        },
    }
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_owned()
}

fn require_line(code: &str, comment: &str) -> Result<(String, String, bool), String> {
    let parts: Vec<&str> = code.split_whitespace().collect();
    match parts[..] {
        [path, version] if version.starts_with('v') => Ok((unquote(path), version.to_owned(), comment == "indirect")),
        _ => Err(format!("`{code}` is not `PATH VERSION`")),
    }
}

/// `go.sum`'s module-tree hashes: (path, version) -> `h1:...`.
pub fn parse_go_sum(file: &str, text: &str) -> Result<BTreeMap<(String, String), String>, GoError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [module, version, hash] = parts[..] else {
            return Err(GoError::Syntax {
                file: file.to_owned(),
                line: i + 1,
                message: format!("`{line}` is not `MODULE VERSION h1:HASH`"),
                hint: "go.sum lines are written by `go mod tidy`".to_owned(),
            });
        };
        if !hash.starts_with("h1:") {
            return Err(GoError::Syntax {
                file: file.to_owned(),
                line: i + 1,
                message: format!("`{hash}` is not an `h1:` hash"),
                hint: "go.sum lines are written by `go mod tidy`".to_owned(),
            });
        }
        if !version.ends_with("/go.mod") {
            out.insert((module.to_owned(), version.to_owned()), hash.to_owned());
        }
    }
    Ok(out)
}

/// Go's `h1:` hash of a module tree (the "dirhash" of `golang.org/x/mod/sumdb/dirhash`):
/// the sha256 of the lines `<sha256 hex>  <module>@<version>/<file>\n`, files sorted by that
/// name, base64. Regular files only (a module zip holds no symlinks).
pub fn dirhash(dir: &Path, module: &str, version: &str) -> Result<String, GoError> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter() {
        let e = e.map_err(|e| GoError::Io { path: dir.to_owned(), source: e.into() })?;
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(dir).unwrap_or(e.path()).to_string_lossy().into_owned();
            files.push((format!("{module}@{version}/{rel}"), e.path().to_owned()));
        }
    }
    files.sort();
    let mut summary = Sha256::new();
    for (name, path) in &files {
        let (digest, _) = oci::layer::hash_file(path).map_err(io_at(path))?;
        summary.update(format!("{}  {name}\n", digest.hex()).as_bytes());
    }
    Ok(format!("h1:{}", base64::engine::general_purpose::STANDARD.encode(summary.finalize())))
}

/// A required module as the build used it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoModule {
    pub path: String,
    pub version: String,
    /// `go.sum`'s hash, checked against the tree when the pipeline vendored it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h1: Option<String>,
    /// The toolchain package its source came from (absent for a committed `vendor/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_package: Option<String>,
}

/// What a Go build made and used, for `images.json`, the provenance and the SBOM.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoRecord {
    pub toolchain: String,
    pub go_version: String,
    pub toolchain_packages: Vec<ToolchainPackage>,
    pub module: String,
    /// The module's directory in the source, with a trailing `/` (empty for the source root).
    #[serde(skip)]
    pub module_dir: String,
    pub package: String,
    pub output: String,
    /// `committed` (the source's `vendor/`) or `toolchain` (made from its packages).
    pub vendor: String,
    pub modules: Vec<GoModule>,
    pub flags: Vec<String>,
    pub goos: String,
    pub goarch: String,
    /// `go.sum`, relative to the component's source, and its sha256 (none without requirements).
    #[serde(skip)]
    pub go_sum: Option<(String, String)>,
}

impl GoRecord {
    /// The packages linked into the program: every required module and the standard library.
    pub fn linked(&self) -> Vec<LockedPackage> {
        let mut out: Vec<LockedPackage> = self
            .modules
            .iter()
            .map(|m| LockedPackage {
                ecosystem: Ecosystem::GoModule,
                name: m.path.clone(),
                version: m.version.clone(),
                checksum: None,
                license: None,
                depends: Vec::new(),
            })
            .collect();
        out.push(LockedPackage {
            ecosystem: Ecosystem::GoModule,
            name: "stdlib".to_owned(),
            version: self.go_version.clone(),
            checksum: None,
            license: None,
            depends: Vec::new(),
        });
        out
    }
}

const FLAGS: [&str; 4] = ["-trimpath", "-buildvcs=false", "-ldflags=-buildid=", "-mod=vendor"];

/// Where one Go build runs.
#[derive(Debug, Clone, Copy)]
pub struct Dirs<'a> {
    /// The component's source (modified: a `vendor/` may be added).
    pub src: &'a Path,
    /// The source as messages name it (`components/x`).
    pub shown: &'a str,
    /// `$OUT`.
    pub out: &'a Path,
    /// `HOME` of the build (GOPATH goes there).
    pub home: &'a Path,
}

/// Compiles `recipe` for `platform` into `$OUT/<output>`.
pub fn build(tc: &GoToolchain, recipe: &GoRecipe, dirs: &Dirs<'_>, platform: Platform, epoch: i64) -> Result<GoRecord, GoError> {
    let Dirs { src, shown, out, home } = *dirs;
    let module_dir = src.join(&recipe.module);
    let rel = |f: &str| {
        let m = recipe.module.trim_start_matches("./").trim_end_matches('/');
        if m.is_empty() || m == "." {
            format!("{shown}/{f}")
        } else {
            format!("{shown}/{m}/{f}")
        }
    };
    let mod_file = module_dir.join("go.mod");
    let mod_text = fs::read_to_string(&mod_file).map_err(|e| GoError::Module {
        file: rel("go.mod"),
        message: format!("cannot be read: {e}"),
        hint: "`recipe.go.module` names the directory of the module's go.mod".to_owned(),
    })?;
    let gomod = parse_go_mod(&rel("go.mod"), &mod_text)?;
    if let Some(wanted) = &gomod.go {
        if newer_than(wanted, &tc.version) {
            return Err(GoError::Module {
                file: rel("go.mod"),
                message: format!("asks for Go {wanted}, the toolchain `{}` is {}", tc.name, tc.version),
                hint: "pin a newer Go toolchain in `base-images.lock`, or lower the `go` line".to_owned(),
            });
        }
    }
    let sum_file = module_dir.join("go.sum");
    let sums = match fs::read_to_string(&sum_file) {
        Ok(t) => Some((parse_go_sum(&rel("go.sum"), &t)?, t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(GoError::Io { path: sum_file, source: e }),
    };
    let vendor = module_dir.join("vendor");
    let (how, modules) = if vendor.join("modules.txt").is_file() {
        // The source's own vendor tree: Go checks it against go.mod; it is what the tag holds.
        let modules =
            gomod.require.iter().map(|(p, v, _)| GoModule { path: p.clone(), version: v.clone(), h1: None, from_package: None }).collect();
        ("committed", modules)
    } else {
        ("toolchain", vendor_from_toolchain(tc, &gomod, sums.as_ref().map(|s| &s.0), &vendor, &rel("go.sum"))?)
    };
    let goarch = platform.arch().to_owned();
    let target = out.join(&recipe.output);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_at(parent))?;
    }
    let gopath = home.join("gopath");
    let path = format!("{}:/usr/bin:/bin", tc.goroot.join("bin").display());
    let env: Vec<(&str, String)> = vec![
        ("PATH", path),
        ("HOME", home.display().to_string()),
        ("TZ", "UTC".into()),
        ("LC_ALL", "C".into()),
        ("SOURCE_DATE_EPOCH", epoch.to_string()),
        ("GOROOT", tc.goroot.display().to_string()),
        ("GOPATH", gopath.display().to_string()),
        ("GOCACHE", tc.cache.display().to_string()),
        ("GOFLAGS", "-mod=vendor".into()),
        ("GOPROXY", "off".into()),
        ("GOSUMDB", "off".into()),
        ("GOTOOLCHAIN", "local".into()),
        ("GO111MODULE", "on".into()),
        ("CGO_ENABLED", "0".into()),
        ("GOOS", "linux".into()),
        ("GOARCH", goarch.clone()),
    ];
    let package = recipe.package.clone();
    Cmd::new(tc.goroot.join("bin/go"), format!("`go build` of `{package}`"))
        .arg("build")
        .args(FLAGS.iter().filter(|f| **f != "-mod=vendor"))
        .arg("-o")
        .arg(&target)
        .arg(&package)
        .current_dir(&module_dir)
        .env_clear()
        .envs(env)
        .run()
        .map_err(|e| {
            let (status, stderr) = match e {
                CmdError::Start { source, .. } => (format!("could not start: {source}"), String::new()),
                CmdError::Failed { status, tail, .. } => (format!("failed with {status}"), tail),
                CmdError::TimedOut { seconds, tail, .. } => (format!("timed out after {seconds} s"), tail),
            };
            GoError::Compile { package: package.clone(), status, stderr }
        })?;
    Ok(GoRecord {
        toolchain: tc.name.clone(),
        go_version: tc.version.clone(),
        toolchain_packages: tc.packages.clone(),
        module: gomod.module,
        module_dir: match recipe.module.trim_start_matches("./").trim_end_matches('/') {
            "" | "." => String::new(),
            m => format!("{m}/"),
        },
        package,
        output: recipe.output.clone(),
        vendor: how.to_owned(),
        modules,
        flags: FLAGS.iter().map(|f| f.to_string()).collect(),
        goos: "linux".to_owned(),
        goarch,
        go_sum: sums.map(|(_, text)| {
            let m = recipe.module.trim_start_matches("./").trim_end_matches('/');
            let in_src = if m.is_empty() || m == "." { "go.sum".to_owned() } else { format!("{m}/go.sum") };
            (in_src, schema::model::Digest::of(text.as_bytes()).hex().to_owned())
        }),
    })
}

/// Where a recipe layer from `$OUT/...` puts `$OUT/<output>` in the image.
pub fn image_path(layers: &[schema::files::LayerSpec], output: &str) -> Option<String> {
    let output = output.trim_start_matches("./");
    layers.iter().find_map(|l| {
        let from = l.from.strip_prefix("$OUT")?.trim_start_matches('/').trim_end_matches('/');
        let rest = if from.is_empty() || from == "." { Some(output) } else { output.strip_prefix(&format!("{from}/")) };
        rest.map(|r| format!("{}/{r}", l.to.trim_end_matches('/')))
    })
}

/// `1.21` newer than `go1.19.8`?
fn newer_than(wanted: &str, have: &str) -> bool {
    let nums =
        |s: &str| -> Vec<u64> { s.trim_start_matches("go").split(['.', 'r', 'b']).map(|p| p.parse().unwrap_or(0)).take(2).collect() };
    nums(wanted) > nums(have)
}

/// Makes `vendor/` from the toolchain's module packages: each required module must be carried
/// by a package whose upstream version is the required one, and its tree must hash to
/// `go.sum`'s `h1:`.
fn vendor_from_toolchain(
    tc: &GoToolchain,
    gomod: &GoMod,
    sums: Option<&BTreeMap<(String, String), String>>,
    vendor: &Path,
    sum_name: &str,
) -> Result<Vec<GoModule>, GoError> {
    let mut modules = Vec::new();
    let mut listing = String::new();
    for (path, version, _) in &gomod.require {
        let module_err = |message: String, hint: String| GoError::Module { file: sum_name.to_owned(), message, hint };
        let Some(package) = tc.go_modules.get(path) else {
            return Err(module_err(
                format!("`{path}` {version} is required, and the toolchain `{}` carries no package for it", tc.name),
                format!("commit a `vendor/` directory (`go mod vendor`), or pin the Debian package of `{path}` in the toolchain's `packages` and `go-modules`"),
            ));
        };
        let pin = tc.packages.iter().find(|p| &p.name == package).expect("checked when the configuration was loaded");
        let upstream = pin.version.split_once(':').map(|(_, v)| v).unwrap_or(&pin.version);
        let upstream = upstream.rsplit_once('-').map(|(v, _)| v).unwrap_or(upstream);
        if format!("v{upstream}") != *version {
            return Err(module_err(
                format!("`{path}` {version} is required, and `{package}` {} carries v{upstream}", pin.version),
                format!("require `{path} v{upstream}` in go.mod (and its hash in go.sum), or pin a package of the wanted version"),
            ));
        }
        let tree = tc.dir.join(GOCODE).join(path);
        if !tree.is_dir() {
            return Err(module_err(
                format!("`{package}` has no `/{GOCODE}/{path}`"),
                "check the toolchain's `go-modules` entry".to_owned(),
            ));
        }
        let actual = dirhash(&tree, path, version)?;
        let pinned = sums.and_then(|s| s.get(&(path.clone(), version.clone())));
        match pinned {
            Some(h) if *h == actual => {}
            Some(h) => return Err(module_err(
                format!("`{path}` {version}: the tree of `{package}` hashes to `{actual}`, go.sum pins `{h}`"),
                "the module's source is not what was locked; if the change is intended, put the new hash in go.sum and review the package"
                    .to_owned(),
            )),
            None => {
                return Err(module_err(
                    format!("`{path}` {version} has no `h1:` line (module tree `{actual}`)"),
                    format!("add `{path} {version} {actual}` to go.sum after reviewing the package"),
                ))
            }
        }
        let dest = vendor.join(path);
        let mut dirs = std::collections::BTreeSet::new();
        for e in walkdir::WalkDir::new(&tree).sort_by_file_name() {
            let e = e.map_err(|e| GoError::Io { path: tree.clone(), source: e.into() })?;
            let rel = e.path().strip_prefix(&tree).unwrap_or(e.path());
            if e.file_type().is_file() {
                let to = dest.join(rel);
                if let Some(p) = to.parent() {
                    fs::create_dir_all(p).map_err(io_at(p))?;
                }
                fs::copy(e.path(), &to).map_err(io_at(&to))?;
                let is_pkg = rel.extension().is_some_and(|x| x == "go")
                    && !rel.components().any(|c| {
                        let c = c.as_os_str().to_string_lossy();
                        c == "testdata" || c.starts_with('_') || c.starts_with('.')
                    });
                if is_pkg {
                    let d = rel.parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                    dirs.insert(if d.is_empty() { path.clone() } else { format!("{path}/{d}") });
                }
            }
        }
        let go_line = fs::read_to_string(tree.join("go.mod"))
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.trim().strip_prefix("go ").map(|v| v.trim().to_owned())));
        listing.push_str(&format!("# {path} {version}\n"));
        listing.push_str(&match go_line {
            Some(g) => format!("## explicit; go {g}\n"),
            None => "## explicit\n".to_owned(),
        });
        for d in dirs {
            listing.push_str(&format!("{d}\n"));
        }
        modules.push(GoModule { path: path.clone(), version: version.clone(), h1: Some(actual), from_package: Some(package.clone()) });
    }
    fs::create_dir_all(vendor).map_err(io_at(vendor))?;
    let list = vendor.join("modules.txt");
    fs::write(&list, listing).map_err(io_at(&list))?;
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_mod_is_read_and_directives_that_change_the_build_are_refused() {
        let m = parse_go_mod(
            "x/go.mod",
            "// c\nmodule example.org/x\n\ngo 1.19\n\nrequire (\n\tgithub.com/a/b v1.2.3\n\tgithub.com/c/d v0.1.0 // indirect\n)\nrequire e.org/f v2.0.0+incompatible\n",
        )
        .unwrap();
        assert_eq!(m.module, "example.org/x");
        assert_eq!(m.go.as_deref(), Some("1.19"));
        assert_eq!(
            m.require,
            [
                ("github.com/a/b".to_owned(), "v1.2.3".to_owned(), false),
                ("github.com/c/d".to_owned(), "v0.1.0".to_owned(), true),
                ("e.org/f".to_owned(), "v2.0.0+incompatible".to_owned(), false)
            ]
        );
        let e = parse_go_mod("x/go.mod", "module m\nreplace a => ../a\n").unwrap_err().to_string();
        assert!(e.contains("`x/go.mod`: line 2") && e.contains("`replace` is not supported") && e.contains("hint:"), "{e}");
        let e = parse_go_mod("x/go.mod", "module m\nrequire (\n a v1\n").unwrap_err().to_string();
        assert!(e.contains("not closed"), "{e}");
        let e = parse_go_mod("x/go.mod", "module m\nrequire a\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("is not `PATH VERSION`"), "{e}");
        assert!(parse_go_mod("x/go.mod", "go 1.19\n").unwrap_err().to_string().contains("no `module` line"));
    }

    #[test]
    fn go_sum_keeps_tree_hashes_and_refuses_other_lines() {
        let s = parse_go_sum("go.sum", "a v1.0.0 h1:x=\na v1.0.0/go.mod h1:y=\n").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[&("a".to_owned(), "v1.0.0".to_owned())], "h1:x=");
        let e = parse_go_sum("go.sum", "a v1.0.0 h1:x=\nbad\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse_go_sum("go.sum", "a v1 sha256:x\n").is_err());
    }

    /// The h1 of a tree, by the published algorithm, computed here independently by Python's
    /// hashlib on the same listing.
    #[test]
    fn dirhash_is_the_sumdb_h1_of_the_tree() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sub")).unwrap();
        fs::write(d.path().join("go.mod"), "module m\n").unwrap();
        fs::write(d.path().join("sub/a.go"), "package sub\n").unwrap();
        let ours = dirhash(d.path(), "m", "v1.0.0").unwrap();
        let script = "import hashlib,base64,sys,os\nlines=''.join('%s  m@v1.0.0/%s\\n' % (hashlib.sha256(open(os.path.join(sys.argv[1], f),'rb').read()).hexdigest(), f) for f in ['go.mod','sub/a.go'])\nprint(base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode())";
        let out = std::process::Command::new("python3").args(["-c", script]).arg(d.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(ours, format!("h1:{}", String::from_utf8_lossy(&out.stdout).trim()));
    }

    #[test]
    fn go_versions_compare_by_major_and_minor() {
        assert!(newer_than("1.21", "go1.19.8"));
        assert!(!newer_than("1.19", "go1.19.8"));
        assert!(!newer_than("1.16", "go1.19.8"));
    }
}
