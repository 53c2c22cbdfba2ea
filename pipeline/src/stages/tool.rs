//! The tool stage: the customer tool `stellaops` (the `tool/` crate of the pipeline's own
//! workspace) built for linux/amd64, with its evidence, into the release directory's `tools/`:
//!
//! ```text
//! workspace (Cargo.lock) ─► cargo build --profile tool ─► tools/stellaops ─► .sig (raw, openssl)
//!                        └► cargo metadata (resolve) ──► tools/stellaops.cdx.json (crates linked)
//!                                                      └► tools/stellaops.provenance.dsse.json
//! ```
//!
//! Reproducible: `--locked`, the `tool` profile (no debug info, symbols stripped), every build
//! path remapped (`--remap-path-prefix` for rustc, `-ffile-prefix-map` for the C of ring and
//! zstd), `CARGO_INCREMENTAL=0`, a fixed SOURCE_DATE_EPOCH, and none of the cargo variables a
//! `cargo run`/`cargo test` parent sets. The target directory is fixed
//! (`<workspace>/target/stellaops-tool`): every release after the first reuses it.
//!
//! The workspace is where the pipeline itself was built from (in a release of this repository,
//! the tagged tree): the release of another repository (the tests' scratch repositories)
//! still ships the tool of the pipeline that cut it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use oci::cmd::{Cmd, CmdError};
use oci::write_atomic;
use schema::model::{rfc3339, Digest, Platform};
use schema::release::ToolEntry;
use verifier::keys::Signer;

use crate::stages::evidence::provenance::{self, ResourceDescriptor, RunTimes};
use crate::stages::evidence::sbom::{self, Bom, Component, ComponentType, Dependency, Hash, Metadata, Property, Tools};

/// The program's name, and its package in the workspace.
pub const NAME: &str = "stellaops";
/// The cargo profile it is built with (`[profile.tool]` of the workspace's Cargo.toml).
pub const PROFILE: &str = "tool";
/// The one platform it is built for (the host's; no cross-compiling).
pub const TRIPLE: &str = "x86_64-unknown-linux-gnu";
/// Build type of its provenance.
pub const BUILD_TYPE: &str = "https://stella-ops.org/release-pipeline/cargo-tool/v1";
/// Where build paths are remapped to inside the binary.
const WORKSPACE_AS: &str = "/stellaops";
const CARGO_HOME_AS: &str = "/cargo";

/// Files under the release directory.
pub const FILE: &str = verifier::tlog::TOOL;
pub const SIGNATURE: &str = verifier::tlog::TOOL_SIGNATURE;
/// A keyless release's signing certificate and its chain (PEM, leaf first), for openssl.
pub const CERTIFICATE: &str = "tools/stellaops.sig.pem";
pub const SBOM: &str = "tools/stellaops.cdx.json";
pub const PROVENANCE: &str = "tools/stellaops.provenance.intoto.json";
pub const PROVENANCE_ENVELOPE: &str = verifier::tlog::TOOL_PROVENANCE;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("the customer tool: {0}")]
    Cargo(#[source] CmdError),
    #[error("the customer tool: the workspace `{workspace}` {reason}")]
    Workspace { workspace: PathBuf, reason: String },
    #[error("the customer tool: `cargo metadata`: {0}")]
    Metadata(String),
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Signer(#[from] verifier::keys::SignerError),
}

impl ToolError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            // The pipeline's own crate does not build or describe itself: a bug, not the input.
            ToolError::Cargo(CmdError::Failed { .. }) | ToolError::Metadata(_) => schema::exit::INTERNAL,
            ToolError::Workspace { .. } => schema::exit::REJECTED,
            ToolError::Signer(s) => s.exit_code(),
            _ => schema::exit::ENVIRONMENT,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            ToolError::Cargo(_) => Some(format!(
                "run `cargo build --locked -p {NAME} --profile {PROFILE}` in the pipeline's workspace to see why; \
                 cargo and the toolchain of `rust-toolchain.toml` must be on PATH"
            )),
            ToolError::Workspace { .. } => Some("run the pipeline from its own checkout (`cargo xtask release`)".into()),
            ToolError::Signer(s) => s.hint.clone(),
            _ => None,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ToolError + '_ {
    move |source| ToolError::Io { path: path.to_owned(), source }
}

