//! The data path of a real relay (in-process, real listeners, real database): PING, bytes
//! through one and three relays, UDP, and every refusal with the status the client sees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::Method;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wireleap_net::tunnel::{Session, SessionConfig};
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::{Protocol, WlPayload};
use wireleap_relay::config::Role;
use wireleap_relay::store::TokenState;
use wireleap_relay::ShutdownMode;

#[tokio::test]
async fn ping_answers_pong_with_the_relay_key() {
    let c = fake_contract(2).await;
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Backing)])).await;
    let tcp = wireleap_net::tls::dial_tcp(&relay.addr.to_string(), T)
        .await
        .unwrap();
    let tls = wireleap_net::tls::dial_tls(tcp, None, Some(relay.pubkey().0), T)
        .await
        .unwrap();
    let session = Session::handshake(tls, SessionConfig::default())
        .await
        .unwrap();
    let resp = session
        .request_plain(
            Method::PUT,
            "/",
            Some(WlPayload::ping().to_header_value().as_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let expected = Status::pong(&relay.pubkey()).text();
    assert_eq!(std::str::from_utf8(&resp.body).unwrap(), expected);
    // Non-PUT: 405 status reply.
    let resp = session.request_plain(Method::GET, "/", None).await.unwrap();
    assert_eq!(resp.status, 405);
    assert!(std::str::from_utf8(&resp.body)
        .unwrap()
        .contains("HTTP method not allowed"));
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn bytes_round_trip_through_one_relay_and_the_token_is_stored() {
    let c = fake_contract(2).await;
    let echo = echo_server().await;
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Backing)])).await;
    let token = fresh_token(&c, relay.pubkey());
    let hops = [Hop {
        addr: relay.addr,
        pubkey: relay.pubkey(),
        payload: connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            token.clone(),
        ),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut io, &data).await, data);
    // Half-close: the echo server ends, the relay finishes cleanly (no wl-status).
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(T, io.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());

    let stored = relay.handle().status().await.sharetokens.unwrap();
    assert_eq!(stored.pending, 1);
    let rt = relay.rt.take().unwrap();
    let handle = rt.handle();
    assert!(handle.streams().total >= 1);
    rt.shutdown(ShutdownMode::Stop).await;
    // The token is in the database after the relay stopped.
    let db = wireleap_store::Db::open_sqlite(&relay.dir.path().join("relay.db"))
        .await
        .unwrap();
    let store = wireleap_relay::store::TokenStore::open(db).await.unwrap();
    let list = store.list(Some(TokenState::Pending)).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].token, token);
}

#[tokio::test]
async fn three_relays_chained_with_nested_tls() {
    let c = fake_contract(2).await;
    let echo = echo_server().await;
    let mut relays = Vec::new();
    for (seed, role) in [(1, Role::Fronting), (6, Role::Entropic), (7, Role::Backing)] {
        let port = free_port();
        relays.push(start_relay(seed, config(port, &[(&c.base, role)])).await);
    }
    let hops: Vec<Hop> = relays
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let remote = match relays.get(i + 1) {
                Some(next) => next.address().to_string(),
                None => format!("target://{}", echo.addr),
            };
            Hop {
                addr: r.addr,
                pubkey: r.pubkey(),
                payload: connect_payload(Protocol::Tcp, &remote, fresh_token(&c, r.pubkey())),
            }
        })
        .collect();
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    for size in [1usize, 1000, 300_000] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(round_trip(&mut io, &data).await, data);
    }
    for r in &relays {
        let counts = r.handle().status().await.sharetokens.unwrap();
        assert_eq!(counts.pending, 1, "each relay stored its own token");
    }
    drop(io);
    for mut r in relays {
        r.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
    }
}

