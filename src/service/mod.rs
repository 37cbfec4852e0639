//! The business rules: create, test, rotate, revoke, list, audit. Every
//! write and its audit entry commit in one transaction. GraphQL resolvers
//! and the health-monitor worker call this layer; only this layer touches entities.

pub mod alerts;
mod announce;
pub mod audit;
pub mod audit_verify;
pub mod connections;
pub mod diagnosis;
pub mod health;
pub mod input;
pub mod kite;
pub mod lease;
pub mod limits;
pub mod policy;
pub mod rekey;
pub mod status;
pub mod tenancy;
pub mod usage;
pub mod users;
pub mod views;

use crate::auth::Principal;
use crate::crypto::KeyRing;
use crate::exchange::ExchangeRegistry;
use std::sync::Arc;

/// Who is acting and from where; recorded in audit entries.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub principal: Principal,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Set when the service acts on its own (e.g. `system:kite-session-expiry`).
    pub system_actor: Option<&'static str>,
}

impl RequestContext {
    /// The service acting on one user's rows by itself (the worker's check
    /// of a connection, an expired session). Its transactions are still
    /// scoped to that user; only work that spans users acts as the system.
    pub fn system(user_id: uuid::Uuid, actor: &'static str) -> Self {
        Self {
            principal: Principal {
                user_id,
                role: "system".into(),
                email: None,
                expires_at: chrono::Utc::now(),
            },
            request_id: None,
            ip: None,
            user_agent: None,
            system_actor: Some(actor),
        }
    }

    pub fn actor(&self) -> String {
        match self.system_actor {
            Some(actor) => actor.to_string(),
            None => format!("user:{}", self.principal.user_id),
        }
    }
}

/// The service layer's dependencies, shared by every request.
#[derive(Clone)]
pub struct Services {
    /// Transactions as a user or as the system (row-level security).
    pub db: tenancy::TenantDb,
    pub keyring: Arc<KeyRing>,
    pub exchanges: ExchangeRegistry,
    pub users: Arc<users::UserDirectory>,
    pub egress_ips: Arc<Vec<String>>,
    pub policy: policy::KeyPolicy,
    /// Per-user limit on mutations that call an exchange.
    pub limiter: Arc<limits::ExchangeCallLimiter>,
    /// Where committed changes are announced to subscribers.
    pub events: crate::events::EventHub,
    /// `HEALTH_CHECK_INTERVAL`: when each check schedules the next one.
    pub health_check_interval: std::time::Duration,
}
