//! The NTFS boot sector (sector 0 of the volume): geometry and the location of $MFT.

use fscore::le;

use crate::error::{NtfsError, Result};

/// Size of the boot sector structure that is decoded (the first 512 bytes).
pub const BOOT_SECTOR_LEN: usize = 512;

/// Largest cluster Windows formats (2 MiB).
pub const MAX_CLUSTER_SIZE: u64 = 2 << 20;
/// Largest MFT / index record accepted. Windows uses 1 KiB or 4 KiB MFT records and 4 KiB
/// index records; 64 KiB leaves room without letting a corrupt field drive allocations.
pub const MAX_RECORD_SIZE: u32 = 64 << 10;

/// Validated geometry of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSector {
    /// 0x0B: bytes per sector (256…4096, a power of two).
    pub bytes_per_sector: u32,
    /// Cluster size in bytes, from 0x0D sectors per cluster (values above 0x80 encode
    /// 2^(256 - value) sectors).
    pub cluster_size: u64,
    /// 0x28: total sectors of the volume.
    pub total_sectors: u64,
    /// 0x30: cluster number of the first cluster of $MFT.
    pub mft_lcn: u64,
    /// 0x38: cluster number of $MFTMirr.
    pub mft_mirr_lcn: u64,
    /// MFT record size in bytes, from the signed 0x40 field (positive: clusters; negative: 2^-v
    /// bytes).
    pub mft_record_size: u32,
    /// Index record size in bytes, from the signed 0x44 field, encoded like 0x40.
    pub index_record_size: u32,
    /// 0x48: volume serial number.
    pub serial: u64,
}

impl BootSector {
    /// Size of the volume in bytes (total sectors × bytes per sector).
    pub fn volume_size(&self) -> u64 {
        self.total_sectors * u64::from(self.bytes_per_sector)
    }

    /// Number of clusters of the volume; no data run may reach past it.
    pub fn total_clusters(&self) -> u64 {
        self.volume_size() / self.cluster_size
    }