/// The workspace the pipeline was built from (it holds `tool/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_owned()
}

/// The target directory of every release's tool build.
pub fn target_dir(workspace: &Path) -> PathBuf {
    workspace.join("target/stellaops-tool")
}

/// What the stage needs.
#[derive(Debug)]
pub struct ToolRequest<'a> {
    pub workspace: &'a Path,
    pub source_date_epoch: i64,
    pub key: &'a dyn Signer,
    /// The staging release directory (`tools/` is written there).
    pub out: &'a Path,
    pub times: &'a RunTimes,
}

/// What it made: the release.yaml entry and the compiler that built it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltTool {
    pub entry: ToolEntry,
    /// `rustc --version --verbose`, as recorded in the provenance.
    pub rustc: BTreeMap<String, String>,
    pub size: u64,
}

/// SOURCE_DATE_EPOCH of the tool's build (see [`cargo_cmd`]): 2000-01-01T00:00:00Z.
const TOOL_SOURCE_DATE_EPOCH: i64 = 946_684_800;

/// The environment of every cargo and rustc run here: without what a `cargo run`/`cargo test`
/// parent set (build scripts watching it would rebuild), without inherited flags and target
/// directories, with the path remaps.
fn cargo_cmd(program: impl AsRef<std::ffi::OsStr>, what: &str, ws: &Path) -> Cmd {
    let mut cmd = Cmd::new(program, what).current_dir(ws);
    for k in crate::stages::gates::cargo_run_env() {
        cmd = cmd.env_remove(k);
    }
    for k in
        ["CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_PROFILE"]
    {
        cmd = cmd.env_remove(k);
    }
    let home = cargo_home();
    let (ws_s, home_s) = (ws.display(), home.display());
    cmd.env("RUSTFLAGS", format!("--remap-path-prefix={ws_s}={WORKSPACE_AS} --remap-path-prefix={home_s}={CARGO_HOME_AS}"))
        .env("CFLAGS", format!("-ffile-prefix-map={ws_s}={WORKSPACE_AS} -ffile-prefix-map={home_s}={CARGO_HOME_AS}"))
        .env("CARGO_INCREMENTAL", "0")
        // A fixed epoch, not the release's: it only pins the C compiler's date macros (ring,
        // aws-lc, zstd), and cc-rs makes their build scripts rerun whenever SOURCE_DATE_EPOCH
        // changes, so the release's commit time here rebuilt the tool's C crates and everything
        // above them for every release of another commit. The program depends on its sources
        // and toolchain, not on when the release was cut.
        .env("SOURCE_DATE_EPOCH", TOOL_SOURCE_DATE_EPOCH.to_string())
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Builds the tool and writes `tools/` into `req.out`:
/// 1. the compiler's identity (`rustc -vV`, the workspace's toolchain), a linux/amd64 host;
/// 2. `cargo build --locked -p stellaops --profile tool` into the fixed target directory;
/// 3. the program copied to `tools/stellaops`, its raw signature beside it;
/// 4. its SBOM from the resolved dependency graph (normal dependencies of the package, for
///    this platform) with Cargo.lock's checksums; its provenance, signed as a DSSE envelope.
pub fn build(req: &ToolRequest<'_>) -> Result<BuiltTool, ToolError> {
    let ws = req.workspace;
    if !ws.join("tool/Cargo.toml").is_file() || !ws.join("Cargo.lock").is_file() {
        return Err(ToolError::Workspace { workspace: ws.to_owned(), reason: "holds no `tool/Cargo.toml` and `Cargo.lock`".into() });
    }
    // 1.
    let vv = cargo_cmd("rustc", "the compiler's version", ws).arg("-vV").run().map_err(ToolError::Cargo)?;
    let rustc: BTreeMap<String, String> = String::from_utf8_lossy(&vv.stdout)
        .lines()
        .filter_map(|l| match l.split_once(": ") {
            Some((k, v)) => Some((k.trim().to_owned(), v.trim().to_owned())),
            None if l.starts_with("rustc ") => Some(("version".to_owned(), l.trim().to_owned())),
            None => None,
        })
        .collect();
    if rustc.get("host").map(String::as_str) != Some(TRIPLE) {
        return Err(ToolError::Workspace {
            workspace: ws.to_owned(),
            reason: format!(
                "has a toolchain for `{}`; the customer tool is built for `{TRIPLE}` (linux/amd64)",
                rustc.get("host").map_or("?", |h| h)
            ),
        });
    }
    // 2.
    let target = target_dir(ws);
    cargo_cmd(cargo(), "build the customer tool", ws)
        .args(["build", "--locked", "--quiet", "-p", NAME, "--profile", PROFILE, "--target-dir"])
        .arg(&target)
        .run()
        .map_err(ToolError::Cargo)?;
    let built = target.join(PROFILE).join(NAME);
    // 3.
    let bytes = fs::read(&built).map_err(io(&built))?;
    let digest = Digest::of(&bytes);
    let tools = req.out.join("tools");
    fs::create_dir_all(&tools).map_err(io(&tools))?;
    let file = req.out.join(FILE);
    write_atomic(&file, &bytes).map_err(io(&file))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).map_err(io(&file))?;
    }
    let sig = req.key.try_sign(&bytes)?;
    let sig_path = req.out.join(SIGNATURE);
    write_atomic(&sig_path, &sig).map_err(io(&sig_path))?;
    // A keyless release: the certificate of the one-time key beside the signature, so that a
    // host without a verified tool checks the tool with openssl alone (README, "Air-gapped
    // hosts"): the chain to the pinned Fulcio root, the identity, then the signature.
    if let Some(chain) = req.key.certificate_chain() {
        let cert_path = req.out.join(CERTIFICATE);
        let pem: String = chain.iter().map(|c| format!("{}\n", c.trim_end())).collect();
        write_atomic(&cert_path, pem.as_bytes()).map_err(io(&cert_path))?;
    }
    // 4.
    let graph = resolve(ws)?;
    let lock_path = ws.join("Cargo.lock");
    let lock_text = fs::read_to_string(&lock_path).map_err(io(&lock_path))?;
    let lock = sbom::locks::parse("Cargo.lock", &lock_text).map_err(|e| ToolError::Metadata(e.to_string()))?;
    let checksums: BTreeMap<(&str, &str), &str> =
        lock.iter().filter_map(|p| p.checksum.as_ref().map(|(_, c)| ((p.name.as_str(), p.version.as_str()), c.as_str()))).collect();
    let bom = sbom_of(&graph, &checksums, &digest, req.source_date_epoch);
    let sbom_bytes = bom.to_json();
    let sbom_path = req.out.join(SBOM);
    write_atomic(&sbom_path, &sbom_bytes).map_err(io(&sbom_path))?;
    let statement = provenance_of(&graph, &checksums, &Digest::of(lock_text.as_bytes()), &digest, &rustc, req.times);
    let mut statement_bytes = serde_json::to_vec_pretty(&statement).map_err(|e| ToolError::Metadata(e.to_string()))?;
    statement_bytes.push(b'\n');
    let prov_path = req.out.join(PROVENANCE);
    write_atomic(&prov_path, &statement_bytes).map_err(io(&prov_path))?;
    let envelope = verifier::sign::sign_envelope(req.key, verifier::sign::PAYLOAD_TYPE, &statement_bytes)?;
    let mut env_bytes = serde_json::to_vec_pretty(&envelope).map_err(|e| ToolError::Metadata(e.to_string()))?;
    env_bytes.push(b'\n');
    let env_path = req.out.join(PROVENANCE_ENVELOPE);
    write_atomic(&env_path, &env_bytes).map_err(io(&env_path))?;
    Ok(BuiltTool {
        entry: ToolEntry {
            name: NAME.to_owned(),
            platform: Platform::LinuxAmd64,
            file: FILE.to_owned(),
            digest,
            signature: SIGNATURE.to_owned(),
            sbom: format!("{SBOM}@{}", Digest::of(&sbom_bytes)),
            provenance: format!("{PROVENANCE_ENVELOPE}@{}", Digest::of(&env_bytes)),
        },
        rustc,
        size: bytes.len() as u64,
    })
}

