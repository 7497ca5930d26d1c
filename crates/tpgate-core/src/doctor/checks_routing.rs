//! Policy routing behind the marks: an `ip rule fwmark` for every mark TPROXY and OUTPUT
//! set, a table whose route delivers locally (`local default dev lo`), and no other
//! software's rule sharing those marks.

use super::halves::{fwmark_rule, table_is_local, Halves};
use super::model::Placed;
use super::{Area, Finding, IpRule, Severity, Snapshot};
use crate::net::Mark;
use crate::plan::Family;

const AREA: Area = Area::Routing;

fn fam_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Who else uses a rule, recognised by its well-known table or mark.
fn owner_of(r: &IpRule) -> &'static str {
    let m = r.fwmark.unwrap_or(Mark::exact(0));
    match (r.table.as_str(), m.value, m.mask) {
        ("51820", _, _) | (_, 0xca6c, _) => "WireGuard (wg-quick)",
        ("52", _, _) | (_, _, 0xff0000) => "Tailscale",
        (_, _, 0x3f00) => "mwan3",
        _ => "another program",
    }
}

pub(super) fn run(snap: &Snapshot, flat: &[Placed<'_>], out: &mut Vec<Finding>) {
    let h = Halves::find(snap, flat);
    // (family, mark, what sets it)
    let mut marks: Vec<(Family, Mark, String)> = Vec::new();
    for p in &h.tproxy {
        if let Some((_, Some(m))) = p.rule.tproxy() {
            for f in p.families() {
                marks.push((f, m, format!("TPROXY in {}", p.chain.location())));
            }
        }
    }
    for (p, m) in &h.output_marks {
        for f in p.families() {
            marks.push((f, *m, format!("OUTPUT mark in {}", p.chain.location())));
        }
    }
    if snap.rules.is_none() && !marks.is_empty() {
        out.push(Finding::new(
            "fwmark-rule",
            AREA,
            Severity::Info,
            "policy routing rules could not be read; routing checks skipped",
        ));
        return;
    }
    let mut seen: Vec<(Family, u32)> = Vec::new();
    let table_hint = snap.expect.as_ref().map_or(100, |e| e.table.0);
    for (family, mark, by) in &marks {
        if seen.contains(&(*family, mark.value)) {
            continue;
        }
        seen.push((*family, mark.value));
        let fl = family.ip_flag();
        let fname = fam_name(*family);
        let Some(rule) = fwmark_rule(snap, *family, mark.value) else {
            out.push(
                Finding::new("fwmark-rule", AREA, Severity::Error, format!("no `ip {fl} rule fwmark` matches mark {mark} ({by}, {fname})"))
                    .why("without a policy rule the marked packets follow the main table: forwarded ones are routed on instead of being delivered to the proxy's socket, local ones simply leave by the default route, and nothing is intercepted")
                    .fix(format!("ip {fl} rule add fwmark {mark} lookup {table_hint} pref 9000 && ip {fl} route replace local default dev lo table {table_hint}")),
            );
            continue;
        };
        let before_main = snap.rules.iter().flatten().any(|r| {
            r.family == *family
                && r.fwmark.is_none()
                && !r.not
                && r.table == "main"
                && r.priority < rule.priority
        });
        if before_main {
            out.push(
                Finding::new("fwmark-rule", AREA, Severity::Error, format!("`fwmark {mark} lookup {}` has priority {}, after the main table ({fname})", rule.table, rule.priority))
                    .why("rules are tried by priority: the main table's default route answers first, so the fwmark rule is never reached")
                    .fix(format!("ip {fl} rule del pref {} && ip {fl} rule add fwmark {mark} lookup {} pref 9000", rule.priority, rule.table)),
            );
        } else {
            out.push(Finding::new(
                "fwmark-rule",
                AREA,
                Severity::Ok,
                format!(
                    "mark {mark} has `ip {fl} rule fwmark ... lookup {}` ({fname})",
                    rule.table
                ),
            ));
        }
        route_local(snap, *family, rule, out);
        collisions(snap, *family, *mark, rule, out);
    }
    routing_mark(snap, out);
    ruleset_marks(snap, flat, &h, out);
}

/// Chains of software known to mark packets for its own routing.
const MARKING_SOFTWARE: &[(&str, &str)] = &[
    ("mwan3", "mwan3"),
    ("ts-", "Tailscale"),
    ("KUBE-", "Kubernetes"),
    ("cali-", "Calico"),
    ("DOCKER", "Docker"),
];

/// Other rulesets setting mark bits that overlap the TPROXY mark: the packets they mark
/// follow the TPROXY fwmark rule (looped back to lo), or ours lose their mark to them.
fn ruleset_marks(snap: &Snapshot, flat: &[Placed<'_>], h: &Halves<'_, '_>, out: &mut Vec<Finding>) {
    let mut ours: Vec<Mark> = h
        .tproxy
        .iter()
        .filter_map(|p| p.rule.tproxy().and_then(|(_, m)| m))
        .collect();
    ours.extend(snap.expect.as_ref().map(|e| e.fwmark));
    let our_origins: Vec<&str> = h
        .tproxy
        .iter()
        .map(|p| p.chain.origin.as_str())
        .chain(h.output_marks.iter().map(|(p, _)| p.chain.origin.as_str()))
        .collect();
    let mut seen: Vec<String> = Vec::new();
    for p in flat {
        let Some(m) = p.rule.set_mark() else { continue };
        let known = MARKING_SOFTWARE
            .iter()
            .find(|(prefix, _)| p.chain.name.starts_with(prefix));
        let foreign_nft =
            p.chain.origin.starts_with("nft ") && !our_origins.contains(&p.chain.origin.as_str());
        if known.is_none() && !foreign_nft {
            continue;
        }
        let Some(hit) = ours.iter().find(|o| overlap(**o, m)) else {
            continue;
        };
        let loc = p.location();
        if seen.contains(&loc) {
            continue;
        }
        seen.push(loc.clone());
        let who = known.map_or("another ruleset", |(_, name)| name);
        out.push(
            Finding::new("mark-collision", AREA, Severity::Warn, format!("{who} sets mark {m} ({loc}), overlapping the TPROXY mark {hit}"))
                .why("packets it marks match the TPROXY fwmark rule and are looped back to this host (or its rule rewrites the mark of intercepted packets): both programs misroute each other's traffic")
                .fix("give tpgate bits nobody else uses: `intercept: {fwmark: 0x100/0xff00}` style masks, or change the other program's mark"),
        );
    }
}

fn route_local(snap: &Snapshot, family: Family, rule: &IpRule, out: &mut Vec<Finding>) {
    let (fl, fname, t) = (family.ip_flag(), fam_name(family), &rule.table);
    if table_is_local(snap, family, t) {
        out.push(Finding::new(
            "route-local",
            AREA,
            Severity::Ok,
            format!("table {t} has `local default dev lo` ({fname})"),
        ));
        return;
    }
    let present: Vec<String> = snap
        .routes
        .iter()
        .filter(|r| r.family == family && &r.table == t)
        .map(super::Route::describe)
        .collect();
    let has = if present.is_empty() {
        "is empty".to_owned()
    } else {
        format!("has `{}`", present.join("`, `"))
    };
    out.push(
        Finding::new("route-local", AREA, Severity::Error, format!("table {t} (fwmark {}) {has} instead of `local default dev lo` ({fname})", rule.fwmark.map(|m| m.to_string()).unwrap_or_default()))
            .why("TPROXY does not change the destination, so a marked packet must be routed as *local* to reach the proxy's socket; a route via a physical interface (or a unicast route, even on lo) sends marked packets out or drops them, and nothing is intercepted")
            .fix(format!("ip {fl} route replace local default dev lo table {t}")),
    );
}

/// Overlap of two masked marks: some packet mark matches both.
fn overlap(a: Mark, b: Mark) -> bool {
    (a.value ^ b.value) & a.mask & b.mask == 0
}

fn collisions(snap: &Snapshot, family: Family, mark: Mark, ours: &IpRule, out: &mut Vec<Finding>) {
    let fname = fam_name(family);
    let mut hit = false;
    for r in snap.rules.iter().flatten() {
        let Some(theirs) = r.fwmark else { continue };
        if r.family != family || r.table == ours.table {
            continue;
        }
        let first = r.priority < ours.priority && r.takes(mark.value);
        let shadowed = !r.not && r.priority > ours.priority && overlap(theirs, mark);
        if !(first || shadowed) {
            continue;
        }
        hit = true;
        let who = owner_of(r);
        let (sev, what) = if first {
            (Severity::Error, format!("{who}'s rule `{}fwmark {theirs} lookup {}` (pref {}) takes packets marked {mark} before ours", if r.not { "not " } else { "" }, r.table, r.priority))
        } else {
            (Severity::Warn, format!("{who}'s rule `fwmark {theirs} lookup {}` (pref {}) shares bits with {mark}: our rule catches its packets first", r.table, r.priority))
        };
        let used: Vec<Mark> = snap
            .rules
            .iter()
            .flatten()
            .filter(|x| x.table != ours.table)
            .filter_map(|x| x.fwmark)
            .collect();
        let free = [0x1u32, 0x2, 0x4, 0x10, 0x100, 0x1000, 0x10000]
            .into_iter()
            .find(|v| used.iter().all(|u| !overlap(*u, Mark::exact(*v))))
            .unwrap_or(0x100);
        out.push(
            Finding::new("mark-collision", AREA, sev, format!("{what} ({fname})"))
                .why("two programs using the same fwmark bits steal each other's packets: traffic meant for the proxy goes to the other table (or the other way round), and one of them silently stops working")
                .fix(format!("pick a mark nobody else uses, e.g. in tpgate's config `intercept: {{fwmark: {free:#x}}}` (then restart), or move the other program's mark")),
        );
    }
    if !hit {
        out.push(Finding::new(
            "mark-collision",
            AREA,
            Severity::Ok,
            format!("no other ip rule uses mark {mark} ({fname})"),
        ));
    }
}

/// tpgate's routing-mark taken by someone's positive fwmark rule.
fn routing_mark(snap: &Snapshot, out: &mut Vec<Finding>) {
    let Some(e) = &snap.expect else { return };
    for r in snap.rules.iter().flatten() {
        if r.not
            || r.fwmark.is_none()
            || !r.takes(e.routing_mark)
            || r.table_id() == Some(e.table.0)
        {
            continue;
        }
        out.push(
            Finding::new("mark-collision", AREA, Severity::Warn, format!("tpgate's routing-mark {:#x} matches {}'s rule `fwmark {} lookup {}` ({})", e.routing_mark, owner_of(r), r.fwmark.map(|m| m.to_string()).unwrap_or_default(), r.table, fam_name(r.family)))
                .why("every outbound connection of the proxy carries the routing-mark, so it follows that table instead of the main one")
                .fix("routing-mark: <a value no ip rule matches> in tpgate's config, unless sending the proxy's traffic through that table is intended"),
        );
    }
}
