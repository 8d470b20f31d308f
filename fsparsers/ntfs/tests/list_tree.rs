//! `Ntfs::list_tree` (one pass over $MFT) against the reference `fscore::walk_tree` (read_dir
//! plus metadata per entry): the same entries, in the same order, with the same sizes, flags
//! and problems, on the Windows-written sample volume and on every mkntfs + ntfs-3g fixture,
//! with and without hidden names and under small entry and depth limits.

use std::path::Path;
use std::sync::Arc;

use fscore::{FileType, Filesystem, Tree, TreeLimits, TreeProblem, walk_tree};
use lun::{DevicePath, ReadAt, Source};
use testkit::ntfs::{Layout, Spec, image_path};

fn open(path: &Path) -> ntfs::Ntfs {
    let dev = DevicePath::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let src: Source = Arc::new(dev);
    ntfs::Ntfs::open(src).unwrap_or_else(|e| panic!("Ntfs::open {}: {e}", path.display()))
}

/// A problem in comparable form (errors by their message).
fn describe(p: &TreeProblem) -> String {
    match p {
        TreeProblem::UnreadableDir { dir, error } => format!("unreadable dir {dir}: {error}"),
        TreeProblem::UnreadableFile { entry, error } => format!("unreadable file {entry}: {error}"),
        TreeProblem::Cycle { dir, name } => format!("cycle in {dir}: {name}"),
        TreeProblem::TooDeep { dir } => format!("too deep {dir}"),
        TreeProblem::TooManyEntries { limit } => format!("too many entries ({limit})"),
    }
}

fn line(t: &Tree, i: usize) -> String {
    let e = &t.entries[i];
    format!(
        "{} #{} {:?} meta={} short={} size={} alloc={} depth={}",
        t.path(i as u32),
        e.entry.id.ino,
        e.entry.file_type,
        e.entry.metadata_file,
        e.entry.short_name,
        e.size,
        e.allocated,
        e.depth
    )
}

/// Asserts that the $MFT pass ran (no fallback) and equals `walk_tree`; returns the tree.
fn assert_same(fs: &ntfs::Ntfs, limits: &TreeLimits, what: &str) -> Tree {
    let walked = walk_tree(fs, limits);
    let listed = fs
        .list_tree_from_mft(limits)
        .unwrap_or_else(|| panic!("{what}: the $MFT pass fell back to walk_tree"));
    if walked.entries != listed.entries {
        let n = walked.entries.len().max(listed.entries.len());
        let first = (0..n)
            .find(|&i| walked.entries.get(i) != listed.entries.get(i))
            .unwrap_or(0);
        let show = |t: &Tree| -> Vec<String> {
            (first..(first + 5).min(t.entries.len()))
                .map(|i| line(t, i))
                .collect()
        };
        panic!(
            "{what}: {} entries walked, {} listed; first difference at {first}:\n walk_tree: \
             {:#?}\n list_tree: {:#?}",
            walked.entries.len(),
            listed.entries.len(),
            show(&walked),
            show(&listed)
        );
    }
    let wp: Vec<String> = walked.problems.iter().map(describe).collect();
    let lp: Vec<String> = listed.problems.iter().map(describe).collect();
    assert_eq!(wp, lp, "{what}: problems differ");
    // And through the trait.
    assert_eq!(fs.list_tree(limits).entries, listed.entries, "{what}");
    listed
}

/// Every limit combination the inventory and the tests care about.
fn limit_sets() -> Vec<TreeLimits> {
    let mut v = Vec::new();
    for include_hidden in [false, true] {
        v.push(TreeLimits {
            include_hidden,
            ..TreeLimits::default()
        });
        for max_entries in [0, 1, 7, 60] {
            v.push(TreeLimits {
                max_entries,
                include_hidden,
                ..TreeLimits::default()
            });
        }
        for max_depth in [0, 1, 2, 5] {
            v.push(TreeLimits {
                max_depth,
                include_hidden,
                ..TreeLimits::default()
            });
        }
    }
    v
}

