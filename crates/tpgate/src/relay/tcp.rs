//! TCP: accept TPROXY'd connections (the original destination is the accepted socket's
//! local address), decide, and relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tpgate_core::net::{Destination, Network};
use tracing::{debug, info, warn};

use tokio::io::AsyncWriteExt as _;

use tpgate_core::flow::{Decided, DirectTo, Need, Refusal, Step};

use super::registry::{Entry, FlowInfo};
use super::sniff;
use super::{copy, log_decided, Broken, RelayPath, Shared, SharedCell};
use crate::outbound::{connect_marked, BoxIo, Exit, Route};

const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long REJECT-DROP holds a connection without answering.
const DROP_HOLD: Duration = Duration::from_secs(30);

/// Accepts until `shutdown` resolves. Accept errors (EMFILE, ...) are logged and retried
/// after a pause; they never end the server. A connection over the `limits` is reset as
/// soon as it is accepted; the others hold their slot until they end.
pub(crate) async fn serve(listener: TcpListener, cell: Arc<SharedCell>, shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = cell.load();
                // Over a cap: a RST at once, before any work (a flood must cost little).
                let own = shared.io.is_local(peer.ip());
                let Some(slot) = shared.limits.admit_from(Network::Tcp, peer.ip(), own) else {
                    reset(&stream);
                    continue;
                };
                tokio::spawn(async move {
                    let _slot = slot;
                    handle(stream, peer, shared).await;
                });
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted TPROXY connection: its original destination is its local address.
async fn handle(client: TcpStream, src: SocketAddr, shared: Arc<Shared>) {
    let _live = super::gauge::LIVE.enter();
    let dst = match client.local_addr() {
        Ok(a) => canonical(a),
        Err(e) => {
            debug!(error = %e, "accepted socket vanished");
            return;
        }
    };
    flow(client, canonical(src), dst, &shared).await;
}

/// One TCP flow from `src` to the original destination `dst`: decide, route, relay.
pub(super) async fn flow(client: TcpStream, src: SocketAddr, dst: SocketAddr, shared: &Shared) {
    let Some((mut decided, mut first)) = decide(&client, src, dst, shared).await else {
        return;
    };
    let route = shared.route(&decided);
    // The name cannot change the verdict: connect at once, and read the client's first
    // bytes only meanwhile, for the log, so a server that speaks first waits for nothing.
    let early = if decided.sniff_while_connecting && matches!(route.exit, Exit::Direct) {
        let sniffer = &shared.settings.sniffer;
        let connect = direct(&decided, shared);
        let (sniffed, server) = sniff::tcp_while(&client, dst.port(), sniffer, connect).await;
        match sniffed {
            Ok(s) => {
                decided.note_sniffed(s.host, &shared.settings);
                first = s.first;
            }
            Err(e) => {
                debug!("tcp {src} -> {dst} closed while sniffing: {e}");
                return;
            }
        }
        Some(server)
    } else {
        None
    };
    log_decided(&decided, &route.label);
    match route.exit {
        Exit::Reject => reset(&client),
        Exit::RejectDrop => hold(&client).await,
        Exit::Direct if route.target().is_none() => {
            let server = match early {
                Some(connected) => connected,
                None => direct(&decided, shared).await,
            };
            match server {
                Ok(server) => {
                    let reg = shared
                        .registry
                        .register(FlowInfo::new(&decided, &route.label));
                    relay_direct(client, server, &decided, first, &reg).await;
                }
                Err(e) => {
                    info!("tcp {src} -> {dst} connect failed: {e}");
                    reset(&client);
                }
            }
        }
        // Through a proxy or group (which may have chosen DIRECT).
        _ => proxied(client, &decided, first, route, shared).await,
    }
}

/// Drives the flow's decider: answers its questions (the owning process, the client's
/// first bytes, the real address of a fake-ip name) until it decides. `None`: refused, or
/// the client went away; the connection is dealt with here.
async fn decide(
    client: &TcpStream,
    src: SocketAddr,
    dst: SocketAddr,
    shared: &Shared,
) -> Option<(Decided, Vec<u8>)> {
    let mut decider = Shared::decider(Network::Tcp, src, dst);
    let mut first = Vec::new();
    loop {
        match decider.poll(&shared.engine, &*shared.io, &shared.settings) {
            Step::Need(Need::Process) => {
                decider.on_process(shared.io.process(Network::Tcp, src, dst).await);
            }
            Step::Need(Need::FirstBytes { .. }) => {
                match sniff::tcp(client, dst.port(), &shared.settings.sniffer).await {
                    Ok(s) => {
                        first = s.first;
                        decider.on_sniffed(s.host, &shared.settings);
                    }
                    Err(e) => {
                        debug!("tcp {src} -> {dst} closed while sniffing: {e}");
                        return None;
                    }
                }
            }
            Step::Need(Need::RealAddr { name }) => {
                decider.on_real_addr(resolve_for_rules(shared, &name).await);
            }
            Step::Refused(r) => {
                match r {
                    Refusal::OwnListener => warn!("tcp {src} -> {dst} refused: {}", r.reason()),
                    Refusal::UnknownFakeIp => info!("tcp {src} -> {dst} rejected: {}", r.reason()),
                }
                reset(client);
                return None;
            }
            Step::Decided(d) => return Some((d, first)),
        }
    }
}

/// The real address of fake-ip name `name` for the address rules (`None`: the rules see
/// the fake one).
pub(super) async fn resolve_for_rules(shared: &Shared, name: &str) -> Option<std::net::IpAddr> {
    match shared.io.resolve(name).await {
        Ok(ip) => {
            debug!("{name}: resolved to {ip} for the address rules");
            Some(ip)
        }
        Err(e) => {
            debug!("{name}: not resolved for the address rules ({e})");
            None
        }
    }
}

/// DIRECT (a DIRECT rule, or a group that chose DIRECT): to the original address, to the
/// sniffed name with `override-destination`, or (a fake address) to the name resolved
/// for real.
async fn direct(d: &Decided, shared: &Shared) -> std::io::Result<TcpStream> {
    let mark = shared.routing_mark.0;
    match d.direct_to() {
        DirectTo::Addr(a) => connect_marked(a, mark).await,
        DirectTo::FakeName(name, port) => {
            let real = shared.io.resolve(&name).await?;
            connect_marked(SocketAddr::new(real, port), mark).await
        }
        DirectTo::Name(name, port) => {
            let dest = Destination::Domain(name, port);
            shared.outbounds.connect_direct(&dest).await
        }
    }
}

/// The server side of a routed flow.
enum Server {
    /// A plain socket (DIRECT): relayed with splice.
    Plain(TcpStream),
    /// Through upstreams: relayed by copying.
    Proxied(BoxIo),
}

/// Through the route a proxy or group verdict chose. A failed dial is reported to the groups
/// that chose it and the choice is made again (fallback and url-test then move on), a
/// bounded number of times.
async fn proxied(
    client: TcpStream,
    d: &Decided,
    first: Vec<u8>,
    mut route: Route,
    shared: &Shared,
) {
    let (src, dst) = (d.client.0, d.dst.0);
    let o = &shared.outbounds;
    let target = d.destination();
    for attempt in 0..3 {
        let connected = match &route.exit {
            Exit::Reject => return reset(&client),
            Exit::RejectDrop => return hold(&client).await,
            Exit::Direct => direct(d, shared).await.map(Server::Plain),
            Exit::Chain(chain) => o.connect_chain(chain, &target).await.map(Server::Proxied),
        };
        match connected {
            Ok(server) => {
                let reg = shared.registry.register(FlowInfo::new(d, &route.label));
                return match server {
                    Server::Plain(s) => relay_direct(client, s, d, first, &reg).await,
                    Server::Proxied(mut s) => {
                        if first.is_empty() && !send_request_if_silent(&client, &mut s, d).await {
                            return;
                        }
                        let via = Via::of(&route);
                        relay(client, s, d, first, &reg, via.as_ref()).await
                    }
                };
            }
            Err(e) => {
                o.report_failure(&route, &e);
                let again = match route.target() {
                    Some(id) if attempt < 2 => o.pick(id, &target),
                    _ => route.clone(),
                };
                if again.label == route.label {
                    info!("tcp {src} -> {dst} via {} failed: {e}", route.label);
                    return reset(&client);
                }
                info!(
                    "tcp {src} -> {dst} via {} failed ({e}); retrying via {}",
                    route.label, again.label
                );
                route = again;
            }
        }
    }
    reset(&client);
}

/// The upstream a proxied flow's server side is connected to, named in the line that says
/// it broke.
struct Via<'r> {
    /// The route, as the flow's first line showed it (`safe/one`, `chain(ms>dante)`).
    label: &'r str,
    /// The first hop, whose connection tpgate holds: a later hop's failure reaches tpgate
    /// through it.
    hop: &'r crate::outbound::Upstream,
}

