//! Decoding configuration text as hypervisors write it: UTF-8 (VMware), UTF-16 with a byte
//! order mark (Virtual Server `.vmc`, some Hyper-V XML), or legacy 8-bit code pages.

use std::borrow::Cow;

/// Decodes a text file: UTF-16 LE/BE when it starts with a byte order mark (or looks like
/// UTF-16 without one), UTF-8 otherwise, and Latin-1 as the fallback for invalid UTF-8 (old
/// Workstation configs written in the host's code page).
pub fn decode(bytes: &[u8]) -> String {
    decode_cow(bytes).into_owned()
}

/// [`decode`] without a copy when the bytes are already UTF-8 (what VMware writes), for
/// parsers that only keep a few pieces of the text.
pub fn decode_cow(bytes: &[u8]) -> Cow<'_, str> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return utf8_or_latin1(rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return Cow::Owned(utf16(rest, false));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return Cow::Owned(utf16(rest, true));
    }
    // `<` followed by NUL is UTF-16 LE XML without a BOM; NUL then `<` is big-endian.
    if bytes.len() >= 4 && bytes[1] == 0 && bytes[3] == 0 && bytes[0] != 0 {
        return Cow::Owned(utf16(bytes, false));
    }
    if bytes.len() >= 4 && bytes[0] == 0 && bytes[2] == 0 && bytes[1] != 0 {
        return Cow::Owned(utf16(bytes, true));
    }
    utf8_or_latin1(bytes)
}

fn utf8_or_latin1(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytes.iter().map(|&b| b as char).collect()),
    }
}

/// Decodes UTF-16 (unpaired surrogates become U+FFFD); a trailing odd byte is dropped.
pub fn utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|c| {
        if big_endian {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_le_bytes([c[0], c[1]])
        }
    });
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Decodes a NUL-padded UTF-16 LE field (VHD parent name, VHDX locator values).
pub fn utf16_until_nul(bytes: &[u8], big_endian: bool) -> String {
    let mut s = utf16(bytes, big_endian);
    if let Some(i) = s.find('\0') {
        s.truncate(i);
    }
    s
}

pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that is zero, and maybe of bytes above it (a borrow can
/// carry up), but never below: the lowest set bit marks the first zero byte exactly.
pub(crate) fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGH
}

/// Non-zero when some byte of `w` is below `n` (`n` <= 0x80); exact as a yes/no answer, as
/// [`zero_bytes`].
pub(crate) fn bytes_below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH
}

/// Lower-cases the ASCII letters among eight bytes at once; other bytes are left alone.
pub(crate) fn ascii_lower_word(w: u64) -> u64 {
    // Per byte, on its low seven bits (no carry can cross into the next byte): the high bit
    // of `ge_a` is set when the byte is >= 'A', that of `gt_z` when it is > 'Z'.
    let low7 = w & !HIGH;
    let ge_a = low7 + ONES * (0x80 - u64::from(b'A'));
    let gt_z = low7 + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = ge_a & !gt_z & !w & HIGH;
    w | (upper >> 2)
}

/// The eight bytes at `i`, little-endian.
pub(crate) fn word_at(s: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[i..i + 8]);
    u64::from_le_bytes(b)
}

/// Index of the first byte of `hay` whose bit in `hits(word)` is set, eight bytes at a time.
/// `hits` must flag matching bytes as [`zero_bytes`] flags zeros. Config lines are a few dozen
/// bytes, too short for a vectorised search to win back its setup cost; the last word overlaps
/// the one before instead of finishing byte by byte (bytes seen twice did not match the first
/// time, so the lowest flag is still the first match).
fn find_by_word(hay: &[u8], hits: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> Option<usize> {
    let n = hay.len();
    if n < 8 {
        return hay.iter().position(|&c| byte(c));
    }
    let mut i = 0;
    loop {
        let at = i.min(n - 8);
        let h = hits(word_at(hay, at));
        if h != 0 {
            return Some(at + h.trailing_zeros() as usize / 8);
        }
        if at == n - 8 {
            return None;
        }
        i += 8;
    }
}

/// Index of the last `needle` in `hay`. Paths and keys are short: a plain loop beats
/// `str::rfind(char)`, whose searcher costs more to set up than the search (callgrind: about
/// 230 instructions a path).
pub(crate) fn rfind_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().rposition(|&c| c == needle)
}

