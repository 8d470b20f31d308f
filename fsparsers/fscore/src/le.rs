//! Bounds-checked little-endian field reads from on-disk byte slices.
//!
//! Every decoder reads fields through these helpers so that a short or truncated structure
//! becomes `None` (turned into a `Corrupt` error by the caller) instead of a panic.

/// Reads a `u8` at `off`.
pub fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

/// Reads a little-endian `u16` at `off`.
pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// Reads a little-endian `u32` at `off`.
pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Reads a little-endian `u64` at `off`.
pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Reads a little-endian `i64` at `off`.
pub fn i64_at(b: &[u8], off: usize) -> Option<i64> {
    Some(i64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Borrows `len` bytes at `off`.
pub fn bytes_at(b: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    b.get(off..off.checked_add(len)?)
}

/// Formats 16 bytes as a lower-case RFC 4122 GUID with the mixed-endian layout Microsoft and GPT
/// use (first three groups little-endian).
pub fn guid_le(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u16_at(&b, 0), Some(0x0201));
        assert_eq!(u32_at(&b, 5), Some(0x0908_0706));
        assert_eq!(u32_at(&b, 6), None);
        assert_eq!(u64_at(&b, usize::MAX), None);
        assert_eq!(bytes_at(&b, 7, 2), Some(&[8u8, 9][..]));
        assert_eq!(bytes_at(&b, 8, 2), None);
    }

    #[test]
    fn formats_gpt_guids() {
        // The VMFS partition type GUID as GPT stores it on disk.
        let raw = [
            0x2a, 0xe0, 0x31, 0xaa, 0x0f, 0x40, 0xdb, 0x11, 0x95, 0x90, 0x00, 0x0c, 0x29, 0x11,
            0xd1, 0xb8,
        ];
        assert_eq!(guid_le(&raw), "aa31e02a-400f-11db-9590-000c2911d1b8");
    }
}
