//! Test hooks: faults injected at the stage boundaries of a release, so that tests can prove
//! that a failure is loud (an unreadable evidence file stops the release naming it; a panic
//! exits 2 with "internal error"). Read from the environment variable `STELLAOPS_TEST_FAULT`
//! only, never from a flag or a file, and undocumented for users:
//!
//! - `panic@<point>`: panics there;
//! - `unreadable@<point>=<path>`: replaces `<path>` (relative to the staging release
//!   directory) with an empty directory, so reading it fails as an unreadable file does (the
//!   tests run as root, for whom permission bits do not make a file unreadable).
//!
//! - `reorder@<point>=<path>`: in a process whose `TZ` is not `UTC` (the second build of
//!   `repro`), swaps the first two entries of the `components` array of the JSON file `<path>`:
//!   a generator whose output order depends on its environment.
//!
//! - `pause@release:<point>`: stops there until killed ([`oci::pause`]), for the kill tests.
//!
//! Points: `plan`, `build`, `evidence`, `sign`, `manifest` (each after that stage), `write`
//! (before the release directory is put in place).
//!
//! And one fault inside the build, for the drift gate's tests (a layer the build does not
//! account for, which no backend makes on its own):
//!
//! - `stowaway@<component>=<image path>[,<image path>...]`: the daemonless backend writes a
//!   small file at each `<image path>` into the last layer of `<component>`'s images and
//!   leaves it out of what the build records; a name `.wh.<name>` makes it a whiteout, which
//!   removes `<name>` of the base.

use std::path::Path;

/// The environment variable that holds a fault.
pub const VAR: &str = "STELLAOPS_TEST_FAULT";

/// Injects the configured fault if it is for `point` (`pause@release:<point>` stops there:
/// [`oci::pause`]).
pub fn at(point: &str, staging: &Path) {
    oci::pause::at(&format!("release:{point}"));
    let Ok(spec) = std::env::var(VAR) else { return };
    if let Some(p) = spec.strip_prefix("panic@") {
        if p == point {
            panic!("fault injected by {VAR} after the {point} stage");
        }
    } else if let Some((p, rel)) = spec.strip_prefix("reorder@").and_then(|r| r.split_once('=')) {
        if p == point && std::env::var("TZ").is_ok_and(|tz| tz != "UTC") {
            let path = staging.join(rel);
            let v: Option<serde_json::Value> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(mut v) = v {
                if let Some(list) = v.get_mut("components").and_then(|c| c.as_array_mut()).filter(|l| l.len() > 1) {
                    list.swap(0, 1);
                }
                let _ = std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap_or_default());
            }
        }
    } else if let Some(rest) = spec.strip_prefix("unreadable@") {
        if let Some((p, rel)) = rest.split_once('=') {
            if p == point {
                let path = staging.join(rel);
                // A hook for tests: what it cannot do shows up as the test's failure.
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::create_dir_all(&path);
            }
        }
    }
}

/// The image paths of a `stowaway@<component>=<path>,...` fault for `component` (sorted, as
/// a layer writes them); empty without one.
pub fn stowaways(component: &str) -> Vec<String> {
    let Ok(spec) = std::env::var(VAR) else { return Vec::new() };
    let mut paths: Vec<String> = spec
        .strip_prefix("stowaway@")
        .and_then(|rest| rest.split_once('='))
        .filter(|(c, _)| *c == component)
        .map(|(_, list)| list.split(',').map(|p| format!("/{}", p.trim_start_matches('/'))).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

/// What a stowaway file holds.
pub const STOWAWAY: &[u8] = b"stowaway: not declared by the build\n";
