//! The status object `{code, description, origin?, cause?}` (protocol.md §13).
//!
//! Every API error, every tunnel error (`wl-status`) and the PING reply is one of these. This
//! module renders its exact text forms and HTTP reply parts, parses it back, and names the
//! predefined statuses. It does not decide which status an endpoint answers with: callers
//! implement [`ToStatus`] for their own errors.

use crate::fields;
use crate::keys::PublicKey;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The `origin` value meaning "the target, not a relay, failed".
pub const ORIGIN_TARGET: &str = "target";

/// The two headers every HTTP status reply carries (the original's plain-text error writer).
pub const HTTP_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
];

/// The header (declared as a trailer) that carries a tunnel's error status.
pub const WL_STATUS_HEADER: &str = "wl-status";

/// A status object. Equality of *kind* is [`Status::same_as`]; `==` compares every field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Status {
    /// HTTP status code.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub code: u16,
    /// Human-readable description; for predefined statuses a fixed text.
    #[serde(default, deserialize_with = "fields::null_default")]
    pub description: String,
    /// Who failed: a relay public key (base64url) or [`ORIGIN_TARGET`]. Omitted when empty.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub origin: Option<String>,
    /// Detail text. Omitted when empty.
    #[serde(
        default,
        with = "fields::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub cause: Option<String>,
}

/// A status text that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The text is not a JSON object of the status shape.
    #[error("invalid status object {text:?}: {reason}")]
    Json {
        /// The offending text (lossily decoded).
        text: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The text was the JSON literal `null` (the original relay crashes on this).
    #[error("status object is null")]
    Null,
}

/// The parts of an HTTP reply that carries a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// HTTP status code (= the status's `code`).
    pub status: u16,
    /// Header name/value pairs, in the order the original writes them.
    pub headers: Vec<(&'static str, &'static str)>,
    /// Body: the text form plus one more `\n`.
    pub body: Vec<u8>,
}

/// Maps an error to the status the peer should see. Implemented by the errors of the crates
/// that answer HTTP or tunnel requests, so there is one place per error type deciding the wire
/// form (code, description, cause).
pub trait ToStatus {
    /// The status to send for this error.
    fn to_status(&self) -> Status;
}

impl ToStatus for Status {
    fn to_status(&self) -> Status {
        self.clone()
    }
}

