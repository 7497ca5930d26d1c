//! Every input kept in the repository, run through its target on the stable toolchain:
//! `corpus/NAME/` (the seeds libFuzzer starts from) and `regressions/NAME/` (each input a
//! fuzzer ever crashed on, kept once the bug is fixed, named after what it caught). A
//! crash found by `cargo fuzz run` becomes a regression test by copying its artifact
//! there (see README.md).

use std::path::{Path, PathBuf};

use tpgate_fuzz::TARGETS;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    out.sort();
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_kept_input_passes_its_target() {
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, run) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for file in files(&root().join(kind).join(name)) {
                let data = std::fs::read(&file).expect("read input");
                ran += 1;
                if std::panic::catch_unwind(|| run(&data)).is_err() {
                    failed.push(file.display().to_string());
                }
            }
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that fail their target: {failed:#?}"
    );
    assert!(ran > 0, "no inputs found");
}

#[test]
fn every_target_has_seeds_and_every_directory_a_target() {
    for (name, _) in TARGETS {
        assert!(
            !files(&root().join("corpus").join(name)).is_empty(),
            "corpus/{name}/ is empty: seed it (seed-corpus.py)"
        );
    }
    for kind in ["corpus", "regressions"] {
        let Ok(dirs) = std::fs::read_dir(root().join(kind)) else {
            continue;
        };
        for dir in dirs.flatten().filter(|d| d.path().is_dir()) {
            let name = dir.file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "{kind}/{name}/ names no target"
            );
        }
    }
}