fn check_image(path: &Path, what: &str) -> Tree {
    let fs = open(path);
    for limits in limit_sets() {
        assert_same(&fs, &limits, &format!("{what} {limits:?}"));
    }
    check_inline(&fs, what);
    assert_same(&fs, &TreeLimits::default(), what)
}

/// With `inline_max`, the listing is the same but for the bytes of small resident files, and
/// those bytes are what `open` reads; the total stays within `inline_total`. Returns how many
/// files came inline.
fn check_inline(fs: &ntfs::Ntfs, what: &str) -> usize {
    let plain = fs.list_tree(&TreeLimits::default());
    let with = fs.list_tree(&TreeLimits {
        inline_max: 4096,
        ..TreeLimits::default()
    });
    assert_eq!(with.entries.len(), plain.entries.len(), "{what}");
    let mut inline = 0;
    for (i, (w, p)) in with.entries.iter().zip(&plain.entries).enumerate() {
        let path = plain.path(i as u32);
        assert_eq!(
            p.inline, None,
            "{what} {path}: inline bytes without inline_max"
        );
        assert_eq!((&w.entry, w.size), (&p.entry, p.size), "{what} {path}");
        if let Some(bytes) = &w.inline {
            inline += 1;
            assert_eq!(w.entry.file_type, FileType::File, "{what} {path}");
            let src = fs.open(&w.entry.id).expect("open");
            let mut want = vec![0; src.size() as usize];
            src.read_exact_at(0, &mut want).expect("read");
            assert_eq!(&bytes[..], &want[..], "{what} {path}: inline bytes");
        }
    }
    check_inline_extensions(fs, what, 64 << 10);
    // A budget smaller than the first file's bytes: nothing but empty files inline.
    let starved = fs.list_tree(&TreeLimits {
        inline_max: 4096,
        inline_total: 0,
        ..TreeLimits::default()
    });
    assert!(
        starved
            .entries
            .iter()
            .all(|e| e.inline.as_deref().is_none_or(<[u8]>::is_empty)),
        "{what}: inline past the budget"
    );
    inline
}

/// Extensions common on the fixtures and on the Windows volume.
const EXTENSIONS: &[&str] = &[
    "txt", "ini", "dat", "bin", "xml", "log", "dll", "exe", "inf", "mui", "cat", "sys", "vmx",
    "json", "cfg", "manifest", "mum", "pnf", "lnk", "db",
];

/// With `inline_extensions`, files read from clusters come inline too: every inline file is
/// what `open` reads; where the reference walk (which reads every listed file through `open`)
/// has bytes, the $MFT pass has the same bytes or none (it skips compressed, attribute-listed
/// and much fragmented files). Returns how many non-resident files came inline.
/// `inline_max` must stay small enough to read every file of the volume into memory.
fn check_inline_extensions(fs: &ntfs::Ntfs, what: &str, inline_max: usize) -> usize {
    let limits = TreeLimits {
        inline_max,
        inline_extensions: EXTENSIONS,
        ..TreeLimits::default()
    };
    let listed = fs.list_tree(&limits);
    let walked = walk_tree(fs, &limits);
    assert_eq!(listed.entries.len(), walked.entries.len(), "{what}");
    let (mut read, mut skipped) = (0, 0);
    for (i, (l, w)) in listed.entries.iter().zip(&walked.entries).enumerate() {
        let path = listed.path(i as u32);
        assert_eq!((&l.entry, l.size), (&w.entry, w.size), "{what} {path}");
        if let Some(bytes) = &l.inline {
            let src = fs.open(&l.entry.id).expect("open");
            let mut want = vec![0; src.size() as usize];
            src.read_exact_at(0, &mut want).expect("read");
            assert_eq!(&bytes[..], &want[..], "{what} {path}: inline bytes");
        }
        if !limits.inline_extension_listed(&l.entry.name) {
            continue;
        }
        match (&l.inline, &w.inline) {
            (Some(a), Some(b)) => {
                assert_eq!(a, b, "{what} {path}");
                // Resident data sits in the record: anything over a record came from clusters.
                read += usize::from(l.size > 1024);
            }
            (None, Some(_)) => skipped += 1,
            (Some(_), None) => panic!("{what} {path}: inline bytes the reference has not"),
            (None, None) => {}
        }
    }
    println!("{what}: {read} non-resident files inline, {skipped} left to open()");
    read
}

