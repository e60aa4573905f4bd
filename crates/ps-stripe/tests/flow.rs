//! ps-stripe's real HTTP server in front of a real auth server and a fake Stripe API (all
//! in-process on 127.0.0.1): checkout → signed webhook → access key issued once, refusals as
//! JSON status objects with nothing written, and payouts that never pay twice. Runs on SQLite
//! and, when `WIRELEAP_TEST_POSTGRES` is set, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wireleap_api::{ApiClient, ApiError, RetryPolicy};
use wireleap_auth::{AuthConfig, AuthState, AuthStore, PaymentService};
use wireleap_contract::httpd::serve_local;
use wireleap_contract::payservice::signed_client;
use wireleap_proto::accesskey::AccessKey;
use wireleap_proto::keys::Keypair;
use wireleap_proto::payout::Withdrawal;
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface};
use wireleap_ps_stripe::signature::{self, WebhookSecret};
use wireleap_ps_stripe::store::OrderState;
use wireleap_ps_stripe::{router, PsState, PsStripeConfig, Secrets, StripeStore};

const T0: i64 = 1_700_000_000;
const API_KEY: &str = "sk_test_fake123";
const WHSEC: &str = "whsec_test_abc";

fn auth_key() -> Keypair {
    Keypair::from_seed([1; 32])
}
fn ps_key() -> Keypair {
    Keypair::from_seed([7; 32])
}
fn contract_key() -> Keypair {
    Keypair::from_seed([2; 32])
}

// ---- fake Stripe -------------------------------------------------------------------------

#[derive(Default)]
struct Fake {
    /// Form of every checkout session request, by idempotency key.
    sessions: Vec<(String, HashMap<String, String>)>,
    /// Transfers made, by idempotency key.
    transfers: Vec<(String, serde_json::Value)>,
    /// Transfer POSTs seen (including replays and failures).
    transfer_posts: usize,
    /// Answer this many transfer POSTs with 500 before doing anything.
    fail_before: usize,
    /// Do this many transfer POSTs but answer them with 500 (lost replies).
    lose_reply: usize,
    /// Requests without the right key.
    unauthorized: usize,
    /// Act as if idempotency keys had expired (Stripe keeps them for about a day).
    forget_keys: bool,
}

type FakeState = Arc<Mutex<Fake>>;

/// Stripe's refusal of a request without the right key (counted in `unauthorized`); `None`
/// when the key is right.
fn refuse_bad_key(f: &FakeState, h: &HeaderMap) -> Option<axum::response::Response> {
    let ok =
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {API_KEY}"));
    if ok {
        return None;
    }
    f.lock().unwrap().unauthorized += 1;
    Some(stripe_error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "bad key",
    ))
}

/// A form-POST route of the fake: refuses a request without the right key, else hands its
/// fields and idempotency key ("" without one) to `handle`.
fn form_post(
    handle: fn(&mut Fake, HashMap<String, String>, String) -> axum::response::Response,
) -> axum::routing::MethodRouter<FakeState> {
    post(
        move |State(f): State<FakeState>, h: HeaderMap, body: String| async move {
            if let Some(refused) = refuse_bad_key(&f, &h) {
                return refused;
            }
            let form = url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
            let key = h
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            handle(&mut f.lock().unwrap(), form, key)
        },
    )
}

fn stripe_error(code: StatusCode, kind: &str, message: &str) -> axum::response::Response {
    (
        code,
        axum::Json(serde_json::json!({"error": {"type": kind, "message": message}})),
    )
        .into_response()
}

fn fake_sessions(
    f: &mut Fake,
    form: HashMap<String, String>,
    key: String,
) -> axum::response::Response {
    let n = match f.sessions.iter().position(|(k, _)| *k == key) {
        Some(i) => i + 1,
        None => {
            f.sessions.push((key, form));
            f.sessions.len()
        }
    };
    axum::Json(serde_json::json!({
        "id": format!("cs_test_{n}"),
        "object": "checkout.session",
        "url": format!("https://checkout.stripe.test/c/pay/cs_test_{n}"),
        "payment_status": "unpaid",
    }))
    .into_response()
}

