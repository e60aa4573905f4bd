//! ps-dummy in front of a real auth server (both in-process on 127.0.0.1): access keys that
//! import, refusals as status objects, and contract-signed dummy withdrawals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
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
use wireleap_ps_dummy::{router, AccessKeyRequest, PsDummyConfig, PsState};

const T0: i64 = 1_700_000_000;

fn auth_key() -> Keypair {
    Keypair::from_seed([1; 32])
}
fn ps_key() -> Keypair {
    Keypair::from_seed([6; 32])
}
fn contract_key() -> Keypair {
    Keypair::from_seed([2; 32])
}

struct Net {
    ps: String,
    stop: CancellationToken,
    _db: wireleap_store::testing::TestDb,
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// auth trusting `trusted`, and ps-dummy (key `ps_key`) pointing at it.
async fn net(trusted: Keypair, auth_up: bool) -> Net {
    let stop = CancellationToken::new();
    let db = wireleap_store::testing::sqlite().await.unwrap();
    let store = AuthStore::open(db.db.clone()).await.unwrap();
    let auth_config = AuthConfig {
        payment_services: vec![PaymentService {
            kind: "dummy".into(),
            pubkey: trusted.public(),
        }],
        ..AuthConfig::default()
    };
    let auth_url = if auth_up {
        let state = AuthState::new(auth_key(), auth_config, store, Arc::new(|| T0));
        serve_local(wireleap_auth::router(state), &stop)
            .await
            .unwrap()
    } else {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        url
    };
    let config: PsDummyConfig = serde_json::from_value(serde_json::json!({
        "address": "127.0.0.1:0",
        "auth": {"endpoint": auth_url, "public_key": auth_key().public()},
        "contract": {"endpoint": "http://127.0.0.1:9", "public_key": contract_key().public()},
        "max_quantity": 20,
    }))
    .unwrap();
    let ps = PsState::new(ps_key(), config, Arc::new(|| T0)).unwrap();
    let ps = serve_local(router(ps), &stop).await.unwrap();
    Net { ps, stop, _db: db }
}

fn client() -> ApiClient {
    ApiClient::new(None, false)
        .unwrap()
        .with_retry(RetryPolicy::ONCE)
}

fn status_of<T: std::fmt::Debug>(r: Result<T, ApiError>) -> Status {
    match r {
        Err(ApiError::Status { status, .. }) => *status,
        other => panic!("expected a status reply, got {other:?}"),
    }
}

fn ask(quantity: i64, duration: Option<&str>) -> AccessKeyRequest {
    AccessKeyRequest {
        quantity,
        duration: duration.map(Into::into),
    }
}

#[tokio::test]
async fn access_key_from_auth_imports() {
    let n = net(ps_key(), true).await;
    let url = format!("{}/accesskeys", n.ps);
    let key: AccessKey = client().post(&url, &ask(5, Some("2d"))).await.unwrap();
    let bytes = key.to_json().unwrap();
    let imported = AccessKey::import(&bytes).unwrap();
    assert_eq!(imported.contract, contract_key().public());
    assert_eq!(imported.endpoint, "http://127.0.0.1:9");
    assert_eq!(imported.pofs.len(), 5);
    for p in &imported.pofs {
        assert_eq!(p.expiration, T0 + 2 * 86400);
        p.verify(&[auth_key().public()], T0).unwrap();
    }
    // Default duration (30d).
    let key: AccessKey = client().post(&url, &ask(1, None)).await.unwrap();
    assert_eq!(key.pofs.unwrap()[0].expiration, T0 + 30 * 86400);

    for bad in [
        ask(0, None),
        ask(21, None),
        ask(1, Some("soon")),
        ask(1, Some("0s")),
    ] {
        let st = status_of(client().post::<_, AccessKey>(&url, &bad).await);
        assert_eq!(st.code, 400, "{bad:?}: {st}");
    }
    let st = status_of(
        client()
            .post::<_, AccessKey>(&url, &serde_json::json!({"quantity": 1, "colour": "red"}))
            .await,
    );
    assert!(st.cause.unwrap().contains("unknown field"));
}

#[tokio::test]
async fn auth_refusal_and_outage_are_gateway_errors() {
    let n = net(Keypair::generate(), true).await;
    let st = status_of(
        client()
            .post::<_, AccessKey>(&format!("{}/accesskeys", n.ps), &ask(1, None))
            .await,
    );
    assert_eq!(st.code, 502);
    assert!(
        st.cause.unwrap().contains("not trusted"),
        "cause names auth's reason"
    );

    let n = net(ps_key(), false).await;
    let st = status_of(
        client()
            .post::<_, AccessKey>(&format!("{}/accesskeys", n.ps), &ask(1, None))
            .await,
    );
    assert!(st.same_as(&Status::payment_system_unreachable()), "{st}");
}

#[tokio::test]
async fn dummy_withdrawals_for_the_configured_contract_only() {
    let n = net(ps_key(), true).await;
    let url = format!("{}/withdrawals", n.ps);
    let as_contract = |kp: &Keypair| {
        signed_client(kp, Component::Contract, Interface::ContractPs)
            .unwrap()
            .with_retry(RetryPolicy::ONCE)
    };
    let w = Withdrawal {
        id: "w1".into(),
        state: "pending".into(),
        state_changed: T0,
        amount: 100,
        kind: "dummy".into(),
        destination: "acct".into(),
        receipt: None,
    };
    let done: Withdrawal = as_contract(&contract_key()).post(&url, &w).await.unwrap();
    assert_eq!((done.id.as_str(), done.state.as_str()), ("w1", "complete"));
    assert!(done.receipt.is_some());
    let st = status_of(
        as_contract(&Keypair::generate())
            .post::<_, Withdrawal>(&url, &w)
            .await,
    );
    assert_eq!(st.code, 403);
    let st = status_of(client().post::<_, Withdrawal>(&url, &w).await);
    assert_eq!(st.code, 403);
    let bad = Withdrawal {
        amount: 0,
        ..w.clone()
    };
    let st = status_of(
        as_contract(&contract_key())
            .post::<_, Withdrawal>(&url, &bad)
            .await,
    );
    assert_eq!(st.code, 400);
}
