//! Relay benchmarks (filled in below).
fn main() {}
