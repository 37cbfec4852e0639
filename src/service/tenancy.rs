//! Who is acting, for PostgreSQL's row-level security: every database access
//! of the service layer runs in a transaction opened as one user or as the
//! system, which first tells PostgreSQL so (`app.user_id` or `app.system`,
//! policies in migration 000006). A query that forgets its `WHERE user_id`
//! then still sees only the acting user's rows. [`TenantDb`] has no query
//! methods of its own, so there is no way to query outside such a
//! transaction by accident. On SQLite the transactions are plain ones.
//!
//! On PostgreSQL the transaction is sqlx's, begun with
//! `BEGIN; SELECT set_config(…, true)` in one round trip (sea-orm's own
//! `begin` would take one for `BEGIN` and another for the setting; that round
//! trip was most of what row-level security cost, see BENCHMARKS.md), and
//! offered to sea-orm's queries through [`ConnectionTrait`].

use crate::error::{AppError, AppResult};
use sea_orm::sqlx::{self, AssertSqlSafe, Postgres};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use sea_query_sqlx::SqlxValues;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::Mutex;
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

/// Who a transaction acts as.
#[derive(Debug, Clone, Copy)]
enum Acting {
    User(Uuid),
    System,
}

/// Whether a transaction will write after it has read. On SQLite such a
/// transaction takes the write lock at `BEGIN` (`IMMEDIATE`), waiting for
/// it like any writer: a transaction that reads first and then asks for the
/// lock fails at once (SQLITE_BUSY) when another writer holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    AfterReading,
    FirstOrNever,
    /// A read-only snapshot: every read sees the database as of one moment
    /// (PostgreSQL's REPEATABLE READ; a SQLite transaction already does).
    Never,
}

impl TenantDb {
    pub fn new(conn: DatabaseConnection) -> Self {
        Self { conn }
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// A transaction acting as `user_id`: only that user's rows can be read
    /// or written. Commit it, or [`end_read`] it when it only read; the
    /// identity ends with it (dropping it rolls back).
    pub async fn as_user(&self, user_id: Uuid) -> Result<TenantTxn, DbErr> {
        self.begin(Acting::User(user_id), Writes::FirstOrNever).await
    }

    /// A transaction acting as the system: every user's rows. Only for work
    /// that spans users (the worker's claims and upkeep, sweeps, CLI tools);
    /// on PostgreSQL it needs a connection with the worker role.
    pub async fn as_system(&self) -> Result<TenantTxn, DbErr> {
        self.begin(Acting::System, Writes::FirstOrNever).await
    }

    /// A read-only snapshot as `user_id`, for reads that must agree with
    /// each other (an audit chain's head and its entries).
    pub async fn as_user_snapshot(&self, user_id: Uuid) -> Result<TenantTxn, DbErr> {
        self.begin(Acting::User(user_id), Writes::Never).await
    }

    /// A read-only snapshot as the system (see [`Self::as_user_snapshot`]).
    pub async fn as_system_snapshot(&self) -> Result<TenantTxn, DbErr> {
        self.begin(Acting::System, Writes::Never).await
    }

    /// [`Self::as_system`] for a transaction that writes after reading (on
    /// SQLite it takes the write lock at once; see [`Writes`]).
    pub async fn as_system_writing(&self) -> Result<TenantTxn, DbErr> {
        self.begin(Acting::System, Writes::AfterReading).await
    }

    /// Runs `work` in a transaction as `user_id`: commits when it succeeds,
    /// rolls back when it fails. For writes: on SQLite it holds the write
    /// lock throughout (see [`Writes`]); a read goes through [`Self::as_user`].
    pub async fn user_transaction<T, F>(&self, user_id: Uuid, work: F) -> AppResult<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c TenantTxn) -> TxnWork<'c, T> + Send,
    {
        finish(self.begin(Acting::User(user_id), Writes::AfterReading).await?, work).await
    }

