//! Health-monitor leases: which worker holds a connection's check and until
//! when, so any number of workers can share the due set and a crashed
//! worker's claims lapse. The due index is rebuilt to match the claim query.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ExchangeKeys {
    Table,
    LeaseOwner,
    LeaseExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(ExchangeKeys::Table)
                    .add_column(string_len_null(ExchangeKeys::LeaseOwner, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ExchangeKeys::Table)
                    .add_column(timestamp_with_time_zone_null(ExchangeKeys::LeaseExpiresAt))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // The claim scans live, scheduled rows by due time and filters on the lease.
        db.execute_unprepared("DROP INDEX idx_exchange_keys_due").await?;
        db.execute_unprepared(
            "CREATE INDEX idx_exchange_keys_due_lease ON exchange_keys (next_check_at, lease_expires_at) \
             WHERE revoked_at IS NULL AND next_check_at IS NOT NULL",
        )
        .await?;
        // Health-history retention and the dashboard's recent failures.
        db.execute_unprepared(
            "CREATE INDEX idx_health_user_failures ON connection_health_checks (user_id, checked_at) WHERE NOT ok",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX idx_health_user_failures").await?;
        db.execute_unprepared("DROP INDEX idx_exchange_keys_due_lease").await?;
        db.execute_unprepared(
            "CREATE INDEX idx_exchange_keys_due ON exchange_keys (next_check_at) WHERE revoked_at IS NULL",
        )
        .await?;
        for column in [ExchangeKeys::LeaseExpiresAt, ExchangeKeys::LeaseOwner] {
            manager
                .alter_table(Table::alter().table(ExchangeKeys::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
