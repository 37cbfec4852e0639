//! Plumbing shared by the load tools (`ws_load`, `worker_load`): starting the
//! release binary as its own process, reading a process's CPU time and
//! resident memory from `/proc`, minting Supabase-style tokens, and seeding
//! users and connections through the public GraphQL API.

#![allow(dead_code)]

use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Throwaway secrets, as in the API tests.
pub const JWT_SECRET: &str = "bench-jwt-secret-that-is-long-enough-0123456789";
pub const ENCRYPTION_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().unwrap_or_else(|_| panic!("{name} must be a number")),
        _ => default,
    }
}

/// The binary under test (`EC_BIN`, default the release build).
pub fn binary() -> PathBuf {
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/exchange-connections");
    PathBuf::from(env_or("EC_BIN", default))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A child process of the binary, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Process {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Process {
    /// Starts `exchange-connections <role>` with `env` on top of a clean
    /// environment (PATH only), logging to `log`.
    pub fn start(role: &str, port: u16, env: &[(&str, String)], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        let mut command = Command::new(binary());
        command
            .arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", JWT_SECRET)
            .env("ENCRYPTION_KEYS", ENCRYPTION_KEY)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {role}: {e}", binary().display()));
        Self {
            child,
            port,
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits for `/readyz` to say ready, with the event hub on Redis when `hub`.
    pub async fn wait_ready(&mut self, http: &reqwest::Client, hub: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the process exited ({status}); see {}", self.log.display());
            }
            if let Ok(response) = http.get(format!("{}/readyz", self.base_url())).send().await
                && let Ok(body) = response.json::<Value>().await
                && body["ready"] == true
                && (!hub || body["checks"]["eventHub"] == "up")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready in 60 s; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to 10 s before killing it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU seconds the process has used so far (all its threads).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

/// Resident memory of the process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The whole machine's busy and total CPU time (all cores), in ticks.
pub fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let values: Vec<u64> = stat
        .lines()
        .next()
        .expect("cpu line")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle + iowait
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// CPU use over a window: this process's and the whole machine's.
pub struct CpuWindow {
    pid: u32,
    started: Instant,
    process: f64,
    machine: (u64, u64),
}

impl CpuWindow {
    pub fn start(pid: u32) -> Self {
        Self {
            pid,
            started: Instant::now(),
            process: cpu_seconds(pid),
            machine: machine_cpu(),
        }
    }

    /// (wall seconds, process CPU seconds, machine busy fraction of all cores).
    pub fn finish(&self) -> (f64, f64, f64) {
        let wall = self.started.elapsed().as_secs_f64();
        let process = cpu_seconds(self.pid) - self.process;
        let (busy, total) = machine_cpu();
        let machine = (busy - self.machine.0) as f64 / ((total - self.machine.1).max(1)) as f64;
        (wall, process, machine)
    }
}

/// `uptime`'s load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// An HS256 token as Supabase issues it, valid for `ttl`.
pub fn token(user: Uuid, ttl: Duration) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": user, "aud": "authenticated", "role": "authenticated",
        "iat": now, "exp": now + ttl.as_secs() as i64,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("HS256 key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("token")
}

/// One seeded connection and its owner.
#[derive(Clone)]
pub struct Seeded {
    pub user: Uuid,
    pub token: String,
    pub connection_id: String,
}

/// Creates `users × per_user` connections through `createConnection`
/// (not tested first: no exchange is called), `concurrency` at a time;
/// `credentials(n)` is `(exchange, apiKey, apiSecret)` of connection `n`.
pub async fn seed(
    http: &reqwest::Client,
    base_url: &str,
    users: usize,
    per_user: usize,
    concurrency: usize,
    credentials: &(dyn Fn(usize) -> (&'static str, String, String) + Sync),
) -> Vec<Seeded> {
    const CREATE: &str = "mutation($input: CreateConnectionInput!) { createConnection(input: $input) { id } }";
    let owners: Vec<(Uuid, String)> = (0..users)
        .map(|_| {
            let user = Uuid::new_v4();
            (user, token(user, Duration::from_secs(4 * 3600)))
        })
        .collect();
    let url = format!("{base_url}/graphql");
    let started = Instant::now();
    let seeded: Vec<Seeded> = futures_util::stream::iter(0..users * per_user)
        .map(|n| {
            let (user, token) = owners[n / per_user].clone();
            let (exchange, api_key, api_secret) = credentials(n);
            let body = json!({ "query": CREATE, "variables": { "input": {
                "label": format!("bench {n}"), "testFirst": false,
                "credentials": { "exchange": exchange, "apiKey": api_key, "apiSecret": api_secret } } } });
            let request = http.post(&url).bearer_auth(&token).json(&body);
            async move {
                let reply: Value = request
                    .send()
                    .await
                    .expect("createConnection request")
                    .json()
                    .await
                    .expect("createConnection JSON");
                let id = reply["data"]["createConnection"]["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("createConnection failed: {reply}"))
                    .to_owned();
                Seeded {
                    user,
                    token,
                    connection_id: id,
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    eprintln!(
        "seeded {} connections for {users} users in {:.1} s",
        seeded.len(),
        started.elapsed().as_secs_f64()
    );
    seeded
}

/// Sums a Prometheus counter's samples by the value of `label`.
pub fn counter_by(metrics: &str, name: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
    let mut sums = std::collections::BTreeMap::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        if !(labels.is_empty() || labels.starts_with('{')) {
            continue;
        }
        let key = labels
            .split(&['{', ',', '}'][..])
            .find_map(|pair| pair.strip_prefix(label)?.strip_prefix("=\""))
            .map(|v| v.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        *sums.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    sums
}

/// `p` (0–100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
