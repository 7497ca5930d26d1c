//! Plan -> `iptables-restore --noflush` scripts, one per IP family, with the same semantics
//! as the nftables table ([`super::render_nft`]); and the reading of `iptables-save` output
//! that finds what an earlier instance left. Running the binaries is the daemon's job.
//!
//! tpgate owns the chains named `TPGATE_*` in `mangle` and `filter`, and one jump to them
//! from each built-in chain it hooks (PREROUTING, OUTPUT, INPUT). Every script first takes
//! away any jump and chain of an earlier instance, then adds its own, in one transaction per
//! table, so applying it twice leaves one copy. iptables has no `owner` flag: a killed
//! daemon's chains stay (and TPROXY drops packets when no listener is left), so `tpgate
//! down` must run after a crash; the systemd unit does that in `ExecStopPost`.
//!
//! iptables has no owner either, so the daemon declares one more, empty chain in `filter`,
//! `TPGATE_PID_<pid>`, naming the process that installed the rest: a second `run` or a
//! `down` can then tell a live instance's chains from a dead one's.
//!
//! The bypass ranges are a list of RETURN rules, not an ipset: the list is about twenty
//! entries (linear matching costs nothing at that size), and rules live inside the
//! iptables-restore transaction, while an ipset is a separate kernel object with its own
//! tool, created before and destroyed after the rules that reference it, and left behind by
//! a crash like the chains are. Fewer moving parts, one atomic step.

mod saved;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use super::{Family, Plan};
use crate::net::Mark;

pub use saved::IptState;

/// Every chain tpgate creates starts with this; nothing else is ever touched.
pub const IPT_CHAIN_PREFIX: &str = "TPGATE_";

/// PREROUTING jumps here: picks the interfaces that are intercepted.
const PRE: &str = "TPGATE_PRE";
/// Exclusions, then TPROXY: the traffic of an intercepted interface.
const TPROXY: &str = "TPGATE_TPROXY";
/// Packets of an established proxied connection: mark and accept.
const DIVERT: &str = "TPGATE_DIVERT";
/// OUTPUT jumps here: marks this host's own traffic so policy routing loops it through lo.
const OUT: &str = "TPGATE_OUT";
/// INPUT (filter) jumps here: refuses connections aimed at the listener itself.
const IN: &str = "TPGATE_IN";
/// nat PREROUTING jumps here with `dns-hijack`: LAN DNS queries to the built-in server.
const DNS_PRE: &str = "TPGATE_DNS_PRE";
/// nat OUTPUT jumps here with `dns-hijack`: this host's DNS queries to the built-in server.
const DNS_OUT: &str = "TPGATE_DNS_OUT";
/// `TPGATE_PID_<pid>`: an empty chain naming the process that owns the others.
const OWNER_PREFIX: &str = "TPGATE_PID_";

/// One table of the script tpgate wants.
struct Table {
    name: &'static str,
    chains: Vec<String>,
    /// Complete `-A CHAIN ...` lines.
    rules: Vec<String>,
    /// `(built-in chain, tpgate chain)`: inserted first in the built-in chain.
    jumps: Vec<(&'static str, &'static str)>,
}

/// The script `run` applies on a system without an earlier instance's chains; `None` for
/// IPv6 when the plan leaves IPv6 alone. This is what `tpgate plan` prints.
pub fn render_iptables(plan: &Plan, family: Family) -> Option<String> {
    ipt_replace(plan, family, &IptState::default(), None)
}

/// The script that replaces `old` (an earlier instance's chains, as read by
/// [`IptState::parse`]) with the plan's chains in one transaction per table; `None` when
/// there is nothing to add or remove. `owner` is the installing process, recorded as the
/// chain `TPGATE_PID_<owner>`.
pub fn ipt_replace(
    plan: &Plan,
    family: Family,
    old: &IptState,
    owner: Option<u32>,
) -> Option<String> {
    let mut new = if family == Family::V6 && !plan.ipv6 {
        Vec::new()
    } else {
        tables(plan, family)
    };
    if let (Some(pid), Some(filter)) = (owner, new.iter_mut().find(|t| t.name == "filter")) {
        filter.chains.push(format!("{OWNER_PREFIX}{pid}"));
    }
    script(&new, old)
}

