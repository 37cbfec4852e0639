//! The tamper-evident audit log: every change's entry carries where it came
//! from (request id, client IP, user agent) and never a secret; each user's
//! entries form a hash chain that `verifyAuditLog` and `audit verify` check;
//! edits and deletions made behind the service's back (as the database
//! owner) are found at the right place; the service's own connection cannot
//! change or remove entries; concurrent appends for one user never share a
//! number; a write whose entry cannot be stored leaves nothing behind; and
//! entries from before the chain are chained by the migration.

use crate::connections::{CONNECTION_FIELDS, binance_key, connect, create_input, create_mutation};
use crate::helpers::{Backend, TempDir, TestApp, block_audit_writes, postgres_admin_url};
use crate::mock::binance::MockPermissions;
use crate::on_both_backends;
use entity::{connection_audit_heads, connection_audit_log, exchange_keys, users};
use exchange_connections::service::RequestContext;
use exchange_connections::service::audit;
use exchange_connections::service::audit_verify::verify_user;
use exchange_connections::service::tenancy::TenantDb;
use exchange_connections::startup;
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Alias, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};
use serde_json::{Value, json};
use uuid::Uuid;

const VERIFY: &str = "{ verifyAuditLog { intact entries firstBrokenSeq reason headHash } }";
const USER_AGENT: &str = "audit-chain-test/1.0 (+https://example.com)";
const CLIENT_IP: &str = "198.51.100.23";

