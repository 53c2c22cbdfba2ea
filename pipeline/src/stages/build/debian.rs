//! Pinned Debian packages: where to fetch them (the host's apt mirror, an override, or a
//! local directory for air-gapped use), checking each `.deb` against the sha256 the lock pins,
//! a content-addressed cache, unpacking `data.tar.*` into a root file system, and reading a
//! `Packages` index to resolve names to pins (`cargo xtask lock`).
//!
//! The mirror is read over plain HTTP, as apt does: integrity comes from the sha256 pins, not
//! from the transport. `lock` reads `Packages.xz` unauthenticated: it is the one
//! trust-on-first-use step, and its result is reviewed as a diff of `base-images.lock`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci::layer::HashingReader;
use schema::files::DebPin;
use schema::model::hex;

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("`{name}` {version} ({arch}): the .deb from `{from}` has sha256 `{actual}` but `base-images.lock` pins `{expected}`\n  hint: the mirror serves other bytes than were locked; if the change is intended, run `cargo xtask lock` and review the diff")]
    Sha256Mismatch { name: String, version: String, arch: String, from: String, expected: String, actual: String },
    #[error("`{name}` {version} ({arch}): cannot fetch `{url}`: {message}\n  hint: check the mirror (`--apt-mirror`) or give a directory of .deb files (`--deb-dir`)")]
    Fetch { name: String, version: String, arch: String, url: String, message: String },
    #[error("`{name}` ({arch}) is not in `{url}`")]
    NotInIndex { name: String, arch: String, url: String },
    #[error("no apt mirror found in `/etc/apt/sources.list` or `/etc/apt/sources.list.d/`\n  hint: pass `--apt-mirror http://...` or `--deb-dir DIR`")]
    NoMirror,
    #[error("`{path}`: not a Debian package: {message}")]
    BadDeb { path: PathBuf, message: String },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DebError + '_ {
    move |source| DebError::Io { path: path.to_owned(), source }
}

/// Where `.deb` files come from.
#[derive(Debug, Clone)]
pub enum DebSource {
    /// An apt mirror's base URL (`http://deb.debian.org/debian`).
    Mirror(String),
    /// A directory holding the `.deb` files under their pool file names.
    Dir(PathBuf),
}

/// The first Debian mirror of the host's apt sources (deb822 `.sources` files and the
/// one-line `sources.list`), skipping security and third-party repositories.
pub fn host_mirror() -> Result<String, DebError> {
    let mut candidates = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if ext == "sources" {
            for stanza in text.split("\n\n") {
                let field =
                    |k: &str| stanza.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_owned()));
                let enabled = field("Enabled").is_none_or(|v| v != "no");
                if enabled && field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
                    if let Some(uris) = field("URIs") {
                        candidates.extend(uris.split_whitespace().map(str::to_owned));
                    }
                }
            }
        } else if f.file_name().is_some_and(|n| n == "sources.list") || ext == "list" {
            for line in text.lines() {
                let mut words = line.split_whitespace().filter(|w| !w.starts_with('['));
                if words.next() == Some("deb") {
                    if let Some(uri) = words.next() {
                        candidates.push(uri.to_owned());
                    }
                }
            }
        }
    }
    candidates
        .into_iter()
        .find(|u| u.starts_with("http") && !u.contains("security") && u.trim_end_matches('/').ends_with("/debian"))
        .map(|u| u.trim_end_matches('/').to_owned())
        .ok_or(DebError::NoMirror)
}

