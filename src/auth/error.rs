//! `AuthError`: why a bearer token was refused. Every message is a fixed
//! string, short and generic enough to return to the client as-is, so no
//! error can ever carry the token (or a key) it was about.

/// A refused token or an unusable auth configuration. All variants except
/// [`AuthError::Config`] mean `UNAUTHENTICATED` for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    /// Not three base64url JSON parts, too long, or claims of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// `alg` is `none`, unknown, or one this verifier is not configured for.
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    #[error("invalid signature")]
    InvalidSignature,
    /// The `kid` is not in the JWKS (or the token names no `kid`).
    #[error("unknown signing key")]
    UnknownKey,
    /// The JWKS key named by `kid` is of another type than the token's `alg`.
    #[error("signing key does not match token algorithm")]
    KeyMismatch,
    /// The JWKS key material could not be used to verify.
    #[error("unusable signing key")]
    UnusableKey,
    /// The JWKS could not be fetched; details are logged, not returned.
    #[error("signing keys unavailable")]
    KeysUnavailable,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token has the wrong audience")]
    WrongAudience,
    #[error("token has the wrong issuer")]
    WrongIssuer,
    /// A required registered claim (`exp`, `aud`, `iss`) is absent.
    #[error("token is missing a required claim ({0})")]
    MissingClaim(&'static str),
    #[error("token has no user (sub)")]
    NoSubject,
    #[error("token subject is not a user id")]
    InvalidSubject,
    /// The verifier cannot be built from this configuration (start-up error).
    #[error("auth configuration: {0}")]
    Config(&'static str),
}

impl AuthError {
    /// Maps a `jsonwebtoken` error to a fixed message. The library's own
    /// messages are not forwarded: some embed key-parsing details.
    pub(crate) fn from_jwt(err: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match err.kind() {
            K::InvalidSignature => Self::InvalidSignature,
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::InvalidAudience => Self::WrongAudience,
            K::InvalidIssuer => Self::WrongIssuer,
            K::MissingRequiredClaim(claim) => match claim.as_str() {
                "exp" => Self::MissingClaim("exp"),
                "aud" => Self::MissingClaim("aud"),
                "iss" => Self::MissingClaim("iss"),
                "nbf" => Self::MissingClaim("nbf"),
                "sub" => Self::NoSubject,
                _ => Self::Malformed,
            },
            K::InvalidAlgorithm | K::UnsupportedAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => {
                Self::UnsupportedAlgorithm
            }
            K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidEddsaKey | K::InvalidKeyFormat => Self::UnusableKey,
            _ => Self::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::errors::{ErrorKind, new_error};

    #[test]
    fn maps_library_errors_to_fixed_messages() {
        let cases = [
            (ErrorKind::InvalidSignature, AuthError::InvalidSignature),
            (ErrorKind::ExpiredSignature, AuthError::Expired),
            (ErrorKind::ImmatureSignature, AuthError::NotYetValid),
            (ErrorKind::InvalidAudience, AuthError::WrongAudience),
            (ErrorKind::InvalidIssuer, AuthError::WrongIssuer),
            (
                ErrorKind::MissingRequiredClaim("exp".into()),
                AuthError::MissingClaim("exp"),
            ),
            (ErrorKind::MissingRequiredClaim("sub".into()), AuthError::NoSubject),
            (ErrorKind::InvalidAlgorithm, AuthError::UnsupportedAlgorithm),
            (ErrorKind::InvalidToken, AuthError::Malformed),
            (ErrorKind::InvalidClaimFormat("exp".into()), AuthError::Malformed),
        ];
        for (kind, expected) in cases {
            assert_eq!(AuthError::from_jwt(&new_error(kind)), expected);
        }
    }

    #[test]
    fn library_detail_is_not_forwarded() {
        let detail = "detail-from-key-parser";
        let err = AuthError::from_jwt(&new_error(ErrorKind::InvalidRsaKey(detail.into())));
        assert_eq!(err, AuthError::UnusableKey);
        assert!(!err.to_string().contains(detail));
    }

    #[test]
    fn client_facing_messages_are_the_documented_ones() {
        assert_eq!(AuthError::Expired.to_string(), "token expired");
        assert_eq!(AuthError::InvalidSignature.to_string(), "invalid signature");
        assert_eq!(AuthError::UnknownKey.to_string(), "unknown signing key");
        assert_eq!(AuthError::NoSubject.to_string(), "token has no user (sub)");
    }
}
