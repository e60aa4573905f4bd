//! The relay's side of enrollment (protocol.md §8, §9): enroll, heartbeat and disenroll
//! requests to `{directory}/relays`, the proof-of-work round, and reading the replies.
//!
//! Differences from the original, on purpose: the reply to the proof-of-work answer is read
//! as fully as the first one (so an upgrade notice sent after a PoW round is not lost), and a
//! directory demanding an absurd bcrypt cost is refused instead of burning CPU for hours.
//! Scheduling (when to enroll, how often to beat, backoff) is `contracts`'s job.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use wireleap_api::{ApiClient, ApiError, Identity, RetryPolicy};
use wireleap_proto::keys::Keypair;
use wireleap_proto::relayentry::{
    classify_enroll_reply, EnrollReply, EnrollReplyError, RelayEntry, CHALLENGE_HEADER,
    RESPONSE_HEADER,
};
use wireleap_proto::status::Status;
use wireleap_proto::version::{Component, Interface};
use wireleap_proto::{nonce, pow};

/// `Wireleap-Relay-Version` (protocol.md §8.2) in the lowercase form `HeaderName` needs.
const SOFTWARE_HEADER: &str = "wireleap-relay-version";

/// Highest bcrypt cost the relay pays (cost 18 is about 15 s of one core; each step doubles).
pub const MAX_POW_COST: u32 = 18;

/// The three requests to a directory (§8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// First POST (carries `Wireleap-Relay-Dir-Version`).
    Enroll,
    /// Periodic POST (same body, no relay-dir version header).
    Heartbeat,
    /// DELETE (no Idempotency-Key).
    Disenroll,
}

impl Action {
    fn method(self) -> Method {
        match self {
            Action::Enroll | Action::Heartbeat => Method::POST,
            Action::Disenroll => Method::DELETE,
        }
    }

    /// For logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Enroll => "enroll",
            Action::Heartbeat => "heartbeat",
            Action::Disenroll => "disenroll",
        }
    }
}

/// What a successful request brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Ok,
    /// Accepted, with an upgrade notice for this version.
    Upgrade(semver::Version),
}

/// Why a directory request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// Transport, version mismatch, or a non-2xx reply (the status is inside).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A 2xx reply that does not follow the protocol.
    #[error("{0}")]
    Reply(#[from] EnrollReplyError),
    /// The directory refused (non-2xx status body).
    #[error("directory refused: {0}")]
    Refused(Status),
    /// The proof of work could not be computed.
    #[error("proof of work: {0}")]
    Pow(String),
    /// The directory answered the PoW answer with another challenge.
    #[error("directory sent a second challenge after the proof of work")]
    ChallengeAgain,
}

/// Sends relay entries to directories.
#[derive(Debug, Clone)]
pub struct DirectoryClient {
    /// Speaks relay-dir and relay-contract (enroll).
    enroll: ApiClient,
    /// Speaks relay-contract only (heartbeat, disenroll), as the original does.
    beat: ApiClient,
    software: HeaderValue,
}

impl DirectoryClient {
    /// Clients signing with `keypair`, announcing `software` in `Wireleap-Relay-Version`.
    pub fn new(keypair: &Keypair, software: &semver::Version) -> Result<Self, ApiError> {
        let id = |interfaces: Vec<Interface>| Identity {
            keypair: keypair.clone(),
            component: Component::Relay,
            interfaces,
        };
        let enroll = ApiClient::new(
            Some(id(vec![Interface::RelayDir, Interface::RelayContract])),
            false,
        )?
        .with_retry(RetryPolicy::ONCE);
        let beat = ApiClient::new(Some(id(vec![Interface::RelayContract])), false)?
            .with_retry(RetryPolicy::ONCE);
        let software = HeaderValue::from_str(&software.to_string())
            .map_err(|e| ApiError::Encode(e.to_string()))?;
        Ok(DirectoryClient {
            enroll,
            beat,
            software,
        })
    }

