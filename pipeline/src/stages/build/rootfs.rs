//! Normalization of a BuildKit result: the exported root filesystem (a tar from BuildKit's
//! `tar` exporter) minus the base's root filesystem (its layers in the layout) becomes one
//! deterministic layer, written by [`LayerWriter`].
//!
//! ```text
//! base layers (gzip, in the layout) ─► index: path -> (kind, mode, owner, content sha256)
//! exported rootfs tar ─────────────► index + offsets ─► changed paths + whiteouts
//!                                                      ─► sorted walk ─► LayerWriter
//! ```
//!
//! What BuildKit's (pre-0.11) exporter leaves nondeterministic is dropped or fixed here:
//! every mtime (COPY keeps the context's, RUN stamps the wall clock, RUN-created mount points
//! and parent directories included) becomes the epoch; owner names are dropped; entries come in
//! the sorted walk order; xattrs and PAX records do not pass. Permission bits and numeric
//! owners are kept: a Dockerfile sets them on purpose (`chmod`, `chown`, `adduser`), and given
//! the same Dockerfile and context BuildKit makes the same ones. Paths whose kind, mode, owner
//! and content equal the base's are left out (they are in the base layers); a base path that is
//! gone becomes a whiteout (`.wh.<name>`) under its nearest surviving directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use oci::layer::{EntryData, LayerInfo, LayerWriter};
use oci::{self, Descriptor, Layout};
use schema::model::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("base layer `{digest}` has media type `{media_type}`, which this backend cannot read")]
    LayerType { digest: Digest, media_type: String },
    #[error("`/{path}` in the build result is {kind}, which cannot go into a layer; hint: do not create it in a RUN step")]
    Unsupported { path: String, kind: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    /// sha256 of the content.
    File(Digest),
    Symlink(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
}

/// An entry of the exported rootfs: metadata, and where its content is in the tar.
#[derive(Debug, Clone)]
struct Exported {
    meta: Meta,
    /// Regular files: offset and size of the content in the export tar.
    data: Option<(u64, u64)>,
    /// Hard links: the path they link to (its content is that entry's).
    link: Option<String>,
}

/// `./a/b/` -> `a/b`; the root (`.`, `./`, `/`) -> `` (which the indexes skip).
fn clean(path: &[u8]) -> String {
    let s = String::from_utf8_lossy(path);
    let p = s.trim_start_matches("./").trim_matches('/').trim_start_matches("./");
    if p == "." {
        String::new()
    } else {
        p.to_owned()
    }
}

/// Sort key of the walk order: each directory's children by name bytes, parents first.
fn walk_key(path: &str) -> Vec<&[u8]> {
    path.split('/').map(str::as_bytes).collect()
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn sha256_of(r: &mut impl Read) -> io::Result<Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_sha256(&h.finalize()))
}

fn unsupported(kind: tar::EntryType) -> Option<&'static str> {
    match kind {
        tar::EntryType::Char | tar::EntryType::Block => Some("a device file"),
        tar::EntryType::Fifo => Some("a FIFO"),
        _ => None,
    }
}

