//! Identifies what a source holds from its first bytes: a partition table (GPT or MBR, with each
//! partition identified in turn), a VMFS LVM device header, an NTFS boot sector, or nothing
//! known. This is a quick look by magic numbers, not a filesystem mount: the NTFS and VMFS
//! readers validate the structures they find.

use std::fmt;

use lun::{ReadAt, ReadAtExt};
use serde::Serialize;

use crate::Result;
use crate::le::{bytes_at, u16_at, u32_at};
use crate::partition::{Partition, PartitionTable, Scheme, read_table};

/// Byte offset of the VMFS LVM device header from the start of a VMFS partition.
pub const VMFS_LVM_HEADER_OFFSET: u64 = 0x10_0000;
/// Magic number of the VMFS LVM device header (little-endian u32 at its offset 0).
pub const VMFS_LVM_MAGIC: u32 = 0xC001_D00D;
/// OEM identifier of an NTFS boot sector, at byte offset 3.
pub const NTFS_OEM_ID: &[u8; 8] = b"NTFS    ";

/// What a source or partition holds, judged by its first bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Content {
    /// A GUID partition table.
    Gpt(Partitioned),
    /// An MBR partition table.
    Mbr(Partitioned),
    /// A VMFS volume (LVM device header magic 0xC001D00D at 1 MiB).
    VmfsLvm,
    /// An NTFS volume (boot sector with the "NTFS    " OEM id and the 0x55AA signature).
    Ntfs,
    /// Nothing lunproxy recognises.
    Unknown,
}

impl Content {
    /// A short lower-case name (`gpt`, `mbr`, `vmfs-lvm`, `ntfs`, `unknown`).
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Gpt(_) => "gpt",
            Content::Mbr(_) => "mbr",
            Content::VmfsLvm => "vmfs-lvm",
            Content::Ntfs => "ntfs",
            Content::Unknown => "unknown",
        }
    }

    /// The partitions, for a partitioned source.
    pub fn partitions(&self) -> &[ProbedPartition] {
        match self {
            Content::Gpt(p) | Content::Mbr(p) => &p.partitions,
            _ => &[],
        }
    }
}

impl fmt::Display for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Gpt(p) | Content::Mbr(p) => write!(
                f,
                "{} partition table ({}-byte sectors, {} partition{})",
                if matches!(self, Content::Gpt(_)) {
                    "GPT"
                } else {
                    "MBR"
                },
                p.sector_size,
                p.partitions.len(),
                if p.partitions.len() == 1 { "" } else { "s" }
            ),
            Content::VmfsLvm => f.write_str("VMFS LVM device header"),
            Content::Ntfs => f.write_str("NTFS boot sector"),
            Content::Unknown => f.write_str("unknown"),
        }
    }
}

/// A partition table with each partition's content identified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partitioned {
    /// The sector size the table is laid out in.
    pub sector_size: u32,
    /// GPT disk GUID.
    pub disk_guid: Option<String>,
    /// Problems that did not prevent reading the table.
    pub warnings: Vec<String>,
    /// The partitions with their content.
    pub partitions: Vec<ProbedPartition>,
}

/// One partition and what its first bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbedPartition {
    /// The partition.
    #[serde(flatten)]
    pub partition: Partition,
    /// What it holds. Partitions are not searched for nested tables: only [`Content::VmfsLvm`],
    /// [`Content::Ntfs`] or [`Content::Unknown`] appear here.
    pub content: Content,
}

