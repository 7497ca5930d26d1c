//! Health checks: an HTTP(S) GET of the group's `url` through each member, in the
//! background, never blocking a connection. The delay is the time to the response's status
//! line; a failure or timeout marks the member dead until a later check succeeds.
//! A proxy provider's `health-check` does the same for the provider's proxies, whichever
//! groups use them (also when its list changes), and every group holding one of them
//! takes the verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tpgate_core::config::{HealthCheck, Member, TargetId, Tls};
use tpgate_core::net::Destination;
use tracing::{debug, info};

use super::error::TlsError;
use super::group::DEAD;
use super::tls::TlsClient;
use super::{Group, Outbounds};
use crate::shutdown::Shutdown;

/// Starts one checker per group, and per proxy provider, that has a health check.
pub(crate) fn spawn_all(outbounds: &Arc<Outbounds>, shutdown: &Shutdown) {
    for g in outbounds.groups() {
        if let Some(hc) = g.def.health.clone() {
            tokio::spawn(group_loop(
                outbounds.clone(),
                g.clone(),
                hc,
                shutdown.clone(),
            ));
        }
    }
    for (k, p) in outbounds.config.proxy_providers.iter().enumerate() {
        if let Some(hc) = p.health.clone() {
            let (o, stop) = (outbounds.clone(), shutdown.clone());
            tokio::spawn(provider_loop(o, k, p.name.clone(), hc, stop));
        }
    }
}

/// Checks provider `k`'s proxies every `interval` (when `lazy`, only if a group holding one
/// was used since) and whenever its list changes.
async fn provider_loop(o: Arc<Outbounds>, k: usize, name: String, hc: HealthCheck, stop: Shutdown) {
    let Some(url) = Url::parse(&hc.url) else {
        info!(provider = %name, url = %hc.url, "health check url not usable; no checks");
        return;
    };
    // The list last checked and, per group holding its proxies, its last use then.
    let mut checked: Option<(Vec<Provided>, Vec<GroupUse>)> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        let changed = o.provided_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let proxies = o.provided_ids(k);
        let holders: Vec<Arc<Group>> = o
            .groups()
            .filter(|g| {
                let m = g.members();
                proxies
                    .iter()
                    .any(|(_, id)| m.list.contains(&Member::Target(*id)))
            })
            .cloned()
            .collect();
        let due = tokio::time::Instant::now() >= next;
        let uses: Vec<(String, u64)> = holders
            .iter()
            .map(|g| (g.def.name.clone(), g.last_used()))
            .collect();
        let run = match &checked {
            None => true,
            Some((before, _)) if *before != proxies => true,
            Some((_, used)) => due && (!hc.lazy || *used != uses),
        };
        if run {
            check_provider(&o, &name, &proxies, &holders, &hc, &url).await;
            checked = Some((proxies, uses));
        }
        if due || run {
            if hc.interval.is_zero() {
                next = tokio::time::Instant::now() + Duration::from_secs(365 * 86_400);
            } else {
                next = tokio::time::Instant::now() + hc.interval;
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = changed => {}
            () = stop.wait() => return,
        }
    }
}

/// A group's name and its last use (see `Group::last_used`).
type GroupUse = (String, u64);
/// A provided proxy's name and id.
type Provided = (String, TargetId);

async fn check_provider(
    o: &Outbounds,
    provider: &str,
    proxies: &[(String, TargetId)],
    holders: &[Arc<Group>],
    hc: &HealthCheck,
    url: &Url,
) {
    let expected = hc.expected_status.as_deref();
    let probes = proxies
        .iter()
        .map(|(_, id)| probe_expecting(o, Member::Target(*id), url, hc.timeout, expected));
    let results = futures::future::join_all(probes).await;
    for ((name, id), r) in proxies.iter().zip(results) {
        let was_alive = o.history.last(name).is_some();
        let seen = !o.history.of(name).is_empty();
        o.history.record(name, r);
        let now = r.unwrap_or(DEAD);
        for g in holders {
            g.set_member_delay(Member::Target(*id), now);
        }
        match r {
            None if was_alive || !seen => {
                info!("provider {provider}: proxy {name} failed its health check");
            }
            Some(ms) if !was_alive => info!("provider {provider}: proxy {name} is up ({ms} ms)"),
            _ => debug!("provider {provider}: proxy {name} delay {now}"),
        }
    }
}

async fn group_loop(o: Arc<Outbounds>, g: Arc<Group>, hc: HealthCheck, shutdown: Shutdown) {
    let Some(url) = Url::parse(&hc.url) else {
        info!(group = %g.def.name, url = %hc.url, "health check url not usable; no checks");
        return;
    };
    let mut checked_at: Option<u64> = None;
    loop {
        let used_since = checked_at.is_none_or(|t| g.last_used() > t);
        if !hc.lazy || used_since {
            checked_at = Some(g.now_ms());
            check_group(&o, &g, &url, hc.timeout).await;
        }
        if hc.interval.is_zero() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(hc.interval) => {}
            () = shutdown.wait() => return,
        }
    }
}

