//! Failures behind the API: an unreadable stored secret fails only its own
//! connection; a write whose audit entry cannot be written leaves nothing
//! behind; canary secrets never come back out.

use crate::connections::{binance_key, connect, create_input, create_mutation};
use crate::helpers::{Backend, ENCRYPTION_KEY, TestApp, block_audit_writes};
use crate::mock::binance::MockPermissions;
use crate::on_both_backends;
use entity::{connection_audit_log, connection_health_checks, exchange_keys};
use exchange_connections::crypto::{KeyRing, SecretField, SecretOwner, SecretString};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, Set};
use serde_json::json;
use uuid::Uuid;

const TEST_QUERY: &str = "mutation($id: ID!) { testConnection(id: $id) { ok error { code } } }";

async fn unreadable_secret_fails_one_connection(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::new_v4();
    let token = app.token_for(user);
    let broken = connect(&app, &token, "Broken", "unr1").await;
    let healthy = connect(&app, &token, "Healthy", "unr2").await;
    let broken_id = Uuid::parse_str(broken["id"].as_str().unwrap()).unwrap();
    let healthy_id = Uuid::parse_str(healthy["id"].as_str().unwrap()).unwrap();

    // 1. Sealed under a key this deployment does not have.
    let foreign = KeyRing::parse(&KeyRing::generate_key(), "TEST").unwrap();
    let owner = SecretOwner {
        user_id: user,
        connection_id: broken_id,
    };
    let token_from_elsewhere = foreign
        .seal(&owner, SecretField::ApiSecret, &SecretString::new("x"))
        .unwrap()
        .token;
    let row = exchange_keys::Entity::find_by_id(broken_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active = row.clone().into_active_model();
    active.api_secret_encrypted = Set(Some(token_from_elsewhere));
    active.update(&app.db).await.unwrap();
    let error = app
        .err(&token, TEST_QUERY, json!({"id": broken_id}), "INTERNAL_SERVER_ERROR")
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("cannot be decrypted"),
        "{error}"
    );

    // 2. A valid ciphertext copied from another row: refused by the owner binding.
    let healthy_row = exchange_keys::Entity::find_by_id(healthy_id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active = row.into_active_model();
    active.api_secret_encrypted = Set(healthy_row.api_secret_encrypted.clone());
    active.update(&app.db).await.unwrap();
    app.err(&token, TEST_QUERY, json!({"id": broken_id}), "INTERNAL_SERVER_ERROR")
        .await;

    // Every other connection keeps working, and the list still shows both.
    let ok = app.ok(&token, TEST_QUERY, json!({"id": healthy_id})).await;
    assert_eq!(ok["testConnection"]["ok"], true);
    let list = app.ok(&token, "{ connections { label } }", json!({})).await;
    assert_eq!(list["connections"].as_array().unwrap().len(), 2);
    // The broken one can still be rotated or revoked by its owner.
    app.ok(
        &token,
        "mutation($id: ID!) { revokeConnection(id: $id) { status } }",
        json!({"id": broken_id}),
    )
    .await;
}

async fn audit_failure_rolls_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let existing = connect(&app, &token, "Existing", "atom1").await;
    let audit_count = connection_audit_log::Entity::find().all(&app.db).await.unwrap().len();

    // Make every audit write fail, behind the service's back.
    let (block, unblock) = block_audit_writes(backend);
    app.db.execute_unprepared(block).await.unwrap();
    let (key, secret) = binance_key("atom2");
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    let error = app
        .err(
            &token,
            &create_mutation(),
            create_input("New", &key, &secret),
            "INTERNAL_SERVER_ERROR",
        )
        .await;
    assert_eq!(error["message"], "internal error", "no internals leak: {error}");
    app.err(
        &token,
        "mutation($id: ID!) { revokeConnection(id: $id) { id } }",
        json!({"id": existing["id"]}),
        "INTERNAL_SERVER_ERROR",
    )
    .await;
    app.db.execute_unprepared(unblock).await.unwrap();

    // Neither write happened.
    let list = app.ok(&token, "{ connections { label status } }", json!({})).await;
    assert_eq!(list["connections"], json!([{"label": "Existing", "status": "HEALTHY"}]));
    assert_eq!(
        connection_audit_log::Entity::find().all(&app.db).await.unwrap().len(),
        audit_count
    );
    assert_eq!(exchange_keys::Entity::find().all(&app.db).await.unwrap().len(), 1);
}

