//! YAML merge keys (`<<: *base`): mihomo configs use them to share proxy and group fields.
//! Applied while the tree is built, so the decoder sees ordinary mappings.

use std::collections::HashSet;

use super::{Node, Value};

/// Applies the `<<` entries of one mapping (`<<: *base` or `<<: [*a, *b]`): keys written in
/// the mapping win, then earlier merged mappings win over later ones. A `<<` whose value is
/// not a mapping (or list of them) is kept as an ordinary key, for the decoder to report.
pub(super) fn merge(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| k.value == Value::Str("<<".to_owned());
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let mut own = Vec::with_capacity(entries.len());
    let mut merged = Vec::new();
    for (k, v) in entries {
        if !is_merge(&k) {
            own.push((k, v));
            continue;
        }
        match v.value {
            Value::Map(m) => merged.extend(m),
            Value::Seq(items) if items.iter().all(|i| matches!(i.value, Value::Map(_))) => {
                for item in items {
                    if let Value::Map(m) = item.value {
                        merged.extend(m);
                    }
                }
            }
            value => own.push((k, Node { pos: v.pos, value })),
        }
    }
    // Keys are almost always strings: a set keeps this linear however large the mapping.
    let mut taken: HashSet<String> = own.iter().filter_map(|(k, _)| text(k)).collect();
    for (k, v) in merged {
        let fresh = match text(&k) {
            Some(key) => taken.insert(key),
            None => !own.iter().any(|(o, _)| o.value == k.value),
        };
        if fresh {
            own.push((k, v));
        }
    }
    own
}

fn text(key: &Node) -> Option<String> {
    match &key.value {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    #[test]
    fn merge_keys() {
        let text =
            "a: &a {x: 1, y: 2}\nb: &b {y: 3, z: 4}\nc:\n  <<: [*a, *b]\n  x: 0\nd: {<<: 5}\n";
        let root = parse(text).unwrap().unwrap();
        let Value::Map(entries) = root.value else {
            panic!("not a map")
        };
        let Value::Map(c) = &entries[2].1.value else {
            panic!("not a map")
        };
        let c: Vec<_> = c
            .iter()
            .map(|(k, v)| (k.value.clone(), v.value.clone()))
            .collect();
        let s = |t: &str| Value::Str(t.to_owned());
        assert_eq!(
            c,
            [
                (s("x"), Value::Int(0)),
                (s("y"), Value::Int(2)),
                (s("z"), Value::Int(4)),
            ]
        );
        let Value::Map(d) = &entries[3].1.value else {
            panic!("not a map")
        };
        assert_eq!(d[0].0.value, s("<<"));
    }
}
