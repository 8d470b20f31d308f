//! Walks a host directory into an in-memory [`Tree`] that the VMFS writers copy from.
//!
//! Only the shape of the tree and the positions of the data are kept in memory; file contents
//! are read from the host on demand ([`Node::open`]), so copying a 300 GiB thin file costs no
//! more memory than copying a small one. Holes are found with `lseek(SEEK_DATA/SEEK_HOLE)`, so
//! a sparse source stays sparse in the image.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// Bound on directory nesting, so a bind-mount loop on the host cannot recurse forever.
pub const MAX_DEPTH: usize = 256;

/// A byte range of a file that holds data (everything else is a hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the first data byte in the file.
    pub offset: u64,
    /// Number of data bytes.
    pub len: u64,
}

impl Segment {
    /// One past the last data byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// What a [`Node`] is.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A directory and its entries, sorted by name.
    Dir(Vec<Node>),
    /// A regular file.
    File {
        /// Logical size in bytes.
        size: u64,
        /// Data ranges, sorted, non-overlapping, inside `0..size`; the rest are holes.
        segments: Vec<Segment>,
        /// Set by [`Tree::mark_lazy_zeroed`]: allocate every block, mark the blocks past the
        /// data to-be-zeroed, and leave garbage under them.
        lazy_zeroed: bool,
    },
    /// A symbolic link and its target, byte for byte.
    Symlink(Vec<u8>),
}

/// One entry of the tree.
#[derive(Clone, Debug)]
pub struct Node {
    /// The entry's name (empty for the root).
    pub name: OsString,
    /// Path relative to the scanned root, `/`-separated, empty for the root.
    pub rel_path: String,
    /// Where the entry lives on the host.
    pub host_path: PathBuf,
    /// What the entry is.
    pub kind: Kind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Access time, seconds since the Unix epoch.
    pub atime: i64,
    /// Status change time, seconds since the Unix epoch.
    pub ctime: i64,
}

impl Node {
    /// The name as raw bytes (what a directory entry stores).
    pub fn name_bytes(&self) -> &[u8] {
        self.name.as_bytes()
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    /// The entries of a directory (empty for anything else).
    pub fn children(&self) -> &[Node] {
        match &self.kind {
            Kind::Dir(c) => c,
            _ => &[],
        }
    }

    /// Opens a regular file on the host for positional reads
    /// (`std::os::unix::fs::FileExt::read_exact_at`).
    pub fn open(&self) -> Result<File> {
        File::open(&self.host_path).with_context(|| format!("open {}", self.host_path.display()))
    }

    /// Number of data bytes of a file (its size minus its holes); 0 for anything else.
    pub fn data_bytes(&self) -> u64 {
        match &self.kind {
            Kind::File { segments, .. } => segments.iter().map(|s| s.len).sum(),
            _ => 0,
        }
    }

    /// Visits this node and every node below it, parents before children.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        f(self);
        for c in self.children() {
            c.walk(f);
        }
    }
}

/// A scanned host directory tree.
#[derive(Clone, Debug)]
pub struct Tree {
    /// The root directory (name and `rel_path` empty).
    pub root: Node,
}

