//! `type: tuic` (v5: `uuid` and `password`): mihomo's keys -> [`TuicOpts`]. TUIC v4 (a
//! `token` instead) is skipped with a warning.

use std::time::Duration;

use super::proxies::{tls_with_alpn, Fields};
use super::yaml::Pos;
use super::{value, CongestionControl, Diags, ProxyKind, TuicOpts, UdpRelayMode, Uuid};

/// mihomo's default `heartbeat-interval`, in milliseconds.
const DEFAULT_HEARTBEAT_MS: u64 = 10_000;

pub(super) fn tuic(
    f: &Fields<'_>,
    at: Pos,
    who: &str,
    skip: &mut bool,
    d: &mut Diags,
) -> Option<ProxyKind> {
    if f.node("uuid").is_none() {
        if let Some(node) = f.node("token") {
            if !*skip {
                let message = format!(
                    "TUIC v4 (`token`) is not supported by tpgate, only v5 (`uuid` and `password`); {who} skipped"
                );
                d.warn(node.pos, &f.path("token"), message);
            }
            *skip = true;
            return None;
        }
    }
    let uuid = f.required(d, at, "uuid", |n| {
        value::string(n)?.parse::<Uuid>().map_err(|e| e.to_string())
    })?;
    let password = f.required(d, at, "password", value::text)?;
    let mut tls = tls_with_alpn(f, d);
    if tls.alpn.is_empty() {
        tls.alpn = vec!["h3".to_owned()];
    }
    let congestion = f
        .get(d, "congestion-controller", |n| {
            value::keyword(
                n,
                &[
                    ("cubic", CongestionControl::Cubic),
                    ("bbr", CongestionControl::Bbr),
                    ("new_reno", CongestionControl::NewReno),
                    ("new-reno", CongestionControl::NewReno),
                ],
            )
        })
        .unwrap_or(CongestionControl::Cubic);
    let udp_relay_mode = f
        .get(d, "udp-relay-mode", |n| {
            value::keyword(
                n,
                &[
                    ("native", UdpRelayMode::Native),
                    ("quic", UdpRelayMode::Quic),
                ],
            )
        })
        .unwrap_or(UdpRelayMode::Native);
    let heartbeat = f
        .get(d, "heartbeat-interval", |n| value::uint(n, 3_600_000))
        .filter(|ms| *ms > 0)
        .unwrap_or(DEFAULT_HEARTBEAT_MS);
    Some(ProxyKind::Tuic(TuicOpts {
        uuid,
        password,
        tls,
        congestion,
        udp_relay_mode,
        reduce_rtt: f.get(d, "reduce-rtt", value::boolean).unwrap_or(false),
        disable_sni: f.get(d, "disable-sni", value::boolean).unwrap_or(false),
        heartbeat: Duration::from_millis(heartbeat),
    }))
}
