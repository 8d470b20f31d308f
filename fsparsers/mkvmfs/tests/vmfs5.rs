//! mkvmfs --vmfs 5, checked by another implementation: vmfs-tools (`vmfs-fuse`, `debugvmfs`)
//! reads every image back and the tree must match the source byte for byte. Where
//! vmfs-tools cannot judge (files over 256 GiB, which need double-indirect pointer blocks),
//! the test decodes the image itself and checks allocation consistency instead.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::dissect::{assert_dissect_reads_back, dissect_ranges, have_dissect};
use common::mount::{FuseMount, assert_same_tree, can_mount, debugvmfs, debugvmfs_bitmaps_ok};
use common::v5check::V5Image;
use common::*;
use mkvmfs::v5_format::zla;

/// A source tree shaped like a datastore: VM folders, 2,000 small files, deep directories,
/// a 300 MiB file (pointer blocks), a lazy-zeroed disk, symlinks and odd names.
fn vm_tree() -> PathBuf {
    let path = testkit::fixture_dir("mkvmfs").join("src-vmtree-v3");
    testkit::cached_fixture(&path, |d| {
        vm_a_folder(d);

        let vm_b = d.join("VMs/vm-b");
        fs::create_dir_all(&vm_b).unwrap();
        fs::write(vm_b.join("vm-b.vmx"), "displayName = \"vm-b\"\n").unwrap();
        // Lazy-zeroed thick: data in blocks 1 and 17, every other block TBZ over garbage.
        thin_file(
            &vm_b.join("vm-b-flat.vmdk"),
            24 * MIB,
            &[(MIB, 6, 100), (17 * MIB + 5, 7, 5000)],
        );

        // A thin disk past 256 blocks: pointer blocks, one of them absent (a 1 GiB hole).
        let vm_c = d.join("VMs/vm-c");
        fs::create_dir_all(&vm_c).unwrap();
        thin_file(
            &vm_c.join("vm-c-flat.vmdk"),
            1536 * MIB,
            &[
                (0, 31, 4096),
                (700 * MIB + 1, 32, 9000),
                (1535 * MIB, 33, MIB as usize),
            ],
        );

        let many = d.join("many");
        fs::create_dir_all(&many).unwrap();
        for i in 0..2000u64 {
            let len = match i % 10 {
                0 => 0,
                1..=4 => 1 + (i * 37) % 1024,
                5..=8 => 1025 + (i * 53) % 7168,
                _ if i % 50 == 9 => 9000 + (i * 71) % 30_000,
                _ => 100 + i % 900,
            };
            fs::write(
                many.join(format!("f{i:04}.dat")),
                pattern(1000 + i, len as usize),
            )
            .unwrap();
        }

        let mut deep = d.join("deep");
        for level in 0..40 {
            deep = deep.join(format!("d{level:02}"));
        }
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("bottom.txt"), b"at the bottom\n").unwrap();
        std::os::unix::fs::symlink("../bottom.txt", deep.join("up-link")).unwrap();

        let big = d.join("big");
        fs::create_dir_all(&big).unwrap();
        let f = fs::File::create(big.join("pb300m.bin")).unwrap();
        for chunk in 0..300u64 {
            use std::os::unix::fs::FileExt;
            f.write_all_at(&pattern(9000 + chunk, MIB as usize), chunk * MIB)
                .unwrap();
        }

        let links = d.join("links");
        fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink("../VMs/vm-a/vm-a.vmx", links.join("relative")).unwrap();
        std::os::unix::fs::symlink("/vmfs/volumes/datastore1/vm-a", links.join("absolute"))
            .unwrap();
        std::os::unix::fs::symlink("does-not-exist", links.join("dangling")).unwrap();
        std::os::unix::fs::symlink("x".repeat(200), links.join("long-target")).unwrap();

        fs::create_dir_all(d.join("empty-dir")).unwrap();
        fs::write(d.join("name with spaces & ümlauts.txt"), b"odd names\n").unwrap();
        fs::write(d.join("n".repeat(127)), b"longest name\n").unwrap();
    })
}