fn fake_transfers(
    f: &mut Fake,
    form: HashMap<String, String>,
    key: String,
) -> axum::response::Response {
    f.transfer_posts += 1;
    if f.fail_before > 0 {
        f.fail_before -= 1;
        return stripe_error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "try again");
    }
    let existing = f
        .transfers
        .iter()
        .find(|(k, _)| *k == key && !f.forget_keys)
        .map(|(_, t)| t.clone());
    let transfer = match existing {
        Some(t) => t,
        None => {
            if form["destination"] == "acct_refused" {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "No such destination: 'acct_refused'",
                );
            }
            let t = serde_json::json!({
                "id": format!("tr_{}", f.transfers.len() + 1),
                "object": "transfer",
                "amount": form["amount"].parse::<i64>().unwrap(),
                "currency": form["currency"],
                "destination": form["destination"],
                "transfer_group": form["transfer_group"],
            });
            f.transfers.push((key, t.clone()));
            t
        }
    };
    if f.lose_reply > 0 {
        f.lose_reply -= 1;
        return stripe_error(StatusCode::BAD_GATEWAY, "api_error", "reply lost");
    }
    axum::Json(transfer).into_response()
}

async fn fake_list_transfers(
    State(f): State<FakeState>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    if let Some(refused) = refuse_bad_key(&f, &h) {
        return refused;
    }
    let f = f.lock().unwrap();
    let data: Vec<_> = f
        .transfers
        .iter()
        .map(|(_, t)| t.clone())
        .filter(|t| {
            Some(t["transfer_group"].as_str().unwrap())
                == q.get("transfer_group").map(String::as_str)
        })
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data, "has_more": false}))
        .into_response()
}

// ---- the network ------------------------------------------------------------------------

