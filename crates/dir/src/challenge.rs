//! Proof-of-work challenges the directory can check without remembering them (protocol.md §9).
//!
//! A challenge is `<cost>~<expiry>.<mac>`: `expiry` in unix seconds, `mac` = base64url of
//! HMAC-SHA256 over (cost, expiry, relay public key) under a key derived from the directory's
//! identity seed, so challenges survive a restart and cannot be moved to another relay or
//! given a later expiry or a lower cost. The whole text stays under bcrypt's 72-byte input
//! limit, so every byte of it is hashed by the relay. Solving and checking the bcrypt answer
//! is `wireleap_proto::pow`; this module only issues and authenticates the challenge text.
//!
//! A challenge may be answered more than once until it expires: that only saves the same
//! relay work it already did, and the lifetime is short.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wireleap_proto::b64;
use wireleap_proto::keys::{Keypair, PublicKey};

type HmacSha256 = Hmac<Sha256>;

/// Longest challenge text accepted (bcrypt reads only this many bytes).
pub const MAX_CHALLENGE_LEN: usize = 72;

/// Why a returned challenge is not one this directory issued for this relay, now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// Longer than any challenge we issue.
    #[error("challenge is {0} bytes long, more than {MAX_CHALLENGE_LEN}")]
    TooLong(usize),
    /// Not `<cost>~<expiry>.<mac>`.
    #[error("challenge {0:?} is not of the form <cost>~<expiry>.<mac>")]
    Malformed(String),
    /// Issued with another cost than the one required now.
    #[error("challenge cost {got} differs from the required cost {want}")]
    WrongCost {
        /// Cost required now.
        want: u32,
        /// Cost in the challenge.
        got: u32,
    },
    /// Past its expiry.
    #[error("challenge expired at {expiry} (now {now}); enroll again for a new one")]
    Expired {
        /// Expiry in the challenge.
        expiry: i64,
        /// The current time.
        now: i64,
    },
    /// The MAC does not match: forged, altered, or issued to another relay.
    #[error("challenge was not issued by this directory for this relay")]
    BadMac,
}

/// The parts of a challenge text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedChallenge {
    /// bcrypt cost.
    pub cost: u32,
    /// Expiry, unix seconds.
    pub expiry: i64,
    /// The authentication tag.
    pub mac: [u8; 32],
}

/// Reads a decimal number written canonically (digits only, no leading zero unless "0").
fn canonical_decimal<T: std::str::FromStr + ToString>(text: &str) -> Option<T> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: T = text.parse().ok()?;
    (v.to_string() == text).then_some(v)
}

/// Parses a challenge text strictly: exactly the form [`ChallengeIssuer::issue`] writes.
pub fn parse_challenge(text: &str) -> Result<ParsedChallenge, ChallengeError> {
    if text.len() > MAX_CHALLENGE_LEN {
        return Err(ChallengeError::TooLong(text.len()));
    }
    let malformed = || ChallengeError::Malformed(text.to_string());
    let (cost, rest) = text.split_once('~').ok_or_else(malformed)?;
    let (expiry, mac) = rest.split_once('.').ok_or_else(malformed)?;
    let cost: u32 = canonical_decimal(cost).ok_or_else(malformed)?;
    let expiry: i64 = canonical_decimal(expiry).ok_or_else(malformed)?;
    let mac_bytes: [u8; 32] = b64::decode_array(mac).map_err(|_| malformed())?;
    // The decoder tolerates line breaks and stray trailing bits; only our own encoding counts.
    if b64::encode(mac_bytes) != mac {
        return Err(malformed());
    }
    Ok(ParsedChallenge {
        cost,
        expiry,
        mac: mac_bytes,
    })
}

/// Issues and checks challenges under one key.
#[derive(Clone)]
pub struct ChallengeIssuer {
    /// The 32-byte key zero-padded to SHA-256's block size, which is what HMAC does with
    /// a short key anyway; a block-sized key lets the MAC be built infallibly.
    key: [u8; 64],
    ttl_secs: i64,
}

