use std::fs::{File, OpenOptions as StdOpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::path::geometry_of;
use crate::{DeviceKind, ExtentMap, LunError, Result};

/// The only writable device type in lunproxy: a restore destination (an image file or a block
/// device) that may be written solely inside the data extents of one [`ExtentMap`].
///
/// It is never obtained from a [`crate::DevicePath`] or [`crate::Lun`]; it is opened separately,
/// by explicit request, with `O_RDWR | O_CLOEXEC | O_EXCL`. On Linux, `O_EXCL` without `O_CREAT`
/// claims a block device exclusively, so a device that the kernel has mounted (or that another
/// process holds exclusively) is refused with `EBUSY`; on regular files the flag has no effect.
///
/// Every write is checked against the map before a single byte is written, so a refused write
/// leaves the target untouched.
#[derive(Debug)]
pub struct RestoreTarget {
    path: PathBuf,
    name: String,
    file: File,
    kind: DeviceKind,
    size: u64,
    sector_size: u32,
    map: ExtentMap,
    /// The device ranges `[start, end)` of the map's data extents, sorted and merged, so that
    /// [`RestoreTarget::write_physical`] checks a write with one binary search.
    allowed: Vec<(u64, u64)>,
}

impl RestoreTarget {
    /// Opens `path` for writing inside `map`. The map is validated again against the target's
    /// size, so a map made for a larger device is refused here rather than at write time. The
    /// target must exist: restores never create devices or image files implicitly.
    pub fn open(path: impl AsRef<Path>, map: ExtentMap) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = StdOpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_EXCL)
            .open(&path)
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::EBUSY) {
                    LunError::Busy {
                        path: path.clone(),
                        source,
                    }
                } else {
                    LunError::Open {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        // The kind is taken from the opened descriptor, not from the path, so that a path swapped
        // between a check and the open cannot turn a block device into an unchecked one.
        let (kind, size, sector_size) = geometry_of(&file, &path)?;
        let name = path.display().to_string();
        let map = ExtentMap::new(&name, map.size(), map.extents().to_vec(), size)?;
        let allowed = merged_data_ranges(&map);
        Ok(RestoreTarget {
            path,
            name,
            file,
            kind,
            size,
            sector_size,
            map,
            allowed,
        })
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Image file or block device.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Size of the target in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Logical sector size (512 for image files).
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// The extent map writes are confined to.
    pub fn map(&self) -> &ExtentMap {
        &self.map
    }

    /// Writes `data` at file offset `file_offset` of the mapped file, following the map onto the
    /// device. Refused, with nothing written, when any byte falls in a hole or past the file size.
    pub fn write_at(&self, file_offset: u64, data: &[u8]) -> Result<()> {
        let pieces = self.plan_file_write(file_offset, data.len())?;
        let mut done = 0usize;
        for (physical, len) in pieces {
            self.pwrite_all(physical, &data[done..done + len])?;
            done += len;
        }
        Ok(())
    }

    /// Writes `data` at byte `device_offset` of the target. Refused, with nothing written, unless
    /// the whole range lies inside the map's data extents.
    pub fn write_physical(&self, device_offset: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        let covered = device_offset
            .checked_add(len)
            .is_some_and(|end| self.covers(device_offset, end));
        if !covered {
            return Err(self.refused(
                device_offset,
                len,
                "the device range is not inside the data extents of the file being restored".into(),
            ));
        }
        self.pwrite_all(device_offset, data)
    }

    /// Flushes written data to stable storage (`fdatasync`).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|source| LunError::Write {
            name: self.name.clone(),
            offset: 0,
            len: 0,
            source,
        })
    }

    /// Splits a file-range write into device pieces, refusing it as a whole if any part is a hole
    /// or outside the file. Nothing is written here, which is what makes refusals atomic.
    fn plan_file_write(&self, file_offset: u64, len: usize) -> Result<Vec<(u64, usize)>> {
        let len64 = len as u64;
        let end = file_offset
            .checked_add(len64)
            .filter(|&end| end <= self.map.size())
            .ok_or_else(|| {
                self.refused(
                    file_offset,
                    len64,
                    format!("past the end of the file ({} bytes)", self.map.size()),
                )
            })?;
        let mut pieces = Vec::new();
        if len == 0 {
            return Ok(pieces);
        }
        let extents = self.map.extents();
        let mut i = self
            .map
            .index_of(file_offset)
            .expect("a non-empty range inside the file has a first extent");
        let mut pos = file_offset;
        while pos < end {
            let e = &extents[i];
            let within = pos - e.logical;
            let n = (e.length - within).min(end - pos);
            let Some(physical) = e.physical else {
                return Err(self.refused(
                    file_offset,
                    len64,
                    format!(
                        "file bytes {pos}..{} are a hole; a restore may only write allocated extents",
                        pos + n
                    ),
                ));
            };
            pieces.push((physical + within, n as usize));
            pos += n;
            i += 1;
        }
        Ok(pieces)
    }

    fn covers(&self, start: u64, end: u64) -> bool {
        if start == end {
            return true;
        }
        let i = self.allowed.partition_point(|&(_, e)| e <= start);
        self.allowed
            .get(i)
            .is_some_and(|&(s, e)| s <= start && end <= e)
    }

    fn refused(&self, offset: u64, len: u64, detail: String) -> LunError {
        LunError::WriteRefused {
            name: self.name.clone(),
            offset,
            len,
            detail,
        }
    }

    fn pwrite_all(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut written = 0usize;
        while written < data.len() {
            match self
                .file
                .write_at(&data[written..], offset + written as u64)
            {
                Ok(0) => {
                    return Err(LunError::Write {
                        name: self.name.clone(),
                        offset,
                        len: data.len() as u64,
                        source: io::Error::from(io::ErrorKind::WriteZero),
                    });
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LunError::Write {
                        name: self.name.clone(),
                        offset,
                        len: data.len() as u64,
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Sorted, merged device ranges of the map's data extents. Touching or overlapping ranges merge,
/// so a write spanning two physically adjacent extents is one covered range.
fn merged_data_ranges(map: &ExtentMap) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = map
        .extents()
        .iter()
        .filter_map(|e| e.physical.map(|p| (p, p + e.length)))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::{Extent, ExtentMapBuilder};

    fn ext(logical: u64, length: u64, physical: Option<u64>) -> Extent {
        Extent {
            logical,
            length,
            physical,
        }
    }

    /// A 64 KiB target file filled with 0xEE and a map of a 12 KiB file: 4 KiB at device 8 KiB,
    /// a 4 KiB hole, 4 KiB at device 32 KiB.
    fn fixture() -> (tempfile::TempDir, PathBuf, ExtentMap) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("target.img");
        File::create(&p).unwrap().write_all(&[0xEE; 65536]).unwrap();
        let map = ExtentMap::new(
            "f",
            12288,
            vec![
                ext(0, 4096, Some(8192)),
                ext(4096, 4096, None),
                ext(8192, 4096, Some(32768)),
            ],
            65536,
        )
        .unwrap();
        (dir, p, map)
    }

    #[test]
    fn writes_follow_the_map() {
        let (_d, p, map) = fixture();
        let t = RestoreTarget::open(&p, map).unwrap();
        assert_eq!(t.kind(), DeviceKind::ImageFile);
        t.write_at(4000, &[1u8; 96]).unwrap();
        t.write_at(8192, &[2u8; 4096]).unwrap();
        t.write_physical(8192, &[3u8; 10]).unwrap();
        t.sync().unwrap();
        let img = std::fs::read(&p).unwrap();
        assert_eq!(&img[8192..8202], &[3u8; 10]);
        assert!(img[8202..12192].iter().all(|&b| b == 0xEE));
        assert_eq!(&img[12192..12288], &[1u8; 96][..]);
        assert_eq!(&img[32768..36864], &[2u8; 4096][..]);
        assert!(img[..8192].iter().all(|&b| b == 0xEE));
        assert!(img[36864..].iter().all(|&b| b == 0xEE));
    }

    #[test]
    fn refused_writes_leave_the_target_untouched() {
        let (_d, p, map) = fixture();
        let before = std::fs::read(&p).unwrap();
        let t = RestoreTarget::open(&p, map).unwrap();
        // Starts in data, runs into the hole: the data part must not be written either.
        let e = t.write_at(4000, &[1u8; 200]).unwrap_err();
        assert!(matches!(e, LunError::WriteRefused { .. }), "{e}");
        assert!(e.to_string().contains("hole"), "{e}");
        // Past the end of the file.
        let e = t.write_at(12000, &[1u8; 300]).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
        assert!(t.write_at(u64::MAX, &[1u8; 2]).is_err());
        // Physical writes: before, straddling, between and after the data extents.
        for (off, len) in [
            (0u64, 10usize),
            (8000, 400),
            (12288, 1),
            (36860, 8),
            (60000, 10),
        ] {
            let e = t.write_physical(off, &vec![9u8; len]).unwrap_err();
            assert!(matches!(e, LunError::WriteRefused { .. }), "{off}: {e}");
        }
        assert!(t.write_physical(u64::MAX - 1, &[1u8; 4]).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn a_map_larger_than_the_target_is_refused_at_open() {
        let (_d, p, _) = fixture();
        let big = ExtentMap::new("f", 4096, vec![ext(0, 4096, Some(65536))], 1 << 20).unwrap();
        let e = RestoreTarget::open(&p, big).unwrap_err();
        assert!(matches!(e, LunError::InvalidExtents { .. }), "{e}");
        assert!(
            RestoreTarget::open(
                "/nonexistent/target",
                ExtentMapBuilder::new(0).finish("f", 0).unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn adjacent_extents_form_one_writable_range() {
        let (_d, p, _) = fixture();
        // Two file extents stored back to back on the device, in reverse file order.
        let map = ExtentMap::new(
            "f",
            8192,
            vec![ext(0, 4096, Some(4096)), ext(4096, 4096, Some(0))],
            65536,
        )
        .unwrap();
        let t = RestoreTarget::open(&p, map).unwrap();
        t.write_physical(0, &[5u8; 8192]).unwrap();
        assert!(t.write_physical(0, &[5u8; 8193]).is_err());
    }

    proptest! {
        /// Whatever is asked, a write lands only on bytes the map allows, and a refused write
        /// changes nothing.
        #[test]
        fn writes_never_escape_the_map(
            ops in proptest::collection::vec((any::<bool>(), 0u64..70000, 0usize..9000), 1..12)
        ) {
            let (_d, p, map) = fixture();
            let allowed = merged_data_ranges(&map);
            let t = Arc::new(RestoreTarget::open(&p, map).unwrap());
            for (physical, off, len) in ops {
                let before = std::fs::read(&p).unwrap();
                let r = if physical {
                    t.write_physical(off, &vec![0x11; len])
                } else {
                    t.write_at(off, &vec![0x22; len])
                };
                let after = std::fs::read(&p).unwrap();
                if r.is_err() {
                    prop_assert_eq!(&before, &after);
                }
                for (i, (a, b)) in before.iter().zip(&after).enumerate() {
                    if a != b {
                        let i = i as u64;
                        prop_assert!(allowed.iter().any(|&(s, e)| s <= i && i < e), "byte {} changed", i);
                    }
                }
            }
        }
    }
}