struct Net {
    ps: String,
    state: Arc<PsState>,
    auth: Arc<AuthState>,
    auth_store: AuthStore,
    fake: FakeState,
    keys_dir: tempfile::TempDir,
    stop: CancellationToken,
    _auth_db: wireleap_store::testing::TestDb,
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn auth_config(trusted: bool) -> AuthConfig {
    AuthConfig {
        payment_services: if trusted {
            vec![PaymentService {
                kind: "stripe".into(),
                pubkey: ps_key().public(),
            }]
        } else {
            vec![]
        },
        ..AuthConfig::default()
    }
}

async fn net(db: wireleap_store::Db, trusted: bool) -> Net {
    let stop = CancellationToken::new();
    let auth_db = wireleap_store::testing::sqlite().await.unwrap();
    let auth_store = AuthStore::open(auth_db.db.clone()).await.unwrap();
    let auth = AuthState::new(
        auth_key(),
        auth_config(trusted),
        auth_store.clone(),
        Arc::new(|| T0),
    );
    let auth_url = serve_local(wireleap_auth::router(auth.clone()), &stop)
        .await
        .unwrap();
    let fake = FakeState::default();
    let stripe_url = serve_local(
        axum::Router::new()
            .route("/v1/checkout/sessions", form_post(fake_sessions))
            .route(
                "/v1/transfers",
                form_post(fake_transfers).get(fake_list_transfers),
            )
            .with_state(fake.clone()),
        &stop,
    )
    .await
    .unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let config: PsStripeConfig = serde_json::from_value(serde_json::json!({
        "address": "127.0.0.1:0",
        "endpoint": "https://ps.example",
        "auth": {"endpoint": auth_url, "public_key": auth_key().public()},
        "contract": {"endpoint": "https://contract.example", "public_key": contract_key().public()},
        "max_quantity": 10,
        "pof_duration": "2d",
        "accesskey_dir": keys_dir.path(),
        "stripe": {"api_base": stripe_url, "attempts": 3, "retry_delay": "0s",
                   "max_webhook_bytes": 4096},
        "checkout": {"price": {"currency": "usd", "unit_amount": 500},
                     "success_url": "https://ps.example/accesskeys/{CHECKOUT_SESSION_ID}",
                     "cancel_url": "https://ps.example/cancelled"},
        "payout": {"currency": "usd", "max_amount": 100000},
    }))
    .unwrap();
    let secrets = Secrets {
        api_key: wireleap_ps_stripe::config::SecretKey::new(API_KEY),
        // The rolled-out old secret first: any configured secret may match.
        webhook: vec![WebhookSecret::new("whsec_old"), WebhookSecret::new(WHSEC)],
    };
    let store = StripeStore::open(db).await.unwrap();
    let state = PsState::new(
        ps_key(),
        config,
        secrets,
        store,
        Arc::new(|| T0),
        std::path::PathBuf::from("/nonexistent-home"),
    )
    .unwrap();
    let ps = serve_local(router(state.clone()), &stop).await.unwrap();
    Net {
        ps,
        state,
        auth,
        auth_store,
        fake,
        keys_dir,
        stop,
        _auth_db: auth_db,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .unwrap()
}

/// Sends a raw request; returns the HTTP status and the body.
async fn raw(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut req = http().request(method, url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.bytes().await.unwrap().to_vec())
}

/// A refusal: the status object in the body must carry the HTTP code.
fn refusal(code: u16, body: &[u8]) -> Status {
    let st = Status::parse(body).unwrap_or_else(|e| {
        panic!(
            "not a status object ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(st.code, code, "{st}");
    assert!(st.cause.as_deref().is_some_and(|c| !c.is_empty()), "{st}");
    st
}

fn event(id: &str, kind: &str, session: &str, order: &str, payment_status: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": T0,
        "livemode": false,
        "type": kind,
        "data": {"object": {
            "id": session,
            "object": "checkout.session",
            "mode": "payment",
            "client_reference_id": order,
            "metadata": {"order_id": order, "quantity": "3"},
            "payment_status": payment_status,
            "status": "complete",
            "amount_total": 1500,
            "currency": "usd",
            "some_new_field": {"nested": [1, 2, 3]},
        }},
    }))
    .unwrap()
}

/// A paid `checkout.session.completed` event.
fn paid_event(id: &str, session: &str, order: &str) -> Vec<u8> {
    event(id, "checkout.session.completed", session, order, "paid")
}

/// A plain GET; returns the HTTP status and the body.
async fn get(url: &str) -> (u16, Vec<u8>) {
    raw(reqwest::Method::GET, url, &[], vec![]).await
}

async fn deliver(n: &Net, body: &[u8], header: String) -> (u16, Vec<u8>) {
    raw(
        reqwest::Method::POST,
        &format!("{}/webhook", n.ps),
        &[
            ("stripe-signature", header),
            ("content-type", "application/json".into()),
        ],
        body.to_vec(),
    )
    .await
}

fn signed(body: &[u8], t: i64) -> String {
    signature::sign(&WebhookSecret::new(WHSEC), t, body)
}

async fn checkout(n: &Net, quantity: i64) -> (String, String) {
    let (code, body) = raw(
        reqwest::Method::POST,
        &format!("{}/checkout", n.ps),
        &[("content-type", "application/json".into())],
        serde_json::to_vec(&serde_json::json!({"quantity": quantity})).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let reply: wireleap_ps_stripe::CheckoutReply = serde_json::from_slice(&body).unwrap();
    assert!(reply.url.starts_with("https://checkout.stripe.test/"));
    assert_eq!(
        reply.accesskey_url,
        format!("https://ps.example/accesskeys/{}", reply.id)
    );
    let f = n.fake.lock().unwrap();
    let (key, form) = f.sessions.last().unwrap();
    assert_eq!(
        form["metadata[order_id]"], *key,
        "order id is the idempotency key"
    );
    (reply.id, key.clone())
}

async fn issued_pofs(n: &Net) -> i64 {
    n.auth_store
        .issued_count(&ps_key().public().to_b64())
        .await
        .unwrap()
}

#[tokio::test]
async fn checkout_webhook_and_access_key_exactly_once() {
    for t in wireleap_store::testing::backends().await.unwrap() {
        let n = net(t.db.clone(), true).await;
        let (session, order) = checkout(&n, 3).await;
        {
            let f = n.fake.lock().unwrap();
            let form = &f.sessions[0].1;
            assert_eq!(form["mode"], "payment");
            assert_eq!(form["line_items[0][quantity]"], "3");
            assert_eq!(form["line_items[0][price_data][unit_amount]"], "500");
            assert_eq!(form["line_items[0][price_data][currency]"], "usd");
            assert_eq!(form["client_reference_id"], order);
            assert_eq!(
                form["success_url"],
                "https://ps.example/accesskeys/{CHECKOUT_SESSION_ID}"
            );
            assert_eq!(f.unauthorized, 0);
        }
        let key_url = format!("{}/accesskeys/{session}", n.ps);
        let (code, body) = get(&key_url).await;
        refusal(402, &body);
        assert_eq!(code, 402);

        // An unpaid completion (delayed payment method) issues nothing yet.
        let pending = event(
            "evt_0",
            "checkout.session.completed",
            &session,
            &order,
            "unpaid",
        );
        let (code, body) = deliver(&n, &pending, signed(&pending, T0)).await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(issued_pofs(&n).await, 0, "{}", t.name);

        let paid = paid_event("evt_1", &session, &order);
        let (code, body) = deliver(&n, &paid, signed(&paid, T0 - 10)).await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply["outcome"], "access key issued", "{}", t.name);
        assert_eq!(issued_pofs(&n).await, 3, "{}", t.name);

        let (code, first) = get(&key_url).await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&first));
        let key = AccessKey::import(&first).unwrap();
        assert_eq!(key.contract, contract_key().public());
        assert_eq!(key.endpoint, "https://contract.example");
        assert_eq!(key.pofs.len(), 3);
        for p in &key.pofs {
            assert_eq!(p.kind, "stripe");
            assert_eq!(p.expiration, T0 + 2 * 86400);
            p.verify(&[auth_key().public()], T0).unwrap();
        }
        let file = std::fs::read(n.keys_dir.path().join(format!("{session}.json"))).unwrap();
        assert_eq!(file, first, "the file and the download are the same key");

        // Stripe redelivers the event, and sends the async success too: nothing new.
        let (code, body) = deliver(&n, &paid, signed(&paid, T0)).await;
        assert_eq!(code, 200);
        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply["outcome"], "access key already issued", "{}", t.name);
        let other = event(
            "evt_2",
            "checkout.session.async_payment_succeeded",
            &session,
            &order,
            "paid",
        );
        let (code, _) = deliver(&n, &other, signed(&other, T0)).await;
        assert_eq!(code, 200);
        assert_eq!(issued_pofs(&n).await, 3, "{}: issued once", t.name);
        let (_, again) = get(&key_url).await;
        assert_eq!(again, first);
        let store = n.state.store();
        assert_eq!(store.count_orders(OrderState::Issued).await.unwrap(), 1);
        assert_eq!(store.count_events().await.unwrap(), 3, "{}", t.name);

