//! The directory's bcrypt proof of work (protocol.md §9).
//!
//! The challenge is `<cost>~<opaque>`; the answer is a `$2a$` bcrypt hash of the *whole*
//! challenge text at that cost with a random salt. Cost parsing copies the original relay
//! (decimal before the first `~`, sign allowed, no spaces; below 4 becomes 10; above 31 is an
//! error); verification copies Go's bcrypt compare (any `$2?$` prefix; only the first 72 bytes
//! of the challenge count). Issuing and remembering challenges is the directory crate's job.

use rand_core::{OsRng, RngCore};

/// Smallest bcrypt cost; lower requested costs are replaced by [`DEFAULT_COST`].
pub const MIN_COST: u32 = 4;
/// Largest bcrypt cost.
pub const MAX_COST: u32 = 31;
/// The cost used when a challenge asks for less than [`MIN_COST`].
pub const DEFAULT_COST: u32 = 10;

/// Why a challenge could not be answered or a response was refused. The `Display` texts of
/// the compare errors are Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PowError {
    /// The cost prefix is not a decimal integer.
    #[error("challenge {challenge:?}: cost {cost:?} is not a decimal integer")]
    BadCost {
        /// The challenge.
        challenge: String,
        /// The text read as cost.
        cost: String,
    },
    /// Cost above 31.
    #[error("crypto/bcrypt: cost {0} is outside allowed range ({MIN_COST},{MAX_COST})")]
    CostOutOfRange(i64),
    /// The response is shorter than a bcrypt hash.
    #[error("crypto/bcrypt: hashedSecret too short to be a bcrypted password")]
    TooShort,
    /// The response does not start with `$`.
    #[error(
        "crypto/bcrypt: bcrypt hashes must start with '$', but hashedSecret started with {0:?}"
    )]
    BadPrefix(char),
    /// The response claims a bcrypt version above 2.
    #[error(
        "crypto/bcrypt: bcrypt algorithm version {0:?} requested is newer than current version '2'"
    )]
    VersionTooNew(char),
    /// The response's cost or salt field is malformed.
    #[error("crypto/bcrypt: malformed hash {0:?}")]
    Malformed(String),
    /// Well-formed, but not the hash of this challenge.
    #[error("crypto/bcrypt: hashedPassword is not the hash of the given password")]
    Mismatch,
    /// Hashed at another cost than the challenge demands.
    #[error("proof of work cost is {got}, the challenge asks for {want}")]
    CostMismatch {
        /// The cost required.
        want: u32,
        /// The cost found in the response.
        got: u32,
    },
    /// The bcrypt implementation refused the input.
    #[error("bcrypt: {0}")]
    Bcrypt(String),
}

/// Go's `strconv.Atoi` on the text: optional sign, ASCII digits, 64-bit range.
fn atoi(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The bcrypt cost a relay uses for `challenge`.
pub fn parse_cost(challenge: &str) -> Result<u32, PowError> {
    let cost_text = challenge.split_once('~').map_or(challenge, |(c, _)| c);
    let cost = atoi(cost_text).ok_or_else(|| PowError::BadCost {
        challenge: challenge.to_string(),
        cost: cost_text.to_string(),
    })?;
    if cost < i64::from(MIN_COST) {
        return Ok(DEFAULT_COST);
    }
    if cost > i64::from(MAX_COST) {
        return Err(PowError::CostOutOfRange(cost));
    }
    u32::try_from(cost).map_err(|_| PowError::CostOutOfRange(cost))
}

/// The challenge text a directory sends: `<cost>~<opaque>`.
pub fn make_challenge(cost: u32, opaque: &str) -> String {
    format!("{cost}~{opaque}")
}

/// Answers `challenge` with the given salt (deterministic; for tests and reproducible runs).
pub fn solve_with_salt(challenge: &str, salt: [u8; 16]) -> Result<String, PowError> {
    let cost = parse_cost(challenge)?;
    bcrypt::hash_with_salt(challenge.as_bytes(), cost, salt)
        .map(|h| h.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| PowError::Bcrypt(e.to_string()))
}

/// Answers `challenge` with a fresh random salt. CPU-bound: run it off the async executor.
pub fn solve(challenge: &str) -> Result<String, PowError> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    solve_with_salt(challenge, salt)
}

/// The parts of a bcrypt hash string as Go reads them.
struct Parsed<'a> {
    cost: u32,
    salt: [u8; 16],
    hash: &'a str,
}

