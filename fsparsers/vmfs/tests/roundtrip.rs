//! Reader round trips over images written by the project's `mkvmfs` (VMFS5 and VMFS6): every
//! addressing mode (resident, sub-block, direct, pointer block, double indirect), thousands of
//! files, deep directories, a lazy-zeroed (TBZ) file, thin files. The reader must give back the
//! source tree byte for byte, and the extents must point at the same bytes on the image.
//!
//! Needs `target/release/mkvmfs` (`cargo build --release -p mkvmfs`), or `MKVMFS=/path`.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fscore::{FileMapping, FileType, Filesystem};
use lun::{ReadAt, Source, Window};
use vmfs::Vmfs;

use common::{source, walk};

fn mkvmfs(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("MKVMFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join("target/release/mkvmfs"));
    if p.is_file() {
        Some(p)
    } else {
        testkit::skip(
            test,
            &format!(
                "{} is missing: cargo build --release -p mkvmfs",
                p.display()
            ),
        );
        None
    }
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    File::create(path).unwrap().write_all(data).unwrap();
}

/// A sparse file of `size` bytes with `chunks` (offset, len) of noise.
fn sparse(path: &Path, size: u64, chunks: &[(u64, usize)]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (i, &(off, len)) in chunks.iter().enumerate() {
        f.write_all_at(&noise(off ^ i as u64, len), off).unwrap();
    }
}

/// The source tree: every addressing mode, thin and thick VM files, deep and wide directories.
fn build_tree(dir: &Path, big: bool) {
    let vm = dir.join("VMs/web01");
    write(
        &vm.join("web01.vmx"),
        b"displayName = \"web01\"\nmemsize = \"4096\"\n",
    );
    write(
        &vm.join("web01.vmdk"),
        b"# Disk DescriptorFile\nRW 8388608 VMFS \"web01-flat.vmdk\"\n",
    );
    // Thin flat disk: 64 MiB with scattered data.
    sparse(
        &vm.join("web01-flat.vmdk"),
        64 << 20,
        &[(0, 1 << 20), (5 << 20, 70_000), ((40 << 20) + 123, 3 << 20)],
    );
    write(&vm.join("web01.nvram"), &noise(7, 8684));
    write(&dir.join("resident.txt"), b"tiny");
    write(&dir.join("empty"), b"");
    write(&dir.join("subblock.bin"), &noise(1, 5000));
    write(&dir.join("twoblocks.bin"), &noise(2, (1 << 20) + 1));
    std::os::unix::fs::symlink("VMs/web01/web01.vmx", dir.join("link")).unwrap();
    let mut deep = dir.join("deep");
    for i in 0..24 {
        deep = deep.join(format!("level{i:02}"));
    }
    write(&deep.join("bottom.txt"), b"deep file\n");
    for i in 0..3000 {
        write(
            &dir.join(format!("many/f{i:05}.txt")),
            format!("file number {i}\n").as_bytes(),
        );
    }
    // A long name (VMFS6 allows up to 255 bytes in dirents; ESXi limits to 127 characters).
    write(&dir.join(format!("{}.txt", "n".repeat(120))), b"long name");
    // Lazy-zeroed thick file: the writer fills its unwritten blocks with garbage marked TBZ.
    sparse(
        &dir.join("lazy/lazy-flat.vmdk"),
        8 << 20,
        &[(0, 300_000), (5 << 20, 4096)],
    );
    if big {
        // 300 MiB at 1 MiB blocks: past 256 direct addresses, so pointer blocks.
        sparse(&dir.join("big/big-flat.vmdk"), 300 << 20, &[(0, 300 << 20)]);
        // 300 GiB thin: past 256 GiB, so double-indirect on VMFS5.
        // Lazy-zeroed thick past 512 MiB: VMFS6 gives it large file blocks (with TBZ bits).
        sparse(
            &dir.join("lazy/thick-flat.vmdk"),
            600 << 20,
            &[(0, 2 << 20), (70 << 20, 1 << 20), (530 << 20, 1 << 20)],
        );
        sparse(
            &dir.join("big/huge-flat.vmdk"),
            300 << 30,
            &[(0, 4096), (299 << 30, 1 << 20), ((300 << 30) - 4096, 4096)],
        );
    }
}

/// Data segments of a (sparse) host file via SEEK_DATA / SEEK_HOLE.
fn data_segments(path: &Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0i64;
    while (pos as u64) < size {
        // SAFETY: lseek on a valid, open file descriptor.
        let d = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if d < 0 {
            break;
        }
        // SAFETY: as above.
        let h = unsafe { libc::lseek(fd, d, libc::SEEK_HOLE) };
        out.push((d as u64, h as u64));
        pos = h;
    }
    out
}

/// Compares one file: content through open() (data segments only for sparse sources),
/// extents against the image bytes.
fn compare_file(fs: &Vmfs, id: &fscore::FileId, src: &Path, rel: &str) {
    let md = fs.metadata(id).unwrap();
    let host = fs::metadata(src).unwrap();
    assert_eq!(md.size, host.len(), "{rel}: size");
    let file = fs.open(id).unwrap();
    let hf = File::open(src).unwrap();
    let segs = data_segments(src);
    let mut buf_a = vec![0u8; 4 << 20];
    let mut buf_b = vec![0u8; 4 << 20];
    let mut covered = 0u64;
    for (s, e) in &segs {
        let mut pos = *s;
        while pos < *e {
            let n = ((e - pos) as usize).min(buf_a.len());
            file.read_exact_at(pos, &mut buf_a[..n]).unwrap();
            hf.read_exact_at(&mut buf_b[..n], pos).unwrap();
            assert!(
                buf_a[..n] == buf_b[..n],
                "{rel}: bytes differ in {pos}..+{n}"
            );
            pos += n as u64;
        }
        covered += e - s;
    }
    // Holes in the source read as zeros: sample the first bytes after each segment.
    for (_, e) in segs.iter().filter(|(_, e)| *e < md.size) {
        let n = ((md.size - e) as usize).min(65536);
        file.read_exact_at(*e, &mut buf_a[..n]).unwrap();
        assert!(
            buf_a[..n].iter().all(|&b| b == 0),
            "{rel}: hole at {e} is not zero"
        );
    }
    let _ = covered;
    if let FileMapping::Mapped(map) = fs.extents(id).unwrap() {
        let dev = fs.device();
        for ext in map.extents() {
            let Some(p) = ext.physical else { continue };
            let n = ext.length.min(1 << 20) as usize;
            dev.read_exact_at(p, &mut buf_a[..n]).unwrap();
            file.read_exact_at(ext.logical, &mut buf_b[..n]).unwrap();
            assert!(
                buf_a[..n] == buf_b[..n],
                "{rel}: extent at {} does not hold the file's bytes",
                ext.logical
            );
        }
    }
}

fn compare_tree(fs: &Vmfs, src: &Path) -> usize {
    let tree = walk(fs, false);
    let mut host = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = format!("/{}", p.strip_prefix(src).unwrap().display());
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p.clone());
            }
            host.insert(rel, p);
        }
    }
    let got: Vec<_> = tree.keys().cloned().collect();
    let want: Vec<_> = host.keys().cloned().collect();
    assert_eq!(got, want, "tree listing");
    for (rel, p) in &host {
        let (t, id) = &tree[rel];
        let lm = fs::symlink_metadata(p).unwrap();
        if lm.file_type().is_symlink() {
            assert_eq!(*t, FileType::Symlink, "{rel}");
            let target = fs::read_link(p).unwrap();
            assert_eq!(
                fs.metadata(id).unwrap().symlink_target.unwrap(),
                target.to_str().unwrap()
            );
        } else if lm.is_dir() {
            assert_eq!(*t, FileType::Dir, "{rel}");
        } else {
            assert_eq!(*t, FileType::File, "{rel}");
            compare_file(fs, id, p, rel);
            let _ = lm.mode();
        }
    }
    host.len()
}

