//! INTERFACE STUB — Binance Spot client.
use crate::domain::{Environment, Exchange};
use crate::exchange::{CredentialShapeError, Credentials, ExchangeClient, ExchangeError, TestReport};
use url::Url;

pub struct BinanceClient;

impl BinanceClient {
    pub fn new(_http: reqwest::Client, _production: Url, _testnet: Url) -> Self {
        Self
    }
}

#[async_trait::async_trait]
impl ExchangeClient for BinanceClient {
    fn exchange(&self) -> Exchange {
        Exchange::Binance
    }
    fn check_credentials(
        &self,
        _environment: Environment,
        _credentials: &Credentials,
    ) -> Result<(), CredentialShapeError> {
        unimplemented!()
    }
    async fn test(&self, _environment: Environment, _credentials: &Credentials) -> Result<TestReport, ExchangeError> {
        unimplemented!()
    }
}
