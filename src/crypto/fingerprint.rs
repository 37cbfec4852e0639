//! Values derived from a ring key with HMAC-SHA256: its public key id and its
//! fingerprint key, and the API-key fingerprints made with the latter.
//! Deriving (rather than reusing the Fernet key) keeps the three uses apart.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

const KEY_ID_LABEL: &[u8] = b"exchange-connections key id";
const FINGERPRINT_LABEL: &[u8] = b"exchange-connections fingerprint";
/// Hex characters of the key-id MAC kept in the id (40 bits).
const KEY_ID_HEX_LEN: usize = 10;

/// Key of the fingerprint HMAC, one per ring key.
pub(super) type FingerprintKey = Zeroizing<[u8; 32]>;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// `k` + 10 hex chars of HMAC(key, label): public, stable whatever the order of
/// keys in the ring, and reveals nothing usable about the key.
pub(super) fn derive_key_id(key: &[u8; 32]) -> String {
    let mac = hmac_sha256(key, &[KEY_ID_LABEL]);
    let mut id = hex::encode(&mac[..KEY_ID_HEX_LEN / 2]);
    id.insert(0, 'k');
    id
}

pub(super) fn derive_fingerprint_key(key: &[u8; 32]) -> FingerprintKey {
    hmac_sha256(key, &[FINGERPRINT_LABEL])
}

/// Hex HMAC of `exchange \n api_key`: equal API keys on the same exchange give
/// equal fingerprints under the same ring key, without storing the API key.
pub(super) fn fingerprint(key: &FingerprintKey, exchange: &str, api_key: &str) -> String {
    hex::encode(*hmac_sha256(
        &key[..],
        &[exchange.as_bytes(), b"\n", api_key.as_bytes()],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_matches_an_independent_hmac() {
        // HMAC-SHA256(key = 32 x 0x00, "exchange-connections key id"), computed with Python's hmac module.
        let id = derive_key_id(&[0u8; 32]);
        assert_eq!(id, "ka243365836");
        assert_ne!(derive_key_id(&[0u8; 32]), derive_key_id(&[1u8; 32]));
    }

    #[test]
    fn fingerprint_separates_exchange_from_key() {
        let key = derive_fingerprint_key(&[7u8; 32]);
        let a = fingerprint(&key, "binance", "KEY");
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint(&key, "binance", "KEY"));
        assert_ne!(a, fingerprint(&key, "kraken", "KEY"));
        // The separator stops "ab"+"c" colliding with "a"+"bc".
        assert_ne!(fingerprint(&key, "ab", "c"), fingerprint(&key, "a", "bc"));
        assert_ne!(a, fingerprint(&derive_fingerprint_key(&[8u8; 32]), "binance", "KEY"));
    }
}
