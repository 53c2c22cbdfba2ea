//! Java archives (`.jar`, `.war`, `.ear` and the other zip-based Java packagings): the packages
//! they carry, read from `META-INF/MANIFEST.MF` and `META-INF/maven/**/pom.properties`, and
//! from the archives nested in them (`BOOT-INF/lib/*.jar`, `WEB-INF/lib/*.jar`, ...).
//!
//! Input: one archive's bytes (the scan buffers a single archive, at most [`MAX`]); output: its
//! packages, named `groupId:artifactId` when the group is known (purl `pkg:maven/g/a@v`), else
//! the artifact alone. The rules are syft's (its Java cataloger's behaviour, learnt from its
//! source and checked on real jars; no code taken): an archive with a manifest is a package, named by the
//! `pom.properties` whose artifactId matches the file name, else by the manifest or the file
//! name; every other `pom.properties` is a package of its own; nested archives recurse.
//!
//! The zip reader is written by hand: a central directory at the end and stored or deflated
//! entries (flate2, already a dependency), with zip64 and prepended launch scripts (Spring
//! Boot). The zip crate would add half a dozen crates for the few entries read here.

use std::io::Read;

/// The largest archive (or nested archive) read into memory: 256 MiB (1 MiB in unit tests, so
/// that the refusal is tested without writing 256 MiB).
#[cfg(not(test))]
pub const MAX: u64 = 256 << 20;
#[cfg(test)]
pub const MAX: u64 = 1 << 20;
/// Text entries (manifest, pom.properties) larger than this are refused.
const MAX_TEXT: u64 = 1 << 20;
/// Nested archives deeper than this are refused (a zip bomb guard).
const MAX_DEPTH: usize = 4;
/// The extensions syft catalogs as `java-archive` (`jpi`/`hpi` are Jenkins plugins: not read).
pub const EXTENSIONS: &[&str] = &["jar", "war", "ear", "par", "sar", "nar", "kar", "lpkg"];

/// A package found in an archive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JavaPackage {
    pub group: Option<String>,
    pub artifact: String,
    pub version: String,
    /// Where: the archive's path, `:`-joined with the nested archive's path inside it.
    pub location: String,
}

impl JavaPackage {
    /// `groupId:artifactId`, or the artifact alone when the group is unknown.
    pub fn name(&self) -> String {
        match &self.group {
            Some(g) => format!("{g}:{}", self.artifact),
            None => self.artifact.clone(),
        }
    }
}

/// What is wrong, where: `file` is the archive (`:` then the entry for a nested one or a text
/// entry), `line` the line of a text entry (1 for the zip structure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Whether syft (and this scan) reads the file named `name` as a Java archive.
pub fn is_archive(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, ext)| EXTENSIONS.contains(&ext))
}

