//! The validated model of `proxies:` and `proxy-groups:` (mihomo field names). Rules target
//! these by name; the loader resolves names to [`TargetId`]s so the daemon never looks a
//! name up per connection.

use std::time::Duration;

pub use crate::proto::vless::Uuid;
pub use crate::proto::vmess::Security as VmessCipher;
pub use crate::rules::TargetId;

/// A named upstream proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDef {
    pub name: String,
    /// Host name or IP literal, as written.
    pub server: String,
    pub port: u16,
    /// Relay UDP through this proxy (`udp: true`, default false as in mihomo); when false
    /// UDP flows that pick it fail. Always false for `http`.
    pub udp: bool,
    pub kind: ProxyKind,
    /// `dialer-proxy`: the proxy or group this proxy's server is reached through (a chain
    /// of two, as a `relay` of both); `None`: dialed directly. [`Member::Reject`] when
    /// the named one was skipped: the proxy then rejects, never goes around it.
    pub dialer: Option<Member>,
    /// `dialer-proxy` as written. The loader resolves it into `dialer` for `proxies:`; a
    /// provider's proxies are resolved when the daemon takes the provider's list.
    pub dialer_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyKind {
    /// `type: socks5`: CONNECT and UDP ASSOCIATE.
    Socks5 {
        auth: Option<Credentials>,
        tls: Option<Tls>,
    },
    /// `type: http`: HTTP CONNECT.
    Http {
        auth: Option<Credentials>,
        tls: Option<Tls>,
    },
    /// `type: ss`, with the plugin that carries its stream (`plugin`, `plugin-opts`).
    Shadowsocks {
        cipher: Cipher,
        password: String,
        plugin: Option<SsPlugin>,
    },
    /// `type: trojan` (always TLS).
    Trojan {
        password: String,
        tls: Tls,
        network: ProxyNetwork,
    },
    /// `type: vless` (`tls: true`: inside TLS), with XTLS Vision when `flow` is set (then
    /// always TLS over `network: tcp`).
    Vless {
        uuid: Uuid,
        tls: Option<Tls>,
        network: ProxyNetwork,
        flow: Option<VlessFlow>,
    },
    /// `type: vmess` with `alterId: 0` (AEAD header).
    Vmess {
        uuid: Uuid,
        cipher: VmessCipher,
        tls: Option<Tls>,
        network: ProxyNetwork,
    },
    /// `type: hysteria2`: QUIC, one stream per TCP connection, UDP in datagrams.
    Hysteria2(Hysteria2Opts),
    /// `type: tuic` (v5): QUIC, one stream per TCP connection, UDP in datagrams or streams.
    Tuic(TuicOpts),
    /// `type: direct`: a named way out that connects directly (mihomo configs name one
    /// `直连` or `Direct` and route to it). `server` is empty and `port` 0.
    Direct,
}

impl ProxyKind {
    /// The type as mihomo's adapters name it (`Shadowsocks`, `Socks5`...), which group
    /// `exclude-type` compares against.
    pub const fn adapter_type(&self) -> &'static str {
        match self {
            Self::Socks5 { .. } => "Socks5",
            Self::Http { .. } => "Http",
            Self::Shadowsocks { .. } => "Shadowsocks",
            Self::Trojan { .. } => "Trojan",
            Self::Vless { .. } => "Vless",
            Self::Vmess { .. } => "Vmess",
            Self::Hysteria2(_) => "Hysteria2",
            Self::Tuic(_) => "Tuic",
            Self::Direct => "Direct",
        }
    }
}

/// `type: hysteria2`'s own keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Hysteria2Opts {
    pub password: String,
    /// QUIC's TLS (`sni`, `skip-cert-verify`, `alpn`, default `h3`).
    pub tls: Tls,
    /// `obfs: salamander` with this `obfs-password`.
    pub obfs: Option<String>,
    /// `up` and `down` in bytes per second; 0: not given. `down` is told to the server
    /// (`Hysteria-CC-RX`); `up` caps the client's sending rate (Brutal).
    pub up: u64,
    pub down: u64,
    /// `ports` (port hopping): the server listens on all of these; empty: `port` only.
    pub ports: Vec<u16>,
    /// `hop-interval`: how often the client moves to another of `ports`.
    pub hop_interval: Duration,
}

