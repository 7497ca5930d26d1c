//! Policy routing over rtnetlink: `fwmark -> lookup table` rules and `local default dev lo`
//! routes, both tagged with [`ROUTE_PROTO`] so teardown removes exactly these and nothing a
//! user or another program added.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};
use futures::TryStreamExt as _;
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};
use tpgate_core::plan::{Family, Plan, ROUTE_PROTO};

fn handle() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(conn);
    Ok(handle)
}

fn proto() -> RouteProtocol {
    RouteProtocol::from(ROUTE_PROTO)
}

pub(super) async fn add(plan: &Plan) -> Result<()> {
    add_with(plan, false).await.map(|_| ())
}

/// Adds whatever of the plan's rules and routes is missing; returns how many were added.
pub(super) async fn add_missing(plan: &Plan) -> Result<usize> {
    add_with(plan, true).await
}

/// EEXIST from the kernel.
fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == nix::libc::EEXIST)
}

async fn add_with(plan: &Plan, tolerate_existing: bool) -> Result<usize> {
    let mut added = 0;
    let h = handle()?;
    let lo = nix::net::if_::if_nametoindex("lo").context("looking up lo")?;
    for r in &plan.routes {
        let msg = match r.family {
            Family::V4 => local_default(
                RouteMessageBuilder::<Ipv4Addr>::new().build(),
                r.table.0,
                lo,
            ),
            Family::V6 => local_default(
                RouteMessageBuilder::<Ipv6Addr>::new().build(),
                r.table.0,
                lo,
            ),
        };
        match h.route().add(msg).execute().await {
            Ok(()) => added += 1,
            Err(e) if tolerate_existing && exists(&e) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "ip {} route add local default dev lo table {}",
                        r.family.ip_flag(),
                        r.table
                    )
                })
            }
        }
    }
    for r in &plan.rules {
        let req = h
            .rule()
            .add()
            .fw_mark(r.fwmark.value)
            .table_id(r.table.0)
            .priority(r.priority)
            .action(RuleAction::ToTable);
        let res = match r.family {
            Family::V4 => {
                let mut v4 = req.v4();
                push_rule_attrs(v4.message_mut(), r.fwmark.mask);
                v4.execute().await
            }
            Family::V6 => {
                let mut v6 = req.v6();
                push_rule_attrs(v6.message_mut(), r.fwmark.mask);
                v6.execute().await
            }
        };
        match res {
            Ok(()) => added += 1,
            Err(e) if tolerate_existing && exists(&e) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "ip {} rule add fwmark {} lookup {}",
                        r.family.ip_flag(),
                        r.fwmark,
                        r.table
                    )
                })
            }
        }
    }
    Ok(added)
}

fn push_rule_attrs(msg: &mut netlink_packet_route::rule::RuleMessage, mask: u32) {
    msg.attributes.push(RuleAttribute::FwMask(mask));
    msg.attributes.push(RuleAttribute::Protocol(proto()));
}

fn local_default(mut msg: RouteMessage, table: u32, lo: u32) -> RouteMessage {
    msg.header.kind = RouteType::Local;
    msg.header.scope = RouteScope::Host;
    msg.header.protocol = proto();
    msg.header.destination_prefix_length = 0;
    if table > 255 {
        msg.header.table = 252; // RT_TABLE_COMPAT: the real id is in the attribute
    } else {
        msg.header.table = table as u8;
    }
    msg.attributes.push(RouteAttribute::Table(table));
    msg.attributes.push(RouteAttribute::Oif(lo));
    msg
}

/// Removes every rule and route tagged with tpgate's protocol, both families. Returns how
/// many objects were removed.
pub(crate) async fn remove_tagged() -> Result<usize> {
    remove_where(None).await
}

/// A reload that changed marks or tables: removes the tagged rules and routes that `plan`
/// does not have (after its own were added, so marked packets always find a route).
pub(super) async fn remove_unlisted(plan: &Plan) -> Result<usize> {
    remove_where(Some(plan)).await
}

