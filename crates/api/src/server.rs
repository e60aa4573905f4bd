//! Answering API requests: status replies, signed-body extraction, the interface-version
//! gate, the idempotency cache, and the HTTP(S) server loop.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wireleap_proto::json;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::request;
use wireleap_proto::status::{Status, ToStatus};
use wireleap_proto::version::{Component, Interface};

/// Largest request body any endpoint reads.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// A status object as an HTTP reply: code = status code, plain-text headers, text body.
#[derive(Debug, Clone)]
pub struct StatusReply(pub Status);

impl From<Status> for StatusReply {
    fn from(s: Status) -> Self {
        StatusReply(s)
    }
}

impl IntoResponse for StatusReply {
    fn into_response(self) -> Response {
        let reply = self.0.to_http();
        let mut resp = Response::new(Body::from(reply.body));
        *resp.status_mut() =
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in reply.headers {
            resp.headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        resp
    }
}

/// A JSON reply encoded as the original's Go encoder does.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        match json::to_vec(&self.0) {
            Ok(bytes) => (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                bytes,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode reply");
                StatusReply(Status::internal()).into_response()
            }
        }
    }
}

/// Names the caller component whose signature an endpoint requires.
pub trait Consumer: Send + Sync + 'static {
    /// The component whose `Wireleap-<C>-Pubkey`/`-Signature` headers are checked.
    const COMPONENT: Component;
}

/// Requests signed by a relay.
#[derive(Debug)]
pub struct RelayCaller;
impl Consumer for RelayCaller {
    const COMPONENT: Component = Component::Relay;
}

/// Requests signed by a contract.
#[derive(Debug)]
pub struct ContractCaller;
impl Consumer for ContractCaller {
    const COMPONENT: Component = Component::Contract;
}

/// Requests signed by a payment service.
#[derive(Debug)]
pub struct PsCaller;
impl Consumer for PsCaller {
    const COMPONENT: Component = Component::PaymentService;
}

/// A request body whose signature by consumer `C` verified (§7.3), decoded as `T`.
#[derive(Debug)]
pub struct Signed<T, C: Consumer> {
    /// The key that signed the body.
    pub signer: PublicKey,
    /// The decoded body.
    pub body: T,
    /// The exact bytes that were signed.
    pub raw: Bytes,
    _consumer: PhantomData<C>,
}

async fn read_body(req: Request) -> Result<(HeaderMap, Bytes), StatusReply> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|_| {
            StatusReply(
                Status::new(413, "request entity too large").with_cause(format!(
                    "request body larger than {MAX_REQUEST_BYTES} bytes"
                )),
            )
        })?;
    Ok((parts.headers, bytes))
}

fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StatusReply> {
    json::from_slice(bytes).map_err(|e| {
        StatusReply(Status::bad_request().with_cause(format!("invalid JSON body: {e}")))
    })
}

impl<S, T, C> FromRequest<S> for Signed<T, C>
where
    S: Send + Sync,
    T: DeserializeOwned,
    C: Consumer,
{
    type Rejection = StatusReply;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (headers, raw) = read_body(req).await?;
        let signer = request::verify_body(C::COMPONENT, &headers, &raw)
            .map_err(|e| StatusReply(e.to_status()))?;
        let body = decode_body(&raw)?;
        Ok(Signed {
            signer,
            body,
            raw,
            _consumer: PhantomData,
        })
    }
}

/// An unsigned JSON request body, size-limited and decoded with the Go-compatible rules.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = StatusReply;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (_, raw) = read_body(req).await?;
        Ok(JsonBody(decode_body(&raw)?))
    }
}

/// Shared server-side state of the API plumbing: the interfaces served and the
/// idempotency cache.
#[derive(Debug, Clone)]
pub struct ApiState {
    interfaces: Arc<[Interface]>,
    cache: Arc<Mutex<IdempotencyCache>>,
}

impl ApiState {
    /// State for a server providing `interfaces`.
    pub fn new(interfaces: &[Interface]) -> Self {
        ApiState {
            interfaces: interfaces.into(),
            cache: Arc::new(Mutex::new(IdempotencyCache::new(
                10_000,
                Duration::from_secs(24 * 3600),
            ))),
        }
    }
}

