//! Outbounds: where a flow goes after the rules picked a target. Upstream proxies (SOCKS5,
//! HTTP CONNECT, Shadowsocks, Trojan), groups that choose among them (select, url-test,
//! fallback, load-balance, relay), and the marked dialing and resolving they share.
//! Protocol bytes come from the sans-IO codecs in `tpgate_core::proto`; this module only
//! moves them over sockets.

mod dial;
mod framing;
mod group;
mod health;
mod http;
mod resolve;
mod socks5;
mod ss;
mod state;
mod tls;
mod trojan;
pub(crate) mod udp;
mod upstream;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tpgate_core::config::{Config, Member, TargetId};
use tpgate_core::flow::Verdict;
use tpgate_core::net::Destination;
use tracing::warn;

pub(crate) use dial::connect_marked;
pub(crate) use group::Group;
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
    path: Vec<(Arc<Group>, usize)>,
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

/// Every proxy and group of the config, by [`TargetId`].
#[derive(Debug)]
pub(crate) struct Outbounds {
    nodes: Vec<Node>,
    pub(crate) ctx: Arc<Ctx>,
    state: state::StateFile,
}

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
                if !group.select_by_name(&name, |id| config.target_name(id)) {
                    warn!(group = %g.name, member = name, "saved selection no longer exists; using the first member");
                }
            }
            nodes.push(Node::Group(Arc::new(group)));
        }
        Ok(Arc::new(Self { nodes, ctx, state }))
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

    pub(crate) fn node(&self, id: TargetId) -> Option<&Node> {
        self.nodes.get(id.0 as usize)
    }

    pub(crate) fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub(crate) fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.nodes.iter().filter_map(|n| match n {
            Node::Group(g) => Some(g),
            Node::Upstream(_) => None,
        })
    }

    pub(crate) fn find(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    pub(crate) fn id_of(&self, name: &str) -> Option<TargetId> {
        let i = self.nodes.iter().position(|n| n.name() == name)?;
        u32::try_from(i).ok().map(TargetId)
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
        if !pick.label.is_empty() && !pick.label.ends_with('(') && !pick.label.ends_with('>') {
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
                    Exit::Direct
                } else {
                    Exit::Chain(vec![u.clone()])
                }
            }
            Node::Group(g) if g.is_relay() => {
                pick.label.push_str(&g.def.name);
                pick.label.push('(');
                let mut chain = Vec::new();
                for (i, &m) in g.def.members.iter().enumerate() {
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
                let i = g.choose(dst);
                pick.label.push_str(&g.def.name);
                pick.path.push((g.clone(), i));
                match g.def.members.get(i) {
                    Some(&m) => self.resolve(m, dst, pick, depth + 1),
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
            return Err(io::Error::other("empty chain"));
        };
        let tcp = first
            .server
            .connect(&self.ctx.resolver, self.ctx.mark)
            .await?;
        let mut io: BoxIo = Box::new(tcp);
        for (i, hop) in chain.iter().enumerate() {
            let next = match chain.get(i + 1) {
                Some(n) => n.server.destination(),
                None => dst.clone(),
            };
            io = tokio::time::timeout(HANDSHAKE_TIMEOUT, hop.handshake(io, &next))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{}: handshake timed out", hop.name),
                    )
                })?
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", hop.name)))?;
        }
        Ok(io)
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
    pub(crate) fn report_failure(&self, pick: &Route) {
        for (g, i) in &pick.path {
            g.mark_dead(*i);
        }
    }

    /// A flow through `pick` failed with `e`. Only a failure to reach the member counts
    /// against it: a member that cannot carry what was asked (UDP through a TCP-only proxy,
    /// `Unsupported`) is alive, and failing TCP over because of a UDP flow would move every
    /// connection off a working upstream until the next health check.
    pub(crate) fn report_error(&self, pick: &Route, e: &io::Error) {
        if e.kind() != io::ErrorKind::Unsupported {
            self.report_failure(pick);
        }
    }

    /// The select group `name` now uses `member`; saved so it survives a restart.
    pub(crate) fn select(&self, group: &str, member: &str) -> Result<(), String> {
        let Some(Node::Group(g)) = self.find(group) else {
            return Err(format!("no group named {group}"));
        };
        if !g.is_select() {
            return Err(format!("{group} is not a select group"));
        }
        let names = |id: TargetId| self.node(id).map(Node::name);
        if !g.select_by_name(member, names) {
            return Err(format!("{member} is not a member of {group}"));
        }
        self.state.set_selected(group, member);
        Ok(())
    }

    /// The name of a group member, for the controller.
    pub(crate) fn member_name(&self, m: Member) -> &str {
        match m {
            Member::Direct => "DIRECT",
            Member::Reject => "REJECT",
            Member::Target(id) => self.node(id).map_or("?", Node::name),
        }
    }
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
    fn an_unsupported_request_does_not_fail_the_member_over() {
        let o = outbounds();
        let id = o.id_of("fb").expect("group fb");
        let dst = Destination::Addr("203.0.113.2:7000".parse().expect("addr"));
        let pick = o.pick(id, &dst);
        assert_eq!(pick.label, "fb/a");
        let no_udp = io::Error::new(io::ErrorKind::Unsupported, "a: udp is not enabled");
        o.report_error(&pick, &no_udp);
        assert_eq!(o.pick(id, &dst).label, "fb/a", "a lacks UDP but is alive");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        o.report_error(&pick, &refused);
        assert_eq!(o.pick(id, &dst).label, "fb/b", "a refused: fail over");
    }
}
