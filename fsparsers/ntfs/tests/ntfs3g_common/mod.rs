//! Shared by the ntfs3g_* integration tests: walk a whole volume through the reader and compare
//! it with what ntfs-3g, ntfscat and sleuthkit's fls saw of the same image (cached beside it by
//! `testkit::ntfs`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use fscore::{FileId, FileMapping, FileType, Filesystem, NotMappable};
use lun::{DevicePath, Source};
use testkit::ntfs::{Digest, NtfsImage, Sha256, fls_live_names, fls_streams};

/// Bytes per read while hashing: large reads, constant memory.
const CHUNK: u64 = 4 << 20;
/// Deeper than any fixture; a deeper walk means the reader lists a directory inside itself.
const MAX_DEPTH: usize = 64;

/// Opens an image file or block device read-only and mounts the reader on it.
pub fn open(path: &Path) -> ntfs::Ntfs {
    let dev = DevicePath::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let src: Source = Arc::new(dev);
    ntfs::Ntfs::open(src).unwrap_or_else(|e| panic!("Ntfs::open {}: {e}", path.display()))
}

/// One object as the reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub id: FileId,
    pub file_type: FileType,
    pub size: u64,
    pub links: u32,
    pub target: Option<String>,
    /// SHA-256 of `open()` (files and streams), or the error text.
    pub sha256: Option<String>,
    /// Named streams from metadata().
    pub streams: Vec<(String, u64)>,
    /// What extents() answered: `mapped`, `resident`, `compressed`, `other` or `error`.
    pub mapping: &'static str,
}

/// Everything found by walking from the root, with the problems met on the way (a walk goes on
/// past errors so that one report lists them all).
#[derive(Default)]
pub struct Walk {
    pub seen: Vec<Seen>,
    pub problems: Vec<String>,
}

/// Walks the whole tree (hiding metadata files and DOS names, as `fs ls` does), hashing every
/// file and every named stream. When `raw` is given, every mapped file is also read at its
/// reported physical offsets of `raw` and compared.
pub fn walk(fs: &dyn Filesystem, raw: Option<&File>) -> Walk {
    let mut w = Walk::default();
    let root = fs.root();
    let mut ancestors = vec![root.ino];
    walk_dir(fs, raw, &root, "", &mut ancestors, &mut w);
    w.seen.sort_by(|a, b| a.path.cmp(&b.path));
    w
}

fn walk_dir(
    fs: &dyn Filesystem,
    raw: Option<&File>,
    dir: &FileId,
    prefix: &str,
    ancestors: &mut Vec<u64>,
    w: &mut Walk,
) {
    if ancestors.len() > MAX_DEPTH {
        w.problems
            .push(format!("{prefix}: deeper than {MAX_DEPTH} levels"));
        return;
    }
    let entries = match fs.read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            w.problems.push(format!("read_dir {prefix}/: {e}"));
            return;
        }
    };
    for ent in entries {
        if ent.metadata_file || ent.short_name {
            continue;
        }
        let path = format!("{prefix}/{}", ent.name);
        if ent.name.is_empty() || ent.name.contains('/') || ent.name == "." || ent.name == ".." {
            w.problems
                .push(format!("{path}: bad entry name {:?}", ent.name));
            continue;
        }
        let md = match fs.metadata(&ent.id) {
            Ok(m) => m,
            Err(e) => {
                w.problems.push(format!("metadata {path}: {e}"));
                continue;
            }
        };
        if md.file_type != ent.file_type {
            w.problems.push(format!(
                "{path}: read_dir says {:?}, metadata says {:?}",
                ent.file_type, md.file_type
            ));
        }
        let mut seen = Seen {
            path: path.clone(),
            id: ent.id.clone(),
            file_type: md.file_type,
            size: md.size,
            links: md.links,
            target: md.symlink_target.clone(),
            sha256: None,
            streams: md
                .streams
                .iter()
                .map(|s| (s.name.clone(), s.size))
                .collect(),
            mapping: "-",
        };
        if md.file_type == FileType::File {
            let (sha, mapping) = hash_and_check_extents(fs, raw, &ent.id, &path, md.size, w);
            seen.sha256 = Some(sha);
            seen.mapping = mapping;
        }
        for s in &md.streams {
            let sid = FileId {
                ino: ent.id.ino,
                stream: Some(s.name.clone()),
            };
            let spath = format!("{path}:{}", s.name);
            let (sha, mapping) = hash_and_check_extents(fs, raw, &sid, &spath, s.size, w);
            w.seen.push(Seen {
                path: spath,
                id: sid,
                file_type: FileType::File,
                size: s.size,
                links: md.links,
                target: None,
                sha256: Some(sha),
                streams: Vec::new(),
                mapping,
            });
        }
        w.seen.push(seen);
        if md.file_type == FileType::Dir {
            if ancestors.contains(&ent.id.ino) {
                w.problems.push(format!(
                    "{path}: directory {} contains itself (an ancestor)",
                    ent.id.ino
                ));
                continue;
            }
            ancestors.push(ent.id.ino);
            walk_dir(fs, raw, &ent.id, &path, ancestors, w);
            ancestors.pop();
        }
    }
}

