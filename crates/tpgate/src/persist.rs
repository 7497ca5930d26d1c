//! Writing the small files tpgate keeps across restarts (`state-file`, the fake-ip table)
//! so that no reader ever sees half of one: the bytes go to a temporary file in the same
//! directory, reach the disk (`fsync`), and only then replace the file by a rename, which
//! is atomic; the directory is flushed too, so the rename itself survives a crash. A crash
//! or a full or read-only disk at any point leaves the old file whole, and at worst a
//! stale temporary file that nothing reads and the next write replaces.
//!
//! Deliberately not here: reading. Each file's reader checks its format as it parses, and
//! a file that does not parse is ignored with a warning, never half-used.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` atomically (see the module doc); the file is the owner's
/// alone (mode 0600: the selections and the names clients resolved are nobody else's
/// business). Creates the directory when missing.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The new file is in place; flushing the directory entry is best effort (some file
    // systems refuse fsync on a directory).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `dir/.name.tmp`: beside the file (a rename cannot cross file systems), hidden, and a
/// name no reader opens.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn scratch() -> PathBuf {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("tpgate-persist-{}-{n}", std::process::id()))
    }

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = scratch();
        let path = dir.join("sub").join("state.json");
        write_atomic(&path, b"{\"a\":1}").unwrap();
        write_atomic(&path, b"{\"b\":2}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"b\":2}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_a_stale_temporary_is_replaced() {
        let dir = scratch();
        let path = dir.join("state.json");
        write_atomic(&path, b"old").unwrap();
        // A temporary left by a crash is never read, and the next write replaces it.
        std::fs::write(temp_path(&path), b"half-writ").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        // Renaming onto a non-empty directory fails: nothing changes, the temporary goes.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert!(!temp_path(&blocked).exists(), "the temporary is removed");
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!temp_path(&path).exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
