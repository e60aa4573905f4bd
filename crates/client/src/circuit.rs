//! Choosing a circuit from the relay list (client.md §5.2–§5.3, services.md §1.1).
//!
//! Shapes: 1 hop = one backing relay; 2 = fronting, backing; n ≥ 3 = fronting, n − 2
//! distinct entropic, backing. Relays whose `client-relay` interface minor differs from ours
//! are skipped. Whitelist (seed note): `None` = any relay, `Some([])` = no relay (an error
//! saying so, not "any"), a list = only the listed addresses; listed relays the directory
//! does not know are reported as warnings, not failures. Randomness comes from the caller's
//! RNG (the daemon passes a CSPRNG). Dialing the chosen relays is `dialer`'s job.

use rand::seq::SliceRandom as _;
use rand::Rng;
use std::collections::BTreeSet;
use wireleap_proto::address::Address;
use wireleap_proto::keys::PublicKey;
use wireleap_proto::relayentry::{RelayEntry, Role};
use wireleap_proto::relaylist::RelayList;

/// One relay of a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Its role.
    pub role: Role,
    /// Where to reach it (`wireleap://host:port[/path]`).
    pub address: Address,
    /// Its key: the TLS certificate is pinned to it and its sharetokens name it.
    pub pubkey: PublicKey,
}

/// A chosen circuit, client → target order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The relays, first hop first.
    pub hops: Vec<Hop>,
    /// Whitelisted addresses the directory does not list (warn about them).
    pub missing_whitelisted: Vec<String>,
}

/// Why no circuit could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CircuitError {
    /// `hops` is 0.
    #[error("circuit.hops must be at least 1")]
    NoHops,
    /// `circuit.whitelist` is `[]`.
    #[error("circuit.whitelist is empty, which allows no relay; set it to null to allow any relay, or list relay addresses")]
    EmptyWhitelist,
    /// Fewer usable relays than hops.
    #[error("not enough relays: need {needed} hops, have {have} suitable relays{}", suffix(*.whitelisted))]
    NotEnoughRelays {
        /// Hops asked for.
        needed: usize,
        /// Relays left after whitelist and version filtering.
        have: usize,
        /// Whether a whitelist restricted the choice.
        whitelisted: bool,
    },
    /// No relay of a role the shape needs.
    #[error("no {role} relays available{}", suffix(*.whitelisted))]
    NoRelays {
        /// The missing role.
        role: Role,
        /// Whether a whitelist restricted the choice.
        whitelisted: bool,
    },
    /// Too few entropic relays for the middle of the circuit.
    #[error("not enough entropic relays: need {needed} for {hops} hops, have {have}{}", suffix(*.whitelisted))]
    NotEnoughEntropic {
        /// Entropic relays needed.
        needed: usize,
        /// Hops asked for.
        hops: usize,
        /// Entropic relays available.
        have: usize,
        /// Whether a whitelist restricted the choice.
        whitelisted: bool,
    },
}

fn suffix(whitelisted: bool) -> &'static str {
    if whitelisted {
        " (circuit.whitelist is set)"
    } else {
        ""
    }
}

/// The roles of a circuit of `hops` relays, client side first.
pub fn shape(hops: usize) -> Vec<Role> {
    match hops {
        0 => Vec::new(),
        1 => vec![Role::Backing],
        n => {
            let mut roles = vec![Role::Fronting];
            roles.extend(std::iter::repeat_n(Role::Entropic, n - 2));
            roles.push(Role::Backing);
            roles
        }
    }
}

/// A relay as a hop, if the entry has everything a hop needs.
fn as_hop(entry: &RelayEntry) -> Option<Hop> {
    Some(Hop {
        role: entry.role?,
        address: entry.address.clone()?,
        pubkey: entry.pubkey?,
    })
}

/// Whether the relay stored under `key` is allowed by the whitelist.
fn whitelisted(list: &[String], key: &str, entry: &RelayEntry) -> bool {
    list.iter()
        .any(|w| w == key || entry.address.as_ref().is_some_and(|a| a.as_str() == w))
}

/// The candidates: whitelist applied, incompatible relays dropped. Also returns the
/// whitelisted addresses the list does not contain.
fn candidates(
    relays: &RelayList,
    whitelist: Option<&[String]>,
) -> Result<(Vec<Hop>, Vec<String>), CircuitError> {
    let mut missing = Vec::new();
    if let Some(list) = whitelist {
        if list.is_empty() {
            return Err(CircuitError::EmptyWhitelist);
        }
        let known: BTreeSet<&str> = relays
            .relays
            .iter()
            .flat_map(|(k, e)| {
                std::iter::once(k.as_str()).chain(e.address.as_ref().map(|a| a.as_str()))
            })
            .collect();
        missing = list
            .iter()
            .filter(|w| !known.contains(w.as_str()))
            .cloned()
            .collect();
    }
    let hops = relays
        .relays
        .iter()
        .filter(|(k, e)| whitelist.is_none_or(|list| whitelisted(list, k, e)))
        .filter(|(_, e)| e.versions.client_relay_compatible())
        .filter_map(|(_, e)| as_hop(e))
        .collect();
    Ok((hops, missing))
}