struct Fixture {
    src: PathBuf,
    image: PathBuf,
}

fn fixture(test: &str, vmfs: u8, big: bool, layout: &str) -> Option<Fixture> {
    let bin = mkvmfs(test)?;
    let base = testkit::fixture_dir("vmfs-reader");
    let src = base.join(format!("tree3k-{}", if big { "big" } else { "small" }));
    let marker = base.join(format!("tree3k-{}.done", if big { "big" } else { "small" }));
    let src_done = {
        let src = src.clone();
        testkit::cached_fixture(&marker, move |tmp| {
            let _ = fs::remove_dir_all(&src);
            build_tree(&src, big);
            fs::write(tmp, b"ok").unwrap();
        })
    };
    let _ = src_done;
    let image = base.join(format!(
        "rt3k-v{vmfs}-{}-{layout}.img",
        if big { "big" } else { "small" }
    ));
    let image = {
        let src = src.clone();
        let layout = layout.to_string();
        testkit::cached_fixture(&image, move |tmp| {
            testkit::run(
                Command::new(&bin)
                    .arg("--vmfs")
                    .arg(vmfs.to_string())
                    .arg("--layout")
                    .arg(&layout)
                    .arg("--label")
                    .arg(format!("rt{vmfs}"))
                    .arg("--lazy-zeroed")
                    .arg("lazy/*")
                    .arg(&src)
                    .arg(tmp),
            );
        })
    };
    Some(Fixture { src, image })
}

