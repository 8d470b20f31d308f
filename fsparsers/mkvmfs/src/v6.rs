//! VMFS6 writer.
//!
//! Lays a host tree out as a VMFS6 volume the way ESXi 6.5+ formats one (see
//! docs/formats/vmfs.md, "mkvmfs VMFS6"):
//!
//! ```text
//! partition  0 MiB   (empty)
//!            1 MiB   LVM6 device header, volume table, PE bitmap/table
//!           17 MiB   logical volume ("device") = 256 MiB segments
//! device     0       .vh.sf   SFBs 0..7: FS3 descriptor at 2 MiB, 1024 heartbeats at 3 MiB
//!            7 MiB   .fdc.sf, then .fbb.sf .pbc.sf .sbc.sf .pb2.sf .jbc.sf, root, .sdd.sf
//!            …       SFBs for data, growing up from the metadata
//!            …       LFBs for thick files, taken from the highest whole 512 MiB regions
//! ```
//!
//! Files are stored as ESXi would: resident in the descriptor up to 3.5 KiB, one 64 KiB
//! sub-block up to 64 KiB, then 1 MiB SFBs, directly addressed while there are at most 320
//! blocks and no interior hole, else through 64 KiB pointer blocks (held in `.sbc.sf`, as on
//! VMFS6). Lazy-zeroed files get every block, LFBs for whole 512 MiB chunks, and to-be-zeroed
//! addresses over garbage where the source has no data.
//!
//! With `--extent` the logical volume spans several images: each gets its own LVM6 header
//! (own device UUID and segment range, shared volume metadata) and the layout above is planned
//! over the whole volume, writes being split at device boundaries ([`crate::lvm::LogicalVolume`]).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, ensure};

use crate::Options;
use crate::layout::{self, Volume};
use crate::lvm::{DeviceExtent, LogicalVolume, SpannedVolume, VmwareUuid};
use crate::tree::{Kind, Node, Segment, Tree};
use crate::v6_dir::{self, DirEntryIn};
use crate::v6_format::*;

/// Resource index of each system file (FD cluster 0), in the order ESXi creates them.
const SYSTEM_FILES: [&str; 8] = [
    ".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".sdd.sf", ".jbc.sf",
];
const FD_FBB: u32 = 1;
const FD_FDC: u32 = 2;
const FD_PBC: u32 = 3;
const FD_SBC: u32 = 4;
const FD_VH: u32 = 5;
const FD_PB2: u32 = 6;
const FD_SDD: u32 = 7;
const FD_JBC: u32 = 8;
/// First FD resource index for user files.
const FIRST_USER_FD: u32 = 9;
/// FDs per cluster and clusters per group of `.fdc.sf` (ESXi's values).
const FD_PER_CLUSTER: u32 = 256;
const FD_CLUSTERS_PER_GROUP: u32 = 8;
/// Sub-blocks per cluster; vmfs6-tools decodes at most 256 sub-block clusters.
const SB_PER_CLUSTER: u32 = 256;
const SB_MAX_CLUSTERS: u64 = 256;
/// Largest directory stored in sub-blocks (the 320-entry direct array of 64 KiB blocks).
const DIR_SB_MAX: u64 = FD_MAX_ADDRS as u64 * SUB_BLOCK_SIZE;
/// Bytes of garbage written at each spot of a to-be-zeroed block.
const GARBAGE_LEN: usize = 4096;

/// Where one 1 MiB slot of a file lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// SFB number; `tbz` = no data (garbage underneath, to be zeroed).
    Sfb { block: u64, tbz: bool },
    /// LFB number; every one of its 512 slots points at it.
    Lfb { lfb: u64, tbz: bool },
}

/// How a file's bytes are kept.
#[derive(Debug)]
enum Storage {
    Resident(Vec<u8>),
    /// Up to one sub-block index (`None`: all hole).
    SubBlock(Option<u64>),
    /// 1 MiB slots, addressed directly or through pointer blocks.
    Blocks {
        /// Slots in the file (the logical size in MiB, rounded up).
        nslots: u64,
        /// The allocated slots, sorted by index; the others are holes. A lazy-zeroed file
        /// holds every slot, so there the position in this list is the slot index.
        slots: Vec<(u64, Slot)>,
        lazy: bool,
        ind: Indirection,
    },
    /// Directory data in sub-blocks.
    DirSubBlocks(Vec<u64>),
    /// Directory data in SFBs.
    DirSfbs(Vec<u64>),
}

/// How the slots of a file are reached from its descriptor.
#[derive(Debug)]
enum Indirection {
    /// The address array holds the slots (at most 320).
    Direct,
    /// Pointer blocks, one per 8192 slots (8 GiB) holding data: sub-block index or `None`.
    Single(Vec<Option<u64>>),
    /// Two levels (ZLA 0x10d0): `top` per 8192 × 8192 slots, `leaves` (by leaf number) per
    /// 8192 slots holding data.
    Double {
        top: Vec<Option<u64>>,
        leaves: BTreeMap<u64, u64>,
    },
}

/// One FD to write.
struct Item<'a> {
    node: Option<&'a Node>,
    fd: u32,
    parent_fd: u32,
    fd_type: u32,
    /// Directory file contents (directories only).
    dir: Option<Vec<u8>>,
    storage: Storage,
}

/// A system file placed at `start` SFB for `len` bytes.
#[derive(Clone, Copy, Debug)]
struct SysFile {
    start: u64,
    len: u64,
}

impl SysFile {
    fn sfbs(&self) -> u64 {
        self.len.div_ceil(SFB_SIZE)
    }
    fn dev(&self, off: u64) -> u64 {
        self.start * SFB_SIZE + off
    }
}

fn fd_address(index: u32) -> u32 {
    fd_addr(index / FD_PER_CLUSTER, index % FD_PER_CLUSTER)
}

