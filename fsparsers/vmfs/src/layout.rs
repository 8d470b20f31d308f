//! Version-dependent sizes of file descriptors and pointer blocks. The values themselves live
//! in [`crate::v5`] and [`crate::v6`].

/// Where things are inside a file descriptor, and how big pointer blocks are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// VMFS6 (64-bit addresses) rather than VMFS5.
    pub vmfs6: bool,
    /// Bytes of one file descriptor (lock block + metadata block + data).
    pub fd_size: usize,
    /// Offset of `FS3_FileMetadata` inside the FD.
    pub meta_offset: usize,
    /// Offset of resident data inside the FD.
    pub data_offset: usize,
    /// Bytes of resident data an FD can hold.
    pub data_size: usize,
    /// Offset of the block address array inside the FD.
    pub addrs_offset: usize,
    /// Entries of the block address array.
    pub num_addrs: usize,
    /// Bytes of one address (4 on VMFS5, 8 on VMFS6).
    pub addr_bytes: usize,
    /// Addresses held by one pointer block.
    pub pb_entries: usize,
    /// Per-cluster header bytes in resource files.
    pub cluster_header_size: u64,
}

impl Layout {
    /// Bytes of one pointer block.
    pub fn pb_bytes(&self) -> usize {
        self.pb_entries * self.addr_bytes
    }
}
