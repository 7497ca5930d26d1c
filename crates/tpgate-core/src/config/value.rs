//! Scalar conversions shared by the config keys: one YAML node -> one typed value, or a
//! message saying what was expected and what was found. Positions and paths are added by
//! the caller; these functions only look at one node.

use std::net::IpAddr;

use ipnet::IpNet;

use super::yaml::{Node, Value};
use crate::net::Mark;

/// An unsigned integer written as a YAML integer or as a string, in decimal or `0x` hex.
pub(super) fn uint(node: &Node, max: u64) -> Result<u64, String> {
    let value = match &node.value {
        Value::Int(i) => u64::try_from(*i).map_err(|_| format!("{i} is negative"))?,
        Value::Str(s) => uint_text(s.trim())
            .ok_or_else(|| format!("expected an integer (decimal or 0x-hex), found `{s}`"))?,
        Value::Null => return Err("missing value; expected an integer".to_owned()),
        other => return Err(format!("expected an integer, found {}", other.describe())),
    };
    if value > max {
        return Err(format!("{value} is out of range (at most {max})"));
    }
    Ok(value)
}

/// `123` or `0x7b`; `None` for anything else (including values beyond `u64`).
fn uint_text(text: &str) -> Option<u64> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

pub(super) fn boolean(node: &Node) -> Result<bool, String> {
    match &node.value {
        Value::Bool(b) => Ok(*b),
        Value::Null => Err("missing value; expected true or false".to_owned()),
        other => Err(format!(
            "expected true or false, found {}",
            other.describe()
        )),
    }
}

pub(super) fn string(node: &Node) -> Result<&str, String> {
    match &node.value {
        Value::Str(s) => Ok(s),
        Value::Null => Err("missing value; expected a string".to_owned()),
        other => Err(format!("expected a string, found {}", other.describe())),
    }
}

/// Text that mihomo reads weakly typed: a string, or an integer taken as its digits
/// (`password: 123456`, `name: 1`).
pub(super) fn text(node: &Node) -> Result<String, String> {
    match &node.value {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Null => Err("missing value; expected a string".to_owned()),
        other => Err(format!("expected a string, found {}", other.describe())),
    }
}

/// A server address as mihomo takes it: an IP literal (IPv6 without brackets) or a host
/// name in DNS syntax.
pub(super) fn host(node: &Node) -> Result<String, String> {
    let text = string(node)?;
    if text.parse::<IpAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if inner.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "write the IPv6 address without brackets: `{inner}`"
            ));
        }
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    let bad = |why: &str| {
        Err(format!(
            "`{text}` is not an IP address or a host name: {why}"
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 253 {
        return bad("longer than 253 characters");
    }
    let mut numeric = true;
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label has 1 to 63 characters");
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return bad(&format!(
                "{c:?} is not allowed (letters, digits, `-` and `_`; IDNs in punycode)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with `-`");
        }
        numeric &= label.bytes().all(|b| b.is_ascii_digit());
    }
    if numeric {
        return bad("all digits, but not a valid IPv4 address");
    }
    Ok(text.to_owned())
}

/// The items of a list; an empty value (`key:` alone) is an empty list.
pub(super) fn list(node: &Node) -> Result<&[Node], String> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        Value::Null => Ok(&[]),
        other => Err(format!("expected a list, found {}", other.describe())),
    }
}

/// One of a few words, case-insensitive.
pub(super) fn keyword<T: Copy>(node: &Node, words: &[(&str, T)]) -> Result<T, String> {
    let expected = || {
        let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        names.join(", ")
    };
    let text = match &node.value {
        Value::Str(s) => s.trim(),
        Value::Null => return Err(format!("missing value; expected one of {}", expected())),
        other => {
            return Err(format!(
                "expected one of {}, found {}",
                expected(),
                other.describe()
            ))
        }
    };
    words
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(text))
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("expected one of {}, found `{text}`", expected()))
}

/// A mark as an integer (`1`, `0x1`) or a string with a mask (`"0x1/0xff"`).
pub(super) fn mark(node: &Node) -> Result<Mark, String> {
    let mark = match &node.value {
        Value::Str(s) if s.contains('/') => {
            let (value, mask) = s.split_once('/').unwrap_or((s, ""));
            let part = |text: &str| {
                uint_text(text.trim())
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| format!("expected a mark like 0x1 or 0x1/0xff, found `{s}`"))
            };
            Mark {
                value: part(value)?,
                mask: part(mask)?,
            }
        }
        _ => {
            let value = uint(node, u32::MAX.into()).map_err(|e| {
                format!("{e}; a mark is an integer like 0x1 or a string like \"0x1/0xff\"")
            })?;
            Mark::exact(value as u32)
        }
    };
    if mark.value == 0 {
        return Err(format!("{mark} never matches: a mark must be nonzero"));
    }
    if mark.value & !mark.mask != 0 {
        return Err(format!(
            "{mark}: value {:#x} has bits outside the mask {:#x}",
            mark.value, mark.mask
        ));
    }
    Ok(mark)
}

