//! Snapshots of the evidence documents for a fixed, hand-built input (no services, no
//! network, no wall clock): the build-time CycloneDX 1.6 SBOM and the SLSA provenance
//! statement, as the evidence stage writes them. A changed byte fails the test; review the
//! new snapshot, then regenerate with `INSTA_UPDATE=always cargo test -p pipeline --test evidence_snapshots`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use oci::layer::FileRecord;
use oci::Descriptor;
use pipeline::stages::build::backend::{Record, StageBase};
use pipeline::stages::build::base::BasePackage;
use pipeline::stages::build::{dockerfile, BuiltImage, Known, LockFile};
use pipeline::stages::evidence::drift;
use pipeline::stages::evidence::inventory::{self, BaseInventory};
use pipeline::stages::evidence::provenance::{self, RunTimes};
use pipeline::stages::evidence::sbom::generate;
use pipeline::stages::evidence::sbom::locks::{Ecosystem, LockedPackage};
use pipeline::stages::evidence::sbom::{Bom, ComponentType};
use pipeline::stages::evidence::scan::{ScanResult, Written};
use pipeline::stages::plan::source::{RepositoryUrl, SourceFacts, UrlFrom};
use pipeline::stages::plan::{Plan, PlannedComponent, PlannedImage, PlannedSource, Stamp};
use schema::model::{Channel, Digest, Platform};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const EPOCH: i64 = 1_813_492_800;

struct Fixture {
    plan: Plan,
    image: BuiltImage,
    index: Digest,
}

fn fixture() -> Fixture {
    let component = PlannedComponent {
        name: "authority".to_owned(),
        version: "2.4.1".to_owned(),
        skew_group: "trust".to_owned(),
        repository: "registry.example/stellaops/authority".to_owned(),
        source: PlannedSource::Path { path: "components/authority".to_owned(), commit: COMMIT.to_owned() },
        in_kit: true,
        images: vec![PlannedImage {
            platform: Platform::LinuxAmd64,
            base: "debian-bookworm-slim".to_owned(),
            base_digest: Digest::of(b"base"),
            ref_name: "authority-linux-amd64".to_owned(),
        }],
        // The default rule (`image-epoch = "release"`): the release's commit stamps the image.
        epoch: None,
        stamp: Stamp { epoch: EPOCH, created: schema::model::rfc3339(EPOCH), revision: COMMIT.to_owned() },
        recipe: toml::from_str("entrypoint = [\"/usr/bin/authority\"]").unwrap(),
    };
    let plan = Plan {
        version: "2.4.1 (2027.06)".parse().unwrap(),
        channel: Channel::Stable,
        source: SourceFacts {
            workdir: PathBuf::from("/src/stellaops"),
            commit: COMMIT.to_owned(),
            tag: Some("v2.4.1".to_owned()),
            tag_elsewhere: None,
            source_date_epoch: EPOCH,
            dirty: Vec::new(),
            url: RepositoryUrl { url: "https://git.stella-ops.org/stella-ops/release.git".to_owned(), from: UrlFrom::Configured },
        },
        source_date_epoch: EPOCH,
        created: schema::model::rfc3339(EPOCH),
        registry: "registry.example/stellaops".to_owned(),
        backend: "daemonless",
        compressor: "gzip",
        layer_gzip: Default::default(),
        components: vec![component],
        output: PathBuf::from("/src/stellaops/target/releases/2.4.1-stable"),
        root: PathBuf::from("/src/stellaops"),
        kit: toml::from_str("components = [\"*\"]\nsections = [\"images\", \"sboms\"]").unwrap(),
        drift: Default::default(),
    };
    let deb = |name: &str, depends: &[&str], sha: Option<&str>| BasePackage {
        name: name.to_owned(),
        version: "1.0-1".to_owned(),
        arch: "amd64".to_owned(),
        deb_sha256: sha.map(|s| Digest::of(s.as_bytes()).hex().to_owned()),
        source: None,
        depends: depends.iter().map(|d| (*d).to_owned()).collect(),
        files: Vec::new(),
    };
    let crate_pkg = |name: &str, version: &str, depends: &[&str]| LockedPackage {
        ecosystem: Ecosystem::RustCrate,
        name: name.to_owned(),
        version: version.to_owned(),
        checksum: Some(("SHA-256".to_owned(), Digest::of(name.as_bytes()).hex().to_owned())),
        license: Some("MIT OR Apache-2.0".to_owned()),
        depends: depends.iter().map(|d| (*d).to_owned()).collect(),
    };
    let image = BuiltImage {
        component: "authority".to_owned(),
        platform: Platform::LinuxAmd64,
        manifest: Descriptor::new("application/vnd.oci.image.manifest.v1+json", Digest::of(b"manifest"), 1234),
        config: Digest::of(b"config"),
        layers: vec![Digest::of(b"base layer"), Digest::of(b"layer")],
        base: Digest::of(b"base"),
        lock_files: vec![LockFile {
            path: "Cargo.lock".to_owned(),
            sha256: Digest::of(b"Cargo.lock").hex().to_owned(),
            image_path: None,
            packages: vec![crate_pkg("serde", "1.0.200", &[]), crate_pkg("authority", "2.4.1", &["serde", "missing"])],
        }],
        known: Known {
            // `libc6` has no pinned .deb: in the SBOM, not among provenance's dependencies.
            base_packages: vec![deb("libc6", &[], None), deb("libssl3", &["libc6"], Some("libssl3.deb"))],
            base_suite: Some("bookworm".to_owned()),
            files: vec![FileRecord {
                path: "/usr/bin/authority".to_owned(),
                sha256: Digest::of(b"binary").hex().to_owned(),
                size: 6,
                mode: 0o755,
            }],
            base_layers: 1,
            // The SBOM of an image whose base brings nothing but its pinned packages.
            base_inventory: None,
        },
        buildkit: None,
        go: None,
    };
    Fixture { plan, image, index: Digest::of(b"index") }
}

