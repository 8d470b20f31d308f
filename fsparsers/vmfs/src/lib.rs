//! VMFS5 and VMFS6 reader: LVM, file descriptors, addressing, directories, extents.
//!
//! A VMFS datastore is a logical volume made of one or more VMFS partitions (extents), each with
//! an LVM header at 1 MiB. [`Vmfs::open`] assembles the volume, reads the FS3 descriptor at
//! 2 MiB of it, opens the resource files that hold file descriptors, sub-blocks and pointer
//! blocks, and then serves the [`fscore::Filesystem`] interface. Version-specific decoding lives
//! in [`v5`]/[`dir5`] and [`v6`]/[`dir6`]; address decoding in [`address`]; the LVM in [`lvm`].

pub mod address;
pub mod descriptor;
pub mod dir5;
pub mod dir6;
mod error;
pub mod fd;
#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
pub mod lvm;
pub mod mapping;
pub mod resource;
mod tree;
mod uuid;
pub mod v5;
pub mod v6;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fscore::{
    DirEntry, FileId, FileMapping, FileType, Filesystem, FsKind, Metadata, NotMappable, Tree,
    TreeLimits, VolumeInfo,
};
use lun::{ExtentMap, ExtentMapBuilder, MappedFile, MemSource, ReadAt, ReadAtExt, Source};

pub use error::{Result, VmfsError};
pub use lvm::{FsSummary, LvmDeviceInfo, PhysicalExtent, lvm_device_info};
pub use uuid::vmfs_uuid;

use crate::address::fd_parts;
use crate::descriptor::{FS3_DESCRIPTOR_OFFSET, FsDescriptor};
use crate::dir5::RawEntry;
use crate::fd::{Fd, fd_type};
use crate::layout::Layout;
use crate::lvm::{Run, VolumeSource};
use crate::mapping::{Ctx, FileMap, ResFile};
use crate::resource::{RES_META_SIZE, ResMeta};

/// FD address of the root directory (`rootDirDescAddr`).
pub const ROOT_DIR_ADDR: u32 = 0x0000_0004;
/// FD address of `.fbb.sf`.
pub const FBB_ADDR: u32 = 0x0040_0004;
/// FD address of `.fdc.sf`.
pub const FDC_ADDR: u32 = 0x0080_0004;
/// FD address of `.pbc.sf`.
pub const PBC_ADDR: u32 = 0x00C0_0004;
/// FD address of `.sbc.sf`.
pub const SBC_ADDR: u32 = 0x0100_0004;
/// FD address of `.pb2.sf` (VMFS6; VMFS5 names it in the FS3 descriptor).
pub const PB2_ADDR: u32 = 0x0180_0004;

/// Bytes read at most in one request by [`Vmfs::read_fds_batched`].
const FD_BATCH_BYTES: u64 = 1 << 20;

/// The FDs at `at` (offsets in `.fdc.sf`, sorted) in groups read at once: `(the group's
/// members in at, first byte, end)`. Reading one unwanted FD in a gap costs less than another
/// request; a group spans at most [`FD_BATCH_BYTES`].
fn fd_groups(at: &[(u64, usize)], fd_size: u64) -> Vec<(std::ops::Range<usize>, u64, u64)> {
    let mut groups = Vec::new();
    let mut k = 0;
    while k < at.len() {
        let start = at[k].0;
        let mut end = start + fd_size;
        let mut m = k + 1;
        while m < at.len()
            && at[m].0 <= end + fd_size
            && at[m].0 + fd_size - start <= FD_BATCH_BYTES
        {
            end = end.max(at[m].0 + fd_size);
            m += 1;
        }
        groups.push((k..m, start, end));
        k = m;
    }
    groups
}
/// Cached file maps per volume.
const MAP_CACHE_ENTRIES: usize = 128;
/// Maps with more extents than this are not cached (bounds the cache near 128 × 1.5 MiB).
const MAP_CACHE_MAX_EXTENTS: usize = 65_536;

/// An opened VMFS5 or VMFS6 file system.
pub struct Vmfs {
    desc: FsDescriptor,
    layout: Layout,
    devices: Vec<Source>,
    volume: Source,
    runs: Vec<Run>,
    spanned: bool,
    lvm_uuid: String,
    vol_name: String,
    fdc: ResFile,
    sbc: ResFile,
    pbc: Option<ResFile>,
    pb2: Option<ResFile>,
    sfb_per_cluster: u64,
    cache: Mutex<HashMap<u32, Arc<FileMap>>>,
    read_streams: AtomicUsize,
}

