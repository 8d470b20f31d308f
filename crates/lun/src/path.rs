use std::fs::{File, OpenOptions as StdOpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::source::check_range;
use crate::{LunError, ReadAt, Result};

/// What kind of object a device path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// A regular file holding a LUN image.
    ImageFile,
    /// A block device node.
    BlockDevice,
}

/// How to open a device path.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Read with O_DIRECT (sector-aligned bounce buffers), bypassing the page cache. Falls back
    /// to buffered reads where the filesystem refuses O_DIRECT (tmpfs).
    pub direct: bool,
}

/// Largest single O_DIRECT transfer; bigger reads are split, so the bounce buffer stays bounded.
const DIRECT_CHUNK: usize = 4 << 20;

/// One read-only path to a LUN: an image file or a block device, opened `O_RDONLY | O_CLOEXEC`.
/// There is no way to write through this type.
#[derive(Debug)]
pub struct DevicePath {
    path: PathBuf,
    name: String,
    file: File,
    kind: DeviceKind,
    size: u64,
    sector_size: u32,
    direct: bool,
}

nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);
nix::ioctl_read_bad!(blk_get_sector_size, 0x1268, libc::c_int);

impl DevicePath {
    /// Opens `path` read-only with default options (buffered).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, OpenOptions::default())
    }

    /// Opens `path` read-only.
    pub fn open_with(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let open_path = path.clone();
        let open = move |flags: i32| {
            StdOpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC | flags)
                .open(&open_path)
        };
        let (file, direct) = if opts.direct {
            match open(libc::O_DIRECT) {
                Ok(f) => (Ok(f), true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(path = %path.display(), "O_DIRECT refused, reading buffered");
                    (open(0), false)
                }
                Err(e) => (Err(e), false),
            }
        } else {
            (open(0), false)
        };
        let file = file.map_err(|source| LunError::Open {
            path: path.clone(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| LunError::Query {
            path: path.clone(),
            what: "metadata",
            source,
        })?;
        let ft = meta.file_type();
        let (kind, size, sector_size) = if ft.is_block_device() {
            (
                DeviceKind::BlockDevice,
                block_size_of(&file, &path)?,
                block_sector_size(&file, &path)?,
            )
        } else if ft.is_file() {
            (DeviceKind::ImageFile, meta.len(), 512)
        } else {
            return Err(LunError::NotADevice { path });
        };
        let mut dev = DevicePath {
            name: path.display().to_string(),
            path,
            file,
            kind,
            size,
            sector_size,
            direct,
        };
        if dev.direct && dev.size > 0 {
            // Some filesystems accept O_DIRECT at open and refuse it at read time.
            let mut probe = [0u8; 1];
            if let Err(e) = dev.read_exact_at(0, &mut probe)
                && matches!(&e, LunError::Read { source, .. } if source.raw_os_error() == Some(libc::EINVAL))
            {
                dev.file = open(0).map_err(|source| LunError::Open {
                    path: dev.path.clone(),
                    source,
                })?;
                dev.direct = false;
            }
        }
        Ok(dev)
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Image file or block device.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Logical sector size (512 for image files).
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// True when reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn pread_full(&self, mut offset: u64, mut buf: &mut [u8]) -> Result<()> {
        let (start, len) = (offset, buf.len() as u64);
        while !buf.is_empty() {
            match self.file.read_at(buf, offset) {
                Ok(0) => {
                    return Err(LunError::ShortRead {
                        name: self.name.clone(),
                        offset: start,
                        len,
                        got: offset - start,
                    });
                }
                Ok(n) => {
                    offset += n as u64;
                    buf = &mut buf[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LunError::Read {
                        name: self.name.clone(),
                        offset: start,
                        len,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let align = u64::from(self.sector_size.max(512)).max(4096);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let aligned_start = pos / align * align;
            let skip = (pos - aligned_start) as usize;
            let want = (buf.len() - done).min(DIRECT_CHUNK - skip);
            let aligned_end = (pos + want as u64).div_ceil(align) * align;
            // The device size may not be a multiple of the alignment: the tail read is short.
            let aligned_len = (aligned_end.min(self.size.div_ceil(align) * align) - aligned_start) as usize;
            let mut bounce = AlignedBuf::new(aligned_len, align as usize);
            let got = self.pread_direct(aligned_start, bounce.as_mut_slice())?;
            if got < skip + want {
                return Err(LunError::ShortRead {
                    name: self.name.clone(),
                    offset,
                    len: buf.len() as u64,
                    got: done as u64,
                });
            }
            buf[done..done + want].copy_from_slice(&bounce.as_mut_slice()[skip..skip + want]);
            done += want;
        }
        Ok(())
    }

    fn pread_direct(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LunError::Read {
                        name: self.name.clone(),
                        offset,
                        len: buf.len() as u64,
                        source,
                    });
                }
            }
        }
        Ok(got)
    }
}

