//! Key rotation (`rekey`): every stored secret moves to the new primary key
//! and stays the same secret; Python's `cryptography` reads them with only
//! the new key; a run interrupted after a batch, or killed at any point,
//! finishes when run again; unreadable rows are reported and skipped; serve
//! keeps working during the run; a concurrent rotation is never overwritten.

use crate::connections::{binance_key, connect};
use crate::helpers::{Backend, ENCRYPTION_KEY, TestApp};
use crate::on_both_backends;
use entity::{connection_audit_log as audit, exchange_keys as keys};
use exchange_connections::crypto::{CryptoError, KeyRing, SecretField, SecretOwner, SecretString};
use exchange_connections::service::rekey::{self, Rekey, RekeyOptions};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, Statement,
    TransactionTrait,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const TEST: &str = "mutation($id: ID!) { testConnection(id: $id) { ok error { code message } } }";
const ROTATE: &str = "mutation($id: ID!, $c: CredentialsInput!) { rotateKeys(id: $id, credentials: $c) { id } }";

fn ring(spec: &str) -> Arc<KeyRing> {
    Arc::new(KeyRing::parse(spec, "ENCRYPTION_KEYS").expect("test keys"))
}

fn key_id(key: &str) -> String {
    ring(key).primary_key_id().to_owned()
}

/// The app's default key is the old one; the new one is fresh per test, so
/// its `stored_secrets` label is this test's alone.
struct Keys {
    new: String,
    rotated: Arc<KeyRing>,
    new_only: Arc<KeyRing>,
}

fn keys() -> Keys {
    let new = KeyRing::generate_key();
    Keys {
        rotated: ring(&format!("{new},{ENCRYPTION_KEY}")),
        new_only: ring(&new),
        new,
    }
}

/// An app on the old key that lets one user run many exchange tests.
async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        s.exchange_tests_per_minute = 100_000;
        s.exchange_tests_burst = 100_000;
    })
    .await
}

/// A replica of `app` on `encryption_keys`, speaking to `app`'s mock exchanges.
async fn replica(app: &TestApp, encryption_keys: &str) -> TestApp {
    let binance = app.binance.base_url.as_str().trim_end_matches('/').to_owned();
    let kite = app.kite.base_url.as_str().trim_end_matches('/').to_owned();
    // As the worker's role: counting every user's secrets for the
    // `stored_secrets` gauge takes the system identity.
    app.replica_as(Some(crate::helpers::DbRole::Worker), |s| {
        s.encryption_keys = Some(encryption_keys.to_owned());
        s.binance_base_url = binance.clone();
        s.binance_testnet_base_url = binance;
        s.kite_base_url = kite;
        s.exchange_tests_per_minute = 100_000;
        s.exchange_tests_burst = 100_000;
    })
    .await
}

/// A Zerodha connection with a Kite session token (a fourth kind of secret).
async fn connect_kite(app: &TestApp, token: &str) -> String {
    let (api_key, api_secret) = ("rekeykiteapp1", "rekeykiteSECRET0123456789");
    app.kite.add_app(api_key, api_secret);
    let created = app
        .ok(
            token,
            "mutation($i: CreateConnectionInput!) { createConnection(input: $i) { id } }",
            json!({"i": {"label": "Zerodha", "credentials": {"exchange": "ZERODHA", "apiKey": api_key, "apiSecret": api_secret}}}),
        )
        .await;
    let id = created["createConnection"]["id"].as_str().unwrap().to_owned();
    let begin = app
        .ok(
            token,
            "mutation($id: ID!) { beginKiteLogin(connectionId: $id) { state } }",
            json!({"id": id}),
        )
        .await;
    let state = begin["beginKiteLogin"]["state"].as_str().unwrap();
    let done = app
        .ok(
            token,
            "mutation($s: String!, $t: String!) { completeKiteLogin(state: $s, requestToken: $t) { status } }",
            json!({"s": state, "t": app.kite.issue_request_token(api_key)}),
        )
        .await;
    assert_eq!(done["completeKiteLogin"]["status"], "HEALTHY");
    id
}

