//! TCP: accept TPROXY'd connections (the original destination is the accepted socket's
//! local address), decide, and relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tpgate_core::net::{Destination, Network};
use tracing::{debug, info, warn};

use tokio::io::AsyncWriteExt as _;

use super::sniff::{self, Sniff};
use super::{copy, destination, host_field, origin_name, NameNeed, Shared, Way};
use crate::outbound::{connect_marked, Leaf, Pick};

const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long REJECT-DROP holds a connection without answering.
const DROP_HOLD: Duration = Duration::from_secs(30);

/// Accepts until `shutdown` resolves. Accept errors (EMFILE, ...) are logged and retried
/// after a pause; they never end the server.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move { handle(stream, peer, shared).await });
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(client: TcpStream, src: SocketAddr, shared: Arc<Shared>) {
    let _live = super::gauge::LIVE.enter();
    let dst = match client.local_addr() {
        Ok(a) => canonical(a),
        Err(e) => {
            debug!(error = %e, "accepted socket vanished");
            return;
        }
    };
    let src = canonical(src);
    if shared.is_self(dst) {
        warn!("tcp {src} -> {dst} refused: that is tpgate's own listener");
        reset(&client);
        return;
    }
    let process = shared.process_of(Network::Tcp, src, dst).await;
    let port = dst.port();
    let need = if sniff::applies(port, &shared.sniffer) {
        shared.name_need(Network::Tcp, src, dst, process.as_ref())
    } else {
        NameNeed::Nothing
    };
    let (sniffed, early) = match need {
        NameNeed::Wait => (sniff::tcp(&client, port, &shared.sniffer).await, None),
        // The name cannot change where the flow goes: connect at once and read the
        // client's first bytes only meanwhile, so a server that speaks first waits for
        // nothing.
        NameNeed::LogOnly => {
            let connect = direct(dst, None, false, &shared);
            let (s, server) = sniff::tcp_while(&client, port, &shared.sniffer, connect).await;
            (s, Some(server))
        }
        NameNeed::Nothing => (Ok(Sniff::default()), None),
    };
    let sniffed = match sniffed {
        Ok(s) => s,
        Err(e) => {
            debug!("tcp {src} -> {dst} closed while sniffing: {e}");
            return;
        }
    };
    let Some(name) = shared.flow_name(dst.ip(), sniffed.host) else {
        info!("tcp {src} -> {dst} rejected: a fake-ip address that stands for no name");
        reset(&client);
        return;
    };
    let (host, fake) = (name.host.as_deref(), name.fake);
    let rules_dst = if fake {
        shared.rules_dst(Network::Tcp, src, dst, host).await
    } else {
        dst
    };
    let v = shared.decide(Network::Tcp, src, rules_dst, host, process);
    info!(
        "tcp {src} -> {dst} origin={}{}{} rule=\"{}\" action={}",
        origin_name(v.origin),
        host_field(host),
        v.who,
        v.rule,
        v.route()
    );
    let first = sniffed.first;
    match v.way {
        Way::Reject => reset(&client),
        Way::RejectDrop => hold(&client).await,
        Way::Direct => {
            let server = match early {
                Some(connected) => connected,
                None => direct(dst, host, fake, &shared).await,
            };
            match server {
                Ok(server) => relay_direct(client, server, src, dst, first).await,
                Err(e) => {
                    info!("tcp {src} -> {dst} connect failed: {e}");
                    reset(&client);
                }
            }
        }
        Way::Proxy(pick) => {
            let target = destination(dst, host);
            proxied(client, (src, dst, fake), &target, first, pick, &shared).await;
        }
    }
}

/// DIRECT: to the original address, or to the sniffed name with `override-destination`,
/// or (a fake address) to the name resolved for real.
async fn direct(
    dst: SocketAddr,
    host: Option<&str>,
    fake: bool,
    shared: &Shared,
) -> std::io::Result<TcpStream> {
    match host {
        Some(name) if fake => {
            let real = shared.resolve_real(name, dst.port()).await?;
            connect_marked(real, shared.routing_mark).await
        }
        Some(name) if shared.sniffer.override_destination => {
            let dest = destination(dst, Some(name));
            shared.outbounds.connect_direct(&dest).await
        }
        _ => connect_marked(dst, shared.routing_mark).await,
    }
}

