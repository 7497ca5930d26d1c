//! The `intercept` section: which traffic is caught, and the marks, table and rule that
//! route it to the listener. Checks against other sections (the routing-mark) are made by
//! the caller.

use super::decode::{check, entries, is_section, items, unknown_key, Seen};
use super::yaml::{Node, Value};
use super::{value, Backend, Diags, Intercept, IptablesVariant};
use crate::net::TableId;

pub(super) fn intercept(node: &Node, d: &mut Diags, fwmark: &mut Seen) -> Intercept {
    let mut out = Intercept::default();
    if !is_section(node, "intercept", d) {
        *fwmark = Seen::Invalid;
        return out;
    }
    for e in entries(node, "intercept", d) {
        let path = format!("intercept.{}", e.key);
        let n = e.value;
        match e.key {
            "backend" => {
                if let Some(b) = check(d, n, &path, backend(n)) {
                    out.backend = b;
                }
            }
            "iptables-variant" => {
                if let Some(v) = check(d, n, &path, iptables_variant(n)) {
                    out.iptables_variant = v;
                }
            }
            "lan-interfaces" => out.lan_interfaces = interfaces(n, &path, d),
            "local" => {
                if let Some(b) = check(d, n, &path, value::boolean(n)) {
                    out.local = b;
                }
            }
            "udp" => {
                if let Some(b) = check(d, n, &path, value::boolean(n)) {
                    out.udp = b;
                }
            }
            "fwmark" => match check(d, n, &path, value::mark(n)) {
                Some(mark) => {
                    out.fwmark = mark;
                    *fwmark = Seen::At(n.pos);
                }
                None => *fwmark = Seen::Invalid,
            },
            "route-table" => {
                if let Some(table) = check(d, n, &path, route_table(n)) {
                    out.route_table = table;
                }
            }
            "rule-priority" => {
                if let Some(priority) = check(d, n, &path, rule_priority(n)) {
                    out.rule_priority = priority;
                }
            }
            "bypass" => out.bypass = items(n, &path, d, value::cidr),
            "dns-hijack" => {
                if let Some(b) = check(d, n, &path, value::boolean(n)) {
                    out.dns_hijack = b;
                }
            }
            "offload-direct" => {
                if let Some(b) = check(d, n, &path, value::boolean(n)) {
                    out.offload_direct = b;
                }
            }
            _ => unknown_key(d, &e, "intercept", super::keys::INTERCEPT),
        }
    }
    if !out.local && out.lan_interfaces.is_empty() && !d.has_errors() {
        d.error(
            node.pos,
            "intercept",
            "nothing to intercept: `local` is false and `lan-interfaces` is empty",
        );
    }
    out
}

fn interfaces(node: &Node, path: &str, d: &mut Diags) -> Vec<String> {
    let names = items(node, path, d, value::interface);
    if let Ok(list) = value::list(node) {
        for (i, item) in list.iter().enumerate() {
            let Value::Str(name) = &item.value else {
                continue;
            };
            if list[..i].iter().any(|earlier| earlier.value == item.value) {
                d.error(
                    item.pos,
                    &format!("{path}[{i}]"),
                    format!("`{name}` is listed twice"),
                );
            }
        }
    }
    names
}

fn backend(node: &Node) -> Result<Backend, String> {
    let name = value::string(node)?.trim();
    match name.to_ascii_lowercase().as_str() {
        "nftables" => Ok(Backend::Nftables),
        "iptables" => Ok(Backend::Iptables),
        "auto" => Ok(Backend::Auto),
        _ => Err(format!(
            "unknown backend `{name}`; expected nftables, iptables or auto"
        )),
    }
}

fn iptables_variant(node: &Node) -> Result<IptablesVariant, String> {
    let name = value::string(node)?.trim();
    match name.to_ascii_lowercase().as_str() {
        "auto" => Ok(IptablesVariant::Auto),
        "nft" | "iptables-nft" => Ok(IptablesVariant::Nft),
        "legacy" | "iptables-legacy" => Ok(IptablesVariant::Legacy),
        _ => Err(format!(
            "unknown iptables variant `{name}`; expected auto, nft or legacy"
        )),
    }
}

fn route_table(node: &Node) -> Result<TableId, String> {
    let id = value::uint(node, u32::MAX.into())?;
    let reserved = match id {
        0 => "unspec",
        253 => "default",
        254 => "main",
        255 => "local",
        _ => return Ok(TableId(u32::try_from(id).unwrap_or(u32::MAX))),
    };
    Err(format!(
        "table {id} is the kernel's `{reserved}` table; choose another (e.g. 100)"
    ))
}

fn rule_priority(node: &Node) -> Result<u32, String> {
    match value::uint(node, u32::MAX.into())? {
        0 => Err("priority 0 belongs to the kernel's `local` rule; choose 1-32765".to_owned()),
        p @ 1..=32765 => Ok(u32::try_from(p).unwrap_or(u32::MAX)),
        p => Err(format!("priority {p} is not below 32766 (the `main` table's rule), so the fwmark rule would never be reached")),
    }
}
