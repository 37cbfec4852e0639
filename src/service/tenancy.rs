//! Who is acting, for PostgreSQL's row-level security: every database access
//! of the service layer runs in a transaction opened as one user or as the
//! system, which first tells PostgreSQL so (`app.user_id` or `app.system`,
//! policies in migration 000006). A query that forgets its `WHERE user_id`
//! then still sees only the acting user's rows. [`TenantDb`] has no query
//! methods of its own, so there is no way to query outside such a
//! transaction by accident. On SQLite the transactions are plain ones.

use crate::error::{AppError, AppResult};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement, TransactionTrait,
};
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

/// The setting naming the acting user (its policies: `*_user`).
pub const USER_SETTING: &str = "app.user_id";
/// The setting asking for the system identity (its policies: `*_system`,
/// which only the worker role holds).
pub const SYSTEM_SETTING: &str = "app.system";

/// The work of one transaction: borrows it, returns a boxed future.
pub type TxnWork<'c, T> = Pin<Box<dyn Future<Output = AppResult<T>> + Send + 'c>>;

/// The service layer's database: transactions as a user or as the system.
#[derive(Clone)]
pub struct TenantDb {
    conn: DatabaseConnection,
}

impl TenantDb {
    pub fn new(conn: DatabaseConnection) -> Self {
        Self { conn }
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// A transaction acting as `user_id`: only that user's rows can be read
    /// or written. Commit it (or drop it to roll back); the identity ends with it.
    pub async fn as_user(&self, user_id: Uuid) -> Result<DatabaseTransaction, DbErr> {
        self.begin(USER_SETTING, &user_id.to_string()).await
    }

    /// A transaction acting as the system: every user's rows. Only for work
    /// that spans users (the worker's claims and upkeep, sweeps, CLI tools);
    /// on PostgreSQL it needs a connection with the worker role.
    pub async fn as_system(&self) -> Result<DatabaseTransaction, DbErr> {
        self.begin(SYSTEM_SETTING, "on").await
    }

    /// Runs `work` in a transaction as `user_id`: commits when it succeeds,
    /// rolls back when it fails.
    pub async fn user_transaction<T, F>(&self, user_id: Uuid, work: F) -> AppResult<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> TxnWork<'c, T> + Send,
    {
        finish(self.as_user(user_id).await?, work).await
    }

    /// Runs `work` in a transaction as the system (see [`Self::as_system`]).
    pub async fn system_transaction<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> TxnWork<'c, T> + Send,
    {
        finish(self.as_system().await?, work).await
    }

    async fn begin(&self, setting: &str, value: &str) -> Result<DatabaseTransaction, DbErr> {
        let txn = self.conn.begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            // `true`: local to this transaction, so it cannot leak to the
            // connection's next user (`SET LOCAL` takes no bind parameters).
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config($1, $2, true)",
                [setting.into(), value.into()],
            ))
            .await?;
        }
        Ok(txn)
    }
}

async fn finish<T, F>(txn: DatabaseTransaction, work: F) -> AppResult<T>
where
    T: Send,
    F: for<'c> FnOnce(&'c DatabaseTransaction) -> TxnWork<'c, T> + Send,
{
    match work(&txn).await {
        Ok(value) => {
            txn.commit().await.map_err(AppError::from)?;
            Ok(value)
        }
        Err(error) => {
            // The work's error is the one to report; a failed rollback
            // still ends the transaction when the connection is dropped.
            if let Err(rollback) = txn.rollback().await {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(error)
        }
    }
}
