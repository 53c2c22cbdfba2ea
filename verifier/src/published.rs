//! `cargo xtask verify <dir> --key <pub> --registry <host/namespace>`: checks a published
//! release against its `release.yaml`, reading everything back from the registry and trusting
//! only the public key.
//!
//! 1. `release.yaml.sig` over `release.yaml` with the key (nothing else is trusted before);
//! 2. each component: its index resolves by digest in `<namespace>/<component>` (the client
//!    refuses bytes of another digest), and its version and channel tags point at it (the
//!    channel tag only without a trust repository on the registry: with one, channel tags
//!    follow the signed pointers, which `trust check --registry` verifies);
//! 3. each index and platform manifest: its cosign `sha256-<hex>.sig` signature verifies, every
//!    blob of every manifest is there;
//! 4. its referrers (referrers API, else the `sha256-<hex>` fallback index): every kind of
//!    [`oci::referrers`] listed with its `artifactType`; signatures and DSSE envelopes pulled
//!    and verified with the key, each about this manifest; the SBOM that release.yaml names is
//!    among them;
//! 5. each platform release.yaml lists under `platforms`: its manifest in the index, its SBOM
//!    JSON, SBOM protobuf and provenance envelope referrers holding exactly the digests stated,
//!    the protobuf SBOM's signed statement naming that digest.
//!
//! Every check runs and is reported; `ok()` is false if any failed.

use std::path::Path;

use base64::Engine as _;

use crate::keys::PublicKey;
use crate::release::{Check, VerifyReport};
use crate::sign;
use oci::distribution::{Client, RegistryTarget};
use oci::push::{list_referrers, probe_referrers, PushOptions, ReferrersMode};
use oci::referrers::{self, ANNOTATION_KIND};
use oci::{Descriptor, Index, Manifest, MEDIA_INDEX};
use schema::model::Digest;

const SMALL: u64 = 64 << 20;

fn push(r: &mut VerifyReport, what: impl Into<String>, result: Result<(), String>) {
    let (ok, detail) = match result {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e),
    };
    r.checks.push(Check { ok, what: what.into(), detail });
}

/// A keyless release in `dir` as published on `target`: the release's certificate under
/// `policy` and release.yaml's log entry in a log of `root` give the key that signed everything
/// (one-time, certified: [`crate::release::keyless_manifest`]); the registry is then checked
/// with it as [`verify`] does.
pub fn verify_keyless(
    dir: &Path,
    root: &crate::keyless::TrustedRoot,
    policy: &crate::keyless::Policy,
    target: &RegistryTarget,
    opts: &PushOptions,
) -> VerifyReport {
    let mut r = VerifyReport::default();
    match crate::release::keyless_manifest(dir, root, policy) {
        Ok(key) => {
            r.pass(format!(
                "keyless: the certificate of `release.yaml.sigstore.json` is under the identity policy and release.yaml's log entry checks (key `{}`)",
                key.key_id()
            ));
            r.checks.extend(verify(dir, &key, target, opts).checks);
        }
        Err(reasons) => {
            for why in reasons {
                r.fail("keyless: the release's certificate and log entry", why);
            }
        }
    }
    r
}

