//! Outbounds: where a flow goes after the rules picked a target. Upstream proxies (SOCKS5,
//! HTTP CONNECT, Shadowsocks, Trojan), groups that choose among them (select, url-test,
//! fallback, load-balance, relay), and the marked dialing and resolving they share.
//! Protocol bytes come from the sans-IO codecs in `tpgate_core::proto`; this module only
//! moves them over sockets.

mod dial;
pub(crate) mod error;
mod framing;
mod group;
mod health;
pub(crate) mod history;
mod http;
mod hysteria2;
mod plugin;
mod provided;
mod quic;
mod reality;
mod resolve;
mod sealed;
mod socks5;
mod ss;
mod state;
mod tls;
mod transport;
mod trojan;
mod tuic;
pub(crate) mod udp;
mod upstream;
mod vision;
#[cfg(test)]
mod vision_tests;
mod vless;
mod vmess;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tpgate_core::config::subscription::SubscriptionInfo;
use tpgate_core::config::{Config, GroupDef, GroupKind, Member, ProxyDef, Slot, TargetId};
use tpgate_core::flow::Verdict;
use tpgate_core::net::Destination;
use tracing::warn;

use error::DialError;
use quic::Via;

pub(crate) use dial::connect_marked;
pub(crate) use group::{Group, DEAD};
pub(crate) use health::{probe, spawn_all as spawn_health_checks, Url};
pub(crate) use resolve::{system_nameservers, Resolver};
pub(crate) use tls::TlsClient;
pub(crate) use upstream::Upstream;

/// A byte stream toward a destination, whatever carries it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(crate) type BoxIo = Box<dyn Io>;

/// How long a proxy handshake may take once the TCP connection stands.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A named rule target.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Upstream(Arc<Upstream>),
    Group(Arc<Group>),
}

/// Where a route ends.
#[derive(Debug, Clone)]
pub(crate) enum Exit {
    Direct,
    /// TCP: reset; UDP: drop.
    Reject,
    /// Say nothing (TCP: hold the connection unanswered for a while).
    RejectDrop,
    /// Upstreams to go through, first hop first (one element for a plain proxy).
    Chain(Vec<Arc<Upstream>>),
}

/// The concrete path of one flow from the rules' [`Verdict`] through groups to its
/// [`Exit`], with the group members chosen on the way (so a failure can be reported to the
/// groups that made it).
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// For logs and the registry: `DIRECT`, `REJECT`, `auto/dante`, `chain(ms>dante)`.
    pub(crate) label: String,
    pub(crate) exit: Exit,
    path: Vec<(Arc<Group>, Member)>,
    /// The rule target it was made for (`None` for a health check's member pick).
    target: Option<TargetId>,
}

impl Route {
    fn fixed(label: &str, exit: Exit) -> Self {
        Self {
            label: label.to_owned(),
            exit,
            path: Vec::new(),
            target: None,
        }
    }

    pub(crate) fn target(&self) -> Option<TargetId> {
        self.target
    }
}

/// Shared by every outbound: the routing mark and the resolver for upstream names.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) mark: u32,
    pub(crate) resolver: Resolver,
}

