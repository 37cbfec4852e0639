//! End to end with the real `graphql-ws` npm client, the one the React app
//! uses (tests/e2e, installed from its committed lockfile): it connects with
//! its connectionParams, receives a status change made by the worker within
//! a second, and is refused with 4403 without a valid token.

use crate::connections::connect;
use crate::helpers::{Backend, TestApp};
use crate::mock::binance::MockFailure;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use uuid::Uuid;

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e")
}

/// `npm ci` from the committed lockfile, once, when node_modules is missing.
fn install_client() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if e2e_dir().join("node_modules/graphql-ws").exists() {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(e2e_dir())
            .status()
            .expect("npm (Node.js) is needed for this test: install node and npm");
        assert!(status.success(), "npm ci failed in tests/e2e");
    });
}

struct NodeClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl NodeClient {
    async fn start(app: &TestApp, token: &str) -> NodeClient {
        install_client();
        let mut child = Command::new("node")
            .arg("subscribe.mjs")
            .current_dir(e2e_dir())
            .env(
                "WS_URL",
                format!("{}/graphql/ws", app.base_url.replace("http://", "ws://")),
            )
            .env("TOKEN", token)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        NodeClient { child, lines }
    }

    async fn next(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .expect("the node client printed nothing in time")
            .expect("read")
            .expect("the node client exited");
        serde_json::from_str(&line).expect("JSON line")
    }
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The worker (inside serve, as in the embedded default) finds the key
/// revoked at the exchange; the browser's client hears of it within a second
/// of the status change being committed.
#[tokio::test]
async fn the_graphql_ws_client_receives_a_status_change_by_the_worker_within_a_second() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.run_worker = Some(true);
        s.health_check_interval = "1s".into();
        s.worker_poll_interval = "100ms".into();
    })
    .await;
    let token = app.token_for(Uuid::new_v4());
    let connection = connect(&app, &token, "main", "nd").await;
    let mut node = NodeClient::start(&app, &token).await;
    assert_eq!(node.next(Duration::from_secs(20)).await, json!({ "ready": true }));

    // Nobody calls the API from here on: only the worker acts.
    app.binance.set_failure(Some(MockFailure::IpNotAllowed));
    let started = Instant::now();
    loop {
        let line = node.next(Duration::from_secs(10)).await;
        assert!(line["event"]["errors"].is_null(), "{line}");
        let event = &line["event"]["data"]["connectionEvents"];
        assert_eq!(event["connectionId"], connection["id"], "{line}");
        if event["kind"] != "status_changed" {
            assert_eq!(event["kind"], "health_checked", "{line}");
            continue;
        }
        assert_eq!(
            (event["previousStatus"].as_str(), event["status"].as_str()),
            (Some("HEALTHY"), Some("FAILING"))
        );
        let changed_at = chrono::DateTime::parse_from_rfc3339(event["at"].as_str().unwrap()).unwrap();
        let received_at = line["receivedAt"].as_i64().unwrap();
        let delay_ms = received_at - changed_at.timestamp_millis();
        assert!(
            (0..1000).contains(&delay_ms),
            "delivered {delay_ms} ms after the change"
        );
        break;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_graphql_ws_client_is_refused_without_a_valid_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut node = NodeClient::start(&app, "not-a-token").await;
    let line = node.next(Duration::from_secs(20)).await;
    assert_eq!(line["closed"], 4403, "{line}");
}