/// The packages of the archive `file` (its path in the image, for locations and messages).
pub fn catalog(file: &str, bytes: &[u8]) -> Result<Vec<JavaPackage>, Malformed> {
    let mut out = Vec::new();
    archive(file, bytes, 0, MAX, &mut out)?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// `budget`: how many bytes the archives nested in this one may still take in memory, all
/// levels together (the outer archive's bytes are the scan's): at most [`MAX`] more.
fn archive(file: &str, bytes: &[u8], depth: usize, budget: u64, out: &mut Vec<JavaPackage>) -> Result<(), Malformed> {
    let bad = |message: String| Malformed { file: file.to_owned(), line: 1, message };
    if depth > MAX_DEPTH {
        return Err(bad(format!("archives nested more than {MAX_DEPTH} deep")));
    }
    let zip = Zip::open(bytes).map_err(|m| bad(format!("not a readable zip archive: {m}")))?;
    let text = |e: &Entry| -> Result<String, Malformed> {
        let at = format!("{file}:{}", e.name);
        let b = zip.read(e, MAX_TEXT).map_err(|m| Malformed { file: at.clone(), line: 1, message: m })?;
        String::from_utf8(b).map_err(|_| Malformed { file: at, line: 1, message: "not UTF-8".into() })
    };

    // pom.properties by the directory holding it, in path order.
    let mut poms: Vec<(String, Pom)> = Vec::new();
    for e in zip.entries.iter().filter(|e| e.name.ends_with("pom.properties")) {
        let p = pom_properties(&text(e)?).map_err(|(line, message)| Malformed { file: format!("{file}:{}", e.name), line, message })?;
        poms.push((e.name.rsplit_once('/').map(|(d, _)| d).unwrap_or("").to_owned(), p));
    }
    poms.sort_by(|a, b| a.0.cmp(&b.0));
    let has_pom_xml =
        |dir: &str| zip.entries.iter().any(|e| e.name.ends_with("pom.xml") && e.name.rsplit_once('/').map(|(d, _)| d).unwrap_or("") == dir);

    let manifests: Vec<&Entry> = zip.entries.iter().filter(|e| e.name == "META-INF/MANIFEST.MF").collect();
    if manifests.len() > 1 {
        return Err(bad("more than one `META-INF/MANIFEST.MF`".into()));
    }
    let location = file.to_owned();
    // 1. The archive's own package: only an archive with a manifest is one (as syft).
    if let Some(m) = manifests.first() {
        let manifest =
            parse_manifest(&text(m)?).map_err(|(line, message)| Malformed { file: format!("{file}:{}", m.name), line, message })?;
        if manifest.get("Weave-Classes").is_none() {
            let base = file.rsplit(['/', ':']).next().unwrap_or(file);
            let (fname, fversion) = filename_name_version(base);
            // The pom.properties whose artifactId matches the file name (the last in path order,
            // or the first that has a pom.xml beside it).
            let ids: Vec<&str> = poms.iter().map(|(_, p)| p.artifact.as_str()).collect();
            let mut chosen: Option<&Pom> = None;
            for (dir, p) in &poms {
                if artifact_matches_filename(&p.artifact, &fname, &ids) {
                    chosen = Some(p);
                    if has_pom_xml(dir) {
                        break;
                    }
                }
            }
            let mut main = JavaPackage {
                group: chosen.map(|p| p.group.clone()).filter(|g| !g.is_empty()),
                artifact: chosen.map(|p| p.artifact.clone()).unwrap_or_else(|| select_name(&manifest, &fname)),
                version: chosen.map(|p| p.version.clone()).unwrap_or_else(|| select_version(&manifest, &fversion)),
                location: location.clone(),
            };
            // 2. Every pom.properties is a package; one naming the archive's own artifact is it.
            let mut aux = Vec::new();
            for (_, p) in &poms {
                // (The same group, artifact and version is the same artifact too: covered.)
                if p.artifact == main.artifact {
                    main.group = Some(p.group.clone()).filter(|g| !g.is_empty());
                    main.version = p.version.clone();
                    continue;
                }
                aux.push(JavaPackage {
                    group: Some(p.group.clone()).filter(|g| !g.is_empty()),
                    artifact: p.artifact.clone(),
                    version: p.version.clone(),
                    location: location.clone(),
                });
            }
            if !main.artifact.is_empty() {
                out.push(main);
            }
            out.extend(aux);
        }
    }
    // 3. Nested archives.
    for e in zip.entries.iter().filter(|e| is_archive(&e.name) && !e.name.ends_with('/')) {
        let inner = format!("{file}:{}", e.name);
        let b = zip.read(e, budget).map_err(|m| Malformed { file: inner.clone(), line: 1, message: m })?;
        archive(&inner, &b, depth + 1, budget - b.len() as u64, out)?;
    }
    Ok(())
}

fn artifact_matches_filename(artifact: &str, fname: &str, ids: &[&str]) -> bool {
    if artifact.is_empty() || fname.is_empty() {
        return false;
    }
    if ids.contains(&fname) {
        return artifact == fname;
    }
    artifact.starts_with(fname) || fname.ends_with(artifact)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pom {
    group: String,
    artifact: String,
    version: String,
}

/// `pom.properties` (Java properties as Maven writes them: `key=value`, `#` comments).
fn pom_properties(text: &str) -> Result<Pom, (usize, String)> {
    let (mut group, mut artifact, mut version) = (None, None, None);
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
            continue;
        }
        let Some(at) = t.find(['=', ':']) else {
            return Err((i + 1, format!("`{}` is not `key=value`", t.escape_debug())));
        };
        let (k, v) = (t[..at].trim(), t[at + 1..].trim().to_owned());
        match k {
            "groupId" => group = Some(v),
            "artifactId" => artifact = Some(v),
            "version" => version = Some(v),
            _ => {}
        }
    }
    let (Some(artifact), Some(version)) = (artifact.filter(|a| !a.is_empty()), version.filter(|v| !v.is_empty())) else {
        return Err((1, "no `artifactId` or no `version`: Maven writes both".into()));
    };
    Ok(Pom { group: group.unwrap_or_default(), artifact, version })
}

