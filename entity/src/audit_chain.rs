//! The audit log's hash chain: the canonical encoding of an entry and its
//! SHA-256. It lives beside the entities because the migration that chains
//! the pre-existing rows and the service that appends new ones must hash
//! byte-for-byte alike, forever: a version's encoding never changes.
//!
//! # Encoding `ec-audit-v1`
//!
//! `hash = lowercase hex(SHA-256(C))`, where `C` is the canonical JSON
//! (below), as UTF-8, of the array
//!
//! ```text
//! ["ec-audit-v1", user_id, seq, prev_hash, id, connection_id, action, actor,
//!  ip, user_agent, request_id, details, created_at]
//! ```
//!
//! - `user_id`, `id`, `connection_id`: UUIDs as lowercase hyphenated strings;
//!   `connection_id` is `null` when the entry names no connection.
//! - `seq`: the entry's number in its user's chain (1, 2, …), a JSON integer.
//! - `prev_hash`: the previous entry's `hash`; for `seq` 1, [`GENESIS`]
//!   (64 zeros).
//! - `action`, `actor`: strings; `ip`, `user_agent`, `request_id`: strings or `null`.
//! - `details`: the JSON value itself (not a string); SQL NULL is `null`.
//! - `created_at`: `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` in UTC, always six
//!   fraction digits (truncated to microseconds, the precision both
//!   backends keep).
//!
//! Canonical JSON: no whitespace; object members sorted by key, comparing
//! the keys' UTF-8 bytes; strings with `"` and `\` escaped by a backslash,
//! U+0008, U+0009, U+000A, U+000C, U+000D as `\b \t \n \f \r`, the other
//! characters below U+0020 as `\u00xx` (lowercase hex), everything else as
//! is; numbers in plain decimal (no exponent, no `+`): integers exactly,
//! other values as the shortest decimal that reads back as the same IEEE-754
//! double, `-0` as `0`, and an integral double the same as that integer
//! (so a value keeps its hash after PostgreSQL's `jsonb` rewrites `2.0`
//! as `2` or `1e16` as `10000000000000000`).
//!
//! For details without fractional numbers, Python's
//! `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
//! produces the same bytes, which makes an independent verifier short.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use uuid::Uuid;

/// The encoding's tag, the first element of every hashed array.
pub const VERSION: &str = "ec-audit-v1";

/// `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything an entry's hash covers, borrowed from wherever the entry is.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    pub user_id: Uuid,
    pub seq: i64,
    pub prev_hash: &'a str,
    pub id: Uuid,
    pub connection_id: Option<Uuid>,
    pub action: &'a str,
    pub actor: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub details: Option<&'a Value>,
    pub created_at: DateTime<Utc>,
}

impl ChainFields<'_> {
    /// The canonical encoding (see the module documentation).
    pub fn canonical(&self) -> String {
        let opt = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_owned()));
        let array = Value::Array(vec![
            Value::String(VERSION.into()),
            Value::String(self.user_id.to_string()),
            Value::Number(self.seq.into()),
            Value::String(self.prev_hash.into()),
            Value::String(self.id.to_string()),
            self.connection_id
                .map_or(Value::Null, |id| Value::String(id.to_string())),
            Value::String(self.action.into()),
            Value::String(self.actor.into()),
            opt(self.ip),
            opt(self.user_agent),
            opt(self.request_id),
            self.details.cloned().unwrap_or(Value::Null),
            Value::String(timestamp(self.created_at)),
        ]);
        canonical_json(&array)
    }

    /// `hex(SHA-256(canonical))`, 64 lowercase hex digits.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }
}

