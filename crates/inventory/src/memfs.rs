//! An in-memory [`Filesystem`], for tests, benchmarks and demos: a tree of directories and
//! files whose contents are either bytes or a prefix followed by zeros (so a 1 TiB flat
//! extent costs nothing). NTFS-kind trees match names case-insensitively, as NTFS does.

use std::collections::HashMap;
use std::sync::Arc;

use fscore::{
    DirEntry, FileId, FileMapping, FileType, Filesystem, FsError, FsKind, Metadata, NotMappable,
    VolumeInfo,
};
use lun::{LunError, MemSource, ReadAt, Source};

#[derive(Clone)]
enum Node {
    Dir(Vec<(String, u64)>),
    File {
        prefix: Arc<[u8]>,
        size: u64,
        allocated: u64,
    },
    Symlink(String),
    /// A directory whose listing fails (models a corrupt index).
    Broken,
}

/// The in-memory filesystem.
pub struct MemFs {
    info: VolumeInfo,
    nodes: Vec<Node>,
}

/// Builds a [`MemFs`].
pub struct MemFsBuilder {
    info: VolumeInfo,
    nodes: Vec<Node>,
    dirs: HashMap<String, u64>,
}

impl MemFs {
    /// A builder for an empty volume of `fs` kind.
    pub fn builder(fs: FsKind, label: &str, uuid: &str) -> MemFsBuilder {
        let mut dirs = HashMap::new();
        dirs.insert(String::new(), 0);
        MemFsBuilder {
            info: VolumeInfo {
                fs,
                label: label.to_string(),
                uuid: uuid.to_string(),
                block_size: if fs == FsKind::Ntfs { 4096 } else { 1 << 20 },
                size: 1 << 40,
            },
            nodes: vec![Node::Dir(Vec::new())],
            dirs,
        }
    }

    fn node(&self, id: &FileId) -> Result<&Node, FsError> {
        self.nodes
            .get(id.ino as usize)
            .ok_or_else(|| FsError::NotFound {
                path: format!("#{}", id.ino),
            })
    }
}

impl MemFsBuilder {
    fn key(&self, path: &str) -> String {
        let p = path.trim_matches('/');
        if self.info.fs == FsKind::Ntfs {
            p.to_lowercase()
        } else {
            p.to_string()
        }
    }

    /// Creates a directory and its parents; returns its inode number.
    pub fn dir(&mut self, path: &str) -> u64 {
        let key = self.key(path);
        if let Some(&ino) = self.dirs.get(&key) {
            return ino;
        }
        let trimmed = path.trim_matches('/');
        let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        let parent = self.dir(parent);
        let ino = self.nodes.len() as u64;
        self.nodes.push(Node::Dir(Vec::new()));
        if let Node::Dir(children) = &mut self.nodes[parent as usize] {
            children.push((name.to_string(), ino));
        }
        self.dirs.insert(key, ino);
        ino
    }

    fn add(&mut self, path: &str, node: Node) -> &mut Self {
        let trimmed = path.trim_matches('/');
        let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        let parent = self.dir(parent);
        let ci = self.info.fs == FsKind::Ntfs;
        let is_dir = matches!(node, Node::Broken);
        // Writing a path again replaces the file, as on a real filesystem.
        let existing = match &self.nodes[parent as usize] {
            Node::Dir(children) => children
                .iter()
                .find(|(n, _)| {
                    if ci {
                        n.to_lowercase() == name.to_lowercase()
                    } else {
                        n == name
                    }
                })
                .map(|(_, ino)| *ino),
            _ => None,
        };
        if let Some(ino) = existing {
            self.nodes[ino as usize] = node;
        } else {
            let ino = self.nodes.len() as u64;
            self.nodes.push(node);
            if let Node::Dir(children) = &mut self.nodes[parent as usize] {
                children.push((name.to_string(), ino));
            }
        }
        if is_dir && let Some(ino) = existing.or(Some(self.nodes.len() as u64 - 1)) {
            let key = self.key(path);
            self.dirs.insert(key, ino);
        }
        self
    }

    /// A file with these bytes.
    pub fn file(&mut self, path: &str, data: impl Into<Vec<u8>>) -> &mut Self {
        let data: Vec<u8> = data.into();
        let size = data.len() as u64;
        self.add(
            path,
            Node::File {
                prefix: data.into(),
                size,
                allocated: size.next_multiple_of(4096),
            },
        )
    }

