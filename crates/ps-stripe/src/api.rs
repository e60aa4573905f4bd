//! ps-stripe's HTTP API and the work behind it.
//!
//! - `GET /info`: what is sold and for which contract.
//! - `POST /checkout {"quantity": N}` (anyone): records an order, creates a Stripe Checkout
//!   Session for N pofs, answers `{id, url, accesskey_url}`.
//! - `POST /webhook` (Stripe): verifies `Stripe-Signature` over the raw body, then on a paid
//!   `checkout.session.completed` / `checkout.session.async_payment_succeeded` marks the order
//!   paid and issues its access key (pofs from auth) exactly once per session.
//! - `GET /accesskeys/{checkout session id}`: the access key file once paid (402 before).
//! - `POST /withdrawals` (the configured contract, interface contract-ps 0.1.0): pays a relay
//!   withdrawal with a Stripe Transfer to a connected account, recorded in the payout ledger
//!   and idempotent on the withdrawal id.
//!
//! Every refusal is a status object (`{code, description, cause}`) with the HTTP code of the
//! reply; bad input is refused before anything is written.

use crate::config::{is_currency, PsStripeConfig, Secrets};
use crate::signature;
use crate::store::{Claim, Order, OrderState, Payout, PayoutState, StripeStore};
use crate::stripe::{CheckoutParams, LineItem, StripeClient, StripeError, TransferParams};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use wireleap_api::server::ContractCaller;
use wireleap_api::{ApiClient, ApiError, ApiJson, StatusReply};
use wireleap_contract::httpd::{self, Clock, Shape, StrictBody, StrictJson, StrictSigned};
use wireleap_contract::payservice::{self, PofsError};
use wireleap_proto::accesskey::AccessKey;
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::payout::{
    Accounting, PofRequest, Withdrawal, WithdrawalState, RELAY_WITHDRAWAL_TYPE,
};
use wireleap_proto::status::Status;
use wireleap_proto::version::Interface;

/// The interfaces ps-stripe's API provides.
pub const SERVED: [Interface; 1] = [Interface::ContractPs];

/// A claim on an order older than this (seconds) is taken to belong to a dead worker.
pub const CLAIM_STALE_SECS: i64 = 300;

/// Longest id accepted in paths and withdrawal bodies.
const MAX_ID_LEN: usize = 255;

/// `POST /checkout` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRequest {
    /// How many pofs to buy.
    #[serde(default)]
    pub quantity: i64,
}

impl StrictBody for CheckoutRequest {
    const SHAPE: Shape = Shape(&[("quantity", None)]);
}

/// `POST /checkout` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutReply {
    /// The Checkout Session id (`cs_...`).
    pub id: String,
    /// The Stripe payment page to send the buyer to.
    pub url: String,
    /// Where the access key file can be fetched once paid.
    pub accesskey_url: String,
}

/// `GET /info` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsInfo {
    /// This payment service's key.
    pub pubkey: PublicKey,
    /// Software version.
    pub version: String,
    /// Pof type sold.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether `POST /checkout` is offered.
    pub selling: bool,
    /// Inline price per pof, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::config::Price>,
    /// Stripe Price per pof, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_id: Option<String>,
    /// Validity of each pof, seconds.
    pub pof_duration: i64,
    /// Most pofs per checkout.
    pub max_quantity: i64,
    /// Contract the access keys are for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
}