impl Tree {
    /// Scans `path`, which must be a directory. Entries other than directories, regular files
    /// and symlinks (sockets, devices, FIFOs) are an error: VMFS cannot hold them.
    pub fn scan(path: &Path) -> Result<Tree> {
        let meta =
            fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory", path.display());
        }
        let root = scan_node(path, OsString::new(), String::new(), &meta, 0)?;
        Ok(Tree { root })
    }

    /// Marks every regular file whose relative path matches one of `patterns` as lazy-zeroed
    /// thick (see [`glob_match`]). Returns how many files were marked.
    pub fn mark_lazy_zeroed(&mut self, patterns: &[String]) -> usize {
        fn visit(n: &mut Node, patterns: &[String], count: &mut usize) {
            match &mut n.kind {
                Kind::Dir(children) => {
                    for c in children {
                        visit(c, patterns, count);
                    }
                }
                Kind::File { lazy_zeroed, .. } => {
                    if patterns.iter().any(|p| glob_match(p, &n.rel_path)) {
                        *lazy_zeroed = true;
                        *count += 1;
                    }
                }
                Kind::Symlink(_) => {}
            }
        }
        let mut count = 0;
        visit(&mut self.root, patterns, &mut count);
        count
    }

    /// Visits every node, parents before children.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        self.root.walk(f);
    }

    /// Totals over the tree, for sizing a volume.
    pub fn stats(&self) -> TreeStats {
        let mut s = TreeStats::default();
        self.walk(&mut |n| match &n.kind {
            Kind::Dir(c) => {
                s.dirs += 1;
                s.max_dir_entries = s.max_dir_entries.max(c.len() as u64);
            }
            Kind::File {
                size, lazy_zeroed, ..
            } => {
                s.files += 1;
                s.logical_bytes += size;
                s.data_bytes += if *lazy_zeroed { *size } else { n.data_bytes() };
            }
            Kind::Symlink(_) => s.symlinks += 1,
        });
        s
    }
}

/// Counts over a [`Tree`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Directories, the root included.
    pub dirs: u64,
    /// Regular files.
    pub files: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Sum of file sizes.
    pub logical_bytes: u64,
    /// Bytes that need blocks: data segments, or the whole size of lazy-zeroed files.
    pub data_bytes: u64,
    /// Largest number of entries in one directory.
    pub max_dir_entries: u64,
}

fn scan_node(
    path: &Path,
    name: OsString,
    rel_path: String,
    meta: &fs::Metadata,
    depth: usize,
) -> Result<Node> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        if depth >= MAX_DEPTH {
            bail!(
                "{}: directories nested deeper than {MAX_DEPTH}",
                path.display()
            );
        }
        let mut entries: Vec<_> = fs::read_dir(path)
            .with_context(|| format!("read directory {}", path.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("read directory {}", path.display()))?;
        entries.sort_by_key(|e| e.file_name());
        let mut children = Vec::with_capacity(entries.len());
        for e in entries {
            let child_path = e.path();
            let child_meta = fs::symlink_metadata(&child_path)
                .with_context(|| format!("stat {}", child_path.display()))?;
            let child_name = e.file_name();
            let child_rel = if rel_path.is_empty() {
                child_name.to_string_lossy().into_owned()
            } else {
                format!("{rel_path}/{}", child_name.to_string_lossy())
            };
            children.push(scan_node(
                &child_path,
                child_name,
                child_rel,
                &child_meta,
                depth + 1,
            )?);
        }
        Kind::Dir(children)
    } else if ft.is_file() {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let size = meta.len();
        let segments = data_segments(&file, size)
            .with_context(|| format!("find data/holes of {}", path.display()))?;
        Kind::File {
            size,
            segments,
            lazy_zeroed: false,
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(path).with_context(|| format!("readlink {}", path.display()))?;
        Kind::Symlink(target.as_os_str().as_bytes().to_vec())
    } else {
        bail!(
            "{}: only directories, regular files and symlinks fit in VMFS",
            path.display()
        );
    };
    Ok(Node {
        name,
        rel_path,
        host_path: path.to_path_buf(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        atime: meta.atime(),
        ctime: meta.ctime(),
    })
}

/// The data ranges of `file` according to `SEEK_DATA`/`SEEK_HOLE`. A filesystem without hole
/// reporting answers with one segment covering the whole file, which is still correct.
pub fn data_segments(file: &File, size: u64) -> Result<Vec<Segment>> {
    let fd = file.as_raw_fd();
    let mut segments = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        let data = seek(fd, pos, libc::SEEK_DATA)?;
        let Some(data) = data else { break };
        if data >= size {
            break;
        }
        let hole = seek(fd, data, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        if hole <= data {
            return Err(anyhow!("SEEK_HOLE went backwards at {data}"));
        }
        segments.push(Segment {
            offset: data,
            len: hole - data,
        });
        pos = hole;
    }
    Ok(segments)
}

/// `lseek`, with ENXIO (no more data) turned into `None`.
fn seek(fd: libc::c_int, pos: u64, whence: libc::c_int) -> Result<Option<u64>> {
    let off = libc::off_t::try_from(pos).context("offset beyond off_t")?;
    // SAFETY: lseek only reads its integer arguments; an invalid fd gives EBADF, not UB.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(err).context("lseek");
    }
    Ok(Some(r as u64))
}

