//! The entry points of the fuzz targets: each takes the fuzzer's bytes and feeds them to a
//! parser of the pipeline the way the pipeline reads that input (file names, limits, the
//! checks around it). They must return on any input: a panic, a hang or an allocation out of
//! proportion to the input is a finding.
//!
//! Used by `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly) and, through `#[path]`, by
//! `tests/it/fuzz_corpus.rs`, which replays every committed corpus and regression input in the
//! normal test suite. Only the workspace's crates and what the `it` test binary already links
//! (serde_json, tempfile, tar, flate2, zstd) are used here.
//!
//! Inputs that carry several files separate them with [`SEPARATOR`] (a line `-----`); targets
//! that read one of several formats take the format from the input's first byte.

use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use pipeline::stages::build::dockerfile;
use pipeline::stages::evidence::sbom::locks;
use pipeline::stages::evidence::{auditable, goinfo, java, scan};
use schema::kit::{Entry, Inventory, KitKind, KIT_PREDICATE, MANIFEST_ENTRIES};
use schema::model::{Channel, Digest, Platform};
use verifier::keys::SigningKey;
use verifier::manifest::{self, Checksums, ComposeEntry, ReleaseInfo, ReleaseYaml};
use verifier::sign;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target, by the name of its directory under `fuzz/corpus/` and `fuzz/regressions/`
/// (and of its binary under `fuzz/fuzz_targets/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("kit", kit),
    ("dockerfile", dockerfile),
    ("scan_files", scan_files),
    ("scan_layer", scan_layer),
    ("goinfo", goinfo),
    ("auditable", auditable),
    ("java", java),
    ("lockfiles", lockfiles),
    ("config", config),
    ("release_yaml", release_yaml),
    ("pointer", pointer),
    ("oci_image", oci_image),
    ("registry", registry),
    ("model", model),
];

/// Between the files of one input.
pub const SEPARATOR: &[u8] = b"\n-----\n";

/// `data` cut at every [`SEPARATOR`].
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// The first byte (the format or option of a target) and the rest.
fn selector(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, data),
    }
}

/// The public key of the committed kit seeds (`fuzz/keys/kit-fuzz.pub`, written with them by
/// `cargo run --bin kit-seed` in `fuzz/`; its private key is thrown away).
pub const KIT_PUBLIC_KEY: &str = include_str!("../keys/kit-fuzz.pub");

/// A kit: the input is the kit's tar archive, compressed here (zstd, as the kit writer does)
/// and read by `verifier::kit::verify_kit` with the seeds' public key. The seeds are signed
/// kits, so mutations of the entries after `manifest/` reach the inventory checks.
pub fn kit(data: &[u8]) {
    static KEY: OnceLock<Option<verifier::keys::PublicKey>> = OnceLock::new();
    let Some(key) = KEY.get_or_init(|| verifier::keys::PublicKey::from_pem(KIT_PUBLIC_KEY).ok()) else {
        return;
    };
    let Ok(compressed) = zstd::encode_all(data, 1) else { return };
    let Ok(mut file) = tempfile::Builder::new().prefix("fuzz-kit-").suffix(".tar.zst").tempfile() else { return };
    if file.write_all(&compressed).is_err() {
        return;
    }
    let _ = verifier::kit::verify_kit(file.path(), key, None, verifier::keys::Fips::Off, None, &schema::report::Silent);
}

/// The kit seeds (`fuzz/corpus/kit/*.tar`, uncompressed as the `kit` target takes them),
/// signed with `key`, made the way the kit writer makes kits (manifest entries first, a signed
/// inventory) so that mutations reach the checks after the signatures: entry paths, sizes,
/// digests, duplicates, a delta's requirements. `tests/it/fuzz_corpus.rs` checks the committed
/// ones and writes new ones (with a new key, whose public half is [`KIT_PUBLIC_KEY`]) when
/// `STELLAOPS_FUZZ_WRITE_KIT_SEEDS` is set.
pub fn kit_seeds(key: &SigningKey) -> Vec<(&'static str, Vec<u8>)> {
    let blob = b"layer bytes";
    let blob_path = format!("images/blobs/sha256/{}", Digest::of(blob).hex());
    let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    vec![
        ("manifest-only.tar", seed_kit(key, &[], Vec::new())),
        (
            "full.tar",
            seed_kit(
                key,
                &[("images/index.json", index), ("images/oci-layout", layout), (&blob_path, blob), ("sboms/x/linux-amd64.cdx.json", b"{}")],
                Vec::new(),
            ),
        ),
        (
            "delta.tar",
            seed_kit(
                key,
                &[("images/index.json", index), ("images/oci-layout", layout)],
                vec![Entry { path: blob_path.clone(), digest: Digest::of(blob), size: blob.len() as u64 }],
            ),
        ),
    ]
}

