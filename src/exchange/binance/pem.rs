//! Reads one PEM block (RFC 7468) from a pasted secret: its label, and its
//! DER bytes. Tolerates what pasting does to a key file: surrounding blank
//! space, CRLF line ends, lines re-joined with spaces, and the two characters
//! `\n` where a newline was escaped (keys copied out of JSON or `.env`
//! files). Errors carry no part of the input.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// Why a PEM block could not be read (never what was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemError {
    /// No `-----BEGIN <label>-----` line at the start.
    NoBeginLine,
    /// No matching `-----END <label>-----` line, or text after it.
    NoEndLine,
    /// The body between the lines is not base64.
    BadBase64,
}

/// True when `secret` looks like an attempt at a PEM block, as opposed to
/// an HMAC secret; such a secret is never judged by the HMAC rules.
pub fn looks_like_pem(secret: &str) -> bool {
    secret.contains("-----BEGIN")
}

/// Only the label, without decoding the body: enough to refuse formats by name.
pub fn label(secret: &str) -> Result<String, PemError> {
    let text = unescape(secret);
    let (label, _) = split_begin(text.trim())?;
    Ok(label.to_owned())
}

/// The DER bytes of the single PEM block that makes up `secret`, wiped on drop.
pub fn parse(secret: &str) -> Result<Zeroizing<Vec<u8>>, PemError> {
    let text = unescape(secret);
    let (label, rest) = split_begin(text.trim())?;
    let end_line = format!("{END}{label}{DASHES}");
    let at = rest.find(&end_line).ok_or(PemError::NoEndLine)?;
    if !rest[at + end_line.len()..].trim().is_empty() {
        return Err(PemError::NoEndLine);
    }
    let body: Zeroizing<String> = Zeroizing::new(rest[..at].chars().filter(|c| !c.is_ascii_whitespace()).collect());
    let der = STANDARD.decode(body.as_bytes()).map_err(|_| PemError::BadBase64)?;
    Ok(Zeroizing::new(der))
}

/// Turns escaped line breaks (`\r\n`, `\n` as literal backslash sequences)
/// back into newlines. Base64 and PEM labels never contain a backslash.
fn unescape(secret: &str) -> Zeroizing<String> {
    Zeroizing::new(secret.replace("\\r\\n", "\n").replace("\\n", "\n"))
}

/// `-----BEGIN <label>-----<rest>` → (label, rest).
fn split_begin(text: &str) -> Result<(&str, &str), PemError> {
    let after = text.strip_prefix(BEGIN).ok_or(PemError::NoBeginLine)?;
    let close = after.find(DASHES).ok_or(PemError::NoBeginLine)?;
    let label = &after[..close];
    let label_ok = !label.is_empty() && label.bytes().all(|b| b.is_ascii_uppercase() || b == b' ' || b == b'#');
    if !label_ok {
        return Err(PemError::NoBeginLine);
    }
    Ok((label, &after[close + DASHES.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // "hello world" in base64, split over two lines.
    const BODY: &str = "aGVsbG8g\nd29ybGQ=";

    fn block(label: &str, body: &str) -> String {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    #[test]
    fn reads_label_and_body() {
        let der = parse(&block("PRIVATE KEY", BODY)).unwrap();
        assert_eq!(der.as_slice(), b"hello world");
        assert_eq!(label(&block("PRIVATE KEY", BODY)).unwrap(), "PRIVATE KEY");
        assert_eq!(label(&block("RSA PRIVATE KEY", BODY)).unwrap(), "RSA PRIVATE KEY");
    }

    #[test]
    fn tolerates_what_pasting_does() {
        let text = block("PRIVATE KEY", BODY);
        for pasted in [
            format!("  \n{text}\n\n"),
            text.replace('\n', "\r\n"),
            text.replace('\n', " "),
            text.replace('\n', "\\n"),
            text.replace('\n', "\\r\\n"),
            text.trim_end().to_owned(),
        ] {
            let der = parse(&pasted).unwrap_or_else(|e| panic!("{e:?} for {pasted:?}"));
            assert_eq!(der.as_slice(), b"hello world", "{pasted:?}");
        }
    }

    #[test]
    fn refuses_broken_blocks() {
        let good = block("PRIVATE KEY", BODY);
        assert_eq!(parse("").err(), Some(PemError::NoBeginLine));
        assert_eq!(parse(&format!("key: {good}")).err(), Some(PemError::NoBeginLine));
        assert_eq!(parse("-----BEGIN -----\n").err(), Some(PemError::NoBeginLine));
        assert_eq!(
            parse("-----BEGIN private key-----\n").err(),
            Some(PemError::NoBeginLine)
        );
        assert_eq!(
            parse(&good.replace("-----END PRIVATE KEY-----", "")).err(),
            Some(PemError::NoEndLine)
        );
        // The END line must match the BEGIN line.
        assert_eq!(
            parse(&good.replace("END PRIVATE KEY", "END PUBLIC KEY")).err(),
            Some(PemError::NoEndLine)
        );
        // A second block (e.g. the public key) pasted after the first.
        let two = format!("{good}{}", block("PUBLIC KEY", BODY));
        assert_eq!(parse(&two).err(), Some(PemError::NoEndLine));
        assert_eq!(
            parse(&block("PRIVATE KEY", "not base64!")).err(),
            Some(PemError::BadBase64)
        );
        assert!(looks_like_pem(&good) && !looks_like_pem("abc-----END"));
    }
}
