use std::fs::{File, OpenOptions as StdOpenOptions};
use std::io;
use std::os::fd::BorrowedFd;
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

/// Largest range [`ReadAt::is_cached`] probes (it reads it into a stack buffer).
const IS_CACHED_MAX: usize = 64 << 10;

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
        let (kind, size, sector_size) = geometry_of(&file, &path)?;
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

    /// O_DIRECT read. A caller buffer that is already aligned in address, offset and length is
    /// read into directly (the streaming case: no copy). Anything else goes through a per-thread
    /// bounce buffer that is reused across reads, so cold streaming does not fault in fresh pages
    /// for every chunk.
    fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let align = self.direct_alignment();
        let aligned = offset.is_multiple_of(align as u64)
            && buf.len().is_multiple_of(align)
            && (buf.as_ptr() as usize).is_multiple_of(align);
        if aligned {
            let got = self.pread_direct(offset, buf, align)?;
            if got < buf.len() {
                return Err(self.short(offset, buf.len(), got));
            }
            return Ok(());
        }
        BOUNCE.with(|cell| {
            let mut storage = cell.borrow_mut();
            let mut done = 0usize;
            while done < buf.len() {
                let pos = offset + done as u64;
                let aligned_start = pos / align as u64 * align as u64;
                let skip = (pos - aligned_start) as usize;
                let want = (buf.len() - done).min(DIRECT_CHUNK - skip);
                let aligned_len = (skip + want).next_multiple_of(align);
                let bounce = aligned_slice(&mut storage, aligned_len, align);
                let got = self.pread_direct(aligned_start, bounce, align)?;
                if got < skip + want {
                    return Err(self.short(offset, buf.len(), done));
                }
                buf[done..done + want].copy_from_slice(&bounce[skip..skip + want]);
                done += want;
            }
            Ok(())
        })
    }

    /// Alignment of O_DIRECT offsets, lengths and buffer addresses: the logical sector size, but
    /// at least 4 KiB, because an image file's filesystem may use 4 KiB blocks.
    fn direct_alignment(&self) -> usize {
        (self.sector_size.max(512) as usize).max(4096)
    }

    fn short(&self, offset: u64, len: usize, got: usize) -> LunError {
        LunError::ShortRead {
            name: self.name.clone(),
            offset,
            len: len as u64,
            got: got as u64,
        }
    }

    /// Reads until `buf` is full or the end of the device. A transfer that ends off the
    /// alignment is the end of the device (the last partial block of an image file), because a
    /// further O_DIRECT read at an unaligned offset would fail with EINVAL.
    fn pread_direct(&self, offset: u64, buf: &mut [u8], align: usize) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => {
                    got += n;
                    if !n.is_multiple_of(align) {
                        break;
                    }
                }
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

