//! Domain matchers of `DOMAIN`, `DOMAIN-SUFFIX`, `DOMAIN-KEYWORD`, `DOMAIN-WILDCARD` and
//! `DOMAIN-REGEX`. Names are compared in lower case without a trailing dot, as the sniffers
//! and the DNS server hand them over; a flow without a name never matches a domain rule.

use std::fmt;

/// A name as written in a rule, normalised: lower case, no trailing dot, not empty.
pub fn normalise(text: &str) -> Result<String, String> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(format!("`{text}` is not a domain name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*' | '?')))
    {
        return Err(format!(
            "`{text}` is not a domain name (character `{bad}`; write IDNs in punycode, xn--...)"
        ));
    }
    Ok(name)
}

/// `DOMAIN-SUFFIX,example.com`: the name itself and every name below it, never a name that
/// merely ends in the same letters (`badexample.com`).
pub fn suffix_matches(host: &str, suffix: &str) -> bool {
    match host.strip_suffix(suffix) {
        Some("") => true,
        Some(rest) => rest.ends_with('.') || suffix.starts_with('.'),
        None => false,
    }
}

/// A `DOMAIN-WILDCARD` pattern: `*` stands for any run of characters (dots included, as
/// mihomo does), `?` for exactly one.
#[derive(Clone, PartialEq, Eq)]
pub struct Wildcard(String);

impl Wildcard {
    pub fn new(text: &str) -> Result<Self, String> {
        normalise(text).map(Self)
    }

    pub fn matches(&self, host: &str) -> bool {
        glob(self.0.as_bytes(), host.as_bytes())
    }
}

impl fmt::Debug for Wildcard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wildcard({})", self.0)
    }
}

/// Iterative glob with backtracking to the last `*`: linear in practice, never recursive.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A compiled `DOMAIN-REGEX`.
#[derive(Clone)]
pub struct DomainRegex(regex::Regex);

impl DomainRegex {
    pub(crate) fn new(text: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(text)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map(Self)
            .map_err(|e| format!("bad regular expression `{text}`: {e}"))
    }

    pub(crate) fn matches(&self, host: &str) -> bool {
        self.0.is_match(host)
    }
}

impl PartialEq for DomainRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for DomainRegex {}

impl fmt::Debug for DomainRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainRegex({})", self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn suffix_is_label_aligned() {
        assert!(suffix_matches("example.com", "example.com"));
        assert!(suffix_matches("www.example.com", "example.com"));
        assert!(suffix_matches("a.b.example.com", "example.com"));
        assert!(!suffix_matches("badexample.com", "example.com"));
        assert!(!suffix_matches("example.com.evil", "example.com"));
        assert!(!suffix_matches("com", "example.com"));
    }

    #[test]
    fn wildcard_star_and_question_mark() {
        let w = Wildcard::new("*.google.com").unwrap();
        assert!(w.matches("www.google.com"));
        assert!(w.matches("a.b.google.com"));
        assert!(!w.matches("google.com"));
        let w = Wildcard::new("test?.example.com").unwrap();
        assert!(w.matches("test1.example.com"));
        assert!(!w.matches("test12.example.com"));
        let w = Wildcard::new("*cdn*").unwrap();
        assert!(w.matches("img.cdnjs.net"));
        assert!(!w.matches("img.cd.net"));
    }

    #[test]
    fn normalise_rejects_junk_and_lowers() {
        assert_eq!(normalise("WWW.Example.COM.").unwrap(), "www.example.com");
        assert!(normalise(" ").is_err());
        assert!(normalise("exa mple.com").is_err());
        assert!(normalise("bücher.de").is_err());
    }

    #[test]
    fn regex_is_case_insensitive() {
        let r = DomainRegex::new(r"^ad[0-9]+\.").unwrap();
        assert!(r.matches("ad12.example.com"));
        assert!(!r.matches("bad12.example.com"));
        assert!(DomainRegex::new("(").is_err());
    }

    proptest! {
        #[test]
        fn glob_agrees_with_a_regex(pat in "[a-c*?.]{0,8}", text in "[a-c.]{0,12}") {
            let re = format!(
                "^{}$",
                pat.chars().map(|c| match c {
                    '*' => ".*".to_owned(),
                    '?' => ".".to_owned(),
                    c => regex::escape(&c.to_string()),
                }).collect::<String>()
            );
            let want = regex::Regex::new(&re).unwrap().is_match(&text);
            prop_assert_eq!(glob(pat.as_bytes(), text.as_bytes()), want);
        }

        #[test]
        fn suffix_agrees_with_labels(host in "[a-c]{1,3}(\\.[a-c]{1,3}){0,3}", suffix in "[a-c]{1,3}(\\.[a-c]{1,3}){0,2}") {
            let h: Vec<&str> = host.split('.').collect();
            let s: Vec<&str> = suffix.split('.').collect();
            let want = h.len() >= s.len() && h[h.len() - s.len()..] == s[..];
            prop_assert_eq!(suffix_matches(&host, &suffix), want);
        }
    }
}
