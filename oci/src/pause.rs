//! A test hook: `STELLAOPS_TEST_FAULT=pause@<point>` stops the process at `<point>` (it says
//! so on stderr, then waits for ever) so that a test can kill it there with SIGKILL and check
//! what the next run finds. Read from the environment only, undocumented for users; the
//! points are named where [`at`] is called (`release:<stage>`, `kit-import:<step>`,
//! `promote:<step>`, `trust:<step>`).

use std::io::Write as _;

/// Stops here for ever if the test hook names `point`.
pub fn at(point: &str) {
    let Ok(spec) = std::env::var("STELLAOPS_TEST_FAULT") else { return };
    if spec.strip_prefix("pause@") != Some(point) {
        return;
    }
    let _ = writeln!(std::io::stderr().lock(), "paused at {point} (test hook)");
    loop {
        std::thread::park();
    }
}
