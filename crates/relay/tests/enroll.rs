//! Enrollment, heartbeats, upgrade notices, disenrollment, reload and settlement of a real
//! relay against a fake contract + directory that answers with the reply shapes recorded from
//! the original (vectors/enroll_replies.json): PoW challenge, OK status, upgrade notice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use http::Method;
use std::time::Duration;
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::Protocol;
use wireleap_relay::config::Role;
use wireleap_relay::store::TokenState;
use wireleap_relay::ShutdownMode;

#[tokio::test]
async fn enrolls_with_pow_heartbeats_and_disenrolls_on_stop() {
    let c = fake_contract(2).await;
    c.set(|s| s.pow_cost = Some(4));
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Fronting)])).await;
    assert!(relay.handle().all_enrolled());
    // Enrolled, then at least two heartbeats (1 s interval).
    eventually(T, "two heartbeats", || {
        c.requests()
            .iter()
            .filter(|r| !r.has_dir_version && r.pow_answered)
            .count()
            >= 2
    })
    .await;
    let reqs = c.requests();
    let first = &reqs[0];
    assert_eq!(first.method, Method::POST);
    assert!(
        first.has_dir_version,
        "enroll carries the relay-dir version"
    );
    assert!(!first.pow_answered);
    let answered = &reqs[1];
    assert!(answered.pow_answered);
    assert_ne!(
        first.idempotency_key, answered.idempotency_key,
        "fresh key after PoW"
    );
    let e = &first.entry;
    assert_eq!(e.pubkey, Some(relay.pubkey()));
    assert_eq!(e.role, Some(Role::Fronting));
    assert_eq!(
        e.address.as_ref().unwrap().as_str(),
        format!("wireleap://127.0.0.1:{port}")
    );
    assert_eq!(e.upgrade_channel.as_deref(), Some("default"));
    assert_eq!(
        e.versions.software.as_ref().map(ToString::to_string),
        Some(env!("CARGO_PKG_VERSION").to_string())
    );
    assert!(e.versions.client_relay.is_some() && e.versions.relay_dir.is_some());

    let status = relay.handle().status().await;
    assert_eq!(status.relay_status.len(), 1);
    assert!(status.relay_status[0].enrolled);
    assert_eq!(status.relay_status[0].id, Some(c.key.public().to_b64()));
    assert_eq!(status.relay_status[0].info, "live");

    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
    let reqs = c.requests();
    let last = reqs.last().unwrap();
    assert_eq!(last.method, Method::DELETE);
    assert!(!last.has_idempotency_key && !last.has_dir_version);
}

#[tokio::test]
async fn hand_over_does_not_disenroll() {
    let c = fake_contract(2).await;
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Backing)])).await;
    let handle = relay.handle();
    handle.set_shutdown_mode(ShutdownMode::HandOver);
    let report = relay
        .rt
        .take()
        .unwrap()
        .shutdown(handle.shutdown_mode())
        .await;
    assert_eq!(report.mode, ShutdownMode::HandOver);
    assert!(c.requests().iter().all(|r| r.method == Method::POST));
}

