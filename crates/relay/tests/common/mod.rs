//! Fixtures for the relay's integration tests: a relay started in-process from a scratch
//! home, a fake contract + directory (axum) that answers with the reply shapes recorded in
//! `vectors/enroll_replies.json`, a client built from `wireleap_net` (pinned TLS, HTTP/2
//! session, PUT with a signed sharetoken), and TCP/UDP echo targets. Everything binds
//! 127.0.0.1 on ephemeral ports and stops when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wireleap_daemon::Home;
use wireleap_net::tls;
use wireleap_net::tunnel::{Session, SessionConfig, TunnelStream};
use wireleap_proto::address::Address;
use wireleap_proto::contractinfo::{ContractInfo, DirectoryRef};
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::relayentry::RelayEntry;
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::Sharetoken;
use wireleap_proto::status::Status;
use wireleap_proto::version::Component;
use wireleap_proto::wl_payload::{Protocol, WlPayload};
use wireleap_relay::config::{ContractEntry, DangerZone, RelayConfig, Role};
use wireleap_relay::RelayRuntime;

pub const T: Duration = Duration::from_secs(10);

/// Aborts a task when dropped.
pub struct AbortOnDrop<X>(pub JoinHandle<X>);

impl<X> Drop for AbortOnDrop<X> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- targets

/// A TCP echo server.
pub struct Echo {
    pub addr: SocketAddr,
    _task: AbortOnDrop<()>,
}

pub async fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Echo {
        addr,
        _task: AbortOnDrop(task),
    }
}

/// A UDP echo server.
pub async fn udp_echo() -> (SocketAddr, AbortOnDrop<()>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, AbortOnDrop(task))
}

// ---------------------------------------------------------------- fake contract + directory

/// What the fake directory saw.
#[derive(Debug, Clone)]
pub struct DirRequest {
    pub method: Method,
    pub has_dir_version: bool,
    pub has_idempotency_key: bool,
    pub idempotency_key: Option<String>,
    pub pow_answered: bool,
    pub entry: RelayEntry,
    pub signer: PublicKey,
}

#[derive(Default)]
pub struct FakeState {
    pub info: Vec<u8>,
    /// Answer enroll and heartbeat POSTs with a PoW challenge of this cost first.
    pub pow_cost: Option<u32>,
    /// Answer heartbeats (POSTs without the relay-dir version header) with an upgrade
    /// notice for this version.
    pub upgrade_to: Option<String>,
    /// Refuse POSTs with this status.
    pub refuse: Option<Status>,
    pub requests: Vec<DirRequest>,
    /// Submissions received (relay key, token).
    pub submits: Vec<(PublicKey, Sharetoken)>,
    /// Answer this many submissions with 500 first.
    pub submit_failures: usize,
    /// Withdrawal request bodies received (relay key, JSON).
    pub withdrawals: Vec<(PublicKey, serde_json::Value)>,
}

/// A contract at `{base}` whose directory is at `{base}/dir`.
pub struct FakeContract {
    pub key: Keypair,
    pub base: String,
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
    _task: AbortOnDrop<()>,
}

impl FakeContract {
    pub fn requests(&self) -> Vec<DirRequest> {
        self.state.lock().unwrap().requests.clone()
    }
    pub fn submits(&self) -> Vec<(PublicKey, Sharetoken)> {
        self.state.lock().unwrap().submits.clone()
    }
    pub fn set(&self, f: impl FnOnce(&mut FakeState)) {
        f(&mut self.state.lock().unwrap());
    }
    /// A contract section signed by this contract.
    pub fn section(&self, open: i64, close: i64) -> ContractSection {
        ContractSection::new_signed(&self.key, open, close)
    }
}

fn reply(s: &Status) -> Response {
    let r = s.to_http();
    let mut resp = (StatusCode::from_u16(r.status).unwrap(), r.body).into_response();
    for (k, v) in r.headers {
        resp.headers_mut().insert(k, v.parse().unwrap());
    }
    resp
}

async fn info_handler(State(s): State<Arc<Mutex<FakeState>>>) -> Response {
    let body = s.lock().unwrap().info.clone();
    ([("content-type", "application/json")], body).into_response()
}

