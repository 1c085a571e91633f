//! The body whitelist for asking a question (R28).
//!
//! access.md binds request bodies onto whole entities (mass assignment,
//! §7.1 item 11 of the upstream document): a Question body may set `id`
//! (merging onto another row), `answered`, `answeredOn` and the timestamps.
//! So the body a peer sends is never forwarded. [`filter_question`] parses
//! it strictly, checks every field, and writes a *new* JSON object holding
//! only the allowed fields; that new object is what goes upstream.
//!
//! Anything unexpected is refused rather than dropped, and the error names
//! the key, so a peer learns at once that a field it relies on is not
//! carried:
//!
//! | field | accepted |
//! |---|---|
//! | `question` | required; a string of 1 to 255 characters (UTF-16 units, as Derby counts), not only white space |
//! | `type` | `"Scale"`, `"Binary"`, `"Text"`, `"Vitals"`, `null` or absent |
//! | `recurring` | `true`, `false`, `null` or absent |
//! | `startDate`, `endDate` | epoch milliseconds, an integer from 0 to 253402300799999 (year 9999), `null` or absent |
//! | `recurrance` (sic) | at most 24 objects `{"hourOfDay": 0..=23, "minuteOfHour": 0..=59}`, both keys required, `null` or absent |
//!
//! Refused: `id`, `answered`, `answeredOn`, `creationDate`, `updateDate`,
//! `patient` and `answers` (named as forbidden), any other key, a key given
//! twice (JSON parsers disagree about which copy wins), a body that is not
//! a JSON object, and a body over [`MAX_QUESTION_BODY`] bytes. `null`
//! stands for absent and is left out of the rebuilt body, which the
//! upstream treats the same way.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

#[cfg(test)]
mod tests;

/// The largest question body accepted, in bytes.
pub const MAX_QUESTION_BODY: usize = 16 * 1024;

/// The longest question text, in UTF-16 code units (Derby `VARCHAR(255)`
/// counts Java characters).
pub const MAX_QUESTION_CHARS: usize = 255;

/// The most recurrence times in one question (one per hour of the day).
pub const MAX_RECURRENCES: usize = 24;

/// The latest date accepted: 9999-12-31T23:59:59.999Z, the end of Derby's
/// `DATE` range.
pub const MAX_EPOCH_MILLIS: i64 = 253_402_300_799_999;

/// The question types access.md knows (its `QuestionType` enum names).
pub const QUESTION_TYPES: [&str; 4] = ["Scale", "Binary", "Text", "Vitals"];

/// Keys the upstream would honour but a peer must never set.
const FORBIDDEN: [&str; 7] = [
    "id",
    "answered",
    "answeredOn",
    "creationDate",
    "updateDate",
    "patient",
    "answers",
];

/// Why a question body was refused. Key names are cut to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("key {key:?} appears more than once")]
    DuplicateKey { key: String },
    #[error("key {key:?} may not be set by a peer")]
    ForbiddenKey { key: String },
    #[error("unknown key {key:?}")]
    UnknownKey { key: String },
    #[error("required key {key:?} is missing")]
    MissingKey { key: &'static str },
    #[error("{key}: {problem}")]
    InvalidValue {
        /// The field, as in `recurrance[3].hourOfDay`.
        key: String,
        problem: &'static str,
    },
}

impl BodyError {
    /// A stable machine-readable label.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "body_too_large",
            BodyError::NotJson(_) => "body_not_json",
            BodyError::NotObject => "body_not_object",
            BodyError::DuplicateKey { .. } => "body_duplicate_key",
            BodyError::ForbiddenKey { .. } => "body_forbidden_key",
            BodyError::UnknownKey { .. } => "body_unknown_key",
            BodyError::MissingKey { .. } => "body_missing_key",
            BodyError::InvalidValue { .. } => "body_invalid_value",
        }
    }
}

/// Checks a peer's R28 body and rebuilds it from the allowed fields only.
/// The result is compact JSON, ready to forward with
/// `Content-Type: application/json`.
pub fn filter_question(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    if body.len() > MAX_QUESTION_BODY {
        return Err(BodyError::TooLarge {
            limit: MAX_QUESTION_BODY,
        });
    }
    let parsed: Json =
        serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let Json::Object(fields) = parsed else {
        return Err(BodyError::NotObject);
    };
    no_duplicates(&fields)?;

    let mut out = Map::new();
    let mut has_question = false;
    for (key, value) in &fields {
        let clean = match key.as_str() {
            "question" => {
                has_question = true;
                Some(question_text(value)?)
            }
            "type" => question_type(value)?,
            "recurring" => recurring(value)?,
            "startDate" | "endDate" => epoch_millis(key, value)?,
            "recurrance" => recurrences(value)?,
            k if FORBIDDEN.contains(&k) => {
                return Err(BodyError::ForbiddenKey { key: cut(k) });
            }
            k => return Err(BodyError::UnknownKey { key: cut(k) }),
        };
        if let Some(clean) = clean {
            out.insert(key.clone(), clean);
        }
    }
    if !has_question {
        return Err(BodyError::MissingKey { key: "question" });
    }
    Ok(Value::Object(out).to_string().into_bytes())
}