impl std::fmt::Debug for Vmfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmfs")
            .field("uuid", &self.desc.uuid)
            .field("label", &self.desc.label)
            .field("major_version", &self.desc.major_version)
            .field("devices", &self.devices.len())
            .finish()
    }
}

impl Vmfs {
    /// Opens the VMFS volume formed by `devices`, each a VMFS partition (LVM header at 1 MiB).
    /// One device is a single-extent volume; several are assembled from their LVM headers.
    pub fn open(devices: Vec<Source>) -> Result<Vmfs> {
        let asm = lvm::assemble(&devices)?;
        let spanned = devices.len() > 1;
        let vol_name = if spanned {
            format!("vmfs volume {}", asm.uuid)
        } else {
            devices[0].name().to_string()
        };
        let volume: Source = Arc::new(VolumeSource::new(
            devices.clone(),
            asm.runs.clone(),
            asm.size,
            vol_name.clone(),
        ));
        if volume.size() < FS3_DESCRIPTOR_OFFSET + 512 {
            return Err(VmfsError::NotVmfs {
                device: vol_name,
                detail: format!(
                    "volume of {} bytes is too small for an FS3 descriptor",
                    asm.size
                ),
            });
        }
        let raw = volume.read_vec(FS3_DESCRIPTOR_OFFSET, 512)?;
        let desc = FsDescriptor::parse(&raw, &vol_name, FS3_DESCRIPTOR_OFFSET)?;
        let layout = if desc.is_vmfs6() {
            v6::layout(desc.md_alignment)
        } else {
            v5::layout()
        };
        let mut sfb_per_cluster = if desc.is_vmfs6() {
            (0x2000_0000 / desc.file_block_size).clamp(1, 0x2000)
        } else {
            0
        };

        let boot = Boot {
            desc: &desc,
            layout,
            volume: &volume,
            vol_name: &vol_name,
        };
        if desc.is_vmfs6() {
            // The SFB geometry lives in the child metadata of .fbb.sf.
            let fbb = boot.sys_file(FBB_ADDR, ".fbb.sf", sfb_per_cluster, None, None, None)?;
            let child = fbb.meta.child_meta_offset;
            let mut b = vec![0u8; RES_META_SIZE];
            fbb.file
                .read_exact_at(child, &mut b)
                .map_err(|e| VmfsError::Corrupt {
                    structure: "SFB resource metadata of .fbb.sf".into(),
                    device: vol_name.clone(),
                    offset: child,
                    detail: e.to_string(),
                })?;
            // Only the geometry matters here: SFBs are not stored in the file (resource size 0),
            // the file just tracks them.
            let rpc = fscore::le::u32_at(&b, 0).unwrap_or(0) as u64;
            let sig = fscore::le::u32_at(&b, 0x20).unwrap_or(0);
            if sig != resource::RFMD_SIGNATURE || !(1..=1 << 20).contains(&rpc) {
                return Err(VmfsError::Corrupt {
                    structure: "SFB resource metadata of .fbb.sf".into(),
                    device: vol_name.clone(),
                    offset: child,
                    detail: format!("signature {sig:#x}, {rpc} resources per cluster"),
                });
            }
            sfb_per_cluster = rpc;
        }
        // VMFS6 keeps pointer blocks in sub-blocks or file blocks; its .pbc.sf and .pb2.sf may
        // be empty placeholders (zero resources per cluster). Only VMFS5 requires .pbc.sf.
        let optional = |r: Result<ResFile>| -> Result<Option<ResFile>> {
            match r {
                Ok(f) => Ok(Some(f)),
                Err(VmfsError::Corrupt { .. }) if desc.is_vmfs6() => Ok(None),
                Err(e) => Err(e),
            }
        };
        let pbc = optional(boot.sys_file(PBC_ADDR, ".pbc.sf", sfb_per_cluster, None, None, None))?;
        let pb2_addr = if desc.is_vmfs6() {
            PB2_ADDR
        } else {
            desc.pb2_fd_addr
        };
        let pb2 = if desc.pb2_vol_addr != 0 && pb2_addr != 0 {
            optional(boot.sys_file(pb2_addr, ".pb2.sf", sfb_per_cluster, None, None, None))?
        } else {
            None
        };
        let sbc = boot.sys_file(
            SBC_ADDR,
            ".sbc.sf",
            sfb_per_cluster,
            None,
            pbc.as_ref(),
            pb2.as_ref(),
        )?;
        let fdc = boot.sys_file(
            FDC_ADDR,
            ".fdc.sf",
            sfb_per_cluster,
            Some(&sbc),
            pbc.as_ref(),
            pb2.as_ref(),
        )?;
        Ok(Vmfs {
            desc,
            layout,
            devices,
            volume,
            runs: asm.runs,
            spanned,
            lvm_uuid: asm.uuid,
            vol_name,
            fdc,
            sbc,
            pbc,
            pb2,
            sfb_per_cluster,
            cache: Mutex::new(HashMap::new()),
            read_streams: AtomicUsize::new(READ_STREAMS),
        })
    }

