//! HTTP plumbing the money-side daemons (contract, auth, ps-dummy) share on top of
//! `wireleap_api`: TLS files from the config, strict request bodies (unknown keys refused),
//! status replies for unknown paths and methods, the database URL relative to the home, and
//! the wall clock read at the edge.
//!
//! Not here: endpoint logic (each daemon's own module) and the generic API machinery (signature
//! checks, version gate, idempotency cache), which is `wireleap_api`'s.

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wireleap_api::server::{Consumer, MAX_REQUEST_BYTES};
use wireleap_api::{Signed, StatusReply};
use wireleap_proto::json;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::status::Status;

/// `tls` config key: certificate chain and private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain (relative paths are relative to the home directory).
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    #[error("{} holds no PEM private key", .0.display())]
    NoKey(PathBuf),
    /// rustls refused the pair.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsFiles {
    /// Loads the pair into a rustls server config (TLS 1.2/1.3, ALPN h2 and http/1.1).
    pub fn server_config(&self, home: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let cert_path = home.join(&self.cert_file);
        let key_path = home.join(&self.key_file);
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(cert_path));
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .ok()
            .flatten()
            .ok_or(TlsError::NoKey(key_path))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The server config of an optional `tls` config entry: `None` (plain HTTP) without one.
pub fn tls_config(
    tls: Option<&TlsFiles>,
    home: &Path,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    tls.map(|t| t.server_config(home)).transpose()
}

/// How long a stopping daemon's API server lets requests in flight finish.
pub const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Spawns a daemon's API server (`wireleap_api::serve_gated`) on `listener`: it serves until
/// `stop` is cancelled, then drains for [`API_DRAIN`], and accepts only while `agent`'s
/// hand-over gate is open.
pub fn spawn_api(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: &tokio_util::sync::CancellationToken,
    agent: &wireleap_upgrade::Agent,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(wireleap_api::serve_gated(
        listener,
        router,
        tls,
        stop.clone(),
        API_DRAIN,
        Some(agent.gate().subscribe()),
    ))
}

/// Serves `app` over plain HTTP on an ephemeral 127.0.0.1 port until `stop` is cancelled
/// (one second to drain), for tests that need a throwaway server; its base URL.
pub async fn serve_local(
    app: axum::Router,
    stop: &tokio_util::sync::CancellationToken,
) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(wireleap_api::serve(
        listener,
        app,
        None,
        stop.clone(),
        std::time::Duration::from_secs(1),
    ));
    Ok(url)
}

/// Resolves the `database` config value: a relative SQLite path is taken relative to the
/// home directory; other URLs are used as they are.
pub fn database_url(configured: &str, home: &Path) -> String {
    let Some(rest) = configured.strip_prefix("sqlite:") else {
        return configured.to_string();
    };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let full = if Path::new(path).is_absolute() || path == ":memory:" {
        PathBuf::from(path)
    } else {
        home.join(path)
    };
    match query {
        Some(q) => format!("sqlite://{}?{q}", full.display()),
        None => format!("sqlite://{}", full.display()),
    }
}

/// Checks a `database` config value; the problem text, if any.
pub fn check_database_url(value: &str) -> Option<String> {
    let ok = value.starts_with("sqlite:")
        || value.starts_with("postgres://")
        || value.starts_with("postgresql://");
    (!ok).then(|| format!("must be sqlite://PATH or postgres://..., got {value:?}"))
}

/// Checks an http(s) URL config value; the problem text, if any.
pub fn check_http_url(value: &str) -> Option<String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => None,
        _ => Some(format!("must be an http(s) URL, got {value:?}")),
    }
}

/// Unix seconds now (the one place the wall clock is read; tests substitute a [`Clock`]).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A source of unix seconds, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock as a [`Clock`].
pub fn system_clock() -> Clock {
    Arc::new(unix_now)
}

/// The keys a JSON object may have, for [`check_keys`]: each name with the shape of its
/// value when that value is itself an object whose keys are checked too.
#[derive(Debug, Clone, Copy)]
pub struct Shape(pub &'static [(&'static str, Option<&'static Shape>)]);

/// What a strict body check refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all.
    #[error("invalid JSON body: {0}")]
    Syntax(String),
    /// The top level or a nested value is not an object where one is required.
    #[error("{path} must be a JSON object")]
    NotObject {
        /// Dotted path of the value (`body` for the top level).
        path: String,
    },
    /// A key this endpoint does not know.
    #[error("unknown field {path:?} in request body (known: {known})")]
    UnknownField {
        /// Dotted path of the key.
        path: String,
        /// The keys allowed at that level.
        known: String,
    },
    /// The value does not fit the endpoint's type.
    #[error("invalid JSON body: {0}")]
    Decode(String),
}

