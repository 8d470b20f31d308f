//! VMFS6 on-disk constants, address encodings and the small fixed-layout records the VMFS6
//! writer emits (LVM6 device header, FS3 descriptor, resource file metadata, cluster metadata,
//! file descriptors).
//!
//! Every value here was checked against the ESXi-written volume in `shared/real-images`
//! (`vmfs6-esxi.bin.gz`) and against two public readers: vmfs6-tools (the reader we test with)
//! and dissect.vmfs. Offsets in comments are byte offsets inside the record. See
//! docs/formats/vmfs.md, section "mkvmfs VMFS6", for the sources and for what is inferred.

/// One MiB.
pub const MIB: u64 = 1 << 20;
/// Partition offset of the LVM device header.
pub const LVM_HEADER_OFFSET: u64 = MIB;
/// Partition offset of the LVM data area: the start of the logical volume ("device offset 0").
/// vmfs6-tools hard-codes this as LVM header + 16 MiB.
pub const LVM_DATA_OFFSET: u64 = 17 * MIB;
/// LVM physical extent (segment) size.
pub const PE_SIZE: u64 = 256 * MIB;
/// Metadata alignment (`mdAlignment`): lock and metadata blocks are this large.
pub const MD_ALIGN: u64 = 4096;
/// Small file block size. ESXi always uses 1 MiB on VMFS6 and vmfs6-tools assumes it.
pub const SFB_SIZE: u64 = MIB;
/// `sfbToLfbShift`: a large file block is 512 small ones.
pub const SFB_TO_LFB_SHIFT: u32 = 9;
/// SFBs per LFB, which is also the number of SFBs in one SFB cluster.
pub const SFBS_PER_LFB: u64 = 1 << SFB_TO_LFB_SHIFT;
/// Large file block size (512 MiB).
pub const LFB_SIZE: u64 = SFB_SIZE * SFBS_PER_LFB;
/// Sub-block size (64 KiB on VMFS6).
pub const SUB_BLOCK_SIZE: u64 = 64 * 1024;
/// File descriptor size: a lock block plus a metadata block.
pub const FD_SIZE: u64 = 2 * MD_ALIGN;
/// Device offset of the FS3 descriptor.
pub const FS_DESCRIPTOR_OFFSET: u64 = 0x20_0000;
/// Device offset of the heartbeat region.
pub const HEARTBEAT_OFFSET: u64 = 0x30_0000;
/// Number of heartbeat slots.
pub const HEARTBEAT_COUNT: u64 = 1024;
/// Size of one heartbeat slot.
pub const HEARTBEAT_SIZE: u64 = 4096;
/// Heartbeat magic of a free slot.
pub const HEARTBEAT_MAGIC_OFF: u32 = 0xabcd_ef01;
/// The `.fdc.sf` file starts at this SFB: vmfs6-tools bootstraps it from
/// `max(1, (heartbeat base + 1024 * 4 KiB) / block size)` = 7.
pub const FDC_FIRST_SFB: u64 = 7;
/// SFBs of `.vh.sf` (the volume header file: descriptor and heartbeats).
pub const VH_SFBS: u64 = 7;
/// Bytes of resident data a file descriptor holds (metadata block minus 512 bytes of fields).
pub const RESIDENT_MAX: u64 = MD_ALIGN - 512;
/// FD offset of resident data.
pub const FD_RESIDENT_OFFSET: usize = 0x1200;
/// FD offset of the block address array (64-bit entries, aligned to the FD end).
pub const FD_ADDRS_OFFSET: usize = 0x1600;
/// Entries in the FD block address array.
pub const FD_MAX_ADDRS: usize = 320;
/// 64-bit entries in one 64 KiB pointer block.
pub const PB_ENTRIES: u64 = SUB_BLOCK_SIZE / 8;

