//! The ESXi-written VMFS5 and VMFS6 sample volumes must read back exactly as their manifests
//! say: bare, and wrapped in a GPT or an MBR built at test time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fscore::{FileMapping, FileType, Filesystem, FsKind, NotMappable};
use lun::{ReadAt, Source, Window};
use vmfs::Vmfs;

use common::{check_extents, read_all, source, walk};

fn check_against_manifest(fs: &Vmfs, name: &str) {
    let manifest = testkit::real_manifest(name);
    let tree = walk(fs, false);
    let files: Vec<_> = tree
        .iter()
        .filter(|(_, (t, _))| *t != FileType::Dir)
        .map(|(p, _)| p.clone())
        .collect();
    let mut want: Vec<_> = manifest.iter().map(|m| m.path.clone()).collect();
    want.sort();
    assert_eq!(files, want, "{name}: file list");
    for m in &manifest {
        let (t, id) = &tree[&m.path];
        let md = fs.metadata(id).expect("metadata");
        assert_eq!(md.size, m.size, "{}: size", m.path);
        if m.kind == 'l' {
            assert_eq!(*t, FileType::Symlink);
            assert_eq!(
                md.symlink_target.as_deref(),
                Some(m.digest_or_target.as_str())
            );
            continue;
        }
        assert_eq!(*t, FileType::File);
        let data = read_all(fs, id);
        assert_eq!(
            testkit::sha256_hex(&data),
            m.digest_or_target,
            "{}: content",
            m.path
        );
        check_extents(fs, id, &data);
    }
    // file4 is resident in its FD, file5 crosses a block boundary.
    let (_, f4) = &tree["/directory/file4"];
    assert_eq!(
        fs.extents(f4).unwrap(),
        FileMapping::NotMappable(NotMappable::Resident)
    );
    let (_, f5) = &tree["/directory/file5"];
    let FileMapping::Mapped(map) = fs.extents(f5).unwrap() else {
        panic!("file5 not mapped")
    };
    assert_eq!(map.size(), 8193);
}

fn open_bare(test: &str, name: &str) -> Option<(PathBuf, Vmfs)> {
    let img = testkit::real_image(test, name)?;
    let fs = Vmfs::open(vec![source(&img)]).expect("open vmfs");
    Some((img, fs))
}

#[test]
fn vmfs5_real_image_matches_manifest() {
    let Some((_, fs)) = open_bare("vmfs5_real_image_matches_manifest", "vmfs5-esxi") else {
        return;
    };
    let info = fs.info();
    assert_eq!(info.fs, FsKind::Vmfs5);
    assert_eq!(info.label, "VMFS5 Test");
    assert_eq!(info.uuid, "61137dd5-df6bc2c8-f0e7-000c29801686");
    assert_eq!(info.block_size, 1 << 20);
    check_against_manifest(&fs, "vmfs5-esxi");
}

#[test]
fn vmfs6_real_image_matches_manifest() {
    let Some((_, fs)) = open_bare("vmfs6_real_image_matches_manifest", "vmfs6-esxi") else {
        return;
    };
    let info = fs.info();
    assert_eq!(info.fs, FsKind::Vmfs6);
    assert_eq!(info.label, "VMFS6 Test");
    assert_eq!(info.uuid, "6113001e-a6377ebc-1d24-000c29801686");
    assert_eq!(info.block_size, 1 << 20);
    check_against_manifest(&fs, "vmfs6-esxi");
}

#[test]
fn allocation_scan_and_list_tree_match_reference_on_real_images() {
    for name in ["vmfs5-esxi", "vmfs6-esxi"] {
        let test = "allocation_scan_and_list_tree_match_reference_on_real_images";
        let Some((_, fs)) = open_bare(test, name) else {
            return;
        };
        let n = common::check_allocated_scan(&fs);
        assert!(n > 10, "{name}: {n} entries");
        let listed = common::check_list_tree(&fs, &common::tree_limits());
        // ESXi keeps small files (descriptors, .vmsd) inside their FD: they come inline.
        let inline = common::check_inline(&fs);
        assert!(inline > 0, "{name}: no file came inline");
        let manifest = testkit::real_manifest(name);
        assert!(listed > manifest.len(), "{name}: {listed} entries listed");
        // Sizes in the listing are the manifest's.
        let tree = fs.list_tree(&fscore::TreeLimits::default());
        for m in &manifest {
            let i = (0..tree.entries.len() as u32)
                .find(|&i| tree.path(i) == m.path)
                .unwrap_or_else(|| panic!("{name}: {} not listed", m.path));
            assert_eq!(tree.entries[i as usize].size, m.size, "{}", m.path);
        }
    }
}

#[test]
fn system_files_are_flagged_and_readable() {
    for name in ["vmfs5-esxi", "vmfs6-esxi"] {
        let Some((_, fs)) = open_bare("system_files_are_flagged_and_readable", name) else {
            return;
        };
        let root = fs.read_dir(&fs.root()).unwrap();
        let sys: Vec<_> = root
            .iter()
            .filter(|e| e.metadata_file)
            .map(|e| e.name.as_str())
            .collect();
        for want in [
            ".fdc.sf", ".fbb.sf", ".sbc.sf", ".pbc.sf", ".pb2.sf", ".vh.sf", ".sdd.sf",
        ] {
            assert!(sys.contains(&want), "{name}: {want} missing from {sys:?}");
        }
        if name == "vmfs6-esxi" {
            assert!(sys.contains(&".jbc.sf"));
        }
        assert!(root.iter().all(|e| e.name != "." && e.name != ".."));
        // Every system file maps, and its extents read back the same bytes as open().
        for e in root
            .iter()
            .filter(|e| e.metadata_file && e.file_type == FileType::File)
        {
            let md = fs.metadata(&e.id).unwrap();
            assert!(md.metadata_file);
            if md.size <= 8 << 20 {
                let data = read_all(&fs, &e.id);
                check_extents(&fs, &e.id, &data);
            }
        }
        let sdd = root.iter().find(|e| e.name == ".sdd.sf").unwrap();
        assert_eq!(sdd.file_type, FileType::Dir);
        fs.read_dir(&sdd.id).unwrap();
    }
}