/// Every proxy and group of the config, by [`TargetId`], and the proxies of proxy
/// providers, which take the ids after those (see [`provided`]).
#[derive(Debug)]
pub(crate) struct Outbounds {
    nodes: Vec<Node>,
    pub(crate) ctx: Arc<Ctx>,
    state: state::StateFile,
    /// The built-in `GLOBAL` selector (the last node), when the config defines no group of
    /// that name: what `mode: global` uses and what dashboards order groups by.
    global: Option<TargetId>,
    /// Delay measurements by name, for the API's `history` and `alive`.
    pub(crate) history: history::Histories,
    /// Failed connects by route label, for the metrics.
    failures: std::sync::Mutex<std::collections::HashMap<(String, &'static str), u64>>,
    /// The config, for expanding groups again when a provider's list changes.
    config: Config,
    provided: RwLock<provided::Table>,
    /// `subscription-userinfo` of each http proxy provider's last download, by name.
    subscriptions: std::sync::Mutex<std::collections::HashMap<String, SubscriptionInfo>>,
    /// When each proxy provider's list was last set (loaded or downloaded), by index.
    provided_at: std::sync::Mutex<std::collections::HashMap<usize, std::time::SystemTime>>,
    /// Woken when a provider's list is set, so its health check sees new proxies at once.
    provided_changed: tokio::sync::Notify,
}

/// The name of the selector `mode: global` uses.
pub(crate) const GLOBAL: &str = "GLOBAL";

impl Outbounds {
    pub(crate) fn new(config: &Config) -> io::Result<Arc<Self>> {
        let ctx = Arc::new(Ctx {
            mark: config.routing_mark,
            resolver: Resolver::from_system(config.routing_mark, config.ipv6),
        });
        let state = state::StateFile::load(PathBuf::from(&config.state_file));
        let mut nodes = Vec::with_capacity(config.proxies.len() + config.groups.len());
        for p in &config.proxies {
            nodes.push(Node::Upstream(Arc::new(Upstream::new(p)?)));
        }
        for g in &config.groups {
            let group = Group::new(g.clone());
            if let Some(name) = state.selected(&g.name) {
                let static_name = |id| config.target_name(id).map(str::to_owned);
                if g.uses.is_empty() && !group.select_by_name(&name, static_name) {
                    warn!(group = %g.name, member = name, "saved selection no longer exists; using the first member");
                }
            }
            nodes.push(Node::Group(Arc::new(group)));
        }
        let global = match config.global_target {
            Some(_) => None,
            None => {
                let id = u32::try_from(nodes.len()).ok().map(TargetId);
                let group = global_group(config, nodes.len());
                if let Some(name) = state.selected(GLOBAL) {
                    group.select_by_name(&name, |id| config.target_name(id).map(str::to_owned));
                }
                nodes.push(Node::Group(Arc::new(group)));
                id
            }
        };
        let base = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
        let o = Arc::new(Self {
            nodes,
            ctx,
            state,
            global,
            history: history::Histories::default(),
            failures: std::sync::Mutex::default(),
            config: config.clone(),
            provided: RwLock::new(provided::Table::new(base, config.proxy_providers.len())),
            subscriptions: std::sync::Mutex::default(),
            provided_at: std::sync::Mutex::default(),
            provided_changed: tokio::sync::Notify::new(),
        });
        {
            let mut t = o
                .provided
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (k, p) in config.proxy_providers.iter().enumerate() {
                t.set(k, &p.proxies)?;
            }
        }
        o.regroup();
        // Saved selections of groups filled by providers (their members exist now).
        for g in o.groups() {
            if let Some(name) = o.state.selected(&g.def.name) {
                g.select_by_name(&name, |id| o.node(id).map(|n| n.name().to_owned()));
            }
        }
        Ok(o)
    }

    /// The built-in `GLOBAL` selector, when the config defines none (see
    /// `RuleEngine::with_global`).
    pub(crate) fn builtin_global(&self) -> Option<TargetId> {
        self.global
    }

