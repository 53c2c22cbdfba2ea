//! The post-build scan: what the finished image holds, read from its layers alone.
//!
//! It never reads the build-time SBOM nor anything the build recorded: it applies the image's
//! layers in order (with OCI whiteouts), hashes every regular file, keeps the few files that
//! describe packages, and catalogs:
//! - Debian packages from `var/lib/dpkg/status` and `status.d/`, their files from `info/*.list`;
//! - Alpine packages from `lib/apk/db/installed`;
//! - the OS from `etc/os-release` or `usr/lib/os-release`;
//! - Go modules and the standard library from the build information of Go programs (ELF files,
//!   Go 1.18 and later);
//! - Rust crates from `Cargo.lock` files and from the `.dep-v0` section cargo-auditable writes
//!   into programs ([`auditable`]: located on the first pass, read on a second pass over the
//!   layers that hold such a program);
//! - npm packages from `node_modules/**/package.json`; Python distributions from
//!   `*.dist-info/METADATA` and `*.egg-info` (file or `PKG-INFO`);
//! - .NET packages from `*.deps.json` (the `libraries` of type `package`);
//! - Java packages from `.jar`, `.war`, `.ear` (and the other zip-based Java packagings) and
//!   the archives nested in them ([`java`]); one archive at a time is held, at most
//!   [`java::MAX`] bytes;
//! - every regular file no package owns (outside the package databases), with its sha256.
//!
//! Layers are streamed: memory holds one entry per path and the package files' text (each at
//! most [`MAX_TEXT`]), never a layer, nor a file's content except one Java archive's.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{auditable, goinfo, java};
use oci::layer::HashingReader;
use oci::{Layout, LayoutError, Manifest};
use schema::model::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("`{path}`: layer {layer}: {source}")]
    Read {
        path: PathBuf,
        layer: usize,
        #[source]
        source: io::Error,
    },
    #[error("image file `{file}`: line {line}: {message}")]
    Malformed { file: String, line: usize, message: String },
    #[error("image file `{file}`: a Java archive larger than the {limit} bytes the scan reads\n  hint: an archive this large is read whole to find the archives nested in it; split it, or ship its nested archives as files")]
    TooLarge { file: String, limit: u64 },
    #[error("image file `{file}`: a package file larger than the {limit} bytes the scan reads\n  hint: package metadata this large is not what a package manager writes; look at what put it there")]
    TextTooLarge { file: String, limit: u64 },
}

/// The largest package file (dpkg status, lock file, package metadata) the scan keeps as text:
/// a layer is untrusted input (a few KiB of gzip can inflate to gigabytes), and what is kept is
/// held in memory until the catalog. 64 MiB (1 MiB in unit tests, as [`java::MAX`]).
#[cfg(not(test))]
pub const MAX_TEXT: u64 = 64 << 20;
#[cfg(test)]
pub const MAX_TEXT: u64 = 1 << 20;

/// What the scan keeps of the files that describe packages, by path.
#[derive(Debug, Default)]
struct Kept {
    /// Package files' text (and Go build information, see [`go_text`]).
    texts: BTreeMap<String, String>,
    /// Packages read from a file while it streamed (Java archives, cargo-auditable programs).
    found: BTreeMap<String, Vec<Found>>,
    /// Programs of the current layer with a `.dep-v0` section: (entry index, offset, size).
    pending: BTreeMap<String, (usize, u64, u64)>,
}

/// Writes to both sniffers.
struct Tee<'a>(&'a mut goinfo::Sniffer, &'a mut auditable::Sniffer);

impl io::Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A package found in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Found {
    /// syft's package type names: deb, apk, go-module, rust-crate, npm, python, dotnet,
    /// java-archive.
    pub kind: String,
    pub name: String,
    pub version: String,
    /// Where it was found.
    pub location: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScanResult {
    pub os: Option<String>,
    pub packages: BTreeSet<Found>,
    /// Regular files no package owns: path -> sha256.
    pub files: BTreeMap<String, String>,
    /// Regular files in the image, all told.
    pub file_count: usize,
    /// Where each thing came from, for the drift gate (not in the scan's JSON, whose format
    /// is the post-build evidence): every regular file with the layer that last wrote it.
    #[serde(skip)]
    pub tree: BTreeMap<String, Written>,
    /// Regular files that a layer removed (a whiteout, or an entry of another kind at the path
    /// or above it) and that are not in the image, with the last layer that removed them.
    #[serde(skip)]
    pub gone: BTreeMap<String, usize>,
    /// The digests of the layers read, in order (index = position in the manifest).
    #[serde(skip)]
    pub layers: Vec<Digest>,
}

/// A regular file of the image: its sha256 and the index of the layer that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub sha256: String,
    pub layer: usize,
}

/// A [`ScanResult`] whole (what the scan's JSON leaves out too), as the build cache keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeptScan {
    /// The image manifest scanned.
    pub manifest: Digest,
    pub result: ScanResult,
    pub tree: BTreeMap<String, Written>,
    pub gone: BTreeMap<String, usize>,
    pub layers: Vec<Digest>,
}

