//! The contract store's exactly-once rules, on every backend `wireleap_store::testing`
//! offers (SQLite always; PostgreSQL when WIRELEAP_TEST_POSTGRES is set), including races
//! between concurrent requests on one database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use wireleap_contract::store::{
    Activation, ContractStore, NewActivation, Submission, WithdrawalOutcome,
};
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::payout::{WithdrawalRequest, WithdrawalState};
use wireleap_proto::rational::Rational;
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::Sharetoken;

const NOW: i64 = 1_700_000_000;
const OPEN: i64 = NOW + 600;
const CLOSE: i64 = OPEN + 3600;

fn contract() -> Keypair {
    Keypair::from_seed([2; 32])
}

fn relay(n: u8) -> Keypair {
    Keypair::from_seed([100 + n; 32])
}

fn activation(pof_nonce: &str, sk: &Keypair) -> NewActivation {
    NewActivation {
        pof_digest: format!("dummy:{}:{pof_nonce}", NOW + 86400),
        pof_type: "dummy".into(),
        pof_expiration: NOW + 86400,
        servicekey: sk.public(),
        section: ContractSection::new_signed(&contract(), OPEN, CLOSE),
        value: Rational::from_integer(1000),
        currency: "usd".into(),
        fee_percent: Rational::from_integer(5),
        now: NOW,
    }
}

fn token(sk: &Keypair, relay: PublicKey, n: u32) -> Sharetoken {
    Sharetoken::new_signed(
        sk,
        ContractSection::new_signed(&contract(), OPEN, CLOSE),
        relay,
        NOW + i64::from(n),
        format!("{n:032x}"),
    )
}

async fn submit(store: &ContractStore, t: &Sharetoken) -> Submission {
    let json = String::from_utf8(t.to_json().unwrap()).unwrap();
    store.submit(t, &json, OPEN + 1).await.unwrap()
}

async fn stores() -> Vec<(wireleap_store::testing::TestDb, ContractStore)> {
    let mut out = Vec::new();
    for t in wireleap_store::testing::backends().await.unwrap() {
        let s = ContractStore::open(t.db.clone()).await.unwrap();
        out.push((t, s));
    }
    out
}

