//! Where each key sits in the configuration text.
//!
//! serde tells us *what* is wrong (and, through toml, a byte span); the
//! validation in `load` tells us *which dotted key* is wrong. This index,
//! built once from a `toml_edit` parse of the same text, maps between the
//! two: dotted key to span, and span to dotted key. Array elements are
//! named `key[i]`.

use std::fmt;
use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// A 1-based line and column (in characters) in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text).
    pub fn at(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// One key (or array element) of the document.
#[derive(Debug)]
struct Entry {
    path: String,
    /// The key itself; `None` for array elements.
    key: Option<Range<usize>>,
    /// The value, or for a `[table]` its header through its last line.
    value: Option<Range<usize>>,
}

/// Every key of one document with its spans.
#[derive(Debug, Default)]
pub struct Positions {
    entries: Vec<Entry>,
}

impl Positions {
    /// Parses and indexes `text`; the error is the TOML syntax error.
    pub fn parse(text: &str) -> Result<Positions, toml_edit::TomlError> {
        let doc = ImDocument::parse(text)?;
        let mut positions = Positions::default();
        positions.add_table(doc.as_table(), "");
        Ok(positions)
    }

    /// The span to point at for `key`: its value, else the key itself,
    /// else the nearest enclosing table that appears in the text.
    pub fn span_of(&self, key: &str) -> Option<Range<usize>> {
        let mut key = key;
        loop {
            if let Some(entry) = self.entries.iter().find(|e| e.path == key) {
                if let Some(span) = entry.value.clone().or_else(|| entry.key.clone()) {
                    return Some(span);
                }
            }
            key = parent(key)?;
        }
    }

    /// The dotted key of the innermost entry whose key or value covers
    /// `span` (how a serde error span becomes a key).
    pub fn key_at(&self, span: &Range<usize>) -> Option<&str> {
        let covers = |r: &Option<Range<usize>>| {
            r.as_ref()
                .filter(|r| r.start <= span.start && span.end <= r.end)
                .map(|r| r.end - r.start)
        };
        self.entries
            .iter()
            .filter_map(|e| {
                let size = match (covers(&e.key), covers(&e.value)) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b)?,
                };
                Some((size, e))
            })
            .min_by_key(|(size, _)| *size)
            .map(|(_, e)| e.path.as_str())
    }

    fn add_table(&mut self, table: &Table, prefix: &str) {
        for (name, item) in table.iter() {
            let path = join(prefix, name);
            self.entries.push(Entry {
                path: path.clone(),
                key: table.key(name).and_then(|k| k.span()),
                value: item.span(),
            });
            match item {
                Item::Table(t) => self.add_table(t, &path),
                Item::Value(v) => self.add_value(v, &path),
                Item::ArrayOfTables(tables) => {
                    for (i, t) in tables.iter().enumerate() {
                        let element = format!("{path}[{i}]");
                        self.entries.push(Entry {
                            path: element.clone(),
                            key: None,
                            value: t.span(),
                        });
                        self.add_table(t, &element);
                    }
                }
                Item::None => {}
            }
        }
    }

    fn add_value(&mut self, value: &Value, path: &str) {
        match value {
            Value::InlineTable(t) => {
                for (name, v) in t.iter() {
                    let child = join(path, name);
                    self.entries.push(Entry {
                        path: child.clone(),
                        key: t.key(name).and_then(|k| k.span()),
                        value: v.span(),
                    });
                    self.add_value(v, &child);
                }
            }
            Value::Array(values) => {
                for (i, v) in values.iter().enumerate() {
                    let element = format!("{path}[{i}]");
                    self.entries.push(Entry {
                        path: element.clone(),
                        key: None,
                        value: v.span(),
                    });
                    self.add_value(v, &element);
                }
            }
            _ => {}
        }
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → `None`.
pub fn parent(key: &str) -> Option<&str> {
    key.rfind(['.', '[']).map(|i| &key[..i])
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}
