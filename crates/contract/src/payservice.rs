//! What the two payment services (ps-dummy, ps-stripe) share: the `auth`/`contract` peer
//! config entries, their checks and lookup, the API URL their CLI commands call, the signed
//! clients of both ends of their interfaces (a payment service asking auth for pofs, the
//! contract paying through a payment service), asking auth for pofs and checking what comes
//! back, and refusing withdrawals signed by any other contract.
//!
//! Not here: anything about money (selling, paying out), which is each service's own, and
//! the log lines, which each service words for its own operators.

use crate::httpd::{check_http_url, Clock};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use wireleap_api::{ApiClient, ApiError, Identity, RetryPolicy, StatusReply};
use wireleap_daemon::{check_listen_address, ConfigProblem};
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::payout::PofRequest;
use wireleap_proto::pof::Pof;
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface};

/// Another component: its base URL and public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Base URL.
    pub endpoint: String,
    /// Public key (base64url).
    pub public_key: PublicKey,
}

/// Where a payment service's API is reached: `endpoint`, else plain HTTP on `address` (with an
/// unspecified host replaced by loopback).
pub fn api_url(endpoint: Option<&str>, address: &str) -> String {
    match endpoint {
        Some(e) => e.to_string(),
        None => {
            let addr = address
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:");
            format!("http://{addr}")
        }
    }
}

/// Adds a problem under `key` when `value` is set and not an http(s) URL.
pub fn check_url(problems: &mut Vec<ConfigProblem>, key: &str, value: Option<&str>) {
    if let Some(e) = value.and_then(check_http_url) {
        problems.push(ConfigProblem::new(key, e));
    }
}

/// The problems of the config keys every payment service has, in this order: `address`,
/// `endpoint`, `auth.endpoint`, `contract.endpoint`.
pub fn check_common(
    address: &str,
    endpoint: Option<&str>,
    auth: Option<&Peer>,
    contract: Option<&Peer>,
) -> Vec<ConfigProblem> {
    let mut p: Vec<_> = check_listen_address("address", address)
        .into_iter()
        .collect();
    check_url(&mut p, "endpoint", endpoint);
    check_url(&mut p, "auth.endpoint", auth.map(|a| a.endpoint.as_str()));
    check_url(
        &mut p,
        "contract.endpoint",
        contract.map(|c| c.endpoint.as_str()),
    );
    p
}

/// The configured `auth` and `contract` peers, or `unconfigured` with a cause naming the first
/// of the two config keys that is unset (`service` is the daemon's short name, e.g.
/// `ps-dummy`).
pub fn peers<'a>(
    service: &str,
    unconfigured: Status,
    auth: Option<&'a Peer>,
    contract: Option<&'a Peer>,
) -> Result<(&'a Peer, &'a Peer), StatusReply> {
    let missing = |what: &str| {
        StatusReply(unconfigured.clone().with_cause(format!(
            "this {service} has no {what} configured (config key `{what}`)"
        )))
    };
    let auth = auth.ok_or_else(|| missing("auth"))?;
    let contract = contract.ok_or_else(|| missing("contract"))?;
    Ok((auth, contract))
}

/// A client that signs its requests as `component` with `keypair` for `interface` (the
/// contract paying through a payment service, a payment service asking auth for pofs).
pub fn signed_client(
    keypair: &Keypair,
    component: Component,
    interface: Interface,
) -> Result<ApiClient, ApiError> {
    ApiClient::new(
        Some(Identity {
            keypair: keypair.clone(),
            component,
            interfaces: vec![interface],
        }),
        false,
    )
}

/// The client that asks auth for pofs, signing as payment service `keypair` (interface
/// ps-auth); a failed call is tried once more after half a second.
pub fn auth_client(keypair: &Keypair) -> Result<ApiClient, ApiError> {
    Ok(
        signed_client(keypair, Component::PaymentService, Interface::PsAuth)?.with_retry(
            RetryPolicy {
                attempts: 2,
                delay: Duration::from_millis(500),
            },
        ),
    )
}

/// Why no usable pofs came from auth.
#[derive(Debug, thiserror::Error)]
pub enum PofsError {
    /// The call to auth failed or auth refused.
    #[error("{0}")]
    Auth(ApiError),
    /// Auth answered with pofs of the wrong number or type, or not signed by its configured
    /// key.
    #[error("auth answered {got} pofs that do not match the request or its configured key")]
    Mismatch {
        /// How many pofs came back.
        got: usize,
    },
}

impl PofsError {
    /// The status a payment service answers its own caller with.
    pub fn to_status(&self) -> Status {
        match self {
            PofsError::Auth(ApiError::Status { status, .. }) => {
                Status::gateway().with_cause(format!(
                    "the auth server refused to issue pofs: {}",
                    status.cause.clone().unwrap_or(status.description.clone())
                ))
            }
            PofsError::Auth(_) => Status::payment_system_unreachable(),
            PofsError::Mismatch { .. } => Status::gateway().with_cause(
                "the auth server's pofs do not verify under its configured key (auth.public_key)",
            ),
        }
    }
}

