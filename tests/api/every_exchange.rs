//! Every exchange end to end through the GraphQL API against its mock:
//! test the credentials, connect, test, diagnose, rotate, fail when the
//! exchange stops accepting the key, and revoke. The same flow runs against
//! the shipped binary with trace logging in `canary.rs`, which then searches
//! everything the service said for the secrets it was given.

use crate::helpers::{Backend, TestApp};
use crate::mock::binance::MockPermissions;
use crate::mock::coinbase::{EcTestKey, Ed25519TestKey, MockScopes, cdp_key_name};
use crate::mock::kraken::MockKrakenPerms;
use crate::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use uuid::Uuid;

const FIELDS: &str = "id exchange status apiKeyHint permissions { canRead canTrade canWithdraw }
    health { consecutiveFailures lastError { code message hint } }";

/// The GraphQL endpoint of a running service, and every response it gave.
pub struct Api {
    pub base_url: String,
    pub client: reqwest::Client,
    pub token: String,
    /// Raw response bodies, in order, for the canary search.
    pub bodies: Vec<String>,
}

impl Api {
    pub fn new(base_url: &str, token: String) -> Self {
        Self {
            base_url: base_url.to_string(),
            client: reqwest::Client::new(),
            token,
            bodies: Vec::new(),
        }
    }

    /// Runs an operation; returns `data` and `errors` (Null when absent).
    pub async fn call(&mut self, query: &str, variables: Value) -> (Value, Value) {
        let body = self
            .client
            .post(format!("{}/graphql", self.base_url))
            .bearer_auth(&self.token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql")
            .text()
            .await
            .expect("response body");
        self.bodies.push(body.clone());
        let value: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (value["data"].clone(), value["errors"].clone())
    }

    /// Runs an operation that must succeed; returns its `data`.
    pub async fn ok(&mut self, query: &str, variables: Value) -> Value {
        let (data, errors) = self.call(query, variables).await;
        assert!(errors.is_null(), "{query}: {errors}");
        data
    }
}

/// The mocks a flow drives (the test app's, or ones a spawned binary points at).
pub struct Mocks<'a> {
    pub binance: &'a crate::mock::binance::MockBinance,
    pub coinbase: &'a crate::mock::coinbase::MockCoinbase,
    pub kraken: &'a crate::mock::kraken::MockKraken,
    pub kite: &'a crate::mock::kite::MockKite,
}

/// The secrets one flow handed to the service, for the canary search.
#[derive(Default)]
pub struct Canaries(pub Vec<String>);

impl Canaries {
    fn add(&mut self, secret: &str) {
        self.0.push(secret.to_string());
    }

    /// A PEM is searched for by each line of its body, since a leak could
    /// reformat the text around it.
    fn add_pem(&mut self, pem: &str) {
        self.0.extend(
            pem.lines()
                .filter(|line| !line.starts_with("-----") && line.len() >= 16)
                .map(str::to_string),
        );
    }
}

/// A Binance HMAC secret that names itself a canary.
fn binance_secret(tag: &str) -> String {
    format!("CANARY{tag}{}", "s".repeat(58 - tag.len()))
}

/// The 64 bytes of a Kraken secret, spelling a canary.
fn kraken_raw(tag: &str) -> String {
    format!("CANARY-KRAKEN-{tag}-{}", "x".repeat(49 - tag.len()))
}

/// A Kraken secret as Kraken shows it: base64 of its 64 bytes.
fn kraken_secret(tag: &str) -> String {
    STANDARD.encode(kraken_raw(tag))
}

/// Every exchange through its whole life; returns the secrets used.
pub async fn every_exchange(api: &mut Api, mocks: &Mocks<'_>) -> Canaries {
    let mut canaries = Canaries::default();
    binance(api, mocks, &mut canaries).await;
    coinbase(api, mocks, &mut canaries).await;
    kraken(api, mocks, &mut canaries).await;
    kite(api, mocks, &mut canaries).await;
    canaries
}

fn credentials(exchange: &str, key: &str, secret: &str) -> Value {
    json!({ "exchange": exchange, "apiKey": key, "apiSecret": secret })
}

