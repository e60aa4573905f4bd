//! The client end of the tunnel: one HTTP/2 session per transport, one PUT stream per
//! tunnel, and the PING-style plain request.
//!
//! A [`TunnelStream`] is usable at once: the request goes out with its first write and the
//! first read waits (bounded) for the response headers, as the original client does, so the
//! next hop's TLS ClientHello rides right behind the request.

use super::io::{self as tio, BodyReader, ReadStep};
use super::{keepalive_loop, H2Config, Keepalive, TunnelError, HEADER_PAYLOAD, TRAILER_STATUS};
use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::SendStream;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Client session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// HTTP/2 windows and limits.
    pub h2: H2Config,
    /// `:authority` used when [`Session::open`] is given a bare path.
    pub authority: String,
    /// Limit for the HTTP/2 preface and SETTINGS exchange.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer to allow one more concurrent stream.
    pub open_timeout: Duration,
    /// How long a tunnel's first read, or a plain request, waits for response headers.
    pub response_timeout: Duration,
    /// Dead-peer detection; `None` disables it.
    pub keepalive: Option<Keepalive>,
    /// Largest plain response body accepted.
    pub plain_body_limit: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            h2: H2Config::default(),
            authority: "wireleap.invalid".to_string(),
            handshake_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            keepalive: Some(Keepalive::default()),
            plain_body_limit: 64 << 10,
        }
    }
}

/// One HTTP/2 connection carrying any number of tunnel streams. Cheap to share by reference;
/// dropping it does not cut streams already open.
pub struct Session {
    send: SendRequest<Bytes>,
    config: Arc<SessionConfig>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("authority", &self.config.authority)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A complete plain response (e.g. to PING).
#[derive(Debug, Clone)]
pub struct PlainResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Trailers, if the server sent any.
    pub trailers: Option<HeaderMap>,
}

impl Session {
    /// Runs the HTTP/2 client handshake over `io` (a TLS stream, possibly nested inside
    /// another tunnel) and starts the task that drives the connection.
    pub async fn handshake<IO>(io: IO, config: SessionConfig) -> Result<Session, TunnelError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(config.h2.stream_window)
            .initial_connection_window_size(config.h2.connection_window)
            .max_frame_size(config.h2.max_frame_size)
            .max_send_buffer_size(config.h2.max_send_buffer)
            .max_concurrent_streams(config.h2.max_concurrent_streams)
            .max_header_list_size(config.h2.max_header_list_size)
            .enable_push(false);
        let (send, mut conn) =
            tokio::time::timeout(config.handshake_timeout, builder.handshake(io))
                .await
                .map_err(|_| TunnelError::Timeout {
                    what: "HTTP/2 client handshake",
                    after: config.handshake_timeout,
                })??;

        let closed = Arc::new(AtomicBool::new(false));
        let keepalive: Pin<Box<dyn Future<Output = ()> + Send>> =
            match (config.keepalive, conn.ping_pong()) {
                (Some(ka), Some(pp)) => Box::pin(keepalive_loop(pp, ka)),
                _ => Box::pin(std::future::pending()),
            };
        let task_closed = closed.clone();
        // The task ends when the connection does: peer gone, keepalive failed, or (h2's own
        // rule) this Session and every stream from it were dropped.
        tokio::spawn(async move {
            tokio::select! {
                result = &mut conn => {
                    if let Err(err) = result {
                        tracing::debug!(%err, "tunnel session ended with error");
                    }
                }
                () = keepalive => tracing::debug!("tunnel session peer unresponsive, closing"),
            }
            task_closed.store(true, Ordering::Relaxed);
        });