    /// Resolves every upstream's server name in the background, so the first flow does not
    /// wait for DNS and a name that does not resolve is reported at start.
    pub(crate) fn warm_up(self: &Arc<Self>) {
        for n in &self.nodes {
            if let Node::Upstream(u) = n.clone() {
                if u.is_direct() {
                    continue;
                }
                let ctx = self.ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = u.server.resolve(&ctx.resolver).await {
                        warn!(
                            "proxy {}: cannot resolve {}: {e} (will retry on use)",
                            u.name, u.server.host
                        );
                    }
                });
            }
        }
    }

    pub(crate) fn node(&self, id: TargetId) -> Option<Node> {
        match self.nodes.get(id.0 as usize) {
            Some(n) => Some(n.clone()),
            None => self.table().get(id).map(Node::Upstream),
        }
    }

    /// Every node: the config's, then the providers' proxies.
    pub(crate) fn nodes(&self) -> Vec<Node> {
        let mut out = self.nodes.clone();
        out.extend(self.table().all().map(Node::Upstream));
        out
    }

    pub(crate) fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.nodes.iter().filter_map(|n| match n {
            Node::Group(g) => Some(g),
            Node::Upstream(_) => None,
        })
    }

    pub(crate) fn find(&self, name: &str) -> Option<Node> {
        self.id_of(name).and_then(|id| self.node(id))
    }

    pub(crate) fn id_of(&self, name: &str) -> Option<TargetId> {
        match self.nodes.iter().position(|n| n.name() == name) {
            Some(i) => u32::try_from(i).ok().map(TargetId),
            None => self.table().id_of(name),
        }
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, provided::Table> {
        self.provided
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Provider `k` now has `proxies`: their outbounds are built (an unchanged proxy keeps
    /// its outbound and id), and every group using `k` is expanded again. Connections
    /// already established keep the outbound they hold.
    pub(crate) fn set_provided(&self, k: usize, proxies: &[ProxyDef]) -> io::Result<()> {
        // A provider's `dialer-proxy` names a proxy or group known by then, or a proxy of the
        // same list: that one has an id only once the list is in, so it is looked up again
        // after (rejecting meanwhile, never going around). A loop back through the proxy
        // itself rejects too (the depth bound).
        let (first, pending) = self.with_dialers(proxies, true);
        self.set_provided_now(k, &first)?;
        if pending {
            let (again, _) = self.with_dialers(proxies, false);
            self.set_provided_now(k, &again)?;
        }
        Ok(())
    }

    /// `proxies` with each `dialer-proxy` name looked up; also whether one names a proxy of
    /// the list itself that is not known yet (left rejecting when `defer`).
    fn with_dialers(&self, proxies: &[ProxyDef], defer: bool) -> (Vec<ProxyDef>, bool) {
        let mut pending = false;
        let list = proxies
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if let (None, Some(name)) = (p.dialer, &p.dialer_name) {
                    p.dialer = match (self.id_of(name), name.as_str()) {
                        (Some(id), _) => Some(Member::Target(id)),
                        (None, "DIRECT") => None,
                        (None, _) if defer && proxies.iter().any(|q| &q.name == name) => {
                            pending = true;
                            Some(Member::Reject)
                        }
                        (None, _) => {
                            tracing::warn!(
                                proxy = %p.name,
                                "dialer-proxy `{name}` is no proxy or group: the proxy rejects its traffic"
                            );
                            Some(Member::Reject)
                        }
                    };
                }
                p
            })
            .collect();
        (list, pending)
    }

    fn set_provided_now(&self, k: usize, proxies: &[ProxyDef]) -> io::Result<()> {
        {
            let mut t = self
                .provided
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            t.set(k, proxies)?;
        }
        self.regroup();
        if let Ok(mut at) = self.provided_at.lock() {
            at.insert(k, std::time::SystemTime::now());
        }
        self.provided_changed.notify_waiters();
        Ok(())
    }

    /// Provider `k`'s proxies now: name and id, in order.
    pub(crate) fn provided_ids(&self, k: usize) -> Vec<(String, TargetId)> {
        let t = self.table();
        let names = t.defs().get(k).cloned().unwrap_or_default();
        names
            .into_iter()
            .enumerate()
            .filter_map(|(i, d)| Some((d.name, t.id(k, i)?)))
            .collect()
    }

    /// The names of provider `k`'s proxies now, in order.
    pub(crate) fn provided_names(&self, k: usize) -> Vec<String> {
        self.table()
            .defs()
            .get(k)
            .map(|l| l.iter().map(|d| d.name.clone()).collect())
            .unwrap_or_default()
    }

    /// When provider `k`'s list was last set.
    pub(crate) fn provided_at(&self, k: usize) -> Option<std::time::SystemTime> {
        self.provided_at.lock().ok()?.get(&k).copied()
    }

    /// How many proxies provider `k` has now.
    pub(crate) fn provided_count(&self, k: usize) -> usize {
        self.table().defs().get(k).map_or(0, Vec::len)
    }

    /// The `subscription-userinfo` of provider `name`'s last download.
    pub(crate) fn set_subscription_info(&self, name: &str, info: SubscriptionInfo) {
        if let Ok(mut m) = self.subscriptions.lock() {
            m.insert(name.to_owned(), info);
        }
    }

    /// What the controller shows of a subscription (traffic used and left, expiry).
    pub(crate) fn subscription_info(&self, name: &str) -> Option<SubscriptionInfo> {
        self.subscriptions.lock().ok()?.get(name).copied()
    }

    /// Expands every group that has providers or `include-all-proxies` members again.
    fn regroup(&self) {
        let t = self.table();
        let lists = t.defs();
        let provided: Vec<&[ProxyDef]> = lists.iter().map(Vec::as_slice).collect();
        for g in self.groups() {
            if g.def.uses.is_empty() && !g.def.members.is_empty() {
                continue;
            }
            let slots = self.config.expand_group(&g.def, &provided);
            let members = slots
                .into_iter()
                .map(|s| match s {
                    Slot::Member(m) => m,
                    Slot::Provided { provider, index } => {
                        t.id(provider, index).map_or(Member::Reject, Member::Target)
                    }
                })
                .collect();
            g.set_members(members);
        }
    }

    /// The route of a flow to `dst` the rules sent to `verdict`.
    pub(crate) fn route(&self, verdict: Verdict, dst: &Destination) -> Route {
        match verdict {
            Verdict::Direct => Route::fixed("DIRECT", Exit::Direct),
            Verdict::Reject => Route::fixed("REJECT", Exit::Reject),
            Verdict::RejectDrop => Route::fixed("REJECT-DROP", Exit::RejectDrop),
            Verdict::Proxy(id) => self.pick(id, dst),
        }
    }

    /// Chooses the way out for a flow to `dst` through target `id`.
    pub(crate) fn pick(&self, id: TargetId, dst: &Destination) -> Route {
        let mut p = self.pick_member(Member::Target(id), dst);
        p.target = Some(id);
        p
    }

    /// Like [`Self::pick`], from a group member (health checks go through each member).
    pub(crate) fn pick_member(&self, m: Member, dst: &Destination) -> Route {
        let mut pick = Route {
            label: String::new(),
            exit: Exit::Reject,
            path: Vec::new(),
            target: None,
        };
        pick.exit = self.resolve(m, dst, &mut pick, 0);
        pick
    }

    fn resolve(&self, m: Member, dst: &Destination, pick: &mut Route, depth: usize) -> Exit {
        if !pick.label.is_empty() && !pick.label.ends_with(['(', '>', '[']) {
            pick.label.push('/');
        }
        let id = match m {
            Member::Direct => {
                pick.label.push_str("DIRECT");
                return Exit::Direct;
            }
            Member::Reject => {
                pick.label.push_str("REJECT");
                return Exit::Reject;
            }
            Member::Target(id) => id,
        };
        // Groups cannot form cycles (the loader refuses them); the bound is defence only.
        let Some(node) = self.node(id).filter(|_| depth < 16) else {
            pick.label.push_str("REJECT");
            return Exit::Reject;
        };
        match node {
            Node::Upstream(u) => {
                pick.label.push_str(&u.name);
                if u.is_direct() {
                    return Exit::Direct;
                }
                let Some(dialer) = u.dialer else {
                    return Exit::Chain(vec![u.clone()]);
                };
                // `dialer-proxy`: the chain to the dialer's exit, then this proxy; the label
                // shows the dialer's way in brackets (`ss[pick/dante]`).
                pick.label.push('[');
                let before = self.resolve(dialer, dst, pick, depth + 1);
                pick.label.push(']');
                match before {
                    Exit::Chain(mut chain) => {
                        chain.push(u.clone());
                        Exit::Chain(chain)
                    }
                    Exit::Direct => Exit::Chain(vec![u.clone()]),
                    Exit::Reject | Exit::RejectDrop => Exit::Reject,
                }
            }
            Node::Group(g) if g.is_relay() => {
                pick.label.push_str(&g.def.name);
                pick.label.push('(');
                let mut chain = Vec::new();
                for (i, &m) in g.members().list.iter().enumerate() {
                    if i > 0 {
                        pick.label.push('>');
                    }
                    match self.resolve(m, dst, pick, depth + 1) {
                        Exit::Chain(c) => chain.extend(c),
                        Exit::Direct => {}
                        Exit::Reject | Exit::RejectDrop => return Exit::Reject,
                    }
                }
                pick.label.push(')');
                if chain.is_empty() {
                    Exit::Direct
                } else {
                    Exit::Chain(chain)
                }
            }
            Node::Group(g) => {
                g.touch();
                let now = g.members();
                let i = now.choose(&g, dst);
                pick.label.push_str(&g.def.name);
                match now.list.get(i) {
                    Some(&m) => {
                        pick.path.push((g.clone(), m));
                        self.resolve(m, dst, pick, depth + 1)
                    }
                    None => Exit::Reject,
                }
            }
        }
    }

    /// Opens a TCP stream to `dst` along `chain`: the first hop over a marked TCP connection,
    /// each later hop through the previous one.
    pub(crate) async fn connect_chain(
        &self,
        chain: &[Arc<Upstream>],
        dst: &Destination,
    ) -> io::Result<BoxIo> {
        let Some(first) = chain.first() else {
            return Err(DialError::EmptyChain.into());
        };
        let hop_dst = |i: usize| match chain.get(i + 1) {
            Some(n) => n.server.destination(),
            None => dst.clone(),
        };
        // The last QUIC proxy (hysteria2, tuic) of the chain opens a stream on its connection
        // to the next hop: a connection of its own when it is first, else one whose packets
        // go through the hops before it (their UDP association to its server). Without
        // one, the first hop speaks its protocol over a TCP connection to its server. The
        // hops after speak theirs over what came before.
        let (mut io, skip): (BoxIo, usize) =
            if let Some(q) = chain.iter().rposition(|h| h.is_quic()) {
                let hop = &chain[q];
                let before = &chain[..q];
                let via = (!before.is_empty()).then(|| self.via(before, hop));
                let stream = hop_step(hop, async {
                    hop.connect_quic(&self.ctx, via.as_ref(), &hop_dst(q))
                        .await
                        .unwrap_or_else(|| Err(DialError::EmptyChain.into()))
                })
                .await?;
                (stream, q + 1)
            } else {
                // The first hop's link: a new connection, or a stream on its shared one.
                let link = first.first_link(&self.ctx).await?;
                let stream = hop_step(first, first.handshake_on(link, &hop_dst(0))).await?;
                (stream, 1)
            };
        for (i, hop) in chain.iter().enumerate().skip(skip) {
            let next = hop_dst(i);
            io = hop_step(hop, hop.handshake(io, &next)).await?;
        }
        Ok(io)
    }

    /// The way to `hop`, a QUIC proxy, through `before`: their UDP association to its
    /// server.
    fn via<'a>(&'a self, before: &'a [Arc<Upstream>], hop: &Upstream) -> Via<'a> {
        Via {
            key: chain_key(before),
            server: hop.server.destination(),
            outbounds: self,
            before,
        }
    }

    /// A UDP association to `dst` along `chain`: one proxy's own association, or, through
    /// a relay chain, the last hop's UDP inside its stream, which reaches its server through
    /// the earlier hops (trojan, vless, vmess), or a Shadowsocks or QUIC last hop's packets
    /// sent to its server through the UDP of the earlier hops (their own association to
    /// it).
    ///
    /// Boxed, as a `Send` future, because it is also called from within its own set-up (a
    /// QUIC hop's connection through the earlier hops).
    pub(crate) fn open_udp_chain<'a>(
        &'a self,
        chain: &'a [Arc<Upstream>],
        dst: &'a Destination,
    ) -> BoxFuture<'a, io::Result<(udp::UdpSend, udp::UdpRecv)>> {
        Box::pin(self.open_udp_chain_inner(chain, dst))
    }

    async fn open_udp_chain_inner(
        &self,
        chain: &[Arc<Upstream>],
        dst: &Destination,
    ) -> io::Result<(udp::UdpSend, udp::UdpRecv)> {
        let (last, before) = match chain {
            [] => return Err(DialError::EmptyChain.into()),
            [one] => return one.open_udp(&self.ctx, dst).await,
            [before @ .., last] => (last, before),
        };
        if last.is_quic() {
            let via = self.via(before, last);
            return hop_step(last, last.open_quic_udp_via(&via)).await;
        }
        if let Some(s) = last.socks5() {
            let s = s?;
            let server = last.server.destination();
            let io = self.connect_chain(before, &server).await?;
            let (ctrl, relay) = hop_step(last, s.associate_over(io, &server)).await?;
            let inner = self.open_udp_chain(before, &relay).await?;
            return Ok(udp::socks5_over(ctrl, relay, inner));
        }
        if let Some(packets) = last.ss_packets() {
            let server = last.server.destination();
            let inner = self.open_udp_chain(before, &server).await?;
            return Ok(udp::ss_over(packets?, server, inner));
        }
        if !last.udp_in_stream() {
            return Err(DialError::UdpNotInStream {
                proxy: last.name.clone(),
            }
            .into());
        }
        let io = self
            .connect_chain(before, &last.server.destination())
            .await?;
        hop_step(last, last.open_udp_over(io, dst)).await
    }

    /// A marked TCP connection to `dst`, resolving a name with the marked resolver.
    pub(crate) async fn connect_direct(
        &self,
        dst: &Destination,
    ) -> io::Result<tokio::net::TcpStream> {
        let addr = match dst {
            Destination::Addr(a) => *a,
            Destination::Domain(host, port) => {
                std::net::SocketAddr::new(self.ctx.resolver.lookup(host).await?, *port)
            }
        };
        connect_marked(addr, self.ctx.mark).await
    }

    /// Connects to `dst` the way `exit` says (`None`: rejected).
    pub(crate) async fn connect(
        &self,
        exit: &Exit,
        dst: &Destination,
    ) -> io::Result<Option<BoxIo>> {
        match exit {
            Exit::Reject | Exit::RejectDrop => Ok(None),
            Exit::Direct => Ok(Some(Box::new(self.connect_direct(dst).await?))),
            Exit::Chain(chain) => self.connect_chain(chain, dst).await.map(Some),
        }
    }

    /// A flow through `pick` failed to connect: the groups that chose it stop choosing that
    /// member until a health check sees it alive again.
    pub(crate) fn report_failure(&self, pick: &Route, e: &io::Error) {
        self.count_failure(pick, e);
        for (g, m) in &pick.path {
            g.mark_member_dead(*m);
        }
    }

    fn count_failure(&self, pick: &Route, e: &io::Error) {
        if let Ok(mut f) = self.failures.lock() {
            *f.entry((pick.label.clone(), error::failure_reason(e)))
                .or_default() += 1;
        }
    }

    /// Failed connects so far, by route label and reason ([`error::failure_reason`]).
    pub(crate) fn failures(&self) -> std::collections::HashMap<(String, &'static str), u64> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// A flow through `pick` failed with `e`. Only a failure to reach the member counts
    /// against it: a member that cannot carry what was asked (UDP through a TCP-only proxy,
    /// `Unsupported`) is alive, and failing TCP over because of a UDP flow would move every
    /// connection off a working upstream until the next health check.
    pub(crate) fn report_error(&self, pick: &Route, e: &io::Error) {
        if e.kind() == io::ErrorKind::Unsupported {
            self.count_failure(pick, e);
        } else {
            self.report_failure(pick, e);
        }
    }

    /// The select group `name` now uses `member` (a url-test or fallback group: uses it
    /// while it lives, until [`Self::unfix`]); saved so it survives a restart.
    pub(crate) fn select(&self, group: &str, member: &str) -> Result<(), String> {
        let Some(Node::Group(g)) = self.find(group) else {
            return Err(format!("no group named {group}"));
        };
        if !g.is_selectable() {
            return Err(format!("{group} is not a select group"));
        }
        let names = |id: TargetId| self.node(id).map(|n| n.name().to_owned());
        if !g.select_by_name(member, names) {
            return Err(format!("{member} is not a member of {group}"));
        }
        self.state.set_selected(group, member);
        Ok(())
    }

    /// Clears the member fixed in url-test or fallback group `group`; false when `group`
    /// is not such a group.
    pub(crate) fn unfix(&self, group: &str) -> bool {
        match self.find(group) {
            Some(Node::Group(g)) if g.is_selectable() && !g.is_select() => {
                g.unfix();
                self.state.clear_selected(group);
                true
            }
            _ => false,
        }
    }

    /// The name of a group member, for the controller.
    pub(crate) fn member_name(&self, m: Member) -> String {
        match m {
            Member::Direct => "DIRECT".to_owned(),
            Member::Reject => "REJECT".to_owned(),
            Member::Target(id) => self
                .node(id)
                .map_or("?".to_owned(), |n| n.name().to_owned()),
        }
    }
}

