//! Contract and directory sync (client.md §5.1, protocol.md §10–§12): contract `/info` →
//! directory `/info` → `/relays`, each step checked against the key the step before vouched
//! for.
//!
//! Trust chain: the contract key is pinned by the access key file (and kept in
//! `contract.json`); the contract names its directory's key; the directory `/info` must carry
//! that key, and the relay list must be signed by exactly that key. Unlike the original, a
//! list signed by any other key is refused. Choosing relays from the list is `circuit`'s job.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use wireleap_api::{ApiClient, ApiError};
use wireleap_proto::contractinfo::ContractInfo;
use wireleap_proto::dirinfo::DirInfo;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::relaylist::{RelayList, RelayListError};

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The contract did not answer.
    #[error("contract {url} is unreachable: {source}")]
    ContractUnreachable {
        /// The URL asked.
        url: String,
        /// The API error.
        source: ApiError,
    },
    /// The contract's `/info` is not a contract info object.
    #[error("contract {url} sent an invalid /info: {reason}")]
    ContractInfo {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The contract now answers with another key than the one pinned.
    #[error("contract {url} answers with key {got}, but this home is for contract key {expected}; refusing it (import an access key into a new home to change contracts)")]
    ContractKeyMismatch {
        /// The URL asked.
        url: String,
        /// The pinned key.
        expected: PublicKey,
        /// The key in `/info` (`""` when absent).
        got: String,
    },
    /// The contract names no directory.
    #[error("contract {0} names no directory (directory.endpoint and directory.public_key are required)")]
    NoDirectory(String),
    /// The directory did not answer.
    #[error("directory {url} is unreachable: {source}")]
    DirectoryUnreachable {
        /// The URL asked.
        url: String,
        /// The API error.
        source: ApiError,
    },
    /// The directory's `/info` is not a directory info object.
    #[error("directory {url} sent an invalid /info: {reason}")]
    DirectoryInfo {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The directory's key is not the one the contract names.
    #[error("directory {url} has key {got}, but the contract names {expected}")]
    DirectoryKeyMismatch {
        /// The URL asked.
        url: String,
        /// The key the contract names.
        expected: PublicKey,
        /// The directory's key (`""` when absent).
        got: String,
    },
    /// The relay list was refused (signature, version header, or shape).
    #[error("relay list from {url} refused: {source}")]
    RelayList {
        /// The URL asked.
        url: String,
        /// Why.
        source: RelayListError,
    },
}

/// Joins a base URL and a path without doubling the slash.
pub fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// `GET {contract}/info`.
pub async fn fetch_contract_info(
    api: &ApiClient,
    contract: &str,
) -> Result<ContractInfo, SyncError> {
    let url = join(contract, "/info");
    let raw = api
        .call(http::Method::GET, &url, &(), &[])
        .await
        .map_err(|source| SyncError::ContractUnreachable {
            url: url.clone(),
            source,
        })?;
    ContractInfo::from_json(&raw.body).map_err(|e| SyncError::ContractInfo {
        url,
        reason: e.to_string(),
    })
}

/// A verified view of the network: contract, directory and relays, as fetched together.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The contract's base URL.
    pub contract_url: String,
    /// Contract `/info`.
    pub contract: ContractInfo,
    /// Directory `/info`.
    pub directory: DirInfo,
    /// The verified relay list.
    pub relays: Arc<RelayList>,
    /// Entries of the list that were skipped, with the reason.
    pub rejected: Vec<String>,
    /// When it was fetched.
    pub fetched: SystemTime,
}