        Ok(Session {
            send,
            config: Arc::new(config),
            closed,
        })
    }

    /// Whether the connection has ended; a closed session can open nothing more.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Opens a tunnel: a PUT to `uri` (absolute `https://host:port/path`, or a bare path
    /// using [`SessionConfig::authority`]) with `wl-payload: payload`.
    pub async fn open(&self, uri: &str, payload: &[u8]) -> Result<TunnelStream, TunnelError> {
        let value = HeaderValue::from_bytes(payload).map_err(|_| TunnelError::InvalidHeader {
            name: HEADER_PAYLOAD,
            value: String::from_utf8_lossy(payload).into_owned(),
        })?;
        let request = self.request(Method::PUT, uri, Some(value))?;
        let (response, send) = self.send_request(request, false).await?;
        Ok(TunnelStream {
            read: ReadState::Waiting {
                response,
                timer: Box::pin(tokio::time::sleep(self.config.response_timeout)),
            },
            send,
            write_closed: false,
            status: StatusSlot::default(),
            response_timeout: self.config.response_timeout,
        })
    }

    /// A request with no body whose whole response is read (bounded by
    /// [`SessionConfig::plain_body_limit`] and [`SessionConfig::response_timeout`]):
    /// PING, or probing a relay's 405.
    pub async fn request_plain(
        &self,
        method: Method,
        uri: &str,
        payload: Option<&[u8]>,
    ) -> Result<PlainResponse, TunnelError> {
        let value = match payload {
            Some(p) => {
                Some(
                    HeaderValue::from_bytes(p).map_err(|_| TunnelError::InvalidHeader {
                        name: HEADER_PAYLOAD,
                        value: String::from_utf8_lossy(p).into_owned(),
                    })?,
                )
            }
            None => None,
        };
        let request = self.request(method, uri, value)?;
        let (response, _send) = self.send_request(request, true).await?;
        let limit = self.config.plain_body_limit;
        let after = self.config.response_timeout;
        tokio::time::timeout(after, read_plain(response, limit))
            .await
            .map_err(|_| TunnelError::Timeout {
                what: "plain response",
                after,
            })?
    }

    fn request(
        &self,
        method: Method,
        uri: &str,
        payload: Option<HeaderValue>,
    ) -> Result<Request<()>, TunnelError> {
        let full = if uri.starts_with('/') {
            format!("https://{}{}", self.config.authority, uri)
        } else {
            uri.to_string()
        };
        let parsed: Uri = full
            .parse()
            .map_err(|_| TunnelError::InvalidUri(uri.to_string()))?;
        if parsed.scheme().is_none() || parsed.authority().is_none() {
            return Err(TunnelError::InvalidUri(uri.to_string()));
        }
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = parsed;
        if let Some(value) = payload {
            request.headers_mut().insert(HEADER_PAYLOAD, value);
        }
        Ok(request)
    }

    async fn send_request(
        &self,
        request: Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, SendStream<Bytes>), TunnelError> {
        if self.is_closed() {
            return Err(TunnelError::SessionClosed);
        }
        let after = self.config.open_timeout;
        let mut ready = tokio::time::timeout(after, self.send.clone().ready())
            .await
            .map_err(|_| TunnelError::Timeout {
                what: "waiting for a free HTTP/2 stream",
                after,
            })?
            .map_err(|err| {
                if err.is_go_away() || err.is_io() {
                    TunnelError::SessionClosed
                } else {
                    TunnelError::H2(err)
                }
            })?;
        Ok(ready.send_request(request, end_of_stream)?)
    }
}

