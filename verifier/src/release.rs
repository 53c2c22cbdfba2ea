//! `cargo xtask verify <release dir> --key <public key>`: what a customer or auditor runs,
//! offline, trusting nothing but the public key they pinned.
//!
//! 1. the key itself (FIPS: ES256 only, when asked);
//! 2. `release.yaml.sig` and the sigstore bundle over `release.yaml`, then its checksum and
//!    shape — nothing else is trusted before this;
//! 3. every image named by release.yaml: present in the layout, every blob hashing to its
//!    digest (streamed), its index and manifests signed (cosign artifacts), its config
//!    carrying the labels of spec §6.2 with this release's channel and calendar;
//! 4. every SBOM (JSON and protobuf) and provenance envelope (DSSE) signed, its subject the
//!    image it describes, its content the file beside it; the drift report's envelope;
//! 5. the digests release.yaml states for every platform (`platforms`: image, SBOM JSON,
//!    SBOM protobuf, provenance envelope), each file hashed, each SBOM also held in `images/`
//!    as the referrer blob that is published; §6.1's `sbom` and `provenance` the first
//!    platform's; chart and compose digests;
//! 6. the transparency log ([`crate::tlog`]): every entry checked offline against the log's
//!    pinned key (`--rekor-key`); a `stable` or `lts` release must have them all.
//!
//! Every check runs; the report lists each as ok or failed, and `ok()` is false if any failed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::keys::{Fips, PublicKey};
use crate::manifest;
use crate::sign::{self, Envelope};
use crate::tlog;
use oci::{Index, Layout, Manifest, MEDIA_INDEX};
use schema::labels::{LABEL_CALENDAR, LABEL_CHANNEL, LABEL_CREATED, LABEL_PROVENANCE, LABEL_REVISION, LABEL_VERSION};
use schema::model::Digest;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    pub what: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub checks: Vec<Check>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
    pub fn pass(&mut self, what: impl Into<String>) {
        self.checks.push(Check { ok: true, what: what.into(), detail: String::new() });
    }
    pub fn fail(&mut self, what: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check { ok: false, what: what.into(), detail: detail.into() });
    }
    fn check(&mut self, what: impl Into<String>, r: Result<(), String>) {
        match r {
            Ok(()) => self.pass(what),
            Err(e) => self.fail(what, e),
        }
    }
    /// The checklist, one line per check (spec §10.2).
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            s += &format!("[{mark}] {}", c.what);
            if !c.detail.is_empty() {
                s += &format!(": {}", c.detail);
            }
            s.push('\n');
        }
        let failed = self.checks.iter().filter(|c| !c.ok).count();
        s += &format!("{} checks, {failed} failed", self.checks.len());
        s
    }
}

fn read_envelope(path: &Path) -> Result<Envelope, String> {
    let bytes = fs::read(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("`{}`: not a DSSE envelope: {e}", path.display()))
}

/// In an unpacked kit every blob was hashed against the signed inventory (whose blob
/// digests are their names) as it was read: present with its size is enough here.
fn check_size(layout: &Layout, digest: &Digest, size: u64) -> Result<(), String> {
    let n = fs::metadata(layout.blob_path(digest)).map_err(|e| format!("blob `{digest}` missing: {e}"))?.len();
    if n == size {
        Ok(())
    } else {
        Err(format!("blob `{digest}` is {n} bytes, its descriptor says {size}"))
    }
}

/// Hashes a blob by streaming it; checks digest and size.
fn check_blob(layout: &Layout, digest: &Digest, size: u64) -> Result<(), String> {
    let (actual, n) =
        oci::layer::hash_file(&layout.blob_path(digest)).map_err(|e| format!("blob `{digest}` missing or unreadable: {e}"))?;
    if &actual != digest {
        return Err(format!("blob `{digest}` hashes to `{actual}`"));
    }
    if n != size {
        return Err(format!("blob `{digest}` is {n} bytes, its descriptor says {size}"));
    }
    Ok(())
}

/// Where the parts of a release are: a release directory, or the unpacked content of an
/// offline kit (release.yaml and its signatures under `manifest/`; provenance and the drift
/// report only as their signed envelopes under `attest/`; possibly a subset of components;
/// blobs already hashed by the import against the signed inventory).
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
    kit: bool,
    /// Only these components (a kit of a channel that ships a subset); `None` for all.
    components: Option<BTreeSet<String>>,
    /// The transparency log's pinned public key (`--rekor-key`), when given.
    log: Option<PublicKey>,
    /// A keyless release: its certificate's validity (unix seconds). Every signature must then
    /// be logged, at a signed time within it.
    certified: Option<(i64, i64)>,
    /// The TUF root the customer pinned (`--root`): `trust/` must verify from it.
    trust_root: Option<PathBuf>,
}

