//! The relay's TLS identity (protocol.md §15): `relay-key.pem` and a self-signed
//! `relay-cert.pem` made from the relay's ed25519 seed, and the SPKI check used for pinning.
//!
//! This module renders PEM text; writing the files (mode 0600, atomic rename) is the caller's
//! job. It reads no clock: the generation time is passed in.

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, KeyPair,
    PrintableString, SerialNumber, PKCS_ED25519,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// DER prefix of a PKCS#8 v1 ed25519 private key (RFC 8410), followed by the 32-byte seed.
/// This is the exact form the original writes, so `relay-key.pem` is byte-identical.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// DER prefix of an ed25519 SubjectPublicKeyInfo, followed by the 32-byte public key.
pub const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Certificate lifetime of the original: 100 × 365 days, no leap days.
pub const CERT_VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Subject and issuer organisation; the certificate carries no common name.
const ORGANIZATION: &str = "Wireleap";

/// Extension OIDs and DER values, in the order the original writes them.
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
/// BIT STRING: digitalSignature | keyEncipherment.
const KEY_USAGE_DER: &[u8] = &[0x03, 0x02, 0x05, 0xa0];
/// SEQUENCE { id-kp-serverAuth }.
const EXT_KEY_USAGE_DER: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01,
];
/// SEQUENCE {} — cA defaults to FALSE.
const BASIC_CONSTRAINTS_DER: &[u8] = &[0x30, 0x00];
/// SEQUENCE { dNSName "wireleap.com" }.
const SUBJECT_ALT_NAME_DER: &[u8] = &[
    0x30, 0x0e, 0x82, 0x0c, b'w', b'i', b'r', b'e', b'l', b'e', b'a', b'p', b'.', b'c', b'o', b'm',
];

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused the key or the parameters.
    #[error("cannot build the relay certificate: {0}")]
    Build(#[from] rcgen::Error),
    /// The generation time cannot be written into a certificate.
    #[error("generation time {0:?} is outside the range a certificate can hold")]
    Time(SystemTime),
}

/// A relay's TLS identity, ready to be written to `relay-cert.pem` and `relay-key.pem`.
#[derive(Clone)]
pub struct RelayCert {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// `relay-cert.pem` contents (PEM `CERTIFICATE`, LF line ends).
    pub cert_pem: String,
    /// `relay-key.pem` contents (PEM `PRIVATE KEY`, PKCS#8 v1).
    pub key_pem: String,
}

impl std::fmt::Debug for RelayCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key PEM holds the relay's identity seed: never print it.
        f.debug_struct("RelayCert")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

/// The 48-byte PKCS#8 v1 DER of an ed25519 seed, in the original's exact form.
pub fn key_pkcs8_der(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + seed.len());
    der.extend_from_slice(&PKCS8_ED25519_PREFIX);
    der.extend_from_slice(seed);
    der
}

/// `relay-key.pem` contents for a seed (deterministic).
pub fn key_pem(seed: &[u8; 32]) -> String {
    pem_encode("PRIVATE KEY", &key_pkcs8_der(seed))
}

/// The DER SubjectPublicKeyInfo of an ed25519 public key, i.e. what pinning compares.
pub fn spki_der(pubkey: &[u8; 32]) -> Vec<u8> {
    let mut der = Vec::with_capacity(SPKI_ED25519_PREFIX.len() + pubkey.len());
    der.extend_from_slice(&SPKI_ED25519_PREFIX);
    der.extend_from_slice(pubkey);
    der
}

