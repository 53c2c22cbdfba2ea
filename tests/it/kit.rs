//! Offline kits (issue 5): deterministic, imported into an OCI layout that umoci accepts,
//! refused whole for every bad case with the target left as it was, delta kits, no network.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{run_ok, services, tool, xtask_cmd, Repo, Run, EPOCH};

const KIT: &str = "stellaops-kit-2.4.1-edge.tar.zst";

pub(crate) fn sha256_file(p: &Path) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(fs::read(p).unwrap()))
}

/// Every file under `dir` with its sha256 (and every directory), for before/after comparisons.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        let what = if e.file_type().is_file() { sha256_file(e.path()) } else { "dir".into() };
        out.insert(rel, what);
    }
    out
}

fn import(kit: &Path, into: &Path, key: &Path) -> Run {
    let mut cmd = xtask_cmd();
    cmd.args(["kit", "import"]).arg(kit).arg("--into").arg(into).arg("--key").arg(key);
    Run::of(cmd.output().unwrap())
}

fn release(repo: &Repo, out: &Path) -> PathBuf {
    repo.xtask(&["release", "--channel", "edge", "--out", out.to_str().unwrap()]).ok();
    out.to_owned()
}

/// One tar entry as the test rewrites it: a raw header (any type, any name) and its data.
pub(crate) struct Raw {
    pub(crate) header: tar::Header,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn unpack(kit: &Path) -> Vec<Raw> {
    let dec = zstd::stream::read::Decoder::new(fs::File::open(kit).unwrap()).unwrap();
    let mut ar = tar::Archive::new(dec);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path_bytes().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let mut header = e.header().clone();
            set_name(&mut header, &path);
            Raw { header, data }
        })
        .collect()
}

/// Writes the name bytes as they are: `tar::Header::set_path` refuses `..` and absolute
/// paths, which is what these tests need to build.
fn set_name(h: &mut tar::Header, name: &[u8]) {
    let gnu = h.as_gnu_mut().expect("gnu header");
    gnu.name = [0; 100];
    gnu.name[..name.len()].copy_from_slice(name);
    h.set_cksum();
}

pub(crate) fn name_of(r: &Raw) -> String {
    String::from_utf8_lossy(&r.header.path_bytes()).into_owned()
}

