//! Benchmarks behind `cargo xtask bench`: layer writing and hashing, SBOM + scan, and offline
//! kits, each measured against the machine's own tools on the same input, in one run, as
//! ratios. Not tests: numbers vary between machines; ratios measured together are what to
//! compare.
//!
//! - [`layer`]: a generated tree of mixed files (warm page cache) written as a layer by our
//!   writer (tar + gzip-6 + diff_id + digest) and by `tar --sort=name -c | gzip -6` (and
//!   `pigz -6` when installed); the layer hashed by our sha256, `sha256sum` and
//!   `openssl dgst`; peak memory of the writer on the full tree and on an eighth of it (a
//!   child process each, see [`layer_peak`]), to show it stays flat as the input grows;
//! - [`sbom`]: scan + SBOM of a realistic root file system against `syft oci-dir:`;
//! - [`kit`]: `kit build` against `tar -c | zstd -T0 -3` and `kit import` against
//!   `zstd -d | sha256sum`, on a release carrying a generated tree ([`bulk_release`]).
//!
//! Every external command runs through [`oci::cmd::Cmd`]; the peers are shell pipelines.
//! Nothing here prints: each function returns a report, and says what it is doing through
//! [`Event::Note`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use oci::cmd::{Cmd, CmdError};
use oci::layer::{HashingReader, LayerWriter, Modes};
use schema::files::LayerGzip;
use schema::report::{Event, Reporter};
use serde::Serialize;

/// The mtime of every generated layer entry.
const EPOCH: i64 = 1_700_000_000;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Layer(#[from] oci::layer::LayerError),
    #[error(transparent)]
    Layout(#[from] oci::LayoutError),
    #[error(transparent)]
    Scan(#[from] crate::stages::evidence::scan::ScanError),
    #[error("{0}")]
    Other(String),
}

/// One comparison: the same work done by us and by a peer, on `bytes` of input.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was done (`layer write`, `sha256`, ...).
    pub what: String,
    /// What did it on our side.
    pub ours: String,
    /// What did it on the peer's side (a shell pipeline, or a tool).
    pub peer: String,
    /// The input the rates are over.
    pub bytes: u64,
    pub ours_seconds: f64,
    pub peer_seconds: f64,
    /// How many times faster ours was: `peer_seconds / ours_seconds`.
    pub ratio: f64,
    /// Our peak resident memory, when it ran in a process of its own.
    pub ours_peak_rss_kib: Option<u64>,
}

impl Measurement {
    fn new(what: &str, ours: &str, peer: &str, bytes: u64, ours_seconds: f64, peer_seconds: f64) -> Measurement {
        Measurement {
            what: what.to_owned(),
            ours: ours.to_owned(),
            peer: peer.to_owned(),
            bytes,
            ours_seconds,
            peer_seconds,
            ratio: peer_seconds / ours_seconds,
            ours_peak_rss_kib: None,
        }
    }
    /// Our rate in MB/s (10^6 bytes).
    pub fn ours_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.ours_seconds
    }
    /// The peer's rate in MB/s (10^6 bytes).
    pub fn peer_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.peer_seconds
    }
}

/// What [`layer`] measures.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// Where the trees and layers go.
    pub dir: PathBuf,
    /// Size of the generated tree in MiB.
    pub size_mib: u64,
    /// A program that, run as `<exe> bench --layer-only DIR`, writes one layer of DIR and
    /// prints its own peak memory in KiB ([`layer_peak`]): the xtask binary.
    pub exe: PathBuf,
    /// The layer gzip format to measure (the other is timed too, for the ratio).
    pub gzip: LayerGzip,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Bytes of the generated tree.
    pub input_bytes: u64,
    /// Bytes of our compressed layer.
    pub layer_bytes: u64,
    pub compressor: String,
    /// The layer gzip format measured (`--layer-gzip`).
    pub layer_gzip: LayerGzip,
    /// The other layer gzip format measured.
    pub other_layer_gzip: LayerGzip,
    /// Our layer writer against itself in the other layer gzip format.
    pub write_other: Measurement,
    /// Bytes of the layer in the other format.
    pub other_layer_bytes: u64,
    /// Our layer writer against `tar --sort=name -c | gzip -6`.
    pub write_gzip: Measurement,
    /// ... and against `tar --sort=name -c | pigz -6`, when installed.
    pub write_pigz: Option<Measurement>,
    /// ... and against `umoci insert` (the fastest image tool here: a gzip layer of the tree
    /// into an OCI layout, with its digests), when installed.
    pub write_umoci: Option<Measurement>,
    /// Bytes of umoci's compressed layer (ours must be no larger).
    pub umoci_layer_bytes: Option<u64>,
    /// Our sha256 of the layer against `sha256sum`.
    pub sha256sum: Measurement,
    /// ... and against `openssl dgst -sha256`, when installed.
    pub openssl: Option<Measurement>,
    /// Peak memory of the layer writer on an eighth of the input.
    pub peak_rss_kib_eighth: u64,
    /// Peak memory of the layer writer on all of it.
    pub peak_rss_kib_full: u64,
    pub page_cache: String,
}

