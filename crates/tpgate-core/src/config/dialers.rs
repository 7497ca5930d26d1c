//! `dialer-proxy` of the `proxies:` entries: the proxy or group each proxy's server is
//! reached through, looked up once every name is known, and the loops it can make (a
//! proxy dialed through a group that contains it) refused, as group cycles are.

use super::names::{self, Known, Names};
use super::yaml::Pos;
use super::{Diags, GroupDef, Member, ProxyDef, ProxyKind};

/// The `dialer-proxy` written for each ready proxy (in order), with the proxy's path.
pub(super) type Written = [(String, Option<(String, Pos)>)];

/// Sets each proxy's `dialer`; an unknown name is an error at it, a skipped one makes the
/// proxy reject (with a warning), `DIRECT` means no dialer.
pub(super) fn resolve(proxies: &mut [ProxyDef], written: &Written, names: &Names, d: &mut Diags) {
    for (p, (path, dialer)) in proxies.iter_mut().zip(written) {
        let Some((name, at)) = dialer else {
            continue;
        };
        if matches!(p.kind, ProxyKind::Direct) {
            continue;
        }
        let path = format!("{path}.dialer-proxy");
        p.dialer = match (names.get(name), names::builtin(name)) {
            (Some(Known::Target(id)), _) => Some(Member::Target(id)),
            (Some(Known::Skipped), _) => {
                let message = format!(
                    "`{name}` was skipped, so proxy `{}` cannot be reached through it: it rejects its traffic",
                    p.name
                );
                d.warn(*at, &path, message);
                Some(Member::Reject)
            }
            (Some(Known::Invalid), _) => None,
            (None, Some("DIRECT")) => None,
            (None, Some("REJECT" | "REJECT-DROP")) => Some(Member::Reject),
            (None, Some(other)) => {
                d.error(*at, &path, format!("{other} cannot be a dialer-proxy"));
                None
            }
            (None, None) => {
                let hint = names.hint(name);
                d.error(*at, &path, format!("unknown proxy or group `{name}`{hint}"));
                None
            }
        };
    }
}

/// Reports each proxy whose dialer leads back to it (through groups and other dialers),
/// at its `dialer-proxy`. An explicit-stack search from each proxy that has a dialer.
pub(super) fn report_cycles(
    proxies: &[ProxyDef],
    groups: &[GroupDef],
    written: &Written,
    d: &mut Diags,
) {
    let n = proxies.len();
    let next = |i: usize| -> Vec<usize> {
        let members: Vec<Member> = match i.checked_sub(n) {
            None => proxies[i].dialer.into_iter().collect(),
            Some(j) => groups.get(j).map(|g| g.members.clone()).unwrap_or_default(),
        };
        members
            .into_iter()
            .filter_map(|m| match m {
                Member::Target(id) => Some(id.0 as usize).filter(|&t| t < n + groups.len()),
                Member::Direct | Member::Reject => None,
            })
            .collect()
    };
    for (start, p) in proxies.iter().enumerate() {
        let Some(Member::Target(first)) = p.dialer else {
            continue;
        };
        let mut seen = vec![false; n + groups.len()];
        let mut stack = vec![first.0 as usize];
        let mut found = false;
        while let Some(i) = stack.pop() {
            if i == start {
                found = true;
                break;
            }
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                _ => continue,
            }
            stack.extend(next(i));
        }
        if found {
            if let Some((path, Some((name, at)))) = written.get(start) {
                let message = format!(
                    "proxy `{}` would be dialed through itself: `{name}` leads back to it",
                    p.name
                );
                d.error(*at, &format!("{path}.dialer-proxy"), message);
            }
        }
    }
}
