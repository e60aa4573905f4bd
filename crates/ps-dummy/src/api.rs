//! ps-dummy's HTTP API: `POST /accesskeys` (anyone; free access keys) and `POST /withdrawals`
//! (the configured contract; interface contract-ps 0.1.0).

use crate::PsDummyConfig;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use wireleap_api::server::ContractCaller;
use wireleap_api::{ApiClient, ApiError, ApiJson, StatusReply};
use wireleap_contract::httpd::{self, Clock, Shape, StrictBody, StrictJson, StrictSigned};
use wireleap_contract::payservice::{self, PofsError};
use wireleap_proto::accesskey::AccessKey;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::payout::{PofRequest, Withdrawal, WithdrawalState};
use wireleap_proto::status::Status;
use wireleap_proto::version::Interface;

/// The interfaces ps-dummy's API provides.
pub const SERVED: [Interface; 1] = [Interface::ContractPs];

/// `POST /accesskeys` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRequest {
    /// How many pofs.
    #[serde(default)]
    pub quantity: i64,
    /// Their validity (e.g. `"30d"`); the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

impl StrictBody for AccessKeyRequest {
    const SHAPE: Shape = Shape(&[("quantity", None), ("duration", None)]);
}

/// What the handlers share.
pub struct PsState {
    keypair: Keypair,
    config: RwLock<Arc<PsDummyConfig>>,
    clock: Clock,
    auth: ApiClient,
}

impl std::fmt::Debug for PsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsState")
            .field("pubkey", &self.keypair.public())
            .finish_non_exhaustive()
    }
}

impl PsState {
    /// The state of a ps-dummy with identity `keypair`.
    pub fn new(
        keypair: Keypair,
        config: PsDummyConfig,
        clock: Clock,
    ) -> Result<Arc<Self>, ApiError> {
        let auth = payservice::auth_client(&keypair)?;
        Ok(Arc::new(PsState {
            keypair,
            config: RwLock::new(Arc::new(config)),
            clock,
            auth,
        }))
    }

    /// This payment service's key (what auth lists in `payment_services`).
    pub fn pubkey(&self) -> PublicKey {
        self.keypair.public()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<PsDummyConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Applies a reloaded configuration.
    pub fn set_config(&self, config: PsDummyConfig) {
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(config),
            Err(p) => *p.into_inner() = Arc::new(config),
        }
    }
}

/// ps-dummy's router, wrapped in the version gate and idempotency cache.
pub fn router(state: Arc<PsState>) -> axum::Router {
    let routes = axum::Router::new()
        .route("/accesskeys", post(accesskeys))
        .route("/withdrawals", post(withdrawals));
    httpd::gated_router(routes, state, &SERVED)
}

async fn accesskeys(
    State(s): State<Arc<PsState>>,
    StrictJson(req): StrictJson<AccessKeyRequest>,
) -> Result<ApiJson<AccessKey>, StatusReply> {
    let config = s.config();
    let bad = |cause: String| StatusReply(Status::bad_request().with_cause(cause));
    if !(1..=config.max_quantity).contains(&req.quantity) {
        return Err(bad(format!(
            "quantity must be between 1 and {}, got {}",
            config.max_quantity, req.quantity
        )));
    }
    let duration = match &req.duration {
        Some(text) => {
            wireleap_proto::duration::Duration::parse(text).map_err(|e| bad(e.to_string()))?
        }
        None => config.default_duration,
    };
    if duration.as_secs() < 1 {
        return Err(bad(format!("duration must be at least 1s, got {duration}")));
    }
    let (auth, contract) = payservice::peers(
        "ps-dummy",
        Status::gateway(),
        config.auth.as_ref(),
        config.contract.as_ref(),
    )?;
    let pof_request = PofRequest {
        quantity: req.quantity,
        kind: config.pof_type.clone(),
        duration: duration.as_secs(),
        accounting: None,
    };
    let pofs = payservice::fetch_pofs(&s.auth, auth, &pof_request, &s.clock)
        .await
        .map_err(|e| {
            match &e {
                PofsError::Auth(e) => tracing::warn!(error = %e, "auth did not issue pofs"),
                PofsError::Mismatch { got } => tracing::error!(
                    got,
                    "auth answered with pofs that do not match the request or its configured key"
                ),
            }
            StatusReply(e.to_status())
        })?;
    tracing::info!(quantity = req.quantity, "access key issued");
    Ok(ApiJson(AccessKey::new(
        contract.endpoint.clone(),
        contract.public_key,
        pofs,
    )))
}

async fn withdrawals(
    State(s): State<Arc<PsState>>,
    req: StrictSigned<httpd::WithdrawalBody, ContractCaller>,
) -> Result<ApiJson<Withdrawal>, StatusReply> {
    let config = s.config();
    let w = req.body.0;
    payservice::check_contract_signer(config.contract.as_ref(), &req.signer)?;
    if w.id.is_empty() {
        return Err(StatusReply(
            Status::bad_request().with_cause("withdrawal id is missing"),
        ));
    }
    w.request()
        .validate()
        .map_err(|e| StatusReply(Status::bad_request().with_cause(e.to_string())))?;
    let now = (s.clock)();
    tracing::info!(id = %w.id, amount = w.amount, "dummy withdrawal paid (no money moved)");
    let receipt = serde_json::json!({
        "type": "dummy",
        "reference": format!("dummy-{}", w.id),
        "amount": w.amount,
        "note": "ps-dummy moves no money",
    });
    Ok(ApiJson(Withdrawal {
        state: WithdrawalState::Complete.as_str().to_string(),
        state_changed: now,
        receipt: Some(receipt),
        ..w
    }))
}
