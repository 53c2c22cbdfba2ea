//! Loads and validates the release configuration: `release-trains/*.toml`,
//! `release-trains/components.toml` and `base-images.lock`, relative to the repository root.
//!
//! Every refusal names the file and the key (`components[2].base`) and, where one exists, how
//! to fix it. Validation collects every problem before failing, so one run shows them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::files::{Base, BaseLock, BaseSource, Bundle, Toolchain, ToolchainKind, Train};
use crate::model::{Channel, Platform, ReleaseVersion, Version};

pub const TRAINS_DIR: &str = "release-trains";
pub const BUNDLE_FILE: &str = "release-trains/components.toml";
pub const LOCK_FILE: &str = "base-images.lock";

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the repository root.
    pub file: String,
    /// Key path inside the file (`components[2].base`), or empty for the whole file.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "`{}`: {}", self.file, self.message)?;
        } else {
            write!(f, "`{}`: `{}`: {}", self.file, self.key, self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "the release configuration has {n} problem{}", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            writeln!(f, "- {p}")?;
        }
        Ok(())
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Repository root (absolute).
    pub root: PathBuf,
    pub trains: BTreeMap<Channel, Train>,
    pub bundle: Bundle,
    pub lock: BaseLock,
    /// The bundle's version core.
    pub version: Version,
    /// A calendar tag written in the bundle's version, to be checked against the epoch.
    pub declared: Option<ReleaseVersion>,
}

impl Config {
    pub fn base(&self, name: &str) -> Option<&Base> {
        self.lock.bases.iter().find(|b| b.name == name)
    }
    pub fn toolchain(&self, name: &str) -> Option<&Toolchain> {
        self.lock.toolchains.iter().find(|t| t.name == name)
    }
    pub fn train(&self, channel: Channel) -> &Train {
        // `load` refuses a configuration without all three trains.
        &self.trains[&channel]
    }
}

/// The platforms of `platforms` the lock's base `name` has no pin for; `None` when the lock
/// has no base of that name.
fn unpinned<'a>(lock: &BaseLock, name: &str, platforms: &'a [Platform]) -> Option<Vec<&'a Platform>> {
    let base = lock.bases.iter().find(|b| b.name == name)?;
    Some(platforms.iter().filter(|p| !base.platforms.contains_key(p)).collect())
}

/// `key` names `name`, which `base-images.lock` does not hold.
fn not_a_base(key: String, name: &str) -> Problem {
    Problem {
        file: BUNDLE_FILE.to_owned(),
        key,
        message: format!("`{name}` is not a base of `{LOCK_FILE}`"),
        hint: Some(format!("add it to `{LOCK_FILE}` and run `cargo xtask lock`")),
    }
}

fn problem(file: &str, key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { file: file.to_owned(), key: key.into(), message: message.into(), hint: None }
}

fn read_toml<T: serde::de::DeserializeOwned>(root: &Path, file: &str, problems: &mut Vec<Problem>) -> Option<T> {
    let path = root.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem {
                file: file.to_owned(),
                key: String::new(),
                message: format!("cannot be read: {e}"),
                hint: Some(format!("run from the repository root or pass `--source`; expected `{}`", path.display())),
            });
            return None;
        }
    };
    match toml::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            // toml's message carries the line, the column and, for an unknown key, its name and
            // the keys that are allowed.
            let key = e.span().map(|s| text[s].lines().next().unwrap_or_default().to_owned()).unwrap_or_default();
            problems.push(Problem { file: file.to_owned(), key, message: e.message().to_owned() + &line_of(&text, e.span()), hint: None });
            None
        }
    }
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => format!(" (line {})", text[..s.start].matches('\n').count() + 1),
        None => String::new(),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !s.starts_with('-')
}

fn is_relative_inside(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|c| c == "..")
}

/// Loads and validates everything, reporting every problem at once.
pub fn load(root: &Path) -> Result<Config, ConfigError> {
    load_checked(root, Sources::Present)
}

