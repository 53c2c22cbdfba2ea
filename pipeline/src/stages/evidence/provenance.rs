//! SLSA Provenance v1 in an in-toto Statement v1, one per image.
//!
//! Small serde types rather than the in-toto crate, which is stale (Statement v0.1, SLSA
//! v0.1/v0.2 only; shared/CRATES.md). The statement's subjects are the image manifest and its
//! component's index; resolvedDependencies name the git commit (of the repository's canonical
//! URL, [`crate::stages::plan::source::RepositoryUrl`]), the base, the build bases of
//! a multi-stage Dockerfile (`recipe.build-bases`), each base package, every lock file and the
//! toolchain. Run times are the only wall-clock values of a release,
//! read once by the caller ([`RunTimes`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stages::build::BuiltImage;
use crate::stages::plan::{Plan, PlannedComponent};
use schema::model::Digest;

pub use schema::intoto::{PREDICATE_TYPE, STATEMENT_TYPE};
pub const BUILD_TYPE: &str = "https://stella-ops.org/release-pipeline/daemonless/v1";
/// Images built by BuildKit from a Dockerfile and normalized by the pipeline.
pub const BUILD_TYPE_BUILDKIT: &str = "https://stella-ops.org/release-pipeline/buildkit/v1";
pub const BUILDER_ID: &str = "https://stella-ops.org/release-pipeline/cargo-xtask";

#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub kind: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: serde_json::Value,
    pub internal_parameters: serde_json::Value,
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceDescriptor {
    pub uri: String,
    pub digest: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: RunMetadata,
}

#[derive(Debug, Clone, Serialize)]
pub struct Builder {
    pub id: String,
    pub version: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunMetadata {
    pub invocation_id: String,
    pub started_on: String,
    pub finished_on: String,
}

/// When the release ran (wall clock), its invocation id, and what ran it.
#[derive(Debug, Clone)]
pub struct RunTimes {
    pub invocation_id: String,
    pub started: String,
    pub finished: String,
    pub builder: Builder,
}

impl Builder {
    /// What runs this release, from its environment (`env` reads a variable): in GitHub
    /// Actions, the workflow file at its ref (`builder.id`), with the workflow's commit, the
    /// runner's environment and image, the job's container image (`STELLAOPS_BUILDER_IMAGE`,
    /// which the workflow sets to its digest-pinned reference), the Debian snapshot and the
    /// checksum-pinned toolchain installer in `builder.version`; elsewhere `cargo xtask` itself. `xtask` is the pipeline's version.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Builder {
        let mut version = BTreeMap::from([("xtask".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]);
        let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
        if let Some(image) = non_empty("STELLAOPS_BUILDER_IMAGE") {
            version.insert("container".to_owned(), image);
        }
        // The pinned release environment of the workflows (.github/workflows: the Debian
        // snapshot its packages come from, and the rustup-init checked by sha256).
        if let Some(snapshot) = non_empty("STELLAOPS_DEBIAN_SNAPSHOT") {
            version.insert("debianSnapshot".to_owned(), snapshot);
        }
        if let (Some(v), Some(sha)) = (non_empty("STELLAOPS_RUSTUP_VERSION"), non_empty("STELLAOPS_RUSTUP_SHA256")) {
            version.insert("rustupInit".to_owned(), format!("{v} sha256:{sha}"));
        }
        match (env("GITHUB_ACTIONS").as_deref(), non_empty("GITHUB_WORKFLOW_REF")) {
            (Some("true"), Some(workflow_ref)) => {
                let server = non_empty("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".to_owned());
                for (key, var) in [
                    ("workflowSha", "GITHUB_WORKFLOW_SHA"),
                    ("runnerEnvironment", "RUNNER_ENVIRONMENT"),
                    ("runnerImage", "ImageOS"),
                    ("runnerImageVersion", "ImageVersion"),
                ] {
                    if let Some(v) = non_empty(var) {
                        version.insert(key.to_owned(), v);
                    }
                }
                Builder { id: format!("{server}/{workflow_ref}"), version }
            }
            _ => Builder { id: BUILDER_ID.to_owned(), version },
        }
    }