/// A tree with one 300 GiB thin disk: over 256 GiB at 1 MiB blocks, so double indirect.
fn huge_tree() -> PathBuf {
    let path = testkit::fixture_dir("mkvmfs").join("src-huge-v1");
    testkit::cached_fixture(&path, |d| {
        let vm = d.join("huge");
        fs::create_dir_all(&vm).unwrap();
        fs::write(vm.join("huge.vmx"), "displayName = \"huge\"\n").unwrap();
        thin_file(&vm.join("huge-flat.vmdk"), 300 * GIB, &huge_pieces());
    })
}

fn huge_pieces() -> Vec<(u64, u64, usize)> {
    vec![
        (0, 11, 4096),
        (GIB + 7, 12, 100),
        (256 * GIB - 10, 13, 20),
        (299 * GIB, 14, MIB as usize),
        (300 * GIB - 5, 15, 5),
    ]
}

/// [`vm_tree`] and its image: labelled, with vm-b's disk lazy-zeroed.
fn vm_tree_image() -> (PathBuf, PathBuf) {
    let src = vm_tree();
    let image = cached_image(
        "vmtree",
        &src,
        &[
            "--vmfs",
            "5",
            "--label",
            "vm tree",
            "--lazy-zeroed",
            "VMs/vm-b/*-flat.vmdk",
        ],
    );
    (src, image)
}

#[test]
fn vm_tree_reads_back_identically_through_vmfs_fuse() {
    if !can_mount("vm_tree_reads_back_identically_through_vmfs_fuse") {
        return;
    }
    let (src, image) = vm_tree_image();
    debugvmfs_bitmaps_ok(&[&image]);
    let mnt = FuseMount::mount(&image);
    assert_same_tree(&src, mnt.path(), &[], "vmfs-fuse");
}

#[test]
fn vm_tree_uses_every_addressing_mode_with_consistent_bitmaps() {
    let (_, image) = vm_tree_image();
    let img = V5Image::open(&image, 0);
    img.assert_allocation_consistent("vmtree");

    let zla_of = |p: &str| img.lookup(p).zla;
    assert_eq!(zla_of("many/f0001.dat"), zla::RESIDENT, "resident");
    assert_eq!(zla_of("many/f0005.dat"), zla::SUB_BLOCK, "sub-block file");
    assert_eq!(
        zla_of("many"),
        zla::SUB_BLOCK,
        "2,000-entry directory in sub-blocks"
    );
    assert_eq!(
        zla_of("VMs/vm-a/vm-a.nvram"),
        zla::FILE_BLOCK,
        "direct file blocks"
    );
    assert_eq!(
        zla_of("big/pb300m.bin"),
        zla::POINTER_BLOCK,
        "pointer blocks"
    );

    let sparse_pb = img.lookup("VMs/vm-c/vm-c-flat.vmdk");
    assert_eq!(sparse_pb.zla, zla::POINTER_BLOCK);
    let (blocks, pbs) = img.block_map(&sparse_pb);
    assert_eq!(
        (blocks.len(), pbs.len()),
        (3, 2),
        "pointer blocks only where data is"
    );

    // The thin disk allocates only the blocks that hold data.
    let thin = img.lookup("VMs/vm-a/vm-a-flat.vmdk");
    assert_eq!(
        img.block_map(&thin).0.len(),
        4,
        "thin disk: blocks 0, 10, 11, 63"
    );

    // The lazy-zeroed disk: all 24 blocks allocated, 22 of them TBZ over non-zero garbage.
    let lazy = img.lookup("VMs/vm-b/vm-b-flat.vmdk");
    let (map, _) = img.block_map(&lazy);
    assert_eq!(map.len(), 24);
    let tbz: Vec<u64> = map
        .iter()
        .filter(|(_, a)| a & 0x20 != 0)
        .map(|(_, a)| u64::from(a >> 6))
        .collect();
    assert_eq!(tbz.len(), 22);
    let buf = read_exact(&image, img.block_image_offset(tbz[0]), 4096);
    assert!(buf.iter().all(|&b| b != 0), "garbage under a TBZ block");
    assert_eq!(
        img.read(&lazy, 0, 4096),
        vec![0u8; 4096],
        "TBZ reads as zeros"
    );
}