/// Passwords stay out of logs.
impl std::fmt::Debug for Hysteria2Opts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hysteria2Opts")
            .field("tls", &self.tls)
            .field("obfs", &self.obfs.as_ref().map(|_| "salamander"))
            .field("up", &self.up)
            .field("down", &self.down)
            .field("ports", &self.ports.len())
            .field("hop_interval", &self.hop_interval)
            .finish_non_exhaustive()
    }
}

/// `type: tuic`'s own keys (TUIC v5).
#[derive(Clone, PartialEq, Eq)]
pub struct TuicOpts {
    pub uuid: Uuid,
    pub password: String,
    /// QUIC's TLS (`sni`, `skip-cert-verify`, `alpn`, default `h3`).
    pub tls: Tls,
    /// `congestion-controller` (default cubic, as mihomo).
    pub congestion: CongestionControl,
    /// `udp-relay-mode`: datagrams (`native`, the default) or a stream per packet (`quic`).
    pub udp_relay_mode: UdpRelayMode,
    /// `reduce-rtt`: 0-RTT when the server resumes the session.
    pub reduce_rtt: bool,
    /// `disable-sni`: no server name in the ClientHello.
    pub disable_sni: bool,
    /// `heartbeat-interval`.
    pub heartbeat: Duration,
}

/// Passwords stay out of logs.
impl std::fmt::Debug for TuicOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TuicOpts")
            .field("tls", &self.tls)
            .field("congestion", &self.congestion)
            .field("udp_relay_mode", &self.udp_relay_mode)
            .field("reduce_rtt", &self.reduce_rtt)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

/// A QUIC congestion controller by mihomo's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CongestionControl {
    Cubic,
    Bbr,
    NewReno,
}

/// How TUIC carries UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpRelayMode {
    /// QUIC datagrams.
    Native,
    /// One unidirectional stream per packet.
    Quic,
}

/// `flow:` of a vless proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlessFlow {
    /// `xtls-rprx-vision`: UDP to port 443 is refused (QUIC falls back to TCP), as Xray
    /// and mihomo do.
    Vision,
    /// `xtls-rprx-vision-udp443`: the same, UDP to port 443 allowed.
    VisionUdp443,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// `sni` (or `servername`); `None`: the server name.
    pub sni: Option<String>,
    pub skip_cert_verify: bool,
    /// `alpn`; empty: the transport's default (`http/1.1` under a WebSocket, `h2` under
    /// gRPC, none over plain TCP).
    pub alpn: Vec<String>,
    /// `fingerprint`: the SHA-256 of a certificate the server must present (pinning, as
    /// mihomo does it: that certificate is trusted whoever signed it).
    pub fingerprint: Option<[u8; 32]>,
    /// `reality-opts`: the handshake is REALITY's, and the server is known by its key, not
    /// by a certificate.
    pub reality: Option<Reality>,
}

/// `reality-opts` of a vless, vmess or trojan proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reality {
    /// `public-key`: the server's X25519 public key.
    pub public_key: [u8; 32],
    /// `short-id`, zero-padded to 8 bytes.
    pub short_id: [u8; 8],
}

/// `network:` of a vmess, vless or trojan proxy: what carries its stream to the server
/// (inside TLS when the proxy has TLS).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProxyNetwork {
    /// The stream goes straight over TCP (or TLS).
    #[default]
    Tcp,
    /// `network: ws` with `ws-opts`: a WebSocket, or with `v2ray-http-upgrade` an HTTP
    /// upgrade and then raw bytes.
    Ws(WsOpts),
    /// `network: grpc` with `grpc-opts`: gun over HTTP/2.
    Grpc(GrpcOpts),
    /// `network: h2` with `h2-opts`: the stream as the body of one HTTP/2 PUT (vmess and
    /// vless; for vmess always inside TLS, as mihomo does).
    H2(H2Opts),
    /// `network: http` with `http-opts`: V2Ray's HTTP header obfuscation (vmess and
    /// vless): an HTTP/1.1 request head before the client's first bytes, a response head
    /// before the server's.
    Http(HttpOpts),
}

