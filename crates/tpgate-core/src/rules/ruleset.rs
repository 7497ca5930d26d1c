//! `RULE-SET` contents (mihomo rule providers): the three behaviours (`domain`, `ipcidr`,
//! `classical`) in the two text formats (`yaml` with a `payload:` list, `text` one entry per
//! line). Parsing is pure; reading or downloading the file is the daemon's business. A rule
//! refers to its set through a [`RuleSetHandle`], filled when the provider is loaded and
//! swapped whole when it is refreshed, so matching never sees half a set.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

use super::domain::{normalise, Wildcard};
use super::{parse_cidr, FlowMeta, Matcher};

/// How a provider's entries are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// `+.example.com`, `.example.com`, `*.example.com`, `example.com`.
    Domain,
    /// CIDRs and bare addresses.
    IpCidr,
    /// Rule lines without a target: `DOMAIN-SUFFIX,example.com`, `IP-CIDR,10.0.0.0/8`.
    Classical,
}

impl Behavior {
    pub fn name(self) -> &'static str {
        match self {
            Self::Domain => "domain",
            Self::IpCidr => "ipcidr",
            Self::Classical => "classical",
        }
    }
}

/// How a provider's file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `payload:` followed by a list of strings.
    Yaml,
    /// One entry per line; `#` starts a comment.
    Text,
    /// mihomo's binary format (domain and ipcidr sets), see [`super::mrs_entries`].
    Mrs,
}

/// A parsed set.
#[derive(Debug, Default)]
pub struct RuleSet {
    exact: HashSet<Box<str>>,
    /// `+.x`: x and below; stored as `x`.
    suffix: HashSet<Box<str>>,
    /// `.x`: strictly below x; stored as `x`.
    below: HashSet<Box<str>>,
    globs: Vec<Wildcard>,
    v4: HashMap<(u8, u32), ()>,
    v6: HashMap<(u8, u128), ()>,
    lens4: Vec<u8>,
    lens6: Vec<u8>,
    classical: Vec<Matcher>,
    len: usize,
}