fn open_image(fx: &Fixture, layout: &str) -> Vmfs {
    let lun = source(&fx.image);
    let part: Source = if layout == "bare" {
        lun
    } else {
        let start = 2048 * 512;
        let len = vmfs_partition_len(&lun, layout);
        Arc::new(Window::new(lun, start, len, "part1").unwrap())
    };
    Vmfs::open(vec![part]).expect("open mkvmfs image")
}

/// Partition length from the partition table (MBR entry 0 or GPT entry 0).
fn vmfs_partition_len(lun: &Source, layout: &str) -> u64 {
    let mut b = [0u8; 512];
    if layout == "mbr" {
        lun.read_exact_at(0, &mut b).unwrap();
        assert_eq!(b[0x1be + 4], 0xfb, "MBR type");
        u32::from_le_bytes(b[0x1be + 12..0x1be + 16].try_into().unwrap()) as u64 * 512
    } else {
        lun.read_exact_at(1024, &mut b).unwrap();
        let first = u64::from_le_bytes(b[32..40].try_into().unwrap());
        let last = u64::from_le_bytes(b[40..48].try_into().unwrap());
        assert_eq!(first, 2048);
        (last - first + 1) * 512
    }
}

fn roundtrip(test: &str, vmfs: u8, big: bool, layout: &str) {
    let Some(fx) = fixture(test, vmfs, big, layout) else {
        return;
    };
    let fs = open_image(&fx, layout);
    assert_eq!(fs.info().label, format!("rt{vmfs}"));
    let n = compare_tree(&fs, &fx.src);
    assert!(n > 3000, "{n} entries");
    // Allocation counted without extent maps, and the whole-tree listing, match the
    // reference computations on every file.
    assert!(common::check_allocated_scan(&fs) > 3000);
    assert!(common::check_list_tree(&fs, &common::tree_limits()) > 3000);
    // The lazy-zeroed file: allocated beyond its data, TBZ blocks read as zeros.
    let id = fs.lookup("/lazy/lazy-flat.vmdk").unwrap();
    let md = fs.metadata(&id).unwrap();
    assert!(
        md.allocated >= md.size,
        "lazy-zeroed file is thick: {} of {}",
        md.allocated,
        md.size
    );
    let zla = |p: &str| fs.read_fd(fs.lookup(p).unwrap().ino as u32).unwrap().zla;
    let modes: Vec<_> = [
        "/resident.txt",
        "/subblock.bin",
        "/twoblocks.bin",
        "/lazy/lazy-flat.vmdk",
        "/VMs/web01/web01-flat.vmdk",
    ]
    .iter()
    .map(|p| (p.to_string(), zla(p)))
    .collect();
    eprintln!("v{vmfs} addressing modes: {modes:x?}");
    assert_eq!(zla("/resident.txt"), vmfs::fd::zla::RESIDENT);
    assert_eq!(zla("/subblock.bin"), vmfs::fd::zla::SUB_BLOCK);
    assert_eq!(zla("/twoblocks.bin"), vmfs::fd::zla::FILE_BLOCK);
    // TBZ blocks: allocated but mapped as holes (they read as zeros over the garbage).
    let FileMapping::Mapped(map) = fs.extents(&id).unwrap() else {
        panic!("lazy file not mapped")
    };
    assert!(
        md.allocated > map.data_bytes(),
        "no TBZ block in the lazy-zeroed file"
    );
    if big {
        let big = zla("/big/big-flat.vmdk");
        // VMFS6 has 320 direct addresses: 300 MiB still fits without pointer blocks.
        let direct_ok = vmfs == 6 && big == vmfs::fd::zla::FILE_BLOCK;
        assert!(
            direct_ok
                || big == vmfs::fd::zla::POINTER_BLOCK
                || big == vmfs::fd::zla::POINTER2_BLOCK,
            "{big:#x}"
        );
        eprintln!(
            "v{vmfs} huge: {:#x}, thick: {:#x}",
            zla("/big/huge-flat.vmdk"),
            zla("/lazy/thick-flat.vmdk")
        );
        let thick = fs
            .metadata(&fs.lookup("/lazy/thick-flat.vmdk").unwrap())
            .unwrap();
        assert!(
            thick.allocated >= 600 << 20,
            "thick file allocated {}",
            thick.allocated
        );
        if vmfs == 6 {
            // The first 512 MiB sit in one large file block: one extent, LFB-aligned.
            let tid = fs.lookup("/lazy/thick-flat.vmdk").unwrap();
            let FileMapping::Mapped(tmap) = fs.extents(&tid).unwrap() else {
                panic!()
            };
            let first = tmap.extents()[0];
            assert_eq!(first.length, 512 << 20, "{:?}", tmap.extents());
        }
        if vmfs == 5 {
            assert_eq!(
                zla("/big/huge-flat.vmdk"),
                vmfs::fd::zla::POINTER_BLOCK_DOUBLE
            );
        }
        let id = fs.lookup("/big/huge-flat.vmdk").unwrap();
        let md = fs.metadata(&id).unwrap();
        assert_eq!(md.size, 300 << 30);
        assert!(
            md.allocated < 64 << 20,
            "thin file stays thin: {}",
            md.allocated
        );
    }
}

