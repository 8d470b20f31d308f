//! A spanned volume, synthesised from the ESXi VMFS5 sample: the logical volume is cut in two
//! PEs on two devices with their own LVM headers (new device UUID, firstPE/lastPE, numDevs 2).
//! Both given: the tree reads back intact. One missing: an error naming the volume and the
//! missing extent. A device of another volume: refused.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fscore::{FileMapping, FileType, Filesystem, FsError};
use lun::ReadAt;
use vmfs::{Vmfs, VmfsError};

use common::{check_extents, read_all, source, walk};

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x110_0000;
/// Where the volume is cut: the FS header and FD region stay on the head extent, most file
/// data lands on the second.
const SPLIT: u64 = 0x50_0000;
/// LVM5 layout: PE table of map 0 (see docs/formats/vmfs.md).
const PE_TABLE: u64 = HDR + 524_800 + 1024;
const VOL_DESC: u64 = HDR + 512;

fn put_u32(f: &File, off: u64, v: u32) {
    f.write_all_at(&v.to_le_bytes(), off).unwrap();
}
fn put_u64(f: &File, off: u64, v: u64) {
    f.write_all_at(&v.to_le_bytes(), off).unwrap();
}

/// Copies `len` bytes from `src` at `from` to `dst` at `to`, leaving zero chunks sparse.
fn copy_sparse(src: &File, from: u64, dst: &File, to: u64, len: u64) {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], from + done).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], to + done).unwrap();
        }
        done += n as u64;
    }
}

fn make_extent(img: &Path, out: &Path, index: u32) {
    let src = File::open(img).unwrap();
    let mut vol_size = [0u8; 8];
    src.read_exact_at(&mut vol_size, VOL_DESC).unwrap();
    let vol_size = u64::from_le_bytes(vol_size);
    let (lo, len) = if index == 0 {
        (0, SPLIT)
    } else {
        (SPLIT, vol_size - SPLIT)
    };
    let dst = File::create(out).unwrap();
    dst.set_len(DATA + len).unwrap();
    // The LVM header region (device header, volume table, SD table, PE map 0).
    copy_sparse(&src, 0, &dst, 0, DATA);
    copy_sparse(&src, DATA + lo, &dst, DATA, len);
    // Device: its own UUID and size.
    let mut dev_id = [0u8; 16];
    src.read_exact_at(&mut dev_id, HDR + 0x82).unwrap();
    dev_id[0] ^= 0x55 + index as u8;
    dst.write_all_at(&dev_id, HDR + 0x82).unwrap();
    put_u64(&dst, HDR + 0x5e, DATA + len - HDR);
    // Volume descriptor: this device holds PE `index`; the volume spans two devices.
    put_u64(&dst, VOL_DESC + 0x78, index as u64);
    put_u64(&dst, VOL_DESC + 0x80, index as u64);
    put_u32(&dst, VOL_DESC + 0x90, 2);
    // PE entry 0 of this device.
    dst.write_all_at(&[1], PE_TABLE).unwrap();
    put_u32(&dst, PE_TABLE + 1, index);
    put_u64(&dst, PE_TABLE + 9, DATA);
    put_u64(&dst, PE_TABLE + 17, lo);
    put_u64(&dst, PE_TABLE + 25, len);
    dst.sync_all().ok();
}

fn extents(test: &str) -> Option<(PathBuf, PathBuf)> {
    let img = testkit::real_image(test, "vmfs5-esxi")?;
    let dir = testkit::fixture_dir("vmfs-reader");
    let mut out = Vec::new();
    for i in 0..2u32 {
        let p = dir.join(format!("span5-{i}.img"));
        let img = img.clone();
        out.push(testkit::cached_fixture(&p, move |tmp| {
            make_extent(&img, tmp, i)
        }));
    }
    Some((out[0].clone(), out[1].clone()))
}

#[test]
fn spanned_volume_reads_back_intact() {
    let Some((a, b)) = extents("spanned_volume_reads_back_intact") else {
        return;
    };
    // Order of the devices does not matter.
    let fs = Vmfs::open(vec![source(&b), source(&a)]).expect("open spanned");
    let manifest = testkit::real_manifest("vmfs5-esxi");
    let tree = walk(&fs, false);
    let mut on_second = false;
    for m in &manifest {
        let (t, id) = &tree[&m.path];
        if *t == FileType::Symlink {
            assert_eq!(
                fs.metadata(id).unwrap().symlink_target.unwrap(),
                m.digest_or_target
            );
            continue;
        }
        let data = read_all(&fs, id);
        assert_eq!(testkit::sha256_hex(&data), m.digest_or_target, "{}", m.path);
        check_extents(&fs, id, &data);
        if let FileMapping::Mapped(map) = fs.extents(id).unwrap() {
            for e in map.extents() {
                if let Some(p) = e.physical {
                    let (dev, off) = fs.locate(p);
                    // Device index follows the order given to open(): b is index 0.
                    let path = if dev == 0 { &b } else { &a };
                    let mut got = vec![0; e.length as usize];
                    source(path).read_exact_at(off, &mut got).unwrap();
                    assert_eq!(&got[..], &data[e.logical as usize..e.end() as usize]);
                    on_second |= path == &b;
                }
            }
        }
    }
    assert!(
        on_second,
        "no file data landed on the second extent; move SPLIT"
    );
    assert_eq!(fs.info().uuid, "61137dd5-df6bc2c8-f0e7-000c29801686");
}

#[test]
fn missing_extent_is_named() {
    let Some((a, b)) = extents("missing_extent_is_named") else {
        return;
    };
    for given in [&a, &b] {
        let err = Vmfs::open(vec![source(given)]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, VmfsError::MissingExtent { .. }), "{msg}");
        assert!(msg.contains("61137dd5-d0727810-7ac2-000c29801686"), "{msg}");
        assert!(msg.contains("1 of 2 extents"), "{msg}");
        let fs_err: FsError = err.into();
        assert_eq!(fs_err.kind(), "missing-extent");
    }
}

#[test]
fn unrelated_devices_are_refused() {
    let test = "unrelated_devices_are_refused";
    let Some((a, _)) = extents(test) else { return };
    let Some(v6) = testkit::real_image(test, "vmfs6-esxi") else {
        return;
    };
    let err = Vmfs::open(vec![source(&a), source(&v6)]).unwrap_err();
    assert!(matches!(err, VmfsError::VolumeMismatch { .. }), "{err}");
    let Some(v5) = testkit::real_image(test, "vmfs5-esxi") else {
        return;
    };
    let err = Vmfs::open(vec![source(&v5), source(&v5)]).unwrap_err();
    assert!(err.to_string().contains("same LVM device"), "{err}");
}
