//! The contract's HTTP API against a real server on 127.0.0.1 (ephemeral port), called with
//! `wireleap_api::ApiClient` as relays and clients call it, on every storage backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::routing::post;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wireleap_api::{ApiClient, ApiError, Identity, RetryPolicy};
use wireleap_contract::api::{BalanceReply, TokensReply};
use wireleap_contract::config::{Payout, PofIssuer};
use wireleap_contract::{router, ContractConfig, ContractState, ContractStore};
use wireleap_proto::contractinfo::ContractInfo;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::payout::{Withdrawal, WithdrawalRequest};
use wireleap_proto::pof::{ActivationRequest, Pof};
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::Sharetoken;
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface};
use wireleap_store::testing::TestDb;

const T0: i64 = 1_700_000_000;

fn issuer() -> Keypair {
    Keypair::from_seed([4; 32])
}

fn config() -> ContractConfig {
    serde_json::from_value(serde_json::json!({
        "address": "127.0.0.1:0",
        "endpoint": "http://127.0.0.1:1",
        "proof_of_funding": [{"type": "dummy", "pubkey": issuer().public()}],
        "servicekey": {"value": "1000", "currency": "usd", "duration": "10m"},
        "settlement": {"fee_percent": "5", "submission_window": "1h"},
        "directory": {"endpoint": "http://127.0.0.1:2", "public_key": Keypair::from_seed([8; 32]).public()},
        "metadata": {"name": "test contract"}
    }))
    .unwrap()
}

struct Server {
    url: String,
    state: Arc<ContractState>,
    clock: Arc<AtomicI64>,
    shutdown: CancellationToken,
    backend: &'static str,
    _db: TestDb,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
    fn set_time(&self, t: i64) {
        self.clock.store(t, Ordering::SeqCst);
    }
}

