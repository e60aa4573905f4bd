//! Runs a whole Wireleap network on loopback: contract, directory, auth with ps-dummy, three
//! relays (fronting, entropic, backing) that upgrade themselves from a signed release
//! repository, and the client with its SOCKS port, each a real
//! process of its real binary with its own home directory, generated keys and an embedded
//! SQLite database. The same launcher serves the `wireleap-devnet` command and the
//! end-to-end tests.
//!
//! Not here: any service logic. The devnet only writes configuration, starts and stops
//! processes through their own `start`/`stop` commands, and reads their public APIs.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod launch;
pub mod load;
pub mod probe;
pub mod releases;

pub use launch::{Devnet, DevnetInfo, Options};
