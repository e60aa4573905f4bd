//! The relay end of the tunnel: accept HTTP/2 connections (TLS or h2c prior knowledge behind
//! a fronting proxy), answer non-PUT requests with the caller's 405 reply, hand every PUT
//! stream to a [`Handler`] as a byte stream, and drain gracefully on shutdown.
//!
//! What a stream means (PING, CONNECT, sharetokens, dialing) is the handler's business.

use super::io::{self as tio, BodyReader, ReadStep};
use super::{keepalive_loop, H2Config, Keepalive, TunnelError, HEADER_PAYLOAD, TRAILER_STATUS};
use crate::tls;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the server needs from the relay.
pub trait Handler: Send + Sync + 'static {
    /// Serves one PUT stream. The future runs in its own task; when it returns, the stream
    /// is reset if it was not finished.
    fn tunnel(
        self: Arc<Self>,
        request: TunnelRequest,
        stream: ServerStream,
    ) -> BoxFuture<'static, ()>;

    /// The reply to a request whose method is not PUT (sent with its own status, e.g. 405).
    fn not_allowed(&self, method: &Method) -> PlainReply;
}

/// The request part of a tunnel stream.
#[derive(Debug, Clone)]
pub struct TunnelRequest {
    /// The raw `wl-payload` header value, if present.
    pub payload: Option<Bytes>,
    /// The request path (the original relay ignores it).
    pub path: String,
    /// All request headers, for anything else a handler wants to look at.
    pub headers: HeaderMap,
}

/// A complete non-tunnel reply: status, headers, body.
#[derive(Debug, Clone)]
pub struct PlainReply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl PlainReply {
    /// A text reply with the headers the original sends on status replies
    /// (`text/plain; charset=utf-8`, `nosniff`).
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Self {
            status,
            headers,
            body: body.into(),
        }
    }
}

/// Server settings. Every wait on the network is bounded by one of these.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// HTTP/2 windows and limits.
    pub h2: H2Config,
    /// Limit for the TLS handshake plus the HTTP/2 preface and SETTINGS exchange.
    pub handshake_timeout: Duration,
    /// Dead-peer detection; `None` disables it.
    pub keepalive: Option<Keepalive>,
    /// Close a connection that has had no open stream for this long; `None` keeps it.
    pub idle_timeout: Option<Duration>,
    /// After shutdown is signalled, how long open streams may keep running.
    pub drain_timeout: Duration,
    /// After a connection ends, how long its handlers may run before being cancelled.
    pub handler_grace: Duration,
    /// Connections served at once; further ones are closed on accept.
    pub max_connections: usize,
    /// While this reads `false`, the listener is not accepted from: connections wait in the
    /// kernel's backlog, where another process sharing the socket (an upgrade's successor
    /// or predecessor) takes them. `None` always accepts.
    pub accept_gate: Option<watch::Receiver<bool>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            h2: H2Config::default(),
            handshake_timeout: Duration::from_secs(10),
            keepalive: Some(Keepalive::default()),
            idle_timeout: Some(Duration::from_secs(300)),
            drain_timeout: Duration::from_secs(30),
            handler_grace: Duration::from_secs(5),
            max_connections: 4096,
            accept_gate: None,
        }
    }
}

/// Live and total counts of connections and tunnel streams, readable at any time.
#[derive(Debug, Default)]
pub struct Counters {
    connections: AtomicUsize,
    streams: AtomicUsize,
    total_connections: AtomicU64,
    total_streams: AtomicU64,
}

impl Counters {
    /// Connections currently open (TLS handshake included).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
    /// Tunnel handlers currently running.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }
    /// Connections accepted since start.
    pub fn total_connections(&self) -> u64 {
        self.total_connections.load(Ordering::Relaxed)
    }
    /// Tunnel streams handled since start.
    pub fn total_streams(&self) -> u64 {
        self.total_streams.load(Ordering::Relaxed)
    }
}

/// Decrements a live count when dropped, so aborted tasks are counted out too.
struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    fn enter(counter: &'a AtomicUsize, total: &AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(1, Ordering::Relaxed);
        Live(counter)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the accept loop asks of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Serve normally.
    Run,
    /// Take no new streams (GOAWAY), let open ones finish.
    Drain,
    /// The drain deadline passed: cancel handlers now and close.
    Abort,
}

/// After the drain deadline, how long cut connections get to wind down before their tasks
/// are dropped outright.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// How the drain after shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections that closed by themselves within the drain deadline.
    pub drained: usize,
    /// Connections cut at the deadline (their streams were reset).
    pub aborted: usize,
}

