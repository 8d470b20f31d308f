//! From a file descriptor to the file's extents on the logical volume: resident data, direct
//! blocks, sub-blocks, pointer blocks and double-indirect pointer blocks. TBZ (to-be-zeroed)
//! blocks become holes, because their bytes on disk are stale and must read as zeros.

use std::collections::HashSet;

use lun::{ExtentMap, ExtentMapBuilder, MappedFile, ReadAt, Source};

use crate::address::{Addr, kind};
use crate::descriptor::FsDescriptor;
use crate::error::{Result, VmfsError};
use crate::fd::{Fd, decode, zla};
use crate::layout::Layout;
use crate::resource::ResMeta;

/// Files larger than this are refused as corrupt (VMFS caps files at 62 TiB; leave headroom).
pub const MAX_FILE_SIZE: u64 = 1 << 50;
/// Bound on distinct pointer blocks visited for one file.
pub const MAX_POINTER_BLOCKS: usize = 1 << 22;

/// A resource file opened for reading resources: its metadata and its content as a source
/// over the logical volume.
pub struct ResFile {
    /// `FS3_ResFileMetadata`.
    pub meta: ResMeta,
    /// The file's extents on the volume.
    pub map: ExtentMap,
    /// The file's bytes.
    pub file: MappedFile,
    /// File name (`.sbc.sf`…).
    pub name: &'static str,
    /// Its FD address.
    pub fd: u32,
}

impl ResFile {
    /// Offset inside the file of (cluster, resource), checked against the file's geometry
    /// and size for a read of `len` bytes.
    pub fn offset(&self, cluster: u64, resource: u64, len: u64) -> Option<u64> {
        let off = self.meta.resource_offset(cluster, resource)?;
        (len <= self.meta.resource_size && off.checked_add(len)? <= self.map.size()).then_some(off)
    }
}

/// The decoded content description of a file.
#[derive(Clone, Debug)]
pub enum FileMap {
    /// Data inside the FD.
    Resident(Vec<u8>),
    /// Extents on the logical volume; `allocated` counts TBZ blocks too.
    Blocks {
        /// Extents in volume coordinates.
        map: ExtentMap,
        /// Bytes allocated (data and TBZ blocks, clipped to the file size).
        allocated: u64,
    },
}

/// What address resolution needs. During the bootstrap some resource files are not open yet.
pub struct Ctx<'a> {
    /// The FS3 descriptor.
    pub desc: &'a FsDescriptor,
    /// FD / pointer block layout.
    pub layout: Layout,
    /// The logical volume.
    pub volume: &'a Source,
    /// Name for errors.
    pub vol_name: &'a str,
    /// `.sbc.sf`.
    pub sbc: Option<&'a ResFile>,
    /// `.pbc.sf`.
    pub pbc: Option<&'a ResFile>,
    /// `.pb2.sf`.
    pub pb2: Option<&'a ResFile>,
    /// VMFS6: small file blocks per SFB cluster.
    pub sfb_per_cluster: u64,
}

impl Ctx<'_> {
    fn bad(&self, fd: &Fd, structure: &str, detail: String) -> VmfsError {
        VmfsError::CorruptFile {
            structure: structure.to_string(),
            fd: fd.addr as u64,
            device: self.vol_name.to_string(),
            detail,
        }
    }

    /// Maps a file.
    pub fn map(&self, fd: &Fd) -> Result<FileMap> {
        let size = fd.file_length;
        if size > MAX_FILE_SIZE {
            return Err(self.bad(fd, "FD", format!("file length {size} is absurd")));
        }
        if fd.zla == zla::RESIDENT {
            let data = fd.resident();
            if size > data.len() as u64 {
                return Err(self.bad(
                    fd,
                    "FD",
                    format!(
                        "resident file length {size} exceeds the {} bytes an FD holds",
                        data.len()
                    ),
                ));
            }
            return Ok(FileMap::Resident(data[..size as usize].to_vec()));
        }
        let mut w = Walk {
            ctx: self,
            fd,
            size,
            b: ExtentMapBuilder::new(size),
            allocated: 0,
            seen: HashSet::new(),
        };
        if size > 0 {
            w.walk()?;
        }
        let allocated = w.allocated;
        let map =
            w.b.finish(&format!("FD {:#x}", fd.addr), self.volume.size())
                .map_err(|e| self.bad(fd, "block map", e.to_string()))?;
        Ok(FileMap::Blocks { map, allocated })
    }
}

