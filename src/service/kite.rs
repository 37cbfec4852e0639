//! Zerodha Kite's daily login: `beginKiteLogin` issues a single-use state
//! and the login URL; `completeKiteLogin` exchanges the request token for
//! the day's session, stored encrypted with its expiry (06:00 IST). A sweep
//! moves connections whose session expired to `NEEDS_REAUTH`.

use super::announce::kind;
use super::audit::{self, action};
use super::connections::owned_row_by_id;
use super::views::ConnectionView;
use super::{RequestContext, Services};
use crate::crypto::{SecretField, SecretOwner};
use crate::domain::{ConnectionStatus, Exchange};
use crate::error::{AppError, AppResult};
use async_graphql::SimpleObject;
use base64::Engine;
use chrono::{DateTime, Utc};
use entity::{exchange_keys as keys, kite_login_states as states};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long a login state may wait for the user to come back from Kite.
const STATE_TTL: chrono::Duration = chrono::Duration::minutes(10);

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "KiteLogin")]
pub struct KiteLoginView {
    /// Send the user's browser here.
    pub login_url: String,
    /// Single-use; comes back with the request token after the login.
    pub state: String,
    pub expires_at: DateTime<Utc>,
}

fn state_hash(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

impl Services {
    pub async fn begin_kite_login(&self, ctx: &RequestContext, connection_id: &str) -> AppResult<KiteLoginView> {
        let (row, exchange, _) = self
            .live_row(ctx, connection_id)
            .await
            .map_err(|e| rename_field(e, "connectionId"))?;
        if exchange != Exchange::Zerodha {
            return Err(AppError::bad_input(
                "connectionId",
                "only Zerodha connections log in with Kite",
            ));
        }
        let kite = self
            .exchanges
            .kite()
            .ok_or_else(|| AppError::bad_input("connectionId", "Kite is not available"))?;
        let credentials = self.open_credentials(&row)?;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = entity::now();
        let expires_at = now + STATE_TTL;
        let login_url = kite.login_url(credentials.api_key.expose(), &state).to_string();
        drop(credentials);
        let txn = self.db.as_user(ctx.principal.user_id).await?;
        states::Entity::insert(states::ActiveModel {
            state_hash: Set(state_hash(&state)),
            user_id: Set(row.user_id),
            connection_id: Set(row.id),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        // Old states are useless: forget the user's as new ones are made
        // (the session sweep forgets everyone's).
        states::Entity::delete_many()
            .filter(states::Column::ExpiresAt.lt(now))
            .exec(&txn)
            .await?;
        let entry = audit::record(
            &txn,
            ctx,
            Some(row.id),
            action::KITE_LOGIN_STARTED,
            json!({ "expiresAt": expires_at }),
        )
        .await?;
        txn.commit().await?;
        self.announce_audit(&[entry]);
        Ok(KiteLoginView {
            login_url,
            state,
            expires_at,
        })
    }

    pub async fn complete_kite_login(
        &self,
        ctx: &RequestContext,
        state: &str,
        request_token: &str,
    ) -> AppResult<ConnectionView> {
        let kite = self
            .exchanges
            .kite()
            .ok_or_else(|| AppError::bad_input("state", "Kite is not available"))?;
        crate::exchange::kite::check_request_token(request_token)
            .map_err(|e| AppError::bad_input("requestToken", e.message))?;
        let unknown = || AppError::bad_input("state", "unknown, used or expired login; start the Kite login again");
        if state.is_empty() || state.len() > 128 {
            return Err(unknown());
        }
        let now = entity::now();
        // Claim the state: one UPDATE, so two concurrent completions cannot both win.
        let txn = self.db.as_user(ctx.principal.user_id).await?;
        let claimed = states::Entity::update_many()
            .col_expr(states::Column::UsedAt, Expr::value(now))
            .filter(states::Column::StateHash.eq(state_hash(state)))
            .filter(states::Column::UserId.eq(ctx.principal.user_id))
            .filter(states::Column::UsedAt.is_null())
            .filter(states::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Err(unknown());
        }
        let claim = states::Entity::find_by_id(state_hash(state))
            .one(&txn)
            .await?
            .ok_or_else(unknown)?;
        let row = owned_row_by_id(&txn, ctx, claim.connection_id).await?;
        // The state stays used even if the exchange then refuses the login.
        txn.commit().await?;
        if row.revoked_at.is_some() {
            return Err(AppError::bad_input("state", "this connection was revoked"));
        }
        let credentials = self.open_credentials(&row)?;
        self.limiter.check(ctx.principal.user_id)?;
        let session = kite
            .create_session(&credentials.api_key, &credentials.api_secret, request_token)
            .await
            .map_err(|error| AppError::Exchange {
                context: "Kite refused the login",
                error,
            })?;
        drop(credentials);
        let owner = SecretOwner {
            user_id: row.user_id,
            connection_id: row.id,
        };
        let sealed = self
            .keyring
            .seal(&owner, SecretField::AccessToken, &session.access_token)
            .map_err(AppError::internal)?;
        let before = row.status.clone();
        let status_before = before.clone();
        let ctx = ctx.clone();
        let interval = self.health_check_interval;
        let (updated, entries) = self
            .db
            .user_transaction(ctx.principal.user_id, move |txn| {
                Box::pin(async move {
                    let mut active = row.into_active_model();
                    active.access_token_encrypted = Set(Some(sealed.token));
                    active.session_expires_at = Set(Some(session.expires_at));
                    active.status = Set(ConnectionStatus::Healthy.as_str().into());
                    active.last_checked_at = Set(Some(now));
                    active.last_success_at = Set(Some(now));
                    active.consecutive_failures = Set(0);
                    active.last_error = Set(None);
                    active.next_check_at = Set(super::health::next_check_at(
                        ConnectionStatus::Healthy,
                        None,
                        interval,
                        now,
                    ));
                    let updated = active.update(txn).await?;
                    let mut entries = vec![
                        audit::record(
                            txn,
                            &ctx,
                            Some(updated.id),
                            action::KITE_LOGIN_COMPLETED,
                            json!({ "sessionExpiresAt": session.expires_at }),
                        )
                        .await?,
                    ];
                    if before != updated.status {
                        entries.push(
                            audit::record(
                                txn,
                                &ctx,
                                Some(updated.id),
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
        self.announce(kind::SESSION_STARTED, &updated, Some(&status_before), &entries);
        ConnectionView::try_from(&updated)
    }

    /// Moves every live connection whose Kite session has expired to
    /// `NEEDS_REAUTH`, erasing the dead token, and forgets expired login
    /// states. Finding them spans users (the system identity); each move is
    /// then made as its user. Returns how many moved.
    pub async fn expire_kite_sessions(&self) -> AppResult<usize> {
        let now = entity::now();
        let txn = self.db.as_system().await?;
        // The write first: a SQLite transaction that reads first cannot
        // write once another writer has committed.
        states::Entity::delete_many()
            .filter(states::Column::ExpiresAt.lt(now))
            .exec(&txn)
            .await?;
        let expired = keys::Entity::find()
            .filter(keys::Column::RevokedAt.is_null())
            .filter(keys::Column::SessionExpiresAt.lte(now))
            .all(&txn)
            .await?;
        txn.commit().await?;
        let mut moved = 0;
        for row in expired {
            let ctx = RequestContext::system(row.user_id, "system:kite-session-expiry");
            let before = row.status.clone();
            let status_before = before.clone();
            let id = row.id;
            let (updated, entry) = self
                .db
                .user_transaction(row.user_id, move |txn| {
                    Box::pin(async move {
                        let mut active = row.into_active_model();
                        active.status = Set(ConnectionStatus::NeedsReauth.as_str().into());
                        active.access_token_encrypted = Set(None);
                        active.session_expires_at = Set(None);
                        active.next_check_at = Set(None);
                        let updated = active.update(txn).await?;
                        let entry = audit::record(
                            txn,
                            &ctx,
                            Some(id),
                            action::STATUS_CHANGED,
                            json!({ "from": before, "to": ConnectionStatus::NeedsReauth, "reason": "Kite session expired" }),
                        )
                        .await?;
                        Ok((updated, entry))
                    })
                })
                .await?;
            self.announce(kind::STATUS_CHANGED, &updated, Some(&status_before), &[entry]);
            moved += 1;
        }
        if moved > 0 {
            metrics::counter!("kite_sessions_expired_total").increment(moved as u64);
        }
        Ok(moved)
    }
}

fn rename_field(error: AppError, field: &str) -> AppError {
    match error {
        AppError::BadInput { message, .. } => AppError::BadInput {
            field: field.into(),
            message,
        },
        other => other,
    }
}
