//! `cargo xtask bench`: the flags of [`pipeline::bench`] (layer writing and hashing, SBOM +
//! scan, offline kits, each measured against the machine's own tools on the same input, in one
//! run, as ratios) and the drawing of its reports, as text or `--json`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Result;
use pipeline::bench::{KitReport, LayerReport, SbomReport};
use schema::report::{Event, Reporter};

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
    /// docs, Python and npm packages, this workspace's Cargo.lock), as one layer, against `syft
    /// oci-dir:` on the same image instead; also against the machine's floor (openssl and gzip
    /// on the layer) and the bound (the blob's, the content's and every file's sha256 by
    /// openssl and the inflate, spread over every core: what no scan here can beat).
    #[arg(long)]
    sbom: bool,
    /// Measure offline kits instead: cut a release whose web-ui image carries a generated tree
    /// (twice `--size-mib`, so that the kit holds about `--size-mib` after gzip), then time
    /// `kit build` against `tar -c | zstd -T0 -3` on the same files and `kit import` (verify and
    /// load) against `zstd -d | sha256sum`, with peak memory at 1/8 of the size and at all of it.
    #[arg(long)]
    kit: bool,
    /// Measure `repro` instead: one release of the bench bundle (web-ui carrying a generated
    /// tree of `--size-mib`), then `repro` of the same repository (two whole releases at once
    /// and the comparison); prints both times and their ratio (target: at most 2.2).
    #[arg(long)]
    repro: bool,
    /// The layer gzip format to measure (`[release] layer-gzip`: 1, zlib-rs with dictionaries;
    /// 2, libdeflate, one member per block; 3, as 2 with incompressible blocks stored); another
    /// format (3, or 2 when measuring 3) is timed on the same tree too.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=3))]
    layer_gzip: u32,
    /// Measure scale instead: a bundle of 32 components x 2 platforms (this repository's and
    /// copies of web-ui) released with `--size-mib` and with four times that of generated
    /// content; prints each release's time and peak memory and the growth per byte (1.0 is
    /// linear; target within 15%, peak under 256 MiB).
    #[arg(long)]
    scale: bool,
    /// Measure the build cache instead: the repository's bundle (eight components, each with a
    /// generated tree, `--size-mib` in all, and excititor compiled from Go) released with a cold
    /// build cache, then a commit that changes one component released again; prints both times
    /// and their ratio (target: at most 0.20).
    #[arg(long)]
    incremental: bool,
    /// Internal: write one layer of DIR and print its peak memory (used by the bench itself).
    #[arg(long, hide = true, value_name = "DIR")]
    layer_only: Option<PathBuf>,
}

/// The bench's notes ("making a tree ...") on stderr, as plain lines.
struct Notes;
impl Reporter for Notes {
    fn event(&self, event: Event) {
        if let Event::Note { message } = event {
            crate::progress::eprint(&message);
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if let Some(tree) = &args.layer_only {
        println!("{}", pipeline::bench::layer_peak(tree, gzip_format(args.layer_gzip)?)?);
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
    let workspace = std::env::current_dir()?;
    if args.sbom {
        let syft = pipeline::bench::find_syft(&workspace);
        let report = pipeline::bench::sbom(&pipeline::bench::SbomOptions { dir, workspace, syft }, &Notes)?;
        print_sbom(&report, args.json);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    if args.repro {
        let opts = pipeline::bench::KitOptions { dir, size_mib: args.size_mib, exe, workspace };
        let r = pipeline::bench::repro(&opts, &Notes)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "release ({} MiB tree)  {:>8.2} s  peak {} MiB\nrepro (2 releases + compare)  {:>8.2} s  peak {} MiB\nrepro / release  {:.2}x (target: at most 2.2x)",
                r.tree_bytes >> 20,
                r.release_seconds,
                r.release_peak_rss_kib / 1024,
                r.repro_seconds,
                r.repro_peak_rss_kib / 1024,
                r.ratio
            );
        }
        return Ok(());
    }
    if args.scale {
        let opts = pipeline::bench::KitOptions { dir, size_mib: args.size_mib, exe, workspace };
        let r = pipeline::bench::scale(&opts, &Notes)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            for p in [&r.small, &r.large] {
                println!(
                    "release of {} components x 2 platforms, {} MiB of content  {:>8.2} s  {:>7.1} MB/s  peak {} MiB",
                    p.components,
                    p.content_bytes >> 20,
                    p.seconds,
                    p.content_bytes as f64 / 1e6 / p.seconds.max(1e-9),
                    p.peak_rss_kib / 1024
                );
            }
            println!("growth per byte (4x the content)  {:.2} (1.00 is linear; target 0.85 to 1.15)", r.growth);
        }
        return Ok(());
    }
    if args.incremental {
        let opts = pipeline::bench::KitOptions { dir, size_mib: args.size_mib, exe, workspace };
        let r = pipeline::bench::incremental(&opts, &Notes)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "cold release ({} components, {} MiB of content)  {:>8.2} s\nrelease of the next commit ({} images built, {} cached)  {:>8.2} s\nincremental / cold  {:.2} (target: at most 0.20)",
                r.components,
                r.content_bytes >> 20,
                r.cold_seconds,
                r.built,
                r.cached,
                r.incremental_seconds,
                r.ratio
            );
        }
        return Ok(());
    }
    if args.kit {
        let opts = pipeline::bench::KitOptions { dir, size_mib: args.size_mib, exe, workspace };
        print_kit(&pipeline::bench::kit(&opts, &Notes)?, args.json);
        return Ok(());
    }
    let opts = pipeline::bench::LayerOptions { dir, size_mib: args.size_mib, exe, gzip: gzip_format(args.layer_gzip)? };
    print_layer(&pipeline::bench::layer(&opts, &Notes)?, args.json);
    Ok(())
}