fn append_entry(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(bytes.len() as u64);
    h.set_mtime(1_700_000_000);
    tar.append_data(&mut h, path, bytes).expect("a tar entry in memory");
}

pub fn seed_kit(key: &SigningKey, files: &[(&str, &[u8])], requires: Vec<Entry>) -> Vec<u8> {
    seed_kit_with(key, files, requires, |_| {})
}

/// A signed kit of `files` (and `requires`), its inventory changed by `edit` before signing.
pub fn seed_kit_with(key: &SigningKey, files: &[(&str, &[u8])], requires: Vec<Entry>, edit: impl Fn(&mut Inventory)) -> Vec<u8> {
    let mut doc = ReleaseYaml {
        release: ReleaseInfo {
            version: "2.4.1".parse().expect("a version"),
            channel: "edge".parse().expect("a channel"),
            date: "2026-01-01T00:00:00Z".into(),
            calendar: "2026.01".into(),
        },
        components: Vec::new(),
        charts: Vec::new(),
        compose: ComposeEntry::none(),
        tools: Vec::new(),
        checksums: Checksums { sha256: String::new() },
    };
    let yaml = manifest::render(&mut doc);
    let sig = manifest::blob_signature(key, &yaml).expect("the seed key signs");
    let bundle = serde_json::to_vec(&manifest::bundle(key, &yaml, &sig)).expect("json");
    let mut entries: Vec<Entry> =
        files.iter().map(|(p, b)| Entry { path: (*p).to_owned(), digest: Digest::of(b), size: b.len() as u64 }).collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let inventory = Inventory {
        version: "2.4.1".into(),
        channel: "edge".into(),
        kind: if requires.is_empty() { KitKind::Full } else { KitKind::Delta },
        components: Vec::new(),
        delta_from: (!requires.is_empty()).then(|| Digest::of(b"previous").to_string()),
        total_size: entries.iter().map(|e| e.size).sum(),
        entries,
        requires,
    };
    let mut inventory = inventory;
    edit(&mut inventory);
    let statement =
        sign::statement(&[("release.yaml".to_owned(), &Digest::of(&yaml))], KIT_PREDICATE, serde_json::to_value(&inventory).expect("json"));
    let env = serde_json::to_vec(&sign::sign_envelope(key, sign::PAYLOAD_TYPE, &statement).expect("the seed key signs")).expect("json");
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in MANIFEST_ENTRIES.iter().zip([yaml.as_slice(), sig.as_bytes(), &bundle, &env]) {
        append_entry(&mut tar, name, bytes);
    }
    let mut sorted = files.to_vec();
    sorted.sort();
    for (p, b) in sorted {
        append_entry(&mut tar, p, b);
    }
    tar.into_inner().expect("a tar in memory")
}

/// The repository's own `base-images.lock`, as the Dockerfile check reads it.
fn lock() -> Option<&'static schema::files::BaseLock> {
    static LOCK: OnceLock<Option<schema::files::BaseLock>> = OnceLock::new();
    LOCK.get_or_init(|| toml::from_str(include_str!("../../base-images.lock")).ok()).as_ref()
}

/// A Dockerfile of a BuildKit component, checked for a platform (first byte) against the
/// repository's lock, with every base of the lock as a build base.
pub fn dockerfile(data: &[u8]) {
    let (s, rest) = selector(data);
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let Some(lock) = lock() else { return };
    let platform = Platform::ALL[usize::from(s) % Platform::ALL.len()];
    let bases: Vec<String> = lock.bases.iter().map(|b| b.name.clone()).collect();
    let base = bases.first().map(String::as_str).unwrap_or("debian");
    let _ = dockerfile::check("components/fuzz/Dockerfile", text, platform, base, &bases, lock);
}

/// The package files the scan reads as text, by the path it finds them at (the first byte picks
/// one); the last is a program's path, whose text is Go build information as the scan keeps it.
pub const PACKAGE_FILES: &[&str] = &[
    "var/lib/dpkg/status",
    "var/lib/dpkg/status.d/base-files",
    "var/lib/dpkg/info/libc6:amd64.list",
    "lib/apk/db/installed",
    "etc/os-release",
    "usr/lib/os-release",
    "app/Cargo.lock",
    "app/node_modules/left-pad/package.json",
    "app/App.deps.json",
    "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
    "usr/lib/python3/dist-packages/six.egg-info/PKG-INFO",
    "usr/lib/python3/dist-packages/six-1.16.0.egg-info",
    "usr/local/bin/program",
];

