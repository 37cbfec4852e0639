//! `KeyRing`: the configured Fernet keys, primary first. Seals secrets under
//! the primary key and opens them with whichever key made them (MultiFernet
//! semantics, no TTL), so keys can be rotated without downtime.

use super::SecretString;
use super::envelope::{self, EnvelopeError, SecretField, SecretOwner};
use super::fingerprint::{FingerprintKey, derive_fingerprint_key, derive_key_id, fingerprint};
use super::keyspec::{KeyRingError, parse_entries};
use base64::{Engine, engine::general_purpose::URL_SAFE};
use fernet::Fernet;
use rand::RngCore;
use std::fmt;
use zeroize::Zeroizing;

/// A Fernet token and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub token: String,
    pub key_id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("no configured encryption key decrypts this secret")]
    NoKeyDecrypts,
    #[error("the stored secret belongs to another owner or field")]
    OwnerMismatch,
    #[error("the stored secret is not a valid envelope")]
    MalformedEnvelope,
}

impl From<EnvelopeError> for CryptoError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Malformed => CryptoError::MalformedEnvelope,
            EnvelopeError::OwnerMismatch => CryptoError::OwnerMismatch,
        }
    }
}

/// One key of the ring. `Fernet` zeroizes its own key bytes on drop; the
/// fingerprint key is `Zeroizing`; the raw key is not kept.
struct RingKey {
    id: String,
    fernet: Fernet,
    fingerprint_key: FingerprintKey,
}

/// The configured keys, primary first; never empty.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl KeyRing {
    /// Parses `spec` (e.g. the `ENCRYPTION_KEYS` setting): comma-separated
    /// Fernet keys, primary first, each optionally `id:KEY`. Errors name
    /// `source_name` and the 1-based position, never a key.
    pub fn parse(spec: &str, source_name: &str) -> Result<KeyRing, KeyRingError> {
        let entries = parse_entries(spec, source_name)?;
        let mut keys: Vec<RingKey> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let position = entry.position;
            if entries[..index].iter().any(|earlier| *earlier.bytes == *entry.bytes) {
                return Err(KeyRingError::Duplicate {
                    source_name: source_name.to_owned(),
                    position,
                });
            }
            let id = entry
                .explicit_id
                .map_or_else(|| derive_key_id(&entry.bytes), str::to_owned);
            if keys.iter().any(|key| key.id == id) {
                return Err(KeyRingError::DuplicateId {
                    source_name: source_name.to_owned(),
                    position,
                });
            }
            let fernet = Fernet::new(entry.encoded).ok_or_else(|| KeyRingError::Malformed {
                source_name: source_name.to_owned(),
                position,
            })?;
            keys.push(RingKey {
                id,
                fernet,
                fingerprint_key: derive_fingerprint_key(&entry.bytes),
            });
        }
        Ok(KeyRing { keys })
    }

    /// A new random Fernet key: urlsafe base64 of 32 bytes with `=` padding,
    /// as Python's `Fernet.generate_key()` writes it.
    pub fn generate_key() -> String {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut bytes[..]);
        URL_SAFE.encode(&bytes[..])
    }

    fn primary(&self) -> &RingKey {
        // `parse` is the only constructor and never builds an empty ring.
        &self.keys[0]
    }

    pub fn primary_key_id(&self) -> &str {
        &self.primary().id
    }

    /// Key ids, primary first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.id.as_str()).collect()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a ring has at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when a secret sealed under `key_id` should be re-sealed under the primary.
    pub fn needs_rekey(&self, key_id: &str) -> bool {
        key_id != self.primary_key_id()
    }

    /// Encrypts `value` under the primary key, in an envelope bound to `owner` and `field`.
    pub fn seal(&self, owner: &SecretOwner, field: SecretField, value: &SecretString) -> Result<Sealed, CryptoError> {
        let plaintext = envelope::encode(owner, field, value)?;
        let primary = self.primary();
        Ok(Sealed {
            token: primary.fernet.encrypt(&plaintext),
            key_id: primary.id.clone(),
        })
    }

    /// Decrypts `token` with any ring key and checks it was sealed for `owner` and `field`.
    pub fn open(&self, owner: &SecretOwner, field: SecretField, token: &str) -> Result<SecretString, CryptoError> {
        self.open_with_key_id(owner, field, token).map(|(secret, _)| secret)
    }

    /// As [`KeyRing::open`], also returning the id of the key that decrypted it
    /// (for `rekey`: see [`KeyRing::needs_rekey`]).
    pub fn open_with_key_id(
        &self,
        owner: &SecretOwner,
        field: SecretField,
        token: &str,
    ) -> Result<(SecretString, String), CryptoError> {
        let (plaintext, key) = self.decrypt_with_key(token)?;
        let secret = envelope::decode(&plaintext, owner, field)?;
        Ok((secret, key.id.clone()))
    }

    /// Plain MultiFernet decrypt, no envelope: for tokens made by the old
    /// Python system.
    #[cfg_attr(not(test), allow(dead_code, reason = "for the migration of Python-made tokens"))]
    pub(crate) fn decrypt_raw(&self, token: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.decrypt_with_key(token).map(|(plaintext, _)| plaintext)
    }

    fn decrypt_with_key(&self, token: &str) -> Result<(Zeroizing<Vec<u8>>, &RingKey), CryptoError> {
        self.keys
            .iter()
            .find_map(|key| {
                key.fernet
                    .decrypt(token)
                    .ok()
                    .map(|plaintext| (Zeroizing::new(plaintext), key))
            })
            .ok_or(CryptoError::NoKeyDecrypts)
    }

    /// Fingerprints of `api_key` on `exchange`, one per ring key, primary's
    /// first. Store the primary's; look for any of them to find duplicates
    /// made before a key rotation.
    pub fn fingerprints(&self, exchange: &str, api_key: &str) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| fingerprint(&key.fingerprint_key, exchange, api_key))
            .collect()
    }

    /// The primary key's fingerprint of `api_key` on `exchange`.
    pub fn fingerprint(&self, exchange: &str, api_key: &str) -> String {
        fingerprint(&self.primary().fingerprint_key, exchange, api_key)
    }
}

