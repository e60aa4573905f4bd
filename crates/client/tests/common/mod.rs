//! A relay built from `wireleap-net`'s tunnel server and `wireleap-proto`'s sharetoken
//! verification (protocol.md §14.3), for exercising the client's data path before the real
//! relay exists: it parses `wl-payload`, verifies the sharetoken for its own key and the
//! configured contract, refuses replays, dials `wireleap://` remotes and `target://` TCP or
//! UDP (datagrams framed as `udpframe`), splices, and reports failures in `wl-status` with
//! the right origin. Also: a static [`Network`] (servicekey + relay list) and echo servers.
//! Shared by the integration tests and the benchmark.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, StatusCode};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use wireleap::dialer::{DialError, Network};
use wireleap::servicekey::ActiveKey;
use wireleap::udpframe;
use wireleap_daemon::CancellationToken;
use wireleap_net::splice::{splice, SpliceLimits};
use wireleap_net::tunnel::{Handler, PlainReply, ServeConfig, Server, ServerStream, TunnelRequest};
use wireleap_proto::address::{Address, Scheme};
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::relayentry::{RelayEntry, Role};
use wireleap_proto::relaylist::RelayList;
use wireleap_proto::servicekey::{ContractSection, ServiceKey};
use wireleap_proto::sharetoken::{SharetokenId, VerifyContext};
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload;

/// The contract key every test relay trusts.
pub fn contract() -> Keypair {
    Keypair::from_seed([2; 32])
}

pub fn now() -> i64 {
    wireleap::servicekey::now()
}

/// A servicekey activated by [`contract`] that expires `lifetime` seconds from now.
pub fn servicekey(seed: u8, lifetime: i64) -> Arc<ActiveKey> {
    let now = now();
    Arc::new(ActiveKey {
        key: ServiceKey {
            keypair: Keypair::from_seed([seed; 32]),
            contract: ContractSection::new_signed(
                &contract(),
                now + lifetime,
                now + lifetime + 3600,
            ),
        },
        since: now,
    })
}

/// What a relay should do with CONNECTs (besides verifying the token).
#[derive(Clone, Debug)]
pub enum Mode {
    /// Dial and splice.
    Normal,
    /// Refuse every CONNECT with this status (origin set to the relay).
    Fail(u16, &'static str),
}

struct RelayHandler {
    keypair: Keypair,
    contracts: Vec<PublicKey>,
    seen: Mutex<HashSet<SharetokenId>>,
    accepted: Arc<AtomicUsize>,
    mode: Mutex<Mode>,
}

pub struct TestRelay {
    pub addr: SocketAddr,
    pub pubkey: PublicKey,
    pub role: Role,
    /// Sharetokens accepted (verified, for this relay, not replayed).
    pub accepted: Arc<AtomicUsize>,
    handler: Arc<RelayHandler>,
    stop: CancellationToken,
}

impl TestRelay {
    pub fn address(&self) -> Address {
        Address::parse(&format!("wireleap://{}", self.addr)).unwrap()
    }

