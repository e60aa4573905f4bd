//! The directory against the known-answer files: what the original relays and clients expect
//! from a directory (enroll_replies.json, bcrypt_pow.json, relaylist.json, dirinfo.json).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use wireleap_daemon::CancellationToken;
use wireleap_dir::config::ChannelConfig;
use wireleap_dir::{Clock, DirServer, DirStore, DirectoryConfig};
use wireleap_proto::address::Address;
use wireleap_proto::dirinfo::DirInfo;
use wireleap_proto::keys::Keypair;
use wireleap_proto::pow;
use wireleap_proto::relayentry::{RelayEntry, Role};
use wireleap_proto::relaylist::RelayList;
use wireleap_proto::request::sign_body;
use wireleap_proto::version::Component;

fn load(name: &str) -> Value {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors"
    ))
    .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("known-answer vectors missing: {} ({e})", path.display()));
    serde_json::from_str(&text).unwrap()
}

struct Dir {
    url: String,
    server: DirServer,
    stop: CancellationToken,
    _db: wireleap_store::testing::TestDb,
}

impl Drop for Dir {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(config: DirectoryConfig) -> Dir {
    let t = wireleap_store::testing::sqlite().await.unwrap();
    let store = DirStore::open(t.db.clone()).await.unwrap();
    // The vectors' directory key: seed 03 x 32.
    let server = DirServer::open(config, Keypair::from_seed([3; 32]), store, Clock::System)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(wireleap_api::serve(
        listener,
        server.router(),
        None,
        stop.clone(),
        Duration::from_secs(1),
    ));
    Dir {
        url,
        server,
        stop,
        _db: t,
    }
}

fn no_ping() -> DirectoryConfig {
    DirectoryConfig {
        ping_check: false,
        ..DirectoryConfig::default()
    }
}

struct Reply {
    status: u16,
    content_type: String,
    challenge: Option<String>,
    body: Vec<u8>,
}

async fn post_signed(dir: &Dir, seed: u8, body: &[u8], extra: &[(&str, &str)]) -> Reply {
    let kp = Keypair::from_seed([seed; 32]);
    let mut req = reqwest::Client::new()
        .post(format!("{}/relays", dir.url))
        .header("content-type", "application/json")
        .header("wireleap-relay-dir-version", "0.2.0")
        .header("idempotency-key", wireleap_proto::nonce::idempotency_key())
        .body(body.to_vec());
    for (k, v) in sign_body(&kp, Component::Relay, body) {
        req = req.header(k, v);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        content_type: resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        challenge: resp
            .headers()
            .get("wireleap-directory-challenge")
            .map(|v| v.to_str().unwrap().to_string()),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

fn entry(seed: u8, role: Role, address: &str) -> RelayEntry {
    RelayEntry::new(
        role,
        Address::parse(address).unwrap(),
        Keypair::from_seed([seed; 32]).public(),
        semver::Version::new(0, 6, 1),
    )
}

fn case<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// Our status replies are the original's HTTP form: the vector's body plus "\n\n".
fn assert_status_body(got: &Reply, want_status: u64, want_body: &str) {
    assert_eq!(u64::from(got.status), want_status);
    assert_eq!(got.content_type, "text/plain; charset=utf-8");
    assert_eq!(got.challenge, None, "no proof of work was configured");
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        format!("{want_body}\n\n")
    );
}

#[tokio::test]
async fn relay_list_is_byte_identical_to_the_vector() {
    let v = load("relaylist");
    let dir = start(no_ping()).await;
    for (seed, role, addr) in [
        (7, Role::Backing, "wireleap://relay3.example.com:13490"),
        (
            1,
            Role::Fronting,
            "wireleap://relay1.example.com:443/wireleap",
        ),
        (6, Role::Entropic, "wireleap://relay2.example.com:13490"),
    ] {
        let r = post_signed(&dir, seed, &entry(seed, role, addr).to_body(), &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let resp = reqwest::get(format!("{}/relays", dir.url)).await.unwrap();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&body), v["body"].as_str().unwrap());
    for name in [
        "Wireleap-Directory-Pubkey",
        "Wireleap-Directory-Signature",
        "Wireleap-Client-Dir-Version",
    ] {
        assert_eq!(
            headers.get(name).unwrap().to_str().unwrap(),
            v["headers"][name].as_str().unwrap(),
            "{name}"
        );
    }
    let pinned = RelayList::verify(&body, &headers, &dir.server.public_key()).unwrap();
    assert_eq!(
        pinned.list.relays.len(),
        v["client_parse"]["relay_count"].as_u64().unwrap() as usize
    );
}

#[tokio::test]
async fn replies_are_what_the_original_relay_accepts() {
    let v = load("enroll_replies");
    let mut cfg = no_ping();
    cfg.enrollment_keys
        .insert(Role::Backing, vec!["user:secret".into()]);
    cfg.upgrade_channels.relay.insert(
        "default".into(),
        ChannelConfig {
            version: semver::Version::new(0, 6, 2),
            rollout_percent: 100.0,
        },
    );
    let dir = start(cfg).await;
    let fronting = entry(
        1,
        Role::Fronting,
        "wireleap://relay1.example.com:443/wireleap",
    )
    .to_body();

    let ok = case(&v, "ok_status_object");
    let r = post_signed(&dir, 1, &fronting, &[]).await;
    assert_status_body(
        &r,
        ok["reply_status"].as_u64().unwrap(),
        ok["reply_body"].as_str().unwrap(),
    );

    // The relay runs 0.6.1 and the channel says 0.6.2: the heartbeat carries the notice.
    let up = case(&v, "upgrade_notice");
    let r = post_signed(&dir, 1, &fronting, &[]).await;
    assert_status_body(
        &r,
        up["reply_status"].as_u64().unwrap(),
        up["reply_body"].as_str().unwrap(),
    );

    let bad = case(&v, "bad_enrollment_key");
    let backing = entry(6, Role::Backing, "wireleap://relay2.example.com:13490").to_body();
    let r = post_signed(&dir, 6, &backing, &[]).await;
    assert_status_body(
        &r,
        bad["reply_status"].as_u64().unwrap(),
        bad["reply_body"].as_str().unwrap(),
    );

    // The enrollment body with key, as the vector's relay sends it, is accepted.
    let with_key = load("relayentry")["bodies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "with_enrollment_key_and_usage_limit")
        .unwrap()["json"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post_signed(&dir, 1, with_key.as_bytes(), &[]).await;
    assert_status_body(&r, 200, ok["reply_body"].as_str().unwrap());
}

#[tokio::test]
async fn proof_of_work_transcript_replays() {
    let v = load("bcrypt_pow")["handshake_transcript"].clone();
    let mut cfg = no_ping();
    cfg.pow_cost = 4;
    let dir = start(cfg).await;
    let first = &v["exchange"][0];
    let body = first["request_body"].as_str().unwrap().as_bytes();
    // The exact first request of the original relay (headers as recorded).
    let mut req = reqwest::Client::new()
        .post(format!("{}/relays", dir.url))
        .body(body.to_vec());
    for (k, val) in first["request_headers"].as_object().unwrap() {
        req = req.header(k.as_str(), val.as_str().unwrap());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(
        u64::from(resp.status().as_u16()),
        first["response_status"].as_u64().unwrap()
    );
    for name in ["Content-Type", "X-Content-Type-Options"] {
        assert_eq!(
            resp.headers().get(name).unwrap().to_str().unwrap(),
            first["response_headers"][name].as_str().unwrap()
        );
    }
    let challenge = resp
        .headers()
        .get("Wireleap-Directory-Challenge")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("4~"));
    assert_eq!(
        String::from_utf8_lossy(&resp.bytes().await.unwrap()),
        first["response_body"].as_str().unwrap()
    );

    // The second request: same body and signature, fresh key, challenge and answer.
    let second = &v["exchange"][1];
    let answer = pow::solve(&challenge).unwrap();
    let mut req = reqwest::Client::new()
        .post(format!("{}/relays", dir.url))
        .body(body.to_vec());
    for (k, val) in second["request_headers"].as_object().unwrap() {
        let val = match k.as_str() {
            "Wireleap-Directory-Challenge" => challenge.clone(),
            "Wireleap-Directory-Response" => answer.clone(),
            _ => val.as_str().unwrap().to_string(),
        };
        req = req.header(k.as_str(), val);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(
        u64::from(resp.status().as_u16()),
        second["response_status"].as_u64().unwrap()
    );
    assert_eq!(
        String::from_utf8_lossy(&resp.bytes().await.unwrap()),
        second["response_body"].as_str().unwrap()
    );
    assert_eq!(dir.server.registry().len(), 1);
}

#[tokio::test]
async fn info_keeps_the_original_shape() {
    let v = load("dirinfo");
    let mut cfg = no_ping();
    cfg.endpoint = "https://directory.example.com".into();
    cfg.info = Some("https://example.com/directory".into());
    cfg.enrollment_keys.insert(Role::Backing, vec!["k".into()]);
    for (component, version) in [("relay", "0.6.1"), ("client", "0.6.3")] {
        let ch = ChannelConfig {
            version: semver::Version::parse(version).unwrap(),
            rollout_percent: 100.0,
        };
        match component {
            "relay" => cfg.upgrade_channels.relay.insert("default".into(), ch),
            _ => cfg.upgrade_channels.client.insert("default".into(), ch),
        };
    }
    let dir = start(cfg).await;
    let body = reqwest::get(format!("{}/info", dir.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let ours: serde_json::Map<String, Value> = serde_json::from_slice(&body).unwrap();
    let keys: Vec<&str> = ours.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "public_key",
            "version",
            "endpoint",
            "info",
            "enrollment",
            "update_channels",
            "upgrade_channels"
        ]
    );
    // Compared with the vector's typical object, only the software version and counts
    // differ (and update_channels, which we fill for relays <= 0.4).
    let typical: Value = serde_json::from_str(v["examples"][0]["json"].as_str().unwrap()).unwrap();
    for k in ["public_key", "endpoint", "info", "upgrade_channels"] {
        assert_eq!(ours[k], typical[k], "{k}");
    }
    assert_eq!(ours["enrollment"]["backing"]["restricted"], true);
    let parsed = DirInfo::from_json(&body).unwrap();
    assert_eq!(parsed.public_key, Some(dir.server.public_key()));

    // With the extension key present, the original parser's rules still read it.
    let relay = entry(
        1,
        Role::Fronting,
        "wireleap://relay1.example.com:443/wireleap",
    );
    assert_eq!(
        post_signed(&dir, 1, &relay.to_body(), &[]).await.status,
        200
    );
    let report = serde_json::json!({
        "pubkey": relay.pubkey.unwrap().to_b64(), "version": "0.6.2", "reason": "<bad> & \"odd\""
    })
    .to_string();
    let kp = Keypair::from_seed([1; 32]);
    let mut req = reqwest::Client::new()
        .post(format!("{}/relays/upgrade-report", dir.url))
        .body(report.clone());
    for (k, val) in sign_body(&kp, Component::Relay, report.as_bytes()) {
        req = req.header(k, val);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    let body = reqwest::get(format!("{}/info", dir.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let parsed_again = DirInfo::from_json(&body).unwrap();
    assert_eq!(parsed_again.upgrade_channels, parsed.upgrade_channels);
    assert_eq!(parsed_again.enrollment.fronting.count, 1);
    let ours: serde_json::Map<String, Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        ours.keys().next_back().map(String::as_str),
        Some("upgrade_failures")
    );
    assert_eq!(
        ours["upgrade_failures"]["0.6.2"]["recent"][0]["reason"],
        "<bad> & \"odd\""
    );
    // HTML escaping is kept in the extension as in the rest of the object.
    assert!(String::from_utf8_lossy(&body).contains("\\u003cbad\\u003e"));
}
