//! How the VMFS partition sits in the image: alone (`bare`, like the ESXi sample images), or
//! behind a GPT or MBR partition table with the partition at sector 2048 as ESXi creates it.
//!
//! The image is created sparse (`set_len`) and only the bytes a writer hands to
//! [`Volume::write_at`] are written, so holes never cost host disk space.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

/// Sector size of the partition tables.
pub const SECTOR: u64 = 512;
/// Where the VMFS partition starts in a `gpt` or `mbr` image (sector 2048, 1 MiB).
pub const PARTITION_OFFSET: u64 = 2048 * SECTOR;
/// VMFS partition type GUID in its textual form.
pub const VMFS_TYPE_GUID: &str = "AA31E02A-400F-11DB-9590-000C2911D1B8";
/// MBR partition type of VMFS.
pub const MBR_TYPE_VMFS: u8 = 0xfb;
/// Space kept after the partition in a GPT image for the backup entries and header (33
/// sectors, rounded up to 1 MiB so the partition end stays MiB-aligned).
const GPT_TAIL: u64 = 1 << 20;
/// GPT partition entries: 128 entries of 128 bytes (32 sectors).
const GPT_ENTRIES: u32 = 128;
const GPT_ENTRY_SIZE: u32 = 128;

/// The partition layout of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// The VMFS partition alone, starting at byte 0.
    #[default]
    Bare,
    /// A GPT with one VMFS partition at sector 2048, and its backup header at the end.
    Gpt,
    /// An MBR with one partition of type 0xfb at sector 2048.
    Mbr,
}

impl Layout {
    /// Byte offset of the VMFS partition in the image.
    pub fn partition_offset(self) -> u64 {
        match self {
            Layout::Bare => 0,
            Layout::Gpt | Layout::Mbr => PARTITION_OFFSET,
        }
    }

    /// Image size needed around a partition of `partition_len` bytes.
    pub fn image_len(self, partition_len: u64) -> u64 {
        match self {
            Layout::Bare => partition_len,
            Layout::Mbr => PARTITION_OFFSET + partition_len,
            Layout::Gpt => PARTITION_OFFSET + partition_len + GPT_TAIL,
        }
    }

    /// The largest MiB-aligned partition that fits in an image of `image_len` bytes.
    pub fn partition_len(self, image_len: u64) -> Result<u64> {
        let overhead = self.image_len(0);
        ensure!(
            image_len > overhead,
            "an image of {image_len} bytes has no room for a partition with layout {self:?}"
        );
        Ok((image_len - overhead) & !((1u64 << 20) - 1))
    }
}

/// The VMFS partition inside an image being written. Offsets given to its methods are relative
/// to the partition start.
#[derive(Debug)]
pub struct Volume {
    file: File,
    base: u64,
    len: u64,
}

impl Volume {
    /// Size of the partition in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length partition (never produced by [`create`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Byte offset of the partition in the image.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Writes `buf` at partition offset `offset`, refusing to write past the partition.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        ensure!(
            offset
                .checked_add(buf.len() as u64)
                .is_some_and(|e| e <= self.len),
            "write of {} bytes at {offset} past the partition end {}",
            buf.len(),
            self.len
        );
        self.file
            .write_all_at(buf, self.base + offset)
            .with_context(|| format!("write {} bytes at partition offset {offset}", buf.len()))
    }

    /// Reads back bytes at partition offset `offset` (unwritten ranges read as zeros).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        ensure!(
            offset
                .checked_add(buf.len() as u64)
                .is_some_and(|e| e <= self.len),
            "read past the partition end"
        );
        self.file
            .read_exact_at(buf, self.base + offset)
            .with_context(|| format!("read {} bytes at partition offset {offset}", buf.len()))
    }

    /// Flushes the image to stable storage.
    pub fn finish(self) -> Result<()> {
        self.file.sync_all().context("sync image")
    }
}

/// Creates (or truncates) the sparse image at `path` for a partition of `partition_len` bytes
/// (a multiple of 512) with `layout`, writes the partition table, and returns the partition.
pub fn create(path: &Path, layout: Layout, partition_len: u64) -> Result<Volume> {
    ensure!(
        partition_len > 0 && partition_len.is_multiple_of(SECTOR),
        "partition length {partition_len} is not a positive multiple of {SECTOR}"
    );
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("create image {}", path.display()))?;
    let image_len = layout.image_len(partition_len);
    file.set_len(image_len)
        .with_context(|| format!("size image {}", path.display()))?;
    wrap(&file, layout, image_len, partition_len)?;
    Ok(Volume {
        file,
        base: layout.partition_offset(),
        len: partition_len,
    })
}

