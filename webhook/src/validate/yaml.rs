//! YAML (and JSON, which is YAML) into `serde_json::Value`s, one document at a
//! time, with source positions for field paths when a report needs them.
//!
//! Files are split into documents at `---` lines first, so every document is
//! parsed (and judged) on its own: a syntax error spoils only its document, and
//! documents can be processed in parallel. Scalars follow the YAML 1.2 core
//! schema, as JSON does: `true`/`false`, `null`/`~`/empty, integers and floats
//! are typed; everything else, and anything quoted, is a string.

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

/// One document's text and where it starts in its file.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    pub text: &'a str,
    /// 1-based line of the chunk's first line in the file.
    pub first_line: usize,
}

impl Chunk<'_> {
    /// The line where the document's content starts, past blank and comment lines.
    pub fn content_line(&self) -> usize {
        let skipped = self
            .text
            .lines()
            .position(|line| {
                let line = line.trim_start();
                !line.is_empty() && !line.starts_with('#')
            })
            .unwrap_or_default();
        self.first_line + skipped
    }
}

/// Splits a stream at its `---` document markers (and `...` end markers).
pub fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker =
            |marker: &str| bare == marker || bare.strip_prefix(marker).is_some_and(|r| r.starts_with([' ', '\t']));
        if is_marker("---") || is_marker("...") {
            chunks.push(Chunk {
                text: &text[start..offset],
                first_line: start_line,
            });
            // A `--- value` line carries content after the marker.
            let content_start = if bare.starts_with("---") {
                offset + 3
            } else {
                offset + line.len()
            };
            start = content_start.min(text.len());
            start_line = index + 1;
            if bare.starts_with("...") {
                start_line += 1;
            }
        }
        offset += line.len();
    }
    chunks.push(Chunk {
        text: &text[start..],
        first_line: start_line,
    });
    chunks
}

/// A YAML syntax error, located in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Where each node of a document starts, for field paths.
#[derive(Debug, Default)]
pub struct Positions {
    line: usize,
    column: usize,
    children: Children,
}

#[derive(Debug, Default)]
enum Children {
    #[default]
    None,
    Sequence(Vec<Positions>),
    /// Key, where the key starts, and the value's positions.
    Mapping(Vec<(String, usize, usize, Positions)>),
}

/// Parses one document. `Ok(None)` for a document with no content.
pub fn parse(chunk: Chunk<'_>) -> Result<Option<Value>, SyntaxError> {
    let mut builder = Builder::<false>::new(chunk);
    builder.run()?;
    Ok(builder.root.map(|(value, _)| value))
}

/// Parses one document again, keeping positions (only needed to report problems).
pub fn positions(chunk: Chunk<'_>) -> Option<Positions> {
    let mut builder = Builder::<true>::new(chunk);
    builder.run().ok()?;
    builder.root.map(|(_, positions)| positions)
}

impl Positions {
    /// The line and column (1-based) of the deepest node on `path`
    /// (`spec.images[nginx].tags[0].tag`); a missing field points at its parent.
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut node = self;
        let mut at = (node.line, node.column);
        for segment in segments(path) {
            let next = match (&node.children, segment) {
                (Children::Mapping(entries), Segment::Name(name) | Segment::Key(name)) => entries
                    .iter()
                    .find(|(key, ..)| key == name)
                    .map(|(_, line, column, child)| ((*line, *column), child)),
                (Children::Sequence(items), Segment::Key(index)) => index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .map(|child| ((child.line, child.column), child)),
                _ => None,
            };
            match next {
                Some((position, child)) => {
                    at = position;
                    node = child;
                }
                None => break,
            }
        }
        at
    }

    /// Where the document's content starts.
    pub fn start(&self) -> (usize, usize) {
        (self.line, self.column)
    }

    /// The positions under `key` of a mapping, for documents nested in a List.
    pub fn child(&self, key: &str) -> Option<&Positions> {
        match &self.children {
            Children::Mapping(entries) => entries.iter().find(|(k, ..)| k == key).map(|(.., child)| child),
            _ => None,
        }
    }

    pub fn item(&self, index: usize) -> Option<&Positions> {
        match &self.children {
            Children::Sequence(items) => items.get(index),
            _ => None,
        }
    }
}

enum Segment<'a> {
    Name(&'a str),
    Key(&'a str),
}

/// `spec.images[a.b/c].tags[0]` → Name(spec), Name(images), Key(a.b/c), Name(tags), Key(0).
fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    let mut rest = path;
    std::iter::from_fn(move || {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if rest.is_empty() {
            return None;
        }
        if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']').unwrap_or(inner.len());
            let key = &inner[..end];
            rest = inner.get(end + 1..).unwrap_or_default();
            return Some(Segment::Key(key));
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let name = &rest[..end];
        rest = &rest[end..];
        Some(Segment::Name(name))
    })
}

