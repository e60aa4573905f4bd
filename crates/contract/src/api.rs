//! The contract's HTTP API (services.md §3.3, network.md "Contract"): `/info`, servicekey
//! activation, sharetoken submission, balances, token counts and withdrawals, plus the
//! background jobs that settle closed servicekeys and re-ask the payment service about
//! pending withdrawals.
//!
//! Request checking (signatures, versions, body limits, unknown keys) happens in extractors
//! before a handler runs; every refusal is a status object. Durable effects go through
//! [`ContractStore`], whose transactions make each of them all-or-nothing.

use crate::batch::Submitter;
use crate::config::ContractConfig;
use crate::httpd::{self, Clock, Shape, SignedCaller, StrictBody, StrictJson, StrictSigned};
use crate::store::{
    Activation, ContractStore, NewActivation, Settled, Submission, WithdrawalOutcome,
};
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wireleap_api::server::RelayCaller;
use wireleap_api::{ApiClient, ApiError, ApiJson, RetryPolicy, StatusReply};
use wireleap_proto::contractinfo::ContractInfo;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::payout::{Withdrawal, WithdrawalRequest, WithdrawalState};
use wireleap_proto::pof::{ActivationRequest, PofError};
use wireleap_proto::rational::Rational;
use wireleap_proto::servicekey::ContractSection;
use wireleap_proto::sharetoken::{Sharetoken, SharetokenError};
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface};
use wireleap_store::StoreError;

/// The interfaces the contract's API provides.
pub const SERVED: [Interface; 2] = [Interface::ClientContract, Interface::RelayContract];

const POF_SHAPE: Shape = Shape(&[
    ("type", None),
    ("expiration", None),
    ("nonce", None),
    ("signature", None),
]);

const SECTION_SHAPE: Shape = Shape(&[
    ("settlement_open", None),
    ("settlement_close", None),
    ("public_key", None),
    ("signature", None),
]);

impl StrictBody for ActivationRequest {
    const SHAPE: Shape = Shape(&[("pubkey", None), ("pof", Some(&POF_SHAPE))]);
}

impl StrictBody for Sharetoken {
    const SHAPE: Shape = Shape(&[
        ("version", None),
        ("public_key", None),
        ("timestamp", None),
        ("relay_pubkey", None),
        ("share_key", None),
        ("signature", None),
        ("nonce", None),
        ("contract", Some(&SECTION_SHAPE)),
    ]);
}

impl StrictBody for WithdrawalRequest {
    const SHAPE: Shape = Shape(&[("amount", None), ("type", None), ("destination", None)]);
}

/// `GET /payout/balance` reply: the original's exported balance (`currency`, `available`,
/// `pending`) plus the exact value and the relay's accepted token count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceReply {
    /// Currency code.
    pub currency: String,
    /// Whole minor units that can be withdrawn.
    pub available: i64,
    /// Whole minor units in a pending withdrawal (omitted when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
    /// The exact available amount.
    pub value: Rational,
    /// Sharetokens accepted for this relay so far.
    pub tokens: i64,
}

/// `GET /payout/tokens` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokensReply {
    /// The relay asked about.
    pub relay: PublicKey,
    /// Sharetokens accepted for it.
    pub accepted: i64,
    /// Of those, the ones waiting for their servicekey's settlement.
    pub unsettled: i64,
    /// Of those, the ones already settled (credited).
    pub settled: i64,
}

/// Everything the handlers share.
pub struct ContractState {
    keypair: Keypair,
    config: RwLock<Arc<ContractConfig>>,
    store: ContractStore,
    submitter: Submitter,
    clock: Clock,
    ps: ApiClient,
}

impl std::fmt::Debug for ContractState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractState")
            .field("pubkey", &self.keypair.public())
            .finish_non_exhaustive()
    }
}

impl ContractState {
    /// The state for a contract with `keypair`; starts the submission pipeline, so it must be
    /// called inside a tokio runtime.
    pub fn new(
        keypair: Keypair,
        config: ContractConfig,
        store: ContractStore,
        clock: Clock,
    ) -> Result<Arc<Self>, ApiError> {
        let ps =
            crate::payservice::signed_client(&keypair, Component::Contract, Interface::ContractPs)?
                .with_retry(RetryPolicy {
                    attempts: 2,
                    delay: Duration::from_millis(500),
                });
        Ok(Arc::new(ContractState {
            submitter: Submitter::spawn(keypair.public(), store.clone()),
            keypair,
            config: RwLock::new(Arc::new(config)),
            store,
            clock,
            ps,
        }))
    }

