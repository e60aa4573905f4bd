//! Importing access keys (client.md §4.1–§4.2, seed note) and listing what is stored.
//!
//! `import` reads a file, standard input (`-`) or an `https://` URL (`file://` also works;
//! plain `http://` is refused: the file carries money). The file must be a valid accesskey
//! (protocol.md §6); its contract must be this home's contract if it already has one; when
//! the contract is reachable its `/info` key must equal the file's, and pofs not signed by
//! one of the contract's issuers are refused. Expired pofs are skipped, duplicates (same
//! `type:expiration:nonce`) are skipped with a warning, the rest are added to `pofs.json`.
//! An unreachable contract does not block the import: the file's contract key is pinned in
//! `contract.json` and checked by the daemon on every sync.

use crate::config::check_contract_url;
use crate::directory::{fetch_contract_info, SyncError};
use crate::files::{self, FileError, PofsLock};
use std::collections::HashSet;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;
use wireleap_api::ApiClient;
use wireleap_daemon::Home;
use wireleap_proto::accesskey::{AccessKey, AccessKeyError};
use wireleap_proto::contractinfo::ContractInfo;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::pof::Pof;

/// Largest access key file accepted.
pub const MAX_FILE: usize = 1 << 20;

/// Where an access key file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A local file (a path or a `file://` URL).
    File(PathBuf),
    /// An `https://` URL.
    Https(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Stdin => f.write_str("standard input"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Https(u) => f.write_str(u),
        }
    }
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// `http://` URLs are refused.
    #[error("refusing to download an access key over plain HTTP ({0}): anyone on the path could read or replace it; use https://")]
    InsecureUrl(String),
    /// Another URL scheme.
    #[error("unsupported source {0:?}: give a file path, `-` for standard input, a file:// URL or an https:// URL")]
    UnsupportedSource(String),
    /// The source could not be read.
    #[error("cannot read the access key from {source_name}: {reason}")]
    Read {
        /// The source.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// The file is not a valid access key.
    #[error("invalid access key: {0}")]
    Invalid(#[from] AccessKeyError),
    /// The contract endpoint in the file is not a usable URL.
    #[error("invalid access key: contract.endpoint {0}")]
    BadEndpoint(String),
    /// This home already belongs to another contract.
    #[error("this home is set up for contract {existing}, but the access key is for {new}; use a separate home directory (--home) for another contract")]
    OtherContract {
        /// The home's contract.
        existing: String,
        /// The file's contract.
        new: String,
    },
    /// The contract's key differs from the file's or the one pinned earlier.
    #[error("contract key mismatch for {endpoint}: the access key says {file}, but {other_what} is {other}")]
    KeyMismatch {
        /// The contract URL.
        endpoint: String,
        /// The key in the file.
        file: PublicKey,
        /// What the other key is ("the contract's /info key", "the key pinned in contract.json").
        other_what: &'static str,
        /// The other key.
        other: String,
    },
    /// The contract answered, but not with a usable `/info`.
    #[error(transparent)]
    Contract(SyncError),
    /// A state file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Parses the `import` argument.
pub fn parse_source(arg: &str) -> Result<Source, ImportError> {
    if arg == "-" {
        return Ok(Source::Stdin);
    }
    if let Some(rest) = arg.strip_prefix("file://") {
        // file:///abs/path or file://localhost/abs/path.
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(ImportError::UnsupportedSource(arg.to_string()));
        }
        return Ok(Source::File(PathBuf::from(path)));
    }
    let lower = arg.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(Source::Https(arg.to_string()));
    }
    if lower.starts_with("http://") {
        return Err(ImportError::InsecureUrl(arg.to_string()));
    }
    if arg.contains("://") || arg.is_empty() {
        return Err(ImportError::UnsupportedSource(arg.to_string()));
    }
    Ok(Source::File(PathBuf::from(arg)))
}

