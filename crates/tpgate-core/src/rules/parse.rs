//! One Clash rule string (`TYPE,ARG,TARGET[,no-resolve]`) -> [`Rule`]. Knows which rule
//! types mihomo has that tpgate does not support yet, so callers can skip those with a
//! warning instead of failing; it does not know the config's proxy names: the caller
//! passes a lookup for them.

use std::net::IpAddr;

use ipnet::IpNet;

use super::domain::{normalise, DomainRegex, Wildcard};
use super::ruleset::RuleSetHandle;
use super::{Matcher, PortRange, Rule, Verdict};
use crate::net::{Network, Origin};

/// Why a rule string did not become a [`Rule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A rule type mihomo has and tpgate does not support yet; the caller skips the rule.
    #[error("{kind} rules are not supported yet")]
    Unsupported { kind: String },
    /// The rule is well formed but its target is neither a built-in action nor a name the
    /// caller's lookup knows.
    #[error("unknown target `{target}` (expected DIRECT, REJECT, REJECT-DROP or a proxy name)")]
    UnknownTarget { target: String },
    /// The rule is well formed but uses something tpgate lacks (a GeoIP.dat category, an
    /// option that changes what it matches): the caller skips it with this message.
    #[error("{0}")]
    Skipped(String),
    /// The rule cannot be read: the message says why.
    #[error("{0}")]
    Malformed(String),
}

/// Rule types of mihomo (and Clash Premium) that tpgate does not match on yet.
const UNSUPPORTED: &[&str] = &[
    "IP-SUFFIX",
    "SRC-IP-SUFFIX",
    "IN-PORT",
    "IN-TYPE",
    "IN-USER",
    "IN-NAME",
    "PROCESS-NAME-WILDCARD",
    "PROCESS-PATH-WILDCARD",
    "DSCP",
    "SCRIPT",
];

const SUPPORTED: &str = "IP-CIDR, IP-CIDR6, SRC-IP-CIDR, DST-PORT, SRC-PORT, NETWORK, ORIGIN, \
     DOMAIN, DOMAIN-SUFFIX, DOMAIN-KEYWORD, DOMAIN-WILDCARD, DOMAIN-REGEX, RULE-SET, AND, OR, NOT, \
     PROCESS-NAME, PROCESS-PATH, PROCESS-NAME-REGEX, PROCESS-PATH-REGEX, UID, GEOIP, SRC-GEOIP, \
     GEOSITE, SUB-RULE, MATCH";

/// Deepest nesting of AND/OR/NOT accepted (a bound for hostile input, far above real use).
const MAX_LOGIC_DEPTH: usize = 16;

/// Parses one rule as written in a Clash `rules:` list, with only the built-in targets.
/// Type, built-in target and `no-resolve` are case-insensitive; whitespace around commas is
/// ignored.
pub fn parse_rule(text: &str) -> Result<Rule, RuleError> {
    parse_rule_with(text, |_| None)
}

/// Like [`parse_rule`], but a target that is not a built-in is passed to `targets`, which
/// resolves a proxy or group name (exactly as written) to its action.
pub fn parse_rule_with(
    text: &str,
    targets: impl Fn(&str) -> Option<Verdict>,
) -> Result<Rule, RuleError> {
    let text = text.trim();
    let (head, tail) = text.split_once(',').unwrap_or((text, ""));
    let kind = head.trim().to_ascii_uppercase();
    if matches!(kind.as_str(), "AND" | "OR" | "NOT") {
        let (matcher, after) = logic(&kind, tail.trim_start(), 0)?;
        let after = after.trim_start();
        let Some(after) = after.strip_prefix(',') else {
            return Err(malformed(format!(
                "missing target after {kind}'s rule list: expected {kind},((...)),TARGET"
            )));
        };
        let rest: Vec<&str> = after.split(',').map(str::trim).collect();
        return finish(text, matcher, &rest, targets);
    }
    if kind == "SUB-RULE" {
        return sub_rule_rule(text, tail.trim_start());
    }
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    if kind.is_empty() {
        return Err(malformed(format!(
            "a rule is TYPE,ARGUMENT,TARGET (or MATCH,TARGET), found `{text}`"
        )));
    }
    if UNSUPPORTED.contains(&kind.as_str()) {
        return Err(RuleError::Unsupported { kind });
    }
    let (matcher, rest) = if kind == "MATCH" {
        (Matcher::Match, &fields[1..])
    } else {
        let arg = match fields.get(1) {
            Some(arg) if !arg.is_empty() => *arg,
            _ => {
                return Err(malformed(format!(
                    "missing argument: expected {kind},ARGUMENT,TARGET"
                )))
            }
        };
        (matcher(&kind, arg)?, &fields[2..])
    };
    finish(text, matcher, rest, targets)
}