/// A GraphQL call with the headers a browser behind one proxy would send.
async fn gql_from_client(app: &TestApp, token: &str, request_id: &str, query: &str, variables: Value) -> Value {
    let response = app
        .client
        .post(format!("{}/graphql", app.base_url))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .header("user-agent", USER_AGENT)
        .header("x-forwarded-for", CLIENT_IP)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .expect("request");
    let body: Value = response.json().await.expect("JSON body");
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

async fn verify(app: &TestApp, token: &str) -> Value {
    app.ok(token, VERIFY, json!({})).await["verifyAuditLog"].clone()
}

/// `exchange-connections audit verify` on `url`: (succeeded, stdout).
async fn cli_verify(url: &str) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_exchange-connections"))
        .args(["audit", "verify"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .output()
        .await
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || stderr.contains("audit chain(s) broken"),
        "failed for another reason: {stderr}"
    );
    (output.status.success(), stdout)
}

/// Appends `n` entries to `user`'s chain through the service's only writer,
/// one transaction each (the user must exist).
async fn append(db: &DatabaseConnection, user: Uuid, n: usize) {
    for i in 0..n {
        let txn = db.begin().await.unwrap();
        let ctx = RequestContext::system(user, "system:audit-test");
        audit::record(&txn, &ctx, None, "test.appended", json!({"i": i}))
            .await
            .unwrap();
        txn.commit().await.unwrap();
    }
}

/// A user provisioned through the API (first sight), with its token.
async fn new_user(app: &TestApp) -> (Uuid, String) {
    let user = Uuid::new_v4();
    let token = app.token_for(user);
    let empty = verify(app, &token).await;
    assert_eq!(
        empty,
        json!({"intact": true, "entries": 0, "firstBrokenSeq": null, "reason": null, "headHash": null})
    );
    (user, token)
}

/// A connection to the test database as its owner (a superuser), for
/// changes behind the service's back.
async fn owner(app: &TestApp) -> DatabaseConnection {
    app.db.clone()
}

/// Runs `sql` as the owner with triggers off, as someone editing the
/// database directly would.
async fn tamper(owner: &DatabaseConnection, sql: &str) {
    owner
        .execute_unprepared(&format!(
            "BEGIN; SET LOCAL session_replication_role = replica; {sql}; COMMIT;"
        ))
        .await
        .unwrap_or_else(|e| panic!("tampering failed: {e}"));
}

async fn normal_flow_verifies(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.trusted_proxy_hops = 1).await;
    let user = Uuid::new_v4();
    let token = app.token_for(user);
    let canary_key = format!("CANARYKEY{}", "1".repeat(55));
    let canary_secret = format!("CANARYSECRET{}", "2".repeat(52));
    let rotated_key = format!("CANARYROTK{}", "3".repeat(54));
    let rotated_secret = format!("CANARYROTS{}", "4".repeat(54));
    app.binance
        .add_hmac_key(&canary_key, &canary_secret, MockPermissions::default());
    app.binance
        .add_hmac_key(&rotated_key, &rotated_secret, MockPermissions::default());

    let created = gql_from_client(
        &app,
        &token,
        "req-create",
        &create_mutation(),
        create_input("Canary", &canary_key, &canary_secret),
    )
    .await;
    let id = created["createConnection"]["id"].clone();
    gql_from_client(
        &app,
        &token,
        "req-test",
        "mutation($id: ID!) { testConnection(id: $id) { ok } }",
        json!({"id": id}),
    )
    .await;
    gql_from_client(
        &app,
        &token,
        "req-rotate",
        &format!("mutation($id: ID!, $c: CredentialsInput!) {{ rotateKeys(id: $id, credentials: $c) {{ {CONNECTION_FIELDS} }} }}"),
        json!({"id": id, "c": {"exchange": "BINANCE", "apiKey": rotated_key, "apiSecret": rotated_secret}}),
    )
    .await;
    gql_from_client(
        &app,
        &token,
        "req-revoke",
        "mutation($id: ID!) { revokeConnection(id: $id, reason: \"done\") { status } }",
        json!({"id": id}),
    )
    .await;

    // Every entry says where it came from, in chain order.
    let log = app
        .ok(
            &token,
            "{ auditLog(first: 200) { nodes { seq hash action ip userAgent requestId actor } } }",
            json!({}),
        )
        .await;
    let nodes = log["auditLog"]["nodes"].as_array().unwrap().clone();
    assert!(nodes.len() >= 4, "{log}");
    let seqs: Vec<i64> = nodes.iter().map(|n| n["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=nodes.len() as i64).rev().collect();
    assert_eq!(seqs, expected, "newest first, numbered 1..n without gaps");
    for node in &nodes {
        assert_eq!(node["ip"], CLIENT_IP, "{node}");
        assert_eq!(node["userAgent"], USER_AGENT, "{node}");
        assert_eq!(node["actor"], format!("user:{user}"), "{node}");
        assert_eq!(node["hash"].as_str().unwrap().len(), 64, "{node}");
    }
    let request_ids: Vec<&str> = nodes.iter().map(|n| n["requestId"].as_str().unwrap()).collect();
    for (request_id, action) in [
        ("req-create", "connection.created"),
        ("req-test", "connection.tested"),
        ("req-rotate", "connection.rotated"),
        ("req-revoke", "connection.revoked"),
    ] {
        assert!(
            nodes
                .iter()
                .any(|n| n["requestId"] == request_id && n["action"] == action),
            "{action} carries {request_id}: {request_ids:?}"
        );
    }

    // The chain verifies, through the API and the command line.
    let report = verify(&app, &token).await;
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["entries"], nodes.len(), "{report}");
    assert_eq!(report["firstBrokenSeq"], Value::Null);
    assert_eq!(report["reason"], Value::Null);
    assert_eq!(report["headHash"], nodes[0]["hash"], "the head is the newest entry");
    let (ok, stdout) = cli_verify(&app.urls.worker).await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!("1 chain(s), {} entries checked, 0 broken", nodes.len())),
        "{stdout}"
    );
    assert!(!stdout.contains("chain broken"), "{stdout}");

    // No secret (nor a whole API key) in any stored audit row or head.
    let mut stored = String::new();
    for row in connection_audit_log::Entity::find().all(&app.db).await.unwrap() {
        stored += &format!("{row:?}");
    }
    for row in connection_audit_heads::Entity::find().all(&app.db).await.unwrap() {
        stored += &format!("{row:?}");
    }
    assert!(stored.contains("req-rotate"), "the check reads the rows");
    for canary in [&canary_key, &canary_secret, &rotated_key, &rotated_secret] {
        assert!(!stored.contains(canary.as_str()), "a secret reached the audit log");
    }
}

