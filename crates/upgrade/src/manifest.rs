//! Signed release metadata: one manifest per component, listing its channels (target version
//! and rollout share) and its releases (per-platform binary and changelog, each bound by
//! SHA-512 and length), with a strictly increasing serial and an expiry.
//!
//! The file on the release server is an envelope `{"signed": <base64url of the manifest
//! bytes>, "signatures": [{"keyid", "sig"}]}`. The signature covers a fixed context string
//! followed by exactly the bytes inside `signed`; the verifier checks the signatures first and
//! only then parses those same bytes, so nothing outside the signed part can reach a decision
//! (the original read its digest from unsigned text next to a signed block, upgrade.md §13.6).
//! Base64 is decoded strictly (canonical, no padding, no stray bits) so that every bit of the
//! envelope matters.
//!
//! Only [`UnverifiedMetadata::verify`] makes a [`VerifiedMetadata`]; what to install from it
//! (channel, rollout, no downgrade, skips, rollback of the serial) is [`crate::policy`]'s job.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use wireleap_proto::keys::{Keypair, PublicKey, Signature};

/// The manifest format this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest metadata file accepted (envelope bytes).
pub const MAX_METADATA_BYTES: usize = 1 << 20;
/// Most signatures an envelope may carry.
pub const MAX_SIGNATURES: usize = 32;
/// Largest release artifact a manifest may describe.
pub const MAX_TARGET_BYTES: u64 = 1 << 30;
/// Rollout shares are in basis points: 10000 = everyone.
pub const ROLLOUT_FULL: u32 = 10_000;
/// Prefixed to the manifest bytes before signing, so a release signature can never be taken
/// for a signature of some other object (and the reverse).
pub const SIGNING_CONTEXT: &[u8] = b"wireleap-release-metadata/v1\n";

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Why metadata was refused before any policy decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The file is larger than [`MAX_METADATA_BYTES`].
    #[error("release metadata is {got} bytes, more than the limit of {MAX_METADATA_BYTES}")]
    TooLarge {
        /// Size received.
        got: usize,
    },
    /// The envelope is not `{"signed", "signatures"}` JSON.
    #[error("release metadata envelope is malformed: {0}")]
    Envelope(String),
    /// A base64url field is not canonical unpadded base64url.
    #[error("release metadata field {field} is not canonical base64url: {reason}")]
    Encoding {
        /// Which field.
        field: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// Too few trusted keys signed.
    #[error("release metadata has {valid} valid signature(s) from trusted keys, {threshold} required ({present} present)")]
    Threshold {
        /// Distinct trusted keys whose signature verified.
        valid: usize,
        /// Required.
        threshold: usize,
        /// Signatures in the envelope.
        present: usize,
    },
    /// The signed bytes are not a manifest (only reachable with a valid signature: a signer bug).
    #[error("signed release manifest is malformed: {0}")]
    Manifest(String),
    /// The signed manifest parsed but breaks a rule.
    #[error("signed release manifest is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The manifest has expired (freeze protection).
    #[error("release metadata expired at {expires} (now {now}); the release server may be stale or withholding updates")]
    Expired {
        /// Its expiry (unix seconds).
        expires: i64,
        /// The time of the check.
        now: i64,
    },
    /// The manifest is for another component.
    #[error("release metadata is for component {got:?}, expected {want:?}")]
    WrongComponent {
        /// In the manifest.
        got: String,
        /// Expected.
        want: String,
    },
}

/// Why a set of trusted keys is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A key does not decode.
    #[error("release key {key:?} is not a base64url ed25519 public key: {reason}")]
    BadKey {
        /// The text.
        key: String,
        /// Why.
        reason: String,
    },
    /// The threshold cannot be met or is zero.
    #[error("release key threshold {threshold} must be between 1 and the number of distinct keys ({keys})")]
    Threshold {
        /// Configured threshold.
        threshold: usize,
        /// Distinct keys.
        keys: usize,
    },
}

