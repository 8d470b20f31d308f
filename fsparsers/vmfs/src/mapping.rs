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
        if let Some(data) = self.resident(fd)? {
            return Ok(FileMap::Resident(data.to_vec()));
        }
        let size = fd.file_length;
        let mut w = Walk::new(self, fd, Some(ExtentMapBuilder::new(size)));
        if size > 0 {
            w.walk()?;
        }
        let allocated = w.allocated;
        let b = w.builder.take().expect("a mapping walk has a builder");
        let map = b
            .finish(&format!("FD {:#x}", fd.addr), self.volume.size())
            .map_err(|e| self.bad(fd, "block map", e.to_string()))?;
        Ok(FileMap::Blocks { map, allocated })
    }

    /// The bytes a file has allocated, exactly as [`Ctx::map`] reports them (data and TBZ
    /// blocks clipped to the file size, 0 for resident data), with the same validation, but
    /// without building the extent map: a thin 100 GiB disk is a few pointer blocks to scan,
    /// not tens of thousands of extents to record.
    pub fn allocated(&self, fd: &Fd) -> Result<u64> {
        if self.resident(fd)?.is_some() {
            return Ok(0);
        }
        let mut w = Walk::new(self, fd, None);
        if fd.file_length > 0 {
            w.walk()?;
        }
        Ok(w.allocated)
    }

    /// Checks the file length, and gives the data of a resident file.
    /// The bytes of a resident file (inside its FD), `None` when the file is not resident.
    pub fn resident<'f>(&self, fd: &'f Fd) -> Result<Option<&'f [u8]>> {
        let size = fd.file_length;
        if size > MAX_FILE_SIZE {
            return Err(self.bad(fd, "FD", format!("file length {size} is absurd")));
        }
        if fd.zla != zla::RESIDENT {
            return Ok(None);
        }
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
        Ok(Some(&data[..size as usize]))
    }
}

/// Pointer blocks read in one request at most when they lie back to back (1 MiB on VMFS6).
const PB_READ_GROUP: usize = 16;

/// Where a pointer block's bytes are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PbHome {
    /// `.pbc.sf`, `.pb2.sf` or `.sbc.sf` (by address kind), at a file offset.
    Resource(u8, u64),
    /// A small file block, at a volume offset.
    Volume(u64),
}

impl PbHome {
    /// The same home `bytes` further on.
    fn after(self, bytes: u64) -> PbHome {
        match self {
            PbHome::Resource(k, off) => PbHome::Resource(k, off.saturating_add(bytes)),
            PbHome::Volume(off) => PbHome::Volume(off.saturating_add(bytes)),
        }
    }
}

/// Address `i` of a pointer block's bytes (4 or 8 bytes wide).
fn entry(buf: &[u8], i: usize, width: usize) -> u64 {
    let c = &buf[i * width..(i + 1) * width];
    if width == 8 {
        u64::from_le_bytes(c.try_into().expect("8 bytes"))
    } else {
        u32::from_le_bytes(c.try_into().expect("4 bytes")) as u64
    }
}

/// True when all of `bytes` are zero; word-wise so that empty stretches of thin disks' pointer
/// blocks are skipped quickly.
fn all_zero(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder().iter().fold(0u8, |a, &b| a | b);
    words.fold(0u64, |a, c| {
        a | u64::from_le_bytes(c.try_into().expect("8 bytes"))
    }) == 0
        && tail == 0
}

struct Walk<'a, 'b> {
    ctx: &'a Ctx<'b>,
    fd: &'a Fd,
    size: u64,
    /// `None`: only count allocated bytes.
    builder: Option<ExtentMapBuilder>,
    allocated: u64,
    seen: HashSet<u64>,
    /// Pointer blocks of the current group (top level, and second level of double indirection).
    buf1: Vec<u8>,
    buf2: Vec<u8>,
}

/// Pointer block buffers kept by each thread between walks: listing thousands of thin disks
/// would otherwise allocate and zero a fresh 64 KiB buffer per file.
const SPARE_BUF_MAX: usize = 1 << 20;

thread_local! {
    static SPARE_BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

impl Drop for Walk<'_, '_> {
    fn drop(&mut self) {
        let keep = |b: Vec<u8>| {
            if b.capacity() <= SPARE_BUF_MAX {
                b
            } else {
                Vec::new()
            }
        };
        let (b1, b2) = (
            std::mem::take(&mut self.buf1),
            std::mem::take(&mut self.buf2),
        );
        let _ = SPARE_BUFS.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = (keep(b1), keep(b2));
            }
        });
    }
}

