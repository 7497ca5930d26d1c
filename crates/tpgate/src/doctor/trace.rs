//! `doctor --trace`: follow one flow with nftables tracing. doctor's only write: a table
//! `inet tpgate_doctor_trace` (owner flag, so the kernel removes it if doctor dies) whose
//! raw-priority chains set `nftrace` on packets of the flow; `nft monitor trace` reports
//! every rule they meet. The table is deleted before returning.

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tpgate_core::net::Network;
use tpgate_sys::Nft;

const TABLE: &str = "tpgate_doctor_trace";
/// `nft monitor` has no readiness signal; it subscribes within milliseconds.
const MONITOR_START: Duration = Duration::from_millis(500);
/// Time for the last events of an injected flow to arrive.
const SETTLE: Duration = Duration::from_secs(1);

/// What to follow.
pub(super) struct Flow {
    pub(super) proto: Network,
    pub(super) dst: SocketAddr,
    pub(super) from: Option<IpAddr>,
    pub(super) wait: Duration,
}

fn script(f: &Flow) -> String {
    let (fam, l4) = (
        if f.dst.is_ipv4() { "ip" } else { "ip6" },
        f.proto.to_string(),
    );
    let mut m = format!("{fam} daddr {} {l4} dport {}", f.dst.ip(), f.dst.port());
    if let Some(src) = f.from {
        m = format!("{fam} saddr {src} {m}");
    }
    format!(
        "table inet {TABLE} {{\n flags owner\n \
         chain pre {{ type filter hook prerouting priority -301; policy accept; {m} meta nftrace set 1; }}\n \
         chain out {{ type filter hook output priority -301; policy accept; {m} meta nftrace set 1; }}\n}}\n"
    )
}

/// Runs the trace and returns the report; `Ok((report, saw_events))`.
pub(super) fn run(f: &Flow) -> Result<(String, bool)> {
    let mut nft = Nft::new().context("opening libnftables")?;
    nft.run(&script(f))
        .context("installing the trace table (needs root)")?;
    let result = capture(f);
    if let Err(e) = nft.run(&format!("delete table inet {TABLE}")) {
        tracing::warn!(error = %e, "removing the trace table; it goes when doctor exits (owner flag)");
    }
    let raw = result?;
    Ok(render(f, &raw))
}

fn capture(f: &Flow) -> Result<String> {
    let mut child = Command::new("nft")
        .args(["monitor", "trace"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `nft monitor trace`")?;
    std::thread::sleep(MONITOR_START);
    match f.from {
        None => inject(f),
        Some(src) => {
            eprintln!(
                "waiting {}s for a {} packet from {src} to {} (start the connection on that host now)",
                f.wait.as_secs(),
                f.proto,
                f.dst
            );
            std::thread::sleep(f.wait);
        }
    }
    std::thread::sleep(SETTLE);
    // Our own child, by its handle.
    let _ = child.kill();
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)
            .context("reading nft monitor output")?;
    }
    let _ = child.wait();
    Ok(out)
}

/// A local flow: one connection (TCP) or datagram (UDP) from this host.
fn inject(f: &Flow) {
    match f.proto {
        Network::Tcp => match TcpStream::connect_timeout(&f.dst, Duration::from_secs(2)) {
            Ok(_) => eprintln!("test connection to {} established", f.dst),
            Err(e) => eprintln!("test connection to {}: {e}", f.dst),
        },
        Network::Udp => {
            let bind: SocketAddr = if f.dst.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .expect("literal");
            if let Err(e) =
                UdpSocket::bind(bind).and_then(|s| s.send_to(b"tpgate doctor trace", f.dst))
            {
                eprintln!("test datagram to {}: {e}", f.dst);
            }
        }
    }
}

/// Packets shown in full; a long flow's later packets add nothing new.
const MAX_PACKETS: usize = 8;