impl KeptScan {
    pub fn of(manifest: &Digest, s: &ScanResult) -> KeptScan {
        KeptScan { manifest: manifest.clone(), result: s.clone(), tree: s.tree.clone(), gone: s.gone.clone(), layers: s.layers.clone() }
    }

    pub fn into_result(self) -> ScanResult {
        ScanResult { tree: self.tree, gone: self.gone, layers: self.layers, ..self.result }
    }
}

impl ScanResult {
    /// The layer that put `path` (absolute) where it is, or that removed it.
    pub fn layer_of(&self, path: &str) -> Option<usize> {
        self.tree.get(path).map(|w| w.layer).or_else(|| self.gone.get(path).copied())
    }
}

#[derive(Debug, Clone)]
enum Node {
    File { sha256: String, layer: usize },
    Other,
}

/// The file tree being applied, and what was removed from it.
#[derive(Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    kept: Kept,
    gone: BTreeMap<String, usize>,
}

fn keep_text(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path == "var/lib/dpkg/status"
        || path.starts_with("var/lib/dpkg/status.d/")
        || (path.starts_with("var/lib/dpkg/info/") && path.ends_with(".list"))
        || path == "lib/apk/db/installed"
        || path == "etc/os-release"
        || path == "usr/lib/os-release"
        || name == "Cargo.lock"
        || (name == "package.json" && path.contains("node_modules/"))
        || name.ends_with(".deps.json")
        || python_metadata(path)
}

/// Python distribution metadata: `*.dist-info/METADATA`, `*.egg-info/PKG-INFO`, or a
/// single-file `*.egg-info`.
fn python_metadata(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    let name = parts.next().unwrap_or_default();
    let parent = parts.next().unwrap_or_default();
    (name == "METADATA" && parent.ends_with(".dist-info"))
        || (name == "PKG-INFO" && parent.ends_with(".egg-info"))
        || name.ends_with(".egg-info")
}