#[test]
fn double_indirect_300g_thin_file_is_allocated_consistently() {
    // vmfs-tools cannot read files over 256 GiB (double-indirect pointer blocks), so this
    // test decodes the image itself: every used block, pointer block and descriptor is marked
    // in the bitmaps and nothing else is, no resource is used twice, and the data reads back.
    let src = huge_tree();
    let image = cached_image("huge", &src, &["--vmfs", "5"]);
    let host = fs::metadata(&image).unwrap();
    assert!(
        host.blocks() * 512 < 600 * MIB,
        "image stays sparse on the host"
    );

    let img = V5Image::open(&image, 0);
    img.assert_allocation_consistent("huge");
    let fd = img.lookup("huge/huge-flat.vmdk");
    assert_eq!(fd.len, 300 * GIB);
    assert_eq!(fd.zla, zla::DOUBLE_POINTER_BLOCK);
    for (off, seed, len) in huge_pieces() {
        assert_eq!(img.read(&fd, off, len), pattern(seed, len), "data at {off}");
    }
    assert_eq!(
        img.read(&fd, 100 * GIB, 8192),
        vec![0u8; 8192],
        "a hole reads as zeros"
    );
    // Six data blocks (the 256 GiB piece straddles two blocks).
    assert_eq!(img.block_map(&fd).0.len(), 6);

    if can_mount("double_indirect_300g_thin_file_is_allocated_consistently") {
        debugvmfs_bitmaps_ok(&[&image]);
        // vmfs-fuse still lists the file with its size; its contents are beyond it.
        let mnt = FuseMount::mount(&image);
        assert_eq!(
            fs::metadata(mnt.path().join("huge/huge-flat.vmdk"))
                .unwrap()
                .len(),
            300 * GIB
        );
        let vmx = fs::read(mnt.path().join("huge/huge.vmx")).unwrap();
        assert_eq!(vmx, b"displayName = \"huge\"\n");
    }
}

fn small_tree() -> PathBuf {
    let path = testkit::fixture_dir("mkvmfs").join("src-small-v1");
    testkit::cached_fixture(&path, |d| {
        fs::create_dir_all(d.join("vm1")).unwrap();
        fs::write(d.join("vm1/vm1.vmx"), "displayName = \"vm1\"\n").unwrap();
        thin_file(
            &d.join("vm1/vm1-flat.vmdk"),
            16 * MIB,
            &[(3 * MIB + 1, 21, 70_000)],
        );
        fs::write(d.join("vm1/small.bin"), pattern(22, 3000)).unwrap();
        std::os::unix::fs::symlink("vm1/vm1.vmx", d.join("config-link")).unwrap();
    })
}

