//! Version ordering per ecosystem, for advisory ranges: Debian's (dpkg's), Python's (PEP 440)
//! and semantic versions for the others.
//!
//! Written here: both orderings are short and exactly specified, and each is tested against
//! its reference implementation (`dpkg --compare-versions`, PyPA's `packaging.version`). The
//! crates that implement them (`debversion`, `pep440_rs`) bring parsers for much more than
//! ordering (dependency specifiers, markers), with their own dependency trees.

use std::cmp::Ordering;

use crate::stages::evidence::sbom::locks::Ecosystem;

/// Orders `a` and `b` as `ecosystem` does; `None` when one of them is not a version of it.
pub fn compare(ecosystem: Ecosystem, a: &str, b: &str) -> Option<Ordering> {
    match ecosystem {
        Ecosystem::Deb => Some(dpkg(a, b)),
        Ecosystem::Python => Some(Pep440::parse(a)?.cmp(&Pep440::parse(b)?)),
        _ => Some(semver(a)?.cmp(&semver(b)?)),
    }
}

/// A semantic version (`v` prefix allowed; `1.2` and `1` as `1.2.0` and `1.0.0`).
pub fn semver(v: &str) -> Option<semver::Version> {
    let v = v.strip_prefix('v').unwrap_or(v);
    semver::Version::parse(v).ok().or_else(|| {
        let parts = v.split('.').count();
        if parts < 3 && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            semver::Version::parse(&format!("{v}{}", ".0".repeat(3 - parts))).ok()
        } else {
            None
        }
    })
}

// --- Debian: deb-version(7) ---

/// `[epoch:]upstream[-revision]`, compared by epoch (a number), then upstream, then revision,
/// each with dpkg's algorithm.
pub fn dpkg(a: &str, b: &str) -> Ordering {
    let split = |v: &str| {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => (e.parse::<u64>().unwrap_or(0), r),
            _ => (0, v),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        (epoch, upstream.to_owned(), revision.to_owned())
    };
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb).then_with(|| part(&ua, &ub)).then_with(|| part(&ra, &rb))
}

/// The weight of a character in a non-digit run: `~` before everything (even the end), then
/// the end, then letters, then the rest by ASCII.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating runs of non-digits (by [`weight`]) and digits (as numbers).
fn part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // The non-digit runs, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            let (wa, wb) = (weight(ca), weight(cb));
            if wa != wb {
                return wa.cmp(&wb);
            }
            if ca.is_some() {
                i += 1;
            }
            if cb.is_some() {
                j += 1;
            }
        }
        // The digit runs, as numbers (leading zeros do not count).
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let sj = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let o = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

// --- Python: PEP 440 ---