/// Makes the self-signed relay certificate for `seed`, valid from `now` for
/// [`CERT_VALIDITY`], with a fresh random serial below 2^128.
pub fn generate(seed: &[u8; 32], now: SystemTime) -> Result<RelayCert, CertError> {
    let pkcs8 = key_pkcs8_der(seed);
    let key = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &PKCS_ED25519,
    )?;

    // Certificates hold whole seconds; truncating first keeps not_after - not_before exact.
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Time(now))?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| CertError::Time(now))?;
    let not_before =
        time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CertError::Time(now))?;
    let not_after = not_before
        .checked_add(time::Duration::seconds(CERT_VALIDITY.as_secs() as i64))
        .ok_or(CertError::Time(now))?;

    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        // Go writes PrintableString for ASCII names; match it so subjects compare equal.
        DnValue::PrintableString(PrintableString::try_from(ORGANIZATION)?),
    );

    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    // rcgen's own extension writers put SAN first and add a subject key identifier next to
    // basic constraints; the original has neither. Custom extensions are written verbatim in
    // the order given, so the profile matches byte for byte.
    params.custom_extensions = vec![
        extension(OID_KEY_USAGE, KEY_USAGE_DER, true),
        extension(OID_EXT_KEY_USAGE, EXT_KEY_USAGE_DER, false),
        extension(OID_BASIC_CONSTRAINTS, BASIC_CONSTRAINTS_DER, true),
        extension(OID_SUBJECT_ALT_NAME, SUBJECT_ALT_NAME_DER, false),
    ];

    let cert = params.self_signed(&key)?;
    let cert_der = cert.der().to_vec();
    Ok(RelayCert {
        cert_pem: pem_encode("CERTIFICATE", &cert_der),
        key_pem: pem_encode("PRIVATE KEY", &pkcs8),
        cert_der,
    })
}

/// The ed25519 public key of a certificate, or `None` when the DER is not a certificate or
/// its key is not ed25519. Parsing is rustls's (webpki), the same parser the handshake uses.
pub fn spki_pubkey(cert_der: &[u8]) -> Option<[u8; 32]> {
    let der = CertificateDer::from(cert_der);
    let parsed = rustls::server::ParsedCertificate::try_from(&der).ok()?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(SPKI_ED25519_PREFIX.as_slice())?;
    key.try_into().ok()
}

fn extension(oid: &[u64], value: &[u8], critical: bool) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(oid, value.to_vec());
    ext.set_criticality(critical);
    ext
}

/// 128 random bits; a zero serial is not positive (RFC 5280), so it is never returned.
fn random_serial() -> [u8; 16] {
    use rand::RngCore as _;
    let mut serial = [0u8; 16];
    while serial == [0u8; 16] {
        rand::rngs::OsRng.fill_bytes(&mut serial);
    }
    serial
}

