//! Connections: create, test, rotate, revoke, list. Exchange calls happen
//! before a transaction opens (never hold a transaction across the
//! network); each write and its audit entry then commit together.

use super::alerts;
use super::announce::kind;
use super::audit::{self, action};
use super::health::next_check_at;
use super::input::{CreateConnectionInput, CredentialsInput, parse_id, validate_label, validate_reason};
use super::status::next_status;
use super::views::{ConnectionView, ExchangeErrorView, TestResultView};
use super::{RequestContext, Services};
use crate::crypto::{SecretField, SecretOwner};
use crate::domain::{ConnectionStatus, Environment, Exchange};
use crate::error::{AppError, AppResult};
use crate::exchange::{Credentials, ExchangeClient, ExchangeError, TestReport};
use entity::{connection_health_checks as checks, exchange_keys as keys};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QueryTrait, Set, SqlErr,
};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

impl Services {
    /// The caller's connections, newest first; revoked ones only on request.
    pub async fn list_connections(
        &self,
        ctx: &RequestContext,
        include_revoked: bool,
    ) -> AppResult<Vec<ConnectionView>> {
        let mut query = keys::Entity::find().filter(keys::Column::UserId.eq(ctx.principal.user_id));
        if !include_revoked {
            query = query.filter(keys::Column::RevokedAt.is_null());
        }
        let txn = self.db.as_user(ctx.principal.user_id).await?;
        let rows = query
            .order_by_desc(keys::Column::CreatedAt)
            .order_by_desc(keys::Column::Id)
            .all(&txn)
            .await?;
        super::tenancy::end_read(txn);
        rows.iter().map(ConnectionView::try_from).collect()
    }

    /// One of the caller's connections; another user's is `NOT_FOUND`.
    pub async fn get_connection(&self, ctx: &RequestContext, id: &str) -> AppResult<ConnectionView> {
        let row = self.owned_row(ctx, id).await?;
        ConnectionView::try_from(&row)
    }

    /// Tests credentials without storing anything (the wizard's step).
    pub async fn test_credentials(&self, ctx: &RequestContext, input: CredentialsInput) -> AppResult<TestResultView> {
        let (exchange, environment, credentials) = input.into_credentials("input.")?;
        let client = self.client_for(exchange, environment, &credentials, "input.")?;
        self.limiter.check(ctx.principal.user_id)?;
        client.forget_failure(&credentials.api_key);
        Ok(match client.test(environment, &credentials).await {
            Ok(report) => {
                let mut warnings = self.policy.warnings(&report);
                if let Err(refusal) = self.policy.check(exchange, &report, "input") {
                    warnings.insert(0, format!("Saving this key would be refused: {refusal}"));
                }
                test_ok(&report, warnings)
            }
            Err(error) => test_failed(&error),
        })
    }

