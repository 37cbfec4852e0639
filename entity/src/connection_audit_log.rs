//! `connection_audit_log`: append-only record of every change. Ids are
//! UUIDv7, so ordering by id is ordering by time (cursor pagination).
//! Each user's entries form a hash chain (`seq`, `prev_hash`, `hash`; see
//! [`crate::audit_chain`]) whose newest link is kept in
//! `connection_audit_heads`.

use crate::audit_chain::ChainFields;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connection_audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub connection_id: Option<Uuid>,
    pub action: String,
    pub actor: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub details: Option<Json>,
    pub created_at: DateTimeUtc,
    /// The entry's number in its user's chain: 1, 2, … (unique per user).
    pub seq: i64,
    /// `hash` of the user's entry `seq - 1` (`audit_chain::GENESIS` for the first).
    pub prev_hash: String,
    /// SHA-256 (hex) of the entry's canonical encoding.
    pub hash: String,
}

impl Model {
    /// What the entry's hash covers.
    pub fn chain_fields(&self) -> ChainFields<'_> {
        ChainFields {
            user_id: self.user_id,
            seq: self.seq,
            prev_hash: &self.prev_hash,
            id: self.id,
            connection_id: self.connection_id,
            action: &self.action,
            actor: &self.actor,
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id: self.request_id.as_deref(),
            details: self.details.as_ref(),
            created_at: self.created_at,
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
