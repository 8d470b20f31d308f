//! VMFS5 on-disk constants and address encodings shared by the writer and by the tests that
//! decode the writer's output again.
//!
//! Sources: vmfs-tools (`vmfs_block.h`, `vmfs_inode.h`, `vmfs_bitmap.h`, `vmfs_fs.h`),
//! dissect.vmfs (`c_vmfs.py`, `address.py`, `resource.py`) and the ESXi-made sample volume.

/// Logical-volume offset of the filesystem descriptor (`FS3_Descriptor`).
pub const FS_DESCRIPTOR_OFFSET: u64 = 0x20_0000;
/// `VMFS_MAGIC_NUMBER`.
pub const FS_MAGIC: u32 = 0x2FAB_F15E;
/// `majorVersion` of a VMFS5 descriptor.
pub const FS_MAJOR_VERSION: u32 = 14;
/// `minorVersion` ESXi writes for VMFS 5.81.
pub const FS_MINOR_VERSION: u8 = 0x51;
/// `config` flags: bit 2 is `DENSE_SBPC` (sub-block numbers get two more bits).
pub const FS_CONFIG: u32 = 0x6;
/// Logical-volume offset of the heartbeat region.
pub const HEARTBEAT_OFFSET: u64 = 0x30_0000;
/// Number of heartbeat slots.
pub const HEARTBEAT_SLOTS: u64 = 2048;
/// Size of one heartbeat slot.
pub const HEARTBEAT_SIZE: u64 = 0x200;
/// Magic of an idle heartbeat slot.
pub const HEARTBEAT_MAGIC_OFF: u32 = 0xABCD_EF01;
/// Bytes covered by `.vh.sf` (descriptor and heartbeats) at the start of the volume.
pub const VH_LEN: u64 = 0x40_0000;

/// Size of a file descriptor in `.fdc.sf`.
pub const FD_SIZE: u64 = 0x800;
/// Offset of `FS3_FileMetadata` inside a file descriptor (after the disk lock).
pub const FD_META_OFFSET: usize = 0x200;
/// Offset of the block array / resident data inside a file descriptor.
pub const FD_DATA_OFFSET: usize = 0x400;
/// Block addresses held in a file descriptor.
pub const FD_ADDRS: usize = 256;
/// Largest resident file (the block array area).
pub const RESIDENT_MAX: u64 = 1024;
/// Magic of a file descriptor's lock block (`VMFS_INODE_MAGIC`).
pub const FD_MAGIC: u32 = 0x10C0_0001;
/// Size of a directory entry (`FS3_DirEntry`).
pub const DIRENT_SIZE: u64 = 0x8C;
/// Longest name a directory entry can hold (128 bytes, NUL-padded; we keep one NUL).
pub const NAME_MAX: usize = 127;

/// Sub-block size.
pub const SUB_BLOCK_SIZE: u64 = 0x2000;
/// Pointer block size (1024 four-byte addresses).
pub const PTR_BLOCK_SIZE: u64 = 0x1000;
/// Addresses per pointer block.
pub const PTRS_PER_PB: u64 = PTR_BLOCK_SIZE / 4;

/// Zero-level address types (`zeroLevelAddrType`).
pub mod zla {
    /// Block array holds file blocks.
    pub const FILE_BLOCK: u32 = 1;
    /// Block array holds sub-blocks.
    pub const SUB_BLOCK: u32 = 2;
    /// Block array holds pointer blocks of file blocks.
    pub const POINTER_BLOCK: u32 = 3;
    /// Block array holds pointer blocks of pointer blocks (files over 256 GiB at 1 MiB).
    pub const DOUBLE_POINTER_BLOCK: u32 = 4301 + 3;
    /// Data lives in the descriptor itself.
    pub const RESIDENT: u32 = 4301 + 4;
}

