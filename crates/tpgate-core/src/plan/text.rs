//! Plan -> what `tpgate plan` prints: the nftables script or the iptables-restore scripts
//! (both for `backend: auto`, which is decided at start), then the policy routing as the
//! equivalent `ip` commands, then the sysctls checked. Installing uses netlink, not `ip`;
//! the commands are for people.

use std::fmt::Write as _;

use super::{render_iptables, render_nft, Family, Plan, ROUTE_PROTO};
use crate::config::Backend;

pub fn render_text(plan: &Plan) -> String {
    let mut s = String::new();
    if plan.backend == Backend::Auto {
        let _ = writeln!(
            s,
            "# backend auto: nftables when the kernel accepts it, else iptables (decided at start)\n"
        );
    }
    if plan.backend != Backend::Iptables {
        let _ = writeln!(
            s,
            "# nftables (one atomic transaction; table owned by the daemon)"
        );
        s.push_str(&render_nft(plan));
    }
    if plan.backend != Backend::Nftables {
        if plan.backend == Backend::Auto {
            s.push('\n');
        }
        s.push_str(&render_iptables_text(plan));
    }
    let _ = writeln!(
        s,
        "\n# policy routing (netlink; tagged proto {ROUTE_PROTO})"
    );
    for r in &plan.rules {
        let _ = writeln!(
            s,
            "ip {} rule add fwmark {} lookup {} pref {} proto {ROUTE_PROTO}",
            r.family.ip_flag(),
            r.fwmark,
            r.table,
            r.priority
        );
    }
    for r in &plan.routes {
        let _ = writeln!(
            s,
            "ip {} route add local default dev lo table {} proto {ROUTE_PROTO}",
            r.family.ip_flag(),
            r.table
        );
    }
    let _ = writeln!(
        s,
        "\n# listeners (IP_TRANSPARENT, SO_MARK {:#x})",
        plan.routing_mark
    );
    let l = plan.listeners;
    let mut addrs = vec![format!("tcp 0.0.0.0:{}", l.port)];
    if l.ipv6 {
        addrs.push(format!("tcp [::]:{}", l.port));
    }
    if l.udp {
        addrs.push(format!("udp 0.0.0.0:{}", l.port));
        if l.ipv6 {
            addrs.push(format!("udp [::]:{}", l.port));
        }
    }
    for a in addrs {
        let _ = writeln!(s, "{a}");
    }
    offload_text(&mut s, plan);
    if let Some((addr, chosen)) = plan.dns_server {
        let why = if chosen {
            "  # chosen by tpgate: the config enables fake-ip/redir-host DNS without dns.listen"
        } else {
            ""
        };
        let _ = writeln!(s, "dns udp+tcp {addr}{why}");
    }
    let _ = writeln!(s, "\n# sysctls (checked at start, never changed)");
    if plan.sysctls.is_empty() {
        let _ = writeln!(s, "# none needed");
    }
    for c in &plan.sysctls {
        let _ = writeln!(s, "{} = {}  # {}", c.key, c.want, c.why);
    }
    s
}

/// Both families' iptables-restore scripts with a header each.
pub(super) fn render_iptables_text(plan: &Plan) -> String {
    let mut s = String::new();
    for (family, tool) in [(Family::V4, "iptables"), (Family::V6, "ip6tables")] {
        let Some(script) = render_iptables(plan, family) else {
            continue;
        };
        if !s.is_empty() {
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "# {tool}-restore --noflush (one transaction per table; earlier TPGATE_* chains replaced; not owned: `tpgate down` after a crash)"
        );
        s.push_str(&script);
    }
    s
}

/// What `offload-direct` leaves to the kernel, and why not more.
fn offload_text(s: &mut String, plan: &Plan) {
    let _ = writeln!(s, "\n# offload-direct");
    if !plan.offload_enabled {
        let _ = writeln!(s, "# off: every intercepted flow goes through tpgate");
        return;
    }
    let ranges = plan.offload.direct.ranges();
    if ranges.is_empty() {
        let _ = writeln!(s, "# nothing: no rule sends an address range DIRECT before a rule that can look at names, processes or ports");
    } else {
        let _ = writeln!(
            s,
            "# {} address range(s) DIRECT by address alone: new flows to them are forwarded by the kernel (nftables set direct4/direct6), counted, not relayed or listed",
            ranges.len()
        );
        for r in ranges.iter().take(8) {
            let _ = writeln!(s, "#   {} - {}", r.first(), r.last());
        }
        if ranges.len() > 8 {
            let _ = writeln!(s, "#   ... {} more", ranges.len() - 8);
        }
        if !plan.lan_interfaces.is_empty() {
            let _ = writeln!(
                s,
                "# forwarded LAN flows to them keep the client's source address: the WAN side must masquerade (nft: oifname \"WAN\" masquerade), or the LAN be routable; `intercept.offload-direct: false` turns this off"
            );
        }
        if plan.backend == Backend::Iptables {
            let _ = writeln!(
                s,
                "# (nftables only: with the iptables backend every flow goes through tpgate)"
            );
        }
    }
    if let Some((i, text)) = &plan.offload.stopped_at {
        let _ = writeln!(
            s,
            "# rules from #{} on are decided by tpgate: `{text}` can match a flow to any address",
            i + 1
        );
    }
}
