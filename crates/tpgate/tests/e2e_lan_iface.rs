//! End-to-end: LAN interfaces that come and go. The config names a LAN interface that does
//! not exist at start; tpgate says so (log and `plan`) and starts anyway. When the lab's LAN
//! link is renamed to that name, its traffic is intercepted at once; down and up changes
//! nothing once it is back; renamed away again, it is no longer intercepted. Each step is
//! in the log and proved at the server (the gateway's address means relayed, the client's
//! own means forwarded untouched).

mod lab;

use std::net::SocketAddr;
use std::time::Duration;

use lab::{poll, tcp_echo, tpgate_oneshot, Family, Lab, TcpEchoServer, Tpgate};

const LATE: &str = "tpglate0";

#[test]
fn a_lan_interface_that_appears_later_is_intercepted_and_followed() {
    let Some(lab) = Lab::new("laniface") else {
        return;
    };
    let a = Family::V4.addrs();
    let text = lab.config_text().replace(
        &format!("lan-interfaces: [{}]", lab.lan_if),
        &format!("lan-interfaces: [{LATE}]"),
    );
    assert!(text.contains(LATE), "{text}");
    let config = lab.write_file("tpgate.yaml", &text);
    let plan = tpgate_oneshot(&lab.gw, &["plan", "-c", &config.display().to_string()]);
    assert!(plan.success(), "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains(&format!("note: lan interface {LATE} does not exist")),
        "{}",
        plan.stdout
    );
    let tp = Tpgate::start(&lab, &config);
    let line = |what: &str| {
        tp.wait_for_line(Duration::from_secs(10), |l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` in the log:\n{}", tp.log_text()))
    };
    line(&format!("lan interface {LATE} does not exist (yet)"));

    let server = TcpEchoServer::start(&lab.server, SocketAddr::new(a.server, 80));
    // The source the server saw for a new connection, once the LAN path works.
    let seen = |step: &str| {
        let x = poll(Duration::from_secs(10), || {
            tcp_echo(&lab.client, server.addr, step.as_bytes()).ok()
        })
        .unwrap_or_else(|| panic!("{step}: no connection through the gateway"));
        assert_eq!(x.echoed, step.as_bytes(), "{step}");
        server.peers().last().copied().expect("a peer").ip()
    };
    assert_eq!(
        seen("not yet a LAN interface"),
        a.client,
        "forwarded untouched"
    );

    let gw = |args: &[&str]| lab.gw.ip(args);
    gw(&["link", "set", "dev", &lab.lan_if, "down"]);
    gw(&["link", "set", "dev", &lab.lan_if, "name", LATE]);
    gw(&["link", "set", "dev", LATE, "up"]);
    line(&format!("renamed {LATE}, a lan interface: intercepted"));
    assert_eq!(seen("renamed into the list"), a.gw_wan, "relayed by tpgate");

    gw(&["link", "set", "dev", LATE, "down"]);
    line(&format!("lan interface {LATE} is down"));
    gw(&["link", "set", "dev", LATE, "up"]);
    line(&format!("lan interface {LATE} is up"));
    assert_eq!(seen("down and up"), a.gw_wan, "still relayed");

    gw(&["link", "set", "dev", LATE, "down"]);
    gw(&["link", "set", "dev", LATE, "name", &lab.lan_if]);
    gw(&["link", "set", "dev", &lab.lan_if, "up"]);
    line(&format!(
        "lan interface {LATE} was renamed {}: no longer intercepted",
        lab.lan_if
    ));
    assert_eq!(seen("renamed away"), a.client, "forwarded untouched again");
}