/// Chooses a circuit of `hops` relays.
pub fn choose<R: Rng + ?Sized>(
    relays: &RelayList,
    hops: usize,
    whitelist: Option<&[String]>,
    rng: &mut R,
) -> Result<Choice, CircuitError> {
    if hops == 0 {
        return Err(CircuitError::NoHops);
    }
    let (cands, missing) = candidates(relays, whitelist)?;
    let restricted = whitelist.is_some();
    if cands.len() < hops {
        return Err(CircuitError::NotEnoughRelays {
            needed: hops,
            have: cands.len(),
            whitelisted: restricted,
        });
    }
    let of = |role: Role| cands.iter().filter(|h| h.role == role).collect::<Vec<_>>();
    let backing = of(Role::Backing);
    let Some(exit) = backing.choose(rng) else {
        return Err(CircuitError::NoRelays {
            role: Role::Backing,
            whitelisted: restricted,
        });
    };
    let mut chosen = Vec::with_capacity(hops);
    if hops >= 2 {
        let fronting = of(Role::Fronting);
        let Some(entry) = fronting.choose(rng) else {
            return Err(CircuitError::NoRelays {
                role: Role::Fronting,
                whitelisted: restricted,
            });
        };
        chosen.push((*entry).clone());
        let needed = hops - 2;
        if needed > 0 {
            let mut entropic = of(Role::Entropic);
            if entropic.len() < needed {
                return Err(CircuitError::NotEnoughEntropic {
                    needed,
                    hops,
                    have: entropic.len(),
                    whitelisted: restricted,
                });
            }
            entropic.shuffle(rng);
            chosen.extend(entropic.into_iter().take(needed).cloned());
        }
    }
    chosen.push((*exit).clone());
    Ok(Choice {
        hops: chosen,
        missing_whitelisted: missing,
    })
}