/// The target and options after the matcher.
fn finish(
    text: &str,
    matcher: Matcher,
    rest: &[&str],
    targets: impl Fn(&str) -> Option<Verdict>,
) -> Result<Rule, RuleError> {
    let target = match rest.first() {
        Some(t) if !t.is_empty() => *t,
        _ => {
            return Err(malformed(
                "missing target (DIRECT, REJECT, REJECT-DROP or a proxy name)",
            ))
        }
    };
    let mut no_resolve = false;
    let mut ignored = Vec::new();
    for option in &rest[1..] {
        if option.eq_ignore_ascii_case("no-resolve") {
            no_resolve = true;
        } else if option.eq_ignore_ascii_case("src") {
            // mihomo: the CIDR is matched against the source; ignoring it would send other
            // traffic through this rule.
            return Err(RuleError::Skipped(
                "the `src` option is not supported yet; rule skipped".to_owned(),
            ));
        } else if !option.is_empty() {
            // mihomo reads only the options it knows and ignores the rest.
            ignored.push((*option).to_owned());
        }
    }
    // A declared name first: names are case-sensitive, so a proxy may be called `Direct`.
    let action = match (targets(target), target.to_ascii_uppercase().as_str()) {
        (Some(v), _) => v,
        (None, "DIRECT") => Verdict::Direct,
        (None, "REJECT") => Verdict::Reject,
        (None, "REJECT-DROP") => Verdict::RejectDrop,
        (None, _) => {
            return Err(RuleError::UnknownTarget {
                target: target.to_owned(),
            })
        }
    };
    Ok(Rule {
        matcher,
        verdict: action,
        no_resolve,
        text: text.to_owned(),
        ignored,
    })
}

fn malformed(message: impl Into<String>) -> RuleError {
    RuleError::Malformed(message.into())
}

/// `((R1),(R2),...)` after `AND,` / `OR,` / `NOT,`: the matcher and the text after the list.
fn logic<'t>(kind: &str, text: &'t str, depth: usize) -> Result<(Matcher, &'t str), RuleError> {
    if depth >= MAX_LOGIC_DEPTH {
        return Err(malformed(format!(
            "logic rules nested deeper than {MAX_LOGIC_DEPTH}"
        )));
    }
    let list_end = closing(text).ok_or_else(|| {
        malformed(format!(
            "{kind} takes a parenthesised list of rules, like {kind},((DOMAIN,a.com),(NETWORK,udp)),TARGET"
        ))
    })?;
    let inner = &text[1..list_end];
    let mut parts = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let end = if rest.starts_with('(') {
            closing(rest)
        } else {
            None
        }
        .ok_or_else(|| {
            malformed(format!(
                "{kind}: each rule in the list is in parentheses, found `{rest}`"
            ))
        })?;
        parts.push(sub_rule(&rest[1..end], depth)?);
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(malformed(format!(
                "{kind}: expected `,` between rules, found `{rest}`"
            )));
        }
    }
    let matcher = match (kind, parts.len()) {
        (_, 0) => return Err(malformed(format!("{kind} needs at least one rule"))),
        ("NOT", 1) => Matcher::Not(Box::new(parts.remove(0))),
        ("NOT", _) => return Err(malformed("NOT takes exactly one rule")),
        ("AND", _) => Matcher::And(parts),
        _ => Matcher::Or(parts),
    };
    Ok((matcher, &text[list_end + 1..]))
}

