//! Wireleap networking: TLS for relay hops, the relay's TLS certificate made from its ed25519
//! identity, the HTTP/2 tunnel (accept a hop, dial a hop, nest hops), and splicing with limits.
//!
//! The tunnel is generic over its payload: `wl-payload` and `wl-status` travel as opaque
//! bytes/strings, and the relay and client crates give them meaning with `wireleap-proto`.
//! Not here: circuit building, sharetokens, SOCKS, relay policy (loopback refusal, dialing
//! targets), key files on disk.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod cert;
pub mod gate;
pub mod splice;
pub mod tls;
pub mod tunnel;
