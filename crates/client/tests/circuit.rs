//! The data path through real tunnels: SOCKS → dialer → 1 or 3 relays (crates/net tunnel
//! servers that verify each sharetoken with proto) → echo servers. Covers nesting, per-hop
//! tokens, refusal mapping to SOCKS replies, circuit reset on relay errors, key pinning and
//! UDP ASSOCIATE through the circuit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{relay, socks_connect, tcp_echo, udp_echo, Mode, StaticNetwork};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use wireleap::dialer::{DialError, Dialer, DialerConfig};
use wireleap::socks::codec::{self, Command, Request, TargetAddr};
use wireleap::socks::{Reply, SocksConfig, SocksServer};
use wireleap_daemon::CancellationToken;
use wireleap_proto::relayentry::Role;
use wireleap_proto::wl_payload::Protocol;

fn config(hops: usize) -> DialerConfig {
    DialerConfig {
        hops,
        whitelist: None,
        timeout: Duration::from_secs(5),
    }
}

struct Socks {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Socks {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn socks(dialer: &Arc<Dialer>) -> Socks {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = SocksServer::new(Arc::new(dialer.clone()), SocksConfig::default());
    tokio::spawn(server.serve(l, stop.clone()));
    Socks { addr, stop }
}

async fn echo_roundtrip(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut got))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(got, msg);
}

#[tokio::test]
async fn one_hop_socks_connect_echo() {
    let backing = relay(11, Role::Backing).await;
    let net = StaticNetwork::new(&[&backing]);
    let dialer = Dialer::new(net.clone(), config(1));
    let s = socks(&dialer).await;
    let (echo, _e) = tcp_echo().await;
    let (reply, mut c) = socks_connect(s.addr, TargetAddr::Ip(echo)).await;
    assert_eq!(reply, Reply::Succeeded);
    echo_roundtrip(&mut c, b"hello through one hop").await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    echo_roundtrip(&mut c, &big).await;
    assert_eq!(
        backing.accepted.load(Ordering::Relaxed),
        1,
        "one token for the one hop"
    );
    // A second connection reuses the circuit and pays again.
    let (reply, mut c2) =
        socks_connect(s.addr, TargetAddr::Domain("localhost".into(), echo.port())).await;
    assert_eq!(reply, Reply::Succeeded);
    echo_roundtrip(&mut c2, b"again").await;
    assert_eq!(backing.accepted.load(Ordering::Relaxed), 2);
    let id = dialer.circuit().unwrap().id;
    assert_eq!(dialer.circuit().unwrap().hops.len(), 1);
    drop((c, c2));
    let (_, mut c3) = socks_connect(s.addr, TargetAddr::Ip(echo)).await;
    echo_roundtrip(&mut c3, b"same circuit").await;
    assert_eq!(dialer.circuit().unwrap().id, id);
}

#[tokio::test]
async fn three_hops_nest_and_pay_every_relay() {
    let fronting = relay(21, Role::Fronting).await;
    let entropic = relay(22, Role::Entropic).await;
    let backing = relay(23, Role::Backing).await;
    let net = StaticNetwork::new(&[&fronting, &entropic, &backing]);
    let dialer = Dialer::new(net.clone(), config(3));
    let s = socks(&dialer).await;
    let (echo, _e) = tcp_echo().await;
    for i in 0..3 {
        let (reply, mut c) = socks_connect(s.addr, TargetAddr::Ip(echo)).await;
        assert_eq!(reply, Reply::Succeeded);
        echo_roundtrip(&mut c, format!("three hops #{i}").as_bytes()).await;
    }
    let circuit = dialer.circuit().unwrap();
    let roles: Vec<Role> = circuit.hops.iter().map(|h| h.role).collect();
    assert_eq!(roles, [Role::Fronting, Role::Entropic, Role::Backing]);
    for r in [&fronting, &entropic, &backing] {
        assert_eq!(
            r.accepted.load(Ordering::Relaxed),
            3,
            "{:?} got one token per connection",
            r.role
        );
    }
}

#[tokio::test]
async fn target_refusal_maps_to_socks_reply() {
    let fronting = relay(31, Role::Fronting).await;
    let backing = relay(32, Role::Backing).await;
    let net = StaticNetwork::new(&[&fronting, &backing]);
    let dialer = Dialer::new(net.clone(), config(2));
    let s = socks(&dialer).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (reply, _c) = socks_connect(s.addr, TargetAddr::Ip(([127, 0, 0, 1], port).into())).await;
    assert_eq!(reply, Reply::ConnectionRefused);
    // A target error is not the circuit's fault.
    let id = dialer.circuit().unwrap().id;
    let (echo, _e) = tcp_echo().await;
    let (reply, mut c) = socks_connect(s.addr, TargetAddr::Ip(echo)).await;
    assert_eq!(reply, Reply::Succeeded);
    echo_roundtrip(&mut c, b"still fine").await;
    assert_eq!(dialer.circuit().unwrap().id, id);
}

