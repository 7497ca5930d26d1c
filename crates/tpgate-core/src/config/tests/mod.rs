//! `load` end to end: defaults, every key, every error with its exact position, and the
//! warnings a mihomo config earns. Helpers and the happy paths here; errors, mihomo
//! compatibility and the no-panic properties in the submodules.

mod dialers;
mod errors;
mod fuzz;
mod groups;
mod hysteria2;
mod mihomo;
mod plugins;
mod proxies;
mod reality;
mod targets;
mod tuic;
mod unsupported;

use ipnet::IpNet;

use super::*;
use crate::net::{Mark, Network, TableId};
use crate::rules::{Matcher, PortRange, Verdict};

fn ok(text: &str) -> Loaded {
    load(text).unwrap_or_else(|e| panic!("{text:?} failed: {e:#?}"))
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load(text) {
        Ok(l) => panic!("{text:?} loaded: {:#?}", l.config),
        Err(e) => e,
    }
}

/// The single error of `text`, checked for position and path; returns its message.
#[track_caller]
fn error_at(text: &str, line: usize, col: usize, path: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    let e = &e[0];
    assert_eq!(
        (e.line, e.col, e.path.as_str()),
        (line, col, path),
        "{e:#?}"
    );
    if !path.is_empty() {
        assert!(e.message.starts_with(&format!("{path}: ")), "{e:#?}");
    }
    e.message.clone()
}

/// Like [`error_at`] for a problem that is an error only under `--strict` (an unknown
/// key): checks that the lenient load warns at the same place, marked `unknown`.
#[track_caller]
fn strict_error_at(text: &str, line: usize, col: usize, path: &str) -> String {
    let lenient = ok(text);
    assert!(
        lenient
            .warnings
            .iter()
            .any(|w| (w.line, w.col, w.path.as_str(), w.unknown) == (line, col, path, true)),
        "{:#?}",
        lenient.warnings
    );
    let r = load_with(
        text,
        &Options {
            strict: true,
            ..Options::default()
        },
    );
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    let e = &r.errors[0];
    assert_eq!(
        (e.line, e.col, e.path.as_str()),
        (line, col, path),
        "{e:#?}"
    );
    e.message.clone()
}

/// Every error under `--strict`, in document order.
fn strict_errors(text: &str) -> Vec<Diagnostic> {
    let strict = Options {
        strict: true,
        ..Options::default()
    };
    load_with(text, &strict).errors
}

/// Warnings as displayed: `line:col: path: message`.
fn warnings(l: &Loaded) -> Vec<String> {
    l.warnings.iter().map(ToString::to_string).collect()
}

/// Errors as displayed, for texts with several.
fn error_lines(text: &str) -> Vec<String> {
    errors(text).iter().map(ToString::to_string).collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn empty_documents_are_all_defaults() {
    for text in [
        "",
        "\n\n",
        "# only a comment\n",
        "---\n",
        "{}",
        "~\n",
        "intercept:\nrules:\n",
    ] {
        let l = ok(text);
        assert_eq!(l.config, Config::default(), "{text:?}");
        assert!(l.warnings.is_empty(), "{text:?}");
    }
    let c = Config::default();
    assert_eq!(c.tproxy_port, 7893);
    assert_eq!(c.routing_mark, 0xff);
    assert!(c.ipv6);
    assert_eq!(c.mode, Mode::Rule);
    assert_eq!(c.log_level, LogLevel::Info);
    assert!(c.rules.is_empty());
    assert!(c.proxies.is_empty() && c.groups.is_empty());
    assert_eq!(c.global_target, None);
    assert_eq!(c.external_controller, None);
    assert_eq!(c.secret, None);
    assert_eq!(c.state_file, "/var/lib/tpgate/state.json");
    let i = &c.intercept;
    assert_eq!(i.backend, Backend::Nftables);
    assert_eq!(i.iptables_variant, IptablesVariant::Auto);
    assert!(i.lan_interfaces.is_empty());
    assert!(i.local && i.udp);
    assert_eq!(i.fwmark, Mark::exact(1));
    assert_eq!(i.route_table, TableId(100));
    assert_eq!(i.rule_priority, 9000);
    assert!(i.bypass.is_empty());
}

#[test]
fn every_key() {
    let l = ok("
tproxy-port: 0x3000
routing-mark: '0x200'
ipv6: false
mode: Global
log-level: DEBUG
state-file: /run/tpgate/state.json
external-controller: '[::1]:9090'
secret: s3cret
intercept:
  backend: iptables
  iptables-variant: legacy
  lan-interfaces: [br-lan, eth1]
  local: false
  udp: false
  fwmark: 0x10/0xf0
  route-table: '0x64'
  rule-priority: 100
  bypass:
    - 192.0.2.0/24
    - 2001:db8::1
    - 198.51.100.7
rules:
  - DST-PORT,25,REJECT
  - ' IP-CIDR6 , 2001:db8::/32 , direct , no-resolve '
  - MATCH,REJECT-DROP
");
    assert!(l.warnings.is_empty(), "{:#?}", l.warnings);
    let c = l.config;
    assert_eq!(c.tproxy_port, 0x3000);
    assert_eq!(c.routing_mark, 0x200);
    assert!(!c.ipv6);
    assert_eq!(c.mode, Mode::Global);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.state_file, "/run/tpgate/state.json");
    assert_eq!(c.external_controller, Some("[::1]:9090".parse().unwrap()));
    assert_eq!(c.secret.as_deref(), Some("s3cret"));
    let i = &c.intercept;
    assert_eq!(i.backend, Backend::Iptables);
    assert_eq!(i.iptables_variant, IptablesVariant::Legacy);
    assert_eq!(i.lan_interfaces, ["br-lan", "eth1"]);
    assert!(!i.local && !i.udp);
    assert_eq!(
        i.fwmark,
        Mark {
            value: 0x10,
            mask: 0xf0
        }
    );
    assert_eq!(i.route_table, TableId(100));
    assert_eq!(i.rule_priority, 100);
    assert_eq!(
        i.bypass,
        [
            net("192.0.2.0/24"),
            net("2001:db8::1/128"),
            net("198.51.100.7/32")
        ]
    );
    assert_eq!(c.rules.len(), 3);
    assert_eq!(
        c.rules[0].matcher,
        Matcher::DstPort(vec![PortRange { start: 25, end: 25 }])
    );
    assert_eq!(
        c.rules[1].text,
        "IP-CIDR6 , 2001:db8::/32 , direct , no-resolve"
    );
    assert!(c.rules[1].no_resolve);
    assert_eq!(c.rules[1].verdict, Verdict::Direct);
    assert_eq!(c.rules[2].verdict, Verdict::RejectDrop);
}

#[test]
fn integer_spellings() {
    for (text, port) in [
        ("1080", 1080),
        ("0x438", 0x438),
        ("'0x438'", 0x438),
        ("\"1080\"", 1080),
        ("0o2070", 1080),
    ] {
        assert_eq!(
            ok(&format!("tproxy-port: {text}")).config.tproxy_port,
            port,
            "{text}"
        );
    }
    assert_eq!(
        ok("intercept: {fwmark: '0x100/0x100'}")
            .config
            .intercept
            .fwmark,
        Mark {
            value: 0x100,
            mask: 0x100
        }
    );
    assert_eq!(
        ok("intercept: {fwmark: 7}").config.intercept.fwmark,
        Mark::exact(7)
    );
    assert_eq!(
        ok("routing-mark: 0xffffffff\n").config.routing_mark,
        u32::MAX
    );
}
mod providers;