impl Tree {
    pub fn release(dir: &Path) -> Tree {
        Tree { root: dir.to_owned(), kit: false, components: None, log: None, certified: None, trust_root: None }
    }
    pub fn kit(dir: &Path, components: Option<BTreeSet<String>>) -> Tree {
        Tree { root: dir.to_owned(), kit: true, components, log: None, certified: None, trust_root: None }
    }
    /// A keyless release whose certificate is valid from `not_before` to `not_after`.
    pub fn certified(mut self, not_before: i64, not_after: i64) -> Tree {
        self.certified = Some((not_before, not_after));
        self
    }
    /// Checks the transparency-log entries against `log`, the log's pinned public key.
    pub fn with_log(mut self, log: Option<PublicKey>) -> Tree {
        self.log = log;
        self
    }
    /// Checks `trust/` from `root`, a TUF root the customer pinned, rather than from the
    /// release's own first root; without `trust/`, that is a failure.
    pub fn with_trust_root(mut self, root: Option<PathBuf>) -> Tree {
        self.trust_root = root;
        self
    }
    fn manifest(&self, name: &str) -> PathBuf {
        if self.kit {
            self.root.join("manifest").join(name)
        } else {
            self.root.join(name)
        }
    }
    fn join(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// Verifies the release in `dir` with `key`; its transparency-log entries with `log`.
pub fn verify(dir: &Path, key: &PublicKey, log: Option<&PublicKey>, fips: Fips) -> VerifyReport {
    verify_tree(&Tree::release(dir).with_log(log.cloned()), key, fips)
}

/// Verifies a keyless release in `dir` under `policy` (see [`crate::keyless`]): the
/// certificate of `release.yaml.sigstore.json` against `root` and the policy, then everything
/// [`verify_tree`] checks, with the certificate's key, every signature logged at a signed time
/// within its validity, each entry checked with the key of the trusted root's log that holds
/// release.yaml's entry (else its first), or `log`.
pub fn verify_keyless(
    dir: &Path,
    root: &crate::keyless::TrustedRoot,
    policy: &crate::keyless::Policy,
    log: Option<&PublicKey>,
    fips: Fips,
) -> VerifyReport {
    let mut r = VerifyReport::default();
    let path = dir.join("release.yaml.sigstore.json");
    let what = format!("keyless certificate (`{}`)", path.display());
    let leaf =
        match fs::read(&path).map_err(|e| format!("`{}`: {e}", path.display())).and_then(|b| crate::keyless::certified(&b, root, policy)) {
            Ok(l) => l,
            Err(e) => {
                r.fail(what, e);
                return r;
            }
        };
    r.pass(certified_line(&what, &leaf));
    let entry = fs::read(tlog::entry_path(dir, "release.yaml")).ok();
    let log = crate::keyless::log_key(root, entry.as_deref(), log);
    let tree = Tree::release(dir).with_log(log).certified(leaf.not_before, leaf.not_after);
    r.checks.extend(verify_tree(&tree, &leaf.key, fips).checks);
    r
}

/// The manifest of a keyless release, as a channel store keeps it (release.yaml, its signature,
/// its bundle, its log entry `attest/tlog/release.yaml.rekor.json`), under `policy`:
/// 1. the bundle's certificate chains to a CA of `root` and names the identity and issuer;
/// 2. release.yaml's log entry is about release.yaml and its signature, made with the
///    certified key, in a log of `root` (inclusion proof, checkpoint, signed entry time), at a
///    signed time within the certificate's validity.
///
/// The certified key (release.yaml's signature and checksum are then checked with it by
/// [`crate::ops::SignedRelease::open`]), or every reason it is refused.
pub fn keyless_manifest(dir: &Path, root: &crate::keyless::TrustedRoot, policy: &crate::keyless::Policy) -> Result<PublicKey, Vec<String>> {
    use base64::Engine as _;
    let read = |name: &str| fs::read(dir.join(name)).map_err(|e| vec![format!("`{}`: {e}", dir.join(name).display())]);
    // 1.
    let leaf = crate::keyless::certified(&read("release.yaml.sigstore.json")?, root, policy)
        .map_err(|e| vec![format!("`release.yaml.sigstore.json`: the release's certificate is refused: {e}")])?;
    // 2.
    let yaml = read("release.yaml")?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8_lossy(&read("release.yaml.sig")?).trim())
        .map_err(|e| vec![format!("`release.yaml.sig` is not base64: {e}")])?;
    let entry_path = tlog::entry_path(dir, "release.yaml");
    let entry = fs::read(&entry_path).map_err(|e| {
        vec![format!(
            "`{}`: {e}: a keyless signature is good only with its log entry (its signed time within the certificate's validity)",
            entry_path.display()
        )]
    })?;
    let log =
        crate::keyless::log_key(root, Some(&entry), None).ok_or_else(|| vec!["the trusted root lists no transparency log".to_owned()])?;
    let answer: serde_json::Value =
        serde_json::from_slice(&entry).map_err(|e| vec![format!("`{}`: not JSON: {e}", entry_path.display())])?;
    let expected = tlog::Expected::Signature { artifact: Digest::of(&yaml), signature: sig };
    tlog::check_entry(&answer, &expected, &leaf.key, &log, Some((leaf.not_before, leaf.not_after)))
        .map_err(|e| vec![format!("transparency log: `release.yaml` ({}): {e}", entry_path.display())])?;
    Ok(leaf.key)
}

/// The checklist line of a certificate that passed ([`crate::keyless::check_leaf`]).
pub fn certified_line(what: &str, leaf: &crate::keyless::Leaf) -> String {
    format!(
        "{what}: {} from `{}`, issued by a CA of the trusted root, for code signing, valid {} to {}",
        leaf.identities.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "),
        leaf.issuer.as_deref().unwrap_or_default(),
        schema::model::rfc3339(leaf.not_before),
        schema::model::rfc3339(leaf.not_after)
    )
}

/// Verifies a release directory or an unpacked kit with `key`.
pub fn verify_tree(tree: &Tree, key: &PublicKey, fips: Fips) -> VerifyReport {
    let dir = tree.root.as_path();
    let mut r = VerifyReport::default();
    // 1. The key.
    r.check(
        format!("public key {} ({})", &key.key_id()[..16], key.kind.scheme()),
        key.check_fips(fips, "the public key").map_err(|e| e.to_string()),
    );

    // 2. release.yaml, its signature and bundle, its checksum.
    let yaml_path = tree.manifest("release.yaml");
    let Ok(yaml) = fs::read(&yaml_path) else {
        r.fail("release.yaml", format!("`{}` is missing: not a release", yaml_path.display()));
        return r;
    };
    let sig = fs::read_to_string(tree.manifest("release.yaml.sig")).unwrap_or_default();
    r.check(
        "release.yaml signature (release.yaml.sig)",
        if sig.is_empty() {
            Err("release.yaml.sig is missing".into())
        } else if manifest::verify_blob(key, &yaml, &sig) {
            Ok(())
        } else {
            Err("does not verify with the given public key".into())
        },
    );
    r.check(
        "release.yaml sigstore bundle (release.yaml.sigstore.json)",
        check_bundle(&tree.manifest("release.yaml.sigstore.json"), key, &yaml, tree.certified.is_some()),
    );
    r.check(
        "release.yaml checksum",
        manifest::checksum(&yaml).and_then(|(stated, computed)| {
            if stated == computed {
                Ok(())
            } else {
                Err(format!("states `{stated}`, the file hashes to `{computed}`"))
            }
        }),
    );
    let doc = match manifest::parse(&yaml) {
        Ok(d) => {
            r.pass("release.yaml has the shape of spec §6.1");
            d
        }
        Err(e) => {
            r.fail("release.yaml has the shape of spec §6.1", e);
            return r;
        }
    };

    // 3. Images.
    let layout = match Layout::open(&dir.join("images")) {
        Ok(l) => l,
        Err(e) => {
            r.fail("images/ is an OCI layout", e.to_string());
            return r;
        }
    };
    let named = layout.index().map(|i| i.manifests).unwrap_or_default();
    for c in &doc.components {
        if tree.components.as_ref().is_some_and(|only| !only.contains(&c.name)) {
            continue;
        }
        // Pinned by digest since parsing: a tag in release.yaml is refused there.
        let repository = c.image.name();
        let index_digest = c.image.digest.clone();
        let in_layout = named.iter().any(|d| d.digest == index_digest && d.annotations.get(oci::ANNOTATION_REF_NAME) == Some(&c.name));
        r.check(
            format!("{}: index {index_digest} in the layout", c.name),
            if in_layout { Ok(()) } else { Err("not named in images/index.json".into()) },
        );
        let index: Index = match layout.read_json(&index_digest, "an image index") {
            Ok(i) => i,
            Err(e) => {
                r.fail(format!("{}: index readable", c.name), e.to_string());
                continue;
            }
        };
        r.check(format!("{}: index signature", c.name), sign::verify_image(key, &layout, &index_digest));
        // 5. release.yaml's own list of the platforms (not in §6.1; required here).
        if c.platforms.is_empty() {
            r.fail(
                format!("{}: per-platform references in release.yaml", c.name),
                "release.yaml lists no `platforms` for this component, so the SBOMs and provenance of its platforms are not \
                 pinned by the signed manifest (a release.yaml written before they were); hint: cut the release again",
            );
        }
        let mut seen = BTreeSet::new();
        for p in &c.platforms {
            if !seen.insert(p.platform) {
                r.fail(format!("{} {}: listed once in release.yaml", c.name, p.platform), "the platform is listed twice under `platforms`");
            }
            if !index
                .manifests
                .iter()
                .any(|m| m.platform.as_ref().is_some_and(|x| format!("{}/{}", x.os, x.architecture) == p.platform.as_str()))
            {
                r.fail(
                    format!("{} {}: in the index", c.name, p.platform),
                    format!("release.yaml lists `{}` under `platforms`, the index `{index_digest}` holds no such image", p.platform),
                );
            }
        }
        if let Some(first) = c.platforms.first() {
            r.check(
                format!("{}: `sbom` and `provenance` are the {} ones", c.name, first.platform),
                if c.sbom != first.sbom {
                    Err(format!("`sbom` is `{}`, `platforms[0].sbom` is `{}`", c.sbom, first.sbom))
                } else if c.provenance != first.provenance {
                    Err(format!("`provenance` is `{}`, `platforms[0].provenance` is `{}`", c.provenance, first.provenance))
                } else {
                    Ok(())
                },
            );
        }
        for m in index.manifests.iter().filter(|m| m.media_type != MEDIA_INDEX) {
            let platform = m.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)).unwrap_or_default();
            let label = format!("{} {platform}", c.name);
            let manifest: Manifest = match layout.read_json(&m.digest, "an image manifest") {
                Ok(x) => x,
                Err(e) => {
                    r.fail(format!("{label}: manifest"), e.to_string());
                    continue;
                }
            };
            let blobs: Result<(), String> = std::iter::once(&manifest.config)
                .chain(&manifest.layers)
                .map(|d| if tree.kit { check_size(&layout, &d.digest, d.size) } else { check_blob(&layout, &d.digest, d.size) })
                .collect::<Vec<_>>()
                .into_iter()
                .collect();
            r.check(format!("{label}: {} blobs match their digests", manifest.layers.len() + 1), blobs);
            r.check(format!("{label}: image signature"), sign::verify_image(key, &layout, &m.digest));
            r.check(format!("{label}: labels of spec §6.2"), check_labels(&layout, &manifest, &doc));
            // 4. Its SBOM and provenance envelopes.
            let slug = platform.replace('/', "-");
            let subject = format!("{repository}@{}", m.digest);
            let sbom_json = format!("sboms/{}/{slug}.cdx.json", c.name);
            let sbom_pb = format!("sboms/{}/{slug}.cdx.pb", c.name);
            // A kit may leave `sboms/` out (the channel's `[kit] sections`): the SBOMs are then
            // checked in `images/`, as the referrer blobs they also are.
            let file = |rel: &str| Some(tree.join(rel)).filter(|p| !tree.kit || p.exists());
            r.check(
                format!("{label}: SBOM signed and about this image"),
                check_attestation(
                    key,
                    &dir.join(format!("attest/{}/{slug}.sbom.dsse.json", c.name)),
                    &m.digest,
                    file(&sbom_json).as_deref(),
                    true,
                    &subject,
                ),
            );
            let provenance_envelope = format!("attest/{}/{slug}.provenance.dsse.json", c.name);
            r.check(
                format!("{label}: provenance signed and about this image"),
                check_attestation(
                    key,
                    &tree.join(&provenance_envelope),
                    &m.digest,
                    Some(dir.join(format!("provenance/{}/{slug}.intoto.json", c.name))).filter(|_| !tree.kit).as_deref(),
                    false,
                    &subject,
                ),
            );
            // 5. What release.yaml states for this platform.
            let Some(entry) = c.platforms.iter().find(|p| p.platform.as_str() == platform) else {
                if !c.platforms.is_empty() {
                    r.fail(format!("{label}: listed in release.yaml"), format!("`platforms` has no `{platform}` entry"));
                }
                continue;
            };
            r.check(
                format!("{label}: image digest in release.yaml"),
                if entry.image.digest != m.digest || entry.image.name() != repository {
                    Err(format!("release.yaml states `{}`, the index holds `{repository}@{}`", entry.image, m.digest))
                } else {
                    Ok(())
                },
            );
            r.check(
                format!("{label}: SBOM JSON `{sbom_json}` is the one release.yaml states"),
                stated_digest(&entry.sbom).and_then(|d| {
                    if let Some(f) = file(&sbom_json) {
                        file_digest(&f, &d)?;
                    }
                    referrer_blob(&layout, &d)
                }),
            );
            let pb_envelope = format!("attest/{}/{slug}.sbom-protobuf.dsse.json", c.name);
            r.check(
                format!("{label}: SBOM protobuf `{sbom_pb}` signed ({pb_envelope}), about this image, the one release.yaml states"),
                stated_digest(&entry.sbom_protobuf).and_then(|d| {
                    check_protobuf_attestation(key, &tree.join(&pb_envelope), &m.digest, &d)?;
                    if let Some(f) = file(&sbom_pb) {
                        file_digest(&f, &d)?;
                    }
                    referrer_blob(&layout, &d)
                }),
            );
            r.check(
                format!("{label}: provenance envelope `{provenance_envelope}` is the one release.yaml states"),
                stated_digest(&entry.provenance).and_then(|d| file_digest(&tree.join(&provenance_envelope), &d)),
            );
        }
    }
    r.check("drift report signed", {
        read_envelope(&dir.join("attest/drift.dsse.json")).and_then(|env| sign::verify_envelope(key, &env)).and_then(|body| {
            let st: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            if tree.kit {
                // A kit carries the report as its signed envelope only.
                return if st["predicateType"] == sign::DRIFT_PREDICATE { Ok(()) } else { Err("not a drift report".into()) };
            }
            let file: serde_json::Value =
                serde_json::from_slice(&fs::read(dir.join("drift.json")).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            if st["predicate"] == file {
                Ok(())
            } else {
                Err("drift.json is not the signed report".into())
            }
        })
    });
    let charts = !tree.kit || tree.join("charts").exists();
    for ch in doc.charts.iter().filter(|_| charts) {
        let path = dir.join(format!("charts/{}-{}.tgz", ch.name, ch.version));
        r.check(format!("chart {} {}", ch.name, ch.version), file_digest(&path, &ch.digest));
    }
    if !doc.compose.file.is_empty() && (!tree.kit || tree.join("compose").exists()) {
        r.check(
            format!("compose file {}", doc.compose.file),
            match &doc.compose.digest {
                Some(d) => file_digest(&dir.join("compose").join(&doc.compose.file), d),
                None => Err("release.yaml names the file but states no digest".into()),
            },
        );
    }
    // 6. The transparency log.
    check_tlog(tree, &doc, &yaml, key, &layout, &mut r);
    // 7. The customer tool and 8. the trust repository.
    check_tools(tree, &doc, key, &mut r);
    check_trust(tree, &mut r);
    r
}

