//! Key policy and abuse limits: withdrawal keys refused (unless allowed),
//! warnings for risky keys, per-user limits on exchange tests, diagnosis.

use crate::connections::{binance_key, connect, create_input, create_mutation};
use crate::helpers::{Backend, TestApp};
use crate::mock::binance::MockPermissions;
use crate::on_both_backends;
use serde_json::json;
use uuid::Uuid;

const TEST_CREDENTIALS: &str =
    "mutation($c: CredentialsInput!) { testCredentials(input: $c) { ok warnings permissions { canWithdraw } } }";

async fn withdrawal_keys_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let (key, secret) = binance_key("wd1");
    app.binance.add_hmac_key(
        &key,
        &secret,
        MockPermissions {
            withdrawals: true,
            ..MockPermissions::default()
        },
    );

    let error = app
        .err(
            &token,
            &create_mutation(),
            create_input("Risky", &key, &secret),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "input.credentials");
    assert!(
        error["message"].as_str().unwrap().contains("Enable Withdrawals"),
        "{error}"
    );
    assert_eq!(
        app.ok(&token, "{ connections { id } }", json!({})).await["connections"],
        json!([])
    );

    // The wizard's test says so before the user tries to save.
    let tested = app
        .ok(
            &token,
            TEST_CREDENTIALS,
            json!({"c": {"exchange": "BINANCE", "apiKey": key, "apiSecret": secret}}),
        )
        .await;
    assert_eq!(tested["testCredentials"]["ok"], true);
    let warnings = tested["testCredentials"]["warnings"].to_string();
    assert!(warnings.contains("would be refused"), "{warnings}");

    // Rotating to a withdrawal key is refused too, and the old key stays.
    let conn = connect(&app, &token, "Main", "wd2").await;
    let error = app
        .err(
            &token,
            "mutation($id: ID!, $c: CredentialsInput!) { rotateKeys(id: $id, credentials: $c) { id } }",
            json!({"id": conn["id"], "c": {"exchange": "BINANCE", "apiKey": key, "apiSecret": secret}}),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "credentials");
    let still = app
        .ok(
            &token,
            "query($id: ID!) { connection(id: $id) { apiKeyHint } }",
            json!({"id": conn["id"]}),
        )
        .await;
    assert_eq!(still["connection"]["apiKeyHint"], conn["apiKeyHint"]);
}

async fn withdrawal_keys_allowed_when_configured(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.allow_withdrawal_keys = true).await;
    let token = app.token_for(Uuid::new_v4());
    let (key, secret) = binance_key("wd3");
    app.binance.add_hmac_key(
        &key,
        &secret,
        MockPermissions {
            withdrawals: true,
            ..MockPermissions::default()
        },
    );
    let created = app
        .ok(&token, &create_mutation(), create_input("Allowed", &key, &secret))
        .await;
    assert_eq!(created["createConnection"]["permissions"]["canWithdraw"], true);
    let tested = app
        .ok(
            &token,
            "mutation($id: ID!) { testConnection(id: $id) { ok warnings } }",
            json!({"id": created["createConnection"]["id"]}),
        )
        .await;
    assert!(
        tested["testConnection"]["warnings"]
            .to_string()
            .contains("can withdraw"),
        "{tested}"
    );
}

async fn per_user_test_limit(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.exchange_tests_per_minute = 1;
        s.exchange_tests_burst = 3;
    })
    .await;
    let alice = app.token_for(Uuid::new_v4());
    let bob = app.token_for(Uuid::new_v4());
    let (key, secret) = binance_key("lim1");
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    let creds = json!({"c": {"exchange": "BINANCE", "apiKey": key, "apiSecret": secret}});
    for _ in 0..3 {
        app.ok(&alice, TEST_CREDENTIALS, creds.clone()).await;
    }
    let before = app.binance.request_count();
    let error = app.err(&alice, TEST_CREDENTIALS, creds.clone(), "RATE_LIMITED").await;
    assert!(error["message"].as_str().unwrap().contains("try again"), "{error}");
    assert_eq!(
        app.binance.request_count(),
        before,
        "a limited call never reaches the exchange"
    );
    // Others are not affected.
    app.ok(&bob, TEST_CREDENTIALS, creds).await;
}

async fn diagnosis(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let conn = connect(&app, &token, "Main", "diag1").await;
    let query = "mutation($id: ID!) { diagnoseConnection(id: $id) { ok egressIps steps { name status detail hint } } }";

    let healthy = app.ok(&token, query, json!({"id": conn["id"]})).await["diagnoseConnection"].clone();
    assert_eq!(healthy["ok"], true, "{healthy}");
    let names: Vec<_> = healthy["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["reach", "clock", "signed_read", "permissions", "ip_whitelist"]);
    assert_eq!(healthy["steps"][2]["status"], "PASS");
    assert_eq!(healthy["egressIps"], json!(["203.0.113.7"]));

    // The key deleted at the exchange: the signed read fails and the IP advice names the egress IP.
    let (key, _) = binance_key("diag1");
    app.binance.remove_key(&key);
    let broken = app.ok(&token, query, json!({"id": conn["id"]})).await["diagnoseConnection"].clone();
    assert_eq!(broken["ok"], false);
    assert_eq!(broken["steps"][2]["status"], "FAIL");
    assert_eq!(broken["steps"][3]["status"], "SKIPPED");
    assert!(
        broken["steps"][4]["detail"].as_str().unwrap().contains("203.0.113.7"),
        "{broken}"
    );

    // Audited; another user's connection is NOT_FOUND.
    let audit = app
        .ok(&token, "{ auditLog(first: 1) { nodes { action } } }", json!({}))
        .await;
    assert_eq!(audit["auditLog"]["nodes"][0]["action"], "connection.diagnosed");
    let other = app.token_for(Uuid::new_v4());
    app.err(&other, query, json!({"id": conn["id"]}), "NOT_FOUND").await;
}

on_both_backends!(
    withdrawal_keys_refused,
    withdrawal_keys_allowed_when_configured,
    per_user_test_limit,
    diagnosis
);
