//! The SOCKSv5 forwarder: the wire codec ([`codec`]) and the server that turns CONNECT and
//! UDP ASSOCIATE requests into streams from a [`Connector`] (the circuit dialer in the
//! client, anything else in tests and benchmarks).

pub mod codec;
pub mod server;

pub use codec::{Reply, TargetAddr};
pub use server::{BoxStream, ConnectError, Connector, ProxyStream, SocksConfig, SocksServer};
