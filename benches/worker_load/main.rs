//! Health-monitor load tool (issue 4 "Performance"): how many checks a
//! second one `exchange-connections worker` process completes per core of
//! CPU it uses, against a local mock exchange that verifies every signature.
//!
//! N connections are created through a `serve` process (which is then
//! stopped), all due at once; one release `worker` then checks them with a
//! small `HEALTH_CHECK_INTERVAL`, so there is always more due work than it
//! can do. Over a window after a warm-up it reports checks completed per
//! second (from the worker's own `health_checks_total`), the worker's CPU
//! (`/proc/<pid>/stat`), and checks/s per core = checks/s ÷ (CPU s ÷ wall s).
//!
//! The exchange is Kraken (the API tests' mock, verifying `API-Sign` and
//! nonces): its budget is per API key, like every user's real key. Binance's
//! is per egress IP (6,000 weight a minute, 21 per test: at most ~4.8
//! checks a second for the whole deployment), so a Binance run would measure
//! that budget, not the worker.
//!
//! Run it with `bench/worker_load.sh`. Settings (environment):
//! `DATABASE_URL` (migrated PostgreSQL, required), `REDIS_URL` (default
//! `redis://127.0.0.1:6379`; `off` runs the worker with in-process budgets
//! and hub), `WORKER_LOAD_CONNECTIONS` (10000), `WORKER_LOAD_SECONDS` (30),
//! `WORKER_LOAD_WARMUP` (10), `HEALTH_CHECK_INTERVAL` (`1s`), and the
//! worker's own `WORKER_CONCURRENCY`, `WORKER_BATCH`, `WORKER_POLL_INTERVAL`
//! when set.

#[path = "../../tests/api/mock/kraken.rs"]
#[allow(dead_code)]
mod kraken;
#[path = "../support/mod.rs"]
mod support;

use base64::Engine;
use kraken::{MockKraken, MockKrakenPerms};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{CpuWindow, Process, counter_by, env_number, env_or};

/// Connections per seeded user.
const PER_USER: usize = 10;

fn main() {
    // The mock exchange and the seeding client; the worker runs in its own process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

fn kraken_key(n: usize) -> String {
    let key = format!("BenchKrakenKey{n:08}");
    format!("{key}{}", "A".repeat(56 - key.len()))
}

async fn run() {
    exchange_connections::install_crypto_providers();
    let database_url = std::env::var("DATABASE_URL").expect("DATABASE_URL: a migrated PostgreSQL database");
    let redis_url = Some(env_or("REDIS_URL", "redis://127.0.0.1:6379")).filter(|u| u != "off");
    let n: usize = env_number("WORKER_LOAD_CONNECTIONS", 10_000);
    let seconds: u64 = env_number("WORKER_LOAD_SECONDS", 30);
    let warmup: u64 = env_number("WORKER_LOAD_WARMUP", 10);
    let interval = env_or("HEALTH_CHECK_INTERVAL", "1s");
    let http = reqwest::Client::new();

    let mock = MockKraken::start().await;
    let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    for i in 0..n {
        mock.add_key(&kraken_key(i), &secret, MockKrakenPerms::default());
    }
    let kraken_url = mock.base_url.as_str().trim_end_matches('/').to_owned();
    let mut common = vec![
        ("DATABASE_URL", database_url),
        ("KRAKEN_BASE_URL", kraken_url),
        // The mock's keys are independent: the faster tier's counter, so no
        // check is held back by its own key's budget.
        ("KRAKEN_TIER", "pro".to_owned()),
        ("HEALTH_CHECK_INTERVAL", interval.clone()),
    ];
    if let Some(url) = &redis_url {
        common.push(("REDIS_URL", url.clone()));
    }

    // Seed through the API, then stop the server: only the worker runs while measuring.
    let tmp = std::env::temp_dir();
    let mut env = common.clone();
    env.extend([
        ("RUN_WORKER", "false".to_owned()),
        ("RATE_LIMIT_PER_IP", u32::MAX.to_string()),
        ("RATE_LIMIT_PER_USER", u32::MAX.to_string()),
    ]);
    let mut serve = Process::start("serve", support::free_port(), &env, &tmp.join("worker_load-serve.log"));
    serve.wait_ready(&http, redis_url.is_some()).await;
    support::seed(&http, &serve.base_url(), n.div_ceil(PER_USER), PER_USER, 32, &|i| {
        ("KRAKEN", kraken_key(i), secret.clone())
    })
    .await;
    serve.stop();

    let mut env = common;
    for name in ["WORKER_CONCURRENCY", "WORKER_BATCH", "WORKER_POLL_INTERVAL"] {
        if let Ok(value) = std::env::var(name) {
            env.push((name, value));
        }
    }
    let settings: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("WORKER_") || *k == "HEALTH_CHECK_INTERVAL")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let log = tmp.join("worker_load-worker.log");
    let mut worker = Process::start("worker", support::free_port(), &env, &log);
    worker.wait_ready(&http, redis_url.is_some()).await;
    let pid = worker.pid();
    eprintln!("worker pid {pid}, log {}; warming up {warmup} s", log.display());
    tokio::time::sleep(Duration::from_secs(warmup)).await;

    let metrics_url = format!("{}/metrics", worker.base_url());
    let checks = async || {
        let text = http
            .get(&metrics_url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        counter_by(&text, "health_checks_total", "outcome")
    };
    let load_before = support::load_average();
    let requests_before = mock.request_count();
    let before = checks().await;
    let cpu = CpuWindow::start(pid);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = checks().await;
    let (wall, cpu_seconds, machine) = cpu.finish();
    let requests = mock.request_count() - requests_before;
    let load_after = support::load_average();
    worker.stop();

    let outcomes: BTreeMap<&String, f64> = after
        .iter()
        .map(|(outcome, count)| (outcome, count - before.get(outcome).copied().unwrap_or(0.0)))
        .filter(|(_, count)| *count > 0.0)
        .collect();
    let total: f64 = outcomes.values().sum();
    let ok = outcomes.get(&"ok".to_owned()).copied().unwrap_or(0.0);
    let cores = cpu_seconds / wall;
    println!("## worker_load results");
    println!("load average before / after the run: {load_before} / {load_after}");
    println!(
        "{n} Kraken connections, worker on PostgreSQL{} with {}",
        if redis_url.is_some() { " + Redis" } else { "" },
        settings.join(" ")
    );
    println!(
        "checks completed in {wall:.1} s: {total:.0} ({:.0}/s), by outcome {outcomes:?}; mock requests {requests} ({:.0}/s)",
        total / wall,
        requests as f64 / wall
    );
    println!(
        "worker CPU: {cpu_seconds:.2} s = {:.2} cores ({:.0} µs per check); whole machine {:.0} % busy (both cores)",
        cores,
        1e6 * cpu_seconds / total.max(1.0),
        100.0 * machine
    );
    println!(
        "checks/s per core: {:.0} (all outcomes), {:.0} (ok only)",
        total / wall / cores,
        ok / wall / cores
    );
}