async fn service_cannot_change_or_remove_entries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (user, token) = new_user(&app).await;
    append(&app.db, user, 3).await;
    let before = connection_audit_log::Entity::find()
        .order_by_asc(connection_audit_log::Column::Seq)
        .all(&app.db)
        .await
        .unwrap();

    let mut refused = vec![
        ("UPDATE connection_audit_log SET action = 'forged'", "append-only"),
        ("DELETE FROM connection_audit_log", "append-only"),
        ("UPDATE connection_audit_heads SET seq = 0", "only moves forward"),
        (
            "UPDATE connection_audit_heads SET hash = 'forged'",
            "only moves forward",
        ),
        ("DELETE FROM connection_audit_heads", "only moves forward"),
    ];
    if backend == Backend::Postgres {
        refused.push(("TRUNCATE connection_audit_log", "append-only"));
        refused.push(("TRUNCATE connection_audit_heads", "only moves forward"));
    }
    for (sql, message) in refused {
        let error = app.db.execute_unprepared(sql).await.expect_err(sql).to_string();
        assert!(error.contains(message), "{sql}: {error}");
    }
    // Through the entity API too.
    let mut row: connection_audit_log::ActiveModel = before[0].clone().into();
    row.details = Set(Some(json!({"forged": true})));
    assert!(row.update(&app.db).await.is_err());
    assert!(
        connection_audit_log::Entity::delete_by_id(before[1].id)
            .exec(&app.db)
            .await
            .is_err()
    );

    let after = connection_audit_log::Entity::find()
        .order_by_asc(connection_audit_log::Column::Seq)
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(verify(&app, &token).await["intact"], true);
}

async fn concurrent_appends_take_distinct_numbers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (user, token) = new_user(&app).await;
    let (other, other_token) = new_user(&app).await;
    let (tasks, each) = (16, 5);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let db = app.db.clone();
        // Another user's appends interleave on the same tables.
        let who = if task % 4 == 3 { other } else { user };
        handles.push(tokio::spawn(async move { append(&db, who, each).await }));
    }
    for handle in handles {
        handle.await.expect("appender");
    }
    let ours = 12 * each as i64;
    let seqs: Vec<i64> = connection_audit_log::Entity::find()
        .filter(connection_audit_log::Column::UserId.eq(user))
        .order_by_asc(connection_audit_log::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|row| row.seq)
        .collect();
    assert_eq!(seqs, (1..=ours).collect::<Vec<_>>());
    let report = verify(&app, &token).await;
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["entries"], ours);
    let report = verify(&app, &other_token).await;
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["entries"], 4 * each as i64);
}

async fn failed_audit_write_leaves_nothing_behind(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, token) = new_user(&app).await;
    connect(&app, &token, "First", "fc1").await;
    let before = verify(&app, &token).await;
    assert_eq!(before["intact"], true, "{before}");

    // Every insert into the audit log fails, as if the table were unwritable.
    let (block, unblock) = block_audit_writes(backend);
    let admin = match backend {
        Backend::Sqlite => app.db.clone(),
        Backend::Postgres => owner(&app).await,
    };
    admin.execute_unprepared(block).await.unwrap();
    let (key, secret) = binance_key("fc2");
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    let error = app
        .err(
            &token,
            &create_mutation(),
            create_input("Second", &key, &secret),
            "INTERNAL_SERVER_ERROR",
        )
        .await;
    assert_eq!(error["message"], "internal error", "{error}");
    admin.execute_unprepared(unblock).await.unwrap();

    // No connection row, no entry, and the head did not move.
    let labels: Vec<String> = exchange_keys::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.label)
        .collect();
    assert_eq!(labels, ["First"]);
    assert_eq!(verify(&app, &token).await, before);

    // The chain goes on from where it was, without a gap.
    connect(&app, &token, "Third", "fc3").await;
    let after = verify(&app, &token).await;
    assert_eq!(after["intact"], true, "{after}");
    assert!(after["entries"].as_i64() > before["entries"].as_i64(), "{after}");
}