/// FS3 descriptor magic (`VMFS_MAGIC_NUMBER`).
pub const FS_MAGIC: u32 = 0x2fab_f15e;
/// VMFS6 on-disk major version.
pub const FS_MAJOR: u32 = 24;
/// Minor version ESXi 6.7 writes.
pub const FS_MINOR: u8 = 82;
/// LVM device header magic.
pub const LVM_MAGIC: u32 = 0xc001_d00d;
/// File descriptor lock-block type (vmfs6-tools checks it as the inode magic).
pub const FD_LOCK_TYPE: u32 = 0x10c0_0001;
/// `fdmd`: file metadata signature.
pub const FDMD_SIGNATURE: u32 = 0x6664_6d64;
/// `rfmd`: resource file metadata signature.
pub const RFMD_SIGNATURE: u32 = 0x7266_6d64;
/// `rcmd`: resource cluster metadata signature.
pub const RCMD_SIGNATURE: u32 = 0x7263_6d64;

/// Address type: small file block.
pub const ADDR_SFB: u64 = 1;
/// Address type: sub-block.
pub const ADDR_SB: u64 = 2;
/// Address type: file descriptor.
pub const ADDR_FD: u64 = 4;
/// Address type: large file block.
pub const ADDR_LFB: u64 = 7;

/// Zero-level address type: direct file blocks.
pub const ZLA_FILE_BLOCK: u32 = 1;
/// Zero-level address type: sub-blocks.
pub const ZLA_SUB_BLOCK: u32 = 2;
/// Zero-level address type: single-indirect pointer blocks.
pub const ZLA_POINTER_BLOCK: u32 = 3;
/// Zero-level address type: secondary pointer blocks (`.pb2.sf`), used for `.sbc.sf`.
pub const ZLA_POINTER2_BLOCK: u32 = 5;
/// Zero-level address type: double-indirect pointer blocks.
pub const ZLA_POINTER_BLOCK_DOUBLE: u32 = 0x10d0;
/// Zero-level address type: data resident in the file descriptor.
pub const ZLA_RESIDENT: u32 = 0x10d1;

/// Descriptor type: directory.
pub const TYPE_DIRECTORY: u32 = 2;
/// Descriptor type: regular file.
pub const TYPE_REGFILE: u32 = 3;
/// Descriptor type: symbolic link.
pub const TYPE_SYMLINK: u32 = 4;
/// Descriptor type: system file.
pub const TYPE_SYSFILE: u32 = 5;

/// Resource type ids (also the low bits of the cluster lock type `0x10c00001 + id`).
pub mod restype {
    /// Small file blocks (child resource inside `.fbb.sf`).
    pub const SFB: u32 = 1;
    /// Sub-blocks (`.sbc.sf`).
    pub const SB: u32 = 2;
    /// Pointer blocks (`.pbc.sf`, empty on VMFS6).
    pub const PB: u32 = 3;
    /// File descriptors (`.fdc.sf`).
    pub const FD: u32 = 4;
    /// Secondary pointer blocks (`.pb2.sf`).
    pub const PB2: u32 = 5;
    /// Journal blocks (`.jbc.sf`).
    pub const JB: u32 = 6;
    /// Large file blocks (parent resource of `.fbb.sf`).
    pub const LFB: u32 = 7;
}

/// Encodes an SFB address (`FS3_SmallFileBlockAddr64`): type 1, TBZ bitmap in bits 7..14,
/// cluster in bits 15..45, resource in bits 51..63. `block` is the SFB number on the volume.
pub fn sfb_addr(block: u64, tbz: u8) -> u64 {
    let cluster = block / SFBS_PER_LFB;
    let resource = block % SFBS_PER_LFB;
    ADDR_SFB | (u64::from(tbz) << 7) | ((cluster & 0x7fff_ffff) << 15) | ((resource & 0x1fff) << 51)
}

/// Encodes an LFB address (`FS3_LargeFileBlockAddr64`): type 7, TBZ in bits 7..14, block
/// number in bits 15..45.
pub fn lfb_addr(lfb: u64, tbz: u8) -> u64 {
    ADDR_LFB | (u64::from(tbz) << 7) | ((lfb & 0x7fff_ffff) << 15)
}

