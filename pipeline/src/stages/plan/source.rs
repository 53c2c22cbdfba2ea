//! Source facts, through git2: the released commit, its tag, SOURCE_DATE_EPOCH (the commit
//! time), whether the tree is dirty, and whether lock files changed since the tag (spec §2.1
//! "frozen at tag"). Also writes a commit's tree out to a directory: builds read sources from
//! git objects, never from the work tree, so untracked or ignored files cannot leak in.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Status, StatusOptions, Tree};
use serde::Serialize;

/// File names that pin dependencies; they must be identical to the tagged tree.
pub const LOCK_FILE_NAMES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "go.sum",
    "go.mod",
    "global.json",
    "Directory.Packages.props",
    "packages.lock.json",
    "gradle.lockfile",
];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`{path}` is not inside a git repository: {source}")]
    NotARepo {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("git: {what}: {source}")]
    Git {
        what: String,
        #[source]
        source: git2::Error,
    },
    #[error("the work tree has uncommitted changes; a release is built from a clean tree:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Dirty(Vec<String>),
    #[error("lock files differ from tag `{tag}` (spec §2.1: lock files are frozen at the tag):\n{}", .changes.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    LockFilesChanged { tag: String, changes: Vec<String> },
    #[error("channel `{channel}` releases need tag `{tag}` on the released commit `{commit}`")]
    TagRequired { channel: String, tag: String, commit: String },
    #[error("`{path}` in commit `{commit}` is a {kind}; only files, directories and symlinks can be built")]
    Unsupported { path: String, commit: String, kind: &'static str },
    #[error("`{path}` is a shallow clone: `[release] image-epoch = \"component\"` dates each component by the newest commit that changed it, which needs the whole history")]
    Shallow { path: PathBuf },
    #[error("the repository has no canonical URL for the provenance to record: {reason}")]
    NoRepositoryUrl { reason: String },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// What the user can do about it (drawn by the CLI as a `hint:` line).
    pub fn hint(&self) -> Option<String> {
        match self {
            SourceError::Dirty(_) => Some("commit or stash them (`git status`)".to_owned()),
            SourceError::LockFilesChanged { .. } => {
                Some("tag the commit that changed them as a new version, or restore them from the tag".to_owned())
            }
            SourceError::TagRequired { tag, commit, .. } => Some(format!("`git tag {tag} {commit}`, or release on `edge`")),
            SourceError::NotARepo { .. } => Some("run it inside the repository, or pass `--source DIR`".to_owned()),
            SourceError::NoRepositoryUrl { .. } => Some(format!(
                "set the URL others clone it from in `{}`: `[release] source = \"https://HOST/PATH\"`, or give the clone an `origin` remote with it",
                schema::config::BUNDLE_FILE
            )),
            SourceError::Shallow { .. } => Some(
                "fetch the whole history (`git fetch --unshallow`; in GitHub Actions, `actions/checkout` with `fetch-depth: 0`)".to_owned(),
            ),
            SourceError::Git { .. } | SourceError::Unsupported { .. } | SourceError::Io { .. } => None,
        }
    }
}

fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> SourceError {
    let what = what.into();
    move |source| SourceError::Git { what, source }
}

/// What the plan knows about the source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceFacts {
    /// Absolute path of the work tree.
    #[serde(skip)]
    pub workdir: PathBuf,
    pub commit: String,
    /// The release tag (`v<version>`) when it points at the commit.
    pub tag: Option<String>,
    /// The release tag when it exists but points elsewhere (lock files are checked against it).
    pub tag_elsewhere: Option<String>,
    /// SOURCE_DATE_EPOCH: the committer time of `commit`.
    pub source_date_epoch: i64,
    /// Uncommitted changes (relative paths), empty when clean.
    pub dirty: Vec<String>,
    /// The repository's canonical URL, recorded as the source in provenance (never a path of
    /// this machine: two clones of one commit record the same source).
    pub url: RepositoryUrl,
}

/// The repository's canonical URL and where it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryUrl {
    /// `https://HOST/PATH` or `ssh://HOST/PATH`, without credentials.
    pub url: String,
    pub from: UrlFrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UrlFrom {
    /// `[release] source` of `release-trains/components.toml`.
    Configured,
    /// The `origin` remote, credentials stripped.
    Origin,
}

