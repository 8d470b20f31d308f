//! VMFS6 hashed directories.
//!
//! A directory file is a 64 KiB header block followed by 4 KiB blocks. The header holds the
//! counts, the list of allocation-map blocks, the `.` and `..` entries and a hash table of
//! 16001 32-bit locations (15973 in the root, whose last 28 slots belong to the system
//! files). Block 0 after the header is the allocation map (4 bits per block: type, free,
//! not-written), then come entry blocks (14 entries of 0x120 bytes) and link blocks (48 link
//! groups chaining names whose hash slots collide).
//!
//! The writer puts entry blocks first, right after the map, then link blocks: vmfs6-tools
//! lists a directory by walking blocks 1.. in order and reading every block whose map type
//! has bit 0 set, and stops at the first block marked not-written.

use anyhow::{Result, ensure};

use crate::v6_format::{
    DIR_ROOT_SYSTEM_FIRST, name_hash, name_hash_slot, name_link_hash, put_u16, put_u32, put_u64,
};

/// Directory header version (`FS6_DIR_HEADER_VERSION`).
pub const DIR_VERSION: u32 = 0x00f5_0001;
/// Size of the header block.
pub const DIR_HEADER_SIZE: u64 = 0x10000;
/// Size of every other directory block.
pub const DIR_BLOCK_SIZE: u64 = 4096;
/// Size of a directory entry.
pub const DIRENT_SIZE: usize = 0x120;
/// Offset of `.` in the header (`..` follows).
pub const DIR_SELF_OFFSET: usize = 0x3b8;
/// Offset of the hash table in the header.
pub const DIR_HASH_OFFSET: usize = 0x5f8;
/// Size of a block header (version, type, slot counts, slot bitmap).
pub const DIR_BLOCK_HEADER: usize = 0x40;
/// Entries per entry block.
pub const DIRENTS_PER_BLOCK: usize = (DIR_BLOCK_SIZE as usize - DIR_BLOCK_HEADER) / DIRENT_SIZE;
/// Size of a link group.
pub const LINK_GROUP_SIZE: usize = 0x54;
/// Link groups per link block.
pub const LINK_GROUPS_PER_BLOCK: usize =
    (DIR_BLOCK_SIZE as usize - DIR_BLOCK_HEADER) / LINK_GROUP_SIZE;
/// Links per link group.
pub const LINKS_PER_GROUP: usize = 12;
/// Blocks one allocation map block can describe.
pub const MAP_ENTRIES: usize = 2 * (DIR_BLOCK_SIZE as usize - DIR_BLOCK_HEADER);
/// Longest name an entry can hold.
pub const NAME_MAX: usize = 255;

/// Block types in the allocation map and block headers.
pub mod block_type {
    /// Directory entries.
    pub const DIRENT: u8 = 1;
    /// Link groups.
    pub const LINK: u8 = 2;
    /// Allocation map.
    pub const ALLOCATION_MAP: u8 = 3;
}

/// Allocation map flag: the block has free slots.
pub const MAP_FREE: u8 = 0x4;
/// Allocation map flag: the block was never written (ends the directory for vmfs6-tools).
pub const MAP_NOT_WRITTEN: u8 = 0x8;

/// One name in a directory.
#[derive(Clone, Debug)]
pub struct DirEntryIn {
    /// The name, 1..=255 bytes, no `/` or NUL.
    pub name: Vec<u8>,
    /// Descriptor type of the target.
    pub fd_type: u32,
    /// File descriptor address of the target.
    pub fd_addr: u32,
    /// A system file in the root: fixed hash slot, no name hash.
    pub system_slot: Option<u16>,
}

/// Number of 4 KiB blocks (after the header) a directory of `entries` needs. Link blocks are
/// counted pessimistically so the size can be planned before the hashes are known.
pub fn planned_blocks(entries: &[DirEntryIn], in_root: bool) -> u64 {
    let dirent_blocks = entries.len().div_ceil(DIRENTS_PER_BLOCK);
    let groups = link_groups(entries, in_root);
    1 + dirent_blocks as u64 + groups.div_ceil(LINK_GROUPS_PER_BLOCK) as u64
}

/// Directory file length for `entries`.
pub fn planned_len(entries: &[DirEntryIn], in_root: bool) -> u64 {
    DIR_HEADER_SIZE + planned_blocks(entries, in_root) * DIR_BLOCK_SIZE
}

