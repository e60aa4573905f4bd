//! The client's local REST API (client.md §7, our subset) and the h2c broker (§6.1), served
//! on loopback TCP over HTTP/1.1 and h2c.
//!
//! `GET /api/status` (what is wrong and what to do), `GET /api/accesskeys`,
//! `POST /api/accesskeys/import {"url": "https://…" | "file:///…"}`, `GET /api/circuit`,
//! `POST /api/circuit/reset`, `GET /api/relays`, `GET /api/contract`, `GET|POST /api/config`
//! (POST merges keys into config.json, validates, saves and applies), `POST /api/reload`,
//! `GET /api/version`; and `PUT /broker` with `Wl-Dial-Protocol` / `Wl-Dial-Target` headers,
//! whose request body goes to the target and whose response body comes from it. The API has
//! no authentication: bind it to loopback only.

use crate::accesskeys;
use crate::circuit;
use crate::config::ClientConfig;
use crate::controller::Controller;
use crate::dialer::Dialer;
use crate::servicekey;
use crate::socks::TargetAddr;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wireleap_daemon::Config as _;
use wireleap_proto::status::Status;
use wireleap_proto::wl_payload::Protocol;

/// REST API version (client.md §10).
pub const API_VERSION: &str = "0.1.0";

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The controller.
    pub controller: Arc<Controller>,
    /// The dialer.
    pub dialer: Arc<Dialer>,
}

/// The API router, with the broker route when `broker` is set.
pub fn router(state: ApiState, broker: bool) -> Router {
    let mut r = Router::new()
        .route(
            "/api/version",
            get(|| async { Json(serde_json::json!({"version": API_VERSION})) }),
        )
        .route("/api/status", get(status))
        .route("/api/accesskeys", get(accesskeys_list))
        .route("/api/accesskeys/import", post(accesskeys_import))
        .route("/api/circuit", get(circuit_get))
        .route("/api/circuit/reset", post(circuit_reset))
        .route("/api/relays", get(relays))
        .route("/api/contract", get(contract))
        .route("/api/config", get(config_get).post(config_post))
        .route("/api/reload", post(reload));
    if broker {
        r = r.route("/broker", put(broker_stream));
    }
    r.with_state(state)
}

/// A broker-only router (for a separate `address_h2c` listener).
pub fn broker_router(state: ApiState) -> Router {
    Router::new()
        .route("/broker", put(broker_stream))
        .with_state(state)
}

