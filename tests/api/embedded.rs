//! The README's first command: the binary with no configuration starts the
//! embedded default, prints a working demo token, and shuts down cleanly on
//! SIGTERM; unsafe configurations refuse to start.

use crate::helpers::{Running, TempDir};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary(dir: &TempDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_exchange-connections"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn embedded_default_starts_and_serves() {
    let dir = TempDir::new();
    let mut child = Running(
        binary(&dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .spawn()
            .expect("start binary"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut graphiql, mut token) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while (graphiql.is_none() || token.is_none()) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(url) = line.trim().strip_prefix("GraphiQL:") {
                graphiql = Some(url.trim().to_string());
            }
            if let Some(header) = line.trim().strip_prefix("Header:") {
                let value: serde_json::Value = serde_json::from_str(header.trim()).expect("header is JSON");
                token = Some(
                    value["Authorization"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("Bearer ")
                        .to_string(),
                );
            }
        }
    }
    let graphiql = graphiql.expect("prints the GraphiQL URL");
    let token = token.expect("prints a demo bearer token");
    let base = graphiql.trim_end_matches("/graphiql").to_string();

    // Its SQLite file and development secrets are under ./data.
    assert!(dir.0.join("data/exchange-connections.db").exists());
    assert!(dir.0.join("data/dev-secrets.json").exists());
    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = client
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"query": "{ connections { id } exchanges { exchange } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["connections"], serde_json::json!([]), "{body}");

    // SIGTERM: a graceful, successful exit.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            assert!(exit.success(), "exit after SIGTERM: {exit}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_to_exit(command: &mut Command) -> (bool, String) {
    let output = command.output().expect("run binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn non_loopback_without_secrets_refuses() {
    let dir = TempDir::new();
    let (ok, stderr) = run_to_exit(binary(&dir).env("LISTEN_ADDR", "0.0.0.0:0"));
    assert!(!ok);
    assert!(
        stderr.contains("LISTEN_ADDR") && stderr.contains("JWT_SECRET"),
        "{stderr}"
    );
    assert!(
        !dir.0.join("data/dev-secrets.json").exists(),
        "no dev secrets made for a public address"
    );
}

#[test]
fn malformed_encryption_key_refuses_without_echoing_it() {
    let dir = TempDir::new();
    let (ok, stderr) = run_to_exit(
        binary(&dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("JWT_SECRET", "a-jwt-secret-that-is-long-enough-0123456789")
            .env("ENCRYPTION_KEYS", "SUPERSECRETVALUE-not-a-fernet-key"),
    );
    assert!(!ok);
    assert!(stderr.contains("ENCRYPTION_KEYS"), "{stderr}");
    assert!(!stderr.contains("SUPERSECRETVALUE"), "{stderr}");
}

#[test]
fn schema_and_keygen_commands() {
    let dir = TempDir::new();
    let output = binary(&dir).arg("schema").output().unwrap();
    assert!(output.status.success());
    let sdl = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert_eq!(
        sdl, committed,
        "schema.graphql is what `exchange-connections schema` prints"
    );

    let output = binary(&dir).arg("keygen").output().unwrap();
    assert!(output.status.success());
    let key = String::from_utf8(output.stdout).unwrap();
    assert!(KeyCheck::parse(key.trim()), "keygen prints a usable Fernet key: {key}");
}

struct KeyCheck;
impl KeyCheck {
    fn parse(key: &str) -> bool {
        exchange_connections::crypto::KeyRing::parse(key, "keygen").is_ok()
    }
}
