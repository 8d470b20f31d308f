//! The LVM layer under VMFS: the device header at partition offset 1 MiB, the volume table,
//! the device-name table and one physical-extent (PE) map.
//!
//! The writer always makes the simplest layout ESXi makes itself: one device, one logical
//! volume, PEs of 256 MiB laid end to end from the data offset (17 MiB into the partition).
//! vmfs-tools relies on exactly that shape: it maps logical offset `x` to partition offset
//! `0x1100000 + x` and finds the extent by `x / 256 MiB`.
//!
//! Field offsets follow dissect.vmfs `c_lvm.py` (`LVM_DevMetadata`, `LVM_VolDescriptor`,
//! `LVM_PETableEntry`) and vmfs-tools `vmfs_volume.h`; the values mirror the ESXi-made sample
//! volume (see docs/formats/vmfs.md, "mkvmfs (writer)").

use anyhow::{Result, ensure};

use crate::layout::Volume;

/// `LVM_MAGIC_NUMBER`, first word of the device header.
pub const LVM_MAGIC: u32 = 0xC001_D00D;
/// Partition offset of the device header.
pub const DEV_HEADER_OFFSET: u64 = 0x10_0000;
/// Partition offset of logical volume byte 0 (`dataOffset` in the device header).
pub const DATA_OFFSET: u64 = 0x110_0000;
/// Size of one physical extent.
pub const PE_SIZE: u64 = 256 << 20;
/// PEs one PE map can describe (`LVM_PES_PER_BITMAP`).
pub const MAX_PES: u64 = 8192;

/// Offsets inside the LVM5 device header, relative to [`DEV_HEADER_OFFSET`].
mod off {
    /// Volume table: one 512-byte `LVM_VolTableEntry` per volume, after the 512-byte devMeta.
    pub const VOL_TABLE: usize = 0x200;
    /// Device-name table (`sdTable`): after 512 volume entries and the reserved area.
    pub const SD_TABLE: usize = 0x7_E200;
    /// PE bitmap (one bit per PE entry in use).
    pub const PE_BITMAP: usize = 0x8_0200;
    /// PE table, 128 bytes per entry.
    pub const PE_TABLE: usize = 0x8_0600;
    /// Bytes of header we write (up to the end of the PE table for [`super::MAX_PES`] PEs).
    pub const END: usize = PE_TABLE + 128 * 8192;
}

/// A VMware UUID: `timeLo:u32, timeHi:u32, rand:u16, mac[6]`, printed as
/// `xxxxxxxx-xxxxxxxx-xxxx-xxxxxxxxxxxx` with the integer parts in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmwareUuid(pub [u8; 16]);

impl VmwareUuid {
    /// A fresh UUID: creation time (seconds), random bits, and a VMware-OUI MAC with random
    /// low bytes (ESXi puts its management MAC there).
    pub fn generate(now_secs: u32) -> VmwareUuid {
        let r = crate::random_u64();
        let r2 = crate::random_u64();
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&now_secs.to_le_bytes());
        b[4..8].copy_from_slice(&(r as u32).to_le_bytes());
        b[8..10].copy_from_slice(&((r >> 32) as u16).to_le_bytes());
        b[10..13].copy_from_slice(&[0x00, 0x0c, 0x29]);
        b[13..16].copy_from_slice(&r2.to_le_bytes()[..3]);
        VmwareUuid(b)
    }

    /// The textual form ESXi and vmfs-tools print.
    pub fn to_text(&self) -> String {
        let b = &self.0;
        let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let hi = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let rand = u16::from_le_bytes([b[8], b[9]]);
        let mac: String = b[10..16].iter().map(|x| format!("{x:02x}")).collect();
        format!("{lo:08x}-{hi:08x}-{rand:04x}-{mac}")
    }
}

/// What the LVM header describes.
#[derive(Clone, Debug)]
pub struct LvmParams {
    /// `majorVersion` (5 for VMFS5 volumes).
    pub major_version: u32,
    /// `minorVersion` (ESXi 5+ writes 0x15).
    pub minor_version: u32,
    /// Device UUID (`devID`).
    pub device_uuid: VmwareUuid,
    /// Logical volume UUID (`lvID.uuid`); the filesystem descriptor repeats it.
    pub volume_uuid: VmwareUuid,
    /// Number of 256 MiB PEs in the volume.
    pub num_pes: u64,
    /// Creation time in microseconds since the epoch.
    pub time_us: u64,
}

impl LvmParams {
    /// Size of the logical volume in bytes.
    pub fn logical_size(&self) -> u64 {
        self.num_pes * PE_SIZE
    }

    /// Partition bytes needed for this volume.
    pub fn partition_len(&self) -> u64 {
        DATA_OFFSET + self.logical_size()
    }
}

