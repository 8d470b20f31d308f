//! The VMFS logical volume manager: the device header at 1 MiB of every VMFS partition, its
//! volume table and physical-extent (PE) table, and the assembly of one logical volume from the
//! PEs of one or several devices (a spanned datastore).

use std::collections::HashMap;

use fscore::le::{bytes_at, u8_at, u32_at, u64_at};
use lun::{LunError, ReadAt, ReadAtExt, Source};

use crate::descriptor::FsDescriptor;
use crate::error::{Result, VmfsError};
use crate::uuid::vmfs_uuid;

/// Offset of the LVM device header inside a VMFS partition.
pub const LVM_DEV_HEADER_OFFSET: u64 = 0x10_0000;
/// `LVM_MAGIC_NUMBER`.
pub const LVM_MAGIC: u32 = 0xC001_D00D;
/// Size of one volume table entry (`LVM_VolTableEntry`).
const VT_ENTRY_SIZE: u64 = 512;
/// Size of one PE table entry (`LVM_PETableEntry`, padded).
const PT_ENTRY_SIZE: u64 = 128;
/// Size of one SD table entry (device name).
const SD_ENTRY_SIZE: u64 = 256;
/// Entries of the SD table.
const SD_ENTRIES: u64 = 32;
/// PEs described by one bitmap + table pair.
const PES_PER_MAP: u64 = 8192;
/// Bound on PE map pairs read from one header region.
const MAX_PE_MAPS: u64 = 8;

/// One physical extent of a volume stored on a device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PhysicalExtent {
    /// `peID`.
    pub pe_id: u32,
    /// Byte offset of the PE inside the logical volume (`lOffset`).
    pub logical_offset: u64,
    /// Byte offset of the PE on this device (`pOffset`).
    pub physical_offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// What the file system header says, when this device holds it (the head extent).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FsSummary {
    /// `vmfs5` or `vmfs6`.
    pub fs: String,
    /// FS3 major version (14 = VMFS5, 24 = VMFS6).
    pub major_version: u32,
    /// FS3 minor version.
    pub minor_version: u8,
    /// File system UUID as ESXi prints it.
    pub uuid: String,
    /// Label.
    pub label: String,
    /// File block size.
    pub block_size: u64,
}

/// The LVM facts of one VMFS partition (`LVM_DevMetadata` and its volume descriptor).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LvmDeviceInfo {
    /// LVM major version (5 for VMFS5, 6 for VMFS6).
    pub lvm_major: u32,
    /// LVM minor version.
    pub lvm_minor: u32,
    /// Device UUID (`devID`).
    pub device_uuid: String,
    /// Sector size the LVM assumes (`diskBlockSize`).
    pub disk_block_size: u32,
    /// Device size recorded by the LVM (`totalBytes`).
    pub device_size: u64,
    /// Where volume data starts on the device (`dataOffset`).
    pub data_offset: u64,
    /// LVM6 metadata alignment (0 on LVM5).
    pub md_alignment: u32,
    /// LVM volume UUID (`lvID.uuid`) — the same on every extent of one volume.
    pub volume_uuid: String,
    /// Snapshot id of the volume (`lvID.snapID`); resignatured copies differ.
    pub volume_snap_id: u32,
    /// Volume name as stored.
    pub volume_name: String,
    /// Logical size of the whole volume in bytes.
    pub volume_size: u64,
    /// Volume generation.
    pub volume_generation: u64,
    /// Number of devices (extents) the volume spans.
    pub num_devices: u32,
    /// First PE index of the volume on this device; 0 marks the head extent. Sorting the
    /// devices of a volume by it gives the extent order.
    pub first_pe: u64,
    /// Last PE index of the volume on this device.
    pub last_pe: u64,
    /// The used PEs of the volume on this device.
    pub extents: Vec<PhysicalExtent>,
    /// Device names of the volume's extents (SD table, head extent only), e.g.
    /// `naa.600…:1`.
    pub device_names: Vec<String>,
    /// The file system header, when this device holds it.
    pub filesystem: Option<FsSummary>,
}

impl LvmDeviceInfo {
    /// True for the head extent (the one holding the file system header).
    pub fn is_head(&self) -> bool {
        self.first_pe == 0
    }
}

fn corrupt(device: &str, offset: u64, detail: impl Into<String>) -> VmfsError {
    VmfsError::Corrupt {
        structure: "LVM device header".into(),
        device: device.to_string(),
        offset,
        detail: detail.into(),
    }
}

