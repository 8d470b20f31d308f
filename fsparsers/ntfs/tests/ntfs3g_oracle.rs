//! The reader against three independent NTFS readers, on images built by mkntfs and filled
//! through ntfs-3g (see `testkit::ntfs`): every name, type, size, MFT record number (hard-link
//! identity), symlink target, named stream and file byte (SHA-256) must equal what a read-only
//! ntfs-3g mount and `ntfscat` give, the listing must equal sleuthkit's `fls -r -p` (live long
//! names), and every mapped file's extents must point at its bytes on the device.

mod ntfs3g_common;

use std::fs::File;
use std::process::Command;

use fscore::{FileMapping, Filesystem, FsKind, NotMappable};
use ntfs3g_common::{assert_clean, compare, mapping, open, walk};
use testkit::LoopDevice;
use testkit::ntfs::{Layout, NtfsImage, Spec, image, mixed};

/// Walks `img` through the reader (image file) and checks it against every oracle.
fn check(img: &NtfsImage) -> ntfs::Ntfs {
    let fs = open(&img.image);
    let raw = File::open(&img.image).expect("open image for raw reads");
    let w = walk(&fs, Some(&raw));
    assert!(
        !w.seen.is_empty() || !w.problems.is_empty(),
        "walk found nothing"
    );
    assert_clean(&img.name, &compare(img, &fs, &w));
    fs
}

fn check_mixed(test: &str, cluster: u32) {
    let Some(img) = mixed(test, cluster) else {
        return;
    };
    let fs = check(&img);
    let info = fs.info();
    assert_eq!(info.fs, FsKind::Ntfs);
    assert_eq!(info.block_size, u64::from(cluster));
    assert_eq!(info.label, format!("lp-{}", img.name));
    let len = std::fs::metadata(&img.image).expect("image size").len();
    assert!(
        info.size <= len && info.size + 4096 >= len,
        "size {} vs image {len}",
        info.size
    );
    // Resident data has no extents of its own; a file of several clusters is mapped.
    assert_eq!(
        mapping(&fs, "/data/resident.txt"),
        FileMapping::NotMappable(NotMappable::Resident)
    );
    assert!(matches!(
        mapping(&fs, "/data/three_mib.bin"),
        FileMapping::Mapped(_)
    ));
    match mapping(&fs, "/sparse_small.bin") {
        FileMapping::Mapped(m) => assert!(
            m.extents().iter().any(|e| e.physical.is_none()),
            "sparse_small.bin has no hole in its extent map: {m:?}"
        ),
        other => panic!("sparse_small.bin: {other:?}"),
    }
    // Names differing only in case: the exact spelling wins.
    let upper = fs.lookup("/names/CaseTest.txt").expect("lookup CaseTest");
    let lower = fs.lookup("/names/casetest.txt").expect("lookup casetest");
    assert_ne!(
        upper, lower,
        "exact-case lookups must not collapse onto one file"
    );
}

#[test]
fn ntfs3g_mixed_tree_512_byte_clusters() {
    check_mixed("ntfs3g_mixed_tree_512_byte_clusters", 512);
}

#[test]
fn ntfs3g_mixed_tree_4k_clusters() {
    check_mixed("ntfs3g_mixed_tree_4k_clusters", 4096);
}

#[test]
fn ntfs3g_mixed_tree_64k_clusters() {
    check_mixed("ntfs3g_mixed_tree_64k_clusters", 65536);
}

#[test]
fn ntfs3g_directory_of_5200_entries() {
    let test = "ntfs3g_directory_of_5200_entries";
    let Some(img) = image(test, &Spec::of(Layout::BigDir, 4096)) else {
        return;
    };
    let fs = check(&img);
    let big = fs.lookup("/big").expect("lookup /big");
    assert_eq!(fs.read_dir(&big).expect("read_dir /big").len(), 5200);
    // Lookups deep inside the B+tree, case-insensitively.
    for i in [0u64, 1, 2599, 4242, 5199] {
        let name = format!("/BIG/ENTRY-{i:05}-PADDING-TO-MAKE-INDEX-ENTRIES-LONG.DAT");
        fs.lookup(&name)
            .unwrap_or_else(|e| panic!("lookup {name}: {e}"));
    }
    assert!(
        fs.lookup("/big/entry-05200-padding-to-make-index-entries-long.dat")
            .is_err()
    );
}

