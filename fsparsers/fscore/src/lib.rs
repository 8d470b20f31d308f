//! The filesystem interface every on-disk parser implements (NTFS, VMFS5, VMFS6), and the
//! probing of a LUN's first bytes (partition tables and filesystem magic numbers).
//!
//! Parsers are synchronous and pure: bytes in from a [`lun::ReadAt`] source, structures or
//! errors out. They never panic on bad bytes, never allocate from an unchecked on-disk length,
//! and detect cycles.

mod error;
pub mod le;
pub mod partition;
mod path;
pub mod probe;
mod tree;

use std::fmt;

use lun::{ExtentMap, Source};
use serde::Serialize;

pub use error::FsError;
pub use path::{split_path, split_stream};
pub use tree::{
    PlainListing, SizedEntry, Tree, TreeEntry, TreeLimits, TreeProblem, TreeSource, plain_listing,
    walk_tree, walk_tree_with,
};

/// Result type of this crate and of the [`Filesystem`] trait.
pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// The filesystem formats lunproxy reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// Microsoft NTFS (3.x).
    Ntfs,
    /// VMware VMFS 5.
    Vmfs5,
    /// VMware VMFS 6.
    Vmfs6,
}

impl FsKind {
    /// The lower-case name used in the CLI and API (`ntfs`, `vmfs5`, `vmfs6`).
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ntfs => "ntfs",
            FsKind::Vmfs5 => "vmfs5",
            FsKind::Vmfs6 => "vmfs6",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a filesystem says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    /// Format.
    pub fs: FsKind,
    /// Volume label (may be empty).
    pub label: String,
    /// Volume UUID (VMFS, as ESXi prints it) or serial number (NTFS, 16 hex digits).
    pub uuid: String,
    /// Allocation unit in bytes (NTFS cluster, VMFS file block).
    pub block_size: u64,
    /// Size of the filesystem in bytes.
    pub size: u64,
}

/// Identifies one file (and, on NTFS, one of its data streams) inside a filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FileId {
    /// Filesystem-specific number: NTFS MFT record number, VMFS file descriptor address.
    pub ino: u64,
    /// A named data stream (NTFS alternate data stream); `None` is the default stream.
    pub stream: Option<String>,
}

impl FileId {
    /// The default stream of file `ino`.
    pub fn new(ino: u64) -> Self {
        FileId { ino, stream: None }
    }
}

/// Kind of a directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (NTFS symlinks and junctions included).
    Symlink,
    /// Anything else (devices, RDM mapping files, unknown types).
    Other,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    /// Name inside the directory, as stored (no path separators).
    pub name: String,
    /// The file it names.
    pub id: FileId,
    /// Its kind.
    pub file_type: FileType,
    /// A filesystem metadata file (NTFS `$MFT`…, VMFS `.fdc.sf`…), hidden unless asked for.
    pub metadata_file: bool,
    /// An NTFS DOS 8.3 short name of a file that also has a long name, hidden unless asked for.
    pub short_name: bool,
}

/// A named data stream of a file (NTFS alternate data streams).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Logical size in bytes.
    pub size: u64,
}

/// Metadata of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// The file.
    pub id: FileId,
    /// Its kind.
    pub file_type: FileType,
    /// Logical size in bytes.
    pub size: u64,
    /// Bytes allocated on the device (holes excluded).
    pub allocated: u64,
    /// Number of names (hard links) the file has.
    pub links: u32,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created: Option<i64>,
    /// Last data modification, nanoseconds since the Unix epoch.
    pub modified: Option<i64>,
    /// Last access, nanoseconds since the Unix epoch.
    pub accessed: Option<i64>,
    /// Last metadata change, nanoseconds since the Unix epoch.
    pub changed: Option<i64>,
    /// POSIX mode bits where the format keeps them (VMFS).
    pub mode: Option<u32>,
    /// Target of a symbolic link or junction, as stored.
    pub symlink_target: Option<String>,
    /// Named data streams (NTFS); empty elsewhere.
    pub streams: Vec<StreamInfo>,
    /// A filesystem metadata file.
    pub metadata_file: bool,
}

