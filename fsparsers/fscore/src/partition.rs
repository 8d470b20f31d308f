//! Partition tables: GPT (with its protective MBR) and MBR (primary entries and the EBR chain
//! of an extended partition).
//!
//! Layouts follow the UEFI specification (chapter "GUID Partition Table Disk Layout") for GPT and
//! the classic IBM PC master boot record for MBR; docs/formats/partition.md lists the sources.
//! Every value read from the device is bounds-checked before use: entry counts and sizes are
//! capped before anything is allocated, every partition must lie inside the device, and the EBR
//! chain is bounded and checked for loops.

use std::collections::HashSet;
use std::fmt;

use lun::{ReadAt, ReadAtExt};
use serde::{Serialize, Serializer};

use crate::le::{bytes_at, guid_le, u8_at, u32_at, u64_at};
use crate::{FsError, Result};

/// GPT partition type GUID of a VMFS partition (as ESXi and `sgdisk -t fb00` write it).
pub const GPT_TYPE_VMFS: &str = "aa31e02a-400f-11db-9590-000c2911d1b8";
/// GPT partition type GUID of a Microsoft basic data partition (NTFS, FAT, exFAT).
pub const GPT_TYPE_MS_BASIC_DATA: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
/// MBR partition type byte of a VMFS partition.
pub const MBR_TYPE_VMFS: u8 = 0xfb;
/// MBR partition type byte of NTFS (shared with exFAT and HPFS).
pub const MBR_TYPE_NTFS: u8 = 0x07;
/// MBR partition type byte of the protective entry of a GPT disk.
pub const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xee;

/// Largest GPT partition entry array read (the UEFI minimum is 16 KiB; tools write 16 KiB).
const GPT_MAX_ARRAY_BYTES: u64 = 4 << 20;
/// Largest GPT partition entry size accepted (the specification allows 128 × 2^n).
const GPT_MAX_ENTRY_SIZE: u32 = 4096;
/// Most logical partitions followed in an EBR chain.
const MBR_MAX_LOGICAL: usize = 128;
/// Offset of the four MBR partition entries in sector 0.
const MBR_ENTRIES: usize = 446;
/// Size of one MBR partition entry.
const MBR_ENTRY_SIZE: usize = 16;
/// Size of the GPT header fields defined by the UEFI specification (revision 1.0).
const GPT_HEADER_MIN: u32 = 92;

/// Which kind of partition table a device carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// GUID Partition Table.
    Gpt,
    /// Master Boot Record (DOS) table.
    Mbr,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Gpt => "GPT",
            Scheme::Mbr => "MBR",
        })
    }
}

/// The type of a partition as its table records it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PartitionType {
    /// GPT partition type GUID, lower-case.
    Gpt(String),
    /// MBR partition type byte.
    Mbr(u8),
}

impl PartitionType {
    /// A human name for the types lunproxy cares about and a few common ones.
    pub fn known_name(&self) -> Option<&'static str> {
        match self {
            PartitionType::Gpt(g) => match g.as_str() {
                GPT_TYPE_VMFS => Some("VMware VMFS"),
                GPT_TYPE_MS_BASIC_DATA => Some("Microsoft basic data"),
                "e3c9e316-0b5c-4db8-817d-f92df00215ae" => Some("Microsoft reserved"),
                "de94bba4-06d1-4d40-a16a-bfd50179d6ac" => Some("Windows recovery"),
                "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => Some("EFI system"),
                "0fc63daf-8483-4772-8e79-3d69d8477de4" => Some("Linux filesystem"),
                "9d275380-40ad-11db-bf97-000c2911d1b8" => Some("VMware vmkcore"),
                "9198effc-31c0-11db-8f78-000c2911d1b8" => Some("VMware reserved"),
                _ => None,
            },
            PartitionType::Mbr(t) => match *t {
                MBR_TYPE_VMFS => Some("VMware VMFS"),
                MBR_TYPE_NTFS => Some("NTFS/exFAT/HPFS"),
                0x05 | 0x0f | 0x85 => Some("extended"),
                0x0b | 0x0c => Some("FAT32"),
                0x27 => Some("Windows recovery"),
                0x83 => Some("Linux"),
                0xfc => Some("VMware vmkcore"),
                MBR_TYPE_GPT_PROTECTIVE => Some("GPT protective"),
                0xef => Some("EFI system"),
                _ => None,
            },
        }
    }
}

