//! The directory's HTTP API against a real server on 127.0.0.1, driven by the signed API
//! client with relay identities. Reachability checks talk to real tunnel servers from
//! wireleap-net (TLS with the relay's certificate, HTTP/2, PING → PONG): that is the
//! protocol itself, not a stand-in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wireleap_api::client::{ApiError, Identity, RetryPolicy};
use wireleap_api::ApiClient;
use wireleap_daemon::CancellationToken;
use wireleap_dir::channels::{rollout_bucket, ChannelComponent};
use wireleap_dir::command::{run_channel, ChannelCommand, ComponentArg};
use wireleap_dir::config::ChannelConfig;
use wireleap_dir::{Clock, DirServer, DirStore, DirectoryConfig};
use wireleap_net::tunnel::server::{
    Handler, PlainReply, ServeConfig, Server, ServerStream, TunnelRequest,
};
use wireleap_proto::address::Address;
use wireleap_proto::dirinfo::DirInfo;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::pow;
use wireleap_proto::relayentry::{
    classify_enroll_reply, EnrollReply, RelayEntry, Role, CHALLENGE_HEADER, RESPONSE_HEADER,
};
use wireleap_proto::relaylist::RelayList;
use wireleap_proto::request::{pubkey_header, sign_body, signature_header};
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface, RELAY_SOFTWARE_VERSION_HEADER};
use wireleap_proto::wl_payload;
use wireleap_store::testing::{backends, TestDb};
use wireleap_store::Db;

const T0: i64 = 1_700_000_000;

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).unwrap()
}

// ---------------------------------------------------------------------------------------
// A relay's tunnel endpoint answering PING (wireleap-net server, relay certificate).

struct Pong {
    origin: PublicKey,
}

impl Handler for Pong {
    fn tunnel(
        self: Arc<Self>,
        req: TunnelRequest,
        mut stream: ServerStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let is_ping = req
                .payload
                .as_deref()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| wl_payload::TunnelRequest::from_header(p).ok())
                .is_some_and(|r| matches!(r, wl_payload::TunnelRequest::Ping));
            let reply = if is_ping {
                PlainReply::text(StatusCode::OK, Status::pong(&self.origin).text())
            } else {
                PlainReply::text(StatusCode::BAD_REQUEST, Status::bad_request().text())
            };
            let _ = stream.reply_plain(reply);
        })
    }

    fn not_allowed(&self, _method: &Method) -> PlainReply {
        PlainReply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            Status::method_not_allowed().text(),
        )
    }
}

/// A tunnel server on 127.0.0.1; stopped when dropped.
struct PongServer {
    address: Address,
    stop: CancellationToken,
}

impl Drop for PongServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves TLS with the certificate of `cert_seed` and answers PONG with origin `origin`.
async fn pong_server(cert_seed: [u8; 32], origin: PublicKey) -> PongServer {
    let cert = wireleap_net::cert::generate(&cert_seed, std::time::SystemTime::now()).unwrap();
    let tls = wireleap_net::tls::server_config(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::new(
        Arc::new(Pong { origin }),
        ServeConfig {
            drain_timeout: Duration::from_millis(200),
            ..ServeConfig::default()
        },
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        server.serve(listener, Some(tls), s.cancelled_owned()).await;
    });
    PongServer {
        address: Address::parse(&format!("wireleap://127.0.0.1:{port}")).unwrap(),
        stop,
    }
}

// ---------------------------------------------------------------------------------------
// The directory under test.

struct Dir {
    url: String,
    server: DirServer,
    clock: Arc<AtomicI64>,
    stop: CancellationToken,
    key: PublicKey,
    _db: Option<TestDb>,
}

impl Drop for Dir {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Dir {
    fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::Relaxed);
    }

    async fn info(&self) -> (DirInfo, serde_json::Value) {
        let body = reqwest::get(format!("{}/info", self.url))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        (
            DirInfo::from_json(&body).unwrap(),
            serde_json::from_slice(&body).unwrap(),
        )
    }

    async fn relays(&self, query: &str) -> RelayList {
        let resp = reqwest::get(format!("{}/relays{query}", self.url))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        let verified = RelayList::verify(&body, &headers, &self.key).unwrap();
        assert!(verified.rejected.is_empty(), "{:?}", verified.rejected);
        verified.list
    }
}

fn test_config() -> DirectoryConfig {
    let mut c = DirectoryConfig {
        relay_ttl: wireleap_proto::duration::Duration::from_secs(60),
        ..DirectoryConfig::default()
    };
    c.upgrade_channels.relay.insert(
        "default".into(),
        ChannelConfig {
            version: v("0.1.0"),
            rollout_percent: 100.0,
        },
    );
    c
}

async fn start_dir_on(
    config: DirectoryConfig,
    db: Db,
    keep: Option<TestDb>,
    seed: [u8; 32],
) -> Dir {
    let clock = Arc::new(AtomicI64::new(T0));
    let store = DirStore::open(db).await.unwrap();
    let identity = Keypair::from_seed(seed);
    let server = DirServer::open(
        config,
        identity.clone(),
        store,
        Clock::Manual(clock.clone()),
    )
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
        clock,
        stop,
        key: identity.public(),
        _db: keep,
    }
}

