//! Query resolvers.

use super::context::caller;
use super::exchanges::{ExchangeInfo, exchange_infos};
use crate::service::audit_verify::AuditVerificationView;
use crate::service::health::HealthSummaryView;
use crate::service::usage::UsageBucketView;
use crate::service::views::{AuditLogPageView, ConnectionView};
use async_graphql::{Context, ErrorExtensions, ID, Object, Result};
use chrono::{DateTime, Utc};

pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// The caller's connections, newest first.
    async fn connections(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(false)")] include_revoked: Option<bool>,
    ) -> Result<Vec<ConnectionView>> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services
            .list_connections(&rc, include_revoked.unwrap_or(false))
            .await
            .map_err(|e| e.extend())
    }

    /// One of the caller's connections (`NOT_FOUND` for anyone else's).
    async fn connection(&self, ctx: &Context<'_>, id: ID) -> Result<Option<ConnectionView>> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services
            .get_connection(&rc, &id)
            .await
            .map(Some)
            .map_err(|e| e.extend())
    }

    /// The caller's audit trail, newest first, optionally for one connection.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        connection_id: Option<ID>,
        #[graphql(default_with = "Some(50)")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<AuditLogPageView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        let connection_id = match connection_id {
            Some(id) => Some(services.get_connection(&rc, &id).await.map_err(|e| e.extend())?.id),
            None => None,
        };
        let connection_id = connection_id.and_then(|id| uuid::Uuid::parse_str(&id).ok());
        services
            .audit_log(&rc, connection_id, first.unwrap_or(50), after.as_deref())
            .await
            .map_err(|e| e.extend())
    }

    /// Checks the caller's audit chain end to end: every entry present,
    /// unaltered and linked, the newest where the chain's head records it.
    async fn verify_audit_log(&self, ctx: &Context<'_>) -> Result<AuditVerificationView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services.verify_audit_log(&rc).await.map_err(|e| e.extend())
    }

    /// Hourly usage of one of the caller's connections, oldest first; hours
    /// without calls are omitted. `from` defaults to 24 hours before `to`,
    /// `to` to now; the range may span at most 31 days.
    async fn connection_usage(
        &self,
        ctx: &Context<'_>,
        id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<UsageBucketView>> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services
            .connection_usage(&rc, &id, from, to)
            .await
            .map_err(|e| e.extend())
    }

    /// The caller's connections by status and exchange, and recent failures.
    async fn health_summary(&self, ctx: &Context<'_>) -> Result<HealthSummaryView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services.health_summary(&rc).await.map_err(|e| e.extend())
    }

    /// What each exchange needs, its IP-whitelist rules and docs.
    async fn exchanges(&self, ctx: &Context<'_>) -> Vec<ExchangeInfo> {
        let supported = ctx
            .data::<crate::service::Services>()
            .map(|s| s.exchanges.supported())
            .unwrap_or_default();
        exchange_infos(&supported)
    }

    /// The static IPs users must whitelist at their exchange.
    async fn egress_ips(&self, ctx: &Context<'_>) -> Vec<String> {
        ctx.data::<crate::service::Services>()
            .map(|s| s.egress_ips.as_ref().clone())
            .unwrap_or_default()
    }
}