/// Rows written before the chain existed (the old system's) are chained by
/// the migration in `created_at, id` order; the chain goes on from there,
/// and migrating down and up again chains everything again.
async fn migration_chains_existing_rows(backend: Backend) {
    exchange_connections::install_crypto_providers();
    let dir = TempDir::new();
    let url = empty_database(backend, &dir.0).await;
    let db = startup::connect_database(&url).await.unwrap();
    let migrations = Migrator::migrations();
    let chain = migrations
        .iter()
        .position(|m| m.name().contains("audit_chain"))
        .expect("the chain migration");
    let chain_and_after = u32::try_from(migrations.len() - chain).unwrap();
    Migrator::up(&db, Some(u32::try_from(chain).unwrap())).await.unwrap();

    let t0 = entity::now() - chrono::Duration::days(400);
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    for id in [alice, bob] {
        users::ActiveModel {
            id: Set(id),
            email: Set(None),
            created_at: Set(t0),
            updated_at: Set(t0),
        }
        .insert(&db)
        .await
        .unwrap();
    }
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let mut tie = [ids[2], ids[3]];
    tie.sort();
    // (id, user, seconds after t0, details)
    let legacy = [
        (
            ids[0],
            alice,
            30,
            Some(json!({"label": "Main ✓", "latencyMs": 120, "ratio": 2.5, "nested": {"b": [1, null], "a": "x\ny"}})),
        ),
        (ids[1], alice, 10, None),
        (tie[1], alice, 20, Some(json!({"n": 1e16}))),
        (tie[0], alice, 20, Some(json!({}))),
        (ids[4], bob, 5, Some(json!({"label": "Other"}))),
    ];
    for (id, user, seconds, details) in &legacy {
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("connection_audit_log"))
            .columns(
                [
                    "id",
                    "user_id",
                    "connection_id",
                    "action",
                    "actor",
                    "ip",
                    "user_agent",
                    "request_id",
                    "details",
                    "created_at",
                ]
                .map(Alias::new),
            )
            .values([
                (*id).into(),
                (*user).into(),
                Option::<Uuid>::None.into(),
                "connection.created".into(),
                format!("user:{user}").into(),
                Some("192.0.2.1".to_string()).into(),
                Option::<String>::None.into(),
                Some(format!("legacy-{seconds}")).into(),
                details.clone().into(),
                (t0 + chrono::Duration::seconds(*seconds)).into(),
            ])
            .unwrap();
        db.execute(&insert).await.unwrap();
    }

    Migrator::up(&db, None).await.unwrap();
    let report = verify_user(&TenantDb::new(db.clone()), alice).await.unwrap();
    assert!(report.intact, "{report:?}");
    assert_eq!(report.entries, 4);
    assert!(verify_user(&TenantDb::new(db.clone()), bob).await.unwrap().intact);
    let order: Vec<Uuid> = connection_audit_log::Entity::find()
        .filter(connection_audit_log::Column::UserId.eq(alice))
        .order_by_asc(connection_audit_log::Column::Seq)
        .all(&db)
        .await
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(order, [ids[1], tie[0], tie[1], ids[0]], "created_at, then id");

    // New entries continue the migrated chain.
    append(&db, alice, 2).await;
    let report = verify_user(&TenantDb::new(db.clone()), alice).await.unwrap();
    assert_eq!((report.intact, report.entries), (true, 6), "{report:?}");

    Migrator::down(&db, Some(chain_and_after)).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    for (user, entries) in [(alice, 6), (bob, 1)] {
        let report = verify_user(&TenantDb::new(db.clone()), user).await.unwrap();
        assert_eq!((report.intact, report.entries), (true, entries), "{report:?}");
    }
    db.close().await.ok();
    drop_database(backend, &url).await;
}

on_both_backends!(
    normal_flow_verifies,
    service_cannot_change_or_remove_entries,
    concurrent_appends_take_distinct_numbers,
    failed_audit_write_leaves_nothing_behind,
    migration_chains_existing_rows
);

