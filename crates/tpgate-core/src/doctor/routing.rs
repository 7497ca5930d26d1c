//! Policy routing as `ip -j rule` and `ip -j route show table all` print it.

use serde_json::Value;

use crate::net::Mark;
use crate::plan::Family;

/// One `ip rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRule {
    pub family: Family,
    pub priority: u32,
    /// `fwmark v[/m]` (mask all ones when `ip` printed none).
    pub fwmark: Option<Mark>,
    /// `not fwmark ...`: the rule matches packets *without* that mark.
    pub not: bool,
    /// Table looked up, as `ip` prints it (`100`, `main`...); empty for other actions.
    pub table: String,
}

impl IpRule {
    pub fn table_id(&self) -> Option<u32> {
        table_id(&self.table)
    }

    /// Whether a packet carrying exactly `mark` takes this rule (other selectors ignored).
    pub fn takes(&self, mark: u32) -> bool {
        match self.fwmark {
            Some(m) => m.matches(mark) != self.not,
            None => !self.not,
        }
    }
}

/// One route of any table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub family: Family,
    pub table: String,
    /// `unicast`, `local`, `blackhole`...
    pub kind: String,
    /// `default` or a prefix.
    pub dst: String,
    pub dev: Option<String>,
    pub via: Option<String>,
}

impl Route {
    pub fn table_id(&self) -> Option<u32> {
        table_id(&self.table)
    }

    /// `local default dev lo`: what makes marked packets be delivered to this host.
    pub fn is_local_default_lo(&self) -> bool {
        self.kind == "local" && is_default(&self.dst) && self.dev.as_deref() == Some("lo")
    }

    /// As `ip route` would print it.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if self.kind != "unicast" {
            s.push_str(&self.kind);
            s.push(' ');
        }
        s.push_str(&self.dst);
        if let Some(v) = &self.via {
            s.push_str(&format!(" via {v}"));
        }
        if let Some(d) = &self.dev {
            s.push_str(&format!(" dev {d}"));
        }
        s
    }
}

fn is_default(dst: &str) -> bool {
    matches!(dst, "default" | "0.0.0.0/0" | "::/0")
}

/// Table number from `ip`'s name or number.
pub(super) fn table_id(t: &str) -> Option<u32> {
    match t {
        "main" => Some(254),
        "local" => Some(255),
        "default" => Some(253),
        n => n.parse().ok(),
    }
}

fn num(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => match s.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

fn array(json: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str::<Value>(json).map_err(|e| e.to_string())? {
        Value::Array(a) => Ok(a),
        _ => Err("not a JSON array".into()),
    }
}

/// `ip -4|-6 -j rule` output.
pub fn parse_ip_rules(family: Family, json: &str) -> Result<Vec<IpRule>, String> {
    Ok(array(json)?
        .iter()
        .map(|r| IpRule {
            family,
            priority: r.get("priority").and_then(num).unwrap_or(0),
            fwmark: r.get("fwmark").and_then(num).map(|value| Mark {
                value,
                mask: r.get("fwmask").and_then(num).unwrap_or(u32::MAX),
            }),
            not: r.get("not").is_some(),
            table: r
                .get("table")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
        .collect())
}

/// `ip -4|-6 -j route show table all` output.
pub fn parse_ip_routes(family: Family, json: &str) -> Result<Vec<Route>, String> {
    let s = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(array(json)?
        .iter()
        .map(|r| Route {
            family,
            table: s(r, "table").unwrap_or_else(|| "main".into()),
            kind: s(r, "type").unwrap_or_else(|| "unicast".into()),
            dst: s(r, "dst").unwrap_or_else(|| "default".into()),
            dev: s(r, "dev"),
            via: s(r, "gateway"),
        })
        .collect())
}
