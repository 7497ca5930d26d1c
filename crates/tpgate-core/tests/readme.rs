//! The config example in README.md must stay valid: users copy it.

use tpgate_core::config;

#[test]
fn readme_config_example_loads_without_warnings() {
    let readme = include_str!("../../../README.md");
    let after = readme
        .split("## Config")
        .nth(1)
        .expect("README has a Config section");
    let block = after
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml block in the Config section");
    let loaded = config::load(block).unwrap_or_else(|e| panic!("README example rejected: {e:?}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.rules.len(), 6);
    assert_eq!(loaded.config.intercept.lan_interfaces, ["br-lan"]);
}

#[test]
fn readme_upstream_example_loads_without_warnings() {
    let readme = include_str!("../../../README.md");
    let after = readme
        .split("## Upstream proxies and groups")
        .nth(1)
        .expect("README has an upstream section");
    let block = after
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml block in the upstream section");
    let loaded = config::load(block).unwrap_or_else(|e| panic!("README example rejected: {e:?}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.proxies.len(), 4);
    assert_eq!(loaded.config.groups.len(), 5);
}