/// Writes the partition table of `layout` into an image of `image_len` bytes whose VMFS
/// partition is `partition_len` bytes long. `bare` writes nothing.
pub fn wrap(file: &File, layout: Layout, image_len: u64, partition_len: u64) -> Result<()> {
    match layout {
        Layout::Bare => Ok(()),
        Layout::Mbr => {
            let sectors = u32::try_from(partition_len / SECTOR)
                .context("an MBR cannot describe a partition of 2 TiB or more; use --layout gpt")?;
            let mbr = mbr_sector(MBR_TYPE_VMFS, 2048, sectors);
            file.write_all_at(&mbr, 0).context("write MBR")
        }
        Layout::Gpt => {
            let total = image_len / SECTOR;
            let disk_guid = random_guid();
            let part_guid = random_guid();
            let g = gpt(total, partition_len / SECTOR, disk_guid, part_guid)?;
            file.write_all_at(&g.protective_mbr, 0)
                .context("write protective MBR")?;
            file.write_all_at(&g.primary_header, SECTOR)
                .context("write GPT header")?;
            file.write_all_at(&g.entries, 2 * SECTOR)
                .context("write GPT entries")?;
            file.write_all_at(&g.entries, (total - 33) * SECTOR)
                .context("write backup GPT entries")?;
            file.write_all_at(&g.backup_header, (total - 1) * SECTOR)
                .context("write backup GPT header")
        }
    }
}

/// A classic MBR with one primary partition. CHS fields hold the "use LBA" marker.
fn mbr_sector(kind: u8, first_lba: u32, sectors: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    let e = &mut s[446..462];
    e[0] = 0x00;
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&first_lba.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// The sectors of a GPT.
struct Gpt {
    protective_mbr: [u8; 512],
    primary_header: [u8; 512],
    backup_header: [u8; 512],
    entries: Vec<u8>,
}

/// Builds a GPT for a disk of `total` sectors with one VMFS partition of `part_sectors`
/// sectors at LBA 2048.
fn gpt(total: u64, part_sectors: u64, disk_guid: [u8; 16], part_guid: [u8; 16]) -> Result<Gpt> {
    let entry_sectors = u64::from(GPT_ENTRIES * GPT_ENTRY_SIZE) / SECTOR;
    let first_usable = 2 + entry_sectors;
    let last_usable = total
        .checked_sub(2 + entry_sectors)
        .context("disk too small for a GPT")?;
    let first = 2048u64;
    let last = first + part_sectors - 1;
    if last > last_usable {
        bail!("partition end LBA {last} beyond the last usable LBA {last_usable}");
    }

    let mut entries = vec![0u8; (GPT_ENTRIES * GPT_ENTRY_SIZE) as usize];
    entries[0..16].copy_from_slice(&guid_bytes(VMFS_TYPE_GUID)?);
    entries[16..32].copy_from_slice(&part_guid);
    entries[32..40].copy_from_slice(&first.to_le_bytes());
    entries[40..48].copy_from_slice(&last.to_le_bytes());
    for (i, u) in "vmfs".encode_utf16().enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    let entries_crc = crc32fast::hash(&entries);

    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&GPT_ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&GPT_ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let protective_len = u32::try_from(total - 1).unwrap_or(u32::MAX);
    let mut protective_mbr = mbr_sector(0xee, 1, protective_len);
    // The protective entry starts at CHS 0/0/2, i.e. LBA 1.
    protective_mbr[446 + 1..446 + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    Ok(Gpt {
        protective_mbr,
        primary_header: header(1, total - 1, 2),
        backup_header: header(total - 1, 1, total - 1 - entry_sectors),
        entries,
    })
}

/// The on-disk (mixed-endian) bytes of a GUID written as `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
pub fn guid_bytes(text: &str) -> Result<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    ensure!(hex.len() == 32, "malformed GUID {text}");
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .with_context(|| format!("malformed GUID {text}"))?;
    }
    raw[0..4].reverse();
    raw[4..6].reverse();
    raw[6..8].reverse();
    Ok(raw)
}

/// A random version-4 GUID in on-disk byte order.
pub fn random_guid() -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&crate::random_u64().to_le_bytes());
    g[8..].copy_from_slice(&crate::random_u64().to_le_bytes());
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmfs_type_guid_has_mixed_endian_bytes() {
        assert_eq!(
            guid_bytes(VMFS_TYPE_GUID).unwrap(),
            [
                0x2a, 0xe0, 0x31, 0xaa, 0x0f, 0x40, 0xdb, 0x11, 0x95, 0x90, 0x00, 0x0c, 0x29, 0x11,
                0xd1, 0xb8
            ]
        );
    }

    #[test]
    fn gpt_headers_carry_valid_crcs() {
        let total = 64 * 2048 + 2048 + 2048;
        let g = gpt(total, 64 * 2048, random_guid(), random_guid()).unwrap();
        for (h, current) in [(&g.primary_header, 1), (&g.backup_header, total - 1)] {
            let mut copy = *h;
            let stored = u32::from_le_bytes(copy[16..20].try_into().unwrap());
            copy[16..20].fill(0);
            assert_eq!(crc32fast::hash(&copy[..92]), stored);
            assert_eq!(u64::from_le_bytes(h[24..32].try_into().unwrap()), current);
            assert_eq!(
                u32::from_le_bytes(h[88..92].try_into().unwrap()),
                crc32fast::hash(&g.entries)
            );
        }
    }

    #[test]
    fn sizes_round_trip() {
        for l in [Layout::Bare, Layout::Gpt, Layout::Mbr] {
            let p = 300u64 << 20;
            assert_eq!(l.partition_len(l.image_len(p)).unwrap(), p);
        }
    }
}
