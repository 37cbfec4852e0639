//! Kraken request signing (exchanges.md §3): `API-Sign` is
//! base64(HMAC-SHA512(key = base64-decoded private key,
//! msg = URI path ‖ SHA-256(nonce ‖ POST data))), where the SHA-256 is the raw
//! 32 bytes and the POST data is exactly the form body sent, `nonce=…` included.

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

/// Kraken private keys are 64 random bytes.
pub const PRIVATE_KEY_LEN: usize = 64;

/// Standard base64; users sometimes drop the trailing `==`, which loses nothing.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The private key's bytes, if `secret` is base64 of exactly 64 bytes.
pub fn decode_private_key(secret: &str) -> Option<Zeroizing<Vec<u8>>> {
    let bytes = Zeroizing::new(LENIENT_BASE64.decode(secret).ok()?);
    (bytes.len() == PRIVATE_KEY_LEN).then_some(bytes)
}

/// The `API-Sign` header value for a request to `path` (e.g. `/0/private/Balance`).
pub fn api_sign(private_key: &[u8], path: &str, nonce: u64, post_data: &str) -> String {
    let mut inner = Sha256::new();
    inner.update(nonce.to_string().as_bytes());
    inner.update(post_data.as_bytes());
    let inner = inner.finalize();

    // HMAC takes keys of any length (long ones are hashed), so this cannot
    // fail; the fallback keeps a panic path out of request code all the same.
    let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(private_key) else {
        return String::new();
    };
    mac.update(path.as_bytes());
    mac.update(&inner);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The official example from docs.kraken.com spot-rest-auth (exchanges.md §0).
    const PRIVATE_KEY: &str =
        "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
    const NONCE: u64 = 1616492376594;
    const PAYLOAD: &str = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25";
    const PATH: &str = "/0/private/AddOrder";
    const API_SIGN: &str = "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ==";

    fn key() -> Zeroizing<Vec<u8>> {
        decode_private_key(PRIVATE_KEY).unwrap()
    }

    #[test]
    fn official_vector() {
        assert_eq!(api_sign(&key(), PATH, NONCE, PAYLOAD), API_SIGN);
    }

    #[test]
    fn every_input_is_signed() {
        let other_key = decode_private_key(&PRIVATE_KEY.replacen('k', "K", 1)).unwrap();
        assert_ne!(api_sign(&other_key, PATH, NONCE, PAYLOAD), API_SIGN);
        assert_ne!(api_sign(&key(), "/0/private/Balance", NONCE, PAYLOAD), API_SIGN);
        assert_ne!(api_sign(&key(), PATH, NONCE + 1, PAYLOAD), API_SIGN);
        assert_ne!(
            api_sign(&key(), PATH, NONCE, &PAYLOAD.replace("1.25", "1.26")),
            API_SIGN
        );
    }

    #[test]
    fn private_key_must_be_base64_of_64_bytes() {
        assert_eq!(key().len(), 64);
        // The padding may be left off.
        assert_eq!(
            decode_private_key(PRIVATE_KEY.trim_end_matches('=')).map(|k| k.to_vec()),
            Some(key().to_vec())
        );
        for bad in [
            "",
            "not base64!",
            &PRIVATE_KEY[..44],
            &format!("{PRIVATE_KEY}AAAA"),
            &format!(" {PRIVATE_KEY}"),
            &PRIVATE_KEY.replace('/', "_"),
        ] {
            assert!(decode_private_key(bad).is_none(), "{bad:?}");
        }
    }
}
