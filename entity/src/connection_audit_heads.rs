//! `connection_audit_heads`: the newest link of each user's audit chain.
//! The chain alone cannot show that its newest entries were deleted; the
//! head, written in the same transaction as every entry, can. Appending
//! locks the user's head row, which serialises a user's appends.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connection_audit_heads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// `seq` of the user's newest entry (0: none yet).
    pub seq: i64,
    /// `hash` of that entry (`audit_chain::GENESIS` when none).
    pub hash: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
