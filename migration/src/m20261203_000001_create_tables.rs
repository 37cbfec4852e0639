//! The initial tables: users, exchange_keys, connection_audit_log,
//! connection_health_checks, connection_usage, with the indexes each query
//! of the service uses.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ExchangeKeys {
    Table,
    Id,
    UserId,
    Exchange,
    Environment,
    Label,
    Status,
    ApiKeyEncrypted,
    ApiSecretEncrypted,
    PassphraseEncrypted,
    KeyVersion,
    ApiKeyFingerprint,
    ApiKeyHint,
    Permissions,
    LastCheckedAt,
    LastSuccessAt,
    ConsecutiveFailures,
    LatencyMs,
    LastError,
    NextCheckAt,
    CreatedAt,
    UpdatedAt,
    RevokedAt,
    RevokeReason,
}

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
}

#[derive(DeriveIden)]
enum ConnectionHealthChecks {
    Table,
    Id,
    ConnectionId,
    UserId,
    CheckedAt,
    Ok,
    LatencyMs,
    ErrorCode,
    ErrorMessage,
    Source,
}

#[derive(DeriveIden)]
enum ConnectionUsage {
    Table,
    ConnectionId,
    BucketStart,
    UserId,
    Calls,
    Errors,
    ErrorsByCode,
    LatencyHistogram,
    WeightUsed,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Restrict)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(uuid(Users::Id).primary_key())
                    .col(string_null(Users::Email))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone(Users::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ExchangeKeys::Table)
                    .col(uuid(ExchangeKeys::Id).primary_key())
                    .col(uuid(ExchangeKeys::UserId))
                    .col(string_len(ExchangeKeys::Exchange, 16))
                    .col(string_len(ExchangeKeys::Environment, 16))
                    .col(string_len(ExchangeKeys::Label, 64))
                    .col(string_len(ExchangeKeys::Status, 16))
                    .col(text_null(ExchangeKeys::ApiKeyEncrypted))
                    .col(text_null(ExchangeKeys::ApiSecretEncrypted))
                    .col(text_null(ExchangeKeys::PassphraseEncrypted))
                    .col(string_len_null(ExchangeKeys::KeyVersion, 32))
                    .col(string_len_null(ExchangeKeys::ApiKeyFingerprint, 64))
                    .col(string_len(ExchangeKeys::ApiKeyHint, 32))
                    .col(json_binary_null(ExchangeKeys::Permissions))
                    .col(timestamp_with_time_zone_null(ExchangeKeys::LastCheckedAt))
                    .col(timestamp_with_time_zone_null(ExchangeKeys::LastSuccessAt))
                    .col(integer(ExchangeKeys::ConsecutiveFailures).default(0))
                    .col(integer_null(ExchangeKeys::LatencyMs))
                    .col(json_binary_null(ExchangeKeys::LastError))
                    .col(timestamp_with_time_zone_null(ExchangeKeys::NextCheckAt))
                    .col(timestamp_with_time_zone(ExchangeKeys::CreatedAt))
                    .col(timestamp_with_time_zone(ExchangeKeys::UpdatedAt))
                    .col(timestamp_with_time_zone_null(ExchangeKeys::RevokedAt))
                    .col(string_len_null(ExchangeKeys::RevokeReason, 500))
                    .foreign_key(&mut fk(
                        "fk_exchange_keys_user",
                        (ExchangeKeys::Table, ExchangeKeys::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConnectionAuditLog::Table)
                    .col(uuid(ConnectionAuditLog::Id).primary_key())
                    .col(uuid(ConnectionAuditLog::UserId))
                    .col(uuid_null(ConnectionAuditLog::ConnectionId))
                    .col(string_len(ConnectionAuditLog::Action, 64))
                    .col(string_len(ConnectionAuditLog::Actor, 128))
                    .col(string_len_null(ConnectionAuditLog::Ip, 64))
                    .col(string_len_null(ConnectionAuditLog::UserAgent, 512))
                    .col(string_len_null(ConnectionAuditLog::RequestId, 64))
                    .col(json_binary_null(ConnectionAuditLog::Details))
                    .col(timestamp_with_time_zone(ConnectionAuditLog::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_audit_user",
                        (ConnectionAuditLog::Table, ConnectionAuditLog::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .foreign_key(&mut fk(
                        "fk_audit_connection",
                        (ConnectionAuditLog::Table, ConnectionAuditLog::ConnectionId),
                        (ExchangeKeys::Table, ExchangeKeys::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConnectionHealthChecks::Table)
                    .col(uuid(ConnectionHealthChecks::Id).primary_key())
                    .col(uuid(ConnectionHealthChecks::ConnectionId))
                    .col(uuid(ConnectionHealthChecks::UserId))
                    .col(timestamp_with_time_zone(ConnectionHealthChecks::CheckedAt))
                    .col(boolean(ConnectionHealthChecks::Ok))
                    .col(integer_null(ConnectionHealthChecks::LatencyMs))
                    .col(string_len_null(ConnectionHealthChecks::ErrorCode, 32))
                    .col(text_null(ConnectionHealthChecks::ErrorMessage))
                    .col(string_len(ConnectionHealthChecks::Source, 16))
                    .foreign_key(&mut fk(
                        "fk_health_connection",
                        (ConnectionHealthChecks::Table, ConnectionHealthChecks::ConnectionId),
                        (ExchangeKeys::Table, ExchangeKeys::Id),
                    ))
                    .foreign_key(&mut fk(
                        "fk_health_user",
                        (ConnectionHealthChecks::Table, ConnectionHealthChecks::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ConnectionUsage::Table)
                    .col(uuid(ConnectionUsage::ConnectionId))
                    .col(timestamp_with_time_zone(ConnectionUsage::BucketStart))
                    .col(uuid(ConnectionUsage::UserId))
                    .col(big_integer(ConnectionUsage::Calls).default(0))
                    .col(big_integer(ConnectionUsage::Errors).default(0))
                    .col(json_binary(ConnectionUsage::ErrorsByCode))
                    .col(json_binary(ConnectionUsage::LatencyHistogram))
                    .col(big_integer(ConnectionUsage::WeightUsed).default(0))
                    .primary_key(
                        Index::create()
                            .col(ConnectionUsage::ConnectionId)
                            .col(ConnectionUsage::BucketStart),
                    )
                    .foreign_key(&mut fk(
                        "fk_usage_connection",
                        (ConnectionUsage::Table, ConnectionUsage::ConnectionId),
                        (ExchangeKeys::Table, ExchangeKeys::Id),
                    ))
                    .foreign_key(&mut fk(
                        "fk_usage_user",
                        (ConnectionUsage::Table, ConnectionUsage::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        // Indexes, one per query the service runs. Partial unique indexes
        // (both backends support `WHERE`) enforce the rules on live rows only,
        // so a revoked connection's label and key can be used again.
        let db = manager.get_connection();
        for sql in [
            // connections list for a user, newest first
            "CREATE INDEX idx_exchange_keys_user_created ON exchange_keys (user_id, created_at)",
            // one live connection per (user, exchange, label)
            "CREATE UNIQUE INDEX uq_exchange_keys_live_label ON exchange_keys (user_id, exchange, label) \
             WHERE revoked_at IS NULL",
            // the same API key connected twice by one user
            "CREATE UNIQUE INDEX uq_exchange_keys_live_fingerprint ON exchange_keys (user_id, api_key_fingerprint) \
             WHERE revoked_at IS NULL",
            // the health worker's due-connection scan
            "CREATE INDEX idx_exchange_keys_due ON exchange_keys (next_check_at) WHERE revoked_at IS NULL",
            // audit log pages: a user's entries, and one connection's, by id (UUIDv7 = time order)
            "CREATE INDEX idx_audit_user_id ON connection_audit_log (user_id, id)",
            "CREATE INDEX idx_audit_connection_id ON connection_audit_log (connection_id, id)",
            // health history of one connection
            "CREATE INDEX idx_health_connection_checked ON connection_health_checks (connection_id, checked_at)",
            "CREATE INDEX idx_health_user ON connection_health_checks (user_id)",
            "CREATE INDEX idx_usage_user_bucket ON connection_usage (user_id, bucket_start)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ConnectionUsage::Table.into_iden(),
            ConnectionHealthChecks::Table.into_iden(),
            ConnectionAuditLog::Table.into_iden(),
            ExchangeKeys::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