/// `SUB-RULE,(condition),name`; `tail` is what follows the first comma.
fn sub_rule_rule(text: &str, tail: &str) -> Result<Rule, RuleError> {
    let end = closing(tail).ok_or_else(|| {
        malformed("SUB-RULE takes a condition in parentheses and a list name, like SUB-RULE,(NETWORK,tcp),name")
    })?;
    let cond = sub_rule(&tail[1..end], 0)?;
    let name = tail[end + 1..].trim_start();
    let Some(name) = name
        .strip_prefix(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    else {
        return Err(malformed(
            "SUB-RULE needs the name of a sub-rules list after the condition",
        ));
    };
    if name.contains(',') {
        return Err(malformed(format!(
            "unexpected `{name}`: SUB-RULE ends with the list name"
        )));
    }
    Ok(Rule {
        matcher: Matcher::SubRule {
            cond: Box::new(cond),
            name: name.to_owned(),
            list: usize::MAX,
        },
        verdict: Verdict::Direct,
        no_resolve: false,
        text: text.to_owned(),
        ignored: Vec::new(),
    })
}

/// One `TYPE,ARG` (or nested logic) inside a logic rule's list.
fn sub_rule(text: &str, depth: usize) -> Result<Matcher, RuleError> {
    let text = text.trim();
    let (head, arg) = text.split_once(',').unwrap_or((text, ""));
    let kind = head.trim().to_ascii_uppercase();
    if matches!(kind.as_str(), "AND" | "OR" | "NOT") {
        let (m, after) = logic(&kind, arg.trim_start(), depth + 1)?;
        if !after.trim().is_empty() {
            return Err(malformed(format!(
                "unexpected `{}` after {kind}'s list",
                after.trim()
            )));
        }
        return Ok(m);
    }
    if UNSUPPORTED.contains(&kind.as_str()) {
        return Err(RuleError::Unsupported { kind });
    }
    if kind == "MATCH" {
        return Ok(Matcher::Match);
    }
    // mihomo reads what follows an entry's argument as that entry's own options.
    let (arg, options) = match arg.split_once(',') {
        Some((arg, options)) => (arg.trim(), Some(options)),
        None => (arg.trim(), None),
    };
    if arg.is_empty() {
        return Err(malformed(format!(
            "inside a logic rule each entry is (TYPE,ARGUMENT[,no-resolve]), found `({text})`"
        )));
    }
    let mut no_resolve = false;
    for option in options
        .into_iter()
        .flat_map(|o| o.split(','))
        .map(str::trim)
    {
        if option.eq_ignore_ascii_case("no-resolve") && !no_resolve {
            no_resolve = true;
        } else {
            return Err(malformed(format!(
                "unexpected `{option}` in `({text})`; only `no-resolve` may follow an entry's \
                 argument"
            )));
        }
    }
    let m = matcher(&kind, arg)?;
    Ok(if no_resolve && m.looks_at_dst_ip() {
        Matcher::NoResolve(Box::new(m))
    } else {
        m
    })
}

/// Index of the parenthesis closing the one `text` starts with.
fn closing(text: &str) -> Option<usize> {
    if !text.starts_with('(') {
        return None;
    }
    let mut depth = 0usize;
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn matcher(kind: &str, arg: &str) -> Result<Matcher, RuleError> {
    Ok(match kind {
        "DOMAIN" => Matcher::Domain(normalise(arg).map_err(malformed)?),
        // Bound to the provider of that name by the config loader.
        "RULE-SET" => Matcher::RuleSet(RuleSetHandle::new(arg)),
        "PROCESS-NAME" => Matcher::ProcessName(arg.to_owned()),
        "PROCESS-PATH" => Matcher::ProcessPath(arg.to_owned()),
        "PROCESS-NAME-REGEX" => {
            Matcher::ProcessNameRegex(DomainRegex::new(arg).map_err(malformed)?)
        }
        "PROCESS-PATH-REGEX" => {
            Matcher::ProcessPathRegex(DomainRegex::new(arg).map_err(malformed)?)
        }
        "UID" => Matcher::Uid(parse_uids(arg)?),
        "GEOIP" => Matcher::GeoIp(country(arg)?),
        "GEOSITE" => Matcher::GeoSite(RuleSetHandle::new(&arg.to_ascii_lowercase())),
        "SRC-GEOIP" => Matcher::SrcGeoIp(country(arg)?),
        "IP-ASN" => Matcher::IpAsn(asn(arg)?),
        "SRC-IP-ASN" => Matcher::SrcIpAsn(asn(arg)?),
        "DOMAIN-SUFFIX" => Matcher::DomainSuffix(normalise(arg).map_err(malformed)?),
        "DOMAIN-KEYWORD" => Matcher::DomainKeyword(normalise(arg).map_err(malformed)?),
        "DOMAIN-WILDCARD" => Matcher::DomainWildcard(Wildcard::new(arg).map_err(malformed)?),
        "DOMAIN-REGEX" => Matcher::DomainRegex(DomainRegex::new(arg).map_err(malformed)?),
        "IP-CIDR" => Matcher::IpCidr(parse_cidr(arg).map_err(malformed)?),
        "IP-CIDR6" => match parse_cidr(arg).map_err(malformed)? {
            net @ IpNet::V6(_) => Matcher::IpCidr(net),
            IpNet::V4(_) => {
                return Err(malformed(format!(
                    "IP-CIDR6 needs an IPv6 CIDR, found `{arg}`; use IP-CIDR for IPv4"
                )))
            }
        },
        "SRC-IP-CIDR" => Matcher::SrcIpCidr(parse_cidr(arg).map_err(malformed)?),
        "DST-PORT" => Matcher::DstPort(parse_ports(arg)?),
        "SRC-PORT" => Matcher::SrcPort(parse_ports(arg)?),
        "NETWORK" => Matcher::Network(match arg.to_ascii_lowercase().as_str() {
            "tcp" => Network::Tcp,
            "udp" => Network::Udp,
            _ => return Err(malformed(format!("NETWORK is tcp or udp, found `{arg}`"))),
        }),
        "ORIGIN" => Matcher::Origin(match arg.to_ascii_lowercase().as_str() {
            "local" => Origin::Local,
            "forwarded" => Origin::Forwarded,
            _ => {
                return Err(malformed(format!(
                    "ORIGIN is local or forwarded, found `{arg}`"
                )))
            }
        }),
        _ => {
            return Err(malformed(format!(
                "unknown rule type `{kind}` (supported: {SUPPORTED})"
            )))
        }
    })
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a bare address (a /32 or /128). Host bits are
/// cleared, as mihomo does.
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                return Err(format!(
                    "`{text}` is not a CIDR (like 10.0.0.0/8 or fd00::/8) or an IP address"
                ))
            }
        },
    };
    Ok(net.trunc())
}