/// The script that removes `old` entirely; `None` when there is nothing of tpgate's.
pub fn ipt_remove(old: &IptState) -> Option<String> {
    script(&[], old)
}

/// The tables tpgate wants for one family.
fn tables(plan: &Plan, family: Family) -> Vec<Table> {
    let mark = plan.fwmark;
    let port = plan.tproxy_port;
    let l4: &[&str] = if plan.udp { &["tcp", "udp"] } else { &["tcp"] };

    let mut filter = Table {
        name: "filter",
        chains: vec![IN.to_owned()],
        rules: Vec::new(),
        jumps: vec![("INPUT", IN)],
    };
    filter.rules.push(format!(
        "-A {IN} -p tcp --dport {port} -m addrtype --dst-type LOCAL {} -j REJECT --reject-with tcp-reset",
        comment("never relay to ourselves")
    ));
    if plan.udp {
        filter.rules.push(format!(
            "-A {IN} -p udp --dport {port} -m addrtype --dst-type LOCAL -j REJECT"
        ));
    }

    let mut mangle = Table {
        name: "mangle",
        chains: [PRE, TPROXY, DIVERT].map(str::to_owned).to_vec(),
        rules: Vec::new(),
        jumps: vec![("PREROUTING", PRE)],
    };
    let r = &mut mangle.rules;
    // PREROUTING: only the listed interfaces, and lo for this host's own marked traffic;
    // everything else (the WAN) falls off the end of the chain untouched.
    if plan.local {
        r.push(format!(
            "-A {PRE} -i lo -m mark --mark {mark} {} -g {TPROXY}",
            comment("lo: only this host's marked traffic")
        ));
    }
    for iface in &plan.lan_interfaces {
        r.push(format!("-A {PRE} -i {iface} -g {TPROXY}"));
    }
    exclusions(r, plan, family, TPROXY);
    r.push(format!(
        "-A {TPROXY} -p tcp ! --syn -m socket --transparent {} -j {DIVERT}",
        comment("established: fast path; never a new SYN, which TPROXY must see (TIME_WAIT)")
    ));
    for p in l4 {
        r.push(format!(
            "-A {TPROXY} -p {p} -j TPROXY --on-port {port} --tproxy-mark {}",
            xmark(mark)
        ));
    }
    r.push(format!("-A {DIVERT} -j MARK --set-xmark {}", xmark(mark)));
    r.push(format!("-A {DIVERT} -j ACCEPT"));

    // OUTPUT: mark this host's own traffic; mangle OUTPUT re-routes a packet whose mark
    // changed, so the fwmark rule sends it to lo.
    if plan.local {
        mangle.chains.push(OUT.to_owned());
        mangle.jumps.push(("OUTPUT", OUT));
        r.push(format!(
            "-A {OUT} -m mark --mark {:#x} {} -j RETURN",
            plan.routing_mark,
            comment("tpgate's own outbound sockets")
        ));
        r.push(format!(
            "-A {OUT} -m mark ! --mark 0x0 {} -j RETURN",
            comment("marked by other software: its routing, not ours")
        ));
        exclusions(r, plan, family, OUT);
        for p in l4 {
            r.push(format!(
                "-A {OUT} -p {p} -j MARK --set-xmark {:#x}/{:#x}",
                mark.value,
                u32::MAX
            ));
        }
    }
    let mut tables = vec![filter, mangle];
    if let Some(dns) = plan.dns_hijack {
        tables.push(dns_hijack(plan, dns));
    }
    tables
}

