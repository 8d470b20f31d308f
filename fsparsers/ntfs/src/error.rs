use fscore::FsError;
use lun::LunError;

/// Every failure of the NTFS reader. Corruption errors name the structure, the MFT record (when
/// one is involved), the byte offset on the device and the device itself, because an operator
/// looking at a broken LUN clone needs to find the bad bytes with a hex editor.
#[derive(Debug, thiserror::Error)]
pub enum NtfsError {
    /// An on-disk structure is invalid.
    #[error(
        "ntfs: corrupt {structure}{} at byte offset {offset} of {device}: {detail}",
        record.map(|r| format!(" (MFT record {r})")).unwrap_or_default()
    )]
    Corrupt {
        /// Device name.
        device: String,
        /// Structure name as the NTFS documentation calls it (boot sector, FILE record…).
        structure: &'static str,
        /// MFT record number involved, if any.
        record: Option<u64>,
        /// Byte offset of the structure on the device.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// An MFT record is not in use (deleted or never allocated) or is an extension record.
    #[error("ntfs: MFT record {record} on {device} is not a file in use")]
    NotInUse {
        /// Device name.
        device: String,
        /// MFT record number.
        record: u64,
    },
    /// No file at a path, or no stream of that name.
    #[error("no such file or directory: {path}")]
    NotFound {
        /// What was asked for.
        path: String,
    },
    /// A path component is not a directory.
    #[error("not a directory: {path}")]
    NotADirectory {
        /// What was asked for.
        path: String,
    },
    /// A malformed path.
    #[error("invalid path {path:?}: {detail}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A valid NTFS feature this reader does not implement.
    #[error("ntfs: unsupported: {feature} (MFT record {record})")]
    Unsupported {
        /// What is not supported.
        feature: String,
        /// The file.
        record: u64,
    },
    /// A safety bound was exceeded.
    #[error("ntfs: limit exceeded on {device}: {what} (limit {limit})")]
    Limit {
        /// Device name.
        device: String,
        /// What was counted.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// The device failed.
    #[error(transparent)]
    Io(#[from] LunError),
}

impl From<NtfsError> for FsError {
    fn from(e: NtfsError) -> FsError {
        match e {
            NtfsError::Corrupt {
                device,
                structure,
                record,
                offset,
                detail,
            } => FsError::Corrupt {
                fs: "ntfs",
                device,
                structure: match record {
                    Some(r) => format!("{structure} (MFT record {r})"),
                    None => structure.to_string(),
                },
                offset,
                detail,
            },
            NtfsError::NotInUse { record, .. } => FsError::NotFound {
                path: format!("MFT record {record}"),
            },
            NtfsError::NotFound { path } => FsError::NotFound { path },
            NtfsError::NotADirectory { path } => FsError::NotADirectory { path },
            NtfsError::InvalidPath { path, detail } => FsError::InvalidPath { path, detail },
            NtfsError::Unsupported { feature, record } => FsError::Unsupported {
                fs: "ntfs",
                feature: format!("{feature} (MFT record {record})"),
            },
            NtfsError::Limit { what, limit, .. } => FsError::Limit {
                fs: "ntfs",
                what,
                limit,
            },
            NtfsError::Io(e) => FsError::Io(e),
        }
    }
}

impl From<FsError> for NtfsError {
    fn from(e: FsError) -> NtfsError {
        match e {
            FsError::NotFound { path } => NtfsError::NotFound { path },
            FsError::NotADirectory { path } => NtfsError::NotADirectory { path },
            FsError::InvalidPath { path, detail } => NtfsError::InvalidPath { path, detail },
            FsError::Io(e) => NtfsError::Io(e),
            other => NtfsError::InvalidPath {
                path: String::new(),
                detail: other.to_string(),
            },
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = NtfsError> = std::result::Result<T, E>;
