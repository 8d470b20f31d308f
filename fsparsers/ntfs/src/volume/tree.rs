//! The whole-tree listing ([`Filesystem::list_tree`]) from one sequential pass over $MFT.
//!
//! [`fscore::walk_tree`] costs a directory index walk per directory and a record decode per
//! file. Every name of a file is also stored in the file's own record, as a $FILE_NAME
//! attribute naming the parent directory, so one pass over $MFT in large reads gives every
//! name, parent, type and size. The pass groups the names by parent and sorts each group in
//! index collation order (upper-cased through $UpCase, then code unit by code unit), which is
//! the order [`Filesystem::read_dir`] returns, and the tree is then walked exactly as
//! `walk_tree` walks it.
//!
//! Where the cheap path cannot vouch for the exact answer it asks the per-record code:
//! records with an $ATTRIBUTE_LIST are assembled by [`Ntfs::load_file`]; a directory holding
//! a name whose type depends on more than its $FILE_NAME (reparse points, system files that
//! may be Interix symlinks, a directory flag that disagrees with its record) is listed by
//! [`Ntfs::read_dir_impl`]; a file whose sizes fail to decode gets its error from
//! [`Ntfs::metadata_impl`]. A volume with a record that does not decode at all (its name and
//! parent are unknown, so only the directory index can place it) is listed by `walk_tree`.

use std::collections::HashSet;
use std::sync::Arc;

use fscore::{
    DirEntry, FileId, FileType, Filesystem, PlainListing, SizedEntry, Tree, TreeLimits, TreeSource,
    plain_listing, walk_tree, walk_tree_with,
};

use super::{File, I30, Ntfs, ROOT_RECORD, mask_ref};
use crate::attr::{
    FILE_ATTR_REPARSE_POINT, FILE_ATTR_SYSTEM, FileName, Namespace, StandardInformation,
};
use crate::record::{
    self, AT_ATTRIBUTE_LIST, AT_DATA, AT_FILE_NAME, AT_INDEX_ALLOCATION, AT_INDEX_ROOT,
    AT_REPARSE_POINT, AT_STANDARD_INFORMATION, ATTR_COMPRESSION_MASK, ATTR_ENCRYPTED, AttrBody,
    MFT_RECORD_IN_USE, MFT_RECORD_IS_DIRECTORY, RawAttribute, RawBody, Run,
};

/// Bytes of $MFT read at once during the pass (one reused buffer).
const SCAN_CHUNK: u64 = 1 << 20;
/// $MFTs of fewer chunks than this are read and decoded on one thread.
const PIPELINE_MIN_CHUNKS: u64 = 4;
/// Records the pass reserves room for at most, before it has seen any (beyond that its tables
/// grow as they fill).
const SCAN_RESERVE_MAX: usize = 1 << 22;
/// Code units of a name the pass reserves room for, on average.
const NAME_UNITS_RESERVED: usize = 24;
/// Record $Extend: directories below it hold metadata files.
const EXTEND_RECORD: u64 = 11;
/// Records below this number are system files.
const FIRST_USER_RECORD: u64 = 16;
/// Marks a record number without an in-use base record in [`Scan::slot`].
const NO_RECORD: u32 = u32::MAX;
/// $FILE_NAME attributes of one record taken without assembling the record; more go through
/// the per-record code.
const FAST_NAMES: usize = 4;
/// Largest compression unit `merge_extents` accepts, in bytes.
const MAX_COMPRESSION_UNIT: u64 = 1 << 20;
/// Runs of a non-resident file read inline at most; a more fragmented file comes without.
pub(super) const MAX_INLINE_RUNS: usize = 8;
/// Device bytes read at once when reading inline files: adjacent pieces (of one file or of
/// several) share a read up to this size. Pieces with a gap between them are read apart:
/// measured on a warm 1,000-VM volume, covering even 32 KiB gaps costs more than it saves,
/// as the gaps are often data nobody read, not in the page cache.
const INLINE_READ_MAX: u64 = 1 << 20;

/// What the pass keeps of one in-use base record.
struct RecordInfo {
    /// 0x10 of the record: a parent reference must carry it to name this directory.
    sequence_number: u16,
    /// The record has a resident $INDEX_ROOT named $I30: `read_dir` can list it.
    has_index_root: bool,
    /// Size and allocated bytes of the default stream; `None` when `metadata()` fails.
    sizes: Option<(u64, u64)>,
    /// The default stream's bytes when they are resident and wanted inline
    /// ([`TreeLimits::inline_max`]).
    inline: Option<Arc<[u8]>>,
}

/// A small non-resident default stream wanted inline ([`TreeLimits::inline_extensions`]),
/// noted during the pass and read after it.
struct PendingInline {
    ino: u64,
    /// Logical size, at most [`TreeLimits::inline_max`].
    data_size: u64,
    /// Bytes of valid data (at most `data_size`); the rest reads as zeros.
    initialized_size: u64,
    /// The runs covering the data, in [`Scan::inline_runs`].
    runs: std::ops::Range<usize>,
}

/// One device range to read into an inline file.
struct InlinePiece {
    /// Device byte offset.
    device: u64,
    len: usize,
    /// Index of the file in the files being read, and the offset in it.
    file: usize,
    at: usize,
}

/// The non-resident files to read inline, planned after the pass.
#[derive(Default)]
struct InlinePlan {
    /// Record number and data size of each file, in record order.
    files: Vec<(u64, usize)>,
    /// The device pieces to read into them.
    pieces: Vec<InlinePiece>,
}