/// Fills `dir` with about `bytes` of files: sizes from 4 KiB to 8 MiB, content half text-like
/// (compressible) and half noise, from a fixed seed (the same tree every run).
pub fn make_tree(dir: &Path, bytes: u64) -> Result<u64, BenchError> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<&[u8]> = [&b"release "[..], b"layer ", b"digest ", b"sha256 ", b"stellaops ", b"component\n", b"{\"k\": 1} "].to_vec();
    let mut written = 0u64;
    let mut i = 0u64;
    let mut buf = Vec::with_capacity(8 << 20);
    while written < bytes {
        let size = 4096u64 << (next() % 12);
        let size = size.min(bytes - written).max(1);
        buf.clear();
        while (buf.len() as u64) < size {
            if next() % 2 == 0 {
                for _ in 0..64 {
                    buf.extend_from_slice(words[(next() % words.len() as u64) as usize]);
                }
            } else {
                for _ in 0..64 {
                    buf.extend_from_slice(&next().to_le_bytes());
                }
            }
        }
        buf.truncate(size as usize);
        let sub = dir.join(format!("d{:02}/e{:02}", i % 17, i % 5));
        fs::create_dir_all(&sub)?;
        fs::write(sub.join(format!("f{i:05}.bin")), &buf)?;
        written += size;
        i += 1;
    }
    Ok(written)
}

fn layer_of(tree: &Path, out: &Path, gzip: LayerGzip) -> Result<oci::layer::LayerInfo, BenchError> {
    let f = io::BufWriter::with_capacity(1 << 20, fs::File::create(out)?);
    let mut w = LayerWriter::with_gzip(f, EPOCH, gzip);
    w.add_tree(tree, "/", Modes::Normalize)?;
    let (mut f, info) = w.finish()?;
    f.flush()?;
    Ok(info)
}

/// This process's peak resident memory in KiB (0 when unknown).
fn own_peak_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status").ok().as_deref().and_then(oci::cmd::vm_hwm_kib).unwrap_or(0)
}

/// Writes one layer of `tree` (to a temporary file) and returns this process's peak memory in
/// KiB: what `<exe> bench --layer-only DIR` runs, in a process of its own.
pub fn layer_peak(tree: &Path, gzip: LayerGzip) -> Result<u64, BenchError> {
    let tmp = tempfile::NamedTempFile::new()?;
    layer_of(tree, tmp.path(), gzip)?;
    Ok(own_peak_rss_kib())
}

/// Runs a shell pipeline to its end (status 0 required) and returns its wall time in seconds.
fn time_shell(what: &str, script: &str) -> Result<f64, BenchError> {
    let t = Instant::now();
    Cmd::new("sh", what).args(["-c", script]).run()?;
    Ok(t.elapsed().as_secs_f64())
}

fn have(tool: &str) -> bool {
    Cmd::new("sh", format!("look for {tool}")).args(["-c", &format!("command -v {tool} >/dev/null")]).output().is_ok_and(|f| f.success())
}

/// `umoci insert` of `tree` into a new empty image of an OCI layout under `dir`: its time
/// (the insert alone) and the size of the layer it wrote (the blob that appeared).
fn umoci_insert(dir: &Path, tree: &Path) -> Result<(f64, u64), BenchError> {
    let layout = dir.join("umoci");
    let _ = fs::remove_dir_all(&layout);
    Cmd::new("umoci", "make an OCI layout for umoci").arg("init").arg("--layout").arg(&layout).run()?;
    Cmd::new("umoci", "make an empty image for umoci").arg("new").arg("--image").arg(format!("{}:bench", layout.display())).run()?;
    let blobs = |l: &Path| -> Result<std::collections::BTreeMap<std::ffi::OsString, u64>, BenchError> {
        let mut out = std::collections::BTreeMap::new();
        for e in fs::read_dir(l.join("blobs/sha256"))? {
            let e = e?;
            out.insert(e.file_name(), e.metadata()?.len());
        }
        Ok(out)
    };
    let before = blobs(&layout)?;
    let t = Instant::now();
    Cmd::new("umoci", "umoci insert of the bench tree")
        .arg("insert")
        .arg("--image")
        .arg(format!("{}:bench", layout.display()))
        .arg(tree)
        .arg("/bench")
        .run()?;
    let seconds = t.elapsed().as_secs_f64();
    let layer = blobs(&layout)?.into_iter().filter(|(n, _)| !before.contains_key(n)).map(|(_, size)| size).max().unwrap_or(0);
    let _ = fs::remove_dir_all(&layout);
    Ok((seconds, layer))
}

fn child_peak(exe: &Path, tree: &Path, gzip: LayerGzip) -> Result<u64, BenchError> {
    let f = Cmd::new(exe, "write a layer in a child process (its peak memory)")
        .arg("bench")
        .arg("--layer-gzip")
        .arg(u32::from(gzip).to_string())
        .arg("--layer-only")
        .arg(tree)
        .run()?;
    let text = String::from_utf8_lossy(&f.stdout);
    text.trim().parse().map_err(|e| BenchError::Other(format!("the layer child printed {:?}, not a number: {e}", text.trim())))
}

fn note(reporter: &dyn Reporter, message: String) {
    reporter.event(Event::Note { message });
}

