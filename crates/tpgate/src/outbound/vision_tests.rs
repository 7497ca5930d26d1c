//! [`VisionStream`] against an in-process rustls server: the bytes a server writes beneath
//! its TLS right after the record that ends its direct frame (in the same write, so in the
//! same segment) reach the reader, none caught in rustls; a server that closes before its
//! response is a refusal.

use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tpgate_core::config::Tls;
use tpgate_core::net::Destination;
use tpgate_core::proto::vision::{encode_frame, Command};
use tpgate_core::proto::vless::Uuid;

use super::vision::{handshake, VisionStream};
use super::BoxIo;
use crate::outbound::tls::TlsClient;

const ID: Uuid = Uuid([9; 16]);

fn acceptor() -> TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["vision.test".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(cfg))
}

async fn client(io: tokio::io::DuplexStream) -> std::io::Result<VisionStream> {
    let tls = Tls {
        sni: Some("vision.test".into()),
        skip_cert_verify: true,
        alpn: Vec::new(),
        fingerprint: None,
        reality: None,
    };
    let mut conn = TlsClient::new(&tls, "vision.test")
        .unwrap()
        .connection()
        .unwrap();
    let mut io: BoxIo = Box::new(io);
    handshake(&mut io, &mut conn).await?;
    let dst = Destination::Addr("192.0.2.1:443".parse().unwrap());
    VisionStream::start(io, conn, ID, "up", &dst, b"request").await
}

#[tokio::test]
async fn raw_bytes_right_after_the_direct_frame_are_kept() {
    direct_switch(usize::MAX).await;
}

#[tokio::test]
async fn records_and_raw_bytes_in_small_pieces() {
    for piece in [1, 3, 7] {
        direct_switch(piece).await;
    }
}

/// The server's last records and its first raw bytes go out in writes of `piece` bytes.
async fn direct_switch(piece: usize) {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut tls = acceptor().accept(theirs).await.unwrap();
        // The response header, a padded frame, and the direct frame, in separate records.
        let mut first = vec![0, 0];
        encode_frame(Some(&ID), Command::Continue, b"hello ", 300, &mut first);
        tls.write_all(&first).await.unwrap();
        tls.flush().await.unwrap();
        let mut direct = Vec::new();
        encode_frame(None, Command::Direct, b"padded ", 20, &mut direct);
        let (_, conn) = tls.get_mut();
        std::io::Write::write_all(&mut conn.writer(), &direct).unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        // Raw bytes follow the last record at once, as one write.
        wire.extend_from_slice(b"raw world");
        let (io, _) = tls.get_mut();
        for p in wire.chunks(piece) {
            io.write_all(p).await.unwrap();
            tokio::task::yield_now().await;
        }
        io.write_all(b", and more").await.unwrap();
        io.shutdown().await.unwrap();
        // Keep the stream (and the client's request, unread) until the client is done.
        tls
    });
    let mut s = client(ours).await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello padded raw world, and more");
    drop(server.await.unwrap());
}

#[tokio::test]
async fn closing_before_the_response_is_a_refusal() {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut tls = acceptor().accept(theirs).await.unwrap();
        let mut req = [0u8; 7];
        tls.read_exact(&mut req).await.unwrap();
        tls.shutdown().await.unwrap();
        req
    });
    let mut s = client(ours).await.unwrap();
    let err = s.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(&server.await.unwrap(), b"request");
}
