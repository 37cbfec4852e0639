//! The connection lifecycle through the public GraphQL API, on both backends:
//! create, list, test, rotate, revoke, audit log, conflicts, tenant isolation.

use crate::helpers::{Backend, TestApp};
use crate::mock::binance::MockPermissions;
use crate::on_both_backends;
use entity::exchange_keys;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use uuid::Uuid;

pub const CONNECTION_FIELDS: &str = "id exchange label environment status apiKeyHint createdAt updatedAt revokedAt
    permissions { canRead canTrade canWithdraw ipRestricted }
    health { lastCheckedAt lastSuccessAt consecutiveFailures latencyMs lastError { code message retryable hint } }";

/// A Binance-shaped key pair (64 letters and digits each), distinct per `tag`.
pub fn binance_key(tag: &str) -> (String, String) {
    let key = format!("{tag}{}{tag}", "K".repeat(64 - 2 * tag.len()));
    let secret = format!("{tag}{}{tag}", "s".repeat(64 - 2 * tag.len()));
    (key, secret)
}

pub fn create_mutation() -> String {
    format!("mutation($input: CreateConnectionInput!) {{ createConnection(input: $input) {{ {CONNECTION_FIELDS} }} }}")
}

pub fn create_input(label: &str, key: &str, secret: &str) -> Value {
    json!({ "input": { "label": label, "credentials": {
        "exchange": "BINANCE", "apiKey": key, "apiSecret": secret } } })
}

/// Registers a key at the mock and connects it; returns the connection.
pub async fn connect(app: &TestApp, token: &str, label: &str, tag: &str) -> Value {
    let (key, secret) = binance_key(tag);
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    app.ok(token, &create_mutation(), create_input(label, &key, &secret))
        .await["createConnection"]
        .clone()
}

