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
//! - Rust crates from `Cargo.lock` files; npm packages from `node_modules/**/package.json`;
//!   Python distributions from `*.dist-info/METADATA` and `*.egg-info` (file or `PKG-INFO`);
//! - every regular file no package owns (outside the package databases), with its sha256.
//!
//! Layers are streamed: memory holds one entry per path and the package files' text, never a
//! layer or a file's content.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::goinfo;
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
}

/// A package found in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Found {
    /// syft's package type names: deb, apk, rust-crate, npm, python.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sha256: String,
    pub layer: usize,
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
    texts: BTreeMap<String, String>,
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
        // The blob is checked against its digest while it is read.
        let mut blob = HashingReader::new(io::BufReader::with_capacity(1 << 20, f));
        {
            let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&mut blob));
            for e in ar.entries().map_err(read_err)? {
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
                            let mut s = String::new();
                            let mut h = HashingReader::new(&mut e);
                            h.read_to_string(&mut s).map_err(read_err)?;
                            let (d, _) = h.finish();
                            t.texts.insert(p.clone(), s);
                            t.nodes.insert(p, Node::File { sha256: d.hex().to_owned(), layer: i });
                        } else {
                            let mut h = HashingReader::new(&mut e);
                            let mut go = goinfo::Sniffer::default();
                            io::copy(&mut h, &mut go).map_err(read_err)?;
                            // A Go program: its build information is kept as its text.
                            if let Some(raw) = go.found() {
                                t.texts.insert(p.clone(), go_text(&raw, &p)?);
                            }
                            t.nodes.insert(p, Node::File { sha256: h.finish().0.hex().to_owned(), layer: i });
                        }
                    }
                    tar::EntryType::Link => {
                        // A hard link: the same content as its target, written by this layer.
                        let target = e.link_name().ok().flatten().map(|t| t.to_string_lossy().trim_start_matches("./").to_owned());
                        let node = match target.and_then(|to| t.nodes.get(&to).cloned()) {
                            Some(Node::File { sha256, .. }) => Node::File { sha256, layer: i },
                            _ => Node::Other,
                        };
                        t.remove_under(&p, true, i);
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
        }
        io::copy(&mut blob, &mut io::sink()).map_err(read_err)?;
        let (d, _) = blob.finish();
        if d != layer.digest {
            return Err(LayoutError::DigestMismatch { path, expected: layer.digest.clone(), actual: d }.into());
        }
    }
    let mut out = catalog(&t.nodes, &t.texts)?;
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
            self.texts.remove(&k);
        }
    }
}

fn field<'a>(stanza: &'a str, key: &str) -> Option<&'a str> {
    stanza.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

fn catalog(tree: &BTreeMap<String, Node>, texts: &BTreeMap<String, String>) -> Result<ScanResult, ScanError> {
    let mut out = ScanResult::default();
    let mut owned: BTreeSet<String> = BTreeSet::new();
    for (path, text) in texts {
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
}