/// Key ids only: key material never reaches logs.
impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("key_ids", &self.key_ids()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    use crate::crypto::test_keys::{NEW, OLD, OTHER};

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec, "ENCRYPTION_KEYS").unwrap()
    }

    fn parse_err(spec: &str) -> KeyRingError {
        match KeyRing::parse(spec, "ENCRYPTION_KEYS") {
            Ok(ring) => panic!("should not parse, got {ring:?}"),
            Err(e) => e,
        }
    }

    fn owner() -> SecretOwner {
        SecretOwner {
            user_id: Uuid::new_v4(),
            connection_id: Uuid::new_v4(),
        }
    }

    /// No 8-char run of `key` appears in `text`.
    fn assert_no_key_material(text: &str, key: &str) {
        let chars: Vec<char> = key.chars().collect();
        for window in chars.windows(8) {
            let run: String = window.iter().collect();
            assert!(!text.contains(&run), "{text:?} leaks part of a key: {run:?}");
        }
    }

    #[test]
    fn round_trip() {
        let ring = ring(NEW);
        let o = owner();
        let secret = SecretString::new("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j");
        let sealed = ring.seal(&o, SecretField::ApiSecret, &secret).unwrap();
        assert_eq!(sealed.key_id, ring.primary_key_id());
        assert!(!sealed.token.contains(secret.expose()));
        assert_eq!(ring.open(&o, SecretField::ApiSecret, &sealed.token).unwrap(), secret);
        let (opened, key_id) = ring
            .open_with_key_id(&o, SecretField::ApiSecret, &sealed.token)
            .unwrap();
        assert_eq!((opened, key_id), (secret, sealed.key_id));
    }

    #[test]
    fn raw_plaintext_is_the_documented_envelope() {
        let ring = ring(NEW);
        let o = owner();
        let sealed = ring
            .seal(&o, SecretField::Passphrase, &SecretString::new("pass"))
            .unwrap();
        let raw = ring.decrypt_raw(&sealed.token).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "uid": o.user_id, "cid": o.connection_id, "f": "passphrase", "s": "pass"})
        );
    }

    #[test]
    fn two_seals_of_the_same_value_differ() {
        let ring = ring(NEW);
        let o = owner();
        let secret = SecretString::new("same");
        let a = ring.seal(&o, SecretField::ApiKey, &secret).unwrap();
        let b = ring.seal(&o, SecretField::ApiKey, &secret).unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(ring.open(&o, SecretField::ApiKey, &b.token).unwrap(), secret);
    }

    #[test]
    fn refuses_other_user_connection_or_field() {
        let ring = ring(NEW);
        let o = owner();
        let token = ring
            .seal(&o, SecretField::ApiSecret, &SecretString::new("s"))
            .unwrap()
            .token;
        let other_user = SecretOwner {
            user_id: Uuid::new_v4(),
            ..o
        };
        let other_connection = SecretOwner {
            connection_id: Uuid::new_v4(),
            ..o
        };
        let swapped = SecretOwner {
            user_id: o.connection_id,
            connection_id: o.user_id,
        };
        for wrong in [other_user, other_connection, swapped] {
            assert_eq!(
                ring.open(&wrong, SecretField::ApiSecret, &token),
                Err(CryptoError::OwnerMismatch)
            );
        }
        for field in [SecretField::ApiKey, SecretField::Passphrase, SecretField::AccessToken] {
            assert_eq!(ring.open(&o, field, &token), Err(CryptoError::OwnerMismatch));
        }
    }

    #[test]
    fn not_an_envelope_is_malformed() {
        let ring = ring(NEW);
        let token = Fernet::new(NEW).unwrap().encrypt(b"a plain old-system secret");
        assert_eq!(
            ring.open(&owner(), SecretField::ApiKey, &token),
            Err(CryptoError::MalformedEnvelope)
        );
        assert_eq!(&ring.decrypt_raw(&token).unwrap()[..], b"a plain old-system secret");
    }

    #[test]
    fn wrong_key_or_garbage_decrypts_nowhere() {
        let o = owner();
        let token = ring(NEW)
            .seal(&o, SecretField::ApiKey, &SecretString::new("k"))
            .unwrap()
            .token;
        let other = ring(OTHER);
        assert_eq!(
            other.open(&o, SecretField::ApiKey, &token),
            Err(CryptoError::NoKeyDecrypts)
        );
        for garbage in ["", "gAAAAA", "not a token", "%%%%"] {
            assert_eq!(
                other.open(&o, SecretField::ApiKey, garbage),
                Err(CryptoError::NoKeyDecrypts)
            );
            assert_eq!(other.decrypt_raw(garbage).map(|_| ()), Err(CryptoError::NoKeyDecrypts));
        }
    }

    #[test]
    fn rotation_old_tokens_open_until_resealed() {
        let o = owner();
        let secret = SecretString::new("rotate me");
        let old_ring = ring(OLD);
        let old_token = old_ring.seal(&o, SecretField::ApiSecret, &secret).unwrap();

        let rotated = ring(&format!("{NEW},{OLD}"));
        assert_eq!(rotated.primary_key_id(), ring(NEW).primary_key_id());
        let (opened, key_id) = rotated
            .open_with_key_id(&o, SecretField::ApiSecret, &old_token.token)
            .unwrap();
        assert_eq!(opened, secret);
        assert_eq!(key_id, old_token.key_id);
        assert!(rotated.needs_rekey(&key_id));

        let new_only = ring(NEW);
        assert_eq!(
            new_only.open(&o, SecretField::ApiSecret, &old_token.token),
            Err(CryptoError::NoKeyDecrypts)
        );

        let resealed = rotated.seal(&o, SecretField::ApiSecret, &opened).unwrap();
        assert_eq!(resealed.key_id, rotated.primary_key_id());
        assert!(!rotated.needs_rekey(&resealed.key_id));
        assert_eq!(
            new_only.open(&o, SecretField::ApiSecret, &resealed.token).unwrap(),
            secret
        );
        assert_eq!(
            old_ring.open(&o, SecretField::ApiSecret, &resealed.token),
            Err(CryptoError::NoKeyDecrypts)
        );
    }

    #[test]
    fn key_ids_are_derived_stably_or_given() {
        // HMAC-SHA256(key, "exchange-connections key id") of the spec key, computed with Python.
        assert_eq!(ring(OLD).primary_key_id(), "ka989d2be1a");
        let forward = ring(&format!("{NEW},{OLD}"));
        let backward = ring(&format!("{OLD},{NEW}"));
        assert_eq!(forward.len(), 2);
        assert!(!forward.is_empty());
        assert_eq!(
            forward.key_ids(),
            backward.key_ids().into_iter().rev().collect::<Vec<_>>()
        );
        assert_eq!(forward.key_ids()[1], "ka989d2be1a");

        let named = ring(&format!(" v2:{NEW} , v1:{OLD} ,{OTHER}"));
        assert_eq!(named.key_ids()[..2], ["v2", "v1"]);
        assert_eq!(named.primary_key_id(), "v2");
        assert_eq!(named.key_ids()[2], ring(OTHER).primary_key_id());
        let token = named
            .seal(&owner(), SecretField::ApiKey, &SecretString::new("x"))
            .unwrap();
        assert_eq!(token.key_id, "v2");
    }

    #[test]
    fn parse_errors_name_the_setting_and_position_not_the_value() {
        let name = || "ENCRYPTION_KEYS".to_owned();
        let wrong_length = &NEW[..40];
        let bad_base64 = NEW.replace('_', "/").replace('-', "+");
        let cases: Vec<(String, KeyRingError)> = vec![
            (String::new(), KeyRingError::Empty { source_name: name() }),
            (
                format!("{OLD},{wrong_length}"),
                KeyRingError::Malformed {
                    source_name: name(),
                    position: 2,
                },
            ),
            (
                format!("{OLD},{bad_base64}"),
                KeyRingError::Malformed {
                    source_name: name(),
                    position: 2,
                },
            ),
            (
                format!("{NEW},,{OLD}"),
                KeyRingError::EmptyEntry {
                    source_name: name(),
                    position: 2,
                },
            ),
            (
                format!("{NEW},{OLD},{NEW}"),
                KeyRingError::Duplicate {
                    source_name: name(),
                    position: 3,
                },
            ),
            // The same key under another id or without padding is still the same key.
            (
                format!("a:{NEW},b:{}", NEW.trim_end_matches('=')),
                KeyRingError::Duplicate {
                    source_name: name(),
                    position: 2,
                },
            ),
            (
                format!("a:{NEW},a:{OLD}"),
                KeyRingError::DuplicateId {
                    source_name: name(),
                    position: 2,
                },
            ),
            (
                format!("{OLD},{}:{NEW}", ring(OLD).primary_key_id()),
                KeyRingError::DuplicateId {
                    source_name: name(),
                    position: 2,
                },
            ),
            (
                format!("bad id:{NEW}"),
                KeyRingError::InvalidId {
                    source_name: name(),
                    position: 1,
                },
            ),
        ];
        for (spec, expected) in cases {
            let e = parse_err(&spec);
            assert_eq!(e, expected, "{spec}");
            let message = e.to_string();
            assert!(message.starts_with("ENCRYPTION_KEYS"), "{message}");
            for key in [NEW, OLD, wrong_length, &bad_base64] {
                assert_no_key_material(&message, key);
                assert_no_key_material(&format!("{e:?}"), key);
            }
        }
        assert!(parse_err(&format!("{OLD},{wrong_length}")).to_string().contains("#2"));
    }

    #[test]
    fn debug_shows_ids_only() {
        let ring = ring(&format!("{NEW},old:{OLD}"));
        let debug = format!("{ring:?}");
        assert!(
            debug.contains(ring.primary_key_id()) && debug.contains("old"),
            "{debug}"
        );
        for key in [NEW, OLD, NEW.trim_end_matches('=')] {
            assert_no_key_material(&debug, key);
        }
        assert_no_key_material(&format!("{:#?}", ring), NEW);
    }

    #[test]
    fn generated_keys_are_python_shaped_and_fresh() {
        let a = KeyRing::generate_key();
        let b = KeyRing::generate_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 44);
        assert!(a.ends_with('='));
        let ring = ring(&format!("{a},{b}"));
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn fingerprints_are_stable_per_key_and_exchange() {
        let api_key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
        let old = ring(OLD);
        // HMAC(HMAC(key, "exchange-connections fingerprint"), "binance\n" + api_key), computed with Python.
        let expected = "bc05855538bb7e41110183cd7d63cca751b484e083fea14bbea5747ccbcef549";
        assert_eq!(old.fingerprint("binance", api_key), expected);
        assert_eq!(ring(OLD).fingerprints("binance", api_key), [expected]);
        assert_ne!(old.fingerprint("kraken", api_key), expected);
        assert_ne!(old.fingerprint("binance", &api_key[1..]), expected);

        // After a rotation the old fingerprint is still among the candidates.
        let rotated = ring(&format!("{NEW},{OLD}"));
        let all = rotated.fingerprints("binance", api_key);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], rotated.fingerprint("binance", api_key));
        assert_eq!(all[0], ring(NEW).fingerprint("binance", api_key));
        assert_eq!(all[1], expected);
        assert_ne!(all[0], all[1]);
    }
}