fn slot_of(e: &DirEntryIn, in_root: bool) -> u64 {
    match e.system_slot {
        Some(s) => u64::from(s),
        None => name_hash_slot(&e.name, in_root),
    }
}

/// Link groups needed: every hash slot shared by k > 1 names needs ceil(k / 12) groups.
fn link_groups(entries: &[DirEntryIn], in_root: bool) -> usize {
    let mut slots: Vec<u64> = entries.iter().map(|e| slot_of(e, in_root)).collect();
    slots.sort_unstable();
    let mut groups = 0;
    let mut i = 0;
    while i < slots.len() {
        let mut j = i;
        while j < slots.len() && slots[j] == slots[i] {
            j += 1;
        }
        if j - i > 1 {
            groups += (j - i).div_ceil(LINKS_PER_GROUP);
        }
        i = j;
    }
    groups
}

/// Location word used by the hash table, link groups and `nextGroup`: type in bits 0..1,
/// block in bits 2..23, slot in bits 24..31.
pub fn location(kind: u8, block: u64, slot: usize) -> u32 {
    u32::from(kind) | ((block as u32 & 0x3f_ffff) << 2) | ((slot as u32 & 0xff) << 24)
}

/// Builds the complete directory file.
///
/// `self_addr`/`parent_addr` are the FDs of the directory and its parent (the root is its own
/// parent); `self_type` is the directory's descriptor type (system directories are type 5).
pub fn build(
    entries: &[DirEntryIn],
    self_addr: u32,
    self_type: u32,
    parent_addr: u32,
    parent_type: u32,
    in_root: bool,
) -> Result<Vec<u8>> {
    for e in entries {
        ensure!(
            !e.name.is_empty() && e.name.len() <= NAME_MAX,
            "name of {} bytes does not fit a VMFS6 directory entry (1..=255)",
            e.name.len()
        );
        ensure!(
            !e.name.contains(&0) && !e.name.contains(&b'/'),
            "name {:?} contains NUL or '/'",
            String::from_utf8_lossy(&e.name)
        );
    }
    let dirent_blocks = entries.len().div_ceil(DIRENTS_PER_BLOCK);
    let groups = link_groups(entries, in_root);
    let link_blocks = groups.div_ceil(LINK_GROUPS_PER_BLOCK);
    let blocks = 1 + dirent_blocks + link_blocks;
    ensure!(
        blocks <= MAP_ENTRIES,
        "directory with {} entries needs {blocks} blocks; one allocation map covers {MAP_ENTRIES}",
        entries.len()
    );
    let len = DIR_HEADER_SIZE as usize + blocks * DIR_BLOCK_SIZE as usize;
    let mut buf = vec![0u8; len];
    let block_off = |b: usize| DIR_HEADER_SIZE as usize + b * DIR_BLOCK_SIZE as usize;

    // Header.
    put_u32(&mut buf, 0x00, DIR_VERSION);
    put_u32(&mut buf, 0x04, entries.len() as u32 + 2);
    put_u32(&mut buf, 0x08, entries.len() as u32 + 2);
    put_u32(&mut buf, 0x0c, 1);
    put_u32(&mut buf, 0x10, 0);
    write_dirent(&mut buf, DIR_SELF_OFFSET, self_type, self_addr, 0, b".");
    write_dirent(
        &mut buf,
        DIR_SELF_OFFSET + DIRENT_SIZE,
        parent_type,
        parent_addr,
        0,
        b"..",
    );

    // Allocation map (block 0).
    let map = block_off(0);
    put_u16(&mut buf, map + 2, u16::from(block_type::ALLOCATION_MAP));
    let mut map_nibbles = vec![MAP_NOT_WRITTEN; MAP_ENTRIES];
    map_nibbles[0] = block_type::ALLOCATION_MAP;

    // Entry blocks.
    let mut locations: Vec<(u64, u32, u16)> = Vec::with_capacity(entries.len());
    for (b, chunk) in entries.chunks(DIRENTS_PER_BLOCK).enumerate() {
        let block = 1 + b;
        let off = block_off(block);
        let free = DIRENTS_PER_BLOCK - chunk.len();
        block_header(
            &mut buf[off..],
            block_type::DIRENT,
            DIRENTS_PER_BLOCK,
            chunk.len(),
        );
        map_nibbles[block] = block_type::DIRENT | if free > 0 { MAP_FREE } else { 0 };
        for (slot, e) in chunk.iter().enumerate() {
            let eoff = off + DIR_BLOCK_HEADER + slot * DIRENT_SIZE;
            let hash = if e.system_slot.is_some() {
                0
            } else {
                name_hash(&e.name) as u32
            };
            write_dirent(&mut buf, eoff, e.fd_type, e.fd_addr, hash, &e.name);
            let link_hash = if e.system_slot.is_some() {
                0
            } else {
                name_link_hash(&e.name)
            };
            locations.push((
                slot_of(e, in_root),
                location(block_type::DIRENT, block as u64, slot),
                link_hash,
            ));
        }
    }

    // Hash table and link groups.
    let mut order: Vec<usize> = (0..locations.len()).collect();
    order.sort_by_key(|&i| (locations[i].0, i));
    let first_link_block = 1 + dirent_blocks;
    let mut next_group = 0usize;
    let mut i = 0;
    while i < order.len() {
        let slot = locations[order[i]].0;
        let mut j = i;
        while j < order.len() && locations[order[j]].0 == slot {
            j += 1;
        }
        let same = &order[i..j];
        let table = DIR_HASH_OFFSET + slot as usize * 4;
        if same.len() == 1 {
            put_u32(&mut buf, table, locations[same[0]].1);
        } else {
            let chunks: Vec<&[usize]> = same.chunks(LINKS_PER_GROUP).collect();
            let group_ids: Vec<usize> = (0..chunks.len()).map(|k| next_group + k).collect();
            next_group += chunks.len();
            let group_loc = |g: usize| {
                location(
                    block_type::LINK,
                    (first_link_block + g / LINK_GROUPS_PER_BLOCK) as u64,
                    g % LINK_GROUPS_PER_BLOCK,
                )
            };
            put_u32(&mut buf, table, group_loc(group_ids[0]));
            for (k, links) in chunks.iter().enumerate() {
                let g = group_ids[k];
                let goff = block_off(first_link_block + g / LINK_GROUPS_PER_BLOCK)
                    + DIR_BLOCK_HEADER
                    + (g % LINK_GROUPS_PER_BLOCK) * LINK_GROUP_SIZE;
                put_u16(&mut buf, goff, slot as u16);
                buf[goff + 2] = LINKS_PER_GROUP as u8;
                buf[goff + 3] = (LINKS_PER_GROUP - links.len()) as u8;
                buf[goff + 4] = links.len() as u8;
                for (n, &e) in links.iter().enumerate() {
                    let l = goff + 6 + n * 6;
                    put_u32(&mut buf, l, locations[e].1);
                    put_u16(&mut buf, l + 4, locations[e].2);
                }
                let next = if k + 1 < chunks.len() {
                    group_loc(group_ids[k + 1])
                } else {
                    0
                };
                put_u32(&mut buf, goff + 0x4e, next);
            }
        }
        i = j;
    }
    debug_assert_eq!(next_group, groups);
    for lb in 0..link_blocks {
        let block = first_link_block + lb;
        let used = (groups - lb * LINK_GROUPS_PER_BLOCK).min(LINK_GROUPS_PER_BLOCK);
        block_header(
            &mut buf[block_off(block)..],
            block_type::LINK,
            LINK_GROUPS_PER_BLOCK,
            used,
        );
        map_nibbles[block] = block_type::LINK
            | if used < LINK_GROUPS_PER_BLOCK {
                MAP_FREE
            } else {
                0
            };
    }

    // Two nibbles a byte, the even entry in the high nibble.
    for (k, pair) in map_nibbles.chunks(2).enumerate() {
        buf[map + DIR_BLOCK_HEADER + k] = (pair[0] << 4) | pair.get(1).copied().unwrap_or(0);
    }
    Ok(buf)
}

