//! Reads the live machine into a [`Snapshot`]: `nft -j`, `iptables-save` (each variant
//! installed), `ip -j rule|route`, /proc/sys, sock_diag and traces of neighbouring firewall
//! software. Read-only; anything missing becomes a note, never an error.

use std::path::Path;
use std::process::Command;

use tpgate_core::doctor::{
    parse_ip_routes, parse_ip_rules, IptVariant, IptablesDump, Modules, Neighbours, Snapshot,
};
use tpgate_core::plan::Family;

use super::sockdiag;

/// Runs a command; `Err` carries a one-line reason (not installed, or its stderr).
pub(super) fn output(prog: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(prog).args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!(
            "`{}` failed: {}",
            [prog]
                .iter()
                .chain(args)
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{prog} is not installed"))
        }
        Err(e) => Err(format!("{prog}: {e}")),
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub(super) fn snapshot() -> Snapshot {
    let mut s = Snapshot {
        root: euid_is_root(),
        kernel_release: read("/proc/sys/kernel/osrelease").map(|r| r.trim().to_owned()),
        ipv6: Path::new("/proc/net/if_inet6").exists(),
        ..Snapshot::default()
    };
    s.modules = modules(s.kernel_release.as_deref());
    if s.modules.is_none() {
        s.notes
            .push("/proc/modules unreadable (kernel without loadable modules?)".into());
    }
    match output("nft", &["-j", "list", "ruleset"]) {
        Ok(j) => s.nft_json = Some(j),
        Err(e) => s.notes.push(e),
    }
    iptables(&mut s);
    routing(&mut s);
    sysctls(&mut s);
    match sockdiag::listeners() {
        Ok(l) => s.listeners = Some(l),
        Err(e) => s.notes.push(format!("listening sockets: {e:#}")),
    }
    s.neighbours = neighbours(&s);
    s
}

/// Effective uid 0, from /proc (nix's `user` feature is not enabled for one call).
fn euid_is_root() -> bool {
    read("/proc/self/status").is_some_and(|st| {
        st.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Module name as the kernel spells it in /proc/modules (`-` becomes `_`).
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

fn modules(release: Option<&str>) -> Option<Modules> {
    let loaded = read("/proc/modules")?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let dir = release.map(|r| format!("/lib/modules/{r}"));
    let list = |file: &str| {
        let text = read(&format!("{}/{file}", dir.as_deref()?))?;
        Some(
            text.lines()
                .filter_map(|l| l.split(':').next())
                .filter(|l| !l.is_empty())
                .map(module_name)
                .collect(),
        )
    };
    Some(Modules {
        loaded,
        builtin: list("modules.builtin"),
        available: list("modules.dep"),
    })
}

fn iptables(s: &mut Snapshot) {
    let variants = [
        (Family::V4, IptVariant::Legacy, "iptables-legacy-save"),
        (Family::V4, IptVariant::Nft, "iptables-nft-save"),
        (Family::V6, IptVariant::Legacy, "ip6tables-legacy-save"),
        (Family::V6, IptVariant::Nft, "ip6tables-nft-save"),
    ];
    let mut any = false;
    for (family, variant, prog) in variants {
        match output(prog, &[]) {
            Ok(text) => {
                any = true;
                if text.lines().any(|l| l.starts_with('*')) {
                    s.iptables.push(IptablesDump {
                        family,
                        variant,
                        text,
                    });
                }
            }
            Err(e) if e.ends_with("is not installed") => {}
            Err(e) => s.notes.push(e),
        }
    }
    if any {
        return;
    }
    // Only the plain names: the header says which variant they are.
    for (family, prog) in [
        (Family::V4, "iptables-save"),
        (Family::V6, "ip6tables-save"),
    ] {
        if let Ok(text) = output(prog, &[]) {
            let variant = if text.contains("(nf_tables)") {
                IptVariant::Nft
            } else {
                IptVariant::Legacy
            };
            s.iptables.push(IptablesDump {
                family,
                variant,
                text,
            });
        }
    }
}

fn routing(s: &mut Snapshot) {
    let mut rules = Vec::new();
    let mut rules_ok = false;
    for f in [Family::V4, Family::V6] {
        if f == Family::V6 && !s.ipv6 {
            continue;
        }
        let flag = f.ip_flag();
        match output("ip", &[flag, "-j", "rule"]).and_then(|j| parse_ip_rules(f, &j)) {
            Ok(r) => {
                rules_ok = true;
                rules.extend(r);
            }
            Err(e) => s.notes.push(format!("ip {flag} rule: {e}")),
        }
        match output("ip", &[flag, "-j", "route", "show", "table", "all"])
            .and_then(|j| parse_ip_routes(f, &j))
        {
            Ok(r) => s.routes.extend(r),
            Err(e) => s.notes.push(format!("ip {flag} route: {e}")),
        }
    }
    s.rules = rules_ok.then_some(rules);
}

fn sysctls(s: &mut Snapshot) {
    let mut keys = vec![
        "net/ipv4/ip_forward".to_owned(),
        "net/ipv6/conf/all/forwarding".to_owned(),
        "net/bridge/bridge-nf-call-iptables".to_owned(),
    ];
    if let Ok(dir) = std::fs::read_dir("/proc/sys/net/ipv4/conf") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            keys.push(format!("net/ipv4/conf/{name}/rp_filter"));
            keys.push(format!("net/ipv4/conf/{name}/src_valid_mark"));
        }
    }
    for k in keys {
        if let Some(v) = read(&format!("/proc/sys/{k}")) {
            s.sysctls.insert(k.replace('/', "."), v.trim().to_owned());
        }
    }
}

/// Whether a process with this command name runs (any pid namespace member we can see).
fn process_running(comm: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| read(&format!("{}/comm", e.path().display())).is_some_and(|c| c.trim() == comm))
}

fn neighbours(s: &Snapshot) -> Neighbours {
    // /etc/nftables.conf matters only when a unit loads it.
    let nft_service = ["sysinit.target.wants", "multi-user.target.wants"]
        .iter()
        .any(|w| Path::new(&format!("/etc/systemd/system/{w}/nftables.service")).exists());
    Neighbours {
        br_netfilter: s
            .modules
            .as_ref()
            .is_some_and(|m| m.loaded.iter().any(|l| l == "br_netfilter"))
            || Path::new("/proc/sys/net/bridge").exists(),
        bridges: std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("bridge").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default(),
        docker: Path::new("/sys/class/net/docker0").exists()
            || Path::new("/run/docker.sock").exists(),
        firewalld_running: process_running("firewalld"),
        ufw_active: read("/etc/ufw/ufw.conf")
            .is_some_and(|c| c.lines().any(|l| l.trim() == "ENABLED=yes")),
        nftables_conf: if nft_service {
            read("/etc/nftables.conf")
        } else {
            None
        },
    }
}