    /// The invocation of a GitHub Actions run (`<server>/<repo>/actions/runs/<id>/attempts/<n>`),
    /// when this is one.
    pub fn github_invocation(env: impl Fn(&str) -> Option<String>) -> Option<String> {
        if env("GITHUB_ACTIONS").as_deref() != Some("true") {
            return None;
        }
        let server = env("GITHUB_SERVER_URL").filter(|v| !v.is_empty()).unwrap_or_else(|| "https://github.com".to_owned());
        let (repo, run) = (env("GITHUB_REPOSITORY")?, env("GITHUB_RUN_ID")?);
        let attempt = env("GITHUB_RUN_ATTEMPT").unwrap_or_else(|| "1".to_owned());
        Some(format!("{server}/{repo}/actions/runs/{run}/attempts/{attempt}"))
    }
}

fn sha(hex: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_owned(), hex.to_owned())])
}

/// The statement of one image.
pub fn statement(
    plan: &Plan,
    component: &PlannedComponent,
    image: &BuiltImage,
    index: &Digest,
    toolchain: &str,
    times: &RunTimes,
) -> Result<Statement, String> {
    let known = &image.known;
    let base_ref = component.images.iter().find(|i| i.platform == image.platform).map(|i| i.base.as_str()).ok_or_else(|| {
        format!("the plan of `{}` has no image for {}, so its base image cannot be named", component.name, image.platform)
    })?;
    // SLSA's git form: `git+<the repository's canonical URL>@<commit>` (never a local path).
    let mut deps = vec![ResourceDescriptor {
        uri: format!("git+{}@{}", plan.source.url.url, plan.source.commit),
        digest: BTreeMap::from([("gitCommit".to_owned(), plan.source.commit.clone())]),
        name: plan.source.tag.clone(),
    }];
    deps.push(ResourceDescriptor {
        uri: format!("oci://stellaops-base/{}@{}", base_ref, image.base),
        digest: sha(image.base.hex()),
        name: Some("base image".to_owned()),
    });
    // Bases only a build stage stood on (`recipe.build-bases`): inputs of the build, not
    // layers of the image.
    for b in image.buildkit.iter().flat_map(|bk| bk.build_bases()) {
        deps.push(ResourceDescriptor {
            uri: format!("oci://stellaops-base/{}@{}", b.name, b.digest),
            digest: sha(b.digest.hex()),
            name: Some("build base image".to_owned()),
        });
    }
    let distro = known.base_suite.as_deref().and_then(crate::stages::evidence::sbom::generate::debian_distro);
    // A package without a known .deb digest is not a resolved dependency: it is left out.
    for (p, deb_sha256) in known.base_packages.iter().filter_map(|p| p.deb_sha256.as_deref().map(|d| (p, d))) {
        deps.push(ResourceDescriptor {
            uri: crate::stages::evidence::sbom::locks::Ecosystem::Deb.purl(&p.name, &p.version, Some(&p.arch), distro),
            digest: sha(deb_sha256),
            name: Some(format!("{}.deb", p.name)),
        });
    }
    // The compiler of `recipe.go`: its pinned packages (it ran on the build machine).
    for g in image.go.iter() {
        for t in &g.toolchain_packages {
            deps.push(ResourceDescriptor {
                uri: crate::stages::evidence::sbom::locks::Ecosystem::Deb.purl(&t.name, &t.version, Some(&t.arch), distro),
                digest: sha(&t.sha256),
                name: Some(format!("toolchain `{}`: {}.deb", g.toolchain, t.name)),
            });
        }
    }
    for lf in &image.lock_files {
        deps.push(ResourceDescriptor {
            uri: format!("file:{}/{}", component.name, lf.path),
            digest: sha(&lf.sha256),
            name: Some("lock file".to_owned()),
        });
    }
    deps.push(ResourceDescriptor {
        uri: format!("rust-toolchain:{toolchain}"),
        digest: sha(Digest::of(toolchain.as_bytes()).hex()),
        name: Some("toolchain".to_owned()),
    });
    let (source_kind, source_ref) = match &component.source {
        crate::stages::plan::PlannedSource::Path { path, commit } => ("path", format!("{path}@{commit}")),
        crate::stages::plan::PlannedSource::Git { url, commit, subdir } => ("git", format!("{url}@{commit}#{subdir}")),
    };
    Ok(Statement {
        kind: STATEMENT_TYPE.to_owned(),
        subject: vec![
            Subject { name: format!("{}@{}", component.repository, image.manifest.digest), digest: sha(image.manifest.digest.hex()) },
            Subject { name: format!("{}:{}", component.repository, component.version), digest: sha(index.hex()) },
        ],
        predicate_type: PREDICATE_TYPE.to_owned(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: match image.buildkit {
                    Some(_) => BUILD_TYPE_BUILDKIT,
                    None => BUILD_TYPE,
                }
                .to_owned(),
                external_parameters: serde_json::json!({
                    "channel": plan.channel.as_str(),
                    "version": plan.version.to_string(),
                    "component": component.name,
                    "componentVersion": component.version,
                    "platform": image.platform.as_str(),
                    "source": { "kind": source_kind, "ref": source_ref, "tag": plan.source.tag },
                }),
                internal_parameters: {
                    let mut p = serde_json::json!({
                        // The backend that built this image (with `--backend buildkit`,
                        // components without a Dockerfile are still built daemonless).
                        "builder": if image.buildkit.is_some() { "buildkit" } else { "daemonless" },
                        "sourceDateEpoch": component.stamp.epoch,
                        "compressor": plan.compressor,
                        "recipe": component.recipe,
                    });
                    // BuildKit: endpoint, exporter, network, build arguments (secrets redacted).
                    if let Some(bk) = &image.buildkit {
                        p["buildkit"] = serde_json::json!(bk);
                    }
                    // `recipe.go`: toolchain, Go version, flags, modules with their go.sum hashes.
                    if let Some(g) = &image.go {
                        p["go"] = serde_json::json!(g);
                    }
                    p
                },
                resolved_dependencies: deps,
            },
            run_details: RunDetails {
                builder: times.builder.clone(),
                metadata: RunMetadata {
                    invocation_id: times.invocation_id.clone(),
                    started_on: times.started.clone(),
                    finished_on: times.finished.clone(),
                },
            },
        },
    })
}