/// Reads the LVM header of a VMFS partition. `Ok(None)` when the magic number is absent (not
/// an LVM device, or too small to hold one).
pub fn lvm_device_info(device: &dyn ReadAt) -> Result<Option<LvmDeviceInfo>> {
    let name = device.name().to_string();
    if device.size() < LVM_DEV_HEADER_OFFSET + 512 {
        return Ok(None);
    }
    let hdr = device.read_vec(LVM_DEV_HEADER_OFFSET, 512)?;
    let f32 = |o| u32_at(&hdr, o).unwrap_or(0);
    let f64 = |o| u64_at(&hdr, o).unwrap_or(0);
    if f32(0) != LVM_MAGIC {
        return Ok(None);
    }
    let c = |o: u64, d: String| corrupt(&name, LVM_DEV_HEADER_OFFSET + o, d);
    let lvm_major = f32(0x04);
    let lvm_minor = f32(0x08);
    if !(3..=6).contains(&lvm_major) {
        return Err(VmfsError::Unsupported {
            feature: format!("{name}: LVM major version {lvm_major}"),
        });
    }
    let disk_block_size = f32(0x5a);
    let device_size = f64(0x5e);
    let num_volumes = f32(0x66);
    let num_pes = f32(0x6a) as u64;
    let data_offset = f64(0x7a);
    let device_uuid = vmfs_uuid(bytes_at(&hdr, 0x82, 16).unwrap_or(&[0; 16]));
    let num_pe_maps = (f32(0xbe) as u64).max(1);
    let md_alignment = f32(0xca);
    let lvm6 = lvm_major >= 6;

    let (devmeta_size, max_volumes, bitmap_size) = if lvm6 {
        if !md_alignment.is_power_of_two() || !(512..=0x10_0000).contains(&md_alignment) {
            return Err(c(
                0xca,
                format!("mdAlignment {md_alignment} is not a power of two in 512..1 MiB"),
            ));
        }
        (md_alignment as u64, 1u64, (md_alignment as u64).max(1024))
    } else {
        (512, 512, 1024)
    };
    if num_volumes == 0 {
        return Err(c(0x66, "the device holds no volume".into()));
    }
    if num_volumes > 1 {
        return Err(VmfsError::Unsupported {
            feature: format!("{name}: {num_volumes} LVM volumes on one device"),
        });
    }
    if num_pe_maps > MAX_PE_MAPS || num_pes > num_pe_maps * PES_PER_MAP {
        return Err(c(
            0x6a,
            format!("{num_pes} PEs in {num_pe_maps} maps exceed the header region"),
        ));
    }
    // Layout of LVM_DeviceHeader: devMeta, volTable[max], reserved, sdTable[32], then pairs of
    // (peBitmap, peTable[8192]).
    let reserved = (1024 - max_volumes) * 512 - SD_ENTRY_SIZE * SD_ENTRIES;
    let vol_table = LVM_DEV_HEADER_OFFSET + devmeta_size;
    let sd_table = vol_table + max_volumes * VT_ENTRY_SIZE + reserved;
    let pe_maps = sd_table + SD_ENTRY_SIZE * SD_ENTRIES;

    let vd = device.read_vec(vol_table, VT_ENTRY_SIZE as usize)?;
    let vd32 = |o| u32_at(&vd, o).unwrap_or(0);
    let vd64 = |o| u64_at(&vd, o).unwrap_or(0);
    let volume_size = vd64(0x00);
    let volume_generation = vd64(0x08);
    let volume_name = cstr(bytes_at(&vd, 0x14, 64).unwrap_or(&[]));
    let volume_uuid = vmfs_uuid(bytes_at(&vd, 0x54, 16).unwrap_or(&[0; 16]));
    let volume_snap_id = vd32(0x64);
    let volume_id = vd32(0x70);
    let first_pe = vd64(0x78);
    let last_pe = vd64(0x80);
    let num_devices = vd32(0x90);
    if volume_size == 0 {
        return Err(corrupt(
            &name,
            vol_table,
            "volume descriptor has a zero logical size",
        ));
    }

    let mut extents = Vec::new();
    let map_span = bitmap_size + PES_PER_MAP * PT_ENTRY_SIZE;
    let mut remaining = num_pes;
    for map in 0..num_pe_maps {
        if remaining == 0 {
            break;
        }
        let n = remaining.min(PES_PER_MAP);
        remaining -= n;
        let table = pe_maps + map * map_span + bitmap_size;
        let raw = device.read_vec(table, (n * PT_ENTRY_SIZE) as usize)?;
        for i in 0..n as usize {
            let e = &raw[i * PT_ENTRY_SIZE as usize..(i + 1) * PT_ENTRY_SIZE as usize];
            if u8_at(e, 0) != Some(1) || u32_at(e, 5) != Some(volume_id) {
                continue;
            }
            let pe = PhysicalExtent {
                pe_id: u32_at(e, 1).unwrap_or(0),
                physical_offset: u64_at(e, 9).unwrap_or(0),
                logical_offset: u64_at(e, 17).unwrap_or(0),
                length: u64_at(e, 25).unwrap_or(0),
            };
            let off = table + i as u64 * PT_ENTRY_SIZE;
            if pe.length == 0 {
                return Err(corrupt(
                    &name,
                    off,
                    format!("PE {} has zero length", pe.pe_id),
                ));
            }
            let fits_dev = pe
                .physical_offset
                .checked_add(pe.length)
                .is_some_and(|e| e <= device.size());
            if !fits_dev {
                return Err(corrupt(
                    &name,
                    off,
                    format!(
                        "PE {} ({} bytes at device offset {}) lies past the end of the device \
                         ({} bytes); the clone is truncated",
                        pe.pe_id,
                        pe.length,
                        pe.physical_offset,
                        device.size()
                    ),
                ));
            }
            if pe.physical_offset < LVM_DEV_HEADER_OFFSET + 512 {
                return Err(corrupt(
                    &name,
                    off,
                    format!("PE {} overlaps the LVM header", pe.pe_id),
                ));
            }
            let fits_vol = pe
                .logical_offset
                .checked_add(pe.length)
                .is_some_and(|e| e <= volume_size);
            if !fits_vol {
                return Err(corrupt(
                    &name,
                    off,
                    format!("PE {} lies past the volume size {volume_size}", pe.pe_id),
                ));
            }
            extents.push(pe);
        }
    }
    extents.sort_by_key(|p| p.logical_offset);

    let mut device_names = Vec::new();
    if first_pe == 0 && lvm_major >= 5 {
        let sd = device.read_vec(sd_table, (SD_ENTRY_SIZE * SD_ENTRIES) as usize)?;
        for i in 0..(num_devices as u64).min(SD_ENTRIES) as usize {
            let n = cstr(&sd[i * 256..(i + 1) * 256]);
            if !n.is_empty() {
                device_names.push(n);
            }
        }
    }

    let mut info = LvmDeviceInfo {
        lvm_major,
        lvm_minor,
        device_uuid,
        disk_block_size,
        device_size,
        data_offset,
        md_alignment: if lvm6 { md_alignment } else { 0 },
        volume_uuid,
        volume_snap_id,
        volume_name,
        volume_size,
        volume_generation,
        num_devices,
        first_pe,
        last_pe,
        extents,
        device_names,
        filesystem: None,
    };
    info.filesystem = fs_summary(device, &info);
    Ok(Some(info))
}

