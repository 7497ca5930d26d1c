//! End-to-end: tpgate's built-in DNS server in the lab. A real `dnsmasq` in the server
//! namespace is the upstream nameserver; the LAN client asks tpgate (on the gateway's LAN
//! address) with hickory-built queries over UDP and TCP. fake-ip: answers from the fake range,
//! stable per name and across a restart, real answers for `fake-ip-filter` names, and flows
//! to a fake address routed by the NAME (DOMAIN-SUFFIX without sniffing) to DIRECT (resolved
//! for real) or to an upstream that receives the name. redir-host: real answers, bare-address
//! flows regain their name, and the cache (positive and NXDOMAIN) spares the upstream.
//!
//! Needs root and `dnsmasq` (apt-get install dnsmasq); microsocks for the upstream test.

mod lab;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use lab::{
    has_field, have_program, poll, tcp_connect, tpgate_oneshot, udp_exchange, Family, Lab, Netns,
    NetnsHosts, PatientRecv, ProcKind, ProcUpstream, TcpEchoServer, Tpgate, UdpEchoServer,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A non-sniffed port: any name a flow gets there comes from DNS.
const PORT: u16 = 9000;

/// `dnsmasq` in a namespace, answering the lab's names; killed by pid on drop.
struct Dnsmasq {
    child: Child,
    log: PathBuf,
}

impl Dnsmasq {
    fn start(lab: &Lab, ns: &Netns, listen: IpAddr, records: &[(&str, Option<IpAddr>)]) -> Self {
        let log = lab.dir.join("dnsmasq.log");
        let pid = lab.dir.join("dnsmasq.pid");
        let mut args = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            ns.name.clone(),
            "dnsmasq".to_owned(),
            "--no-daemon".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--user=root".to_owned(),
            "--bind-interfaces".to_owned(),
            format!("--listen-address={listen}"),
            "--port=53".to_owned(),
            "--log-queries".to_owned(),
            format!("--log-facility={}", log.display()),
            format!("--pid-file={}", pid.display()),
            // dnsmasq's own cache off: every query it logs is one tpgate sent.
            "--cache-size=0".to_owned(),
        ];
        for (name, ip) in records {
            // `--address=/name/` alone answers NXDOMAIN.
            let ip = ip.map_or_else(String::new, |ip| ip.to_string());
            args.push(format!("--address=/{name}/{ip}"));
        }
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        let me = Self { child, log };
        // Ready once it answers (each query waits 3 s: a busy machine gets several).
        let server = SocketAddr::new(listen, 53);
        poll(Duration::from_secs(15), || {
            query_udp(ns, server, "ready.invalid", RecordType::A).map(|_| ())
        })
        .expect("dnsmasq did not start");
        me
    }

    /// How many queries of `kind` for `name` dnsmasq received.
    fn queries(&self, name: &str, kind: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!("query[{kind}] {name} ");
        text.lines().filter(|l| l.contains(&needle)).count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query_bytes(name: &str, kind: RecordType) -> (u16, Vec<u8>) {
    let id: u16 = rand::random();
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_str(&format!("{name}.")).expect("name"),
            kind,
        ));
    (id, m.to_vec().expect("encode"))
}

/// One query over UDP from inside `ns`; `None` without an answer within 3 s.
fn query_udp(ns: &Netns, server: SocketAddr, name: &str, kind: RecordType) -> Option<Message> {
    let (id, bytes) = query_bytes(name, kind);
    let sock = ns
        .enter(|| UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))))
        .ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    sock.send_to(&bytes, server).ok()?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = sock.recv_from_patiently(&mut buf).ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    (m.id() == id).then_some(m)
}