/// The slot used by system file `index` (0 = `.fbb.sf`, …) in the root hash table.
pub fn system_slot(index: u16) -> u16 {
    DIR_ROOT_SYSTEM_FIRST + index
}

fn block_header(buf: &mut [u8], kind: u8, total: usize, used: usize) {
    put_u16(buf, 0, 1);
    put_u16(buf, 2, u16::from(kind));
    put_u16(buf, 4, total as u16);
    put_u16(buf, 6, (total - used) as u16);
    // Slot bitmap: 1 = free.
    for s in used..total {
        buf[8 + s / 8] |= 1 << (s % 8);
    }
}

fn write_dirent(buf: &mut [u8], off: usize, fd_type: u32, fd_addr: u32, hash: u32, name: &[u8]) {
    put_u32(buf, off, fd_type);
    put_u32(buf, off + 4, fd_addr);
    put_u32(buf, off + 8, 1);
    put_u32(buf, off + 0xc, hash);
    put_u64(buf, off + 0x10, off as u64);
    buf[off + 0x18..off + 0x18 + name.len()].copy_from_slice(name);
}

/// One entry read back from a directory file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntryOut {
    /// The name.
    pub name: Vec<u8>,
    /// Descriptor type.
    pub fd_type: u32,
    /// File descriptor address.
    pub fd_addr: u32,
}