/// A tunnel server: one handler, one configuration, shared counters.
pub struct Server<H> {
    handler: Arc<H>,
    config: Arc<ServeConfig>,
    counters: Arc<Counters>,
}

impl<H> Clone for Server<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            config: self.config.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<H: Handler> Server<H> {
    /// A server for `handler`.
    pub fn new(handler: Arc<H>, config: ServeConfig) -> Self {
        Self {
            handler,
            config: Arc::new(config),
            counters: Arc::new(Counters::default()),
        }
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Serves one already-established connection (TLS, or plaintext h2c with prior knowledge)
    /// until it closes. Used directly for connections handed over by a fronting proxy.
    pub async fn serve_connection<IO>(&self, io: IO) -> Result<(), TunnelError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (_tx, rx) = watch::channel(Stop::Run);
        let _live = Live::enter(&self.counters.connections, &self.counters.total_connections);
        self.run_h2(io, rx).await
    }

    /// Accepts connections on `listener` (TLS when `tls` is given, else h2c) until `shutdown`
    /// resolves; then stops accepting, sends GOAWAY on every connection, lets open streams
    /// run until [`ServeConfig::drain_timeout`], and cuts what is left.
    pub async fn serve<F>(
        &self,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: F,
    ) -> DrainReport
    where
        F: Future<Output = ()>,
    {
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let mut conns = JoinSet::new();
        let mut gate = self.config.accept_gate.clone();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = crate::gate::accept(&listener, &mut gate) => match accepted {
                    Ok((tcp, _peer)) => {
                        if conns.len() >= self.config.max_connections {
                            tracing::warn!(limit = self.config.max_connections, "connection limit reached, closing new connection");
                            continue;
                        }
                        let _ = tcp.set_nodelay(true);
                        let server = self.clone();
                        let tls = tls.clone();
                        let stop = stop_rx.clone();
                        conns.spawn(async move { server.run_accepted(tcp, tls, stop).await });
                    }
                    Err(err) => {
                        // Usually EMFILE/ENFILE: back off instead of spinning.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(Stop::Drain);
        tracing::info!(
            connections = conns.len(),
            streams = self.counters.streams(),
            "draining"
        );

        let mut report = DrainReport {
            drained: 0,
            aborted: 0,
        };
        let deadline = tokio::time::sleep(self.config.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = conns.join_next() => match joined {
                    Some(_) => report.drained += 1,
                    None => break,
                },
                () = &mut deadline => {
                    report.aborted = conns.len();
                    // Ask first, so handlers are cancelled and counted out before we return;
                    // drop whatever does not follow within the grace (e.g. stuck in TLS).
                    let _ = stop_tx.send(Stop::Abort);
                    let _ = tokio::time::timeout(ABORT_GRACE, async {
                        while conns.join_next().await.is_some() {}
                    })
                    .await;
                    conns.abort_all();
                    while conns.join_next().await.is_some() {}
                    break;
                }
            }
        }
        report
    }

    async fn run_accepted(
        &self,
        tcp: tokio::net::TcpStream,
        tls: Option<Arc<rustls::ServerConfig>>,
        stop: watch::Receiver<Stop>,
    ) {
        let _live = Live::enter(&self.counters.connections, &self.counters.total_connections);
        let result = match tls {
            Some(cfg) => match tls::accept_tls(cfg, tcp, self.config.handshake_timeout).await {
                Ok(stream) => self.run_h2(stream, stop).await,
                Err(err) => {
                    tracing::debug!(%err, "TLS accept failed");
                    return;
                }
            },
            None => self.run_h2(tcp, stop).await,
        };
        if let Err(err) = result {
            tracing::debug!(%err, "connection ended with error");
        }
    }

    async fn run_h2<IO>(&self, io: IO, mut stop: watch::Receiver<Stop>) -> Result<(), TunnelError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let cfg = &self.config;
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(cfg.h2.stream_window)
            .initial_connection_window_size(cfg.h2.connection_window)
            .max_frame_size(cfg.h2.max_frame_size)
            .max_send_buffer_size(cfg.h2.max_send_buffer)
            .max_concurrent_streams(cfg.h2.max_concurrent_streams)
            .max_header_list_size(cfg.h2.max_header_list_size);
        let mut conn = tokio::time::timeout(cfg.handshake_timeout, builder.handshake(io))
            .await
            .map_err(|_| TunnelError::Timeout {
                what: "HTTP/2 server handshake",
                after: cfg.handshake_timeout,
            })??;

        let keepalive: Pin<Box<dyn Future<Output = ()> + Send>> =
            match (cfg.keepalive, conn.ping_pong()) {
                (Some(ka), Some(pp)) => Box::pin(keepalive_loop(pp, ka)),
                _ => Box::pin(std::future::pending()),
            };
        tokio::pin!(keepalive);
        // Only polled when an idle timeout is configured.
        let idle = tokio::time::sleep(cfg.idle_timeout.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(idle);

        let mut handlers = JoinSet::new();
        let mut closing = false;
        let mut abort = false;
        let mut stop_open = true;
        match *stop.borrow_and_update() {
            Stop::Run => {}
            Stop::Drain => {
                conn.graceful_shutdown();
                closing = true;
            }
            Stop::Abort => abort = true,
        }
        let result = loop {
            if abort {
                break Ok(());
            }
            tokio::select! {
                accepted = conn.accept() => match accepted {
                    Some(Ok((request, respond))) => self.dispatch(request, respond, &mut handlers),
                    Some(Err(err)) => break Err(TunnelError::H2(err)),
                    None => break Ok(()),
                },
                Some(_) = handlers.join_next(), if !handlers.is_empty() => {
                    if handlers.is_empty() {
                        if let Some(limit) = cfg.idle_timeout {
                            idle.as_mut().reset(tokio::time::Instant::now() + limit);
                        }
                    }
                }
                changed = stop.changed(), if !abort && stop_open => match changed {
                    Ok(()) => match *stop.borrow_and_update() {
                        Stop::Run => {}
                        Stop::Drain => {
                            if !closing {
                                conn.graceful_shutdown();
                                closing = true;
                            }
                        }
                        Stop::Abort => abort = true,
                    },
                    // A dropped sender means nobody will ask us to stop any more.
                    Err(_) => stop_open = false,
                },
                () = &mut idle, if handlers.is_empty() && cfg.idle_timeout.is_some() && !closing => {
                    tracing::debug!("idle connection, closing");
                    conn.graceful_shutdown();
                    closing = true;
                }
                () = &mut keepalive => {
                    break Err(TunnelError::Timeout {
                        what: "keepalive PING",
                        after: cfg.keepalive.map_or(Duration::ZERO, |k| k.timeout),
                    });
                }
            }
        };
        drop(conn);

        // The connection is gone, so handlers' streams are dead; let them notice and clean up,
        // but never let one outlive the connection for long (not at all when aborting).
        if abort {
            handlers.abort_all();
        }
        let grace = tokio::time::sleep(cfg.handler_grace);
        tokio::pin!(grace);
        while !handlers.is_empty() {
            tokio::select! {
                _ = handlers.join_next() => {}
                () = &mut grace => {
                    handlers.abort_all();
                    while handlers.join_next().await.is_some() {}
                }
            }
        }
        result
    }

    fn dispatch(
        &self,
        request: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        handlers: &mut JoinSet<()>,
    ) {
        if request.method() != Method::PUT {
            let reply = self.handler.not_allowed(request.method());
            if let Err(err) = send_plain(&mut respond, reply) {
                tracing::debug!(%err, "cannot send method-not-allowed reply");
            }
            return;
        }
        let (parts, body) = request.into_parts();
        let tunnel_request = TunnelRequest {
            payload: parts
                .headers
                .get(HEADER_PAYLOAD)
                .map(|v| Bytes::copy_from_slice(v.as_bytes())),
            path: parts.uri.path().to_string(),
            headers: parts.headers,
        };
        let stream = ServerStream {
            reader: BodyReader::new(body),
            read_done: false,
            respond: Some(respond),
            send: None,
            finished: false,
        };
        let handler = self.handler.clone();
        let counters = self.counters.clone();
        handlers.spawn(async move {
            let _live = Live::enter(&counters.streams, &counters.total_streams);
            handler.tunnel(tunnel_request, stream).await;
        });
    }
}

/// Serves one connection with `handler` and `config` (convenience for [`Server::serve_connection`]).
pub async fn serve_connection<IO, H>(
    io: IO,
    handler: Arc<H>,
    config: ServeConfig,
) -> Result<(), TunnelError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    Server::new(handler, config).serve_connection(io).await
}

