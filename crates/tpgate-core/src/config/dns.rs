//! The `dns` section (mihomo's) and the top-level `hosts` / `use-hosts`: the built-in DNS
//! server that gives transparently proxied flows back the name the client resolved (fake-ip
//! or the IP -> name mapping of redir-host), and the nameservers it forwards to. Parts
//! tpgate does not implement yet (`respect-rules`, DHCP nameservers, QUIC) load with a
//! warning, never an error, so a mihomo config keeps working.

use std::net::{IpAddr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::decode::{check, entries, is_section, items};
use super::nameserver::{parse_nameserver, Nameserver, Transport, Unusable};
use super::sniffer::DomainPattern;
use super::yaml::{Node, Value};
use super::{value, Diags};
use crate::rules::RuleSetHandle;

/// How A/AAAA queries are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnhancedMode {
    /// Real answers, nothing remembered.
    Normal,
    /// Addresses from `fake-ip-range`, each standing for one name.
    FakeIp,
    /// Real answers; the IP -> name mapping is remembered for routing.
    RedirHost,
}

/// Whether `fake-ip-filter` lists the names that get real answers (blacklist) or the only
/// names that get fake ones (whitelist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMode {
    Blacklist,
    Whitelist,
    /// `fake-ip-filter` entries are rules (`RULE-SET,x,real-ip`, `MATCH,fake-ip`), first
    /// match wins; see [`Dns::fake_ip_rules`].
    Rule,
}

/// The `dns` settings plus `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    pub enable: bool,
    /// Where the server listens (UDP and TCP); `None`: no server.
    pub listen: Option<SocketAddr>,
    /// Answer AAAA queries (else they get an empty answer).
    pub ipv6: bool,
    pub enhanced_mode: EnhancedMode,
    pub fake_ip_range: Ipv4Net,
    pub fake_ip_range6: Option<Ipv6Net>,
    pub fake_ip_filter: Vec<DomainPattern>,
    pub fake_ip_filter_mode: FilterMode,
    /// With `fake-ip-filter-mode: rule`: `(pattern, fake)` in order; no match: fake.
    pub fake_ip_rules: Vec<(DomainPattern, bool)>,
    /// tpgate chose `listen` (a fake-ip or redir-host config written for TUN has none).
    pub listen_chosen: bool,
    /// Resolves the names of the other nameservers; IP literals only.
    pub default_nameserver: Vec<Nameserver>,
    pub nameserver: Vec<Nameserver>,
    /// Asked when every `nameserver` failed.
    pub fallback: Vec<Nameserver>,
    /// Names matching a pattern are asked of its servers instead, first match wins.
    pub nameserver_policy: Vec<(DomainPattern, Vec<Nameserver>)>,
    /// For the names of upstream proxies (tpgate resolves those with its marked resolver).
    pub proxy_server_nameserver: Vec<Nameserver>,
    /// Top-level `hosts`: fixed answers, first match wins.
    pub hosts: Vec<(DomainPattern, Vec<IpAddr>)>,
    /// Top-level `use-hosts`: whether `hosts` answers queries.
    pub use_hosts: bool,
    /// `allow-wan` (tpgate's own): answer queries from any interface. Off by default: only
    /// this machine and the `intercept.lan-interfaces` side get answers, so a server on
    /// `0.0.0.0` is not an open resolver for the WAN.
    pub allow_wan: bool,
}

/// mihomo's default fake range; its first address is the "gateway" and never handed out.
pub const DEFAULT_FAKE_IP_RANGE: &str = "198.18.0.1/16";