/// Encodes a sub-block address (`FS3_SubBlockAddr64`): cluster in bits 6..41, resource in
/// bits 56..63.
pub fn sb_addr(cluster: u64, resource: u64) -> u64 {
    ADDR_SB | ((cluster & 0xf_ffff_ffff) << 6) | ((resource & 0xff) << 56)
}

/// Address type: secondary pointer block.
pub const ADDR_PB2: u64 = 5;

/// Encodes a secondary pointer block address (`FS3_PtrBlockAddr64`, type 5): cluster in
/// bits 6..41, resource in bits 56..63. vmfs6-tools reads these with 32-bit masks, which
/// agree for cluster 0 resource 0, the only one this writer uses.
pub fn pb2_addr(cluster: u64, resource: u64) -> u64 {
    ADDR_PB2 | ((cluster & 0xf_ffff_ffff) << 6) | ((resource & 0xff) << 56)
}

/// Encodes a file descriptor address (`FS3_FDAddr`, 32 bits): cluster in bits 6..21,
/// resource in bits 22..31.
pub fn fd_addr(cluster: u32, resource: u32) -> u32 {
    ADDR_FD as u32 | ((cluster & 0xffff) << 6) | ((resource & 0x3ff) << 22)
}

/// The decoded form of a 64-bit block address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockAddr {
    /// No block: a hole.
    Null,
    /// A small file block (volume SFB number) and its TBZ bitmap.
    Sfb {
        /// SFB number (`cluster * 512 + resource`).
        block: u64,
        /// To-be-zeroed bitmap.
        tbz: u8,
    },
    /// A large file block and its TBZ bitmap.
    Lfb {
        /// LFB number.
        block: u64,
        /// To-be-zeroed bitmap.
        tbz: u8,
    },
    /// A secondary pointer block (cluster, resource).
    Pb2 {
        /// Cluster number.
        cluster: u64,
        /// Resource inside the cluster.
        resource: u64,
    },
    /// A sub-block (cluster, resource).
    Sb {
        /// Cluster number.
        cluster: u64,
        /// Resource inside the cluster.
        resource: u64,
    },
    /// Any other address type (kept raw).
    Other(u64),
}

/// Decodes a 64-bit block address written by this writer (or by ESXi).
pub fn decode_addr(addr: u64) -> BlockAddr {
    match addr & 7 {
        0 if addr == 0 => BlockAddr::Null,
        1 => BlockAddr::Sfb {
            block: ((addr >> 15) & 0x7fff_ffff) * SFBS_PER_LFB + ((addr >> 51) & 0x1fff),
            tbz: ((addr >> 7) & 0xff) as u8,
        },
        7 => BlockAddr::Lfb {
            block: (addr >> 15) & 0x7fff_ffff,
            tbz: ((addr >> 7) & 0xff) as u8,
        },
        5 => BlockAddr::Pb2 {
            cluster: (addr >> 6) & 0xf_ffff_ffff,
            resource: (addr >> 56) & 0xff,
        },
        2 => BlockAddr::Sb {
            cluster: (addr >> 6) & 0xf_ffff_ffff,
            resource: (addr >> 56) & 0xff,
        },
        _ => BlockAddr::Other(addr),
    }
}

/// Little-endian writers into a byte slice; offsets are constants of this module, so a
/// slice too short is a bug in the writer and panics loudly in tests.
pub fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// See [`put_u16`].
pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// See [`put_u16`].
pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Little-endian reader used by the checker; `None` past the end.
pub fn get_u16(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}

/// See [`get_u16`].
pub fn get_u32(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}

/// See [`get_u16`].
pub fn get_u64(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(off..off + 8)?.try_into().ok()?))
}

