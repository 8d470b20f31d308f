//! Microsoft Virtual Hard Disk (`.vhd`, `.avhd`): Virtual PC, Virtual Server 2005 and Hyper-V
//! 2008 disks. All fields are big-endian. A 512-byte footer (cookie `conectix`) closes every
//! file; dynamic and differencing disks also have a 1,024-byte dynamic header (cookie
//! `cxsparse`) whose parent locators name the parent of a differencing disk.

use lun::{ReadAt, ReadAtExt};

use crate::InventoryError;

/// Size of the footer and of its copy at the start of dynamic disks.
pub const FOOTER_SIZE: u64 = 512;
/// Size of the dynamic disk header.
pub const DYNAMIC_HEADER_SIZE: usize = 1024;
/// Largest parent locator data read (a UTF-16 path of 32,767 characters fits).
pub const MAX_LOCATOR_BYTES: u32 = 65_536;

/// The `Disk Type` field (footer offset 60).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskType {
    /// 2: all blocks allocated, the file is the raw disk plus the footer.
    Fixed,
    /// 3: blocks allocated on write.
    Dynamic,
    /// 4: a delta over a parent disk.
    Differencing,
    /// Any other value.
    Other,
}

/// The footer ("Hard Disk Footer Format").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    /// `Data Offset` (offset 16): the dynamic header, or `u64::MAX` for fixed disks.
    pub data_offset: u64,
    /// `Creator Application` (offset 28), e.g. `vs  ` (Virtual Server), `win ` (Hyper-V),
    /// `qemu`.
    pub creator_application: String,
    /// `Current Size` (offset 48): the virtual disk size in bytes.
    pub current_size: u64,
    /// `Disk Type` (offset 60).
    pub disk_type: DiskType,
    /// `Unique Id` (offset 68).
    pub unique_id: [u8; 16],
    /// `Saved State` (offset 84): the disk belongs to a VM in saved state.
    pub saved_state: bool,
    /// Whether `Checksum` (offset 64) matches.
    pub checksum_ok: bool,
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// One's complement of the byte sum, the checksum field itself counted as zero.
pub(crate) fn checksum(b: &[u8], field: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |a, (_, &x)| a.wrapping_add(x as u32));
    !sum
}

/// Decodes a footer from 512 bytes.
pub fn parse_footer(b: &[u8]) -> Result<Footer, InventoryError> {
    if b.len() < 512 || &b[..8] != b"conectix" {
        return Err(InventoryError::Corrupt {
            format: "vhd",
            structure: "footer",
            offset: 0,
            detail: "no \"conectix\" cookie".into(),
        });
    }
    let b = &b[..512];
    let disk_type = match be32(b, 60) {
        2 => DiskType::Fixed,
        3 => DiskType::Dynamic,
        4 => DiskType::Differencing,
        _ => DiskType::Other,
    };
    let mut unique_id = [0u8; 16];
    unique_id.copy_from_slice(&b[68..84]);
    Ok(Footer {
        data_offset: be64(b, 16),
        creator_application: String::from_utf8_lossy(&b[28..32]).into_owned(),
        current_size: be64(b, 48),
        disk_type,
        unique_id,
        saved_state: b[84] != 0,
        checksum_ok: checksum(b, 64) == be32(b, 64),
    })
}

/// A parent locator entry (dynamic header offset 576 + 24·n).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentLocator {
    /// `Platform Code`: `W2ru` (relative Windows path), `W2ku` (absolute), `Wi2r`/`Wi2k`
    /// (deprecated), `Mac `, `MacX`.
    pub platform_code: String,
    /// `Platform Data Length` in bytes.
    pub data_length: u32,
    /// `Platform Data Offset`: absolute byte offset in the file.
    pub data_offset: u64,
}

/// The dynamic disk header ("Dynamic Disk Header Format").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicHeader {
    /// `Block Size` (offset 32).
    pub block_size: u32,
    /// `Parent Unique ID` (offset 40).
    pub parent_unique_id: [u8; 16],
    /// `Parent Unicode Name` (offset 64, UTF-16 BE): the parent's file name.
    pub parent_unicode_name: String,
    /// `Parent Locator Entries` (offset 576), used ones only.
    pub parent_locators: Vec<ParentLocator>,
}

