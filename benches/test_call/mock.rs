//! A minimal Binance Spot mock for the test-call benchmark: the three
//! endpoints a production test calls (`/api/v3/time`, `/api/v3/account`,
//! `/sapi/v1/account/apiRestrictions`), checking the API key and the HMAC
//! signature and answering with Binance's documented bodies. It reports a
//! constant, low used weight so the service's budget counts only its own calls
//! (the benchmark's direct calls would otherwise eat the service's budget).

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use exchange_connections::crypto::SecretString;
use exchange_connections::exchange::binance::signer::sign_hmac;
use serde_json::json;
use std::sync::Arc;
use url::Url;

/// Binance's documented `GET /api/v3/account` sample with zero balances omitted.
const ACCOUNT: &str = r#"{"makerCommission":15,"takerCommission":15,"buyerCommission":0,"sellerCommission":0,
"commissionRates":{"maker":"0.00150000","taker":"0.00150000","buyer":"0.00000000","seller":"0.00000000"},
"canTrade":true,"canWithdraw":false,"canDeposit":true,"brokered":false,"requireSelfTradePrevention":false,
"preventSor":false,"updateTime":123456789,"accountType":"SPOT",
"balances":[{"asset":"BTC","free":"4723846.89208129","locked":"0.00000000"}],"permissions":["SPOT"],"uid":354937868}"#;

/// Binance's documented `apiRestrictions` sample: IP-restricted, read and spot trading, no withdrawals.
const RESTRICTIONS: &str = r#"{"ipRestrict":true,"createTime":1698645219000,"enableReading":true,
"enableWithdrawals":false,"enableInternalTransfer":false,"enableMargin":false,"enableFutures":false,
"permitsUniversalTransfer":false,"enableVanillaOptions":false,"enableFixApiTrade":false,"enableFixReadOnly":true,
"enableSpotAndMarginTrading":true,"enablePortfolioMarginTrading":false}"#;

#[derive(Clone)]
struct Key {
    api_key: Arc<str>,
    secret: SecretString,
}

/// Serves the mock on an ephemeral loopback port; returns its base URL.
pub async fn start(api_key: &str, secret: &str) -> Url {
    let key = Key {
        api_key: api_key.into(),
        secret: SecretString::new(secret),
    };
    let app = Router::new()
        .route("/api/v3/time", get(time))
        .route(
            "/api/v3/account",
            get(|s: State<Key>, h: HeaderMap, q: RawQuery| signed(s, h, q, ACCOUNT)),
        )
        .route(
            "/sapi/v1/account/apiRestrictions",
            get(|s: State<Key>, h: HeaderMap, q: RawQuery| signed(s, h, q, RESTRICTIONS)),
        )
        .with_state(key);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind mock Binance");
    let addr = listener.local_addr().expect("mock address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Url::parse(&format!("http://{addr}/")).expect("mock URL")
}

async fn time() -> Response {
    json_answer(
        StatusCode::OK,
        json!({ "serverTime": chrono::Utc::now().timestamp_millis() }).to_string(),
    )
}

async fn signed(State(key): State<Key>, headers: HeaderMap, RawQuery(query): RawQuery, body: &'static str) -> Response {
    let sent_key = headers.get("x-mbx-apikey").and_then(|v| v.to_str().ok());
    if sent_key != Some(&*key.api_key) {
        return error(
            StatusCode::UNAUTHORIZED,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        );
    }
    let signed_ok = query
        .as_deref()
        .and_then(|q| q.rsplit_once("&signature="))
        .is_some_and(|(payload, signature)| signature.eq_ignore_ascii_case(&sign_hmac(&key.secret, payload, "")));
    if !signed_ok {
        return error(
            StatusCode::BAD_REQUEST,
            -1022,
            "Signature for this request is not valid.",
        );
    }
    json_answer(StatusCode::OK, body.to_owned())
}

fn error(status: StatusCode, code: i64, msg: &str) -> Response {
    json_answer(status, json!({ "code": code, "msg": msg }).to_string())
}

fn json_answer(status: StatusCode, body: String) -> Response {
    (
        status,
        [("content-type", "application/json"), ("x-mbx-used-weight-1m", "20")],
        body,
    )
        .into_response()
}
