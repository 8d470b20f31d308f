//! VMFS5 directories: the directory file is an array of fixed 140-byte `FS3_DirEntry` records
//! (type, FD address, generation, 128-byte NUL-terminated name); free slots have address 0.

use fscore::le::{bytes_at, u32_at};
use lun::ReadAt;

use crate::error::{Result, VmfsError};
use crate::lvm::cstr;

/// Size of `FS3_DirEntry`.
pub const DIRENT_SIZE: u64 = 0x8c;
/// Directory files larger than this are refused.
pub const MAX_DIR_BYTES: u64 = 256 << 20;

/// One raw directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// Name.
    pub name: String,
    /// FD address.
    pub addr: u32,
    /// `FS3_DescriptorType` of the entry.
    pub fd_type: u32,
}

/// Lists a VMFS5 directory file.
pub fn read_dir(dir: &dyn ReadAt, fd: u32, volume: &str) -> Result<Vec<RawEntry>> {
    let size = dir.size();
    if size > MAX_DIR_BYTES {
        return Err(VmfsError::CorruptFile {
            structure: "directory".into(),
            fd: fd as u64,
            device: volume.to_string(),
            detail: format!("directory size {size} exceeds {MAX_DIR_BYTES}"),
        });
    }
    let count = size / DIRENT_SIZE;
    let per_chunk = 4096u64;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut i = 0u64;
    while i < count {
        let n = per_chunk.min(count - i);
        buf.resize((n * DIRENT_SIZE) as usize, 0);
        dir.read_exact_at(i * DIRENT_SIZE, &mut buf)?;
        for rec in buf.chunks_exact(DIRENT_SIZE as usize) {
            let addr = u32_at(rec, 4).unwrap_or(0);
            if addr == 0 {
                continue;
            }
            out.push(RawEntry {
                name: cstr(bytes_at(rec, 0x0c, 128).unwrap_or(&[])),
                addr,
                fd_type: u32_at(rec, 0).unwrap_or(0),
            });
        }
        i += n;
    }
    Ok(out)
}
