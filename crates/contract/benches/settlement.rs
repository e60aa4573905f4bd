//! Sharetoken settlement verification: ed25519 batch verification (`batch::check_batch`) against
//! one-by-one `Sharetoken::verify_for_settlement`, on the same tokens in the same run.
//!
//! Two token sets: every token with its own contract section (no section is shared, so the
//! gain is batch verification alone), and 64 tokens per servicekey (the realistic case: a
//! servicekey's tokens carry one identical section, which the batch verifies once).
//! Run: `cargo bench -p wireleap-contract --bench settlement`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use wireleap_contract::batch::{check_batch, check_one_by_one, MAX_BATCH};
use wireleap_proto::keys::Keypair;
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::Sharetoken;

const TOKENS: usize = 4096;
const ROUNDS: usize = 5;
const OPEN: i64 = 1_700_000_000;

fn tokens(per_servicekey: usize) -> Vec<Sharetoken> {
    let contract = Keypair::from_seed([2; 32]);
    let relays: Vec<_> = (0..3u8)
        .map(|i| Keypair::from_seed([10 + i; 32]).public())
        .collect();
    let mut out = Vec::with_capacity(TOKENS);
    let mut sk = Keypair::generate();
    let mut section = ContractSection::new_signed(&contract, OPEN, OPEN + 3600);
    for i in 0..TOKENS {
        if i % per_servicekey == 0 {
            sk = Keypair::generate();
            // Sections differ by their window, as activations at different times do.
            let open = OPEN + i as i64;
            section = ContractSection::new_signed(&contract, open, open + 1_000_000);
        }
        out.push(Sharetoken::new_signed(
            &sk,
            section.clone(),
            relays[i % relays.len()],
            OPEN - 100,
            format!("{i:032x}"),
        ));
    }
    out
}

fn best<F: FnMut() -> usize>(mut f: F) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let ok = f();
        assert_eq!(ok, TOKENS, "every token must pass");
        best = best.min(t.elapsed());
    }
    best
}

fn run(label: &str, per_servicekey: usize) {
    let contract = Keypair::from_seed([2; 32]).public();
    let ts = tokens(per_servicekey);
    let now = OPEN + TOKENS as i64;
    let input: Vec<_> = ts.iter().map(|t| (t, now)).collect();
    let single = best(|| {
        check_one_by_one(&contract, &input)
            .iter()
            .filter(|r| r.is_ok())
            .count()
    });
    let batched = best(|| {
        input
            .chunks(MAX_BATCH)
            .map(|c| {
                check_batch(&contract, c)
                    .iter()
                    .filter(|r| r.is_ok())
                    .count()
            })
            .sum()
    });
    let rate = |d: Duration| TOKENS as f64 / d.as_secs_f64();
    println!(
        "{label:<44} one-by-one {:>8.0} tokens/s   batch({MAX_BATCH}) {:>8.0} tokens/s   speed-up {:.2}x",
        rate(single),
        rate(batched),
        single.as_secs_f64() / batched.as_secs_f64()
    );
}

fn main() {
    // `cargo test` runs bench targets with `--bench` absent; keep that quick.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    println!("sharetoken settlement verification, {TOKENS} tokens, best of {ROUNDS}");
    run("distinct section per token (batch only)", 1);
    run("64 tokens per servicekey (shared section)", 64);
}
