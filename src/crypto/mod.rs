//! The key ring and everything that touches key material: versioned Fernet
//! keys (MultiFernet semantics: encrypt under the primary, decrypt with any),
//! secret envelopes bound to their owner, API-key fingerprints and hints.
//! Nothing outside this module sees an encryption key.

mod envelope;
mod fingerprint;
mod hint;
mod keyring;
mod keyspec;
mod secret;

#[cfg(test)]
mod interop_tests;

pub use envelope::{SecretField, SecretOwner};
pub use hint::api_key_hint;
pub use keyring::{CryptoError, KeyRing, Sealed};
pub use keyspec::KeyRingError;
pub use secret::SecretString;

/// Fernet keys for unit tests only (the first is the Fernet spec's).
#[cfg(test)]
pub(crate) mod test_keys {
    pub const OLD: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    pub const NEW: &str = "82Op4IGrGjHgPUZMsW_xocrghw1FQiFBL8s-bfXs02U=";
    pub const OTHER: &str = "myg1khgT6yqt843E2h35ateg6VgY8MD8bJLop5G6cSg=";
}