/// Layer writing and hashing against `tar | gzip -6` (`pigz -6`), `sha256sum` (`openssl`).
pub fn layer(opts: &LayerOptions, reporter: &dyn Reporter) -> Result<LayerReport, BenchError> {
    let dir = &opts.dir;
    let tree = dir.join("tree");
    let small = dir.join("small");
    let _ = fs::remove_dir_all(&tree);
    let _ = fs::remove_dir_all(&small);
    let size = opts.size_mib << 20;
    note(reporter, format!("bench: making a {} MiB tree in {}", opts.size_mib, tree.display()));
    let bytes = make_tree(&tree, size)?;
    make_tree(&small, size / 8)?;
    // Warm the page cache for both sides alike.
    time_shell("warm the page cache", &format!("tar -C '{}' -cf - . | cat > /dev/null", tree.display()))?;

    let ours_out = dir.join("ours.tar.gz");
    let t = Instant::now();
    let info = layer_of(&tree, &ours_out, opts.gzip)?;
    let ours = t.elapsed().as_secs_f64();
    // The other format, on the same tree: what a release that keeps the other one gets.
    // (Format 3 against 2 shows what storing incompressible blocks saves; 1 and 2 against 3.)
    let other = match opts.gzip {
        LayerGzip::V1 | LayerGzip::V2 => LayerGzip::V3,
        LayerGzip::V3 => LayerGzip::V2,
    };
    let other_out = dir.join("other.tar.gz");
    let t = Instant::now();
    let other_info = layer_of(&tree, &other_out, other)?;
    let other_seconds = t.elapsed().as_secs_f64();
    let _ = fs::remove_file(&other_out);

    let writer = "layer writer (tar + gzip + diff_id + digest)";
    let write_other = Measurement::new("layer write", writer, oci::layer::compressor(other), bytes, ours, other_seconds);
    let gzip_peer = "tar --sort=name -c | gzip -6";
    let gzip = time_shell(
        "tar | gzip -6",
        &format!("tar -C '{}' --sort=name -cf - . | gzip -6 > '{}'", tree.display(), dir.join("peer.tar.gz").display()),
    )?;
    let write_gzip = Measurement::new("layer write", writer, gzip_peer, bytes, ours, gzip);
    let write_pigz = if have("pigz") {
        let pigz = time_shell(
            "tar | pigz -6",
            &format!("tar -C '{}' --sort=name -cf - . | pigz -6 > '{}'", tree.display(), dir.join("pigz.tar.gz").display()),
        )?;
        Some(Measurement::new("layer write", writer, "tar --sort=name -c | pigz -6", bytes, ours, pigz))
    } else {
        None
    };

    let (write_umoci, umoci_layer_bytes) = if have("umoci") {
        let (seconds, layer) = umoci_insert(dir, &tree)?;
        (Some(Measurement::new("layer write", writer, "umoci insert", bytes, ours, seconds)), Some(layer))
    } else {
        (None, None)
    };

    // Hashing the finished layer: ours, sha256sum, openssl.
    let t = Instant::now();
    let mut r = HashingReader::new(io::BufReader::with_capacity(1 << 20, fs::File::open(&ours_out)?));
    io::copy(&mut r, &mut io::sink())?;
    let (d, _) = r.finish();
    let ours_sha = t.elapsed().as_secs_f64();
    if d != info.digest {
        return Err(BenchError::Other(format!("the layer on disk hashes to {d}, the writer said {}", info.digest)));
    }
    let sha256sum = time_shell("sha256sum", &format!("sha256sum '{}' > /dev/null", ours_out.display()))?;
    let sha256sum = Measurement::new("sha256", "oci::layer::HashingReader", "sha256sum", info.size, ours_sha, sha256sum);
    let openssl = if have("openssl") {
        let o = time_shell("openssl dgst -sha256", &format!("openssl dgst -sha256 '{}' > /dev/null", ours_out.display()))?;
        Some(Measurement::new("sha256", "oci::layer::HashingReader", "openssl dgst -sha256", info.size, ours_sha, o))
    } else {
        None
    };

    let peak_rss_kib_eighth = child_peak(&opts.exe, &small, opts.gzip)?;
    let peak_rss_kib_full = child_peak(&opts.exe, &tree, opts.gzip)?;
    Ok(LayerReport {
        input_bytes: bytes,
        layer_bytes: info.size,
        compressor: oci::layer::compressor(opts.gzip).to_owned(),
        layer_gzip: opts.gzip,
        other_layer_gzip: other,
        write_other,
        other_layer_bytes: other_info.size,
        write_gzip,
        write_pigz,
        write_umoci,
        umoci_layer_bytes,
        sha256sum,
        openssl,
        peak_rss_kib_eighth,
        peak_rss_kib_full,
        page_cache: "warm".to_owned(),
    })
}

/// Copies `from` (a file or a tree) to `to`, skipping what cannot be read; symlinks as such.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), BenchError> {
    for e in walkdir::WalkDir::new(from).follow_links(false).into_iter().filter_map(Result::ok) {
        let rel = e.path().strip_prefix(from).unwrap_or(e.path());
        let dest = if rel.as_os_str().is_empty() { to.to_owned() } else { to.join(rel) };
        let ft = e.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dest)?;
        } else if ft.is_symlink() {
            if let Ok(t) = fs::read_link(e.path()) {
                let _ = std::os::unix::fs::symlink(t, &dest);
            }
        } else if ft.is_file() {
            fs::create_dir_all(dest.parent().unwrap_or(to))?;
            let _ = fs::copy(e.path(), &dest);
        }
    }
    Ok(())
}

