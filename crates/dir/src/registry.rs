//! The in-memory view of enrolled relays: who is live, their last heartbeat, the heartbeat
//! times not yet written to the database, and the signed relay lists built from them.
//!
//! This is what makes a heartbeat cheap: checking that an already enrolled relay sent the
//! same entry again and bumping its timestamp is a hash-map lookup under a short lock. The
//! database stays the durable record (enrollments are written before they are answered);
//! timestamps reach it in batches through [`Registry::take_dirty`].
//!
//! Expiry is applied whenever the registry is read: a relay whose last heartbeat is older than
//! the TTL is dropped before anything is counted or listed, so a stale relay never shows even
//! if the periodic purge has not run yet.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use wireleap_proto::keys::PublicKey;
use wireleap_proto::relayentry::{RelayEntry, Role};
use wireleap_proto::relaylist::RelayList;

/// What identifies a request already verified for a relay: SHA-256 of its signature and
/// body bytes. ed25519 verification is deterministic, so the same (key, signature, body)
/// verifies again; a heartbeat repeating the bytes of one we checked skips the check.
pub type Proof = [u8; 32];

/// The [`Proof`] of a signature and body.
pub fn proof_of(signature: &[u8; 64], body: &[u8]) -> Proof {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(signature);
    h.update(body);
    h.finalize().into()
}

/// One live relay.
#[derive(Debug)]
struct Live {
    entry: Arc<RelayEntry>,
    /// The last request from this relay whose signature was verified.
    proof: Option<Proof>,
    last_seen: i64,
    /// `last_seen` changed since the last [`Registry::take_dirty`].
    dirty: bool,
}

impl Live {
    /// A relay as the database holds it, seen at `last_seen`: no verified request yet, nothing
    /// to flush.
    fn stored(entry: RelayEntry, last_seen: i64) -> Self {
        Live {
            entry: Arc::new(entry),
            proof: None,
            last_seen,
            dirty: false,
        }
    }
}

