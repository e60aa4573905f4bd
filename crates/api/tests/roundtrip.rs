//! The client and server halves of the API plumbing against each other over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::routing::{get, post};
use axum::Router;
use http::{HeaderName, HeaderValue, Method};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wireleap_api::server::{gate, JsonBody, RelayCaller};
use wireleap_api::{serve, ApiClient, ApiJson, ApiState, Identity, RetryPolicy, Signed};
use wireleap_proto::keys::Keypair;
use wireleap_proto::status::Status;
use wireleap_proto::version::Interface;

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Echo {
    n: i64,
}

async fn start(counter: Arc<AtomicUsize>) -> (String, CancellationToken) {
    let state = ApiState::new(&[Interface::RelayContract]);
    let c2 = counter.clone();
    let c3 = counter.clone();
    let router = Router::new()
        .route(
            "/signed",
            post(move |s: Signed<Echo, RelayCaller>| {
                let c = c2.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    ApiJson(serde_json::json!({"n": s.body.n, "signer": s.signer.to_b64()}))
                }
            }),
        )
        .route(
            "/plain",
            post(|b: JsonBody<Echo>| async move { ApiJson(b.0) }),
        )
        .route("/info", get(|| async { ApiJson(Echo { n: 7 }) }))
        .route(
            "/flaky",
            post(move |b: JsonBody<Echo>| {
                let c = c3.clone();
                async move {
                    // Fails the first time it runs, succeeds after.
                    if c.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(wireleap_api::StatusReply(Status::internal()))
                    } else {
                        Ok(ApiJson(b.0))
                    }
                }
            }),
        )
        .route(
            "/fail",
            get(|| async { wireleap_api::StatusReply(Status::internal()) }),
        )
        .layer(axum::middleware::from_fn_with_state(state, gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        router,
        None,
        stop.clone(),
        Duration::from_secs(1),
    ));
    (url, stop)
}

fn relay_client(kp: &Keypair) -> ApiClient {
    ApiClient::new(
        Some(Identity {
            keypair: kp.clone(),
            component: wireleap_proto::version::Component::Relay,
            interfaces: vec![Interface::RelayContract, Interface::RelayDir],
        }),
        false,
    )
    .unwrap()
    .with_retry(RetryPolicy {
        attempts: 3,
        delay: Duration::from_millis(10),
    })
}