    pub async fn create_connection(
        &self,
        ctx: &RequestContext,
        input: CreateConnectionInput,
    ) -> AppResult<ConnectionView> {
        let label = validate_label("input.label", &input.label)?;
        let mut test_first = input.test_first.unwrap_or(true);
        let (exchange, environment, credentials) = input.credentials.into_credentials("input.credentials.")?;
        let client = self.client_for(exchange, environment, &credentials, "input.credentials.")?;
        let fingerprints = self
            .keyring
            .fingerprints(exchange.as_str(), credentials.api_key.expose());
        self.ensure_unique(ctx.principal.user_id, exchange, &label, &fingerprints, None)
            .await?;

        // Keys that need an interactive login cannot be tested before it.
        let needs_login = client.requires_login();
        test_first &= !needs_login;
        if test_first {
            self.limiter.check(ctx.principal.user_id)?;
        }
        let report = if test_first {
            Some(
                client
                    .test(environment, &credentials)
                    .await
                    .map_err(|error| AppError::Exchange {
                        context: "the key did not pass its test, nothing was saved",
                        error,
                    })?,
            )
        } else {
            None
        };

        if let Some(report) = &report {
            self.policy.check(exchange, report, "input.credentials")?;
        }

        let id = Uuid::new_v4();
        let owner = SecretOwner {
            user_id: ctx.principal.user_id,
            connection_id: id,
        };
        let now = entity::now();
        let status = if report.is_some() {
            ConnectionStatus::Healthy
        } else if needs_login {
            ConnectionStatus::NeedsReauth
        } else {
            ConnectionStatus::Pending
        };
        let mut row = keys::ActiveModel {
            id: Set(id),
            user_id: Set(ctx.principal.user_id),
            exchange: Set(exchange.as_str().into()),
            environment: Set(environment.as_str().into()),
            label: Set(label.clone()),
            status: Set(status.as_str().into()),
            api_key_hint: Set(crate::crypto::api_key_hint(credentials.api_key.expose())),
            api_key_fingerprint: Set(fingerprints.first().cloned()),
            consecutive_failures: Set(0),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };
        self.seal_into(&mut row, &owner, &credentials)?;
        if let Some(report) = &report {
            apply_success(&mut row, report, now);
        }
        row.next_check_at = Set(next_check_at(status, None, self.health_check_interval, now));

        let details = json!({
            "exchange": exchange,
            "environment": environment,
            "label": label,
            "apiKeyHint": crate::crypto::api_key_hint(credentials.api_key.expose()),
            "tested": report.is_some(),
            "permissions": report.as_ref().map(|r| r.permissions),
        });
        let ctx2 = ctx.clone();
        let report2 = report.clone();
        let inserted = self
            .db
            .user_transaction(ctx.principal.user_id, move |txn| {
                Box::pin(async move {
                    let inserted = row.insert(txn).await.map_err(conflict_or_internal)?;
                    let entry = audit::record(txn, &ctx2, Some(id), action::CREATED, details).await?;
                    if let Some(report) = &report2 {
                        record_check(txn, &inserted, Ok(report), "manual").await?;
                    }
                    Ok((inserted, vec![entry]))
                })
            })
            .await?;
        let (inserted, entries) = inserted;
        self.announce(kind::CREATED, &inserted, None, &entries);
        metrics::counter!("connections_created_total", "exchange" => exchange.as_str()).increment(1);
        ConnectionView::try_from(&inserted)
    }

    /// Tests a stored connection, records the outcome and moves its status.
    pub async fn test_connection(&self, ctx: &RequestContext, id: &str) -> AppResult<TestResultView> {
        let (row, exchange, environment) = self.live_row(ctx, id).await?;
        self.limiter.check(ctx.principal.user_id)?;
        let credentials = self.open_credentials(&row)?;
        let client = self
            .exchanges
            .get(exchange)
            .map_err(|e| AppError::bad_input("id", e.to_string()))?;
        // A manual test is the user acting: a remembered refusal may be retried.
        client.forget_failure(&credentials.api_key);
        let outcome = client.test(environment, &credentials).await;
        drop(credentials);
        let result = match &outcome {
            Ok(report) => test_ok(report, self.policy.warnings(report)),
            Err(error) => test_failed(error),
        };
        self.record_test_outcome(ctx, row, outcome, TestSource::Manual).await?;
        Ok(result)
    }

