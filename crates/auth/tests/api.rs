//! Auth's `POST /pofs` against a real server on 127.0.0.1, called as payment services call
//! it, on every storage backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http::Method;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wireleap_api::{ApiClient, ApiError, Identity, RetryPolicy};
use wireleap_auth::api::AuthInfo;
use wireleap_auth::{router, AuthConfig, AuthState, AuthStore, PaymentService};
use wireleap_proto::keys::Keypair;
use wireleap_proto::payout::{Accounting, PofRequest};
use wireleap_proto::pof::Pof;
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface};

const T0: i64 = 1_700_000_000;

fn ps_key() -> Keypair {
    Keypair::from_seed([6; 32])
}

struct Server {
    url: String,
    store: AuthStore,
    stop: CancellationToken,
    _db: wireleap_store::testing::TestDb,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn servers() -> Vec<Server> {
    let mut out = Vec::new();
    for db in wireleap_store::testing::backends().await.unwrap() {
        let store = AuthStore::open(db.db.clone()).await.unwrap();
        let config = AuthConfig {
            payment_services: vec![PaymentService {
                kind: "dummy".into(),
                pubkey: ps_key().public(),
            }],
            max_quantity: 50,
            ..AuthConfig::default()
        };
        let state = AuthState::new(
            Keypair::from_seed([1; 32]),
            config,
            store.clone(),
            Arc::new(|| T0),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(wireleap_api::serve(
            listener,
            router(state),
            None,
            stop.clone(),
            Duration::from_secs(1),
        ));
        out.push(Server {
            url,
            store,
            stop,
            _db: db,
        });
    }
    out
}

fn ps_client(kp: &Keypair) -> ApiClient {
    ApiClient::new(
        Some(Identity {
            keypair: kp.clone(),
            component: Component::PaymentService,
            interfaces: vec![Interface::PsAuth],
        }),
        false,
    )
    .unwrap()
    .with_retry(RetryPolicy::ONCE)
}

fn req(quantity: i64, kind: &str, duration: i64) -> PofRequest {
    PofRequest {
        quantity,
        kind: kind.into(),
        duration,
        accounting: Some(Accounting {
            price: 0,
            currency: "usd".into(),
        }),
    }
}

fn status_of<T: std::fmt::Debug>(r: Result<T, ApiError>) -> Status {
    match r {
        Err(ApiError::Status { status, .. }) => *status,
        other => panic!("expected a status reply, got {other:?}"),
    }
}

#[tokio::test]
async fn trusted_payment_service_gets_signed_pofs() {
    for s in servers().await {
        let info: AuthInfo = ps_client(&ps_key())
            .get(&format!("{}/info", s.url))
            .await
            .unwrap();
        let url = format!("{}/pofs", s.url);
        let pofs: Vec<Pof> = ps_client(&ps_key())
            .post(&url, &req(3, "dummy", 60))
            .await
            .unwrap();
        assert_eq!(pofs.len(), 3);
        for p in &pofs {
            assert_eq!(p.expiration, T0 + 60);
            p.verify(&[info.pubkey], T0).unwrap();
        }
        let by = ps_key().public().to_b64();
        assert_eq!(s.store.issued_count(&by).await.unwrap(), 3);

        // Refusals, none of which issues anything.
        let stranger = status_of(
            ps_client(&Keypair::generate())
                .post::<_, Vec<Pof>>(&url, &req(1, "dummy", 60))
                .await,
        );
        assert_eq!(stranger.code, 403);
        assert!(stranger.cause.unwrap().contains("not trusted"));
        let wrong_type = status_of(
            ps_client(&ps_key())
                .post::<_, Vec<Pof>>(&url, &req(1, "stripe", 60))
                .await,
        );
        assert_eq!(wrong_type.code, 403);
        for bad in [
            req(0, "dummy", 60),
            req(51, "dummy", 60),
            req(1, "dummy", 0),
        ] {
            let st = status_of(ps_client(&ps_key()).post::<_, Vec<Pof>>(&url, &bad).await);
            assert_eq!(st.code, 400, "{bad:?}: {st}");
        }
        let unsigned = status_of(
            ApiClient::new(None, false)
                .unwrap()
                .post::<_, Vec<Pof>>(&url, &req(1, "dummy", 60))
                .await,
        );
        assert_eq!(unsigned.code, 403);
        let extra = br#"{"quantity":1,"type":"dummy","duration":60,"price":5}"#;
        let st = status_of(
            ps_client(&ps_key())
                .send_once(&Method::POST, &url, &Bytes::from_static(extra), None, &[])
                .await,
        );
        assert!(st.cause.unwrap().contains("unknown field"));
        assert_eq!(s.store.issued_count(&by).await.unwrap(), 3);
    }
}
