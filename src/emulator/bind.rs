//! Reading request bodies the way `ctx.bodyAsClass(X.class)` does with a
//! plain Jackson 2.10 `ObjectMapper`.
//!
//! The body is decoded as text and the first JSON value is read (trailing
//! content is ignored, `FAIL_ON_TRAILING_TOKENS` is off). `null` yields
//! "Request body as X cannot be null or empty"; anything else that does not
//! bind, including an unknown property anywhere in the tree, yields
//! "Couldn't deserialize body to X". Scalars are coerced as Jackson's
//! defaults allow: numbers and booleans into strings, numeric strings into
//! numbers, floats truncated into integers, null into a primitive's zero,
//! enum names or ordinals. Properties that the Java classes mark
//! `@JsonIgnore` are skipped whatever their value.

use serde_json::{Map, Value};

use super::clock;

/// Why a body could not be bound; both are Javalin `BadRequestResponse`s.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// The body was JSON `null`.
    #[error("Request body as {0} cannot be null or empty")]
    Null(&'static str),
    /// Jackson failed to bind the body.
    #[error("Couldn't deserialize body to {0}")]
    Invalid(&'static str),
}

/// A binding failure somewhere inside the body; the caller names the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mismatch;

type Bound<T> = Result<T, Mismatch>;

/// Reads the first JSON value of the body. `class` is the Java simple class
/// name used in error messages.
pub(crate) fn parse_body(body: &[u8], class: &'static str) -> Result<Value, BodyError> {
    let text = String::from_utf8_lossy(body);
    let mut values = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    match values.next() {
        Some(Ok(Value::Null)) => Err(BodyError::Null(class)),
        Some(Ok(value)) => Ok(value),
        Some(Err(_)) | None => Err(BodyError::Invalid(class)),
    }
}

/// Binds a parsed body with `bind`, mapping a mismatch to the class's 400.
pub(crate) fn bind_body<T>(
    body: &[u8],
    class: &'static str,
    bind: impl FnOnce(&Value) -> Bound<T>,
) -> Result<T, BodyError> {
    let value = parse_body(body, class)?;
    bind(&value).map_err(|Mismatch| BodyError::Invalid(class))
}

/// The Java type `ObjectMapper` builds for a value bound to `Object`
/// (`UntypedObjectDeserializer`), as named in a `ClassCastException`.
pub(crate) fn untyped_java_class(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "java.lang.Boolean",
        Value::String(_) => "java.lang.String",
        Value::Array(_) => "java.util.ArrayList",
        Value::Object(_) => "java.util.LinkedHashMap",
        Value::Number(n) => match n.as_i64() {
            Some(i) if i32::try_from(i).is_ok() => "java.lang.Integer",
            Some(_) => "java.lang.Long",
            None if n.is_u64() => "java.math.BigInteger",
            None => "java.lang.Double",
        },
    }
}

/// The properties of one JSON object being bound to a Java class.
pub(crate) struct Fields<'v> {
    map: &'v Map<String, Value>,
}

/// Properties every `DomainEntity` subclass accepts.
const ENTITY_KEYS: [&str; 3] = ["id", "creationDate", "updateDate"];

