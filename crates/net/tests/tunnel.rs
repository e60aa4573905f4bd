//! End-to-end tunnel tests over real TLS on 127.0.0.1 (ephemeral ports).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::Method;
use sha2::{Digest as _, Sha256};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use wireleap_net::tls::{self, TlsError};
use wireleap_net::tunnel::{status_of, Keepalive, ServeConfig, Session, TunnelError};

fn vector(name: &str) -> serde_json::Value {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let dirs = [
        std::env::var("WIRELEAP_VECTORS").unwrap_or_default(),
        format!("{manifest}/../../vectors"),
        format!("{manifest}/../../../shared/vectors"),
    ];
    let text = dirs
        .iter()
        .filter(|d| !d.is_empty())
        .find_map(|d| std::fs::read_to_string(format!("{d}/{name}")).ok())
        .expect("vector file found (set WIRELEAP_VECTORS to the vectors directory)");
    serde_json::from_str(&text).unwrap()
}

/// Polls `cond` until it holds or `limit` passes.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_1_3_with_h2_and_pin_is_enforced() {
    let relay = start_relay(1, ServeConfig::default()).await;
    let addr = relay.addr.to_string();

    // Matching pin.
    let tcp = tls::dial_tcp(&addr, T).await.unwrap();
    let stream = tls::dial_tls(tcp, None, Some(relay.pubkey), T)
        .await
        .unwrap();
    let conn = stream.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    // Both ends prefer AES-128-GCM (cheaper per nested layer).
    assert_eq!(
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );

    // No pin: any certificate (still with a verified handshake signature).
    let tcp = tls::dial_tcp(&addr, T).await.unwrap();
    tls::dial_tls(tcp, Some("relay.test"), None, T)
        .await
        .unwrap();

    // Wrong pin: a typed error naming both keys.
    let other = wireleap_proto::keys::Keypair::from_seed([9u8; 32])
        .public()
        .0;
    let tcp = tls::dial_tcp(&addr, T).await.unwrap();
    match tls::dial_tls(tcp, None, Some(other), T).await {
        Err(TlsError::PinMismatch(pm)) => {
            assert_eq!(pm.expected, other);
            assert_eq!(pm.got, Some(relay.pubkey));
            let text = pm.to_string();
            assert!(text.contains(&wireleap_proto::b64::encode(other)), "{text}");
        }
        Err(e) => panic!("expected a pin mismatch, got {e}"),
        Ok(_) => panic!("a wrong pin was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_only_when_a_name_is_given() {
    let id = identity(3);
    for name in [None, Some("relay.example.org")] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cfg = id.tls.clone();
        let server = AbortOnDrop(tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let s = tls::accept_tls(cfg, tcp, T).await.unwrap();
            s.get_ref().1.server_name().map(str::to_string)
        }));
        let tcp = tls::dial_tcp(&addr, T).await.unwrap();
        let _client = tls::dial_tls(tcp, name, Some(id.pubkey), T).await.unwrap();
        let mut server = server;
        let seen = tokio::time::timeout(T, &mut server.0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.as_deref(), name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_times_out_against_a_silent_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _hold = AbortOnDrop(tokio::spawn(async move {
        let (_tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    }));
    let tcp = tls::dial_tcp(&addr, T).await.unwrap();
    let started = Instant::now();
    let err = tls::dial_tls(tcp, None, None, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hop_echo_roundtrip() {
    let echo = echo_server().await;
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    let mut stream = session
        .open("/", format!("CONNECT {}", echo.addr).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(stream.status_slot().get(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_without_tls() {
    let echo = echo_server().await;
    let relay = start_relay_with(1, ServeConfig::default(), false).await;
    let tcp = tls::dial_tcp(&relay.addr.to_string(), T).await.unwrap();
    let session = Session::handshake(tcp, session_config()).await.unwrap();
    let stream = session
        .open(
            "https://relay.test/any/path",
            format!("CONNECT {}", echo.addr).as_bytes(),
        )
        .await
        .unwrap();
    let data = pattern(100_000, 7);
    assert_eq!(echo_through(stream, data.clone()).await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfer_keeps_integrity() {
    const SIZE: usize = 64 << 20;
    let echo = echo_server().await;
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    let stream = session
        .open("/", format!("CONNECT {}", echo.addr).as_bytes())
        .await
        .unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let mut hash = Sha256::new();
        let mut sent = 0usize;
        let mut seed = 1u64;
        while sent < SIZE {
            let chunk = pattern((SIZE - sent).min(1 << 20), seed);
            seed += 1;
            hash.update(&chunk);
            w.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        w.shutdown().await.unwrap();
        hash.finalize()
    });
    let reader = async {
        let mut hash = Sha256::new();
        let mut got = 0usize;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            got += n;
        }
        (got, hash.finalize())
    };
    let (got, got_hash) = tokio::time::timeout(Duration::from_secs(240), reader)
        .await
        .expect("64 MiB echo finished in time");
    let sent_hash = writer.await.unwrap();
    assert_eq!(got, SIZE);
    assert_eq!(got_hash, sent_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nested_hops() {
    let echo = echo_server().await;
    let relay_a = start_relay(1, ServeConfig::default()).await;
    let relay_b = start_relay(6, ServeConfig::default()).await;
    let session_a = connect(&relay_a).await;

    // Hop A carries raw bytes to B; our TLS with B runs inside it, pinned to B's key.
    let to_b = session_a
        .open("/", format!("CONNECT {}", relay_b.addr).as_bytes())
        .await
        .unwrap();
    let slot_a = to_b.status_slot();
    let session_b = connect_inner(to_b, relay_b.pubkey).await;
    let stream = session_b
        .open("/", format!("CONNECT {}", echo.addr).as_bytes())
        .await
        .unwrap();
    let data = pattern(4 << 20, 11);
    let back = echo_through(stream, data.clone()).await;
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    assert_eq!(back.len(), data.len());
    assert_eq!(slot_a.get(), None);
    assert_eq!(relay_a.counters.streams(), 1, "the A->B hop is still open");

    // A pin for the wrong relay fails inside the tunnel too.
    let to_b = session_a
        .open("/", format!("CONNECT {}", relay_b.addr).as_bytes())
        .await
        .unwrap();
    let err = tls::dial_tls(to_b, None, Some(relay_a.pubkey), T)
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::PinMismatch(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wl_status_trailer_reaches_the_client_as_a_typed_error() {
    let v = vector("tunnel_loopback.json");
    let case = v["client_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "control_server_wl_status_without_newline")
        .unwrap();
    let status = case["server_sets_wl_status"].as_str().unwrap();
    let expected = case["client_read_result"]["status"].as_str().unwrap();

    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;

    // Status with no body.
    let mut stream = session
        .open("/", format!("FAIL {status}").as_bytes())
        .await
        .unwrap();
    let slot = stream.status_slot();
    let mut buf = Vec::new();
    let err = stream.read_to_end(&mut buf).await.unwrap_err();
    assert!(buf.is_empty());
    assert_eq!(status_of(&err), Some(expected));
    assert!(matches!(TunnelError::from_io(&err), Some(TunnelError::Status(s)) if s == expected));
    assert_eq!(slot.get(), Some(expected));
    // Sticky: the next read reports the same status, never a clean EOF.
    let err2 = stream.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(status_of(&err2), Some(expected));

    // Status after data: the data arrives first, then the error.
    let mut stream = session
        .open("/", format!("DATAFAIL {status}").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let err = stream.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(got, b"data");
    assert_eq!(status_of(&err), Some(expected));
}

/// `poll_established`: open once headers came alone, refused when a status follows them
/// (trailer or header block), body bytes already there stay for the next read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_reports_acceptance_without_waiting_for_the_target() {
    async fn established(s: &mut wireleap_net::tunnel::TunnelStream) -> std::io::Result<()> {
        let fut = std::future::poll_fn(|cx| s.poll_established(cx));
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .expect("poll_established hung")
    }
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;

    // An echo target that never speaks first: established as soon as it is connected.
    let echo = echo_server().await;
    let mut stream = session
        .open("/", format!("CONNECT {}", echo.addr).as_bytes())
        .await
        .unwrap();
    established(&mut stream).await.unwrap();
    stream.write_all(b"after").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after");

    // Refused: the status, not success, every time (the status rides in the header block
    // too, so it does not depend on the trailer arriving in the same read).
    for _ in 0..200 {
        let mut stream = session.open("/", b"FAIL refused by test").await.unwrap();
        let err = established(&mut stream).await.unwrap_err();
        assert_eq!(status_of(&err), Some("refused by test"));
        // ...and later reads agree.
        let err = stream.read(&mut [0u8; 4]).await.unwrap_err();
        assert_eq!(status_of(&err), Some("refused by test"));
    }

    // Refused with the status in the header block (older relays).
    let mut stream = session.open("/", b"HEADERSTATUS old style").await.unwrap();
    let err = established(&mut stream).await.unwrap_err();
    assert_eq!(status_of(&err), Some("old style"));

    // Data that arrived with the headers is kept for the next read.
    let mut stream = session.open("/", b"CLOSE").await.unwrap();
    established(&mut stream).await.unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");

    // A silent relay: bounded by the response timeout like a read.
    let cfg = wireleap_net::tunnel::SessionConfig {
        response_timeout: Duration::from_millis(300),
        ..session_config()
    };
    let session = connect_with(&relay, cfg).await;
    let mut stream = session.open("/", b"SILENT").await.unwrap();
    let err = established(&mut stream).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wl_status_in_the_header_block_is_understood_too() {
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    let mut stream = session
        .open("/", b"HEADERSTATUS {\"code\":502}")
        .await
        .unwrap();
    let err = stream.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert_eq!(status_of(&err), Some("{\"code\":502}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_newline_is_refused_and_can_be_resent() {
    let mut relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    let mut stream = session.open("/", b"NEWLINE oops").await.unwrap();
    let err = stream.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert_eq!(status_of(&err), Some("oops"));
    match tokio::time::timeout(T, relay.events.recv()).await.unwrap() {
        Some(Event::NewlineRefused(text)) => assert!(text.contains("wl-status"), "{text}"),
        other => panic!("expected the newline refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_put_gets_the_callers_405_reply() {
    let v = vector("wl_payload.json");
    let case = v["relay_handler_responses"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "method_not_put")
        .unwrap();
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    for method in [Method::GET, Method::POST] {
        let resp = session.request_plain(method, "/", None).await.unwrap();
        assert_eq!(
            resp.status.as_u16() as u64,
            case["response"]["status"].as_u64().unwrap()
        );
        assert_eq!(
            resp.body,
            case["response"]["body"].as_str().unwrap().as_bytes()
        );
        for (name, value) in case["response"]["headers"].as_object().unwrap() {
            assert_eq!(
                resp.headers.get(name.as_str()).unwrap().to_str().unwrap(),
                value.as_str().unwrap()
            );
        }
    }
    assert_eq!(
        relay.counters.total_streams(),
        0,
        "no handler ran for non-PUT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_a_plain_reply() {
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    let resp = session
        .request_plain(Method::PUT, "/", Some(b"PING"))
        .await
        .unwrap();
    assert_eq!(resp.status, http::StatusCode::OK);
    assert_eq!(resp.body, PONG_BODY.as_bytes());
    assert_eq!(
        resp.headers.get("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_response_then_rst_no_error_is_a_clean_eof() {
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    let mut stream = session.open("/", b"CLOSE").await.unwrap();
    // The request body stays open: the relay finishes without reading it, so h2 follows the
    // response with RST_STREAM(NO_ERROR). The write may lose the race with that reset and
    // fail with a broken pipe; the read side must still end cleanly.
    let _ = stream.write_all(&[0u8; 1000]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_stream_is_an_error_not_eof() {
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    let mut stream = session.open("/", b"ABORT").await.unwrap();
    let err = stream.read_to_end(&mut Vec::new()).await.unwrap_err();
    assert_eq!(status_of(&err), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers_wait_is_bounded() {
    let relay = start_relay(1, ServeConfig::default()).await;
    let cfg = wireleap_net::tunnel::SessionConfig {
        response_timeout: Duration::from_millis(300),
        ..session_config()
    };
    let session = connect_with(&relay, cfg).await;
    let mut stream = session.open("/", b"SILENT").await.unwrap();
    let started = Instant::now();
    let err = stream.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_share_one_session() {
    let echo = echo_server().await;
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = Arc::new(connect(&relay).await);
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let session = session.clone();
        let payload = format!("CONNECT {}", echo.addr);
        tasks.push(tokio::spawn(async move {
            let stream = session.open("/", payload.as_bytes()).await.unwrap();
            let data = pattern(20_000 + i as usize * 100, i + 1);
            let back = echo_through(stream, data.clone()).await;
            assert_eq!(back, data, "stream {i}");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(relay.counters.total_connections(), 1);
    assert_eq!(relay.counters.total_streams(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_an_open_stream() {
    let echo = echo_server().await;
    let mut relay = start_relay(
        1,
        ServeConfig {
            drain_timeout: Duration::from_secs(20),
            ..ServeConfig::default()
        },
    )
    .await;
    let session = connect(&relay).await;
    let mut stream = session
        .open("/", format!("CONNECT {}", echo.addr).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf).await.unwrap();

    relay.signal_shutdown();
    // New connections are no longer accepted... (a probe that connects before the listener
    // closes becomes a connection of its own, which the drain counts too)
    let mut probes_connected = 0usize;
    let refused = eventually(Duration::from_secs(5), || {
        let connected =
            std::net::TcpStream::connect_timeout(&relay.addr, Duration::from_millis(200)).is_ok();
        probes_connected += usize::from(connected);
        !connected
    })
    .await;
    assert!(refused, "listener closed after shutdown");
    // ...and the session takes no new streams once the client has seen the GOAWAY. A stream
    // sent before that is legitimately accepted (h2's first GOAWAY announces the highest
    // stream id, the final one follows a PING round trip) and must then be served fully.
    let late = session
        .open("/", format!("CONNECT {}", echo.addr).as_bytes())
        .await;
    if let Ok(mut late) = late {
        // A refused stream fails its write or its read; an accepted one echoes.
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            late.write_all(b"late").await?;
            let mut buf = [0u8; 4];
            late.read_exact(&mut buf).await?;
            late.shutdown().await?;
            late.read_to_end(&mut Vec::new()).await?;
            std::io::Result::Ok(buf)
        })
        .await
        .expect("a stream opened during the drain is answered, not left hanging");
        if let Ok(echoed) = outcome {
            assert_eq!(&echoed, b"late", "an accepted late stream is served");
        }
    }
    // Once the client has seen the GOAWAY, new streams are refused (bounded: a server that
    // never sent one fails here).
    let mut refused_stream = false;
    for _ in 0..50 {
        match session
            .open("/", format!("CONNECT {}", echo.addr).as_bytes())
            .await
        {
            Err(_) => refused_stream = true,
            Ok(mut s) => {
                let r = tokio::time::timeout(Duration::from_secs(10), async {
                    s.write_all(b"x").await?;
                    s.read_exact(&mut [0u8; 1]).await?;
                    s.shutdown().await?;
                    s.read_to_end(&mut Vec::new()).await
                })
                .await
                .expect("a stream opened during the drain is answered, not left hanging");
                refused_stream = r.is_err();
            }
        }
        if refused_stream {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused_stream, "new streams are refused after the GOAWAY");
    // ...but the open stream keeps working until the client ends it.
    stream.write_all(b"after").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after");
    assert!(
        eventually(Duration::from_secs(5), || relay.counters.streams() == 1).await,
        "only the first stream is still open: {}",
        relay.counters.streams()
    );
    stream.shutdown().await.unwrap();
    stream.read_to_end(&mut Vec::new()).await.unwrap();

    let report = tokio::time::timeout(Duration::from_secs(15), relay.drained())
        .await
        .expect("drain finished before its deadline");
    assert_eq!(report.aborted, 0);
    assert!(
        (1..=1 + probes_connected).contains(&report.drained),
        "drained {} connections: the session and at most {probes_connected} probes",
        report.drained
    );
    assert_eq!(relay.counters.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_streams_that_do_not_end() {
    let echo = echo_server().await;
    let mut relay = start_relay(
        1,
        ServeConfig {
            drain_timeout: Duration::from_millis(500),
            ..ServeConfig::default()
        },
    )
    .await;
    let session = connect(&relay).await;
    let mut stream = session
        .open("/", format!("CONNECT {}", echo.addr).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"x").await.unwrap();
    stream.read_exact(&mut [0u8; 1]).await.unwrap();
    let started = Instant::now();
    let report = relay.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.aborted, 1);
    assert_eq!(relay.counters.connections(), 0);
    assert_eq!(relay.counters.streams(), 0);
    assert!(stream.read_to_end(&mut Vec::new()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_the_server_tasks() {
    let echo = echo_server().await;
    let relay = start_relay(1, ServeConfig::default()).await;
    {
        let session = connect(&relay).await;
        let mut stream = session
            .open("/", format!("CONNECT {}", echo.addr).as_bytes())
            .await
            .unwrap();
        stream.write_all(b"x").await.unwrap();
        stream.read_exact(&mut [0u8; 1]).await.unwrap();
        assert_eq!(relay.counters.streams(), 1);
        // Dropping everything closes the TCP connection without any HTTP/2 goodbye.
    }
    assert!(
        eventually(Duration::from_secs(10), || relay.counters.connections()
            == 0
            && relay.counters.streams() == 0)
        .await,
        "connections={} streams={}",
        relay.counters.connections(),
        relay.counters.streams()
    );
}

/// A transport that can be frozen: it then neither reads nor writes, like a peer that
/// vanished without closing its TCP connection.
struct Freezable<S> {
    inner: S,
    frozen: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Freezable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Freezable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.frozen.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_is_detected_by_keepalive() {
    let echo = echo_server().await;
    let relay = start_relay(
        1,
        ServeConfig {
            keepalive: Some(Keepalive {
                interval: Duration::from_millis(200),
                timeout: Duration::from_millis(300),
            }),
            handler_grace: Duration::from_millis(500),
            ..ServeConfig::default()
        },
    )
    .await;
    let frozen = Arc::new(AtomicBool::new(false));
    let tcp = tls::dial_tcp(&relay.addr.to_string(), T).await.unwrap();
    let tls = tls::dial_tls(tcp, None, Some(relay.pubkey), T)
        .await
        .unwrap();
    let session = Session::handshake(
        Freezable {
            inner: tls,
            frozen: frozen.clone(),
        },
        wireleap_net::tunnel::SessionConfig {
            keepalive: None,
            ..session_config()
        },
    )
    .await
    .unwrap();
    let mut stream = session
        .open("/", format!("CONNECT {}", echo.addr).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"x").await.unwrap();
    stream.read_exact(&mut [0u8; 1]).await.unwrap();
    frozen.store(true, Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(10), || relay.counters.connections()
            == 0
            && relay.counters.streams() == 0)
        .await,
        "connections={} streams={}",
        relay.counters.connections(),
        relay.counters.streams()
    );
    drop(stream);
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_handshakes_is_dropped() {
    let relay = start_relay(
        1,
        ServeConfig {
            handshake_timeout: Duration::from_millis(300),
            ..ServeConfig::default()
        },
    )
    .await;
    let _silent = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || relay
            .counters
            .total_connections()
            == 1)
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || relay.counters.connections() == 0).await,
        "handshake timeout closes the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_sessions_notice() {
    let relay = start_relay(
        1,
        ServeConfig {
            idle_timeout: Some(Duration::from_millis(300)),
            ..ServeConfig::default()
        },
    )
    .await;
    let session = connect(&relay).await;
    assert!(eventually(Duration::from_secs(5), || relay.counters.connections() == 0).await);
    assert!(eventually(Duration::from_secs(5), || session.is_closed()).await);
    let err = session.open("/", b"PING").await.unwrap_err();
    assert!(matches!(err, TunnelError::SessionClosed), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_payload_and_uri_are_refused_locally() {
    let relay = start_relay(1, ServeConfig::default()).await;
    let session = connect(&relay).await;
    let err = session.open("/", b"bad\r\nvalue").await.unwrap_err();
    assert!(matches!(err, TunnelError::InvalidHeader { .. }), "{err}");
    let err = session.open("not a uri", b"PING").await.unwrap_err();
    assert!(matches!(err, TunnelError::InvalidUri(_)), "{err}");
    assert_eq!(relay.counters.total_streams(), 0);
}