#[test]
fn build_time_sbom_cyclonedx_json() {
    let f = fixture();
    let bom = generate::build_time(&f.plan, &f.plan.components[0], &f.image, &f.index);
    let json = bom.to_json();
    insta::assert_snapshot!("build_time_sbom_cdx_json", String::from_utf8(json.clone()).unwrap());
    // The document reads back to the same model, names no unknown ref, and seals to itself.
    let back = Bom::from_json(&json).unwrap();
    assert_eq!(back, bom);
    assert_eq!(back.spec_version, "1.6");
    assert!(back.dangling_refs().is_empty(), "{:?}", back.dangling_refs());
    let mut resealed = back.clone();
    resealed.seal();
    assert_eq!(resealed.serial_number, bom.serial_number);
    assert!(bom.serial_number.starts_with("urn:uuid:"));
}

#[test]
fn provenance_statement_json() {
    let f = fixture();
    let times = RunTimes {
        invocation_id: "urn:uuid:00000000-0000-5000-8000-000000000000".to_owned(),
        started: "2027-06-20T12:00:00Z".to_owned(),
        finished: "2027-06-20T12:05:00Z".to_owned(),
        builder: provenance::Builder::from_env(|_| None),
    };
    let st = provenance::statement(&f.plan, &f.plan.components[0], &f.image, &f.index, "1.95.0", &times).unwrap();
    // As the evidence stage writes it: pretty JSON.
    let json = String::from_utf8(serde_json::to_vec_pretty(&st).unwrap()).unwrap();
    insta::assert_snapshot!("provenance_statement_json", json);
    let names: Vec<Option<&str>> = st.predicate.build_definition.resolved_dependencies.iter().map(|d| d.name.as_deref()).collect();
    assert_eq!(names, [Some("v2.4.1"), Some("base image"), Some("libssl3.deb"), Some("lock file"), Some("toolchain")]);
    assert_eq!(st.predicate.build_definition.build_type, provenance::BUILD_TYPE);
}

#[test]
fn provenance_refuses_an_image_the_plan_does_not_have() {
    let mut f = fixture();
    f.image.platform = Platform::LinuxArm64;
    let times = RunTimes {
        invocation_id: String::new(),
        started: String::new(),
        finished: String::new(),
        builder: provenance::Builder::from_env(|_| None),
    };
    let err = provenance::statement(&f.plan, &f.plan.components[0], &f.image, &f.index, "1.95.0", &times).unwrap_err();
    assert!(err.contains("has no image for linux/arm64"), "{err}");
}