/// `s` split at its last `needle` (an ASCII byte, so both sides are whole characters), as
/// `str::rsplit_once` splits it.
pub(crate) fn rsplit_once_byte(s: &str, needle: u8) -> Option<(&str, &str)> {
    debug_assert!(needle.is_ascii());
    rfind_byte(needle, s.as_bytes()).map(|i| (&s[..i], &s[i + 1..]))
}

/// `s` split at every `/` and `\`, as `str::split(['/', '\\'])` splits it (empty pieces
/// included), searching bytes: paths are short, and the generic searcher costs more to set up
/// than the search.
pub(crate) fn split_slashes(s: &str) -> impl Iterator<Item = &str> {
    split_where(s, |b| b == b'/' || b == b'\\')
}

/// `s` split at every `needle` (an ASCII byte), as `str::split` splits it.
pub(crate) fn split_byte(s: &str, needle: u8) -> impl Iterator<Item = &str> {
    debug_assert!(needle.is_ascii());
    split_where(s, move |b| b == needle)
}

/// `s` split at every byte `at` accepts, which must be ASCII (so every piece is whole
/// characters).
fn split_where(s: &str, at: impl Fn(u8) -> bool) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(&at) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// `s` split at its first `needle` (an ASCII byte), as `str::split_once` splits it.
pub(crate) fn split_once_byte(s: &str, needle: u8) -> Option<(&str, &str)> {
    debug_assert!(needle.is_ascii());
    find_byte(needle, s.as_bytes()).map(|i| (&s[..i], &s[i + 1..]))
}

/// Index of the first `needle` in `hay`.
pub(crate) fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    let p = ONES * u64::from(needle);
    find_by_word(hay, |w| zero_bytes(w ^ p), |c| c == needle)
}

/// Index of the first `a` or `b` in `hay`.
pub(crate) fn find_either(a: u8, b: u8, hay: &[u8]) -> Option<usize> {
    let (pa, pb) = (ONES * u64::from(a), ONES * u64::from(b));
    find_by_word(
        hay,
        |w| zero_bytes(w ^ pa) | zero_bytes(w ^ pb),
        |c| c == a || c == b,
    )
}