/// Groups `trace id ID FAMILY TABLE CHAIN ...` lines by packet (one id per packet and
/// pass through the stack) and names where the flow was handed to TPROXY.
fn render(f: &Flow, raw: &str) -> (String, bool) {
    let from = f.from.map(|s| format!(" from {s}")).unwrap_or_default();
    let mut out = format!("trace of {} {}{from}\n", f.proto, f.dst);
    let mut ids: Vec<&str> = Vec::new();
    let mut tproxy = Vec::new();
    for line in raw.lines() {
        let Some(rest) = line.strip_prefix("trace id ") else {
            continue;
        };
        let Some((id, ev)) = rest.split_once(' ') else {
            continue;
        };
        let mut words = ev.splitn(4, ' ');
        let (Some(fam), Some(table), Some(chain), Some(what)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let what = what.trim_end();
        if what.contains("tproxy") {
            tproxy.push(format!("{fam} {table} {chain}: {what}"));
        }
        let new = !ids.contains(&id);
        if new {
            ids.push(id);
        }
        if ids.len() > MAX_PACKETS {
            continue;
        }
        match what.strip_prefix("packet: ") {
            Some(p) if new => out.push_str(&format!("\npacket {}: {p}\n", ids.len())),
            Some(_) => {}
            None if table == TABLE => {}
            None => out.push_str(&format!("  {fam} {table} {chain}: {what}\n")),
        }
    }
    if ids.len() > MAX_PACKETS {
        out.push_str(&format!(
            "\n... and {} more packets\n",
            ids.len() - MAX_PACKETS
        ));
    }
    if ids.is_empty() {
        out.push_str("\nno packet of this flow was seen (is the address routed here? for --from, did the host send one?)\n");
    } else if tproxy.is_empty() {
        out.push_str("\nresult: no TPROXY rule matched: this flow is NOT intercepted\n");
    } else {
        out.push_str(&format!("\nresult: intercepted by TPROXY: {}\n", tproxy[0]));
    }
    (out, !ids.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft monitor trace` lines as nft 1.0.6 printed them for a local connection.
    const RAW: &str = r#"trace id 55870ace inet tpgate_doctor_trace out packet: oif "wan0" ip saddr 203.0.113.1 ip daddr 203.0.113.2 tcp sport 39308 tcp dport 8080 tcp flags == syn
trace id 55870ace inet tpgate_doctor_trace out rule ip daddr 203.0.113.2 tcp dport 8080 meta nftrace set 1 (verdict continue)
trace id 55870ace inet tpgate output packet: oif "wan0" ip saddr 203.0.113.1 ip daddr 203.0.113.2 tcp sport 39308 tcp dport 8080 tcp flags == syn
trace id 55870ace inet tpgate output rule meta l4proto { tcp, udp } meta mark set 0x00000001 (verdict continue)
trace id 2cad8ce9 inet tpgate prerouting packet: iif "lo" ip saddr 203.0.113.1 ip daddr 203.0.113.2 tcp sport 39308 tcp dport 8080 tcp flags == syn
trace id 2cad8ce9 inet tpgate prerouting rule meta l4proto { tcp, udp } tproxy to :7893 meta mark set 0x00000001 accept (verdict accept)
"#;

    fn flow() -> Flow {
        Flow {
            proto: Network::Tcp,
            dst: "203.0.113.2:8080".parse().unwrap(),
            from: None,
            wait: Duration::ZERO,
        }
    }

    #[test]
    fn groups_by_packet_and_names_the_tproxy_rule() {
        let (text, seen) = render(&flow(), RAW);
        assert!(seen);
        assert!(text.contains("\npacket 1: oif \"wan0\""), "{text}");
        assert!(text.contains("\npacket 2: iif \"lo\""), "{text}");
        // doctor's own table is not a step of the flow.
        assert!(!text.contains("nftrace set 1"), "{text}");
        assert!(text.ends_with("result: intercepted by TPROXY: inet tpgate prerouting: rule meta l4proto { tcp, udp } tproxy to :7893 meta mark set 0x00000001 accept (verdict accept)\n"), "{text}");
    }

    #[test]
    fn not_intercepted_and_nothing_seen() {
        let raw: String = RAW.lines().take(4).map(|l| format!("{l}\n")).collect();
        assert!(render(&flow(), &raw).0.contains("NOT intercepted"));
        let (text, seen) = render(&flow(), "");
        assert!(!seen && text.contains("no packet of this flow was seen"));
    }

    #[test]
    fn script_matches_the_flow_in_both_hooks() {
        let f = Flow {
            from: Some("198.51.100.2".parse().unwrap()),
            ..flow()
        };
        let s = script(&f);
        assert!(s.contains("flags owner"));
        assert_eq!(
            s.matches(
                "ip saddr 198.51.100.2 ip daddr 203.0.113.2 tcp dport 8080 meta nftrace set 1"
            )
            .count(),
            2,
            "{s}"
        );
    }
}