impl Default for Dns {
    fn default() -> Self {
        Self {
            enable: false,
            listen: None,
            ipv6: false,
            enhanced_mode: EnhancedMode::Normal,
            fake_ip_range: DEFAULT_FAKE_IP_RANGE.parse().unwrap_or_default(),
            fake_ip_range6: None,
            fake_ip_filter: Vec::new(),
            fake_ip_filter_mode: FilterMode::Blacklist,
            fake_ip_rules: Vec::new(),
            listen_chosen: false,
            default_nameserver: Vec::new(),
            nameserver: Vec::new(),
            fallback: Vec::new(),
            nameserver_policy: Vec::new(),
            proxy_server_nameserver: Vec::new(),
            hosts: Vec::new(),
            use_hosts: true,
            allow_wan: false,
        }
    }
}

impl Dns {
    /// Whether `name` gets a fake address (fake-ip mode, filter applied).
    pub fn wants_fake(&self, name: &str) -> bool {
        if self.enhanced_mode != EnhancedMode::FakeIp {
            return false;
        }
        if self.fake_ip_filter_mode == FilterMode::Rule {
            return self
                .fake_ip_rules
                .iter()
                .find(|(p, _)| p.matches(name))
                .is_none_or(|(_, fake)| *fake);
        }
        let listed = self.fake_ip_filter.iter().any(|p| p.matches(name));
        match self.fake_ip_filter_mode {
            FilterMode::Blacklist | FilterMode::Rule => !listed,
            FilterMode::Whitelist => listed,
        }
    }

    /// The handles of `geosite:`/`rule-set:` entries (`geosite`: which kind), for binding.
    pub fn sets_mut(&mut self, geosite: bool) -> Vec<&mut RuleSetHandle> {
        let patterns = self
            .fake_ip_filter
            .iter_mut()
            .chain(self.fake_ip_rules.iter_mut().map(|(p, _)| p))
            .chain(self.nameserver_policy.iter_mut().map(|(p, _)| p));
        patterns
            .filter_map(|p| match p {
                DomainPattern::Set { geosite: g, handle } if *g == geosite => Some(handle),
                _ => None,
            })
            .collect()
    }

    /// The fixed addresses of `name` from `hosts`, when `use-hosts` is on.
    pub fn host_addrs(&self, name: &str) -> Option<&[IpAddr]> {
        if !self.use_hosts {
            return None;
        }
        self.hosts
            .iter()
            .find(|(p, _)| p.matches(name))
            .map(|(_, ips)| ips.as_slice())
    }
}

const KEYS: &[&str] = &[
    "enable",
    "listen",
    "ipv6",
    "enhanced-mode",
    "fake-ip-range",
    "fake-ip-range6",
    "fake-ip-filter",
    "fake-ip-filter-mode",
    "default-nameserver",
    "nameserver",
    "fallback",
    "nameserver-policy",
    "proxy-server-nameserver",
    "respect-rules",
    "fallback-filter",
    "prefer-h3",
    "use-hosts",
    "use-system-hosts",
    "cache-algorithm",
    "ipv6-timeout",
    "direct-nameserver",
    "direct-nameserver-follow-policy",
    "allow-wan",
];

