//! Real virtual disks made by qemu-img (VMDK monolithicSparse / streamOptimized /
//! twoGbMaxExtentSparse / monolithicFlat with a backing chain, VHDX, VHD), parsed by the
//! inventory and checked against `qemu-img info`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use inventory::{Role, vhd, vhdx, vmdk};
use lun::MemSource;

/// A fresh directory of qemu-img made disks, or None (skip) without qemu-img.
fn images(test: &str) -> Option<tempfile::TempDir> {
    if !testkit::have_tool("qemu-img") {
        testkit::skip(
            test,
            "qemu-img is not installed (apt-get install qemu-utils)",
        );
        return None;
    }
    Some(tempfile::tempdir().unwrap())
}

fn qemu(dir: &Path, args: &[&str]) {
    testkit::run(Command::new("qemu-img").current_dir(dir).args(args));
}

/// `qemu-img info --output=json` of a file.
fn info(path: &Path) -> serde_json::Value {
    let out = testkit::run(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(path),
    );
    serde_json::from_slice(&out).unwrap()
}

fn embedded_descriptor(path: &Path) -> (vmdk::SparseHeader, vmdk::Descriptor) {
    let bytes = std::fs::read(path).unwrap();
    let vmdk::Probe::Sparse(h) = vmdk::probe(&bytes[..512]) else {
        panic!("{path:?} is not a sparse extent");
    };
    let (off, len) = h
        .descriptor_range(bytes.len() as u64)
        .unwrap()
        .expect("embedded descriptor");
    let d = vmdk::parse_descriptor(&bytes[off as usize..(off + len) as usize]).unwrap();
    (h, d)
}

#[test]
fn monolithic_sparse_and_stream_optimized_embedded_descriptors() {
    let Some(t) = images("monolithic_sparse_and_stream_optimized_embedded_descriptors") else {
        return;
    };
    let dir = t.path();
    qemu(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicSparse",
            "base.vmdk",
            "100M",
        ],
    );
    qemu(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "base.vmdk",
            "-F",
            "vmdk",
            "child.vmdk",
        ],
    );
    qemu(
        dir,
        &[
            "convert",
            "-q",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            "base.vmdk",
            "stream.vmdk",
        ],
    );

    let (h, base) = embedded_descriptor(&dir.join("base.vmdk"));
    assert_eq!(base.create_type.as_deref(), Some("monolithicSparse"));
    assert_eq!(
        base.capacity(),
        info(&dir.join("base.vmdk"))["virtual-size"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(h.capacity * 512, base.capacity());
    assert!(!h.unclean_shutdown);
    assert_eq!(base.extents[0].file_name.as_deref(), Some("base.vmdk"));

    let (_, child) = embedded_descriptor(&dir.join("child.vmdk"));
    assert!(child.has_parent());
    assert_eq!(child.parent_file_name_hint.as_deref(), Some("base.vmdk"));
    assert_eq!(
        child.parent_cid, base.cid,
        "the child records its parent's CID"
    );
    let backing = info(&dir.join("child.vmdk"));
    assert_eq!(backing["backing-filename"].as_str(), Some("base.vmdk"));

    let (hs, stream) = embedded_descriptor(&dir.join("stream.vmdk"));
    assert_eq!(stream.create_type.as_deref(), Some("streamOptimized"));
    assert_eq!(hs.compress_algorithm, 1);
    assert_eq!(stream.capacity(), 100 << 20);
}

#[test]
fn split_and_flat_descriptors() {
    let Some(t) = images("split_and_flat_descriptors") else {
        return;
    };
    let dir = t.path();
    qemu(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            "split.vmdk",
            "5G",
        ],
    );
    qemu(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            "flat.vmdk",
            "8M",
        ],
    );
    let split = vmdk::parse_descriptor(&std::fs::read(dir.join("split.vmdk")).unwrap()).unwrap();
    assert_eq!(split.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
    assert_eq!(split.extents.len(), 3);
    for e in &split.extents {
        assert!(dir.join(e.file_name.as_ref().unwrap()).is_file());
    }
    assert_eq!(
        split.capacity(),
        info(&dir.join("split.vmdk"))["virtual-size"]
            .as_u64()
            .unwrap()
    );
    let flat = vmdk::parse_descriptor(&std::fs::read(dir.join("flat.vmdk")).unwrap()).unwrap();
    assert_eq!(flat.extents[0].kind, "FLAT");
    assert_eq!(flat.extents[0].file_name.as_deref(), Some("flat-flat.vmdk"));
}