impl<'v> Fields<'v> {
    /// Checks that `value` is an object (or null, giving `None`) whose keys
    /// are all known or ignorable. Entity classes also accept the entity
    /// keys and ignore `entityName`.
    pub(crate) fn of(
        value: &'v Value,
        entity: bool,
        known: &[&str],
        ignored: &[&str],
    ) -> Bound<Option<Self>> {
        let map = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            _ => return Err(Mismatch),
        };
        let accepted = |key: &str| {
            known.contains(&key)
                || ignored.contains(&key)
                || (entity && (ENTITY_KEYS.contains(&key) || key == "entityName"))
        };
        if map.keys().all(|k| accepted(k)) {
            Ok(Some(Fields { map }))
        } else {
            Err(Mismatch)
        }
    }

    /// Like [`Fields::of`] for a value that must not be null.
    pub(crate) fn required(
        value: &'v Value,
        entity: bool,
        known: &[&str],
        ignored: &[&str],
    ) -> Bound<Self> {
        Self::of(value, entity, known, ignored)?.ok_or(Mismatch)
    }

    fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The raw value, if present and not null.
    pub(crate) fn value(&self, key: &str) -> Option<&'v Value> {
        self.get(key)
    }

    /// A `String` property.
    pub(crate) fn string(&self, key: &str) -> Bound<Option<String>> {
        self.get(key).map(coerce_string).transpose()
    }

    /// A `Long` property (null stays null).
    pub(crate) fn long(&self, key: &str) -> Bound<Option<i64>> {
        self.get(key)
            .map(|v| coerce_integer(v, i64::MIN as f64, i64::MAX as f64))
            .transpose()
    }

    /// A primitive `long` property (null or absent is 0).
    pub(crate) fn long_prim(&self, key: &str) -> Bound<i64> {
        Ok(self.long(key)?.unwrap_or(0))
    }

    /// A primitive `int` property.
    pub(crate) fn int_prim(&self, key: &str) -> Bound<i32> {
        match self.get(key) {
            None => Ok(0),
            Some(v) => {
                let n = coerce_integer(v, f64::from(i32::MIN), f64::from(i32::MAX))?;
                i32::try_from(n).map_err(|_| Mismatch)
            }
        }
    }

    /// A primitive `double` property.
    pub(crate) fn double_prim(&self, key: &str) -> Bound<f64> {
        match self.get(key) {
            None => Ok(0.0),
            Some(Value::Number(n)) => n.as_f64().ok_or(Mismatch),
            Some(Value::String(s)) => parse_java_double(s),
            Some(_) => Err(Mismatch),
        }
    }

    /// A primitive `boolean` property.
    pub(crate) fn bool_prim(&self, key: &str) -> Bound<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.as_i64() != Some(0)),
            Some(Value::String(s)) => match s.as_str() {
                "true" | "True" => Ok(true),
                "false" | "False" | "" | "null" => Ok(false),
                _ => Err(Mismatch),
            },
            Some(_) => Err(Mismatch),
        }
    }

    /// A `java.util.Date` property, as epoch millis.
    pub(crate) fn date(&self, key: &str) -> Bound<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(Mismatch),
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.is_empty() || s == "null" {
                    Ok(None)
                } else {
                    clock::parse_std_date(s).map(Some).ok_or(Mismatch)
                }
            }
            Some(_) => Err(Mismatch),
        }
    }

    /// An enum property, as an index into `names` (declaration order).
    pub(crate) fn enumeration(&self, key: &str, names: &[&str]) -> Bound<Option<usize>> {
        let index = |i: i64| {
            usize::try_from(i)
                .ok()
                .filter(|i| *i < names.len())
                .ok_or(Mismatch)
        };
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => {
                if let Some(i) = names.iter().position(|n| n == s) {
                    return Ok(Some(i));
                }
                let t = s.trim();
                if t.starts_with(|c: char| c.is_ascii_digit()) {
                    if let Ok(i) = t.parse::<i64>() {
                        return index(i).map(Some);
                    }
                }
                Err(Mismatch)
            }
            Some(Value::Number(n)) => index(n.as_i64().ok_or(Mismatch)?).map(Some),
            Some(_) => Err(Mismatch),
        }
    }

    /// A `List<X>` property: null stays null, elements bound by `element`.
    pub(crate) fn list<T>(
        &self,
        key: &str,
        mut element: impl FnMut(&'v Value) -> Bound<T>,
    ) -> Bound<Option<Vec<T>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(&mut element)
                .collect::<Bound<_>>()
                .map(Some),
            Some(_) => Err(Mismatch),
        }
    }
}

/// Jackson's `StringDeserializer`: strings, and the text of other scalars.
pub(crate) fn coerce_string(value: &Value) -> Bound<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Mismatch),
    }
}

/// A nullable string element of a list.
pub(crate) fn coerce_opt_string(value: &Value) -> Bound<Option<String>> {
    if value.is_null() {
        Ok(None)
    } else {
        coerce_string(value).map(Some)
    }
}

/// Integer coercion within `[min, max]`: integers, truncated floats
/// (`ACCEPT_FLOAT_AS_INT`) and trimmed numeric strings ("" is zero).
fn coerce_integer(value: &Value, min: f64, max: f64) -> Bound<i64> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return if (i as f64) >= min && (i as f64) <= max {
                    Ok(i)
                } else {
                    Err(Mismatch)
                };
            }
            let f = n.as_f64().ok_or(Mismatch)?;
            if f.is_finite() && f >= min && f <= max {
                Ok(f.trunc() as i64)
            } else {
                Err(Mismatch)
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                return Ok(0);
            }
            let n = super::routes::java_parse_long(t).ok_or(Mismatch)?;
            if (n as f64) >= min && (n as f64) <= max {
                Ok(n)
            } else {
                Err(Mismatch)
            }
        }
        _ => Err(Mismatch),
    }
}

