//! Golden files: every `tests/golden/NAME.yaml` must render (through the real loader and
//! planner) to exactly `tests/golden/NAME.plan`, which is what `tpgate plan` prints, and to
//! `tests/golden/NAME.iptables`, the iptables-restore scripts (IPv4, then IPv6) that the
//! iptables backend would apply for the same config.
//! `UPDATE_GOLDEN=1 cargo test -p tpgate-core --test golden` rewrites them after a
//! deliberate change; review the diff.

use std::fs;
use std::path::Path;

use tpgate_core::config;
use tpgate_core::plan::{render_iptables, render_text, Family, Plan};

#[test]
fn plans_match_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for yaml in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = fs::read_to_string(yaml).unwrap();
        let loaded = config::load(&text).unwrap_or_else(|e| panic!("{}: {e:?}", yaml.display()));
        let plan = Plan::new(&loaded.config);
        let iptables: String = [Family::V4, Family::V6]
            .into_iter()
            .filter_map(|f| render_iptables(&plan, f))
            .collect::<Vec<_>>()
            .join("\n");
        for (ext, got) in [("plan", render_text(&plan)), ("iptables", iptables)] {
            let golden = yaml.with_extension(ext);
            if update {
                fs::write(&golden, &got).unwrap();
            }
            let want = fs::read_to_string(&golden).unwrap_or_else(|_| {
                panic!("{} missing; run with UPDATE_GOLDEN=1", golden.display())
            });
            assert_eq!(
                got,
                want,
                "{} renders differently from {}",
                yaml.display(),
                golden.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "expected golden samples, found {checked}");
}