fn gzip_format(n: u32) -> Result<schema::files::LayerGzip> {
    schema::files::LayerGzip::try_from(n).map_err(anyhow::Error::msg)
}

fn print_layer(r: &LayerReport, json: bool) {
    let mb = r.input_bytes as f64 / 1e6;
    let layer_mb = r.layer_bytes as f64 / 1e6;
    let (gzip, pigz) = (&r.write_gzip, r.write_pigz.as_ref());
    let (sha, openssl) = (&r.sha256sum, r.openssl.as_ref());
    if json {
        let report = serde_json::json!({
            "input_mb": mb,
            "layer": {
                "ours_mb_s": gzip.ours_mb_s(), "gzip6_mb_s": gzip.peer_mb_s(), "ratio_vs_tar_gzip6": gzip.ratio,
                "pigz6_mb_s": pigz.map(|p| p.peer_mb_s()), "ratio_vs_tar_pigz6": pigz.map(|p| p.ratio),
                "umoci_insert_mb_s": r.write_umoci.as_ref().map(|u| u.peer_mb_s()),
                "ratio_vs_umoci_insert": r.write_umoci.as_ref().map(|u| u.ratio),
                "umoci_compressed_mb": r.umoci_layer_bytes.map(|b| b as f64 / 1e6),
                "compressed_mb": layer_mb,
                "layer_gzip": r.layer_gzip, "other_layer_gzip": r.other_layer_gzip,
                "other_format_mb_s": r.write_other.peer_mb_s(), "ratio_vs_other_format": r.write_other.ratio,
                "other_format_compressed_mb": r.other_layer_bytes as f64 / 1e6,
            },
            "sha256": {
                "ours_mb_s": sha.ours_mb_s(), "sha256sum_mb_s": sha.peer_mb_s(), "ratio_vs_sha256sum": sha.ratio,
                "openssl_mb_s": openssl.map(|o| o.peer_mb_s()), "ratio_vs_openssl": openssl.map(|o| o.ratio),
            },
            "peak_rss_kib": { "eighth_input": r.peak_rss_kib_eighth, "full_input": r.peak_rss_kib_full },
            "compressor": r.compressor,
            "page_cache": r.page_cache,
        });
        println!("{report}");
        return;
    }
    println!("input: {mb:.0} MB tree, warm page cache; layer: {layer_mb:.0} MB ({})", r.compressor);
    println!("layer write  ours {:.1} MB/s | tar|gzip -6 {:.1} MB/s | ratio {:.2}x", gzip.ours_mb_s(), gzip.peer_mb_s(), gzip.ratio);
    if let Some(p) = pigz {
        println!("             tar|pigz -6 {:.1} MB/s | ratio {:.2}x", p.peer_mb_s(), p.ratio);
    }
    if let (Some(u), Some(b)) = (&r.write_umoci, r.umoci_layer_bytes) {
        println!("             umoci insert {:.1} MB/s ({:.0} MB out) | ratio {:.2}x", u.peer_mb_s(), b as f64 / 1e6, u.ratio);
    }
    let o = &r.write_other;
    println!(
        "             ours in layer gzip format {} {:.1} MB/s ({:.0} MB out) | ratio {:.2}x",
        u32::from(r.other_layer_gzip),
        o.peer_mb_s(),
        r.other_layer_bytes as f64 / 1e6,
        o.ratio
    );
    println!("sha256       ours {:.0} MB/s | sha256sum {:.0} MB/s | ratio {:.2}x", sha.ours_mb_s(), sha.peer_mb_s(), sha.ratio);
    if let Some(o) = openssl {
        println!("             openssl {:.0} MB/s | ratio {:.2}x", o.peer_mb_s(), o.ratio);
    }
    println!("peak memory  {} KiB for 1/8 of the input, {} KiB for all of it", r.peak_rss_kib_eighth, r.peak_rss_kib_full);
}