/// One package file of an image, cataloged as the scan catalogs it (text: the scan reads these
/// files as UTF-8 and refuses others).
pub fn scan_files(data: &[u8]) {
    let (s, rest) = selector(data);
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let path = PACKAGE_FILES[usize::from(s) % PACKAGE_FILES.len()];
    let _ = scan::catalog_file(path, text);
}

/// A layer: the input is its tar archive, gzipped here and scanned as the one layer of an
/// image (whiteouts, links, package files, Java archives, Go and cargo-auditable programs).
pub fn scan_layer(data: &[u8]) {
    let Ok(dir) = tempfile::Builder::new().prefix("fuzz-layer-").tempdir() else { return };
    let Ok(layout) = oci::Layout::create(dir.path()) else { return };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(data).is_err() {
        return;
    }
    let Ok(gz) = gz.finish() else { return };
    let (Ok(layer), Ok(config)) = (layout.put_blob(oci::MEDIA_LAYER_GZIP, &gz), layout.put_blob(oci::MEDIA_CONFIG, b"{}")) else {
        return;
    };
    let manifest = oci::Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
        config,
        layers: vec![layer],
        subject: None,
        annotations: Default::default(),
    };
    let _ = scan::scan(&layout, &manifest);
}

/// Writes `data` to `sink` in chunks of `chunk` bytes (at least 1), as a stream arrives.
fn chunked(sink: &mut impl std::io::Write, data: &[u8], chunk: u8) -> std::io::Result<()> {
    for c in data.chunks(usize::from(chunk).max(1) * 61) {
        sink.write_all(c)?;
    }
    Ok(())
}

/// A file streamed through the Go build-information sniffer (chunk size from the first byte),
/// what it keeps parsed; and the bytes parsed directly as what the sniffer keeps.
pub fn goinfo(data: &[u8]) {
    let (s, rest) = selector(data);
    let mut sniffer = goinfo::Sniffer::default();
    if chunked(&mut sniffer, rest, s).is_ok() {
        if let Some(raw) = sniffer.found() {
            let _ = goinfo::parse(&raw);
        }
    }
    let _ = goinfo::parse(rest);
}

/// A file streamed through the cargo-auditable sniffer (chunk size from the first byte), its
/// `.dep-v0` section located, read from the file and parsed; and the bytes parsed as a section.
pub fn auditable(data: &[u8]) {
    let (s, rest) = selector(data);
    let mut sniffer = auditable::Sniffer::default();
    if chunked(&mut sniffer, rest, s).is_ok() {
        if let Ok(Some((offset, size))) = sniffer.locate() {
            if let Ok(section) = auditable::read_section(rest, offset, size) {
                let _ = auditable::parse(&section);
            }
        }
    }
    let _ = auditable::parse(rest);
}

/// A Java archive (zip), with the archives nested in it.
pub fn java(data: &[u8]) {
    let _ = java::catalog("/opt/app/lib/fuzz-1.0.jar", data);
}

/// A lock file of a component's source (the first byte picks the format).
pub fn lockfiles(data: &[u8]) {
    let (s, rest) = selector(data);
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let name = locks::READ[usize::from(s) % locks::READ.len()];
    let _ = locks::parse(&format!("components/fuzz/{name}"), text);
}

/// The release configuration: the files `schema::config::load` reads, in this order, separated
/// by [`SEPARATOR`], written into a scratch repository and loaded.
pub const CONFIG_FILES: &[&str] = &[
    "release-trains/lts.toml",
    "release-trains/stable.toml",
    "release-trains/edge.toml",
    "release-trains/components.toml",
    "base-images.lock",
];

pub fn config(data: &[u8]) {
    let Ok(dir) = tempfile::Builder::new().prefix("fuzz-config-").tempdir() else { return };
    if std::fs::create_dir_all(dir.path().join("release-trains")).is_err() {
        return;
    }
    for (name, content) in CONFIG_FILES.iter().zip(split(data)) {
        if std::fs::write(dir.path().join(name), content).is_err() {
            return;
        }
    }
    let _ = schema::config::load(dir.path());
}

