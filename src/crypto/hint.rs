//! `api_key_hint`: the few characters of an API key shown to its owner so they
//! can tell connections apart. Never more than half the key.

const ELLIPSIS: char = '…';
/// Edge length shown at each end of a long key.
const EDGE: usize = 4;
/// Tail length shown for a short key.
const SHORT_TAIL: usize = 2;

/// `"vmPU…Eh8A"` for a long key; `"…8A"` for a short one. Counted in chars,
/// so multibyte input cannot split a character.
///
/// Both ends (8 chars) are shown only from 16 chars on, the length at which
/// they are at most half the key; shorter keys show only their last 2 chars,
/// or fewer when even that would be more than half.
pub fn api_key_hint(api_key: &str) -> String {
    let chars: Vec<char> = api_key.chars().collect();
    let len = chars.len();
    let mut hint = String::new();
    if len >= 4 * EDGE {
        hint.extend(&chars[..EDGE]);
        hint.push(ELLIPSIS);
        hint.extend(&chars[len - EDGE..]);
    } else {
        let tail = SHORT_TAIL.min(len / 2);
        hint.push(ELLIPSIS);
        hint.extend(&chars[len - tail..]);
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_show_both_ends() {
        let binance = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
        assert_eq!(api_key_hint(binance), "vmPU…Eh8A");
        assert_eq!(api_key_hint("abcdefghijklmnop"), "abcd…mnop");
    }

    #[test]
    fn short_keys_show_at_most_half() {
        assert_eq!(api_key_hint("abcdefghijklmno"), "…no");
        assert_eq!(api_key_hint("abcdefghijk"), "…jk");
        assert_eq!(api_key_hint("abcd"), "…cd");
        assert_eq!(api_key_hint("abc"), "…c");
        assert_eq!(api_key_hint("ab"), "…b");
        assert_eq!(api_key_hint("a"), "…");
        assert_eq!(api_key_hint(""), "…");
    }

    #[test]
    fn multibyte_keys_are_cut_on_chars() {
        assert_eq!(api_key_hint("ÄÖÜßéèêëабвгдежз"), "ÄÖÜß…дежз");
        assert_eq!(api_key_hint("\u{1f511}\u{1f511}\u{1f511}\u{1f511}x"), "…\u{1f511}x");
        assert_eq!(api_key_hint("日本語"), "…語");
    }

    #[test]
    fn never_reveals_more_than_half() {
        let key: String = ('a'..='z').chain('A'..='Z').collect();
        for len in 0..=key.len() {
            let shown = api_key_hint(&key[..len]).chars().filter(|&c| c != ELLIPSIS).count();
            assert!(shown * 2 <= len, "{len} chars, {shown} shown");
        }
    }
}