/// Fetches (or finds in `cache`) the `.deb` of `pin`, checking its sha256; returns its path
/// in the cache (`<cache>/debs/<sha256>.deb`). A cached file is hashed again on every use.
pub fn fetch(pin: &DebPin, source: &DebSource, cache: &Path) -> Result<PathBuf, DebError> {
    let dir = cache.join("debs");
    fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let cached = dir.join(format!("{}.deb", pin.sha256));
    if cached.is_file() {
        let actual = sha256_file(&cached)?;
        if actual == pin.sha256 {
            return Ok(cached);
        }
        // A corrupt cache entry is dropped and fetched again.
        fs::remove_file(&cached).map_err(io_at(&cached))?;
    }
    let base_name = pin.filename.rsplit('/').next().unwrap_or(&pin.filename);
    let (from, reader): (String, Box<dyn Read>) = match source {
        DebSource::Dir(d) => {
            let p = d.join(base_name);
            let f = fs::File::open(&p).map_err(|e| DebError::Fetch {
                name: pin.name.clone(),
                version: pin.version.clone(),
                arch: pin.arch.clone(),
                url: p.display().to_string(),
                message: e.to_string(),
            })?;
            (p.display().to_string(), Box::new(f))
        }
        DebSource::Mirror(m) => {
            let url = format!("{}/{}", m.trim_end_matches('/'), pin.filename);
            let r = http_get(&url).map_err(|message| DebError::Fetch {
                name: pin.name.clone(),
                version: pin.version.clone(),
                arch: pin.arch.clone(),
                url: url.clone(),
                message,
            })?;
            (url, r)
        }
    };
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_at(&dir))?;
    let mut hashing = HashingReader::new(reader);
    let mut out = tmp.reopen().map_err(io_at(tmp.path()))?;
    io::copy(&mut hashing, &mut out).map_err(|e| DebError::Fetch {
        name: pin.name.clone(),
        version: pin.version.clone(),
        arch: pin.arch.clone(),
        url: from.clone(),
        message: e.to_string(),
    })?;
    let (digest, _) = hashing.finish();
    if digest.hex() != pin.sha256 {
        return Err(DebError::Sha256Mismatch {
            name: pin.name.clone(),
            version: pin.version.clone(),
            arch: pin.arch.clone(),
            from,
            expected: pin.sha256.clone(),
            actual: digest.hex().to_owned(),
        });
    }
    tmp.persist(&cached).map_err(|e| DebError::Io { path: cached.clone(), source: e.error })?;
    Ok(cached)
}

fn http_get(url: &str) -> Result<Box<dyn Read>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(std::time::Duration::from_secs(300))).build().into();
    let resp = agent.get(url).call().map_err(|e| e.to_string())?;
    Ok(Box::new(resp.into_body().into_reader()))
}

fn sha256_file(path: &Path) -> Result<String, DebError> {
    Ok(oci::layer::hash_file(path).map_err(io_at(path))?.0.hex().to_owned())
}

/// What a package is, read from its own control member and file list while unpacking: what
/// dpkg would record in its database.
#[derive(Debug, Clone, Default)]
pub struct DebInfo {
    /// The `control` stanza, as in the package.
    pub control: String,
    /// `md5sums`, when the package has one.
    pub md5sums: Option<String>,
    /// Every path of `data.tar` in dpkg's `.list` form (`/.`, `/bin`, `/bin/busybox`).
    pub paths: Vec<String>,
}

impl DebInfo {
    /// A field of the control stanza (first line only).
    pub fn field(&self, name: &str) -> Option<&str> {
        control_field(&self.control, name)
    }
}

/// A field of a deb822 stanza (first line only).
pub fn control_field<'a>(stanza: &'a str, name: &str) -> Option<&'a str> {
    stanza.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then(|| v.trim())
    })
}

/// Runs `f` over a member decompressed by its name's extension. xz goes through a pipe thread
/// (lzma-rs decodes into a writer) so that nothing is held in memory whole.
fn with_member<T>(
    name: &str,
    entry: impl Read + Send,
    deb: &Path,
    f: impl FnOnce(&mut dyn Read) -> Result<T, DebError>,
) -> Result<T, DebError> {
    let bad = |message: String| DebError::BadDeb { path: deb.to_owned(), message };
    if name.ends_with(".xz") {
        let (mut reader, writer) = io::pipe().map_err(io_at(deb))?;
        let mut input = io::BufReader::new(entry);
        std::thread::scope(|s| {
            let t = s.spawn(move || {
                let mut w = writer;
                lzma_rs::xz_decompress(&mut input, &mut w).map_err(|e| e.to_string())
            });
            let r = f(&mut reader);
            // Drain what the consumer left (tar padding), so the decoder can finish.
            let _ = io::copy(&mut reader, &mut io::sink());
            drop(reader);
            let decoded = t.join().map_err(|_| bad("the xz decoder panicked".into()))?;
            let out = r?;
            decoded.map_err(|e| bad(format!("{name}: {e}")))?;
            Ok(out)
        })
    } else if name.ends_with(".gz") {
        f(&mut flate2::read::MultiGzDecoder::new(entry))
    } else if name.ends_with(".tar") {
        let mut e = entry;
        f(&mut e)
    } else {
        Err(bad(format!("`{name}`: only xz, gzip and plain members are read")))
    }
}

