//! Deployment templates: the repository's `templates/` and the release's image digests in, a
//! Helm chart `.tgz` and a compose file out, every image pinned by digest (spec §3.1).
//!
//! Sources (written by hand, in the repository):
//! - `templates/helm/<chart>/`: `Chart.yaml`, `values.yaml`, `templates/*.yaml`;
//! - `templates/compose/docker-compose.yml` and `templates/compose/.env.template`.
//!
//! Placeholders, replaced in every source file (chosen so that they collide neither with Helm's
//! `{{ ... }}` nor with compose's `${...}`, which pass through untouched):
//! - `@@image:<component>@@` → `<repository>@sha256:<hex>`, the component's index digest;
//! - `@@version@@` → the release version; `@@channel@@` → the channel.
//!
//! Closed world: a placeholder naming a component that is not in the release, an unknown
//! placeholder, or any `image:` line in the rendered output whose value is not one of the
//! release's `repository@digest` references (a tag, a foreign image, a Helm expression) is
//! refused, naming file and line. Lines that are YAML comments are not checked. Every problem
//! is collected before failing once.
//!
//! Outputs, written atomically under `out`:
//! - `charts/<name>-<version>.tgz`: the chart as `helm package` lays it out (entries under
//!   `<name>/`), packed by [`LayerWriter`]: sorted entries, mtime = epoch, uid/gid 0, no owner
//!   names, modes 0644/0755, gzip header fixed — same inputs, same bytes;
//! - `compose/docker-compose.yml` and `compose/.env.template`.
//!
//! The chart and compose digests go into release.yaml (spec §6.1).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use oci::layer::LayerWriter;
use oci::write_atomic;
use schema::model::{Channel, Digest};

/// Where the sources live, relative to the repository root.
pub const HELM_DIR: &str = "templates/helm";
pub const CHART: &str = "platform";
pub const COMPOSE_DIR: &str = "templates/compose";
pub const COMPOSE_FILE: &str = "docker-compose.yml";
pub const ENV_TEMPLATE: &str = ".env.template";

/// One image of the release, as templates reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateImage {
    /// Component name, as in `@@image:<component>@@`.
    pub component: String,
    /// `registry/path` without tag or digest.
    pub repository: String,
    /// The component's multi-arch index digest.
    pub digest: Digest,
}

impl TemplateImage {
    /// `repository@sha256:...`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

/// What [`render`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub chart_name: String,
    pub chart_version: String,
    /// `<out>/charts/<name>-<version>.tgz`.
    pub chart: PathBuf,
    pub chart_digest: Digest,
    /// `<out>/compose/docker-compose.yml`.
    pub compose: PathBuf,
    pub compose_digest: Digest,
    /// `<out>/compose/.env.template`.
    pub env_template: PathBuf,
}