        // Concurrent redeliveries of a second order's payment: still one issue.
        let (session2, order2) = checkout(&n, 2).await;
        let paid2 = paid_event("evt_3", &session2, &order2);
        let sends: Vec<_> = (0..4)
            .map(|_| {
                let url = format!("{}/webhook", n.ps);
                let (body, header) = (paid2.clone(), signed(&paid2, T0));
                tokio::spawn(async move {
                    raw(
                        reqwest::Method::POST,
                        &url,
                        &[("stripe-signature", header)],
                        body,
                    )
                    .await
                })
            })
            .collect();
        for s in sends {
            let (code, body) = s.await.unwrap();
            assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        }
        assert_eq!(issued_pofs(&n).await, 5, "{}", t.name);
    }
}

#[tokio::test]
async fn bad_webhooks_are_refused_and_change_nothing() {
    let db = wireleap_store::testing::sqlite().await.unwrap();
    let n = net(db.db.clone(), true).await;
    let (session, order) = checkout(&n, 1).await;
    let paid = paid_event("evt_1", &session, &order);
    let good = signed(&paid, T0);
    let mut tampered = paid.clone();
    let at = tampered.len() - 3;
    tampered[at] = b' ';
    let wrong_secret = signature::sign(&WebhookSecret::new("whsec_wrong"), T0, &paid);
    let sig = good.split_once(",v1=").unwrap().1.to_string();
    type Case<'a> = (&'a str, Vec<u8>, Option<String>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            paid.clone(),
            Some(wrong_secret),
            400,
            "matches",
        ),
        (
            "tampered body",
            tampered,
            Some(good.clone()),
            400,
            "matches",
        ),
        (
            "expired",
            paid.clone(),
            Some(signed(&paid, T0 - 301)),
            400,
            "before",
        ),
        (
            "future",
            paid.clone(),
            Some(signed(&paid, T0 + 301)),
            400,
            "after",
        ),
        (
            "no header",
            paid.clone(),
            None,
            400,
            "missing Stripe-Signature",
        ),
        (
            "no v1",
            paid.clone(),
            Some(format!("t={T0},v0={sig}")),
            400,
            "no v1",
        ),
        (
            "garbage header",
            paid.clone(),
            Some("hello".into()),
            400,
            "key=value",
        ),
        (
            "two timestamps",
            paid.clone(),
            Some(format!("t={T0},{good}")),
            400,
            "more than one",
        ),
        (
            "oversized",
            vec![b' '; 5000],
            Some(signed(&[b' '; 5000], T0)),
            413,
            "larger than 4096",
        ),
    ];
    for (what, body, header, code, cause) in cases {
        let mut headers = vec![];
        if let Some(h) = header {
            headers.push(("stripe-signature", h));
        }
        let (got, reply) = raw(
            reqwest::Method::POST,
            &format!("{}/webhook", n.ps),
            &headers,
            body,
        )
        .await;
        assert_eq!(got, code, "{what}: {}", String::from_utf8_lossy(&reply));
        let st = refusal(code, &reply);
        assert!(st.cause.as_deref().unwrap().contains(cause), "{what}: {st}");
    }
    // Signed but not an event.
    for body in [&b"{not json"[..], br#"{"id": "evt_9", "type": "checkout.session.completed", "data": {"object": {"no_id": 1}}}"#] {
        let (code, reply) = deliver(&n, body, signed(body, T0)).await;
        refusal(400, &reply);
        assert_eq!(code, 400);
    }
    let store = n.state.store();
    assert_eq!(store.count_events().await.unwrap(), 0, "nothing recorded");
    assert_eq!(store.count_orders(OrderState::Open).await.unwrap(), 1);
    assert_eq!(issued_pofs(&n).await, 0);

    // Unknown event types are acknowledged and ignored.
    let other =
        br#"{"id": "evt_x", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}"#;
    let (code, reply) = deliver(&n, other, signed(other, T0)).await;
    assert_eq!(code, 200);
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert!(reply["outcome"].as_str().unwrap().contains("ignored"));
    // A paid session that is not ours is acknowledged, issues nothing.
    let foreign = paid_event("evt_f", "cs_foreign", "zzz");
    let (code, _) = deliver(&n, &foreign, signed(&foreign, T0)).await;
    assert_eq!(code, 200);
    assert_eq!(issued_pofs(&n).await, 0);
    // And the real one still works afterwards.
    let (code, _) = deliver(&n, &paid, signed(&paid, T0)).await;
    assert_eq!(code, 200);
    assert_eq!(issued_pofs(&n).await, 1);
}