/// Whether the components' source directories must be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sources {
    /// In the repository: a `source.path` that is not a directory is a problem.
    Present,
    /// A copy of the configuration without the sources (a release's or kit's
    /// `release-trains/`): the rules are read, paths are checked for shape only.
    Absent,
}

/// The configuration as a release ships it (`release-trains/` and `base-images.lock` without
/// the components' sources): every check of [`load`] but the sources' presence. What the
/// customer tool's upgrade preflight reads from a kit.
pub fn load_rules(root: &Path) -> Result<Config, ConfigError> {
    load_checked(root, Sources::Absent)
}

fn load_checked(root: &Path, sources: Sources) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());

    let mut trains = BTreeMap::new();
    for channel in Channel::ALL {
        let file = format!("{TRAINS_DIR}/{channel}.toml");
        if let Some(t) = read_toml::<Train>(&root, &file, &mut problems) {
            if t.channel != channel {
                problems.push(problem(&file, "channel", format!("is `{}` but the file is for `{channel}`", t.channel)));
            }
            if let Some(p) = &t.promotion {
                if p.to == channel {
                    problems.push(problem(&file, "promotion.to", "a channel cannot promote to itself"));
                }
            }
            if t.history_keep == 0 {
                problems.push(problem(&file, "history-keep", "must keep at least the current release (1 or more)"));
            }
            if t.pointer_expiry_days == 0 {
                problems.push(problem(&file, "pointer-expiry-days", "a pointer valid for 0 days is expired when signed"));
            }
            trains.insert(channel, t);
        }
    }
    let bundle: Option<Bundle> = read_toml(&root, BUNDLE_FILE, &mut problems);
    let lock: Option<BaseLock> = read_toml(&root, LOCK_FILE, &mut problems);
    let (Some(bundle), Some(lock)) = (bundle, lock) else {
        return Err(ConfigError(problems));
    };

    check_lock(&lock, &mut problems);

    // The release version: `MAJOR.MINOR.PATCH`, or with a calendar tag to be checked later.
    let (version, declared) = match bundle.release.version.parse::<ReleaseVersion>() {
        Ok(rv) => (Some(rv.version), Some(rv)),
        Err(full) => {
            match bundle.release.version.parse::<Version>() {
                Ok(v) if !bundle.release.version.contains('(') => (Some(v), None),
                _ => {
                    problems.push(Problem {
                    file: BUNDLE_FILE.to_owned(),
                    key: "release.version".to_owned(),
                    message: full.0,
                    hint: Some("write `MAJOR.MINOR.PATCH` (the calendar tag is derived from SOURCE_DATE_EPOCH) or `MAJOR.MINOR.PATCH (YYYY.MM)`".to_owned()),
                });
                    (None, None)
                }
            }
        }
    };
    let registry = &bundle.release.registry;
    if registry.is_empty() || registry.contains('@') || registry.ends_with('/') || !registry.contains('/') {
        problems.push(problem(BUNDLE_FILE, "release.registry", format!("`{registry}` is not `HOST/NAMESPACE`")));
    }
    if let Some(url) = &bundle.release.source {
        if let Err(e) = source_url(url) {
            problems.push(Problem {
                file: BUNDLE_FILE.to_owned(),
                key: "release.source".to_owned(),
                message: e,
                hint: Some(
                    "write the URL others clone the repository from, e.g. `https://git.stella-ops.org/stella-ops/release.git`".to_owned(),
                ),
            });
        }
    }
    for (i, m) in bundle.release.mirrors.iter().enumerate() {
        if let Err(e) = m.registry.parse::<crate::model::RegistryTarget>() {
            problems.push(problem(BUNDLE_FILE, format!("release.mirror[{i}].registry"), e));
        }
    }

    let mut names = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for (i, c) in bundle.components.iter().enumerate() {
        let key = |k: &str| format!("components[{i}].{k}");
        if !is_name(&c.name) {
            problems.push(problem(BUNDLE_FILE, key("name"), format!("`{}` is not a lowercase name (a-z, 0-9, -)", c.name)));
        }
        if !names.insert(c.name.as_str()) {
            problems.push(problem(BUNDLE_FILE, key("name"), format!("`{}` appears twice", c.name)));
        }
        if c.name == crate::model::TRUST_REPOSITORY {
            problems.push(problem(
                BUNDLE_FILE,
                key("name"),
                format!(
                    "`{}` is reserved: `<namespace>/{}` on the registry holds the channels' trust repository\n  hint: give the component another name",
                    c.name,
                    crate::model::TRUST_REPOSITORY
                ),
            ));
        }
        groups.insert(c.skew_group.as_str());
        if c.platforms.is_empty() {
            problems.push(problem(BUNDLE_FILE, key("platforms"), "lists no platform"));
        }
        if c.platforms.iter().collect::<BTreeSet<_>>().len() != c.platforms.len() {
            problems.push(problem(BUNDLE_FILE, key("platforms"), "lists a platform twice"));
        }
        match unpinned(&lock, &c.base, &c.platforms) {
            None => problems.push(not_a_base(key("base"), &c.base)),
            Some(missing) => problems.extend(
                missing
                    .into_iter()
                    .map(|p| problem(BUNDLE_FILE, key("platforms"), format!("`{p}` is not pinned for base `{}` in `{LOCK_FILE}`", c.base))),
            ),
        }
        let s = &c.source;
        match (&s.path, &s.git) {
            (Some(p), None) => {
                if !is_relative_inside(p) {
                    problems.push(problem(
                        BUNDLE_FILE,
                        key("source.path"),
                        format!("`{p}` must be relative to the repository, without `..`"),
                    ));
                } else if sources == Sources::Present && !root.join(p).is_dir() {
                    problems.push(problem(BUNDLE_FILE, key("source.path"), format!("`{p}` is not a directory")));
                }
                if s.rev.is_some() || s.subdir.is_some() {
                    problems.push(problem(BUNDLE_FILE, key("source"), "`rev` and `subdir` go with `git`, not `path`"));
                }
            }
            (None, Some(_)) => {
                let ok = s.rev.as_deref().is_some_and(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()));
                if !ok {
                    problems.push(Problem {
                        file: BUNDLE_FILE.to_owned(),
                        key: key("source.rev"),
                        message: format!("`{}` is not a full 40-hex commit id", s.rev.as_deref().unwrap_or("")),
                        hint: Some("a branch or tag can move: pin the commit".to_owned()),
                    });
                }
                if let Some(sub) = &s.subdir {
                    if !is_relative_inside(sub) {
                        problems.push(problem(BUNDLE_FILE, key("source.subdir"), format!("`{sub}` must be relative, without `..`")));
                    }
                }
            }
            _ => problems.push(problem(BUNDLE_FILE, key("source"), "give exactly one of `path` or `git`")),
        }
        let r = &c.recipe;
        if r.layers.is_empty() && r.dockerfile.is_none() {
            problems.push(problem(BUNDLE_FILE, key("recipe.layer"), "the recipe adds no layer (and has no `dockerfile`)"));
        }
        if let Some(d) = &r.dockerfile {
            if !is_relative_inside(d) {
                problems.push(problem(
                    BUNDLE_FILE,
                    key("recipe.dockerfile"),
                    format!("`{d}` must be relative to the component's source, without `..`"),
                ));
            }
        }
        let mut arg_names = BTreeSet::new();
        for k in r.build_args.keys().chain(&r.secret_build_args) {
            if k.starts_with("STELLAOPS_") || k == "SOURCE_DATE_EPOCH" {
                problems.push(problem(
                    BUNDLE_FILE,
                    key(&format!("recipe.build-args.{k}")),
                    "`STELLAOPS_*` and `SOURCE_DATE_EPOCH` are set by the pipeline",
                ));
            }
            if !arg_names.insert(k.as_str()) {
                problems.push(problem(BUNDLE_FILE, key(&format!("recipe.secret-build-args.{k}")), "is also a plain build argument"));
            }
        }
        if !r.build_bases.is_empty() && r.dockerfile.is_none() {
            problems.push(problem(BUNDLE_FILE, key("recipe.build-bases"), "build bases go with a `dockerfile`"));
        }
        let mut build_bases = BTreeSet::new();
        for (j, name) in r.build_bases.iter().enumerate() {
            let k = key(&format!("recipe.build-bases[{j}]"));
            if !build_bases.insert(name.as_str()) {
                problems.push(problem(BUNDLE_FILE, k.clone(), format!("`{name}` is listed twice")));
            }
            if name == &c.base {
                problems.push(Problem {
                    file: BUNDLE_FILE.to_owned(),
                    key: k.clone(),
                    message: format!("`{name}` is the component's own base"),
                    hint: Some("the Dockerfile reaches it as `${STELLAOPS_BASE}`: drop it from `build-bases`".to_owned()),
                });
            }
            match unpinned(&lock, name, &c.platforms) {
                None => problems.push(not_a_base(k, name)),
                Some(missing) => problems.extend(missing.into_iter().map(|p| {
                    problem(
                        BUNDLE_FILE,
                        k.clone(),
                        format!("build base `{name}` is not pinned for `{p}` in `{LOCK_FILE}`, a platform of `{}`", c.name),
                    )
                })),
            }
        }
        if let Some(g) = &r.go {
            let gk = |k: &str| key(&format!("recipe.go.{k}"));
            if r.dockerfile.is_some() {
                problems.push(Problem {
                    file: BUNDLE_FILE.to_owned(),
                    key: key("recipe.go"),
                    message: "a recipe compiles with `go` or builds a `dockerfile`, not both".to_owned(),
                    hint: Some("compile in a build stage of the Dockerfile, or drop `dockerfile`".to_owned()),
                });
            }
            match lock.toolchains.iter().find(|t| t.name == g.toolchain) {
                Some(t) if t.kind == ToolchainKind::Go => {}
                Some(_) => problems.push(problem(BUNDLE_FILE, gk("toolchain"), format!("`{}` is not a Go toolchain", g.toolchain))),
                None => problems.push(Problem {
                    file: BUNDLE_FILE.to_owned(),
                    key: gk("toolchain"),
                    message: format!("`{}` is not a `[[toolchain]]` of `{LOCK_FILE}`", g.toolchain),
                    hint: Some(format!("pin the compiler's Debian packages in `{LOCK_FILE}` (see the README, \"Compiled components\")")),
                }),
            }
            for (field, v) in [("module", &g.module), ("package", &g.package), ("output", &g.output)] {
                let v = v.strip_prefix("./").unwrap_or(v);
                if !(v == "." || is_relative_inside(v)) || (field == "output" && v == ".") {
                    problems.push(problem(BUNDLE_FILE, gk(field), format!("`{v}` must be a relative path, without `..`")));
                }
            }
            let output = g.output.trim_start_matches("./");
            let carried = r.layers.iter().any(|l| match l.from.strip_prefix("$OUT") {
                Some(rest) => {
                    let rest = rest.trim_start_matches('/');
                    rest.is_empty() || rest == "." || output.starts_with(&format!("{}/", rest.trim_end_matches('/')))
                }
                None => false,
            });
            if !carried {
                problems.push(Problem {
                    file: BUNDLE_FILE.to_owned(),
                    key: gk("output"),
                    message: format!("no `layer` carries `$OUT/{output}` into the image"),
                    hint: Some("add a `[[component.recipe.layer]]` with `from = \"$OUT/...\"`".to_owned()),
                });
            }
        }
        if (!r.build_args.is_empty() || !r.secret_build_args.is_empty()) && r.dockerfile.is_none() {
            problems.push(problem(BUNDLE_FILE, key("recipe.build-args"), "build arguments go with a `dockerfile`"));
        }
        for (j, l) in r.layers.iter().enumerate() {
            let from = l.from.strip_prefix("$OUT/").or(if l.from == "$OUT" { Some(".") } else { None });
            let from_ok = match from {
                Some(rest) => rest == "." || is_relative_inside(rest),
                None => l.from == "." || is_relative_inside(&l.from),
            };
            if !from_ok {
                problems.push(problem(
                    BUNDLE_FILE,
                    key(&format!("recipe.layer[{j}].from")),
                    format!("`{}` must be relative (or start with `$OUT/`), without `..`", l.from),
                ));
            }
            if from.is_some() && r.build.is_empty() && r.go.is_none() {
                problems.push(problem(
                    BUNDLE_FILE,
                    key(&format!("recipe.layer[{j}].from")),
                    "uses `$OUT` but the recipe has no `build` command (nor `go`)",
                ));
            }
            if !l.to.starts_with('/') || l.to.split('/').any(|c| c == "..") {
                problems.push(problem(
                    BUNDLE_FILE,
                    key(&format!("recipe.layer[{j}].to")),
                    format!("`{}` must be an absolute path without `..`", l.to),
                ));
            }
        }
        // A Dockerfile-only component may take what it starts from the Dockerfile (checked
        // when its config is merged); one built from layers needs the recipe's.
        if r.entrypoint.is_empty() && (r.dockerfile.is_none() || !r.layers.is_empty()) {
            problems.push(problem(BUNDLE_FILE, key("recipe.entrypoint"), "is empty: the image would not start anything"));
        }
        for k in r.env.keys() {
            if k.starts_with("STELLAOPS_") {
                problems.push(problem(BUNDLE_FILE, key(&format!("recipe.env.{k}")), "`STELLAOPS_*` variables are set by the pipeline"));
            }
        }
    }
    for (i, rule) in bundle.skew_rules.iter().enumerate() {
        for (side, list) in [("left", &rule.left), ("right", &rule.right)] {
            for g in list {
                if !groups.contains(g.as_str()) {
                    problems.push(problem(
                        BUNDLE_FILE,
                        format!("skew-rule[{i}].{side}"),
                        format!("`{g}` is not the skew group of any component"),
                    ));
                }
            }
        }
    }
    for (channel, t) in &trains {
        for (i, name) in t.kit.components.iter().enumerate() {
            if name != "*" && !names.contains(name.as_str()) {
                problems.push(problem(
                    &format!("{TRAINS_DIR}/{channel}.toml"),
                    format!("kit.components[{i}]"),
                    format!("`{name}` is not a component of `{BUNDLE_FILE}`"),
                ));
            }
        }
    }

    match version {
        Some(version) if problems.is_empty() => Ok(Config { root, trains, bundle, lock, version, declared }),
        _ => Err(ConfigError(problems)),
    }
}