async fn relays(
    State(s): State<Arc<Mutex<FakeState>>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signer = match wireleap_proto::request::verify_body(Component::Relay, &headers, &body) {
        Ok(k) => k,
        Err(e) => return reply(&Status::forbidden().with_cause(e.to_string())),
    };
    let entry = match RelayEntry::from_body(&body) {
        Ok(e) => e,
        Err(e) => return reply(&Status::bad_request().with_cause(e.to_string())),
    };
    if entry.pubkey != Some(signer) {
        return reply(&Status::forbidden().with_cause("signer is not the entry's pubkey"));
    }
    let challenge = headers
        .get("wireleap-directory-challenge")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = headers
        .get("wireleap-directory-response")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let has_dir_version = headers.contains_key("wireleap-relay-dir-version");
    let mut st = s.lock().unwrap();
    let pow_answered = match (&challenge, &response) {
        (Some(c), Some(r)) => {
            if wireleap_proto::pow::verify(c, r).is_err() {
                return reply(&Status::forbidden().with_cause("bad proof of work"));
            }
            true
        }
        _ => false,
    };
    st.requests.push(DirRequest {
        method: method.clone(),
        has_dir_version,
        has_idempotency_key: headers.contains_key("idempotency-key"),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        pow_answered,
        entry,
        signer,
    });
    if method == Method::DELETE {
        return reply(&Status::ok());
    }
    if let Some(s) = &st.refuse {
        return reply(s);
    }
    if let Some(cost) = st.pow_cost {
        if !pow_answered {
            let mut resp = reply(&Status::challenge());
            resp.headers_mut().insert(
                "wireleap-directory-challenge",
                wireleap_proto::pow::make_challenge(cost, "opaque123")
                    .parse()
                    .unwrap(),
            );
            return resp;
        }
    }
    if let (Some(v), false) = (&st.upgrade_to, has_dir_version) {
        return reply(&Status::upgrade(&semver::Version::parse(v).unwrap()));
    }
    reply(&Status::ok())
}

async fn submit(
    State(s): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signer = match wireleap_proto::request::verify_body(Component::Relay, &headers, &body) {
        Ok(k) => k,
        Err(e) => return reply(&Status::forbidden().with_cause(e.to_string())),
    };
    let token: Sharetoken = match wireleap_proto::json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return reply(&Status::bad_request().with_cause(e.to_string())),
    };
    let mut st = s.lock().unwrap();
    if st.submit_failures > 0 {
        st.submit_failures -= 1;
        return reply(&Status::internal());
    }
    st.submits.push((signer, token));
    reply(&Status::ok())
}

async fn payout_get(
    State(s): State<Arc<Mutex<FakeState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = wireleap_proto::request::verify_body(Component::Relay, &headers, &body) {
        return reply(&Status::forbidden().with_cause(e.to_string()));
    }
    let v = match uri.path() {
        "/payout/balance" => serde_json::json!({"currency": "usd", "available": 42}),
        "/payout/tokens" => serde_json::json!({"count": s.lock().unwrap().submits.len()}),
        _ => serde_json::json!({"id": "w1", "state": "complete", "amount": 5}),
    };
    axum::Json(v).into_response()
}

