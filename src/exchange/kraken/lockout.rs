//! Lockout protection. Kraken locks an account out (about 15 minutes) after
//! repeated rejected keys, signatures or nonces, so every replica remembers,
//! in the shared [`BudgetStore`]:
//! - API keys Kraken does not know (`EAPI:Invalid key`): not sent again,
//!   whatever the secret, until [`FailureMemory::forget`] is called;
//! - secrets Kraken rejected for a key (bad signature, two-factor password):
//!   not sent again with that key, while a corrected secret is tried.
//!
//! Waits Kraken imposed (lockout, throttling, `Retry-After`) are holds on the
//! key's budget (see `call`), which `forget` does not lift: the user acting
//! does not end Kraken's lockout, and calling during it would extend it.
//!
//! Keys are remembered by [`KeyId`] (SHA-256 of the API key); secrets and
//! two-factor passwords only as a SHA-256 digest (of a 64-byte random private
//! key, so not reversible), so a rejected secret is recognised in any replica
//! without being kept.

use super::classify::KrakenError;
use super::nonce::KeyId;
use crate::domain::ExchangeErrorCode;
use crate::exchange::budget::store_unavailable;
use crate::exchange::shared::BudgetStore;
use crate::exchange::{Credentials, ExchangeError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a rejection is remembered without the user acting.
const REMEMBER_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest a check waits for a `forget` still being written.
const FORGET_WAIT: Duration = Duration::from_secs(2);
const UNKNOWN_KEY: &str = "unknown-key";

/// Identifies the secret half of a credential (private key and two-factor
/// password) without holding it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    fn field(&self) -> String {
        format!("secret:{}", hex::encode(self.0))
    }
}

/// The part of a remembered error that is replayed.
#[derive(Serialize, Deserialize)]
struct Remembered {
    code: ExchangeErrorCode,
    message: String,
    hint: Option<String>,
}

/// Forgets in flight, per key: a check waits for them, so a test made right
/// after the user acts is not refused by what they just cleared.
type Pending = Mutex<HashMap<KeyId, Arc<tokio::sync::Mutex<()>>>>;

pub struct FailureMemory {
    store: Arc<dyn BudgetStore>,
    pending: Arc<Pending>,
}

impl FailureMemory {
    pub fn new(store: Arc<dyn BudgetStore>) -> Self {
        Self {
            store,
            pending: Arc::default(),
        }
    }

    pub fn digest(&self, credentials: &Credentials) -> SecretDigest {
        let mut hash = Sha256::new();
        hash.update(b"kraken-rejected-secret\0");
        hash.update(credentials.api_secret.expose().as_bytes());
        match credentials.passphrase.as_ref().filter(|p| !p.is_empty()) {
            Some(otp) => {
                hash.update([1]);
                hash.update(otp.expose().as_bytes());
            }
            None => hash.update([0]),
        }
        SecretDigest(hash.finalize().into())
    }

    fn scope(key: &KeyId) -> String {
        format!("kraken:key:{}", key.short_hex())
    }

    /// The remembered error if a call with these credentials must not be
    /// made. An unreachable store refuses too: the call is not safe to make.
    pub async fn check(&self, key: &KeyId, secret: &SecretDigest) -> Result<(), ExchangeError> {
        let pending = self.lock_pending().get(key).cloned();
        if let Some(pending) = pending {
            let _ = tokio::time::timeout(FORGET_WAIT, pending.lock()).await;
        }
        let secret_field = secret.field();
        let remembered = self
            .store
            .recall(&Self::scope(key), &[UNKNOWN_KEY, &secret_field])
            .await
            .map_err(|e| store_unavailable("kraken", &e))?;
        match remembered.into_iter().flatten().next() {
            None => Ok(()),
            Some(stored) => Err(serde_json::from_str::<Remembered>(&stored).map_or_else(
                |_| ExchangeError::new(ExchangeErrorCode::InvalidCredentials, "Kraken rejected this key before"),
                |r| {
                    let error = ExchangeError::new(r.code, r.message);
                    match r.hint {
                        Some(hint) => error.with_hint(hint),
                        None => error,
                    }
                },
            )),
        }
    }

    /// Remembers a rejected key or secret so it is not sent again.
    pub async fn record(&self, key: &KeyId, secret: &SecretDigest, error: &ExchangeError, kraken: Option<KrakenError>) {
        if error.code != ExchangeErrorCode::InvalidCredentials {
            return;
        }
        let field = match kraken {
            Some(KrakenError::InvalidKey) => UNKNOWN_KEY.to_owned(),
            _ => secret.field(),
        };
        let remembered = Remembered {
            code: error.code,
            message: error.message.clone(),
            hint: error.hint.clone(),
        };
        let Ok(value) = serde_json::to_string(&remembered) else {
            return;
        };
        if let Err(e) = self
            .store
            .remember(&Self::scope(key), &field, &value, REMEMBER_FOR)
            .await
        {
            tracing::warn!(error = %e, "could not remember a key Kraken rejected");
        }
    }