/// A pinned Debian package (of a base or a toolchain): its sha256 and its pool path.
fn check_deb_pin(key: &str, p: &crate::files::DebPin, problems: &mut Vec<Problem>) {
    if p.sha256.len() != 64 || !p.sha256.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        problems.push(Problem {
            file: LOCK_FILE.to_owned(),
            key: format!("{key}.sha256"),
            message: format!("`{}` ({}) is not pinned by a sha256", p.sha256, p.name),
            hint: Some("run `cargo xtask lock`".to_owned()),
        });
    }
    if !is_relative_inside(&p.filename) {
        problems.push(problem(LOCK_FILE, format!("{key}.filename"), format!("`{}` is not a pool path", p.filename)));
    }
}

fn check_lock(lock: &BaseLock, problems: &mut Vec<Problem>) {
    if lock.lock_version != 1 {
        problems.push(problem(LOCK_FILE, "lock-version", format!("`{}` is not a lock format this tool reads (1)", lock.lock_version)));
    }
    let mut toolchains = BTreeSet::new();
    for (i, t) in lock.toolchains.iter().enumerate() {
        let key = |k: &str| format!("toolchain[{i}].{k}");
        if !toolchains.insert(t.name.as_str()) {
            problems.push(problem(LOCK_FILE, key("name"), format!("`{}` appears twice", t.name)));
        }
        if !is_relative_inside(&t.root) {
            problems.push(problem(LOCK_FILE, key("root"), format!("`{}` must be relative to the unpacked packages, without `..`", t.root)));
        }
        if t.packages.is_empty() {
            problems.push(problem(LOCK_FILE, key("packages"), "pins no package"));
        }
        for (j, p) in t.packages.iter().enumerate() {
            let pk = key(&format!("packages[{j}]"));
            check_deb_pin(&pk, p, problems);
            if p.arch != "amd64" && p.arch != "all" {
                problems.push(problem(
                    LOCK_FILE,
                    format!("{pk}.arch"),
                    format!("`{}`: a toolchain runs on the build machine (`amd64` or `all`)", p.arch),
                ));
            }
        }
        for (module, package) in &t.go_modules {
            if !t.packages.iter().any(|p| &p.name == package) {
                problems.push(problem(
                    LOCK_FILE,
                    key(&format!("go-modules.\"{module}\"")),
                    format!("`{package}` is not one of the toolchain's packages"),
                ));
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, b) in lock.bases.iter().enumerate() {
        let key = |k: &str| format!("base[{i}].{k}");
        if !names.insert(b.name.as_str()) {
            problems.push(problem(LOCK_FILE, key("name"), format!("`{}` appears twice", b.name)));
        }
        if b.platforms.is_empty() {
            problems.push(problem(LOCK_FILE, key("platform"), "pins no platform"));
        }
        if b.source == BaseSource::Debian {
            if b.suite.is_none() {
                problems.push(problem(LOCK_FILE, key("suite"), "a Debian base needs its suite (e.g. `bookworm`)"));
            }
            if b.epoch.is_none() {
                problems.push(problem(LOCK_FILE, key("epoch"), "a Debian base needs the epoch of its layer (run `cargo xtask lock`)"));
            }
        }
        for (k, v) in &b.symlinks {
            if !is_relative_inside(k) || v.is_empty() {
                problems.push(problem(
                    LOCK_FILE,
                    key(&format!("symlinks.{k}")),
                    "a symlink path is relative to the image root, without `..`, with a target",
                ));
            }
        }
        for d in &b.directories {
            if !is_relative_inside(d) {
                problems.push(problem(LOCK_FILE, key("directories"), format!("`{d}` must be relative to the image root, without `..`")));
            }
        }
        for (platform, pin) in &b.platforms {
            let pkey = |k: &str| format!("base[{i}].platform.\"{platform}\".{k}");
            let need = |present: bool, field: &str, problems: &mut Vec<Problem>| {
                if !present {
                    problems.push(problem(LOCK_FILE, pkey(field), format!("a `{}` base needs `{field}`", source_name(b.source))));
                }
            };
            match b.source {
                BaseSource::Debian => need(!pin.packages.is_empty(), "packages", problems),
                BaseSource::OciLayout => need(pin.layout.is_some(), "layout", problems),
                // `reference` pins either this platform's manifest (its digest is `digest`) or
                // an index / manifest list that lists it: which one is known only once fetched.
                BaseSource::Registry => need(pin.reference.is_some(), "reference", problems),
                BaseSource::DockerArchive => need(pin.path.is_some(), "path", problems),
            }
            for (j, p) in pin.packages.iter().enumerate() {
                let pk = pkey(&format!("packages[{j}]"));
                check_deb_pin(&pk, p, problems);
                if p.arch != platform.deb_arch() && p.arch != "all" {
                    problems.push(problem(LOCK_FILE, format!("{pk}.arch"), format!("`{}` does not match platform `{platform}`", p.arch)));
                }
            }
        }
    }
}

/// Checks that `url` can stand for the repository in provenance: `https://HOST/PATH` or
/// `ssh://HOST[:PORT]/PATH`, without credentials (a user name included: two clones must
/// record the same URL), query, fragment or blanks. A local path or `file://` is not where
/// anyone else fetches the source, and plain `http://` is refused for `https://`.
pub fn source_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not a URL: write `https://HOST/PATH`"));
    };
    match scheme {
        "https" | "ssh" => {}
        "file" => return Err(format!("`{url}` is a local path, not where others fetch the repository")),
        "http" => return Err(format!("`{url}` is plain `http://`: write its `https://` URL")),
        other => return Err(format!("`{url}`: scheme `{other}` is not one a repository URL is recorded with (`https`, `ssh`)")),
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(format!("`{url}` carries credentials or a user name: the URL is recorded in every release, write it without them"));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(format!("`{url}` names no host"));
    }
    if path.trim_matches('/').is_empty() {
        return Err(format!("`{url}` names no repository path"));
    }
    if url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
        return Err(format!("`{url}` has a query, a fragment or a blank"));
    }
    Ok(())
}

