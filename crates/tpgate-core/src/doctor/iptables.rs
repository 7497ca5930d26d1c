//! `iptables-save` / `ip6tables-save` text -> [`Chain`]s. Built-in chains (policy not `-`)
//! get their hook from their name; user chains are reached through `-j`/`-g`. Each rule
//! keeps its `-A ...` line, which is what a person searches their scripts for.

use super::model::{Action, Chain, Cond, Dir, Fam, Hook, Rule};
use super::{IptVariant, IptablesDump};
use crate::net::Mark;
use crate::plan::Family;

/// Parses one dump.
pub(super) fn parse(dump: &IptablesDump) -> Vec<Chain> {
    let prog = match (dump.family, dump.variant) {
        (Family::V4, IptVariant::Legacy) => "iptables-legacy",
        (Family::V4, IptVariant::Nft) => "iptables-nft",
        (Family::V6, IptVariant::Legacy) => "ip6tables-legacy",
        (Family::V6, IptVariant::Nft) => "ip6tables-nft",
    };
    let fam = match dump.family {
        Family::V4 => Fam::V4,
        Family::V6 => Fam::V6,
    };
    let mut chains: Vec<Chain> = Vec::new();
    let mut table = String::new();
    let mut first_of_table = 0;
    for line in dump.text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_owned();
            first_of_table = chains.len();
        } else if let Some(def) = line.strip_prefix(':') {
            let mut it = def.split_whitespace();
            let name = it.next().unwrap_or("").to_owned();
            let builtin = it.next().is_some_and(|p| p != "-");
            chains.push(Chain {
                origin: format!("{prog} {table}"),
                fam,
                hook: builtin.then(|| Hook::parse(&name)),
                name,
                rules: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let words = split_words(rest);
            let Some((name, args)) = words.split_first() else {
                continue;
            };
            let rule = rule(line, args);
            if let Some(c) = chains[first_of_table..]
                .iter_mut()
                .find(|c| &c.name == name)
            {
                c.rules.push(rule);
            }
        }
    }
    chains
}

/// Splits like a shell: whitespace-separated, `"..."` quoted (comments).
fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in s.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `0x1`, `1`, `0x1/0xff`.
pub(super) fn parse_mark(s: &str) -> Option<Mark> {
    let num = |t: &str| match t.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    };
    match s.split_once('/') {
        Some((v, m)) => Some(Mark {
            value: num(v)?,
            mask: num(m)?,
        }),
        None => num(s).map(Mark::exact),
    }
}

fn rule(line: &str, args: &[String]) -> Rule {
    let mut conds = Vec::new();
    let mut actions = Vec::new();
    let mut negated = false;
    let mut target: Option<&str> = None;
    let mut port = None;
    let mut tmark = None;
    let mut set_mark = None;
    let mut i = 0;
    let next = |i: usize| args.get(i + 1).map(String::as_str).unwrap_or("");
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "!" => {
                negated = true;
                i += 1;
                continue;
            }
            "--mark" => {
                if let Some(mark) = parse_mark(next(i)) {
                    conds.push(Cond::Mark { mark, negated });
                }
            }
            "--uid-owner" | "--gid-owner" | "--socket-exists" | "--cgroup" | "--path" => {
                conds.push(Cond::Owner);
            }
            "--ctdir" => {
                let reply = next(i).eq_ignore_ascii_case("REPLY");
                conds.push(Cond::CtDir(if reply != negated {
                    Dir::Reply
                } else {
                    Dir::Original
                }));
            }
            "--ctstate" | "--state" if !negated && next(i) == "NEW" => {
                conds.push(Cond::CtDir(Dir::Original));
            }
            "-i" | "--in-interface" => conds.push(Cond::Iif {
                names: vec![next(i).to_owned()],
                negated,
            }),
            "--transparent" => conds.push(Cond::SocketTransparent),
            "-j" | "-g" => {
                target = Some(next(i));
                if a == "-g" {
                    actions.push(Action::Goto(next(i).to_owned()));
                }
            }
            "--on-port" => port = next(i).parse().ok(),
            "--tproxy-mark" => tmark = parse_mark(next(i)),
            "--set-mark" | "--set-xmark" => set_mark = parse_mark(next(i)),
            "-p" | "-s" | "-d" | "--dport" | "--sport" | "--dports" | "--match-set" | "-o" => {
                conds.push(Cond::Other);
            }
            _ => {}
        }
        negated = false;
        i += 1;
    }
    match target {
        Some("TPROXY") => actions.push(Action::Tproxy { port, mark: tmark }),
        Some("MARK") => actions.push(set_mark.map_or(Action::Other, Action::SetMark)),
        Some("RETURN") => actions.push(Action::Return),
        Some("ACCEPT") => actions.push(Action::Accept),
        Some("DROP" | "REJECT") => actions.push(Action::Drop),
        Some(t)
            if actions.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)) =>
        {
            // Unknown upper-case names are targets (CONNMARK, LOG...); a user chain that
            // does not exist in this table is simply never found by the walk.
            actions.push(Action::Jump(t.to_owned()));
        }
        _ => {}
    }
    Rule {
        text: line.to_owned(),
        conds,
        actions,
    }
}
