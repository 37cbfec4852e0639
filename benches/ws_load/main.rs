//! Live-status load tool (issue 4 "Performance"): one release `serve`
//! process on PostgreSQL with `REDIS_URL`, N concurrent WebSocket
//! subscribers (graphql-transport-ws, each its own user with a valid token,
//! subscribed to `connectionEvents` of its own connection), and events
//! published straight into the hub's Redis channel at a fixed rate to random
//! subscribed connections. Reports delivery latency (publish → receipt; the
//! publish time travels in the event's `at`), events lost, resident memory
//! per idle subscriber and the server's CPU.
//!
//! Run it with `bench/ws_load.sh`, which builds the binary, creates the
//! database and raises `ulimit -n`. Settings (environment): `DATABASE_URL`
//! (migrated, required), `REDIS_URL` (default `redis://127.0.0.1:6379`),
//! `WS_LOAD_SUBSCRIBERS` (10000), `WS_LOAD_RATE` (events/s, 1000),
//! `WS_LOAD_SECONDS` (30), `WS_LOAD_SUBSCRIBE_RAMP` (seconds over which the
//! subscriptions are spread, default 0: all at once), `EC_BIN` (the binary).
//!
//! The client runs on one current-thread tokio runtime: at 1,000 events/s it
//! needs a few percent of a core, so it is not what limits the numbers.

#[path = "../support/mod.rs"]
mod support;

use async_graphql::ID;
use chrono::Utc;
use exchange_connections::domain::ConnectionStatus;
use exchange_connections::events::{Envelope, Event};
use exchange_connections::service::views::{ConnectionEventView, HealthView};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{CpuWindow, Process, Seeded, env_number, env_or, percentile, rss_kib};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use uuid::Uuid;

const SUBSCRIPTION: &str = "subscription($id: ID!) { connectionEvents(connectionId: $id) { kind connectionId status at \
                            health { lastCheckedAt consecutiveFailures latencyMs } } }";
/// The `kind` of the events that check every subscription is live before measuring.
const PROBE: &str = "bench_probe";
const MEASURED: &str = "health_checked";
/// Handshakes in flight at once while connecting.
const CONNECTING: usize = 256;

/// What the subscribers report, shared with the publisher.
struct Shared {
    /// Per subscriber: measured events published to it, and received by it.
    expected: Vec<AtomicU32>,
    received: Vec<AtomicU32>,
    probed: Vec<AtomicBool>,
    probes: AtomicUsize,
    /// Clients past `connection_ack`; they subscribe when `go` turns true.
    acked: AtomicUsize,
    go: tokio::sync::watch::Receiver<bool>,
    /// Subscriptions are spread evenly over this time (zero: all at once).
    ramp: Duration,
    n: usize,
    subscribed: AtomicUsize,
    /// Latencies of measured events, ms.
    latencies: Mutex<Vec<f64>>,
    dropped_notices: AtomicUsize,
    closed: AtomicUsize,
    errors: AtomicUsize,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    exchange_connections::install_crypto_providers();
    let database_url = std::env::var("DATABASE_URL").expect("DATABASE_URL: a migrated PostgreSQL database");
    let redis_url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    let n: usize = env_number("WS_LOAD_SUBSCRIBERS", 10_000);
    let rate: u64 = env_number("WS_LOAD_RATE", 1_000);
    let seconds: u64 = env_number("WS_LOAD_SECONDS", 30);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client");

    let port = support::free_port();
    let log = std::env::temp_dir().join("ws_load-serve.log");
    let mut serve = Process::start(
        "serve",
        port,
        &[
            ("DATABASE_URL", database_url),
            ("REDIS_URL", redis_url.clone()),
            ("RUN_WORKER", "false".into()),
            // Every client comes from 127.0.0.1.
            ("RATE_LIMIT_PER_IP", u32::MAX.to_string()),
            ("RATE_LIMIT_PER_USER", u32::MAX.to_string()),
        ],
        &log,
    );
    serve.wait_ready(&http, true).await;
    let pid = serve.pid();
    eprintln!("serve pid {pid} on port {port}, log {}", log.display());

    let seeded = support::seed(&http, &serve.base_url(), n, 1, 32, &|i| {
        let tag = format!("{i:06}");
        (
            "BINANCE",
            format!("{tag}{}", "K".repeat(58)),
            format!("{tag}{}", "s".repeat(58)),
        )
    })
    .await;
    drop(http);

