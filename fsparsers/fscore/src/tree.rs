//! Whole-tree listings: every name under the root with its size, in one call.
//!
//! An inventory needs every file's name, parent and size. Asking [`Filesystem::read_dir`] and
//! then [`Filesystem::metadata`] for each file works everywhere, and is what
//! [`walk_tree`] does; a format that can do better (NTFS reads its whole MFT in one sequential
//! pass) overrides [`Filesystem::list_tree`]. Both produce the same entries in the same order,
//! so callers never see which one ran.

use std::sync::Arc;

use lun::ReadAt;

use crate::{DirEntry, FileId, FileType, Filesystem, FsError};

/// Bounds of one tree listing. A LUN is untrusted: a directory tree may be absurdly wide,
/// deep, or loop onto itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLimits {
    /// Entries listed at most (the root excluded); the listing stops there with
    /// [`TreeProblem::TooManyEntries`].
    pub max_entries: usize,
    /// Directory levels below the root that are expanded; deeper directories are listed but
    /// not entered ([`TreeProblem::TooDeep`]).
    pub max_depth: usize,
    /// Also list filesystem metadata files and NTFS DOS short names
    /// ([`DirEntry::metadata_file`], [`DirEntry::short_name`]).
    pub include_hidden: bool,
    /// Files whose bytes the listing holds anyway (NTFS resident data, inside the MFT record
    /// it decodes for the size) and that are at most this big come with their bytes in
    /// [`TreeEntry::inline`], saving the caller an [`Filesystem::open`] per small file; so do
    /// files asked for by [`TreeLimits::inline_extensions`]. 0 turns both off.
    pub inline_max: usize,
    /// Inline bytes of the whole listing at most; files past it come without. Bytes the
    /// listing holds anyway (resident data) are taken first, as they are met; files read for
    /// [`TreeLimits::inline_extensions`] share what is left. Which files get bytes once the
    /// budget runs out is up to the implementation.
    pub inline_total: usize,
    /// Extensions (lower case, without the dot: `&["vmx", "vmsd"]`) of the files wanted
    /// inline. Empty: every file whose bytes the listing holds anyway. Not empty: only files
    /// with one of these extensions (ASCII case-insensitive, as [`std::path::Path::extension`]
    /// finds it), and those even where the filesystem has to read them from elsewhere (NTFS
    /// non-resident data), so a caller that reads every such file does not open them one by
    /// one, and the listing keeps no bytes nobody wants. A filesystem may skip files it
    /// cannot read cheaply (compressed, sparse, fragmented): inline bytes stay an optional
    /// service.
    pub inline_extensions: &'static [&'static str],
}

impl TreeLimits {
    /// True when a file called `name` may come inline: [`TreeLimits::inline_extensions`] is
    /// empty or lists its extension.
    pub fn inline_wanted(&self, name: &str) -> bool {
        self.inline_extensions.is_empty() || self.inline_extension_listed(name)
    }

    /// True when the extension of `name` is one of [`TreeLimits::inline_extensions`].
    pub fn inline_extension_listed(&self, name: &str) -> bool {
        // A byte search: `rsplit_once('.')`'s searcher costs more than the scan of a name.
        let dot = name.as_bytes().iter().rposition(|&b| b == b'.');
        match dot.map(|i| (&name[..i], &name[i + 1..])) {
            Some((stem, ext)) if !stem.is_empty() => self
                .inline_extensions
                .iter()
                .any(|want| want.eq_ignore_ascii_case(ext)),
            _ => false,
        }
    }
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            max_entries: 4_000_000,
            max_depth: 64,
            include_hidden: false,
            inline_max: 0,
            inline_total: 64 << 20,
            inline_extensions: &[],
        }
    }
}

/// One entry of a tree listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Index in [`Tree::entries`] of the directory holding this name. The root is entry 0
    /// and is its own parent.
    pub parent: u32,
    /// Depth below the root (the root is 0, its children 1).
    pub depth: u32,
    /// The name, id, type and flags, as [`Filesystem::read_dir`] gives them. The root's name
    /// is empty.
    pub entry: DirEntry,
    /// Logical size of the default stream, as [`Filesystem::metadata`] reports it.
    pub size: u64,
    /// Allocated bytes, as [`Filesystem::metadata`] reports them.
    pub allocated: u64,
    /// The whole content of the default stream, when the listing had it at hand or read it
    /// for [`TreeLimits::inline_extensions`], and it is at most [`TreeLimits::inline_max`]
    /// bytes (see there). `None` says nothing: read the file.
    pub inline: Option<Arc<[u8]>>,
}