const FIELDS: [SecretField; 4] = [
    SecretField::ApiKey,
    SecretField::ApiSecret,
    SecretField::Passphrase,
    SecretField::AccessToken,
];

fn token_of(row: &keys::Model, field: SecretField) -> Option<&str> {
    match field {
        SecretField::ApiKey => row.api_key_encrypted.as_deref(),
        SecretField::ApiSecret => row.api_secret_encrypted.as_deref(),
        SecretField::Passphrase => row.passphrase_encrypted.as_deref(),
        SecretField::AccessToken => row.access_token_encrypted.as_deref(),
    }
}

fn owner(row: &keys::Model) -> SecretOwner {
    SecretOwner {
        user_id: row.user_id,
        connection_id: row.id,
    }
}

async fn rows(db: &DatabaseConnection) -> Vec<keys::Model> {
    keys::Entity::find().all(db).await.expect("read exchange_keys")
}

/// Every stored secret, opened with `ring` (panics if one does not open).
async fn secrets(db: &DatabaseConnection, ring: &KeyRing) -> BTreeMap<(Uuid, &'static str), String> {
    let mut out = BTreeMap::new();
    for row in rows(db).await {
        for field in FIELDS {
            if let Some(token) = token_of(&row, field) {
                let secret = ring
                    .open(&owner(&row), field, token)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", row.id, field.as_str()));
                out.insert((row.id, field.as_str()), secret.expose().to_owned());
            }
        }
    }
    out
}

/// Runs `rekey` to the end; returns the run for its counts.
async fn run_to_end(db: &DatabaseConnection, ring: Arc<KeyRing>, options: RekeyOptions) -> Rekey {
    let mut run = Rekey::start(db.clone(), ring, options).await.expect("start rekey");
    while run.next_batch().await.expect("rekey batch").is_some() {}
    run
}

fn batches_of(batch_size: u64) -> RekeyOptions {
    RekeyOptions {
        batch_size,
        ..RekeyOptions::default()
    }
}

async fn rekeyed_entries(db: &DatabaseConnection) -> Vec<audit::Model> {
    audit::Entity::find()
        .filter(audit::Column::Action.eq("connection.rekeyed"))
        .all(db)
        .await
        .expect("read audit log")
}

