//! YAML text -> a small tree that keeps every node's position and every mapping entry in
//! order, duplicates included, so the decoder can point at the exact node it rejects. Built
//! on saphyr's event parser; scalars are resolved with saphyr's YAML 1.2 core schema, and
//! merge keys (`<<: *base`) are applied. It knows nothing of tpgate's keys.

use std::collections::{HashMap, HashSet};
use std::fmt;

use saphyr::{Scalar, ScanError};
use saphyr_parser::{Event, Marker, Parser};

use merge::merge;

mod merge;

/// Deeper nesting than this is refused: no real config needs it, and it keeps recursion
/// over the tree (clone, drop, alias sizing) bounded whatever the input.
const MAX_DEPTH: usize = 64;
/// Alias expansion budget in nodes, against "billion laughs" inputs.
const MAX_ALIAS_NODES: usize = 100_000;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Self {
            line: m.line().max(1),
            col: m.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) pos: Pos,
    pub(crate) value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; duplicate keys are kept for the decoder to report.
    Map(Vec<(Node, Node)>),
    /// A scalar whose explicit core tag did not fit it (`!!int abc`).
    Invalid(String),
}

impl Value {
    /// How the value reads in a message: `found {describe}`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Null => "nothing".to_owned(),
            Self::Bool(b) => format!("`{b}`"),
            Self::Int(i) => format!("`{i}`"),
            Self::Float(x) => format!("`{x}`"),
            Self::Str(s) | Self::Invalid(s) => format!("`{s}`"),
            Self::Seq(_) => "a list".to_owned(),
            Self::Map(_) => "a mapping".to_owned(),
        }
    }
}

/// A YAML error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) pos: Pos,
    pub(crate) message: String,
}

impl From<ScanError> for SyntaxError {
    fn from(e: ScanError) -> Self {
        Self {
            pos: (*e.marker()).into(),
            message: format!("YAML syntax error: {}", e.info()),
        }
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    /// Where each anchored node starts.
    anchored: HashSet<Pos>,
    alias_nodes: usize,
    root: Option<Node>,
}

impl Builder {
    fn push(&mut self, frame: Frame, pos: Pos) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                pos,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        self.stack.push(frame);
        Ok(())
    }

    fn pop(&mut self) {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq { pos, anchor, items }) => (
                Node {
                    pos,
                    value: Value::Seq(items),
                },
                anchor,
            ),
            Some(Frame::Map {
                pos,
                anchor,
                entries,
                ..
            }) => (
                Node {
                    pos,
                    value: Value::Map(merge(entries)),
                },
                anchor,
            ),
            None => return,
        };
        self.finish(node, anchor);
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchored.insert(node.pos);
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), SyntaxError> {
        let Some(target) = self.anchors.get(&id) else {
            return Err(SyntaxError {
                pos,
                message: "alias to an unknown anchor".to_owned(),
            });
        };
        self.alias_nodes += size(target);
        if self.alias_nodes > MAX_ALIAS_NODES {
            return Err(SyntaxError {
                pos,
                message: format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
            });
        }
        let mut node = target.clone();
        node.pos = pos;
        self.finish(node, 0);
        Ok(())
    }
}

fn size(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(size).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
        _ => 0,
    }
}

fn scalar(value: Scalar<'_>) -> Value {
    match value {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::Int(i),
        Scalar::FloatingPoint(x) => Value::Float(x.into_inner()),
        Scalar::String(s) => Value::Str(s.into_owned()),
    }
}

/// One parsed document and where its anchors (`&name`) were defined.
pub(crate) struct Document {
    pub(crate) root: Option<Node>,
    pub(crate) anchored: HashSet<Pos>,
}

/// Parses one YAML document. `Ok(None)`: the text holds no document (empty or comments).
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    parse_document(text).map(|d| d.root)
}

/// [`parse`], keeping the positions of anchored nodes.
pub(crate) fn parse_document(text: &str) -> Result<Document, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::default();
    let mut documents = 0usize;
    while let Some(event) = parser.next_event() {
        let (event, span) = event?;
        let pos = Pos::from(span.start);
        match event {
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        pos,
                        message: "a second YAML document; the config is one document".to_owned(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value =
                    match Scalar::parse_from_cow_and_metadata(text.clone(), style, tag.as_ref()) {
                        Some(v) => scalar(v),
                        None => Value::Invalid(text.into_owned()),
                    };
                b.finish(Node { pos, value }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let frame = Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                };
                b.push(frame, pos)?;
            }
            Event::MappingStart(anchor, _) => {
                let frame = Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                };
                b.push(frame, pos)?;
            }
            Event::SequenceEnd | Event::MappingEnd => b.pop(),
            Event::Alias(id) => b.alias(id, pos)?,
        }
    }
    Ok(Document {
        root: b.root,
        anchored: b.anchored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: usize, col: usize) -> Pos {
        Pos { line, col }
    }

    #[test]
    fn empty_and_comment_only_have_no_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# nothing\n\n").unwrap(), None);
    }

    #[test]
    fn positions_are_one_based() {
        let root = parse("a: 1\nb:\n  - x\n  - 'y'\n").unwrap().unwrap();
        let Value::Map(entries) = root.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.pos, p(1, 1));
        assert_eq!(
            entries[0].1,
            Node {
                pos: p(1, 4),
                value: Value::Int(1)
            }
        );
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[0].pos, p(3, 5));
        assert_eq!(items[1].value, Value::Str("y".into()));
    }

    #[test]
    fn duplicates_are_kept() {
        let root = parse("a: 1\na: 2\n").unwrap().unwrap();
        let Value::Map(entries) = root.value else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].0.pos, p(2, 1));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("YAML syntax error"), "{e:?}");
        assert!(e.pos.line >= 1);
    }

    #[test]
    fn aliases_resolve_and_are_bounded() {
        let root = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        let Value::Map(entries) = root.value else {
            panic!("not a map")
        };
        assert_eq!(entries[1].1.value, entries[0].1.value);
        assert_eq!(entries[1].1.pos, p(2, 4));

        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            let list = vec![prev; 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{list}]\n"));
        }
        let e = parse(&bomb).unwrap_err();
        assert!(e.message.contains("aliases expand"), "{e:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(200);
        assert!(parse(&text).is_err());
        let text = format!("{}1{}", "[".repeat(60), "]".repeat(60));
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn second_document_is_refused() {
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.pos, p(2, 1));
    }

    #[test]
    fn core_schema_scalars() {
        let root = parse("[0x1f, 0o17, ~, true, 1.5, '12', !!int abc]")
            .unwrap()
            .unwrap();
        let Value::Seq(items) = root.value else {
            panic!("not a seq")
        };
        let values: Vec<_> = items.into_iter().map(|n| n.value).collect();
        assert_eq!(
            values,
            [
                Value::Int(31),
                Value::Int(15),
                Value::Null,
                Value::Bool(true),
                Value::Float(1.5),
                Value::Str("12".into()),
                Value::Invalid("abc".into()),
            ]
        );
    }
}
