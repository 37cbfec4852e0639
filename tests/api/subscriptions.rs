//! Live status over `/graphql/ws`: every change reaches its owner's
//! subscribers (and nobody else's), in both protocols; the handshake and the
//! protocol's bad inputs are answered with the right close codes or errors,
//! and the server keeps serving everyone else.

use crate::connections::{connect, create_input, create_mutation};
use crate::helpers::{Backend, TestApp, token_expiring_at};
use crate::mock::binance::MockFailure;
use crate::on_both_backends;
use crate::ws_client::{Frame, LEGACY, TRANSPORT_WS, WsClient};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const CONNECTION_EVENTS: &str = "subscription($id: ID) { connectionEvents(connectionId: $id) {
    kind connectionId status previousStatus at health { consecutiveFailures lastError { code } } } }";
const AUDIT_EVENTS: &str = "subscription { auditEvents { id connectionId action actor details } }";
const SOON: Duration = Duration::from_secs(5);

async fn still_serving(app: &TestApp) {
    let token = app.token_for(Uuid::new_v4());
    app.ok(&token, "{ connections { id } }", json!({})).await;
}

async fn every_change_reaches_the_owner_live(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::new_v4();
    let token = app.token_for(user);
    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &token).await;
    ws.subscribe("c", CONNECTION_EVENTS, json!({})).await;
    ws.subscribe("a", AUDIT_EVENTS, json!({})).await;
    // The subscriptions are registered once the resolver ran; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let created = connect(&app, &token, "main", "ev").await;
    let id = created["id"].as_str().unwrap().to_string();
    let event = ws.next_payload("c", SOON).await["data"]["connectionEvents"].clone();
    assert_eq!(event["kind"], "created");
    assert_eq!(event["connectionId"], id.as_str());
    assert_eq!(event["status"], "HEALTHY");
    let entry = ws.next_payload("a", SOON).await["data"]["auditEvents"].clone();
    assert_eq!(entry["action"], "connection.created");
    assert_eq!(entry["connectionId"], id.as_str());
    assert_eq!(entry["actor"], format!("user:{user}"));

    // A failing test moves the status: tested, then status_changed, each with its audit entry.
    app.binance.set_failure(Some(MockFailure::IpNotAllowed));
    app.ok(
        &token,
        "mutation($id: ID!) { testConnection(id: $id) { ok } }",
        json!({ "id": id }),
    )
    .await;
    let tested = ws.next_payload("c", SOON).await["data"]["connectionEvents"].clone();
    let changed = ws.next_payload("c", SOON).await["data"]["connectionEvents"].clone();
    assert_eq!(tested["kind"], "tested");
    assert_eq!(changed["kind"], "status_changed");
    assert_eq!(changed["previousStatus"], "HEALTHY");
    assert_eq!(changed["status"], "FAILING");
    assert_eq!(changed["health"]["lastError"]["code"], "INVALID_CREDENTIALS");
    let first = ws.next_payload("a", SOON).await["data"]["auditEvents"]["action"].clone();
    let second = ws.next_payload("a", SOON).await["data"]["auditEvents"]["action"].clone();
    assert_eq!(
        (first, second),
        (json!("connection.tested"), json!("connection.status_changed"))
    );

    app.ok(
        &token,
        "mutation($id: ID!) { revokeConnection(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    let revoked = ws.next_payload("c", SOON).await;
    assert_eq!(revoked["data"]["connectionEvents"]["kind"], "revoked");
    assert_eq!(revoked["data"]["connectionEvents"]["status"], "REVOKED");
    let entry = ws.next_payload("a", SOON).await;
    assert_eq!(entry["data"]["auditEvents"]["action"], "connection.revoked");
}