/// `http-opts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOpts {
    /// `method`: default `GET`.
    pub method: String,
    /// `path`: one is picked per connection; default `/`.
    pub paths: Vec<String>,
    /// `headers`: each header's value is picked per connection from its list; a `Host`
    /// among them is the request's host (else the server's name).
    pub headers: Vec<(String, Vec<String>)>,
}

/// `h2-opts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Opts {
    /// `host`: the request's authority is one of these, picked per connection (mihomo's
    /// default: `www.example.com`).
    pub hosts: Vec<String>,
    /// `path`, starting with `/`.
    pub path: String,
}

/// `ws-opts`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WsOpts {
    /// Path and query, starting with `/` (`?ed=N` already taken out into `early_data`).
    pub path: String,
    /// `headers` as written; a `Host` among them is the request's host and, without
    /// `servername`, the TLS server name of vmess and vless.
    pub headers: Vec<(String, String)>,
    /// `max-early-data` (or `?ed=` in the path).
    pub early_data: Option<EarlyData>,
    /// `v2ray-http-upgrade`: no WebSocket framing after the upgrade.
    pub http_upgrade: bool,
    /// `v2ray-http-upgrade-fast-open`: send the tunnel's bytes without waiting for the
    /// server's 101 (which is then read off the front of the first reply bytes).
    pub fast_open: bool,
}

impl WsOpts {
    /// The `Host` header written in `headers`, if any.
    pub fn host_header(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.as_str())
    }
}

/// WebSocket early data: up to `max` of the tunnel's first bytes ride in the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyData {
    pub max: usize,
    /// `early-data-header-name`; `None`: appended to the path (mihomo's default; `?ed=N`
    /// in the path means `Sec-WebSocket-Protocol`, Xray's way).
    pub header: Option<String>,
}

/// `grpc-opts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcOpts {
    /// `grpc-service-name`, default `GunService`: requests go to `/<name>/Tun`.
    pub service_name: String,
}

/// A Shadowsocks plugin (SIP003) as mihomo builds it in: what carries the TCP stream to the
/// server. UDP goes to the server as plain Shadowsocks UDP whatever the plugin (mihomo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsPlugin {
    /// `plugin: obfs` (simple-obfs): `mode` http or tls, `host` (mihomo's default
    /// `bing.com`).
    Obfs { mode: ObfsMode, host: String },
    /// `plugin: v2ray-plugin`, `mode: websocket`: a WebSocket (`host` as its `Host` and,
    /// with `tls`, the TLS server name), optionally inside TLS; with `mux` (mihomo's
    /// default, and what the v2ray-plugin server reads) the stream goes in Mux.Cool frames.
    V2ray {
        ws: WsOpts,
        tls: Option<Tls>,
        mux: bool,
    },
    /// `plugin: shadow-tls`, version 2: a real TLS handshake with `host` (relayed by the
    /// server), then the stream in TLS application-data records, authenticated with
    /// `password`.
    ShadowTls {
        host: String,
        password: String,
        skip_cert_verify: bool,
        version: ShadowTlsVersion,
    },
}

/// `plugin-opts.version` of `plugin: shadow-tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowTlsVersion {
    /// A TLS 1.2 handshake, then the first record opens with an HMAC of what was read.
    V2,
    /// The ClientHello's session id carries an HMAC; TLS 1.3; every record signed.
    V3,
}

/// `plugin-opts.mode` of `plugin: obfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObfsMode {
    Http,
    Tls,
}

/// Shadowsocks ciphers tpgate supports (mihomo spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20IetfPoly1305,
    Blake3Aes128Gcm2022,
    Blake3Aes256Gcm2022,
    Blake3Chacha20Poly1305_2022,
}

