use fscore::FsError;

/// Errors of the inventory parsers. A scan never fails as a whole: these end up as
/// [`crate::Problem`]s on the VM (or orphan disk) they concern.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// A configuration or descriptor does not parse.
    #[error("{format}: {detail}")]
    Parse {
        /// The format (`vmx`, `vmdk`, `vhdx`…).
        format: &'static str,
        /// What was wrong, with the line or byte offset.
        detail: String,
    },
    /// A structure read from disk is invalid.
    #[error("{format}: corrupt {structure} at byte offset {offset}: {detail}")]
    Corrupt {
        /// The format.
        format: &'static str,
        /// Structure name as the format's documentation calls it.
        structure: &'static str,
        /// Byte offset of the structure in its file.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// A safety bound was reached (file size, line count, extent count, chain depth).
    #[error("{what} exceeds the limit of {limit}")]
    Limit {
        /// What was counted.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// The filesystem failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl InventoryError {
    /// A short stable kind for API problem lists.
    pub fn kind(&self) -> &'static str {
        match self {
            InventoryError::Parse { .. } => "parse",
            InventoryError::Corrupt { .. } => "corrupt",
            InventoryError::Limit { .. } => "limit",
            InventoryError::Fs(_) => "io",
        }
    }
}

impl From<lun::LunError> for InventoryError {
    fn from(e: lun::LunError) -> Self {
        InventoryError::Fs(FsError::Io(e))
    }
}
