//! Shared helpers for the known-answer vector tests (part A files `vectors_a_*.rs`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::PathBuf;

/// The directory holding the known-answer files (`/work/shared/vectors` in the dev layout).
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors"
    ))
}

/// Loads `<name>.json` from the vectors directory. A missing file fails the test loudly:
/// these tests are the compatibility proof and must never pass by skipping.
pub fn load(name: &str) -> Value {
    let path = vectors_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "known-answer vectors missing: cannot read {} ({e}); the tests need shared/vectors next to the repository",
            path.display()
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("vector file {} is not JSON: {e}", path.display()))
}

/// The string at `v[key]`, failing with the key name if absent.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key:?} is not a string in {v}"))
}

/// The array at `v[key]`, failing with the key name if absent or empty.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    let a = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("vector field {key:?} is not an array in {v}"));
    assert!(!a.is_empty(), "vector array {key:?} is empty");
    a
}

/// The object at `v[key]` as (name, string value) pairs.
pub fn headers(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Seed `b` repeated 32 times (the vectors' fixed identities).
pub fn seed(b: u8) -> [u8; 32] {
    [b; 32]
}