async fn read_plain(response: ResponseFuture, limit: usize) -> Result<PlainResponse, TunnelError> {
    let response = response.await?;
    let (parts, mut body) = response.into_parts();
    let mut buf = BytesMut::new();
    let mut reset = false;
    while let Some(chunk) = body.data().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(err) if tio::is_reset_no_error(&err) => {
                reset = true;
                break;
            }
            Err(err) => return Err(err.into()),
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        if buf.len() + chunk.len() > limit {
            return Err(TunnelError::BodyTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    let trailers = if reset {
        None
    } else {
        match body.trailers().await {
            Ok(t) => t,
            Err(err) if tio::is_reset_no_error(&err) => None,
            Err(err) => return Err(err.into()),
        }
    };
    Ok(PlainResponse {
        status: parts.status,
        headers: parts.headers,
        body: buf.freeze(),
        trailers,
    })
}

/// Where a tunnel's final `wl-status` is kept, readable after the stream has been wrapped
/// in TLS for the next hop (where the read error itself would not surface).
#[derive(Debug, Clone, Default)]
pub struct StatusSlot(Arc<OnceLock<String>>);

impl StatusSlot {
    /// The `wl-status` value the tunnel ended with, if any.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    fn set(&self, value: &str) {
        let _ = self.0.set(value.to_string());
    }
}

enum ReadState {
    /// Waiting for the response headers.
    Waiting {
        response: ResponseFuture,
        timer: Pin<Box<Sleep>>,
    },
    /// Reading the body. A `wl-status` sent as a plain header (older relays) is kept in
    /// case no trailer carries one.
    Body {
        reader: BodyReader,
        header_status: Option<String>,
    },
    /// Clean end of stream.
    Done,
    /// Failed; every later read repeats the failure.
    Failed(Failure),
}

#[derive(Clone)]
enum Failure {
    Status(String),
    Other(io::ErrorKind, String),
}

impl Failure {
    fn to_io(&self) -> io::Error {
        match self {
            Failure::Status(s) => TunnelError::Status(s.clone()).into(),
            Failure::Other(kind, msg) => io::Error::new(*kind, msg.clone()),
        }
    }
}

/// The client side of one tunnel: writes go upstream, reads return downstream bytes.
///
/// A read ends with `Ok(0)` at a clean end of stream (also after `RST_STREAM(NO_ERROR)`,
/// which §14.4 says to tolerate), and with an I/O error carrying
/// [`TunnelError::Status`] when the relay sent a `wl-status` (see [`super::status_of`]).
/// Shutting down the write side ends the request body (half-close).
pub struct TunnelStream {
    read: ReadState,
    send: SendStream<Bytes>,
    write_closed: bool,
    status: StatusSlot,
    response_timeout: Duration,
}

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStream")
            .field("write_closed", &self.write_closed)
            .field("status", &self.status.get())
            .finish_non_exhaustive()
    }
}

impl TunnelStream {
    /// A handle to the `wl-status` this tunnel ends with (shared, readable later).
    pub fn status_slot(&self) -> StatusSlot {
        self.status.clone()
    }

    fn fail(&mut self, failure: Failure) -> io::Error {
        if let Failure::Status(s) = &failure {
            self.status.set(s);
        }
        let err = failure.to_io();
        self.read = ReadState::Failed(failure);
        err
    }

    fn fail_h2(&mut self, err: h2::Error) -> io::Error {
        let io_err = tio::h2_to_io(err);
        self.read = ReadState::Failed(Failure::Other(io_err.kind(), io_err.to_string()));
        io_err
    }

    /// End of body: the status comes from the trailer, else from the response headers.
    fn end(&mut self, status: Option<String>) -> Poll<io::Result<()>> {
        match status {
            Some(s) => Poll::Ready(Err(self.fail(Failure::Status(s)))),
            None => {
                self.read = ReadState::Done;
                Poll::Ready(Ok(()))
            }
        }
    }
}

fn status_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get(TRAILER_STATUS)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

impl TunnelStream {
    /// Waits for the response headers; the state moves from `Waiting` to `Body` or `Failed`.
    fn poll_headers(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let ReadState::Waiting { response, timer } = &mut self.read else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(response).poll(cx) {
            Poll::Ready(Ok(resp)) => {
                if resp.status() != StatusCode::OK {
                    let msg = TunnelError::HttpStatus(resp.status().as_u16()).to_string();
                    let kind = io::ErrorKind::ConnectionRefused;
                    return Poll::Ready(Err(self.fail(Failure::Other(kind, msg))));
                }
                let header_status = status_value(resp.headers());
                self.read = ReadState::Body {
                    reader: BodyReader::new(resp.into_body()),
                    header_status,
                };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(self.fail_h2(err))),
            Poll::Pending => {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let err = TunnelError::Timeout {
                    what: "tunnel response headers",
                    after: self.response_timeout,
                };
                let msg = err.to_string();
                Poll::Ready(Err(self.fail(Failure::Other(io::ErrorKind::TimedOut, msg))))
            }
        }
    }

