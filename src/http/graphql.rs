//! `POST /graphql`, `GET /graphql` (queries only) and `/graphiql`. The
//! handler authenticates the bearer token, attaches the caller and request
//! details, and maps malformed requests to 400 with a GraphQL error.

use super::client_ip::client_ip;
use super::{HttpState, REQUEST_ID};
use crate::auth::bearer_token;
use crate::graphql::GraphqlContext;
use async_graphql::http::GraphiQLSource;
use async_graphql::{BatchRequest, BatchResponse, Response as GqlResponse};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Most operations one HTTP request may batch.
pub const MAX_BATCH: usize = 10;

pub async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

pub async fn post_handler(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = client_ip(peer, &headers, state.trusted_proxy_hops);
    if let Err(wait) = state.limits.check_ip(ip) {
        return rate_limited(wait, "too many requests from this address");
    }
    let batch = match serde_json::from_slice::<BatchRequest>(&body) {
        Ok(batch) => batch,
        Err(e) => {
            // Say where, never what: the body may hold credentials.
            let what = match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "malformed JSON",
                _ => "not a GraphQL request (expected {\"query\": …, \"variables\": …})",
            };
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &format!("{what} at line {} column {}", e.line(), e.column()),
            );
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && (requests.is_empty() || requests.len() > MAX_BATCH)
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            &format!("a batch must hold 1 to {MAX_BATCH} operations"),
        );
    }
    execute(state, ip, &headers, batch).await
}

pub async fn get_handler(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let ip = client_ip(peer, &headers, state.trusted_proxy_hops);
    if let Err(wait) = state.limits.check_ip(ip) {
        return rate_limited(wait, "too many requests from this address");
    }
    let request = match async_graphql::http::parse_query_string(query.as_deref().unwrap_or("")) {
        Ok(request) => request,
        Err(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                "malformed GraphQL GET request",
            );
        }
    };
    // GET must not change anything (it is cacheable and CSRF-prone).
    if let Ok(document) = async_graphql::parser::parse_query(&request.query) {
        let mutates = document
            .operations
            .iter()
            .any(|(_, op)| op.node.ty != async_graphql::parser::types::OperationType::Query);
        if mutates {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "BAD_USER_INPUT",
                "use POST for mutations",
            );
        }
    }
    execute(state, ip, &headers, BatchRequest::Single(request)).await
}

async fn execute(state: HttpState, ip: IpAddr, headers: &HeaderMap, batch: BatchRequest) -> Response {
    let principal = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            if let Some(wait) = state.limits.auth_brake(ip) {
                return rate_limited(wait, "too many failed authentications from this address");
            }
            let token = value.to_str().ok().and_then(bearer_token);
            let verified = match token {
                Some(token) => state.verifier.verify(token).await.map_err(|e| e.to_string()),
                None => Err("the Authorization header must be `Bearer <token>`".to_string()),
            };
            match verified {
                Ok(principal) => Some(principal),
                Err(reason) => {
                    state.limits.record_auth_failure(ip);
                    tracing::info!(%reason, "authentication failed");
                    return error_response(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", &reason);
                }
            }
        }
    };
    let header_text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
            .map(String::from)
    };
    if let Some(principal) = &principal
        && let Err(wait) = state.limits.check_user(principal.user_id)
    {
        return rate_limited(wait, "too many requests from this user");
    }
    let context = GraphqlContext {
        principal,
        request_id: header_text(REQUEST_ID),
        ip: Some(ip.to_string()),
        user_agent: header_text(header::USER_AGENT),
    };
    let response = state.schema.execute_batch(batch.data(context)).await;
    respond(response)
}

/// Parse and validation failures (no data, no path, no code) become a 400
/// with `BAD_USER_INPUT`; every error is counted by code.
fn respond(response: BatchResponse) -> Response {
    let mut status = StatusCode::OK;
    let mut fix = |mut r: GqlResponse| {
        let request_error = r.data == async_graphql::Value::Null
            && !r.errors.is_empty()
            && r.errors
                .iter()
                .all(|e| e.path.is_empty() && e.extensions.as_ref().is_none_or(|x| x.get("code").is_none()));
        if request_error {
            status = StatusCode::BAD_REQUEST;
            for error in &mut r.errors {
                error
                    .extensions
                    .get_or_insert_with(Default::default)
                    .set("code", "BAD_USER_INPUT");
            }
        }
        for error in &r.errors {
            let code = error
                .extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_else(|| "UNKNOWN".into());
            metrics::counter!("graphql_errors_total", "code" => code).increment(1);
        }
        r
    };
    let response = match response {
        BatchResponse::Single(r) => BatchResponse::Single(fix(r)),
        BatchResponse::Batch(rs) => BatchResponse::Batch(rs.into_iter().map(&mut fix).collect()),
    };
    (status, axum::Json(response)).into_response()
}

/// 429 with `Retry-After` (whole seconds, at least 1).
pub fn rate_limited(wait: Duration, what: &str) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        &format!("{what}; try again in {seconds} s"),
    );
    response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    response
}

pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    metrics::counter!("graphql_errors_total", "code" => code.to_string()).increment(1);
    (
        status,
        axum::Json(json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })),
    )
        .into_response()
}