/// Number of PEs that fit in a partition of `partition_len` bytes.
pub fn pes_for_partition(partition_len: u64) -> u64 {
    partition_len.saturating_sub(DATA_OFFSET) / PE_SIZE
}

/// Writes the LVM5 device header, volume table, device-name table and PE map of a volume
/// that lives on this one device.
pub fn write_lvm5(vol: &Volume, p: &LvmParams) -> Result<()> {
    let span = SpannedVolume {
        major_version: p.major_version,
        minor_version: p.minor_version,
        volume_uuid: p.volume_uuid,
        time_us: p.time_us,
        devices: vec![DeviceExtent {
            device_uuid: p.device_uuid,
            first_pe: 0,
            num_pes: p.num_pes,
            name: "mkvmfs:C0:T0:L0:1".into(),
        }],
    };
    write_lvm5_device(vol, &span, 0)
}

/// One device (extent) of a logical volume: which PEs of the volume it holds.
#[derive(Clone, Debug)]
pub struct DeviceExtent {
    /// Device UUID (`devID`), different on every device.
    pub device_uuid: VmwareUuid,
    /// Volume PE number of this device's first PE (`firstPE`; 0 on the head extent).
    pub first_pe: u64,
    /// PEs of the volume on this device (`numPEs`).
    pub num_pes: u64,
    /// Device name as the head extent's device-name table lists it (ESXi: `naa.…:1`).
    pub name: String,
}

/// A logical volume over one or more devices, the way ESXi records a spanned datastore: every
/// device carries the same volume metadata (size, generation, name, UUID, device count) and
/// its own device UUID, PE range and PE table; the head extent (`firstPE` 0) also lists the
/// names of all devices. On each device the PEs lie end to end from [`DATA_OFFSET`], which is
/// what vmfs-tools relies on (it maps volume offset `x` on the device whose PE range holds
/// `x / PE_SIZE` to `DATA_OFFSET + x - firstPE * PE_SIZE`).
#[derive(Clone, Debug)]
pub struct SpannedVolume {
    /// `majorVersion` (5 for VMFS5 volumes).
    pub major_version: u32,
    /// `minorVersion` (ESXi 5+ writes 0x15).
    pub minor_version: u32,
    /// Logical volume UUID (`lvID.uuid`), the same on every device.
    pub volume_uuid: VmwareUuid,
    /// Creation time in microseconds since the epoch.
    pub time_us: u64,
    /// The devices in volume order: device `i + 1` starts where device `i` ends.
    pub devices: Vec<DeviceExtent>,
}

impl SpannedVolume {
    /// Device `index`, once the volume is checked to span 1 to 32 devices (what the LVM
    /// header can describe).
    pub fn device(&self, index: usize) -> Result<&DeviceExtent> {
        let num_devs = self.devices.len();
        ensure!(
            (1..=32).contains(&num_devs),
            "a volume spans 1 to 32 devices, not {num_devs}"
        );
        self.devices
            .get(index)
            .ok_or_else(|| anyhow::anyhow!("internal: no LVM device {index}"))
    }

    /// PEs of the whole volume.
    pub fn total_pes(&self) -> u64 {
        self.devices.iter().map(|d| d.num_pes).sum()
    }

    /// Size of the logical volume in bytes.
    pub fn logical_size(&self) -> u64 {
        self.total_pes() * PE_SIZE
    }

    /// Volume byte range `(start, len)` held by device `index`.
    pub fn device_range(&self, index: usize) -> (u64, u64) {
        let d = &self.devices[index];
        (d.first_pe * PE_SIZE, d.num_pes * PE_SIZE)
    }
}

/// Partition bytes a device needs to hold `num_pes` PEs.
pub fn partition_len_for(num_pes: u64) -> u64 {
    DATA_OFFSET + num_pes * PE_SIZE
}