impl fmt::Display for PartitionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionType::Gpt(g) => f.write_str(g),
            PartitionType::Mbr(t) => write!(f, "0x{t:02x}"),
        }
    }
}

/// Serialised as the GUID string (GPT) or `"0xNN"` (MBR).
impl Serialize for PartitionType {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One partition, validated to lie inside the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// Partition number as Linux numbers them: the GPT entry number (from 1), or 1–4 for MBR
    /// primary entries and 5 onwards for logical partitions in the extended partition.
    pub index: u32,
    /// Byte offset of the first byte on the device.
    pub start_byte: u64,
    /// Length in bytes.
    pub length_bytes: u64,
    /// Partition type.
    #[serde(rename = "type")]
    pub part_type: PartitionType,
    /// GPT partition name (UTF-16LE on disk); empty for MBR.
    pub name: String,
}

/// A decoded partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionTable {
    /// GPT or MBR.
    pub scheme: Scheme,
    /// The sector size the table is laid out in (GPT: the one whose LBA 1 held the header).
    pub sector_size: u32,
    /// GPT disk GUID.
    pub disk_guid: Option<String>,
    /// The partitions in table order (empty entries left out).
    pub partitions: Vec<Partition>,
    /// Problems that did not prevent reading the table (primary GPT header damaged and the
    /// backup used, partitions outside the usable range…).
    pub warnings: Vec<String>,
}

/// The partitions of `src` (GPT or MBR), or an empty list when it has no partition table.
pub fn read_partitions(src: &dyn ReadAt) -> Result<Vec<Partition>> {
    Ok(read_table(src, None)?
        .map(|t| t.partitions)
        .unwrap_or_default())
}

/// Reads the partition table of `src`, if it has one. `sector_size` is the device's logical
/// sector size when known (block devices); GPT is looked for at LBA 1 of 512 and 4096-byte
/// sectors either way, because an image file of a 4Kn disk does not say its sector size.
///
/// Returns `Ok(None)` when sector 0 carries no MBR signature, or is a filesystem boot sector
/// (NTFS, FAT) rather than a partition table.
pub fn read_table(src: &dyn ReadAt, sector_size: Option<u32>) -> Result<Option<PartitionTable>> {
    if src.size() < 512 {
        return Ok(None);
    }
    let mbr = src.read_vec(0, 512)?;
    if mbr[510..512] != [0x55, 0xaa] || is_boot_sector(&mbr) {
        return Ok(None);
    }
    let entries = mbr_entries(&mbr);
    if entries
        .iter()
        .any(|e| e.part_type == MBR_TYPE_GPT_PROTECTIVE)
    {
        return read_gpt(src, sector_size).map(Some);
    }
    // Every entry of a real MBR has a boot indicator of 0x00 or 0x80; anything else is boot code
    // or data of something that only happens to end in 0x55AA.
    if entries
        .iter()
        .any(|e| e.part_type != 0 && e.status & 0x7f != 0)
    {
        return Ok(None);
    }
    read_mbr(src, &entries, sector_size.unwrap_or(512)).map(Some)
}

/// True for a volume boot sector (NTFS, FAT, exFAT) rather than an MBR: those carry an OEM name
/// after a jump instruction where an MBR has boot code.
fn is_boot_sector(sector: &[u8]) -> bool {
    let oem = &sector[3..11];
    let jump = sector[0] == 0xeb || sector[0] == 0xe9;
    oem == b"NTFS    "
        || oem == b"EXFAT   "
        || (jump && (&sector[82..87] == b"FAT32" || &sector[54..57] == b"FAT"))
}

/// One of the four 16-byte MBR entries (offsets inside the entry).
#[derive(Clone, Copy, Debug)]
struct MbrEntry {
    /// Offset 0: boot indicator, 0x80 active, 0x00 inactive.
    status: u8,
    /// Offset 4: partition type.
    part_type: u8,
    /// Offset 8: first sector (LBA), relative to the table's base.
    start_lba: u32,
    /// Offset 12: number of sectors.
    sectors: u32,
}

