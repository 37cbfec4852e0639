//! No secret leaves the service: the shipped binary, logging at `trace`,
//! with its health worker running, is driven through every exchange's whole
//! life (`every_exchange.rs`) with canary secrets while a subscriber listens
//! to every event. Then each canary is searched for in the logs, every
//! GraphQL response and error, every subscription frame, the audit log, the
//! metrics and the database file.

use crate::every_exchange::{Api, Mocks, every_exchange};
use crate::helpers::{ENCRYPTION_KEY, JWT_SECRET, Running, TempDir, free_port, token};
use crate::mock::{binance::MockBinance, coinbase::MockCoinbase, kite::MockKite, kraken::MockKraken};
use crate::ws_client::{Frame, TRANSPORT_WS, WsClient};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

fn base(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

#[tokio::test]
async fn no_canary_secret_leaves_the_service() {
    exchange_connections::install_crypto_providers();
    let dir = TempDir::new();
    let (binance, coinbase, kraken, kite) = (
        MockBinance::start().await,
        MockCoinbase::start().await,
        MockKraken::start().await,
        MockKite::start().await,
    );
    let port = free_port();
    let log_path = dir.0.join("service.log");
    let db_path = dir.0.join("service.db");
    let _service = Running(
        Command::new(env!("CARGO_BIN_EXE_exchange-connections"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "trace")
            .env("LOG_FORMAT", "json")
            .env("DATABASE_URL", format!("sqlite://{}?mode=rwc", db_path.display()))
            .env("JWT_SECRET", JWT_SECRET)
            .env("ENCRYPTION_KEYS", ENCRYPTION_KEY)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RUN_WORKER", "true")
            .env("USER_EXCHANGE_TESTS_PER_MINUTE", "600")
            .env("USER_EXCHANGE_TESTS_BURST", "100")
            .env("HEALTH_CHECK_INTERVAL", "1s")
            .env("WORKER_POLL_INTERVAL", "100ms")
            .env("BINANCE_BASE_URL", base(&binance.base_url))
            .env("COINBASE_BASE_URL", base(&coinbase.base_url))
            .env("KRAKEN_BASE_URL", base(&kraken.base_url))
            .env("KITE_BASE_URL", base(&kite.base_url))
            .env("KITE_LOGIN_URL", kite.login_url.as_str())
            .env("DATA_DIR", dir.0.join("data"))
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("start the binary"),
    );
    let base_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for attempt in 0.. {
        if let Ok(response) = http.get(format!("{base_url}/readyz")).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(attempt < 300, "the service never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let user_token = token(Uuid::new_v4(), Duration::from_secs(3600));
    let mut subscriber = WsClient::authenticated(&base_url, TRANSPORT_WS, &user_token).await;
    subscriber
        .subscribe(
            "c",
            "subscription { connectionEvents { kind connectionId status previousStatus health { lastError { code message hint } } } }",
            json!({}),
        )
        .await;
    subscriber
        .subscribe(
            "a",
            "subscription { auditEvents { id action actor ip details } }",
            json!({}),
        )
        .await;
    let listener = tokio::spawn(async move {
        let mut frames = Vec::new();
        loop {
            match subscriber.next_frame(Duration::from_secs(3)).await {
                Frame::Json(frame) => frames.push(frame.to_string()),
                Frame::Silent | Frame::Closed(..) => break frames,
            }
        }
    });

    let mut api = Api::new(&base_url, user_token);
    let mocks = Mocks {
        binance: &binance,
        coinbase: &coinbase,
        kraken: &kraken,
        kite: &kite,
    };
    let canaries = every_exchange(&mut api, &mocks).await;
    // A bad input that echoes nothing back: a secret of the wrong shape.
    let (_, errors) = api
        .call(
            "mutation($c: CredentialsInput!) { testCredentials(input: $c) { ok } }",
            json!({ "c": { "exchange": "KRAKEN", "apiKey": "k".repeat(56), "apiSecret": "CANARY-not-base64!" } }),
        )
        .await;
    assert!(!errors.is_null(), "a malformed Kraken secret is refused");
    api.ok(
        "{ auditLog(first: 200) { nodes { action actor ip details } } }",
        json!({}),
    )
    .await;
    let metrics = http
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let frames = listener.await.expect("listener");
    assert!(
        frames.iter().any(|f| f.contains("connection.rotated")) && frames.iter().any(|f| f.contains("REVOKED")),
        "the subscriber saw the flow's events: {frames:?}"
    );

    let log = std::fs::read_to_string(&log_path).expect("read the log");
    assert!(
        log.lines().count() > 500 && log.contains("\"level\":\"TRACE\""),
        "trace logging was on ({} lines)",
        log.lines().count()
    );
    let mut database = std::fs::read(&db_path).expect("read the database");
    database.extend(std::fs::read(dir.0.join("service.db-wal")).unwrap_or_default());
    let mut canary_list = canaries.0;
    canary_list.push("CANARY-not-base64!".into());
    for canary in &canary_list {
        assert!(!log.contains(canary.as_str()), "a secret is in the logs");
        for body in &api.bodies {
            assert!(!body.contains(canary.as_str()), "a secret is in a response: {body}");
        }
        for frame in &frames {
            assert!(!frame.contains(canary.as_str()), "a secret is in an event: {frame}");
        }
        assert!(!metrics.contains(canary.as_str()), "a secret is in the metrics");
        let bytes = canary.as_bytes();
        assert!(
            !database.windows(bytes.len()).any(|w| w == bytes),
            "a secret is stored in plain text"
        );
    }
}