async fn start_dir(config: DirectoryConfig) -> Dir {
    let t = wireleap_store::testing::sqlite().await.unwrap();
    let db = t.db.clone();
    start_dir_on(config, db, Some(t), [3; 32]).await
}

// ---------------------------------------------------------------------------------------
// A relay identity talking to the directory through the signed API client.

struct Relay {
    kp: Keypair,
    client: ApiClient,
    entry: RelayEntry,
    pong: Option<PongServer>,
}

impl Relay {
    /// A relay with a live PING endpoint of its own.
    async fn live(seed: u8, role: Role, software: &str) -> Relay {
        let kp = Keypair::from_seed([seed; 32]);
        let pong = pong_server([seed; 32], kp.public()).await;
        let mut r = Relay::at(seed, role, software, pong.address.clone());
        r.pong = Some(pong);
        r
    }

    /// A relay announcing `address` (nothing necessarily listening).
    fn at(seed: u8, role: Role, software: &str, address: Address) -> Relay {
        let kp = Keypair::from_seed([seed; 32]);
        let client = ApiClient::new(
            Some(Identity {
                keypair: kp.clone(),
                component: Component::Relay,
                interfaces: vec![Interface::RelayDir, Interface::RelayContract],
            }),
            false,
        )
        .unwrap()
        .with_retry(RetryPolicy::ONCE);
        let entry = RelayEntry::new(role, address, kp.public(), v(software));
        Relay {
            kp,
            client,
            entry,
            pong: None,
        }
    }

    fn pubkey(&self) -> PublicKey {
        self.kp.public()
    }

    async fn send(
        &self,
        dir: &Dir,
        method: Method,
        path: &str,
        body: Vec<u8>,
        extra: &[(HeaderName, HeaderValue)],
    ) -> (u16, EnrollReply) {
        // As the relay does: its software version rides along in a header.
        let mut headers: Vec<(HeaderName, HeaderValue)> = self
            .entry
            .versions
            .software
            .iter()
            .map(|s| {
                (
                    HeaderName::from_static(RELAY_SOFTWARE_VERSION_LC),
                    HeaderValue::from_str(&s.to_string()).unwrap(),
                )
            })
            .collect();
        headers.extend_from_slice(extra);
        let key = (method == Method::POST).then(wireleap_proto::nonce::idempotency_key);
        let url = format!("{}{path}", dir.url);
        match self
            .client
            .send_once(&method, &url, &Bytes::from(body), key.as_deref(), &headers)
            .await
        {
            Ok(raw) => {
                let challenge = raw
                    .headers
                    .get(CHALLENGE_HEADER)
                    .and_then(|v| v.to_str().ok());
                // Every 2xx reply must be a JSON object: never null, never empty.
                let value: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
                assert!(value.is_object(), "2xx body is not an object: {value}");
                (
                    raw.status,
                    classify_enroll_reply(raw.status, &raw.body, challenge).unwrap(),
                )
            }
            Err(ApiError::Status { status, .. }) => (status.code, EnrollReply::Error(*status)),
            Err(e) => panic!("transport failure: {e}"),
        }
    }

    async fn post(&self, dir: &Dir) -> (u16, EnrollReply) {
        self.send(dir, Method::POST, "/relays", self.entry.to_body(), &[])
            .await
    }

    async fn post_with(
        &self,
        dir: &Dir,
        extra: &[(HeaderName, HeaderValue)],
    ) -> (u16, EnrollReply) {
        self.send(dir, Method::POST, "/relays", self.entry.to_body(), extra)
            .await
    }

    async fn delete(&self, dir: &Dir) -> (u16, EnrollReply) {
        self.send(dir, Method::DELETE, "/relays", self.entry.to_body(), &[])
            .await
    }

    async fn report(&self, dir: &Dir, version: &str, reason: &str) -> (u16, EnrollReply) {
        let body = serde_json::to_vec(&serde_json::json!({
            "pubkey": self.pubkey().to_b64(),
            "version": version,
            "reason": reason,
        }))
        .unwrap();
        self.send(dir, Method::POST, "/relays/upgrade-report", body, &[])
            .await
    }
}

fn ok(reply: &(u16, EnrollReply)) {
    assert_eq!(reply.0, 200, "{reply:?}");
    match &reply.1 {
        EnrollReply::Ok(s) => assert_eq!(*s, Status::ok()),
        other => panic!("expected OK, got {other:?}"),
    }
}

