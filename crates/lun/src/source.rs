use std::os::fd::BorrowedFd;
use std::sync::Arc;

use crate::{LunError, Result};

/// A positional, thread-safe byte source: a LUN, a partition, or a file inside a filesystem.
///
/// Implementations must be usable from many threads at once (`&self`), because concurrent
/// streams of different VM files read the same LUN in parallel.
pub trait ReadAt: Send + Sync {
    /// Reads exactly `buf.len()` bytes starting at `offset`. Reading past [`ReadAt::size`] is an
    /// [`LunError::OutOfRange`] error; nothing is ever silently short.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Size of the source in bytes.
    fn size(&self) -> u64;

    /// A human-readable name used in error messages (LUN id, path, or file path inside a
    /// filesystem).
    fn name(&self) -> &str;

    /// Moves up to `len` bytes at `offset` straight into the pipe `pipe` with the kernel's
    /// splice, so file data reaches a pipe without a copy through user space, and returns how
    /// many bytes were moved. A result short of `len` (0 where the source cannot splice: a
    /// hole, decoded data, O_DIRECT, a filesystem without splice) means the caller delivers the
    /// rest with [`ReadAt::read_exact_at`]. Failures are never reported here: the ordinary read
    /// path that follows handles them with its path failover and error context.
    fn splice_to_pipe(&self, offset: u64, len: usize, pipe: BorrowedFd<'_>) -> usize {
        let _ = (offset, len, pipe);
        0
    }

    /// Says that `[offset, offset + len)` will be read soon, so the source can start fetching it
    /// in the background (the kernel's readahead, `POSIX_FADV_WILLNEED`). Many small reads
    /// announced at once reach a cold LUN as one deep queue instead of one read at a time.
    /// Only a hint: it never fails and never changes what a read returns.
    fn will_need(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// Whether `[offset, offset + len)` can be read right now without waiting for the device
    /// (it sits in the page cache), when the source can tell cheaply; `None` when it cannot.
    /// Lets a caller skip read-ahead work on a warm LUN. `len` is at most 64 KiB. A device
    /// path asks with a read that must not wait: on a device fast enough to finish the
    /// read-ahead that read starts within the call, the answer is yes, and then announcing
    /// reads to it is indeed not worth it (measured: cold VMFS6 inventory 0.35–0.68 s this way,
    /// 0.61–1.33 s when the probe answered by page-cache residency alone).
    fn is_cached(&self, offset: u64, len: usize) -> Option<bool> {
        let _ = (offset, len);
        None
    }

    /// True when every byte of `[offset, offset + len)` is known to be a hole, so a streamer can
    /// send zeros without reading (or zero-filling) anything. `false` means "read it", never
    /// "it holds data".
    fn is_hole(&self, offset: u64, len: usize) -> bool {
        let _ = (offset, len);
        false
    }
}

/// The shared handle every layer passes around.
pub type Source = Arc<dyn ReadAt>;

/// `ReadAt` for a pointer type, every method handed to the pointee: one list, so a method
/// added to the trait cannot be forgotten by one of the wrappers.
macro_rules! forward_read_at {
    ($($ptr:ty),+) => {$(
        impl<T: ReadAt + ?Sized> ReadAt for $ptr {
            fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
                (**self).read_exact_at(offset, buf)
            }
            fn is_hole(&self, offset: u64, len: usize) -> bool {
                (**self).is_hole(offset, len)
            }
            fn will_need(&self, offset: u64, len: u64) {
                (**self).will_need(offset, len)
            }
            fn is_cached(&self, offset: u64, len: usize) -> Option<bool> {
                (**self).is_cached(offset, len)
            }
            fn splice_to_pipe(&self, offset: u64, len: usize, pipe: BorrowedFd<'_>) -> usize {
                (**self).splice_to_pipe(offset, len, pipe)
            }
            fn size(&self) -> u64 {
                (**self).size()
            }
            fn name(&self) -> &str {
                (**self).name()
            }
        }
    )+};
}