/// Waits until `app`'s /metrics shows `stored_secrets{key="<key>"} <expected>`
/// (a process with the system identity counts at startup, in the background).
async fn assert_gauge(app: &TestApp, key: &str, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = gauge(app, key).await;
        if value == Some(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored_secrets{{key=\"{key}\"}} is {value:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `stored_secrets{key="<id>"}` as `app` serves it at /metrics.
async fn gauge(app: &TestApp, key: &str) -> Option<f64> {
    let text = app.metrics_text().await;
    let prefix = format!("stored_secrets{{key=\"{key}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().expect("a number"))
}

/// Python's `cryptography.fernet` with only `key` decrypts every token; returns the envelopes.
fn python_decrypts(key: &str, tokens: &[String]) -> Vec<Value> {
    const DECRYPT: &str = r#"
import json, sys
from cryptography.fernet import Fernet
request = json.load(sys.stdin)
f = Fernet(request["key"].encode())
print(json.dumps([json.loads(f.decrypt(t.encode())) for t in request["tokens"]]))
"#;
    let mut child = Command::new("python3")
        .args(["-c", DECRYPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with `pip install cryptography`) is needed");
    let request = json!({ "key": key, "tokens": tokens });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

async fn rekey_moves_every_secret_to_the_new_key(backend: Backend) {
    let app = spawn(backend).await;
    let k = keys();
    let (old_id, new_id) = (key_id(ENCRYPTION_KEY), key_id(&k.new));
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (alice_token, bob_token) = (app.token_for(alice), app.token_for(bob));
    let mut live = Vec::new();
    for tag in ["ra1", "ra2", "ra3"] {
        live.push(
            connect(&app, &alice_token, tag, tag).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    live.push(connect_kite(&app, &alice_token).await);
    live.push(
        connect(&app, &bob_token, "rb1", "rb1").await["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let revoked = connect(&app, &bob_token, "rb2", "rb2").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ok(
        &bob_token,
        "mutation($id: ID!) { revokeConnection(id: $id) { status } }",
        json!({"id": revoked}),
    )
    .await;
    let before = secrets(&app.db, &ring(ENCRYPTION_KEY)).await;
    assert_eq!(before.len(), 11, "4 Binance × 2 + Zerodha key, secret and session");
    let rows_before = rows(&app.db).await;

    // Deployed with the new key first: serve counts everything under the old one.
    let deployed = replica(&app, &format!("{},{ENCRYPTION_KEY}", k.new)).await;
    assert_gauge(&deployed, &new_id, 0.0).await;

    // A dry run opens and counts, and writes nothing.
    let dry = run_to_end(
        &app.db,
        k.rotated.clone(),
        RekeyOptions {
            batch_size: 2,
            dry_run: true,
            ..RekeyOptions::default()
        },
    )
    .await;
    assert_eq!(
        (
            dry.total_rows(),
            dry.totals().scanned,
            dry.totals().rows_resealed,
            dry.totals().secrets_resealed
        ),
        (5, 5, 5, 11)
    );
    assert_eq!(
        dry.by_key(),
        BTreeMap::from([(new_id.clone(), 11), (old_id.clone(), 0)])
    );
    assert_eq!(rows(&app.db).await, rows_before, "a dry run changes nothing");
    assert!(rekeyed_entries(&app.db).await.is_empty());

    let run = run_to_end(&app.db, k.rotated.clone(), batches_of(2)).await;
    let totals = run.totals();
    assert_eq!(
        (
            totals.scanned,
            totals.rows_resealed,
            totals.secrets_resealed,
            totals.rows_relabelled,
            totals.unreadable
        ),
        (5, 5, 11, 0, 0)
    );
    assert_eq!(
        rekey::stored_secrets_by_key(&exchange_connections::service::tenancy::TenantDb::new(app.db.clone()))
            .await
            .unwrap(),
        BTreeMap::from([(new_id.clone(), 11)])
    );

    // The same secrets, now opened by the new key alone; the old key opens none.
    assert_eq!(secrets(&app.db, &k.new_only).await, before);
    for row in rows(&app.db).await {
        for field in FIELDS {
            if let Some(token) = token_of(&row, field) {
                assert_eq!(
                    ring(ENCRYPTION_KEY).open(&owner(&row), field, token),
                    Err(CryptoError::NoKeyDecrypts)
                );
            }
        }
        let expected = if row.id.to_string() == revoked {
            None
        } else {
            Some(new_id.clone())
        };
        assert_eq!(row.key_version, expected);
    }

    // Python's cryptography, given only the new key, reads each envelope: owner, field and secret.
    let stored: Vec<(keys::Model, SecretField)> = rows(&app.db)
        .await
        .into_iter()
        .flat_map(|row| FIELDS.into_iter().map(move |field| (row.clone(), field)))
        .filter(|(row, field)| token_of(row, *field).is_some())
        .collect();
    let tokens: Vec<String> = stored
        .iter()
        .map(|(row, field)| token_of(row, *field).unwrap().to_owned())
        .collect();
    let envelopes = python_decrypts(&k.new, &tokens);
    assert_eq!(envelopes.len(), 11);
    for ((row, field), envelope) in stored.iter().zip(&envelopes) {
        assert_eq!(
            envelope,
            &json!({
                "v": 1, "uid": row.user_id, "cid": row.id, "f": field.as_str(),
                "s": before[&(row.id, field.as_str())],
            })
        );
    }

    // One audit entry per re-encrypted connection, in its owner's log, with no secret in it.
    let log = app
        .ok(
            &alice_token,
            "{ auditLog(first: 200) { nodes { action connectionId actor details } } }",
            json!({}),
        )
        .await;
    let entries: Vec<&Value> = log["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["action"] == "connection.rekeyed")
        .collect();
    assert_eq!(entries.len(), 4);
    for entry in &entries {
        assert_eq!(entry["actor"], "system:rekey");
        assert_eq!(entry["details"]["toKey"], new_id.as_str());
        assert_eq!(entry["details"]["fromKeys"], json!([old_id]));
        let text = entry.to_string();
        for secret in before.values() {
            assert!(!text.contains(secret.as_str()), "{text}");
        }
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "{text}");
        }
    }
    let kite_entry = entries.iter().find(|e| e["connectionId"] == live[3].as_str()).unwrap();
    assert_eq!(
        kite_entry["details"]["fields"],
        json!(["api_key", "api_secret", "access_token"])
    );
    let all = rekeyed_entries(&app.db).await;
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|e| e.request_id.as_deref() == Some(run.run_id())));

    // Running again changes nothing and audits nothing.
    let again = run_to_end(&app.db, k.rotated.clone(), batches_of(2)).await;
    assert_eq!((again.totals().scanned, again.totals().rows_resealed), (5, 0));
    assert_eq!(rekeyed_entries(&app.db).await.len(), 5);

    // Serve with only the new key: every connection works, and the gauge shows them all under it.
    let upgraded = replica(&app, &k.new).await;
    assert_gauge(&upgraded, &new_id, 11.0).await;
    for id in &live {
        let owner_token = if *id == live[4] { &bob_token } else { &alice_token };
        let result = upgraded.ok(owner_token, TEST, json!({"id": id})).await;
        assert_eq!(result["testConnection"]["ok"], true, "{id}: {result}");
    }
}

async fn an_interrupted_rekey_resumes(backend: Backend) {
    let app = spawn(backend).await;
    let k = keys();
    let new_id = key_id(&k.new);
    let token = app.token_for(Uuid::new_v4());
    for tag in ["ri1", "ri2", "ri3", "ri4", "ri5"] {
        connect(&app, &token, tag, tag).await;
    }
    let before = secrets(&app.db, &ring(ENCRYPTION_KEY)).await;

    // One batch of two rows, then the run stops (as if the process died there).
    let one_at_a_time = RekeyOptions {
        parallel: 1,
        ..batches_of(2)
    };
    let mut first = Rekey::start(app.db.clone(), k.rotated.clone(), one_at_a_time)
        .await
        .unwrap();
    let report = first.next_batch().await.unwrap().expect("a first batch");
    assert_eq!((report.counts.scanned, report.counts.rows_resealed), (2, 2));
    drop(first);
    let moved = rows(&app.db)
        .await
        .iter()
        .filter(|row| row.key_version.as_deref() == Some(new_id.as_str()))
        .count();
    assert_eq!(moved, 2);
    // Meanwhile serve still reads every row, moved or not.
    assert_eq!(secrets(&app.db, &k.rotated).await, before);

    let second = run_to_end(&app.db, k.rotated.clone(), batches_of(2)).await;
    assert_eq!(
        (
            second.totals().scanned,
            second.totals().rows_resealed,
            second.totals().secrets_resealed
        ),
        (5, 3, 6)
    );
    assert_eq!(secrets(&app.db, &k.new_only).await, before);
    let entries = rekeyed_entries(&app.db).await;
    let mut audited: Vec<_> = entries.iter().map(|e| e.connection_id).collect();
    audited.sort();
    audited.dedup();
    assert_eq!(
        (entries.len(), audited.len()),
        (5, 5),
        "one entry per connection, none twice"
    );
}

/// `exchange-connections rekey` on `database_url` with `keys`.
fn rekey_command(database_url: &str, keys: &str, dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_exchange-connections"));
    command
        .arg("rekey")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("ENCRYPTION_KEYS", keys)
        .env("LOG_FORMAT", "text")
        .current_dir(dir);
    command
}

async fn unreadable_rows_are_reported_and_skipped(backend: Backend) {
    let app = spawn(backend).await;
    let k = keys();
    let token = app.token_for(Uuid::new_v4());
    for tag in ["ru1", "ru2", "ru3", "ru4"] {
        connect(&app, &token, tag, tag).await;
    }
    let mut all = rows(&app.db).await;
    all.sort_by_key(|row| row.id);
    // One secret sealed under a key nobody configured; one token copied from another row.
    let foreign = ring(&KeyRing::generate_key())
        .seal(&owner(&all[0]), SecretField::ApiSecret, &SecretString::new("lost"))
        .unwrap()
        .token;
    let tampered = [
        (all[0].id, "api_secret_encrypted", foreign),
        (
            all[1].id,
            "api_key_encrypted",
            all[2].api_key_encrypted.clone().unwrap(),
        ),
    ];
    for (id, column, value) in &tampered {
        let backend = app.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => format!("UPDATE exchange_keys SET {column} = $1 WHERE id = $2"),
            _ => format!("UPDATE exchange_keys SET {column} = ? WHERE id = ?"),
        };
        app.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [value.clone().into(), (*id).into()],
            ))
            .await
            .unwrap();
    }
    let tampered_rows: Vec<keys::Model> = rows(&app.db)
        .await
        .into_iter()
        .filter(|row| row.id == all[0].id || row.id == all[1].id)
        .collect();

    let mut run = Rekey::start(app.db.clone(), k.rotated.clone(), batches_of(3))
        .await
        .unwrap();
    let mut unreadable = Vec::new();
    while let Some(report) = run.next_batch().await.unwrap() {
        unreadable.extend(report.unreadable);
    }
    let found: Vec<_> = unreadable
        .iter()
        .map(|u| (u.connection_id, u.field, &u.reason))
        .collect();
    assert_eq!(
        found,
        [
            (all[0].id, SecretField::ApiSecret, &CryptoError::NoKeyDecrypts),
            (all[1].id, SecretField::ApiKey, &CryptoError::OwnerMismatch),
        ]
    );
    assert_eq!(
        (
            run.totals().scanned,
            run.totals().rows_resealed,
            run.totals().unreadable
        ),
        (4, 2, 2)
    );
    // Skipped rows are untouched; the others moved to the new key.
    let after = rows(&app.db).await;
    for row in &tampered_rows {
        assert!(after.contains(row), "{} was changed", row.id);
    }
    for row in after.iter().filter(|row| row.id == all[2].id || row.id == all[3].id) {
        assert_eq!(row.key_version.as_deref(), Some(k.new_only.primary_key_id()));
    }

    // The command says which rows (by id, never content) and exits non-zero.
    let dir = crate::helpers::TempDir::new();
    let out = rekey_command(&app.urls.worker, &format!("{},{ENCRYPTION_KEY}", k.new), &dir.0)
        .output()
        .expect("run rekey");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    for row in &tampered_rows {
        assert!(
            stdout.contains(&format!("unreadable, skipped: connection {}", row.id)),
            "{stdout}"
        );
    }
    assert!(stdout.contains("unreadable 2"), "{stdout}");
    assert!(
        stderr.contains("2 row(s) hold a secret that no configured key opens"),
        "{stderr}"
    );
    for row in &tampered_rows {
        for field in FIELDS {
            if let Some(token) = token_of(row, field) {
                assert!(!stdout.contains(token) && !stderr.contains(token));
            }
        }
    }
}

on_both_backends!(
    rekey_moves_every_secret_to_the_new_key,
    an_interrupted_rekey_resumes,
    unreadable_rows_are_reported_and_skipped,
);

/// The process killed at an arbitrary point (SIGKILL, mid-batch or between
/// batches), then run again: every secret readable under the new key, each
/// connection audited exactly once.
#[tokio::test]
async fn a_killed_rekey_process_loses_nothing() {
    let app = spawn(Backend::Postgres).await;
    let k = keys();
    let new_id = key_id(&k.new);
    for n in 0..60 {
        let token = app.token_for(Uuid::new_v4());
        let tag = format!("k{n:02}");
        connect(&app, &token, &tag, &tag).await;
    }
    let before = secrets(&app.db, &ring(ENCRYPTION_KEY)).await;
    let dir = crate::helpers::TempDir::new();
    let keys_spec = format!("{},{ENCRYPTION_KEY}", k.new);

    let mut child = rekey_command(&app.urls.worker, &keys_spec, &dir.0)
        .args(["--batch-size", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rekey");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = lines.next().expect("a first line").unwrap();
    assert!(
        header.contains("60 rows hold secrets") && header.contains(&format!("{} 120", key_id(ENCRYPTION_KEY))),
        "{header}"
    );
    let first = lines.next().expect("a progress line").unwrap();
    assert!(first.starts_with("batch 1: scanned 1/60 rows"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
    let moved = rows(&app.db)
        .await
        .iter()
        .filter(|row| row.key_version.as_deref() == Some(new_id.as_str()))
        .count();
    assert!((1..60).contains(&moved), "killed mid-run: {moved} of 60 rows moved");
    assert_eq!(secrets(&app.db, &k.rotated).await, before);

    let out = rekey_command(&app.urls.worker, &keys_spec, &dir.0)
        .args(["--batch-size", "7"])
        .output()
        .expect("run rekey again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It found what the killed run left (a commit in flight when it died may have landed after
    // the count above), and re-encrypted exactly that.
    let old_id = key_id(ENCRYPTION_KEY);
    let left: u64 = stdout
        .lines()
        .next()
        .and_then(|header| header.split(&format!("{old_id} ")).nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count for the old key in {stdout}"));
    assert!(left <= 2 * (60 - moved as u64) && left > 0, "{stdout}");
    assert!(
        stdout.contains(&format!("re-encrypted {left} secrets in {} rows", left / 2)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "stored secrets by key version: {}",
            by_key_line(&new_id, &key_id(ENCRYPTION_KEY))
        )),
        "{stdout}"
    );
    assert_eq!(secrets(&app.db, &k.new_only).await, before);
    let entries = rekeyed_entries(&app.db).await;
    let mut audited: Vec<_> = entries.iter().map(|e| e.connection_id).collect();
    audited.sort();
    audited.dedup();
    assert_eq!((entries.len(), audited.len()), (60, 60));
}

/// `new (primary) 120, old 0` in the command's key order (sorted by id).
fn by_key_line(new_id: &str, old_id: &str) -> String {
    let mut parts = [
        (new_id, format!("{new_id} (primary) 120")),
        (old_id, format!("{old_id} 0")),
    ];
    parts.sort();
    parts.map(|(_, text)| text).join(", ")
}

/// A serve replica on both keys answers queries and tests (and rotates a
/// key) throughout a rekey, and afterwards one on the new key alone does.
#[tokio::test]
async fn serve_keeps_working_during_rekey() {
    let app = spawn(Backend::Postgres).await;
    let k = keys();
    let user = Uuid::new_v4();
    let token = app.token_for(user);
    let mut ids = Vec::new();
    for n in 0..40 {
        let tag = format!("s{n:02}");
        ids.push(
            connect(&app, &token, &tag, &tag).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let serve = replica(&app, &format!("{},{ENCRYPTION_KEY}", k.new)).await;
    let rekey = tokio::spawn({
        let (db, ring) = (app.db.clone(), k.rotated.clone());
        async move { run_to_end(&db, ring, batches_of(3)).await.totals().clone() }
    });
    let (rotated_key, rotated_secret) = binance_key("srot");
    app.binance.add_hmac_key(
        &rotated_key,
        &rotated_secret,
        crate::mock::binance::MockPermissions::default(),
    );
    let mut calls = 0;
    let mut rotated = false;
    while !rekey.is_finished() || calls < 10 {
        let id = &ids[calls % ids.len()];
        let tested = serve.ok(&token, TEST, json!({"id": id})).await;
        assert_eq!(tested["testConnection"]["ok"], true, "{tested}");
        let listed = serve.ok(&token, "{ connections { id status } }", json!({})).await;
        assert_eq!(listed["connections"].as_array().unwrap().len(), 40);
        if !rotated {
            serve
                .ok(
                    &token,
                    ROTATE,
                    json!({"id": ids[39], "c": {"exchange": "BINANCE", "apiKey": rotated_key, "apiSecret": rotated_secret}}),
                )
                .await;
            rotated = true;
        }
        calls += 1;
    }
    let totals = rekey.await.unwrap();
    assert_eq!((totals.scanned, totals.unreadable), (40, 0));
    assert!(totals.rows_resealed >= 39, "{totals:?}");

    // The rotation made during the run is what is stored, under the new key.
    let stored = secrets(&app.db, &k.new_only).await;
    let last: Uuid = ids[39].parse().unwrap();
    assert_eq!(stored[&(last, "api_key")], rotated_key);
    assert_eq!(stored[&(last, "api_secret")], rotated_secret);

    let upgraded = replica(&app, &k.new).await;
    for id in &ids {
        let tested = upgraded.ok(&token, TEST, json!({"id": id})).await;
        assert_eq!(tested["testConnection"]["ok"], true, "{id}: {tested}");
    }
}

/// A rotation holding its row when the rekey reaches it: the rekey waits
/// (`FOR UPDATE`), then sees the new credentials and leaves them as they are.
#[tokio::test]
async fn rekey_never_overwrites_a_concurrent_rotation() {
    let app = spawn(Backend::Postgres).await;
    let k = keys();
    let token = app.token_for(Uuid::new_v4());
    let id: Uuid = connect(&app, &token, "rc1", "rc1").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let row = keys::Entity::find_by_id(id).one(&app.db).await.unwrap().unwrap();
    // A replica on the new key rotates the credentials; its transaction is still open.
    let seal = |field, value: &str| k.rotated.seal(&owner(&row), field, &SecretString::new(value)).unwrap();
    let (api_key, api_secret) = (
        seal(SecretField::ApiKey, "rotated-key"),
        seal(SecretField::ApiSecret, "rotated-secret"),
    );
    let rotation = app.db.begin().await.unwrap();
    rotation
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE exchange_keys SET api_key_encrypted = $1, api_secret_encrypted = $2, key_version = $3 WHERE id = $4",
            [
                api_key.token.clone().into(),
                api_secret.token.clone().into(),
                api_key.key_id.clone().into(),
                id.into(),
            ],
        ))
        .await
        .unwrap();

    let rekey = tokio::spawn({
        let (db, ring) = (app.db.clone(), k.rotated.clone());
        async move { run_to_end(&db, ring, batches_of(10)).await.totals().clone() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!rekey.is_finished(), "rekey must wait for the row's lock");
    rotation.commit().await.unwrap();
    let totals = rekey.await.unwrap();
    assert_eq!((totals.scanned, totals.rows_resealed), (1, 0));

    let stored = keys::Entity::find_by_id(id).one(&app.db).await.unwrap().unwrap();
    assert_eq!(stored.api_key_encrypted.as_deref(), Some(api_key.token.as_str()));
    assert_eq!(stored.api_secret_encrypted.as_deref(), Some(api_secret.token.as_str()));
    assert_eq!(
        keys::Entity::find()
            .filter(keys::Column::KeyVersion.eq(api_key.key_id))
            .count(&app.db)
            .await
            .unwrap(),
        1
    );
}
