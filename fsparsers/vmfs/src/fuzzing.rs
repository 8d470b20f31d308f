//! Entry points for the cargo-fuzz targets in `/fuzz` (and their smoke tests). The fuzz input
//! rewrites bytes of a small synthetic VMFS partition (valid LVM header and FS3 descriptor,
//! everything else zero) at the places the reader looks first; the reader must answer with a
//! result or an error, never a panic, a hang or an unbounded allocation.

use std::sync::Arc;

use fscore::{FileType, Filesystem};
use lun::{ReadAt, Source};

use crate::lvm::LVM_DEV_HEADER_OFFSET as HDR;

const DATA: u64 = 0x110_0000;
const VOLUME: u64 = 32 << 20;

/// Writes over `buf`, which holds the bytes at `offset`, the parts of `patches` (device offset,
/// bytes) it covers, in order, so later patches win.
pub fn apply_patches(patches: &[(u64, Vec<u8>)], offset: u64, buf: &mut [u8]) {
    let end = offset + buf.len() as u64;
    for (p, bytes) in patches {
        let pend = p + bytes.len() as u64;
        if *p >= end || pend <= offset {
            continue;
        }
        let s = (*p).max(offset);
        let e = pend.min(end);
        buf[(s - offset) as usize..(e - offset) as usize]
            .copy_from_slice(&bytes[(s - p) as usize..(e - p) as usize]);
    }
}

/// A zero-filled device of `size` bytes with byte patches.
struct Patched {
    size: u64,
    patches: Vec<(u64, Vec<u8>)>,
}

impl ReadAt for Patched {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| lun::LunError::OutOfRange {
                name: "fuzz".into(),
                offset,
                len: buf.len() as u64,
                size: self.size,
            })?;
        buf.fill(0);
        apply_patches(&self.patches, offset, buf);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> &str {
        "fuzz"
    }
}

