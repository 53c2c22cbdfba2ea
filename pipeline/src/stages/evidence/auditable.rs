//! The dependency list cargo-auditable embeds in Rust programs: an ELF section `.dep-v0`
//! holding zlib-compressed JSON, `{"packages": [{"name", "version", "source", "kind",
//! "dependencies", "root"}]}`.
//!
//! Found while a file streams through the scan, without holding the file. The section's data
//! usually comes before the section header table that says where it is, so it takes two
//! passes, the second only for the rare files that have the section:
//! 1. [`Sniffer`] reads the ELF header (where the section headers are), keeps the section
//!    header table when the stream reaches it, and notes where the string `.dep-v0` occurs;
//! 2. [`Sniffer::locate`] finds the section whose name is one of those occurrences inside the
//!    section name table: its offset and size;
//! 3. the scan reads the layer again and keeps those bytes of that file; [`parse`] reads them.
//!
//! Written by hand: the part of ELF needed is a 64-byte header and a table of fixed records;
//! the crates that read ELF want the whole file in memory.

use std::io::{self, Read};

const NAME: &[u8] = b".dep-v0\0";
/// At most this many occurrences of the name are remembered.
const MAX_MARKS: usize = 16;
/// A section header table larger than this is not kept (65,536 sections of 64 bytes).
const MAX_HEADERS: u64 = 4 << 20;
/// The largest `.dep-v0` section read, and the most its JSON may inflate to.
pub const MAX_SECTION: u64 = 8 << 20;
const MAX_JSON: u64 = 64 << 20;

#[derive(Debug, Clone, Copy)]
struct Elf {
    is64: bool,
    le: bool,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
    shstrndx: u64,
}

/// An `io::Write` sink that finds where a `.dep-v0` section is in a stream.
#[derive(Debug, Default)]
pub struct Sniffer {
    pos: u64,
    head: Vec<u8>,
    elf: Option<Elf>,
    not_elf: bool,
    /// The last bytes seen (a name may straddle two writes).
    tail: Vec<u8>,
    marks: Vec<u64>,
    headers: Vec<u8>,
}

impl Elf {
    fn parse(h: &[u8]) -> Option<Elf> {
        if h.len() < 64 || &h[..4] != b"\x7fELF" {
            return None;
        }
        let is64 = match h[4] {
            1 => false,
            2 => true,
            _ => return None,
        };
        let le = match h[5] {
            1 => true,
            2 => false,
            _ => return None,
        };
        let e = Elf { is64, le, shoff: 0, shentsize: 0, shnum: 0, shstrndx: 0 };
        let (shoff, rest) = if is64 { (e.uint(h, 0x28, 8)?, 0x3a) } else { (e.uint(h, 0x20, 4)?, 0x2e) };
        Some(Elf { shoff, shentsize: e.uint(h, rest, 2)?, shnum: e.uint(h, rest + 2, 2)?, shstrndx: e.uint(h, rest + 4, 2)?, ..e })
    }