/// Scans the image whose manifest is `manifest`, in `layout`.
pub fn scan(layout: &Layout, manifest: &Manifest) -> Result<ScanResult, ScanError> {
    let mut t = Tree::default();
    for (i, layer) in manifest.layers.iter().enumerate() {
        let path = layout.blob_path(&layer.digest);
        let read_err = |source| ScanError::Read { path: path.clone(), layer: i, source };
        let f = fs::File::open(&path).map_err(read_err)?;
        // Two stages on two cores: a thread reads the blob, hashes it and inflates it; this
        // one reads the tar, hashes every file and catalogs. The queue between them holds
        // 2 MiB at most.
        let (feed, drain) = oci::pipe::pipe(256 << 10, 8);
        let d = std::thread::scope(|s| -> Result<Digest, ScanError> {
            let inflater = s.spawn(move || -> io::Result<Digest> {
                // The blob is checked against its digest while it is read.
                let mut blob = HashingReader::new(io::BufReader::with_capacity(1 << 20, f));
                let whole = feed.copy_from(&mut flate2::read::MultiGzDecoder::new(&mut blob))?;
                drop(feed);
                if whole {
                    io::copy(&mut blob, &mut io::sink())?;
                }
                Ok(blob.finish().0)
            });
            let mut ar = tar::Archive::new(drain);
            for (index, e) in ar.entries().map_err(read_err)?.enumerate() {
                let mut e = e.map_err(read_err)?;
                let p = e.path().map_err(read_err)?.to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_owned();
                let (dir, name) = p.rsplit_once('/').map(|(d, n)| (d.to_owned(), n)).unwrap_or((String::new(), p.as_str()));
                if name == ".wh..wh..opq" {
                    t.remove_under(&dir, false, i);
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    let target = if dir.is_empty() { hidden.to_owned() } else { format!("{dir}/{hidden}") };
                    t.remove_under(&target, true, i);
                    continue;
                }
                match e.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        // A file replaces whatever was at its path (a directory's subtree too).
                        t.remove_under(&p, true, i);
                        if keep_text(&p) {
                            let mut h = HashingReader::new(&mut e);
                            let mut bytes = Vec::new();
                            (&mut h).take(MAX_TEXT + 1).read_to_end(&mut bytes).map_err(read_err)?;
                            if bytes.len() as u64 > MAX_TEXT {
                                return Err(ScanError::TextTooLarge { file: format!("/{p}"), limit: MAX_TEXT });
                            }
                            let s = String::from_utf8(bytes).map_err(|e| ScanError::Malformed {
                                file: format!("/{p}"),
                                line: text_line(e.as_bytes(), e.utf8_error().valid_up_to()),
                                message: "not UTF-8 text".into(),
                            })?;
                            let (d, _) = h.finish();
                            t.kept.texts.insert(p.clone(), s);
                            t.nodes.insert(p, Node::File { sha256: d.hex().to_owned(), layer: i });
                        } else if java::is_archive(name) {
                            // A Java archive is read whole (its directory is at its end).
                            let mut h = HashingReader::new(&mut e);
                            let mut bytes = Vec::new();
                            (&mut h).take(java::MAX + 1).read_to_end(&mut bytes).map_err(read_err)?;
                            if bytes.len() as u64 > java::MAX {
                                return Err(ScanError::TooLarge { file: format!("/{p}"), limit: java::MAX });
                            }
                            let found = java::catalog(&format!("/{p}"), &bytes).map_err(|m| ScanError::Malformed {
                                file: m.file,
                                line: m.line,
                                message: m.message,
                            })?;
                            drop(bytes);
                            let found = found
                                .into_iter()
                                .map(|j| Found { kind: "java-archive".into(), name: j.name(), version: j.version, location: j.location })
                                .collect();
                            t.kept.found.insert(p.clone(), found);
                            t.nodes.insert(p, Node::File { sha256: h.finish().0.hex().to_owned(), layer: i });
                        } else {
                            let mut h = HashingReader::new(&mut e);
                            let (mut go, mut dep) = (goinfo::Sniffer::default(), auditable::Sniffer::default());
                            io::copy(&mut h, &mut Tee(&mut go, &mut dep)).map_err(read_err)?;
                            // A Go program: its build information is kept as its text.
                            if let Some(raw) = go.found() {
                                t.kept.texts.insert(p.clone(), go_text(&raw, &p)?);
                            }
                            // A cargo-auditable program: its section is read on the second pass.
                            let section = dep.locate().map_err(|message| ScanError::Malformed {
                                file: format!("/{p} (cargo-auditable `.dep-v0` section)"),
                                line: 1,
                                message,
                            })?;
                            if let Some((offset, size)) = section {
                                t.kept.pending.insert(p.clone(), (index, offset, size));
                            }
                            t.nodes.insert(p, Node::File { sha256: h.finish().0.hex().to_owned(), layer: i });
                        }
                    }
                    tar::EntryType::Link => {
                        // A hard link: the same content as its target, written by this layer, so the
                        // same packages.
                        let target = e.link_name().ok().flatten().map(|t| t.to_string_lossy().trim_start_matches("./").to_owned());
                        t.remove_under(&p, true, i);
                        if let Some(to) = &target {
                            if let Some(text) = t.kept.texts.get(to).filter(|_| keep_text(&p) == keep_text(to)).cloned() {
                                t.kept.texts.insert(p.clone(), text);
                            }
                            if let Some(found) = t.kept.found.get(to).cloned() {
                                let (from, dest) = (format!("/{to}"), format!("/{p}"));
                                let moved = found.into_iter().map(|f| Found { location: f.location.replacen(&from, &dest, 1), ..f });
                                t.kept.found.insert(p.clone(), moved.collect());
                            }
                            if let Some(section) = t.kept.pending.get(to).copied() {
                                t.kept.pending.insert(p.clone(), section);
                            }
                        }
                        let node = match target.and_then(|to| t.nodes.get(&to).cloned()) {
                            Some(Node::File { sha256, .. }) => Node::File { sha256, layer: i },
                            _ => Node::Other,
                        };
                        t.nodes.insert(p, node);
                    }
                    _ => {
                        if !matches!(t.nodes.get(&p), Some(Node::Other)) {
                            t.remove_under(&p, true, i);
                        }
                        t.nodes.insert(p, Node::Other);
                    }
                }
            }
            io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(read_err)?;
            inflater.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)).map_err(read_err)
        })?;
        if d != layer.digest {
            return Err(LayoutError::DigestMismatch { path, expected: layer.digest.clone(), actual: d }.into());
        }
        if !t.kept.pending.is_empty() {
            read_sections(&path, i, std::mem::take(&mut t.kept.pending), &mut t.kept.found)?;
        }
    }
    let mut out = catalog(&t.nodes, &t.kept)?;
    for (path, node) in &t.nodes {
        if let Node::File { sha256, layer } = node {
            out.tree.insert(format!("/{path}"), Written { sha256: sha256.clone(), layer: *layer });
        }
    }
    let nodes = &t.nodes;
    out.gone =
        t.gone.into_iter().filter(|(p, _)| !matches!(nodes.get(p), Some(Node::File { .. }))).map(|(p, l)| (format!("/{p}"), l)).collect();
    out.layers = manifest.layers.iter().map(|l| l.digest.clone()).collect();
    Ok(out)
}

