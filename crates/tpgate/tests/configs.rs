//! The corpus of mihomo-style configs under `tests/configs/`: every file in `ok/` is a
//! config mihomo runs (each reproduces a construct real configs use: anchors, Clash for
//! Windows leftovers, providers in every format, mrs rule sets, TUN-style DNS...), and
//! `tpgate check` accepts it; every file in `bad/` is broken for mihomo too, and `tpgate
//! check` refuses it with the `FILE:LINE:COL: reason` its `.expect` file holds. No root
//! and no network needed: `check` only reads files.

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn check(path: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tpgate"))
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run tpgate check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_every_config_mihomo_runs() {
    let files = corpus("ok");
    assert!(files.len() >= 20, "the corpus has {} configs", files.len());
    for f in files {
        let (code, stdout, stderr) = check(&f);
        assert_eq!(code, Some(0), "{}:\n{stderr}", f.display());
        // Warnings only, each with its position; the summary closes the output.
        for line in stderr.lines() {
            assert!(line.contains("warning"), "{}: {line}", f.display());
        }
        assert!(
            stdout.lines().any(|l| l.starts_with("summary: proxies:")),
            "{}: {stdout}",
            f.display()
        );
    }
}

#[test]
fn check_refuses_broken_configs_with_the_reason_at_its_position() {
    let files = corpus("bad");
    assert!(!files.is_empty());
    for f in files {
        let expect = std::fs::read_to_string(f.with_extension("expect")).expect(".expect file");
        let want = format!("{}:{}", f.display(), expect.trim());
        let (code, _, stderr) = check(&f);
        assert_eq!(code, Some(2), "{}:\n{stderr}", f.display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&want)),
            "want a line starting with {want:?}, got:\n{stderr}"
        );
    }
}

/// What a migrating user reads at the end: proxies usable and skipped by type, groups left
/// empty, downloads at start.
#[test]
fn the_summary_names_what_was_skipped_and_what_will_be_downloaded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/ok");
    let (_, stdout, _) = check(&dir.join("18-unsupported-types-skipped.yaml"));
    assert!(
        stdout.contains(
            "summary: proxies: 1 usable, 5 skipped (hysteria: 1, snell: 1, trojan: 1, vless: 1, vmess: 1)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("(they reject all traffic): Gone"),
        "{stdout}"
    );
    let (_, stdout, _) = check(&dir.join("13-provider-http.yaml"));
    assert!(
        stdout.contains("proxy provider airport: https://sub.example/api/v1/client/subscribe?token=x -> ./proxies/airport.yaml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("groups filled by providers downloaded at start: Proxy, Auto"),
        "{stdout}"
    );
}