/// One query over TCP (length-prefixed) from inside `ns`.
fn query_tcp(ns: &Netns, server: SocketAddr, name: &str, kind: RecordType) -> Option<Message> {
    let (id, bytes) = query_bytes(name, kind);
    let mut s: TcpStream = tcp_connect(ns, server).ok()?;
    let len = u16::try_from(bytes.len()).ok()?;
    s.write_all(&len.to_be_bytes()).ok()?;
    s.write_all(&bytes).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).ok()?;
    let m = Message::from_vec(&buf).ok()?;
    (m.id() == id).then_some(m)
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The single address tpgate answers for `name` over UDP (retried until it answers).
fn resolve(tp: &Tpgate<'_>, dns: SocketAddr, name: &str) -> IpAddr {
    let m = poll(Duration::from_secs(5), || {
        query_udp(&tp.lab().client, dns, name, RecordType::A)
    })
    .unwrap_or_else(|| panic!("no DNS answer for {name}:\n{}", tp.log_text()));
    let got = addrs(&m);
    assert_eq!(got.len(), 1, "{name}: {m:?}");
    got[0]
}

fn in_fake_range(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 198 && o[1] == 18 && !(o[2] == 0 && o[3] <= 1) && !(o[2] == 255 && o[3] == 255)
        }
        IpAddr::V6(_) => false,
    }
}

/// Sends `data` over TCP from the client to `dst` and reads the echo.
fn echo(lab: &Lab, dst: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    let mut s = tcp_connect(&lab.client, dst).ok()?;
    s.write_all(data).ok()?;
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).ok()?;
    Some(got)
}

fn dns_section(mode: &str, upstream: IpAddr) -> String {
    format!(
        "dns:\n  enable: true\n  listen: 0.0.0.0:53\n  ipv6: true\n  enhanced-mode: {mode}\n  \
         fake-ip-range: 198.18.0.1/16\n  fake-ip-filter: ['+.lan']\n  \
         nameserver: ['udp://{upstream}:53']\n"
    )
}

fn flow_line(tp: &Tpgate<'_>, dst: SocketAddr, host: &str) -> String {
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains(&format!(" -> {dst} ")) && has_field(l, "host", host)
    })
    .unwrap_or_else(|| panic!("no flow line to {dst} with host={host}:\n{}", tp.log_text()))
}