/// Reads the whole access key file from its source (at most [`MAX_FILE`] bytes).
pub async fn read_source(source: &Source) -> Result<Vec<u8>, ImportError> {
    let fail = |reason: String| ImportError::Read {
        source_name: source.to_string(),
        reason,
    };
    let bytes = match source {
        Source::Stdin => tokio::task::spawn_blocking(|| {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .take(MAX_FILE as u64 + 1)
                .read_to_end(&mut buf)
                .map(|_| buf)
        })
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(e.to_string()))?,
        Source::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
            let mut buf = Vec::new();
            file.take(MAX_FILE as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| fail(e.to_string()))?;
            buf
        }
        Source::Https(url) => {
            // Normal certificate verification against the web PKI (the original did too).
            let http = reqwest::Client::builder()
                .https_only(true)
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| fail(e.to_string()))?;
            let mut resp = http
                .get(url)
                .send()
                .await
                .map_err(|e| fail(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(fail(format!("HTTP status {}", resp.status())));
            }
            let mut buf = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_FILE {
                    break;
                }
            }
            buf
        }
    };
    if bytes.len() > MAX_FILE {
        return Err(fail(format!("larger than {MAX_FILE} bytes")));
    }
    Ok(bytes)
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// The contract URL.
    pub contract: String,
    /// Pofs added to `pofs.json`.
    pub imported: usize,
    /// Digests of pofs already stored (skipped).
    pub duplicates: Vec<String>,
    /// Digests of expired pofs (skipped).
    pub expired: Vec<String>,
    /// Pofs refused, with the reason.
    pub invalid: Vec<(String, String)>,
    /// Whether the contract's `/info` key was checked now (else: at the next start).
    pub contract_verified: bool,
    /// Other things the user should know.
    pub warnings: Vec<String>,
}

/// The contract this home is bound to, if any: the `contract` key of `config.json`, else
/// the endpoint in `contract.json`.
fn home_contract(home: &Home) -> Result<Option<String>, ImportError> {
    let from_config = std::fs::read(home.config_file())
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.get("contract")
                .and_then(|c| c.as_str().map(str::to_string))
        });
    if from_config.is_some() {
        return Ok(from_config);
    }
    Ok(files::read_contract(home)?.and_then(|c| c.endpoint))
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Validates an access key file and merges its pofs into `pofs.json`.
pub async fn import(
    home: &Home,
    bytes: &[u8],
    api: &ApiClient,
    now: i64,
) -> Result<ImportReport, ImportError> {
    let ak = AccessKey::import(bytes)?;
    check_contract_url(&ak.endpoint).map_err(ImportError::BadEndpoint)?;
    if let Some(existing) = home_contract(home)? {
        if !same_url(&existing, &ak.endpoint) {
            return Err(ImportError::OtherContract {
                existing,
                new: ak.endpoint,
            });
        }
    }
    let pinned = files::read_contract(home)?;
    if let Some(k) = pinned.as_ref().and_then(|c| c.pubkey) {
        if k != ak.contract {
            return Err(ImportError::KeyMismatch {
                endpoint: ak.endpoint,
                file: ak.contract,
                other_what: "the key pinned in contract.json",
                other: k.to_b64(),
            });
        }
    }
    let mut report = ImportReport {
        contract: ak.endpoint.clone(),
        ..ImportReport::default()
    };
    let mut issuers: Vec<PublicKey> = Vec::new();
    match fetch_contract_info(api, &ak.endpoint).await {
        Ok(mut info) => {
            let live = info.pubkey;
            if live != Some(ak.contract) {
                return Err(ImportError::KeyMismatch {
                    endpoint: ak.endpoint,
                    file: ak.contract,
                    other_what: "the contract's /info key",
                    other: live.map(|k| k.to_b64()).unwrap_or_default(),
                });
            }
            issuers = info
                .proof_of_funding
                .iter()
                .filter_map(|p| p.pubkey)
                .collect();
            info.endpoint.get_or_insert_with(|| ak.endpoint.clone());
            files::write_contract(home, &info)?;
            report.contract_verified = true;
        }
        Err(e @ SyncError::ContractUnreachable { .. }) => {
            report.warnings.push(format!(
                "{e}; the access key's contract key is pinned and will be checked when the client syncs"
            ));
            if pinned.is_none() {
                let info = ContractInfo {
                    pubkey: Some(ak.contract),
                    endpoint: Some(ak.endpoint.clone()),
                    ..ContractInfo::default()
                };
                files::write_contract(home, &info)?;
            }
        }
        Err(e) => return Err(ImportError::Contract(e)),
    }

    let mut fresh: Vec<Pof> = Vec::new();
    for pof in ak.pofs {
        let digest = pof.digest();
        if pof.is_expired(now) {
            report.expired.push(digest);
        } else if let Err(e) = if issuers.is_empty() {
            Ok(())
        } else {
            pof.verify_signature(&issuers)
        } {
            report.invalid.push((digest, e.to_string()));
        } else {
            fresh.push(pof);
        }
    }
    let home2 = home.clone();
    let lock = tokio::task::spawn_blocking(move || PofsLock::take(&home2))
        .await
        .map_err(|e| ImportError::Read {
            source_name: "pofs.json lock".into(),
            reason: e.to_string(),
        })??;
    let mut stored = lock.read(home)?;
    let mut seen: HashSet<String> = stored.iter().map(Pof::digest).collect();
    for pof in fresh {
        if seen.insert(pof.digest()) {
            stored.push(pof);
            report.imported += 1;
        } else {
            report.duplicates.push(pof.digest());
        }
    }
    lock.write(home, &stored)?;
    drop(lock);
    files::set_config_contract(home, &ak.endpoint)?;
    Ok(report)
}