/// What the handlers share.
pub struct PsState {
    keypair: Keypair,
    config: RwLock<Arc<PsStripeConfig>>,
    secrets: RwLock<Arc<Secrets>>,
    store: StripeStore,
    clock: Clock,
    auth: ApiClient,
    http: reqwest::Client,
    home: std::path::PathBuf,
    payouts_in_flight: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for PsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsState")
            .field("pubkey", &self.keypair.public())
            .finish_non_exhaustive()
    }
}

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The auth client.
    #[error("setting up the auth client: {0}")]
    Auth(#[from] ApiError),
    /// The Stripe client.
    #[error("setting up the Stripe client: {0}")]
    Stripe(#[from] StripeError),
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(c) => c.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn write<T>(lock: &RwLock<T>, value: T) {
    match lock.write() {
        Ok(mut c) => *c = value,
        Err(p) => *p.into_inner() = value,
    }
}

fn status(code: u16, description: &str, cause: impl Into<String>) -> StatusReply {
    StatusReply(Status::new(code, description).with_cause(cause))
}

fn bad(cause: impl Into<String>) -> StatusReply {
    StatusReply(Status::bad_request().with_cause(cause))
}

fn unavailable(cause: impl Into<String>) -> StatusReply {
    status(503, "service unavailable", cause)
}

/// Ids we put in paths, SQL and Stripe headers: short printable ASCII without separators.
fn plain_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `s` looks like a Stripe connected account id.
pub fn is_connected_account(s: &str) -> bool {
    s.strip_prefix("acct_")
        .is_some_and(|rest| !rest.is_empty() && plain_id(rest))
}

impl PsState {
    /// The state of a ps-stripe with identity `keypair`; `home` resolves `accesskey_dir`.
    pub fn new(
        keypair: Keypair,
        config: PsStripeConfig,
        secrets: Secrets,
        store: StripeStore,
        clock: Clock,
        home: std::path::PathBuf,
    ) -> Result<Arc<Self>, SetupError> {
        let auth = payservice::auth_client(&keypair)?;
        let http = StripeClient::http_client(config.stripe.timeout.to_std())?;
        Ok(Arc::new(PsState {
            keypair,
            config: RwLock::new(Arc::new(config)),
            secrets: RwLock::new(Arc::new(secrets)),
            store,
            clock,
            auth,
            http,
            home,
            payouts_in_flight: Mutex::new(HashSet::new()),
        }))
    }

    /// This payment service's key (what auth lists in `payment_services`).
    pub fn pubkey(&self) -> PublicKey {
        self.keypair.public()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<PsStripeConfig> {
        read(&self.config)
    }

    /// The store.
    pub fn store(&self) -> &StripeStore {
        &self.store
    }

    /// Applies a reloaded configuration and re-read secrets (the Stripe timeout, address,
    /// database and TLS files take effect on restart).
    pub fn reload(&self, config: PsStripeConfig, secrets: Option<Secrets>) {
        write(&self.config, Arc::new(config));
        if let Some(s) = secrets {
            write(&self.secrets, Arc::new(s));
        }
    }

    fn stripe(&self, config: &PsStripeConfig) -> StripeClient {
        StripeClient::new(
            self.http.clone(),
            &config.stripe.api_base,
            read(&self.secrets).api_key.clone(),
            config.stripe.attempts,
            config.stripe.retry_delay.to_std(),
        )
    }

    /// Issues every paid order whose access key is missing (after an auth outage or a
    /// crash); returns how many were issued now.
    pub async fn issue_pending(&self) -> usize {
        let now = (self.clock)();
        let ids = match self.store.to_issue(now - CLAIM_STALE_SECS, 100).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "listing paid orders without access key failed");
                return 0;
            }
        };
        let mut issued = 0;
        for id in ids {
            if let Ok(o) = self.ensure_issued(&id).await {
                issued += usize::from(o.state == OrderState::Issued);
            }
        }
        issued
    }

    /// Issues the access key of a paid order unless it is issued or being issued; the order
    /// as it stands afterwards.
    async fn ensure_issued(&self, order_id: &str) -> Result<Order, StatusReply> {
        let now = (self.clock)();
        let claim = self
            .store
            .claim(order_id, now, now - CLAIM_STALE_SECS)
            .await
            .map_err(|e| httpd::internal("claiming an order", &e))?;
        let (claimed_at, order) = match claim {
            Claim::Not(o) => return Ok(o),
            Claim::Won { claimed_at, order } => (claimed_at, order),
        };
        let key = match self.make_accesskey(&order).await {
            Ok(k) => k,
            Err(e) => {
                if let Err(se) = self.store.release(order_id, claimed_at).await {
                    tracing::error!(order = %order_id, error = %se, "could not release an order after a failed issue; it is retried once the claim is stale");
                }
                return Err(e);
            }
        };
        let done = self
            .store
            .finish_issue(order_id, claimed_at, &key, (self.clock)())
            .await
            .map_err(|e| httpd::internal("storing an access key", &e))?;
        if done {
            tracing::info!(
                order = %order_id,
                session = order.session_id.as_deref().unwrap_or(""),
                quantity = order.quantity,
                "access key issued"
            );
            self.write_file(&order, &key);
        } else {
            tracing::warn!(order = %order_id, "another worker took over this order while its access key was made; discarding this copy");
        }
        self.store
            .order(order_id)
            .await
            .map_err(|e| httpd::internal("reading an order", &e))?
            .ok_or_else(|| StatusReply(Status::internal()))
    }

    fn write_file(&self, order: &Order, key: &str) {
        let (Some(dir), Some(session)) = (&self.config().accesskey_dir, &order.session_id) else {
            return;
        };
        let dir = self.home.join(dir);
        let path = dir.join(format!("{session}.json"));
        let result = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                wireleap_daemon::write_atomic(&path, key.as_bytes(), 0o600)
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(()) => tracing::info!(file = %path.display(), "access key file written"),
            // The key stays in the database and is served by GET /accesskeys/{id}.
            Err(e) => tracing::error!(error = %e, "could not write the access key file"),
        }
    }

    /// Asks auth for the order's pofs, checks them, and renders the access key file.
    async fn make_accesskey(&self, order: &Order) -> Result<String, StatusReply> {
        let config = self.config();
        let (auth, contract) = payservice::peers(
            "ps-stripe",
            Status::new(503, "service unavailable"),
            config.auth.as_ref(),
            config.contract.as_ref(),
        )?;
        let accounting = match (order.amount_total, &order.currency) {
            (Some(total), Some(currency)) if order.quantity > 0 && is_currency(currency) => {
                Some(Accounting {
                    price: total / order.quantity,
                    currency: currency.clone(),
                })
            }
            _ => None,
        };
        let request = PofRequest {
            quantity: order.quantity,
            kind: config.pof_type.clone(),
            duration: order.duration,
            accounting,
        };
        let pofs = payservice::fetch_pofs(&self.auth, auth, &request, &self.clock)
            .await
            .map_err(|e| {
                match &e {
                    PofsError::Auth(e) => tracing::warn!(
                        order = %order.id,
                        error = %e,
                        "auth did not issue pofs; the order stays paid and is retried"
                    ),
                    PofsError::Mismatch { got } => tracing::error!(
                        order = %order.id,
                        got,
                        "auth answered with pofs that do not match the request or its configured key"
                    ),
                }
                StatusReply(e.to_status())
            })?;
        let key = AccessKey::new(contract.endpoint.clone(), contract.public_key, pofs);
        let mut bytes = wireleap_proto::json::to_vec_indented(&key)
            .map_err(|e| httpd::internal("encoding an access key", &e))?;
        bytes.push(b'\n');
        String::from_utf8(bytes).map_err(|e| httpd::internal("encoding an access key", &e))
    }
}