#[test]
fn mkvmfs5_small_tree_round_trips() {
    roundtrip("mkvmfs5_small_tree_round_trips", 5, false, "bare");
}

#[test]
fn mkvmfs6_small_tree_round_trips() {
    roundtrip("mkvmfs6_small_tree_round_trips", 6, false, "bare");
}

#[test]
fn mkvmfs5_big_files_round_trip() {
    roundtrip("mkvmfs5_big_files_round_trip", 5, true, "bare");
}

#[test]
fn mkvmfs6_big_files_round_trip() {
    roundtrip("mkvmfs6_big_files_round_trip", 6, true, "bare");
}

#[test]
fn mkvmfs5_gpt_round_trips() {
    roundtrip("mkvmfs5_gpt_round_trips", 5, false, "gpt");
}

#[test]
fn mkvmfs6_mbr_round_trips() {
    roundtrip("mkvmfs6_mbr_round_trips", 6, false, "mbr");
}

/// Thin disks as the inventory meets them (40 GiB and 100 GiB with a few MiB written) and a
/// 3 TiB one (double indirect on VMFS6 too): allocation counted without extent maps equals the
/// map's count, and the tree listing matches the reference walk.
fn thin_disks(test: &str, vmfs: u8) {
    let Some(bin) = mkvmfs(test) else {
        return;
    };
    let base = testkit::fixture_dir("vmfs-reader");
    let src = base.join("thin3t-v2");
    let marker = base.join("thin3t-v2.done");
    {
        let src = src.clone();
        testkit::cached_fixture(&marker, move |tmp| {
            let _ = fs::remove_dir_all(&src);
            let vm = src.join("vm01");
            sparse(&vm.join("vm01-flat.vmdk"), 40 << 30, &[(0, 1 << 20)]);
            sparse(
                &vm.join("vm01_1-flat.vmdk"),
                100 << 30,
                &[(0, 4096), (50 << 30, 3 << 20), ((100 << 30) - 4096, 4096)],
            );
            write(&vm.join("vm01.vmx"), b"displayName = \"vm01\"\n");
            // Data in every GiB: consecutive pointer blocks, read in one request.
            let every_gib: Vec<(u64, usize)> = (0..24).map(|g| ((g << 30) + 512, 4096)).collect();
            sparse(&vm.join("vm01_2-flat.vmdk"), 24 << 30, &every_gib);
            sparse(
                &src.join("giant/giant-flat.vmdk"),
                3 << 40,
                &[
                    (5, 70_000),
                    ((2816 << 30) + 3, 2 << 20),
                    ((3 << 40) - 4096, 4096),
                ],
            );
            fs::write(tmp, b"ok").unwrap();
        });
    }
    let image = base.join(format!("thin3t-v2-v{vmfs}.img"));
    let image = {
        let src = src.clone();
        testkit::cached_fixture(&image, move |tmp| {
            testkit::run(
                Command::new(&bin)
                    .arg("--vmfs")
                    .arg(vmfs.to_string())
                    .arg(&src)
                    .arg(tmp),
            );
        })
    };
    let fs = Vmfs::open(vec![source(&image)]).expect("open thin image");
    let giant = fs.lookup("/giant/giant-flat.vmdk").unwrap();
    let fd = fs.read_fd(giant.ino as u32).unwrap();
    assert_eq!(fd.zla, vmfs::fd::zla::POINTER_BLOCK_DOUBLE, "3 TiB file");
    let md = fs.metadata(&giant).unwrap();
    assert_eq!(md.size, 3 << 40);
    assert!(
        (3 << 20..64 << 20).contains(&md.allocated),
        "giant: {} allocated",
        md.allocated
    );
    // The 24 GiB disk's pointer blocks lie back to back (grouped reads are exercised).
    let disk = fs.lookup("/vm01/vm01_2-flat.vmdk").unwrap();
    let fd = fs.read_fd(disk.ino as u32).unwrap();
    let homes: Vec<_> = (0..4)
        .map(|i| fd.raw_addr(i))
        .take_while(|&raw| raw != 0)
        .map(|raw| {
            let a = if vmfs == 6 {
                vmfs::address::Addr::decode6(raw)
            } else {
                vmfs::address::Addr::decode5(raw as u32, fs.descriptor().dense_sb())
            };
            let vmfs::address::Addr::Resource {
                kind,
                cluster,
                resource,
            } = a
            else {
                panic!("{a:?} is not a pointer block in a resource file")
            };
            fs.resource_location(kind, cluster, resource).unwrap().1
        })
        .collect();
    let pb_bytes = if vmfs == 6 { 65536 } else { 4096 };
    assert!(
        homes.windows(2).any(|w| w[1] == w[0] + pb_bytes),
        "pointer blocks at {homes:?}"
    );
    let md = fs.metadata(&disk).unwrap();
    assert_eq!(md.allocated, 24 << 20, "one 1 MiB block per GiB");
    assert!(common::check_allocated_scan(&fs) >= 6);
    assert!(common::check_list_tree(&fs, &common::tree_limits()) >= 6);
}

