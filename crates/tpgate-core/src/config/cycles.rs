//! Groups that contain themselves through other groups: the daemon would recurse forever
//! choosing a member, so the config is refused. An explicit-stack depth-first search, so a
//! long chain of groups cannot overflow the stack.

use super::yaml::Pos;
use super::{Diags, GroupDef, Member};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    OnPath,
    Done,
}

/// Reports each cycle once, at the name (`at[j]`: position and path) of the group where
/// the search closed it. Group `j` is `TargetId(proxies + j)`.
pub(super) fn report_cycles(
    groups: &[GroupDef],
    proxies: usize,
    at: &[(Pos, String)],
    d: &mut Diags,
) {
    let group_of = |m: &Member| match m {
        Member::Target(id) => (id.0 as usize)
            .checked_sub(proxies)
            .filter(|j| *j < groups.len()),
        Member::Direct | Member::Reject => None,
    };
    let mut visit = vec![Visit::New; groups.len()];
    let mut reported = vec![false; groups.len()];
    for start in 0..groups.len() {
        if visit[start] != Visit::New {
            continue;
        }
        // (group, index of the next member to follow)
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        visit[start] = Visit::OnPath;
        while let Some(top) = path.len().checked_sub(1) {
            let (g, next) = path[top];
            let Some(member) = groups[g].members.get(next) else {
                visit[g] = Visit::Done;
                path.pop();
                continue;
            };
            path[top].1 += 1;
            let Some(h) = group_of(member) else {
                continue;
            };
            match visit[h] {
                Visit::New => {
                    visit[h] = Visit::OnPath;
                    path.push((h, 0));
                }
                Visit::OnPath if !reported[h] => {
                    reported[h] = true;
                    let from = path.iter().position(|(x, _)| *x == h).unwrap_or(0);
                    let chain: Vec<&str> = path[from..]
                        .iter()
                        .map(|(x, _)| groups[*x].name.as_str())
                        .chain([groups[h].name.as_str()])
                        .collect();
                    let message = format!(
                        "group `{}` contains itself: {}",
                        groups[h].name,
                        chain.join(" -> ")
                    );
                    if let Some((pos, p)) = at.get(h) {
                        d.error(*pos, p, message);
                    }
                }
                Visit::OnPath | Visit::Done => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GroupKind, TargetId};

    fn group(name: &str, members: &[u32]) -> GroupDef {
        GroupDef::new(
            name,
            GroupKind::Select,
            members
                .iter()
                .map(|m| Member::Target(TargetId(*m)))
                .collect(),
        )
    }

    fn cycles(groups: &[GroupDef]) -> Vec<String> {
        let at: Vec<_> = (0..groups.len())
            .map(|j| {
                (
                    Pos {
                        line: j + 1,
                        col: 1,
                    },
                    format!("g[{j}]"),
                )
            })
            .collect();
        let mut d = Diags::default();
        report_cycles(groups, 1, &at, &mut d);
        d.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn finds_each_cycle_once() {
        // Proxy 0; groups A=1, B=2, C=3.
        assert!(cycles(&[group("A", &[0, 2]), group("B", &[0]), group("C", &[1, 2])]).is_empty());
        assert_eq!(
            cycles(&[group("A", &[1])]),
            ["1:1: g[0]: group `A` contains itself: A -> A"]
        );
        assert_eq!(
            cycles(&[group("A", &[0, 2]), group("B", &[3]), group("C", &[1])]),
            ["1:1: g[0]: group `A` contains itself: A -> B -> C -> A"]
        );
        // Two cycles through B.
        assert_eq!(
            cycles(&[group("A", &[2]), group("B", &[1, 3]), group("C", &[2])]),
            [
                "1:1: g[0]: group `A` contains itself: A -> B -> A",
                "2:1: g[1]: group `B` contains itself: B -> C -> B"
            ]
        );
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let n = 100_000u32;
        let mut groups: Vec<_> = (0..n).map(|j| group("g", &[j + 2])).collect();
        groups.push(group("last", &[0]));
        assert!(cycles(&groups).is_empty());
    }
}