async fn subscribers_see_only_their_own_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.token_for(Uuid::new_v4());
    let bob = app.token_for(Uuid::new_v4());
    let mut bobs = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &bob).await;
    bobs.subscribe("c", CONNECTION_EVENTS, json!({})).await;
    bobs.subscribe("a", AUDIT_EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let alices_connection = connect(&app, &alice, "main", "iso").await;
    let id = alices_connection["id"].as_str().unwrap();
    app.ok(
        &alice,
        "mutation($id: ID!) { testConnection(id: $id) { ok } }",
        json!({ "id": id }),
    )
    .await;
    bobs.expect_silence(Duration::from_millis(700)).await;

    // Subscribing to Alice's connection by id: NOT_FOUND, exactly as for a query.
    bobs.subscribe("x", CONNECTION_EVENTS, json!({ "id": id })).await;
    match bobs.next_message(SOON).await {
        Frame::Json(m) if m["id"] == "x" => {
            let errors = if m["type"] == "error" {
                m["payload"].clone()
            } else {
                m["payload"]["errors"].clone()
            };
            assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{m}");
        }
        other => panic!("expected an error for x, got {other:?}"),
    }
    match bobs.next_message(SOON).await {
        Frame::Json(m) => assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("complete"), Some("x"))),
        other => panic!("expected complete for x, got {other:?}"),
    }
    // Bob's own events still come.
    connect(&app, &bob, "bobs", "iso2").await;
    let mine = bobs.next_payload("c", SOON).await;
    assert_eq!(mine["data"]["connectionEvents"]["kind"], "created");
}

async fn one_connection_can_be_followed_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let first = connect(&app, &token, "first", "one").await;
    let second = connect(&app, &token, "second", "two").await;
    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &token).await;
    ws.subscribe("c", CONNECTION_EVENTS, json!({ "id": second["id"] }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for connection in [&first, &second] {
        app.ok(
            &token,
            "mutation($id: ID!) { testConnection(id: $id) { ok } }",
            json!({ "id": connection["id"] }),
        )
        .await;
    }
    let event = ws.next_payload("c", SOON).await;
    assert_eq!(event["data"]["connectionEvents"]["connectionId"], second["id"]);
    ws.expect_silence(Duration::from_millis(300)).await;
}

on_both_backends!(
    every_change_reaches_the_owner_live,
    subscribers_see_only_their_own_events,
    one_connection_can_be_followed_alone
);

#[tokio::test]
async fn the_legacy_protocol_works_too() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.ws_keepalive_interval = "200ms".into()).await;
    let token = app.token_for(Uuid::new_v4());
    let mut ws = WsClient::connect(&app.base_url, LEGACY).await;
    // The Apollo/Hasura form: the token under `headers`.
    ws.send(
        json!({ "type": "connection_init", "payload": { "headers": { "Authorization": format!("Bearer {token}") } } }),
    )
    .await;
    match ws.next_frame(SOON).await {
        Frame::Json(m) => assert_eq!(m["type"], "connection_ack"),
        other => panic!("expected connection_ack, got {other:?}"),
    }
    match ws.next_frame(SOON).await {
        Frame::Json(m) => assert_eq!(m["type"], "ka"),
        other => panic!("expected a keep-alive, got {other:?}"),
    }
    ws.subscribe("1", AUDIT_EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    connect(&app, &token, "main", "leg").await;
    let data = ws.next_payload("1", SOON).await;
    assert_eq!(data["data"]["auditEvents"]["action"], "connection.created");
    // Unknown types are answered with an error; the socket stays usable.
    ws.send(json!({ "type": "bogus" })).await;
    match ws.next_message(SOON).await {
        Frame::Json(m) => assert_eq!(m["type"], "error"),
        other => panic!("expected an error, got {other:?}"),
    }
    ws.send(json!({ "id": "1", "type": "stop" })).await;
    match ws.next_message(SOON).await {
        Frame::Json(m) => assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("complete"), Some("1"))),
        other => panic!("expected complete, got {other:?}"),
    }
}

