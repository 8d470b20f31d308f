//! VMFS5 writer.
//!
//! The writer plans first and writes second. Planning assigns every file a descriptor number,
//! picks its addressing mode (resident, sub-blocks, direct file blocks, pointer blocks, double
//! indirect pointer blocks) and counts the resources, which fixes the size of every `.sf`
//! resource file and so the volume size. Writing then lays the volume out the way ESXi lays
//! out a fresh VMFS5 volume: `.vh.sf` (descriptor + heartbeats) in the first 4 MiB, `.fdc.sf`
//! at the block vmfs-tools expects it (`max(1, 4 MiB / block size)`), then the root directory,
//! `.fbb.sf`, `.pbc.sf`, `.sbc.sf`, `.pb2.sf`, `.sdd.sf`, and the data of the tree.
//!
//! Allocation is strictly sequential: blocks `0..used` are in use and nothing else, likewise
//! descriptors, sub-blocks and pointer blocks. The bitmaps are written from those counts.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::layout;
use crate::lvm::{self, LogicalVolume, VmwareUuid};
use crate::tree::{Kind, Node, Segment, Tree};
use crate::v5_format::*;
use crate::{Options, splitmix64};

/// Descriptor numbers of the system files, as ESXi numbers them.
mod sys {
    pub const ROOT: u64 = 0;
    pub const FBB: u64 = 1;
    pub const FDC: u64 = 2;
    pub const PBC: u64 = 3;
    pub const SBC: u64 = 4;
    pub const VH: u64 = 5;
    pub const PB2: u64 = 6;
    pub const SDD: u64 = 7;
    /// First descriptor number for the copied tree.
    pub const FIRST_USER: u64 = 8;
}

/// Bytes read from a source file at once.
const COPY_CHUNK: u64 = 1 << 20;

/// Writes `tree` as a VMFS5 volume into `image` (and, for a spanned volume, the images of
/// `opts.extents`).
pub fn write(opts: &Options, tree: &Tree, image: &Path) -> Result<()> {
    let bs = opts.block_size;
    ensure!(
        bs.is_power_of_two() && ((1 << 20)..=(8 << 20)).contains(&bs),
        "VMFS5 block size must be 1, 2, 4 or 8 MiB, not {bs}"
    );
    let mut plan = Plan::build(tree, bs)?;
    let images: Vec<&Path> = std::iter::once(image)
        .chain(opts.extents.iter().map(PathBuf::as_path))
        .collect();
    let pes = device_pes(opts, images.len() as u64, plan.pes_needed())?;
    plan.finish(pes.iter().sum())?;

    let now = now_secs();
    let mut first_pe = 0;
    let devices = pes
        .iter()
        .zip(&images)
        .map(|(&num_pes, img)| {
            let d = lvm::DeviceExtent {
                device_uuid: VmwareUuid::generate(now),
                first_pe,
                num_pes,
                name: device_name(img, images.len()),
            };
            first_pe += num_pes;
            d
        })
        .collect();
    let span = lvm::SpannedVolume {
        major_version: 5,
        minor_version: 0x15,
        volume_uuid: VmwareUuid::generate(now),
        time_us: u64::from(now) * 1_000_000,
        devices,
    };
    let head_partition = opts.partition_len()?;
    let extent_partition = opts.extent_partition_len()?;
    let mut vols = Vec::with_capacity(images.len());
    for (i, img) in images.iter().enumerate() {
        let fixed = if i == 0 {
            head_partition
        } else {
            extent_partition
        };
        let len = fixed.unwrap_or_else(|| lvm::partition_len_for(span.devices[i].num_pes));
        let vol = layout::create(img, opts.layout, len)?;
        lvm::write_lvm5_device(&vol, &span, i)
            .with_context(|| format!("LVM header of {}", img.display()))?;
        vols.push(vol);
    }
    let lv = lvm::LogicalVolume::new(&span, &vols)?;
    let w = Writer {
        vol: &lv,
        plan: &plan,
        bs,
        now,
        opts,
        volume_uuid: span.volume_uuid,
    };
    w.write_all()?;
    drop(lv);
    for vol in vols {
        vol.finish()?;
    }
    Ok(())
}

/// PEs of each device: from the image sizes given, else just enough for the tree, split
/// evenly (the head takes the remainder) with at least one PE per device.
pub(crate) fn device_pes(opts: &Options, devices: u64, needed: u64) -> Result<Vec<u64>> {
    let pes_of = |partition: u64, what: &str| -> Result<u64> {
        let n = lvm::pes_for_partition(partition);
        ensure!(
            n >= 1,
            "{what} leaves no room for one 256 MiB LVM extent (need > 273 MiB)"
        );
        Ok(n)
    };
    let extra = devices - 1;
    let head_pes = opts
        .partition_len()?
        .map(|p| pes_of(p, "--size"))
        .transpose()?;
    let what = if opts.extent_size.is_some() {
        "--extent-size"
    } else {
        "--size"
    };
    let extent_pes = match extra {
        0 => None,
        _ => opts
            .extent_partition_len()?
            .map(|p| pes_of(p, what))
            .transpose()?,
    };
    Ok(match (head_pes, extent_pes) {
        (Some(h), Some(e)) => std::iter::once(h).chain((0..extra).map(|_| e)).collect(),
        (None, Some(e)) => {
            let head = needed.saturating_sub(e * extra).max(1);
            std::iter::once(head).chain((0..extra).map(|_| e)).collect()
        }
        (Some(h), None) => vec![h],
        (None, None) => {
            let total = needed.max(devices);
            let each = total / devices;
            std::iter::once(each + total % devices)
                .chain((0..extra).map(|_| each))
                .collect()
        }
    })
}