/// Writes the LVM5 header of device `index` of `span` into `vol`.
pub fn write_lvm5_device(vol: &Volume, span: &SpannedVolume, index: usize) -> Result<()> {
    let dev = span.device(index)?;
    let num_devs = span.devices.len();
    let mut expected_first = 0;
    for d in &span.devices {
        ensure!(
            d.first_pe == expected_first,
            "internal: LVM devices do not follow each other"
        );
        expected_first += d.num_pes;
    }
    ensure!(
        (1..=MAX_PES).contains(&dev.num_pes),
        "a device of {} PEs does not fit one PE map (1..={MAX_PES})",
        dev.num_pes
    );
    ensure!(
        partition_len_for(dev.num_pes) <= vol.len(),
        "LVM device larger than its partition"
    );
    let total_pes = span.total_pes();
    let mut h = vec![0u8; off::END];
    let put32 = |h: &mut [u8], o: usize, v: u32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |h: &mut [u8], o: usize, v: u64| h[o..o + 8].copy_from_slice(&v.to_le_bytes());

    // LVM_DevMetadata
    put32(&mut h, 0x00, LVM_MAGIC);
    put32(&mut h, 0x04, span.major_version);
    put32(&mut h, 0x08, span.minor_version);
    // SCSI_DiskId at 0x0c: type, len, lun, deviceType, scsiLevel, vendor, model, rev, id.
    let disk_id = b"mkvmfs:0:0";
    h[0x0d] = disk_id.len() as u8;
    h[0x2e..0x2e + disk_id.len()].copy_from_slice(disk_id);
    put32(&mut h, 0x5a, 512); // diskBlockSize
    put64(&mut h, 0x5e, vol.len()); // totalBytes
    put32(&mut h, 0x66, 1); // numVolumes
    put32(&mut h, 0x6a, dev.num_pes as u32); // numPEs on this device
    put32(&mut h, 0x6e, (dev.num_pes - 1) as u32); // lastPEIndex
    put64(&mut h, 0x72, 1); // generation
    put64(&mut h, 0x7a, DATA_OFFSET); // dataOffset
    h[0x82..0x92].copy_from_slice(&dev.device_uuid.0); // devID
    put64(&mut h, 0x92, span.time_us); // initTimeUS
    put64(&mut h, 0x9a, span.time_us); // modTimeUS
    put32(&mut h, 0xbe, 1); // numPEMaps

    // LVM_VolDescriptor of volume 0: volMeta is the same on every device, the PE range is
    // this device's.
    let v = off::VOL_TABLE;
    put64(&mut h, v, total_pes * PE_SIZE); // logicalSize
    // generation; vmfs-tools reads it as "blocks" = PEs + extents and insists that every
    // extent agrees.
    put64(&mut h, v + 0x08, total_pes + num_devs as u64);
    put32(&mut h, v + 0x10, 1); // state LVM_NORMAL
    let name = span.volume_uuid.to_text();
    h[v + 0x14..v + 0x14 + name.len()].copy_from_slice(name.as_bytes());
    h[v + 0x54..v + 0x64].copy_from_slice(&span.volume_uuid.0); // lvID.uuid
    put32(&mut h, v + 0x64, 1); // lvID.snapID
    put64(&mut h, v + 0x68, span.time_us); // creationTimeUS
    put32(&mut h, v + 0x70, 0); // volumeID
    put32(&mut h, v + 0x74, dev.num_pes as u32); // numPEs on this device
    put64(&mut h, v + 0x78, dev.first_pe); // firstPE
    put64(&mut h, v + 0x80, dev.first_pe + dev.num_pes - 1); // lastPE
    put64(&mut h, v + 0x88, span.time_us); // modTimeUS
    put32(&mut h, v + 0x90, num_devs as u32); // extVolMeta.numDevs

    // Device-name table: on the head extent, the names of all devices in volume order.
    if dev.first_pe == 0 {
        for (i, d) in span.devices.iter().enumerate() {
            let n = d.name.as_bytes();
            let n = &n[..n.len().min(255)];
            let at = off::SD_TABLE + 256 * i;
            h[at..at + n.len()].copy_from_slice(n);
        }
    }

    // PE bitmap and table: PE ids and device offsets count from this device's start (the
    // same pattern on every extent), logical offsets from the volume's.
    for pe in 0..dev.num_pes as usize {
        h[off::PE_BITMAP + pe / 8] |= 1 << (pe % 8);
        let e = off::PE_TABLE + pe * 128;
        h[e] = 1; // used
        put32(&mut h, e + 0x01, pe as u32); // peID
        put32(&mut h, e + 0x05, 0); // volumeID
        put64(&mut h, e + 0x09, DATA_OFFSET + pe as u64 * PE_SIZE); // pOffset
        put64(&mut h, e + 0x11, (dev.first_pe + pe as u64) * PE_SIZE); // lOffset
        put64(&mut h, e + 0x19, PE_SIZE); // length
        put32(&mut h, e + 0x21, 1); // version
    }
    let used = off::PE_TABLE + dev.num_pes as usize * 128;
    // Write only the parts that carry data, so the image stays sparse.
    vol.write_at(DEV_HEADER_OFFSET, &h[..off::VOL_TABLE + 0x200])?;
    let sd_len = if dev.first_pe == 0 {
        256 * num_devs
    } else {
        512
    };
    vol.write_at(
        DEV_HEADER_OFFSET + off::SD_TABLE as u64,
        &h[off::SD_TABLE..off::SD_TABLE + sd_len.max(512)],
    )?;
    vol.write_at(
        DEV_HEADER_OFFSET + off::PE_BITMAP as u64,
        &h[off::PE_BITMAP..used],
    )
}

/// The logical volume being written, over the partitions of its devices: writes at volume
/// offsets are split along the device boundaries.
pub struct LogicalVolume<'a> {
    /// (device partition, first volume byte on it, volume bytes on it), in volume order.
    devices: Vec<(&'a Volume, u64, u64)>,
}