/// release.yaml as every reader takes it (checksum, then the document); a document that parses
/// is rendered again by the emitter and must read back the same.
pub fn release_yaml(data: &[u8]) {
    let _ = manifest::checksum(data);
    let Ok(mut doc) = manifest::parse(data) else { return };
    let rendered = manifest::render(&mut doc);
    match manifest::parse(&rendered) {
        Ok(back) => assert_eq!(back, doc, "release.yaml does not read back as rendered:\n{}", String::from_utf8_lossy(&rendered)),
        Err(e) => panic!("the emitter wrote a release.yaml its reader refuses: {e}\n{}", String::from_utf8_lossy(&rendered)),
    }
}

/// A channel pointer and a client's state file: the pointer's bytes signed into an envelope by
/// a key of this process and checked as a client checks it (replay, freeze, downgrade,
/// equivocation); the first file also read as an envelope and opened with that key.
pub fn pointer(data: &[u8]) {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    let key = KEY.get_or_init(|| SigningKey::generate(verifier::keys::KeyKind::EcdsaP256));
    let parts = split(data);
    let doc = parts[0];
    if let Ok(p) = serde_json::from_slice::<schema::pointer::Pointer>(doc) {
        let _ = (p.issued_at(), p.expires_at());
    }
    if let Ok(env) = serde_json::from_slice::<sign::Envelope>(doc) {
        let _ = verifier::pointer::open(&env, key.public());
    }
    let mut state: schema::pointer::ClientState = parts.get(1).and_then(|s| serde_json::from_slice(s).ok()).unwrap_or_default();
    let Ok(env) = sign::sign_envelope(key, schema::pointer::PAYLOAD_TYPE, doc) else { return };
    let expect = parts.get(2).and_then(|c| std::str::from_utf8(c).ok()).and_then(|c| c.trim().parse::<Channel>().ok());
    let now = 1_767_225_600; // 2026-01-01T00:00:00Z
    let _ = verifier::pointer::check(&env, key.public(), &mut state, now, expect);
}

/// An image document as stored (OCI or Docker manifest, index or list) and each platform's
/// manifest chosen from an index; the layout's own types read from the same bytes.
pub fn oci_image(data: &[u8]) {
    if let Ok(oci::image::Document::Index(_, index)) = oci::image::parse(data) {
        for p in Platform::ALL {
            let _ = oci::image::select_platform(&index, p);
        }
    }
    let _ = serde_json::from_slice::<oci::Index>(data);
    let _ = serde_json::from_slice::<oci::Manifest>(data);
}

/// What a registry answers (the first byte picks which): a `WWW-Authenticate` challenge, a
/// token service's body, an error body, a referrers index.
pub fn registry(data: &[u8]) {
    let (s, rest) = selector(data);
    match s % 4 {
        0 => {
            let _ = oci::distribution::Challenge::parse(&String::from_utf8_lossy(rest));
        }
        1 => {
            let _ = oci::distribution::token_of(rest);
        }
        2 => {
            let summary = oci::distribution::error_body(rest);
            assert!(summary.chars().count() <= 300, "an error body is quoted whole");
        }
        _ => {
            if let Ok(index) = serde_json::from_slice::<oci::Index>(rest) {
                for d in &index.manifests {
                    let _ = oci::referrers::is_referrer_entry(d);
                }
            }
        }
    }
}

/// The newtypes every document's fields are read into (the first byte picks which).
pub fn model(data: &[u8]) {
    use schema::model::{parse_rfc3339, Calendar, PinnedRef, RegistryTarget, ReleaseVersion, Version};
    let (s, rest) = selector(data);
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match s % 8 {
        0 => drop(text.parse::<Digest>()),
        1 => drop(text.parse::<PinnedRef>()),
        2 => drop(text.parse::<Platform>()),
        3 => drop(text.parse::<Version>()),
        4 => drop(text.parse::<ReleaseVersion>()),
        5 => drop(text.parse::<Calendar>()),
        6 => drop(parse_rfc3339(text)),
        _ => drop(text.parse::<RegistryTarget>()),
    }
}

/// Replays every file under `dir/<target>/` through its target (the replay test uses it):
/// how many inputs ran, or the inputs that panicked, each with its message.
pub fn replay(dir: &Path) -> Result<usize, Vec<String>> {
    let mut n = 0;
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let sub = dir.join(name);
        let Ok(entries) = std::fs::read_dir(&sub) else { continue };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let data = match std::fs::read(&f) {
                Ok(d) => d,
                Err(e) => {
                    failed.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            n += 1;
            if let Err(p) = std::panic::catch_unwind(|| target(&data)) {
                let message = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()));
                failed.push(format!("{}: {}", f.display(), message.unwrap_or_default()));
            }
        }
    }
    if failed.is_empty() {
        Ok(n)
    } else {
        Err(failed)
    }
}
