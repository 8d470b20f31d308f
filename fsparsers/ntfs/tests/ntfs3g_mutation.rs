//! Bad input: bytes of a small mkntfs + ntfs-3g image flipped and truncated (boot sector, MFT
//! records, index records, run lists), and hand-made corruptions patched into real records
//! with their update-sequence arrays fixed up (a directory that contains itself, a run list
//! pointing past the device, an attribute list that loops, an attribute claiming 4 GiB).
//!
//! Every case walks the whole tree and reads every file and stream. The reader must answer with
//! an error or data, never panic, never run past a time bound, never allocate past a memory
//! bound (this binary counts allocations per thread).

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fscore::{FileId, FileType, Filesystem, FsError, TreeLimits, TreeProblem};
use lun::{MemSource, Source};
use proptest::prelude::*;
use testkit::ntfs::{Digest, Layout, Sha256, Spec, image_path};

// ---------------------------------------------------------------------------------------------
// Allocation accounting: bytes live and the peak, per thread, so that parallel cases do not
// blur each other's numbers.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + delta;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v);
            }
        });
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        account(-(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Memory a case may use on top of its own copy of the image: the reader's caches, one read
/// buffer, the walk's bookkeeping.
const MEMORY_BOUND: isize = 64 << 20;
/// Wall time a case may take (a walk of the pristine image takes milliseconds).
const TIME_BOUND: Duration = Duration::from_secs(20);
/// Bytes read from one file at most: a corrupt size may claim exabytes.
const READ_CAP: u64 = 8 << 20;

// ---------------------------------------------------------------------------------------------
// The bounded walk.

#[derive(Debug, Default)]
struct Outcome {
    /// path -> SHA-256 of what was read (possibly capped), or "error: ...".
    files: BTreeMap<String, String>,
    errors: Vec<String>,
    /// Directories listed inside themselves or an ancestor without an error.
    cycles: Vec<String>,
    open_error: Option<String>,
    peak: isize,
    /// Paths `list_tree` listed with the default limits.
    tree: Vec<String>,
}

fn describe(e: &FsError) -> String {
    let s = e.to_string();
    assert!(
        !s.trim().is_empty(),
        "an error with an empty message: {e:?}"
    );
    if let FsError::Corrupt {
        structure, detail, ..
    } = e
    {
        assert!(
            !structure.is_empty() && !detail.is_empty(),
            "vague corruption error: {e:?}"
        );
    }
    s
}

fn read_capped(fs: &dyn Filesystem, id: &FileId) -> Result<String, String> {
    let src = fs.open(id).map_err(|e| describe(&e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let size = src.size();
    let mut off = 0;
    while off < size.min(READ_CAP) {
        let n = (size - off).min(buf.len() as u64) as usize;
        src.read_exact_at(off, &mut buf[..n])
            .map_err(|e| describe(&FsError::Io(e)))?;
        h.update(&buf[..n]);
        off += n as u64;
    }
    if size > READ_CAP {
        // And the very end, where size arithmetic goes wrong.
        let n = 4096.min(size - READ_CAP) as usize;
        src.read_exact_at(size - n as u64, &mut buf[..n])
            .map_err(|e| describe(&FsError::Io(e)))?;
    }
    Ok(testkit::ntfs::hex_digest(h))
}

fn walk_bounded(fs: &dyn Filesystem, out: &mut Outcome) {
    let mut stack = vec![(fs.root(), String::new(), vec![fs.root().ino])];
    let mut visited = 0usize;
    while let Some((dir, prefix, ancestors)) = stack.pop() {
        if ancestors.len() > 48 || visited > 50_000 {
            out.cycles.push(format!("{prefix}: walk bound hit"));
            break;
        }
        let entries = match fs.read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                out.errors
                    .push(format!("read_dir {prefix}/: {}", describe(&e)));
                continue;
            }
        };
        for ent in entries {
            visited += 1;
            let path = format!("{prefix}/{}", ent.name);
            if let Err(e) = fs.lookup(&path) {
                let _ = describe(&e);
            }
            let md = match fs.metadata(&ent.id) {
                Ok(m) => m,
                Err(e) => {
                    out.errors
                        .push(format!("metadata {path}: {}", describe(&e)));
                    continue;
                }
            };
            if let Err(e) = fs.extents(&ent.id) {
                let _ = describe(&e);
            }
            if md.file_type == FileType::File {
                let r = read_capped(fs, &ent.id);
                out.files
                    .insert(path.clone(), r.unwrap_or_else(|e| format!("error: {e}")));
            }
            for s in md.streams.iter().take(100) {
                let sid = FileId {
                    ino: ent.id.ino,
                    stream: Some(s.name.clone()),
                };
                let r = read_capped(fs, &sid);
                out.files.insert(
                    format!("{path}:{}", s.name),
                    r.unwrap_or_else(|e| format!("error: {e}")),
                );
            }
            if md.file_type == FileType::Dir && !ent.metadata_file {
                if ancestors.contains(&ent.id.ino) {
                    out.cycles.push(format!(
                        "{path}: directory record {} lists itself or an ancestor",
                        ent.id.ino
                    ));
                    continue;
                }
                let mut a = ancestors.clone();
                a.push(ent.id.ino);
                stack.push((ent.id.clone(), path, a));
            }
        }
    }
}

/// Lists the whole tree through `list_tree` (the $MFT pass, or `walk_tree` where the pass
/// meets an undecodable record) with several limits, and checks that each listing is a tree:
/// parents before children, depths that follow, no directory twice, the entry bound kept.
fn list_tree_checked(fs: &ntfs::Ntfs, out: &mut Outcome) {
    let limit_sets = [
        TreeLimits::default(),
        TreeLimits {
            include_hidden: true,
            ..TreeLimits::default()
        },
        TreeLimits {
            max_entries: 10,
            max_depth: 2,
            include_hidden: true,
            inline_max: 0,
            inline_total: 0,
            inline_extensions: &[],
        },
        // Resident files, and the small .txt/.bin files read from their clusters, inline.
        TreeLimits {
            inline_max: 64 << 10,
            inline_extensions: &["txt", "bin"],
            ..TreeLimits::default()
        },
    ];
    for limits in limit_sets {
        let t = fs.list_tree(&limits);
        // Inline bytes are exactly what open() reads: never bytes of a file that does not
        // read, never other bytes.
        for (i, e) in t.entries.iter().enumerate() {
            if let Some(bytes) = &e.inline {
                let mut h = Sha256::new();
                h.update(bytes);
                assert_eq!(
                    Ok(testkit::ntfs::hex_digest(h)),
                    read_capped(fs, &e.entry.id),
                    "inline bytes of {}",
                    t.path(i as u32)
                );
            }
        }
        assert!(!t.entries.is_empty(), "list_tree lost the root");
        assert!(t.entries.len() <= limits.max_entries + 1, "{limits:?}");
        let mut dirs = std::collections::HashSet::new();
        for (i, e) in t.entries.iter().enumerate().skip(1) {
            let p = e.parent as usize;
            assert!(p < i, "entry {i} listed before its parent {p}");
            let parent = &t.entries[p];
            assert_eq!(parent.entry.file_type, FileType::Dir, "parent of {i}");
            assert_eq!(e.depth, parent.depth + 1, "depth of {i}");
            assert!(e.depth as usize <= limits.max_depth, "depth of {i}");
            if e.entry.file_type == FileType::Dir {
                assert!(
                    dirs.insert(e.entry.id.ino),
                    "directory {} twice",
                    e.entry.id.ino
                );
            }
            if !limits.include_hidden {
                assert!(!e.entry.metadata_file && !e.entry.short_name, "{e:?}");
            }
        }
        for p in &t.problems {
            if let TreeProblem::UnreadableDir { error, .. }
            | TreeProblem::UnreadableFile { error, .. } = p
            {
                let _ = describe(error);
            }
        }
        if limits == TreeLimits::default() {
            out.tree = (0..t.entries.len() as u32).map(|i| t.path(i)).collect();
        }
    }
}

/// Opens and walks `bytes` on a thread of its own, under the time and memory bounds. Panics
/// (with the case's label) on a reader panic, a hang or an allocation past the bound.
fn run_case(label: &str, bytes: Arc<Vec<u8>>, len: usize) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let name = label.to_string();
    let handle = std::thread::Builder::new()
        .name(format!("case {label}"))
        .spawn(move || {
            let copy = bytes[..len].to_vec();
            drop(bytes);
            LIVE.with(|l| l.set(0));
            PEAK.with(|p| p.set(0));
            let src: Source = Arc::new(MemSource::new(name, copy));
            let base = LIVE.with(Cell::get);
            let mut out = Outcome::default();
            match ntfs::Ntfs::open(src) {
                Ok(fs) => {
                    walk_bounded(&fs, &mut out);
                    list_tree_checked(&fs, &mut out);
                }
                Err(e) => {
                    let s = e.to_string();
                    assert!(
                        !s.trim().is_empty(),
                        "Ntfs::open error with an empty message"
                    );
                    out.open_error = Some(s);
                }
            }
            out.peak = PEAK.with(Cell::get) - base;
            let _ = tx.send(out);
        })
        .expect("spawn case thread");
    let started = Instant::now();
    match rx.recv_timeout(TIME_BOUND) {
        Ok(out) => {
            let _ = handle.join();
            assert!(
                out.peak <= MEMORY_BOUND,
                "{label}: the reader allocated {} MiB at peak (bound {} MiB)",
                out.peak >> 20,
                MEMORY_BOUND >> 20
            );
            out
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let panic = handle.join().err().map(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            });
            panic!("{label}: the reader panicked: {panic:?}");
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // The thread cannot be killed; it is left behind and the test fails.
            panic!(
                "{label}: no answer after {:?} (hang or runaway loop)",
                started.elapsed()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Just enough NTFS to find the structures to corrupt (independent of the reader under test).

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Undoes the update-sequence fixups of a FILE/INDX record in place.
fn unfix(rec: &mut [u8]) {
    let usa = u16_at(rec, 4) as usize;
    let count = u16_at(rec, 6) as usize;
    for i in 1..count {
        let end = i * 512 - 2;
        rec[end] = rec[usa + 2 * i];
        rec[end + 1] = rec[usa + 2 * i + 1];
    }
}

/// Re-applies the fixups: saves each sector's last two bytes and stamps the sequence number.
fn refix(rec: &mut [u8]) {
    let usa = u16_at(rec, 4) as usize;
    let count = u16_at(rec, 6) as usize;
    let usn = [rec[usa], rec[usa + 1]];
    for i in 1..count {
        let end = i * 512 - 2;
        rec[usa + 2 * i] = rec[end];
        rec[usa + 2 * i + 1] = rec[end + 1];
        rec[end] = usn[0];
        rec[end + 1] = usn[1];
    }
}

/// Decodes a mapping-pairs array into (vcn, lcn or None, clusters).
fn runs(rl: &[u8]) -> Vec<(u64, Option<u64>, u64)> {
    let mut out = Vec::new();
    let (mut i, mut vcn, mut lcn) = (0usize, 0u64, 0i64);
    while i < rl.len() && rl[i] != 0 {
        let (ls, os) = ((rl[i] & 15) as usize, (rl[i] >> 4) as usize);
        let mut len = 0u64;
        for k in 0..ls {
            len |= u64::from(rl[i + 1 + k]) << (8 * k);
        }
        let mut off = 0i64;
        for k in 0..os {
            off |= i64::from(rl[i + 1 + ls + k]) << (8 * k);
        }
        if os > 0 && rl[i + ls + os] & 0x80 != 0 {
            off -= 1i64 << (8 * os);
        }
        i += 1 + ls + os;
        let l = if os == 0 {
            None
        } else {
            lcn += off;
            Some(lcn as u64)
        };
        out.push((vcn, l, len));
        vcn += len;
    }
    out
}

#[derive(Clone, Debug)]
struct Attr {
    /// Offset of the attribute header inside the record.
    at: usize,
    kind: u32,
    len: usize,
    non_resident: bool,
    name: String,
}

#[derive(Clone, Debug)]
struct Rec {
    no: u64,
    offset: usize,
    /// With fixups undone.
    bytes: Vec<u8>,
    attrs: Vec<Attr>,
    name: String,
}

impl Rec {
    /// The unnamed `$DATA` attribute (type 0x80) in this record.
    fn unnamed_data(&self) -> &Attr {
        self.attrs
            .iter()
            .find(|a| a.kind == 0x80 && a.name.is_empty())
            .expect("$DATA")
    }
}

struct Geometry {
    cluster: usize,
    rec_size: usize,
    index_size: usize,
    records: Vec<Rec>,
}

fn utf16_name(b: &[u8], at: usize, chars: usize) -> String {
    let units: Vec<u16> = (0..chars).map(|i| u16_at(b, at + 2 * i)).collect();
    String::from_utf16_lossy(&units)
}

fn parse_attrs(rec: &[u8]) -> Vec<Attr> {
    let mut out = Vec::new();
    let mut at = u16_at(rec, 0x14) as usize;
    while at + 16 <= rec.len() {
        let kind = u32_at(rec, at);
        if kind == 0xFFFF_FFFF {
            break;
        }
        let len = u32_at(rec, at + 4) as usize;
        if len < 16 || at + len > rec.len() {
            break;
        }
        let name = utf16_name(
            rec,
            at + u16_at(rec, at + 10) as usize,
            rec[at + 9] as usize,
        );
        out.push(Attr {
            at,
            kind,
            len,
            non_resident: rec[at + 8] != 0,
            name,
        });
        at += len;
    }
    out
}

fn geometry(img: &[u8]) -> Geometry {
    let bps = u16_at(img, 0x0B) as usize;
    let spc = img[0x0D] as usize;
    let cluster = bps * spc;
    let size_of = |v: i8| {
        if v < 0 {
            1usize << (-v)
        } else {
            v as usize * cluster
        }
    };
    let rec_size = size_of(img[0x40] as i8);
    let index_size = size_of(img[0x44] as i8);
    let mft0 = u64_at(img, 0x30) as usize * cluster;
    let mut r0 = img[mft0..mft0 + rec_size].to_vec();
    unfix(&mut r0);
    let data = parse_attrs(&r0)
        .into_iter()
        .find(|a| a.kind == 0x80)
        .expect("$MFT $DATA");
    let rl_off = data.at + u16_at(&r0, data.at + 0x20) as usize;
    let mft_size = u64_at(&r0, data.at + 0x30) as usize;
    let mut records = Vec::new();
    for (vcn, lcn, len) in runs(&r0[rl_off..data.at + data.len]) {
        let Some(lcn) = lcn else { continue };
        let first = vcn as usize * cluster / rec_size;
        let count = len as usize * cluster / rec_size;
        for k in 0..count {
            let no = first + k;
            if no * rec_size >= mft_size {
                break;
            }
            let offset = lcn as usize * cluster + k * rec_size;
            let mut bytes = img[offset..offset + rec_size].to_vec();
            if &bytes[..4] != b"FILE" || u16_at(&bytes, 0x16) & 1 == 0 {
                continue;
            }
            unfix(&mut bytes);
            let attrs = parse_attrs(&bytes);
            let name = attrs
                .iter()
                .filter(|a| a.kind == 0x30 && !a.non_resident)
                .map(|a| {
                    let v = a.at + u16_at(&bytes, a.at + 0x14) as usize;
                    utf16_name(&bytes, v + 0x42, bytes[v + 0x40] as usize)
                })
                .next_back()
                .unwrap_or_default();
            records.push(Rec {
                no: no as u64,
                offset,
                bytes,
                attrs,
                name,
            });
        }
    }
    Geometry {
        cluster,
        rec_size,
        index_size,
        records,
    }
}

impl Geometry {
    /// The base record of the file called `name` (its $FILE_NAME may sit in an extension
    /// record).
    fn record(&self, name: &str) -> &Rec {
        let named = self
            .records
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no record named {name}"));
        let base = u64_at(&named.bytes, 0x20) & 0xFFFF_FFFF_FFFF;
        if base == 0 {
            return named;
        }
        self.records
            .iter()
            .find(|r| r.no == base)
            .unwrap_or_else(|| panic!("base record {base} of {name} not in use"))
    }

    /// Byte ranges worth corrupting: (label, start, len).
    fn targets(&self) -> Vec<(String, usize, usize)> {
        let mut t = vec![("boot sector".to_string(), 0usize, 512usize)];
        for r in &self.records {
            t.push((
                format!("MFT record {} ({})", r.no, r.name),
                r.offset,
                self.rec_size,
            ));
            for a in r.attrs.iter().filter(|a| a.non_resident) {
                let rl = a.at + u16_at(&r.bytes, a.at + 0x20) as usize;
                t.push((
                    format!("run list of attribute {:#x} in record {}", a.kind, r.no),
                    r.offset + rl,
                    a.at + a.len - rl,
                ));
                if a.kind == 0xA0 {
                    for (_, lcn, len) in runs(&r.bytes[rl..a.at + a.len]) {
                        let Some(lcn) = lcn else { continue };
                        let bytes = len as usize * self.cluster;
                        for k in 0..bytes.div_ceil(self.index_size) {
                            t.push((
                                format!("index record {k} of record {} ({})", r.no, r.name),
                                lcn as usize * self.cluster + k * self.index_size,
                                self.index_size,
                            ));
                        }
                    }
                }
            }
        }
        t
    }
}

/// Applies `edit` to MFT record `rec` of `img` (fixups undone first, redone after), so the
/// record stays valid apart from the intended corruption.
fn patch_record(img: &mut [u8], g: &Geometry, rec: &Rec, edit: impl FnOnce(&mut [u8])) {
    let mut b = rec.bytes.clone();
    edit(&mut b);
    refix(&mut b);
    img[rec.offset..rec.offset + g.rec_size].copy_from_slice(&b);
}

// ---------------------------------------------------------------------------------------------

fn pristine(test: &str) -> Option<(Arc<Vec<u8>>, Geometry, Outcome)> {
    let path = image_path(test, &Spec::of(Layout::Small, 4096))?;
    let img = std::fs::read(&path).expect("read small image");
    let g = geometry(&img);
    let img = Arc::new(img);
    let out = run_case("pristine", img.clone(), img.len());
    assert!(
        out.open_error.is_none(),
        "pristine image: {:?}",
        out.open_error
    );
    assert!(out.errors.is_empty(), "pristine image: {:?}", out.errors);
    assert!(
        out.files.contains_key("/hello.txt"),
        "pristine walk: {:?}",
        out.files.keys()
    );
    Some((img, g, out))
}

#[test]
fn ntfs3g_mutation_pristine_small_image_walks_clean() {
    let Some((_, g, out)) = pristine("ntfs3g_mutation_pristine_small_image_walks_clean") else {
        return;
    };
    assert!(g.targets().iter().any(|t| t.0.starts_with("index record")));
    assert!(out.cycles.is_empty());
    assert!(out.files.len() > 60, "{} files", out.files.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ntfs3g_mutation_flipped_bytes(
        target in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        keep_fixups in any::<bool>(),
    ) {
        let Some((img, g, _)) = pristine("ntfs3g_mutation_flipped_bytes") else { return Ok(()) };
        let targets = g.targets();
        let (label, start, len) = &targets[target.index(targets.len())];
        let mut bytes = (*img).clone();
        let rec = g.records.iter().find(|r| r.offset == *start);
        match (rec, keep_fixups) {
            (Some(rec), true) => patch_record(&mut bytes, &g, rec, |b| {
                // Spare the update-sequence array itself so the record still verifies.
                for (i, x) in &flips {
                    let o = 0x30 + i.index(b.len() - 0x30);
                    if o % 512 < 510 {
                        b[o] ^= x;
                    }
                }
            }),
            _ => {
                for (i, x) in &flips {
                    bytes[start + i.index(*len)] ^= x;
                }
            }
        }
        let n = bytes.len();
        run_case(&format!("flip {label} (fixups kept: {keep_fixups})"), Arc::new(bytes), n);
    }

    #[test]
    fn ntfs3g_mutation_truncated(cut in any::<prop::sample::Index>()) {
        let Some((img, g, _)) = pristine("ntfs3g_mutation_truncated") else { return Ok(()) };
        // Cut inside a structure rather than anywhere: boot sector, MFT, index records.
        let targets = g.targets();
        let (label, start, len) = &targets[cut.index(targets.len())];
        let at = start + len / 2;
        run_case(&format!("truncated at {at} inside {label}"), img.clone(), at);
    }
}

#[test]
fn ntfs3g_mutation_truncated_at_fixed_points() {
    let Some((img, g, _)) = pristine("ntfs3g_mutation_truncated_at_fixed_points") else {
        return;
    };
    let mft = g.records[0].offset;
    for at in [
        0,
        1,
        11,
        511,
        512,
        4096,
        mft,
        mft + 100,
        mft + 1024 * 5 + 7,
        img.len() / 2,
        img.len() - 1,
    ] {
        run_case(&format!("truncated to {at} bytes"), img.clone(), at);
    }
}

/// The reader must not report data it cannot have read correctly: every file it does read in
/// a hand-corrupted image must read as in the pristine one.
fn assert_error_or_pristine(label: &str, out: &Outcome, pristine: &Outcome) {
    let failed: Vec<_> = out
        .files
        .iter()
        .filter(|(_, v)| v.starts_with("error: "))
        .collect();
    let missing: Vec<_> = pristine
        .files
        .keys()
        .filter(|k| !out.files.contains_key(*k))
        .collect();
    let extra: Vec<_> = out
        .files
        .keys()
        .filter(|k| !pristine.files.contains_key(*k))
        .collect();
    eprintln!(
        "{label}: open error {:?}; walk errors {:?}; read errors {failed:?}; \
         not listed {missing:?}; new {extra:?}; peak {} KiB",
        out.open_error,
        out.errors,
        out.peak >> 10
    );
    let missing: Vec<_> = missing.into_iter().filter(|p| !p.contains("/$")).collect();
    assert!(
        missing.is_empty()
            || !out.errors.is_empty()
            || !failed.is_empty()
            || out.open_error.is_some(),
        "{label}: {} file(s)/stream(s) vanished without any error: {missing:?}",
        missing.len()
    );
    for (p, got) in &out.files {
        // Metadata files ($MFT, $Bitmap…) hold the corruption itself.
        if got.starts_with("error: ") || p.contains("/$") {
            continue;
        }
        if let Some(want) = pristine.files.get(p) {
            assert_eq!(
                got, want,
                "{label}: {p} reads differently from the pristine image"
            );
        }
    }
    assert!(out.cycles.is_empty(), "{label}: {:?}", out.cycles);
}

#[test]
fn ntfs3g_mutation_directory_that_contains_itself() {
    let Some((img, g, clean)) = pristine("ntfs3g_mutation_directory_that_contains_itself") else {
        return;
    };
    let loopdir = g.record("loopdir");
    for (what, target_no) in [("itself", loopdir.no), ("the root", 5)] {
        let target_seq = g
            .records
            .iter()
            .find(|r| r.no == target_no)
            .map_or(0, |r| u16_at(&r.bytes, 0x10));
        let mut bytes = (*img).clone();
        patch_record(&mut bytes, &g, loopdir, |b| {
            let root = loopdir
                .attrs
                .iter()
                .find(|a| a.kind == 0x90)
                .expect("$INDEX_ROOT");
            let v = root.at + u16_at(b, root.at + 0x14) as usize;
            let mut e = v + 0x10 + u32_at(b, v + 0x10) as usize;
            loop {
                let elen = u16_at(b, e + 8) as usize;
                let flags = u16_at(b, e + 12);
                if flags & 2 != 0 {
                    panic!("no index entry for child in loopdir");
                }
                if utf16_name(b, e + 16 + 0x42, b[e + 16 + 0x40] as usize) == "child" {
                    let r = target_no | (u64::from(target_seq) << 48);
                    b[e..e + 8].copy_from_slice(&r.to_le_bytes());
                    break;
                }
                e += elen;
            }
        });
        let label = format!("loopdir/child points at {what}");
        let n = bytes.len();
        let out = run_case(&label, Arc::new(bytes), n);
        assert_error_or_pristine(&label, &out, &clean);
    }
}

#[test]
fn ntfs3g_mutation_run_list_past_the_device() {
    let Some((img, g, clean)) = pristine("ntfs3g_mutation_run_list_past_the_device") else {
        return;
    };
    let rec = g.record("data.bin");
    let data = rec.unnamed_data();
    assert!(data.non_resident);
    let mut bytes = (*img).clone();
    patch_record(&mut bytes, &g, rec, |b| {
        let rl = data.at + u16_at(b, data.at + 0x20) as usize;
        let clusters = runs(&b[rl..data.at + data.len])
            .iter()
            .map(|r| r.2)
            .sum::<u64>();
        assert!(
            clusters < 256 && data.at + data.len - rl >= 7,
            "room for the new run list"
        );
        // One run of the same length, 0x7fffff00 clusters into the volume.
        let new = [0x41, clusters as u8, 0x00, 0xff, 0xff, 0x7f, 0x00];
        b[rl..rl + 7].copy_from_slice(&new);
    });
    let n = bytes.len();
    let out = run_case("run list past the device", Arc::new(bytes), n);
    let got = out
        .files
        .get("/data.bin")
        .map(String::as_str)
        .unwrap_or("not listed");
    assert!(
        got.starts_with("error: ") || got == "not listed",
        "data.bin reads {got} although its run list points past the device"
    );
    assert_error_or_pristine("run list past the device", &out, &clean);
}

#[test]
fn ntfs3g_mutation_attribute_list_that_loops() {
    let Some((img, g, clean)) = pristine("ntfs3g_mutation_attribute_list_that_loops") else {
        return;
    };
    let rec = g.record("attrlist.txt");
    let al = rec
        .attrs
        .iter()
        .find(|a| a.kind == 0x20)
        .expect("attrlist.txt has an $ATTRIBUTE_LIST");
    let self_ref = rec.no | (u64::from(u16_at(&rec.bytes, 0x10)) << 48);
    // Where the list's bytes are: inside the record, or in clusters of its own.
    let rewrite = |list: &mut [u8], to: u64| {
        let mut at = 0;
        while at + 0x20 <= list.len() {
            let len = u16_at(list, at + 4) as usize;
            if len == 0 {
                break;
            }
            list[at + 0x10..at + 0x18].copy_from_slice(&to.to_le_bytes());
            at += len;
        }
    };
    let ext = g
        .records
        .iter()
        .find(|r| r.no != rec.no && u64_at(&r.bytes, 0x20) & 0xFFFF_FFFF_FFFF == rec.no)
        .expect("an extension record");
    let ext_ref = ext.no | (u64::from(u16_at(&ext.bytes, 0x10)) << 48);
    for (what, to) in [
        ("the base record itself", self_ref),
        ("one extension record", ext_ref),
    ] {
        let mut bytes = (*img).clone();
        if al.non_resident {
            let rl = al.at + u16_at(&rec.bytes, al.at + 0x20) as usize;
            let size = u64_at(&rec.bytes, al.at + 0x30) as usize;
            let (_, lcn, _) = runs(&rec.bytes[rl..al.at + al.len])[0];
            let start = lcn.expect("list clusters") as usize * g.cluster;
            rewrite(&mut bytes[start..start + size], to);
        } else {
            patch_record(&mut bytes, &g, rec, |b| {
                let v = al.at + u16_at(b, al.at + 0x14) as usize;
                let len = u32_at(b, al.at + 0x10) as usize;
                rewrite(&mut b[v..v + len], to);
            });
        }
        let label = format!("attribute list entries all point at {what}");
        let n = bytes.len();
        let out = run_case(&label, Arc::new(bytes), n);
        assert_error_or_pristine(&label, &out, &clean);
    }
    // An extension record that names itself as its own base record.
    let mut bytes = (*img).clone();
    patch_record(&mut bytes, &g, ext, |b| {
        b[0x20..0x28].copy_from_slice(&ext_ref.to_le_bytes())
    });
    let n = bytes.len();
    let out = run_case("extension record is its own base", Arc::new(bytes), n);
    assert_error_or_pristine("extension record is its own base", &out, &clean);
}

#[test]
fn ntfs3g_mutation_attribute_claiming_4_gib() {
    let Some((img, g, clean)) = pristine("ntfs3g_mutation_attribute_claiming_4_gib") else {
        return;
    };
    let hello = g.record("hello.txt");
    let data = hello.attrs.iter().find(|a| a.kind == 0x80).expect("$DATA");
    assert!(!data.non_resident, "hello.txt is resident");
    // (what, offset of the u32 inside the attribute, claimed value)
    let cases = [
        ("resident value length 4 GiB", 0x10, 0xFFFF_FFF0u32),
        ("attribute length 4 GiB", 4, 0xFFFF_FFF8u32),
    ];
    for (label, field, value) in cases {
        let mut bytes = (*img).clone();
        patch_record(&mut bytes, &g, hello, |b| {
            b[data.at + field..data.at + field + 4].copy_from_slice(&value.to_le_bytes());
        });
        let n = bytes.len();
        let out = run_case(label, Arc::new(bytes), n);
        let got = out
            .files
            .get("/hello.txt")
            .map(String::as_str)
            .unwrap_or("not listed");
        assert!(
            got.starts_with("error: ") || got == "not listed",
            "{label}: hello.txt reads {got}"
        );
        assert_error_or_pristine(label, &out, &clean);
    }
    // A non-resident $DATA whose sizes claim 4 GiB more than its runs hold.
    let rec = g.record("data.bin");
    let d = rec.unnamed_data();
    for (label, field) in [
        ("allocated size", 0x28),
        ("data size", 0x30),
        ("initialized size", 0x38),
    ] {
        let mut bytes = (*img).clone();
        patch_record(&mut bytes, &g, rec, |b| {
            let v = u64_at(b, d.at + field) + (4u64 << 30);
            b[d.at + field..d.at + field + 8].copy_from_slice(&v.to_le_bytes());
        });
        let n = bytes.len();
        let label = format!("non-resident {label} + 4 GiB");
        let out = run_case(&label, Arc::new(bytes), n);
        // Growing only the initialized size is harmless to readers that clamp it; any other
        // answer than an error or the pristine bytes is wrong.
        let got = out
            .files
            .get("/data.bin")
            .map(String::as_str)
            .unwrap_or("not listed");
        let want = clean
            .files
            .get("/data.bin")
            .map(String::as_str)
            .unwrap_or("");
        assert!(
            got.starts_with("error: ") || got == "not listed" || got == want,
            "{label}: data.bin reads {got}, pristine {want}"
        );
    }
}

/// Offset of the parent reference of the first $FILE_NAME of `rec` (fixups undone).
fn file_name_parent_at(rec: &Rec) -> usize {
    let a = rec
        .attrs
        .iter()
        .find(|a| a.kind == 0x30 && !a.non_resident)
        .expect("$FILE_NAME");
    a.at + u16_at(&rec.bytes, a.at + 0x14) as usize
}

fn reference(rec: &Rec) -> u64 {
    rec.no | (u64::from(u16_at(&rec.bytes, 0x10)) << 48)
}

#[test]
fn ntfs3g_mutation_file_name_parents_that_loop() {
    let Some((img, g, clean)) = pristine("ntfs3g_mutation_file_name_parents_that_loop") else {
        return;
    };
    assert!(clean.tree.iter().any(|p| p == "/loopdir/child/inner.txt"));
    let loopdir = g.record("loopdir");
    let child = g.record("child");
    // loopdir names itself as its parent; then loopdir and child name each other.
    let cases: [(&str, Vec<(&Rec, u64)>); 2] = [
        (
            "loopdir is its own parent",
            vec![(loopdir, reference(loopdir))],
        ),
        (
            "loopdir and child are each other's parent",
            vec![(loopdir, reference(child)), (child, reference(loopdir))],
        ),
    ];
    for (label, patches) in cases {
        let mut bytes = (*img).clone();
        for (rec, parent) in &patches {
            let at = file_name_parent_at(rec);
            patch_record(&mut bytes, &g, rec, |b| {
                b[at..at + 8].copy_from_slice(&parent.to_le_bytes())
            });
        }
        let n = bytes.len();
        let out = run_case(label, Arc::new(bytes), n);
        // The records of the loop are reachable from no directory the $MFT pass knows: they
        // and what they hold are left out; everything else lists as before.
        assert!(
            !out.tree.iter().any(|p| p.starts_with("/loopdir")),
            "{label}: {:?}",
            out.tree
        );
        let rest: Vec<&String> = clean
            .tree
            .iter()
            .filter(|p| !p.starts_with("/loopdir"))
            .collect();
        let got: Vec<&String> = out.tree.iter().collect();
        assert_eq!(got, rest, "{label}");
    }
}

/// `list_tree` and `walk_tree` on the same bytes, compared entry by entry and problem by
/// problem; `fast` says whether the $MFT pass must have run (rather than the fallback).
fn assert_tree_matches_walk(label: &str, bytes: Vec<u8>, fast: bool) -> fscore::Tree {
    let src: Source = Arc::new(MemSource::new(label, bytes));
    let fs = ntfs::Ntfs::open(src).unwrap_or_else(|e| panic!("{label}: open: {e}"));
    let limits = TreeLimits::default();
    let walked = fscore::walk_tree(&fs, &limits);
    let listed = fs.list_tree(&limits);
    assert_eq!(fs.list_tree_from_mft(&limits).is_some(), fast, "{label}");
    assert_eq!(walked.entries, listed.entries, "{label}");
    let show = |t: &fscore::Tree| -> Vec<String> {
        t.problems
            .iter()
            .map(|p| match p {
                TreeProblem::UnreadableFile { entry, error } => format!("file {entry}: {error}"),
                TreeProblem::UnreadableDir { dir, error } => format!("dir {dir}: {error}"),
                other => format!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(show(&walked), show(&listed), "{label}");
    listed
}

#[test]
fn ntfs3g_mutation_list_tree_reports_what_walk_tree_reports() {
    let Some((img, g, _)) = pristine("ntfs3g_mutation_list_tree_reports_what_walk_tree_reports")
    else {
        return;
    };
    // Sizes claiming 4 GiB more than the runs map: the record decodes, metadata() fails.
    let rec = g.record("data.bin");
    let d = rec.unnamed_data();
    let mut bytes = (*img).clone();
    patch_record(&mut bytes, &g, rec, |b| {
        for field in [0x28, 0x30] {
            let v = u64_at(b, d.at + field) + (4u64 << 30);
            b[d.at + field..d.at + field + 8].copy_from_slice(&v.to_le_bytes());
        }
    });
    let t = assert_tree_matches_walk("data.bin sizes past its runs", bytes, true);
    assert!(
        t.problems
            .iter()
            .any(|p| matches!(p, TreeProblem::UnreadableFile { .. })),
        "{:?}",
        t.problems
    );
    // A torn record: the pass cannot tell whose name it held, walk_tree answers.
    let hello = g.record("hello.txt");
    let mut bytes = (*img).clone();
    bytes[hello.offset + 510] ^= 0xFF;
    let t = assert_tree_matches_walk("hello.txt torn", bytes, false);
    assert!(
        t.problems
            .iter()
            .any(|p| matches!(p, TreeProblem::UnreadableFile { .. })),
        "{:?}",
        t.problems
    );
    // And the pristine image: no problem either way.
    let pristine = assert_tree_matches_walk("pristine", (*img).clone(), true);
    assert!(pristine.problems.is_empty(), "{:?}", pristine.problems);
}
