//! The HTTP surface: health, readiness, metrics, request ids, security
//! headers, CORS, GraphiQL.

use crate::connections::connect;
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use reqwest::StatusCode;
use uuid::Uuid;

async fn http_surface(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.base_url)).send();

    let response = get("/healthz").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers().contains_key("x-request-id"),
        "every response has a request id"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["x-frame-options"], "DENY");

    let response = get("/readyz").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "up");

    // A caller's request id is kept.
    let response = app
        .client
        .get(format!("{}/healthz", app.base_url))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");

    let response = get("/graphiql").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("/graphql/ws"), "GraphiQL is configured for subscriptions");

    // Some traffic, then the metrics show it, by route, code and exchange.
    let token = app.token_for(Uuid::new_v4());
    connect(&app, &token, "Main", "http1").await;
    app.gql(
        Some(&token),
        "{ connection(id: \"nope\") { id } }",
        serde_json::json!({}),
    )
    .await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/graphql\""), "{metrics}");
    assert!(metrics.contains("http_request_duration_seconds_bucket"), "{metrics}");
    assert!(
        metrics.contains("graphql_errors_total{code=\"BAD_USER_INPUT\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("exchange_calls_total"), "{metrics}");

    // CORS: the configured origin only.
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.base_url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(!allowed.headers().contains_key("access-control-allow-credentials"));
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
}

on_both_backends!(http_surface);
