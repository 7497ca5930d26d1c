//! The data plane: TPROXY listeners, the per-flow decision, and the relays.

mod copy;
pub(crate) mod tcp;
pub(crate) mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use tpgate_core::net::{Network, Origin};
use tpgate_core::rules::{Action, Decision, FlowMeta, RuleEngine};

use crate::local_addrs::LocalAddrs;

/// What every connection handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) engine: RuleEngine,
    pub(crate) routing_mark: u32,
    pub(crate) tproxy_port: u16,
    pub(crate) local_addrs: LocalAddrs,
}

/// A flow's verdict, ready to log.
pub(crate) struct Verdict {
    pub(crate) action: Action,
    pub(crate) origin: Origin,
    pub(crate) rule: String,
}

impl Shared {
    /// Whether `dst` is tpgate's own listener: relaying it would loop forever.
    pub(crate) fn is_self(&self, dst: SocketAddr) -> bool {
        dst.port() == self.tproxy_port && self.local_addrs.contains(dst.ip())
    }

    pub(crate) fn decide(
        self: &Arc<Self>,
        network: Network,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Verdict {
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
        Verdict {
            action,
            origin,
            rule,
        }
    }
}

pub(crate) fn action_name(a: Action) -> &'static str {
    match a {
        Action::Direct => "DIRECT",
        Action::Reject => "REJECT",
        Action::RejectDrop => "REJECT-DROP",
    }
}

pub(crate) fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Local => "local",
        Origin::Forwarded => "forwarded",
    }
}
