//! The plaintext inside a stored token: a small JSON envelope that binds the
//! secret to its owner and column, so a token copied to another row or
//! column is refused when opened.
//!
//! `{"v":1,"uid":"<user uuid>","cid":"<connection uuid>","f":"api_secret","s":"<secret>"}`

use super::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

const VERSION: u8 = 1;

/// Who a sealed secret belongs to; checked again when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretOwner {
    pub user_id: Uuid,
    pub connection_id: Uuid,
}

/// Which credential a token holds; part of the binding, so tokens cannot be swapped between columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretField {
    ApiKey,
    ApiSecret,
    Passphrase,
    AccessToken,
}

impl SecretField {
    /// The name written in the envelope (`f`).
    pub fn as_str(self) -> &'static str {
        match self {
            SecretField::ApiKey => "api_key",
            SecretField::ApiSecret => "api_secret",
            SecretField::Passphrase => "passphrase",
            SecretField::AccessToken => "access_token",
        }
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u8,
    uid: Uuid,
    cid: Uuid,
    f: &'static str,
    s: &'a str,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u8,
    uid: Uuid,
    cid: Uuid,
    f: String,
    #[serde(deserialize_with = "secret_from_str")]
    s: SecretString,
}

/// Straight into a `SecretString`, so no plain `String` copy is left behind.
fn secret_from_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    String::deserialize(deserializer).map(SecretString::from)
}

/// Why an envelope could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum EnvelopeError {
    Malformed,
    OwnerMismatch,
}

/// Serialises the envelope into a zeroized buffer. The buffer is sized up
/// front for the worst case (every char escaped as `\u00XX`) so it never
/// reallocates and leaves an unzeroized copy of the secret behind.
pub(super) fn encode(
    owner: &SecretOwner,
    field: SecretField,
    secret: &SecretString,
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let envelope = EnvelopeOut {
        v: VERSION,
        uid: owner.user_id,
        cid: owner.connection_id,
        f: field.as_str(),
        s: secret.expose(),
    };
    let mut buf = Zeroizing::new(Vec::with_capacity(worst_case_len(secret.expose())));
    // Writing strings and uuids into a Vec cannot fail in practice.
    serde_json::to_writer(&mut *buf, &envelope).map_err(|_| EnvelopeError::Malformed)?;
    Ok(buf)
}

fn worst_case_len(secret: &str) -> usize {
    // Fixed keys and punctuation, two hyphenated uuids, the longest field name, then the secret.
    const OVERHEAD: usize = 160;
    OVERHEAD + 6 * secret.len()
}

/// Parses an envelope and checks it belongs to `owner` and `field`.
pub(super) fn decode(plaintext: &[u8], owner: &SecretOwner, field: SecretField) -> Result<SecretString, EnvelopeError> {
    let envelope: EnvelopeIn = serde_json::from_slice(plaintext).map_err(|_| EnvelopeError::Malformed)?;
    if envelope.v != VERSION {
        return Err(EnvelopeError::Malformed);
    }
    let bound_here =
        envelope.uid == owner.user_id && envelope.cid == owner.connection_id && envelope.f == field.as_str();
    if !bound_here {
        return Err(EnvelopeError::OwnerMismatch);
    }
    Ok(envelope.s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> SecretOwner {
        SecretOwner {
            user_id: Uuid::from_u128(0x1111_1111_1111_4111_8111_1111_1111_1111),
            connection_id: Uuid::from_u128(0x2222_2222_2222_4222_8222_2222_2222_2222),
        }
    }

    #[test]
    fn encodes_the_documented_shape() {
        let buf = encode(&owner(), SecretField::ApiSecret, &SecretString::new("s3cr\"t")).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"v":1,"uid":"11111111-1111-4111-8111-111111111111","cid":"22222222-2222-4222-8222-222222222222","f":"api_secret","s":"s3cr\"t"}"#
        );
    }

    #[test]
    fn worst_case_secret_does_not_reallocate() {
        // Control characters are escaped to six bytes each.
        let secret = SecretString::new("\u{1}".repeat(300));
        let buf = encode(&owner(), SecretField::AccessToken, &secret).unwrap();
        assert_eq!(buf.capacity(), worst_case_len(secret.expose()));
        assert!(buf.len() > 6 * 300);
        assert_eq!(decode(&buf, &owner(), SecretField::AccessToken).unwrap(), secret);
    }

    #[test]
    fn round_trips_any_text() {
        for text in [
            "",
            "plain",
            "line\nbreak \\ \"quote\" ünï 🔑",
            "-----BEGIN EC PRIVATE KEY-----\nMHc=\n",
        ] {
            let secret = SecretString::new(text);
            let buf = encode(&owner(), SecretField::Passphrase, &secret).unwrap();
            assert_eq!(decode(&buf, &owner(), SecretField::Passphrase).unwrap().expose(), text);
        }
    }

    #[test]
    fn rejects_other_owner_or_field() {
        let buf = encode(&owner(), SecretField::ApiKey, &SecretString::new("k")).unwrap();
        let other_user = SecretOwner {
            user_id: Uuid::nil(),
            ..owner()
        };
        let other_connection = SecretOwner {
            connection_id: Uuid::nil(),
            ..owner()
        };
        assert_eq!(
            decode(&buf, &other_user, SecretField::ApiKey),
            Err(EnvelopeError::OwnerMismatch)
        );
        assert_eq!(
            decode(&buf, &other_connection, SecretField::ApiKey),
            Err(EnvelopeError::OwnerMismatch)
        );
        assert_eq!(
            decode(&buf, &owner(), SecretField::ApiSecret),
            Err(EnvelopeError::OwnerMismatch)
        );
    }

    #[test]
    fn rejects_what_is_not_an_envelope() {
        let o = owner();
        let uid = o.user_id;
        let cid = o.connection_id;
        let cases = [
            "hello".to_owned(),
            "{}".to_owned(),
            format!(r#"{{"v":2,"uid":"{uid}","cid":"{cid}","f":"api_key","s":"x"}}"#),
            format!(r#"{{"v":1,"uid":"{uid}","cid":"{cid}","f":"api_key"}}"#),
            format!(r#"{{"v":1,"uid":"not-a-uuid","cid":"{cid}","f":"api_key","s":"x"}}"#),
            format!(r#"{{"v":1,"uid":"{uid}","cid":"{cid}","f":"api_key","s":7}}"#),
        ];
        for case in &cases {
            assert_eq!(
                decode(case.as_bytes(), &o, SecretField::ApiKey),
                Err(EnvelopeError::Malformed),
                "{case}"
            );
        }
        let good = format!(r#"{{"v":1,"uid":"{uid}","cid":"{cid}","f":"api_key","s":"x"}}"#);
        assert_eq!(decode(good.as_bytes(), &o, SecretField::ApiKey).unwrap().expose(), "x");
    }
}
