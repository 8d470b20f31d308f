//! The FS3 file system descriptor (volume header) at byte 2 MiB of the logical volume.

use fscore::le::{bytes_at, u8_at, u16_at, u32_at, u64_at};

use crate::error::{Result, VmfsError};
use crate::lvm::cstr;
use crate::uuid::vmfs_uuid;

/// Offset of the FS3 descriptor in the logical volume (`FS3_FS_HEADER_OFFSET`).
pub const FS3_DESCRIPTOR_OFFSET: u64 = 0x20_0000;
/// `VMFS_MAGIC_NUMBER`.
pub const VMFS_MAGIC: u32 = 0x2fab_f15e;
/// `VMFSL_MAGIC_NUMBER` (VMFS-L, ESXi's local OSDATA variant).
pub const VMFSL_MAGIC: u32 = 0x2fab_f15f;
/// First FS3 major version that is VMFS6.
pub const VMFS6_MAJOR: u32 = 24;
/// `FS3_Config` bit: sub-block addresses carry two more resource bits.
pub const CONFIG_DENSE_SBPC: u32 = 0x4;

/// The decoded `FS3_Descriptor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsDescriptor {
    /// `magic` (0x00).
    pub magic: u32,
    /// `majorVersion` (0x04): 14 = VMFS5, 24 = VMFS6.
    pub major_version: u32,
    /// `minorVersion` (0x08).
    pub minor_version: u8,
    /// `uuid` (0x09), formatted.
    pub uuid: String,
    /// `config` (0x19).
    pub config: u32,
    /// `fsLabel` (0x1d, 128 bytes).
    pub label: String,
    /// `diskBlockSize` (0x9d).
    pub disk_block_size: u32,
    /// `fileBlockSize` (0xa1): the (small) file block size.
    pub file_block_size: u64,
    /// `fdcClusterGroupOffset` (0xd1).
    pub fdc_cluster_group_offset: u32,
    /// `fdcClustersPerGroup` (0xd5).
    pub fdc_clusters_per_group: u32,
    /// `subBlockSize` (0xd9).
    pub sub_block_size: u32,
    /// `pb2VolAddr` (0xe1).
    pub pb2_vol_addr: u64,
    /// `pb2FDAddr` (0xe9).
    pub pb2_fd_addr: u32,
    /// `sddVolAddr` (0x105).
    pub sdd_vol_addr: u64,
    /// `sddFDAddr` (0x10d).
    pub sdd_fd_addr: u32,
    /// `mdAlignment` (0x134, VMFS6).
    pub md_alignment: u32,
    /// `sfbToLfbShift` (0x138, VMFS6): LFB size = file block size << shift.
    pub sfb_to_lfb_shift: u16,
    /// `ptrBlockShift` (0x13e, VMFS6).
    pub ptr_block_shift: u16,
    /// `tbzGranularity` (0x144, VMFS6).
    pub tbz_granularity: u32,
}

impl FsDescriptor {
    /// Decodes the descriptor from its first 512 bytes. `device` and `offset` name it in errors.
    pub fn parse(b: &[u8], device: &str, offset: u64) -> Result<FsDescriptor> {
        let bad = |detail: String| VmfsError::Corrupt {
            structure: "FS3 descriptor".into(),
            device: device.to_string(),
            offset,
            detail,
        };
        let short = || bad("truncated".into());
        let magic = u32_at(b, 0).ok_or_else(short)?;
        if magic != VMFS_MAGIC && magic != VMFSL_MAGIC {
            return Err(bad(format!(
                "magic {magic:#010x} is not VMFS ({VMFS_MAGIC:#x} or {VMFSL_MAGIC:#x})"
            )));
        }
        let d = FsDescriptor {
            magic,
            major_version: u32_at(b, 0x04).ok_or_else(short)?,
            minor_version: u8_at(b, 0x08).ok_or_else(short)?,
            uuid: vmfs_uuid(bytes_at(b, 0x09, 16).ok_or_else(short)?),
            config: u32_at(b, 0x19).ok_or_else(short)?,
            label: cstr(bytes_at(b, 0x1d, 128).ok_or_else(short)?),
            disk_block_size: u32_at(b, 0x9d).ok_or_else(short)?,
            file_block_size: u64_at(b, 0xa1).ok_or_else(short)?,
            fdc_cluster_group_offset: u32_at(b, 0xd1).ok_or_else(short)?,
            fdc_clusters_per_group: u32_at(b, 0xd5).ok_or_else(short)?,
            sub_block_size: u32_at(b, 0xd9).ok_or_else(short)?,
            pb2_vol_addr: u64_at(b, 0xe1).ok_or_else(short)?,
            pb2_fd_addr: u32_at(b, 0xe9).ok_or_else(short)?,
            sdd_vol_addr: u64_at(b, 0x105).ok_or_else(short)?,
            sdd_fd_addr: u32_at(b, 0x10d).ok_or_else(short)?,
            md_alignment: u32_at(b, 0x134).ok_or_else(short)?,
            sfb_to_lfb_shift: u16_at(b, 0x138).ok_or_else(short)?,
            ptr_block_shift: u16_at(b, 0x13e).ok_or_else(short)?,
            tbz_granularity: u32_at(b, 0x144).ok_or_else(short)?,
        };
        if d.major_version < 14 {
            return Err(VmfsError::Unsupported {
                feature: format!("VMFS major version {} (VMFS3 or older)", d.major_version),
            });
        }
        let fbs = d.file_block_size;
        if !fbs.is_power_of_two() || !(0x1_0000..=0x1_0000_0000).contains(&fbs) {
            return Err(bad(format!(
                "fileBlockSize {fbs} is not a power of two in 64 KiB..4 GiB"
            )));
        }
        let sbs = d.sub_block_size;
        if !sbs.is_power_of_two() || !(512..=0x10_0000).contains(&sbs) || sbs as u64 > fbs {
            return Err(bad(format!(
                "subBlockSize {sbs} is not a power of two in 512..1 MiB"
            )));
        }
        if d.fdc_clusters_per_group == 0 || d.fdc_clusters_per_group > 0x1_0000 {
            return Err(bad(format!(
                "fdcClustersPerGroup {} is out of range",
                d.fdc_clusters_per_group
            )));
        }
        if d.is_vmfs6() {
            let mda = d.md_alignment;
            if !mda.is_power_of_two() || !(512..=0x10_0000).contains(&mda) {
                return Err(bad(format!(
                    "mdAlignment {mda} is not a power of two in 512..1 MiB"
                )));
            }
            if d.sfb_to_lfb_shift > 16 || fbs << d.sfb_to_lfb_shift > 1 << 40 {
                return Err(bad(format!(
                    "sfbToLfbShift {} is out of range",
                    d.sfb_to_lfb_shift
                )));
            }
        }
        Ok(d)
    }

    /// True for VMFS6.
    pub fn is_vmfs6(&self) -> bool {
        self.major_version >= VMFS6_MAJOR
    }

    /// True when DenseSBPerCluster is configured.
    pub fn dense_sb(&self) -> bool {
        self.config & CONFIG_DENSE_SBPC != 0
    }

    /// Size of a VMFS6 large file block.
    pub fn lfb_size(&self) -> u64 {
        self.file_block_size << self.sfb_to_lfb_shift
    }
}
