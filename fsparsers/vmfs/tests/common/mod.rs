//! Helpers shared by the VMFS integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use fscore::{FileMapping, FileType, Filesystem};
use lun::{DevicePath, ReadAt, ReadAtExt, Source};

/// Opens an image file read-only as a source.
pub fn source(path: &Path) -> Source {
    Arc::new(DevicePath::open(path).expect("open image"))
}

/// Walks the tree below `/`, returning path -> (type, id) for every entry (metadata files
/// included when `all`). Bounded and cycle-checked.
pub fn walk(fs: &dyn Filesystem, all: bool) -> BTreeMap<String, (FileType, fscore::FileId)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![("".to_string(), fs.root(), 0)];
    let mut seen = std::collections::HashSet::new();
    while let Some((path, id, depth)) = stack.pop() {
        assert!(depth < 64, "tree too deep at {path}");
        assert!(seen.insert(id.clone()), "directory {path} visited twice");
        for e in fs.read_dir(&id).expect("read_dir") {
            if e.metadata_file && !all {
                continue;
            }
            let p = format!("{path}/{}", e.name);
            if e.file_type == FileType::Dir && !e.metadata_file {
                stack.push((p.clone(), e.id.clone(), depth + 1));
            }
            out.insert(p, (e.file_type, e.id));
        }
    }
    out
}

/// Reads a whole file through `open`, in chunks.
pub fn read_all(fs: &dyn Filesystem, id: &fscore::FileId) -> Vec<u8> {
    let src = fs.open(id).expect("open");
    let size = src.size();
    let mut out = vec![0u8; size as usize];
    let mut off = 0usize;
    while off < out.len() {
        let n = (out.len() - off).min(1 << 20);
        src.read_exact_at(off as u64, &mut out[off..off + n])
            .expect("read");
        off += n;
    }
    out
}

/// Checks that reading the device at each extent's physical offset gives the file's bytes.
pub fn check_extents(fs: &dyn Filesystem, id: &fscore::FileId, data: &[u8]) {
    match fs.extents(id).expect("extents") {
        FileMapping::Mapped(map) => {
            assert_eq!(map.size(), data.len() as u64);
            let dev = fs.device();
            for e in map.extents() {
                let want = &data[e.logical as usize..e.end() as usize];
                match e.physical {
                    Some(p) => {
                        let got = dev.read_vec(p, e.length as usize).expect("read extent");
                        assert!(got == want, "extent at {} differs", e.logical);
                    }
                    None => assert!(
                        want.iter().all(|&b| b == 0),
                        "hole at {} holds data",
                        e.logical
                    ),
                }
            }
        }
        FileMapping::NotMappable(_) => {}
    }
}

/// A source that reads `base` with some byte ranges replaced: a mutated in-memory copy of a
/// large image without holding the whole image in memory.
pub struct Overlay {
    base: Source,
    patches: Vec<(u64, Vec<u8>)>,
}

impl Overlay {
    /// No patches yet.
    pub fn new(base: Source) -> Self {
        Overlay {
            base,
            patches: Vec::new(),
        }
    }
    /// Replaces bytes at `off` (later patches win).
    pub fn patch(&mut self, off: u64, bytes: &[u8]) {
        self.patches.push((off, bytes.to_vec()));
    }
    /// Reads the current (patched) bytes.
    pub fn get(&self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.read_exact_at(off, &mut b).unwrap();
        b
    }
}

impl ReadAt for Overlay {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        self.base.read_exact_at(offset, buf)?;
        vmfs::fuzzing::apply_patches(&self.patches, offset, buf);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.base.size()
    }
    fn name(&self) -> &str {
        "overlay"
    }
}

/// Exercises everything a client would do with a volume, bounded: walk (cycle-checked), stat,
/// read small files, map. Returns the first error (as a string) or None. Never panics on
/// reader errors; a panic inside the reader fails the caller's test.
pub fn exercise(devices: Vec<Source>) -> Option<String> {
    use std::collections::HashSet;
    let fs = match vmfs::Vmfs::open(devices) {
        Ok(fs) => fs,
        Err(e) => return Some(e.to_string()),
    };
    let _ = fs.info();
    let mut first_err = None;
    let mut note = |e: String| {
        if first_err.is_none() {
            first_err = Some(e)
        }
    };
    // The whole-tree listing: same answer as the reference walk, bounded, and every allocation
    // count agrees with the extent map's.
    let small = [
        fscore::TreeLimits {
            max_entries: 3000,
            ..Default::default()
        },
        fscore::TreeLimits {
            max_entries: 3000,
            include_hidden: true,
            inline_max: 0,
            inline_total: 0,
            inline_extensions: &[],
            max_depth: 3,
        },
    ];
    check_list_tree(&fs, &small);
    for e in fs.list_tree(&small[1]).entries.iter().take(3000) {
        allocated_agrees(&fs, &e.entry.id);
    }
    let mut stack = vec![(fs.root(), 0)];
    let mut seen = HashSet::new();
    let mut visited = 0;
    while let Some((id, depth)) = stack.pop() {
        if depth > 32 || !seen.insert(id.clone()) || visited > 2000 {
            continue;
        }
        visited += 1;
        let entries = match fs.read_dir(&id) {
            Ok(e) => e,
            Err(e) => {
                note(e.to_string());
                continue;
            }
        };
        for e in entries.into_iter().take(500) {
            if e.file_type == FileType::Dir {
                stack.push((e.id.clone(), depth + 1));
            }
            let md = match fs.metadata(&e.id) {
                Ok(m) => m,
                Err(err) => {
                    note(err.to_string());
                    continue;
                }
            };
            if let Err(err) = fs.extents(&e.id) {
                note(err.to_string());
            }
            if md.size <= 4 << 20 {
                match fs.open(&e.id) {
                    Ok(src) => {
                        let mut b = vec![0; md.size as usize];
                        if let Err(err) = src.read_exact_at(0, &mut b) {
                            note(err.to_string());
                        }
                    }
                    Err(err) => note(err.to_string()),
                }
            }
        }
    }
    first_err
}