/// The 1-based line of byte `at` of `bytes`.
fn text_line(bytes: &[u8], at: usize) -> usize {
    bytes[..at.min(bytes.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// The second pass over layer `layer` (the blob at `path`, its digest checked on the first):
/// the `.dep-v0` sections of the programs `pending` names, read into their crates.
fn read_sections(
    path: &std::path::Path,
    layer: usize,
    pending: BTreeMap<String, (usize, u64, u64)>,
    found: &mut BTreeMap<String, Vec<Found>>,
) -> Result<(), ScanError> {
    let read_err = |source| ScanError::Read { path: path.to_owned(), layer, source };
    // Hard links to a program share its entry: one read, every path.
    let mut by_index: BTreeMap<usize, (Vec<&String>, u64, u64)> = BTreeMap::new();
    for (p, &(i, o, s)) in &pending {
        by_index.entry(i).or_insert_with(|| (Vec::new(), o, s)).0.push(p);
    }
    let last = by_index.keys().next_back().copied().unwrap_or(0);
    let f = fs::File::open(path).map_err(read_err)?;
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, f)));
    for (index, e) in ar.entries().map_err(read_err)?.enumerate() {
        let e = e.map_err(read_err)?;
        let Some((paths, offset, size)) = by_index.get(&index) else { continue };
        let file = format!("/{} (cargo-auditable `.dep-v0` section)", paths[0]);
        let bytes = auditable::read_section(e, *offset, *size).map_err(|e| ScanError::Malformed {
            file: file.clone(),
            line: 1,
            message: e.to_string(),
        })?;
        let crates = auditable::parse(&bytes).map_err(|(line, message)| ScanError::Malformed { file, line, message })?;
        for p in paths {
            let location = format!("/{p}");
            let list = crates.iter().map(|(name, version)| Found {
                kind: "rust-crate".into(),
                name: name.clone(),
                version: version.clone(),
                location: location.clone(),
            });
            found.insert((*p).clone(), list.collect());
        }
        if index >= last {
            break;
        }
    }
    Ok(())
}

/// A Go program's build information as the text [`catalog`] reads: the Go version, then the
/// main module and the dependencies, one `KIND\tPATH\tVERSION` per line. Empty for a program
/// of Go before 1.18 (not read).
fn go_text(raw: &[u8], path: &str) -> Result<String, ScanError> {
    let info = goinfo::parse(raw).map_err(|(line, message)| ScanError::Malformed {
        file: format!("/{path} (Go build information)"),
        line,
        message,
    })?;
    Ok(match info {
        None => String::new(),
        Some(i) => {
            let mut t = format!("go\t{}\n", i.go_version);
            if let Some((p, v)) = i.main {
                t.push_str(&format!("mod\t{p}\t{v}\n"));
            }
            for (p, v) in i.deps {
                t.push_str(&format!("dep\t{p}\t{v}\n"));
            }
            t
        }
    })
}

impl Tree {
    /// Removes `path`'s subtree (and `path` itself when `itself`), by layer `layer`.
    fn remove_under(&mut self, path: &str, itself: bool, layer: usize) {
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        let mut doomed: Vec<String> =
            self.nodes.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(k, _)| k.clone()).collect();
        if itself && self.nodes.contains_key(path) {
            doomed.push(path.to_owned());
        }
        for k in doomed {
            if let Some(Node::File { .. }) = self.nodes.remove(&k) {
                self.gone.insert(k.clone(), layer);
            }
            self.kept.texts.remove(&k);
            self.kept.found.remove(&k);
            self.kept.pending.remove(&k);
        }
    }
}

/// What [`scan`] catalogs from one package file: `path` as in a layer (`var/lib/dpkg/status`,
/// `app/node_modules/x/package.json`, ...), `text` its content. The entry point of the fuzz
/// targets (`fuzz/`) and of tests that need no image.
pub fn catalog_file(path: &str, text: &str) -> Result<ScanResult, ScanError> {
    let mut kept = Kept::default();
    kept.texts.insert(path.to_owned(), text.to_owned());
    let tree = BTreeMap::from([(path.to_owned(), Node::File { sha256: Digest::of(text.as_bytes()).hex().to_owned(), layer: 0 })]);
    catalog(&tree, &kept)
}

/// Whether [`scan`] keeps the file at `path` (as in a layer) as the text of a package file.
pub fn is_package_file(path: &str) -> bool {
    keep_text(path)
}

fn field<'a>(stanza: &'a str, key: &str) -> Option<&'a str> {
    stanza.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