impl InlinePlan {
    /// One zeroed buffer per planned file, to read it into: past the initialized size the
    /// stream reads as zeros. Made as the shared buffers they end up as, so that nothing is
    /// copied after the reads.
    fn zeroed_buffers(&self) -> Vec<Arc<[u8]>> {
        self.files
            .iter()
            .map(|&(_, size)| std::iter::repeat_n(0u8, size).collect())
            .collect()
    }
}

/// Gives the files read for [`TreeLimits::inline_extensions`] their bytes in the tree: every
/// entry of such a record whose name has a listed extension, as `walk_tree` gives them (a hard
/// link named otherwise comes without).
fn attach_inline(tree: &mut Tree, files: Vec<(u64, Arc<[u8]>)>, limits: &TreeLimits) {
    if files.is_empty() {
        return;
    }
    // Looked up by binary search: the files come in record order, and a hash map would cost
    // a hash per name of the tree.
    let mut by_ino = files;
    if !by_ino.is_sorted_by_key(|f| f.0) {
        by_ino.sort_unstable_by_key(|f| f.0);
    }
    for e in &mut tree.entries {
        if e.entry.file_type == FileType::File
            && e.inline.is_none()
            && let Ok(k) = by_ino.binary_search_by_key(&e.entry.id.ino, |f| f.0)
            && limits.inline_extension_listed(&e.entry.name)
        {
            e.inline = Some(by_ino[k].1.clone());
        }
    }
}

/// One $FILE_NAME of an in-use base record.
struct NameInfo {
    /// Record number of the parent directory.
    parent: u64,
    /// Sequence number in the parent reference.
    parent_seq: u16,
    /// The record holding the name.
    ino: u64,
    /// Where the name's code units start in [`Scan::units`] and [`Scan::upcased`].
    start: usize,
    /// Code units in the name.
    len: u8,
    /// The fields of the $FILE_NAME a directory entry is made from.
    namespace: Namespace,
    file_attributes: u32,
    reparse_tag: u32,
    data_size: u64,
}

impl NameInfo {
    fn range(&self) -> std::ops::Range<usize> {
        self.start..self.start + usize::from(self.len)
    }

    /// The $FILE_NAME as an index key would hold it, but for the name itself.
    fn key(&self) -> FileName {
        FileName {
            parent: self.parent | (u64::from(self.parent_seq) << 48),
            creation_time: 0,
            allocated_size: 0,
            data_size: self.data_size,
            file_attributes: self.file_attributes,
            reparse_tag: self.reparse_tag,
            namespace: self.namespace,
            name: Vec::new(),
        }
    }
}

/// Everything the pass found.
struct Scan {
    /// Per MFT record number: index into `records`, or [`NO_RECORD`].
    slot: Vec<u32>,
    records: Vec<RecordInfo>,
    names: Vec<NameInfo>,
    /// The names' code units, back to back.
    units: Vec<u16>,
    /// The same names upper-cased through $UpCase.
    upcased: Vec<u16>,
    /// Indexes into `names`, grouped by parent record, each group in collation order.
    order: Vec<u32>,
    /// Per parent record number `p`: its group is `order[group[p]..group[p + 1]]`.
    group: Vec<u32>,
    /// Directories (record numbers) holding a name whose directory entry needs the index.
    needs_index: HashSet<u64>,
    /// Largest resident value kept inline, and how many inline bytes may still be kept.
    inline_max: usize,
    inline_budget: usize,
    /// [`TreeLimits::inline_extensions`].
    inline_extensions: &'static [&'static str],
    /// Non-resident files to read inline after the pass, in record order, and their runs.
    pending_inline: Vec<PendingInline>,
    inline_runs: Vec<Run>,
    /// Sum of the data sizes in `pending_inline`.
    pending_bytes: usize,
}

impl Scan {
    /// An empty scan of an $MFT of `records` records.
    fn new(records: usize, limits: &TreeLimits) -> Scan {
        // Room for every record up front: growing these by doubling would allocate (and the
        // kernel zero) about twice their final size, and copy them each time. Room no record
        // fills is never touched, so a mostly free $MFT costs address space only.
        let room = records.min(SCAN_RESERVE_MAX);
        Scan {
            slot: vec![NO_RECORD; records],
            records: Vec::with_capacity(room),
            names: Vec::with_capacity(room),
            units: Vec::with_capacity(room * NAME_UNITS_RESERVED),
            upcased: Vec::with_capacity(room * NAME_UNITS_RESERVED),
            order: Vec::new(),
            group: Vec::new(),
            needs_index: HashSet::new(),
            inline_max: limits.inline_max,
            inline_budget: limits.inline_total,
            inline_extensions: limits.inline_extensions,
            pending_inline: Vec::new(),
            inline_runs: Vec::new(),
            pending_bytes: 0,
        }
    }

    fn record(&self, ino: u64) -> Option<&RecordInfo> {
        let i = *self.slot.get(usize::try_from(ino).ok()?)?;
        self.records.get(i as usize)
    }

    fn units(&self, n: &NameInfo) -> &[u16] {
        &self.units[n.range()]
    }