/// istat's attribute list of MFT record `ino`.
fn istat_types(image: &std::path::Path, ino: u64) -> String {
    let out = Command::new("istat")
        .arg(image)
        .arg(ino.to_string())
        .output()
        .expect("istat");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ntfs3g_fragmented_files_with_attribute_lists() {
    let test = "ntfs3g_fragmented_files_with_attribute_lists";
    let Some(img) = image(test, &Spec::of(Layout::Fragmented, 4096)) else {
        return;
    };
    // The fixture must really exercise $ATTRIBUTE_LIST; istat (sleuthkit) confirms it.
    for p in ["/frag/runs_a.bin", "/frag/runs_b.bin"] {
        let e = img
            .entries
            .iter()
            .find(|e| e.path == p)
            .expect("fixture file");
        let istat = istat_types(&img.image, e.ino);
        assert!(
            istat.contains("$ATTRIBUTE_LIST"),
            "{p} has no $ATTRIBUTE_LIST; the fixture does not fragment enough:\n{istat}"
        );
    }
    // The $MFT itself grew into the gaps: its run list lives in extension records named by
    // an $ATTRIBUTE_LIST of record 0.
    let mft = istat_types(&img.image, 0);
    assert!(
        mft.contains("$ATTRIBUTE_LIST"),
        "the $MFT has no $ATTRIBUTE_LIST; the fixture does not fragment it enough:\n{mft}"
    );
    let fs = check(&img);
    match mapping(&fs, "/frag/runs_a.bin") {
        FileMapping::Mapped(m) => assert!(
            m.extents().len() > 100,
            "runs_a.bin: {} extents, expected hundreds",
            m.extents().len()
        ),
        other => panic!("runs_a.bin: {other:?}"),
    }
}

#[test]
fn ntfs3g_sparse_files_of_several_gib() {
    let test = "ntfs3g_sparse_files_of_several_gib";
    let Some(img) = image(test, &Spec::of(Layout::Sparse, 4096)) else {
        return;
    };
    let fs = check(&img);
    let md = fs
        .metadata(&fs.lookup("/sparse_6g.bin").expect("lookup"))
        .expect("metadata");
    assert_eq!(md.size, 6 << 30);
    assert!(
        md.allocated < 8 << 20,
        "allocated {} for a mostly-hole file",
        md.allocated
    );
    // A read that straddles the 4 GiB boundary, where 32-bit offset bugs show.
    let src = fs.open(&md.id).expect("open");
    let mut buf = vec![0u8; 100];
    src.read_exact_at((4 << 30) - 50, &mut buf)
        .expect("read across 4 GiB");
    assert_eq!(buf, testkit::ntfs::noise(3, 100));
}

#[test]
fn ntfs3g_compressed_directory() {
    let test = "ntfs3g_compressed_directory";
    let Some(img) = image(test, &Spec::of(Layout::Compressed, 4096)) else {
        return;
    };
    let fs = check(&img);
    for p in [
        "/compressed/text_300k.txt",
        "/compressed/random_200k.bin",
        "/compressed/mixed.bin",
        "/compressed/sparse_compressed.bin",
        "/compressed/sub/inherits.txt",
    ] {
        let m = mapping(&fs, p);
        assert!(
            ntfs3g_common::is_compressed(&m),
            "{p}: extents must say not mappable (compressed), got {m:?}"
        );
    }
    assert!(matches!(
        mapping(&fs, "/uncompressed_neighbour.txt"),
        FileMapping::Mapped(_)
    ));
}

#[test]
fn ntfs3g_loop_device_reads_like_the_image_file() {
    let test = "ntfs3g_loop_device_reads_like_the_image_file";
    let Some(img) = mixed(test, 4096) else { return };
    let Some(dev) = LoopDevice::attach(test, &img.image) else {
        return;
    };
    let from_file = walk(&open(&img.image), None);
    let fs = open(dev.path());
    let raw = File::open(dev.path()).expect("open loop device");
    let from_dev = walk(&fs, Some(&raw));
    assert_clean("loop device", &compare(&img, &fs, &from_dev));
    assert_eq!(
        from_file.seen, from_dev.seen,
        "image file and loop device disagree"
    );
}

/// Counts the bytes read through it, so tests can tell how much of the volume an operation
/// touched without timing anything.
struct CountingSource {
    inner: lun::DevicePath,
    bytes: std::sync::atomic::AtomicU64,
}

impl lun::ReadAt for CountingSource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        self.bytes
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_exact_at(offset, buf)
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
}

