//! TCP: accept TPROXY'd connections (the original destination is the accepted socket's
//! local address), decide, and relay.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use socket2::{SockRef, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tpgate_core::net::Network;
use tpgate_core::rules::Action;
use tracing::{debug, info, warn};

use super::{action_name, copy, origin_name, Shared};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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
        action_name(v.action)
    );
    match v.action {
        Action::Reject => reset(&client),
        Action::RejectDrop => {
            // Say nothing; let the client give up, within a bound.
            let mut buf = [0u8; 1];
            let _ = tokio::time::timeout(DROP_HOLD, client.peek(&mut buf)).await;
        }
        Action::Direct => direct(client, src, dst, shared.routing_mark).await,
    }
}

async fn direct(client: TcpStream, src: SocketAddr, dst: SocketAddr, mark: u32) {
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, connect(dst, mark)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            info!("tcp {src} -> {dst} connect failed: {e}");
            reset(&client);
            return;
        }
        Err(_) => {
            info!("tcp {src} -> {dst} connect timed out");
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    match copy::relay(client, server, IDLE_TIMEOUT).await {
        Ok((up, down)) => debug!("tcp {src} -> {dst} closed up={up} down={down}"),
        Err(e) => debug!("tcp {src} -> {dst} ended: {e}"),
    }
}

/// Connects to `dst` from a socket carrying the routing mark, so it is never intercepted.
pub(crate) async fn connect(dst: SocketAddr, mark: u32) -> io::Result<TcpStream> {
    let s = tpgate_sys::outbound_socket(dst.is_ipv6(), Type::STREAM, mark)?;
    let s: std::net::TcpStream = s.into();
    TcpSocket::from_std_stream(s).connect(dst).await
}

/// Closes with a RST instead of a FIN (REJECT, failed upstream).
fn reset(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// `::ffff:a.b.c.d` -> `a.b.c.d`, so rules and logs see one form.
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