/// Step 7: the customer tool release.yaml lists (`tools`, see [`schema::release::ToolEntry`]):
/// the program hashes to the stated digest, its raw signature verifies with the release key
/// (as `openssl` checks it), its SBOM is the stated file, its provenance envelope is the stated
/// one, signed, about this program.
fn check_tools(tree: &Tree, doc: &manifest::ReleaseYaml, key: &PublicKey, r: &mut VerifyReport) {
    if doc.tools.is_empty() {
        r.fail(
            "customer tool listed in release.yaml",
            "release.yaml lists no `tools`, so the customer tool is not pinned by the signed manifest (a release.yaml \
             written before it was); hint: cut the release again",
        );
        return;
    }
    let inside = |rel: &str| -> Result<PathBuf, String> {
        let plain = rel.starts_with("tools/") && Path::new(rel).components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if plain {
            Ok(tree.join(rel))
        } else {
            Err(format!("release.yaml names `{rel}`, which is not a file under `tools/`"))
        }
    };
    for t in &doc.tools {
        let label = format!("customer tool `{}` ({})", t.file, t.platform);
        let program = inside(&t.file).and_then(|p| fs::read(&p).map_err(|e| format!("`{}`: {e}", t.file)));
        r.check(
            format!("{label}: the sha256 release.yaml states"),
            program.as_ref().map_err(Clone::clone).and_then(|b| {
                let d = Digest::of(b);
                if d == t.digest {
                    Ok(())
                } else {
                    Err(format!("`{}` hashes to `{d}`; release.yaml states `{}`", t.file, t.digest))
                }
            }),
        );
        r.check(
            format!("{label}: signature `{}` with the release key", t.signature),
            program.as_ref().map_err(Clone::clone).and_then(|b| {
                let sig = inside(&t.signature).and_then(|p| fs::read(&p).map_err(|e| format!("`{}`: {e}", t.signature)))?;
                if key.verify(b, &sig) {
                    Ok(())
                } else {
                    Err(format!("`{}` does not verify `{}` with the given public key", t.signature, t.file))
                }
            }),
        );
        r.check(
            format!("{label}: SBOM `{}`", t.sbom),
            stated_digest(&t.sbom).and_then(|d| {
                let rel = t.sbom.rsplit_once('@').map_or(t.sbom.as_str(), |(p, _)| p);
                file_digest(&inside(rel)?, &d)
            }),
        );
        r.check(
            format!("{label}: provenance `{}` signed and about this program", t.provenance),
            stated_digest(&t.provenance).and_then(|d| {
                let rel = t.provenance.rsplit_once('@').map_or(t.provenance.as_str(), |(p, _)| p);
                let path = inside(rel)?;
                file_digest(&path, &d)?;
                let body = read_envelope(&path).and_then(|env| sign::verify_envelope(key, &env))?;
                let st: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                if st["subject"][0]["digest"]["sha256"].as_str() == Some(t.digest.hex()) {
                    Ok(())
                } else {
                    Err(format!("the provenance is about `{}`, not `{}`", st["subject"][0]["digest"]["sha256"], t.digest))
                }
            }),
        );
    }
}