struct Walk<'a, 'b> {
    ctx: &'a Ctx<'b>,
    fd: &'a Fd,
    size: u64,
    b: ExtentMapBuilder,
    allocated: u64,
    seen: HashSet<u64>,
}

impl Walk<'_, '_> {
    fn walk(&mut self) -> Result<()> {
        let ctx = self.ctx;
        let fd = self.fd;
        let stride = fd.block_size;
        if !stride.is_power_of_two() || !(256..=1 << 40).contains(&stride) {
            return Err(ctx.bad(
                fd,
                "FD",
                format!("block size {stride} is not a power of two in 256..1 TiB"),
            ));
        }
        let n = ctx.layout.num_addrs as u64;
        let per_pb = ctx.layout.pb_entries as u64;
        let dense = ctx.desc.dense_sb();
        match fd.zla {
            zla::FILE_BLOCK | zla::SUB_BLOCK => {
                for i in 0..n {
                    let Some(lo) = i.checked_mul(stride).filter(|&lo| lo < self.size) else {
                        break;
                    };
                    self.emit(lo, fd.addr_at(i as usize, dense), fd.raw_addr(i as usize))?;
                }
            }
            zla::POINTER_BLOCK | zla::POINTER2_BLOCK => {
                let span = per_pb * stride;
                for i in 0..n {
                    let Some(base) = i.checked_mul(span).filter(|&b| b < self.size) else {
                        break;
                    };
                    let raw = fd.raw_addr(i as usize);
                    if raw == 0 {
                        continue;
                    }
                    let pb = self.read_pb(raw)?;
                    for (j, &e) in pb.iter().enumerate() {
                        let lo = base + j as u64 * stride;
                        if lo >= self.size {
                            break;
                        }
                        self.emit(lo, decode(ctx.layout.vmfs6, e, dense), e)?;
                    }
                }
            }
            zla::POINTER_BLOCK_DOUBLE => {
                let span2 = per_pb * stride;
                let Some(span1) = span2.checked_mul(per_pb) else {
                    return Err(ctx.bad(fd, "FD", "double-indirect span overflows".into()));
                };
                for i in 0..n {
                    let Some(base1) = i.checked_mul(span1).filter(|&b| b < self.size) else {
                        break;
                    };
                    let raw1 = fd.raw_addr(i as usize);
                    if raw1 == 0 {
                        continue;
                    }
                    let pb1 = self.read_pb(raw1)?;
                    for (j, &raw2) in pb1.iter().enumerate() {
                        let base2 = base1 + j as u64 * span2;
                        if base2 >= self.size {
                            break;
                        }
                        if raw2 == 0 {
                            continue;
                        }
                        let pb2 = self.read_pb(raw2)?;
                        for (k, &e) in pb2.iter().enumerate() {
                            let lo = base2 + k as u64 * stride;
                            if lo >= self.size {
                                break;
                            }
                            self.emit(lo, decode(ctx.layout.vmfs6, e, dense), e)?;
                        }
                    }
                }
            }
            other => {
                return Err(ctx.bad(
                    fd,
                    "FD",
                    format!("unknown zero-level address type {other:#x}"),
                ));
            }
        }
        Ok(())
    }