    let (go, go_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        expected: (0..n).map(|_| AtomicU32::new(0)).collect(),
        received: (0..n).map(|_| AtomicU32::new(0)).collect(),
        probed: (0..n).map(|_| AtomicBool::new(false)).collect(),
        probes: AtomicUsize::new(0),
        acked: AtomicUsize::new(0),
        go: go_rx,
        ramp: Duration::from_secs(env_number("WS_LOAD_SUBSCRIBE_RAMP", 0)),
        n,
        subscribed: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::with_capacity((rate * seconds) as usize)),
        dropped_notices: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
    });

    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before = rss_kib(pid);

    // Connect and authenticate every client; then subscribe them all.
    let url = format!("ws://127.0.0.1:{port}/graphql/ws");
    let connecting = Arc::new(Semaphore::new(CONNECTING));
    let cpu = CpuWindow::start(pid);
    for (index, seed) in seeded.iter().enumerate() {
        let permit = connecting.clone().acquire_owned().await.expect("semaphore");
        tokio::spawn(subscriber(index, url.clone(), seed.clone(), shared.clone(), permit));
    }
    wait_for("every client authenticated", Duration::from_secs(120), || {
        shared.acked.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed) >= n
    })
    .await;
    let (connect_wall, connect_cpu, _) = cpu.finish();
    let failed = shared.closed.load(Ordering::Relaxed);
    eprintln!("{n} clients connected and authenticated in {connect_wall:.1} s ({failed} failed)");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_sockets = rss_kib(pid);
    let _ = go.send(true);
    wait_for("every client subscribed", Duration::from_secs(120), || {
        shared.subscribed.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed) >= n
    })
    .await;

    // Every subscription answers a probe before anything is measured.
    let mut publisher = Publisher::connect(&redis_url).await;
    for round in 1..=5 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let missing: Vec<usize> = (0..n).filter(|&i| !shared.probed[i].load(Ordering::Relaxed)).collect();
        if missing.is_empty() {
            break;
        }
        eprintln!("probe round {round}: {} subscriptions", missing.len());
        let period = Duration::from_micros(500);
        let start = tokio::time::Instant::now();
        for (k, &i) in missing.iter().enumerate() {
            tokio::time::sleep_until(start + period * k as u32).await;
            publisher.publish(&seeded[i], PROBE).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = shared.probes.load(Ordering::Relaxed);
    eprintln!("{live} of {n} subscriptions answered a probe");

    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_idle = rss_kib(pid);

    // The measured run: `rate` events a second for `seconds`, to random subscribers.
    let load_before = support::load_average();
    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let cpu = CpuWindow::start(pid);
    let start = tokio::time::Instant::now();
    for k in 0..total {
        tokio::time::sleep_until(start + period.mul_f64(k as f64)).await;
        let target = rand::random_range(0..n);
        shared.expected[target].fetch_add(1, Ordering::Relaxed);
        publisher.publish(&seeded[target], MEASURED).await;
    }
    let publish_wall = start.elapsed().as_secs_f64();
    let (_, run_cpu, machine) = cpu.finish();
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(10) {
        let received: u64 = shared
            .received
            .iter()
            .map(|r| u64::from(r.load(Ordering::Relaxed)))
            .sum();
        if received >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_after = rss_kib(pid);
    let load_after = support::load_average();

    let lost: u64 = (0..n)
        .map(|i| {
            let expected = shared.expected[i].load(Ordering::Relaxed);
            let received = shared.received[i].load(Ordering::Relaxed);
            u64::from(expected.saturating_sub(received))
        })
        .sum();
    let mut latencies = std::mem::take(&mut *shared.latencies.lock().expect("latencies"));
    latencies.sort_by(f64::total_cmp);
    let ms = |p: f64| percentile(&latencies, p);
    let per_subscriber = (rss_idle as f64 - rss_before as f64) / n as f64;

    println!("## ws_load results");
    println!("load average before / after the run: {load_before} / {load_after}");
    println!(
        "subscribers: {n} ({failed} failed to connect, {live} answered a probe); connected in {connect_wall:.1} s using {connect_cpu:.1} s of serve CPU"
    );
    println!(
        "events: {total} published at {rate}/s in {publish_wall:.1} s; received {}; lost {lost}; EVENTS_DROPPED notices {}; sockets closed {}; protocol errors {}",
        latencies.len(),
        shared.dropped_notices.load(Ordering::Relaxed),
        shared.closed.load(Ordering::Relaxed) - failed,
        shared.errors.load(Ordering::Relaxed),
    );
    println!(
        "latency publish→receipt: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        ms(50.0),
        ms(90.0),
        ms(99.0),
        ms(99.9),
        ms(100.0)
    );
    println!(
        "serve RSS: {:.1} MiB before connecting, {:.1} MiB with {n} authenticated sockets, {:.1} MiB with {n} idle subscribers, {:.1} MiB after the run",
        rss_before as f64 / 1024.0,
        rss_sockets as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    println!(
        "memory per idle subscriber: {per_subscriber:.1} KiB ({:.1} KiB the authenticated socket, {:.1} KiB the subscription)",
        (rss_sockets as f64 - rss_before as f64) / n as f64,
        (rss_idle as f64 - rss_sockets as f64) / n as f64,
    );
    println!(
        "serve CPU during the run: {run_cpu:.2} s over {publish_wall:.1} s = {:.1} % of one core ({:.0} µs per event); whole machine {:.0} % busy (both cores)",
        100.0 * run_cpu / publish_wall,
        1e6 * run_cpu / total as f64,
        100.0 * machine
    );
    drop(publisher);
    serve.stop();
}

async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes events in the hub's wire format on its Redis channel.
struct Publisher {
    connection: redis::aio::MultiplexedConnection,
    /// Not any server's origin, so every server delivers them.
    origin: Uuid,
}

impl Publisher {
    async fn connect(url: &str) -> Self {
        let client = redis::Client::open(url).expect("REDIS_URL");
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis");
        Self {
            connection,
            origin: Uuid::new_v4(),
        }
    }

    async fn publish(&mut self, to: &Seeded, kind: &str) {
        let now = Utc::now();
        let envelope = Envelope {
            origin: self.origin,
            user_id: to.user,
            event: Event::Connection(ConnectionEventView {
                kind: kind.to_owned(),
                connection_id: ID(to.connection_id.clone()),
                status: ConnectionStatus::Healthy,
                previous_status: None,
                at: now,
                health: Some(HealthView {
                    last_checked_at: Some(now),
                    last_success_at: Some(now),
                    consecutive_failures: 0,
                    latency_ms: Some(42),
                    last_error: None,
                }),
            }),
        };
        let json = serde_json::to_string(&envelope).expect("event JSON");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(exchange_connections::startup::EVENTS_CHANNEL)
            .arg(json)
            .query_async(&mut self.connection)
            .await
            .expect("PUBLISH");
    }
}

/// One client: connects, authenticates, subscribes, then counts what arrives.
async fn subscriber(
    index: usize,
    url: String,
    seed: Seeded,
    shared: Arc<Shared>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    // Small buffers: ten thousand of these share the machine with the server.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let mut socket = match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
        Ok((socket, _)) => socket,
        Err(error) => {
            eprintln!("client {index}: connect failed: {error}");
            shared.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", seed.token) } });
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": {
        "query": SUBSCRIPTION, "variables": { "id": seed.connection_id } } });
    let acked = async {
        socket.send(Message::text(init.to_string())).await.ok()?;
        loop {
            match socket.next().await? {
                Ok(Message::Text(text)) if text.contains("connection_ack") => break,
                Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => continue,
                _ => return None,
            }
        }
        shared.acked.fetch_add(1, Ordering::Relaxed);
        drop(permit);
        let mut go = shared.go.clone();
        // Server pings are not answered while waiting; the server does not require it.
        go.wait_for(|go| *go).await.ok()?;
        tokio::time::sleep(shared.ramp.mul_f64(index as f64 / shared.n as f64)).await;
        socket.send(Message::text(subscribe.to_string())).await.ok()
    };
    if acked.await.is_none() {
        eprintln!("client {index}: the server did not accept the subscription");
        shared.closed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    shared.subscribed.fetch_add(1, Ordering::Relaxed);

    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match message["type"].as_str() {
            Some("next") => {
                let payload = &message["payload"];
                if let Some(event) = payload["data"]["connectionEvents"].as_object() {
                    let at = event["at"]
                        .as_str()
                        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
                    match (event["kind"].as_str(), at) {
                        (Some(PROBE), _) => {
                            if !shared.probed[index].swap(true, Ordering::Relaxed) {
                                shared.probes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        (Some(MEASURED), Some(at)) => {
                            let latency = (Utc::now() - at.to_utc()).num_microseconds().unwrap_or(i64::MAX);
                            shared.received[index].fetch_add(1, Ordering::Relaxed);
                            shared
                                .latencies
                                .lock()
                                .expect("latencies")
                                .push(latency as f64 / 1000.0);
                        }
                        _ => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                } else if payload["errors"][0]["extensions"]["code"] == "EVENTS_DROPPED" {
                    shared.dropped_notices.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some("ping") => {
                if socket.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                    break;
                }
            }
            Some("pong") => {}
            _ => {
                eprintln!("client {index}: unexpected message {message}");
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    shared.closed.fetch_add(1, Ordering::Relaxed);
}