fn print_sbom(r: &SbomReport, json: bool) {
    let (files, s) = (r.rootfs_files, &r.scan);
    let (ours, theirs) = (s.ours_seconds, s.peer_seconds);
    let (ours_count, theirs_count) = (r.ours_packages, r.syft_packages);
    if json {
        let report = serde_json::json!({
            "rootfs_files": files,
            "ours_seconds": ours, "syft_seconds": theirs, "speedup_vs_syft": s.ratio,
            "floor_seconds": r.floor.peer_seconds, "floor": r.floor.peer, "speedup_vs_floor": r.floor.ratio,
            "bound": r.bound, "syft_over_bound": theirs / r.bound.seconds, "syft_over_hash_bound": theirs / r.bound.hash_seconds,
            "ours_packages": ours_count, "syft_packages": theirs_count, "packages_by_type_ours_syft": r.packages_by_type,
            "sbom_json_bytes": r.sbom_json_bytes, "sbom_protobuf_bytes": r.sbom_protobuf_bytes,
        });
        println!("{report}");
        return;
    }
    println!("rootfs: {files} files (dpkg status + lists, docs, Python and npm packages, a Cargo.lock)");
    println!(
        "scan + SBOM  ours {ours:.2} s ({ours_count} packages) | syft oci-dir: {theirs:.2} s ({theirs_count} packages) | {:.1}x",
        s.ratio
    );
    println!(
        "floor        inflate + sha256 of the same layer by gzip and openssl: {:.2} s | ours {:.2}x of it",
        r.floor.peer_seconds, r.floor.ratio
    );
    let b = &r.bound;
    println!(
        "bound        {:.3} s = max(inflate by our decoder {:.3}, (blob sha256 {:.3} + content sha256 {:.3} + files sha256 {:.3} + inflate) / {} cores)",
        b.seconds, b.inflate_seconds, b.blob_sha256_seconds, b.content_sha256_seconds, b.files_sha256_seconds, b.cores
    );
    println!(
        "             so at most {:.1}x syft here with our decoder, {:.1}x with a free inflate (the digests alone: {:.3} s); ours is {:.1}x, 50x would need {:.3} s",
        theirs / b.seconds,
        theirs / b.hash_seconds,
        b.hash_seconds,
        s.ratio,
        theirs / 50.0
    );
    println!("SBOM size    JSON {} KiB, protobuf {} KiB", r.sbom_json_bytes / 1024, r.sbom_protobuf_bytes / 1024);
    for (t, (o, s)) in &r.packages_by_type {
        println!("  {t:<12} ours {o:>5} | syft {s:>5}");
    }
}

fn print_kit(r: &KitReport, json: bool) {
    let mb = r.content_bytes as f64 / 1e6;
    let (w, i) = (&r.write, &r.import);
    if json {
        let report = serde_json::json!({
            "kit_content_mb": mb, "kit_file_mb": r.kit_bytes as f64 / 1e6,
            "write": { "ours_mb_s": w.ours_mb_s(), "tar_zstd_t0_3_mb_s": w.peer_mb_s(), "ratio_vs_tar_zstd": w.ratio },
            "import": { "ours_mb_s": i.ours_mb_s(), "zstd_d_sha256sum_mb_s": i.peer_mb_s(), "ratio_vs_zstd_d_sha256sum": i.ratio },
            "peak_rss_kib": r.peaks.iter().map(|p| serde_json::json!({"size": p.size, "content_bytes": p.content_bytes, "kit_build": p.kit_build_kib, "kit_import": p.kit_import_kib})).collect::<Vec<_>>(),
            "page_cache": r.page_cache,
        });
        println!("{report}");
        return;
    }
    println!("kit: {mb:.0} MB of content, {:.0} MB compressed (zstd level {})", r.kit_bytes as f64 / 1e6, schema::kit::ZSTD_LEVEL);
    println!("kit write    ours {:.0} MB/s | tar -c | zstd -T0 -3 {:.0} MB/s | ratio {:.2}x", w.ours_mb_s(), w.peer_mb_s(), w.ratio);
    println!(
        "kit import   ours {:.0} MB/s (verify + load) | zstd -d | sha256sum {:.0} MB/s | ratio {:.2}x",
        i.ours_mb_s(),
        i.peer_mb_s(),
        i.ratio
    );
    for p in &r.peaks {
        println!(
            "peak memory  {}: {:.0} MB kit: build {} KiB, import {} KiB",
            p.size,
            p.content_bytes as f64 / 1e6,
            p.kit_build_kib,
            p.kit_import_kib
        );
    }
}
