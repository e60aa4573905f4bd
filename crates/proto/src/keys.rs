//! ed25519 identities and the `key.seed` / `key.pub` file formats (protocol.md §1.4, §2).
//!
//! Parsing and rendering of key files only; reading and writing them (permissions, atomic
//! rename) is the daemon crate's job.

use crate::b64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use std::fmt;

/// A 32-byte ed25519 public key, shown and serialised as base64url.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// A 64-byte ed25519 signature, shown and serialised as base64url.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

/// A signing identity (seed and derived public key). Never printed.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

/// Why a key, key file or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not base64url.
    #[error(transparent)]
    Encoding(#[from] b64::DecodeError),
    /// Decoded, but of the wrong size.
    #[error("invalid {what} size: {got}, should be {want}")]
    Size {
        /// Which kind of value.
        what: &'static str,
        /// Bytes decoded.
        got: usize,
        /// Bytes required.
        want: usize,
    },
    /// The signature does not verify under the key.
    #[error("signature does not verify")]
    BadSignature,
    /// The public key bytes are not a valid curve point.
    #[error("public key is not a valid ed25519 point")]
    BadPoint,
}

impl PublicKey {
    /// Parses base64url text of exactly 32 bytes.
    pub fn from_b64(text: &str) -> Result<Self, KeyError> {
        Ok(Self(exact::<32>(b64::decode(text)?, "public key")?))
    }

    /// The base64url text of the key.
    pub fn to_b64(&self) -> String {
        b64::encode(self.0)
    }

    /// Verifies `sig` over `msg` (RFC 8032; non-canonical S rejected).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::BadPoint)?;
        vk.verify(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| KeyError::BadSignature)
    }
}

impl Signature {
    /// Parses base64url text of exactly 64 bytes.
    pub fn from_b64(text: &str) -> Result<Self, KeyError> {
        Ok(Self(exact::<64>(b64::decode(text)?, "signature")?))
    }

    /// The base64url text of the signature.
    pub fn to_b64(&self) -> String {
        b64::encode(self.0)
    }
}

impl Keypair {
    /// Builds the keypair from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh random keypair from the system CSPRNG.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// The 32-byte seed.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The 64-byte private key form `seed || public key`.
    pub fn private_key_64(&self) -> [u8; 64] {
        self.signing.to_keypair_bytes()
    }

    /// Parses the 64-byte private key form, checking that its public half matches the seed.
    pub fn from_private_key_64(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr = exact::<64>(bytes.to_vec(), "private key")?;
        SigningKey::from_keypair_bytes(&arr)
            .map(|signing| Self { signing })
            .map_err(|_| KeyError::BadPoint)
    }

    /// Signs `msg` (deterministic, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.signing.sign(msg).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.public())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_b64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_b64())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

fn exact<const N: usize>(bytes: Vec<u8>, what: &'static str) -> Result<[u8; N], KeyError> {
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| KeyError::Size { what, got, want: N })
}

/// The outcome of reading a `key.seed` file.
#[derive(Debug)]
pub struct LoadedSeed {
    /// The identity.
    pub keypair: Keypair,
    /// `Some(bytes)` when the file was in the legacy bare form and must be rewritten so.
    pub rewrite: Option<Vec<u8>>,
}

/// Everything loading a `key.seed` file decides, including on failure: the original rewrites
/// a legacy file *before* checking the seed size, so an empty file is rewritten as `""` and
/// still rejected.
#[derive(Debug)]
pub struct SeedLoad {
    /// New file contents the caller must write back, if any.
    pub rewrite: Option<Vec<u8>>,
    /// The identity, or why the file was refused. A [`KeyError::Size`] displays as
    /// `invalid seed size: N, should be 32`; the caller prefixes `<path> has `.
    pub result: Result<Keypair, KeyError>,
}

/// Renders a `key.seed` file: the seed as a JSON string of base64url, no newline.
pub fn seed_file(kp: &Keypair) -> Vec<u8> {
    format!("\"{}\"", b64::encode(kp.seed())).into_bytes()
}

/// Renders a `key.pub` file: the public key as a JSON string of base64url, no newline.
pub fn pub_file(pk: &PublicKey) -> Vec<u8> {
    format!("\"{}\"", pk.to_b64()).into_bytes()
}

/// Parses the contents of a `key.seed` file (JSON string form, or the legacy bare form,
/// which the caller must rewrite with [`LoadedSeed::rewrite`]). See [`load_seed_file`] for
/// the variant that also reports a rewrite when the seed is then refused.
pub fn parse_seed_file(contents: &[u8]) -> Result<LoadedSeed, KeyError> {
    let SeedLoad { rewrite, result } = load_seed_file(contents);
    result.map(|keypair| LoadedSeed { keypair, rewrite })
}