fn check_layout(test: &str, layout: Layout, cluster: u32) -> Option<Tree> {
    let path = image_path(test, &Spec::of(layout, cluster))?;
    Some(check_image(&path, &format!("{layout:?} c{cluster}")))
}

fn has_inline(t: &Tree, path: &str) -> bool {
    (0..t.entries.len() as u32).any(|i| t.path(i) == path && t.entries[i as usize].inline.is_some())
}

fn has(t: &Tree, path: &str) -> bool {
    (0..t.entries.len() as u32).any(|i| t.path(i) == path)
}

#[test]
fn list_tree_equals_walk_tree_on_the_windows_volume() {
    let Some(path) = testkit::real_image(
        "list_tree_equals_walk_tree_on_the_windows_volume",
        "ntfs-windows",
    ) else {
        return;
    };
    let t = check_image(&path, "windows");
    assert!(t.entries.len() > 2000, "{} entries", t.entries.len());
    let inline = check_inline(&open(&path), "windows");
    assert!(inline > 0, "{inline} resident files came inline");
    // Its only non-resident user files are LZNT1-compressed (a 2 MiB text, 512 KiB of random
    // bytes): the pass leaves them to open(), the reference reads them; every inline file
    // (resident ones here) also matches the manifest's SHA-256.
    let fs = open(&path);
    let read = check_inline_extensions(&fs, "windows", 4 << 20);
    assert_eq!(read, 0, "compressed files came inline");
    let wide = fs.list_tree(&TreeLimits {
        inline_max: 4 << 20,
        inline_extensions: EXTENSIONS,
        ..TreeLimits::default()
    });
    for m in testkit::real_manifest("ntfs-windows") {
        let i = (0..wide.entries.len() as u32)
            .find(|&i| wide.path(i) == m.path)
            .unwrap_or_else(|| panic!("{} not listed", m.path));
        if let Some(bytes) = &wide.entries[i as usize].inline {
            assert_eq!(testkit::sha256_hex(bytes), m.digest_or_target, "{}", m.path);
        }
    }
    assert!(has_inline(&wide, "/File.txt"));
    assert!(!has_inline(&wide, "/Large.txt") && !has_inline(&wide, "/Random.bin"));
    // Hidden names: metadata files and everything below $Extend, in both listings alike.
    let hidden = assert_same(
        &open(&path),
        &TreeLimits {
            include_hidden: true,
            ..TreeLimits::default()
        },
        "windows with hidden names",
    );
    assert!(hidden.entries.iter().any(|e| e.entry.metadata_file));
    assert!(hidden.entries.len() > t.entries.len());
    for m in testkit::real_manifest("ntfs-windows") {
        let i = (0..t.entries.len() as u32)
            .find(|&i| t.path(i) == m.path)
            .unwrap_or_else(|| panic!("{} not listed", m.path));
        assert_eq!(t.entries[i as usize].size, m.size, "{}", m.path);
    }
}

#[test]
fn list_tree_equals_walk_tree_on_mixed_trees_at_every_cluster_size() {
    for cluster in [512, 4096, 65536] {
        let Some(t) = check_layout(
            "list_tree_equals_walk_tree_on_mixed_trees_at_every_cluster_size",
            Layout::Mixed,
            cluster,
        ) else {
            return;
        };
        assert!(t.entries.len() > 50, "{} entries", t.entries.len());
        // Symlinks and junctions typed as read_dir types them, hard links listed per name.
        assert!(
            t.entries
                .iter()
                .any(|e| e.entry.file_type == FileType::Symlink)
        );
        let mut per_record = std::collections::HashMap::new();
        for e in &t.entries {
            *per_record.entry(e.entry.id.ino).or_insert(0) += 1;
        }
        assert!(
            per_record.values().any(|&n| n > 1),
            "no hard link listed twice"
        );
        assert!(t.entries.iter().any(|e| e.depth > 20), "no deep tree");
        assert!(
            t.entries.iter().any(|e| !e.entry.name.is_ascii()),
            "no Unicode name"
        );
    }
}

