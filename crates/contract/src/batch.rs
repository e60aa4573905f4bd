//! Sharetoken checks on submission, with the signatures of many tokens verified together
//! (ed25519 batch verification).
//!
//! [`check_batch`] applies the same checks as `Sharetoken::verify_for_settlement`, in the same
//! order (contract section present, its key is ours, the settlement window is open, client
//! signature, contract signature), to many tokens at once. The contract sections of tokens of
//! one servicekey are identical, so each distinct section is verified once per batch. If the
//! batch equation fails, every token of the batch is checked on its own to find the bad ones,
//! so one bad token costs its batch about one extra single verification per token.
//!
//! Caveat (documented by the ed25519 literature): a batch can accept a signature with
//! small-order components that the single verifier rejects. Only the holder of a servicekey
//! can produce such a signature over its own tokens, and it gains nothing by it: the token is
//! still bound to a servicekey this contract activated.
//!
//! [`Submitter`] feeds concurrent `/submit` requests into batches: one worker takes whatever
//! is queued (up to a bound), verifies it on the blocking pool, stores the good tokens in one
//! transaction and answers each request; while it works, new requests queue up and form the
//! next batch.

use crate::store::{ContractStore, Submission};
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::sharetoken::{Sharetoken, SharetokenError};

/// Most tokens verified in one batch.
pub const MAX_BATCH: usize = 256;

/// Queue bound of the batch worker: beyond it, submissions wait for room.
const QUEUE: usize = 4 * MAX_BATCH;

enum Source {
    Client(usize),
    Section,
}

/// Checks `tokens` (each with the time of its submission) for settlement at `contract`.
/// Returns one result per token, in order.
pub fn check_batch(
    contract: &PublicKey,
    tokens: &[(&Sharetoken, i64)],
) -> Vec<Result<(), SharetokenError>> {
    let mut results: Vec<Result<(), SharetokenError>> = Vec::with_capacity(tokens.len());
    let mut messages: Vec<Vec<u8>> = Vec::with_capacity(tokens.len() + 1);
    let mut signatures: Vec<ed25519_dalek::Signature> = Vec::with_capacity(tokens.len() + 1);
    let mut keys: Vec<VerifyingKey> = Vec::with_capacity(tokens.len() + 1);
    let mut sources: Vec<Source> = Vec::with_capacity(tokens.len() + 1);
    let mut sections: HashMap<(i64, i64, [u8; 64]), ()> = HashMap::new();
    let contract_vk = VerifyingKey::from_bytes(&contract.0).ok();

    for (i, (token, now)) in tokens.iter().enumerate() {
        match precheck(contract, token, *now) {
            Err(e) => results.push(Err(e)),
            Ok((client_vk, digest)) => {
                results.push(Ok(()));
                messages.push(digest.into_bytes());
                signatures.push(ed25519_dalek::Signature::from_bytes(&token.signature.0));
                keys.push(client_vk);
                sources.push(Source::Client(i));
                let Some(section) = token.contract.as_ref() else {
                    continue;
                };
                let sig = section.signature.map(|s| s.0).unwrap_or([0; 64]);
                let id = (section.settlement_open, section.settlement_close, sig);
                if sections.insert(id, ()).is_none() {
                    match contract_vk {
                        Some(vk) => {
                            messages.push(section.digest().into_bytes());
                            signatures.push(ed25519_dalek::Signature::from_bytes(&sig));
                            keys.push(vk);
                            sources.push(Source::Section);
                        }
                        // Our own key always decodes; if it somehow did not, fall back below.
                        None => sources.push(Source::Section),
                    }
                }
            }
        }
    }
    if messages.is_empty() {
        return results;
    }
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let all_good =
        contract_vk.is_some() && ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok();
    if !all_good {
        for source in &sources {
            if let Source::Client(i) = source {
                results[*i] = tokens[*i].0.verify_signatures();
            }
        }
    }
    results
}

/// The non-signature checks, in `verify_for_settlement`'s order; yields the client key and
/// the digest to verify.
fn precheck(
    contract: &PublicKey,
    token: &Sharetoken,
    now: i64,
) -> Result<(VerifyingKey, String), SharetokenError> {
    let section = token
        .contract
        .as_ref()
        .ok_or(SharetokenError::MissingContract)?;
    let got = section
        .public_key
        .ok_or(SharetokenError::MissingContractKey)?;
    if got != *contract {
        return Err(SharetokenError::WrongContract {
            expected: *contract,
            got,
        });
    }
    if !section.settleable(now) {
        return Err(SharetokenError::NotSettleable {
            now,
            open: section.settlement_open,
            close: section.settlement_close,
        });
    }
    let vk = VerifyingKey::from_bytes(&token.public_key.0)
        .map_err(|_| SharetokenError::BadClientSignature)?;
    Ok((vk, token.digest()?))
}

