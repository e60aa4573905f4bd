//! The SOCKS server end to end over loopback sockets, with a connector that dials targets
//! directly (the circuit is tested in `circuit.rs`): exact reply bytes for good and bad
//! requests, limits, pipelining, and a UDP ASSOCIATE echo.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::socks_open;
use futures_util::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use wireleap::socks::codec::{self, Command, Request, TargetAddr};
use wireleap::socks::server::io_reply;
use wireleap::socks::{BoxStream, ConnectError, Connector, SocksConfig, SocksServer};
use wireleap::udpframe;
use wireleap_daemon::CancellationToken;
use wireleap_proto::wl_payload::Protocol;

/// Dials TCP targets directly; UDP targets through a local pipe that frames datagrams the
/// way a relay does.
struct Direct;

impl Connector for Direct {
    fn connect(
        &self,
        protocol: Protocol,
        target: TargetAddr,
    ) -> BoxFuture<'static, Result<BoxStream, ConnectError>> {
        Box::pin(async move {
            let addr = match target {
                TargetAddr::Ip(sa) => sa,
                TargetAddr::Domain(d, p) => tokio::net::lookup_host((d.as_str(), p))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        ConnectError::new(wireleap::socks::Reply::HostUnreachable, "no such host")
                    })?,
            };
            if protocol.is_udp() {
                return Ok(Box::new(udp_pipe(addr).await) as BoxStream);
            }
            match TcpStream::connect(addr).await {
                Ok(s) => Ok(Box::new(s) as BoxStream),
                Err(e) => Err(ConnectError::new(io_reply(&e), e.to_string())),
            }
        })
    }
}

/// A duplex stream whose far end turns frames into datagrams to `addr` and back.
async fn udp_pipe(addr: SocketAddr) -> PipeStream {
    let (near, mut far) = tokio::io::duplex(1 << 16);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        let mut dgram = vec![0u8; 1 << 16];
        loop {
            tokio::select! {
                n = far.read(&mut chunk) => {
                    let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                    pending.extend_from_slice(&chunk[..n]);
                    let mut used = 0;
                    while let Some((p, len)) = udpframe::decode(&pending[used..]) {
                        let _ = sock.send(p).await;
                        used += len;
                    }
                    pending.drain(..used);
                }
                n = sock.recv(&mut dgram) => {
                    let Ok(n) = n else { return };
                    if far.write_all(&udpframe::encode(&dgram[..n]).unwrap()).await.is_err() { return; }
                }
            }
        }
    });
    PipeStream(near)
}

struct PipeStream(tokio::io::DuplexStream);

impl tokio::io::AsyncRead for PipeStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PipeStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl wireleap::socks::ProxyStream for PipeStream {}

struct Fixture {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn server(config: SocksConfig) -> Fixture {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let srv = SocksServer::new(Arc::new(Direct), config);
    tokio::spawn(srv.serve(listener, stop.clone()));
    Fixture { addr, stop }
}

async fn echo() -> (SocketAddr, CancellationToken) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = s.cancelled() => return,
                Ok((tcp, _)) = l.accept() => {
                    tokio::spawn(async move {
                        let (mut r, mut w) = tcp.into_split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            }
        }
    });
    (addr, stop)
}

/// Sends `bytes`, returns everything the server sends until it closes (bounded by 5 s).
async fn exchange(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(server).await.unwrap();
    c.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("server closes the connection")
        .unwrap();
    got
}