#[test]
fn fake_ip_answers_route_by_name_and_survive_a_restart() {
    if !have_program("dnsmasq") {
        eprintln!("SKIPPED: dnsmasq is not installed");
        return;
    }
    let Some(lab) = Lab::new("dnsfake") else {
        return;
    };
    let v4 = Family::V4.addrs();
    let ns = Dnsmasq::start(
        &lab,
        &lab.server,
        v4.server,
        &[
            ("real.example", Some(v4.server)),
            ("nas.lan", Some(v4.server)),
            ("blocked.example", Some(v4.server)),
        ],
    );
    let text = lab.proxy_config_text(
        &[],
        &[],
        &[
            "DOMAIN-SUFFIX,blocked.example,REJECT",
            "DOMAIN-SUFFIX,real.example,DIRECT",
            "MATCH,REJECT",
        ],
    ) + &dns_section("fake-ip", v4.server);
    let config = lab.write_file("tpgate.yaml", &text);
    let mut tp = Tpgate::start(&lab, &config);
    let dns = SocketAddr::new(v4.gw_lan, 53);

    // fake answers, one address per name, the same over UDP and TCP
    let fake = resolve(&tp, dns, "real.example");
    assert!(in_fake_range(fake), "{fake}");
    assert_eq!(resolve(&tp, dns, "real.example"), fake);
    let tcp = query_tcp(&lab.client, dns, "real.example", RecordType::A).expect("tcp answer");
    assert_eq!(addrs(&tcp), [fake]);
    let other = resolve(&tp, dns, "blocked.example");
    assert!(in_fake_range(other) && other != fake, "{other}");
    // no fake-ip-range6: AAAA is answered empty, so clients use the fake A
    let aaaa = query_udp(&lab.client, dns, "real.example", RecordType::AAAA).expect("aaaa");
    assert_eq!(aaaa.response_code(), ResponseCode::NoError);
    assert!(addrs(&aaaa).is_empty(), "{aaaa:?}");
    // fake-ip-filter: the real answer, from dnsmasq
    assert_eq!(resolve(&tp, dns, "nas.lan"), v4.server);
    assert_eq!(ns.queries("nas.lan", "A"), 1);
    assert_eq!(
        ns.queries("real.example", "A"),
        0,
        "fake answers ask nobody"
    );

    // a flow to the fake address: routed by the name (no sniffing on this port), DIRECT to
    // the real address, which tpgate resolves itself
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, PORT));
    let to_fake = SocketAddr::new(fake, PORT);
    assert_eq!(
        echo(&lab, to_fake, b"hello").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(server.wait_peers(1)[0].ip(), v4.gw_wan);
    let line = flow_line(&tp, to_fake, "real.example");
    assert!(has_field(&line, "action", "DIRECT"), "{line}");
    assert!(line.contains("DOMAIN-SUFFIX,real.example,DIRECT"), "{line}");
    // the rule on the name of the other fake address rejects
    assert!(echo(&lab, SocketAddr::new(other, PORT), b"x").is_none());
    let line = flow_line(&tp, SocketAddr::new(other, PORT), "blocked.example");
    assert!(has_field(&line, "action", "REJECT"), "{line}");
    // a fake address nobody was given leads nowhere: refused
    let unknown = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 200, 7)), PORT);
    assert!(echo(&lab, unknown, b"x").is_none());
    tp.wait_for_line(Duration::from_secs(5), |l| {
        l.contains(&format!(" -> {unknown} ")) && l.contains("stands for no name")
    })
    .unwrap_or_else(|| panic!("no refusal logged:\n{}", tp.log_text()));

    // UDP to a fake address, DIRECT: resolved for real too
    let udp = UdpEchoServer::start(&lab.server, SocketAddr::new(v4.server, PORT + 1));
    let got = udp_exchange(
        &lab.client,
        Family::V4,
        SocketAddr::new(fake, PORT + 1),
        b"ping",
        Duration::from_secs(3),
    )
    .expect("udp exchange");
    let (from, data) = got
        .reply
        .unwrap_or_else(|| panic!("no UDP echo:\n{}", tp.log_text()));
    assert_eq!(
        (from, data.as_slice()),
        (SocketAddr::new(fake, PORT + 1), &b"ping"[..])
    );
    assert_eq!(udp.peers()[0].ip(), v4.gw_wan);

    // restart: the mapping is persisted, the client's cached answer keeps working
    tp.terminate();
    drop(tp);
    let tp = Tpgate::start(&lab, &config);
    // straight to the old address, as a client with a cached answer does
    assert_eq!(
        echo(&lab, to_fake, b"again").as_deref(),
        Some(&b"again"[..])
    );
    flow_line(&tp, to_fake, "real.example");
    assert_eq!(resolve(&tp, dns, "real.example"), fake);
    assert_eq!(resolve(&tp, dns, "blocked.example"), other);
}

/// A LAN client resolves through the hijacked DNS (it asks the WAN's server; tpgate answers
/// with a fake address), connects, and a DOMAIN-SUFFIX rule sends the flow to an upstream
/// proxy, which gets the NAME: its hosts file maps the name to the server's IPv6 address, so
/// the server seeing the upstream over IPv6 proves it resolved the name itself (tpgate only
/// ever saw 198.18.x.x).
#[test]
fn fake_ip_flow_through_an_upstream_carries_the_name() {
    if !have_program("dnsmasq") || !have_program("microsocks") {
        eprintln!("SKIPPED: dnsmasq or microsocks is not installed");
        return;
    }
    let Some(lab) = Lab::with_wan_hosts("dnsup", 1) else {
        return;
    };
    let v4 = Family::V4.addrs();
    let v6 = Family::V6.addrs();
    let _ns = Dnsmasq::start(
        &lab,
        &lab.server,
        v4.server,
        &[("proxied.example", Some(v4.server))],
    );
    let _hosts = NetnsHosts::write(
        &lab.hosts[0].ns.name,
        &format!("127.0.0.1 localhost\n{} proxied.example\n", v6.server),
    );
    let up = ProcUpstream::start(&lab, 0, ProcKind::Microsocks { auth: None });
    let text = lab
        .proxy_config_text(
            &[up.proxy_yaml("up")],
            &[],
            &["DOMAIN-SUFFIX,proxied.example,up", "MATCH,REJECT"],
        )
        .replacen("intercept:\n", "intercept:\n  dns-hijack: true\n", 1)
        + &dns_section("fake-ip", v4.server);
    let config = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &config);
    // The client asks the WAN's own DNS server (dnsmasq, which knows the real address):
    // hijacked, the answer is tpgate's fake one.
    let dns = SocketAddr::new(v4.server, 53);
    let fake = resolve(&tp, dns, "proxied.example");
    assert!(in_fake_range(fake), "the query was not hijacked: {fake}");
    let reached = TcpEchoServer::start(&lab.server, SocketAddr::new(v6.server, PORT));
    let to_fake = SocketAddr::new(fake, PORT);
    let got = poll(Duration::from_secs(5), || echo(&lab, to_fake, b"via"))
        .unwrap_or_else(|| panic!("no echo through the upstream:\n{}", tp.log_text()));
    assert_eq!(got, b"via");
    assert_eq!(reached.wait_peers(1)[0].ip(), up.egress(Family::V6));
    let line = flow_line(&tp, to_fake, "proxied.example");
    assert!(has_field(&line, "action", "up"), "{line}");
}