fn refused(reply: &(u16, EnrollReply), code: u16, cause_has: &str) {
    match &reply.1 {
        EnrollReply::Error(s) => {
            assert_eq!(s.code, code, "{s:?}");
            assert!(
                s.cause.as_deref().unwrap_or_default().contains(cause_has),
                "cause {:?} lacks {cause_has:?}",
                s.cause
            );
        }
        other => panic!("expected refusal {code}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn enroll_list_heartbeat_disenroll_on_every_backend() {
    for t in backends().await.unwrap() {
        let db = t.db.clone();
        let name = t.name;
        let dir = start_dir_on(test_config(), db, Some(t), [3; 32]).await;
        let a = Relay::live(1, Role::Fronting, "0.6.1").await;
        let b = Relay::live(2, Role::Backing, "0.6.1").await;
        ok(&a.post(&dir).await);
        ok(&b.post(&dir).await);

        let list = dir.relays("").await;
        assert_eq!(list.relays.len(), 2, "{name}");
        let listed = &list.relays[a.entry.address.as_ref().unwrap().as_str()];
        assert_eq!(listed.pubkey, Some(a.pubkey()));
        assert_eq!(listed.versions, a.entry.versions);
        let backing = dir.relays("?role=backing").await;
        assert_eq!(backing.relays.len(), 1);
        assert_eq!(
            backing.relays.values().next().unwrap().pubkey,
            Some(b.pubkey())
        );

        let (info, raw) = dir.info().await;
        assert_eq!(info.public_key, Some(dir.key));
        assert_eq!(info.enrollment.fronting.count, 1);
        assert_eq!(info.enrollment.backing.count, 1);
        assert_eq!(info.enrollment.entropic.count, 0);
        assert!(!info.enrollment.backing.restricted);
        assert_eq!(info.upgrade_channels.relay["default"], v("0.1.0"));
        assert!(raw.get("upgrade_failures").is_none());

        // Heartbeats: relay runs 0.6.1, channel says 0.1.0 → plain OK, never a downgrade.
        dir.advance(30);
        ok(&a.post(&dir).await);
        ok(&a.delete(&dir).await);
        // Disenrolling twice is fine.
        ok(&a.delete(&dir).await);
        let list = dir.relays("").await;
        assert_eq!(list.relays.len(), 1, "{name}");
        assert_eq!(dir.info().await.0.enrollment.fronting.count, 0);
        assert_eq!(dir.server.store().relay_rows().await.unwrap(), 1, "{name}");
    }
}

#[tokio::test]
async fn upgrade_notices_follow_channel_version_and_rollout() {
    let t = wireleap_store::testing::sqlite().await.unwrap();
    let db = t.db.clone();
    let store = DirStore::open(db.clone()).await.unwrap();
    let dir = start_dir_on(test_config(), db, Some(t), [3; 32]).await;
    let old = Relay::live(1, Role::Fronting, "0.6.1").await;
    let same = Relay::live(2, Role::Entropic, "0.7.0").await;
    let newer = Relay::live(4, Role::Backing, "0.8.0").await;
    for r in [&old, &same, &newer] {
        ok(&r.post(&dir).await);
    }
    let set = |version: &str, rollout: f64| ChannelCommand::Set {
        channel: "default".into(),
        version: version.into(),
        rollout,
        component: ComponentArg::Relay,
    };

    // The operator moves the channel to 0.7.0 but admits nobody yet: no notices.
    run_channel(&store, set("0.7.0", 0.0), T0).await.unwrap();
    dir.server.refresh_channels().await.unwrap();
    assert_eq!(
        dir.info().await.0.upgrade_channels.relay["default"],
        v("0.7.0")
    );
    for r in [&old, &same, &newer] {
        ok(&r.post(&dir).await);
    }

    // Widen to just below the old relay's bucket: still nothing; one bucket more: notice.
    let bucket = rollout_bucket(&old.pubkey(), "default", &v("0.7.0"));
    run_channel(&store, set("0.7.0", f64::from(bucket) / 100.0), T0)
        .await
        .unwrap();
    dir.server.refresh_channels().await.unwrap();
    ok(&old.post(&dir).await);
    run_channel(&store, set("0.7.0", f64::from(bucket + 1) / 100.0), T0)
        .await
        .unwrap();
    dir.server.refresh_channels().await.unwrap();
    let reply = old.post(&dir).await;
    assert_eq!(reply.0, 202);
    assert_eq!(reply.1, EnrollReply::Upgrade(v("0.7.0")));
    // Equal and newer versions never get one, whatever the rollout.
    run_channel(&store, set("0.7.0", 100.0), T0).await.unwrap();
    dir.server.refresh_channels().await.unwrap();
    ok(&same.post(&dir).await);
    ok(&newer.post(&dir).await);
    assert_eq!(old.post(&dir).await.1, EnrollReply::Upgrade(v("0.7.0")));

    // The relay reports that the upgrade failed: shown in /info, and not notified again.
    ok(&old
        .report(
            &dir,
            "0.7.0",
            "migration failed: config.json.next unreadable",
        )
        .await);
    let (_, raw) = dir.info().await;
    let failures = &raw["upgrade_failures"]["0.7.0"];
    assert_eq!(failures["count"], 1);
    assert_eq!(failures["recent"][0]["pubkey"], old.pubkey().to_b64());
    assert!(failures["recent"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("migration failed"));
    ok(&old.post(&dir).await);
    // A later version is offered again.
    run_channel(&store, set("0.7.1", 100.0), T0).await.unwrap();
    dir.server.refresh_channels().await.unwrap();
    assert_eq!(old.post(&dir).await.1, EnrollReply::Upgrade(v("0.7.1")));
    assert_eq!(same.post(&dir).await.1, EnrollReply::Upgrade(v("0.7.1")));

    // An operator downgrade of the channel never tells anyone to downgrade.
    run_channel(&store, set("0.5.0", 100.0), T0).await.unwrap();
    dir.server.refresh_channels().await.unwrap();
    for r in [&old, &same, &newer] {
        ok(&r.post(&dir).await);
    }

    // A relay on another channel follows that channel (upgrade_channel, or the deprecated
    // update_channel).
    let mut beta = Relay::live(5, Role::Fronting, "0.6.1").await;
    beta.entry.update_channel = Some("beta".into());
    ok(&beta.post(&dir).await);
    ok(&beta.post(&dir).await);
    run_channel(
        &store,
        ChannelCommand::Set {
            channel: "beta".into(),
            version: "0.9.0-rc.1".into(),
            rollout: 100.0,
            component: ComponentArg::Relay,
        },
        T0,
    )
    .await
    .unwrap();
    dir.server.refresh_channels().await.unwrap();
    assert_eq!(
        beta.post(&dir).await.1,
        EnrollReply::Upgrade(v("0.9.0-rc.1"))
    );
    ok(&old.post(&dir).await);

    // Client channels are published, not notified.
    run_channel(
        &store,
        ChannelCommand::Set {
            channel: "default".into(),
            version: "0.6.3".into(),
            rollout: 100.0,
            component: ComponentArg::Client,
        },
        T0,
    )
    .await
    .unwrap();
    dir.server.refresh_channels().await.unwrap();
    let info = dir.info().await.0;
    assert_eq!(info.upgrade_channels.client["default"], v("0.6.3"));
    assert_eq!(info.upgrade_channels.relay["beta"], v("0.9.0-rc.1"));
    assert_eq!(dir.server.channels().get(ChannelComponent::Relay).len(), 2);
}

#[tokio::test]
async fn running_directory_picks_up_channel_changes() {
    let t = wireleap_store::testing::sqlite().await.unwrap();
    let db = t.db.clone();
    let mut cfg = test_config();
    cfg.channel_refresh_interval = wireleap_proto::duration::Duration(50_000_000);
    let dir = start_dir_on(cfg, db.clone(), Some(t), [3; 32]).await;
    let bg = dir.server.spawn_background(dir.stop.clone());
    let relay = Relay::live(1, Role::Fronting, "0.6.1").await;
    ok(&relay.post(&dir).await);
    // A second handle on the same database, as the `channel set` command opens it.
    let operator = DirStore::open(db).await.unwrap();
    run_channel(
        &operator,
        ChannelCommand::Set {
            channel: "default".into(),
            version: "0.6.2".into(),
            rollout: 100.0,
            component: ComponentArg::Relay,
        },
        T0,
    )
    .await
    .unwrap();
    let mut seen = false;
    for _ in 0..100 {
        if relay.post(&dir).await.1 == EnrollReply::Upgrade(v("0.6.2")) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen,
        "the running directory never served the new channel version"
    );
    assert_eq!(
        dir.info().await.0.upgrade_channels.relay["default"],
        v("0.6.2")
    );
    dir.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), bg)
        .await
        .unwrap()
        .unwrap();
}

/// An old process back in charge after its successor (same database) was rolled back
/// learns the relays that enrolled or disenrolled through the successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_takes_in_what_a_successor_changed_in_the_database() {
    let t = wireleap_store::testing::sqlite().await.unwrap();
    let old = start_dir_on(test_config(), t.db.clone(), None, [3; 32]).await;
    let a = Relay::live(1, Role::Fronting, "0.6.1").await;
    let b = Relay::live(2, Role::Backing, "0.6.1").await;
    ok(&a.post(&old).await);
    old.server.flush().await.unwrap();
    let successor = start_dir_on(test_config(), t.db.clone(), None, [3; 32]).await;
    successor
        .clock
        .store(old.clock.load(Ordering::Relaxed) + 5, Ordering::Relaxed);
    // Through the successor: b enrolls, a disenrolls.
    ok(&b.post(&successor).await);
    ok(&a.delete(&successor).await);
    let keys = |l: RelayList| {
        l.relays
            .values()
            .filter_map(|e| e.pubkey)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(old.relays("").await), vec![a.pubkey()], "stale before");
    old.clock
        .store(old.clock.load(Ordering::Relaxed) + 6, Ordering::Relaxed);
    old.server.resync().await.unwrap();
    assert_eq!(keys(old.relays("").await), vec![b.pubkey()]);
    // b's next heartbeat to the old process is a heartbeat, not a new enrollment.
    ok(&b.post(&old).await);
    assert_eq!(old.server.registry().len(), 1);
    drop(successor);
    drop(old);
    drop(t);
}