impl<'r> Via<'r> {
    fn of(route: &'r Route) -> Option<Self> {
        match &route.exit {
            Exit::Chain(chain) => chain.first().map(|hop| Self {
                label: &route.label,
                hop,
            }),
            _ => None,
        }
    }
}

/// Sends `first` (what sniffing read from the client) on, then relays both ways until the
/// connection ends or its registry entry is closed. The client socket has `TCP_NODELAY`
/// from the listener; outbound sockets set it when connected. `via`: the upstream, for a
/// proxied flow.
async fn relay<S>(
    mut client: TcpStream,
    mut server: S,
    d: &Decided,
    first: Vec<u8>,
    reg: &Entry,
    via: Option<&Via<'_>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if send_first(&mut server, first, d, reg).await {
        RelayPath::Copy.taken();
        let outcome = {
            let copy = copy::relay(&mut client, server, IDLE_TIMEOUT, &reg.counters);
            tokio::select! {
                r = copy => Some(r),
                () = reg.closed() => None,
            }
        };
        match outcome {
            Some(r) => ended(r, &client, d, reg, via, RelayPath::Copy),
            None => closed(&client, d),
        }
    }
}

/// DIRECT between two plain sockets: joined in the kernel with the sockmap where it can be
/// loaded (`TPGATE_SOCKMAP=1`), else zero-copy with splice(2) (`TPGATE_SPLICE=0` turns that
/// off too, to compare with the copying relay).
async fn relay_direct(
    client: TcpStream,
    mut server: TcpStream,
    d: &Decided,
    first: Vec<u8>,
    reg: &Entry,
) {
    if !splice_enabled() {
        return relay(client, server, d, first, reg, None).await;
    }
    if !send_first(&mut server, first, d, reg).await {
        return;
    }
    if let Some(map) = sockmap_enabled().then(super::sockmap::get).flatten() {
        let joined = super::sockmap::relay(map, &client, &server, IDLE_TIMEOUT, &reg.counters);
        let r = tokio::select! {
            r = joined => r,
            () = reg.closed() => return closed(&client, d),
        };
        match r {
            Err(None) => {}
            Ok(moved) => return ended(Ok(moved), &client, d, reg, None, RelayPath::Sockmap),
            Err(Some(e)) => return ended(Err(e), &client, d, reg, None, RelayPath::Sockmap),
        }
    }
    RelayPath::Splice.taken();
    let splice = super::splice::relay(&client, &server, IDLE_TIMEOUT, &reg.counters);
    tokio::select! {
        r = splice => ended(r, &client, d, reg, None, RelayPath::Splice),
        () = reg.closed() => closed(&client, d),
    }
}

