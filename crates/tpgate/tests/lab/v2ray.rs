//! V2Ray (Debian's `v2ray` package, 4.x) as a second server implementation on a lab WAN
//! host: a VMess (AEAD, alterId 0) inbound inside TLS with a throwaway rcgen certificate,
//! over a WebSocket or h2, and the freedom outbound. [`v2ray`] says why when it is not
//! installed (CI installs it).
//!
//! Included with `#[path]` by the tests that need it (rcgen dev-dependency).

// Each test binary uses a different part.
#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lab::{poll, Family, Lab, WanHost};

pub(crate) const V2RAY_PORT: u16 = 443;
pub(crate) const V2RAY_SNI: &str = "v2ray.test";
pub(crate) const V2RAY_UUID: &str = "0b4a1c55-3c2e-4d6f-9a70-1f2e3d4c5b6a";

/// `/usr/bin/v2ray`, or `None` (said) when it is not installed.
pub(crate) fn v2ray() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/bin/v2ray");
    if bin.is_file() {
        Some(bin)
    } else {
        eprintln!("skipped: no /usr/bin/v2ray (apt-get install v2ray)");
        None
    }
}

/// What carries the VMess stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum V2rayCarrier {
    /// A WebSocket on `/ray` with `Host: ws.test`.
    Ws,
    /// h2 (V2Ray's `http` network): host `h2.test`, path `/h2`.
    H2,
    /// TCP with V2Ray's HTTP header obfuscation (mihomo's `network: http`), without TLS,
    /// as such nodes are usually set up.
    HttpHeader,
}

/// A running v2ray on one WAN host; killed (by its pid) on drop.
pub(crate) struct V2ray<'lab> {
    pub(crate) host: &'lab WanHost,
    carrier: V2rayCarrier,
    log: PathBuf,
    child: Option<Child>,
}

impl<'lab> V2ray<'lab> {
    /// Starts v2ray on `lab.hosts[host]` and waits until it accepts connections.
    pub(crate) fn start(lab: &'lab Lab, host: usize, bin: &Path, carrier: V2rayCarrier) -> Self {
        let h = &lab.hosts[host];
        let ck = rcgen::generate_simple_self_signed(vec![V2RAY_SNI.to_owned()])
            .expect("generate certificate");
        let cert = lab.write_file(&format!("v2ray-h{host}.crt"), &ck.cert.pem());
        let key = lab.write_file(
            &format!("v2ray-h{host}.key"),
            &ck.signing_key.serialize_pem(),
        );
        let network = match carrier {
            V2rayCarrier::Ws => {
                r#""network": "ws", "wsSettings": {"path": "/ray", "headers": {"Host": "ws.test"}}"#
            }
            V2rayCarrier::H2 => {
                r#""network": "http", "httpSettings": {"host": ["h2.test"], "path": "/h2"}"#
            }
            V2rayCarrier::HttpHeader => {
                r#""network": "tcp", "tcpSettings": {"header": {"type": "http",
        "request": {"path": ["/obfs", "/video"], "headers": {"Host": ["cdn.example.com"]}},
        "response": {"status": "200", "reason": "OK",
          "headers": {"Content-Type": ["application/octet-stream"]}}}}"#
            }
        };
        let security = if carrier == V2rayCarrier::HttpHeader {
            r#""security": "none""#.to_owned()
        } else {
            format!(
                r#""security": "tls",
      "tlsSettings": {{"certificates": [{{"certificateFile": "{}", "keyFile": "{}"}}]}}"#,
                cert.display(),
                key.display()
            )
        };
        let config = format!(
            r#"{{
  "log": {{"loglevel": "debug"}},
  "inbounds": [{{"port": {V2RAY_PORT}, "listen": "::", "protocol": "vmess",
    "settings": {{"clients": [{{"id": "{V2RAY_UUID}", "alterId": 0}}]}},
    "streamSettings": {{{network}, {security}}}}}],
  "outbounds": [{{"protocol": "freedom"}}]
}}"#
        );
        let conf = lab.write_file(&format!("v2ray-h{host}.json"), &config);
        let log = lab.dir.join(format!("v2ray-h{host}.log"));
        let out = File::create(&log).expect("create v2ray log");
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ns.name])
            .arg(bin)
            .arg("-config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn v2ray");
        let mut s = Self {
            host: h,
            carrier,
            log,
            child: Some(child),
        };
        s.wait_accepting();
        s
    }

    fn wait_accepting(&mut self) {
        let addr = SocketAddr::new(self.host.v4, V2RAY_PORT);
        let ready = poll(Duration::from_secs(10), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "v2ray exited at start ({status}); log:\n{}",
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
            "v2ray did not accept on {addr}; log:\n{}",
            self.log_text()
        );
    }

    /// The host's address of `family`: what a destination sees for traffic through it.
    pub(crate) fn egress(&self, family: Family) -> IpAddr {
        self.host.addr(family)
    }

    /// The proxy entry for tpgate's config, with the user id `uuid`.
    pub(crate) fn proxy_yaml(&self, name: &str, uuid: &str) -> String {
        let server = self.host.v4;
        let network = match self.carrier {
            V2rayCarrier::Ws => "network: ws, ws-opts: {path: /ray, headers: {Host: ws.test}}",
            V2rayCarrier::H2 => "network: h2, h2-opts: {host: [h2.test], path: /h2}",
            V2rayCarrier::HttpHeader => {
                return format!(
                    "{{name: {name}, type: vmess, server: {server}, port: {V2RAY_PORT}, \
                     uuid: {uuid}, alterId: 0, cipher: auto, udp: true, network: http, \
                     http-opts: {{method: GET, path: [/obfs, /video], \
                     headers: {{Host: [cdn.example.com, www.example.com], Connection: [keep-alive]}}}}}}"
                );
            }
        };
        format!(
            "{{name: {name}, type: vmess, server: {server}, port: {V2RAY_PORT}, uuid: {uuid}, \
             alterId: 0, cipher: auto, udp: true, tls: true, servername: {V2RAY_SNI}, \
             skip-cert-verify: true, {network}}}"
        )
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for V2ray<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
