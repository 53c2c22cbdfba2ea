//! The build information Go (1.18 and later) writes into every program it links: the Go
//! version and the modules the program was built from (`go version -m` prints it).
//!
//! Found while a file streams through the scan, without holding the file: the file must start
//! as an ELF object; the 14-byte marker `\xff Go buildinf:` is searched across chunk
//! boundaries, and what follows it (a 32-byte header, then two length-prefixed strings) is
//! kept, up to [`MAX`]. Programs of Go before 1.18 point at their strings from the header
//! instead (a format that needs the ELF sections): they are not read, and stay files.
//!
//! Written by hand: the format is two varint-prefixed strings after a fixed header, and the
//! crates that read it parse the whole ELF file from memory.

use std::io;

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER: usize = 32;
/// At most this much after the marker is kept (module lists of large programs are ~100 KiB).
pub const MAX: usize = 1 << 20;

#[derive(Debug, Default)]
enum State {
    #[default]
    Start,
    Searching,
    Capturing,
    Done,
}

/// An `io::Write` sink that finds the build information in a stream.
#[derive(Debug, Default)]
pub struct Sniffer {
    state: State,
    head: Vec<u8>,
    /// The last bytes seen while searching (a marker may straddle two writes).
    tail: Vec<u8>,
    captured: Vec<u8>,
}

impl io::Write for Sniffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        loop {
            match self.state {
                State::Start => {
                    let need = 4 - self.head.len();
                    let take = need.min(rest.len());
                    self.head.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.head.len() < 4 {
                        return Ok(buf.len());
                    }
                    self.state = if self.head == b"\x7fELF" { State::Searching } else { State::Done };
                }
                State::Searching => {
                    let mut window = std::mem::take(&mut self.tail);
                    window.extend_from_slice(rest);
                    match window.windows(MAGIC.len()).position(|w| w == MAGIC) {
                        Some(at) => {
                            self.captured.extend_from_slice(&window[at..]);
                            self.captured.truncate(MAX);
                            self.state = State::Capturing;
                            return Ok(buf.len());
                        }
                        None => {
                            let keep = window.len().min(MAGIC.len() - 1);
                            self.tail = window[window.len() - keep..].to_vec();
                            return Ok(buf.len());
                        }
                    }
                }
                State::Capturing => {
                    let room = MAX.saturating_sub(self.captured.len());
                    self.captured.extend_from_slice(&rest[..room.min(rest.len())]);
                    if self.captured.len() >= MAX {
                        self.state = State::Done;
                    }
                    return Ok(buf.len());
                }
                State::Done => return Ok(buf.len()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sniffer {
    /// The raw bytes from the marker on, when the stream was an ELF file that has one.
    pub fn found(self) -> Option<Vec<u8>> {
        (!self.captured.is_empty()).then_some(self.captured)
    }
}

/// What the build information says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoInfo {
    /// `go1.19.8`.
    pub go_version: String,
    /// The main module: (path, version); version `(devel)` for a local build.
    pub main: Option<(String, String)>,
    /// Dependencies as linked: (path, version), a replacement (`=>`) in place of what it replaced.
    pub deps: Vec<(String, String)>,
}

/// Reads the bytes [`Sniffer::found`] kept. `Ok(None)`: a pre-1.18 program (not read).
/// An error names the line of the module list (1 for the header) and what is wrong.
pub fn parse(raw: &[u8]) -> Result<Option<GoInfo>, (usize, String)> {
    if raw.len() < HEADER {
        return Err((1, format!("the build information header is cut short ({} bytes)", raw.len())));
    }
    let flags = raw[15];
    if flags & 0x2 == 0 {
        return Ok(None);
    }
    let mut at = HEADER;
    let mut bytes = |what: &str| -> Result<Vec<u8>, (usize, String)> {
        let (len, used) = uvarint(&raw[at..]).ok_or_else(|| (1, format!("the length of the {what} is not a varint")))?;
        at += used;
        let end = at.checked_add(usize::try_from(len).unwrap_or(usize::MAX)).filter(|e| *e <= raw.len());
        let end = end.ok_or_else(|| (1, format!("the {what} ({len} bytes) runs past what was kept")))?;
        let s = raw[at..end].to_vec();
        at = end;
        Ok(s)
    };
    let go_version = String::from_utf8(bytes("Go version")?).map_err(|_| (1, "the Go version is not UTF-8".to_owned()))?;
    let modinfo = bytes("module list")?;
    // The module list is framed by two 16-byte (binary) sentinels.
    let modinfo = if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' { &modinfo[16..modinfo.len() - 16] } else { &modinfo[..] };
    let modinfo = std::str::from_utf8(modinfo).map_err(|_| (1, "the module list is not UTF-8".to_owned()))?;
    let mut info = GoInfo { go_version, main: None, deps: Vec::new() };
    for (i, line) in modinfo.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || (i + 1, format!("`{}` is not `KIND\\tPATH\\tVERSION[\\tSUM]`", line.escape_debug()));
        match f.first().copied() {
            Some("mod") => info.main = Some((f.get(1).ok_or_else(bad)?.to_string(), f.get(2).ok_or_else(bad)?.to_string())),
            Some("dep") => info.deps.push((f.get(1).ok_or_else(bad)?.to_string(), f.get(2).ok_or_else(bad)?.to_string())),
            Some("=>") => {
                let r = (f.get(1).ok_or_else(bad)?.to_string(), f.get(2).ok_or_else(bad)?.to_string());
                *info.deps.last_mut().ok_or_else(bad)? = r;
            }
            _ => {}
        }
    }
    Ok(Some(info))
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn blob(version: &str, modinfo: impl AsRef<[u8]>) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(2);
        b.resize(HEADER, 0);
        for s in [version.as_bytes(), modinfo.as_ref()] {
            b.push(u8::try_from(s.len()).unwrap());
            b.extend_from_slice(s);
        }
        b
    }