#[tokio::test]
async fn relay_errors_reset_the_circuit() {
    use wireleap::socks::ProxyStream as _;
    let a = relay(41, Role::Backing).await;
    let b = relay(42, Role::Backing).await;
    let net = StaticNetwork::new(&[&a, &b]);
    // Pin the choice to `a` so the test is deterministic.
    let only_a = DialerConfig {
        whitelist: Some(vec![a.address().to_string()]),
        ..config(1)
    };
    let dialer = Dialer::new(net.clone(), only_a.clone());
    let (echo, _e) = tcp_echo().await;
    let mut one = [0u8; 1];

    // A 502 from the relay (origin = the relay): a circuit error.
    a.set_mode(Mode::Fail(502, "next hop down"));
    let mut s = dialer
        .open(Protocol::Tcp, &TargetAddr::Ip(echo))
        .await
        .unwrap();
    let c1 = dialer.circuit().unwrap().id;
    let _ = s.write_all(b"x").await;
    let err = tokio::time::timeout(Duration::from_secs(10), s.read(&mut one))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(s.failure_reply(&err), Reply::NetworkUnreachable);
    let status = s.status().expect("the wl-status trailer arrived");
    assert_eq!(status.code, 502);
    assert_eq!(status.origin.as_deref(), Some(a.pubkey.to_b64().as_str()));
    assert!(
        dialer.circuit().is_none(),
        "circuit dropped after a relay error"
    );
    assert_eq!(
        net.failures.load(Ordering::Relaxed),
        1,
        "directory refresh asked for"
    );

    // A 400 (the client's own fault) does not condemn the circuit.
    a.set_mode(Mode::Fail(400, "bad token"));
    let mut s = dialer
        .open(Protocol::Tcp, &TargetAddr::Ip(echo))
        .await
        .unwrap();
    let c2 = dialer.circuit().unwrap().id;
    assert_ne!(c1, c2);
    let _ = s.write_all(b"x").await;
    let err = tokio::time::timeout(Duration::from_secs(10), s.read(&mut one))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(s.failure_reply(&err), Reply::GeneralFailure);
    assert_eq!(dialer.circuit().map(|c| c.id), Some(c2));

    // Back to normal, and without the pin the other relay is usable too.
    a.set_mode(Mode::Normal);
    let mut s = dialer
        .open(Protocol::Tcp, &TargetAddr::Ip(echo))
        .await
        .unwrap();
    s.write_all(b"y").await.unwrap();
    s.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"y");
    let _ = &b;
}

#[tokio::test]
async fn pinned_keys_are_enforced() {
    let real = relay(51, Role::Backing).await;
    let impostor_key = wireleap_proto::keys::Keypair::from_seed([52; 32]).public();
    let mut entry = real.entry();
    entry.pubkey = Some(impostor_key);
    let mut list = wireleap_proto::relaylist::RelayList::default();
    list.insert(entry);
    let net = StaticNetwork::new(&[]);
    *net.relays.lock().unwrap() = Arc::new(list);
    let dialer = Dialer::new(net.clone(), config(1));
    let (echo, _e) = tcp_echo().await;
    let err = dialer
        .open(Protocol::Tcp, &TargetAddr::Ip(echo))
        .await
        .unwrap_err();
    assert!(matches!(err, DialError::FirstHop { .. }), "{err}");
    assert!(err.to_string().contains("mismatch"), "{err}");
    assert_eq!(err.reply(), Reply::NetworkUnreachable);
    assert_eq!(real.accepted.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn empty_whitelist_is_refused_with_not_allowed() {
    let backing = relay(61, Role::Backing).await;
    let net = StaticNetwork::new(&[&backing]);
    let dialer = Dialer::new(
        net.clone(),
        DialerConfig {
            whitelist: Some(vec![]),
            ..config(1)
        },
    );
    let s = socks(&dialer).await;
    let (echo, _e) = tcp_echo().await;
    let (reply, _c) = socks_connect(s.addr, TargetAddr::Ip(echo)).await;
    assert_eq!(reply, Reply::NotAllowed);
    assert!(dialer.last_error().unwrap().1.contains("whitelist"));
    // A whitelist naming the relay (plus one the directory does not know) works.
    dialer.set_config(DialerConfig {
        whitelist: Some(vec![
            backing.address().to_string(),
            "wireleap://gone.invalid:1".into(),
        ]),
        ..config(1)
    });
    let (reply, mut c) = socks_connect(s.addr, TargetAddr::Ip(echo)).await;
    assert_eq!(reply, Reply::Succeeded);
    echo_roundtrip(&mut c, b"whitelisted").await;
}

#[tokio::test]
async fn udp_associate_through_three_hops() {
    let fronting = relay(71, Role::Fronting).await;
    let entropic = relay(72, Role::Entropic).await;
    let backing = relay(73, Role::Backing).await;
    let net = StaticNetwork::new(&[&fronting, &entropic, &backing]);
    let dialer = Dialer::new(net.clone(), config(3));
    let s = socks(&dialer).await;
    let (echo, _e) = udp_echo().await;
    let mut ctl = TcpStream::connect(s.addr).await.unwrap();
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
    let TargetAddr::Ip(relay_addr) = reply.bound else {
        panic!()
    };
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 70_000];
    for msg in [&b"ping"[..], &[7u8; 1200][..], b"pong"] {
        client
            .send_to(
                &codec::encode_udp(&TargetAddr::Ip(echo), msg).unwrap(),
                relay_addr,
            )
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
            .await
            .expect("datagram echoed through the circuit")
            .unwrap();
        let h = codec::decode_udp(&buf[..n]).unwrap();
        assert_eq!(h.addr, TargetAddr::Ip(echo));
        assert_eq!(&buf[h.header_len..n], msg);
    }
    // One UDP stream per destination: each relay was paid once.
    assert_eq!(backing.accepted.load(Ordering::Relaxed), 1);
}