    /// Reads a pointer block; its home depends on the address kind.
    fn read_pb(&mut self, raw: u64) -> Result<Vec<u64>> {
        let ctx = self.ctx;
        let fd = self.fd;
        if !self.seen.insert(raw) {
            return Err(ctx.bad(
                fd,
                "pointer block",
                format!("pointer block {raw:#x} is referenced twice (a cycle or a cross-link)"),
            ));
        }
        if self.seen.len() > MAX_POINTER_BLOCKS {
            return Err(VmfsError::Limit {
                what: format!("pointer blocks of FD {:#x}", fd.addr),
                limit: MAX_POINTER_BLOCKS as u64,
            });
        }
        let bytes = ctx.layout.pb_bytes();
        let mut buf = vec![0u8; bytes];
        let addr = decode(ctx.layout.vmfs6, raw, ctx.desc.dense_sb());
        let from_res = |res: Option<&ResFile>, c: u64, r: u64, buf: &mut [u8]| -> Result<()> {
            let res = res.ok_or_else(|| {
                ctx.bad(
                    fd,
                    "pointer block",
                    format!("address {raw:#x} needs a resource file that is not open"),
                )
            })?;
            let off = res.offset(c, r, buf.len() as u64).ok_or_else(|| {
                ctx.bad(
                    fd,
                    "pointer block",
                    format!(
                        "address {raw:#x} (cluster {c}, resource {r}) lies outside {}",
                        res.name
                    ),
                )
            })?;
            res.file.read_exact_at(off, buf).map_err(VmfsError::from)
        };
        match addr {
            Addr::Resource {
                kind: kind::POINTER_BLOCK,
                cluster,
                resource,
            } => from_res(ctx.pbc, cluster, resource, &mut buf)?,
            Addr::Resource {
                kind: kind::POINTER2_BLOCK,
                cluster,
                resource,
            } => from_res(ctx.pb2, cluster, resource, &mut buf)?,
            Addr::Resource {
                kind: kind::SUB_BLOCK,
                cluster,
                resource,
            } if ctx.layout.vmfs6 => from_res(ctx.sbc, cluster, resource, &mut buf)?,
            Addr::SmallFileBlock {
                cluster, resource, ..
            } => {
                let phys = self.sfb_offset(cluster, resource, raw)?;
                self.check_inside(phys, bytes as u64, raw)?;
                ctx.volume.read_exact_at(phys, &mut buf)?;
            }
            _ => {
                return Err(ctx.bad(
                    fd,
                    "pointer block",
                    format!("address {raw:#x} is not a pointer block address"),
                ));
            }
        }
        let w = ctx.layout.addr_bytes;
        Ok(buf
            .chunks_exact(w)
            .map(|c| {
                if w == 8 {
                    u64::from_le_bytes(c.try_into().expect("8 bytes"))
                } else {
                    u32::from_le_bytes(c.try_into().expect("4 bytes")) as u64
                }
            })
            .collect())
    }

    fn sfb_offset(&self, cluster: u64, resource: u64, raw: u64) -> Result<u64> {
        let ctx = self.ctx;
        if resource >= ctx.sfb_per_cluster {
            return Err(ctx.bad(
                self.fd,
                "block address",
                format!(
                    "small file block {raw:#x}: resource {resource} >= {} per cluster",
                    ctx.sfb_per_cluster
                ),
            ));
        }
        cluster
            .checked_mul(ctx.sfb_per_cluster)
            .and_then(|b| b.checked_add(resource))
            .and_then(|b| b.checked_mul(ctx.desc.file_block_size))
            .ok_or_else(|| {
                ctx.bad(
                    self.fd,
                    "block address",
                    format!("small file block {raw:#x} overflows"),
                )
            })
    }

    fn check_inside(&self, phys: u64, len: u64, raw: u64) -> Result<()> {
        let vs = self.ctx.volume.size();
        if phys.checked_add(len).is_none_or(|e| e > vs) {
            return Err(self.ctx.bad(
                self.fd,
                "block address",
                format!(
                    "address {raw:#x} points to volume bytes {phys}..+{len}, past the end of the \
                     volume ({vs} bytes)"
                ),
            ));
        }
        Ok(())
    }