/// A two-letter country code (any case), `LAN`, or a GeoIP.dat category (`telegram`,
/// `netflix`: matched with `geodata-mode`, never by a country database, as in mihomo);
/// upper case. `private` (the GeoIP.dat category of the same ranges) is read as `LAN`.
fn country(text: &str) -> Result<String, RuleError> {
    let code = text.trim().to_ascii_uppercase();
    if code == "PRIVATE" {
        return Ok("LAN".to_owned());
    }
    if !code.is_empty()
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'!')
    {
        Ok(code)
    } else {
        Err(malformed(format!(
            "`{text}` is not a country code (two letters like CN, or LAN)"
        )))
    }
}

/// An autonomous system number (`13335`, or `AS13335`), held as `AS13335`.
fn asn(text: &str) -> Result<String, RuleError> {
    let t = text.trim();
    let digits = t
        .strip_prefix("AS")
        .or_else(|| t.strip_prefix("as"))
        .unwrap_or(t);
    digits
        .parse::<u32>()
        .map(|n| format!("AS{n}"))
        .map_err(|_| malformed(format!("`{t}` is not an AS number (like 13335)")))
}

/// `1000`, `1000-1999`, or a `/`-separated list of those.
fn parse_uids(text: &str) -> Result<Vec<(u32, u32)>, RuleError> {
    text.split('/')
        .map(|part| {
            let num = |t: &str| {
                t.trim().parse::<u32>().map_err(|_| {
                    malformed(format!(
                        "`{t}` is not a user id (a number like 1000 or a range 1000-1999)"
                    ))
                })
            };
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if a > b {
                return Err(malformed(format!(
                    "uid range `{part}` ends before it starts"
                )));
            }
            Ok((a, b))
        })
        .collect()
}

