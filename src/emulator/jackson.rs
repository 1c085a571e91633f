//! Writing JSON the way access.md's Jackson `ObjectMapper` does.
//!
//! Output is compact, properties come in the order the caller writes them
//! (the entity views follow Java field order), nulls are written, dates are
//! epoch-millisecond numbers and `double`s use `Double.toString`'s shape
//! (`72.0`, `1.0E7`, `1.0E-4`). Strings escape only `"`, `\` and control
//! characters, with upper-case hex, as Jackson's `WriterBasedJsonGenerator`.

use std::fmt::Write as _;

/// Appends a JSON string literal.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{b:04X}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends a nullable string.
pub(crate) fn write_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.push_str("null"),
    }
}

/// Appends a Java `double` as Jackson writes it (`Double.toString`, with
/// non-finite values quoted because `QUOTE_NON_NUMERIC_NUMBERS` is on).
pub(crate) fn write_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("\"NaN\"");
        return;
    }
    if d.is_infinite() {
        out.push_str(if d > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
        return;
    }
    if d.is_sign_negative() {
        out.push('-');
    }
    let abs = d.abs();
    if abs == 0.0 {
        out.push_str("0.0");
        return;
    }
    // Shortest round-trip digits and decimal exponent, e.g. "7.2e1".
    let sci = format!("{abs:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (1e-3..1e7).contains(&abs) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        out.push_str(if digits.len() > 1 { &digits[1..] } else { "0" });
        let _ = write!(out, "E{exp}");
    }
}

/// A JSON object being written: `{"k":v,...}`.
pub(crate) struct Obj<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Obj<'a> {
    /// Opens an object.
    pub(crate) fn open(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, empty: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        write_str(self.out, key);
        self.out.push(':');
        self.out
    }

    /// A nullable string property.
    pub(crate) fn str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        let out = self.key(key);
        write_opt_str(out, value);
        self
    }

    /// A `long`/`int` property.
    pub(crate) fn num(&mut self, key: &str, value: i64) -> &mut Self {
        let out = self.key(key);
        let _ = write!(out, "{value}");
        self
    }

    /// A nullable `Long` or `Date` (epoch millis) property.
    pub(crate) fn opt_num(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.num(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// A `double` property.
    pub(crate) fn double(&mut self, key: &str, value: f64) -> &mut Self {
        let out = self.key(key);
        write_double(out, value);
        self
    }

    /// A `boolean` property.
    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, if value { "true" } else { "false" })
    }

    /// A property whose value is already JSON text.
    pub(crate) fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key).push_str(json);
        self
    }

    /// A property whose value the closure writes.
    pub(crate) fn with(&mut self, key: &str, write: impl FnOnce(&mut String)) -> &mut Self {
        write(self.key(key));
        self
    }

    /// Closes the object.
    pub(crate) fn close(self) {
        self.out.push('}');
    }
}

/// Writes `[a,b,...]` with one closure call per item.
pub(crate) fn write_array<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut String, T),
) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(out, item);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(d: f64) -> String {
        let mut s = String::new();
        write_double(&mut s, d);
        s
    }

    #[test]
    fn doubles_look_like_java() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (72.0, "72.0"),
            (97.5, "97.5"),
            (120.25, "120.25"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (1.5e-7, "1.5E-7"),
            (1234567.0, "1234567.0"),
            (1e7, "1.0E7"),
            (12345678.9, "1.23456789E7"),
            (-3.0, "-3.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::NAN, "\"NaN\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
        ];
        for (d, want) in cases {
            assert_eq!(double(d), want, "{d}");
        }
    }

    #[test]
    fn strings_escape_like_jackson() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\nd\u{1}é/\u{7f}");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001é/\u{7f}\"");
    }

    #[test]
    fn objects_keep_order_and_nulls() {
        let mut s = String::new();
        let mut o = Obj::open(&mut s);
        o.num("id", 1)
            .opt_num("creationDate", None)
            .str("username", Some("admin"))
            .str("telephoneNumber", None)
            .double("height", 0.0)
            .bool("obesity", false)
            .with("medications", |out| write_array(out, ["x"], write_str));
        o.close();
        assert_eq!(
            s,
            r#"{"id":1,"creationDate":null,"username":"admin","telephoneNumber":null,"height":0.0,"obesity":false,"medications":["x"]}"#
        );
    }
}
