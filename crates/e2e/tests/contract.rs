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

/// auth, a payment service and contract.
struct Money {
    auth: Node,
    ps: Node,
    contract: Node,
}

/// auth, ps-dummy and contract, configured for each other (as the devnet does it).
fn money(servicekey_duration: &str, window: &str) -> anyhow::Result<Money> {
    money_with(
        "wireleap-ps-dummy",
        "dummy",
        servicekey_duration,
        window,
        |_| serde_json::json!({}),
    )
}

/// auth, the payment service `ps_bin` (selling pofs of type `pof_type`, with the extra
/// config keys `ps_extra` gives for it) and contract, configured for each other.
fn money_with(
    ps_bin: &'static str,
    pof_type: &str,
    servicekey_duration: &str,
    window: &str,
    ps_extra: impl FnOnce(&Node) -> serde_json::Value,
) -> anyhow::Result<Money> {
    let auth = Node::init("wireleap-auth")?;
    let ps = Node::init(ps_bin)?;
    let contract = Node::init("wireleap-contract")?;
    let (auth_key, ps_key, contract_key) = (auth.pubkey()?, ps.pubkey()?, contract.pubkey()?);
    contract.configure(serde_json::json!({
        "address": contract.addr.to_string(),
        "endpoint": contract.url(),
        "proof_of_funding": [{"type": pof_type, "pubkey": auth_key, "endpoint": ps.url()}],
        "servicekey": {"value": "1000", "currency": "usd", "duration": servicekey_duration},
        "settlement": {"fee_percent": "5", "submission_window": window},
        "payout": {"endpoint": format!("{}/withdrawals", ps.url()), "type": pof_type},
        "metadata": {"name": "e2e"},
    }))?;
    auth.configure(serde_json::json!({
        "address": auth.addr.to_string(),
        "endpoint": auth.url(),
        "payment_services": [{"type": pof_type, "pubkey": ps_key}],
    }))?;
    let mut config = serde_json::json!({
        "address": ps.addr.to_string(),
        "endpoint": ps.url(),
        "auth": {"endpoint": auth.url(), "public_key": auth_key},
        "contract": {"endpoint": contract.url(), "public_key": contract_key},
    });
    if let (Some(c), serde_json::Value::Object(extra)) = (config.as_object_mut(), ps_extra(&ps)) {
        c.extend(extra);
    }
    ps.configure(config)?;
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

// ---- ps-stripe, the real binary, against a fake Stripe API in this test ----------------

const STRIPE_KEY: &str = "sk_test_e2e";
const WEBHOOK_SECRET: &str = "whsec_e2e";

/// Checkout Session requests the fake Stripe received, as form fields (names still
/// percent-encoded: `metadata%5Border_id%5D`), and how many carried a wrong key.
#[derive(Debug, Default)]
struct FakeStripe {
    sessions: Vec<HashMap<String, String>>,
    unauthorized: usize,
}

/// Serves `POST /v1/checkout/sessions` as Stripe documents it (form body, Bearer key, a
/// session object back) on a free loopback port; runs until the runtime is dropped.
async fn fake_stripe(seen: Arc<Mutex<FakeStripe>>) -> anyhow::Result<SocketAddr> {
    use axum::http::{HeaderMap, StatusCode};
    let sessions = axum::routing::post(move |h: HeaderMap, body: String| async move {
        let mut f = seen.lock().unwrap_or_else(|p| p.into_inner());
        if h.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {STRIPE_KEY}"))
        {
            f.unauthorized += 1;
            let e = serde_json::json!({"error": {"type": "invalid_request_error"}});
            return (StatusCode::UNAUTHORIZED, axum::Json(e));
        }
        let form: HashMap<String, String> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        f.sessions.push(form);
        let id = format!("cs_test_e2e{}", f.sessions.len());
        let s = serde_json::json!({
            "id": id, "object": "checkout.session", "payment_status": "unpaid",
            "url": format!("https://checkout.stripe.test/c/pay/{id}"),
        });
        (StatusCode::OK, axum::Json(s))
    });
    let app = axum::Router::new().route("/v1/checkout/sessions", sessions);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// `Stripe-Signature` for `body` at time `t`, computed here from Stripe's documentation
/// (HMAC-SHA256 of `<t>.<body>` with the endpoint secret, hex), not with ps-stripe's code.
fn stripe_signature(secret: &str, t: i64, body: &[u8]) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A paid `checkout.session.completed` event for one session and order.
fn paid_session_event(event: &str, session: &str, order: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": event, "object": "event", "type": "checkout.session.completed",
        "created": unix_now(), "livemode": false,
        "data": {"object": {
            "id": session, "object": "checkout.session", "mode": "payment",
            "client_reference_id": order, "metadata": {"order_id": order},
            "payment_status": "paid", "status": "complete",
        }},
    }))
    .unwrap_or_default()
}