pub(crate) fn pack(entries: &[Raw], out: &Path) {
    let f = fs::File::create(out).unwrap();
    let enc = zstd::stream::write::Encoder::new(f, 3).unwrap();
    let mut b = tar::Builder::new(enc);
    for r in entries {
        let mut h = r.header.clone();
        h.set_size(r.data.len() as u64);
        h.set_cksum();
        b.append(&h, r.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn special(name: &str, kind: tar::EntryType, link: Option<&str>) -> Raw {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(0);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    set_name(&mut h, name.as_bytes());
    Raw { header: h, data: Vec::new() }
}

#[test]
fn kits_are_deterministic_and_import_into_a_layout_umoci_accepts() {
    let Some(umoci) = tool("umoci") else { return };
    let repo = Repo::new();
    let rel = release(&repo, &repo.path().join("target/r1"));
    let kit = rel.join(KIT);
    assert!(kit.is_file(), "release wrote no kit");

    // Built again from the release: the same bytes.
    let again = repo.path().join("target/again.tar.zst");
    repo.xtask(&["kit", "build", rel.to_str().unwrap(), "--out", again.to_str().unwrap()]).ok();
    assert_eq!(sha256_file(&kit), sha256_file(&again), "two kits of one release differ");

    let key = repo.path().join("target/keys/dev.pub");
    let mut v = xtask_cmd();
    v.args(["verify", "--json"]).arg(&kit).arg("--key").arg(&key);
    let verified = Run::of(v.output().unwrap());
    verified.ok();
    assert_eq!(verified.json()["verified"], true);

    let target = repo.path().join("target/imported");
    import(&kit, &target, &key).ok();
    // Digests by name equal release.yaml's.
    let yaml: serde_norway::Value = serde_norway::from_slice(&fs::read(rel.join("release.yaml")).unwrap()).unwrap();
    let names = crate::support::digests(&target);
    for c in yaml["components"].as_sequence().unwrap() {
        let (name, image) = (c["name"].as_str().unwrap(), c["image"].as_str().unwrap());
        assert_eq!(Some(image.split_once('@').unwrap().1), names.get(name).map(String::as_str), "{name}");
    }
    let scratch = tempfile::tempdir().unwrap();
    let mut unpacked = 0;
    for name in names.keys().filter(|n| n.ends_with("-linux-amd64") || n.ends_with("-linux-arm64")) {
        let dest = scratch.path().join(name);
        run_ok(Command::new(&umoci).arg("unpack").arg("--image").arg(format!("{}:{name}", target.display())).arg(&dest));
        // excititor is the compiled Go program; the others are the shell stand-in.
        let program = if name.starts_with("excititor-") { "stellaops-excititor" } else { "stellaops-standin" };
        assert!(dest.join("rootfs/usr/bin").join(program).is_file(), "{name}: no {program}");
        unpacked += 1;
    }
    assert_eq!(unpacked, 16);
    // The rest of the release beside the images.
    let files = target.join("stellaops/2.4.1-edge");
    assert_eq!(sha256_file(&files.join("manifest/release.yaml")), sha256_file(&rel.join("release.yaml")));
    assert!(files.join("charts/platform-2.4.1.tgz").is_file());
    assert!(files.join("sboms/web-ui/linux-arm64.cdx.pb").is_file());
    // The protobuf SBOM's signed envelope travels with the others.
    assert_eq!(
        sha256_file(&files.join("attest/web-ui/linux-arm64.sbom-protobuf.dsse.json")),
        sha256_file(&rel.join("attest/web-ui/linux-arm64.sbom-protobuf.dsse.json"))
    );
    assert!(files.join("policy/block-critical-vulnerabilities.yaml").is_file());

    // Importing the same kit again changes nothing.
    let before = listing(&target);
    import(&kit, &target, &key).ok();
    assert_eq!(before, listing(&target));
}

#[test]
fn import_refuses_every_bad_kit_and_leaves_the_target_as_it_was() {
    let repo = Repo::new();
    let rel = release(&repo, &repo.path().join("target/r1"));
    let kit = rel.join(KIT);
    let key = repo.path().join("target/keys/dev.pub");
    // A target that already holds the release: a refused import must leave it as it is.
    let work = repo.path().join("target/work");
    fs::create_dir_all(&work).unwrap();
    let target = work.join("layout");
    import(&kit, &target, &key).ok();
    let good = unpack(&kit);
    let layer = good
        .iter()
        .position(|r| name_of(r).starts_with("images/blobs/") && r.data.len() > 4096 && r.data[..2] == [0x1f, 0x8b])
        .expect("a gzip layer in the kit");
    let at = |name: &str| good.iter().position(|r| name_of(r) == name).unwrap();

    let mut cases: Vec<(&str, Vec<Raw>, Vec<String>)> = Vec::new();
    let clone = |v: &Vec<Raw>| v.iter().map(|r| Raw { header: r.header.clone(), data: r.data.clone() }).collect::<Vec<_>>();
    let flip = |mut v: Vec<Raw>, i: usize| {
        let mid = v[i].data.len() / 2;
        v[i].data[mid] ^= 0x01;
        v
    };
    let layer_name = name_of(&good[layer]);
    cases.push(("a flipped byte in a layer", flip(clone(&good), layer), vec![layer_name.clone(), "hashes to".into()]));
    cases.push((
        "a flipped byte in release.yaml",
        flip(clone(&good), at("manifest/release.yaml")),
        vec!["release.yaml.sig".into(), "does not verify".into()],
    ));
    {
        let mut v = clone(&good);
        let i = at("manifest/release.yaml.sig");
        // Base64 text: change one character to another base64 character.
        let c = &mut v[i].data[10];
        *c = if *c == b'A' { b'B' } else { b'A' };
        cases.push(("a flipped byte in release.yaml.sig", v, vec!["release.yaml.sig".into(), "does not verify".into()]));
    }
    {
        let mut v = clone(&good);
        v.remove(layer);
        cases.push(("a removed blob", v, vec!["missing".into(), layer_name.clone()]));
    }
    {
        let mut v = clone(&good);
        let mut extra = special("images/blobs/sha256/extra", tar::EntryType::Regular, None);
        extra.data = b"not listed".to_vec();
        v.push(extra);
        cases.push(("an extra entry", v, vec!["images/blobs/sha256/extra".into(), "not in the signed inventory".into()]));
    }
    {
        let mut v = clone(&good);
        let mut e = special("images/../../escaped", tar::EntryType::Regular, None);
        e.data = b"x".to_vec();
        v.insert(5, e);
        cases.push(("a `..` path", v, vec!["images/../../escaped".into(), "..".into()]));
    }
    {
        let mut v = clone(&good);
        let mut e = special("/tmp/stellaops-absolute", tar::EntryType::Regular, None);
        e.data = b"x".to_vec();
        v.insert(5, e);
        cases.push(("an absolute path", v, vec!["/tmp/stellaops-absolute".into(), "absolute".into()]));
    }
    {
        let mut v = clone(&good);
        v.insert(5, special("images/escape", tar::EntryType::Symlink, Some("../../../../etc/passwd")));
        cases.push(("a symlink escaping", v, vec!["images/escape".into(), "symbolic link".into()]));
    }
    {
        let mut v = clone(&good);
        v.insert(5, special("images/hard", tar::EntryType::Link, Some("/etc/shadow")));
        cases.push(("a hardlink escaping", v, vec!["images/hard".into(), "hard link".into()]));
    }
    {
        let mut v = clone(&good);
        v.insert(5, special("images/dev", tar::EntryType::Char, None));
        cases.push(("a device file", v, vec!["images/dev".into(), "character device".into()]));
    }
    {
        let mut v = clone(&good);
        let dup = Raw { header: v[layer].header.clone(), data: v[layer].data.clone() };
        v.insert(layer + 1, dup);
        cases.push(("a duplicate entry", v, vec![layer_name.clone(), "twice".into()]));
    }

    let bad = work.join("bad.tar.zst");
    let check = |what: &str, needles: &[String]| {
        let parent_before = listing(&work);
        let run = import(&bad, &target, &key);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_eq!(run.code, 1, "{what}: expected exit 1\n{}", run.stderr);
        for n in &needles {
            assert!(run.stderr.contains(n), "{what}: stderr lacks `{n}`:\n{}", run.stderr);
        }
        assert!(run.stderr.contains("nothing was imported"), "{what}:\n{}", run.stderr);
        // The target and its parent (where staging happens) are exactly as before.
        assert_eq!(parent_before, listing(&work), "{what}: the target or its parent changed");
        // `verify` refuses it too.
        let mut v = xtask_cmd();
        v.arg("verify").arg(&bad).arg("--key").arg(&key);
        assert_eq!(Run::of(v.output().unwrap()).code, 1, "{what}: verify accepted it");
    };
    for (what, entries, needles) in &cases {
        pack(entries, &bad);
        check(what, needles);
    }

    // A truncated zstd stream.
    let bytes = fs::read(&kit).unwrap();
    fs::write(&bad, &bytes[..bytes.len() * 2 / 3]).unwrap();
    check("a truncated zstd stream", &["truncated or corrupt".into()]);

    // A stream that expands far past the declared size: the good archive, then 1 GiB of
    // zeros in the same zstd stream (a few kB compressed).
    {
        let f = fs::File::create(&bad).unwrap();
        let mut enc = zstd::stream::write::Encoder::new(f, 3).unwrap();
        let mut b = tar::Builder::new(&mut enc);
        for r in &good {
            b.append(&r.header, r.data.as_slice()).unwrap();
        }
        b.finish().unwrap();
        drop(b);
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap();
        // The zeros add little to the file: the kit expands 1 GiB past its size.
        let (bomb, good_kit) = (fs::metadata(&bad).unwrap().len(), fs::metadata(&kit).unwrap().len());
        assert!(bomb < good_kit + (1 << 20), "{bomb} bytes against the kit's {good_kit}");
    }
    let started = std::time::Instant::now();
    check("a zstd stream expanding past the declared size", &["decompresses past".into()]);
    eprintln!("bomb refused in {:?}", started.elapsed());

    // A kit signed by another key: a whole release cut with it...
    let other = repo.path().join("target/other.key");
    run_ok(xtask_cmd().args(["keys", "generate", "--out"]).arg(&other));
    let other_rel = repo.path().join("target/r-other");
    repo.xtask(&["release", "--channel", "edge", "--key", other.to_str().unwrap(), "--out", other_rel.to_str().unwrap()]).ok();
    fs::copy(other_rel.join(KIT), &bad).unwrap();
    check("a kit signed by another key", &["release.yaml.sig".into(), "does not verify".into()]);
    // ...or our release with an inventory signed by another key.
    fs::remove_file(&bad).unwrap();
    repo.xtask(&["kit", "build", rel.to_str().unwrap(), "--out", bad.to_str().unwrap(), "--key", other.to_str().unwrap()]).ok();
    check("an inventory signed by another key", &["manifest/kit.dsse.json".into()]);

    // And the good kit still imports.
    import(&kit, &target, &key).ok();
}

#[test]
fn a_delta_kit_carries_only_the_changed_component_and_imports_to_the_full_state() {
    let repo = Repo::new();
    let key = repo.path().join("target/keys/dev.pub");
    let r1 = release(&repo, &repo.path().join("target/r1"));
    // A change to web-ui only (the only component shipping www/), at the same commit time.
    repo.write("components/standin/www/index.html", "<html><body>Stella Ops, next week</body></html>\n");
    repo.commit_all("web-ui: new page", EPOCH);
    let r2 = release(&repo, &repo.path().join("target/r2"));
    let full = r2.join(KIT);
    let delta = repo.path().join("target/delta.tar.zst");
    let built = repo.xtask(&[
        "kit",
        "build",
        r2.to_str().unwrap(),
        "--delta-from",
        r1.join("release.yaml").to_str().unwrap(),
        "--out",
        delta.to_str().unwrap(),
        "--json",
    ]);
    built.ok();

    // Only blobs the first release lacks, and all of them.
    let blobs = |dir: &Path| -> std::collections::BTreeSet<String> {
        fs::read_dir(dir.join("images/blobs/sha256")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    let new: std::collections::BTreeSet<String> = blobs(&r2).difference(&blobs(&r1)).cloned().collect();
    let in_delta: std::collections::BTreeSet<String> =
        unpack(&delta).iter().filter_map(|r| name_of(r).strip_prefix("images/blobs/sha256/").map(str::to_owned)).collect();
    assert_eq!(in_delta, new, "the delta kit's blobs are not exactly the new ones");
    // Every image records the release's commit and time (spec §6.2 labels), so each
    // component's config, manifests and index are new, and so are its evidence referrers; but
    // the only new layers are web-ui's.
    let layers_of = |rel: &Path, component: &str| -> Vec<String> {
        let layout = rel.join("images");
        let read = |d: &str| -> serde_json::Value {
            serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap()).unwrap()
        };
        let index = read(&crate::support::digests(&layout)[component]);
        let mut layers = Vec::new();
        for m in index["manifests"].as_array().unwrap() {
            for l in read(m["digest"].as_str().unwrap())["layers"].as_array().unwrap() {
                layers.push(l["digest"].as_str().unwrap().trim_start_matches("sha256:").to_owned());
            }
        }
        layers
    };
    let yaml: serde_norway::Value = serde_norway::from_slice(&fs::read(r2.join("release.yaml")).unwrap()).unwrap();
    let mut web_ui_layers = 0;
    let mut other_metadata = 0u64;
    for c in yaml["components"].as_sequence().unwrap() {
        let name = c["name"].as_str().unwrap();
        let layers = layers_of(&r2, name);
        let carried: Vec<&String> = layers.iter().filter(|l| in_delta.contains(*l)).collect();
        if name == "web-ui" {
            web_ui_layers = carried.len();
        } else {
            assert!(carried.is_empty(), "{name}: the delta kit carries its unchanged layers {carried:?}");
        }
    }
    assert!(web_ui_layers >= 2, "the delta kit lacks web-ui's new layers");
    let web_ui: std::collections::BTreeSet<String> = layers_of(&r2, "web-ui").into_iter().collect();
    // The rest: image configs, manifests and indexes, signatures, SBOMs and attestations
    // (referrers whose documents carry the release's commit and run times); no layer.
    for b in in_delta.difference(&web_ui) {
        let bytes = fs::read(r2.join("images/blobs/sha256").join(b)).unwrap();
        assert!(!bytes.starts_with(&[0x1f, 0x8b]), "blob {b} of {} bytes is a layer", bytes.len());
        other_metadata += bytes.len() as u64;
    }
    eprintln!("delta kit: {web_ui_layers} web-ui layers, {other_metadata} bytes of metadata and evidence of every component");
    let (delta_size, full_size) = (fs::metadata(&delta).unwrap().len(), fs::metadata(&full).unwrap().len());
    eprintln!("delta kit {delta_size} bytes, full kit {full_size} bytes ({} new blobs)", new.len());
    assert!(delta_size * 2 < full_size, "delta {delta_size} vs full {full_size}");

    // Onto the previous release: the same final state as the full kit.
    let a = repo.path().join("target/a");
    let b = repo.path().join("target/b");
    import(&r1.join(KIT), &a, &key).ok();
    import(&r1.join(KIT), &b, &key).ok();
    import(&delta, &a, &key).ok();
    import(&full, &b, &key).ok();
    assert_eq!(listing(&a), listing(&b), "delta and full imports differ");

    // Onto an empty target: refused, naming what is missing.
    let empty = repo.path().join("target/empty");
    let run = import(&delta, &empty, &key);
    run.refused(&["needs content the target", "blob `sha256:"]);
    assert!(!empty.exists(), "a refused import made the target");
}

#[test]
fn importing_into_a_directory_opens_no_socket() {
    let Some(strace) = tool("strace") else { return };
    let repo = Repo::new();
    let rel = release(&repo, &repo.path().join("target/r1"));
    let key = repo.path().join("target/keys/dev.pub");
    let trace = repo.path().join("target/strace.log");
    let target = repo.path().join("target/imported");
    let out = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=socket,connect,socketpair", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["kit", "import"])
        .arg(rel.join(KIT))
        .arg("--into")
        .arg(&target)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    Run::of(out).ok();
    assert!(target.join("index.json").is_file());
    let calls = fs::read_to_string(&trace).unwrap();
    let sockets: Vec<&str> = calls.lines().filter(|l| l.contains("socket") || l.contains("connect")).collect();
    assert!(sockets.is_empty(), "the import made socket calls:\n{}", sockets.join("\n"));
}

#[test]
fn a_kit_imports_into_the_loopback_registry_with_the_release_digests() {
    let (Some((_, registry)), Some(skopeo)) = (services(), tool("skopeo")) else { return };
    let repo = Repo::new();
    let rel = release(&repo, &repo.path().join("target/r1"));
    let key = repo.path().join("target/keys/dev.pub");
    let ns = format!("kit-import-{}", std::process::id());
    let mut cmd = xtask_cmd();
    cmd.args(["kit", "import"]).arg(rel.join(KIT)).arg("--into").arg(format!("docker://{registry}/{ns}")).arg("--key").arg(&key);
    Run::of(cmd.output().unwrap()).ok();
    let yaml: serde_norway::Value = serde_norway::from_slice(&fs::read(rel.join("release.yaml")).unwrap()).unwrap();
    for c in yaml["components"].as_sequence().unwrap() {
        let (name, image) = (c["name"].as_str().unwrap(), c["image"].as_str().unwrap());
        let digest = image.split_once('@').unwrap().1;
        // By the version tag, written last: the index release.yaml names.
        let raw = run_ok(
            Command::new(&skopeo).args(["inspect", "--raw", "--tls-verify=false"]).arg(format!("docker://{registry}/{ns}/{name}:2.4.1")),
        );
        use sha2::Digest as _;
        assert_eq!(format!("sha256:{:x}", sha2::Sha256::digest(raw.as_bytes())), digest, "{name}");
        // And every platform image by digest.
        let out = run_ok(
            Command::new(&skopeo)
                .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
                .arg(format!("docker://{registry}/{ns}/{name}@{digest}")),
        );
        assert!(!out.trim().is_empty());
    }
    // A bad kit pushes nothing: refused before any connection.
    let bad = repo.path().join("target/bad.tar.zst");
    let bytes = fs::read(rel.join(KIT)).unwrap();
    fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let mut cmd = xtask_cmd();
    cmd.args(["kit", "import"]).arg(&bad).arg("--into").arg(format!("docker://{registry}/{ns}-bad")).arg("--key").arg(&key);
    Run::of(cmd.output().unwrap()).refused(&["truncated or corrupt"]);
    let tags = Command::new(&skopeo)
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{registry}/{ns}-bad/authority"))
        .output()
        .unwrap();
    assert!(!tags.status.success() || !String::from_utf8_lossy(&tags.stdout).contains("2.4.1"), "a refused kit left a tag");
}
