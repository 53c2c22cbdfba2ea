//! The build-time SBOM: what the build knew, and nothing read back from the image.
//!
//! - the base's packages, from its pins (name, version, architecture, the `.deb`'s sha256);
//! - the base's inventory ([`crate::stages::evidence::inventory`]): the packages its own
//!   layers hold that the pins do not name, and the regular files no package owns (less those
//!   the component's layers replace or remove). Every base contribution carries
//!   `stellaops:base = <base digest>`; the component's own do not;
//! - the packages of the component's lock files: those a recipe layer carries into the image
//!   (`stellaops:evidence = image`, checked against the scan) and those only the build read
//!   (`build-input`: compiled in or used to build, which a file-system scan cannot see);
//! - every regular file the build's own layers added, with its sha256;
//! - the build bases of a multi-stage Dockerfile (`recipe.build-bases`): `container`
//!   components with `stellaops:evidence = build-input` (a build stage stood on them; none of
//!   their layers is in the image), outside the image's `dependsOn`.

use std::collections::{BTreeMap, BTreeSet};

use super::locks::{Ecosystem, LockedPackage};
use super::{purl_encode, Bom, Component, ComponentType, Dependency, Hash, License, Metadata, Property, Tools};
use crate::stages::build::BuiltImage;
use crate::stages::plan::{Plan, PlannedComponent};
use schema::model::Digest;

pub const TOOL_NAME: &str = "stellaops-release-pipeline";
pub const EVIDENCE: &str = "stellaops:evidence";
pub const ECOSYSTEM: &str = "stellaops:ecosystem";
/// On a component the base contributed (its packages and files): the base's digest.
pub const BASE: &str = "stellaops:base";

/// The paths a component's layers remove, from the whiteouts the build recorded among their
/// files (`/d/.wh.name` removes `/d/name`; `/d/.wh..wh..opq` empties `/d`): each as a path
/// prefix (`/d/name` and everything under it; `/d/` for an opaque directory).
pub fn removed_paths(files: &[oci::layer::FileRecord]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| {
            let (dir, name) = f.path.rsplit_once('/')?;
            if name == ".wh..wh..opq" {
                Some(format!("{dir}/"))
            } else {
                name.strip_prefix(".wh.").map(|n| format!("{dir}/{n}"))
            }
        })
        .collect()
}

/// Whether `path` is under one of `removed` (as [`removed_paths`] gives them).
pub fn is_removed(path: &str, removed: &[String]) -> bool {
    removed.iter().any(|r| if r.ends_with('/') { path.starts_with(r.as_str()) } else { path == r || path.starts_with(&format!("{r}/")) })
}

/// `debian-12` for `bookworm`, as purls and scanners name Debian releases.
pub fn debian_distro(suite: &str) -> Option<&'static str> {
    Some(match suite {
        "buster" => "debian-10",
        "bullseye" => "debian-11",
        "bookworm" => "debian-12",
        "trixie" => "debian-13",
        "forky" => "debian-14",
        _ => return None,
    })
}

/// The purl of an image: `pkg:oci/<name>@sha256%3A<hex>?arch=..&repository_url=..`.
pub fn image_purl(repository: &str, digest: &Digest, arch: Option<&str>) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let mut q = Vec::new();
    if let Some(a) = arch {
        q.push(format!("arch={}", purl_encode(a)));
    }
    q.push(format!("repository_url={}", purl_encode(repository)));
    format!("pkg:oci/{}@{}?{}", purl_encode(name), purl_encode(digest.as_str()), q.join("&"))
}

fn prop(name: &str, value: impl Into<String>) -> Property {
    Property { name: name.to_owned(), value: value.into() }
}

fn package_component(p: &LockedPackage, lock_file: &str, evidence: &str) -> Component {
    let purl = p.ecosystem.purl(&p.name, &p.version, None, None);
    Component {
        kind: ComponentType::Library,
        bom_ref: purl.clone(),
        name: p.name.clone(),
        version: p.version.clone(),
        description: None,
        hashes: p.checksum.iter().map(|(alg, hex)| Hash { alg: alg.clone(), content: hex.clone() }).collect(),
        licenses: p.license.iter().map(|l| License::from_stated(l)).collect(),
        purl: Some(purl),
        properties: vec![prop(ECOSYSTEM, p.ecosystem.as_str()), prop(EVIDENCE, evidence), prop("stellaops:lock-file", lock_file)],
    }
}