    #[test]
    fn the_marker_is_found_across_writes_in_an_elf_file_only() {
        // Framed by binary sentinels, as the linker writes it.
        let sentinel = [0x30u8, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18, 0xe6];
        let mut info = sentinel.to_vec();
        info.extend_from_slice(b"path\tx\nmod\tx\t(devel)\t\ndep\ta.org/b\tv1.0.0\t\ndep\tc.org/d\tv0.1.0\t\n=>\tc.org/e\tv0.2.0\t\n");
        info.extend_from_slice(&sentinel);
        let mut file = b"\x7fELF".to_vec();
        file.extend(vec![0u8; 5000]);
        file.extend(blob("go1.19.8", &info));
        file.extend(vec![1u8; 300]);
        for chunk in [1, 7, 13, 4096] {
            let mut s = Sniffer::default();
            for c in file.chunks(chunk) {
                s.write_all(c).unwrap();
            }
            let got = parse(&s.found().unwrap()).unwrap().unwrap();
            assert_eq!(got.go_version, "go1.19.8");
            assert_eq!(got.main, Some(("x".to_owned(), "(devel)".to_owned())));
            assert_eq!(got.deps, [("a.org/b".to_owned(), "v1.0.0".to_owned()), ("c.org/e".to_owned(), "v0.2.0".to_owned())]);
        }
        let mut not_elf = b"#!/bin/sh\n".to_vec();
        not_elf.extend(blob("go1.19.8", &info));
        let mut s = Sniffer::default();
        s.write_all(&not_elf).unwrap();
        assert!(s.found().is_none());
    }

    #[test]
    fn bad_build_information_is_an_error_not_a_panic() {
        assert!(parse(&MAGIC[..]).is_err());
        let mut b = blob("go1.19.8", "x");
        b.truncate(HEADER + 3);
        assert!(parse(&b).unwrap_err().1.contains("runs past"));
        let mut old = blob("go1.15", "");
        old[15] = 0;
        assert_eq!(parse(&old).unwrap(), None);
        let e = parse(&blob("go1.19.8", "=>\tx\tv1\t\n")).unwrap_err();
        assert_eq!(e.0, 1);
        let mut huge = blob("", "");
        huge.truncate(HEADER);
        huge.extend([0xff; 12]);
        assert!(parse(&huge).is_err());
    }
}