    /// How many concurrent device reads one large file read (4 MiB or more) is split into
    /// (default 1: no splitting; 4 helps on high-latency LUNs read with O_DIRECT). Applies
    /// to files opened afterwards.
    pub fn set_read_streams(&self, streams: usize) {
        self.read_streams
            .store(streams.clamp(1, 16), Ordering::Relaxed);
    }

    /// The FS3 descriptor.
    pub fn descriptor(&self) -> &FsDescriptor {
        &self.desc
    }

    /// The LVM volume UUID (differs from the file system UUID).
    pub fn lvm_uuid(&self) -> &str {
        &self.lvm_uuid
    }

    /// The logical volume in its own coordinates (for a single extent, offsets differ from the
    /// partition's by the LVM data offset).
    pub fn volume(&self) -> Source {
        self.volume.clone()
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            desc: &self.desc,
            layout: self.layout,
            volume: &self.volume,
            vol_name: &self.vol_name,
            sbc: Some(&self.sbc),
            pbc: self.pbc.as_ref(),
            pb2: self.pb2.as_ref(),
            sfb_per_cluster: self.sfb_per_cluster,
        }
    }

    fn bad_fd(&self, addr: u32, detail: String) -> VmfsError {
        VmfsError::CorruptFile {
            structure: "FD".into(),
            fd: addr as u64,
            device: self.vol_name.clone(),
            detail,
        }
    }

    /// Reads the file descriptor at `addr`.
    pub fn read_fd(&self, addr: u32) -> Result<Fd> {
        if addr & 7 != address::kind::FILE_DESCRIPTOR as u32 {
            return Err(VmfsError::NotFound {
                detail: format!("{addr:#x} is not a file descriptor address"),
            });
        }
        let fd_size = self.layout.fd_size as u64;
        // The lock before the metadata is never used: only the rest is read.
        let meta = self.layout.meta_offset;
        let mut raw = vec![0u8; self.layout.fd_size - meta];
        let special = if self.desc.is_vmfs6() {
            None
        } else {
            v5::special_fd_offset(&self.desc, addr)
        };
        if let Some(off) = special {
            // The read ends where the whole FD ends: past the volume exactly when the FD is.
            let tail = off.checked_add(meta as u64).ok_or_else(|| {
                self.bad_fd(addr, format!("system FD at volume offset {off} overflows"))
            })?;
            self.volume.read_exact_at(tail, &mut raw)?;
        } else {
            let (c, r) = fd_parts(addr);
            let off = self.fdc.offset(c, r, fd_size).ok_or_else(|| {
                self.bad_fd(
                    addr,
                    format!("cluster {c}, resource {r} lies outside .fdc.sf"),
                )
            })?;
            self.fdc.file.read_exact_at(off + meta as u64, &mut raw)?;
        }
        self.finish_fd(addr, raw)
    }

    /// Reads the FDs at `addrs` in as few requests as possible: FDs lying close together in
    /// `.fdc.sf` (the children of one directory usually do) come in one read. `None` where an
    /// FD cannot be read this way or is not a live FD; [`Vmfs::read_fd`] then gives the
    /// answer, so callers see exactly what `read_fd` would have given.
    pub(crate) fn read_fds_batched(&self, addrs: &[u32]) -> Vec<Option<Fd>> {
        let fd_size = self.layout.fd_size as u64;
        let meta = self.layout.meta_offset;
        let mut out = vec![None; addrs.len()];
        // (offset in .fdc.sf, index in addrs), for the FDs read_fd would read from .fdc.sf.
        let mut at: Vec<(u64, usize)> = addrs
            .iter()
            .enumerate()
            .filter(|&(_, &a)| a & 7 == address::kind::FILE_DESCRIPTOR as u32)
            .filter(|&(_, &a)| {
                self.desc.is_vmfs6() || v5::special_fd_offset(&self.desc, a).is_none()
            })
            .filter_map(|(i, &a)| {
                let (c, r) = fd_parts(a);
                self.fdc.offset(c, r, fd_size).map(|off| (off, i))
            })
            .collect();
        at.sort_unstable();
        let groups = fd_groups(&at, fd_size);
        if meta * 4 > self.layout.fd_size {
            // VMFS6: the lock is half the FD. Reading it along (a batch cannot skip it) cost
            // as much as the requests it saved (measured on 11,000 FDs); read_fd reads just
            // the rest. On a cold LUN the batch's FDs are announced first, so that those reads
            // find them in flight together rather than wait for each in turn.
            if let Some(&(first, _)) = at.first()
                && self.fdc.file.is_cached(first, fd_size as usize) == Some(false)
            {
                for (_, start, end) in &groups {
                    self.fdc.file.will_need(*start, end - start);
                }
            }
            return out;
        }
        let mut buf = Vec::new();
        for (members, start, end) in groups {
            buf.resize((end - start) as usize, 0);
            if self.fdc.file.read_exact_at(start, &mut buf).is_ok() {
                for &(off, i) in &at[members] {
                    let o = (off - start) as usize;
                    let raw = buf[o + meta..o + fd_size as usize].to_vec();
                    out[i] = self.finish_fd(addrs[i], raw).ok();
                }
            }
        }
        out
    }

    /// Decodes FD bytes read from after the lock, and checks they are the live FD `addr`.
    fn finish_fd(&self, addr: u32, raw: Vec<u8>) -> Result<Fd> {
        let fd = Fd::parse_meta(addr, raw, self.layout)
            .ok_or_else(|| self.bad_fd(addr, "truncated".into()))?;
        if fd.desc_addr != addr {
            return Err(self.bad_fd(
                addr,
                format!(
                    "descriptor records address {:#x}: a free or stale FD",
                    fd.desc_addr
                ),
            ));
        }
        Ok(fd)
    }

    fn file_map(&self, fd: &Fd) -> Result<Arc<FileMap>> {
        if let Some(m) = self.cache.lock().expect("cache lock").get(&fd.addr) {
            return Ok(m.clone());
        }
        let m = Arc::new(self.ctx().map(fd)?);
        if let FileMap::Blocks { map, .. } = &*m
            && map.extents().len() > MAP_CACHE_MAX_EXTENTS
        {
            // Badly fragmented files are mapped again when asked; the cache stays small.
            return Ok(m);
        }
        let mut c = self.cache.lock().expect("cache lock");
        if c.len() >= MAP_CACHE_ENTRIES {
            c.clear();
        }
        c.insert(fd.addr, m.clone());
        Ok(m)
    }

    /// The file's content over the volume (internal reads: directories, symlinks).
    fn volume_source(&self, fd: &Fd) -> Result<Source> {
        Ok(match &*self.file_map(fd)? {
            FileMap::Resident(d) => {
                Arc::new(MemSource::new(format!("FD {:#x}", fd.addr), d.clone()))
            }
            FileMap::Blocks { map, .. } => Arc::new(MappedFile::new(
                self.volume.clone(),
                map.clone(),
                format!("FD {:#x}", fd.addr),
            )?),
        })
    }

    /// Translates a volume-coordinate map onto [`Filesystem::device`].
    fn to_device(&self, fd: u32, map: &ExtentMap) -> Result<ExtentMap> {
        if self.spanned {
            return Ok(map.clone());
        }
        let mut b = ExtentMapBuilder::new(map.size());
        for e in map.extents() {
            let Some(p) = e.physical else {
                b.push(e.logical, e.length, None);
                continue;
            };
            let mut done = 0;
            while done < e.length {
                let pos = p + done;
                let i = self.runs.partition_point(|r| r.logical + r.len <= pos);
                let r = self
                    .runs
                    .get(i)
                    .filter(|r| r.logical <= pos)
                    .ok_or_else(|| {
                        self.bad_fd(fd, format!("volume offset {pos} is not mapped by any PE"))
                    })?;
                let n = (r.logical + r.len - pos).min(e.length - done);
                b.push(e.logical + done, n, Some(r.phys + (pos - r.logical)));
                done += n;
            }
        }
        b.finish(&format!("FD {fd:#x}"), self.devices[0].size())
            .map_err(|e| self.bad_fd(fd, e.to_string()))
    }

    fn fd_of(&self, id: &FileId) -> Result<Fd> {
        if id.stream.is_some() {
            return Err(VmfsError::NotFound {
                detail: format!("VMFS files have no named streams ({:?})", id.stream),
            });
        }
        let addr = u32::try_from(id.ino).map_err(|_| VmfsError::NotFound {
            detail: format!("{:#x} is not a file descriptor address", id.ino),
        })?;
        self.read_fd(addr)
    }

    /// Translates a volume offset to (device index, offset on that device).
    pub fn volume_to_device(&self, off: u64) -> Option<(usize, u64)> {
        let i = self.runs.partition_point(|r| r.logical + r.len <= off);
        self.runs
            .get(i)
            .filter(|r| r.logical <= off)
            .map(|r| (r.dev, r.phys + (off - r.logical)))
    }

    /// Where the FD `addr` is stored: (device index, byte offset on that device). For
    /// diagnostics (`vmkfstools -D`-like output) and tests.
    pub fn fd_location(&self, addr: u32) -> Result<(usize, u64)> {
        let special = if self.desc.is_vmfs6() {
            None
        } else {
            v5::special_fd_offset(&self.desc, addr)
        };
        let vol = match special {
            Some(off) => off,
            None => {
                let (c, r) = fd_parts(addr);
                self.resource_volume_offset(&self.fdc, c, r)?
            }
        };
        self.volume_to_device(vol)
            .ok_or_else(|| self.bad_fd(addr, format!("volume offset {vol} is not mapped")))
    }

    /// Where resource (cluster, resource) of `.pbc.sf` (kind 3), `.sbc.sf` (kind 2) or
    /// `.pb2.sf` (kind 5) is stored: (device index, byte offset). For diagnostics and tests.
    pub fn resource_location(&self, kind: u8, cluster: u64, resource: u64) -> Result<(usize, u64)> {
        let res = match kind {
            address::kind::SUB_BLOCK => Some(&self.sbc),
            address::kind::POINTER_BLOCK => self.pbc.as_ref(),
            address::kind::POINTER2_BLOCK => self.pb2.as_ref(),
            address::kind::FILE_DESCRIPTOR => Some(&self.fdc),
            _ => None,
        }
        .ok_or_else(|| VmfsError::NotFound {
            detail: format!("no resource file of address kind {kind}"),
        })?;
        let vol = self.resource_volume_offset(res, cluster, resource)?;
        self.volume_to_device(vol)
            .ok_or_else(|| VmfsError::NotFound {
                detail: format!("volume offset {vol} is not mapped"),
            })
    }

    fn resource_volume_offset(&self, res: &ResFile, cluster: u64, resource: u64) -> Result<u64> {
        let off = res
            .offset(cluster, resource, 1)
            .ok_or_else(|| VmfsError::NotFound {
                detail: format!(
                    "cluster {cluster}, resource {resource} lies outside {}",
                    res.name
                ),
            })?;
        let i = res.map.index_of(off).ok_or_else(|| VmfsError::NotFound {
            detail: format!("offset {off} lies past {}", res.name),
        })?;
        let e = res.map.extents()[i];
        e.physical
            .map(|p| p + (off - e.logical))
            .ok_or_else(|| VmfsError::NotFound {
                detail: format!("offset {off} of {} is a hole", res.name),
            })
    }

    /// The extents on [`Filesystem::device`] of any file, directories and symlinks included;
    /// `None` for resident data.
    pub fn data_extents(&self, id: &FileId) -> Result<Option<ExtentMap>> {
        let fd = self.fd_of(id)?;
        match &*self.file_map(&fd)? {
            FileMap::Resident(_) => Ok(None),
            FileMap::Blocks { map, .. } => Ok(Some(self.to_device(fd.addr, map)?)),
        }
    }

    /// Bytes allocated to the file of `fd` (data and TBZ blocks clipped to the file size; 0 for
    /// resident data): the extent map's count, from a cached map when there is one, else from
    /// a scan of the block addressing that builds no map.
    pub fn allocated(&self, fd: &Fd) -> Result<u64> {
        if let Some(m) = self.cache.lock().expect("cache lock").get(&fd.addr) {
            return Ok(match &**m {
                FileMap::Resident(_) => 0,
                FileMap::Blocks { allocated, .. } => *allocated,
            });
        }
        self.ctx().allocated(fd)
    }

    /// [`Vmfs::allocated`] computed both ways, bypassing the cache: from a freshly built
    /// extent map, and from the map-free scan. For equivalence tests.
    #[doc(hidden)]
    pub fn allocated_by_map_and_scan(&self, fd: &Fd) -> (Result<u64>, Result<u64>) {
        let ctx = self.ctx();
        let by_map = ctx.map(fd).map(|m| match m {
            FileMap::Resident(_) => 0,
            FileMap::Blocks { allocated, .. } => allocated,
        });
        (by_map, ctx.allocated(fd))
    }

    /// Raw entries of a directory FD (`.` and `..` left out).
    pub fn read_dir_raw(&self, fd: &Fd) -> Result<Vec<RawEntry>> {
        if !fd.is_dir() {
            return Err(VmfsError::NotADirectory { fd: fd.addr as u64 });
        }
        let src = self.volume_source(fd)?;
        let mut entries = if self.desc.is_vmfs6() {
            dir6::read_dir(
                src.as_ref(),
                fd.addr,
                &self.vol_name,
                self.desc.md_alignment as u64,
            )?
        } else {
            dir5::read_dir(src.as_ref(), fd.addr, &self.vol_name)?
        };
        entries.retain(|e| e.name != "." && e.name != "..");
        for e in &entries {
            if e.addr == fd.addr || (e.addr == ROOT_DIR_ADDR && fd.addr != ROOT_DIR_ADDR) {
                return Err(VmfsError::CorruptFile {
                    structure: "directory".into(),
                    fd: fd.addr as u64,
                    device: self.vol_name.clone(),
                    detail: format!(
                        "entry {:?} points to FD {:#x}, an ancestor: the directory contains itself",
                        e.name, e.addr
                    ),
                });
            }
            if e.name.is_empty() || e.name.contains('/') {
                return Err(VmfsError::CorruptFile {
                    structure: "directory".into(),
                    fd: fd.addr as u64,
                    device: self.vol_name.clone(),
                    detail: format!("entry name {:?} is invalid", e.name),
                });
            }
        }
        Ok(entries)
    }
}

