//! The claims of a Supabase access token that this service reads, and their
//! conversion to a [`Principal`]. The registered time/audience/issuer claims
//! are checked by `jsonwebtoken`'s `Validation` (see `jwt.rs`); this file
//! checks what is specific to us: `sub` must be a user UUID, `role` defaults
//! to `authenticated`, `email` is optional.

use super::AuthError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The role Supabase gives a signed-in user, and ours when `role` is absent.
pub(crate) const DEFAULT_ROLE: &str = "authenticated";

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub role: String,
    pub email: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// The claims we read. Every field is a loose `Value` so that a missing or
/// oddly typed claim reaches `Validation` (which names the problem, e.g.
/// "missing exp") instead of failing deserialization as "malformed".
#[derive(Debug, Deserialize)]
pub(crate) struct AccessClaims {
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    role: Option<Value>,
    #[serde(default)]
    email: Option<Value>,
}

impl AccessClaims {
    /// Called only after the signature and registered claims were validated.
    pub(crate) fn into_principal(self) -> Result<Principal, AuthError> {
        let user_id = match self.sub {
            None | Some(Value::Null) => return Err(AuthError::NoSubject),
            Some(Value::String(sub)) => parse_user_id(&sub)?,
            Some(_) => return Err(AuthError::InvalidSubject),
        };
        let role = match self.role {
            None | Some(Value::Null) => DEFAULT_ROLE.to_owned(),
            Some(Value::String(role)) if role.is_empty() => DEFAULT_ROLE.to_owned(),
            Some(Value::String(role)) => role,
            Some(_) => return Err(AuthError::Malformed),
        };
        // Supabase sends `"email": ""` for phone-only users.
        let email = match self.email {
            None | Some(Value::Null) => None,
            Some(Value::String(email)) if email.is_empty() => None,
            Some(Value::String(email)) => Some(email),
            Some(_) => return Err(AuthError::Malformed),
        };
        let expires_at = self
            .exp
            .as_ref()
            .and_then(timestamp)
            .ok_or(AuthError::MissingClaim("exp"))?;
        Ok(Principal {
            user_id,
            role,
            email,
            expires_at,
        })
    }
}

fn parse_user_id(sub: &str) -> Result<Uuid, AuthError> {
    match Uuid::parse_str(sub) {
        Ok(id) if !id.is_nil() => Ok(id),
        _ => Err(AuthError::InvalidSubject),
    }
}

/// A NumericDate as `jsonwebtoken` reads it: whole seconds, or a float it rounds.
fn timestamp(value: &Value) -> Option<DateTime<Utc>> {
    let secs = match value.as_i64() {
        Some(secs) => secs,
        None => {
            let float = value.as_f64()?;
            if !float.is_finite() {
                return None;
            }
            float.round() as i64
        }
    };
    DateTime::from_timestamp(secs, 0)
}

/// The claims of a token we issue ourselves (the embedded demo user, tests).
#[derive(Debug, Serialize)]
pub(crate) struct IssuedClaims<'a> {
    pub sub: Uuid,
    pub aud: &'a str,
    pub exp: i64,
    pub iat: i64,
    pub role: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USER: &str = "6f1c1b9e-2f43-4c55-9d0a-3a0c9b7e2d11";

    fn principal(claims: Value) -> Result<Principal, AuthError> {
        serde_json::from_value::<AccessClaims>(claims)
            .map_err(|_| AuthError::Malformed)?
            .into_principal()
    }

    #[test]
    fn full_claims() {
        let p =
            principal(json!({"sub": USER, "exp": 1_900_000_000, "role": "authenticated", "email": "a@b.c"})).unwrap();
        assert_eq!(p.user_id, Uuid::parse_str(USER).unwrap());
        assert_eq!(p.role, "authenticated");
        assert_eq!(p.email.as_deref(), Some("a@b.c"));
        assert_eq!(p.expires_at.timestamp(), 1_900_000_000);
    }

    #[test]
    fn role_defaults_and_empty_email_is_none() {
        let p = principal(json!({"sub": USER, "exp": 1_900_000_000, "email": ""})).unwrap();
        assert_eq!(p.role, DEFAULT_ROLE);
        assert_eq!(p.email, None);
        let p = principal(json!({"sub": USER, "exp": 1_900_000_000, "role": "", "email": null})).unwrap();
        assert_eq!(p.role, DEFAULT_ROLE);
        assert_eq!(p.email, None);
    }

    #[test]
    fn float_exp_is_rounded_like_the_validator_does() {
        let p = principal(json!({"sub": USER, "exp": 1_900_000_000.6})).unwrap();
        assert_eq!(p.expires_at.timestamp(), 1_900_000_001);
    }

    #[test]
    fn sub_must_be_a_non_nil_uuid() {
        assert_eq!(principal(json!({"exp": 1})), Err(AuthError::NoSubject));
        assert_eq!(principal(json!({"sub": null, "exp": 1})), Err(AuthError::NoSubject));
        for bad in [json!("user-42"), json!(""), json!(42), json!(Uuid::nil().to_string())] {
            assert_eq!(
                principal(json!({"sub": bad, "exp": 1})),
                Err(AuthError::InvalidSubject),
                "{bad}"
            );
        }
    }

    #[test]
    fn wrongly_typed_claims_are_refused() {
        assert_eq!(
            principal(json!({"sub": USER, "exp": 1, "role": 7})),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            principal(json!({"sub": USER, "exp": 1, "email": ["x"]})),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            principal(json!({"sub": USER, "exp": "soon"})),
            Err(AuthError::MissingClaim("exp"))
        );
        assert_eq!(
            principal(json!({"sub": USER, "exp": 1e300})),
            Err(AuthError::MissingClaim("exp"))
        );
    }
}
