//! Telling the directory that an upgrade failed, so its `/info` shows it and it stops
//! offering that version to this relay (network.md: `POST {dir}/relays/upgrade-report`,
//! relay-signed `{pubkey, version, reason}`).

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use wireleap_api::ApiClient;
use wireleap_proto::keys::PublicKey;

/// Where failure reports go. Implemented by [`DirectoryReporter`]; tests and other components
/// may supply their own.
pub trait Reporter: Send + Sync {
    /// Reports that upgrading to `version` failed because of `reason`.
    fn report<'a>(
        &'a self,
        version: &'a str,
        reason: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The report body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeReport {
    /// The relay's public key (must equal the signer).
    pub pubkey: PublicKey,
    /// The version that failed.
    pub version: String,
    /// Why.
    pub reason: String,
}

/// Posts reports to each directory with a relay-signed request.
#[derive(Debug, Clone)]
pub struct DirectoryReporter {
    client: ApiClient,
    endpoints: Vec<String>,
    pubkey: PublicKey,
}

impl DirectoryReporter {
    /// `client` must carry the relay identity (it signs the body); `endpoints` are directory
    /// base URLs.
    pub fn new(client: ApiClient, endpoints: Vec<String>, pubkey: PublicKey) -> Self {
        DirectoryReporter {
            client,
            endpoints,
            pubkey,
        }
    }
}

impl Reporter for DirectoryReporter {
    fn report<'a>(
        &'a self,
        version: &'a str,
        reason: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let body = UpgradeReport {
                pubkey: self.pubkey,
                version: version.to_string(),
                reason: reason.chars().take(500).collect(),
            };
            let mut errors = Vec::new();
            for dir in &self.endpoints {
                let url = format!("{}/relays/upgrade-report", dir.trim_end_matches('/'));
                let r = self.client.call(http::Method::POST, &url, &body, &[]).await;
                if let Err(e) = r {
                    errors.push(e.to_string());
                }
            }
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("; "))
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use wireleap_api::Identity;
    use wireleap_proto::keys::Keypair;
    use wireleap_proto::version::{Component, Interface};

    #[tokio::test]
    async fn report_is_signed_and_posted() {
        type Seen = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let app = axum::Router::new().route(
            "/relays/upgrade-report",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let s = s.clone();
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        s.lock().unwrap().push((
                            h("wireleap-relay-pubkey"),
                            h("wireleap-relay-signature"),
                            body.to_vec(),
                        ));
                        "{}"
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let kp = Keypair::from_seed([5; 32]);
        let client = ApiClient::new(
            Some(Identity {
                keypair: kp.clone(),
                component: Component::Relay,
                interfaces: vec![Interface::RelayDir],
            }),
            false,
        )
        .unwrap();
        let r = DirectoryReporter::new(client, vec![format!("http://{addr}/")], kp.public());
        r.report("0.3.0", "the new process exited before it was ready")
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        let (pubkey, sig, body) = &seen[0];
        assert_eq!(*pubkey, kp.public().to_b64());
        let sig = wireleap_proto::keys::Signature::from_b64(sig).unwrap();
        kp.public().verify(body, &sig).unwrap();
        let parsed: UpgradeReport = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed.version, "0.3.0");
        assert_eq!(parsed.pubkey, kp.public());
        server.abort();
        // An unreachable directory is an error naming it.
        let client = ApiClient::new(None, false)
            .unwrap()
            .with_retry(wireleap_api::RetryPolicy::ONCE);
        let r = DirectoryReporter::new(client, vec!["http://127.0.0.1:1".into()], kp.public());
        assert!(r
            .report("0.3.0", "x")
            .await
            .unwrap_err()
            .contains("127.0.0.1:1"));
    }
}