    /// Decodes and validates every geometry field of `b` (at least 512 bytes), before anything
    /// is allocated from them. `device` names the device in errors and `device_size` is its size
    /// in bytes.
    pub fn parse(b: &[u8], device: &str, device_size: u64) -> Result<BootSector> {
        let bad = |offset: u64, detail: String| NtfsError::Corrupt {
            device: device.to_string(),
            structure: "boot sector",
            record: None,
            offset,
            detail,
        };
        if b.len() < BOOT_SECTOR_LEN {
            return Err(bad(0, format!("only {} bytes", b.len())));
        }
        if le::bytes_at(b, 3, 8) != Some(b"NTFS    ") {
            return Err(bad(3, "OEM id is not \"NTFS    \"".into()));
        }
        if le::u16_at(b, 0x1FE) != Some(0xAA55) {
            return Err(bad(0x1FE, "missing 0x55AA end-of-sector marker".into()));
        }
        let bps = u32::from(le::u16_at(b, 0x0B).unwrap_or(0));
        if !(256..=4096).contains(&bps) || !bps.is_power_of_two() {
            return Err(bad(
                0x0B,
                format!("bytes per sector {bps} is not a power of two in 256..=4096"),
            ));
        }
        let spc_raw = le::u8_at(b, 0x0D).unwrap_or(0);
        let spc: u64 = match spc_raw {
            0 => return Err(bad(0x0D, "sectors per cluster is 0".into())),
            1..=0x80 => u64::from(spc_raw),
            // Clusters above 64 KiB store the negative base-2 logarithm of the sector count.
            _ => {
                let shift = 256 - u32::from(spc_raw);
                if shift > 20 {
                    return Err(bad(
                        0x0D,
                        format!("sectors per cluster 2^{shift} (raw {spc_raw:#x}) is too large"),
                    ));
                }
                1u64 << shift
            }
        };
        if !spc.is_power_of_two() {
            return Err(bad(
                0x0D,
                format!("sectors per cluster {spc} is not a power of two"),
            ));
        }
        let cluster_size = spc * u64::from(bps);
        if !(512..=MAX_CLUSTER_SIZE).contains(&cluster_size) {
            return Err(bad(
                0x0D,
                format!("cluster size {cluster_size} is outside 512 B..=2 MiB"),
            ));
        }
        let record_size = |off: usize, what: &str| -> Result<u32> {
            let raw = le::u8_at(b, off).unwrap_or(0) as i8;
            let size: u64 = if raw > 0 {
                (raw as u64) * cluster_size
            } else if (-31..0).contains(&raw) {
                1u64 << (-(raw as i32))
            } else {
                return Err(bad(off as u64, format!("{what} size field is {raw}")));
            };
            if !size.is_power_of_two() || !(512..=u64::from(MAX_RECORD_SIZE)).contains(&size) {
                return Err(bad(
                    off as u64,
                    format!(
                        "{what} size {size} (raw {raw}) is not a power of two in 512..={MAX_RECORD_SIZE}"
                    ),
                ));
            }
            Ok(size as u32)
        };
        let mft_record_size = record_size(0x40, "MFT record")?;
        let index_record_size = record_size(0x44, "index record")?;
        let total_sectors = le::u64_at(b, 0x28).unwrap_or(0);
        let volume_size = total_sectors
            .checked_mul(u64::from(bps))
            .ok_or_else(|| bad(0x28, format!("total sectors {total_sectors} overflows")))?;
        if volume_size < cluster_size * 16 {
            return Err(bad(
                0x28,
                format!("volume of {volume_size} bytes is too small"),
            ));
        }
        if volume_size > device_size {
            return Err(bad(
                0x28,
                format!(
                    "volume claims {volume_size} bytes but the device has only {device_size} \
                     (truncated clone?)"
                ),
            ));
        }
        let total_clusters = volume_size / cluster_size;
        let mft_lcn = le::u64_at(b, 0x30).unwrap_or(u64::MAX);
        if mft_lcn == 0 || mft_lcn >= total_clusters {
            return Err(bad(
                0x30,
                format!("$MFT cluster {mft_lcn} is outside the volume ({total_clusters} clusters)"),
            ));
        }
        let mft_mirr_lcn = le::u64_at(b, 0x38).unwrap_or(u64::MAX);
        if mft_mirr_lcn >= total_clusters {
            return Err(bad(
                0x38,
                format!("$MFTMirr cluster {mft_mirr_lcn} is outside the volume"),
            ));
        }
        Ok(BootSector {
            bytes_per_sector: bps,
            cluster_size,
            total_sectors,
            mft_lcn,
            mft_mirr_lcn,
            mft_record_size,
            index_record_size,
            serial: le::u64_at(b, 0x48).unwrap_or(0),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plausible boot sector: 512-byte sectors, 8 sectors per cluster, 1 KiB MFT records,
    /// 4 KiB index records, 64 MiB volume.
    pub fn sample() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[3..11].copy_from_slice(b"NTFS    ");
        b[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        b[0x0D] = 8;
        b[0x28..0x30].copy_from_slice(&(131071u64).to_le_bytes());
        b[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        b[0x38..0x40].copy_from_slice(&2u64.to_le_bytes());
        b[0x40] = 0xF6; // -10: 1 KiB
        b[0x44] = 1; // one cluster
        b[0x48..0x50].copy_from_slice(&0x1234_5678_9ABC_DEF0u64.to_le_bytes());
        b[0x1FE] = 0x55;
        b[0x1FF] = 0xAA;
        b
    }

    #[test]
    fn decodes_geometry() {
        let bs = BootSector::parse(&sample(), "d", 64 << 20).unwrap();
        assert_eq!(bs.cluster_size, 4096);
        assert_eq!(bs.mft_record_size, 1024);
        assert_eq!(bs.index_record_size, 4096);
        assert_eq!(bs.mft_lcn, 4);
        assert_eq!(bs.volume_size(), 131071 * 512);
    }

    #[test]
    fn negative_cluster_encoding() {
        let mut b = sample();
        b[0x0D] = 0xF4; // 2^12 sectors of 512 B = 2 MiB
        b[0x28..0x30].copy_from_slice(&(1u64 << 20).to_le_bytes());
        b[0x44] = 0xF4; // 4 KiB index records
        let bs = BootSector::parse(&b, "d", 1 << 30).unwrap();
        assert_eq!(bs.cluster_size, 2 << 20);
        assert_eq!(bs.index_record_size, 4096);
        b[0x0D] = 0xF3; // 4 MiB: too big
        assert!(BootSector::parse(&b, "d", 1 << 30).is_err());
    }

    #[test]
    fn rejects_bad_fields() {
        let cases: Vec<(usize, &[u8])> = vec![
            (3, b"XFS "),
            (0x0B, &[0, 1]),    // 256: ok size but see below
            (0x0B, &[0, 0x20]), // 8192
            (0x0B, &[0x01, 2]), // 513
            (0x0D, &[0]),
            (0x0D, &[3]),
            (0x40, &[0]),
            (0x40, &[0x20]), // 32 clusters = 128 KiB
            (0x40, &[0xF7]), // 512 B fine; check below
            (0x44, &[0x81]),
            (0x30, &[0, 0, 0, 0, 0, 0, 0, 0]),
            (0x30, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            (0x28, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            (0x1FE, &[0, 0]),
        ];
        for (off, bytes) in cases {
            let mut b = sample();
            b[off..off + bytes.len()].copy_from_slice(bytes);
            let r = BootSector::parse(&b, "d", 64 << 20);
            let valid = (off == 0x0B && bytes == [0, 1]) || (off == 0x40 && bytes == [0xF7]);
            assert_eq!(r.is_ok(), valid, "offset {off:#x} bytes {bytes:?}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("boot sector"), "{e}");
            }
        }
        assert!(BootSector::parse(&sample()[..100], "d", 64 << 20).is_err());
        // A device smaller than the volume is a truncated clone.
        assert!(BootSector::parse(&sample(), "d", 1 << 20).is_err());
    }
}
