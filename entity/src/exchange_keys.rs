//! `exchange_keys`: one row per connection. The three `*_encrypted` columns
//! hold Fernet tokens (the old system's format); revoking erases them and
//! keeps the row for the audit trail.

use sea_orm::Set;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "exchange_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub exchange: String,
    pub environment: String,
    pub label: String,
    pub status: String,
    pub api_key_encrypted: Option<String>,
    pub api_secret_encrypted: Option<String>,
    pub passphrase_encrypted: Option<String>,
    /// Id of the ring key that sealed the secrets.
    pub key_version: Option<String>,
    /// Keyed HMAC of the API key, for duplicate detection.
    pub api_key_fingerprint: Option<String>,
    pub api_key_hint: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub permissions: Option<Json>,
    pub last_checked_at: Option<DateTimeUtc>,
    pub last_success_at: Option<DateTimeUtc>,
    pub consecutive_failures: i32,
    pub latency_ms: Option<i32>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub last_error: Option<Json>,
    pub next_check_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub revoke_reason: Option<String>,
    /// Zerodha Kite: the day's session token (Fernet) and when it expires.
    pub access_token_encrypted: Option<String>,
    pub session_expires_at: Option<DateTimeUtc>,
    /// The health-monitor worker holding this connection's check, and until when.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "Column::UserId",
        to = "super::users::Column::Id"
    )]
    User,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

/// `updated_at` is kept current on every write through the entity.
#[async_trait::async_trait]
impl ActiveModelBehavior for ActiveModel {
    async fn before_save<C>(mut self, _db: &C, insert: bool) -> Result<Self, DbErr>
    where
        C: ConnectionTrait,
    {
        let now = crate::now();
        if insert && self.created_at.is_not_set() {
            self.created_at = Set(now);
        }
        self.updated_at = Set(now);
        Ok(self)
    }
}
