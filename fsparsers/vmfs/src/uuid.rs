/// Formats a 16-byte VMware UUID (`timeLo` u32, `timeHi` u32, `rand` u16, MAC address) the way
/// ESXi prints it: `61137dd5-df6bc2c8-f0e7-000c29801686`.
pub fn vmfs_uuid(b: &[u8]) -> String {
    let mut raw = [0u8; 16];
    let n = b.len().min(16);
    raw[..n].copy_from_slice(&b[..n]);
    let lo = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let hi = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
    let rand = u16::from_le_bytes([raw[8], raw[9]]);
    let mac: String = raw[10..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{lo:08x}-{hi:08x}-{rand:04x}-{mac}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_esxi() {
        let raw = [
            0xd5, 0x7d, 0x13, 0x61, 0xc8, 0xc2, 0x6b, 0xdf, 0xe7, 0xf0, 0x00, 0x0c, 0x29, 0x80,
            0x16, 0x86,
        ];
        assert_eq!(
            super::vmfs_uuid(&raw),
            "61137dd5-df6bc2c8-f0e7-000c29801686"
        );
    }
}
