//! The SOCKSv5 server: greeting, request, reply, then a spliced TCP stream (CONNECT) or a
//! UDP relay tied to its control connection (UDP ASSOCIATE).
//!
//! Every read of the handshake runs under one deadline and into a fixed-size buffer, and
//! every refusal is a reply code followed by closing the connection: a bad client costs one
//! task and a few hundred bytes, never the process. Where a request leads is the
//! [`Connector`]'s business.
//!
//! After a connect the server replies only once the stream is established
//! ([`ProxyStream::poll_established`]: through a circuit, when the backing relay has
//! connected the target), so a target that refuses the connection is answered with its
//! reply code instead of success-then-close, without waiting for the target to speak.
//! [`SocksConfig::target_wait`] (0 by default) can add a wait for the target's first bytes.

use super::codec::{
    self, Command, Greeting, ReplyMsg, Request, SocksError, TargetAddr, METHOD_NONE_ACCEPTABLE,
    METHOD_NO_AUTH, VERSION,
};
use super::Reply;
use crate::udpframe;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use wireleap_daemon::CancellationToken;
use wireleap_net::splice::{splice, SpliceLimits};
use wireleap_proto::wl_payload::Protocol;

/// What a target sent within [`SocksConfig::target_wait`] of being connected.
enum Early {
    /// Its first bytes (none if it stayed silent or no wait is configured).
    Bytes(Vec<u8>),
    /// It closed the connection at once.
    Closed,
}

/// A byte stream to a target, as a [`Connector`] hands it out.
pub trait ProxyStream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The reply code for a read error met before the SOCKS reply was sent (the far end
    /// refused or failed). The default is "host unreachable".
    fn failure_reply(&self, err: &io::Error) -> Reply {
        let _ = err;
        Reply::HostUnreachable
    }

    /// Resolves once the far end has accepted the connection (for a circuit: the backing
    /// relay connected the target), or with the error that refused it. The default is
    /// ready at once, for streams that are connected when handed out.
    fn poll_established(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }
}

impl ProxyStream for TcpStream {
    fn failure_reply(&self, err: &io::Error) -> Reply {
        io_reply(err)
    }
}

/// A boxed [`ProxyStream`].
pub type BoxStream = Box<dyn ProxyStream>;

/// Why a connection could not be set up, with the reply code it earns.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    /// The SOCKS reply to send.
    pub reply: Reply,
    /// What went wrong, for the log.
    pub message: String,
}

impl ConnectError {
    /// An error with its reply code.
    pub fn new(reply: Reply, message: impl Into<String>) -> Self {
        ConnectError {
            reply,
            message: message.into(),
        }
    }
}

/// Where requests go.
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `target`. For `Protocol::Udp` the stream carries datagrams framed
    /// as [`crate::udpframe`] says.
    fn connect(
        &self,
        protocol: Protocol,
        target: TargetAddr,
    ) -> BoxFuture<'static, Result<BoxStream, ConnectError>>;
}

/// Limits and timeouts of the SOCKS server.
#[derive(Debug, Clone)]
pub struct SocksConfig {
    /// Time for the greeting and the request together.
    pub handshake_timeout: Duration,
    /// Time for the connector to produce a stream.
    pub connect_timeout: Duration,
    /// How long to wait for the target's first bytes (or its refusal) before replying
    /// success anyway. Zero replies at once.
    pub target_wait: Duration,
    /// Splice limits for CONNECT streams.
    pub splice: SpliceLimits,
    /// Client connections served at once; further ones are closed on accept.
    pub max_connections: usize,
    /// Destinations one UDP association may talk to at once.
    pub max_udp_flows: usize,
    /// A UDP destination with no datagram either way for this long is closed.
    pub udp_idle: Duration,
}

impl Default for SocksConfig {
    fn default() -> Self {
        SocksConfig {
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            target_wait: Duration::ZERO,
            splice: SpliceLimits::default(),
            max_connections: 4096,
            max_udp_flows: 256,
            udp_idle: Duration::from_secs(120),
        }
    }
}

/// A SOCKSv5 server over a [`Connector`].
pub struct SocksServer {
    connector: Arc<dyn Connector>,
    config: SocksConfig,
}

impl std::fmt::Debug for SocksServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocksServer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Bytes read during the handshake beyond the request (a client that sends data early).
struct Handshake {
    request: Request,
    early: Vec<u8>,
}

/// How a handshake ended without a request to serve.
#[derive(Debug)]
enum Refused {
    /// Reply already sent (or the peer is gone): just close.
    Closed(String),
}

impl SocksServer {
    /// A server sending requests to `connector`.
    pub fn new(connector: Arc<dyn Connector>, config: SocksConfig) -> Arc<Self> {
        Arc::new(SocksServer { connector, config })
    }

