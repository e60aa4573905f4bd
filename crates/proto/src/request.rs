//! The pure parts of signed API requests (protocol.md §7): bodies, header sets, body
//! signatures and their verification, and the interface version gates.
//!
//! The signature covers exactly the body bytes; nothing else (method, URL, time) is signed.
//! Header names are given in Go's canonical form; lookups through [`Headers`] must be
//! case-insensitive (HTTP/2 sends names lowercase). No HTTP client or server lives here: the
//! api crate wraps these functions in reqwest/axum code.

use crate::b64;
use crate::keys::{Keypair, PublicKey, Signature};
use crate::status::{Status, ToStatus};
use crate::version::{Component, Interface, VersionError};

/// `Content-Type` sent on every API request.
pub const CONTENT_TYPE: (&str, &str) = ("Content-Type", "application/json");
/// The header carrying a POST's idempotency key (§18).
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// The body of a request without payload (every GET): the JSON literal `null`, sent and signed.
pub const NULL_BODY: &[u8] = b"null";

/// Read access to request or response headers. Implementations must match names without
/// regard to case.
pub trait Headers {
    /// The value of the header `name`, if present.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        // Non-UTF-8 values cannot be keys, signatures or versions: treat them as absent.
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

impl Headers for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Headers for [(&str, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Headers::get(self.as_slice(), name)
    }
}

impl Headers for Vec<(&str, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Headers::get(self.as_slice(), name)
    }
}

/// HTTP methods the API uses; only POST gets an Idempotency-Key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET (body `null`).
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

/// The identity that signs a request and the interfaces it announces.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// The signing key.
    pub keypair: &'a Keypair,
    /// Which component signs (names the headers).
    pub component: Component,
    /// Interfaces whose version headers accompany the signature.
    pub interfaces: &'a [Interface],
}

/// The JSON body for an optional payload: `null` when there is none.
pub fn body_of<T: serde::Serialize>(
    payload: Option<&T>,
) -> Result<Vec<u8>, crate::json::JsonError> {
    match payload {
        Some(p) => crate::json::to_vec(p),
        None => Ok(NULL_BODY.to_vec()),
    }
}

/// `Wireleap-<Component>-Pubkey`.
pub const fn pubkey_header(who: Component) -> &'static str {
    match who {
        Component::Client => "Wireleap-Client-Pubkey",
        Component::Relay => "Wireleap-Relay-Pubkey",
        Component::Directory => "Wireleap-Directory-Pubkey",
        Component::Contract => "Wireleap-Contract-Pubkey",
        Component::Auth => "Wireleap-Auth-Pubkey",
        Component::PaymentService => "Wireleap-Ps-Pubkey",
    }
}

/// `Wireleap-<Component>-Signature`.
pub const fn signature_header(who: Component) -> &'static str {
    match who {
        Component::Client => "Wireleap-Client-Signature",
        Component::Relay => "Wireleap-Relay-Signature",
        Component::Directory => "Wireleap-Directory-Signature",
        Component::Contract => "Wireleap-Contract-Signature",
        Component::Auth => "Wireleap-Auth-Signature",
        Component::PaymentService => "Wireleap-Ps-Signature",
    }
}

/// The two signature headers for `body` signed by `keypair` as `who`.
pub fn sign_body(keypair: &Keypair, who: Component, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (pubkey_header(who), keypair.public().to_b64()),
        (signature_header(who), keypair.sign(body).to_b64()),
    ]
}

/// Our version header for each interface.
pub fn version_headers(interfaces: &[Interface]) -> Vec<(&'static str, String)> {
    interfaces
        .iter()
        .map(|i| (i.header_name(), i.version().to_string()))
        .collect()
}

/// Every header of an API request as the original's client builds it: Content-Type,
/// Idempotency-Key (POST only, when given), and for a signer its version headers, public key
/// and body signature. Callers add extra headers (e.g. `Wireleap-Relay-Version`) themselves.
pub fn request_headers(
    method: Method,
    body: &[u8],
    idempotency_key: Option<&str>,
    signer: Option<Signer<'_>>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![(CONTENT_TYPE.0, CONTENT_TYPE.1.to_string())];
    if method == Method::Post {
        if let Some(k) = idempotency_key {
            out.push((IDEMPOTENCY_KEY_HEADER, k.to_string()));
        }
    }
    if let Some(s) = signer {
        out.extend(version_headers(s.interfaces));
        out.extend(sign_body(s.keypair, s.component, body));
    }
    out
}