    fn uint(&self, b: &[u8], at: usize, n: usize) -> Option<u64> {
        let s = b.get(at..at.checked_add(n)?)?;
        let mut v: u64 = 0;
        for i in 0..n {
            let byte = if self.le { s[n - 1 - i] } else { s[i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    }

    /// (name offset, type, file offset, size) of section header `i` of `table`.
    fn section(&self, table: &[u8], i: u64) -> Option<(u64, u64, u64, u64)> {
        let at = usize::try_from(i.checked_mul(self.shentsize)?).ok()?;
        let h = table.get(at..at.checked_add(usize::try_from(self.shentsize).ok()?)?)?;
        Some(if self.is64 {
            (self.uint(h, 0, 4)?, self.uint(h, 4, 4)?, self.uint(h, 24, 8)?, self.uint(h, 32, 8)?)
        } else {
            (self.uint(h, 0, 4)?, self.uint(h, 4, 4)?, self.uint(h, 16, 4)?, self.uint(h, 20, 4)?)
        })
    }

    fn table_len(&self) -> u64 {
        self.shentsize.saturating_mul(self.shnum)
    }
}

impl io::Write for Sniffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.not_elf {
            return Ok(buf.len());
        }
        let mut rest = buf;
        if self.elf.is_none() {
            // The header first (the section header table is never inside it).
            let take = (64 - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..take]);
            self.pos += take as u64;
            rest = &rest[take..];
            if self.head.len() < 64 {
                return Ok(buf.len());
            }
            match Elf::parse(&self.head) {
                Some(e) if e.table_len() <= MAX_HEADERS => self.elf = Some(e),
                _ => {
                    self.not_elf = true;
                    return Ok(buf.len());
                }
            }
        }
        self.scan(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sniffer {
    fn scan(&mut self, chunk: &[u8]) {
        let start = self.pos;
        // Across the boundary: the kept tail and the chunk's first bytes.
        let mut edge = std::mem::take(&mut self.tail);
        let edge_start = start - edge.len() as u64;
        edge.extend_from_slice(&chunk[..chunk.len().min(NAME.len() - 1)]);
        let mut marks: Vec<u64> = find_all(&edge, NAME).map(|i| edge_start + i as u64).collect();
        marks.extend(find_all(chunk, NAME).map(|i| start + i as u64));
        for m in marks {
            if self.marks.len() < MAX_MARKS && !self.marks.contains(&m) {
                self.marks.push(m);
            }
        }
        // The section header table, when the stream passes it.
        if let Some(e) = self.elf {
            let (lo, hi) = (e.shoff, e.shoff.saturating_add(e.table_len()));
            let end = start + chunk.len() as u64;
            if end > lo && start < hi {
                let a = usize::try_from(lo.saturating_sub(start)).unwrap_or(usize::MAX);
                let b = usize::try_from(hi.min(end) - start).unwrap_or(usize::MAX);
                self.headers.extend_from_slice(&chunk[a..b]);
            }
        }
        let keep = chunk.len().min(NAME.len() - 1);
        if keep == NAME.len() - 1 {
            self.tail = chunk[chunk.len() - keep..].to_vec();
        } else {
            // A short chunk: what was kept before, then it.
            let mut t = edge[..edge.len() - chunk.len().min(NAME.len() - 1)].to_vec();
            t.extend_from_slice(chunk);
            let cut = t.len().saturating_sub(NAME.len() - 1);
            self.tail = t[cut..].to_vec();
        }
        self.pos = start + chunk.len() as u64;
    }

    /// Where the `.dep-v0` section is: (offset, size) in the file, `Ok(None)` when it has none.
    pub fn locate(&self) -> Result<Option<(u64, u64)>, String> {
        let Some(e) = self.elf else { return Ok(None) };
        if self.marks.is_empty() {
            return Ok(None);
        }
        if e.shnum == 0 && e.shoff != 0 {
            // The count is in the first section header (65,280 sections or more): not read, said.
            return Err("the section name `.dep-v0` is there but the file numbers its sections the extended way (65,280 or more sections), which is not read".into());
        }
        if e.shnum == 0 || (self.headers.len() as u64) < e.table_len() {
            // A name but no section table in the file: not a section.
            return Ok(None);
        }
        let Some((_, _, str_off, str_size)) = e.section(&self.headers, e.shstrndx) else { return Ok(None) };
        for m in &self.marks {
            let Some(name) = m.checked_sub(str_off).filter(|n| *n < str_size) else { continue };
            for i in 0..e.shnum {
                let Some((n, kind, off, size)) = e.section(&self.headers, i) else { continue };
                if n == name {
                    if kind == 8 {
                        return Err("the `.dep-v0` section has no data in the file (SHT_NOBITS)".into());
                    }
                    if size > MAX_SECTION {
                        return Err(format!("the `.dep-v0` section is {size} bytes, more than the {MAX_SECTION} read"));
                    }
                    return Ok(Some((off, size)));
                }
            }
        }
        Ok(None)
    }
}

fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        while from + needle.len() <= hay.len() {
            let i = from + hay[from..].iter().position(|&b| b == needle[0])?;
            from = i + 1;
            if hay.get(i..i + needle.len()) == Some(needle) {
                return Some(i);
            }
        }
        None
    })
}