/// Step 8: the channels' trust repository the release carries (`trust/metadata`,
/// `trust/targets`), loaded as a TUF client loads it ([`crate::tuf_client`]): from the root the
/// customer pinned, else from the repository's own `1.root.json` (which proves the chain of
/// roots and every signature and threshold, but not whose the first root is). Expiry is not
/// checked: `trust/` is the metadata as it was when the release was cut, read later offline
/// ([`crate::tuf_client::check_archived`]).
fn check_trust(tree: &Tree, r: &mut VerifyReport) {
    let metadata = tree.join("trust/metadata");
    let first = metadata.join("1.root.json");
    if !first.is_file() {
        if let Some(root) = &tree.trust_root {
            r.fail(
                format!("trust repository `trust/` from the pinned root `{}`", root.display()),
                "the release carries no trust repository (`trust/metadata/1.root.json`); hint: cut it with `--channels` naming the channel store",
            );
        }
        return;
    }
    let (root, whose) = match &tree.trust_root {
        Some(p) => (p.clone(), format!("the pinned root `{}`", p.display())),
        None => (first.clone(), "its own `1.root.json`".to_owned()),
    };
    r.check(
        format!("trust repository `trust/` (TUF) from {whose}"),
        crate::tuf_client::check_archived(&metadata, &tree.join("trust/targets"), &root).map(|_| ()).map_err(|e| e.to_string()),
    );
}