/// The root filesystem that the base's layers make, applying whiteouts.
fn base_index(layout: &Layout, layers: &[Descriptor]) -> Result<BTreeMap<String, Meta>, RootfsError> {
    let mut fs: BTreeMap<String, Meta> = BTreeMap::new();
    for l in layers {
        let path = layout.blob_path(&l.digest);
        let io_err = |source| RootfsError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io_err)?;
        let reader: Box<dyn Read> = if l.media_type == oci::MEDIA_LAYER_GZIP || l.media_type == oci::MEDIA_DOCKER_LAYER {
            Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file)))
        } else if l.media_type == "application/vnd.oci.image.layer.v1.tar" {
            Box::new(io::BufReader::new(file))
        } else {
            return Err(RootfsError::LayerType { digest: l.digest.clone(), media_type: l.media_type.clone() });
        };
        let mut ar = tar::Archive::new(reader);
        let mut links: Vec<(String, String)> = Vec::new();
        for e in ar.entries().map_err(io_err)? {
            let mut e = e.map_err(io_err)?;
            let p = clean(&e.path_bytes());
            if p.is_empty() {
                continue;
            }
            let name = p.rsplit('/').next().unwrap_or(&p).to_owned();
            if name == ".wh..wh..opq" {
                let dir = parent(&p).unwrap_or("").to_owned();
                let prefix = format!("{dir}/");
                fs.retain(|k, _| !k.starts_with(&prefix) || dir.is_empty());
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = match parent(&p) {
                    Some(d) => format!("{d}/{gone}"),
                    None => gone.to_owned(),
                };
                let prefix = format!("{gone}/");
                fs.retain(|k, _| k != &gone && !k.starts_with(&prefix));
                continue;
            }
            let h = e.header();
            let (mode, uid, gid) = (h.mode().map_err(io_err)? & 0o7777, h.uid().map_err(io_err)?, h.gid().map_err(io_err)?);
            let kind = match h.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(
                    e.link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .ok_or_else(|| RootfsError::Unsupported { path: p.clone(), kind: "a link without a target" })?,
                ),
                tar::EntryType::Link => {
                    let target = e
                        .link_name_bytes()
                        .map(|b| clean(&b))
                        .ok_or_else(|| RootfsError::Unsupported { path: p.clone(), kind: "a link without a target" })?;
                    links.push((p.clone(), target));
                    continue;
                }
                _ => Kind::File(sha256_of(&mut e).map_err(io_err)?),
            };
            fs.insert(p, Meta { kind, mode, uid, gid });
        }
        for (p, target) in links {
            if let Some(m) = fs.get(&target).cloned() {
                fs.insert(p, m);
            }
        }
    }
    Ok(fs)
}

/// Indexes the exported rootfs tar: metadata, content digests and offsets.
fn export_index(export: &Path) -> Result<BTreeMap<String, Exported>, RootfsError> {
    let io_err = |source| RootfsError::Io { path: export.to_owned(), source };
    let file = File::open(export).map_err(io_err)?;
    let mut ar = tar::Archive::new(io::BufReader::new(file));
    let mut out: BTreeMap<String, Exported> = BTreeMap::new();
    let mut links = Vec::new();
    for e in ar.entries().map_err(io_err)? {
        let mut e = e.map_err(io_err)?;
        let p = clean(&e.path_bytes());
        if p.is_empty() {
            continue;
        }
        let h = e.header();
        let kind = h.entry_type();
        if let Some(k) = unsupported(kind) {
            return Err(RootfsError::Unsupported { path: p, kind: k });
        }
        let (mode, uid, gid) = (h.mode().map_err(io_err)? & 0o7777, h.uid().map_err(io_err)?, h.gid().map_err(io_err)?);
        let (k, data) = match kind {
            tar::EntryType::Directory => (Kind::Dir, None),
            tar::EntryType::Symlink => (
                Kind::Symlink(
                    e.link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .ok_or_else(|| RootfsError::Unsupported { path: p.clone(), kind: "a link without a target" })?,
                ),
                None,
            ),
            tar::EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .map(|b| clean(&b))
                    .ok_or_else(|| RootfsError::Unsupported { path: p.clone(), kind: "a link without a target" })?;
                links.push((p, target, mode, uid, gid));
                continue;
            }
            _ => {
                let offset = e.raw_file_position();
                let size = e.size();
                (Kind::File(sha256_of(&mut e).map_err(io_err)?), Some((offset, size)))
            }
        };
        out.insert(p, Exported { meta: Meta { kind: k, mode, uid, gid }, data, link: None });
    }
    for (p, target, mode, uid, gid) in links {
        if let Some(t) = out.get(&target).cloned() {
            out.insert(p, Exported { meta: Meta { kind: t.meta.kind, mode, uid, gid }, data: t.data, link: Some(target) });
        }
    }
    Ok(out)
}

/// What [`diff_layer`] wrote.
#[derive(Debug, Clone)]
pub struct DiffLayer {
    pub descriptor: Descriptor,
    pub info: LayerInfo,
    /// Paths written (added or changed) and whiteouts.
    pub changed: usize,
    pub removed: usize,
}