    /// The names whose parent reference names record `dir`, in collation order.
    fn children(&self, dir: u64) -> &[u32] {
        let Some((d, next)) = usize::try_from(dir)
            .ok()
            .and_then(|d| Some((d, d.checked_add(1)?)))
        else {
            return &[];
        };
        match (self.group.get(d), self.group.get(next)) {
            (Some(&a), Some(&b)) => &self.order[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Groups the names by parent (a counting sort over record numbers), then sorts each
    /// group as the directory index collates: upper-cased code units, then the code units as
    /// stored (names equal but for case), then the record number.
    fn sort(&mut self) {
        let records = self.slot.len();
        let mut group = vec![0u32; records + 1];
        for n in &self.names {
            // A parent outside $MFT is no directory: its names are never listed.
            if let Ok(p) = usize::try_from(n.parent)
                && p < records
            {
                group[p + 1] += 1;
            }
        }
        for p in 0..records {
            group[p + 1] += group[p];
        }
        let mut next = group.clone();
        let mut order = vec![0u32; group[records] as usize];
        for (i, n) in self.names.iter().enumerate() {
            if let Ok(p) = usize::try_from(n.parent)
                && p < records
            {
                order[next[p] as usize] = i as u32;
                next[p] += 1;
            }
        }
        let (names, units, upcased) = (&self.names, &self.units, &self.upcased);
        for p in 0..records {
            let g = &mut order[group[p] as usize..group[p + 1] as usize];
            if g.len() > 1 {
                g.sort_unstable_by(|&a, &b| {
                    let (x, y) = (&names[a as usize], &names[b as usize]);
                    upcased[x.range()]
                        .cmp(&upcased[y.range()])
                        .then_with(|| units[x.range()].cmp(&units[y.range()]))
                        .then_with(|| x.ino.cmp(&y.ino))
                });
            }
        }
        self.order = order;
        self.group = group;
    }
}

/// True when the directory entry of a name cannot be derived from the $FILE_NAME alone: the
/// type then depends on duplicated information that only the parent's index entry holds
/// reliably (reparse tags, the system attribute of Interix symlinks), or the name claims a
/// directory that the record is not (which `read_dir` reports as an error).
fn needs_index_entry(
    key: &FileName,
    ino: u64,
    is_dir: bool,
    has_reparse: bool,
    si_attributes: u32,
) -> bool {
    let system_matters = ino >= FIRST_USER_RECORD;
    let interesting = |attrs: u32| {
        attrs & FILE_ATTR_REPARSE_POINT != 0 || (system_matters && attrs & FILE_ATTR_SYSTEM != 0)
    };
    interesting(key.file_attributes)
        || interesting(si_attributes)
        || has_reparse
        || key.is_dir() != is_dir
}

/// True when the $FILE_NAME value `v` is a long name (not the DOS 8.3 name) whose extension
/// is one of `extensions`, compared as [`TreeLimits::inline_extension_listed`] compares.
fn long_name_listed(v: &[u8], extensions: &[&str]) -> bool {
    // 0x40: name length in code units; 0x41: namespace (2: DOS); 0x42: the name.
    let (Some(&len), Some(&namespace)) = (v.get(0x40), v.get(0x41)) else {
        return false;
    };
    match v.get(0x42..0x42 + 2 * usize::from(len)) {
        Some(name) if namespace != 2 => utf16_extension_listed(name, extensions),
        _ => false,
    }
}

/// True when the extension of `name` (UTF-16LE bytes) is one of `extensions` (ASCII case
/// folded); the extension follows the last dot, which must not start the name.
fn utf16_extension_listed(name: &[u8], extensions: &[&str]) -> bool {
    // Only the last units can hold the dot of a listed extension.
    let longest = extensions.iter().map(|e| e.len()).max().unwrap_or(0);
    let units = name.len() / 2;
    let from = units.saturating_sub(longest + 1);
    let dot = name[2 * from..2 * units]
        .chunks_exact(2)
        .rposition(|c| c == [b'.', 0].as_slice())
        .map(|d| from + d);
    let ext = match dot {
        Some(d) if d > 0 => &name[2 * d + 2..],
        _ => return false,
    };
    extensions.iter().any(|want| {
        want.len() * 2 == ext.len()
            && want
                .bytes()
                .zip(ext.chunks_exact(2))
                .all(|(w, c)| c[1] == 0 && c[0].eq_ignore_ascii_case(&w))
    })
}

/// What one walk over a record's own attributes collects for the fast path.
#[derive(Default)]
struct RecordView<'a> {
    /// Something only the per-record code handles: an $ATTRIBUTE_LIST, a $REPARSE_POINT,
    /// named data streams, a non-resident $FILE_NAME, many names.
    slow: bool,
    /// First resident unnamed $STANDARD_INFORMATION.
    standard_information: Option<&'a [u8]>,
    has_index_root: bool,
    names: [&'a [u8]; FAST_NAMES],
    name_count: usize,
    /// Extents of the stream `metadata()` sizes: unnamed $DATA, or $I30 $INDEX_ALLOCATION of
    /// a directory.
    stream_parts: usize,
    stream_first: Option<RawAttribute<'a>>,
}

impl Ntfs {
    /// [`Filesystem::list_tree`]: the $MFT pass, or [`walk_tree`] when the pass meets a
    /// record it cannot decode.
    pub(super) fn list_tree_impl(&self, limits: &TreeLimits) -> Tree {
        self.list_tree_from_mft(limits)
            .unwrap_or_else(|| walk_tree(self, limits))
    }

    /// The tree listing from one sequential pass over $MFT, or `None` when a record that may
    /// be in use does not decode (its name and parent are then known only to the directory
    /// index, and [`Filesystem::list_tree`] falls back to [`walk_tree`]), or when $MFT holds
    /// more than 4 × [`TreeLimits::max_entries`] records (2^20 to 2^26 entries counted; the
    /// pass keeps a few bytes per record, `walk_tree` only what it lists).
    pub fn list_tree_from_mft(&self, limits: &TreeLimits) -> Option<Tree> {
        let records = self.mft.size / self.mft.record_size;
        let bound = limits.max_entries.clamp(1 << 20, 1 << 26) * 4;
        if usize::try_from(records).map_or(true, |r| r > bound) {
            return None;
        }
        let (mut scan, plan) = self.scan_mft(limits)?;
        if plan.files.is_empty() {
            scan.sort();
            return Some(self.tree_from_scan(&scan, limits));
        }
        // The small files wanted inline are read on a second thread while this one sorts the
        // names and builds the tree; their bytes join the tree's entries afterwards.
        let (mut tree, files) = std::thread::scope(|s| {
            // The buffers are made here: a thread's first allocations claim memory of its own
            // (measured: a 2 MiB page more for the thousand small buffers).
            let buffers = plan.zeroed_buffers();
            let reader = s.spawn(|| self.read_inline_plan(plan, buffers));
            scan.sort();
            let tree = self.tree_from_scan(&scan, limits);
            let files = reader
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (tree, files)
        });
        attach_inline(&mut tree, files, limits);
        Some(tree)
    }

    /// Reads $MFT front to back and collects every in-use base record's names and sizes (not
    /// yet sorted: [`Scan::sort`]), and plans the inline reads. `None` when a record that may
    /// be in use does not decode, or $MFT cannot be read.
    fn scan_mft(&self, limits: &TreeLimits) -> Option<(Scan, InlinePlan)> {
        let include_hidden = limits.include_hidden;
        let rs = self.mft.record_size;
        let count = self.mft.size / rs;
        // The record size is a power of two of at most 64 KiB, so it divides the chunk.
        let chunk = SCAN_CHUNK.max(rs);
        let mut scan = Scan::new(usize::try_from(count).ok()?, limits);
        let per_chunk = chunk / rs;
        let chunks = count.div_ceil(per_chunk);
        let buf_len = chunk.min(count * rs) as usize;
        // The chunk starting at record `first`: its length in bytes.
        let chunk_bytes = |first: u64| ((per_chunk.min(count - first)) * rs) as usize;
        if chunks < PIPELINE_MIN_CHUNKS {
            let mut buf = vec![0u8; buf_len];
            for c in 0..chunks {
                let first = c * per_chunk;
                let bytes = &mut buf[..chunk_bytes(first)];
                self.read_mft_bytes(first * rs, bytes).ok()?;
                self.scan_chunk(first, bytes, include_hidden, &mut scan)?;
            }
        } else {
            // One thread reads the next chunk while this one decodes the last: the copy out of
            // the page cache (or the wait for the LUN) overlaps the decoding. Two buffers go
            // round between them, so memory stays at two chunks.
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Option<(u64, Vec<u8>)>>(1);
            let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
            for _ in 0..2 {
                empty_tx.send(vec![0u8; buf_len]).ok()?;
            }
            let decoded = std::thread::scope(|sc| {
                sc.spawn(move || {
                    for c in 0..chunks {
                        let Ok(mut buf) = empty_rx.recv() else {
                            return;
                        };
                        let first = c * per_chunk;
                        let n = chunk_bytes(first);
                        let msg = self
                            .read_mft_bytes(first * rs, &mut buf[..n])
                            .ok()
                            .map(|()| (first, buf));
                        let failed = msg.is_none();
                        if full_tx.send(msg).is_err() || failed {
                            return;
                        }
                    }
                });
                // Owned here, so that returning early hangs up on the reader, which then stops.
                let (full_rx, empty_tx) = (full_rx, empty_tx);
                for _ in 0..chunks {
                    let (first, mut buf) = full_rx.recv().ok()??;
                    let n = chunk_bytes(first);
                    self.scan_chunk(first, &mut buf[..n], include_hidden, &mut scan)?;
                    // The reader may have finished: a buffer nobody takes is just dropped.
                    let _ = empty_tx.send(buf);
                }
                Some(())
            });
            decoded?;
        }
        let plan = self.plan_pending_inline(&mut scan);
        Some((scan, plan))
    }

    /// Takes in the records of one chunk of $MFT, the first being record `first`.
    fn scan_chunk(
        &self,
        first: u64,
        bytes: &mut [u8],
        include_hidden: bool,
        scan: &mut Scan,
    ) -> Option<()> {
        let rs = self.mft.record_size as usize;
        for (k, rec) in bytes.chunks_exact_mut(rs).enumerate() {
            self.scan_record(first + k as u64, rec, include_hidden, scan)?;
        }
        Some(())
    }

    /// Takes in MFT record `ino` (raw bytes, fixups not applied). `None` when it may be in
    /// use but does not decode.
    fn scan_record(
        &self,
        ino: u64,
        rec: &mut [u8],
        include_hidden: bool,
        scan: &mut Scan,
    ) -> Option<()> {
        match rec.get(0..4) {
            Some([0, 0, 0, 0]) => return Some(()),
            Some(b"FILE") => {}
            // A torn record (BAAD) or garbage: whether it held a file only its directory's
            // index can tell.
            _ => return None,
        }
        // The flags sit in the first sector, which fixups leave alone below byte 510.
        let flags = fscore::le::u16_at(rec, 0x16)?;
        if flags & MFT_RECORD_IN_USE == 0 {
            return Some(());
        }
        record::apply_fixups(rec).ok()?;
        let rec = &*rec;
        // The same header checks as `decode_record`.
        let header = record::parse_file_header(rec).ok()?;
        if let Some(n) = header.mft_record_number
            && u64::from(n) != ino & 0xFFFF_FFFF
        {
            return None;
        }
        if mask_ref(header.base_mft_record) != 0 {
            // An extension record: read with its base record through the attribute list.
            return Some(());
        }
        let is_dir = header.flags & MFT_RECORD_IS_DIRECTORY != 0;
        let (stream_type, stream_name): (u32, &[u16]) = if is_dir {
            (AT_INDEX_ALLOCATION, &I30)
        } else {
            (AT_DATA, &[])
        };
        let mut view = RecordView::default();
        record::for_each_attribute(rec, &header, self.boot.total_clusters(), |a| {
            match a.type_code {
                AT_ATTRIBUTE_LIST | AT_REPARSE_POINT => view.slow = true,
                AT_STANDARD_INFORMATION => {
                    if let RawBody::Resident(v) = a.body
                        && a.name.is_empty()
                        && view.standard_information.is_none()
                    {
                        view.standard_information = Some(v);
                    }
                }
                AT_FILE_NAME => match a.body {
                    RawBody::Resident(v) if view.name_count < FAST_NAMES => {
                        view.names[view.name_count] = v;
                        view.name_count += 1;
                    }
                    _ => view.slow = true,
                },
                AT_INDEX_ROOT => {
                    view.has_index_root |=
                        matches!(a.body, RawBody::Resident(_)) && a.name_is(&I30);
                }
                _ => {}
            }
            if a.type_code == AT_DATA && !a.name.is_empty() {
                view.slow = true;
            }
            if a.type_code == stream_type && a.name_is(stream_name) {
                view.stream_parts += 1;
                view.stream_first.get_or_insert(a);
            }
        })
        .ok()?;
        let sizes = match (view.slow, self.fast_sizes(&view, is_dir)) {
            (false, Some(sizes)) => sizes,
            _ => return self.scan_record_slow(ino, rec, include_hidden, scan),
        };
        let si_attributes = view
            .standard_information
            .and_then(|v| StandardInformation::parse(v).ok())
            .map_or(0, |s| s.file_attributes);
        // A resident default stream is the file's whole content, already in hand: kept when
        // one of the file's names is wanted inline.
        let inline = match view.stream_first.map(|a| a.body) {
            Some(RawBody::Resident(v))
                if !is_dir
                    && scan.inline_max > 0
                    && v.len() <= scan.inline_max.min(scan.inline_budget)
                    && (scan.inline_extensions.is_empty()
                        || view.names[..view.name_count]
                            .iter()
                            .any(|n| long_name_listed(n, scan.inline_extensions))) =>
            {
                scan.inline_budget -= v.len();
                Some(Arc::from(v))
            }
            _ => None,
        };
        if inline.is_none() && !is_dir && sizes.is_some() {
            self.note_pending_inline(ino, &view, scan);
        }
        Self::add_record(
            scan,
            ino,
            header.sequence_number,
            view.has_index_root,
            sizes,
            inline,
        )?;
        for v in &view.names[..view.name_count] {
            self.add_name(scan, ino, v, is_dir, false, si_attributes, include_hidden)?;
        }
        Some(())
    }

    /// Notes record `ino` for reading inline after the pass when its default stream is small,
    /// plain non-resident data (not compressed nor encrypted, no attribute list, no more than
    /// [`MAX_INLINE_RUNS`] runs, all inside the volume; holes are fine) and one of its long
    /// names has a listed extension. Anything unusual just comes without inline bytes.
    fn note_pending_inline(&self, ino: u64, view: &RecordView<'_>, scan: &mut Scan) {
        if scan.inline_max == 0 || scan.inline_extensions.is_empty() || view.stream_parts != 1 {
            return;
        }
        let Some(a) = view.stream_first else {
            return;
        };
        let RawBody::NonResident(nr) = a.body else {
            return;
        };
        // Files the budget could not hold even if no more resident data came are not noted:
        // what is noted stays within the budget.
        let budget_left = scan.inline_budget.saturating_sub(scan.pending_bytes);
        if nr.data_size > scan.inline_max.min(budget_left) as u64
            || nr.lowest_vcn != 0
            // Sparse streams carry a compression unit too: only the flag makes `open()`
            // decompress.
            || a.flags & (ATTR_COMPRESSION_MASK | ATTR_ENCRYPTED) != 0
            || !view.names[..view.name_count]
                .iter()
                .any(|v| long_name_listed(v, scan.inline_extensions))
        {
            return;
        }
        let cs = self.boot.cluster_size;
        let start = scan.inline_runs.len();
        let mut plain = true;
        let runs = &mut scan.inline_runs;
        let decoded = record::for_each_run(nr.mapping_pairs, 0, self.boot.total_clusters(), |r| {
            // Runs past the data are never read (`extent_map` stops there too).
            if !plain || r.vcn.saturating_mul(cs) >= nr.data_size {
                return;
            }
            if runs.len() - start >= MAX_INLINE_RUNS {
                plain = false;
                return;
            }
            runs.push(r);
        });
        if decoded.is_err() || !plain {
            scan.inline_runs.truncate(start);
            return;
        }
        // At most `inline_max`, so it fits.
        scan.pending_bytes += nr.data_size as usize;
        scan.pending_inline.push(PendingInline {
            ino,
            data_size: nr.data_size,
            initialized_size: nr.initialized_size.min(nr.data_size),
            runs: start..scan.inline_runs.len(),
        });
    }

    /// Plans the reading of the files noted by [`Ntfs::note_pending_inline`]: as many as the
    /// budget left by resident data allows, in record order, each cut into the device pieces
    /// its runs cover (holes and the part past the initialized size read as zeros). A file
    /// with data `open()` would refuse as lying past the device is left out.
    fn plan_pending_inline(&self, scan: &mut Scan) -> InlinePlan {
        let pending = std::mem::take(&mut scan.pending_inline);
        let runs = std::mem::take(&mut scan.inline_runs);
        let mut plan = InlinePlan::default();
        let cs = self.boot.cluster_size;
        let device_size = self.device.size();
        for p in &pending {
            // At most `inline_max` (checked when noted), so it fits.
            let size = p.data_size as usize;
            if size > scan.inline_budget {
                continue;
            }
            let first_piece = plan.pieces.len();
            let mut inside = true;
            for r in runs.get(p.runs.clone()).unwrap_or_default() {
                // Below the data size (checked when noted), so no overflow.
                let start = r.vcn * cs;
                if start >= p.initialized_size {
                    break;
                }
                let len = r.len.saturating_mul(cs).min(p.initialized_size - start);
                // A hole reads as zeros: nothing to read.
                let Some(lcn) = r.lcn else {
                    continue;
                };
                match lcn.checked_mul(cs) {
                    Some(d) if d.checked_add(len).is_some_and(|e| e <= device_size) => {
                        plan.pieces.push(InlinePiece {
                            device: d,
                            len: len as usize,
                            file: plan.files.len(),
                            at: start as usize,
                        });
                    }
                    _ => {
                        inside = false;
                        break;
                    }
                }
            }
            if !inside {
                plan.pieces.truncate(first_piece);
                continue;
            }
            scan.inline_budget -= size;
            plan.files.push((p.ino, size));
        }
        plan
    }

    /// Reads a [`Ntfs::plan_pending_inline`] plan: the pieces sorted by device offset,
    /// announced with `will_need` (a cold LUN then streams them in one ordered queue) and read
    /// with neighbours merged into one read. Returns each file's record number and bytes; a
    /// file whose read fails is left out.
    fn read_inline_plan(
        &self,
        plan: InlinePlan,
        mut files: Vec<Arc<[u8]>>,
    ) -> Vec<(u64, Arc<[u8]>)> {
        let InlinePlan {
            files: wanted,
            mut pieces,
        } = plan;
        let mut failed = vec![false; files.len()];
        pieces.sort_unstable_by_key(|p| p.device);
        // Groups of pieces read at once: `(first piece, end piece, device start, device end)`.
        let mut groups: Vec<(usize, usize, u64, u64)> = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let end = p.device + p.len as u64;
            match groups.last_mut() {
                Some(g) if p.device <= g.3 && end.max(g.3) - g.2 <= INLINE_READ_MAX => {
                    g.1 = i + 1;
                    g.3 = g.3.max(end);
                }
                _ => groups.push((i, i + 1, p.device, end)),
            }
        }
        if !self.inline_pieces_cached(&pieces) {
            for &(_, _, start, end) in &groups {
                self.device.will_need(start, end - start);
            }
        }
        let mut buf = Vec::new();
        for &(first, last, start, end) in &groups {
            let group = &pieces[first..last];
            if let [p] = group {
                let read = Arc::get_mut(&mut files[p.file]).is_some_and(|f| {
                    self.device
                        .read_exact_at(p.device, &mut f[p.at..p.at + p.len])
                        .is_ok()
                });
                failed[p.file] |= !read;
                continue;
            }
            // At most `INLINE_READ_MAX`.
            buf.resize((end - start) as usize, 0);
            let whole = self.device.read_exact_at(start, &mut buf).is_ok();
            for p in group {
                // Each buffer is this function's alone until it returns.
                let Some(file) = Arc::get_mut(&mut files[p.file]) else {
                    failed[p.file] = true;
                    continue;
                };
                let dst = &mut file[p.at..p.at + p.len];
                if whole {
                    let from = (p.device - start) as usize;
                    dst.copy_from_slice(&buf[from..from + p.len]);
                } else if self.device.read_exact_at(p.device, dst).is_err() {
                    // A bad sector costs only the files it holds.
                    failed[p.file] = true;
                }
            }
        }
        wanted
            .into_iter()
            .zip(files)
            .zip(failed)
            .filter(|(_, failed)| !failed)
            .map(|(((ino, _), bytes), _)| (ino, bytes))
            .collect()
    }

    /// True when a sample of `pieces` (first, middle, last) sits in the page cache: the
    /// read-ahead hints, a system call per group, would then only cost time.
    fn inline_pieces_cached(&self, pieces: &[InlinePiece]) -> bool {
        let Some(last) = pieces.len().checked_sub(1) else {
            return true;
        };
        let mut sample = vec![0, last / 2, last];
        sample.dedup();
        sample.into_iter().all(|i| {
            let p = &pieces[i];
            // `is_cached` looks at 64 KiB at most.
            self.device.is_cached(p.device, p.len.min(64 << 10)) == Some(true)
        })
    }

    /// Size and allocated bytes of the default stream as `metadata()` computes them, from the
    /// record's only extent of it: `Some(None)` where `metadata()` fails, `None` where the
    /// per-record code must decide (several extents).
    fn fast_sizes(&self, view: &RecordView<'_>, is_dir: bool) -> Option<Option<(u64, u64)>> {
        let Some(first) = view.stream_first else {
            return Some(Some((0, 0)));
        };
        let nr = match first.body {
            RawBody::Resident(v) => {
                return Some(Some(if is_dir { (0, 0) } else { (v.len() as u64, 0) }));
            }
            RawBody::NonResident(nr) if view.stream_parts == 1 => nr,
            RawBody::NonResident(_) => return None,
        };
        // The checks of `merge_extents`, for a stream of one extent.
        let cs = self.boot.cluster_size;
        let compressed = first.flags & ATTR_COMPRESSION_MASK != 0 && nr.compression_unit != 0;
        if nr.lowest_vcn != 0
            || nr.data_size > nr.end_vcn.saturating_mul(cs)
            || (compressed
                && (nr.compression_unit > 8 || cs << nr.compression_unit > MAX_COMPRESSION_UNIT))
        {
            return Some(None);
        }
        let mut allocated = 0u64;
        // Validated while walking the attributes: decoding again cannot fail.
        record::for_each_run(
            nr.mapping_pairs,
            nr.lowest_vcn,
            self.boot.total_clusters(),
            |r| {
                if r.lcn.is_some() {
                    allocated = allocated.saturating_add(r.len.saturating_mul(cs));
                }
            },
        )
        .ok()?;
        Some(Some(if is_dir {
            (0, allocated)
        } else {
            (nr.data_size, allocated)
        }))
    }

    /// The per-record path: the record assembled as `load_file` assembles it and sized by
    /// the code `metadata()` runs.
    fn scan_record_slow(
        &self,
        ino: u64,
        rec: &[u8],
        include_hidden: bool,
        scan: &mut Scan,
    ) -> Option<()> {
        let (header, attrs) = self.decode_record(ino, rec).ok()?;
        let f = if attrs.iter().any(|a| a.type_code == AT_ATTRIBUTE_LIST) {
            self.load_file(ino).ok()?
        } else {
            File { ino, header, attrs }
        };
        let si_attributes = f
            .resident(AT_STANDARD_INFORMATION, &[])
            .and_then(|v| StandardInformation::parse(v).ok())
            .map_or(0, |s| s.file_attributes);
        Self::add_record(
            scan,
            ino,
            f.header.sequence_number,
            f.resident(AT_INDEX_ROOT, &I30).is_some(),
            self.tree_sizes(&f).ok(),
            None,
        )?;
        let has_reparse = f.has(AT_REPARSE_POINT, &[]);
        for a in f.attrs.iter().filter(|a| a.type_code == AT_FILE_NAME) {
            // A name that does not decode is still an index entry somewhere.
            let AttrBody::Resident(v) = &a.body else {
                return None;
            };
            self.add_name(
                scan,
                ino,
                v,
                f.is_dir(),
                has_reparse,
                si_attributes,
                include_hidden,
            )?;
        }
        Some(())
    }

    fn add_record(
        scan: &mut Scan,
        ino: u64,
        sequence_number: u16,
        has_index_root: bool,
        sizes: Option<(u64, u64)>,
        inline: Option<Arc<[u8]>>,
    ) -> Option<()> {
        let index = u32::try_from(scan.records.len()).ok()?;
        *scan.slot.get_mut(usize::try_from(ino).ok()?)? = index;
        scan.records.push(RecordInfo {
            sequence_number,
            has_index_root,
            sizes,
            inline,
        });
        Some(())
    }

    /// Adds the $FILE_NAME value `v` of record `ino`. `None` when it does not decode.
    #[allow(clippy::too_many_arguments)]
    fn add_name(
        &self,
        scan: &mut Scan,
        ino: u64,
        v: &[u8],
        is_dir: bool,
        has_reparse: bool,
        si_attributes: u32,
        include_hidden: bool,
    ) -> Option<()> {
        // Names are numbered with u32 while sorting.
        if scan.names.len() >= u32::MAX as usize {
            return None;
        }
        let key = FileName::parse_without_name(v).ok()?;
        let parent = key.parent_record();
        if needs_index_entry(&key, ino, is_dir, has_reparse, si_attributes) {
            scan.needs_index.insert(parent);
        }
        if key.namespace == Namespace::Dos && !include_hidden {
            return Some(());
        }
        // Validated by `parse_without_name`.
        let len = *v.get(0x40)?;
        let bytes = v.get(0x42..0x42 + 2 * usize::from(len))?;
        let start = scan.units.len();
        scan.units.extend(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]])),
        );
        let upcase = &self.upcase;
        scan.upcased
            .extend(scan.units[start..].iter().map(|&u| upcase.fold(u)));
        scan.names.push(NameInfo {
            parent,
            parent_seq: (key.parent >> 48) as u16,
            ino,
            start,
            len,
            namespace: key.namespace,
            file_attributes: key.file_attributes,
            reparse_tag: key.reparse_tag,
            data_size: key.data_size,
        });
        Some(())
    }

    /// Sizes of `ino` as `metadata()` reports them, or its error.
    fn scanned_sizes(&self, scan: &Scan, ino: u64) -> fscore::Result<(u64, u64)> {
        match scan.record(ino).and_then(|r| r.sizes) {
            Some(s) => Ok(s),
            None => self
                .metadata(&FileId::new(ino))
                .map(|m| (m.size, m.allocated)),
        }
    }

    /// The listing of directory `dir` (a tree entry whose metadata-ness is `meta`), as
    /// `read_dir` returns it.
    fn scanned_dir(&self, scan: &Scan, dir: &FileId, meta: bool) -> fscore::Result<Vec<DirEntry>> {
        let info = scan.record(dir.ino);
        let cheap = info.is_some_and(|r| r.has_index_root) && !scan.needs_index.contains(&dir.ino);
        let Some(info) = info.filter(|_| cheap) else {
            return self.read_dir(dir);
        };
        let children = scan.children(dir.ino);
        let mut out = Vec::with_capacity(children.len());
        for &i in children {
            let n = &scan.names[i as usize];
            if n.parent_seq != info.sequence_number
                || (dir.ino == ROOT_RECORD && n.ino == ROOT_RECORD)
            {
                continue;
            }
            out.push(self.dir_entry_of(meta, n.ino, &n.key(), scan.units(n)));
        }
        Ok(out)
    }

    /// Walks the scanned names from the root exactly as [`walk_tree`] walks `read_dir`.
    fn tree_from_scan(&self, scan: &Scan, limits: &TreeLimits) -> Tree {
        let mut source = ScanSource {
            fs: self,
            scan,
            limits,
            below_extend: Vec::with_capacity(scan.names.len()),
        };
        walk_tree_with(&mut source, self.root(), limits)
    }
}