/// Step 6: every entry the release sent to the log, checked offline ([`crate::tlog`]), or its
/// absence judged by the channel: `stable` and `lts` need every entry logged (spec §2.3).
fn check_tlog(tree: &Tree, doc: &manifest::ReleaseYaml, yaml: &[u8], key: &PublicKey, layout: &Layout, r: &mut VerifyReport) {
    let channel = doc.release.channel;
    // A keyless signature is only good with its log entry (its signed time, within the
    // certificate's validity).
    let required = tlog::required_for(channel) || tree.certified.is_some();
    let components: Vec<&manifest::ComponentEntry> =
        doc.components.iter().filter(|c| tree.components.as_ref().is_none_or(|only| only.contains(&c.name))).collect();
    // Entries the log answered (`.rekor.json`); queued ones are under `pending/`.
    let logged = fs::read_dir(tree.join("attest/tlog"))
        .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".rekor.json")).count())
        .unwrap_or(0);
    if logged == 0 {
        let queued = tlog::queued(&tree.root).map(|q| q.len()).unwrap_or(0);
        if required {
            r.fail(
                "transparency log",
                format!(
                    "a `{channel}` release must have every signature in a transparency log (spec §2.3), and `attest/tlog/` holds no log entry ({queued} queued; release.yaml states `rekorUUID: \"{}\"`); hint: cut it with the channel's log (`[transparency-log]` in `release-trains/{channel}.toml`, or `--rekor-url`), or send a queue with `cargo xtask attest resubmit`",
                    components.first().map(|c| c.signature.rekor_uuid.as_str()).unwrap_or(tlog::NONE)
                ),
            );
        } else if queued > 0 {
            r.pass(format!("transparency log: nothing logged, {queued} entries pending (not required for `{channel}`)"));
        } else {
            r.pass(format!("transparency log: none (not required for `{channel}`)"));
        }
        return;
    }
    let Some(log) = &tree.log else {
        r.fail(
            "transparency log",
            "the release has transparency-log entries and no log key was given to check them; hint: pass the log's public key with `--rekor-key FILE`",
        );
        return;
    };
    r.pass(format!("transparency log key {} ({})", &log.key_id()[..16], log.kind.scheme()));
    let resubmitted = match tlog::open_resubmission(&tree.root, key, &Digest::of(yaml)) {
        Ok(x) => x,
        Err(e) => {
            r.fail("transparency log: resubmission record", e);
            None
        }
    };
    let stated: Vec<(String, &str)> =
        components.iter().map(|c| (format!("images/{}", sign::signature_tag(&c.image.digest)), c.signature.rekor_uuid.as_str())).collect();
    let list: Vec<(String, Digest)> = components.iter().map(|c| (c.name.clone(), c.image.digest.clone())).collect();
    let expected = match tlog::expected_entries(&tree.root, &tree.manifest(""), layout, &list) {
        Ok(e) => e,
        Err(e) => {
            r.fail("transparency log: the entries of the release", e);
            return;
        }
    };
    let mut pending = 0;
    for (id, exp) in &expected {
        let what = format!("transparency log: `{id}`");
        let path = tlog::entry_path(&tree.root, id);
        let in_yaml = stated.iter().find(|(i, _)| i == id).map(|(_, u)| *u);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(_) if tlog::pending_path(&tree.root, id).exists() || in_yaml == Some(tlog::PENDING) => {
                if required {
                    r.fail(
                        what,
                        format!(
                            "pending: never logged (the log was down); hint: `cargo xtask attest resubmit {} --rekor-url URL --key KEY`",
                            tree.root.display()
                        ),
                    );
                } else {
                    pending += 1;
                }
                continue;
            }
            Err(e) => {
                r.fail(what, format!("no log entry: `{}`: {e}", path.display()));
                continue;
            }
        };
        let checked = serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| format!("`{}`: {e}", path.display()))
            .and_then(|answer| tlog::check_entry(&answer, exp, key, log, tree.certified).map_err(|e| format!("`{}`: {e}", path.display())))
            .and_then(|entry| match (tree.certified, entry.integrated_time) {
                (Some(_), None) => Err(format!(
                    "`{}`: the entry has no signed time (a Rekor v2 entry), so nothing shows the keyless signature was made while its certificate was valid",
                    path.display()
                )),
                _ => Ok(entry),
            })
            .and_then(|entry| match in_yaml {
                None => Ok(entry),
                Some(tlog::PENDING) => match resubmitted.as_ref().and_then(|m| m.get(id)) {
                    Some(u) if *u == entry.uuid => Ok(entry),
                    Some(u) => Err(format!("`{}` records `{u}`, the entry is `{}`", tlog::RESUBMITTED, entry.uuid)),
                    None => Err(format!(
                        "release.yaml states `pending` and no signed resubmission record (`{}`) names the entry `{}`",
                        tlog::RESUBMITTED,
                        entry.uuid
                    )),
                },
                Some(u) if u == entry.uuid => Ok(entry),
                Some(u) => Err(format!("release.yaml states `rekorUUID: {u}`, the log's entry is `{}`", entry.uuid)),
            });
        match checked {
            Ok(e) => r.pass(match e.integrated_time {
                Some(t) => format!(
                    "{what}: logged at index {} ({}), body, inclusion proof, checkpoint and signed entry timestamp verified",
                    e.log_index,
                    schema::model::rfc3339(t)
                ),
                None => format!("{what}: logged at index {} (Rekor v2), body, inclusion proof and checkpoint verified", e.log_index),
            }),
            Err(e) => r.fail(what, e),
        }
    }
    if pending > 0 {
        r.pass(format!("transparency log: {pending} entries pending, never logged (not required for `{channel}`)"));
    }
}