fn send_plain(respond: &mut SendResponse<Bytes>, reply: PlainReply) -> Result<(), TunnelError> {
    let mut response = Response::new(());
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    if reply.body.is_empty() {
        respond.send_response(response, true)?;
    } else {
        let mut send = respond.send_response(response, false)?;
        send.send_data(reply.body, true)?;
    }
    Ok(())
}

/// The relay side of one tunnel: read the client's upstream bytes, write downstream bytes,
/// then end with [`ServerStream::finish_ok`] or [`ServerStream::finish_with_status`].
///
/// The 200 response headers (declaring `trailer: wl-status`) go out with the first write or
/// finish, or explicitly with [`ServerStream::send_headers`]. After a finish, writes fail.
/// Dropping the stream unfinished resets it (RST_STREAM CANCEL).
pub struct ServerStream {
    reader: BodyReader,
    read_done: bool,
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    finished: bool,
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("headers_sent", &self.send.is_some())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl ServerStream {
    /// Sends the tunnel's 200 response headers now (a no-op if already sent), e.g. as soon as
    /// the next hop is dialed, so the client learns early that the hop is up.
    pub fn send_headers(&mut self) -> Result<(), TunnelError> {
        self.sender(None).map(|_| ())
    }

    /// The send half, sending the response headers first if they have not gone out yet.
    /// `refusal` is a `wl-status` the stream is about to end with: it then rides in the
    /// header block too, so a client learns of the refusal with the headers, whether or not
    /// the trailer arrives in the same read (Go clients read only the trailer; ours
    /// tell "connected" from "refused" by it, see `TunnelStream::poll_established`).
    fn sender(
        &mut self,
        refusal: Option<&HeaderValue>,
    ) -> Result<&mut SendStream<Bytes>, TunnelError> {
        if self.send.is_none() {
            let Some(mut respond) = self.respond.take() else {
                return Err(TunnelError::AlreadyResponded("send tunnel headers"));
            };
            let mut response = Response::new(());
            response.headers_mut().insert(
                http::header::TRAILER,
                HeaderValue::from_static(TRAILER_STATUS),
            );
            if let Some(status) = refusal {
                response
                    .headers_mut()
                    .insert(TRAILER_STATUS, status.clone());
            }
            self.send = Some(respond.send_response(response, false)?);
        }
        match self.send.as_mut() {
            Some(send) => Ok(send),
            None => Err(TunnelError::AlreadyResponded("send tunnel headers")),
        }
    }

    /// Answers with a complete non-tunnel reply (PING: HTTP 200 with the status text body).
    /// Only possible before anything else was sent.
    pub fn reply_plain(&mut self, reply: PlainReply) -> Result<(), TunnelError> {
        let Some(mut respond) = self.respond.take() else {
            return Err(TunnelError::AlreadyResponded("send a plain reply"));
        };
        self.finished = true;
        send_plain(&mut respond, reply)
    }

    /// Ends the response body cleanly (END_STREAM, no trailer). Idempotent.
    pub fn finish_ok(&mut self) -> Result<(), TunnelError> {
        if self.finished {
            return Ok(());
        }
        let send = self.sender(None)?;
        send.send_data(Bytes::new(), true)?;
        self.finished = true;
        Ok(())
    }

    /// Ends the response with a `wl-status` trailer (a HEADERS frame after the data, with
    /// END_STREAM). `value` must not contain CR or LF: strip the status text's newline. An
    /// invalid value is refused before anything is sent, so the stream can still be finished.
    pub fn finish_with_status(&mut self, value: &str) -> Result<(), TunnelError> {
        if self.finished {
            return Err(TunnelError::AlreadyResponded("send a wl-status trailer"));
        }
        let header = HeaderValue::from_str(value).map_err(|_| TunnelError::InvalidHeader {
            name: TRAILER_STATUS,
            value: value.to_string(),
        })?;
        let send = self.sender(Some(&header))?;
        let mut trailers = HeaderMap::new();
        trailers.insert(TRAILER_STATUS, header);
        send.send_trailers(trailers)?;
        self.finished = true;
        Ok(())
    }

    /// Whether the response was ended (finished, replied, or shut down by a splice).
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_done {
            return Poll::Ready(Ok(()));
        }
        match this.reader.poll_read(cx, buf) {
            Poll::Ready(Ok(ReadStep::Data)) => Poll::Ready(Ok(())),
            Poll::Ready(Ok(ReadStep::End)) => {
                this.read_done = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(tio::h2_to_io(err))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "tunnel response already finished",
            )));
        }
        let send = this.sender(None).map_err(io::Error::from)?;
        tio::poll_write(send, cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "tunnel response already finished",
            )));
        }
        let send = this.sender(None).map_err(io::Error::from)?;
        tio::poll_write_vectored(send, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes queued frames out; there is nothing to push here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().finish_ok().map_err(io::Error::from))
    }
}

impl Drop for ServerStream {
    fn drop(&mut self) {
        if !self.finished {
            // An unfinished stream is an abort: tell the client instead of leaving it waiting.
            if let Some(send) = self.send.as_mut() {
                send.send_reset(h2::Reason::CANCEL);
            } else if let Some(respond) = self.respond.as_mut() {
                respond.send_reset(h2::Reason::CANCEL);
            }
        }
    }
}