/// mihomo's `GLOBAL`: a selector over DIRECT, REJECT, every proxy and every group, in config
/// order; it starts on what `mode: global` used before there was a selector (the first
/// proxy, else DIRECT).
/// `step`, `hop`'s part of a dial, within [`HANDSHAKE_TIMEOUT`]; a failure names the hop.
async fn hop_step<T>(
    hop: &Upstream,
    step: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, step)
        .await
        .map_err(|_| DialError::HandshakeTimeout {
            hop: hop.name.clone(),
        })?
        .map_err(|source| {
            DialError::Hop {
                hop: hop.name.clone(),
                source,
            }
            .into()
        })
}

/// The names of a chain's hops, as a flow's line shows them (`ss1>ss2`).
fn chain_key(hops: &[Arc<Upstream>]) -> String {
    hops.iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(">")
}

fn global_group(config: &Config, targets: usize) -> Group {
    let ids =
        (0..targets).filter_map(|i| u32::try_from(i).ok().map(|i| Member::Target(TargetId(i))));
    let members: Vec<Member> = [Member::Direct, Member::Reject]
        .into_iter()
        .chain(ids)
        .collect();
    let g = Group::new(GroupDef::new(GLOBAL, GroupKind::Select, members));
    if !config.proxies.is_empty() {
        g.select_index(2);
    }
    g
}

