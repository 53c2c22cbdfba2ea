//! Advisory locks that serialize commands working on the same state (a release directory, a
//! channel store, a kit import target, a publish destination).
//!
//! An exclusive `flock(2)` on a lock file (through `std::fs::File::lock`): the kernel releases
//! it when its holder exits, killed included, so a lock of a dead process is simply taken
//! over and a leftover lock file never blocks anyone. The file also says who holds it (pid,
//! command, since when), for the "waiting for ... held by" message; that text is advice only,
//! the lock is the `flock`.
//!
//! The holder removes the file when it is done, so nothing is left beside the state. A waiter
//! that then gets the lock of the removed file sees that the path no longer names the file it
//! locked, and starts again on the path's new file: two holders never coexist.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock at `path` (created with its parent directories), waiting while another
    /// process holds it. Before waiting, `waiting` is told who holds it.
    pub fn acquire(path: &Path, what: &str, waiting: &dyn Fn(String)) -> io::Result<StateLock> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut told = false;
        let mut file = loop {
            let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    if !told {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        let holder = if holder.is_empty() { "another process".to_owned() } else { holder.to_owned() };
                        waiting(format!("waiting for {what}: the lock `{}` is held by {holder}", path.display()));
                        told = true;
                    }
                    file.lock()?;
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
            // The holder before us may have removed the file we locked: then start again.
            use std::os::unix::fs::MetadataExt as _;
            match fs::metadata(path) {
                Ok(m) if m.ino() == file.metadata()?.ino() && m.dev() == file.metadata()?.dev() => break file,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        };
        let me = format!(
            "PID {} (`{}`, since {})\n",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" "),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
        );
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(me.as_bytes())?;
        file.flush()?;
        Ok(StateLock { file, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Removed while still locked: a waiter on this file starts again (see the module doc).
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// The lock file of a state at `path` (a directory or file): `.<name>.lock` beside it.
pub fn beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".to_owned());
    path.with_file_name(format!(".{name}.lock"))
}

/// The lock file of a remote state named `key` (a registry destination): under the system's
/// temporary directory, one per user.
pub fn for_remote(key: &str) -> PathBuf {
    let safe: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    let user = std::env::var("USER").unwrap_or_else(|_| "user".to_owned());
    std::env::temp_dir().join(format!("stellaops-locks-{user}")).join(format!("{safe}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_second_taker_waits_names_the_holder_and_gets_the_lock_once_released() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x/.state.lock");
        let first = StateLock::acquire(&path, "the state", &|_| panic!("nobody holds it")).unwrap();
        let told = Arc::new(Mutex::new(Vec::new()));
        let t = {
            let (path, told) = (path.clone(), told.clone());
            // A lock is per open file description: another open in another thread conflicts
            // as another process would.
            std::thread::spawn(move || StateLock::acquire(&path, "the state", &|m| told.lock().unwrap().push(m)).map(|_| ()))
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!t.is_finished(), "the second taker did not wait");
        drop(first);
        t.join().unwrap().unwrap();
        assert!(!path.exists(), "the lock file is left behind");
        let told = told.lock().unwrap();
        assert_eq!(told.len(), 1);
        assert!(told[0].contains(&format!("held by PID {}", std::process::id())), "{told:?}");
    }

    /// Takers that remove the file on release never overlap (the re-open after a removal).
    #[test]
    fn many_takers_never_hold_it_at_once() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(".s.lock");
        let inside = AtomicBool::new(false);
        let entered = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        let _l = StateLock::acquire(&path, "s", &|_| {}).unwrap();
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        entered.fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.store(false, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(entered.load(Ordering::SeqCst), 100);
        assert!(!path.exists());
    }

    #[test]
    fn a_leftover_lock_file_of_a_dead_holder_does_not_block() {
        let d = tempfile::tempdir().unwrap();
        let path = beside(&d.path().join("2.4.1-edge"));
        assert_eq!(path.file_name().unwrap(), ".2.4.1-edge.lock");
        fs::write(&path, "PID 999999 (`gone`)\n").unwrap();
        let l = StateLock::acquire(&path, "x", &|m| panic!("waited: {m}")).unwrap();
        assert!(fs::read_to_string(l.path()).unwrap().starts_with(&format!("PID {}", std::process::id())));
        assert!(for_remote("127.0.0.1:5000/ns").to_string_lossy().ends_with("127.0.0.1_5000_ns.lock"));
    }
}