fn file_digest(path: &Path, stated: &Digest) -> Result<(), String> {
    let (d, _) = oci::layer::hash_file(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    if &d == stated {
        Ok(())
    } else {
        Err(format!("`{}` hashes to `{d}`, release.yaml states `{stated}`", path.display()))
    }
}

/// The digest an `oci://...@sha256:...` reference of release.yaml names.
fn stated_digest(reference: &str) -> Result<Digest, String> {
    schema::release::stated_digest(reference).map_err(|e| format!("release.yaml: {e}"))
}

/// `images/` holds the blob `digest` (an SBOM, published as a referrer's layer), hashed.
fn referrer_blob(layout: &Layout, digest: &Digest) -> Result<(), String> {
    let (actual, _) = oci::layer::hash_file(&layout.blob_path(digest))
        .map_err(|e| format!("`images/` does not hold it as a referrer blob (`{digest}`): {e}"))?;
    if &actual == digest {
        Ok(())
    } else {
        Err(format!("the referrer blob `{digest}` in `images/` hashes to `{actual}`"))
    }
}

/// The protobuf SBOM's envelope: signed by `key`, its statement about the image `digest`, and
/// naming by sha256 the SBOM release.yaml states (`stated`).
fn check_protobuf_attestation(key: &PublicKey, envelope: &Path, digest: &Digest, stated: &Digest) -> Result<(), String> {
    let env = read_envelope(envelope)?;
    let body = sign::verify_envelope(key, &env).map_err(|e| format!("`{}`: {e}", envelope.display()))?;
    let st: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("`{}`: payload is not a statement: {e}", envelope.display()))?;
    let first = st["subject"][0]["digest"]["sha256"].as_str().unwrap_or_default();
    if first != digest.hex() {
        return Err(format!("`{}`: its subject is `sha256:{first}`, not this image", envelope.display()));
    }
    let signed = sign::protobuf_sbom_digest(&st).map_err(|e| format!("`{}`: {e}", envelope.display()))?;
    if &signed != stated {
        return Err(format!("`{}` signs `{signed}`, release.yaml states `{stated}`", envelope.display()));
    }
    Ok(())
}

