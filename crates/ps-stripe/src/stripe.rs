//! The few Stripe API calls this service makes, over its documented HTTP API: form-encoded
//! POSTs with the secret key as Bearer token, an `Idempotency-Key` on every POST, JSON
//! replies, and `{"error": {type, code, message}}` on failure.
//!
//! Calls: create a Checkout Session (`POST /v1/checkout/sessions`), create a Transfer to a
//! connected account (`POST /v1/transfers`), and list transfers of a transfer group
//! (`GET /v1/transfers?transfer_group=...`), used to find a payout whose reply was lost.
//! Network errors, 409 (a request with the same key still running), 429 and 5xx are retried
//! with the same key, so Stripe runs the operation at most once. Not here: deciding what to
//! do with a refusal (the API module).

use crate::config::SecretKey;
use serde::Deserialize;
use std::time::Duration;

/// Why a Stripe call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StripeError {
    /// No reply (connect, timeout, reset): the operation may or may not have happened.
    #[error("Stripe {what} failed without a reply: {reason}")]
    Transport {
        /// Which call.
        what: &'static str,
        /// The transport error.
        reason: String,
    },
    /// Stripe answered with an error.
    #[error("Stripe {what} answered HTTP {status} ({kind}{}): {message}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Api {
        /// Which call.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// `error.type` (e.g. `invalid_request_error`).
        kind: String,
        /// `error.code` (e.g. `balance_insufficient`).
        code: Option<String>,
        /// `error.message`.
        message: String,
    },
    /// A 2xx reply that is not the expected object.
    #[error("Stripe {what} reply is not understood: {reason}")]
    Decode {
        /// Which call.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl StripeError {
    /// Worth asking again with the same idempotency key.
    pub fn retryable(&self) -> bool {
        match self {
            StripeError::Transport { .. } => true,
            StripeError::Api { status, .. } => matches!(status, 409 | 429 | 500..=599),
            StripeError::Decode { .. } => false,
        }
    }

    /// Stripe looked at the request and refused the operation itself (bad destination,
    /// insufficient balance): nothing happened and asking again will not change that.
    /// Authentication and permission failures (401/403) and idempotency-key misuse are
    /// our configuration's fault, not the request's, so they are not definite refusals.
    pub fn definite_refusal(&self) -> bool {
        match self {
            StripeError::Api { status, kind, .. } => {
                matches!(status, 400 | 402 | 404) && kind != "idempotency_error"
            }
            _ => false,
        }
    }
}

/// Connection details and retry policy.
#[derive(Debug, Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: SecretKey,
    attempts: u32,
    delay: Duration,
}

/// A created Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutSession {
    /// `cs_...`.
    pub id: String,
    /// The hosted payment page.
    #[serde(default)]
    pub url: Option<String>,
}

/// A created Transfer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transfer {
    /// `tr_...`.
    pub id: String,
    /// Minor units.
    #[serde(default)]
    pub amount: i64,
    /// Lowercase ISO code.
    #[serde(default)]
    pub currency: String,
    /// The connected account.
    #[serde(default)]
    pub destination: Option<String>,
    /// The group it was created in.
    #[serde(default)]
    pub transfer_group: Option<String>,
}

#[derive(Debug, Deserialize)]
struct List<T> {
    data: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct ErrorReply {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Form parameters in Stripe's bracket notation (`line_items[0][quantity]`), in order.
pub type Form = Vec<(String, String)>;

/// What a checkout sells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineItem {
    /// A dashboard Price (`price_...`).
    Price(String),
    /// An inline price.
    Inline {
        /// Lowercase ISO code.
        currency: String,
        /// Minor units per pof.
        unit_amount: i64,
        /// Shown to the buyer.
        product_name: String,
    },
}

/// Parameters of a Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutParams {
    /// Our order id (client_reference_id and metadata `order_id`).
    pub order_id: String,
    /// How many pofs.
    pub quantity: i64,
    /// Price.
    pub item: LineItem,
    /// After payment.
    pub success_url: String,
    /// On cancel.
    pub cancel_url: Option<String>,
}

