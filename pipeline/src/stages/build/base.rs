//! Base images, from the pins of `base-images.lock`, into an OCI layout.
//!
//! - `debian`: every `.deb` fetched and checked against its sha256, unpacked in order into a
//!   scratch root, the lock's symlinks and directories added, written as one deterministic
//!   layer (modes kept from the packages, every mtime the base's `epoch`), then a config and
//!   manifest. The manifest's digest must be the one pinned.
//! - `oci-layout`: the pinned manifest read from a local layout; every blob copied and checked.
//!
//! Whatever the source, the result is re-verified against the pin on every use.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::stages::build::debian::{self, DebError, DebSource};
use oci::layer::{LayerError, LayerWriter, Modes};
use oci::{self, Descriptor, ImageConfig, Index, Layout, LayoutError, Manifest};
use schema::files::{Base, BaseSource};
use schema::model::{rfc3339, Digest, Platform};

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("base `{base}` ({platform}): {source}")]
    Deb {
        base: String,
        platform: Platform,
        #[source]
        source: DebError,
    },
    #[error("base `{base}` ({platform}) {what} `{actual}` but `base-images.lock` pins `{expected}`\n  hint: if the change is intended (new packages, new pipeline version, a new image), run `cargo xtask lock` and review the diff")]
    DigestMismatch { base: String, platform: Platform, what: &'static str, expected: Digest, actual: Digest },
    #[error("base `{base}` ({platform}): {source}")]
    Layer {
        base: String,
        platform: Platform,
        #[source]
        source: LayerError,
    },
    #[error("base `{base}` ({platform}): {source}")]
    Layout {
        base: String,
        platform: Platform,
        #[source]
        source: LayoutError,
    },
    #[error("base `{base}` ({platform}): `{path}`: {source}")]
    Io {
        base: String,
        platform: Platform,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("base `{base}` ({platform}): {source}")]
    Registry {
        base: String,
        platform: Platform,
        #[source]
        source: oci::registry::RegistryError,
    },
    #[error("base `{base}` ({platform}): `{path}`: {message}")]
    Archive { base: String, platform: Platform, path: PathBuf, message: String },
    #[error("base `{base}` ({platform}): `{digest}` is {what}")]
    NotAManifest { base: String, platform: Platform, digest: Digest, what: String },
}

/// A base image present in a layout.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub name: String,
    pub platform: Platform,
    /// The pin: digest of the manifest's bytes as stored (never re-serialized).
    pub digest: Digest,
    /// The media type of that manifest (OCI or Docker v2 schema 2), whatever it declares.
    pub media_type: &'static str,
    /// The manifest as the release's images use it: every layer `tar+gzip` (see [`BaseLayer`]).
    pub manifest: Manifest,
    /// Each layer as the base's own manifest names it, and what the release carries for it.
    pub layers: Vec<BaseLayer>,
    pub config: ImageConfig,
    /// The packages the base was assembled from (Debian bases); empty for bases taken whole
    /// from a layout or a registry.
    pub packages: Vec<BasePackage>,
}

/// A layer of a base as its manifest names it. A gzip layer (OCI or Docker) goes into the
/// release's images with the same bytes as `application/vnd.oci.image.layer.v1.tar+gzip`; an
/// uncompressed one is gzipped by the pinned writer, and `gzipped` is that blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseLayer {
    pub media_type: String,
    pub digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gzipped: Option<Digest>,
}

/// A package of a base, as pinned and as its own control file describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BasePackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// sha256 of the `.deb` (the pin), for bases assembled from packages.
    pub deb_sha256: Option<String>,
    /// Debian source package, when it differs from the binary's name.
    pub source: Option<String>,
    /// Names of the packages it depends on (alternatives and versions dropped).
    pub depends: Vec<String>,
    /// Its paths, as dpkg's `.list` has them.
    pub files: Vec<String>,
}

