//! OCI image-spec 1.1 types and a content-addressed OCI image layout on disk.
//!
//! Our own serde types rather than oci-spec's: oci-spec keeps annotations and labels in
//! `HashMap`s, so its JSON changes order between runs and so would every digest (see
//! shared/CRATES.md). Field order here is declaration order; maps are `BTreeMap`.
//!
//! Blobs are written to a temporary file inside `blobs/sha256/` and renamed to their digest
//! when complete, so a blob file is either absent or whole.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layer::HashingWriter;
use schema::model::{Digest, Platform};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A plain descriptor: media type, digest and size, nothing else.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor { media_type: media_type.to_owned(), digest, size, platform: None, artifact_type: None, annotations: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSpec {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}
impl From<Platform> for PlatformSpec {
    fn from(p: Platform) -> Self {
        PlatformSpec {
            architecture: p.arch().to_owned(),
            os: p.os().to_owned(),
            variant: matches!(p, Platform::LinuxArm64).then(|| "v8".to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Image configuration (image-spec `config.json`), with Docker's `Healthcheck` extension,
/// which Docker reads from the image and OCI runtimes ignore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub created: String,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(rename = "Env", default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(rename = "Healthcheck", default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    // Fields below are absent from every config that does not set them (daemonless images,
    // bases), so those configs keep their bytes; Dockerfile images carry them (image-spec
    // `StopSignal`, `Volumes`; Docker's `Shell`).
    #[serde(rename = "StopSignal", default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(rename = "Volumes", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "Shell", default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

/// Docker's `HealthConfig`, in its field order; a zero field is left out as Docker leaves it out
/// (`HEALTHCHECK` without options: the engine's defaults apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Nanoseconds.
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub created: String,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}`: not valid {what}: {source}")]
    Json {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{path}`: blob `{expected}` hashes to `{actual}`; the layout is corrupt")]
    DigestMismatch { path: PathBuf, expected: Digest, actual: Digest },
    #[error("`{0}`: not an OCI image layout (no `oci-layout` file)")]
    NotALayout(PathBuf),
    #[error("`{layout}`: no image named `{name}` in `index.json`")]
    NoSuchRef { layout: PathBuf, name: String },
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Creates (or reuses) a layout at `root`.
    pub fn create(root: &Path) -> Result<Layout, LayoutError> {
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|source| LayoutError::Io { path: blobs.clone(), source })?;
        let marker = root.join("oci-layout");
        fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(|source| LayoutError::Io { path: marker, source })?;
        Ok(Layout { root: root.to_owned() })
    }

    /// Opens an existing layout.
    pub fn open(root: &Path) -> Result<Layout, LayoutError> {
        if !root.join("oci-layout").is_file() {
            return Err(LayoutError::NotALayout(root.to_owned()));
        }
        Ok(Layout { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Starts a blob: write to it, then [`BlobWriter::commit`]. Dropped uncommitted, it leaves
    /// nothing behind.
    pub fn blob_writer(&self) -> Result<BlobWriter, LayoutError> {
        let dir = self.root.join("blobs/sha256");
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|source| LayoutError::Io { path: dir.clone(), source })?;
        let file = tmp.reopen().map_err(|source| LayoutError::Io { path: tmp.path().to_owned(), source })?;
        Ok(BlobWriter { layout: self.clone(), tmp, w: HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file)) })
    }

    /// Streams a blob in through `write`, hashing as it goes; the blob lands under its digest.
    pub fn put_blob_with<T>(
        &self,
        write: impl FnOnce(&mut HashingWriter<io::BufWriter<fs::File>>) -> io::Result<T>,
    ) -> Result<(Digest, u64, T), LayoutError> {
        let mut bw = self.blob_writer()?;
        let out = write(&mut bw.w).map_err(|source| LayoutError::Io { path: bw.tmp.path().to_owned(), source })?;
        let (digest, size) = bw.commit(None)?;
        Ok((digest, size, out))
    }

    /// Stores `bytes` as a blob and returns its descriptor.
    pub fn put_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, LayoutError> {
        let (digest, size, ()) = self.put_blob_with(|w| w.write_all(bytes))?;
        Ok(Descriptor::new(media_type, digest, size))
    }

    /// Stores a JSON document (compact serde_json, field order as declared).
    pub fn put_json<T: Serialize>(&self, media_type: &str, value: &T) -> Result<Descriptor, LayoutError> {
        let bytes = serde_json::to_vec(value).map_err(|source| LayoutError::Json { path: self.root.clone(), what: "JSON", source })?;
        self.put_blob(media_type, &bytes)
    }

    /// Reads a small blob (a manifest, index or config) and checks its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|source| LayoutError::Io { path: path.clone(), source })?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(LayoutError::DigestMismatch { path, expected: digest.clone(), actual });
        }
        Ok(bytes)
    }

    pub fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &Digest, what: &'static str) -> Result<T, LayoutError> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json { path: self.blob_path(digest), what, source })
    }

    /// Writes `index.json` atomically.
    pub fn write_index(&self, index: &Index) -> Result<(), LayoutError> {
        let path = self.root.join("index.json");
        let bytes =
            serde_json::to_vec_pretty(index).map_err(|source| LayoutError::Json { path: path.clone(), what: "an index", source })?;
        write_atomic(&path, &bytes).map_err(|source| LayoutError::Io { path, source })
    }

    pub fn index(&self) -> Result<Index, LayoutError> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(|source| LayoutError::Io { path: path.clone(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json { path, what: "an image index", source })
    }

    /// The descriptor in `index.json` whose ref name is `name`.
    pub fn find_ref(&self, name: &str) -> Result<Descriptor, LayoutError> {
        self.index()?
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(name))
            .ok_or_else(|| LayoutError::NoSuchRef { layout: self.root.clone(), name: name.to_owned() })
    }
}