/// How long a proxied flow waits for the client to speak before the upstream's request
/// goes out alone. Protocols that send their request with the first data (Shadowsocks)
/// would otherwise leave a server-first service (SMTP, SSH, FTP) waiting for its client,
/// and the client for its greeting, forever; waiting briefly first keeps the request and
/// the client's first bytes in one packet when the client does speak first.
const CLIENT_SILENT: Duration = Duration::from_millis(100);

/// The client sent nothing yet: when it stays silent for [`CLIENT_SILENT`], an empty write
/// sends the upstream's request (a no-op for protocols that sent it while connecting).
/// False when the connection ended.
async fn send_request_if_silent(client: &TcpStream, server: &mut BoxIo, d: &Decided) -> bool {
    if client_speaks_within(client, CLIENT_SILENT).await {
        return true;
    }
    let sent = async {
        // An empty write: `write_all` would skip it. Its amount is 0 by definition.
        let _empty = server.write(&[]).await?;
        server.flush().await
    };
    match tokio::time::timeout(Duration::from_secs(10), sent).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            info!("tcp {} -> {} request failed: {e}", d.client.0, d.dst.0);
            false
        }
        Err(_) => {
            info!("tcp {} -> {} request timed out", d.client.0, d.dst.0);
            false
        }
    }
}