impl BodyError {
    /// The status sent for it: always 400, with this error as the cause.
    pub fn to_status(&self) -> Status {
        Status::bad_request().with_cause(self.to_string())
    }
}

/// Refuses keys not in `shape` (matched case-insensitively, as the Go decoder matches them);
/// `null` is accepted wherever an object is expected (it leaves the value unset).
pub fn check_keys(bytes: &[u8], shape: &Shape) -> Result<(), BodyError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| BodyError::Syntax(e.to_string()))?;
    check_value(&value, shape, "body")
}

fn check_value(value: &serde_json::Value, shape: &Shape, path: &str) -> Result<(), BodyError> {
    let object = match value {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Null if path != "body" => return Ok(()),
        _ => {
            return Err(BodyError::NotObject {
                path: path.to_string(),
            })
        }
    };
    for (key, v) in object {
        let here = if path == "body" {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some((_, nested)) = shape.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) else {
            return Err(BodyError::UnknownField {
                path: here,
                known: shape
                    .0
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if let Some(nested) = nested {
            check_value(v, nested, &here)?;
        }
    }
    Ok(())
}

/// Decodes a body with the Go-compatible rules after [`check_keys`].
pub fn decode_strict<T: DeserializeOwned>(bytes: &[u8], shape: &Shape) -> Result<T, BodyError> {
    check_keys(bytes, shape)?;
    json::from_slice(bytes).map_err(|e| BodyError::Decode(e.to_string()))
}

/// A request body type with a fixed set of keys.
pub trait StrictBody: DeserializeOwned {
    /// The keys it may have.
    const SHAPE: Shape;
}

/// The body of a payment service's `POST /withdrawals` (a foreign type, so wrapped for key
/// checking); shared by ps-dummy and ps-stripe.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct WithdrawalBody(pub wireleap_proto::payout::Withdrawal);

impl StrictBody for WithdrawalBody {
    const SHAPE: Shape = Shape(&[
        ("id", None),
        ("state", None),
        ("state_changed", None),
        ("amount", None),
        ("type", None),
        ("destination", None),
        ("receipt", None),
    ]);
}

/// An unsigned JSON body: size-limited, unknown keys refused, decoded with the Go rules.
#[derive(Debug)]
pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: StrictBody> FromRequest<S> for StrictJson<T> {
    type Rejection = StatusReply;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_limited(req).await?;
        decode_strict(&bytes, &T::SHAPE)
            .map(StrictJson)
            .map_err(|e| StatusReply(e.to_status()))
    }
}

/// A signed body (see `wireleap_api::Signed`) whose keys are also checked.
#[derive(Debug)]
pub struct StrictSigned<T, C: Consumer> {
    /// The key that signed the body.
    pub signer: PublicKey,
    /// The decoded body.
    pub body: T,
    _c: std::marker::PhantomData<C>,
}

impl<S: Send + Sync, T: StrictBody, C: Consumer> FromRequest<S> for StrictSigned<T, C> {
    type Rejection = StatusReply;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The signature is checked first (on the raw bytes), so an unsigned request is told
        // about its missing signature, not about its body.
        let signed = Signed::<serde_json::Value, C>::from_request(req, state).await?;
        let body = decode_strict(&signed.raw, &T::SHAPE).map_err(|e| StatusReply(e.to_status()))?;
        Ok(StrictSigned {
            signer: signed.signer,
            body,
            _c: std::marker::PhantomData,
        })
    }
}

/// A signed request without payload (GET): the body must be `null` (what the original's
/// client signs) or empty; only the signer matters.
#[derive(Debug)]
pub struct SignedCaller<C: Consumer> {
    /// The key that signed the body.
    pub signer: PublicKey,
    _c: std::marker::PhantomData<C>,
}

impl<S: Send + Sync, C: Consumer> FromRequest<S> for SignedCaller<C> {
    type Rejection = StatusReply;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let signed = Signed::<serde_json::Value, C>::from_request(req, state).await?;
        if !signed.body.is_null() {
            return Err(StatusReply(
                Status::bad_request().with_cause("this request takes no body (send null)"),
            ));
        }
        Ok(SignedCaller {
            signer: signed.signer,
            _c: std::marker::PhantomData,
        })
    }
}

