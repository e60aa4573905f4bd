//! Shared loader for the known-answer files in `shared/vectors/` (part B's tests).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;

/// Loads `shared/vectors/<name>.json`. A missing file fails the test: the vectors are the
/// point of these tests, so silently skipping would hide a broken checkout.
pub fn load(name: &str) -> Value {
    let path = format!(
        "{}/../../../shared/vectors/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("vector file {path} is missing or unreadable ({e}); the shared vectors must be checked out next to the repo")
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("vector file {path} is not JSON: {e}"))
}

/// A string field of a vector entry.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key} is not a string in {v}"))
}

/// An integer field of a vector entry.
pub fn i(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("vector field {key} is not an integer in {v}"))
}

/// An array field of a vector entry.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("vector field {key} is not an array in {v}"))
}

/// The keypair with seed `byte` x 32 (the vectors' fixed keys).
pub fn kp(byte: u8) -> wireleap_proto::keys::Keypair {
    wireleap_proto::keys::Keypair::from_seed([byte; 32])
}