/// Loads a `key.seed` file exactly as the original does (protocol.md §2):
/// - valid JSON: a string is base64url-decoded; on a decoding error the bytes decoded before
///   it count as the seed (so a padded value yields size 30); `null` and other JSON values
///   yield zero bytes (inferred for non-strings: the original only ever writes strings);
/// - not JSON: legacy bare base64url (CR/LF skipped); a decoding error is returned as is,
///   success schedules a rewrite in the JSON form;
/// - in every case the result must be exactly 32 bytes.
pub fn load_seed_file(contents: &[u8]) -> SeedLoad {
    let (decoded, rewrite) = match serde_json::from_slice::<serde_json::Value>(contents) {
        Ok(serde_json::Value::String(s)) => (
            b64::decode_partial(&s).unwrap_or_else(|(partial, _)| partial),
            None,
        ),
        Ok(_) => (Vec::new(), None),
        Err(_) => match b64::decode(contents) {
            Ok(decoded) => {
                let text = format!("\"{}\"", b64::encode(&decoded)).into_bytes();
                (decoded, Some(text))
            }
            Err(e) => {
                return SeedLoad {
                    rewrite: None,
                    result: Err(KeyError::Encoding(e)),
                }
            }
        },
    };
    SeedLoad {
        rewrite,
        result: exact::<32>(decoded, "seed").map(Keypair::from_seed),
    }
}

/// A key type with a fixed byte size, decodable from base64url (for [`opt_b64`]).
pub trait FixedBytes: Sized + serde::Serialize {
    /// Builds the value from decoded bytes, refusing the wrong size.
    fn from_decoded(bytes: Vec<u8>) -> Result<Self, KeyError>;
}

impl FixedBytes for PublicKey {
    fn from_decoded(bytes: Vec<u8>) -> Result<Self, KeyError> {
        exact::<32>(bytes, "public key").map(Self)
    }
}

impl FixedBytes for Signature {
    fn from_decoded(bytes: Vec<u8>) -> Result<Self, KeyError> {
        exact::<64>(bytes, "signature").map(Self)
    }
}

/// serde `with` module for an optional binary field (`Option<PublicKey>`, `Option<Signature>`).
///
/// Go keeps such fields as byte slices: `null` and any text that decodes to zero bytes (`""`)
/// are the empty value, which `omitempty` drops and digests render as an empty field. Both
/// therefore read as `None` here. Pair with `skip_serializing_if = "Option::is_none"` for
/// omitempty fields; without it `None` is written `""`, as Go writes an empty slice.
pub mod opt_b64 {
    use super::{b64, FixedBytes};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the value as base64url, `None` as `""`.
    pub fn serialize<S: Serializer, T: FixedBytes>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    /// Reads base64url of the exact size; `null` and empty values are `None`.
    pub fn deserialize<'de, D: Deserializer<'de>, T: FixedBytes>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let bytes = b64::decode(&text).map_err(serde::de::Error::custom)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        T::from_decoded(bytes)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

// JSON form of keys and signatures: a base64url string (protocol.md §1.2). Decoding accepts
// the original's lenient base64url and then insists on the exact size.
impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_b64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_b64(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_b64())
    }
}

impl<'de> serde::Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_b64(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seed_files_round_trip(seed: [u8; 32]) {
            let kp = Keypair::from_seed(seed);
            let file = seed_file(&kp);
            let load = load_seed_file(&file);
            prop_assert!(load.rewrite.is_none());
            prop_assert_eq!(load.result.unwrap().seed(), seed);
            // The legacy bare form loads to the same seed and is rewritten to the JSON form.
            let legacy = b64::encode(seed);
            let load = load_seed_file(legacy.as_bytes());
            prop_assert_eq!(load.rewrite.as_deref(), Some(file.as_slice()));
            prop_assert_eq!(load.result.unwrap().seed(), seed);
            prop_assert_eq!(PublicKey::from_b64(&kp.public().to_b64()).unwrap(), kp.public());
        }

        #[test]
        fn any_other_size_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assume!(bytes.len() != 32);
            let file = format!("\"{}\"", b64::encode(&bytes));
            let err = load_seed_file(file.as_bytes()).result.unwrap_err();
            prop_assert_eq!(err, KeyError::Size { what: "seed", got: bytes.len(), want: 32 });
        }

        #[test]
        fn signatures_verify_only_unchanged(seed: [u8; 32], msg: Vec<u8>, bit in 0usize..512) {
            let kp = Keypair::from_seed(seed);
            let sig = kp.sign(&msg);
            prop_assert!(kp.public().verify(&msg, &sig).is_ok());
            let mut bad = sig;
            bad.0[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(kp.public().verify(&msg, &bad).is_err());
        }
    }

    #[test]
    fn serde_forms() {
        let kp = Keypair::from_seed([1; 32]);
        let text = serde_json::to_string(&kp.public()).unwrap();
        assert_eq!(text, "\"iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w\"");
        assert_eq!(
            serde_json::from_str::<PublicKey>(&text).unwrap(),
            kp.public()
        );
        assert!(serde_json::from_str::<PublicKey>("\"AQ\"").is_err());
        assert!(serde_json::from_str::<Signature>("null").is_err());
    }
}
