//! Zerodha Kite through the API: a connection is saved waiting for its
//! login, the login completes with a single-use state, the session works,
//! and at expiry the connection moves to NEEDS_REAUTH by itself.

use crate::connections::CONNECTION_FIELDS;
use crate::helpers::{Backend, DbRole, TestApp};
use crate::on_both_backends;
use entity::exchange_keys;
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const API_KEY: &str = "kiteapikey123";
const API_SECRET: &str = "kitesecretCANARY9876543210";

const BEGIN: &str = "mutation($id: ID!) { beginKiteLogin(connectionId: $id) { loginUrl state expiresAt } }";

fn complete() -> String {
    format!(
        "mutation($s: String!, $t: String!) {{ completeKiteLogin(state: $s, requestToken: $t) {{ {CONNECTION_FIELDS} sessionExpiresAt }} }}"
    )
}

async fn create_kite(app: &TestApp, token: &str) -> Value {
    app.kite.add_app(API_KEY, API_SECRET);
    let created = app
        .ok(
            token,
            "mutation($i: CreateConnectionInput!) { createConnection(input: $i) { id status sessionExpiresAt } }",
            json!({"i": {"label": "Zerodha", "credentials": {"exchange": "ZERODHA", "apiKey": API_KEY, "apiSecret": API_SECRET}}}),
        )
        .await;
    created["createConnection"].clone()
}

async fn kite_login_flow(backend: Backend) {
    // The session sweep spans users: serve runs it only with the worker role.
    let app = TestApp::spawn_as(backend, Some(DbRole::Worker), |_| {}).await;
    let token = app.token_for(Uuid::new_v4());
    let conn = create_kite(&app, &token).await;
    assert_eq!(conn["status"], "NEEDS_REAUTH", "saved untested, waiting for the login");
    assert_eq!(app.kite.request_count(), 0, "nothing was sent to Kite before the login");

    let begin = app.ok(&token, BEGIN, json!({"id": conn["id"]})).await["beginKiteLogin"].clone();
    let login_url = begin["loginUrl"].as_str().unwrap();
    let state = begin["state"].as_str().unwrap();
    assert!(login_url.starts_with(app.kite.login_url.as_str()), "{login_url}");
    assert!(
        login_url.contains(&format!("api_key={API_KEY}")) && login_url.contains("v=3"),
        "{login_url}"
    );
    assert!(
        login_url.contains(state),
        "the state travels in redirect_params: {login_url}"
    );

    // Another user cannot use this state.
    let other = app.token_for(Uuid::new_v4());
    let request_token = app.kite.issue_request_token(API_KEY);
    app.err(
        &other,
        &complete(),
        json!({"s": state, "t": request_token}),
        "BAD_USER_INPUT",
    )
    .await;

    let done = app
        .ok(&token, &complete(), json!({"s": state, "t": request_token}))
        .await["completeKiteLogin"]
        .clone();
    assert_eq!(done["status"], "HEALTHY");
    assert!(done["sessionExpiresAt"].is_string());
    let tested = app
        .ok(
            &token,
            "mutation($id: ID!) { testConnection(id: $id) { ok permissions { canRead } } }",
            json!({"id": conn["id"]}),
        )
        .await;
    assert_eq!(tested["testConnection"]["ok"], true, "{tested}");

    // The state is single-use; a malformed request token is refused by name.
    let again = app.kite.issue_request_token(API_KEY);
    let error = app
        .err(&token, &complete(), json!({"s": state, "t": again}), "BAD_USER_INPUT")
        .await;
    assert_eq!(error["extensions"]["field"], "state");
    let begin = app.ok(&token, BEGIN, json!({"id": conn["id"]})).await["beginKiteLogin"].clone();
    let error = app
        .err(
            &token,
            &complete(),
            json!({"s": begin["state"], "t": "bad token!"}),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "requestToken");

    // The session expires: the sweep moves the connection to NEEDS_REAUTH and audits it.
    let id = Uuid::parse_str(conn["id"].as_str().unwrap()).unwrap();
    let row = exchange_keys::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut active = row.into_active_model();
    active.session_expires_at = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
    active.update(&app.db).await.unwrap();
    let mut status = String::new();
    for _ in 0..50 {
        let now = app
            .ok(
                &token,
                "query($id: ID!) { connection(id: $id) { status } }",
                json!({"id": conn["id"]}),
            )
            .await;
        status = now["connection"]["status"].as_str().unwrap().to_string();
        if status == "NEEDS_REAUTH" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "NEEDS_REAUTH");
    let audit = app
        .ok(
            &token,
            "{ auditLog(first: 1) { nodes { action actor details } } }",
            json!({}),
        )
        .await;
    assert_eq!(audit["auditLog"]["nodes"][0]["action"], "connection.status_changed");
    assert_eq!(audit["auditLog"]["nodes"][0]["actor"], "system:kite-session-expiry");
    let row = exchange_keys::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.access_token_encrypted.is_none(), "the dead token is erased");
    let tested = app
        .ok(
            &token,
            "mutation($id: ID!) { testConnection(id: $id) { ok error { code } } }",
            json!({"id": conn["id"]}),
        )
        .await;
    assert_eq!(tested["testConnection"]["error"]["code"], "TOKEN_EXPIRED");

    // beginKiteLogin on a non-Kite connection is refused.
    let binance = crate::connections::connect(&app, &token, "Binance", "kb1").await;
    let error = app
        .err(&token, BEGIN, json!({"id": binance["id"]}), "BAD_USER_INPUT")
        .await;
    assert_eq!(error["extensions"]["field"], "connectionId");
    // No secret came back in any of it.
    assert!(!audit.to_string().contains("CANARY"));
}

on_both_backends!(kite_login_flow);