#[tokio::test]
async fn relays_expire_without_heartbeats_and_survive_restarts() {
    let t = wireleap_store::testing::sqlite().await.unwrap();
    let db = t.db.clone();
    let dir = start_dir_on(test_config(), db.clone(), None, [3; 32]).await;
    let a = Relay::live(1, Role::Fronting, "0.6.1").await;
    let b = Relay::live(2, Role::Entropic, "0.6.1").await;
    ok(&a.post(&dir).await);
    ok(&b.post(&dir).await);
    // b keeps beating, a stops.
    dir.advance(40);
    ok(&b.post(&dir).await);
    dir.advance(21);
    let list = dir.relays("").await;
    assert_eq!(list.relays.len(), 1, "a is 61 s old with a 60 s TTL");
    assert!(list.relays.values().all(|e| e.pubkey == Some(b.pubkey())));
    let info = dir.info().await.0;
    assert_eq!(
        (
            info.enrollment.fronting.count,
            info.enrollment.entropic.count
        ),
        (0, 1)
    );
    // The purge removes a from the database and records b's heartbeat.
    dir.server.purge().await.unwrap();
    assert_eq!(dir.server.store().relay_rows().await.unwrap(), 1);
    let stored = dir.server.store().live_relays(0).await.unwrap();
    assert_eq!(stored[0].last_seen, T0 + 40);

    // a comes back: it is enrolled again from scratch (PING included) and listed.
    ok(&a.post(&dir).await);
    assert_eq!(dir.relays("").await.relays.len(), 2);
    dir.advance(1);
    ok(&b.post(&dir).await);
    dir.server.flush().await.unwrap();

    // A restart keeps the relays; their heartbeats stay heartbeats (no PING needed).
    let now = dir.clock.load(Ordering::Relaxed);
    drop(dir);
    let dir2 = start_dir_on(test_config(), db, Some(t), [3; 32]).await;
    dir2.clock.store(now + 5, Ordering::Relaxed);
    assert_eq!(dir2.relays("").await.relays.len(), 2);
    let b_offline = Relay::at(2, Role::Entropic, "0.6.1", b.entry.address.clone().unwrap());
    drop(b);
    ok(&b_offline.post(&dir2).await);
    // ... while a changed entry is a new enrollment, which now fails the PING.
    let mut moved = b_offline;
    moved.entry.versions.software = Some(v("0.6.2"));
    refused(&moved.post(&dir2).await, 400, "reachability");
}

