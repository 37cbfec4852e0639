//! Row-level security on PostgreSQL (migration 000006): queries that forget
//! their user filter, run through the service's own tenancy module as the
//! service's login roles, see and write only the acting user's rows; the
//! system identity is the worker role's alone; the settings end with their
//! transaction; the API role has no DDL; and `serve`/`worker` refuse roles
//! that row-level security would not bind.

use crate::connections::connect;
use crate::helpers::{ENCRYPTION_KEY, TempDir, TestApp, test_settings};
use crate::mock::binance::MockBinance;
use exchange_connections::service::tenancy::TenantDb;
use exchange_connections::startup::{self, Application};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value};
use std::collections::BTreeSet;
use std::process::Command;
use uuid::Uuid;

/// Every table with per-user rows, and the column naming the user.
const TABLES: [(&str, &str); 7] = [
    ("users", "id"),
    ("exchange_keys", "user_id"),
    ("connection_audit_log", "user_id"),
    ("connection_audit_heads", "user_id"),
    ("connection_health_checks", "user_id"),
    ("connection_usage", "user_id"),
    ("kite_login_states", "user_id"),
];

/// The users whose rows `SELECT … FROM table` returns: no `WHERE` at all.
async fn owners(db: &impl ConnectionTrait, table: &str, column: &str) -> BTreeSet<Uuid> {
    let sql = format!("SELECT {column} AS owner FROM {table}");
    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
        .iter()
        .map(|row| row.try_get::<Uuid>("", "owner").expect("owner"))
        .collect()
}

async fn execute(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<u64, sea_orm::DbErr> {
    db.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
        .await
        .map(|r| r.rows_affected())
}

/// A PostgreSQL app with two users who each have rows in every table.
async fn two_users() -> (TestApp, Uuid, Uuid) {
    let app = TestApp::spawn(crate::helpers::Backend::Postgres).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (user, tag) in [(a, "rlsa"), (b, "rlsb")] {
        // Tested first: a connection, its audit entry, health check and usage bucket.
        let conn = connect(&app, &app.token_for(user), "Main", tag).await;
        let id = Uuid::parse_str(conn["id"].as_str().unwrap()).unwrap();
        execute(
            &app.db,
            "INSERT INTO kite_login_states (state_hash, user_id, connection_id, created_at, expires_at) \
             VALUES ($1, $2, $3, now(), now() + interval '10 minutes')",
            vec![format!("{tag}-state").into(), user.into(), id.into()],
        )
        .await
        .expect("a login state");
    }
    // Not vacuous: the owner (a superuser, no RLS) sees both users everywhere.
    for (table, column) in TABLES {
        assert_eq!(owners(&app.db, table, column).await, BTreeSet::from([a, b]), "{table}");
    }
    (app, a, b)
}

async fn tenant(url: &str) -> (TenantDb, DatabaseConnection) {
    let conn = startup::connect_database(url).await.expect("connect");
    (TenantDb::new(conn.clone()), conn)
}

#[tokio::test]
async fn a_query_missing_its_user_filter_sees_only_the_acting_users_rows() {
    let (app, a, b) = two_users().await;
    let (api, api_conn) = tenant(&app.urls.api).await;
    let (worker, worker_conn) = tenant(&app.urls.worker).await;
    for (table, column) in TABLES {
        for user in [a, b] {
            for db in [&api, &worker] {
                let txn = db.as_user(user).await.unwrap();
                assert_eq!(owners(&txn, table, column).await, BTreeSet::from([user]), "{table}");
                txn.commit().await.unwrap();
            }
        }
        // Nobody named: no rows, for either role.
        assert!(owners(&api_conn, table, column).await.is_empty(), "{table}");
        assert!(owners(&worker_conn, table, column).await.is_empty(), "{table}");
        // The system identity sees everyone, but only through the worker role:
        // the API role asking for it gets nothing.
        let txn = worker.as_system().await.unwrap();
        assert_eq!(owners(&txn, table, column).await, BTreeSet::from([a, b]), "{table}");
        txn.commit().await.unwrap();
        let txn = api.as_system().await.unwrap();
        assert!(owners(&txn, table, column).await.is_empty(), "{table}");
        txn.commit().await.unwrap();
    }
}

#[tokio::test]
async fn a_user_transaction_cannot_write_another_users_rows() {
    let (app, a, b) = two_users().await;
    let (api, api_conn) = tenant(&app.urls.api).await;
    let refused = |result: Result<u64, sea_orm::DbErr>| {
        let error = result.expect_err("refused").to_string();
        assert!(error.contains("row-level security"), "{error}");
    };
    let audit_for = |user: Uuid| vec![Uuid::now_v7().into(), user.into()];
    let insert_audit = "INSERT INTO connection_audit_log \
                        (id, user_id, action, actor, created_at, seq, prev_hash, hash) \
                        VALUES ($1, $2, 'connection.tested', 'x', now(), 1000000, 'x', 'x')";

    // INSERT for another user: WITH CHECK refuses it.
    let txn = api.as_user(a).await.unwrap();
    refused(execute(&txn, insert_audit, audit_for(b)).await);
    drop(txn);
    let txn = api.as_user(a).await.unwrap();
    refused(
        execute(
            &txn,
            "INSERT INTO users (id, created_at, updated_at) VALUES ($1, now(), now())",
            vec![Uuid::new_v4().into()],
        )
        .await,
    );
    drop(txn);
    // UPDATE of another user's rows touches nothing; moving one's own row to
    // another user is refused.
    let txn = api.as_user(a).await.unwrap();
    let sql = "UPDATE exchange_keys SET label = 'stolen' WHERE user_id = $1";
    assert_eq!(execute(&txn, sql, vec![b.into()]).await.unwrap(), 0);
    refused(execute(&txn, "UPDATE exchange_keys SET user_id = $1", vec![b.into()]).await);
    drop(txn);
    // Without a user, even one's own rows cannot be written.
    refused(execute(&api_conn, insert_audit, audit_for(a)).await);
    // The same INSERT for the acting user is allowed (the policy is not just closed).
    let txn = api.as_user(a).await.unwrap();
    assert_eq!(execute(&txn, insert_audit, audit_for(a)).await.unwrap(), 1);
    txn.rollback().await.unwrap();
    let stolen = app
        .db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id FROM exchange_keys WHERE label = 'stolen'",
        ))
        .await
        .unwrap();
    assert!(stolen.is_empty(), "nothing of the other user's changed");
}