/// The release keys a verifier trusts and how many of them must sign (k of n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeSet<PublicKey>,
    threshold: usize,
}

impl TrustedKeys {
    /// `threshold` of `keys` must sign. Duplicate keys count once.
    pub fn new(
        keys: impl IntoIterator<Item = PublicKey>,
        threshold: usize,
    ) -> Result<Self, TrustError> {
        let keys: BTreeSet<PublicKey> = keys.into_iter().collect();
        if threshold == 0 || threshold > keys.len() {
            return Err(TrustError::Threshold {
                threshold,
                keys: keys.len(),
            });
        }
        Ok(TrustedKeys { keys, threshold })
    }

    /// Parses base64url key texts (as found in a config file).
    pub fn from_b64<S: AsRef<str>>(keys: &[S], threshold: usize) -> Result<Self, TrustError> {
        let parsed = keys
            .iter()
            .map(|k| {
                decode_fixed::<32>(k.as_ref(), "release key")
                    .map(PublicKey)
                    .map_err(|e| TrustError::BadKey {
                        key: k.as_ref().to_string(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(parsed, threshold)
    }

    /// Whether `key` is trusted.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }

    /// How many must sign.
    pub fn threshold(&self) -> usize {
        self.threshold
    }
}

/// The JSON envelope as stored on the release server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    signed: String,
    signatures: Vec<SignatureJson>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureJson {
    keyid: String,
    sig: String,
}

/// One signature in an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureEntry {
    /// The signing key.
    pub keyid: PublicKey,
    /// ed25519 over [`SIGNING_CONTEXT`] ‖ payload.
    pub sig: Signature,
}

/// Metadata as downloaded: signatures and the still-unparsed signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedMetadata {
    payload: Vec<u8>,
    signatures: Vec<SignatureEntry>,
}

fn decode_fixed<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], MetadataError> {
    let bytes = b64().decode(text).map_err(|e| MetadataError::Encoding {
        field,
        reason: e.to_string(),
    })?;
    let got = bytes.len();
    bytes.try_into().map_err(|_| MetadataError::Encoding {
        field,
        reason: format!("{got} bytes, expected {N}"),
    })
}

fn signing_input(payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(payload);
    msg
}

impl UnverifiedMetadata {
    /// Parses the envelope only (the manifest inside stays opaque until verified).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetadataError> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(MetadataError::TooLarge { got: bytes.len() });
        }
        let env: EnvelopeJson =
            serde_json::from_slice(bytes).map_err(|e| MetadataError::Envelope(e.to_string()))?;
        if env.signatures.len() > MAX_SIGNATURES {
            return Err(MetadataError::Envelope(format!(
                "{} signatures, at most {MAX_SIGNATURES} allowed",
                env.signatures.len()
            )));
        }
        let payload = b64()
            .decode(&env.signed)
            .map_err(|e| MetadataError::Encoding {
                field: "signed",
                reason: e.to_string(),
            })?;
        let signatures = env
            .signatures
            .iter()
            .map(|s| {
                Ok(SignatureEntry {
                    keyid: PublicKey(decode_fixed::<32>(&s.keyid, "signatures.keyid")?),
                    sig: Signature(decode_fixed::<64>(&s.sig, "signatures.sig")?),
                })
            })
            .collect::<Result<Vec<_>, MetadataError>>()?;
        Ok(UnverifiedMetadata {
            payload,
            signatures,
        })
    }

    /// The signatures present.
    pub fn signatures(&self) -> &[SignatureEntry] {
        &self.signatures
    }