/// ps-stripe's router, wrapped in the version gate and idempotency cache.
pub fn router(state: Arc<PsState>) -> axum::Router {
    let routes = axum::Router::new()
        .route("/info", get(info))
        .route("/checkout", post(checkout))
        .route("/webhook", post(webhook))
        .route("/accesskeys/{session}", get(accesskey))
        .route("/withdrawals", post(withdrawals));
    httpd::gated_router(routes, state, &SERVED)
}

type St = State<Arc<PsState>>;

async fn info(State(s): St) -> ApiJson<PsInfo> {
    let c = s.config();
    ApiJson(PsInfo {
        pubkey: s.pubkey(),
        version: wireleap_upgrade::daemon::software(env!("CARGO_PKG_VERSION")),
        kind: c.pof_type.clone(),
        selling: c.sells(),
        price: c.checkout.price.clone(),
        price_id: c.checkout.price_id.clone(),
        pof_duration: c.pof_duration.as_secs(),
        max_quantity: c.max_quantity,
        contract: c.contract.as_ref().map(|p| p.endpoint.clone()),
    })
}

async fn checkout(
    State(s): St,
    StrictJson(req): StrictJson<CheckoutRequest>,
) -> Result<ApiJson<CheckoutReply>, StatusReply> {
    let config = s.config();
    if !(1..=config.max_quantity).contains(&req.quantity) {
        return Err(bad(format!(
            "quantity must be between 1 and {}, got {}",
            config.max_quantity, req.quantity
        )));
    }
    let item = match (&config.checkout.price, &config.checkout.price_id) {
        (Some(p), _) => LineItem::Inline {
            currency: p.currency.clone(),
            unit_amount: p.unit_amount,
            product_name: config.checkout.product_name.clone(),
        },
        (None, Some(id)) => LineItem::Price(id.clone()),
        (None, None) => {
            return Err(StatusReply(Status::not_implemented().with_cause(
                "this ps-stripe sells nothing: set checkout.price or checkout.price_id",
            )))
        }
    };
    let (Some(success_url), Some(_), Some(_)) = (
        config.checkout.success_url.clone(),
        &config.auth,
        &config.contract,
    ) else {
        // Taking money for keys that cannot be issued is worse than not selling.
        return Err(unavailable(
            "this ps-stripe is not set up to deliver access keys (auth, contract and checkout.success_url must be configured)",
        ));
    };
    let order_id = wireleap_proto::nonce::generate(32);
    let now = (s.clock)();
    s.store
        .create_order(&order_id, req.quantity, config.pof_duration.as_secs(), now)
        .await
        .map_err(|e| httpd::internal("recording an order", &e))?;
    let params = CheckoutParams {
        order_id: order_id.clone(),
        quantity: req.quantity,
        item,
        success_url,
        cancel_url: config.checkout.cancel_url.clone(),
    };
    let session = s
        .stripe(&config)
        .create_checkout_session(&params)
        .await
        .map_err(|e| {
            tracing::warn!(order = %order_id, error = %e, "Stripe did not create a checkout session");
            StatusReply(Status::gateway().with_cause(format!(
                "Stripe did not create a checkout session: {e}"
            )))
        })?;
    if !session.id.starts_with("cs_") || !plain_id(&session.id) {
        tracing::error!(order = %order_id, session = %session.id, "Stripe returned an unexpected session id");
        return Err(StatusReply(
            Status::gateway().with_cause("Stripe returned a malformed checkout session id"),
        ));
    }
    s.store
        .attach_session(&order_id, &session.id)
        .await
        .map_err(|e| httpd::internal("linking an order to its session", &e))?;
    tracing::info!(order = %order_id, session = %session.id, quantity = req.quantity, "checkout session created");
    Ok(ApiJson(CheckoutReply {
        accesskey_url: format!("{}/accesskeys/{}", config.api_url(), session.id),
        id: session.id,
        url: session.url.unwrap_or_default(),
    }))
}