/// Identifies `src`. `sector_size` is the device's logical sector size when known.
pub fn identify(src: &dyn ReadAt, sector_size: Option<u32>) -> Result<Content> {
    // A bare NTFS volume ends its first sector in 0x55AA too; it must not be read as an MBR.
    if src.size() >= 512 && is_ntfs_boot_sector(&src.read_vec(0, 512)?) {
        return Ok(Content::Ntfs);
    }
    if let Some(table) = read_table(src, sector_size)? {
        let PartitionTable {
            scheme,
            sector_size,
            disk_guid,
            partitions,
            warnings,
        } = table;
        let partitions = partitions
            .into_iter()
            .map(|p| {
                let content = identify_filesystem(src, p.start_byte, p.length_bytes)?
                    .unwrap_or(Content::Unknown);
                Ok(ProbedPartition {
                    partition: p,
                    content,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let partitioned = Partitioned {
            sector_size,
            disk_guid,
            warnings,
            partitions,
        };
        return Ok(match scheme {
            Scheme::Gpt => Content::Gpt(partitioned),
            Scheme::Mbr => Content::Mbr(partitioned),
        });
    }
    Ok(identify_filesystem(src, 0, src.size())?.unwrap_or(Content::Unknown))
}

/// Looks for an NTFS boot sector or a VMFS LVM header in the `len` bytes at `start` of `src`.
pub fn identify_filesystem(src: &dyn ReadAt, start: u64, len: u64) -> Result<Option<Content>> {
    if len >= 512 {
        let boot = src.read_vec(start, 512)?;
        if is_ntfs_boot_sector(&boot) {
            return Ok(Some(Content::Ntfs));
        }
    }
    if len >= VMFS_LVM_HEADER_OFFSET + 512 {
        let hdr = src.read_vec(start + VMFS_LVM_HEADER_OFFSET, 4)?;
        if u32_at(&hdr, 0) == Some(VMFS_LVM_MAGIC) {
            return Ok(Some(Content::VmfsLvm));
        }
    }
    Ok(None)
}

/// True for an NTFS boot sector: OEM id "NTFS    " at offset 3 and 0x55AA at offset 510.
pub fn is_ntfs_boot_sector(sector: &[u8]) -> bool {
    bytes_at(sector, 3, 8) == Some(&NTFS_OEM_ID[..]) && u16_at(sector, 510) == Some(0xaa55)
}

#[cfg(test)]
mod tests {
    use lun::MemSource;
    use proptest::prelude::*;

    use super::*;
    use crate::partition::tests::write_gpt;
    use crate::partition::{GPT_TYPE_MS_BASIC_DATA, GPT_TYPE_VMFS};

    fn ntfs_sector(img: &mut [u8], at: usize) {
        img[at..at + 3].copy_from_slice(&[0xeb, 0x52, 0x90]);
        img[at + 3..at + 11].copy_from_slice(NTFS_OEM_ID);
        img[at + 510] = 0x55;
        img[at + 511] = 0xaa;
    }

    fn lvm_magic(img: &mut [u8], at: usize) {
        let o = at + VMFS_LVM_HEADER_OFFSET as usize;
        img[o..o + 4].copy_from_slice(&VMFS_LVM_MAGIC.to_le_bytes());
    }

    #[test]
    fn bare_volumes() {
        let mut img = vec![0u8; 2 << 20];
        ntfs_sector(&mut img, 0);
        assert_eq!(
            identify(&MemSource::new("n", img), None).unwrap(),
            Content::Ntfs
        );
        let mut img = vec![0u8; 2 << 20];
        lvm_magic(&mut img, 0);
        assert_eq!(
            identify(&MemSource::new("v", img), None).unwrap(),
            Content::VmfsLvm
        );
        let img = vec![0u8; 2 << 20];
        assert_eq!(
            identify(&MemSource::new("z", img), None).unwrap(),
            Content::Unknown
        );
        assert_eq!(
            identify(&MemSource::new("e", vec![]), None).unwrap(),
            Content::Unknown
        );
    }

    #[test]
    fn partitions_are_identified() {
        let mut img = vec![0u8; 8 << 20];
        write_gpt(
            &mut img,
            512,
            &[
                (GPT_TYPE_VMFS, 2048, 8191, "vmfs"),
                (GPT_TYPE_MS_BASIC_DATA, 8192, 12287, "ntfs"),
                (GPT_TYPE_MS_BASIC_DATA, 12288, 14000, "empty"),
            ],
        );
        lvm_magic(&mut img, 2048 * 512);
        ntfs_sector(&mut img, 8192 * 512);
        let c = identify(&MemSource::new("d", img), Some(512)).unwrap();
        assert_eq!(c.kind(), "gpt");
        let kinds: Vec<&str> = c.partitions().iter().map(|p| p.content.kind()).collect();
        assert_eq!(kinds, ["vmfs-lvm", "ntfs", "unknown"]);
        assert_eq!(c.partitions()[0].partition.name, "vmfs");
        assert!(
            c.to_string()
                .starts_with("GPT partition table (512-byte sectors, 3 partitions")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = identify(&MemSource::new("x", bytes), None);
        }
    }
}