/// A signed relay list ready to send.
#[derive(Debug, Clone)]
pub struct SignedList {
    /// The exact body (signed).
    pub body: Bytes,
    /// `Wireleap-Directory-Pubkey` and `-Signature`.
    pub headers: Vec<(&'static str, String)>,
    /// Relays in it.
    pub count: usize,
}

#[derive(Debug, Default)]
struct Inner {
    relays: HashMap<PublicKey, Live>,
    dirty: Vec<PublicKey>,
    /// Bumped whenever the set of listed relays or their entries change.
    generation: u64,
    /// No relay's last heartbeat is older than this (a lower bound, so expiry scans can be
    /// skipped until it is itself expired).
    min_last_seen: i64,
    /// Cached lists: index 0 = all roles, then one per role.
    lists: [Option<(u64, Arc<SignedList>)>; 4],
}

impl Inner {
    /// Sets `min_last_seen` to the oldest relay's last heartbeat (`i64::MAX` with none).
    fn recompute_min_last_seen(&mut self) {
        self.min_last_seen = self
            .relays
            .values()
            .map(|l| l.last_seen)
            .min()
            .unwrap_or(i64::MAX);
    }
}

/// The live relays of one directory. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

fn list_slot(role: Option<Role>) -> usize {
    match role {
        None => 0,
        Some(Role::Fronting) => 1,
        Some(Role::Entropic) => 2,
        Some(Role::Backing) => 3,
    }
}

/// The entry as published: what clients need, without the enrollment key or channel.
pub fn published(entry: &RelayEntry) -> RelayEntry {
    RelayEntry {
        role: entry.role,
        address: entry.address.clone(),
        pubkey: entry.pubkey,
        versions: entry.versions.clone(),
        ..RelayEntry::default()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is
        // a single insert/remove/assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the registry agree with the database: at start, and after another process
    /// served it (a successor rolled back during its watch window). Relays the database holds
    /// are taken from it (the newer `last_seen` wins, a verified proof of an unchanged
    /// entry is kept), relays it no longer holds are dropped. Dirty heartbeats must have
    /// been flushed first. Returns how many relays were added and dropped.
    pub fn resync(&self, relays: impl IntoIterator<Item = (RelayEntry, i64)>) -> (usize, usize) {
        let mut g = self.lock();
        let mut old = std::mem::take(&mut g.relays);
        let mut added = 0;
        for (entry, stored_seen) in relays {
            let Some(pk) = entry.pubkey else { continue };
            let live = match old.remove(&pk) {
                Some(mut l) => {
                    if *l.entry != entry {
                        l.entry = Arc::new(entry);
                        l.proof = None;
                    }
                    l.last_seen = l.last_seen.max(stored_seen);
                    l
                }
                None => {
                    added += 1;
                    Live::stored(entry, stored_seen)
                }
            };
            g.relays.insert(pk, live);
        }
        let dropped = old.len();
        g.recompute_min_last_seen();
        g.generation += 1;
        (added, dropped)
    }

    /// A heartbeat: if `pubkey` is live at `now` and enrolled with exactly `entry`, its
    /// timestamp moves to `now`, `proof` is remembered for [`Registry::heartbeat_seen`], and
    /// `true` is returned. Otherwise nothing changes and the caller must treat the request
    /// as an enrollment.
    pub fn heartbeat(
        &self,
        pubkey: &PublicKey,
        entry: &RelayEntry,
        proof: Option<Proof>,
        now: i64,
        ttl: i64,
    ) -> bool {
        let mut g = self.lock();
        let Inner { relays, dirty, .. } = &mut *g;
        let Some(live) = relays.get_mut(pubkey) else {
            return false;
        };
        if now.saturating_sub(live.last_seen) > ttl || *live.entry != *entry {
            return false;
        }
        if proof.is_some() {
            live.proof = proof;
        }
        Self::bump(live, dirty, pubkey, now);
        true
    }

    /// A heartbeat repeating the exact bytes of a verified one: if `pubkey` is live and its
    /// last verified request has this `proof`, its timestamp moves to `now` and its entry is
    /// returned; otherwise `None` and the request takes the full path.
    pub fn heartbeat_seen(
        &self,
        pubkey: &PublicKey,
        proof: &Proof,
        now: i64,
        ttl: i64,
    ) -> Option<Arc<RelayEntry>> {
        let mut g = self.lock();
        let Inner { relays, dirty, .. } = &mut *g;
        let live = relays.get_mut(pubkey)?;
        if now.saturating_sub(live.last_seen) > ttl || live.proof.as_ref() != Some(proof) {
            return None;
        }
        Self::bump(live, dirty, pubkey, now);
        Some(live.entry.clone())
    }

    fn bump(live: &mut Live, dirty: &mut Vec<PublicKey>, pubkey: &PublicKey, now: i64) {
        if now > live.last_seen {
            live.last_seen = now;
            if !live.dirty {
                live.dirty = true;
                dirty.push(*pubkey);
            }
        }
    }

    /// Whether `pubkey` is enrolled and live at `now`.
    pub fn is_live(&self, pubkey: &PublicKey, now: i64, ttl: i64) -> bool {
        self.lock()
            .relays
            .get(pubkey)
            .is_some_and(|l| now.saturating_sub(l.last_seen) <= ttl)
    }

    /// The live relay other than `except` enrolled with the same address, if any.
    pub fn address_holder(
        &self,
        entry: &RelayEntry,
        except: &PublicKey,
        now: i64,
        ttl: i64,
    ) -> Option<PublicKey> {
        let g = self.lock();
        g.relays
            .iter()
            .find(|(pk, l)| {
                *pk != except
                    && now.saturating_sub(l.last_seen) <= ttl
                    && l.entry.address == entry.address
            })
            .map(|(pk, _)| *pk)
    }

    /// Lists `entry` as enrolled at `now` (replacing the relay's previous entry), with the
    /// proof of the verified request that enrolled it.
    pub fn insert(&self, entry: RelayEntry, proof: Option<Proof>, now: i64) {
        let Some(pk) = entry.pubkey else { return };
        let mut g = self.lock();
        g.relays.insert(
            pk,
            Live {
                entry: Arc::new(entry),
                proof,
                last_seen: now,
                // The enrollment itself wrote this timestamp to the database.
                dirty: false,
            },
        );
        g.min_last_seen = g.min_last_seen.min(now);
        g.generation += 1;
    }

    /// Removes a relay; `true` if it was there.
    pub fn remove(&self, pubkey: &PublicKey) -> bool {
        let mut g = self.lock();
        let removed = g.relays.remove(pubkey).is_some();
        if removed {
            g.generation += 1;
        }
        removed
    }

    fn expire_locked(g: &mut Inner, now: i64, ttl: i64) -> Vec<PublicKey> {
        if now.saturating_sub(g.min_last_seen) <= ttl {
            return Vec::new();
        }
        let gone: Vec<PublicKey> = g
            .relays
            .iter()
            .filter(|(_, l)| now.saturating_sub(l.last_seen) > ttl)
            .map(|(pk, _)| *pk)
            .collect();
        for pk in &gone {
            g.relays.remove(pk);
        }
        if !gone.is_empty() {
            g.generation += 1;
        }
        g.recompute_min_last_seen();
        gone
    }

    /// Drops every relay whose last heartbeat is older than `ttl` at `now`; returns them.
    pub fn expire(&self, now: i64, ttl: i64) -> Vec<PublicKey> {
        Self::expire_locked(&mut self.lock(), now, ttl)
    }

    /// Live relays per role (fronting, entropic, backing) at `now`.
    pub fn counts(&self, now: i64, ttl: i64) -> [u64; 3] {
        let mut g = self.lock();
        Self::expire_locked(&mut g, now, ttl);
        let mut out = [0u64; 3];
        for l in g.relays.values() {
            if let Some(role) = l.entry.role {
                out[list_slot(Some(role)) - 1] += 1;
            }
        }
        out
    }

    /// Live relays in total (no expiry applied).
    pub fn len(&self) -> usize {
        self.lock().relays.len()
    }

    /// Whether no relay is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The heartbeat times changed since the last call, to be written to the database.
    pub fn take_dirty(&self) -> Vec<(PublicKey, i64)> {
        let mut g = self.lock();
        let Inner { relays, dirty, .. } = &mut *g;
        let mut out = Vec::with_capacity(dirty.len());
        for pk in dirty.drain(..) {
            if let Some(l) = relays.get_mut(&pk) {
                l.dirty = false;
                out.push((pk, l.last_seen));
            }
        }
        out
    }

    /// Puts back heartbeat times whose write failed, so the next flush retries them.
    pub fn requeue(&self, beats: &[(PublicKey, i64)]) {
        let mut g = self.lock();
        let Inner { relays, dirty, .. } = &mut *g;
        for (pk, _) in beats {
            if let Some(l) = relays.get_mut(pk) {
                if !l.dirty {
                    l.dirty = true;
                    dirty.push(*pk);
                }
            }
        }
    }

    /// The signed list of live relays (of `role`, or all), built with `sign` only when the
    /// listed set changed since the last call.
    pub fn list(
        &self,
        role: Option<Role>,
        now: i64,
        ttl: i64,
        sign: impl FnOnce(&RelayList) -> (Vec<u8>, Vec<(&'static str, String)>),
    ) -> Arc<SignedList> {
        let slot = list_slot(role);
        let (generation, entries) = {
            let mut g = self.lock();
            Self::expire_locked(&mut g, now, ttl);
            if let Some((gen, list)) = &g.lists[slot] {
                if *gen == g.generation {
                    return list.clone();
                }
            }
            let entries: Vec<Arc<RelayEntry>> = g
                .relays
                .values()
                .filter(|l| role.is_none() || l.entry.role == role)
                .map(|l| l.entry.clone())
                .collect();
            (g.generation, entries)
        };
        // Encoding and signing happen outside the lock so heartbeats are not held up.
        let mut list = RelayList::default();
        for e in &entries {
            list.insert(published(e));
        }
        let count = list.relays.len();
        let (body, headers) = sign(&list);
        let signed = Arc::new(SignedList {
            body: Bytes::from(body),
            headers,
            count,
        });
        let mut g = self.lock();
        if g.generation == generation {
            g.lists[slot] = Some((generation, signed.clone()));
        }
        signed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use wireleap_proto::address::Address;
    use wireleap_proto::keys::Keypair;

    fn entry(seed: u8, role: Role, port: u16) -> RelayEntry {
        RelayEntry::new(
            role,
            Address::parse(&format!("wireleap://127.0.0.1:{port}")).unwrap(),
            Keypair::from_seed([seed; 32]).public(),
            semver::Version::new(0, 6, 1),
        )
    }

    fn sign_count(
        calls: &std::cell::Cell<u32>,
    ) -> impl FnOnce(&RelayList) -> (Vec<u8>, Vec<(&'static str, String)>) + '_ {
        move |l| {
            calls.set(calls.get() + 1);
            (l.to_body(), Vec::new())
        }
    }

    #[test]
    fn resync_adopts_the_database_and_keeps_newer_heartbeats() {
        let r = Registry::new();
        let a = entry(1, Role::Fronting, 1);
        let b = entry(2, Role::Backing, 2);
        let c = entry(3, Role::Entropic, 3);
        r.insert(a.clone(), Some(proof_of(&[1; 64], b"a")), 10);
        r.insert(b.clone(), None, 10);
        assert!(r.heartbeat(&a.pubkey.unwrap(), &a, None, 40, 30));
        // The database: a with an older beat, c new, b gone; a's entry unchanged.
        let (added, dropped) = r.resync([(a.clone(), 20), (c.clone(), 35)]);
        assert_eq!((added, dropped), (1, 1));
        assert_eq!(r.len(), 2);
        assert!(
            r.is_live(&a.pubkey.unwrap(), 70, 30),
            "a keeps its newer beat (40)"
        );
        assert!(!r.is_live(&b.pubkey.unwrap(), 41, 30));
        assert!(r.is_live(&c.pubkey.unwrap(), 65, 30));
        assert!(!r.is_live(&c.pubkey.unwrap(), 66, 30));
        let p = proof_of(&[1; 64], b"a");
        assert!(
            r.heartbeat_seen(&a.pubkey.unwrap(), &p, 41, 30).is_some(),
            "proof kept"
        );
        // A changed entry replaces the old one and forgets its proof.
        let mut moved = a.clone();
        moved.address = Some(Address::parse("wireleap://127.0.0.1:9").unwrap());
        r.resync([(moved, 41), (c, 35)]);
        assert!(r.heartbeat_seen(&a.pubkey.unwrap(), &p, 42, 30).is_none());
    }

    #[test]
    fn heartbeat_only_for_the_same_live_entry() {
        let r = Registry::new();
        let a = entry(1, Role::Fronting, 1);
        let pk = a.pubkey.unwrap();
        assert!(!r.heartbeat(&pk, &a, None, 10, 30));
        r.insert(a.clone(), None, 10);
        assert!(r.heartbeat(&pk, &a, None, 20, 30));
        let mut moved = a.clone();
        moved.address = Some(Address::parse("wireleap://127.0.0.1:2").unwrap());
        assert!(!r.heartbeat(&pk, &moved, None, 21, 30));
        // 20 + 30 = 50 is the last second it counts as live.
        assert!(r.heartbeat(&pk, &a, None, 50, 30));
        assert!(!r.heartbeat(&pk, &a, None, 81, 30));
        assert_eq!(r.take_dirty(), vec![(pk, 50)]);
        assert_eq!(r.take_dirty(), vec![]);
    }

    #[test]
    fn seen_heartbeats_need_the_same_verified_bytes() {
        let r = Registry::new();
        let a = entry(1, Role::Fronting, 1);
        let pk = a.pubkey.unwrap();
        let p1 = proof_of(&[1; 64], b"body");
        let p2 = proof_of(&[1; 64], b"bodz");
        assert_ne!(p1, p2);
        assert!(r.heartbeat_seen(&pk, &p1, 10, 30).is_none());
        r.insert(a.clone(), Some(p1), 10);
        assert_eq!(r.heartbeat_seen(&pk, &p1, 11, 30).as_deref(), Some(&a));
        assert!(r.heartbeat_seen(&pk, &p2, 12, 30).is_none());
        assert!(r.heartbeat_seen(&PublicKey([0; 32]), &p1, 12, 30).is_none());
        // A verified heartbeat with other bytes (same entry) replaces the proof.
        assert!(r.heartbeat(&pk, &a, Some(p2), 12, 30));
        assert!(r.heartbeat_seen(&pk, &p1, 13, 30).is_none());
        assert!(r.heartbeat_seen(&pk, &p2, 13, 30).is_some());
        // Expired relays get nothing.
        assert!(r.heartbeat_seen(&pk, &p2, 44, 30).is_none());
        assert_eq!(r.take_dirty(), vec![(pk, 13)]);
    }

    #[test]
    fn expiry_hides_relays_from_counts_and_lists() {
        let r = Registry::new();
        r.insert(entry(1, Role::Fronting, 1), None, 100);
        r.insert(entry(2, Role::Backing, 2), None, 110);
        assert_eq!(r.counts(120, 30), [1, 0, 1]);
        let calls = std::cell::Cell::new(0);
        assert_eq!(r.list(None, 120, 30, sign_count(&calls)).count, 2);
        // Unchanged set: served from the cache.
        assert_eq!(r.list(None, 125, 30, sign_count(&calls)).count, 2);
        assert_eq!(calls.get(), 1);
        assert_eq!(
            r.list(Some(Role::Backing), 125, 30, sign_count(&calls))
                .count,
            1
        );
        assert_eq!(calls.get(), 2);
        // At 131 the first relay is 31 s old: gone, and the list is rebuilt.
        assert_eq!(r.list(None, 131, 30, sign_count(&calls)).count, 1);
        assert_eq!(calls.get(), 3);
        assert_eq!(r.counts(131, 30), [0, 0, 1]);
        assert_eq!(r.expire(200, 30).len(), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn published_entries_drop_secrets() {
        let mut e = entry(1, Role::Backing, 1);
        e.key = Some("secret".into());
        e.upgrade_channel = Some("beta".into());
        let p = published(&e);
        assert_eq!(p.key, None);
        assert_eq!(p.upgrade_channel, None);
        assert_eq!(p.pubkey, e.pubkey);
        let r = Registry::new();
        r.insert(e, None, 1);
        let l = r.list(None, 1, 30, |l| (l.to_body(), Vec::new()));
        assert!(!String::from_utf8_lossy(&l.body).contains("secret"));
    }

    #[test]
    fn address_conflicts_and_requeue() {
        let r = Registry::new();
        let a = entry(1, Role::Fronting, 7);
        let b = entry(2, Role::Fronting, 7);
        r.insert(a.clone(), None, 1);
        assert_eq!(r.address_holder(&b, &b.pubkey.unwrap(), 2, 30), a.pubkey);
        assert_eq!(r.address_holder(&a, &a.pubkey.unwrap(), 2, 30), None);
        assert_eq!(r.address_holder(&b, &b.pubkey.unwrap(), 40, 30), None);
        let pk = a.pubkey.unwrap();
        assert!(r.heartbeat(&pk, &a, None, 5, 30));
        let d = r.take_dirty();
        r.requeue(&d);
        assert_eq!(r.take_dirty(), d);
        assert!(r.remove(&pk));
        assert!(!r.remove(&pk));
    }
}
