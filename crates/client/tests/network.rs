//! The whole client in process against a contract and a directory that speak the protocol
//! (minimal axum servers signing with proto), plus tunnel relays from `common`: import,
//! sync with its trust checks, on-demand servicekey activation, renewal before expiry while
//! a stream stays open, and traffic through the SOCKS port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::{contract, relay, socks_open, tcp_echo, TestRelay};
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use wireleap::controller::{api_client, Controller};
use wireleap::directory::{self, SyncError};
use wireleap::socks::{SocksConfig, SocksServer};
use wireleap::{accesskeys, ClientConfig};
use wireleap_daemon::{CancellationToken, Home};
use wireleap_proto::accesskey::AccessKey;
use wireleap_proto::contractinfo::{ContractInfo, DirectoryRef, PofIssuer};
use wireleap_proto::dirinfo::DirInfo;
use wireleap_proto::keys::Keypair;
use wireleap_proto::pof::{ActivationRequest, Pof};
use wireleap_proto::relayentry::Role;
use wireleap_proto::relaylist::RelayList;
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::status::Status;

fn issuer() -> Keypair {
    Keypair::from_seed([4; 32])
}

fn dir_key() -> Keypair {
    Keypair::from_seed([3; 32])
}

/// Contract and directory in one server (paths `/c/...` and `/d/...`).
struct Services {
    url: String,
    activations: Arc<AtomicUsize>,
    /// Key the directory signs its list with (to test pinning).
    list_signer: Arc<Mutex<Keypair>>,
    /// Key the directory's /info announces.
    info_key: Arc<Mutex<Keypair>>,
    stop: CancellationToken,
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Shared {
    base: String,
    relays: Arc<RelayList>,
    spent: Arc<Mutex<HashSet<String>>>,
    activations: Arc<AtomicUsize>,
    lifetime: Arc<AtomicI64>,
    list_signer: Arc<Mutex<Keypair>>,
    info_key: Arc<Mutex<Keypair>>,
}

fn status(code: u16, cause: &str) -> Response {
    let s = Status::new(code, "refused").with_cause(cause.to_string());
    (StatusCode::from_u16(code).unwrap(), s.text()).into_response()
}

async fn contract_info(State(s): State<Shared>) -> Response {
    let info = ContractInfo {
        pubkey: Some(contract().public()),
        endpoint: Some(format!("{}/c", s.base)),
        proof_of_funding: vec![PofIssuer {
            kind: Some("dummy".into()),
            pubkey: Some(issuer().public()),
            ..PofIssuer::default()
        }],
        directory: DirectoryRef {
            endpoint: Some(format!("{}/d", s.base)),
            public_key: Some(dir_key().public()),
        },
        ..ContractInfo::default()
    };
    info.to_json().into_response()
}

async fn activate(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let Ok(req) = ActivationRequest::from_json(&body) else {
        return status(400, "bad body");
    };
    let (Some(_pubkey), Some(pof)) = (req.pubkey, req.pof) else {
        return status(400, "missing fields");
    };
    let now = common::now();
    if let Err(e) = pof.verify(&[issuer().public()], now) {
        return status(400, &e.to_string());
    }
    if !s.spent.lock().unwrap().insert(pof.digest()) {
        return status(400, "pof already seen");
    }
    s.activations.fetch_add(1, Ordering::Relaxed);
    let open = now + s.lifetime.load(Ordering::Relaxed);
    ContractSection::new_signed(&contract(), open, open + 3600)
        .to_json()
        .unwrap()
        .into_response()
}

async fn dir_info(State(s): State<Shared>) -> Response {
    let info = DirInfo {
        public_key: Some(s.info_key.lock().unwrap().public()),
        endpoint: Some(format!("{}/d", s.base)),
        ..DirInfo::default()
    };
    info.to_json().into_response()
}

async fn dir_relays(State(s): State<Shared>) -> Response {
    let (body, headers) = s.relays.sign(&s.list_signer.lock().unwrap());
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_static(k_lower(k)),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    (map, body).into_response()
}

fn k_lower(k: &'static str) -> &'static str {
    match k {
        "Wireleap-Directory-Pubkey" => "wireleap-directory-pubkey",
        "Wireleap-Directory-Signature" => "wireleap-directory-signature",
        other => panic!("unexpected header {other}"),
    }
}

async fn services(relays: &[&TestRelay], lifetime: i64) -> Services {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut list = RelayList::default();
    for r in relays {
        list.insert(r.entry());
    }
    let shared = Shared {
        base: base.clone(),
        relays: Arc::new(list),
        spent: Arc::default(),
        activations: Arc::default(),
        lifetime: Arc::new(AtomicI64::new(lifetime)),
        list_signer: Arc::new(Mutex::new(dir_key())),
        info_key: Arc::new(Mutex::new(dir_key())),
    };
    let app = Router::new()
        .route("/c/info", get(contract_info))
        .route("/c/servicekey/activate", post(activate))
        .route("/d/info", get(dir_info))
        .route("/d/relays", get(dir_relays))
        .with_state(shared.clone());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    Services {
        url: format!("{base}/c"),
        activations: shared.activations,
        list_signer: shared.list_signer,
        info_key: shared.info_key,
        stop,
    }
}

fn access_key(url: &str, n: usize) -> Vec<u8> {
    // One expiry per test process: keys made in different seconds must still hold the same
    // pofs (the duplicate check compares whole signed pofs).
    static EXP: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let exp = *EXP.get_or_init(|| common::now() + 86_400);
    let pofs = (0..n)
        .map(|i| Pof::new_signed(&issuer(), "dummy".into(), exp, format!("{i:018x}")))
        .collect();
    AccessKey::new(url.to_string(), contract().public(), pofs)
        .to_json()
        .unwrap()
}

async fn roundtrip(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, msg);
}

/// Two processes of one client (old and new during an upgrade hand-over) share the home:
/// when both need a servicekey, the second takes the one the first activated instead of
/// spending another pof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_activated_by_the_other_process_is_taken_over() {
    let backing = relay(84, Role::Backing).await;
    let svc = services(&[&backing], 3600).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path(), "wireleap");
    let api = api_client().unwrap();
    accesskeys::import(&home, &access_key(&svc.url, 3), &api, common::now())
        .await
        .unwrap();
    let keys = || {
        wireleap::servicekey::Keys::new(
            home.clone(),
            api.clone(),
            svc.url.clone(),
            contract().public(),
            true,
        )
        .unwrap()
    };
    let (old, new) = (keys(), keys());
    let first = old.current().await.unwrap();
    assert_eq!(svc.activations.load(Ordering::Relaxed), 1);
    // `new` started before the activation (no key loaded) and now needs one.
    let taken = new.refresh().await.unwrap();
    assert_eq!(
        svc.activations.load(Ordering::Relaxed),
        1,
        "no second pof spent"
    );
    assert_eq!(taken.key.keypair.public(), first.key.keypair.public());
    svc.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_sync_activate_renew_and_carry_traffic() {
    let fronting = relay(81, Role::Fronting).await;
    let entropic = relay(82, Role::Entropic).await;
    let backing = relay(83, Role::Backing).await;
    // Servicekeys live 8 s: renewal is due 5 s before expiry.
    let svc = services(&[&fronting, &entropic, &backing], 8).await;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path(), "wireleap");
    let api = api_client().unwrap();

    // Import: verified against the live contract, duplicates skipped.
    let report = accesskeys::import(&home, &access_key(&svc.url, 3), &api, common::now())
        .await
        .unwrap();
    assert!(report.contract_verified);
    assert_eq!(report.imported, 3);
    let again = accesskeys::import(&home, &access_key(&svc.url, 4), &api, common::now())
        .await
        .unwrap();
    assert_eq!((again.imported, again.duplicates.len()), (1, 3));

    let (config, _) = home.load_config::<ClientConfig>().unwrap();
    assert_eq!(config.contract.as_deref(), Some(svc.url.as_str()));
    let config = ClientConfig {
        circuit: wireleap::config::CircuitConfig {
            hops: 3,
            ..config.circuit.clone()
        },
        ..config
    };
    let stop = CancellationToken::new();
    let (controller, dialer) = Controller::start(
        home.clone(),
        config,
        "socks".into(),
        "h2c".into(),
        stop.clone(),
    )
    .unwrap();
    // Wait for the first sync.
    tokio::time::timeout(Duration::from_secs(10), async {
        while controller
            .contract()
            .unwrap()
            .directory
            .snapshot()
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("synced");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks = l.local_addr().unwrap();
    tokio::spawn(
        SocksServer::new(Arc::new(dialer.clone()), SocksConfig::default()).serve(l, stop.clone()),
    );
    let (echo, _e) = tcp_echo().await;

    let mut long = socks_open(socks, echo).await;
    roundtrip(&mut long, b"first").await;
    assert_eq!(
        svc.activations.load(Ordering::Relaxed),
        1,
        "activated on first use"
    );
    let status = controller.status(&dialer);
    assert_eq!(status.servicekey.as_ref().unwrap().state, "active");
    assert_eq!(status.pofs.usable, 3);
    assert_eq!(status.circuit.as_ref().unwrap().hops.len(), 3);
    assert!(status.problems.is_empty(), "{:?}", status.problems);

    // The renewal task replaces the key before it expires; the open stream keeps working.
    tokio::time::timeout(Duration::from_secs(15), async {
        while svc.activations.load(Ordering::Relaxed) < 2 {
            roundtrip(&mut long, b"tick").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("renewed before expiry");
    roundtrip(&mut long, b"after renewal, same stream").await;
    let mut fresh = socks_open(socks, echo).await;
    roundtrip(&mut fresh, b"new stream, new key").await;
    assert_eq!(controller.status(&dialer).pofs.usable, 2);
    let on_disk = wireleap::files::read_servicekey(&home).unwrap().unwrap();
    assert!(on_disk.contract.settlement_open > common::now());

    // The local h2c broker and the REST API on one listener.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = l.local_addr().unwrap();
    let state = wireleap::api::ApiState {
        controller: controller.clone(),
        dialer: dialer.clone(),
    };
    tokio::spawn(wireleap_api::serve(
        l,
        wireleap::api::router(state, true),
        None,
        stop.clone(),
        Duration::from_secs(1),
    ));
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = http
        .put(format!("http://{api_addr}/broker"))
        .header("Wl-Dial-Protocol", "tcp")
        .header("Wl-Dial-Target", echo.to_string())
        .header("Wl-Forwarder", "test")
        .body("through the broker")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "through the broker");
    let resp = http
        .put(format!("http://{api_addr}/broker"))
        .header("Wl-Dial-Target", "not a target")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let st: serde_json::Value = http
        .get(format!("http://{api_addr}/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["state"], "active", "{st}");
    assert_eq!(st["circuit"]["hops"].as_array().unwrap().len(), 3);
    // POST /api/config applies at once: one hop from now on.
    let c: serde_json::Value = http
        .post(format!("http://{api_addr}/api/config"))
        .json(&serde_json::json!({"circuit": {"hops": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["circuit"]["hops"], 1);
    let mut one = socks_open(socks, echo).await;
    roundtrip(&mut one, b"one hop now").await;
    assert_eq!(dialer.circuit().unwrap().hops.len(), 1);
    let bad = http
        .post(format!("http://{api_addr}/api/config"))
        .json(&serde_json::json!({"circuit": {"hops": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    stop.cancel();
}

#[tokio::test]
async fn sync_pins_every_key() {
    let backing = relay(91, Role::Backing).await;
    let svc = services(&[&backing], 600).await;
    let api = api_client().unwrap();
    let snap = directory::sync(&api, &svc.url, &contract().public())
        .await
        .unwrap();
    assert_eq!(snap.relays.relays.len(), 1);

    // A contract answering with another key than the pinned one.
    let other = Keypair::from_seed([77; 32]).public();
    let e = directory::sync(&api, &svc.url, &other).await.unwrap_err();
    assert!(matches!(e, SyncError::ContractKeyMismatch { .. }), "{e}");

    // A relay list signed by a key other than the one the contract names.
    *svc.list_signer.lock().unwrap() = Keypair::from_seed([78; 32]);
    let e = directory::sync(&api, &svc.url, &contract().public())
        .await
        .unwrap_err();
    assert!(matches!(e, SyncError::RelayList { .. }), "{e}");
    *svc.list_signer.lock().unwrap() = dir_key();

    // A directory whose /info key is not the contract's.
    *svc.info_key.lock().unwrap() = Keypair::from_seed([79; 32]);
    let e = directory::sync(&api, &svc.url, &contract().public())
        .await
        .unwrap_err();
    assert!(matches!(e, SyncError::DirectoryKeyMismatch { .. }), "{e}");
}

#[tokio::test]
async fn import_refusals() {
    let backing = relay(95, Role::Backing).await;
    let svc = services(&[&backing], 600).await;
    let api = api_client().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path(), "wireleap");
    let now = common::now();

    // Wrong contract key in the file.
    let one = || {
        vec![Pof::new_signed(
            &issuer(),
            "dummy".into(),
            now + 100,
            "00".into(),
        )]
    };
    let wrong = AccessKey::new(
        svc.url.clone(),
        Keypair::from_seed([66; 32]).public(),
        one(),
    )
    .to_json()
    .unwrap();
    let e = accesskeys::import(&home, &wrong, &api, now)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("mismatch"), "{e}");

    // Pofs the contract's issuer did not sign are refused one by one; expired ones skipped.
    let mut pofs = vec![
        Pof::new_signed(&issuer(), "dummy".into(), now + 100, "01".into()),
        Pof::new_signed(
            &Keypair::from_seed([67; 32]),
            "dummy".into(),
            now + 100,
            "02".into(),
        ),
        Pof::new_signed(&issuer(), "dummy".into(), now - 1, "03".into()),
    ];
    pofs.push(pofs[0].clone());
    let file = AccessKey::new(svc.url.clone(), contract().public(), pofs)
        .to_json()
        .unwrap();
    let r = accesskeys::import(&home, &file, &api, now).await.unwrap();
    assert_eq!(r.imported, 1);
    assert_eq!(r.invalid.len(), 1);
    assert_eq!(r.expired.len(), 1);
    assert_eq!(r.duplicates.len(), 1);

    // Another contract for the same home.
    let other = AccessKey::new("http://127.0.0.1:9/c".into(), contract().public(), one())
        .to_json()
        .unwrap();
    let e = accesskeys::import(&home, &other, &api, now)
        .await
        .unwrap_err();
    assert!(
        matches!(e, accesskeys::ImportError::OtherContract { .. }),
        "{e}"
    );

    // Missing fields and an incompatible version are named.
    let e = accesskeys::import(&home, br#"{"version":"0.1.0","pofs":[]}"#, &api, now)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("contract"), "{e}");
    let e = accesskeys::import(&home, br#"{"version":"0.2.0","contract":{"endpoint":"http://x","public_key":"gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q"},"pofs":[]}"#, &api, now).await.unwrap_err();
    assert!(e.to_string().contains("0.2.0"), "{e}");
}