/// A VMFS UUID (`timeLo`, `timeHi`, `rand`, MAC), 16 bytes on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A fresh UUID in the shape ESXi makes: a time stamp, a random part and a "MAC".
    pub fn generate(time: u32) -> Uuid {
        let r = crate::random_u64();
        let r2 = crate::random_u64();
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&time.to_le_bytes());
        b[4..8].copy_from_slice(&(r as u32).to_le_bytes());
        b[8..10].copy_from_slice(&((r >> 32) as u16).to_le_bytes());
        // A locally administered MAC so it never claims a real vendor prefix.
        let mac = (r2 & 0x0000_ffff_ffff_ffff) | 0x0000_0200_0000_0000;
        b[10..16].copy_from_slice(&mac.to_be_bytes()[2..8]);
        Uuid(b)
    }

    /// The text form ESXi prints: `xxxxxxxx-xxxxxxxx-xxxx-xxxxxxxxxxxx`.
    pub fn to_vmfs_string(self) -> String {
        let b = self.0;
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let hi = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let rand = u16::from_le_bytes([b[8], b[9]]);
        let mac: String = b[10..16].iter().map(|x| format!("{x:02x}")).collect();
        format!("{lo:08x}-{hi:08x}-{rand:04x}-{mac}")
    }
}

/// Bob Jenkins' 64-bit mix, as in lookup8.c.
fn mix64(mut a: u64, mut b: u64, mut c: u64) -> (u64, u64, u64) {
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 43);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 9);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 8);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 38);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 23);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 5);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 35);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 49);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 11);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 12);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 18);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 22);
    (a, b, c)
}

/// The quad variant of lookup8 ESXi uses for directory names: the key is processed as
/// 64-bit words and the final step adds the number of words, not bytes.
fn hash_quads(quads: &[u64], level: u64) -> u64 {
    let (mut a, mut b, mut c) = (level, level, 0x9e37_79b9_7f4a_7c13u64);
    let mut rest = quads;
    while rest.len() > 2 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
        c = c.wrapping_add(rest[2]);
        (a, b, c) = mix64(a, b, c);
        rest = &rest[3..];
    }
    c = c.wrapping_add(quads.len() as u64);
    if rest.len() == 2 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
    } else if rest.len() == 1 {
        a = a.wrapping_add(rest[0]);
    }
    mix64(a, b, c).2
}

/// Salt ESXi puts into the unused part of the first 128 bytes of the hashed name buffer.
const NAME_HASH_SALT: u64 = 0x739a_75c2_8e61_b017;

/// The 64-bit directory name hash (`Fil3LookupIntVMFS6`): the name in a zeroed 256-byte
/// buffer, 8-byte words of salt from the first word boundary past the name up to byte 127,
/// hashed as 32 words with level 42.
pub fn name_hash(name: &[u8]) -> u64 {
    let mut key = [0u8; 256];
    let n = name.len().min(255);
    key[..n].copy_from_slice(&name[..n]);
    let mut i = (n + 8) & !7;
    while i < 127 {
        key[i..i + 8].copy_from_slice(&NAME_HASH_SALT.to_le_bytes());
        i += 8;
    }
    let mut quads = [0u64; 32];
    for (q, chunk) in quads.iter_mut().zip(key.chunks_exact(8)) {
        *q = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
    }
    hash_quads(&quads, 42)
}

/// Hash-table slots of a directory.
pub const DIR_HASH_ENTRIES: u64 = 16001;
/// Slots at the end of the root directory's table reserved for the system files.
pub const DIR_ROOT_RESERVED: u64 = 28;
/// The first reserved root slot (`.fbb.sf`); the system files follow in FD order.
pub const DIR_ROOT_SYSTEM_FIRST: u16 = 0x3e66;

/// Hash-table slot for `name` (root directories use fewer slots).
pub fn name_hash_slot(name: &[u8], in_root: bool) -> u64 {
    let modulus = if in_root {
        DIR_HASH_ENTRIES - DIR_ROOT_RESERVED
    } else {
        DIR_HASH_ENTRIES
    };
    name_hash(name) % modulus
}