/// The parts of a Stripe event this service reads; everything else is ignored, since
/// Stripe adds fields over time.
#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct SessionObject {
    id: String,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default)]
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    amount_total: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
}

/// `POST /webhook` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookReply {
    /// Always true: the event was accepted (Stripe stops retrying).
    pub received: bool,
    /// What it did, for the Stripe dashboard's delivery log.
    pub outcome: String,
}

fn received(outcome: impl Into<String>) -> ApiJson<WebhookReply> {
    ApiJson(WebhookReply {
        received: true,
        outcome: outcome.into(),
    })
}

async fn webhook(State(s): St, req: Request) -> Result<ApiJson<WebhookReply>, StatusReply> {
    let config = s.config();
    let (parts, body) = req.into_parts();
    let limit = config.stripe.max_webhook_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        status(
            413,
            "request entity too large",
            format!("webhook body larger than {limit} bytes"),
        )
    })?;
    let header = parts
        .headers
        .get("stripe-signature")
        .ok_or_else(|| bad("missing Stripe-Signature header"))?
        .to_str()
        .map_err(|_| bad("Stripe-Signature header is not ASCII text"))?;
    let now = (s.clock)();
    let secrets = read(&s.secrets);
    signature::verify(
        header,
        &body,
        &secrets.webhook,
        now,
        config.stripe.webhook_tolerance.as_secs(),
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "webhook refused");
        bad(format!("webhook signature refused: {e}"))
    })?;
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("webhook body is not a Stripe event: {e}")))?;
    if !plain_id(&event.id) {
        return Err(bad(format!(
            "webhook event id {:?} is not a Stripe id",
            clip(&event.id)
        )));
    }
    let session_event = matches!(
        event.kind.as_str(),
        "checkout.session.completed"
            | "checkout.session.async_payment_succeeded"
            | "checkout.session.async_payment_failed"
            | "checkout.session.expired"
    );
    if !session_event {
        tracing::info!(event = %event.id, kind = %event.kind, "webhook event of a type this service does not use; ignored");
        return Ok(received(format!("ignored event type {}", event.kind)));
    }
    let session: SessionObject = serde_json::from_value(event.data.object).map_err(|e| {
        bad(format!(
            "{} event {} has no checkout session object: {e}",
            event.kind, event.id
        ))
    })?;
    if !plain_id(&session.id) {
        return Err(bad(format!(
            "checkout session id {:?} is not a Stripe id",
            clip(&session.id)
        )));
    }
    let paid = session.payment_status.as_deref() == Some("paid");
    let pays = matches!(
        event.kind.as_str(),
        "checkout.session.completed" | "checkout.session.async_payment_succeeded"
    );
    if !(pays && paid) {
        let new = s
            .store
            .record_event(&event.id, &event.kind, Some(&session.id), now)
            .await
            .map_err(|e| httpd::internal("recording a webhook event", &e))?;
        tracing::info!(
            event = %event.id,
            kind = %event.kind,
            session = %session.id,
            payment_status = session.payment_status.as_deref().unwrap_or(""),
            redelivered = !new,
            "checkout session event without payment; nothing to issue"
        );
        return Ok(received("no payment in this event"));
    }
    let hint = session
        .metadata
        .as_ref()
        .and_then(|m| m.get("order_id"))
        .and_then(|v| v.as_str())
        .or(session.client_reference_id.as_deref())
        .filter(|h| plain_id(h));
    let recorded = s
        .store
        .record_paid(
            &event.id,
            &event.kind,
            &session.id,
            hint,
            session.amount_total,
            session.currency.as_deref(),
            now,
        )
        .await
        .map_err(|e| httpd::internal("recording a payment", &e))?;
    let Some(order) = recorded.order else {
        tracing::warn!(event = %event.id, session = %session.id, "paid checkout session is not one of this service's orders; ignored");
        return Ok(received("not an order of this service"));
    };
    tracing::info!(
        event = %event.id,
        session = %session.id,
        order = %order.id,
        amount = session.amount_total.unwrap_or(0),
        currency = session.currency.as_deref().unwrap_or(""),
        redelivered = recorded.redelivered,
        "checkout session paid"
    );
    // A failure here answers 5xx, so Stripe delivers the event again later; the order stays
    // paid, and GET /accesskeys and the background job retry too.
    let order = s.ensure_issued(&order.id).await?;
    Ok(received(match order.state {
        OrderState::Issued if recorded.redelivered => "access key already issued",
        OrderState::Issued => "access key issued",
        _ => "access key being issued",
    }))
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