/// A problem in one entry: 1-based line and column in the provider's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl RuleSet {
    /// Parses a provider's text. Every bad entry is reported (the set is unusable then);
    /// classical entries of rule types tpgate lacks are skipped and returned as warnings.
    pub fn parse(
        behavior: Behavior,
        format: Format,
        text: &str,
    ) -> Result<(Self, Vec<EntryError>), Vec<EntryError>> {
        let entries = match format {
            Format::Text | Format::Mrs => text_entries(text),
            Format::Yaml => yaml_entries(text)?,
        };
        let mut set = Self::default();
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        for (line, col, entry) in entries {
            let err = |message: String| EntryError { line, col, message };
            match set.add(behavior, entry) {
                Ok(()) => {}
                Err(AddError::Skipped(m)) => warnings.push(err(m)),
                Err(AddError::Bad(m)) => errors.push(err(m)),
            }
        }
        if errors.is_empty() {
            Ok((set, warnings))
        } else {
            Err(errors)
        }
    }

    /// Parses a provider's file as it came: text, or the binary mrs format. Errors and
    /// warnings are as [`Self::parse`]'s (an mrs file that cannot be read is one error at
    /// 1:1; its entries have the line of their rank).
    pub fn parse_bytes(
        behavior: Behavior,
        format: Format,
        bytes: &[u8],
    ) -> Result<(Self, Vec<EntryError>), Vec<EntryError>> {
        let one = |message: String| {
            vec![EntryError {
                line: 1,
                col: 1,
                message,
            }]
        };
        match format {
            Format::Mrs => {
                let entries = super::mrs_entries(bytes, behavior).map_err(one)?;
                Self::parse(behavior, Format::Text, &entries.join("\n"))
            }
            _ => match std::str::from_utf8(bytes) {
                Ok(text) => Self::parse(behavior, format, text),
                Err(e) => Err(one(format!("not UTF-8 text: {e}"))),
            },
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the set has address entries (CIDRs, or classical rules on addresses).
    pub fn has_cidrs(&self) -> bool {
        !self.v4.is_empty()
            || !self.v6.is_empty()
            || self.classical.iter().any(Matcher::looks_at_dst_ip)
    }

    /// The set's entries as destination prefixes, when that is all it holds (no names, no
    /// classical rules): what it matches then depends on the address alone.
    pub fn prefixes_only(&self) -> Option<Vec<IpNet>> {
        if self.has_domains() || !self.classical.is_empty() {
            return None;
        }
        let v4 = self.v4.keys().filter_map(|&(len, bits)| {
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(bits), len)
                .ok()
                .map(IpNet::V4)
        });
        let v6 = self.v6.keys().filter_map(|&(len, bits)| {
            ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(bits), len)
                .ok()
                .map(IpNet::V6)
        });
        Some(v4.chain(v6).collect())
    }

    /// Whether the set has name entries (domains, globs, or classical rules on names).
    pub fn has_domains(&self) -> bool {
        !self.exact.is_empty()
            || !self.suffix.is_empty()
            || !self.below.is_empty()
            || !self.globs.is_empty()
            || self.classical.iter().any(Matcher::looks_at_name)
    }

    fn add(&mut self, behavior: Behavior, entry: &str) -> Result<(), AddError> {
        match behavior {
            Behavior::Domain => self.add_domain(entry).map_err(AddError::Bad)?,
            Behavior::IpCidr => self.add_cidr(parse_cidr(entry).map_err(AddError::Bad)?),
            Behavior::Classical => {
                // A set's lines have no target; options such as `no-resolve` follow the
                // argument, where a rule line has its target.
                let rule = match entry.rsplit_once(',') {
                    Some((head, opt)) if opt.trim().eq_ignore_ascii_case("no-resolve") => {
                        format!("{head},DIRECT,no-resolve")
                    }
                    _ => format!("{entry},DIRECT"),
                };
                match super::parse_rule(&rule) {
                    Ok(r) => match r.matcher {
                        Matcher::IpCidr(net) => self.add_cidr(net),
                        Matcher::Domain(d) => {
                            self.exact.insert(d.into());
                        }
                        Matcher::DomainSuffix(s) if !s.starts_with('.') => {
                            self.suffix.insert(s.into());
                        }
                        Matcher::RuleSet(_) | Matcher::GeoSite(_) => {
                            return Err(AddError::Bad(
                                "RULE-SET and GEOSITE inside a rule set are not supported".into(),
                            ))
                        }
                        // The ASN lookup is made for the main rules' IP-ASN entries only.
                        Matcher::IpAsn(_) | Matcher::SrcIpAsn(_) => return Err(AddError::Skipped(
                            "IP-ASN rules inside a rule set are not supported yet; entry skipped"
                                .into(),
                        )),
                        other => self.classical.push(other),
                    },
                    Err(super::RuleError::Unsupported { kind }) => {
                        return Err(AddError::Skipped(format!(
                            "{kind} rules are not supported yet; entry skipped"
                        )))
                    }
                    Err(super::RuleError::Skipped(why)) => {
                        return Err(AddError::Skipped(
                            why.replace("rule skipped", "entry skipped"),
                        ))
                    }
                    Err(e) => return Err(AddError::Bad(e.to_string())),
                }
            }
        }
        self.len += 1;
        Ok(())
    }

    fn add_domain(&mut self, entry: &str) -> Result<(), String> {
        if entry == "+" || entry == "*" {
            self.globs.push(Wildcard::new("*")?);
        } else if let Some(rest) = entry.strip_prefix("+.") {
            self.suffix.insert(normalise(rest)?.into());
        } else if let Some(rest) = entry.strip_prefix('.') {
            self.below.insert(normalise(rest)?.into());
        } else if entry.contains(['*', '?']) {
            // mihomo: `*` is one label here; a glob over the dotted name, restricted below.
            self.globs.push(Wildcard::new(entry)?);
        } else {
            self.exact.insert(normalise(entry)?.into());
        }
        Ok(())
    }

    /// A name and every name below it.
    pub(crate) fn add_suffix(&mut self, name: &str) {
        self.suffix.insert(name.into());
        self.len += 1;
    }

    /// Exactly this name.
    pub(crate) fn add_exact(&mut self, name: &str) {
        self.exact.insert(name.into());
        self.len += 1;
    }

    /// Any other matcher (keywords, regexes).
    pub(crate) fn add_matcher(&mut self, m: Matcher) {
        self.classical.push(m);
        self.len += 1;
    }

    fn add_cidr(&mut self, net: IpNet) {
        match net.trunc() {
            IpNet::V4(n) => {
                self.v4.insert((n.prefix_len(), u32::from(n.network())), ());
                if !self.lens4.contains(&n.prefix_len()) {
                    self.lens4.push(n.prefix_len());
                }
            }
            IpNet::V6(n) => {
                self.v6
                    .insert((n.prefix_len(), u128::from(n.network())), ());
                if !self.lens6.contains(&n.prefix_len()) {
                    self.lens6.push(n.prefix_len());
                }
            }
        }
    }

    /// Whether the flow matches an entry: its name for domain entries, its destination for
    /// CIDR entries, anything a classical entry looks at.
    pub fn matches(&self, flow: &FlowMeta<'_>) -> bool {
        if let Some(host) = flow.host {
            if self.matches_name(host) {
                return true;
            }
        }
        self.contains_ip(flow.dst.ip()) || self.classical.iter().any(|m| m.matches(flow))
    }

    /// Whether the set's domain entries hold `host` (what `fake-ip-filter` and
    /// `nameserver-policy` ask of `rule-set:`/`geosite:` entries).
    pub fn matches_host(&self, host: &str) -> bool {
        self.matches_name(host)
    }

    fn matches_name(&self, host: &str) -> bool {
        if self.exact.contains(host) {
            return true;
        }
        let mut rest = host;
        let mut first = true;
        loop {
            if self.suffix.contains(rest) || (!first && self.below.contains(rest)) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, r)) => rest = r,
                None => break,
            }
            first = false;
        }
        self.globs.iter().any(|g| g.matches(host))
    }

    fn contains_ip(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.lens4.iter().any(|&len| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    self.v4.contains_key(&(len, bits & mask))
                })
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.lens6.iter().any(|&len| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    self.v6.contains_key(&(len, bits & mask))
                })
            }
        }
    }
}