impl Node {
    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Upstream(u) => &u.name,
            Self::Group(g) => &g.def.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two SOCKS5 upstreams (the first without UDP) in a fallback group.
    fn outbounds() -> Arc<Outbounds> {
        let text = "state-file: /nonexistent/tpgate-test/state.json\n\
                    proxies:\n\
                    \x20 - {name: a, type: socks5, server: 192.0.2.1, port: 1080}\n\
                    \x20 - {name: b, type: socks5, server: 192.0.2.2, port: 1080, udp: true}\n\
                    proxy-groups:\n\
                    \x20 - {name: fb, type: fallback, proxies: [a, b], url: \"http://192.0.2.9/\"}\n\
                    rules: [\"MATCH,fb\"]\n";
        let config = tpgate_core::config::load(text).expect("config").config;
        Outbounds::new(&config).expect("outbounds")
    }

    #[test]
    fn provider_refresh_regroups_and_keeps_what_did_not_change() {
        // A state file that can never be written (not even as root): no selection leaks
        // from one run to the next.
        let text = "state-file: /dev/null/tpgate-state.json\n\
                    proxies:\n\
                    \x20 - {name: 直连, type: direct}\n\
                    proxy-providers:\n\
                    \x20 sub:\n\
                    \x20   type: inline\n\
                    \x20   payload:\n\
                    \x20     - {name: HK 1, type: socks5, server: 192.0.2.1, port: 1080}\n\
                    \x20     - {name: US 1, type: socks5, server: 192.0.2.2, port: 1080}\n\
                    proxy-groups:\n\
                    \x20 - {name: G, type: select, proxies: [直连], use: [sub], filter: HK}\n\
                    rules: [\"MATCH,G\"]\n";
        let config = tpgate_core::config::load(text).expect("config").config;
        let o = Outbounds::new(&config).expect("outbounds");
        let g = o.id_of("G").expect("group");
        let dst = Destination::Addr("203.0.113.2:443".parse().expect("addr"));
        assert_eq!(o.pick(g, &dst).label, "G/直连");
        assert!(
            matches!(o.pick(g, &dst).exit, Exit::Direct),
            "type: direct goes direct"
        );
        o.select("G", "HK 1").expect("select");
        let hk1 = o.id_of("HK 1").expect("provided proxy");
        assert_eq!(o.pick(g, &dst).label, "G/HK 1");
        // The subscription changes: HK 1 stays (same id, still selected), HK 2 arrives,
        // US 1 leaves.
        let mut next = config.proxy_providers[0].proxies.clone();
        next[1].name = "HK 2".into();
        o.set_provided(0, &next).expect("refresh");
        assert_eq!(o.id_of("HK 1"), Some(hk1));
        assert!(o.id_of("US 1").is_none());
        let Some(Node::Group(group)) = o.node(g) else {
            panic!("G is a group")
        };
        let names: Vec<String> = group
            .members()
            .list
            .iter()
            .map(|&m| o.member_name(m))
            .collect();
        assert_eq!(names, ["直连", "HK 1", "HK 2"]);
        assert_eq!(o.pick(g, &dst).label, "G/HK 1");
        // A subscription with nothing usable leaves the group with its written member.
        o.set_provided(0, &[]).expect("refresh");
        assert_eq!(o.pick(g, &dst).label, "G/直连");
    }