/// A crate the program links, and the crates it links in turn.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    version: String,
    /// From crates.io (else a member of the workspace).
    registry: bool,
    deps: BTreeSet<String>,
}

/// The crates linked into the program: from `cargo metadata`'s resolve, the package and what
/// it reaches through normal (not build, not dev) dependencies on this platform, without
/// proc-macros (they run in the compiler, nothing of them is linked).
#[derive(Debug)]
struct Graph {
    root: String,
    nodes: BTreeMap<String, Node>,
}

fn resolve(ws: &Path) -> Result<Graph, ToolError> {
    let out = cargo_cmd(cargo(), "list the customer tool's dependencies", ws)
        .args(["metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform", TRIPLE])
        .run()
        .map_err(ToolError::Cargo)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| ToolError::Metadata(e.to_string()))?;
    let mut packages: BTreeMap<String, (String, String, bool, bool)> = BTreeMap::new();
    for p in v["packages"].as_array().into_iter().flatten() {
        let id = p["id"].as_str().unwrap_or_default().to_owned();
        let proc_macro = p["targets"].as_array().into_iter().flatten().any(|t| {
            t["kind"].as_array().into_iter().flatten().any(|k| k == "proc-macro") && t["kind"].as_array().is_some_and(|k| k.len() == 1)
        });
        let registry = p["source"].as_str().is_some_and(|s| s.starts_with("registry+"));
        packages.insert(
            id,
            (p["name"].as_str().unwrap_or_default().to_owned(), p["version"].as_str().unwrap_or_default().to_owned(), registry, proc_macro),
        );
    }
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in v["resolve"]["nodes"].as_array().into_iter().flatten() {
        let id = n["id"].as_str().unwrap_or_default().to_owned();
        let deps = n["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null()))
            .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
            .filter(|d| packages.get(d).is_some_and(|p| !p.3))
            .collect();
        edges.insert(id, deps);
    }
    let root = packages
        .iter()
        .find(|(_, p)| p.0 == NAME && !p.2)
        .map(|(id, _)| id.clone())
        .ok_or_else(|| ToolError::Metadata(format!("the workspace has no package `{NAME}`")))?;
    let purl = |id: &str| packages.get(id).map(|p| sbom::locks::Ecosystem::RustCrate.purl(&p.0, &p.1, None, None)).unwrap_or_default();
    let mut nodes = BTreeMap::new();
    let mut todo = vec![root.clone()];
    while let Some(id) = todo.pop() {
        let r = purl(&id);
        if nodes.contains_key(&r) {
            continue;
        }
        let (name, version, registry, _) = packages[&id].clone();
        let deps = edges.get(&id).cloned().unwrap_or_default();
        todo.extend(deps.iter().cloned());
        nodes.insert(r, Node { name, version, registry, deps: deps.iter().map(|d| purl(d)).collect() });
    }
    Ok(Graph { root: purl(&root), nodes })
}

