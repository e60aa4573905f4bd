//! Payout and pof-purchase objects (protocol.md §19): withdrawal requests and records,
//! balances, and the payment service's pof request to auth.
//!
//! These travel as (signed) request bodies; only their shape and validity rules live here.
//! Ledgers, limits against `/info` and the payment processors are the services' business.

use crate::fields;
use crate::rational::Rational;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a payout object is invalid. `Display` is the original's text where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayoutError {
    /// The body is not the expected JSON object.
    #[error("invalid payout object: {0}")]
    Json(String),
    /// Amount zero or negative.
    #[error("withdrawal request amount is invalid (<= 0): {0}")]
    Amount(i64),
    /// Withdrawal request type empty.
    #[error("withdrawal request type is missing")]
    MissingType,
    /// Withdrawal request destination empty.
    #[error("withdrawal destination is missing")]
    MissingDestination,
    /// Withdrawal id empty.
    #[error("withdrawal id is missing")]
    MissingId,
    /// Withdrawal state not pending/complete/failed.
    #[error("withdrawal state is invalid: `{0}`")]
    BadState(String),
    /// Pof request quantity zero or absent.
    #[error("pof quantity is null or missing")]
    MissingQuantity,
    /// Pof request type empty.
    #[error("pof type is null or missing")]
    MissingPofType,
    /// Pof request duration zero or absent.
    #[error("pof duration is null or missing")]
    MissingDuration,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Relay → contract `POST /payout/withdrawals` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRequest {
    /// Amount in minor currency units.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "is_zero"
    )]
    pub amount: i64,
    /// Payout kind (relays send `TODO`).
    #[serde(
        rename = "type",
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Where the money goes.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination: String,
}

/// The `type` the original relay always sends.
pub const RELAY_WITHDRAWAL_TYPE: &str = "TODO";

impl WithdrawalRequest {
    /// Valid iff amount > 0 and type and destination are non-empty.
    pub fn validate(&self) -> Result<(), PayoutError> {
        if self.amount <= 0 {
            return Err(PayoutError::Amount(self.amount));
        }
        if self.kind.is_empty() {
            return Err(PayoutError::MissingType);
        }
        if self.destination.is_empty() {
            return Err(PayoutError::MissingDestination);
        }
        Ok(())
    }
}

/// Where a withdrawal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WithdrawalState {
    /// Sent to the payment service, not settled yet.
    Pending,
    /// Paid out.
    Complete,
    /// Refused or failed.
    Failed,
}

impl WithdrawalState {
    /// The wire text.
    pub const fn as_str(self) -> &'static str {
        match self {
            WithdrawalState::Pending => "pending",
            WithdrawalState::Complete => "complete",
            WithdrawalState::Failed => "failed",
        }
    }
}

impl fmt::Display for WithdrawalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WithdrawalState {
    type Err = PayoutError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "complete" => Ok(Self::Complete),
            "failed" => Ok(Self::Failed),
            other => Err(PayoutError::BadState(other.to_string())),
        }
    }
}

/// A withdrawal record (contract → relay). `state` stays text on the wire so that a record
/// with an unknown state still parses and [`Withdrawal::validate`] can say what was wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// Withdrawal id.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// `pending`, `complete` or `failed`.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub state: String,
    /// When the state last changed, unix seconds.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "is_zero"
    )]
    pub state_changed: i64,
    /// Requested amount (fields of the request, inline).
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "is_zero"
    )]
    pub amount: i64,
    /// Requested payout kind.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Requested destination.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub destination: String,
    /// The payment service's receipt, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<serde_json::Value>,
}

impl Withdrawal {
    /// The request fields.
    pub fn request(&self) -> WithdrawalRequest {
        WithdrawalRequest {
            amount: self.amount,
            kind: self.kind.clone(),
            destination: self.destination.clone(),
        }
    }

    /// Valid iff it has an id and a known state; returns the state.
    pub fn validate(&self) -> Result<WithdrawalState, PayoutError> {
        if self.id.is_empty() {
            return Err(PayoutError::MissingId);
        }
        self.state.parse()
    }
}

/// A balance as the contract keeps it (exact rational value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Currency code.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub currency: String,
    /// Exact value in minor units.
    pub value: Rational,
    /// Amount tied up in a pending withdrawal (inferred type; omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Rational>,
}

/// A balance as exported to relays: whole minor units available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedBalance {
    /// Currency code.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub currency: String,
    /// Floor of the exact value.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub available: i64,
    /// Floor of the pending amount (inferred type; omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<i64>,
}

impl Balance {
    /// The exported form: values floored to whole units (exactly, not through a float as the
    /// original does; `None` only if a value does not fit in 64 bits).
    pub fn export(&self) -> Option<ExportedBalance> {
        Some(ExportedBalance {
            currency: self.currency.clone(),
            available: self.value.floor_i64()?,
            pending: match &self.pending {
                Some(p) => Some(p.floor_i64()?),
                None => None,
            },
        })
    }
}

/// Price information of a pof request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    /// Price in minor units.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "is_zero"
    )]
    pub price: i64,
    /// Lowercase ISO currency code.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub currency: String,
}

/// Payment service → auth: issue pofs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PofRequest {
    /// How many pofs.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "is_zero"
    )]
    pub quantity: i64,
    /// Pof type.
    #[serde(
        rename = "type",
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub kind: String,
    /// Validity of each pof, seconds.
    #[serde(
        default,
        deserialize_with = "fields::null_default",
        skip_serializing_if = "is_zero"
    )]
    pub duration: i64,
    /// What was paid (optional; omitted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting: Option<Accounting>,
}

impl PofRequest {
    /// Valid iff quantity, type and duration are set (accounting is optional).
    pub fn validate(&self) -> Result<(), PayoutError> {
        if self.quantity <= 0 {
            return Err(PayoutError::MissingQuantity);
        }
        if self.kind.is_empty() {
            return Err(PayoutError::MissingPofType);
        }
        if self.duration <= 0 {
            return Err(PayoutError::MissingDuration);
        }
        Ok(())
    }
}

/// Encodes any payout object as the original does (compact, HTML-escaped).
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Integers, strings, rationals and JSON values always encode.
    crate::json::to_vec(v).unwrap_or_default()
}

/// Decodes a payout object (must be a JSON object).
pub fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PayoutError> {
    fields::from_json_object(body).map_err(PayoutError::Json)
}