impl CheckoutParams {
    /// The form body of `POST /v1/checkout/sessions`.
    pub fn form(&self) -> Form {
        let mut f: Form = vec![
            ("mode".into(), "payment".into()),
            ("client_reference_id".into(), self.order_id.clone()),
            ("metadata[order_id]".into(), self.order_id.clone()),
            ("metadata[quantity]".into(), self.quantity.to_string()),
            ("line_items[0][quantity]".into(), self.quantity.to_string()),
        ];
        match &self.item {
            LineItem::Price(id) => f.push(("line_items[0][price]".into(), id.clone())),
            LineItem::Inline {
                currency,
                unit_amount,
                product_name,
            } => {
                f.push((
                    "line_items[0][price_data][currency]".into(),
                    currency.clone(),
                ));
                f.push((
                    "line_items[0][price_data][unit_amount]".into(),
                    unit_amount.to_string(),
                ));
                f.push((
                    "line_items[0][price_data][product_data][name]".into(),
                    product_name.clone(),
                ));
            }
        }
        f.push(("success_url".into(), self.success_url.clone()));
        if let Some(c) = &self.cancel_url {
            f.push(("cancel_url".into(), c.clone()));
        }
        f
    }
}

/// Parameters of a Transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferParams {
    /// Minor units.
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// `acct_...`.
    pub destination: String,
    /// The withdrawal id (also the idempotency key and the transfer group).
    pub withdrawal_id: String,
}

impl TransferParams {
    /// The form body of `POST /v1/transfers`.
    pub fn form(&self) -> Form {
        vec![
            ("amount".into(), self.amount.to_string()),
            ("currency".into(), self.currency.clone()),
            ("destination".into(), self.destination.clone()),
            ("transfer_group".into(), self.withdrawal_id.clone()),
            ("metadata[withdrawal_id]".into(), self.withdrawal_id.clone()),
            (
                "description".into(),
                format!("Wireleap relay withdrawal {}", self.withdrawal_id),
            ),
        ]
    }
}

/// `application/x-www-form-urlencoded` text of `form`.
pub fn encode_form(form: &Form) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in form {
        s.append_pair(k, v);
    }
    s.finish()
}

