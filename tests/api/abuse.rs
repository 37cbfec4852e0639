//! Abuse limits: oversized documents (depth, complexity, aliases, batches),
//! floods of requests per IP and per user, floods of bad tokens, and
//! introspection off outside the embedded default. Each is refused quickly
//! with the right code while everyone else is served.

use crate::helpers::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

async fn post(
    app: &TestApp,
    token: Option<&str>,
    forwarded_for: &str,
    body: Value,
) -> (StatusCode, Value, Option<String>) {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.base_url))
        .header("x-forwarded-for", forwarded_for)
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (status, response.json().await.expect("JSON"), retry_after)
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn oversized_documents_are_refused_quickly() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.token_for(Uuid::new_v4());
    let aliases: String = (0..3000).map(|i| format!("a{i}: egressIps ")).collect();
    let cases = vec![
        (
            "thousands of aliases",
            json!({ "query": format!("{{ {aliases} }}") }),
            "aliases",
        ),
        (
            "a thousand operations in a batch",
            json!(
                (0..1000)
                    .map(|_| json!({ "query": "{ egressIps }" }))
                    .collect::<Vec<_>>()
            ),
            "batch",
        ),
        (
            "deeper than the limit",
            json!({ "query": format!("{{ __schema {{ types {{ fields {{ type {{ {}name{} }} }} }} }} }}", "ofType { ".repeat(16), " }".repeat(16)) }),
            "too deep",
        ),
    ];
    for (what, body, needle) in cases {
        let started = Instant::now();
        let (status, body, _) = post(&app, Some(&token), "198.51.100.1", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(code(&body), "BAD_USER_INPUT", "{what}: {body}");
        assert!(body.to_string().contains(needle), "{what}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what} took {:?}",
            started.elapsed()
        );
    }
    // A reasonable aliased query is fine.
    let (status, body, _) = post(
        &app,
        Some(&token),
        "198.51.100.1",
        json!({ "query": "{ a: egressIps b: egressIps }" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_flood_from_one_address_is_limited_and_others_are_served() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.rate_limit_per_ip = 30; // bursts of 6
        s.trusted_proxy_hops = 1;
    })
    .await;
    let token = app.token_for(Uuid::new_v4());
    let query = json!({ "query": "{ egressIps }" });
    let mut limited = None;
    for _ in 0..20 {
        let (status, body, retry_after) = post(&app, Some(&token), "192.0.2.10", query.clone()).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((body, retry_after));
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (body, retry_after) = limited.expect("the flood was limited");
    assert_eq!(code(&body), "RATE_LIMITED");
    assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
    // Another client (another forwarded address) is served meanwhile.
    let (status, body, _) = post(&app, Some(&token), "192.0.2.11", query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_flood_from_one_user_is_limited_and_others_are_served() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.rate_limit_per_user = 25).await; // bursts of 5
    let noisy = app.token_for(Uuid::new_v4());
    let quiet = app.token_for(Uuid::new_v4());
    let query = json!({ "query": "{ connections { id } }" });
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(post(&app, Some(&noisy), "127.0.0.1", query.clone()).await.0);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let (status, body, _) = post(&app, Some(&quiet), "127.0.0.1", query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_flood_of_bad_tokens_brakes_that_address_only() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.auth_failures_per_ip = 5; // bursts of 5
        s.trusted_proxy_hops = 1;
    })
    .await;
    let query = json!({ "query": "{ connections { id } }" });
    let mut codes = Vec::new();
    for i in 0..8 {
        let (status, body, _) = post(&app, Some(&format!("forged.{i}.token")), "203.0.113.50", query.clone()).await;
        codes.push((status.as_u16(), code(&body).to_string()));
    }
    assert_eq!(codes[0], (401, "UNAUTHENTICATED".to_string()));
    assert_eq!(codes.last().unwrap(), &(429, "RATE_LIMITED".to_string()), "{codes:?}");
    // While braked, even a valid token from that address waits…
    let token = app.token_for(Uuid::new_v4());
    let (status, _, retry_after) = post(&app, Some(&token), "203.0.113.50", query.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some());
    // …and everyone else is served.
    let (status, body, _) = post(&app, Some(&token), "203.0.113.51", query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn introspection_is_off_unless_enabled() {
    let query = json!({ "query": "{ __schema { queryType { name } } }" });
    let off = TestApp::spawn(Backend::Sqlite).await;
    let token = off.token_for(Uuid::new_v4());
    let (_, body, _) = post(&off, Some(&token), "127.0.0.1", query.clone()).await;
    // async-graphql answers a disabled introspection with null.
    assert!(body["data"]["__schema"].is_null(), "introspection answered: {body}");

    let on = TestApp::spawn_with(Backend::Sqlite, |s| s.introspection = "on".into()).await;
    let (status, body, _) = post(&on, Some(&token), "127.0.0.1", query).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query", "{body}");
}
