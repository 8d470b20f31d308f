//! [`Filesystem::list_tree`] for VMFS: the walk of [`fscore::walk_tree`], entry for entry and
//! problem for problem, with each file descriptor read once. The reference walk reads a
//! directory's FD twice (for its metadata, then again to list it); here the FD decoded for the
//! metadata is the one listed.

use std::collections::HashSet;

use fscore::{DirEntry, FileId, FileType, Filesystem, Tree, TreeEntry, TreeLimits, TreeProblem};

use crate::Vmfs;
use crate::fd::Fd;

/// FDs read in advance per batch: bounds the memory a huge directory can hold in FDs.
const PREFETCH_WINDOW: usize = 64;

/// The rest of a directory's entries, with the FDs of the next few read in advance in one
/// batch (where [`Vmfs::read_fds_batched`] can).
struct Listing {
    entries: std::vec::IntoIter<DirEntry>,
    /// The next entries, each with its FD when it was read in advance.
    ahead: std::collections::VecDeque<(DirEntry, Option<Fd>)>,
    include_hidden: bool,
}

impl Listing {
    fn new(entries: Vec<DirEntry>, limits: &TreeLimits) -> Listing {
        Listing {
            entries: entries.into_iter(),
            ahead: std::collections::VecDeque::new(),
            include_hidden: limits.include_hidden,
        }
    }

    /// Entries the walk lists (and so asks the metadata of).
    fn wanted(&self, e: &DirEntry) -> bool {
        !(e.name.is_empty() || e.name == "." || e.name == "..")
            && (self.include_hidden || !(e.metadata_file || e.short_name))
    }

    fn next(&mut self, fs: &Vmfs) -> Option<(DirEntry, Option<Fd>)> {
        if self.ahead.is_empty() {
            let window: Vec<DirEntry> = self.entries.by_ref().take(PREFETCH_WINDOW).collect();
            let addrs: Vec<u32> = window
                .iter()
                .filter(|e| self.wanted(e))
                .filter_map(|e| u32::try_from(e.id.ino).ok())
                .collect();
            let mut fds = fs.read_fds_batched(&addrs).into_iter();
            for e in window {
                let pre = if self.wanted(&e) && u32::try_from(e.id.ino).is_ok() {
                    fds.next().flatten()
                } else {
                    None
                };
                self.ahead.push_back((e, pre));
            }
        }
        self.ahead.pop_front()
    }
}

/// The bytes of a small regular file that lives inside its FD, which the listing has read
/// anyway ([`TreeLimits::inline_max`]).
/// `budget`: inline bytes the listing may still hold ([`TreeLimits::inline_total`]).
fn inline_bytes(
    fs: &Vmfs,
    fd: Option<&Fd>,
    limits: &TreeLimits,
    budget: &mut usize,
) -> Option<Box<[u8]>> {
    let fd = fd?;
    if limits.inline_max == 0
        || fd.file_length > limits.inline_max.min(*budget) as u64
        || crate::file_type(fd) != FileType::File
    {
        return None;
    }
    let bytes: Box<[u8]> = fs.ctx().resident(fd).ok().flatten()?.into();
    *budget -= bytes.len();
    Some(bytes)
}

/// Size and allocation of one entry, as [`Filesystem::metadata`] gives them, with the FD when
/// it could be read (a directory is then listed from it). `pre`: the FD, read in advance.
fn sizes(fs: &Vmfs, id: &FileId, pre: Option<Fd>) -> (fscore::Result<(u64, u64)>, Option<Fd>) {
    let fd = match pre.map_or_else(|| fs.fd_of(id), Ok) {
        Ok(fd) => fd,
        Err(e) => return (Err(e.into()), None),
    };
    let r = fs.metadata_of(&fd).map(|m| (m.size, m.allocated));
    (r, Some(fd))
}

/// Lists a directory from its FD when it was read, else as [`Filesystem::read_dir`] does.
fn listing(
    fs: &Vmfs,
    id: &FileId,
    fd: Option<&Fd>,
    limits: &TreeLimits,
) -> fscore::Result<Listing> {
    let entries = match fd {
        Some(fd) => fs.dir_entries(fd)?,
        None => fs.read_dir(id)?,
    };
    Ok(Listing::new(entries, limits))
}

pub(crate) fn list_tree(fs: &Vmfs, limits: &TreeLimits) -> Tree {
    let root = fs.root();
    let (root_sizes, root_fd) = sizes(fs, &root, None);
    let (size, allocated) = root_sizes.unwrap_or((0, 0));
    let mut tree = Tree {
        entries: vec![TreeEntry {
            parent: 0,
            depth: 0,
            entry: DirEntry {
                name: String::new(),
                id: root.clone(),
                file_type: FileType::Dir,
                metadata_file: false,
                short_name: false,
            },
            size,
            allocated,
            inline: None,
        }],
        problems: Vec::new(),
    };
    let mut seen_dirs = HashSet::new();
    seen_dirs.insert(root.clone());
    let mut inline_budget = limits.inline_total;
    let mut stack: Vec<(u32, Listing)> = Vec::new();
    match listing(fs, &root, root_fd.as_ref(), limits) {
        Ok(l) => stack.push((0, l)),
        Err(error) => tree
            .problems
            .push(TreeProblem::UnreadableDir { dir: 0, error }),
    }
    while let Some((dir, entries)) = stack.last_mut() {
        let dir = *dir;
        let Some((e, pre)) = entries.next(fs) else {
            stack.pop();
            continue;
        };
        if e.name.is_empty() || e.name == "." || e.name == ".." {
            continue;
        }
        if !limits.include_hidden && (e.metadata_file || e.short_name) {
            continue;
        }
        if e.file_type == FileType::Dir && !seen_dirs.insert(e.id.clone()) {
            tree.problems.push(TreeProblem::Cycle { dir, name: e.name });
            continue;
        }
        if tree.entries.len() > limits.max_entries {
            tree.problems.push(TreeProblem::TooManyEntries {
                limit: limits.max_entries,
            });
            break;
        }
        let n = tree.entries.len() as u32;
        let depth = tree.entries[dir as usize].depth + 1;
        let (r, fd) = sizes(fs, &e.id, pre);
        let (size, allocated) = match r {
            Ok(s) => s,
            Err(error) => {
                tree.problems
                    .push(TreeProblem::UnreadableFile { entry: n, error });
                (0, 0)
            }
        };
        let is_dir = e.file_type == FileType::Dir;
        let inline = inline_bytes(fs, fd.as_ref(), limits, &mut inline_budget);
        tree.entries.push(TreeEntry {
            parent: dir,
            depth,
            entry: e,
            size,
            allocated,
            inline,
        });
        if is_dir {
            if depth as usize >= limits.max_depth {
                tree.problems.push(TreeProblem::TooDeep { dir: n });
            } else {
                let id = &tree.entries[n as usize].entry.id;
                match listing(fs, id, fd.as_ref(), limits) {
                    Ok(l) => stack.push((n, l)),
                    Err(error) => tree
                        .problems
                        .push(TreeProblem::UnreadableDir { dir: n, error }),
                }
            }
        }
    }
    tree
}
