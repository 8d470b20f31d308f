//! [`Filesystem::list_tree`] for VMFS: the walk of [`fscore::walk_tree`], entry for entry and
//! problem for problem, with each file descriptor read once. The reference walk reads a
//! directory's FD twice (for its metadata, then again to list it); here the FD decoded for the
//! metadata is the one listed.

use fscore::{
    DirEntry, FileId, FileType, Filesystem, SizedEntry, Tree, TreeLimits, TreeSource,
    walk_tree_with,
};

use crate::Vmfs;
use crate::fd::Fd;

/// FDs read in advance per batch: bounds the memory a huge directory can hold in FDs.
const PREFETCH_WINDOW: usize = 64;

/// The rest of a directory's entries, with the FDs of the next few read in advance in one
/// batch (where [`Vmfs::read_fds_batched`] can).
struct Listing<'a> {
    fs: &'a Vmfs,
    entries: std::vec::IntoIter<DirEntry>,
    /// The next entries, each with its FD when it was read in advance.
    ahead: std::collections::VecDeque<(DirEntry, Option<Fd>)>,
    include_hidden: bool,
}

impl<'a> Listing<'a> {
    fn new(fs: &'a Vmfs, entries: Vec<DirEntry>, limits: &TreeLimits) -> Listing<'a> {
        Listing {
            fs,
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
}

impl Iterator for Listing<'_> {
    type Item = (DirEntry, Option<Fd>);

    fn next(&mut self) -> Option<(DirEntry, Option<Fd>)> {
        let fs = self.fs;
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
) -> Option<std::sync::Arc<[u8]>> {
    let fd = fd?;
    if limits.inline_max == 0
        || fd.file_length > limits.inline_max.min(*budget) as u64
        || crate::file_type(fd) != FileType::File
    {
        return None;
    }
    let bytes: std::sync::Arc<[u8]> = fs.ctx().resident(fd).ok().flatten()?.into();
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
fn listing<'a>(
    fs: &'a Vmfs,
    id: &FileId,
    fd: Option<&Fd>,
    limits: &TreeLimits,
) -> fscore::Result<Listing<'a>> {
    let entries = match fd {
        Some(fd) => fs.dir_entries(fd)?,
        None => fs.read_dir(id)?,
    };
    Ok(Listing::new(fs, entries, limits))
}

/// The volume's FDs as a [`TreeSource`]: the FD read to size an entry is the one its listing
/// decodes.
struct FdSource<'a> {
    fs: &'a Vmfs,
    limits: TreeLimits,
    /// Inline bytes the listing may still hold ([`TreeLimits::inline_total`]).
    inline_budget: usize,
}

impl<'a> TreeSource for FdSource<'a> {
    type Carry = Fd;
    type Listing = Listing<'a>;

    fn list(&mut self, tree: &Tree, dir: u32, fd: Option<Fd>) -> fscore::Result<Listing<'a>> {
        let id = &tree.entries[dir as usize].entry.id;
        listing(self.fs, id, fd.as_ref(), &self.limits)
    }

    fn size(&mut self, _: &Tree, _: u32, e: &DirEntry, pre: Option<Fd>) -> SizedEntry<Fd> {
        let (sizes, fd) = sizes(self.fs, &e.id, pre);
        let inline = if self.limits.inline_wanted(&e.name) {
            inline_bytes(self.fs, fd.as_ref(), &self.limits, &mut self.inline_budget)
        } else {
            None
        };
        SizedEntry {
            sizes,
            inline,
            carry: fd,
        }
    }
}

pub(crate) fn list_tree(fs: &Vmfs, limits: &TreeLimits) -> Tree {
    let mut source = FdSource {
        fs,
        limits: *limits,
        inline_budget: limits.inline_total,
    };
    walk_tree_with(&mut source, fs.root(), limits)
}