/// `Double.parseDouble` plus Jackson's special names, for string input.
fn parse_java_double(s: &str) -> Bound<f64> {
    let t = s.trim();
    match t {
        "" => Ok(0.0),
        "NaN" => Ok(f64::NAN),
        "Infinity" | "+Infinity" | "INF" => Ok(f64::INFINITY),
        "-Infinity" | "-INF" => Ok(f64::NEG_INFINITY),
        _ => {
            let plain = t.strip_suffix(['d', 'D', 'f', 'F']).unwrap_or(t);
            let ok = !plain.is_empty()
                && plain
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
            if ok {
                plain.parse().map_err(|_| Mismatch)
            } else {
                Err(Mismatch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_reading() {
        assert_eq!(parse_body(b"null", "User"), Err(BodyError::Null("User")));
        assert_eq!(parse_body(b"", "User"), Err(BodyError::Invalid("User")));
        assert_eq!(parse_body(b"  ", "User"), Err(BodyError::Invalid("User")));
        assert_eq!(
            parse_body(b"{\"a\":", "User"),
            Err(BodyError::Invalid("User"))
        );
        assert_eq!(
            parse_body(b"{\"a\":1} trailing", "User"),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            BodyError::Invalid("SignInRequest").to_string(),
            "Couldn't deserialize body to SignInRequest"
        );
        assert_eq!(
            BodyError::Null("HashMap").to_string(),
            "Request body as HashMap cannot be null or empty"
        );
    }

    #[test]
    fn unknown_keys_fail_and_ignored_keys_pass() {
        let v = json!({"username": "a", "entityName": {"x": 1}, "doctor": 5});
        assert!(Fields::of(&v, true, &["username"], &["doctor"]).is_ok());
        assert!(Fields::of(&v, false, &["username"], &["doctor"]).is_err());
        assert!(Fields::of(&json!({"confirm": 1}), true, &["username"], &[]).is_err());
        assert!(Fields::of(&json!([1]), true, &[], &[]).is_err());
        assert!(Fields::of(&json!(null), true, &[], &[]).unwrap().is_none());
    }

    #[test]
    fn scalar_coercions() {
        let v = json!({
            "s1": 12, "s2": true, "s3": [1],
            "l1": "  42 ", "l2": 3.9, "l3": "x", "l4": 1e30, "l5": "",
            "i1": 2147483648_i64,
            "d1": 7, "d2": "1.5", "d3": "abc", "d4": false,
            "b1": 1, "b2": "True", "b3": "yes", "b4": 0.5,
            "t1": 1611000000000_i64, "t2": "2021-01-19", "t3": 1.5, "t4": "soon",
            "e1": "Male", "e2": 0, "e3": "1", "e4": "", "e5": "male", "e6": 2
        });
        let f = Fields::required(&v, false, &[], &[]);
        // Keys are unknown for the check above; bind with all keys known.
        assert!(f.is_err());
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let f = Fields::required(&v, false, &keys, &[]).unwrap();
        assert_eq!(f.string("s1"), Ok(Some("12".into())));
        assert_eq!(f.string("s2"), Ok(Some("true".into())));
        assert_eq!(f.string("s3"), Err(Mismatch));
        assert_eq!(f.string("missing"), Ok(None));
        assert_eq!(f.long("l1"), Ok(Some(42)));
        assert_eq!(f.long("l2"), Ok(Some(3)));
        assert_eq!(f.long("l3"), Err(Mismatch));
        assert_eq!(f.long("l4"), Err(Mismatch));
        assert_eq!(f.long_prim("l5"), Ok(0));
        assert_eq!(f.int_prim("i1"), Err(Mismatch));
        assert_eq!(f.double_prim("d1"), Ok(7.0));
        assert_eq!(f.double_prim("d2"), Ok(1.5));
        assert_eq!(f.double_prim("d3"), Err(Mismatch));
        assert_eq!(f.double_prim("d4"), Err(Mismatch));
        assert_eq!(f.bool_prim("b1"), Ok(true));
        assert_eq!(f.bool_prim("b2"), Ok(true));
        assert_eq!(f.bool_prim("b3"), Err(Mismatch));
        assert_eq!(f.bool_prim("b4"), Err(Mismatch));
        assert_eq!(f.date("t1"), Ok(Some(1_611_000_000_000)));
        assert_eq!(f.date("t2"), Ok(Some(1_611_014_400_000)));
        assert_eq!(f.date("t3"), Err(Mismatch));
        assert_eq!(f.date("t4"), Err(Mismatch));
        let sex = ["Female", "Male"];
        assert_eq!(f.enumeration("e1", &sex), Ok(Some(1)));
        assert_eq!(f.enumeration("e2", &sex), Ok(Some(0)));
        assert_eq!(f.enumeration("e3", &sex), Ok(Some(1)));
        assert_eq!(f.enumeration("e4", &sex), Err(Mismatch));
        assert_eq!(f.enumeration("e5", &sex), Err(Mismatch));
        assert_eq!(f.enumeration("e6", &sex), Err(Mismatch));
    }

    #[test]
    fn class_cast_names() {
        assert_eq!(untyped_java_class(&json!(5)), "java.lang.Integer");
        assert_eq!(
            untyped_java_class(&json!(5_000_000_000_i64)),
            "java.lang.Long"
        );
        assert_eq!(untyped_java_class(&json!(1.5)), "java.lang.Double");
        assert_eq!(untyped_java_class(&json!(true)), "java.lang.Boolean");
        assert_eq!(untyped_java_class(&json!([])), "java.util.ArrayList");
        assert_eq!(untyped_java_class(&json!({})), "java.util.LinkedHashMap");
    }
}
