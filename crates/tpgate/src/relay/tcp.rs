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

use super::{copy, origin_name, Shared, Way};
use crate::outbound::{connect_marked, Pick};

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
    let v = shared.decide(Network::Tcp, src, dst);
    info!(
        "tcp {src} -> {dst} origin={} rule=\"{}\" action={}",
        origin_name(v.origin),
        v.rule,
        v.route()
    );
    match v.way {
        Way::Reject => reset(&client),
        Way::RejectDrop => hold(&client).await,
        Way::Direct => match connect_marked(dst, shared.routing_mark).await {
            Ok(server) => relay(client, server, src, dst).await,
            Err(e) => {
                info!("tcp {src} -> {dst} connect failed: {e}");
                reset(&client);
            }
        },
        Way::Proxy(pick) => proxied(client, src, dst, pick, &shared).await,
    }
}

/// Through the picked upstream(s). A failed dial is reported to the groups that chose it and
/// the choice is made again (fallback and url-test then move on), a bounded number of times.
async fn proxied(
    client: TcpStream,
    src: SocketAddr,
    dst: SocketAddr,
    mut pick: Pick,
    shared: &Shared,
) {
    let o = &shared.outbounds;
    let target = Destination::Addr(dst);
    for attempt in 0..3 {
        match o.connect(&pick.leaf, &target).await {
            Ok(Some(server)) => return relay(client, server, src, dst).await,
            Ok(None) => return reset(&client),
            Err(e) => {
                o.report_failure(&pick);
                let again = match pick.target() {
                    Some(id) if attempt < 2 => o.pick(id, &target),
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

async fn relay<S>(client: TcpStream, server: S, src: SocketAddr, dst: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = client.set_nodelay(true);
    match copy::relay(client, server, IDLE_TIMEOUT).await {
        Ok((up, down)) => debug!("tcp {src} -> {dst} closed up={up} down={down}"),
        Err(e) => debug!("tcp {src} -> {dst} ended: {e}"),
    }
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
