//! The config examples in README.md must stay valid: users copy them.

use tpgate_core::config::{self, Loaded};

/// Loads the first yaml block after `heading`, which must load without warnings.
fn example(heading: &str) -> Loaded {
    let readme = include_str!("../../../README.md");
    let after = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    let block = after
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("no yaml block under `{heading}`"));
    let loaded =
        config::load(block).unwrap_or_else(|e| panic!("{heading}: example rejected: {e:?}"));
    assert!(
        loaded.warnings.is_empty(),
        "{heading}: {:?}",
        loaded.warnings
    );
    loaded
}

#[test]
fn readme_config_example_loads_without_warnings() {
    let c = example("## Config").config;
    assert_eq!(c.rules.len(), 6);
    assert_eq!(c.intercept.lan_interfaces, ["br-lan"]);
}

#[test]
fn readme_upstream_example_loads_without_warnings() {
    let c = example("## Upstream proxies and groups").config;
    assert_eq!(c.proxies.len(), 7);
    assert_eq!(c.groups.len(), 5);
}
