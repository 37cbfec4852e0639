//! Bearer-token authentication: Supabase-issued JWTs (HS256 with a shared
//! secret, or ES256/RS256 from a JWKS chosen by `kid`) verified to a
//! [`Principal`]. Anything else is `UNAUTHENTICATED`.

mod jwt;

pub use jwt::{AuthConfig, AuthError, Principal, Verifier, bearer_token, issue_hs256_token};
