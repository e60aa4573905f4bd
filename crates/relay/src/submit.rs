//! Sharetoken settlement, relay side (services.md §1.8): every `auto_submit_interval`,
//! submit the stored tokens whose settlement window is open to `{contract}/submit`,
//! record acceptance (and archive the token if `archive_dir` is set), keep failed ones for
//! the next tick, and drop — with a log line — those whose window closed unsubmitted.
//!
//! Fixes the original's bug where a failed submission was never retried while the relay ran
//! (services.md §1.8): here a failure leaves the token pending and every tick retries it
//! until its window closes. A contract that says it already has the token (409) counts as
//! acceptance, so a crash between submission and bookkeeping, or two processes during a
//! hand-over, do no harm.

use crate::state::{unix_now, Shared};
use crate::store::{StoredToken, TokenStore};
use futures_util::StreamExt as _;
use http::Method;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wireleap_api::{ApiClient, ApiError, Identity, RetryPolicy};
use wireleap_proto::contractinfo::ContractInfo;
use wireleap_proto::version::{Component, Interface};

/// Tokens submitted per tick at most (the rest wait for the next tick).
pub const BATCH: i64 = 2000;
/// Submissions in flight at once.
pub const PARALLEL: usize = 8;
/// Finished tokens are deleted this long after their window closed.
pub const KEEP_FINISHED: i64 = 7 * 24 * 3600;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Accepted by the contract.
    pub accepted: usize,
    /// Failed, kept for the next tick.
    pub failed: usize,
    /// Window closed; dropped.
    pub dropped: u64,
}

/// Submits settleable sharetokens.
#[derive(Debug, Clone)]
pub struct Submitter {
    shared: Arc<Shared>,
    store: TokenStore,
    client: ApiClient,
    archive_dir: Option<PathBuf>,
}

/// How the contract answered one submission.
enum Verdict {
    Accepted,
    Retry(String),
    Refused(String),
}

fn verdict(r: Result<wireleap_api::RawResponse, ApiError>) -> Verdict {
    match r {
        Ok(_) => Verdict::Accepted,
        Err(e) => match e.status() {
            Some(s) if s.code == 409 => Verdict::Accepted,
            Some(s)
                if s.same_as(&wireleap_proto::status::Status::settlement_closed())
                    && s.cause == wireleap_proto::status::Status::settlement_closed().cause =>
            {
                Verdict::Refused(s.to_string())
            }
            _ => Verdict::Retry(e.to_string()),
        },
    }
}

impl Submitter {
    /// A submitter signing as the relay in `shared`.
    pub fn new(shared: &Arc<Shared>, archive_dir: Option<PathBuf>) -> Result<Self, ApiError> {
        let client = ApiClient::new(
            Some(Identity {
                keypair: shared.keypair.clone(),
                component: Component::Relay,
                interfaces: vec![Interface::RelayDir, Interface::RelayContract],
            }),
            false,
        )?
        // The tick is the retry loop.
        .with_retry(RetryPolicy::ONCE);
        Ok(Submitter {
            shared: shared.clone(),
            store: shared.store.clone(),
            client,
            archive_dir,
        })
    }

    /// Contract key → URL: the contracts served now, then those known from the info cache
    /// (a contract removed from the config still gets the tokens it owes for).
    async fn urls(&self) -> HashMap<String, String> {
        let mut urls: HashMap<String, String> = HashMap::new();
        if let Ok(cached) = self.store.cached_infos().await {
            for (url, body) in cached {
                if let Ok(info) = ContractInfo::from_json(body.as_bytes()) {
                    if let Some(k) = info.pubkey {
                        urls.insert(k.to_b64(), url);
                    }
                }
            }
        }
        for (k, v) in &self.shared.contracts.snapshot().by_key {
            urls.insert(k.to_b64(), v.url.clone());
        }
        urls
    }

    /// One round at time `now`.
    pub async fn tick(&self, now: i64) -> TickReport {
        let mut report = TickReport::default();
        let due = match self.store.settleable(now, BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "could not read sharetokens to submit");
                return report;
            }
        };
        let urls = if due.is_empty() {
            HashMap::new()
        } else {
            self.urls().await
        };
        let urls = &urls;
        let results: Vec<(StoredToken, Verdict)> = futures_util::stream::iter(due)
            .map(|t| async move {
                let v = match urls.get(&t.contract).cloned() {
                    Some(url) => verdict(
                        self.client
                            .call(Method::POST, &format!("{url}/submit"), &t.token, &[])
                            .await,
                    ),
                    None => Verdict::Retry(format!(
                        "contract {} is not known (yet) to this relay",
                        t.contract
                    )),
                };
                (t, v)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (t, v) in results {
            let r = match v {
                Verdict::Accepted => {
                    report.accepted += 1;
                    if let Some(dir) = &self.archive_dir {
                        archive(dir, &t);
                    }
                    self.store.mark_accepted(&t, now).await
                }
                Verdict::Retry(e) => {
                    report.failed += 1;
                    tracing::debug!(contract = %t.contract, error = %e, "submission failed; will retry");
                    self.store.mark_failed(&t, &e).await
                }
                Verdict::Refused(e) => {
                    report.dropped += 1;
                    tracing::warn!(contract = %t.contract, error = %e, "contract refused a sharetoken for good; dropped");
                    self.store.mark_dropped(&t, &e, now).await
                }
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "could not record a submission result");
            }
        }
        match self.store.drop_closed(now).await {
            Ok(dropped) => {
                for (contract, n) in dropped {
                    report.dropped += n;
                    tracing::warn!(
                        %contract,
                        tokens = n,
                        "settlement window closed before the contract accepted these sharetokens; dropped"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "could not drop closed sharetokens"),
        }
        if let Err(e) = self.store.prune(now - KEEP_FINISHED).await {
            tracing::warn!(error = %e, "could not prune finished sharetokens");
        }
        if report.accepted + report.failed > 0 || report.dropped > 0 {
            tracing::info!(
                accepted = report.accepted,
                failed = report.failed,
                dropped = report.dropped,
                "sharetoken submission round"
            );
        }
        report
    }

    /// Ticks every `interval` until `stop`; the first tick runs at once (tokens stored by
    /// an earlier process are due too).
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => { self.tick(unix_now()).await; }
            }
        }
    }
}

/// Writes an accepted token to `<dir>/<contract>/<signature>.json` (best effort: the
/// database row stays the record of acceptance).
fn archive(dir: &Path, t: &StoredToken) {
    let sub = dir.join(&t.contract);
    let path = sub.join(format!("{}.json", t.token.signature.to_b64()));
    let body = wireleap_proto::json::to_vec(&t.token).unwrap_or_default();
    let r = std::fs::create_dir_all(&sub)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            wireleap_daemon::write_atomic(&path, &body, 0o600).map_err(|e| e.to_string())
        });
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), "could not archive a sharetoken: {e}");
    }
}
