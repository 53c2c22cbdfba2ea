//! Deterministic layers: a directory tree in, a gzip-compressed tar blob out, with its
//! `diff_id` (sha256 of the tar) and digest (sha256 of the gzip) computed in the same pass.
//!
//! The determinism contract (docs/architecture.md):
//! - entries in a sorted walk (each directory's children by file name bytes), parents first;
//! - every mtime set to the layer's epoch; uid/gid 0, empty user and group names; no
//!   atime/ctime, no xattrs (tar `default-features = false`), no sparse files;
//! - modes normalized ([`Modes::Normalize`]) or kept from a pinned input ([`Modes::Preserve`]);
//! - gzip: [`crate::pgzip`] in the release's layer gzip format (`[release] layer-gzip`):
//!   format 1, 128 KiB blocks deflated in parallel by flate2's zlib-rs backend at level 6, each
//!   primed with the previous 32 KiB ([`COMPRESSOR`]); format 2, one libdeflate gzip member per
//!   128 KiB block ([`COMPRESSOR_V2`]); format 3, format 2 with incompressible blocks stored
//!   ([`COMPRESSOR_V3`]). Header mtime 0, no file name, OS byte 255. The bytes
//!   do not depend on the thread count; another deflate implementation, level or block size
//!   gives other bytes, hence the format number.
//!
//! Nothing is held in memory: the tar stream goes through two hashing writers into the sink.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::pgzip::ParallelGzEncoder;
use schema::files::LayerGzip;
use schema::model::Digest;

/// The compressor of layer gzip format 1, pinned by the determinism contract; recorded in the
/// build output and in provenance ([`compressor`]).
pub const COMPRESSOR: &str = "gzip level 6, 128 KiB blocks with 32 KiB dictionaries, in parallel (flate2 1.1.11, zlib-rs backend)";
/// The compressor of layer gzip format 2.
pub const COMPRESSOR_V2: &str = "gzip, one member per 128 KiB block, in parallel (libdeflate 1.26.1 via libdeflater, level 4)";
/// The compressor of layer gzip format 3.
pub const COMPRESSOR_V3: &str =
    "gzip, one member per 128 KiB block, in parallel (libdeflate 1.26.1 via libdeflater, level 2; blocks whose 4 KiB samples do not shrink stored)";

/// What a release records as its compressor, per layer gzip format.
pub fn compressor(format: LayerGzip) -> &'static str {
    match format {
        LayerGzip::V1 => COMPRESSOR,
        LayerGzip::V2 => COMPRESSOR_V2,
        LayerGzip::V3 => COMPRESSOR_V3,
    }
}
const GZIP_LEVEL: u32 = 6;