/// SHA-256 of a file through `open()`; checks the size, and (for mapped files, when `raw` is
/// given) that the device bytes at each extent's physical offset equal the file's bytes and
/// that holes read as zeros. Returns the hash (or `error: …`) and the kind of mapping.
fn hash_and_check_extents(
    fs: &dyn Filesystem,
    raw: Option<&File>,
    id: &FileId,
    path: &str,
    size: u64,
    w: &mut Walk,
) -> (String, &'static str) {
    let src = match fs.open(id) {
        Ok(s) => s,
        Err(e) => {
            w.problems.push(format!("open {path}: {e}"));
            return (format!("error: {e}"), "error");
        }
    };
    if src.size() != size {
        w.problems.push(format!(
            "{path}: metadata size {size} but open().size() {}",
            src.size()
        ));
    }
    let mapping = match fs.extents(id) {
        Ok(m) => Some(m),
        Err(e) => {
            w.problems.push(format!("extents {path}: {e}"));
            None
        }
    };
    let kind = match &mapping {
        Some(FileMapping::Mapped(_)) => "mapped",
        Some(FileMapping::NotMappable(NotMappable::Resident)) => "resident",
        Some(FileMapping::NotMappable(NotMappable::Compressed)) => "compressed",
        Some(FileMapping::NotMappable(_)) => "other",
        None => "error",
    };
    let map = match &mapping {
        Some(FileMapping::Mapped(m)) => {
            if m.size() != src.size() {
                w.problems.push(format!(
                    "{path}: extent map size {} != file size {}",
                    m.size(),
                    size
                ));
            }
            Some(m)
        }
        _ => None,
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut dev = vec![0u8; CHUNK as usize];
    let total = src.size();
    let mut off = 0u64;
    let mut extent_problem = false;
    while off < total {
        let n = CHUNK.min(total - off) as usize;
        if let Err(e) = src.read_exact_at(off, &mut buf[..n]) {
            w.problems.push(format!("read {path} at {off}: {e}"));
            return (format!("error: {e}"), kind);
        }
        h.update(&buf[..n]);
        if let (Some(map), Some(raw), false) = (map, raw, extent_problem) {
            // Compare this chunk piece by piece against the device.
            let mut pos = off;
            while pos < off + n as u64 {
                let Some(i) = map.index_of(pos) else {
                    w.problems
                        .push(format!("{path}: no extent covers offset {pos}"));
                    extent_problem = true;
                    break;
                };
                let e = map.extents()[i];
                let len = (e.end().min(off + n as u64) - pos) as usize;
                let mine = &buf[(pos - off) as usize..(pos - off) as usize + len];
                match e.physical {
                    None => {
                        if mine.iter().any(|&b| b != 0) {
                            w.problems
                                .push(format!("{path}: hole at {pos} but the file has data there"));
                            extent_problem = true;
                        }
                    }
                    Some(p) => {
                        let phys = p + (pos - e.logical);
                        if let Err(err) = raw.read_exact_at(&mut dev[..len], phys) {
                            w.problems.push(format!(
                                "{path}: cannot read device at {phys} (extent {i}): {err}"
                            ));
                            extent_problem = true;
                        } else if dev[..len] != *mine {
                            w.problems.push(format!(
                                "{path}: device bytes at {phys} (extent {i}, file offset {pos}) \
                                 differ from the file's bytes"
                            ));
                            extent_problem = true;
                        }
                    }
                }
                if extent_problem {
                    break;
                }
                pos += len as u64;
            }
        }
        off += n as u64;
    }
    (hex(h.finalize().as_slice()), kind)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The reader's file mapping for a path (for targeted checks).
pub fn mapping(fs: &dyn Filesystem, path: &str) -> FileMapping {
    let id = fs
        .lookup(path)
        .unwrap_or_else(|e| panic!("lookup {path}: {e}"));
    fs.extents(&id)
        .unwrap_or_else(|e| panic!("extents {path}: {e}"))
}

/// Compares a walk with every oracle of the image and returns the differences.
pub fn compare(img: &NtfsImage, fs: &dyn Filesystem, w: &Walk) -> Vec<String> {
    let mut out: Vec<String> = w.problems.clone();
    let seen: BTreeMap<&str, &Seen> = w.seen.iter().map(|s| (s.path.as_str(), s)).collect();
    let oracle: BTreeMap<&str, _> = img.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    for p in oracle.keys() {
        if !seen.contains_key(p) {
            out.push(format!("{p}: listed by ntfs-3g, missing from the reader"));
        }
    }
    for p in seen.keys() {
        if !oracle.contains_key(p) {
            out.push(format!("{p}: listed by the reader, not by ntfs-3g"));
        }
    }
    let reparse: BTreeMap<&str, (&str, &str)> = img
        .reparse
        .iter()
        .map(|(p, print, subst)| (p.as_str(), (print.as_str(), subst.as_str())))
        .collect();
    for (p, o) in &oracle {
        let Some(s) = seen.get(p) else { continue };
        let want_type = match o.kind {
            'f' | 's' => FileType::File,
            'd' => FileType::Dir,
            'l' => FileType::Symlink,
            _ => FileType::Other,
        };
        if s.file_type != want_type {
            out.push(format!(
                "{p}: type {:?}, ntfs-3g says {want_type:?}",
                s.file_type
            ));
            continue;
        }
        if s.id.ino != o.ino {
            out.push(format!(
                "{p}: MFT record {}, ntfs-3g inode {}",
                s.id.ino, o.ino
            ));
        }
        if o.kind == 'f' || o.kind == 's' {
            if s.size != o.size {
                out.push(format!("{p}: size {}, ntfs-3g says {}", s.size, o.size));
            }
            let got = s.sha256.as_deref().unwrap_or("-");
            if got != o.sha256 {
                out.push(format!("{p}: SHA-256 {got}, ntfs-3g reads {}", o.sha256));
            }
            if got != o.ntfscat_sha256 {
                out.push(format!(
                    "{p}: SHA-256 {got}, ntfscat prints {}",
                    o.ntfscat_sha256
                ));
            }
        }
        // Data of more than a record's size cannot be resident: outside a compressed directory
        // it must be mapped, or the extent check above proved nothing.
        if (o.kind == 'f' || o.kind == 's')
            && o.size > 1024
            && !p.starts_with("/compressed/")
            && s.mapping != "mapped"
        {
            out.push(format!(
                "{p}: {} bytes, extents() says {}",
                o.size, s.mapping
            ));
        }
        if o.kind == 'f' && u64::from(s.links) != o.nlink {
            out.push(format!("{p}: {} links, ntfs-3g says {}", s.links, o.nlink));
        }
        if o.kind == 'l' {
            let got = s.target.clone().unwrap_or_default();
            if let Some((print, subst)) = reparse.get(p) {
                let norm = |t: &str| t.replace('\\', "/");
                if norm(&got) != norm(print) && norm(&got) != norm(subst) {
                    out.push(format!(
                        "{p}: reparse target {got:?}, stored print name {print:?} / \
                         substitute name {subst:?}"
                    ));
                }
            } else if got != o.target {
                out.push(format!(
                    "{p}: symlink target {got:?}, ntfs-3g says {:?}",
                    o.target
                ));
            }
        }
    }
    // sleuthkit: the live long names and the named streams, with their MFT record numbers.
    let fls: BTreeSet<(String, u64)> = fls_live_names(&img.fls).into_iter().collect();
    let mine: BTreeSet<(String, u64)> = w
        .seen
        .iter()
        .filter(|s| s.id.stream.is_none())
        .map(|s| (s.path.clone(), s.id.ino))
        .collect();
    for x in fls.difference(&mine) {
        out.push(format!(
            "{} (record {}): listed by fls, not by the reader",
            x.0, x.1
        ));
    }
    for x in mine.difference(&fls) {
        out.push(format!(
            "{} (record {}): listed by the reader, not by fls",
            x.0, x.1
        ));
    }
    let fls_s: BTreeSet<(String, u64)> = fls_streams(&img.fls).into_iter().collect();
    let mine_s: BTreeSet<(String, u64)> = w
        .seen
        .iter()
        .filter(|s| s.id.stream.is_some())
        .map(|s| (s.path.clone(), s.id.ino))
        .collect();
    for x in fls_s.symmetric_difference(&mine_s) {
        let who = if fls_s.contains(x) {
            "fls"
        } else {
            "the reader"
        };
        out.push(format!(
            "{} (record {}): stream listed only by {who}",
            x.0, x.1
        ));
    }
    // lookup: every path resolves to what the walk found; ASCII paths also case-insensitively
    // when no sibling differs only in case.
    let lower: BTreeMap<String, usize> = seen.keys().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p.to_lowercase()).or_insert(0) += 1;
        m
    });
    // Case-insensitive lookups are sampled in large trees to keep the suite fast.
    let sample = if w.seen.len() > 1000 { 10 } else { 1 };
    for (i, s) in w.seen.iter().enumerate() {
        match fs.lookup(&s.path) {
            Ok(id) if id == s.id => {}
            Ok(id) => out.push(format!(
                "lookup {}: {id:?}, the walk found {:?}",
                s.path, s.id
            )),
            Err(e) => out.push(format!("lookup {}: {e}", s.path)),
        }
        let upper = s.path.to_ascii_uppercase();
        if i % sample == 0 && upper != s.path && lower.get(&s.path.to_lowercase()) == Some(&1) {
            match fs.lookup(&upper) {
                Ok(id) if id == s.id => {}
                Ok(id) => out.push(format!("lookup {upper} (case-insensitive): {id:?}")),
                Err(e) => out.push(format!("lookup {upper} (case-insensitive): {e}")),
            }
        }
    }
    out
}

/// Panics with every difference, one a line.
pub fn assert_clean(what: &str, diffs: &[String]) {
    if !diffs.is_empty() {
        let shown: Vec<&str> = diffs.iter().take(60).map(String::as_str).collect();
        panic!(
            "{what}: {} difference(s) from the oracles:\n  {}",
            diffs.len(),
            shown.join("\n  ")
        );
    }
}

/// True when `mapping` says the data is compressed.
pub fn is_compressed(m: &FileMapping) -> bool {
    matches!(m, FileMapping::NotMappable(NotMappable::Compressed))
}
