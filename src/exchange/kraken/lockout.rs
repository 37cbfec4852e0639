//! Lockout protection. Kraken locks an account out (about 15 minutes) after
//! repeated rejected keys, signatures or nonces, so this client remembers:
//! - API keys Kraken does not know (`EAPI:Invalid key`): not sent again,
//!   whatever the secret, until [`FailureMemory::forget`] is called;
//! - secrets Kraken rejected for a key (bad signature, two-factor password):
//!   not sent again with that key, while a corrected secret is tried;
//! - waits Kraken imposed on a key (lockout, throttling): no call with the key
//!   before they end.
//!
//! Keys are remembered by [`KeyId`] (SHA-256 of the API key); secrets and
//! two-factor passwords only as a keyed digest under a random per-process
//! key, so a rejected secret is recognised without being kept.

use super::classify::KrakenError;
use super::nonce::KeyId;
use crate::domain::ExchangeErrorCode;
use crate::exchange::{Credentials, ExchangeError};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use zeroize::Zeroizing;

/// Beyond this many remembered keys, the oldest knowledge is the least useful.
const MAX_ENTRIES: usize = 10_000;
/// Rejected secrets remembered per key; a user rarely tries more.
const MAX_SECRETS_PER_KEY: usize = 4;

/// Identifies the secret half of a credential (private key and two-factor
/// password) without holding it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

#[derive(Default)]
struct Entry {
    unknown_key: Option<ExchangeError>,
    rejected_secrets: Vec<(SecretDigest, ExchangeError)>,
    cooldown: Option<(Instant, ExchangeError)>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.unknown_key.is_none() && self.rejected_secrets.is_empty() && self.cooldown.is_none()
    }

    fn matters_at(&self, now: Instant) -> bool {
        self.unknown_key.is_some()
            || !self.rejected_secrets.is_empty()
            || self.cooldown.as_ref().is_some_and(|(until, _)| *until > now)
    }
}

pub struct FailureMemory {
    digest_key: Zeroizing<[u8; 32]>,
    entries: Mutex<HashMap<KeyId, Entry>>,
}

