//! mkvmfs --extent: one VMFS5 or VMFS6 volume spanning several LUN images, checked by other
//! implementations. vmfs-tools (`vmfs-fuse IMG1 IMG2 MNT`, `debugvmfs IMG1 IMG2 …`),
//! vmfs6-tools (`vmfs6-fuse IMG1 IMG2 MNT`) and dissect.vmfs (`LVM([dev1, dev2])`) assemble
//! the extents and must read the source tree back byte for byte, whatever order the images
//! are given in.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use common::dissect::{assert_dissect_reads_back, have_dissect};
use common::mount::{
    FuseMount, assert_same_tree, can_mount, debugvmfs, debugvmfs_bitmaps_ok, fuse_tools_ready,
};
use common::*;

/// Partition offset of logical volume byte 0 on every extent.
const DATA_OFFSET: u64 = 0x110_0000;
/// One LVM physical extent.
const PE: u64 = 256 * MIB;

/// A datastore-shaped tree whose thin disk allocates `blocks` file blocks of 1 MiB: a 4 KiB
/// piece straddles every block boundary, so the file's data crosses each extent boundary
/// while the images stay small on the host.
fn span_tree(name: &str, blocks: u64) -> PathBuf {
    let path = testkit::fixture_dir("mkvmfs").join(format!("src-{name}-v1"));
    testkit::cached_fixture(&path, |d| {
        vm_folder(d, "span-vm", blocks * MIB, &straddling_pieces(blocks));
        // Sorted after `VMs`, so allocated after the disk: on the last extent.
        fs::write(
            d.join("after-the-disk.bin"),
            pattern(77, 3 * MIB as usize + 5),
        )
        .unwrap();
        fs::write(
            d.join("resident.txt"),
            b"small enough to live in its descriptor\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("VMs/span-vm/span-vm.vmx", d.join("config-link")).unwrap();
    })
}

/// (offset, seed, len) of the pieces of the thin disk: 4 KiB across each block boundary.
fn straddling_pieces(blocks: u64) -> Vec<(u64, u64, usize)> {
    let mut v = vec![(0, 500, 2048)];
    v.extend((1..blocks).map(|i| (i * MIB - 2048, 500 + i, 4096)));
    v
}

/// Images of a spanned volume, built once per writer binary: `<dir>/lun1.img` (head extent)
/// and `<dir>/lun2.img`… Older builds of the same fixture are removed.
fn spanned_images(name: &str, src: &Path, extents: usize, args: &[&str]) -> Vec<PathBuf> {
    let root = testkit::fixture_dir("mkvmfs");
    let stamp = writer_stamp();
    testkit::stamp::remove_stale(&root, &format!("span-{name}-"), "", &stamp);
    let dir = root.join(format!("span-{name}-{stamp}"));
    let names: Vec<String> = (1..=extents).map(|i| format!("lun{i}.img")).collect();
    testkit::cached_fixture(&dir, |tmp| {
        fs::create_dir_all(tmp).unwrap();
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        for n in &names[1..] {
            all.push("--extent".into());
            all.push(tmp.join(n).to_string_lossy().into_owned());
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        mkvmfs(&refs, src, &tmp.join(&names[0]));
    });
    names.iter().map(|n| dir.join(n)).collect()
}

fn two_extents() -> (PathBuf, Vec<PathBuf>) {
    let src = span_tree("span2", 400);
    let images = spanned_images("two", &src, 2, &["--vmfs", "5", "--label", "spanned"]);
    (src, images)
}

/// The two orders in which the extents of a two-LUN volume can be given.
fn both_orders(images: &[PathBuf]) -> [[&Path; 2]; 2] {
    let (a, b) = (images[0].as_path(), images[1].as_path());
    [[a, b], [b, a]]
}

/// Asserts that `tool` (vmfs-fuse or vmfs6-fuse) reads `src` back from the two-LUN volume on
/// `images`, given in either order.
fn assert_fuse_reads_back_in_either_order(tool: &str, src: &Path, images: &[PathBuf]) {
    for order in both_orders(images) {
        let m = FuseMount::mount_with(tool, &order);
        assert_same_tree(src, m.path(), &[], &format!("{tool} {order:?}"));
    }
}

/// Asserts that dissect.vmfs reads `src` back from the two-LUN volume on `images`, given in
/// either order.
fn assert_dissect_reads_back_in_either_order(src: &Path, images: &[PathBuf]) {
    for order in both_orders(images) {
        assert_dissect_reads_back(src, &order);
    }
}

/// The second halves of the thin disk's straddling pieces: what each of its blocks after the
/// first starts with.
fn block_heads(blocks: u64) -> Vec<Vec<u8>> {
    straddling_pieces(blocks)[1..]
        .iter()
        .map(|&(_, seed, len)| pattern(seed, len)[2048..].to_vec())
        .collect()
}

/// How many of the one-PE data area's 1 MiB blocks, starting `data_start` bytes into `image`,
/// begin with one of `heads`.
fn blocks_starting_with(image: &Path, data_start: u64, heads: &[Vec<u8>]) -> usize {
    (0..PE / MIB)
        .filter(|b| heads.contains(&read_exact(image, data_start + b * MIB, 2048)))
        .count()
}

/// Logical volume bytes `[off, off + len)` read through the extents' LVM headers (PE tables).
fn lv_read(images: &[PathBuf], partition: u64, off: u64, len: usize) -> Vec<u8> {
    for img in images {
        let h = read_exact(img, partition + 0x10_0000, 0x400);
        let num_pes = u32_at(&h, 0x6a) as usize;
        let table = read_exact(img, partition + 0x10_0000 + 0x8_0600, num_pes * 128);
        for e in table.chunks(128) {
            let (p, l, n) = (u64_at(e, 9), u64_at(e, 0x11), u64_at(e, 0x19));
            if e[0] == 1 && l <= off && off + len as u64 <= l + n {
                return read_exact(img, partition + p + (off - l), len);
            }
        }
    }
    panic!("volume bytes at {off} are on no extent");
}

#[test]
fn lvm_headers_describe_one_volume_over_two_devices() {
    let (_, images) = two_extents();
    let heads: Vec<Vec<u8>> = images
        .iter()
        .map(|i| read_exact(i, 0x10_0000, 0x400))
        .collect();
    let (a, b) = (&heads[0], &heads[1]);
    for h in &heads {
        assert_eq!(u32_at(h, 0), 0xC001_D00D, "LVM magic");
        assert_eq!(u32_at(h, 0x66), 1, "numVolumes");
        assert_eq!(u64_at(h, 0x7a), DATA_OFFSET, "dataOffset");
        assert_eq!(u64_at(h, 0x200), 2 * PE, "logicalSize: the whole volume");
        assert_eq!(u64_at(h, 0x208), 2 + 2, "generation: PEs + extents");
        assert_eq!(u32_at(h, 0x290), 2, "numDevs");
        assert_eq!(u32_at(h, 0x274), 1, "numPEs on the device");
    }
    assert_eq!(a[0x254..0x264], b[0x254..0x264], "one volume UUID");
    assert_ne!(a[0x82..0x92], b[0x82..0x92], "own device UUIDs");
    assert_eq!((u64_at(a, 0x278), u64_at(a, 0x280)), (0, 0), "head: PE 0");
    assert_eq!((u64_at(b, 0x278), u64_at(b, 0x280)), (1, 1), "second: PE 1");
    // PE tables: same device offset, the volume offset of each device's PE.
    for (img, l_off) in images.iter().zip([0, PE]) {
        let e = read_exact(img, 0x10_0000 + 0x8_0600, 128);
        assert_eq!(e[0], 1, "PE in use");
        assert_eq!(u64_at(&e, 9), DATA_OFFSET, "pOffset");
        assert_eq!(u64_at(&e, 0x11), l_off, "lOffset");
        assert_eq!(u64_at(&e, 0x19), PE, "length");
    }
    // The head lists both devices by name.
    let sd = read_exact(&images[0], 0x10_0000 + 0x7_E200, 512);
    assert!(sd.starts_with(b"mkvmfs:lun1.img:1\0"), "{:?}", &sd[..32]);
    assert!(
        sd[256..].starts_with(b"mkvmfs:lun2.img:1\0"),
        "{:?}",
        &sd[256..288]
    );
    // The descriptor names the LVM volume.
    let desc = lv_read(&images, 0, 0x20_0000, 0x200);
    assert_eq!(u32_at(&desc, 0), 0x2FAB_F15E);
    assert_eq!(
        desc[0xb1..0xc1],
        a[0x254..0x264],
        "FS3 volInfo = LVM volume UUID"
    );
}

/// Asserts that over 100 blocks of the 400-block thin disk lie on the second extent.
fn assert_disk_reaches_the_second_extent(images: &[PathBuf]) {
    // Every block of the thin disk starts with the second half of a straddling piece; find
    // those on lun2 (1 MiB steps over its data area).
    let found = blocks_starting_with(&images[1], DATA_OFFSET, &block_heads(400));
    assert!(
        found > 100,
        "only {found} blocks of the disk lie on the second extent"
    );
}

#[test]
fn file_data_lands_on_the_second_extent() {
    assert_disk_reaches_the_second_extent(&two_extents().1);
}

#[test]
fn two_extents_read_back_through_vmfs_fuse_in_either_order() {
    let test = "two_extents_read_back_through_vmfs_fuse_in_either_order";
    if !can_mount(test) {
        return;
    }
    let (src, images) = two_extents();
    assert_fuse_reads_back_in_either_order("vmfs-fuse", &src, &images);
}

#[test]
fn debugvmfs_lists_the_spanned_tree_with_consistent_bitmaps() {
    let test = "debugvmfs_lists_the_spanned_tree_with_consistent_bitmaps";
    if !can_mount(test) {
        return;
    }
    let (_, images) = two_extents();
    let out = debugvmfs(&images, &["ls", "-l", "/VMs/span-vm"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "debugvmfs ls: {text}");
    let disk = text
        .lines()
        .find(|l| l.ends_with(" span-vm-flat.vmdk"))
        .unwrap_or_else(|| panic!("no disk in debugvmfs ls:\n{text}"));
    assert!(disk.contains(&(400 * MIB).to_string()), "{disk}");

    debugvmfs_bitmaps_ok(&images);
}

#[test]
fn dissect_vmfs_assembles_the_extents_in_either_order() {
    if !have_dissect("dissect_vmfs_assembles_the_extents_in_either_order") {
        return;
    }
    let (src, images) = two_extents();
    assert_dissect_reads_back_in_either_order(&src, &images);
}

#[test]
fn three_extents_with_mbr_layout_and_explicit_sizes_read_back() {
    let test = "three_extents_with_mbr_layout_and_explicit_sizes_read_back";
    if !can_mount(test) {
        return;
    }
    // 300 MiB images hold one 256 MiB PE each; 600 allocated blocks reach the third extent.
    let src = span_tree("span3", 600);
    let size = (300 * MIB).to_string();
    let images = spanned_images(
        "three-mbr",
        &src,
        3,
        &[
            "--vmfs",
            "5",
            "--layout",
            "mbr",
            "--size",
            &size,
            "--extent-size",
            &size,
        ],
    );
    for img in &images {
        assert_eq!(
            fs::metadata(img).unwrap().len(),
            300 * MIB,
            "{}",
            img.display()
        );
        let mbr = read_exact(img, 0, 512);
        assert_eq!(mbr[446 + 4], 0xfb, "MBR partition type");
        assert_eq!(u32_at(&read_exact(img, MIB + 0x10_0000, 4), 0), 0xC001_D00D);
    }
    let firsts: Vec<u64> = images
        .iter()
        .map(|i| u64_at(&read_exact(i, MIB + 0x10_0000 + 0x278, 8), 0))
        .collect();
    assert_eq!(firsts, [0, 1, 2], "firstPE of each extent");
    // The disk's last block lies on the third extent.
    let last = block_heads(600).pop().unwrap();
    let on_third = blocks_starting_with(&images[2], MIB + DATA_OFFSET, &[last]);
    assert!(
        on_third > 0,
        "the disk's last block is not on the third extent"
    );

    let order = [&images[2], &images[0], &images[1]].map(|p| p.as_path());
    let m = FuseMount::mount_with("vmfs-fuse", &order);
    assert_same_tree(&src, m.path(), &[], "vmfs-fuse");
}

#[test]
fn bad_extent_options_give_one_clear_error_line() {
    let src = span_tree("span2", 400);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    let (a_arg, b_arg) = (a.to_str().unwrap(), b.to_str().unwrap());
    let small = (100 * MIB).to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--vmfs", "6", "--extent", b_arg, "--extent-size", &small],
            "--extent-size leaves no room",
        ),
        (
            &["--vmfs", "5", "--extent-size", "300000000"],
            "--extent-size needs",
        ),
        (&["--vmfs", "5", "--extent", a_arg], "named twice"),
        (
            &["--vmfs", "5", "--extent", b_arg, "--extent-size", &small],
            "--extent-size leaves no room",
        ),
    ];
    for (args, want) in cases {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend([src.as_os_str(), a.as_os_str()]);
        let out = mkvmfs_output(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
}

// VMFS6: the same volume shape with the LVM6 header layout (tables aligned to mdAlignment
// 4096: volume table at +0x1000, device names at +0x7f000, PE bitmap at +0x81000, PE table at
// +0x82000) and one PE entry per device covering its 256 MiB segments.

/// LVM6 volume table, relative to the device header.
const LVM6_VOL_TABLE: u64 = 0x1000;
/// LVM6 device-name table.
const LVM6_SD_TABLE: u64 = 0x7_F000;
/// LVM6 PE table.
const LVM6_PE_TABLE: u64 = 0x8_2000;
/// A bare image holding the 17 MiB LVM header and exactly one 256 MiB segment. mkvmfs sizes
/// a VMFS6 volume with slack for its metadata, which would keep a small tree on the head
/// extent; one segment per image makes the 400-block disk cross onto the second.
const ONE_SEGMENT_IMAGE: u64 = DATA_OFFSET + PE;

fn two_v6_extents() -> (PathBuf, Vec<PathBuf>) {
    let src = span_tree("span2", 400);
    let size = ONE_SEGMENT_IMAGE.to_string();
    let images = spanned_images(
        "v6-two",
        &src,
        2,
        &["--vmfs", "6", "--label", "spanned6", "--size", &size],
    );
    (src, images)
}

fn have_vmfs6_fuse(test: &str) -> bool {
    fuse_tools_ready(test, &["vmfs6-fuse"], "vmfs6-tools")
}

#[test]
fn vmfs6_lvm_headers_describe_one_volume_over_two_devices() {
    let (_, images) = two_v6_extents();
    let dev = |i: usize| read_exact(&images[i], 0x10_0000, 0x200);
    let vol = |i: usize| read_exact(&images[i], 0x10_0000 + LVM6_VOL_TABLE, 0x200);
    for (i, image) in images.iter().enumerate() {
        let (h, v) = (dev(i), vol(i));
        assert_eq!(u32_at(&h, 0), 0xC001_D00D, "LVM magic");
        assert_eq!(u32_at(&h, 4), 6, "majorVersion");
        assert_eq!(u32_at(&h, 0xca), 4096, "mdAlignment");
        assert_eq!(u64_at(&h, 0x7a), DATA_OFFSET, "dataOffset");
        assert_eq!(u64_at(&h, 0x5e), ONE_SEGMENT_IMAGE, "totalBytes");
        assert_eq!(u64_at(&v, 0), 2 * PE, "logicalSize: the whole volume");
        assert_eq!(u32_at(&v, 0x90), 2, "numDevs");
        assert_eq!(u32_at(&v, 0x74), 1, "segments on the device");
        assert_eq!(
            (u64_at(&v, 0x78), u64_at(&v, 0x80)),
            (i as u64, i as u64),
            "firstPE, lastPE of device {i}"
        );
        let e = read_exact(image, 0x10_0000 + LVM6_PE_TABLE, 0x25);
        assert_eq!(e[0], 1, "PE in use");
        assert_eq!(u64_at(&e, 9), DATA_OFFSET, "pOffset");
        assert_eq!(u64_at(&e, 0x11), i as u64 * PE, "lOffset");
        assert_eq!(u64_at(&e, 0x19), PE, "length");
    }
    assert_eq!(vol(0)[0x54..0x64], vol(1)[0x54..0x64], "one volume UUID");
    assert_eq!(vol(0)[0x14..0x37], vol(1)[0x14..0x37], "one volume name");
    assert_ne!(dev(0)[0x82..0x92], dev(1)[0x82..0x92], "own device UUIDs");
    let sd = read_exact(&images[0], 0x10_0000 + LVM6_SD_TABLE, 512);
    assert!(sd.starts_with(b"mkvmfs:lun1.img:1\0"), "{:?}", &sd[..32]);
    assert!(sd[256..].starts_with(b"mkvmfs:lun2.img:1\0"));
    assert!(
        read_exact(&images[1], 0x10_0000 + LVM6_SD_TABLE, 512)
            .iter()
            .all(|&b| b == 0),
        "only the head extent lists the devices"
    );
}

#[test]
fn vmfs6_file_data_lands_on_the_second_extent() {
    assert_disk_reaches_the_second_extent(&two_v6_extents().1);
}

#[test]
fn vmfs6_two_extents_read_back_through_vmfs6_fuse_in_either_order() {
    if !have_vmfs6_fuse("vmfs6_two_extents_read_back_through_vmfs6_fuse_in_either_order") {
        return;
    }
    let (src, images) = two_v6_extents();
    assert_fuse_reads_back_in_either_order("vmfs6-fuse", &src, &images);
}

#[test]
fn vmfs6_dissect_vmfs_assembles_the_extents_in_either_order() {
    if !have_dissect("vmfs6_dissect_vmfs_assembles_the_extents_in_either_order") {
        return;
    }
    let (src, images) = two_v6_extents();
    assert_dissect_reads_back_in_either_order(&src, &images);
}