/// What [`sbom`] measures.
#[derive(Debug, Clone)]
pub struct SbomOptions {
    /// Where the root file system and its layout go.
    pub dir: PathBuf,
    /// The workspace (its Cargo.lock goes into the root file system).
    pub workspace: PathBuf,
    /// The syft to compare with ([`find_syft`]); none is an error, after our side ran.
    pub syft: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SbomReport {
    pub rootfs_files: usize,
    /// Scan + SBOM (both encodings) of the layer against `syft oci-dir:`; `bytes` is the layer.
    pub scan: Measurement,
    /// The same scan against the machine's floor: the blob hashed, inflated and its content
    /// hashed by openssl and gzip (no parsing, no catalog, no SBOM).
    pub floor: Measurement,
    /// The least time any scan of this layer can take on this machine (see [`WorkBound`]).
    pub bound: WorkBound,
    pub ours_packages: usize,
    pub syft_packages: usize,
    /// Per package type: (ours, syft).
    pub packages_by_type: BTreeMap<String, (usize, usize)>,
    pub sbom_json_bytes: usize,
    pub sbom_protobuf_bytes: usize,
}

/// The work a scan of the layer cannot skip, each part timed alone on one core by the fastest
/// tool here: the blob's digest and the content's digest (`diff_id`) by openssl (SHA-NI), every
/// regular file's digest (the drift gate compares them; openssl's rate over the content, scaled
/// to the files' bytes), and the inflate by our own decoder (zlib-rs; libdeflate inflates this
/// layer, one 194 MB member, about 1.35x faster but only whole, in memory). A scan with this
/// decoder cannot finish sooner than the longest chain (the inflate is one stream) or than all
/// of it spread over every core; none at all sooner than the digests spread over every core.
#[derive(Debug, Clone, Serialize)]
pub struct WorkBound {
    pub blob_sha256_seconds: f64,
    pub content_sha256_seconds: f64,
    pub files_sha256_seconds: f64,
    pub inflate_seconds: f64,
    pub cores: usize,
    /// The three digests spread over every core: a bound that holds whatever the inflater.
    pub hash_seconds: f64,
    /// `max(inflate, (digests + inflate) / cores)`.
    pub seconds: f64,
}

/// Times the parts of [`WorkBound`] for `blob` (whose files are under `rootfs`), writing the
/// inflated content beside it under `dir` for openssl and removing it after.
fn work_bound(dir: &Path, blob: &Path, rootfs: &Path) -> Result<WorkBound, BenchError> {
    let openssl = |path: &Path, what: &str| -> Result<f64, BenchError> {
        let t = Instant::now();
        Cmd::new("openssl", what).args(["dgst", "-sha256"]).arg(path).run()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let blob_sha256_seconds = openssl(blob, "openssl: the blob's sha256")?;
    let content = dir.join("layer.tar");
    let t = Instant::now();
    let mut inflater = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, fs::File::open(blob)?));
    let content_bytes = io::copy(&mut inflater, &mut io::sink())?;
    let inflate_seconds = t.elapsed().as_secs_f64();
    let mut inflater = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 20, fs::File::open(blob)?));
    io::copy(&mut inflater, &mut io::BufWriter::new(fs::File::create(&content)?))?;
    let content_sha256_seconds = openssl(&content, "openssl: the content's sha256");
    let _ = fs::remove_file(&content);
    let content_sha256_seconds = content_sha256_seconds?;
    let file_bytes: u64 = walkdir::WalkDir::new(rootfs)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let files_sha256_seconds = content_sha256_seconds * file_bytes as f64 / content_bytes.max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let hashes = blob_sha256_seconds + content_sha256_seconds + files_sha256_seconds;
    Ok(WorkBound {
        hash_seconds: hashes / cores as f64,
        blob_sha256_seconds,
        content_sha256_seconds,
        files_sha256_seconds,
        inflate_seconds,
        cores,
        seconds: inflate_seconds.max((hashes + inflate_seconds) / cores as f64),
    })
}

