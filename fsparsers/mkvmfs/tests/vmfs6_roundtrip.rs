//! mkvmfs --vmfs 6, checked by another implementation: vmfs6-tools (`vmfs6-fuse`) mounts
//! every image read-only and the tree must match the source byte for byte.
//!
//! Where vmfs6-tools is known to be wrong, the test says so and checks the image with the
//! crate's own decoder (`mkvmfs::v6_check`) instead, including allocation consistency:
//! - to-be-zeroed blocks: vmfs6-tools tests the VMFS5 TBZ bit (bit 5, `VMFS_BLK_FB_TBZ` in
//!   libvmfs/vmfs_block.h, used by `vmfs_file_pread` in libvmfs/vmfs_file.c); VMFS6 keeps
//!   TBZ in bits 7..14, so vmfs6-fuse returns the garbage under such blocks;
//! - files whose block array has a zero entry before a used one (huge thin files):
//!   `vmfs_inode_read` (libvmfs/vmfs_inode.c) stops copying the array at the first zero;
//! - names longer than 128 bytes: `struct vmfs_dirent_raw` (libvmfs/vmfs_dirent.h) reads
//!   128 bytes of name, so vmfs6-fuse shows a 128-byte prefix.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{FuseMount, assert_same_tree, can_mount6};
use common::{
    GIB, MIB, cached_image, mkvmfs_output, pattern, read_at, thin_file, vm_a_folder, write_at,
};
use mkvmfs::v6_check::{Entry, Image, POINTER_BLOCK_RUN};
use mkvmfs::v6_format::{
    SFB_SIZE, ZLA_FILE_BLOCK, ZLA_POINTER_BLOCK, ZLA_POINTER_BLOCK_DOUBLE, ZLA_RESIDENT,
    ZLA_SUB_BLOCK,
};