#[tokio::test]
async fn signed_requests_verify_and_unsigned_ones_are_refused() {
    let (url, stop) = start(Arc::new(AtomicUsize::new(0))).await;
    let kp = Keypair::from_seed([1; 32]);
    let reply: serde_json::Value = relay_client(&kp)
        .post(&format!("{url}/signed"), &Echo { n: 5 })
        .await
        .unwrap();
    assert_eq!(reply["n"], 5);
    assert_eq!(reply["signer"], kp.public().to_b64());

    let anon = ApiClient::new(None, false).unwrap();
    let err = anon
        .post::<_, serde_json::Value>(&format!("{url}/signed"), &Echo { n: 5 })
        .await
        .unwrap_err();
    let st = err.status().expect("a status reply");
    assert_eq!(st.code, 403);
    assert_eq!(st.cause.as_deref(), Some("auth headers for Relay missing"));

    // A signature over other bytes does not verify.
    let bad_sig = kp.sign(b"other").to_b64();
    let err = anon
        .call(
            Method::POST,
            &format!("{url}/signed"),
            &Echo { n: 5 },
            &[
                (
                    HeaderName::from_static("wireleap-relay-pubkey"),
                    HeaderValue::from_str(&kp.public().to_b64()).unwrap(),
                ),
                (
                    HeaderName::from_static("wireleap-relay-signature"),
                    HeaderValue::from_str(&bad_sig).unwrap(),
                ),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.status().unwrap().cause.as_deref(),
        Some("auth signature for Relay does not verify")
    );
    stop.cancel();
}

#[tokio::test]
async fn same_idempotency_key_replays_without_running_the_handler() {
    let counter = Arc::new(AtomicUsize::new(0));
    let (url, stop) = start(counter.clone()).await;
    let client = relay_client(&Keypair::from_seed([2; 32]));
    let body = bytes::Bytes::from_static(b"{\"n\":1}");
    for _ in 0..3 {
        let r = client
            .send_once(
                &Method::POST,
                &format!("{url}/signed"),
                &body,
                Some("k1"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(counter.load(Ordering::SeqCst), 1);
    client
        .send_once(
            &Method::POST,
            &format!("{url}/signed"),
            &body,
            Some("k2"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(counter.load(Ordering::SeqCst), 2);
    stop.cancel();
}

#[tokio::test]
async fn a_server_error_is_not_replayed_to_a_retry() {
    let counter = Arc::new(AtomicUsize::new(0));
    let (url, stop) = start(counter.clone()).await;
    let client = ApiClient::new(None, false).unwrap();
    let body = bytes::Bytes::from_static(b"{\"n\":5}");
    let url = format!("{url}/flaky");
    let first = client
        .send_once(&Method::POST, &url, &body, Some("k9"), &[])
        .await
        .unwrap_err();
    assert_eq!(first.status().unwrap().code, 500);
    // The retry with the same key runs the handler again and its success is then replayed.
    for _ in 0..2 {
        let again = client
            .send_once(&Method::POST, &url, &body, Some("k9"), &[])
            .await
            .unwrap();
        assert_eq!(again.status, 200);
    }
    assert_eq!(counter.load(Ordering::SeqCst), 2);
    stop.cancel();
}

#[tokio::test]
async fn version_gate_refuses_other_minor_and_echoes_ours() {
    let (url, stop) = start(Arc::new(AtomicUsize::new(0))).await;
    let anon = ApiClient::new(None, false).unwrap();
    let ok = anon
        .call(Method::GET, &format!("{url}/info"), &(), &[])
        .await
        .unwrap();
    assert_eq!(
        ok.headers.get("wireleap-relay-contract-version").unwrap(),
        "0.1.0"
    );
    let err = anon
        .call(
            Method::GET,
            &format!("{url}/info"),
            &(),
            &[(
                HeaderName::from_static("wireleap-relay-contract-version"),
                HeaderValue::from_static("0.2.0"),
            )],
        )
        .await
        .unwrap_err();
    let st = err.status().unwrap();
    assert_eq!((st.code, st.description.as_str()), (400, "bad request"));
    assert!(
        st.cause
            .as_deref()
            .unwrap()
            .starts_with("invalid client API version"),
        "{st}"
    );
    stop.cancel();
}

#[tokio::test]
async fn bad_bodies_get_status_errors() {
    let (url, stop) = start(Arc::new(AtomicUsize::new(0))).await;
    let anon = ApiClient::new(None, false)
        .unwrap()
        .with_retry(RetryPolicy::ONCE);
    let err = anon
        .post::<_, Echo>(&format!("{url}/plain"), &serde_json::json!({"n": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().code, 400);
    let big = "x".repeat(100 << 10);
    let err = anon
        .post::<_, Echo>(&format!("{url}/plain"), &big)
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().code, 413);
    let ok: Echo = anon
        .post(&format!("{url}/plain"), &Echo { n: 3 })
        .await
        .unwrap();
    assert_eq!(ok, Echo { n: 3 });
    stop.cancel();
}

#[tokio::test]
async fn retries_500_then_gives_up() {
    let (url, stop) = start(Arc::new(AtomicUsize::new(0))).await;
    let anon = ApiClient::new(None, false)
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 2,
            delay: Duration::from_millis(1),
        });
    let err = anon.get::<Echo>(&format!("{url}/fail")).await.unwrap_err();
    assert_eq!(err.status().unwrap().code, 500);
    stop.cancel();
}
