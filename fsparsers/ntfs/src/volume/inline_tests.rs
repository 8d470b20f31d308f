//! The listing's inline bytes of non-resident files ([`TreeLimits::inline_extensions`]): on
//! an mkntfs + ntfs-3g volume with small `.vmx` files in every shape the $MFT pass meets
//! (one cluster, several, fragmented, sparse with an initialized size short of the data size,
//! too fragmented, too big, hard-linked under another name, in a directory itself named
//! `.vmx`), the bytes must be what `open()` reads, what `ntfscat` and `icat` read, and absent
//! where they must be; within the budget; and a record patched into nonsense must cost only
//! its own inline bytes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fscore::{FileType, Filesystem, Tree, TreeLimits, walk_tree};
use lun::{MemSource, ReadAt, Source};
use testkit::ntfs::noise;

use super::*;

const VMX: &[&str] = &["vmx", "vmsd"];

fn limits() -> TreeLimits {
    TreeLimits {
        inline_max: 64 << 10,
        inline_extensions: VMX,
        ..TreeLimits::default()
    }
}

/// Appends `pieces` clusters to `a` and to `b` in turn, each synced, so that ntfs-3g
/// allocates them interleaved: `a` ends up in `pieces` runs.
fn interleave(a: &Path, b: &Path, pieces: u64, seed: u64) {
    use std::io::Write;
    let mut fa = std::fs::File::create(a).expect("create");
    let mut fb = std::fs::File::create(b).expect("create");
    for i in 0..pieces {
        for (f, s) in [(&mut fa, seed + i), (&mut fb, seed + 1000 + i)] {
            f.write_all(&noise(s, 4096)).expect("write");
            f.sync_all().expect("sync");
        }
    }
}

fn fixture(test: &str) -> Option<PathBuf> {
    if !testkit::ntfs::tools_ready(test) || !testkit::have_tool("icat") {
        testkit::skip(test, "needs mkntfs, ntfs-3g, ntfscat and icat");
        return None;
    }
    let path = testkit::fixture_dir("ntfs-inline").join("inline-vmx-v3.img");
    Some(testkit::cached_fixture(&path, |img| {
        std::fs::File::create(img)
            .and_then(|f| f.set_len(32 << 20))
            .expect("create image");
        testkit::run(
            Command::new("mkntfs")
                .args(["-F", "-q", "-f", "-c", "4096", "-L", "INLINE"])
                .arg(img),
        );
        let mount = testkit::ntfs::FuseMount::ntfs3g(img, &[]).expect("mount");
        let root = mount.path();
        let vm = root.join("vm");
        std::fs::create_dir(&vm).expect("mkdir");
        let write = |name: &str, seed: u64, len: usize| {
            std::fs::write(vm.join(name), noise(seed, len)).expect("write");
        };
        write("a.vmx", 1, 1024);
        write("B.VMX", 2, 3000);
        write("c.vmsd", 3, 60 << 10);
        write("big.vmx", 4, 100 << 10);
        write("notes.txt", 5, 2048);
        write("tiny.vmx", 6, 100);
        write("small.log", 11, 100);
        write("empty.vmx", 7, 0);
        interleave(&vm.join("frag.vmx"), &vm.join("fill1.bin"), 5, 10);
        interleave(&vm.join("many.vmx"), &vm.join("fill2.bin"), 12, 20);
        // ntfs-3g extends a file by a hole: initialized size 5000, data size 20000.
        write("sparse.vmx", 8, 5000);
        std::fs::File::options()
            .write(true)
            .open(vm.join("sparse.vmx"))
            .and_then(|f| f.set_len(20_000))
            .expect("extend");
        std::fs::hard_link(vm.join("a.vmx"), vm.join("link.cfg")).expect("link");
        let dir = root.join("dir.vmx");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("inner.vmx"), noise(9, 2048)).expect("write");
    }))
}

fn open_path(path: &Path) -> Ntfs {
    open_bytes(std::fs::read(path).expect("read image"))
}

fn open_bytes(bytes: Vec<u8>) -> Ntfs {
    let src: Source = Arc::new(MemSource::new("inline", bytes));
    Ntfs::open(src).expect("open NTFS")
}