    /// Runs `work` in a transaction as the system (see [`Self::as_system`]).
    pub async fn system_transaction<T, F>(&self, work: F) -> AppResult<T>
    where
        T: Send,
        F: for<'c> FnOnce(&'c TenantTxn) -> TxnWork<'c, T> + Send,
    {
        finish(self.as_system_writing().await?, work).await
    }

    async fn begin(&self, acting: Acting, writes: Writes) -> Result<TenantTxn, DbErr> {
        if self.backend() != DbBackend::Postgres {
            let options = TransactionOptions {
                sqlite_transaction_mode: (writes == Writes::AfterReading).then_some(SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            return Ok(TenantTxn::Plain(self.conn.begin_with_options(options).await?));
        }
        // `true`: local to the transaction, so it cannot leak to the
        // connection's next user. The values are a formatted UUID or a
        // constant, so they are safe to write into the statement (a simple
        // query, which takes no parameters but may hold two statements).
        let set = match acting {
            Acting::User(user_id) => format!("SELECT set_config('{USER_SETTING}', '{user_id}', true)"),
            Acting::System => format!("SELECT set_config('{SYSTEM_SETTING}', 'on', true)"),
        };
        let begin = match writes {
            Writes::Never => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Writes::AfterReading | Writes::FirstOrNever => "BEGIN",
        };
        let pool = self.conn.get_postgres_connection_pool();
        let txn = pool
            .begin_with(AssertSqlSafe(format!("{begin}; {set}")))
            .await
            .map_err(conn_err)?;
        Ok(TenantTxn::Postgres(Mutex::new(txn)))
    }
}

/// A transaction opened by [`TenantDb`]; sea-orm queries run on it as on any
/// connection.
pub enum TenantTxn {
    Postgres(Mutex<sqlx::Transaction<'static, Postgres>>),
    Plain(DatabaseTransaction),
}

impl TenantTxn {
    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Self::Postgres(txn) => txn.into_inner().commit().await.map_err(conn_err),
            Self::Plain(txn) => txn.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        match self {
            Self::Postgres(txn) => txn.into_inner().rollback().await.map_err(conn_err),
            Self::Plain(txn) => txn.rollback().await,
        }
    }
}

// The errors sea-orm's own driver makes of sqlx's, so `DbErr::sql_err()`
// (unique violations and the like) reads them alike.
fn conn_err(err: sqlx::Error) -> DbErr {
    DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err)))
}

fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
}

fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

fn pg_query(stmt: &Statement) -> sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(sea_orm::sea_query::Values(Vec::new()));
    sqlx::query_with(AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

#[async_trait::async_trait]
impl ConnectionTrait for TenantTxn {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Self::Postgres(_) => DbBackend::Postgres,
            Self::Plain(txn) => txn.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Self::Postgres(txn) => pg_query(&stmt)
                .execute(&mut **txn.lock().await)
                .await
                .map(ExecResult::from)
                .map_err(exec_err),
            Self::Plain(txn) => txn.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Self::Postgres(txn) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(&mut **txn.lock().await)
                .await
                .map(ExecResult::from)
                .map_err(exec_err),
            Self::Plain(txn) => txn.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Postgres(txn) => pg_query(&stmt)
                .fetch_optional(&mut **txn.lock().await)
                .await
                .map(|row| row.map(QueryResult::from))
                .map_err(query_err),
            Self::Plain(txn) => txn.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Postgres(txn) => pg_query(&stmt)
                .fetch_all(&mut **txn.lock().await)
                .await
                .map(|rows| rows.into_iter().map(QueryResult::from).collect())
                .map_err(query_err),
            Self::Plain(txn) => txn.query_all_raw(stmt).await,
        }
    }
}

/// Ends a transaction that only read. Dropping it queues a ROLLBACK that
/// sqlx sends together with the check it makes when the connection goes back
/// to the pool: one round trip fewer per request than `commit`, the same outcome.
pub fn end_read(txn: TenantTxn) {
    drop(txn);
}

async fn finish<T, F>(txn: TenantTxn, work: F) -> AppResult<T>
where
    T: Send,
    F: for<'c> FnOnce(&'c TenantTxn) -> TxnWork<'c, T> + Send,
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