/// A manifest's sections of `Key: value` pairs; the main section first.
#[derive(Debug, Default)]
struct Manifest {
    sections: Vec<Vec<(String, String)>>,
}

impl Manifest {
    fn main(&self, key: &str) -> Option<&str> {
        self.sections.first()?.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }
    /// The main section's value, else the first other section's.
    fn get(&self, key: &str) -> Option<&str> {
        self.sections.iter().flatten().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }
}

/// `META-INF/MANIFEST.MF`: `Key: value` lines, continuation lines start with one space, blank
/// lines separate sections.
fn parse_manifest(text: &str) -> Result<Manifest, (usize, String)> {
    let mut m = Manifest::default();
    let mut open = false;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            open = false;
            continue;
        }
        if let Some(more) = line.strip_prefix(' ') {
            let last = m.sections.last_mut().filter(|_| open).and_then(|s| s.last_mut());
            let Some((_, v)) = last else {
                return Err((i + 1, "a continuation line with no header before it".into()));
            };
            v.push_str(more);
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err((i + 1, format!("`{}` is not `Name: value`", line.escape_debug())));
        };
        if k.trim().is_empty() {
            return Err((i + 1, format!("`{}` has no header name", line.escape_debug())));
        }
        if !open {
            m.sections.push(Vec::new());
            open = true;
        }
        if let Some(s) = m.sections.last_mut() {
            s.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    for s in &mut m.sections {
        for (_, v) in s.iter_mut() {
            *v = v.trim().to_owned();
        }
    }
    Ok(m)
}

fn select_name(m: &Manifest, fname: &str) -> String {
    // The Apache Maven Bundle Plugin writes `Bundle-SymbolicName` as `groupId.artifactId`.
    if m.main("Created-By").is_some_and(|c| c.contains("Apache Maven Bundle Plugin")) {
        if let Some(sym) = m.main("Bundle-SymbolicName") {
            if m.main("Implementation-Vendor-Id") != Some(sym) {
                return sym.rsplit('.').next().unwrap_or(sym).to_owned();
            }
        }
    }
    let from_file = name_from_filename(fname);
    if !from_file.is_empty() {
        return from_file;
    }
    ["Name", "Bundle-Name", "Short-Name", "Extension-Name", "Implementation-Title"]
        .iter()
        .find_map(|k| m.main(k))
        .unwrap_or_default()
        .to_owned()
}

fn select_version(m: &Manifest, fversion: &str) -> String {
    if !fversion.is_empty() {
        return fversion.to_owned();
    }
    ["Implementation-Version", "Specification-Version", "Plugin-Version", "Bundle-Version"]
        .iter()
        .find_map(|k| m.get(k))
        .unwrap_or_default()
        .to_owned()
}