enum AddError {
    Skipped(String),
    Bad(String),
}

/// Non-empty, non-comment lines with their line and column.
fn text_entries(text: &str) -> Vec<(usize, usize, &str)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let body = line.split('#').next().unwrap_or("");
            let trimmed = body.trim();
            (!trimmed.is_empty()).then(|| {
                let col = body.len() - body.trim_start().len() + 1;
                (i + 1, col, trimmed)
            })
        })
        .collect()
}

/// The `payload:` list of a YAML provider file. Rule-provider files are plain lists of
/// strings, so a line reader suffices and keeps positions exact: `payload:` then `- item`
/// lines (quoted or not), comments and blank lines.
fn yaml_entries(text: &str) -> Result<Vec<(usize, usize, &str)>, Vec<EntryError>> {
    let mut out = Vec::new();
    let mut in_payload = false;
    let mut saw_payload = false;
    for (i, line) in text.lines().enumerate() {
        let body = strip_comment(line);
        let trimmed = body.trim_end();
        if trimmed.trim().is_empty() {
            continue;
        }
        let indent = trimmed.len() - trimmed.trim_start().len();
        let t = trimmed.trim_start();
        if indent == 0 && !t.starts_with('-') {
            in_payload = t == "payload:";
            if in_payload {
                saw_payload = true;
            } else if let Some(rest) = t.strip_prefix("payload:") {
                let rest = rest.trim();
                if rest != "[]" {
                    return Err(vec![EntryError {
                        line: i + 1,
                        col: indent + 1,
                        message: "payload must be a block list (`- entry` lines)".into(),
                    }]);
                }
                saw_payload = true;
            }
            continue;
        }
        if !in_payload {
            continue;
        }
        let Some(item) = t.strip_prefix('-') else {
            return Err(vec![EntryError {
                line: i + 1,
                col: indent + 1,
                message: format!("expected `- entry` in payload, found `{t}`"),
            }]);
        };
        let item_col = indent + 2 + (item.len() - item.trim_start().len());
        let item = item.trim();
        let item = unquote(item);
        if !item.is_empty() {
            out.push((i + 1, item_col, item));
        }
    }
    if !saw_payload {
        return Err(vec![EntryError {
            line: 1,
            col: 1,
            message: "no `payload:` list (is this a text-format file? set `format: text`)".into(),
        }]);
    }
    Ok(out)
}

