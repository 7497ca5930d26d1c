//! Lab configs with upstream proxies: the standard interception of [`Lab::config_text`]
//! plus `proxies`, `proxy-groups` and `rules`, a state file in the lab's scratch directory and
//! the external controller on the gateway's loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::{Lab, BYPASS_V4, BYPASS_V6, TPROXY_PORT};

/// Where tpgate's external controller listens (inside the lab's gateway namespace).
pub(crate) const CONTROLLER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);

impl Lab {
    /// The config text; `proxies` and `groups` are YAML flow mappings, one per entry.
    pub(crate) fn proxy_config_text(
        &self,
        proxies: &[String],
        groups: &[String],
        rules: &[&str],
    ) -> String {
        let list = |items: &[String]| -> String {
            if items.is_empty() {
                " []\n".to_owned()
            } else {
                items
                    .iter()
                    .map(|i| format!("\n  - {i}"))
                    .collect::<String>()
                    + "\n"
            }
        };
        let rules: String = rules.iter().map(|r| format!("  - {r}\n")).collect();
        format!(
            "tproxy-port: {TPROXY_PORT}\n\
             routing-mark: 255\n\
             ipv6: true\n\
             state-file: {state}\n\
             external-controller: {CONTROLLER}\n\
             intercept:\n\
             {backend}  \
               lan-interfaces: [{lan}]\n  \
               local: true\n  \
               udp: true\n  \
               bypass:\n    \
                 - {BYPASS_V4}\n    \
                 - \"{BYPASS_V6}\"\n\
             proxies:{proxies}\
             proxy-groups:{groups}\
             rules:\n{rules}",
            state = self.state_file().display(),
            backend = self.backend.intercept_keys(),
            lan = self.lan_if,
            proxies = list(proxies),
            groups = list(groups),
        )
    }

    /// Writes the config of [`Self::proxy_config_text`] and returns its path.
    pub(crate) fn write_proxy_config(
        &self,
        proxies: &[String],
        groups: &[String],
        rules: &[&str],
    ) -> PathBuf {
        self.write_file(
            "tpgate.yaml",
            &self.proxy_config_text(proxies, groups, rules),
        )
    }

    /// Where the config of [`Self::proxy_config_text`] keeps the selections.
    pub(crate) fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
}