fn catalog(tree: &BTreeMap<String, Node>, kept: &Kept) -> Result<ScanResult, ScanError> {
    let mut out = ScanResult::default();
    let mut owned: BTreeSet<String> = BTreeSet::new();
    out.packages.extend(kept.found.values().flatten().cloned());
    for (path, text) in &kept.texts {
        if path == "etc/os-release" || (path == "usr/lib/os-release" && out.os.is_none()) {
            let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')).map(|v| v.trim_matches('"').to_owned());
            out.os = Some(format!("{} {}", get("ID").unwrap_or_default(), get("VERSION_ID").unwrap_or_default()).trim().to_owned());
        } else if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
            for stanza in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
                let (Some(name), Some(version)) = (field(stanza, "Package"), field(stanza, "Version")) else {
                    return Err(ScanError::Malformed {
                        file: format!("/{path}"),
                        line: 1,
                        message: "a stanza without Package or Version".into(),
                    });
                };
                let installed = field(stanza, "Status").is_none_or(|s| s.ends_with(" installed"));
                if installed {
                    out.packages.insert(Found {
                        kind: "deb".into(),
                        name: name.into(),
                        version: version.into(),
                        location: format!("/{path}"),
                    });
                }
            }
        } else if path.starts_with("var/lib/dpkg/info/") {
            owned.extend(text.lines().map(|l| l.trim_start_matches('/').to_owned()));
        } else if path == "lib/apk/db/installed" {
            for stanza in text.split("\n\n") {
                let get = |k: &str| stanza.lines().find_map(|l| l.strip_prefix(k)).map(str::to_owned);
                if let (Some(n), Some(v)) = (get("P:"), get("V:")) {
                    out.packages.insert(Found { kind: "apk".into(), name: n, version: v, location: format!("/{path}") });
                }
                let mut dir = String::new();
                for l in stanza.lines() {
                    if let Some(d) = l.strip_prefix("F:") {
                        dir = d.to_owned();
                    } else if let Some(f) = l.strip_prefix("R:") {
                        owned.insert(format!("{dir}/{f}"));
                    }
                }
            }
        } else if path.ends_with("Cargo.lock") {
            let v: toml::Value = toml::from_str(text).map_err(|e| ScanError::Malformed {
                file: format!("/{path}"),
                line: e.span().map(|s| text[..s.start].matches('\n').count() + 1).unwrap_or(1),
                message: e.message().to_owned(),
            })?;
            for p in v.get("package").and_then(|p| p.as_array()).into_iter().flatten() {
                if let (Some(n), Some(ver)) = (p.get("name").and_then(|x| x.as_str()), p.get("version").and_then(|x| x.as_str())) {
                    out.packages.insert(Found {
                        kind: "rust-crate".into(),
                        name: n.into(),
                        version: ver.into(),
                        location: format!("/{path}"),
                    });
                }
            }
        } else if path.ends_with(".deps.json") {
            out.packages.extend(dotnet_deps(path, text)?);
        } else if path.ends_with("package.json") {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| ScanError::Malformed {
                file: format!("/{path}"),
                line: e.line(),
                message: e.to_string(),
            })?;
            if let (Some(n), Some(ver)) = (v.get("name").and_then(|x| x.as_str()), v.get("version").and_then(|x| x.as_str())) {
                out.packages.insert(Found { kind: "npm".into(), name: n.into(), version: ver.into(), location: format!("/{path}") });
            }
        } else if !keep_text(path) {
            // A Go program (see `go_text`): the standard library at the Go version, each
            // dependency, and the main module unless it is a local `(devel)` build.
            let location = format!("/{path}");
            for line in text.lines() {
                let f: Vec<&str> = line.split('\t').collect();
                let found = |name: &str, version: &str| Found {
                    kind: "go-module".into(),
                    name: name.into(),
                    version: version.into(),
                    location: location.clone(),
                };
                match f[..] {
                    ["go", v] => out.packages.insert(found("stdlib", v)),
                    ["mod", _, "(devel)"] => false,
                    ["mod" | "dep", p, v] => out.packages.insert(found(p, v)),
                    _ => false,
                };
            }
        } else if python_metadata(path) {
            // RFC 822 headers up to the first blank line.
            let head = text.split("\n\n").next().unwrap_or_default();
            if let (Some(n), Some(ver)) = (field(head, "Name"), field(head, "Version")) {
                out.packages.insert(Found {
                    kind: "python".into(),
                    // PEP 503 names, as indexes and scanners compare them.
                    name: crate::stages::evidence::sbom::locks::python_name(n),
                    version: ver.into(),
                    location: format!("/{path}"),
                });
            }
        }
    }
    for (path, node) in tree {
        if let Node::File { sha256, .. } = node {
            out.file_count += 1;
            let db = path.starts_with("var/lib/dpkg/") || path.starts_with("lib/apk/db/");
            if !db && !owned.contains(path) {
                out.files.insert(format!("/{path}"), sha256.clone());
            }
        }
    }
    Ok(out)
}

/// The NuGet packages of a `*.deps.json` (what `dotnet build` and `dotnet publish` write): the
/// `libraries` of type `package`, keyed `Name/Version`. Projects (the application and the
/// projects it references) are the component's own code, not packages.
fn dotnet_deps(path: &str, text: &str) -> Result<Vec<Found>, ScanError> {
    let bad = |line: usize, message: String| ScanError::Malformed { file: format!("/{path}"), line, message };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.line().max(1), e.to_string()))?;
    let Some(libraries) = v.get("libraries").and_then(|l| l.as_object()) else {
        return Err(bad(1, "no `libraries` object".into()));
    };
    let line_of = |key: &str| text.find(&format!("\"{key}\"")).map(|at| text[..at].matches('\n').count() + 1).unwrap_or(1);
    let mut out = Vec::new();
    for (key, lib) in libraries {
        let Some((name, version)) = key.split_once('/').filter(|(n, v)| !n.is_empty() && !v.is_empty() && !v.contains('/')) else {
            return Err(bad(line_of(key), format!("library `{key}` is not `Name/Version`")));
        };
        let Some(kind) = lib.get("type").and_then(|t| t.as_str()) else {
            return Err(bad(line_of(key), format!("library `{key}` has no `type`")));
        };
        if kind == "package" {
            out.push(Found { kind: "dotnet".into(), name: name.into(), version: version.into(), location: format!("/{path}") });
        }
    }
    Ok(out)
}