fn status_reply(code: u16, description: &str, cause: Option<String>) -> Response {
    let mut s = Status::new(code, description.to_string());
    if let Some(c) = cause {
        s = s.with_cause(c);
    }
    let reply = s.to_http();
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn bad_request(cause: impl ToString) -> Response {
    status_reply(400, "bad request", Some(cause.to_string()))
}

async fn status(State(s): State<ApiState>) -> Response {
    Json(s.controller.status(&s.dialer)).into_response()
}

async fn accesskeys_list(State(s): State<ApiState>) -> Response {
    match accesskeys::list(s.controller.home(), servicekey::now()) {
        Ok(list) => Json(list).into_response(),
        Err(e) => status_reply(500, "internal server error", Some(e.to_string())),
    }
}

#[derive(serde::Deserialize)]
struct ImportBody {
    url: String,
}

async fn accesskeys_import(State(s): State<ApiState>, body: axum::body::Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<ImportBody>(&body) else {
        return bad_request("expected {\"url\": \"https://...\" | \"file:///...\"}");
    };
    // Inside the daemon only URLs make sense: no terminal to read from.
    if !(req.url.starts_with("https://") || req.url.starts_with("file://")) {
        return bad_request(format!(
            "only https:// and file:// URLs can be imported, got {:?}",
            req.url
        ));
    }
    let source = match accesskeys::parse_source(&req.url) {
        Ok(src) => src,
        Err(e) => return bad_request(e),
    };
    let bytes = match accesskeys::read_source(&source).await {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let api = match crate::controller::api_client() {
        Ok(a) => a,
        Err(e) => return status_reply(500, "internal server error", Some(e.to_string())),
    };
    match accesskeys::import(s.controller.home(), &bytes, &api, servicekey::now()).await {
        Ok(report) => {
            // Pick up the contract (and the new pofs) as a reload would.
            if let Ok((config, _)) = s.controller.home().load_config::<ClientConfig>() {
                s.controller.apply(&s.dialer, config);
            }
            Json(serde_json::json!({
                "contract": report.contract,
                "imported": report.imported,
                "duplicates": report.duplicates,
                "expired": report.expired,
                "invalid": report.invalid.iter().map(|(d, r)| serde_json::json!({"pof": d, "reason": r})).collect::<Vec<_>>(),
                "contract_verified": report.contract_verified,
                "warnings": report.warnings,
            }))
            .into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn circuit_get(State(s): State<ApiState>) -> Response {
    Json(s.controller.status(&s.dialer).circuit).into_response()
}

async fn circuit_reset(State(s): State<ApiState>) -> Response {
    s.dialer.reset(None, "reset through the API");
    Json(serde_json::json!({"reset": true})).into_response()
}

async fn relays(State(s): State<ApiState>) -> Response {
    let Some(ctx) = s.controller.contract() else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let Some(snap) = ctx.directory.snapshot() else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let config = s.controller.config();
    let selectable = circuit::selectable(
        &snap.relays,
        config.circuit.hops as usize,
        config.circuit.whitelist.as_deref(),
    );
    let list: Vec<serde_json::Value> = snap
        .relays
        .relays
        .iter()
        .zip(selectable)
        .map(|((_, entry), (_, ok))| {
            let mut v = serde_json::to_value(entry).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("selectable".into(), ok.into());
            }
            v
        })
        .collect();
    Json(list).into_response()
}

async fn contract(State(s): State<ApiState>) -> Response {
    let Some(ctx) = s.controller.contract() else {
        return StatusCode::NO_CONTENT.into_response();
    };
    match ctx.directory.snapshot() {
        Some(snap) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            snap.contract.to_json(),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn config_get(State(s): State<ApiState>) -> Response {
    Json(s.controller.config()).into_response()
}

/// Merges the posted object into config.json (objects merge key by key), validates the
/// result, saves it and applies it.
async fn config_post(State(s): State<ApiState>, body: axum::body::Bytes) -> Response {
    let Ok(patch) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return bad_request("body is not JSON");
    };
    if !patch.is_object() {
        return bad_request("body must be a JSON object");
    }
    let mut current = match serde_json::to_value(s.controller.config()) {
        Ok(v) => v,
        Err(e) => return status_reply(500, "internal server error", Some(e.to_string())),
    };
    merge(&mut current, patch);
    let config: ClientConfig = match serde_json::from_value(current) {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let problems = config.validate();
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return bad_request(text.join("; "));
    }
    let mut bytes = match serde_json::to_vec_pretty(&config) {
        Ok(b) => b,
        Err(e) => return status_reply(500, "internal server error", Some(e.to_string())),
    };
    bytes.push(b'\n');
    if let Err(e) = wireleap_daemon::write_atomic(&s.controller.home().config_file(), &bytes, 0o644)
    {
        return status_reply(500, "internal server error", Some(e.to_string()));
    }
    s.controller.apply(&s.dialer, config.clone());
    Json(config).into_response()
}

fn merge(into: &mut serde_json::Value, patch: serde_json::Value) {
    match (into, patch) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

async fn reload(State(s): State<ApiState>) -> Response {
    match s.controller.home().load_config::<ClientConfig>() {
        Ok((config, _)) => {
            s.controller.apply(&s.dialer, config);
            Json(s.controller.status(&s.dialer)).into_response()
        }
        Err(e) => bad_request(e),
    }
}

/// `PUT /broker`: one stream through the circuit per request.
async fn broker_stream(State(s): State<ApiState>, headers: HeaderMap, req: Request) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let protocol = match header("wl-dial-protocol").as_deref().unwrap_or("tcp") {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return bad_request(format!(
                "Wl-Dial-Protocol must be tcp or udp, got {other:?}"
            ))
        }
    };
    let Some(target) = header("wl-dial-target") else {
        return bad_request("Wl-Dial-Target header (host:port) is missing");
    };
    let target = match parse_target(&target) {
        Some(t) => t,
        None => return bad_request(format!("Wl-Dial-Target must be host:port, got {target:?}")),
    };
    let forwarder = header("wl-forwarder").unwrap_or_else(|| "unnamed_forwarder".into());
    let stream = match s.dialer.open(protocol, &target).await {
        Ok(st) => st,
        Err(e) => {
            tracing::info!(%forwarder, error = %e, "broker stream refused");
            return status_reply(502, "gateway is unreachable or down", Some(e.to_string()));
        }
    };
    let (rd, mut wr) = tokio::io::split(stream);
    let mut upstream = req.into_body().into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = upstream.next().await {
            let Ok(chunk) = chunk else { break };
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    // Each read becomes one body chunk, sent as soon as it arrives (no buffering).
    let downstream = futures_util::stream::unfold(Some(rd), |state| async move {
        let mut rd = state?;
        let mut buf = vec![0u8; 32 << 10];
        match rd.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), Some(rd)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Response::new(Body::from_stream(downstream))
}

/// `host:port` (IPv6 in brackets, names allowed) as a target.
pub fn parse_target(text: &str) -> Option<TargetAddr> {
    if let Ok(sa) = text.parse() {
        return Some(TargetAddr::Ip(sa));
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = wireleap_proto::address::Host::parse(host).ok()?;
    match host {
        wireleap_proto::address::Host::Domain(d) => Some(TargetAddr::Domain(d, port)),
        wireleap_proto::address::Host::Ipv4(ip) => Some(TargetAddr::Ip((ip, port).into())),
        wireleap_proto::address::Host::Ipv6(ip) => Some(TargetAddr::Ip((ip, port).into())),
    }
}