/// The canonical form of a git remote's URL: credentials and user name dropped
/// (`https://user:token@host/x` -> `https://host/x`), scp-like `user@host:path` written
/// `ssh://host/path`; then checked as [`source_url`] checks a configured one.
pub fn remote_source_url(remote: &str) -> Result<String, String> {
    let url = match remote.split_once("://") {
        Some(_) => remote.to_owned(),
        // scp-like syntax: `[user@]host:path`, where the host has no `/` (else it is a path).
        None => match remote.split_once(':') {
            Some((host, path)) if !host.is_empty() && !host.contains('/') && !path.is_empty() => {
                format!("ssh://{host}/{}", path.trim_start_matches('/'))
            }
            _ => return Err(format!("`{remote}` is a local path, not where others fetch the repository")),
        },
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("", &url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let url = format!("{scheme}://{host}/{path}");
    source_url(&url)?;
    Ok(url)
}

pub fn source_name(s: BaseSource) -> &'static str {
    match s {
        BaseSource::Debian => "debian",
        BaseSource::OciLayout => "oci-layout",
        BaseSource::Registry => "registry",
        BaseSource::DockerArchive => "docker-archive",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_source_url_is_https_or_ssh_without_credentials() {
        for ok in ["https://git.stella-ops.org/stella-ops/release.git", "ssh://git.example.org:2222/team/repo.git"] {
            assert_eq!(source_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("/home/me/release", "is not a URL"),
            ("file:///home/me/release", "local path"),
            ("http://git.example.org/x.git", "plain `http://`"),
            ("git://git.example.org/x.git", "scheme `git`"),
            ("https://me:token@git.example.org/x.git", "credentials"),
            ("ssh://git@git.example.org/x.git", "user name"),
            ("https://git.example.org/", "no repository path"),
            ("https:///x.git", "no host"),
            ("https://git.example.org/x.git?ref=main", "query"),
        ] {
            let e = source_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_remote_url_loses_its_credentials_and_a_local_one_is_refused() {
        assert_eq!(remote_source_url("https://me:t0ken@git.example.org/team/x.git").unwrap(), "https://git.example.org/team/x.git");
        assert_eq!(remote_source_url("git@github.com:stella-ops/release.git").unwrap(), "ssh://github.com/stella-ops/release.git");
        assert_eq!(remote_source_url("ssh://git@host:2222/x.git").unwrap(), "ssh://host:2222/x.git");
        for local in ["/srv/git/release.git", "../release", "file:///srv/git/release.git"] {
            assert!(remote_source_url(local).is_err(), "{local}");
        }
        assert!(remote_source_url("http://me@git.example.org/x.git").unwrap_err().contains("http://"));
    }
}
