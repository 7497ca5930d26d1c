//! Checks on the ruleset itself: where TPROXY sits, whether both halves exist, the loop
//! guard of the OUTPUT half, and reply-direction packets.

use super::halves::Halves;
use super::model::{unreachable, Chain, Cond, Dir, Hook, Placed};
use super::{Area, Finding, Severity, Snapshot};

const AREA: Area = Area::Ruleset;

pub(super) fn run(snap: &Snapshot, chains: &[Chain], flat: &[Placed<'_>], out: &mut Vec<Finding>) {
    hooks(chains, flat, out);
    let h = Halves::find(snap, flat);
    halves(snap, &h, out);
    tproxy_marks(&h, out);
    loop_guard(snap, &h, out);
    reply_direction(&h, out);
}

/// TPROXY anywhere but PREROUTING: the kernel accepts it nowhere else, so such a rule is
/// either in a chain that nothing reaches (its jump from OUTPUT was refused) or never runs.
fn hooks(chains: &[Chain], flat: &[Placed<'_>], out: &mut Vec<Finding>) {
    let mut bad: Vec<String> = flat
        .iter()
        .filter(|p| p.hook != Hook::Prerouting && p.rule.tproxy().is_some())
        .map(|p| format!("{} (hook {})", p.location(), p.hook.as_str()))
        .collect();
    bad.extend(
        unreachable(chains, flat)
            .into_iter()
            .filter(|(_, r)| r.tproxy().is_some())
            .map(|(c, r)| format!("{}: {} (reached from no hook)", c.location(), r.text)),
    );
    let any = flat.iter().any(|p| p.rule.tproxy().is_some());
    if !bad.is_empty() {
        out.push(
            Finding::new("tproxy-hook", AREA, Severity::Error, format!("TPROXY outside PREROUTING: {}", bad.join("; ")))
                .why("the kernel runs TPROXY only in the prerouting hook (iptables `mangle PREROUTING`, nftables `hook prerouting`); a jump to it from OUTPUT is refused, so this rule never intercepts anything. Local traffic is caught by marking it in OUTPUT and routing it back through lo, where PREROUTING's TPROXY sees it")
                .fix("jump to the TPROXY chain from PREROUTING (iptables -t mangle -A PREROUTING -j <chain>), and in OUTPUT only set the mark (-j MARK --set-mark <fwmark>)"),
        );
    } else if any {
        out.push(Finding::new(
            "tproxy-hook",
            AREA,
            Severity::Ok,
            "every TPROXY rule is in PREROUTING",
        ));
    }
}

fn halves(snap: &Snapshot, h: &Halves<'_, '_>, out: &mut Vec<Finding>) {
    match (h.tproxy.is_empty(), h.output_marks.is_empty()) {
        (false, false) => out.push(Finding::new("halves", AREA, Severity::Ok, "both halves present: PREROUTING TPROXY and OUTPUT mark")),
        (false, true) => {
            let sev = if snap.expect.as_ref().is_some_and(|e| e.local) { Severity::Warn } else { Severity::Info };
            out.push(
                Finding::new("halves", AREA, sev, "PREROUTING TPROXY only: this machine's own traffic is not intercepted")
                    .why("TPROXY sees packets entering the machine; a local process's packets never pass PREROUTING unless OUTPUT marks them so policy routing loops them back through lo. Fine if only the LAN is to be proxied")
                    .fix("nftables: a `type route hook output priority mangle` chain with `meta l4proto { tcp, udp } meta mark set <fwmark>` after the exclusions; iptables: iptables -t mangle -A OUTPUT -p tcp -j MARK --set-mark <fwmark>"),
            );
        }
        (true, false) => {
            let locs: Vec<String> = h.output_marks.iter().map(|(p, m)| format!("{} sets {m}", p.location())).collect();
            out.push(
                Finding::new("halves", AREA, Severity::Error, format!("OUTPUT marks without any PREROUTING TPROXY: {}", locs.join("; ")))
                    .why("marked packets are routed back through lo and arrive in PREROUTING, where no TPROXY rule hands them to the proxy: they are delivered to whatever listens on the original port of this machine, usually nothing, and connections fail")
                    .fix("add the PREROUTING half: nft add rule <family> <table> <prerouting chain> meta l4proto { tcp, udp } tproxy to :<port> meta mark set <fwmark> accept (iptables: iptables -t mangle -A PREROUTING -p tcp -j TPROXY --on-port <port> --tproxy-mark <fwmark>)"),
            );
        }
        (true, true) if snap.nft_json.is_none() && snap.iptables.is_empty() => out.push(
            Finding::new("halves", AREA, Severity::Info, "ruleset unreadable: ruleset checks skipped")
                .why("neither `nft list ruleset` nor `iptables-save` could be read (see the collection notes)")
                .fix("sudo tpgate doctor"),
        ),
        (true, true) => match &snap.expect {
            Some(e) => out.push(
                Finding::new("halves", AREA, Severity::Warn, "no TPROXY interception installed")
                    .why("neither a PREROUTING TPROXY rule nor an OUTPUT mark for it exists: tpgate is not running, or something removed its table")
                    .fix(format!("sudo tpgate run (listening on port {})", e.tproxy_port)),
            ),
            None => out.push(
                Finding::new("halves", AREA, Severity::Info, "no TPROXY interception found")
                    .why("nothing to check in the ruleset; the kernel, sysctl and neighbour checks still apply"),
            ),
        },
    }
}

/// A TPROXY rule that sets no mark (neither itself nor an earlier rule of its chain):
/// without the mark no `ip rule fwmark` sends the packet to the local table, so it is
/// forwarded (or dropped) instead of reaching the proxy's socket.
fn tproxy_marks(h: &Halves<'_, '_>, out: &mut Vec<Finding>) {
    for p in &h.tproxy {
        if p.rule.tproxy().is_some_and(|(_, m)| m.is_some()) {
            continue;
        }
        let before = p
            .chain
            .rules
            .iter()
            .take_while(|r| !std::ptr::eq(*r, p.rule));
        if before.clone().any(|r| r.set_mark().is_some()) {
            continue;
        }
        let fix = if p.chain.origin.starts_with("nft ") {
            "add `meta mark set 0x1` to the rule: ... tproxy to :<port> meta mark set 0x1 accept"
        } else {
            "add `--tproxy-mark 0x1` to the TPROXY rule"
        };
        out.push(
            Finding::new("tproxy-mark", AREA, Severity::Error, format!("TPROXY without a mark: {}", p.location()))
                .why("TPROXY keeps the destination address; only the mark (with `ip rule fwmark ... lookup <table>` and `local default dev lo`) makes routing deliver the packet to this host. Unmarked, it is forwarded on and never reaches the proxy")
                .fix(fix),
        );
    }
}

/// Whether packets carrying `mark` (tpgate's routing mark; `None`: some non-zero mark the
/// proxy sets) skip this OUTPUT rule.
fn excludes(p: &Placed<'_>, mark: Option<u32>) -> bool {
    let own = p.all_conds().any(|c| match *c {
        Cond::Owner => true,
        // The rule applies only to packets without this mark.
        Cond::Mark {
            mark: m,
            negated: true,
        } => mark.is_none_or(|v| m.matches(v)),
        // The rule applies only to packets with this mark: a guard when that is "no mark".
        Cond::Mark {
            mark: m,
            negated: false,
        } => mark.map_or(m.value == 0, |v| !m.matches(v)),
        _ => false,
    });
    own || p.guards.iter().any(|g| {
        g.conds.iter().any(|c| match *c {
            Cond::Owner => true,
            Cond::Mark {
                mark: m,
                negated: false,
            } => mark.map_or(m.value != 0, |v| m.matches(v)),
            Cond::Mark {
                mark: m,
                negated: true,
            } => mark.map_or(m.value == 0, |v| !m.matches(v)),
            _ => false,
        })
    })
}

fn loop_guard(snap: &Snapshot, h: &Halves<'_, '_>, out: &mut Vec<Finding>) {
    if h.output_marks.is_empty() {
        return;
    }
    let routing_mark = snap.expect.as_ref().map(|e| e.routing_mark);
    let unguarded: Vec<String> = h
        .output_marks
        .iter()
        .filter(|(p, _)| !excludes(p, routing_mark))
        .map(|(p, _)| p.location())
        .collect();
    if unguarded.is_empty() {
        out.push(Finding::new(
            "loop-guard",
            AREA,
            Severity::Ok,
            "OUTPUT marks skip the proxy's own packets (mark or owner exclusion)",
        ));
        return;
    }
    let which = routing_mark.map_or_else(
        || "the proxy's SO_MARK (routing-mark)".to_owned(),
        |m| format!("tpgate's routing-mark {m:#x}"),
    );
    out.push(
        Finding::new("loop-guard", AREA, Severity::Error, format!("no loop guard before {}", unguarded.join("; ")))
            .why(format!("the proxy's own outbound connections are marked too, routed back through lo and intercepted again: an endless loop that exhausts sockets. OUTPUT must first return for {which} or for the proxy's user (skuid)"))
            .fix(format!(
                "nftables: insert `meta mark {:#x} return` at the top of the OUTPUT chain; iptables: iptables -t mangle -I <output chain> -m mark --mark {:#x} -j RETURN",
                routing_mark.unwrap_or(0xff),
                routing_mark.unwrap_or(0xff)
            )),
    );
}

fn reply_direction(h: &Halves<'_, '_>, out: &mut Vec<Finding>) {
    let mut bad: Vec<String> = Vec::new();
    let mut fixes: Vec<String> = Vec::new();
    for p in &h.tproxy {
        let own = p.all_conds().any(|c| *c == Cond::CtDir(Dir::Original));
        let guarded = p
            .guards
            .iter()
            .any(|g| g.conds.contains(&Cond::CtDir(Dir::Reply)));
        if own || guarded {
            continue;
        }
        bad.push(p.location());
        let origin = &p.chain.origin;
        let fix = match origin.strip_prefix("nft ") {
            Some(ft) => format!(
                "nft insert rule {ft} {} ct direction reply return",
                p.chain.name
            ),
            None => {
                let (prog, table) = origin.split_once(' ').unwrap_or((origin, "mangle"));
                format!(
                    "{prog} -t {table} -I {} -m conntrack --ctdir REPLY -j RETURN",
                    p.chain.name
                )
            }
        };
        if !fixes.contains(&fix) {
            fixes.push(fix);
        }
    }
    if h.tproxy.is_empty() {
        return;
    }
    if bad.is_empty() {
        out.push(Finding::new(
            "reply-direction",
            AREA,
            Severity::Ok,
            "reply-direction packets are excluded before TPROXY",
        ));
        return;
    }
    out.push(
        Finding::new("reply-direction", AREA, Severity::Warn, format!("TPROXY also takes reply-direction packets: {}", bad.join("; ")))
            .why("detected: no `ct direction reply` return (iptables `--ctdir REPLY -j RETURN`) before the TPROXY rule and no `ct direction original` / `ct state new` on it. Replies of connections that were never intercepted (a port forward from the WAN to a LAN host, connections older than the rules) enter on the LAN interface, get handed to the proxy instead of being forwarded, and those connections hang")
            .fix(fixes.join("\n")),
    );
}