/// `$STELLAOPS_VERIFY_SYFT`, else the one tests/run.sh installs, else `/usr/local/bin/syft`.
pub fn find_syft(workspace: &Path) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("STELLAOPS_VERIFY_SYFT").map(PathBuf::from),
        Some(workspace.join("target/verifiers/venv/bin/syft")),
        Some(PathBuf::from("/usr/local/bin/syft")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// SBOM + scan of a realistic root file system (this machine's dpkg database and docs, Python
/// and npm packages, the workspace's Cargo.lock) against `syft oci-dir:`, in one run.
pub fn sbom(opts: &SbomOptions, _reporter: &dyn Reporter) -> Result<SbomReport, BenchError> {
    let dir = &opts.dir;
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    let lock = opts.workspace.join("Cargo.lock");
    for (from, to) in [
        (Path::new("/var/lib/dpkg/status"), "var/lib/dpkg/status"),
        (Path::new("/var/lib/dpkg/info"), "var/lib/dpkg/info"),
        (Path::new("/usr/share/doc"), "usr/share/doc"),
        (Path::new("/usr/lib/python3/dist-packages"), "usr/lib/python3/dist-packages"),
        (Path::new("/usr/lib/node_modules"), "usr/lib/node_modules"),
        (Path::new("/etc/os-release"), "etc/os-release"),
        (Path::new("/usr/lib/os-release"), "usr/lib/os-release"),
        (lock.as_path(), "app/Cargo.lock"),
    ] {
        if from.exists() {
            copy_tree(from, &rootfs.join(to))?;
        }
    }
    // Keep only dpkg's .list files and status: what an image carries.
    for e in fs::read_dir(rootfs.join("var/lib/dpkg/info"))?.flatten() {
        if !e.file_name().to_string_lossy().ends_with(".list") {
            let _ = fs::remove_file(e.path());
        }
    }
    let files = walkdir::WalkDir::new(&rootfs).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()).count();
    let layout = oci::Layout::create(&dir.join("layout"))?;
    let (digest, size, info) = layout.put_blob_with(|w| {
        let mut lw = LayerWriter::new(w, EPOCH);
        lw.add_tree(&rootfs, "/", Modes::Preserve).map_err(io::Error::other)?;
        lw.finish().map(|(_, i)| i)
    })?;
    let config = layout.put_json(
        oci::MEDIA_CONFIG,
        &oci::ImageConfig {
            created: schema::model::rfc3339(EPOCH),
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            config: Default::default(),
            rootfs: oci::RootFs { kind: "layers".into(), diff_ids: vec![info.diff_id.clone()] },
            history: Vec::new(),
        },
    )?;
    let manifest = oci::Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        config,
        layers: vec![oci::Descriptor::new(oci::MEDIA_LAYER_GZIP, digest, size)],
        subject: None,
        annotations: Default::default(),
    };
    // Ours: scan the layer (hashing every file), make the CycloneDX document, encode both ways.
    let t = Instant::now();
    let result = crate::stages::evidence::scan::scan(&layout, &manifest)?;
    let bom = crate::stages::evidence::sbom::generate::from_scan(&result, &manifest);
    let (j, pb) = (bom.to_json(), crate::stages::evidence::sbom::proto::encode(&bom));
    let ours = t.elapsed().as_secs_f64();
    let ours_count = result.packages.len();
    // The machine's floor for the same bytes: what any scan must do at least (check the blob's
    // digest, inflate it, hash what comes out), by gzip and openssl, one after the other.
    let blob = layout.blob_path(&manifest.layers[0].digest);
    let t = Instant::now();
    Cmd::new("sh", "the floor: openssl and gzip on the layer")
        .arg("-c")
        .arg("openssl dgst -sha256 \"$1\" >/dev/null && gzip -dc < \"$1\" | openssl dgst -sha256 >/dev/null")
        .arg("sh")
        .arg(&blob)
        .run()?;
    let floor = t.elapsed().as_secs_f64();
    let bound = work_bound(dir, &blob, &rootfs)?;
    let Some(syft) = &opts.syft else {
        return Err(BenchError::Other(
            "syft is not installed: run tests/run.sh once (it installs the verifiers into target/verifiers)".into(),
        ));
    };
    let mdesc = layout.put_json(oci::MEDIA_MANIFEST, &manifest)?;
    let mut named = mdesc.clone();
    named.annotations.insert(oci::ANNOTATION_REF_NAME.into(), "bench".into());
    layout.write_index(&oci::Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_INDEX.into()),
        manifests: vec![named],
        annotations: Default::default(),
    })?;
    // syft on the same image (its image catalogers, plus Cargo.lock as the scan reads it).
    let t = Instant::now();
    let out = Cmd::new(syft, "syft: catalog the same image")
        .arg(format!("oci-dir:{}", layout.root().display()))
        .args(["-q", "-o", "json", "--select-catalogers", "+rust-cargo-lock-cataloger"])
        .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .run()?;
    let theirs = t.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Other(format!("syft's JSON: {e}")))?;
    let theirs_count = v["artifacts"].as_array().map(Vec::len).unwrap_or(0);
    let mut by_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for a in v["artifacts"].as_array().into_iter().flatten() {
        by_type.entry(a["type"].as_str().unwrap_or("?").to_owned()).or_default().1 += 1;
    }
    for p in &result.packages {
        by_type.entry(p.kind.clone()).or_default().0 += 1;
    }
    Ok(SbomReport {
        rootfs_files: files,
        scan: Measurement::new("scan + SBOM", "scan + CycloneDX (JSON and protobuf)", "syft oci-dir:", size, ours, theirs),
        floor: Measurement::new(
            "scan + SBOM",
            "scan + CycloneDX (JSON and protobuf)",
            "openssl dgst -sha256 BLOB; gzip -dc < BLOB | openssl dgst -sha256",
            size,
            ours,
            floor,
        ),
        bound,
        ours_packages: ours_count,
        syft_packages: theirs_count,
        packages_by_type: by_type,
        sbom_json_bytes: j.len(),
        sbom_protobuf_bytes: pb.len(),
    })
}

/// Runs `cmd` (status 0 required), sampling its peak memory: (seconds, KiB).
fn measured(cmd: Cmd) -> Result<(f64, u64), BenchError> {
    let t = Instant::now();
    let f = cmd.sample_peak_memory().run()?;
    Ok((t.elapsed().as_secs_f64(), f.peak_rss_kib.unwrap_or(0)))
}

/// A scratch repository under `dir/repo` holding the release configuration of `workspace`,
/// with a generated tree of `bytes` as one more layer of web-ui; released (by `exe release`,
/// the xtask binary) into `dir/release`, which is returned.
pub fn bulk_release(exe: &Path, workspace: &Path, dir: &Path, bytes: u64) -> Result<PathBuf, BenchError> {
    Ok(bulk_release_timed(exe, workspace, dir, bytes)?.0)
}

/// [`bulk_release`], with the release's time and peak memory: (directory, seconds, KiB).
fn bulk_release_timed(exe: &Path, workspace: &Path, dir: &Path, bytes: u64) -> Result<(PathBuf, f64, u64), BenchError> {
    bundle_release_timed(exe, workspace, dir, bytes, 0)
}