#[test]
fn redir_host_maps_addresses_back_to_names_and_caches() {
    if !have_program("dnsmasq") {
        eprintln!("SKIPPED: dnsmasq is not installed");
        return;
    }
    let Some(lab) = Lab::new("dnsredir") else {
        return;
    };
    let v4 = Family::V4.addrs();
    let ns = Dnsmasq::start(
        &lab,
        &lab.server,
        v4.server,
        &[("real.example", Some(v4.server)), ("missing.example", None)],
    );
    let text = lab.proxy_config_text(
        &[],
        &[],
        &["DOMAIN-SUFFIX,real.example,DIRECT", "MATCH,REJECT"],
    ) + &dns_section("redir-host", v4.server);
    let config = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &config);
    let dns = SocketAddr::new(v4.gw_lan, 53);

    // real answers; the second comes from tpgate's cache
    assert_eq!(resolve(&tp, dns, "real.example"), v4.server);
    let again = query_tcp(&lab.client, dns, "real.example", RecordType::A).expect("tcp");
    assert_eq!(addrs(&again), [v4.server]);
    assert_eq!(
        ns.queries("real.example", "A"),
        1,
        "the cache answered the second"
    );

    // NXDOMAIN, cached as well
    for _ in 0..2 {
        let m = query_udp(&lab.client, dns, "missing.example", RecordType::A).expect("answer");
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
    }
    assert_eq!(
        ns.queries("missing.example", "A"),
        1,
        "NXDOMAIN was not cached"
    );

    // a connection to the bare address regains the name and matches the domain rule
    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, PORT));
    let dst = SocketAddr::new(v4.server, PORT);
    assert_eq!(echo(&lab, dst, b"named").as_deref(), Some(&b"named"[..]));
    assert_eq!(server.wait_peers(1)[0].ip(), v4.gw_wan);
    let line = flow_line(&tp, dst, "real.example");
    assert!(line.contains("DOMAIN-SUFFIX,real.example,DIRECT"), "{line}");
}