/// Builds values from parser events; with `TRACK`, positions too.
struct Builder<'a, const TRACK: bool> {
    chunk: Chunk<'a>,
    /// Open collections: the value so far, its positions, and a pending key.
    stack: Vec<Frame>,
    /// Anchored values with their size in nodes.
    anchors: Vec<(usize, Value, usize)>,
    root: Option<(Value, Positions)>,
    /// Nodes built so far, aliases counted at their expanded size.
    nodes: usize,
}

/// Most nodes one document may expand to. Aliases are expanded by copying, so
/// without a cap a few hundred bytes of nested aliases (a "billion laughs")
/// would take gigabytes; real manifests are far below it.
pub const MAX_NODES: usize = 1_000_000;

struct Frame {
    value: Value,
    positions: Positions,
    anchor: usize,
    nodes_at_open: usize,
    pending_key: Option<(String, usize, usize)>,
}

impl<'a, const TRACK: bool> Builder<'a, TRACK> {
    fn new(chunk: Chunk<'a>) -> Self {
        Self {
            chunk,
            stack: Vec::new(),
            anchors: Vec::new(),
            root: None,
            nodes: 0,
        }
    }

    fn count(&mut self, nodes: usize, line: usize, column: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                line,
                column,
                message: format!(
                    "the document expands to more than {MAX_NODES} nodes (through YAML aliases); it is refused rather than expanded"
                ),
            });
        }
        Ok(())
    }

    fn position(&self, span: &Span) -> (usize, usize) {
        (span.start.line() + self.chunk.first_line - 1, span.start.col() + 1)
    }

    fn run(&mut self) -> Result<(), SyntaxError> {
        let mut parser = Parser::new_from_str(self.chunk.text);
        while let Some(event) = parser.next_event() {
            let (event, span) = event.map_err(|e| SyntaxError {
                line: e.marker().line() + self.chunk.first_line - 1,
                column: e.marker().col() + 1,
                message: e.info(),
            })?;
            let (line, column) = self.position(&span);
            if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..)) {
                self.count(1, line, column)?;
            }
            match event {
                Event::Scalar(text, style, anchor, tag) => {
                    let tag_suffix = tag
                        .as_ref()
                        .filter(|t| t.is_yaml_core_schema())
                        .map(|t| t.suffix().to_owned());
                    let value = scalar(&text, style, tag_suffix.as_deref());
                    self.count(1, line, column)?;
                    if anchor != 0 {
                        self.anchors.push((anchor, value.clone(), 1));
                    }
                    self.add(
                        value,
                        Positions {
                            line,
                            column,
                            children: Children::None,
                        },
                        line,
                        column,
                    );
                }
                Event::SequenceStart(_, anchor, _) => self.open(
                    Value::Array(Vec::new()),
                    Children::Sequence(Vec::new()),
                    anchor,
                    line,
                    column,
                ),
                Event::MappingStart(_, anchor, _) => self.open(
                    Value::Object(Map::new()),
                    Children::Mapping(Vec::new()),
                    anchor,
                    line,
                    column,
                ),
                Event::SequenceEnd | Event::MappingEnd => {
                    if let Some(frame) = self.stack.pop() {
                        if frame.anchor != 0 {
                            let size = self.nodes - frame.nodes_at_open;
                            self.anchors.push((frame.anchor, frame.value.clone(), size));
                        }
                        let (line, column) = (frame.positions.line, frame.positions.column);
                        self.add(frame.value, frame.positions, line, column);
                    }
                }
                Event::Alias(id) => {
                    let found = self.anchors.iter().rposition(|(a, _, _)| *a == id);
                    let size = found.map_or(1, |i| self.anchors[i].2);
                    // Counted before the copy is made, so a bomb stops before it takes memory.
                    self.count(size, line, column)?;
                    let value = found.map_or(Value::Null, |i| self.anchors[i].1.clone());
                    self.add(
                        value,
                        Positions {
                            line,
                            column,
                            children: Children::None,
                        },
                        line,
                        column,
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn open(&mut self, value: Value, children: Children, anchor: usize, line: usize, column: usize) {
        let children = if TRACK { children } else { Children::None };
        self.stack.push(Frame {
            value,
            positions: Positions { line, column, children },
            anchor,
            nodes_at_open: self.nodes - 1,
            pending_key: None,
        });
    }

    /// Adds a finished node to the open collection (as key or value), or as the root.
    fn add(&mut self, value: Value, positions: Positions, line: usize, column: usize) {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some((value, positions));
            return;
        };
        match &mut frame.value {
            Value::Array(items) => {
                items.push(value);
                if let Children::Sequence(children) = &mut frame.positions.children {
                    children.push(positions);
                }
            }
            Value::Object(map) => match frame.pending_key.take() {
                None => frame.pending_key = Some((key_text(value), line, column)),
                Some((key, key_line, key_column)) => {
                    if let Children::Mapping(children) = &mut frame.positions.children {
                        children.push((key.clone(), key_line, key_column, positions));
                    }
                    map.insert(key, value);
                }
            },
            _ => {}
        }
    }
}

/// Mapping keys are strings in JSON; others are written out.
fn key_text(key: Value) -> String {
    match key {
        Value::String(s) => s,
        Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// The YAML 1.2 core schema, which is JSON's.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    match tag {
        Some("str") => return Value::String(text.to_owned()),
        Some("null") => return Value::Null,
        Some("bool") | Some("int") | Some("float") => return plain(text),
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    plain(text)
}

fn plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF" | ".nan" | ".NaN"
        | ".NAN" => {
            // JSON has no infinities or NaN: keep the text.
            return Value::String(text.to_owned());
        }
        _ => {}
    }
    let first = text.as_bytes().first().copied().unwrap_or_default();
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Value::String(text.to_owned());
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).map_or_else(|_| Value::String(text.to_owned()), Value::from);
    }
    if let Some(octal) = text.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).map_or_else(|_| Value::String(text.to_owned()), Value::from);
    }
    let integer = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !integer.is_empty() && integer.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i64>() {
            return Value::from(n);
        }
        if let Ok(n) = text.parse::<u64>() {
            return Value::from(n);
        }
    }
    let float_chars = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if float_chars
        && text.bytes().any(|b| b.is_ascii_digit())
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Value {
        parse(Chunk { text, first_line: 1 }).unwrap().unwrap()
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let value = one(
            "a: 1\nb: 1.9.1\nc: \"1\"\nd: true\ne: ~\nf: 1.5\ng: yes\nh: 0x1F\ni: -3\nj: '007'\nk: 1e3\nl: nginx:1.9\nm: 99999999999999999999\nn: .5\n",
        );
        assert_eq!(
            value,
            json!({"a": 1, "b": "1.9.1", "c": "1", "d": true, "e": null, "f": 1.5, "g": "yes", "h": 31, "i": -3,
                   "j": "007", "k": 1000.0, "l": "nginx:1.9", "m": 1e20, "n": 0.5})
        );
    }

    #[test]
    fn collections_anchors_and_block_scalars() {
        let value = one("base: &b {x: 1}\ncopy: *b\nlist:\n- a\n- [1, 2]\ntext: |\n  line one\n  line two\n");
        assert_eq!(
            value,
            json!({"base": {"x": 1}, "copy": {"x": 1}, "list": ["a", [1, 2]], "text": "line one\nline two\n"})
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_takes_memory() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let previous = format!("*l{}", level - 1).replace("*l0", "*a");
            bomb.push_str(&format!("l{level}: &l{level} [{}]\n", vec![previous; 10].join(", ")));
        }
        assert!(bomb.len() < 1000, "{}", bomb.len());
        let error = parse(Chunk {
            text: &bomb,
            first_line: 1,
        })
        .unwrap_err();
        assert!(error.message.contains("more than 1000000 nodes"), "{error:?}");
        // Anchors used as intended are fine.
        assert_eq!(one("a: &a {x: 1}\nb: *a\nc: *a\n")["c"], json!({"x": 1}));
    }

    #[test]
    fn documents_split_at_markers_with_their_lines() {
        let text = "a: 1\n---\nb: 2\n--- # comment\nc: 3\n...\n---\n\n";
        let chunks = split_documents(text);
        let lines: Vec<usize> = chunks.iter().map(|c| c.first_line).collect();
        assert_eq!(lines, [1, 2, 4, 7, 7]);
        let values: Vec<Option<Value>> = chunks.iter().map(|c| parse(*c).unwrap()).collect();
        assert_eq!(
            values,
            [
                Some(json!({"a": 1})),
                Some(json!({"b": 2})),
                Some(json!({"c": 3})),
                None,
                None
            ]
        );
    }

    #[test]
    fn positions_locate_field_paths() {
        let text = "x: 0\n---\nspec:\n  images:\n    my.reg/app:\n      tags:\n      - tag: v1\n      - tag: v2\n";
        let chunk = split_documents(text)[1];
        let positions = positions(chunk).unwrap();
        assert_eq!(positions.locate("spec.images[my.reg/app].tags[1].tag"), (8, 9));
        assert_eq!(positions.locate("spec.images[my.reg/app].tags[1]"), (8, 9));
        assert_eq!(positions.locate("spec.images"), (4, 3));
        assert_eq!(positions.locate("spec.missing.deeper"), (3, 1));
    }

    #[test]
    fn syntax_errors_point_at_their_line() {
        let text = "a: 1\n---\nkind: X\nspec:\n  a: [1, 2\n";
        let error = parse(split_documents(text)[1]).unwrap_err();
        assert!(error.line >= 5, "{error:?}");
    }
}