    /// A file of `size` bytes: `prefix`, then zeros; `allocated` bytes on disk.
    pub fn sparse_file(
        &mut self,
        path: &str,
        prefix: impl Into<Vec<u8>>,
        size: u64,
        allocated: u64,
    ) -> &mut Self {
        let prefix: Vec<u8> = prefix.into();
        self.add(
            path,
            Node::File {
                prefix: prefix.into(),
                size,
                allocated,
            },
        )
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.add(path, Node::Symlink(target.to_string()))
    }

    /// A directory whose listing fails with a corruption error.
    pub fn broken_dir(&mut self, path: &str) -> &mut Self {
        self.add(path, Node::Broken)
    }

    /// The filesystem.
    pub fn build(&mut self) -> MemFs {
        MemFs {
            info: self.info.clone(),
            nodes: std::mem::take(&mut self.nodes),
        }
    }
}

struct PrefixSource {
    name: String,
    prefix: Arc<[u8]>,
    size: u64,
}

impl ReadAt for PrefixSource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(LunError::OutOfRange {
                name: self.name.clone(),
                offset,
                len: buf.len() as u64,
                size: self.size,
            });
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = if at < self.prefix.len() as u64 {
                self.prefix[at as usize]
            } else {
                0
            };
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl Filesystem for MemFs {
    fn info(&self) -> VolumeInfo {
        self.info.clone()
    }

    fn root(&self) -> FileId {
        FileId::new(0)
    }

    fn read_dir(&self, dir: &FileId) -> fscore::Result<Vec<DirEntry>> {
        match self.node(dir)? {
            Node::Dir(children) => Ok(children
                .iter()
                .map(|(name, ino)| DirEntry {
                    name: name.clone(),
                    id: FileId::new(*ino),
                    file_type: match &self.nodes[*ino as usize] {
                        Node::Dir(_) | Node::Broken => FileType::Dir,
                        Node::File { .. } => FileType::File,
                        Node::Symlink(_) => FileType::Symlink,
                    },
                    metadata_file: false,
                    short_name: false,
                })
                .collect()),
            Node::Broken => Err(FsError::Corrupt {
                fs: "memfs",
                device: "memory".into(),
                structure: "directory".into(),
                offset: dir.ino,
                detail: "deliberately broken directory".into(),
            }),
            _ => Err(FsError::NotADirectory {
                path: format!("#{}", dir.ino),
            }),
        }
    }

    fn metadata(&self, id: &FileId) -> fscore::Result<Metadata> {
        let node = self.node(id)?;
        let (file_type, size, allocated, target) = match node {
            Node::Dir(_) | Node::Broken => (FileType::Dir, 0, 0, None),
            Node::File {
                size, allocated, ..
            } => (FileType::File, *size, *allocated, None),
            Node::Symlink(t) => (FileType::Symlink, t.len() as u64, 0, Some(t.clone())),
        };
        Ok(Metadata {
            id: id.clone(),
            file_type,
            size,
            allocated,
            links: 1,
            created: None,
            modified: None,
            accessed: None,
            changed: None,
            mode: None,
            symlink_target: target,
            streams: Vec::new(),
            metadata_file: false,
        })
    }

    fn open(&self, id: &FileId) -> fscore::Result<Source> {
        match self.node(id)? {
            Node::File { prefix, size, .. } => Ok(Arc::new(PrefixSource {
                name: format!("memfs#{}", id.ino),
                prefix: prefix.clone(),
                size: *size,
            })),
            _ => Err(FsError::NotADirectory {
                path: format!("#{} is not a file", id.ino),
            }),
        }
    }

    fn extents(&self, _id: &FileId) -> fscore::Result<FileMapping> {
        Ok(FileMapping::NotMappable(NotMappable::Resident))
    }

    fn device(&self) -> Source {
        Arc::new(MemSource::new("memfs", Vec::new()))
    }

    fn lookup(&self, path: &str) -> fscore::Result<FileId> {
        let (path, _) = fscore::split_stream(path)?;
        let mut cur = self.root();
        for comp in fscore::split_path(path)? {
            let entries = self.read_dir(&cur)?;
            let ci = self.info.fs == FsKind::Ntfs;
            cur = entries
                .into_iter()
                .find(|e| {
                    if ci {
                        e.name.to_lowercase() == comp.to_lowercase()
                    } else {
                        e.name == comp
                    }
                })
                .map(|e| e.id)
                .ok_or_else(|| FsError::NotFound {
                    path: path.to_string(),
                })?;
        }
        Ok(cur)
    }
}
