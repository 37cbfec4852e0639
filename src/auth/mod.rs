//! Bearer-token authentication: Supabase-issued JWTs (HS256 with a shared
//! secret, or ES256/RS256 from a JWKS chosen by `kid`) verified to a
//! [`Principal`]. Anything else is `UNAUTHENTICATED`.

mod bearer;
mod claims;
mod error;
mod jwks;
mod jwt;
#[cfg(test)]
mod test_support;

pub use bearer::bearer_token;
pub use claims::Principal;
pub use error::AuthError;
pub use jwt::{AuthConfig, LEEWAY_SECS, Verifier, issue_hs256_token};

/// Installs `jsonwebtoken`'s aws-lc-rs crypto provider for the process.
/// Idempotent: a provider that is already installed is kept. Call it at
/// start-up; [`Verifier::new`] and [`issue_hs256_token`] call it too.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
