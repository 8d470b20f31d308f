//! Real virtual disks made by qemu-img (VMDK monolithicSparse / streamOptimized /
//! twoGbMaxExtentSparse / monolithicFlat with a backing chain, VHDX, VHD), parsed by the
//! inventory and checked against `qemu-img info`.

mod common;

use std::path::{Path, PathBuf};

use common::qemu::{create, create_vmdk_child, info, qemu_img, virtual_size};
use common::*;
use inventory::{Role, vhd, vhdx, vmdk};
use lun::MemSource;

/// Runs `check` in a fresh directory for qemu-img made disks, or skips `test` without qemu-img.
fn with_images(test: &str, check: impl FnOnce(&Path)) {
    if !testkit::have_tool("qemu-img") {
        testkit::skip(
            test,
            "qemu-img is not installed (apt-get install qemu-utils)",
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    check(t.path());
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

/// A monolithicSparse `base` of `size` and a delta `child` over it, made by qemu-img in `dir`.
fn sparse_base_and_child(dir: &Path, base: &str, size: &str, child: &str) {
    create(dir, "vmdk", Some("monolithicSparse"), base, size);
    create_vmdk_child(dir, base, child);
}

/// A text descriptor file of `dir`, parsed.
fn text_descriptor(dir: &Path, name: &str) -> vmdk::Descriptor {
    vmdk::parse_descriptor(&std::fs::read(dir.join(name)).unwrap()).unwrap()
}

/// A file of `dir` in memory, named as in `dir`.
fn mem_source(dir: &Path, name: &str) -> MemSource {
    MemSource::new(name, std::fs::read(dir.join(name)).unwrap())
}

#[test]
fn monolithic_sparse_and_stream_optimized_embedded_descriptors() {
    with_images(
        "monolithic_sparse_and_stream_optimized_embedded_descriptors",
        |dir| {
            sparse_base_and_child(dir, "base.vmdk", "100M", "child.vmdk");
            qemu_img(
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
            assert_eq!(Some(base.capacity()), virtual_size(&dir.join("base.vmdk")));
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
        },
    );
}

#[test]
fn split_and_flat_descriptors() {
    with_images("split_and_flat_descriptors", |dir| {
        create(
            dir,
            "vmdk",
            Some("twoGbMaxExtentSparse"),
            "split.vmdk",
            "5G",
        );
        create(dir, "vmdk", Some("monolithicFlat"), "flat.vmdk", "8M");
        let split = text_descriptor(dir, "split.vmdk");
        assert_eq!(split.create_type.as_deref(), Some("twoGbMaxExtentSparse"));
        assert_eq!(split.extents.len(), 3);
        for e in &split.extents {
            assert!(dir.join(e.file_name.as_ref().unwrap()).is_file());
        }
        assert_eq!(
            Some(split.capacity()),
            virtual_size(&dir.join("split.vmdk"))
        );
        let flat = text_descriptor(dir, "flat.vmdk");
        assert_eq!(flat.extents[0].kind, "FLAT");
        assert_eq!(flat.extents[0].file_name.as_deref(), Some("flat-flat.vmdk"));
    });
}

#[test]
fn vhdx_and_vhd_headers_from_qemu() {
    with_images("vhdx_and_vhd_headers_from_qemu", |dir| {
        create(dir, "vhdx", None, "disk.vhdx", "3G");
        create(dir, "vpc", None, "dyn.vhd", "200M");
        create(dir, "vpc", Some("fixed"), "fixed.vhd", "8M");
        let x = vhdx::read(&mem_source(dir, "disk.vhdx")).unwrap();
        assert_eq!(x.virtual_disk_size, Some(3 << 30));
        assert_eq!(Some(3 << 30), virtual_size(&dir.join("disk.vhdx")));
        assert!(!x.has_parent);
        assert!(!x.log_dirty);
        assert!(x.block_size.is_some_and(|b| b.is_power_of_two()));

        let dynv = vhd::read(&mem_source(dir, "dyn.vhd")).unwrap();
        assert_eq!(dynv.footer.disk_type, vhd::DiskType::Dynamic);
        assert!(dynv.footer.checksum_ok);
        assert_eq!(
            Some(dynv.footer.current_size),
            virtual_size(&dir.join("dyn.vhd"))
        );
        let fixed = vhd::read(&mem_source(dir, "fixed.vhd")).unwrap();
        assert_eq!(fixed.footer.disk_type, vhd::DiskType::Fixed);
        assert!(fixed.footer.checksum_ok);
    });
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
    with_images("workstation_vm_with_qemu_made_snapshot_chain", |dir| {
        sparse_base_and_child(dir, "Dev Box.vmdk", "64M", "Dev Box-000001.vmdk");
        create(dir, "vmdk", Some("twoGbMaxExtentSparse"), "data.vmdk", "3G");
        create(dir, "vhdx", None, "stray.vhdx", "1G");
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
    });
}
