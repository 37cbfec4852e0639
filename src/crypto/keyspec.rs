//! Parsing the key-ring setting (`ENCRYPTION_KEYS`): comma-separated Fernet
//! keys, primary first, each optionally prefixed `id:`. Errors say which
//! setting and which position is wrong, never the value.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// Raw bytes of a Fernet key: 16 signing + 16 encryption bytes.
pub(super) type KeyBytes = Zeroizing<[u8; 32]>;

/// Length of 32 bytes in base64, without and with its one `=` of padding.
const B64_LEN: usize = 43;
const B64_PADDED_LEN: usize = 44;
const MAX_ID_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyRingError {
    #[error("{source_name} is empty: give at least one Fernet key")]
    Empty { source_name: String },
    #[error("{source_name}: key #{position} is empty (stray comma?)")]
    EmptyEntry { source_name: String, position: usize },
    #[error("{source_name}: key #{position} is not a valid Fernet key (urlsafe base64 of 32 bytes)")]
    Malformed { source_name: String, position: usize },
    #[error("{source_name}: key #{position} has an invalid id (1 to 32 of A-Z a-z 0-9 _ -)")]
    InvalidId { source_name: String, position: usize },
    #[error("{source_name}: key #{position} is listed twice")]
    Duplicate { source_name: String, position: usize },
    #[error("{source_name}: key #{position} has the same id as an earlier key")]
    DuplicateId { source_name: String, position: usize },
}

/// One entry of the setting: an explicit id if given, and the key.
pub(super) struct KeyEntry<'a> {
    /// 1-based position in the setting, for error messages.
    pub position: usize,
    pub explicit_id: Option<&'a str>,
    /// The key as written (validated), handed to the Fernet implementation.
    pub encoded: &'a str,
    pub bytes: KeyBytes,
}

/// Splits and validates `spec`. Does not check duplicates: that needs the
/// derived ids, which the ring computes.
pub(super) fn parse_entries<'a>(spec: &'a str, source_name: &str) -> Result<Vec<KeyEntry<'a>>, KeyRingError> {
    if spec.trim().is_empty() {
        return Err(KeyRingError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    spec.split(',')
        .enumerate()
        .map(|(index, raw)| parse_entry(raw.trim(), index + 1, source_name))
        .collect()
}

fn parse_entry<'a>(entry: &'a str, position: usize, source_name: &str) -> Result<KeyEntry<'a>, KeyRingError> {
    let source_name = source_name.to_owned();
    if entry.is_empty() {
        return Err(KeyRingError::EmptyEntry { source_name, position });
    }
    // ':' is not in the urlsafe base64 alphabet, so the first one ends the id.
    let (explicit_id, encoded) = match entry.split_once(':') {
        Some((id, key)) => (Some(id.trim()), key.trim()),
        None => (None, entry),
    };
    if explicit_id.is_some_and(|id| !is_valid_id(id)) {
        return Err(KeyRingError::InvalidId { source_name, position });
    }
    let bytes = decode_key(encoded).ok_or(KeyRingError::Malformed { source_name, position })?;
    Ok(KeyEntry {
        position,
        explicit_id,
        encoded,
        bytes,
    })
}

fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Urlsafe base64 of exactly 32 bytes, with the single `=` Python writes or
/// without it. Anything else (standard alphabet, wrong length, stray
/// padding, non-canonical trailing bits) is refused.
fn decode_key(encoded: &str) -> Option<KeyBytes> {
    let unpadded = match encoded.len() {
        B64_PADDED_LEN => encoded.strip_suffix('=')?,
        B64_LEN => encoded,
        _ => return None,
    };
    let decoded = Zeroizing::new(URL_SAFE_NO_PAD.decode(unpadded).ok()?);
    let mut bytes = Zeroizing::new([0u8; 32]);
    if decoded.len() != bytes.len() {
        return None;
    }
    bytes.copy_from_slice(&decoded);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

    fn err(spec: &str) -> KeyRingError {
        match parse_entries(spec, "ENCRYPTION_KEYS") {
            Ok(_) => panic!("spec #{spec:?} should not parse"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_padded_unpadded_and_explicit_ids() {
        let spec = format!(" {KEY} , v2:{} ,a_B-9 : {KEY}", KEY.trim_end_matches('='));
        let entries = parse_entries(&spec, "X").unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].explicit_id, None);
        assert_eq!(entries[1].explicit_id, Some("v2"));
        assert_eq!(entries[2].explicit_id, Some("a_B-9"));
        assert_eq!(entries[2].position, 3);
        assert_eq!(*entries[0].bytes, *entries[1].bytes);
        assert_eq!(entries[0].bytes[0], 0x73);
    }

    #[test]
    fn rejects_empty_settings_and_entries() {
        let name = || "ENCRYPTION_KEYS".to_owned();
        assert_eq!(err(""), KeyRingError::Empty { source_name: name() });
        assert_eq!(err("  \n "), KeyRingError::Empty { source_name: name() });
        assert_eq!(
            err(&format!("{KEY},")),
            KeyRingError::EmptyEntry {
                source_name: name(),
                position: 2
            }
        );
        assert_eq!(
            err(&format!(" ,{KEY}")),
            KeyRingError::EmptyEntry {
                source_name: name(),
                position: 1
            }
        );
    }

    #[test]
    fn rejects_malformed_keys() {
        let standard_alphabet = KEY.replace('_', "/").replace('-', "+");
        let too_short = &KEY[..40];
        let too_long = format!("{}AAAA=", KEY.trim_end_matches('='));
        let double_padding = format!("{}==", &KEY[..42]);
        let not_base64 = "%".repeat(44);
        let non_canonical = format!("{}f=", &KEY[..42]);
        for bad in [
            &standard_alphabet,
            too_short,
            &too_long,
            &double_padding,
            &not_base64,
            &non_canonical,
            "abc",
        ] {
            let e = err(&format!("{KEY},{bad}"));
            assert_eq!(
                e,
                KeyRingError::Malformed {
                    source_name: "ENCRYPTION_KEYS".into(),
                    position: 2
                },
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        for bad in ["", "has space", "dot.ted", "ünï", &"x".repeat(33)] {
            let e = err(&format!("{bad}:{KEY}"));
            assert_eq!(
                e,
                KeyRingError::InvalidId {
                    source_name: "ENCRYPTION_KEYS".into(),
                    position: 1
                },
                "{bad:?}"
            );
        }
        assert!(parse_entries(&format!("{}:{KEY}", "x".repeat(32)), "X").is_ok());
    }
}