impl Vmfs {
    /// [`Filesystem::read_dir`] of a directory FD already read.
    fn dir_entries(&self, fd: &Fd) -> fscore::Result<Vec<DirEntry>> {
        let in_root = fd.addr == ROOT_DIR_ADDR;
        let raw = self.read_dir_raw(fd)?;
        let mut out = Vec::with_capacity(raw.len());
        for e in raw {
            let system = e.fd_type == fd_type::SYSFILE
                || (in_root && e.name.starts_with('.') && e.name.ends_with(".sf"));
            let file_type = if e.fd_type == fd_type::SYSFILE {
                file_type(&self.read_fd(e.addr)?)
            } else {
                entry_type(e.fd_type)
            };
            out.push(DirEntry {
                name: e.name,
                id: FileId::new(e.addr as u64),
                file_type,
                metadata_file: system,
                short_name: false,
            });
        }
        Ok(out)
    }

    /// [`Filesystem::metadata`] of an FD already read.
    fn metadata_of(&self, fd: &Fd) -> fscore::Result<Metadata> {
        let ft = file_type(fd);
        let allocated = self.allocated(fd)?;
        let symlink_target = if ft == FileType::Symlink {
            if fd.file_length > MAX_SYMLINK {
                return Err(self
                    .bad_fd(fd.addr, format!("symlink of {} bytes", fd.file_length))
                    .into());
            }
            let src = self.volume_source(fd)?;
            let b = src.read_vec(0, fd.file_length as usize)?;
            Some(String::from_utf8_lossy(&b).into_owned())
        } else {
            None
        };
        Ok(Metadata {
            id: FileId::new(fd.addr as u64),
            file_type: ft,
            size: fd.file_length,
            allocated,
            links: fd.link_count,
            created: None,
            modified: secs(fd.mtime),
            accessed: secs(fd.atime),
            changed: secs(fd.ctime),
            mode: Some(
                fd.mode & 0o7777
                    | match ft {
                        FileType::Dir => 0o040000,
                        FileType::Symlink => 0o120000,
                        FileType::File => 0o100000,
                        FileType::Other => fd.mode & 0o170000,
                    },
            ),
            symlink_target,
            streams: Vec::new(),
            metadata_file: fd.fd_type == fd_type::SYSFILE,
        })
    }
}

