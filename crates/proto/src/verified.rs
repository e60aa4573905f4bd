//! `Verified<T>`: proof in the type system that a signed object passed its checks.
//!
//! Parsed objects (`Sharetoken`, `Pof`, `ContractSection`) are unverified by default. Only the
//! verification functions of this crate can wrap one in `Verified`, so code that takes a
//! `Verified<Sharetoken>` cannot be handed a token that skipped the relay's checks (the Arti
//! `UnverifiedChannel` → `VerifiedChannel` pattern). It grants read access and can be
//! serialised (e.g. to forward a token to the contract), but never deserialised: bytes from
//! outside always go through `verify` again.

use std::ops::Deref;

/// A `T` that passed the verification function that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// Only verification code inside this crate may vouch for a value.
    pub(crate) fn vouch(value: T) -> Self {
        Self(value)
    }

    /// The verified value.
    pub fn get(&self) -> &T {
        &self.0
    }

    /// Gives up the proof and returns the plain value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> AsRef<T> for Verified<T> {
    fn as_ref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::Serialize> serde::Serialize for Verified<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}