/// The digest of a scan result's canonical JSON (for reports).
pub fn digest(r: &ScanResult) -> Digest {
    // Plain data (strings, numbers, maps with string keys) always serializes; a failure here
    // is a bug, reported as an internal error rather than the digest of nothing.
    #[allow(clippy::expect_used)]
    Digest::of(&serde_json::to_vec(r).expect("a scan result serializes"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use oci::layer::{EntryData, LayerWriter};

    /// A layout holding one image whose layers hold `layers` (path, content; content `None`
    /// for a directory).
    fn image(dir: &std::path::Path, layers: &[&[(&str, Option<&str>)]]) -> (Layout, Manifest) {
        let layout = Layout::create(dir).unwrap();
        let mut descriptors = Vec::new();
        for entries in layers {
            let (digest, size, _) = layout
                .put_blob_with(|w| {
                    let mut lw = LayerWriter::new(w, 0);
                    for (p, c) in *entries {
                        match c {
                            Some(c) => lw.add_entry(p, 0o644, (0, 0), EntryData::File { size: c.len() as u64, data: &mut c.as_bytes() })?,
                            None => lw.add_entry(p, 0o755, (0, 0), EntryData::Dir)?,
                        }
                    }
                    lw.finish().map(|_| ())
                })
                .unwrap();
            descriptors.push(oci::Descriptor::new(oci::MEDIA_LAYER_GZIP, digest, size));
        }
        let config = layout.put_json(oci::MEDIA_CONFIG, &serde_json::json!({})).unwrap();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
            config,
            layers: descriptors,
            subject: None,
            annotations: Default::default(),
        };
        (layout, manifest)
    }

    #[test]
    fn every_file_is_attributed_to_the_layer_that_last_wrote_or_removed_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, manifest) = image(
            tmp.path(),
            &[
                &[("etc/group", Some("root:x:0:\n")), ("etc/motd", Some("hi\n")), ("var/log/a", Some("a")), ("var/log/b", Some("b"))],
                // Layer 1: changes one file, removes one, empties a directory, adds one.
                &[
                    ("etc/.wh.motd", Some("")),
                    ("etc/group", Some("root:x:0:\nstaff:x:50:\n")),
                    ("usr/local/bin/app", Some("app")),
                    ("var/log/.wh..wh..opq", Some("")),
                ],
            ],
        );
        let s = scan(&layout, &manifest).unwrap();
        let layer = |p: &str| s.tree.get(p).map(|w| w.layer);
        assert_eq!((layer("/etc/group"), layer("/usr/local/bin/app")), (Some(1), Some(1)));
        assert_eq!(s.tree.len(), 2, "{:?}", s.tree);
        assert_eq!(s.gone, [("/etc/motd".to_owned(), 1), ("/var/log/a".to_owned(), 1), ("/var/log/b".to_owned(), 1)].into());
        assert_eq!((s.layer_of("/etc/motd"), s.layer_of("/etc/group"), s.layer_of("/nowhere")), (Some(1), Some(1), None));
        assert_eq!(s.layers, manifest.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>());
        // The scan's JSON (the evidence document) does not carry them.
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("tree").is_none() && json.get("gone").is_none() && json.get("layers").is_none(), "{json}");
    }

    #[test]
    fn a_corrupt_or_extended_layer_blob_is_refused_naming_it_never_read_as_if_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let text = "x".repeat(300_000);
        let (layout, manifest) = image(tmp.path(), &[&[("etc/motd", Some(text.as_str())), ("etc/group", Some("root:x:0:\n"))]]);
        let blob = layout.blob_path(&manifest.layers[0].digest);
        let good = std::fs::read(&blob).unwrap();
        assert!(scan(&layout, &manifest).is_ok());
        // A flipped byte inside the deflate stream, one in the gzip trailer, and a byte
        // after the stream: the inflating thread's error, or the blob's digest, stops it.
        for change in [Change::Flip(good.len() / 2), Change::Flip(good.len() - 3), Change::Append] {
            let mut bad = good.clone();
            match change {
                Change::Flip(at) => bad[at] ^= 0x55,
                Change::Append => bad.push(0),
            }
            std::fs::write(&blob, &bad).unwrap();
            let e = scan(&layout, &manifest).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(&blob.display().to_string()) || text.contains(manifest.layers[0].digest.hex()), "{change:?}: {text}");
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Change {
        Flip(usize),
        Append,
    }

    /// As `dotnet publish` writes `App.deps.json` (abridged).
    const DEPS: &str = r#"{
  "runtimeTarget": {"name": ".NETCoreApp,Version=v8.0/linux-x64", "signature": ""},
  "compilationOptions": {},
  "targets": {
    ".NETCoreApp,Version=v8.0/linux-x64": {
      "App/1.0.0": {"dependencies": {"Newtonsoft.Json": "13.0.3", "Lib": "1.0.0"}, "runtime": {"App.dll": {}}},
      "Newtonsoft.Json/13.0.3": {"runtime": {"lib/net6.0/Newtonsoft.Json.dll": {"assemblyVersion": "13.0.0.0", "fileVersion": "13.0.3.27908"}}},
      "Lib/1.0.0": {"runtime": {"Lib.dll": {}}}
    }
  },
  "libraries": {
    "App/1.0.0": {"type": "project", "serviceable": false, "sha512": ""},
    "Newtonsoft.Json/13.0.3": {"type": "package", "serviceable": true, "sha512": "sha512-HrC5BXdl00IP9zeV+0Z848QWPAoCr9P3bDEZguI+gkLcBKAOxix/tLEAAHC+UvDNPv4a2d18lOReHMOagPa+zQ==", "path": "newtonsoft.json/13.0.3", "hashPath": "newtonsoft.json.13.0.3.nupkg.sha512"},
    "Lib/1.0.0": {"type": "project", "serviceable": false, "sha512": ""}
  }
}
"#;

    /// A gzipped layer of (path, content) files and (path, target) hard links (content `None`).
    /// An image of one layer holding `entries`, with an empty config.
    fn one_layer_image(layout: &Layout, entries: &[(&str, Option<&[u8]>, &str)]) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: None,
            config: layout.put_blob("application/vnd.oci.image.config.v1+json", b"{}").unwrap(),
            layers: vec![layer(layout, entries)],
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    fn layer(layout: &Layout, entries: &[(&str, Option<&[u8]>, &str)]) -> oci::Descriptor {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            match data {
                Some(d) => {
                    h.set_size(d.len() as u64);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, path, link).unwrap();
                }
            }
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        layout.put_blob("application/vnd.oci.image.layer.v1.tar+gzip", &gz.finish().unwrap()).unwrap()
    }

    #[test]
    fn archives_programs_and_deps_json_across_layers_whiteouts_and_hard_links() {
        use crate::stages::evidence::{auditable, java};
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let pom = |a: &str| format!("groupId=g\nartifactId={a}\nversion=1.0\n");
        let jar_a = java::tests::zip(
            &[("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"), ("META-INF/maven/g/a/pom.properties", pom("a").as_bytes())],
            true,
        );
        let jar_b = java::tests::zip(
            &[("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"), ("META-INF/maven/g/b/pom.properties", pom("b").as_bytes())],
            true,
        );
        let prog = auditable::tests::elf(&auditable::tests::deflate(
            r#"{"packages":[{"name":"app","version":"0.1.0","root":true},{"name":"itoa","version":"1.0.11"}]}"#,
        ));
        let one = layer(
            &layout,
            &[
                ("opt/a.jar", Some(&jar_a), ""),
                ("opt/b.jar", Some(&jar_b), ""),
                ("usr/bin/prog", Some(&prog), ""),
                ("usr/bin/prog-link", None, "usr/bin/prog"),
                ("app/App.deps.json", Some(DEPS.as_bytes()), ""),
            ],
        );
        // The next layer removes b.jar and the program (its hard link stays), and links a.jar.
        let two =
            layer(&layout, &[("opt/.wh.b.jar", Some(b""), ""), ("opt/c.jar", None, "opt/a.jar"), ("usr/bin/.wh.prog", Some(b""), "")]);
        let config = layout.put_blob("application/vnd.oci.image.config.v1+json", b"{}").unwrap();
        let manifest =
            Manifest { schema_version: 2, media_type: None, config, layers: vec![one, two], subject: None, annotations: BTreeMap::new() };
        let r = scan(&layout, &manifest).unwrap();
        let got: Vec<(&str, &str, &str, &str)> =
            r.packages.iter().map(|p| (p.kind.as_str(), p.name.as_str(), p.version.as_str(), p.location.as_str())).collect();
        assert_eq!(
            got,
            [
                ("dotnet", "Newtonsoft.Json", "13.0.3", "/app/App.deps.json"),
                ("java-archive", "g:a", "1.0", "/opt/a.jar"),
                ("java-archive", "g:a", "1.0", "/opt/c.jar"),
                ("rust-crate", "app", "0.1.0", "/usr/bin/prog-link"),
                ("rust-crate", "itoa", "1.0.11", "/usr/bin/prog-link"),
            ]
        );
        // The archives and programs are files with their hashes, as every unowned file.
        assert_eq!(r.files["/opt/a.jar"], schema::model::Digest::of(&jar_a).hex());
        assert_eq!(r.files["/opt/c.jar"], schema::model::Digest::of(&jar_a).hex());
        assert_eq!(r.files["/usr/bin/prog-link"], schema::model::Digest::of(&prog).hex());
        assert!(!r.files.contains_key("/opt/b.jar") && !r.files.contains_key("/usr/bin/prog"));
    }

    #[test]
    fn a_broken_archive_or_section_in_an_image_is_refused_naming_it() {
        use crate::stages::evidence::auditable;
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let image = |entries: &[(&str, Option<&[u8]>, &str)]| one_layer_image(&layout, entries);
        let e = scan(&layout, &image(&[("srv/app.war", Some(b"PK\x03\x04 but no directory, long enough"), "")])).unwrap_err();
        assert!(matches!(&e, ScanError::Malformed { file, line: 1, .. } if file == "/srv/app.war"), "{e}");
        // An archive over the bound is refused by name, with a hint.
        let big = vec![0u8; usize::try_from(crate::stages::evidence::java::MAX).unwrap() + 1];
        let e = scan(&layout, &image(&[("opt/huge.jar", Some(&big), "")])).unwrap_err();
        assert!(matches!(&e, ScanError::TooLarge { file, .. } if file == "/opt/huge.jar"), "{e}");
        assert!(e.to_string().contains("hint:"), "{e}");
        let prog = auditable::tests::elf(b"not zlib");
        let e = scan(&layout, &image(&[("usr/bin/x", Some(&prog), "")])).unwrap_err();
        assert!(e.to_string().contains("`/usr/bin/x (cargo-auditable `.dep-v0` section)`: line 1: not zlib-compressed data"), "{e}");
    }

    /// Found by fuzzing review (issue 18): package files were read whole into memory, however
    /// large a layer's gzip made them inflate; and one that is not UTF-8 stopped the scan with
    /// an I/O error naming the layer blob, not the file.
    #[test]
    fn a_package_file_over_the_bound_or_not_utf8_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path()).unwrap();
        let image = |entries: &[(&str, Option<&[u8]>, &str)]| one_layer_image(&layout, entries);
        let big = vec![b'\n'; usize::try_from(MAX_TEXT).unwrap() + 1];
        let e = scan(&layout, &image(&[("var/lib/dpkg/status", Some(&big), "")])).unwrap_err();
        assert!(matches!(&e, ScanError::TextTooLarge { file, limit } if file == "/var/lib/dpkg/status" && *limit == MAX_TEXT), "{e}");
        assert!(e.to_string().contains("hint:"), "{e}");
        // At the bound, it is read.
        let at = vec![b'\n'; usize::try_from(MAX_TEXT).unwrap()];
        scan(&layout, &image(&[("var/lib/dpkg/status", Some(&at), "")])).unwrap();
        let e = scan(&layout, &image(&[("app/node_modules/x/package.json", Some(b"{\n\"name\": \"\xff\"}"), "")])).unwrap_err();
        assert!(
            matches!(&e, ScanError::Malformed { file, line: 2, message } if file == "/app/node_modules/x/package.json" && message == "not UTF-8 text"),
            "{e}"
        );
    }

    #[test]
    fn deps_json_packages_are_read_and_projects_left_out() {
        let found = dotnet_deps("app/App.deps.json", DEPS).unwrap();
        let got: Vec<(&str, &str, &str)> = found.iter().map(|f| (f.kind.as_str(), f.name.as_str(), f.version.as_str())).collect();
        assert_eq!(got, [("dotnet", "Newtonsoft.Json", "13.0.3")]);
        assert_eq!(found[0].location, "/app/App.deps.json");
        assert!(keep_text("app/App.deps.json"));
    }

    #[test]
    fn a_malformed_deps_json_is_refused_with_file_and_line() {
        let e = dotnet_deps("a/x.deps.json", "{\n \"libraries\": {\n  \"A/1\": {\"type\": }\n}}").unwrap_err();
        assert!(matches!(&e, ScanError::Malformed { file, line: 3, .. } if file == "/a/x.deps.json"), "{e}");
        let e = dotnet_deps("a/x.deps.json", "{\"targets\": {}}").unwrap_err();
        assert!(e.to_string().contains("no `libraries` object"), "{e}");
        let e = dotnet_deps("a/x.deps.json", "{\n\"libraries\": {\n\"NoVersion\": {\"type\": \"package\"}}}").unwrap_err();
        assert!(
            matches!(&e, ScanError::Malformed { line: 3, message, .. } if message.contains("`NoVersion` is not `Name/Version`")),
            "{e}"
        );
        let e = dotnet_deps("a/x.deps.json", "{\n\"libraries\": {\n\n\"A/1.0\": {}}}").unwrap_err();
        assert!(matches!(&e, ScanError::Malformed { line: 4, message, .. } if message.contains("no `type`")), "{e}");
    }
}