fn mbr_entries(sector: &[u8]) -> [MbrEntry; 4] {
    std::array::from_fn(|i| {
        let off = MBR_ENTRIES + i * MBR_ENTRY_SIZE;
        MbrEntry {
            status: u8_at(sector, off).unwrap_or(0),
            part_type: u8_at(sector, off + 4).unwrap_or(0),
            start_lba: u32_at(sector, off + 8).unwrap_or(0),
            sectors: u32_at(sector, off + 12).unwrap_or(0),
        }
    })
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

fn corrupt(src: &dyn ReadAt, structure: &str, offset: u64, detail: String) -> FsError {
    FsError::Corrupt {
        fs: "partition table",
        device: src.name().to_string(),
        structure: structure.to_string(),
        offset,
        detail,
    }
}

/// Checks that `sectors` sectors at `lba` lie inside the device and returns (start, length) in
/// bytes.
fn sector_range(
    src: &dyn ReadAt,
    structure: &str,
    at: u64,
    lba: u64,
    sectors: u64,
    ss: u32,
) -> Result<(u64, u64)> {
    let ss = u64::from(ss);
    let range = lba
        .checked_mul(ss)
        .zip(sectors.checked_mul(ss))
        .filter(|&(s, l)| s.checked_add(l).is_some_and(|e| e <= src.size()));
    range.ok_or_else(|| {
        corrupt(
            src,
            structure,
            at,
            format!(
                "{sectors} sectors of {ss} bytes at LBA {lba} lie outside the device ({} bytes)",
                src.size()
            ),
        )
    })
}

fn read_mbr(src: &dyn ReadAt, entries: &[MbrEntry; 4], ss: u32) -> Result<PartitionTable> {
    let mut partitions = Vec::new();
    let mut warnings = Vec::new();
    let mut extended = None;
    for (i, e) in entries.iter().enumerate() {
        if e.part_type == 0 {
            continue;
        }
        let at = (MBR_ENTRIES + i * MBR_ENTRY_SIZE) as u64;
        let structure = format!("MBR partition entry {}", i + 1);
        if e.sectors == 0 {
            warnings.push(format!(
                "{structure} has type 0x{:02x} but no sectors; ignored",
                e.part_type
            ));
            continue;
        }
        if e.start_lba == 0 {
            return Err(corrupt(
                src,
                &structure,
                at,
                "partition starts at LBA 0, over the MBR itself".into(),
            ));
        }
        let (start, len) = sector_range(
            src,
            &structure,
            at,
            e.start_lba.into(),
            e.sectors.into(),
            ss,
        )?;
        if is_extended(e.part_type) {
            if extended.is_some() {
                return Err(corrupt(
                    src,
                    &structure,
                    at,
                    "a second extended partition".into(),
                ));
            }
            extended = Some((u64::from(e.start_lba), u64::from(e.sectors)));
            continue;
        }
        partitions.push(Partition {
            index: i as u32 + 1,
            start_byte: start,
            length_bytes: len,
            part_type: PartitionType::Mbr(e.part_type),
            name: String::new(),
        });
    }
    if let Some((ext_lba, ext_sectors)) = extended {
        read_logical(src, ext_lba, ext_sectors, ss, &mut partitions)?;
    }
    check_overlaps(src, Scheme::Mbr, &partitions)?;
    Ok(PartitionTable {
        scheme: Scheme::Mbr,
        sector_size: ss,
        disk_guid: None,
        partitions,
        warnings,
    })
}

/// Follows the chain of extended boot records. Each EBR's first entry is a logical partition
/// (relative to that EBR); its second entry links to the next EBR (relative to the start of the
/// extended partition).
fn read_logical(
    src: &dyn ReadAt,
    ext_lba: u64,
    ext_sectors: u64,
    ss: u32,
    out: &mut Vec<Partition>,
) -> Result<()> {
    let ext_end = ext_lba + ext_sectors;
    let mut seen = HashSet::new();
    let mut ebr_lba = ext_lba;
    let mut index = 5u32;
    loop {
        let at = ebr_lba * u64::from(ss);
        let structure = format!("EBR at LBA {ebr_lba}");
        if !seen.insert(ebr_lba) {
            return Err(corrupt(
                src,
                &structure,
                at,
                "the EBR chain loops back to this record".into(),
            ));
        }
        if seen.len() > MBR_MAX_LOGICAL {
            return Err(FsError::Limit {
                fs: "partition table",
                what: format!(
                    "logical partitions in the extended partition of {}",
                    src.name()
                ),
                limit: MBR_MAX_LOGICAL as u64,
            });
        }
        let ebr = src.read_vec(at, 512)?;
        if ebr[510..512] != [0x55, 0xaa] {
            return Err(corrupt(src, &structure, at, "no 0x55AA signature".into()));
        }
        let [logical, link, ..] = mbr_entries(&ebr);
        if logical.part_type != 0 && logical.sectors != 0 {
            let first = ebr_lba + u64::from(logical.start_lba);
            let last = first + u64::from(logical.sectors);
            if logical.start_lba == 0 || last > ext_end {
                return Err(corrupt(
                    src,
                    &structure,
                    at + MBR_ENTRIES as u64,
                    format!(
                        "logical partition (LBA {first}, {} sectors) is not inside the extended \
                         partition (LBA {ext_lba}..{ext_end})",
                        logical.sectors
                    ),
                ));
            }
            let (start, len) =
                sector_range(src, &structure, at, first, logical.sectors.into(), ss)?;
            out.push(Partition {
                index,
                start_byte: start,
                length_bytes: len,
                part_type: PartitionType::Mbr(logical.part_type),
                name: String::new(),
            });
            index += 1;
        }
        if !is_extended(link.part_type) || link.start_lba == 0 {
            return Ok(());
        }
        let next = ext_lba + u64::from(link.start_lba);
        if next >= ext_end {
            return Err(corrupt(
                src,
                &structure,
                at + (MBR_ENTRIES + MBR_ENTRY_SIZE) as u64,
                format!("next EBR at LBA {next} is outside the extended partition"),
            ));
        }
        ebr_lba = next;
    }
}

fn check_overlaps(src: &dyn ReadAt, scheme: Scheme, parts: &[Partition]) -> Result<()> {
    let mut sorted: Vec<&Partition> = parts.iter().collect();
    sorted.sort_by_key(|p| p.start_byte);
    for w in sorted.windows(2) {
        if w[0].start_byte + w[0].length_bytes > w[1].start_byte {
            return Err(corrupt(
                src,
                &format!("{scheme} partition {}", w[1].index),
                w[1].start_byte,
                format!("overlaps partition {}", w[0].index),
            ));
        }
    }
    Ok(())
}

/// A GPT header that passed its own checks (signature, size, CRC32, location).
struct GptHeader {
    /// Offset 40: FirstUsableLBA.
    first_usable: u64,
    /// Offset 48: LastUsableLBA.
    last_usable: u64,
    /// Offset 56: DiskGUID.
    disk_guid: String,
    /// Offset 72: PartitionEntryLBA.
    entry_lba: u64,
    /// Offset 80: NumberOfPartitionEntries.
    entries: u32,
    /// Offset 84: SizeOfPartitionEntry.
    entry_size: u32,
    /// Offset 88: PartitionEntryArrayCRC32.
    array_crc: u32,
}

fn read_gpt(src: &dyn ReadAt, hint: Option<u32>) -> Result<PartitionTable> {
    let mut sizes: Vec<u32> = hint
        .filter(|s| *s == 512 || *s == 4096)
        .into_iter()
        .collect();
    for ss in [512, 4096] {
        if !sizes.contains(&ss) {
            sizes.push(ss);
        }
    }
    let mut problems = Vec::new();
    for &ss in &sizes {
        match gpt_at(src, ss, 1) {
            Ok(Some(table)) => return Ok(table),
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    // The primary header is missing or damaged: the backup sits in the device's last sector.
    for &ss in &sizes {
        let last = (src.size() / u64::from(ss)).saturating_sub(1);
        if last < 2 {
            continue;
        }
        match gpt_at(src, ss, last) {
            Ok(Some(mut table)) => {
                table.warnings.insert(
                    0,
                    format!(
                        "primary GPT header unusable ({}); read the backup header at LBA {last}",
                        if problems.is_empty() {
                            "no signature at LBA 1".to_string()
                        } else {
                            problems.join("; ")
                        }
                    ),
                );
                return Ok(table);
            }
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    Err(corrupt(
        src,
        "GPT header",
        512,
        format!(
            "the MBR is protective (type 0xee) but no valid GPT header was found at LBA 1 or in \
             the last sector for 512 or 4096-byte sectors{}",
            if problems.is_empty() {
                String::new()
            } else {
                format!(": {}", problems.join("; "))
            }
        ),
    ))
}

/// Reads the GPT header at `lba` for sector size `ss`: `Ok(None)` when there is no "EFI PART"
/// signature there, an error when there is one but the header or its entry array is invalid.
fn gpt_at(src: &dyn ReadAt, ss: u32, lba: u64) -> Result<Option<PartitionTable>> {
    let at = lba * u64::from(ss);
    if at + u64::from(ss) > src.size() {
        return Ok(None);
    }
    let sector = src.read_vec(at, ss as usize)?;
    if &sector[..8] != b"EFI PART" {
        return Ok(None);
    }
    let h = parse_gpt_header(src, &sector, ss, lba, at)?;
    let structure = format!("GPT partition entry array (header at LBA {lba})");
    let array_len = u64::from(h.entries) * u64::from(h.entry_size);
    let array_at = h
        .entry_lba
        .checked_mul(u64::from(ss))
        .filter(|a| a.checked_add(array_len).is_some_and(|e| e <= src.size()))
        .ok_or_else(|| {
            corrupt(
                src,
                &structure,
                at + 72,
                format!(
                    "{array_len} bytes at LBA {} lie outside the device ({} bytes)",
                    h.entry_lba,
                    src.size()
                ),
            )
        })?;
    // Bounded by GPT_MAX_ARRAY_BYTES in parse_gpt_header.
    let array = src.read_vec(array_at, array_len as usize)?;
    let crc = crc32fast::hash(&array);
    if crc != h.array_crc {
        return Err(corrupt(
            src,
            &structure,
            array_at,
            format!(
                "CRC32 is {crc:#010x} but the header records {:#010x}",
                h.array_crc
            ),
        ));
    }
    let total_lbas = src.size() / u64::from(ss);
    let mut partitions = Vec::new();
    let mut warnings = Vec::new();
    for i in 0..h.entries as usize {
        let e = &array[i * h.entry_size as usize..][..h.entry_size as usize];
        let type_guid: [u8; 16] = e[..16].try_into().expect("16-byte slice");
        if type_guid == [0; 16] {
            continue;
        }
        let entry_at = array_at + (i * h.entry_size as usize) as u64;
        let structure = format!("GPT partition entry {}", i + 1);
        let first = u64_at(e, 32).unwrap_or(0);
        let last = u64_at(e, 40).unwrap_or(0);
        if last < first || last >= total_lbas {
            return Err(corrupt(
                src,
                &structure,
                entry_at + 32,
                format!(
                    "LBA range {first}..={last} is empty or outside the device ({total_lbas} \
                     sectors of {ss} bytes)"
                ),
            ));
        }
        if first < h.first_usable || last > h.last_usable {
            warnings.push(format!(
                "{structure} (LBA {first}..={last}) lies outside the usable range {}..={}",
                h.first_usable, h.last_usable
            ));
        }
        let (start, len) =
            sector_range(src, &structure, entry_at + 32, first, last - first + 1, ss)?;
        let name_units: Vec<u16> = bytes_at(e, 56, 72)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Partition {
            index: i as u32 + 1,
            start_byte: start,
            length_bytes: len,
            part_type: PartitionType::Gpt(guid_le(&type_guid)),
            name: String::from_utf16_lossy(&name_units),
        });
    }
    check_overlaps(src, Scheme::Gpt, &partitions)?;
    Ok(Some(PartitionTable {
        scheme: Scheme::Gpt,
        sector_size: ss,
        disk_guid: Some(h.disk_guid),
        partitions,
        warnings,
    }))
}

fn parse_gpt_header(
    src: &dyn ReadAt,
    sector: &[u8],
    ss: u32,
    lba: u64,
    at: u64,
) -> Result<GptHeader> {
    let structure = format!("GPT header at LBA {lba} ({ss}-byte sectors)");
    let bad = |off: usize, detail: String| corrupt(src, &structure, at + off as u64, detail);
    let field32 = |off| u32_at(sector, off).ok_or_else(|| bad(off, "truncated".into()));
    let field64 = |off| u64_at(sector, off).ok_or_else(|| bad(off, "truncated".into()));
    // Offset 12: HeaderSize; offset 16: HeaderCRC32 over HeaderSize bytes with itself zeroed.
    let header_size = field32(12)?;
    if header_size < GPT_HEADER_MIN || header_size > ss {
        return Err(bad(
            12,
            format!("HeaderSize {header_size} is not in {GPT_HEADER_MIN}..={ss}"),
        ));
    }
    let stored_crc = field32(16)?;
    let mut copy = sector[..header_size as usize].to_vec();
    copy[16..20].fill(0);
    let crc = crc32fast::hash(&copy);
    if crc != stored_crc {
        return Err(bad(
            16,
            format!("HeaderCRC32 is {crc:#010x} but the header records {stored_crc:#010x}"),
        ));
    }
    // Offset 24: MyLBA.
    let my_lba = field64(24)?;
    if my_lba != lba {
        return Err(bad(
            24,
            format!("MyLBA is {my_lba} but the header was read at LBA {lba}"),
        ));
    }
    let entries = field32(80)?;
    let entry_size = field32(84)?;
    if entry_size < 128 || !entry_size.is_multiple_of(128) || entry_size > GPT_MAX_ENTRY_SIZE {
        return Err(bad(
            84,
            format!(
                "SizeOfPartitionEntry {entry_size} is not a multiple of 128 up to {GPT_MAX_ENTRY_SIZE}"
            ),
        ));
    }
    if u64::from(entries) * u64::from(entry_size) > GPT_MAX_ARRAY_BYTES {
        return Err(FsError::Limit {
            fs: "partition table",
            what: format!(
                "GPT partition entry array of {} ({entries} entries of {entry_size} bytes)",
                src.name()
            ),
            limit: GPT_MAX_ARRAY_BYTES,
        });
    }
    let guid: [u8; 16] = bytes_at(sector, 56, 16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad(56, "truncated".into()))?;
    Ok(GptHeader {
        first_usable: field64(40)?,
        last_usable: field64(48)?,
        disk_guid: guid_le(&guid),
        entry_lba: field64(72)?,
        entries,
        entry_size,
        array_crc: field32(88)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use lun::MemSource;
    use proptest::prelude::*;

    use super::*;

    /// Encodes a GUID string into GPT's on-disk mixed-endian layout.
    pub(crate) fn guid_bytes(s: &str) -> [u8; 16] {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let raw: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
        out[4..6].copy_from_slice(&[raw[5], raw[4]]);
        out[6..8].copy_from_slice(&[raw[7], raw[6]]);
        out[8..].copy_from_slice(&raw[8..]);
        out
    }

    /// Writes a GPT (protective MBR, primary and backup headers and arrays) into `img` for
    /// sector size `ss`, with `parts` = (type GUID, first LBA, last LBA, name).
    pub(crate) fn write_gpt(img: &mut [u8], ss: usize, parts: &[(&str, u64, u64, &str)]) {
        let total = (img.len() / ss) as u64;
        img[510] = 0x55;
        img[511] = 0xaa;
        img[446 + 4] = 0xee;
        img[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        img[446 + 12..446 + 16]
            .copy_from_slice(&((total - 1).min(u32::MAX as u64) as u32).to_le_bytes());
        let mut array = vec![0u8; 128 * 128];
        for (i, (t, first, last, name)) in parts.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&guid_bytes(t));
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (k, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * k..58 + 2 * k].copy_from_slice(&u.to_le_bytes());
            }
        }
        let array_sectors = (array.len() / ss) as u64;
        let array_crc = crc32fast::hash(&array);
        for (my, alt, entry_lba) in [
            (1u64, total - 1, 2u64),
            (total - 1, 1, total - 1 - array_sectors),
        ] {
            let mut h = vec![0u8; 92];
            h[..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[40..48].copy_from_slice(&(2 + array_sectors).to_le_bytes());
            h[48..56].copy_from_slice(&(total - 2 - array_sectors).to_le_bytes());
            h[56..72].copy_from_slice(&[0x42; 16]);
            h[72..80].copy_from_slice(&entry_lba.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&array_crc.to_le_bytes());
            let crc = crc32fast::hash(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            let at = my as usize * ss;
            img[at..at + 92].copy_from_slice(&h);
            let a = entry_lba as usize * ss;
            img[a..a + array.len()].copy_from_slice(&array);
        }
    }

    fn mbr_entry(img: &mut [u8], base: usize, i: usize, t: u8, start: u32, sectors: u32) {
        let off = base + 446 + i * 16;
        img[off + 4] = t;
        img[off + 8..off + 12].copy_from_slice(&start.to_le_bytes());
        img[off + 12..off + 16].copy_from_slice(&sectors.to_le_bytes());
        img[base + 510] = 0x55;
        img[base + 511] = 0xaa;
    }

    fn src(img: Vec<u8>) -> MemSource {
        MemSource::new("disk", img)
    }

    #[test]
    fn gpt_with_512_and_4096_byte_sectors() {
        for ss in [512usize, 4096] {
            let mut img = vec![0u8; 8 << 20];
            let total = (img.len() / ss) as u64;
            write_gpt(
                &mut img,
                ss,
                &[
                    (GPT_TYPE_VMFS, 256, 1023, "datastore1"),
                    (GPT_TYPE_MS_BASIC_DATA, 1024, total - 40, "data"),
                ],
            );
            let t = read_table(&src(img), None).unwrap().unwrap();
            assert_eq!(t.scheme, Scheme::Gpt);
            assert_eq!(t.sector_size, ss as u32);
            assert!(t.warnings.is_empty(), "{:?}", t.warnings);
            assert_eq!(t.partitions.len(), 2);
            let p = &t.partitions[0];
            assert_eq!(p.index, 1);
            assert_eq!(p.start_byte, 256 * ss as u64);
            assert_eq!(p.length_bytes, 768 * ss as u64);
            assert_eq!(p.part_type, PartitionType::Gpt(GPT_TYPE_VMFS.into()));
            assert_eq!(p.part_type.known_name(), Some("VMware VMFS"));
            assert_eq!(p.name, "datastore1");
            assert_eq!(
                t.partitions[1].part_type.known_name(),
                Some("Microsoft basic data")
            );
        }
    }

    #[test]
    fn gpt_checks_crcs_and_falls_back_to_the_backup_header() {
        let mut img = vec![0u8; 4 << 20];
        write_gpt(&mut img, 512, &[(GPT_TYPE_VMFS, 64, 2047, "v")]);
        let good = img.clone();
        // Damage the primary header: the backup is used, with a warning.
        img[512 + 40] ^= 1;
        let t = read_table(&src(img.clone()), None).unwrap().unwrap();
        assert_eq!(t.partitions[0].start_byte, 64 * 512);
        assert!(t.warnings[0].contains("HeaderCRC32"), "{:?}", t.warnings);
        // Damage the backup too: a clear error naming the structure.
        let last = img.len() - 512;
        img[last + 40] ^= 1;
        let e = read_table(&src(img), None).unwrap_err();
        assert!(e.to_string().contains("GPT header"), "{e}");
        // A damaged primary entry array is refused by its CRC, and the backup array is used.
        let mut img = good.clone();
        img[1024 + 40] ^= 1;
        let t = read_table(&src(img), None).unwrap().unwrap();
        assert!(t.warnings[0].contains("CRC32"), "{:?}", t.warnings);
    }

    #[test]
    fn gpt_refuses_partitions_outside_the_device_and_overlaps() {
        let mut img = vec![0u8; 4 << 20];
        write_gpt(&mut img, 512, &[(GPT_TYPE_VMFS, 64, 100_000, "v")]);
        let e = read_table(&src(img), None).unwrap_err();
        assert!(e.to_string().contains("outside the device"), "{e}");
        let mut img = vec![0u8; 4 << 20];
        write_gpt(
            &mut img,
            512,
            &[
                (GPT_TYPE_VMFS, 64, 2047, "a"),
                (GPT_TYPE_VMFS, 2000, 4000, "b"),
            ],
        );
        let e = read_table(&src(img), None).unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
    }

    #[test]
    fn mbr_primary_and_logical_partitions() {
        let mut img = vec![0u8; 16 << 20];
        mbr_entry(&mut img, 0, 0, MBR_TYPE_NTFS, 2048, 2048);
        mbr_entry(&mut img, 0, 1, 0x05, 8192, 16384);
        // EBR 1 at LBA 8192: logical at +2048, link to EBR 2 at ext+8192.
        mbr_entry(&mut img, 8192 * 512, 0, MBR_TYPE_VMFS, 2048, 4096);
        mbr_entry(&mut img, 8192 * 512, 1, 0x05, 8192, 8192);
        mbr_entry(&mut img, 16384 * 512, 0, 0x83, 2048, 2048);
        let t = read_table(&src(img.clone()), None).unwrap().unwrap();
        assert_eq!(t.scheme, Scheme::Mbr);
        let got: Vec<(u32, u64, u64, String)> = t
            .partitions
            .iter()
            .map(|p| {
                (
                    p.index,
                    p.start_byte,
                    p.length_bytes,
                    p.part_type.to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 2048 * 512, 2048 * 512, "0x07".into()),
                (5, 10240 * 512, 4096 * 512, "0xfb".into()),
                (6, 18432 * 512, 2048 * 512, "0x83".into()),
            ]
        );
        // A chain that links back to itself is a loop, not a hang.
        mbr_entry(&mut img, 16384 * 512, 1, 0x05, 0, 8192);
        img[16384 * 512 + 446 + 16 + 8..][..4].copy_from_slice(&8192u32.to_le_bytes());
        let e = read_table(&src(img), None).unwrap_err();
        assert!(e.to_string().contains("loops"), "{e}");
    }

    #[test]
    fn not_a_partition_table() {
        // NTFS boot sector: ends in 0x55AA but is a filesystem.
        let mut img = vec![0u8; 4096];
        img[3..11].copy_from_slice(b"NTFS    ");
        img[510] = 0x55;
        img[511] = 0xaa;
        assert!(read_table(&src(img.clone()), None).unwrap().is_none());
        // Boot code in the entry area: boot indicators other than 0x00/0x80.
        img[3..11].copy_from_slice(b"XXXXXXXX");
        img[446] = 0x12;
        img[446 + 4] = 0x07;
        assert!(read_table(&src(img), None).unwrap().is_none());
        assert!(read_partitions(&src(vec![0u8; 100])).unwrap().is_empty());
        // A partition past the end of the device is corrupt.
        let mut img = vec![0u8; 1 << 20];
        mbr_entry(&mut img, 0, 0, 0x07, 2048, 10);
        assert!(read_table(&src(img), None).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            head in proptest::collection::vec(any::<u8>(), 0..2048),
            protective in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..1024),
        ) {
            let mut img = vec![0u8; 64 << 10];
            img[..head.len()].copy_from_slice(&head);
            let n = img.len();
            img[n - tail.len()..].copy_from_slice(&tail);
            if protective && img.len() >= 512 {
                img[446 + 4] = 0xee;
                img[510] = 0x55;
                img[511] = 0xaa;
            }
            let _ = read_table(&src(img), None);
        }

        #[test]
        fn mutated_tables_never_panic(flips in proptest::collection::vec((0usize..(64 << 10), any::<u8>()), 1..40)) {
            let mut img = vec![0u8; 64 << 10];
            write_gpt(&mut img, 512, &[(GPT_TYPE_VMFS, 40, 60, "a"), (GPT_TYPE_MS_BASIC_DATA, 61, 90, "b")]);
            for (i, v) in &flips {
                img[*i] = *v;
            }
            let _ = read_table(&src(img.clone()), Some(512));
            let mut img = vec![0u8; 64 << 10];
            mbr_entry(&mut img, 0, 0, 0x05, 1, 100);
            mbr_entry(&mut img, 512, 0, 0x07, 1, 10);
            mbr_entry(&mut img, 512, 1, 0x05, 20, 10);
            for (i, v) in &flips {
                img[*i] = *v;
            }
            let _ = read_table(&src(img), None);
        }
    }
}
