//! Directories put in place whole, and what a run killed part-way leaves beside them.
//!
//! A command assembles its output in a temporary directory beside the final one and then
//! swaps it in with one `renameat2(RENAME_EXCHANGE)`: a reader sees the previous directory or
//! the new one, never a mix and never nothing. On a file system without the exchange, the old
//! directory is first moved aside to `.<name>.old` and the next run ([`recover`]) puts it back
//! if the process died between the two renames.
//!
//! The temporary directories of a killed run are named after their final directory, so the
//! next run on the same state, holding its lock ([`crate::statelock`]), removes them
//! ([`sweep`]) without touching another state's.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the previous directory waits while `to` is replaced by two renames.
pub fn aside(to: &Path) -> PathBuf {
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".to_owned());
    to.with_file_name(format!(".{name}.old"))
}

/// Puts the directory `from` at `to`, replacing what was there in one step when the file
/// system allows it. `from` and `to` are on one file system (siblings).
pub fn replace_dir(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(to).is_err() {
        return fs::rename(from, to);
    }
    match rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, rustix::fs::RenameFlags::EXCHANGE) {
        // `from` now holds the previous directory.
        Ok(()) => fs::remove_dir_all(from),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::OPNOTSUPP => {
            let old = aside(to);
            if old.exists() {
                fs::remove_dir_all(&old)?;
            }
            fs::rename(to, &old)?;
            fs::rename(from, to)?;
            fs::remove_dir_all(&old)
        }
        Err(e) => Err(e.into()),
    }
}

/// Finishes or undoes a [`replace_dir`] that was killed between its two renames: the previous
/// directory goes back to `to` when nothing took its place, and is removed otherwise. Call
/// it holding the state's lock, before writing `to`.
pub fn recover(to: &Path) -> io::Result<()> {
    let old = aside(to);
    if !old.exists() {
        return Ok(());
    }
    if fs::symlink_metadata(to).is_err() {
        fs::rename(&old, to)
    } else {
        fs::remove_dir_all(&old)
    }
}

/// Removes every entry of `parent` whose name starts with `prefix` (directories with their
/// content): the temporary directories and files of runs that were killed. Call it holding
/// the lock of the state those names belong to.
pub fn sweep(parent: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = e.path();
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        removed.push(path);
    }
    Ok(removed)
}

/// A scratch directory (under the system's temporary directory, or a cache) that its process
/// holds an exclusive `flock(2)` on for its lifetime, removed when dropped. A process killed
/// with SIGKILL cannot remove it; the kernel drops its lock though, so the next [`Scratch`]
/// made with the same prefix finds it unlocked and removes it.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
    _held: fs::File,
}

impl Scratch {
    /// A new scratch directory `<temp dir>/<prefix>XXXXXX`, after removing the ones of that
    /// prefix whose process is gone.
    pub fn new(prefix: &str) -> io::Result<Scratch> {
        Scratch::new_in(&std::env::temp_dir(), prefix)
    }

    /// A new scratch directory `<parent>/<prefix>XXXXXX` (see [`Scratch::new`]).
    pub fn new_in(parent: &Path, prefix: &str) -> io::Result<Scratch> {
        remove_orphans(parent, prefix)?;
        loop {
            let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
            let held = match fs::File::open(dir.path()) {
                Ok(f) => f,
                // Removed by another process's sweep before we locked it: make another.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            held.lock()?;
            // A sweep that locked it first may have removed it meanwhile: then make another.
            use std::os::unix::fs::MetadataExt as _;
            match fs::metadata(dir.path()) {
                Ok(m) if m.ino() == held.metadata()?.ino() => return Ok(Scratch { dir, _held: held }),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the directory (to be renamed into place): no longer removed, by the drop or by a sweep
    /// once it has a name without the prefix.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

/// Removes the directories `<parent>/<prefix>*` that no live process holds locked; returns
/// how many it removed.
pub fn remove_orphans(parent: &Path, prefix: &str) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // Gone, or not ours to open: left alone.
        let Ok(f) = fs::File::open(e.path()) else { continue };
        if f.try_lock().is_ok() {
            // Its process is gone (or has not locked it yet: it sees the removal and makes
            // another). Removed while locked, so that such a process waits for the end.
            if fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_replaced_whole_and_an_interrupted_replace_is_undone() {
        let d = tempfile::tempdir().unwrap();
        let (new, dest) = (d.path().join(".dest.new"), d.path().join("dest"));
        fs::create_dir_all(&new).unwrap();
        fs::write(new.join("f"), "1").unwrap();
        replace_dir(&new, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "1");
        fs::create_dir_all(&new).unwrap();
        fs::write(new.join("f"), "2").unwrap();
        replace_dir(&new, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "2");
        assert!(!new.exists() && !aside(&dest).exists());

        // Killed between the renames of the fallback: the old one is put back.
        fs::rename(&dest, aside(&dest)).unwrap();
        recover(&dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "2");
        // Killed after them: the old one is removed.
        fs::create_dir_all(aside(&dest)).unwrap();
        recover(&dest).unwrap();
        assert!(!aside(&dest).exists() && dest.join("f").exists());

        fs::create_dir_all(d.path().join(".staging-dest-x/a")).unwrap();
        fs::write(d.path().join(".staging-dest-y"), "").unwrap();
        fs::create_dir_all(d.path().join(".staging-other-x")).unwrap();
        assert_eq!(sweep(d.path(), ".staging-dest-").unwrap().len(), 2);
        assert!(d.path().join(".staging-other-x").exists());
    }

    #[test]
    fn a_scratch_directory_of_a_dead_process_is_removed_by_the_next_one_and_a_live_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let live = Scratch::new_in(d.path(), "s-").unwrap();
        fs::write(live.path().join("f"), "x").unwrap();
        // Left by a killed process: nobody holds a lock on it.
        let dead = d.path().join("s-dead");
        fs::create_dir_all(dead.join("sub")).unwrap();
        let other = Scratch::new_in(d.path(), "s-").unwrap();
        assert!(!dead.exists(), "the dead process's scratch directory is left");
        assert!(live.path().join("f").is_file(), "a live scratch directory was removed");
        let (a, b) = (live.path().to_owned(), other.path().to_owned());
        drop((live, other));
        assert!(!a.exists() && !b.exists());
    }
}