/// How file modes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modes {
    /// Directories 0755; files 0755 when the owner may execute, else 0644; symlinks 0777.
    /// For source trees, whose modes depend on umask and checkout.
    Normalize,
    /// Permission bits (including setuid/setgid/sticky) as found: for trees unpacked from
    /// pinned packages, whose modes are part of what was pinned.
    Preserve,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}`: {kind} cannot go into a layer; hint: remove it from the source tree")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("layer destination `{0}` must be an absolute path without `..`")]
    BadDestination(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError::Io { path: path.to_owned(), source }
}

/// What a finished layer is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LayerInfo {
    /// sha256 of the compressed blob.
    pub digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// Size of the tar stream.
    pub tar_size: u64,
    /// Regular files written, when recording was asked for ([`LayerWriter::record_files`]).
    #[serde(skip)]
    pub files: Vec<FileRecord>,
}

/// A regular file as written into a layer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    /// Absolute path in the image.
    pub path: String,
    pub sha256: String,
    pub size: u64,
    pub mode: u32,
}

/// A writer that hashes and counts what passes through.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}
impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), count: 0 }
    }
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_sha256(&self.hasher.finalize()), self.count)
    }
}
impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}
impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), count: 0 }
    }
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(&self.hasher.finalize()), self.count)
    }
}

/// The sha256 and size of a file, streamed (never held in memory).
pub fn hash_file(path: &std::path::Path) -> io::Result<(Digest, u64)> {
    let mut r = HashingReader::new(io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?));
    io::copy(&mut r, &mut io::sink())?;
    Ok(r.finish())
}
impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

type Stack<W> = tar::Builder<HashingWriter<ParallelGzEncoder<HashingWriter<W>>>>;

/// Writes one layer into `sink`. Add trees with [`LayerWriter::add_tree`], then
/// [`LayerWriter::finish`].
pub struct LayerWriter<W: Write> {
    tar: Stack<W>,
    epoch: u64,
    /// Directories already written (so parents are written once).
    dirs: std::collections::BTreeSet<String>,
    files: Option<Vec<FileRecord>>,
}

impl<W: Write> std::fmt::Debug for LayerWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl<W: Write> LayerWriter<W> {
    /// A writer of layer gzip format 1 (what bases, pinned by digest in the lock, are made of).
    pub fn new(sink: W, epoch: i64) -> Self {
        Self::with_gzip(sink, epoch, LayerGzip::V1)
    }

    /// A writer of the given layer gzip format (`[release] layer-gzip`).
    pub fn with_gzip(sink: W, epoch: i64, format: LayerGzip) -> Self {
        let gz = ParallelGzEncoder::with_format(HashingWriter::new(sink), format, GZIP_LEVEL);
        let mut tar = tar::Builder::new(HashingWriter::new(gz));
        tar.mode(tar::HeaderMode::Deterministic);
        tar.follow_symlinks(false);
        tar.sparse(false);
        LayerWriter { tar, epoch: epoch.max(0) as u64, dirs: Default::default(), files: None }
    }

    /// Records every regular file written (path, sha256, size, mode), for the build-time SBOM.
    pub fn record_files(&mut self) {
        self.files.get_or_insert_with(Vec::new);
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.epoch);
        h.set_size(size);
        h
    }

    fn dir_entry(&mut self, path: &str, mode: u32) -> io::Result<()> {
        if !self.dirs.insert(path.to_owned()) {
            return Ok(());
        }
        let mut h = self.header(tar::EntryType::Directory, mode, 0);
        self.tar.append_data(&mut h, format!("{path}/"), io::empty())
    }

    /// Writes the parents of `path` (`a`, `a/b` for `a/b/c`) as 0755 directories.
    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            self.dir_entry(parent, 0o755)?;
            at += i + 1;
        }
        Ok(())
    }

    /// Adds the tree at `src` under `dest` (an absolute path in the image, `/` for the root).
    /// `src` itself becomes `dest`; its own mode is not recorded when `dest` is `/`.
    pub fn add_tree(&mut self, src: &Path, dest: &str, modes: Modes) -> Result<(), LayerError> {
        let prefix = normalize_dest(dest)?;
        if !prefix.is_empty() {
            self.parents(&format!("{prefix}/")).map_err(io_at(src))?;
        }
        // One read buffer for the whole tree: allocating one per file halves hashing speed.
        let mut buf = vec![0u8; 256 * 1024];
        for entry in walkdir::WalkDir::new(src).follow_links(false).sort_by_file_name() {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(src).to_owned();
                LayerError::Io { path, source: e.into() }
            })?;
            let rel = entry.path().strip_prefix(src).unwrap_or(entry.path());
            let rel = rel
                .to_str()
                .ok_or_else(|| LayerError::Unsupported { path: entry.path().to_owned(), kind: "a file name that is not UTF-8" })?;
            let path = match (prefix.is_empty(), rel.is_empty()) {
                (true, true) => continue,
                (true, false) => rel.to_owned(),
                (false, true) => prefix.clone(),
                (false, false) => format!("{prefix}/{rel}"),
            };
            let meta = entry.path().symlink_metadata().map_err(io_at(entry.path()))?;
            let ft = meta.file_type();
            let mode = file_mode(&meta, modes);
            if ft.is_dir() {
                // Re-adding a directory already written (a parent) keeps the first mode.
                self.dir_entry(&path, mode).map_err(io_at(entry.path()))?;
            } else if ft.is_symlink() {
                let target = fs::read_link(entry.path()).map_err(io_at(entry.path()))?;
                let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
                self.tar.append_link(&mut h, &path, &target).map_err(io_at(entry.path()))?;
            } else if ft.is_file() {
                let file = fs::File::open(entry.path()).map_err(io_at(entry.path()))?;
                let mut h = self.header(tar::EntryType::Regular, mode, meta.len());
                let reader = BufReaderWith { inner: file, buf: &mut buf, pos: 0, len: 0 };
                let mut reader = HashingReader::new(reader);
                self.tar.append_data(&mut h, &path, &mut reader).map_err(io_at(entry.path()))?;
                if let Some(files) = &mut self.files {
                    let (digest, size) = reader.finish();
                    files.push(FileRecord { path: format!("/{path}"), sha256: digest.hex().to_owned(), size, mode });
                }
            } else {
                use std::os::unix::fs::FileTypeExt;
                let kind = if ft.is_fifo() {
                    "a FIFO"
                } else if ft.is_socket() {
                    "a socket"
                } else {
                    "a device file"
                };
                return Err(LayerError::Unsupported { path: entry.path().to_owned(), kind });
            }
        }
        Ok(())
    }

    /// Adds one regular file with the given content.
    pub fn add_file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        self.parents(path)?;
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar.append_data(&mut h, path, data)?;
        if let Some(files) = &mut self.files {
            let d = Digest::of(data);
            files.push(FileRecord { path: format!("/{path}"), sha256: d.hex().to_owned(), size: data.len() as u64, mode });
        }
        Ok(())
    }

    /// Adds one symlink.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        self.parents(path)?;
        let mut h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target)
    }

    /// Adds one empty directory.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let path = path.trim_matches('/');
        self.parents(path)?;
        self.dir_entry(path, mode)
    }

    /// Adds one entry whose metadata the caller already normalized (the BuildKit backend's
    /// rootfs diff): `path` relative to the image root, permission bits `mode` and numeric
    /// owners kept as given; mtime = the layer's epoch, owner names empty. Parents not yet
    /// written are written as 0755 directories owned by root, so callers that care about a
    /// parent's mode add it first (entries must come in the sorted walk order).
    pub fn add_entry(&mut self, path: &str, mode: u32, owner: (u64, u64), data: EntryData<'_>) -> io::Result<()> {
        let path = path.trim_matches('/');
        self.parents(path)?;
        let (kind, size) = match &data {
            EntryData::Dir => (tar::EntryType::Directory, 0),
            EntryData::File { size, .. } => (tar::EntryType::Regular, *size),
            EntryData::Symlink(_) => (tar::EntryType::Symlink, 0),
            EntryData::Hardlink(_) => (tar::EntryType::Link, 0),
        };
        let mut h = self.header(kind, mode & 0o7777, size);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        match data {
            EntryData::Dir => {
                if !self.dirs.insert(path.to_owned()) {
                    return Ok(());
                }
                self.tar.append_data(&mut h, format!("{path}/"), io::empty())
            }
            EntryData::File { data, .. } => {
                let mut reader = HashingReader::new(data);
                self.tar.append_data(&mut h, path, &mut reader)?;
                if let Some(files) = &mut self.files {
                    let (digest, size) = reader.finish();
                    files.push(FileRecord { path: format!("/{path}"), sha256: digest.hex().to_owned(), size, mode: mode & 0o7777 });
                }
                Ok(())
            }
            EntryData::Symlink(target) => self.tar.append_link(&mut h, path, target),
            EntryData::Hardlink(target) => {
                let target = target.trim_start_matches('/');
                self.tar.append_link(&mut h, path, target)?;
                // A hard link is a regular file of the image: recorded with its target's content.
                if let Some(files) = &mut self.files {
                    let want = format!("/{target}");
                    if let Some(t) = files.iter().rev().find(|f| f.path == want).cloned() {
                        files.push(FileRecord { path: format!("/{path}"), ..t });
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends the tar stream and the gzip member; returns the sink and what was written.
    pub fn finish(self) -> io::Result<(W, LayerInfo)> {
        let files = self.files.unwrap_or_default();
        let tar_hash = self.tar.into_inner()?;
        let (gz, diff_id, tar_size) = tar_hash.finish();
        let blob = gz.finish()?;
        let (sink, digest, size) = blob.finish();
        Ok((sink, LayerInfo { digest, diff_id, size, tar_size, files }))
    }
}

/// What an entry of [`LayerWriter::add_entry`] is.
pub enum EntryData<'a> {
    Dir,
    /// A regular file of `size` bytes read from `data`.
    File {
        size: u64,
        data: &'a mut dyn Read,
    },
    Symlink(&'a str),
    /// A hard link to an entry written earlier in the same layer (path from the image root).
    Hardlink(&'a str),
}

impl std::fmt::Debug for EntryData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryData::Dir => f.write_str("Dir"),
            EntryData::File { size, .. } => write!(f, "File({size} bytes)"),
            EntryData::Symlink(t) => write!(f, "Symlink({t})"),
            EntryData::Hardlink(t) => write!(f, "Hardlink({t})"),
        }
    }
}

/// A `Read` over a file that reuses the caller's buffer (tar's `append_data` copies with its
/// own small buffer; this one keeps large reads).
struct BufReaderWith<'a> {
    inner: fs::File,
    buf: &'a mut [u8],
    pos: usize,
    len: usize,
}
impl Read for BufReaderWith<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            self.len = self.inner.read(self.buf)?;
            self.pos = 0;
            if self.len == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn file_mode(meta: &fs::Metadata, modes: Modes) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let raw = meta.permissions().mode();
    match modes {
        Modes::Preserve => raw & 0o7777,
        Modes::Normalize if meta.is_dir() => 0o755,
        Modes::Normalize if raw & 0o100 != 0 => 0o755,
        Modes::Normalize => 0o644,
    }
}

/// `/usr/bin/` -> `usr/bin`; `/` -> ``. Refuses relative paths and `..`.
fn normalize_dest(dest: &str) -> Result<String, LayerError> {
    if !dest.starts_with('/') || dest.split('/').any(|c| c == ".." || c == ".") {
        return Err(LayerError::BadDestination(dest.to_owned()));
    }
    Ok(dest.split('/').filter(|c| !c.is_empty()).collect::<Vec<_>>().join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_of(dir: &Path, epoch: i64) -> (Vec<u8>, LayerInfo) {
        let mut w = LayerWriter::new(Vec::new(), epoch);
        w.add_tree(dir, "/opt/app", Modes::Normalize).unwrap();
        w.finish().unwrap()
    }

    /// A tree whose files span several 128 KiB gzip blocks, compressible and not.
    fn golden_tree(d: &Path) {
        let mut x: u32 = 7;
        let mut bytes = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    if (i / 512) % 2 == 0 {
                        b"stellaops layer golden "[i % 23]
                    } else {
                        (x >> 24) as u8
                    }
                })
                .collect()
        };
        fs::create_dir_all(d.join("lib/deep")).unwrap();
        fs::write(d.join("lib/deep/big.bin"), bytes(700 * 1024 + 3)).unwrap();
        fs::write(d.join("lib/small.txt"), bytes(100)).unwrap();
        fs::write(d.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("lib/small.txt", d.join("link")).unwrap();
    }

    #[test]
    fn golden_format_1_keeps_the_bytes_of_every_release_before_format_2_and_format_2_is_frozen() {
        let d = tempfile::tempdir().unwrap();
        golden_tree(d.path());
        // Computed by the pipeline as it was before layer gzip format 2 existed (commit
        // 809f995): a release that keeps format 1 rebuilds to the digests it always had.
        let (_, v1) = layer_of(d.path(), 1_700_000_000);
        assert_eq!(v1.digest.to_string(), "sha256:db85f65205b9f26b7459e7a7bcc6cac973205ef33c6d8aa6ff9ec3209a6ed00e");
        assert_eq!(v1.diff_id.to_string(), "sha256:88a7b28c044656d8bc1bd4becbe8c501f402bc0638caff07ecd4be44a3000e93");
        assert_eq!(v1.size, 364_831);
        // Format 2: the same tar (diff_id), other gzip bytes, frozen from here on.
        let mut w = LayerWriter::with_gzip(Vec::new(), 1_700_000_000, LayerGzip::V2);
        w.add_tree(d.path(), "/opt/app", Modes::Normalize).unwrap();
        let (bytes, v2) = w.finish().unwrap();
        assert_eq!(v2.diff_id, v1.diff_id);
        assert_ne!(v2.digest, v1.digest);
        assert_eq!(v2.digest.to_string(), "sha256:28e8633676c4d9b80b51c6d521d2f4d820335fbb8236431324310d9359f25ddb");
        // Several members (the tar spans several blocks), read back whole.
        assert!(bytes.windows(10).filter(|w| *w == [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]).count() >= 6);
        let mut tar = Vec::new();
        io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut tar).unwrap();
        assert_eq!(Digest::of(&tar), v1.diff_id);
    }

    #[test]
    fn golden_format_3_stores_incompressible_blocks_only_and_is_frozen() {
        let with = |d: &Path, format| {
            let mut w = LayerWriter::with_gzip(Vec::new(), 1_700_000_000, format);
            w.add_tree(d, "/opt/app", Modes::Normalize).unwrap();
            w.finish().unwrap()
        };
        let stored_members = |bytes: &[u8]| bytes.windows(10).filter(|w| *w == [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]).count();
        // The golden tree: every block is half text, every sample shrinks, nothing is stored.
        let d = tempfile::tempdir().unwrap();
        golden_tree(d.path());
        let (b2, v2) = with(d.path(), LayerGzip::V2);
        let (b3, v3) = with(d.path(), LayerGzip::V3);
        assert_eq!(v3.diff_id, v2.diff_id);
        assert_ne!(v3.digest, v2.digest, "format 3 deflates at its own level");
        assert_eq!((stored_members(&b2), stored_members(&b3)), (0, 0));
        // With 600 KiB of noise: those blocks are stored (deflate finds nothing in them); the
        // same tar; frozen from here on.
        let mut x: u64 = 88_172_645_463_325_252;
        let noise: Vec<u8> = (0..600 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(d.path().join("lib/noise.bin"), &noise).unwrap();
        let (b2, v2) = with(d.path(), LayerGzip::V2);
        let (b3, v3) = with(d.path(), LayerGzip::V3);
        assert_eq!(v3.diff_id, v2.diff_id);
        assert!(stored_members(&b3) >= 3, "{}", stored_members(&b3));
        assert_eq!(stored_members(&b2), 0);
        let mut tar = Vec::new();
        io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&b3[..]), &mut tar).unwrap();
        assert_eq!(Digest::of(&tar), v3.diff_id);
        assert_eq!(v3.digest.to_string(), "sha256:58bc64963d82661907479357015326112771817149fd263e87b0cf600bf3f885");
    }

    #[test]
    fn same_tree_same_bytes_whatever_mtime_and_umask_bits() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for (i, d) in [a.path(), b.path()].into_iter().enumerate() {
            fs::create_dir_all(d.join("z/y")).unwrap();
            fs::write(d.join("z/y/f"), b"hello").unwrap();
            fs::write(d.join("a"), b"a").unwrap();
            std::os::unix::fs::symlink("a", d.join("l")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            let mode = if i == 0 { 0o600 } else { 0o664 };
            fs::set_permissions(d.join("a"), fs::Permissions::from_mode(mode)).unwrap();
        }
        let (x, ix) = layer_of(a.path(), 1_700_000_000);
        let (y, iy) = layer_of(b.path(), 1_700_000_000);
        assert_eq!(ix, iy);
        assert_eq!(x, y);
        assert_eq!(Digest::of(&x), ix.digest);
        // The tar lists parents first, sorted, with the epoch and root owner.
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&x[..]));
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
            assert_eq!(e.header().uid().unwrap(), 0);
            names.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(names, ["opt/", "opt/app/", "opt/app/a", "opt/app/l", "opt/app/z/", "opt/app/z/y/", "opt/app/z/y/f"]);
    }

    #[test]
    fn a_fifo_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(status.success());
        let mut w = LayerWriter::new(io::sink(), 0);
        let e = w.add_tree(d.path(), "/", Modes::Normalize).unwrap_err();
        assert!(e.to_string().contains("pipe") && e.to_string().contains("FIFO"), "{e}");
    }
}
