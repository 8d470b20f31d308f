//! Read-only access to cloned LUNs.
//!
//! Everything above this crate reads through [`ReadAt`]: a positional, thread-safe read of exactly
//! `len` bytes at an offset. A LUN image file, a block device, a multipath LUN, a partition window
//! and a file mapped inside a filesystem ([`MappedFile`]) are all `ReadAt` sources, so a guest disk
//! stored inside a VMFS file can be parsed again with the same code.
//!
//! Writing is deliberately not possible through any type here except [`RestoreTarget`], which is
//! opened separately and may only write inside an [`ExtentMap`].

mod error;
mod extent;
mod mem;
mod multipath;
mod path;
mod restore;
mod source;

pub use error::LunError;
pub use extent::{Extent, ExtentMap, ExtentMapBuilder, MappedFile};
pub use mem::MemSource;
pub use multipath::{Lun, MultipathPolicy, PathHealth, PathStatus};
pub use path::{AlignedBuf, DeviceKind, DevicePath, OpenOptions};
pub use restore::RestoreTarget;
pub use source::{ReadAt, ReadAtExt, Source, Window};

/// Result type of this crate.
pub type Result<T, E = LunError> = std::result::Result<T, E>;