async fn audit_actions(app: &TestApp, token: &str, connection_id: Option<&str>) -> Vec<String> {
    let data = app
        .ok(
            token,
            "query($c: ID) { auditLog(connectionId: $c, first: 200) { nodes { action connectionId actor details } } }",
            json!({ "c": connection_id }),
        )
        .await;
    data["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["action"].as_str().unwrap().to_string())
        .collect()
}

async fn lifecycle(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::new_v4();
    let token = app.token_for(user);

    let created = connect(&app, &token, "Main account", "life1").await;
    assert_eq!(created["status"], "HEALTHY");
    assert_eq!(created["exchange"], "BINANCE");
    assert_eq!(created["environment"], "PRODUCTION");
    assert_eq!(created["label"], "Main account");
    assert_eq!(created["apiKeyHint"], "life…ife1");
    assert_eq!(
        created["permissions"],
        json!({"canRead": true, "canTrade": true, "canWithdraw": false, "ipRestricted": true})
    );
    assert_eq!(created["health"]["consecutiveFailures"], 0);
    assert!(created["health"]["lastSuccessAt"].is_string());
    assert!(created["revokedAt"].is_null());
    let id = created["id"].as_str().unwrap().to_string();

    // Listed, and readable by id.
    let list = app.ok(&token, "{ connections { id label status } }", json!({})).await;
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);
    assert_eq!(list["connections"][0]["id"], id.as_str());
    let one = app
        .ok(
            &token,
            "query($id: ID!) { connection(id: $id) { id label } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(one["connection"]["label"], "Main account");

    // Test it.
    let tested = app
        .ok(
            &token,
            "mutation($id: ID!) { testConnection(id: $id) { ok latencyMs error { code } permissions { canTrade } } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(tested["testConnection"]["ok"], true);
    assert!(tested["testConnection"]["error"].is_null());
    assert_eq!(tested["testConnection"]["permissions"]["canTrade"], true);

    // Rotate to a new key: the hint changes, the old key is no longer used.
    let (new_key, new_secret) = crate::connections::binance_key("life2");
    app.binance
        .add_hmac_key(&new_key, &new_secret, MockPermissions::default());
    let rotated = app
        .ok(
            &token,
            &format!("mutation($id: ID!, $c: CredentialsInput!) {{ rotateKeys(id: $id, credentials: $c) {{ {CONNECTION_FIELDS} }} }}"),
            json!({"id": id, "c": {"exchange": "BINANCE", "apiKey": new_key, "apiSecret": new_secret}}),
        )
        .await;
    assert_eq!(rotated["rotateKeys"]["apiKeyHint"], "life…ife2");
    assert_eq!(rotated["rotateKeys"]["status"], "HEALTHY");
    let (old_key, _) = binance_key("life1");
    app.binance.remove_key(&old_key);
    let tested = app
        .ok(
            &token,
            "mutation($id: ID!) { testConnection(id: $id) { ok } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        tested["testConnection"]["ok"], true,
        "the rotated key is the one in use"
    );

    // Revoke: the row stays, its ciphertext is gone.
    let revoked = app
        .ok(
            &token,
            "mutation($id: ID!) { revokeConnection(id: $id, reason: \"laptop lost\") { id status revokedAt } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(revoked["revokeConnection"]["status"], "REVOKED");
    assert!(revoked["revokeConnection"]["revokedAt"].is_string());
    let row = exchange_keys::Entity::find_by_id(Uuid::parse_str(&id).unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "REVOKED");
    assert!(
        row.api_key_encrypted.is_none() && row.api_secret_encrypted.is_none() && row.passphrase_encrypted.is_none()
    );
    assert!(row.api_key_fingerprint.is_none());
    // Revoking again changes nothing; testing a revoked connection is refused.
    app.ok(
        &token,
        "mutation($id: ID!) { revokeConnection(id: $id) { status } }",
        json!({"id": id}),
    )
    .await;
    app.err(
        &token,
        "mutation($id: ID!) { testConnection(id: $id) { ok } }",
        json!({"id": id}),
        "BAD_USER_INPUT",
    )
    .await;

    // Hidden from the default list, shown on request.
    let list = app.ok(&token, "{ connections { id } }", json!({})).await;
    assert_eq!(list["connections"], json!([]));
    let list = app
        .ok(&token, "{ connections(includeRevoked: true) { id status } }", json!({}))
        .await;
    assert_eq!(list["connections"][0]["status"], "REVOKED");

    // The audit trail, newest first.
    assert_eq!(
        audit_actions(&app, &token, Some(&id)).await,
        [
            "connection.revoked",
            "connection.tested",
            "connection.rotated",
            "connection.tested",
            "connection.created"
        ]
    );
}

async fn audit_pagination(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    for i in 0..3 {
        connect(&app, &token, &format!("acct {i}"), &format!("page{i}")).await;
    }
    let query = "query($after: String) { auditLog(first: 2, after: $after) { nodes { id action details } pageInfo { hasNextPage endCursor } } }";
    let first = app.ok(&token, query, json!({})).await["auditLog"].clone();
    assert_eq!(first["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["nodes"][0]["details"]["label"], "acct 2", "newest first");
    let second = app
        .ok(&token, query, json!({"after": first["pageInfo"]["endCursor"]}))
        .await["auditLog"]
        .clone();
    assert_eq!(second["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(second["pageInfo"]["hasNextPage"], false);
    assert_eq!(second["nodes"][0]["details"]["label"], "acct 0");
    let ids: Vec<_> = first["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["nodes"].as_array().unwrap())
        .map(|n| n["id"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1] && ids[1] != ids[2]);

    app.err(&token, query, json!({"after": "garbage!"}), "BAD_USER_INPUT")
        .await;
    app.err(
        &token,
        "{ auditLog(first: 0) { nodes { id } } }",
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;
    app.err(
        &token,
        "{ auditLog(first: 201) { nodes { id } } }",
        json!({}),
        "BAD_USER_INPUT",
    )
    .await;
}

async fn conflicts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let first = connect(&app, &token, "Main", "dup1").await;

    // Same label on the same exchange.
    let (key2, secret2) = binance_key("dup2");
    app.binance.add_hmac_key(&key2, &secret2, MockPermissions::default());
    let error = app
        .err(
            &token,
            &create_mutation(),
            create_input("Main", &key2, &secret2),
            "CONFLICT",
        )
        .await;
    assert!(error["message"].as_str().unwrap().contains("Main"), "{error}");

    // Same API key under another label.
    let (key1, secret1) = binance_key("dup1");
    let error = app
        .err(
            &token,
            &create_mutation(),
            create_input("Other", &key1, &secret1),
            "CONFLICT",
        )
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("already connected"),
        "{error}"
    );
    // Nothing was stored by the refused attempts.
    let list = app.ok(&token, "{ connections { id } }", json!({})).await;
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);

    // Another user may connect a key with the same label.
    let other = app.token_for(Uuid::new_v4());
    connect(&app, &other, "Main", "dup3").await;

    // After revoking, label and key are free again.
    app.ok(
        &token,
        "mutation($id: ID!) { revokeConnection(id: $id) { id } }",
        json!({"id": first["id"]}),
    )
    .await;
    app.ok(&token, &create_mutation(), create_input("Main", &key1, &secret1))
        .await;
}

async fn tenant_isolation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token_for(Uuid::new_v4());
    let bob = app.token_for(Uuid::new_v4());
    let conn = connect(&app, &alice, "Alice's", "iso1").await;
    let id = conn["id"].clone();

    assert_eq!(
        app.ok(&bob, "{ connections { id } }", json!({})).await["connections"],
        json!([])
    );
    let not_found = [
        "query($id: ID!) { connection(id: $id) { id } }",
        "mutation($id: ID!) { testConnection(id: $id) { ok } }",
        "mutation($id: ID!) { revokeConnection(id: $id) { id } }",
        "query($id: ID!) { auditLog(connectionId: $id) { nodes { id } } }",
    ];
    for query in not_found {
        let error = app.err(&bob, query, json!({"id": id}), "NOT_FOUND").await;
        // The same answer as for an id that does not exist at all.
        let missing = app.err(&bob, query, json!({"id": Uuid::new_v4()}), "NOT_FOUND").await;
        assert_eq!(error["message"], missing["message"]);
    }
    let (key, secret) = binance_key("iso2");
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    app.err(
        &bob,
        "mutation($id: ID!, $c: CredentialsInput!) { rotateKeys(id: $id, credentials: $c) { id } }",
        json!({"id": id, "c": {"exchange": "BINANCE", "apiKey": key, "apiSecret": secret}}),
        "NOT_FOUND",
    )
    .await;
    let bob_audit = app.ok(&bob, "{ auditLog { nodes { id } } }", json!({})).await;
    assert_eq!(bob_audit["auditLog"]["nodes"], json!([]));

    // Alice's connection is untouched.
    let still = app
        .ok(
            &alice,
            "query($id: ID!) { connection(id: $id) { status } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(still["connection"]["status"], "HEALTHY");
}

async fn failing_test_moves_status(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let conn = connect(&app, &token, "Main", "fail1").await;
    let id = conn["id"].clone();
    let (key, _) = binance_key("fail1");
    app.binance.remove_key(&key);

    let result = app
        .ok(
            &token,
            "mutation($id: ID!) { testConnection(id: $id) { ok error { code message retryable hint } } }",
            json!({"id": id}),
        )
        .await["testConnection"]
        .clone();
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"]["code"], "INVALID_CREDENTIALS");
    assert_eq!(result["error"]["retryable"], false);
    assert!(
        result["error"]["hint"].as_str().unwrap().contains("203.0.113.7"),
        "hint names the egress IP: {result}"
    );

    let now = app
        .ok(
            &token,
            &format!("query($id: ID!) {{ connection(id: $id) {{ {CONNECTION_FIELDS} }} }}"),
            json!({"id": id}),
        )
        .await;
    assert_eq!(now["connection"]["status"], "FAILING");
    assert_eq!(now["connection"]["health"]["consecutiveFailures"], 1);
    assert_eq!(now["connection"]["health"]["lastError"]["code"], "INVALID_CREDENTIALS");
    let actions = audit_actions(&app, &token, id.as_str()).await;
    assert_eq!(actions[..2], ["connection.status_changed", "connection.tested"]);

    // A failing test on create stores nothing.
    let (key, secret) = binance_key("fail2"); // never registered at the exchange
    let error = app
        .err(
            &token,
            &create_mutation(),
            create_input("Second", &key, &secret),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["exchangeError"]["code"], "INVALID_CREDENTIALS");
    let list = app.ok(&token, "{ connections { label } }", json!({})).await;
    assert_eq!(list["connections"], json!([{"label": "Main"}]));

    // Saved untested when asked: PENDING.
    let mut input = create_input("Untested", &key, &secret);
    input["input"]["testFirst"] = json!(false);
    let pending = app.ok(&token, &create_mutation(), input).await;
    assert_eq!(pending["createConnection"]["status"], "PENDING");
}

async fn test_credentials_stores_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let (key, secret) = binance_key("wiz1");
    app.binance.add_hmac_key(
        &key,
        &secret,
        MockPermissions {
            withdrawals: true,
            ..MockPermissions::default()
        },
    );
    let query = "mutation($c: CredentialsInput!) { testCredentials(input: $c) { ok latencyMs error { code hint } permissions { canRead canTrade canWithdraw ipRestricted } } }";
    let ok = app
        .ok(
            &token,
            query,
            json!({"c": {"exchange": "BINANCE", "apiKey": key, "apiSecret": secret}}),
        )
        .await;
    assert_eq!(ok["testCredentials"]["ok"], true);
    assert_eq!(ok["testCredentials"]["permissions"]["canWithdraw"], true);
    let wrong_secret = binance_key("wiz2").1;
    let bad = app
        .ok(
            &token,
            query,
            json!({"c": {"exchange": "BINANCE", "apiKey": key, "apiSecret": wrong_secret}}),
        )
        .await;
    assert_eq!(bad["testCredentials"]["ok"], false);
    assert_eq!(bad["testCredentials"]["error"]["code"], "INVALID_CREDENTIALS");
    assert_eq!(
        app.ok(&token, "{ connections { id } }", json!({})).await["connections"],
        json!([])
    );
    assert_eq!(
        app.ok(&token, "{ auditLog { nodes { id } } }", json!({})).await["auditLog"]["nodes"],
        json!([])
    );
}

on_both_backends!(
    lifecycle,
    audit_pagination,
    conflicts,
    tenant_isolation,
    failing_test_moves_status,
    test_credentials_stores_nothing
);