/// A datastore-shaped tree: VM folders with thin flat disks, every small-file size class,
/// deep directories, symlinks and odd names.
fn vm_tree() -> PathBuf {
    let path = testkit::fixture_dir("mkvmfs").join("src-v6-vmtree-v1");
    testkit::cached_fixture(&path, |d| {
        // Its flat disk is thin with an interior hole: pointer blocks.
        let vm_a = vm_a_folder(d);

        let vm_b = d.join("VMs/vm-b");
        fs::create_dir_all(&vm_b).unwrap();
        fs::write(vm_b.join("vm-b.vmx"), "displayName = \"vm-b\"\n").unwrap();
        // Dense: direct SFBs.
        fs::write(
            vm_b.join("vm-b-flat.vmdk"),
            pattern(6, 5 * MIB as usize + 17),
        )
        .unwrap();
        // Thin with only trailing holes: still direct.
        thin_file(
            &vm_b.join("tail-hole.bin"),
            9 * MIB,
            &[(0, 7, 2 * MIB as usize)],
        );
        // Thin, 200 MiB, data at both ends.
        thin_file(
            &vm_b.join("vm-b_1-flat.vmdk"),
            200 * MIB,
            &[
                (0, 8, 4096),
                (150 * MIB, 9, 3 * MIB as usize),
                (200 * MIB - 10, 10, 10),
            ],
        );

        // Every small size class: resident (<= 3584), one sub-block (<= 64 KiB), SFB.
        let small = d.join("small");
        fs::create_dir_all(&small).unwrap();
        for (name, len) in [
            ("one", 1usize),
            ("resident-max", 3584),
            ("resident-max-plus-1", 3585),
            ("sub-block-max", 65536),
            ("sub-block-max-plus-1", 65537),
        ] {
            fs::write(small.join(name), pattern(len as u64, len)).unwrap();
        }
        fs::write(small.join("empty"), b"").unwrap();
        thin_file(&small.join("all-hole-40k"), 40_000, &[]);
        thin_file(&small.join("all-hole-3m"), 3 * MIB, &[]);

        let mut deep = d.join("deep");
        for i in 0..30 {
            deep = deep.join(format!("level-{i:02}"));
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("leaf.txt"), b"bottom\n").unwrap();

        let odd = d.join("odd names");
        fs::create_dir_all(&odd).unwrap();
        fs::write(odd.join("with space.txt"), b"space").unwrap();
        fs::write(odd.join("ünïcödé €.txt"), b"unicode").unwrap();
        fs::write(odd.join("n".repeat(127)), b"127").unwrap();

        std::os::unix::fs::symlink("vm-a.vmx", vm_a.join("link-to-vmx")).unwrap();
        std::os::unix::fs::symlink("/vmfs/volumes/datastore1/vm-a", d.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("does/not/exist", d.join("dangling")).unwrap();
        std::os::unix::fs::symlink("VMs", d.join("dir-link")).unwrap();
    })
}

/// A directory of 3,000 entries (plus a few subdirectories) next to a normal one.
fn many_tree() -> PathBuf {
    let path = testkit::fixture_dir("mkvmfs").join("src-v6-many-v1");
    testkit::cached_fixture(&path, |d| {
        let many = d.join("many");
        fs::create_dir_all(&many).unwrap();
        for i in 0..3000 {
            fs::write(
                many.join(format!("file-{i:04}.txt")),
                format!("entry {i}\n"),
            )
            .unwrap();
        }
        for i in 0..5 {
            fs::create_dir_all(many.join(format!("sub-{i}"))).unwrap();
        }
        fs::write(d.join("readme"), b"3000 entries\n").unwrap();
    })
}

/// A vmfs6-fuse mount of `image`, or `None` (a reported skip) when vmfs6-tools cannot mount.
fn mount6_or_skip(test: &str, image: &Path) -> Option<FuseMount> {
    can_mount6(test).then(|| FuseMount::mount6(image))
}

/// When vmfs6-tools can mount (else the test is skipped), asserts that vmfs6-fuse reads
/// `src` back from `image`, and returns the mount.
fn vmfs6_fuse_reads_back(test: &str, src: &Path, image: &Path) -> Option<FuseMount> {
    let mnt = mount6_or_skip(test, image)?;
    assert_same_tree(src, mnt.path(), &[], "vmfs6-fuse");
    Some(mnt)
}

/// Asserts that the crate's decoder reads every (offset, seed, len) piece of `e` back.
fn assert_decoder_reads_pieces(img: &Image, e: &Entry, pieces: &[(u64, u64, usize)]) {
    for &(off, seed, len) in pieces {
        assert!(
            img.read_range(e, off, len).unwrap() == pattern(seed, len),
            "at {off}"
        );
    }
}

fn checked(image: &Path, partition_offset: u64) -> Image {
    let mut img = Image::open(image, partition_offset).expect("decode VMFS6 image");
    img.check_allocation().expect("allocation consistent");
    img
}

#[test]
fn vmfs6_vm_tree_reads_back_through_vmfs6_fuse() {
    let test = "vmfs6_vm_tree_reads_back_through_vmfs6_fuse";
    let src = vm_tree();
    let image = cached_image(
        "v6-vmtree-bare",
        &src,
        &["--vmfs", "6", "--label", "vm tree"],
    );
    // Sparse on the host: far less allocated than the apparent size.
    let meta = fs::metadata(&image).unwrap();
    let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    assert!(allocated < 40 * MIB, "image allocates {allocated} bytes");

    let img = checked(&image, 0);
    assert_eq!(img.label, "vm tree");
    let zla = |p: &str| img.entry(p).unwrap().zla;
    assert_eq!(zla("/VMs/vm-a/vm-a-flat.vmdk"), ZLA_POINTER_BLOCK);
    assert_eq!(zla("/VMs/vm-b/vm-b-flat.vmdk"), ZLA_FILE_BLOCK);
    assert_eq!(zla("/VMs/vm-b/tail-hole.bin"), ZLA_FILE_BLOCK);
    assert_eq!(zla("/small/resident-max"), ZLA_RESIDENT);
    assert_eq!(zla("/small/resident-max-plus-1"), ZLA_SUB_BLOCK);
    assert_eq!(zla("/small/sub-block-max"), ZLA_SUB_BLOCK);
    assert_eq!(zla("/small/sub-block-max-plus-1"), ZLA_FILE_BLOCK);
    assert_eq!(zla("/VMs"), ZLA_SUB_BLOCK);
    // Holes stay thin.
    let thin = img.entry("/VMs/vm-a/vm-a-flat.vmdk").unwrap();
    let data_runs = thin
        .runs
        .iter()
        .filter(|r| r.offset != POINTER_BLOCK_RUN)
        .count();
    assert_eq!(data_runs, 4, "64 KiB + 2 MiB spanning 2 blocks + 1 MiB");
    assert!(img.entry("/small/all-hole-3m").unwrap().runs.is_empty());

    let Some(mnt) = vmfs6_fuse_reads_back(test, &src, &image) else {
        return;
    };
    for sys in [
        ".fbb.sf", ".fdc.sf", ".pbc.sf", ".sbc.sf", ".vh.sf", ".pb2.sf", ".jbc.sf",
    ] {
        assert!(mnt.join(sys).is_file(), "{sys} missing");
    }
    assert!(mnt.join(".sdd.sf").is_dir());
}

#[test]
fn vmfs6_directory_of_3000_entries_reads_back() {
    let test = "vmfs6_directory_of_3000_entries_reads_back";
    let src = many_tree();
    let image = cached_image("v6-many", &src, &["--vmfs", "6"]);
    let img = checked(&image, 0);
    // Listing walks the allocation maps; `Image::open` also looked every name up again
    // through the hash table and its link groups.
    let listed = img
        .entries
        .keys()
        .filter(|p| p.starts_with("/many/"))
        .count();
    assert_eq!(listed, 3005);
    vmfs6_fuse_reads_back(test, &src, &image);
}

#[test]
fn vmfs6_five_thousand_sub_block_files_read_back() {
    let test = "vmfs6_five_thousand_sub_block_files_read_back";
    // 5,200 files of 4-8 KiB take one 64 KiB sub-block each: `.sbc.sf` grows past 320 MiB,
    // so vmfs6-fuse reaches the far sub-blocks through `.sbc.sf`'s secondary pointer block.
    // Eight folders of 650: vmfs6-fuse looks names up by reading the whole folder, so one
    // folder of 5,200 would cost it 27 million entry reads.
    let path = testkit::fixture_dir("mkvmfs").join("src-v6-subblocks-v3");
    let src = testkit::cached_fixture(&path, |d| {
        for i in 0..5200u64 {
            let logs = d.join(format!("vm-{}", i % 8));
            fs::create_dir_all(&logs).unwrap();
            let len = 4000 + (i as usize * 7) % 4000;
            fs::write(logs.join(format!("vmware-{i}.log")), pattern(1000 + i, len)).unwrap();
        }
    });
    let image = cached_image("v6-subblocks", &src, &["--vmfs", "6"]);
    let img = checked(&image, 0);
    assert!(img.usage.sub_blocks >= 5200);
    let sbc = img.entry("/.sbc.sf").unwrap();
    assert!(sbc.size > 320 * MIB, ".sbc.sf is {} bytes", sbc.size);
    vmfs6_fuse_reads_back(test, &src, &image);
}

#[test]
fn vmfs6_mbr_and_gpt_layouts_read_back() {
    let test = "vmfs6_mbr_and_gpt_layouts_read_back";
    let src = vm_tree();
    let mbr = cached_image("v6-vmtree-mbr", &src, &["--vmfs", "6", "--layout", "mbr"]);
    let gpt = cached_image("v6-vmtree-gpt", &src, &["--vmfs", "6", "--layout", "gpt"]);
    checked(&mbr, MIB);
    checked(&gpt, MIB);
    // vmfs6-tools finds a VMFS partition through an MBR (type 0xfb) by itself…
    if vmfs6_fuse_reads_back(test, &src, &mbr).is_none() {
        return;
    }
    // …but not through a GPT: hand it the partition.
    let Some(dev) = testkit::LoopDevice::attach_with(test, &gpt, &["-r", "-o", "1048576"]) else {
        return;
    };
    vmfs6_fuse_reads_back(test, &src, dev.path());
}

#[test]
fn vmfs6_lazy_zeroed_disk_uses_lfbs_and_tbz() {
    let test = "vmfs6_lazy_zeroed_disk_uses_lfbs_and_tbz";
    let path = testkit::fixture_dir("mkvmfs").join("src-v6-lazy-v1");
    // Three whole 512 MiB chunks (LFBs) and an 8 MiB tail (SFBs).
    let size = 1536 * MIB + 7 * MIB + 123;
    let pieces = [
        (3 * MIB + 5, 11u64, 2 * MIB as usize),
        (1030 * MIB, 12, MIB as usize / 2),
    ];
    let src = testkit::cached_fixture(&path, |d| {
        fs::create_dir_all(d.join("vm")).unwrap();
        thin_file(&d.join("vm/thick-flat.vmdk"), size, &pieces);
        fs::write(d.join("vm/vm.vmx"), b"displayName = \"thick\"\n").unwrap();
        thin_file(&d.join("vm/small-lazy.bin"), 3 * MIB + 1, &[(MIB, 13, 100)]);
    });
    let image = cached_image(
        "v6-lazy",
        &src,
        &[
            "--vmfs",
            "6",
            "--lazy-zeroed",
            "*-flat.vmdk",
            "--lazy-zeroed",
            "small-lazy.bin",
        ],
    );
    let img = checked(&image, 0);
    let e = img.entry("/vm/thick-flat.vmdk").unwrap();
    assert_eq!(e.zla, ZLA_POINTER_BLOCK, "1,544 slots need pointer blocks");
    // The three whole 512 MiB chunks became LFBs (every 1 MiB slot of the block array
    // names its LFB): the first and third hold data, the second none, so it is TBZ.
    let lfbs: Vec<_> = e.runs.iter().filter(|r| r.lfb).collect();
    assert_eq!(lfbs.len(), 1536);
    assert!(lfbs[..512].iter().all(|r| !r.tbz));
    assert!(lfbs[512..1024].iter().all(|r| r.tbz));
    assert!(lfbs[1024..].iter().all(|r| !r.tbz));
    assert_eq!(img.usage.lfbs, 3);
    // The tail is SFBs: all allocated, all TBZ (no data there).
    let tail: Vec<_> = e
        .runs
        .iter()
        .filter(|r| !r.lfb && r.offset != POINTER_BLOCK_RUN)
        .collect();
    assert_eq!(tail.len() as u64, size.div_ceil(SFB_SIZE) - 1536);
    assert!(tail.iter().all(|r| r.tbz));
    // Our decoder reads the source bytes, zeros under TBZ (where the image holds garbage).
    let source = src.join("vm/thick-flat.vmdk");
    for off in [
        0,
        3 * MIB,
        4 * MIB,
        512 * MIB,
        600 * MIB,
        1030 * MIB,
        1100 * MIB,
        size - MIB,
    ] {
        let want = read_at(&source, off, MIB as usize);
        let got = img.read_range(e, off, want.len()).unwrap();
        assert!(got == want, "decoder differs at {off}");
    }
    let small = img.entry("/vm/small-lazy.bin").unwrap();
    assert_eq!(small.runs.iter().filter(|r| r.tbz).count(), 3);

    let Some(mnt) = mount6_or_skip(test, &image) else {
        return;
    };
    let on_fuse = mnt.join("vm/thick-flat.vmdk");
    assert_eq!(fs::metadata(&on_fuse).unwrap().len(), size);
    // Every byte outside TBZ blocks (the data, the holes inside data blocks and LFBs)
    // matches; vmfs6-tools cannot judge TBZ blocks (see the file comment).
    for off in [0, 3 * MIB, 4 * MIB, 300 * MIB, 1030 * MIB] {
        let want = read_at(&source, off, MIB as usize);
        assert!(
            read_at(&on_fuse, off, MIB as usize) == want,
            "vmfs6-fuse differs at {off}"
        );
    }
    let garbage = read_at(&on_fuse, 512 * MIB, 4096);
    if garbage.iter().any(|&b| b != 0) {
        eprintln!(
            "{test}: as expected, vmfs6-fuse ignores the VMFS6 TBZ bits and returns the garbage \
             under a to-be-zeroed LFB"
        );
    }
    assert_same_tree(
        &src,
        mnt.path(),
        &["vm/thick-flat.vmdk", "vm/small-lazy.bin"],
        "vmfs6-fuse",
    );
}

#[test]
fn vmfs6_huge_thin_file_is_allocated_consistently() {
    let test = "vmfs6_huge_thin_file_is_allocated_consistently";
    let path = testkit::fixture_dir("mkvmfs").join("src-v6-huge-v1");
    let size = 300 * GIB;
    let pieces = [
        (0u64, 21u64, 65536usize),
        (100 * GIB + 7, 22, MIB as usize),
        (size - MIB, 23, MIB as usize),
    ];
    let src = testkit::cached_fixture(&path, |d| {
        fs::create_dir_all(d).unwrap();
        thin_file(&d.join("huge-flat.vmdk"), size, &pieces);
    });
    let image = cached_image("v6-huge", &src, &["--vmfs", "6"]);
    let img = checked(&image, 0);
    let e = img.entry("/huge-flat.vmdk").unwrap();
    assert_eq!(e.size, size);
    assert_eq!(e.zla, ZLA_POINTER_BLOCK);
    assert_eq!(
        img.usage.pointer_blocks, 3,
        "one pointer block per used 8 GiB range"
    );
    assert_decoder_reads_pieces(&img, e, &pieces);
    assert!(
        img.read_range(e, 50 * GIB, 4096)
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );

    // vmfs6-tools reads the size and the first pointer block's range; past the first
    // unused pointer-block slot it returns zeros (see the file comment), so the rest is
    // judged by the decoder above.
    let Some(mnt) = mount6_or_skip(test, &image) else {
        return;
    };
    let f = mnt.join("huge-flat.vmdk");
    assert_eq!(fs::metadata(&f).unwrap().len(), size);
    assert!(read_at(&f, 0, 65536) == pattern(21, 65536));
}

#[test]
fn vmfs6_double_indirect_thin_file_reads_back() {
    let test = "vmfs6_double_indirect_thin_file_reads_back";
    let path = testkit::fixture_dir("mkvmfs").join("src-v6-double-v1");
    // 3 TiB: more than 320 pointer blocks of 8 GiB, so two levels (ZLA 0x10d0).
    let size = 3 * 1024 * GIB;
    let pieces = [
        (5u64, 31u64, 70_000usize),
        (2816 * GIB + 3, 32, 2 * MIB as usize),
        (size - 4096, 33, 4096),
    ];
    let src = testkit::cached_fixture(&path, |d| {
        fs::create_dir_all(d).unwrap();
        thin_file(&d.join("giant-flat.vmdk"), size, &pieces);
        fs::write(d.join("giant.vmx"), b"displayName = \"giant\"\n").unwrap();
    });
    let image = cached_image("v6-double", &src, &["--vmfs", "6"]);
    let img = checked(&image, 0);
    let e = img.entry("/giant-flat.vmdk").unwrap();
    assert_eq!(e.zla, ZLA_POINTER_BLOCK_DOUBLE);
    assert_eq!(
        img.usage.pointer_blocks, 4,
        "one top block and three leaves"
    );
    assert_decoder_reads_pieces(&img, e, &pieces);
    // vmfs6-tools follows both levels where the leaves exist; between them it reads
    // sub-block 0 as a pointer block (see the file comment), so only the data is compared.
    let Some(mnt) = mount6_or_skip(test, &image) else {
        return;
    };
    let f = mnt.join("giant-flat.vmdk");
    assert_eq!(fs::metadata(&f).unwrap().len(), size);
    for &(off, seed, len) in &pieces {
        assert!(
            read_at(&f, off, len) == pattern(seed, len),
            "vmfs6-fuse differs at {off}"
        );
    }
    assert_same_tree(&src, mnt.path(), &["giant-flat.vmdk"], "vmfs6-fuse");
}

#[test]
fn vmfs6_checker_catches_allocation_errors() {
    let src = many_tree();
    let image = cached_image("v6-many", &src, &["--vmfs", "6"]);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.img");
    // A sparse copy is enough: only the metadata is read.
    let status = Command::new("cp")
        .args(["--sparse=always"])
        .arg(&image)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let clean = Image::open(&copy, 0).unwrap();
    drop(clean);
    // Mark a free descriptor as used: 3,016 FDs fill clusters 0..=10 and part of 11, so
    // resource 255 of cluster 11 is free. `.fdc.sf` starts at device 7 MiB; groups of 8
    // clusters of 0x1010000 bytes start at 0x10000, each cluster header is 8 KiB.
    let (c, r) = (11u64, 255u64);
    let meta = 17 * MIB + 7 * MIB + 0x10000 + (c / 8) * 0x101_0000 + (c % 8) * 0x2000 + 0x1000;
    let byte = meta + 0x80 + r / 8;
    let old = read_at(&copy, byte, 1)[0];
    assert_ne!(
        old & (1 << (r % 8)),
        0,
        "resource is free before the change"
    );
    write_at(&copy, byte, &[old & !(1 << (r % 8))]);
    let mut img = Image::open(&copy, 0).unwrap();
    let err = img.check_allocation().unwrap_err().to_string();
    assert!(err.contains("bitmap says used"), "{err}");
}

#[test]
fn vmfs6_long_names_are_kept() {
    let test = "vmfs6_long_names_are_kept";
    let path = testkit::fixture_dir("mkvmfs").join("src-v6-names-v1");
    let n127 = "a".repeat(127);
    let n200 = "b".repeat(200);
    let n255 = format!("{}.vmdk", "c".repeat(250));
    let src = testkit::cached_fixture(&path, |d| {
        fs::create_dir_all(d.join("dir")).unwrap();
        fs::write(d.join("dir").join(&n127), b"127").unwrap();
        fs::write(d.join("dir").join(&n200), b"200").unwrap();
        fs::write(d.join("dir").join(&n255), b"255").unwrap();
    });
    let image = cached_image("v6-names", &src, &["--vmfs", "6"]);
    let img = checked(&image, 0);
    for n in [&n127, &n200, &n255] {
        let e = img.entry(&format!("/dir/{n}")).unwrap();
        assert_eq!(e.resident.as_deref(), Some(n.len().to_string().as_bytes()));
    }
    let Some(mnt) = mount6_or_skip(test, &image) else {
        return;
    };
    let mut names: Vec<String> = fs::read_dir(mnt.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // vmfs6-tools keeps 128 bytes of a name (see the file comment).
    assert_eq!(
        names,
        vec![
            n127.clone(),
            n200[..128].to_string(),
            n255[..128].to_string()
        ]
    );
    assert_eq!(fs::read(mnt.join("dir").join(&n127)).unwrap(), b"127");
}

#[test]
fn vmfs6_headers_match_the_esxi_volume() {
    let test = "vmfs6_headers_match_the_esxi_volume";
    let Some(esxi) = testkit::real_image(test, "vmfs6-esxi") else {
        return;
    };
    let src = many_tree();
    let ours = cached_image("v6-many", &src, &["--vmfs", "6"]);
    let dev = 17 * MIB;
    let fs3 = |p: &Path| read_at(p, dev + 0x20_0000, 0x200);
    let (a, b) = (fs3(&esxi), fs3(&ours));
    // Magic, major version, minor version.
    assert_eq!(a[..9], b[..9]);
    // Config, disk block size, file block size.
    assert_eq!(a[0x19..0x1d], b[0x19..0x1d]);
    assert_eq!(a[0x9d..0xa9], b[0x9d..0xa9]);
    // FDC cluster group offset and clusters per group, sub-block size, journal slots.
    assert_eq!(a[0xd1..0xe1], b[0xd1..0xe1]);
    assert_eq!(a[0xe9..0xed], b[0xe9..0xed], "pb2 FD address");
    assert_eq!(a[0x10d..0x111], b[0x10d..0x111], "sdd FD address");
    // Physical block size, mdAlignment, sfbToLfbShift, ptrBlockShift, sfbAddrBits, TBZ
    // granularity, journal block size, lease and reclaim intervals.
    assert_eq!(a[0x130..0x154], b[0x130..0x154]);
    // pb2/sdd volume addresses point at their descriptors, as on ESXi.
    for (off, fd) in [(0xe1usize, 0x1800004u32), (0x105, 0x1c00004)] {
        let addr = u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
        let desc = read_at(&ours, dev + addr + 0x1000, 4);
        assert_eq!(u32::from_le_bytes(desc.try_into().unwrap()), fd);
    }
    // LVM: magic, major/minor, data offset, mdAlignment; the LVM6 table offsets.
    let lvm = |p: &Path| read_at(p, MIB, 0x200);
    let (la, lb) = (lvm(&esxi), lvm(&ours));
    assert_eq!(la[..0x0c], lb[..0x0c]);
    assert_eq!(la[0x7a..0x82], lb[0x7a..0x82]);
    assert_eq!(la[0xca..0xce], lb[0xca..0xce]);
    assert_eq!(
        read_at(&esxi, MIB + 0x81000, 1),
        read_at(&ours, MIB + 0x81000, 1)
    );
    assert_eq!(
        read_at(&esxi, MIB + 0x82000, 9),
        read_at(&ours, MIB + 0x82000, 9)
    );
    // The root directory header layout (version, one allocation map at block 0).
    let root_fd = |p: &Path| read_at(p, dev + 7 * MIB + 0x20000, 0x2000);
    let (ra, rb) = (root_fd(&esxi), root_fd(&ours));
    assert_eq!(ra[0..4], rb[0..4], "lock type");
    assert_eq!(
        ra[0x1000..0x1008],
        rb[0x1000..0x1008],
        "address, generation"
    );
    assert_eq!(ra[0x100c..0x1010], rb[0x100c..0x1010], "type");
    // `.sbc.sf` sits behind a secondary pointer block (ZLA 5), `.fdc.sf` is direct (ZLA 1).
    for res in [2u64, 4] {
        let fd = |p: &Path| read_at(p, dev + 7 * MIB + 0x20000 + res * 0x2000 + 0x1044, 4);
        assert_eq!(fd(&esxi), fd(&ours), "ZLA of system file {res}");
    }
}

#[test]
fn vmfs6_rejects_other_block_sizes() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::write(dir.path().join("src/f"), b"x").unwrap();
    let (src, img) = (dir.path().join("src"), dir.path().join("img"));
    let out = mkvmfs_output(&[
        "--vmfs".as_ref(),
        "6".as_ref(),
        "--block-size".as_ref(),
        "8388608".as_ref(),
        src.as_os_str(),
        img.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("1 MiB"), "{err}");
}