/// The URL provenance records for `repo`: `configured` (already validated by the
/// configuration) or else the `origin` remote's, credentials stripped; a repository without
/// either, or whose `origin` is a local path, is refused.
fn repository_url(repo: &Repository, configured: Option<&str>) -> Result<RepositoryUrl, SourceError> {
    if let Some(url) = configured {
        return Ok(RepositoryUrl { url: url.to_owned(), from: UrlFrom::Configured });
    }
    let remote = match repo.find_remote("origin") {
        Ok(r) => r,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Err(SourceError::NoRepositoryUrl {
                reason: format!("`{}` sets no `[release] source` and the repository has no `origin` remote", schema::config::BUNDLE_FILE),
            })
        }
        Err(e) => return Err(git("read the `origin` remote")(e)),
    };
    let raw = remote.url().map_err(|_| SourceError::NoRepositoryUrl { reason: "the `origin` remote's URL is not UTF-8".to_owned() })?;
    // The message names the remote without what its URL may carry (a token): scheme and host only.
    let url = schema::config::remote_source_url(raw)
        .map_err(|e| SourceError::NoRepositoryUrl { reason: format!("the `origin` remote: {}", redact_credentials(raw, &e)) })?;
    Ok(RepositoryUrl { url, from: UrlFrom::Origin })
}

/// `message` with the credentials of `url` (`user:secret@`) replaced by `***@`.
fn redact_credentials(url: &str, message: &str) -> String {
    let Some((_, rest)) = url.split_once("://") else { return message.to_owned() };
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.is_empty() => message.replace(&format!("{userinfo}@"), "***@"),
        _ => message.to_owned(),
    }
}

/// Reads the facts of the repository holding `root`. `tag_name` is the release tag to look for;
/// `configured_url` the bundle's `[release] source`.
pub fn facts(root: &Path, tag_name: &str, configured_url: Option<&str>) -> Result<SourceFacts, SourceError> {
    let repo = Repository::discover(root).map_err(|source| SourceError::NotARepo { path: root.to_owned(), source })?;
    let workdir = repo.workdir().unwrap_or(root).to_owned();
    let head = repo.head().map_err(git("read HEAD (is there a commit?)"))?;
    let commit = head.peel_to_commit().map_err(git("resolve HEAD to a commit"))?;
    let epoch = commit.committer().when().seconds();

    let (mut tag, mut tag_elsewhere) = (None, None);
    if let Ok(r) = repo.find_reference(&format!("refs/tags/{tag_name}")) {
        let target = r.peel_to_commit().map_err(git(format!("resolve tag `{tag_name}`")))?;
        if target.id() == commit.id() {
            tag = Some(tag_name.to_owned());
        } else {
            tag_elsewhere = Some(tag_name.to_owned());
        }
    }

    let mut opts = StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false).exclude_submodules(false);
    let statuses = repo.statuses(Some(&mut opts)).map_err(git("read the work tree status"))?;
    let mut dirty: Vec<String> = statuses
        .iter()
        .filter(|s| s.status() != Status::CURRENT && !s.status().contains(Status::IGNORED))
        .map(|s| {
            let kind = if s.status().intersects(Status::WT_NEW | Status::INDEX_NEW) {
                "new"
            } else if s.status().intersects(Status::WT_DELETED | Status::INDEX_DELETED) {
                "deleted"
            } else {
                "modified"
            };
            format!("{} ({kind})", s.path().unwrap_or("<non-UTF-8 path>"))
        })
        .collect();
    dirty.sort();
    let url = repository_url(&repo, configured_url)?;
    Ok(SourceFacts { workdir, commit: commit.id().to_string(), tag, tag_elsewhere, source_date_epoch: epoch, dirty, url })
}

/// Lock files under `dirs` (relative to the repository) in the tree of commit `id`: path -> blob.
fn lock_files_in(tree: &Tree<'_>, dirs: &[&str]) -> BTreeMap<String, Oid> {
    let mut out = BTreeMap::new();
    let _ = tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        let name = entry.name().unwrap_or_default();
        if entry.kind() == Some(ObjectType::Blob) && LOCK_FILE_NAMES.contains(&name) {
            let path = format!("{parent}{name}");
            if dirs.iter().any(|d| *d == "." || path.starts_with(&format!("{}/", d.trim_end_matches('/')))) {
                out.insert(path, entry.id());
            }
        }
        git2::TreeWalkResult::Ok
    });
    out
}