/// Through the picked upstream(s). A failed dial is reported to the groups that chose it and
/// the choice is made again (fallback and url-test then move on), a bounded number of times.
async fn proxied(
    client: TcpStream,
    (src, dst, fake): (SocketAddr, SocketAddr, bool),
    target: &Destination,
    first: Vec<u8>,
    mut pick: Pick,
    shared: &Shared,
) {
    let o = &shared.outbounds;
    let by_addr = Destination::Addr(dst);
    for attempt in 0..3 {
        // A group that chose DIRECT connects like a DIRECT rule: to the original address
        // unless `override-destination` says to use the name.
        let to = match pick.leaf {
            Leaf::Direct if !shared.sniffer.override_destination && !fake => &by_addr,
            _ => target,
        };
        let connected = match (&pick.leaf, to) {
            // A fake address's name is resolved by the DNS server's upstreams: the system
            // resolver may be tpgate itself and answer with the fake address again.
            (Leaf::Direct, Destination::Domain(name, port)) if fake => {
                match shared.resolve_real(name, *port).await {
                    Ok(a) => connect_marked(a, shared.routing_mark)
                        .await
                        .map(|s| Some(Box::new(s) as crate::outbound::BoxIo)),
                    Err(e) => Err(e),
                }
            }
            _ => o.connect(&pick.leaf, to).await,
        };
        match connected {
            Ok(Some(server)) => return relay(client, server, src, dst, first).await,
            Ok(None) => return reset(&client),
            Err(e) => {
                o.report_failure(&pick);
                let again = match pick.target() {
                    Some(id) if attempt < 2 => o.pick(id, target),
                    _ => pick.clone(),
                };
                if again.route == pick.route {
                    info!("tcp {src} -> {dst} via {} failed: {e}", pick.route);
                    return reset(&client);
                }
                info!(
                    "tcp {src} -> {dst} via {} failed ({e}); retrying via {}",
                    pick.route, again.route
                );
                pick = again;
            }
        }
    }
    reset(&client);
}

/// Sends `first` (what sniffing read from the client) on, then relays both ways. The client
/// socket has `TCP_NODELAY` from the listener; outbound sockets set it when connected.
async fn relay<S>(
    client: TcpStream,
    mut server: S,
    src: SocketAddr,
    dst: SocketAddr,
    first: Vec<u8>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if send_first(&mut server, first, src, dst).await {
        ended(copy::relay(client, server, IDLE_TIMEOUT).await, src, dst);
    }
}

/// DIRECT between two plain sockets: zero-copy with splice(2) (`TPGATE_SPLICE=0` turns it
/// off, to compare with the copying relay).
async fn relay_direct(
    client: TcpStream,
    mut server: TcpStream,
    src: SocketAddr,
    dst: SocketAddr,
    first: Vec<u8>,
) {
    if !splice_enabled() {
        return relay(client, server, src, dst, first).await;
    }
    if send_first(&mut server, first, src, dst).await {
        ended(
            super::splice::relay(&client, &server, IDLE_TIMEOUT).await,
            src,
            dst,
        );
    }
}

/// Writes the sniffed bytes to the server; consumes them, so they are not held for the
/// connection's life. False when the connection ended.
async fn send_first<S>(server: &mut S, first: Vec<u8>, src: SocketAddr, dst: SocketAddr) -> bool
where
    S: tokio::io::AsyncWrite + Unpin,
{
    if first.is_empty() {
        return true;
    }
    match server.write_all(&first).await {
        Ok(()) => true,
        Err(e) => {
            debug!("tcp {src} -> {dst} ended: {e}");
            false
        }
    }
}

fn ended(r: std::io::Result<(u64, u64)>, src: SocketAddr, dst: SocketAddr) {
    match r {
        Ok((up, down)) => debug!("tcp {src} -> {dst} closed up={up} down={down}"),
        Err(e) => debug!("tcp {src} -> {dst} ended: {e}"),
    }
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