/// A package a scan found, as a library component: its purl (Debian's with `distro`), the
/// ecosystem, then `more` properties, then where it was found.
fn found_component(p: &crate::stages::evidence::scan::Found, distro: Option<&str>, more: Vec<Property>) -> Component {
    let purl = Ecosystem::parse(&p.kind).map(|e| match e {
        Ecosystem::Deb => e.purl(&p.name, &p.version, None, distro),
        _ => e.purl(&p.name, &p.version, None, None),
    });
    let mut properties = vec![prop(ECOSYSTEM, p.kind.as_str())];
    properties.extend(more);
    properties.push(prop("stellaops:location", p.location.as_str()));
    Component {
        kind: ComponentType::Library,
        bom_ref: purl.clone().unwrap_or_else(|| format!("{}:{}@{}", p.kind, p.name, p.version)),
        name: p.name.clone(),
        version: p.version.clone(),
        description: None,
        hashes: Vec::new(),
        licenses: Vec::new(),
        purl,
        properties,
    }
}

/// The build-time SBOM of one image.
pub fn build_time(plan: &Plan, component: &PlannedComponent, image: &BuiltImage, index: &Digest) -> Bom {
    let known = &image.known;
    let arch = image.platform.arch();
    let image_ref = "image".to_owned();
    let mut components = Vec::new();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();

    // 1. The base's packages, as pinned.
    let distro = known.base_suite.as_deref().and_then(debian_distro);
    let mut deb_refs: BTreeMap<&str, String> = BTreeMap::new();
    for p in &known.base_packages {
        let purl = Ecosystem::Deb.purl(&p.name, &p.version, Some(&p.arch), distro);
        deb_refs.insert(p.name.as_str(), purl.clone());
        let mut properties = vec![prop(ECOSYSTEM, "deb"), prop(EVIDENCE, "image"), prop(BASE, image.base.as_str())];
        if let Some(s) = &p.source {
            properties.push(prop("stellaops:deb-source", s.as_str()));
        }
        components.push(Component {
            kind: ComponentType::Library,
            bom_ref: purl.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
            description: None,
            hashes: p.deb_sha256.iter().map(|h| Hash::sha256(h)).collect(),
            licenses: Vec::new(),
            purl: Some(purl),
            properties,
        });
    }
    for p in &known.base_packages {
        let on = p.depends.iter().filter_map(|d| deb_refs.get(d.as_str()).cloned()).collect();
        deps.insert(deb_refs[p.name.as_str()].clone(), on);
    }

    // 1b. The base's inventory: packages its layers hold that the pins do not name, and the
    //     files no package owns that the component's layers leave as they are.
    if let Some(inv) = known.base_inventory.as_deref() {
        let pinned: BTreeSet<(&str, &str)> = known.base_packages.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        for p in &inv.packages {
            if p.kind == "deb" && pinned.contains(&(p.name.as_str(), p.version.as_str())) {
                continue;
            }
            let c = found_component(p, distro, vec![prop(EVIDENCE, "image"), prop(BASE, image.base.as_str())]);
            deps.entry(c.bom_ref.clone()).or_default();
            components.push(c);
        }
        let replaced: BTreeSet<&str> = known.files.iter().map(|f| f.path.as_str()).collect();
        let removed = removed_paths(&known.files);
        for (path, sha) in &inv.files {
            if replaced.contains(path.as_str()) || is_removed(path, &removed) {
                continue;
            }
            let r = format!("file:{path}");
            deps.entry(r.clone()).or_default();
            components.push(Component {
                kind: ComponentType::File,
                bom_ref: r,
                name: path.clone(),
                version: String::new(),
                description: None,
                hashes: vec![Hash::sha256(sha)],
                licenses: Vec::new(),
                purl: None,
                properties: vec![prop(EVIDENCE, "image"), prop(BASE, image.base.as_str())],
            });
        }
    }

    // 2. The lock files' packages.
    for lf in &image.lock_files {
        let evidence = if lf.image_path.is_some() { "image" } else { "build-input" };
        let refs: BTreeMap<&str, Vec<String>> = lf.packages.iter().fold(BTreeMap::new(), |mut m, p| {
            m.entry(p.name.as_str()).or_default().push(p.ecosystem.purl(&p.name, &p.version, None, None));
            m
        });
        for p in &lf.packages {
            let c = package_component(p, &lf.path, evidence);
            // A dependency the lock file names but does not resolve (optional, or for another
            // platform) has no component to point at: no edge, rather than a dangling one.
            let on = p.depends.iter().flat_map(|d| refs.get(d.as_str()).cloned().unwrap_or_default()).collect();
            deps.entry(c.bom_ref.clone()).or_default().extend::<Vec<String>>(on);
            components.push(c);
        }
    }

    // 3. The files the build added.
    for f in &known.files {
        let r = format!("file:{}", f.path);
        components.push(Component {
            kind: ComponentType::File,
            bom_ref: r.clone(),
            name: f.path.clone(),
            version: String::new(),
            description: None,
            hashes: vec![Hash::sha256(&f.sha256)],
            licenses: Vec::new(),
            purl: None,
            properties: vec![prop(EVIDENCE, "image"), prop("stellaops:mode", format!("{:o}", f.mode))],
        });
        deps.entry(r).or_default();
    }
    deps.insert(image_ref.clone(), components.iter().map(|c| c.bom_ref.clone()).collect());

    // 4. Build bases: what a build stage stood on, not a part of the image.
    for b in image.buildkit.iter().flat_map(|bk| bk.build_bases()) {
        let purl = image_purl(&format!("stellaops-base/{}", b.name), &b.digest, Some(arch));
        components.push(Component {
            kind: ComponentType::Container,
            bom_ref: purl.clone(),
            name: b.name.clone(),
            version: String::new(),
            description: Some("build base: a Dockerfile build stage stood on it; no layer of it is in the image".to_owned()),
            hashes: vec![Hash::sha256(b.digest.hex())],
            licenses: Vec::new(),
            purl: Some(purl.clone()),
            properties: vec![
                prop(EVIDENCE, "build-input"),
                prop("stellaops:base", b.digest.as_str()),
                prop("stellaops:build-arg", b.build_arg.as_str()),
            ],
        });
        deps.entry(purl).or_default();
    }

    Bom::sealed(
        Metadata {
            timestamp: component.stamp.created.clone(),
            tools: Tools {
                components: vec![Component {
                    kind: ComponentType::Application,
                    bom_ref: TOOL_NAME.to_owned(),
                    name: TOOL_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    description: Some("Stella Ops release pipeline (cargo xtask), build-time SBOM".to_owned()),
                    hashes: Vec::new(),
                    licenses: Vec::new(),
                    purl: None,
                    properties: Vec::new(),
                }],
            },
            component: Component {
                kind: ComponentType::Container,
                bom_ref: image_ref,
                name: component.repository.clone(),
                version: component.version.clone(),
                description: None,
                hashes: vec![Hash::sha256(image.manifest.digest.hex())],
                licenses: Vec::new(),
                purl: Some(image_purl(&component.repository, &image.manifest.digest, Some(arch))),
                properties: vec![
                    prop("stellaops:component", component.name.as_str()),
                    prop("stellaops:platform", image.platform.as_str()),
                    prop("stellaops:channel", plan.channel.as_str()),
                    prop("stellaops:release", plan.version.to_string()),
                    prop("stellaops:index-digest", index.as_str()),
                    prop("stellaops:base-digest", image.base.as_str()),
                    prop("stellaops:revision", component.stamp.revision.as_str()),
                ],
            },
            properties: vec![prop("stellaops:sbom-kind", "build-time")],
        },
        components,
        deps.into_iter().map(|(reference, depends_on)| Dependency { reference, depends_on }).collect(),
    )
}

