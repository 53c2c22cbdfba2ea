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
//! Points: `plan`, `build`, `evidence`, `sign`, `manifest` (each after that stage).

use std::path::Path;

/// The environment variable that holds a fault.
pub const VAR: &str = "STELLAOPS_TEST_FAULT";

/// Injects the configured fault if it is for `point`.
pub fn at(point: &str, staging: &Path) {
    let Ok(spec) = std::env::var(VAR) else { return };
    if let Some(p) = spec.strip_prefix("panic@") {
        if p == point {
            panic!("fault injected by {VAR} after the {point} stage");
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
