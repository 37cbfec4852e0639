//! Security alerts: a key that gained withdrawal rights, a burst of failed
//! tests and a burst of rotations each write one `security.alert` audit
//! entry, reach the user's `auditEvents` subscribers, and are counted in
//! the metrics. Ordinary use raises none.

use crate::connections::{CONNECTION_FIELDS, binance_key, create_input, create_mutation};
use crate::helpers::{Backend, TestApp};
use crate::mock::binance::MockPermissions;
use crate::on_both_backends;
use crate::ws_client::{TRANSPORT_WS, WsClient};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const TEST: &str = "mutation($id: ID!) { testConnection(id: $id) { ok error { code } } }";

async fn alerts(app: &TestApp, token: &str) -> Vec<Value> {
    let data = app
        .ok(
            token,
            "{ auditLog(first: 200) { nodes { action details } } }",
            json!({}),
        )
        .await;
    data["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "security.alert")
        .map(|entry| entry["details"].clone())
        .collect()
}

/// Registers `key` at the mock and connects it as "main"; returns its id.
async fn connect_main(app: &TestApp, token: &str, key: &str, secret: &str) -> String {
    app.binance.add_hmac_key(key, secret, MockPermissions::default());
    app.ok(token, &create_mutation(), create_input("main", key, secret))
        .await["createConnection"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn alert_count(app: &TestApp, kind: &str) -> u64 {
    let metrics = app.metrics_text().await;
    // Tests share the process's recorder: compare before and after.
    metrics
        .lines()
        .find(|line| line.starts_with("security_alerts_total") && line.contains(&format!("kind=\"{kind}\"")))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn withdrawal_rights_gained(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &token).await;
    ws.subscribe("a", "subscription { auditEvents { action details } }", json!({}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (key, secret) = binance_key("wd");
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    let created = app
        .ok(&token, &create_mutation(), create_input("main", &key, &secret))
        .await["createConnection"]
        .clone();
    let id = created["id"].as_str().unwrap();
    app.ok(&token, TEST, json!({ "id": id })).await;
    assert!(alerts(&app, &token).await.is_empty(), "ordinary use raises no alert");
    let counted = alert_count(&app, "withdrawal_rights_gained").await;

    // Someone adds the withdrawal right to the key at the exchange.
    let withdrawals = MockPermissions {
        withdrawals: true,
        ..MockPermissions::default()
    };
    app.binance.add_hmac_key(&key, &secret, withdrawals);
    let tested = app.ok(&token, TEST, json!({ "id": id })).await;
    assert_eq!(tested["testConnection"]["ok"], true);
    let raised = alerts(&app, &token).await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["kind"], "withdrawal_rights_gained");
    assert!(raised[0]["message"].as_str().unwrap().contains("revoke"));
    assert_eq!(alert_count(&app, "withdrawal_rights_gained").await, counted + 1);
    // A second test while the right stays raises nothing new.
    app.ok(&token, TEST, json!({ "id": id })).await;
    assert_eq!(alerts(&app, &token).await.len(), 1);

    // The subscriber saw it live, after the entries of the changes before it.
    let mut seen = Vec::new();
    while seen.len() < 8 {
        let entry = ws.next_payload("a", Duration::from_secs(5)).await["data"]["auditEvents"].clone();
        let done = entry["action"] == "security.alert";
        seen.push(entry);
        if done {
            break;
        }
    }
    assert_eq!(
        seen.last().unwrap()["details"]["kind"],
        "withdrawal_rights_gained",
        "{seen:?}"
    );
}

async fn failed_test_burst(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.exchange_tests_burst = 50;
    })
    .await;
    let token = app.token_for(Uuid::new_v4());
    let (key, secret) = binance_key("fb");
    let id = connect_main(&app, &token, &key, &secret).await;
    app.binance.remove_key(&key);
    for attempt in 1..=4 {
        let tested = app.ok(&token, TEST, json!({ "id": id })).await;
        assert_eq!(tested["testConnection"]["ok"], false);
        assert!(
            alerts(&app, &token).await.is_empty(),
            "no alert after {attempt} failures"
        );
    }
    app.ok(&token, TEST, json!({ "id": id })).await;
    let raised = alerts(&app, &token).await;
    assert_eq!(raised.len(), 1, "the fifth failure raises one alert: {raised:?}");
    assert_eq!(raised[0]["kind"], "test_failure_burst");
    assert_eq!(raised[0]["failedTests"], 5);
    app.ok(&token, TEST, json!({ "id": id })).await;
    assert_eq!(alerts(&app, &token).await.len(), 1, "one alert per burst");
    // Another user's failures are theirs alone.
    let other = app.token_for(Uuid::new_v4());
    assert!(alerts(&app, &other).await.is_empty());
}

async fn rotation_burst(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let (key, secret) = binance_key("r0");
    let id = connect_main(&app, &token, &key, &secret).await;
    let rotate = format!(
        "mutation($id: ID!, $c: CredentialsInput!) {{ rotateKeys(id: $id, credentials: $c) {{ {CONNECTION_FIELDS} }} }}"
    );
    for (n, tag) in ["r1", "r2", "r3"].into_iter().enumerate() {
        assert!(alerts(&app, &token).await.is_empty(), "no alert after {n} rotations");
        let (key, secret) = binance_key(tag);
        app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
        app.ok(
            &token,
            &rotate,
            json!({ "id": id, "c": { "exchange": "BINANCE", "apiKey": key, "apiSecret": secret } }),
        )
        .await;
    }
    let raised = alerts(&app, &token).await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["kind"], "rotation_burst");
    assert_eq!(raised[0]["rotations"], 3);
}

on_both_backends!(withdrawal_rights_gained, failed_test_burst, rotation_burst);
