//! serde helpers for fields whose Go encoding serde cannot express with attributes alone.
//!
//! Go's decoder treats `null` as "leave the zero value" and its `omitempty` treats `""` like an
//! absent value; binary values travel as base64url text. These helpers are used with
//! `#[serde(with = ...)]` / `deserialize_with` so the wire types can keep strong Rust types
//! (`Option<PublicKey>`, `Option<String>`) without implementing serde on the key types
//! themselves. They hold no protocol rules of their own.

use crate::keys::PublicKey;
use serde::{Deserialize, Deserializer, Serializer};

/// Deserializes `null` as the type's default (Go leaves the zero value in place).
pub fn null_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// `Option<String>` where `None`, `""` and `null` are the same value (Go's empty string).
///
/// Use with `skip_serializing_if = "Option::is_none"` for omitempty fields; without it `None`
/// is written as `""`, which is what Go writes for an empty string field.
pub mod opt_string {
    use super::*;

    /// Writes `None` as `""`.
    pub fn serialize<S: Serializer>(v: &Option<String>, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(v.as_deref().unwrap_or(""))
    }

    /// Reads `null` and `""` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<String>::deserialize(de)?.filter(|s| !s.is_empty()))
    }
}

/// `Option<PublicKey>` as base64url text; `None` ⇄ `""` / `null` (Go's empty byte slice).
///
/// Use with `skip_serializing_if = "Option::is_none"` for omitempty fields; without it `None`
/// is written as `""`.
pub mod opt_pubkey {
    use super::*;

    /// Writes the key as base64url, `None` as `""`.
    pub fn serialize<S: Serializer>(v: &Option<PublicKey>, ser: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(k) => ser.serialize_str(&k.to_b64()),
            None => ser.serialize_str(""),
        }
    }

    /// Reads base64url of exactly 32 bytes; `""` and `null` are `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<PublicKey>, D::Error> {
        match Option::<String>::deserialize(de)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => PublicKey::from_b64(&s)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("public key {s:?}: {e}"))),
        }
    }
}

/// Decodes a JSON object into `T` the way the original's decoder does (last duplicate key
/// wins, unknown keys ignored), refusing `null`, arrays and scalars, which serde's derive
/// would otherwise read as defaults or positionally.
pub fn from_json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let value: serde_json::Value = crate::json::from_slice(bytes).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err(format!("expected a JSON object, got {}", kind(&value)));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