/// Whether the client has bytes (or its end of file) for us within `wait`. Readiness alone
/// can be stale, so a peek confirms it.
async fn client_speaks_within(client: &TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, client.readable()).await {
            Err(_) => return false,
            Ok(Err(_)) => return true,
            Ok(Ok(())) => {
                let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                let peeked =
                    client.try_io(Interest::READABLE, || SockRef::from(client).peek(&mut b));
                match peeked {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => return true,
                }
            }
        }
    }
}

/// Closed from the registry (the controller): the client gets a RST.
fn closed(client: &TcpStream, d: &Decided) {
    info!("tcp {} -> {} closed by request", d.client.0, d.dst.0);
    reset(client);
}

/// Writes the sniffed bytes to the server and counts them; consumes them, so they are not
/// held for the connection's life. False when the connection ended.
async fn send_first<S>(server: &mut S, first: Vec<u8>, d: &Decided, reg: &Entry) -> bool
where
    S: tokio::io::AsyncWrite + Unpin,
{
    if first.is_empty() {
        return true;
    }
    match server.write_all(&first).await {
        Ok(()) => {
            reg.add_up(first.len());
            true
        }
        Err(e) => {
            debug!("tcp {} -> {} ended: {e}", d.client.0, d.dst.0);
            false
        }
    }
}

/// The end of a relayed flow. The server side failing is passed on to the client as a RST
/// (a FIN would pass a cut-off transfer for a complete one); through an upstream it is a
/// fault worth one info line, naming the route, the hop and why (a DIRECT server resetting,
/// or a client going away, is everyday traffic: debug).
fn ended(
    r: Result<(u64, u64), Broken>,
    client: &TcpStream,
    d: &Decided,
    reg: &Entry,
    via: Option<&Via<'_>>,
    path: RelayPath,
) {
    let path = path.name();
    let (src, dst) = (d.client.0, d.dst.0);
    // The registry's counters: they also hold what another relay moved before this one
    // (the sockmap hands a flow it cannot join to splice).
    let Err(e) = r else {
        let (up, down) = reg.counters.get();
        return debug!("tcp {src} -> {dst} closed up={up} down={down} relay={path}");
    };
    let (up, down) = reg.counters.get();
    match (&e, via) {
        (Broken::Server(e), Some(via)) => {
            reset(client);
            let (hop, server) = (&via.hop.name, &via.hop.server);
            let host = if server.host.contains(':') {
                format!("[{}]", server.host)
            } else {
                server.host.clone()
            };
            info!(
                "tcp {src} -> {dst} via {} failed after up={up} down={down}: upstream {hop} \
                 ({host}:{}): {e}",
                via.label, server.port
            );
        }
        (Broken::Server(_), None) => {
            reset(client);
            debug!("tcp {src} -> {dst} ended up={up} down={down} relay={path}: {e}");
        }
        (Broken::Local(_), _) => warn!("tcp {src} -> {dst} ended: {e}"),
        (Broken::Idle | Broken::Client(_), _) => {
            debug!("tcp {src} -> {dst} ended up={up} down={down} relay={path}: {e}");
        }
    }
}

fn sockmap_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TPGATE_SOCKMAP").is_ok_and(|v| v == "1"))
}

fn splice_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TPGATE_SPLICE").map_or(true, |v| v != "0"))
}

/// REJECT-DROP: say nothing; let the client give up, within a bound.
async fn hold(client: &TcpStream) {
    let mut buf = [0u8; 1];
    let _ = tokio::time::timeout(DROP_HOLD, client.peek(&mut buf)).await;
}

/// Closes with a RST instead of a FIN (REJECT, failed upstream).
fn reset(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// `::ffff:a.b.c.d` -> `a.b.c.d`, so rules and logs see one form.
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