/// The tree listing limits the equivalence checks run with: defaults, hidden entries, and
/// small entry and depth bounds.
pub fn tree_limits() -> Vec<fscore::TreeLimits> {
    let mut out = Vec::new();
    for include_hidden in [false, true] {
        let base = fscore::TreeLimits {
            include_hidden,
            ..Default::default()
        };
        out.push(base);
        for max_entries in [0, 1, 2, 7, 50] {
            out.push(fscore::TreeLimits {
                max_entries,
                ..base
            });
        }
        for max_depth in [0, 1, 2] {
            out.push(fscore::TreeLimits { max_depth, ..base });
        }
    }
    out
}

/// Problems of a listing, comparable.
pub fn problems(t: &fscore::Tree) -> Vec<String> {
    t.problems.iter().map(|p| format!("{p:?}")).collect()
}

/// `Vmfs::list_tree` must give exactly what the reference `walk_tree` gives (entries, order,
/// sizes, flags, problems) under each of `limits`. Returns the entries of the first listing.
pub fn check_list_tree(fs: &vmfs::Vmfs, limits: &[fscore::TreeLimits]) -> usize {
    let mut first = None;
    for l in limits {
        let want = fscore::walk_tree(fs, l);
        let got = fs.list_tree(l);
        assert_eq!(got.entries.len(), want.entries.len(), "{l:?}: entry count");
        for (i, (g, w)) in got.entries.iter().zip(&want.entries).enumerate() {
            assert_eq!(g, w, "{l:?}: entry {i} ({})", want.path(i as u32));
        }
        assert_eq!(problems(&got), problems(&want), "{l:?}: problems");
        first.get_or_insert(want.entries.len());
    }
    check_inline(fs);
    first.unwrap_or(0)
}

/// With [`fscore::TreeLimits::inline_max`] set, the listing is the same but for the bytes of
/// small resident files, and those bytes are the file's content. Returns how many files came
/// inline.
pub fn check_inline(fs: &vmfs::Vmfs) -> usize {
    let plain = fs.list_tree(&fscore::TreeLimits::default());
    let max = 4096;
    let with = fs.list_tree(&fscore::TreeLimits {
        inline_max: max,
        ..Default::default()
    });
    assert_eq!(with.entries.len(), plain.entries.len());
    let mut inline = 0;
    for (i, (w, p)) in with.entries.iter().zip(&plain.entries).enumerate() {
        let path = plain.path(i as u32);
        assert_eq!(p.inline, None, "{path}: inline bytes without inline_max");
        assert_eq!((&w.entry, w.size), (&p.entry, p.size), "{path}");
        if let Some(bytes) = &w.inline {
            inline += 1;
            assert!(bytes.len() <= max, "{path}: {} inline bytes", bytes.len());
            let src = fs.open(&w.entry.id).expect("open");
            let mut want = vec![0; src.size() as usize];
            src.read_exact_at(0, &mut want).expect("read");
            assert_eq!(&bytes[..], &want[..], "{path}: inline bytes");
        }
    }
    // Listing extensions keeps the bytes of those names only (VMFS reads no others).
    let only_vmsd = fs.list_tree(&fscore::TreeLimits {
        inline_max: max,
        inline_extensions: &["vmsd"],
        ..Default::default()
    });
    for (i, (o, w)) in only_vmsd.entries.iter().zip(&with.entries).enumerate() {
        let path = plain.path(i as u32);
        if path.to_ascii_lowercase().ends_with(".vmsd") {
            assert_eq!(o.inline, w.inline, "{path}");
        } else {
            assert_eq!(o.inline, None, "{path}: not a listed extension");
        }
    }
    inline
}

/// For every entry of the volume (system files included): the allocated bytes counted without
/// an extent map equal the extent map's count, and `metadata` reports them. Returns how many
/// entries were compared.
pub fn check_allocated_scan(fs: &vmfs::Vmfs) -> usize {
    let all = fscore::TreeLimits {
        include_hidden: true,
        ..Default::default()
    };
    let tree = fscore::walk_tree(fs, &all);
    for (i, e) in tree.entries.iter().enumerate() {
        let path = tree.path(i as u32);
        let fd = fs.read_fd(e.entry.id.ino as u32).expect("read_fd");
        let (by_map, by_scan) = fs.allocated_by_map_and_scan(&fd);
        let by_map = by_map.unwrap_or_else(|err| panic!("{path}: map: {err}"));
        let by_scan = by_scan.unwrap_or_else(|err| panic!("{path}: scan: {err}"));
        assert_eq!(by_scan, by_map, "{path}: allocated (zla {:#x})", fd.zla);
        if fs.metadata(&e.entry.id).is_ok() {
            assert_eq!(e.allocated, by_map, "{path}: metadata().allocated");
        }
    }
    tree.entries.len()
}

/// On any (possibly corrupt) volume: the scan and the map agree on success and on the count.
pub fn allocated_agrees(fs: &vmfs::Vmfs, id: &fscore::FileId) {
    let Ok(fd) = fs.read_fd(id.ino as u32) else {
        return;
    };
    match fs.allocated_by_map_and_scan(&fd) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "FD {:#x}: allocated", fd.addr),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("FD {:#x}: map says {a:?}, scan says {b:?}", fd.addr),
    }
}
