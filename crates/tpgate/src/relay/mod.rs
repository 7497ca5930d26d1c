//! The data plane: TPROXY listeners, the per-flow decision, and the relays.

mod copy;
pub(crate) mod gauge;
mod sniff;
mod splice;
pub(crate) mod tcp;
#[cfg(test)]
mod test_pairs;
pub(crate) mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tpgate_core::net::{Destination, Network, Origin};
use tpgate_core::rules::{Action, Decision, FlowMeta, ProcessInfo, RuleEngine};

use crate::dns::FakeName;
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
    pub(crate) sniffer: tpgate_core::config::Sniffer,
    /// The country database, when a `GEOIP` rule needs one.
    pub(crate) geoip: Option<crate::geoip::GeoIp>,
    /// The built-in DNS server's tables, when `dns.enable`: names of fake and mapped IPs.
    pub(crate) dns: Option<Arc<crate::dns::Dns>>,
}

/// The name a flow is routed by, and where it came from.
pub(crate) struct FlowName {
    pub(crate) host: Option<String>,
    /// The destination is a fake address: DIRECT must resolve `host` for real.
    pub(crate) fake: bool,
}

/// Whether to read a TCP flow's first bytes for its name, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameNeed {
    /// The name can change the verdict, or goes to an upstream: wait for it (bounded).
    Wait,
    /// The verdict sends the flow DIRECT to its address whatever the name: read it only
    /// while connecting, for the log line.
    LogOnly,
    /// Nothing to learn: a fake address stands for its name already, or the flow is
    /// rejected by its address.
    Nothing,
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
    /// ` process=NAME uid=N` for the log line when the owning process was looked up.
    pub(crate) who: String,
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
    /// The name of a flow to `dst`: a fake address's name wins over the sniffed one (as in
    /// mihomo: the client asked for that name), the sniffed name over the redir-host
    /// mapping. `None`: `dst` is a fake address no name holds, which leads nowhere.
    pub(crate) fn flow_name(&self, dst: IpAddr, sniffed: Option<String>) -> Option<FlowName> {
        let Some(dns) = &self.dns else {
            return Some(FlowName {
                host: sniffed,
                fake: false,
            });
        };
        match dns.fake_name(dst) {
            FakeName::Name(n) => Some(FlowName {
                host: Some(n),
                fake: true,
            }),
            FakeName::Unknown => None,
            FakeName::NotFake => Some(FlowName {
                host: sniffed.or_else(|| dns.mapped_name(dst)),
                fake: false,
            }),
        }
    }

    /// The real address of a fake-ip flow's name, for DIRECT.
    pub(crate) async fn resolve_real(&self, name: &str, port: u16) -> std::io::Result<SocketAddr> {
        match &self.dns {
            Some(dns) => Ok(SocketAddr::new(dns.resolve(name).await?, port)),
            None => Err(std::io::Error::other("no DNS")),
        }
    }

    /// The address rules should see for a flow to `dst`: the real address of a fake-ip
    /// flow's name when a rule that looks at addresses (without `no-resolve`) would be
    /// reached first, else `dst` itself.
    pub(crate) async fn rules_dst(
        &self,
        network: Network,
        src: SocketAddr,
        dst: SocketAddr,
        host: Option<&str>,
    ) -> SocketAddr {
        match host {
            Some(name) if self.needs_real_dst(network, src, dst, host) => {
                self.real_dst_for_rules(name, dst).await
            }
            _ => dst,
        }
    }

    /// The real address of the fake-ip flow `name` (to `dst`) for the address rules, or
    /// `dst` when it cannot be resolved.
    pub(crate) async fn real_dst_for_rules(&self, name: &str, dst: SocketAddr) -> SocketAddr {
        match self.resolve_real(name, dst.port()).await {
            Ok(real) => {
                tracing::debug!("{name}: resolved to {real} for the address rules");
                real
            }
            Err(e) => {
                tracing::debug!("{name}: not resolved for the address rules ({e})");
                dst
            }
        }
    }

    /// Whether a fake-ip flow named `host` reaches an address rule (without `no-resolve`)
    /// before it is decided, so its name must be resolved first (see [`Shared::rules_dst`]).
    pub(crate) fn needs_real_dst(
        &self,
        network: Network,
        src: SocketAddr,
        dst: SocketAddr,
        host: Option<&str>,
    ) -> bool {
        host.is_some()
            && self.engine.needs_real_dst(&FlowMeta {
                network,
                src,
                dst,
                origin: self.origin(src),
                host,
                process: None,
                geo: None,
            })
    }

    /// This host's own flow, or a LAN host's.
    fn origin(&self, src: SocketAddr) -> Origin {
        if self.local_addrs.contains(src.ip()) {
            Origin::Local
        } else {
            Origin::Forwarded
        }
    }

    /// Whether `dst` is tpgate's own listener: relaying it would loop forever.
    pub(crate) fn is_self(&self, dst: SocketAddr) -> bool {
        dst.port() == self.tproxy_port && self.local_addrs.contains(dst.ip())
    }

    /// Whether deciding a flow from `src` needs its owning process looked up.
    pub(crate) fn needs_process(&self, src: SocketAddr) -> bool {
        self.origin(src) == Origin::Local && self.engine.needs_process()
    }

    /// The owning process of this host's own flow `src -> dst`, when a rule asks. The lookup
    /// (a sock_diag dump and a /proc scan) runs on the blocking pool, so it never holds up
    /// the async workers.
    pub(crate) async fn process_of(
        &self,
        network: Network,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<ProcessInfo> {
        if !self.needs_process(src) {
            return None;
        }
        tokio::task::spawn_blocking(move || crate::owner::lookup(network, src, dst))
            .await
            .ok()
    }

    /// [`Shared::decide`] with the owning process of `src -> dst` looked up first when a
    /// rule asks; rules see `rules_dst` (a fake address's real one, or `dst`).
    pub(crate) async fn decide_flow(
        &self,
        network: Network,
        (src, dst): (SocketAddr, SocketAddr),
        rules_dst: SocketAddr,
        host: Option<&str>,
    ) -> Verdict {
        let process = self.process_of(network, src, dst).await;
        self.decide(network, src, rules_dst, host, process)
    }

    /// What a flow's name is worth before it is decided, so sniffing waits only when it
    /// must (`process`: as the flow will be decided with).
    pub(crate) fn name_need(
        &self,
        network: Network,
        src: SocketAddr,
        dst: SocketAddr,
        process: Option<&ProcessInfo>,
    ) -> NameNeed {
        if let Some(dns) = &self.dns {
            if !matches!(dns.fake_name(dst.ip()), FakeName::NotFake) {
                return NameNeed::Nothing;
            }
        }
        let geo = self.geo(src, dst);
        let meta = FlowMeta {
            network,
            src,
            dst,
            origin: self.origin(src),
            host: None,
            process,
            geo: geo.as_ref(),
        };
        if self.engine.name_matters(&meta) {
            return NameNeed::Wait;
        }
        match self.engine.decide(&meta).action {
            Action::Direct if self.sniffer.override_destination => NameNeed::Wait,
            Action::Direct => NameNeed::LogOnly,
            Action::Reject | Action::RejectDrop => NameNeed::Nothing,
            // Upstreams are given the name.
            Action::Proxy(_) => NameNeed::Wait,
        }
    }

    fn geo(&self, src: SocketAddr, dst: SocketAddr) -> Option<tpgate_core::rules::Geo> {
        self.geoip.as_ref().map(|g| tpgate_core::rules::Geo {
            dst: g.country(dst.ip()),
            src: g.country(src.ip()),
        })
    }

    /// `host`: the name the client asked for, when sniffing learned it; rules match on it
    /// and upstream proxies get it instead of the address. `process`: the flow's owning
    /// process when [`Shared::needs_process`] (see [`Shared::decide_flow`]).
    pub(crate) fn decide(
        &self,
        network: Network,
        src: SocketAddr,
        dst: SocketAddr,
        host: Option<&str>,
        process: Option<ProcessInfo>,
    ) -> Verdict {
        let origin = self.origin(src);
        let geo = self.geo(src, dst);
        let Decision {
            action,
            rule,
            inner,
        } = self.engine.decide(&FlowMeta {
            network,
            src,
            dst,
            origin,
            host,
            process: process.as_ref(),
            geo: geo.as_ref(),
        });
        let mut rule = rule
            .and_then(|i| self.engine.rule(i))
            .map_or_else(|| "(none)".to_string(), |r| r.text.clone());
        // A SUB-RULE names the rule of its list that decided: `SUB-RULE,... > DOMAIN,...`.
        if let Some(r) = inner.and_then(|(l, i)| self.engine.sub_rule(l, i)) {
            rule = format!("{rule} > {}", r.text);
        }
        let way = match action {
            Action::Direct => Way::Direct,
            Action::Reject => Way::Reject,
            Action::RejectDrop => Way::RejectDrop,
            Action::Proxy(id) => {
                let pick = self.outbounds.pick(id, &destination(dst, host));
                match pick.leaf {
                    Leaf::Chain(_) => Way::Proxy(pick),
                    // A group that chose DIRECT or REJECT: still logged with its path.
                    Leaf::Direct | Leaf::Reject => Way::Proxy(pick),
                }
            }
        };
        let who = process.map_or_else(String::new, |p| {
            let name = p.name.as_deref().unwrap_or("?");
            match p.uid {
                Some(uid) => format!(" process={name} uid={uid}"),
                None => format!(" process={name}"),
            }
        });
        Verdict {
            way,
            who,
            origin,
            rule,
        }
    }
}

/// What an upstream is asked to connect to: the name when one is known, so it resolves
/// the name itself (remote DNS), else the address.
pub(crate) fn destination(dst: SocketAddr, host: Option<&str>) -> Destination {
    match host {
        Some(h) => Destination::Domain(h.to_owned(), dst.port()),
        None => Destination::Addr(dst),
    }
}

/// ` host=NAME` for the per-flow log line, or nothing.
pub(crate) fn host_field(host: Option<&str>) -> String {
    host.map_or_else(String::new, |h| format!(" host={h}"))
}

pub(crate) fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Local => "local",
        Origin::Forwarded => "forwarded",
    }
}