/// The method answer, then an error reply with BND 0.0.0.0:0.
fn error_reply(code: u8) -> Vec<u8> {
    vec![5, 0, 5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[tokio::test]
async fn refusals_have_exact_bytes_and_close() {
    let f = server(SocksConfig::default()).await;
    // No acceptable method.
    assert_eq!(exchange(f.addr, &[5, 1, 2]).await, [5, 0xFF]);
    // Not SOCKS 5 (a SOCKS 4 client).
    assert_eq!(
        exchange(f.addr, &[4, 1, 0, 80, 127, 0, 0, 1, 0]).await,
        [5, 0xFF]
    );
    // Zero methods.
    assert_eq!(exchange(f.addr, &[5, 0]).await, [5, 0xFF]);
    let cases: [(&[u8], u8); 8] = [
        (&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80], 7),     // BIND
        (&[5, 9, 0, 1, 127, 0, 0, 1, 0, 80], 7),     // unknown command
        (&[5, 1, 0, 2, 1, 2, 3, 4, 0, 80], 8),       // unknown address type
        (&[5, 1, 1, 1, 127, 0, 0, 1, 0, 80], 1),     // reserved byte set
        (&[4, 1, 0, 1, 127, 0, 0, 1, 0, 80], 1),     // bad version in the request
        (&[5, 1, 0, 3, 0, 0, 80], 1),                // empty host name
        (&[5, 1, 0, 1, 127, 0, 0, 1, 0, 0], 1),      // port 0
        (&[5, 1, 0, 3, 3, b'a', 0, b'b', 0, 80], 1), // control character in the name
    ];
    for (req, code) in cases {
        let mut bytes = vec![5, 1, 0];
        bytes.extend_from_slice(req);
        assert_eq!(exchange(f.addr, &bytes).await, error_reply(code), "{req:?}");
    }
    // A 254-byte host name: refused as soon as its length byte arrives.
    let mut long = vec![5, 1, 0, 5, 1, 0, 3, 254];
    long.extend(std::iter::repeat_n(b'a', 254));
    long.extend_from_slice(&[0, 80]);
    assert_eq!(exchange(f.addr, &long).await, error_reply(1));
    // A refused target (a port nothing listens on).
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut req = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1];
    req.extend_from_slice(&port.to_be_bytes());
    assert_eq!(exchange(f.addr, &req).await, error_reply(5));
}

#[tokio::test]
async fn connect_pipelined_with_early_data() {
    let f = server(SocksConfig::default()).await;
    let (echo_addr, _stop) = echo().await;
    let mut bytes = vec![5, 1, 0];
    bytes.extend(
        Request {
            command: Command::Connect,
            addr: TargetAddr::Ip(echo_addr),
        }
        .encode()
        .unwrap(),
    );
    bytes.extend_from_slice(b"early ");
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    c.write_all(&bytes).await.unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..4], &[5, 0, 5, 0], "method, then success");
    let (reply, n) = codec::decode_reply(&head[2..]).unwrap().unwrap();
    assert_eq!(n, 10);
    assert_eq!(
        reply.bound,
        TargetAddr::Ip(f.addr),
        "BND is the local end of the socket"
    );
    c.write_all(b"bird").await.unwrap();
    let mut got = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"early bird");
}