struct Boot<'a> {
    desc: &'a FsDescriptor,
    layout: Layout,
    volume: &'a Source,
    vol_name: &'a str,
}

impl Boot<'_> {
    /// Opens a system resource file from its FD at the bootstrap location.
    fn sys_file(
        &self,
        addr: u32,
        name: &'static str,
        sfb_per_cluster: u64,
        sbc: Option<&ResFile>,
        pbc: Option<&ResFile>,
        pb2: Option<&ResFile>,
    ) -> Result<ResFile> {
        let off = if self.desc.is_vmfs6() {
            v6::sfd_offset(self.desc, addr)
        } else {
            v5::sfd_offset(self.desc, addr)
        };
        let bad = |offset: u64, detail: String| VmfsError::Corrupt {
            structure: format!("FD of {name}"),
            device: self.vol_name.to_string(),
            offset,
            detail,
        };
        let off = off.ok_or_else(|| bad(0, "its location overflows".into()))?;
        let mut raw = vec![0u8; self.layout.fd_size];
        self.volume
            .read_exact_at(off, &mut raw)
            .map_err(|e| bad(off, e.to_string()))?;
        let fd = Fd::parse(addr, raw, self.layout).ok_or_else(|| bad(off, "truncated".into()))?;
        if fd.desc_addr != addr || fd.fd_type != fd_type::SYSFILE {
            return Err(bad(
                off,
                format!(
                    "expected system file FD {addr:#x}, found address {:#x} of type {}",
                    fd.desc_addr, fd.fd_type
                ),
            ));
        }
        let ctx = Ctx {
            desc: self.desc,
            layout: self.layout,
            volume: self.volume,
            vol_name: self.vol_name,
            sbc,
            pbc,
            pb2,
            sfb_per_cluster,
        };
        let FileMap::Blocks { map, .. } = ctx.map(&fd)? else {
            return Err(bad(off, "a resource file cannot be resident".into()));
        };
        let file = MappedFile::new(self.volume.clone(), map.clone(), name)?;
        let mut b = vec![0u8; RES_META_SIZE];
        file.read_exact_at(0, &mut b)
            .map_err(|e| bad(off, e.to_string()))?;
        let meta = ResMeta::parse(
            &b,
            self.layout.vmfs6,
            self.layout.cluster_header_size,
            name,
            self.vol_name,
            0,
        )?;
        Ok(ResFile {
            meta,
            map,
            file,
            name,
            fd: addr,
        })
    }
}

