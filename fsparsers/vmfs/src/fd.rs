//! File descriptors (`FS3_FileDescriptor`): a disk lock, `FS3_FileMetadata`, and either a block
//! address array or resident data.

use fscore::le::{u8_at, u32_at, u64_at};

use crate::address::Addr;
use crate::layout::Layout;

/// `FS3_DescriptorType` values.
pub mod fd_type {
    /// Directory.
    pub const DIRECTORY: u32 = 2;
    /// Regular file.
    pub const REGFILE: u32 = 3;
    /// Symbolic link.
    pub const SYMLINK: u32 = 4;
    /// System file (`.fdc.sf`…); a directory when its mode says so (`.sdd.sf`).
    pub const SYSFILE: u32 = 5;
    /// Raw device mapping.
    pub const RDM: u32 = 6;
}

/// Zero-level address types (`zeroLevelAddrType`): how the block address array is read.
pub mod zla {
    /// Array entries are file blocks (SFB/LFB on VMFS6).
    pub const FILE_BLOCK: u32 = 1;
    /// Array entries are sub-blocks.
    pub const SUB_BLOCK: u32 = 2;
    /// Array entries are pointer blocks to data blocks.
    pub const POINTER_BLOCK: u32 = 3;
    /// Array entries are secondary pointer blocks to data blocks.
    pub const POINTER2_BLOCK: u32 = 5;
    /// Array entries are pointer blocks to pointer blocks (double indirect).
    pub const POINTER_BLOCK_DOUBLE: u32 = 0x10D0;
    /// The data is stored inside the FD.
    pub const RESIDENT: u32 = 0x10D1;
}

/// `S_IFMT` / `S_IFDIR` bits.
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;

/// A decoded file descriptor. Offsets in field docs are inside `FS3_FileMetadata`.
#[derive(Clone, Debug)]
pub struct Fd {
    /// The address it was read from.
    pub addr: u32,
    /// `descAddr` (0x00): the FD's own address.
    pub desc_addr: u32,
    /// `generation` (0x04).
    pub generation: u32,
    /// `linkCount` (0x08).
    pub link_count: u32,
    /// `type` (0x0c).
    pub fd_type: u32,
    /// `fileLength` (0x14).
    pub file_length: u64,
    /// `blockSize` (0x1c): bytes each block address array entry covers.
    pub block_size: u64,
    /// `numBlocks` (0x24).
    pub num_blocks: u64,
    /// `mtime` (0x2c).
    pub mtime: u32,
    /// `ctime` (0x30).
    pub ctime: u32,
    /// `atime` (0x34).
    pub atime: u32,
    /// `uid` (0x38).
    pub uid: u32,
    /// `gid` (0x3c).
    pub gid: u32,
    /// `mode` (0x40).
    pub mode: u32,
    /// `zeroLevelAddrType` (0x44).
    pub zla: u32,
    /// `blockOffsetShift` (0x89, VMFS6).
    pub block_offset_shift: u8,
    /// The FD's bytes from `base` on.
    raw: Vec<u8>,
    /// Offset inside the FD of `raw[0]`.
    base: usize,
    layout: Layout,
}

impl Fd {
    /// Decodes an FD from its `layout.fd_size` bytes. `None` when `raw` is short.
    pub fn parse(addr: u32, raw: Vec<u8>, layout: Layout) -> Option<Fd> {
        Fd::parse_from(addr, raw, 0, layout)
    }

    /// Decodes an FD from its bytes after the lock (from `layout.meta_offset` to
    /// `layout.fd_size`): nothing before the metadata is ever used, so directory walks read
    /// half the bytes on VMFS6. `None` when `raw` is short.
    pub fn parse_meta(addr: u32, raw: Vec<u8>, layout: Layout) -> Option<Fd> {
        Fd::parse_from(addr, raw, layout.meta_offset, layout)
    }

    fn parse_from(addr: u32, raw: Vec<u8>, base: usize, layout: Layout) -> Option<Fd> {
        if base > layout.meta_offset || raw.len() < layout.fd_size.checked_sub(base)? {
            return None;
        }
        let m = layout.meta_offset - base;
        Some(Fd {
            addr,
            desc_addr: u32_at(&raw, m)?,
            generation: u32_at(&raw, m + 0x04)?,
            link_count: u32_at(&raw, m + 0x08)?,
            fd_type: u32_at(&raw, m + 0x0c)?,
            file_length: u64_at(&raw, m + 0x14)?,
            block_size: u64_at(&raw, m + 0x1c)?,
            num_blocks: u64_at(&raw, m + 0x24)?,
            mtime: u32_at(&raw, m + 0x2c)?,
            ctime: u32_at(&raw, m + 0x30)?,
            atime: u32_at(&raw, m + 0x34)?,
            uid: u32_at(&raw, m + 0x38)?,
            gid: u32_at(&raw, m + 0x3c)?,
            mode: u32_at(&raw, m + 0x40)?,
            zla: u32_at(&raw, m + 0x44)?,
            block_offset_shift: u8_at(&raw, m + 0x89)?,
            raw,
            base,
            layout,
        })
    }

    /// True for directories (and system directories such as `.sdd.sf`).
    pub fn is_dir(&self) -> bool {
        self.fd_type == fd_type::DIRECTORY
            || (self.fd_type == fd_type::SYSFILE && self.mode & S_IFMT == S_IFDIR)
    }

    /// Raw entry `i` of the block address array (0 past its end).
    pub fn raw_addr(&self, i: usize) -> u64 {
        if i >= self.layout.num_addrs {
            return 0;
        }
        let o = self.layout.addrs_offset + i * self.layout.addr_bytes - self.base;
        if self.layout.vmfs6 {
            u64_at(&self.raw, o).unwrap_or(0)
        } else {
            u32_at(&self.raw, o).map_or(0, u64::from)
        }
    }

    /// Entry `i` of the block address array, decoded.
    pub fn addr_at(&self, i: usize, dense_sb: bool) -> Addr {
        decode(self.layout.vmfs6, self.raw_addr(i), dense_sb)
    }

    /// The resident data area (its whole capacity; the file length says how much is used).
    pub fn resident(&self) -> &[u8] {
        let start = self.layout.data_offset - self.base;
        &self.raw[start..start + self.layout.data_size]
    }
}

/// Decodes an address of either version.
pub fn decode(vmfs6: bool, raw: u64, dense_sb: bool) -> Addr {
    if vmfs6 {
        Addr::decode6(raw)
    } else {
        Addr::decode5(raw as u32, dense_sb)
    }
}