fn check_bundle(path: &Path, key: &PublicKey, yaml: &[u8], keyless: bool) -> Result<(), String> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_slice(&fs::read(path).map_err(|e| format!("missing: {e}"))?).map_err(|e| e.to_string())?;
    if v["mediaType"] != "application/vnd.dev.sigstore.bundle.v0.3+json" {
        return Err(format!("media type `{}`", v["mediaType"]));
    }
    if keyless {
        // The certificate the key was taken from (`verify_keyless`): it certifies this key.
        let der = crate::keyless::bundle_certificate(&v).ok_or("it carries no certificate")??;
        if crate::keyless::Leaf::parse(&der)?.key.der() != key.der() {
            return Err("its certificate certifies another key".into());
        }
    } else if crate::keyless::bundle_certificate(&v).is_some() {
        return Err("it carries a certificate, not a key hint: a keyless release; verify it with `--trusted-root FILE` and an identity policy (`--certificate-identity`, `--certificate-oidc-issuer`)".into());
    } else if v["verificationMaterial"]["publicKey"]["hint"] != key.key_id() {
        return Err("its public-key hint names another key".into());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let digest = b64.decode(v["messageSignature"]["messageDigest"]["digest"].as_str().unwrap_or_default()).unwrap_or_default();
    use sha2::Digest as _;
    if digest.as_slice() != sha2::Sha256::digest(yaml).as_slice() {
        return Err("its message digest is not release.yaml's".into());
    }
    let sig = b64.decode(v["messageSignature"]["signature"].as_str().unwrap_or_default()).unwrap_or_default();
    if key.verify(yaml, &sig) {
        Ok(())
    } else {
        Err("its signature does not verify".into())
    }
}

