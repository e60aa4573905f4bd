//! The reachability check run before a relay is listed (protocol.md §14.5): connect to the
//! address the relay announced, speak the tunnel protocol (TLS 1.3, HTTP/2 PUT with
//! `wl-payload: {"command":"PING"}`) and expect HTTP 200 with a `PONG` status whose origin
//! is the relay's key.
//!
//! For `wireleap://` addresses the TLS certificate must carry the relay's own key (pinned),
//! so a relay cannot list someone else's address. An `https://` address is a relay behind a
//! fronting web server whose certificate is the web server's, not the relay's: there the
//! check relies on the PONG's origin only, with SNI set to the host.
//!
//! Everything (connect, handshakes, reply) shares one deadline.

use std::time::Duration;
use wireleap_net::tls::{self, TlsError};
use wireleap_net::tunnel::client::{Session, SessionConfig};
use wireleap_net::tunnel::TunnelError;
use wireleap_proto::address::{Address, Host, Scheme};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::WlPayload;

/// Why a relay failed the reachability check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PingError {
    /// The address scheme cannot carry the tunnel protocol.
    #[error("address {0} is not a wireleap:// or https:// relay address")]
    Scheme(String),
    /// TCP or TLS failed (including a certificate that is not the relay's key).
    #[error("{address}: {source}")]
    Connect {
        /// The address dialed.
        address: String,
        /// What failed.
        source: TlsError,
    },
    /// HTTP/2 failed.
    #[error("{address}: {source}")]
    Tunnel {
        /// The address dialed.
        address: String,
        /// What failed.
        source: TunnelError,
    },
    /// The reply was not HTTP 200.
    #[error("{address} answered PING with HTTP {status}")]
    HttpStatus {
        /// The address dialed.
        address: String,
        /// The HTTP status.
        status: u16,
    },
    /// The reply body is not a PONG status from this relay.
    #[error("{address} did not answer PONG from {expected}: {reply:?}")]
    NotPong {
        /// The address dialed.
        address: String,
        /// The relay key expected as origin.
        expected: String,
        /// The reply body (truncated).
        reply: String,
    },
    /// The whole exchange did not finish in time.
    #[error("{address} did not answer PING within {after:?}")]
    Timeout {
        /// The address dialed.
        address: String,
        /// The limit.
        after: Duration,
    },
}

/// Whether `body` is the PONG status of `relay` (our relays and Go relays ≥ 0.6.1 end the
/// text with a newline; older ones do not; both parse).
pub fn is_pong_from(body: &[u8], relay: &PublicKey) -> bool {
    Status::parse(body).is_ok_and(|s| s.is_pong_from(relay))
}

/// PINGs the relay at `address`, which must answer as `relay`, within `timeout`.
pub async fn ping_relay(
    address: &Address,
    relay: &PublicKey,
    timeout: Duration,
) -> Result<(), PingError> {
    let shown = address.to_string();
    match tokio::time::timeout(timeout, exchange(address, relay, timeout)).await {
        Ok(result) => result,
        Err(_) => Err(PingError::Timeout {
            address: shown,
            after: timeout,
        }),
    }
}

async fn exchange(
    address: &Address,
    relay: &PublicKey,
    timeout: Duration,
) -> Result<(), PingError> {
    let shown = address.to_string();
    let (pin, sni) = match (address.scheme(), address.host()) {
        (Scheme::Wireleap, _) => (Some(relay.0), None),
        (Scheme::Https, Host::Domain(d)) => (None, Some(d.clone())),
        (Scheme::Https, Host::Ipv4(ip)) => (None, Some(ip.to_string())),
        (Scheme::Https, Host::Ipv6(ip)) => (None, Some(ip.to_string())),
        _ => return Err(PingError::Scheme(shown)),
    };
    let connect_err = |source| PingError::Connect {
        address: shown.clone(),
        source,
    };
    let tcp = tls::dial_tcp(&address.host_port(), timeout)
        .await
        .map_err(connect_err)?;
    let stream = tls::dial_tls(tcp, sni.as_deref(), pin, timeout)
        .await
        .map_err(connect_err)?;
    let tunnel_err = |source| PingError::Tunnel {
        address: shown.clone(),
        source,
    };
    let session = Session::handshake(
        stream,
        SessionConfig {
            authority: address.host_port(),
            handshake_timeout: timeout,
            open_timeout: timeout,
            response_timeout: timeout,
            keepalive: None,
            plain_body_limit: 4096,
            ..SessionConfig::default()
        },
    )
    .await
    .map_err(tunnel_err)?;
    let payload = WlPayload::ping().to_header_value();
    let reply = session
        .request_plain(
            http::Method::PUT,
            &address.tunnel_url(),
            Some(payload.as_bytes()),
        )
        .await
        .map_err(tunnel_err)?;
    if reply.status != http::StatusCode::OK {
        return Err(PingError::HttpStatus {
            address: shown,
            status: reply.status.as_u16(),
        });
    }
    if !is_pong_from(&reply.body, relay) {
        return Err(PingError::NotPong {
            address: shown,
            expected: relay.to_b64(),
            reply: String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pong_recognition() {
        let pk = PublicKey([1; 32]);
        let new = Status::pong(&pk).text();
        assert!(is_pong_from(new.as_bytes(), &pk));
        assert!(is_pong_from(new.trim_end().as_bytes(), &pk));
        assert!(!is_pong_from(new.as_bytes(), &PublicKey([2; 32])));
        assert!(!is_pong_from(Status::ok().text().as_bytes(), &pk));
        assert!(!is_pong_from(b"", &pk));
        assert!(!is_pong_from(b"null", &pk));
    }
}