    pub fn entry(&self) -> RelayEntry {
        RelayEntry::new(
            self.role,
            self.address(),
            self.pubkey,
            semver::Version::new(0, 6, 1),
        )
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.handler.mode.lock().unwrap() = mode;
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn status_value(s: &Status) -> String {
    s.to_trailer_value()
}

impl Handler for RelayHandler {
    fn tunnel(
        self: Arc<Self>,
        request: TunnelRequest,
        mut stream: ServerStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let me = self.keypair.public();
            let fail = |stream: &mut ServerStream, s: Status| {
                let _ = stream.finish_with_status(&status_value(&s));
            };
            let header = request
                .payload
                .as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            let req = match wl_payload::TunnelRequest::from_header(&header) {
                Ok(r) => r,
                Err(e) => {
                    return fail(
                        &mut stream,
                        Status::new(400, e.to_string()).with_origin_relay(&me),
                    )
                }
            };
            let (protocol, remote, token) = match req {
                wl_payload::TunnelRequest::Ping => {
                    let body = Status::pong(&me).text();
                    let _ = stream.reply_plain(PlainReply::text(StatusCode::OK, Bytes::from(body)));
                    return;
                }
                wl_payload::TunnelRequest::Connect {
                    protocol,
                    remote,
                    token,
                    ..
                } => (protocol, remote, token),
            };
            let ctx = VerifyContext::new(me, &self.contracts, now());
            if let Err(e) = token.verify(&ctx) {
                return fail(
                    &mut stream,
                    Status::new(400, "bad request")
                        .with_cause(e.to_string())
                        .with_origin_relay(&me),
                );
            }
            if !self.seen.lock().unwrap().insert(token.id()) {
                return fail(
                    &mut stream,
                    Status::new(400, "bad request")
                        .with_cause("duplicate sharetoken")
                        .with_origin_relay(&me),
                );
            }
            self.accepted.fetch_add(1, Ordering::Relaxed);
            if let Mode::Fail(code, cause) = self.mode.lock().unwrap().clone() {
                return fail(
                    &mut stream,
                    Status::new(code, "refused by test mode")
                        .with_cause(cause)
                        .with_origin_relay(&me),
                );
            }
            let to_target = remote.scheme() == Scheme::Target;
            let origin = |s: Status| {
                if to_target {
                    s.with_origin_target()
                } else {
                    s.with_origin_relay(&me)
                }
            };
            if protocol.is_udp() && to_target {
                return udp(stream, &remote.host_port()).await;
            }
            let tcp = match tokio::time::timeout(
                Duration::from_secs(5),
                TcpStream::connect(remote.host_port()),
            )
            .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    return fail(
                        &mut stream,
                        origin(
                            Status::new(502, "gateway is unreachable or down")
                                .with_cause(e.to_string()),
                        ),
                    )
                }
                Err(_) => return fail(&mut stream, origin(Status::new(408, "request timeout"))),
            };
            let _ = tcp.set_nodelay(true);
            let mut tcp = tcp;
            let _ = stream.send_headers();
            let limits = SpliceLimits::default();
            match splice(&mut stream, &mut tcp, &limits, |_, _| {}).await {
                Ok(_) => {
                    let _ = stream.finish_ok();
                }
                Err(e) if !stream.is_finished() => fail(
                    &mut stream,
                    origin(Status::new(410, "gone").with_cause(e.to_string())),
                ),
                Err(_) => {}
            }
        })
    }

    fn not_allowed(&self, _method: &Method) -> PlainReply {
        PlainReply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            Status::new(405, "HTTP method not allowed").text(),
        )
    }
}

/// Framed datagrams on the stream ↔ a UDP socket connected to the target.
async fn udp(mut stream: ServerStream, target: &str) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    if sock.connect(target).await.is_err() {
        let _ = stream.finish_with_status(
            &Status::new(502, "gateway is unreachable or down")
                .with_origin_target()
                .to_trailer_value(),
        );
        return;
    }
    let _ = stream.send_headers();
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 65_536];
    let mut dgram = vec![0u8; 65_536];
    loop {
        tokio::select! {
            n = stream.read(&mut chunk) => {
                let n = match n { Ok(0) | Err(_) => break, Ok(n) => n };
                pending.extend_from_slice(&chunk[..n]);
                let mut used = 0;
                while let Some((p, len)) = udpframe::decode(&pending[used..]) {
                    let _ = sock.send(p).await;
                    used += len;
                }
                pending.drain(..used);
            }
            n = sock.recv(&mut dgram) => {
                let Ok(n) = n else { break };
                if stream.write_all(&udpframe::encode(&dgram[..n]).unwrap()).await.is_err() { break; }
            }
        }
    }
    let _ = stream.finish_ok();
}

