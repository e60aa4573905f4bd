//! The money side with the real binaries: `wireleap-auth`, `wireleap-ps-dummy` and
//! `wireleap-contract` on loopback with generated configs in scratch homes. An access key is
//! fetched with `wireleap-ps-dummy accesskeys`, a servicekey activated at the contract, a
//! sharetoken submitted as a relay and the relay's balance read back after settlement; an
//! offline `wireleap-auth issue` key works the same way. Then the contract is SIGKILLed five
//! times during a stream of submissions: afterwards every token counts exactly once.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wireleap_api::{ApiClient, ApiError, Identity, RetryPolicy};
use wireleap_e2e::{binary, free_addr, http_get, run, wait_until, ProcessGuard, ScratchHome};
use wireleap_proto::accesskey::AccessKey;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::pof::{ActivationRequest, Pof};
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::Sharetoken;
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface};

type TestResult = anyhow::Result<()>;

/// One daemon under test: its home, address and the running process (if started).
struct Node {
    bin: &'static str,
    home: ScratchHome,
    addr: SocketAddr,
    proc: Option<ProcessGuard>,
}

impl Node {
    fn init(bin: &'static str) -> anyhow::Result<Node> {
        let home = ScratchHome::new()?;
        let out = run(
            Command::new(binary(bin)?)
                .arg("--home")
                .arg(home.path())
                .arg("init"),
            Duration::from_secs(60),
        )?;
        anyhow::ensure!(out.status.success(), "{bin} init failed: {out}");
        Ok(Node {
            bin,
            home,
            addr: free_addr()?,
            proc: None,
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn pubkey(&self) -> anyhow::Result<PublicKey> {
        let text = self.home.read("key.pub")?;
        let b64: String = serde_json::from_str(&text)?;
        Ok(PublicKey::from_b64(&b64)?)
    }

    fn configure(&self, config: serde_json::Value) -> anyhow::Result<()> {
        self.home
            .write("config.json", serde_json::to_vec_pretty(&config)?)
    }

    /// `start --fg` as our child (so it can be SIGKILLed), output appended to `fg.log`;
    /// returns once `GET /info` (or any path) answers.
    fn start(&mut self) -> TestResult {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.home.file("fg.log"))?;
        let child = Command::new(binary(self.bin)?)
            .arg("--home")
            .arg(self.home.path())
            .args(["start", "--fg"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.proc = Some(ProcessGuard::child(child));
        let addr = self.addr;
        let started = wait_until(Duration::from_secs(30), "the API to answer", || {
            http_get(addr, "/info", Duration::from_secs(1)).is_ok()
        });
        if started.is_err() {
            anyhow::bail!(
                "{} did not come up on {addr}; log:\n{}",
                self.bin,
                self.home.read("fg.log").unwrap_or_default()
            );
        }
        Ok(())
    }

    fn kill9(&mut self) -> TestResult {
        if let Some(mut p) = self.proc.take() {
            p.signal(nix::sys::signal::Signal::SIGKILL)?;
            p.wait_timeout(Duration::from_secs(10))?;
        }
        Ok(())
    }
}

/// auth, ps-dummy and contract, configured for each other (as the devnet does it).
struct Money {
    auth: Node,
    ps: Node,
    contract: Node,
}

fn money(servicekey_duration: &str, window: &str) -> anyhow::Result<Money> {
    let auth = Node::init("wireleap-auth")?;
    let ps = Node::init("wireleap-ps-dummy")?;
    let contract = Node::init("wireleap-contract")?;
    let (auth_key, ps_key, contract_key) = (auth.pubkey()?, ps.pubkey()?, contract.pubkey()?);
    contract.configure(serde_json::json!({
        "address": contract.addr.to_string(),
        "endpoint": contract.url(),
        "proof_of_funding": [{"type": "dummy", "pubkey": auth_key, "endpoint": ps.url()}],
        "servicekey": {"value": "1000", "currency": "usd", "duration": servicekey_duration},
        "settlement": {"fee_percent": "5", "submission_window": window},
        "payout": {"endpoint": format!("{}/withdrawals", ps.url()), "type": "dummy"},
        "metadata": {"name": "e2e"},
    }))?;
    auth.configure(serde_json::json!({
        "address": auth.addr.to_string(),
        "endpoint": auth.url(),
        "payment_services": [{"type": "dummy", "pubkey": ps_key}],
    }))?;
    ps.configure(serde_json::json!({
        "address": ps.addr.to_string(),
        "endpoint": ps.url(),
        "auth": {"endpoint": auth.url(), "public_key": auth_key},
        "contract": {"endpoint": contract.url(), "public_key": contract_key},
    }))?;
    Ok(Money { auth, ps, contract })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn relay_client(kp: &Keypair) -> anyhow::Result<ApiClient> {
    Ok(ApiClient::new(
        Some(Identity {
            keypair: kp.clone(),
            component: Component::Relay,
            interfaces: vec![Interface::RelayContract, Interface::RelayDir],
        }),
        false,
    )?
    .with_retry(RetryPolicy::ONCE))
}

async fn activate(contract: &str, sk: &Keypair, pof: Pof) -> anyhow::Result<ContractSection> {
    let c = ApiClient::new(None, false)?.with_retry(RetryPolicy::ONCE);
    let section: ContractSection = c
        .post(
            &format!("{contract}/servicekey/activate"),
            &ActivationRequest::new(sk.public(), pof),
        )
        .await?;
    section.verify()?;
    Ok(section)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token(sk: &Keypair, section: &ContractSection, relay: PublicKey, n: u32) -> Sharetoken {
    Sharetoken::new_signed(sk, section.clone(), relay, unix_now(), format!("{n:032x}"))
}

fn read_accesskey(path: &Path) -> anyhow::Result<Vec<Pof>> {
    let bytes = std::fs::read(path)?;
    Ok(AccessKey::import(&bytes)?.pofs)
}

#[test]
fn access_key_activation_submission_balance() -> TestResult {
    let mut m = money("2s", "8s")?;
    m.auth.start()?;
    m.ps.start()?;
    m.contract.start()?;
    let contract_url = m.contract.url();

    // Access key through the ps-dummy CLI → its API → auth.
    let key_file = m.ps.home.file("accesskey.json");
    let out = run(
        Command::new(binary("wireleap-ps-dummy")?)
            .arg("--home")
            .arg(m.ps.home.path())
            .args(["accesskeys", "--quantity", "3", "--out"])
            .arg(&key_file),
        Duration::from_secs(60),
    )?;
    anyhow::ensure!(out.status.success(), "accesskeys failed: {out}");
    let imported = AccessKey::import(&std::fs::read(&key_file)?)?;
    assert_eq!(imported.contract, m.contract.pubkey()?);
    assert_eq!(imported.endpoint, contract_url);
    let pofs = imported.pofs;
    assert_eq!(pofs.len(), 3);

    // Offline issuing by auth's own key gives a key the contract accepts too.
    let offline = m.auth.home.file("offline.json");
    let out = run(
        Command::new(binary("wireleap-auth")?)
            .arg("--home")
            .arg(m.auth.home.path())
            .args([
                "issue",
                "--type",
                "dummy",
                "--quantity",
                "2",
                "--duration",
                "30d",
            ])
            .args(["--contract-endpoint", &contract_url])
            .args(["--contract-pubkey", &m.contract.pubkey()?.to_b64()])
            .arg("--out")
            .arg(&offline),
        Duration::from_secs(60),
    )?;
    anyhow::ensure!(out.status.success(), "issue failed: {out}");
    let offline_pofs = read_accesskey(&offline)?;
    assert_eq!(offline_pofs.len(), 2);

    let rt = runtime()?;
    rt.block_on(async {
        let sk = Keypair::generate();
        let section = activate(&contract_url, &sk, pofs[0].clone()).await?;
        // The pof is spent now.
        let again = activate(&contract_url, &Keypair::generate(), pofs[0].clone()).await;
        let st = again
            .err()
            .and_then(|e| e.downcast::<ApiError>().ok())
            .and_then(|e| e.status().cloned());
        assert_eq!(st, Some(Status::sneaky_pof()));
        activate(&contract_url, &Keypair::generate(), offline_pofs[0].clone()).await?;

        // Submit once the settlement window opens.
        let relay = Keypair::generate();
        let rc = relay_client(&relay)?;
        let t = token(&sk, &section, relay.public(), 1);
        while unix_now() < section.settlement_open {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ok: Status = rc.post(&format!("{contract_url}/submit"), &t).await?;
        assert_eq!(ok, Status::ok());
        let dup = rc
            .post::<_, Status>(&format!("{contract_url}/submit"), &t)
            .await
            .err()
            .and_then(|e| e.status().cloned())
            .map(|s| s.code);
        assert_eq!(dup, Some(409));

        // After the window closes the settlement job credits 95% of 1000.
        let balance_url = format!("{contract_url}/payout/balance");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let b: serde_json::Value = rc.get(&balance_url).await?;
            assert_eq!(b["tokens"], 1);
            if b["available"] == 950 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "no settlement in 30 s: {b}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // And the money goes out through ps-dummy.
        let w: serde_json::Value = rc
            .post(
                &format!("{contract_url}/payout/withdrawals"),
                &serde_json::json!({"amount": 900, "type": "dummy", "destination": "acct"}),
            )
            .await?;
        assert_eq!(w["state"], "complete", "{w}");
        let b: serde_json::Value = rc.get(&balance_url).await?;
        assert_eq!(b["available"], 50);
        anyhow::Ok(())
    })?;
    Ok(())
}

/// What the client saw for each token: how many 200s and how many 409 duplicates.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    ok: u32,
    duplicate: u32,
    unknown: u32,
}

#[test]
fn kill_9_during_submissions_loses_and_doubles_nothing() -> TestResult {
    const KILLS: usize = 5;
    const TOKENS: u32 = 3000;
    let mut m = money("1s", "1h")?;
    m.auth.start()?;
    m.ps.start()?;
    m.contract.start()?;
    let contract_url = m.contract.url();

    // Pofs signed directly with auth's key (the daemons' flow is covered above).
    let auth_kp = {
        let text = m.auth.home.read("key.seed")?;
        wireleap_proto::keys::parse_seed_file(text.as_bytes())?.keypair
    };
    let rt = runtime()?;
    let sk = Keypair::generate();
    let pof = Pof::new_signed(
        &auth_kp,
        "dummy".into(),
        unix_now() + 3600,
        "00aa11bb22cc33dd44".into(),
    );
    let section = rt.block_on(activate(&contract_url, &sk, pof))?;
    while unix_now() < section.settlement_open {
        std::thread::sleep(Duration::from_millis(100));
    }
    let relay = Keypair::generate();
    let tokens: Vec<Sharetoken> = (0..TOKENS)
        .map(|n| token(&sk, &section, relay.public(), n))
        .collect();
    let seen: Arc<Mutex<HashMap<u32, Seen>>> = Arc::default();
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    // The stream: four submitters over disjoint tokens, one request at a time each; an
    // answer that is not a status (connection refused or reset) leaves the token unknown.
    let mut streams = Vec::new();
    for lane in 0..4u32 {
        let (seen, finished, tokens) = (seen.clone(), finished.clone(), tokens.clone());
        let rc = relay_client(&relay)?;
        let url = format!("{contract_url}/submit");
        streams.push(rt.spawn(async move {
            for n in (lane..TOKENS).step_by(4) {
                let r = rc.post::<_, Status>(&url, &tokens[n as usize]).await;
                let down = {
                    let mut return_down = false;
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    let e = s.entry(n).or_default();
                    match r {
                        Ok(_) => e.ok += 1,
                        Err(err) if err.status().is_some_and(|st| st.code == 409) => {
                            e.duplicate += 1
                        }
                        Err(_) => {
                            e.unknown += 1;
                            return_down = true;
                        }
                    }
                    return_down
                };
                // Paced so the stream spans all the kills, and slower while the contract
                // is down so the outage does not use up the tokens.
                let pause = if down { 150 } else { 8 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }

    let unknown_so_far = || -> u32 {
        let s = seen.lock().unwrap_or_else(|p| p.into_inner());
        s.values().map(|v| v.unknown).sum()
    };
    let mut failures_per_kill = Vec::new();
    for round in 0..KILLS {
        std::thread::sleep(Duration::from_millis(300 + 150 * round as u64));
        anyhow::ensure!(
            finished.load(std::sync::atomic::Ordering::SeqCst) == 0,
            "the stream ended before kill {round}; make it longer"
        );
        let before = unknown_so_far();
        m.contract.kill9()?;
        std::thread::sleep(Duration::from_millis(150));
        m.contract.start()?;
        failures_per_kill.push(unknown_so_far() - before);
    }
    // Every kill hit the running stream.
    assert!(
        failures_per_kill.iter().all(|n| *n > 0),
        "requests failed per kill: {failures_per_kill:?}"
    );
    for s in streams {
        rt.block_on(s)?;
    }

    // Resubmit every token that was not acknowledged: each is either accepted now (it was
    // lost with the crash before commit) or a duplicate (committed, answer lost).
    let rc = relay_client(&relay)?;
    let url = format!("{contract_url}/submit");
    let (unacked, lost_in_flight) = rt.block_on(async {
        let mut unacked = 0;
        let mut committed_unanswered = 0;
        for (n, t) in tokens.iter().enumerate() {
            let before = seen.lock().unwrap_or_else(|p| p.into_inner())[&(n as u32)];
            if before.ok > 0 {
                continue;
            }
            unacked += 1;
            let r = rc.post::<_, Status>(&url, t).await;
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            let e = s.entry(n as u32).or_default();
            match r {
                Ok(_) => e.ok += 1,
                Err(err) if err.status().is_some_and(|st| st.code == 409) => {
                    e.duplicate += 1;
                    committed_unanswered += 1;
                }
                Err(err) => anyhow::bail!("token {n} resubmission failed: {err}"),
            }
        }
        anyhow::Ok((unacked, committed_unanswered))
    })?;
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let unknown: u32 = seen.values().map(|s| s.unknown).sum();
    eprintln!(
        "{KILLS} kills: {unknown} submissions without answer ({failures_per_kill:?} per kill), \
         {unacked} tokens unacknowledged, {lost_in_flight} of them committed before the crash"
    );

    // Exactly once: no token was acknowledged twice; every token that got a 409 during the
    // stream had been acknowledged or is among the committed-unanswered ones.
    for (n, s) in &seen {
        assert!(s.ok <= 1, "token {n} acknowledged {} times", s.ok);
        assert!(
            s.ok == 1 || s.duplicate > 0,
            "token {n} never accepted: {s:?}"
        );
    }
    // A second full pass: every token is already there.
    let counted = rt.block_on(async {
        for (n, t) in tokens.iter().enumerate() {
            let r = rc.post::<_, Status>(&url, t).await;
            let code = r.err().and_then(|e| e.status().map(|s| s.code));
            anyhow::ensure!(code == Some(409), "token {n} not stored: {code:?}");
        }
        let counts: serde_json::Value = rc.get(&format!("{contract_url}/payout/tokens")).await?;
        anyhow::Ok(counts["accepted"].as_u64().unwrap_or(0))
    })?;
    assert_eq!(counted, u64::from(TOKENS), "contract count vs tokens sent");
    let acked: u32 = seen.values().map(|s| s.ok).sum();
    assert_eq!(acked + lost_in_flight, TOKENS);
    Ok(())
}
