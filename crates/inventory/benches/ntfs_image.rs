//! Inventory of a real NTFS image (mkntfs + ntfs-3g) with 1,000 VMs and 10,000 files, read
//! by the project's NTFS reader, against `fls -r` (sleuthkit) listing the same image.
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};

fn fill(mnt: &Path) {
    for n in 0..1000 {
        let name = format!("vm{n:04}");
        let dir = mnt.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut refs = Vec::new();
        for d in 0..2 {
            let base = if d == 0 {
                name.clone()
            } else {
                format!("{name}_{d}")
            };
            let flat = format!("{base}-flat.vmdk");
            std::fs::write(
                dir.join(format!("{base}.vmdk")),
                common::vmfs_descriptor(d, &flat, 1 << 21),
            )
            .unwrap();
            std::fs::File::create(dir.join(&flat))
                .unwrap()
                .set_len(1 << 30)
                .unwrap();
            refs.push((format!("scsi0:{d}"), format!("{base}.vmdk")));
        }
        let r: Vec<(&str, &str)> = refs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        std::fs::write(
            dir.join(format!("{name}.vmx")),
            common::vmx(&name, "ubuntu-64", 2, 4096, &r, ""),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{name}.nvram")), [0u8; 8684]).unwrap();
        std::fs::write(dir.join(format!("{name}.vmsd")), "").unwrap();
        for l in ["vmware.log", "vmware-1.log", "vmware-2.log"] {
            std::fs::write(dir.join(l), "log\n").unwrap();
        }
    }
}

fn image() -> Option<PathBuf> {
    let ready = testkit::is_root()
        && Path::new("/dev/fuse").exists()
        && ["mkntfs", "ntfs-3g", "fls"]
            .iter()
            .all(|t| testkit::have_tool(t));
    if !ready {
        eprintln!("SKIPPED ntfs_image bench: needs root, /dev/fuse, mkntfs, ntfs-3g, fls");
        return None;
    }
    let path = testkit::fixture_dir("inventory").join("bench-1000vms-ntfs-v1.img");
    Some(testkit::cached_fixture(&path, |out| {
        std::fs::File::create(out)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        testkit::run(
            Command::new("mkntfs")
                .args(["-F", "-q", "-f", "-c", "4096", "-L", "BENCH"])
                .arg(out),
        );
        let m = testkit::ntfs::FuseMount::ntfs3g(out, &[]).expect("mount");
        fill(m.path());
    }))
}

fn bench(c: &mut Criterion) {
    let Some(img) = image() else { return };
    let open = || {
        let src: lun::Source = Arc::new(lun::DevicePath::open(&img).unwrap());
        inventory::Datastore::new("bench", Arc::new(ntfs::Ntfs::open(src).unwrap()))
    };
    let ds = open();
    let inv = inventory::scan(std::slice::from_ref(&ds));
    assert_eq!(inv.vms.len(), 1000);
    assert_eq!(inv.vms.iter().map(|v| v.files.len()).sum::<usize>(), 10_000);
    let t = Instant::now();
    testkit::run(Command::new("fls").arg("-r").arg(&img));
    eprintln!("fls -r on the same image: {:?}", t.elapsed());
    // Open + scan, as `lunproxy vms IMAGE` does (a fresh reader has cold caches).
    c.bench_function("open + scan 1000 VMs / 10000 files (NTFS image)", |b| {
        b.iter(|| inventory::scan(&[open()]))
    });
    c.bench_function("fls -r (NTFS image)", |b| {
        b.iter(|| testkit::run(Command::new("fls").arg("-r").arg(&img)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