    /// The contract's public key.
    pub fn pubkey(&self) -> PublicKey {
        self.keypair.public()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ContractConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Applies a reloaded configuration (terms, issuers, `/info`; not the listen address,
    /// database or TLS files, which need a restart).
    pub fn set_config(&self, config: ContractConfig) {
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(config),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
        }
    }

    /// The store.
    pub fn store(&self) -> &ContractStore {
        &self.store
    }

    /// Settles every servicekey whose window has closed.
    pub async fn settle_due(&self) -> Result<Vec<Settled>, StoreError> {
        let now = (self.clock)();
        let mut all = Vec::new();
        loop {
            let batch = self.store.settle_due(now, 100).await?;
            let n = batch.len();
            for s in &batch {
                tracing::info!(
                    servicekey = %s.servicekey,
                    tokens = s.tokens,
                    relays = s.credits.len(),
                    retained = %s.retained,
                    "servicekey settled"
                );
            }
            all.extend(batch);
            if n < 100 {
                return Ok(all);
            }
        }
    }

    /// Asks the payment service again about every pending withdrawal.
    pub async fn recheck_withdrawals(&self) -> Result<(), StoreError> {
        let Some(endpoint) = self.config().payout.endpoint.clone() else {
            return Ok(());
        };
        for w in self.store.pending_withdrawals().await? {
            // Errors are logged inside; the next round asks again.
            let _ = self.forward_withdrawal(&endpoint, w).await;
        }
        Ok(())
    }

    /// Sends a pending withdrawal to the payment service and records its answer. The
    /// payment service must treat the withdrawal id as idempotency key: a withdrawal whose
    /// answer was lost is sent again with the same id.
    async fn forward_withdrawal(
        &self,
        endpoint: &str,
        w: Withdrawal,
    ) -> Result<Withdrawal, StatusReply> {
        let reply: Result<Withdrawal, ApiError> = self.ps.post(endpoint, &w).await;
        let now = (self.clock)();
        match reply {
            Ok(answer) if answer.id == w.id => {
                let state = match answer.validate() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(id = %w.id, error = %e, "payment service gave an invalid withdrawal");
                        return Err(StatusReply(
                            Status::payment_system_unreachable()
                                .with_cause(format!("payment service answer is invalid: {e}")),
                        ));
                    }
                };
                if state == WithdrawalState::Pending {
                    return Ok(w);
                }
                self.store
                    .finish_withdrawal(&w.id, state, answer.receipt.as_ref(), now)
                    .await
                    .map_err(|e| httpd::internal("recording a withdrawal", &e))?;
                tracing::info!(id = %w.id, state = %state, amount = w.amount, "withdrawal finished");
                Ok(Withdrawal {
                    state: state.as_str().to_string(),
                    state_changed: now,
                    receipt: answer.receipt,
                    ..w
                })
            }
            Ok(answer) => {
                tracing::warn!(id = %w.id, got = %answer.id, "payment service answered for another withdrawal");
                Err(StatusReply(Status::payment_system_unreachable()))
            }
            Err(ApiError::Status { status, .. }) if status.code < 500 => {
                // A definite refusal: the money was not paid out, so it is available again.
                tracing::warn!(id = %w.id, %status, "payment service refused a withdrawal");
                let receipt = serde_json::json!({"refused": status.to_string()});
                self.store
                    .finish_withdrawal(&w.id, WithdrawalState::Failed, Some(&receipt), now)
                    .await
                    .map_err(|e| httpd::internal("recording a withdrawal", &e))?;
                Err(StatusReply(Status::gateway().with_cause(format!(
                    "the payment service refused the withdrawal: {}",
                    status.cause.clone().unwrap_or(status.description.clone())
                ))))
            }
            Err(e) => {
                // Unknown outcome: it stays pending and is asked about again later.
                tracing::warn!(id = %w.id, error = %e, "payment service unreachable");
                Err(StatusReply(Status::payment_system_unreachable()))
            }
        }
    }
}

/// The contract's router, wrapped in the version gate and idempotency cache.
pub fn router(state: Arc<ContractState>) -> axum::Router {
    let routes = axum::Router::new()
        .route("/info", get(info))
        .route("/servicekey/activate", post(activate))
        .route("/submit", post(submit))
        .route("/payout/balance", get(balance))
        .route("/payout/tokens", get(tokens))
        .route("/payout/withdrawals", get(last_withdrawal).post(withdraw));
    httpd::gated_router(routes, state, &SERVED)
}

type St = State<Arc<ContractState>>;

async fn info(State(s): St) -> ApiJson<ContractInfo> {
    ApiJson(s.config().info(s.pubkey()))
}