/// Writes dpkg's database for the unpacked packages: `var/lib/dpkg/status` and, per package,
/// `info/<name>.list` and `info/<name>.md5sums` (`<name>:<arch>` for `Multi-Arch: same`), so
/// that the base carries the same package facts as one installed by dpkg.
fn write_dpkg_database(rootfs: &Path, infos: &[(String, debian::DebInfo)]) -> io::Result<()> {
    // Directories made here get 0755 whatever the umask: the layer keeps modes as found.
    use std::os::unix::fs::PermissionsExt;
    let mut dir = rootfs.to_owned();
    for part in ["var", "lib", "dpkg", "info"] {
        dir.push(part);
        if !dir.is_dir() {
            fs::create_dir(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        }
    }
    let info_dir = dir;
    let mut sorted: Vec<&(String, debian::DebInfo)> = infos.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut status = String::new();
    for (name, info) in sorted {
        for (i, line) in info.control.lines().enumerate() {
            status.push_str(line);
            status.push('\n');
            if i == 0 {
                status.push_str("Status: install ok installed\n");
            }
        }
        status.push('\n');
        let arch = info.field("Architecture").unwrap_or("all");
        let key = if info.field("Multi-Arch") == Some("same") { format!("{name}:{arch}") } else { name.clone() };
        fs::write(info_dir.join(format!("{key}.list")), info.paths.join("\n") + "\n")?;
        if let Some(m) = &info.md5sums {
            fs::write(info_dir.join(format!("{key}.md5sums")), m)?;
        }
    }
    fs::write(rootfs.join("var/lib/dpkg/status"), status)?;
    for e in walkdir::WalkDir::new(rootfs.join("var/lib/dpkg")) {
        let e = e.map_err(io::Error::other)?;
        let mode = if e.file_type().is_dir() { 0o755 } else { 0o644 };
        fs::set_permissions(e.path(), fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Options for fetching bases.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub debs: DebSource,
    pub cache: PathBuf,
    /// Repository root, for relative `layout` paths.
    pub root: PathBuf,
}

/// Makes the base `base` for `platform` present in `layout` and checks it against its pin.
pub fn materialize(base: &Base, platform: Platform, fetch: &Fetch, layout: &Layout) -> Result<BaseImage, BaseError> {
    let pin = &base.platforms[&platform];
    let img = resolve(base, platform, fetch, layout)?;
    if img.digest != pin.digest {
        let what = match base.source {
            BaseSource::Debian => "assembles to",
            BaseSource::OciLayout | BaseSource::Registry => "resolves to",
            BaseSource::DockerArchive => "is assembled from its archive as",
        };
        return Err(BaseError::DigestMismatch {
            base: base.name.clone(),
            platform,
            what,
            expected: pin.digest.clone(),
            actual: img.digest,
        });
    }
    Ok(img)
}

/// Makes the base present in `layout` without comparing it with its pin (`cargo xtask lock`
/// records what this gives): a Debian base assembled, a layout's manifest read at the pinned
/// digest, a registry reference pulled (an index reference resolved to the platform's
/// manifest). Every blob is verified against the digest that names it.
pub fn resolve(base: &Base, platform: Platform, fetch: &Fetch, layout: &Layout) -> Result<BaseImage, BaseError> {
    let pin = &base.platforms[&platform];
    Ok(match base.source {
        BaseSource::Debian => assemble_debian(base, platform, fetch, layout)?,
        BaseSource::OciLayout => {
            copy_from_layout(base, platform, &fetch.root.join(pin.layout.as_deref().unwrap_or("")), &pin.digest, layout)?
        }
        BaseSource::Registry => {
            let reference = pin.reference.as_ref().expect("validated by config::load");
            pull_from_registry(base, platform, reference, layout)?
        }
        BaseSource::DockerArchive => from_docker_archive(base, platform, &fetch.root.join(pin.path.as_deref().unwrap_or("")), layout)?,
    })
}

/// A `docker save` tarball (plain or gzipped). Every file is hashed into a scratch layout as
/// it streams. An archive with `index.json` (Engine 25 and later) is an OCI layout: its
/// manifest for the platform is taken as stored, like an `oci-layout` base. An older one has
/// only `manifest.json`: its config (as saved; its sha256 is Docker's image ID) and layer tars
/// (each must hash to its diff_id) become an OCI manifest whose layers are the tars gzipped by
/// the pinned writer, so, like a Debian base, the pin is the digest of what the pipeline
/// assembles, the same on every run.
fn from_docker_archive(base: &Base, platform: Platform, path: &Path, dst: &Layout) -> Result<BaseImage, BaseError> {
    use std::collections::BTreeMap;
    use std::io::Read;
    let archive_err = |message: String| BaseError::Archive { base: base.name.clone(), platform, path: path.to_owned(), message };
    let layout_err = |source| BaseError::Layout { base: base.name.clone(), platform, source };
    let scratch = oci::dirs::Scratch::new("stellaops-docker-archive-").map_err(|e| archive_err(e.to_string()))?;
    let tmp = Layout::create(scratch.path()).map_err(layout_err)?;
    let mut file = fs::File::open(path).map_err(|e| archive_err(e.to_string()))?;
    let mut magic = [0u8; 2];
    let gzipped = file.read(&mut magic).map_err(|e| archive_err(e.to_string()))? == 2 && magic == [0x1f, 0x8b];
    let file = fs::File::open(path).map_err(|e| archive_err(e.to_string()))?;
    let reader: Box<dyn Read> =
        if gzipped { Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file))) } else { Box::new(io::BufReader::new(file)) };
    // Path in the archive -> digest of its content (in `tmp`); symlinks resolved afterwards.
    let mut files: BTreeMap<String, Digest> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut ar = tar::Archive::new(reader);
    for e in ar.entries().map_err(|e| archive_err(format!("not a tar archive: {e}")))? {
        let mut e = e.map_err(|e| archive_err(format!("not a tar archive: {e}")))?;
        let name = e.path().map_err(|e| archive_err(e.to_string()))?.to_string_lossy().trim_start_matches("./").to_owned();
        if name.starts_with('/') || name.split('/').any(|p| p == "..") {
            return Err(archive_err(format!("entry `{name}` leaves the archive")));
        }
        match e.header().entry_type() {
            tar::EntryType::Regular => {
                let (d, _, ()) = tmp.put_blob_with(|w| io::copy(&mut e, w).map(|_| ())).map_err(layout_err)?;
                files.insert(name, d);
            }
            tar::EntryType::Symlink => {
                let target = e.link_name().map_err(|e| archive_err(e.to_string()))?.unwrap_or_default().to_string_lossy().into_owned();
                let dir = Path::new(&name).parent().unwrap_or(Path::new(""));
                let mut parts: Vec<String> = dir.to_string_lossy().split('/').filter(|p| !p.is_empty()).map(str::to_owned).collect();
                for p in target.split('/') {
                    match p {
                        "" | "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p.to_owned()),
                    }
                }
                links.insert(name, parts.join("/"));
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(d) = files.get(&target).cloned() {
            files.insert(name, d);
        }
    }
    let blob = |name: &str| files.get(name).cloned().ok_or_else(|| archive_err(format!("`{name}` is not in the archive")));
    let json = |name: &str| -> Result<serde_json::Value, BaseError> {
        let bytes = tmp.read_blob(&blob(name)?).map_err(layout_err)?;
        serde_json::from_slice(&bytes).map_err(|e| archive_err(format!("`{name}`: {e}")))
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Saved {
        config: String,
        layers: Vec<String>,
    }
    let saved: Vec<Saved> = serde_json::from_value(json("manifest.json")?).map_err(|e| archive_err(format!("`manifest.json`: {e}")))?;
    // The images of the archive for this platform.
    let mut ours = Vec::new();
    for s in &saved {
        let config = read_config(&tmp, &blob(&s.config)?).map_err(layout_err)?;
        if config.architecture == platform.arch() && config.os == platform.os() {
            ours.push((s, config));
        }
    }
    let [(saved, config)] = <[_; 1]>::try_from(ours)
        .map_err(|v| archive_err(format!("holds {} images for {platform} (`manifest.json`); save one image per platform", v.len())))?;
    let config_digest = blob(&saved.config)?;
    if files.contains_key("index.json") {
        // Engine 25+: an OCI layout. The manifest that names this config is the image.
        let index: Index = serde_json::from_value(json("index.json")?).map_err(|e| archive_err(format!("`index.json`: {e}")))?;
        let mut found = None;
        for d in &index.manifests {
            let bytes = tmp.read_blob(&d.digest).map_err(layout_err)?;
            let m = match oci::image::parse(&bytes) {
                Ok(oci::image::Document::Manifest(_, m)) => Some((d.digest.clone(), *m)),
                Ok(oci::image::Document::Index(_, i)) => match oci::image::select_platform(&i, platform) {
                    Ok(p) => {
                        let b = tmp.read_blob(&p.digest).map_err(layout_err)?;
                        serde_json::from_slice::<Manifest>(&b).ok().map(|m| (p.digest, m))
                    }
                    Err(_) => None,
                },
                Err(_) => None,
            };
            if let Some((digest, _)) = m.filter(|(_, m)| m.config.digest == config_digest) {
                found = Some(digest);
            }
        }
        let digest = found.ok_or_else(|| archive_err(format!("`index.json` names no manifest of config `{config_digest}`")))?;
        return copy_from_layout(base, platform, scratch.path(), &digest, dst);
    }
    // Before Engine 25: config and layer tars only.
    if saved.layers.len() != config.rootfs.diff_ids.len() {
        return Err(archive_err(format!(
            "`{}` lists {} diff_ids for {} layers",
            saved.config,
            config.rootfs.diff_ids.len(),
            saved.layers.len()
        )));
    }
    copy_blob(&tmp, dst, &config_digest).map_err(layout_err)?;
    let config_size = fs::metadata(dst.blob_path(&config_digest)).map_err(|e| archive_err(e.to_string()))?.len();
    let mut layers = Vec::new();
    let mut records = Vec::new();
    for (name, diff_id) in saved.layers.iter().zip(&config.rootfs.diff_ids) {
        let tar = blob(name)?;
        if &tar != diff_id {
            return Err(archive_err(format!("layer `{name}` hashes to `{tar}`, but the config's diff_id is `{diff_id}`")));
        }
        let gz = oci::image::gzip_layer(&tmp, &tar, dst).map_err(layout_err)?;
        records.push(BaseLayer {
            media_type: oci::image::MEDIA_DOCKER_LAYER_TAR.to_owned(),
            digest: tar,
            gzipped: Some(gz.digest.clone()),
        });
        layers.push(gz);
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
        config: Descriptor::new(oci::MEDIA_CONFIG, config_digest, config_size),
        layers,
        subject: None,
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| archive_err(e.to_string()))?;
    let desc = dst.put_blob(oci::MEDIA_MANIFEST, &bytes).map_err(layout_err)?;
    let mut img = image_from_manifest(base, platform, &bytes, &desc.digest, dst)?;
    img.layers = records;
    Ok(img)
}

/// An image config as other tools write it: Docker writes `null` for empty lists and maps
/// (`"Cmd": null`) and history entries without `created_by`; read as empty. The blob's bytes
/// stay as they are.
fn read_config(layout: &Layout, digest: &Digest) -> Result<ImageConfig, LayoutError> {
    let bytes = layout.read_blob(digest)?;
    let json_err = |source| LayoutError::Json { path: layout.blob_path(digest), what: "an image config", source };
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).map_err(json_err)?;
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|_, x| !x.is_null());
        if let Some(c) = obj.get_mut("config").and_then(|c| c.as_object_mut()) {
            c.retain(|_, x| !x.is_null());
        }
        for h in obj.get_mut("history").and_then(|h| h.as_array_mut()).into_iter().flatten() {
            if let Some(h) = h.as_object_mut() {
                h.entry("created_by").or_insert_with(|| serde_json::Value::String(String::new()));
            }
        }
    }
    serde_json::from_value(v).map_err(json_err)
}