/// Unpacks the `data.tar.*` member of the `.deb` at `deb` into `root`, and reads its
/// `control.tar.*` member. Entries that would leave `root` are refused by the tar crate's
/// `unpack_in`.
pub fn unpack(deb: &Path, root: &Path) -> Result<DebInfo, DebError> {
    let bad = |message: String| DebError::BadDeb { path: deb.to_owned(), message };
    let file = fs::File::open(deb).map_err(io_at(deb))?;
    let mut archive = ar::Archive::new(file);
    let mut info = DebInfo::default();
    let mut saw_data = false;
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if name.starts_with("control.tar") {
            with_member(&name, entry, deb, |r| {
                let mut tar = tar::Archive::new(r);
                for e in tar.entries().map_err(io_at(deb))? {
                    let mut e = e.map_err(io_at(deb))?;
                    let path = e.path().map_err(io_at(deb))?.to_string_lossy().trim_start_matches("./").to_owned();
                    let mut text = String::new();
                    match path.as_str() {
                        "control" => {
                            e.read_to_string(&mut text).map_err(io_at(deb))?;
                            info.control = text.trim_end().to_owned();
                        }
                        "md5sums" => {
                            e.read_to_string(&mut text).map_err(io_at(deb))?;
                            info.md5sums = Some(text);
                        }
                        _ => {}
                    }
                }
                Ok(())
            })?;
        } else if name.starts_with("data.tar") {
            info.paths = with_member(&name, entry, deb, |r| unpack_tar(r, root, deb))?;
            saw_data = true;
        }
    }
    if !saw_data {
        return Err(bad("no `data.tar` member".into()));
    }
    if info.control.is_empty() {
        return Err(bad("no `control` file in its `control.tar` member".into()));
    }
    Ok(info)
}

fn unpack_tar(data: &mut dyn Read, root: &Path, deb: &Path) -> Result<Vec<String>, DebError> {
    let mut tar = tar::Archive::new(data);
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(false);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let mut paths = Vec::new();
    for entry in tar.entries().map_err(io_at(deb))? {
        let mut entry = entry.map_err(io_at(deb))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink | tar::EntryType::Link => {}
            other => {
                return Err(DebError::BadDeb {
                    path: deb.to_owned(),
                    message: format!(
                        "entry `{}` has type {other:?}, which a base layer does not carry",
                        entry.path().map(|p| p.display().to_string()).unwrap_or_default()
                    ),
                })
            }
        }
        let p = entry.path().map_err(io_at(deb))?.to_string_lossy().into_owned();
        let p = p.trim_start_matches('.').trim_end_matches('/');
        paths.push(if p.is_empty() { "/.".to_owned() } else { p.to_owned() });
        entry.unpack_in(root).map_err(io_at(deb))?;
    }
    Ok(paths)
}

/// One package of a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub version: String,
    pub filename: String,
    pub sha256: String,
}

/// Reads `dists/<suite>/main/binary-<arch>/Packages.xz` from `mirror`: name -> entry.
pub fn read_index(mirror: &str, suite: &str, arch: &str) -> Result<(String, BTreeMap<String, IndexEntry>), DebError> {
    let url = format!("{}/dists/{suite}/main/binary-{arch}/Packages.xz", mirror.trim_end_matches('/'));
    let fetch_err = |message: String| DebError::Fetch {
        name: "Packages.xz".into(),
        version: suite.into(),
        arch: arch.into(),
        url: url.clone(),
        message,
    };
    let reader = http_get(&url).map_err(fetch_err)?;
    let mut text = Vec::new();
    lzma_rs::xz_decompress(&mut io::BufReader::new(reader), &mut text).map_err(|e| fetch_err(e.to_string()))?;
    let text = String::from_utf8_lossy(&text);
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |k: &str| stanza.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(": ")).map(str::to_owned));
        if let (Some(name), Some(version), Some(filename), Some(sha256)) =
            (field("Package"), field("Version"), field("Filename"), field("SHA256"))
        {
            out.insert(name, IndexEntry { version, filename, sha256 });
        }
    }
    Ok((url, out))
}

/// sha256 of a byte slice as hex (used by tests and the lock command).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(data))
}