/// Checks that the lock files under `dirs` are the same at HEAD as at `tag`.
pub fn check_frozen(root: &Path, tag: &str, dirs: &[&str]) -> Result<(), SourceError> {
    let repo = Repository::discover(root).map_err(|source| SourceError::NotARepo { path: root.to_owned(), source })?;
    let tagged = repo
        .find_reference(&format!("refs/tags/{tag}"))
        .and_then(|r| r.peel_to_tree())
        .map_err(git(format!("read the tree of tag `{tag}`")))?;
    let head = repo.head().and_then(|h| h.peel_to_tree()).map_err(git("read the tree of HEAD"))?;
    let (then, now) = (lock_files_in(&tagged, dirs), lock_files_in(&head, dirs));
    let mut changes = Vec::new();
    for (path, id) in &now {
        match then.get(path) {
            None => changes.push(format!("{path} (added since the tag)")),
            Some(old) if old != id => changes.push(format!("{path} (changed since the tag)")),
            Some(_) => {}
        }
    }
    for path in then.keys().filter(|p| !now.contains_key(*p)) {
        changes.push(format!("{path} (removed since the tag)"));
    }
    if changes.is_empty() {
        Ok(())
    } else {
        Err(SourceError::LockFilesChanged { tag: tag.to_owned(), changes })
    }
}

/// Writes the tree of `commit` (or its subdirectory `subdir`) into `dest`, which must not
/// exist. Modes: 0755 for executables, 0644 for other files; symlinks as symlinks.
pub fn materialize(repo_path: &Path, commit: &str, subdir: &str, dest: &Path) -> Result<(), SourceError> {
    let repo = Repository::open(repo_path).map_err(|source| SourceError::NotARepo { path: repo_path.to_owned(), source })?;
    let oid = Oid::from_str(commit).map_err(git(format!("parse commit id `{commit}`")))?;
    let c = repo.find_commit(oid).map_err(git(format!("find commit `{commit}`")))?;
    let mut tree = c.tree().map_err(git("read the commit tree"))?;
    let sub = subdir.trim_matches('/');
    if !sub.is_empty() && sub != "." {
        let entry = tree.get_path(Path::new(sub)).map_err(git(format!("find `{sub}` in commit `{commit}`")))?;
        tree = repo.find_tree(entry.id()).map_err(git(format!("`{sub}` in commit `{commit}` is not a directory")))?;
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SourceError::Io { path, source }
    };
    fs::create_dir_all(dest).map_err(io(dest))?;
    let mut failure = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
        let rel = format!("{parent}{}", entry.name().unwrap_or_default());
        let path = dest.join(&rel);
        let result = (|| -> Result<(), SourceError> {
            match entry.filemode() {
                0o040000 => fs::create_dir_all(&path).map_err(io(&path)),
                0o100644 | 0o100755 | 0o100664 => {
                    let blob = repo.find_blob(entry.id()).map_err(git(format!("read `{rel}`")))?;
                    fs::write(&path, blob.content()).map_err(io(&path))?;
                    use std::os::unix::fs::PermissionsExt;
                    let mode = if entry.filemode() == 0o100755 { 0o755 } else { 0o644 };
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io(&path))
                }
                0o120000 => {
                    let blob = repo.find_blob(entry.id()).map_err(git(format!("read `{rel}`")))?;
                    let target = String::from_utf8_lossy(blob.content()).into_owned();
                    std::os::unix::fs::symlink(target, &path).map_err(io(&path))
                }
                0o160000 => Err(SourceError::Unsupported { path: rel.clone(), commit: commit.to_owned(), kind: "submodule" }),
                _ => Err(SourceError::Unsupported { path: rel.clone(), commit: commit.to_owned(), kind: "tree entry of unknown kind" }),
            }
        })();
        match result {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })
    .or_else(|e| if failure.is_some() { Ok(()) } else { Err(e) })
    .map_err(git("walk the commit tree"))?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Makes `rev` of the git repository at `url` available in a bare cache under `cache`, and