    /// The body ended (END_STREAM or `RST_STREAM(NO_ERROR)`): the status comes from the
    /// trailers, else from the response headers.
    fn poll_end(&mut self, cx: &mut Context<'_>, reset: bool) -> Poll<io::Result<()>> {
        let ReadState::Body {
            reader,
            header_status,
        } = &mut self.read
        else {
            return Poll::Ready(Ok(()));
        };
        let trailers = if reset {
            None
        } else {
            match reader.recv_mut().poll_trailers(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(t)) => t,
                Poll::Ready(Err(err)) if tio::is_reset_no_error(&err) => None,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(self.fail_h2(err))),
            }
        };
        let status = trailers
            .as_ref()
            .and_then(status_value)
            .or_else(|| header_status.take());
        self.end(status)
    }

    /// Resolves once the far end has accepted the tunnel: its response headers arrived
    /// without a `wl-status`, and the stream did not end with one right behind them. Our
    /// relays send the headers of a stream they forward only after the next hop or target
    /// is connected, and put a refusal's status in the header block as well as the trailer,
    /// so this tells a SOCKS client whether its CONNECT worked without waiting for the
    /// target to speak. Body bytes that already arrived stay buffered for the next read.
    /// Bounded by the response timeout.
    pub fn poll_established(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.read {
                ReadState::Waiting { .. } => ready!(self.poll_headers(cx))?,
                ReadState::Body {
                    header_status: Some(status),
                    ..
                } => {
                    // A refusal announced with the headers (our relays put it there as well
                    // as in the trailer; relays <= 0.6.0 only there).
                    let status = status.clone();
                    return Poll::Ready(Err(self.fail(Failure::Status(status))));
                }
                ReadState::Body { reader, .. } => {
                    return match reader.poll_fill(cx) {
                        // Nothing more yet: the headers came alone, so the tunnel is open.
                        Poll::Pending | Poll::Ready(Ok(ReadStep::Data)) => Poll::Ready(Ok(())),
                        Poll::Ready(Ok(ReadStep::End)) => self.poll_end(cx, false),
                        Poll::Ready(Err(err)) if tio::is_reset_no_error(&err) => {
                            self.poll_end(cx, true)
                        }
                        Poll::Ready(Err(err)) => Poll::Ready(Err(self.fail_h2(err))),
                    };
                }
                ReadState::Done => return Poll::Ready(Ok(())),
                ReadState::Failed(failure) => return Poll::Ready(Err(failure.to_io())),
            }
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.read {
                ReadState::Waiting { .. } => ready!(this.poll_headers(cx))?,
                ReadState::Body { reader, .. } => {
                    return match reader.poll_read(cx, buf) {
                        Poll::Ready(Ok(ReadStep::Data)) => Poll::Ready(Ok(())),
                        Poll::Ready(Ok(ReadStep::End)) => this.poll_end(cx, false),
                        Poll::Ready(Err(err)) if tio::is_reset_no_error(&err) => {
                            this.poll_end(cx, true)
                        }
                        Poll::Ready(Err(err)) => Poll::Ready(Err(this.fail_h2(err))),
                        Poll::Pending => Poll::Pending,
                    };
                }
                ReadState::Done => return Poll::Ready(Ok(())),
                ReadState::Failed(failure) => return Poll::Ready(Err(failure.to_io())),
            }
        }
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "tunnel write side already shut down",
            )));
        }
        tio::poll_write(&mut this.send, cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "tunnel write side already shut down",
            )));
        }
        tio::poll_write_vectored(&mut this.send, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The session task writes queued frames out; there is nothing to push here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Ok(()));
        }
        this.write_closed = true;
        // An error here means the send side is already closed (the relay reset the stream, or
        // the session died): there is nothing left to end, and reads report the real cause.
        if let Err(err) = this.send.send_data(Bytes::new(), true) {
            tracing::trace!(%err, "tunnel shutdown on a closed stream");
        }
        Poll::Ready(Ok(()))
    }
}
