//! `load` must never panic, whatever the text: random strings, YAML-looking noise, and
//! random edits of a valid config. (A `fuzz/` target can call `load` the same way.)

use proptest::prelude::*;

use crate::config::load;

const VALID: &str = "tproxy-port: 7893
routing-mark: 0xff
mode: rule
log-level: info
port: 7890
external-controller: 127.0.0.1:9090
secret: s
proxies:
  - {name: a, type: ss, server: 192.0.2.1, port: 8388, cipher: aes-128-gcm, password: x}
  - {name: b, type: trojan, server: example.com, port: 443, password: x, sni: example.net}
  - {name: c, type: socks5, server: 192.0.2.2, port: 1080, username: u, password: p, udp: true}
  - {name: v, type: snell, server: 192.0.2.3, port: 443, uuid: x}
proxy-groups:
  - name: G
    type: select
    proxies: [a, H, DIRECT]
  - {name: H, type: url-test, proxies: [b, c, v], interval: 60}
  - {name: R, type: relay, proxies: [a, b]}
intercept:
  lan-interfaces: [br-lan]
  fwmark: '0x1/0xff'
  route-table: 100
  bypass: [192.0.2.0/24, '2001:db8::/32']
rules:
  - DST-PORT,25/8000-8100,REJECT
  - IP-CIDR,10.0.0.0/8,DIRECT,no-resolve
  - DOMAIN-SUFFIX,example.com,G
  - MATCH,DIRECT
";

/// Characters that mean something to YAML or to the config, so random text gets far.
fn yamlish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(": "),
            Just("- "),
            Just("\n"),
            Just("  "),
            Just("["),
            Just("]"),
            Just("{"),
            Just("}"),
            Just(","),
            Just("'"),
            Just("\""),
            Just("&a "),
            Just("*a"),
            Just("!!int "),
            Just("? "),
            Just("|\n"),
            Just("#"),
            Just("---\n"),
            Just("0x"),
            Just("1"),
            Just("-1"),
            Just("/"),
            Just("rules"),
            Just("intercept"),
            Just("fwmark"),
            Just("MATCH,DIRECT"),
            Just("proxies"),
            Just("proxy-groups"),
            Just("name"),
            Just("type"),
            Just("ss"),
            Just("relay"),
            Just("tproxy-port"),
            Just("<<: "),
            Just("\t"),
            Just("é"),
            Just("~"),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), "[ -~\n\t]{1,8}").prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1usize..80).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut s = text.to_owned();
    for e in edits {
        let len = s.len().max(1);
        match e {
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(s.len());
                if s.is_char_boundary(at) && s.is_char_boundary(end) {
                    s.replace_range(at..end, "");
                }
            }
            Edit::Insert(at, text) => {
                let at = at % (s.len() + 1);
                if s.is_char_boundary(at) {
                    s.insert_str(at, text);
                }
            }
            Edit::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(s.len());
                if s.is_char_boundary(at) && s.is_char_boundary(end) {
                    let copy = s[at..end].to_owned();
                    s.insert_str(at, &copy);
                }
            }
        }
    }
    s
}

#[test]
fn the_seed_config_is_valid() {
    assert!(load(VALID).is_ok(), "{:#?}", load(VALID));
}

proptest! {
    #[test]
    fn never_panics_on_any_string(text in any::<String>()) {
        let _ = load(&text);
    }

    #[test]
    fn never_panics_on_yaml_noise(text in yamlish()) {
        if let Err(errors) = load(&text) {
            prop_assert!(!errors.is_empty());
            prop_assert!(errors.iter().all(|e| e.line >= 1 && e.col >= 1));
        }
    }

    #[test]
    fn never_panics_on_edited_configs(edits in proptest::collection::vec(edit(), 1..6)) {
        let text = apply(VALID, &edits);
        if let Err(errors) = load(&text) {
            prop_assert!(!errors.is_empty());
            let lines = text.lines().count() + 1;
            prop_assert!(errors.iter().all(|e| e.line >= 1 && e.line <= lines && e.col >= 1), "{:#?}", errors);
        }
    }
}

#[test]
fn hostile_inputs() {
    for text in [
        "[".repeat(100_000),
        "{".repeat(300),
        "- ".repeat(5_000),
        format!("{}x", "  ".repeat(2_000)),
        "a: &a [*a]".to_owned(),
        "\u{feff}mode: rule".to_owned(),
        "\0".to_owned(),
        "rules: [\"\u{0}\"]".to_owned(),
    ] {
        let _ = load(&text);
    }
}