/// `str::trim`, with a fast path for the common case of ASCII at both ends. `str::trim`
/// removes Unicode white space, which among ASCII bytes is tab, LF, VT, FF, CR and space (VT
/// is not `u8::is_ascii_whitespace`).
pub(crate) fn trim_str(s: &str) -> &str {
    let b = s.as_bytes();
    let is_space = |c: u8| c == b' ' || (b'\t'..=b'\r').contains(&c);
    let start = b.iter().position(|&c| !is_space(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| !is_space(c))
        .map_or(start, |e| e + 1);
    // Only ASCII bytes were cut, so both ends are char boundaries.
    let t = s.get(start..end).unwrap_or("");
    match (t.as_bytes().first(), t.as_bytes().last()) {
        (Some(&f), Some(&l)) if f >= 0x80 || l >= 0x80 => t.trim(),
        _ => t,
    }
}

/// `str::trim_start`, as [`trim_str`].
pub(crate) fn trim_start_str(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b
        .iter()
        .position(|&c| c != b' ' && !(b'\t'..=b'\r').contains(&c))
        .unwrap_or(b.len());
    let t = s.get(start..).unwrap_or("");
    match t.as_bytes().first() {
        Some(&f) if f >= 0x80 => t.trim_start(),
        _ => t,
    }
}

/// Whether `s` starts with `prefix`, ignoring ASCII case.
pub(crate) fn starts_with_ignore_ascii_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Whether `s` ends with `suffix`, ignoring ASCII case.
pub(crate) fn ends_with_ignore_ascii_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Whether `haystack` contains `needle`, ignoring ASCII case.
pub(crate) fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The byte searches split where `str`'s own char searches split, on any text (with
        /// the separators, multi-byte characters and the bytes around them mixed in).
        #[test]
        fn byte_splits_agree_with_str(
            s in "[a-z/.:\"\\\\é€𝄞 ]{0,40}",
            needle in proptest::sample::select(vec![b'/', b'.', b':', b'"']),
        ) {
            let c = char::from(needle);
            proptest::prop_assert_eq!(rsplit_once_byte(&s, needle), s.rsplit_once(c));
            proptest::prop_assert_eq!(split_once_byte(&s, needle), s.split_once(c));
            proptest::prop_assert_eq!(rfind_byte(needle, s.as_bytes()), s.rfind(c));
            proptest::prop_assert_eq!(
                split_byte(&s, needle).collect::<Vec<_>>(),
                s.split(c).collect::<Vec<_>>()
            );
            proptest::prop_assert_eq!(
                split_slashes(&s).collect::<Vec<_>>(),
                s.split(['/', '\\']).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn decodes_boms_and_bomless_utf16() {
        assert_eq!(decode(b"\xEF\xBB\xBFab"), "ab");
        assert_eq!(decode(&[0xFF, 0xFE, b'<', 0, b'a', 0]), "<a");
        assert_eq!(decode(&[0xFE, 0xFF, 0, b'<', 0, b'a']), "<a");
        assert_eq!(decode(&[b'<', 0, b'a', 0]), "<a");
        assert_eq!(decode(b"caf\xe9"), "café");
        assert_eq!(decode("café".as_bytes()), "café");
        assert_eq!(utf16_until_nul(&[b'x', 0, 0, 0, b'y', 0], false), "x");
    }

    #[test]
    fn decode_cow_borrows_utf8_only() {
        assert!(matches!(decode_cow(b"plain"), Cow::Borrowed("plain")));
        assert!(matches!(decode_cow(b"\xEF\xBB\xBFab"), Cow::Borrowed("ab")));
        assert_eq!(decode_cow(b"caf\xe9"), "café");
        assert!(matches!(decode_cow(b"caf\xe9"), Cow::Owned(_)));
        assert_eq!(decode_cow(&[0xFF, 0xFE, b'<', 0]), "<");
    }

    #[test]
    fn word_searches_match_a_byte_scan() {
        let hay: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for len in 0..hay.len() {
            for at in 0..=len {
                let mut h = hay[..len].to_vec();
                if at < len {
                    h[at] = b'=';
                }
                let expect = h.iter().position(|&c| c == b'=');
                assert_eq!(find_byte(b'=', &h), expect, "{len} {at}");
                assert_eq!(find_either(b'"', b'=', &h), expect, "{len} {at}");
                if at < len {
                    // A zero byte before the match must not hide or fake it.
                    let mut z = h.clone();
                    z[at / 2] = 0;
                    let expect = z.iter().position(|&c| c == b'=' || c == 0);
                    assert_eq!(find_either(0, b'=', &z), expect, "{len} {at}");
                    assert_eq!(find_byte(b'=', &z), z.iter().position(|&c| c == b'='));
                }
            }
        }
        assert_eq!(find_byte(0x80, b"abcdefgh\x80"), Some(8));
        assert_eq!(
            find_byte(b'\x01', b"\x00\x01\x00\x00\x00\x00\x00\x00\x00"),
            Some(1)
        );
    }

    #[test]
    fn trim_str_is_str_trim() {
        for s in [
            "",
            " ",
            "\x0b a \x0b",
            "\t\r\n",
            "\u{a0}x\u{85}",
            " \u{2003}y ",
            "é",
            " é ",
            "a\x1f",
        ] {
            assert_eq!(trim_str(s), s.trim(), "{s:?}");
            assert_eq!(trim_start_str(s), s.trim_start(), "{s:?}");
        }
    }
}
