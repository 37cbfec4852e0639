//! exchange-connections: connect exchange accounts by API key, keep the keys
//! encrypted, test, rotate and revoke them, and audit every change.
//!
//! Layers, outermost first: `http` (axum router, middleware) → `graphql`
//! (schema, thin resolvers) → `service` (rules and transactions) →
//! `exchange` (clients), `crypto` (key ring), `auth` (JWT) and the
//! `entity`/`migration` crates. `startup` wires them together.

pub mod auth;
pub mod config;
pub mod crypto;
pub mod database_role;
pub mod domain;
pub mod error;
pub mod events;
pub mod exchange;
pub mod graphql;
pub mod http;
pub mod service;
pub mod startup;
pub mod telemetry;
pub mod worker;

/// Installs the process-wide crypto providers (rustls and jsonwebtoken both
/// use aws-lc-rs). Call once at start; later calls do nothing.
pub fn install_crypto_providers() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
