//! Names of proxies and groups: which are reserved, which are taken, and what each one
//! stands for once ids are assigned. Group members and rule targets are looked up here,
//! after every entry of both lists is known, so a group may name one declared later.

use std::collections::HashMap;

use super::yaml::{Node, Pos};
use super::{keys, value, Diags, TargetId};

/// Targets every config has. A name is the built-in only when spelled exactly so (mihomo's
/// names are case-sensitive: a proxy may be called `Direct`); a rule or member that names
/// no declared proxy still finds the built-in in any case.
const BUILTINS: &[&str] = &["DIRECT", "REJECT", "REJECT-DROP", "PASS", "COMPATIBLE"];
/// The group mihomo's global mode uses: a group may take the name, a proxy may not.
pub(super) const GLOBAL: &str = "GLOBAL";

/// One entry of `proxies` or `proxy-groups` after decoding.
pub(super) struct Declared<T> {
    /// The entry's path, like `proxies[2]`.
    pub(super) path: String,
    /// `None` when the name is missing or invalid (already reported).
    pub(super) name: Option<(String, Pos)>,
    pub(super) outcome: Outcome<T>,
    /// A proxy's `dialer-proxy` as written, and where: resolved once every name is known.
    pub(super) dialer: Option<(String, Pos)>,
}

pub(super) enum Outcome<T> {
    Ready(T),
    /// Uses something tpgate does not support; one warning said so.
    Skipped,
    /// Has an error; it was reported.
    Invalid,
}

impl<T> Declared<T> {
    pub(super) fn ready(&self) -> Option<&T> {
        match &self.outcome {
            Outcome::Ready(v) => Some(v),
            Outcome::Skipped | Outcome::Invalid => None,
        }
    }

    /// What the name stands for; a ready entry takes the id `next` and advances it.
    fn known(&self, next: &mut u32) -> Known {
        match self.outcome {
            Outcome::Ready(_) => {
                let id = TargetId(*next);
                *next += 1;
                Known::Target(id)
            }
            Outcome::Skipped => Known::Skipped,
            Outcome::Invalid => Known::Invalid,
        }
    }
}

/// What a declared name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    Target(TargetId),
    /// Declared, but skipped with a warning: references to it are dropped.
    Skipped,
    /// Declared with an error: references to it are dropped without repeating it.
    Invalid,
}

/// Every declared name, with what it stands for.
pub(super) struct Names {
    /// What each name stands for, and where it was declared.
    map: HashMap<String, (Known, Pos)>,
    /// Names in file order, for "did you mean".
    order: Vec<String>,
}

impl Names {
    /// Registers proxies, then groups, reporting names taken twice. Ids go to the ready
    /// entries in order, proxies first, matching where the decoder puts them in `Config`.
    pub(super) fn new<P, G>(
        proxies: &[Declared<P>],
        groups: &[Declared<G>],
        d: &mut Diags,
    ) -> Self {
        let mut names = Self {
            map: HashMap::new(),
            order: Vec::new(),
        };
        let mut next = 0u32;
        let mut declared = Vec::with_capacity(proxies.len() + groups.len());
        declared.extend(
            proxies
                .iter()
                .map(|p| (&p.path, &p.name, p.known(&mut next))),
        );
        declared.extend(
            groups
                .iter()
                .map(|g| (&g.path, &g.name, g.known(&mut next))),
        );
        for (path, name, known) in declared {
            let Some((name, pos)) = name else { continue };
            if let Some((_, at)) = names.map.get(name) {
                let message = format!("the name `{name}` is already taken (first at {at})");
                d.error(*pos, &format!("{path}.name"), message);
                continue;
            }
            names.map.insert(name.clone(), (known, *pos));
            names.order.push(name.clone());
        }
        names
    }

    /// The name a target id was given.
    pub(super) fn name_of(&self, id: TargetId) -> Option<String> {
        self.map
            .iter()
            .find(|(_, (k, _))| *k == Known::Target(id))
            .map(|(n, _)| n.clone())
    }

