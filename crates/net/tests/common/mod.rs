//! Test fixtures: certificates, a TCP echo server, a relay-like handler driven by opaque
//! test payloads, and client helpers. Everything binds 127.0.0.1:0 and is torn down on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use wireleap_net::splice::{splice, SpliceLimits};
use wireleap_net::tls;
use wireleap_net::tunnel::{
    DrainReport, Handler, PlainReply, ServeConfig, Server, ServerStream, Session, SessionConfig,
    TunnelRequest, TunnelStream,
};

/// The 405 body the original relay sends (vectors/wl_payload.json, method_not_put).
pub const NOT_ALLOWED_BODY: &str = "{\"code\":405,\"description\":\"HTTP method not allowed\"}\n\n";
pub const PONG_BODY: &str = "{\"code\":200,\"description\":\"PONG\",\"origin\":\"test\"}\n";

/// Aborts a task when dropped, so a failing test leaves nothing running.
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A relay identity: seed, public key, TLS server config.
pub struct Identity {
    pub pubkey: [u8; 32],
    pub tls: Arc<rustls::ServerConfig>,
}

pub fn identity(seed_byte: u8) -> Identity {
    let seed = [seed_byte; 32];
    let rc = wireleap_net::cert::generate(&seed, SystemTime::now()).unwrap();
    let pubkey = wireleap_proto::keys::Keypair::from_seed(seed).public().0;
    Identity {
        pubkey,
        tls: tls::server_config(rc.cert_pem.as_bytes(), rc.key_pem.as_bytes()).unwrap(),
    }
}

/// A TCP echo server; each connection echoes until EOF, then half-closes.
pub struct Echo {
    pub addr: SocketAddr,
    _task: AbortOnDrop<()>,
}

pub async fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            conns.spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Echo {
        addr,
        _task: AbortOnDrop(task),
    }
}

/// Events a test may want to observe from inside the handler.
#[derive(Debug)]
pub enum Event {
    /// finish_with_status with a newline was refused with this error text.
    NewlineRefused(String),
    /// A tunnel handler ended (with the splice outcome, if it spliced).
    Ended(String),
}

/// Handler driven by the payload text:
/// - `PING`: plain 200 reply;
/// - `CONNECT <addr>`: dial addr, splice, finish ok (or status `splice failed` on error);
/// - `FAIL <value>`: write nothing, end with wl-status `<value>`;
/// - `DATAFAIL <value>`: write `data`, end with wl-status `<value>`;
/// - `NEWLINE <value>`: try a status with a trailing newline (must be refused), then send it
///   without;
/// - `HEADERSTATUS <value>`: empty 200 response with `wl-status` as a header, no trailer;
/// - `CLOSE`: write `bye` and finish without reading the request body;
/// - `ABORT`: drop the stream unfinished;
/// - `SILENT`: never answer.
pub struct TestHandler {
    pub events: mpsc::UnboundedSender<Event>,
    pub limits: SpliceLimits,
}

impl Handler for TestHandler {
    fn tunnel(
        self: Arc<Self>,
        request: TunnelRequest,
        mut stream: ServerStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let payload = request
                .payload
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_default();
            let (cmd, arg) = payload.split_once(' ').unwrap_or((payload.as_str(), ""));
            match cmd {
                "PING" => {
                    let mut reply =
                        PlainReply::text(StatusCode::OK, Bytes::from_static(PONG_BODY.as_bytes()));
                    reply.headers.remove(http::header::X_CONTENT_TYPE_OPTIONS);
                    stream.reply_plain(reply).unwrap();
                }
                "CONNECT" => match TcpStream::connect(arg).await {
                    Ok(mut tcp) => {
                        let _ = tcp.set_nodelay(true);
                        stream.send_headers().unwrap();
                        let outcome = splice(&mut stream, &mut tcp, &self.limits, |_, _| {}).await;
                        let text = match &outcome {
                            Ok(t) => format!("ok {t}"),
                            Err(e) => format!("error {e}"),
                        };
                        match outcome {
                            Ok(_) => {
                                let _ = stream.finish_ok();
                            }
                            Err(_) if !stream.is_finished() => {
                                let _ = stream.finish_with_status("splice failed");
                            }
                            Err(_) => {}
                        }
                        let _ = self.events.send(Event::Ended(text));
                    }
                    Err(e) => {
                        let _ = stream.finish_with_status(&format!("dial failed: {e}"));
                    }
                },
                "FAIL" => stream.finish_with_status(arg).unwrap(),
                "DATAFAIL" => {
                    stream.write_all(b"data").await.unwrap();
                    stream.finish_with_status(arg).unwrap();
                }
                "NEWLINE" => {
                    match stream.finish_with_status(&format!("{arg}\n")) {
                        Err(e) => {
                            let _ = self.events.send(Event::NewlineRefused(e.to_string()));
                        }
                        Ok(()) => panic!("a status with a newline was accepted"),
                    }
                    stream.finish_with_status(arg).unwrap();
                }
                "HEADERSTATUS" => {
                    // What relays <= 0.6.0 effectively send: the status in the response
                    // header block of an empty 200 response, no trailer.
                    let mut headers = http::HeaderMap::new();
                    headers.insert("wl-status", http::HeaderValue::from_str(arg).unwrap());
                    stream
                        .reply_plain(PlainReply {
                            status: StatusCode::OK,
                            headers,
                            body: Bytes::new(),
                        })
                        .unwrap();
                }
                "CLOSE" => {
                    stream.write_all(b"bye").await.unwrap();
                    stream.finish_ok().unwrap();
                }
                "ABORT" => drop(stream),
                "SILENT" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(stream);
                }
                other => {
                    let _ = stream.finish_with_status(&format!("unknown test command {other}"));
                }
            }
        })
    }

    fn not_allowed(&self, _method: &Method) -> PlainReply {
        PlainReply::text(StatusCode::METHOD_NOT_ALLOWED, NOT_ALLOWED_BODY)
    }
}