/// Each kind of tampering, done as the database owner behind the service's
/// back, is found at its place by `verifyAuditLog` and by `audit verify`.
#[tokio::test]
async fn tampering_is_found_postgres() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let owner = owner(&app).await;
    let mut cases = Vec::new();
    // (what is done, SQL, expected firstBrokenSeq, reason starts with)
    let tampering = [
        (
            "details edited",
            "UPDATE connection_audit_log SET details = '{\"i\": 99}' WHERE user_id = '{user}' AND seq = 2",
            Some(2),
            "hash mismatch",
        ),
        (
            "request id edited",
            "UPDATE connection_audit_log SET request_id = 'forged' WHERE user_id = '{user}' AND seq = 1",
            Some(1),
            "hash mismatch",
        ),
        (
            "an entry in the middle deleted",
            "DELETE FROM connection_audit_log WHERE user_id = '{user}' AND seq = 3",
            Some(3),
            "gap in sequence",
        ),
        (
            "the first entry deleted",
            "DELETE FROM connection_audit_log WHERE user_id = '{user}' AND seq = 1",
            Some(1),
            "gap in sequence",
        ),
        (
            "the newest entry deleted",
            "DELETE FROM connection_audit_log WHERE user_id = '{user}' AND seq = 5",
            Some(5),
            "missing newest entry",
        ),
        (
            "the two newest entries deleted",
            "DELETE FROM connection_audit_log WHERE user_id = '{user}' AND seq >= 4",
            Some(4),
            "missing newest entries",
        ),
        (
            "every entry deleted",
            "DELETE FROM connection_audit_log WHERE user_id = '{user}'",
            Some(1),
            "missing newest entries",
        ),
        (
            "the head deleted",
            "DELETE FROM connection_audit_heads WHERE user_id = '{user}'",
            Some(1),
            "head mismatch",
        ),
        ("nothing", "SELECT '{user}'", None, ""),
    ];
    for (what, sql, first_broken, reason) in tampering {
        let (user, token) = new_user(&app).await;
        append(&app.db, user, 5).await;
        assert_eq!(verify(&app, &token).await["intact"], true, "{what}: intact before");
        tamper(&owner, &sql.replace("{user}", &user.to_string())).await;
        cases.push((what, user, token, first_broken, reason));
    }

    for (what, _, token, first_broken, reason) in &cases {
        let report = verify(&app, token).await;
        assert_eq!(report["intact"], first_broken.is_none(), "{what}: {report}");
        assert_eq!(report["firstBrokenSeq"], json!(first_broken), "{what}: {report}");
        if first_broken.is_some() {
            let text = report["reason"].as_str().unwrap_or_default();
            assert!(text.starts_with(reason), "{what}: {report}");
        }
    }

    let (ok, stdout) = cli_verify(&app.urls.worker).await;
    assert!(!ok, "a broken chain fails the command: {stdout}");
    for (what, user, _, first_broken, _) in &cases {
        let line = stdout.lines().find(|line| line.contains(&user.to_string()));
        match first_broken {
            Some(seq) => {
                let line = line.unwrap_or_else(|| panic!("{what}: no line in {stdout}"));
                assert!(line.contains(&format!("broken at seq {seq}:")), "{what}: {line}");
            }
            None => assert!(line.is_none(), "{what}: an intact chain is not listed: {stdout}"),
        }
    }
    let broken = cases.iter().filter(|c| c.3.is_some()).count();
    assert!(
        stdout.contains(&format!("{} chain(s), ", cases.len())) && stdout.contains(&format!(", {broken} broken")),
        "{stdout}"
    );
    owner.close().await.ok();
}

/// A database with no tables yet (SQLite file, or a new PostgreSQL database).
async fn empty_database(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("legacy.db").display()),
        Backend::Postgres => {
            let admin_url = postgres_admin_url();
            let admin = sea_orm::Database::connect(&admin_url).await.expect("PostgreSQL");
            let name = format!("ec_test_{}", Uuid::new_v4().simple());
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            admin.close().await.ok();
            let (base, _) = admin_url.rsplit_once('/').unwrap();
            format!("{base}/{name}")
        }
    }
}

async fn drop_database(backend: Backend, url: &str) {
    if backend == Backend::Postgres {
        let (_, name) = url.rsplit_once('/').unwrap();
        let admin = sea_orm::Database::connect(&postgres_admin_url()).await.unwrap();
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .ok();
        admin.close().await.ok();
    }
}
