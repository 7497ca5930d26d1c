//! Plan -> one nftables script, applied as a single atomic transaction.
//!
//! The table carries the `owner` flag: the kernel deletes it the moment the netlink socket
//! that created it closes, so a killed daemon leaves the network working (fail-open).

use std::fmt::Write as _;

use ipnet::IpNet;

use super::Plan;
use crate::net::Mark;

/// Family of tpgate's table.
pub const NFT_FAMILY: &str = "inet";
/// Name of tpgate's table; tpgate touches no other table.
pub const NFT_TABLE: &str = "tpgate";

/// Renders the whole table. The script first creates the table empty and deletes it, so
/// applying it replaces any previous (non-owned) copy in the same transaction.
pub fn render_nft(plan: &Plan) -> String {
    let mut s = String::new();
    let w = &mut s;
    let mark = plan.fwmark;
    let port = plan.tproxy_port;
    let l4 = if plan.udp { "{ tcp, udp }" } else { "tcp" };

    line(w, 0, &format!("table {NFT_FAMILY} {NFT_TABLE} {{"));
    line(w, 1, "flags owner");
    line(w, 1, "");
    set(w, "bypass4", "ipv4_addr", &plan.bypass_v4);
    set(w, "bypass6", "ipv6_addr", &plan.bypass_v6);
    if plan.offload_enabled {
        offload_set(w, "direct4", "ipv4_addr", plan, false);
        offload_set(w, "direct6", "ipv6_addr", plan, true);
    }

    // PREROUTING: TPROXY for LAN traffic and for this host's own traffic looped back via lo.
    line(w, 1, "chain prerouting {");
    line(
        w,
        2,
        "type filter hook prerouting priority mangle; policy accept;",
    );
    let mut ifaces: Vec<String> = Vec::new();
    if plan.local {
        ifaces.push("\"lo\"".into());
    }
    ifaces.extend(plan.lan_interfaces.iter().map(|i| format!("\"{i}\"")));
    line(
        w,
        2,
        &format!(
            "iifname != {} return comment \"only LAN interfaces and looped-back local traffic\"",
            set_literal(&ifaces)
        ),
    );
    if plan.local {
        line(
            w,
            2,
            &format!(
                "iifname \"lo\" {} return comment \"lo: only this host's marked traffic\"",
                mark_not(mark)
            ),
        );
    }
    common_exclusions(w, plan);
    line(
        w,
        2,
        &format!(
            "tcp flags & (fin | syn | rst | ack) != syn socket transparent 1 {} accept comment \"established: fast path; never a new SYN, which TPROXY must see (TIME_WAIT)\"",
            mark_set(mark)
        ),
    );
    offload_rules(w, plan);
    line(
        w,
        2,
        &format!(
            "meta l4proto {l4} tproxy to :{port} {} accept",
            mark_set(mark)
        ),
    );
    line(w, 1, "}");
    line(w, 1, "");

    // OUTPUT: mark this host's own traffic so policy routing loops it back through lo.
    if plan.local {
        line(w, 1, "chain output {");
        line(
            w,
            2,
            "type route hook output priority mangle; policy accept;",
        );
        line(
            w,
            2,
            &format!(
                "meta mark {:#x} return comment \"tpgate's own outbound sockets\"",
                plan.routing_mark
            ),
        );
        line(
            w,
            2,
            "meta mark != 0x0 return comment \"marked by other software: its routing, not ours\"",
        );
        common_exclusions(w, plan);
        offload_rules(w, plan);
        line(
            w,
            2,
            &format!("meta l4proto {l4} meta mark set {:#x}", mark.value),
        );
        line(w, 1, "}");
        line(w, 1, "");
    }

    // INPUT: a connection straight to the listener on one of our own addresses is refused.
    line(w, 1, "chain input {");
    line(
        w,
        2,
        "type filter hook input priority mangle; policy accept;",
    );
    line(
        w,
        2,
        &format!(
            "tcp dport {port} fib daddr type local reject with tcp reset comment \"never relay to ourselves\""
        ),
    );
    if plan.udp {
        line(
            w,
            2,
            &format!("udp dport {port} fib daddr type local reject"),
        );
    }
    line(w, 1, "}");
    if let Some(dns) = plan.dns_hijack {
        dns_hijack(w, plan, dns, &ifaces);
    }
    line(w, 0, "}");
    s
}