/// `dns-hijack`: nat REDIRECT of every port-53 query to the built-in DNS server (conntrack
/// rewrites the answers back), as the nftables table's nat chains do.
fn dns_hijack(plan: &Plan, dns: u16) -> Table {
    let mut nat = Table {
        name: "nat",
        chains: Vec::new(),
        rules: Vec::new(),
        jumps: Vec::new(),
    };
    if !plan.lan_interfaces.is_empty() {
        nat.chains.push(DNS_PRE.to_owned());
        nat.jumps.push(("PREROUTING", DNS_PRE));
        for iface in &plan.lan_interfaces {
            for p in ["udp", "tcp"] {
                nat.rules.push(format!(
                    "-A {DNS_PRE} -i {iface} -p {p} --dport 53 {} -j REDIRECT --to-ports {dns}",
                    comment("dns-hijack")
                ));
            }
        }
    }
    if plan.local {
        nat.chains.push(DNS_OUT.to_owned());
        nat.jumps.push(("OUTPUT", DNS_OUT));
        nat.rules.push(format!(
            "-A {DNS_OUT} -m mark --mark {:#x} {} -j RETURN",
            plan.routing_mark,
            comment("tpgate's own queries (its DNS server's upstreams)")
        ));
        for p in ["udp", "tcp"] {
            nat.rules.push(format!(
                "-A {DNS_OUT} -p {p} --dport 53 {} -j REDIRECT --to-ports {dns}",
                comment("dns-hijack")
            ));
        }
    }
    nat
}

/// Exclusions shared by PREROUTING and OUTPUT, as in the nftables table.
fn exclusions(r: &mut Vec<String>, plan: &Plan, family: Family, chain: &str) {
    r.push(format!(
        "-A {chain} -m conntrack --ctdir REPLY {} -j RETURN",
        comment("replies of connections never intercepted (port forwards, tpgate's own replies)")
    ));
    // IPv6 has no broadcast, and xt_addrtype refuses to match it for IPv6.
    let types: &[&str] = match family {
        Family::V4 => &["LOCAL", "BROADCAST", "MULTICAST"],
        Family::V6 => &["LOCAL", "MULTICAST"],
    };
    for t in types {
        let note = if *t == "LOCAL" {
            format!(" {}", comment("this host's own addresses"))
        } else {
            String::new()
        };
        r.push(format!(
            "-A {chain} -m addrtype --dst-type {t}{note} -j RETURN"
        ));
    }
    if plan.dns_hijack.is_some() {
        for p in ["udp", "tcp"] {
            r.push(format!(
                "-A {chain} -p {p} --dport 53 {} -j RETURN",
                comment("dns-hijack: redirected by the nat chains")
            ));
        }
    }
    let bypass = match family {
        Family::V4 => &plan.bypass_v4,
        Family::V6 => &plan.bypass_v6,
    };
    for net in bypass {
        r.push(format!("-A {chain} -d {net} -j RETURN"));
    }
}

/// `value/mask` for `--set-xmark` and `--tproxy-mark`: clears the mask's bits, then sets
/// the value's, keeping the bits of the mark that are not ours.
fn xmark(mark: Mark) -> String {
    format!("{:#x}/{:#x}", mark.value, mark.mask)
}

fn comment(text: &str) -> String {
    format!("-m comment --comment \"{text}\"")
}

/// The restore script: per table, declare (and so flush) the new chains, delete the old
/// jumps and the old chains not declared again, add the rules and the jumps.
fn script(new: &[Table], old: &IptState) -> Option<String> {
    let mut names: Vec<&str> = new.iter().map(|t| t.name).collect();
    for t in &old.tables {
        if !names.contains(&t.name.as_str()) {
            names.push(&t.name);
        }
    }
    if names.is_empty() {
        return None;
    }
    let mut s = String::new();
    for name in names {
        let want = new.iter().find(|t| t.name == name);
        let had = old.tables.iter().find(|t| t.name == name);
        let _ = writeln!(s, "*{name}");
        let declared: &[String] = want.map_or(&[], |t| &t.chains);
        for c in declared {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        if let Some(had) = had {
            for (chain, spec) in &had.jumps {
                let _ = writeln!(s, "-D {chain} {spec}");
            }
            let stale: Vec<&String> = had
                .chains
                .iter()
                .filter(|c| !declared.contains(c))
                .collect();
            for c in &stale {
                let _ = writeln!(s, "-F {c}");
            }
            for c in &stale {
                let _ = writeln!(s, "-X {c}");
            }
        }
        if let Some(want) = want {
            for r in &want.rules {
                let _ = writeln!(s, "{r}");
            }
            for (builtin, chain) in &want.jumps {
                let _ = writeln!(s, "-I {builtin} 1 -j {chain}");
            }
        }
        let _ = writeln!(s, "COMMIT");
    }
    Some(s)
}
