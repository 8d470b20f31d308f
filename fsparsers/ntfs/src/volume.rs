//! The opened volume: $MFT bootstrap, record cache, file assembly through $ATTRIBUTE_LIST,
//! directory index walks, and the [`fscore::Filesystem`] implementation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use fscore::{
    DirEntry, FileId, FileMapping, FileType, Filesystem, FsKind, Metadata, NotMappable, StreamInfo,
    Tree, TreeLimits, VolumeInfo,
};
use lun::{MappedFile, MemSource, ReadAt, ReadAtExt, Source};

use crate::attr::{
    self, FILE_ATTR_REPARSE_POINT, FILE_ATTR_SYSTEM, FileName, Namespace, StandardInformation,
};
use crate::boot::{BOOT_SECTOR_LEN, BootSector};
use crate::error::{NtfsError, Result};
use crate::index::{self, IndexEntry};
use crate::record::{
    self, AT_ATTRIBUTE_LIST, AT_BITMAP, AT_DATA, AT_FILE_NAME, AT_INDEX_ALLOCATION, AT_INDEX_ROOT,
    AT_REPARSE_POINT, AT_STANDARD_INFORMATION, AT_VOLUME_NAME, ATTR_COMPRESSION_MASK,
    ATTR_ENCRYPTED, AttrBody, Attribute, FileRecordHeader, MFT_RECORD_IS_DIRECTORY, RawAttribute,
    Run,
};
use crate::stream::{CompressedStream, NonResidentStream};
use crate::upcase::UpCase;

#[cfg(test)]
mod inline_tests;
#[cfg(test)]
mod open_tests;
mod tree;

/// MFT record of the root directory.
pub const ROOT_RECORD: u64 = 5;
/// MFT record of $Volume.
const VOLUME_RECORD: u64 = 3;
/// MFT record of $UpCase.
const UPCASE_RECORD: u64 = 10;
/// MFT record of $Extend; everything below it is metadata.
const EXTEND_RECORD: u64 = 11;
/// Records 0..16 are the system files.
const FIRST_USER_RECORD: u64 = 16;

/// Bytes of $MFT read at once; records are cached in chunks this big.
const MFT_CHUNK: u64 = 64 << 10;
/// Chunks kept in the record cache: 2 MiB. A recursive walk and an inventory visit records
/// close to $MFT order (files are created directory by directory), so on a 1,000-VM datastore
/// (11 MiB of $MFT) they load each chunk once with 2 MiB as with 16 MiB, while touching an
/// eighth of the memory: fresh memory costs page faults and zeroing, which measured slower
/// than the extra hits a larger cache buys (examples/list_tree_bench.rs, open-read).
const MFT_CACHE_CHUNKS: usize = 32;
/// Evicted chunk buffers kept for reuse.
const MFT_SPARE_CHUNKS: usize = 4;

/// Largest $ATTRIBUTE_LIST value accepted (Windows caps it at 256 KiB).
const MAX_ATTRIBUTE_LIST: u64 = 1 << 20;
/// Largest $INDEX_ALLOCATION read in one piece; bigger ones are read record by record.
const WHOLE_INDEX_READ: u64 = 16 << 20;
/// Largest index $BITMAP accepted.
const MAX_INDEX_BITMAP: u64 = 4 << 20;
/// Deepest directory index B+tree accepted.
const MAX_INDEX_DEPTH: usize = 64;
/// Deepest directory nesting followed when walking up to find metadata files.
const MAX_PATH_DEPTH: usize = 1024;
/// Most extension records of one file.
const MAX_EXTENSION_RECORDS: usize = 65_536;

/// The runs of the extents among `attrs` that follow one another from VCN 0: the part of a
/// stream known so far while its later extents are still being found.
fn contiguous_runs(attrs: &[Attribute]) -> Vec<Run> {
    let mut ext: Vec<&record::NonResident> = attrs
        .iter()
        .filter_map(|a| match &a.body {
            AttrBody::NonResident(nr) => Some(nr),
            AttrBody::Resident(_) => None,
        })
        .collect();
    ext.sort_by_key(|nr| nr.lowest_vcn);
    let mut runs = Vec::new();
    let mut next = 0u64;
    for nr in ext {
        if nr.lowest_vcn != next {
            break;
        }
        runs.extend_from_slice(&nr.runs);
        next = nr.runs.last().map_or(next, |r| r.vcn + r.len);
    }
    runs
}

/// A UTF-16 name as a string (unpaired surrogates replaced). Most names are ASCII, which
/// converts unit by unit.
fn name_string(name: &[u16]) -> String {
    if name.iter().all(|&u| u < 0x80) {
        String::from_utf8(name.iter().map(|&u| u as u8).collect())
            .unwrap_or_else(|_| String::from_utf16_lossy(name))
    } else {
        String::from_utf16_lossy(name)
    }
}

fn mask_ref(r: u64) -> u64 {
    r & 0x0000_FFFF_FFFF_FFFF
}

/// The $MFT data runs and a cache of record chunks.
struct Mft {
    runs: Vec<Run>,
    /// Bytes of $MFT holding records (its initialized size).
    size: u64,
    record_size: u64,
    /// Bytes of $MFT per cached chunk: [`MFT_CHUNK`], or one record where records are larger.
    chunk_bytes: u64,
    cache: Mutex<ChunkCache>,
}

#[derive(Default)]
struct ChunkCache {
    chunks: HashMap<u64, Arc<MftChunk>>,
    /// Cached chunks, oldest first.
    order: VecDeque<u64>,
    /// Buffers of evicted chunks that no reader holds any more. Loading into one of them
    /// touches no fresh memory (no page faults, no zeroing): the cache stays at the same few
    /// megabytes for the life of the volume.
    spare: Vec<MftChunk>,
}

/// Bytes of $MFT as read, except that every intact FILE record has its fixups applied in
/// place (once per load instead of once per record read).
#[derive(Default)]
struct MftChunk {
    data: Vec<u8>,
    /// Per record slot: fixups applied. Other slots (never written, torn, not a FILE record)
    /// hold the raw bytes, so reading them reports exactly what is wrong.
    fixed: Vec<bool>,
}

/// A FILE record with its attributes, gathered from the base record and, through
/// $ATTRIBUTE_LIST, its extension records.
pub(crate) struct File {
    pub ino: u64,
    pub header: FileRecordHeader,
    pub attrs: Vec<Attribute>,
}

impl File {
    fn is_dir(&self) -> bool {
        self.header.flags & MFT_RECORD_IS_DIRECTORY != 0
    }

    /// The valid $FILE_NAME values, with `name` left empty: callers need the parent, the
    /// namespace and the times, and skipping the name saves an allocation per link.
    fn names(&self) -> impl Iterator<Item = FileName> + '_ {
        self.attrs
            .iter()
            .filter(|a| a.type_code == AT_FILE_NAME)
            .filter_map(|a| match &a.body {
                AttrBody::Resident(v) => FileName::parse_without_name(v).ok(),
                AttrBody::NonResident(_) => None,
            })
    }

    fn resident(&self, type_code: u32, name: &[u16]) -> Option<&[u8]> {
        self.attrs.iter().find_map(|a| match &a.body {
            AttrBody::Resident(v) if a.type_code == type_code && a.name == name => Some(&v[..]),
            _ => None,
        })
    }

    fn has(&self, type_code: u32, name: &[u16]) -> bool {
        self.attrs
            .iter()
            .any(|a| a.type_code == type_code && a.name == name)
    }
}