/// Assembles a Debian base (also used by `cargo xtask lock`, which records the digest).
pub fn assemble_debian(base: &Base, platform: Platform, fetch: &Fetch, layout: &Layout) -> Result<BaseImage, BaseError> {
    let name = &base.name;
    let pin = &base.platforms[&platform];
    let epoch = base.epoch.unwrap_or(0);
    let io_err = |path: &Path| {
        let path = path.to_owned();
        let base = name.clone();
        move |source| BaseError::Io { base, platform, path, source }
    };
    let scratch = oci::dirs::Scratch::new("stellaops-base-").map_err(io_err(Path::new("$TMPDIR")))?;
    let rootfs = scratch.path().join("rootfs");
    fs::create_dir(&rootfs).map_err(io_err(&rootfs))?;
    let mut infos = Vec::new();
    let mut packages = Vec::new();
    for p in &pin.packages {
        let deb = debian::fetch(p, &fetch.debs, &fetch.cache).map_err(|source| BaseError::Deb { base: name.clone(), platform, source })?;
        let info = debian::unpack(&deb, &rootfs).map_err(|source| BaseError::Deb { base: name.clone(), platform, source })?;
        let depends = info
            .field("Depends")
            .into_iter()
            .chain(info.field("Pre-Depends"))
            .flat_map(|d| d.split(','))
            .filter_map(|d| d.split('|').next()?.split_whitespace().next())
            .map(|d| d.split(':').next().unwrap_or(d).to_owned())
            .collect();
        packages.push(BasePackage {
            name: p.name.clone(),
            version: p.version.clone(),
            arch: info.field("Architecture").unwrap_or(&p.arch).to_owned(),
            deb_sha256: Some(p.sha256.clone()),
            source: info.field("Source").map(|s| s.split_whitespace().next().unwrap_or(s).to_owned()),
            depends,
            files: info.paths.clone(),
        });
        infos.push((p.name.clone(), info));
    }
    write_dpkg_database(&rootfs, &infos).map_err(io_err(&rootfs.join("var/lib/dpkg")))?;
    let layer_err = |source| BaseError::Layer { base: name.clone(), platform, source };
    let layout_err = |source| BaseError::Layout { base: name.clone(), platform, source };
    let (digest, size, info) = layout
        .put_blob_with(|w| {
            let mut lw = LayerWriter::new(w, epoch);
            lw.add_tree(&rootfs, "/", Modes::Preserve).map_err(io::Error::other)?;
            for d in &base.directories {
                lw.add_dir(d, if d == "tmp" { 0o1777 } else { 0o755 })?;
            }
            for (path, target) in &base.symlinks {
                lw.add_symlink(path, target)?;
            }
            lw.finish().map(|(_, info)| info)
        })
        .map_err(|e| match e {
            LayoutError::Io { path, source } => match source.downcast::<LayerError>() {
                Ok(le) => layer_err(le),
                Err(source) => layout_err(LayoutError::Io { path, source }),
            },
            other => layout_err(other),
        })?;
    debug_assert_eq!(digest, info.digest);
    let package_list = pin.packages.iter().map(|p| format!("{}={}", p.name, p.version)).collect::<Vec<_>>().join(" ");
    let config = ImageConfig {
        created: rfc3339(epoch),
        architecture: platform.arch().to_owned(),
        os: platform.os().to_owned(),
        variant: oci::PlatformSpec::from(platform).variant,
        config: oci::RunConfig {
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
            ..Default::default()
        },
        rootfs: oci::RootFs { kind: "layers".to_owned(), diff_ids: vec![info.diff_id.clone()] },
        history: vec![oci::History {
            created: rfc3339(epoch),
            created_by: format!("stellaops base `{name}`: debian {} {package_list}", base.suite.as_deref().unwrap_or("")),
            comment: None,
            empty_layer: false,
        }],
    };
    let config_desc = layout.put_json(oci::MEDIA_CONFIG, &config).map_err(layout_err)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
        config: config_desc,
        layers: vec![Descriptor::new(oci::MEDIA_LAYER_GZIP, digest, size)],
        subject: None,
        annotations: Default::default(),
    };
    let desc = layout.put_json(oci::MEDIA_MANIFEST, &manifest).map_err(layout_err)?;
    let layers =
        manifest.layers.iter().map(|l| BaseLayer { media_type: l.media_type.clone(), digest: l.digest.clone(), gzipped: None }).collect();
    Ok(BaseImage { name: name.clone(), platform, digest: desc.digest, media_type: oci::MEDIA_MANIFEST, manifest, layers, config, packages })
}