    /// Checks the signatures (at least `trust.threshold()` distinct trusted keys), then parses
    /// and validates exactly the signed bytes, then checks the expiry against `now` (unix
    /// seconds) and that the manifest names `component`.
    pub fn verify(
        self,
        trust: &TrustedKeys,
        component: &str,
        now: i64,
    ) -> Result<VerifiedMetadata, MetadataError> {
        let msg = signing_input(&self.payload);
        let mut valid: BTreeSet<PublicKey> = BTreeSet::new();
        for s in &self.signatures {
            if trust.contains(&s.keyid) && s.keyid.verify(&msg, &s.sig).is_ok() {
                valid.insert(s.keyid);
            }
        }
        if valid.len() < trust.threshold() {
            return Err(MetadataError::Threshold {
                valid: valid.len(),
                threshold: trust.threshold(),
                present: self.signatures.len(),
            });
        }
        let manifest = Manifest::parse(&self.payload)?;
        if manifest.component != component {
            return Err(MetadataError::WrongComponent {
                got: manifest.component,
                want: component.to_string(),
            });
        }
        if now >= manifest.expires {
            return Err(MetadataError::Expired {
                expires: manifest.expires,
                now,
            });
        }
        let digest: [u8; 32] = Sha256::digest(&self.payload).into();
        Ok(VerifiedMetadata {
            manifest,
            digest,
            signed_by: valid.into_iter().collect(),
        })
    }
}

/// Metadata whose signatures, validity and freshness were checked. Only
/// [`UnverifiedMetadata::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMetadata {
    manifest: Manifest,
    digest: [u8; 32],
    signed_by: Vec<PublicKey>,
}

impl VerifiedMetadata {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the signed bytes (tells two manifests with the same serial apart).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The trusted keys whose signatures verified.
    pub fn signed_by(&self) -> &[PublicKey] {
        &self.signed_by
    }
}

/// A release manifest (the signed payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version, [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Component (binary) name, e.g. `wireleap-relay`.
    pub component: String,
    /// Metadata serial: every publication increases it.
    pub version: u64,
    /// Unix seconds after which the manifest must not be trusted.
    pub expires: i64,
    /// Channel name → what it currently offers.
    pub channels: BTreeMap<String, Channel>,
    /// Version text → release.
    pub releases: BTreeMap<String, Release>,
}

/// What a channel offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The version to install (a key of `releases`).
    pub version: String,
    /// Share of installations admitted, in basis points (0..=10000).
    pub rollout_bp: u32,
}

/// One released version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Platform (`linux-x86_64`) → binary.
    pub targets: BTreeMap<String, Target>,
    /// The release notes shown before a manual upgrade.
    pub changelog: Target,
    /// Oldest version this release can be installed over (its migrations start there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_from: Option<String>,
}

/// A file of a release: where it is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Path relative to the component's directory on the release server.
    pub path: String,
    /// Lowercase hex SHA-512 of the file.
    pub sha512: String,
    /// Exact size in bytes.
    pub length: u64,
}

impl Target {
    /// The digest as bytes (validation guarantees it decodes).
    pub fn sha512_bytes(&self) -> Option<[u8; 64]> {
        let v = hex::decode(&self.sha512).ok()?;
        v.try_into().ok()
    }
}

/// The platform name of this build, as used in `targets` (e.g. `linux-x86_64`).
pub fn this_platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Whether `name` is a usable component, channel or platform name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// Whether `path` is a safe relative path on the release server: `/`-separated parts of
/// `[A-Za-z0-9._+-]`, none empty or starting with a dot.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 256
        && path.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
        })
}

