//! Servicekeys (client.md §4.4, protocol.md §4): activating one from a stored pof at the
//! contract, keeping it in `servicekey.json`, and renewing it before it expires.
//!
//! A servicekey is usable until its `settlement_open`. [`Keys::current`] hands out the
//! current one, activating a new one first when it is missing or about to expire (and
//! `accesskey.use_on_demand` allows it). A background task ([`Keys::renew_loop`]) activates
//! the next key shortly before expiry if the current one was used, so busy clients never
//! wait for an activation and idle clients spend no pofs. Streams already open keep their
//! tokens: a new key only changes what new streams carry.
//!
//! Unlike the original, the contract's signature on the activation reply is verified, and
//! the signing key must be the contract key this home is pinned to.

use crate::directory::join;
use crate::files::{self, FileError, PofsLock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wireleap_api::{ApiClient, ApiError};
use wireleap_daemon::{CancellationToken, Home};
use wireleap_proto::keys::{Keypair, PublicKey};
use wireleap_proto::pof::ActivationRequest;
use wireleap_proto::servicekey::{ContractSection, ServiceKey};

/// Why no servicekey is available.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No pofs are left to activate a servicekey with.
    #[error("no servicekey and no unused proofs of funding left: import an access key (`wireleap import FILE`)")]
    NoPofs,
    /// A new servicekey is needed but automatic activation is off.
    #[error("no valid servicekey and accesskey.use_on_demand is false")]
    OnDemandOff,
    /// The contract refused or failed every attempt; the last reason is given.
    #[error("servicekey activation at {url} failed: {reason}")]
    Activation {
        /// The activation URL.
        url: String,
        /// The last failure.
        reason: String,
    },
    /// A state file could not be used.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Seconds since the epoch, from the system clock.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long before expiry a key is replaced: a tenth of its lifetime, between 5 s and 5 min.
pub fn renew_margin(lifetime_secs: i64) -> i64 {
    (lifetime_secs / 10).clamp(5, 300)
}

/// A servicekey in use.
#[derive(Debug)]
pub struct ActiveKey {
    /// The key and its contract section.
    pub key: ServiceKey,
    /// When it was activated (or loaded), unix seconds.
    pub since: i64,
}

impl ActiveKey {
    /// Unix seconds after which new streams should use a fresh key.
    pub fn renew_at(&self) -> i64 {
        let open = self.key.contract.settlement_open;
        open - renew_margin(open - self.since)
    }
}

/// The servicekey manager of one contract.
#[derive(Debug)]
pub struct Keys {
    home: Home,
    api: ApiClient,
    contract_url: String,
    contract_key: PublicKey,
    on_demand: AtomicBool,
    current: Mutex<Option<Arc<ActiveKey>>>,
    used: AtomicBool,
    activation: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
    /// Wakes the renewal task when a new key is in place.
    changed: tokio::sync::Notify,
}

impl Keys {
    /// A manager for the contract at `contract_url` with key `contract_key`; loads
    /// `servicekey.json` if it belongs to that contract and is not expired.
    pub fn new(
        home: Home,
        api: ApiClient,
        contract_url: String,
        contract_key: PublicKey,
        on_demand: bool,
    ) -> Result<Self, KeyError> {
        let now = now();
        let current = files::read_servicekey(&home)?
            .filter(|sk| sk.contract.public_key == Some(contract_key) && !sk.is_expired(now))
            .map(|key| Arc::new(ActiveKey { key, since: now }));
        Ok(Keys {
            home,
            api,
            contract_url,
            contract_key,
            on_demand: AtomicBool::new(on_demand),
            current: Mutex::new(current),
            used: AtomicBool::new(false),
            activation: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Applies a reloaded `accesskey.use_on_demand`.
    pub fn set_on_demand(&self, on: bool) {
        self.on_demand.store(on, Ordering::Relaxed);
    }

    /// The current key without activating anything (for status).
    pub fn peek(&self) -> Option<Arc<ActiveKey>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// The last activation failure, if the last attempt failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn usable(&self, now: i64) -> Option<Arc<ActiveKey>> {
        self.peek().filter(|k| now < k.renew_at())
    }

    /// The key new streams should use, activating one if needed.
    pub async fn current(&self) -> Result<Arc<ActiveKey>, KeyError> {
        if let Some(k) = self.usable(now()) {
            self.used.store(true, Ordering::Relaxed);
            return Ok(k);
        }
        // A key past its renewal point but before expiry still works while a new one is
        // being made; only a key that has expired is useless.
        if !self.on_demand.load(Ordering::Relaxed) {
            return match self.peek().filter(|k| !k.key.is_expired(now())) {
                Some(k) => Ok(k),
                None => Err(KeyError::OnDemandOff),
            };
        }
        match self.refresh().await {
            Ok(k) => {
                self.used.store(true, Ordering::Relaxed);
                Ok(k)
            }
            // The old key is still accepted by relays until it expires: keep using it.
            Err(e) => match self.peek().filter(|k| !k.key.is_expired(now())) {
                Some(k) => {
                    tracing::warn!(error = %e, "could not renew the servicekey; using the current one until it expires");
                    Ok(k)
                }
                None => Err(e),
            },
        }
    }

    /// Activates a new key unless another task just did (single flight).
    pub async fn refresh(&self) -> Result<Arc<ActiveKey>, KeyError> {
        let _one = self.activation.lock().await;
        if let Some(k) = self.usable(now()) {
            return Ok(k);
        }
        let result = self.activate().await;
        if let Ok(mut e) = self.last_error.lock() {
            *e = result.as_ref().err().map(ToString::to_string);
        }
        let key = result?;
        if let Ok(mut c) = self.current.lock() {
            *c = Some(key.clone());
        }
        self.used.store(false, Ordering::Relaxed);
        self.changed.notify_one();
        Ok(key)
    }

    /// Walks the stored pofs: drops expired ones, tries each at the contract until one
    /// activates. A pof the contract refuses (400/402/403: invalid, expired or already
    /// spent) is dropped; any other failure keeps it and stops, to be retried later.
    async fn activate(&self) -> Result<Arc<ActiveKey>, KeyError> {
        let url = join(&self.contract_url, "/servicekey/activate");
        let home = self.home.clone();
        let lock = tokio::task::spawn_blocking(move || PofsLock::take(&home))
            .await
            .map_err(|e| KeyError::Activation {
                url: url.clone(),
                reason: format!("lock task failed: {e}"),
            })??;
        let now = now();
        // Another process of this client (the other side of an upgrade hand-over) may have
        // activated a key while this one waited for the lock: use it rather than spend
        // another pof.
        if let Some(key) = self.fresh_on_disk(now)? {
            drop(lock);
            tracing::info!("servicekey activated by the other client process taken over");
            return Ok(key);
        }
        let mut pofs = lock.read(&self.home)?;
        let before = pofs.len();
        pofs.retain(|p| !p.is_expired(now));
        if pofs.len() != before {
            tracing::info!(
                dropped = before - pofs.len(),
                "expired proofs of funding dropped"
            );
        }
        let mut last_reason = None;
        let mut activated = None;
        while let Some(pof) = pofs.first().cloned() {
            let keypair = Keypair::generate();
            let req = ActivationRequest::new(keypair.public(), pof.clone());
            match self.post_activation(&url, &req).await {
                Ok(section) => match self.check_section(section, now) {
                    Ok(section) => {
                        pofs.remove(0);
                        activated = Some(ServiceKey {
                            keypair,
                            contract: section,
                        });
                        break;
                    }
                    Err(reason) => {
                        // The contract answered with something unusable; the pof may be
                        // spent, but keeping it only risks one more refusal later.
                        last_reason = Some(reason);
                        break;
                    }
                },
                Err(err) => {
                    let code = err.status().map(|s| s.code);
                    last_reason = Some(err.to_string());
                    if matches!(code, Some(400 | 402 | 403)) {
                        tracing::warn!(pof = %pof.digest(), error = %err, "contract refused a proof of funding; dropped");
                        pofs.remove(0);
                    } else {
                        break;
                    }
                }
            }
        }
        lock.write(&self.home, &pofs)?;
        let Some(key) = activated else {
            return Err(match last_reason {
                Some(reason) => KeyError::Activation { url, reason },
                None => KeyError::NoPofs,
            });
        };
        // Written under the lock, so a process that takes it next sees the new key.
        files::write_servicekey(&self.home, &key)?;
        drop(lock);
        tracing::info!(
            settlement_open = key.contract.settlement_open,
            pofs_left = pofs.len(),
            "servicekey activated"
        );
        Ok(Arc::new(ActiveKey { key, since: now }))
    }

    /// The key in `servicekey.json` if it is not the one in use here, belongs to this
    /// contract and is good for longer than the renewal margin.
    fn fresh_on_disk(&self, now: i64) -> Result<Option<Arc<ActiveKey>>, KeyError> {
        let ours = self.peek().map(|k| k.key.keypair.public());
        let Some(key) = files::read_servicekey(&self.home)? else {
            return Ok(None);
        };
        if key.contract.public_key != Some(self.contract_key) || Some(key.keypair.public()) == ours
        {
            return Ok(None);
        }
        let active = ActiveKey { key, since: now };
        Ok((active.renew_at() > now).then(|| Arc::new(active)))
    }

    async fn post_activation(
        &self,
        url: &str,
        req: &ActivationRequest,
    ) -> Result<ContractSection, ApiError> {
        let raw = self.api.call(http::Method::POST, url, req, &[]).await?;
        ContractSection::from_json(&raw.body).map_err(|e| ApiError::Decode {
            method: http::Method::POST,
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    fn check_section(&self, section: ContractSection, now: i64) -> Result<ContractSection, String> {
        section
            .verify()
            .map_err(|e| format!("activation reply not signed by its contract key: {e}"))?;
        if section.public_key != Some(self.contract_key) {
            return Err(format!(
                "activation reply signed by {}, not by the contract key {}",
                section.public_key.map(|k| k.to_b64()).unwrap_or_default(),
                self.contract_key
            ));
        }
        if section.is_expired(now) {
            return Err(format!(
                "activation reply is already expired (settlement_open {} <= now {now})",
                section.settlement_open
            ));
        }
        Ok(section)
    }

    /// Renews the key shortly before it expires, as long as it is being used. Returns when
    /// `shutdown` fires.
    pub async fn renew_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wait = match self.peek() {
                Some(k) => Duration::from_secs(u64::try_from(k.renew_at() - now()).unwrap_or(0)),
                // Nothing to renew until a key appears (on first use).
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.changed.notified() => continue,
                () = tokio::time::sleep(wait.max(Duration::from_secs(1))) => {}
            }
            let Some(k) = self.peek() else { continue };
            if now() < k.renew_at() {
                continue;
            }
            if !self.used.load(Ordering::Relaxed) {
                // Idle: let it expire; the next stream activates a key on demand.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                continue;
            }
            if !self.on_demand.load(Ordering::Relaxed) {
                continue;
            }
            match self.refresh().await {
                Ok(new) => tracing::info!(
                    settlement_open = new.key.contract.settlement_open,
                    "servicekey renewed before expiry"
                ),
                Err(err) => {
                    tracing::warn!(error = %err, "servicekey renewal failed; retrying in 10 s");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(10)) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        assert_eq!(renew_margin(600), 60);
        assert_eq!(renew_margin(10), 5);
        assert_eq!(renew_margin(86_400), 300);
        let k = ActiveKey {
            key: ServiceKey {
                keypair: Keypair::from_seed([5; 32]),
                contract: ContractSection::new_signed(&Keypair::from_seed([2; 32]), 1600, 1700),
            },
            since: 1000,
        };
        assert_eq!(k.renew_at(), 1540);
    }
}