fn pull_from_registry(
    base: &Base,
    platform: Platform,
    reference: &schema::model::PinnedRef,
    layout: &Layout,
) -> Result<BaseImage, BaseError> {
    let (digest, bytes) = oci::registry::pull_image(reference, platform, layout).map_err(|source| BaseError::Registry {
        base: base.name.clone(),
        platform,
        source,
    })?;
    image_from_manifest(base, platform, &bytes, &digest, layout)
}

/// The base image whose manifest (`bytes` as stored, digest `digest`) and blobs are in
/// `layout`. Any image manifest is taken (OCI with or without `mediaType`, Docker v2 schema
/// 2); its bytes stay as they are in the layout (they are the pin). What the release's images
/// carry of it is always OCI: gzip layers (OCI or Docker) keep their bytes and digest under
/// `application/vnd.oci.image.layer.v1.tar+gzip`; uncompressed layers are gzipped by the
/// pinned writer ([`oci::image::gzip_layer`]), so the same base gives the same layers on every
/// run. Both are recorded in [`BaseImage::layers`] (and `images.json`).
fn image_from_manifest(base: &Base, platform: Platform, bytes: &[u8], digest: &Digest, layout: &Layout) -> Result<BaseImage, BaseError> {
    let layout_err = |source| BaseError::Layout { base: base.name.clone(), platform, source };
    let not = |what: String| BaseError::NotAManifest { base: base.name.clone(), platform, digest: digest.clone(), what };
    let (kind, mut manifest) = match oci::image::parse(bytes).map_err(|e| not(format!("not an image manifest: {e}")))? {
        oci::image::Document::Manifest(kind, m) => (kind, *m),
        oci::image::Document::Index(kind, index) => {
            let hint = match oci::image::select_platform(&index, platform) {
                Ok(d) => format!("; `base-images.lock` pins each platform's manifest: pin `{}` for {platform}", d.digest),
                Err(e) => format!(" ({e})"),
            };
            return Err(not(format!("an index (`{}`), not an image manifest{hint}", kind.media_type())));
        }
    };
    let mut layers = Vec::new();
    for l in &mut manifest.layers {
        let from = BaseLayer { media_type: l.media_type.clone(), digest: l.digest.clone(), gzipped: None };
        match oci::image::layer_kind(&l.media_type) {
            Some(oci::image::LayerKind::Gzip) => l.media_type = oci::MEDIA_LAYER_GZIP.to_owned(),
            Some(oci::image::LayerKind::Tar) => {
                let gz = oci::image::gzip_layer(layout, &l.digest, layout).map_err(layout_err)?;
                layers.push(BaseLayer { gzipped: Some(gz.digest.clone()), ..from });
                *l = Descriptor { annotations: std::mem::take(&mut l.annotations), ..gz };
                continue;
            }
            None => {
                return Err(not(format!(
                    "an image with layer `{}` of media type `{}`, which a release cannot carry (gzip or uncompressed tar layers only)",
                    l.digest, l.media_type
                )))
            }
        }
        layers.push(from);
    }
    let config = read_config(layout, &manifest.config.digest).map_err(layout_err)?;
    if config.architecture != platform.arch() || config.os != platform.os() {
        return Err(not(format!("an image for {}/{}, not {platform}", config.os, config.architecture)));
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(not(format!(
            "an image whose config lists {} diff_ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    let packages = read_dpkg_database(layout, &manifest)?;
    Ok(BaseImage {
        name: base.name.clone(),
        platform,
        digest: digest.clone(),
        media_type: kind.media_type(),
        layers,
        manifest,
        config,
        packages,
    })
}

fn copy_from_layout(base: &Base, platform: Platform, src: &Path, digest: &Digest, dst: &Layout) -> Result<BaseImage, BaseError> {
    let layout_err = |source| BaseError::Layout { base: base.name.clone(), platform, source };
    let from = Layout::open(src).map_err(layout_err)?;
    let bytes = from.read_blob(digest).map_err(layout_err)?;
    if let Ok(oci::image::Document::Manifest(_, manifest)) = oci::image::parse(&bytes) {
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            copy_blob(&from, dst, &d.digest).map_err(layout_err)?;
        }
    }
    let (d, _, ()) = dst.put_blob_with(|w| io::Write::write_all(w, &bytes)).map_err(layout_err)?;
    image_from_manifest(base, platform, &bytes, &d, dst)
}

/// Copies one blob between layouts, streaming and checking its digest.
pub fn copy_blob(from: &Layout, to: &Layout, digest: &Digest) -> Result<(), LayoutError> {
    if to.blob_path(digest).is_file() {
        return Ok(());
    }
    let path = from.blob_path(digest);
    let mut f = fs::File::open(&path).map_err(|source| LayoutError::Io { path: path.clone(), source })?;
    let (actual, _, _) = to.put_blob_with(|w| io::copy(&mut f, w))?;
    if &actual != digest {
        let _ = fs::remove_file(to.blob_path(&actual));
        return Err(LayoutError::DigestMismatch { path, expected: digest.clone(), actual });
    }
    Ok(())
}

/// The packages of a base taken whole (from a layout or a registry), from the dpkg database it
/// carries: `var/lib/dpkg/status` and `info/*.list`, as the base's last layer holding each has
/// them. This is what the build knows of such a base; the post-build scan reads the finished
/// image on its own.
fn read_dpkg_database(layout: &Layout, manifest: &Manifest) -> Result<Vec<BasePackage>, BaseError> {
    use std::collections::BTreeMap;
    use std::io::Read;
    let mut texts: BTreeMap<String, String> = BTreeMap::new();
    for l in &manifest.layers {
        let path = layout.blob_path(&l.digest);
        let io_err = |source: io::Error| BaseError::Layout {
            base: String::new(),
            platform: Platform::LinuxAmd64,
            source: LayoutError::Io { path: path.clone(), source },
        };
        let f = fs::File::open(&path).map_err(io_err)?;
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f)));
        for e in ar.entries().map_err(io_err)? {
            let mut e = e.map_err(io_err)?;
            let p = e.path().map_err(io_err)?.to_string_lossy().trim_start_matches("./").to_owned();
            if p == "var/lib/dpkg/status" || (p.starts_with("var/lib/dpkg/info/") && p.ends_with(".list")) {
                let mut text = String::new();
                e.read_to_string(&mut text).map_err(io_err)?;
                texts.insert(p, text);
            }
        }
    }
    let Some(status) = texts.get("var/lib/dpkg/status") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for stanza in status.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let field = |k: &str| debian::control_field(stanza, k).map(str::to_owned);
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        if !field("Status").is_none_or(|s| s.ends_with(" installed")) {
            continue;
        }
        let arch = field("Architecture").unwrap_or_else(|| "all".into());
        let list =
            texts.get(&format!("var/lib/dpkg/info/{name}.list")).or_else(|| texts.get(&format!("var/lib/dpkg/info/{name}:{arch}.list")));
        out.push(BasePackage {
            depends: field("Depends")
                .into_iter()
                .flat_map(|d| {
                    d.split(',')
                        .filter_map(|x| x.split('|').next()?.split_whitespace().next().map(|n| n.split(':').next().unwrap_or(n).to_owned()))
                        .collect::<Vec<_>>()
                })
                .collect(),
            source: field("Source").map(|s| s.split_whitespace().next().unwrap_or(&s).to_owned()),
            files: list.map(|l| l.lines().map(str::to_owned).collect()).unwrap_or_default(),
            name,
            version,
            arch,
            deb_sha256: None,
        });
    }
    Ok(out)
}