async fn payout_withdraw(
    State(s): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signer = match wireleap_proto::request::verify_body(Component::Relay, &headers, &body) {
        Ok(k) => k,
        Err(e) => return reply(&Status::forbidden().with_cause(e.to_string())),
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    s.lock().unwrap().withdrawals.push((signer, v.clone()));
    axum::Json(serde_json::json!({"id": "w2", "state": "pending", "amount": v["amount"]}))
        .into_response()
}

/// Starts a fake contract on `port` (0 = any).
pub async fn fake_contract_on(key_seed: u8, port: u16) -> FakeContract {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let key = Keypair::from_seed([key_seed; 32]);
    let info = ContractInfo {
        pubkey: Some(key.public()),
        endpoint: Some(base.clone()),
        directory: DirectoryRef {
            endpoint: Some(format!("{base}/dir")),
            public_key: Some(Keypair::from_seed([3; 32]).public()),
        },
        ..ContractInfo::default()
    };
    let state = Arc::new(Mutex::new(FakeState {
        info: info.to_json(),
        ..FakeState::default()
    }));
    let app = axum::Router::new()
        .route("/info", axum::routing::get(info_handler))
        .route("/dir/relays", axum::routing::post(relays).delete(relays))
        .route("/submit", axum::routing::post(submit))
        .route("/payout/balance", axum::routing::get(payout_get))
        .route("/payout/tokens", axum::routing::get(payout_get))
        .route(
            "/payout/withdrawals",
            axum::routing::get(payout_get).post(payout_withdraw),
        )
        .with_state(state.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeContract {
        key,
        base,
        addr,
        state,
        _task: AbortOnDrop(task),
    }
}

pub async fn fake_contract(key_seed: u8) -> FakeContract {
    fake_contract_on(key_seed, 0).await
}

// ---------------------------------------------------------------- relays

/// A relay running in-process from a scratch home.
pub struct TestRelay {
    pub rt: Option<RelayRuntime>,
    pub keypair: Keypair,
    pub addr: SocketAddr,
    pub home: Home,
    pub dir: tempfile::TempDir,
}

impl TestRelay {
    pub fn pubkey(&self) -> PublicKey {
        self.keypair.public()
    }
    pub fn rt(&mut self) -> &mut RelayRuntime {
        self.rt.as_mut().unwrap()
    }
    pub fn handle(&self) -> wireleap_relay::RelayHandle {
        self.rt.as_ref().unwrap().handle()
    }
    pub fn address(&self) -> Address {
        Address::parse(&format!("wireleap://{}", self.addr)).unwrap()
    }
}

/// A config for a relay on `port` serving `contracts` (URL → role), loopback allowed.
pub fn config(port: u16, contracts: &[(&str, Role)]) -> RelayConfig {
    RelayConfig {
        address: format!("127.0.0.1:{port}"),
        heartbeat_interval: wireleap_proto::duration::Duration::from_secs(1),
        auto_submit_interval: wireleap_proto::duration::Duration::from_secs(1),
        drain_timeout: wireleap_proto::duration::Duration::from_secs(2),
        contracts: contracts
            .iter()
            .map(|(url, role)| {
                (
                    url.to_string(),
                    ContractEntry {
                        address: Address::parse(&format!("wireleap://127.0.0.1:{port}")).unwrap(),
                        role: *role,
                        key: None,
                        network_usage_limit: None,
                        upgrade_channel: None,
                        update_channel: None,
                    },
                )
            })
            .collect(),
        danger_zone: DangerZone {
            allow_loopback: true,
            allow_private: false,
        },
        ..RelayConfig::default()
    }
}

/// Writes the identity for `seed` into a scratch home and starts a relay with `config`
/// (its address's port is used as is).
pub async fn start_relay(seed: u8, mut cfg: RelayConfig) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    start_relay_in(seed, &mut cfg, dir).await
}

pub async fn start_relay_in(seed: u8, cfg: &mut RelayConfig, dir: tempfile::TempDir) -> TestRelay {
    let home = Home::new(dir.path(), "wireleap-relay");
    let keypair = Keypair::from_seed([seed; 32]);
    if !home.key_seed_file().exists() {
        wireleap_daemon::keyfile::write_keypair(&home, &keypair).unwrap();
    }
    let mut rt = RelayRuntime::start(&home, cfg.clone()).await.unwrap();
    rt.wait_first_enrollment(T).await;
    let addr = rt.local_addr().unwrap();
    TestRelay {
        rt: Some(rt),
        keypair,
        addr,
        home,
        dir,
    }
}

// ---------------------------------------------------------------- client

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for S {}

/// A sharetoken for `relay`, paid by a fresh servicekey, with the window `[open, close)`.
pub fn token(contract: &FakeContract, relay: PublicKey, open: i64, close: i64) -> Sharetoken {
    let sk = Keypair::generate();
    let nonce = wireleap_proto::nonce::generate(32);
    Sharetoken::new_signed(&sk, contract.section(open, close), relay, now(), nonce)
}

/// A token valid for ten minutes from now.
pub fn fresh_token(contract: &FakeContract, relay: PublicKey) -> Sharetoken {
    token(contract, relay, now() + 600, now() + 4200)
}

/// One hop of a circuit: where, whose key, the payload to send.
pub struct Hop {
    pub addr: SocketAddr,
    pub pubkey: PublicKey,
    pub payload: String,
}

pub fn connect_payload(protocol: Protocol, remote: &str, token: Sharetoken) -> String {
    WlPayload::connect(protocol, Address::parse(remote).unwrap(), token).to_header_value()
}

/// Opens the circuit through `hops` (nested TLS inside each previous hop's stream); keeps
/// every session alive in `keep`.
pub async fn circuit(hops: &[Hop], keep: &mut Vec<Session>) -> Box<dyn Io> {
    let mut io: Box<dyn Io> = Box::new(tls::dial_tcp(&hops[0].addr.to_string(), T).await.unwrap());
    for hop in hops {
        let tls = tls::dial_tls(io, None, Some(hop.pubkey.0), T)
            .await
            .unwrap();
        let session = Session::handshake(tls, SessionConfig::default())
            .await
            .unwrap();
        let stream = session
            .open(&format!("https://{}/", hop.addr), hop.payload.as_bytes())
            .await
            .unwrap();
        keep.push(session);
        io = Box::new(stream);
    }
    io
}

/// A one-hop tunnel stream (for reading the relay's wl-status).
pub async fn one_hop(
    addr: SocketAddr,
    pubkey: PublicKey,
    payload: &str,
) -> (TunnelStream, Session) {
    let tcp = tls::dial_tcp(&addr.to_string(), T).await.unwrap();
    let tls = tls::dial_tls(tcp, None, Some(pubkey.0), T).await.unwrap();
    let session = Session::handshake(tls, SessionConfig::default())
        .await
        .unwrap();
    let stream = session
        .open(&format!("https://{addr}/"), payload.as_bytes())
        .await
        .unwrap();
    (stream, session)
}

/// Reads a one-hop stream to its end and returns the `wl-status` it ended with.
pub async fn refusal(addr: SocketAddr, pubkey: PublicKey, payload: &str) -> Status {
    let (mut stream, _session) = one_hop(addr, pubkey, payload).await;
    let mut buf = Vec::new();
    let err = tokio::time::timeout(T, stream.read_to_end(&mut buf))
        .await
        .expect("relay answered in time")
        .expect_err("the stream must end with a wl-status");
    let value =
        wireleap_net::tunnel::status_of(&err).unwrap_or_else(|| panic!("no wl-status in {err}"));
    assert!(
        !value.contains('\n'),
        "wl-status must not contain a newline"
    );
    Status::parse(value.as_bytes()).unwrap()
}

/// Writes `data` and reads back as many bytes.
pub async fn round_trip(io: &mut Box<dyn Io>, data: &[u8]) -> Vec<u8> {
    io.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(T, io.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    back
}