/// The device name the head extent lists for an image: ESXi lists `naa.…:1`; mkvmfs names the
/// image file, so a missing extent can be told by name.
pub(crate) fn device_name(image: &Path, devices: usize) -> String {
    if devices == 1 {
        return "mkvmfs:C0:T0:L0:1".into();
    }
    let file = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("mkvmfs:{file}:1")
}

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Where a descriptor's data lives.
#[derive(Debug, Clone)]
enum Storage {
    /// Inside the descriptor (up to 1 KiB).
    Resident,
    /// In sub-blocks, numbers in file order.
    SubBlocks(Vec<u64>),
    /// In file blocks of the volume block size.
    Blocks {
        /// `zla::FILE_BLOCK`, `zla::POINTER_BLOCK` or `zla::DOUBLE_POINTER_BLOCK`.
        zla: u32,
        /// Allocated blocks: (logical block, volume block, to-be-zeroed), sorted by logical.
        map: Vec<(u64, u64, bool)>,
        /// Pointer blocks: (level, index in that level's address space, pointer block number).
        /// Level 1 covers `PTRS_PER_PB` file blocks; level 2 covers `PTRS_PER_PB` level-1 blocks.
        pbs: Vec<(u8, u64, u64)>,
    },
}

/// What a descriptor holds.
#[derive(Debug, Clone, Copy)]
enum Content<'a> {
    /// A node of the copied tree.
    Node(&'a Node),
    /// The `.vh.sf` system file.
    Vh,
    /// A resource file (`.fbb.sf`, `.fdc.sf`, `.pbc.sf`, `.sbc.sf`, `.pb2.sf`).
    Resource,
    /// The `.sdd.sf` system directory (empty).
    Sdd,
}

/// One planned file descriptor.
#[derive(Debug, Clone)]
struct FdPlan<'a> {
    content: Content<'a>,
    /// Descriptor number of the parent directory.
    parent: u64,
    /// Descriptor numbers of the entries of a directory.
    children: Vec<u64>,
    /// `FS3_DescriptorType`.
    fd_type: u32,
    /// `fileLength`.
    len: u64,
    /// `generation`, repeated in the directory entry.
    generation: u32,
    storage: Storage,
    /// Name in the parent directory.
    name: Vec<u8>,
}

/// Counts and placements decided before anything is written.
struct Plan<'a> {
    bs: u64,
    fds: Vec<FdPlan<'a>>,
    sub_blocks: u64,
    pointer_blocks: u64,
    /// Data blocks of the tree (everything after `.sdd.sf`).
    data_blocks: u64,
    /// First block of each system file, filled in by `finish`.
    sys_start: SysStarts,
    /// Blocks in use (`0..used_blocks`).
    used_blocks: u64,
    /// Blocks in the volume.
    total_blocks: u64,
    /// Resource counts per resource file.
    fdc_res: u64,
    sbc_res: u64,
    pbc_res: u64,
}

#[derive(Default, Debug, Clone, Copy)]
struct SysStarts {
    fdc: u64,
    root: u64,
    fbb: u64,
    pbc: u64,
    sbc: u64,
    pb2: u64,
    sdd: u64,
}