/// Writes `tree` as a VMFS6 volume into `image`.
pub fn write(opts: &Options, tree: &Tree, image: &Path) -> Result<()> {
    ensure!(
        opts.block_size == SFB_SIZE,
        "VMFS6 uses 1 MiB small file blocks (and 512 MiB large ones); --block-size {} is not \
         possible",
        opts.block_size
    );
    ensure!(
        opts.label.len() < 128,
        "label of {} bytes is too long (at most 127)",
        opts.label.len()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    // 1. Flatten the tree: FD indices in walk order (parents first).
    let mut nodes: Vec<&Node> = Vec::new();
    tree.walk(&mut |n| nodes.push(n));
    ensure!(
        !nodes.is_empty() && nodes[0].rel_path.is_empty(),
        "tree walk does not start at the root"
    );
    let mut index_of: HashMap<*const Node, u32> = HashMap::new();
    for (i, n) in nodes.iter().enumerate().skip(1) {
        index_of.insert(*n as *const Node, FIRST_USER_FD + i as u32 - 1);
    }
    let fd_count = FIRST_USER_FD as u64 + nodes.len() as u64 - 1;
    let fd_groups = fd_count.div_ceil(u64::from(FD_PER_CLUSTER * FD_CLUSTERS_PER_GROUP));
    ensure!(
        fd_groups * u64::from(FD_CLUSTERS_PER_GROUP) <= 0xffff,
        "{fd_count} files do not fit 65536 descriptor clusters"
    );

    // 2. Directory contents.
    let mut parent_of: HashMap<u32, u32> = HashMap::new();
    let mut dirs: HashMap<u32, Vec<u8>> = HashMap::new();
    for n in &nodes {
        let Kind::Dir(children) = &n.kind else {
            continue;
        };
        let self_fd = if n.rel_path.is_empty() {
            0
        } else {
            index_of[&(*n as *const Node)]
        };
        let in_root = self_fd == 0;
        let mut entries = Vec::new();
        if in_root {
            for (i, name) in SYSTEM_FILES.iter().enumerate() {
                entries.push(DirEntryIn {
                    name: name.as_bytes().to_vec(),
                    fd_type: TYPE_SYSFILE,
                    fd_addr: fd_address(FD_FBB + i as u32),
                    system_slot: Some(v6_dir::system_slot(i as u16)),
                });
            }
        }
        for c in children {
            let idx = index_of[&(c as *const Node)];
            parent_of.insert(idx, self_fd);
            entries.push(DirEntryIn {
                name: c.name_bytes().to_vec(),
                fd_type: node_type(c),
                fd_addr: fd_address(idx),
                system_slot: None,
            });
        }
        let parent = if in_root { 0 } else { parent_of[&self_fd] };
        let buf = v6_dir::build(
            &entries,
            fd_address(self_fd),
            TYPE_DIRECTORY,
            fd_address(parent),
            TYPE_DIRECTORY,
            in_root,
        )
        .with_context(|| format!("directory /{}", n.rel_path))?;
        dirs.insert(self_fd, buf);
    }
    let sdd_dir = v6_dir::build(
        &[],
        fd_address(FD_SDD),
        TYPE_SYSFILE,
        fd_address(0),
        TYPE_DIRECTORY,
        false,
    )?;

    // 3. Storage plans (block numbers are assigned later).
    let mut items: Vec<Item> = Vec::with_capacity(nodes.len());
    let mut sb_needed: u64 = 0;
    let mut sfb_data: u64 = 0;
    let mut lfb_chunks: u64 = 0;
    for n in &nodes {
        let fd = if n.rel_path.is_empty() {
            0
        } else {
            index_of[&(*n as *const Node)]
        };
        let parent_fd = parent_of.get(&fd).copied().unwrap_or(0);
        let (fd_type, dir, storage) = match &n.kind {
            Kind::Dir(_) => {
                let buf = dirs.remove(&fd).unwrap_or_default();
                let st = if fd != 0 && (buf.len() as u64) <= DIR_SB_MAX {
                    let k = (buf.len() as u64).div_ceil(SUB_BLOCK_SIZE);
                    sb_needed += k;
                    Storage::DirSubBlocks(Vec::with_capacity(k as usize))
                } else {
                    sfb_data += (buf.len() as u64).div_ceil(SFB_SIZE);
                    Storage::DirSfbs(Vec::new())
                };
                (TYPE_DIRECTORY, Some(buf), st)
            }
            Kind::Symlink(target) => {
                ensure!(
                    target.len() as u64 <= RESIDENT_MAX,
                    "symlink /{} target of {} bytes is longer than {RESIDENT_MAX}",
                    n.rel_path,
                    target.len()
                );
                (TYPE_SYMLINK, None, Storage::Resident(target.clone()))
            }
            Kind::File {
                size,
                segments,
                lazy_zeroed,
            } => {
                let st = plan_file(n, *size, segments, *lazy_zeroed)?;
                match &st {
                    Storage::SubBlock(Some(_)) => sb_needed += 1,
                    Storage::Blocks {
                        nslots,
                        slots,
                        lazy,
                        ind,
                    } => {
                        // LFB candidates are provisionally counted as SFBs too.
                        sfb_data += slots.len() as u64;
                        if *lazy {
                            lfb_chunks += nslots / SFBS_PER_LFB;
                        }
                        sb_needed += match ind {
                            Indirection::Direct => 0,
                            Indirection::Single(p) => p.iter().flatten().count() as u64,
                            Indirection::Double { top, leaves } => {
                                top.iter().flatten().count() as u64 + leaves.len() as u64
                            }
                        };
                    }
                    _ => {}
                }
                (TYPE_REGFILE, None, st)
            }
        };
        items.push(Item {
            node: Some(n),
            fd,
            parent_fd,
            fd_type,
            dir,
            storage,
        });
    }

    // 4. Resource files.
    let sb_clusters = sb_needed.div_ceil(u64::from(SB_PER_CLUSTER)).max(1);
    ensure!(
        sb_clusters <= SB_MAX_CLUSTERS,
        "{sb_needed} sub-blocks (small files, directories, pointer blocks) exceed the 65536 \
         that vmfs6-tools can address"
    );
    let fdc_meta = ResMeta::flat(
        fd_groups * u64::from(FD_PER_CLUSTER * FD_CLUSTERS_PER_GROUP),
        FD_SIZE,
        FD_PER_CLUSTER,
        FD_CLUSTERS_PER_GROUP,
    );
    let sbc_meta = ResMeta::flat(
        sb_clusters * u64::from(SB_PER_CLUSTER),
        SUB_BLOCK_SIZE,
        SB_PER_CLUSTER,
        1,
    );
    let pbc_meta = ResMeta {
        clusters_per_group: 8,
        cluster_group_offset: 0x10000,
        resource_size: SUB_BLOCK_SIZE as u32,
        cluster_group_size: SUB_BLOCK_SIZE as u32,
        flags: 4,
        affinity: 1 << 16,
        bits_per_resource: 1,
        ..ResMeta::default()
    };
    // One secondary pointer block addresses `.sbc.sf` (8192 SFBs = 8 GiB, beyond the 256
    // sub-block clusters vmfs6-tools can decode), as on ESXi. The file ends after that one
    // resource, as ESXi's does.
    let pb2_meta = ResMeta::flat(1, SUB_BLOCK_SIZE, 32, 8);
    let pb2_len = pb2_meta.resource_offset(0, 0) + SUB_BLOCK_SIZE;
    let mut jbc_meta = ResMeta::flat(8, 2 * MIB, 8, 1);
    jbc_meta.flags = 0;

    // 5. Volume size.
    let meta_sfbs_without_fbb = VH_SFBS
        + fdc_meta.file_len().div_ceil(SFB_SIZE)
        + pbc_meta.file_len().max(0x10000).div_ceil(SFB_SIZE)
        + sbc_meta.file_len().div_ceil(SFB_SIZE)
        + pb2_len.div_ceil(SFB_SIZE)
        + jbc_meta.file_len().div_ceil(SFB_SIZE)
        + planned_root_sfbs(&items)
        + 1;
    let segments_needed = {
        // fbb: at most a few SFBs; 64 SFBs of slack for it and rounding.
        let sfb_total = meta_sfbs_without_fbb + 4 + sfb_data + 64;
        let dev_sfbs = if lfb_chunks > 0 {
            (sfb_total - lfb_chunks * SFBS_PER_LFB).div_ceil(SFBS_PER_LFB) * SFBS_PER_LFB
                + lfb_chunks * SFBS_PER_LFB
        } else {
            sfb_total
        };
        (dev_sfbs * SFB_SIZE).div_ceil(PE_SIZE).max(1)
    };
    let images: Vec<&Path> = std::iter::once(image)
        .chain(opts.extents.iter().map(std::path::PathBuf::as_path))
        .collect();
    // Partition length and 256 MiB segments of each device, in volume order.
    let devices: Vec<(u64, u64)> = if images.len() == 1 {
        let partition_len = opts
            .partition_len()?
            .unwrap_or(LVM_DATA_OFFSET + segments_needed * PE_SIZE);
        ensure!(
            partition_len >= LVM_DATA_OFFSET + PE_SIZE,
            "a VMFS6 partition needs at least {} MiB (17 MiB of LVM header and one 256 MiB \
             segment); got {} bytes",
            (LVM_DATA_OFFSET + PE_SIZE) / MIB,
            partition_len
        );
        vec![(partition_len, (partition_len - LVM_DATA_OFFSET) / PE_SIZE)]
    } else {
        let pes = crate::v5::device_pes(opts, images.len() as u64, segments_needed)?;
        let head_partition = opts.partition_len()?;
        let extent_partition = opts.extent_partition_len()?;
        pes.iter()
            .enumerate()
            .map(|(i, &n)| {
                let fixed = if i == 0 {
                    head_partition
                } else {
                    extent_partition
                };
                (fixed.unwrap_or(LVM_DATA_OFFSET + n * PE_SIZE), n)
            })
            .collect()
    };
    let segments: u64 = devices.iter().map(|&(_, n)| n).sum();
    let dev_sfbs = segments * PE_SIZE / SFB_SIZE;
    let num_lfbs = dev_sfbs.div_ceil(SFBS_PER_LFB);
    let full_regions = dev_sfbs / SFBS_PER_LFB;

    // .fbb.sf: LFBs (parent) with SFB clusters (child) carved out of them.
    let lfb_groups = num_lfbs.div_ceil(16 * 8);
    let fbb_meta = ResMeta {
        resources_per_cluster: 16,
        clusters_per_group: 8,
        cluster_group_offset: 0x10000,
        resource_size: 2 * MD_ALIGN as u32,
        cluster_group_size: (0x10000 + 8 * 16 * 2 * MD_ALIGN) as u32,
        num_resources: num_lfbs as u32,
        num_cluster_groups: lfb_groups as u32,
        flags: 0x35,
        affinity: 0x0034_0348,
        bits_per_resource: 3,
        child_meta_offset: 0x1000,
        ..ResMeta::default()
    };

    // 6. Metadata placement (contiguous from SFB 0).
    let mut cursor = 0u64;
    let mut place = |len: u64| {
        let f = SysFile { start: cursor, len };
        cursor += f.sfbs().max(1);
        f
    };
    let vh = place(VH_SFBS * SFB_SIZE);
    let fdc = place(fdc_meta.file_len());
    debug_assert_eq!(fdc.start, FDC_FIRST_SFB);
    let fbb = place(fbb_meta.file_len());
    let pbc = place(0x10000);
    let sbc = place(sbc_meta.file_len());
    let pb2 = place(pb2_len);
    let jbc = place(jbc_meta.file_len());
    let root_len = items[0].dir.as_ref().map_or(0, |d| d.len() as u64);
    let root = place(root_len);
    let sdd = place(sdd_dir.len() as u64);
    let meta_end = cursor;

    // 7. Allocation: SFBs upward from the metadata, LFBs from the highest whole regions down.
    let sfb_regions_needed = (meta_end + sfb_data - lfb_chunks * SFBS_PER_LFB)
        .div_ceil(SFBS_PER_LFB)
        .max(1);
    let mut lfb_avail = full_regions.saturating_sub(sfb_regions_needed);
    let mut alloc = Alloc {
        next_sfb: meta_end,
        sfb_limit: dev_sfbs,
        next_lfb_down: full_regions,
        next_sb: 0,
        sb_limit: sb_clusters * u64::from(SB_PER_CLUSTER),
        owners: vec![0u32; dev_sfbs as usize],
        lfb_owner: vec![None; num_lfbs as usize],
    };
    for (file, f) in [
        (FD_VH, vh),
        (FD_FDC, fdc),
        (FD_FBB, fbb),
        (FD_PBC, pbc),
        (FD_SBC, sbc),
        (FD_PB2, pb2),
        (FD_JBC, jbc),
        (0, root),
        (FD_SDD, sdd),
    ] {
        for s in f.start..f.start + f.sfbs().max(1) {
            ensure!(
                s < dev_sfbs,
                "volume of {dev_sfbs} MiB is too small for the metadata"
            );
            alloc.owners[s as usize] = fd_address(file);
        }
    }
    for item in &mut items {
        allocate(item, &mut alloc, root, &mut lfb_avail)?;
    }

    // 8. Write.
    let fs_uuid = Uuid::generate(now as u32);
    let lvm_uuid = Uuid::generate(now as u32);
    let mut first_pe = 0;
    let span = SpannedVolume {
        major_version: 6,
        minor_version: 0x15,
        volume_uuid: VmwareUuid(lvm_uuid.0),
        time_us: now * 1_000_000,
        devices: devices
            .iter()
            .zip(&images)
            .map(|(&(_, num_pes), img)| {
                let d = DeviceExtent {
                    device_uuid: VmwareUuid(Uuid::generate(now as u32).0),
                    first_pe,
                    num_pes,
                    name: if images.len() == 1 {
                        "mkvmfs".into()
                    } else {
                        crate::v5::device_name(img, images.len())
                    },
                };
                first_pe += num_pes;
                d
            })
            .collect(),
    };
    let mut vols = Vec::with_capacity(images.len());
    for (i, (img, &(partition_len, _))) in images.iter().zip(&devices).enumerate() {
        let vol = layout::create(img, opts.layout, partition_len)
            .with_context(|| format!("create image {}", img.display()))?;
        write_lvm(&vol, &span, i).with_context(|| format!("LVM header of {}", img.display()))?;
        vols.push(vol);
    }
    let lv = LogicalVolume::new(&span, &vols)?;
    let dev = Dev { vol: &lv };

    let fd_dev = |index: u32| -> u64 {
        fdc.dev(fdc_meta.resource_offset(
            u64::from(index / FD_PER_CLUSTER),
            u64::from(index % FD_PER_CLUSTER),
        ))
    };
    write_descriptor(
        &dev,
        opts,
        fs_uuid,
        lvm_uuid,
        now,
        fd_dev(FD_PB2),
        fd_dev(FD_SDD),
    )?;
    for i in 0..HEARTBEAT_COUNT {
        let mut hb = [0u8; 16];
        put_u32(&mut hb, 0, HEARTBEAT_MAGIC_OFF);
        put_u64(&mut hb, 4, HEARTBEAT_OFFSET + i * HEARTBEAT_SIZE);
        dev.write(HEARTBEAT_OFFSET + i * HEARTBEAT_SIZE, &hb)?;
    }

    // Resource files: headers and cluster metadata.
    let fd_used = |c: u64, r: u64| c * u64::from(FD_PER_CLUSTER) + r < fd_count;
    write_flat_resource(&dev, fdc, &fdc_meta, restype::FD, &fd_used)?;
    let sb_used_count = alloc.next_sb;
    write_flat_resource(&dev, sbc, &sbc_meta, restype::SB, &|c, r| {
        c * u64::from(SB_PER_CLUSTER) + r < sb_used_count
    })?;
    write_flat_resource(&dev, pbc, &pbc_meta, restype::PB, &|_, _| false)?;
    write_flat_resource(&dev, pb2, &pb2_meta, restype::PB2, &|c, r| c == 0 && r == 0)?;
    ensure!(
        sbc.sfbs() <= PB_ENTRIES,
        ".sbc.sf of {} bytes is more than one secondary pointer block addresses",
        sbc.len
    );
    let mut sbc_pb2 = vec![0u8; SUB_BLOCK_SIZE as usize];
    for (k, b) in (sbc.start..sbc.start + sbc.sfbs()).enumerate() {
        put_u64(&mut sbc_pb2, k * 8, sfb_addr(b, 0));
    }
    dev.write(pb2.dev(pb2_meta.resource_offset(0, 0)), &sbc_pb2)?;
    write_flat_resource(&dev, jbc, &jbc_meta, restype::JB, &|_, _| false)?;
    write_fbb(&dev, fbb, &fbb_meta, dev_sfbs, &alloc)?;

    // System file descriptors.
    let sys_fd = |index: u32, f: SysFile, mode: u32, links: u32| -> Vec<u8> {
        let blocks = f.sfbs().max(1);
        let addrs: Vec<u64> = (f.start..f.start + blocks)
            .map(|b| sfb_addr(b, 0))
            .collect();
        let meta = FdMeta {
            addr: fd_address(index),
            links,
            fd_type: TYPE_SYSFILE,
            length: f.len,
            block_size: SFB_SIZE,
            num_blocks: blocks,
            mtime: now as u32,
            ctime: now as u32,
            atime: now as u32,
            mode,
            zla: ZLA_FILE_BLOCK,
            parent: fd_address(0),
            ..FdMeta::default()
        };
        if index == FD_SBC {
            // Behind secondary pointer block 0 (ZLA 5), like ESXi's `.sbc.sf`.
            let meta = FdMeta {
                zla: ZLA_POINTER2_BLOCK,
                pointer_blocks: 1,
                ..meta
            };
            return file_descriptor(&meta, fd_dev(index), &[pb2_addr(0, 0)], &[]);
        }
        file_descriptor(&meta, fd_dev(index), &addrs, &[])
    };
    for (index, f, mode, links) in [
        (FD_FBB, fbb, 0o400, 1),
        (FD_FDC, fdc, 0o400, 1),
        (FD_PBC, pbc, 0o400, 1),
        (FD_SBC, sbc, 0o400, 1),
        (FD_VH, vh, 0o400, 1),
        (FD_PB2, pb2, 0o400, 1),
        (FD_SDD, sdd, 0o40700, 2),
        (FD_JBC, jbc, 0o400, 1),
    ] {
        ensure!(
            f.sfbs() <= FD_MAX_ADDRS as u64 || index == FD_SBC,
            "system file {} of {} bytes needs more than {FD_MAX_ADDRS} direct blocks",
            SYSTEM_FILES[index as usize - 1],
            f.len
        );
        dev.write(fd_dev(index), &sys_fd(index, f, mode, links))?;
    }
    dev.write(sdd.dev(0), &sdd_dir)?;

    // User files, directories and the root.
    let mut writer = FdWriter {
        dev: &dev,
        fdc,
        fdc_meta,
        sbc,
        sbc_meta,
        garbage_seed: crate::random_u64(),
    };
    for item in &items {
        write_item(&mut writer, item)?;
    }

    drop(lv);
    for vol in vols {
        vol.finish()?;
    }
    Ok(())
}

/// Gives `item` its blocks: SFBs, LFBs (lazy-zeroed whole chunks while `lfb_avail` lasts)
/// and sub-blocks (small files, directories, pointer blocks).
fn allocate(item: &mut Item, alloc: &mut Alloc, root: SysFile, lfb_avail: &mut u64) -> Result<()> {
    let owner = fd_address(item.fd);
    match &mut item.storage {
        Storage::Resident(_) => {}
        Storage::SubBlock(sb) => {
            if sb.is_some() {
                *sb = Some(alloc.sb()?);
            }
        }
        Storage::DirSubBlocks(v) => {
            let len = item.dir.as_ref().map_or(0, |d| d.len() as u64);
            for _ in 0..len.div_ceil(SUB_BLOCK_SIZE) {
                v.push(alloc.sb()?);
            }
        }
        Storage::DirSfbs(v) => {
            if item.fd == 0 {
                v.extend(root.start..root.start + root.sfbs());
            } else {
                let len = item.dir.as_ref().map_or(0, |d| d.len() as u64);
                for _ in 0..len.div_ceil(SFB_SIZE) {
                    v.push(alloc.sfb(owner)?);
                }
            }
        }
        Storage::Blocks {
            nslots,
            slots,
            lazy,
            ind,
        } => {
            let per = SFBS_PER_LFB as usize;
            let mut p = 0usize;
            while p < slots.len() {
                let i = slots[p].0;
                // Lazy files hold every slot, so slots[p..p + 512] are i..i + 512.
                if *lazy
                    && i.is_multiple_of(SFBS_PER_LFB)
                    && i + SFBS_PER_LFB <= *nslots
                    && *lfb_avail > 0
                {
                    *lfb_avail -= 1;
                    let lfb = alloc.lfb(owner)?;
                    let tbz = slots[p..p + per]
                        .iter()
                        .all(|(_, s)| matches!(s, Slot::Sfb { tbz: true, .. }));
                    for e in &mut slots[p..p + per] {
                        e.1 = Slot::Lfb { lfb, tbz };
                    }
                    p += per;
                    continue;
                }
                if let Slot::Sfb { block, .. } = &mut slots[p].1 {
                    *block = alloc.sfb(owner)?;
                }
                p += 1;
            }
            match ind {
                Indirection::Direct => {}
                Indirection::Single(pbs) => {
                    for pb in pbs.iter_mut().flatten() {
                        *pb = alloc.sb()?;
                    }
                }
                Indirection::Double { top, leaves } => {
                    for pb in top.iter_mut().flatten() {
                        *pb = alloc.sb()?;
                    }
                    for pb in leaves.values_mut() {
                        *pb = alloc.sb()?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Where descriptors and sub-blocks live, for writing user files.
struct FdWriter<'a> {
    dev: &'a Dev<'a>,
    fdc: SysFile,
    fdc_meta: ResMeta,
    sbc: SysFile,
    sbc_meta: ResMeta,
    garbage_seed: u64,
}

impl FdWriter<'_> {
    fn fd_dev(&self, index: u32) -> u64 {
        self.fdc.dev(self.fdc_meta.resource_offset(
            u64::from(index / FD_PER_CLUSTER),
            u64::from(index % FD_PER_CLUSTER),
        ))
    }

    fn sb_dev(&self, sb: u64) -> u64 {
        let per = u64::from(SB_PER_CLUSTER);
        self.sbc
            .dev(self.sbc_meta.resource_offset(sb / per, sb % per))
    }

    fn sb_address(&self, sb: u64) -> u64 {
        let per = u64::from(SB_PER_CLUSTER);
        sb_addr(sb / per, sb % per)
    }
}

/// Writes the data of `item` (file blocks, sub-blocks, pointer blocks, directory blocks,
/// garbage under TBZ blocks) and its file descriptor.
fn write_item(w: &mut FdWriter, item: &Item) -> Result<()> {
    let n = item.node;
    let mut meta = FdMeta {
        addr: fd_address(item.fd),
        links: 1,
        fd_type: item.fd_type,
        parent: if item.fd == 0 {
            0
        } else {
            fd_address(item.parent_fd)
        },
        ..FdMeta::default()
    };
    if let Some(n) = n {
        meta.mtime = clamp_time(n.mtime);
        meta.ctime = clamp_time(n.ctime);
        meta.atime = clamp_time(n.atime);
        meta.uid = n.uid;
        meta.gid = n.gid;
        meta.mode = n.mode & 0o7777;
    }
    let mut addrs: Vec<u64> = Vec::new();
    let mut resident: &[u8] = &[];
    match &item.storage {
        Storage::Resident(data) => {
            meta.zla = ZLA_RESIDENT;
            meta.block_size = SUB_BLOCK_SIZE;
            meta.length = n.map_or(0, |n| match &n.kind {
                Kind::File { size, .. } => *size,
                _ => data.len() as u64,
            });
            resident = data;
        }
        Storage::SubBlock(sb) => {
            meta.zla = ZLA_SUB_BLOCK;
            meta.block_size = SUB_BLOCK_SIZE;
            meta.length = file_size(n);
            if let (Some(sb), Some(n)) = (sb, n) {
                meta.num_blocks = 1;
                addrs.push(w.sb_address(*sb));
                copy_range(w.dev, n, 0, meta.length, w.sb_dev(*sb))?;
            }
        }
        Storage::DirSubBlocks(sbs) => {
            let buf = item.dir.as_deref().unwrap_or(&[]);
            meta.zla = ZLA_SUB_BLOCK;
            meta.block_size = SUB_BLOCK_SIZE;
            meta.length = buf.len() as u64;
            meta.num_blocks = sbs.len() as u64;
            for (k, sb) in sbs.iter().enumerate() {
                let part = &buf[k * SUB_BLOCK_SIZE as usize..]
                    [..(buf.len() - k * SUB_BLOCK_SIZE as usize).min(SUB_BLOCK_SIZE as usize)];
                w.dev.write_nonzero(w.sb_dev(*sb), part)?;
                addrs.push(w.sb_address(*sb));
            }
        }
        Storage::DirSfbs(sfbs) => {
            let buf = item.dir.as_deref().unwrap_or(&[]);
            meta.zla = ZLA_FILE_BLOCK;
            meta.block_size = SFB_SIZE;
            meta.length = buf.len() as u64;
            meta.num_blocks = sfbs.len() as u64;
            ensure!(sfbs.len() <= FD_MAX_ADDRS, "directory too large");
            for (k, b) in sfbs.iter().enumerate() {
                let part = &buf[k * SFB_SIZE as usize..]
                    [..(buf.len() - k * SFB_SIZE as usize).min(SFB_SIZE as usize)];
                w.dev.write_nonzero(b * SFB_SIZE, part)?;
                addrs.push(sfb_addr(*b, 0));
            }
        }
        Storage::Blocks {
            nslots, slots, ind, ..
        } => {
            let n = n.context("file without a node")?;
            meta.block_size = SFB_SIZE;
            meta.length = file_size(Some(n));
            let segments = match &n.kind {
                Kind::File { segments, .. } => segments.as_slice(),
                _ => &[],
            };
            // Data and garbage.
            let mut last_lfb = None;
            for &(i, s) in slots {
                match s {
                    Slot::Sfb { block, tbz } => {
                        meta.num_blocks += 1;
                        if tbz {
                            meta.tbz_blocks += 1;
                            write_garbage(w.dev, block * SFB_SIZE, SFB_SIZE, &mut w.garbage_seed)?;
                        } else {
                            let start = i * SFB_SIZE;
                            copy_segments(w.dev, n, segments, start, SFB_SIZE, block * SFB_SIZE)?;
                        }
                    }
                    Slot::Lfb { lfb, tbz } => {
                        if last_lfb == Some(lfb) {
                            continue;
                        }
                        last_lfb = Some(lfb);
                        meta.num_blocks += 1;
                        meta.lfbs += 1;
                        if tbz {
                            meta.tbz_blocks += 1;
                            write_garbage(w.dev, lfb * LFB_SIZE, LFB_SIZE, &mut w.garbage_seed)?;
                        } else {
                            let start = i * SFB_SIZE;
                            copy_segments(w.dev, n, segments, start, LFB_SIZE, lfb * LFB_SIZE)?;
                        }
                    }
                }
            }
            // Pointer block `k` of a level holds the entries for slots k*8192..
            let leaf = |k: u64| -> Vec<u8> {
                let lo = slots.partition_point(|(i, _)| *i < k * PB_ENTRIES);
                let hi = slots.partition_point(|(i, _)| *i < (k + 1) * PB_ENTRIES);
                let mut buf = vec![0u8; SUB_BLOCK_SIZE as usize];
                for (i, s) in &slots[lo..hi] {
                    put_u64(&mut buf, ((i - k * PB_ENTRIES) * 8) as usize, slot_addr(*s));
                }
                buf
            };
            match ind {
                Indirection::Direct => {
                    meta.zla = ZLA_FILE_BLOCK;
                    addrs = vec![0; *nslots as usize];
                    for (i, s) in slots {
                        addrs[*i as usize] = slot_addr(*s);
                    }
                }
                Indirection::Single(pbs) => {
                    meta.zla = ZLA_POINTER_BLOCK;
                    for (k, pb) in pbs.iter().enumerate() {
                        let Some(sb) = pb else {
                            addrs.push(0);
                            continue;
                        };
                        meta.pointer_blocks += 1;
                        w.dev.write_nonzero(w.sb_dev(*sb), &leaf(k as u64))?;
                        addrs.push(w.sb_address(*sb));
                    }
                }
                Indirection::Double { top, leaves } => {
                    meta.zla = ZLA_POINTER_BLOCK_DOUBLE;
                    for (&k, &sb) in leaves {
                        meta.pointer_blocks += 1;
                        w.dev.write_nonzero(w.sb_dev(sb), &leaf(k))?;
                    }
                    for (t, pb) in top.iter().enumerate() {
                        let Some(sb) = pb else {
                            addrs.push(0);
                            continue;
                        };
                        meta.pointer_blocks += 1;
                        let t = t as u64;
                        let mut buf = vec![0u8; SUB_BLOCK_SIZE as usize];
                        for (&k, &leaf_sb) in leaves.range(t * PB_ENTRIES..(t + 1) * PB_ENTRIES) {
                            put_u64(
                                &mut buf,
                                ((k - t * PB_ENTRIES) * 8) as usize,
                                w.sb_address(leaf_sb),
                            );
                        }
                        w.dev.write_nonzero(w.sb_dev(*sb), &buf)?;
                        addrs.push(w.sb_address(*sb));
                    }
                }
            }
            while addrs.last() == Some(&0) {
                addrs.pop();
            }
        }
    }
    if item.fd_type == TYPE_DIRECTORY {
        let subdirs = n.map_or(0, |n| n.children().iter().filter(|c| c.is_dir()).count());
        meta.links = 2 + subdirs as u32;
        if item.fd == 0 {
            meta.links += 1; // .sdd.sf
            meta.mode = 0o1755;
        }
    }
    w.dev.write(
        w.fd_dev(item.fd),
        &file_descriptor(&meta, w.fd_dev(item.fd), &addrs, resident),
    )?;
    Ok(())
}

fn clamp_time(t: i64) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

fn file_size(n: Option<&Node>) -> u64 {
    match n.map(|n| &n.kind) {
        Some(Kind::File { size, .. }) => *size,
        _ => 0,
    }
}

fn node_type(n: &Node) -> u32 {
    match n.kind {
        Kind::Dir(_) => TYPE_DIRECTORY,
        Kind::File { .. } => TYPE_REGFILE,
        Kind::Symlink(_) => TYPE_SYMLINK,
    }
}

/// SFBs the root directory will take (it is always kept in SFBs, like ESXi's).
fn planned_root_sfbs(items: &[Item]) -> u64 {
    items
        .first()
        .and_then(|i| i.dir.as_ref())
        .map_or(1, |d| (d.len() as u64).div_ceil(SFB_SIZE))
}

/// Decides how a regular file is stored.
fn plan_file(n: &Node, size: u64, segments: &[Segment], lazy: bool) -> Result<Storage> {
    if size <= RESIDENT_MAX && !lazy {
        let mut data = vec![0u8; size as usize];
        if size > 0 && !segments.is_empty() {
            let f = n.open()?;
            for s in segments {
                let end = s.end().min(size);
                if end > s.offset {
                    f.read_exact_at(&mut data[s.offset as usize..end as usize], s.offset)
                        .with_context(|| format!("read {}", n.host_path.display()))?;
                }
            }
        }
        return Ok(Storage::Resident(data));
    }
    if size <= SUB_BLOCK_SIZE && !lazy {
        return Ok(Storage::SubBlock(if segments.is_empty() {
            None
        } else {
            Some(0)
        }));
    }
    let nslots = size.div_ceil(SFB_SIZE);
    // Slots touched by data, in order (segments are sorted and disjoint).
    let mut data: Vec<u64> = Vec::new();
    for seg in segments {
        let end = seg.end().min(size);
        if end <= seg.offset {
            continue;
        }
        let first = seg.offset / SFB_SIZE;
        let last = (end - 1) / SFB_SIZE;
        let from = match data.last() {
            Some(&l) if l >= first => l + 1,
            _ => first,
        };
        data.extend(from..=last);
    }
    let slots: Vec<(u64, Slot)> = if lazy {
        let mut d = data.iter().peekable();
        (0..nslots)
            .map(|i| {
                let has = d.next_if_eq(&&i).is_some();
                (
                    i,
                    Slot::Sfb {
                        block: 0,
                        tbz: !has,
                    },
                )
            })
            .collect()
    } else {
        data.iter()
            .map(|&i| {
                (
                    i,
                    Slot::Sfb {
                        block: 0,
                        tbz: false,
                    },
                )
            })
            .collect()
    };
    // Direct addressing needs no interior holes: vmfs6-tools stops reading the address array
    // at the first zero entry (libvmfs/vmfs_inode.c, vmfs_inode_read), and ESXi itself moves
    // thin files with holes to pointer blocks.
    let interior_hole = slots
        .last()
        .is_some_and(|(l, _)| *l + 1 != slots.len() as u64);
    if nslots <= FD_MAX_ADDRS as u64 && !interior_hole {
        return Ok(Storage::Blocks {
            nslots,
            slots,
            lazy,
            ind: Indirection::Direct,
        });
    }
    let npb = nslots.div_ceil(PB_ENTRIES);
    let ind = if npb <= FD_MAX_ADDRS as u64 {
        let mut pbs = vec![None; npb as usize];
        for (i, _) in &slots {
            pbs[(i / PB_ENTRIES) as usize] = Some(0);
        }
        Indirection::Single(pbs)
    } else {
        let ntop = npb.div_ceil(PB_ENTRIES);
        ensure!(
            ntop <= FD_MAX_ADDRS as u64,
            "/{}: {size} bytes are more than double-indirect pointer blocks address",
            n.rel_path
        );
        let mut top = vec![None; ntop as usize];
        let mut leaves = BTreeMap::new();
        for (i, _) in &slots {
            leaves.insert(i / PB_ENTRIES, 0);
            top[(i / PB_ENTRIES / PB_ENTRIES) as usize] = Some(0);
        }
        Indirection::Double { top, leaves }
    };
    Ok(Storage::Blocks {
        nslots,
        slots,
        lazy,
        ind,
    })
}

fn slot_addr(s: Slot) -> u64 {
    match s {
        Slot::Sfb { block, tbz } => sfb_addr(block, if tbz { 0xff } else { 0 }),
        Slot::Lfb { lfb, tbz } => lfb_addr(lfb, if tbz { 0xff } else { 0 }),
    }
}

/// Block allocator. `owners[sfb]` is the FD address holding an SFB (0 = free).
struct Alloc {
    next_sfb: u64,
    sfb_limit: u64,
    next_lfb_down: u64,
    next_sb: u64,
    sb_limit: u64,
    owners: Vec<u32>,
    lfb_owner: Vec<Option<u32>>,
}

impl Alloc {
    fn sfb(&mut self, owner: u32) -> Result<u64> {
        let limit = if self.lfb_owner.iter().any(Option::is_some) {
            self.sfb_limit.min(self.next_lfb_down * SFBS_PER_LFB)
        } else {
            self.sfb_limit
        };
        ensure!(
            self.next_sfb < limit,
            "volume full: no small file block left ({} MiB volume); give a larger --size",
            self.sfb_limit
        );
        let b = self.next_sfb;
        self.next_sfb += 1;
        self.owners[b as usize] = owner;
        Ok(b)
    }

    fn lfb(&mut self, owner: u32) -> Result<u64> {
        ensure!(
            self.next_lfb_down > 0 && (self.next_lfb_down - 1) * SFBS_PER_LFB >= self.next_sfb,
            "volume full: no large file block left"
        );
        self.next_lfb_down -= 1;
        self.lfb_owner[self.next_lfb_down as usize] = Some(owner);
        Ok(self.next_lfb_down)
    }

    fn sb(&mut self) -> Result<u64> {
        ensure!(
            self.next_sb < self.sb_limit,
            "sub-blocks exhausted (planning error)"
        );
        let s = self.next_sb;
        self.next_sb += 1;
        Ok(s)
    }
}

/// Device (logical volume) writes on top of the partition.
struct Dev<'a> {
    vol: &'a LogicalVolume<'a>,
}

impl Dev<'_> {
    fn write(&self, dev_off: u64, buf: &[u8]) -> Result<()> {
        self.vol.write_at(dev_off, buf)
    }

    /// Writes only the non-zero 4 KiB pieces so the image stays sparse.
    fn write_nonzero(&self, dev_off: u64, buf: &[u8]) -> Result<()> {
        let mut i = 0;
        while i < buf.len() {
            let end = (i + 4096).min(buf.len());
            let mut j = end;
            if buf[i..end].iter().any(|&b| b != 0) {
                // Extend over following non-zero pieces to write in one call.
                while j < buf.len() {
                    let e = (j + 4096).min(buf.len());
                    if buf[j..e].iter().all(|&b| b == 0) {
                        break;
                    }
                    j = e;
                }
                self.write(dev_off + i as u64, &buf[i..j])?;
            }
            i = j;
        }
        Ok(())
    }
}

/// Copies `len` bytes of `n` from offset 0 (a small file) to device offset `dst`.
fn copy_range(dev: &Dev, n: &Node, off: u64, len: u64, dst: u64) -> Result<()> {
    let segments = match &n.kind {
        Kind::File { segments, .. } => segments.clone(),
        _ => Vec::new(),
    };
    copy_segments(dev, n, &segments, off, len, dst)
}

/// Copies the data segments of `n` that fall in `[start, start + len)` to `dst + (offset -
/// start)`. Holes are not written: the image stays sparse and they read as zeros.
fn copy_segments(
    dev: &Dev,
    n: &Node,
    segments: &[Segment],
    start: u64,
    len: u64,
    dst: u64,
) -> Result<()> {
    let end = start + len;
    let mut file = None;
    let mut buf = Vec::new();
    for s in segments {
        let a = s.offset.max(start);
        let b = s.end().min(end);
        if a >= b {
            continue;
        }
        if file.is_none() {
            file = Some(n.open()?);
        }
        let f = file.as_ref().context("open source file")?;
        let mut pos = a;
        while pos < b {
            let chunk = (b - pos).min(4 * MIB);
            buf.resize(chunk as usize, 0);
            f.read_exact_at(&mut buf, pos)
                .with_context(|| format!("read {} at {pos}", n.host_path.display()))?;
            dev.write_nonzero(dst + (pos - start), &buf)?;
            pos += chunk;
        }
    }
    Ok(())
}

/// Leaves non-zero garbage in a to-be-zeroed block: a few 4 KiB patches (start, end and every
/// 64 MiB), enough that a reader ignoring TBZ returns wrong bytes, cheap on the host.
fn write_garbage(dev: &Dev, dst: u64, len: u64, seed: &mut u64) -> Result<()> {
    let mut spots = vec![0u64, len - GARBAGE_LEN as u64];
    let mut o = 64 * MIB;
    while o < len {
        spots.push(o);
        o += 64 * MIB;
    }
    for spot in spots {
        let mut buf = vec![0u8; GARBAGE_LEN];
        for chunk in buf.chunks_mut(8) {
            *seed = crate::splitmix64(*seed);
            chunk.copy_from_slice(&(*seed | 0x0101_0101_0101_0101).to_le_bytes());
        }
        dev.write(dst + spot, &buf)?;
    }
    Ok(())
}

/// Header and cluster metadata of a flat resource file. `used(cluster, resource)` tells
/// which resources are allocated.
fn write_flat_resource(
    dev: &Dev,
    f: SysFile,
    meta: &ResMeta,
    res_type: u32,
    used: &dyn Fn(u64, u64) -> bool,
) -> Result<()> {
    let mut head = vec![0u8; 0x100];
    meta.write(&mut head);
    dev.write(f.dev(0), &head)?;
    let clusters = u64::from(meta.num_cluster_groups) * u64::from(meta.clusters_per_group);
    let rpc = u64::from(meta.resources_per_cluster);
    for c in 0..clusters {
        let total = rpc.min(u64::from(meta.num_resources).saturating_sub(c * rpc));
        let bitmap = pack_bitmap(total, 1, |r| u8::from(!used(c, r)));
        let free = (0..total).filter(|&r| !used(c, r)).count();
        let off = f.dev(meta.cluster_header_offset(c));
        dev.write(
            off,
            &cluster_header(res_type, off, c, total as u16, free as u16, &bitmap, &[]),
        )?;
    }
    Ok(())
}

/// `.fbb.sf`: the LFB resource (parent) and, inside each converted LFB's resource data, the
/// SFB cluster metadata (child), with owner lists as ESXi keeps them.
fn write_fbb(dev: &Dev, f: SysFile, meta: &ResMeta, dev_sfbs: u64, alloc: &Alloc) -> Result<()> {
    let num_lfbs = u64::from(meta.num_resources);
    let converted: Vec<bool> = (0..num_lfbs)
        .map(|l| {
            alloc.lfb_owner[l as usize].is_none()
                && (l * SFBS_PER_LFB..((l + 1) * SFBS_PER_LFB).min(dev_sfbs))
                    .any(|s| alloc.owners[s as usize] != 0)
        })
        .collect();
    let child = ResMeta {
        resources_per_cluster: SFBS_PER_LFB as u32,
        clusters_per_group: 8,
        cluster_group_offset: 0x10000,
        resource_size: 0,
        cluster_group_size: 0x10000,
        num_resources: dev_sfbs as u32,
        num_cluster_groups: 1,
        flags: 0x2a,
        affinity: 0x0001_00d8,
        bits_per_resource: 2,
        parent_resources_per_cluster: meta.resources_per_cluster,
        parent_clusters_per_group: meta.clusters_per_group,
        parent_cluster_group_size: meta.cluster_group_size,
        converted_clusters: converted.iter().filter(|&&c| c).count() as u32,
        ..ResMeta::default()
    };
    let mut head = vec![0u8; 0x2000];
    meta.write(&mut head[..0x100]);
    child.write(&mut head[0x1000..0x1100]);
    dev.write(f.dev(0), &head)?;

    let rpc = u64::from(meta.resources_per_cluster);
    let clusters = num_lfbs.div_ceil(rpc);
    for c in 0..clusters {
        let total = rpc.min(num_lfbs - c * rpc);
        let state = |r: u64| {
            let l = c * rpc + r;
            if alloc.lfb_owner[l as usize].is_some() {
                lfb_state::USED
            } else if converted[l as usize] {
                lfb_state::CONVERTED
            } else {
                lfb_state::FREE
            }
        };
        let bitmap = pack_bitmap(total, 3, state);
        let free = (0..total).filter(|&r| state(r) == lfb_state::FREE).count();
        let off = f.dev(meta.cluster_header_offset(c));
        dev.write(
            off,
            &cluster_header(
                restype::LFB,
                off,
                c,
                total as u16,
                free as u16,
                &bitmap,
                &[],
            ),
        )?;
        // SFB cluster metadata lives in the resource data of each converted LFB.
        for r in 0..total {
            let l = c * rpc + r;
            if !converted[l as usize] {
                continue;
            }
            let lo = l * SFBS_PER_LFB;
            let hi = (lo + SFBS_PER_LFB).min(dev_sfbs);
            let mut owners: Vec<(u32, u32)> = Vec::new();
            for s in lo..hi {
                let o = alloc.owners[s as usize];
                if o == 0 {
                    continue;
                }
                match owners.iter_mut().find(|(fd, _)| *fd == o) {
                    Some(e) => e.1 += 1,
                    None => owners.push((o, 1)),
                }
            }
            let bitmap = pack_bitmap(hi - lo, 2, |i| {
                if alloc.owners[(lo + i) as usize] == 0 {
                    0b11
                } else {
                    0
                }
            });
            let free = (lo..hi).filter(|&s| alloc.owners[s as usize] == 0).count();
            let off = f.dev(meta.resource_offset(c, r));
            dev.write(
                off,
                &cluster_header(
                    restype::SFB,
                    off,
                    l,
                    (hi - lo) as u16,
                    free as u16,
                    &bitmap,
                    &owners,
                ),
            )?;
        }
    }
    Ok(())
}

/// The FS3 descriptor at device offset 2 MiB.
fn write_descriptor(
    dev: &Dev,
    opts: &Options,
    fs_uuid: Uuid,
    lvm_uuid: Uuid,
    now: u64,
    pb2_fd_dev: u64,
    sdd_fd_dev: u64,
) -> Result<()> {
    let mut d = vec![0u8; 0x200];
    put_u32(&mut d, 0x00, FS_MAGIC);
    put_u32(&mut d, 0x04, FS_MAJOR);
    d[0x08] = FS_MINOR;
    d[0x09..0x19].copy_from_slice(&fs_uuid.0);
    put_u32(&mut d, 0x19, 0x6); // config: as ESXi 6.7 (dense sub-blocks per cluster)
    d[0x1d..0x1d + opts.label.len()].copy_from_slice(opts.label.as_bytes());
    put_u32(&mut d, 0x9d, 512);
    put_u64(&mut d, 0xa1, SFB_SIZE);
    put_u32(&mut d, 0xa9, now as u32);
    put_u32(&mut d, 0xad, 1);
    d[0xb1..0xc1].copy_from_slice(&lvm_uuid.0);
    d[0xc1] = 1;
    put_u32(&mut d, 0xd1, 0x10000);
    put_u32(&mut d, 0xd5, FD_CLUSTERS_PER_GROUP);
    put_u32(&mut d, 0xd9, SUB_BLOCK_SIZE as u32);
    put_u32(&mut d, 0xdd, 64);
    put_u64(&mut d, 0xe1, pb2_fd_dev);
    put_u32(&mut d, 0xe9, fd_address(FD_PB2));
    d[0xed..0xfd].copy_from_slice(&Uuid::generate(now as u32).0);
    put_u64(&mut d, 0xfd, 1);
    put_u64(&mut d, 0x105, sdd_fd_dev);
    put_u32(&mut d, 0x10d, fd_address(FD_SDD));
    put_u16(&mut d, 0x112, 1);
    put_u32(&mut d, 0x130, 512);
    put_u32(&mut d, 0x134, MD_ALIGN as u32);
    put_u16(&mut d, 0x138, SFB_TO_LFB_SHIFT as u16);
    put_u16(&mut d, 0x13e, 16);
    put_u16(&mut d, 0x140, 44);
    put_u32(&mut d, 0x144, SFB_SIZE as u32);
    put_u32(&mut d, 0x148, 2 * MIB as u32);
    put_u32(&mut d, 0x14c, 16000);
    put_u32(&mut d, 0x150, 4000);
    dev.write(FS_DESCRIPTOR_OFFSET, &d)
}

/// The LVM6 device header of device `index` of `span`, at partition offset 1 MiB: device
/// metadata, the volume (the same on every device but for this device's PE range), the
/// device-name table (all devices, on the head extent only), the PE bitmap and one PE entry
/// covering this device's 256 MiB segments.
fn write_lvm(vol: &Volume, span: &SpannedVolume, index: usize) -> Result<()> {
    let dev = span.device(index)?;
    let num_devs = span.devices.len();
    ensure!(
        dev.num_pes >= 1 && LVM_DATA_OFFSET + dev.num_pes * PE_SIZE <= vol.len(),
        "LVM device of {} segments does not fit its partition of {} bytes",
        dev.num_pes,
        vol.len()
    );
    let total = span.total_pes();
    let disk_id = b"mkvmfs";
    let mut h = vec![0u8; 0x200];
    put_u32(&mut h, 0x00, LVM_MAGIC);
    put_u32(&mut h, 0x04, span.major_version);
    put_u32(&mut h, 0x08, span.minor_version);
    h[0x0d] = disk_id.len() as u8;
    h[0x2e..0x2e + disk_id.len()].copy_from_slice(disk_id);
    put_u32(&mut h, 0x5a, 512);
    put_u64(&mut h, 0x5e, vol.len());
    put_u32(&mut h, 0x66, 1);
    put_u32(&mut h, 0x6a, 1);
    put_u32(&mut h, 0x6e, 0);
    put_u64(&mut h, 0x72, 1);
    put_u64(&mut h, 0x7a, LVM_DATA_OFFSET);
    h[0x82..0x92].copy_from_slice(&dev.device_uuid.0);
    put_u64(&mut h, 0x92, span.time_us);
    put_u64(&mut h, 0x9a, span.time_us);
    put_u32(&mut h, 0xca, MD_ALIGN as u32);
    put_u32(&mut h, 0xce, dev.num_pes as u32);
    vol.write_at(LVM_HEADER_OFFSET, &h)?;

    let mut v = vec![0u8; 0x200];
    put_u64(&mut v, 0x00, total * PE_SIZE);
    // generation: vmfs6-tools insists that every extent carries the same value.
    put_u64(&mut v, 0x08, 1);
    put_u32(&mut v, 0x10, 1);
    let text = span.volume_uuid.to_text();
    v[0x14..0x14 + text.len()].copy_from_slice(text.as_bytes());
    v[0x54..0x64].copy_from_slice(&span.volume_uuid.0);
    put_u32(&mut v, 0x64, 1);
    put_u64(&mut v, 0x68, span.time_us);
    put_u32(&mut v, 0x70, 0);
    put_u32(&mut v, 0x74, dev.num_pes as u32);
    put_u64(&mut v, 0x78, dev.first_pe);
    put_u64(&mut v, 0x80, dev.first_pe + dev.num_pes - 1);
    put_u64(&mut v, 0x88, span.time_us);
    put_u32(&mut v, 0x90, num_devs as u32);
    put_u32(&mut v, 0x110, 1);
    vol.write_at(LVM_HEADER_OFFSET + MD_ALIGN, &v)?;

    // Device name table (LVM6 offsets: see docs): the head extent names every device.
    let mut sd = vec![0u8; 256 * num_devs];
    if dev.first_pe == 0 {
        for (i, d) in span.devices.iter().enumerate() {
            let n = d.name.as_bytes();
            let n = &n[..n.len().min(255)];
            sd[256 * i..256 * i + n.len()].copy_from_slice(n);
        }
        vol.write_at(LVM_HEADER_OFFSET + LVM6_SD_TABLE, &sd)?;
    }
    vol.write_at(LVM_HEADER_OFFSET + LVM6_PE_BITMAP, &[1])?;
    // One PE entry for the whole device: ids and device offsets count from this device's
    // start, the logical offset from the volume's.
    let mut pe = vec![0u8; 0x25];
    pe[0] = 1;
    put_u32(&mut pe, 0x01, 0);
    put_u32(&mut pe, 0x05, 0);
    put_u64(&mut pe, 0x09, LVM_DATA_OFFSET);
    put_u64(&mut pe, 0x11, dev.first_pe * PE_SIZE);
    put_u64(&mut pe, 0x19, dev.num_pes * PE_SIZE);
    put_u32(&mut pe, 0x21, 1);
    vol.write_at(LVM_HEADER_OFFSET + LVM6_PE_TABLE, &pe)
}

/// LVM6 device-name table offset (relative to the LVM header): metadata block, one volume
/// entry, reserved sectors.
pub const LVM6_SD_TABLE: u64 = MD_ALIGN + 512 + (1023 * 512 - 256 * 32);
/// LVM6 PE bitmap offset.
pub const LVM6_PE_BITMAP: u64 = LVM6_SD_TABLE + 256 * 32;
/// LVM6 PE table offset.
pub const LVM6_PE_TABLE: u64 = LVM6_PE_BITMAP + MD_ALIGN;
