//! Microsoft VHDX (`.vhdx`, `.avhdx`): Hyper-V 2012+ disks and checkpoint differencing disks
//! ([MS-VHDX]). Little-endian; GUIDs in Microsoft's mixed-endian layout. The inventory reads
//! the file identifier, the two headers (to see whether the log is dirty), the region table,
//! the metadata table, and the File Parameters, Virtual Disk Size and Parent Locator items.

use fscore::le;
use lun::{ReadAt, ReadAtExt};

use crate::InventoryError;

/// File type identifier signature at offset 0.
pub const SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Offsets of the two headers.
pub const HEADER_OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
/// Offsets of the two region tables.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 * 1024, 256 * 1024];
/// Metadata region GUID.
pub const METADATA_REGION: &str = "8b7ca206-4790-4b9a-b8fe-575f050f886e";
/// BAT region GUID.
pub const BAT_REGION: &str = "2dc27766-f623-4200-9d64-115e9bfd4a08";
/// File Parameters metadata item.
pub const FILE_PARAMETERS: &str = "caa16737-fa36-4d43-b3b6-33f0aa44e76b";
/// Virtual Disk Size metadata item.
pub const VIRTUAL_DISK_SIZE: &str = "2fa54224-cd1b-4876-b211-5dbed83bf4b8";
/// Parent Locator metadata item.
pub const PARENT_LOCATOR: &str = "a8d35f2b-b30b-454d-abf7-d3d84834ab0c";
/// The locator type of VHDX parents.
pub const VHDX_PARENT_LOCATOR_TYPE: &str = "b04aefb7-d19e-4a81-b789-25b8e9445913";
/// Largest parent locator item read.
pub const MAX_LOCATOR_BYTES: u32 = 64 * 1024;
/// At most this many region / metadata entries (the format's own limit is 2,047).
pub const MAX_ENTRIES: u32 = 2047;

/// What the inventory needs of a VHDX.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VhdxInfo {
    /// `Creator` of the file identifier (UTF-16).
    pub creator: String,
    /// Virtual disk size in bytes.
    pub virtual_disk_size: Option<u64>,
    /// Block size from File Parameters.
    pub block_size: Option<u32>,
    /// `HasParent` flag of File Parameters: a differencing disk.
    pub has_parent: bool,
    /// The parent locator's key/value pairs (`parent_linkage`, `relative_path`,
    /// `volume_path`, `absolute_win32_path`).
    pub parent_locator: Vec<(String, String)>,
    /// The current header's `LogGuid` is not zero: the log holds entries not yet applied,
    /// i.e. the file was open for writing when the LUN was cloned.
    pub log_dirty: bool,
}

impl VhdxInfo {
    /// Parent paths, best first: relative, then absolute, then volume path.
    pub fn parent_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for key in ["relative_path", "absolute_win32_path", "volume_path"] {
            if let Some((_, v)) = self.parent_locator.iter().find(|(k, _)| k == key)
                && !v.is_empty()
            {
                out.push(v.clone());
            }
        }
        out
    }
}

fn guid_at(b: &[u8], off: usize) -> Option<String> {
    let raw: [u8; 16] = le::bytes_at(b, off, 16)?.try_into().ok()?;
    Some(le::guid_le(&raw))
}

fn corrupt(structure: &'static str, offset: u64, detail: impl Into<String>) -> InventoryError {
    InventoryError::Corrupt {
        format: "vhdx",
        structure,
        offset,
        detail: detail.into(),
    }
}

/// CRC-32C (Castagnoli), the checksum of VHDX headers and tables.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        t[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

fn checksum_ok(block: &[u8], field: usize) -> bool {
    let stored = le::u32_at(block, field).unwrap_or(0);
    let mut copy = block.to_vec();
    copy[field..field + 4].fill(0);
    crc32c(&copy) == stored
}

