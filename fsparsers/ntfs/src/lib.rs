//! NTFS reader: every file of a Windows- or mkntfs-written volume, with its extents.
//!
//! [`Ntfs::open`] validates the boot sector, bootstraps $MFT through its own run list (and its
//! $ATTRIBUTE_LIST when $MFT is fragmented beyond one record), and then implements
//! [`fscore::Filesystem`]: directory listings from the $I30 index B+tree, case-insensitive path
//! lookup through $UpCase, named streams as `PATH:STREAM`, sparse, compressed (LZNT1) and
//! resident data, symlinks and junctions reported with their targets, extent maps of every
//! plain file on the device, and whole-tree listings (`list_tree`) from one sequential pass
//! over $MFT.
//!
//! The on-disk structures are described in docs/formats/ntfs.md.

mod attr;
pub mod boot;
mod error;
#[cfg(test)]
mod handmade_tests;
mod index;
mod lznt1;
mod record;
mod stream;
mod upcase;
mod volume;

pub use error::{NtfsError, Result};
pub use volume::Ntfs;

/// Decoders exposed for fuzzing and property tests: each takes raw bytes and must return an
/// error, never panic, on any input.
pub mod fuzzing {
    use crate::{index, lznt1, record};

    /// Applies fixups to a FILE record and decodes its header and attributes.
    pub fn file_record(data: &[u8]) {
        let mut rec = data.to_vec();
        if record::apply_fixups(&mut rec).is_ok()
            && let Ok(hdr) = record::parse_file_header(&rec)
        {
            let _ = record::parse_attributes(&rec, &hdr, 0, 1 << 20);
        }
    }

    /// Decodes an INDX record (with fixups) and an $INDEX_ROOT value from the same bytes.
    pub fn index_record(data: &[u8]) {
        let _ = index::parse_index_root(data);
        let mut rec = data.to_vec();
        let _ = index::parse_index_record(&mut rec, 0);
    }

    /// Decodes a run list.
    pub fn run_list(data: &[u8]) {
        let _ = record::decode_runs(data, 0, 1 << 20);
    }

    /// Decompresses LZNT1 data into a 64 KiB unit.
    pub fn lznt1(data: &[u8]) {
        let mut out = vec![0u8; 65536];
        let _ = lznt1::decompress(data, &mut out);
    }
}

#[cfg(test)]
mod tests {
    /// The API serves many streams from one opened volume at once.
    #[test]
    fn ntfs_is_send_and_sync() {
        fn shared<T: Send + Sync + fscore::Filesystem>() {}
        shared::<crate::Ntfs>();
    }
}
