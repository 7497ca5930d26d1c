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
    let h = handle()?;
    let mut removed = 0;
    for v in [IpVersion::V4, IpVersion::V6] {
        let rules: Vec<_> = h.rule().get(v.clone()).execute().try_collect().await?;
        for rule in rules {
            if rule.attributes.contains(&RuleAttribute::Protocol(proto())) {
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
            if route.header.protocol == proto() {
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