#[test]
fn vmfs5_thin_disks_count_allocation_without_maps() {
    thin_disks("vmfs5_thin_disks_count_allocation_without_maps", 5);
}

#[test]
fn vmfs6_thin_disks_count_allocation_without_maps() {
    thin_disks("vmfs6_thin_disks_count_allocation_without_maps", 6);
}

/// Device offsets of the pointer blocks named in a file's address array (those held in
/// resource files), with the FD's address array itself.
fn pointer_block_regions(fs: &Vmfs, path: &str) -> Vec<(u64, u64)> {
    use vmfs::address::Addr;
    let id = fs.lookup(path).unwrap();
    let fd = fs.read_fd(id.ino as u32).unwrap();
    let v6 = fs.descriptor().is_vmfs6();
    let (_, fd_off) = fs.fd_location(fd.addr).unwrap();
    let mut out = vec![if v6 {
        (fd_off + 8192 - 2560, 2560)
    } else {
        (fd_off + 1024, 1024)
    }];
    for i in 0..8 {
        let raw = fd.raw_addr(i);
        let addr = if v6 {
            Addr::decode6(raw)
        } else {
            Addr::decode5(raw as u32, fs.descriptor().dense_sb())
        };
        if let Addr::Resource {
            kind,
            cluster,
            resource,
        } = addr
            && let Ok((_, off)) = fs.resource_location(kind, cluster, resource)
        {
            out.push((off, if v6 { 65536 } else { 4096 }));
        }
    }
    out
}

