//! exchange-connections: connect exchange accounts by API key, keep the keys
//! encrypted, test, rotate and revoke them, and audit every change.
//!
//! Layers, outermost first: `http` (axum router, middleware) → `graphql`
//! (schema, thin resolvers) → `service` (rules and transactions) →
//! `exchange` (clients), `crypto` (key ring), `auth` (JWT) and the
//! `entity`/`migration` crates.

pub mod auth;
pub mod crypto;
pub mod domain;
pub mod exchange;