/// Reads the FS3 descriptor through this device's PEs when one of them holds it.
fn fs_summary(device: &dyn ReadAt, info: &LvmDeviceInfo) -> Option<FsSummary> {
    let at = crate::descriptor::FS3_DESCRIPTOR_OFFSET;
    let pe = info
        .extents
        .iter()
        .find(|p| p.logical_offset <= at && at + 512 <= p.logical_offset + p.length)?;
    let off = pe.physical_offset + (at - pe.logical_offset);
    let buf = device.read_vec(off, 512).ok()?;
    let d = FsDescriptor::parse(&buf, device.name(), off).ok()?;
    Some(FsSummary {
        fs: if d.is_vmfs6() { "vmfs6" } else { "vmfs5" }.into(),
        major_version: d.major_version,
        minor_version: d.minor_version,
        uuid: d.uuid.clone(),
        label: d.label.clone(),
        block_size: d.file_block_size,
    })
}

pub(crate) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// One contiguous piece of the logical volume on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub logical: u64,
    pub len: u64,
    pub dev: usize,
    pub phys: u64,
}

/// The logical volume assembled from its devices.
pub(crate) struct Assembled {
    pub uuid: String,
    pub size: u64,
    pub runs: Vec<Run>,
}

/// Assembles the volume formed by `devices`: every device must carry an LVM header of the
/// same volume, and together their PEs must cover the volume without gaps or overlaps.
pub(crate) fn assemble(devices: &[Source]) -> Result<Assembled> {
    if devices.is_empty() {
        return Err(VmfsError::VolumeMismatch {
            detail: "no device given".into(),
        });
    }
    let mut infos = Vec::with_capacity(devices.len());
    for d in devices {
        let info = lvm_device_info(d.as_ref())?.ok_or_else(|| VmfsError::NotVmfs {
            device: d.name().to_string(),
            detail: format!(
                "no LVM device header (magic {LVM_MAGIC:#x}) at byte {LVM_DEV_HEADER_OFFSET:#x}; \
                 a whole LUN must be opened at its VMFS partition (GPT type \
                 AA31E02A-400F-11DB-9590-000C2911D1B8 or MBR type 0xfb, usually sector 2048)"
            ),
        })?;
        infos.push(info);
    }
    let first = &infos[0];
    let uuid = first.volume_uuid.clone();
    for (i, info) in infos.iter().enumerate().skip(1) {
        if info.volume_uuid != uuid || info.volume_snap_id != first.volume_snap_id {
            return Err(VmfsError::VolumeMismatch {
                detail: format!(
                    "{} belongs to LVM volume {} (snapshot {}), but {} belongs to volume {} \
                     (snapshot {})",
                    devices[i].name(),
                    info.volume_uuid,
                    info.volume_snap_id,
                    devices[0].name(),
                    uuid,
                    first.volume_snap_id
                ),
            });
        }
        if let Some(j) = infos[..i]
            .iter()
            .position(|o| o.device_uuid == info.device_uuid)
        {
            return Err(VmfsError::VolumeMismatch {
                detail: format!(
                    "{} and {} are the same LVM device {} (give each extent once; use multipath \
                     for several paths)",
                    devices[j].name(),
                    devices[i].name(),
                    info.device_uuid
                ),
            });
        }
    }
    // The newest copy of the volume metadata decides the size.
    let newest = infos
        .iter()
        .max_by_key(|i| i.volume_generation)
        .expect("non-empty");
    let size = newest.volume_size;
    let expected_devices = newest.num_devices;

    let mut runs: Vec<Run> = infos
        .iter()
        .enumerate()
        .flat_map(|(dev, info)| {
            info.extents.iter().map(move |p| Run {
                logical: p.logical_offset,
                len: p.length,
                dev,
                phys: p.physical_offset,
            })
        })
        .collect();
    runs.sort_by_key(|r| r.logical);
    let missing = |detail: String| VmfsError::MissingExtent {
        volume: uuid.clone(),
        detail,
    };
    let names_hint = || {
        let head = infos.iter().find(|i| i.is_head());
        match head {
            Some(h) if !h.device_names.is_empty() => {
                format!("; the volume's extents are: {}", h.device_names.join(", "))
            }
            _ => String::new(),
        }
    };
    let mut cursor = 0u64;
    let mut merged: Vec<Run> = Vec::with_capacity(runs.len());
    for r in runs {
        if r.logical < cursor {
            return Err(VmfsError::VolumeMismatch {
                detail: format!(
                    "LVM volume {uuid}: PEs overlap at volume offset {} ({} and an earlier PE)",
                    r.logical,
                    devices[r.dev].name()
                ),
            });
        }
        if r.logical > cursor {
            return Err(missing(format!(
                "volume bytes {cursor}..{} are on no given device: {} of {} extents given{}",
                r.logical,
                devices.len(),
                expected_devices,
                names_hint()
            )));
        }
        cursor = r.logical + r.len;
        match merged.last_mut() {
            Some(m) if m.dev == r.dev && m.phys + m.len == r.phys => m.len += r.len,
            _ => merged.push(r),
        }
    }
    if cursor < size {
        return Err(missing(format!(
            "volume bytes {cursor}..{size} are on no given device: {} of {} extents given{}",
            devices.len(),
            expected_devices,
            names_hint()
        )));
    }
    if (devices.len() as u32) < expected_devices {
        return Err(missing(format!(
            "{} of {} extents given{}",
            devices.len(),
            expected_devices,
            names_hint()
        )));
    }
    Ok(Assembled {
        uuid,
        size,
        runs: merged,
    })
}

