//! VMFS6 hashed directories. The directory file starts with a 64 KiB header block
//! (`FS6_DirHeader`: version, entry counts, up to 128 allocation-map block numbers, `.` and `..`,
//! then the name hash table). Blocks of `mdAlignment` bytes follow, each with a 64-byte header
//! (version, type, slot counts, a slot bitmap whose 0 bits mark used slots). Allocation-map
//! blocks hold one nibble per directory block (low two bits: 1 = entries, 2 = links,
//! 3 = allocation map). Listing walks the allocation maps to the entry blocks and reads their
//! used slots; the hash table and link blocks only serve lookups by name.

use fscore::le::{bytes_at, u16_at, u32_at};
use lun::ReadAt;

use crate::dir5::RawEntry;
use crate::error::{Result, VmfsError};
use crate::lvm::cstr;

/// `FS6_DIR_HEADER_VERSION`.
pub const DIR_HEADER_VERSION: u32 = 0xF5_0001;
/// `FS6_DIR_HEADER_DEBUG_VERSION`.
pub const DIR_HEADER_DEBUG_VERSION: u32 = 0xFD_C001;
/// Size of the header block.
pub const DIR_HEADER_BLOCK_SIZE: u64 = 0x1_0000;
/// Size of `FS6_DirBlockHeader`.
pub const BLOCK_HEADER_SIZE: usize = 0x40;
/// Size of `FS6_DirEntry`.
pub const DIRENT_SIZE: usize = 0x120;
/// Bound on entries listed from one directory.
pub const MAX_ENTRIES: usize = 1 << 20;
/// Directory files larger than this are refused.
pub const MAX_DIR_BYTES: u64 = 1 << 32;

const TYPE_DIRENT: u8 = 1;

/// Lists a VMFS6 directory file whose blocks are `block_size` (mdAlignment) bytes.
pub fn read_dir(dir: &dyn ReadAt, fd: u32, volume: &str, block_size: u64) -> Result<Vec<RawEntry>> {
    let bad = |detail: String| VmfsError::CorruptFile {
        structure: "directory".into(),
        fd: fd as u64,
        device: volume.to_string(),
        detail,
    };
    let size = dir.size();
    if size > MAX_DIR_BYTES {
        return Err(bad(format!(
            "directory size {size} exceeds {MAX_DIR_BYTES}"
        )));
    }
    if size < 0x600 {
        return Err(bad(format!(
            "directory of {size} bytes is too small for its header"
        )));
    }
    let mut hdr = vec![0u8; 0x210];
    dir.read_exact_at(0, &mut hdr)?;
    let version = u32_at(&hdr, 0).unwrap_or(0);
    if version != DIR_HEADER_VERSION && version != DIR_HEADER_DEBUG_VERSION {
        return Err(bad(format!(
            "directory header version {version:#x} is unknown"
        )));
    }
    let num_entries = u32_at(&hdr, 4).unwrap_or(0) as usize;
    let num_maps = u32_at(&hdr, 0x0c).unwrap_or(0) as usize;
    if num_maps > 128 {
        return Err(bad(format!(
            "{num_maps} allocation-map blocks (at most 128)"
        )));
    }
    let bs = block_size as usize;
    let nibbles_per_map = 2 * (bs - BLOCK_HEADER_SIZE);
    let blocks_in_file = size.saturating_sub(DIR_HEADER_BLOCK_SIZE) / block_size;
    let max_slots = ((bs - BLOCK_HEADER_SIZE) / DIRENT_SIZE).min(56 * 8);

    let mut out = Vec::new();
    let mut map = vec![0u8; bs];
    let mut blk = vec![0u8; bs];
    for m in 0..num_maps {
        let map_block = u32_at(&hdr, 0x10 + 4 * m).unwrap_or(0) as u64;
        if map_block >= blocks_in_file {
            return Err(bad(format!(
                "allocation-map block {map_block} lies past the directory"
            )));
        }
        dir.read_exact_at(DIR_HEADER_BLOCK_SIZE + map_block * block_size, &mut map)?;
        // Map entries past the file's end describe blocks never written: only the bytes
        // covering the file's blocks are looked at.
        let first = (m * nibbles_per_map) as u64;
        let live =
            (blocks_in_file.saturating_sub(first).div_ceil(2) as usize).min(bs - BLOCK_HEADER_SIZE);
        for (byte_idx, &byte) in map[BLOCK_HEADER_SIZE..BLOCK_HEADER_SIZE + live]
            .iter()
            .enumerate()
        {
            if byte == 0 {
                continue;
            }
            for (half, nib) in [(0usize, byte >> 4), (1, byte & 0xF)] {
                if nib & 3 != TYPE_DIRENT {
                    continue;
                }
                let block = (m * nibbles_per_map + byte_idx * 2 + half) as u64;
                if block >= blocks_in_file {
                    // Map entries past the file's end describe blocks never written.
                    continue;
                }
                dir.read_exact_at(DIR_HEADER_BLOCK_SIZE + block * block_size, &mut blk)?;
                let total = u16_at(&blk, 4).unwrap_or(0) as usize;
                if total > max_slots {
                    return Err(bad(format!(
                        "entry block {block} claims {total} slots (at most {max_slots})"
                    )));
                }
                let bitmap = bytes_at(&blk, 8, 56).unwrap_or(&[]);
                for slot in 0..total {
                    if bitmap[slot >> 3] >> (slot & 7) & 1 != 0 {
                        continue;
                    }
                    let o = BLOCK_HEADER_SIZE + slot * DIRENT_SIZE;
                    let rec = &blk[o..o + DIRENT_SIZE];
                    let addr = u32_at(rec, 4).unwrap_or(0);
                    if addr == 0 {
                        continue;
                    }
                    out.push(RawEntry {
                        name: cstr(bytes_at(rec, 0x18, 256).unwrap_or(&[])),
                        addr,
                        fd_type: u32_at(rec, 0).unwrap_or(0),
                    });
                    if out.len() > MAX_ENTRIES {
                        return Err(VmfsError::Limit {
                            what: format!("entries of directory FD {fd:#x}"),
                            limit: MAX_ENTRIES as u64,
                        });
                    }
                }
            }
        }
    }
    // numEntries counts `.` and `..`, which live in the header.
    let _ = num_entries;
    Ok(out)
}