    pub(super) fn get(&self, name: &str) -> Option<Known> {
        self.map.get(name).map(|(known, _)| *known)
    }

    /// `; did you mean `X`?` for a name that is close to a declared or built-in one.
    pub(super) fn hint(&self, name: &str) -> String {
        let candidates: Vec<&str> = self
            .order
            .iter()
            .map(String::as_str)
            .chain(BUILTINS[..3].iter().copied())
            .collect();
        keys::suggest(name, &candidates)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default()
    }
}

/// A built-in target (DIRECT, REJECT, ...), spelled as the config spells it.
pub(super) fn builtin(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|b| b.eq_ignore_ascii_case(name.trim()))
        .copied()
}

/// The `name` of a proxy (`group == false`) or group: non-empty, not a built-in.
pub(super) fn name(node: &Node, group: bool) -> Result<String, String> {
    let name = value::text(node)?;
    if name.trim().is_empty() {
        return Err("a name cannot be empty".to_owned());
    }
    if let Some(b) = BUILTINS.iter().find(|b| **b == name.trim()) {
        return Err(format!("`{name}` is the built-in {b}; choose another name"));
    }
    if name == GLOBAL && !group {
        return Err(format!(
            "`{GLOBAL}` is reserved for the group that global mode uses; a proxy cannot \
             take it"
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::Value;

    fn node(text: &str) -> Node {
        Node {
            pos: Pos { line: 1, col: 1 },
            value: Value::Str(text.to_owned()),
        }
    }

    fn declared(name: &str, line: usize, outcome: Outcome<()>) -> Declared<()> {
        Declared {
            path: format!("x[{line}]"),
            name: Some((name.to_owned(), Pos { line, col: 3 })),
            outcome,
            dialer: None,
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(name(&node("hk"), false), Ok("hk".into()));
        assert_eq!(name(&node("GLOBAL"), true), Ok("GLOBAL".into()));
        assert_eq!(name(&node("global"), false), Ok("global".into()));
        assert!(name(&node("GLOBAL"), false)
            .unwrap_err()
            .contains("reserved"));
        assert!(name(&node(" "), true).unwrap_err().contains("empty"));
        for b in ["DIRECT", "REJECT", "REJECT-DROP", "PASS"] {
            assert!(
                name(&node(b), true).unwrap_err().contains("built-in"),
                "{b}"
            );
        }
        // Case-sensitive, as in mihomo: `Direct` is a name of its own.
        assert_eq!(name(&node("Direct"), false), Ok("Direct".into()));
        assert_eq!(builtin("reject-drop"), Some("REJECT-DROP"));
        assert_eq!(builtin("Proxy"), None);
    }

    #[test]
    fn ids_go_to_ready_entries_proxies_first() {
        let mut d = Diags::default();
        let proxies = [
            declared("a", 1, Outcome::Ready(())),
            declared("v", 2, Outcome::Skipped),
            declared("b", 3, Outcome::Ready(())),
        ];
        let groups = [
            declared("G", 4, Outcome::Invalid),
            declared("H", 5, Outcome::Ready(())),
            declared("a", 6, Outcome::Ready(())),
        ];
        let names = Names::new(&proxies, &groups, &mut d);
        assert_eq!(names.get("a"), Some(Known::Target(TargetId(0))));
        assert_eq!(names.get("b"), Some(Known::Target(TargetId(1))));
        assert_eq!(names.get("v"), Some(Known::Skipped));
        assert_eq!(names.get("G"), Some(Known::Invalid));
        assert_eq!(names.get("H"), Some(Known::Target(TargetId(2))));
        assert_eq!(names.get("h"), None);
        assert_eq!(d.errors.len(), 1);
        assert_eq!(
            d.errors[0].to_string(),
            "6:3: x[6].name: the name `a` is already taken (first at 1:3)"
        );
        assert_eq!(names.hint("h"), "; did you mean `H`?");
        assert_eq!(names.hint("direkt"), "; did you mean `DIRECT`?");
        assert_eq!(names.hint("zzzzzz"), "");
    }
}