/// The standard output of `TOOL ARGS… IMAGE`: partition-table tools judging an image.
fn stdout_of(tool: &str, args: &[&str], image: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bare_gpt_and_mbr_layouts_mount_with_vmfs_fuse() {
    let test = "bare_gpt_and_mbr_layouts_mount_with_vmfs_fuse";
    if !can_mount(test) {
        return;
    }
    let src = small_tree();
    for layout in ["bare", "mbr", "gpt"] {
        let image = cached_image(
            &format!("small-{layout}"),
            &src,
            &["--vmfs", "5", "--layout", layout],
        );
        let offset = if layout == "bare" { 0 } else { MIB };
        V5Image::open(&image, offset).assert_allocation_consistent(layout);
        let mnt = if layout == "gpt" {
            // vmfs-fuse does not read GPTs: hand it the partition through a loop device.
            if testkit::have_tool("sgdisk") {
                let text = stdout_of("sgdisk", &["-v"], &image);
                assert!(text.contains("No problems found"), "sgdisk -v: {text}");
                let info = stdout_of("sgdisk", &["-i", "1"], &image).to_uppercase();
                assert!(
                    info.contains("AA31E02A-400F-11DB-9590-000C2911D1B8"),
                    "partition type: {info}"
                );
                assert!(
                    info.contains("FIRST SECTOR: 2048"),
                    "partition start: {info}"
                );
            }
            let size = fs::metadata(&image).unwrap().len() - 2 * MIB;
            let opts = [
                "-r",
                "-o",
                &MIB.to_string(),
                "--sizelimit",
                &size.to_string(),
            ];
            let dev = testkit::LoopDevice::attach_with(test, &image, &opts)
                .expect("a loop device over the GPT partition");
            // The mount holds the device open; the guard detaches it after the unmount.
            (FuseMount::mount(dev.path()), Some(dev))
        } else {
            if layout == "mbr" && testkit::have_tool("sfdisk") {
                let text = stdout_of("sfdisk", &["-d"], &image);
                assert!(
                    text.contains("start=        2048") && text.contains("type=fb"),
                    "sfdisk -d: {text}"
                );
            }
            (FuseMount::mount(&image), None)
        };
        assert_same_tree(&src, mnt.0.path(), &[], &format!("{layout}: vmfs-fuse"));
    }
}

#[test]
fn explicit_size_and_block_size_are_honoured() {
    let src = small_tree();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("sized.img");
    mkvmfs(
        &[
            "--vmfs",
            "5",
            "--size",
            &(1024 * MIB).to_string(),
            "--block-size",
            &(4 * MIB).to_string(),
        ],
        &src,
        &image,
    );
    assert_eq!(fs::metadata(&image).unwrap().len(), 1024 * MIB);
    let img = V5Image::open(&image, 0);
    assert_eq!(img.block_size, 4 * MIB);
    assert_eq!(
        img.total_blocks,
        3 * 256 / 4,
        "three 256 MiB extents fit in 1 GiB after 17 MiB of LVM"
    );
    img.assert_allocation_consistent("sized");
    let fd = img.lookup("vm1/vm1-flat.vmdk");
    assert_eq!(img.read(&fd, 3 * MIB + 1, 70_000), pattern(21, 70_000));
    if can_mount("explicit_size_and_block_size_are_honoured") {
        let mnt = FuseMount::mount(&image);
        assert_same_tree(&src, mnt.path(), &[], "vmfs-fuse");
    }
}

#[test]
fn bad_input_gives_one_clear_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    let img = img.to_str().unwrap();
    let src = small_tree();
    let src = src.to_str().unwrap();
    let inside = Path::new(src).join("image.img");
    // (arguments, what the error must say, whether it must start with "error: ").
    let cases: [(&[&str], &str, bool); 5] = [
        (
            &["--vmfs", "5", "/nonexistent/source", img],
            "/nonexistent/source",
            true,
        ),
        (
            &["--vmfs", "5", "--size", "100000000", src, img],
            "--size",
            true,
        ),
        (
            &["--vmfs", "5", "--block-size", "12345", src, img],
            "block size",
            false,
        ),
        (
            &["--vmfs", "5", src, inside.to_str().unwrap()],
            "inside the source",
            false,
        ),
        (&["--vmfs", "7", src, img], "", false),
    ];
    for (args, says, prefixed) in cases {
        let out = mkvmfs_output(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains(says)
                && (!prefixed || err.starts_with("error: ")),
            "{args:?}: {err}"
        );
    }
    assert!(!inside.exists());
}