/// Checks every token on its own with `verify_for_settlement` (the baseline the batch is
/// measured against).
pub fn check_one_by_one(
    contract: &PublicKey,
    tokens: &[(&Sharetoken, i64)],
) -> Vec<Result<(), SharetokenError>> {
    tokens
        .iter()
        .map(|(t, now)| t.verify_for_settlement(contract, *now).map(drop))
        .collect()
}

/// What became of one submission in the pipeline.
pub type Outcome = Result<Submission, SharetokenError>;

struct Job {
    token: Sharetoken,
    now: i64,
    reply: oneshot::Sender<Result<Outcome, StoreFailed>>,
}

/// The pipeline's failure for a whole batch: it stopped (the runtime is shutting down) or
/// the batch's transaction failed (nothing of it was stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailed {
    /// The worker is gone.
    #[error("the submission pipeline has stopped")]
    Gone,
    /// The database refused the batch.
    #[error("storing the batch failed: {0}")]
    Store(String),
}

/// Handle to the submission pipeline; cheap to clone.
#[derive(Debug, Clone)]
pub struct Submitter {
    tx: mpsc::Sender<Job>,
}

impl Submitter {
    /// Starts the worker for `contract`'s submissions into `store` (on the current tokio
    /// runtime). Each round takes whatever is queued (up to [`MAX_BATCH`]), verifies it as
    /// one batch on the blocking pool and stores the good tokens in one transaction, so under
    /// load both the signature checks and the commits (fsyncs) are shared.
    pub fn spawn(contract: PublicKey, store: ContractStore) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let checked = tokio::task::spawn_blocking(move || {
                    let input: Vec<(&Sharetoken, i64)> =
                        jobs.iter().map(|j| (&j.token, j.now)).collect();
                    let results = check_batch(&contract, &input);
                    (jobs, results)
                })
                .await;
                // A panic in the blocking task drops the jobs: their callers see Gone.
                let Ok((jobs, results)) = checked else {
                    continue;
                };
                store_and_reply(&store, jobs, results).await;
            }
        });
        Submitter { tx }
    }

    /// Verifies and stores one token received at `now`.
    pub async fn submit(&self, token: Sharetoken, now: i64) -> Result<Outcome, StoreFailed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { token, now, reply })
            .await
            .map_err(|_| StoreFailed::Gone)?;
        rx.await.map_err(|_| StoreFailed::Gone)?
    }
}