/// Decodes a dynamic header from 1,024 bytes.
pub fn parse_dynamic_header(b: &[u8], offset: u64) -> Result<DynamicHeader, InventoryError> {
    if b.len() < DYNAMIC_HEADER_SIZE || &b[..8] != b"cxsparse" {
        return Err(InventoryError::Corrupt {
            format: "vhd",
            structure: "dynamic disk header",
            offset,
            detail: "no \"cxsparse\" cookie".into(),
        });
    }
    let mut parent_unique_id = [0u8; 16];
    parent_unique_id.copy_from_slice(&b[40..56]);
    let parent_unicode_name = crate::text::utf16_until_nul(&b[64..576], true);
    let mut parent_locators = Vec::new();
    for i in 0..8 {
        let e = &b[576 + i * 24..600 + i * 24];
        let code = be32(e, 0);
        if code == 0 {
            continue;
        }
        parent_locators.push(ParentLocator {
            platform_code: String::from_utf8_lossy(&e[..4]).into_owned(),
            data_length: be32(e, 8),
            data_offset: be64(e, 16),
        });
    }
    Ok(DynamicHeader {
        block_size: be32(b, 32),
        parent_unique_id,
        parent_unicode_name,
        parent_locators,
    })
}

/// What the inventory needs of a VHD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VhdInfo {
    /// The footer.
    pub footer: Footer,
    /// Parent paths from the locators, best first (relative `W2ru`, then absolute `W2ku`),
    /// then the bare parent file name.
    pub parent_paths: Vec<String>,
}

/// Reads the footer (and for differencing disks the dynamic header and parent locators) of
/// a VHD. Reads at most a few KiB.
pub fn read(src: &dyn ReadAt) -> Result<VhdInfo, InventoryError> {
    let size = src.size();
    if size < FOOTER_SIZE {
        return Err(InventoryError::Corrupt {
            format: "vhd",
            structure: "footer",
            offset: 0,
            detail: format!("file of {size} bytes is smaller than a footer"),
        });
    }
    // Virtual PC before 2004 wrote a 511-byte footer; the copy at offset 0 of dynamic disks
    // is the fallback for a damaged end.
    let footer = parse_footer(&src.read_vec(size - FOOTER_SIZE, 512)?)
        .or_else(|e| {
            if size > 512 {
                parse_footer(&src.read_vec(size - 511, 511).map(|mut v| {
                    v.push(0);
                    v
                })?)
            } else {
                Err(e)
            }
        })
        .or_else(|e| parse_footer(&src.read_vec(0, 512)?).map_err(|_| e))?;
    let mut parent_paths = Vec::new();
    if footer.disk_type == DiskType::Differencing {
        let off = footer.data_offset;
        if off
            .checked_add(DYNAMIC_HEADER_SIZE as u64)
            .is_none_or(|end| end > size)
        {
            return Err(InventoryError::Corrupt {
                format: "vhd",
                structure: "footer.Data Offset",
                offset: size - FOOTER_SIZE + 16,
                detail: format!("dynamic header at {off} lies outside the {size}-byte file"),
            });
        }
        let dh = parse_dynamic_header(&src.read_vec(off, DYNAMIC_HEADER_SIZE)?, off)?;
        let mut ranked: Vec<(u8, String)> = Vec::new();
        for loc in &dh.parent_locators {
            let rank = match loc.platform_code.as_str() {
                "W2ru" => 0,
                "W2ku" => 1,
                _ => continue,
            };
            if loc.data_length == 0
                || loc.data_length > MAX_LOCATOR_BYTES
                || loc
                    .data_offset
                    .checked_add(loc.data_length as u64)
                    .is_none_or(|e| e > size)
            {
                continue;
            }
            let data = src.read_vec(loc.data_offset, loc.data_length as usize)?;
            let path = crate::text::utf16_until_nul(&data, false);
            if !path.is_empty() {
                ranked.push((rank, path));
            }
        }
        ranked.sort_by_key(|(r, _)| *r);
        parent_paths = ranked.into_iter().map(|(_, p)| p).collect();
        if !dh.parent_unicode_name.is_empty() {
            parent_paths.push(dh.parent_unicode_name);
        }
    }
    Ok(VhdInfo {
        footer,
        parent_paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lun::MemSource;

    #[test]
    fn differencing_locators_resolve_relative_first() {
        let img =
            crate::synth::vhd_differencing(1 << 30, "base.vhd", ".\\base.vhd", "D:\\VMs\\base.vhd");
        let info = read(&MemSource::new("c.vhd", img)).unwrap();
        assert_eq!(info.footer.disk_type, DiskType::Differencing);
        assert!(info.footer.checksum_ok);
        assert_eq!(
            info.parent_paths,
            vec![".\\base.vhd", "D:\\VMs\\base.vhd", "base.vhd"]
        );
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        assert!(read(&MemSource::new("x", vec![0; 100])).is_err());
        assert!(read(&MemSource::new("x", vec![7; 4096])).is_err());
        let mut img = crate::synth::vhd_differencing(1 << 20, "p", "p", "p");
        let n = img.len();
        // Data Offset pointing far outside the file.
        img[n - 512 + 16..n - 512 + 24].copy_from_slice(&(u64::MAX - 10).to_be_bytes());
        img[16..24].copy_from_slice(&(u64::MAX - 10).to_be_bytes());
        assert!(read(&MemSource::new("x", img)).is_err());
    }
}