const BCRYPT_ALPHABET: &[u8; 64] =
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Decodes the 22-character salt field, ignoring the 4 unused trailing bits as Go does.
fn decode_salt(text: &str) -> Option<[u8; 16]> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(17);
    for c in text.bytes() {
        let v = BCRYPT_ALPHABET.iter().position(|&a| a == c)?;
        bits = (bits << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out.truncate(16);
    out.try_into().ok()
}

fn parse_hash(response: &str) -> Result<Parsed<'_>, PowError> {
    const MIN_HASH_SIZE: usize = 59;
    let b = response.as_bytes();
    if b.len() < MIN_HASH_SIZE {
        return Err(PowError::TooShort);
    }
    if b[0] != b'$' {
        return Err(PowError::BadPrefix(char::from(b[0])));
    }
    if b[1] > b'2' {
        return Err(PowError::VersionTooNew(char::from(b[1])));
    }
    // `$2$` or `$2x$` for any minor letter x, as Go accepts.
    let mut at = if b[2] != b'$' { 4 } else { 3 };
    let malformed = || PowError::Malformed(response.to_string());
    let cost_text = response.get(at..at + 2).ok_or_else(malformed)?;
    let cost = atoi(cost_text).ok_or_else(malformed)?;
    if !(i64::from(MIN_COST)..=i64::from(MAX_COST)).contains(&cost) {
        return Err(PowError::CostOutOfRange(cost));
    }
    at += 3;
    let salt_text = response.get(at..at + 22).ok_or_else(malformed)?;
    let salt = decode_salt(salt_text).ok_or_else(malformed)?;
    let hash = response.get(at + 22..).ok_or_else(malformed)?;
    Ok(Parsed {
        cost: u32::try_from(cost).map_err(|_| malformed())?,
        salt,
        hash,
    })
}

/// The cost a response was computed with.
pub fn response_cost(response: &str) -> Result<u32, PowError> {
    parse_hash(response).map(|p| p.cost)
}

/// Go's bcrypt compare: whether `response` is a bcrypt hash of `challenge`.
///
/// The work done is set by the cost *in the response* (up to 2^31 rounds): a server must use
/// [`verify_with_cost`] so a peer cannot make it hash at cost 31.
pub fn verify(challenge: &str, response: &str) -> Result<(), PowError> {
    let p = parse_hash(response)?;
    let ours = bcrypt::hash_with_salt(challenge.as_bytes(), p.cost, p.salt)
        .map_err(|e| PowError::Bcrypt(e.to_string()))?
        .format_for_version(bcrypt::Version::TwoA);
    // The last 31 characters of the canonical form are the hash proper.
    let ours_hash = ours
        .get(ours.len().saturating_sub(31)..)
        .unwrap_or_default();
    if ours_hash == p.hash {
        Ok(())
    } else {
        Err(PowError::Mismatch)
    }
}

/// Directory side: the response must use exactly the challenge's cost (checked before any
/// hashing, which bounds the work), then [`verify`].
pub fn verify_with_cost(challenge: &str, response: &str) -> Result<(), PowError> {
    let want = parse_cost(challenge)?;
    let got = response_cost(response)?;
    if got != want {
        return Err(PowError::CostMismatch { want, got });
    }
    verify(challenge, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rules() {
        assert_eq!(parse_cost("12~x"), Ok(12));
        assert_eq!(parse_cost("-1~x"), Ok(DEFAULT_COST));
        assert_eq!(parse_cost("0"), Ok(DEFAULT_COST));
        assert!(parse_cost("").is_err());
        assert!(parse_cost("~x").is_err());
        assert!(parse_cost("99999999999999999999~x").is_err());
        assert_eq!(make_challenge(5, "abc"), "5~abc");
    }

    #[test]
    fn random_solution_verifies() {
        let c = "4~random";
        let r = solve(c).unwrap_or_default();
        assert!(r.starts_with("$2a$04$"));
        assert_eq!(verify(c, &r), Ok(()));
        assert_eq!(verify_with_cost(c, &r), Ok(()));
        assert_eq!(verify("4~other", &r), Err(PowError::Mismatch));
        assert_eq!(
            verify_with_cost("5~random", &r),
            Err(PowError::CostMismatch { want: 5, got: 4 })
        );
    }
}