    /// Accepts connections until `shutdown`; open connections are cut when it fires.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        self.serve_gated(listener, shutdown.clone(), shutdown, None)
            .await;
    }

    /// Accepts connections while `gate` is open (`None`: always) until `stop`, then lets the
    /// open ones run until they end or `cut` fires. During an upgrade's hand-over the
    /// successor accepts on the same socket meanwhile, so the connections in progress finish
    /// instead of breaking.
    pub async fn serve_gated(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        cut: CancellationToken,
        mut gate: Option<watch::Receiver<bool>>,
    ) {
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                accepted = wireleap_net::gate::accept(&listener, &mut gate) => match accepted {
                    Ok((tcp, _peer)) => {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(limit = self.config.max_connections, "SOCKS connection limit reached, closing a new connection");
                            continue;
                        };
                        let server = self.clone();
                        tasks.spawn(async move {
                            server.handle(tcp).await;
                            drop(permit);
                        });
                    }
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%err, "SOCKS accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        if !tasks.is_empty() && !cut.is_cancelled() {
            tracing::info!(
                open = tasks.len(),
                "SOCKS server stopped accepting; letting open connections finish"
            );
        }
        loop {
            tokio::select! {
                () = cut.cancelled() => break,
                next = tasks.join_next() => if next.is_none() { break },
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    /// Serves one client connection to the end.
    pub async fn handle(&self, mut tcp: TcpStream) {
        let _ = tcp.set_nodelay(true);
        let hs = match tokio::time::timeout(self.config.handshake_timeout, handshake(&mut tcp))
            .await
        {
            Ok(Ok(hs)) => hs,
            Ok(Err(Refused::Closed(why))) => {
                tracing::debug!(%why, "SOCKS handshake refused");
                return;
            }
            Err(_) => {
                tracing::debug!(after = ?self.config.handshake_timeout, "SOCKS handshake timed out");
                return;
            }
        };
        match hs.request.command {
            Command::Connect => self.connect(tcp, hs).await,
            Command::UdpAssociate => self.udp_associate(tcp, hs.request.addr).await,
            Command::Bind => {
                let _ = send_reply(&mut tcp, &ReplyMsg::error(Reply::CommandNotSupported)).await;
            }
        }
    }

    async fn connect(&self, mut tcp: TcpStream, hs: Handshake) {
        let target = hs.request.addr;
        if target.port() == 0 {
            let _ = send_reply(&mut tcp, &ReplyMsg::error(Reply::GeneralFailure)).await;
            return;
        }
        let connecting = self.connector.connect(Protocol::Tcp, target);
        let mut stream = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(err)) => {
                tracing::info!(reply = %err.reply, error = %err.message, "connection refused to SOCKS client");
                let _ = send_reply(&mut tcp, &ReplyMsg::error(err.reply)).await;
                return;
            }
            Err(_) => {
                tracing::info!(after = ?self.config.connect_timeout, "opening a circuit stream timed out");
                let _ = send_reply(&mut tcp, &ReplyMsg::error(Reply::TtlExpired)).await;
                return;
            }
        };
        if !hs.early.is_empty() && stream.write_all(&hs.early).await.is_err() {
            let _ = send_reply(&mut tcp, &ReplyMsg::error(Reply::GeneralFailure)).await;
            return;
        }
        // Reply only once the far end accepted the stream, so a refused target gets its
        // reply code instead of success-then-close (see the module doc).
        let early = match std::future::poll_fn(|cx| stream.poll_established(cx)).await {
            Ok(()) => self.early_bytes(&mut stream).await,
            Err(err) => Err(err),
        };
        let first = match early {
            Ok(Early::Bytes(first)) => first,
            Ok(Early::Closed) => {
                // Accepted and closed at once: success, then EOF.
                let ok = success(&tcp);
                let _ = send_reply(&mut tcp, &ok).await;
                let _ = tcp.shutdown().await;
                return;
            }
            Err(err) => {
                let reply = stream.failure_reply(&err);
                tracing::info!(%reply, error = %err, "target refused");
                let _ = send_reply(&mut tcp, &ReplyMsg::error(reply)).await;
                return;
            }
        };
        let ok = success(&tcp);
        if send_reply(&mut tcp, &ok).await.is_err() {
            return;
        }
        if !first.is_empty() && tcp.write_all(&first).await.is_err() {
            return;
        }
        match splice(&mut tcp, &mut stream, &self.config.splice, |_, _| {}).await {
            Ok(t) => tracing::debug!(up = t.a_to_b, down = t.b_to_a, "SOCKS stream ended"),
            Err(err) => tracing::debug!(%err, "SOCKS stream ended with error"),
        }
    }

    /// The optional extra wait ([`SocksConfig::target_wait`]) for what the target sends
    /// first on an established stream.
    async fn early_bytes(&self, stream: &mut BoxStream) -> io::Result<Early> {
        if self.config.target_wait.is_zero() {
            return Ok(Early::Bytes(Vec::new()));
        }
        let mut buf = vec![0u8; 16 << 10];
        match tokio::time::timeout(self.config.target_wait, stream.read(&mut buf)).await {
            Err(_) => Ok(Early::Bytes(Vec::new())),
            Ok(Ok(0)) => Ok(Early::Closed),
            Ok(Ok(n)) => {
                buf.truncate(n);
                Ok(Early::Bytes(buf))
            }
            Ok(Err(err)) => Err(err),
        }
    }

    async fn udp_associate(&self, mut tcp: TcpStream, requested: TargetAddr) {
        let (local, peer) = match (tcp.local_addr(), tcp.peer_addr()) {
            (Ok(l), Ok(p)) => (l, p),
            _ => return,
        };
        let sock = match UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await {
            Ok(s) => Arc::new(s),
            Err(err) => {
                tracing::warn!(%err, "cannot bind a UDP relay socket");
                let _ = send_reply(&mut tcp, &ReplyMsg::error(Reply::GeneralFailure)).await;
                return;
            }
        };
        let bound = match sock.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        let reply = ReplyMsg {
            reply: Reply::Succeeded,
            bound: TargetAddr::Ip(bound),
        };
        if send_reply(&mut tcp, &reply).await.is_err() {
            return;
        }
        // Datagrams are accepted only from the control connection's host, and from the
        // announced port when the client named one (RFC 1928 §7).
        let expected_port = match &requested {
            TargetAddr::Ip(sa) if sa.port() != 0 => Some(sa.port()),
            _ => None,
        };
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let mut flows: HashMap<TargetAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
        let mut tasks: JoinSet<TargetAddr> = JoinSet::new();
        let mut ctl = [0u8; 64];
        let mut buf = vec![0u8; 65_536];
        loop {
            tokio::select! {
                read = tcp.read(&mut ctl) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {} // Nothing is defined on the control connection; ignore.
                },
                received = sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    if from.ip() != peer.ip() || expected_port.is_some_and(|p| p != from.port()) {
                        tracing::debug!("UDP datagram from a foreign address dropped");
                        continue;
                    }
                    if let Ok(mut c) = client.lock() {
                        *c = Some(from);
                    }
                    let datagram = buf.get(..n).unwrap_or_default();
                    let header = match codec::decode_udp(datagram) {
                        Ok(h) => h,
                        Err(err) => {
                            tracing::debug!(%err, "malformed SOCKS UDP datagram dropped");
                            continue;
                        }
                    };
                    if header.frag != 0 {
                        tracing::debug!(frag = header.frag, "fragmented SOCKS UDP datagram dropped");
                        continue;
                    }
                    let payload = datagram.get(header.header_len..).unwrap_or_default().to_vec();
                    let tx = match flows.get(&header.addr) {
                        Some(tx) if !tx.is_closed() => tx.clone(),
                        _ => {
                            if flows.len() >= self.config.max_udp_flows {
                                tracing::warn!(limit = self.config.max_udp_flows, "UDP destination limit reached, datagram dropped");
                                continue;
                            }
                            let (tx, rx) = mpsc::channel(64);
                            let flow = UdpFlow {
                                connector: self.connector.clone(),
                                target: header.addr.clone(),
                                sock: sock.clone(),
                                client: client.clone(),
                                idle: self.config.udp_idle,
                                connect_timeout: self.config.connect_timeout,
                            };
                            tasks.spawn(flow.run(rx));
                            flows.insert(header.addr.clone(), tx.clone());
                            tx
                        }
                    };
                    // A full queue drops the datagram, as a congested network would.
                    let _ = tx.try_send(payload);
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(target) = done {
                        if flows.get(&target).is_some_and(mpsc::Sender::is_closed) {
                            flows.remove(&target);
                        }
                    }
                }
            }
        }
        tasks.abort_all();
    }
}