async fn check_group(o: &Outbounds, g: &Group, url: &Url, timeout: Duration) {
    // One snapshot: a provider refresh meanwhile replaces the list, not these delays.
    let members = g.members();
    let expected = g
        .def
        .health
        .as_ref()
        .and_then(|h| h.expected_status.as_deref());
    let probes = members
        .list
        .iter()
        .map(|&m| probe_expecting(o, m, url, timeout, expected));
    let results = futures::future::join_all(probes).await;
    for (i, r) in results.into_iter().enumerate() {
        let before = members.delay(i);
        let now = r.unwrap_or(DEAD);
        members.set_delay(i, now);
        let name = o.member_name(members.list[i]);
        o.history.record(&name, r);
        if (before == DEAD) != (now == DEAD) {
            if now == DEAD {
                info!(
                    "group {}: member {name} failed its health check",
                    g.def.name
                );
            } else {
                info!("group {}: member {name} is up ({now} ms)", g.def.name);
            }
        } else {
            debug!("group {}: member {name} delay {now}", g.def.name);
        }
    }
}

/// The delay in ms of a GET of `url` through `member`, or `None`.
pub(crate) async fn probe(
    o: &Outbounds,
    member: Member,
    url: &Url,
    timeout: Duration,
) -> Option<u32> {
    probe_expecting(o, member, url, timeout, None).await
}

/// [`probe`], counting only the statuses of `expected` (a group's `expected-status`) as
/// alive.
async fn probe_expecting(
    o: &Outbounds,
    member: Member,
    url: &Url,
    timeout: Duration,
    expected: Option<&[(u16, u16)]>,
) -> Option<u32> {
    let start = Instant::now();
    let dst = url.destination();
    let pick = o.pick_member(member, &dst);
    let fetch = async {
        let io = o
            .connect(&pick.exit, &dst)
            .await?
            .ok_or(ProbeError::Rejected)?;
        let mut io = if url.https {
            let tls = Tls {
                alpn: Vec::new(),
                sni: Some(url.host.clone()),
                skip_cert_verify: false,
                fingerprint: None,
                reality: None,
            };
            TlsClient::new(&tls, &url.host)?.wrap(io).await?
        } else {
            io
        };
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tpgate\r\nConnection: close\r\n\r\n",
            url.path, url.host_header
        );
        io.write_all(req.as_bytes()).await?;
        let mut head = [0u8; 12];
        io.read_exact(&mut head).await?;
        if !head.starts_with(b"HTTP/1.") {
            return Err(ProbeError::NotHttp);
        }
        let status: Option<u16> = std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok());
        match (expected, status) {
            (None, _) => Ok(()),
            (Some(ranges), Some(s)) if ranges.iter().any(|(a, b)| (*a..=*b).contains(&s)) => Ok(()),
            (Some(_), s) => Err(ProbeError::UnexpectedStatus(s)),
        }
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(())) => Some(
            u32::try_from(start.elapsed().as_millis())
                .unwrap_or(DEAD - 2)
                .max(1),
        ),
        Ok(Err(e)) => {
            debug!("health check via {}: {e}", pick.label);
            None
        }
        Err(_) => None,
    }
}

/// Why a health check's GET through a member failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// The member is REJECT: nothing to connect to.
    #[error("rejected")]
    Rejected,
    /// What came back does not start with an HTTP/1 status line.
    #[error("not an HTTP response")]
    NotHttp,
    /// A status outside the group's `expected-status`.
    #[error("status {0:?} is not an expected-status")]
    UnexpectedStatus(Option<u16>),
    /// The TLS settings for the URL's host could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Connecting through the member, or the exchange itself.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Just enough of a URL for a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
    /// `host[:port]` as the Host header wants it.
    host_header: String,
}

impl Url {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            (false, s.strip_prefix("http://")?)
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(Self {
            https,
            host,
            port,
            path: path.to_string(),
            host_header: authority.to_string(),
        })
    }

    /// `host[:port]` as written, for the Host header.
    pub(crate) fn host_header(&self) -> &str {
        &self.host_header
    }

    pub(crate) fn destination(&self) -> Destination {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => Destination::Addr(std::net::SocketAddr::new(ip, self.port)),
            Err(_) => Destination::Domain(self.host.clone(), self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://203.0.113.2:8080/generate_204").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (false, "203.0.113.2", 8080, "/generate_204")
        );
        let u = Url::parse("https://www.gstatic.com/generate_204").unwrap();
        assert_eq!((u.https, u.port), (true, 443));
        assert_eq!(
            u.destination(),
            Destination::Domain("www.gstatic.com".into(), 443)
        );
        let u = Url::parse("http://[2001:db8:2::2]/x").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.host_header.as_str()),
            ("2001:db8:2::2", 80, "[2001:db8:2::2]")
        );
        assert!(Url::parse("ftp://x/").is_none());
        assert!(Url::parse("http://:80/").is_none());
        assert!(Url::parse("http://h:99999/").is_none());
    }
}
