//! Exchange clients behind one trait: validate a credential's shape, sign and
//! send the test call, classify the exchange's errors into
//! [`ExchangeErrorCode`]s with a hint for the user, read the key's
//! permissions, report rate-limit usage. No database and no GraphQL in here.

pub mod binance;
pub mod budget;
pub mod call;
pub mod coinbase;
pub mod common;
mod error;
pub mod kite;
pub mod kraken;
mod registry;
pub mod shared;

use crate::crypto::SecretString;
use crate::domain::{Environment, Exchange, Permissions};
use std::time::Duration;

pub use error::{CredentialShapeError, ExchangeError};
pub use registry::{ExchangeEndpoints, ExchangeRegistry, UnsupportedExchange};

/// Credentials as the user pasted them. Only ever in memory.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub api_key: SecretString,
    pub api_secret: SecretString,
    pub passphrase: Option<SecretString>,
    /// A session token from an interactive login (Zerodha Kite), when the exchange needs one.
    pub access_token: Option<SecretString>,
}

/// What a successful test call learned.
#[derive(Debug, Clone, PartialEq)]
pub struct TestReport {
    pub latency: Duration,
    pub permissions: Permissions,
    /// Rate-limit usage reported by the exchange, when it tells.
    pub usage: Option<RateUsage>,
    /// Things the user should fix although the key works (e.g. no IP restriction).
    pub warnings: Vec<String>,
}

/// Rate-limit consumption the exchange reported on its last response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateUsage {
    /// e.g. Binance `X-MBX-USED-WEIGHT-1M`.
    pub weight_used: u32,
    pub weight_limit: u32,
}

/// One exchange's client. Implementations are cheap to share (`Arc<dyn>`).
#[async_trait::async_trait]
pub trait ExchangeClient: Send + Sync {
    fn exchange(&self) -> Exchange;

    /// Checks the credential's shape without calling the exchange. The error
    /// names the offending input field (`apiKey`, `apiSecret`, `passphrase`,
    /// `environment`).
    fn check_credentials(
        &self,
        environment: Environment,
        credentials: &Credentials,
    ) -> Result<(), CredentialShapeError>;

    /// Makes the signed test call and reads the key's permissions.
    async fn test(&self, environment: Environment, credentials: &Credentials) -> Result<TestReport, ExchangeError>;

    /// The user acted on a key (a manual test, a rotation): forget any
    /// remembered refusal that stops calls with it (Kraken's lockout guard).
    fn forget_failure(&self, _api_key: &SecretString) {}

    /// True when keys work only after an interactive login (Zerodha Kite):
    /// such connections are saved untested and wait in `NEEDS_REAUTH`.
    fn requires_login(&self) -> bool {
        false
    }

    /// The exchange's clock from a public, unsigned endpoint (reachability
    /// and clock skew for diagnosis). `Ok(None)` when the exchange has none.
    async fn server_time(
        &self,
        _environment: Environment,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, ExchangeError> {
        Ok(None)
    }
}
