//! The Windows-written sample volume: every live file of its manifest lists with the right size
//! and reads with the right SHA-256, and no deleted file shows.

use std::collections::BTreeMap;
use std::sync::Arc;

use fscore::{FileId, FileMapping, FileType, Filesystem};
use lun::{DevicePath, ReadAt, Source};
use ntfs::Ntfs;

fn open(test: &str) -> Option<Ntfs> {
    let path = testkit::real_image(test, "ntfs-windows")?;
    let dev: Source = Arc::new(DevicePath::open(&path).expect("open image"));
    Some(Ntfs::open(dev).expect("open NTFS"))
}

/// Every file under `dir`, recursively (metadata files and DOS names left out).
fn walk(fs: &Ntfs, dir: &FileId, prefix: &str, out: &mut BTreeMap<String, (FileId, FileType)>) {
    for e in fs.read_dir(dir).expect("read_dir") {
        if e.metadata_file || e.short_name {
            continue;
        }
        let path = format!("{prefix}/{}", e.name);
        assert!(out.len() < 100_000, "runaway walk");
        if e.file_type == FileType::Dir {
            walk(fs, &e.id, &path, out);
        }
        out.insert(path, (e.id, e.file_type));
    }
}

fn read_all(src: &dyn ReadAt) -> Vec<u8> {
    let mut buf = vec![0u8; src.size() as usize];
    src.read_exact_at(0, &mut buf).expect("read file");
    buf
}

#[test]
fn every_manifest_file_lists_and_reads_identically() {
    let Some(fs) = open("every_manifest_file_lists_and_reads_identically") else {
        return;
    };
    let info = fs.info();
    assert_eq!(info.label, "New Volume");
    assert_eq!(info.block_size, 4096);
    assert_eq!(info.uuid.len(), 16);
    let mut all = BTreeMap::new();
    walk(&fs, &fs.root(), "", &mut all);
    let manifest = testkit::real_manifest("ntfs-windows");
    for m in &manifest {
        let (id, ft) = all
            .get(&m.path)
            .unwrap_or_else(|| panic!("{} not listed", m.path));
        assert_eq!(*ft, FileType::File, "{}", m.path);
        let md = fs.metadata(id).unwrap();
        assert_eq!(md.size, m.size, "{}", m.path);
        let via_lookup = fs.lookup(&m.path).unwrap();
        assert_eq!(&via_lookup, id);
        let upper = fs.lookup(&m.path.to_uppercase()).unwrap();
        assert_eq!(&upper, id, "case-insensitive lookup of {}", m.path);
        let data = read_all(&*fs.open(id).unwrap());
        assert_eq!(testkit::sha256_hex(&data), m.digest_or_target, "{}", m.path);
        // Where the file maps to extents, reading the device through them gives the same bytes.
        if let FileMapping::Mapped(map) = fs.extents(id).unwrap() {
            let f = lun::MappedFile::new(fs.device(), map, "x").unwrap();
            assert_eq!(read_all(&f), data, "{} via extents", m.path);
        }
    }
    // Only manifest files (and directories) are listed: nothing deleted shows up.
    let files: Vec<&String> = all
        .iter()
        .filter(|(_, (_, t))| *t != FileType::Dir)
        .map(|(p, _)| p)
        .collect();
    let expected: Vec<&String> = manifest.iter().map(|m| &m.path).collect();
    assert_eq!(files, expected);
    let dirs = all.values().filter(|(_, t)| *t == FileType::Dir).count();
    assert!(dirs > 2000, "only {dirs} directories");
}

#[test]
fn metadata_files_are_flagged_and_missing_paths_fail() {
    let Some(fs) = open("metadata_files_are_flagged_and_missing_paths_fail") else {
        return;
    };
    let root = fs.read_dir(&fs.root()).unwrap();
    let names: Vec<&str> = root
        .iter()
        .filter(|e| e.metadata_file)
        .map(|e| e.name.as_str())
        .collect();
    for m in [
        "$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "$Bitmap", "$Boot", "$BadClus",
        "$Secure", "$UpCase", "$Extend",
    ] {
        assert!(names.contains(&m), "{m} not flagged: {names:?}");
    }
    assert!(!root.iter().any(|e| e.name == "."));
    let ext = fs.lookup("/$Extend").unwrap();
    assert!(fs.read_dir(&ext).unwrap().iter().all(|e| e.metadata_file));
    assert!(matches!(
        fs.lookup("/nope"),
        Err(fscore::FsError::NotFound { .. })
    ));
    assert!(matches!(
        fs.lookup("/File.txt/x"),
        Err(fscore::FsError::NotADirectory { .. })
    ));
    // $MFT reads through its own run list.
    let mft = fs.lookup("/$MFT").unwrap();
    let md = fs.metadata(&mft).unwrap();
    assert!(md.metadata_file);
    assert!(md.size >= 16 * 1024);
    let mut magic = [0u8; 4];
    fs.open(&mft)
        .unwrap()
        .read_exact_at(1024 * 5, &mut magic)
        .unwrap();
    assert_eq!(&magic, b"FILE");
}