impl<'a> LogicalVolume<'a> {
    /// The volume `span` over the partitions `vols` (one per device, in the same order).
    pub fn new(span: &SpannedVolume, vols: &'a [Volume]) -> Result<LogicalVolume<'a>> {
        ensure!(
            vols.len() == span.devices.len(),
            "internal: {} partitions for {} LVM devices",
            vols.len(),
            span.devices.len()
        );
        let devices = vols
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (start, len) = span.device_range(i);
                (v, start, len)
            })
            .collect();
        Ok(LogicalVolume { devices })
    }

    /// Writes `buf` at volume offset `offset`.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let Some(&(vol, start, len)) = self
                .devices
                .iter()
                .find(|(_, s, l)| *s <= pos && pos < s + l)
            else {
                anyhow::bail!("volume offset {pos} lies past the last LVM device");
            };
            let n = ((start + len - pos) as usize).min(buf.len() - done);
            vol.write_at(DATA_OFFSET + (pos - start), &buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_devices() -> SpannedVolume {
        let dev = |first_pe, name: &str| DeviceExtent {
            device_uuid: VmwareUuid::generate(1),
            first_pe,
            num_pes: 1,
            name: name.into(),
        };
        SpannedVolume {
            major_version: 5,
            minor_version: 0x15,
            volume_uuid: VmwareUuid::generate(1),
            time_us: 1_000_000,
            devices: vec![dev(0, "mkvmfs:a.img:1"), dev(1, "mkvmfs:b.img:1")],
        }
    }

    fn create(dir: &std::path::Path, name: &str) -> Volume {
        crate::layout::create(&dir.join(name), crate::Layout::Bare, partition_len_for(1)).unwrap()
    }

    #[test]
    fn writes_are_split_at_device_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let span = two_devices();
        let vols = [create(dir.path(), "a"), create(dir.path(), "b")];
        let lv = LogicalVolume::new(&span, &vols).unwrap();
        lv.write_at(PE_SIZE - 4, b"01234567").unwrap();
        let mut buf = [0u8; 4];
        vols[0]
            .read_at(DATA_OFFSET + PE_SIZE - 4, &mut buf)
            .unwrap();
        assert_eq!(&buf, b"0123");
        vols[1].read_at(DATA_OFFSET, &mut buf).unwrap();
        assert_eq!(&buf, b"4567");
        assert!(
            lv.write_at(2 * PE_SIZE - 1, b"xx").is_err(),
            "past the volume"
        );
    }

    #[test]
    fn each_device_carries_the_volume_and_its_own_pe_range() {
        let dir = tempfile::tempdir().unwrap();
        let span = two_devices();
        let vols = [create(dir.path(), "a"), create(dir.path(), "b")];
        let read = |v: &Volume, off: u64, len: usize| {
            let mut b = vec![0u8; len];
            v.read_at(DEV_HEADER_OFFSET + off, &mut b).unwrap();
            b
        };
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        for (i, v) in vols.iter().enumerate() {
            write_lvm5_device(v, &span, i).unwrap();
            let h = read(v, 0, 0x400);
            assert_eq!(h[0x82..0x92], span.devices[i].device_uuid.0, "devID");
            assert_eq!(h[0x254..0x264], span.volume_uuid.0, "lvID");
            assert_eq!(u64_at(&h, 0x200), 2 * PE_SIZE, "logicalSize");
            assert_eq!(u64_at(&h, 0x208), 4, "generation");
            assert_eq!(u64_at(&h, 0x278), i as u64, "firstPE");
            assert_eq!(u64_at(&h, 0x280), i as u64, "lastPE");
            let pe = read(v, off::PE_TABLE as u64, 128);
            assert_eq!(u64_at(&pe, 0x09), DATA_OFFSET, "pOffset");
            assert_eq!(u64_at(&pe, 0x11), i as u64 * PE_SIZE, "lOffset");
        }
        let sd = read(&vols[0], off::SD_TABLE as u64, 512);
        assert!(sd.starts_with(b"mkvmfs:a.img:1\0"));
        assert!(sd[256..].starts_with(b"mkvmfs:b.img:1\0"));
        assert!(
            read(&vols[1], off::SD_TABLE as u64, 512)
                .iter()
                .all(|&b| b == 0)
        );
    }

    #[test]
    fn uuid_text_matches_the_esxi_form() {
        let u = VmwareUuid([
            0xd5, 0x7d, 0x13, 0x61, 0x10, 0x78, 0x72, 0xd0, 0xc2, 0x7a, 0x00, 0x0c, 0x29, 0x80,
            0x16, 0x86,
        ]);
        assert_eq!(u.to_text(), "61137dd5-d0727810-7ac2-000c29801686");
    }
}