forward_read_at!(Arc<T>, &T, Box<T>);

/// Checks that `[offset, offset + len)` lies inside a source of `size` bytes.
pub(crate) fn check_range(name: &str, offset: u64, len: usize, size: u64) -> Result<()> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(LunError::OutOfRange {
            name: name.to_string(),
            offset,
            len: len as u64,
            size,
        }),
    }
}

/// Convenience reads on any [`ReadAt`].
pub trait ReadAtExt: ReadAt {
    /// Reads `len` bytes at `offset` into a new vector. `len` is checked against the source size
    /// before allocating, so a corrupt on-disk length cannot cause an oversized allocation.
    fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        check_range(self.name(), offset, len, self.size())?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// Reads as much as is available at `offset` into `buf`, up to the end of the source, and
    /// returns the number of bytes read (0 at or past the end).
    fn read_at_most(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let size = self.size();
        if offset >= size {
            return Ok(0);
        }
        let n = (size - offset).min(buf.len() as u64) as usize;
        self.read_exact_at(offset, &mut buf[..n])?;
        Ok(n)
    }
}

impl<T: ReadAt + ?Sized> ReadAtExt for T {}

/// A byte range of another source, such as a partition of a LUN or an LVM extent.
pub struct Window {
    base: Source,
    start: u64,
    len: u64,
    name: String,
}

impl Window {
    /// A window of `len` bytes at `start` of `base`. Fails when the range does not lie inside
    /// `base`.
    pub fn new(base: Source, start: u64, len: u64, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let fits = start.checked_add(len).is_some_and(|end| end <= base.size());
        if !fits {
            return Err(LunError::OutOfRange {
                name: base.name().to_string(),
                offset: start,
                len,
                size: base.size(),
            });
        }
        Ok(Window {
            base,
            start,
            len,
            name,
        })
    }

    /// Offset of the window on its base source.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The source this window reads from.
    pub fn base(&self) -> &Source {
        &self.base
    }
}

impl ReadAt for Window {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.name, offset, buf.len(), self.len)?;
        self.base.read_exact_at(self.start + offset, buf)
    }
    fn splice_to_pipe(&self, offset: u64, len: usize, pipe: BorrowedFd<'_>) -> usize {
        if check_range(&self.name, offset, len, self.len).is_err() {
            return 0;
        }
        self.base.splice_to_pipe(self.start + offset, len, pipe)
    }
    fn is_cached(&self, offset: u64, len: usize) -> Option<bool> {
        check_range(&self.name, offset, len, self.len).ok()?;
        self.base.is_cached(self.start + offset, len)
    }
    fn will_need(&self, offset: u64, len: u64) {
        if offset < self.len {
            self.base
                .will_need(self.start + offset, len.min(self.len - offset));
        }
    }
    fn size(&self) -> u64 {
        self.len
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemSource;

    #[test]
    fn window_reads_inside_and_refuses_outside() {
        let base: Source = Arc::new(MemSource::new("m", (0u8..=255).collect()));
        let w = Window::new(base.clone(), 10, 20, "w").unwrap();
        let mut b = [0u8; 4];
        w.read_exact_at(16, &mut b).unwrap();
        assert_eq!(b, [26, 27, 28, 29]);
        assert!(matches!(
            w.read_exact_at(18, &mut b),
            Err(LunError::OutOfRange { .. })
        ));
        assert!(Window::new(base, 250, 10, "x").is_err());
    }

    #[test]
    fn read_vec_checks_before_allocating() {
        let m = MemSource::new("m", vec![1; 16]);
        assert!(m.read_vec(0, usize::MAX / 2).is_err());
        assert_eq!(m.read_vec(8, 8).unwrap(), vec![1; 8]);
        let mut buf = [0u8; 32];
        assert_eq!(m.read_at_most(10, &mut buf).unwrap(), 6);
    }
}