/// Fetches and verifies everything; `pinned` is the contract key this home trusts.
pub async fn sync(
    api: &ApiClient,
    contract_url: &str,
    pinned: &PublicKey,
) -> Result<Snapshot, SyncError> {
    let contract = fetch_contract_info(api, contract_url).await?;
    if contract.pubkey.as_ref() != Some(pinned) {
        return Err(SyncError::ContractKeyMismatch {
            url: contract_url.to_string(),
            expected: *pinned,
            got: contract.pubkey.map(|k| k.to_b64()).unwrap_or_default(),
        });
    }
    let (Some(dir_endpoint), Some(dir_key)) = (
        contract.directory.endpoint.clone(),
        contract.directory.public_key,
    ) else {
        return Err(SyncError::NoDirectory(contract_url.to_string()));
    };
    let info_url = join(&dir_endpoint, "/info");
    let raw = api
        .call(http::Method::GET, &info_url, &(), &[])
        .await
        .map_err(|source| SyncError::DirectoryUnreachable {
            url: info_url.clone(),
            source,
        })?;
    let directory = DirInfo::from_json(&raw.body).map_err(|e| SyncError::DirectoryInfo {
        url: info_url.clone(),
        reason: e.to_string(),
    })?;
    if directory.public_key != Some(dir_key) {
        return Err(SyncError::DirectoryKeyMismatch {
            url: info_url,
            expected: dir_key,
            got: directory.public_key.map(|k| k.to_b64()).unwrap_or_default(),
        });
    }
    // The directory names its own public endpoint; fall back to the contract's reference.
    let base = directory
        .endpoint
        .clone()
        .filter(|e| !e.is_empty())
        .unwrap_or(dir_endpoint);
    let relays_url = join(&base, "/relays");
    let raw = api
        .call(http::Method::GET, &relays_url, &(), &[])
        .await
        .map_err(|source| SyncError::DirectoryUnreachable {
            url: relays_url.clone(),
            source,
        })?;
    let verified = RelayList::verify(&raw.body, &raw.headers, &dir_key).map_err(|source| {
        SyncError::RelayList {
            url: relays_url.clone(),
            source,
        }
    })?;
    let rejected = verified
        .rejected
        .iter()
        .map(|r| format!("{}: {}", r.key, r.error))
        .collect::<Vec<_>>();
    for r in &rejected {
        tracing::warn!(entry = %r, "directory listed an unusable relay entry; skipped");
    }
    Ok(Snapshot {
        contract_url: contract_url.to_string(),
        contract,
        directory,
        relays: Arc::new(verified.list),
        rejected,
        fetched: SystemTime::now(),
    })
}

/// The latest snapshot and the latest sync error, shared between the sync task, the dialer
/// and the API.
#[derive(Debug, Default)]
pub struct DirectoryState {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    snapshot: Option<Arc<Snapshot>>,
    last_error: Option<(SystemTime, String)>,
    generation: u64,
}

impl DirectoryState {
    /// The current snapshot, if any sync succeeded.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.read().ok().and_then(|i| i.snapshot.clone())
    }

    /// How many snapshots have been stored (changes on every successful sync).
    pub fn generation(&self) -> u64 {
        self.inner.read().map(|i| i.generation).unwrap_or(0)
    }

    /// The last sync error (cleared by a successful sync).
    pub fn last_error(&self) -> Option<(SystemTime, String)> {
        self.inner.read().ok().and_then(|i| i.last_error.clone())
    }

    /// Stores a successful sync.
    pub fn set(&self, snapshot: Snapshot) {
        if let Ok(mut i) = self.inner.write() {
            i.snapshot = Some(Arc::new(snapshot));
            i.last_error = None;
            i.generation += 1;
        }
    }

    /// Records a failed sync (the previous snapshot stays usable).
    pub fn set_error(&self, err: &SyncError) {
        if let Ok(mut i) = self.inner.write() {
            i.last_error = Some((SystemTime::now(), err.to_string()));
        }
    }

    /// Forgets everything (the contract changed).
    pub fn clear(&self) {
        if let Ok(mut i) = self.inner.write() {
            *i = Inner {
                generation: i.generation + 1,
                ..Inner::default()
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_does_not_double_slashes() {
        assert_eq!(join("http://a:1", "/info"), "http://a:1/info");
        assert_eq!(join("http://a:1/", "/info"), "http://a:1/info");
        assert_eq!(join("http://a:1/c", "/relays"), "http://a:1/c/relays");
    }
}