#[cfg(test)]
mod builder_tests {
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_builder_names_the_workflow_its_commit_and_environment_in_github_actions_and_xtask_elsewhere() {
        let gh = [
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_WORKFLOW_REF", "stella-ops/release/.github/workflows/release.yml@refs/tags/v2.4.1"),
            ("GITHUB_WORKFLOW_SHA", "0123456789abcdef0123456789abcdef01234567"),
            ("GITHUB_REPOSITORY", "stella-ops/release"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("RUNNER_ENVIRONMENT", "github-hosted"),
            ("ImageOS", "ubuntu24"),
            ("STELLAOPS_BUILDER_IMAGE", "debian:12@sha256:8a8cd02c5912770b4980228a54d4aff9e4f986f1eb2525d2d371dec5232cefcc"),
            ("STELLAOPS_DEBIAN_SNAPSHOT", "20261115T000000Z"),
            ("STELLAOPS_RUSTUP_VERSION", "1.29.0"),
            ("STELLAOPS_RUSTUP_SHA256", "4acc9acc76d5079515b46346a485974457b5a79893cfb01112423c89aeb5aa10"),
        ];
        let b = Builder::from_env(env_of(&gh));
        assert_eq!(b.id, "https://github.com/stella-ops/release/.github/workflows/release.yml@refs/tags/v2.4.1");
        assert_eq!(b.version["workflowSha"], "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(b.version["runnerEnvironment"], "github-hosted");
        assert_eq!(b.version["runnerImage"], "ubuntu24");
        assert_eq!(b.version["container"], "debian:12@sha256:8a8cd02c5912770b4980228a54d4aff9e4f986f1eb2525d2d371dec5232cefcc");
        assert_eq!(b.version["debianSnapshot"], "20261115T000000Z");
        assert_eq!(b.version["rustupInit"], "1.29.0 sha256:4acc9acc76d5079515b46346a485974457b5a79893cfb01112423c89aeb5aa10");
        assert_eq!(b.version["xtask"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            Builder::github_invocation(env_of(&gh)).as_deref(),
            Some("https://github.com/stella-ops/release/actions/runs/42/attempts/2")
        );
        let local = Builder::from_env(env_of(&[]));
        assert_eq!(local.id, BUILDER_ID);
        assert_eq!(local.version.keys().collect::<Vec<_>>(), ["xtask"]);
        assert_eq!(Builder::github_invocation(env_of(&[])), None);
        // Outside GitHub Actions, a stray GITHUB_WORKFLOW_REF names nothing.
        assert_eq!(Builder::from_env(env_of(&[("GITHUB_WORKFLOW_REF", "x/y@z")])).id, BUILDER_ID);
    }
}