/// Descriptor types (`FS3_DescriptorType`), also the `type` of a directory entry.
pub mod fd_type {
    /// Directory.
    pub const DIRECTORY: u32 = 2;
    /// Regular file.
    pub const REGFILE: u32 = 3;
    /// Symbolic link.
    pub const SYMLINK: u32 = 4;
    /// System (`.sf`) file.
    pub const SYSFILE: u32 = 5;
}

/// One resource file (`.fdc.sf`, `.sbc.sf`, `.pbc.sf`, `.pb2.sf`, `.fbb.sf`): its kind and
/// the geometry of `FS3_ResFileMetadata`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceGeometry {
    /// Magic of each cluster's lock block (`VMFS_BITMAP_MAGIC_*`).
    pub magic: u32,
    /// `resourcesPerCluster`.
    pub per_cluster: u64,
    /// `clustersPerGroup`.
    pub clusters_per_group: u64,
    /// `resourceSize` (0 for `.fbb.sf`, whose resources are the volume's file blocks).
    pub resource_size: u64,
}

/// Offset of the first cluster group (`clusterGroupOffset`).
pub const CLUSTER_GROUP_OFFSET: u64 = 0x1_0000;
/// Bytes of one cluster's lock block plus metadata block.
pub const CLUSTER_META_SIZE: u64 = 0x400;

impl ResourceGeometry {
    /// `.fbb.sf`: file block bitmap; ESXi puts 200 blocks in a cluster.
    pub const FBB: ResourceGeometry = ResourceGeometry {
        magic: 0x10C0_0002,
        per_cluster: 200,
        clusters_per_group: 64,
        resource_size: 0,
    };
    /// `.sbc.sf`: sub-blocks, 32 per cluster (dense sub-block numbering).
    pub const SBC: ResourceGeometry = ResourceGeometry {
        magic: 0x10C0_0003,
        per_cluster: 32,
        clusters_per_group: 64,
        resource_size: SUB_BLOCK_SIZE,
    };
    /// `.pbc.sf`: pointer blocks.
    pub const PBC: ResourceGeometry = ResourceGeometry {
        magic: 0x10C0_0004,
        per_cluster: 16,
        clusters_per_group: 64,
        resource_size: PTR_BLOCK_SIZE,
    };
    /// `.fdc.sf`: file descriptors.
    pub const FDC: ResourceGeometry = ResourceGeometry {
        magic: 0x10C0_0005,
        per_cluster: 32,
        clusters_per_group: 64,
        resource_size: FD_SIZE,
    };
    /// `.pb2.sf`: second pointer-block pool (ESXi creates it; this writer leaves it empty).
    pub const PB2: ResourceGeometry = ResourceGeometry {
        magic: 0x10C0_0006,
        per_cluster: 16,
        clusters_per_group: 64,
        resource_size: PTR_BLOCK_SIZE,
    };

    /// `clusterGroupSize`: the cluster metadata blocks plus the resources of a whole group.
    pub fn group_size(&self) -> u64 {
        self.clusters_per_group * (CLUSTER_META_SIZE + self.per_cluster * self.resource_size)
    }

    /// File offset of cluster `cluster`'s lock/metadata blocks.
    pub fn cluster_meta_offset(&self, cluster: u64) -> u64 {
        let (group, in_group) = (
            cluster / self.clusters_per_group,
            cluster % self.clusters_per_group,
        );
        CLUSTER_GROUP_OFFSET + group * self.group_size() + in_group * CLUSTER_META_SIZE
    }

    /// File offset of resource number `index` (cluster-major).
    pub fn resource_offset(&self, index: u64) -> u64 {
        let per_group = self.per_cluster * self.clusters_per_group;
        let (group, in_group) = (index / per_group, index % per_group);
        CLUSTER_GROUP_OFFSET
            + group * self.group_size()
            + self.clusters_per_group * CLUSTER_META_SIZE
            + in_group * self.resource_size
    }