/// Verifies the release in `dir` as published on `target`.
pub fn verify(dir: &Path, key: &PublicKey, target: &RegistryTarget, opts: &PushOptions) -> VerifyReport {
    let mut r = VerifyReport::default();
    // 1. release.yaml, signed.
    let yaml = match std::fs::read(dir.join("release.yaml")) {
        Ok(y) => y,
        Err(e) => {
            push(&mut r, "release.yaml", Err(format!("`{}`: {e}", dir.join("release.yaml").display())));
            return r;
        }
    };
    let sig = std::fs::read_to_string(dir.join("release.yaml.sig")).unwrap_or_default();
    let signed = crate::manifest::verify_blob(key, &yaml, &sig);
    push(
        &mut r,
        "release.yaml signature (release.yaml.sig)",
        if signed { Ok(()) } else { Err("missing or does not verify with the given public key".into()) },
    );
    if !signed {
        return r;
    }
    let doc = match crate::manifest::parse(&yaml) {
        Ok(d) => d,
        Err(e) => {
            push(&mut r, "release.yaml has the shape of spec §6.1", Err(e));
            return r;
        }
    };
    let client = match oci::push::client_for(target, opts) {
        Ok(c) => c,
        Err(e) => {
            push(&mut r, format!("credentials for `{}`", target.host), Err(e.to_string()));
            return r;
        }
    };
    let mut mode: Option<ReferrersMode> = None;
    for c in &doc.components {
        let repo = target.repository(&c.name);
        // Pinned by digest since parsing: a tag in release.yaml is refused there.
        let index_digest = c.image.digest.clone();
        // 2. The index by digest, and the tags.
        let index: Index = match client.get_manifest(&repo, index_digest.as_str()) {
            Ok(Some(f)) => match serde_json::from_slice(&f.bytes) {
                Ok(i) => {
                    push(&mut r, format!("{}: `{repo}@{index_digest}` resolves", c.name), Ok(()));
                    i
                }
                Err(e) => {
                    push(&mut r, format!("{}: `{repo}@{index_digest}` resolves", c.name), Err(format!("not an image index: {e}")));
                    continue;
                }
            },
            Ok(None) => {
                push(&mut r, format!("{}: `{repo}@{index_digest}` resolves", c.name), Err("not in the registry".into()));
                continue;
            }
            Err(e) => {
                push(&mut r, format!("{}: `{repo}@{index_digest}` resolves", c.name), Err(e.to_string()));
                continue;
            }
        };
        // With a trust repository on the registry, channel tags follow the signed pointers
        // (`trust check --registry` checks those), not the channel a release was cut for.
        let trust = target.repository(crate::tuf_client::TRUST_REPOSITORY);
        let pointers = matches!(client.head_manifest(&trust, "timestamp"), Ok(Some(_)));
        let mut tags = vec![doc.release.version.to_string()];
        if !pointers {
            tags.push(doc.release.channel.to_string());
        }
        for tag in tags {
            let got = client.head_manifest(&repo, &tag);
            push(
                &mut r,
                format!("{}: tag `{tag}` points at the release", c.name),
                match got {
                    Ok(Some(d)) if d == index_digest.as_str() => Ok(()),
                    Ok(Some(d)) => Err(format!("it points at `{d}`")),
                    Ok(None) => Err("no such tag".into()),
                    Err(e) => Err(e.to_string()),
                },
            );
        }
        let mode = match mode {
            Some(m) => m,
            None => match probe_referrers(&client, &repo) {
                Ok(m) => *mode.insert(m),
                Err(e) => {
                    push(&mut r, "referrers API probe", Err(e.to_string()));
                    return r;
                }
            },
        };
        // 3 and 4 for the index, then each platform manifest.
        let index_desc = Descriptor::new(MEDIA_INDEX, index_digest.clone(), 0);
        let none = Expect::default();
        check_subject(&mut r, &client, key, &repo, &format!("{} index", c.name), &index_desc, &referrers::INDEX_KINDS, mode, &none);
        let sbom_digest = c.sbom.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default();
        let mut sbom_found = false;
        if c.platforms.is_empty() {
            push(
                &mut r,
                format!("{}: per-platform references in release.yaml", c.name),
                Err("release.yaml lists no `platforms` for this component (written before they were); hint: cut the release again".into()),
            );
        }
        for p in &c.platforms {
            let held = index.manifests.iter().find(|m| m.digest == p.image.digest);
            let platform = held.and_then(|m| m.platform.as_ref()).map(|x| format!("{}/{}", x.os, x.architecture));
            push(
                &mut r,
                format!("{} {}: the image release.yaml lists is in the index", c.name, p.platform),
                match (held, platform) {
                    (None, _) => Err(format!("the index `{index_digest}` does not hold `{}`", p.image)),
                    (Some(_), Some(x)) if x == p.platform.as_str() => Ok(()),
                    (Some(_), x) => Err(format!("the index lists `{}` for platform `{}`", p.image.digest, x.unwrap_or_default())),
                },
            );
        }
        for m in index.manifests.iter().filter(|m| m.media_type != MEDIA_INDEX) {
            let platform = m.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)).unwrap_or_default();
            let label = format!("{} {platform}", c.name);
            let expect = match c.platforms.iter().find(|p| p.platform.as_str() == platform) {
                Some(p) => match Expect::of(p) {
                    Ok(e) => e,
                    Err(e) => {
                        push(&mut r, format!("{label}: references in release.yaml"), Err(e));
                        Expect::default()
                    }
                },
                None => {
                    if !c.platforms.is_empty() {
                        push(&mut r, format!("{label}: listed in release.yaml"), Err(format!("`platforms` has no `{platform}` entry")));
                    }
                    Expect::default()
                }
            };
            let blobs = match client.get_manifest(&repo, m.digest.as_str()) {
                Ok(Some(f)) => match serde_json::from_slice::<Manifest>(&f.bytes) {
                    Ok(man) => {
                        std::iter::once(&man.config).chain(&man.layers).try_for_each(|b| match client.blob_exists(&repo, &b.digest) {
                            Ok(Some(_)) => Ok(()),
                            Ok(None) => Err(format!("blob `{}` missing", b.digest)),
                            Err(e) => Err(e.to_string()),
                        })
                    }
                    Err(e) => Err(format!("not an image manifest: {e}")),
                },
                Ok(None) => Err(format!("`{repo}@{}` is not in the registry", m.digest)),
                Err(e) => Err(e.to_string()),
            };
            push(&mut r, format!("{label}: manifest and every blob resolve by digest"), blobs);
            let expect = Expect { sbom: Some(sbom_digest.clone()), ..expect };
            sbom_found |= check_subject(&mut r, &client, key, &repo, &label, m, &referrers::IMAGE_KINDS, mode, &expect);
        }
        push(
            &mut r,
            format!("{}: the SBOM release.yaml names is a referrer", c.name),
            if sbom_found { Ok(()) } else { Err(format!("no SBOM referrer holds `{sbom_digest}`")) },
        );
    }
    r
}