fn read_all(fs: &Ntfs, id: &FileId) -> Option<Vec<u8>> {
    let src = fs.open(id).ok()?;
    let mut buf = vec![0u8; src.size() as usize];
    src.read_exact_at(0, &mut buf).ok()?;
    Some(buf)
}

fn find(t: &Tree, path: &str) -> usize {
    (0..t.entries.len())
        .find(|&i| t.path(i as u32) == path)
        .unwrap_or_else(|| panic!("{path} not listed"))
}

fn inline_of<'t>(t: &'t Tree, path: &str) -> Option<&'t [u8]> {
    t.entries[find(t, path)].inline.as_deref()
}

/// Every inline file's bytes are what `open()` reads; returns the paths that came inline.
fn assert_inline_equals_open(fs: &Ntfs, t: &Tree, what: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (i, e) in t.entries.iter().enumerate() {
        let Some(bytes) = &e.inline else {
            continue;
        };
        let path = t.path(i as u32);
        assert_eq!(e.entry.file_type, FileType::File, "{what} {path}");
        assert_eq!(bytes.len() as u64, e.size, "{what} {path}");
        let want = read_all(fs, &e.entry.id);
        assert_eq!(Some(&bytes[..]), want.as_deref(), "{what} {path}");
        paths.push(path);
    }
    paths
}

/// Record number and the offset inside the record of the unnamed $DATA of `path`.
fn data_attribute(fs: &Ntfs, path: &str) -> (u64, usize) {
    let ino = fs.lookup(path).expect("lookup").ino;
    let f = fs.load_file(ino).expect("load");
    let a = f
        .attrs
        .iter()
        .find(|a| a.type_code == AT_DATA && a.name.is_empty())
        .expect("$DATA");
    (ino, a.offset_in_record)
}

#[test]
fn inline_bytes_of_non_resident_vmx_files_are_what_open_reads() {
    let Some(img) = fixture("inline_bytes_of_non_resident_vmx_files_are_what_open_reads") else {
        return;
    };
    let fs = open_path(&img);
    let t = fs.list_tree_from_mft(&limits()).expect("no fallback");
    let inline = assert_inline_equals_open(&fs, &t, "fixture");
    for path in [
        "/vm/a.vmx",
        "/vm/B.VMX",
        "/vm/c.vmsd",
        "/vm/frag.vmx",
        "/vm/sparse.vmx",
        "/vm/tiny.vmx",
        "/vm/empty.vmx",
        "/dir.vmx/inner.vmx",
    ] {
        assert!(inline.iter().any(|p| p == path), "{path} not inline");
    }
    // Too big, not listed, listed under another name only, too fragmented, a directory.
    for path in [
        "/vm/big.vmx",
        "/vm/notes.txt",
        "/vm/link.cfg",
        "/vm/many.vmx",
        "/dir.vmx",
    ] {
        assert_eq!(inline_of(&t, path), None, "{path}");
    }
    // The fixture has the shapes it claims.
    let runs = |path: &str| {
        let id = fs.lookup(path).expect("lookup");
        let f = fs.load_file(id.ino).expect("load");
        match fs.stream_value(&f, AT_DATA, &[]).expect("value") {
            Some(StreamValue::NonResident(s)) => s,
            _ => panic!("{path} is resident"),
        }
    };
    let frag = runs("/vm/frag.vmx").runs.len();
    assert!((2..=tree::MAX_INLINE_RUNS).contains(&frag), "{frag} runs");
    assert!(runs("/vm/many.vmx").runs.len() > tree::MAX_INLINE_RUNS);
    let sparse = runs("/vm/sparse.vmx");
    assert!(sparse.runs.iter().any(|r| r.lcn.is_none()), "{sparse:?}");
    assert!(sparse.initialized_size < sparse.data_size, "{sparse:?}");
    assert_eq!(runs("/vm/a.vmx").data_size, 1024, "a.vmx is not resident");
    // What other readers read: ntfscat (ntfs-3g's library) and icat (The Sleuth Kit).
    for path in ["/vm/a.vmx", "/vm/frag.vmx", "/vm/sparse.vmx", "/vm/c.vmsd"] {
        let ntfscat = testkit::run(
            Command::new("ntfscat")
                .arg(&img)
                .arg(path.trim_start_matches('/')),
        );
        assert_eq!(inline_of(&t, path), Some(&ntfscat[..]), "ntfscat {path}");
        let ino = fs.lookup(path).expect("lookup").ino;
        let icat = testkit::run(
            Command::new("icat")
                .args(["-f", "ntfs"])
                .arg(&img)
                .arg(ino.to_string()),
        );
        assert_eq!(inline_of(&t, path), Some(&icat[..]), "icat {path}");
    }
    // The reference walk reads the same bytes through open(), for listed names only, as the
    // pass keeps resident bytes of listed names only; the walk has no limit on runs.
    let walked = walk_tree(&fs, &limits());
    assert_eq!(walked.entries.len(), t.entries.len());
    for (i, (w, l)) in walked.entries.iter().zip(&t.entries).enumerate() {
        let path = t.path(i as u32);
        assert_eq!((&w.entry, w.size), (&l.entry, l.size), "{path}");
        if path == "/vm/many.vmx" {
            assert!(w.inline.is_some() && l.inline.is_none());
        } else {
            assert_eq!(w.inline, l.inline, "{path}");
        }
    }
    // A small resident file comes with its bytes only when no extensions are listed.
    assert_eq!(inline_of(&t, "/vm/small.log"), None);
    let all_resident = fs.list_tree(&TreeLimits {
        inline_extensions: &[],
        ..limits()
    });
    assert_eq!(
        inline_of(&all_resident, "/vm/small.log").map(<[u8]>::to_vec),
        Some(noise(11, 100))
    );
    assert!(inline_of(&all_resident, "/vm/tiny.vmx").is_some());
    // Without extensions (or without inline_max) no cluster is read for inline bytes.
    for off in [
        TreeLimits {
            inline_extensions: &[],
            ..limits()
        },
        TreeLimits {
            inline_max: 0,
            ..limits()
        },
    ] {
        let t = fs.list_tree(&off);
        assert_eq!(inline_of(&t, "/vm/a.vmx"), None);
        assert_eq!(inline_of(&t, "/vm/c.vmsd"), None);
    }
    // inline_max bounds non-resident files as it bounds resident ones.
    let t = fs.list_tree(&TreeLimits {
        inline_max: 3000,
        ..limits()
    });
    assert!(inline_of(&t, "/vm/B.VMX").is_some());
    assert_eq!(inline_of(&t, "/vm/c.vmsd"), None);
}