impl StripeClient {
    /// A client for the API at `base` (e.g. `https://api.stripe.com`).
    pub fn new(
        http: reqwest::Client,
        base: &str,
        key: SecretKey,
        attempts: u32,
        delay: Duration,
    ) -> Self {
        StripeClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            attempts: attempts.max(1),
            delay,
        }
    }

    /// The HTTP client this service uses for Stripe (own timeouts, no proxy).
    pub fn http_client(timeout: Duration) -> Result<reqwest::Client, StripeError> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .build()
            .map_err(|e| StripeError::Transport {
                what: "client setup",
                reason: e.to_string(),
            })
    }

    /// Creates a Checkout Session; `order_id` is the idempotency key.
    pub async fn create_checkout_session(
        &self,
        params: &CheckoutParams,
    ) -> Result<CheckoutSession, StripeError> {
        let what = "checkout session creation";
        let s: CheckoutSession = self
            .post(
                what,
                "/v1/checkout/sessions",
                &params.form(),
                &params.order_id,
            )
            .await?;
        if s.url.is_none() {
            return Err(StripeError::Decode {
                what,
                reason: format!("session {} has no url", s.id),
            });
        }
        Ok(s)
    }

    /// Creates a Transfer; the withdrawal id is the idempotency key.
    pub async fn create_transfer(&self, params: &TransferParams) -> Result<Transfer, StripeError> {
        self.post(
            "transfer",
            "/v1/transfers",
            &params.form(),
            &params.withdrawal_id,
        )
        .await
    }

    /// The transfer made for `withdrawal_id`, if any (its transfer group).
    pub async fn find_transfer(
        &self,
        withdrawal_id: &str,
    ) -> Result<Option<Transfer>, StripeError> {
        let what = "transfer lookup";
        let query = encode_form(&vec![
            ("transfer_group".into(), withdrawal_id.to_string()),
            ("limit".into(), "10".into()),
        ]);
        let url = format!("{}/v1/transfers?{query}", self.base);
        let list: List<Transfer> = self
            .with_retries(what, || {
                self.http.get(&url).bearer_auth(self.key.expose()).send()
            })
            .await?;
        Ok(list
            .data
            .into_iter()
            .find(|t| t.transfer_group.as_deref() == Some(withdrawal_id)))
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        path: &str,
        form: &Form,
        idempotency_key: &str,
    ) -> Result<T, StripeError> {
        let url = format!("{}{path}", self.base);
        let body = encode_form(form);
        self.with_retries(what, || {
            self.http
                .post(&url)
                .bearer_auth(self.key.expose())
                .header("Idempotency-Key", idempotency_key)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.clone())
                .send()
        })
        .await
    }

    async fn with_retries<T, F, Fut>(&self, what: &'static str, send: F) -> Result<T, StripeError>
    where
        T: serde::de::DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::Response, reqwest::Error>>,
    {
        let mut delay = self.delay;
        let mut attempt = 1;
        loop {
            let result = match send().await {
                Ok(resp) => read_reply(what, resp).await,
                Err(e) => Err(StripeError::Transport {
                    what,
                    reason: e.to_string(),
                }),
            };
            match result {
                Err(e) if e.retryable() && attempt < self.attempts => {
                    tracing::warn!(call = what, attempt, error = %e, "Stripe call failed; retrying with the same idempotency key");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Largest Stripe reply read.
const MAX_REPLY_BYTES: usize = 1 << 20;

async fn read_reply<T: serde::de::DeserializeOwned>(
    what: &'static str,
    mut resp: reqwest::Response,
) -> Result<T, StripeError> {
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_REPLY_BYTES {
                    return Err(StripeError::Decode {
                        what,
                        reason: format!("reply larger than {MAX_REPLY_BYTES} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(StripeError::Transport {
                    what,
                    reason: e.to_string(),
                })
            }
        }
    }
    if (200..300).contains(&status) {
        return serde_json::from_slice(&body).map_err(|e| StripeError::Decode {
            what,
            reason: e.to_string(),
        });
    }
    Err(match serde_json::from_slice::<ErrorReply>(&body) {
        Ok(r) => StripeError::Api {
            what,
            status,
            kind: r.error.kind,
            code: r.error.code,
            message: r.error.message.unwrap_or_default(),
        },
        Err(_) => StripeError::Api {
            what,
            status,
            kind: "unknown".into(),
            code: None,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_form_uses_bracket_notation() {
        let p = CheckoutParams {
            order_id: "o1".into(),
            quantity: 3,
            item: LineItem::Inline {
                currency: "usd".into(),
                unit_amount: 250,
                product_name: "Wireleap & co".into(),
            },
            success_url: "https://ps.example/accesskeys/{CHECKOUT_SESSION_ID}".into(),
            cancel_url: None,
        };
        let body = encode_form(&p.form());
        assert!(body.starts_with("mode=payment&client_reference_id=o1&metadata%5Border_id%5D=o1"));
        assert!(body.contains("line_items%5B0%5D%5Bquantity%5D=3"));
        assert!(body.contains("line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=250"));
        assert!(body.contains("product_data%5D%5Bname%5D=Wireleap+%26+co"));
        assert!(body.contains(
            "success_url=https%3A%2F%2Fps.example%2Faccesskeys%2F%7BCHECKOUT_SESSION_ID%7D"
        ));
        assert!(!body.contains("cancel_url"));
        let p = CheckoutParams {
            item: LineItem::Price("price_9".into()),
            cancel_url: Some("https://x/c".into()),
            ..p
        };
        let form = p.form();
        assert!(form.contains(&("line_items[0][price]".into(), "price_9".into())));
        assert!(form.contains(&("cancel_url".into(), "https://x/c".into())));
        assert!(!form.iter().any(|(k, _)| k.contains("price_data")));
    }

    #[test]
    fn refusals_and_retries_are_told_apart() {
        let api = |status, kind: &str| StripeError::Api {
            what: "transfer",
            status,
            kind: kind.into(),
            code: None,
            message: String::new(),
        };
        assert!(api(400, "invalid_request_error").definite_refusal());
        assert!(!api(400, "idempotency_error").definite_refusal());
        assert!(!api(401, "invalid_request_error").definite_refusal());
        assert!(!api(401, "invalid_request_error").retryable());
        assert!(api(409, "idempotency_error").retryable());
        assert!(api(429, "rate_limit_error").retryable());
        assert!(api(503, "api_error").retryable());
        assert!(!api(503, "api_error").definite_refusal());
        let t = StripeError::Transport {
            what: "transfer",
            reason: "reset".into(),
        };
        assert!(t.retryable() && !t.definite_refusal());
    }
}