/// Something a listing could not list. The listing goes on past every problem except
/// [`TreeProblem::TooManyEntries`].
#[derive(Debug)]
pub enum TreeProblem {
    /// A directory could not be read; its contents are missing from the listing.
    UnreadableDir {
        /// Index of the directory in [`Tree::entries`].
        dir: u32,
        /// Why.
        error: FsError,
    },
    /// The metadata of a file could not be read; its size and allocation are listed as 0.
    UnreadableFile {
        /// Index of the file in [`Tree::entries`].
        entry: u32,
        /// Why.
        error: FsError,
    },
    /// A directory appears a second time (a cycle, or a directory with two names); the second
    /// occurrence is not listed.
    Cycle {
        /// Index of the directory holding the second occurrence.
        dir: u32,
        /// The name of the second occurrence.
        name: String,
    },
    /// A directory deeper than [`TreeLimits::max_depth`]: listed, not entered.
    TooDeep {
        /// Index of the directory.
        dir: u32,
    },
    /// [`TreeLimits::max_entries`] was reached; the listing stopped.
    TooManyEntries {
        /// The bound.
        limit: usize,
    },
}

/// A listing of a whole directory tree.
///
/// Order: depth-first pre-order from the root; the children of a directory come in
/// [`Filesystem::read_dir`] order, each directory's subtree right after its own entry.
/// Symbolic links are listed, never followed.
#[derive(Debug, Default)]
pub struct Tree {
    /// Entry 0 is the root.
    pub entries: Vec<TreeEntry>,
    /// What could not be listed.
    pub problems: Vec<TreeProblem>,
}

impl Tree {
    /// The absolute path of entry `i` (`/` for the root), built from the parent links.
    pub fn path(&self, i: u32) -> String {
        let mut names = Vec::new();
        let mut cur = i;
        // Parents always precede their children, so this walk ends; the bound is a guard.
        while cur != 0 && names.len() <= self.entries.len() {
            let e = &self.entries[cur as usize];
            names.push(e.entry.name.as_str());
            cur = e.parent;
        }
        if names.is_empty() {
            return "/".into();
        }
        let mut p = String::new();
        for n in names.iter().rev() {
            p.push('/');
            p.push_str(n);
        }
        p
    }
}

/// An entry's sizes as a listing reports them, and what its listing may reuse.
pub struct SizedEntry<C> {
    /// Size and allocated bytes, or why they could not be read.
    pub sizes: crate::Result<(u64, u64)>,
    /// The file's bytes, when the listing has them at hand ([`TreeLimits::inline_max`]).
    pub inline: Option<Arc<[u8]>>,
    /// Handed to [`TreeSource::list`] if the entry is a directory that gets listed.
    pub carry: Option<C>,
}

/// What [`walk_tree_with`] asks of a filesystem. The walk itself (order, filters, cycle, depth
/// and entry limits, problems) is the same for every implementation, so an override of
/// [`Filesystem::list_tree`] that walks through this trait differs from [`walk_tree`] only in
/// how it reads.
pub trait TreeSource {
    /// What sizing an entry hands to the listing of it, or a listing to the sizing of its
    /// entries (VMFS: a decoded file descriptor).
    type Carry;
    /// A directory's entries in [`Filesystem::read_dir`] order, each with anything read for
    /// it in advance.
    type Listing: Iterator<Item = (DirEntry, Option<Self::Carry>)>;
    /// Lists the directory at `tree.entries[dir]`, with what its sizing carried.
    fn list(
        &mut self,
        tree: &Tree,
        dir: u32,
        carry: Option<Self::Carry>,
    ) -> crate::Result<Self::Listing>;
    /// Sizes `e`, listed in the directory at `tree.entries[parent]` (the root: its own parent,
    /// 0, before anything is listed), with what its listing read in advance.
    fn size(
        &mut self,
        tree: &Tree,
        parent: u32,
        e: &DirEntry,
        pre: Option<Self::Carry>,
    ) -> SizedEntry<Self::Carry>;
    /// About how many entries the listing will hold, when the source knows (0 when not): the
    /// tree reserves room for them up front instead of growing, and copying, its entries
    /// again and again. Only a hint; room never touched costs no memory.
    fn expected_entries(&self) -> usize {
        0
    }
}

