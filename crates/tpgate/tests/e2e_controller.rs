//! End-to-end: what the WAN side of a gateway can learn from tpgate's DNS server and
//! controller. The DNS server listens on every address (`0.0.0.0:1053`) and the controller
//! on `0.0.0.0:9090` with a secret: the LAN client gets DNS answers and, with the secret, the
//! API; the WAN server gets no DNS answer (UDP or TCP), and from the API only 401s and
//! empty CORS answers. With `dns.allow-wan: true` the WAN is answered too.
//!
//! Needs root.

mod lab;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr as _;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use lab::{poll, tcp_connect, Family, Lab, Netns, PatientRecv, Tpgate};

const DNS_PORT: u16 = 1053;
const API_PORT: u16 = 9090;
const SECRET: &str = "lab+secret/=";
const ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn query(name: &str) -> (u16, Vec<u8>) {
    let id: u16 = rand::random();
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_str(&format!("{name}.")).expect("name"),
            RecordType::A,
        ));
    (id, m.to_vec().expect("encode"))
}

fn answer(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

/// One UDP query from `ns`; `None` without an answer within 2 s.
fn udp_query(ns: &Netns, server: SocketAddr) -> Option<Message> {
    let (id, bytes) = query("router.lan");
    let sock = ns
        .enter(|| UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))))
        .ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    sock.send_to(&bytes, server).ok()?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = sock.recv_from_patiently(&mut buf).ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    (m.id() == id).then_some(m)
}

/// One TCP query from `ns`: `Ok(None)` when the server closed without answering.
fn tcp_query(ns: &Netns, server: SocketAddr) -> std::io::Result<Option<Message>> {
    let (id, bytes) = query("router.lan");
    let mut s = tcp_connect(ns, server)?;
    let len = u16::try_from(bytes.len()).expect("small");
    s.write_all(&len.to_be_bytes())?;
    s.write_all(&bytes)?;
    let mut got = Vec::new();
    // A closed connection (or a reset) is the "nothing" answer.
    let _ = s.read_to_end(&mut got);
    if got.len() < 2 {
        return Ok(None);
    }
    let m = Message::from_vec(&got[2..]).map_err(std::io::Error::other)?;
    Ok((m.id() == id).then_some(m))
}

/// One HTTP/1.1 request from `ns`; (status, headers and body as text).
fn http(ns: &Netns, server: SocketAddr, request: &str) -> (u16, String) {
    let mut s: TcpStream = tcp_connect(ns, server).expect("connect to the controller");
    s.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    (status, text)
}

fn get(ns: &Netns, server: SocketAddr, path: &str, extra: &str) -> (u16, String) {
    http(
        ns,
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{extra}Connection: close\r\n\r\n"),
    )
}

fn config(lab: &Lab, allow_wan: bool) -> String {
    lab.config_text()
        + &format!(
            "external-controller: 0.0.0.0:{API_PORT}\n\
             external-controller-unix: {unix}\n\
             secret: '{SECRET}'\n\
             dns:\n  enable: true\n  listen: 0.0.0.0:{DNS_PORT}\n  allow-wan: {allow_wan}\n  \
             nameserver: ['udp://192.0.2.53:53']\n\
             hosts:\n  router.lan: {ANSWER}\n",
            unix = lab.dir.join("run/api.sock").display()
        )
}

