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
