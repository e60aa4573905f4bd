//! JSON as the original's Go encoder writes it and its decoder reads it (protocol.md §1.3).
//!
//! Output: compact, struct fields in declaration order (serde's derive keeps it), `<`, `>`,
//! `&`, U+2028 and U+2029 escaped as `\u003c`-style sequences (HTML escaping; off for status
//! objects), control characters other than `\n`, `\r`, `\t` as `\u00XX`.
//! Input: goes through [`from_slice`], which parses once into a [`serde_json::Value`] so that
//! the last duplicate key wins (Go's rule) instead of serde's "duplicate field" error.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};
use std::io;

/// A JSON text that could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSON: {0}")]
pub struct JsonError(#[from] pub serde_json::Error);

/// Go's `json.Marshal`: compact, HTML-escaped, no trailing newline.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JsonError> {
    write(value, true, None)
}

/// Go's encoder with `SetEscapeHTML(false)`, without the newline it appends (status objects).
pub fn to_vec_no_html<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JsonError> {
    write(value, false, None)
}

/// Go-style 4-space indented output (client files such as `pofs.json`), no trailing newline.
pub fn to_vec_indented<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JsonError> {
    let pretty = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    write(value, true, Some(pretty))
}

/// Decodes like Go: last duplicate key wins, trailing whitespace accepted, anything else after
/// the value rejected. Unknown keys are ignored unless the target type denies them.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    Ok(serde_json::from_value(value)?)
}

/// `skip_serializing_if` predicate for omitempty integers.
pub fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn write<T: Serialize + ?Sized>(
    value: &T,
    html: bool,
    pretty: Option<serde_json::ser::PrettyFormatter<'static>>,
) -> Result<Vec<u8>, JsonError> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter { html, pretty });
    value.serialize(&mut ser)?;
    Ok(out)
}

struct GoFormatter {
    html: bool,
    pretty: Option<serde_json::ser::PrettyFormatter<'static>>,
}

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        frag: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in frag.char_indices() {
            let esc: Option<&[u8]> = match c {
                '<' if self.html => Some(b"\\u003c"),
                '>' if self.html => Some(b"\\u003e"),
                '&' if self.html => Some(b"\\u0026"),
                '\u{2028}' => Some(b"\\u2028"),
                '\u{2029}' => Some(b"\\u2029"),
                _ => None,
            };
            if let Some(esc) = esc {
                w.write_all(&frag.as_bytes()[start..i])?;
                w.write_all(esc)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&frag.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        esc: CharEscape,
    ) -> io::Result<()> {
        // Go writes only \" \\ \n \r \t in short form; \b and \f become \u0008 and \u000c.
        let short: &[u8] = match esc {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\u0008",
            CharEscape::FormFeed => b"\\u000c",
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let buf = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 0xf) as usize],
                ];
                return w.write_all(&buf);
            }
        };
        w.write_all(short)
    }

    // Pretty printing delegates to serde_json's formatter when asked for.
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_array(w),
            None => w.write_all(b"["),
        }
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.end_array(w),
            None => w.write_all(b"]"),
        }
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_array_value(w, first),
            None if first => Ok(()),
            None => w.write_all(b","),
        }
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.end_array_value(w),
            None => Ok(()),
        }
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_object(w),
            None => w.write_all(b"{"),
        }
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.end_object(w),
            None => w.write_all(b"}"),
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_object_key(w, first),
            None if first => Ok(()),
            None => w.write_all(b","),
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.begin_object_value(w),
            None => w.write_all(b":"),
        }
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        match &mut self.pretty {
            Some(p) => p.end_object_value(w),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let v = serde_json::json!({"a": "x<y>&\u{2028}\u{8}\u{c}\u{1}\n/"});
        assert_eq!(
            String::from_utf8_lossy(&to_vec(&v).unwrap_or_default()),
            r#"{"a":"x\u003cy\u003e\u0026\u2028\u0008\u000c\u0001\n/"}"#
        );
        assert_eq!(
            String::from_utf8_lossy(&to_vec_no_html(&v).unwrap_or_default()),
            r#"{"a":"x<y>&\u2028\u0008\u000c\u0001\n/"}"#
        );
    }

    #[test]
    fn indents_with_four_spaces() {
        let v = serde_json::json!([{"a": 1}]);
        assert_eq!(
            String::from_utf8_lossy(&to_vec_indented(&v).unwrap_or_default()),
            "[\n    {\n        \"a\": 1\n    }\n]"
        );
    }

    #[test]
    fn last_duplicate_wins() {
        let v: serde_json::Value = from_slice(br#"{"a":1,"a":2}  "#).unwrap_or_default();
        assert_eq!(v["a"], 2);
        assert!(from_slice::<serde_json::Value>(b"{} x").is_err());
    }
}