/// A file name that looks like `groupId.artifactId` names the artifact.
fn name_from_filename(name: &str) -> String {
    if name.contains('.') && !name.starts_with("org.eclipse.") {
        let fields: Vec<&str> = name.split('.').collect();
        let identifier = |f: &&str| f.chars().next().is_some_and(|c| c.is_alphabetic() || c == '$' || c == '_');
        if fields.iter().all(identifier) {
            return fields.last().copied().unwrap_or(name).to_owned();
        }
    }
    name.to_owned()
}

/// A version in a file name: starts with a digit, or is `build<digit>...`, or `r<digits>` /
/// `rc<digits>` (case-insensitive).
fn is_version(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    l.starts_with(|c: char| c.is_ascii_digit())
        || l.strip_prefix("build").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        || l.strip_prefix("rc").is_some_and(digits)
        || l.strip_prefix('r').is_some_and(digits)
}

/// (name, version) of an archive's file name, `commons-lang3-3.12.0.jar` → (`commons-lang3`,
/// `3.12.0`): the shortest run of `-`-separated words (a letter, then letters, digits, `_`,
/// `.`) followed by a version; else a version after the last `.`, `_` or `-` of the name.
pub fn filename_name_version(file_name: &str) -> (String, String) {
    let stem = match file_name.rfind('.') {
        Some(i) => &file_name[..i],
        None => file_name,
    };
    let word = |w: &str| {
        let mut c = w.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic()) && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '.')
    };
    let parts: Vec<&str> = stem.split('-').collect();
    let mut found = (String::new(), String::new());
    for k in 1..=parts.len() {
        if !word(parts[k - 1]) {
            break;
        }
        if k == parts.len() {
            found = (stem.to_owned(), String::new());
            break;
        }
        let rest = parts[k..].join("-");
        if is_version(&rest) {
            found = (parts[..k].join("-"), rest);
            break;
        }
    }
    let (name, version) = found;
    if !version.is_empty() {
        return (name, version);
    }
    for (i, c) in name.char_indices() {
        if matches!(c, '.' | '_' | '-') && is_version(&name[i + 1..]) {
            return (name[..i].to_owned(), name[i + 1..].to_owned());
        }
    }
    (name, version)
}

/// A central directory entry.
#[derive(Debug)]
struct Entry {
    name: String,
    method: u16,
    flags: u16,
    compressed: u64,
    size: u64,
    /// Offset of the local header, from the start of `bytes` (prepended data included).
    local: u64,
}