#[tokio::test]
async fn a_pof_is_spent_once_and_a_servicekey_activated_once() {
    for (t, store) in stores().await {
        let sk = Keypair::generate();
        assert_eq!(
            store.activate(&activation("p1", &sk)).await.unwrap(),
            Activation::Activated,
            "{}",
            t.name
        );
        assert_eq!(
            store.activate(&activation("p1", &sk)).await.unwrap(),
            Activation::PofSpent,
            "{}",
            t.name
        );
        assert_eq!(
            store
                .activate(&activation("p1", &Keypair::generate()))
                .await
                .unwrap(),
            Activation::PofSpent,
            "{}",
            t.name
        );
        assert_eq!(
            store.activate(&activation("p2", &sk)).await.unwrap(),
            Activation::ServicekeyTaken,
            "{}",
            t.name
        );
        // p2 was not spent by the refused request.
        assert_eq!(
            store
                .activate(&activation("p2", &Keypair::generate()))
                .await
                .unwrap(),
            Activation::Activated,
            "{}",
            t.name
        );
        // Migrating again is a no-op.
        ContractStore::open(t.db.clone()).await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_activations_of_one_pof_yield_one_success() {
    const N: usize = 24;
    for (t, store) in stores().await {
        let store = Arc::new(store);
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let mut tasks = Vec::new();
        for _ in 0..N {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                let a = activation("race", &Keypair::generate());
                barrier.wait().await;
                store.activate(&a).await.unwrap()
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let wins = outcomes
            .iter()
            .filter(|o| **o == Activation::Activated)
            .count();
        let spent = outcomes
            .iter()
            .filter(|o| **o == Activation::PofSpent)
            .count();
        assert_eq!((wins, spent), (1, N - 1), "{}: {outcomes:?}", t.name);
    }
}

#[tokio::test]
async fn submissions_count_once_and_only_for_activated_windows() {
    for (t, store) in stores().await {
        let sk = Keypair::generate();
        store.activate(&activation("s", &sk)).await.unwrap();
        let r = relay(1).public();
        let tok = token(&sk, r, 1);
        assert_eq!(
            submit(&store, &tok).await,
            Submission::Accepted,
            "{}",
            t.name
        );
        assert_eq!(
            submit(&store, &tok).await,
            Submission::Duplicate,
            "{}",
            t.name
        );
        assert_eq!(
            submit(&store, &token(&sk, r, 2)).await,
            Submission::Accepted,
            "{}",
            t.name
        );

        let stranger = Keypair::generate();
        assert_eq!(
            submit(&store, &token(&stranger, r, 1)).await,
            Submission::UnknownServicekey,
            "{}",
            t.name
        );
        // A window the contract did sign, but not for this servicekey.
        let mut other = token(&sk, r, 3);
        other.contract = Some(ContractSection::new_signed(&contract(), OPEN, CLOSE + 1));
        other.sign(&sk).unwrap();
        assert_eq!(
            submit(&store, &other).await,
            Submission::WindowMismatch,
            "{}",
            t.name
        );

        let counts = store.token_counts(&r).await.unwrap();
        assert_eq!((counts.accepted, counts.unsettled), (2, 2), "{}", t.name);
        assert_eq!(store.token_ids(&r).await.unwrap().len(), 2, "{}", t.name);
    }
}

#[tokio::test]
async fn concurrent_submissions_of_one_token_count_once() {
    const N: usize = 24;
    for (t, store) in stores().await {
        let sk = Keypair::generate();
        store.activate(&activation("c", &sk)).await.unwrap();
        let r = relay(1).public();
        let tok = Arc::new(token(&sk, r, 7));
        let store = Arc::new(store);
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let mut tasks = Vec::new();
        for _ in 0..N {
            let (store, barrier, tok) = (store.clone(), barrier.clone(), tok.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                submit(&store, &tok).await
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let accepted = outcomes
            .iter()
            .filter(|o| **o == Submission::Accepted)
            .count();
        let dups = outcomes
            .iter()
            .filter(|o| **o == Submission::Duplicate)
            .count();
        assert_eq!((accepted, dups), (1, N - 1), "{}: {outcomes:?}", t.name);
        assert_eq!(
            store.token_counts(&r).await.unwrap().accepted,
            1,
            "{}",
            t.name
        );

        // The one credit is exact at settlement.
        let settled = store.settle_due(CLOSE, 10).await.unwrap();
        assert_eq!(settled.len(), 1, "{}", t.name);
        assert_eq!(
            settled[0].credits,
            vec![(r.to_b64(), Rational::from_integer(950))]
        );
    }
}

#[tokio::test]
async fn settlement_splits_exactly_once_even_when_raced() {
    for (t, store) in stores().await {
        let sk = Keypair::generate();
        store.activate(&activation("x", &sk)).await.unwrap();
        let (a, b) = (relay(1).public(), relay(2).public());
        for n in 0..2 {
            assert_eq!(
                submit(&store, &token(&sk, a, n)).await,
                Submission::Accepted
            );
        }
        assert_eq!(
            submit(&store, &token(&sk, b, 9)).await,
            Submission::Accepted
        );
        // Not due before the window closes.
        assert!(
            store.settle_due(CLOSE - 1, 10).await.unwrap().is_empty(),
            "{}",
            t.name
        );

        // Two "instances" settle at once: exactly one does it.
        let (s1, s2) = (store.clone(), store.clone());
        let (r1, r2) = tokio::join!(s1.settle_due(CLOSE, 10), s2.settle_due(CLOSE, 10));
        let done: Vec<_> = r1.unwrap().into_iter().chain(r2.unwrap()).collect();
        assert_eq!(done.len(), 1, "{}: {done:?}", t.name);
        let s = &done[0];
        assert_eq!(s.tokens, 3);
        let mut credits = s.credits.clone();
        credits.sort();
        let mut want = vec![
            (a.to_b64(), "1900/3".parse::<Rational>().unwrap()),
            (b.to_b64(), "950/3".parse::<Rational>().unwrap()),
        ];
        want.sort();
        assert_eq!(credits, want, "{}", t.name);
        assert_eq!(s.retained, Rational::from_integer(50));
        assert!(store.settle_due(CLOSE + 100, 10).await.unwrap().is_empty());

        // After settlement nothing more is accepted for the servicekey.
        assert_eq!(
            submit(&store, &token(&sk, a, 5)).await,
            Submission::Settled,
            "{}",
            t.name
        );
        let money = store.money(&a).await.unwrap();
        assert_eq!(money.available, "1900/3".parse::<Rational>().unwrap());
        let counts = store.token_counts(&a).await.unwrap();
        assert_eq!((counts.accepted, counts.unsettled), (2, 0));
    }
}

#[tokio::test]
async fn withdrawals_respect_balance_and_one_pending() {
    for (t, store) in stores().await {
        let sk = Keypair::generate();
        store.activate(&activation("w", &sk)).await.unwrap();
        let r = relay(3).public();
        submit(&store, &token(&sk, r, 1)).await;
        store.settle_due(CLOSE, 10).await.unwrap();
        let req = |amount| WithdrawalRequest {
            amount,
            kind: "dummy".into(),
            destination: "acct".into(),
        };
        // 950 available.
        assert_eq!(
            store
                .request_withdrawal(&r, "w0", &req(951), NOW)
                .await
                .unwrap(),
            WithdrawalOutcome::Insufficient {
                available: Rational::from_integer(950)
            },
            "{}",
            t.name
        );
        let WithdrawalOutcome::Created(w) = store
            .request_withdrawal(&r, "w1", &req(500), NOW)
            .await
            .unwrap()
        else {
            panic!("{}: first withdrawal refused", t.name);
        };
        assert_eq!(w.state, "pending");
        assert_eq!(
            store
                .request_withdrawal(&r, "w2", &req(10), NOW)
                .await
                .unwrap(),
            WithdrawalOutcome::AlreadyPending,
            "{}",
            t.name
        );
        let money = store.money(&r).await.unwrap();
        assert_eq!(money.pending, Rational::from_integer(500));
        assert_eq!(money.available, Rational::from_integer(450));
        let receipt = serde_json::json!({"ok": 1});
        assert!(store
            .finish_withdrawal("w1", WithdrawalState::Complete, Some(&receipt), NOW + 1)
            .await
            .unwrap());
        assert!(!store
            .finish_withdrawal("w1", WithdrawalState::Failed, None, NOW + 2)
            .await
            .unwrap());
        let last = store.last_withdrawal(&r).await.unwrap().unwrap();
        assert_eq!((last.id.as_str(), last.state.as_str()), ("w1", "complete"));
        assert_eq!(last.receipt, Some(receipt));

        // A failed withdrawal gives the money back.
        let WithdrawalOutcome::Created(_) = store
            .request_withdrawal(&r, "w3", &req(450), NOW + 3)
            .await
            .unwrap()
        else {
            panic!("{}: second withdrawal refused", t.name);
        };
        assert!(store
            .finish_withdrawal("w3", WithdrawalState::Failed, None, NOW + 4)
            .await
            .unwrap());
        let money = store.money(&r).await.unwrap();
        assert_eq!(money.available, Rational::from_integer(450), "{}", t.name);
        assert_eq!(money.pending, Rational::from_integer(0));
        assert!(store.pending_withdrawals().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn concurrent_withdrawals_leave_one_pending() {
    const N: usize = 12;
    for (t, store) in stores().await {
        let sk = Keypair::generate();
        store.activate(&activation("cw", &sk)).await.unwrap();
        let r = relay(4).public();
        submit(&store, &token(&sk, r, 1)).await;
        store.settle_due(CLOSE, 10).await.unwrap();
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..N {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let req = WithdrawalRequest {
                    amount: 900,
                    kind: "dummy".into(),
                    destination: "acct".into(),
                };
                store
                    .request_withdrawal(&r, &format!("id{i}"), &req, NOW)
                    .await
                    .unwrap()
            }));
        }
        let mut created = 0;
        for task in tasks {
            if matches!(task.await.unwrap(), WithdrawalOutcome::Created(_)) {
                created += 1;
            }
        }
        assert_eq!(created, 1, "{}", t.name);
        assert_eq!(
            store.money(&r).await.unwrap().available,
            Rational::from_integer(50)
        );
    }
}

#[tokio::test]
async fn one_transaction_batches_keep_per_token_outcomes() {
    for (t, store) in stores().await {
        let (sk, gone) = (Keypair::generate(), Keypair::generate());
        store.activate(&activation("b1", &sk)).await.unwrap();
        let r = relay(5).public();
        let a = token(&sk, r, 1);
        let b = token(&sk, r, 2);
        let unknown = token(&Keypair::generate(), r, 3);
        let mut skewed = token(&sk, r, 4);
        skewed.contract = Some(ContractSection::new_signed(&contract(), OPEN + 1, CLOSE));
        skewed.sign(&sk).unwrap();
        let json = |t: &Sharetoken| String::from_utf8(t.to_json().unwrap()).unwrap();
        let texts: Vec<String> = [&a, &b, &a, &unknown, &skewed]
            .iter()
            .map(|t| json(t))
            .collect();
        let items: Vec<(&Sharetoken, &str)> = [&a, &b, &a, &unknown, &skewed]
            .into_iter()
            .zip(texts.iter().map(String::as_str))
            .collect();
        let out = store.submit_batch(&items, OPEN).await.unwrap();
        // `a` twice in one batch: the sorted order decides which copy counts, never both.
        let accepted_a = [out[0], out[2]]
            .iter()
            .filter(|o| **o == Submission::Accepted)
            .count();
        assert_eq!(accepted_a, 1, "{}: {out:?}", t.name);
        assert!(out[0] == Submission::Duplicate || out[2] == Submission::Duplicate);
        assert_eq!(
            &out[1..],
            &[
                Submission::Accepted,
                out[2],
                Submission::UnknownServicekey,
                Submission::WindowMismatch
            ][..],
            "{}",
            t.name
        );
        assert_eq!(
            store.token_counts(&r).await.unwrap().accepted,
            2,
            "{}",
            t.name
        );
        assert_eq!(
            store.token_ids(&r).await.unwrap().len(),
            2,
            "refused tokens are not kept"
        );

        // Settled servicekeys refuse in batches too; nothing of the refused rows remains.
        store.activate(&activation("b2", &gone)).await.unwrap();
        store.settle_due(CLOSE, 10).await.unwrap();
        let late = token(&gone, r, 9);
        let text = json(&late);
        let out = store
            .submit_batch(&[(&late, text.as_str())], OPEN)
            .await
            .unwrap();
        assert_eq!(out, vec![Submission::Settled], "{}", t.name);
        assert_eq!(store.token_counts(&r).await.unwrap().accepted, 2);
    }
}

/// A fresh database on the PostgreSQL server named by WIRELEAP_TEST_POSTGRES, returned as a
/// URL so that two independent pools ("instances") can open it.
async fn postgres_url() -> Option<String> {
    let admin_url = match std::env::var(wireleap_store::testing::POSTGRES_ENV) {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert_ne!(
                std::env::var("WIRELEAP_REQUIRE_POSTGRES").as_deref(),
                Ok("1"),
                "WIRELEAP_REQUIRE_POSTGRES=1 but WIRELEAP_TEST_POSTGRES is not set"
            );
            eprintln!("SKIPPED two-instance PostgreSQL test: WIRELEAP_TEST_POSTGRES is not set");
            return None;
        }
    };
    let admin = wireleap_store::Db::open(&admin_url).await.unwrap();
    let name = format!("wl_test_two_{}", wireleap_proto::nonce::generate(16));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .unwrap();
    admin.close().await;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (admin_url.clone(), String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Some(format!("{}/{name}{query}", &base[..host_end]))
}

#[tokio::test]
async fn two_instances_on_one_postgres_database() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let a = ContractStore::open(wireleap_store::Db::open(&url).await.unwrap())
        .await
        .unwrap();
    let b = ContractStore::open(wireleap_store::Db::open(&url).await.unwrap())
        .await
        .unwrap();

    // One pof raced through both instances.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.activate(&activation("shared", &Keypair::generate()))
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap() == Activation::Activated);
    }
    assert_eq!(wins, 1);

    // Overlapping batches in opposite orders through both: no deadlock, each token once.
    let sks: Vec<Keypair> = (0..4).map(|_| Keypair::generate()).collect();
    for (i, sk) in sks.iter().enumerate() {
        a.activate(&activation(&format!("sk{i}"), sk))
            .await
            .unwrap();
    }
    let r = relay(7).public();
    let all: Vec<Sharetoken> = (0..200u32)
        .map(|n| token(&sks[n as usize % 4], r, n))
        .collect();
    let texts: Vec<String> = all
        .iter()
        .map(|t| String::from_utf8(t.to_json().unwrap()).unwrap())
        .collect();
    let all = Arc::new(all);
    let texts = Arc::new(texts);
    let mut tasks = Vec::new();
    for round in 0..16usize {
        let s = if round % 2 == 0 { a.clone() } else { b.clone() };
        let (all, texts) = (all.clone(), texts.clone());
        tasks.push(tokio::spawn(async move {
            let mut idx: Vec<usize> = (0..all.len()).filter(|i| i % 8 <= round % 4 + 4).collect();
            if round % 2 == 1 {
                idx.reverse();
            }
            let items: Vec<(&Sharetoken, &str)> =
                idx.iter().map(|i| (&all[*i], texts[*i].as_str())).collect();
            let out = s.submit_batch(&items, OPEN + 1).await.unwrap();
            idx.into_iter()
                .zip(out)
                .filter(|(_, o)| *o == Submission::Accepted)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        }));
    }
    let mut accepted = std::collections::HashMap::<usize, u32>::new();
    for t in tasks {
        for i in t.await.unwrap() {
            *accepted.entry(i).or_default() += 1;
        }
    }
    assert!(accepted.values().all(|n| *n == 1), "a token accepted twice");
    let counted = a.token_counts(&r).await.unwrap().accepted;
    assert_eq!(counted, accepted.len() as i64);

    // Both instances' settlement jobs: every servicekey settled by exactly one of them.
    let (x, y) = tokio::join!(a.settle_due(CLOSE, 100), b.settle_due(CLOSE, 100));
    let settled: Vec<_> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(settled.len(), 5, "4 servicekeys plus the raced activation");
    let tokens: i64 = settled.iter().map(|s| s.tokens).sum();
    assert_eq!(tokens, counted);
    a.db().close().await;
    b.db().close().await;
}
