//! End-to-end: `GEOIP` rules against a MaxMind-format country database written for the test
//! (with the `mmdb-writer` crate; any MaxMind reader reads it): the lab's IPv6 server
//! network is "JP" and rejected, its IPv4 network "US" and relayed; `tpgate check` refuses a
//! config whose GEOIP rules have no database, naming the path. `GEOSITE` lists come from a
//! v2ray geosite.dat encoded here from v2fly's protobuf schema.

mod lab;

use std::net::SocketAddr;
use std::time::Duration;

use lab::{
    country_db, has_field, tcp_echo, tpgate_oneshot, Family, FileServer, Lab, Reply, TcpEchoServer,
    Tpgate,
};

#[test]
fn geoip_rules_decide_by_country() {
    let Some(lab) = Lab::new("geoip") else {
        return;
    };
    let db = country_db(&[("2001:db8:2::/64", "JP"), ("203.0.113.0/24", "US")]);
    std::fs::write(lab.dir.join("Country.mmdb"), db).expect("write db");
    let path = lab.write_file(
        "tpgate.yaml",
        &lab.proxy_config_text(
            &[],
            &[],
            &["GEOIP,jp,REJECT", "GEOIP,LAN,DIRECT", "MATCH,DIRECT"],
        ),
    );
    let check = tpgate_oneshot(&lab.gw, &["check", "-c", &path.display().to_string()]);
    assert!(check.success(), "check: {}", check.stderr);
    let tp = Tpgate::start(&lab, &path);

    let v6 = Family::V6.addrs();
    let jp = TcpEchoServer::start(&lab.server, SocketAddr::new(v6.server, 80));
    assert!(
        tcp_echo(&lab.client, jp.addr, b"hi").map_or(true, |x| x.echoed.is_empty()),
        "a JP destination must be rejected"
    );
    let line = tp
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains(&format!(" -> {} ", jp.addr))
        })
        .expect("flow line");
    assert!(
        has_field(&line, "action", "REJECT") && line.contains("GEOIP,jp"),
        "{line}"
    );
    assert!(jp.peers().is_empty());

    let v4 = Family::V4.addrs();
    let us = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 80));
    let x = tcp_echo(&lab.client, us.addr, b"hello").expect("US destination");
    assert_eq!(x.echoed, b"hello");
    tp.expect_flow("tcp", x.local, us.addr, "DIRECT");
}