/// The walk of every tree listing: depth-first pre-order from `root`, each directory's entries
/// in listing order, `.`/`..`/empty names skipped, hidden ones unless asked for, a directory met
/// twice reported as a cycle, limits applied, problems collected.
pub fn walk_tree_with<S: TreeSource>(source: &mut S, root: FileId, limits: &TreeLimits) -> Tree {
    let root_entry = DirEntry {
        name: String::new(),
        id: root.clone(),
        file_type: FileType::Dir,
        metadata_file: false,
        short_name: false,
    };
    let mut tree = Tree::default();
    tree.entries.reserve(
        source
            .expected_entries()
            .min(limits.max_entries.saturating_add(1)),
    );
    // The root's sizes are best effort: a listing without them is still a listing.
    let sized = source.size(&tree, 0, &root_entry, None);
    let (size, allocated) = sized.sizes.unwrap_or((0, 0));
    tree.entries.push(TreeEntry {
        parent: 0,
        depth: 0,
        entry: root_entry,
        size,
        allocated,
        inline: None,
    });
    let mut seen_dirs = std::collections::HashSet::new();
    seen_dirs.insert(root);
    let mut stack: Vec<(u32, S::Listing)> = Vec::new();
    match source.list(&tree, 0, sized.carry) {
        Ok(l) => stack.push((0, l)),
        Err(error) => tree
            .problems
            .push(TreeProblem::UnreadableDir { dir: 0, error }),
    }
    while let Some((dir, listing)) = stack.last_mut() {
        let dir = *dir;
        let Some((e, pre)) = listing.next() else {
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
        let sized = source.size(&tree, dir, &e, pre);
        let (size, allocated) = match sized.sizes {
            Ok(s) => s,
            Err(error) => {
                tree.problems
                    .push(TreeProblem::UnreadableFile { entry: n, error });
                (0, 0)
            }
        };
        let is_dir = e.file_type == FileType::Dir;
        tree.entries.push(TreeEntry {
            parent: dir,
            depth,
            entry: e,
            size,
            allocated,
            inline: sized.inline,
        });
        if is_dir {
            if depth as usize >= limits.max_depth {
                tree.problems.push(TreeProblem::TooDeep { dir: n });
            } else {
                match source.list(&tree, n, sized.carry) {
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

/// A directory listing with nothing read in advance, as a [`TreeSource::Listing`].
pub type PlainListing =
    std::iter::Map<std::vec::IntoIter<DirEntry>, fn(DirEntry) -> (DirEntry, Option<()>)>;

/// `entries` as a [`PlainListing`].
pub fn plain_listing(entries: Vec<DirEntry>) -> PlainListing {
    fn no_carry(e: DirEntry) -> (DirEntry, Option<()>) {
        (e, None)
    }
    entries
        .into_iter()
        .map(no_carry as fn(DirEntry) -> (DirEntry, Option<()>))
}

/// [`TreeSource`] over [`Filesystem::read_dir`] and [`Filesystem::metadata`].
struct ReadDirSource<'f, F: ?Sized> {
    fs: &'f F,
    limits: &'f TreeLimits,
    /// Inline bytes still allowed ([`TreeLimits::inline_total`]).
    inline_budget: usize,
}

impl<F: Filesystem + ?Sized> ReadDirSource<'_, F> {
    /// The whole content of `e` (of `size` bytes) when [`TreeLimits::inline_extensions`] asks
    /// for it and the budget allows; a file that does not read comes without.
    fn inline(&mut self, e: &DirEntry, size: u64) -> Option<Arc<[u8]>> {
        let len = usize::try_from(size).ok()?;
        if self.limits.inline_max == 0
            || e.file_type != FileType::File
            || len > self.limits.inline_max.min(self.inline_budget)
            || !self.limits.inline_extension_listed(&e.name)
        {
            return None;
        }
        let src = self.fs.open(&e.id).ok()?;
        // Checked against the listed size before allocating; the source must agree with it.
        if src.size() != size {
            return None;
        }
        let mut bytes = vec![0u8; len];
        src.read_exact_at(0, &mut bytes).ok()?;
        self.inline_budget -= len;
        Some(Arc::from(bytes))
    }
}

impl<F: Filesystem + ?Sized> TreeSource for ReadDirSource<'_, F> {
    type Carry = ();
    type Listing = PlainListing;

    fn list(&mut self, tree: &Tree, dir: u32, _: Option<()>) -> crate::Result<PlainListing> {
        let id = &tree.entries[dir as usize].entry.id;
        Ok(plain_listing(self.fs.read_dir(id)?))
    }

    fn size(&mut self, _: &Tree, _: u32, e: &DirEntry, _: Option<()>) -> SizedEntry<()> {
        let sizes = self.fs.metadata(&e.id).map(|m| (m.size, m.allocated));
        let inline = match sizes {
            Ok((size, _)) => self.inline(e, size),
            Err(_) => None,
        };
        SizedEntry {
            sizes,
            inline,
            carry: None,
        }
    }
}

/// Lists a tree through [`Filesystem::read_dir`] and [`Filesystem::metadata`]: the reference
/// behaviour of [`Filesystem::list_tree`], which every override must reproduce. Files wanted
/// by [`TreeLimits::inline_extensions`] are read through [`Filesystem::open`]; no other file
/// comes inline.
pub fn walk_tree<F: Filesystem + ?Sized>(fs: &F, limits: &TreeLimits) -> Tree {
    let mut source = ReadDirSource {
        fs,
        limits,
        inline_budget: limits.inline_total,
    };
    walk_tree_with(&mut source, fs.root(), limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileMapping, Metadata, Result, VolumeInfo};
    use lun::Source;
    use std::collections::HashMap;

    /// A filesystem made of a map: directory ino -> entries. Directory 2 holds itself.
    struct MapFs {
        dirs: HashMap<u64, Vec<DirEntry>>,
    }

    fn ent(name: &str, ino: u64, dir: bool) -> DirEntry {
        DirEntry {
            name: name.into(),
            id: FileId::new(ino),
            file_type: if dir { FileType::Dir } else { FileType::File },
            metadata_file: false,
            short_name: false,
        }
    }

    impl Filesystem for MapFs {
        fn info(&self) -> VolumeInfo {
            VolumeInfo {
                fs: crate::FsKind::Vmfs6,
                label: "map".into(),
                uuid: String::new(),
                block_size: 1,
                size: 0,
            }
        }
        fn root(&self) -> FileId {
            FileId::new(1)
        }
        fn read_dir(&self, dir: &FileId) -> Result<Vec<DirEntry>> {
            self.dirs
                .get(&dir.ino)
                .cloned()
                .ok_or_else(|| FsError::NotFound {
                    path: format!("#{}", dir.ino),
                })
        }
        fn metadata(&self, id: &FileId) -> Result<Metadata> {
            Ok(Metadata {
                id: id.clone(),
                file_type: FileType::File,
                size: id.ino * 10,
                allocated: id.ino,
                links: 1,
                created: None,
                modified: None,
                accessed: None,
                changed: None,
                mode: None,
                symlink_target: None,
                streams: Vec::new(),
                metadata_file: false,
            })
        }
        fn open(&self, id: &FileId) -> Result<Source> {
            let bytes = vec![id.ino as u8; id.ino as usize * 10];
            Ok(std::sync::Arc::new(lun::MemSource::new("map file", bytes)))
        }
        fn extents(&self, _: &FileId) -> Result<FileMapping> {
            Ok(FileMapping::NotMappable(crate::NotMappable::NotAFile))
        }
        fn device(&self) -> Source {
            std::sync::Arc::new(lun::MemSource::new("map", Vec::new()))
        }
    }

    fn sample() -> MapFs {
        let mut dirs = HashMap::new();
        dirs.insert(
            1,
            vec![ent("a", 2, true), ent("f", 3, false), ent("gone", 9, true)],
        );
        dirs.insert(
            2,
            vec![ent("x", 4, false), ent("self", 2, true), ent("d", 5, true)],
        );
        dirs.insert(5, vec![ent("y", 6, false)]);
        MapFs { dirs }
    }

    #[test]
    fn pre_order_with_sizes_and_problems() {
        let t = walk_tree(&sample(), &TreeLimits::default());
        let paths: Vec<String> = (0..t.entries.len() as u32).map(|i| t.path(i)).collect();
        assert_eq!(paths, ["/", "/a", "/a/x", "/a/d", "/a/d/y", "/f", "/gone"]);
        assert_eq!(t.entries[4].depth, 3);
        assert_eq!((t.entries[4].size, t.entries[4].allocated), (60, 6));
        assert!(matches!(t.problems[0], TreeProblem::Cycle { dir: 1, ref name } if name == "self"));
        assert!(matches!(
            t.problems[1],
            TreeProblem::UnreadableDir { dir: 6, .. }
        ));
        assert_eq!(t.problems.len(), 2);
    }

    #[test]
    fn limits_stop_the_walk() {
        let limits = TreeLimits {
            max_entries: 3,
            max_depth: 1,
            ..TreeLimits::default()
        };
        let t = walk_tree(&sample(), &limits);
        let paths: Vec<String> = (0..t.entries.len() as u32).map(|i| t.path(i)).collect();
        assert_eq!(paths, ["/", "/a", "/f", "/gone"]);
        assert!(
            t.problems
                .iter()
                .any(|p| matches!(p, TreeProblem::TooDeep { dir: 1 }))
        );
        let t = walk_tree(
            &sample(),
            &TreeLimits {
                max_entries: 2,
                ..TreeLimits::default()
            },
        );
        assert_eq!(t.entries.len(), 3);
        assert!(matches!(
            t.problems.last(),
            Some(TreeProblem::TooManyEntries { limit: 2 })
        ));
    }

    #[test]
    fn listed_extensions_come_inline_through_open() {
        let mut dirs = HashMap::new();
        dirs.insert(
            1,
            vec![
                ent("a.VMX", 3, false),
                ent("b.vmsd", 4, false),
                ent("c.txt", 5, false),
                ent(".vmx", 6, false),
                ent("d.vmx", 7, true),
                ent("big.vmx", 9, false),
            ],
        );
        dirs.insert(7, vec![ent("e.vmx", 2, false)]);
        let fs = MapFs { dirs };
        let limits = TreeLimits {
            inline_max: 80,
            inline_extensions: &["vmx", "vmsd"],
            ..TreeLimits::default()
        };
        let t = walk_tree(&fs, &limits);
        let inline: Vec<(String, usize)> = (0..t.entries.len() as u32)
            .filter_map(|i| Some((t.path(i), t.entries[i as usize].inline.as_ref()?.len())))
            .collect();
        assert_eq!(
            inline,
            [
                ("/a.VMX".to_string(), 30),
                ("/b.vmsd".to_string(), 40),
                ("/d.vmx/e.vmx".to_string(), 20)
            ]
        );
        assert_eq!(t.entries[1].inline.as_deref(), Some(&[3u8; 30][..]));
        // The budget: the first file fits, the second does not, the third does.
        let t = walk_tree(
            &fs,
            &TreeLimits {
                inline_total: 50,
                ..limits
            },
        );
        let got: Vec<bool> = t.entries.iter().map(|e| e.inline.is_some()).collect();
        assert_eq!(got, [false, true, false, false, false, false, true, false]);
        // Off without inline_max or without extensions.
        for limits in [
            TreeLimits {
                inline_max: 0,
                ..limits
            },
            TreeLimits {
                inline_extensions: &[],
                ..limits
            },
        ] {
            assert!(
                walk_tree(&fs, &limits)
                    .entries
                    .iter()
                    .all(|e| e.inline.is_none())
            );
        }
    }

    #[test]
    fn extension_match_is_ascii_case_insensitive_and_needs_a_stem() {
        let l = TreeLimits {
            inline_extensions: &["vmx"],
            ..TreeLimits::default()
        };
        assert!(l.inline_extension_listed("a.vmx"));
        assert!(l.inline_extension_listed("a.b.VmX"));
        assert!(l.inline_extension_listed("..vmx"));
        assert!(!l.inline_extension_listed(".vmx"));
        assert!(!l.inline_extension_listed("vmx"));
        assert!(!l.inline_extension_listed("a.vmx~"));
        assert!(!l.inline_extension_listed("a.vmxf"));
        assert!(!l.inline_extension_listed("a.vmx.lck"));
    }
}