#[test]
fn inline_budget_goes_to_resident_bytes_first_then_in_record_order() {
    let Some(img) = fixture("inline_budget_goes_to_resident_bytes_first_then_in_record_order")
    else {
        return;
    };
    let fs = open_path(&img);
    let total = |t: &Tree| -> usize {
        t.entries
            .iter()
            .filter_map(|e| e.inline.as_ref())
            .map(|b| b.len())
            .sum()
    };
    // Resident bytes alone (only tiny.vmx and the like: every other listed file is
    // non-resident), of the listed names: the only resident bytes kept once names are listed.
    let mut resident = fs.list_tree(&TreeLimits {
        inline_extensions: &[],
        ..limits()
    });
    for e in &mut resident.entries {
        if !limits().inline_extension_listed(&e.entry.name) {
            e.inline = None;
        }
    }
    let resident_bytes = total(&resident);
    let resident_files: Vec<u64> = resident
        .entries
        .iter()
        .filter(|e| e.inline.is_some())
        .map(|e| e.entry.id.ino)
        .collect();
    assert!(!resident_files.is_empty());
    let all = fs.list_tree(&limits());
    let a = fs.lookup("/vm/a.vmx").expect("lookup").ino;
    for budget in [
        0,
        resident_bytes,
        resident_bytes + 1024,
        resident_bytes + 5000,
        70_000,
    ] {
        let t = fs.list_tree(&TreeLimits {
            inline_total: budget,
            ..limits()
        });
        assert!(total(&t) <= budget, "budget {budget}: {} bytes", total(&t));
        assert_inline_equals_open(&fs, &t, &format!("budget {budget}"));
        if budget >= resident_bytes {
            for ino in &resident_files {
                assert!(
                    t.entries
                        .iter()
                        .any(|e| e.entry.id.ino == *ino && e.inline.is_some()),
                    "budget {budget}: resident record {ino} lost its bytes"
                );
            }
        }
        // a.vmx (1 KiB) is the first non-resident listed file in record order.
        let a_inline = t
            .entries
            .iter()
            .any(|e| e.entry.id.ino == a && e.inline.is_some());
        assert_eq!(a_inline, budget >= resident_bytes + 1024, "budget {budget}");
        let n = t.entries.iter().filter(|e| e.inline.is_some()).count();
        let m = all.entries.iter().filter(|e| e.inline.is_some()).count();
        assert!(n <= m);
        if budget == 0 {
            assert!(
                t.entries
                    .iter()
                    .all(|e| e.inline.as_deref().is_none_or(<[u8]>::is_empty))
            );
        }
    }
}