fn question_text(value: &Json) -> Result<Value, BodyError> {
    let invalid = |problem| BodyError::InvalidValue {
        key: "question".to_owned(),
        problem,
    };
    let Json::String(text) = value else {
        return Err(invalid("must be a string"));
    };
    if text.trim().is_empty() {
        return Err(invalid("must not be empty"));
    }
    if text.encode_utf16().count() > MAX_QUESTION_CHARS {
        return Err(invalid("longer than 255 characters"));
    }
    Ok(Value::String(text.clone()))
}

fn question_type(value: &Json) -> Result<Option<Value>, BodyError> {
    match value {
        Json::Null => Ok(None),
        Json::String(t) if QUESTION_TYPES.contains(&t.as_str()) => {
            Ok(Some(Value::String(t.clone())))
        }
        _ => Err(BodyError::InvalidValue {
            key: "type".to_owned(),
            problem: "must be one of \"Scale\", \"Binary\", \"Text\", \"Vitals\" or null",
        }),
    }
}

fn recurring(value: &Json) -> Result<Option<Value>, BodyError> {
    match value {
        Json::Null => Ok(None),
        Json::Bool(b) => Ok(Some(Value::Bool(*b))),
        _ => Err(BodyError::InvalidValue {
            key: "recurring".to_owned(),
            problem: "must be true, false or null",
        }),
    }
}

fn epoch_millis(key: &str, value: &Json) -> Result<Option<Value>, BodyError> {
    match value {
        Json::Null => Ok(None),
        Json::Int(ms) if (0..=MAX_EPOCH_MILLIS).contains(ms) => Ok(Some(Value::from(*ms))),
        _ => Err(BodyError::InvalidValue {
            key: key.to_owned(),
            problem: "must be epoch milliseconds: an integer from 0 to 253402300799999, or null",
        }),
    }
}

fn recurrences(value: &Json) -> Result<Option<Value>, BodyError> {
    let items = match value {
        Json::Null => return Ok(None),
        Json::Array(items) => items,
        _ => {
            return Err(BodyError::InvalidValue {
                key: "recurrance".to_owned(),
                problem: "must be an array of {hourOfDay, minuteOfHour} objects, or null",
            })
        }
    };
    if items.len() > MAX_RECURRENCES {
        return Err(BodyError::InvalidValue {
            key: "recurrance".to_owned(),
            problem: "more than 24 entries",
        });
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Json::Object(fields) = item else {
            return Err(BodyError::InvalidValue {
                key: format!("recurrance[{i}]"),
                problem: "must be an object {hourOfDay, minuteOfHour}",
            });
        };
        no_duplicates(fields)?;
        let mut hour = None;
        let mut minute = None;
        for (key, value) in fields {
            let (slot, max) = match key.as_str() {
                "hourOfDay" => (&mut hour, 23),
                "minuteOfHour" => (&mut minute, 59),
                k if FORBIDDEN.contains(&k) => {
                    return Err(BodyError::ForbiddenKey { key: cut(k) });
                }
                k => return Err(BodyError::UnknownKey { key: cut(k) }),
            };
            match value {
                Json::Int(n) if (0..=max).contains(n) => *slot = Some(*n),
                _ => {
                    return Err(BodyError::InvalidValue {
                        key: format!("recurrance[{i}].{key}"),
                        problem: if max == 23 {
                            "must be an integer from 0 to 23"
                        } else {
                            "must be an integer from 0 to 59"
                        },
                    })
                }
            }
        }
        let (Some(hour), Some(minute)) = (hour, minute) else {
            let key = if hour.is_none() {
                "hourOfDay"
            } else {
                "minuteOfHour"
            };
            return Err(BodyError::MissingKey { key });
        };
        let mut entry = Map::new();
        entry.insert("hourOfDay".to_owned(), Value::from(hour));
        entry.insert("minuteOfHour".to_owned(), Value::from(minute));
        out.push(Value::Object(entry));
    }
    Ok(Some(Value::Array(out)))
}

fn no_duplicates(fields: &[(String, Json)]) -> Result<(), BodyError> {
    // Objects here are small (the body is at most 16 KiB), so a quadratic
    // scan costs less than building a set.
    for (i, (key, _)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(k, _)| k == key) {
            return Err(BodyError::DuplicateKey { key: cut(key) });
        }
    }
    Ok(())
}

/// A key name for an error message: at most 64 characters.
fn cut(key: &str) -> String {
    key.chars().take(64).collect()
}

/// A JSON value that keeps every object member in order, duplicates
/// included (`serde_json::Value` would keep only the last copy), and
/// integers apart from other numbers.
#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// A number that is not an integer in `i64` range; never accepted.
    OtherNumber,
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(i64::try_from(v).map_or(Json::OtherNumber, Json::Int))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::OtherNumber)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            fields.push((key, value));
        }
        Ok(Json::Object(fields))
    }
}