/// The scanned names and sizes as a [`TreeSource`].
struct ScanSource<'a> {
    fs: &'a Ntfs,
    scan: &'a Scan,
    limits: &'a TreeLimits,
    /// Per tree entry: a directory below $Extend (how `is_metadata` walks up the parents).
    below_extend: Vec<bool>,
}

impl TreeSource for ScanSource<'_> {
    type Carry = ();
    type Listing = PlainListing;

    fn list(&mut self, tree: &Tree, dir: u32, _: Option<()>) -> fscore::Result<PlainListing> {
        let id = &tree.entries[dir as usize].entry.id;
        let below = self
            .below_extend
            .get(dir as usize)
            .copied()
            .unwrap_or(false);
        let meta = id.ino != ROOT_RECORD && (id.ino < FIRST_USER_RECORD || below);
        Ok(plain_listing(self.fs.scanned_dir(self.scan, id, meta)?))
    }

    fn expected_entries(&self) -> usize {
        self.scan.names.len()
    }

    fn size(&mut self, _: &Tree, parent: u32, e: &DirEntry, _: Option<()>) -> SizedEntry<()> {
        let below = e.id.ino == EXTEND_RECORD
            || (e.id.ino != ROOT_RECORD
                && self
                    .below_extend
                    .get(parent as usize)
                    .copied()
                    .unwrap_or(false));
        self.below_extend.push(below);
        let inline = match (e.file_type, self.scan.record(e.id.ino)) {
            (FileType::File, Some(r))
                if r.inline.is_some() && self.limits.inline_wanted(&e.name) =>
            {
                r.inline.clone()
            }
            _ => None,
        };
        SizedEntry {
            sizes: self.fs.scanned_sizes(self.scan, e.id.ino),
            inline,
            carry: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upcase::UpCase;

    fn scan_of(names: &[(u64, &str, u64)]) -> Scan {
        let up = UpCase::ascii();
        let mut scan = Scan::new(64, &TreeLimits::default());
        for &(parent, name, ino) in names {
            let start = scan.units.len();
            scan.units.extend(name.encode_utf16());
            scan.upcased.extend(name.encode_utf16().map(|u| up.fold(u)));
            scan.names.push(NameInfo {
                parent,
                parent_seq: 0,
                ino,
                start,
                len: (scan.units.len() - start) as u8,
                namespace: Namespace::Posix,
                file_attributes: 0,
                reparse_tag: 0,
                data_size: 0,
            });
        }
        scan.sort();
        scan
    }

    fn listed(scan: &Scan, dir: u64) -> Vec<String> {
        scan.children(dir)
            .iter()
            .map(|&i| String::from_utf16_lossy(scan.units(&scan.names[i as usize])))
            .collect()
    }

    #[test]
    fn names_sort_as_the_index_collates() {
        let scan = scan_of(&[
            (5, "b", 40),
            (5, "abc", 41),
            (7, "z", 42),
            (5, "a~", 43),
            (5, "ab", 44),
            (5, "a", 45),
            (5, "A", 46),
            (5, "_x", 47),
            // A parent outside $MFT: never a directory.
            (1 << 40, "lost", 48),
        ]);
        // Upper-cased first ('~' sorts after 'B', '_' after 'A'..'Z'), shorter first on a
        // common prefix, then names equal but for case by their code units ('A' < 'a').
        assert_eq!(listed(&scan, 5), ["A", "a", "ab", "abc", "a~", "b", "_x"]);
        assert_eq!(listed(&scan, 7), ["z"]);
        assert!(listed(&scan, 6).is_empty());
        assert!(listed(&scan, 1 << 40).is_empty());
        assert!(listed(&scan, u64::MAX).is_empty());
    }
}