/// One line of `accesskeys list` (the original's accesskey object, client.md §7).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccessKeyView {
    /// The contract URL.
    pub contract: String,
    /// The contract's servicekey duration in seconds (0 if unknown).
    pub duration: i64,
    /// `active`, `inactive` or `expired`.
    pub state: &'static str,
    /// Unix seconds: the servicekey's settlement_open, or the pof's expiration.
    pub expiration: i64,
}

/// The current servicekey first, then the stored pofs.
pub fn list(home: &Home, now: i64) -> Result<Vec<AccessKeyView>, FileError> {
    let contract = files::read_contract(home)?;
    let endpoint = contract
        .as_ref()
        .and_then(|c| c.endpoint.clone())
        .unwrap_or_default();
    let duration = contract
        .as_ref()
        .map(|c| c.servicekey.duration.to_std().as_secs())
        .and_then(|s| i64::try_from(s).ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    if let Some(sk) = files::read_servicekey(home)? {
        if sk.contract.public_key.is_some() {
            out.push(AccessKeyView {
                contract: endpoint.clone(),
                duration,
                state: if sk.is_expired(now) {
                    "expired"
                } else {
                    "active"
                },
                expiration: sk.contract.settlement_open,
            });
        }
    }
    for pof in files::read_pofs(home)? {
        out.push(AccessKeyView {
            contract: endpoint.clone(),
            duration,
            state: if pof.is_expired(now) {
                "expired"
            } else {
                "inactive"
            },
            expiration: pof.expiration,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(parse_source("-").unwrap(), Source::Stdin);
        assert_eq!(
            parse_source("a/b.json").unwrap(),
            Source::File("a/b.json".into())
        );
        assert_eq!(
            parse_source("file:///tmp/k.json").unwrap(),
            Source::File("/tmp/k.json".into())
        );
        assert_eq!(
            parse_source("https://ps.example/k").unwrap(),
            Source::Https("https://ps.example/k".into())
        );
        assert!(matches!(
            parse_source("http://ps.example/k"),
            Err(ImportError::InsecureUrl(_))
        ));
        assert!(matches!(
            parse_source("ftp://x/y"),
            Err(ImportError::UnsupportedSource(_))
        ));
        assert!(matches!(
            parse_source("file://relative"),
            Err(ImportError::UnsupportedSource(_))
        ));
    }
}