/// The bundle of `workspace` with `extra` more components (copies of web-ui, `bulk-NN`, each
/// with a source directory of its own), the generated `bytes` spread over them (a tree each;
/// with none, one tree in web-ui), released by `exe`.
fn bundle_release_timed(exe: &Path, workspace: &Path, dir: &Path, bytes: u64, extra: usize) -> Result<(PathBuf, f64, u64), BenchError> {
    let repo = dir.join("repo");
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(&repo)?;
    for item in ["release-trains", "components", "templates", "policy", "base-images.lock"] {
        copy_tree(&workspace.join(item), &repo.join(item))?;
    }
    let mut toml = fs::read_to_string(repo.join("release-trains/components.toml"))?;
    // web-ui is the last component of the bundle: its block is the template of the copies.
    let at = toml
        .rfind("[[component]]\nname = \"web-ui\"")
        .ok_or_else(|| BenchError::Other("the bundle's last component is not web-ui".into()))?;
    let web_ui = toml[at..].to_owned();
    let standin = "path = \"components/standin\"";
    if !web_ui.contains(standin) {
        return Err(BenchError::Other("web-ui's source is not `components/standin`".into()));
    }
    if extra == 0 {
        // web-ui gets a source directory of its own with the tree: the stand-in's is every
        // other component's source too, and each would carry the tree.
        let src = repo.join("components/web-ui-bulk");
        copy_tree(&workspace.join("components/standin"), &src)?;
        make_tree(&src.join("bulk"), bytes)?;
        toml.truncate(at);
        toml += &web_ui.replacen(standin, "path = \"components/web-ui-bulk\"", 1);
        toml += "\n[[component.recipe.layer]]\nfrom = \"bulk\"\nto = \"/usr/share/stellaops-bulk\"\n";
    }
    // Each copy has a source directory of its own (the stand-in and its tree): a build
    // materializes its component's source only.
    let share = bytes / (extra.max(1) as u64);
    for i in 1..=extra {
        let name = format!("bulk-{i:02}");
        let src = repo.join("components").join(&name);
        copy_tree(&workspace.join("components/standin"), &src)?;
        make_tree(&src.join("bulk"), share)?;
        let block = web_ui.replacen("name = \"web-ui\"", &format!("name = \"{name}\""), 1).replacen(
            standin,
            &format!("path = \"components/{name}\""),
            1,
        );
        toml += &format!("\n{block}\n[[component.recipe.layer]]\nfrom = \"bulk\"\nto = \"/usr/share/stellaops-bulk\"\n");
    }
    fs::write(repo.join("release-trains/components.toml"), toml)?;
    fs::write(repo.join(".gitignore"), "/target\n")?;
    let git = |what: &str, args: &[&str]| -> Result<(), BenchError> {
        Cmd::new("git", what)
            .args(["-c", "core.compression=0", "-c", "core.looseCompression=0"])
            .args(["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"])
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_DATE", "@1813492800 +0000")
            .env("GIT_COMMITTER_DATE", "@1813492800 +0000")
            .run()?;
        Ok(())
    };
    git("bench repository: init", &["init", "-q", "-b", "main"])?;
    git("bench repository: add", &["add", "-A"])?;
    git("bench repository: commit", &["commit", "-q", "-m", "bench"])?;
    let release = dir.join("release");
    let (seconds, kib) = measured(
        Cmd::new(exe, "the release")
            // The bench measures kits; the repository's gates (tests, budgets) are not its subject.
            // Every build is made (`--no-cache`): the bench bundle is the same from one run to
            // the next, and a release that reused the last run's images would measure nothing.
            .args(["--quiet", "release", "--skip-gates", "--no-cache", "--channel", "edge", "--source"])
            .arg(&repo)
            .arg("--out")
            .arg(&release)
            .arg("--cache")
            .arg(workspace.join("target/stellaops-cache")),
    )?;
    Ok((release, seconds, kib))
}

/// What `bench --repro` found: one release of a bench repository, then `repro` of it.
#[derive(Debug, Clone, Serialize)]
pub struct ReproReport {
    /// Bytes of the generated tree in web-ui's extra layer.
    pub tree_bytes: u64,
    pub release_seconds: f64,
    pub release_peak_rss_kib: u64,
    /// Two whole releases (at once, under varied conditions) and the comparison.
    pub repro_seconds: f64,
    pub repro_peak_rss_kib: u64,
    /// `repro_seconds / release_seconds`; the target is at most 2.2.
    pub ratio: f64,
}

/// `bench --repro`: how much a whole-release `repro` costs against one release of the same
/// repository (the bench bundle with a generated tree of `size_mib`), in one run.
pub fn repro(opts: &KitOptions, reporter: &dyn Reporter) -> Result<ReproReport, BenchError> {
    let bytes = opts.size_mib << 20;
    note(reporter, format!("bench: a release of the bundle with a {} MiB tree, then `repro` of it", opts.size_mib));
    let (_, release_seconds, release_peak_rss_kib) = bulk_release_timed(&opts.exe, &opts.workspace, &opts.dir, bytes)?;
    let (repro_seconds, repro_peak_rss_kib) = measured(
        Cmd::new(&opts.exe, "repro of the bench repository")
            .args(["--quiet", "repro", "--source"])
            .arg(opts.dir.join("repo"))
            .arg("--cache")
            .arg(opts.workspace.join("target/stellaops-cache")),
    )?;
    Ok(ReproReport {
        tree_bytes: bytes,
        release_seconds,
        release_peak_rss_kib,
        repro_seconds,
        repro_peak_rss_kib,
        ratio: repro_seconds / release_seconds.max(1e-9),
    })
}

/// One release of [`scale`]: the bundle with its generated content.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    pub components: usize,
    /// Bytes of generated content (each component's tree goes into both of its platforms).
    pub content_bytes: u64,
    pub seconds: f64,
    pub peak_rss_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub small: ScalePoint,
    pub large: ScalePoint,
    /// Seconds per byte at the large size over seconds per byte at the small one: 1.0 is
    /// linear growth (the target is within 15%: 0.85 to 1.15).
    pub growth: f64,
}

/// `bench --scale`: a bundle of 32 components x 2 platforms released with `size_mib` and with
/// four times that of generated content (spread over the components), timed, peak memory
/// sampled; how the release time grows with the bytes.
pub fn scale(opts: &KitOptions, reporter: &dyn Reporter) -> Result<ScaleReport, BenchError> {
    // The repository's bundle has 8 components (7 before web-ui's copies are counted).
    let base = fs::read_to_string(opts.workspace.join("release-trains/components.toml"))?.matches("[[component]]").count();
    let extra = 32usize.saturating_sub(base);
    let mut points = Vec::new();
    for mib in [opts.size_mib, opts.size_mib * 4] {
        let work = opts.dir.join(format!("scale-{mib}"));
        note(reporter, format!("bench: releasing {} components x 2 platforms with {mib} MiB of generated content", base + extra));
        let (_, seconds, peak_rss_kib) = bundle_release_timed(&opts.exe, &opts.workspace, &work, mib << 20, extra)?;
        points.push(ScalePoint { components: base + extra, content_bytes: mib << 20, seconds, peak_rss_kib });
        let _ = fs::remove_dir_all(&work);
    }
    let large = points.pop().ok_or_else(|| BenchError::Other("nothing measured".into()))?;
    let small = points.pop().ok_or_else(|| BenchError::Other("nothing measured".into()))?;
    let per_byte = |p: &ScalePoint| p.seconds / p.content_bytes.max(1) as f64;
    let growth = per_byte(&large) / per_byte(&small);
    Ok(ScaleReport { small, large, growth })
}