/// `80`, `8000-8100`, or a `/`-separated list of those, with a message on error.
pub fn parse_ports_text(text: &str) -> Result<Vec<PortRange>, String> {
    parse_ports(text).map_err(|e| e.to_string())
}

/// `80`, `8000-8100`, or a `/`-separated list of those.
fn parse_ports(text: &str) -> Result<Vec<PortRange>, RuleError> {
    text.split('/')
        .map(|part| {
            let part = part.trim();
            let (start, end) = match part.split_once('-') {
                Some((a, b)) => (port(a.trim())?, port(b.trim())?),
                None => {
                    let p = port(part)?;
                    (p, p)
                }
            };
            if start > end {
                return Err(malformed(format!(
                    "port range `{part}` ends before it starts"
                )));
            }
            Ok(PortRange { start, end })
        })
        .collect()
}

fn port(text: &str) -> Result<u16, RuleError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!(
            "`{text}` is not a port (1-65535), a range like 8000-8100 or a list like 80/443"
        )));
    }
    match text.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(malformed(format!(
            "port `{text}` is out of range (1-65535)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::TargetId;

    fn ok(text: &str) -> Rule {
        parse_rule(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn bad(text: &str) -> String {
        match parse_rule(text) {
            Err(RuleError::Malformed(m)) => m,
            other => panic!("{text}: expected Malformed, got {other:?}"),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn every_supported_type() {
        let r = ok(" ip-cidr , 10.0.0.0/8 , direct ");
        assert_eq!(r.matcher, Matcher::IpCidr(net("10.0.0.0/8")));
        assert_eq!(r.verdict, Verdict::Direct);
        assert_eq!(r.text, "ip-cidr , 10.0.0.0/8 , direct");
        assert_eq!(
            ok("IP-CIDR,fd00::/8,REJECT").matcher,
            Matcher::IpCidr(net("fd00::/8"))
        );
        assert_eq!(ok("IP-CIDR6,2001:db8::/32,REJECT").verdict, Verdict::Reject);
        assert_eq!(
            ok("SRC-IP-CIDR,192.0.2.7,reject-drop").matcher,
            Matcher::SrcIpCidr(net("192.0.2.7/32"))
        );
        assert_eq!(
            ok("IP-CIDR,2001:db8::1,DIRECT").matcher,
            Matcher::IpCidr(net("2001:db8::1/128"))
        );
        assert_eq!(
            ok("IP-CIDR,10.1.2.3/8,DIRECT").matcher,
            Matcher::IpCidr(net("10.0.0.0/8"))
        );
        let pr = |start, end| PortRange { start, end };
        assert_eq!(
            ok("DST-PORT,80/443/8000-8100,REJECT").matcher,
            Matcher::DstPort(vec![pr(80, 80), pr(443, 443), pr(8000, 8100)])
        );
        assert_eq!(
            ok("SRC-PORT, 1 - 65535 ,DIRECT").matcher,
            Matcher::SrcPort(vec![pr(1, 65535)])
        );
        assert_eq!(
            ok("NETWORK,UDP,REJECT").matcher,
            Matcher::Network(Network::Udp)
        );
        assert_eq!(
            ok("network,tcp,REJECT").matcher,
            Matcher::Network(Network::Tcp)
        );
        assert_eq!(
            ok("ORIGIN,local,DIRECT").matcher,
            Matcher::Origin(Origin::Local)
        );
        assert_eq!(
            ok("ORIGIN,Forwarded,DIRECT").matcher,
            Matcher::Origin(Origin::Forwarded)
        );
        assert_eq!(ok("MATCH,DIRECT").matcher, Matcher::Match);
        assert_eq!(ok("match , Reject-Drop").verdict, Verdict::RejectDrop);
    }

    #[test]
    fn no_resolve() {
        assert!(ok("IP-CIDR,10.0.0.0/8,DIRECT,no-resolve").no_resolve);
        assert!(ok("IP-CIDR,10.0.0.0/8,DIRECT, No-Resolve ").no_resolve);
        assert!(!ok("IP-CIDR,10.0.0.0/8,DIRECT").no_resolve);
        // mihomo ignores options it does not know, and repeated ones; so does tpgate (the
        // loader warns about them).
        let r = ok("IP-CIDR,10.0.0.0/8,DIRECT,no-resolve,no-resolve,extra");
        assert!(r.no_resolve);
        assert_eq!(r.ignored, ["extra"]);
    }

    #[test]
    fn unsupported_types_are_recognised() {
        for text in [
            "PROCESS-NAME-WILDCARD,cu*,DIRECT",
            "in-port,7890,DIRECT",
            "AND,((IN-PORT,7890),(NETWORK,UDP)),DIRECT",
            "OR,((NOT,((IN-PORT,7890))),(NETWORK,UDP)),DIRECT",
        ] {
            assert!(
                matches!(parse_rule(text), Err(RuleError::Unsupported { .. })),
                "{text}"
            );
        }
        assert_eq!(
            parse_rule("in-port,7890,DIRECT").unwrap_err().to_string(),
            "IN-PORT rules are not supported yet"
        );
        assert_eq!(
            ok("ip-asn,13335,DIRECT").matcher,
            Matcher::IpAsn("AS13335".into())
        );
        assert_eq!(
            ok("SRC-IP-ASN,AS64500,DIRECT").matcher,
            Matcher::SrcIpAsn("AS64500".into())
        );
        assert!(bad("IP-ASN,cloudflare,DIRECT").contains("not an AS number"));
    }

    #[test]
    fn domain_rules() {
        assert_eq!(
            ok("DOMAIN,WWW.Example.com.,DIRECT").matcher,
            Matcher::Domain("www.example.com".into())
        );
        assert_eq!(
            ok("domain-suffix,example.com,REJECT").matcher,
            Matcher::DomainSuffix("example.com".into())
        );
        assert_eq!(
            ok("DOMAIN-KEYWORD,Google,REJECT").matcher,
            Matcher::DomainKeyword("google".into())
        );
        assert!(matches!(
            ok("DOMAIN-WILDCARD,*.example.com,DIRECT").matcher,
            Matcher::DomainWildcard(_)
        ));
        assert!(matches!(
            ok(r"DOMAIN-REGEX,^ad\d+\.,DIRECT").matcher,
            Matcher::DomainRegex(_)
        ));
        assert!(bad("DOMAIN-REGEX,(,DIRECT").contains("regular expression"));
        assert!(bad("DOMAIN,exa mple.com,DIRECT").contains("not a domain name"));
    }

    #[test]
    fn logic_rules() {
        let r = ok("AND,((DOMAIN-SUFFIX,example.com),(NETWORK,UDP)),REJECT");
        assert_eq!(
            r.matcher,
            Matcher::And(vec![
                Matcher::DomainSuffix("example.com".into()),
                Matcher::Network(Network::Udp)
            ])
        );
        assert_eq!(r.verdict, Verdict::Reject);
        let r = ok(
            "OR, ( (DST-PORT,25) , (NOT,((IP-CIDR,10.0.0.0/8,no-resolve))) ) ,DIRECT,no-resolve",
        );
        assert!(r.no_resolve);
        assert_eq!(
            r.matcher,
            Matcher::Or(vec![
                Matcher::DstPort(vec![PortRange { start: 25, end: 25 }]),
                Matcher::Not(Box::new(Matcher::NoResolve(Box::new(Matcher::IpCidr(
                    net("10.0.0.0/8")
                )))))
            ])
        );
        assert!(bad("AND,(DOMAIN,a.com),DIRECT").contains("in parentheses"));
        assert!(bad("AND,((DOMAIN,a.com),(NETWORK,UDP),DIRECT").contains("parenthesised"));
        assert!(bad("NOT,((DOMAIN,a.com),(NETWORK,UDP)),DIRECT").contains("exactly one"));
        assert!(bad("AND,(),DIRECT").contains("at least one"));
        assert!(bad("AND,((DOMAIN,a.com))").contains("missing target"));
        let deep = format!(
            "{}(DOMAIN,a.com){},DIRECT",
            "NOT,((".repeat(20),
            "))".repeat(20)
        );
        assert!(
            bad(&deep[..]).contains("nested deeper") || bad(&deep[..]).contains("in parentheses")
        );
    }

    #[test]
    fn options_of_logic_entries() {
        let cidr = || Matcher::IpCidr(net("203.0.113.0/24"));
        let r = ok("AND,((IP-CIDR,203.0.113.0/24,no-resolve),(NETWORK,udp)),REJECT");
        assert!(!r.no_resolve);
        assert_eq!(
            r.matcher,
            Matcher::And(vec![
                Matcher::NoResolve(Box::new(cidr())),
                Matcher::Network(Network::Udp)
            ])
        );
        assert_eq!(
            ok("OR,((IP-CIDR , 203.0.113.0/24 , NO-RESOLVE )),DIRECT").matcher,
            Matcher::Or(vec![Matcher::NoResolve(Box::new(cidr()))])
        );
        assert_eq!(
            ok("NOT,((IP-CIDR,203.0.113.0/24)),DIRECT").matcher,
            Matcher::Not(Box::new(cidr()))
        );
        // Where the address is never looked at, the option changes nothing.
        assert_eq!(
            ok("NOT,((DOMAIN,a.example,no-resolve)),DIRECT").matcher,
            Matcher::Not(Box::new(Matcher::Domain("a.example".into())))
        );
        let r = ok("SUB-RULE,(GEOIP,CN,no-resolve),list");
        let Matcher::SubRule { cond, .. } = r.matcher else {
            panic!("{r:?}")
        };
        assert_eq!(
            *cond,
            Matcher::NoResolve(Box::new(Matcher::GeoIp("CN".into())))
        );
        assert!(
            bad("AND,((IP-CIDR,203.0.113.0/24,src),(NETWORK,udp)),REJECT")
                .contains("unexpected `src` in `(IP-CIDR,203.0.113.0/24,src)`")
        );
        assert!(
            bad("AND,((IP-CIDR,203.0.113.0/24,no-resolve,no-resolve)),REJECT")
                .contains("only `no-resolve` may follow")
        );
        assert!(bad("AND,((IP-CIDR,,no-resolve)),REJECT").contains("TYPE,ARGUMENT"));
        assert!(bad("AND,((IP-CIDR)),REJECT").contains("TYPE,ARGUMENT"));
    }

    #[test]
    fn unknown_target() {
        assert_eq!(
            parse_rule("MATCH,Proxy"),
            Err(RuleError::UnknownTarget {
                target: "Proxy".into()
            })
        );
        assert_eq!(
            parse_rule("DST-PORT,443,🚀 Proxy "),
            Err(RuleError::UnknownTarget {
                target: "🚀 Proxy".into()
            })
        );
    }

    #[test]
    fn named_targets_go_through_the_lookup() {
        let lookup = |name: &str| (name == "🚀 Proxy").then_some(Verdict::Proxy(TargetId(3)));
        let r = parse_rule_with("DST-PORT,443,🚀 Proxy ,no-resolve", lookup).unwrap();
        assert_eq!(r.verdict, Verdict::Proxy(TargetId(3)));
        assert!(r.no_resolve);
        assert_eq!(
            parse_rule_with("MATCH,🚀 proxy", lookup),
            Err(RuleError::UnknownTarget {
                target: "🚀 proxy".into()
            })
        );
        // Names are case-sensitive and a declared name wins: a proxy may be called
        // `Direct`; the built-in is found in any case only when no name matches.
        let direct_proxy = |n: &str| (n == "Direct").then_some(Verdict::Proxy(TargetId(0)));
        assert_eq!(
            parse_rule_with("MATCH,Direct", direct_proxy)
                .unwrap()
                .verdict,
            Verdict::Proxy(TargetId(0))
        );
        assert_eq!(
            parse_rule_with("MATCH,direct", direct_proxy)
                .unwrap()
                .verdict,
            Verdict::Direct
        );
    }

    #[test]
    fn malformed() {
        assert!(bad("IP-CIDR,10.0.0.300/8,DIRECT").contains("is not a CIDR"));
        assert!(bad("IP-CIDR,10.0.0.0/33,DIRECT").contains("is not a CIDR"));
        assert!(bad("IP-CIDR6,10.0.0.0/8,DIRECT").contains("needs an IPv6"));
        assert!(bad("DST-PORT,0-99999,DIRECT").contains("out of range"));
        assert!(bad("DST-PORT,0,DIRECT").contains("out of range"));
        assert!(bad("DST-PORT,99999,DIRECT").contains("out of range"));
        assert!(bad("DST-PORT,100-80,DIRECT").contains("ends before"));
        assert!(bad("DST-PORT,80//443,DIRECT").contains("is not a port"));
        assert!(bad("DST-PORT,http,DIRECT").contains("is not a port"));
        assert!(bad("DST-PORT,80").contains("missing target"));
        assert!(bad("DST-PORT,80,").contains("missing target"));
        assert!(bad("DST-PORT").contains("missing argument"));
        assert!(bad("DST-PORT,,DIRECT").contains("missing argument"));
        assert!(bad("MATCH").contains("missing target"));
        assert_eq!(ok("MATCH,DIRECT,extra").ignored, ["extra"]);
        assert!(matches!(
            parse_rule("IP-CIDR,10.0.0.0/8,DIRECT,src"),
            Err(RuleError::Skipped(_))
        ));
        // GeoIP.dat categories are kept (matched with `geodata-mode`).
        assert_eq!(
            ok("GEOIP,telegram,DIRECT").matcher,
            Matcher::GeoIp("TELEGRAM".into())
        );
        assert!(bad("GEOIP,a b,DIRECT").contains("not a country code"));
        assert_eq!(
            ok("GEOIP,private,DIRECT").matcher,
            ok("GEOIP,LAN,DIRECT").matcher
        );
        assert!(bad("NETWORK,icmp,DIRECT").contains("tcp or udp"));
        assert!(bad("ORIGIN,lan,DIRECT").contains("local or forwarded"));
        assert!(bad("FOO,1,DIRECT").contains("unknown rule type `FOO`"));
        assert!(bad("").contains("TYPE,ARGUMENT,TARGET"));
        assert!(bad(" ,x,DIRECT").contains("TYPE,ARGUMENT,TARGET"));
    }

    #[test]
    fn malformed_wins_over_unknown_target() {
        assert!(bad("IP-CIDR,nope,Proxy").contains("is not a CIDR"));
        assert!(bad("IP-CIDR,nope,Proxy,bogus").contains("is not a CIDR"));
    }
}