/// A tiny DNS-over-TLS and DNS-over-HTTPS server (rustls, throwaway rcgen certificate) in
/// the server namespace. It answers every A query with the server's address itself, keeps
/// connections open for more queries (a thread each), and records what it saw: the SNI,
/// the HTTP request line, the names asked, and how many connections it accepted.
struct EncryptedDns {
    seen: Arc<Mutex<Vec<String>>>,
    /// Connections accepted on the DoT and the DoH port.
    accepted: [Arc<AtomicUsize>; 2],
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const DOT_PORT: u16 = 853;
const DOH_PORT: u16 = 8443;

impl EncryptedDns {
    fn start(ns: &Netns, ip: IpAddr, answer: IpAddr) -> Self {
        let ck =
            rcgen::generate_simple_self_signed(vec!["dns.test".to_owned()]).expect("certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .expect("server config"),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (port, http) in [(DOT_PORT, false), (DOH_PORT, true)] {
            let listener = ns
                .enter(|| std::net::TcpListener::bind(SocketAddr::new(ip, port)))
                .expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            let (cfg, seen, stop) = (cfg.clone(), seen.clone(), stop.clone());
            let count = accepted[usize::from(http)].clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((tcp, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = tcp.set_nonblocking(false);
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                        continue;
                    };
                    let seen = seen.clone();
                    // Detached: it ends when the client closes or goes quiet for 10 s.
                    std::thread::spawn(move || {
                        let mut tls = rustls::StreamOwned::new(conn, tcp);
                        while serve_one(&mut tls, http, answer, &seen).is_ok() {}
                    });
                }
            }));
        }
        Self {
            seen,
            accepted,
            stop,
            threads,
        }
    }

    /// Connections accepted so far: (DoT, DoH).
    fn accepted(&self) -> (usize, usize) {
        let [dot, doh] = &self.accepted;
        (dot.load(Ordering::SeqCst), doh.load(Ordering::SeqCst))
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for EncryptedDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One query on an accepted TLS stream: length-framed (DoT) or an HTTP/1.1 POST (DoH),
/// answered with the connection kept open.
fn serve_one<S: Read + Write>(
    tls: &mut rustls::StreamOwned<rustls::ServerConnection, S>,
    http: bool,
    answer: IpAddr,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let query = if http {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            tls.read_exact(&mut b)?;
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        seen.lock()
            .expect("seen")
            .push(format!("http {request_line}"));
        let mut body = vec![0u8; len];
        tls.read_exact(&mut body)?;
        body
    } else {
        let mut len = [0u8; 2];
        tls.read_exact(&mut len)?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tls.read_exact(&mut body)?;
        body
    };
    let sni = tls.conn.server_name().unwrap_or("-").to_owned();
    let q = Message::from_vec(&query).map_err(std::io::Error::other)?;
    let name = q.queries()[0].name().to_ascii();
    seen.lock()
        .expect("seen")
        .push(format!("query {name} sni={sni}"));
    let mut reply = Message::new();
    reply
        .set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_available(true)
        .add_queries(q.queries().iter().cloned());
    if let (IpAddr::V4(a), RecordType::A) = (answer, q.queries()[0].query_type()) {
        reply.add_answer(hickory_proto::rr::Record::from_rdata(
            q.queries()[0].name().clone(),
            60,
            RData::A(hickory_proto::rr::rdata::A(a)),
        ));
    }
    let bytes = reply.to_vec().map_err(std::io::Error::other)?;
    if http {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/dns-message\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        );
        tls.write_all(head.as_bytes())?;
        tls.write_all(&bytes)?;
    } else {
        let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
        tls.write_all(&len.to_be_bytes())?;
        tls.write_all(&bytes)?;
    }
    tls.flush()?;
    Ok(())
}