/// PEM with 64-column base64 lines and LF line ends, as Go's `pem.Encode` writes.
fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use wireleap_proto::keys::Keypair;
    use x509_parser::prelude::*;

    /// The vector file, from `$WIRELEAP_VECTORS` or the usual checkout layouts.
    fn vector() -> serde_json::Value {
        let manifest = env!("CARGO_MANIFEST_DIR");
        let dirs = [
            std::env::var("WIRELEAP_VECTORS").unwrap_or_default(),
            format!("{manifest}/../../vectors"),
            format!("{manifest}/../../../shared/vectors"),
        ];
        let text = dirs
            .iter()
            .filter(|d| !d.is_empty())
            .find_map(|d| std::fs::read_to_string(format!("{d}/tlscert.json")).ok())
            .expect("tlscert.json found (set WIRELEAP_VECTORS to the vectors directory)");
        serde_json::from_str(&text).unwrap()
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        let mut rd = pem.as_bytes();
        let item = rustls_pemfile::read_one(&mut rd).unwrap().unwrap();
        match item {
            rustls_pemfile::Item::X509Certificate(c) => c.to_vec(),
            rustls_pemfile::Item::Pkcs8Key(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("unexpected PEM item {other:?}"),
        }
    }

    #[test]
    fn key_pem_matches_vector() {
        let v = vector();
        assert_eq!(
            key_pem(&[1u8; 32]),
            v["relay_key_pem_exact"].as_str().unwrap()
        );
        assert_ne!(
            key_pem(&[2u8; 32]),
            v["relay_key_pem_exact"].as_str().unwrap()
        );
    }

    #[test]
    fn spki_matches_vector() {
        let v = vector();
        let pubkey = Keypair::from_seed([1u8; 32]).public().0;
        let want = v["subject_public_key_info_der_hex"].as_str().unwrap();
        let got: String = spki_der(&pubkey)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn sample_cert_key_is_relay1() {
        let v = vector();
        let der = pem_der(v["sample_relay_cert_pem"].as_str().unwrap());
        let pubkey = Keypair::from_seed([1u8; 32]).public().0;
        assert_eq!(spki_pubkey(&der), Some(pubkey));
        assert_eq!(spki_pubkey(&der[1..]), None);
        assert_eq!(spki_pubkey(b""), None);
    }

    #[test]
    fn generated_cert_has_the_original_profile() {
        let v = vector();
        let sample = &v["parsed_sample"];
        let seed = [1u8; 32];
        let pubkey = Keypair::from_seed(seed).public().0;
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let rc = generate(&seed, now).unwrap();

        assert_eq!(rc.key_pem, v["relay_key_pem_exact"].as_str().unwrap());
        assert_eq!(pem_der(&rc.cert_pem), rc.cert_der);
        assert_eq!(pem_der(&rc.key_pem), key_pkcs8_der(&seed));

        let (rest, cert) = X509Certificate::from_der(&rc.cert_der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(cert.version(), X509Version::V3);
        assert_eq!(
            cert.subject().to_string(),
            sample["subject"].as_str().unwrap()
        );
        assert_eq!(
            cert.issuer().to_string(),
            sample["issuer"].as_str().unwrap()
        );
        assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
        // Same string type as the Go sample (PrintableString), so raw names compare equal.
        let sample_der = pem_der(v["sample_relay_cert_pem"].as_str().unwrap());
        let (_, sample_cert) = X509Certificate::from_der(&sample_der).unwrap();
        assert_eq!(cert.subject().as_raw(), sample_cert.subject().as_raw());

        let serial = cert.raw_serial();
        assert!(
            !serial.is_empty() && serial.len() <= 17,
            "serial {serial:02x?}"
        );
        assert!(serial[0] & 0x80 == 0, "serial must be positive");
        assert!(cert.serial.bits() <= 128);

        assert_eq!(cert.validity().not_before.timestamp(), 1_700_000_000);
        assert_eq!(
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp(),
            sample["validity_seconds"].as_i64().unwrap()
        );

        assert_eq!(cert.public_key().raw, spki_der(&pubkey).as_slice());
        assert_eq!(spki_pubkey(&rc.cert_der), Some(pubkey));
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            "1.3.101.112",
            "signature algorithm must be Ed25519"
        );

        // Extensions: same OIDs, criticality, values and order as the Go sample.
        let want: Vec<(String, bool, String)> = sample["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["oid"].as_str().unwrap().to_string(),
                    e["critical"].as_bool().unwrap(),
                    e["value_hex"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let got: Vec<(String, bool, String)> = cert
            .extensions()
            .iter()
            .map(|e| {
                (
                    e.oid.to_id_string(),
                    e.critical,
                    e.value.iter().map(|b| format!("{b:02x}")).collect(),
                )
            })
            .collect();
        assert_eq!(got, want);

        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names,
            vec![GeneralName::DNSName(
                sample["dns_names"][0].as_str().unwrap()
            )]
        );

        // Self-signature verifies under the relay key.
        cert.verify_signature(None).unwrap();
    }

    #[test]
    fn serials_differ_between_runs() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = generate(&[1u8; 32], now).unwrap();
        let b = generate(&[1u8; 32], now).unwrap();
        let sa = X509Certificate::from_der(&a.cert_der)
            .unwrap()
            .1
            .raw_serial()
            .to_vec();
        let sb = X509Certificate::from_der(&b.cert_der)
            .unwrap()
            .1
            .raw_serial()
            .to_vec();
        assert_ne!(sa, sb);
    }

    #[test]
    fn dates_past_2050_use_generalized_time_and_parse() {
        let now = UNIX_EPOCH + Duration::from_secs(2_600_000_000);
        let rc = generate(&[7u8; 32], now).unwrap();
        let (_, cert) = X509Certificate::from_der(&rc.cert_der).unwrap();
        assert_eq!(cert.validity().not_before.timestamp(), 2_600_000_000);
    }

    #[test]
    fn time_before_epoch_is_an_error() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert!(matches!(
            generate(&[1u8; 32], before),
            Err(CertError::Time(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn spki_pubkey_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = spki_pubkey(&bytes);
        }
    }
}