#[tokio::test]
async fn udp_datagrams_through_a_relay() {
    let c = fake_contract(2).await;
    let (udp, _task) = udp_echo().await;
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Backing)])).await;
    let hops = [Hop {
        addr: relay.addr,
        pubkey: relay.pubkey(),
        payload: connect_payload(
            Protocol::Udp,
            &format!("target://{udp}"),
            fresh_token(&c, relay.pubkey()),
        ),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    for n in [5usize, 1400, 0, 20_000] {
        let payload = vec![n as u8; n];
        io.write_all(&wireleap_relay::udp::encode_frame(&payload).unwrap())
            .await
            .unwrap();
        let mut buf = Vec::new();
        let got = tokio::time::timeout(T, wireleap_relay::udp::read_frame(&mut io, &mut buf))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..got], &payload[..]);
    }
    drop(io);
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn refusals_carry_the_right_status() {
    let c = fake_contract(2).await;
    let other = fake_contract(9).await;
    let echo = echo_server().await;
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Backing)])).await;
    let me = relay.pubkey();
    let target = format!("target://{}", echo.addr);
    let check = |s: &Status, code: u16, text: &str, origin: &str| {
        assert_eq!(s.code, code, "{s:?}");
        assert!(s.description.contains(text), "{s:?} should say {text:?}");
        assert_eq!(s.origin.as_deref(), Some(origin), "{s:?}");
    };
    let me_b64 = me.to_b64();

    // Tampered token: client signature fails.
    let mut bad = fresh_token(&c, me);
    bad.timestamp += 1;
    let s = refusal(
        relay.addr,
        me,
        &connect_payload(Protocol::Tcp, &target, bad),
    )
    .await;
    check(&s, 400, "sharetoken client signature is invalid", &me_b64);

    // For another relay.
    let t = fresh_token(&c, other.key.public());
    let s = refusal(relay.addr, me, &connect_payload(Protocol::Tcp, &target, t)).await;
    check(&s, 400, "relay public key mismatch", &me_b64);

    // Expired: settlement already open.
    let t = token(&c, me, now() - 1, now() + 100);
    let s = refusal(relay.addr, me, &connect_payload(Protocol::Tcp, &target, t)).await;
    check(&s, 400, "sharetoken is expired", &me_b64);

    // A contract this relay does not serve.
    let t = fresh_token(&other, me);
    let s = refusal(relay.addr, me, &connect_payload(Protocol::Tcp, &target, t)).await;
    check(&s, 400, "relay contract not found", &me_b64);

    // Replay: the first use works, the second is refused.
    let t = fresh_token(&c, me);
    let payload = connect_payload(Protocol::Tcp, &target, t);
    let (mut first, _s1) = one_hop(relay.addr, me, &payload).await;
    first.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    tokio::time::timeout(T, first.read_exact(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&b, b"ping");
    let s = refusal(relay.addr, me, &payload).await;
    check(&s, 400, "duplicate sharetoken", &me_b64);

    // Unparsable payload.
    let s = refusal(relay.addr, me, "{\"command\":\"CONNECT\"").await;
    check(&s, 400, "could not parse payload header", &me_b64);
    // CONNECT without token.
    let s = refusal(
        relay.addr,
        me,
        &format!("{{\"command\":\"CONNECT\",\"protocol\":\"tcp\",\"remote\":\"{target}\"}}"),
    )
    .await;
    check(&s, 400, "needs a sharetoken", &me_b64);

    // Target refuses the connection: 502 from the target.
    let closed = free_port();
    let t = fresh_token(&c, me);
    let s = refusal(
        relay.addr,
        me,
        &connect_payload(Protocol::Tcp, &format!("target://127.0.0.1:{closed}"), t),
    )
    .await;
    check(&s, 502, "dial tcp", "target");

    // Next relay unreachable: 502 from this relay (a circuit error for the client).
    let t = fresh_token(&c, me);
    let s = refusal(
        relay.addr,
        me,
        &connect_payload(Protocol::Tcp, &format!("wireleap://127.0.0.1:{closed}"), t),
    )
    .await;
    check(&s, 502, "dial tcp", &me_b64);
    assert!(s.is_circuit_error());

    // UDP to a relay remote is refused.
    let t = fresh_token(&c, me);
    let s = refusal(
        relay.addr,
        me,
        &connect_payload(Protocol::Udp, &relay.address().to_string(), t),
    )
    .await;
    check(&s, 400, "only allowed for target", &me_b64);

    let refused = relay.handle().status().await.refused_sharetokens;
    assert!(refused >= 5, "refusals counted: {refused}");
    drop(first);
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn loopback_and_private_targets_are_refused_unless_allowed() {
    let c = fake_contract(2).await;
    let echo = echo_server().await;
    let port = free_port();
    let mut cfg = config(port, &[(&c.base, Role::Backing)]);
    cfg.danger_zone.allow_loopback = false;
    let mut relay = start_relay(1, cfg).await;
    let me = relay.pubkey();
    for target in [
        format!("target://{}", echo.addr),
        format!("target://localhost:{}", echo.addr.port()),
        format!("target://[::ffff:127.0.0.1]:{}", echo.addr.port()),
        "target://10.1.2.3:80".to_string(),
        "target://169.254.169.254:80".to_string(),
    ] {
        let s = refusal(
            relay.addr,
            me,
            &connect_payload(Protocol::Tcp, &target, fresh_token(&c, me)),
        )
        .await;
        assert_eq!(s.code, 400, "{target}: {s:?}");
        assert_eq!(s.origin.as_deref(), Some("target"), "{target}: {s:?}");
        assert!(s.description.contains("not allowed"), "{s:?}");
    }
    // The refused streams still stored their tokens first (they were valid payments).
    assert_eq!(
        relay.handle().status().await.sharetokens.unwrap().pending,
        5
    );
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn open_streams_drain_on_shutdown() {
    let c = fake_contract(2).await;
    let echo = echo_server().await;
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Backing)])).await;
    let hops = [Hop {
        addr: relay.addr,
        pubkey: relay.pubkey(),
        payload: connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            fresh_token(&c, relay.pubkey()),
        ),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    assert_eq!(round_trip(&mut io, b"before").await, b"before");
    let rt = relay.rt.take().unwrap();
    let stopping = tokio::spawn(rt.shutdown(ShutdownMode::HandOver));
    // The open stream keeps working during the drain...
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(round_trip(&mut io, b"during").await, b"during");
    // ...and new connections are no longer accepted.
    assert!(tokio::net::TcpStream::connect(relay.addr).await.is_err());
    drop(io);
    drop(keep);
    let report = tokio::time::timeout(T, stopping).await.unwrap().unwrap();
    assert_eq!(report.mode, ShutdownMode::HandOver);
}