/// Large reads are split in this many pieces read concurrently by default. One synchronous
/// stream cannot keep a SAN LUN (or a virtio disk) busy, several outstanding requests can.
const READ_STREAMS: usize = 1;
/// Reads at least this large are split.
const PARALLEL_READ_MIN: usize = 4 << 20;

/// A mapped file whose large reads are issued as several concurrent device reads.
struct ParallelFile {
    file: MappedFile,
    streams: usize,
}

impl ReadAt for ParallelFile {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        if buf.len() < PARALLEL_READ_MIN {
            return self.file.read_exact_at(offset, buf);
        }
        let piece = buf.len().div_ceil(self.streams).next_multiple_of(1 << 16);
        std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks_mut(piece)
                .enumerate()
                .map(|(i, chunk)| {
                    let off = offset + (i * piece) as u64;
                    s.spawn(move || self.file.read_exact_at(off, chunk))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("reader thread panicked"))
                .collect::<lun::Result<Vec<()>>>()
                .map(|_| ())
        })
    }
    fn size(&self) -> u64 {
        self.file.size()
    }
    fn name(&self) -> &str {
        self.file.name()
    }
    fn splice_to_pipe(&self, offset: u64, len: usize, pipe: std::os::fd::BorrowedFd<'_>) -> usize {
        self.file.splice_to_pipe(offset, len, pipe)
    }
    fn is_hole(&self, offset: u64, len: usize) -> bool {
        self.file.is_hole(offset, len)
    }
}

