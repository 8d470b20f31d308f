//! VMFS5 specifics: 2 KiB file descriptors with 32-bit addresses, 4 KiB pointer blocks, and the
//! bootstrap location of system file descriptors.

use crate::address::fd_parts;
use crate::descriptor::FsDescriptor;
use crate::layout::Layout;

/// VMFS5 layout: FD = lock (512) + metadata (512) + 1 KiB that holds either 256 block
/// addresses or resident data.
pub fn layout() -> Layout {
    Layout {
        vmfs6: false,
        fd_size: 2048,
        meta_offset: 512,
        data_offset: 1024,
        data_size: 1024,
        addrs_offset: 1024,
        num_addrs: 256,
        addr_bytes: 4,
        pb_entries: 1024,
        cluster_header_size: 1024,
    }
}

/// Volume offset of a system file's descriptor, computed without `.fdc.sf` (which is itself
/// one of them). Without DenseSBPerCluster, `.pb2.sf` and `.sdd.sf` have their FDs at
/// addresses the FS3 descriptor names.
pub fn sfd_offset(d: &FsDescriptor, addr: u32) -> Option<u64> {
    if !d.dense_sb() {
        if addr == d.pb2_fd_addr && d.pb2_vol_addr != 0 {
            return Some(d.pb2_vol_addr);
        }
        if addr == d.sdd_fd_addr && d.sdd_vol_addr != 0 {
            return Some(d.sdd_vol_addr);
        }
    }
    let fbs = d.file_block_size;
    // The FD cluster groups start at the first file block boundary at or after 4 MiB.
    let groups = fbs.checked_mul(fbs.checked_add(0x3F_FFFF)? / fbs)?;
    let (_, resource) = fd_parts(addr);
    groups
        .checked_add(d.fdc_cluster_group_offset as u64)?
        .checked_add(d.fdc_clusters_per_group as u64 * 1024)?
        .checked_add(resource << 11)
}

/// Volume offset of any FD the same way the FD bootstrap does, for the two FDs that live
/// outside `.fdc.sf` on non-dense volumes.
pub fn special_fd_offset(d: &FsDescriptor, addr: u32) -> Option<u64> {
    if d.dense_sb() {
        return None;
    }
    if addr == d.pb2_fd_addr && d.pb2_vol_addr != 0 {
        Some(d.pb2_vol_addr)
    } else if addr == d.sdd_fd_addr && d.sdd_vol_addr != 0 {
        Some(d.sdd_vol_addr)
    } else {
        None
    }
}