    /// Lets the key be tried again (the user says they fixed it). Completes
    /// in the background; checks of this key wait for it.
    pub fn forget(&self, key: &KeyId) {
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let Ok(guard) = gate.clone().try_lock_owned() else {
            return;
        };
        self.lock_pending().insert(*key, gate.clone());
        let (store, pending, key) = (self.store.clone(), self.pending.clone(), *key);
        let work = async move {
            if let Err(e) = store.forget(&Self::scope(&key)).await {
                tracing::warn!(error = %e, "could not forget a key Kraken rejected");
            }
            let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.get(&key).is_some_and(|current| Arc::ptr_eq(current, &gate)) {
                pending.remove(&key);
            }
            drop(guard);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(work);
            }
            Err(_) => tracing::warn!("no runtime to forget a key Kraken rejected"),
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, Arc<tokio::sync::Mutex<()>>>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;
    use crate::exchange::shared::memory::MemoryStore;

    fn creds(secret: &str, otp: Option<&str>) -> Credentials {
        Credentials {
            api_key: SecretString::new("key"),
            api_secret: SecretString::new(secret),
            passphrase: otp.map(SecretString::new),
            access_token: None,
        }
    }

    fn invalid() -> ExchangeError {
        ExchangeError::new(ExchangeErrorCode::InvalidCredentials, "rejected").with_hint("fix it")
    }

    fn memory() -> FailureMemory {
        FailureMemory::new(Arc::new(MemoryStore::new()))
    }

    #[tokio::test]
    async fn an_unknown_key_is_refused_whatever_the_secret_until_forgotten() {
        let memory = memory();
        let key = KeyId::of("key");
        let bad = memory.digest(&creds("secret-1", None));
        assert_eq!(memory.check(&key, &bad).await, Ok(()));
        memory
            .record(&key, &bad, &invalid(), Some(KrakenError::InvalidKey))
            .await;
        assert_eq!(memory.check(&key, &bad).await, Err(invalid()));
        let other_secret = memory.digest(&creds("secret-2", None));
        assert_eq!(memory.check(&key, &other_secret).await, Err(invalid()));
        // Another key is not affected.
        assert_eq!(memory.check(&KeyId::of("other"), &bad).await, Ok(()));
        memory.forget(&key);
        assert_eq!(
            memory.check(&key, &bad).await,
            Ok(()),
            "a check right after forget sees it"
        );
    }

    #[tokio::test]
    async fn a_rejected_secret_is_refused_but_a_corrected_one_is_tried() {
        let memory = memory();
        let key = KeyId::of("key");
        let bad = memory.digest(&creds("secret-1", None));
        memory
            .record(&key, &bad, &invalid(), Some(KrakenError::InvalidSignature))
            .await;
        assert_eq!(memory.check(&key, &bad).await, Err(invalid()));
        let fixed = memory.digest(&creds("secret-2", None));
        assert_eq!(memory.check(&key, &fixed).await, Ok(()));
        let with_otp = memory.digest(&creds("secret-1", Some("pw")));
        assert_eq!(memory.check(&key, &with_otp).await, Ok(()));
        assert_eq!(memory.check(&key, &bad).await, Err(invalid()));
        memory.forget(&key);
        assert_eq!(memory.check(&key, &bad).await, Ok(()));
    }

    #[tokio::test]
    async fn two_memories_on_one_store_share_what_they_learn() {
        let store: Arc<dyn BudgetStore> = Arc::new(MemoryStore::new());
        let (a, b) = (FailureMemory::new(store.clone()), FailureMemory::new(store));
        let key = KeyId::of("key");
        let secret = a.digest(&creds("s", None));
        assert!(secret == b.digest(&creds("s", None)), "digests agree across replicas");
        a.record(&key, &secret, &invalid(), None).await;
        assert_eq!(b.check(&key, &secret).await, Err(invalid()));
        b.forget(&key);
        assert_eq!(b.check(&key, &secret).await, Ok(()));
        assert_eq!(a.check(&key, &secret).await, Ok(()));
    }

    #[test]
    fn digests_depend_on_secret_and_otp() {
        let memory = memory();
        let d = |s, o| memory.digest(&creds(s, o)).0;
        assert_eq!(d("s", None), d("s", None));
        assert_eq!(d("s", None), d("s", Some("")), "an empty passphrase is no passphrase");
        assert_ne!(d("s", None), d("t", None));
        assert_ne!(d("s", None), d("s", Some("x")));
        assert_ne!(d("s", Some("x")), d("s", Some("y")));
    }

    #[tokio::test]
    async fn other_failures_are_not_remembered() {
        let memory = memory();
        let key = KeyId::of("key");
        let secret = memory.digest(&creds("s", None));
        for error in [
            ExchangeError::new(ExchangeErrorCode::RateLimited, "locked out")
                .with_retry_after(Some(Duration::from_secs(900))),
            ExchangeError::new(ExchangeErrorCode::InvalidNonce, "nonce"),
            ExchangeError::new(ExchangeErrorCode::PermissionDenied, "denied"),
            ExchangeError::new(ExchangeErrorCode::ExchangeUnavailable, "down"),
        ] {
            memory.record(&key, &secret, &error, None).await;
            assert_eq!(memory.check(&key, &secret).await, Ok(()), "{error}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_store_refuses_with_a_retryable_error() {
        let store = crate::exchange::shared::connect(Some("redis://127.0.0.1:1")).unwrap();
        let memory = FailureMemory::new(store);
        let key = KeyId::of("key");
        let secret = memory.digest(&creds("s", None));
        let error = memory.check(&key, &secret).await.unwrap_err();
        assert!(error.retryable() && error.message.contains("redis"), "{error}");
    }
}