/// Matches `path` (relative, `/`-separated) against a shell-style pattern: `*` matches within
/// one path component, `**` across components, `?` one character. A pattern without `/` also
/// matches the last component alone, so `*-flat.vmdk` finds flat disks in every folder.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    if !pattern.contains('/') {
        let base = path.rsplit('/').next().unwrap_or(path);
        if glob_bytes(pattern.as_bytes(), base.as_bytes()) {
            return true;
        }
    }
    glob_bytes(pattern.as_bytes(), path.as_bytes())
}

fn glob_bytes(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => {
            let (any_depth, rest) = if p.get(1) == Some(&b'*') {
                (true, &p[2..])
            } else {
                (false, &p[1..])
            };
            // `**/` also matches zero components.
            if any_depth && rest.first() == Some(&b'/') && glob_bytes(&rest[1..], s) {
                return true;
            }
            for i in 0..=s.len() {
                if glob_bytes(rest, &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == b'/' && !any_depth {
                    return false;
                }
            }
            false
        }
        Some(b'?') => !s.is_empty() && s[0] != b'/' && glob_bytes(&p[1..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob_bytes(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn globs_match_components_and_depth() {
        assert!(glob_match("*.vmdk", "vm1/disk-flat.vmdk"));
        assert!(glob_match("vm1/*-flat.vmdk", "vm1/disk-flat.vmdk"));
        assert!(!glob_match("vm1/*.vmdk", "vm1/sub/disk.vmdk"));
        assert!(glob_match("vm1/**/*.vmdk", "vm1/sub/x/disk.vmdk"));
        assert!(glob_match("vm1/**/*.vmdk", "vm1/disk.vmdk"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("lazy", "lazy"));
        assert!(!glob_match("lazy", "lazy2"));
    }

    #[test]
    fn scan_finds_kinds_holes_and_sorts_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/b"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/b", d.join("a-link")).unwrap();
        let sparse = File::create(d.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        sparse.write_all_at(&[1u8; 4096], 32 << 20).unwrap();
        let mut empty = File::create(d.join("empty")).unwrap();
        empty.flush().unwrap();

        let mut tree = Tree::scan(d).unwrap();
        let names: Vec<_> = tree
            .root
            .children()
            .iter()
            .map(|n| n.rel_path.clone())
            .collect();
        assert_eq!(names, ["a-link", "empty", "sparse", "sub"]);
        match &tree.root.children()[0].kind {
            Kind::Symlink(t) => assert_eq!(t, b"sub/b"),
            k => panic!("{k:?}"),
        }
        match &tree.root.children()[2].kind {
            Kind::File { size, segments, .. } => {
                assert_eq!(*size, 64 << 20);
                assert!(
                    segments.iter().map(|s| s.len).sum::<u64>() < 8 << 20,
                    "{segments:?}"
                );
                assert!(
                    segments
                        .iter()
                        .any(|s| s.offset <= 32 << 20 && s.end() >= (32 << 20) + 4096)
                );
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(tree.root.children()[3].children()[0].rel_path, "sub/b");
        assert_eq!(tree.mark_lazy_zeroed(&["sub/*".into()]), 1);
        let st = tree.stats();
        assert_eq!((st.dirs, st.files, st.symlinks), (2, 3, 1));
    }
}