/// testCredentials, createConnection, testConnection and diagnoseConnection
/// with working credentials; returns the connection id.
async fn connect(api: &mut Api, creds: Value) -> String {
    let tested = api
        .ok(
            "mutation($c: CredentialsInput!) { testCredentials(input: $c) { ok error { code } permissions { canRead } } }",
            json!({ "c": creds }),
        )
        .await;
    assert_eq!(tested["testCredentials"]["ok"], true, "{tested}");
    let created = api
        .ok(
            &format!("mutation($i: CreateConnectionInput!) {{ createConnection(input: $i) {{ {FIELDS} }} }}"),
            json!({ "i": { "label": format!("{} main", creds["exchange"].as_str().unwrap()), "credentials": creds } }),
        )
        .await["createConnection"]
        .clone();
    assert_eq!(created["status"], "HEALTHY", "{created}");
    assert_eq!(created["permissions"]["canWithdraw"], false, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let tested = api
        .ok(
            "mutation($id: ID!) { testConnection(id: $id) { ok error { code } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(tested["testConnection"]["ok"], true, "{tested}");
    let diagnosis = api
        .ok(
            "mutation($id: ID!) { diagnoseConnection(id: $id) { ok steps { name status detail } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(diagnosis["diagnoseConnection"]["ok"], true, "{diagnosis}");
    id
}

/// rotateKeys to working credentials; the connection stays healthy.
async fn rotate(api: &mut Api, id: &str, creds: Value) {
    let rotated = api
        .ok(
            &format!(
                "mutation($id: ID!, $c: CredentialsInput!) {{ rotateKeys(id: $id, credentials: $c) {{ {FIELDS} }} }}"
            ),
            json!({ "id": id, "c": creds }),
        )
        .await["rotateKeys"]
        .clone();
    assert_eq!(rotated["status"], "HEALTHY", "{rotated}");
}

/// testConnection after the exchange dropped the key: a hard failure.
async fn fails_with(api: &mut Api, id: &str, code: &str) {
    let tested = api
        .ok(
            "mutation($id: ID!) { testConnection(id: $id) { ok error { code message hint } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(tested["testConnection"]["ok"], false, "{tested}");
    assert_eq!(tested["testConnection"]["error"]["code"], code, "{tested}");
    let status = api
        .ok(
            "query($id: ID!) { connection(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(status["connection"]["status"], "FAILING", "{status}");
}

/// revokeConnection, then the connection reads back revoked.
async fn revoke(api: &mut Api, id: &str) {
    let revoked = api
        .ok(
            "mutation($id: ID!) { revokeConnection(id: $id, reason: \"done\") { status revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(revoked["revokeConnection"]["status"], "REVOKED", "{revoked}");
    let (_, errors) = api
        .call(
            "mutation($id: ID!) { testConnection(id: $id) { ok } }",
            json!({ "id": id }),
        )
        .await;
    assert!(!errors.is_null(), "a revoked connection cannot be tested");
}

async fn binance(api: &mut Api, mocks: &Mocks<'_>, canaries: &mut Canaries) {
    let (key1, secret1) = (format!("bnA{}", "k".repeat(61)), binance_secret("bn1"));
    let (key2, secret2) = (format!("bnB{}", "k".repeat(61)), binance_secret("bn2"));
    mocks.binance.add_hmac_key(&key1, &secret1, MockPermissions::default());
    mocks.binance.add_hmac_key(&key2, &secret2, MockPermissions::default());
    canaries.add(&secret1);
    canaries.add(&secret2);
    let id = connect(api, credentials("BINANCE", &key1, &secret1)).await;
    rotate(api, &id, credentials("BINANCE", &key2, &secret2)).await;
    mocks.binance.remove_key(&key2);
    fails_with(api, &id, "INVALID_CREDENTIALS").await;
    revoke(api, &id).await;
}

async fn coinbase(api: &mut Api, mocks: &Mocks<'_>, canaries: &mut Canaries) {
    let (name1, ec) = (cdp_key_name(), EcTestKey::generate());
    let (name2, ed) = (cdp_key_name(), Ed25519TestKey::generate());
    mocks.coinbase.add_ec_key(&name1, &ec.public_key, MockScopes::default());
    mocks
        .coinbase
        .add_ed25519_key(&name2, &ed.public_key, MockScopes::default());
    canaries.add_pem(&ec.sec1_pem);
    canaries.add(&ed.base64_64);
    // Pasted from the key's JSON file, with literal `\n`s.
    let id = connect(api, credentials("COINBASE", &name1, &ec.escaped_pem())).await;
    rotate(api, &id, credentials("COINBASE", &name2, &ed.base64_64)).await;
    mocks.coinbase.remove_key(&name2);
    fails_with(api, &id, "INVALID_CREDENTIALS").await;
    revoke(api, &id).await;
}

async fn kraken(api: &mut Api, mocks: &Mocks<'_>, canaries: &mut Canaries) {
    let key1 = format!("KrakenOne{}", "A".repeat(47));
    let key2 = format!("KrakenTwo{}", "B".repeat(47));
    let (secret1, secret2) = (kraken_secret("k1"), kraken_secret("k2"));
    mocks.kraken.add_key(&key1, &secret1, MockKrakenPerms::default());
    mocks.kraken.add_key(&key2, &secret2, MockKrakenPerms::default());
    for tag in ["k1", "k2"] {
        canaries.add(&kraken_secret(tag));
        canaries.add(&kraken_raw(tag));
    }
    let id = connect(api, credentials("KRAKEN", &key1, &secret1)).await;
    rotate(api, &id, credentials("KRAKEN", &key2, &secret2)).await;
    mocks.kraken.remove_key(&key2);
    fails_with(api, &id, "INVALID_CREDENTIALS").await;
    revoke(api, &id).await;
}

async fn kite(api: &mut Api, mocks: &Mocks<'_>, canaries: &mut Canaries) {
    let (key, secret) = ("kiteflowkey", "kitesecretCANARY0000000000000001");
    mocks.kite.add_app(key, secret);
    canaries.add(secret);
    let created = api
        .ok(
            "mutation($i: CreateConnectionInput!) { createConnection(input: $i) { id status } }",
            json!({ "i": { "label": "Zerodha", "credentials": credentials("ZERODHA", key, secret) } }),
        )
        .await["createConnection"]
        .clone();
    assert_eq!(created["status"], "NEEDS_REAUTH", "waits for its daily login");
    let id = created["id"].as_str().unwrap().to_string();
    let begin = api
        .ok(
            "mutation($id: ID!) { beginKiteLogin(connectionId: $id) { state } }",
            json!({ "id": id }),
        )
        .await;
    let state = begin["beginKiteLogin"]["state"].as_str().unwrap().to_string();
    let request_token = mocks.kite.issue_request_token(key);
    canaries.add(&request_token);
    let done = api
        .ok(
            "mutation($s: String!, $t: String!) { completeKiteLogin(state: $s, requestToken: $t) { status } }",
            json!({ "s": state, "t": request_token }),
        )
        .await;
    assert_eq!(done["completeKiteLogin"]["status"], "HEALTHY", "{done}");
    let tested = api
        .ok(
            "mutation($id: ID!) { testConnection(id: $id) { ok } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(tested["testConnection"]["ok"], true, "{tested}");
    // The session token the service was given travels only in its Authorization header.
    for request in mocks.kite.requests() {
        if let Some((_, access_token)) = request.authorization.as_deref().and_then(|a| a.rsplit_once(':')) {
            canaries.add(access_token);
        }
    }
    // The day's session ends: the next test asks the user to log in again.
    mocks.kite.expire_sessions();
    let tested = api
        .ok(
            "mutation($id: ID!) { testConnection(id: $id) { ok error { code } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(tested["testConnection"]["error"]["code"], "TOKEN_EXPIRED", "{tested}");
    revoke(api, &id).await;
}

async fn all_four_exchanges(backend: Backend) {
    // One user drives every exchange: more tests than the per-user allowance.
    let app = TestApp::spawn_with(backend, |s| {
        s.exchange_tests_per_minute = 600;
        s.exchange_tests_burst = 100;
    })
    .await;
    let mut api = Api::new(&app.base_url, app.token_for(Uuid::new_v4()));
    let mocks = Mocks {
        binance: &app.binance,
        coinbase: &app.coinbase,
        kraken: &app.kraken,
        kite: &app.kite,
    };
    let canaries = every_exchange(&mut api, &mocks).await;
    assert!(canaries.0.len() >= 8, "the flow used the secrets it should");

    let connections = api
        .ok("{ connections(includeRevoked: true) { exchange status } }", json!({}))
        .await["connections"]
        .clone();
    let exchanges: Vec<&str> = connections
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["status"], "REVOKED", "{c}");
            c["exchange"].as_str().unwrap()
        })
        .collect();
    for exchange in ["BINANCE", "COINBASE", "KRAKEN", "ZERODHA"] {
        assert!(exchanges.contains(&exchange), "{exchange} in {exchanges:?}");
    }
    let audit = api.ok("{ auditLog(first: 200) { nodes { action } } }", json!({})).await["auditLog"].to_string();
    for (action, times) in [
        ("connection.created", 4),
        ("connection.revoked", 4),
        // Kite keys change by logging in again, not by rotation.
        ("connection.rotated", 3),
        ("connection.kite_login_completed", 1),
        // Three rotations within the hour by one user.
        ("security.alert", 1),
    ] {
        assert_eq!(audit.matches(action).count(), times, "{action}: {audit}");
    }
}

on_both_backends!(all_four_exchanges);