/// Whether each relay could be part of a circuit of `hops` under `whitelist` (for status).
pub fn selectable(
    relays: &RelayList,
    hops: usize,
    whitelist: Option<&[String]>,
) -> Vec<(String, bool)> {
    let roles: BTreeSet<Role> = shape(hops).into_iter().collect();
    relays
        .relays
        .iter()
        .map(|(k, e)| {
            let ok = e.versions.client_relay_compatible()
                && e.role.is_some_and(|r| roles.contains(&r))
                && whitelist.is_none_or(|list| whitelisted(list, k, e))
                && as_hop(e).is_some();
            (k.clone(), ok)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng as _;
    use wireleap_proto::keys::Keypair;

    fn relay(n: u8, role: Role) -> RelayEntry {
        RelayEntry::new(
            role,
            Address::parse(&format!(
                "wireleap://relay{n}.example:{}",
                13000 + u16::from(n)
            ))
            .unwrap(),
            Keypair::from_seed([n; 32]).public(),
            semver::Version::new(0, 6, 1),
        )
    }

    fn list(entries: &[(u8, Role)]) -> RelayList {
        let mut l = RelayList::default();
        for (n, role) in entries {
            assert!(l.insert(relay(*n, *role)));
        }
        l
    }

    fn addr(n: u8) -> String {
        format!("wireleap://relay{n}.example:{}", 13000 + u16::from(n))
    }

    fn network() -> RelayList {
        list(&[
            (1, Role::Fronting),
            (2, Role::Fronting),
            (3, Role::Entropic),
            (4, Role::Entropic),
            (5, Role::Entropic),
            (6, Role::Backing),
            (7, Role::Backing),
        ])
    }

    #[test]
    fn shapes_by_hop_count() {
        assert_eq!(shape(1), [Role::Backing]);
        assert_eq!(shape(2), [Role::Fronting, Role::Backing]);
        assert_eq!(shape(3), [Role::Fronting, Role::Entropic, Role::Backing]);
        assert_eq!(
            shape(5),
            [
                Role::Fronting,
                Role::Entropic,
                Role::Entropic,
                Role::Entropic,
                Role::Backing
            ]
        );
        let net = network();
        let mut rng = StdRng::seed_from_u64(7);
        for hops in 1..=5 {
            for _ in 0..50 {
                let c = choose(&net, hops, None, &mut rng).unwrap();
                let roles: Vec<_> = c.hops.iter().map(|h| h.role).collect();
                assert_eq!(roles, shape(hops));
                let distinct: BTreeSet<_> = c.hops.iter().map(|h| h.pubkey).collect();
                assert_eq!(distinct.len(), hops, "relays repeat: {c:?}");
            }
        }
    }

    #[test]
    fn choice_is_random_over_candidates() {
        let net = network();
        let mut rng = StdRng::seed_from_u64(1);
        let mut exits = BTreeSet::new();
        let mut middles = BTreeSet::new();
        for _ in 0..200 {
            let c = choose(&net, 3, None, &mut rng).unwrap();
            exits.insert(c.hops[2].address.to_string());
            middles.insert(c.hops[1].address.to_string());
        }
        assert_eq!(exits.len(), 2);
        assert_eq!(middles.len(), 3);
    }

    #[test]
    fn whitelist_semantics() {
        let net = network();
        let mut rng = StdRng::seed_from_u64(3);
        // null: any relay.
        assert!(choose(&net, 1, None, &mut rng).is_ok());
        // []: no relay, with a clear error.
        let e = choose(&net, 1, Some(&[]), &mut rng).unwrap_err();
        assert_eq!(e, CircuitError::EmptyWhitelist);
        assert!(e.to_string().contains("null"), "{e}");
        // A list: only those; missing ones are reported, not fatal.
        let wl = vec![addr(7), "wireleap://gone.example:1".to_string()];
        for _ in 0..20 {
            let c = choose(&net, 1, Some(&wl), &mut rng).unwrap();
            assert_eq!(c.hops[0].address.to_string(), addr(7));
            assert_eq!(c.missing_whitelisted, ["wireleap://gone.example:1"]);
        }
        // Restricting away a needed role names the whitelist.
        let e = choose(&net, 2, Some(&[addr(6), addr(7)]), &mut rng).unwrap_err();
        assert_eq!(
            e,
            CircuitError::NoRelays {
                role: Role::Fronting,
                whitelisted: true
            }
        );
        assert!(e.to_string().contains("whitelist"), "{e}");
        // Only missing relays: nothing to choose from.
        let e = choose(
            &net,
            1,
            Some(&["wireleap://gone.example:1".into()]),
            &mut rng,
        )
        .unwrap_err();
        assert!(
            matches!(e, CircuitError::NotEnoughRelays { have: 0, .. }),
            "{e:?}"
        );
        // An exact circuit.
        let exact = vec![addr(2), addr(4), addr(6)];
        let c = choose(&net, 3, Some(&exact), &mut rng).unwrap();
        let got: Vec<_> = c.hops.iter().map(|h| h.address.to_string()).collect();
        assert_eq!(got, exact);
    }

    #[test]
    fn errors_for_missing_roles_and_counts() {
        let mut rng = StdRng::seed_from_u64(5);
        let only_fronting = list(&[(1, Role::Fronting), (2, Role::Fronting)]);
        assert_eq!(
            choose(&only_fronting, 1, None, &mut rng).unwrap_err(),
            CircuitError::NoRelays {
                role: Role::Backing,
                whitelisted: false
            }
        );
        let small = list(&[(1, Role::Fronting), (3, Role::Entropic), (6, Role::Backing)]);
        assert!(matches!(
            choose(&small, 4, None, &mut rng).unwrap_err(),
            CircuitError::NotEnoughRelays {
                needed: 4,
                have: 3,
                ..
            }
        ));
        let no_entropic = list(&[(1, Role::Fronting), (2, Role::Fronting), (6, Role::Backing)]);
        assert_eq!(
            choose(&no_entropic, 3, None, &mut rng).unwrap_err(),
            CircuitError::NotEnoughEntropic {
                needed: 1,
                hops: 3,
                have: 0,
                whitelisted: false
            }
        );
        assert_eq!(
            choose(&small, 0, None, &mut rng).unwrap_err(),
            CircuitError::NoHops
        );
    }

    #[test]
    fn incompatible_relays_are_skipped() {
        let mut old = relay(6, Role::Backing);
        old.versions.client_relay = Some(semver::Version::new(0, 1, 0));
        let mut none = relay(7, Role::Backing);
        none.versions.client_relay = None;
        let mut l = RelayList::default();
        l.insert(old);
        l.insert(none);
        let mut rng = StdRng::seed_from_u64(5);
        assert!(matches!(
            choose(&l, 1, None, &mut rng).unwrap_err(),
            CircuitError::NotEnoughRelays { have: 0, .. }
        ));
        l.insert(relay(8, Role::Backing));
        let c = choose(&l, 1, None, &mut rng).unwrap();
        assert_eq!(c.hops[0].address.to_string(), addr(8));
        let sel: Vec<bool> = selectable(&l, 1, None)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(sel, [false, false, true]);
    }
}