/// A heap buffer whose bytes start at an `align`-byte boundary. Reading into one lets a direct
/// (O_DIRECT) [`DevicePath`] transfer straight into it when offset and length are aligned too,
/// instead of through a bounce buffer: streaming code should read into these.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes aligned to `align` (a power of two, for example 4096).
    pub fn new(len: usize, align: usize) -> Self {
        assert!(
            align.is_power_of_two(),
            "alignment {align} is not a power of two"
        );
        let storage = vec![0u8; len + align];
        let addr = storage.as_ptr() as usize;
        let start = addr.next_multiple_of(align) - addr;
        AlignedBuf {
            storage,
            start,
            len,
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

thread_local! {
    /// One O_DIRECT bounce buffer per reading thread (at most [`DIRECT_CHUNK`] plus alignment).
    static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An `align`-aligned slice of `len` bytes inside `storage`, growing it when needed. Offsetting
/// inside an over-allocated vector avoids any unsafe allocation code.
fn aligned_slice(storage: &mut Vec<u8>, len: usize, align: usize) -> &mut [u8] {
    if storage.len() < len + align {
        *storage = vec![0u8; (len + align).max(DIRECT_CHUNK + align)];
    }
    let addr = storage.as_ptr() as usize;
    let start = addr.next_multiple_of(align) - addr;
    &mut storage[start..start + len]
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
    fn is_cached(&self, offset: u64, len: usize) -> Option<bool> {
        use std::os::fd::AsRawFd;
        if self.direct
            || len > IS_CACHED_MAX
            || check_range(&self.name, offset, len, self.size).is_err()
        {
            return None;
        }
        let mut buf = [0u8; IS_CACHED_MAX];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let off = libc::off_t::try_from(offset).ok()?;
        // SAFETY: one iovec over a live stack buffer of at least `len` bytes, on a file
        // descriptor this path owns; RWF_NOWAIT makes the read fail with EAGAIN instead of
        // waiting for the device.
        let n = unsafe { libc::preadv2(self.file.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
        if n >= 0 {
            return Some(n as usize == len);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Some(false),
            // Kernels or filesystems without RWF_NOWAIT: cannot tell.
            _ => None,
        }
    }
    fn will_need(&self, offset: u64, len: u64) {
        // O_DIRECT reads bypass the page cache, so readahead into it would be wasted.
        if self.direct || offset >= self.size {
            return;
        }
        let len = len.min(self.size - offset);
        if let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) {
            // A hint: the kernel may ignore it, and so may we when it fails.
            use std::os::fd::AsRawFd;
            let _ = nix::fcntl::posix_fadvise(
                self.file.as_raw_fd(),
                off,
                len,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }
    fn splice_to_pipe(&self, offset: u64, len: usize, pipe: BorrowedFd<'_>) -> usize {
        // O_DIRECT promises to keep the page cache cold; splice would fill it.
        if self.direct || check_range(&self.name, offset, len, self.size).is_err() {
            return 0;
        }
        let mut done = 0usize;
        while done < len {
            let Ok(mut off) = libc::loff_t::try_from(offset + done as u64) else {
                break;
            };
            match nix::fcntl::splice(
                &self.file,
                Some(&mut off),
                pipe,
                None,
                len - done,
                nix::fcntl::SpliceFFlags::SPLICE_F_MORE,
            ) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(nix::errno::Errno::EINTR) => {}
                // EINVAL: no splice on this file; EIO and the like: the read path reports it.
                Err(_) => break,
            }
        }
        done
    }
}

/// Kind, size and logical sector size of an opened descriptor. Taken from the descriptor, not
/// the path, so a path swapped between a check and the open cannot change what is trusted.
pub(crate) fn geometry_of(file: &File, path: &Path) -> Result<(DeviceKind, u64, u32)> {
    let meta = file.metadata().map_err(|source| LunError::Query {
        path: path.to_path_buf(),
        what: "metadata",
        source,
    })?;
    let ft = meta.file_type();
    if ft.is_block_device() {
        Ok((
            DeviceKind::BlockDevice,
            block_size_of(file, path)?,
            block_sector_size(file, path)?,
        ))
    } else if ft.is_file() {
        Ok((DeviceKind::ImageFile, meta.len(), 512))
    } else {
        Err(LunError::NotADevice {
            path: path.to_path_buf(),
        })
    }
}

pub(crate) fn block_size_of(file: &File, path: &Path) -> Result<u64> {
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

pub(crate) fn block_sector_size(file: &File, path: &Path) -> Result<u32> {
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
    fn splices_file_data_into_a_pipe_and_stops_at_holes() {
        use std::io::Read;
        use std::os::fd::AsFd;
        use std::sync::Arc;

        use crate::{Extent, ExtentMap, MappedFile, Source};

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let data: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        File::create(&p).unwrap().write_all(&data).unwrap();
        let dev: Source = Arc::new(DevicePath::open(&p).unwrap());
        let ext = |logical, length, physical| Extent {
            logical,
            length,
            physical,
        };
        let map = ExtentMap::new(
            "f",
            12288,
            vec![
                ext(0, 4096, Some(8192)),
                ext(4096, 4096, None),
                ext(8192, 4096, Some(0)),
            ],
            16384,
        )
        .unwrap();
        let f = MappedFile::new(dev, map, "f").unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut reader = File::from(r);
        assert_eq!(
            f.splice_to_pipe(0, 12288, w.as_fd()),
            4096,
            "stops at the hole"
        );
        let mut got = vec![0u8; 4096];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got[..], &data[8192..12288]);
        assert_eq!(
            f.splice_to_pipe(4096, 100, w.as_fd()),
            0,
            "a hole cannot be spliced"
        );
        assert_eq!(f.splice_to_pipe(8192, 4096, w.as_fd()), 4096);
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got[..], &data[..4096]);
        assert_eq!(f.splice_to_pipe(12000, 4096, w.as_fd()), 0, "past the end");
        let direct = DevicePath::open_with(&p, OpenOptions { direct: true }).unwrap();
        if direct.is_direct() {
            assert_eq!(direct.splice_to_pipe(0, 4096, w.as_fd()), 0);
        }
    }

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
    fn direct_reads_into_aligned_buffers_and_across_chunks() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let p = dir.path().join("img");
        let len = DIRECT_CHUNK * 2 + 12_345;
        let data: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
        File::create(&p).unwrap().write_all(&data).unwrap();
        let d = DevicePath::open_with(&p, OpenOptions { direct: true }).unwrap();
        let mut storage = Vec::new();
        let buf = aligned_slice(&mut storage, DIRECT_CHUNK, 4096);
        d.read_exact_at(4096, buf).unwrap();
        assert_eq!(&buf[..], &data[4096..4096 + DIRECT_CHUNK]);
        // Unaligned, larger than one bounce chunk, ending in the partial last block.
        let mut big = vec![0u8; len - 3];
        d.read_exact_at(3, &mut big).unwrap();
        assert_eq!(&big[..], &data[3..]);
    }

    #[test]
    fn missing_path_names_the_path() {
        let e = DevicePath::open("/nonexistent/lun.img").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/lun.img"));
        let e = DevicePath::open("/dev/null").unwrap_err();
        assert!(matches!(e, LunError::NotADevice { .. }));
    }
}