#[tokio::test]
async fn bad_checkouts_are_refused_before_anything_is_written() {
    let db = wireleap_store::testing::sqlite().await.unwrap();
    let n = net(db.db.clone(), true).await;
    let url = format!("{}/checkout", n.ps);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (br#"{"quantity": 0}"#.to_vec(), 400, "between 1 and 10"),
        (br#"{"quantity": 11}"#.to_vec(), 400, "between 1 and 10"),
        (
            br#"{"quantity": 1, "colour": "red"}"#.to_vec(),
            400,
            "unknown field",
        ),
        (br#"{"quantity": "#.to_vec(), 400, "invalid JSON"),
        (br#"{"quantity": "two"}"#.to_vec(), 400, "invalid JSON"),
        (b"[1]".to_vec(), 400, "must be a JSON object"),
        (vec![b' '; 70 << 10], 413, "larger than"),
    ];
    for (body, code, cause) in cases {
        let (got, reply) = raw(reqwest::Method::POST, &url, &[], body).await;
        assert_eq!(got, code, "{}", String::from_utf8_lossy(&reply));
        let st = refusal(code, &reply);
        assert!(st.cause.as_deref().unwrap().contains(cause), "{st}");
    }
    for state in [OrderState::Created, OrderState::Open] {
        assert_eq!(n.state.store().count_orders(state).await.unwrap(), 0);
    }
    assert!(n.fake.lock().unwrap().sessions.is_empty());
    let (code, reply) = raw(
        reqwest::Method::GET,
        &format!("{}/accesskeys/cs_unknown", n.ps),
        &[],
        vec![],
    )
    .await;
    assert_eq!(code, 404);
    refusal(404, &reply);
}

#[tokio::test]
async fn auth_refusal_keeps_the_order_paid_until_it_can_be_issued() {
    let db = wireleap_store::testing::sqlite().await.unwrap();
    let n = net(db.db.clone(), false).await;
    let (session, order) = checkout(&n, 2).await;
    let paid = paid_event("evt_1", &session, &order);
    let (code, reply) = deliver(&n, &paid, signed(&paid, T0)).await;
    assert_eq!(code, 502, "Stripe must deliver again");
    assert!(refusal(502, &reply).cause.unwrap().contains("not trusted"));
    let key_url = format!("{}/accesskeys/{session}", n.ps);
    let (code, _) = get(&key_url).await;
    assert_eq!(code, 502);
    assert_eq!(
        n.state
            .store()
            .count_orders(OrderState::Paid)
            .await
            .unwrap(),
        1
    );

    n.auth.set_config(auth_config(true));
    assert_eq!(n.state.issue_pending().await, 1);
    assert_eq!(n.state.issue_pending().await, 0);
    let (code, body) = get(&key_url).await;
    assert_eq!(code, 200);
    assert_eq!(AccessKey::import(&body).unwrap().pofs.len(), 2);
    // Stripe's next delivery finds it done.
    let (code, reply) = deliver(&n, &paid, signed(&paid, T0)).await;
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&reply).contains("already issued"));
    assert_eq!(issued_pofs(&n).await, 2);
}

fn as_contract(kp: &Keypair) -> ApiClient {
    signed_client(kp, Component::Contract, Interface::ContractPs)
        .unwrap()
        .with_retry(RetryPolicy::ONCE)
}

fn withdrawal(id: &str, amount: i64, destination: &str) -> Withdrawal {
    Withdrawal {
        id: id.into(),
        state: "pending".into(),
        state_changed: T0,
        amount,
        kind: "TODO".into(),
        destination: destination.into(),
        receipt: None,
    }
}

fn status_of<T: std::fmt::Debug>(r: Result<T, ApiError>) -> Status {
    match r {
        Err(ApiError::Status { status, .. }) => *status,
        other => panic!("expected a status reply, got {other:?}"),
    }
}

#[tokio::test]
async fn payouts_are_made_once_and_recorded() {
    for t in wireleap_store::testing::backends().await.unwrap() {
        let n = net(t.db.clone(), true).await;
        let url = format!("{}/withdrawals", n.ps);
        let contract = as_contract(&contract_key());

        // Plain success, then the same withdrawal again: same answer, no second transfer.
        let done: Withdrawal = contract
            .post(&url, &withdrawal("w1", 700, "acct_1Relay"))
            .await
            .unwrap();
        assert_eq!(done.state, "complete", "{}", t.name);
        let receipt = done.receipt.clone().unwrap();
        assert_eq!(receipt["transfer"], "tr_1");
        assert_eq!(receipt["amount"], 700);
        let again: Withdrawal = contract
            .post(&url, &withdrawal("w1", 700, "acct_1Relay"))
            .await
            .unwrap();
        assert_eq!(again.receipt, done.receipt);
        assert_eq!(n.fake.lock().unwrap().transfer_posts, 1, "{}", t.name);

        // Two 5xx, then success within one request (same idempotency key each time).
        n.fake.lock().unwrap().fail_before = 2;
        let done: Withdrawal = contract
            .post(&url, &withdrawal("w2", 300, "acct_2"))
            .await
            .unwrap();
        assert_eq!(done.state, "complete", "{}", t.name);

        // Transfer made but every reply lost: pending; the contract's next ask finds the
        // transfer instead of making another.
        n.fake.lock().unwrap().lose_reply = 3;
        let pending: Withdrawal = contract
            .post(&url, &withdrawal("w3", 400, "acct_3"))
            .await
            .unwrap();
        assert_eq!(pending.state, "pending", "{}", t.name);
        // The contract asks again only much later, when Stripe no longer knows the key.
        n.fake.lock().unwrap().forget_keys = true;
        let done: Withdrawal = contract
            .post(&url, &withdrawal("w3", 400, "acct_3"))
            .await
            .unwrap();
        assert_eq!(done.state, "complete", "{}", t.name);
        {
            let f = n.fake.lock().unwrap();
            let for_w3 = f
                .transfers
                .iter()
                .filter(|(_, t)| t["transfer_group"] == "w3")
                .count();
            assert_eq!(for_w3, 1, "{}: never a double payout", t.name);
            assert_eq!(f.transfers.len(), 3);
        }
        let row = n.state.store().payout("w3").await.unwrap().unwrap();
        assert_eq!(row.transfer_id.as_deref(), Some("tr_3"));
        assert_eq!(row.attempts, 1);

        // Stripe refuses: failed, with the reason as receipt.
        let failed: Withdrawal = contract
            .post(&url, &withdrawal("w4", 100, "acct_refused"))
            .await
            .unwrap();
        assert_eq!(failed.state, "failed", "{}", t.name);
        assert!(failed.receipt.unwrap()["refused"]
            .as_str()
            .unwrap()
            .contains("No such destination"));

        // Refusals before the ledger.
        let before = n.fake.lock().unwrap().transfer_posts;
        for (w, code, cause) in [
            (withdrawal("w5", 100, "bank-account-1"), 400, "acct_"),
            (withdrawal("w5", 0, "acct_5"), 400, "amount"),
            (withdrawal("w5", 100_001, "acct_5"), 403, "maximum"),
            (withdrawal("w/5", 100, "acct_5"), 400, "withdrawal id"),
            (
                Withdrawal {
                    kind: "dummy".into(),
                    ..withdrawal("w5", 100, "acct_5")
                },
                400,
                "not paid by ps-stripe",
            ),
            (
                withdrawal("w1", 701, "acct_1Relay"),
                409,
                "requested before",
            ),
        ] {
            let st = status_of(contract.post::<_, Withdrawal>(&url, &w).await);
            assert_eq!(st.code, code, "{w:?}: {st}");
            assert!(st.cause.as_deref().unwrap().contains(cause), "{st}");
        }
        assert!(n.state.store().payout("w5").await.unwrap().is_none());
        let st = status_of(
            as_contract(&Keypair::generate())
                .post::<_, Withdrawal>(&url, &withdrawal("w6", 100, "acct_6"))
                .await,
        );
        assert_eq!(st.code, 403);
        let st = status_of(
            ApiClient::new(None, false)
                .unwrap()
                .with_retry(RetryPolicy::ONCE)
                .post::<_, Withdrawal>(&url, &withdrawal("w6", 100, "acct_6"))
                .await,
        );
        assert_eq!(st.code, 403, "unsigned requests are refused");
        assert_eq!(n.fake.lock().unwrap().transfer_posts, before);
        assert_eq!(n.fake.lock().unwrap().unauthorized, 0);
    }
}