impl<'a, 'b> Walk<'a, 'b> {
    fn new(ctx: &'a Ctx<'b>, fd: &'a Fd, builder: Option<ExtentMapBuilder>) -> Self {
        let (buf1, buf2) = SPARE_BUFS
            .try_with(|s| s.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)).ok())
            .ok()
            .flatten()
            .unwrap_or_default();
        Walk {
            ctx,
            fd,
            size: fd.file_length,
            builder,
            allocated: 0,
            seen: HashSet::new(),
            buf1,
            buf2,
        }
    }

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
        let n = ctx.layout.num_addrs;
        let per_pb = ctx.layout.pb_entries as u64;
        let dense = ctx.desc.dense_sb();
        // The addresses of the array that cover bytes inside the file (`unit` bytes each).
        let top = |unit: u64| -> Vec<u64> {
            (0..n)
                .take_while(|&i| {
                    (i as u64)
                        .checked_mul(unit)
                        .is_some_and(|lo| lo < self.size)
                })
                .map(|i| fd.raw_addr(i))
                .collect()
        };
        match fd.zla {
            zla::FILE_BLOCK | zla::SUB_BLOCK => {
                let top = top(stride);
                for (i, &raw) in top.iter().enumerate() {
                    let Some(lo) = (i as u64).checked_mul(stride).filter(|&lo| lo < self.size)
                    else {
                        break;
                    };
                    self.emit(lo, decode(ctx.layout.vmfs6, raw, dense), raw)?;
                }
            }
            zla::POINTER_BLOCK | zla::POINTER2_BLOCK => {
                let span = per_pb * stride;
                let top = top(span);
                let mut l1 = std::mem::take(&mut self.buf1);
                let r = self.for_each_pb(&top, span, &mut l1, |w, base, pb| w.scan_data(base, pb));
                self.buf1 = l1;
                r?;
            }
            zla::POINTER_BLOCK_DOUBLE => {
                let span2 = per_pb * stride;
                let Some(span1) = span2.checked_mul(per_pb) else {
                    return Err(ctx.bad(fd, "FD", "double-indirect span overflows".into()));
                };
                let width = ctx.layout.addr_bytes;
                let top = top(span1);
                let mut l1 = std::mem::take(&mut self.buf1);
                let mut l2 = std::mem::take(&mut self.buf2);
                let r = self.for_each_pb(&top, span1, &mut l1, |w, base1, pb1| {
                    let second: Vec<u64> = (0..pb1.len() / width)
                        .map(|j| entry(pb1, j, width))
                        .collect();
                    w.for_each_pb_at(base1, &second, span2, &mut l2, |w, base2, pb2| {
                        w.scan_data(base2, pb2)
                    })
                });
                self.buf1 = l1;
                self.buf2 = l2;
                r?;
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

    /// Calls `f(walk, file offset, pointer block bytes)` for every pointer block named in
    /// `raws` (the i-th covering file bytes `i * span..`) that starts inside the file, in order.
    fn for_each_pb(
        &mut self,
        raws: &[u64],
        span: u64,
        buf: &mut Vec<u8>,
        f: impl FnMut(&mut Self, u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.for_each_pb_at(0, raws, span, buf, f)
    }

    /// [`Walk::for_each_pb`] for pointers whose first one covers file bytes from `origin`.
    /// Back-to-back pointer blocks are read in one request.
    fn for_each_pb_at(
        &mut self,
        origin: u64,
        raws: &[u64],
        span: u64,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&mut Self, u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let bytes = self.ctx.layout.pb_bytes();
        // Pointers covering bytes at or past the end of the file are never followed.
        let live = (0..raws.len() as u64)
            .take_while(|&i| {
                i.checked_mul(span)
                    .and_then(|o| o.checked_add(origin))
                    .is_some_and(|b| b < self.size)
            })
            .count();
        let mut i = 0;
        // The home of pointer `i` when the previous group already validated it.
        let mut next: Option<PbHome> = None;
        while i < live {
            if raws[i] == 0 {
                i += 1;
                continue;
            }
            let first = match next.take() {
                Some(h) => h,
                None => self.pb_home(raws[i])?,
            };
            // A group: the pointer blocks that follow one another on disk.
            let mut count = 1;
            let mut j = i + 1;
            while j < live && count < PB_READ_GROUP && raws[j] != 0 {
                let h = self.pb_home(raws[j])?;
                if h != first.after((count * bytes) as u64) {
                    next = Some(h);
                    break;
                }
                count += 1;
                j += 1;
            }
            buf.resize(count * bytes, 0);
            self.read_at(first, &mut buf[..], raws[i])?;
            for (g, pb) in buf.chunks_exact(bytes).enumerate() {
                f(self, origin + (i + g) as u64 * span, pb)?;
            }
            i = j;
        }
        Ok(())
    }

    /// Records the data blocks named by one pointer block covering file bytes from `base`.
    fn scan_data(&mut self, base: u64, pb: &[u8]) -> Result<()> {
        let ctx = self.ctx;
        let stride = self.fd.block_size;
        let width = ctx.layout.addr_bytes;
        let dense = ctx.desc.dense_sb();
        // Entries starting inside the file (base < size here).
        let live = (pb.len() / width).min((self.size - base).div_ceil(stride) as usize);
        // Runs of addresses at a time: most of a thin disk's pointer block is zero.
        let group = 64;
        for (c, chunk) in pb[..live * width].chunks(group * width).enumerate() {
            if all_zero(chunk) {
                continue;
            }
            for k in 0..chunk.len() / width {
                let e = entry(chunk, k, width);
                if e == 0 {
                    continue;
                }
                let lo = base + (c * group + k) as u64 * stride;
                self.emit(lo, decode(ctx.layout.vmfs6, e, dense), e)?;
            }
        }
        Ok(())
    }

    /// Where the pointer block `raw` is stored, validated; each pointer block once per file.
    fn pb_home(&mut self, raw: u64) -> Result<PbHome> {
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
        let bytes = ctx.layout.pb_bytes() as u64;
        let addr = decode(ctx.layout.vmfs6, raw, ctx.desc.dense_sb());
        let in_res = |k: u8, c: u64, r: u64| -> Result<PbHome> {
            let res = self.res_file(k, raw)?;
            let off = res.offset(c, r, bytes).ok_or_else(|| {
                ctx.bad(
                    fd,
                    "pointer block",
                    format!(
                        "address {raw:#x} (cluster {c}, resource {r}) lies outside {}",
                        res.name
                    ),
                )
            })?;
            Ok(PbHome::Resource(k, off))
        };
        match addr {
            Addr::Resource {
                kind: k @ (kind::POINTER_BLOCK | kind::POINTER2_BLOCK),
                cluster,
                resource,
            } => in_res(k, cluster, resource),
            Addr::Resource {
                kind: kind::SUB_BLOCK,
                cluster,
                resource,
            } if ctx.layout.vmfs6 => in_res(kind::SUB_BLOCK, cluster, resource),
            Addr::SmallFileBlock {
                cluster, resource, ..
            } => {
                let phys = self.sfb_offset(cluster, resource, raw)?;
                self.check_inside(phys, bytes, raw)?;
                Ok(PbHome::Volume(phys))
            }
            _ => Err(ctx.bad(
                fd,
                "pointer block",
                format!("address {raw:#x} is not a pointer block address"),
            )),
        }
    }

    /// The resource file holding pointer blocks of address kind `k`.
    fn res_file(&self, k: u8, raw: u64) -> Result<&'b ResFile> {
        let ctx = self.ctx;
        match k {
            kind::POINTER_BLOCK => ctx.pbc,
            kind::POINTER2_BLOCK => ctx.pb2,
            _ => ctx.sbc,
        }
        .ok_or_else(|| {
            ctx.bad(
                self.fd,
                "pointer block",
                format!("address {raw:#x} needs a resource file that is not open"),
            )
        })
    }

    /// Reads pointer blocks starting at `home` (homes were validated one by one).
    fn read_at(&self, home: PbHome, buf: &mut [u8], raw: u64) -> Result<()> {
        match home {
            PbHome::Resource(k, off) => {
                let res = self.res_file(k, raw)?;
                res.file.read_exact_at(off, buf).map_err(VmfsError::from)
            }
            PbHome::Volume(off) => {
                self.check_inside(off, buf.len() as u64, raw)?;
                Ok(self.ctx.volume.read_exact_at(off, buf)?)
            }
        }
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
        let phys = base
            .checked_add(lo % block_len)
            .ok_or_else(|| wrong("overflowing block address"))?;
        self.check_inside(phys, len, raw)?;
        self.allocated += len;
        if let Some(b) = &mut self.builder {
            b.push(lo, len, (!tbz).then_some(phys));
        }
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
            if let Some(b) = &mut self.builder {
                b.push(lo + (pos - off), n, Some(p + (pos - e.logical)));
            }
            pos += n;
        }
        self.allocated += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_and_entries_decode() {
        let mut b = vec![0u8; 64 * 8 + 3];
        assert!(all_zero(&b));
        b[64 * 8 + 2] = 1;
        assert!(!all_zero(&b), "a set byte in the tail counts");
        b[64 * 8 + 2] = 0;
        b[17 * 8 + 7] = 0x80;
        assert!(!all_zero(&b));
        assert_eq!(entry(&b, 17, 8), 0x80 << 56);
        assert_eq!(entry(&b, 35, 4), 0x8000_0000);
        assert_eq!(entry(&b, 0, 4), 0);
    }

    #[test]
    fn pointer_block_homes_follow_each_other() {
        assert!(PbHome::Resource(3, 4096).after(4096) == PbHome::Resource(3, 8192));
        assert!(PbHome::Resource(3, 4096).after(4096) != PbHome::Resource(5, 8192));
        assert!(PbHome::Volume(u64::MAX - 1).after(4096) == PbHome::Volume(u64::MAX));
    }
}