fn strip_comment(line: &str) -> &str {
    // A `#` starts a comment at the line start or after whitespace, outside quotes.
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev_space => return &line[..i],
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn unquote(s: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// Where a `RULE-SET` rule finds its set: shared by every rule naming the provider, filled
/// when the provider loads, replaced whole on refresh. Empty until then: matches nothing.
#[derive(Clone, Default)]
pub struct RuleSetHandle {
    name: Arc<str>,
    set: Arc<RwLock<Arc<RuleSet>>>,
}

impl RuleSetHandle {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            set: Arc::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Installs a freshly loaded set.
    pub fn replace(&self, set: RuleSet) {
        let fresh = Arc::new(set);
        match self.set.write() {
            Ok(mut s) => *s = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// The current set.
    pub fn current(&self) -> Arc<RuleSet> {
        match self.set.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn matches(&self, flow: &FlowMeta<'_>) -> bool {
        match self.set.read() {
            Ok(s) => s.matches(flow),
            Err(poisoned) => poisoned.into_inner().matches(flow),
        }
    }

    /// Whether two handles are the same provider's.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.set, &other.set)
    }
}

impl fmt::Debug for RuleSetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuleSet({})", self.name)
    }
}

/// Handles compare by provider name: a rule parsed twice names the same set.
impl PartialEq for RuleSetHandle {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for RuleSetHandle {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Network, Origin};

    fn flow(host: Option<&str>, dst: &str) -> FlowMeta<'static> {
        FlowMeta {
            network: Network::Tcp,
            src: "198.51.100.2:1000".parse().unwrap(),
            dst: dst.parse().unwrap(),
            origin: Origin::Forwarded,
            host: host.map(|h| &*Box::leak(h.to_owned().into_boxed_str())),
            process: None,
            geo: None,
        }
    }

    fn named(set: &RuleSet, host: &str) -> bool {
        set.matches(&flow(Some(host), "203.0.113.9:443"))
    }

    #[test]
    fn domain_behaviour_in_yaml() {
        let text = "# ads\npayload:\n  - '+.ads.example'\n  - \".below.example\"\n  - exact.example # c\n  - '*.one.example'\n";
        let (set, warnings) = RuleSet::parse(Behavior::Domain, Format::Yaml, text).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(set.len(), 4);
        assert!(named(&set, "ads.example") && named(&set, "x.y.ads.example"));
        assert!(!named(&set, "below.example") && named(&set, "a.below.example"));
        assert!(named(&set, "exact.example") && !named(&set, "www.exact.example"));
        assert!(named(&set, "a.one.example") && !named(&set, "one.example"));
        assert!(!set.matches(&flow(None, "203.0.113.9:443")));
    }

    #[test]
    fn ipcidr_behaviour_in_text() {
        let text = "192.0.2.0/24\n# comment\n\n2001:db8:1::/48\n203.0.113.7\n";
        let (set, _) = RuleSet::parse(Behavior::IpCidr, Format::Text, text).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.matches(&flow(None, "192.0.2.200:1")));
        assert!(set.matches(&flow(None, "[2001:db8:1:ff::1]:1")));
        assert!(set.matches(&flow(None, "203.0.113.7:1")));
        assert!(set.matches(&flow(None, "[::ffff:192.0.2.1]:1")));
        assert!(!set.matches(&flow(None, "203.0.113.8:1")));
    }

    #[test]
    fn classical_behaviour_with_skips() {
        let text = "payload:\n  - DOMAIN-SUFFIX,example.com\n  - IP-CIDR,192.0.2.0/24,no-resolve\n  - DST-PORT,25\n  - IP-ASN,13335\n";
        let (set, warnings) = RuleSet::parse(Behavior::Classical, Format::Yaml, text).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(warnings.len(), 1);
        assert_eq!((warnings[0].line, warnings[0].col), (5, 5));
        assert!(named(&set, "www.example.com"));
        assert!(set.matches(&flow(None, "192.0.2.1:80")));
        assert!(set.matches(&flow(None, "203.0.113.1:25")));
        assert!(!set.matches(&flow(None, "203.0.113.1:26")));
    }

    #[test]
    fn errors_carry_positions() {
        let errs = RuleSet::parse(Behavior::IpCidr, Format::Text, "192.0.2.0/24\n  nonsense\n")
            .unwrap_err();
        assert_eq!((errs[0].line, errs[0].col), (2, 3));
        let errs = RuleSet::parse(Behavior::Domain, Format::Yaml, "- a.example\n").unwrap_err();
        assert!(errs[0].message.contains("payload"), "{errs:?}");
        let errs =
            RuleSet::parse(Behavior::Classical, Format::Text, "MATCH\nRULE-SET,x\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 2);
    }

    #[test]
    fn handle_swaps_whole_sets() {
        let h = RuleSetHandle::new("ads");
        let f = flow(Some("a.ads.example"), "203.0.113.9:443");
        assert!(!h.matches(&f), "an unloaded set matches nothing");
        let (set, _) = RuleSet::parse(Behavior::Domain, Format::Text, "+.ads.example").unwrap();
        h.clone().replace(set);
        assert!(h.matches(&f));
        assert_eq!(h.current().len(), 1);
    }
}