/// `dns-hijack`: nat chains redirecting every port-53 query to the built-in DNS server;
/// conntrack rewrites the answers back, so each client sees the server it asked answer.
fn dns_hijack(w: &mut String, plan: &Plan, dns: u16, ifaces: &[String]) {
    let lan: Vec<String> = ifaces.iter().filter(|i| *i != "\"lo\"").cloned().collect();
    let v6 = if plan.ipv6 {
        ""
    } else {
        "meta nfproto ipv6 return\n"
    };
    if !lan.is_empty() {
        line(w, 1, "");
        line(w, 1, "chain dns_hijack_lan {");
        line(
            w,
            2,
            "type nat hook prerouting priority dstnat; policy accept;",
        );
        if !v6.is_empty() {
            line(w, 2, v6.trim_end());
        }
        line(
            w,
            2,
            &format!(
                "iifname {} meta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns} comment \"dns-hijack\"",
                set_literal(&lan)
            ),
        );
        line(w, 1, "}");
    }
    if plan.local {
        line(w, 1, "");
        line(w, 1, "chain dns_hijack_local {");
        line(w, 2, "type nat hook output priority -100; policy accept;");
        if !v6.is_empty() {
            line(w, 2, v6.trim_end());
        }
        line(
            w,
            2,
            &format!(
                "meta mark {:#x} return comment \"tpgate's own queries (its DNS server's upstreams)\"",
                plan.routing_mark
            ),
        );
        line(
            w,
            2,
            &format!(
                "meta l4proto {{ tcp, udp }} th dport 53 redirect to :{dns} comment \"dns-hijack\""
            ),
        );
        line(w, 1, "}");
    }
}

/// Exclusions shared by PREROUTING and OUTPUT.
fn common_exclusions(w: &mut String, plan: &Plan) {
    if !plan.ipv6 {
        line(w, 2, "meta nfproto ipv6 return");
    }
    line(
        w,
        2,
        "ct direction reply return comment \"replies of connections never intercepted (port forwards, tpgate's own replies)\"",
    );
    line(
        w,
        2,
        "fib daddr type { local, broadcast, multicast } return comment \"this host's own addresses\"",
    );
    if plan.dns_hijack.is_some() {
        line(
            w,
            2,
            "meta l4proto { tcp, udp } th dport 53 return comment \"dns-hijack: redirected by the nat chains\"",
        );
    }
    line(w, 2, "ip daddr @bypass4 return");
    line(w, 2, "ip6 daddr @bypass6 return");
}

/// `offload-direct`: new flows to destinations DIRECT by address alone are left to the
/// kernel, counted. After the established fast path, so a connection tpgate already
/// relays keeps going to its socket.
fn offload_rules(w: &mut String, plan: &Plan) {
    if !plan.offload_enabled {
        return;
    }
    line(
        w,
        2,
        "ip daddr @direct4 counter return comment \"DIRECT by address alone: left to the kernel\"",
    );
    line(w, 2, "ip6 daddr @direct6 counter return");
}

/// An interval set of the offloaded ranges of one family.
fn offload_set(w: &mut String, name: &str, ty: &str, plan: &Plan, v6: bool) {
    line(w, 1, &format!("set {name} {{"));
    line(w, 2, &format!("type {ty}"));
    line(w, 2, "flags interval");
    let elems = offload_elements(plan, v6);
    if !elems.is_empty() {
        line(w, 2, &format!("elements = {{ {} }}", elems.join(", ")));
    }
    line(w, 1, "}");
    line(w, 1, "");
}

fn offload_elements(plan: &Plan, v6: bool) -> Vec<String> {
    plan.offload
        .direct
        .ranges()
        .iter()
        .filter(|r| r.v6 == v6)
        .map(|r| {
            if r.start == r.end {
                r.first().to_string()
            } else {
                format!("{}-{}", r.first(), r.last())
            }
        })
        .collect()
}

/// One transaction that replaces the offloaded ranges of a running table (a reload).
pub fn render_offload_update(plan: &Plan) -> String {
    let mut s = String::new();
    for (set, v6) in [("direct4", false), ("direct6", true)] {
        let _ = writeln!(s, "flush set {NFT_FAMILY} {NFT_TABLE} {set}");
        let elems = offload_elements(plan, v6);
        if !elems.is_empty() {
            let _ = writeln!(
                s,
                "add element {NFT_FAMILY} {NFT_TABLE} {set} {{ {} }}",
                elems.join(", ")
            );
        }
    }
    s
}

fn set(w: &mut String, name: &str, ty: &str, elems: &[IpNet]) {
    line(w, 1, &format!("set {name} {{"));
    line(w, 2, &format!("type {ty}"));
    line(w, 2, "flags interval");
    if !elems.is_empty() {
        let list: Vec<String> = elems.iter().map(ToString::to_string).collect();
        line(w, 2, &format!("elements = {{ {} }}", list.join(", ")));
    }
    line(w, 1, "}");
    line(w, 1, "");
}

fn mark_not(mark: Mark) -> String {
    if mark.mask == u32::MAX {
        format!("meta mark != {:#x}", mark.value)
    } else {
        format!("meta mark & {:#x} != {:#x}", mark.mask, mark.value)
    }
}

/// Sets the fwmark's bits, keeping the bits of the mark that are not ours.
fn mark_set(mark: Mark) -> String {
    if mark.mask == u32::MAX {
        format!("meta mark set {:#x}", mark.value)
    } else {
        format!(
            "meta mark set meta mark & {:#x} | {:#x}",
            !mark.mask, mark.value
        )
    }
}

fn set_literal(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    }
}

fn line(w: &mut String, indent: usize, text: &str) {
    if text.is_empty() {
        w.push('\n');
        return;
    }
    for _ in 0..indent {
        w.push('\t');
    }
    let _ = writeln!(w, "{text}");
}