/// Decodes the `dns` section into `out` (which may already hold `hosts`).
pub(super) fn dns(node: &Node, d: &mut Diags, out: &mut Dns) {
    if !is_section(node, "dns", d) {
        return;
    }
    let mut filter = None;
    for e in entries(node, "dns", d) {
        let path = format!("dns.{}", e.key);
        let n = e.value;
        match e.key {
            "enable" => set_bool(n, &path, d, &mut out.enable),
            "ipv6" => set_bool(n, &path, d, &mut out.ipv6),
            "use-hosts" => set_bool(n, &path, d, &mut out.use_hosts),
            "allow-wan" => set_bool(n, &path, d, &mut out.allow_wan),
            "listen" => {
                if let Some(a) = check(d, n, &path, listen(n)) {
                    out.listen = Some(a);
                }
            }
            "enhanced-mode" => {
                let words = [
                    ("fake-ip", EnhancedMode::FakeIp),
                    ("redir-host", EnhancedMode::RedirHost),
                    ("normal", EnhancedMode::Normal),
                ];
                if let Some(m) = check(d, n, &path, value::keyword(n, &words)) {
                    out.enhanced_mode = m;
                }
            }
            "fake-ip-range" => match check(d, n, &path, value::cidr(n)) {
                Some(IpNet::V4(net)) if net.prefix_len() <= 30 => out.fake_ip_range = net,
                Some(_) => d.error(n.pos, &path, "expected an IPv4 range of /30 or wider"),
                None => {}
            },
            "fake-ip-range6" => match check(d, n, &path, value::cidr(n)) {
                Some(IpNet::V6(net)) if net.prefix_len() <= 126 => out.fake_ip_range6 = Some(net),
                Some(_) => d.error(n.pos, &path, "expected an IPv6 range of /126 or wider"),
                None => {}
            },
            "fake-ip-filter" => filter = Some(n),
            "fake-ip-filter-mode" => {
                let words = [
                    ("blacklist", FilterMode::Blacklist),
                    ("whitelist", FilterMode::Whitelist),
                    ("rule", FilterMode::Rule),
                ];
                if let Some(m) = check(d, n, &path, value::keyword(n, &words)) {
                    out.fake_ip_filter_mode = m;
                }
            }
            "default-nameserver" => {
                out.default_nameserver = servers(n, &path, d);
                for (i, s) in out.default_nameserver.iter().enumerate() {
                    if s.transport != Transport::System && s.host.parse::<IpAddr>().is_err() {
                        d.error(
                            n.pos,
                            &format!("{path}[{i}]"),
                            "default-nameserver must be IP addresses: they resolve the names \
                             of the other nameservers",
                        );
                    }
                }
            }
            "nameserver" => out.nameserver = servers(n, &path, d),
            "fallback" => out.fallback = servers(n, &path, d),
            // Accepted: tpgate resolves proxy servers' names with its marked resolver
            // and DIRECT flows' names through `nameserver`, which is what these mean in
            // a transparent gateway with no TUN.
            "proxy-server-nameserver" => out.proxy_server_nameserver = servers(n, &path, d),
            "direct-nameserver" => {
                servers(n, &path, d);
            }
            "respect-rules" | "direct-nameserver-follow-policy" => {
                check(d, n, &path, value::boolean(n));
            }
            "nameserver-policy" => out.nameserver_policy = policy(n, &path, d),
            "fallback-filter" | "prefer-h3" | "use-system-hosts" | "cache-algorithm"
            | "ipv6-timeout" => {
                d.warn(e.key_pos, &path, "not used by tpgate yet; ignored");
            }
            _ => {
                debug_assert!(!KEYS.contains(&e.key));
                super::decode::unknown_key(d, &e, "dns", KEYS);
            }
        }
    }
    if let Some(n) = filter {
        if out.fake_ip_filter_mode == FilterMode::Rule {
            out.fake_ip_rules = filter_rules(n, "dns.fake-ip-filter", d);
        } else {
            out.fake_ip_filter = patterns(n, "dns.fake-ip-filter", d);
        }
    }
    if out.enable && out.enhanced_mode == EnhancedMode::Normal && out.listen.is_none() {
        d.warn(
            node.pos,
            "dns",
            "no `listen`: the DNS server is not started",
        );
    }
    if out.enable && out.nameserver.is_empty() {
        d.warn(
            node.pos,
            "dns.nameserver",
            "no nameserver: queries go to the servers of /etc/resolv.conf",
        );
    }
}