/// What `bench --incremental` found: a release with a cold build cache, then a release of the
/// next commit, which changed one component of eight.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalReport {
    pub components: usize,
    /// Bytes of generated content (a tree per component, in both of its platforms).
    pub content_bytes: u64,
    pub cold_seconds: f64,
    pub incremental_seconds: f64,
    /// Images the incremental release built and took from the cache.
    pub built: usize,
    pub cached: usize,
    /// `incremental_seconds / cold_seconds`; the target is at most 0.20.
    pub ratio: f64,
}

/// `bench --incremental`: the repository's bundle (eight components, one compiled from Go),
/// each component with a source directory of its own carrying a generated tree (`size_mib` in
/// all) as one more layer, released with a cold build cache (a commit time no earlier run
/// used), then one component's source changed, committed a minute later, and released again.
/// Both releases go through the same steps (gates skipped, the customer tool built, evidence,
/// signing, the kit); only the build cache differs.
pub fn incremental(opts: &KitOptions, reporter: &dyn Reporter) -> Result<IncrementalReport, BenchError> {
    let repo = opts.dir.join("incremental/repo");
    let _ = fs::remove_dir_all(opts.dir.join("incremental"));
    fs::create_dir_all(&repo)?;
    for item in ["release-trains", "components", "templates", "policy", "base-images.lock"] {
        copy_tree(&opts.workspace.join(item), &repo.join(item))?;
    }
    let toml = fs::read_to_string(repo.join("release-trains/components.toml"))?;
    let mut blocks: Vec<String> = toml.split("\n[[component]]\n").map(str::to_owned).collect();
    let components = blocks.len() - 1;
    let share = (opts.size_mib << 20) / components.max(1) as u64;
    note(reporter, format!("bench: {components} components, a {} MiB tree each", share >> 20));
    let mut names = Vec::new();
    for block in blocks.iter_mut().skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
            .ok_or_else(|| BenchError::Other("a component without a name".into()))?
            .to_owned();
        // A source of its own (a copy of the stand-in where they share it), and its tree.
        let dir = if block.contains("path = \"components/standin\"") {
            let own = format!("components/bench-{name}");
            copy_tree(&opts.workspace.join("components/standin"), &repo.join(&own))?;
            *block = block.replacen("path = \"components/standin\"", &format!("path = \"{own}\""), 1);
            own
        } else {
            block
                .split("path = \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .ok_or_else(|| BenchError::Other(format!("`{name}` is not built from a path of the repository")))?
                .to_owned()
        };
        make_tree(&repo.join(&dir).join("bulk"), share)?;
        block.push_str("\n[[component.recipe.layer]]\nfrom = \"bulk\"\nto = \"/usr/share/stellaops-bulk\"\n");
        names.push((name, dir));
    }
    fs::write(repo.join("release-trains/components.toml"), blocks.join("\n[[component]]\n"))?;
    fs::write(repo.join(".gitignore"), "/target\n")?;
    // A commit time no earlier run used, in the month of the others: every key is new.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let first = 1_813_492_800 + (now % 500_000) as i64;
    let git = |what: &str, args: &[&str], at: i64| -> Result<(), BenchError> {
        let date = format!("@{at} +0000");
        Cmd::new("git", what)
            .args(["-c", "core.compression=0", "-c", "core.looseCompression=0"])
            .args(["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"])
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .run()?;
        Ok(())
    };
    git("bench repository: init", &["init", "-q", "-b", "main"], first)?;
    git("bench repository: add", &["add", "-A"], first)?;
    git("bench repository: commit", &["commit", "-q", "-m", "bench"], first)?;
    let release = |name: &str| -> Result<(f64, Vec<u8>), BenchError> {
        let t = Instant::now();
        let out = Cmd::new(&opts.exe, "a release of the bench repository")
            .args(["--quiet", "release", "--skip-gates", "--json", "--channel", "edge", "--source"])
            .arg(&repo)
            .arg("--out")
            .arg(opts.dir.join("incremental").join(name))
            .arg("--cache")
            .arg(opts.workspace.join("target/stellaops-cache"))
            .run()?;
        Ok((t.elapsed().as_secs_f64(), out.stdout))
    };
    note(reporter, "bench: the release with a cold build cache".to_owned());
    let (cold_seconds, _) = release("cold")?;
    // One component changes: a file of its source.
    let (changed, dir) = names.first().ok_or_else(|| BenchError::Other("no component".into()))?;
    fs::write(repo.join(dir).join("bulk/changed.txt"), format!("changed at {now}\n"))?;
    git("bench repository: add", &["add", "-A"], first + 60)?;
    git("bench repository: commit", &["commit", "-q", "-m", "one component changes"], first + 60)?;
    note(reporter, format!("bench: the release of the next commit (`{changed}` changed)"));
    let (incremental_seconds, stdout) = release("incremental")?;
    let text = String::from_utf8_lossy(&stdout);
    let result: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| BenchError::Other("the release printed no result".into()))?;
    let statuses: Vec<&str> =
        result["release"]["cache"].as_array().map(|a| a.iter().filter_map(|o| o["status"].as_str()).collect()).unwrap_or_default();
    Ok(IncrementalReport {
        components,
        content_bytes: share * components as u64,
        cold_seconds,
        incremental_seconds,
        built: statuses.iter().filter(|s| **s == "built").count(),
        cached: statuses.iter().filter(|s| **s == "cached").count(),
        ratio: incremental_seconds / cold_seconds.max(1e-9),
    })
}