    /// Sends `entry` to `{directory}/relays` as `action`, answering one PoW challenge.
    pub async fn send(
        &self,
        action: Action,
        directory: &str,
        entry: &RelayEntry,
    ) -> Result<Outcome, DirectoryError> {
        let url = relays_url(directory);
        let client = match action {
            Action::Enroll => &self.enroll,
            Action::Heartbeat | Action::Disenroll => &self.beat,
        };
        let method = action.method();
        let body = Bytes::from(entry.to_body());
        let version = (
            HeaderName::from_static(SOFTWARE_HEADER),
            self.software.clone(),
        );
        let key = (method == Method::POST).then(nonce::idempotency_key);
        let raw = client
            .send_once(
                &method,
                &url,
                &body,
                key.as_deref(),
                std::slice::from_ref(&version),
            )
            .await
            .map_err(refused)?;
        match classify(&raw)? {
            EnrollReply::Challenge(challenge) => {
                let cost =
                    pow::parse_cost(&challenge).map_err(|e| DirectoryError::Pow(e.to_string()))?;
                if cost > MAX_POW_COST {
                    return Err(DirectoryError::Pow(format!(
                        "directory demands bcrypt cost {cost}, more than the {MAX_POW_COST} this relay pays"
                    )));
                }
                let c = challenge.clone();
                let response = tokio::task::spawn_blocking(move || pow::solve(&c))
                    .await
                    .map_err(|e| DirectoryError::Pow(e.to_string()))?
                    .map_err(|e| DirectoryError::Pow(e.to_string()))?;
                let header = |name: &str,
                              value: &str|
                 -> Result<(HeaderName, HeaderValue), DirectoryError> {
                    Ok((
                        HeaderName::try_from(name.to_ascii_lowercase())
                            .map_err(|e| DirectoryError::Pow(e.to_string()))?,
                        HeaderValue::from_str(value).map_err(|_| {
                            DirectoryError::Pow(format!(
                                "challenge {value:?} is not a valid header value"
                            ))
                        })?,
                    ))
                };
                let headers = [
                    version,
                    header(CHALLENGE_HEADER, &challenge)?,
                    header(RESPONSE_HEADER, &response)?,
                ];
                // A fresh key: the answered request is a different request for the
                // directory's idempotency cache.
                let key = (method == Method::POST).then(nonce::idempotency_key);
                let raw = client
                    .send_once(&method, &url, &body, key.as_deref(), &headers)
                    .await
                    .map_err(refused)?;
                match classify(&raw)? {
                    EnrollReply::Challenge(_) => Err(DirectoryError::ChallengeAgain),
                    other => outcome(other),
                }
            }
            other => outcome(other),
        }
    }
}

fn refused(e: ApiError) -> DirectoryError {
    match e.status() {
        Some(s) => DirectoryError::Refused(s.clone()),
        None => DirectoryError::Api(e),
    }
}

fn classify(raw: &wireleap_api::RawResponse) -> Result<EnrollReply, DirectoryError> {
    let challenge = raw
        .headers
        .get(CHALLENGE_HEADER)
        .and_then(|v| v.to_str().ok());
    Ok(classify_enroll_reply(raw.status, &raw.body, challenge)?)
}

fn outcome(reply: EnrollReply) -> Result<Outcome, DirectoryError> {
    match reply {
        EnrollReply::Ok(_) => Ok(Outcome::Ok),
        EnrollReply::Upgrade(v) => Ok(Outcome::Upgrade(v)),
        EnrollReply::Error(s) => Err(DirectoryError::Refused(s)),
        EnrollReply::Challenge(_) => Err(DirectoryError::ChallengeAgain),
    }
}

/// `{directory}/relays`, path-joined (§20).
pub fn relays_url(directory: &str) -> String {
    format!("{}/relays", directory.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wireleap_proto::version::RELAY_SOFTWARE_VERSION_HEADER;

    #[test]
    fn software_header_is_the_protocol_name() {
        assert!(SOFTWARE_HEADER.eq_ignore_ascii_case(RELAY_SOFTWARE_VERSION_HEADER));
    }

    #[test]
    fn relays_url_joins_paths() {
        assert_eq!(relays_url("http://d:1"), "http://d:1/relays");
        assert_eq!(relays_url("http://d:1/"), "http://d:1/relays");
        assert_eq!(relays_url("https://d/api/"), "https://d/api/relays");
    }
}