/// The 16-bit hash kept in link groups to tell colliding names apart.
pub fn name_link_hash(name: &[u8]) -> u16 {
    (name_hash(name) >> 16) as u16
}

/// Resource file metadata (`FS3_ResFileMetadata`), the first bytes of every resource file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResMeta {
    /// 0x00 resources per cluster.
    pub resources_per_cluster: u32,
    /// 0x04 clusters per cluster group.
    pub clusters_per_group: u32,
    /// 0x08 file offset of the first cluster group.
    pub cluster_group_offset: u32,
    /// 0x0c size of one resource.
    pub resource_size: u32,
    /// 0x10 size of one cluster group.
    pub cluster_group_size: u32,
    /// 0x14 number of resources.
    pub num_resources: u32,
    /// 0x18 number of cluster groups.
    pub num_cluster_groups: u32,
    /// 0x28 flags (0x2: child of a parent resource; ESXi sets 0x4 on most).
    pub flags: u32,
    /// 0x2c/0x2e affinity per cluster / per resource.
    pub affinity: u32,
    /// 0x30 allocation bits per resource.
    pub bits_per_resource: u32,
    /// 0x34 offset of the child metadata (`.fbb.sf`: SFBs under LFBs).
    pub child_meta_offset: u32,
    /// 0x38 parent resources per cluster.
    pub parent_resources_per_cluster: u32,
    /// 0x3c parent clusters per group.
    pub parent_clusters_per_group: u32,
    /// 0x40 parent cluster group size.
    pub parent_cluster_group_size: u32,
    /// 0x54 LFB clusters converted to SFB clusters (child only).
    pub converted_clusters: u32,
}

