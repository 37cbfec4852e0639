//! Binance request signing for HMAC keys: hex HMAC-SHA256, keyed with the
//! secret, over "the query string concatenated without separator to the HTTP
//! body" (exchanges.md §1). The payload must already be percent-encoded.

use crate::crypto::SecretString;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The HMAC-SHA256 signature of `query ‖ body`, as lowercase hex.
///
/// The caller sends it as the last parameter, `&signature=<hex>`, so the
/// signed text is exactly what precedes it.
pub fn sign_hmac(secret: &SecretString, query: &str, body: &str) -> String {
    // HMAC takes keys of any length (long ones are hashed), so this cannot
    // fail; the fallback keeps a panic path out of request code all the same.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(query.as_bytes());
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Official vectors: binance-spot-api-docs rest-api.md, "SIGNED Endpoint
    // Examples for POST /api/v3/order → HMAC Keys" (exchanges.md §0).
    const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

    fn secret() -> SecretString {
        SecretString::new(SECRET)
    }

    #[test]
    fn query_string_vector() {
        let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            sign_hmac(&secret(), query, ""),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }

    #[test]
    fn query_and_body_are_concatenated_without_separator() {
        let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC";
        let body = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let expected = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77";
        assert_eq!(sign_hmac(&secret(), query, body), expected);
        // An "&" between the two would be a different payload.
        assert_ne!(sign_hmac(&secret(), &format!("{query}&"), body), expected);
    }

    #[test]
    fn percent_encoded_non_ascii_vector() {
        let query = "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            sign_hmac(&secret(), query, ""),
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
        );
        // Signing the raw (not percent-encoded) symbol gives another signature.
        let raw = query.replace("%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96", "１２３４５６");
        assert_ne!(
            sign_hmac(&secret(), &raw, ""),
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
        );
    }

    #[test]
    fn secret_and_payload_are_case_sensitive() {
        let query = "recvWindow=5000&timestamp=1499827319559";
        let signature = sign_hmac(&secret(), query, "");
        assert_eq!(signature.len(), 64);
        assert!(
            signature
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(
            sign_hmac(&SecretString::new(SECRET.to_lowercase()), query, ""),
            signature
        );
        assert_ne!(sign_hmac(&secret(), &query.to_lowercase(), ""), signature);
    }
}