#[test]
fn vhdx_and_vhd_headers_from_qemu() {
    let Some(t) = images("vhdx_and_vhd_headers_from_qemu") else {
        return;
    };
    let dir = t.path();
    qemu(dir, &["create", "-q", "-f", "vhdx", "disk.vhdx", "3G"]);
    qemu(dir, &["create", "-q", "-f", "vpc", "dyn.vhd", "200M"]);
    qemu(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=fixed",
            "fixed.vhd",
            "8M",
        ],
    );
    let src = MemSource::new("disk.vhdx", std::fs::read(dir.join("disk.vhdx")).unwrap());
    let x = vhdx::read(&src).unwrap();
    assert_eq!(x.virtual_disk_size, Some(3 << 30));
    assert_eq!(
        Some(3 << 30),
        info(&dir.join("disk.vhdx"))["virtual-size"].as_u64()
    );
    assert!(!x.has_parent);
    assert!(!x.log_dirty);
    assert!(x.block_size.is_some_and(|b| b.is_power_of_two()));

    let dynv = vhd::read(&MemSource::new(
        "dyn.vhd",
        std::fs::read(dir.join("dyn.vhd")).unwrap(),
    ))
    .unwrap();
    assert_eq!(dynv.footer.disk_type, vhd::DiskType::Dynamic);
    assert!(dynv.footer.checksum_ok);
    assert_eq!(
        Some(dynv.footer.current_size),
        info(&dir.join("dyn.vhd"))["virtual-size"].as_u64()
    );
    let fixed = vhd::read(&MemSource::new(
        "fixed.vhd",
        std::fs::read(dir.join("fixed.vhd")).unwrap(),
    ))
    .unwrap();
    assert_eq!(fixed.footer.disk_type, vhd::DiskType::Fixed);
    assert!(fixed.footer.checksum_ok);
}

/// Loads every file of `dir` into an in-memory datastore folder.
fn load(b: &mut inventory::memfs::MemFsBuilder, dir: &Path, into: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p: PathBuf = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        b.file(&format!("{into}/{name}"), std::fs::read(&p).unwrap());
    }
}

#[test]
fn workstation_vm_with_qemu_made_snapshot_chain() {
    let Some(t) = images("workstation_vm_with_qemu_made_snapshot_chain") else {
        return;
    };
    let dir = t.path();
    qemu(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicSparse",
            "Dev Box.vmdk",
            "64M",
        ],
    );
    qemu(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-b",
            "Dev Box.vmdk",
            "-F",
            "vmdk",
            "Dev Box-000001.vmdk",
        ],
    );
    qemu(
        dir,
        &[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            "data.vmdk",
            "3G",
        ],
    );
    qemu(dir, &["create", "-q", "-f", "vhdx", "stray.vhdx", "1G"]);
    std::fs::write(
        dir.join("Dev Box.vmx"),
        vmx(
            "Dev Box",
            "ubuntu-64",
            2,
            2048,
            &[("sata0:0", "Dev Box-000001.vmdk"), ("sata0:1", "data.vmdk")],
            "",
        ),
    )
    .unwrap();
    let mut b = ntfs("WS", "0011223344556677");
    load(&mut b, dir, "/Users/me/Virtual Machines/Dev Box");
    let inv = inventory::scan(&[ds("ws", b)]);
    let v = vm(&inv, "Dev Box");
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let chain: Vec<&str> = v.disks[0].chain.iter().map(|l| l.file.as_str()).collect();
    assert_eq!(chain, vec!["Dev Box-000001.vmdk", "Dev Box.vmdk"]);
    assert_eq!(
        v.file("Dev Box-000001.vmdk").unwrap().role,
        Role::SnapshotDelta
    );
    assert_eq!(v.file("Dev Box.vmdk").unwrap().role, Role::DiskExtent);
    assert_eq!(v.disks[1].chain[0].extents.len(), 2);
    assert_eq!(v.disks[1].capacity, Some(3 << 30));
    assert_eq!(inv.orphan_disks.len(), 1);
    assert!(inv.orphan_disks[0].path.ends_with("stray.vhdx"));
    assert_eq!(inv.orphan_disks[0].disk.capacity, Some(1 << 30));
}