/// A blob being written into a layout.
#[derive(Debug)]
pub struct BlobWriter {
    layout: Layout,
    tmp: tempfile::NamedTempFile,
    w: HashingWriter<io::BufWriter<fs::File>>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl BlobWriter {
    /// Moves the blob under its digest. With `expect`, a blob of another digest is discarded
    /// and refused.
    pub fn commit(self, expect: Option<&Digest>) -> Result<(Digest, u64), LayoutError> {
        let BlobWriter { layout, tmp, w } = self;
        let (mut buf, digest, size) = w.finish();
        buf.flush().map_err(|source| LayoutError::Io { path: tmp.path().to_owned(), source })?;
        if let Some(e) = expect {
            if e != &digest {
                return Err(LayoutError::DigestMismatch { path: tmp.path().to_owned(), expected: e.clone(), actual: digest });
            }
        }
        let dest = layout.blob_path(&digest);
        tmp.persist(&dest).map_err(|e| LayoutError::Io { path: dest.clone(), source: e.error })?;
        set_readable(&dest).map_err(|source| LayoutError::Io { path: dest, source })?;
        Ok((digest, size))
    }
}

/// Blobs and small files are readable by everyone, whatever the umask (tempfile creates 0600).
fn set_readable(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

/// Writes `path` through a temporary file in the same directory and renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    set_readable(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_without_the_docker_extensions_keep_their_bytes_and_those_with_them_carry_them() {
        // As daemonless images (and BuildKit images before issue 13) were written.
        let old = r#"{"User":"","Env":["PATH=/bin"],"Entrypoint":["/x"],"WorkingDir":"/srv","ExposedPorts":{"80/tcp":{}},"Labels":{"a":"b"},"Healthcheck":{"Test":["CMD","/x"],"Interval":5000000000,"Timeout":3000000000,"Retries":3}}"#;
        let c: RunConfig = serde_json::from_str(old).unwrap();
        let want = old.replace(r#""User":"","#, "");
        assert_eq!(serde_json::to_string(&c).unwrap(), want);
        // Docker's: a HEALTHCHECK without options, StopSignal, Volumes, Shell.
        let docker = r#"{"User":"1:1","Healthcheck":{"Test":["CMD-SHELL","true"]},"StopSignal":"SIGTERM","Volumes":{"/data":{}},"Shell":["/bin/sh","-c"]}"#;
        let c: RunConfig = serde_json::from_str(docker).unwrap();
        assert_eq!(c.stop_signal, "SIGTERM");
        assert_eq!(serde_json::to_string(&c).unwrap(), docker);
    }
}