    /// Applies a test's outcome: health fields, status, next due time, history, audit.
    pub(super) async fn record_test_outcome(
        &self,
        ctx: &RequestContext,
        row: keys::Model,
        outcome: Result<TestReport, ExchangeError>,
        source: TestSource,
    ) -> AppResult<keys::Model> {
        let ctx = ctx.clone();
        let connection_id = row.id;
        let interval = self.health_check_interval;
        let event = match source {
            TestSource::Worker { .. } => kind::HEALTH_CHECKED,
            TestSource::Manual => kind::TESTED,
        };
        let (updated, before, entries) = self
            .db
            .user_transaction(ctx.principal.user_id, move |txn| {
                Box::pin(async move {
                    // Re-read inside the transaction: the row may have been revoked meanwhile.
                    let current = keys::Entity::find_by_id(connection_id)
                        .filter(keys::Column::UserId.eq(ctx.principal.user_id))
                        .one(txn)
                        .await?
                        .ok_or(AppError::NotFound("connection"))?;
                    if current.revoked_at.is_some() {
                        return Err(AppError::bad_input("id", "this connection was revoked during the test"));
                    }
                    let before = stored_enum(ConnectionStatus::parse(&current.status), current.id)?;
                    let now = entity::now();
                    let mut active = current.clone().into_active_model();
                    let (after, details) = match &outcome {
                        Ok(report) => {
                            apply_success(&mut active, report, now);
                            (
                                ConnectionStatus::Healthy,
                                json!({ "ok": true, "latencyMs": latency_ms(report) }),
                            )
                        }
                        Err(error) => {
                            let failures = current.consecutive_failures.saturating_add(1);
                            let after = next_status(before, Some(error.code), failures);
                            active.status = Set(after.as_str().into());
                            active.consecutive_failures = Set(failures);
                            active.last_checked_at = Set(Some(now));
                            active.last_error = Set(Some(ExchangeErrorView::from(error).to_json()));
                            (after, json!({ "ok": false, "error": error.code }))
                        }
                    };
                    active.updated_at = Set(now);
                    let code = outcome.as_ref().err().map(|e| e.code);
                    active.next_check_at = Set(next_check_at(after, code, interval, now));
                    // (`updated_at` is set above, as the entity's `before_save` would.)
                    let mut update = keys::Entity::update(active).validate()?;
                    if let TestSource::Worker { lease_owner } = &source {
                        // The worker's lease ends with its outcome, in the same
                        // statement, if it still holds it: judged by the row being
                        // updated, so a lease that lapsed and was claimed by
                        // another worker meanwhile stays theirs.
                        for column in [keys::Column::LeaseOwner, keys::Column::LeaseExpiresAt] {
                            let held = keys::Column::LeaseOwner.eq(lease_owner.as_str());
                            let released = Expr::case(held, Expr::null()).finally(Expr::col(column));
                            QueryTrait::query(&mut update).value(column, released);
                        }
                    }
                    let updated = update.exec(txn).await?;
                    record_check(txn, &updated, outcome.as_ref(), source.as_str()).await?;
                    // A test the user asked for is audited; the health monitor's
                    // routine checks are not (their history is
                    // `connection_health_checks`, which has a retention limit,
                    // while the audit log is append-only and never pruned): only
                    // the status changes and alerts they cause are.
                    let mut entries = Vec::new();
                    if matches!(source, TestSource::Manual) {
                        entries.push(audit::record(txn, &ctx, Some(connection_id), action::TESTED, details).await?);
                    }
                    let alert = match &outcome {
                        Ok(report) => {
                            let stored = alerts::stored_permissions(current.permissions.as_ref());
                            alerts::on_permissions(txn, &ctx, connection_id, stored, &report.permissions).await?
                        }
                        Err(_) if matches!(source, TestSource::Manual) => {
                            alerts::on_failed_test(txn, &ctx, connection_id).await?
                        }
                        Err(_) => None,
                    };
                    entries.extend(alert);
                    if before != after {
                        entries.push(
                            audit::record(
                                txn,
                                &ctx,
                                Some(connection_id),
                                action::STATUS_CHANGED,
                                json!({ "from": before, "to": after }),
                            )
                            .await?,
                        );
                    }
                    Ok((updated, before, entries))
                })
            })
            .await?;
        self.announce(event, &updated, Some(before.as_str()), &entries);
        Ok(updated)
    }

