//! `cargo xtask bench`: layer writing and hashing measured against the machine's own tools on
//! the same input, in one run, as ratios. Not a test: numbers vary between machines; ratios
//! measured together are what to compare.
//!
//! 1. make a directory tree of mixed files (`--size-mib`, 1 GiB by default), warm the cache;
//! 2. write a layer from it with the pipeline's writer (tar + gzip-6 + diff_id + digest) and
//!    with `tar --sort=name -c | gzip -6` (and `pigz -6` when installed);
//! 3. hash the layer with the pipeline's sha256 and with `sha256sum` and `openssl dgst`;
//! 4. peak memory of the layer writer on the full tree and on an eighth of it (a child
//!    process each, VmHWM), to show it stays flat as the input grows.
#![allow(clippy::print_stdout)]

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use oci::layer::{HashingReader, LayerWriter, Modes};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Size of the generated tree in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Where to put the tree and the layers (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Measure SBOM + scan of a realistic root file system (this machine's dpkg database and
    /// docs, Python and npm packages, this workspace's Cargo.lock) against `syft dir:` instead.
    #[arg(long)]
    sbom: bool,
    /// Measure offline kits instead: cut a release whose web-ui image carries a generated tree
    /// (twice `--size-mib`, so that the kit holds about `--size-mib` after gzip), then time
    /// `kit build` against `tar -c | zstd -T0 -3` on the same files and `kit import` (verify and
    /// load) against `zstd -d | sha256sum`, with peak memory at 1/8 of the size and at all of it.
    #[arg(long)]
    kit: bool,
    /// Internal: write one layer of DIR and print its peak memory (used by the bench itself).
    #[arg(long, hide = true, value_name = "DIR")]
    layer_only: Option<PathBuf>,
}

/// Fills `dir` with about `bytes` of files: sizes from 4 KiB to 8 MiB, content half text-like
/// (compressible) and half noise, from a fixed seed (the same tree every run).
fn make_tree(dir: &Path, bytes: u64) -> Result<u64> {
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

fn layer_of(tree: &Path, out: &Path) -> Result<oci::layer::LayerInfo> {
    let f = io::BufWriter::with_capacity(1 << 20, fs::File::create(out)?);
    let mut w = LayerWriter::new(f, 1_700_000_000);
    w.add_tree(tree, "/", Modes::Normalize)?;
    let (mut f, info) = w.finish()?;
    f.flush()?;
    Ok(info)
}

fn peak_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn time_shell(script: &str) -> Result<f64> {
    let t = Instant::now();
    let status = Command::new("sh").arg("-c").arg(script).status().with_context(|| format!("run `{script}`"))?;
    if !status.success() {
        bail!("`{script}` failed with {status}");
    }
    Ok(t.elapsed().as_secs_f64())
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool} >/dev/null")).status().is_ok_and(|s| s.success())
}

fn child_peak(tree: &Path) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).arg("bench").arg("--layer-only").arg(tree).output()?;
    if !out.status.success() {
        bail!("layer child failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Copies `from` (a file or a tree) to `to`, skipping what cannot be read; symlinks as such.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
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

fn syft_path() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("STELLAOPS_VERIFY_SYFT").map(PathBuf::from),
        Some(PathBuf::from("target/verifiers/venv/bin/syft")),
        Some(PathBuf::from("/usr/local/bin/syft")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// SBOM + scan of a realistic root file system against `syft dir:`, in one run.
fn bench_sbom(dir: &Path, json: bool) -> Result<()> {
    use oci;
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    for (from, to) in [
        ("/var/lib/dpkg/status", "var/lib/dpkg/status"),
        ("/var/lib/dpkg/info", "var/lib/dpkg/info"),
        ("/usr/share/doc", "usr/share/doc"),
        ("/usr/lib/python3/dist-packages", "usr/lib/python3/dist-packages"),
        ("/usr/lib/node_modules", "usr/lib/node_modules"),
        ("/etc/os-release", "etc/os-release"),
        ("/usr/lib/os-release", "usr/lib/os-release"),
        ("Cargo.lock", "app/Cargo.lock"),
    ] {
        if Path::new(from).exists() {
            copy_tree(Path::new(from), &rootfs.join(to))?;
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
    let (digest, size, _info) = layout.put_blob_with(|w| {
        let mut lw = LayerWriter::new(w, 1_700_000_000);
        lw.add_tree(&rootfs, "/", Modes::Preserve).map_err(io::Error::other)?;
        lw.finish().map(|(_, i)| i)
    })?;
    let config = layout.put_json(
        oci::MEDIA_CONFIG,
        &oci::ImageConfig {
            created: schema::model::rfc3339(1_700_000_000),
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            config: Default::default(),
            rootfs: oci::RootFs { kind: "layers".into(), diff_ids: vec![_info.diff_id.clone()] },
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
    let result = pipeline::stages::evidence::scan::scan(&layout, &manifest)?;
    let bom = pipeline::stages::evidence::sbom::generate::from_scan(&result, &manifest);
    let (j, pb) = (bom.to_json(), pipeline::stages::evidence::sbom::proto::encode(&bom));
    let ours = t.elapsed().as_secs_f64();
    let ours_count = result.packages.len();
    let Some(syft) = syft_path() else {
        bail!("syft is not installed: run tests/run.sh once (it installs the verifiers into target/verifiers)")
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
    let out = Command::new(&syft)
        .arg(format!("oci-dir:{}", layout.root().display()))
        .args(["-q", "-o", "json", "--select-catalogers", "+rust-cargo-lock-cataloger"])
        .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .output()?;
    let theirs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("syft failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let theirs_count = v["artifacts"].as_array().map(Vec::len).unwrap_or(0);
    let mut by_type: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for a in v["artifacts"].as_array().into_iter().flatten() {
        by_type.entry(a["type"].as_str().unwrap_or("?").to_owned()).or_default().1 += 1;
    }
    for p in &result.packages {
        by_type.entry(p.kind.clone()).or_default().0 += 1;
    }
    let report = serde_json::json!({
        "rootfs_files": files,
        "ours_seconds": ours, "syft_seconds": theirs, "speedup_vs_syft": theirs / ours,
        "ours_packages": ours_count, "syft_packages": theirs_count, "packages_by_type_ours_syft": by_type,
        "sbom_json_bytes": j.len(), "sbom_protobuf_bytes": pb.len(),
    });
    if json {
        println!("{report}");
    } else {
        println!("rootfs: {files} files (dpkg status + lists, docs, Python and npm packages, a Cargo.lock)");
        println!(
            "scan + SBOM  ours {ours:.2} s ({ours_count} packages) | syft oci-dir: {theirs:.2} s ({theirs_count} packages) | {:.1}x",
            theirs / ours
        );
        println!("SBOM size    JSON {} KiB, protobuf {} KiB", j.len() / 1024, pb.len() / 1024);
        for (t, (o, s)) in &by_type {
            println!("  {t:<12} ours {o:>5} | syft {s:>5}");
        }
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(tree) = &args.layer_only {
        let tmp = tempfile::NamedTempFile::new()?;
        layer_of(tree, tmp.path())?;
        println!("{}", peak_rss_kib());
        return Ok(());
    }
    let holder;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            holder = tempfile::tempdir()?;
            holder.path().to_owned()
        }
    };
    if args.sbom {
        return bench_sbom(&dir, args.json);
    }
    if args.kit {
        return bench_kit(&dir, args.size_mib, args.json);
    }
    let tree = dir.join("tree");
    let small = dir.join("small");
    let _ = fs::remove_dir_all(&tree);
    let _ = fs::remove_dir_all(&small);
    let size = args.size_mib << 20;
    eprintln_("bench: making a {} MiB tree in {}", args.size_mib, tree.display());
    let bytes = make_tree(&tree, size)?;
    make_tree(&small, size / 8)?;
    // Warm the page cache for both sides alike.
    time_shell(&format!("tar -C '{}' -cf - . | cat > /dev/null", tree.display()))?;
    let mb = bytes as f64 / 1e6;

    let ours_out = dir.join("ours.tar.gz");
    let t = Instant::now();
    let info = layer_of(&tree, &ours_out)?;
    let ours = t.elapsed().as_secs_f64();

    let gzip = time_shell(&format!("tar -C '{}' --sort=name -cf - . | gzip -6 > '{}'", tree.display(), dir.join("peer.tar.gz").display()))?;
    let pigz = if have("pigz") {
        Some(time_shell(&format!("tar -C '{}' --sort=name -cf - . | pigz -6 > '{}'", tree.display(), dir.join("pigz.tar.gz").display()))?)
    } else {
        None
    };

    // Hashing the finished layer: ours, sha256sum, openssl.
    let layer_mb = info.size as f64 / 1e6;
    let t = Instant::now();
    let mut r = HashingReader::new(io::BufReader::with_capacity(1 << 20, fs::File::open(&ours_out)?));
    io::copy(&mut r, &mut io::sink())?;
    let (d, _) = r.finish();
    let ours_sha = t.elapsed().as_secs_f64();
    if d != info.digest {
        bail!("the layer on disk hashes to {d}, the writer said {}", info.digest);
    }
    let sha256sum = time_shell(&format!("sha256sum '{}' > /dev/null", ours_out.display()))?;
    let openssl =
        if have("openssl") { Some(time_shell(&format!("openssl dgst -sha256 '{}' > /dev/null", ours_out.display()))?) } else { None };

    let peak_small = child_peak(&small)?;
    let peak_full = child_peak(&tree)?;

    let report = serde_json::json!({
        "input_mb": mb,
        "layer": {
            "ours_mb_s": mb / ours, "gzip6_mb_s": mb / gzip, "ratio_vs_tar_gzip6": gzip / ours,
            "pigz6_mb_s": pigz.map(|p| mb / p), "ratio_vs_tar_pigz6": pigz.map(|p| p / ours),
            "compressed_mb": layer_mb,
        },
        "sha256": {
            "ours_mb_s": layer_mb / ours_sha, "sha256sum_mb_s": layer_mb / sha256sum, "ratio_vs_sha256sum": sha256sum / ours_sha,
            "openssl_mb_s": openssl.map(|o| layer_mb / o), "ratio_vs_openssl": openssl.map(|o| o / ours_sha),
        },
        "peak_rss_kib": { "eighth_input": peak_small, "full_input": peak_full },
        "compressor": oci::layer::COMPRESSOR,
        "page_cache": "warm",
    });
    if args.json {
        println!("{report}");
    } else {
        println!("input: {mb:.0} MB tree, warm page cache; layer: {layer_mb:.0} MB ({})", oci::layer::COMPRESSOR);
        println!("layer write  ours {:.1} MB/s | tar|gzip -6 {:.1} MB/s | ratio {:.2}x", mb / ours, mb / gzip, gzip / ours);
        if let Some(p) = pigz {
            println!("             tar|pigz -6 {:.1} MB/s | ratio {:.2}x", mb / p, p / ours);
        }
        println!(
            "sha256       ours {:.0} MB/s | sha256sum {:.0} MB/s | ratio {:.2}x",
            layer_mb / ours_sha,
            layer_mb / sha256sum,
            sha256sum / ours_sha
        );
        if let Some(o) = openssl {
            println!("             openssl {:.0} MB/s | ratio {:.2}x", layer_mb / o, o / ours_sha);
        }
        println!("peak memory  {} KiB for 1/8 of the input, {} KiB for all of it", peak_small, peak_full);
    }
    Ok(())
}

fn eprintln_(fmt: &str, a: impl std::fmt::Display, b: impl std::fmt::Display) {
    let msg = fmt.replacen("{}", &a.to_string(), 1).replacen("{}", &b.to_string(), 1);
    crate::progress::eprint(&msg);
}

/// Runs `cmd`, polling its peak resident memory (VmHWM) until it exits: (seconds, KiB).
fn measured(cmd: &mut Command, what: &str) -> Result<(f64, u64)> {
    let t = Instant::now();
    let mut child =
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().with_context(|| what.to_owned())?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if let Some(kib) = fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        {
            peak = peak.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = io::Read::read_to_string(&mut e, &mut err);
        }
        bail!("{what} failed with {status}: {err}");
    }
    Ok((secs, peak))
}

/// A scratch repository holding this workspace's release configuration, with a generated
/// tree of `bytes` as one more layer of web-ui; released into `dir/release`.
fn bulk_release(dir: &Path, bytes: u64) -> Result<PathBuf> {
    let root = std::env::current_dir()?;
    let repo = dir.join("repo");
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(&repo)?;
    for item in ["release-trains", "components", "templates", "policy", "base-images.lock"] {
        copy_tree(&root.join(item), &repo.join(item))?;
    }
    make_tree(&repo.join("components/standin/bulk"), bytes)?;
    // web-ui is the last component of the bundle: one more layer for it.
    let mut toml = fs::read_to_string(repo.join("release-trains/components.toml"))?;
    toml += "\n[[component.recipe.layer]]\nfrom = \"bulk\"\nto = \"/usr/share/stellaops-bulk\"\n";
    fs::write(repo.join("release-trains/components.toml"), toml)?;
    fs::write(repo.join(".gitignore"), "/target\n")?;
    let git = |args: &[&str]| -> Result<()> {
        let st = Command::new("git")
            .args([
                "-c",
                "core.compression=0",
                "-c",
                "core.looseCompression=0",
                "-c",
                "user.name=bench",
                "-c",
                "user.email=bench@example.invalid",
            ])
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_DATE", "@1813492800 +0000")
            .env("GIT_COMMITTER_DATE", "@1813492800 +0000")
            .stdout(std::process::Stdio::null())
            .status()?;
        if !st.success() {
            bail!("git {args:?} failed");
        }
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "bench"])?;
    let release = dir.join("release");
    let exe = std::env::current_exe()?;
    measured(
        Command::new(&exe)
            // The bench measures kits; the repository's gates (tests, budgets) are not its subject.
            .args(["--quiet", "release", "--skip-gates", "--channel", "edge", "--source"])
            .arg(&repo)
            .arg("--out")
            .arg(&release)
            .arg("--cache")
            .arg(root.join("target/stellaops-cache")),
        "the release",
    )?;
    Ok(release)
}

/// Kit write and import against `tar | zstd` and `zstd -d | sha256sum` on the same content.
fn bench_kit(dir: &Path, size_mib: u64, json: bool) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut peaks = Vec::new();
    let mut last = None;
    for (label, mib) in [("eighth", size_mib / 8), ("full", size_mib)] {
        let work = dir.join(label);
        crate::progress::eprint(&format!("bench: cutting a release with {} MiB of generated files in {}", mib * 2, work.display()));
        let release = bulk_release(&work, (mib * 2) << 20)?;
        let key = work.join("repo/target/keys/dev.pub");
        let kit = work.join("kit.tar.zst");
        let parts = "images sboms attest charts compose policy release.yaml release.yaml.sig release.yaml.sigstore.json";
        // Warm the page cache for both sides alike.
        time_shell(&format!("cd '{}' && tar -cf - {parts} | cat > /dev/null", release.display()))?;
        let (write, write_peak) = measured(
            Command::new(&exe)
                .args(["--quiet", "kit", "build"])
                .arg(&release)
                .arg("--out")
                .arg(&kit)
                .arg("--source")
                .arg(work.join("repo")),
            "kit build",
        )?;
        let peer_write = time_shell(&format!(
            "cd '{}' && tar -cf - {parts} | zstd -q -T0 -3 > '{}'",
            release.display(),
            work.join("peer.tar.zst").display()
        ))?;
        let target = work.join("imported");
        let (import, import_peak) = measured(
            Command::new(&exe).args(["--quiet", "kit", "import"]).arg(&kit).arg("--into").arg(&target).arg("--key").arg(&key),
            "kit import",
        )?;
        let peer_read = time_shell(&format!("zstd -q -d -c '{}' | sha256sum > /dev/null", kit.display()))?;
        let content: u64 = walkdir::WalkDir::new(&target)
            .into_iter()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        let kit_size = fs::metadata(&kit)?.len();
        peaks.push((label, content, write_peak, import_peak));
        last = Some((content, kit_size, write, peer_write, import, peer_read));
        let _ = fs::remove_dir_all(work.join("repo/components"));
    }
    let Some((content, kit_size, write, peer_write, import, peer_read)) = last else { bail!("nothing measured") };
    let mb = content as f64 / 1e6;
    let report = serde_json::json!({
        "kit_content_mb": mb, "kit_file_mb": kit_size as f64 / 1e6,
        "write": { "ours_mb_s": mb / write, "tar_zstd_t0_3_mb_s": mb / peer_write, "ratio_vs_tar_zstd": peer_write / write },
        "import": { "ours_mb_s": mb / import, "zstd_d_sha256sum_mb_s": mb / peer_read, "ratio_vs_zstd_d_sha256sum": peer_read / import },
        "peak_rss_kib": peaks.iter().map(|(l, c, w, i)| serde_json::json!({"size": l, "content_bytes": c, "kit_build": w, "kit_import": i})).collect::<Vec<_>>(),
        "page_cache": "warm",
    });
    if json {
        println!("{report}");
    } else {
        println!("kit: {mb:.0} MB of content, {:.0} MB compressed (zstd level {})", kit_size as f64 / 1e6, schema::kit::ZSTD_LEVEL);
        println!(
            "kit write    ours {:.0} MB/s | tar -c | zstd -T0 -3 {:.0} MB/s | ratio {:.2}x",
            mb / write,
            mb / peer_write,
            peer_write / write
        );
        println!(
            "kit import   ours {:.0} MB/s (verify + load) | zstd -d | sha256sum {:.0} MB/s | ratio {:.2}x",
            mb / import,
            mb / peer_read,
            peer_read / import
        );
        for (l, c, w, i) in &peaks {
            println!("peak memory  {l}: {:.0} MB kit: build {w} KiB, import {i} KiB", *c as f64 / 1e6);
        }
    }
    Ok(())
}
