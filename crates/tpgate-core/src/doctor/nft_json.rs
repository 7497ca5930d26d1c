//! `nft -j list ruleset` -> [`Chain`]s. Only the families that see IP packets (`ip`, `ip6`,
//! `inet`) are kept; expressions doctor does not reason about become [`Cond::Other`] /
//! [`Action::Other`], so an unknown statement never hides the ones that matter.

use serde_json::Value;

use super::model::{Action, Chain, Cond, Dir, Fam, Hook, Rule};
use crate::net::Mark;
use crate::plan::Family;

/// Parses the whole JSON document.
pub(super) fn parse(json: &str) -> Result<Vec<Chain>, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("no `nftables` array")?;
    let mut chains: Vec<Chain> = Vec::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            let Some(fam) = fam(c) else { continue };
            chains.push(Chain {
                origin: origin(c),
                fam,
                name: str_of(c, "name"),
                hook: c.get("hook").and_then(Value::as_str).map(Hook::parse),
                rules: Vec::new(),
            });
        } else if let Some(r) = item.get("rule") {
            if fam(r).is_none() {
                continue;
            }
            let (o, name) = (origin(r), str_of(r, "chain"));
            if let Some(c) = chains.iter_mut().find(|c| c.origin == o && c.name == name) {
                c.rules.push(rule(r));
            }
        }
    }
    Ok(chains)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn fam(v: &Value) -> Option<Fam> {
    match v.get("family").and_then(Value::as_str)? {
        "ip" => Some(Fam::V4),
        "ip6" => Some(Fam::V6),
        "inet" => Some(Fam::Both),
        _ => None,
    }
}

fn origin(v: &Value) -> String {
    format!("nft {} {}", str_of(v, "family"), str_of(v, "table"))
}

fn rule(r: &Value) -> Rule {
    let handle = r.get("handle").and_then(Value::as_u64).unwrap_or(0);
    let comment = r.get("comment").and_then(Value::as_str);
    let mut conds = Vec::new();
    let mut actions = Vec::new();
    for e in r
        .get("expr")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some((key, body)) = e.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        match key.as_str() {
            "match" => conds.push(cond(body)),
            "tproxy" => {
                match body.get("family").and_then(Value::as_str) {
                    Some("ip") => conds.push(Cond::Only(Family::V4)),
                    Some("ip6") => conds.push(Cond::Only(Family::V6)),
                    _ => {}
                }
                actions.push(Action::Tproxy {
                    port: body
                        .get("port")
                        .and_then(Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok()),
                    mark: None,
                });
            }
            "mangle" => {
                if body.pointer("/key/meta/key").and_then(Value::as_str) == Some("mark") {
                    actions
                        .push(set_mark(body.get("value")).map_or(Action::Other, Action::SetMark));
                }
            }
            "jump" | "goto" => {
                let t = body
                    .get("target")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                actions.push(if key == "jump" {
                    Action::Jump(t)
                } else {
                    Action::Goto(t)
                });
            }
            "return" => actions.push(Action::Return),
            "accept" => actions.push(Action::Accept),
            "drop" | "reject" => actions.push(Action::Drop),
            "xt" if body.get("name").and_then(Value::as_str) == Some("TPROXY") => {
                actions.push(Action::Tproxy {
                    port: None,
                    mark: None,
                });
            }
            "counter" | "log" | "comment" => {}
            _ => actions.push(Action::Other),
        }
    }
    let mut text = format!("rule handle {handle}");
    if let Some(c) = comment {
        text.push_str(&format!(" (\"{c}\")"));
    }
    Rule {
        text,
        conds,
        actions,
    }
}

/// `meta mark set 0x1` or `meta mark set meta mark & 0xffff00ff | 0x100`.
fn set_mark(v: Option<&Value>) -> Option<Mark> {
    let v = v?;
    if let Some(n) = v.as_u64() {
        return u32::try_from(n).ok().map(Mark::exact);
    }
    let or = v.get("|")?.as_array()?;
    let keep = or.first()?.get("&")?.as_array()?.get(1)?.as_u64()?;
    let bits = u32::try_from(or.get(1)?.as_u64()?).ok()?;
    // Bits cleared by the `&` or set by the `|` are the ones this statement decides.
    Some(Mark {
        value: bits,
        mask: !u32::try_from(keep).ok()? | bits,
    })
}

fn num_or_set(v: &Value) -> Vec<u64> {
    match v {
        Value::Number(n) => n.as_u64().into_iter().collect(),
        Value::Object(o) => o
            .get("set")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Object(o) => o
            .get("set")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn cond(m: &Value) -> Cond {
    let negated = m.get("op").and_then(Value::as_str) == Some("!=");
    let (Some(left), Some(right)) = (m.get("left"), m.get("right")) else {
        return Cond::Other;
    };
    let meta = left.pointer("/meta/key").and_then(Value::as_str);
    let ct = left.pointer("/ct/key").and_then(Value::as_str);
    match (meta, ct) {
        (Some("mark"), _) => match num_or_set(right).as_slice() {
            [v] => u32::try_from(*v).map_or(Cond::Other, |v| Cond::Mark {
                mark: Mark::exact(v),
                negated,
            }),
            _ => Cond::Other,
        },
        (Some("skuid" | "skgid" | "cgroup"), _) => Cond::Owner,
        (Some("iifname" | "iif"), _) => Cond::Iif {
            names: strings(right),
            negated,
        },
        (_, Some("direction")) => {
            let reply = right.as_str() == Some("reply");
            Cond::CtDir(if reply != negated {
                Dir::Reply
            } else {
                Dir::Original
            })
        }
        (_, Some("state")) if !negated && strings(right) == ["new"] => Cond::CtDir(Dir::Original),
        (Some("nfproto"), _) if !negated => match right.as_str() {
            Some("ipv4") => Cond::Only(Family::V4),
            Some("ipv6") => Cond::Only(Family::V6),
            _ => Cond::Other,
        },
        _ => other(left, right, negated),
    }
}

/// Masked marks (`meta mark & 0xff00 == 0x100`), socket and cgroupv2 matches.
fn other(left: &Value, right: &Value, negated: bool) -> Cond {
    if let Some(and) = left.get("&").and_then(Value::as_array) {
        let is_mark = and
            .first()
            .and_then(|l| l.pointer("/meta/key"))
            .and_then(Value::as_str)
            == Some("mark");
        let mask = and
            .get(1)
            .and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok());
        let value = right.as_u64().and_then(|v| u32::try_from(v).ok());
        if let (true, Some(mask), Some(value)) = (is_mark, mask, value) {
            return Cond::Mark {
                mark: Mark { value, mask },
                negated,
            };
        }
    }
    match left.pointer("/payload/protocol").and_then(Value::as_str) {
        Some("ip") => return Cond::Only(Family::V4),
        Some("ip6") => return Cond::Only(Family::V6),
        _ => {}
    }
    match left.pointer("/socket/key").and_then(Value::as_str) {
        Some("transparent") => Cond::SocketTransparent,
        Some("cgroupv2") => Cond::Owner,
        _ => Cond::Other,
    }
}