/// UTC, microseconds, always six fraction digits.
fn timestamp(at: DateTime<Utc>) -> String {
    at.trunc_subsecs(6).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `value` as canonical JSON (see the module documentation).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here, not by the map: a crate enabling serde_json's
            // `preserve_order` must not change the hash.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    // `write!` to a String cannot fail.
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        if f == 0.0 {
            out.push('0');
        } else {
            // std's Display: the shortest round-trip digits, never an
            // exponent, and no ".0" on integral values.
            let _ = write!(out, "{f}");
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{9}' => out.push_str("\\t"),
            '\u{a}' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\u{d}' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(details: &Value) -> ChainFields<'_> {
        ChainFields {
            user_id: Uuid::parse_str("0193a5b0-0000-7000-8000-000000000001").unwrap(),
            seq: 1,
            prev_hash: GENESIS,
            id: Uuid::parse_str("0193a5b0-0000-7000-8000-0000000000aa").unwrap(),
            connection_id: None,
            action: "connection.created",
            actor: "user:0193a5b0-0000-7000-8000-000000000001",
            ip: Some("203.0.113.9"),
            user_agent: Some("tests/1.0 \"quoted\"\n"),
            request_id: None,
            details: Some(details),
            created_at: DateTime::parse_from_rfc3339("2026-12-04T10:11:12.345678901Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn canonical_form_is_fixed() {
        let details = json!({"label": "Main ✓", "b": [1, true, null], "a": {"z": 1, "y": "\u{1}"}});
        let fields = sample(&details);
        assert_eq!(
            fields.canonical(),
            r#"["ec-audit-v1","0193a5b0-0000-7000-8000-000000000001",1,"#.to_owned()
                + r#""0000000000000000000000000000000000000000000000000000000000000000","#
                + r#""0193a5b0-0000-7000-8000-0000000000aa",null,"connection.created","#
                + r#""user:0193a5b0-0000-7000-8000-000000000001","203.0.113.9","tests/1.0 \"quoted\"\n",null,"#
                + r#"{"a":{"y":"\u0001","z":1},"b":[1,true,null],"label":"Main ✓"},"2026-12-04T10:11:12.345678Z"]"#
        );
        // Computed independently with Python's json.dumps(sort_keys=True,
        // separators=(",", ":"), ensure_ascii=False) and hashlib.sha256.
        assert_eq!(
            fields.hash(),
            "fe90fd4c7538a9ec590660c7c966ecab82a9fdfc90901af374406d88a3f7f813"
        );
    }

    #[test]
    fn every_field_changes_the_hash() {
        let details = json!({"k": "v"});
        let other = json!({"k": "w"});
        let base = sample(&details);
        let id = Uuid::now_v7();
        let variants = [
            ChainFields { user_id: id, ..base },
            ChainFields { seq: 2, ..base },
            ChainFields {
                prev_hash: "ab",
                ..base
            },
            ChainFields { id, ..base },
            ChainFields {
                connection_id: Some(id),
                ..base
            },
            ChainFields {
                action: "connection.revoked",
                ..base
            },
            ChainFields {
                actor: "system:x",
                ..base
            },
            ChainFields { ip: None, ..base },
            ChainFields {
                user_agent: None,
                ..base
            },
            ChainFields {
                request_id: Some("r"),
                ..base
            },
            ChainFields {
                details: Some(&other),
                ..base
            },
            ChainFields { details: None, ..base },
            ChainFields {
                created_at: base.created_at + chrono::Duration::microseconds(1),
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(variant.hash(), base.hash(), "{variant:?}");
        }
    }

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        // The same characters split differently between two fields hash differently.
        let details = Value::Null;
        let a = ChainFields {
            ip: Some("1,2"),
            user_agent: Some("3"),
            ..sample(&details)
        };
        let b = ChainFields {
            ip: Some("1"),
            user_agent: Some("2,3"),
            ..sample(&details)
        };
        let c = ChainFields {
            ip: None,
            user_agent: Some("null"),
            ..sample(&details)
        };
        let d = ChainFields {
            ip: Some("null"),
            user_agent: None,
            ..sample(&details)
        };
        assert_ne!(a.hash(), b.hash());
        assert_ne!(c.hash(), d.hash());
    }

    #[test]
    fn key_order_and_number_spelling_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b":2.0,"a":[1e16,-0.0,0.5,1e-7]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":[10000000000000000,0,0.50,0.0000001],"b":2}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&a), r#"{"a":[10000000000000000,0,0.5,0.0000001],"b":2}"#);
        assert_eq!(canonical_json(&json!(u64::MAX)), "18446744073709551615");
        assert_eq!(canonical_json(&json!(i64::MIN)), "-9223372036854775808");
        assert_eq!(canonical_json(&json!(1e20)), "100000000000000000000");
    }

    #[test]
    fn timestamps_have_fixed_precision() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(timestamp(at), "2026-01-02T03:04:05.000000Z");
    }
}
