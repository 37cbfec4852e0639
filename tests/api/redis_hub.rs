//! The event hub on Redis: events cross between server processes sharing a
//! database and Redis; when Redis goes away a process keeps serving (and stays
//! ready), reports the hub down in /readyz, and its subscribers receive again once Redis is
//! back, without reconnecting.

use crate::connections::{binance_key, connect, create_mutation};
use crate::helpers::{Backend, TestApp, redis_url};
use crate::tcp_proxy::TcpProxy;
use crate::ws_client::{TRANSPORT_WS, WsClient};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const CONNECTION_EVENTS: &str = "subscription { connectionEvents { kind connectionId status } }";
const SOON: Duration = Duration::from_secs(5);

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}/readyz", app.base_url))
        .send()
        .await
        .expect("readyz");
    (response.status().as_u16(), response.json().await.expect("JSON"))
}

/// Waits until /readyz reports the hub `up` or `down`; the process stays ready (200) either way.
async fn wait_hub(app: &TestApp, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = readiness(app).await;
        assert_eq!(status, 200, "a hub outage must not make the process unready: {body}");
        if body["checks"]["eventHub"] == want {
            assert_eq!(body["degraded"], want == "down", "{body}");
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub stayed {}: {body}",
            body["checks"]["eventHub"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves a key without testing it: no exchange call, so no shared budget is needed.
async fn save_untested(app: &TestApp, token: &str, label: &str, tag: &str) -> Value {
    let (key, secret) = binance_key(tag);
    let input = json!({ "input": { "label": label, "testFirst": false,
        "credentials": { "exchange": "BINANCE", "apiKey": key, "apiSecret": secret } } });
    app.ok(token, &create_mutation(), input).await["createConnection"].clone()
}

/// Redis host:port from TEST_REDIS_URL (redis://host:port[/db]).
fn redis_address() -> String {
    let url = redis_url();
    let rest = url.trim_start_matches("redis://");
    rest.split('/')
        .next()
        .unwrap_or(rest)
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .to_string()
}

#[tokio::test]
async fn events_cross_between_server_processes() {
    let first = TestApp::spawn_with(Backend::Postgres, |s| s.redis_url = Some(redis_url())).await;
    let second = first.replica(|s| s.redis_url = Some(redis_url())).await;
    wait_hub(&first, "up").await;
    wait_hub(&second, "up").await;

    let user = Uuid::new_v4();
    let token = first.token_for(user);
    let mut ws = WsClient::authenticated(&first.base_url, TRANSPORT_WS, &token).await;
    ws.subscribe("c", CONNECTION_EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A change made through the second process reaches the subscriber on the first, once.
    let created = connect(&second, &token, "main", "rx").await;
    let event = ws.next_payload("c", SOON).await;
    assert_eq!(event["data"]["connectionEvents"]["connectionId"], created["id"]);
    assert_eq!(event["data"]["connectionEvents"]["kind"], "created");
    ws.expect_silence(Duration::from_millis(300)).await;

    // A change on the first process itself is delivered once too (not again via Redis).
    second
        .ok(
            &token,
            "mutation($id: ID!) { revokeConnection(id: $id) { id } }",
            json!({ "id": created["id"] }),
        )
        .await;
    let event = ws.next_payload("c", SOON).await;
    assert_eq!(event["data"]["connectionEvents"]["kind"], "revoked");
    connect(&first, &token, "local", "rl").await;
    let event = ws.next_payload("c", SOON).await;
    assert_eq!(event["data"]["connectionEvents"]["kind"], "created");
    ws.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_redis_outage_degrades_only_the_cross_process_events() {
    let proxy = TcpProxy::start(redis_address()).await;
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let first = TestApp::spawn_with(Backend::Postgres, |s| s.redis_url = Some(via_proxy)).await;
    let second = first.replica(|s| s.redis_url = Some(redis_url())).await;
    wait_hub(&first, "up").await;

    let token = first.token_for(Uuid::new_v4());
    let mut ws = WsClient::authenticated(&first.base_url, TRANSPORT_WS, &token).await;
    ws.subscribe("c", CONNECTION_EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    proxy.cut().await;
    let body = wait_hub(&first, "down").await;
    assert_eq!(body["checks"], json!({ "database": "up", "eventHub": "down" }));
    // Queries and mutations go on (those that need no exchange call: exchange
    // calls wait for the shared budget); this process's own subscribers still hear its changes.
    let local = save_untested(&first, &token, "during-outage", "ou").await;
    first.ok(&token, "{ connections { id status } }", json!({})).await;
    let event = ws.next_payload("c", SOON).await;
    assert_eq!(event["data"]["connectionEvents"]["connectionId"], local["id"]);

    proxy.restore();
    wait_hub(&first, "up").await;
    // The same socket receives the other process's events again.
    let remote = connect(&second, &token, "after-outage", "af").await;
    let event = ws.next_payload("c", SOON).await;
    assert_eq!(event["data"]["connectionEvents"]["connectionId"], remote["id"]);
}

#[tokio::test]
async fn an_unreachable_redis_never_stops_the_server_from_starting() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.redis_url = Some("redis://127.0.0.1:1".into())).await;
    wait_hub(&app, "down").await;
    let token = app.token_for(Uuid::new_v4());
    let saved = save_untested(&app, &token, "main", "nr").await;
    assert_eq!(saved["status"], "PENDING");
    // An exchange call needs the shared budget: refused, retryable, nothing sent.
    let result = app
        .ok(
            &token,
            "mutation($id: ID!) { testConnection(id: $id) { ok error { code retryable } } }",
            json!({ "id": saved["id"] }),
        )
        .await;
    let error = &result["testConnection"]["error"];
    assert_eq!(
        (error["code"].as_str(), error["retryable"].as_bool()),
        (Some("RATE_LIMITED"), Some(true)),
        "{result}"
    );
    assert_eq!(app.binance.request_count(), 0);
}

#[tokio::test]
async fn garbage_on_the_channel_is_dropped_and_fanout_goes_on() {
    let first = TestApp::spawn_with(Backend::Postgres, |s| s.redis_url = Some(redis_url())).await;
    let second = first.replica(|s| s.redis_url = Some(redis_url())).await;
    wait_hub(&first, "up").await;
    let token = first.token_for(Uuid::new_v4());
    let mut ws = WsClient::authenticated(&first.base_url, TRANSPORT_WS, &token).await;
    ws.subscribe("c", CONNECTION_EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must be reachable at TEST_REDIS_URL");
    for garbage in ["not json", "{}", "{\"origin\":\"x\"}", "\u{0}\u{1}"] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(exchange_connections::startup::EVENTS_CHANNEL)
            .arg(garbage)
            .query_async(&mut redis)
            .await
            .expect("publish");
    }
    let created = connect(&second, &token, "after-garbage", "gb").await;
    let event = ws.next_payload("c", SOON).await;
    assert_eq!(event["data"]["connectionEvents"]["connectionId"], created["id"]);
}

#[tokio::test]
async fn a_burst_of_events_crosses_complete_and_in_order() {
    use exchange_connections::events::{Event, EventHub, HubStatus};
    use exchange_connections::service::views::AuditEntryView;

    // Two processes' hubs on a channel of this test's own.
    let channel = format!("ec-test:{}", Uuid::new_v4());
    let publisher = EventHub::redis(&redis_url(), &channel).expect("hub");
    let receiver = EventHub::redis(&redis_url(), &channel).expect("hub");
    let deadline = tokio::time::Instant::now() + SOON;
    while [&publisher, &receiver]
        .iter()
        .any(|hub| hub.status() != HubStatus::Connected)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis must be reachable at TEST_REDIS_URL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let user = Uuid::new_v4();
    let mut events = receiver.subscribe(user);

    // Published at once, they queue up and travel in pipelines; a subscriber
    // sees every one, in order. (Fewer than a subscriber may fall behind.)
    let count = exchange_connections::events::PER_USER_BUFFER - 1;
    for n in 0..count {
        publisher.publish(
            user,
            Event::Audit(AuditEntryView {
                id: async_graphql::ID(n.to_string()),
                connection_id: None,
                action: "connection.tested".into(),
                at: chrono::Utc::now(),
                actor: "user:test".into(),
                ip: None,
                user_agent: None,
                request_id: None,
                details: None,
                seq: n as i64 + 1,
                hash: String::new(),
            }),
        );
    }
    for n in 0..count {
        let event = tokio::time::timeout(SOON, events.recv())
            .await
            .unwrap_or_else(|_| panic!("event {n} never arrived"))
            .expect("no events lost");
        match &*event {
            Event::Audit(entry) => assert_eq!(entry.id.0, n.to_string()),
            other => panic!("unexpected event {other:?}"),
        }
    }
    publisher.shutdown();
    receiver.shutdown();
}