/// The value of an attribute (all extents merged).
pub(crate) enum StreamValue {
    Resident(Vec<u8>),
    NonResident(NonResidentStream),
}

impl StreamValue {
    fn size(&self) -> u64 {
        match self {
            StreamValue::Resident(v) => v.len() as u64,
            StreamValue::NonResident(s) => s.data_size,
        }
    }
}

/// An opened NTFS volume.
pub struct Ntfs {
    device: Source,
    name: String,
    boot: BootSector,
    mft: Mft,
    upcase: UpCase,
    label: String,
    metadata_dirs: Mutex<HashMap<u64, bool>>,
}

impl std::fmt::Debug for Ntfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ntfs")
            .field("device", &self.name)
            .field("boot", &self.boot)
            .field("label", &self.label)
            .finish()
    }
}

const I30: [u16; 4] = [b'$' as u16, b'I' as u16, b'3' as u16, b'0' as u16];

impl Ntfs {
    /// Opens the NTFS volume that starts at byte 0 of `device`: validates the boot sector,
    /// bootstraps $MFT (following its $ATTRIBUTE_LIST when its runs continue in extension
    /// records), loads $UpCase and the volume label.
    pub fn open(device: Source) -> Result<Ntfs> {
        let name = device.name().to_string();
        let bs = device.read_vec(0, BOOT_SECTOR_LEN.min(device.size() as usize))?;
        let boot = BootSector::parse(&bs, &name, device.size())?;
        let record_size = u64::from(boot.mft_record_size);
        // $MFT's first record is read directly from the boot sector's cluster: the run list
        // it holds describes the rest.
        let mft0 = Mft {
            runs: vec![Run {
                vcn: 0,
                lcn: Some(boot.mft_lcn),
                len: record_size.div_ceil(boot.cluster_size),
            }],
            size: record_size,
            record_size,
            chunk_bytes: MFT_CHUNK.max(record_size),
            cache: Mutex::new(ChunkCache::default()),
        };
        let mut ntfs = Ntfs {
            device,
            name,
            boot,
            mft: mft0,
            upcase: UpCase::ascii(),
            label: String::new(),
            metadata_dirs: Mutex::new(HashMap::new()),
        };
        ntfs.bootstrap_mft()?;
        ntfs.upcase = ntfs.load_upcase();
        ntfs.label = ntfs.load_label()?;
        Ok(ntfs)
    }

