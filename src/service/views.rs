//! What the service returns: connection, health, test result and audit
//! views. They are built from rows but never carry secret material (no
//! ciphertext, no fingerprint), so they are safe to serialise anywhere.

use crate::domain::{ConnectionStatus, Environment, Exchange, ExchangeErrorCode, Permissions};
use crate::error::{AppError, AppResult};
use crate::exchange::ExchangeError;
use async_graphql::{ID, Json, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{connection_audit_log, exchange_keys};
use serde::{Deserialize, Serialize};

/// A classified exchange failure as the user sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, SimpleObject)]
#[graphql(name = "ExchangeError")]
#[serde(rename_all = "camelCase")]
pub struct ExchangeErrorView {
    pub code: ExchangeErrorCode,
    pub message: String,
    pub retryable: bool,
    pub hint: Option<String>,
}

impl From<&ExchangeError> for ExchangeErrorView {
    fn from(e: &ExchangeError) -> Self {
        Self {
            code: e.code,
            message: e.message.clone(),
            retryable: e.retryable(),
            hint: e.hint.clone(),
        }
    }
}

impl ExchangeErrorView {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, SimpleObject)]
#[graphql(name = "Health")]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub latency_ms: Option<i32>,
    pub last_error: Option<ExchangeErrorView>,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "Connection")]
pub struct ConnectionView {
    pub id: ID,
    pub exchange: Exchange,
    pub label: String,
    pub environment: Environment,
    pub status: ConnectionStatus,
    /// First and last characters of the API key, e.g. `vmPU…Eh8A`.
    pub api_key_hint: String,
    pub permissions: Option<Permissions>,
    pub health: HealthView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<String>,
    /// When the current exchange session ends (Zerodha Kite: daily at 06:00 IST).
    pub session_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "TestResult")]
pub struct TestResultView {
    pub ok: bool,
    /// Things to fix although the key works (no IP restriction, withdrawal rights, …).
    pub warnings: Vec<String>,
    pub latency_ms: Option<i32>,
    pub error: Option<ExchangeErrorView>,
    pub permissions: Option<Permissions>,
}

#[derive(Debug, Clone, Serialize, Deserialize, SimpleObject)]
#[graphql(name = "AuditEntry")]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    pub id: ID,
    pub connection_id: Option<ID>,
    pub action: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub ip: Option<String>,
    /// The client's `User-Agent` (its first 512 characters).
    pub user_agent: Option<String>,
    /// The `X-Request-Id` of the request that made the change.
    pub request_id: Option<String>,
    pub details: Option<Json<serde_json::Value>>,
    /// The entry's number in the caller's audit chain (1, 2, …).
    #[serde(default)]
    pub seq: i64,
    /// SHA-256 (hex) of the entry's canonical encoding, chained to the previous entry's.
    #[serde(default)]
    pub hash: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "AuditLogPage")]
pub struct AuditLogPageView {
    pub nodes: Vec<AuditEntryView>,
    pub page_info: PageInfo,
}

fn parse_json<T: serde::de::DeserializeOwned>(value: &Option<serde_json::Value>) -> Option<T> {
    value.clone().and_then(|v| serde_json::from_value(v).ok())
}

/// What happened to a connection, pushed to its owner's subscribers.
#[derive(Debug, Clone, Serialize, Deserialize, SimpleObject)]
#[graphql(name = "ConnectionEvent")]
#[serde(rename_all = "camelCase")]
pub struct ConnectionEventView {
    /// `created`, `tested`, `rotated`, `revoked`, `status_changed`, `health_checked`, `session_started`.
    pub kind: String,
    pub connection_id: ID,
    pub status: ConnectionStatus,
    /// The status before, when `kind` is `status_changed`.
    pub previous_status: Option<ConnectionStatus>,
    pub at: DateTime<Utc>,
    pub health: Option<HealthView>,
}

impl ConnectionEventView {
    pub fn of(kind: &str, connection: &ConnectionView) -> Self {
        Self {
            kind: kind.to_string(),
            connection_id: connection.id.clone(),
            status: connection.status,
            previous_status: None,
            at: connection.updated_at,
            health: Some(connection.health.clone()),
        }
    }
}

fn corrupt(what: &str, id: uuid::Uuid) -> AppError {
    AppError::internal(anyhow::anyhow!("exchange_keys row {id} has an invalid {what}"))
}

impl TryFrom<&exchange_keys::Model> for ConnectionView {
    type Error = AppError;

    fn try_from(row: &exchange_keys::Model) -> AppResult<Self> {
        Ok(Self {
            id: ID(row.id.to_string()),
            exchange: Exchange::parse(&row.exchange).ok_or_else(|| corrupt("exchange", row.id))?,
            label: row.label.clone(),
            environment: Environment::parse(&row.environment).ok_or_else(|| corrupt("environment", row.id))?,
            status: ConnectionStatus::parse(&row.status).ok_or_else(|| corrupt("status", row.id))?,
            api_key_hint: row.api_key_hint.clone(),
            permissions: parse_json(&row.permissions),
            health: HealthView {
                last_checked_at: row.last_checked_at,
                last_success_at: row.last_success_at,
                consecutive_failures: row.consecutive_failures,
                latency_ms: row.latency_ms,
                last_error: parse_json(&row.last_error),
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
            revoked_at: row.revoked_at,
            revoke_reason: row.revoke_reason.clone(),
            session_expires_at: row.session_expires_at,
        })
    }
}

impl From<&connection_audit_log::Model> for AuditEntryView {
    fn from(row: &connection_audit_log::Model) -> Self {
        Self {
            id: ID(row.id.to_string()),
            connection_id: row.connection_id.map(|id| ID(id.to_string())),
            action: row.action.clone(),
            at: row.created_at,
            actor: row.actor.clone(),
            ip: row.ip.clone(),
            user_agent: row.user_agent.clone(),
            request_id: row.request_id.clone(),
            details: row.details.clone().map(Json),
            seq: row.seq,
            hash: row.hash.clone(),
        }
    }
}
