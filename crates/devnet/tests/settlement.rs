//! End-to-end: settlement reaching the contract in a whole devnet of real processes. With
//! short servicekeys and a short submission window, traffic through the 3-hop circuit makes
//! each relay store a sharetoken, submit it once the servicekey's settlement window opens,
//! and, after the window closes, hold a balance at the contract: the servicekey's value
//! minus the contract's 5 % fee, split among the relays by accepted tokens, which a relay
//! can then withdraw through the contract and ps-dummy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use wireleap_devnet::probe::http_via_socks;
use wireleap_devnet::{Devnet, Options};
use wireleap_e2e as harness;

fn balance(home: &std::path::Path) -> Value {
    let out = harness::run(
        Command::new(home.join("wireleap-relay"))
            .arg("--home")
            .arg(home)
            .arg("balance"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(out.code(), Some(0), "balance: {out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v[0]["balance"].clone()
}

#[test]
fn sharetokens_are_submitted_accepted_and_settled_at_the_contract() {
    let scratch = tempfile::tempdir().unwrap();
    let net = Devnet::launch(&Options {
        socks_port: Some(harness::free_port().unwrap()),
        servicekey_duration: "8s".into(),
        submission_window: "8s".into(),
        ..Options::new(scratch.path().join("net"))
    })
    .expect("the devnet comes up");
    let socks: SocketAddr = net.info.client.socks.parse().unwrap();
    let contract: SocketAddr = net
        .info
        .contract
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    for _ in 0..3 {
        let (code, _) = http_via_socks(
            socks,
            "127.0.0.1",
            contract.port(),
            "/info",
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(code, 200);
    }

    // Every relay of the circuit gets its tokens accepted by the contract...
    harness::wait_until(
        Duration::from_secs(90),
        "every relay's sharetokens accepted by the contract",
        || {
            net.relay_status().iter().all(|s| {
                s.as_ref()
                    .and_then(|v| v["sharetokens"]["accepted"].as_u64())
                    .is_some_and(|n| n > 0)
            })
        },
    )
    .unwrap();
    // ...and, once the submission window closed, a share of the servicekeys' value.
    harness::wait_until(
        Duration::from_secs(90),
        "every relay credited by the settlement",
        || {
            net.info.relays.iter().all(|r| {
                balance(&r.home)["available"]
                    .as_i64()
                    .is_some_and(|a| a > 0)
            })
        },
    )
    .unwrap();
    // One circuit carried every stream, so each relay accepted as many tokens for each
    // servicekey as the others, and the value is split equally.
    let balances: Vec<Value> = net.info.relays.iter().map(|r| balance(&r.home)).collect();
    for (r, b) in net.info.relays.iter().zip(&balances) {
        println!("{} balance: {b}", r.role);
        assert_eq!(b["currency"], "usd", "{b}");
        assert!(b["tokens"].as_i64().unwrap_or(0) >= 3, "{b}");
    }
    assert_eq!(balances[0]["value"], balances[1]["value"], "{balances:?}");
    assert_eq!(balances[1]["value"], balances[2]["value"], "{balances:?}");
    assert_eq!(balances[0]["tokens"], balances[2]["tokens"], "{balances:?}");

    // The backing relay takes its money out through the contract and ps-dummy.
    let backing = &net.info.relays[2].home;
    let available = balances[2]["available"].as_i64().unwrap();
    let out = harness::run(
        Command::new(backing.join("wireleap-relay"))
            .arg("--home")
            .arg(backing)
            .args(["withdraw", "--contract", &net.info.contract])
            .args(["--destination", "devnet-account", "--amount"])
            .arg(available.to_string()),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(out.code(), Some(0), "withdraw: {out}");
    let w: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(w["state"], "complete", "{w}");
    assert_eq!(w["amount"], available, "{w}");
    assert_eq!(balance(backing)["available"], 0);
}
