//! The one way the workspace runs a subprocess (recipe build commands, release gates, the two
//! builds of `repro`, Docker credential helpers): a [`Cmd`] says in words what it does, logs
//! its argv at debug level, captures both streams, can be bounded in time, and every failure
//! ([`CmdError`]) carries the command line and the tail of what it printed.
//!
//! std's `Command` is kept underneath; what it lacks (a time bound while both pipes are
//! drained, errors that name the command) is the little written here. `duct` or
//! `wait-timeout` would bring one of the two each, not both, for a ~100-line need.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How many lines of output an error carries.
pub const TAIL_LINES: usize = 20;

/// How long, after a time bound stopped a command, its output streams are still read.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A command to run, with a one-line summary of what it does (for progress and errors).
#[derive(Debug)]
pub struct Cmd {
    what: String,
    command: Command,
    argv: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    sample_peak_memory: bool,
}

/// A command that ran to its end (whatever its status).
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    /// Its peak resident memory in KiB (`VmHWM`, sampled every 20 ms while it ran), when
    /// [`Cmd::sample_peak_memory`] asked for it. The process itself only, not its children.
    pub peak_rss_kib: Option<u64>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// The last `n` lines of stderr (else stdout), each indented for an error message.
    pub fn tail(&self, n: usize) -> String {
        let text = if self.stderr.iter().any(|b| !b.is_ascii_whitespace()) { &self.stderr } else { &self.stdout };
        tail(&String::from_utf8_lossy(text), n)
    }
    fn status(&self) -> String {
        match self.code {
            Some(c) => format!("exit status {c}"),
            None => "ended by a signal".to_owned(),
        }
    }
}

