//! The axum router and its middleware: request ids, tracing, metrics, CORS,
//! body limit, timeouts and security headers around the GraphQL endpoints
//! (HTTP and WebSocket), GraphiQL, health and metrics.

mod client_ip;
mod graphql;
mod health;
mod limits;
mod metrics;
mod security;
mod ws;

use crate::auth::Verifier;
use crate::graphql::AppSchema;
use axum::Router;
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

pub use limits::{RateLimits, RequestLimits};

/// `/healthz`, `/readyz` and `/metrics` alone, for processes that serve no API (the worker).
pub fn operations_router(db: DatabaseConnection, events: crate::events::EventHub, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route(
            "/readyz",
            get(move || {
                let (db, events) = (db.clone(), events.clone());
                async move { health::readiness(&db, &events).await }
            }),
        )
        .route("/metrics", get(move || std::future::ready(metrics.render())))
}

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub schema: AppSchema,
    pub verifier: Arc<Verifier>,
    pub db: DatabaseConnection,
    pub metrics: PrometheusHandle,
    pub events: crate::events::EventHub,
    pub websocket: crate::config::WebSocketLimits,
    pub limits: Arc<RequestLimits>,
    pub trusted_proxy_hops: usize,
    /// Changes (or closes) when the server begins to shut down: sockets say goodbye.
    pub shutdown: tokio::sync::watch::Receiver<()>,
}

pub struct RouterOptions {
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

pub fn router(state: HttpState, options: RouterOptions) -> Router {
    let cors = (!options.cors_origins.is_empty()).then(|| {
        let origins = options
            .cors_origins
            .iter()
            .filter_map(|o| o.parse().ok())
            .collect::<Vec<_>>();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
            .expose_headers([REQUEST_ID])
            .max_age(Duration::from_secs(600))
    });
    let router = Router::new()
        .route("/graphql", get(graphql::get_handler).post(graphql::post_handler))
        .route("/graphql/ws", get(ws::handler))
        .route("/graphiql", get(graphql::graphiql))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .with_state(state)
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(RequestBodyLimitLayer::new(options.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    security::headers(router)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn(metrics::trace_request))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
