//! The tamper-evident audit log: each user's entries become a hash chain
//! (`seq`, `prev_hash`, `hash`, encoded as `entity::audit_chain` says), the
//! newest link of each chain is kept in `connection_audit_heads`, and
//! triggers refuse to change or remove entries.
//!
//! Entries already there (some migrated from the old system, which had no
//! chain) are chained first, per user in `created_at, id` order, so a fresh
//! migrate verifies. The triggers come last: the backfill updates rows. The
//! whole migration is one transaction on both backends, and on PostgreSQL
//! `ALTER TABLE` holds the table's lock until it commits, so no entry can
//! be written unchained meanwhile.

use entity::audit_chain::{ChainFields, GENESIS};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::prelude::{DateTimeUtc, Json, Uuid};
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, QueryResult};
use std::collections::HashMap;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConnectionAuditLog {
    Table,
    Id,
    UserId,
    ConnectionId,
    Action,
    Actor,
    Ip,
    UserAgent,
    RequestId,
    Details,
    CreatedAt,
    Seq,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum ConnectionAuditHeads {
    Table,
    UserId,
    Seq,
    Hash,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

/// Rows chained per round trip while backfilling.
const BATCH: usize = 500;

const POSTGRES_GUARDS: &[&str] = &[
    "CREATE FUNCTION connection_audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN RAISE EXCEPTION 'connection_audit_log is append-only: % refused', TG_OP; END $$",
    "CREATE TRIGGER connection_audit_log_append_only BEFORE UPDATE OR DELETE ON connection_audit_log \
     FOR EACH ROW EXECUTE FUNCTION connection_audit_log_refuse_change()",
    "CREATE TRIGGER connection_audit_log_no_truncate BEFORE TRUNCATE ON connection_audit_log \
     FOR EACH STATEMENT EXECUTE FUNCTION connection_audit_log_refuse_change()",
    // A head only moves forward: rewinding it would let the newest entries
    // be overwritten (unique seq) or their deletion go unnoticed.
    "CREATE FUNCTION connection_audit_heads_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF TG_OP = 'UPDATE' AND NEW.user_id = OLD.user_id \
          AND (NEW.seq > OLD.seq OR (NEW.seq = OLD.seq AND NEW.hash = OLD.hash)) THEN RETURN NEW; END IF; \
       RAISE EXCEPTION 'connection_audit_heads only moves forward: % refused', TG_OP; \
     END $$",
    "CREATE TRIGGER connection_audit_heads_forward_only BEFORE UPDATE OR DELETE ON connection_audit_heads \
     FOR EACH ROW EXECUTE FUNCTION connection_audit_heads_forward_only()",
    "CREATE TRIGGER connection_audit_heads_no_truncate BEFORE TRUNCATE ON connection_audit_heads \
     FOR EACH STATEMENT EXECUTE FUNCTION connection_audit_heads_forward_only()",
];

// SQLite has no TRUNCATE (and skips its truncate optimisation when a
// DELETE trigger exists).
const SQLITE_GUARDS: &[&str] = &[
    "CREATE TRIGGER connection_audit_log_no_update BEFORE UPDATE ON connection_audit_log \
     BEGIN SELECT RAISE(ABORT, 'connection_audit_log is append-only: UPDATE refused'); END",
    "CREATE TRIGGER connection_audit_log_no_delete BEFORE DELETE ON connection_audit_log \
     BEGIN SELECT RAISE(ABORT, 'connection_audit_log is append-only: DELETE refused'); END",
    "CREATE TRIGGER connection_audit_heads_forward_only BEFORE UPDATE ON connection_audit_heads \
     WHEN NOT (NEW.user_id = OLD.user_id AND (NEW.seq > OLD.seq OR (NEW.seq = OLD.seq AND NEW.hash = OLD.hash))) \
     BEGIN SELECT RAISE(ABORT, 'connection_audit_heads only moves forward: UPDATE refused'); END",
    "CREATE TRIGGER connection_audit_heads_no_delete BEFORE DELETE ON connection_audit_heads \
     BEGIN SELECT RAISE(ABORT, 'connection_audit_heads only moves forward: DELETE refused'); END",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on SQLite too: a crash mid-backfill leaves nothing half chained.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // NOT NULL needs a default on existing rows; PostgreSQL drops it after
        // the backfill so an unchained insert fails (SQLite cannot drop one).
        for column in [
            big_integer(ConnectionAuditLog::Seq).default(0).to_owned(),
            string_len(ConnectionAuditLog::PrevHash, 64).default("").to_owned(),
            string_len(ConnectionAuditLog::Hash, 64).default("").to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(ConnectionAuditLog::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ConnectionAuditHeads::Table)
                    .col(uuid(ConnectionAuditHeads::UserId).primary_key())
                    .col(big_integer(ConnectionAuditHeads::Seq))
                    .col(string_len(ConnectionAuditHeads::Hash, 64))
                    .col(timestamp_with_time_zone(ConnectionAuditHeads::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_audit_heads_user")
                            .from(ConnectionAuditHeads::Table, ConnectionAuditHeads::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;

        let db = manager.get_connection();
        backfill(db).await?;

        let postgres = manager.get_database_backend() == DbBackend::Postgres;
        if postgres {
            db.execute_unprepared(
                "ALTER TABLE connection_audit_log ALTER COLUMN seq DROP DEFAULT, \
                 ALTER COLUMN prev_hash DROP DEFAULT, ALTER COLUMN hash DROP DEFAULT",
            )
            .await?;
        }
        // Two appends for one user can never share a number; verification reads by it.
        db.execute_unprepared("CREATE UNIQUE INDEX uq_audit_user_seq ON connection_audit_log (user_id, seq)")
            .await?;
        for sql in if postgres { POSTGRES_GUARDS } else { SQLITE_GUARDS } {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let drops: &[&str] = if manager.get_database_backend() == DbBackend::Postgres {
            &[
                "DROP TRIGGER connection_audit_heads_no_truncate ON connection_audit_heads",
                "DROP TRIGGER connection_audit_heads_forward_only ON connection_audit_heads",
                "DROP FUNCTION connection_audit_heads_forward_only()",
                "DROP TRIGGER connection_audit_log_no_truncate ON connection_audit_log",
                "DROP TRIGGER connection_audit_log_append_only ON connection_audit_log",
                "DROP FUNCTION connection_audit_log_refuse_change()",
            ]
        } else {
            &[
                "DROP TRIGGER connection_audit_heads_no_delete",
                "DROP TRIGGER connection_audit_heads_forward_only",
                "DROP TRIGGER connection_audit_log_no_delete",
                "DROP TRIGGER connection_audit_log_no_update",
            ]
        };
        for sql in drops {
            db.execute_unprepared(sql).await?;
        }
        db.execute_unprepared("DROP INDEX uq_audit_user_seq").await?;
        manager
            .drop_table(Table::drop().table(ConnectionAuditHeads::Table).to_owned())
            .await?;
        for column in [
            ConnectionAuditLog::Hash,
            ConnectionAuditLog::PrevHash,
            ConnectionAuditLog::Seq,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ConnectionAuditLog::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Chains every user's existing entries and records each chain's head.
async fn backfill(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let users = db
        .query_all(
            Query::select()
                .distinct()
                .column(ConnectionAuditLog::UserId)
                .from(ConnectionAuditLog::Table),
        )
        .await?;
    for user in users {
        let user_id: Uuid = user.try_get("", "user_id")?;
        // Ids only (16 bytes a row) in chain order; rows are then read in batches.
        let order = db
            .query_all(
                Query::select()
                    .column(ConnectionAuditLog::Id)
                    .from(ConnectionAuditLog::Table)
                    .and_where(Expr::col(ConnectionAuditLog::UserId).eq(user_id))
                    .order_by(ConnectionAuditLog::CreatedAt, Order::Asc)
                    .order_by(ConnectionAuditLog::Id, Order::Asc),
            )
            .await?
            .iter()
            .map(|row| row.try_get::<Uuid>("", "id"))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut seq, mut prev_hash) = (0_i64, GENESIS.to_string());
        for ids in order.chunks(BATCH) {
            let mut rows: HashMap<Uuid, LegacyRow> = db
                .query_all(
                    Query::select()
                        .columns([
                            ConnectionAuditLog::Id,
                            ConnectionAuditLog::ConnectionId,
                            ConnectionAuditLog::Action,
                            ConnectionAuditLog::Actor,
                            ConnectionAuditLog::Ip,
                            ConnectionAuditLog::UserAgent,
                            ConnectionAuditLog::RequestId,
                            ConnectionAuditLog::Details,
                            ConnectionAuditLog::CreatedAt,
                        ])
                        .from(ConnectionAuditLog::Table)
                        .and_where(Expr::col(ConnectionAuditLog::Id).is_in(ids.iter().copied())),
                )
                .await?
                .iter()
                .map(|row| LegacyRow::read(row).map(|r| (r.id, r)))
                .collect::<Result<_, _>>()?;
            for id in ids {
                let row = rows
                    .remove(id)
                    .ok_or_else(|| DbErr::Custom(format!("audit entry {id} vanished during the backfill")))?;
                seq += 1;
                let hash = ChainFields {
                    user_id,
                    seq,
                    prev_hash: &prev_hash,
                    id: row.id,
                    connection_id: row.connection_id,
                    action: &row.action,
                    actor: &row.actor,
                    ip: row.ip.as_deref(),
                    user_agent: row.user_agent.as_deref(),
                    request_id: row.request_id.as_deref(),
                    details: row.details.as_ref(),
                    created_at: row.created_at,
                }
                .hash();
                db.execute(
                    Query::update()
                        .table(ConnectionAuditLog::Table)
                        .values([
                            (ConnectionAuditLog::Seq, seq.into()),
                            (ConnectionAuditLog::PrevHash, prev_hash.clone().into()),
                            (ConnectionAuditLog::Hash, hash.clone().into()),
                        ])
                        .and_where(Expr::col(ConnectionAuditLog::Id).eq(row.id)),
                )
                .await?;
                prev_hash = hash;
            }
        }
        db.execute(
            Query::insert()
                .into_table(ConnectionAuditHeads::Table)
                .columns([
                    ConnectionAuditHeads::UserId,
                    ConnectionAuditHeads::Seq,
                    ConnectionAuditHeads::Hash,
                    ConnectionAuditHeads::UpdatedAt,
                ])
                .values([user_id.into(), seq.into(), prev_hash.into(), entity::now().into()])
                .map_err(|e| DbErr::Custom(e.to_string()))?,
        )
        .await?;
    }
    Ok(())
}

/// An entry as stored before this migration.
struct LegacyRow {
    id: Uuid,
    connection_id: Option<Uuid>,
    action: String,
    actor: String,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    details: Option<Json>,
    created_at: DateTimeUtc,
}

impl LegacyRow {
    fn read(row: &QueryResult) -> Result<Self, DbErr> {
        Ok(Self {
            id: row.try_get("", "id")?,
            connection_id: row.try_get("", "connection_id")?,
            action: row.try_get("", "action")?,
            actor: row.try_get("", "actor")?,
            ip: row.try_get("", "ip")?,
            user_agent: row.try_get("", "user_agent")?,
            request_id: row.try_get("", "request_id")?,
            details: row.try_get("", "details")?,
            created_at: row.try_get("", "created_at")?,
        })
    }
}