async fn start(db: TestDb, config: ContractConfig) -> Server {
    let store = ContractStore::open(db.db.clone()).await.unwrap();
    let clock = Arc::new(AtomicI64::new(T0));
    let c = clock.clone();
    let state = ContractState::new(
        Keypair::from_seed([2; 32]),
        config,
        store,
        Arc::new(move || c.load(Ordering::SeqCst)),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(wireleap_api::serve(
        listener,
        router(state.clone()),
        None,
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    Server {
        url,
        state,
        clock,
        shutdown,
        backend: db.name,
        _db: db,
    }
}

async fn servers(config: ContractConfig) -> Vec<Server> {
    let mut out = Vec::new();
    for db in wireleap_store::testing::backends().await.unwrap() {
        out.push(start(db, config.clone()).await);
    }
    out
}

fn client() -> ApiClient {
    ApiClient::new(None, false)
        .unwrap()
        .with_retry(RetryPolicy::ONCE)
}

fn relay_client(kp: &Keypair) -> ApiClient {
    ApiClient::new(
        Some(Identity {
            keypair: kp.clone(),
            component: Component::Relay,
            interfaces: vec![Interface::RelayContract, Interface::RelayDir],
        }),
        false,
    )
    .unwrap()
    .with_retry(RetryPolicy::ONCE)
}

fn pof(nonce: &str, expiration: i64) -> Pof {
    Pof::new_signed(&issuer(), "dummy".into(), expiration, nonce.into())
}

fn status_of<T: std::fmt::Debug>(r: Result<T, ApiError>) -> Status {
    match r {
        Err(ApiError::Status { status, .. }) => *status,
        other => panic!("expected a status reply, got {other:?}"),
    }
}

async fn activate(s: &Server, sk: &Keypair, p: Pof) -> Result<ContractSection, ApiError> {
    client()
        .post(
            &s.at("/servicekey/activate"),
            &ActivationRequest::new(sk.public(), p),
        )
        .await
}

async fn raw(
    c: &ApiClient,
    method: Method,
    url: &str,
    body: &[u8],
    headers: &[(HeaderName, HeaderValue)],
) -> Status {
    status_of(
        c.send_once(&method, url, &Bytes::copy_from_slice(body), None, headers)
            .await,
    )
}

#[tokio::test]
async fn info_reflects_the_config() {
    for s in servers(config()).await {
        let info: ContractInfo = client().get(&s.at("/info")).await.unwrap();
        assert_eq!(info.pubkey, Some(Keypair::from_seed([2; 32]).public()));
        assert_eq!(info.proof_of_funding[0].pubkey, Some(issuer().public()));
        assert_eq!(info.servicekey.value, Some("1000".parse().unwrap()));
        assert_eq!(info.settlement.submission_window.as_secs(), 3600);
        assert_eq!(info.metadata.name.as_deref(), Some("test contract"));
        // A relay's signed GET is tolerated.
        let signed: ContractInfo = relay_client(&Keypair::generate())
            .get(&s.at("/info"))
            .await
            .unwrap();
        assert_eq!(signed, info, "{}", s.backend);
        // Reload applies new terms.
        let mut c = config();
        c.metadata.name = Some("renamed".into());
        s.state.set_config(c);
        let info: ContractInfo = client().get(&s.at("/info")).await.unwrap();
        assert_eq!(info.metadata.name.as_deref(), Some("renamed"));
    }
}

#[tokio::test]
async fn activation_spends_a_pof_once() {
    for s in servers(config()).await {
        let sk = Keypair::generate();
        let section = activate(&s, &sk, pof("aa", T0 + 100)).await.unwrap();
        assert!(section.verify().is_ok());
        assert_eq!(section.public_key, Some(s.state.pubkey()));
        assert_eq!(section.settlement_open, T0 + 600);
        assert_eq!(section.settlement_close, T0 + 600 + 3600);

        let again = status_of(activate(&s, &Keypair::generate(), pof("aa", T0 + 100)).await);
        assert!(again.same_as(&Status::sneaky_pof()), "{again}");
        assert_eq!(
            again.cause.as_deref(),
            Some("this pof has been seen/used already")
        );

        let expired = status_of(activate(&s, &Keypair::generate(), pof("bb", T0)).await);
        assert_eq!(expired, Status::expired_pof(), "{}", s.backend);

        let forged = Pof::new_signed(&Keypair::generate(), "dummy".into(), T0 + 100, "cc".into());
        let bad = status_of(activate(&s, &Keypair::generate(), forged).await);
        assert_eq!(bad.code, 400);
        assert!(bad.cause.unwrap().starts_with("invalid signature"));

        let wrong_type = Pof::new_signed(&issuer(), "stripe".into(), T0 + 100, "dd".into());
        assert_eq!(
            status_of(activate(&s, &Keypair::generate(), wrong_type).await).code,
            400
        );

        let taken = status_of(activate(&s, &sk, pof("ee", T0 + 100)).await);
        assert_eq!(taken.code, 409, "{taken}");
        // The refused pof is still good for another servicekey.
        activate(&s, &Keypair::generate(), pof("ee", T0 + 100))
            .await
            .unwrap();

        let missing = status_of(
            client()
                .post::<_, ContractSection>(
                    &s.at("/servicekey/activate"),
                    &serde_json::json!({"pof": pof("ff", T0 + 9)}),
                )
                .await,
        );
        assert_eq!(missing.code, 400);
    }
}

#[tokio::test]
async fn concurrent_activations_over_http_yield_one_success() {
    const N: usize = 16;
    for s in servers(config()).await {
        let s = Arc::new(s);
        let p = pof("race", T0 + 1000);
        let mut tasks = Vec::new();
        for _ in 0..N {
            let (s, p) = (s.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                activate(&s, &Keypair::generate(), p).await
            }));
        }
        let (mut ok, mut sneaky) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) if e.status().is_some_and(|st| *st == Status::sneaky_pof()) => sneaky += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!((ok, sneaky), (1, N - 1), "{}", s.backend);
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_status_objects_and_writes_nothing() {
    for s in servers(config()).await {
        let url = s.at("/servicekey/activate");
        let sk = Keypair::generate();
        let p = pof("keep", T0 + 100);
        let good = String::from_utf8(
            ActivationRequest::new(sk.public(), p.clone())
                .to_json()
                .unwrap(),
        )
        .unwrap();
        let c = client();

        let st = raw(&c, Method::POST, &url, b"{", &[]).await;
        assert_eq!(st.code, 400);
        assert!(st.cause.unwrap().contains("invalid JSON"));

        let extra = good.replacen('{', r#"{"extra":1,"#, 1);
        let st = raw(&c, Method::POST, &url, extra.as_bytes(), &[]).await;
        assert_eq!(st.code, 400);
        assert!(st.cause.unwrap().contains("unknown field \"extra\""));

        let nested = good.replacen(r#""pof":{"#, r#""pof":{"colour":"red","#, 1);
        assert_ne!(nested, good);
        let st = raw(&c, Method::POST, &url, nested.as_bytes(), &[]).await;
        assert!(st.cause.unwrap().contains("pof.colour"), "{}", s.backend);

        let st = raw(&c, Method::POST, &url, b"[1,2]", &[]).await;
        assert_eq!(st.code, 400);
        let st = raw(&c, Method::POST, &url, br#"{"pubkey":"x"}"#, &[]).await;
        assert_eq!(st.code, 400);

        let huge = vec![b' '; 70 * 1024];
        let st = raw(&c, Method::POST, &url, &huge, &[]).await;
        assert_eq!(st.code, 413);

        let version = (
            HeaderName::from_static("wireleap-client-contract-version"),
            HeaderValue::from_static("0.2.0"),
        );
        let st = raw(&c, Method::POST, &url, good.as_bytes(), &[version]).await;
        assert_eq!(st.code, 400);
        assert!(st.cause.unwrap().contains("invalid client API version"));

        let st = raw(&c, Method::GET, &s.at("/nowhere"), b"null", &[]).await;
        assert_eq!(st, Status::not_found());
        let st = raw(&c, Method::GET, &s.at("/submit"), b"null", &[]).await;
        assert_eq!(st, Status::method_not_allowed());

        // Nothing above spent the pof.
        activate(&s, &sk, p).await.unwrap();
    }
}

fn tokens(sk: &Keypair, section: &ContractSection, relay: PublicKey, n: u32) -> Vec<Sharetoken> {
    (0..n)
        .map(|i| {
            Sharetoken::new_signed(
                sk,
                section.clone(),
                relay,
                T0 + i64::from(i),
                wireleap_proto::nonce::generate(32),
            )
        })
        .collect()
}

async fn submit(s: &Server, relay: &Keypair, t: &Sharetoken) -> Result<Status, ApiError> {
    relay_client(relay).post(&s.at("/submit"), t).await
}

#[tokio::test]
async fn submission_settlement_and_balance() {
    for s in servers(config()).await {
        let sk = Keypair::generate();
        let section = activate(&s, &sk, pof("s1", T0 + 100)).await.unwrap();
        let (ra, rb) = (Keypair::generate(), Keypair::generate());
        let ta = tokens(&sk, &section, ra.public(), 3);
        let tb = tokens(&sk, &section, rb.public(), 1);

        let early = status_of(submit(&s, &ra, &ta[0]).await);
        assert!(
            early.same_as(&Status::settlement_not_open()) && early == Status::settlement_not_open(),
            "{early}"
        );

        s.set_time(section.settlement_open);
        for t in &ta {
            assert_eq!(submit(&s, &ra, t).await.unwrap(), Status::ok());
        }
        let dup = status_of(submit(&s, &ra, &ta[0]).await);
        assert_eq!(
            (dup.code, dup.cause.as_deref()),
            (409, Some("duplicate sharetoken"))
        );

        // Signed by another relay than the token names.
        let st = status_of(submit(&s, &rb, &ta[1]).await);
        assert_eq!(st.code, 403, "{st}");
        // Unsigned.
        let st = status_of(client().post::<_, Status>(&s.at("/submit"), &tb[0]).await);
        assert_eq!(st.code, 403);
        // A real section reused with a servicekey the contract never activated.
        let stranger = Keypair::generate();
        let forged = tokens(&stranger, &section, rb.public(), 1);
        let st = status_of(submit(&s, &rb, &forged[0]).await);
        assert!(st.same_as(&Status::st_rejected()), "{st}");
        // Tampered client signature.
        let mut bad = tb[0].clone();
        bad.timestamp += 1;
        let st = status_of(submit(&s, &rb, &bad).await);
        assert!(st.cause.unwrap().starts_with("invalid signature"));
        // Another contract's section.
        let other = ContractSection::new_signed(
            &Keypair::generate(),
            section.settlement_open,
            section.settlement_close,
        );
        let foreign = tokens(&sk, &other, rb.public(), 1);
        assert!(status_of(submit(&s, &rb, &foreign[0]).await)
            .same_as(&Status::contract_pubkey_mismatch()));
        // Unknown key inside the signed body.
        let text = String::from_utf8(tb[0].to_json().unwrap())
            .unwrap()
            .replacen('{', r#"{"bonus":1,"#, 1);
        let st = raw(
            &relay_client(&rb),
            Method::POST,
            &s.at("/submit"),
            text.as_bytes(),
            &[],
        )
        .await;
        assert!(st.cause.unwrap().contains("unknown field"));

        assert_eq!(submit(&s, &rb, &tb[0]).await.unwrap(), Status::ok());

        let counts: TokensReply = relay_client(&ra)
            .get(&s.at("/payout/tokens"))
            .await
            .unwrap();
        assert_eq!(
            (counts.relay, counts.accepted, counts.unsettled),
            (ra.public(), 3, 3)
        );

        // Window closed: refused, and settlement credits 950 as 3:1.
        s.set_time(section.settlement_close);
        let late = status_of(submit(&s, &rb, &tb[0]).await);
        assert_eq!(late, Status::settlement_closed());
        let settled = s.state.settle_due().await.unwrap();
        assert_eq!(settled.len(), 1, "{}", s.backend);

        let a: BalanceReply = relay_client(&ra)
            .get(&s.at("/payout/balance"))
            .await
            .unwrap();
        assert_eq!((a.available, a.tokens, a.pending), (712, 3, None));
        assert_eq!(a.value, "1425/2".parse().unwrap());
        assert_eq!(a.currency, "usd");
        let b: BalanceReply = relay_client(&rb)
            .get(&s.at("/payout/balance"))
            .await
            .unwrap();
        assert_eq!((b.available, b.tokens), (237, 1));
        let counts: TokensReply = relay_client(&ra)
            .get(&s.at("/payout/tokens"))
            .await
            .unwrap();
        assert_eq!((counts.unsettled, counts.settled), (0, 3));
        // Balance needs a relay signature.
        assert_eq!(
            status_of(client().get::<BalanceReply>(&s.at("/payout/balance")).await).code,
            403
        );
    }
}

#[tokio::test]
async fn concurrent_distinct_submissions_are_all_counted() {
    const N: u32 = 64;
    for s in servers(config()).await {
        let sk = Keypair::generate();
        let section = activate(&s, &sk, pof("many", T0 + 100)).await.unwrap();
        s.set_time(section.settlement_open);
        let relay = Keypair::generate();
        let mut all = tokens(&sk, &section, relay.public(), N);
        // Every fourth token is broken: the batches they land in must still accept the rest.
        for t in all.iter_mut().step_by(4) {
            t.nonce.push('0');
        }
        let s = Arc::new(s);
        let mut tasks = Vec::new();
        for (i, t) in all.into_iter().enumerate() {
            let (s, relay) = (s.clone(), relay.clone());
            tasks.push(tokio::spawn(
                async move { (i, submit(&s, &relay, &t).await) },
            ));
        }
        for task in tasks {
            let (i, r) = task.await.unwrap();
            assert_eq!(r.is_ok(), i % 4 != 0, "token {i}: {r:?}");
        }
        let counts: TokensReply = relay_client(&relay)
            .get(&s.at("/payout/tokens"))
            .await
            .unwrap();
        assert_eq!(counts.accepted, i64::from(N - N / 4), "{}", s.backend);
    }
}

/// A stand-in payment service answering withdrawals with `state`, counting calls.
async fn fake_ps(state: &'static str) -> (String, Arc<AtomicUsize>, CancellationToken) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/withdrawals",
        post(move |body: Bytes| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let mut w: Withdrawal = serde_json::from_slice(&body).unwrap();
                w.state = state.into();
                w.receipt = Some(serde_json::json!({"paid": w.amount}));
                axum::Json(w)
            }
        }),
    );
    let stop = CancellationToken::new();
    let base = wireleap_contract::httpd::serve_local(app, &stop)
        .await
        .unwrap();
    (format!("{base}/withdrawals"), calls, stop)
}

async fn funded_relay(s: &Server) -> Keypair {
    let sk = Keypair::generate();
    let section = activate(s, &sk, pof(&wireleap_proto::nonce::generate(18), T0 + 100))
        .await
        .unwrap();
    s.set_time(section.settlement_open);
    let relay = Keypair::generate();
    let t = tokens(&sk, &section, relay.public(), 1);
    submit(s, &relay, &t[0]).await.unwrap();
    s.set_time(section.settlement_close);
    s.state.settle_due().await.unwrap();
    relay
}

fn withdrawal(amount: i64) -> WithdrawalRequest {
    WithdrawalRequest {
        amount,
        kind: "dummy".into(),
        destination: "acct_1".into(),
    }
}

#[tokio::test]
async fn withdrawals_go_through_the_payment_service() {
    let (ps_url, calls, _stop) = fake_ps("complete").await;
    let mut c = config();
    c.payout = Payout {
        endpoint: Some(ps_url),
        min_withdrawal: 5,
        max_withdrawal: 900,
        ..Payout::default()
    };
    for s in servers(c.clone()).await {
        let relay = funded_relay(&s).await;
        let rc = relay_client(&relay);
        let url = s.at("/payout/withdrawals");
        assert_eq!(status_of(rc.get::<Withdrawal>(&url).await).code, 404);
        assert_eq!(
            status_of(rc.post::<_, Withdrawal>(&url, &withdrawal(0)).await),
            Status::withdrawal_invalid()
        );
        assert_eq!(
            status_of(rc.post::<_, Withdrawal>(&url, &withdrawal(4)).await).code,
            403
        );
        assert_eq!(
            status_of(rc.post::<_, Withdrawal>(&url, &withdrawal(901)).await).code,
            403
        );
        let before = calls.load(Ordering::SeqCst);
        let w: Withdrawal = rc.post(&url, &withdrawal(900)).await.unwrap();
        assert_eq!((w.state.as_str(), w.amount), ("complete", 900));
        assert_eq!(calls.load(Ordering::SeqCst), before + 1);
        let last: Withdrawal = rc.get(&url).await.unwrap();
        assert_eq!(last.id, w.id);
        assert_eq!(last.receipt, Some(serde_json::json!({"paid": 900})));
        let b: BalanceReply = rc.get(&s.at("/payout/balance")).await.unwrap();
        assert_eq!(b.available, 50, "{}", s.backend);
        // 50 left: 51 is refused for lack of money.
        let st = status_of(rc.post::<_, Withdrawal>(&url, &withdrawal(51)).await);
        assert!(st.same_as(&Status::insufficient_balance()), "{st}");
    }
}

#[tokio::test]
async fn one_pending_withdrawal_at_a_time() {
    let (ps_url, _calls, _stop) = fake_ps("pending").await;
    let mut c = config();
    c.payout.endpoint = Some(ps_url);
    for s in servers(c.clone()).await {
        let relay = funded_relay(&s).await;
        let rc = relay_client(&relay);
        let url = s.at("/payout/withdrawals");
        let w: Withdrawal = rc.post(&url, &withdrawal(100)).await.unwrap();
        assert_eq!(w.state, "pending");
        let st = status_of(rc.post::<_, Withdrawal>(&url, &withdrawal(100)).await);
        assert_eq!(st, Status::withdrawal_pending(), "{}", s.backend);
        let b: BalanceReply = rc.get(&s.at("/payout/balance")).await.unwrap();
        assert_eq!((b.available, b.pending), (850, Some(100)));
    }
}

#[tokio::test]
async fn unreachable_payment_service_keeps_the_withdrawal_pending() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/withdrawals", closed.local_addr().unwrap());
    drop(closed);
    let mut c = config();
    c.payout.endpoint = Some(dead);
    for s in servers(c.clone()).await {
        let relay = funded_relay(&s).await;
        let rc = relay_client(&relay);
        let url = s.at("/payout/withdrawals");
        let st = status_of(rc.post::<_, Withdrawal>(&url, &withdrawal(100)).await);
        assert!(st.same_as(&Status::payment_system_unreachable()), "{st}");
        let last: Withdrawal = rc.get(&url).await.unwrap();
        assert_eq!(last.state, "pending", "{}", s.backend);

        // The payment service comes back: the periodic re-check finishes the withdrawal.
        let (ps_url, calls, _stop) = fake_ps("complete").await;
        let mut c2 = c.clone();
        c2.payout.endpoint = Some(ps_url);
        s.state.set_config(c2);
        s.state.recheck_withdrawals().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let last: Withdrawal = rc.get(&url).await.unwrap();
        assert_eq!(last.state, "complete");
    }
}

#[tokio::test]
async fn no_payment_service_means_no_withdrawals() {
    for s in servers(config()).await {
        let relay = funded_relay(&s).await;
        let st = status_of(
            relay_client(&relay)
                .post::<_, Withdrawal>(&s.at("/payout/withdrawals"), &withdrawal(10))
                .await,
        );
        assert_eq!(st.code, 501, "{}", s.backend);
    }
}

#[tokio::test]
async fn issuers_of_other_types_do_not_count() {
    let mut c = config();
    c.proof_of_funding.push(PofIssuer {
        kind: "stripe".into(),
        pubkey: Keypair::from_seed([5; 32]).public(),
        endpoint: None,
    });
    for s in servers(c.clone()).await {
        // A stripe-issuer key cannot vouch for a dummy pof.
        let p = Pof::new_signed(
            &Keypair::from_seed([5; 32]),
            "dummy".into(),
            T0 + 10,
            "x".into(),
        );
        assert_eq!(
            status_of(activate(&s, &Keypair::generate(), p).await).code,
            400
        );
        let p = Pof::new_signed(
            &Keypair::from_seed([5; 32]),
            "stripe".into(),
            T0 + 10,
            "x".into(),
        );
        activate(&s, &Keypair::generate(), p).await.unwrap();
    }
}

#[tokio::test]
async fn serves_https_from_the_configured_files() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
    let files: wireleap_contract::httpd::TlsFiles =
        serde_json::from_str(r#"{"cert_file": "cert.pem", "key_file": "key.pem"}"#).unwrap();
    let tls = files.server_config(dir.path()).unwrap();
    // Files that are not PEM are refused with their name.
    let swapped: wireleap_contract::httpd::TlsFiles =
        serde_json::from_str(r#"{"cert_file": "key.pem", "key_file": "cert.pem"}"#).unwrap();
    let e = swapped.server_config(dir.path()).unwrap_err().to_string();
    assert!(e.contains("key.pem"), "{e}");

    let db = wireleap_store::testing::sqlite().await.unwrap();
    let store = ContractStore::open(db.db.clone()).await.unwrap();
    let state = ContractState::new(
        Keypair::from_seed([2; 32]),
        config(),
        store,
        Arc::new(|| T0),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/info", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(wireleap_api::serve(
        listener,
        router(state),
        Some(tls),
        stop.clone(),
        Duration::from_secs(1),
    ));
    let insecure = ApiClient::new(None, true)
        .unwrap()
        .with_retry(RetryPolicy::ONCE);
    let info: ContractInfo = insecure.get(&url).await.unwrap();
    assert_eq!(info.pubkey, Some(Keypair::from_seed([2; 32]).public()));
    // A verifying client refuses the self-signed certificate.
    assert!(client().get::<ContractInfo>(&url).await.is_err());
    stop.cancel();
}