#[tokio::test]
async fn the_acting_user_ends_with_its_transaction() {
    let (app, a, _) = two_users().await;
    // One pooled connection: the next transaction gets the same one.
    let mut options = ConnectOptions::new(app.urls.api.clone());
    options.max_connections(1).min_connections(1).sqlx_logging(false);
    let conn = Database::connect(options).await.unwrap();
    let db = TenantDb::new(conn.clone());
    let txn = db.as_user(a).await.unwrap();
    assert_eq!(owners(&txn, "exchange_keys", "user_id").await.len(), 1);
    txn.commit().await.unwrap();
    assert!(
        owners(&conn, "exchange_keys", "user_id").await.is_empty(),
        "after commit"
    );
    let txn = db.as_user(a).await.unwrap();
    assert_eq!(owners(&txn, "exchange_keys", "user_id").await.len(), 1);
    txn.rollback().await.unwrap();
    assert!(
        owners(&conn, "exchange_keys", "user_id").await.is_empty(),
        "after rollback"
    );
}

#[tokio::test]
async fn the_api_role_has_no_ddl_and_deletes_no_history() {
    let (app, a, _) = two_users().await;
    let (api, api_conn) = tenant(&app.urls.api).await;
    for sql in [
        "CREATE TABLE intruder (id int)",
        "ALTER TABLE exchange_keys DISABLE ROW LEVEL SECURITY",
        "DROP POLICY exchange_keys_user ON exchange_keys",
        "TRUNCATE connection_audit_log",
    ] {
        let error = api_conn.execute_unprepared(sql).await.expect_err(sql).to_string();
        assert!(
            error.contains("permission denied") || error.contains("must be owner"),
            "{sql}: {error}"
        );
    }
    for table in [
        "connection_audit_log",
        "connection_health_checks",
        "exchange_keys",
        "connection_usage",
    ] {
        let txn = api.as_user(a).await.unwrap();
        let error = execute(&txn, &format!("DELETE FROM {table}"), vec![])
            .await
            .expect_err(table);
        assert!(error.to_string().contains("permission denied"), "{table}: {error}");
    }
    // The worker prunes history, as the system.
    let (worker, _) = tenant(&app.urls.worker).await;
    let txn = worker.as_system().await.unwrap();
    assert!(
        execute(&txn, "DELETE FROM connection_health_checks", vec![])
            .await
            .unwrap()
            >= 2
    );
    txn.rollback().await.unwrap();
}

