use fscore::FsError;
use lun::LunError;

/// Every failure of the VMFS reader. Variants name the structure that failed, where it lies
/// (file descriptor address, byte offset) and on which device, because an operator looking at a
/// cloned datastore needs exactly that to judge whether the clone or the reader is at fault.
#[derive(Debug, thiserror::Error)]
pub enum VmfsError {
    /// An on-disk structure is invalid.
    #[error("vmfs: corrupt {structure} at byte offset {offset} of {device}: {detail}")]
    Corrupt {
        /// Structure name as the format documents it (LVM device header, FS3 descriptor, FD…).
        structure: String,
        /// Device (or volume) the offset refers to.
        device: String,
        /// Byte offset of the structure.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// A file descriptor (or a structure reached from it) is invalid.
    #[error("vmfs: corrupt {structure} of file descriptor {fd:#x} on {device}: {detail}")]
    CorruptFile {
        /// Structure name (FD, pointer block, directory block…).
        structure: String,
        /// The file descriptor address (the file's inode number).
        fd: u64,
        /// Volume name.
        device: String,
        /// What was wrong.
        detail: String,
    },
    /// Nothing VMFS-like is on the device.
    #[error("{device}: not a VMFS partition: {detail}")]
    NotVmfs {
        /// Device name.
        device: String,
        /// What was seen instead.
        detail: String,
    },
    /// A valid feature this reader does not implement.
    #[error("vmfs: unsupported: {feature}")]
    Unsupported {
        /// What is not supported.
        feature: String,
    },
    /// The devices given do not form one volume.
    #[error("vmfs: devices do not form one volume: {detail}")]
    VolumeMismatch {
        /// Which device disagrees, and how.
        detail: String,
    },
    /// A spanned volume lacks one of its extents.
    #[error("vmfs volume {volume} is incomplete: {detail}")]
    MissingExtent {
        /// LVM volume UUID (as ESXi prints it).
        volume: String,
        /// Which extent is missing.
        detail: String,
    },
    /// A safety bound was exceeded.
    #[error("vmfs: limit exceeded: {what} (limit {limit})")]
    Limit {
        /// What was counted.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// No file with that descriptor address (or not of the asked kind).
    #[error("vmfs: {detail}")]
    NotFound {
        /// What was looked for.
        detail: String,
    },
    /// Not a directory.
    #[error("vmfs: file descriptor {fd:#x} is not a directory")]
    NotADirectory {
        /// FD address.
        fd: u64,
    },
    /// The device failed.
    #[error(transparent)]
    Io(#[from] LunError),
}

impl From<VmfsError> for FsError {
    fn from(e: VmfsError) -> FsError {
        match e {
            VmfsError::Corrupt {
                structure,
                device,
                offset,
                detail,
            } => FsError::Corrupt {
                fs: "vmfs",
                device,
                structure,
                offset,
                detail,
            },
            VmfsError::CorruptFile {
                structure,
                fd,
                device,
                detail,
            } => FsError::Corrupt {
                fs: "vmfs",
                device,
                structure: format!("{structure} of FD {fd:#x}"),
                offset: 0,
                detail,
            },
            VmfsError::NotVmfs { device, detail } => FsError::NotRecognised { device, detail },
            VmfsError::Unsupported { feature } => FsError::Unsupported {
                fs: "vmfs",
                feature,
            },
            VmfsError::VolumeMismatch { detail } => FsError::Corrupt {
                fs: "vmfs",
                device: "volume".into(),
                structure: "LVM volume".into(),
                offset: 0,
                detail,
            },
            VmfsError::MissingExtent { volume, detail } => {
                FsError::MissingExtent { volume, detail }
            }
            VmfsError::Limit { what, limit } => FsError::Limit {
                fs: "vmfs",
                what,
                limit,
            },
            VmfsError::NotFound { detail } => FsError::NotFound { path: detail },
            VmfsError::NotADirectory { fd } => FsError::NotADirectory {
                path: format!("FD {fd:#x}"),
            },
            VmfsError::Io(e) => FsError::Io(e),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = VmfsError> = std::result::Result<T, E>;
