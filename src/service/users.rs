//! Users are provisioned in `users` on first sight of their token. A small
//! in-process set avoids a write per request for users already seen.

use super::tenancy::TenantDb;
use crate::auth::Principal;
use crate::error::AppResult;
use entity::users;
use sea_orm::sea_query::OnConflict;
use sea_orm::{EntityTrait, Set};
use std::collections::HashSet;
use std::sync::Mutex;
use uuid::Uuid;

#[derive(Default)]
pub struct UserDirectory {
    seen: Mutex<HashSet<Uuid>>,
}

impl UserDirectory {
    /// Makes sure the principal has a `users` row.
    pub async fn ensure(&self, db: &TenantDb, principal: &Principal) -> AppResult<()> {
        if self.seen.lock().is_ok_and(|seen| seen.contains(&principal.user_id)) {
            return Ok(());
        }
        let now = entity::now();
        let row = users::ActiveModel {
            id: Set(principal.user_id),
            email: Set(principal.email.clone()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let txn = db.as_user(principal.user_id).await?;
        users::Entity::insert(row)
            .on_conflict(OnConflict::column(users::Column::Id).do_nothing().to_owned())
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        if let Ok(mut seen) = self.seen.lock() {
            // Bounded: forgetting only costs one idempotent insert.
            if seen.len() > 100_000 {
                seen.clear();
            }
            seen.insert(principal.user_id);
        }
        Ok(())
    }
}