    /// Replaces a connection's key with new credentials, after testing them.
    pub async fn rotate_keys(
        &self,
        ctx: &RequestContext,
        id: &str,
        input: CredentialsInput,
    ) -> AppResult<ConnectionView> {
        let row = self.owned_row(ctx, id).await?;
        if row.revoked_at.is_some() {
            return Err(AppError::bad_input(
                "id",
                "this connection is revoked; create a new one",
            ));
        }
        let (exchange, environment, credentials) = input.into_credentials("credentials.")?;
        if exchange.as_str() != row.exchange {
            return Err(AppError::bad_input(
                "credentials.exchange",
                format!("this connection is for {}", row.exchange),
            ));
        }
        if environment.as_str() != row.environment {
            return Err(AppError::bad_input(
                "credentials.environment",
                format!("this connection is for {}", row.environment),
            ));
        }
        let client = self.client_for(exchange, environment, &credentials, "credentials.")?;
        let fingerprints = self
            .keyring
            .fingerprints(exchange.as_str(), credentials.api_key.expose());
        self.ensure_unique(ctx.principal.user_id, exchange, &row.label, &fingerprints, Some(row.id))
            .await?;
        self.limiter.check(ctx.principal.user_id)?;
        let report = client
            .test(environment, &credentials)
            .await
            .map_err(|error| AppError::Exchange {
                context: "the new key did not pass its test, the old key is unchanged",
                error,
            })?;
        self.policy.check(exchange, &report, "credentials")?;

        let owner = SecretOwner {
            user_id: ctx.principal.user_id,
            connection_id: row.id,
        };
        let now = entity::now();
        let old_hint = row.api_key_hint.clone();
        let new_hint = crate::crypto::api_key_hint(credentials.api_key.expose());
        let mut active = row.clone().into_active_model();
        self.seal_into(&mut active, &owner, &credentials)?;
        active.api_key_fingerprint = Set(fingerprints.first().cloned());
        active.api_key_hint = Set(new_hint.clone());
        apply_success(&mut active, &report, now);
        active.updated_at = Set(now);
        active.next_check_at = Set(next_check_at(
            ConnectionStatus::Healthy,
            None,
            self.health_check_interval,
            now,
        ));
        let before = row.status.clone();
        let ctx = ctx.clone();
        let status_before = before.clone();
        let (updated, entries) = self
            .db
            .user_transaction(ctx.principal.user_id, move |txn| {
                Box::pin(async move {
                    // Only a live row is rotated; a concurrent revoke wins.
                    let live = keys::Entity::find_by_id(row.id)
                        .filter(keys::Column::RevokedAt.is_null())
                        .one(txn)
                        .await?;
                    if live.is_none() {
                        return Err(AppError::bad_input("id", "this connection was revoked"));
                    }
                    let updated = active.update(txn).await.map_err(conflict_or_internal)?;
                    let mut entries = vec![
                        audit::record(
                            txn,
                            &ctx,
                            Some(row.id),
                            action::ROTATED,
                            json!({ "oldApiKeyHint": old_hint, "newApiKeyHint": new_hint, "permissions": report.permissions }),
                        )
                        .await?,
                    ];
                    record_check(txn, &updated, Ok(&report), "manual").await?;
                    let stored = alerts::stored_permissions(row.permissions.as_ref());
                    entries.extend(alerts::on_permissions(txn, &ctx, row.id, stored, &report.permissions).await?);
                    entries.extend(alerts::on_rotation(txn, &ctx, row.id).await?);
                    if before != updated.status {
                        entries.push(
                            audit::record(
                                txn,
                                &ctx,
                                Some(row.id),
                                action::STATUS_CHANGED,
                                json!({ "from": before, "to": updated.status }),
                            )
                            .await?,
                        );
                    }
                    Ok((updated, entries))
                })
            })
            .await?;
        self.announce(kind::ROTATED, &updated, Some(&status_before), &entries);
        ConnectionView::try_from(&updated)
    }

    /// Revokes a connection: erases its ciphertext, keeps the row. Idempotent.
    pub async fn revoke_connection(
        &self,
        ctx: &RequestContext,
        id: &str,
        reason: Option<String>,
    ) -> AppResult<ConnectionView> {
        let reason = validate_reason("reason", reason)?;
        let connection_id = parse_id("id", id)?;
        let ctx = ctx.clone();
        let (row, entries) = self
            .db
            .user_transaction(ctx.principal.user_id, move |txn| {
                Box::pin(async move {
                    let row = owned_row_by_id(txn, &ctx, connection_id).await?;
                    if row.revoked_at.is_some() {
                        return Ok((row, Vec::new()));
                    }
                    let before = row.status.clone();
                    let now = entity::now();
                    let mut active = row.into_active_model();
                    active.status = Set(ConnectionStatus::Revoked.as_str().into());
                    active.api_key_encrypted = Set(None);
                    active.api_secret_encrypted = Set(None);
                    active.passphrase_encrypted = Set(None);
                    active.key_version = Set(None);
                    active.api_key_fingerprint = Set(None);
                    active.next_check_at = Set(None);
                    active.revoked_at = Set(Some(now));
                    active.revoke_reason = Set(reason.clone());
                    active.updated_at = Set(now);
                    let updated = active.update(txn).await?;
                    let entry = audit::record(
                        txn,
                        &ctx,
                        Some(connection_id),
                        action::REVOKED,
                        json!({ "reason": reason, "previousStatus": before }),
                    )
                    .await?;
                    Ok((updated, vec![entry]))
                })
            })
            .await?;
        if !entries.is_empty() {
            self.announce(kind::REVOKED, &row, None, &entries);
        }
        ConnectionView::try_from(&row)
    }