#[test]
fn the_wan_side_gets_no_dns_answers_and_nothing_from_the_api() {
    let Some(lab) = Lab::new("wanapi") else {
        return;
    };
    let v4 = Family::V4.addrs();
    let path = lab.write_file("tpgate.yaml", &config(&lab, false));
    let tp = Tpgate::start(&lab, &path);
    let lan_dns = SocketAddr::new(v4.gw_lan, DNS_PORT);
    let wan_dns = SocketAddr::new(v4.gw_wan, DNS_PORT);

    // The LAN and the gateway itself are answered, over UDP and TCP.
    let m = poll(Duration::from_secs(5), || udp_query(&lab.client, lan_dns))
        .unwrap_or_else(|| panic!("LAN UDP query not answered:\n{}", tp.log_text()));
    assert_eq!(answer(&m), [IpAddr::V4(ANSWER)]);
    let m = tcp_query(&lab.client, lan_dns)
        .expect("tcp")
        .expect("LAN TCP answer");
    assert_eq!(answer(&m), [IpAddr::V4(ANSWER)]);
    let own = SocketAddr::new(v4.gw_wan, DNS_PORT);
    let m = udp_query(&lab.gw, own).expect("the gateway's own query");
    assert_eq!(answer(&m), [IpAddr::V4(ANSWER)]);

    // The WAN is not, even when it asks the LAN address.
    for dst in [wan_dns, lan_dns] {
        assert!(
            udp_query(&lab.server, dst).is_none(),
            "WAN UDP to {dst} answered"
        );
        match tcp_query(&lab.server, dst) {
            Ok(None) | Err(_) => {}
            Ok(Some(m)) => panic!("WAN TCP to {dst} answered: {m:?}"),
        }
    }

    // The controller: from the WAN, 401 without data, and a preflight says nothing.
    let api_wan = SocketAddr::new(v4.gw_wan, API_PORT);
    for path in [
        "/",
        "/version",
        "/proxies",
        "/configs",
        "/connections",
        "/metrics",
        "/rules",
    ] {
        let (status, text) = get(&lab.server, api_wan, path, "");
        assert_eq!(status, 401, "{path}: {text}");
        assert!(
            text.ends_with("{\"message\":\"Unauthorized\"}"),
            "{path}: {text}"
        );
    }
    let (status, text) = get(&lab.server, api_wan, "/proxies?token=wrong", "");
    assert_eq!(status, 401, "{text}");
    let (status, text) = http(
        &lab.server,
        api_wan,
        "OPTIONS /proxies HTTP/1.1\r\nHost: gw\r\nOrigin: http://203.0.113.2\r\n\
         Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 204, "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "a preflight has no body: {text}"
    );
    assert!(!text.contains("proxies\":"), "{text}");

    // The tproxy port, on either of the gateway's addresses: refused like a closed port
    // (a reset for TCP, no answer for UDP), from the WAN as from the LAN.
    for ns in [&lab.server, &lab.client] {
        for ip in [v4.gw_wan, v4.gw_lan] {
            let dst = SocketAddr::new(ip, lab::TPROXY_PORT);
            match tcp_connect(ns, dst) {
                Err(e) => assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "{dst}: {e}"
                ),
                Ok(_) => panic!("{} connected to the tproxy port {dst}", ns.name),
            }
            let sock = ns
                .enter(|| UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))))
                .expect("udp bind");
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            sock.send_to(b"hello", dst).expect("udp send");
            let mut buf = [0u8; 64];
            assert!(
                sock.recv_from_patiently(&mut buf).is_err(),
                "{dst} answered over UDP"
            );
        }
    }

    // The LAN with the secret (URL-encoded in ?token=, as a dashboard's WebSocket sends it)
    // sees everything, including the refused queries.
    let api_lan = SocketAddr::new(v4.gw_lan, API_PORT);
    let (status, text) = get(
        &lab.client,
        api_lan,
        "/version?token=lab%2Bsecret%2F%3D",
        "",
    );
    assert_eq!(status, 200, "{text}");
    let (status, metrics) = get(
        &lab.client,
        api_lan,
        "/metrics",
        &format!("Authorization: Bearer {SECRET}\r\n"),
    );
    assert_eq!(status, 200, "{metrics}");
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tpgate_dns_queries_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no refused counter:\n{metrics}"));
    assert!(refused >= 4.0, "{refused}");

    // The unix socket needs no secret (as mihomo), and only root and its group may open it.
    let sock = lab.dir.join("run/api.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sock).expect("socket file").permissions(),
    );
    assert_eq!(mode & 0o777, 0o660);
    let mut u = std::os::unix::net::UnixStream::connect(&sock).expect("unix socket");
    u.write_all(b"GET /configs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    u.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"mode\":\"rule\""), "{text}");
    drop(tp);

    // `dns.allow-wan: true`: the WAN is answered.
    let path = lab.write_file("open.yaml", &config(&lab, true));
    let tp = Tpgate::start(&lab, &path);
    let m = poll(Duration::from_secs(5), || udp_query(&lab.server, wan_dns))
        .unwrap_or_else(|| panic!("allow-wan: WAN query not answered:\n{}", tp.log_text()));
    assert_eq!(answer(&m), [IpAddr::V4(ANSWER)]);
}
