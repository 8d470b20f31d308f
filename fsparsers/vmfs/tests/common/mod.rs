//! Helpers shared by the VMFS integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use fscore::{FileMapping, FileType, Filesystem};
use lun::{DevicePath, ReadAt, ReadAtExt, Source};

/// Opens an image file read-only as a source.
pub fn source(path: &Path) -> Source {
    Arc::new(DevicePath::open(path).expect("open image"))
}

/// Walks the tree below `/`, returning path -> (type, id) for every entry (metadata files
/// included when `all`). Bounded and cycle-checked.
pub fn walk(fs: &dyn Filesystem, all: bool) -> BTreeMap<String, (FileType, fscore::FileId)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![("".to_string(), fs.root(), 0)];
    let mut seen = std::collections::HashSet::new();
    while let Some((path, id, depth)) = stack.pop() {
        assert!(depth < 64, "tree too deep at {path}");
        assert!(seen.insert(id.clone()), "directory {path} visited twice");
        for e in fs.read_dir(&id).expect("read_dir") {
            if e.metadata_file && !all {
                continue;
            }
            let p = format!("{path}/{}", e.name);
            if e.file_type == FileType::Dir && !e.metadata_file {
                stack.push((p.clone(), e.id.clone(), depth + 1));
            }
            out.insert(p, (e.file_type, e.id));
        }
    }
    out
}

/// Reads a whole file through `open`, in chunks.
pub fn read_all(fs: &dyn Filesystem, id: &fscore::FileId) -> Vec<u8> {
    let src = fs.open(id).expect("open");
    let size = src.size();
    let mut out = vec![0u8; size as usize];
    let mut off = 0usize;
    while off < out.len() {
        let n = (out.len() - off).min(1 << 20);
        src.read_exact_at(off as u64, &mut out[off..off + n]).expect("read");
        off += n;
    }
    out
}

/// Checks that reading the device at each extent's physical offset gives the file's bytes.
pub fn check_extents(fs: &dyn Filesystem, id: &fscore::FileId, data: &[u8]) {
    match fs.extents(id).expect("extents") {
        FileMapping::Mapped(map) => {
            assert_eq!(map.size(), data.len() as u64);
            let dev = fs.device();
            for e in map.extents() {
                let want = &data[e.logical as usize..e.end() as usize];
                match e.physical {
                    Some(p) => {
                        let got = dev.read_vec(p, e.length as usize).expect("read extent");
                        assert!(got == want, "extent at {} differs", e.logical);
                    }
                    None => assert!(want.iter().all(|&b| b == 0), "hole at {} holds data", e.logical),
                }
            }
        }
        FileMapping::NotMappable(_) => {}
    }
}