/// Reads `size` bytes at `offset` of `r` (the section, on the second pass).
pub fn read_section(r: impl Read, offset: u64, size: u64) -> io::Result<Vec<u8>> {
    let mut r = r;
    let skipped = io::copy(&mut (&mut r).take(offset), &mut io::sink())?;
    let mut out = Vec::new();
    (&mut r).take(size).read_to_end(&mut out)?;
    if skipped < offset || (out.len() as u64) < size {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ends inside its `.dep-v0` section"));
    }
    Ok(out)
}

/// The runtime packages of a `.dep-v0` section (build dependencies are compiled into no
/// program: left out, as syft does). An error names the JSON line (1 for the compression).
pub fn parse(section: &[u8]) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(MAX_JSON + 1)
        .read_to_end(&mut json)
        .map_err(|e| (1, format!("not zlib-compressed data: {e}")))?;
    if json.len() as u64 > MAX_JSON {
        return Err((1, format!("inflates to more than {MAX_JSON} bytes")));
    }
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| (e.line().max(1), format!("not JSON: {e}")))?;
    let Some(packages) = v.get("packages").and_then(|p| p.as_array()) else {
        return Err((1, "no `packages` array".into()));
    };
    let mut out = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let s = |k: &str| p.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty());
        let (Some(name), Some(version)) = (s("name"), s("version")) else {
            return Err((1, format!("`packages[{i}]` has no `name` or no `version`")));
        };
        match p.get("kind").map(|k| k.as_str()) {
            None | Some(Some("runtime")) => out.push((name.to_owned(), version.to_owned())),
            Some(Some("build")) => {}
            Some(k) => return Err((1, format!("`packages[{i}]` (`{name}`) has kind {k:?}, not `runtime` or `build`"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn deflate(json: &str) -> Vec<u8> {
        let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(json.as_bytes()).unwrap();
        w.finish().unwrap()
    }

    /// A little-endian ELF64 file: a header, `data` at 0x100 as section 1 named `.dep-v0`,
    /// the name table, then the section header table at the end (where linkers put it).
    pub(crate) fn elf(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x100];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f.extend_from_slice(data);
        let strtab_off = f.len() as u64;
        let strtab = b"\0.text\0.dep-v0\0.shstrtab\0";
        f.extend_from_slice(strtab);
        let shoff = f.len() as u64;
        let sh = |name: u32, kind: u32, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h
        };
        f.extend(sh(0, 0, 0, 0));
        f.extend(sh(7, 1, 0x100, data.len() as u64));
        f.extend(sh(15, 3, strtab_off, strtab.len() as u64));
        f[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    const JSON: &str = r#"{"packages":[{"name":"app","version":"0.1.0","source":"local","dependencies":[1],"root":true},{"name":"itoa","version":"1.0.11","source":"crates.io"},{"name":"cc","version":"1.0.83","source":"crates.io","kind":"build"}]}"#;

    #[test]
    fn the_section_is_located_across_writes_and_read_on_a_second_pass() {
        let section = deflate(JSON);
        let file = elf(&section);
        for chunk in [1, 3, 7, 8, 64, 100, 4096] {
            let mut s = Sniffer::default();
            for c in file.chunks(chunk) {
                s.write_all(c).unwrap();
            }
            let (off, size) = s.locate().unwrap().unwrap_or_else(|| panic!("chunk {chunk}: not located"));
            assert_eq!((off, size), (0x100, section.len() as u64), "chunk {chunk}");
            let bytes = read_section(&file[..], off, size).unwrap();
            assert_eq!(parse(&bytes).unwrap(), [("app".to_owned(), "0.1.0".to_owned()), ("itoa".to_owned(), "1.0.11".to_owned())]);
        }
        // The name elsewhere than in the name table (a string in a program) is no section.
        let mut other = elf(b"plain");
        other[0x40..0x48].copy_from_slice(NAME);
        let mut s = Sniffer::default();
        s.write_all(&other).unwrap();
        let at = s.locate().unwrap().unwrap();
        assert_eq!(at, (0x100, 5), "the real section is still found");
        let mut none = elf(b"plain");
        let strtab_name = none.windows(NAME.len()).position(|w| w == NAME).unwrap();
        none[strtab_name + 1] = b'x';
        let mut s = Sniffer::default();
        s.write_all(&none).unwrap();
        assert_eq!(s.locate().unwrap(), None);
        // Not an ELF file.
        let mut s = Sniffer::default();
        s.write_all(b"#!/bin/sh\n.dep-v0\0 and more text to pass sixty-four bytes of header.....").unwrap();
        assert_eq!(s.locate().unwrap(), None);
    }

    /// The same layout as [`elf`] in a big-endian ELF32 file (as for 32-bit MIPS or PowerPC).
    fn elf32_be(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x100];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 1;
        f[5] = 2;
        f.extend_from_slice(data);
        let strtab_off = u32::try_from(f.len()).unwrap();
        let strtab = b"\0.text\0.dep-v0\0.shstrtab\0";
        f.extend_from_slice(strtab);
        let shoff = u32::try_from(f.len()).unwrap();
        let sh = |name: u32, kind: u32, off: u32, size: u32| {
            let mut h = vec![0u8; 40];
            h[0..4].copy_from_slice(&name.to_be_bytes());
            h[4..8].copy_from_slice(&kind.to_be_bytes());
            h[16..20].copy_from_slice(&off.to_be_bytes());
            h[20..24].copy_from_slice(&size.to_be_bytes());
            h
        };
        f.extend(sh(0, 0, 0, 0));
        f.extend(sh(7, 1, 0x100, u32::try_from(data.len()).unwrap()));
        f.extend(sh(15, 3, strtab_off, u32::try_from(strtab.len()).unwrap()));
        f[0x20..0x24].copy_from_slice(&shoff.to_be_bytes());
        f[0x2e..0x30].copy_from_slice(&40u16.to_be_bytes());
        f[0x30..0x32].copy_from_slice(&3u16.to_be_bytes());
        f[0x32..0x34].copy_from_slice(&2u16.to_be_bytes());
        f
    }

    #[test]
    fn extended_section_numbering_is_refused_not_skipped() {
        let mut file = elf(&deflate(JSON));
        file[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes());
        let mut s = Sniffer::default();
        s.write_all(&file).unwrap();
        assert!(s.locate().unwrap_err().contains("extended way"));
    }

    #[test]
    fn a_big_endian_elf32_program_is_read_too() {
        let section = deflate(JSON);
        let file = elf32_be(&section);
        let mut s = Sniffer::default();
        for c in file.chunks(5) {
            s.write_all(c).unwrap();
        }
        assert_eq!(s.locate().unwrap(), Some((0x100, section.len() as u64)));
    }

    #[test]
    fn malformed_sections_are_errors_not_panics() {
        assert!(parse(b"not zlib").unwrap_err().1.contains("not zlib"));
        let e = parse(&deflate("{\"packages\": [\n{\"name\": \"a\",\n \"version\": }]}")).unwrap_err();
        assert_eq!(e.0, 3, "{e:?}");
        assert!(parse(&deflate("{}")).unwrap_err().1.contains("no `packages`"));
        assert!(parse(&deflate(r#"{"packages":[{"name":"a"}]}"#)).unwrap_err().1.contains("`packages[0]`"));
        assert!(parse(&deflate(r#"{"packages":[{"name":"a","version":"1","kind":"dev"}]}"#)).unwrap_err().1.contains("kind"));
        // A file cut inside the section.
        let file = elf(&deflate(JSON));
        assert!(read_section(&file[..0x110], 0x100, 50).is_err());
        // Any cut or flipped byte of the header table: an answer, never a panic.
        for cut in 0..file.len() {
            let mut s = Sniffer::default();
            s.write_all(&file[..cut]).unwrap();
            let _ = s.locate();
            let mut flipped = file.clone();
            flipped[cut] ^= 0xff;
            let mut s = Sniffer::default();
            s.write_all(&flipped).unwrap();
            let _ = s.locate();
        }
    }
}