async fn accesskey(State(s): St, Path(session): Path<String>) -> Result<Response, StatusReply> {
    if !plain_id(&session) {
        return Err(bad(format!(
            "{:?} is not a checkout session id",
            clip(&session)
        )));
    }
    let order = s
        .store
        .order_by_session(&session)
        .await
        .map_err(|e| httpd::internal("reading an order", &e))?
        .ok_or_else(|| {
            StatusReply(
                Status::not_found()
                    .with_cause(format!("no checkout session {session} at this service")),
            )
        })?;
    let order = match order.state {
        OrderState::Created | OrderState::Open => {
            return Err(StatusReply(
                Status::unpaid().with_cause(format!("checkout session {session} is not paid yet")),
            ))
        }
        OrderState::Paid | OrderState::Issuing => s.ensure_issued(&order.id).await?,
        OrderState::Issued => order,
    };
    let Some(key) = order
        .accesskey
        .filter(|_| order.state == OrderState::Issued)
    else {
        return Err(unavailable(format!(
            "the access key of checkout session {session} is being issued; ask again shortly"
        )));
    };
    let mut resp = key.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"accesskey-{session}.json\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn withdrawals(
    State(s): St,
    req: StrictSigned<httpd::WithdrawalBody, ContractCaller>,
) -> Result<ApiJson<Withdrawal>, StatusReply> {
    let config = s.config();
    let w = req.body.0;
    payservice::check_contract_signer(config.contract.as_ref(), &req.signer)?;
    if !plain_id(&w.id) {
        return Err(bad(format!(
            "withdrawal id must be 1 to {MAX_ID_LEN} letters, digits, '_' or '-', got {:?}",
            clip(&w.id)
        )));
    }
    w.request().validate().map_err(|e| bad(e.to_string()))?;
    if w.kind != "stripe" && w.kind != RELAY_WITHDRAWAL_TYPE {
        return Err(bad(format!(
            "withdrawal type {:?} is not paid by ps-stripe (stripe)",
            clip(&w.kind)
        )));
    }
    if !is_connected_account(&w.destination) {
        return Err(bad(format!(
            "destination must be a Stripe connected account id (acct_...), got {:?}",
            clip(&w.destination)
        )));
    }
    if config.payout.max_amount > 0 && w.amount > config.payout.max_amount {
        return Err(StatusReply(Status::forbidden().with_cause(format!(
            "withdrawal amount {} is above this payment service's maximum {}",
            w.amount, config.payout.max_amount
        ))));
    }
    let now = (s.clock)();
    let (payout, new) = s
        .store
        .begin_payout(
            &w.id,
            w.amount,
            &config.payout.currency,
            &w.destination,
            now,
        )
        .await
        .map_err(|e| httpd::internal("recording a payout", &e))?;
    if !new && (payout.amount != w.amount || payout.destination != w.destination) {
        tracing::error!(id = %w.id, "withdrawal id sent again with another amount or destination; refused");
        return Err(StatusReply(Status::conflict().with_cause(format!(
            "withdrawal {} was requested before with amount {} to {}",
            w.id, payout.amount, payout.destination
        ))));
    }
    if new {
        tracing::info!(id = %w.id, amount = w.amount, currency = %payout.currency, destination = %w.destination, "payout requested");
    }
    let payout = match payout.state {
        PayoutState::Pending => s.pay(payout).await?,
        _ => payout,
    };
    Ok(ApiJson(Withdrawal {
        state: match payout.state {
            PayoutState::Pending => WithdrawalState::Pending,
            PayoutState::Complete => WithdrawalState::Complete,
            PayoutState::Failed => WithdrawalState::Failed,
        }
        .as_str()
        .to_string(),
        state_changed: payout.state_changed,
        receipt: payout.receipt,
        ..w
    }))
}