#[tokio::test]
async fn slow_handshakes_are_cut() {
    let f = server(SocksConfig {
        handshake_timeout: Duration::from_millis(300),
        ..SocksConfig::default()
    })
    .await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    c.write_all(&[5, 1]).await.unwrap();
    let mut got = Vec::new();
    let t = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got))
        .await
        .expect("closed after the handshake timeout")
        .unwrap();
    assert!(got.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn garbage_never_takes_the_server_down() {
    use rand::{Rng as _, SeedableRng as _};
    let f = server(SocksConfig {
        handshake_timeout: Duration::from_millis(200),
        ..SocksConfig::default()
    })
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let len = rng.gen_range(0..600);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if rng.gen_bool(0.5) && bytes.len() > 3 {
            bytes[..3].copy_from_slice(&[5, 1, 0]);
        }
        let addr = f.addr;
        tasks.push(tokio::spawn(async move {
            if let Ok(mut c) = TcpStream::connect(addr).await {
                let _ = c.write_all(&bytes).await;
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut sink)).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Still serving.
    let (echo_addr, _stop) = echo().await;
    let mut c = TcpStream::connect(f.addr).await.unwrap();
    let mut bytes = vec![5, 1, 0];
    bytes.extend(
        Request {
            command: Command::Connect,
            addr: TargetAddr::Ip(echo_addr),
        }
        .encode()
        .unwrap(),
    );
    c.write_all(&bytes).await.unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0);
}

#[tokio::test]
async fn udp_associate_echo_and_teardown() {
    let f = server(SocksConfig::default()).await;
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let mut ctl = TcpStream::connect(f.addr).await.unwrap();
    let mut bytes = vec![5, 1, 0];
    bytes.extend(
        Request {
            command: Command::UdpAssociate,
            addr: TargetAddr::unspecified(),
        }
        .encode()
        .unwrap(),
    );
    ctl.write_all(&bytes).await.unwrap();
    let mut head = [0u8; 12];
    ctl.read_exact(&mut head).await.unwrap();
    let (reply, _) = codec::decode_reply(&head[2..]).unwrap().unwrap();
    assert_eq!(reply.reply, wireleap::socks::Reply::Succeeded);
    let TargetAddr::Ip(relay) = reply.bound else {
        panic!("IP BND")
    };
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 2048];
    for msg in [&b"one"[..], b"two", b""] {
        let d = codec::encode_udp(&TargetAddr::Ip(echo_addr), msg).unwrap();
        client.send_to(&d, relay).await.unwrap();
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("echo comes back")
            .unwrap();
        assert_eq!(from, relay);
        let h = codec::decode_udp(&buf[..n]).unwrap();
        assert_eq!(
            h.addr,
            TargetAddr::Ip(echo_addr),
            "source is the destination"
        );
        assert_eq!(&buf[h.header_len..n], msg);
    }
    // Fragments are dropped: nothing comes back for them.
    let mut frag = codec::encode_udp(&TargetAddr::Ip(echo_addr), b"frag").unwrap();
    frag[2] = 1;
    client.send_to(&frag, relay).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf))
            .await
            .is_err()
    );
    // Closing the control connection ends the association.
    drop(ctl);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = codec::encode_udp(&TargetAddr::Ip(echo_addr), b"late").unwrap();
    let _ = client.send_to(&d, relay).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf))
            .await
            .is_err()
    );
}

async fn roundtrip(c: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
    c.write_all(text).await?;
    let mut got = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo"))??;
    Ok(got)
}

/// The upgrade hand-over's view: nothing is accepted while the gate is closed (connections
/// wait in the backlog), and after `stop` the open tunnels keep working until `cut`.
#[tokio::test]
async fn gated_server_waits_for_its_gate_and_drains_until_cut() {
    let (echo_addr, _echo_stop) = echo().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, cut) = (CancellationToken::new(), CancellationToken::new());
    let _guard = Fixture {
        addr,
        stop: cut.clone(),
    };
    let (gate, rx) = tokio::sync::watch::channel(false);
    let srv = SocksServer::new(Arc::new(Direct), SocksConfig::default());
    let served = tokio::spawn(srv.serve_gated(listener, stop.clone(), cut.clone(), Some(rx)));

    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read_exact(&mut method));
    assert!(early.await.is_err(), "answered through a closed gate");
    gate.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), waiting.read_exact(&mut method))
        .await
        .expect("answered once the gate opened")
        .unwrap();
    assert_eq!(method, [5, 0]);

    let mut tunnel = socks_open(addr, echo_addr).await;
    assert_eq!(roundtrip(&mut tunnel, b"before").await.unwrap(), b"before");
    stop.cancel();
    // Stopped: no more accepting, but the open tunnel still carries data.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!served.is_finished(), "returned while a tunnel was open");
    assert_eq!(roundtrip(&mut tunnel, b"during").await.unwrap(), b"during");
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(&[5, 1, 0]).await?;
        let mut b = [0u8; 2];
        c.read_exact(&mut b).await.map(|_| b)
    })
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a stopped server answered a new connection: {refused:?}"
    );
    cut.cancel();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("returns once cut")
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the tunnel stays open after cut");
}
