//! Bad input through the API: every one gets a clear error naming the field,
//! and loses nothing.

use crate::connections::{binance_key, connect, create_input, create_mutation};
use crate::helpers::{Backend, JWT_SECRET, TestApp};
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

async fn bad_labels_and_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let (key, secret) = binance_key("bad1");
    let cases = [
        (create_input("", &key, &secret), "input.label"),
        (create_input("   ", &key, &secret), "input.label"),
        (create_input(&"x".repeat(65), &key, &secret), "input.label"),
        (create_input("tab\there", &key, &secret), "input.label"),
        (create_input("ok", "short", &secret), "input.credentials.apiKey"),
        (
            create_input("ok", &key, "not-the-right-shape"),
            "input.credentials.apiSecret",
        ),
        (create_input("ok", &key, ""), "input.credentials.apiSecret"),
    ];
    for (input, field) in cases {
        let error = app
            .err(&token, &create_mutation(), input.clone(), "BAD_USER_INPUT")
            .await;
        assert_eq!(error["extensions"]["field"], field, "{input} → {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            !message.contains(&secret) && !message.contains("not-the-right-shape"),
            "{message}"
        );
    }
    // An environment the exchange does not have: a clear refusal, never a fake success.
    let mut input = create_input("cb", &key, &secret);
    input["input"]["credentials"]["exchange"] = json!("KRAKEN");
    input["input"]["credentials"]["environment"] = json!("TESTNET");
    let error = app.err(&token, &create_mutation(), input, "BAD_USER_INPUT").await;
    assert_eq!(error["extensions"]["field"], "input.credentials.environment");
    // An unknown enum value: a 400 naming the argument.
    let mut input = create_input("ftx", &key, &secret);
    input["input"]["credentials"]["exchange"] = json!("FTX");
    let (status, body) = app.gql(Some(&token), &create_mutation(), input).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("exchange"),
        "{body}"
    );
    // Bad and unknown ids.
    let error = app
        .err(
            &token,
            "query { connection(id: \"nope\") { id } }",
            json!({}),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "id");
    app.err(
        &token,
        "query($id: ID!) { connection(id: $id) { id } }",
        json!({"id": Uuid::new_v4()}),
        "NOT_FOUND",
    )
    .await;
    // A reason too long on revoke; rotating to another exchange.
    let conn = connect(&app, &token, "Main", "bad2").await;
    let error = app
        .err(
            &token,
            "mutation($id: ID!, $r: String) { revokeConnection(id: $id, reason: $r) { id } }",
            json!({"id": conn["id"], "r": "x".repeat(501)}),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "reason");
    let error = app
        .err(
            &token,
            "mutation($id: ID!, $c: CredentialsInput!) { rotateKeys(id: $id, credentials: $c) { id } }",
            json!({"id": conn["id"], "c": {"exchange": "KRAKEN", "apiKey": key, "apiSecret": secret}}),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "credentials.exchange");
    // Nothing was lost or added by any of it.
    let list = app.ok(&token, "{ connections { label status } }", json!({})).await;
    assert_eq!(list["connections"], json!([{"label": "Main", "status": "HEALTHY"}]));
}

async fn bad_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::new_v4();
    // No token: public fields work, private ones say UNAUTHENTICATED.
    let (status, body) = app
        .gql(None, "{ exchanges { exchange supported } egressIps }", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["egressIps"], json!(["203.0.113.7"]));
    assert_eq!(
        body["data"]["exchanges"][0],
        json!({"exchange": "BINANCE", "supported": true})
    );
    let (status, body) = app.gql(None, "{ connections { id } }", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    let expired = hs256(json!({"sub": user, "aud": "authenticated", "exp": now() - 120, "role": "authenticated"}));
    let no_sub = hs256(json!({"iss": "supabase", "role": "anon", "exp": now() + 600, "aud": "authenticated"}));
    let not_uuid = hs256(json!({"sub": "admin", "aud": "authenticated", "exp": now() + 600}));
    let forged = {
        let secret = exchange_connections::crypto::SecretString::new("another-secret-that-is-long-enough-012345");
        exchange_connections::auth::issue_hs256_token(&secret, user, "authenticated", Duration::from_secs(60))
    };
    let wrong_audience = {
        let secret = exchange_connections::crypto::SecretString::new(crate::helpers::JWT_SECRET);
        exchange_connections::auth::issue_hs256_token(&secret, user, "anon", Duration::from_secs(60))
    };
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&json!({"sub": user, "aud": "authenticated", "exp": now() + 600}).to_string())
    );
    for bad in [
        "garbage",
        "a.b.c",
        "",
        &forged,
        &wrong_audience,
        &expired,
        &no_sub,
        &not_uuid,
        &alg_none,
    ] {
        let (status, body) = app.gql(Some(bad), "{ connections { id } }", json!({})).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    let response = app
        .client
        .post(format!("{}/graphql", app.base_url))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({"query": "{ connections { id } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn malformed_requests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = format!("{}/graphql", app.base_url);
    let post = |body: &'static str| {
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let response = post("{not json").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    let response = post("{\"query\": \"{ connections { id \"}").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    let response = post("{\"query\": \"{ noSuchField }\"}").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = post("[]").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Oversized body: 413.
    let big = format!(
        "{{\"query\": \"{{ exchanges {{ name }} }}\", \"x\": \"{}\"}}",
        "a".repeat(200 * 1024)
    );
    let response = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // GET carries queries only.
    let response = app
        .client
        .get(format!("{url}?query={{egressIps}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .client
        .get(format!("{url}?query=mutation{{revokeConnection(id:\"x\"){{id}}}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The service is unaffected.
    let response = app.client.get(format!("{}/readyz", app.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

on_both_backends!(bad_labels_and_keys, bad_tokens, malformed_requests);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn hs256(claims: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap()
}
