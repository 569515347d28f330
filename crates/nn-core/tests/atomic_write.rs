//! `write_atomic` and `check_writable` cannot hurt anything but the file asked for: folders,
//! FIFOs and devices are refused, symlinks are written through, concurrent writers never share
//! a temporary file, long names fit, and stale temporary files of killed writers are cleaned up
//! while live ones are left alone.

use nn_core::Error;
use nn_core::tensor_io::{
    DEAD_GRACE, STALE_AFTER, TensorFile, TensorWriter, check_writable, write_atomic,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn refused(result: nn_core::Result<()>, what: &str) {
    match result {
        Err(Error::Io { source, .. }) => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::InvalidInput,
                "{what}: {source}"
            );
            assert!(source.to_string().contains(what), "{source}");
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn a_path_that_exists_and_is_not_a_regular_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let folder = dir.join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("inside"), b"keep").unwrap();
    for (path, what) in [(&fifo, "a FIFO"), (&folder, "a folder")] {
        refused(write_atomic(path, b"x"), what);
        refused(check_writable(path), what);
    }
    // Nothing was replaced and no temporary file is left.
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(std::fs::read(folder.join("inside")).unwrap(), b"keep");
    assert_eq!(names(dir), ["fifo", "folder"]);
    // A symlink to a FIFO is refused as the FIFO is.
    let link = dir.join("link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    refused(write_atomic(&link, b"x"), "a FIFO");
    // A device: only checked, never written, so a failing test cannot replace it.
    refused(check_writable(Path::new("/dev/null")), "a character device");
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

#[test]
fn a_symlink_is_written_through_to_its_target_in_the_target_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let target = sub.join("real.bin");
    std::fs::write(&target, b"old").unwrap();
    // A relative link from another folder, and a link to that link.
    let link = dir.join("link.bin");
    std::os::unix::fs::symlink("sub/real.bin", &link).unwrap();
    let link2 = dir.join("link2.bin");
    std::os::unix::fs::symlink(&link, &link2).unwrap();
    write_atomic(&link2, b"new").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    for l in [&link, &link2] {
        assert!(
            std::fs::symlink_metadata(l)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
    assert_eq!(names(&sub), ["real.bin"]);
    check_writable(&link2).unwrap();
    // A dangling link creates its target.
    let dangling = dir.join("dangling.bin");
    std::os::unix::fs::symlink("sub/made.bin", &dangling).unwrap();
    write_atomic(&dangling, b"made").unwrap();
    assert_eq!(std::fs::read(sub.join("made.bin")).unwrap(), b"made");
    assert!(
        std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // A loop of links is an error, not a hang.
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    assert!(write_atomic(&a, b"x").is_err());
}

#[test]
fn the_temporary_name_is_unique_per_write_so_concurrent_saves_never_tear() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("shared.safetensors");
    let file = |k: u64| {
        let mut w = TensorWriter::new();
        w.u64s("k", &[k])
            .values::<f32>("x", &[256], &[k as f32; 256]);
        w
    };
    file(0).write(&path).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let path = &path;
                s.spawn(move || {
                    for i in 0..200 {
                        file(t * 1000 + i).write(path).unwrap();
                    }
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let f = TensorFile::open(&path).unwrap();
                let k = f.integers("k").unwrap()[0] as f32;
                assert!(f.values::<f32>("x").unwrap().iter().all(|&v| v == k));
                reads += 1;
            }
            reads
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
    assert_eq!(names(tmp.path()), ["shared.safetensors"]);
}

#[test]
fn the_temporary_name_stays_within_the_file_name_limit() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["a".repeat(245), "é".repeat(127)] {
        let path = tmp.path().join(&name);
        check_writable(&path).unwrap();
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }
    assert_eq!(names(tmp.path()).len(), 2);
}

#[test]
fn the_save_path_is_checked_for_writability() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    check_writable(&dir.join("new.bin")).unwrap();
    std::fs::write(dir.join("old.bin"), b"keep").unwrap();
    check_writable(&dir.join("old.bin")).unwrap();
    assert_eq!(std::fs::read(dir.join("old.bin")).unwrap(), b"keep");
    // The check leaves nothing behind.
    assert_eq!(names(dir), ["old.bin"]);
    // A missing folder, a folder that is a file, a path without a file name.
    let missing = check_writable(&dir.join("missing/x.bin")).unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");
    assert!(check_writable(&dir.join("old.bin/x.bin")).is_err());
    assert!(check_writable(Path::new("/")).is_err());
}

/// Sets the modification time of `path` to `age` ago.
fn age(path: &Path, age: Duration) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn stale_temporary_files_of_killed_writers_are_removed_but_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A pid that ran and is gone.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = std::process::id();
    let minute = Duration::from_secs(60);
    let cases = [
        // (name, age, removed)
        (format!(".c.st.{dead}.0.tmp"), DEAD_GRACE + minute, true),
        // A dead pid, but just written: perhaps a writer in another pid namespace.
        (format!(".c.st.{dead}.1.tmp"), Duration::ZERO, false),
        // Live writers: this process, and pid 1.
        (format!(".c.st.{me}.999999.tmp"), DEAD_GRACE + minute, false),
        (".c.st.1.5.tmp".to_string(), DEAD_GRACE + minute, false),
        // Untouched for long: stale whatever its pid.
        (".c.st.1.6.tmp".to_string(), STALE_AFTER + minute, true),
        // Another checkpoint's temporary file, and other files.
        (format!(".c.st.x.{dead}.0.tmp"), STALE_AFTER + minute, false),
        (format!(".d.st.{dead}.0.tmp"), STALE_AFTER + minute, false),
        ("notes.txt".to_string(), STALE_AFTER + minute, false),
    ];
    for (name, a, _) in &cases {
        let p = dir.join(name);
        std::fs::write(&p, b"partial").unwrap();
        age(&p, *a);
    }
    write_atomic(&dir.join("c.st"), b"whole").unwrap();
    for (name, _, removed) in &cases {
        assert_eq!(!dir.join(name).exists(), *removed, "{name}");
    }
    assert_eq!(std::fs::read(dir.join("c.st")).unwrap(), b"whole");
}