/// What release.yaml states about one platform image's referrers.
#[derive(Debug, Default)]
struct Expect {
    /// The layer digest each kind's referrer must hold (SBOM JSON, SBOM protobuf, provenance envelope).
    layers: std::collections::BTreeMap<&'static str, Digest>,
    /// The protobuf SBOM digest its signed statement must name.
    protobuf: Option<Digest>,
    /// §6.1's `sbom` of the component (a `sha256:` digest of the CycloneDX JSON).
    sbom: Option<String>,
}

impl Expect {
    fn of(p: &crate::manifest::PlatformEntry) -> Result<Expect, String> {
        let d = |r: &str| schema::release::stated_digest(r).map_err(|e| format!("release.yaml: {e}"));
        let (json, pb, provenance) = (d(&p.sbom)?, d(&p.sbom_protobuf)?, d(&p.provenance)?);
        Ok(Expect {
            layers: [(referrers::IMAGE_KINDS[0], json), (referrers::IMAGE_KINDS[1], pb.clone()), (referrers::IMAGE_KINDS[4], provenance)]
                .into_iter()
                .collect(),
            protobuf: Some(pb),
            sbom: None,
        })
    }
}

/// Checks the signature and referrers of `subject`; returns whether an SBOM referrer holds
/// `expect.sbom`.
#[allow(clippy::too_many_arguments)]
fn check_subject(
    r: &mut VerifyReport,
    client: &Client,
    key: &PublicKey,
    repo: &str,
    label: &str,
    subject: &Descriptor,
    kinds: &[&str],
    mode: ReferrersMode,
    expect: &Expect,
) -> bool {
    let d = &subject.digest;
    // The legacy cosign tag.
    let legacy = client
        .get_manifest(repo, &sign::signature_tag(d))
        .map_err(|e| e.to_string())
        .and_then(|f| f.ok_or_else(|| format!("no `{}` tag", sign::signature_tag(d))))
        .and_then(|f| serde_json::from_slice::<Manifest>(&f.bytes).map_err(|e| e.to_string()))
        .and_then(|m| verify_simple_signing(client, key, repo, d, &m.layers));
    push(r, format!("{label}: cosign signature `{}` verifies", sign::signature_tag(d)), legacy);
    let listed = match list_referrers(client, repo, d, mode) {
        Ok(l) => l,
        Err(e) => {
            push(r, format!("{label}: referrers listed ({mode:?})"), Err(e.to_string()));
            return false;
        }
    };
    let mut sbom_found = false;
    for kind in kinds {
        let found: Vec<&Descriptor> =
            listed.iter().filter(|x| x.annotations.get(ANNOTATION_KIND).map(String::as_str) == Some(kind)).collect();
        let result = match found.first() {
            None => Err(format!("not listed (referrers {})", if mode == ReferrersMode::Api { "API" } else { "fallback index" })),
            Some(x) if x.artifact_type.is_none() => Err("listed without an artifactType".into()),
            Some(x) => check_referrer(client, key, repo, d, x, expect, &mut sbom_found).and_then(|layer| match expect.layers.get(kind) {
                Some(want) if want != &layer => Err(format!("it holds `{layer}`, release.yaml states `{want}`")),
                _ => Ok(()),
            }),
        };
        push(r, format!("{label}: referrer {kind}"), result);
    }
    sbom_found
}