impl std::fmt::Debug for ChallengeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeIssuer")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl ChallengeIssuer {
    /// An issuer with an explicit MAC key; challenges live `ttl_secs` seconds.
    pub fn new(key: [u8; 32], ttl_secs: i64) -> Self {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key);
        ChallengeIssuer {
            key: block,
            ttl_secs: ttl_secs.max(1),
        }
    }

    /// An issuer whose MAC key is derived from the directory's identity, so challenges stay
    /// valid across a restart without storing a secret of their own.
    pub fn from_identity(identity: &Keypair, ttl_secs: i64) -> Self {
        let mut h = Sha256::new();
        h.update(b"wireleap-dir proof-of-work challenge key v1\0");
        h.update(identity.seed());
        Self::new(h.finalize().into(), ttl_secs)
    }

    fn mac(&self, cost: u32, expiry: i64, relay: &PublicKey) -> HmacSha256 {
        let mut m = <HmacSha256 as hmac::digest::KeyInit>::new(&self.key.into());
        m.update(&cost.to_be_bytes());
        m.update(&expiry.to_be_bytes());
        m.update(&relay.0);
        m
    }

    /// A challenge for `relay` at `cost`, valid until `now + ttl`.
    pub fn issue(&self, cost: u32, relay: &PublicKey, now: i64) -> String {
        let expiry = now.saturating_add(self.ttl_secs);
        let tag = self.mac(cost, expiry, relay).finalize().into_bytes();
        format!("{cost}~{expiry}.{}", b64::encode(tag))
    }

    /// Whether `challenge` was issued by us for `relay` at the required `cost` and has not
    /// expired at `now`.
    pub fn check(
        &self,
        challenge: &str,
        relay: &PublicKey,
        cost: u32,
        now: i64,
    ) -> Result<(), ChallengeError> {
        let p = parse_challenge(challenge)?;
        self.mac(p.cost, p.expiry, relay)
            .verify_slice(&p.mac)
            .map_err(|_| ChallengeError::BadMac)?;
        if p.cost != cost {
            return Err(ChallengeError::WrongCost {
                want: cost,
                got: p.cost,
            });
        }
        if now > p.expiry {
            return Err(ChallengeError::Expired {
                expiry: p.expiry,
                now,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wireleap_proto::pow;

    const NOW: i64 = 1_700_000_000;

    fn issuer() -> ChallengeIssuer {
        ChallengeIssuer::from_identity(&Keypair::from_seed([3; 32]), 300)
    }

    #[test]
    fn issued_challenge_checks_and_fits_bcrypt() {
        let relay = PublicKey([1; 32]);
        let c = issuer().issue(4, &relay, NOW);
        assert!(c.starts_with("4~1700000300."), "{c}");
        assert!(c.len() <= MAX_CHALLENGE_LEN);
        assert_eq!(pow::parse_cost(&c), Ok(4));
        assert_eq!(issuer().check(&c, &relay, 4, NOW), Ok(()));
        assert_eq!(issuer().check(&c, &relay, 4, NOW + 300), Ok(()));
        assert_eq!(
            issuer().check(&c, &relay, 4, NOW + 301),
            Err(ChallengeError::Expired {
                expiry: NOW + 300,
                now: NOW + 301
            })
        );
        assert_eq!(
            issuer().check(&c, &PublicKey([2; 32]), 4, NOW),
            Err(ChallengeError::BadMac)
        );
        assert_eq!(
            issuer().check(&c, &relay, 5, NOW),
            Err(ChallengeError::WrongCost { want: 5, got: 4 })
        );
        let other = ChallengeIssuer::from_identity(&Keypair::from_seed([4; 32]), 300);
        assert_eq!(other.check(&c, &relay, 4, NOW), Err(ChallengeError::BadMac));
        // Largest cost and a far expiry still fit in bcrypt's 72 bytes.
        let big = ChallengeIssuer::new([0; 32], i64::MAX).issue(31, &relay, i64::MAX);
        assert!(big.len() <= MAX_CHALLENGE_LEN, "{}", big.len());
    }

    #[test]
    fn altered_challenges_are_refused() {
        let relay = PublicKey([1; 32]);
        let c = issuer().issue(4, &relay, NOW);
        let later = c.replacen("1700000300", "1700009999", 1);
        assert_eq!(
            issuer().check(&later, &relay, 4, NOW),
            Err(ChallengeError::BadMac)
        );
        let cheaper = c.replacen("4~", "04~", 1);
        assert!(matches!(
            issuer().check(&cheaper, &relay, 4, NOW),
            Err(ChallengeError::Malformed(_))
        ));
        for bad in [
            "",
            "4",
            "4~",
            "4~1.",
            "~1.x",
            "4~x.AAAA",
            "+4~1.AAAA",
            &format!("{c}\n"),
        ] {
            assert!(parse_challenge(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,100}") {
            let _ = parse_challenge(&s);
        }

        #[test]
        fn issue_then_parse_round_trips(cost in 4u32..=31, now in 0i64..4_000_000_000, key in any::<[u8; 32]>()) {
            let relay = PublicKey(key);
            let iss = issuer();
            let c = iss.issue(cost, &relay, now);
            let p = parse_challenge(&c).unwrap();
            prop_assert_eq!(p.cost, cost);
            prop_assert_eq!(p.expiry, now + 300);
            prop_assert!(iss.check(&c, &relay, cost, now).is_ok());
        }

        #[test]
        fn any_single_byte_change_is_refused(pos in 0usize..56, byte in any::<u8>()) {
            let relay = PublicKey([9; 32]);
            let iss = issuer();
            let c = iss.issue(4, &relay, NOW);
            let mut b = c.clone().into_bytes();
            let i = pos % b.len();
            prop_assume!(b[i] != byte);
            b[i] = byte;
            if let Ok(s) = String::from_utf8(b) {
                prop_assert!(iss.check(&s, &relay, 4, NOW).is_err());
            }
        }
    }
}