impl ResMeta {
    /// Serializes into the first 0x58 bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        put_u32(buf, 0x00, self.resources_per_cluster);
        put_u32(buf, 0x04, self.clusters_per_group);
        put_u32(buf, 0x08, self.cluster_group_offset);
        put_u32(buf, 0x0c, self.resource_size);
        put_u32(buf, 0x10, self.cluster_group_size);
        put_u32(buf, 0x14, self.num_resources);
        put_u32(buf, 0x18, self.num_cluster_groups);
        put_u32(buf, 0x1c, 0);
        put_u32(buf, 0x20, RFMD_SIGNATURE);
        put_u32(buf, 0x24, 1);
        put_u32(buf, 0x28, self.flags);
        put_u32(buf, 0x2c, self.affinity);
        put_u32(buf, 0x30, self.bits_per_resource);
        put_u32(buf, 0x34, self.child_meta_offset);
        put_u32(buf, 0x38, self.parent_resources_per_cluster);
        put_u32(buf, 0x3c, self.parent_clusters_per_group);
        put_u32(buf, 0x40, self.parent_cluster_group_size);
        put_u32(buf, 0x54, self.converted_clusters);
    }

    /// Parses what [`ResMeta::write`] wrote; `None` without the `rfmd` signature.
    pub fn read(buf: &[u8]) -> Option<ResMeta> {
        if get_u32(buf, 0x20)? != RFMD_SIGNATURE {
            return None;
        }
        Some(ResMeta {
            resources_per_cluster: get_u32(buf, 0x00)?,
            clusters_per_group: get_u32(buf, 0x04)?,
            cluster_group_offset: get_u32(buf, 0x08)?,
            resource_size: get_u32(buf, 0x0c)?,
            cluster_group_size: get_u32(buf, 0x10)?,
            num_resources: get_u32(buf, 0x14)?,
            num_cluster_groups: get_u32(buf, 0x18)?,
            flags: get_u32(buf, 0x28)?,
            affinity: get_u32(buf, 0x2c)?,
            bits_per_resource: get_u32(buf, 0x30)?,
            child_meta_offset: get_u32(buf, 0x34)?,
            parent_resources_per_cluster: get_u32(buf, 0x38)?,
            parent_clusters_per_group: get_u32(buf, 0x3c)?,
            parent_cluster_group_size: get_u32(buf, 0x40)?,
            converted_clusters: get_u32(buf, 0x54)?,
        })
    }

    /// A flat resource file layout: `count` resources of `size` bytes, `per_cluster` to a
    /// cluster, `per_group` clusters to a group, the first group at 64 KiB.
    pub fn flat(count: u64, size: u64, per_cluster: u32, per_group: u32) -> ResMeta {
        let clusters = count.div_ceil(u64::from(per_cluster));
        let groups = clusters.div_ceil(u64::from(per_group));
        let group_size = u64::from(per_group) * (2 * MD_ALIGN + u64::from(per_cluster) * size);
        ResMeta {
            resources_per_cluster: per_cluster,
            clusters_per_group: per_group,
            cluster_group_offset: 0x10000,
            resource_size: size as u32,
            cluster_group_size: group_size as u32,
            num_resources: count as u32,
            num_cluster_groups: groups as u32,
            flags: 4,
            affinity: (1 << 16) | per_cluster.min(0xffff),
            bits_per_resource: 1,
            ..ResMeta::default()
        }
    }

    /// Length of the file that holds every cluster group.
    pub fn file_len(&self) -> u64 {
        u64::from(self.cluster_group_offset)
            + u64::from(self.num_cluster_groups) * u64::from(self.cluster_group_size)
    }

    /// File offset of cluster `cluster`'s lock block (its metadata block follows).
    pub fn cluster_header_offset(&self, cluster: u64) -> u64 {
        let per_group = u64::from(self.clusters_per_group.max(1));
        u64::from(self.cluster_group_offset)
            + (cluster / per_group) * u64::from(self.cluster_group_size)
            + (cluster % per_group) * 2 * MD_ALIGN
    }

    /// File offset of resource `resource` of cluster `cluster` (flat layout).
    pub fn resource_offset(&self, cluster: u64, resource: u64) -> u64 {
        let per_group = u64::from(self.clusters_per_group.max(1));
        let cluster_size = u64::from(self.resources_per_cluster) * u64::from(self.resource_size);
        u64::from(self.cluster_group_offset)
            + (cluster / per_group) * u64::from(self.cluster_group_size)
            + per_group * 2 * MD_ALIGN
            + (cluster % per_group) * cluster_size
            + resource * u64::from(self.resource_size)
    }
}

/// Builds the 8 KiB lock + metadata pair heading one resource cluster.
///
/// `lock_addr` is the device offset of the pair. `free_bits` carries the allocation bitmap
/// (`bits_per_resource` bits per resource, all ones = free, as ESXi writes for `.fdc.sf` and
/// `.sbc.sf`). `owners` lists (file descriptor address, resources held) for SFB clusters,
/// which ESXi tracks by owner instead of by bitmap.
pub fn cluster_header(
    res_type: u32,
    lock_addr: u64,
    cluster: u64,
    total: u16,
    free: u16,
    bitmap: &[u8],
    owners: &[(u32, u32)],
) -> Vec<u8> {
    let mut buf = vec![0u8; 2 * MD_ALIGN as usize];
    put_u32(&mut buf, 0x00, 0x10c0_0001 + res_type);
    put_u64(&mut buf, 0x04, lock_addr);
    put_u64(&mut buf, 0x1c, 1);
    let meta = &mut buf[MD_ALIGN as usize..];
    put_u32(meta, 0x10, RCMD_SIGNATURE);
    put_u64(meta, 0x18, cluster);
    put_u16(meta, 0x20, total);
    put_u16(meta, 0x22, free);
    put_u32(meta, 0x30, 1);
    let n = bitmap.len().min(CLUSTER_BITMAP_MAX);
    meta[CLUSTER_BITMAP_OFFSET..CLUSTER_BITMAP_OFFSET + n].copy_from_slice(&bitmap[..n]);
    if !owners.is_empty() {
        let max = (MD_ALIGN as usize - CLUSTER_OWNERS_OFFSET) / 8 - 1;
        let listed = &owners[..owners.len().min(max)];
        put_u16(meta, 0x26, (listed.len() + 1) as u16);
        put_u32(meta, CLUSTER_OWNERS_OFFSET, 0);
        put_u32(meta, CLUSTER_OWNERS_OFFSET + 4, u32::from(free));
        for (i, (fd, count)) in listed.iter().enumerate() {
            let o = CLUSTER_OWNERS_OFFSET + 8 * (i + 1);
            put_u32(meta, o, *fd);
            put_u32(meta, o + 4, *count);
        }
    }
    buf
}