fn sbom_of(g: &Graph, checksums: &BTreeMap<(&str, &str), &str>, digest: &Digest, epoch: i64) -> Bom {
    let component = |r: &str, n: &Node, kind: ComponentType| Component {
        kind,
        bom_ref: r.to_owned(),
        name: n.name.clone(),
        version: n.version.clone(),
        description: None,
        hashes: checksums.get(&(n.name.as_str(), n.version.as_str())).map(|c| vec![Hash::sha256(c)]).unwrap_or_default(),
        licenses: Vec::new(),
        purl: Some(r.to_owned()),
        properties: vec![Property {
            name: "stellaops:source".into(),
            value: if n.registry { "crates.io (Cargo.lock checksum)".into() } else { "workspace".into() },
        }],
    };
    let root = &g.nodes[&g.root];
    let mut main = component(&g.root, root, ComponentType::Application);
    main.hashes = vec![Hash::sha256(digest.hex())];
    main.properties.push(Property { name: "stellaops:platform".into(), value: Platform::LinuxAmd64.as_str().into() });
    let xtask = Component {
        kind: ComponentType::Application,
        bom_ref: "stellaops-release-pipeline".into(),
        name: "stellaops-release-pipeline".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: None,
        hashes: Vec::new(),
        licenses: Vec::new(),
        purl: None,
        properties: Vec::new(),
    };
    let components = g.nodes.iter().filter(|(r, _)| **r != g.root).map(|(r, n)| component(r, n, ComponentType::Library)).collect();
    let dependencies =
        g.nodes.iter().map(|(r, n)| Dependency { reference: r.clone(), depends_on: n.deps.iter().cloned().collect() }).collect();
    Bom::sealed(
        Metadata { timestamp: rfc3339(epoch), tools: Tools { components: vec![xtask] }, component: main, properties: Vec::new() },
        components,
        dependencies,
    )
}