/// Asks auth (`POST {auth.endpoint}/pofs`) for `request`'s pofs and checks that exactly
/// `request.quantity` came back, each of `request.kind` and valid under `auth.public_key` at
/// `clock`'s time once they arrived.
pub async fn fetch_pofs(
    client: &ApiClient,
    auth: &Peer,
    request: &PofRequest,
    clock: &Clock,
) -> Result<Vec<Pof>, PofsError> {
    let url = format!("{}/pofs", auth.endpoint.trim_end_matches('/'));
    let pofs: Vec<Pof> = client.post(&url, request).await.map_err(PofsError::Auth)?;
    let now = clock();
    let wrong = pofs.len() != usize::try_from(request.quantity).unwrap_or(0)
        || pofs
            .iter()
            .any(|p| p.kind != request.kind || p.verify(&[auth.public_key], now).is_err());
    if wrong {
        return Err(PofsError::Mismatch { got: pofs.len() });
    }
    Ok(pofs)
}

/// Refuses (403) a withdrawal signed by `signer` unless it is the configured `contract`.
pub fn check_contract_signer(
    contract: Option<&Peer>,
    signer: &PublicKey,
) -> Result<(), StatusReply> {
    match contract {
        Some(c) if c.public_key == *signer => Ok(()),
        _ => Err(StatusReply(Status::forbidden().with_cause(format!(
            "contract {signer} is not the one this payment service pays for"
        )))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn peer(endpoint: &str, seed: u8) -> Peer {
        Peer {
            endpoint: endpoint.into(),
            public_key: Keypair::from_seed([seed; 32]).public(),
        }
    }

    #[test]
    fn api_url_prefers_the_endpoint_else_loopback_on_the_address() {
        assert_eq!(
            api_url(Some("https://ps.example"), "0.0.0.0:1"),
            "https://ps.example"
        );
        assert_eq!(api_url(None, "0.0.0.0:5"), "http://127.0.0.1:5");
        assert_eq!(api_url(None, "[::]:5"), "http://[::1]:5");
        assert_eq!(api_url(None, "10.0.0.1:5"), "http://10.0.0.1:5");
    }

    #[test]
    fn common_checks_name_each_bad_key_in_order() {
        let good = peer("http://127.0.0.1:6", 1);
        assert_eq!(
            check_common("127.0.0.1:5", None, Some(&good), Some(&good)),
            vec![]
        );
        let bad = peer("ftp://x", 1);
        let keys: Vec<_> = check_common("nowhere", Some("x"), Some(&bad), Some(&bad))
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            ["address", "endpoint", "auth.endpoint", "contract.endpoint"]
        );
    }

    #[test]
    fn peers_names_the_first_missing_key() {
        let p = peer("http://127.0.0.1:6", 1);
        let (a, c) = peers("ps-x", Status::gateway(), Some(&p), Some(&p)).unwrap();
        assert_eq!((a, c), (&p, &p));
        let e = peers("ps-x", Status::gateway(), None, None).unwrap_err().0;
        assert_eq!(e.code, Status::gateway().code);
        assert_eq!(
            e.cause.as_deref(),
            Some("this ps-x has no auth configured (config key `auth`)")
        );
        let e = peers("ps-x", Status::internal(), Some(&p), None)
            .unwrap_err()
            .0;
        assert_eq!(e.code, Status::internal().code);
        assert_eq!(
            e.cause.as_deref(),
            Some("this ps-x has no contract configured (config key `contract`)")
        );
    }

    #[test]
    fn only_the_configured_contract_is_paid_for() {
        let c = peer("http://127.0.0.1:7", 2);
        assert!(check_contract_signer(Some(&c), &c.public_key).is_ok());
        let other = Keypair::from_seed([3; 32]).public();
        assert_eq!(
            check_contract_signer(Some(&c), &other).unwrap_err().0.code,
            403
        );
        assert_eq!(
            check_contract_signer(None, &c.public_key)
                .unwrap_err()
                .0
                .code,
            403
        );
    }

    #[tokio::test]
    async fn an_unreachable_auth_is_reported_as_such() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let client = ApiClient::new(None, false).unwrap();
        let request = PofRequest {
            quantity: 1,
            kind: "dummy".into(),
            duration: 60,
            accounting: None,
        };
        let clock: Clock = Arc::new(|| 0);
        let e = fetch_pofs(&client, &peer(&url, 1), &request, &clock)
            .await
            .unwrap_err();
        assert!(matches!(e, PofsError::Auth(_)), "{e}");
        assert_eq!(e.to_status(), Status::payment_system_unreachable());
    }
}