#[test]
fn list_tree_equals_walk_tree_on_a_directory_of_5200_entries() {
    let Some(t) = check_layout(
        "list_tree_equals_walk_tree_on_a_directory_of_5200_entries",
        Layout::BigDir,
        4096,
    ) else {
        return;
    };
    assert!(t.entries.len() > 5200);
}

#[test]
fn list_tree_equals_walk_tree_with_attribute_lists_and_a_fragmented_mft() {
    check_layout(
        "list_tree_equals_walk_tree_with_attribute_lists_and_a_fragmented_mft",
        Layout::Fragmented,
        4096,
    );
}

#[test]
fn list_tree_equals_walk_tree_on_sparse_and_compressed_files() {
    let test = "list_tree_equals_walk_tree_on_sparse_and_compressed_files";
    check_layout(test, Layout::Sparse, 4096);
    check_layout(test, Layout::Compressed, 4096);
}

#[test]
fn list_tree_equals_walk_tree_on_the_mutation_base_image() {
    let Some(t) = check_layout(
        "list_tree_equals_walk_tree_on_the_mutation_base_image",
        Layout::Small,
        4096,
    ) else {
        return;
    };
    assert!(has(&t, "/attrlist.txt"));
    assert!(has(&t, "/loopdir/child/inner.txt"));
}

#[test]
fn list_tree_equals_walk_tree_on_10k_files() {
    check_layout(
        "list_tree_equals_walk_tree_on_10k_files",
        Layout::Bench10k,
        4096,
    );
}

/// A volume whose long names have DOS 8.3 names beside them (set through ntfs-3g's
/// `system.ntfs_dos_name`): a directory, a file in it, a file at the root.
fn dos_names_image(test: &str) -> Option<std::path::PathBuf> {
    if !testkit::ntfs::tools_ready(test) || !testkit::have_tool("setfattr") {
        testkit::skip(test, "needs mkntfs, ntfs-3g and setfattr");
        return None;
    }
    let path = testkit::fixture_dir("ntfs-list-tree").join("dos-names-v1.img");
    Some(testkit::cached_fixture(&path, |img| {
        std::fs::File::create(img)
            .and_then(|f| f.set_len(16 << 20))
            .expect("create image");
        testkit::run(
            std::process::Command::new("mkntfs")
                .args(["-F", "-q", "-f", "-L", "DOS"])
                .arg(img),
        );
        let mount = testkit::ntfs::FuseMount::ntfs3g(img, &[]).expect("mount");
        let root = mount.path();
        let set_dos = |p: &Path, short: &str| {
            testkit::run(
                std::process::Command::new("setfattr")
                    .args(["-n", "system.ntfs_dos_name", "-v", short])
                    .arg(p),
            );
        };
        let dir = root.join("Program Files");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("Some Long Name.txt"), b"inside\n").expect("write");
        std::fs::write(dir.join("zz"), b"short\n").expect("write");
        std::fs::write(root.join("Long File Name.txt"), b"top\n").expect("write");
        std::fs::write(root.join("Another Long One.dat"), vec![7u8; 10_000]).expect("write");
        set_dos(&dir, "PROGRA~1");
        set_dos(&dir.join("Some Long Name.txt"), "SOMELO~1.TXT");
        set_dos(&root.join("Long File Name.txt"), "LONGFI~1.TXT");
        set_dos(&root.join("Another Long One.dat"), "ANOTHE~1.DAT");
    }))
}