fn provenance_of(
    g: &Graph,
    checksums: &BTreeMap<(&str, &str), &str>,
    lock: &Digest,
    digest: &Digest,
    rustc: &BTreeMap<String, String>,
    times: &RunTimes,
) -> provenance::Statement {
    let sha = |hex: &str| BTreeMap::from([("sha256".to_owned(), hex.to_owned())]);
    let mut deps = vec![ResourceDescriptor { uri: "file:Cargo.lock".into(), digest: sha(lock.hex()), name: Some("lock file".into()) }];
    if let Some(commit) = rustc.get("commit-hash") {
        deps.push(ResourceDescriptor {
            uri: format!("git+https://github.com/rust-lang/rust@{commit}"),
            digest: BTreeMap::from([("gitCommit".to_owned(), commit.clone())]),
            name: Some(format!("toolchain: {}", rustc.get("version").map_or("rustc", |v| v))),
        });
    }
    for (r, n) in &g.nodes {
        if let Some(c) = checksums.get(&(n.name.as_str(), n.version.as_str())) {
            deps.push(ResourceDescriptor { uri: r.clone(), digest: sha(c), name: None });
        }
    }
    provenance::Statement {
        kind: provenance::STATEMENT_TYPE.to_owned(),
        subject: vec![provenance::Subject { name: NAME.to_owned(), digest: sha(digest.hex()) }],
        predicate_type: provenance::PREDICATE_TYPE.to_owned(),
        predicate: provenance::Provenance {
            build_definition: provenance::BuildDefinition {
                build_type: BUILD_TYPE.to_owned(),
                external_parameters: serde_json::json!({
                    "package": NAME, "profile": PROFILE, "target": TRIPLE, "locked": true,
                }),
                internal_parameters: serde_json::json!({
                    "rustc": rustc,
                    "remapPathPrefix": { "workspace": WORKSPACE_AS, "cargoHome": CARGO_HOME_AS },
                    "cargoIncremental": "0",
                }),
                resolved_dependencies: deps,
            },
            run_details: provenance::RunDetails {
                builder: times.builder.clone(),
                metadata: provenance::RunMetadata {
                    invocation_id: times.invocation_id.clone(),
                    started_on: times.started.clone(),
                    finished_on: times.finished.clone(),
                },
            },
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cargo_that_cannot_start_is_the_environment_a_failed_build_is_a_bug() {
        let missing = Cmd::new("/nonexistent/cargo", "build the customer tool").run().unwrap_err();
        let e = ToolError::Cargo(missing);
        assert_eq!(e.exit_code(), schema::exit::ENVIRONMENT);
        assert!(e.to_string().contains("/nonexistent/cargo") && e.hint().unwrap().contains("--profile tool"), "{e}");
        let failed = Cmd::new("sh", "build the customer tool")
            .args(["-c", "echo 'error[E0425]: cannot find value' >&2; exit 101"])
            .run()
            .unwrap_err();
        let e = ToolError::Cargo(failed);
        assert_eq!(e.exit_code(), schema::exit::INTERNAL);
        assert!(e.to_string().contains("E0425"), "{e}");
        let ws = tempfile::tempdir().unwrap();
        let times = RunTimes {
            invocation_id: "x".into(),
            started: "s".into(),
            finished: "f".into(),
            builder: provenance::Builder { id: "b".into(), version: BTreeMap::new() },
        };
        let key = verifier::keys::SigningKey::generate(verifier::keys::KeyKind::EcdsaP256);
        let e = build(&ToolRequest { workspace: ws.path(), source_date_epoch: 0, key: &key, out: ws.path(), times: &times }).unwrap_err();
        assert_eq!(e.exit_code(), schema::exit::REJECTED);
        assert!(e.to_string().contains("holds no `tool/Cargo.toml`"), "{e}");
    }
}