#[test]
fn inline_bytes_past_the_initialized_size_read_as_zeros() {
    let Some(img) = fixture("inline_bytes_past_the_initialized_size_read_as_zeros") else {
        return;
    };
    let mut bytes = std::fs::read(&img).expect("read image");
    let fs = open_bytes(bytes.clone());
    // c.vmsd: 60 KiB of noise on disk; the record now says only 1000 bytes are valid.
    let (ino, attr) = data_attribute(&fs, "/vm/c.vmsd");
    crate::handmade_tests::patch_record(&mut bytes, &fs, ino, |rec| {
        rec[attr + 0x38..attr + 0x40].copy_from_slice(&1000u64.to_le_bytes());
    });
    let fs = open_bytes(bytes);
    let t = fs.list_tree_from_mft(&limits()).expect("no fallback");
    assert_inline_equals_open(&fs, &t, "initialized 1000");
    let got = inline_of(&t, "/vm/c.vmsd").expect("inline");
    assert_eq!(got.len(), 60 << 10);
    assert_eq!(got[..1000], noise(3, 1000)[..]);
    assert!(got[1000..].iter().all(|&b| b == 0));
}

/// One edit of B.VMX's record and what the listing must make of it.
struct Case {
    what: &'static str,
    /// The new mapping pairs.
    mapping_pairs: Vec<u8>,
    /// A new data size (and allocated size).
    data_size: Option<u64>,
    /// B.VMX's inline bytes; empty: whatever open() reads.
    want: Option<Vec<u8>>,
    /// The $MFT pass still runs (no fallback to walk_tree).
    fast: bool,
}