/// The `VmHWM` (peak resident set) of a `/proc/<pid>/status` text, in KiB.
pub fn vm_hwm_kib(proc_status: &str) -> Option<u64> {
    proc_status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// The last `n` lines of `text`, each prefixed with `  | `.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("{what}: `{command}` could not start: {source}")]
    Start {
        what: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: `{command}` failed ({status}){}", if .tail.is_empty() { String::new() } else { format!(":\n{}", .tail) })]
    Failed { what: String, command: String, status: String, code: Option<i32>, tail: String },
    #[error("{what}: `{command}` did not finish within {seconds} s and was stopped{}", if .tail.is_empty() { String::new() } else { format!(":\n{}", .tail) })]
    TimedOut { what: String, command: String, seconds: u64, tail: String },
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>, what: impl Into<String>) -> Cmd {
        let program = program.as_ref().to_owned();
        Cmd {
            what: what.into(),
            command: Command::new(&program),
            argv: vec![program],
            stdin: None,
            timeout: None,
            sample_peak_memory: false,
        }
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.command.arg(a.as_ref());
        self.argv.push(a.as_ref().to_owned());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Cmd {
        for a in args {
            self = self.arg(a);
        }
        self
    }
    pub fn current_dir(mut self, dir: &Path) -> Cmd {
        self.command.current_dir(dir);
        self
    }
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.command.env(k, v);
        self
    }
    pub fn envs<I: IntoIterator<Item = (K, V)>, K: AsRef<OsStr>, V: AsRef<OsStr>>(mut self, vars: I) -> Cmd {
        self.command.envs(vars);
        self
    }
    pub fn env_clear(mut self) -> Cmd {
        self.command.env_clear();
        self
    }
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Cmd {
        self.command.env_remove(k);
        self
    }
    /// Bytes written to its stdin (else stdin is empty).
    pub fn stdin(mut self, bytes: Vec<u8>) -> Cmd {
        self.stdin = Some(bytes);
        self
    }
    /// Stops it (SIGKILL) after `d`.
    pub fn timeout(mut self, d: Duration) -> Cmd {
        self.timeout = Some(d);
        self
    }
    /// Samples its peak resident memory while it runs (Linux `/proc/<pid>/status`, `VmHWM`)
    /// into [`Finished::peak_rss_kib`]. A sample is taken every 20 ms, so a process shorter
    /// than that may report none.
    pub fn sample_peak_memory(mut self) -> Cmd {
        self.sample_peak_memory = true;
        self
    }
    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        self.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    }

    /// Runs it to its end and returns what it did, whatever its exit status; an error only
    /// when it could not start or ran past its time bound.
    pub fn output(self) -> Result<Finished, CmdError> {
        let (what, command, seconds) = (self.what.clone(), self.command_line(), self.timeout.map_or(0, |t| t.as_secs()));
        match self.output_bounded()? {
            (f, false) => Ok(f),
            (f, true) => Err(CmdError::TimedOut { what, command, seconds, tail: f.tail(TAIL_LINES) }),
        }
    }

    /// Like [`Cmd::output`], but a run stopped by its time bound is not an error: the flag says
    /// whether it was stopped, and what it printed until then is kept (for a log).
    pub fn output_bounded(mut self) -> Result<(Finished, bool), CmdError> {
        let command = self.command_line();
        tracing::debug!(what = %self.what, %command, "running");
        let start = Instant::now();
        let stdin = if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() };
        let spawned = self.command.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        let mut child = spawned.map_err(|source| CmdError::Start { what: self.what.clone(), command: command.clone(), source })?;
        let feeder = match (child.stdin.take(), self.stdin.take()) {
            (Some(mut pipe), Some(bytes)) => Some(std::thread::spawn(move || {
                // A child that exits without reading its input is not an error here.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        // Each stream is read into a shared buffer, chunk by chunk, so that what was printed
        // before a time bound is kept even when a grandchild still holds the pipe open.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let drain = |r: Option<Box<dyn Read + Send>>| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let (shared, done) = (buf.clone(), done_tx.clone());
            std::thread::spawn(move || {
                if let Some(mut r) = r {
                    let mut chunk = [0u8; 8192];
                    // A read error ends the capture; the status below still tells the outcome.
                    while let Ok(n @ 1..) = r.read(&mut chunk) {
                        shared.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&chunk[..n]);
                    }
                }
                // The receiver may have stopped waiting (after a time bound).
                let _ = done.send(());
            });
            buf
        };
        let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
        drop(done_tx);
        let mut timed_out = false;
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak: Option<u64> = None;
        let status = loop {
            if self.sample_peak_memory {
                if let Some(kib) = fs::read_to_string(&status_file).ok().as_deref().and_then(vm_hwm_kib) {
                    peak = Some(peak.map_or(kib, |p| p.max(kib)));
                }
            } else if self.timeout.is_none() {
                // Nothing to do while it runs: wait without polling (no 20 ms rounding).
                match child.wait() {
                    Ok(s) => break Some(s),
                    Err(source) => return Err(CmdError::Start { what: self.what, command, source }),
                }
            }
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if self.timeout.is_some_and(|t| start.elapsed() > t) => {
                    timed_out = true;
                    // Best effort: the child may have exited in between.
                    let _ = child.kill();
                    break child.wait().ok();
                }
                // Polling is the portable way to bound a child's time with std alone.
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(source) => return Err(CmdError::Start { what: self.what, command, source }),
            }
        };
        // Both streams end when the child ends, unless a process it started still holds them:
        // after a time bound, that is waited for only briefly.
        for _ in 0..2 {
            let ended = if timed_out { done_rx.recv_timeout(DRAIN_GRACE).is_ok() } else { done_rx.recv().is_ok() };
            if !ended {
                break;
            }
        }
        if let Some(f) = feeder {
            if !timed_out || f.is_finished() {
                let _ = f.join();
            }
        }
        let take = |b: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()));
        let finished = Finished {
            code: status.and_then(|s| s.code()),
            stdout: take(&out),
            stderr: take(&err),
            elapsed: start.elapsed(),
            peak_rss_kib: peak,
        };
        Ok((finished, timed_out))
    }

    /// Runs it and requires exit status 0.
    pub fn run(self) -> Result<Finished, CmdError> {
        let what = self.what.clone();
        let command = self.command_line();
        let f = self.output()?;
        if f.success() {
            Ok(f)
        } else {
            Err(CmdError::Failed { what, command, status: f.status(), code: f.code, tail: f.tail(TAIL_LINES) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_command_and_carries_the_tail() {
        let e = Cmd::new("sh", "a test command").args(["-c", "echo one; echo two >&2; exit 7"]).run().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("a test command: `sh -c echo one; echo two >&2; exit 7` failed (exit status 7)"), "{msg}");
        assert!(msg.contains("  | two"), "{msg}");
        assert!(matches!(e, CmdError::Failed { code: Some(7), .. }));
    }

    #[test]
    fn stdin_is_fed_and_stdout_captured() {
        let f = Cmd::new("cat", "echo stdin").stdin(b"hello".to_vec()).run().unwrap();
        assert_eq!(f.stdout, b"hello");
    }

    #[test]
    fn a_command_past_its_time_is_stopped() {
        let t = Instant::now();
        let e = Cmd::new("sleep", "a slow command").arg("30").timeout(Duration::from_millis(200)).output().unwrap_err();
        assert!(matches!(e, CmdError::TimedOut { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_bounded_run_keeps_what_it_printed_before_it_was_stopped() {
        let cmd = Cmd::new("sh", "a slow command").args(["-c", "echo early; exec sleep 30"]).timeout(Duration::from_millis(300));
        let (f, timed_out) = cmd.output_bounded().unwrap();
        assert!(timed_out);
        assert_eq!(f.code, None);
        assert_eq!(f.stdout, b"early\n");
        let (f, timed_out) = Cmd::new("true", "a quick command").timeout(Duration::from_secs(30)).output_bounded().unwrap();
        assert!(!timed_out && f.success());
    }

    #[test]
    fn a_grandchild_holding_the_pipes_does_not_hold_up_a_bounded_run() {
        let t = Instant::now();
        let cmd = Cmd::new("sh", "a slow pipeline").args(["-c", "echo early; sleep 30; true"]).timeout(Duration::from_millis(300));
        let (f, timed_out) = cmd.output_bounded().unwrap();
        assert!(timed_out);
        assert_eq!(f.stdout, b"early\n");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn peak_memory_is_sampled_when_asked() {
        // A shell that holds ~64 MiB for half a second: its VmHWM must show it.
        let script = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); sleep 0.5; echo ${#x}";
        let f = Cmd::new("sh", "a memory-hungry shell").args(["-c", script]).sample_peak_memory().run().unwrap();
        assert_eq!(f.stdout, b"67108864\n");
        let kib = f.peak_rss_kib.expect("sampled");
        assert!(kib > 60 * 1024, "{kib} KiB");
        let f = Cmd::new("true", "a quick command").run().unwrap();
        assert_eq!(f.peak_rss_kib, None);
        assert_eq!(vm_hwm_kib("Name:\tx\nVmHWM:\t   1234 kB\nVmRSS:\t 12 kB\n"), Some(1234));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn a_missing_program_cannot_start() {
        let e = Cmd::new("/nonexistent/stellaops-tool", "a missing tool").run().unwrap_err();
        assert!(matches!(e, CmdError::Start { .. }));
        assert!(e.to_string().contains("/nonexistent/stellaops-tool"));
    }
}