async fn store_and_reply(
    store: &ContractStore,
    jobs: Vec<Job>,
    results: Vec<Result<(), SharetokenError>>,
) {
    let mut good = Vec::new();
    let mut replies = Vec::new();
    for (job, result) in jobs.into_iter().zip(results) {
        match result {
            Ok(()) => {
                let json = job
                    .token
                    .to_json()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                good.push((job, json));
            }
            Err(e) => replies.push((job.reply, Ok(Err(e)))),
        }
    }
    if !good.is_empty() {
        // Batches of one transaction each share a clock reading for `accepted_at`: the
        // newest submission time in the batch.
        let now = good.iter().map(|(j, _)| j.now).max().unwrap_or(0);
        let items: Vec<(&Sharetoken, &str)> = good
            .iter()
            .map(|(j, json)| (&j.token, json.as_str()))
            .collect();
        match store.submit_batch(&items, now).await {
            Ok(outcomes) => {
                for ((job, _), o) in good.into_iter().zip(outcomes) {
                    replies.push((job.reply, Ok(Ok(o))));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, tokens = good.len(), "storing submitted sharetokens failed");
                for (job, _) in good {
                    replies.push((job.reply, Err(StoreFailed::Store(e.to_string()))));
                }
            }
        }
    }
    for (reply, r) in replies {
        let _ = reply.send(r);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use wireleap_proto::keys::{Keypair, Signature};
    use wireleap_proto::servicekey::ContractSection;

    const OPEN: i64 = 1_000;
    const CLOSE: i64 = 2_000;

    fn contract() -> Keypair {
        Keypair::from_seed([2; 32])
    }

    fn token(sk: u8, relay: u8, nonce: u32) -> Sharetoken {
        let section = ContractSection::new_signed(&contract(), OPEN, CLOSE);
        Sharetoken::new_signed(
            &Keypair::from_seed([sk; 32]),
            section,
            Keypair::from_seed([relay; 32]).public(),
            OPEN - 10,
            format!("{nonce:032x}"),
        )
    }

    fn both(tokens: &[(&Sharetoken, i64)]) -> Vec<Result<(), SharetokenError>> {
        let c = contract().public();
        let a = check_batch(&c, tokens);
        let b = check_one_by_one(&c, tokens);
        assert_eq!(a, b, "batch and one-by-one disagree");
        a
    }

    #[test]
    fn good_batch_passes() {
        let ts: Vec<_> = (0..20).map(|i| token(10 + (i % 3) as u8, 1, i)).collect();
        let input: Vec<_> = ts.iter().map(|t| (t, OPEN)).collect();
        assert!(both(&input).iter().all(Result::is_ok));
    }

    #[test]
    fn bad_tokens_are_pinpointed() {
        let mut ts: Vec<_> = (0..10).map(|i| token(10, 1, i)).collect();
        ts[3].signature = Signature([7; 64]);
        ts[5].timestamp += 1;
        let other = ContractSection::new_signed(&Keypair::from_seed([9; 32]), OPEN, CLOSE);
        ts[6].contract = Some(other);
        let mut forged = ContractSection::new_signed(&contract(), OPEN, CLOSE + 1);
        forged.settlement_close = CLOSE;
        ts[7].contract = Some(forged);
        ts[7].sign(&Keypair::from_seed([10; 32])).unwrap();
        ts[8].contract = None;
        let input: Vec<_> = ts.iter().map(|t| (t, OPEN)).collect();
        let r = both(&input);
        let bad: Vec<usize> = r
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(bad, vec![3, 5, 6, 7, 8]);
        assert!(matches!(r[6], Err(SharetokenError::WrongContract { .. })));
        assert!(matches!(
            r[7],
            Err(SharetokenError::BadContractSignature(_))
        ));
        assert_eq!(r[8], Err(SharetokenError::MissingContract));
    }

    #[test]
    fn window_is_per_token_time() {
        let t = token(10, 1, 0);
        let r = both(&[(&t, OPEN - 1), (&t, OPEN), (&t, CLOSE - 1), (&t, CLOSE)]);
        assert!(r[0].is_err() && r[1].is_ok() && r[2].is_ok() && r[3].is_err());
    }

    #[tokio::test]
    async fn pipeline_answers_each_caller() {
        use crate::store::NewActivation;
        use wireleap_proto::rational::Rational;
        let db = wireleap_store::testing::sqlite().await.unwrap();
        let store = ContractStore::open(db.db.clone()).await.unwrap();
        store
            .activate(&NewActivation {
                pof_digest: "p".into(),
                pof_type: "dummy".into(),
                pof_expiration: 1,
                servicekey: Keypair::from_seed([10; 32]).public(),
                section: ContractSection::new_signed(&contract(), OPEN, CLOSE),
                value: Rational::from_integer(1),
                currency: "usd".into(),
                fee_percent: Rational::from_integer(0),
                now: 0,
            })
            .await
            .unwrap();
        let v = Submitter::spawn(contract().public(), store.clone());
        let mut handles = Vec::new();
        for i in 0..50u32 {
            let v = v.clone();
            handles.push(tokio::spawn(async move {
                let mut t = token(10, 1, i % 40);
                if i % 7 == 0 {
                    t.nonce.push('x');
                }
                (i, v.submit(t, OPEN).await.unwrap())
            }));
        }
        let mut accepted: std::collections::HashMap<u32, u32> = Default::default();
        let mut valid = std::collections::HashSet::new();
        for h in handles {
            let (i, r) = h.await.unwrap();
            match r {
                Err(_) => assert_eq!(i % 7, 0, "token {i} refused"),
                Ok(Submission::Accepted) => *accepted.entry(i % 40).or_default() += 1,
                Ok(Submission::Duplicate) => {}
                Ok(other) => panic!("token {i}: {other:?}"),
            }
            if i % 7 != 0 {
                valid.insert(i % 40);
            }
        }
        // Every distinct valid token was accepted exactly once.
        assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
        assert_eq!(accepted.len(), valid.len());
        let relay = Keypair::from_seed([1; 32]).public();
        let stored = store.token_counts(&relay).await.unwrap().accepted;
        assert_eq!(stored, accepted.len() as i64);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn batch_agrees_with_single(flips in proptest::collection::vec((0usize..8, 0usize..512), 0..4)) {
            let mut ts: Vec<_> = (0..8).map(|i| token(10 + (i % 2) as u8, 1, i)).collect();
            for (i, bit) in flips {
                let s = &mut ts[i].signature.0;
                s[(bit / 8) % 64] ^= 1 << (bit % 8);
            }
            let input: Vec<_> = ts.iter().map(|t| (t, OPEN)).collect();
            let _ = both(&input);
        }
    }
}