    /// Reads $MFT's own run list, including extents stored in extension records.
    fn bootstrap_mft(&mut self) -> Result<()> {
        let (hdr, attrs) = self.read_record_attrs(0)?;
        if !hdr.in_use() {
            return Err(self.corrupt_rec("FILE record", 0, 0, "$MFT record is not in use"));
        }
        let mut extents: Vec<Attribute> = attrs
            .iter()
            .filter(|a| a.type_code == AT_DATA && a.name.is_empty())
            .cloned()
            .collect();
        let first = extents
            .iter()
            .find_map(|a| match &a.body {
                AttrBody::NonResident(nr) if nr.lowest_vcn == 0 => Some(nr.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                self.corrupt_rec(
                    "FILE record",
                    0,
                    0,
                    "$MFT has no non-resident $DATA at VCN 0",
                )
            })?;
        self.mft.runs = first.runs.clone();
        self.mft.size = first.initialized_size;
        if let Some(list_attr) = attrs.iter().find(|a| a.type_code == AT_ATTRIBUTE_LIST) {
            let list = self.attribute_list_value(list_attr, 0)?;
            let entries = attr::parse_attribute_list(&list)
                .map_err(|c| self.corrupt_rec("$ATTRIBUTE_LIST", 0, 0, c.detail))?;
            let mut wanted: Vec<_> = entries
                .iter()
                .filter(|e| e.type_code == AT_DATA && e.name.is_empty() && e.record() != 0)
                .collect();
            wanted.sort_by_key(|e| e.lowest_vcn);
            let mut seen = HashSet::new();
            for e in wanted {
                let rec = e.record();
                if !seen.insert(rec) {
                    continue;
                }
                // The extension record is read through the runs known so far; it must lie in
                // the part of $MFT already mapped.
                self.mft.size = self.mft_mapped_bytes().min(first.initialized_size);
                self.clear_cache();
                let (ehdr, eattrs) = self.read_record_attrs(rec)?;
                if mask_ref(ehdr.base_mft_record) != 0 || !ehdr.in_use() {
                    return Err(self.corrupt_rec(
                        "FILE record",
                        rec,
                        0x20,
                        "$MFT extension record does not belong to $MFT",
                    ));
                }
                extents.extend(
                    eattrs
                        .into_iter()
                        .filter(|a| a.type_code == AT_DATA && a.name.is_empty()),
                );
                self.mft.runs = contiguous_runs(&extents);
            }
            let refs: Vec<&Attribute> = extents.iter().collect();
            let merged = self.merge_extents(0, &refs)?;
            self.mft.runs = merged.runs;
        }
        self.mft.size = first.initialized_size.min(self.mft_mapped_bytes());
        self.clear_cache();
        if self.mft.size < FIRST_USER_RECORD * self.mft.record_size {
            return Err(self.corrupt_rec(
                "FILE record",
                0,
                0,
                format!(
                    "$MFT of {} bytes cannot hold the system files",
                    self.mft.size
                ),
            ));
        }
        Ok(())
    }

    fn mft_mapped_bytes(&self) -> u64 {
        self.mft.runs.last().map_or(0, |r| {
            (r.vcn + r.len).saturating_mul(self.boot.cluster_size)
        })
    }

    fn clear_cache(&self) {
        let mut c = self.mft.cache.lock().expect("cache lock");
        c.chunks.clear();
        c.order.clear();
        c.spare.clear();
    }

    fn corrupt_rec(
        &self,
        structure: &'static str,
        record: u64,
        offset_in_record: u64,
        detail: impl Into<String>,
    ) -> NtfsError {
        NtfsError::Corrupt {
            device: self.name.clone(),
            structure,
            record: Some(record),
            offset: self.record_device_offset(record).unwrap_or(0) + offset_in_record,
            detail: detail.into(),
        }
    }

    /// Device byte offset of MFT record `record`, if mapped.
    fn record_device_offset(&self, record: u64) -> Option<u64> {
        let pos = record.checked_mul(self.mft.record_size)?;
        self.mft_device_offset(pos)
    }

    fn mft_device_offset(&self, pos: u64) -> Option<u64> {
        let cs = self.boot.cluster_size;
        let vcn = pos / cs;
        let i = self.mft.runs.partition_point(|r| r.vcn + r.len <= vcn);
        let r = self.mft.runs.get(i)?;
        if r.vcn > vcn {
            return None;
        }
        Some((r.lcn? + (vcn - r.vcn)) * cs + pos % cs)
    }

    /// Reads chunk `chunk` of $MFT (bytes `chunk * chunk_bytes..`), through the cache. The
    /// lock is held only to look up and to insert: the device read and the fixups run
    /// outside it, so readers on other threads are not held up by a miss.
    fn mft_chunk(&self, chunk: u64) -> Result<Arc<MftChunk>> {
        let spare = {
            let mut c = self.mft.cache.lock().expect("cache lock");
            if let Some(hit) = c.chunks.get(&chunk) {
                return Ok(hit.clone());
            }
            c.spare.pop()
        };
        let chunk_bytes = self.mft.chunk_bytes;
        let start = chunk * chunk_bytes;
        let end = (start + chunk_bytes).min(self.mft.size);
        let mut loaded = spare.unwrap_or_default();
        // A reused buffer is overwritten by the read: only bytes it never had are zeroed.
        loaded.data.resize((end - start) as usize, 0);
        self.read_mft_bytes(start, &mut loaded.data)?;
        let rs = self.mft.record_size as usize;
        loaded.fixed.clear();
        if chunk_bytes.is_multiple_of(self.mft.record_size) {
            let fixed = loaded.data.chunks_exact_mut(rs).map(|rec| {
                rec.starts_with(b"FILE")
                    && record::fixups_intact(rec)
                    && record::apply_fixups(rec).is_ok()
            });
            loaded.fixed.extend(fixed);
        }
        let loaded = Arc::new(loaded);
        let mut c = self.mft.cache.lock().expect("cache lock");
        // Another thread may have loaded the same chunk meanwhile: keep the cached one.
        if let Some(hit) = c.chunks.get(&chunk) {
            let hit = hit.clone();
            if let Ok(buf) = Arc::try_unwrap(loaded) {
                c.spare.push(buf);
            }
            return Ok(hit);
        }
        while c.chunks.len() >= MFT_CACHE_CHUNKS {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            // A chunk still held by a reader is simply dropped when that reader is done.
            if let Some(buf) = c.chunks.remove(&old).and_then(|a| Arc::try_unwrap(a).ok())
                && c.spare.len() < MFT_SPARE_CHUNKS
            {
                c.spare.push(buf);
            }
        }
        c.chunks.insert(chunk, loaded.clone());
        c.order.push_back(chunk);
        Ok(loaded)
    }

    /// Reads bytes `start..start + buf.len()` of $MFT through its run list (several device
    /// reads where the range crosses runs).
    fn read_mft_bytes(&self, start: u64, buf: &mut [u8]) -> Result<()> {
        let cs = self.boot.cluster_size;
        let end = start + buf.len() as u64;
        let mut pos = start;
        while pos < end {
            let vcn = pos / cs;
            let i = self.mft.runs.partition_point(|r| r.vcn + r.len <= vcn);
            let run = self.mft.runs.get(i).filter(|r| r.vcn <= vcn);
            let Some(Run {
                vcn: rv,
                lcn: Some(lcn),
                len,
            }) = run.copied()
            else {
                return Err(NtfsError::Corrupt {
                    device: self.name.clone(),
                    structure: "$MFT run list",
                    record: Some(pos / self.mft.record_size),
                    offset: 0,
                    detail: format!("$MFT byte {pos} is not mapped to clusters"),
                });
            };
            let run_end = (rv + len) * cs;
            let n = run_end.min(end) - pos;
            let dev = (lcn + (vcn - rv)) * cs + pos % cs;
            let off = (pos - start) as usize;
            self.device
                .read_exact_at(dev, &mut buf[off..off + n as usize])?;
            pos += n;
        }
        Ok(())
    }

    /// Reads and decodes MFT record `record`: its header and its own attributes.
    fn read_record_attrs(&self, record: u64) -> Result<(FileRecordHeader, Vec<Attribute>)> {
        self.read_record_attrs_where(record, |_| true)
    }

    /// Reads MFT record `record` and validates it whole as [`Ntfs::read_record_attrs`] does
    /// (same errors), keeping in owned form only the attributes `keep` selects.
    fn read_record_attrs_where(
        &self,
        record: u64,
        keep: impl FnMut(&RawAttribute<'_>) -> bool,
    ) -> Result<(FileRecordHeader, Vec<Attribute>)> {
        let rs = self.mft.record_size;
        let pos = record
            .checked_mul(rs)
            .filter(|p| p.checked_add(rs).is_some_and(|e| e <= self.mft.size))
            .ok_or_else(|| NtfsError::NotInUse {
                device: self.name.clone(),
                record,
            })?;
        let chunk_bytes = self.mft.chunk_bytes;
        let chunk = self.mft_chunk(pos / chunk_bytes)?;
        let off = (pos % chunk_bytes) as usize;
        let raw = &chunk.data[off..off + rs as usize];
        if chunk.fixed.get(off / rs as usize) == Some(&true) {
            return self.decode_record_where(record, raw, keep);
        }
        // Not fixed up at load: never written, or corrupt; a copy gets the checks again so the
        // error names what is wrong.
        let mut rec = raw.to_vec();
        match record::record_kind(&rec) {
            Ok(record::RecordKind::Empty) => {
                return Err(NtfsError::NotInUse {
                    device: self.name.clone(),
                    record,
                });
            }
            Ok(record::RecordKind::File) => {}
            Err(c) => {
                return Err(self.corrupt_rec("FILE record", record, c.offset as u64, c.detail));
            }
        }
        record::apply_fixups(&mut rec)
            .map_err(|c| self.corrupt_rec("FILE record", record, c.offset as u64, c.detail))?;
        self.decode_record_where(record, &rec, keep)
    }

    /// Decodes FILE record `record` whose fixups are applied.
    fn decode_record(&self, record: u64, rec: &[u8]) -> Result<(FileRecordHeader, Vec<Attribute>)> {
        self.decode_record_where(record, rec, |_| true)
    }

    /// Decodes FILE record `record` whose fixups are applied, validating every attribute but
    /// keeping only those `keep` selects.
    fn decode_record_where(
        &self,
        record: u64,
        rec: &[u8],
        keep: impl FnMut(&RawAttribute<'_>) -> bool,
    ) -> Result<(FileRecordHeader, Vec<Attribute>)> {
        let hdr = record::parse_file_header(rec)
            .map_err(|c| self.corrupt_rec("FILE record", record, c.offset as u64, c.detail))?;
        if let Some(n) = hdr.mft_record_number
            && u64::from(n) != record & 0xFFFF_FFFF
        {
            return Err(self.corrupt_rec(
                "FILE record",
                record,
                0x2C,
                format!("record says it is number {n}"),
            ));
        }
        let attrs =
            record::parse_attributes_where(rec, &hdr, record, self.boot.total_clusters(), keep)
                .map_err(|c| self.corrupt_rec("attribute", record, c.offset as u64, c.detail))?;
        Ok((hdr, attrs))
    }

    /// The value of an $ATTRIBUTE_LIST attribute, resident or not (bounded).
    fn attribute_list_value(&self, a: &Attribute, record: u64) -> Result<Vec<u8>> {
        match &a.body {
            AttrBody::Resident(v) => Ok(v.clone()),
            AttrBody::NonResident(nr) => {
                if nr.lowest_vcn != 0 || nr.data_size > MAX_ATTRIBUTE_LIST {
                    return Err(self.corrupt_rec(
                        "$ATTRIBUTE_LIST",
                        record,
                        a.offset_in_record as u64,
                        format!("attribute list of {} bytes", nr.data_size),
                    ));
                }
                let s = self.merge_extents(record, &[a])?;
                let src =
                    self.stream_source(record, "$ATTRIBUTE_LIST", StreamValue::NonResident(s))?;
                Ok(src.read_vec(0, src.size() as usize)?)
            }
        }
    }

    /// Loads file `ino` keeping only the attributes `keep` selects, for callers that need a
    /// few (one stream, the names): a base record without an $ATTRIBUTE_LIST (the common
    /// case) is validated whole exactly as [`Ntfs::load_file`] validates it, but only the
    /// kept attributes are copied out of the record. A file with an $ATTRIBUTE_LIST is loaded
    /// whole by [`Ntfs::load_file`], so its checks across extension records stay in one place.
    /// Whatever the caller reads of the kept attributes equals what it reads of the whole file.
    pub(crate) fn load_file_where(
        &self,
        ino: u64,
        mut keep: impl FnMut(&RawAttribute<'_>) -> bool,
    ) -> Result<File> {
        let (header, attrs) =
            self.read_record_attrs_where(ino, |a| a.type_code == AT_ATTRIBUTE_LIST || keep(a))?;
        self.check_base(ino, &header)?;
        if attrs.iter().any(|a| a.type_code == AT_ATTRIBUTE_LIST) {
            return self.load_file(ino);
        }
        Ok(File { ino, header, attrs })
    }

    /// Refuses a record that is not an in-use base record.
    fn check_base(&self, ino: u64, header: &FileRecordHeader) -> Result<()> {
        if !header.in_use() || mask_ref(header.base_mft_record) != 0 {
            return Err(NtfsError::NotInUse {
                device: self.name.clone(),
                record: ino,
            });
        }
        Ok(())
    }

    /// Loads file `ino`: its base record and every extension record its $ATTRIBUTE_LIST names.
    pub(crate) fn load_file(&self, ino: u64) -> Result<File> {
        let (header, mut attrs) = self.read_record_attrs(ino)?;
        self.check_base(ino, &header)?;
        let Some(list_attr) = attrs
            .iter()
            .find(|a| a.type_code == AT_ATTRIBUTE_LIST)
            .cloned()
        else {
            return Ok(File { ino, header, attrs });
        };
        let list = self.attribute_list_value(&list_attr, ino)?;
        let entries = attr::parse_attribute_list(&list)
            .map_err(|c| self.corrupt_rec("$ATTRIBUTE_LIST", ino, 0, c.detail))?;
        let mut loaded: HashSet<u64> = HashSet::from([ino]);
        for e in &entries {
            let rec = e.record();
            if !loaded.insert(rec) {
                continue;
            }
            if loaded.len() > MAX_EXTENSION_RECORDS {
                return Err(NtfsError::Limit {
                    device: self.name.clone(),
                    what: format!("extension records of MFT record {ino}"),
                    limit: MAX_EXTENSION_RECORDS as u64,
                });
            }
            let (eh, ea) = self.read_record_attrs(rec)?;
            if !eh.in_use() || mask_ref(eh.base_mft_record) != ino {
                return Err(self.corrupt_rec(
                    "$ATTRIBUTE_LIST",
                    ino,
                    list_attr.offset_in_record as u64,
                    format!(
                        "entry names MFT record {rec}, which is not an extension record of {ino} \
                         (its base is {})",
                        mask_ref(eh.base_mft_record)
                    ),
                ));
            }
            if ea.iter().any(|a| a.type_code == AT_ATTRIBUTE_LIST) {
                return Err(self.corrupt_rec(
                    "$ATTRIBUTE_LIST",
                    rec,
                    0,
                    "extension record holds a nested attribute list",
                ));
            }
            attrs.extend(ea);
        }
        // Every attribute the list names must be where it says: a missing one means the list
        // points at the wrong record (or at itself), and data would silently vanish.
        for e in &entries {
            let found = attrs.iter().any(|a| {
                a.record == e.record()
                    && a.type_code == e.type_code
                    && a.name == e.name
                    && match &a.body {
                        AttrBody::NonResident(nr) => nr.lowest_vcn == e.lowest_vcn,
                        AttrBody::Resident(_) => e.lowest_vcn == 0,
                    }
            });
            if !found {
                return Err(self.corrupt_rec(
                    "$ATTRIBUTE_LIST",
                    ino,
                    list_attr.offset_in_record as u64,
                    format!(
                        "entry for attribute type {:#x} {:?} at VCN {} names MFT record {}, which \
                         holds no such attribute",
                        e.type_code,
                        String::from_utf16_lossy(&e.name),
                        e.lowest_vcn,
                        e.record()
                    ),
                ));
            }
        }
        // The same extent of an attribute twice means the list points at a record more than
        // once under different names, or loops back: refuse rather than double the data.
        let mut extents = HashSet::new();
        for a in &attrs {
            if let AttrBody::NonResident(nr) = &a.body
                && !extents.insert((a.type_code, a.name.clone(), nr.lowest_vcn))
            {
                return Err(self.corrupt_rec(
                    "$ATTRIBUTE_LIST",
                    ino,
                    0,
                    format!(
                        "attribute type {:#x} extent at VCN {} appears twice (attribute list loop)",
                        a.type_code, nr.lowest_vcn
                    ),
                ));
            }
        }
        Ok(File { ino, header, attrs })
    }

    /// Merges the non-resident extents among `attrs` (all of one attribute) into one stream.
    fn merge_extents(&self, ino: u64, attrs: &[&Attribute]) -> Result<NonResidentStream> {
        let mut ext: Vec<(&Attribute, &record::NonResident)> = attrs
            .iter()
            .copied()
            .filter_map(|a| match &a.body {
                AttrBody::NonResident(nr) => Some((a, nr)),
                AttrBody::Resident(_) => None,
            })
            .collect();
        ext.sort_by_key(|(_, nr)| nr.lowest_vcn);
        let Some(&(first_attr, first)) = ext.first() else {
            return Err(self.corrupt_rec("attribute", ino, 0, "no extents"));
        };
        if first.lowest_vcn != 0 {
            return Err(self.corrupt_rec(
                "attribute",
                ino,
                0,
                format!("first extent starts at VCN {}", first.lowest_vcn),
            ));
        }
        let mut runs = Vec::new();
        let mut next_vcn = 0u64;
        for (a, nr) in &ext {
            if nr.lowest_vcn != next_vcn {
                return Err(self.corrupt_rec(
                    "attribute",
                    a.record,
                    a.offset_in_record as u64,
                    format!(
                        "extent starts at VCN {} but the previous one ends at VCN {next_vcn}",
                        nr.lowest_vcn
                    ),
                ));
            }
            runs.extend_from_slice(&nr.runs);
            next_vcn = nr.runs.last().map_or(next_vcn, |r| r.vcn + r.len);
        }
        let cs = self.boot.cluster_size;
        let mapped = next_vcn.saturating_mul(cs);
        let compressed =
            first_attr.flags & ATTR_COMPRESSION_MASK != 0 && first.compression_unit != 0;
        if first.data_size > mapped {
            return Err(self.corrupt_rec(
                "attribute",
                ino,
                first_attr.offset_in_record as u64,
                format!(
                    "data size {} is larger than the {mapped} bytes its runs map",
                    first.data_size
                ),
            ));
        }
        let compression_unit_clusters = if compressed {
            if first.compression_unit > 8 || cs << first.compression_unit > (1 << 20) {
                return Err(self.corrupt_rec(
                    "attribute",
                    ino,
                    first_attr.offset_in_record as u64 + 0x22,
                    format!(
                        "compression unit 2^{} clusters is too large",
                        first.compression_unit
                    ),
                ));
            }
            1u64 << first.compression_unit
        } else {
            0
        };
        Ok(NonResidentStream {
            runs,
            data_size: first.data_size,
            initialized_size: first.initialized_size.min(first.data_size),
            compression_unit_clusters,
            flags: first_attr.flags,
        })
    }

    /// The value of attribute (`type_code`, `name`) of `file`, or `None` when absent.
    pub(crate) fn stream_value(
        &self,
        file: &File,
        type_code: u32,
        name: &[u16],
    ) -> Result<Option<StreamValue>> {
        let parts = stream_parts(file, type_code, name);
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        if let AttrBody::Resident(v) = &first.body {
            return Ok(Some(StreamValue::Resident(v.clone())));
        }
        Ok(Some(StreamValue::NonResident(
            self.merge_extents(file.ino, &parts)?,
        )))
    }

    /// Logical size and allocated bytes (holes excluded) of attribute (`type_code`, `name`)
    /// of `file`, validated as [`Ntfs::stream_value`] does but without copying a resident
    /// value: metadata needs only the sizes.
    fn stream_sizes(
        &self,
        file: &File,
        type_code: u32,
        name: &[u16],
    ) -> Result<Option<(u64, u64)>> {
        let parts = stream_parts(file, type_code, name);
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        if let AttrBody::Resident(v) = &first.body {
            return Ok(Some((v.len() as u64, 0)));
        }
        let s = self.merge_extents(file.ino, &parts)?;
        Ok(Some((
            s.data_size,
            s.allocated_bytes(self.boot.cluster_size),
        )))
    }

    /// A byte source over a stream value.
    fn stream_source(&self, ino: u64, label: &str, v: StreamValue) -> Result<Source> {
        let name = format!("{}:record {ino}:{label}", self.name);
        match v {
            StreamValue::Resident(data) => Ok(Arc::new(MemSource::new(name, data))),
            StreamValue::NonResident(s) => {
                if s.flags & ATTR_ENCRYPTED != 0 {
                    return Err(NtfsError::Unsupported {
                        feature: "reading EFS-encrypted data".into(),
                        record: ino,
                    });
                }
                if s.compression_unit_clusters != 0 {
                    return Ok(Arc::new(CompressedStream::new(
                        self.device.clone(),
                        name,
                        &s,
                        self.boot.cluster_size,
                    )));
                }
                let map = s.extent_map(&name, self.boot.cluster_size, self.device.size())?;
                Ok(Arc::new(MappedFile::new(self.device.clone(), map, name)?))
            }
        }
    }

    fn load_upcase(&self) -> UpCase {
        let table = (|| -> Result<Option<Vec<u8>>> {
            let f = self.load_file(UPCASE_RECORD)?;
            let Some(v) = self.stream_value(&f, AT_DATA, &[])? else {
                return Ok(None);
            };
            if v.size() == 0 || v.size() > 2 * 65536 || v.size() % 2 != 0 {
                return Ok(None);
            }
            let src = self.stream_source(UPCASE_RECORD, "$UpCase", v)?;
            Ok(Some(src.read_vec(0, src.size() as usize)?))
        })();
        // A damaged $UpCase only weakens case-insensitive lookups; reading files still works.
        match table {
            Ok(Some(t)) => UpCase::from_bytes(&t),
            _ => UpCase::ascii(),
        }
    }

    fn load_label(&self) -> Result<String> {
        let f = self.load_file(VOLUME_RECORD)?;
        Ok(f.resident(AT_VOLUME_NAME, &[])
            .map(|v| {
                let u: Vec<u16> = v
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16_lossy(&u)
            })
            .unwrap_or_default())
    }

    /// True when `ino` is a metadata file: a system file (records 0-15 but the root) or
    /// anything below $Extend.
    fn is_metadata(&self, ino: u64) -> bool {
        if ino == ROOT_RECORD {
            return false;
        }
        if ino < FIRST_USER_RECORD {
            return true;
        }
        if let Some(&v) = self.metadata_dirs.lock().expect("lock").get(&ino) {
            return v;
        }
        let mut cur = ino;
        let mut chain = Vec::new();
        let result = loop {
            if cur == EXTEND_RECORD {
                break true;
            }
            if cur == ROOT_RECORD || chain.len() > MAX_PATH_DEPTH || chain.contains(&cur) {
                break false;
            }
            if let Some(&v) = self.metadata_dirs.lock().expect("lock").get(&cur) {
                break v;
            }
            chain.push(cur);
            let names = self.load_file_where(cur, |a| a.type_code == AT_FILE_NAME);
            let parent = names.ok().and_then(|f| {
                f.names()
                    .find(|n| n.namespace != Namespace::Dos)
                    .map(|n| n.parent_record())
            });
            match parent {
                Some(p) => cur = p,
                None => break false,
            }
        };
        let mut m = self.metadata_dirs.lock().expect("lock");
        for c in chain {
            m.insert(c, result);
        }
        result
    }

    /// Entries of directory `dir` in index order (B+tree walk), without the directory itself.
    /// The $INDEX_ROOT entries of directory `dir` and its $INDEX_ALLOCATION (read whole when
    /// `whole` and small enough).
    fn dir_index(
        &self,
        dir: u64,
        whole: bool,
    ) -> Result<(Vec<IndexEntry>, Option<IndexAllocation>)> {
        let f = self.load_file(dir)?;
        let Some(root_v) = f.resident(AT_INDEX_ROOT, &I30) else {
            return Err(NtfsError::NotADirectory {
                path: format!("MFT record {dir}"),
            });
        };
        let root = index::parse_index_root(root_v)
            .map_err(|c| self.corrupt_rec("$INDEX_ROOT", dir, c.offset as u64, c.detail))?;
        if root.indexed_type != AT_FILE_NAME {
            return Err(self.corrupt_rec(
                "$INDEX_ROOT",
                dir,
                0,
                format!("$I30 indexes attribute type {:#x}", root.indexed_type),
            ));
        }
        let needs_alloc = root.entries.iter().any(|e| e.sub_node.is_some());
        let alloc = if needs_alloc {
            Some(self.index_allocation(&f, root.index_block_size, whole)?)
        } else {
            None
        };
        Ok((root.entries, alloc))
    }

    /// Finds `want` in directory `dir` by descending its B+tree along the collation order
    /// (names compared upper-cased through $UpCase), reading only the index records on the
    /// path. An exact-case match is preferred among names equal ignoring case.
    fn find_in_dir(&self, dir: u64, want: &[u16]) -> Result<Option<IndexEntry>> {
        let (root, alloc) = self.dir_index(dir, false)?;
        let want_up: Vec<u16> = want.iter().map(|&c| self.upcase.fold(c)).collect();
        let mut best: Option<IndexEntry> = None;
        let mut visited = HashSet::new();
        // Nodes still to search, each with the position to resume from.
        let mut stack: Vec<(Vec<IndexEntry>, usize)> = vec![(root, 0)];
        while let Some((entries, pos)) = stack.last_mut() {
            let Some(e) = entries.get(*pos).cloned() else {
                stack.pop();
                continue;
            };
            *pos += 1;
            let ord = match &e.key {
                None => std::cmp::Ordering::Greater,
                Some(k) => {
                    let up = k.name.iter().map(|&c| self.upcase.fold(c));
                    up.cmp(want_up.iter().copied())
                }
            };
            if ord == std::cmp::Ordering::Less {
                continue;
            }
            if ord == std::cmp::Ordering::Equal
                && !(dir == ROOT_RECORD && e.record() == ROOT_RECORD)
            {
                let k = e.key.as_ref().expect("equal keys exist");
                if k.name == want && k.namespace != Namespace::Dos {
                    return Ok(Some(e));
                }
                if best.is_none() || k.name == want {
                    best = Some(e.clone());
                }
            }
            if ord == std::cmp::Ordering::Greater {
                // Nothing further in this node can match: only the sub-node of this entry.
                entries.truncate(*pos);
            }
            if let Some(vcn) = e.sub_node {
                let alloc = alloc
                    .as_ref()
                    .expect("allocation read when sub-nodes exist");
                if !visited.insert(vcn) || stack.len() >= MAX_INDEX_DEPTH {
                    return Err(self.corrupt_rec(
                        "INDX record",
                        dir,
                        0,
                        format!("index sub-node VCN {vcn} is reached twice or too deep (cycle)"),
                    ));
                }
                let child = alloc.node(self, dir, vcn)?;
                stack.push((child, 0));
            }
        }
        Ok(best)
    }

    /// Entries of directory `dir` in index order (B+tree walk); the root's "." is left out.
    pub(crate) fn dir_entries(&self, dir: u64) -> Result<Vec<IndexEntry>> {
        let (root_entries, alloc) = self.dir_index(dir, true)?;
        let root = index::IndexRoot {
            indexed_type: AT_FILE_NAME,
            index_block_size: 0,
            entries: root_entries,
        };
        let mut out = Vec::new();
        let mut visited = HashSet::new();
        // In-order walk: for each entry, first its sub-node (keys sorting before it), then the
        // entry itself.
        let mut stack: Vec<(Vec<IndexEntry>, usize, bool)> = vec![(root.entries, 0, false)];
        while let Some((entries, pos, descended)) = stack.last_mut() {
            let Some(e) = entries.get(*pos) else {
                stack.pop();
                continue;
            };
            if !*descended && let Some(vcn) = e.sub_node {
                *descended = true;
                let alloc = alloc
                    .as_ref()
                    .expect("allocation read when sub-nodes exist");
                if !visited.insert(vcn) {
                    return Err(self.corrupt_rec(
                        "INDX record",
                        dir,
                        0,
                        format!("index sub-node VCN {vcn} is reached twice (cycle in the B+tree)"),
                    ));
                }
                if stack.len() >= MAX_INDEX_DEPTH {
                    return Err(NtfsError::Limit {
                        device: self.name.clone(),
                        what: format!("index depth of directory {dir}"),
                        limit: MAX_INDEX_DEPTH as u64,
                    });
                }
                let child = alloc.node(self, dir, vcn)?;
                stack.push((child, 0, false));
                continue;
            }
            let e = e.clone();
            *pos += 1;
            *descended = false;
            // The root lists itself as "."; any other self-reference is kept and reported.
            if e.key.is_some() && !(dir == ROOT_RECORD && e.record() == ROOT_RECORD) {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn index_allocation(&self, f: &File, block_size: u32, whole: bool) -> Result<IndexAllocation> {
        let dir = f.ino;
        if !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
            return Err(self.corrupt_rec(
                "$INDEX_ROOT",
                dir,
                8,
                format!("index block size {block_size} is invalid"),
            ));
        }
        let Some(v) = self.stream_value(f, AT_INDEX_ALLOCATION, &I30)? else {
            return Err(self.corrupt_rec(
                "$INDEX_ROOT",
                dir,
                0,
                "index has sub-nodes but no $INDEX_ALLOCATION",
            ));
        };
        let size = v.size();
        let src = self.stream_source(dir, "$INDEX_ALLOCATION", v)?;
        let bitmap = match self.stream_value(f, AT_BITMAP, &I30)? {
            Some(b) if b.size() <= MAX_INDEX_BITMAP => {
                let s = self.stream_source(dir, "$BITMAP", b)?;
                Some(s.read_vec(0, s.size() as usize)?)
            }
            Some(b) => {
                return Err(NtfsError::Limit {
                    device: self.name.clone(),
                    what: format!("index bitmap of directory {dir} ({} bytes)", b.size()),
                    limit: MAX_INDEX_BITMAP,
                });
            }
            None => None,
        };
        // A directory of thousands of entries is read in one request rather than one per node.
        let whole = if whole && size <= WHOLE_INDEX_READ {
            Some(src.read_vec(0, size as usize)?)
        } else {
            None
        };
        let vcn_unit = if u64::from(block_size) >= self.boot.cluster_size {
            self.boot.cluster_size
        } else {
            512
        };
        Ok(IndexAllocation {
            src,
            whole,
            bitmap,
            block_size: u64::from(block_size),
            vcn_unit,
            size,
        })
    }

    fn dir_entry(&self, dir_is_meta: bool, e: &IndexEntry) -> DirEntry {
        let key = e.key.as_ref().expect("entries with keys only");
        self.dir_entry_of(dir_is_meta, e.record(), key, &key.name)
    }

    /// The directory entry naming `ino` `name` with `key` (an index key, or a $FILE_NAME value
    /// that stands for one; its own `name` is not read) in a directory that is (`dir_is_meta`)
    /// or is not a metadata directory.
    fn dir_entry_of(&self, dir_is_meta: bool, ino: u64, key: &FileName, name: &[u16]) -> DirEntry {
        let metadata_file = dir_is_meta || (ino < FIRST_USER_RECORD && ino != ROOT_RECORD);
        let file_type = if key.file_attributes & FILE_ATTR_REPARSE_POINT != 0
            && attr::is_link_tag(key.reparse_tag)
        {
            FileType::Symlink
        } else if key.is_dir() {
            FileType::Dir
        } else if key.file_attributes & FILE_ATTR_SYSTEM != 0
            && !metadata_file
            && key.data_size < 8 + 2 * 4096
            && self.interix_target(ino).is_some()
        {
            FileType::Symlink
        } else {
            FileType::File
        };
        DirEntry {
            name: name_string(name),
            id: FileId::new(ino),
            file_type,
            metadata_file,
            short_name: key.namespace == Namespace::Dos,
        }
    }

    fn bad_child(&self, dir: u64, e: &IndexEntry) -> NtfsError {
        let name = e
            .key
            .as_ref()
            .map(FileName::name_string)
            .unwrap_or_default();
        self.corrupt_rec(
            "index entry",
            dir,
            0,
            format!(
                "entry {name:?} names directory {} which does not have directory {dir} as its \
                 parent (a directory containing itself or an ancestor)",
                e.record()
            ),
        )
    }

    /// True when directory `ino` names `parent` as its parent directory.
    fn is_child_dir(&self, ino: u64, parent: u64) -> bool {
        self.load_file_where(ino, |a| a.type_code == AT_FILE_NAME)
            .is_ok_and(|f| f.is_dir() && f.names().any(|n| n.parent_record() == parent))
    }

    /// Target of an Interix symlink (ntfs-3g's default symlink format), if `ino` is one.
    fn interix_target(&self, ino: u64) -> Option<String> {
        let f = self
            .load_file_where(ino, |a| {
                a.type_code == AT_STANDARD_INFORMATION
                    || (a.type_code == AT_DATA && a.name.is_empty())
            })
            .ok()?;
        self.interix_target_of(&f)
    }

    fn interix_target_of(&self, f: &File) -> Option<String> {
        let si = StandardInformation::parse(f.resident(AT_STANDARD_INFORMATION, &[])?).ok()?;
        if si.file_attributes & FILE_ATTR_SYSTEM == 0 || f.is_dir() {
            return None;
        }
        let v = self.stream_value(f, AT_DATA, &[]).ok()??;
        let size = v.size();
        if !(8..=8 + 2 * 4096).contains(&size) {
            return None;
        }
        let src = self.stream_source(f.ino, "$DATA", v).ok()?;
        let data = src.read_vec(0, size as usize).ok()?;
        attr::parse_interix_symlink(&data)
    }

    /// Finds the stored name of named stream `name` of `file` (exact case preferred, then
    /// case-insensitive as Windows does).
    fn find_stream(&self, file: &File, name: &str) -> Option<Vec<u16>> {
        let want: Vec<u16> = name.encode_utf16().collect();
        let datas = || {
            file.attrs
                .iter()
                .filter(|a| a.type_code == AT_DATA && !a.name.is_empty())
        };
        if datas().any(|a| a.name == want) {
            return Some(want);
        }
        datas()
            .find(|a| self.upcase.eq_ignore_case(&a.name, &want))
            .map(|a| a.name.clone())
    }

    fn data_of(&self, file: &File, id: &FileId) -> Result<Option<StreamValue>> {
        match &id.stream {
            None => self.stream_value(file, AT_DATA, &[]),
            Some(s) => {
                let name = self
                    .find_stream(file, s)
                    .ok_or_else(|| NtfsError::NotFound {
                        path: format!("MFT record {}:{s}", id.ino),
                    })?;
                self.stream_value(file, AT_DATA, &name)
            }
        }
    }

    /// Target of the symlink or junction `f` is, from its $REPARSE_POINT (`None` for other
    /// reparse tags and plain files). Unreadable reparse data is an error.
    fn reparse_target(&self, f: &File) -> Result<Option<String>> {
        if let Some(v) = f.resident(AT_REPARSE_POINT, &[]) {
            let (_, target) = attr::parse_reparse_point(v).map_err(|c| {
                self.corrupt_rec("$REPARSE_POINT", f.ino, c.offset as u64, c.detail)
            })?;
            return Ok(target);
        }
        if f.has(AT_REPARSE_POINT, &[]) {
            // Non-resident reparse data is legal (up to 16 KiB).
            if let Some(v) = self.stream_value(f, AT_REPARSE_POINT, &[])?
                && v.size() <= 16 << 10
            {
                let src = self.stream_source(f.ino, "$REPARSE_POINT", v)?;
                let data = src.read_vec(0, src.size() as usize)?;
                return Ok(attr::parse_reparse_point(&data)
                    .map_err(|c| self.corrupt_rec("$REPARSE_POINT", f.ino, 0, c.detail))?
                    .1);
            }
        }
        Ok(None)
    }

    /// Size and allocated bytes of stream `id` of `f`: a directory's default stream is its
    /// $I30 index allocation (size 0).
    fn sizes_of(&self, f: &File, id: &FileId) -> Result<(u64, u64)> {
        if f.is_dir() && id.stream.is_none() {
            let alloc = self
                .stream_sizes(f, AT_INDEX_ALLOCATION, &I30)?
                .map_or(0, |(_, alloc)| alloc);
            return Ok((0, alloc));
        }
        let sizes = match &id.stream {
            None => self.stream_sizes(f, AT_DATA, &[])?,
            Some(s) => {
                let name = self.find_stream(f, s).ok_or_else(|| NtfsError::NotFound {
                    path: format!("MFT record {}:{s}", id.ino),
                })?;
                self.stream_sizes(f, AT_DATA, &name)?
            }
        };
        Ok(sizes.unwrap_or((0, 0)))
    }

    /// The named data streams of `f` with their sizes, each name once.
    fn named_streams(&self, f: &File) -> Result<Vec<StreamInfo>> {
        let mut streams: Vec<StreamInfo> = Vec::new();
        for a in f
            .attrs
            .iter()
            .filter(|a| a.type_code == AT_DATA && !a.name.is_empty())
        {
            let name = a.name_string();
            if streams.iter().any(|s| s.name == name) {
                continue;
            }
            let size = self
                .stream_sizes(f, AT_DATA, &a.name)?
                .map_or(0, |(size, _)| size);
            streams.push(StreamInfo { name, size });
        }
        Ok(streams)
    }

    /// Size and allocated bytes of the default stream of `f`, failing exactly where
    /// [`Ntfs::metadata_impl`] fails for it (reparse data, default stream, named streams), so
    /// a tree listing reports the same files as unreadable. Skips what cannot fail: times,
    /// links, the Interix symlink check.
    fn tree_sizes(&self, f: &File) -> Result<(u64, u64)> {
        if f.has(AT_REPARSE_POINT, &[]) {
            self.reparse_target(f)?;
        }
        let sizes = self.sizes_of(f, &FileId::new(f.ino))?;
        if f.attrs
            .iter()
            .any(|a| a.type_code == AT_DATA && !a.name.is_empty())
        {
            self.named_streams(f)?;
        }
        Ok(sizes)
    }

    fn metadata_impl(&self, id: &FileId) -> Result<Metadata> {
        // What metadata reads: times and flags, names, reparse data, data streams and the
        // directory index allocation (its size). Index roots, security descriptors and object
        // ids are validated but not copied.
        let f = self.load_file_where(id.ino, |a| {
            matches!(
                a.type_code,
                AT_STANDARD_INFORMATION | AT_FILE_NAME | AT_REPARSE_POINT | AT_DATA
            ) || (a.type_code == AT_INDEX_ALLOCATION && a.name_is(&I30))
        })?;
        self.metadata_of(id, &f)
    }

    /// Metadata of `id` from its loaded file `f` (whole, or with the attributes
    /// [`Ntfs::metadata_impl`] keeps).
    fn metadata_of(&self, id: &FileId, f: &File) -> Result<Metadata> {
        let si = f
            .resident(AT_STANDARD_INFORMATION, &[])
            .and_then(|v| StandardInformation::parse(v).ok());
        // One pass over the names: the first one's creation time is the fallback when
        // $STANDARD_INFORMATION is unreadable; DOS names are not links; the first non-DOS
        // name's parent decides whether the file is metadata.
        let mut fallback_creation_time = None;
        let mut links = 0u32;
        let mut parent = None;
        for n in f.names() {
            fallback_creation_time.get_or_insert(n.creation_time);
            if n.namespace != Namespace::Dos {
                links += 1;
                parent.get_or_insert(n.parent_record());
            }
        }
        let mut symlink_target = self.reparse_target(f)?;
        if symlink_target.is_none() && id.stream.is_none() {
            symlink_target = self.interix_target_of(f);
        }
        let file_type = if symlink_target.is_some() {
            FileType::Symlink
        } else if f.is_dir() {
            FileType::Dir
        } else {
            FileType::File
        };
        let (size, allocated) = self.sizes_of(f, id)?;
        let streams = self.named_streams(f)?;
        let t = |v: Option<u64>| v.and_then(attr::ntfs_time_to_unix_ns);
        Ok(Metadata {
            id: id.clone(),
            file_type,
            size,
            allocated,
            links,
            created: t(si.map(|s| s.creation_time).or(fallback_creation_time)),
            modified: t(si.map(|s| s.last_data_change_time)),
            accessed: t(si.map(|s| s.last_access_time)),
            changed: t(si.map(|s| s.last_mft_change_time)),
            mode: None,
            symlink_target,
            streams,
            // The parent's answer is cached per directory, so files cost no extra record read.
            metadata_file: if id.ino < FIRST_USER_RECORD {
                id.ino != ROOT_RECORD
            } else {
                parent.is_some_and(|p| self.is_metadata(p))
            },
        })
    }

    fn open_impl(&self, id: &FileId) -> Result<Source> {
        // Only the data streams decide what opens: every other attribute is validated but not
        // copied.
        let f = self.load_file_where(id.ino, |a| {
            a.type_code == AT_DATA && a.name.is_empty() == id.stream.is_none()
        })?;
        self.open_file(id, &f)
    }

    /// Opens stream `id` of its loaded file `f` (whole, or with the data streams
    /// [`Ntfs::open_impl`] keeps).
    fn open_file(&self, id: &FileId, f: &File) -> Result<Source> {
        if f.is_dir() && id.stream.is_none() {
            return Err(NtfsError::Unsupported {
                feature: "reading a directory as a file".into(),
                record: id.ino,
            });
        }
        // The default stream, opened thousands of times by an inventory, formats no label.
        let label: std::borrow::Cow<'_, str> = match &id.stream {
            Some(s) => format!("$DATA:{s}").into(),
            None => "$DATA".into(),
        };
        match self.data_of(f, id)? {
            Some(v) => self.stream_source(id.ino, &label, v),
            None => Ok(Arc::new(MemSource::new(
                format!("{}:record {}", self.name, id.ino),
                Vec::new(),
            ))),
        }
    }

    fn extents_impl(&self, id: &FileId) -> Result<FileMapping> {
        let f = self.load_file(id.ino)?;
        if f.is_dir() && id.stream.is_none() {
            return Ok(FileMapping::NotMappable(NotMappable::NotAFile));
        }
        match self.data_of(&f, id)? {
            None => Ok(FileMapping::Mapped(lun::ExtentMap::new(
                "empty",
                0,
                vec![],
                0,
            )?)),
            Some(StreamValue::Resident(v)) if v.is_empty() => Ok(FileMapping::Mapped(
                lun::ExtentMap::new("empty", 0, vec![], 0)?,
            )),
            Some(StreamValue::Resident(_)) => Ok(FileMapping::NotMappable(NotMappable::Resident)),
            Some(StreamValue::NonResident(s)) => {
                if s.flags & ATTR_ENCRYPTED != 0 {
                    return Ok(FileMapping::NotMappable(NotMappable::Encrypted));
                }
                if s.compression_unit_clusters != 0 {
                    return Ok(FileMapping::NotMappable(NotMappable::Compressed));
                }
                let name = format!("{}:record {}", self.name, id.ino);
                Ok(FileMapping::Mapped(s.extent_map(
                    &name,
                    self.boot.cluster_size,
                    self.device.size(),
                )?))
            }
        }
    }

    fn read_dir_impl(&self, dir: &FileId) -> Result<Vec<DirEntry>> {
        let entries = self.dir_entries(dir.ino)?;
        let meta = self.is_metadata(dir.ino);
        let mut out = Vec::with_capacity(entries.len());
        for e in &entries {
            let d = self.dir_entry(meta, e);
            // A directory has exactly one parent, named in its $FILE_NAME. An index entry naming
            // a directory that does not call this one its parent (an ancestor, a corrupt
            // reference) would make the tree a graph: such entries are left out, so every
            // directory reached from the root leads back to it and walks terminate.
            if d.file_type == FileType::Dir && !self.is_child_dir(e.record(), dir.ino) {
                return Err(self.bad_child(dir.ino, e));
            }
            out.push(d);
        }
        Ok(out)
    }

    fn lookup_impl(&self, path: &str) -> Result<FileId> {
        let (p, stream) = fscore::split_stream(path)?;
        let comps = fscore::split_path(p)?;
        let mut cur = ROOT_RECORD;
        for (i, comp) in comps.iter().enumerate() {
            let want: Vec<u16> = comp.encode_utf16().collect();
            let found = self
                .find_in_dir(cur, &want)
                .map_err(|e| match e {
                    NtfsError::NotADirectory { .. } => NtfsError::NotADirectory {
                        path: format!("/{}", comps[..i].join("/")),
                    },
                    e => e,
                })?
                .ok_or_else(|| NtfsError::NotFound {
                    path: path.to_string(),
                })?;
            if found.key.as_ref().is_some_and(FileName::is_dir)
                && !self.is_child_dir(found.record(), cur)
            {
                return Err(self.bad_child(cur, &found));
            }
            cur = found.record();
        }
        let mut id = FileId::new(cur);
        if let Some(s) = stream {
            let f = self.load_file(cur)?;
            let name = self.find_stream(&f, s).ok_or_else(|| NtfsError::NotFound {
                path: path.to_string(),
            })?;
            id.stream = Some(String::from_utf16_lossy(&name));
        }
        Ok(id)
    }

    /// Device byte offset of MFT record `no` (tests patch records in place).
    #[cfg(test)]
    pub(crate) fn record_offset_for_tests(&self, no: u64) -> u64 {
        self.record_device_offset(no).expect("record mapped")
    }

    /// The validated boot sector.
    pub fn boot_sector(&self) -> &BootSector {
        &self.boot
    }
}

/// The $INDEX_ALLOCATION of one directory, read whole when small.
struct IndexAllocation {
    src: Source,
    whole: Option<Vec<u8>>,
    bitmap: Option<Vec<u8>>,
    block_size: u64,
    vcn_unit: u64,
    size: u64,
}

impl IndexAllocation {
    fn node(&self, fs: &Ntfs, dir: u64, vcn: u64) -> Result<Vec<IndexEntry>> {
        let bs = self.block_size;
        let off = vcn
            .checked_mul(self.vcn_unit)
            .filter(|o| o % bs == 0 && o.checked_add(bs).is_some_and(|e| e <= self.size))
            .ok_or_else(|| {
                fs.corrupt_rec(
                    "INDX record",
                    dir,
                    0,
                    format!(
                        "sub-node VCN {vcn} lies outside the {} byte $INDEX_ALLOCATION",
                        self.size
                    ),
                )
            })?;
        let block = off / bs;
        if let Some(bm) = &self.bitmap {
            let used = bm
                .get((block / 8) as usize)
                .is_some_and(|b| b & (1 << (block % 8)) != 0);
            if !used {
                return Err(fs.corrupt_rec(
                    "INDX record",
                    dir,
                    0,
                    format!("sub-node VCN {vcn} points at an index block marked free"),
                ));
            }
        }
        let mut buf = match &self.whole {
            Some(w) => w[off as usize..(off + bs) as usize].to_vec(),
            None => self.src.read_vec(off, bs as usize)?,
        };
        index::parse_index_record(&mut buf, vcn).map_err(|c| {
            fs.corrupt_rec(
                "INDX record",
                dir,
                0,
                format!(
                    "{} (at byte {} of the index block at byte {off} of the directory's \
                     $INDEX_ALLOCATION)",
                    c.detail, c.offset
                ),
            )
        })
    }
}

impl Filesystem for Ntfs {
    fn info(&self) -> VolumeInfo {
        VolumeInfo {
            fs: FsKind::Ntfs,
            label: self.label.clone(),
            uuid: format!("{:016X}", self.boot.serial),
            block_size: self.boot.cluster_size,
            size: self.boot.volume_size(),
        }
    }

    fn root(&self) -> FileId {
        FileId::new(ROOT_RECORD)
    }

    fn read_dir(&self, dir: &FileId) -> fscore::Result<Vec<DirEntry>> {
        Ok(self.read_dir_impl(dir)?)
    }

    fn metadata(&self, id: &FileId) -> fscore::Result<Metadata> {
        Ok(self.metadata_impl(id)?)
    }

    fn open(&self, id: &FileId) -> fscore::Result<Source> {
        Ok(self.open_impl(id)?)
    }

    fn extents(&self, id: &FileId) -> fscore::Result<FileMapping> {
        Ok(self.extents_impl(id)?)
    }

    fn device(&self) -> Source {
        self.device.clone()
    }

    fn lookup(&self, path: &str) -> fscore::Result<FileId> {
        Ok(self.lookup_impl(path)?)
    }

    fn list_tree(&self, limits: &TreeLimits) -> Tree {
        self.list_tree_impl(limits)
    }
}

/// The extents of attribute (`type_code`, `name`) of `file`, in record order.
fn stream_parts<'f>(file: &'f File, type_code: u32, name: &[u16]) -> Vec<&'f Attribute> {
    file.attrs
        .iter()
        .filter(|a| a.type_code == type_code && a.name == name)
        .collect()
}
