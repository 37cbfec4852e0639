//! Row-level security on PostgreSQL (a no-op on SQLite): every per-user
//! table answers only for the identity the service names at the start of
//! each transaction, so a query that forgets its `WHERE user_id` still cannot
//! read or write another user's rows.
//!
//! Identities (set with `set_config(…, true)`, so they end with the
//! transaction and never leak to the next user of a pooled connection):
//! - **a user**: `app.user_id` = the user's id. The `*_user` policies let a
//!   member of `exchange_connections_app` see and write rows whose user is
//!   that one (`WITH CHECK` too: no row can be written for another user).
//!   Without the setting a query sees no rows at all.
//! - **the system**: `app.system` = `on`. The `*_system` policies let it see
//!   and write every row, but they are granted only to the
//!   `exchange_connections_worker` role: the API's role can set the same
//!   setting and gains nothing. So the identity needs both the code asking
//!   for it explicitly, per transaction, and a deployment that gave the
//!   process the worker role. The health monitor, the session-expiry sweep,
//!   history pruning and the CLI tools (`rekey`, `audit verify`) use it; the
//!   embedded default and `serve` with `RUN_WORKER` need the worker role for
//!   the same reason. A role rather than a setting alone because a setting is
//!   something any code path on the API's connections could turn on.
//!
//! Roles (created here when absent; both NOLOGIN — operators create login
//! roles and grant one of these, see the README's "Database roles"):
//! - `exchange_connections_app`: data rights only (no DDL, no ownership, no
//!   DELETE on history or audit), bound by the `*_user` policies.
//! - `exchange_connections_worker`: member of the app role, plus the
//!   `*_system` policies and DELETE on the health-check history (pruning).
//!
//! `FORCE ROW LEVEL SECURITY` binds the tables' owner too; superusers and
//! BYPASSRLS roles always bypass it, so `serve` and `worker` refuse to start
//! as one (startup.rs). A later migration that must read or change rows as
//! the owner turns FORCE off and on again inside its own transaction, and
//! must grant the roles whatever new tables it adds. `down` drops the
//! policies and grants but keeps the roles: they are cluster-wide and may
//! serve other databases.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

pub const APP_ROLE: &str = "exchange_connections_app";
pub const WORKER_ROLE: &str = "exchange_connections_worker";

/// Each per-user table, the column naming its user, and the app role's rights on it.
const TABLES: &[(&str, &str, &str)] = &[
    ("users", "id", "SELECT, INSERT"),
    ("exchange_keys", "user_id", "SELECT, INSERT, UPDATE"),
    ("connection_audit_log", "user_id", "SELECT, INSERT"),
    ("connection_audit_heads", "user_id", "SELECT, INSERT, UPDATE"),
    ("connection_health_checks", "user_id", "SELECT, INSERT"),
    ("connection_usage", "user_id", "SELECT, INSERT, UPDATE"),
    ("kite_login_states", "user_id", "SELECT, INSERT, UPDATE, DELETE"),
];

/// Creates a role unless it exists. Two migrations racing (fresh test
/// databases on one server) may both get past the check: the loser's
/// duplicate error is the outcome it wanted.
fn create_role(role: &str) -> String {
    format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
             BEGIN CREATE ROLE {role} NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END; \
           END IF; \
         END $$"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        db.execute_unprepared(&create_role(APP_ROLE)).await?;
        db.execute_unprepared(&create_role(WORKER_ROLE)).await?;
        db.execute_unprepared(&format!(
            "DO $$ BEGIN \
               IF NOT pg_has_role('{WORKER_ROLE}', '{APP_ROLE}', 'MEMBER') THEN \
                 BEGIN GRANT {APP_ROLE} TO {WORKER_ROLE}; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END; \
               END IF; \
               EXECUTE format('GRANT USAGE ON SCHEMA %I TO {APP_ROLE}', current_schema()); \
             END $$"
        ))
        .await?;
        // `serve` and `worker` check that no migration is pending.
        db.execute_unprepared(&format!("GRANT SELECT ON seaql_migrations TO {APP_ROLE}"))
            .await?;
        db.execute_unprepared(&format!("GRANT DELETE ON connection_health_checks TO {WORKER_ROLE}"))
            .await?;
        // An empty setting (what a reverted `set_config` leaves) is no user, not an error.
        let acting_user = "NULLIF(current_setting('app.user_id', true), '')::uuid";
        let system = "current_setting('app.system', true) = 'on'";
        for (table, user_column, rights) in TABLES {
            for sql in [
                format!("GRANT {rights} ON {table} TO {APP_ROLE}"),
                format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
                format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"),
                format!(
                    "CREATE POLICY {table}_user ON {table} TO {APP_ROLE} \
                     USING ({user_column} = {acting_user}) WITH CHECK ({user_column} = {acting_user})"
                ),
                format!(
                    "CREATE POLICY {table}_system ON {table} TO {WORKER_ROLE} USING ({system}) WITH CHECK ({system})"
                ),
            ] {
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        for (table, _, rights) in TABLES {
            for sql in [
                format!("DROP POLICY IF EXISTS {table}_system ON {table}"),
                format!("DROP POLICY IF EXISTS {table}_user ON {table}"),
                format!("ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY"),
                format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"),
                format!("REVOKE {rights} ON {table} FROM {APP_ROLE}"),
            ] {
                db.execute_unprepared(&sql).await?;
            }
        }
        db.execute_unprepared(&format!("REVOKE DELETE ON connection_health_checks FROM {WORKER_ROLE}"))
            .await?;
        db.execute_unprepared(&format!("REVOKE SELECT ON seaql_migrations FROM {APP_ROLE}"))
            .await?;
        db.execute_unprepared(&format!(
            "DO $$ BEGIN EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {APP_ROLE}', current_schema()); END $$"
        ))
        .await?;
        Ok(())
    }
}