macro_rules! predefined {
    ($( $(#[$doc:meta])* $name:ident = ($code:expr, $desc:expr $(, $cause:expr)?); )*) => {
        impl Status {
            $(
                $(#[$doc])*
                pub fn $name() -> Status {
                    #[allow(unused_mut)]
                    let mut s = Status::new($code, $desc);
                    $( s.cause = Some($cause.to_string()); )?
                    s
                }
            )*
        }
    };
}

/// Description of the 202 proof-of-work challenge status.
pub const CHALLENGE_DESCRIPTION: &str = "repeat request with response to challenge in headers";
/// Description of the 202 upgrade notice status.
pub const UPGRADE_DESCRIPTION: &str =
    "please upgrade your relay to the given version as soon as possible";

predefined! {
    /// 200 `OK`.
    ok = (200, "OK");
    /// 204 `no content`.
    no_content = (204, "no content");
    /// 404 `resource not found`.
    not_found = (404, "resource not found");
    /// 400 `bad request`.
    bad_request = (400, "bad request");
    /// 405 `HTTP method not allowed`.
    method_not_allowed = (405, "HTTP method not allowed");
    /// 500 `internal server error`.
    internal = (500, "internal server error");
    /// 402 `action requires payment`.
    unpaid = (402, "action requires payment");
    /// 403 `action not allowed`.
    forbidden = (403, "action not allowed");
    /// 409 `action conflicts with existing resource`.
    conflict = (409, "action conflicts with existing resource");
    /// 502 `gateway is unreachable or down`.
    gateway = (502, "gateway is unreachable or down");
    /// 202 proof-of-work challenge (the challenge itself travels in a header, §9).
    challenge = (202, CHALLENGE_DESCRIPTION);
    /// 501 `feature not implemented yet`.
    not_implemented = (501, "feature not implemented yet");
    /// 403 with cause `insufficient balance to complete request`.
    insufficient_balance = (403, "action not allowed", "insufficient balance to complete request");
    /// 400 with cause `expired proof of funding`.
    expired_pof = (400, "bad request", "expired proof of funding");
    /// 400 with cause `this pof has been seen/used already`.
    sneaky_pof = (400, "bad request", "this pof has been seen/used already");
    /// 400 with cause `invalid signature`.
    invalid_sig = (400, "bad request", "invalid signature");
    /// 400 with cause `missing parameter in URL`.
    missing_param = (400, "bad request", "missing parameter in URL");
    /// 400 with cause `format=text is not supported for this field`.
    no_text = (400, "bad request", "format=text is not supported for this field");
    /// 400 with cause `unknown format`.
    unknown_format = (400, "bad request", "unknown format");
    /// 400 with cause `major version mismatch`.
    version_mismatch = (400, "bad request", "major version mismatch");
    /// 400 with cause `request expired`.
    request_expired = (400, "bad request", "request expired");
    /// 400 with cause `sharetoken submission rejected`.
    st_rejected = (400, "bad request", "sharetoken submission rejected");
    /// 409 with cause `a withdrawal is already pending`.
    withdrawal_pending = (409, "action conflicts with existing resource", "a withdrawal is already pending");
    /// 400 with cause `withdrawal amount is invalid (<= 0)`.
    withdrawal_invalid = (400, "bad request", "withdrawal amount is invalid (<= 0)");
    /// 400 with cause `settlement window not yet open`.
    settlement_not_open = (400, "bad request", "settlement window not yet open");
    /// 400 with cause `settlement window already closed`.
    settlement_closed = (400, "bad request", "settlement window already closed");
    /// 400 with cause `contract public key mismatch`.
    contract_pubkey_mismatch = (400, "bad request", "contract public key mismatch");
    /// 502 with cause `payment system is unreachable or down, please try again later`.
    payment_system_unreachable = (502, "gateway is unreachable or down", "payment system is unreachable or down, please try again later");
    /// 400 with cause `enrollment key is incorrect`.
    bad_enrollment_key = (400, "bad request", "enrollment key is incorrect");
}

impl Status {
    /// A status with the given code and description, no origin, no cause.
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            origin: None,
            cause: None,
        }
    }

    /// The 202 upgrade notice carrying the version to upgrade to in `cause`.
    pub fn upgrade(version: &semver::Version) -> Self {
        Self::new(202, UPGRADE_DESCRIPTION).with_cause(version.to_string())
    }

    /// The relay's PING answer (`PONG`, origin = the relay key).
    pub fn pong(relay: &PublicKey) -> Self {
        Self::new(200, "PONG").with_origin_relay(relay)
    }

    /// Whether this is the PING answer of `relay`.
    pub fn is_pong_from(&self, relay: &PublicKey) -> bool {
        self.code == 200
            && self.description == "PONG"
            && self.origin.as_deref() == Some(relay.to_b64().as_str())
    }

    /// Sets `cause` (an empty text means none, as on the wire).
    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into()).filter(|c: &String| !c.is_empty());
        self
    }

    /// Sets `origin` (an empty text means none, as on the wire).
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into()).filter(|o: &String| !o.is_empty());
        self
    }

    /// Sets `origin` to a relay's public key.
    pub fn with_origin_relay(self, relay: &PublicKey) -> Self {
        self.with_origin(relay.to_b64())
    }

    /// Sets `origin` to [`ORIGIN_TARGET`].
    pub fn with_origin_target(self) -> Self {
        self.with_origin(ORIGIN_TARGET)
    }

    /// Same kind of status: equal `code` and `description` (origin and cause ignored).
    pub fn same_as(&self, other: &Status) -> bool {
        self.code == other.code && self.description == other.description
    }

    /// Whether this is the 202 challenge status.
    pub fn is_challenge(&self) -> bool {
        self.same_as(&Status::challenge())
    }

    /// Whether this is the 202 upgrade notice (the version, if any, is in `cause`).
    pub fn is_upgrade_notice(&self) -> bool {
        self.code == 202 && self.description == UPGRADE_DESCRIPTION
    }

    /// Whether the client must drop its circuit: the failure is not the target's and not a
    /// plain bad request.
    pub fn is_circuit_error(&self) -> bool {
        self.origin.as_deref() != Some(ORIGIN_TARGET) && self.code != 400
    }

    /// Whether the original's API client retries a request answered with this status.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code, 500 | 502)
    }

    /// Whether `code` is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The compact JSON (HTML escaping off) without any newline.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of integers and strings always encodes; the fallback is never used.
        crate::json::to_vec_no_html(self).unwrap_or_default()
    }

    /// The text form used everywhere: compact JSON, HTML escaping off, one `\n`.
    pub fn text(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.to_json()).into_owned();
        out.push('\n');
        out
    }

    /// The `wl-status` value our relay sends: the text form without the newline, because a
    /// newline makes HTTP/2 peers drop the field (§14.4).
    pub fn to_trailer_value(&self) -> String {
        String::from_utf8_lossy(&self.to_json()).into_owned()
    }

    /// The status as an HTTP reply (status line, two headers, body ending `}\n\n`).
    pub fn to_http(&self) -> HttpReply {
        let mut body = self.text().into_bytes();
        body.push(b'\n');
        HttpReply {
            status: self.code,
            headers: HTTP_HEADERS.to_vec(),
            body,
        }
    }

    /// Parses a status text (JSON object; trailing whitespace such as the `\n` accepted).
    pub fn parse(text: &[u8]) -> Result<Self, StatusError> {
        let value: serde_json::Value =
            crate::json::from_slice(text).map_err(|e| json_err(text, e))?;
        if value.is_null() {
            return Err(StatusError::Null);
        }
        if !value.is_object() {
            // serde would read an array positionally; the original only accepts objects.
            return Err(StatusError::Json {
                text: String::from_utf8_lossy(text).into_owned(),
                reason: "not a JSON object".into(),
            });
        }
        serde_json::from_value(value).map_err(|e| json_err(text, crate::json::JsonError(e)))
    }

    /// Parses a `wl-status` header or trailer value.
    pub fn from_header(value: &str) -> Result<Self, StatusError> {
        Self::parse(value.as_bytes())
    }
}

fn json_err(text: &[u8], e: crate::json::JsonError) -> StatusError {
    StatusError::Json {
        text: String::from_utf8_lossy(text).into_owned(),
        reason: e.0.to_string(),
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_trailer_value())
    }
}

impl std::error::Error for Status {}

impl std::str::FromStr for Status {
    type Err = StatusError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_omitted_and_empty_object_parses() {
        let s = Status::bad_request().with_cause("").with_origin("");
        assert_eq!(s.text(), "{\"code\":400,\"description\":\"bad request\"}\n");
        let e = Status::parse(b"{}").unwrap_or_else(|_| Status::ok());
        assert_eq!(e.text(), "{\"code\":0,\"description\":\"\"}\n");
        assert_eq!(Status::parse(b"null"), Err(StatusError::Null));
        assert!(Status::parse(b"[]").is_err());
        assert!(Status::parse(b"{\"code\":-1}").is_err());
    }
}
