//! The data plane: TPROXY listeners, the per-flow decision, and the relays.

mod copy;
pub(crate) mod tcp;
pub(crate) mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tpgate_core::net::{Destination, Network, Origin};
use tpgate_core::rules::{Action, Decision, FlowMeta, RuleEngine};

use crate::local_addrs::LocalAddrs;
use crate::outbound::{Leaf, Outbounds, Pick};

/// What every connection handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) engine: RuleEngine,
    pub(crate) outbounds: Arc<Outbounds>,
    pub(crate) routing_mark: u32,
    pub(crate) tproxy_port: u16,
    pub(crate) local_addrs: LocalAddrs,
}

/// How a flow leaves.
pub(crate) enum Way {
    Direct,
    Reject,
    RejectDrop,
    /// Through upstream proxies (`pick.leaf` is a chain).
    Proxy(Pick),
}

/// A flow's verdict, ready to log.
pub(crate) struct Verdict {
    pub(crate) way: Way,
    pub(crate) origin: Origin,
    pub(crate) rule: String,
}

impl Verdict {
    /// `DIRECT`, `REJECT`, a proxy's name or a group path like `auto/dante`.
    pub(crate) fn route(&self) -> &str {
        match &self.way {
            Way::Direct => "DIRECT",
            Way::Reject => "REJECT",
            Way::RejectDrop => "REJECT-DROP",
            Way::Proxy(p) => &p.route,
        }
    }
}

impl Shared {
    /// Whether `dst` is tpgate's own listener: relaying it would loop forever.
    pub(crate) fn is_self(&self, dst: SocketAddr) -> bool {
        dst.port() == self.tproxy_port && self.local_addrs.contains(dst.ip())
    }

    pub(crate) fn decide(&self, network: Network, src: SocketAddr, dst: SocketAddr) -> Verdict {
        let origin = if self.local_addrs.contains(src.ip()) {
            Origin::Local
        } else {
            Origin::Forwarded
        };
        let Decision { action, rule } = self.engine.decide(&FlowMeta {
            network,
            src,
            dst,
            origin,
        });
        let rule = rule
            .and_then(|i| self.engine.rule(i))
            .map_or_else(|| "(none)".to_string(), |r| r.text.clone());
        let way = match action {
            Action::Direct => Way::Direct,
            Action::Reject => Way::Reject,
            Action::RejectDrop => Way::RejectDrop,
            Action::Proxy(id) => {
                let pick = self.outbounds.pick(id, &Destination::Addr(dst));
                match pick.leaf {
                    Leaf::Chain(_) => Way::Proxy(pick),
                    // A group that chose DIRECT or REJECT: still logged with its path.
                    Leaf::Direct | Leaf::Reject => Way::Proxy(pick),
                }
            }
        };
        Verdict { way, origin, rule }
    }
}

pub(crate) fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Local => "local",
        Origin::Forwarded => "forwarded",
    }
}