/// A named `geoip-path` that cannot be read is an error; a mihomo config relying on the
/// default `Country.mmdb` (which mihomo would download) gets a warning naming the path.
#[test]
fn geoip_rules_without_a_database() {
    let Some(lab) = Lab::new("geoipnodb") else {
        return;
    };
    let text = lab.proxy_config_text(&[], &[], &["GEOIP,CN,DIRECT", "MATCH,DIRECT"]);
    let path = lab.write_file("tpgate.yaml", &text);
    let out = tpgate_oneshot(&lab.gw, &["check", "-c", &path.display().to_string()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let want = lab.dir.join("Country.mmdb").display().to_string();
    assert!(
        out.stderr.contains(&want) && out.stderr.contains("warning"),
        "expected a warning naming {want}:\n{}",
        out.stderr
    );
    let named = format!("geoip-path: /nonexistent/GeoIP.mmdb\n{text}");
    let path = lab.write_file("named.yaml", &named);
    let out = tpgate_oneshot(&lab.gw, &["check", "-c", &path.display().to_string()]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("/nonexistent/GeoIP.mmdb"),
        "{}",
        out.stderr
    );
}

/// A v2ray geosite.dat with two lists, encoded from v2fly's protobuf schema.
fn geosite_dat() -> Vec<u8> {
    use prost::Message as _;
    use tpgate_core::rules::{GeoSite, GeoSiteList, SiteAttribute, SiteDomain};
    let d = |t: i32, v: &str, attr: Option<&str>| SiteDomain {
        r#type: t,
        value: v.into(),
        attribute: attr
            .map(|a| SiteAttribute { key: a.into() })
            .into_iter()
            .collect(),
    };
    GeoSiteList {
        entry: vec![
            GeoSite {
                country_code: "CATEGORY-ADS".into(),
                domain: vec![d(2, "ads.example", None), d(0, "tracker", Some("cn"))],
            },
            GeoSite {
                country_code: "EXAMPLE".into(),
                domain: vec![d(3, "www.example.org", None)],
            },
        ],
    }
    .encode_to_vec()
}

/// `GEOSITE` lists decide sniffed names (HTTP Host here).
#[test]
fn geosite_rules_decide_by_list() {
    let Some(lab) = Lab::new("geosite") else {
        return;
    };
    std::fs::write(lab.dir.join("GeoSite.dat"), geosite_dat()).expect("write dat");
    let path = lab.write_file(
        "tpgate.yaml",
        &lab.proxy_config_text(
            &[],
            &[],
            &[
                "GEOSITE,category-ads,REJECT",
                "OR,((GEOSITE,example)),REJECT",
                "MATCH,DIRECT",
            ],
        ),
    );
    let tp = Tpgate::start(&lab, &path);
    let a = Family::V4.addrs();
    let web = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    let ask = |name: &str| !lab::lan_request_for(&lab, name, web.addr).is_empty();
    assert!(!ask("a.ads.example"), "suffix entry");
    assert!(!ask("my-tracker.test"), "keyword entry");
    assert!(!ask("www.example.org"), "full entry in a logic rule");
    assert!(ask("example.org"), "a full entry matches only itself");
    let line = tp
        .wait_for_line(Duration::from_secs(5), |l| {
            has_field(l, "host", "a.ads.example")
        })
        .expect("flow line");
    assert!(line.contains("GEOSITE,category-ads"), "{line}");
    drop(tp);
    // GEOSITE inside a `sub-rules` list is loaded too.
    let text = lab.proxy_config_text(&[], &[], &["SUB-RULE,(NETWORK,tcp),web", "MATCH,DIRECT"])
        + "sub-rules:\n  web:\n    - GEOSITE,category-ads,REJECT\n";
    let tp = Tpgate::start(&lab, &lab.write_file("sub.yaml", &text));
    assert!(!ask("b.ads.example"), "GEOSITE in a sub-rules list");
    assert!(ask("example.org"), "not in the list");
    let line = tp
        .wait_for_line(Duration::from_secs(5), |l| {
            has_field(l, "host", "b.ads.example")
        })
        .expect("flow line");
    assert!(line.contains("> GEOSITE,category-ads,REJECT"), "{line}");
    // A list the file lacks is refused by check, naming it.
    let bad = lab.write_file(
        "bad.yaml",
        &lab.proxy_config_text(&[], &[], &["GEOSITE,nope,DIRECT", "MATCH,DIRECT"]),
    );
    let out = tpgate_oneshot(&lab.gw, &["check", "-c", &bad.display().to_string()]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
}

/// `geox-url`: missing geodata is downloaded at start over the gateway's own (marked)
/// connection and read by a reload; `POST /configs/geo` downloads again, refuses a broken
/// file (the one in place stays) and applies a good one.
#[test]
fn geox_url_downloads_missing_geodata_and_updates_it_from_the_api() {
    let Some(lab) = Lab::new("geox") else {
        return;
    };
    let (v4, v6) = (Family::V4.addrs(), Family::V6.addrs());
    let files = FileServer::start(&lab.server, SocketAddr::new(v4.server, 8000));
    files.put(
        "/Country.mmdb",
        Reply::Body(country_db(&[
            ("2001:db8:2::/64", "JP"),
            ("203.0.113.0/24", "US"),
        ])),
    );
    files.put("/GeoSite.dat", Reply::Body(geosite_dat()));
    let text = lab.proxy_config_text(
        &[],
        &[],
        &["GEOIP,jp,REJECT", "GEOSITE,category-ads,REJECT", "MATCH,DIRECT"],
    ) + &format!(
        "geox-url:\n  mmdb: http://{s}:8000/Country.mmdb\n  geosite: http://{s}:8000/GeoSite.dat\n  geoip: http://{s}:8000/unused.dat\n",
        s = v4.server
    );
    let path = lab.write_file("tpgate.yaml", &text);
    let check = tpgate_oneshot(&lab.gw, &["check", "-c", &path.display().to_string()]);
    assert!(check.success(), "check: {}", check.stderr);
    assert!(
        check.stderr.contains("downloaded it from"),
        "{}",
        check.stderr
    );
    let tp = Tpgate::start(&lab, &path);
    tp.wait_for_line(Duration::from_secs(20), |l| l.contains("config reloaded"))
        .unwrap_or_else(|| panic!("no reload after the downloads:\n{}", tp.log_text()));
    assert_eq!(
        (files.hits("/Country.mmdb"), files.hits("/GeoSite.dat")),
        (1, 1)
    );
    let mmdb = lab.dir.join("Country.mmdb");
    assert!(mmdb.exists() && lab.dir.join("GeoSite.dat").exists());

    let jp = TcpEchoServer::start(&lab.server, SocketAddr::new(v6.server, 80));
    let us = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 80));
    let rejected =
        |dst: SocketAddr| tcp_echo(&lab.client, dst, b"hi").map_or(true, |x| x.echoed.is_empty());
    assert!(rejected(jp.addr), "GEOIP reads the downloaded database");
    assert!(!rejected(us.addr));
    assert!(
        lab::lan_request_for(&lab, "a.ads.example", us.addr).is_empty(),
        "GEOSITE reads the downloaded list"
    );

    // A broken database is refused; the file in place and the rules stay.
    let api = lab::Api::new(&lab, None);
    let before = std::fs::read(&mmdb).unwrap();
    files.put("/Country.mmdb", Reply::Body(b"not a database".to_vec()));
    let r = api.request("POST", "/configs/geo", None);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("Country.mmdb"), "{}", r.body);
    assert_eq!(std::fs::read(&mmdb).unwrap(), before);
    assert!(rejected(jp.addr));

    // A new one (the IPv4 network is JP now) is applied at once.
    files.put(
        "/Country.mmdb",
        Reply::Body(country_db(&[("203.0.113.0/24", "JP")])),
    );
    let r = api.request("POST", "/configs/geo", None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(rejected(us.addr), "the new database is in force");
    assert!(!rejected(jp.addr));
    assert_eq!(files.hits("/Country.mmdb"), 3);
    assert_eq!(files.hits("/unused.dat"), 0, "geoip.dat is not tpgate's");
}

/// A v2ray geoip.dat: the lab's IPv6 server network in `TELEGRAM`, its IPv4 one in `US`.
fn geoip_dat() -> Vec<u8> {
    use prost::Message as _;
    use tpgate_core::rules::{Cidr, GeoIpEntry, GeoIpList};
    let v6 = Family::V6.addrs().server;
    let std::net::IpAddr::V6(v6) = v6 else {
        unreachable!()
    };
    GeoIpList {
        entry: vec![
            GeoIpEntry {
                country_code: "TELEGRAM".into(),
                cidr: vec![Cidr {
                    ip: v6.octets().to_vec(),
                    prefix: 64,
                }],
                reverse_match: false,
            },
            GeoIpEntry {
                country_code: "US".into(),
                cidr: vec![Cidr {
                    ip: vec![203, 0, 113, 0],
                    prefix: 24,
                }],
                reverse_match: false,
            },
        ],
    }
    .encode_to_vec()
}

/// `geodata-mode: true`: GEOIP rules read a geoip.dat (downloaded from `geox-url.geoip`),
/// categories such as `telegram` included. Without it, `check` says such rules never match.
#[test]
fn geodata_mode_reads_geoip_dat_categories() {
    let Some(lab) = Lab::new("geodat") else {
        return;
    };
    let (v4, v6) = (Family::V4.addrs(), Family::V6.addrs());
    let rules = ["GEOIP,telegram,REJECT", "GEOIP,us,DIRECT", "MATCH,REJECT"];
    let plain = lab.write_file("plain.yaml", &lab.proxy_config_text(&[], &[], &rules));
    let out = tpgate_oneshot(&lab.gw, &["check", "-c", &plain.display().to_string()]);
    assert!(
        out.stderr.contains("TELEGRAM are GeoIP.dat categories")
            && out.stderr.contains("never match"),
        "{}",
        out.stderr
    );

    let files = FileServer::start(&lab.server, SocketAddr::new(v4.server, 8000));
    files.put("/geoip.dat", Reply::Body(geoip_dat()));
    let text = lab.proxy_config_text(&[], &[], &rules)
        + &format!(
            "geodata-mode: true\ngeox-url:\n  geoip: http://{}:8000/geoip.dat\n",
            v4.server
        );
    let path = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &path);
    tp.wait_for_line(Duration::from_secs(20), |l| l.contains("config reloaded"))
        .unwrap_or_else(|| panic!("no reload after the download:\n{}", tp.log_text()));
    assert!(lab.dir.join("GeoIP.dat").exists());
    let tg = TcpEchoServer::start(&lab.server, SocketAddr::new(v6.server, 80));
    assert!(
        tcp_echo(&lab.client, tg.addr, b"hi").map_or(true, |x| x.echoed.is_empty()),
        "the telegram category is rejected"
    );
    let us = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 80));
    let x = tcp_echo(&lab.client, us.addr, b"hello").expect("US destination");
    assert_eq!(x.echoed, b"hello");
    // DIRECT by address alone (the category's networks): the kernel forwards it.
    assert_eq!(
        us.wait_peers(1),
        vec![x.local],
        "offloaded from the geoip.dat's ranges"
    );
    let set = lab
        .gw
        .sh("nft", &["list", "set", "inet", "tpgate", "direct4"]);
    assert!(set.contains("203.0.113.0/24"), "{set}");
}

