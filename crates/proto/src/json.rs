//! JSON as the original's Go encoder writes it and its decoder reads it (protocol.md §1.3).
//!
//! Output: compact, struct fields in declaration order (serde's derive keeps it), `<`, `>`,
//! `&`, U+2028 and U+2029 escaped as `\u003c`-style sequences (HTML escaping; off for status
//! objects), control characters other than `\n`, `\r`, `\t` as `\u00XX`.
//! Input: [`from_slice`] replays Go's decoder on top of serde: the text is parsed once into a
//! tree that keeps every object member in order (duplicates included), and that tree is then
//! deserialised by a small serde `Deserializer` that, for each struct, uses the field names
//! serde's derive hands it to apply Go's rules:
//! - keys match field names case-insensitively, an exact match preferred (Go's folding,
//!   including the Kelvin sign `K` for `k` and the long s `ſ` for `s`);
//! - when several keys land on one field, the last one wins;
//! - a `null` member is skipped, so the field keeps its default (use `#[serde(default)]`);
//! - unknown keys are ignored (unless the type says `deny_unknown_fields`);
//! - integers accept only integer literals; trailing whitespace is fine, anything else after
//!   the value is an error.
//!
//! Known deviations (all about input no honest peer sends): Go replaces invalid UTF-8 and lone
//! surrogate escapes with U+FFFD where serde_json rejects them; `-0` is refused for an integer
//! field (serde_json reads it as a float); a `null` member after an earlier value of the same
//! field keeps that value, where Go would reset a pointer, slice or map field to nil; inside
//! enum payloads and `#[serde(flatten)]` structs keys match exactly.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::{Deserialize, Serialize};
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
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let raw = Raw::deserialize(&mut de)?;
    de.end()?;
    Ok(T::deserialize(raw)?)
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

/// A parsed JSON value that keeps every object member in input order, duplicates included, so
/// that Go's member-by-member assignment can be replayed against the target type.
enum Raw {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Raw>),
    Object(Vec<(String, Raw)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        serde_json::Number::from_f64(v)
            .map(Raw::Number)
            .ok_or_else(|| E::custom(format!("number {v} is not finite")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::String(v))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Array(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            members.push((key, map.next_value()?));
        }
        Ok(Raw::Object(members))
    }
}

impl Raw {
    /// serde_json's own tree (last duplicate wins), for the rare paths we delegate (enums).
    fn into_value(self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            Raw::Number(n) => Value::Number(n),
            Raw::String(s) => Value::String(s),
            Raw::Array(a) => Value::Array(a.into_iter().map(Raw::into_value).collect()),
            Raw::Object(m) => {
                Value::Object(m.into_iter().map(|(k, v)| (k, v.into_value())).collect())
            }
        }
    }
}

/// Collapses members onto their target names, last one winning. For structs, `fields` maps
/// keys onto field names Go-style and `null` members are skipped.
fn collapse(members: Vec<(String, Raw)>, fields: Option<&[&str]>) -> Vec<(MapKey, Raw)> {
    let mut out: Vec<(MapKey, Raw)> = Vec::with_capacity(members.len());
    let mut index: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(members.len());
    for (key, value) in members {
        let name = match fields {
            Some(fields) => {
                if matches!(value, Raw::Null) {
                    continue;
                }
                field_for(key, fields)
            }
            None => key,
        };
        match index.get(&name) {
            Some(&i) => {
                if let Some(slot) = out.get_mut(i) {
                    slot.1 = value;
                }
            }
            None => {
                index.insert(name.clone(), out.len());
                out.push((MapKey(name), value));
            }
        }
    }
    out
}

/// Go's key-to-field matching: exact name first, then the first case-insensitive match.
fn field_for(key: String, fields: &[&str]) -> String {
    if fields.contains(&key.as_str()) {
        return key;
    }
    match fields.iter().find(|f| fold_eq(f, &key)) {
        Some(f) => (*f).to_owned(),
        None => key,
    }
}

/// Case-insensitive equality as Go's decoder folds keys against (ASCII) field names.
fn fold_eq(field: &str, key: &str) -> bool {
    let mut key = key.chars();
    for f in field.chars() {
        let Some(c) = key.next() else {
            return false;
        };
        let same = c.eq_ignore_ascii_case(&f)
            || (c == '\u{212A}' && f.eq_ignore_ascii_case(&'k'))
            || (c == '\u{017F}' && f.eq_ignore_ascii_case(&'s'));
        if !same {
            return false;
        }
    }
    key.next().is_none()
}