    // ---- helpers -------------------------------------------------------

    /// One of the caller's live (not revoked) connections, with its exchange and environment.
    pub(super) async fn live_row(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> AppResult<(keys::Model, Exchange, Environment)> {
        let row = self.owned_row(ctx, id).await?;
        if row.revoked_at.is_some() {
            return Err(AppError::bad_input(
                "id",
                "this connection is revoked; create a new one",
            ));
        }
        let exchange = stored_enum(Exchange::parse(&row.exchange), row.id)?;
        let environment = stored_enum(Environment::parse(&row.environment), row.id)?;
        Ok((row, exchange, environment))
    }

    /// One of the caller's connections, read in its own transaction.
    pub(super) async fn owned_row(&self, ctx: &RequestContext, id: &str) -> AppResult<keys::Model> {
        let id = parse_id("id", id)?;
        let txn = self.db.as_user(ctx.principal.user_id).await?;
        let row = owned_row_by_id(&txn, ctx, id).await?;
        super::tenancy::end_read(txn);
        Ok(row)
    }

    /// The client for an exchange, after checking the credential's shape.
    fn client_for(
        &self,
        exchange: Exchange,
        environment: Environment,
        credentials: &Credentials,
        prefix: &str,
    ) -> AppResult<Arc<dyn ExchangeClient>> {
        let client = self
            .exchanges
            .get(exchange)
            .map_err(|e| AppError::bad_input(format!("{prefix}exchange"), e.to_string()))?;
        client
            .check_credentials(environment, credentials)
            .map_err(|e| AppError::bad_input(format!("{prefix}{}", e.field), e.message))?;
        Ok(client)
    }

    /// CONFLICT when the user already has a live connection with this label
    /// on this exchange, or with this API key (under any ring key's fingerprint).
    async fn ensure_unique(
        &self,
        user_id: Uuid,
        exchange: Exchange,
        label: &str,
        fingerprints: &[String],
        except: Option<Uuid>,
    ) -> AppResult<()> {
        let mut query = keys::Entity::find()
            .filter(keys::Column::UserId.eq(user_id))
            .filter(keys::Column::RevokedAt.is_null())
            .filter(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(keys::Column::Exchange.eq(exchange.as_str()))
                            .add(keys::Column::Label.eq(label)),
                    )
                    .add(keys::Column::ApiKeyFingerprint.is_in(fingerprints.iter().cloned())),
            );
        if let Some(except) = except {
            query = query.filter(keys::Column::Id.ne(except));
        }
        let txn = self.db.as_user(user_id).await?;
        let existing = query.one(&txn).await?;
        super::tenancy::end_read(txn);
        if let Some(existing) = existing {
            return Err(if existing.exchange == exchange.as_str() && existing.label == label {
                AppError::Conflict(format!("you already have a {exchange} connection labelled \"{label}\""))
            } else {
                AppError::Conflict(format!(
                    "this API key is already connected (as \"{}\"); rotate or revoke that connection instead",
                    existing.label
                ))
            });
        }
        Ok(())
    }

    fn seal_into(&self, row: &mut keys::ActiveModel, owner: &SecretOwner, credentials: &Credentials) -> AppResult<()> {
        let seal = |field, value| self.keyring.seal(owner, field, value).map_err(AppError::internal);
        let api_key = seal(SecretField::ApiKey, &credentials.api_key)?;
        let api_secret = seal(SecretField::ApiSecret, &credentials.api_secret)?;
        let passphrase = credentials
            .passphrase
            .as_ref()
            .map(|p| seal(SecretField::Passphrase, p))
            .transpose()?;
        row.key_version = Set(Some(api_key.key_id));
        row.api_key_encrypted = Set(Some(api_key.token));
        row.api_secret_encrypted = Set(Some(api_secret.token));
        row.passphrase_encrypted = Set(passphrase.map(|p| p.token));
        Ok(())
    }

