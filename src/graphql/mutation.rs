//! Mutation resolvers.

use super::context::caller;
use crate::service::diagnosis::DiagnosisView;
use crate::service::input::{CreateConnectionInput, CredentialsInput};
use crate::service::kite::KiteLoginView;
use crate::service::views::{ConnectionView, TestResultView};
use async_graphql::{Context, ErrorExtensions, ID, Object, Result};

pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Tests credentials against the exchange; stores nothing.
    async fn test_credentials(&self, ctx: &Context<'_>, input: CredentialsInput) -> Result<TestResultView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services.test_credentials(&rc, input).await.map_err(|e| e.extend())
    }

    /// Saves a connection (tested first unless `testFirst: false`).
    async fn create_connection(&self, ctx: &Context<'_>, input: CreateConnectionInput) -> Result<ConnectionView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services.create_connection(&rc, input).await.map_err(|e| e.extend())
    }

    /// Tests a saved connection and records the outcome.
    async fn test_connection(&self, ctx: &Context<'_>, id: ID) -> Result<TestResultView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services.test_connection(&rc, &id).await.map_err(|e| e.extend())
    }

    /// Replaces a connection's key, after testing the new one.
    async fn rotate_keys(&self, ctx: &Context<'_>, id: ID, credentials: CredentialsInput) -> Result<ConnectionView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services
            .rotate_keys(&rc, &id, credentials)
            .await
            .map_err(|e| e.extend())
    }

    /// Runs a connection's checks step by step: reach, clock, signed read, permissions, IP whitelist.
    async fn diagnose_connection(&self, ctx: &Context<'_>, id: ID) -> Result<DiagnosisView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services.diagnose_connection(&rc, &id).await.map_err(|e| e.extend())
    }

    /// Starts the daily Zerodha Kite login: returns the URL to send the user to and a single-use state.
    async fn begin_kite_login(&self, ctx: &Context<'_>, connection_id: ID) -> Result<KiteLoginView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services
            .begin_kite_login(&rc, &connection_id)
            .await
            .map_err(|e| e.extend())
    }

    /// Finishes the Kite login with the `request_token` Kite redirected back with.
    async fn complete_kite_login(
        &self,
        ctx: &Context<'_>,
        state: String,
        request_token: String,
    ) -> Result<ConnectionView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services
            .complete_kite_login(&rc, &state, &request_token)
            .await
            .map_err(|e| e.extend())
    }

    /// Revokes a connection: its stored secrets are erased, its history kept.
    async fn revoke_connection(&self, ctx: &Context<'_>, id: ID, reason: Option<String>) -> Result<ConnectionView> {
        let (services, rc) = caller(ctx).await.map_err(|e| e.extend())?;
        services
            .revoke_connection(&rc, &id, reason)
            .await
            .map_err(|e| e.extend())
    }
}