/// Offset of the allocation bitmap inside a cluster metadata block.
pub const CLUSTER_BITMAP_OFFSET: usize = 0x80;
/// Room for the bitmap before the owner list.
pub const CLUSTER_BITMAP_MAX: usize = 0x100;
/// Offset of the owner list inside an SFB cluster metadata block.
pub const CLUSTER_OWNERS_OFFSET: usize = 0x940;

/// A bitmap of `total` entries of `bits` bits, entry `i` all ones when `free(i)`.
pub fn pack_bitmap(total: u64, bits: u32, mut value: impl FnMut(u64) -> u8) -> Vec<u8> {
    let mut out = vec![0u8; (total * u64::from(bits)).div_ceil(8) as usize];
    for i in 0..total {
        let v = value(i);
        for b in 0..u64::from(bits) {
            if v & (1 << b) != 0 {
                let bit = i * u64::from(bits) + b;
                out[(bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
    }
    out
}

/// Reads entry `i` of a bitmap packed by [`pack_bitmap`].
pub fn bitmap_entry(map: &[u8], bits: u32, i: u64) -> Option<u8> {
    let mut v = 0u8;
    for b in 0..u64::from(bits) {
        let bit = i * u64::from(bits) + b;
        let byte = *map.get((bit / 8) as usize)?;
        if byte & (1 << (bit % 8)) != 0 {
            v |= 1 << b;
        }
    }
    Some(v)
}

/// LFB allocation states in the 3-bit `.fbb.sf` parent bitmap. ESXi's volume shows
/// `0b100` for an LFB converted into an SFB cluster; free (all ones) follows the 1 = free
/// convention of the other bitmaps, and an LFB held by a file is all zeros (inferred).
pub mod lfb_state {
    /// Free.
    pub const FREE: u8 = 0b111;
    /// Held by a file as one large block.
    pub const USED: u8 = 0b000;
    /// Split into an SFB cluster.
    pub const CONVERTED: u8 = 0b100;
}

/// File descriptor fields the writer fills.
#[derive(Clone, Debug, Default)]
pub struct FdMeta {
    /// 0x00 own address.
    pub addr: u32,
    /// 0x08 link count.
    pub links: u32,
    /// 0x0c descriptor type.
    pub fd_type: u32,
    /// 0x14 file length.
    pub length: u64,
    /// 0x1c block size addressed by one entry of the block array.
    pub block_size: u64,
    /// 0x24 blocks held.
    pub num_blocks: u64,
    /// 0x2c/0x30/0x34 times (seconds).
    pub mtime: u32,
    /// Creation time.
    pub ctime: u32,
    /// Access time.
    pub atime: u32,
    /// 0x38 owner.
    pub uid: u32,
    /// 0x3c group.
    pub gid: u32,
    /// 0x40 mode (permission bits; `S_IFDIR` for system directories).
    pub mode: u32,
    /// 0x44 zero-level address type.
    pub zla: u32,
    /// 0x48 TBZ blocks.
    pub tbz_blocks: u64,
    /// 0x5c pointer blocks.
    pub pointer_blocks: u32,
    /// 0x70 parent directory's FD.
    pub parent: u32,
    /// 0x8c large file blocks.
    pub lfbs: u32,
}

/// Builds an 8 KiB file descriptor at device offset `lock_addr`, with `addrs` (block
/// address array) or `resident` data.
pub fn file_descriptor(meta: &FdMeta, lock_addr: u64, addrs: &[u64], resident: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; FD_SIZE as usize];
    put_u32(&mut buf, 0x00, FD_LOCK_TYPE);
    put_u64(&mut buf, 0x04, lock_addr);
    put_u64(&mut buf, 0x1c, 1);
    let m = &mut buf[MD_ALIGN as usize..];
    put_u32(m, 0x00, meta.addr);
    put_u32(m, 0x04, 1);
    put_u32(m, 0x08, meta.links);
    put_u32(m, 0x0c, meta.fd_type);
    put_u64(m, 0x14, meta.length);
    put_u64(m, 0x1c, meta.block_size);
    put_u64(m, 0x24, meta.num_blocks);
    put_u32(m, 0x2c, meta.mtime);
    put_u32(m, 0x30, meta.ctime);
    put_u32(m, 0x34, meta.atime);
    put_u32(m, 0x38, meta.uid);
    put_u32(m, 0x3c, meta.gid);
    put_u32(m, 0x40, meta.mode);
    put_u32(m, 0x44, meta.zla);
    put_u32(m, 0x48, meta.tbz_blocks as u32);
    put_u32(m, 0x50, meta.num_blocks as u32);
    put_u32(m, 0x54, (meta.tbz_blocks >> 32) as u32);
    put_u32(m, 0x5c, meta.pointer_blocks);
    put_u32(m, 0x64, FDMD_SIGNATURE);
    put_u32(m, 0x68, meta.addr);
    put_u32(m, 0x6c, 20);
    put_u32(m, 0x70, meta.parent);
    m[0x89] = meta.block_size.trailing_zeros() as u8;
    put_u32(m, 0x8c, meta.lfbs);
    for (i, a) in addrs.iter().take(FD_MAX_ADDRS).enumerate() {
        put_u64(&mut buf, FD_ADDRS_OFFSET + 8 * i, *a);
    }
    let n = resident.len().min(RESIDENT_MAX as usize);
    buf[FD_RESIDENT_OFFSET..FD_RESIDENT_OFFSET + n].copy_from_slice(&resident[..n]);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_match_the_esxi_volume() {
        // Root directory block of the ESXi volume: SFB 8.
        assert_eq!(sfb_addr(8, 0), 0x0040_0000_0000_0001);
        // .fdc.sf second block: SFB 10.
        assert_eq!(sfb_addr(10, 0), 0x0050_0000_0000_0001);
        // .sbc.sf data near the end of cluster 1.
        assert_eq!(sfb_addr(512 + 255, 0), 0x07f8_0000_0000_8001);
        assert_eq!(sb_addr(0, 1), 0x0100_0000_0000_0002);
        assert_eq!(fd_addr(0, 9), 0x0240_0004);
        assert_eq!(
            decode_addr(sfb_addr(1234, 0xff)),
            BlockAddr::Sfb {
                block: 1234,
                tbz: 0xff
            }
        );
        assert_eq!(
            decode_addr(lfb_addr(3, 0)),
            BlockAddr::Lfb { block: 3, tbz: 0 }
        );
    }

    #[test]
    fn name_hash_matches_the_esxi_volume() {
        // "directory" sits in root hash slot 15490 and stores 0x0dbc9f66 in its entry.
        assert_eq!(name_hash_slot(b"directory", true), 15490);
        assert_eq!(name_hash(b"directory") as u32, 0x0dbc_9f66);
    }

    #[test]
    fn uuid_text_form() {
        let u = Uuid([
            0x1e, 0x00, 0x13, 0x61, 0xfb, 0xd8, 0xaf, 0x95, 0x30, 0xd8, 0x00, 0x0c, 0x29, 0x80,
            0x16, 0x86,
        ]);
        assert_eq!(u.to_vmfs_string(), "6113001e-95afd8fb-d830-000c29801686");
    }
}