/// A network interface name as Linux accepts it (`dev_valid_name`).
pub(super) fn interface(node: &Node) -> Result<String, String> {
    let name = string(node)?;
    let len = name.len();
    if !(1..=15).contains(&len) {
        return Err(format!(
            "interface name `{name}` must be 1 to 15 bytes long, it has {len}"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not an interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name `{name}` contains {c:?}, which Linux does not allow"
        ));
    }
    Ok(name.to_owned())
}

pub(super) fn cidr(node: &Node) -> Result<IpNet, String> {
    crate::rules::parse_cidr(string(node)?.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::Pos;

    fn node(value: Value) -> Node {
        Node {
            pos: Pos { line: 1, col: 1 },
            value,
        }
    }

    fn s(text: &str) -> Node {
        node(Value::Str(text.to_owned()))
    }

    #[test]
    fn integers() {
        assert_eq!(uint(&node(Value::Int(7)), 10), Ok(7));
        assert_eq!(uint(&s("0x1F"), 100), Ok(31));
        assert_eq!(uint(&s(" 42 "), 100), Ok(42));
        assert!(uint(&s("0x"), 100).is_err());
        assert!(uint(&s("-1"), 100).is_err());
        assert!(uint(&s("99999999999999999999999"), u64::MAX).is_err());
        assert!(uint(&node(Value::Int(-1)), 100)
            .unwrap_err()
            .contains("negative"));
        assert!(uint(&node(Value::Int(101)), 100)
            .unwrap_err()
            .contains("out of range"));
        assert!(uint(&node(Value::Float(1.5)), 100)
            .unwrap_err()
            .contains("found `1.5`"));
    }

    #[test]
    fn marks() {
        assert_eq!(mark(&node(Value::Int(1))), Ok(Mark::exact(1)));
        assert_eq!(mark(&s("0x10")), Ok(Mark::exact(16)));
        assert_eq!(
            mark(&s("0x1/0xff")),
            Ok(Mark {
                value: 1,
                mask: 0xff
            })
        );
        assert_eq!(mark(&s("2 / 2")), Ok(Mark { value: 2, mask: 2 }));
        assert!(mark(&s("0x0/0xff")).unwrap_err().contains("nonzero"));
        assert!(mark(&node(Value::Int(0))).unwrap_err().contains("nonzero"));
        assert!(mark(&s("0x3/0x1"))
            .unwrap_err()
            .contains("outside the mask"));
        assert!(mark(&s("0x1/")).is_err());
        assert!(mark(&s("0x1/0x1/0x1")).is_err());
        assert!(mark(&s("0x100000000")).is_err());
    }

    #[test]
    fn interfaces() {
        assert_eq!(interface(&s("br-lan")), Ok("br-lan".into()));
        assert!(interface(&s("")).is_err());
        assert!(interface(&s("a-very-long-name")).is_err());
        assert!(interface(&s("eth0/1")).is_err());
        assert!(interface(&s("eth 0")).is_err());
        assert!(interface(&s("..")).is_err());
        assert!(interface(&node(Value::Int(1))).is_err());
    }

    #[test]
    fn texts() {
        assert_eq!(text(&s("hk 1")), Ok("hk 1".into()));
        assert_eq!(text(&node(Value::Int(123456))), Ok("123456".into()));
        assert!(text(&node(Value::Bool(true))).is_err());
        assert!(text(&node(Value::Null))
            .unwrap_err()
            .contains("missing value"));
    }

    #[test]
    fn hosts() {
        for ok in [
            "example.com",
            "example.com.",
            "a-b.c_d.example",
            "192.0.2.1",
            "2001:db8::1",
            "localhost",
            "1a",
        ] {
            assert_eq!(host(&s(ok)), Ok(ok.into()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("[2001:db8::1]", "without brackets"),
            ("a..b", "1 to 63"),
            ("-a.example", "start or end"),
            ("a b", "' '"),
            ("exämple.com", "punycode"),
            ("192.0.2.300", "all digits"),
            ("1.2.3", "all digits"),
            (&"a".repeat(64), "1 to 63"),
        ] {
            let e = host(&s(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(host(&node(Value::Int(1))).is_err());
    }
}