impl Manifest {
    /// Parses and validates manifest bytes. Call only on verified bytes
    /// ([`UnverifiedMetadata::verify`] does).
    pub fn parse(bytes: &[u8]) -> Result<Self, MetadataError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| MetadataError::Manifest(e.to_string()))?;
        let problems = m.problems();
        if problems.is_empty() {
            Ok(m)
        } else {
            Err(MetadataError::Invalid(problems))
        }
    }

    /// Every rule the manifest breaks.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.schema_version != SCHEMA_VERSION {
            p.push(format!(
                "schema_version {} is not {SCHEMA_VERSION} (written by a newer release tool?)",
                self.schema_version
            ));
        }
        if !valid_name(&self.component) {
            p.push(format!(
                "component {:?} is not a valid name",
                self.component
            ));
        }
        for (name, ch) in &self.channels {
            if !valid_name(name) {
                p.push(format!("channel name {name:?} is not valid"));
            }
            if ch.rollout_bp > ROLLOUT_FULL {
                p.push(format!(
                    "channel {name}: rollout_bp {} is above {ROLLOUT_FULL}",
                    ch.rollout_bp
                ));
            }
            if !self.releases.contains_key(&ch.version) {
                p.push(format!(
                    "channel {name}: version {:?} is not among the releases",
                    ch.version
                ));
            }
        }
        for (v, r) in &self.releases {
            if let Err(e) = wireleap_proto::version::parse_strict(v) {
                p.push(format!("release {v:?}: not a version: {e}"));
            }
            if let Some(min) = &r.min_from {
                if let Err(e) = wireleap_proto::version::parse_strict(min) {
                    p.push(format!("release {v}: min_from {min:?}: {e}"));
                }
            }
            for (platform, t) in &r.targets {
                if !valid_name(platform) {
                    p.push(format!(
                        "release {v}: platform name {platform:?} is not valid"
                    ));
                }
                check_target(&mut p, format!("release {v} target {platform}"), t);
            }
            check_target(&mut p, format!("release {v} changelog"), &r.changelog);
        }
        p
    }

    /// The manifest's canonical bytes (compact JSON, keys in struct/BTreeMap order).
    pub fn to_bytes(&self) -> Result<Vec<u8>, MetadataError> {
        serde_json::to_vec(self).map_err(|e| MetadataError::Manifest(e.to_string()))
    }
}

fn check_target(p: &mut Vec<String>, what: String, t: &Target) {
    if !valid_path(&t.path) {
        p.push(format!(
            "{what}: path {:?} is not a safe relative path",
            t.path
        ));
    }
    if t.sha512.len() != 128
        || !t
            .sha512
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        p.push(format!(
            "{what}: sha512 {:?} is not 128 lowercase hex digits",
            t.sha512
        ));
    }
    if t.length > MAX_TARGET_BYTES {
        p.push(format!(
            "{what}: length {} is above {MAX_TARGET_BYTES}",
            t.length
        ));
    }
}