fn mutate_pointer_blocks(test: &str, vmfs: u8, big: bool, path: &str, picks: &[(u64, u64, u8)]) {
    let Some(fx) = fixture(test, vmfs, big, "bare") else {
        return;
    };
    let base = source(&fx.image);
    let fs = Vmfs::open(vec![base.clone()]).unwrap();
    let regions = pointer_block_regions(&fs, path);
    assert!(regions.len() > 1, "{path}: no pointer block found");
    let mut o = common::Overlay::new(base);
    for &(r, off, val) in picks {
        let (start, len) = regions[(r % regions.len() as u64) as usize];
        o.patch(start + off % len, &[val]);
    }
    let fs = match Vmfs::open(vec![Arc::new(o)]) {
        Ok(fs) => fs,
        Err(_) => return,
    };
    let Ok(id) = fs.lookup(path) else { return };
    let _ = fs.metadata(&id);
    common::allocated_agrees(&fs, &id);
    common::check_list_tree(
        &fs,
        &[fscore::TreeLimits {
            include_hidden: true,
            ..Default::default()
        }],
    );
    if let Ok(FileMapping::Mapped(map)) = fs.extents(&id) {
        let f = fs.open(&id).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        for e in map.extents().iter().take(16) {
            let n = e.length.min(buf.len() as u64) as usize;
            let _ = f.read_exact_at(e.logical, &mut buf[..n]);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, failure_persistence: None, ..Default::default() })]

    #[test]
    fn vmfs6_pointer_block_mutations_never_panic(picks in proptest::collection::vec((0u64..8, 0u64..65536, proptest::prelude::any::<u8>()), 1..16)) {
        mutate_pointer_blocks("vmfs6_pointer_block_mutations_never_panic", 6, false, "/VMs/web01/web01-flat.vmdk", &picks);
    }

    #[test]
    fn vmfs5_double_indirect_mutations_never_panic(picks in proptest::collection::vec((0u64..8, 0u64..4096, proptest::prelude::any::<u8>()), 1..16)) {
        mutate_pointer_blocks("vmfs5_double_indirect_mutations_never_panic", 5, true, "/big/huge-flat.vmdk", &picks);
    }
}