/// returns the cache's path. Fetches only when the commit is not there yet.
pub fn fetch_git(url: &str, rev: &str, cache: &Path) -> Result<PathBuf, SourceError> {
    let key = schema::model::Digest::of(url.as_bytes());
    let path = cache.join("git").join(&key.hex()[..16]);
    let repo = match Repository::open_bare(&path) {
        Ok(r) => r,
        Err(_) => {
            fs::create_dir_all(&path).map_err(|source| SourceError::Io { path: path.clone(), source })?;
            Repository::init_bare(&path).map_err(git(format!("create a cache for `{url}`")))?
        }
    };
    let oid = Oid::from_str(rev).map_err(git(format!("parse commit id `{rev}`")))?;
    if repo.find_commit(oid).is_err() {
        let mut remote = repo.remote_anonymous(url).map_err(git(format!("open `{url}`")))?;
        remote.fetch(&["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], None, None).map_err(git(format!("fetch `{url}`")))?;
        repo.find_commit(oid).map_err(git(format!("commit `{rev}` is not in `{url}`")))?;
    }
    Ok(path)
}

/// What a component's images depend on in the repository, besides the epoch: read at each
/// commit of the history to find the newest commit that changed one of them
/// ([`component_epochs`]).
#[derive(Debug, Clone)]
pub struct ComponentInputs {
    pub name: String,
    /// Its source directory in this repository (`None` for a git source, which its bundle
    /// entry pins by commit).
    pub path: Option<String>,
    /// The bases it uses (`base` and `recipe.build-bases`) and its toolchain, by name.
    pub bases: Vec<String>,
    pub toolchain: Option<String>,
}

/// When and where a component's inputs last changed: its images' SOURCE_DATE_EPOCH and
/// revision under `[release] image-epoch = "component"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ComponentEpoch {
    pub source_date_epoch: i64,
    pub commit: String,
}

/// The `[release]` keys that images carry or are made with (besides the version, the channel
/// and the calendar, which the build cache keys on): a change re-dates every component.
const RELEASE_KEYS: &[&str] = &["registry", "layer-gzip", "image-epoch"];

/// For each of `inputs`, the newest commit on the first-parent history of `commit` whose
/// inputs differ from its parent's (or the root commit), with its committer time. A shallow
/// repository is refused: a missing parent would date a component wrongly.
pub fn component_epochs(root: &Path, commit: &str, inputs: &[ComponentInputs]) -> Result<Vec<ComponentEpoch>, SourceError> {
    let repo = Repository::discover(root).map_err(|source| SourceError::NotARepo { path: root.to_owned(), source })?;
    if repo.is_shallow() {
        return Err(SourceError::Shallow { path: repo.workdir().unwrap_or(root).to_owned() });
    }
    let oid = Oid::from_str(commit).map_err(git(format!("parse commit id `{commit}`")))?;
    let head = repo.find_commit(oid).map_err(git(format!("find commit `{commit}`")))?;
    // The bundle and the lock, parsed once per blob.
    let mut parsed: BTreeMap<Oid, Option<toml::Table>> = BTreeMap::new();
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        let want = fingerprint(&repo, &head, input, &mut parsed)?;
        let mut at = head.clone();
        while let Ok(parent) = at.parent(0) {
            if fingerprint(&repo, &parent, input, &mut parsed)? != want {
                break;
            }
            at = parent;
        }
        out.push(ComponentEpoch { source_date_epoch: at.committer().when().seconds(), commit: at.id().to_string() });
    }
    Ok(out)
}

/// The component's inputs at commit `c`, as one digest.
fn fingerprint(
    repo: &Repository,
    c: &git2::Commit<'_>,
    input: &ComponentInputs,
    parsed: &mut BTreeMap<Oid, Option<toml::Table>>,
) -> Result<schema::model::Digest, SourceError> {
    let tree = c.tree().map_err(git(format!("read the tree of commit `{}`", c.id())))?;
    let entry_id = |p: &str| tree.get_path(Path::new(p)).map(|e| e.id().to_string()).unwrap_or_else(|_| "absent".to_owned());
    let mut table = |p: &str| -> Result<Option<toml::Table>, SourceError> {
        let Ok(entry) = tree.get_path(Path::new(p)) else { return Ok(None) };
        if let Some(t) = parsed.get(&entry.id()) {
            return Ok(t.clone());
        }
        let blob = repo.find_blob(entry.id()).map_err(git(format!("read `{p}` of commit `{}`", c.id())))?;
        // A file that does not parse at some older commit is simply different.
        let t = std::str::from_utf8(blob.content()).ok().and_then(|s| s.parse::<toml::Table>().ok());
        parsed.insert(entry.id(), t.clone());
        Ok(t)
    };
    let named = |t: &Option<toml::Table>, array: &str, name: &str| -> String {
        t.as_ref()
            .and_then(|t| t.get(array))
            .and_then(|a| a.as_array())
            .and_then(|a| a.iter().find(|v| v.get("name").and_then(|n| n.as_str()) == Some(name)))
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .unwrap_or_else(|| "absent".to_owned())
    };
    let bundle = table(schema::config::BUNDLE_FILE)?;
    let lock = table("base-images.lock")?;
    let mut parts = vec![input.path.as_deref().map(entry_id).unwrap_or_default(), named(&bundle, "component", &input.name)];
    let release = bundle.as_ref().and_then(|t| t.get("release")).and_then(|r| r.as_table());
    for key in RELEASE_KEYS {
        parts.push(release.and_then(|r| r.get(*key)).map(|v| v.to_string()).unwrap_or_default());
    }
    for b in &input.bases {
        parts.push(named(&lock, "base", b));
    }
    if let Some(t) = &input.toolchain {
        parts.push(named(&lock, "toolchain", t));
    }
    Ok(schema::model::Digest::of(parts.join("\n\0").as_bytes()))
}