impl Default for FailureMemory {
    fn default() -> Self {
        Self {
            digest_key: Zeroizing::new(rand::random()),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl FailureMemory {
    pub fn digest(&self, credentials: &Credentials) -> SecretDigest {
        // HMAC takes keys of any length, so this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.digest_key[..]) else {
            return SecretDigest([0; 32]);
        };
        mac.update(credentials.api_secret.expose().as_bytes());
        match credentials.passphrase.as_ref().filter(|p| !p.is_empty()) {
            Some(otp) => {
                mac.update(&[1]);
                mac.update(otp.expose().as_bytes());
            }
            None => mac.update(&[0]),
        }
        SecretDigest(mac.finalize().into_bytes().into())
    }

    /// The remembered error if a call with these credentials must not be made now.
    pub fn check(&self, key: &KeyId, secret: &SecretDigest, now: Instant) -> Result<(), ExchangeError> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(key) else {
            return Ok(());
        };
        if let Some(error) = &entry.unknown_key {
            return Err(error.clone());
        }
        if let Some((_, error)) = entry.rejected_secrets.iter().find(|(s, _)| s == secret) {
            return Err(error.clone());
        }
        if let Some((until, error)) = &entry.cooldown {
            if *until > now {
                return Err(error.clone().with_retry_after(Some(*until - now)));
            }
            entry.cooldown = None;
        }
        if entry.is_empty() {
            entries.remove(key);
        }
        Ok(())
    }

    /// Remembers a failed call's error if it should stop the next calls.
    pub fn record(
        &self,
        key: &KeyId,
        secret: &SecretDigest,
        error: &ExchangeError,
        kraken: Option<KrakenError>,
        now: Instant,
    ) {
        let rejected = error.code == ExchangeErrorCode::InvalidCredentials;
        let wait = error
            .retry_after
            .filter(|_| error.code == ExchangeErrorCode::RateLimited);
        if !rejected && wait.is_none() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(key) {
            entries.retain(|_, e| e.matters_at(now));
            if entries.len() >= MAX_ENTRIES
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        let entry = entries.entry(*key).or_default();
        if rejected && kraken == Some(KrakenError::InvalidKey) {
            entry.unknown_key = Some(error.clone());
        } else if rejected {
            entry.rejected_secrets.retain(|(s, _)| s != secret);
            if entry.rejected_secrets.len() >= MAX_SECRETS_PER_KEY {
                entry.rejected_secrets.remove(0);
            }
            entry.rejected_secrets.push((*secret, error.clone()));
        }
        if let Some(wait) = wait {
            entry.cooldown = Some((now + wait, error.clone()));
        }
    }

    /// Lets the key be tried again (the user says they fixed it).
    pub fn forget(&self, key: &KeyId) {
        self.lock().remove(key);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<KeyId, Entry>> {
        // A panic elsewhere must not stop every later Kraken call.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;
    use std::time::Duration;

    fn creds(secret: &str, otp: Option<&str>) -> Credentials {
        Credentials {
            api_key: SecretString::new("key"),
            api_secret: SecretString::new(secret),
            passphrase: otp.map(SecretString::new),
            access_token: None,
        }
    }

    fn invalid() -> ExchangeError {
        ExchangeError::new(ExchangeErrorCode::InvalidCredentials, "rejected")
    }

    #[test]
    fn an_unknown_key_is_refused_whatever_the_secret_until_forgotten() {
        let memory = FailureMemory::default();
        let key = KeyId::of("key");
        let bad = memory.digest(&creds("secret-1", None));
        let now = Instant::now();
        assert_eq!(memory.check(&key, &bad, now), Ok(()));
        memory.record(&key, &bad, &invalid(), Some(KrakenError::InvalidKey), now);
        assert_eq!(memory.check(&key, &bad, now), Err(invalid()));
        assert_eq!(
            memory.check(&key, &bad, now + Duration::from_secs(86_400)),
            Err(invalid())
        );
        let other_secret = memory.digest(&creds("secret-2", None));
        assert_eq!(memory.check(&key, &other_secret, now), Err(invalid()));
        // Another key is not affected.
        assert_eq!(memory.check(&KeyId::of("other"), &bad, now), Ok(()));
        memory.forget(&key);
        assert_eq!(memory.check(&key, &bad, now), Ok(()));
    }

    #[test]
    fn a_rejected_secret_is_refused_but_a_corrected_one_is_tried() {
        let memory = FailureMemory::default();
        let key = KeyId::of("key");
        let bad = memory.digest(&creds("secret-1", None));
        let now = Instant::now();
        memory.record(&key, &bad, &invalid(), Some(KrakenError::InvalidSignature), now);
        assert_eq!(memory.check(&key, &bad, now), Err(invalid()));
        let fixed = memory.digest(&creds("secret-2", None));
        assert_eq!(memory.check(&key, &fixed, now), Ok(()));
        let with_otp = memory.digest(&creds("secret-1", Some("pw")));
        assert_eq!(memory.check(&key, &with_otp, now), Ok(()));
        // Trying another secret does not clear the rejected one.
        assert_eq!(memory.check(&key, &bad, now), Err(invalid()));
        memory.forget(&key);
        assert_eq!(memory.check(&key, &bad, now), Ok(()));

        // Only the last few rejected secrets are kept.
        let digests: Vec<_> = (0..MAX_SECRETS_PER_KEY + 1)
            .map(|i| memory.digest(&creds(&format!("s{i}"), None)))
            .collect();
        for d in &digests {
            memory.record(&key, d, &invalid(), None, now);
        }
        assert_eq!(memory.check(&key, &digests[0], now), Ok(()));
        assert!(digests[1..].iter().all(|d| memory.check(&key, d, now).is_err()));
    }

    #[test]
    fn digests_depend_on_secret_otp_and_process() {
        let memory = FailureMemory::default();
        let d = |s, o| memory.digest(&creds(s, o)).0;
        assert_eq!(d("s", None), d("s", None));
        assert_eq!(d("s", None), d("s", Some("")), "an empty passphrase is no passphrase");
        assert_ne!(d("s", None), d("t", None));
        assert_ne!(d("s", None), d("s", Some("x")));
        assert_ne!(d("s", Some("x")), d("s", Some("y")));
        assert_ne!(d("s", None), FailureMemory::default().digest(&creds("s", None)).0);
    }

    #[test]
    fn imposed_waits_refuse_calls_until_they_end() {
        let memory = FailureMemory::default();
        let key = KeyId::of("key");
        let secret = memory.digest(&creds("s", None));
        let now = Instant::now();
        let lockout = ExchangeError::new(ExchangeErrorCode::RateLimited, "locked out")
            .with_retry_after(Some(Duration::from_secs(900)));
        memory.record(&key, &secret, &lockout, Some(KrakenError::TemporaryLockout), now);
        let refused = memory.check(&key, &secret, now + Duration::from_secs(600)).unwrap_err();
        assert_eq!(refused.message, "locked out");
        assert_eq!(refused.retry_after, Some(Duration::from_secs(300)));
        // Whatever the secret: the wait is the key's.
        let other = memory.digest(&creds("t", None));
        assert!(memory.check(&key, &other, now).is_err());
        assert_eq!(memory.check(&key, &secret, now + Duration::from_secs(900)), Ok(()));
        assert!(memory.lock().is_empty(), "expired entries are dropped");
    }

    #[test]
    fn other_failures_are_not_remembered() {
        let memory = FailureMemory::default();
        let key = KeyId::of("key");
        let secret = memory.digest(&creds("s", None));
        let now = Instant::now();
        for error in [
            ExchangeError::new(ExchangeErrorCode::RateLimited, "no wait given"),
            ExchangeError::new(ExchangeErrorCode::InvalidNonce, "nonce"),
            ExchangeError::new(ExchangeErrorCode::PermissionDenied, "denied"),
            ExchangeError::new(ExchangeErrorCode::ExchangeUnavailable, "down")
                .with_retry_after(Some(Duration::from_secs(5))),
        ] {
            memory.record(&key, &secret, &error, None, now);
            assert_eq!(memory.check(&key, &secret, now), Ok(()), "{error}");
        }
    }

    #[test]
    fn memory_is_bounded() {
        let memory = FailureMemory::default();
        let secret = memory.digest(&creds("s", None));
        let now = Instant::now();
        for i in 0..MAX_ENTRIES + 5 {
            memory.record(&KeyId::of(&i.to_string()), &secret, &invalid(), None, now);
        }
        assert_eq!(memory.lock().len(), MAX_ENTRIES);
        // The newest is always kept.
        let newest = KeyId::of(&(MAX_ENTRIES + 4).to_string());
        assert!(memory.check(&newest, &secret, now).is_err());
    }
}
