//! A minimal Trojan server for the upstream benchmark: TLS on rustls with a throwaway rcgen
//! certificate, then `hex(SHA224(password)) CRLF CMD ATYP ADDR PORT CRLF`; only CMD 1
//! (CONNECT) is served, relayed with large buffers. A wrong password or any other command
//! closes the connection. Not hardened: no fallback site, no timeouts; a lab tool only.
//!
//! Usage: tpgate-bench-trojan-server LISTEN-ADDR PASSWORD   (e.g. `[::]:443 secret`)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use sha2::{Digest, Sha224};
use tokio::io::{self, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Relay buffer per direction: large enough that a TLS record is never split across reads.
const BUF: usize = 256 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(password)) = (args.next(), args.next()) else {
        return Err("usage: tpgate-bench-trojan-server LISTEN-ADDR PASSWORD".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let acceptor = TlsAcceptor::from(server_config()?);
    let want: Arc<[u8]> = hex_sha224(&password).into_bytes().into();
    let listener = TcpListener::bind(listen).await?;
    eprintln!("trojan server listening on {listen}");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let (acceptor, want) = (acceptor.clone(), Arc::clone(&want));
        tokio::spawn(async move {
            if let Err(e) = serve(acceptor, tcp, &want).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

fn server_config() -> Result<Arc<ServerConfig>, BoxError> {
    let ck = rcgen::generate_simple_self_signed(vec!["trojan.test".to_owned()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)?;
    Ok(Arc::new(cfg))
}

fn hex_sha224(password: &str) -> String {
    Sha224::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn serve(acceptor: TlsAcceptor, tcp: TcpStream, want: &[u8]) -> Result<(), BoxError> {
    tcp.set_nodelay(true)?;
    let mut tls = acceptor.accept(tcp).await?;
    let mut hash = vec![0u8; want.len()];
    tls.read_exact(&mut hash).await?;
    if hash != want {
        return Err("wrong password".into());
    }
    let mut head = [0u8; 4];
    tls.read_exact(&mut head).await?;
    let [b'\r', b'\n', cmd, atyp] = head else {
        return Err("malformed request".into());
    };
    if cmd != 1 {
        return Err(format!("unsupported command {cmd}").into());
    }
    let dst = read_addr(&mut tls, atyp).await?;
    let mut crlf = [0u8; 2];
    tls.read_exact(&mut crlf).await?;
    if &crlf != b"\r\n" {
        return Err("malformed request".into());
    }
    let mut out = TcpStream::connect(dst).await?;
    out.set_nodelay(true)?;
    io::copy_bidirectional_with_sizes(&mut tls, &mut out, BUF, BUF).await?;
    let _ = out.shutdown().await;
    Ok(())
}

async fn read_addr<R: AsyncRead + Unpin>(r: &mut R, atyp: u8) -> Result<SocketAddr, BoxError> {
    let ip = match atyp {
        1 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).await?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        4 => {
            let mut b = [0u8; 16];
            r.read_exact(&mut b).await?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        3 => {
            let len = r.read_u8().await?;
            let mut name = vec![0u8; usize::from(len)];
            r.read_exact(&mut name).await?;
            let port = r.read_u16().await?;
            let name = String::from_utf8(name)?;
            return tokio::net::lookup_host((name.as_str(), port))
                .await?
                .next()
                .ok_or_else(|| "name did not resolve".into());
        }
        _ => return Err(format!("unknown address type {atyp}").into()),
    };
    let port = r.read_u16().await?;
    Ok(SocketAddr::new(ip, port))
}