/// Writes into `layout` the layer that turns the base (`base_layers`) into the exported
/// rootfs `export`, with every mtime = `epoch`.
pub fn diff_layer(layout: &Layout, base_layers: &[Descriptor], export: &Path, epoch: i64) -> Result<DiffLayer, RootfsError> {
    let base = base_index(layout, base_layers)?;
    let exported = export_index(export)?;

    // 1. What changed, and what is gone (the topmost gone path under a surviving directory).
    enum Op<'a> {
        Put(&'a str, &'a Exported),
        Whiteout(String),
    }
    let mut ops: Vec<(String, Op<'_>)> = Vec::new();
    for (p, e) in &exported {
        if base.get(p) != Some(&e.meta) {
            ops.push((p.clone(), Op::Put(p, e)));
        }
    }
    let mut removed = 0;
    for p in base.keys() {
        if exported.contains_key(p) {
            continue;
        }
        let survives = match parent(p) {
            None => true,
            Some(d) => exported.get(d).is_some_and(|e| e.meta.kind == Kind::Dir),
        };
        if survives {
            let wh = match p.rsplit_once('/') {
                Some((d, n)) => format!("{d}/.wh.{n}"),
                None => format!(".wh.{p}"),
            };
            removed += 1;
            ops.push((wh.clone(), Op::Whiteout(wh)));
        }
    }
    ops.sort_by(|a, b| walk_key(&a.0).cmp(&walk_key(&b.0)));
    let written: BTreeSet<&str> = ops
        .iter()
        .filter_map(|(_, op)| match op {
            Op::Put(p, _) => Some(*p),
            Op::Whiteout(_) => None,
        })
        .collect();
    let changed = written.len();

    // 2. The layer, in the walk order; parents with their exported metadata.
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| RootfsError::Io { path, source }
    };
    let mut tar_file = File::open(export).map_err(io_err(export))?;
    let (digest, size, info) = layout
        .put_blob_with(|w| {
            let mut lw = LayerWriter::new(w, epoch);
            lw.record_files();
            let mut done: BTreeSet<String> = BTreeSet::new();
            for (path, op) in &ops {
                // Parents first, as they are in the result.
                let mut at = 0;
                while let Some(i) = path[at..].find('/') {
                    let dir = &path[..at + i];
                    at += i + 1;
                    if done.insert(dir.to_owned()) {
                        if let Some(e) = exported.get(dir) {
                            lw.add_entry(dir, e.meta.mode, (e.meta.uid, e.meta.gid), EntryData::Dir)?;
                        }
                    }
                }
                match op {
                    Op::Whiteout(p) => {
                        lw.add_entry(p, 0o644, (0, 0), EntryData::File { size: 0, data: &mut io::empty() })?;
                    }
                    Op::Put(p, e) => {
                        let owner = (e.meta.uid, e.meta.gid);
                        let mode = e.meta.mode;
                        match (&e.meta.kind, &e.link) {
                            (Kind::Dir, _) => {
                                if done.insert((*p).to_owned()) {
                                    lw.add_entry(p, mode, owner, EntryData::Dir)?;
                                }
                            }
                            (Kind::Symlink(t), _) => lw.add_entry(p, mode, owner, EntryData::Symlink(t))?,
                            (Kind::File(_), Some(target)) if written.contains(target.as_str()) && walk_key(target) < walk_key(p) => {
                                lw.add_entry(p, mode, owner, EntryData::Hardlink(target))?
                            }
                            (Kind::File(_), _) => {
                                let (offset, size) = e.data.unwrap_or((0, 0));
                                tar_file.seek(SeekFrom::Start(offset))?;
                                let mut data = (&mut tar_file).take(size);
                                lw.add_entry(p, mode, owner, EntryData::File { size, data: &mut data })?;
                            }
                        }
                    }
                }
            }
            let (sink, info) = lw.finish()?;
            sink.flush()?;
            Ok(info)
        })
        .map_err(|e| match e {
            oci::LayoutError::Io { path, source } => RootfsError::Io { path, source },
            other => RootfsError::Io { path: layout.root().to_owned(), source: io::Error::other(other.to_string()) },
        })?;
    Ok(DiffLayer { descriptor: Descriptor::new(oci::MEDIA_LAYER_GZIP, digest, size), info, changed, removed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_entry_of_a_tar_is_no_path() {
        // Regression: umoci writes the root as `.`, which became a path of the base that the
        // build result lacked, so the layer carried a whiteout `.wh..` of the root.
        for root in [".", "./", "/", ""] {
            assert_eq!(clean(root.as_bytes()), "", "{root:?}");
        }
        assert_eq!(clean(b"./etc/"), "etc");
        assert_eq!(clean(b"./.hidden"), ".hidden");
    }

    fn tar_of(entries: &[(&str, tar::EntryType, u32, &[u8], u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, mode, data, mtime) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_mtime(*mtime);
            h.set_uid(0);
            h.set_gid(0);
            if *kind == tar::EntryType::Symlink {
                h.set_size(0);
                b.append_link(&mut h, path, std::str::from_utf8(data).unwrap()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    /// A base layer in a fresh layout; returns the layout and the layer's descriptor.
    fn base(dir: &Path) -> (Layout, Descriptor) {
        use tar::EntryType::*;
        let layout = Layout::create(&dir.join("layout")).unwrap();
        let raw = tar_of(&[
            ("bin/", Directory, 0o755, b"", 1),
            ("bin/busybox", Regular, 0o755, b"bb", 1),
            ("bin/sh", Symlink, 0o777, b"busybox", 1),
            ("etc/", Directory, 0o755, b"", 1),
            ("etc/old", Regular, 0o644, b"old", 1),
            ("tmp/", Directory, 0o1777, b"", 1),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let desc = layout.put_blob(oci::MEDIA_LAYER_GZIP, &gz.finish().unwrap()).unwrap();
        (layout, desc)
    }

    fn entries(layout: &Layout, d: &Digest) -> Vec<(String, u32, u64, String)> {
        let f = File::open(layout.blob_path(d)).unwrap();
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().mode().unwrap(), e.header().mtime().unwrap(), s)
            })
            .collect()
    }

    #[test]
    fn only_changes_go_into_the_layer_with_clamped_times_and_whiteouts() {
        use tar::EntryType::*;
        let d = tempfile::tempdir().unwrap();
        let (layout, desc) = base(d.path());
        // The export: the base with new mtimes (as BuildKit stamps them), /etc/old gone, a
        // new file in /tmp (whose 1777 parent must stay 1777) and a new app directory.
        let export = |mtime: u64, order_flip: bool| {
            let mut e: Vec<(&str, tar::EntryType, u32, &[u8], u64)> = vec![
                ("./", Directory, 0o755, b"", mtime),
                ("bin/", Directory, 0o755, b"", mtime),
                ("bin/busybox", Regular, 0o755, b"bb", mtime),
                ("bin/sh", Symlink, 0o777, b"busybox", mtime),
                ("etc/", Directory, 0o755, b"", mtime),
                ("tmp/", Directory, 0o1777, b"", mtime),
                ("tmp/made", Regular, 0o600, b"by RUN", mtime),
                ("app/", Directory, 0o755, b"", mtime),
                ("app/z", Regular, 0o644, b"z", mtime),
                ("app-x", Regular, 0o644, b"x", mtime),
            ];
            if order_flip {
                e.reverse();
            }
            tar_of(&e)
        };
        let mut digests = Vec::new();
        for (i, (mtime, flip)) in [(1_900_000_000, false), (1_900_000_777, true)].into_iter().enumerate() {
            let p = d.path().join(format!("export-{i}.tar"));
            std::fs::write(&p, export(mtime, flip)).unwrap();
            let l = diff_layer(&layout, std::slice::from_ref(&desc), &p, 1_800_000_000).unwrap();
            assert_eq!((l.changed, l.removed), (4, 1));
            digests.push(l.descriptor.digest);
        }
        assert_eq!(digests[0], digests[1]);
        let got = entries(&layout, &digests[0]);
        let names: Vec<(&str, u32)> = got.iter().map(|(p, m, _, _)| (p.as_str(), *m)).collect();
        assert_eq!(
            names,
            [
                ("app/", 0o755),
                ("app/z", 0o644),
                ("app-x", 0o644),
                ("etc/", 0o755),
                ("etc/.wh.old", 0o644),
                ("tmp/", 0o1777),
                ("tmp/made", 0o600),
            ]
        );
        assert!(got.iter().all(|(_, _, t, _)| *t == 1_800_000_000));
        assert_eq!(got[6].3, "by RUN");
    }
}