impl Cipher {
    /// The name as written in configs (and as the `shadowsocks` crate spells it).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "aes-128-gcm",
            Self::Aes256Gcm => "aes-256-gcm",
            Self::Chacha20IetfPoly1305 => "chacha20-ietf-poly1305",
            Self::Blake3Aes128Gcm2022 => "2022-blake3-aes-128-gcm",
            Self::Blake3Aes256Gcm2022 => "2022-blake3-aes-256-gcm",
            Self::Blake3Chacha20Poly1305_2022 => "2022-blake3-chacha20-poly1305",
        }
    }

    /// Key length in bytes; for the 2022 ciphers, the decoded length of each base64 PSK.
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm | Self::Blake3Aes128Gcm2022 => 16,
            Self::Aes256Gcm
            | Self::Chacha20IetfPoly1305
            | Self::Blake3Aes256Gcm2022
            | Self::Blake3Chacha20Poly1305_2022 => 32,
        }
    }
}

/// A named group of proxies and/or groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDef {
    pub name: String,
    pub kind: GroupKind,
    /// The members written in `proxies` (and, with `include-all-proxies`, every proxy of
    /// `proxies:`), in order, after `exclude-filter`/`exclude-type`. Never empty when
    /// `uses` is: a relay's members are never `Direct` or `Reject` except a lone
    /// `[Reject]`, and a group left with no usable member (they were all of unsupported
    /// types, or a relay lost a hop) is `[Reject]` and rejects all traffic.
    pub members: Vec<Member>,
    /// Proxy providers (indexes into `Config::proxy_providers`) whose proxies follow
    /// `members`, from `use` or `include-all-providers`; see [`GroupDef::expand`].
    pub uses: Vec<usize>,
    /// `filter`, `exclude-filter`, `exclude-type` applied to the providers' proxies.
    pub filter: super::NameFilter,
    /// `url`/`interval`/`lazy`/`timeout`; always set for url-test, fallback and
    /// load-balance; for select and relay only when a `url` is written.
    pub health: Option<HealthCheck>,
    /// `hidden`, `icon`, `disable-udp`: kept for the controller and the UDP relay.
    pub hidden: bool,
    pub icon: Option<String>,
    pub disable_udp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// `DIRECT`.
    Direct,
    /// `REJECT` or `REJECT-DROP`.
    Reject,
    /// Another proxy or group.
    Target(TargetId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Select,
    /// Picks the lowest delay; moves only when another is better by more than `tolerance`.
    UrlTest {
        tolerance: Duration,
    },
    Fallback,
    LoadBalance(LbStrategy),
    /// Chains the members, first hop first.
    Relay,
}

impl GroupDef {
    /// A group of `members` with every other field at its default (no providers, no
    /// filter, no health check).
    pub fn new(name: &str, kind: GroupKind, members: Vec<Member>) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            members,
            uses: Vec::new(),
            filter: super::NameFilter::default(),
            health: None,
            hidden: false,
            icon: None,
            disable_udp: false,
        }
    }
}

impl GroupKind {
    /// The type as mihomo's adapters name it, which `exclude-type` compares against.
    pub const fn adapter_type(self) -> &'static str {
        match self {
            Self::Select => "Selector",
            Self::UrlTest { .. } => "URLTest",
            Self::Fallback => "Fallback",
            Self::LoadBalance(_) => "LoadBalance",
            Self::Relay => "Relay",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbStrategy {
    ConsistentHashing,
    RoundRobin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `expected-status`: the HTTP status codes that count as alive (`None`: any).
    pub expected_status: Option<Vec<(u16, u16)>>,
    /// An `http://` or `https://` URL fetched through each member.
    pub url: String,
    /// Time between checks; zero: no periodic check.
    pub interval: Duration,
    /// Only check while the group is in use (mihomo's default: true).
    pub lazy: bool,
    /// How long one check may take before the member counts as failed.
    pub timeout: Duration,
}

/// A resolved rule target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Proxy(&'a ProxyDef),
    Group(&'a GroupDef),
}