async fn read_limited(req: Request) -> Result<Bytes, StatusReply> {
    axum::body::to_bytes(req.into_body(), MAX_REQUEST_BYTES)
        .await
        .map_err(|_| {
            StatusReply(
                Status::new(413, "request entity too large").with_cause(format!(
                    "request body larger than {MAX_REQUEST_BYTES} bytes"
                )),
            )
        })
}

/// Fallback for unknown paths: a 404 status object.
pub async fn not_found() -> StatusReply {
    StatusReply(Status::not_found())
}

/// Fallback for known paths with another method: a 405 status object.
pub async fn method_not_allowed() -> StatusReply {
    StatusReply(Status::method_not_allowed())
}

/// Adds the status-object fallbacks to a router.
pub fn with_fallbacks<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// A daemon's finished API router: `routes` with the status fallbacks and `state`, behind
/// `wireleap_api`'s version gate and idempotency cache for the interfaces it `serves`.
pub fn gated_router<S: Clone + Send + Sync + 'static>(
    routes: axum::Router<S>,
    state: S,
    serves: &[wireleap_proto::version::Interface],
) -> axum::Router {
    with_fallbacks(routes)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            wireleap_api::server::ApiState::new(serves),
            wireleap_api::server::gate,
        ))
}

/// Maps a storage failure to the 500 status (details go to the log, not to the caller).
pub fn internal(context: &str, e: &dyn std::fmt::Display) -> StatusReply {
    tracing::error!(error = %e, "{context}");
    StatusReply(Status::internal())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const INNER: Shape = Shape(&[("a", None)]);
    const OUTER: Shape = Shape(&[("x", None), ("inner", Some(&INNER))]);

    #[test]
    fn keys_are_checked_case_insensitively_and_nested() {
        assert!(check_keys(br#"{"X":1,"inner":{"A":2}}"#, &OUTER).is_ok());
        assert!(check_keys(br#"{"inner":null}"#, &OUTER).is_ok());
        assert_eq!(
            check_keys(br#"{"inner":{"b":2}}"#, &OUTER),
            Err(BodyError::UnknownField {
                path: "inner.b".into(),
                known: "a".into()
            })
        );
        assert!(matches!(
            check_keys(br#"{"y":1}"#, &OUTER),
            Err(BodyError::UnknownField { .. })
        ));
        assert!(matches!(
            check_keys(b"[1]", &OUTER),
            Err(BodyError::NotObject { .. })
        ));
        assert!(matches!(
            check_keys(b"null", &OUTER),
            Err(BodyError::NotObject { .. })
        ));
        assert!(matches!(
            check_keys(br#"{"inner":5}"#, &OUTER),
            Err(BodyError::NotObject { .. })
        ));
        assert!(matches!(
            check_keys(b"{", &OUTER),
            Err(BodyError::Syntax(_))
        ));
    }

    #[test]
    fn sqlite_paths_are_relative_to_home() {
        let home = Path::new("/h");
        assert_eq!(database_url("sqlite://c.db", home), "sqlite:///h/c.db");
        assert_eq!(database_url("sqlite:c.db", home), "sqlite:///h/c.db");
        assert_eq!(
            database_url("sqlite:///abs/c.db", home),
            "sqlite:///abs/c.db"
        );
        assert_eq!(
            database_url("sqlite://c.db?mode=rwc", home),
            "sqlite:///h/c.db?mode=rwc"
        );
        assert_eq!(database_url("postgres://u@h/db", home), "postgres://u@h/db");
        assert!(check_database_url("mysql://x").is_some());
        assert!(check_database_url("sqlite://x.db").is_none());
    }

    #[test]
    fn urls() {
        assert!(check_http_url("http://127.0.0.1:1").is_none());
        assert!(check_http_url("https://c.example/x").is_none());
        for bad in ["c.example", "http://", "ftp://x", "https:///x"] {
            assert!(check_http_url(bad).is_some(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn check_keys_never_panics(s in ".{0,64}") {
            let _ = check_keys(s.as_bytes(), &OUTER);
        }

        #[test]
        fn database_url_keeps_absolute_paths(p in "/[a-z/]{1,20}") {
            let url = format!("sqlite://{p}");
            proptest::prop_assert_eq!(database_url(&url, Path::new("/home")), url);
        }
    }
}
