//! The HTTP API between Wireleap components (protocol.md §7).
//!
//! Client side: [`ApiClient`] builds requests as the original does (Go-compatible JSON bodies,
//! `null` body on GET, Idempotency-Key on POST, signature and interface-version headers when
//! the caller has an identity), retries transport failures and 500/502, checks the server's
//! version headers, and turns status bodies into typed errors.
//! Server side: axum extractors that verify signatures and decode bodies, a version gate, an
//! idempotency cache, status replies, and [`serve`] for HTTP/1.1 + HTTP/2 with or without TLS.
//! Service logic is not here.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod client;
pub mod server;

pub use client::{ApiClient, ApiError, Identity, RawResponse, RetryPolicy};
pub use server::{serve, serve_gated, ApiJson, ApiState, Signed, StatusReply};