/// A GeoLite2-ASN-shaped database: `{autonomous_system_number, _organization}` per network.
fn asn_db(entries: &[(&str, u32)]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Asn {
        autonomous_system_number: u32,
        autonomous_system_organization: String,
    }
    let mut w = mmdb_writer::Writer::new("GeoLite2-ASN");
    for (net, n) in entries {
        let record = Asn {
            autonomous_system_number: *n,
            autonomous_system_organization: format!("Example AS{n}"),
        };
        w.insert(net.parse::<ipnet::IpNet>().expect("net"), &record)
            .expect("insert");
    }
    w.to_bytes().expect("serialise")
}

/// `IP-ASN` rules read the ASN database (downloaded from `geox-url.asn`); an ASN that is
/// DIRECT by address alone is offloaded with its networks.
#[test]
fn ip_asn_rules_decide_by_autonomous_system() {
    let Some(lab) = Lab::new("ipasn") else {
        return;
    };
    let (v4, v6) = (Family::V4.addrs(), Family::V6.addrs());
    let files = FileServer::start(&lab.server, SocketAddr::new(v4.server, 8000));
    files.put(
        "/ASN.mmdb",
        Reply::Body(asn_db(&[
            ("2001:db8:2::/64", 64500),
            ("203.0.113.0/24", 64501),
        ])),
    );
    let text = lab.proxy_config_text(
        &[],
        &[],
        &[
            "IP-ASN,64500,REJECT",
            "IP-ASN,AS64501,DIRECT",
            "MATCH,REJECT",
        ],
    ) + &format!("geox-url:\n  asn: http://{}:8000/ASN.mmdb\n", v4.server);
    let path = lab.write_file("tpgate.yaml", &text);
    let tp = Tpgate::start(&lab, &path);
    tp.wait_for_line(Duration::from_secs(20), |l| l.contains("config reloaded"))
        .unwrap_or_else(|| panic!("no reload after the download:\n{}", tp.log_text()));
    let blocked = TcpEchoServer::start(&lab.server, SocketAddr::new(v6.server, 80));
    assert!(
        tcp_echo(&lab.client, blocked.addr, b"hi").map_or(true, |x| x.echoed.is_empty()),
        "AS64500 is rejected"
    );
    let line = tp
        .wait_for_line(Duration::from_secs(5), |l| {
            l.contains(&format!(" -> {} ", blocked.addr))
        })
        .expect("flow line");
    assert!(line.contains("IP-ASN,64500"), "{line}");
    let open = TcpEchoServer::start(&lab.server, SocketAddr::new(v4.server, 80));
    let x = tcp_echo(&lab.client, open.addr, b"hello").expect("AS64501 destination");
    assert_eq!(x.echoed, b"hello");
    assert_eq!(
        open.wait_peers(1),
        vec![x.local],
        "offloaded from the ASN's networks"
    );
    let set = lab
        .gw
        .sh("nft", &["list", "set", "inet", "tpgate", "direct4"]);
    assert!(set.contains("203.0.113.0/24"), "{set}");
}