/// DoT and DoH upstreams, chosen by nameserver-policy, and `fallback` when the policy's
/// server refuses: every answer comes over TLS from the in-test server, with the SNI and
/// the URL path the config asked for.
#[test]
fn dot_doh_policy_and_fallback() {
    let Some(lab) = Lab::new("dnstls") else {
        return;
    };
    let v4 = Family::V4.addrs();
    let server = EncryptedDns::start(&lab.server, v4.server, v4.server);
    let s = v4.server;
    let text = lab.proxy_config_text(&[], &[], &["MATCH,DIRECT"])
        + &format!(
            "dns:\n  enable: true\n  listen: 0.0.0.0:53\n  enhanced-mode: redir-host\n  \
             nameserver: ['tls://{s}:{DOT_PORT}#sni=dot.test&skip-cert-verify=true']\n  \
             fallback: ['https://{s}:{DOH_PORT}/fb-query#skip-cert-verify=true']\n  \
             nameserver-policy:\n    \
               '+.doh.example': ['https://{s}:{DOH_PORT}/custom-path#skip-cert-verify=true']\n    \
               '+.broken.example': ['tcp://{s}:5399']\n"
        );
    let config = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &config);
    let dns = SocketAddr::new(v4.gw_lan, 53);

    assert_eq!(resolve(&tp, dns, "a.dot.example"), v4.server);
    assert_eq!(resolve(&tp, dns, "b.doh.example"), v4.server);
    assert_eq!(resolve(&tp, dns, "c.broken.example"), v4.server);
    let seen = server.seen();
    let pos = |s: &str| {
        seen.iter()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("`{s}` not seen: {seen:#?}"))
    };
    pos("query a.dot.example. sni=dot.test");
    // an IP literal server gets no SNI (RFC 6066)
    assert!(pos("http POST /custom-path HTTP/1.1") < pos("query b.doh.example. sni=-"));
    assert!(pos("http POST /fb-query HTTP/1.1") < pos("query c.broken.example. sni=-"));
    assert_eq!(seen.len(), 5, "{seen:#?}");
    // More queries reuse the kept connections: one to the DoT server, one to each of the
    // two DoH URLs.
    for i in 0..4 {
        assert_eq!(resolve(&tp, dns, &format!("n{i}.dot.example")), v4.server);
        assert_eq!(resolve(&tp, dns, &format!("n{i}.doh.example")), v4.server);
    }
    assert_eq!(server.seen().len(), 5 + 4 * 3, "{:#?}", server.seen());
    assert_eq!(server.accepted(), (1, 2));
}

/// One UDP query from a socket of the server's family; the answer and who sent it.
fn query_udp_any(ns: &Netns, server: SocketAddr, name: &str) -> Option<(SocketAddr, Message)> {
    let (id, bytes) = query_bytes(name, RecordType::A);
    let any: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = ns.enter(|| UdpSocket::bind(any)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    sock.send_to(&bytes, server).ok()?;
    let mut buf = vec![0u8; 4096];
    let (n, from) = sock.recv_from_patiently(&mut buf).ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    (m.id() == id).then_some((from, m))
}

/// `intercept.dns-hijack`: queries sent to ANY server on port 53 (here the lab server, which
/// runs no DNS at all), from the LAN and from the gateway itself, over UDP and TCP, IPv4 and
/// IPv6, are answered by tpgate's DNS server, and the answer comes from the address asked.
#[test]
fn dns_hijack_answers_queries_to_any_server() {
    let Some(lab) = Lab::new("dnshijack") else {
        return;
    };
    let base = lab.proxy_config_text(&[], &[], &["MATCH,DIRECT"]);
    let text = base.replacen("intercept:\n", "intercept:\n  dns-hijack: true\n", 1)
        + "dns:\n  enable: true\n  listen: '[::]:1053'\n  enhanced-mode: normal\n  \
           nameserver: ['udp://192.0.2.53:53']\n\
           hosts:\n  hijacked.test: 192.0.2.77\n";
    let path = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &path);
    let want: IpAddr = "192.0.2.77".parse().expect("ip");
    for family in [Family::V4, Family::V6] {
        let server = SocketAddr::new(family.addrs().server, 53);
        let (from, m) = poll(Duration::from_secs(5), || {
            query_udp_any(&lab.client, server, "hijacked.test")
        })
        .unwrap_or_else(|| panic!("{family:?}: LAN UDP query not answered:\n{}", tp.log_text()));
        assert_eq!(
            from, server,
            "{family:?}: the answer must come from the server asked"
        );
        assert_eq!(addrs(&m), vec![want]);
        let m = query_tcp(&lab.client, server, "hijacked.test", RecordType::A)
            .unwrap_or_else(|| panic!("{family:?}: LAN TCP query not answered"));
        assert_eq!(addrs(&m), vec![want]);
        let (from, m) = query_udp_any(&lab.gw, server, "hijacked.test")
            .unwrap_or_else(|| panic!("{family:?}: the gateway's own query not answered"));
        assert_eq!((from, addrs(&m)), (server, vec![want]));
    }
    // Without dns-hijack the same query goes to the server, which has no DNS: no answer.
    drop(tp);
    let path = lab.write_file("plain.yaml", &text.replacen("  dns-hijack: true\n", "", 1));
    let _tp = Tpgate::start(&lab, &path);
    let server = SocketAddr::new(Family::V4.addrs().server, 53);
    assert!(query_udp_any(&lab.client, server, "hijacked.test").is_none());
}