#[test]
fn list_tree_equals_walk_tree_with_dos_short_names() {
    let Some(path) = dos_names_image("list_tree_equals_walk_tree_with_dos_short_names") else {
        return;
    };
    let t = check_image(&path, "dos names");
    assert!(has(&t, "/Program Files/Some Long Name.txt"));
    assert!(!t.entries.iter().any(|e| e.entry.short_name));
    let fs = open(&path);
    let hidden = assert_same(
        &fs,
        &TreeLimits {
            include_hidden: true,
            ..TreeLimits::default()
        },
        "dos names, hidden shown",
    );
    let short: Vec<String> = (0..hidden.entries.len() as u32)
        .filter(|&i| hidden.entries[i as usize].entry.short_name)
        .map(|i| hidden.path(i))
        .collect();
    assert!(short.contains(&"/LONGFI~1.TXT".to_string()), "{short:?}");
    assert!(
        short.contains(&"/Program Files/SOMELO~1.TXT".to_string()),
        "{short:?}"
    );
    // The directory's DOS name is a second name of a directory already listed.
    assert!(
        hidden
            .problems
            .iter()
            .any(|p| matches!(p, TreeProblem::Cycle { name, .. } if name == "PROGRA~1")),
        "{:?}",
        hidden.problems
    );
}

/// A device over an image that fails reads touching `fail`, or reads `patch` bytes over the
/// image at `patch_at`.
struct Faulty {
    inner: Source,
    fail: std::ops::Range<u64>,
    patch_at: u64,
    patch: Vec<u8>,
}

impl ReadAt for Faulty {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        let end = offset + buf.len() as u64;
        if offset < self.fail.end && self.fail.start < end {
            return Err(lun::LunError::Read {
                name: "faulty".into(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::from_raw_os_error(5),
            });
        }
        self.inner.read_exact_at(offset, buf)?;
        for (i, b) in self.patch.iter().enumerate() {
            let at = self.patch_at + i as u64;
            if (offset..end).contains(&at) {
                buf[(at - offset) as usize] = *b;
            }
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn name(&self) -> &str {
        "faulty"
    }
}

/// A large $MFT is read on one thread and decoded on another: a read error or a torn record
/// deep inside it stops both (no hang) and the listing falls back to the reference walk.
#[test]
fn list_tree_survives_errors_deep_in_a_large_mft() {
    let test = "list_tree_survives_errors_deep_in_a_large_mft";
    let Some(path) = image_path(test, &Spec::of(Layout::Bench10k, 4096)) else {
        return;
    };
    let image: Source = Arc::new(DevicePath::open(&path).unwrap());
    let mut boot = [0u8; 512];
    image.read_exact_at(0, &mut boot).unwrap();
    let cluster = u64::from(u16::from_le_bytes([boot[0x0B], boot[0x0C]])) * u64::from(boot[0x0D]);
    let mft = u64::from_le_bytes(boot[0x30..0x38].try_into().unwrap()) * cluster;
    // Six MiB in: well past the first chunks, inside a 10,000-file $MFT.
    let deep = mft + (6 << 20);
    let cases = [
        ("read error", deep..deep + 4096, 0, Vec::new()),
        ("torn record", 0..0, deep, b"BAAD".to_vec()),
    ];
    for (what, fail, patch_at, patch) in cases {
        let dev: Source = Arc::new(Faulty {
            inner: image.clone(),
            fail,
            patch_at,
            patch,
        });
        let fs = ntfs::Ntfs::open(dev).expect("the boot sector and $MFT start still read");
        let limits = TreeLimits::default();
        assert!(
            fs.list_tree_from_mft(&limits).is_none(),
            "{what}: fast path must give up"
        );
        let listed = fs.list_tree(&limits);
        let walked = walk_tree(&fs, &limits);
        assert_eq!(listed.entries, walked.entries, "{what}");
        assert!(
            listed.entries.len() > 1000,
            "{what}: {} entries",
            listed.entries.len()
        );
    }
}