fn check_referrer(
    client: &Client,
    key: &PublicKey,
    repo: &str,
    subject: &Digest,
    x: &Descriptor,
    expect: &Expect,
    sbom_found: &mut bool,
) -> Result<Digest, String> {
    let f = client.get_manifest(repo, x.digest.as_str()).map_err(|e| e.to_string())?.ok_or("its manifest is not in the registry")?;
    let m: referrers::ArtifactManifest = serde_json::from_slice(&f.bytes).map_err(|e| format!("not an artifact manifest: {e}"))?;
    if &m.subject.digest != subject {
        return Err(format!("its subject is `{}`", m.subject.digest));
    }
    if Some(&m.artifact_type) != x.artifact_type.as_ref() {
        return Err(format!("listed as `{}`, its manifest says `{}`", x.artifact_type.as_deref().unwrap_or_default(), m.artifact_type));
    }
    let layer = m.layers.first().ok_or("it has no layer")?;
    let held = layer.digest.clone();
    match m.artifact_type.as_str() {
        referrers::ARTIFACT_COSIGN_SIGNATURE => verify_simple_signing(client, key, repo, subject, &m.layers).map(|()| held),
        referrers::ARTIFACT_DSSE => {
            let bytes = client.get_blob(repo, &layer.digest, SMALL).map_err(|e| e.to_string())?;
            let env: sign::Envelope = serde_json::from_slice(&bytes).map_err(|e| format!("not a DSSE envelope: {e}"))?;
            let body = sign::verify_envelope(key, &env)?;
            let st: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("payload is not a statement: {e}"))?;
            let about = st["subject"].as_array().into_iter().flatten().any(|s| s["digest"]["sha256"].as_str() == Some(subject.hex()));
            // The drift report is about every platform image, its referrer hangs on the index.
            if !about && st["predicateType"] != sign::DRIFT_PREDICATE {
                return Err("its statement is not about this image".into());
            }
            if st["predicateType"] == sign::SBOM_PROTOBUF_PREDICATE {
                let signed = sign::protobuf_sbom_digest(&st)?;
                if let Some(want) = expect.protobuf.as_ref().filter(|w| **w != signed) {
                    return Err(format!("it signs the protobuf SBOM `{signed}`, release.yaml states `{want}`"));
                }
            }
            Ok(held)
        }
        _ => {
            if client.blob_exists(repo, &layer.digest).map_err(|e| e.to_string())?.is_none() {
                return Err(format!("blob `{}` missing", layer.digest));
            }
            if expect.sbom.as_deref() == Some(layer.digest.as_str()) {
                *sbom_found = true;
            }
            Ok(held)
        }
    }
}

/// One of `layers` is a simple-signing payload naming `digest`, signed by `key`.
fn verify_simple_signing(client: &Client, key: &PublicKey, repo: &str, digest: &Digest, layers: &[Descriptor]) -> Result<(), String> {
    let mut problems = Vec::new();
    for l in layers.iter().filter(|l| l.media_type == sign::SIMPLESIGNING) {
        let payload = match client.get_blob(repo, &l.digest, SMALL) {
            Ok(p) => p,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let sig = l
            .annotations
            .get(sign::COSIGN_SIGNATURE)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default();
        if !key.verify(&payload, &sig) {
            problems.push("a signature does not verify with the given public key".into());
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
        if v["critical"]["image"]["docker-manifest-digest"].as_str() == Some(digest.as_str()) {
            return Ok(());
        }
        problems.push("the signed payload names another digest".into());
    }
    Err(if problems.is_empty() { "no simple-signing layer".into() } else { problems.join("; ") })
}