#[test]
fn corrupt_run_lists_cost_only_their_own_inline_bytes() {
    let Some(img) = fixture("corrupt_run_lists_cost_only_their_own_inline_bytes") else {
        return;
    };
    let pristine = std::fs::read(&img).expect("read image");
    let fs = open_bytes(pristine.clone());
    let total_clusters = fs.boot.total_clusters();
    let (ino, attr) = data_attribute(&fs, "/vm/B.VMX");
    let pairs_at =
        |rec: &[u8]| attr + usize::from(u16::from_le_bytes([rec[attr + 0x20], rec[attr + 0x21]]));
    // B.VMX (3000 bytes, one cluster) gets a new run list: header, length, LCN, end.
    let run = |lcn_bytes: &[u8], len: u8| -> Vec<u8> {
        let mut r = vec![(lcn_bytes.len() as u8) << 4 | 1, len];
        r.extend_from_slice(lcn_bytes);
        r.push(0);
        r
    };
    let last = (total_clusters - 1) as u32;
    let cases = [
        // Past the end of the volume: the record no longer decodes, the listing falls back
        // to walk_tree, whose open() fails for B.VMX.
        Case {
            what: "LCN past the volume",
            mapping_pairs: run(&(total_clusters as u32 + 10).to_le_bytes(), 1),
            data_size: None,
            want: None,
            fast: false,
        },
        // Valid, elsewhere (the volume's last cluster): read from there by both.
        Case {
            what: "moved",
            mapping_pairs: run(&last.to_le_bytes(), 1),
            data_size: None,
            want: Some(Vec::new()),
            fast: true,
        },
        // A negative LCN: the record does not decode.
        Case {
            what: "negative LCN",
            mapping_pairs: vec![0x31, 0x01, 0x10, 0x00, 0xFF, 0x00],
            data_size: None,
            want: None,
            fast: false,
        },
        // A hole where the data was: valid, and reads as zeros.
        Case {
            what: "a hole",
            mapping_pairs: vec![0x01, 0x01, 0x00],
            data_size: None,
            want: Some(vec![0; 3000]),
            fast: true,
        },
        // A data size past what the runs map: metadata() fails, no bytes.
        Case {
            what: "data size past the runs",
            mapping_pairs: run(&[0x10], 1),
            data_size: Some(5000),
            want: None,
            fast: true,
        },
    ];
    for Case {
        what,
        mapping_pairs: edit,
        data_size,
        want,
        fast,
    } in cases
    {
        let mut bytes = pristine.clone();
        crate::handmade_tests::patch_record(&mut bytes, &fs, ino, |rec| {
            let mp = pairs_at(rec);
            let attr_len = u32::from_le_bytes(rec[attr + 4..attr + 8].try_into().unwrap());
            let end = (attr + attr_len as usize).min(rec.len());
            rec[mp..end].fill(0xFF);
            rec[mp..mp + edit.len()].copy_from_slice(&edit);
            if let Some(size) = data_size {
                // The allocated size along, which the attribute header must cover.
                let allocated = size.next_multiple_of(4096);
                rec[attr + 0x28..attr + 0x30].copy_from_slice(&allocated.to_le_bytes());
                rec[attr + 0x30..attr + 0x38].copy_from_slice(&size.to_le_bytes());
            }
        });
        let bad = open_bytes(bytes);
        let t = bad.list_tree(&limits());
        assert_inline_equals_open(&bad, &t, what);
        match want.as_deref() {
            // Whatever the cluster holds, as open() reads it (checked above).
            Some([]) => assert!(inline_of(&t, "/vm/B.VMX").is_some(), "{what}"),
            want => assert_eq!(inline_of(&t, "/vm/B.VMX"), want, "{what}"),
        }
        for path in ["/vm/a.vmx", "/vm/c.vmsd", "/vm/frag.vmx"] {
            assert!(
                inline_of(&t, path).is_some(),
                "{what}: {path} lost its bytes"
            );
        }
        assert_eq!(bad.list_tree_from_mft(&limits()).is_some(), fast, "{what}");
    }
}

/// A device that fails reads touching `fail`.
struct Faulty {
    inner: Source,
    fail: std::ops::Range<u64>,
}

impl ReadAt for Faulty {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        if offset < self.fail.end && self.fail.start < offset + buf.len() as u64 {
            return Err(lun::LunError::Read {
                name: "faulty".into(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::from_raw_os_error(5),
            });
        }
        self.inner.read_exact_at(offset, buf)
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn name(&self) -> &str {
        "faulty"
    }
}

#[test]
fn a_read_error_costs_only_the_inline_bytes_of_the_files_it_hits() {
    let Some(img) = fixture("a_read_error_costs_only_the_inline_bytes_of_the_files_it_hits") else {
        return;
    };
    let inner: Source = Arc::new(MemSource::new("inline", std::fs::read(&img).expect("read")));
    let fs = Ntfs::open(inner.clone()).expect("open");
    let cs = fs.boot.cluster_size;
    let pristine = fs.list_tree(&limits());
    // Each of these files' first data cluster in turn becomes unreadable.
    for path in ["/vm/a.vmx", "/vm/B.VMX", "/vm/frag.vmx"] {
        let id = fs.lookup(path).expect("lookup");
        let f = fs.load_file(id.ino).expect("load");
        let Some(StreamValue::NonResident(s)) = fs.stream_value(&f, AT_DATA, &[]).expect("value")
        else {
            panic!("{path} is resident");
        };
        let lcn = s.runs[0].lcn.expect("data");
        let dev: Source = Arc::new(Faulty {
            inner: inner.clone(),
            fail: lcn * cs..(lcn + 1) * cs,
        });
        let bad = Ntfs::open(dev).expect("open");
        let t = bad.list_tree_from_mft(&limits()).expect("no fallback");
        assert_inline_equals_open(&bad, &t, path);
        assert_eq!(inline_of(&t, path), None, "{path}");
        // Every other file keeps its bytes, neighbours on the device included.
        for (i, (e, p)) in t.entries.iter().zip(&pristine.entries).enumerate() {
            if t.path(i as u32) != path {
                assert_eq!(e.inline, p.inline, "{path}: {}", t.path(i as u32));
            }
        }
    }
}
