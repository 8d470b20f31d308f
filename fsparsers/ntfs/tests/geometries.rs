//! Geometries beyond the common ones: 4 KiB sectors, 256-byte sectors, 2 MiB clusters (the
//! negative sectors-per-cluster encoding). Each volume is made by mkntfs, filled through
//! ntfs-3g, and read back through the public API; ntfscat is the oracle.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fscore::{FileMapping, Filesystem};
use lun::{DevicePath, ReadAt, Source};

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn content(len: usize) -> Vec<u8> {
    let mut x = 0x1234_5678u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn fixture(test: &str, name: &str, size: u64, args: &[&str]) -> Option<PathBuf> {
    for tool in ["mkntfs", "ntfs-3g", "ntfscat"] {
        if !testkit::have_tool(tool) {
            testkit::skip(test, &format!("{tool} is missing"));
            return None;
        }
    }
    if !testkit::is_root() {
        testkit::skip(test, "ntfs-3g mounts need root");
        return None;
    }
    let path = testkit::fixture_dir("ntfs-reader").join(format!("{name}-v1.img"));
    Some(testkit::cached_fixture(&path, |img: &Path| {
        std::fs::File::create(img)
            .and_then(|f| f.set_len(size))
            .unwrap();
        testkit::run(
            Command::new("mkntfs")
                .args(["-F", "-q", "-f", "-L", name])
                .args(args)
                .arg(img),
        );
        let dir = std::env::temp_dir().join(format!("ntfs-geom-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        testkit::run(Command::new("ntfs-3g").arg(img).arg(&dir));
        let _mount = Mount(dir.clone());
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/data.bin"), content(3_000_001)).unwrap();
        std::fs::write(dir.join("small.txt"), b"resident").unwrap();
    }))
}

fn check(test: &str, name: &str, size: u64, args: &[&str], block_size: u64) {
    let Some(img) = fixture(test, name, size, args) else {
        return;
    };
    let dev: Source = Arc::new(DevicePath::open(&img).unwrap());
    let fs = ntfs::Ntfs::open(dev).unwrap();
    let info = fs.info();
    assert_eq!(info.block_size, block_size);
    assert_eq!(info.label, name);
    let id = fs.lookup("/D/DATA.BIN").unwrap();
    let src = fs.open(&id).unwrap();
    let mut got = vec![0u8; src.size() as usize];
    src.read_exact_at(0, &mut got).unwrap();
    assert_eq!(got, content(3_000_001));
    let oracle = testkit::run(Command::new("ntfscat").arg(&img).arg("d/data.bin"));
    assert_eq!(testkit::sha256_hex(&got), testkit::sha256_hex(&oracle));
    let FileMapping::Mapped(map) = fs.extents(&id).unwrap() else {
        panic!("not mapped")
    };
    let mapped = lun::MappedFile::new(fs.device(), map, "data").unwrap();
    let mut again = vec![0u8; got.len()];
    mapped.read_exact_at(0, &mut again).unwrap();
    assert_eq!(again, got);
    let small = fs.lookup("/small.txt").unwrap();
    assert!(matches!(
        fs.extents(&small).unwrap(),
        FileMapping::NotMappable(fscore::NotMappable::Resident)
    ));
}

#[test]
fn sectors_of_4_kib() {
    check(
        "sectors_of_4_kib",
        "s4096",
        64 << 20,
        &["-s", "4096", "-c", "4096"],
        4096,
    );
}

#[test]
fn sectors_of_256_bytes() {
    check(
        "sectors_of_256_bytes",
        "s256",
        64 << 20,
        &["-s", "256", "-c", "512"],
        512,
    );
}

#[test]
fn clusters_of_2_mib() {
    check(
        "clusters_of_2_mib",
        "c2m",
        600 << 20,
        &["-c", "2097152"],
        2 << 20,
    );
}