/// Lists a directory file by walking its allocation maps (what a reader that needs no hash
/// lookups does), skipping `.` and `..`. Also checks that every listed name is found again
/// through the hash table and link chains.
pub fn list(buf: &[u8], in_root: bool) -> Result<Vec<DirEntryOut>> {
    use crate::v6_format::{get_u16, get_u32};
    ensure!(
        get_u32(buf, 0) == Some(DIR_VERSION),
        "directory header version is not {DIR_VERSION:#x}"
    );
    let maps = get_u32(buf, 0x0c).unwrap_or(0) as usize;
    ensure!(maps <= 128, "directory claims {maps} allocation maps");
    let mut out = Vec::new();
    let blk = |b: usize| DIR_HEADER_SIZE as usize + b * DIR_BLOCK_SIZE as usize;
    for m in 0..maps {
        let map_block = get_u32(buf, 0x10 + 4 * m).unwrap_or(0) as usize;
        let map = buf
            .get(blk(map_block) + DIR_BLOCK_HEADER..blk(map_block) + DIR_BLOCK_SIZE as usize)
            .ok_or_else(|| anyhow::anyhow!("allocation map block {map_block} past the end"))?;
        for (k, byte) in map.iter().enumerate() {
            for (n, nib) in [byte >> 4, byte & 0xf].into_iter().enumerate() {
                if nib & 3 != block_type::DIRENT || nib & MAP_NOT_WRITTEN != 0 {
                    continue;
                }
                let b = m * MAP_ENTRIES + 2 * k + n;
                let off = blk(b);
                let block = buf
                    .get(off..off + DIR_BLOCK_SIZE as usize)
                    .ok_or_else(|| anyhow::anyhow!("entry block {b} past the directory end"))?;
                let total = get_u16(block, 4).unwrap_or(0) as usize;
                ensure!(
                    total <= DIRENTS_PER_BLOCK,
                    "entry block {b} claims {total} slots"
                );
                for s in 0..total {
                    if block[8 + s / 8] & (1 << (s % 8)) != 0 {
                        continue;
                    }
                    // total <= 14 keeps the entry inside the 4 KiB block.
                    let e = off + DIR_BLOCK_HEADER + s * DIRENT_SIZE;
                    let raw = &buf[e + 0x18..e + 0x18 + 256];
                    let name: Vec<u8> = raw.iter().take_while(|&&c| c != 0).copied().collect();
                    out.push(DirEntryOut {
                        name,
                        fd_type: get_u32(buf, e).unwrap_or(0),
                        fd_addr: get_u32(buf, e + 4).unwrap_or(0),
                    });
                }
            }
        }
    }
    for e in &out {
        let found = lookup(buf, &e.name, in_root)?;
        ensure!(
            found == Some(e.fd_addr),
            "hash lookup of {:?} gives {found:?}, not {:#x}",
            String::from_utf8_lossy(&e.name),
            e.fd_addr
        );
    }
    Ok(out)
}