fn counting_fs(path: &std::path::Path) -> (ntfs::Ntfs, std::sync::Arc<CountingSource>) {
    let src = std::sync::Arc::new(CountingSource {
        inner: lun::DevicePath::open(path).expect("open image"),
        bytes: Default::default(),
    });
    let fs = ntfs::Ntfs::open(src.clone()).expect("Ntfs::open");
    (fs, src)
}

#[test]
fn ntfs3g_lookup_in_a_large_directory_descends_the_index() {
    use std::sync::atomic::Ordering::Relaxed;
    let test = "ntfs3g_lookup_in_a_large_directory_descends_the_index";
    let Some(img) = image(test, &Spec::of(Layout::BigDir, 4096)) else {
        return;
    };
    // Bytes read, not time: a B+tree descent reads a handful of index records, a scan reads
    // them all. Each measurement gets a freshly opened volume, so no cache is shared.
    let (fs, src) = counting_fs(&img.image);
    let big = fs.lookup("/big").expect("lookup /big");
    let before = src.bytes.load(Relaxed);
    let n = fs.read_dir(&big).expect("read_dir").len();
    let listing = src.bytes.load(Relaxed) - before;
    let (fs, src) = counting_fs(&img.image);
    fs.lookup("/big").expect("lookup /big");
    let before = src.bytes.load(Relaxed);
    let name = "/big/entry-02600-padding-to-make-index-entries-long.dat";
    fs.lookup(name)
        .unwrap_or_else(|e| panic!("lookup {name}: {e}"));
    let one_lookup = src.bytes.load(Relaxed) - before;
    eprintln!("read_dir of {n} entries read {listing} bytes; one lookup read {one_lookup}");
    assert!(n >= 5000, "{n} entries");
    assert!(
        one_lookup * 4 < listing,
        "a lookup in a {n}-entry directory read {one_lookup} bytes, the full listing \
         {listing}: lookups seem to scan the directory instead of descending the index"
    );
    // Every name is still found.
    for i in (0..5200u64).step_by(26) {
        let name = format!("/big/entry-{i:05}-padding-to-make-index-entries-long.dat");
        fs.lookup(&name)
            .unwrap_or_else(|e| panic!("lookup {name}: {e}"));
    }
}

/// The comparison itself must notice a wrong byte, a missing name, a wrong record number, a
/// wrong type and an fls disagreement; otherwise a green run proves nothing.
#[test]
fn ntfs3g_comparison_detects_planted_differences() {
    let test = "ntfs3g_comparison_detects_planted_differences";
    let Some(mut img) = mixed(test, 4096) else {
        return;
    };
    let fs = open(&img.image);
    let w = walk(&fs, None);
    assert_clean("untouched", &compare(&img, &fs, &w));
    for e in &mut img.entries {
        match e.path.as_str() {
            "/data/a.bin" => e.sha256 = "0".repeat(64),
            "/links/b.bin" => e.ino += 1,
            "/data/empty.bin" => e.kind = 'd',
            _ => {}
        }
    }
    img.entries.retain(|e| e.path != "/names/casetest.txt");
    img.fls = img
        .fls
        .replace("\tdocs/document-0007.txt\n", "\tdocs/document-0007.TXT\n");
    let diffs = compare(&img, &fs, &w).join("\n");
    for needle in [
        "/data/a.bin: SHA-256",
        "/links/b.bin: MFT record",
        "/data/empty.bin: type",
        "/names/casetest.txt: listed by the reader, not by ntfs-3g",
        "/docs/document-0007.TXT (record",
    ] {
        assert!(diffs.contains(needle), "no {needle:?} in:\n{diffs}");
    }
}