/// The top-level `hosts` mapping: name (or `+.`/`*` pattern) -> an address or a list.
pub(super) fn hosts(node: &Node, d: &mut Diags, out: &mut Dns) {
    if !matches!(node.value, Value::Null | Value::Map(_)) {
        let found = node.value.describe();
        d.error(
            node.pos,
            "hosts",
            format!("expected a mapping, found {found}"),
        );
        return;
    }
    // mihomo: a value is an address, a list of addresses, or one domain name (an alias,
    // answered like a CNAME to that name).
    let mut aliases = Vec::new();
    for e in entries(node, "hosts", d) {
        let path = format!("hosts.{}", e.key);
        let Some(pattern) = check(d, e.value, &path, DomainPattern::parse(e.key)) else {
            continue;
        };
        let ips = match &e.value.value {
            Value::Seq(_) => items(e.value, &path, d, address),
            Value::Str(s) if s.trim().parse::<IpAddr>().is_err() => {
                match value::host(e.value) {
                    Ok(target) => aliases.push((pattern, target, e.value.pos, path)),
                    Err(m) => d.error(e.value.pos, &path, m),
                }
                continue;
            }
            _ => check(d, e.value, &path, address(e.value))
                .into_iter()
                .collect(),
        };
        if !ips.is_empty() {
            out.hosts.push((pattern, ips));
        }
    }
    // An alias takes the addresses its target has in `hosts`; one whose target is not
    // there is answered by the nameservers under its own name.
    for (pattern, target, pos, path) in aliases {
        let target = target.trim_end_matches('.').to_ascii_lowercase();
        match out.host_addrs(&target).map(<[IpAddr]>::to_vec) {
            Some(ips) => out.hosts.push((pattern, ips)),
            None => d.warn(
                pos,
                &path,
                format!(
                    "an alias of `{target}`, which `hosts` has no address for; tpgate does not \
                     follow aliases to the nameservers yet, so this name is resolved as itself"
                ),
            ),
        }
    }
}

/// The top-level `use-hosts`.
pub(super) fn use_hosts(node: &Node, d: &mut Diags, out: &mut Dns) {
    set_bool(node, "use-hosts", d, &mut out.use_hosts);
}

fn set_bool(n: &Node, path: &str, d: &mut Diags, out: &mut bool) {
    if let Some(b) = check(d, n, path, value::boolean(n)) {
        *out = b;
    }
}

fn address(n: &Node) -> Result<IpAddr, String> {
    let text = value::string(n)?.trim();
    text.parse().map_err(|_| {
        format!("`{text}` is not an IP address (tpgate's hosts take addresses, not names)")
    })
}

