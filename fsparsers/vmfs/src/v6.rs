//! VMFS6 specifics: file descriptors of two metadata-alignment blocks (8 KiB at the usual
//! 4 KiB alignment) with 64-bit addresses, 64 KiB pointer blocks, and the bootstrap location of
//! system file descriptors.

use crate::address::fd_parts;
use crate::descriptor::FsDescriptor;
use crate::layout::Layout;

/// VMFS6 layout for a metadata alignment `mda`: the lock takes the first `mda` bytes, the
/// metadata (512 bytes) starts the second, resident data follows it, and the block address
/// array is aligned to the end of the FD.
pub fn layout(mda: u32) -> Layout {
    let mda = mda as usize;
    let fd_size = 2 * mda;
    let data_size = mda - 512;
    let addrs_size = if mda <= 0x1000 { 2560 } else { mda >> 1 };
    Layout {
        vmfs6: true,
        fd_size,
        meta_offset: mda,
        data_offset: fd_size - data_size,
        data_size,
        addrs_offset: fd_size - addrs_size,
        num_addrs: addrs_size / 8,
        addr_bytes: 8,
        pb_entries: if mda < 0x1_0000 { 8192 } else { mda >> 3 },
        cluster_header_size: 2 * mda as u64,
    }
}

/// Volume offset of a system file's descriptor, computed without `.fdc.sf`.
pub fn sfd_offset(d: &FsDescriptor, addr: u32) -> Option<u64> {
    let mda = d.md_alignment as u64;
    // The FD cluster groups start at the first MiB boundary after mdAlignment × 1024 bytes.
    let groups = ((mda << 10) + 0x3F_FFFF) & !0xF_FFFF;
    let fd_size = 2 * mda;
    let (_, resource) = fd_parts(addr);
    groups
        .checked_add(d.fdc_cluster_group_offset as u64)?
        .checked_add(d.fdc_clusters_per_group as u64 * fd_size)?
        .checked_add(resource * fd_size)
}
