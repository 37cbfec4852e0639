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