async fn activate(
    State(s): St,
    StrictJson(req): StrictJson<ActivationRequest>,
) -> Result<ApiJson<ContractSection>, StatusReply> {
    let bad = |cause: &str| StatusReply(Status::bad_request().with_cause(cause));
    let servicekey = req
        .pubkey
        .ok_or_else(|| bad("activation request has no pubkey (the servicekey to activate)"))?;
    let pof = req
        .pof
        .ok_or_else(|| bad("activation request has no pof"))?;
    let now = (s.clock)();
    let config = s.config();
    let issuers = config.issuers_of(&pof.kind);
    if let Err(e) = pof.verify(&issuers, now) {
        return Err(StatusReply(match e {
            PofError::Expired { .. } => Status::expired_pof(),
            other => Status::invalid_sig().with_cause(format!(
                "invalid signature: {other} (accepted pof types: {})",
                accepted_types(&config)
            )),
        }));
    }
    let window = |d: wireleap_proto::duration::Duration| d.as_secs();
    let open = now.checked_add(window(config.servicekey.duration));
    let close = open.and_then(|o| o.checked_add(window(config.settlement.submission_window)));
    let (Some(open), Some(close)) = (open, close) else {
        return Err(httpd::internal(
            "computing a settlement window",
            &"overflow",
        ));
    };
    let section = ContractSection::new_signed(&s.keypair, open, close);
    let outcome = s
        .store
        .activate(&NewActivation {
            pof_digest: pof.digest(),
            pof_type: pof.kind.clone(),
            pof_expiration: pof.expiration,
            servicekey,
            section: section.clone(),
            value: config.servicekey.value.clone(),
            currency: config.servicekey.currency.clone(),
            fee_percent: config.settlement.fee_percent.clone(),
            now,
        })
        .await
        .map_err(|e| httpd::internal("recording an activation", &e))?;
    match outcome {
        Activation::Activated => {
            tracing::info!(%servicekey, open, close, "servicekey activated");
            Ok(ApiJson(section))
        }
        Activation::PofSpent => Err(StatusReply(Status::sneaky_pof())),
        Activation::ServicekeyTaken => Err(StatusReply(Status::conflict().with_cause(format!(
            "servicekey {servicekey} is already activated; activate a new servicekey"
        )))),
    }
}

fn accepted_types(config: &ContractConfig) -> String {
    let mut kinds: Vec<&str> = config
        .proof_of_funding
        .iter()
        .map(|i| i.kind.as_str())
        .collect();
    kinds.dedup();
    if kinds.is_empty() {
        "none configured".into()
    } else {
        kinds.join(", ")
    }
}

fn token_status(e: &SharetokenError) -> Status {
    match e {
        SharetokenError::NotSettleable { now, open, .. } if now < open => {
            Status::settlement_not_open()
        }
        SharetokenError::NotSettleable { .. } => Status::settlement_closed(),
        SharetokenError::WrongContract { .. } | SharetokenError::MissingContractKey => {
            Status::contract_pubkey_mismatch()
                .with_cause(format!("contract public key mismatch: {e}"))
        }
        SharetokenError::BadClientSignature | SharetokenError::BadContractSignature(_) => {
            Status::invalid_sig().with_cause(format!("invalid signature: {e}"))
        }
        other => {
            Status::st_rejected().with_cause(format!("sharetoken submission rejected: {other}"))
        }
    }
}

async fn submit(
    State(s): St,
    req: StrictSigned<Sharetoken, RelayCaller>,
) -> Result<ApiJson<Status>, StatusReply> {
    let token = req.body;
    if token.relay_pubkey != req.signer {
        return Err(StatusReply(Status::forbidden().with_cause(format!(
            "sharetoken is for relay {}, but the request is signed by {}",
            token.relay_pubkey, req.signer
        ))));
    }
    let now = (s.clock)();
    let servicekey = token.public_key;
    let outcome = match s.submitter.submit(token, now).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(StatusReply(token_status(&e))),
        Err(e) => return Err(httpd::internal("storing a sharetoken", &e)),
    };
    let rejected = |why: String| {
        StatusReply(
            Status::st_rejected().with_cause(format!("sharetoken submission rejected: {why}")),
        )
    };
    match outcome {
        Submission::Accepted => Ok(ApiJson(Status::ok())),
        Submission::Duplicate => Err(StatusReply(
            Status::conflict().with_cause(SharetokenError::Duplicate.to_string()),
        )),
        Submission::UnknownServicekey => Err(rejected(format!(
            "servicekey {servicekey} was not activated by this contract"
        ))),
        Submission::WindowMismatch => Err(rejected(
            "its settlement window is not the one this contract signed for its servicekey".into(),
        )),
        Submission::Settled => Err(StatusReply(Status::settlement_closed())),
    }
}