fn buildkit_record(build_bases: &[&str]) -> Record {
    Record {
        endpoint: "unix:///run/docker.sock".to_owned(),
        dockerfile: "Dockerfile".to_owned(),
        exporter: "tar",
        network: "none",
        build_args: std::collections::BTreeMap::new(),
        changed_paths: 1,
        removed_paths: 0,
        bases: std::iter::once(StageBase {
            name: "debian-bookworm-slim".to_owned(),
            digest: Digest::of(b"base"),
            role: "component",
            build_arg: "STELLAOPS_BASE".to_owned(),
        })
        .chain(build_bases.iter().map(|b| StageBase {
            name: (*b).to_owned(),
            digest: Digest::of(b.as_bytes()),
            role: "build",
            build_arg: dockerfile::build_base_arg(b),
        }))
        .collect(),
        build_cache: None,
    }
}

#[test]
fn a_single_base_buildkit_record_does_not_list_bases() {
    let json = serde_json::to_value(buildkit_record(&[])).unwrap();
    assert!(json.get("bases").is_none(), "{json}");
    // Nor a build cache when none was used (records keep their bytes).
    assert!(json.get("build_cache").is_none(), "{json}");
    let json = serde_json::to_value(buildkit_record(&["builder"])).unwrap();
    assert_eq!(json["bases"][1]["name"], "builder");
    assert_eq!(json["bases"][1]["role"], "build");
    assert_eq!(json["bases"][1]["build_arg"], "STELLAOPS_BASE_BUILDER");
}

#[test]
fn build_bases_are_build_inputs_of_the_sbom_and_resolved_dependencies_of_the_provenance() {
    let mut f = fixture();
    f.image.buildkit = Some(buildkit_record(&[]));
    let single = generate::build_time(&f.plan, &f.plan.components[0], &f.image, &f.index);
    f.image.buildkit = Some(buildkit_record(&["builder"]));
    let bom = generate::build_time(&f.plan, &f.plan.components[0], &f.image, &f.index);
    assert_eq!(bom.components.len(), single.components.len() + 1);
    let b = bom.components.iter().find(|c| c.name == "builder").unwrap();
    assert_eq!(b.kind, ComponentType::Container);
    let prop = |n: &str| b.properties.iter().find(|p| p.name == n).map(|p| p.value.clone());
    assert_eq!(prop(generate::EVIDENCE).as_deref(), Some("build-input"));
    assert_eq!(prop("stellaops:base"), Some(Digest::of(b"builder").to_string()));
    assert!(b.purl.as_deref().unwrap().starts_with("pkg:oci/builder@sha256%3A"), "{b:?}");
    // Not a part of the image: outside its dependsOn; every ref resolves; JSON reads back.
    let image_deps = bom.dependencies.iter().find(|d| d.reference == "image").unwrap();
    assert!(!image_deps.depends_on.contains(&b.bom_ref));
    assert!(bom.dangling_refs().is_empty());
    assert_eq!(Bom::from_json(&bom.to_json()).unwrap(), bom);
    // The drift gate does not compare it: the same report with and without it.
    let binary = Digest::of(b"binary").hex().to_owned();
    let scan = ScanResult {
        os: None,
        packages: Default::default(),
        files: [("/usr/bin/authority".to_owned(), binary.clone())].into(),
        file_count: 1,
        tree: [("/usr/bin/authority".to_owned(), Written { sha256: binary, layer: 1 })].into(),
        gone: Default::default(),
        layers: f.image.layers.clone(),
    };
    let base = BaseInventory {
        format: inventory::FORMAT,
        base: f.image.base.clone(),
        layers: f.image.layers[..1].to_vec(),
        os: None,
        packages: Default::default(),
        files: Default::default(),
        tree: Default::default(),
    };
    let with = drift::compare("authority", Platform::LinuxAmd64, &bom, &scan, &base, &[]);
    let without = drift::compare("authority", Platform::LinuxAmd64, &single, &scan, &base, &[]);
    assert_eq!(format!("{:?}", with.differences), format!("{:?}", without.differences));
    assert_eq!(with.declared_packages, without.declared_packages);

    let times = RunTimes {
        invocation_id: String::new(),
        started: String::new(),
        finished: String::new(),
        builder: provenance::Builder::from_env(|_| None),
    };
    let st = provenance::statement(&f.plan, &f.plan.components[0], &f.image, &f.index, "1.95.0", &times).unwrap();
    let deps = &st.predicate.build_definition.resolved_dependencies;
    let names: Vec<Option<&str>> = deps.iter().map(|d| d.name.as_deref()).collect();
    assert_eq!(names[..3], [Some("v2.4.1"), Some("base image"), Some("build base image")]);
    assert_eq!(deps[2].uri, format!("oci://stellaops-base/builder@{}", Digest::of(b"builder")));
    assert_eq!(deps[2].digest["sha256"], Digest::of(b"builder").hex());
    assert_eq!(st.predicate.build_definition.build_type, provenance::BUILD_TYPE_BUILDKIT);
    assert_eq!(st.predicate.build_definition.internal_parameters["buildkit"]["bases"][1]["name"], "builder");
}

