//! `exchanges` and `egressIps`: what each exchange needs from the user, its
//! IP-whitelist rules and documentation, so the frontend's wizard is data-driven.

use crate::domain::{Environment, Exchange};
use async_graphql::SimpleObject;

#[derive(Debug, Clone, SimpleObject)]
pub struct CredentialField {
    /// The `CredentialsInput` field this maps to.
    pub name: &'static str,
    /// What the exchange calls it.
    pub label: &'static str,
    pub required: bool,
    pub secret: bool,
    pub help: &'static str,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct ExchangeInfo {
    pub exchange: Exchange,
    pub name: &'static str,
    /// False until this service can connect the exchange.
    pub supported: bool,
    pub environments: Vec<Environment>,
    pub credential_fields: Vec<CredentialField>,
    /// How to restrict the key to the service's egress IPs.
    pub ip_whitelist: &'static str,
    /// The permissions to grant (and not to grant).
    pub recommended_permissions: &'static str,
    pub docs_url: &'static str,
}

const API_KEY: &str = "apiKey";
const API_SECRET: &str = "apiSecret";

pub fn exchange_infos(supported: &[Exchange]) -> Vec<ExchangeInfo> {
    let is = |e: Exchange| supported.contains(&e);
    vec![
        ExchangeInfo {
            exchange: Exchange::Binance,
            name: "Binance",
            supported: is(Exchange::Binance),
            environments: vec![Environment::Production, Environment::Testnet],
            credential_fields: vec![
                CredentialField {
                    name: API_KEY,
                    label: "API Key",
                    required: true,
                    secret: false,
                    help: "64 letters and digits",
                },
                CredentialField {
                    name: API_SECRET,
                    label: "Secret Key",
                    required: true,
                    secret: true,
                    help: "the Ed25519 or RSA private key (PKCS#8 PEM) you registered the key with, or the HMAC secret shown once when the key was created",
                },
            ],
            ip_whitelist: "Edit the key under API Management, choose \"Restrict access to trusted IPs only\" and add every egress IP. Without it, spot trading permission lapses after 30 days.",
            recommended_permissions: "Enable Reading and Enable Spot & Margin Trading only; never Enable Withdrawals.",
            docs_url: "https://www.binance.com/en/support/faq/how-to-create-api-keys-on-binance-360002502072",
        },
        ExchangeInfo {
            exchange: Exchange::Coinbase,
            name: "Coinbase Advanced Trade",
            supported: is(Exchange::Coinbase),
            environments: vec![Environment::Production],
            credential_fields: vec![
                CredentialField {
                    name: API_KEY,
                    label: "API key name",
                    required: true,
                    secret: false,
                    help: "organizations/{org}/apiKeys/{id} or the key id",
                },
                CredentialField {
                    name: API_SECRET,
                    label: "Private key",
                    required: true,
                    secret: true,
                    help: "the EC private key (PEM) or Ed25519 key (base64)",
                },
            ],
            ip_whitelist: "Optional when creating the CDP key: add every egress IP under IP allowlist.",
            recommended_permissions: "View and Trade; never Transfer.",
            docs_url: "https://docs.cdp.coinbase.com/coinbase-app/authentication-authorization/api-key-authentication",
        },
        ExchangeInfo {
            exchange: Exchange::Kraken,
            name: "Kraken",
            supported: is(Exchange::Kraken),
            environments: vec![Environment::Production],
            credential_fields: vec![
                CredentialField {
                    name: API_KEY,
                    label: "API Key",
                    required: true,
                    secret: false,
                    help: "the public key",
                },
                CredentialField {
                    name: API_SECRET,
                    label: "Private Key",
                    required: true,
                    secret: true,
                    help: "base64, shown once",
                },
            ],
            ip_whitelist: "Optional: under the key's advanced settings, add every egress IP to the IP allowlist.",
            recommended_permissions: "Query Funds, Query Open/Closed Orders & Trades, Create & Modify Orders, Cancel/Close Orders; never Withdraw Funds.",
            docs_url: "https://support.kraken.com/hc/en-us/articles/360000919966-How-to-create-an-API-key",
        },
        ExchangeInfo {
            exchange: Exchange::Zerodha,
            name: "Zerodha Kite Connect",
            supported: is(Exchange::Zerodha),
            environments: vec![Environment::Production],
            credential_fields: vec![
                CredentialField {
                    name: API_KEY,
                    label: "API key",
                    required: true,
                    secret: false,
                    help: "from the Kite Connect developer console",
                },
                CredentialField {
                    name: API_SECRET,
                    label: "API secret",
                    required: true,
                    secret: true,
                    help: "from the Kite Connect developer console; a daily login follows",
                },
            ],
            ip_whitelist: "Developer console → Profile → IP Whitelist: register the primary egress IP (required for order placement since April 2026).",
            recommended_permissions: "Kite has no per-key scopes; the session expires daily at 06:00 IST.",
            docs_url: "https://kite.trade/docs/connect/v3/user/",
        },
    ]
}