async fn canary_secrets_never_come_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let canary_key = format!("CANARYKEY{}", "1".repeat(55));
    let canary_secret = format!("CANARYSECRET{}", "2".repeat(52));
    let wrong_secret = format!("CANARYWRONG{}", "3".repeat(53));
    app.binance
        .add_hmac_key(&canary_key, &canary_secret, MockPermissions::default());
    let mut seen = String::new();
    let creds = json!({"exchange": "BINANCE", "apiKey": canary_key, "apiSecret": canary_secret});
    let bad_creds = json!({"exchange": "BINANCE", "apiKey": canary_key, "apiSecret": wrong_secret});

    let (_, body) = app
        .gql(
            Some(&token),
            "mutation($c: CredentialsInput!) { testCredentials(input: $c) { ok error { code message hint } } }",
            json!({"c": bad_creds}),
        )
        .await;
    seen += &body.to_string();
    let (_, body) = app
        .gql(
            Some(&token),
            &create_mutation(),
            json!({"input": {"label": "Canary", "credentials": bad_creds}}),
        )
        .await;
    seen += &body.to_string();
    let (_, body) = app
        .gql(
            Some(&token),
            &create_mutation(),
            json!({"input": {"label": "Canary", "credentials": creds}}),
        )
        .await;
    seen += &body.to_string();
    let id = body["data"]["createConnection"]["id"].clone();
    let (_, body) = app.gql(Some(&token), TEST_QUERY, json!({"id": id})).await;
    seen += &body.to_string();
    let (_, body) = app
        .gql(
            Some(&token),
            "mutation($id: ID!, $c: CredentialsInput!) { rotateKeys(id: $id, credentials: $c) { id } }",
            json!({"id": id, "c": bad_creds}),
        )
        .await;
    seen += &body.to_string();
    let (_, body) = app
        .gql(
            Some(&token),
            "{ connections(includeRevoked: true) { id apiKeyHint } auditLog { nodes { details } } }",
            json!({}),
        )
        .await;
    seen += &body.to_string();
    seen += &app.metrics_text().await;

    // What the database holds outside the ciphertext columns.
    for row in exchange_keys::Entity::find().all(&app.db).await.unwrap() {
        seen += &format!(
            "{} {} {:?} {:?} {:?}",
            row.label, row.api_key_hint, row.api_key_fingerprint, row.permissions, row.last_error
        );
        for token in [&row.api_key_encrypted, &row.api_secret_encrypted]
            .into_iter()
            .flatten()
        {
            assert!(!token.contains("CANARY"), "ciphertext is not plaintext");
        }
    }
    for row in connection_audit_log::Entity::find().all(&app.db).await.unwrap() {
        seen += &format!("{row:?}");
    }
    for row in connection_health_checks::Entity::find().all(&app.db).await.unwrap() {
        seen += &format!("{row:?}");
    }
    for canary in [&canary_secret, &wrong_secret] {
        assert!(!seen.contains(canary.as_str()), "a secret came back out");
    }
    assert!(!seen.contains(&canary_key), "the full API key came back out");
    assert!(
        seen.contains("CANA…1111"),
        "the hint is there (the check reads what it should)"
    );
    // Keys sealed by this deployment open with its key ring (sanity of the check above).
    let ring = KeyRing::parse(ENCRYPTION_KEY, "TEST").unwrap();
    assert!(!ring.key_ids().is_empty());
}

on_both_backends!(
    unreadable_secret_fails_one_connection,
    audit_failure_rolls_back,
    canary_secrets_never_come_back
);

/// PostgreSQL goes away (every connection of the app's database killed and
/// new ones refused): callers get an error, never a hang or a crash, readiness
/// says so, and the service recovers when the database returns.
#[tokio::test]
async fn database_going_away_postgres() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let token = app.token_for(Uuid::new_v4());
    connect(&app, &token, "Main", "away1").await;
    let name = app
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            "SELECT current_database() AS name",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "name")
        .unwrap();
    let admin = sea_orm::Database::connect(crate::helpers::postgres_admin_url())
        .await
        .unwrap();
    let cut_off = format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    admin.execute_unprepared(&cut_off).await.unwrap();

    let (key, secret) = binance_key("away2");
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    let (_, body) = app
        .gql(Some(&token), &create_mutation(), create_input("During", &key, &secret))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INTERNAL_SERVER_ERROR",
        "{body}"
    );
    assert_eq!(body["errors"][0]["message"], "internal error");
    let (_, body) = app.gql(Some(&token), "{ connections { id } }", json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INTERNAL_SERVER_ERROR",
        "{body}"
    );
    let ready = app.client.get(format!("{}/readyz", app.base_url)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let health = app
        .client
        .get(format!("{}/healthz", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "alive, just not ready");

    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        let (_, body) = app.gql(Some(&token), "{ connections { label } }", json!({})).await;
        if body.get("errors").is_none() {
            assert_eq!(
                body["data"]["connections"],
                json!([{"label": "Main"}]),
                "nothing half-written"
            );
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the service recovers when the database returns");
}