impl ReadAt for DevicePath {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.name, offset, buf.len(), self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.direct {
            self.read_direct(offset, buf)
        } else {
            self.pread_full(offset, buf)
        }
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// A heap buffer whose usable slice starts at an `align`-byte boundary, as O_DIRECT requires.
/// Over-allocating and offsetting avoids any unsafe allocation code.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> Self {
        let storage = vec![0u8; len + align];
        let addr = storage.as_ptr() as usize;
        let start = addr.next_multiple_of(align) - addr;
        AlignedBuf {
            storage,
            start,
            len,
        }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn block_size_of(file: &File, path: &Path) -> Result<u64> {
    use std::os::fd::AsRawFd;
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live local.
    unsafe { blk_get_size64(file.as_raw_fd(), &mut size) }.map_err(|e| LunError::Query {
        path: path.to_path_buf(),
        what: "size (BLKGETSIZE64)",
        source: io::Error::from(e),
    })?;
    Ok(size)
}

fn block_sector_size(file: &File, path: &Path) -> Result<u32> {
    use std::os::fd::AsRawFd;
    let mut ssz: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one c_int through the pointer, which points at a live local.
    unsafe { blk_get_sector_size(file.as_raw_fd(), &mut ssz) }.map_err(|e| LunError::Query {
        path: path.to_path_buf(),
        what: "logical sector size (BLKSSZGET)",
        source: io::Error::from(e),
    })?;
    u32::try_from(ssz)
        .ok()
        .filter(|s| s.is_power_of_two() && (512..=65536).contains(s))
        .ok_or_else(|| LunError::Query {
            path: path.to_path_buf(),
            what: "logical sector size (BLKSSZGET)",
            source: io::Error::other(format!("implausible sector size {ssz}")),
        })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn image_file_reads_buffered_and_direct() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let p = dir.path().join("img");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        File::create(&p).unwrap().write_all(&data).unwrap();
        for direct in [false, true] {
            let d = DevicePath::open_with(&p, OpenOptions { direct }).unwrap();
            assert_eq!(d.size(), 100_000);
            assert_eq!(d.kind(), DeviceKind::ImageFile);
            let mut b = vec![0u8; 9000];
            d.read_exact_at(4097, &mut b).unwrap();
            assert_eq!(&b[..], &data[4097..13097]);
            let mut tail = vec![0u8; 10];
            d.read_exact_at(99_990, &mut tail).unwrap();
            assert_eq!(&tail[..], &data[99_990..]);
            assert!(d.read_exact_at(99_995, &mut tail).is_err());
        }
    }

    #[test]
    fn missing_path_names_the_path() {
        let e = DevicePath::open("/nonexistent/lun.img").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/lun.img"));
        let e = DevicePath::open("/dev/null").unwrap_err();
        assert!(matches!(e, LunError::NotADevice { .. }));
    }
}
