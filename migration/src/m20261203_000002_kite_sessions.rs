//! Zerodha Kite sessions: the daily access token (encrypted) and its expiry
//! on the connection, and single-use login states for the OAuth-style login.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ExchangeKeys {
    Table,
    Id,
    AccessTokenEncrypted,
    SessionExpiresAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum KiteLoginStates {
    Table,
    StateHash,
    UserId,
    ConnectionId,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(ExchangeKeys::Table)
                    .add_column(text_null(ExchangeKeys::AccessTokenEncrypted))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ExchangeKeys::Table)
                    .add_column(timestamp_with_time_zone_null(ExchangeKeys::SessionExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(KiteLoginStates::Table)
                    // SHA-256 of the state: a database reader cannot replay a login.
                    .col(string_len(KiteLoginStates::StateHash, 64).primary_key())
                    .col(uuid(KiteLoginStates::UserId))
                    .col(uuid(KiteLoginStates::ConnectionId))
                    .col(timestamp_with_time_zone(KiteLoginStates::CreatedAt))
                    .col(timestamp_with_time_zone(KiteLoginStates::ExpiresAt))
                    .col(timestamp_with_time_zone_null(KiteLoginStates::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_kite_login_user")
                            .from(KiteLoginStates::Table, KiteLoginStates::UserId)
                            .to(Users::Table, Users::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_kite_login_connection")
                            .from(KiteLoginStates::Table, KiteLoginStates::ConnectionId)
                            .to(ExchangeKeys::Table, ExchangeKeys::Id),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // The expiry sweep: live Kite sessions by expiry.
        db.execute_unprepared(
            "CREATE INDEX idx_exchange_keys_session_expiry ON exchange_keys (session_expires_at) \
             WHERE session_expires_at IS NOT NULL AND revoked_at IS NULL",
        )
        .await?;
        db.execute_unprepared("CREATE INDEX idx_kite_login_states_expiry ON kite_login_states (expires_at)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KiteLoginStates::Table).to_owned())
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX idx_exchange_keys_session_expiry")
            .await?;
        for column in [ExchangeKeys::SessionExpiresAt, ExchangeKeys::AccessTokenEncrypted] {
            manager
                .alter_table(Table::alter().table(ExchangeKeys::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