fn file_type(fd: &Fd) -> FileType {
    if fd.is_dir() {
        return FileType::Dir;
    }
    match fd.fd_type {
        fd_type::REGFILE | fd_type::SYSFILE => FileType::File,
        fd_type::SYMLINK => FileType::Symlink,
        _ => FileType::Other,
    }
}

fn entry_type(t: u32) -> FileType {
    match t {
        fd_type::DIRECTORY => FileType::Dir,
        fd_type::REGFILE => FileType::File,
        fd_type::SYMLINK => FileType::Symlink,
        _ => FileType::Other,
    }
}

fn secs(t: u32) -> Option<i64> {
    (t != 0).then_some(t as i64 * 1_000_000_000)
}

/// Symlink targets longer than this are refused.
const MAX_SYMLINK: u64 = 4096;

impl Filesystem for Vmfs {
    fn info(&self) -> VolumeInfo {
        VolumeInfo {
            fs: if self.desc.is_vmfs6() {
                FsKind::Vmfs6
            } else {
                FsKind::Vmfs5
            },
            label: self.desc.label.clone(),
            uuid: self.desc.uuid.clone(),
            block_size: self.desc.file_block_size,
            size: self.volume.size(),
        }
    }

    fn root(&self) -> FileId {
        FileId::new(ROOT_DIR_ADDR as u64)
    }