#[test]
fn lvm_device_info_reports_header_facts() {
    let Some(img) = testkit::real_image("lvm_device_info_reports_header_facts", "vmfs5-esxi")
    else {
        return;
    };
    let src = source(&img);
    let info = vmfs::lvm_device_info(src.as_ref()).unwrap().unwrap();
    assert_eq!(info.lvm_major, 5);
    assert_eq!(info.volume_uuid, "61137dd5-d0727810-7ac2-000c29801686");
    assert_eq!(info.data_offset, 0x110_0000);
    assert!(info.is_head());
    assert_eq!(info.num_devices, 1);
    assert_eq!(info.device_names, vec!["mpx.vmhba0:C0:T4:L0:1".to_string()]);
    let fsum = info.filesystem.unwrap();
    assert_eq!(fsum.uuid, "61137dd5-df6bc2c8-f0e7-000c29801686");
    assert_eq!(fsum.fs, "vmfs5");
    // Not an LVM device: no info, no error.
    let zeros: Source = Arc::new(lun::MemSource::new("zeros", vec![0; 2 << 20]));
    assert!(vmfs::lvm_device_info(zeros.as_ref()).unwrap().is_none());
}

/// Builds `<name>-<layout>.img`: a sparse LUN with a partition table and the VMFS partition
/// copied at sector 2048. Returns None (skip) when the tool is missing.
fn wrapped(test: &str, img: &Path, name: &str, layout: &str) -> Option<PathBuf> {
    let tool = if layout == "gpt" { "sgdisk" } else { "sfdisk" };
    if !testkit::have_tool(tool) {
        testkit::skip(test, &format!("{tool} is not installed"));
        return None;
    }
    let out = testkit::fixture_dir("vmfs-reader").join(format!("{name}-{layout}.img"));
    let img = img.to_path_buf();
    let layout = layout.to_string();
    Some(testkit::cached_fixture(&out, move |tmp| {
        let part_len = std::fs::metadata(&img).unwrap().len();
        let total = 2048 * 512 + part_len + 1024 * 1024;
        let f = std::fs::File::create(tmp).unwrap();
        f.set_len(total).unwrap();
        drop(f);
        let sectors = part_len / 512;
        if layout == "gpt" {
            testkit::run(
                Command::new("sgdisk")
                    .arg(format!("--new=1:2048:+{sectors}"))
                    .arg("--typecode=1:AA31E02A-400F-11DB-9590-000C2911D1B8")
                    .arg(tmp),
            );
        } else {
            let script = format!("label: dos\nstart=2048, size={sectors}, type=fb\n");
            let mut child = Command::new("sfdisk")
                .arg("--no-reread")
                .arg("-q")
                .arg(tmp)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "sfdisk failed");
        }
        testkit::run(
            Command::new("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", tmp.display()))
                .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]),
        );
    }))
}

fn check_wrapped(test: &str, name: &str, layout: &str) {
    let Some(img) = testkit::real_image(test, name) else {
        return;
    };
    let Some(lun_img) = wrapped(test, &img, name, layout) else {
        return;
    };
    let lun = source(&lun_img);
    // The partition starts at sector 2048 (the lead's fsprobe finds it in the product).
    let part: Source = Arc::new(
        Window::new(
            lun.clone(),
            2048 * 512,
            std::fs::metadata(&img).unwrap().len(),
            "part1",
        )
        .unwrap(),
    );
    assert!(
        vmfs::lvm_device_info(lun.as_ref()).unwrap().is_none(),
        "LVM header found at LUN start"
    );
    let whole = Vmfs::open(vec![lun.clone()]).unwrap_err().to_string();
    assert!(whole.contains("VMFS partition"), "{whole}");
    let fs = Vmfs::open(vec![part.clone()]).expect("open wrapped");
    check_against_manifest(&fs, name);
    // Extents are partition-relative: add the partition start to read them from the LUN.
    let tree = walk(&fs, false);
    let (_, id) = &tree["/directory/file5"];
    let data = read_all(&fs, id);
    let FileMapping::Mapped(map) = fs.extents(id).unwrap() else {
        panic!()
    };
    for e in map.extents() {
        if let Some(p) = e.physical {
            let mut b = vec![0; e.length as usize];
            lun.read_exact_at(2048 * 512 + p, &mut b).unwrap();
            assert_eq!(&b[..], &data[e.logical as usize..e.end() as usize]);
        }
    }
}

#[test]
fn vmfs5_in_gpt() {
    check_wrapped("vmfs5_in_gpt", "vmfs5-esxi", "gpt");
}

#[test]
fn vmfs5_in_mbr() {
    check_wrapped("vmfs5_in_mbr", "vmfs5-esxi", "mbr");
}

#[test]
fn vmfs6_in_gpt() {
    check_wrapped("vmfs6_in_gpt", "vmfs6-esxi", "gpt");
}

#[test]
fn vmfs6_in_mbr() {
    check_wrapped("vmfs6_in_mbr", "vmfs6-esxi", "mbr");
}