#[test]
fn directory_past_the_sub_block_limit_moves_to_file_blocks() {
    // 15,000 entries need more than 256 sub-blocks, so the directory is stored in file
    // blocks. vmfs-fuse re-reads a 2 MiB directory for every lookup, which makes a full
    // comparison through it take minutes; debugvmfs lists it in one pass instead.
    let path = testkit::fixture_dir("mkvmfs").join("src-bigdir-v2");
    let src = testkit::cached_fixture(&path, |d| {
        let big = d.join("bigdir");
        fs::create_dir_all(&big).unwrap();
        // Every fifth entry holds 2,000 bytes: 3,000 sub-blocks, past one cluster group.
        for i in 0..15_000 {
            let len = if i % 5 == 0 { 2000 } else { 0 };
            fs::write(big.join(format!("entry-{i:05}.vmdk")), pattern(i, len)).unwrap();
        }
        fs::write(big.join("zz-last.txt"), b"last entry\n").unwrap();
    });
    let image = cached_image("bigdir", &src, &["--vmfs", "5"]);
    let img = V5Image::open(&image, 0);
    img.assert_allocation_consistent("bigdir");
    let dir = img.lookup("bigdir");
    assert_eq!(dir.zla, zla::FILE_BLOCK);
    assert_eq!(img.dirents(&dir).len(), 15_003);
    let last_sb = img.lookup("bigdir/entry-14995.vmdk");
    assert_eq!(last_sb.zla, zla::SUB_BLOCK);
    assert!(
        mkvmfs::v5_format::decode_sb(last_sb.addr(0)) >= 2048,
        "second sub-block group"
    );
    assert_eq!(img.read(&last_sb, 0, 2000), pattern(14995, 2000));

    if can_mount("directory_past_the_sub_block_limit_moves_to_file_blocks") {
        let out = debugvmfs(&[&image], &["ls", "/bigdir"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = text.lines().collect();
        assert_eq!(names.len(), 15_003, "debugvmfs ls /bigdir");
        assert!(names.contains(&"entry-14999.vmdk") && names.contains(&"zz-last.txt"));
        // The last sub-block file lies in the second sub-block cluster group.
        let out = debugvmfs(&[&image], &["cat", "/bigdir/entry-14995.vmdk"]);
        assert_eq!(out.stdout, pattern(14995, 2000));
        let out = debugvmfs(&[&image], &["cat", "/bigdir/zz-last.txt"]);
        assert_eq!(out.stdout, b"last entry\n");
    }
}

#[test]
fn headers_match_the_esxi_made_volume() {
    // The same decoder that judges mkvmfs images must accept the ESXi volume, and the fields
    // mkvmfs copies from ESXi's choices must be equal there.
    let Some(esxi) = testkit::real_image("headers_match_the_esxi_made_volume", "vmfs5-esxi") else {
        return;
    };
    let ours = cached_image(
        "small-bare",
        &small_tree(),
        &["--vmfs", "5", "--layout", "bare"],
    );

    let real = V5Image::open(&esxi, 0);
    real.assert_allocation_consistent("the checker disagrees with ESXi");
    let file4 = real.lookup("directory/file4");
    assert_eq!(
        (file4.zla, real.read(&file4, 0, 8)),
        (zla::RESIDENT, b"content\n".to_vec())
    );

    // LVM device header: magic, versions, diskBlockSize, numVolumes, dataOffset, numPEMaps.
    let (a, b) = (read_exact(&esxi, MIB, 0x100), read_exact(&ours, MIB, 0x100));
    for (o, w) in [
        (0, 4),
        (4, 4),
        (8, 4),
        (0x5a, 4),
        (0x66, 4),
        (0x7a, 8),
        (0xbe, 4),
    ] {
        assert_eq!(a[o..o + w], b[o..o + w], "LVM header field at {o:#x}");
    }
    // Volume descriptor: state, snapID, volumeID, firstPE, numDevs.
    let (a, b) = (
        read_exact(&esxi, MIB + 0x200, 0x100),
        read_exact(&ours, MIB + 0x200, 0x100),
    );
    for (o, w) in [(0x10, 4), (0x64, 4), (0x70, 4), (0x78, 8), (0x90, 4)] {
        assert_eq!(
            a[o..o + w],
            b[o..o + w],
            "volume descriptor field at {o:#x}"
        );
    }
    // PE 0.
    let (a, b) = (
        read_exact(&esxi, 0x18_0600, 0x80),
        read_exact(&ours, 0x18_0600, 0x80),
    );
    assert_eq!(a, b, "first PE table entry");
    // FS descriptor: magic, versions, config, block sizes, FDC geometry, sub-block size,
    // system descriptor addresses and their volume offsets.
    let lv = 0x110_0000;
    let (a, b) = (
        read_exact(&esxi, lv + 0x20_0000, 0x120),
        read_exact(&ours, lv + 0x20_0000, 0x120),
    );
    for (o, w) in [
        (0, 4),
        (4, 4),
        (8, 1),
        (0x19, 4),
        (0x9d, 4),
        (0xa1, 8),
        (0xd1, 4),
        (0xd5, 4),
        (0xd9, 4),
        (0xdd, 4),
        (0xe1, 8),
        (0xe9, 4),
        (0x105, 8),
        (0x10d, 4),
    ] {
        assert_eq!(a[o..o + w], b[o..o + w], "FS descriptor field at {o:#x}");
    }
    // The volume UUID the descriptor names is the LVM's.
    assert_eq!(b[0xb1..0xc1], read_exact(&ours, MIB + 0x254, 16)[..]);
    // System files: the same descriptors, types, modes, zla, first block and geometry.
    let fdc = lv + 4 * MIB;
    for index in 0..8u64 {
        let off = fdc + 0x2_0000 + index * 0x800 + 0x200;
        let (a, b) = (read_exact(&esxi, off, 0x200), read_exact(&ours, off, 0x200));
        assert_eq!(u32_at(&a, 0), u32_at(&b, 0), "descriptor {index} address");
        assert_eq!(u32_at(&a, 0xc), u32_at(&b, 0xc), "descriptor {index} type");
        assert_eq!(u32_at(&a, 0x44), u32_at(&b, 0x44), "descriptor {index} zla");
        assert_eq!(
            u64_at(&a, 0x1c),
            u64_at(&b, 0x1c),
            "descriptor {index} block size"
        );
        assert_eq!(a[0x89], b[0x89], "descriptor {index} blockOffsetShift");
        if index != 0 {
            assert_eq!(
                u32_at(&a, 0x40),
                u32_at(&b, 0x40),
                "descriptor {index} mode"
            );
        }
    }
    // `.sdd.sf` holds the same two entries (at block 12 in both volumes).
    assert_eq!(
        read_exact(&esxi, lv + 12 * MIB, 280),
        read_exact(&ours, lv + 12 * MIB, 280),
        ".sdd.sf entries"
    );
    for (name, block) in [
        ("fbb", 6u64),
        ("fdc", 4),
        ("pbc", 7),
        ("sbc", 8),
        ("pb2", 11),
    ] {
        let (a, b) = (
            read_exact(&esxi, lv + block * MIB, 0x1c),
            read_exact(&ours, lv + block * MIB, 0x1c),
        );
        // resourcesPerCluster, clustersPerGroup, clusterGroupOffset, resourceSize, groupSize.
        assert_eq!(a[..0x14], b[..0x14], "{name} resource header");
        let (a, b) = (
            read_exact(&esxi, lv + block * MIB + 0x1_0000, 8),
            read_exact(&ours, lv + block * MIB + 0x1_0000, 8),
        );
        assert_eq!(a, b, "{name} first cluster lock: magic and own offset");
    }
}

#[test]
fn dissect_vmfs_reads_the_same_trees_including_double_indirect() {
    // A third implementation: dissect.vmfs reads double-indirect files too, so here the 300 GiB
    // thin disk is read back by a reader that is not ours.
    if !have_dissect("dissect_vmfs_reads_the_same_trees_including_double_indirect") {
        return;
    }
    let (src, image) = vm_tree_image();
    assert_dissect_reads_back(&src, &[&image]);

    let huge = cached_image("huge", &huge_tree(), &["--vmfs", "5"]);
    let mut ranges: Vec<String> = huge_pieces()
        .iter()
        .map(|(o, _, n)| format!("{o}:{}", n.min(&64)))
        .collect();
    ranges.push(format!("{}:64", 100 * GIB));
    let lines = dissect_ranges(&[&huge], "/huge/huge-flat.vmdk", &ranges);
    for (i, (off, seed, len)) in huge_pieces().into_iter().enumerate() {
        let n = len.min(64);
        assert_eq!(
            lines[i],
            pattern(seed, len)[..n]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "dissect.vmfs at {off}"
        );
    }
    assert_eq!(lines[5], "00".repeat(64), "hole");
}