/// What [`kit`] measures.
#[derive(Debug, Clone)]
pub struct KitOptions {
    /// Where the scratch repositories, releases and kits go.
    pub dir: PathBuf,
    /// About the kit's size in MiB (the generated tree is twice that, before gzip).
    pub size_mib: u64,
    /// The xtask binary: runs `release`, `kit build` and `kit import`.
    pub exe: PathBuf,
    /// The workspace whose release configuration is copied.
    pub workspace: PathBuf,
}

/// Peak memory of `kit build` and `kit import` at one size.
#[derive(Debug, Clone, Serialize)]
pub struct KitPeak {
    /// `eighth` or `full`.
    pub size: String,
    pub content_bytes: u64,
    pub kit_build_kib: u64,
    pub kit_import_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KitReport {
    /// Bytes of files the import loaded (the full size).
    pub content_bytes: u64,
    /// Bytes of the kit file.
    pub kit_bytes: u64,
    /// `kit build` against `tar -c | zstd -T0 -3`, on `content_bytes`.
    pub write: Measurement,
    /// `kit import` (verify + load) against `zstd -d | sha256sum`, on `content_bytes`.
    pub import: Measurement,
    pub peaks: Vec<KitPeak>,
    pub page_cache: String,
}

/// Kit write and import against `tar | zstd` and `zstd -d | sha256sum` on the same content,
/// at an eighth of the size and at all of it (timings are those of the full size).
pub fn kit(opts: &KitOptions, reporter: &dyn Reporter) -> Result<KitReport, BenchError> {
    let exe = &opts.exe;
    let mut peaks = Vec::new();
    let mut last = None;
    for (label, mib) in [("eighth", opts.size_mib / 8), ("full", opts.size_mib)] {
        let work = opts.dir.join(label);
        note(reporter, format!("bench: cutting a release with {} MiB of generated files in {}", mib * 2, work.display()));
        let release = bulk_release(exe, &opts.workspace, &work, (mib * 2) << 20)?;
        let key = work.join("repo/target/keys/dev.pub");
        let kit = work.join("kit.tar.zst");
        let parts = "images sboms attest charts compose policy release.yaml release.yaml.sig release.yaml.sigstore.json";
        // Warm the page cache for both sides alike.
        time_shell("warm the page cache", &format!("cd '{}' && tar -cf - {parts} | cat > /dev/null", release.display()))?;
        let (write, write_peak) = measured(
            Cmd::new(exe, "kit build")
                .args(["--quiet", "kit", "build"])
                .arg(&release)
                .arg("--out")
                .arg(&kit)
                .arg("--source")
                .arg(work.join("repo")),
        )?;
        let peer_write = time_shell(
            "tar | zstd -T0 -3",
            &format!("cd '{}' && tar -cf - {parts} | zstd -q -T0 -3 > '{}'", release.display(), work.join("peer.tar.zst").display()),
        )?;
        let target = work.join("imported");
        let (import, import_peak) = measured(
            Cmd::new(exe, "kit import").args(["--quiet", "kit", "import"]).arg(&kit).arg("--into").arg(&target).arg("--key").arg(&key),
        )?;
        let peer_read = time_shell("zstd -d | sha256sum", &format!("zstd -q -d -c '{}' | sha256sum > /dev/null", kit.display()))?;
        let content: u64 = walkdir::WalkDir::new(&target)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        let kit_size = fs::metadata(&kit)?.len();
        peaks.push(KitPeak { size: label.to_owned(), content_bytes: content, kit_build_kib: write_peak, kit_import_kib: import_peak });
        let mut w = Measurement::new("kit write", "kit build", "tar -c | zstd -T0 -3", content, write, peer_write);
        w.ours_peak_rss_kib = Some(write_peak);
        let mut i = Measurement::new("kit import", "kit import (verify + load)", "zstd -d | sha256sum", content, import, peer_read);
        i.ours_peak_rss_kib = Some(import_peak);
        last = Some((content, kit_size, w, i));
        let _ = fs::remove_dir_all(work.join("repo/components"));
    }
    let Some((content_bytes, kit_bytes, write, import)) = last else { return Err(BenchError::Other("nothing measured".into())) };
    Ok(KitReport { content_bytes, kit_bytes, write, import, peaks, page_cache: "warm".to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_tree_is_the_same_every_run_and_about_its_size() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let n = make_tree(a.path(), 300_000).unwrap();
        assert_eq!(n, 300_000);
        make_tree(b.path(), 300_000).unwrap();
        let out = tempfile::tempdir().unwrap();
        let la = layer_of(a.path(), &out.path().join("a.tar.gz"), LayerGzip::V2).unwrap();
        let lb = layer_of(b.path(), &out.path().join("b.tar.gz"), LayerGzip::V2).unwrap();
        assert_eq!(la.diff_id, lb.diff_id);
    }

    #[test]
    fn a_measurement_is_a_ratio_of_times_over_the_same_bytes() {
        let m = Measurement::new("sha256", "ours", "peer", 2_000_000, 0.5, 1.0);
        assert_eq!((m.ratio, m.ours_mb_s(), m.peer_mb_s()), (2.0, 4.0, 2.0));
    }
}
