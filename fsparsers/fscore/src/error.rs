use lun::LunError;

/// Errors of the filesystem interface. Parser crates keep their own error enums with more detail
/// and convert into this one at the trait boundary; the API maps these variants to HTTP
/// statuses.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No file at that path.
    #[error("no such file or directory: {path}")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// A path component is not a directory.
    #[error("not a directory: {path}")]
    NotADirectory {
        /// The path asked for.
        path: String,
    },
    /// A path is malformed (relative, empty component, bad stream syntax).
    #[error("invalid path {path:?}: {detail}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An on-disk structure is invalid.
    #[error("{fs}: corrupt {structure} at byte offset {offset} of {device}: {detail}")]
    Corrupt {
        /// Format (`ntfs`, `vmfs5`…).
        fs: &'static str,
        /// Device name (LUN or partition).
        device: String,
        /// Structure name as the format documents it (boot sector, FILE record, FD…).
        structure: String,
        /// Byte offset of the structure on the device.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// A valid feature this reader does not implement.
    #[error("{fs}: unsupported: {feature}")]
    Unsupported {
        /// Format.
        fs: &'static str,
        /// What is not supported.
        feature: String,
    },
    /// A safety bound was exceeded (depth, entry count, chain length): the input is hostile or
    /// corrupt.
    #[error("{fs}: limit exceeded: {what} (limit {limit})")]
    Limit {
        /// Format.
        fs: &'static str,
        /// What was counted.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// Nothing recognisable on the source.
    #[error("{device}: no supported filesystem found: {detail}")]
    NotRecognised {
        /// Device name.
        device: String,
        /// What was seen.
        detail: String,
    },
    /// A volume spans several LUNs and one is missing.
    #[error("volume {volume} is incomplete: {detail}")]
    MissingExtent {
        /// Volume UUID.
        volume: String,
        /// Which extent (LUN) is missing.
        detail: String,
    },
    /// The device failed.
    #[error(transparent)]
    Io(#[from] LunError),
}

impl FsError {
    /// A short, stable kind name for API error bodies (`not-found`, `corrupt`…).
    pub fn kind(&self) -> &'static str {
        match self {
            FsError::NotFound { .. } => "not-found",
            FsError::NotADirectory { .. } => "not-a-directory",
            FsError::InvalidPath { .. } => "invalid-path",
            FsError::Corrupt { .. } => "corrupt",
            FsError::Unsupported { .. } => "unsupported",
            FsError::Limit { .. } => "limit-exceeded",
            FsError::NotRecognised { .. } => "not-recognised",
            FsError::MissingExtent { .. } => "missing-extent",
            FsError::Io(_) => "io",
        }
    }
}
