//! Calling another component's API the way the original's common client does (§7).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use wireleap_proto::keys::Keypair;
use wireleap_proto::request::{self, VersionGateError};
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface};
use wireleap_proto::{json, nonce};

/// Largest response body accepted from a peer.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Who is calling: the signing key, the consumer name used in header names (`Relay`), and
/// the interfaces whose version headers go on every request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Signs every request body.
    pub keypair: Keypair,
    /// Which component signs (`Relay` in `Wireleap-Relay-Pubkey`).
    pub component: Component,
    /// Interfaces announced with `Wireleap-<C>-<P>-Version` headers.
    pub interfaces: Vec<Interface>,
}

/// How often and how far apart failed requests are re-sent.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// Pause between attempts.
    pub delay: Duration,
}

impl RetryPolicy {
    /// One attempt only (enrollment, heartbeat, disenrollment).
    pub const ONCE: RetryPolicy = RetryPolicy {
        attempts: 1,
        delay: Duration::ZERO,
    };
}

impl Default for RetryPolicy {
    /// The original's: 3 attempts, 5 s apart.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            delay: Duration::from_secs(5),
        }
    }
}

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request could not be sent or the response not read.
    #[error("{method} {url}: {source}")]
    Transport {
        /// Request method.
        method: Method,
        /// Request URL.
        url: String,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// The peer answered with a status object (or a non-2xx reply that is not one).
    #[error("{method} {url}: {status}")]
    Status {
        /// Request method.
        method: Method,
        /// Request URL.
        url: String,
        /// The peer's status.
        status: Box<Status>,
    },
    /// The reply body is not what was expected.
    #[error("{method} {url}: cannot decode reply: {reason}")]
    Decode {
        /// Request method.
        method: Method,
        /// Request URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The peer speaks an incompatible interface version.
    #[error("{url}: {source}")]
    Version {
        /// Request URL.
        url: String,
        /// The mismatch.
        source: VersionGateError,
    },
    /// The request body could not be encoded.
    #[error("cannot encode request body: {0}")]
    Encode(String),
}

impl ApiError {
    /// The peer's status, if the failure is one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ApiError::Status { status, .. } => Some(&**status),
            _ => None,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } | ApiError::Decode { .. } => true,
            ApiError::Status { status, .. } => status.code == 500 || status.code == 502,
            _ => false,
        }
    }
}

/// A reply as received: status code, headers and body bytes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

/// A client for the APIs of contracts, directories, auth and payment services.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    identity: Option<Arc<Identity>>,
    retry: RetryPolicy,
}

impl ApiClient {
    /// A client; `identity` signs requests (relays), `None` sends unsigned ones (clients).
    ///
    /// Self-signed TLS certificates are accepted only when `insecure_tls` is set (the local
    /// devnet); production endpoints are verified against the system's web PKI roots.
    pub fn new(identity: Option<Identity>, insecure_tls: bool) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .danger_accept_invalid_certs(insecure_tls)
            .build()
            .map_err(|e| ApiError::Encode(format!("cannot build HTTP client: {e}")))?;
        Ok(ApiClient {
            http,
            identity: identity.map(Arc::new),
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The identity requests are signed with, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// `GET url` and decode the JSON reply.
    pub async fn get<T: DeserializeOwned>(&self, url: &str) -> Result<T, ApiError> {
        let raw = self.call(Method::GET, url, &(), &[]).await?;
        decode(&Method::GET, url, &raw)
    }

    /// `POST url` with a JSON body and decode the JSON reply.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let raw = self.call(Method::POST, url, body, &[]).await?;
        decode(&Method::POST, url, &raw)
    }

    /// Sends a request and returns the raw 2xx reply; non-2xx replies become
    /// [`ApiError::Status`]. `body` is JSON-encoded (`()` encodes as `null`, as for every
    /// request without payload).
    pub async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: &B,
        extra_headers: &[(HeaderName, HeaderValue)],
    ) -> Result<RawResponse, ApiError> {
        let body = Bytes::from(json::to_vec(body).map_err(|e| ApiError::Encode(e.to_string()))?);
        // The key is set once per request, so a retry is recognised as the same request.
        let idempotency = (method == Method::POST).then(nonce::idempotency_key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .send_once(&method, url, &body, idempotency.as_deref(), extra_headers)
                .await;
            match result {
                Err(e) if e.retryable() && attempt < self.retry.attempts.max(1) => {
                    tracing::debug!(%url, attempt, error = %e, "retrying request");
                    tokio::time::sleep(self.retry.delay).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt: no retries, the Idempotency-Key given by the caller (the PoW round needs
    /// a fresh one while keeping body and signature).
    pub async fn send_once(
        &self,
        method: &Method,
        url: &str,
        body: &Bytes,
        idempotency_key: Option<&str>,
        extra_headers: &[(HeaderName, HeaderValue)],
    ) -> Result<RawResponse, ApiError> {
        let transport = |source| ApiError::Transport {
            method: method.clone(),
            url: url.to_string(),
            source,
        };
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(key) = idempotency_key {
            req = req.header(request::IDEMPOTENCY_KEY_HEADER, key);
        }
        if let Some(id) = &self.identity {
            for (name, value) in signature_headers(id, body) {
                req = req.header(name, value);
            }
        }
        for (name, value) in extra_headers {
            req = req.header(name, value);
        }
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(ApiError::Decode {
                    method: method.clone(),
                    url: url.to_string(),
                    reason: format!("reply larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            buf.extend_from_slice(&chunk);
        }
        let raw = RawResponse {
            status,
            headers,
            body: Bytes::from(buf),
        };
        if let Some(id) = &self.identity {
            request::check_response_versions(&id.interfaces, &raw.headers).map_err(|source| {
                ApiError::Version {
                    url: url.to_string(),
                    source,
                }
            })?;
        }
        if !(200..300).contains(&status) {
            let status = Status::parse(&raw.body).unwrap_or_else(|_| {
                Status::new(status, "unexpected reply").with_cause(
                    String::from_utf8_lossy(&raw.body[..raw.body.len().min(200)]).into_owned(),
                )
            });
            return Err(ApiError::Status {
                method: method.clone(),
                url: url.to_string(),
                status: Box::new(status),
            });
        }
        Ok(raw)
    }
}

/// The identity's version and signature headers for `body` (§7.2).
pub fn signature_headers(id: &Identity, body: &[u8]) -> Vec<(&'static str, String)> {
    let mut out = request::version_headers(&id.interfaces);
    out.extend(request::sign_body(&id.keypair, id.component, body));
    out
}

fn decode<T: DeserializeOwned>(
    method: &Method,
    url: &str,
    raw: &RawResponse,
) -> Result<T, ApiError> {
    json::from_slice(&raw.body).map_err(|e| ApiError::Decode {
        method: method.clone(),
        url: url.to_string(),
        reason: e.to_string(),
    })
}