    /// Length of a resource file holding `resources` resources: up to the end of the last
    /// resource (or of the last cluster metadata for `.fbb.sf`).
    pub fn file_len(&self, resources: u64) -> u64 {
        let clusters = resources.div_ceil(self.per_cluster).max(1);
        if self.resource_size == 0 {
            let groups = clusters.div_ceil(self.clusters_per_group);
            return CLUSTER_GROUP_OFFSET + groups * self.group_size();
        }
        self.resource_offset(resources.max(1) - 1) + self.resource_size
    }
}

/// File block address: block number, to-be-zeroed flag.
pub fn fb_addr(block: u64, tbz: bool) -> u32 {
    ((block as u32) << 6) | (u32::from(tbz) << 5) | 1
}

/// Sub-block address of sub-block `index` (32 per cluster, dense numbering: bits 28..31 hold
/// the low four bits of the number within the cluster, bits 3..4 the high two).
pub fn sb_addr(index: u64) -> u32 {
    let (cluster, r) = ((index / 32) as u32, (index % 32) as u32);
    (cluster << 6) | ((r & 0xf) << 28) | ((r >> 4) << 3) | 2
}

/// Pointer block address of pointer block `index` (16 per cluster).
pub fn pb_addr(index: u64) -> u32 {
    let (cluster, r) = ((index / 16) as u32, (index % 16) as u32);
    (cluster << 6) | (r << 28) | 3
}

/// File descriptor address of descriptor `index` (32 per cluster).
pub fn fd_addr(index: u64) -> u32 {
    let (cluster, r) = ((index / 32) as u32, (index % 32) as u32);
    (cluster << 6) | (r << 22) | 4
}

/// The address type (low three bits).
pub fn addr_type(addr: u32) -> u32 {
    addr & 7
}

/// Decodes a file block address into (block, tbz).
pub fn decode_fb(addr: u32) -> (u64, bool) {
    (u64::from(addr >> 6), addr & 0x20 != 0)
}

/// Decodes a sub-block address into its sub-block number.
pub fn decode_sb(addr: u32) -> u64 {
    let cluster = u64::from((addr >> 6) & 0x3F_FFFF);
    let r = u64::from((addr >> 28) & 0xf) | (u64::from((addr >> 3) & 3) << 4);
    cluster * 32 + r
}

/// Decodes a pointer block address into its pointer block number.
pub fn decode_pb(addr: u32) -> u64 {
    u64::from((addr >> 6) & 0x3F_FFFF) * 16 + u64::from(addr >> 28)
}

/// Decodes a file descriptor address into its descriptor number.
pub fn decode_fd(addr: u32) -> u64 {
    u64::from((addr >> 6) & 0xFFFF) * 32 + u64::from(addr >> 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_match_the_esxi_sample() {
        // Values seen in the ESXi-made volume.
        assert_eq!(fd_addr(0), 0x4);
        assert_eq!(fd_addr(6), 0x0180_0004);
        assert_eq!(fb_addr(14, false), 0x381);
        assert_eq!(sb_addr(128), 0x102);
        assert_eq!(sb_addr(129), 0x1000_0102);
        for i in [0, 1, 15, 16, 17, 31, 32, 1000, 123_457] {
            assert_eq!(decode_sb(sb_addr(i)), i);
            assert_eq!(decode_pb(pb_addr(i)), i);
            assert_eq!(decode_fd(fd_addr(i)), i);
        }
        assert_eq!(decode_fb(fb_addr(77, true)), (77, true));
    }

    #[test]
    fn resource_geometry_matches_the_esxi_sample() {
        let g = ResourceGeometry::FDC;
        assert_eq!(g.group_size(), 0x41_0000);
        assert_eq!(g.resource_offset(0), 0x2_0000);
        assert_eq!(ResourceGeometry::PBC.file_len(1), 0x2_1000);
        assert_eq!(ResourceGeometry::SBC.file_len(256), 0x22_0000);
        assert_eq!(ResourceGeometry::FBB.file_len(256), 0x2_0000);
        assert_eq!(ResourceGeometry::SBC.group_size(), 0x101_0000);
    }
}
