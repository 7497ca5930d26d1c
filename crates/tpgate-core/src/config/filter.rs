//! Selecting proxies by name and type, as mihomo's groups and proxy providers do:
//! `filter` (regexes separated by a backtick; a proxy is kept when one matches, in the
//! order of the regexes), `exclude-filter` (one regex; a match drops the proxy) and
//! `exclude-type` (type names separated by `|`, compared case-insensitively). mihomo's
//! regexes are .NET-flavoured (lookarounds included), so `fancy-regex` reads them.

use std::fmt;

use fancy_regex::Regex;

/// One compiled regex, compared by its text.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    re: Regex,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Self, String> {
        let re = fancy_regex::RegexBuilder::new(text)
            .backtrack_limit(100_000)
            .build()
            .map_err(|e| format!("`{text}` is not a valid regex: {e}"))?;
        Ok(Self {
            text: text.to_owned(),
            re,
        })
    }

    /// Whether the regex matches somewhere in `name`; a regex that gives up (too much
    /// backtracking) does not match.
    pub fn is_match(&self, name: &str) -> bool {
        self.re.is_match(name).unwrap_or(false)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `text` with every match replaced by `with` (`$1` and `${name}` expand), as
    /// mihomo's `override.proxy-name` does.
    pub fn replace_all(&self, text: &str, with: &str) -> String {
        // mihomo writes groups .NET-style, `$1`; fancy-regex reads the same syntax.
        self.re.replace_all(text, with).into_owned()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

/// `filter`, `exclude-filter` and `exclude-type` of a group or a proxy provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameFilter {
    /// Empty: every name passes.
    pub filter: Vec<Pattern>,
    pub exclude: Option<Pattern>,
    /// Lower-cased type names.
    pub exclude_types: Vec<String>,
}

impl NameFilter {
    /// Whether a proxy of this name and type passes `exclude-filter` and `exclude-type`.
    pub fn keeps(&self, name: &str, kind: &str) -> bool {
        !self.exclude.as_ref().is_some_and(|p| p.is_match(name))
            && !self
                .exclude_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(kind))
    }

    /// The items of `list` that `filter` selects, in filter order then list order, each
    /// name once (mihomo's order). Without `filter`, all of them.
    pub fn select<'a, T>(&self, list: &'a [T], name: impl Fn(&T) -> &str) -> Vec<&'a T> {
        if self.filter.is_empty() {
            return list.iter().collect();
        }
        let mut out: Vec<&T> = Vec::new();
        for p in &self.filter {
            for item in list {
                let n = name(item);
                if p.is_match(n) && !out.iter().any(|o| name(o) == n) {
                    out.push(item);
                }
            }
        }
        out
    }

    /// Parses the three fields as written (each may be absent).
    pub fn parse(
        filter: Option<&str>,
        exclude: Option<&str>,
        exclude_type: Option<&str>,
    ) -> Result<Self, String> {
        let filter = match filter.filter(|f| !f.is_empty()) {
            Some(f) => f.split('`').map(Pattern::new).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let exclude = exclude
            .filter(|f| !f.is_empty())
            .map(Pattern::new)
            .transpose()?;
        let exclude_types = exclude_type
            .map(|t| {
                t.split('|')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            filter,
            exclude,
            exclude_types,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.filter.is_empty() && self.exclude.is_none() && self.exclude_types.is_empty()
    }
}

/// `expected-status`: `*`, `200`, `200/204`, `200-299/304` -> inclusive ranges; `None` for
/// any status.
pub fn expected_status(text: &str) -> Result<Option<Vec<(u16, u16)>>, String> {
    let text = text.trim();
    if text.is_empty() || text == "*" {
        return Ok(None);
    }
    let bad = || format!("`{text}`: expected status codes like 204, 200-299 or 200/204");
    let mut out = Vec::new();
    for part in text.split(['/', ',']) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
        out.push((a, b));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_mihomo() {
        let f = NameFilter::parse(
            Some("(?i)hk|港`JP"),
            Some("0\\.1x"),
            Some("Shadowsocks|http"),
        )
        .unwrap();
        let names = ["JP 1", "HK 1", "hk 0.1x", "香港 2", "US"];
        let picked: Vec<&&str> = f.select(&names, |n| n);
        assert_eq!(picked, [&"HK 1", &"hk 0.1x", &"香港 2", &"JP 1"]);
        assert!(!f.keeps("hk 0.1x", "Trojan"));
        assert!(!f.keeps("HK 1", "shadowsocks"));
        assert!(!f.keeps("HK 1", "HTTP"));
        assert!(f.keeps("HK 1", "Trojan"));
        let look = NameFilter::parse(Some("^(?!.*(直连|Direct)).*$"), None, None).unwrap();
        let all = ["直连", "HK", "Direct x"];
        assert_eq!(look.select(&all, |n| n), [&"HK"]);
        assert!(NameFilter::parse(Some("("), None, None).is_err());
        assert!(NameFilter::parse(None, None, None).unwrap().is_empty());
    }

    #[test]
    fn statuses() {
        assert_eq!(expected_status("*"), Ok(None));
        assert_eq!(expected_status(""), Ok(None));
        assert_eq!(
            expected_status("200-299/304"),
            Ok(Some(vec![(200, 299), (304, 304)]))
        );
        assert!(expected_status("abc").is_err());
        assert!(expected_status("300-200").is_err());
    }
}
