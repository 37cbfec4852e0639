//! Several processes on one PostgreSQL database and one Redis, as deployed:
//! two `serve` binaries and one `worker` binary. A subscriber on the first
//! server sees the change made through the second, and the worker's checks
//! and status changes, live.

use crate::connections::{binance_key, create_input, create_mutation};
use crate::helpers::{Backend, ENCRYPTION_KEY, JWT_SECRET, Running, TempDir, TestApp, free_port, redis_url};
use crate::mock::binance::MockFailure;
use crate::mock::binance::MockPermissions;
use crate::ws_client::{TRANSPORT_WS, WsClient};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

const EVENTS: &str = "subscription { connectionEvents { kind connectionId status previousStatus } }";

/// A child process, killed when dropped.
/// The binary in `role` on the test app's database, the shared Redis and the app's mock Binance.
fn start(app: &TestApp, dir: &TempDir, role: &str, port: u16) -> Running {
    let binance = app.binance.base_url.as_str().trim_end_matches('/').to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_exchange-connections"))
        .arg(role)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Each process as its own login role: the worker's may act as the system.
        .env(
            "DATABASE_URL",
            if role == "worker" {
                &app.urls.worker
            } else {
                &app.urls.api
            },
        )
        .env("REDIS_URL", redis_url())
        .env("JWT_SECRET", JWT_SECRET)
        .env("ENCRYPTION_KEYS", ENCRYPTION_KEY)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("BINANCE_BASE_URL", &binance)
        .env("BINANCE_TESTNET_BASE_URL", &binance)
        .env("HEALTH_CHECK_INTERVAL", "1s")
        .env("WORKER_POLL_INTERVAL", "100ms")
        .env("DATA_DIR", dir.0.join("data"))
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {role}: {e}"));
    Running(child)
}

/// Waits until the process on `port` is ready with its hub connected to Redis.
async fn wait_connected(port: u16) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && let Ok(body) = response.json::<serde_json::Value>().await
            && body["ready"] == true
            && body["checks"]["eventHub"] == "up"
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process on {port} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_servers_and_a_worker_share_events_through_redis() {
    // The in-process app only provides the migrated database and the mock exchange.
    let app = TestApp::spawn(Backend::Postgres).await;
    let dir = TempDir::new();
    let (first_port, second_port, worker_port) = (free_port(), free_port(), free_port());
    let _first = start(&app, &dir, "serve", first_port);
    let _second = start(&app, &dir, "serve", second_port);
    for port in [first_port, second_port] {
        wait_connected(port).await;
    }
    let first = format!("http://127.0.0.1:{first_port}");
    let second = format!("http://127.0.0.1:{second_port}");

    let token = app.token_for(Uuid::new_v4());
    let mut ws = WsClient::authenticated(&first, TRANSPORT_WS, &token).await;
    ws.subscribe("c", EVENTS, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A mutation on the second server reaches the subscriber on the first.
    let (key, secret) = binance_key("mp");
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    let body: serde_json::Value = app
        .client
        .post(format!("{second}/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": create_mutation(), "variables": create_input("main", &key, &secret) }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    let created = body["data"]["createConnection"].clone();
    assert!(created["id"].is_string(), "{body}");
    let event = ws.next_payload("c", Duration::from_secs(5)).await["data"]["connectionEvents"].clone();
    assert_eq!(
        (event["kind"].as_str(), event["connectionId"].clone()),
        (Some("created"), created["id"].clone())
    );

    // Then the worker process: its checks, and the status change when the key stops working.
    let _worker = start(&app, &dir, "worker", worker_port);
    let event = ws.next_payload("c", Duration::from_secs(10)).await["data"]["connectionEvents"].clone();
    assert_eq!(
        (event["kind"].as_str(), event["status"].as_str()),
        (Some("health_checked"), Some("HEALTHY"))
    );
    app.binance.set_failure(Some(MockFailure::IpNotAllowed));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = ws.next_payload("c", left).await["data"]["connectionEvents"].clone();
        if event["kind"] == "status_changed" {
            assert_eq!(
                (event["previousStatus"].as_str(), event["status"].as_str()),
                (Some("HEALTHY"), Some("FAILING"))
            );
            break;
        }
    }
}