/// A running relay: address, counters, a shutdown trigger and the drain report.
pub struct Relay {
    pub addr: SocketAddr,
    pub pubkey: [u8; 32],
    pub counters: Arc<wireleap_net::tunnel::Counters>,
    pub events: mpsc::UnboundedReceiver<Event>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<AbortOnDrop<DrainReport>>,
}

impl Relay {
    /// Signals shutdown and waits for the drain to finish.
    pub async fn shutdown(&mut self) -> DrainReport {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let mut task = self.task.take().unwrap();
        (&mut task.0).await.unwrap()
    }

    /// Signals shutdown without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the drain report after [`Relay::signal_shutdown`].
    pub async fn drained(&mut self) -> DrainReport {
        let mut task = self.task.take().unwrap();
        (&mut task.0).await.unwrap()
    }
}

pub async fn start_relay(seed_byte: u8, config: ServeConfig) -> Relay {
    start_relay_with(seed_byte, config, true).await
}

pub async fn start_relay_with(seed_byte: u8, config: ServeConfig, with_tls: bool) -> Relay {
    let id = identity(seed_byte);
    let (events_tx, events) = mpsc::unbounded_channel();
    let handler = Arc::new(TestHandler {
        events: events_tx,
        limits: SpliceLimits::default(),
    });
    let server = Server::new(handler, config);
    let counters = server.counters();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let tls_cfg = with_tls.then(|| id.tls.clone());
    let task = tokio::spawn(async move {
        server
            .serve(listener, tls_cfg, async {
                let _ = rx.await;
            })
            .await
    });
    Relay {
        addr,
        pubkey: id.pubkey,
        counters,
        events,
        shutdown: Some(tx),
        task: Some(AbortOnDrop(task)),
    }
}

pub fn session_config() -> SessionConfig {
    SessionConfig {
        authority: "relay.test:443".to_string(),
        ..SessionConfig::default()
    }
}

pub const T: Duration = Duration::from_secs(10);

/// TCP + TLS (pinned) + HTTP/2 to a relay.
pub async fn connect(relay: &Relay) -> Session {
    connect_with(relay, session_config()).await
}

/// [`connect`] with other session settings.
pub async fn connect_with(relay: &Relay, config: SessionConfig) -> Session {
    let tcp = tls::dial_tcp(&relay.addr.to_string(), T).await.unwrap();
    let tls = tls::dial_tls(tcp, Some("relay.test"), Some(relay.pubkey), T)
        .await
        .unwrap();
    Session::handshake(tls, config).await.unwrap()
}

/// TLS (pinned, no SNI) + HTTP/2 through an open tunnel stream: the nested hop.
pub async fn connect_inner(stream: TunnelStream, pubkey: [u8; 32]) -> Session {
    let tls = tls::dial_tls(stream, None, Some(pubkey), T).await.unwrap();
    Session::handshake(tls, session_config()).await.unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so integrity checks see varied data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` into the stream while reading the echo back; returns what came back.
pub async fn echo_through<S>(stream: S, data: Vec<u8>) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.unwrap();
    let _w = writer.await.unwrap();
    got
}