/// One UDP destination of an association: a `udp` stream from the connector, datagrams
/// framed both ways.
struct UdpFlow {
    connector: Arc<dyn Connector>,
    target: TargetAddr,
    sock: Arc<UdpSocket>,
    client: Arc<Mutex<Option<SocketAddr>>>,
    idle: Duration,
    connect_timeout: Duration,
}

impl UdpFlow {
    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) -> TargetAddr {
        let connecting = self.connector.connect(Protocol::Udp, self.target.clone());
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(s)) => s,
            Ok(Err(err)) => {
                tracing::info!(error = %err.message, "UDP stream could not be opened");
                return self.target;
            }
            Err(_) => {
                tracing::info!("opening a UDP stream timed out");
                return self.target;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        let idle = tokio::time::sleep(self.idle);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                datagram = rx.recv() => {
                    let Some(d) = datagram else { break };
                    let Ok(frame) = udpframe::encode(&d) else { continue };
                    if wr.write_all(&frame).await.is_err() {
                        break;
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + self.idle);
                }
                read = rd.read(&mut chunk) => {
                    let n = match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    let mut used = 0;
                    while let Some((payload, len)) = udpframe::decode(pending.get(used..).unwrap_or_default()) {
                        let to = self.client.lock().ok().and_then(|c| *c);
                        if let (Some(to), Ok(d)) = (to, codec::encode_udp(&self.target, payload)) {
                            let _ = self.sock.send_to(&d, to).await;
                        }
                        used += len;
                    }
                    pending.drain(..used);
                    idle.as_mut().reset(tokio::time::Instant::now() + self.idle);
                }
                () = &mut idle => break,
            }
        }
        // Closing the receiver tells the association this destination is gone.
        rx.close();
        self.target
    }
}