/// A CycloneDX document of a scan alone (for `cargo xtask bench --sbom` and for scans of
/// images this pipeline did not build): the packages and unowned files found.
pub fn from_scan(scan: &crate::stages::evidence::scan::ScanResult, manifest: &oci::Manifest) -> Bom {
    // A manifest is plain data with string keys: it always serializes (never the digest of "").
    let digest = schema::model::Digest::of(&serde_json::to_vec(manifest).expect("a manifest always serializes"));
    let mut components: Vec<Component> = scan.packages.iter().map(|p| found_component(p, None, Vec::new())).collect();
    components.extend(scan.files.iter().map(|(path, sha)| Component {
        kind: ComponentType::File,
        bom_ref: format!("file:{path}"),
        name: path.clone(),
        version: String::new(),
        description: None,
        hashes: vec![Hash::sha256(sha)],
        licenses: Vec::new(),
        purl: None,
        properties: Vec::new(),
    }));
    let all: Vec<String> = components.iter().map(|c| c.bom_ref.clone()).collect();
    Bom::sealed(
        Metadata {
            timestamp: schema::model::rfc3339(0),
            tools: Tools { components: Vec::new() },
            component: Component {
                kind: ComponentType::Container,
                bom_ref: "image".into(),
                name: "scanned-image".into(),
                version: String::new(),
                description: None,
                hashes: vec![Hash::sha256(digest.hex())],
                licenses: Vec::new(),
                purl: None,
                properties: Vec::new(),
            },
            properties: vec![prop("stellaops:sbom-kind", "scan")],
        },
        components,
        vec![Dependency { reference: "image".into(), depends_on: all }],
    )
}