/// `0.0.0.0:1053`, `127.0.0.1:53`, `[::]:53`, or mihomo's `:53` (every address).
fn listen(n: &Node) -> Result<SocketAddr, String> {
    let text = value::string(n)?.trim();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{text}`: expected ADDRESS:PORT"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    text.parse()
        .map_err(|_| format!("`{text}`: expected ADDRESS:PORT like 0.0.0.0:1053"))
}

fn patterns(node: &Node, path: &str, d: &mut Diags) -> Vec<DomainPattern> {
    items(node, path, d, |n| {
        value::string(n).and_then(DomainPattern::parse_list)
    })
    .into_iter()
    .flatten()
    .collect()
}

/// `fake-ip-filter` in `rule` mode: `TYPE,ARGUMENT,fake-ip|real-ip` or `MATCH,ACTION`.
fn filter_rules(node: &Node, path: &str, d: &mut Diags) -> Vec<(DomainPattern, bool)> {
    let one = |n: &Node| -> Result<Vec<(DomainPattern, bool)>, String> {
        let text = value::string(n)?;
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let (kind, arg, action) = match parts.as_slice() {
            [k, a] if k.eq_ignore_ascii_case("MATCH") => ("MATCH", "", *a),
            [k, arg, a] => (*k, *arg, *a),
            _ => return Err(format!("`{text}`: expected TYPE,ARGUMENT,fake-ip|real-ip")),
        };
        let fake = match action.to_ascii_lowercase().as_str() {
            "fake-ip" => true,
            "real-ip" => false,
            other => return Err(format!("`{other}`: expected fake-ip or real-ip")),
        };
        let patterns = match kind.to_ascii_uppercase().as_str() {
            "MATCH" => vec![DomainPattern::Any],
            "DOMAIN" => vec![DomainPattern::parse(arg)?],
            "DOMAIN-SUFFIX" => vec![DomainPattern::parse(&format!("+.{arg}"))?],
            "DOMAIN-WILDCARD" => vec![DomainPattern::parse(arg)?],
            "GEOSITE" => DomainPattern::parse_list(&format!("geosite:{arg}"))?,
            "RULE-SET" => DomainPattern::parse_list(&format!("rule-set:{arg}"))?,
            other => return Err(format!("{other} is not read in fake-ip-filter rules")),
        };
        Ok(patterns.into_iter().map(|p| (p, fake)).collect())
    };
    items(node, path, d, one).into_iter().flatten().collect()
}

/// A list of nameservers; the ones tpgate cannot use are dropped with a warning.
fn servers(node: &Node, path: &str, d: &mut Diags) -> Vec<Nameserver> {
    let list: Vec<Node> = match &node.value {
        Value::Seq(l) => l.clone(),
        Value::Str(_) => vec![node.clone()],
        _ => {
            check::<()>(d, node, path, value::list(node).map(|_| ()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(text) = check(d, n, &p, value::string(n)) else {
            continue;
        };
        match parse_nameserver(text) {
            Ok((ns, warning)) => {
                if let Some(w) = warning {
                    d.warn(n.pos, &p, w);
                }
                out.push(ns);
            }
            Err(Unusable::Skip(why)) => d.warn(n.pos, &p, why),
            Err(Unusable::Invalid(why)) => d.error(n.pos, &p, why),
        }
    }
    out
}

fn policy(node: &Node, path: &str, d: &mut Diags) -> Vec<(DomainPattern, Vec<Nameserver>)> {
    if !matches!(node.value, Value::Null | Value::Map(_)) {
        let found = node.value.describe();
        d.error(node.pos, path, format!("expected a mapping, found {found}"));
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in entries(node, path, d) {
        let p = format!("{path}.{}", e.key);
        // mihomo also allows `"+.a.com,+.b.com"`, `geosite:cn,private` and `rule-set:x`.
        let list = servers(e.value, &p, d);
        if let Some(pats) = check(d, e.value, &p, DomainPattern::parse_list(e.key)) {
            for pat in pats {
                out.push((pat, list.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_modes() {
        let mut dns = Dns {
            enhanced_mode: EnhancedMode::FakeIp,
            fake_ip_filter: vec![DomainPattern::parse("+.lan").unwrap()],
            ..Dns::default()
        };
        assert!(dns.wants_fake("example.com") && !dns.wants_fake("nas.lan"));
        dns.fake_ip_filter_mode = FilterMode::Whitelist;
        assert!(!dns.wants_fake("example.com") && dns.wants_fake("nas.lan"));
        dns.enhanced_mode = EnhancedMode::RedirHost;
        assert!(!dns.wants_fake("nas.lan"));
    }
    fn load(text: &str) -> crate::config::Loaded {
        crate::config::load(text).unwrap_or_else(|e| panic!("{text:?}: {e:#?}"))
    }

    fn errors(text: &str) -> Vec<String> {
        match crate::config::load(text) {
            Ok(_) => panic!("{text:?} loaded"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn full_section_loads() {
        let l = load(
            "dns:\n  enable: true\n  listen: 0.0.0.0:1053\n  ipv6: true\n  enhanced-mode: fake-ip\n  \
             fake-ip-range: 198.18.0.1/16\n  fake-ip-range6: fdfe:dcba:9876::1/64\n  \
             fake-ip-filter: ['+.lan', '*.example', time.windows.com]\n  \
             fake-ip-filter-mode: blacklist\n  default-nameserver: [192.0.2.53]\n  \
             nameserver: [tls://dns.example:853, 'https://192.0.2.1/dns-query']\n  \
             fallback: [tcp://198.51.100.53]\n  \
             nameserver-policy: {'+.corp.example': 192.0.2.9, 'a.example,b.example': [tcp://192.0.2.8]}\n  \
             respect-rules: true\nhosts:\n  router.lan: 192.0.2.1\n  '+.multi.example': [203.0.113.1, '2001:db8::1']\nuse-hosts: true\n",
        );
        let d = &l.config.dns;
        assert!(d.enable && d.ipv6);
        assert_eq!(d.listen, Some("0.0.0.0:1053".parse().unwrap()));
        assert_eq!(d.enhanced_mode, EnhancedMode::FakeIp);
        assert_eq!(d.fake_ip_range.network().to_string(), "198.18.0.0");
        assert!(d.fake_ip_range6.is_some());
        assert!(!d.wants_fake("nas.lan") && !d.wants_fake("x.example"));
        assert!(!d.wants_fake("time.windows.com") && d.wants_fake("www.windows.com"));
        assert_eq!(d.nameserver.len(), 2);
        assert_eq!(d.nameserver[1].transport, Transport::Https);
        assert_eq!(d.fallback[0].transport, Transport::Tcp);
        assert_eq!(d.nameserver_policy.len(), 3);
        assert!(d.nameserver_policy[0].0.matches("git.corp.example"));
        assert_eq!(d.host_addrs("router.lan").unwrap().len(), 1);
        assert_eq!(d.host_addrs("x.multi.example").unwrap().len(), 2);
        let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
        // respect-rules is accepted: tpgate's own lookups already follow its routing.
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn hosts_before_dns_are_kept() {
        let l = load("hosts: {a.example: 192.0.2.7}\nuse-hosts: false\ndns: {enable: true, nameserver: [192.0.2.53]}\n");
        assert_eq!(l.config.dns.hosts.len(), 1);
        assert!(l.config.dns.host_addrs("a.example").is_none());
    }

    #[test]
    fn errors_have_positions() {
        assert_eq!(
            errors("dns:\n  enhanced-mode: fakeip\n")[0],
            "2:18: dns.enhanced-mode: expected one of fake-ip, redir-host, normal, found `fakeip`"
        );
        assert_eq!(
            errors("dns:\n  listen: 1053\n"),
            ["2:11: dns.listen: expected a string, found `1053`"]
        );
        assert_eq!(
            errors("dns:\n  fake-ip-range: 2001:db8::/64\n"),
            ["2:18: dns.fake-ip-range: expected an IPv4 range of /30 or wider"]
        );
        assert_eq!(
            errors("dns:\n  nameserver:\n    - 192.0.2.1\n    - ftp://x\n"),
            ["4:7: dns.nameserver[1]: `ftp://x`: unknown scheme `ftp`; expected udp, tcp, tls or https"]
        );
        assert_eq!(
            errors("dns:\n  default-nameserver: [dns.example]\n"),
            [
                "2:23: dns.default-nameserver[0]: default-nameserver must be IP addresses: they \
              resolve the names of the other nameservers"
            ]
        );
        assert_eq!(
            errors("hosts:\n  a.example: 'not a name'\n"),
            [
                "2:14: hosts.a.example: `not a name` is not an IP address or a host name: ' ' is \
              not allowed (letters, digits, `-` and `_`; IDNs in punycode)"
            ]
        );
        // Unknown keys are warnings now (mihomo ignores them), with the suggestion.
        let l = load("dns:\n  enable: true\n  nameserverr: []\n");
        let w = l
            .warnings
            .iter()
            .find(|w| w.unknown)
            .expect("unknown key warning");
        assert_eq!(
            w.to_string(),
            "3:3: dns.nameserverr: unknown key `nameserverr`; did you mean `nameserver`?; ignored"
        );
    }

    #[test]
    fn tun_configs_get_a_dns_path() {
        // fake-ip without listen: [::]:1053 and dns-hijack, with a warning saying so.
        let l =
            load("dns:\n  enable: true\n  enhanced-mode: fake-ip\n  nameserver: [192.0.2.53]\n");
        assert_eq!(l.config.dns.listen, Some("[::]:1053".parse().unwrap()));
        assert!(l.config.dns.listen_chosen && l.config.intercept.dns_hijack);
        assert!(
            l.warnings[0].message.contains("listens on [::]:1053"),
            "{:?}",
            l.warnings
        );
        // `dns-hijack: false` keeps the server but not the redirect.
        let l = load("ipv6: false\nintercept: {dns-hijack: false}\ndns:\n  enable: true\n  enhanced-mode: fake-ip\n  nameserver: [192.0.2.53]\n");
        assert_eq!(l.config.dns.listen, Some("0.0.0.0:1053".parse().unwrap()));
        assert!(!l.config.intercept.dns_hijack);
    }

    #[test]
    fn filters_and_policies_with_sets_and_rules() {
        let l = load("rule-providers:\n  cn: {type: inline, behavior: domain, payload: ['+.cn.example']}\ndns:\n  enable: true\n  listen: 0.0.0.0:1053\n  enhanced-mode: fake-ip\n  fake-ip-filter: ['rule-set:cn', 'geosite:private,apple', '+.lan,*.local']\n  nameserver-policy: {'geosite:cn': 192.0.2.1, 'rule-set:cn': 192.0.2.2}\n  proxy-server-nameserver: [192.0.2.3]\n  direct-nameserver: [192.0.2.4]\n");
        let d = &l.config.dns;
        assert_eq!(d.fake_ip_filter.len(), 5);
        assert!(!d.wants_fake("a.cn.example"), "bound to the rule provider");
        assert!(!d.wants_fake("nas.lan") && d.wants_fake("www.example.com"));
        assert_eq!(d.nameserver_policy.len(), 2);
        assert_eq!(l.config.dns.clone().sets_mut(true).len(), 3);
        assert_eq!(
            l.warnings.len(),
            1,
            "only 'no nameserver': {:?}",
            l.warnings
        );
        // rule mode: first match wins, no match is fake.
        let l = load("dns:\n  enable: true\n  listen: 0.0.0.0:1053\n  enhanced-mode: fake-ip\n  fake-ip-filter-mode: rule\n  fake-ip-filter: ['DOMAIN-SUFFIX,lan,real-ip', 'DOMAIN,x.example,fake-ip', 'MATCH,real-ip']\n");
        let d = &l.config.dns;
        assert!(
            !d.wants_fake("nas.lan") && d.wants_fake("x.example") && !d.wants_fake("y.example")
        );
        assert_eq!(
            errors("dns:\n  fake-ip-filter-mode: rule\n  fake-ip-filter: ['DOMAIN,a,maybe']\n")[0],
            "3:20: dns.fake-ip-filter[0]: `maybe`: expected fake-ip or real-ip"
        );
    }

    #[test]
    fn hosts_aliases_take_their_targets_addresses() {
        let l = load("hosts:\n  nas.lan: 192.0.2.7\n  files.lan: nas.lan\n  ext.lan: x.example\n  '+.multi.lan': [192.0.2.8, 192.0.2.9]\n");
        let d = &l.config.dns;
        assert_eq!(d.host_addrs("files.lan"), d.host_addrs("nas.lan"));
        assert_eq!(d.host_addrs("a.multi.lan").map(<[IpAddr]>::len), Some(2));
        assert!(d.host_addrs("ext.lan").is_none());
        let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("4:12: hosts.ext.lan: an alias of `x.example`"),
            "{w:?}"
        );
    }

    #[test]
    fn unsupported_parts_warn() {
        let l = load("dns:\n  enable: true\n  listen: 127.0.0.1:53\n  nameserver: [quic://dns.example, dhcp://eth0, 'https://doh.example/dns-query#PROXY']\n");
        let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(w[0].contains("quic nameservers are not supported"));
        assert!(w[1].contains("DHCP"));
        assert!(w[2].contains("ignored"));
        assert_eq!(l.config.dns.nameserver.len(), 2);
    }
}