fn success(tcp: &TcpStream) -> ReplyMsg {
    ReplyMsg {
        reply: Reply::Succeeded,
        bound: tcp
            .local_addr()
            .map(TargetAddr::Ip)
            .unwrap_or_else(|_| TargetAddr::unspecified()),
    }
}

async fn send_reply(tcp: &mut TcpStream, msg: &ReplyMsg) -> io::Result<()> {
    let bytes = msg
        .encode()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    tcp.write_all(&bytes).await?;
    if msg.reply != Reply::Succeeded {
        // Errors end the conversation (RFC 1928 §6: close shortly after a failure reply).
        let _ = tcp.shutdown().await;
    }
    Ok(())
}

/// Reads greeting and request into one bounded buffer. Extra bytes after the request are
/// kept for the target.
async fn handshake(tcp: &mut TcpStream) -> Result<Handshake, Refused> {
    let mut buf = [0u8; codec::MAX_GREETING + codec::MAX_REQUEST];
    let mut len = 0;
    let (greeting, used): (Greeting, usize) = loop {
        match codec::decode_greeting(&buf[..len]) {
            Ok(Some(g)) => break g,
            Ok(None) => len = read_more(tcp, &mut buf, len).await?,
            Err(err) => {
                let _ = write_close(tcp, &[VERSION, METHOD_NONE_ACCEPTABLE]).await;
                return Err(Refused::Closed(err.to_string()));
            }
        }
    };
    if !greeting.offers_no_auth() {
        let _ = write_close(tcp, &[VERSION, METHOD_NONE_ACCEPTABLE]).await;
        return Err(Refused::Closed(format!(
            "client offers no usable method (offered {:?})",
            greeting.methods
        )));
    }
    tcp.write_all(&[VERSION, METHOD_NO_AUTH])
        .await
        .map_err(|e| Refused::Closed(e.to_string()))?;
    buf.copy_within(used..len, 0);
    len -= used;
    loop {
        match codec::decode_request(&buf[..len]) {
            Ok(Some((request, used))) => {
                return Ok(Handshake {
                    request,
                    early: buf[used..len].to_vec(),
                })
            }
            Ok(None) => len = read_more(tcp, &mut buf, len).await?,
            Err(err) => {
                let _ = send_reply(tcp, &ReplyMsg::error(err.reply())).await;
                return Err(Refused::Closed(describe(&err)));
            }
        }
    }
}

fn describe(err: &SocksError) -> String {
    format!("{err} (answered {})", err.reply())
}

async fn read_more(tcp: &mut TcpStream, buf: &mut [u8], len: usize) -> Result<usize, Refused> {
    let Some(free) = buf.get_mut(len..).filter(|b| !b.is_empty()) else {
        // Unreachable with a buffer sized for the largest greeting plus request.
        return Err(Refused::Closed("handshake larger than its buffer".into()));
    };
    match tcp.read(free).await {
        Ok(0) => Err(Refused::Closed("client closed during the handshake".into())),
        Ok(n) => Ok(len + n),
        Err(e) => Err(Refused::Closed(e.to_string())),
    }
}

async fn write_close(tcp: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    tcp.write_all(bytes).await?;
    tcp.shutdown().await
}

/// The reply for a local connect error.
pub fn io_reply(err: &io::Error) -> Reply {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
        io::ErrorKind::TimedOut => Reply::TtlExpired,
        io::ErrorKind::PermissionDenied => Reply::NotAllowed,
        _ => Reply::HostUnreachable,
    }
}