/// Reads the structures listed in the module documentation; at most ~200 KiB.
pub fn read(src: &dyn ReadAt) -> Result<VhdxInfo, InventoryError> {
    let size = src.size();
    if size < 320 * 1024 {
        return Err(corrupt(
            "file",
            0,
            format!("{size} bytes is smaller than the VHDX header section"),
        ));
    }
    let ident = src.read_vec(0, 520)?;
    if &ident[..8] != SIGNATURE {
        return Err(corrupt(
            "file type identifier",
            0,
            "no \"vhdxfile\" signature",
        ));
    }
    let mut info = VhdxInfo {
        creator: crate::text::utf16_until_nul(&ident[8..520], false),
        ..Default::default()
    };

    // The current header is the valid one with the higher SequenceNumber.
    let mut current: Option<(u64, Vec<u8>)> = None;
    for off in HEADER_OFFSETS {
        let h = src.read_vec(off, 4096)?;
        if &h[..4] != b"head" || !checksum_ok(&h, 4) {
            continue;
        }
        let seq = le::u64_at(&h, 8).unwrap_or(0);
        if current.as_ref().is_none_or(|(s, _)| seq > *s) {
            current = Some((seq, h));
        }
    }
    let Some((_, header)) = current else {
        return Err(corrupt(
            "header",
            HEADER_OFFSETS[0],
            "neither header has a valid signature and checksum",
        ));
    };
    info.log_dirty = le::bytes_at(&header, 48, 16).is_some_and(|g| g.iter().any(|&b| b != 0));

    let mut region = None;
    for off in REGION_TABLE_OFFSETS {
        let t = src.read_vec(off, 64 * 1024)?;
        if &t[..4] == b"regi" && checksum_ok(&t, 4) {
            region = Some((off, t));
            break;
        }
    }
    let Some((rt_off, rt)) = region else {
        return Err(corrupt(
            "region table",
            REGION_TABLE_OFFSETS[0],
            "neither region table is valid",
        ));
    };
    let count = le::u32_at(&rt, 8).unwrap_or(0);
    if count > MAX_ENTRIES {
        return Err(corrupt(
            "region table",
            rt_off + 8,
            format!("EntryCount {count} > {MAX_ENTRIES}"),
        ));
    }
    let mut metadata = None;
    for i in 0..count as usize {
        let e = 16 + i * 32;
        if guid_at(&rt, e).as_deref() == Some(METADATA_REGION) {
            let off = le::u64_at(&rt, e + 16).unwrap_or(0);
            let len = le::u32_at(&rt, e + 24).unwrap_or(0);
            metadata = Some((off, len));
        }
    }
    let Some((md_off, md_len)) = metadata else {
        return Err(corrupt("region table", rt_off, "no metadata region"));
    };
    if md_len < 64 * 1024 || md_off.checked_add(md_len as u64).is_none_or(|e| e > size) {
        return Err(corrupt(
            "region table entry (metadata)",
            rt_off,
            format!(
                "metadata region at {md_off}, {md_len} bytes, does not fit the {size}-byte file"
            ),
        ));
    }
    let mt = src.read_vec(md_off, 64 * 1024)?;
    if &mt[..8] != b"metadata" {
        return Err(corrupt(
            "metadata table",
            md_off,
            "no \"metadata\" signature",
        ));
    }
    let entries = le::u16_at(&mt, 10).unwrap_or(0) as u32;
    if entries > MAX_ENTRIES {
        return Err(corrupt(
            "metadata table",
            md_off + 10,
            format!("EntryCount {entries} > {MAX_ENTRIES}"),
        ));
    }
    for i in 0..entries as usize {
        let e = 32 + i * 32;
        let Some(item) = guid_at(&mt, e) else { break };
        let off = le::u32_at(&mt, e + 16).unwrap_or(0) as u64;
        let len = le::u32_at(&mt, e + 20).unwrap_or(0);
        if off < 64 * 1024
            || off
                .checked_add(len as u64)
                .is_none_or(|end| end > md_len as u64)
        {
            if len != 0 {
                return Err(corrupt(
                    "metadata table entry",
                    md_off + e as u64,
                    format!("item {item} at {off}, {len} bytes, lies outside the metadata region"),
                ));
            }
            continue;
        }
        let at = md_off + off;
        match item.as_str() {
            FILE_PARAMETERS if len >= 8 => {
                let b = src.read_vec(at, 8)?;
                info.block_size = le::u32_at(&b, 0);
                info.has_parent = le::u32_at(&b, 4).unwrap_or(0) & 2 != 0;
            }
            VIRTUAL_DISK_SIZE if len >= 8 => {
                info.virtual_disk_size = le::u64_at(&src.read_vec(at, 8)?, 0);
            }
            PARENT_LOCATOR => {
                if len > MAX_LOCATOR_BYTES {
                    return Err(InventoryError::Limit {
                        what: format!("VHDX parent locator of {len} bytes"),
                        limit: MAX_LOCATOR_BYTES as u64,
                    });
                }
                let b = src.read_vec(at, len as usize)?;
                info.parent_locator = parse_parent_locator(&b, at)?;
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Decodes a parent locator item: a header (locator type GUID, KeyValueCount at 18), then
/// 12-byte entries (KeyOffset, ValueOffset, KeyLength, ValueLength) pointing at UTF-16
/// strings inside the item.
pub fn parse_parent_locator(b: &[u8], at: u64) -> Result<Vec<(String, String)>, InventoryError> {
    if guid_at(b, 0).as_deref() != Some(VHDX_PARENT_LOCATOR_TYPE) {
        return Err(corrupt("parent locator", at, "unknown LocatorType"));
    }
    let n = le::u16_at(b, 18).unwrap_or(0) as usize;
    let mut out = Vec::with_capacity(n.min(64));
    for i in 0..n {
        let e = 20 + i * 12;
        let (Some(ko), Some(vo), Some(kl), Some(vl)) = (
            le::u32_at(b, e),
            le::u32_at(b, e + 4),
            le::u16_at(b, e + 8),
            le::u16_at(b, e + 10),
        ) else {
            return Err(corrupt(
                "parent locator entry",
                at + e as u64,
                "entry lies past the item",
            ));
        };
        let (Some(k), Some(v)) = (
            le::bytes_at(b, ko as usize, kl as usize),
            le::bytes_at(b, vo as usize, vl as usize),
        ) else {
            return Err(corrupt(
                "parent locator entry",
                at + e as u64,
                "key or value lies past the item",
            ));
        };
        out.push((crate::text::utf16(k, false), crate::text::utf16(v, false)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lun::MemSource;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn differencing_vhdx_locator() {
        let img = crate::synth::vhdx(
            10 << 30,
            Some(&[
                ("parent_linkage", "{83ff2a0b-2a6e-4b1f-9d1e-2c1f0a6b3c11}"),
                ("relative_path", ".\\base.vhdx"),
                (
                    "absolute_win32_path",
                    "C:\\ClusterStorage\\Volume1\\vm\\base.vhdx",
                ),
            ]),
            true,
        );
        let info = read(&MemSource::new("c.avhdx", img)).unwrap();
        assert!(info.has_parent);
        assert!(info.log_dirty);
        assert_eq!(info.virtual_disk_size, Some(10 << 30));
        assert_eq!(
            info.parent_paths(),
            vec![".\\base.vhdx", "C:\\ClusterStorage\\Volume1\\vm\\base.vhdx"]
        );
    }

    #[test]
    fn corrupt_tables_are_errors() {
        let mut img = crate::synth::vhdx(1 << 30, None, false);
        for off in REGION_TABLE_OFFSETS {
            img[off as usize + 20] ^= 0xFF;
        }
        assert!(read(&MemSource::new("x", img)).is_err());
        assert!(read(&MemSource::new("x", vec![0; 512 * 1024])).is_err());
        assert!(read(&MemSource::new("x", vec![0; 10])).is_err());
    }
}