impl<'a> Plan<'a> {
    fn build(tree: &'a Tree, bs: u64) -> Result<Plan<'a>> {
        let mut plan = Plan {
            bs,
            fds: Vec::new(),
            sub_blocks: 0,
            pointer_blocks: 0,
            data_blocks: 0,
            sys_start: SysStarts::default(),
            used_blocks: 0,
            total_blocks: 0,
            fdc_res: 0,
            sbc_res: 0,
            pbc_res: 0,
        };
        let sys_fd = |content, fd_type, name: &str| FdPlan {
            content,
            parent: sys::ROOT,
            children: Vec::new(),
            fd_type,
            len: 0,
            generation: 1,
            storage: Storage::Resident,
            name: name.as_bytes().to_vec(),
        };
        plan.fds
            .push(sys_fd(Content::Node(&tree.root), fd_type::DIRECTORY, ""));
        plan.fds
            .push(sys_fd(Content::Resource, fd_type::SYSFILE, ".fbb.sf"));
        plan.fds
            .push(sys_fd(Content::Resource, fd_type::SYSFILE, ".fdc.sf"));
        plan.fds
            .push(sys_fd(Content::Resource, fd_type::SYSFILE, ".pbc.sf"));
        plan.fds
            .push(sys_fd(Content::Resource, fd_type::SYSFILE, ".sbc.sf"));
        plan.fds
            .push(sys_fd(Content::Vh, fd_type::SYSFILE, ".vh.sf"));
        plan.fds
            .push(sys_fd(Content::Resource, fd_type::SYSFILE, ".pb2.sf"));
        plan.fds
            .push(sys_fd(Content::Sdd, fd_type::SYSFILE, ".sdd.sf"));
        plan.fds[0].children = (1..sys::FIRST_USER).collect();

        // Descriptor numbers in pre-order, so a directory's descriptor precedes its entries'.
        let mut generation = 2u32;
        let mut stack: Vec<(&'a Node, u64)> = tree
            .root
            .children()
            .iter()
            .rev()
            .map(|c| (c, sys::ROOT))
            .collect();
        while let Some((node, parent)) = stack.pop() {
            let index = plan.fds.len() as u64;
            let name = node.name_bytes().to_vec();
            ensure!(
                name.len() <= NAME_MAX,
                "{}: name longer than {NAME_MAX} bytes does not fit a VMFS5 directory entry",
                node.rel_path
            );
            let (fd_type, len) = match &node.kind {
                Kind::Dir(_) => (fd_type::DIRECTORY, 0),
                Kind::File { size, .. } => (fd_type::REGFILE, *size),
                Kind::Symlink(t) => (fd_type::SYMLINK, t.len() as u64),
            };
            plan.fds.push(FdPlan {
                content: Content::Node(node),
                parent,
                children: Vec::new(),
                fd_type,
                len,
                generation,
                storage: Storage::Resident,
                name,
            });
            generation = generation.wrapping_add(1);
            plan.fds[parent as usize].children.push(index);
            for c in node.children().iter().rev() {
                stack.push((c, index));
            }
        }
        ensure!(
            plan.fds.len() as u64 <= (1 << 16) * 32,
            "{} files exceed the descriptors VMFS5 can address",
            plan.fds.len()
        );

        // Storage of everything but the root directory and the system files, which `finish`
        // places once the resource counts are known.
        for i in sys::FIRST_USER as usize..plan.fds.len() {
            let storage = plan.storage_for(i)?;
            plan.fds[i].storage = storage;
        }
        let root_len = (plan.fds[0].children.len() as u64 + 2) * DIRENT_SIZE;
        plan.fds[0].len = root_len;
        plan.fds[sys::SDD as usize].len = 2 * DIRENT_SIZE;
        Ok(plan)
    }

    /// Chooses the addressing of descriptor `i` and counts its resources.
    fn storage_for(&mut self, i: usize) -> Result<Storage> {
        let fd = &self.fds[i];
        let Content::Node(node) = fd.content else {
            unreachable!("only tree nodes here")
        };
        match &node.kind {
            Kind::Dir(_) => {
                let len = (fd.children.len() as u64 + 2) * DIRENT_SIZE;
                self.fds[i].len = len;
                let sbs = len.div_ceil(SUB_BLOCK_SIZE);
                if sbs <= FD_ADDRS as u64 {
                    Ok(self.alloc_sub_blocks(sbs))
                } else {
                    let blocks = len.div_ceil(self.bs);
                    self.alloc_blocks(
                        &node.rel_path,
                        (0..blocks).map(|b| (b, false)).collect(),
                        blocks,
                    )
                }
            }
            Kind::Symlink(target) => {
                ensure!(
                    target.len() as u64 <= SUB_BLOCK_SIZE,
                    "{}: symlink target longer than {SUB_BLOCK_SIZE} bytes",
                    node.rel_path
                );
                Ok(self.alloc_sub_blocks(1))
            }
            Kind::File {
                size,
                segments,
                lazy_zeroed,
            } => {
                let size = *size;
                if size == 0 || (!lazy_zeroed && size <= RESIDENT_MAX) {
                    return Ok(Storage::Resident);
                }
                if !lazy_zeroed && size <= SUB_BLOCK_SIZE {
                    return Ok(self.alloc_sub_blocks(1));
                }
                let logical_blocks = size.div_ceil(self.bs);
                let wanted = blocks_to_allocate(segments, logical_blocks, self.bs, *lazy_zeroed);
                self.alloc_blocks(&node.rel_path, wanted, logical_blocks)
            }
        }
    }

    fn alloc_sub_blocks(&mut self, count: u64) -> Storage {
        let start = self.sub_blocks;
        self.sub_blocks += count;
        Storage::SubBlocks((start..start + count).collect())
    }

    /// Allocates file blocks (volume block numbers are relative to the data area until
    /// `finish` rebases them) and the pointer blocks the addressing mode needs.
    fn alloc_blocks(
        &mut self,
        what: &str,
        wanted: Vec<(u64, bool)>,
        logical_blocks: u64,
    ) -> Result<Storage> {
        let per_pb = PTRS_PER_PB;
        let zla = if logical_blocks <= FD_ADDRS as u64 {
            zla::FILE_BLOCK
        } else if logical_blocks <= FD_ADDRS as u64 * per_pb {
            zla::POINTER_BLOCK
        } else if logical_blocks <= FD_ADDRS as u64 * per_pb * per_pb {
            zla::DOUBLE_POINTER_BLOCK
        } else {
            bail!("{what}: {logical_blocks} blocks exceed VMFS5 double-indirect addressing");
        };
        let mut map = Vec::with_capacity(wanted.len());
        for (logical, tbz) in wanted {
            map.push((logical, self.data_blocks, tbz));
            self.data_blocks += 1;
        }
        // `map` is sorted by logical block, so each level's pointer blocks come in order and
        // comparing with the last one allocated is enough to avoid duplicates.
        let mut pbs = Vec::new();
        let mut next = self.pointer_blocks;
        if zla != zla::FILE_BLOCK {
            let (mut last1, mut last2) = (None, None);
            for &(logical, _, _) in &map {
                if zla == zla::DOUBLE_POINTER_BLOCK {
                    let idx = logical / (per_pb * per_pb);
                    if last2 != Some(idx) {
                        pbs.push((2, idx, next));
                        next += 1;
                        last2 = Some(idx);
                    }
                }
                let idx = logical / per_pb;
                if last1 != Some(idx) {
                    pbs.push((1, idx, next));
                    next += 1;
                    last1 = Some(idx);
                }
            }
        }
        self.pointer_blocks = next;
        Ok(Storage::Blocks { zla, map, pbs })
    }

    /// Resource counts, given the volume's block count.
    fn resources(&self) -> (u64, u64, u64) {
        let fds = self.fds.len() as u64;
        let fdc = ((fds.div_ceil(32) + 1).max(2)) * 32;
        let sbc = self.sub_blocks.div_ceil(32).max(8) * 32;
        let pbc = self.pointer_blocks.max(1);
        (fdc, sbc, pbc)
    }

    /// Blocks used by everything except `.fbb.sf`, whose size depends on the volume size.
    fn blocks_without_fbb(&self) -> u64 {
        let bs = self.bs;
        let (fdc, sbc, pbc) = self.resources();
        let vh = VH_LEN.div_ceil(bs);
        let fdc_base = (VH_LEN / bs).max(1);
        fdc_base.max(vh)
            + ResourceGeometry::FDC.file_len(fdc).div_ceil(bs)
            + self.fds[0].len.div_ceil(bs)
            + ResourceGeometry::PBC.file_len(pbc).div_ceil(bs)
            + ResourceGeometry::SBC.file_len(sbc).div_ceil(bs)
            + ResourceGeometry::PB2.file_len(1).div_ceil(bs)
            + (2 * DIRENT_SIZE).div_ceil(bs)
            + self.data_blocks
    }

    fn fbb_blocks(&self, total_blocks: u64) -> u64 {
        ResourceGeometry::FBB
            .file_len(total_blocks)
            .div_ceil(self.bs)
    }

    /// The smallest number of 256 MiB extents that holds everything.
    fn pes_needed(&self) -> u64 {
        let per_pe = lvm::PE_SIZE / self.bs;
        let mut pes = 1;
        loop {
            let total = pes * per_pe;
            if self.blocks_without_fbb() + self.fbb_blocks(total) <= total {
                return pes;
            }
            pes += 1;
        }
    }

    /// Places the system files and rebases data blocks, for a volume of `num_pes` extents.
    fn finish(&mut self, num_pes: u64) -> Result<()> {
        let bs = self.bs;
        self.total_blocks = num_pes * (lvm::PE_SIZE / bs);
        ensure!(
            self.total_blocks <= 1 << 26,
            "{} blocks exceed the VMFS5 file block address space",
            self.total_blocks
        );
        let used = self.blocks_without_fbb() + self.fbb_blocks(self.total_blocks);
        ensure!(
            used <= self.total_blocks,
            "the tree needs {} blocks of {bs} bytes but the volume has {}; raise --size",
            used,
            self.total_blocks
        );
        let (fdc, sbc, pbc) = self.resources();
        (self.fdc_res, self.sbc_res, self.pbc_res) = (fdc, sbc, pbc);

        let mut next = (VH_LEN / bs).max(1).max(VH_LEN.div_ceil(bs));
        let mut take = |len: u64| {
            let start = next;
            next += len.div_ceil(bs);
            start
        };
        let s = SysStarts {
            fdc: take(ResourceGeometry::FDC.file_len(fdc)),
            root: take(self.fds[0].len),
            fbb: take(ResourceGeometry::FBB.file_len(self.total_blocks)),
            pbc: take(ResourceGeometry::PBC.file_len(pbc)),
            sbc: take(ResourceGeometry::SBC.file_len(sbc)),
            pb2: take(ResourceGeometry::PB2.file_len(1)),
            sdd: take(2 * DIRENT_SIZE),
        };
        let data = next;
        self.sys_start = s;
        self.used_blocks = data + self.data_blocks;
        debug_assert_eq!(self.used_blocks, used);

        // System files are contiguous runs of blocks.
        let run = |start: u64, len: u64| -> Vec<(u64, u64, bool)> {
            (0..len.div_ceil(bs).max(1))
                .map(|b| (b, start + b, false))
                .collect()
        };
        let direct = |map| Storage::Blocks {
            zla: zla::FILE_BLOCK,
            map,
            pbs: Vec::new(),
        };
        let sys_len = [
            (
                sys::FBB,
                self.sys_start.fbb,
                ResourceGeometry::FBB.file_len(self.total_blocks),
            ),
            (
                sys::FDC,
                self.sys_start.fdc,
                ResourceGeometry::FDC.file_len(fdc),
            ),
            (
                sys::PBC,
                self.sys_start.pbc,
                ResourceGeometry::PBC.file_len(pbc),
            ),
            (
                sys::SBC,
                self.sys_start.sbc,
                ResourceGeometry::SBC.file_len(sbc),
            ),
            (sys::VH, 0, VH_LEN),
            (
                sys::PB2,
                self.sys_start.pb2,
                ResourceGeometry::PB2.file_len(1),
            ),
            (sys::SDD, self.sys_start.sdd, 2 * DIRENT_SIZE),
            (sys::ROOT, self.sys_start.root, self.fds[0].len),
        ];
        for (fd, start, len) in sys_len {
            let blocks = len.div_ceil(bs);
            ensure!(
                blocks <= FD_ADDRS as u64,
                "system file {} needs {blocks} blocks, more than direct addressing allows",
                String::from_utf8_lossy(&self.fds[fd as usize].name)
            );
            self.fds[fd as usize].len = len;
            self.fds[fd as usize].storage = direct(run(start, len));
        }
        for fd in &mut self.fds[sys::FIRST_USER as usize..] {
            if let Storage::Blocks { map, .. } = &mut fd.storage {
                for entry in map.iter_mut() {
                    entry.1 += data;
                }
            }
        }
        Ok(())
    }
}

/// Writes a planned volume.
struct Writer<'p, 'a> {
    vol: &'p LogicalVolume<'p>,
    plan: &'p Plan<'a>,
    bs: u64,
    now: u32,
    opts: &'p Options,
    /// LVM volume UUID, repeated in the filesystem descriptor.
    volume_uuid: VmwareUuid,
}

impl Writer<'_, '_> {
    /// Writes at a logical-volume offset.
    fn write_lv(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.vol.write_at(offset, buf)
    }

    fn fd_offset(&self, index: u64) -> u64 {
        self.plan.sys_start.fdc * self.bs + ResourceGeometry::FDC.resource_offset(index)
    }

    fn sb_offset(&self, index: u64) -> u64 {
        self.plan.sys_start.sbc * self.bs + ResourceGeometry::SBC.resource_offset(index)
    }

    fn pb_offset(&self, index: u64) -> u64 {
        self.plan.sys_start.pbc * self.bs + ResourceGeometry::PBC.resource_offset(index)
    }

    fn write_all(&self) -> Result<()> {
        self.write_descriptor()?;
        self.write_heartbeats()?;
        let p = self.plan;
        self.write_resource(
            ResourceGeometry::FDC,
            p.sys_start.fdc,
            p.fdc_res,
            p.fds.len() as u64,
        )?;
        self.write_resource(
            ResourceGeometry::SBC,
            p.sys_start.sbc,
            p.sbc_res,
            p.sub_blocks,
        )?;
        self.write_resource(
            ResourceGeometry::PBC,
            p.sys_start.pbc,
            p.pbc_res,
            p.pointer_blocks,
        )?;
        self.write_resource(ResourceGeometry::PB2, p.sys_start.pb2, 1, 0)?;
        self.write_resource(
            ResourceGeometry::FBB,
            p.sys_start.fbb,
            p.total_blocks,
            p.used_blocks,
        )?;
        let garbage = garbage_block(self.bs);
        for index in 0..p.fds.len() as u64 {
            self.write_fd(index)?;
            self.write_contents(index, &garbage)?;
        }
        Ok(())
    }

    /// `FS3_Descriptor` at logical offset 2 MiB.
    fn write_descriptor(&self) -> Result<()> {
        let mut d = [0u8; 0x200];
        put32(&mut d, 0x00, FS_MAGIC);
        put32(&mut d, 0x04, FS_MAJOR_VERSION);
        d[0x08] = FS_MINOR_VERSION;
        let fs_uuid = VmwareUuid::generate(self.now);
        d[0x09..0x19].copy_from_slice(&fs_uuid.0);
        put32(&mut d, 0x19, FS_CONFIG);
        let label = self.opts.label.as_bytes();
        ensure!(label.len() < 128, "label longer than 127 bytes");
        d[0x1d..0x1d + label.len()].copy_from_slice(label);
        put32(&mut d, 0x9d, 512); // diskBlockSize
        put64(&mut d, 0xa1, self.bs); // fileBlockSize
        put32(&mut d, 0xa9, self.now); // creationTime
        put32(&mut d, 0xad, 1); // snapID
        d[0xb1..0xc1].copy_from_slice(&self.volume_uuid.0); // volInfo: LVM volume UUID
        put32(&mut d, 0xc1, 1);
        put32(&mut d, 0xd1, CLUSTER_GROUP_OFFSET as u32); // fdcClusterGroupOffset
        put32(
            &mut d,
            0xd5,
            ResourceGeometry::FDC.clusters_per_group as u32,
        );
        put32(&mut d, 0xd9, SUB_BLOCK_SIZE as u32);
        put32(&mut d, 0xdd, 8); // maxJournalSlotsPerTxn
        put64(&mut d, 0xe1, self.fd_offset(sys::PB2)); // pb2VolAddr
        put32(&mut d, 0xe9, fd_addr(sys::PB2));
        d[0xed..0xfd].copy_from_slice(&VmwareUuid::generate(self.now).0); // hostUuid
        put64(&mut d, 0xfd, 1); // gblGeneration
        put64(&mut d, 0x105, self.fd_offset(sys::SDD)); // sddVolAddr
        put32(&mut d, 0x10d, fd_addr(sys::SDD));
        self.write_lv(FS_DESCRIPTOR_OFFSET, &d)
    }

    /// Idle heartbeat slots, each naming its own position.
    fn write_heartbeats(&self) -> Result<()> {
        let mut hb = vec![0u8; (HEARTBEAT_SLOTS * HEARTBEAT_SIZE) as usize];
        for i in 0..HEARTBEAT_SLOTS {
            let o = (i * HEARTBEAT_SIZE) as usize;
            put32(&mut hb, o, HEARTBEAT_MAGIC_OFF);
            put64(&mut hb, o + 4, HEARTBEAT_OFFSET + i * HEARTBEAT_SIZE);
        }
        self.write_lv(HEARTBEAT_OFFSET, &hb)
    }

    /// Header, cluster metadata and bitmaps of a resource file whose first `used` resources
    /// are in use.
    fn write_resource(
        &self,
        g: ResourceGeometry,
        start_block: u64,
        resources: u64,
        used: u64,
    ) -> Result<()> {
        let base = start_block * self.bs;
        let clusters = resources.div_ceil(g.per_cluster);
        let groups = clusters.div_ceil(g.clusters_per_group);
        let mut h = [0u8; 0x60];
        put32(&mut h, 0x00, g.per_cluster as u32);
        put32(&mut h, 0x04, g.clusters_per_group as u32);
        put32(&mut h, 0x08, CLUSTER_GROUP_OFFSET as u32);
        put32(&mut h, 0x0c, g.resource_size as u32);
        put32(&mut h, 0x10, g.group_size() as u32);
        put32(&mut h, 0x14, resources as u32);
        put32(&mut h, 0x18, groups as u32);
        self.write_lv(base, &h)?;
        // Cluster metadata of one group at a time, written in one piece.
        for group in 0..groups {
            let first = group * g.clusters_per_group;
            let last = (first + g.clusters_per_group).min(clusters);
            let mut buf = vec![0u8; ((last - first) * CLUSTER_META_SIZE) as usize];
            for c in first..last {
                let o = ((c - first) * CLUSTER_META_SIZE) as usize;
                let pos = base + g.cluster_meta_offset(c);
                let total = (resources - c * g.per_cluster).min(g.per_cluster);
                let in_use = used.saturating_sub(c * g.per_cluster).min(total);
                put32(&mut buf, o, g.magic);
                put64(&mut buf, o + 4, pos);
                put32(&mut buf, o + 0x200, c as u32);
                put32(&mut buf, o + 0x204, total as u32);
                put32(&mut buf, o + 0x208, (total - in_use) as u32);
                put32(
                    &mut buf,
                    o + 0x20c,
                    if in_use < total { in_use as u32 } else { 0 },
                );
                // A set bit marks a free resource.
                for r in in_use..total {
                    buf[o + 0x210 + (r / 8) as usize] |= 1 << (r % 8);
                }
            }
            self.write_lv(base + g.cluster_meta_offset(first), &buf)?;
        }
        Ok(())
    }

    /// The 2 KiB descriptor: lock block, `FS3_FileMetadata`, block array or resident data.
    fn write_fd(&self, index: u64) -> Result<()> {
        let fd = &self.plan.fds[index as usize];
        let pos = self.fd_offset(index);
        let mut b = vec![0u8; FD_SIZE as usize];
        put32(&mut b, 0x00, FD_MAGIC);
        put64(&mut b, 0x04, pos);
        put64(&mut b, 0x1c, 1); // token
        let m = FD_META_OFFSET;
        let (mode, uid, gid, mtime, ctime, atime, links) = match fd.content {
            Content::Node(n) => {
                let subdirs = n.children().iter().filter(|c| c.is_dir()).count() as u32;
                let extra = if index == sys::ROOT { 1 } else { 0 }; // .sdd.sf
                let links = if n.is_dir() { 2 + subdirs + extra } else { 1 };
                (
                    n.mode,
                    n.uid,
                    n.gid,
                    clamp_time(n.mtime),
                    clamp_time(n.ctime),
                    clamp_time(n.atime),
                    links,
                )
            }
            Content::Sdd => (0o40700, 0, 0, self.now, self.now, self.now, 2),
            _ => (0o400, 0, 0, self.now, self.now, self.now, 1),
        };
        put32(&mut b, m, fd_addr(index)); // descAddr
        put32(&mut b, m + 0x04, fd.generation);
        put32(&mut b, m + 0x08, links);
        put32(&mut b, m + 0x0c, fd.fd_type);
        put64(&mut b, m + 0x14, fd.len);
        let (zla_value, block_size, blocks, tbz, pbs) = match &fd.storage {
            Storage::Resident => (zla::RESIDENT, SUB_BLOCK_SIZE, 0, 0, 0),
            Storage::SubBlocks(sbs) => (zla::SUB_BLOCK, SUB_BLOCK_SIZE, sbs.len() as u64, 0, 0),
            Storage::Blocks { zla, map, pbs } => {
                let tbz = map.iter().filter(|e| e.2).count() as u64;
                (*zla, self.bs, map.len() as u64, tbz, pbs.len() as u64)
            }
        };
        put64(&mut b, m + 0x1c, block_size);
        put64(&mut b, m + 0x24, blocks);
        put32(&mut b, m + 0x2c, mtime);
        put32(&mut b, m + 0x30, ctime);
        put32(&mut b, m + 0x34, atime);
        put32(&mut b, m + 0x38, uid);
        put32(&mut b, m + 0x3c, gid);
        put32(&mut b, m + 0x40, mode);
        put32(&mut b, m + 0x44, zla_value);
        put32(&mut b, m + 0x48, tbz as u32); // numTBZBlocksLo
        put32(&mut b, m + 0x50, blocks as u32); // newSinceEpochLo
        put32(&mut b, m + 0x54, (tbz >> 32) as u32);
        put32(&mut b, m + 0x5c, pbs as u32); // numPointerBlocks
        put32(&mut b, m + 0x68, fd_addr(index)); // affinityFD
        put32(&mut b, m + 0x6c, 20); // tbzGranularityShift
        b[m + 0x89] = block_size.trailing_zeros() as u8; // blockOffsetShift

        let data = FD_DATA_OFFSET;
        match &fd.storage {
            Storage::Resident => {
                if let Content::Node(n) = fd.content
                    && fd.len > 0
                {
                    let f = n.open()?;
                    f.read_exact_at(&mut b[data..data + fd.len as usize], 0)
                        .with_context(|| format!("read {}", n.host_path.display()))?;
                }
            }
            Storage::SubBlocks(sbs) => {
                for (i, &sb) in sbs.iter().enumerate() {
                    put32(&mut b, data + 4 * i, sb_addr(sb));
                }
            }
            Storage::Blocks { zla, map, pbs } => {
                let per_pb = PTRS_PER_PB;
                for &(logical, phys, tbz) in map {
                    if *zla == zla::FILE_BLOCK {
                        put32(&mut b, data + 4 * logical as usize, fb_addr(phys, tbz));
                    }
                }
                let top_level = if *zla == zla::DOUBLE_POINTER_BLOCK {
                    2
                } else {
                    1
                };
                for &(level, idx, pb) in pbs {
                    if level == top_level {
                        put32(&mut b, data + 4 * idx as usize, pb_addr(pb));
                    }
                }
                // Pointer block contents.
                for &(level, idx, pb) in pbs {
                    let mut block = vec![0u8; PTR_BLOCK_SIZE as usize];
                    if level == 1 {
                        for &(logical, phys, tbz) in map.iter().filter(|e| e.0 / per_pb == idx) {
                            put32(
                                &mut block,
                                4 * (logical % per_pb) as usize,
                                fb_addr(phys, tbz),
                            );
                        }
                    } else {
                        for &(_, i, child) in pbs.iter().filter(|e| e.0 == 1 && e.1 / per_pb == idx)
                        {
                            put32(&mut block, 4 * (i % per_pb) as usize, pb_addr(child));
                        }
                    }
                    self.write_lv(self.pb_offset(pb), &block)?;
                }
            }
        }
        self.write_lv(pos, &b)
    }

    /// Directory entries, symlink targets and file data.
    fn write_contents(&self, index: u64, garbage: &[u8]) -> Result<()> {
        let fd = &self.plan.fds[index as usize];
        let bytes: Vec<u8> = match fd.content {
            Content::Sdd => self.dirents(index, fd.parent, &[]),
            Content::Node(n) => match &n.kind {
                Kind::Dir(_) => self.dirents(
                    index,
                    if index == sys::ROOT { index } else { fd.parent },
                    &fd.children,
                ),
                Kind::Symlink(t) => t.clone(),
                Kind::File { .. } => return self.copy_file(fd, n, garbage),
            },
            Content::Vh | Content::Resource => return Ok(()),
        };
        self.write_stored(fd, &bytes)
    }

    /// Writes a small in-memory content through its storage.
    fn write_stored(&self, fd: &FdPlan, bytes: &[u8]) -> Result<()> {
        match &fd.storage {
            Storage::Resident => Ok(()),
            Storage::SubBlocks(sbs) => {
                for (chunk, &sb) in bytes.chunks(SUB_BLOCK_SIZE as usize).zip(sbs) {
                    self.write_lv(self.sb_offset(sb), chunk)?;
                }
                Ok(())
            }
            Storage::Blocks { map, .. } => {
                for (chunk, &(_, phys, _)) in bytes.chunks(self.bs as usize).zip(map) {
                    self.write_lv(phys * self.bs, chunk)?;
                }
                Ok(())
            }
        }
    }

    /// `FS3_DirEntry` array: `.`, `..`, then the entries.
    fn dirents(&self, this: u64, parent: u64, children: &[u64]) -> Vec<u8> {
        let fds = &self.plan.fds;
        let mut out = Vec::with_capacity((children.len() + 2) * DIRENT_SIZE as usize);
        let mut entry = |fd_type: u32, index: u64, generation: u32, name: &[u8]| {
            let mut e = [0u8; DIRENT_SIZE as usize];
            put32(&mut e, 0, fd_type);
            put32(&mut e, 4, fd_addr(index));
            put32(&mut e, 8, generation);
            e[12..12 + name.len()].copy_from_slice(name);
            out.extend_from_slice(&e);
        };
        // `.` carries the directory's own type: ESXi's `.sdd.sf` lists itself as a system file.
        let own_type = |i: u64| fds[i as usize].fd_type;
        entry(own_type(this), this, fds[this as usize].generation, b".");
        entry(
            own_type(parent),
            parent,
            fds[parent as usize].generation,
            b"..",
        );
        for &c in children {
            let f = &fds[c as usize];
            entry(f.fd_type, c, f.generation, &f.name);
        }
        out
    }

    /// Copies a regular file's data (resident files were written with their descriptor).
    fn copy_file(&self, fd: &FdPlan, node: &Node, garbage: &[u8]) -> Result<()> {
        let Kind::File { segments, .. } = &node.kind else {
            return Ok(());
        };
        match &fd.storage {
            Storage::Resident => Ok(()),
            Storage::SubBlocks(_) => {
                let mut buf = vec![0u8; fd.len as usize];
                let f = node.open()?;
                for s in segments {
                    f.read_exact_at(&mut buf[s.offset as usize..s.end() as usize], s.offset)
                        .with_context(|| format!("read {}", node.host_path.display()))?;
                }
                self.write_stored(fd, &buf)
            }
            Storage::Blocks { map, .. } => {
                let bs = self.bs;
                for &(_, phys, tbz) in map {
                    if tbz {
                        self.write_lv(phys * bs, garbage)?;
                    }
                }
                let f = node.open()?;
                let mut buf = vec![0u8; COPY_CHUNK.min(bs) as usize];
                for s in segments {
                    let mut pos = s.offset;
                    while pos < s.end() {
                        let logical = pos / bs;
                        let within = pos % bs;
                        let n = (s.end() - pos).min(bs - within).min(buf.len() as u64);
                        let chunk = &mut buf[..n as usize];
                        f.read_exact_at(chunk, pos).with_context(|| {
                            format!("read {} at {pos}", node.host_path.display())
                        })?;
                        // The image is new and sparse: all-zero data need not be written.
                        if chunk.iter().any(|&x| x != 0) {
                            let i = map.binary_search_by_key(&logical, |e| e.0).map_err(|_| {
                                anyhow::anyhow!(
                                    "internal: block {logical} of {} not planned",
                                    node.rel_path
                                )
                            })?;
                            self.write_lv(map[i].1 * bs + within, chunk)?;
                        }
                        pos += n;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The logical blocks of a file that get a file block, in order, each with its TBZ flag: the
/// blocks that hold data, or for a lazy-zeroed file every block, those without data TBZ.
fn blocks_to_allocate(
    segments: &[Segment],
    logical_blocks: u64,
    bs: u64,
    lazy_zeroed: bool,
) -> Vec<(u64, bool)> {
    let mut with_data: Vec<u64> = Vec::new();
    for s in segments.iter().filter(|s| s.len > 0) {
        let first = (s.offset / bs).max(with_data.last().map_or(0, |&l| l + 1));
        with_data.extend(first..=(s.end() - 1) / bs);
    }
    if !lazy_zeroed {
        return with_data.into_iter().map(|b| (b, false)).collect();
    }
    let mut data = with_data.iter().peekable();
    (0..logical_blocks)
        .map(|b| {
            let has_data = data.next_if_eq(&&b).is_some();
            (b, !has_data)
        })
        .collect()
}

/// Non-zero filler for to-be-zeroed blocks, so a reader that ignores TBZ returns garbage.
fn garbage_block(bs: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bs as usize);
    let mut x = 0x7462_7a67_6172_6261u64;
    while (out.len() as u64) < bs {
        x = splitmix64(x);
        out.extend(x.to_le_bytes().iter().map(|b| b | 0x01));
    }
    out.truncate(bs as usize);
    out
}

fn clamp_time(t: i64) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn seg(offset: u64, len: u64) -> Segment {
        Segment { offset, len }
    }

    #[test]
    fn thin_files_allocate_only_blocks_with_data() {
        let segs = [seg(0, 10), seg(MIB - 1, 2), seg(5 * MIB, MIB)];
        assert_eq!(
            blocks_to_allocate(&segs, 8, MIB, false),
            [(0, false), (1, false), (5, false)]
        );
    }

    #[test]
    fn lazy_zeroed_files_allocate_every_block_and_mark_the_empty_ones() {
        let segs = [seg(2 * MIB + 5, 10)];
        let got = blocks_to_allocate(&segs, 4, MIB, true);
        assert_eq!(got, [(0, true), (1, true), (2, false), (3, true)]);
        assert_eq!(
            blocks_to_allocate(&[], 2, MIB, true),
            [(0, true), (1, true)]
        );
    }

    fn opts(size: Option<u64>, extent_size: Option<u64>, extents: usize) -> Options {
        Options {
            vmfs: 5,
            block_size: MIB,
            size,
            label: String::new(),
            layout: crate::Layout::Bare,
            lazy_zeroed: Vec::new(),
            src: PathBuf::new(),
            image: PathBuf::from("a.img"),
            extents: (0..extents)
                .map(|i| PathBuf::from(format!("{i}.img")))
                .collect(),
            extent_size,
        }
    }

    #[test]
    fn extents_split_evenly_or_follow_the_sizes_given() {
        assert_eq!(device_pes(&opts(None, None, 1), 2, 3).unwrap(), [2, 1]);
        assert_eq!(device_pes(&opts(None, None, 2), 3, 1).unwrap(), [1, 1, 1]);
        assert_eq!(device_pes(&opts(None, None, 0), 1, 4).unwrap(), [4]);
        // 300 MiB partitions hold one PE, 600 MiB two.
        let (one, two) = (Some(300 * MIB), Some(600 * MIB));
        assert_eq!(device_pes(&opts(one, two, 2), 3, 1).unwrap(), [1, 2, 2]);
        assert_eq!(device_pes(&opts(one, None, 1), 2, 1).unwrap(), [1, 1]);
        assert_eq!(device_pes(&opts(None, two, 1), 2, 5).unwrap(), [3, 2]);
        assert_eq!(device_pes(&opts(None, two, 1), 2, 1).unwrap(), [1, 2]);
        assert!(device_pes(&opts(None, Some(100 * MIB), 1), 2, 1).is_err());
        let small = device_pes(&opts(Some(100 * MIB), None, 0), 1, 1).unwrap_err();
        assert!(small.to_string().contains("--size"), "{small}");
    }

    #[test]
    fn garbage_has_no_zero_byte() {
        assert!(garbage_block(MIB).iter().all(|&b| b != 0));
    }
}
