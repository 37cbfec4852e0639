//! Picks the client for an exchange at run time, from a database row.

use super::ExchangeClient;
use super::binance::BinanceClient;
use super::budget::KrakenTier;
use super::coinbase::CoinbaseClient;
use super::kite::KiteClient;
use super::kraken::KrakenClient;
use super::shared::{BudgetStore, memory::MemoryStore};
use crate::domain::Exchange;
use std::collections::HashMap;
use std::sync::Arc;
use url::Url;

/// Base URLs (scheme, host, port; no path) per exchange and environment.
#[derive(Debug, Clone)]
pub struct ExchangeEndpoints {
    pub binance: Url,
    pub binance_testnet: Url,
    pub coinbase: Url,
    pub kraken: Url,
    pub kite: Url,
    pub kite_login: Url,
}

impl Default for ExchangeEndpoints {
    fn default() -> Self {
        let url = |s: &str| Url::parse(s).expect("static URL");
        Self {
            binance: url("https://api.binance.com"),
            binance_testnet: url("https://testnet.binance.vision"),
            coinbase: url("https://api.coinbase.com"),
            kraken: url("https://api.kraken.com"),
            kite: url("https://api.kite.trade"),
            kite_login: url("https://kite.zerodha.com/connect/login"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{exchange} is not yet supported by this service; only {supported} can be connected today")]
pub struct UnsupportedExchange {
    pub exchange: Exchange,
    pub supported: String,
}

/// The clients this build supports.
#[derive(Clone)]
pub struct ExchangeRegistry {
    clients: HashMap<Exchange, Arc<dyn ExchangeClient>>,
    /// Kite's login steps are not part of the common trait.
    kite: Arc<KiteClient>,
}

impl ExchangeRegistry {
    /// Clients whose budgets are kept in this process only.
    pub fn new(endpoints: &ExchangeEndpoints, http: reqwest::Client, egress_ips: &[String]) -> Self {
        Self::with_store(
            endpoints,
            http,
            egress_ips,
            Arc::new(MemoryStore::new()),
            KrakenTier::default(),
        )
    }

    /// Clients sharing `store` for rate budgets, held `Retry-After`s, Kraken
    /// nonces and Kraken's lockout memory (Redis for several replicas).
    pub fn with_store(
        endpoints: &ExchangeEndpoints,
        http: reqwest::Client,
        egress_ips: &[String],
        store: Arc<dyn BudgetStore>,
        kraken_tier: KrakenTier,
    ) -> Self {
        let mut clients: HashMap<Exchange, Arc<dyn ExchangeClient>> = HashMap::new();
        let kite = Arc::new(
            KiteClient::new(http.clone(), endpoints.kite.clone(), endpoints.kite_login.clone())
                .with_egress_ips(egress_ips.to_vec())
                .with_budget_store(store.clone()),
        );
        clients.insert(Exchange::Zerodha, kite.clone());
        clients.insert(
            Exchange::Coinbase,
            Arc::new(
                CoinbaseClient::new(http.clone(), endpoints.coinbase.clone())
                    .with_egress_ips(egress_ips.to_vec())
                    .with_budget_store(store.clone()),
            ),
        );
        clients.insert(
            Exchange::Kraken,
            Arc::new(
                KrakenClient::new(http.clone(), endpoints.kraken.clone())
                    .with_egress_ips(egress_ips.to_vec())
                    .with_budget_store(store.clone())
                    .with_tier(kraken_tier),
            ),
        );
        clients.insert(
            Exchange::Binance,
            Arc::new(
                BinanceClient::new(http, endpoints.binance.clone(), endpoints.binance_testnet.clone())
                    .with_egress_ips(egress_ips.to_vec())
                    .with_budget_store(store),
            ),
        );
        Self { clients, kite }
    }

    /// The Zerodha Kite client, for its login steps.
    pub fn kite(&self) -> Option<Arc<KiteClient>> {
        Some(self.kite.clone())
    }

    pub fn get(&self, exchange: Exchange) -> Result<Arc<dyn ExchangeClient>, UnsupportedExchange> {
        self.clients.get(&exchange).cloned().ok_or_else(|| UnsupportedExchange {
            exchange,
            supported: self
                .supported()
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    pub fn supported(&self) -> Vec<Exchange> {
        Exchange::ALL
            .iter()
            .copied()
            .filter(|e| self.clients.contains_key(e))
            .collect()
    }
}
