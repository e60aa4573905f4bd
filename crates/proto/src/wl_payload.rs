//! The tunnel init payload, sent as the `wl-payload` request header of each hop's HTTP/2 PUT
//! stream (protocol.md §14.2, §14.3).
//!
//! [`WlPayload`] is the wire object (exact field order and omission, HTML-escaped compact JSON).
//! [`WlPayload::into_request`] turns it into a [`TunnelRequest`] with every field the relay
//! needs present and valid. The original relay validates none of command, protocol, scheme or
//! version and crashes on a CONNECT without token; we refuse such payloads with a 400.
//! Dialing, splicing and the sharetoken acceptance order live in the relay and net crates.

use crate::address::{Address, Scheme};
use crate::sharetoken::Sharetoken;
use crate::status::{Status, ToStatus};
use crate::version;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The request header carrying the payload.
pub const HEADER: &str = "wl-payload";

/// What the client asks a relay to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Open a connection to `remote` and splice it to the stream.
    #[serde(rename = "CONNECT")]
    Connect,
    /// Answer with the relay's PONG status.
    #[serde(rename = "PING")]
    Ping,
}

/// Network for the relay's dial (Go's network names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, any IP version.
    Tcp,
    /// TCP over IPv4.
    Tcp4,
    /// TCP over IPv6.
    Tcp6,
    /// UDP, any IP version.
    Udp,
    /// UDP over IPv4.
    Udp4,
    /// UDP over IPv6.
    Udp6,
}

impl Protocol {
    /// The network name (`tcp`, `udp6`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tcp4 => "tcp4",
            Protocol::Tcp6 => "tcp6",
            Protocol::Udp => "udp",
            Protocol::Udp4 => "udp4",
            Protocol::Udp6 => "udp6",
        }
    }

    /// Whether this is a UDP network.
    pub const fn is_udp(self) -> bool {
        matches!(self, Protocol::Udp | Protocol::Udp4 | Protocol::Udp6)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `wl-payload` object as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WlPayload {
    /// CONNECT or PING.
    pub command: Command,
    /// Network for the relay's dial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Next relay (`wireleap://`, `https://`) or final target (`target://host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Address>,
    /// Payment for this relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Sharetoken>,
    /// The client's client-relay interface version.
    #[serde(
        default,
        with = "version::serde_strict_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<semver::Version>,
}

/// A payload with everything its command needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelRequest {
    /// Answer PONG.
    Ping,
    /// Dial `remote` over `protocol`, paid by `token`.
    Connect {
        /// Network for the dial.
        protocol: Protocol,
        /// Where to connect.
        remote: Address,
        /// The sharetoken for this relay (still unverified).
        token: Box<Sharetoken>,
        /// The client's client-relay version, if sent.
        version: Option<semver::Version>,
    },
}

/// Why a `wl-payload` header was refused. The relay answers it as a 400 status whose
/// description starts with the original's "could not parse payload header: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WlPayloadError {
    /// The header is missing or is not the payload JSON.
    #[error("could not parse payload header: {0}")]
    Json(String),
    /// CONNECT without `protocol`.
    #[error("could not parse payload header: CONNECT needs a protocol")]
    MissingProtocol,
    /// CONNECT without `remote`.
    #[error("could not parse payload header: CONNECT needs a remote")]
    MissingRemote,
    /// CONNECT without `token`.
    #[error("could not parse payload header: CONNECT needs a sharetoken")]
    MissingToken,
}

impl ToStatus for WlPayloadError {
    /// A 400 whose description is the error text; the relay adds its key as origin.
    fn to_status(&self) -> Status {
        Status::new(400, self.to_string())
    }
}

impl WlPayload {
    /// `{"command":"PING"}`.
    pub fn ping() -> Self {
        Self {
            command: Command::Ping,
            protocol: None,
            remote: None,
            token: None,
            version: None,
        }
    }

    /// A CONNECT as our client sends it (version = our client-relay version).
    pub fn connect(protocol: Protocol, remote: Address, token: Sharetoken) -> Self {
        Self {
            command: Command::Connect,
            protocol: Some(protocol),
            remote: Some(remote),
            token: Some(token),
            version: Some(version::Interface::ClientRelay.version()),
        }
    }

    /// The header value: compact JSON, HTML-escaped, no newline.
    pub fn to_header_value(&self) -> String {
        // Enums, addresses, versions and a sharetoken always encode.
        String::from_utf8_lossy(&crate::json::to_vec(self).unwrap_or_default()).into_owned()
    }

    /// Parses a header value (an absent header is the empty string).
    pub fn parse(header: &str) -> Result<Self, WlPayloadError> {
        crate::fields::from_json_object(header.as_bytes()).map_err(WlPayloadError::Json)
    }

    /// Checks that the command has what it needs.
    pub fn into_request(self) -> Result<TunnelRequest, WlPayloadError> {
        match self.command {
            Command::Ping => Ok(TunnelRequest::Ping),
            Command::Connect => Ok(TunnelRequest::Connect {
                protocol: self.protocol.ok_or(WlPayloadError::MissingProtocol)?,
                remote: self.remote.ok_or(WlPayloadError::MissingRemote)?,
                token: Box::new(self.token.ok_or(WlPayloadError::MissingToken)?),
                version: self.version,
            }),
        }
    }
}

impl TunnelRequest {
    /// Parses and checks a `wl-payload` header value.
    pub fn from_header(header: &str) -> Result<Self, WlPayloadError> {
        WlPayload::parse(header)?.into_request()
    }

    /// Whether the remote is the final target (the relay then reports errors with origin
    /// `target`).
    pub fn is_last_hop(&self) -> bool {
        matches!(self, TunnelRequest::Connect { remote, .. } if remote.scheme() == Scheme::Target)
    }
}
