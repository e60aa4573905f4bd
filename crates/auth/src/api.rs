//! Auth's HTTP API: `GET /info` (its key, so a payment service can check whom it talks to)
//! and `POST /pofs` (payment service → auth, interface ps-auth 0.1.0).

use crate::{make_pofs, AuthConfig, AuthStore};
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use wireleap_api::server::PsCaller;
use wireleap_api::{ApiJson, StatusReply};
use wireleap_contract::httpd::{self, Clock, Shape, StrictBody, StrictSigned};
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::payout::PofRequest;
use wireleap_proto::pof::Pof;
use wireleap_proto::status::Status;
use wireleap_proto::version::Interface;

/// The interfaces auth's API provides.
pub const SERVED: [Interface; 1] = [Interface::PsAuth];

/// Body-key checking for the pof request (a foreign type, so wrapped).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct PofRequestBody(pub PofRequest);

const ACCOUNTING_SHAPE: Shape = Shape(&[("price", None), ("currency", None)]);

impl StrictBody for PofRequestBody {
    const SHAPE: Shape = Shape(&[
        ("quantity", None),
        ("type", None),
        ("duration", None),
        ("accounting", Some(&ACCOUNTING_SHAPE)),
    ]);
}

/// `GET /info` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    /// The key that signs pofs (what contracts list in `proof_of_funding`).
    pub pubkey: PublicKey,
    /// Software version.
    pub version: String,
}

/// What the handlers share.
pub struct AuthState {
    keypair: Keypair,
    config: RwLock<Arc<AuthConfig>>,
    store: AuthStore,
    clock: Clock,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("pubkey", &self.keypair.public())
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// The state of an auth server with `keypair`.
    pub fn new(keypair: Keypair, config: AuthConfig, store: AuthStore, clock: Clock) -> Arc<Self> {
        Arc::new(AuthState {
            keypair,
            config: RwLock::new(Arc::new(config)),
            store,
            clock,
        })
    }

    /// The pof-signing key.
    pub fn pubkey(&self) -> PublicKey {
        self.keypair.public()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<AuthConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Applies a reloaded configuration (trusted payment services and limits).
    pub fn set_config(&self, config: AuthConfig) {
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(config),
            Err(p) => *p.into_inner() = Arc::new(config),
        }
    }
}

/// Auth's router, wrapped in the version gate and idempotency cache.
pub fn router(state: Arc<AuthState>) -> axum::Router {
    let routes = axum::Router::new()
        .route("/info", get(info))
        .route("/pofs", post(pofs));
    httpd::gated_router(routes, state, &SERVED)
}

async fn info(State(s): State<Arc<AuthState>>) -> ApiJson<AuthInfo> {
    ApiJson(AuthInfo {
        pubkey: s.pubkey(),
        version: wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION")),
    })
}

async fn pofs(
    State(s): State<Arc<AuthState>>,
    req: StrictSigned<PofRequestBody, PsCaller>,
) -> Result<ApiJson<Vec<Pof>>, StatusReply> {
    let config = s.config();
    let r = req.body.0;
    let forbidden = |cause: String| StatusReply(Status::forbidden().with_cause(cause));
    let bad = |cause: String| StatusReply(Status::bad_request().with_cause(cause));
    let allowed: Vec<&str> = config
        .payment_services
        .iter()
        .filter(|p| p.pubkey == req.signer)
        .map(|p| p.kind.as_str())
        .collect();
    if allowed.is_empty() {
        return Err(forbidden(format!(
            "payment service key {} is not trusted by this auth server",
            req.signer
        )));
    }
    r.validate().map_err(|e| bad(e.to_string()))?;
    if !allowed.contains(&r.kind.as_str()) {
        return Err(forbidden(format!(
            "payment service {} may not request pofs of type {:?} (allowed: {})",
            req.signer,
            r.kind,
            allowed.join(", ")
        )));
    }
    if r.quantity > config.max_quantity {
        return Err(bad(format!(
            "pof quantity {} is above the limit {}",
            r.quantity, config.max_quantity
        )));
    }
    if r.duration > config.max_duration.as_secs() {
        return Err(bad(format!(
            "pof duration {}s is above the limit {}s",
            r.duration,
            config.max_duration.as_secs()
        )));
    }
    let now = (s.clock)();
    let pofs = make_pofs(&s.keypair, &r.kind, r.quantity, r.duration, now)
        .map_err(|e| bad(e.to_string()))?;
    s.store
        .record(&pofs, &req.signer.to_b64(), r.accounting.as_ref(), now)
        .await
        .map_err(|e| httpd::internal("recording issued pofs", &e))?;
    tracing::info!(ps = %req.signer, kind = %r.kind, quantity = r.quantity, "pofs issued");
    Ok(ApiJson(pofs))
}