    fn read_dir(&self, dir: &FileId) -> fscore::Result<Vec<DirEntry>> {
        let fd = self.fd_of(dir)?;
        self.dir_entries(&fd)
    }

    fn metadata(&self, id: &FileId) -> fscore::Result<Metadata> {
        let fd = self.fd_of(id)?;
        self.metadata_of(&fd)
    }

    fn list_tree(&self, limits: &TreeLimits) -> Tree {
        tree::list_tree(self, limits)
    }

    fn open(&self, id: &FileId) -> fscore::Result<Source> {
        let fd = self.fd_of(id)?;
        let name = format!("{} FD {:#x}", self.vol_name, fd.addr);
        Ok(match &*self.file_map(&fd)? {
            FileMap::Resident(d) => Arc::new(MemSource::new(name, d.clone())),
            FileMap::Blocks { map, .. } => {
                let dev_map = self.to_device(fd.addr, map)?;
                let streams = self.read_streams.load(Ordering::Relaxed);
                let file = MappedFile::new(self.device(), dev_map, name)?;
                if streams > 1 {
                    Arc::new(ParallelFile { file, streams })
                } else {
                    Arc::new(file)
                }
            }
        })
    }

    fn extents(&self, id: &FileId) -> fscore::Result<FileMapping> {
        let fd = self.fd_of(id)?;
        if file_type(&fd) != FileType::File {
            return Ok(FileMapping::NotMappable(NotMappable::NotAFile));
        }
        Ok(match &*self.file_map(&fd)? {
            FileMap::Resident(_) => FileMapping::NotMappable(NotMappable::Resident),
            FileMap::Blocks { map, .. } => FileMapping::Mapped(self.to_device(fd.addr, map)?),
        })
    }

    fn device(&self) -> Source {
        if self.spanned {
            self.volume.clone()
        } else {
            self.devices[0].clone()
        }
    }

    fn locate(&self, device_offset: u64) -> (usize, u64) {
        if !self.spanned {
            return (0, device_offset);
        }
        let i = self
            .runs
            .partition_point(|r| r.logical + r.len <= device_offset);
        match self.runs.get(i) {
            Some(r) if r.logical <= device_offset => (r.dev, r.phys + (device_offset - r.logical)),
            _ => (0, device_offset),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vmfs_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<super::Vmfs>();
        fn as_dyn(fs: super::Vmfs) -> Box<dyn fscore::Filesystem> {
            Box::new(fs)
        }
        let _ = as_dyn;
    }
}
