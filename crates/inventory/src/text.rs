//! Decoding configuration text as hypervisors write it: UTF-8 (VMware), UTF-16 with a byte
//! order mark (Virtual Server `.vmc`, some Hyper-V XML), or legacy 8-bit code pages.

/// Decodes a text file: UTF-16 LE/BE when it starts with a byte order mark (or looks like
/// UTF-16 without one), UTF-8 otherwise, and Latin-1 as the fallback for invalid UTF-8 (old
/// Workstation configs written in the host's code page).
pub fn decode(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return utf8_or_latin1(rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, false);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, true);
    }
    // `<` followed by NUL is UTF-16 LE XML without a BOM; NUL then `<` is big-endian.
    if bytes.len() >= 4 && bytes[1] == 0 && bytes[3] == 0 && bytes[0] != 0 {
        return utf16(bytes, false);
    }
    if bytes.len() >= 4 && bytes[0] == 0 && bytes[2] == 0 && bytes[1] != 0 {
        return utf16(bytes, true);
    }
    utf8_or_latin1(bytes)
}

fn utf8_or_latin1(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