#[tokio::test]
async fn the_server_pings_idle_clients() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.ws_keepalive_interval = "200ms".into()).await;
    let token = app.token_for(Uuid::new_v4());
    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &token).await;
    match ws.next_frame(Duration::from_secs(2)).await {
        Frame::Json(m) => assert_eq!(m["type"], "ping"),
        other => panic!("expected a ping, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_handshake_is_closed_with_the_protocols_codes() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.ws_init_timeout = "300ms".into()).await;
    let expired = token_expiring_at(Uuid::new_v4(), chrono::Utc::now().timestamp() - 120);
    let cases: Vec<(Value, u16)> = vec![
        (
            json!({ "type": "connection_init", "payload": { "authorization": "Bearer not-a-jwt" } }),
            4403,
        ),
        (
            json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {expired}") } }),
            4403,
        ),
        (
            json!({ "type": "connection_init", "payload": { "authorization": app.token_for(Uuid::new_v4()) } }),
            4403,
        ),
        (json!({ "type": "connection_init" }), 4403),
        (json!({ "type": "connection_init", "payload": "Bearer x" }), 4403),
        (
            json!({ "id": "1", "type": "subscribe", "payload": { "query": AUDIT_EVENTS } }),
            4401,
        ),
        (json!({ "type": "hello" }), 4400),
    ];
    for (first, code) in cases {
        let mut ws = WsClient::connect(&app.base_url, TRANSPORT_WS).await;
        ws.send(first.clone()).await;
        assert_eq!(ws.expect_close(SOON).await.0, code, "{first}");
    }
    // Saying nothing: closed when the init timeout lapses.
    let mut ws = WsClient::connect(&app.base_url, TRANSPORT_WS).await;
    assert_eq!(
        ws.expect_close(SOON).await,
        (4408, "Connection initialisation timeout".into())
    );
    // No protocol offered at all: refused before the upgrade.
    let response = app
        .client
        .get(format!("{}/graphql/ws", app.base_url))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    still_serving(&app).await;
}

#[tokio::test]
async fn protocol_violations_are_answered_and_harm_nobody() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.ws_max_subscriptions = 2).await;
    let token = app.token_for(Uuid::new_v4());
    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &token).await;

    // A query or mutation is not served over the socket.
    ws.subscribe("q", "{ connections { id } }", json!({})).await;
    match ws.next_message(SOON).await {
        Frame::Json(m) => {
            assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("error"), Some("q")));
            assert!(
                m["payload"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("only subscriptions")
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The cap on subscriptions per socket.
    ws.subscribe("1", AUDIT_EVENTS, json!({})).await;
    ws.subscribe("2", CONNECTION_EVENTS, json!({})).await;
    ws.subscribe("3", AUDIT_EVENTS, json!({})).await;
    match ws.next_message(SOON).await {
        Frame::Json(m) => {
            assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("error"), Some("3")));
            assert!(
                m["payload"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("too many subscriptions")
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // Completing one frees its place.
    ws.send(json!({ "id": "1", "type": "complete" })).await;
    match ws.next_message(SOON).await {
        Frame::Json(m) => assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("complete"), Some("1"))),
        other => panic!("expected complete, got {other:?}"),
    }
    ws.subscribe("3", AUDIT_EVENTS, json!({})).await;
    ws.expect_silence(Duration::from_millis(300)).await;
    // A duplicate id closes the socket (4409).
    ws.subscribe("3", AUDIT_EVENTS, json!({})).await;
    assert_eq!(ws.expect_close(SOON).await.0, 4409);

    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &token).await;
    ws.send(json!({ "type": "shout" })).await;
    assert_eq!(ws.expect_close(SOON).await.0, 4400);

    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &token).await;
    ws.send_text("x".repeat(200 * 1024)).await;
    assert_eq!(ws.expect_close(SOON).await.0, 1009);

    still_serving(&app).await;
}

#[tokio::test]
async fn the_socket_closes_when_its_token_expires() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // Expired 28 s ago: accepted within the 30 s leeway, so the socket has about 2 s left.
    let leeway = exchange_connections::auth::LEEWAY_SECS as i64;
    let short = token_expiring_at(Uuid::new_v4(), chrono::Utc::now().timestamp() - leeway + 2);
    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &short).await;
    ws.subscribe("1", AUDIT_EVENTS, json!({})).await;
    let (code, reason) = ws.expect_close(Duration::from_secs(5)).await;
    assert_eq!(code, 4403);
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn a_subscription_needs_a_valid_create_input_like_http() {
    // The same mutation rules apply whichever transport announces the result.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.token_for(Uuid::new_v4());
    let mut ws = WsClient::authenticated(&app.base_url, TRANSPORT_WS, &token).await;
    ws.subscribe("a", AUDIT_EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A refused create announces nothing.
    app.err(&token, &create_mutation(), create_input("", "k", "s"), "BAD_USER_INPUT")
        .await;
    ws.expect_silence(Duration::from_millis(400)).await;
}
