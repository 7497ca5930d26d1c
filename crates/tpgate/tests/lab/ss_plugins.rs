//! The real servers of two Shadowsocks plugins on a lab WAN host, in front of the lab's
//! Shadowsocks server (`ss_server.rs`, TCP on 8388): simple-obfs's `obfs-server` (Debian's
//! `simple-obfs`) in HTTP or TLS mode, and v2ray-plugin in server mode (Debian's
//! `shadowsocks-v2ray-plugin`, `ss-v2ray-plugin`, configured the SIP003 way through
//! `SS_*` variables), a WebSocket on `/v2` with host `v2.test`, optionally inside TLS with
//! a throwaway rcgen certificate. Each listens on [`PLUGIN_PORT`] (TCP); the proxy's UDP
//! goes to that port as plain Shadowsocks, as mihomo sends it, so the tests run a UDP-only
//! Shadowsocks server there. [`PluginServer::start`] says why when a binary is missing (CI
//! installs both).
//!
//! Included with `#[path]` by the tests that need it (rcgen dev-dependency).

// Each test binary uses a different part.
#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lab::{poll, Lab, WanHost};

/// Where the plugin's server listens (and the UDP-only Shadowsocks server beside it).
pub(crate) const PLUGIN_PORT: u16 = 8443;
/// The Shadowsocks server the plugin forwards to, on the same host.
const SS_BACKEND: &str = "127.0.0.1:8388";
pub(crate) const V2RAY_HOST: &str = "v2.test";

/// Which plugin server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PluginKind {
    ObfsHttp,
    ObfsTls,
    V2ray { tls: bool },
}

/// A running plugin server; killed (by its pid) on drop.
pub(crate) struct PluginServer<'lab> {
    pub(crate) host: &'lab WanHost,
    kind: PluginKind,
    log: PathBuf,
    child: Option<Child>,
}

impl<'lab> PluginServer<'lab> {
    /// Starts the plugin server on `lab.hosts[host]` and waits until it accepts; `None`
    /// (said) when its binary is not installed.
    pub(crate) fn start(lab: &'lab Lab, host: usize, kind: PluginKind) -> Option<Self> {
        let h = &lab.hosts[host];
        let (bin, package) = match kind {
            PluginKind::ObfsHttp | PluginKind::ObfsTls => ("/usr/bin/obfs-server", "simple-obfs"),
            PluginKind::V2ray { .. } => ("/usr/bin/ss-v2ray-plugin", "shadowsocks-v2ray-plugin"),
        };
        if !Path::new(bin).is_file() {
            eprintln!("skipped: no {bin} (apt-get install {package})");
            return None;
        }
        let log = lab.dir.join(format!("plugin-h{host}.log"));
        let out = File::create(&log).expect("create plugin log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &h.ns.name, bin]);
        let port = PLUGIN_PORT.to_string();
        match kind {
            PluginKind::ObfsHttp | PluginKind::ObfsTls => {
                let mode = if kind == PluginKind::ObfsHttp {
                    "http"
                } else {
                    "tls"
                };
                // obfs-server binds `::` for IPv6 only: each family named.
                cmd.args(["-s", "0.0.0.0", "-s", "::", "-p", &port, "--obfs", mode]);
                cmd.args(["-r", SS_BACKEND, "-v"]);
            }
            PluginKind::V2ray { tls } => {
                let mut opts = format!("server;host={V2RAY_HOST};path=/v2;loglevel=debug");
                if tls {
                    let ck = rcgen::generate_simple_self_signed(vec![V2RAY_HOST.to_owned()])
                        .expect("generate certificate");
                    let cert = lab.write_file(&format!("plugin-h{host}.crt"), &ck.cert.pem());
                    let key = lab.write_file(
                        &format!("plugin-h{host}.key"),
                        &ck.signing_key.serialize_pem(),
                    );
                    opts.push_str(&format!(
                        ";tls;cert={};key={}",
                        cert.display(),
                        key.display()
                    ));
                }
                let (ss_host, ss_port) = SS_BACKEND.split_once(':').expect("host:port");
                cmd.env("SS_REMOTE_HOST", "::")
                    .env("SS_REMOTE_PORT", &port)
                    .env("SS_LOCAL_HOST", ss_host)
                    .env("SS_LOCAL_PORT", ss_port)
                    .env("SS_PLUGIN_OPTIONS", opts);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn the plugin server");
        let mut s = Self {
            host: h,
            kind,
            log,
            child: Some(child),
        };
        s.wait_accepting();
        Some(s)
    }

    fn wait_accepting(&mut self) {
        let addr = SocketAddr::new(self.host.v4, PLUGIN_PORT);
        let ready = poll(Duration::from_secs(10), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{:?} server exited at start ({status}); log:\n{}",
                    self.kind,
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
            "{:?} server did not accept on {addr}; log:\n{}",
            self.kind,
            self.log_text()
        );
    }

    /// The proxy entry for tpgate's config: Shadowsocks with `method`/`password` through
    /// this plugin.
    pub(crate) fn proxy_yaml(&self, name: &str, method: &str, password: &str) -> String {
        let plugin = match self.kind {
            PluginKind::ObfsHttp => "plugin: obfs, plugin-opts: {mode: http, host: obfs.test}",
            PluginKind::ObfsTls => "plugin: obfs, plugin-opts: {mode: tls, host: obfs.test}",
            PluginKind::V2ray { tls: false } => {
                "plugin: v2ray-plugin, plugin-opts: {mode: websocket, host: v2.test, path: /v2}"
            }
            PluginKind::V2ray { tls: true } => {
                "plugin: v2ray-plugin, plugin-opts: {mode: websocket, host: v2.test, path: /v2, \
                 tls: true, skip-cert-verify: true, mux: true}"
            }
        };
        format!(
            "{{name: {name}, type: ss, server: {}, port: {PLUGIN_PORT}, cipher: {method}, \
             password: \"{password}\", udp: true, {plugin}}}",
            self.host.v4
        )
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PluginServer<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
