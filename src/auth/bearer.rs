//! Reading the token out of an `Authorization: Bearer <token>` value.

/// Extracts the token from an `Authorization: Bearer <token>` value.
///
/// The scheme is case-insensitive and may be followed by one or more spaces;
/// surrounding whitespace is ignored. Anything else (another scheme, no
/// token, a token with whitespace inside) is `None`.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, rest) = header_value.trim().split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bearer_in_any_case_with_any_spacing() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer    abc  "), Some("abc"));
        assert_eq!(bearer_token("  Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer\tabc"), Some("abc"));
    }

    #[test]
    fn refuses_everything_else() {
        for value in [
            "",
            "   ",
            "Bearer",
            "Bearer ",
            "Bearer     ",
            "Bearerabc",
            "Basic dXNlcjpwYXNz",
            "Token abc",
            "abc.def.ghi",
            "Bearer abc def",
            "Bearer: abc",
        ] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