fn check_labels(layout: &Layout, m: &Manifest, doc: &manifest::ReleaseYaml) -> Result<(), String> {
    let config: oci::ImageConfig = layout.read_json(&m.config.digest, "an image config").map_err(|e| e.to_string())?;
    let labels = &config.config.labels;
    let mut missing: Vec<&str> = [LABEL_VERSION, LABEL_REVISION, LABEL_CREATED, LABEL_CALENDAR, LABEL_CHANNEL, LABEL_PROVENANCE]
        .into_iter()
        .filter(|l| !labels.contains_key(*l))
        .collect();
    if labels.get(LABEL_CHANNEL).map(String::as_str) != Some(doc.release.channel.as_str()) {
        missing.push("channel matching release.yaml");
    }
    if labels.get(LABEL_CALENDAR) != Some(&doc.release.calendar) {
        missing.push("calendar matching release.yaml");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing or wrong: {}", missing.join(", ")))
    }
}

/// An envelope signed by `key`, whose statement's first subject is `digest`, and whose
/// content is the file at `content` (the SBOM as the predicate, or the provenance whole) when
/// there is one.
fn check_attestation(
    key: &PublicKey,
    envelope: &Path,
    digest: &Digest,
    content: Option<&Path>,
    predicate: bool,
    _subject: &str,
) -> Result<(), String> {
    let env = read_envelope(envelope)?;
    let body = sign::verify_envelope(key, &env)?;
    let st: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("payload is not a statement: {e}"))?;
    let first = st["subject"][0]["digest"]["sha256"].as_str().unwrap_or_default();
    if first != digest.hex() {
        return Err(format!("its subject is `sha256:{first}`, not this image"));
    }
    let Some(content) = content else { return Ok(()) };
    let file = fs::read(content).map_err(|e| format!("`{}`: {e}", content.display()))?;
    let same = if predicate {
        serde_json::from_slice::<serde_json::Value>(&file).map(|f| f == st["predicate"]).unwrap_or(false)
    } else {
        file == body
    };
    if same {
        Ok(())
    } else {
        Err(format!("`{}` is not the signed document", content.display()))
    }
}