struct Zip<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}
fn us(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl<'a> Zip<'a> {
    fn open(bytes: &'a [u8]) -> Result<Zip<'a>, String> {
        const EOCD: u32 = 0x0605_4b50;
        let short = || "cut short".to_owned();
        if bytes.len() < 22 {
            return Err(format!("{} bytes, too short for a zip end record", bytes.len()));
        }
        let lowest = bytes.len().saturating_sub(22 + 0xffff);
        let eocd = (lowest..=bytes.len() - 22)
            .rev()
            .find(|&i| le32(bytes, i) == Some(EOCD))
            .ok_or_else(|| "no end of central directory record".to_owned())?;
        let mut count = u64::from(le16(bytes, eocd + 10).ok_or_else(short)?);
        let mut cd_size = u64::from(le32(bytes, eocd + 12).ok_or_else(short)?);
        let mut cd_off = u64::from(le32(bytes, eocd + 16).ok_or_else(short)?);
        let mut end = eocd as u64;
        if count == 0xffff || cd_size == 0xffff_ffff || cd_off == 0xffff_ffff {
            // Zip64: a locator just before the end record points at the zip64 end record.
            let loc = eocd
                .checked_sub(20)
                .filter(|&l| le32(bytes, l) == Some(0x0706_4b50))
                .ok_or_else(|| "a zip64 archive without its locator".to_owned())?;
            let rec = us(le64(bytes, loc + 8).ok_or_else(short)?);
            // The record's stated offset ignores prepended data: look for it just before the locator too.
            let rec = [rec, loc.saturating_sub(56)]
                .into_iter()
                .find(|&r| le32(bytes, r) == Some(0x0606_4b50))
                .ok_or_else(|| "no zip64 end record".to_owned())?;
            count = le64(bytes, rec + 32).ok_or_else(short)?;
            cd_size = le64(bytes, rec + 40).ok_or_else(short)?;
            cd_off = le64(bytes, rec + 48).ok_or_else(short)?;
            end = rec as u64;
        }
        // Data prepended to the archive (a launch script) shifts every offset by this much.
        let shift = end
            .checked_sub(cd_off.checked_add(cd_size).ok_or_else(short)?)
            .ok_or_else(|| "the central directory overlaps its end record".to_owned())?;
        let mut at = us(cd_off + shift);
        let mut entries = Vec::new();
        for n in 0..count {
            if le32(bytes, at) != Some(0x0201_4b50) {
                return Err(format!("central directory entry {n} has no signature"));
            }
            let flags = le16(bytes, at + 8).ok_or_else(short)?;
            let method = le16(bytes, at + 10).ok_or_else(short)?;
            let mut compressed = u64::from(le32(bytes, at + 20).ok_or_else(short)?);
            let mut size = u64::from(le32(bytes, at + 24).ok_or_else(short)?);
            let name_len = usize::from(le16(bytes, at + 28).ok_or_else(short)?);
            let extra_len = usize::from(le16(bytes, at + 30).ok_or_else(short)?);
            let comment_len = usize::from(le16(bytes, at + 32).ok_or_else(short)?);
            let mut local = u64::from(le32(bytes, at + 42).ok_or_else(short)?);
            let name = bytes.get(at + 46..at + 46 + name_len).ok_or_else(short)?;
            let name = String::from_utf8_lossy(name).into_owned();
            let mut extra = bytes.get(at + 46 + name_len..at + 46 + name_len + extra_len).ok_or_else(short)?;
            while extra.len() >= 4 {
                let (id, len) = (le16(extra, 0).unwrap_or(0), usize::from(le16(extra, 2).unwrap_or(0)));
                let data = extra.get(4..4 + len).ok_or_else(|| format!("`{name}`: an extra field is cut short"))?;
                if id == 1 {
                    let mut i = 0;
                    for v in [&mut size, &mut compressed, &mut local] {
                        if *v == 0xffff_ffff {
                            *v = le64(data, i).ok_or_else(|| format!("`{name}`: the zip64 field is cut short"))?;
                            i += 8;
                        }
                    }
                }
                extra = &extra[4 + len..];
            }
            let local =
                local.checked_add(shift).ok_or_else(|| format!("`{name}`: its local header offset is past the end of any archive"))?;
            entries.push(Entry { name, method, flags, compressed, size, local });
            at += 46 + name_len + extra_len + comment_len;
        }
        Ok(Zip { bytes, entries })
    }

    /// The content of `e`, at most `limit` bytes.
    fn read(&self, e: &Entry, limit: u64) -> Result<Vec<u8>, String> {
        if e.flags & 1 != 0 {
            return Err("the entry is encrypted".into());
        }
        if e.size > limit {
            return Err(format!("the entry is {} bytes, more than the {limit} bytes left to read (nested archives share {MAX})", e.size));
        }
        let at = us(e.local);
        if le32(self.bytes, at) != Some(0x0403_4b50) {
            return Err("no local header where the central directory points".into());
        }
        let n = usize::from(le16(self.bytes, at + 26).unwrap_or(0));
        let x = usize::from(le16(self.bytes, at + 28).unwrap_or(0));
        let start = at + 30 + n + x;
        let data =
            self.bytes.get(start..start.saturating_add(us(e.compressed))).ok_or_else(|| "the entry's data is cut short".to_owned())?;
        let mut out = Vec::new();
        match e.method {
            0 => out.extend_from_slice(data),
            8 => {
                flate2::read::DeflateDecoder::new(data)
                    .take(limit + 1)
                    .read_to_end(&mut out)
                    .map_err(|err| format!("bad deflate data: {err}"))?;
            }
            m => return Err(format!("compression method {m} is not supported (stored and deflate are)")),
        }
        if out.len() as u64 > limit {
            return Err(format!("the entry inflates to more than the {limit} bytes left to read"));
        }
        if out.len() as u64 != e.size {
            return Err(format!("the entry is {} bytes, the directory says {}", out.len(), e.size));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A zip archive of `files` (deflated when `deflate`), as a zip tool writes one.
    pub(crate) fn zip(files: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let body = if deflate {
                let mut w = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                w.write_all(data).unwrap();
                w.finish().unwrap()
            } else {
                data.to_vec()
            };
            let method: u16 = if deflate { 8 } else { 0 };
            let local = u32::try_from(out.len()).unwrap();
            let mut h = Vec::new();
            h.extend(0x0403_4b50u32.to_le_bytes());
            h.extend(20u16.to_le_bytes());
            h.extend(0u16.to_le_bytes());
            h.extend(method.to_le_bytes());
            h.extend([0u8; 8]); // time, date, crc (not checked here)
            h.extend(u32::try_from(body.len()).unwrap().to_le_bytes());
            h.extend(u32::try_from(data.len()).unwrap().to_le_bytes());
            h.extend(u16::try_from(name.len()).unwrap().to_le_bytes());
            h.extend(0u16.to_le_bytes());
            h.extend(name.as_bytes());
            out.extend(h);
            out.extend(&body);
            central.extend(0x0201_4b50u32.to_le_bytes());
            central.extend(20u16.to_le_bytes());
            central.extend(20u16.to_le_bytes());
            central.extend(0u16.to_le_bytes());
            central.extend(method.to_le_bytes());
            central.extend([0u8; 8]);
            central.extend(u32::try_from(body.len()).unwrap().to_le_bytes());
            central.extend(u32::try_from(data.len()).unwrap().to_le_bytes());
            central.extend(u16::try_from(name.len()).unwrap().to_le_bytes());
            central.extend([0u8; 12]);
            central.extend(local.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd_off = u32::try_from(out.len()).unwrap();
        out.extend(&central);
        out.extend(0x0605_4b50u32.to_le_bytes());
        out.extend([0u8; 4]);
        let n = u16::try_from(files.len()).unwrap();
        out.extend(n.to_le_bytes());
        out.extend(n.to_le_bytes());
        out.extend(u32::try_from(central.len()).unwrap().to_le_bytes());
        out.extend(cd_off.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    const MF: &[u8] = b"Manifest-Version: 1.0\r\nImplementation-Title: Apache Commons Lang\r\nImplementation-Version: 3.12.0\r\n\r\n";
    const POM: &[u8] = b"#Created by Apache Maven 3.6.3\nversion=3.12.0\ngroupId=org.apache.commons\nartifactId=commons-lang3\n";

    fn names(p: &[JavaPackage]) -> Vec<(String, String)> {
        p.iter().map(|p| (p.name(), p.version.clone())).collect()
    }

    #[test]
    fn a_jar_is_named_by_its_pom_properties_and_nested_archives_are_read() {
        let lang = zip(&[("META-INF/MANIFEST.MF", MF), ("META-INF/maven/org.apache.commons/commons-lang3/pom.properties", POM)], true);
        let p = catalog("/usr/share/java/commons-lang3-3.12.0.jar", &lang).unwrap();
        assert_eq!(names(&p), [("org.apache.commons:commons-lang3".to_owned(), "3.12.0".to_owned())]);
        // A war: its own package from the file name, a bundled pom.properties, a nested jar.
        let shaded = b"groupId=com.example\nartifactId=shaded-util\nversion=0.3\n";
        let war = zip(
            &[
                ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"),
                ("META-INF/maven/com.example/shaded-util/pom.properties", shaded),
                ("WEB-INF/lib/commons-lang3-3.12.0.jar", &lang),
            ],
            false,
        );
        let p = catalog("/srv/app-2.0.1.war", &war).unwrap();
        assert_eq!(
            names(&p),
            [
                ("app".to_owned(), "2.0.1".to_owned()),
                ("com.example:shaded-util".to_owned(), "0.3".to_owned()),
                ("org.apache.commons:commons-lang3".to_owned(), "3.12.0".to_owned())
            ]
        );
        assert!(p.iter().any(|x| x.location == "/srv/app-2.0.1.war:WEB-INF/lib/commons-lang3-3.12.0.jar"));
        // Prepended data (a launch script) shifts every offset.
        let mut script = b"#!/bin/sh\nexec java -jar \"$0\"\n".to_vec();
        script.extend(&war);
        assert_eq!(names(&catalog("/srv/app-2.0.1.war", &script).unwrap()), names(&p));
        // No manifest: no package of its own, nested ones still.
        let bare = zip(
            &[("BOOT-INF/lib/commons-lang3-3.12.0.jar", &lang), ("META-INF/maven/x/y/pom.properties", b"artifactId=y\nversion=1\n")],
            true,
        );
        assert_eq!(names(&catalog("/a.jar", &bare).unwrap()), [("org.apache.commons:commons-lang3".to_owned(), "3.12.0".to_owned())]);
    }

    #[test]
    fn names_from_manifests_and_file_names() {
        let m =
            parse_manifest("Manifest-Version: 1.0\nCreated-By: Apache Maven Bundle Plugin\nBundle-SymbolicName: org.example.wid\n get\n")
                .unwrap();
        assert_eq!(select_name(&m, "whatever"), "widget");
        let m = parse_manifest("Implementation-Title: Thing\n\nName: x\nImplementation-Version: 9\n").unwrap();
        assert_eq!(select_name(&m, ""), "Thing");
        assert_eq!(select_version(&m, ""), "9");
        for (file, want) in [
            ("commons-lang3-3.12.0.jar", ("commons-lang3", "3.12.0")),
            ("guava-31.1-jre.jar", ("guava", "31.1-jre")),
            ("app.war", ("app", "")),
            ("foo-build42.jar", ("foo", "build42")),
            ("tool-rc1.jar", ("tool", "rc1")),
            ("netty_4.1.jar", ("netty", "4.1")),
            ("1bad.jar", ("", "")),
        ] {
            let (n, v) = filename_name_version(file);
            assert_eq!((n.as_str(), v.as_str()), want, "{file}");
        }
        assert_eq!(name_from_filename("org.apache.commons.lang3"), "lang3");
        assert_eq!(name_from_filename("org.eclipse.core.runtime"), "org.eclipse.core.runtime");
    }

    #[test]
    fn malformed_archives_and_metadata_are_refused_with_file_and_line() {
        let e = catalog("/x.jar", b"not a zip at all, long enough to look").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("/x.jar", 1));
        assert!(e.message.contains("no end of central directory"), "{e:?}");
        let bad_pom = zip(&[("META-INF/MANIFEST.MF", MF), ("META-INF/maven/g/a/pom.properties", b"groupId=g\nthis line is wrong\n")], true);
        let e = catalog("/x.jar", &bad_pom).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("/x.jar:META-INF/maven/g/a/pom.properties", 2), "{e:?}");
        let no_version = zip(&[("META-INF/maven/g/a/pom.properties", b"groupId=g\nartifactId=a\n")], true);
        assert!(catalog("/x.jar", &no_version).unwrap_err().message.contains("no `artifactId` or no `version`"));
        let bad_mf = zip(&[("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\nno colon here\n")], false);
        let e = catalog("/x.jar", &bad_mf).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("/x.jar:META-INF/MANIFEST.MF", 2), "{e:?}");
        let orphan = zip(&[("META-INF/MANIFEST.MF", b" continued\n")], false);
        assert_eq!(catalog("/x.jar", &orphan).unwrap_err().line, 1);
        // A nested archive that is no zip is named by its path inside the outer one.
        let outer = zip(&[("WEB-INF/lib/broken.jar", b"garbage garbage garbage garbage")], true);
        assert_eq!(catalog("/a.war", &outer).unwrap_err().file, "/a.war:WEB-INF/lib/broken.jar");
        // Nested archives share one memory budget: a chain of them larger than it is refused.
        let padding = vec![0u8; usize::try_from(MAX).unwrap() / 2 + 1000];
        let inner = zip(&[("META-INF/MANIFEST.MF", MF), ("big.bin", &padding)], false);
        let middle = zip(&[("lib/a.jar", &inner)], false);
        let outer = zip(&[("WEB-INF/lib/m.jar", &middle)], true);
        let e = catalog("/o.war", &outer).unwrap_err();
        assert_eq!(e.file, "/o.war:WEB-INF/lib/m.jar:lib/a.jar", "{e:?}");
        assert!(e.message.contains("bytes left to read"), "{e:?}");
        // Each alone fits.
        assert!(catalog("/m.jar", &middle).is_ok());
        // Truncated: every cut of a valid archive is an error or a result, never a panic.
        let good = zip(&[("META-INF/MANIFEST.MF", MF), ("META-INF/maven/g/a/pom.properties", POM)], true);
        for cut in 0..good.len() {
            let _ = catalog("/x.jar", &good[..cut]);
            let mut flipped = good.clone();
            flipped[cut] ^= 0xff;
            let _ = catalog("/x.jar", &flipped);
        }
        // An unsupported compression method is named.
        let mut bz = zip(&[("META-INF/MANIFEST.MF", MF)], false);
        let cd = bz.len() - 22 - (46 + "META-INF/MANIFEST.MF".len());
        bz[cd + 10] = 12;
        assert!(catalog("/x.jar", &bz).unwrap_err().message.contains("compression method 12"));
    }

    /// Regression (fuzzing, issue 18): a zip64 extra field stating the largest local header
    /// offset, in an archive with a launch script before it, overflowed the offset's shift (a
    /// panic where arithmetic is checked, a wrapped offset where not).
    #[test]
    fn a_zip64_local_offset_that_overflows_with_a_launch_script_is_refused() {
        let name = b"META-INF/MANIFEST.MF";
        let mut central = Vec::new();
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20, 0, 20, 0, 0, 0, 0, 0]); // made by, needed, flags, method
        central.extend([0u8; 12]); // time, date, crc, compressed size
        central.extend(0u32.to_le_bytes()); // size
        central.extend(u16::try_from(name.len()).unwrap().to_le_bytes());
        central.extend(12u16.to_le_bytes()); // extra length
        central.extend([0u8; 10]); // comment length, disk, internal and external attributes
        central.extend(0xffff_ffffu32.to_le_bytes()); // local header offset: in the zip64 field
        central.extend(name);
        central.extend(1u16.to_le_bytes());
        central.extend(8u16.to_le_bytes());
        central.extend(u64::MAX.to_le_bytes());
        let mut zip = b"#!/bin/sh\nexec java -jar \"$0\"\n".to_vec();
        let cd_size = u32::try_from(central.len()).unwrap();
        zip.extend(&central);
        zip.extend(0x0605_4b50u32.to_le_bytes());
        zip.extend([0, 0, 0, 0, 1, 0, 1, 0]);
        zip.extend(cd_size.to_le_bytes());
        zip.extend(0u32.to_le_bytes()); // the directory's offset, ignoring the script
        zip.extend(0u16.to_le_bytes());
        let e = catalog("/opt/app.jar", &zip).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("/opt/app.jar", 1));
        assert!(e.message.contains("local header offset is past the end"), "{}", e.message);
    }
}
