//! tpgate's external controller as a client sees it, from inside the lab's gateway
//! namespace: `curl` (as the README shows it) with the Bearer secret, reading the status code
//! and the JSON body; and waiting until a group reports a given member as `now`. Also the
//! lab's health-check target address, which the groups' `url` points at.
//!
//! Deliberately not here: the config text ([`super::proxy_config`]), the HTTP server that
//! answers the health checks ([`super::Http204Server`]).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{poll, Family, Lab, CONTROLLER};

/// The port of the lab's health-check server on the WAN server (80 is the echo server's).
pub(crate) const HEALTH_PORT: u16 = 8080;

/// Where the lab's [`super::Http204Server`] for health checks listens (IPv4 server address).
pub(crate) fn health_addr() -> SocketAddr {
    SocketAddr::new(Family::V4.addrs().server, HEALTH_PORT)
}

/// The `url` of a lab group's health check.
pub(crate) fn health_url() -> String {
    format!("http://{}/generate_204", health_addr())
}

/// One answer of the controller.
#[derive(Debug)]
pub(crate) struct ApiReply {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl ApiReply {
    /// The body as JSON; panics (with the body) when it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("controller answered non-JSON ({e}): {:?}", self.body))
    }
}

/// A client of the controller at [`CONTROLLER`] in `lab`'s gateway.
pub(crate) struct Api<'lab> {
    lab: &'lab Lab,
    secret: Option<String>,
}

impl<'lab> Api<'lab> {
    /// Sends `Authorization: Bearer <secret>` when `secret` is given.
    pub(crate) fn new(lab: &'lab Lab, secret: Option<&str>) -> Self {
        Self {
            lab,
            secret: secret.map(str::to_owned),
        }
    }

    /// One request; `None` when curl could not connect or timed out (the daemon is gone).
    pub(crate) fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Option<ApiReply> {
        let url = format!("http://{CONTROLLER}{path}");
        let auth = self
            .secret
            .as_ref()
            .map(|s| format!("Authorization: Bearer {s}"));
        let mut args = vec![
            "-sS",
            "-m",
            "10",
            "-X",
            method,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        if let Some(b) = body {
            args.extend(["--data-binary", b]);
        }
        args.push(&url);
        let out = self.lab.gw.exec("curl", &args);
        if !out.success() {
            return None;
        }
        let (body, code) = out.stdout.rsplit_once('\n')?;
        Some(ApiReply {
            status: code.trim().parse().ok()?,
            body: body.to_owned(),
        })
    }

    /// Like [`Self::try_request`], panicking when there is no answer at all.
    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&str>) -> ApiReply {
        self.try_request(method, path, body)
            .unwrap_or_else(|| panic!("no answer from the controller to {method} {path}"))
    }

    /// `GET /proxies/<name>` as JSON; panics unless 200.
    pub(crate) fn proxy(&self, name: &str) -> Value {
        let r = self.request("GET", &format!("/proxies/{}", segment(name)), None);
        assert_eq!(r.status, 200, "GET /proxies/{name}: {}", r.body);
        r.json()
    }

    /// The member group `name` uses now (the `now` field).
    pub(crate) fn now(&self, group: &str) -> String {
        self.proxy(group)["now"]
            .as_str()
            .unwrap_or_else(|| panic!("group {group} has no `now`"))
            .to_owned()
    }

    /// `PUT /proxies/<group>` with `{"name": member}`; returns the status.
    pub(crate) fn select(&self, group: &str, member: &str) -> ApiReply {
        let body = serde_json::json!({ "name": member }).to_string();
        self.request("PUT", &format!("/proxies/{}", segment(group)), Some(&body))
    }

    /// Waits up to `limit` until `group` reports `member` as `now`; returns how long that
    /// took, or panics with what it reported last.
    pub(crate) fn wait_now(&self, group: &str, member: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut last = String::new();
        let found = poll(limit, || {
            last = self.now(group);
            (last == member).then_some(())
        });
        assert!(
            found.is_some(),
            "group {group} did not move to {member} within {limit:?}; it says {last}"
        );
        start.elapsed()
    }

    /// `GET /proxies/<name>/delay?url=<url>&timeout=<ms>`: the measured delay in ms, or the
    /// status code when the controller reports no delay.
    pub(crate) fn delay(&self, name: &str, url: &str, timeout_ms: u64) -> Result<u64, u16> {
        let r = self.request(
            "GET",
            &format!(
                "/proxies/{}/delay?url={url}&timeout={timeout_ms}",
                segment(name)
            ),
            None,
        );
        match r.json()["delay"].as_u64() {
            Some(ms) if r.status == 200 => Ok(ms),
            _ => Err(r.status),
        }
    }
}

/// `name` percent-encoded as one path segment (mihomo names often hold spaces and emoji).
pub(crate) fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The address a flow through the gateway itself (DIRECT) shows to the server.
pub(crate) fn gateway_egress(family: Family) -> IpAddr {
    family.addrs().gw_wan
}