/// Why a request's (or a signed response's) authentication failed. `Display` is the text the
/// original puts in the 403 cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Public key or signature header absent or empty.
    #[error("auth headers for {0} missing")]
    Missing(&'static str),
    /// A header is not base64url.
    #[error("illegal base64 data at input byte {offset}")]
    Encoding {
        /// Position of the first offending character.
        offset: usize,
    },
    /// The public key is not 32 bytes (the original crashes here).
    #[error("bad public key length: {0}")]
    KeyLength(usize),
    /// The signature does not verify over the body (or is not 64 bytes).
    #[error("auth signature for {0} does not verify")]
    BadSignature(&'static str),
    /// Signed by a valid key, but not the one expected (pinning, §10).
    #[error("{component} signed with unexpected key {got}, expecting {want}")]
    UnexpectedKey {
        /// Who signed.
        component: &'static str,
        /// The key expected.
        want: PublicKey,
        /// The key found in the headers.
        got: PublicKey,
    },
}

impl ToStatus for AuthError {
    fn to_status(&self) -> Status {
        Status::forbidden().with_cause(self.to_string())
    }
}

fn decode_header(text: &str) -> Result<Vec<u8>, AuthError> {
    b64::decode(text).map_err(|_| AuthError::Encoding {
        offset: text
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'\r' | b'\n')))
            .unwrap_or(text.len()),
    })
}

/// Verifies that `body` is signed by the key in `who`'s headers; returns that key.
///
/// The caller decides whether the key is acceptable (e.g. equals a relay entry's `pubkey`, or
/// a pinned directory key: see [`verify_body_pinned`]).
pub fn verify_body(
    who: Component,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<PublicKey, AuthError> {
    let name = who.name();
    let pk = headers.get(pubkey_header(who)).filter(|v| !v.is_empty());
    let sig = headers.get(signature_header(who)).filter(|v| !v.is_empty());
    let (Some(pk), Some(sig)) = (pk, sig) else {
        return Err(AuthError::Missing(name));
    };
    let pk = decode_header(pk)?;
    let sig = decode_header(sig)?;
    let pk: [u8; 32] = pk
        .try_into()
        .map_err(|v: Vec<u8>| AuthError::KeyLength(v.len()))?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| AuthError::BadSignature(name))?;
    let key = PublicKey(pk);
    key.verify(body, &Signature(sig))
        .map_err(|_| AuthError::BadSignature(name))?;
    Ok(key)
}

/// [`verify_body`], then insists the signing key is `expected`.
pub fn verify_body_pinned(
    who: Component,
    expected: &PublicKey,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<(), AuthError> {
    let got = verify_body(who, headers, body)?;
    if &got != expected {
        return Err(AuthError::UnexpectedKey {
            component: who.name(),
            want: *expected,
            got,
        });
    }
    Ok(())
}

/// A failed interface version gate. `Display` is the original's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionGateError {
    /// Server side: the request's version header is unparsable or incompatible.
    #[error("invalid client API version: {source}")]
    Client {
        /// Which interface.
        interface: Interface,
        /// What was wrong.
        source: VersionError,
    },
    /// Client side: the response's version header is unparsable or incompatible.
    #[error("invalid server API version: {source}")]
    Server {
        /// Which interface.
        interface: Interface,
        /// What was wrong.
        source: VersionError,
    },
}

impl ToStatus for VersionGateError {
    fn to_status(&self) -> Status {
        Status::bad_request().with_cause(self.to_string())
    }
}

/// Server side: checks the version header of every interface in `served` that the request
/// carries (absent or empty headers are not checked).
pub fn check_request_versions(
    served: &[Interface],
    headers: &(impl Headers + ?Sized),
) -> Result<(), VersionGateError> {
    for &interface in served {
        // An empty value counts as absent, as with Go's `Header.Get`.
        if let Some(v) = headers
            .get(interface.header_name())
            .filter(|v| !v.is_empty())
        {
            interface
                .check(v)
                .map_err(|source| VersionGateError::Client { interface, source })?;
        }
    }
    Ok(())
}

/// Client side: checks the version header of every interface in `spoken` that the response
/// carries (absent or empty headers are not checked).
pub fn check_response_versions(
    spoken: &[Interface],
    headers: &(impl Headers + ?Sized),
) -> Result<(), VersionGateError> {
    for &interface in spoken {
        if let Some(v) = headers
            .get(interface.header_name())
            .filter(|v| !v.is_empty())
        {
            interface
                .check(v)
                .map_err(|source| VersionGateError::Server { interface, source })?;
        }
    }
    Ok(())
}

/// Server side: the cache key under which a response may be stored and replayed (§18):
/// only POSTs with a non-empty Idempotency-Key are cached.
pub fn idempotency_cache_key(method: Method, key: Option<&str>) -> Option<&str> {
    match (method, key) {
        (Method::Post, Some(k)) if !k.is_empty() => Some(k),
        _ => None,
    }
}
