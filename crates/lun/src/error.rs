use std::io;
use std::path::PathBuf;

/// Every failure of LUN access. Each variant names the source (LUN or path) and, for reads, the
/// offset and length that failed, because an operator debugging a SAN clone needs exactly that.
#[derive(Debug, thiserror::Error)]
pub enum LunError {
    /// The device path could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// Path that failed.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// A block device could not be opened exclusively (`EBUSY`): the kernel has it mounted or
    /// another process holds it. Restore targets refuse such devices.
    #[error(
        "cannot open {path} exclusively: {source}: it is mounted or held by another process; \
         unmount it before restoring onto it"
    )]
    Busy {
        /// Path that failed.
        path: PathBuf,
        /// OS error (EBUSY).
        #[source]
        source: io::Error,
    },
    /// The device path is neither a regular file nor a block device.
    #[error("{path} is not a regular file or block device")]
    NotADevice {
        /// Offending path.
        path: PathBuf,
    },
    /// An ioctl or stat on the device failed.
    #[error("cannot query {what} of {path}: {source}")]
    Query {
        /// Path that failed.
        path: PathBuf,
        /// What was asked (size, sector size…).
        what: &'static str,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// A read failed with an OS error.
    #[error("read of {len} bytes at offset {offset} on {name} failed: {source}")]
    Read {
        /// Name of the source (LUN id or path).
        name: String,
        /// Byte offset of the read.
        offset: u64,
        /// Length of the read.
        len: u64,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// A read returned fewer bytes than asked while still inside the reported size.
    #[error("short read on {name}: {got} of {len} bytes at offset {offset}")]
    ShortRead {
        /// Name of the source.
        name: String,
        /// Byte offset of the read.
        offset: u64,
        /// Length asked.
        len: u64,
        /// Bytes obtained.
        got: u64,
    },
    /// A read reached past the end of the source.
    #[error("read of {len} bytes at offset {offset} is past the end of {name} ({size} bytes)")]
    OutOfRange {
        /// Name of the source.
        name: String,
        /// Byte offset of the read.
        offset: u64,
        /// Length asked.
        len: u64,
        /// Size of the source.
        size: u64,
    },
    /// A layered source (for example a compressed file) found undecodable bytes.
    #[error("{name}: cannot decode data at offset {offset}: {detail}")]
    Decode {
        /// Name of the source.
        name: String,
        /// Offset (in the layered source) of the bad data.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// An extent map failed validation.
    #[error("invalid extent map for {name}: {detail}")]
    InvalidExtents {
        /// What the map describes.
        name: String,
        /// What was wrong.
        detail: String,
    },
    /// The paths given for one LUN do not show the same LUN.
    #[error("paths of LUN {lun} do not match: {detail}")]
    PathMismatch {
        /// LUN name.
        lun: String,
        /// Which check failed, with the paths.
        detail: String,
    },
    /// No path of a LUN could serve a read.
    #[error("all {paths} paths of LUN {lun} failed; last error: {last}")]
    AllPathsDown {
        /// LUN name.
        lun: String,
        /// Number of paths.
        paths: usize,
        /// The last error seen.
        last: Box<LunError>,
    },
    /// A write was attempted outside the extents a restore target permits.
    #[error("refused write of {len} bytes at offset {offset} on {name}: {detail}")]
    WriteRefused {
        /// Target name.
        name: String,
        /// Byte offset of the write.
        offset: u64,
        /// Length of the write.
        len: u64,
        /// Why it was refused.
        detail: String,
    },
    /// A write failed with an OS error.
    #[error("write of {len} bytes at offset {offset} on {name} failed: {source}")]
    Write {
        /// Target name.
        name: String,
        /// Byte offset of the write.
        offset: u64,
        /// Length of the write.
        len: u64,
        /// OS error.
        #[source]
        source: io::Error,
    },
}

impl LunError {
    /// True when the error is an I/O failure of a device path that another path might not share
    /// (EIO, ENXIO, ENODEV, ESTALE, ENOTCONN…), as opposed to a logic error such as a read past
    /// the end.
    pub fn is_path_failure(&self) -> bool {
        match self {
            LunError::Read { source, .. } => is_path_errno(source),
            LunError::ShortRead { .. } => true,
            _ => false,
        }
    }
}

fn is_path_errno(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::EIO
                | libc::ENXIO
                | libc::ENODEV
                | libc::ESTALE
                | libc::ENOTCONN
                | libc::ETIMEDOUT
                | libc::ENOLINK
                | libc::EBADF
                | libc::ENOMEDIUM
        )
    )
}