/// A PEP 440 version, as a sort key: epoch, release (trailing zeros dropped), pre-release,
/// post-release, development release, local label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pep440 {
    epoch: u64,
    release: Vec<u64>,
    /// (0 = a, 1 = b, 2 = rc, n); `Min` for a bare `.devN`, `Max` without one.
    pre: Bound<(u8, u64)>,
    /// `Min` without one.
    post: Bound<u64>,
    /// `Max` without one.
    dev: Bound<u64>,
    /// Segments: numbers sort after strings, both in order; none sorts first.
    local: Vec<(u8, u64, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Bound<T> {
    Min,
    Is(T),
    Max,
}

impl Pep440 {
    /// Parses the normalized and the accepted spellings (`1.0-rc.1`, `v1.0`, `1.0.post-1`...).
    pub fn parse(s: &str) -> Option<Pep440> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix('v').unwrap_or(&s);
        let (public, local) = match s.split_once('+') {
            Some((p, l)) => (p, Some(l)),
            None => (s, None),
        };
        let b = public.as_bytes();
        let mut at = 0;
        let num = |at: &mut usize| -> Option<u64> {
            let start = *at;
            while *at < b.len() && b[*at].is_ascii_digit() {
                *at += 1;
            }
            if start == *at {
                None
            } else {
                public[start..*at].parse().ok()
            }
        };
        let sep = |at: &mut usize| {
            if *at < b.len() && matches!(b[*at], b'.' | b'-' | b'_') {
                *at += 1;
            }
        };
        let word = |at: &mut usize, words: &[&str]| -> Option<String> {
            let rest = &public[*at..];
            let w = words.iter().filter(|w| rest.starts_with(**w)).max_by_key(|w| w.len())?;
            *at += w.len();
            Some((*w).to_owned())
        };
        let mut epoch = 0;
        let first = num(&mut at)?;
        let mut release = vec![first];
        if at < b.len() && b[at] == b'!' {
            epoch = first;
            at += 1;
            release = vec![num(&mut at)?];
        }
        while at + 1 < b.len() && b[at] == b'.' && b[at + 1].is_ascii_digit() {
            at += 1;
            release.push(num(&mut at)?);
        }
        while release.len() > 1 && release.last() == Some(&0) {
            release.pop();
        }
        let mut pre = None;
        let save = at;
        sep(&mut at);
        if let Some(w) = word(&mut at, &["alpha", "a", "beta", "b", "preview", "pre", "rc", "c"]) {
            let kind = match w.as_str() {
                "alpha" | "a" => 0,
                "beta" | "b" => 1,
                _ => 2,
            };
            sep(&mut at);
            pre = Some((kind, num(&mut at).unwrap_or(0)));
        } else {
            at = save;
        }
        let mut post = None;
        let save = at;
        if at < b.len() && b[at] == b'-' && at + 1 < b.len() && b[at + 1].is_ascii_digit() {
            at += 1;
            post = num(&mut at);
        } else {
            sep(&mut at);
            if word(&mut at, &["post", "rev", "r"]).is_some() {
                sep(&mut at);
                post = Some(num(&mut at).unwrap_or(0));
            } else {
                at = save;
            }
        }
        let mut dev = None;
        let save = at;
        sep(&mut at);
        if word(&mut at, &["dev"]).is_some() {
            sep(&mut at);
            dev = Some(num(&mut at).unwrap_or(0));
        } else {
            at = save;
        }
        if at != b.len() {
            return None;
        }
        let local = match local {
            None => Vec::new(),
            Some(l) => {
                let mut out = Vec::new();
                for seg in l.split(['.', '-', '_']) {
                    if seg.is_empty() || !seg.bytes().all(|c| c.is_ascii_alphanumeric()) {
                        return None;
                    }
                    out.push(match seg.parse::<u64>() {
                        Ok(n) => (1, n, String::new()),
                        Err(_) => (0, 0, seg.to_owned()),
                    });
                }
                out
            }
        };
        Some(Pep440 {
            epoch,
            release,
            pre: match (pre, post, dev) {
                (Some(p), _, _) => Bound::Is(p),
                (None, None, Some(_)) => Bound::Min,
                _ => Bound::Max,
            },
            post: post.map_or(Bound::Min, Bound::Is),
            dev: dev.map_or(Bound::Max, Bound::Is),
            local,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB: &[&str] = &[
        "1.0",
        "1.0-1",
        "1.0-1+b1",
        "1.0~rc1",
        "1.0~rc1-1",
        "1.0~~",
        "1.0~",
        "1.0a",
        "1.0+dfsg",
        "1.00",
        "1:0.9",
        "2:0",
        "1.35.0-4+deb12u1+b1",
        "1:1.35.0-4+deb12u1+b1",
        "1:1.35.0-4+deb12u2",
        "1:1.35.0-4",
        "3.0.11-1~deb12u2",
        "3.0.11-1",
        "0",
        "10",
        "1.2.3.4",
        "1.2-3.4",
        "a",
        "1.0-0",
    ];

    /// Every pair, against `dpkg --compare-versions` (the reference implementation).
    #[test]
    fn debian_ordering_is_dpkgs() {
        if which("dpkg").is_none() {
            assert!(std::env::var_os("CI").is_none(), "dpkg is missing: it is the reference for Debian versions");
            return;
        }
        for a in DEB {
            for b in DEB {
                let ours = dpkg(a, b);
                let lt = std::process::Command::new("dpkg").args(["--compare-versions", a, "lt", b]).status().unwrap().success();
                let eq = std::process::Command::new("dpkg").args(["--compare-versions", a, "eq", b]).status().unwrap().success();
                let theirs = if lt {
                    Ordering::Less
                } else if eq {
                    Ordering::Equal
                } else {
                    Ordering::Greater
                };
                assert_eq!(ours, theirs, "{a} vs {b}");
            }
        }
    }

    const PY: &[&str] = &[
        "1.0",
        "1.0.0",
        "1.0.dev0",
        "1.0a1",
        "1.0a1.dev2",
        "1.0alpha2",
        "1.0b1",
        "1.0rc1",
        "1.0c2",
        "1.0.post1",
        "1.0-1",
        "1.0.post1.dev3",
        "1.0+local.1",
        "1.0+local.abc",
        "1.0+2",
        "1!0.5",
        "v2.0",
        "2.0.0rc2",
        "1.1",
        "0.9.9",
        "1.0-rc.3",
        "1.0.post",
        "1.0.rev2",
    ];

    /// Every pair, against PyPA's `packaging.version` (the reference implementation).
    #[test]
    fn python_ordering_is_pep_440_as_packaging_orders_it() {
        let script = "import sys\nfrom packaging.version import Version\nvs=sys.argv[1:]\nfor a in vs:\n  print(' '.join(str((Version(a)>Version(b))-(Version(a)<Version(b))) for b in vs))";
        let out = std::process::Command::new("python3").arg("-c").arg(script).args(PY).output();
        let Some(out) = out.ok().filter(|o| o.status.success()) else {
            assert!(std::env::var_os("CI").is_none(), "python3 with `packaging` (Debian: python3-packaging) is the reference for PEP 440");
            return;
        };
        let table = String::from_utf8(out.stdout).unwrap();
        for (a, row) in PY.iter().zip(table.lines()) {
            for (b, cell) in PY.iter().zip(row.split(' ')) {
                let theirs = match cell {
                    "-1" => Ordering::Less,
                    "0" => Ordering::Equal,
                    _ => Ordering::Greater,
                };
                let ours = Pep440::parse(a).unwrap_or_else(|| panic!("{a}")).cmp(&Pep440::parse(b).unwrap());
                assert_eq!(ours, theirs, "{a} vs {b}");
            }
        }
        assert!(Pep440::parse("1.0 beta").is_none());
        assert!(Pep440::parse("not a version").is_none());
    }

    fn which(tool: &str) -> Option<std::path::PathBuf> {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|f| f.is_file()))
    }
}