/// Why a file cannot be described as extents on the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "reason", content = "detail")]
pub enum NotMappable {
    /// Data lives inside a metadata record (NTFS resident attribute, VMFS resident file).
    Resident,
    /// Data is compressed on disk; reading decompresses it.
    Compressed,
    /// Data is encrypted on disk.
    Encrypted,
    /// Not a regular file (directory, symlink).
    NotAFile,
}

impl fmt::Display for NotMappable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotMappable::Resident => "resident: the data is stored inside a metadata record",
            NotMappable::Compressed => {
                "compressed: the bytes on the device are not the file's bytes"
            }
            NotMappable::Encrypted => "encrypted: the bytes on the device are not the file's bytes",
            NotMappable::NotAFile => "not a regular file",
        })
    }
}

/// Where a file's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum FileMapping {
    /// Byte ranges on [`Filesystem::device`], holes included.
    Mapped(ExtentMap),
    /// The file has no plain extents; read it through [`Filesystem::open`].
    NotMappable(NotMappable),
}

/// The interface of every filesystem reader.
///
/// Implementations are `Send + Sync` and cheap to share: the API serves many streams from one
/// opened filesystem at once.
pub trait Filesystem: Send + Sync {
    /// Format, label, UUID, block size, size.
    fn info(&self) -> VolumeInfo;

    /// The root directory.
    fn root(&self) -> FileId;

    /// Entries of a directory, without `.` and `..`.
    fn read_dir(&self, dir: &FileId) -> Result<Vec<DirEntry>>;

    /// Metadata of a file.
    fn metadata(&self, id: &FileId) -> Result<Metadata>;

    /// Opens a file (or a named stream) as a byte source of its own: `size()` is the file size
    /// and holes read as zeros. The source stays valid independently of the borrow of `self`.
    fn open(&self, id: &FileId) -> Result<Source>;

    /// The file's extents on [`Filesystem::device`], or why it has none.
    fn extents(&self, id: &FileId) -> Result<FileMapping>;

    /// The source extent offsets refer to.
    fn device(&self) -> Source;

    /// Translates an offset on [`Filesystem::device`] to (LUN index, offset on that LUN's
    /// source), for volumes spanning several LUNs. Single-LUN filesystems are the identity.
    fn locate(&self, device_offset: u64) -> (usize, u64) {
        (0, device_offset)
    }

    /// Every name under the root with its size and allocation, in depth-first pre-order
    /// (see [`Tree`]). The default is [`walk_tree`] ([`Filesystem::read_dir`] plus
    /// [`Filesystem::metadata`] per entry); a format that can list faster overrides it and
    /// must return the same entries in the same order.
    fn list_tree(&self, limits: &TreeLimits) -> Tree {
        walk_tree(self, limits)
    }
    /// Resolves an absolute path (`/a/b`, `/a/b:stream` for NTFS named streams). The default
    /// walks [`Filesystem::read_dir`] with exact-case matching; case-insensitive formats
    /// override it.
    fn lookup(&self, path: &str) -> Result<FileId> {
        let (path, stream) = split_stream(path)?;
        let mut cur = self.root();
        for comp in split_path(path)? {
            let entries = self.read_dir(&cur).map_err(|e| match e {
                FsError::NotADirectory { .. } => FsError::NotADirectory {
                    path: path.to_string(),
                },
                e => e,
            })?;
            cur = entries
                .into_iter()
                .find(|e| e.name == comp)
                .map(|e| e.id)
                .ok_or_else(|| FsError::NotFound {
                    path: path.to_string(),
                })?;
        }
        if let Some(s) = stream {
            cur.stream = Some(s.to_string());
        }
        Ok(cur)
    }
}