#[tokio::test]
async fn bad_signatures_and_mismatched_keys_are_refused() {
    let dir = start_dir(test_config()).await;
    let a = Relay::live(1, Role::Fronting, "0.6.1").await;
    let body = a.entry.to_body();
    let http = reqwest::Client::new();
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut req = http.post(format!("{}/relays", dir.url)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    // No signature at all.
    let resp = post(vec![], body.clone()).await.unwrap();
    assert_eq!(resp.status(), 403);
    // Signature over other bytes.
    let mut headers = sign_body(&a.kp, Component::Relay, b"{}");
    let resp = post(headers.clone(), body.clone()).await.unwrap();
    assert_eq!(resp.status(), 403);
    let s = Status::parse(&resp.bytes().await.unwrap()).unwrap();
    assert!(s.cause.unwrap().contains("does not verify"));
    // Garbage in the headers.
    headers = vec![
        (pubkey_header(Component::Relay), "!!".into()),
        (signature_header(Component::Relay), "!!".into()),
    ];
    assert_eq!(post(headers, body.clone()).await.unwrap().status(), 403);

    // Signed correctly, but by another relay than the body names.
    let other = Relay::live(2, Role::Fronting, "0.6.1").await;
    let mut forged = Relay::at(2, Role::Fronting, "0.6.1", a.entry.address.clone().unwrap());
    forged.entry = a.entry.clone();
    refused(&forged.post(&dir).await, 403, "not the signing key");
    refused(&forged.delete(&dir).await, 403, "not the signing key");
    // Body without a key.
    let mut keyless = Relay::at(2, Role::Fronting, "0.6.1", a.entry.address.clone().unwrap());
    keyless.entry.pubkey = None;
    refused(&keyless.post(&dir).await, 400, "public key");
    // Not JSON, and JSON null.
    let null_sig = sign_body(&a.kp, Component::Relay, b"null");
    assert_eq!(
        post(null_sig, b"null".to_vec()).await.unwrap().status(),
        400
    );
    let junk_sig = sign_body(&a.kp, Component::Relay, b"{\"role\":");
    assert_eq!(
        post(junk_sig, b"{\"role\":".to_vec())
            .await
            .unwrap()
            .status(),
        400
    );

    assert!(dir.relays("").await.relays.is_empty());
    ok(&other.post(&dir).await);
    ok(&a.post(&dir).await);
    // A forged disenrollment did not remove a.
    assert_eq!(dir.relays("").await.relays.len(), 2);

    // Once a is live, its heartbeat bytes are remembered; anything else is fully checked.
    ok(&a.post(&dir).await);
    let bad = sign_body(&a.kp, Component::Relay, b"{}");
    assert_eq!(post(bad, body.clone()).await.unwrap().status(), 403);
    let mut swapped = sign_body(&a.kp, Component::Relay, &body);
    swapped[0].1 = other.pubkey().to_b64();
    assert_eq!(post(swapped, body.clone()).await.unwrap().status(), 403);
    let good = sign_body(&a.kp, Component::Relay, &body);
    let resp = post(good, body.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        Status::parse(&resp.bytes().await.unwrap()).unwrap(),
        Status::ok()
    );
}

#[tokio::test]
async fn roles_versions_and_enrollment_keys_are_checked() {
    let mut cfg = test_config();
    cfg.roles = vec![Role::Fronting, Role::Backing];
    cfg.enrollment_keys.insert(
        Role::Backing,
        vec!["enroll-secret-1".into(), "enroll-secret-2".into()],
    );
    let dir = start_dir(cfg).await;

    // A role name that is not one of the three does not even parse.
    let r = Relay::live(1, Role::Fronting, "0.6.1").await;
    let body = r.entry.to_body();
    let text = String::from_utf8(body)
        .unwrap()
        .replace("\"fronting\"", "\"middle\"");
    let reply = r
        .send(&dir, Method::POST, "/relays", text.into_bytes(), &[])
        .await;
    refused(&reply, 400, "invalid JSON body");
    // A role this directory does not take.
    let entropic = Relay::live(2, Role::Entropic, "0.6.1").await;
    refused(
        &entropic.post(&dir).await,
        403,
        "role entropic is not accepted",
    );

    // Interface versions.
    let mut wrong = Relay::live(3, Role::Fronting, "0.6.1").await;
    wrong.entry.versions.client_relay = Some(v("0.3.0"));
    refused(&wrong.post(&dir).await, 400, "client-relay");
    wrong.entry.versions.client_relay = Some(v("0.2.9"));
    wrong.entry.versions.relay_relay = None;
    refused(&wrong.post(&dir).await, 400, "no relay-relay version");
    wrong.entry.versions.relay_relay = Some(v("0.2.0"));
    wrong.entry.versions.relay_dir = Some(v("0.1.0"));
    refused(&wrong.post(&dir).await, 400, "relay-dir");
    wrong.entry.versions.relay_dir = Some(v("0.2.0"));
    // The version gate on the relay-dir header (sent raw: the API client always sends ours).
    let body = wrong.entry.to_body();
    let mut req = reqwest::Client::new()
        .post(format!("{}/relays", dir.url))
        .header(Interface::RelayDir.header_name(), "0.3.0")
        .body(body.clone());
    for (k, val) in sign_body(&wrong.kp, Component::Relay, &body) {
        req = req.header(k, val);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let s = Status::parse(&resp.bytes().await.unwrap()).unwrap();
    assert!(s.cause.unwrap().contains("invalid client API version"));
    ok(&wrong.post(&dir).await);

    // Restricted role: no key, a wrong key, then a right one.
    let mut backing = Relay::live(4, Role::Backing, "0.6.1").await;
    let reply = backing.post(&dir).await;
    assert_eq!(reply.1, EnrollReply::Error(Status::bad_enrollment_key()));
    backing.entry.key = Some("enroll-secret-3".into());
    assert_eq!(
        backing.post(&dir).await.1,
        EnrollReply::Error(Status::bad_enrollment_key())
    );
    backing.entry.key = Some("enroll-secret-2".into());
    ok(&backing.post(&dir).await);

    let info = dir.info().await.0;
    assert!(info.enrollment.backing.restricted);
    assert!(!info.enrollment.fronting.restricted);
    assert!(
        info.enrollment.entropic.restricted,
        "a closed role shows as restricted"
    );
    assert_eq!(info.enrollment.backing.count, 1);
    // The enrollment key is never published.
    let resp = reqwest::get(format!("{}/relays", dir.url)).await.unwrap();
    assert!(!resp.text().await.unwrap().contains("enroll-secret"));
    assert_eq!(dir.relays("").await.relays.len(), 2);
}

#[tokio::test]
async fn proof_of_work_round_trip_at_cost_4() {
    let mut cfg = test_config();
    cfg.pow_cost = 4;
    let dir = start_dir(cfg).await;
    let relay = Relay::live(1, Role::Fronting, "0.6.1").await;

    let (code, reply) = relay.post(&dir).await;
    assert_eq!(code, 202);
    let EnrollReply::Challenge(challenge) = reply else {
        panic!("expected a challenge, got {reply:?}")
    };
    assert!(challenge.starts_with("4~"), "{challenge}");
    assert!(
        dir.relays("").await.relays.is_empty(),
        "not listed before the proof"
    );

    let hdr = |c: &str, r: &str| {
        vec![
            (
                HeaderName::from_static("wireleap-directory-challenge"),
                HeaderValue::from_str(c).unwrap(),
            ),
            (
                HeaderName::from_static("wireleap-directory-response"),
                HeaderValue::from_str(r).unwrap(),
            ),
        ]
    };
    // A wrong answer, an answer at another cost, a tampered challenge: refused, not listed.
    let other = pow::solve("4~something-else").unwrap();
    refused(
        &relay.post_with(&dir, &hdr(&challenge, &other)).await,
        403,
        "proof of work",
    );
    let c5 = challenge.replacen("4~", "5~", 1);
    refused(
        &relay
            .post_with(&dir, &hdr(&c5, &pow::solve(&c5).unwrap()))
            .await,
        403,
        "proof of work",
    );
    let mut tampered = challenge.clone();
    tampered.replace_range(2..3, if &challenge[2..3] == "9" { "8" } else { "9" });
    refused(
        &relay
            .post_with(&dir, &hdr(&tampered, &pow::solve(&tampered).unwrap()))
            .await,
        403,
        "not issued by this directory",
    );
    // Another relay cannot use this relay's challenge.
    let thief = Relay::live(2, Role::Fronting, "0.6.1").await;
    let answer = tokio::task::spawn_blocking({
        let c = challenge.clone();
        move || pow::solve(&c).unwrap()
    })
    .await
    .unwrap();
    refused(
        &thief.post_with(&dir, &hdr(&challenge, &answer)).await,
        403,
        "not issued",
    );
    assert!(dir.relays("").await.relays.is_empty());

    // The real answer enrolls.
    ok(&relay.post_with(&dir, &hdr(&challenge, &answer)).await);
    assert_eq!(dir.relays("").await.relays.len(), 1);
    // Heartbeats need no further proof.
    ok(&relay.post(&dir).await);
    // An expired challenge is refused.
    let (_, EnrollReply::Challenge(c2)) = thief.post(&dir).await else {
        panic!("expected a challenge")
    };
    dir.advance(301);
    let a2 = pow::solve(&c2).unwrap();
    refused(&thief.post_with(&dir, &hdr(&c2, &a2)).await, 403, "expired");
    // Headers as the original relay sends them are accepted too (canonical names).
    assert_eq!(
        CHALLENGE_HEADER.to_ascii_lowercase(),
        "wireleap-directory-challenge"
    );
    assert_eq!(
        RESPONSE_HEADER.to_ascii_lowercase(),
        "wireleap-directory-response"
    );
}

#[tokio::test]
async fn reachability_is_checked_before_listing() {
    let dir = start_dir(test_config()).await;
    // Nothing listens at the address.
    let unused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let silent = Relay::at(
        1,
        Role::Fronting,
        "0.6.1",
        Address::parse(&format!("wireleap://127.0.0.1:{unused}")).unwrap(),
    );
    refused(&silent.post(&dir).await, 400, "reachability check failed");
    // Someone answers, but with another relay's certificate (pin mismatch).
    let imposter_ep = pong_server([9; 32], Keypair::from_seed([1; 32]).public()).await;
    let pinned = Relay::at(1, Role::Fronting, "0.6.1", imposter_ep.address.clone());
    refused(&pinned.post(&dir).await, 400, "certificate key mismatch");
    // Right certificate, but the PONG names someone else.
    let wrong_origin = pong_server([1; 32], Keypair::from_seed([9; 32]).public()).await;
    let r = Relay::at(1, Role::Fronting, "0.6.1", wrong_origin.address.clone());
    refused(&r.post(&dir).await, 400, "did not answer PONG");
    assert!(dir.relays("").await.relays.is_empty());
    assert_eq!(dir.info().await.0.enrollment.fronting.count, 0);

    // An address is held by the relay that answers PING there.
    let a = Relay::live(1, Role::Fronting, "0.6.1").await;
    ok(&a.post(&dir).await);
    let squatter = Relay::at(2, Role::Fronting, "0.6.1", a.entry.address.clone().unwrap());
    refused(&squatter.post(&dir).await, 400, "certificate key mismatch");
    assert_eq!(dir.relays("").await.relays.len(), 1);
}

#[tokio::test]
async fn without_ping_an_address_cannot_be_taken_over() {
    let mut cfg = test_config();
    cfg.ping_check = false;
    let dir = start_dir(cfg).await;
    let addr = Address::parse("wireleap://192.0.2.1:13490").unwrap();
    let a = Relay::at(1, Role::Fronting, "0.6.1", addr.clone());
    let b = Relay::at(2, Role::Fronting, "0.6.1", addr);
    ok(&a.post(&dir).await);
    refused(&b.post(&dir).await, 409, "already listed");
    let list = dir.relays("").await;
    assert_eq!(list.relays.len(), 1);
    assert_eq!(
        list.relays.values().next().unwrap().pubkey,
        Some(a.pubkey())
    );
}

#[tokio::test]
async fn list_filters_and_reports() {
    let mut cfg = test_config();
    cfg.ping_check = false;
    let contract = Keypair::from_seed([2; 32]).public();
    cfg.contract = Some(wireleap_dir::config::ContractRef {
        endpoint: "http://127.0.0.1:1".into(),
        public_key: contract,
    });
    let dir = start_dir(cfg).await;
    let a = Relay::at(
        1,
        Role::Fronting,
        "0.6.1",
        Address::parse("wireleap://192.0.2.1:1").unwrap(),
    );
    ok(&a.post(&dir).await);
    assert_eq!(
        dir.relays(&format!("?contract={}", contract.to_b64()))
            .await
            .relays
            .len(),
        1
    );
    assert_eq!(
        dir.relays("?contract=http://127.0.0.1:1")
            .await
            .relays
            .len(),
        1
    );
    assert!(dir.relays("?contract=someone-else").await.relays.is_empty());
    assert!(dir.relays("?role=entropic").await.relays.is_empty());
    let resp = reqwest::get(format!("{}/relays?role=middle", dir.url))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = reqwest::get(format!("{}/nowhere", dir.url)).await.unwrap();
    assert_eq!(resp.status(), 404);

    // Reports only from enrolled relays, signed by the relay named.
    let stranger = Relay::at(
        5,
        Role::Fronting,
        "0.6.1",
        Address::parse("wireleap://192.0.2.5:1").unwrap(),
    );
    refused(
        &stranger.report(&dir, "0.7.0", "x").await,
        403,
        "not enrolled",
    );
    let body = serde_json::to_vec(&serde_json::json!({
        "pubkey": a.pubkey().to_b64(), "version": "0.7.0", "reason": "x"
    }))
    .unwrap();
    refused(
        &stranger
            .send(&dir, Method::POST, "/relays/upgrade-report", body, &[])
            .await,
        403,
        "not the signing key",
    );
    let reply = a.report(&dir, "v0.7.0", "x").await;
    assert_eq!(reply.0, 400);
    ok(&a.report(&dir, "0.7.0", &"y".repeat(5000)).await);
    let (_, raw) = dir.info().await;
    assert_eq!(
        raw["upgrade_failures"]["0.7.0"]["recent"][0]["reason"]
            .as_str()
            .unwrap()
            .len(),
        1024
    );
    assert_eq!(raw["upgrade_failures"]["0.7.0"]["count"], 1);
}

#[tokio::test]
async fn software_version_header_is_the_fallback() {
    let dir = start_dir(test_config()).await;
    let mut r = Relay::live(1, Role::Fronting, "0.6.1").await;
    let store = dir.server.store().clone();
    run_channel(
        &store,
        ChannelCommand::Set {
            channel: "default".into(),
            version: "0.7.0".into(),
            rollout: 100.0,
            component: ComponentArg::Relay,
        },
        T0,
    )
    .await
    .unwrap();
    dir.server.refresh_channels().await.unwrap();
    // The body carries no software version; the Wireleap-Relay-Version header (0.6.1) counts.
    r.entry.versions.software = None;
    let hdr = [(
        HeaderName::from_static(RELAY_SOFTWARE_VERSION_LC),
        HeaderValue::from_static("0.6.1"),
    )];
    ok(&r.post_with(&dir, &hdr).await);
    assert_eq!(
        r.post_with(&dir, &hdr).await.1,
        EnrollReply::Upgrade(v("0.7.0"))
    );
}

const RELAY_SOFTWARE_VERSION_LC: &str = "wireleap-relay-version";

#[test]
fn header_constant_matches() {
    assert_eq!(
        RELAY_SOFTWARE_VERSION_HEADER.to_ascii_lowercase(),
        RELAY_SOFTWARE_VERSION_LC
    );
}

#[tokio::test]
async fn reload_applies_policy_and_keeps_restart_only_settings() {
    let dir = start_dir(test_config()).await;
    let a = Relay::live(1, Role::Fronting, "0.6.1").await;
    ok(&a.post(&dir).await);
    let mut next = test_config();
    next.pow_cost = 4;
    next.roles = vec![Role::Fronting];
    next.address = "127.0.0.1:1".into();
    next.upgrade_channels.relay.insert(
        "beta".into(),
        ChannelConfig {
            version: v("0.9.0"),
            rollout_percent: 100.0,
        },
    );
    dir.server.reload(next).await.unwrap();
    let cfg = dir.server.config();
    assert_eq!(cfg.pow_cost, 4);
    assert_eq!(
        cfg.address,
        DirectoryConfig::default().address,
        "needs a restart"
    );
    assert_eq!(dir.server.channels().relay["beta"].version, v("0.9.0"));
    // Live relays keep beating without proof of work; new ones must solve one.
    ok(&a.post(&dir).await);
    let b = Relay::live(2, Role::Fronting, "0.6.1").await;
    assert!(matches!(b.post(&dir).await.1, EnrollReply::Challenge(_)));
    let c = Relay::live(3, Role::Backing, "0.6.1").await;
    refused(&c.post(&dir).await, 403, "role backing is not accepted");
}