fn webhook(ps: SocketAddr, body: &[u8], signature: &str) -> anyhow::Result<(u16, String)> {
    let r = wireleap_e2e::http_post(
        ps,
        "/webhook",
        &[
            ("Content-Type", "application/json"),
            ("Stripe-Signature", signature),
        ],
        body,
        Duration::from_secs(30),
    )?;
    Ok((r.status, r.text()))
}

/// The whole purchase with real binaries: `wireleap-ps-stripe` creates a Checkout Session at
/// (fake) Stripe, refuses the access key until paid, takes a webhook signed as Stripe signs
/// them, has `wireleap-auth` sign the pofs exactly once however often Stripe redelivers, and
/// the real contract activates a servicekey from one of them.
#[test]
fn stripe_checkout_to_activated_servicekey() -> TestResult {
    let rt = runtime()?;
    let seen = Arc::new(Mutex::new(FakeStripe::default()));
    let stripe = rt.block_on(fake_stripe(seen.clone()))?;
    let mut m = money_with("wireleap-ps-stripe", "stripe", "1h", "1h", |ps| {
        serde_json::json!({
            "stripe": {"api_base": format!("http://{stripe}"), "retry_delay": "0s"},
            "checkout": {"price": {"currency": "usd", "unit_amount": 500},
                         "success_url": format!("{}/accesskeys/{{CHECKOUT_SESSION_ID}}", ps.url()),
                         "cancel_url": format!("{}/cancelled", ps.url())},
        })
    })?;
    m.ps.home
        .write("stripe-secret-key", format!("{STRIPE_KEY}\n"))?;
    m.ps.home
        .write("stripe-webhook-secret", format!("{WEBHOOK_SECRET}\n"))?;
    m.auth.start()?;
    m.ps.start()?;
    m.contract.start()?;
    let (ps, contract) = (&m.ps, &m.contract);

    // Checkout: one session at Stripe, for 2 pofs at 5.00 each, under our order id.
    let r = wireleap_e2e::http_post(
        ps.addr,
        "/checkout",
        &[("Content-Type", "application/json")],
        br#"{"quantity": 2}"#,
        Duration::from_secs(30),
    )?;
    anyhow::ensure!(r.status == 200, "checkout: {} {}", r.status, r.text());
    let reply: serde_json::Value = serde_json::from_slice(&r.body)?;
    let session = reply["id"].as_str().unwrap_or_default().to_string();
    let form = {
        let f = seen.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(f.unauthorized, 0);
        assert_eq!(f.sessions.len(), 1);
        f.sessions[0].clone()
    };
    assert_eq!(form["line_items%5B0%5D%5Bquantity%5D"], "2", "{form:?}");
    let order = form["metadata%5Border_id%5D"].clone();
    assert_eq!(form["client_reference_id"], order);
    assert_eq!(
        reply["accesskey_url"],
        format!("{}/accesskeys/{session}", ps.url())
    );

    // Not paid yet: no access key.
    let key_path = format!("/accesskeys/{session}");
    let unpaid = http_get(ps.addr, &key_path, Duration::from_secs(10))?;
    assert_eq!(unpaid.status, 402, "{}", unpaid.text());

    // A webhook with a wrong signature is refused and issues nothing.
    let event = paid_session_event("evt_e2e1", &session, &order);
    let (code, text) = webhook(
        ps.addr,
        &event,
        &stripe_signature("whsec_wrong", unix_now(), &event),
    )?;
    assert_eq!(code, 400, "{text}");
    assert_eq!(
        http_get(ps.addr, &key_path, Duration::from_secs(10))?.status,
        402
    );

    // Paid, delivered twice (Stripe redelivers): one access key, the same both times.
    let mut keys = Vec::new();
    for delivery in 0..2 {
        let (code, text) = webhook(
            ps.addr,
            &event,
            &stripe_signature(WEBHOOK_SECRET, unix_now(), &event),
        )?;
        assert_eq!(code, 200, "{text}");
        assert_eq!(
            text.contains("access key already issued"),
            delivery == 1,
            "delivery {delivery}: {text}"
        );
        let got = http_get(ps.addr, &key_path, Duration::from_secs(10))?;
        assert_eq!(got.status, 200, "{}", got.text());
        keys.push(got.body);
    }
    assert_eq!(keys[0], keys[1], "a redelivered webhook issues nothing new");
    let key = AccessKey::import(&keys[0])?;
    assert_eq!(key.contract, contract.pubkey()?);
    assert_eq!(key.endpoint, contract.url());
    assert_eq!(key.pofs.len(), 2);
    assert!(key.pofs.iter().all(|p| p.kind == "stripe"));

    // The real contract takes a pof it has never seen, once.
    rt.block_on(async {
        activate(&contract.url(), &Keypair::generate(), key.pofs[0].clone()).await?;
        let again = activate(&contract.url(), &Keypair::generate(), key.pofs[0].clone()).await;
        assert!(again.is_err(), "a pof is spent once");
        anyhow::Ok(())
    })?;
    Ok(())
}
