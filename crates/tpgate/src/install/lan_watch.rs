//! What happens to the LAN interfaces while tpgate runs. The interception rules match
//! interfaces by name (`iifname`, `-i`), so a LAN interface that does not exist yet at
//! start (a bridge created later, a USB modem), that goes down and up, or that changes its
//! addresses is intercepted again the moment packets arrive on it: nothing needs
//! re-installing. This watcher says so in the log: at start and after a reload, which
//! configured interfaces are missing; then, from rtnetlink link events, when one appears,
//! goes down or up, disappears, or is renamed (a renamed interface is no longer
//! intercepted: the config names the old name).

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket as _, SocketAddr};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::shutdown::Shutdown;

/// RTNLGRP_LINK (group 1), as the legacy bitmask of `bind`.
const LINK_GROUP: u32 = 1;

/// Logs the configured LAN interfaces that do not exist now.
pub(crate) fn report_missing(lan: &[String]) {
    for name in lan {
        if nix::net::if_::if_nametoindex(name.as_str()).is_err() {
            warn!(
                interface = %name,
                "lan interface {name} does not exist (yet): its traffic is intercepted as soon \
                 as it appears (the rules match it by name)"
            );
        }
    }
}

/// What the watcher remembers of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    name: String,
    up: bool,
}

fn link_of(m: &LinkMessage) -> Option<(u32, Link)> {
    let name = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    let up = m.header.flags.contains(LinkFlags::Up) && m.header.flags.contains(LinkFlags::LowerUp);
    Some((m.header.index, Link { name, up }))
}

/// What one link event means for the LAN interfaces `lan`, as a log line (`None`: nothing
/// worth saying). `before` is what the watcher knew of that interface index.
fn describe(lan: &[String], before: Option<&Link>, now: Option<&Link>) -> Option<String> {
    let is_lan = |l: &Link| lan.contains(&l.name);
    match (before, now) {
        (None, Some(n)) if is_lan(n) => Some(format!(
            "lan interface {} appeared{}: intercepted",
            n.name,
            if n.up { "" } else { " (down)" }
        )),
        (Some(b), None) if is_lan(b) => Some(format!(
            "lan interface {} disappeared: intercepted again when it comes back",
            b.name
        )),
        (Some(b), Some(n)) if b.name != n.name && (is_lan(b) || is_lan(n)) => {
            Some(match (is_lan(b), is_lan(n)) {
                (true, false) => format!(
                    "lan interface {} was renamed {}: no longer intercepted (lan-interfaces names {})",
                    b.name, n.name, b.name
                ),
                _ => format!(
                    "interface {} was renamed {}, a lan interface: intercepted",
                    b.name, n.name
                ),
            })
        }
        (Some(b), Some(n)) if is_lan(n) && b.up != n.up => Some(format!(
            "lan interface {} is {}",
            n.name,
            if n.up { "up" } else { "down" }
        )),
        _ => None,
    }
}

/// Follows link events until shutdown; `lan` is the configured list (a reload sends the
/// next one).
pub(crate) async fn run(mut lan: watch::Receiver<Vec<String>>, shutdown: Shutdown) -> Result<()> {
    let (mut conn, handle, mut events) =
        rtnetlink::new_connection().context("opening rtnetlink")?;
    conn.socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, LINK_GROUP))
        .context("subscribing to link events")?;
    tokio::spawn(conn);
    // What exists now, so later events are told apart from the start.
    let mut known: HashMap<u32, Link> = HashMap::new();
    let mut links = handle.link().get().execute();
    while let Some(Ok(m)) = links.next().await {
        if let Some((i, l)) = link_of(&m) {
            known.insert(i, l);
        }
    }
    report_missing(&lan.borrow());
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            changed = lan.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                report_missing(&lan.borrow_and_update());
                continue;
            }
            () = shutdown.wait() => return Ok(()),
        };
        let Some((msg, _)) = ev else { return Ok(()) };
        let (index, now) = match &msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => match link_of(m) {
                Some((i, l)) => (i, Some(l)),
                None => continue,
            },
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => (m.header.index, None),
            _ => continue,
        };
        let before = known.get(&index).cloned();
        if let Some(line) = describe(&lan.borrow(), before.as_ref(), now.as_ref()) {
            info!("{line}");
        }
        match now {
            Some(l) => known.insert(index, l),
            None => known.remove(&index),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, up: bool) -> Link {
        Link {
            name: name.into(),
            up,
        }
    }

    #[test]
    fn link_events_are_told_for_lan_interfaces_only() {
        let lan = vec!["br-lan".to_owned()];
        let said = |b: Option<Link>, n: Option<Link>| describe(&lan, b.as_ref(), n.as_ref());
        assert!(said(None, Some(link("br-lan", true)))
            .unwrap()
            .contains("appeared"));
        assert_eq!(said(None, Some(link("eth9", true))), None);
        assert!(
            said(Some(link("br-lan", true)), Some(link("br-lan", false)))
                .unwrap()
                .ends_with("is down")
        );
        assert!(
            said(Some(link("br-lan", false)), Some(link("br-lan", true)))
                .unwrap()
                .ends_with("is up")
        );
        assert_eq!(
            said(Some(link("br-lan", true)), Some(link("br-lan", true))),
            None
        );
        assert!(said(Some(link("br-lan", true)), Some(link("lan9", true)))
            .unwrap()
            .contains("no longer intercepted"));
        assert!(said(Some(link("eth9", true)), Some(link("br-lan", true)))
            .unwrap()
            .contains("a lan interface: intercepted"));
        assert!(said(Some(link("br-lan", true)), None)
            .unwrap()
            .contains("disappeared"));
        assert_eq!(said(Some(link("eth9", true)), None), None);
    }
}