#[tokio::test]
async fn upgrade_notices_reach_the_channel() {
    let c = fake_contract(2).await;
    c.set(|s| s.upgrade_to = Some("9.1.0".into()));
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Backing)])).await;
    let mut notices = relay.handle().take_upgrade_notices().unwrap();
    let n = tokio::time::timeout(T, notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.version, semver::Version::new(9, 1, 0));
    assert_eq!(n.channel, "default");
    assert_eq!(n.contract, c.base);
    let status = relay.handle().status().await;
    assert_eq!(
        status
            .upgrade
            .notice
            .as_ref()
            .map(|n| n.version.to_string()),
        Some("9.1.0".into())
    );
    // Still enrolled: a notice is a successful heartbeat.
    assert!(status.relay_status[0].enrolled);
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn unreachable_contract_is_retried_while_others_serve() {
    let good = fake_contract(2).await;
    let late_port = free_port();
    let late_url = format!("http://127.0.0.1:{late_port}");
    let echo = echo_server().await;
    let port = free_port();
    let mut cfg = config(
        port,
        &[(&good.base, Role::Backing), (&late_url, Role::Backing)],
    );
    cfg.contracts.get_mut(&good.base).unwrap().upgrade_channel = Some("default".into());
    let mut relay = start_relay(1, cfg).await;
    let me = relay.pubkey();
    // The good contract serves at once.
    let hops = [Hop {
        addr: relay.addr,
        pubkey: me,
        payload: connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            fresh_token(&good, me),
        ),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    assert_eq!(round_trip(&mut io, b"x").await, b"x");
    let status = relay.handle().status().await;
    let late = status
        .relay_status
        .iter()
        .find(|s| s.url == late_url)
        .unwrap();
    assert!(!late.enrolled && late.last_error.is_some());

    // The late contract comes up; the relay enrolls with it on its next try.
    let late_contract = fake_contract_on(4, late_port).await;
    eventually(
        Duration::from_secs(20),
        "enrollment with the late contract",
        || !late_contract.requests().is_empty(),
    )
    .await;
    let h = relay.handle();
    let mut enrolled = false;
    for _ in 0..100 {
        if h.all_enrolled() {
            enrolled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(enrolled);
    drop(io);
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn cached_contract_info_serves_when_the_contract_is_down_at_restart() {
    let port = free_port();
    let c = fake_contract(2).await;
    let url = c.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(port, &[(&url, Role::Backing)]);
    let relay = start_relay_in(1, &mut cfg, dir).await;
    let TestRelay { mut rt, dir, .. } = relay;
    rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
    drop(c);
    // Contract gone; its /info is cached: tokens of it are accepted.
    let relay = start_relay_in(1, &mut cfg, dir).await;
    let status = relay.handle().status().await;
    assert_eq!(status.relay_status[0].info, "cached");
    let contract_key = wireleap_proto::keys::Keypair::from_seed([2; 32]);
    let echo = echo_server().await;
    let sk = wireleap_proto::keys::Keypair::generate();
    let section = wireleap_proto::servicekey::ContractSection::new_signed(
        &contract_key,
        now() + 600,
        now() + 700,
    );
    let t = wireleap_proto::sharetoken::Sharetoken::new_signed(
        &sk,
        section,
        relay.pubkey(),
        now(),
        wireleap_proto::nonce::generate(32),
    );
    let hops = [Hop {
        addr: relay.addr,
        pubkey: relay.pubkey(),
        payload: connect_payload(Protocol::Tcp, &format!("target://{}", echo.addr), t),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    assert_eq!(round_trip(&mut io, b"cached").await, b"cached");
}

#[tokio::test]
async fn directory_refusal_is_reported_and_retried() {
    let c = fake_contract(2).await;
    c.set(|s| s.refuse = Some(Status::bad_enrollment_key()));
    let port = free_port();
    let mut relay = start_relay(1, config(port, &[(&c.base, Role::Backing)])).await;
    let status = relay.handle().status().await;
    assert!(!status.relay_status[0].enrolled);
    let err = status.relay_status[0].last_error.clone().unwrap();
    assert!(err.contains("enrollment key is incorrect"), "{err}");
    c.set(|s| s.refuse = None);
    eventually(
        Duration::from_secs(15),
        "enrollment after the refusal",
        || relay.handle().all_enrolled(),
    )
    .await;
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn reload_adds_updates_and_removes_contracts_without_dropping_streams() {
    let a = fake_contract(2).await;
    let b = fake_contract(4).await;
    let echo = echo_server().await;
    let port = free_port();
    let cfg = config(port, &[(&a.base, Role::Backing)]);
    let mut relay = start_relay(1, cfg.clone()).await;
    let me = relay.pubkey();
    let hops = [Hop {
        addr: relay.addr,
        pubkey: me,
        payload: connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            fresh_token(&a, me),
        ),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    assert_eq!(round_trip(&mut io, b"1").await, b"1");

    // Add b (with the channel, as two contracts need exactly one) and change a's address.
    let mut two = config(port, &[(&a.base, Role::Backing), (&b.base, Role::Backing)]);
    two.contracts.get_mut(&a.base).unwrap().upgrade_channel = Some("stable".into());
    two.contracts.get_mut(&a.base).unwrap().address =
        wireleap_proto::address::Address::parse("wireleap://relay.example:443").unwrap();
    relay.rt().reload(two).await;
    eventually(T, "enrollment with b", || !b.requests().is_empty()).await;
    eventually(T, "a's new address sent", || {
        a.requests().iter().any(|r| {
            r.entry.address.as_ref().map(|x| x.as_str()) == Some("wireleap://relay.example:443")
                && r.entry.upgrade_channel.as_deref() == Some("stable")
        })
    })
    .await;
    assert_eq!(round_trip(&mut io, b"2").await, b"2");

    // Remove a: it is disenrolled, its tokens are no longer accepted, the open stream lives.
    let only_b = config(port, &[(&b.base, Role::Backing)]);
    relay.rt().reload(only_b).await;
    assert!(a.requests().iter().any(|r| r.method == Method::DELETE));
    let s = refusal(
        relay.addr,
        me,
        &connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            fresh_token(&a, me),
        ),
    )
    .await;
    assert!(s.description.contains("relay contract not found"), "{s:?}");
    assert_eq!(round_trip(&mut io, b"3").await, b"3");
    drop(io);
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn settleable_tokens_are_submitted_retried_and_archived() {
    let c = fake_contract(2).await;
    c.set(|s| s.submit_failures = 2);
    let echo = echo_server().await;
    let port = free_port();
    let mut cfg = config(port, &[(&c.base, Role::Backing)]);
    cfg.archive_dir = Some("archive".into());
    let mut relay = start_relay(1, cfg).await;
    let me = relay.pubkey();
    // Window opens in 2 s: accepted now, submittable then.
    let open = now() + 2;
    let t = token(&c, me, open, open + 3600);
    let hops = [Hop {
        addr: relay.addr,
        pubkey: me,
        payload: connect_payload(Protocol::Tcp, &format!("target://{}", echo.addr), t.clone()),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    assert_eq!(round_trip(&mut io, b"pay").await, b"pay");
    drop(io);
    // Two failures (500), then accepted on a later tick.
    eventually(Duration::from_secs(20), "submission accepted", || {
        !c.submits().is_empty()
    })
    .await;
    let (signer, got) = c.submits()[0].clone();
    assert_eq!(signer, me);
    assert_eq!(got, t);
    let h = relay.handle();
    let mut accepted = false;
    for _ in 0..100 {
        if h.status().await.sharetokens.unwrap().accepted == 1 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted);
    let archived = relay
        .dir
        .path()
        .join("archive")
        .join(c.key.public().to_b64())
        .join(format!("{}.json", t.signature.to_b64()));
    assert!(archived.exists(), "{}", archived.display());
    let rt = relay.rt.take().unwrap();
    rt.shutdown(ShutdownMode::Stop).await;
    let db = wireleap_store::Db::open_sqlite(&relay.dir.path().join("relay.db"))
        .await
        .unwrap();
    let store = wireleap_relay::store::TokenStore::open(db).await.unwrap();
    let list = store.list(Some(TokenState::Accepted)).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].attempts, 2, "two failed attempts before acceptance");
}

#[tokio::test]
async fn rest_api_on_a_unix_socket() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let c = fake_contract(2).await;
    let port = free_port();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("relay.sock");
    let mut cfg = config(port, &[(&c.base, Role::Backing)]);
    cfg.rest_api = Some(wireleap_relay::config::RestApi {
        address: format!("file://{}", sock.display()),
        socket_umask: "600".into(),
    });
    let mut relay = start_relay(1, cfg).await;
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let get = |method: &'static str| {
        let sock = sock.clone();
        async move {
            let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
            s.write_all(
                format!(
                    "{method} /api/status HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let resp = get("GET").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["pubkey"], relay.pubkey().to_b64());
    assert_eq!(v["controller_started"], true);
    assert_eq!(v["relay_status"][0]["enrolled"], true);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["streams"]["open"].is_number());
    assert!(v["network_usage"].is_null());
    let resp = get("POST").await;
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
    assert!(!sock.exists(), "socket removed at shutdown");
}

#[tokio::test]
async fn usage_cap_disenrolls_and_cuts_streams() {
    let c = fake_contract(2).await;
    let echo = echo_server().await;
    let port = free_port();
    let mut cfg = config(port, &[(&c.base, Role::Backing)]);
    cfg.network_usage = Some(wireleap_relay::config::NetworkUsage {
        timeframe: Some(wireleap_proto::duration::Duration::from_hours(24)),
        global_limit: None,
        write_interval: Some(wireleap_proto::duration::Duration::from_secs(1)),
        archive_dir: None,
    });
    cfg.contracts.get_mut(&c.base).unwrap().network_usage_limit =
        Some(wireleap_proto::bytesize::ByteSize(100_000));
    let mut relay = start_relay(1, cfg).await;
    let me = relay.pubkey();
    let hops = [Hop {
        addr: relay.addr,
        pubkey: me,
        payload: connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            fresh_token(&c, me),
        ),
    }];
    let mut keep = Vec::new();
    let mut io = circuit(&hops, &mut keep).await;
    // 60 KB each way = 120 KB > 93 % of 100 KB.
    let data = vec![7u8; 60_000];
    assert_eq!(round_trip(&mut io, &data).await, data);
    eventually(Duration::from_secs(20), "disenrollment at the cap", || {
        c.requests().iter().any(|r| r.method == Method::DELETE)
    })
    .await;
    // The open stream was cut (hard cap) and new ones are refused.
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(T, tokio::io::AsyncReadExt::read(&mut io, &mut buf))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "stream cut: {r:?}");
    let s = refusal(
        relay.addr,
        me,
        &connect_payload(
            Protocol::Tcp,
            &format!("target://{}", echo.addr),
            fresh_token(&c, me),
        ),
    )
    .await;
    assert!(
        s.description.contains("relay contract not available"),
        "{s:?}"
    );
    let status = relay.handle().status().await;
    assert!(status.relay_status[0].network_cap_reached);
    assert!(status.relay_status[0].network_usage >= 120_000);
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}

#[tokio::test]
async fn balance_and_withdraw_call_the_payout_api_signed() {
    use wireleap_relay::commands::{run, RelayCommand};
    let c = fake_contract(2).await;
    let dir = tempfile::tempdir().unwrap();
    let home = wireleap_daemon::Home::new(dir.path(), "wireleap-relay");
    let kp = wireleap_proto::keys::Keypair::from_seed([1; 32]);
    wireleap_daemon::keyfile::write_keypair(&home, &kp).unwrap();
    let cfg = config(free_port(), &[(&c.base, Role::Backing)]);
    std::fs::write(home.config_file(), serde_json::to_vec(&cfg).unwrap()).unwrap();
    run(&home, RelayCommand::Balance { contract: None })
        .await
        .unwrap();
    run(
        &home,
        RelayCommand::Withdraw {
            contract: c.base.clone(),
            destination: "acct_123".into(),
            amount: 5,
        },
    )
    .await
    .unwrap();
    let w = c.state.lock().unwrap().withdrawals.clone();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].0, kp.public());
    assert_eq!(
        w[0].1,
        serde_json::json!({"amount": 5, "type": "TODO", "destination": "acct_123"})
    );
    // Invalid requests never reach the contract.
    let e = run(
        &home,
        RelayCommand::Withdraw {
            contract: c.base.clone(),
            destination: "acct_123".into(),
            amount: 0,
        },
    )
    .await
    .unwrap_err();
    assert!(format!("{e:#}").contains("invalid withdrawal"), "{e:#}");
    let e = run(
        &home,
        RelayCommand::Balance {
            contract: Some("https://nope".into()),
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not a contract in config.json"));
    assert_eq!(c.state.lock().unwrap().withdrawals.len(), 1);
    run(&home, RelayCommand::Sharetokens { state: None })
        .await
        .unwrap();
}

#[tokio::test]
async fn rest_api_on_tcp_and_h2c_listener() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let c = fake_contract(2).await;
    let port = free_port();
    let rest_port = free_port();
    let h2c_port = free_port();
    let mut cfg = config(port, &[(&c.base, Role::Fronting)]);
    cfg.rest_api = Some(wireleap_relay::config::RestApi {
        address: format!("http://127.0.0.1:{rest_port}"),
        socket_umask: "600".into(),
    });
    cfg.h2c_address = Some(format!("127.0.0.1:{h2c_port}"));
    let mut relay = start_relay(1, cfg).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", rest_port))
        .await
        .unwrap();
    s.write_all(b"GET /api/status HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(&relay.pubkey().to_b64()));

    // h2c: plaintext HTTP/2 with prior knowledge, as a fronting web server speaks it.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", h2c_port))
        .await
        .unwrap();
    let session = wireleap_net::tunnel::Session::handshake(tcp, Default::default())
        .await
        .unwrap();
    let ping = wireleap_proto::wl_payload::WlPayload::ping().to_header_value();
    let resp = session
        .request_plain(Method::PUT, "/wireleap", Some(ping.as_bytes()))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        std::str::from_utf8(&resp.body).unwrap(),
        Status::pong(&relay.pubkey()).text()
    );
    let names: Vec<&str> = relay.rt().listener_fds().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["relay", "relay-h2c", "rest-api"]);
    relay.rt.take().unwrap().shutdown(ShutdownMode::Stop).await;
}
