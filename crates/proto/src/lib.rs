//! Wireleap protocol types: every signed object, its exact encoding, and its validation.
//!
//! This crate does no I/O and reads no clock: time is passed in as unix seconds, bytes are
//! passed in as slices. Networking, storage and process management live in other crates that
//! depend on this one. The byte-level rules follow `shared/spec/protocol.md`; each module names
//! the section it implements, and its tests replay the known-answer files in `shared/vectors/`.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod accesskey;
pub mod address;
pub mod b64;
pub mod bytesize;
pub mod contractinfo;
pub mod dirinfo;
pub mod duration;
pub mod fields;
pub mod json;
pub mod keys;
pub mod nonce;
pub mod payout;
pub mod pof;
pub mod pow;
pub mod rational;
pub mod relayentry;
pub mod relaylist;
pub mod request;
pub mod servicekey;
pub mod sharetoken;
pub mod status;
pub mod verified;
pub mod version;
pub mod wl_payload;