/// Signs `payload` with every key and returns the envelope file bytes.
pub fn sign_envelope(payload: &[u8], keys: &[&Keypair]) -> Result<Vec<u8>, MetadataError> {
    let msg = signing_input(payload);
    let env = EnvelopeJson {
        signed: b64().encode(payload),
        signatures: keys
            .iter()
            .map(|k| SignatureJson {
                keyid: b64().encode(k.public().0),
                sig: b64().encode(k.sign(&msg).0),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec(&env).map_err(|e| MetadataError::Envelope(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads the manifest inside an envelope WITHOUT checking signatures, for display by the
/// release tool on its own repository. Never use its result for a decision.
pub fn peek_unverified(bytes: &[u8]) -> Result<(Manifest, Vec<SignatureEntry>), MetadataError> {
    let u = UnverifiedMetadata::from_bytes(bytes)?;
    let m = Manifest::parse(&u.payload)?;
    Ok((m, u.signatures))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(serial: u64, expires: i64) -> Manifest {
        let t = |path: &str, fill: char| Target {
            path: path.into(),
            sha512: std::iter::repeat_n(fill, 128).collect(),
            length: 10,
        };
        Manifest {
            schema_version: SCHEMA_VERSION,
            component: "wireleap-relay".into(),
            version: serial,
            expires,
            channels: [(
                "default".to_string(),
                Channel {
                    version: "0.2.0".into(),
                    rollout_bp: ROLLOUT_FULL,
                },
            )]
            .into(),
            releases: [(
                "0.2.0".to_string(),
                Release {
                    targets: [("linux-x86_64".to_string(), t("0.2.0/wireleap-relay", 'a'))].into(),
                    changelog: t("0.2.0/changelog.md", 'b'),
                    min_from: None,
                },
            )]
            .into(),
        }
    }

    fn key(n: u8) -> Keypair {
        Keypair::from_seed([n; 32])
    }

    fn trust(keys: &[&Keypair], threshold: usize) -> TrustedKeys {
        TrustedKeys::new(keys.iter().map(|k| k.public()), threshold).unwrap()
    }

    #[test]
    fn round_trip_and_checks() {
        let k = key(1);
        let payload = sample(3, 1000).to_bytes().unwrap();
        let env = sign_envelope(&payload, &[&k]).unwrap();
        let v = UnverifiedMetadata::from_bytes(&env)
            .unwrap()
            .verify(&trust(&[&k], 1), "wireleap-relay", 999)
            .unwrap();
        assert_eq!(v.manifest(), &sample(3, 1000));
        assert_eq!(v.signed_by(), &[k.public()]);
        // Expiry is exclusive.
        let e = UnverifiedMetadata::from_bytes(&env)
            .unwrap()
            .verify(&trust(&[&k], 1), "wireleap-relay", 1000)
            .unwrap_err();
        assert!(
            matches!(
                e,
                MetadataError::Expired {
                    expires: 1000,
                    now: 1000
                }
            ),
            "{e}"
        );
        let e = UnverifiedMetadata::from_bytes(&env)
            .unwrap()
            .verify(&trust(&[&k], 1), "wireleap-dir", 1)
            .unwrap_err();
        assert!(matches!(e, MetadataError::WrongComponent { .. }), "{e}");
    }

    #[test]
    fn untrusted_or_too_few_signers_are_refused() {
        let (a, b, c) = (key(1), key(2), key(3));
        let payload = sample(1, 1000).to_bytes().unwrap();
        let only_c = sign_envelope(&payload, &[&c]).unwrap();
        let e = UnverifiedMetadata::from_bytes(&only_c)
            .unwrap()
            .verify(&trust(&[&a, &b], 1), "wireleap-relay", 0)
            .unwrap_err();
        assert!(
            matches!(e, MetadataError::Threshold { valid: 0, .. }),
            "{e}"
        );
        // 2 of 3: one signature is not enough, the same key twice still counts once.
        let t = trust(&[&a, &b, &c], 2);
        let one = sign_envelope(&payload, &[&a, &a]).unwrap();
        let e = UnverifiedMetadata::from_bytes(&one)
            .unwrap()
            .verify(&t, "wireleap-relay", 0)
            .unwrap_err();
        assert!(
            matches!(
                e,
                MetadataError::Threshold {
                    valid: 1,
                    threshold: 2,
                    present: 2
                }
            ),
            "{e}"
        );
        let two = sign_envelope(&payload, &[&a, &c]).unwrap();
        assert!(UnverifiedMetadata::from_bytes(&two)
            .unwrap()
            .verify(&t, "wireleap-relay", 0)
            .is_ok());
        assert!(TrustedKeys::new([a.public()], 2).is_err());
        assert!(TrustedKeys::new([a.public()], 0).is_err());
    }

    #[test]
    fn a_signature_from_another_context_does_not_verify() {
        let k = key(1);
        let payload = sample(1, 1000).to_bytes().unwrap();
        // A bare signature over the payload (as another protocol object would be signed).
        let env = EnvelopeJson {
            signed: b64().encode(&payload),
            signatures: vec![SignatureJson {
                keyid: b64().encode(k.public().0),
                sig: b64().encode(k.sign(&payload).0),
            }],
        };
        let bytes = serde_json::to_vec(&env).unwrap();
        assert!(UnverifiedMetadata::from_bytes(&bytes)
            .unwrap()
            .verify(&trust(&[&k], 1), "wireleap-relay", 0)
            .is_err());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let k = key(1);
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample(1, 1000).to_bytes().unwrap()).unwrap();
        v["extra"] = serde_json::json!(1);
        let env = sign_envelope(&serde_json::to_vec(&v).unwrap(), &[&k]).unwrap();
        let e = UnverifiedMetadata::from_bytes(&env)
            .unwrap()
            .verify(&trust(&[&k], 1), "wireleap-relay", 0)
            .unwrap_err();
        assert!(matches!(e, MetadataError::Manifest(_)), "{e}");

        let mut m = sample(1, 1000);
        m.channels.get_mut("default").unwrap().rollout_bp = 10_001;
        m.channels.insert(
            "beta".into(),
            Channel {
                version: "9.9.9".into(),
                rollout_bp: 1,
            },
        );
        let r = m.releases.get_mut("0.2.0").unwrap();
        r.targets.get_mut("linux-x86_64").unwrap().path = "../../etc/passwd".into();
        r.changelog.sha512 = "AB".into();
        let problems = m.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        let mut env = serde_json::json!({"signed": "", "signatures": [], "more": 1});
        assert!(UnverifiedMetadata::from_bytes(&serde_json::to_vec(&env).unwrap()).is_err());
        env = serde_json::json!({"signed": "AA==", "signatures": []});
        assert!(matches!(
            UnverifiedMetadata::from_bytes(&serde_json::to_vec(&env).unwrap()),
            Err(MetadataError::Encoding {
                field: "signed",
                ..
            })
        ));
    }

    #[test]
    fn paths_and_names() {
        for ok in ["0.2.0/wireleap-relay", "a", "x/y+z_1.md"] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "../x",
            "a/../b",
            "a/.hidden",
            "a\\b",
            "a b",
            "a/",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
        assert!(valid_name("linux-x86_64"));
        assert!(!valid_name(".x") && !valid_name("a/b") && !valid_name(""));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any single-bit change of the signed bytes makes verification fail.
        #[test]
        fn any_bit_flip_of_the_signed_bytes_fails(bit in 0usize..4096, serial in 0u64..1000) {
            let k = key(7);
            let payload = sample(serial, i64::MAX).to_bytes().unwrap();
            let bit = bit % (payload.len() * 8);
            let mut tampered = payload.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            // Keep the good signature, swap the payload.
            let good = sign_envelope(&payload, &[&k]).unwrap();
            let mut env: EnvelopeJson = serde_json::from_slice(&good).unwrap();
            env.signed = b64().encode(&tampered);
            let bytes = serde_json::to_vec(&env).unwrap();
            let r = UnverifiedMetadata::from_bytes(&bytes).and_then(|u| u.verify(&trust(&[&k], 1), "wireleap-relay", 0));
            prop_assert!(r.is_err());
        }

        /// With one signature, any single-bit change anywhere in the file makes it fail.
        #[test]
        fn any_bit_flip_of_the_envelope_fails(bit in 0usize..1_000_000) {
            let k = key(9);
            let payload = sample(5, i64::MAX).to_bytes().unwrap();
            let good = sign_envelope(&payload, &[&k]).unwrap();
            // The final newline is not part of the JSON value.
            let body = good.len() - 1;
            let bit = bit % (body * 8);
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let r = UnverifiedMetadata::from_bytes(&bad).and_then(|u| u.verify(&trust(&[&k], 1), "wireleap-relay", 0));
            prop_assert!(r.is_err(), "flip of bit {} verified", bit);
        }

        #[test]
        fn envelope_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = UnverifiedMetadata::from_bytes(&bytes);
            let _ = Manifest::parse(&bytes);
        }

        #[test]
        fn manifests_round_trip(serial: u64, expires in 1i64..i64::MAX, bp in 0u32..=10_000) {
            let mut m = sample(serial, expires);
            m.channels.get_mut("default").unwrap().rollout_bp = bp;
            let k = key(3);
            let env = sign_envelope(&m.to_bytes().unwrap(), &[&k]).unwrap();
            let v = UnverifiedMetadata::from_bytes(&env).unwrap().verify(&trust(&[&k], 1), "wireleap-relay", 0).unwrap();
            prop_assert_eq!(v.manifest(), &m);
        }
    }
}