/// Finds `name` through the hash table and link groups; returns its FD address.
pub fn lookup(buf: &[u8], name: &[u8], in_root: bool) -> Result<Option<u32>> {
    use crate::v6_format::{get_u16, get_u32};
    let system = [
        ".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf", ".jbc.sf",
    ];
    let slot = match system.iter().position(|s| s.as_bytes() == name) {
        Some(i) if in_root => u64::from(system_slot(i as u16)),
        _ => name_hash_slot(name, in_root),
    };
    let link_hash = name_link_hash(name);
    let mut loc = get_u32(buf, DIR_HASH_OFFSET + slot as usize * 4).unwrap_or(0);
    for _ in 0..4096 {
        let (kind, block, s) = (loc & 3, (loc >> 2) & 0x3f_ffff, (loc >> 24) as usize);
        let base = DIR_HEADER_SIZE as usize + block as usize * DIR_BLOCK_SIZE as usize;
        match kind as u8 {
            0 => return Ok(None),
            block_type::DIRENT => {
                let e = base + DIR_BLOCK_HEADER + s * DIRENT_SIZE;
                return Ok(get_u32(buf, e + 4));
            }
            block_type::LINK => {
                let g = base + DIR_BLOCK_HEADER + s * LINK_GROUP_SIZE;
                ensure!(
                    get_u16(buf, g).map(u64::from) == Some(slot),
                    "link group at {g:#x} is not for slot {slot}"
                );
                let used = (buf.get(g + 2).copied().unwrap_or(0) as usize)
                    .saturating_sub(buf.get(g + 3).copied().unwrap_or(0) as usize);
                let mut next = get_u32(buf, g + 0x4e).unwrap_or(0);
                for n in 0..used.min(LINKS_PER_GROUP) {
                    let l = g + 6 + n * 6;
                    if get_u16(buf, l + 4) == Some(link_hash) {
                        let target = get_u32(buf, l).unwrap_or(0);
                        // Confirm the name: 16-bit link hashes can collide too.
                        let e = DIR_HEADER_SIZE as usize
                            + ((target >> 2) & 0x3f_ffff) as usize * DIR_BLOCK_SIZE as usize
                            + DIR_BLOCK_HEADER
                            + (target >> 24) as usize * DIRENT_SIZE;
                        let stored = buf.get(e + 0x18..e + 0x18 + name.len().min(255));
                        if stored == Some(name) {
                            next = target;
                            break;
                        }
                    }
                }
                loc = next;
            }
            _ => anyhow::bail!("bad location word {loc:#x}"),
        }
    }
    anyhow::bail!(
        "link chain for {:?} does not end",
        String::from_utf8_lossy(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: String, i: u32) -> DirEntryIn {
        DirEntryIn {
            name: name.into_bytes(),
            fd_type: 3,
            fd_addr: crate::v6_format::fd_addr(i / 256, i % 256),
            system_slot: None,
        }
    }

    #[test]
    fn big_directory_lists_and_looks_up_every_name() {
        let entries: Vec<DirEntryIn> = (0..20_000u32)
            .map(|i| entry(format!("file-{i:05}.vmdk"), i + 9))
            .collect();
        let buf = build(&entries, 4, 2, 4, 2, false).unwrap();
        assert_eq!(buf.len() as u64, planned_len(&entries, false));
        let listed = list(&buf, false).unwrap();
        assert_eq!(listed.len(), entries.len());
        for (a, b) in listed.iter().zip(&entries) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.fd_addr, b.fd_addr);
        }
        assert_eq!(lookup(&buf, b"nope", false).unwrap(), None);
    }

    #[test]
    fn corrupt_directories_give_errors_not_panics() {
        let entries: Vec<DirEntryIn> = (0..400u32).map(|i| entry(format!("f{i}"), i + 9)).collect();
        let good = build(&entries, 4, 2, 4, 2, false).unwrap();
        let mut seed = 7u64;
        for _ in 0..3000 {
            let mut buf = good.clone();
            for _ in 0..8 {
                seed = crate::splitmix64(seed);
                // Aim at the header, the hash table, the map and the first blocks.
                let pos = (seed as usize >> 8) % buf.len().min(0x10000 + 8 * 4096);
                buf[pos] = (seed & 0xff) as u8;
            }
            let _ = list(&buf, false);
            let _ = lookup(&buf, b"f17", false);
            let _ = list(&buf[..buf.len() / 2], true);
        }
    }

    #[test]
    fn long_names_round_trip() {
        let long = "x".repeat(255);
        let entries = vec![entry(long.clone(), 9)];
        let buf = build(&entries, 4, 2, 4, 2, true).unwrap();
        let listed = list(&buf, true).unwrap();
        assert_eq!(listed[0].name, long.as_bytes());
        assert!(build(&[entry("y".repeat(256), 9)], 4, 2, 4, 2, false).is_err());
    }
}