#[tokio::test]
async fn serve_and_worker_refuse_roles_rls_would_not_bind() {
    let app = TestApp::spawn(crate::helpers::Backend::Postgres).await;
    let binance = MockBinance::start().await;
    let dir = TempDir::new();
    let build = |url: &str, run_worker: bool| {
        let mut settings = test_settings(url.to_string(), &binance, &dir.0);
        settings.run_worker = Some(run_worker);
        let config = settings.validate().expect("settings");
        async move {
            match Application::build(config).await {
                Ok(_) => panic!("started"),
                Err(error) => format!("{error:#}"),
            }
        }
    };
    // The owner here is a superuser: policies never bind it.
    let error = build(&app.urls.owner, false).await;
    assert!(error.contains("superuser"), "{error}");
    // The API role cannot run the health monitor, which spans users.
    let error = build(&app.urls.api, true).await;
    assert!(error.contains(migration::WORKER_ROLE), "{error}");
    // A login role granted neither group would see no rows at all.
    app.db
        .execute_unprepared(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ec_test_nobody') THEN \
               BEGIN CREATE ROLE ec_test_nobody LOGIN PASSWORD 'ec-test'; \
               EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END; END IF; END $$",
        )
        .await
        .unwrap();
    let nobody = app.urls.api.replace("ec_test_api", "ec_test_nobody");
    let error = build(&nobody, false).await;
    assert!(error.contains(migration::APP_ROLE), "{error}");

    // The `worker` command refuses the API role.
    let output = Command::new(env!("CARGO_BIN_EXE_exchange-connections"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.urls.api)
        .env("ENCRYPTION_KEYS", ENCRYPTION_KEY)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("DATA_DIR", dir.0.join("data"))
        .current_dir(&dir.0)
        .output()
        .expect("run the worker");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(migration::WORKER_ROLE), "{stderr}");
    // And both start with the right roles (the rest of the suite runs so).
    assert!(
        app.ok(
            &app.token_for(Uuid::new_v4()),
            "{ connections { id } }",
            serde_json::json!({})
        )
        .await["connections"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// `rekey` and `audit verify` sweep every user's rows: with a role that
/// row-level security limits they would see none and report "all done" or
/// "all intact", so they refuse it; with the worker's role they run.
#[tokio::test]
async fn tools_that_sweep_every_row_refuse_the_api_role() {
    let (app, _, _) = two_users().await;
    let dir = TempDir::new();
    let run = |args: &'static [&'static str], url: &str| {
        Command::new(env!("CARGO_BIN_EXE_exchange-connections"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", url)
            .env("ENCRYPTION_KEYS", ENCRYPTION_KEY)
            .current_dir(&dir.0)
            .output()
            .expect("run the binary")
    };
    for args in [&["rekey", "--dry-run"][..], &["audit", "verify"][..]] {
        let output = run(args, &app.urls.api);
        assert!(!output.status.success(), "{args:?} ran as the API role");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("row-level security") && stderr.contains(migration::WORKER_ROLE),
            "{stderr}"
        );

        let output = run(args, &app.urls.worker);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("2 chain(s)") || stdout.contains("2 rows hold secrets"),
            "{args:?}: {stdout}"
        );
    }
}