/// Whether a tagged rule is one of `plan`'s.
fn rule_listed(plan: &Plan, rule: &netlink_packet_route::rule::RuleMessage) -> bool {
    let attr = |want: fn(&RuleAttribute) -> Option<u32>| rule.attributes.iter().find_map(want);
    let mark = attr(|a| match a {
        RuleAttribute::FwMark(m) => Some(*m),
        _ => None,
    });
    let mask = attr(|a| match a {
        RuleAttribute::FwMask(m) => Some(*m),
        _ => None,
    });
    let table = attr(|a| match a {
        RuleAttribute::Table(t) => Some(*t),
        _ => None,
    })
    .unwrap_or(u32::from(rule.header.table));
    let priority = attr(|a| match a {
        RuleAttribute::Priority(p) => Some(*p),
        _ => None,
    });
    plan.rules.iter().any(|r| {
        family_of(rule.header.family) == Some(r.family)
            && mark == Some(r.fwmark.value)
            && mask.unwrap_or(u32::MAX) == r.fwmark.mask
            && table == r.table.0
            && priority == Some(r.priority)
    })
}

/// Whether a tagged route is one of `plan`'s.
fn route_listed(plan: &Plan, route: &RouteMessage) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    plan.routes
        .iter()
        .any(|r| family_of(route.header.address_family) == Some(r.family) && table == r.table.0)
}

fn family_of(f: netlink_packet_route::AddressFamily) -> Option<Family> {
    match f {
        netlink_packet_route::AddressFamily::Inet => Some(Family::V4),
        netlink_packet_route::AddressFamily::Inet6 => Some(Family::V6),
        _ => None,
    }
}

/// Removes the tagged rules and routes, all of them or those `keep` does not list.
async fn remove_where(keep: Option<&Plan>) -> Result<usize> {
    let h = handle()?;
    let mut removed = 0;
    for v in [IpVersion::V4, IpVersion::V6] {
        let rules: Vec<_> = h.rule().get(v.clone()).execute().try_collect().await?;
        for rule in rules {
            if rule.attributes.contains(&RuleAttribute::Protocol(proto()))
                && !keep.is_some_and(|p| rule_listed(p, &rule))
            {
                h.rule()
                    .del(rule)
                    .execute()
                    .await
                    .context("deleting a tpgate ip rule")?;
                removed += 1;
            }
        }
        let filter = match v {
            IpVersion::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            IpVersion::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        };
        let routes: Vec<_> = h.route().get(filter).execute().try_collect().await?;
        for route in routes {
            if route.header.protocol == proto() && !keep.is_some_and(|p| route_listed(p, &route)) {
                h.route()
                    .del(route)
                    .execute()
                    .await
                    .context("deleting a tpgate route")?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::rule::RuleMessage;
    use netlink_packet_route::AddressFamily;

    fn plan(extra: &str) -> Plan {
        let text = format!("tproxy-port: 7893\nintercept:\n  local: true\n{extra}");
        Plan::new(&tpgate_core::config::load(&text).expect("config").config)
    }

    fn rule(family: AddressFamily, mark: u32, mask: u32, table: u32, priority: u32) -> RuleMessage {
        let mut r = RuleMessage::default();
        r.header.family = family;
        r.attributes = vec![
            RuleAttribute::FwMark(mark),
            RuleAttribute::FwMask(mask),
            RuleAttribute::Table(table),
            RuleAttribute::Priority(priority),
            RuleAttribute::Protocol(proto()),
        ];
        r
    }

    #[test]
    fn a_reload_keeps_the_new_plans_rules_and_removes_the_old_ones() {
        let old = plan("");
        let new = plan("  fwmark: 0x77\n  route-table: 177\n");
        let of = |p: &Plan| {
            let r = p.rules[0];
            rule(
                AddressFamily::Inet,
                r.fwmark.value,
                r.fwmark.mask,
                r.table.0,
                r.priority,
            )
        };
        assert!(rule_listed(&old, &of(&old)));
        assert!(rule_listed(&new, &of(&new)));
        assert!(!rule_listed(&new, &of(&old)), "the old mark goes");
        assert!(!rule_listed(&old, &of(&new)));
        // Same numbers, other family: IPv6 is not in a plan without `ipv6`.
        let r = old.rules[0];
        let v6 = rule(
            AddressFamily::Inet6,
            r.fwmark.value,
            r.fwmark.mask,
            r.table.0,
            r.priority,
        );
        assert_eq!(rule_listed(&old, &v6), old.ipv6);
    }
}
