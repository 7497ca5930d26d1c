//! Plan -> what `tpgate plan` prints: the nftables script, then the policy routing as the
//! equivalent `ip` commands, then the sysctls checked. Installing uses netlink, not `ip`;
//! the commands are for people.

use std::fmt::Write as _;

use super::{render_nft, Plan, ROUTE_PROTO};

pub fn render_text(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# nftables (one atomic transaction; table owned by the daemon)"
    );
    s.push_str(&render_nft(plan));
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
    let _ = writeln!(s, "\n# sysctls (checked at start, never changed)");
    if plan.sysctls.is_empty() {
        let _ = writeln!(s, "# none needed");
    }
    for c in &plan.sysctls {
        let _ = writeln!(s, "{} = {}  # {}", c.key, c.want, c.why);
    }
    s
}
