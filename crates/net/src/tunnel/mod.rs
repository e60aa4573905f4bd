//! The HTTP/2 tunnel (protocol.md §14): one PUT stream per hop, request body = upstream
//! bytes, response body = downstream bytes, the hop's instructions in the `wl-payload` request
//! header and an error report in the `wl-status` trailer.
//!
//! Both ends are generic over the payload: `wl-payload` and `wl-status` travel here as opaque
//! bytes/strings. Turning them into typed objects (and deciding what a status means) is the
//! relay's and the client's job. The transport is any byte stream, so a client nests hops by
//! running TLS over a [`client::TunnelStream`] of the previous hop.

pub mod client;
mod io;
pub mod server;

pub use client::{PlainResponse, Session, SessionConfig, StatusSlot, TunnelStream};
pub use server::{
    serve_connection, Counters, DrainReport, Handler, PlainReply, ServeConfig, Server,
    ServerStream, TunnelRequest,
};

use std::time::Duration;

/// Request header carrying the hop's JSON instructions.
pub const HEADER_PAYLOAD: &str = "wl-payload";
/// Trailer carrying a status text when a tunnel ends in error.
pub const TRAILER_STATUS: &str = "wl-status";

/// HTTP/2 settings shared by both ends; the defaults are sized for throughput on one stream.
#[derive(Debug, Clone)]
pub struct H2Config {
    /// Initial flow-control window per stream (bytes we let the peer send before it waits).
    pub stream_window: u32,
    /// Flow-control window for the whole connection.
    pub connection_window: u32,
    /// Largest DATA frame we accept (16 KiB ..= 16 MiB - 1).
    pub max_frame_size: u32,
    /// How much a stream may queue for sending before writes wait for the peer.
    pub max_send_buffer: usize,
    /// Streams the peer may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Largest request/response header block accepted (bounds `wl-payload`).
    pub max_header_list_size: u32,
}

impl Default for H2Config {
    fn default() -> Self {
        Self {
            // Single-stream throughput is bounded by window / RTT: 4 MiB keeps ~40 MiB/s at
            // 100 ms. The connection window bounds what one peer can make us buffer.
            stream_window: 4 << 20,
            connection_window: 8 << 20,
            max_frame_size: 64 << 10,
            max_send_buffer: 1 << 20,
            max_concurrent_streams: 1000,
            max_header_list_size: 64 << 10,
        }
    }
}

/// Connection liveness: a PING every `interval`; no PONG within `timeout` closes the
/// connection, so a peer that vanished without a FIN does not pin a task forever.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// Time between PINGs.
    pub interval: Duration,
    /// How long to wait for the PONG.
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(20),
        }
    }
}

/// What went wrong in the tunnel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The far end closed the tunnel with this `wl-status` value.
    #[error("tunnel closed with wl-status {0}")]
    Status(String),
    /// The response to a tunnel request was not HTTP 200.
    #[error("tunnel refused with HTTP status {0}")]
    HttpStatus(u16),
    /// An HTTP/2 protocol or connection error.
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// A transport error outside HTTP/2.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Something did not happen in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// A header value was not acceptable on the wire (e.g. contains CR or LF).
    #[error("invalid {name} header value: {value:?}")]
    InvalidHeader {
        /// Header name.
        name: &'static str,
        /// The offending value, lossily decoded.
        value: String,
    },
    /// The request URI could not be built.
    #[error("invalid request URI {0:?}")]
    InvalidUri(String),
    /// The response headers were already sent, so this reply is no longer possible.
    #[error("response already started; cannot {0}")]
    AlreadyResponded(&'static str),
    /// A plain reply body was larger than allowed.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The HTTP/2 session is closed; open a new one.
    #[error("HTTP/2 session closed")]
    SessionClosed,
}

impl TunnelError {
    /// Finds a tunnel error inside an I/O error returned by a [`TunnelStream`] read or write,
    /// e.g. to get at [`TunnelError::Status`].
    pub fn from_io(err: &std::io::Error) -> Option<&TunnelError> {
        err.get_ref()?.downcast_ref::<TunnelError>()
    }

    fn io_kind(&self) -> std::io::ErrorKind {
        use std::io::ErrorKind;
        match self {
            TunnelError::Status(_) | TunnelError::HttpStatus(_) => ErrorKind::ConnectionAborted,
            TunnelError::Timeout { .. } => ErrorKind::TimedOut,
            TunnelError::Io(e) => e.kind(),
            TunnelError::SessionClosed => ErrorKind::NotConnected,
            TunnelError::H2(e) if e.is_io() => ErrorKind::ConnectionReset,
            _ => ErrorKind::Other,
        }
    }
}

impl From<TunnelError> for std::io::Error {
    fn from(err: TunnelError) -> Self {
        match err {
            // Keep the original error object so callers see the real cause.
            TunnelError::Io(e) => e,
            other => std::io::Error::new(other.io_kind(), other),
        }
    }
}

/// The `wl-status` value inside an I/O error from a tunnel read, if that is why it failed.
pub fn status_of(err: &std::io::Error) -> Option<&str> {
    match TunnelError::from_io(err)? {
        TunnelError::Status(s) => Some(s),
        _ => None,
    }
}

/// Runs keepalive PINGs until one goes unanswered; returns only then.
async fn keepalive_loop(mut ping_pong: h2::PingPong, keepalive: Keepalive) {
    loop {
        tokio::time::sleep(keepalive.interval).await;
        match tokio::time::timeout(keepalive.timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(err)) => {
                tracing::debug!(%err, "keepalive ping failed");
                return;
            }
            Err(_) => {
                tracing::debug!(timeout = ?keepalive.timeout, "keepalive ping unanswered");
                return;
            }
        }
    }
}