#[test]
fn dns_hijack_needs_an_unspecified_listen_address() {
    let Some(lab) = Lab::new("dnshijackbad") else {
        return;
    };
    let base = lab.proxy_config_text(&[], &[], &["MATCH,DIRECT"]);
    let text = base.replacen("intercept:\n", "intercept:\n  dns-hijack: true\n", 1)
        + "dns:\n  enable: true\n  listen: 127.0.0.1:1053\n";
    let path = lab.write_file("tpgate.yaml", &text);
    let out = tpgate_oneshot(&lab.gw, &["check", "-c", &path.display().to_string()]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("dns-hijack") && out.stderr.contains("0.0.0.0"),
        "{}",
        out.stderr
    );
}

/// A fake-ip flow that reaches an address rule (without `no-resolve`) is decided on the
/// real address of its name, as mihomo does; with `no-resolve` the rule is skipped.
#[test]
fn fake_ip_flows_resolve_for_address_rules() {
    if !have_program("dnsmasq") {
        eprintln!("SKIPPED: dnsmasq is not installed");
        return;
    }
    let Some(lab) = Lab::new("dnsiprule") else {
        return;
    };
    let v4 = Family::V4.addrs();
    let _ns = Dnsmasq::start(
        &lab,
        &lab.server,
        v4.server,
        &[("real.example", Some(v4.server))],
    );
    let _server = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, PORT));
    let udp_server = UdpEchoServer::start(&lab.server, SocketAddr::new(v4.server, PORT));
    let dns = SocketAddr::new(v4.gw_lan, 53);
    for (rule, rejected) in [
        ("IP-CIDR,203.0.113.0/24,REJECT", true),
        ("IP-CIDR,203.0.113.0/24,REJECT,no-resolve", false),
    ] {
        let text = lab.proxy_config_text(&[], &[], &[rule, "MATCH,DIRECT"])
            + &dns_section("fake-ip", v4.server);
        let config = lab.write_file("tpgate.yaml", &text);
        let tp = Tpgate::start(&lab, &config);
        let fake = resolve(&tp, dns, "real.example");
        assert!(in_fake_range(fake));
        let dst = SocketAddr::new(fake, PORT);
        let got = echo(&lab, dst, b"x");
        let line = flow_line(&tp, dst, "real.example");
        if rejected {
            assert!(got.is_none(), "{rule}: must be decided on the real address");
            assert!(has_field(&line, "action", "REJECT"), "{line}");
        } else {
            assert_eq!(
                got.as_deref(),
                Some(&b"x"[..]),
                "{rule}: the fake address does not match"
            );
            assert!(has_field(&line, "action", "DIRECT"), "{line}");
        }
        // The same over UDP: decided on the real address unless no-resolve, and a DIRECT
        // reply comes back from the fake address the client sent to.
        let before = udp_server.peers().len();
        let x = udp_exchange(&lab.client, Family::V4, dst, b"u", Duration::from_secs(2))
            .expect("udp send");
        let line = tp
            .wait_for_line(Duration::from_secs(5), |l| {
                l.contains("udp ") && l.contains(&format!(" -> {dst} ")) && l.contains("action=")
            })
            .unwrap_or_else(|| panic!("no udp flow line to {dst}:\n{}", tp.log_text()));
        assert!(has_field(&line, "host", "real.example"), "{line}");
        if rejected {
            assert_eq!(
                x.reply, None,
                "{rule}: udp must be decided on the real address"
            );
            assert!(has_field(&line, "action", "REJECT"), "{line}");
            assert_eq!(
                udp_server.peers().len(),
                before,
                "nothing reached the server"
            );
        } else {
            assert_eq!(x.reply, Some((dst, b"u".to_vec())), "{rule}: udp echo");
            assert!(has_field(&line, "action", "DIRECT"), "{line}");
        }
    }
}