fn visit_members<'de, V: Visitor<'de>>(
    members: Vec<(MapKey, Raw)>,
    v: V,
) -> Result<V::Value, serde_json::Error> {
    let mut map = de::value::MapDeserializer::new(members.into_iter());
    let out = v.visit_map(&mut map)?;
    map.end()?;
    Ok(out)
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Raw {
    type Deserializer = Raw;
    fn into_deserializer(self) -> Raw {
        self
    }
}

impl<'de> serde::Deserializer<'de> for Raw {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self {
            Raw::Null => v.visit_unit(),
            Raw::Bool(b) => v.visit_bool(b),
            Raw::Number(n) => n.deserialize_any(v),
            Raw::String(s) => v.visit_string(s),
            Raw::Array(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.into_iter());
                let out = v.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Raw::Object(members) => visit_members(collapse(members, None), v),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self {
            Raw::Null => v.visit_none(),
            other => v.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        match self {
            Raw::Object(members) => visit_members(collapse(members, Some(fields)), v),
            other => other.deserialize_any(v),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.into_value().deserialize_enum(name, variants, v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

/// An object key; like serde_json, integer-keyed maps read quoted integers.
struct MapKey(String);

impl<'de> IntoDeserializer<'de, serde_json::Error> for MapKey {
    type Deserializer = MapKey;
    fn into_deserializer(self) -> MapKey {
        self
    }
}

macro_rules! int_key {
    ($($method:ident $ty:ty => $visit:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
            match self.0.parse::<$ty>() {
                Ok(n) => v.$visit(n),
                Err(_) => v.visit_string(self.0),
            }
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for MapKey {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_string(self.0)
    }

    int_key! {
        deserialize_i8 i8 => visit_i8, deserialize_i16 i16 => visit_i16,
        deserialize_i32 i32 => visit_i32, deserialize_i64 i64 => visit_i64,
        deserialize_u8 u8 => visit_u8, deserialize_u16 u16 => visit_u16,
        deserialize_u32 u32 => visit_u32, deserialize_u64 u64 => visit_u64
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        IntoDeserializer::<serde_json::Error>::into_deserializer(self.0)
            .deserialize_enum(name, variants, v)
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
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

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Inner {
        #[serde(default)]
        public_key: String,
        #[serde(default)]
        n: i64,
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Outer {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        map: std::collections::BTreeMap<u32, i64>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        a: i64,
    }

    #[allow(clippy::panic)]
    fn outer(text: &str) -> Outer {
        from_slice(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn keys_fold_like_go_at_every_depth() {
        let o = outer(r#"{"TYPE":"x","Inner":{"PUBLIC_KEY":"k","N":2},"LIST":[{"n":3}]}"#);
        assert_eq!(o.kind, "x");
        assert_eq!(
            o.inner,
            Some(Inner {
                public_key: "k".into(),
                n: 2
            })
        );
        assert_eq!(
            o.list,
            vec![Inner {
                public_key: String::new(),
                n: 3
            }]
        );
        // Kelvin sign folds to k, long s to s; other look-alikes do not.
        let o = outer(r#"{"inner":{"public_\u212Aey":"a","n":1},"typ\u0117":"no"}"#);
        assert_eq!(o.inner.map(|i| i.public_key), Some("a".into()));
        assert_eq!(o.kind, "");
        assert_eq!(outer(r#"{"li\u017Ft":[{"n":4}]}"#).list.len(), 1);
    }

    #[test]
    fn last_member_wins_across_spellings() {
        assert_eq!(outer(r#"{"type":"a","TYPE":"b","type":"c"}"#).kind, "c");
        assert_eq!(outer(r#"{"type":"a","type":"c","TYPE":"b"}"#).kind, "b");
    }

    #[test]
    fn null_keeps_the_default_and_integers_are_strict() {
        let o = outer(r#"{"type":null,"inner":{"n":null},"list":null}"#);
        assert_eq!(
            o,
            Outer {
                inner: Some(Inner::default()),
                ..Outer::default()
            }
        );
        assert_eq!(
            outer(r#"{"inner":{"n":5,"n":null}}"#).inner.map(|i| i.n),
            Some(5)
        );
        for bad in [
            r#"{"inner":{"n":1.5}}"#,
            r#"{"inner":{"n":1e3}}"#,
            r#"{"inner":{"n":"5"}}"#,
            r#"{"inner":{"n":99999999999999999999}}"#,
        ] {
            assert!(from_slice::<Outer>(bad.as_bytes()).is_err(), "{bad}");
        }
        // Documented deviation: serde_json reads `-0` as a float, Go as the integer 0.
        assert!(from_slice::<Outer>(br#"{"inner":{"n":-0}}"#).is_err());
    }

    #[test]
    fn maps_lists_and_strictness_survive() {
        let o = outer(r#"{"map":{"7":1,"7":2,"8":3}}"#);
        assert_eq!(o.map.into_iter().collect::<Vec<_>>(), vec![(7, 2), (8, 3)]);
        assert!(from_slice::<Outer>(br#"{"map":{"x":1}}"#).is_err());
        assert!(from_slice::<Strict>(br#"{"a":1,"b":2}"#).is_err());
        assert!(from_slice::<Strict>(br#"{"A":1}"#).is_ok());
        assert!(from_slice::<Outer>(b"{}\n\t ").is_ok());
        assert!(from_slice::<Outer>(b"{} {}").is_err());
        let v: serde_json::Value =
            from_slice(br#"{"b":[1,{"x":null}],"a":true}"#).unwrap_or_default();
        assert_eq!(v, serde_json::json!({"b": [1, {"x": null}], "a": true}));
    }

    proptest::proptest! {
        /// For untyped values the Go rules change nothing: same verdict, same value as serde_json.
        #[test]
        fn untyped_values_match_serde_json(text in r#"[\[\]{}",:0-9a-cA-C \\.eE+-]{0,24}|\{("[aA]{1,2}":(null|1|"x"|\[\]|\{\}),?){0,4}\}"#) {
            let ours = from_slice::<serde_json::Value>(text.as_bytes()).ok();
            let reference = serde_json::from_slice::<serde_json::Value>(text.as_bytes()).ok();
            proptest::prop_assert_eq!(ours, reference);
        }
    }
}
