//! Replacing a file so that nothing else is hurt: [`write_atomic`], and [`check_writable`], the
//! same checks made before a long run instead of at its first save.
//!
//! A write goes to a temporary file of its own in the target's folder (`.<name>.<pid>.<n>.tmp`,
//! `n` counting the process's writes, created with `create_new`), is flushed to disk and renamed
//! over the target. What the path names is looked at first: a symlink is followed to the file it
//! names, and anything that is not a regular file (a folder, a FIFO, a device such as
//! `/dev/null`, a socket) is refused rather than replaced. After a successful write, temporary
//! files of the same target left by killed writers are removed.

use crate::{Error, Result};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Symlinks followed before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;
/// Bytes of the target's name kept in a temporary file's name. With the dot, pid (at most 10
/// digits), counter (at most 20) and `.tmp`, the name stays within the usual 255-byte limit.
const NAME_BYTES: usize = 200;
/// Tries at a fresh temporary name when one exists already (left by a process of the same pid).
const CREATE_TRIES: usize = 64;
/// A temporary file untouched this long is stale even when a process of its pid runs (the pid
/// was reused, or the writer was stopped and never resumed).
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// A temporary file of a process that does not run here is left alone this long after its last
/// change: its writer may run in another pid namespace (another container on a shared folder)
/// and be about to rename it.
pub const DEAD_GRACE: Duration = Duration::from_secs(60);

/// Writes of this process so far: the `<n>` that makes every temporary name unique.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that a crash at any moment leaves either the old file or the new
/// one, and nothing but `path` is ever changed:
///
/// - A symlink is written through: the file it names (created if the link dangles) is replaced,
///   atomically, in that file's own folder; the link itself stays as it is.
/// - A path that exists and is not a regular file (a folder, a FIFO, a device such as
///   `/dev/null`, a socket) is refused with an [`Error::Io`] of kind `InvalidInput`, and left
///   alone.
/// - The bytes go to a temporary file of this write alone (`.<name>.<pid>.<n>.tmp`, `n` counting
///   the process's writes, created with `create_new`; `<name>` cut to 200 bytes so long legal
///   names still fit), which is flushed to disk and renamed over the target, and then the folder
///   is flushed. Threads and processes saving the same path at once each rename a whole file,
///   so a reader sees one of them, never a mix. A replaced file's permissions are kept.
/// - On error the temporary file is removed and the target is untouched; the error names `path`
///   (the file the caller asked for, not the temporary one).
/// - After a successful write, temporary files of the same target left by killed writers are
///   removed: those of a process that does not run (no `/proc/<pid>`) and unchanged for
///   [`DEAD_GRACE`], and any unchanged for [`STALE_AFTER`]. A live writer's file is left alone.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source: io::Error| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let target = resolve(path).map_err(io)?;
    let existing = regular_or_absent(&target).map_err(io)?;
    let (dir, name) = folder_and_name(&target).map_err(io)?;
    let prefix = tmp_prefix(name);
    let (tmp, mut file) = create_tmp(&dir, &prefix).map_err(io)?;
    let result = (|| {
        file.write_all(bytes)?;
        if let Some(old) = &existing {
            file.set_permissions(old.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    // Make the rename itself durable; a folder that cannot be opened for sync is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    remove_stale(&dir, &prefix);
    Ok(())
}

/// Checks that [`write_atomic`] can write `path`, so a long run fails at its start rather than at
/// its first save: symlinks are followed as there, the path must not name anything but a
/// regular file, and its folder must exist and accept a new file (one is created there and
/// removed). The error names `path` and says what is wrong.
pub fn check_writable(path: &Path) -> Result<()> {
    let io = |source: io::Error| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let target = resolve(path).map_err(io)?;
    regular_or_absent(&target).map_err(io)?;
    let (dir, name) = folder_and_name(&target).map_err(io)?;
    let in_folder = |e: io::Error| {
        io(io::Error::new(
            e.kind(),
            format!("folder {}: {e}", dir.display()),
        ))
    };
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(in_folder(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a folder",
            )));
        }
        Err(e) => return Err(in_folder(e)),
    }
    let (tmp, file) = create_tmp(&dir, &tmp_prefix(name)).map_err(in_folder)?;
    drop(file);
    let _ = fs::remove_file(&tmp);
    Ok(())
}

/// `path` with its symlinks followed to the file they name, which need not exist yet.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p)?;
                // A relative link is relative to the link's folder; `join` keeps an absolute one.
                p = match p.parent() {
                    Some(dir) => dir.join(to),
                    None => to,
                };
            }
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => return Ok(p),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

/// The metadata of `path` if it is a regular file, `None` if nothing is there, and an
/// `InvalidInput` error naming what it is otherwise.
fn regular_or_absent(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m)),
        Ok(m) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "exists and is {}, not a regular file; refusing to replace it",
                describe(&m.file_type())
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// "a folder", "a FIFO", "a character device", ...
fn describe(t: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "a special file"
    }
}

/// The folder (`.` for a bare name) and the file name of `path`.
fn folder_and_name(path: &Path) -> io::Result<(PathBuf, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path (no file name)",
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// `.<name>.`, the start of every temporary file of `name`, with `name` cut to [`NAME_BYTES`]
/// bytes (at a character boundary).
fn tmp_prefix(name: &OsStr) -> String {
    let name = name.to_string_lossy();
    let mut end = name.len().min(NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}.", &name[..end])
}

/// Creates `<prefix><pid>.<n>.tmp` in `dir`, new, for this write alone.
fn create_tmp(dir: &Path, prefix: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut tries = 0;
    loop {
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{prefix}{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < CREATE_TRIES => {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pid in a temporary file's name `<prefix><pid>.<n>.tmp`; `None` for any other name.
fn tmp_pid(name: &str, prefix: &str) -> Option<u32> {
    let middle = name.strip_prefix(prefix)?.strip_suffix(".tmp")?;
    let (pid, n) = middle.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(pid) && digits(n) {
        pid.parse().ok()
    } else {
        None
    }
}

/// `false` only when `/proc` shows that no process `pid` runs here; without `/proc` every pid
/// counts as running.
fn running(pid: u32) -> bool {
    pid == std::process::id()
        || !Path::new("/proc/self").exists()
        || Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the temporary files of `prefix` in `dir` that no live writer can still rename (see
/// [`write_atomic`]). Failures are ignored: this is housekeeping.
fn remove_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let Some(pid) = tmp_pid(&entry.file_name().to_string_lossy(), prefix) else {
            continue;
        };
        // `DirEntry::metadata` does not follow symlinks: only regular files are removed.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or(Duration::ZERO);
        if meta.is_file() && (age >= STALE_AFTER || (age >= DEAD_GRACE && !running(pid))) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_parse_back_to_their_pid_only_for_their_target() {
        let prefix = tmp_prefix(OsStr::new("a.st"));
        assert_eq!(prefix, ".a.st.");
        assert_eq!(tmp_pid(".a.st.123.7.tmp", &prefix), Some(123));
        // Another target whose name starts the same, and other files.
        for other in [
            ".a.st.5.123.7.tmp",
            ".a.st.123.tmp",
            ".a.st..7.tmp",
            ".a.st.x.7.tmp",
            "a.st",
            ".a.st.123.7.tmpx",
        ] {
            assert_eq!(tmp_pid(other, &prefix), None, "{other}");
        }
        let long = "é".repeat(150);
        let prefix = tmp_prefix(OsStr::new(&long));
        assert!(prefix.len() <= NAME_BYTES + 2 && prefix.ends_with("é."));
    }
}