async fn balance(
    State(s): St,
    caller: SignedCaller<RelayCaller>,
) -> Result<ApiJson<BalanceReply>, StatusReply> {
    let money = s
        .store
        .money(&caller.signer)
        .await
        .map_err(|e| httpd::internal("reading a balance", &e))?;
    let counts = s
        .store
        .token_counts(&caller.signer)
        .await
        .map_err(|e| httpd::internal("counting tokens", &e))?;
    let floor = |r: &Rational| {
        r.floor_i64()
            .ok_or_else(|| httpd::internal("exporting a balance", &"amount beyond 64 bits"))
    };
    let pending = floor(&money.pending)?;
    Ok(ApiJson(BalanceReply {
        currency: s.config().servicekey.currency.clone(),
        available: floor(&money.available)?,
        pending: (pending != 0).then_some(pending),
        value: money.available,
        tokens: counts.accepted,
    }))
}

async fn tokens(
    State(s): St,
    caller: SignedCaller<RelayCaller>,
) -> Result<ApiJson<TokensReply>, StatusReply> {
    let counts = s
        .store
        .token_counts(&caller.signer)
        .await
        .map_err(|e| httpd::internal("counting tokens", &e))?;
    Ok(ApiJson(TokensReply {
        relay: caller.signer,
        accepted: counts.accepted,
        unsettled: counts.unsettled,
        settled: counts.accepted - counts.unsettled,
    }))
}

async fn last_withdrawal(
    State(s): St,
    caller: SignedCaller<RelayCaller>,
) -> Result<ApiJson<Withdrawal>, StatusReply> {
    match s.store.last_withdrawal(&caller.signer).await {
        Ok(Some(w)) => Ok(ApiJson(w)),
        Ok(None) => Err(StatusReply(
            Status::not_found().with_cause("no withdrawal was requested by this relay"),
        )),
        Err(e) => Err(httpd::internal("reading a withdrawal", &e)),
    }
}

async fn withdraw(
    State(s): St,
    req: StrictSigned<WithdrawalRequest, RelayCaller>,
) -> Result<ApiJson<Withdrawal>, StatusReply> {
    let w = req.body;
    if w.amount <= 0 {
        return Err(StatusReply(Status::withdrawal_invalid()));
    }
    if let Err(e) = w.validate() {
        return Err(StatusReply(Status::bad_request().with_cause(e.to_string())));
    }
    let config = s.config();
    let pay = &config.payout;
    if pay.min_withdrawal > 0 && w.amount < pay.min_withdrawal {
        return Err(StatusReply(Status::forbidden().with_cause(format!(
            "withdrawal amount {} is below the minimum {}",
            w.amount, pay.min_withdrawal
        ))));
    }
    if pay.max_withdrawal > 0 && w.amount > pay.max_withdrawal {
        return Err(StatusReply(Status::forbidden().with_cause(format!(
            "withdrawal amount {} is above the maximum {}",
            w.amount, pay.max_withdrawal
        ))));
    }
    let Some(endpoint) = pay.endpoint.clone() else {
        return Err(StatusReply(Status::not_implemented().with_cause(
            "this contract has no payment service configured for payouts (payout.endpoint)",
        )));
    };
    let id = wireleap_proto::nonce::generate(32);
    let now = (s.clock)();
    let outcome = s
        .store
        .request_withdrawal(&req.signer, &id, &w, now)
        .await
        .map_err(|e| httpd::internal("recording a withdrawal", &e))?;
    match outcome {
        WithdrawalOutcome::AlreadyPending => Err(StatusReply(Status::withdrawal_pending())),
        WithdrawalOutcome::Insufficient { available } => Err(StatusReply(
            Status::insufficient_balance().with_cause(format!(
                "insufficient balance to complete request: {} requested, {} available",
                w.amount,
                available.floor_i64().unwrap_or(0)
            )),
        )),
        WithdrawalOutcome::Created(created) => {
            tracing::info!(id = %created.id, relay = %req.signer, amount = w.amount, "withdrawal requested");
            s.forward_withdrawal(&endpoint, created).await.map(ApiJson)
        }
    }
}

/// Runs the settlement and withdrawal jobs until `shutdown`.
pub async fn background_jobs(
    state: Arc<ContractState>,
    settle_every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut last_check = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(settle_every) => {}
        }
        if let Err(e) = state.settle_due().await {
            tracing::error!(error = %e, "settlement failed; retrying later");
        }
        let period = state.config().payout.check_period.to_std();
        if last_check.elapsed() >= period {
            last_check = tokio::time::Instant::now();
            if let Err(e) = state.recheck_withdrawals().await {
                tracing::error!(error = %e, "checking pending withdrawals failed");
            }
        }
    }
}