fn le32(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn le64(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// The synthetic partition's template: LVM header, one PE, FS3 descriptor.
fn template(vmfs6: bool) -> Vec<(u64, Vec<u8>)> {
    let devmeta = if vmfs6 { 4096 } else { 512 };
    let max_vol: u64 = if vmfs6 { 1 } else { 512 };
    let bitmap: u64 = if vmfs6 { 4096 } else { 1024 };
    let sd = HDR + devmeta + max_vol * 512 + (1024 - max_vol) * 512 - 256 * 32;
    let pe = sd + 256 * 32 + bitmap;
    let vd = HDR + devmeta;
    let fs = DATA + 0x20_0000;
    vec![
        (HDR, le32(crate::lvm::LVM_MAGIC)),
        (HDR + 4, le32(if vmfs6 { 6 } else { 5 })),
        (HDR + 0x5a, le32(512)),
        (HDR + 0x5e, le64(DATA + VOLUME - HDR)),
        (HDR + 0x66, le32(1)),
        (HDR + 0x6a, le32(1)),
        (HDR + 0x7a, le64(DATA)),
        (HDR + 0xbe, le32(1)),
        (HDR + 0xca, le32(4096)),
        (vd, le64(VOLUME)),
        (vd + 0x90, le32(1)),
        (pe, vec![1]),
        (pe + 9, le64(DATA)),
        (pe + 17, le64(0)),
        (pe + 25, le64(VOLUME)),
        (fs, le32(crate::descriptor::VMFS_MAGIC)),
        (fs + 4, le32(if vmfs6 { 24 } else { 14 })),
        (fs + 0x19, le32(if vmfs6 { 0 } else { 4 })),
        (fs + 0x9d, le32(512)),
        (fs + 0xa1, le64(1 << 20)),
        (fs + 0xd1, le32(0x1_0000)),
        (fs + 0xd5, le32(if vmfs6 { 8 } else { 64 })),
        (fs + 0xd9, le32(if vmfs6 { 0x1_0000 } else { 0x2000 })),
        (fs + 0x134, le32(if vmfs6 { 4096 } else { 0 })),
        (fs + 0x138, le32(if vmfs6 { 9 } else { 0 })),
    ]
}

/// Builds the patched partition from `data`: byte 0 picks VMFS5/6, then records of
/// (region selector, 16-bit offset, length, bytes) rewrite it.
fn device(data: &[u8]) -> Source {
    let vmfs6 = data.first().is_some_and(|b| b & 1 == 1);
    let mut patches = template(vmfs6);
    let desc = crate::descriptor::FsDescriptor::parse(
        &{
            let mut b = vec![0u8; 512];
            for (off, bytes) in &patches {
                if *off >= DATA + 0x20_0000 && *off < DATA + 0x20_0200 {
                    let o = (off - DATA - 0x20_0000) as usize;
                    b[o..o + bytes.len()].copy_from_slice(bytes);
                }
            }
            b
        },
        "fuzz",
        0,
    )
    .expect("template descriptor");
    let sfd = |addr: u32| {
        if vmfs6 {
            crate::v6::sfd_offset(&desc, addr)
        } else {
            crate::v5::sfd_offset(&desc, addr)
        }
        .unwrap_or(0)
            + DATA
    };
    // Places worth hitting: LVM header, volume descriptor, FS3 descriptor, system and root FDs,
    // and anywhere in the volume's first MiBs.
    let regions = [
        HDR,
        HDR + if vmfs6 { 4096 } else { 512 },
        DATA + 0x20_0000,
        sfd(crate::ROOT_DIR_ADDR),
        sfd(crate::FBB_ADDR),
        sfd(crate::FDC_ADDR),
        sfd(crate::PBC_ADDR),
        sfd(crate::SBC_ADDR),
        sfd(crate::PB2_ADDR),
        DATA + 0x40_0000,
        DATA + 0x80_0000,
        DATA + 0x100_0000,
    ];
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut count = 0;
    while rest.len() >= 4 && count < 256 {
        let region = regions[rest[0] as usize % regions.len()];
        let off = u16::from_le_bytes([rest[1], rest[2]]) as u64;
        let len = (rest[3] as usize).min(rest.len() - 4);
        let big = if rest[0] as usize >= regions.len() * 16 {
            off << 8
        } else {
            off
        };
        patches.push((region + big, rest[4..4 + len].to_vec()));
        rest = &rest[4 + len..];
        count += 1;
    }
    Arc::new(Patched {
        size: DATA + VOLUME,
        patches,
    })
}

/// Opens the fuzzed partition and uses it as a client would, bounded.
pub fn volume(data: &[u8]) {
    let dev = device(data);
    let _ = crate::lvm_device_info(dev.as_ref());
    let Ok(fs) = crate::Vmfs::open(vec![dev]) else {
        return;
    };
    let _ = fs.info();
    let _ = fs.list_tree(&fscore::TreeLimits {
        max_entries: 256,
        max_depth: 8,
        include_hidden: true,
        inline_max: 0,
        inline_total: 0,
        inline_extensions: &[],
    });
    let mut stack = vec![(fs.root(), 0u32)];
    let mut seen = std::collections::HashSet::new();
    while let Some((dir, depth)) = stack.pop() {
        if depth > 8 || !seen.insert(dir.clone()) || seen.len() > 64 {
            continue;
        }
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries.into_iter().take(64) {
            if e.file_type == FileType::Dir {
                stack.push((e.id.clone(), depth + 1));
            }
            let _ = fs.extents(&e.id);
            if let Ok(md) = fs.metadata(&e.id)
                && let Ok(src) = fs.open(&e.id)
            {
                let mut buf = vec![0u8; md.size.min(1 << 20) as usize];
                let _ = src.read_exact_at(0, &mut buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_handles_samples() {
        super::volume(&[]);
        super::volume(&[1]);
        super::volume(&[0, 3, 0x44, 0, 4, 0xd1, 0x10, 0, 0]);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        super::volume(&noise);
        let mut v6 = noise.clone();
        v6[0] = 1;
        super::volume(&v6);
    }
}