    /// Opens a row's secrets. A token no configured key opens fails this
    /// connection only (logged with its id, never its content).
    pub(super) fn open_credentials(&self, row: &keys::Model) -> AppResult<Credentials> {
        let owner = SecretOwner {
            user_id: row.user_id,
            connection_id: row.id,
        };
        let open = |field, token: &Option<String>| {
            let token = token.as_deref().ok_or(AppError::SecretUnreadable)?;
            self.keyring.open(&owner, field, token).map_err(|error| {
                tracing::error!(connection_id = %row.id, %error, "stored secret cannot be opened");
                metrics::counter!("secret_decrypt_failures_total").increment(1);
                AppError::SecretUnreadable
            })
        };
        Ok(Credentials {
            access_token: match &row.access_token_encrypted {
                Some(_) => Some(open(SecretField::AccessToken, &row.access_token_encrypted)?),
                None => None,
            },
            api_key: open(SecretField::ApiKey, &row.api_key_encrypted)?,
            api_secret: open(SecretField::ApiSecret, &row.api_secret_encrypted)?,
            passphrase: match &row.passphrase_encrypted {
                Some(_) => Some(open(SecretField::Passphrase, &row.passphrase_encrypted)?),
                None => None,
            },
        })
    }
}

pub(super) async fn owned_row_by_id(
    db: &impl ConnectionTrait,
    ctx: &RequestContext,
    id: Uuid,
) -> AppResult<keys::Model> {
    keys::Entity::find_by_id(id)
        .filter(keys::Column::UserId.eq(ctx.principal.user_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("connection"))
}

fn stored_enum<T>(value: Option<T>, id: Uuid) -> AppResult<T> {
    value.ok_or_else(|| AppError::internal(anyhow::anyhow!("exchange_keys row {id} has an invalid enum value")))
}

fn conflict_or_internal(err: DbErr) -> AppError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            AppError::Conflict("a live connection with this label or API key already exists".into())
        }
        _ => err.into(),
    }
}

fn latency_ms(report: &TestReport) -> i32 {
    i32::try_from(report.latency.as_millis()).unwrap_or(i32::MAX)
}

fn test_ok(report: &TestReport, warnings: Vec<String>) -> TestResultView {
    TestResultView {
        warnings,
        ok: true,
        latency_ms: Some(latency_ms(report)),
        error: None,
        permissions: Some(report.permissions),
    }
}

fn test_failed(error: &ExchangeError) -> TestResultView {
    TestResultView {
        warnings: Vec::new(),
        ok: false,
        latency_ms: None,
        error: Some(ExchangeErrorView::from(error)),
        permissions: None,
    }
}

fn apply_success(row: &mut keys::ActiveModel, report: &TestReport, now: chrono::DateTime<chrono::Utc>) {
    row.status = Set(ConnectionStatus::Healthy.as_str().into());
    row.permissions = Set(serde_json::to_value(report.permissions).ok());
    row.last_checked_at = Set(Some(now));
    row.last_success_at = Set(Some(now));
    row.consecutive_failures = Set(0);
    row.latency_ms = Set(Some(latency_ms(report)));
    row.last_error = Set(None);
}

/// Who ran a test: a user, or the health monitor holding the connection's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TestSource {
    Manual,
    /// The lease is given back with the outcome when this worker still holds it.
    Worker {
        lease_owner: String,
    },
}

impl TestSource {
    /// As stored in `connection_health_checks.source`.
    fn as_str(&self) -> &'static str {
        match self {
            TestSource::Manual => "manual",
            TestSource::Worker { .. } => "worker",
        }
    }
}

/// Appends a row to the connection's health history and counts the call
/// in its usage bucket.
async fn record_check(
    txn: &impl ConnectionTrait,
    row: &keys::Model,
    outcome: Result<&TestReport, &ExchangeError>,
    source: &str,
) -> AppResult<()> {
    let (ok, latency, code, message) = match outcome {
        Ok(report) => (true, Some(latency_ms(report)), None, None),
        Err(error) => (
            false,
            None,
            Some(error.code.as_str().to_string()),
            Some(error.message.clone()),
        ),
    };
    let now = entity::now();
    checks::Entity::insert(checks::ActiveModel {
        id: Set(Uuid::now_v7()),
        connection_id: Set(row.id),
        user_id: Set(row.user_id),
        checked_at: Set(now),
        ok: Set(ok),
        latency_ms: Set(latency),
        error_code: Set(code),
        error_message: Set(message),
        source: Set(source.into()),
    })
    .exec_without_returning(txn)
    .await?;
    super::usage::record(txn, row.id, row.user_id, now, outcome).await?;
    Ok(())
}