/// The logical volume as a byte source: reads are split along the PE runs.
pub(crate) struct VolumeSource {
    devices: Vec<Source>,
    runs: Vec<Run>,
    size: u64,
    name: String,
}

impl VolumeSource {
    pub fn new(devices: Vec<Source>, runs: Vec<Run>, size: u64, name: String) -> Self {
        VolumeSource {
            devices,
            runs,
            size,
            name,
        }
    }

    /// Index of the run holding volume offset `off`.
    pub fn run_index(&self, off: u64) -> Option<usize> {
        let i = self.runs.partition_point(|r| r.logical + r.len <= off);
        (i < self.runs.len() && self.runs[i].logical <= off).then_some(i)
    }

    /// The piece of `[pos, end)` on one device: `(device, device offset, bytes)`, up to the end
    /// of the run holding `pos`. `None` when no run holds `pos`.
    fn piece(&self, pos: u64, end: u64) -> Option<(usize, u64, u64)> {
        let r = self.runs[self.run_index(pos)?];
        let within = pos - r.logical;
        Some((r.dev, r.phys + within, (r.len - within).min(end - pos)))
    }
}

impl ReadAt for VolumeSource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        let len = buf.len() as u64;
        let out_of_range = || LunError::OutOfRange {
            name: self.name.clone(),
            offset,
            len,
            size: self.size,
        };
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.size)
        {
            return Err(out_of_range());
        }
        let end = offset + len;
        let mut done = 0usize;
        while done < buf.len() {
            let (dev, at, n) = self
                .piece(offset + done as u64, end)
                .ok_or_else(out_of_range)?;
            let n = n as usize;
            self.devices[dev].read_exact_at(at, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
    fn will_need(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.size);
        let mut pos = offset;
        // Bounded by the runs: each step ends one.
        while pos < end {
            let Some((dev, at, n)) = self.piece(pos, end) else {
                return;
            };
            self.devices[dev].will_need(at, n);
            pos += n;
        }
    }
    fn is_cached(&self, offset: u64, len: usize) -> Option<bool> {
        // Asked of the run holding the first byte: a probe, not a guarantee.
        let (dev, at, n) = self.piece(offset, offset.checked_add(len as u64)?)?;
        self.devices[dev].is_cached(at, n as usize)
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// Groups LVM device infos by volume: (volume UUID, snapshot id) -> indices. Helps callers
/// that are handed a pile of LUNs to find the members of each spanned volume.
pub fn group_by_volume(infos: &[LvmDeviceInfo]) -> HashMap<(String, u32), Vec<usize>> {
    let mut m: HashMap<(String, u32), Vec<usize>> = HashMap::new();
    for (i, info) in infos.iter().enumerate() {
        m.entry((info.volume_uuid.clone(), info.volume_snap_id))
            .or_default()
            .push(i);
    }
    m
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use lun::{ReadAt, Source};

    use super::{Run, VolumeSource};

    /// A device that records the hints it is given and says which offsets are cached.
    struct Recorder {
        name: String,
        hints: Mutex<Vec<(u64, u64)>>,
        cached_below: u64,
    }

    impl ReadAt for Recorder {
        fn read_exact_at(&self, _: u64, buf: &mut [u8]) -> lun::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn will_need(&self, offset: u64, len: u64) {
            self.hints.lock().unwrap().push((offset, len));
        }
        fn is_cached(&self, offset: u64, _: usize) -> Option<bool> {
            Some(offset < self.cached_below)
        }
        fn size(&self) -> u64 {
            1 << 30
        }
        fn name(&self) -> &str {
            &self.name
        }
    }

    /// Read-ahead hints and cache probes reach the device and offset each volume range lives
    /// on, split where a range crosses from one run to the next; past the end nothing is
    /// announced.
    #[test]
    fn hints_follow_the_runs() {
        let dev = |n: &str, cached_below| {
            Arc::new(Recorder {
                name: n.into(),
                hints: Mutex::new(Vec::new()),
                cached_below,
            })
        };
        let (a, b) = (dev("a", 0), dev("b", 1 << 20));
        let devices: Vec<Source> = vec![a.clone(), b.clone()];
        let runs = vec![
            Run {
                logical: 0,
                len: 1000,
                dev: 1,
                phys: 5000,
            },
            Run {
                logical: 1000,
                len: 1000,
                dev: 0,
                phys: 0,
            },
        ];
        let vol = VolumeSource::new(devices, runs, 2000, "vol".into());
        vol.will_need(900, 200);
        vol.will_need(1900, 1 << 40);
        vol.will_need(5000, 10);
        assert_eq!(*b.hints.lock().unwrap(), vec![(5900, 100)]);
        assert_eq!(*a.hints.lock().unwrap(), vec![(0, 100), (900, 100)]);
        assert_eq!(vol.is_cached(10, 4096), Some(true));
        assert_eq!(vol.is_cached(1010, 4096), Some(false));
        assert_eq!(vol.is_cached(2000, 1), None);
    }
}