/// One refused line of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Relative to the repository root.
    pub file: PathBuf,
    pub line: usize,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// `@@image:<component>@@` for a component the release does not have.
    UnknownComponent(String),
    /// `@@...@@` that is not a placeholder.
    UnknownPlaceholder(String),
    /// An `image:` value that is not one of the release's pinned references.
    ForeignImage(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = format!("`{}:{}`", self.file.display(), self.line);
        match &self.kind {
            ProblemKind::UnknownComponent(c) => {
                write!(f, "{at}: `@@image:{c}@@` names no image of this release")
            }
            ProblemKind::UnknownPlaceholder(p) => {
                write!(f, "{at}: `{p}` is not a placeholder")
            }
            ProblemKind::ForeignImage(i) => write!(f, "{at}: image `{i}` is not one of this release's images pinned by digest"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("templates refused (closed world, spec §3.1 pull by digest only):\n{}\n  hint: reference the release's own images only, as `@@image:<component>@@` (components: {known}); placeholders are `@@image:<component>@@`, `@@version@@`, `@@channel@@`", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Refused {
        problems: Vec<Problem>,
        /// The release's components, for the hint.
        known: String,
    },
    #[error("`{file}`: {reason}\n  hint: {hint}")]
    Invalid { file: PathBuf, reason: String, hint: &'static str },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl TemplateError {
    pub fn exit_code(&self) -> schema::exit::Code {
        match self {
            TemplateError::Refused { .. } | TemplateError::Invalid { .. } => schema::exit::REJECTED,
            TemplateError::Io { .. } => schema::exit::ENVIRONMENT,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> TemplateError + '_ {
    move |source| TemplateError::Io { path: path.to_owned(), source }
}

/// Renders the chart and the compose file of `root/templates/` for this release into `out`.
pub fn render(
    root: &Path,
    version: &str,
    channel: Channel,
    epoch: i64,
    images: &[TemplateImage],
    out: &Path,
) -> Result<Rendered, TemplateError> {
    let ctx = Ctx::new(version, channel, images);
    let mut problems = Vec::new();

    // 1. Read and render every source file, collecting every problem.
    let chart_src = root.join(HELM_DIR).join(CHART);
    let mut chart_files = BTreeMap::new();
    for (rel, text) in read_tree(root, &chart_src)? {
        let entry = format!("{CHART}/{}", rel.strip_prefix(&chart_src).unwrap_or(&rel).display());
        chart_files.insert(entry, ctx.render(root, &rel, &text, &mut problems));
    }
    let compose_src = root.join(COMPOSE_DIR).join(COMPOSE_FILE);
    let env_src = root.join(COMPOSE_DIR).join(ENV_TEMPLATE);
    let compose = ctx.render(root, &compose_src, &read(root, &compose_src)?, &mut problems);
    let env = ctx.render(root, &env_src, &read(root, &env_src)?, &mut problems);

    // 2. Refuse before writing anything.
    if !problems.is_empty() {
        return Err(TemplateError::Refused { problems, known: ctx.known() });
    }
    let chart_yaml = chart_src.join("Chart.yaml");
    let meta = chart_meta(root, &chart_yaml, chart_files.get(&format!("{CHART}/Chart.yaml")))?;
    if meta.name != CHART || meta.version != version {
        return Err(TemplateError::Invalid {
            file: rel_to(root, &chart_yaml),
            reason: format!("renders as chart `{}` version `{}`, expected `{CHART}` version `{version}`", meta.name, meta.version),
            hint: "keep `name: platform` and `version: \"@@version@@\"` in Chart.yaml",
        });
    }

    // 3. Pack the chart deterministically (entries in sorted order, parents first).
    let mut tgz = LayerWriter::new(Vec::new(), epoch);
    for (entry, text) in &chart_files {
        tgz.add_file(entry, 0o644, text.as_bytes()).map_err(io_at(&chart_src))?;
    }
    let (tgz, _) = tgz.finish().map_err(io_at(&chart_src))?;

    // 4. Write atomically.
    let charts_dir = out.join("charts");
    let compose_dir = out.join("compose");
    for d in [&charts_dir, &compose_dir] {
        std::fs::create_dir_all(d).map_err(io_at(d))?;
    }
    let chart = charts_dir.join(format!("{}-{}.tgz", meta.name, meta.version));
    let compose_out = compose_dir.join(COMPOSE_FILE);
    let env_out = compose_dir.join(ENV_TEMPLATE);
    write_atomic(&chart, &tgz).map_err(io_at(&chart))?;
    write_atomic(&compose_out, compose.as_bytes()).map_err(io_at(&compose_out))?;
    write_atomic(&env_out, env.as_bytes()).map_err(io_at(&env_out))?;
    Ok(Rendered {
        chart_name: meta.name,
        chart_version: meta.version,
        chart,
        chart_digest: Digest::of(&tgz),
        compose: compose_out,
        compose_digest: Digest::of(compose.as_bytes()),
        env_template: env_out,
    })
}

struct Ctx<'a> {
    version: &'a str,
    channel: Channel,
    /// Component → `repository@digest`.
    images: BTreeMap<&'a str, String>,
}

impl<'a> Ctx<'a> {
    fn new(version: &'a str, channel: Channel, images: &'a [TemplateImage]) -> Self {
        let images = images.iter().map(|i| (i.component.as_str(), i.reference())).collect();
        Ctx { version, channel, images }
    }

    fn known(&self) -> String {
        let names: Vec<_> = self.images.keys().map(|c| format!("`{c}`")).collect();
        names.join(", ")
    }

    /// Renders one file; problems found on its lines are pushed to `problems`.
    fn render(&self, root: &Path, file: &Path, text: &str, problems: &mut Vec<Problem>) -> String {
        let rel = rel_to(root, file);
        let mut out = String::with_capacity(text.len());
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let mut problem = |kind| problems.push(Problem { file: rel.clone(), line: i + 1, kind });
            let rendered = self.line(line, &mut problem);
            if let Some(value) = image_value(&rendered) {
                if !self.images.values().any(|r| *r == value) && !value.contains("@@") {
                    problem(ProblemKind::ForeignImage(value));
                }
            }
            out.push_str(&rendered);
        }
        out
    }

    /// Replaces the placeholders of one line.
    fn line(&self, line: &str, problem: &mut impl FnMut(ProblemKind)) -> String {
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(start) = rest.find("@@") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("@@") else {
                problem(ProblemKind::UnknownPlaceholder(rest[start..].trim_end().to_owned()));
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &after[..end];
            match name {
                "version" => out.push_str(self.version),
                "channel" => out.push_str(self.channel.as_str()),
                _ => match name.strip_prefix("image:") {
                    Some(c) => match self.images.get(c) {
                        Some(r) => out.push_str(r),
                        None => {
                            problem(ProblemKind::UnknownComponent(c.to_owned()));
                            out.push_str(&rest[start..start + 4 + end]);
                        }
                    },
                    None => {
                        problem(ProblemKind::UnknownPlaceholder(format!("@@{name}@@")));
                        out.push_str(&rest[start..start + 4 + end]);
                    }
                },
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }
}

/// The value of an `image:` key on this line (`image: x`, `- image: "x"`), unquoted and
/// without a trailing comment; `None` for other lines and comments.
fn image_value(line: &str) -> Option<String> {
    let t = line.trim_start();
    let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
    let t = t.strip_prefix("image:").or_else(|| t.strip_prefix("\"image\":")).or_else(|| t.strip_prefix("'image':"))?;
    let v = t.trim();
    let v = match v.find(" #") {
        Some(i) if !v.starts_with(['"', '\'']) => v[..i].trim_end(),
        _ => v,
    };
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v);
    Some(v.to_owned())
}

#[derive(serde::Deserialize)]
struct ChartMeta {
    name: String,
    version: String,
}

fn chart_meta(root: &Path, file: &Path, text: Option<&String>) -> Result<ChartMeta, TemplateError> {
    let invalid = |reason: String| TemplateError::Invalid {
        file: rel_to(root, file),
        reason,
        hint: "a Helm chart needs a Chart.yaml with `name` and `version`",
    };
    let text = text.ok_or_else(|| invalid("missing".to_owned()))?;
    serde_norway::from_str(text).map_err(|e| invalid(format!("not a chart: {e}")))
}

fn rel_to(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root).unwrap_or(p).to_owned()
}

fn read(root: &Path, path: &Path) -> Result<String, TemplateError> {
    let bytes = std::fs::read(path).map_err(io_at(path))?;
    String::from_utf8(bytes).map_err(|_| TemplateError::Invalid {
        file: rel_to(root, path),
        reason: "not UTF-8".to_owned(),
        hint: "templates are text: save the file as UTF-8",
    })
}

/// Every regular file under `dir` (sorted walk) with its text. Symlinks and other special
/// files are refused: a chart is plain files.
fn read_tree(root: &Path, dir: &Path) -> Result<Vec<(PathBuf, String)>, TemplateError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_owned();
            TemplateError::Io { path, source: e.into() }
        })?;
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        if !ft.is_file() || entry.path().to_str().is_none() {
            return Err(TemplateError::Invalid {
                file: rel_to(root, entry.path()),
                reason: "not a regular file with a UTF-8 name".to_owned(),
                hint: "a chart holds plain files only: replace links by copies",
            });
        }
        files.push((entry.path().to_owned(), read(root, entry.path())?));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::io::Read;

    const EPOCH: i64 = 1_813_492_800;

    fn image(component: &str, byte: u8) -> TemplateImage {
        TemplateImage {
            component: component.to_owned(),
            repository: format!("registry.stella-ops.org/stellaops/{component}"),
            digest: Digest::of(&[byte]),
        }
    }

    /// A minimal repository: a chart with two components and a compose file.
    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("templates/helm/platform/Chart.yaml", "apiVersion: v2\nname: platform\nversion: \"@@version@@\"\nappVersion: \"@@version@@\"\n");
        w("templates/helm/platform/values.yaml", "global:\n  channel: \"@@channel@@\"\n");
        w(
            "templates/helm/platform/templates/authority.yaml",
            "spec:\n  containers:\n    - name: authority\n      image: \"@@image:authority@@\"\n",
        );
        w("templates/helm/platform/templates/signer.yaml", "spec:\n  containers:\n    - image: @@image:signer@@\n      name: signer\n");
        w(
            "templates/compose/docker-compose.yml",
            "services:\n  authority:\n    image: \"@@image:authority@@\"\n  signer:\n    # image: mongo:7 is a comment\n    image: @@image:signer@@ # pinned\n",
        );
        w("templates/compose/.env.template", "CHANNEL=@@channel@@\n");
        dir
    }

    fn images() -> Vec<TemplateImage> {
        vec![image("authority", 1), image("signer", 2)]
    }

    fn render_into(root: &Path, out: &Path) -> Result<Rendered, TemplateError> {
        render(root, "2.4.1", Channel::Stable, EPOCH, &images(), out)
    }

    fn refused(err: TemplateError) -> String {
        assert_eq!(err.exit_code().status(), 1, "{err}");
        assert!(matches!(err, TemplateError::Refused { .. }), "{err}");
        err.to_string()
    }

    fn tgz_entries(path: &Path) -> Vec<(String, u64, u64, u64, String)> {
        let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap());
        let mut ar = tar::Archive::new(gz);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut text = String::new();
                e.read_to_string(&mut text).unwrap();
                (e.path().unwrap().to_str().unwrap().to_owned(), h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap(), text)
            })
            .collect()
    }

    #[test]
    fn templates_pin_every_image_by_digest() {
        let root = repo();
        let out = tempfile::tempdir().unwrap();
        let r = render_into(root.path(), out.path()).unwrap();
        assert_eq!(r.chart, out.path().join("charts/platform-2.4.1.tgz"));
        assert_eq!((r.chart_name.as_str(), r.chart_version.as_str()), ("platform", "2.4.1"));
        let compose = std::fs::read_to_string(&r.compose).unwrap();
        assert_eq!(r.compose_digest, Digest::of(compose.as_bytes()));
        let a = images()[0].reference();
        let s = images()[1].reference();
        assert!(compose.contains(&format!("image: \"{a}\"\n")), "{compose}");
        assert!(compose.contains(&format!("image: {s} # pinned\n")), "{compose}");
        assert!(!compose.contains("@@"));
        assert_eq!(std::fs::read_to_string(&r.env_template).unwrap(), "CHANNEL=stable\n");
        let files: BTreeMap<_, _> = tgz_entries(&r.chart).into_iter().map(|(p, _, _, _, t)| (p, t)).collect();
        assert!(files["platform/Chart.yaml"].contains("version: \"2.4.1\""));
        assert!(files["platform/values.yaml"].contains("channel: \"stable\""));
        assert!(files["platform/templates/authority.yaml"].contains(&a));
        assert!(files["platform/templates/signer.yaml"].contains(&format!("image: {s}\n")));
        assert_eq!(r.chart_digest, Digest::of(&std::fs::read(&r.chart).unwrap()));
    }

    #[test]
    fn templates_refuse_unknown_component_naming_file_and_line() {
        let root = repo();
        std::fs::write(
            root.path().join("templates/compose/docker-compose.yml"),
            "services:\n  x:\n    image: \"@@image:authority@@\"\n  y:\n    image: \"@@image:nope@@\"\n",
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        let msg = refused(render_into(root.path(), out.path()).unwrap_err());
        assert!(msg.contains("`templates/compose/docker-compose.yml:5`: `@@image:nope@@` names no image"), "{msg}");
        assert!(msg.contains("hint:"), "{msg}");
        assert!(!out.path().join("charts").exists(), "nothing written on refusal");
    }

    #[test]
    fn templates_refuse_tag_only_and_foreign_images_naming_file_and_line() {
        let root = repo();
        std::fs::write(
            root.path().join("templates/helm/platform/templates/mongo.yaml"),
            "spec:\n  containers:\n    - image: mongo:7\n    - image: \"{{ .Values.image }}\"\n",
        )
        .unwrap();
        std::fs::write(root.path().join("templates/compose/.env.template"), "X=@@bogus@@\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let msg = refused(render_into(root.path(), out.path()).unwrap_err());
        for needle in [
            "`templates/helm/platform/templates/mongo.yaml:3`: image `mongo:7` is not one of this release's images",
            "`templates/helm/platform/templates/mongo.yaml:4`: image `{{ .Values.image }}`",
            "`templates/compose/.env.template:1`: `@@bogus@@` is not a placeholder",
        ] {
            assert!(msg.contains(needle), "lacks {needle}:\n{msg}");
        }
        // A digest of another image under a release repository is foreign too.
        let root = repo();
        let other = TemplateImage { digest: Digest::of(b"other"), ..image("authority", 1) };
        std::fs::write(
            root.path().join("templates/compose/docker-compose.yml"),
            format!("services:\n  a:\n    image: {}\n", other.reference()),
        )
        .unwrap();
        let msg = refused(render_into(root.path(), out.path()).unwrap_err());
        assert!(msg.contains("docker-compose.yml:3`: image `registry.stella-ops.org/stellaops/authority@sha256:"), "{msg}");
    }

    #[test]
    fn templates_chart_tgz_is_byte_identical_sorted_and_dated_epoch() {
        let root = repo();
        let (o1, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let r1 = render_into(root.path(), o1.path()).unwrap();
        let r2 = render_into(root.path(), o2.path()).unwrap();
        assert_eq!(std::fs::read(&r1.chart).unwrap(), std::fs::read(&r2.chart).unwrap());
        assert_eq!(r1.chart_digest, r2.chart_digest);
        let entries = tgz_entries(&r1.chart);
        let names: Vec<_> = entries.iter().map(|e| e.0.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.iter().all(|n| n.starts_with("platform/")), "{names:?}");
        for (name, mtime, uid, gid, _) in &entries {
            assert_eq!((*mtime, *uid, *gid), (EPOCH as u64, 0, 0), "{name}");
        }
        // Another epoch gives other bytes: the epoch is really in the archive.
        let o3 = tempfile::tempdir().unwrap();
        let r3 = render(root.path(), "2.4.1", Channel::Stable, EPOCH + 1, &images(), o3.path()).unwrap();
        assert_ne!(r1.chart_digest, r3.chart_digest);
    }
}