/// Starts a relay with identity seed `seed`.
pub async fn relay(seed: u8, role: Role) -> TestRelay {
    let keypair = Keypair::from_seed([seed; 32]);
    let rc = wireleap_net::cert::generate(&[seed; 32], SystemTime::now()).unwrap();
    let tls =
        wireleap_net::tls::server_config(rc.cert_pem.as_bytes(), rc.key_pem.as_bytes()).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(RelayHandler {
        keypair: keypair.clone(),
        contracts: vec![contract().public()],
        seen: Mutex::new(HashSet::new()),
        accepted: accepted.clone(),
        mode: Mutex::new(Mode::Normal),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = Server::new(handler.clone(), ServeConfig::default());
    let s = stop.clone();
    tokio::spawn(async move {
        server
            .serve(listener, Some(tls), async move { s.cancelled().await })
            .await;
    });
    TestRelay {
        addr,
        pubkey: keypair.public(),
        role,
        accepted,
        handler,
        stop,
    }
}

/// A fixed servicekey and relay list.
pub struct StaticNetwork {
    pub key: Mutex<Arc<ActiveKey>>,
    pub relays: Mutex<Arc<RelayList>>,
    pub failures: AtomicUsize,
}

impl StaticNetwork {
    pub fn new(relays: &[&TestRelay]) -> Arc<Self> {
        let mut list = RelayList::default();
        for r in relays {
            assert!(list.insert(r.entry()));
        }
        Arc::new(StaticNetwork {
            key: Mutex::new(servicekey(5, 3600)),
            relays: Mutex::new(Arc::new(list)),
            failures: AtomicUsize::new(0),
        })
    }
}

impl Network for StaticNetwork {
    fn servicekey(&self) -> BoxFuture<'_, Result<Arc<ActiveKey>, DialError>> {
        let k = self.key.lock().unwrap().clone();
        Box::pin(async move { Ok(k) })
    }
    fn relays(&self) -> Result<Arc<RelayList>, DialError> {
        Ok(self.relays.lock().unwrap().clone())
    }
    fn circuit_failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// A TCP echo server (stops when the token is cancelled or dropped with the guard).
pub async fn tcp_echo() -> (SocketAddr, CancellationToken) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = s.cancelled() => return,
                Ok((tcp, _)) = l.accept() => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(async move {
                        let (mut r, mut w) = tcp.into_split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    });
                }
            }
        }
    });
    (addr, stop)
}

/// A UDP echo server.
pub async fn udp_echo() -> (SocketAddr, CancellationToken) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            tokio::select! {
                () = s.cancelled() => return,
                r = sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r { let _ = sock.send_to(&buf[..n], from).await; }
                }
            }
        }
    });
    (addr, stop)
}

/// A TCP server that sends everything it reads to nowhere and counts it, and a server that
/// streams `n` bytes to whoever connects (for the benchmark).
pub async fn tcp_source(total: usize) -> (SocketAddr, CancellationToken) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = s.cancelled() => return,
                Ok((mut tcp, _)) = l.accept() => {
                    tokio::spawn(async move {
                        let chunk = vec![0x5au8; 256 << 10];
                        let mut left = total;
                        while left > 0 {
                            let n = left.min(chunk.len());
                            if tcp.write_all(&chunk[..n]).await.is_err() { return; }
                            left -= n;
                        }
                        let _ = tcp.shutdown().await;
                        let mut sink = [0u8; 16];
                        let _ = tcp.read(&mut sink).await;
                    });
                }
            }
        }
    });
    (addr, stop)
}

/// Greets a SOCKS server and sends a CONNECT to `target` (the request bytes, method first).
async fn socks_request(socks: SocketAddr, target: wireleap::socks::codec::TargetAddr) -> TcpStream {
    use wireleap::socks::codec::{Command, Request};
    let mut c = TcpStream::connect(socks).await.unwrap();
    let _ = c.set_nodelay(true);
    let mut bytes = vec![5, 1, 0];
    bytes.extend(
        Request {
            command: Command::Connect,
            addr: target,
        }
        .encode()
        .unwrap(),
    );
    c.write_all(&bytes).await.unwrap();
    c
}

/// CONNECTs through a SOCKS server and returns its reply code with the connection.
pub async fn socks_connect(
    socks: SocketAddr,
    target: wireleap::socks::codec::TargetAddr,
) -> (wireleap::socks::Reply, TcpStream) {
    let mut c = socks_request(socks, target).await;
    let mut method = [0u8; 2];
    c.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0]);
    let mut head = vec![0u8; 4];
    c.read_exact(&mut head).await.unwrap();
    let rest = match head[3] {
        1 => 6,
        4 => 18,
        _ => panic!("unexpected address type in {head:?}"),
    };
    let mut tail = vec![0u8; rest];
    c.read_exact(&mut tail).await.unwrap();
    head.extend(tail);
    let (reply, _) = wireleap::socks::codec::decode_reply(&head)
        .unwrap()
        .unwrap();
    (reply.reply, c)
}

/// CONNECTs to an IPv4 `target` through a SOCKS server and checks the method answer and
/// a success reply (within 5 s).
pub async fn socks_open(socks: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut c = socks_request(socks, wireleap::socks::codec::TargetAddr::Ip(target)).await;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut head))
        .await
        .expect("a SOCKS reply")
        .unwrap();
    assert_eq!(&head[..4], &[5, 0, 5, 0], "method, then success");
    c
}