/// Removes a withdrawal id from the in-flight set when the payment attempt ends.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        match self.set.lock() {
            Ok(mut s) => s.remove(&self.id),
            Err(p) => p.into_inner().remove(&self.id),
        };
    }
}

impl PsState {
    fn in_flight(&self, id: &str) -> Option<InFlight<'_>> {
        let mut set = match self.payouts_in_flight.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        set.insert(id.to_string()).then(|| InFlight {
            set: &self.payouts_in_flight,
            id: id.to_string(),
        })
    }

    /// Tries to pay a pending payout; the ledger row afterwards.
    async fn pay(&self, payout: Payout) -> Result<Payout, StatusReply> {
        let id = payout.withdrawal_id.clone();
        let Some(_guard) = self.in_flight(&id) else {
            tracing::info!(id = %id, "payout already being made; answering pending");
            return Ok(payout);
        };
        let config = self.config();
        let stripe = self.stripe(&config);
        let internal = |e: wireleap_store::StoreError| httpd::internal("updating a payout", &e);
        let finish = |state, transfer: Option<String>, receipt: serde_json::Value| async move {
            let now = (self.clock)();
            self.store
                .finish_payout(&id, state, transfer.as_deref(), &receipt, now)
                .await
                .map_err(internal)?;
            self.store
                .payout(&id)
                .await
                .map_err(internal)?
                .ok_or_else(|| StatusReply(Status::internal()))
        };
        let receipt_of = |t: &crate::stripe::Transfer| {
            serde_json::json!({
                "type": "stripe",
                "transfer": t.id,
                "amount": payout.amount,
                "currency": payout.currency,
                "destination": payout.destination,
            })
        };
        if payout.attempts > 0 {
            // An earlier attempt may have succeeded without its reply reaching us, and
            // Stripe forgets idempotency keys after a day: look for its transfer first.
            match stripe.find_transfer(&payout.withdrawal_id).await {
                Ok(Some(t)) => {
                    tracing::info!(id = %payout.withdrawal_id, transfer = %t.id, "earlier payout attempt had succeeded");
                    let receipt = receipt_of(&t);
                    return finish(PayoutState::Complete, Some(t.id), receipt).await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(id = %payout.withdrawal_id, error = %e, "cannot check for an earlier transfer; payout stays pending");
                    let _ = self
                        .store
                        .note_error(&payout.withdrawal_id, &e.to_string())
                        .await;
                    return Ok(payout);
                }
            }
        }
        // Counted before the call, so a crash during it makes the next attempt look first.
        self.store
            .note_attempt(&payout.withdrawal_id)
            .await
            .map_err(internal)?;
        let params = TransferParams {
            amount: payout.amount,
            currency: payout.currency.clone(),
            destination: payout.destination.clone(),
            withdrawal_id: payout.withdrawal_id.clone(),
        };
        match stripe.create_transfer(&params).await {
            Ok(t) => {
                if t.amount != payout.amount
                    || t.destination.as_deref() != Some(payout.destination.as_str())
                {
                    tracing::error!(id = %payout.withdrawal_id, transfer = %t.id, amount = t.amount, "Stripe's transfer differs from the payout asked for; recorded as Stripe reports it");
                }
                tracing::info!(id = %payout.withdrawal_id, transfer = %t.id, amount = payout.amount, destination = %payout.destination, "payout transferred");
                let receipt = receipt_of(&t);
                finish(PayoutState::Complete, Some(t.id), receipt).await
            }
            Err(e) if e.definite_refusal() => {
                tracing::warn!(id = %payout.withdrawal_id, error = %e, "Stripe refused the payout; withdrawal failed");
                let receipt = match &e {
                    StripeError::Api { code, message, .. } => serde_json::json!({
                        "type": "stripe",
                        "refused": message,
                        "code": code,
                    }),
                    other => serde_json::json!({"type": "stripe", "refused": other.to_string()}),
                };
                finish(PayoutState::Failed, None, receipt).await
            }
            Err(e) => {
                tracing::warn!(id = %payout.withdrawal_id, error = %e, "payout not confirmed; stays pending and is retried with the same idempotency key");
                let _ = self
                    .store
                    .note_error(&payout.withdrawal_id, &e.to_string())
                    .await;
                self.store
                    .payout(&payout.withdrawal_id)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| StatusReply(Status::internal()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_accounts() {
        assert!(is_connected_account("acct_1Abc"));
        for bad in ["acct_", "acct", "cus_1", "acct_1/2", "acct_ 1", ""] {
            assert!(!is_connected_account(bad), "{bad}");
        }
        assert!(plain_id("cs_test_a1B2"));
        assert!(!plain_id("cs/../x"));
        assert!(!plain_id(&"a".repeat(256)));
    }
}
