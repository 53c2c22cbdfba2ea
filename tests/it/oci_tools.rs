//! Other people's OCI tools accept every image: umoci (strictest: digests, sizes, diff_ids)
//! and skopeo (re-hashes every blob while copying with --preserve-digests).

use std::process::Command;

use crate::support::{digests, run_ok, tool, Repo};

#[test]
fn umoci_and_skopeo_accept_every_image_of_the_layout() {
    let (Some(umoci), Some(skopeo)) = (tool("umoci"), tool("skopeo")) else {
        return;
    };
    let repo = Repo::new();
    repo.xtask(&["release", "--channel", "edge"]).ok();
    let layout = repo.releases().join("2.4.1-edge/images");
    let refs = digests(&layout);
    let scratch = tempfile::tempdir().unwrap();
    let mut unpacked = 0;
    for (name, digest) in &refs {
        if name.ends_with("-linux-amd64") || name.ends_with("-linux-arm64") {
            let dest = scratch.path().join(format!("unpack-{name}"));
            run_ok(Command::new(&umoci).arg("unpack").arg("--image").arg(format!("{}:{name}", layout.display())).arg(&dest));
            // excititor is the compiled Go program; the others are the shell stand-in.
            let program = if name.starts_with("excititor-") { "stellaops-excititor" } else { "stellaops-standin" };
            let script = dest.join("rootfs/usr/bin").join(program);
            assert!(script.is_file(), "{name}: {} missing", script.display());
            assert!(dest.join("rootfs/bin/busybox").is_file());
            unpacked += 1;
        } else {
            // A component's multi-arch index: every blob re-hashed, digests preserved.
            let dest = scratch.path().join(format!("copy-{name}"));
            run_ok(
                Command::new(&skopeo)
                    .args(["copy", "--all", "--preserve-digests", "--quiet"])
                    .arg(format!("oci:{}:{name}", layout.display()))
                    .arg(format!("dir:{}", dest.display())),
            );
            let manifest = std::fs::read(dest.join("manifest.json")).unwrap();
            use sha2::Digest as _;
            let got = format!("sha256:{:x}", sha2::Sha256::digest(&manifest));
            assert_eq!(&got, digest, "{name}: skopeo copied another index");
        }
    }
    assert_eq!(unpacked, 16);
}

/// Gzip members in a blob: the streams one after the other, each read to its end.
fn gzip_members(blob: &[u8]) -> usize {
    let mut rest = blob;
    let mut n = 0;
    while !rest.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(rest);
        std::io::copy(&mut d, &mut std::io::sink()).expect("a whole gzip member");
        rest = d.into_inner();
        n += 1;
    }
    n
}

#[test]
fn layer_gzip_3_reproduces_and_its_multi_member_layers_with_stored_blocks_are_read_by_umoci_skopeo_and_docker() {
    let Some((_, registry)) = crate::support::services() else { return };
    let (Some(umoci), Some(skopeo), Some(docker)) = (tool("umoci"), tool("skopeo"), tool("docker")) else {
        return;
    };
    let repo = Repo::new();
    // The repository's own bundle uses format 3 (the fixture copies it).
    assert!(repo.read("release-trains/components.toml").contains("\nlayer-gzip = 3\n"));
    // A web asset that spans several 128 KiB blocks, half text and half noise, then 512 KiB
    // of noise alone (blocks format 3 stores).
    let mut x: u32 = 11;
    let asset: Vec<u8> = (0..600 * 1024 + 17)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if (i / 700) % 2 == 0 {
                b"web ui asset "[i % 13]
            } else {
                (x >> 24) as u8
            }
        })
        .collect::<Vec<u8>>()
        .into_iter()
        .chain((0..512 * 1024).scan(0x2545_f491_4f6c_dd1d_u64, |y, _| {
            *y ^= *y << 13;
            *y ^= *y >> 7;
            *y ^= *y << 17;
            Some(*y as u8)
        }))
        .collect();
    std::fs::write(repo.path().join("components/standin/www/app.bin"), &asset).unwrap();
    repo.commit_all("layer gzip format 3, and a large asset", crate::support::EPOCH + 60);

    // Two builds at once, byte for byte the same.
    repo.xtask(&["repro"]).ok();
    repo.xtask(&["release", "--channel", "edge"]).ok();
    let dir = repo.releases().join("2.4.1-edge");
    let layout = dir.join("images");
    let refs = digests(&layout);
    // The same bytes on one core: the compression pool is as large as the CPUs the process
    // may use, and `taskset` gives it one.
    let taskset = tool("taskset").expect("taskset (util-linux)");
    let one_core = repo.path().join("target/one-core");
    let mut cmd = Command::new(taskset);
    cmd.args(["-c", "0"]).arg(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["release", "--channel", "edge", "--out"]).arg(&one_core).arg("--source").arg(repo.path());
    cmd.env("STELLAOPS_CACHE", crate::support::cache()).env("NO_COLOR", "1");
    run_ok(&mut cmd);
    assert_eq!(digests(&one_core.join("images")), refs, "one core gave other images");

    // Recorded: the provenance names the compressor.
    let provenance = std::fs::read_to_string(dir.join("provenance/web-ui/linux-amd64.intoto.json")).unwrap();
    assert!(provenance.contains("incompressible") || provenance.contains("stored"), "the provenance does not name format 3's compressor");

    // The asset's layer is several gzip members; its diff_id is the tar's digest.
    let manifest: serde_json::Value = {
        let d = &refs["web-ui-linux-amd64"];
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap()).unwrap()
    };
    let blobs: Vec<Vec<u8>> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| std::fs::read(layout.join("blobs/sha256").join(&l["digest"].as_str().unwrap()[7..])).unwrap())
        .collect();
    let members: Vec<usize> = blobs.iter().map(|b| gzip_members(b)).collect();
    assert!(members.iter().any(|&n| n >= 5), "no layer of several members: {members:?}");
    // Some of them stored (libdeflate's header for level 0 says "fastest", XFL 4).
    let stored = blobs.iter().map(|b| b.windows(10).filter(|w| *w == [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]).count()).sum::<usize>();
    assert!(stored >= 3, "{stored} stored members");

    // umoci unpacks it (checking every digest and diff_id).
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("unpacked");
    run_ok(Command::new(&umoci).arg("unpack").arg("--image").arg(format!("{}:web-ui-linux-amd64", layout.display())).arg(&dest));
    assert_eq!(std::fs::read(dest.join("rootfs/srv/www/app.bin")).unwrap(), asset);

    // skopeo copies it into the registry, re-hashing every blob; Docker pulls it by digest and
    // reads the asset back through its own gzip reader.
    let tag = format!("{registry}/stellaops-it-gzip2/web-ui:edge");
    run_ok(
        Command::new(&skopeo)
            .args(["copy", "--all", "--preserve-digests", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:web-ui", layout.display()))
            .arg(format!("docker://{tag}")),
    );
    let by_digest = format!("{registry}/stellaops-it-gzip2/web-ui@{}", refs["web-ui"]);
    run_ok(Command::new(&docker).args(["pull", "--quiet", &by_digest]));
    let out = run_ok(Command::new(&docker).args([
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/busybox",
        &by_digest,
        "sha256sum",
        "/srv/www/app.bin",
    ]));
    use sha2::Digest as _;
    let want = format!("{:x}", sha2::Sha256::digest(&asset));
    assert!(out.starts_with(&want), "docker read {out:?}, the asset is {want}");
    let _ = Command::new(&docker).args(["rmi", "-f", &by_digest]).output();
}
