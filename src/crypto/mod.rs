//! The key ring and everything that touches key material: versioned Fernet
//! keys (MultiFernet semantics: encrypt under the primary, decrypt with any),
//! secret envelopes bound to their owner, API-key fingerprints and hints.
//! Nothing outside this module sees an encryption key.

mod keyring;
mod secret;

pub use keyring::{CryptoError, KeyRing, KeyRingError, Sealed, SecretField, SecretOwner, api_key_hint};
pub use secret::SecretString;