    /// Records the data block `addr` for file bytes `lo..lo + stride`.
    fn emit(&mut self, lo: u64, addr: Addr, raw: u64) -> Result<()> {
        let ctx = self.ctx;
        let fd = self.fd;
        let stride = fd.block_size;
        let len = stride.min(self.size - lo);
        let v6 = ctx.layout.vmfs6;
        let fbs = ctx.desc.file_block_size;
        let wrong = |what: &str| {
            ctx.bad(
                fd,
                "block address",
                format!("{what} {raw:#x} at file offset {lo}"),
            )
        };
        let (base, block_len, tbz) = match addr {
            Addr::Null => return Ok(()),
            Addr::FileBlock { block, tbz } if !v6 => (
                block
                    .checked_mul(fbs)
                    .ok_or_else(|| wrong("overflowing file block"))?,
                fbs,
                tbz,
            ),
            Addr::SmallFileBlock {
                cluster,
                resource,
                tbz,
            } if v6 => (self.sfb_offset(cluster, resource, raw)?, fbs, tbz),
            Addr::LargeFileBlock { block, tbz } if v6 => {
                let lfb = ctx.desc.lfb_size();
                (
                    block
                        .checked_mul(lfb)
                        .ok_or_else(|| wrong("overflowing large file block"))?,
                    lfb,
                    tbz,
                )
            }
            Addr::Resource {
                kind: kind::SUB_BLOCK,
                cluster,
                resource,
            } => {
                return self.emit_sub_block(lo, len, cluster, resource, raw);
            }
            _ => return Err(wrong("unexpected data block address")),
        };
        if block_len < stride || block_len % stride != 0 {
            return Err(wrong(&format!(
                "block of {block_len} bytes cannot hold the file's {stride}-byte blocks:"
            )));
        }
        let phys = base + lo % block_len;
        self.check_inside(phys, len, raw)?;
        self.allocated += len;
        self.b.push(lo, len, (!tbz).then_some(phys));
        Ok(())
    }

    fn emit_sub_block(
        &mut self,
        lo: u64,
        len: u64,
        cluster: u64,
        resource: u64,
        raw: u64,
    ) -> Result<()> {
        let ctx = self.ctx;
        let fd = self.fd;
        let sbc = ctx.sbc.ok_or_else(|| {
            ctx.bad(
                fd,
                "block address",
                format!("sub-block {raw:#x} before .sbc.sf is open"),
            )
        })?;
        let sb_size = sbc.meta.resource_size;
        let stride = fd.block_size;
        if sb_size < stride || sb_size % stride != 0 {
            return Err(ctx.bad(
                fd,
                "block address",
                format!("sub-block of {sb_size} bytes cannot hold the file's {stride}-byte blocks"),
            ));
        }
        let within = lo % sb_size;
        let off = sbc
            .offset(cluster, resource, sb_size)
            .ok_or_else(|| {
                ctx.bad(
                    fd,
                    "block address",
                    format!("sub-block {raw:#x} (cluster {cluster}, resource {resource}) lies outside .sbc.sf"),
                )
            })?
            + within;
        // Translate through .sbc.sf's own extents; a sub-block normally sits in one of them.
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let i = sbc.map.index_of(pos).ok_or_else(|| {
                ctx.bad(
                    fd,
                    "block address",
                    format!("sub-block {raw:#x} lies past .sbc.sf"),
                )
            })?;
            let e = sbc.map.extents()[i];
            let n = (e.end() - pos).min(end - pos);
            let Some(p) = e.physical else {
                return Err(ctx.bad(
                    fd,
                    "block address",
                    format!("sub-block {raw:#x} lies in a hole of .sbc.sf"),
                ));
            };
            self.b
                .push(lo + (pos - off), n, Some(p + (pos - e.logical)));
            pos += n;
        }
        self.allocated += len;
        Ok(())
    }
}