#[test]
fn the_base_inventory_is_in_the_sbom_as_the_bases_contribution() {
    let mut f = fixture();
    let found = |kind: &str, name: &str, version: &str, location: &str| pipeline::stages::evidence::scan::Found {
        kind: kind.to_owned(),
        name: name.to_owned(),
        version: version.to_owned(),
        location: location.to_owned(),
    };
    let sha = |s: &str| Digest::of(s.as_bytes()).hex().to_owned();
    // A pinned package found again (listed once), a package of another ecosystem, files no
    // package owns: one the component's layer replaces and one under a directory it removes.
    let files = [("/etc/group", "group"), ("/usr/bin/authority", "old"), ("/var/cache/x/y", "cache")];
    f.image.known.files.push(FileRecord { path: "/var/cache/.wh.x".to_owned(), sha256: sha(""), size: 0, mode: 0o644 });
    f.image.known.base_inventory = Some(std::sync::Arc::new(BaseInventory {
        format: inventory::FORMAT,
        base: f.image.base.clone(),
        layers: f.image.layers[..1].to_vec(),
        os: Some("debian 12".to_owned()),
        packages: [
            found("deb", "libssl3", "1.0-1", "/var/lib/dpkg/status"),
            found("python", "pip", "23.0.1", "/usr/lib/python3/dist-packages/pip-23.0.1.dist-info/METADATA"),
        ]
        .into(),
        files: files.iter().map(|(p, c)| ((*p).to_owned(), sha(c))).collect(),
        tree: files.iter().map(|(p, c)| ((*p).to_owned(), sha(c))).collect(),
    }));
    let bom = generate::build_time(&f.plan, &f.plan.components[0], &f.image, &f.index);
    let base = f.image.base.to_string();
    let of_base =
        |c: &&pipeline::stages::evidence::sbom::Component| c.properties.iter().any(|p| p.name == generate::BASE && p.value == base);
    let mut names: Vec<(&str, ComponentType)> = bom.components.iter().filter(of_base).map(|c| (c.name.as_str(), c.kind)).collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("/etc/group", ComponentType::File),
            ("libc6", ComponentType::Library),
            ("libssl3", ComponentType::Library),
            ("pip", ComponentType::Library)
        ]
    );
    let pip = bom.components.iter().find(|c| c.name == "pip").unwrap();
    assert_eq!(pip.purl.as_deref(), Some("pkg:pypi/pip@23.0.1"));
    // The component's own file replaces the base's: listed once, with the component's content.
    let authority: Vec<_> = bom.components.iter().filter(|c| c.name == "/usr/bin/authority").collect();
    assert_eq!(authority.len(), 1);
    assert_eq!(authority[0].hashes[0].content, Digest::of(b"binary").hex());
    assert!(!of_base(&authority[0]));
    // Everything is in the image's dependsOn; every ref resolves.
    let image = bom.dependencies.iter().find(|d| d.reference == "image").unwrap();
    assert!(image.depends_on.contains(&"file:/etc/group".to_owned()) && image.depends_on.contains(&pip.bom_ref));
    assert!(bom.dangling_refs().is_empty(), "{:?}", bom.dangling_refs());
    assert_eq!(Bom::from_json(&bom.to_json()).unwrap(), bom);
}