/// Middleware: the interface-version gate (§7.4) and the Idempotency-Key replay (§18).
///
/// Use with `axum::middleware::from_fn_with_state(api_state, wireleap_api::server::gate)`.
pub async fn gate(
    axum::extract::State(state): axum::extract::State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    if let Err(e) = request::check_request_versions(&state.interfaces, req.headers()) {
        return StatusReply(e.to_status()).into_response();
    }
    let key = (req.method() == axum::http::Method::POST)
        .then(|| {
            req.headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
        })
        .flatten();
    if let Some(key) = &key {
        let cached = state.cache.lock().ok().and_then(|mut c| c.get(key));
        if let Some(c) = cached {
            return c.into_response(&state.interfaces);
        }
    }
    let resp = next.run(req).await;
    let (parts, body) = resp.into_parts();
    // Replies of this API are small; a reply that cannot be buffered is an internal error.
    let bytes = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(b) => b,
        Err(_) => return StatusReply(Status::internal()).into_response(),
    };
    let cached = CachedReply {
        status: parts.status,
        headers: parts.headers,
        body: bytes,
    };
    // A server error is not an answer to replay: clients re-send 500/502 with the same key
    // (protocol.md §7.5), and that retry must run the handler again.
    if let Some(key) = key.filter(|_| !cached.status.is_server_error()) {
        if let Ok(mut c) = state.cache.lock() {
            c.put(key, cached.clone());
        }
    }
    cached.into_response(&state.interfaces)
}

#[derive(Debug, Clone)]
struct CachedReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl CachedReply {
    fn into_response(self, interfaces: &[Interface]) -> Response {
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        for i in interfaces {
            if let Ok(v) = HeaderValue::from_str(&i.version().to_string()) {
                resp.headers_mut().insert(i.header_name(), v);
            }
        }
        resp
    }
}

/// Replies to POSTs by Idempotency-Key, bounded in entries and age (the original's cache was
/// unbounded for 24 h: a memory exhaustion vector).
#[derive(Debug)]
struct IdempotencyCache {
    max: usize,
    ttl: Duration,
    map: HashMap<String, (Instant, CachedReply)>,
    order: VecDeque<(Instant, String)>,
}

impl IdempotencyCache {
    fn new(max: usize, ttl: Duration) -> Self {
        IdempotencyCache {
            max,
            ttl,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            if now.duration_since(*at) < self.ttl && self.order.len() <= self.max {
                break;
            }
            if self.map.get(key).is_some_and(|(t, _)| t == at) {
                self.map.remove(key);
            }
            self.order.pop_front();
        }
    }

    fn get(&mut self, key: &str) -> Option<CachedReply> {
        self.expire(Instant::now());
        self.map.get(key).map(|(_, r)| r.clone())
    }

    fn put(&mut self, key: String, reply: CachedReply) {
        let now = Instant::now();
        self.order.push_back((now, key.clone()));
        self.map.insert(key, (now, reply));
        self.expire(now);
    }
}

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2; TLS when `tls` is given) until
/// `shutdown` fires, then lets open requests finish for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    serve_gated(listener, router, tls, shutdown, drain, None).await
}

/// [`serve`], accepting only while `gate` reads `true` (`wireleap_net::gate`: the upgrade
/// agent's gate, so that during a hand-over only the process in charge answers).
pub async fn serve_gated(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
    drain: Duration,
    mut gate: Option<tokio::sync::watch::Receiver<bool>>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use tower::Service as _;

    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = wireleap_net::gate::accept(&listener, &mut gate) => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let svc = {
            let router = router.clone();
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let mut router = router.clone();
                async move { router.call(req.map(Body::new)).await }
            })
        };
        match &acceptor {
            None => {
                let conn = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .into_owned();
                tokio::spawn(graceful.watch(conn));
            }
            Some(acceptor) => {
                // The TLS handshake runs off the accept loop; the connection is then watched
                // by the same graceful-shutdown handle.
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(tls)) => {
                            let conn = Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(tls), svc)
                                .into_owned();
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(%peer, error = %e, "connection ended with error");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: some API connections did not finish in {drain:?}");
    }
    Ok(())
}
