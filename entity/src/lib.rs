//! sea-orm entities for the tables of exchange-connections. Entities only
//! (and the audit chain's encoding, which the migrations share): rules live
//! in the app's `service` layer. Enum-like columns (exchange,
//! status, ...) are stored as their SCREAMING_CASE names.

pub mod audit_chain;
pub mod connection_audit_heads;
pub mod connection_audit_log;
pub mod connection_health_checks;
pub mod connection_usage;
pub mod exchange_keys;
pub mod kite_login_states;
pub mod users;

pub use sea_orm;

/// Timestamps are stored with microsecond precision on both backends
/// (PostgreSQL `timestamptz` keeps µs; SQLite would keep ns), so values
/// round-trip identically everywhere.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
