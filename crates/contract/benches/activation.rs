//! Servicekey activations per second against SQLite (WAL, synchronous=FULL, one fsync per
//! commit): through the store alone (pof check, section signing, the spend-once insert) and
//! through the whole HTTP API on 127.0.0.1 with 16 concurrent clients. For comparison, the
//! same API's sharetoken submissions per second (relay-signed, batch-verified, stored once).
//! Run: `cargo bench -p wireleap-contract --bench activation`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use wireleap_api::{ApiClient, RetryPolicy};
use wireleap_contract::store::{Activation, NewActivation};
use wireleap_contract::{router, ContractConfig, ContractState, ContractStore};
use wireleap_proto::keys::Keypair;
use wireleap_proto::pof::{ActivationRequest, Pof};
use wireleap_proto::rational::Rational;
use wireleap_proto::servicekey::ContractSection;

const N: usize = 2000;
const NOW: i64 = 1_700_000_000;

fn pofs(issuer: &Keypair, tag: &str) -> Vec<Pof> {
    (0..N)
        .map(|i| {
            Pof::new_signed(
                issuer,
                "dummy".into(),
                NOW + 86400,
                format!("{tag}{i:016x}"),
            )
        })
        .collect()
}

async fn store_only(issuer: &Keypair) -> f64 {
    let db = wireleap_store::testing::sqlite().await.unwrap();
    let store = ContractStore::open(db.db.clone()).await.unwrap();
    let contract = Keypair::from_seed([2; 32]);
    let ps = pofs(issuer, "s");
    let t = Instant::now();
    for p in &ps {
        p.verify(&[issuer.public()], NOW).unwrap();
        let section = ContractSection::new_signed(&contract, NOW + 600, NOW + 4200);
        let a = NewActivation {
            pof_digest: p.digest(),
            pof_type: p.kind.clone(),
            pof_expiration: p.expiration,
            servicekey: Keypair::generate().public(),
            section,
            value: Rational::from_integer(1000),
            currency: "usd".into(),
            fee_percent: Rational::from_integer(5),
            now: NOW,
        };
        assert_eq!(store.activate(&a).await.unwrap(), Activation::Activated);
    }
    N as f64 / t.elapsed().as_secs_f64()
}

async fn over_http(issuer: &Keypair) -> f64 {
    let db = wireleap_store::testing::sqlite().await.unwrap();
    let store = ContractStore::open(db.db.clone()).await.unwrap();
    let config: ContractConfig = serde_json::from_value(serde_json::json!({
        "proof_of_funding": [{"type": "dummy", "pubkey": issuer.public()}],
        "servicekey": {"value": "1000", "currency": "usd", "duration": "10m"},
    }))
    .unwrap();
    let state =
        ContractState::new(Keypair::from_seed([2; 32]), config, store, Arc::new(|| NOW)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/servicekey/activate",
        listener.local_addr().unwrap()
    );
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(wireleap_api::serve(
        listener,
        router(state),
        None,
        stop.clone(),
        Duration::from_secs(1),
    ));
    let client = ApiClient::new(None, false)
        .unwrap()
        .with_retry(RetryPolicy::ONCE);
    let ps = Arc::new(pofs(issuer, "h"));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (client, ps, next, url) = (client.clone(), ps.clone(), next.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= N {
                    return;
                }
                let req = ActivationRequest::new(Keypair::generate().public(), ps[i].clone());
                let _: ContractSection = client.post(&url, &req).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let rate = N as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    rate
}

async fn submissions_over_http(issuer: &Keypair) -> f64 {
    let db = wireleap_store::testing::sqlite().await.unwrap();
    let store = ContractStore::open(db.db.clone()).await.unwrap();
    let config: ContractConfig = serde_json::from_value(serde_json::json!({
        "proof_of_funding": [{"type": "dummy", "pubkey": issuer.public()}],
        "servicekey": {"value": "1000", "currency": "usd", "duration": "10m"},
    }))
    .unwrap();
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(NOW));
    let c = clock.clone();
    let state = ContractState::new(
        Keypair::from_seed([2; 32]),
        config,
        store,
        Arc::new(move || c.load(std::sync::atomic::Ordering::SeqCst)),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(wireleap_api::serve(
        listener,
        router(state),
        None,
        stop.clone(),
        Duration::from_secs(1),
    ));
    let client = ApiClient::new(None, false)
        .unwrap()
        .with_retry(RetryPolicy::ONCE);
    let relay = Keypair::generate();
    let mut tokens = Vec::new();
    for (i, p) in pofs(issuer, "t").into_iter().take(N / 50).enumerate() {
        let sk = Keypair::generate();
        let req = ActivationRequest::new(sk.public(), p);
        let section: ContractSection = client
            .post(&format!("{base}/servicekey/activate"), &req)
            .await
            .unwrap();
        for j in 0..50 {
            tokens.push(wireleap_proto::sharetoken::Sharetoken::new_signed(
                &sk,
                section.clone(),
                relay.public(),
                NOW,
                format!("{i:016x}{j:016x}"),
            ));
        }
    }
    clock.store(NOW + 600, std::sync::atomic::Ordering::SeqCst);
    let relay_client = ApiClient::new(
        Some(wireleap_api::Identity {
            keypair: relay,
            component: wireleap_proto::version::Component::Relay,
            interfaces: vec![wireleap_proto::version::Interface::RelayContract],
        }),
        false,
    )
    .unwrap()
    .with_retry(RetryPolicy::ONCE);
    let tokens = Arc::new(tokens);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("{base}/submit");
    let t = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (c, tokens, next, url) = (
            relay_client.clone(),
            tokens.clone(),
            next.clone(),
            url.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= tokens.len() {
                    return;
                }
                let _: wireleap_proto::status::Status = c.post(&url, &tokens[i]).await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let rate = tokens.len() as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    rate
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let issuer = Keypair::from_seed([4; 32]);
    println!("servicekey activations against SQLite, {N} each");
    let a = rt.block_on(store_only(&issuer));
    println!("store (verify pof, sign section, insert once)  {a:>8.0} activations/s");
    let b = rt.block_on(over_http(&issuer));
    println!("HTTP API, 16 concurrent clients                {b:>8.0} activations/s");
    let c = rt.block_on(submissions_over_http(&issuer));
    println!("sharetoken submissions, HTTP API, 16 clients   {c:>8.0} tokens/s");
}