    #[test]
    fn an_unsupported_request_does_not_fail_the_member_over() {
        let o = outbounds();
        let id = o.id_of("fb").expect("group fb");
        let dst = Destination::Addr("203.0.113.2:7000".parse().expect("addr"));
        let pick = o.pick(id, &dst);
        assert_eq!(pick.label, "fb/a");
        let no_udp = io::Error::from(DialError::UdpDisabled { proxy: "a".into() });
        o.report_error(&pick, &no_udp);
        assert_eq!(o.pick(id, &dst).label, "fb/a", "a lacks UDP but is alive");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        o.report_error(&pick, &refused);
        assert_eq!(o.pick(id, &dst).label, "fb/b", "a refused: fail over");
    }

    #[test]
    fn a_dialer_proxy_goes_first_in_the_chain() {
        let text = "state-file: /dev/null/tpgate-state.json\n\
                    proxies:\n\
                    \x20 - {name: a, type: socks5, server: 192.0.2.1, port: 1080}\n\
                    \x20 - {name: b, type: socks5, server: 192.0.2.2, port: 1080, dialer-proxy: G}\n\
                    \x20 - {name: c, type: socks5, server: 192.0.2.3, port: 1080, dialer-proxy: b}\n\
                    \x20 - {name: r, type: socks5, server: 192.0.2.4, port: 1080, dialer-proxy: REJECT}\n\
                    proxy-groups:\n\
                    \x20 - {name: G, type: select, proxies: [a, DIRECT]}\n";
        let config = tpgate_core::config::load(text).expect("config").config;
        let o = Outbounds::new(&config).expect("outbounds");
        let dst = Destination::Addr("203.0.113.2:443".parse().expect("addr"));
        let names = |exit: &Exit| match exit {
            Exit::Chain(c) => c.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let c = o.pick(o.id_of("c").expect("c"), &dst);
        assert_eq!(c.label, "c[b[G/a]]");
        assert_eq!(names(&c.exit), ["a", "b", "c"]);
        // The dialer group chooses DIRECT: b is dialed directly.
        o.select("G", "DIRECT").expect("select");
        let b = o.pick(o.id_of("b").expect("b"), &dst);
        assert_eq!(b.label, "b[G/DIRECT]");
        assert_eq!(names(&b.exit), ["b"]);
        // A rejecting dialer rejects: never around it.
        let r = o.pick(o.id_of("r").expect("r"), &dst);
        assert_eq!(r.label, "r[REJECT]");
        assert!(matches!(r.exit, Exit::Reject));
    }

    #[test]
    fn provider_proxies_take_their_dialer_when_the_list_is_set() {
        let text = "state-file: /dev/null/tpgate-state.json\n\
                    proxies:\n\
                    \x20 - {name: a, type: socks5, server: 192.0.2.1, port: 1080}\n\
                    proxy-providers:\n\
                    \x20 sub:\n\
                    \x20   type: inline\n\
                    \x20   override: {dialer-proxy: a}\n\
                    \x20   payload:\n\
                    \x20     - {name: HK 1, type: socks5, server: 192.0.2.2, port: 1080}\n\
                    \x20 own:\n\
                    \x20   type: inline\n\
                    \x20   payload:\n\
                    \x20     - {name: JP 0, type: socks5, server: 192.0.2.5, port: 1080, dialer-proxy: JP 1}\n\
                    \x20     - {name: JP 1, type: socks5, server: 192.0.2.3, port: 1080, dialer-proxy: HK 1}\n\
                    \x20     - {name: JP 2, type: socks5, server: 192.0.2.4, port: 1080, dialer-proxy: nowhere}\n\
                    proxy-groups:\n\
                    \x20 - {name: G, type: select, use: [sub, own]}\n";
        let config = tpgate_core::config::load(text).expect("config").config;
        let o = Outbounds::new(&config).expect("outbounds");
        for (k, p) in config.proxy_providers.iter().enumerate() {
            o.set_provided(k, &p.proxies).expect("set");
        }
        let dst = Destination::Addr("203.0.113.2:443".parse().expect("addr"));
        let chain = |name: &str| {
            let p = o.pick(o.id_of(name).expect("proxy"), &dst);
            let hops = match &p.exit {
                Exit::Chain(c) => c.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
                Exit::Reject | Exit::RejectDrop => vec!["REJECT".to_owned()],
                Exit::Direct => vec!["DIRECT".to_owned()],
            };
            (p.label, hops)
        };
        assert_eq!(
            chain("HK 1"),
            (
                "HK 1[a]".to_owned(),
                vec!["a".to_owned(), "HK 1".to_owned()]
            )
        );
        assert_eq!(
            chain("JP 1"),
            (
                "JP 1[HK 1[a]]".to_owned(),
                vec!["a".to_owned(), "HK 1".to_owned(), "JP 1".to_owned()]
            )
        );
        assert_eq!(
            chain("JP 2"),
            ("JP 2[REJECT]".to_owned(), vec!["REJECT".to_owned()])
        );
        // A dialer of the same list, listed after: found once the list is in.
        assert_eq!(
            chain("JP 0"),
            (
                "JP 0[JP 1[HK 1[a]]]".to_owned(),
                ["a", "HK 1", "JP 1", "JP 0"].map(String::from).to_vec()
            )
        );
    }
}
