//! mkvmfs --extent: one VMFS5 or VMFS6 volume spanning several LUN images, checked by other
//! implementations. vmfs-tools (`vmfs-fuse IMG1 IMG2 MNT`, `debugvmfs IMG1 IMG2 …`),
//! vmfs6-tools (`vmfs6-fuse IMG1 IMG2 MNT`) and dissect.vmfs (`LVM([dev1, dev2])`) assemble
//! the extents and must read the source tree back byte for byte, whatever order the images
//! are given in.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const MIB: u64 = 1 << 20;
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
        let vm = d.join("VMs/span-vm");
        fs::create_dir_all(&vm).unwrap();
        fs::write(
            vm.join("span-vm.vmx"),
            "displayName = \"span-vm\"\nscsi0:0.fileName = \"span-vm.vmdk\"\n",
        )
        .unwrap();
        fs::write(
            vm.join("span-vm.vmdk"),
            format!(
                "# Disk DescriptorFile\nversion=1\ncreateType=\"vmfs\"\nRW {} VMFS \"span-vm-flat.vmdk\"\n",
                blocks * MIB / 512
            ),
        )
        .unwrap();
        thin_file(
            &vm.join("span-vm-flat.vmdk"),
            blocks * MIB,
            &straddling_pieces(blocks),
        );
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
    if let Ok(entries) = fs::read_dir(&root) {
        for e in entries.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.starts_with(&format!("span-{name}-")) && !f.contains(&stamp) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
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

/// A vmfs-fuse mount of several extents, unmounted when dropped.
struct MultiMount {
    dir: tempfile::TempDir,
}

impl MultiMount {
    fn mount(images: &[&Path]) -> MultiMount {
        MultiMount::mount_with("vmfs-fuse", images)
    }

    /// Mounts `images` with `tool` (vmfs-fuse or vmfs6-fuse).
    fn mount_with(tool: &str, images: &[&Path]) -> MultiMount {
        let dir = tempfile::Builder::new()
            .prefix("mkvmfs-span-")
            .tempdir()
            .unwrap();
        let out = Command::new(tool)
            .args(images)
            .arg(dir.path())
            .output()
            .expect("run the FUSE reader");
        let m = MultiMount { dir };
        assert!(
            out.status.success(),
            "{tool} {images:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m
    }
}

impl Drop for MultiMount {
    fn drop(&mut self) {
        for _ in 0..20 {
            if Command::new("umount")
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success())
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn read(image: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fs::File::open(image)
        .unwrap()
        .read_exact_at(&mut buf, off)
        .unwrap();
    buf
}

/// Logical volume bytes `[off, off + len)` read through the extents' LVM headers (PE tables).
fn lv_read(images: &[PathBuf], partition: u64, off: u64, len: usize) -> Vec<u8> {
    for img in images {
        let h = read(img, partition + 0x10_0000, 0x400);
        let num_pes = u32_at(&h, 0x6a) as usize;
        let table = read(img, partition + 0x10_0000 + 0x8_0600, num_pes * 128);
        for e in table.chunks(128) {
            let (p, l, n) = (u64_at(e, 9), u64_at(e, 0x11), u64_at(e, 0x19));
            if e[0] == 1 && l <= off && off + len as u64 <= l + n {
                return read(img, partition + p + (off - l), len);
            }
        }
    }
    panic!("volume bytes at {off} are on no extent");
}

#[test]
fn lvm_headers_describe_one_volume_over_two_devices() {
    let (_, images) = two_extents();
    let heads: Vec<Vec<u8>> = images.iter().map(|i| read(i, 0x10_0000, 0x400)).collect();
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
        let e = read(img, 0x10_0000 + 0x8_0600, 128);
        assert_eq!(e[0], 1, "PE in use");
        assert_eq!(u64_at(&e, 9), DATA_OFFSET, "pOffset");
        assert_eq!(u64_at(&e, 0x11), l_off, "lOffset");
        assert_eq!(u64_at(&e, 0x19), PE, "length");
    }
    // The head lists both devices by name.
    let sd = read(&images[0], 0x10_0000 + 0x7_E200, 512);
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

#[test]
fn file_data_lands_on_the_second_extent() {
    let (_, images) = two_extents();
    // Every block of the thin disk starts with the second half of a straddling piece; find
    // those on lun2 (1 MiB steps over its data area).
    let pieces = straddling_pieces(400);
    let wanted: Vec<Vec<u8>> = pieces[1..]
        .iter()
        .map(|&(_, seed, len)| pattern(seed, len)[2048..].to_vec())
        .collect();
    let f = fs::File::open(&images[1]).unwrap();
    let mut found = 0;
    let mut buf = vec![0u8; 2048];
    for block in 0..PE / MIB {
        f.read_exact_at(&mut buf, DATA_OFFSET + block * MIB)
            .unwrap();
        if wanted.contains(&buf) {
            found += 1;
        }
    }
    assert!(
        found > 100,
        "only {found} blocks of the disk lie on the second extent"
    );
}

#[test]
fn two_extents_read_back_through_vmfs_fuse_in_either_order() {
    let test = "two_extents_read_back_through_vmfs_fuse_in_either_order";
    if !can_mount(test) {
        return;
    }
    let (src, images) = two_extents();
    let (a, b) = (images[0].as_path(), images[1].as_path());
    for order in [[a, b], [b, a]] {
        let m = MultiMount::mount(&order);
        let errors = compare_trees(&src, m.dir.path(), &[]);
        assert!(
            errors.is_empty(),
            "vmfs-fuse {order:?} sees a different tree:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn debugvmfs_lists_the_spanned_tree_with_consistent_bitmaps() {
    let test = "debugvmfs_lists_the_spanned_tree_with_consistent_bitmaps";
    if !can_mount(test) {
        return;
    }
    let (_, images) = two_extents();
    let out = Command::new("debugvmfs")
        .args(&images)
        .args(["ls", "-l", "/VMs/span-vm"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "debugvmfs ls: {text}");
    let disk = text
        .lines()
        .find(|l| l.ends_with(" span-vm-flat.vmdk"))
        .unwrap_or_else(|| panic!("no disk in debugvmfs ls:\n{text}"));
    assert!(disk.contains(&(400 * MIB).to_string()), "{disk}");

    let out = Command::new("debugvmfs")
        .args(&images)
        .arg("check_vol_bitmaps")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Total errors: 0"),
        "debugvmfs check_vol_bitmaps: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Walks the volume assembled by dissect.vmfs from all images given, printing `d PATH`,
/// `l SIZE PATH -> TARGET` and `f SIZE PATH SHA256` lines.
/// True when dissect.vmfs can be imported; else the test is skipped.
fn have_dissect(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import dissect.vmfs"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        testkit::skip(
            test,
            "python3 with dissect.vmfs is missing (pip install dissect.vmfs)",
        );
    }
    ok
}

/// Runs [`DISSECT_SCRIPT`] over `images` (in that order) and compares with the source tree.
fn check_dissect(src: &Path, images: &[&Path]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(DISSECT_SCRIPT)
        .args(images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dissect.vmfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    got.sort();
    assert_eq!(got, source_listing(src), "dissect.vmfs with {images:?}");
}

const DISSECT_SCRIPT: &str = r#"
import sys, hashlib
from dissect.vmfs import VMFS, LVM
lvm = LVM([open(p, 'rb') for p in sys.argv[1:]])
assert len(lvm.volumes) == 1, lvm.volumes
fs = VMFS(lvm.volumes[0].open())
def walk(d, path):
    for name, entry in sorted(d.listdir().items()):
        if name in ('.', '..') or (path == '' and name.endswith('.sf')):
            continue
        p = path + '/' + name
        fd = entry.file_descriptor
        if fd.is_dir():
            print('d', p)
            walk(fd, p)
        elif fd.is_symlink():
            print('l', fd.size, p, '->', fd.link)
        else:
            h = hashlib.sha256()
            s = fd.open()
            while True:
                b = s.read(1 << 20)
                if not b:
                    break
                h.update(b)
            print('f', fd.size, p, h.hexdigest())
walk(fs.root, '')
"#;

/// The listing [`DISSECT_SCRIPT`] prints, made from the source tree.
fn source_listing(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = format!("{rel}/{}", n.to_string_lossy());
            let full = dir.join(&n);
            let m = fs::symlink_metadata(&full).unwrap();
            if m.is_dir() {
                out.push(format!("d {p}"));
                walk(&full, &p, out);
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&full).unwrap();
                out.push(format!("l {} {p} -> {}", m.len(), t.to_string_lossy()));
            } else {
                let sha = testkit::sha256_reader(fs::File::open(&full).unwrap());
                out.push(format!("f {} {p} {sha}", m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}

#[test]
fn dissect_vmfs_assembles_the_extents_in_either_order() {
    if !have_dissect("dissect_vmfs_assembles_the_extents_in_either_order") {
        return;
    }
    let (src, images) = two_extents();
    let (a, b) = (images[0].as_path(), images[1].as_path());
    for order in [[a, b], [b, a]] {
        check_dissect(&src, &order);
    }
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
        let mbr = read(img, 0, 512);
        assert_eq!(mbr[446 + 4], 0xfb, "MBR partition type");
        assert_eq!(u32_at(&read(img, MIB + 0x10_0000, 4), 0), 0xC001_D00D);
    }
    let firsts: Vec<u64> = images
        .iter()
        .map(|i| u64_at(&read(i, MIB + 0x10_0000 + 0x278, 8), 0))
        .collect();
    assert_eq!(firsts, [0, 1, 2], "firstPE of each extent");
    // The disk's last block lies on the third extent.
    let last = 600 - 1;
    let tail = pattern(500 + last, 4096)[2048..].to_vec();
    let f = fs::File::open(&images[2]).unwrap();
    let mut buf = vec![0u8; 2048];
    let on_third = (0..PE / MIB).any(|b| {
        f.read_exact_at(&mut buf, MIB + DATA_OFFSET + b * MIB)
            .unwrap();
        buf == tail
    });
    assert!(on_third, "the disk's last block is not on the third extent");

    let order = [&images[2], &images[0], &images[1]].map(|p| p.as_path());
    let m = MultiMount::mount(&order);
    let errors = compare_trees(&src, m.dir.path(), &[]);
    assert!(
        errors.is_empty(),
        "vmfs-fuse sees a different tree:\n{}",
        errors.join("\n")
    );
}

#[test]
fn bad_extent_options_give_one_clear_error_line() {
    let src = span_tree("span2", 400);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--vmfs".into(),
                "6".into(),
                "--extent".into(),
                b.display().to_string(),
                "--extent-size".into(),
                (100 * MIB).to_string(),
            ],
            "--extent-size leaves no room",
        ),
        (
            vec![
                "--vmfs".into(),
                "5".into(),
                "--extent-size".into(),
                "300000000".into(),
            ],
            "--extent-size needs",
        ),
        (
            vec![
                "--vmfs".into(),
                "5".into(),
                "--extent".into(),
                a.display().to_string(),
            ],
            "named twice",
        ),
        (
            vec![
                "--vmfs".into(),
                "5".into(),
                "--extent".into(),
                b.display().to_string(),
                "--extent-size".into(),
                (100 * MIB).to_string(),
            ],
            "--extent-size leaves no room",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(mkvmfs_bin())
            .args(&args)
            .arg(&src)
            .arg(&a)
            .output()
            .unwrap();
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
    if !testkit::is_root() {
        testkit::skip(test, "FUSE mounts need root");
        return false;
    }
    if !testkit::have_tool("vmfs6-fuse") {
        testkit::skip(
            test,
            "vmfs6-fuse (Debian package vmfs6-tools) is not installed",
        );
        return false;
    }
    true
}

#[test]
fn vmfs6_lvm_headers_describe_one_volume_over_two_devices() {
    let (_, images) = two_v6_extents();
    let dev = |i: usize| read(&images[i], 0x10_0000, 0x200);
    let vol = |i: usize| read(&images[i], 0x10_0000 + LVM6_VOL_TABLE, 0x200);
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
        let e = read(image, 0x10_0000 + LVM6_PE_TABLE, 0x25);
        assert_eq!(e[0], 1, "PE in use");
        assert_eq!(u64_at(&e, 9), DATA_OFFSET, "pOffset");
        assert_eq!(u64_at(&e, 0x11), i as u64 * PE, "lOffset");
        assert_eq!(u64_at(&e, 0x19), PE, "length");
    }
    assert_eq!(vol(0)[0x54..0x64], vol(1)[0x54..0x64], "one volume UUID");
    assert_eq!(vol(0)[0x14..0x37], vol(1)[0x14..0x37], "one volume name");
    assert_ne!(dev(0)[0x82..0x92], dev(1)[0x82..0x92], "own device UUIDs");
    let sd = read(&images[0], 0x10_0000 + LVM6_SD_TABLE, 512);
    assert!(sd.starts_with(b"mkvmfs:lun1.img:1\0"), "{:?}", &sd[..32]);
    assert!(sd[256..].starts_with(b"mkvmfs:lun2.img:1\0"));
    assert!(
        read(&images[1], 0x10_0000 + LVM6_SD_TABLE, 512)
            .iter()
            .all(|&b| b == 0),
        "only the head extent lists the devices"
    );
}

#[test]
fn vmfs6_file_data_lands_on_the_second_extent() {
    let (_, images) = two_v6_extents();
    let wanted: Vec<Vec<u8>> = straddling_pieces(400)[1..]
        .iter()
        .map(|&(_, seed, len)| pattern(seed, len)[2048..].to_vec())
        .collect();
    let f = fs::File::open(&images[1]).unwrap();
    let mut buf = vec![0u8; 2048];
    let found = (0..PE / MIB)
        .filter(|b| {
            f.read_exact_at(&mut buf, DATA_OFFSET + b * MIB).unwrap();
            wanted.contains(&buf)
        })
        .count();
    assert!(
        found > 100,
        "only {found} blocks of the disk lie on the second extent"
    );
}

#[test]
fn vmfs6_two_extents_read_back_through_vmfs6_fuse_in_either_order() {
    if !have_vmfs6_fuse("vmfs6_two_extents_read_back_through_vmfs6_fuse_in_either_order") {
        return;
    }
    let (src, images) = two_v6_extents();
    let (a, b) = (images[0].as_path(), images[1].as_path());
    for order in [[a, b], [b, a]] {
        let m = MultiMount::mount_with("vmfs6-fuse", &order);
        let errors = compare_trees(&src, m.dir.path(), &[]);
        assert!(
            errors.is_empty(),
            "vmfs6-fuse {order:?} sees a different tree:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn vmfs6_dissect_vmfs_assembles_the_extents_in_either_order() {
    if !have_dissect("vmfs6_dissect_vmfs_assembles_the_extents_in_either_order") {
        return;
    }
    let (src, images) = two_v6_extents();
    let (a, b) = (images[0].as_path(), images[1].as_path());
    for order in [[a, b], [b, a]] {
        check_dissect(&src, &order);
    }
}
