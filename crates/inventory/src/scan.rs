//! The scan: walk each datastore once, index every name, then assemble VMs from their
//! configurations. Only configurations, descriptors and virtual disk headers are read.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::borrow::Cow;
use std::hash::Hasher;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fscore::{FileId, FileType, Filesystem, FsKind, TreeLimits, TreeProblem, VolumeInfo};
use hashbrown::HashTable;
use lun::{ReadAt, ReadAtExt};

use crate::model::*;
use crate::text::{
    ascii_lower_word, contains_ignore_ascii_case, ends_with_ignore_ascii_case, rfind_byte,
    rsplit_once_byte, split_byte, split_slashes, word_at,
};
use crate::{InventoryError, hyperv, pipeline, vhd, vhdx, vmc, vmdk, vmsd, vmx};

/// One registered LUN with its opened filesystem.
#[derive(Clone)]
pub struct Datastore {
    /// The LUN id the API knows it by.
    pub lun: String,
    /// The filesystem on it.
    pub fs: Arc<dyn Filesystem>,
    /// What the filesystem says of itself (kind, label, UUID).
    pub info: VolumeInfo,
}

impl Datastore {
    /// A datastore for `fs` on LUN `lun`.
    pub fn new(lun: impl Into<String>, fs: Arc<dyn Filesystem>) -> Self {
        let info = fs.info();
        Datastore {
            lun: lun.into(),
            fs,
            info,
        }
    }
}

/// Safety bounds of a scan.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest configuration or descriptor read (bigger ones are a problem, not read).
    pub max_config_bytes: u64,
    /// Largest `.vmcx` scanned for disk paths.
    pub max_vmcx_bytes: u64,
    /// Directory entries indexed per datastore.
    pub max_entries: usize,
    /// Directory depth walked.
    pub max_depth: usize,
    /// Layers followed in one disk chain.
    pub max_chain: usize,
    /// Threads that assemble VMs, the calling thread included (each VM's files, configuration,
    /// disk chains; the order-dependent end runs in order on the calling thread). 0 picks the
    /// number of cores (at most 4); 1 does everything on the calling thread. The result is the
    /// same whatever the number.
    pub threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_config_bytes: 1 << 20,
            max_vmcx_bytes: 16 << 20,
            max_entries: 5_000_000,
            max_depth: 64,
            max_chain: 255,
            threads: 0,
        }
    }
}

/// Scans the datastores with the default [`Limits`].
pub fn scan(datastores: &[Datastore]) -> Inventory {
    scan_with(datastores, &Limits::default())
}

/// Scans the datastores. Never fails as a whole: what goes wrong is recorded as
/// [`Problem`]s on the VM, the orphan disk, or the inventory.
pub fn scan_with(datastores: &[Datastore], limits: &Limits) -> Inventory {
    let mut vms = Vec::new();
    let found = scan_each(
        datastores,
        limits,
        |vm| vm,
        |vm| {
            vms.push(vm);
            ControlFlow::Continue(())
        },
    );
    Inventory {
        vms,
        orphan_disks: found.orphan_disks,
        problems: found.problems,
    }
}

/// What a scan finds besides the VMs, which [`scan_each`] hands over one by one.
#[derive(Debug, Default)]
pub struct Findings {
    /// Virtual disks no VM references (none when the caller stopped the scan early).
    pub orphan_disks: Vec<OrphanDisk>,
    /// Problems not tied to one VM (an unreadable directory, a walk limit).
    pub problems: Vec<Problem>,
}

/// [`scan_with`], handing over each VM as soon as it is complete instead of holding them all:
/// `map` runs on any of the scan's threads (serialise the VM there), and `on_item` receives
/// what it returns on the calling thread, in the inventory's order (LUN, then config path).
/// The caller writes VMs out while later ones are still being assembled, and memory holds
/// only the VMs in flight. `on_item` returning [`ControlFlow::Break`] stops the scan (a
/// closed output, say); the findings then hold the problems met so far and no orphan disks.
pub fn scan_each<T: Send>(
    datastores: &[Datastore],
    limits: &Limits,
    map: impl Fn(Vm) -> T + Sync,
    mut on_item: impl FnMut(T) -> ControlFlow<()>,
) -> Findings {
    let mut problems = Vec::new();
    let indexes: Vec<Index> = datastores
        .iter()
        .map(|ds| Index::walk(ds, limits, &mut problems))
        .collect();
    let scanner = Scanner {
        ds: datastores,
        claimed: Claims::new(&indexes),
        idx: indexes,
        limits: limits.clone(),
        luns: datastores
            .iter()
            .map(|d| Arc::from(d.lun.as_str()))
            .collect(),
    };
    let started = std::time::Instant::now();
    let jobs = scanner.jobs();
    let mut seen: HashSet<String> = HashSet::default();
    // Two clones of one LUN registered at once give equal ids; keep them apart, in order.
    let mut name_vm = |mut vm: Vm| {
        if !seen.contains(&vm.id) {
            seen.insert(vm.id.clone());
        } else {
            let base = std::mem::take(&mut vm.id);
            vm.id = (2..)
                .map(|n| format!("{base}-{n}"))
                .find(|id| !seen.contains(id))
                .unwrap_or_default();
            seen.insert(vm.id.clone());
        }
        vm
    };
    let flow = std::thread::scope(|s| {
        if scanner.read_ahead_worth_it() {
            s.spawn(|| scanner.read_ahead());
        }
        scanner.run(&jobs, &mut name_vm, &map, &mut on_item)
    });
    tracing::debug!(
        vms = jobs.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "VMs assembled and handed over"
    );
    Findings {
        orphan_disks: if flow.is_continue() {
            scanner.orphans()
        } else {
            Vec::new()
        },
        problems,
    }
}

/// One indexed directory entry.
struct Entry {
    path: String,
    name: String,
    /// [`ext_of`] the name, worked out once: it is asked of every name several times.
    ext: Ext,
    id: FileId,
    dir: bool,
    parent: u32,
    /// Size and allocated bytes, as the filesystem's listing reported them.
    size: u64,
    allocated: u64,
    /// The file's bytes, when the listing had them at hand (NTFS resident data).
    inline: Option<Arc<[u8]>>,
}

/// Every name of one datastore.
struct Index {
    case_insensitive: bool,
    entries: Vec<Entry>,
    /// Entry numbers, found by (parent, name) hashed without allocating: names are compared
    /// case-insensitively on NTFS.
    by_name: HashTable<u32>,
    /// Children of each entry (empty for files).
    children: Vec<Vec<u32>>,
}

const ROOT: u32 = 0;

/// Hash of a name in a directory; case-folded when the datastore is case-insensitive.
fn name_hash(parent: u32, name: &str, case_insensitive: bool) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u32(parent);
    if !case_insensitive {
        h.write(name.as_bytes());
    } else if name.is_ascii() {
        hash_folded(&mut h, name.as_bytes());
    } else {
        // The name lower-cased char by char, as `name_eq` compares (not `str::to_lowercase`,
        // whose final-sigma rule `name_eq` does not apply), hashed the same way: names it
        // finds equal (an ASCII `k` and the Kelvin sign, say) hash alike.
        let lower: String = name.chars().flat_map(char::to_lowercase).collect();
        hash_folded(&mut h, lower.as_bytes());
    }
    h.finish()
}

/// Feeds `bytes` to `h` with ASCII letters lower-cased, a word at a time. A name of eight
/// bytes or more ends with the word that overlaps the one before (reading a short tail into a
/// buffer and back would stall on the buffer's stores); a shorter one is one word built in
/// registers.
fn hash_folded(h: &mut rustc_hash::FxHasher, bytes: &[u8]) {
    let n = bytes.len();
    if n < 8 {
        let w = bytes
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
        h.write_u64(ascii_lower_word(w));
    } else {
        let mut at = 0;
        while at + 8 <= n {
            h.write_u64(ascii_lower_word(word_at(bytes, at)));
            at += 8;
        }
        if at < n {
            h.write_u64(ascii_lower_word(word_at(bytes, n - 8)));
        }
    }
    h.write_usize(n);
}

fn name_eq(a: &str, b: &str, case_insensitive: bool) -> bool {
    // References nearly always spell a name as it is stored: one comparison of the bytes.
    if a == b {
        true
    } else if !case_insensitive {
        false
    } else if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
    }
}

impl Index {
    /// The form of `path` ids are derived from: lower-case where names are case-insensitive.
    fn key(&self, path: &str) -> String {
        if self.case_insensitive {
            path.to_lowercase()
        } else {
            path.to_string()
        }
    }

    fn walk(ds: &Datastore, limits: &Limits, problems: &mut Vec<Problem>) -> Index {
        let started = std::time::Instant::now();
        let tree = ds.fs.list_tree(&TreeLimits {
            max_entries: limits.max_entries,
            max_depth: limits.max_depth,
            include_hidden: false,
            inline_max: INLINE_MAX,
            inline_extensions: LISTING_READS,
            ..TreeLimits::default()
        });
        tracing::debug!(
            lun = %ds.lun,
            entries = tree.entries.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "tree listed"
        );
        let case_insensitive = ds.info.fs == FsKind::Ntfs;
        let mut ix = Index {
            case_insensitive,
            entries: Vec::with_capacity(tree.entries.len()),
            by_name: HashTable::with_capacity(tree.entries.len()),
            children: Vec::with_capacity(tree.entries.len()),
        };
        // Tree entry -> index entry; symbolic links are not followed, so not indexed.
        let mut renumber: Vec<u32> = Vec::with_capacity(tree.entries.len());
        for (t, te) in tree.entries.into_iter().enumerate() {
            if t > 0 && te.entry.file_type == FileType::Symlink {
                renumber.push(u32::MAX);
                continue;
            }
            let n = ix.entries.len() as u32;
            renumber.push(n);
            let parent = if t == 0 {
                ROOT
            } else {
                renumber[te.parent as usize]
            };
            let path = if t == 0 {
                "/".to_string()
            } else {
                let pp = &ix.entries[parent as usize].path;
                let mut p = String::with_capacity(pp.len() + 1 + te.entry.name.len());
                if pp != "/" {
                    p.push_str(pp);
                }
                p.push('/');
                p.push_str(&te.entry.name);
                p
            };
            if t > 0 {
                let hash = name_hash(parent, &te.entry.name, case_insensitive);
                let entries = &ix.entries;
                ix.by_name.insert_unique(hash, n, |&k| {
                    let e = &entries[k as usize];
                    name_hash(e.parent, &e.name, case_insensitive)
                });
                ix.children[parent as usize].push(n);
            }
            ix.entries.push(Entry {
                path,
                ext: ext_of(&te.entry.name),
                name: te.entry.name,
                id: te.entry.id,
                dir: te.entry.file_type == FileType::Dir,
                parent,
                size: te.size,
                allocated: te.allocated,
                // Bytes of the `LISTING_READS` files only: the listing was asked for no others.
                inline: te.inline,
            });
            ix.children.push(Vec::new());
        }
        let path_of = |t: u32| -> String {
            match renumber.get(t as usize) {
                Some(&n) if n != u32::MAX => ix.entries[n as usize].path.clone(),
                _ => "/".into(),
            }
        };
        for p in tree.problems {
            problems.push(match p {
                TreeProblem::UnreadableDir { dir, error } => Problem::new(
                    "io",
                    Some(&path_of(dir)),
                    format!("LUN {}: cannot list directory: {error}", ds.lun),
                ),
                TreeProblem::UnreadableFile { entry, error } => Problem::new(
                    "io",
                    Some(&path_of(entry)),
                    format!("LUN {}: cannot read file metadata: {error}", ds.lun),
                ),
                TreeProblem::Cycle { dir, name } => Problem::new(
                    "walk-loop",
                    Some(&path_of(dir)),
                    format!(
                        "LUN {}: directory {name} appears twice (a cycle); not walked again",
                        ds.lun
                    ),
                ),
                TreeProblem::TooDeep { dir } => Problem::new(
                    "walk-limit",
                    Some(&path_of(dir)),
                    format!(
                        "LUN {}: deeper than {} levels; not walked",
                        ds.lun, limits.max_depth
                    ),
                ),
                TreeProblem::TooManyEntries { limit } => Problem::new(
                    "walk-limit",
                    None,
                    format!(
                        "LUN {}: more than {limit} directory entries; the rest is not scanned",
                        ds.lun
                    ),
                ),
            });
        }
        tracing::debug!(
            lun = %ds.lun,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "indexed"
        );
        ix
    }

    /// The child of `dir` called `name`.
    fn child(&self, dir: u32, name: &str) -> Option<u32> {
        let ci = self.case_insensitive;
        self.by_name
            .find(name_hash(dir, name, ci), |&k| {
                let e = &self.entries[k as usize];
                e.parent == dir && name_eq(&e.name, name, ci)
            })
            .copied()
    }

    /// The entry at an absolute path (`/` separated, already normalised by [`join`]).
    fn lookup(&self, path: &str) -> Option<u32> {
        let mut cur = ROOT;
        for comp in split_byte(path, b'/').filter(|c| !c.is_empty()) {
            cur = self.child(cur, comp)?;
        }
        Some(cur)
    }

    /// The entry `rel` (`/` or `\\` separated, `.` and `..` allowed) names relative to the
    /// directory at `base`, found by walking the index without building the joined path.
    /// `None` also when a component on the way is missing, even one a later `..` would step
    /// back out of: the caller then resolves the joined path ([`join`]), as a path string
    /// does.
    fn lookup_relative(&self, base: &str, rel: &str) -> Option<u32> {
        let mut cur = self.lookup(base)?;
        for comp in split_slashes(rel) {
            match comp {
                "" | "." => {}
                ".." => cur = self.entries.get(cur as usize)?.parent,
                c => cur = self.child(cur, c)?,
            }
        }
        Some(cur)
    }

    fn kids(&self, dir: u32) -> &[u32] {
        self.children
            .get(dir as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// A file found on a datastore, or a reference to one that is not there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Loc {
    Found(usize, u32),
    Missing { path: String, needs: Option<String> },
}

/// A file name's extension, lower-cased, kept on the stack: it is asked of every name of the
/// datastore several times. Extensions longer than [`Ext::MAX`] bytes or not ASCII, which no
/// VM file has, read as empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ext {
    bytes: [u8; Ext::MAX],
    len: u8,
}

impl Ext {
    const MAX: usize = 8;

    /// The extension's bytes (ASCII, lower-case). Matched as bytes: turning them back into a
    /// `str` validates them each time (callgrind: ≈ 80 instructions, asked 50,000 times an
    /// inventory of 1,000 VMs).
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    #[cfg(test)]
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl PartialEq<&str> for Ext {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

fn ext_of(name: &str) -> Ext {
    let mut ext = Ext {
        bytes: [0; Ext::MAX],
        len: 0,
    };
    // Only the last `Ext::MAX + 1` bytes can hold the dot of an extension short enough.
    let bytes = name.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(Ext::MAX + 1)..];
    if let Some(dot) = rfind_byte(b'.', tail) {
        let e = &tail[dot + 1..];
        if e.is_ascii() {
            // Lower-cased as one word: the zero padding stays zero.
            ext.bytes[..e.len()].copy_from_slice(e);
            ext.bytes = ascii_lower_word(u64::from_le_bytes(ext.bytes)).to_le_bytes();
            ext.len = e.len() as u8;
        }
    }
    ext
}

fn stem_of(name: &str) -> &str {
    match rfind_byte(b'.', name.as_bytes()) {
        // A dot is ASCII, so the cut is at a char boundary.
        Some(dot) => &name[..dot],
        None => name,
    }
}

fn parent_path(path: &str) -> &str {
    match rfind_byte(b'/', path.as_bytes()) {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Splits a reference on both separators, resolving `.` and `..` against `base`.
fn join(base: &str, rel: &str) -> String {
    let mut out = String::with_capacity(base.len() + rel.len() + 2);
    for c in split_byte(base, b'/').chain(split_slashes(rel)) {
        match c {
            "" | "." => {}
            ".." => {
                let cut = rfind_byte(b'/', out.as_bytes()).unwrap_or(0);
                out.truncate(cut);
            }
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// How a configuration names a file.
#[derive(Debug, PartialEq, Eq)]
enum RefKind<'a> {
    Relative(&'a str),
    VmfsVolume {
        volume: &'a str,
        rest: &'a str,
    },
    /// An absolute path from another host: Windows (`D:\…`, `\\server\share\…`,
    /// `\\?\Volume{…}\…`) or Unix. `root` is what it needs (drive, share, volume).
    Foreign {
        root: String,
        comps: Vec<&'a str>,
    },
    Device(&'a str),
}

fn classify(r: &str) -> RefKind<'_> {
    if let Some(rest) = r.strip_prefix("/vmfs/volumes/") {
        let (volume, rest) = rest.split_once('/').unwrap_or((rest, ""));
        return RefKind::VmfsVolume { volume, rest };
    }
    if r.starts_with("/vmfs/devices/") || r.starts_with("/dev/") || r.starts_with("\\\\.\\") {
        return RefKind::Device(r);
    }
    let mut s = r;
    let mut root = String::new();
    let mut win32_namespace = false;
    if let Some(x) = s.strip_prefix("\\\\?\\") {
        s = x;
        win32_namespace = true;
        if s.get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("Volume{"))
        {
            let end = s.find(['\\', '/']).unwrap_or(s.len());
            root = s[..end].to_string();
            s = &s[end..];
        }
    }
    let b = s.as_bytes();
    if root.is_empty() && b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        root = s[..2].to_ascii_uppercase();
        s = &s[2..];
    } else if root.is_empty() && s.starts_with("\\\\") {
        let parts: Vec<&str> = s[2..].splitn(3, '\\').collect();
        root = format!("\\\\{}", parts[..parts.len().min(2)].join("\\"));
        s = parts.get(2).copied().unwrap_or("");
    } else if root.is_empty() && !win32_namespace && !s.starts_with('/') && !s.starts_with('\\') {
        return RefKind::Relative(r);
    }
    let comps: Vec<&str> = s
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if root.is_empty() {
        root = comps
            .first()
            .map(|c| format!("/{c}"))
            .unwrap_or_else(|| "/".into());
    }
    RefKind::Foreign { root, comps }
}

/// What a `.vmdk`, `.vhd` or `.vhdx` turned out to be.
enum LayerParse {
    Vmdk {
        descriptor: vmdk::Descriptor,
        /// The descriptor sits inside a sparse extent (which is then its own extent).
        embedded: Option<vmdk::SparseHeader>,
    },
    /// A sparse extent without a descriptor of its own (opened directly).
    BareSparse(vmdk::SparseHeader),
    Vhd(vhd::VhdInfo),
    Vhdx(vhdx::VhdxInfo),
    Failed(InventoryError),
}

struct Scanner<'a> {
    ds: &'a [Datastore],
    idx: Vec<Index>,
    limits: Limits,
    /// Files some VM has taken, so a later VM's folder does not take them as leftovers.
    claimed: Claims,
    /// Each datastore's LUN name, shared by all the files found on it.
    luns: Vec<Arc<str>>,
}

/// A parsed `.vmx`, or the problem kind and error that stopped it.
type ParsedVmx = Result<vmx::Vmx, (&'static str, InventoryError)>;

/// Which index entries some VM has taken, per datastore: a flag per entry rather than a hash
/// set of them (each insert and lookup hashed, the set rehashed as it grew: 1.4 M instructions
/// for 1,000 VMs). Only the in-order end of each VM and the orphan search after the pipeline
/// touch it, both on the calling thread; the atomics only make the scanner shareable with
/// the threads that prepare VMs.
struct Claims(Vec<Vec<AtomicBool>>);

impl Claims {
    fn new(indexes: &[Index]) -> Claims {
        Claims(
            indexes
                .iter()
                .map(|ix| {
                    (0..ix.entries.len())
                        .map(|_| AtomicBool::new(false))
                        .collect()
                })
                .collect(),
        )
    }

    fn claim(&self, d: usize, i: u32) {
        if let Some(flag) = self.0.get(d).and_then(|f| f.get(i as usize)) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    fn is_claimed(&self, d: usize, i: u32) -> bool {
        self.0
            .get(d)
            .and_then(|f| f.get(i as usize))
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}

/// Files up to this size come with their bytes from the listing when the filesystem has them
/// at hand (NTFS resident data: descriptors, `.vmsd`, small `.vmx`), saving an open each.
const INLINE_MAX: usize = 64 << 10;
/// Files the listing reads in whole even where the filesystem keeps them outside its metadata
/// (NTFS non-resident data), up to [`INLINE_MAX`] bytes: configurations and descriptors the
/// assembly reads in whole anyway. The listing reads them in disk order, without an open each.
/// Not `.xml` (a Windows volume holds many that are no VM's) nor virtual disks (only headers
/// are read).
const LISTING_READS: &[&str] = &["vmx", "vmtx", "vmsd", "vmc", "vmdk"];
/// Datastores with fewer names than this are scanned without a read-ahead thread.
const READ_AHEAD_MIN_ENTRIES: usize = 2_000;
/// Files probed per datastore to tell a warm LUN (nothing to read ahead) from a cold one.
const READ_AHEAD_PROBES: usize = 4;
/// Files larger than this are not announced (a text descriptor or configuration never is).
const READ_AHEAD_MAX_BYTES: u64 = 256 << 10;

/// A VMware or Virtual Server VM assembled but for its order-dependent end
/// ([`Scanner::complete`]).
struct Assembled {
    d: usize,
    cfg: u32,
    /// The VM's id, worked out here rather than in the in-order end (a hash per VM).
    id: String,
    /// The only configuration in its folder: the folder's other files are the VM's.
    single: bool,
    name: String,
    platform: Platform,
    build: Build,
    template: bool,
    guest_os: Option<String>,
    cpus: Option<u64>,
    memory_mb: Option<u64>,
    bios_uuid: Option<String>,
    instance_uuid: Option<String>,
    snapshots: Vec<SnapshotInfo>,
}

/// One VM to assemble.
enum Job {
    /// A VMware or Virtual Server configuration, `single` when alone in its folder (the
    /// folder's other files are then the VM's).
    Config { d: usize, cfg: u32, single: bool },
    /// A Hyper-V VM: the files of one GUID in a `Virtual Machines` folder, `cfg` among them.
    HyperV {
        d: usize,
        cfg: u32,
        vmdir: u32,
        guid: String,
        files: Vec<u32>,
        single: bool,
    },
}

impl Job {
    /// Datastore and configuration file: what orders the inventory.
    fn config(&self) -> (usize, u32) {
        match *self {
            Job::Config { d, cfg, .. } | Job::HyperV { d, cfg, .. } => (d, cfg),
        }
    }
}

/// Most assembly threads (the work is small reads and parsing).
const ASSEMBLY_MAX_THREADS: usize = 4;
/// Configurations a thread must have at least to be worth starting.
const ASSEMBLY_MIN_PER_THREAD: usize = 32;
/// Configurations a thread takes at once.
const ASSEMBLY_GRAIN: usize = 8;

/// A VM (or orphan disk) being assembled.
struct Build {
    files: Vec<VmFile>,
    by_loc: HashMap<Loc, usize>,
    /// The files' names (indexes into `files`), hashed ignoring case.
    names: HashTable<u32>,
    problems: Vec<Problem>,
    running: Vec<String>,
    suspended: Vec<String>,
    notes: Vec<String>,
    disks: Vec<Disk>,
    locs: Vec<(usize, u32)>,
}

/// Files a VM usually has at most (configuration, NVRAM, logs, a few disks): room reserved up
/// front, so that the common VM is built without growing its tables.
const FILES_PER_VM: usize = 16;

impl Build {
    fn new() -> Self {
        Build {
            files: Vec::with_capacity(FILES_PER_VM),
            by_loc: HashMap::with_capacity_and_hasher(FILES_PER_VM, Default::default()),
            names: HashTable::with_capacity(FILES_PER_VM),
            problems: Vec::new(),
            running: Vec::new(),
            suspended: Vec::new(),
            notes: Vec::new(),
            disks: Vec::new(),
            locs: Vec::with_capacity(FILES_PER_VM),
        }
    }

    fn problem(&mut self, kind: &str, path: Option<&str>, detail: impl Into<String>) {
        let p = Problem::new(kind, path, detail);
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    /// A name for the next file added (it becomes `files[files.len()]`) that no file of the
    /// VM has yet, compared case-insensitively: `base`, else `DIR~base`, else `N~base`.
    fn unique_name(&mut self, base: &str, parent: &str) -> String {
        let clean = |s: &str| {
            if s.bytes().any(|c| c == b'/' || c == b'\\') {
                s.replace(['/', '\\'], "~")
            } else {
                s.to_string()
            }
        };
        let mut name = clean(base);
        let mut hash = name_hash(0, &name, true);
        if self.name_taken(hash, &name) {
            let dir = rsplit_once_byte(parent, b'/').map_or(parent, |(_, last)| last);
            name = clean(&format!("{dir}~{base}"));
            hash = name_hash(0, &name, true);
            let mut n = 2;
            while self.name_taken(hash, &name) {
                name = clean(&format!("{n}~{base}"));
                hash = name_hash(0, &name, true);
                n += 1;
            }
        }
        let files = &self.files;
        self.names.insert_unique(hash, files.len() as u32, |&k| {
            name_hash(0, &files[k as usize].name, true)
        });
        name
    }

    /// True when a file of the VM already has `name` (whose [`name_hash`] is `hash`),
    /// ignoring case.
    fn name_taken(&self, hash: u64, name: &str) -> bool {
        self.names
            .find(hash, |&k| name_eq(&self.files[k as usize].name, name, true))
            .is_some()
    }
}

impl Scanner<'_> {
    fn entry(&self, ds: usize, i: u32) -> &Entry {
        &self.idx[ds].entries[i as usize]
    }

    fn meta(&self, ds: usize, i: u32) -> (u64, u64) {
        let e = self.entry(ds, i);
        (e.size, e.allocated)
    }

    fn path_of(&self, loc: &Loc) -> String {
        match loc {
            Loc::Found(d, i) => self.entry(*d, *i).path.clone(),
            Loc::Missing { path, .. } => path.clone(),
        }
    }

    /// Adds a file to the build (once) and returns its name.
    fn add(&self, b: &mut Build, loc: &Loc, role: Role) -> String {
        let i = self.add_file(b, loc, role);
        b.files[i].name.clone()
    }

    /// Adds a file to the build (once) and returns its index in `b.files`.
    fn add_file(&self, b: &mut Build, loc: &Loc, role: Role) -> usize {
        if let Some(&i) = b.by_loc.get(loc) {
            return i;
        }
        let file = match loc {
            Loc::Found(d, i) => {
                let e = self.entry(*d, *i);
                let (size, allocated) = self.meta(*d, *i);
                let name = b.unique_name(&e.name, parent_path(&e.path));
                b.locs.push((*d, *i));
                VmFile {
                    name,
                    path: e.path.clone(),
                    lun: Some(self.luns[*d].clone()),
                    role,
                    size,
                    allocated,
                    missing: false,
                    needs_datastore: None,
                    file_id: Some(e.id.clone()),
                }
            }
            Loc::Missing { path, needs } => {
                let base = path.rsplit(['/', '\\']).next().unwrap_or(path);
                let name = b.unique_name(base, "missing");
                VmFile {
                    name,
                    path: path.clone(),
                    lun: None,
                    role,
                    size: 0,
                    allocated: 0,
                    missing: true,
                    needs_datastore: needs.clone(),
                    file_id: None,
                }
            }
        };
        let i = b.files.len();
        b.by_loc.insert(loc.clone(), i);
        b.files.push(file);
        i
    }

    /// Resolves a file reference made by a file in `base_dir` of datastore `ds`.
    fn resolve(&self, ds: usize, base_dir: &str, r: &str) -> Loc {
        // Blanks a hand edit left around the reference; only ASCII ones, as a file name may
        // well end in a no-break space.
        let r = r.trim_ascii();
        match classify(r) {
            RefKind::Relative(rel) => {
                if let Some(i) = self.idx[ds].lookup_relative(base_dir, rel) {
                    return Loc::Found(ds, i);
                }
                let p = join(base_dir, rel);
                match self.idx[ds].lookup(&p) {
                    Some(i) => Loc::Found(ds, i),
                    None => Loc::Missing {
                        path: p,
                        needs: None,
                    },
                }
            }
            RefKind::VmfsVolume { volume, rest } => {
                let target = self
                    .ds
                    .iter()
                    .position(|d| d.info.uuid.eq_ignore_ascii_case(volume) && !volume.is_empty())
                    .or_else(|| {
                        self.ds
                            .iter()
                            .position(|d| d.info.label == volume && !volume.is_empty())
                    })
                    .or_else(|| {
                        self.ds.iter().position(|d| {
                            d.info.label.eq_ignore_ascii_case(volume) && !volume.is_empty()
                        })
                    });
                match target {
                    Some(t) => {
                        let p = join("/", rest);
                        match self.idx[t].lookup(&p) {
                            Some(i) => Loc::Found(t, i),
                            None => Loc::Missing {
                                path: r.to_string(),
                                needs: None,
                            },
                        }
                    }
                    None => Loc::Missing {
                        path: r.to_string(),
                        needs: Some(volume.to_string()),
                    },
                }
            }
            RefKind::Foreign { root, comps } => {
                // The host's mount point of the cloned volume is unknown (drive letter,
                // C:\ClusterStorage\VolumeN, a Linux mount): the longest suffix of the path
                // that exists wins, on this datastore first.
                let order: Vec<usize> = std::iter::once(ds)
                    .chain((0..self.ds.len()).filter(|&d| d != ds))
                    .collect();
                for k in 0..comps.len() {
                    // A bare file name matches anywhere only when the path itself names a
                    // file at the volume root; otherwise two components at least.
                    if k + 1 == comps.len() && comps.len() > 1 {
                        break;
                    }
                    let p = format!("/{}", comps[k..].join("/"));
                    for &d in &order {
                        if let Some(i) = self.idx[d].lookup(&p) {
                            return Loc::Found(d, i);
                        }
                    }
                }
                // Last resort: the bare file name beside the referencing file (a VM folder
                // copied elsewhere).
                if let Some(last) = comps.last()
                    && let Some(i) = self.idx[ds].lookup(&join(base_dir, last))
                {
                    return Loc::Found(ds, i);
                }
                Loc::Missing {
                    path: r.to_string(),
                    needs: Some(root),
                }
            }
            RefKind::Device(p) => Loc::Missing {
                path: p.to_string(),
                needs: Some("raw device".into()),
            },
        }
    }

    /// Reads a small file whole, refusing files above the configuration limit.
    fn read_small(&self, ds: usize, i: u32, cap: u64) -> Result<Cow<'_, [u8]>, InventoryError> {
        let (size, _) = self.meta(ds, i);
        if size > cap {
            return Err(InventoryError::Limit {
                what: format!("{} of {size} bytes", self.entry(ds, i).path),
                limit: cap,
            });
        }
        if let Some(bytes) = &self.entry(ds, i).inline {
            return Ok(Cow::Borrowed(&bytes[..bytes.len().min(cap as usize)]));
        }
        let src = self.ds[ds].fs.open(&self.entry(ds, i).id)?;
        let n = src.size().min(cap);
        Ok(Cow::Owned(src.read_vec(0, n as usize)?))
    }

    /// The file as a byte source: its inline bytes when the listing gave them, otherwise the
    /// filesystem's open file.
    fn source(&self, ds: usize, i: u32) -> Result<lun::Source, InventoryError> {
        let e = self.entry(ds, i);
        Ok(match &e.inline {
            Some(bytes) => Arc::new(lun::MemSource::new(e.path.clone(), bytes.to_vec())),
            None => self.ds[ds].fs.open(&e.id)?,
        })
    }

    /// The parse of a disk layer.
    fn layer(&self, ds: usize, i: u32) -> LayerParse {
        self.parse_layer(ds, i).unwrap_or_else(LayerParse::Failed)
    }

    /// Reads and parses a `.vmx`.
    fn parse_vmx(&self, d: usize, cfg: u32) -> ParsedVmx {
        self.read_small(d, cfg, self.limits.max_config_bytes)
            .map_err(|e| match e {
                InventoryError::Limit { .. } => ("config-too-large", e),
                InventoryError::Fs(_) => ("config-unreadable", e),
                other => ("config-invalid", other),
            })
            .and_then(|bytes| vmx::Vmx::parse(&bytes).map_err(|e| ("config-invalid", e)))
    }

    /// Files of datastore `d` the assembly will read from the LUN (configurations, snapshot
    /// lists, text descriptors), in index order; inline ones are already in memory.
    fn to_read(&self, d: usize) -> impl Iterator<Item = &Entry> {
        let ix = &self.idx[d];
        ix.entries.iter().filter(move |e| {
            if e.dir || e.size == 0 || e.size > READ_AHEAD_MAX_BYTES || e.inline.is_some() {
                return false;
            }
            match e.ext.as_bytes() {
                b"vmx" | b"vmtx" | b"vmsd" | b"vmc" => true,
                b"vmdk" => !is_extent_name(&e.name),
                b"xml" => ix.entries[e.parent as usize]
                    .name
                    .eq_ignore_ascii_case("Virtual Machines"),
                _ => false,
            }
        })
    }

    /// Whether announcing the reads ahead pays for a thread: datastores with many names whose
    /// files are not already in the page cache. A few files spread over each datastore are
    /// probed ([`lun::ReadAt::is_cached`]); a LUN that cannot tell counts as cold.
    fn read_ahead_worth_it(&self) -> bool {
        if self.idx.iter().map(|ix| ix.entries.len()).sum::<usize>() < READ_AHEAD_MIN_ENTRIES {
            return false;
        }
        for d in 0..self.ds.len() {
            // One pass over the names: the probes are spread over what it finds.
            let wanted: Vec<&Entry> = self.to_read(d).collect();
            let step = (wanted.len() / READ_AHEAD_PROBES).max(1);
            for e in wanted.into_iter().step_by(step).take(READ_AHEAD_PROBES) {
                let Ok(src) = self.ds[d].fs.open(&e.id) else {
                    continue;
                };
                let len = src.size().min(4096) as usize;
                if src.is_cached(0, len) != Some(true) {
                    return true;
                }
            }
        }
        false
    }

    /// Tells the LUNs, up front, which bytes the assembly is about to read: every
    /// configuration, snapshot list and text descriptor. On a cold LUN those thousands of small
    /// reads then reach the device together, as one deep queue, instead of one at a time as the
    /// assembly gets to each VM. Runs beside the assembly.
    fn read_ahead(&self) {
        for d in 0..self.ds.len() {
            for e in self.to_read(d) {
                if let Ok(src) = self.ds[d].fs.open(&e.id) {
                    src.will_need(0, e.size);
                }
            }
        }
    }

    fn parse_layer(&self, ds: usize, i: u32) -> Result<LayerParse, InventoryError> {
        let e = self.entry(ds, i);
        let ext = e.ext;
        let is_vhd = matches!(
            ext.as_bytes(),
            b"vhd" | b"avhd" | b"vud" | b"vhdx" | b"avhdx"
        );
        // A text descriptor the listing brought along is parsed where it lies.
        if !is_vhd
            && let Some(bytes) = &e.inline
            && matches!(
                vmdk::probe(&bytes[..bytes.len().min(512)]),
                vmdk::Probe::Text
            )
            && bytes.len() as u64 <= self.limits.max_config_bytes
        {
            return Ok(LayerParse::Vmdk {
                descriptor: vmdk::parse_descriptor(bytes)?,
                embedded: None,
            });
        }
        let src = self.source(ds, i)?;
        match ext.as_bytes() {
            b"vhd" | b"avhd" | b"vud" => return Ok(LayerParse::Vhd(vhd::read(&*src)?)),
            b"vhdx" | b"avhdx" => return Ok(LayerParse::Vhdx(vhdx::read(&*src)?)),
            _ => {}
        }
        let size = src.size();
        let mut head = vec![0u8; size.min(512) as usize];
        src.read_exact_at(0, &mut head)?;
        match vmdk::probe(&head) {
            vmdk::Probe::Sparse(h) => match h.descriptor_range(size)? {
                Some((off, len)) => {
                    let d = vmdk::parse_descriptor(&src.read_vec(off, len as usize)?)?;
                    Ok(LayerParse::Vmdk {
                        descriptor: d,
                        embedded: Some(h),
                    })
                }
                None => Ok(LayerParse::BareSparse(h)),
            },
            vmdk::Probe::Text => {
                if size > self.limits.max_config_bytes {
                    return Err(InventoryError::Limit {
                        what: format!("descriptor {} of {size} bytes", e.path),
                        limit: self.limits.max_config_bytes,
                    });
                }
                let d = vmdk::parse_descriptor(&src.read_vec(0, size as usize)?)?;
                Ok(LayerParse::Vmdk {
                    descriptor: d,
                    embedded: None,
                })
            }
            vmdk::Probe::Cowd | vmdk::Probe::SeSparse => Err(InventoryError::Parse {
                format: "vmdk",
                detail: "this is a snapshot delta extent, not a descriptor".into(),
            }),
            vmdk::Probe::Data => Err(InventoryError::Parse {
                format: "vmdk",
                detail: "neither a text descriptor nor a sparse extent with an embedded descriptor"
                    .into(),
            }),
        }
    }

    /// Follows a disk from the file a configuration names down to its base.
    fn chain(
        &self,
        b: &mut Build,
        ds: usize,
        base_dir: &str,
        refs: &[String],
        device: &str,
        mode: Option<String>,
    ) -> Disk {
        let configured = refs.first().cloned().unwrap_or_default();
        let mut loc = self.first_found(ds, base_dir, refs);
        let mut chain: Vec<DiskLayer> = Vec::new();
        // Chains are a few layers deep: a list beats a hash set (and allocates only once).
        let mut visited: Vec<(usize, u32)> = Vec::new();
        let mut child_parent_cid: Option<(u32, String)> = None;
        loop {
            if chain.len() >= self.limits.max_chain {
                b.problem(
                    "chain-too-deep",
                    Some(&configured),
                    format!(
                        "disk {device}: more than {} layers; the rest is not followed",
                        self.limits.max_chain
                    ),
                );
                break;
            }
            let (d, i) = match &loc {
                Loc::Found(d, i) => (*d, *i),
                Loc::Missing { path, needs } => {
                    let is_parent = !chain.is_empty();
                    let name = self.add(b, &loc, role_by_name(path));
                    b.problem(
                        "disk-missing",
                        Some(path),
                        match needs {
                            Some(n) => format!("disk {device}: {} {path} is on datastore {n}, which is not registered", if is_parent { "parent layer" } else { "file" }),
                            None => format!("disk {device}: {} {path} not found", if is_parent { "parent layer" } else { "file" }),
                        },
                    );
                    chain.push(DiskLayer {
                        file: name,
                        path: path.clone(),
                        format: format_of(path),
                        create_type: None,
                        capacity: None,
                        cid: None,
                        parent_cid: None,
                        extents: Vec::new(),
                        missing: true,
                    });
                    break;
                }
            };
            if visited.contains(&(d, i)) {
                b.problem(
                    "chain-loop",
                    Some(&self.entry(d, i).path),
                    format!(
                        "disk {device}: the parent chain loops back to {}",
                        self.entry(d, i).path
                    ),
                );
                break;
            }
            visited.push((d, i));
            let path = self.entry(d, i).path.clone();
            let dir = parent_path(&self.entry(d, i).path);
            let parsed = self.layer(d, i);
            let mut layer = DiskLayer {
                file: String::new(),
                path: path.clone(),
                format: format_of(&path),
                create_type: None,
                capacity: None,
                cid: None,
                parent_cid: None,
                extents: Vec::new(),
                missing: false,
            };
            let mut parents: Vec<String> = Vec::new();
            match &parsed {
                LayerParse::Vmdk {
                    descriptor,
                    embedded,
                } => {
                    let has_parent = descriptor.has_parent();
                    let data_role = if has_parent {
                        Role::SnapshotDelta
                    } else {
                        Role::DiskExtent
                    };
                    layer.file = self.add(
                        b,
                        &loc,
                        if embedded.is_some() {
                            data_role
                        } else {
                            Role::DiskDescriptor
                        },
                    );
                    layer.create_type = descriptor.create_type.clone();
                    layer.capacity = Some(descriptor.capacity());
                    layer.cid = descriptor.cid.map(hex8);
                    layer.parent_cid = descriptor.parent_cid.map(hex8);
                    if let Some(h) = embedded
                        && h.unclean_shutdown
                    {
                        b.running.push(format!(
                            "{path}: sparse extent header marks it open (uncleanShutdown)"
                        ));
                    }
                    if let Some((expected, child)) = &child_parent_cid
                        && let Some(cid) = descriptor.cid
                        && *expected != cid
                    {
                        b.problem(
                            "parent-cid-mismatch",
                            Some(&path),
                            format!(
                                "disk {device}: {child} expects parent CID {expected:08x} but {path} has CID {cid:08x}: the parent changed after the delta was made"
                            ),
                        );
                    }
                    for w in &descriptor.warnings {
                        b.problem("descriptor-warning", Some(&path), w.clone());
                    }
                    let listed = descriptor.extents.len() + descriptor.extents_dropped;
                    let single = descriptor
                        .create_type
                        .as_deref()
                        .is_some_and(vmdk::is_single_extent_type);
                    if single && listed > 1 {
                        // ESXi writes exactly one extent line for these types: more is a
                        // damaged or forged descriptor, and only the first line is trusted.
                        b.problem(
                            "extents-capped",
                            Some(&path),
                            format!(
                                "createType {} has a single extent but the descriptor lists {listed}; only the first is used",
                                descriptor.create_type.as_deref().unwrap_or_default()
                            ),
                        );
                    } else if descriptor.extents_dropped > 0 {
                        b.problem(
                            "extents-capped",
                            Some(&path),
                            format!(
                                "descriptor lists {} extents; only the first {} are used",
                                descriptor.extents.len() + descriptor.extents_dropped,
                                vmdk::MAX_EXTENTS
                            ),
                        );
                    }
                    let trusted = if single { 1 } else { descriptor.extents.len() };
                    if single {
                        layer.capacity = descriptor
                            .extents
                            .first()
                            .map(|x| x.sectors.saturating_mul(512));
                    }
                    for x in descriptor.extents.iter().take(trusted) {
                        let file = x.file_name.as_ref().map(|f| {
                            let mut l = self.resolve(d, dir, f);
                            if matches!(l, Loc::Missing { .. }) && f.contains('|') {
                                let un = String::from_utf8_lossy(&vmx::unescape(f.as_bytes())).into_owned();
                                if let found @ Loc::Found(..) = self.resolve(d, dir, &un) {
                                    l = found;
                                }
                            }
                            if let Loc::Missing { path: p, needs } = &l {
                                b.problem(
                                    "file-missing",
                                    Some(p),
                                    match needs {
                                        Some(n) => format!("disk {device}: extent {p} is on datastore {n}, which is not registered"),
                                        None => format!("disk {device}: extent {p} not found"),
                                    },
                                );
                            }
                            if x.kind == "VMFSRDM" || x.kind == "VMFSRAW" || x.kind == "VMFSPASSTHROUGHRAWDEVICEMAP" {
                                b.notes.push(format!("disk {device} is a raw device mapping: its data lives on a LUN of its own, not in {f}"));
                            }
                            self.add(b, &l, data_role)
                        });
                        layer.extents.push(DiskExtent {
                            access: x.access.clone(),
                            kind: x.kind.clone(),
                            size: x.sectors.saturating_mul(512),
                            offset: x.offset.saturating_mul(512),
                            file,
                        });
                    }
                    if let Some(ctk) = &descriptor.change_track_path
                        && let l @ Loc::Found(..) = self.resolve(d, dir, ctk)
                    {
                        self.add_file(b, &l, Role::Cbt);
                    }
                    // The CBT file beside the descriptor: looked up in the descriptor's own
                    // directory, without building its path.
                    let e = self.entry(d, i);
                    let stem = stem_of(&e.name);
                    let mut ctk = String::with_capacity(stem.len() + 9);
                    ctk.push_str(stem);
                    ctk.push_str("-ctk.vmdk");
                    if let Some(ci) = self.idx[d].child(e.parent, &ctk) {
                        self.add_file(b, &Loc::Found(d, ci), Role::Cbt);
                    }
                    if has_parent {
                        match &descriptor.parent_file_name_hint {
                            Some(h) if !h.is_empty() => parents.push(h.clone()),
                            _ => b.problem(
                                "parent-unknown",
                                Some(&path),
                                format!("disk {device}: parentCID is set but no parentFileNameHint names the parent"),
                            ),
                        }
                        if let Some(pc) = descriptor.parent_cid {
                            child_parent_cid = Some((pc, path.clone()));
                        }
                    } else {
                        child_parent_cid = None;
                    }
                }
                LayerParse::BareSparse(h) => {
                    layer.file = self.add(b, &loc, Role::DiskExtent);
                    layer.create_type = Some("sparse extent".into());
                    layer.capacity = h.capacity.checked_mul(512);
                    if h.unclean_shutdown {
                        b.running.push(format!(
                            "{path}: sparse extent header marks it open (uncleanShutdown)"
                        ));
                    }
                }
                LayerParse::Vhd(info) => {
                    let diff = info.footer.disk_type == vhd::DiskType::Differencing;
                    layer.file = self.add(
                        b,
                        &loc,
                        if diff {
                            Role::SnapshotDelta
                        } else {
                            Role::DiskExtent
                        },
                    );
                    layer.create_type = Some(
                        match info.footer.disk_type {
                            vhd::DiskType::Fixed => "fixed",
                            vhd::DiskType::Dynamic => "dynamic",
                            vhd::DiskType::Differencing => "differencing",
                            vhd::DiskType::Other => "unknown",
                        }
                        .into(),
                    );
                    layer.capacity = Some(info.footer.current_size);
                    if !info.footer.checksum_ok {
                        b.problem(
                            "checksum",
                            Some(&path),
                            "VHD footer checksum does not match",
                        );
                    }
                    if info.footer.saved_state {
                        b.suspended
                            .push(format!("{path}: VHD footer Saved State flag is set"));
                    }
                    if diff {
                        parents = info.parent_paths.clone();
                        if parents.is_empty() {
                            b.problem(
                                "parent-unknown",
                                Some(&path),
                                "differencing VHD without a usable parent locator",
                            );
                        }
                    }
                    self.add_rct(b, d, &path);
                }
                LayerParse::Vhdx(info) => {
                    layer.file = self.add(
                        b,
                        &loc,
                        if info.has_parent {
                            Role::SnapshotDelta
                        } else {
                            Role::DiskExtent
                        },
                    );
                    layer.create_type = Some(
                        if info.has_parent {
                            "differencing"
                        } else {
                            "vhdx"
                        }
                        .into(),
                    );
                    layer.capacity = info.virtual_disk_size;
                    if info.log_dirty {
                        b.running.push(format!(
                            "{path}: VHDX log holds unapplied entries (open for writing)"
                        ));
                    }
                    if info.has_parent {
                        parents = info.parent_paths();
                        if parents.is_empty() {
                            b.problem(
                                "parent-unknown",
                                Some(&path),
                                "differencing VHDX without a usable parent locator",
                            );
                        }
                    }
                    self.add_rct(b, d, &path);
                }
                LayerParse::Failed(e) => {
                    layer.file = self.add(b, &loc, role_by_name(&path));
                    b.problem(
                        match e {
                            InventoryError::Limit { .. } => "descriptor-too-large",
                            InventoryError::Fs(_) => "io",
                            _ => "descriptor-invalid",
                        },
                        Some(&path),
                        format!("disk {device}: {e}"),
                    );
                }
            }
            chain.push(layer);
            if parents.is_empty() {
                break;
            }
            loc = self.first_found(d, dir, &parents);
        }
        if chain.len() > 1 {
            b.notes.push(format!(
                "disk {device} runs on a {}-layer chain: {} is a snapshot delta over {}",
                chain.len(),
                chain[0].path,
                chain[chain.len() - 1].path
            ));
        }
        if let Some(m) = &mode
            && m.to_ascii_lowercase().starts_with("independent")
        {
            b.notes
                .push(format!("disk {device} is {m}: snapshots do not cover it"));
        }
        Disk {
            device: device.to_string(),
            configured_path: configured,
            mode,
            capacity: chain.first().and_then(|l| l.capacity),
            chain,
        }
    }

    fn first_found(&self, ds: usize, dir: &str, refs: &[String]) -> Loc {
        let mut first = None;
        for r in refs {
            let l = self.resolve(ds, dir, r);
            if matches!(l, Loc::Found(..)) {
                return l;
            }
            first.get_or_insert(l);
        }
        first.unwrap_or(Loc::Missing {
            path: String::new(),
            needs: None,
        })
    }

    /// Hyper-V resilient change tracking files beside a disk (`disk.vhdx.rct`, `.mrt`).
    fn add_rct(&self, b: &mut Build, ds: usize, path: &str) {
        for ext in ["rct", "mrt"] {
            if let Some(i) = self.idx[ds].lookup(&format!("{path}.{ext}")) {
                self.add_file(b, &Loc::Found(ds, i), Role::Cbt);
            }
        }
    }

    /// The id of the VM whose configuration is entry `cfg` of datastore `d`.
    fn config_id(&self, d: usize, cfg: u32) -> String {
        self.vm_id(d, &self.entry(d, cfg).path, "vm")
    }

    fn vm_id(&self, ds: usize, path: &str, salt: &str) -> String {
        use sha2::{Digest, Sha256};
        let key = self.idx[ds].key(path);
        let mut h = Sha256::new();
        h.update(salt.as_bytes());
        h.update([0]);
        h.update(self.ds[ds].info.uuid.to_ascii_lowercase().as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        base32(&h.finalize()[..10])
    }

    /// Every VM to assemble, in the inventory's order: LUN, then config path (ties keep the
    /// datastore order, then VMware and Virtual Server configurations before Hyper-V).
    fn jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for d in 0..self.ds.len() {
            let ix = &self.idx[d];
            // Configurations per directory decide whether leftover files in it belong to
            // the VM.
            let mut per_dir: HashMap<u32, usize> = HashMap::default();
            let mut configs = Vec::new();
            let mut hyperv_groups: HashMap<(u32, String), Vec<u32>> = HashMap::default();
            for (i, e) in ix.entries.iter().enumerate() {
                if e.dir {
                    continue;
                }
                let ext = e.ext;
                match ext.as_bytes() {
                    b"vmx" | b"vmtx" | b"vmc" => {
                        configs.push(i as u32);
                        *per_dir.entry(e.parent).or_default() += 1;
                    }
                    b"vmcx" | b"xml" | b"vmrs" | b"vmgs" => {
                        let parent = &ix.entries[e.parent as usize];
                        let stem = stem_of(&e.name);
                        if parent.name.eq_ignore_ascii_case("Virtual Machines")
                            && hyperv::is_guid(stem)
                        {
                            hyperv_groups
                                .entry((e.parent, stem.to_ascii_lowercase()))
                                .or_default()
                                .push(i as u32);
                        }
                    }
                    _ => {}
                }
            }
            for &cfg in &configs {
                let single = per_dir.get(&self.entry(d, cfg).parent) == Some(&1);
                jobs.push(Job::Config { d, cfg, single });
            }
            let mut groups: Vec<_> = hyperv_groups.into_iter().collect();
            groups.sort_by(|a, b| a.0.cmp(&b.0));
            // VMs per Hyper-V VM folder (the parent of "Virtual Machines").
            let mut per_folder: HashMap<u32, usize> = HashMap::default();
            for ((vmdir, _), files) in &groups {
                if self.hyperv_config(d, files).is_some() {
                    *per_folder
                        .entry(ix.entries[*vmdir as usize].parent)
                        .or_default() += 1;
                }
            }
            for ((vmdir, guid), files) in groups {
                let Some(cfg) = self.hyperv_config(d, &files) else {
                    continue;
                };
                let folder = ix.entries[vmdir as usize].parent;
                jobs.push(Job::HyperV {
                    d,
                    cfg,
                    vmdir,
                    guid,
                    files,
                    single: per_folder.get(&folder) == Some(&1),
                });
            }
        }
        let key = |j: &Job| {
            let (d, cfg) = j.config();
            (self.ds[d].lun.as_str(), self.entry(d, cfg).path.as_str())
        };
        jobs.sort_by(|a, b| key(a).cmp(&key(b)));
        jobs
    }

    /// The configuration of a Hyper-V VM's files: its `.vmcx`, else its 2012-era `.xml`.
    fn hyperv_config(&self, d: usize, files: &[u32]) -> Option<u32> {
        let by_ext = |x: &str| files.iter().copied().find(|&f| self.entry(d, f).ext == x);
        by_ext("vmcx").or_else(|| by_ext("xml"))
    }

    /// Everything of a job that may run on any thread: a VMware or Virtual Server VM but
    /// for its order-dependent end. (A Hyper-V VM is assembled whole, in order.)
    fn prepare(&self, job: &Job) -> Option<Assembled> {
        match *job {
            Job::Config { d, cfg, single } => Some(self.assemble(d, cfg, single)),
            Job::HyperV { .. } => None,
        }
    }

    /// The order-dependent end of a job: which leftover files are still unclaimed depends on
    /// the VMs finished before it.
    fn finish_job(&self, job: &Job, prepared: Option<Assembled>) -> Vm {
        match job {
            Job::Config { d, cfg, single } => {
                self.complete(prepared.unwrap_or_else(|| self.assemble(*d, *cfg, *single)))
            }
            Job::HyperV {
                d,
                cfg,
                vmdir,
                guid,
                files,
                single,
            } => self.hyperv_vm(*d, *cfg, *vmdir, guid, files, *single),
        }
    }

    /// Assembles every job through [`pipeline::run_ordered`]: preparing on up to
    /// [`Limits::threads`] threads, finishing (and `name_vm`) in order on the calling thread,
    /// then `map` on any thread, `deliver` in order. Each VM equals what one thread computes:
    /// preparing reads the index and the datastore, never another VM's result.
    fn run<T: Send>(
        &self,
        jobs: &[Job],
        name_vm: &mut dyn FnMut(Vm) -> Vm,
        map: &(dyn Fn(Vm) -> T + Sync),
        deliver: &mut dyn FnMut(T) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let threads = match self.limits.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(ASSEMBLY_MAX_THREADS),
            t => t,
        }
        .min(jobs.len().div_ceil(ASSEMBLY_MIN_PER_THREAD))
        .max(1);
        pipeline::run_ordered(
            jobs.len(),
            threads,
            ASSEMBLY_GRAIN,
            pipeline::Steps {
                prepare: &|i| self.prepare(&jobs[i]),
                finish: &mut |i, p| Some(name_vm(self.finish_job(&jobs[i], p))),
                map,
                deliver,
            },
        )
    }

    fn claim(&self, b: &Build) {
        for &(d, i) in &b.locs {
            self.claimed.claim(d, i);
        }
    }

    /// The VM from its build: claims its files, weighs the consistency evidence.
    fn finish(
        &self,
        (d, cfg): (usize, u32),
        id: String,
        name: String,
        platform: Platform,
        mut b: Build,
    ) -> Vm {
        self.claim(&b);
        let state = if !b.running.is_empty() {
            ConsistencyState::CrashConsistent
        } else if !b.suspended.is_empty() {
            ConsistencyState::Suspended
        } else {
            ConsistencyState::PoweredOff
        };
        let mut evidence = std::mem::take(&mut b.running);
        evidence.append(&mut b.suspended);
        if evidence.is_empty() {
            evidence.push(match platform {
                Platform::Vmware => "no swap (.vswp), lock (.lck), memory (.vmem) or suspend (.vmss) files, no open sparse extents".into(),
                Platform::Hyperv => "no runtime memory state (.vmrs over 1 MiB, .bin, .vsv) and no dirty VHDX logs".into(),
                Platform::VirtualServer => "no saved state (.vsv)".into(),
            });
        }
        let e = self.entry(d, cfg);
        Vm {
            id,
            name,
            lun: self.ds[d].lun.clone(),
            datastore: self.ds[d].info.label.clone(),
            config: e.path.clone(),
            platform,
            template: false,
            guest_os: None,
            cpus: None,
            memory_mb: None,
            bios_uuid: None,
            instance_uuid: None,
            files: b.files,
            disks: b.disks,
            snapshots: Vec::new(),
            consistency: Consistency { state, evidence },
            notes: b.notes,
            problems: b.problems,
        }
    }

    /// Files of the directory that no VM claims yet, added with their role by name.
    fn add_leftovers(&self, b: &mut Build, d: usize, dir: u32) {
        for &k in self.idx[d].kids(dir) {
            let e = self.entry(d, k);
            let leftover = !e.dir
                && !matches!(
                    e.ext.as_bytes(),
                    b"vmdk"
                        | b"vhd"
                        | b"vhdx"
                        | b"avhd"
                        | b"avhdx"
                        | b"vmx"
                        | b"vmtx"
                        | b"vmc"
                        | b"vmcx"
                )
                && !self.claimed.is_claimed(d, k);
            if !leftover {
                continue;
            }
            let loc = Loc::Found(d, k);
            // The VM's own files are not claimed yet either: those it has are skipped here,
            // before their role is worked out for nothing.
            if !b.by_loc.contains_key(&loc) {
                self.add_file(b, &loc, role_by_name(&e.name));
            }
        }
    }

    /// Running-state evidence and role-bearing files of a VMware/Virtual Server folder.
    fn vmware_dir_files(
        &self,
        b: &mut Build,
        d: usize,
        dir: u32,
        stem: &str,
        single: bool,
        snapshot_stems: &HashSet<String>,
    ) {
        // Which names are the VM's, by prefix: only asked when the folder has other VMs.
        let mut prefixes: Option<(String, String)> = None;
        for &k in self.idx[d].kids(dir) {
            let e = self.entry(d, k);
            let ext = e.ext;
            let interesting = matches!(
                ext.as_bytes(),
                b"vswp" | b"lck" | b"log" | b"vmss" | b"vsv" | b"vmem"
            ) || e.name.starts_with(".lck-");
            if !interesting {
                continue;
            }
            let lname = || e.name.to_lowercase();
            let mine = single || {
                let (stem_l, vmx_swap) = prefixes.get_or_insert_with(|| {
                    let stem_l = stem.to_lowercase();
                    let vmx_swap = format!("vmx-{stem_l}");
                    (stem_l, vmx_swap)
                });
                let l = lname();
                l.starts_with(stem_l.as_str()) || l.starts_with(vmx_swap.as_str())
            };
            if !mine {
                continue;
            }
            if e.dir {
                if ext == "lck" {
                    let kids = self.idx[d].kids(k).to_vec();
                    for lk in &kids {
                        self.add_file(b, &Loc::Found(d, *lk), Role::Lock);
                    }
                    b.running.push(format!(
                        "{}: lock directory present ({} lock files)",
                        e.path,
                        kids.len()
                    ));
                }
                continue;
            }
            match ext.as_bytes() {
                b"vswp" => {
                    self.add_file(b, &Loc::Found(d, k), Role::Swap);
                    b.running.push(format!("{}: swap file present", e.path));
                }
                b"lck" => {
                    self.add_file(b, &Loc::Found(d, k), Role::Lock);
                    b.running.push(format!("{}: lock file present", e.path));
                }
                b"log" => {
                    self.add_file(b, &Loc::Found(d, k), Role::Log);
                }
                b"vmss" => {
                    self.add_file(b, &Loc::Found(d, k), Role::Other);
                    b.suspended
                        .push(format!("{}: suspend state present", e.path));
                }
                b"vsv" => {
                    self.add_file(b, &Loc::Found(d, k), Role::Other);
                    b.suspended.push(format!("{}: saved state present", e.path));
                }
                b"vmem" => {
                    self.add_file(b, &Loc::Found(d, k), Role::Other);
                    if !snapshot_stems.contains(stem_of(&lname())) {
                        b.running.push(format!("{}: memory file present", e.path));
                    }
                }
                _ if lname().starts_with(".lck-") => {
                    self.add_file(b, &Loc::Found(d, k), Role::Lock);
                    b.running.push(format!("{}: NFS lock file present", e.path));
                }
                _ => {}
            }
        }
        // A suspended VM also has a .vmem beside its .vmss: that is not a running VM.
        if !b.suspended.is_empty() {
            b.running.retain(|r| !r.ends_with("memory file present"));
        }
    }

    fn vmware_build(&self, d: usize, cfg: u32, single: bool) -> Assembled {
        let mut b = Build::new();
        let e = self.entry(d, cfg);
        let path = e.path.clone();
        let dir_path = parent_path(&path).to_string();
        let dir = e.parent;
        let stem = stem_of(&e.name).to_string();
        let template = e.ext == "vmtx";
        self.add_file(&mut b, &Loc::Found(d, cfg), Role::Config);
        let parsed = self.parse_vmx(d, cfg);
        let mut name = stem.clone();
        let mut snapshot_stems = HashSet::default();
        let mut snaps = Vec::new();
        let (mut guest_os, mut cpus, mut memory, mut bios, mut inst) =
            (None, None, None, None, None);
        match parsed {
            Err((kind, err)) => {
                b.problem(
                    kind,
                    Some(&path),
                    format!("{err}; the VM's files are listed by name only"),
                );
            }
            Ok(v) => {
                for w in &v.dict.warnings {
                    b.problem("config-warning", Some(&path), w.clone());
                }
                if let Some(n) = v.display_name() {
                    name = n.to_string();
                }
                guest_os = v.guest_os().map(str::to_string);
                cpus = Some(v.num_vcpus().unwrap_or(1));
                memory = v.mem_size_mb();
                bios = v.uuid_bios().map(str::to_string);
                inst = v.vc_uuid().map(str::to_string);
                let nvram = v
                    .nvram()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{stem}.nvram"));
                if let l @ Loc::Found(..) = self.resolve(d, &dir_path, &nvram) {
                    self.add_file(&mut b, &l, Role::Nvram);
                }
                let vmxf = v
                    .extended_config()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{stem}.vmxf"));
                if let l @ Loc::Found(..) = self.resolve(d, &dir_path, &vmxf) {
                    self.add_file(&mut b, &l, Role::Config);
                }
                // Snapshot metadata first: its state files tell snapshot .vmem from live ones.
                if let l @ Loc::Found(sd, si) = self.resolve(d, &dir_path, &format!("{stem}.vmsd"))
                {
                    self.add_file(&mut b, &l, Role::SnapshotMetadata);
                    match self
                        .read_small(sd, si, self.limits.max_config_bytes)
                        .and_then(|x| vmsd::parse(&x))
                    {
                        Ok(s) => {
                            if s.need_consolidate {
                                b.notes.push("the .vmsd says the disks need consolidation (snapshot.needConsolidate)".into());
                            }
                            for sn in &s.snapshots {
                                if let Some(f) = &sn.state_file {
                                    snapshot_stems.insert(stem_of(&f.to_lowercase()).to_string());
                                    if let l @ Loc::Found(..) = self.resolve(d, &dir_path, f) {
                                        self.add_file(&mut b, &l, Role::SnapshotMetadata);
                                    }
                                }
                                snaps.push(SnapshotInfo {
                                    name: sn.name.clone(),
                                    description: sn.description.clone(),
                                    created_us: sn.created_us,
                                    current: sn.current,
                                });
                            }
                            if !s.snapshots.is_empty() {
                                b.notes.push(format!(
                                    "{} snapshot(s) in the .vmsd",
                                    s.snapshots.len()
                                ));
                            }
                        }
                        Err(e) => b.problem(
                            "snapshot-metadata-invalid",
                            Some(&self.path_of(&l)),
                            e.to_string(),
                        ),
                    }
                }
                let swap_derived = v.swap_derived_name().map(str::to_string);
                if let Some(sw) = &swap_derived
                    && let l @ Loc::Found(..) = self.resolve(d, &dir_path, sw)
                {
                    self.add_file(&mut b, &l, Role::Swap);
                    b.running.push(format!(
                        "{}: swap file present (sched.swap.derivedName)",
                        self.path_of(&l)
                    ));
                }
                if let Some(vs) = v.checkpoint_vm_state()
                    && let l @ Loc::Found(..) = self.resolve(d, &dir_path, vs)
                {
                    self.add_file(&mut b, &l, Role::Other);
                    b.suspended.push(format!(
                        "{}: suspend state (checkpoint.vmState)",
                        self.path_of(&l)
                    ));
                }
                if let Some(w) = v.working_dir() {
                    b.notes.push(format!(
                        "workingDir is {w}: snapshots and swap may live there"
                    ));
                }
                for disk in v.disks() {
                    let dk = self.chain(
                        &mut b,
                        d,
                        &dir_path,
                        std::slice::from_ref(&disk.file_name),
                        &disk.device,
                        disk.mode.clone(),
                    );
                    b.disks.push(dk);
                }
            }
        }
        if snaps.is_empty() {
            for dk in &b.disks {
                if dk.chain.len() > 1 && !dk.chain.iter().any(|l| l.missing) {
                    let note = format!(
                        "disk {} runs on delta layers but the .vmsd lists no snapshot: unconsolidated deltas",
                        dk.device
                    );
                    b.notes.push(note);
                }
            }
        }
        self.vmware_dir_files(&mut b, d, dir, &stem, single, &snapshot_stems);
        Assembled {
            d,
            cfg,
            id: self.config_id(d, cfg),
            single,
            name,
            platform: Platform::Vmware,
            build: b,
            template,
            guest_os,
            cpus,
            memory_mb: memory,
            bios_uuid: bios,
            instance_uuid: inst,
            snapshots: snaps,
        }
    }

    fn virtual_server_build(&self, d: usize, cfg: u32, single: bool) -> Assembled {
        let mut b = Build::new();
        let e = self.entry(d, cfg);
        let path = e.path.clone();
        let dir_path = parent_path(&path).to_string();
        let dir = e.parent;
        let stem = stem_of(&e.name).to_string();
        self.add_file(&mut b, &Loc::Found(d, cfg), Role::Config);
        let (mut guest_os, mut memory) = (None, None);
        match self
            .read_small(d, cfg, self.limits.max_config_bytes)
            .and_then(|x| vmc::parse(&x))
        {
            Err(err) => b.problem(
                if matches!(err, InventoryError::Limit { .. }) {
                    "config-too-large"
                } else {
                    "config-invalid"
                },
                Some(&path),
                err.to_string(),
            ),
            Ok(v) => {
                guest_os = v.guest_os.clone();
                memory = v.memory_mb;
                for (n, disk) in v.disks.iter().enumerate() {
                    let refs: Vec<String> = disk
                        .relative
                        .iter()
                        .chain(disk.absolute.iter())
                        .cloned()
                        .collect();
                    let dk = self.chain(&mut b, d, &dir_path, &refs, &format!("disk{n}"), None);
                    b.disks.push(dk);
                }
            }
        }
        self.vmware_dir_files(&mut b, d, dir, &stem, single, &HashSet::default());
        Assembled {
            d,
            cfg,
            id: self.config_id(d, cfg),
            single,
            name: stem,
            platform: Platform::VirtualServer,
            build: b,
            template: false,
            guest_os,
            cpus: None,
            memory_mb: memory,
            bios_uuid: None,
            instance_uuid: None,
            snapshots: Vec::new(),
        }
    }

    /// The order-independent part of one VMware or Virtual Server VM.
    fn assemble(&self, d: usize, cfg: u32, single: bool) -> Assembled {
        if self.entry(d, cfg).ext == "vmc" {
            self.virtual_server_build(d, cfg, single)
        } else {
            self.vmware_build(d, cfg, single)
        }
    }

    /// The order-dependent end of a VM: the leftover files of its folder that no earlier VM
    /// claimed, then its claims.
    fn complete(&self, a: Assembled) -> Vm {
        let mut b = a.build;
        if a.single {
            self.add_leftovers(&mut b, a.d, self.entry(a.d, a.cfg).parent);
        }
        let mut vm = self.finish((a.d, a.cfg), a.id, a.name, a.platform, b);
        vm.template = a.template;
        vm.guest_os = a.guest_os;
        vm.cpus = a.cpus;
        vm.memory_mb = a.memory_mb;
        vm.bios_uuid = a.bios_uuid;
        vm.instance_uuid = a.instance_uuid;
        vm.snapshots = a.snapshots;
        vm
    }

    /// A Hyper-V VM from its configuration `cfg` ([`Scanner::hyperv_config`]) and the other
    /// files of its GUID in `vmdir`.
    fn hyperv_vm(
        &self,
        d: usize,
        cfg: u32,
        vmdir: u32,
        guid: &str,
        files: &[u32],
        single: bool,
    ) -> Vm {
        let by_ext = |x: &str| files.iter().copied().find(|&f| self.entry(d, f).ext == x);
        let mut b = Build::new();
        let cfg_path = self.entry(d, cfg).path.clone();
        let folder = self.entry(d, vmdir).parent;
        let folder_path = self.entry(d, folder).path.clone();
        let folder_name = self.entry(d, folder).name.clone();
        self.add_file(&mut b, &Loc::Found(d, cfg), Role::Config);
        let is_xml = self.entry(d, cfg).ext == "xml";
        let cap = if is_xml {
            self.limits.max_config_bytes
        } else {
            self.limits.max_vmcx_bytes
        };
        let parsed = self.read_small(d, cfg, cap).and_then(|x| {
            if is_xml {
                hyperv::parse_xml(&x)
            } else {
                Ok(hyperv::scan_vmcx(&x))
            }
        });
        let cfgv = match parsed {
            Ok(c) => c,
            Err(err) => {
                b.problem(
                    if matches!(err, InventoryError::Limit { .. }) {
                        "config-too-large"
                    } else {
                        "config-invalid"
                    },
                    Some(&cfg_path),
                    err.to_string(),
                );
                hyperv::HyperVConfig::default()
            }
        };
        if let Some(f) = by_ext("vmgs") {
            self.add_file(&mut b, &Loc::Found(d, f), Role::Nvram);
        }
        if let Some(f) = by_ext("vmrs") {
            self.add_file(&mut b, &Loc::Found(d, f), Role::Other);
            let (size, _) = self.meta(d, f);
            if size > 1 << 20 {
                b.running.push(format!(
                    "{}: runtime state of {size} bytes (running or saved)",
                    self.entry(d, f).path
                ));
            }
        }
        // 2012: <GUID>/ beside the config holds the memory (.bin) and device state (.vsv)
        // while the VM runs or is saved.
        if let Some(&sub) = self.idx[d].kids(vmdir).iter().find(|&&k| {
            let e = self.entry(d, k);
            e.dir && e.name.eq_ignore_ascii_case(guid)
        }) {
            for &k in self.idx[d].kids(sub) {
                let e = self.entry(d, k);
                if e.dir {
                    continue;
                }
                self.add_file(&mut b, &Loc::Found(d, k), Role::Other);
                if matches!(e.ext.as_bytes(), b"bin" | b"vsv") {
                    b.running
                        .push(format!("{}: saved or running memory state present", e.path));
                }
            }
        }
        let mut disks = cfgv.disks.clone();
        if disks.is_empty() && single {
            // A .vmcx whose strings gave nothing: the disks of a one-VM folder are its own.
            if let Some(vhds) = self.idx[d].lookup(&join(&folder_path, "Virtual Hard Disks")) {
                let mut found: Vec<&Entry> = self.idx[d]
                    .kids(vhds)
                    .iter()
                    .map(|&k| self.entry(d, k))
                    .filter(|e| !e.dir && hyperv::is_virtual_disk_path(&e.name))
                    .collect();
                found.sort_by(|a, b| a.name.cmp(&b.name));
                // Only chain tops: a base whose child is also here is reached through it.
                for e in found {
                    disks.push(e.path.clone());
                }
                if !disks.is_empty() {
                    b.notes
                        .push("disks attached by folder: the .vmcx gave no disk paths".into());
                }
            }
        }
        let before = b.disks.len();
        for (n, p) in disks.iter().enumerate() {
            let dk = self.chain(
                &mut b,
                d,
                &folder_path,
                std::slice::from_ref(p),
                &format!("hyperv:{n}"),
                None,
            );
            b.disks.push(dk);
        }
        // Drop disks that turned out to be a lower layer of another disk (folder fallback).
        let lower: HashSet<String> = b.disks[before..]
            .iter()
            .flat_map(|k| k.chain.iter().skip(1).map(|l| l.path.clone()))
            .collect();
        let mut kept = Vec::new();
        for (n, dk) in b.disks.drain(..).enumerate() {
            if n >= before && dk.chain.first().is_some_and(|l| lower.contains(&l.path)) {
                continue;
            }
            kept.push(dk);
        }
        b.disks = kept;
        let mut snaps = Vec::new();
        if single && let Some(sdir) = self.idx[d].lookup(&join(&folder_path, "Snapshots")) {
            let mut stack = vec![sdir];
            while let Some(s) = stack.pop() {
                for &k in self.idx[d].kids(s) {
                    let e = self.entry(d, k);
                    if e.dir {
                        stack.push(k);
                        continue;
                    }
                    let ext = e.ext;
                    self.add_file(&mut b, &Loc::Found(d, k), Role::SnapshotMetadata);
                    if matches!(ext.as_bytes(), b"vmcx" | b"xml")
                        && hyperv::is_guid(stem_of(&e.name))
                    {
                        let name = if ext == "xml" {
                            self.read_small(d, k, self.limits.max_config_bytes)
                                .ok()
                                .and_then(|x| hyperv::parse_xml(&x).ok())
                                .and_then(|c| c.name)
                        } else {
                            None
                        };
                        snaps.push(SnapshotInfo {
                            name: name.unwrap_or_else(|| stem_of(&e.name).to_string()),
                            description: None,
                            created_us: None,
                            current: false,
                        });
                    }
                }
            }
            if !snaps.is_empty() {
                b.notes.push(format!("{} checkpoint(s)", snaps.len()));
            }
        }
        let name = cfgv.name.clone().unwrap_or_else(|| {
            let generic = folder == ROOT || folder_name.eq_ignore_ascii_case("Hyper-V");
            if generic {
                guid.to_ascii_uppercase()
            } else {
                folder_name.clone()
            }
        });
        let mut vm = self.finish((d, cfg), self.config_id(d, cfg), name, Platform::Hyperv, b);
        vm.cpus = cfgv.cpus;
        vm.memory_mb = cfgv.memory_mb;
        vm.instance_uuid = Some(guid.to_ascii_uppercase());
        vm.snapshots = snaps;
        vm
    }

    fn orphans(&self) -> Vec<OrphanDisk> {
        let mut candidates = Vec::new();
        let mut extents_only = Vec::new();
        for d in 0..self.ds.len() {
            for (i, e) in self.idx[d].entries.iter().enumerate() {
                if e.dir || self.claimed.is_claimed(d, i as u32) {
                    continue;
                }
                let ext = e.ext;
                match ext.as_bytes() {
                    b"vmdk" if is_extent_name(&e.name) => extents_only.push((d, i as u32)),
                    b"vmdk" | b"vhd" | b"vhdx" | b"avhd" | b"avhdx" => {
                        candidates.push((d, i as u32))
                    }
                    _ => {}
                }
            }
        }
        // Building the orphans claims files too.
        let mut built: Vec<(usize, u32, Build, Disk)> = Vec::new();
        for (d, i) in candidates {
            let mut b = Build::new();
            let e = self.entry(d, i);
            let dir = parent_path(&e.path).to_string();
            let disk = self.chain(
                &mut b,
                d,
                &dir,
                std::slice::from_ref(&e.path),
                "orphan",
                None,
            );
            built.push((d, i, b, disk));
        }
        // A base whose delta is itself an orphan is listed inside that delta's chain.
        let lower: HashSet<(usize, u32)> = built
            .iter()
            .flat_map(|(_, _, b, disk)| {
                let tops: HashSet<&str> =
                    disk.chain.iter().take(1).map(|l| l.file.as_str()).collect();
                b.locs
                    .iter()
                    .copied()
                    .zip(b.files.iter().filter(|f| !f.missing))
                    .filter(move |(_, f)| {
                        !tops.contains(f.name.as_str())
                            && matches!(
                                f.role,
                                Role::DiskDescriptor | Role::DiskExtent | Role::SnapshotDelta
                            )
                    })
                    .map(|(l, _)| l)
            })
            .collect();
        let mut out = Vec::new();
        for (d, i, b, disk) in built {
            if lower.contains(&(d, i)) {
                continue;
            }
            self.claim(&b);
            let path = self.entry(d, i).path.clone();
            out.push(OrphanDisk {
                id: self.vm_id(d, &path, "orphan"),
                lun: self.ds[d].lun.clone(),
                path,
                disk,
                files: b.files,
                problems: b.problems,
            });
        }
        for (d, i) in extents_only {
            if self.claimed.is_claimed(d, i) {
                continue;
            }
            let mut b = Build::new();
            let e = self.entry(d, i);
            let name = self.add(&mut b, &Loc::Found(d, i), role_by_name(&e.name));
            let path = e.path.clone();
            let (size, _) = self.meta(d, i);
            out.push(OrphanDisk {
                id: self.vm_id(d, &path, "orphan"),
                lun: self.ds[d].lun.clone(),
                path: path.clone(),
                disk: Disk {
                    device: "orphan".into(),
                    configured_path: path.clone(),
                    mode: None,
                    capacity: Some(size),
                    chain: vec![DiskLayer {
                        file: name,
                        path: path.clone(),
                        format: "vmdk",
                        create_type: None,
                        capacity: None,
                        cid: None,
                        parent_cid: None,
                        extents: Vec::new(),
                        missing: false,
                    }],
                },
                files: b.files,
                problems: vec![Problem::new(
                    "descriptor-missing",
                    Some(&path),
                    "an extent file that no descriptor names",
                )],
            });
        }
        out.sort_by(|a, b| {
            (a.lun.as_str(), a.path.as_str()).cmp(&(b.lun.as_str(), b.path.as_str()))
        });
        out
    }
}

/// VMware's extent file names: `-flat`, `-delta`, `-sesparse`, `-rdm`, `-rdmp`, `-ctk`,
/// `-sNNN`, `-fNNN`.
fn is_extent_name(name: &str) -> bool {
    let stem = stem_of(name);
    if ["-flat", "-delta", "-sesparse", "-rdm", "-rdmp", "-ctk"]
        .iter()
        .any(|x| ends_with_ignore_ascii_case(stem, x))
    {
        return true;
    }
    let s = stem.as_bytes();
    if let Some(pos) = rfind_byte(b'-', s) {
        let t = &s[pos + 1..];
        return t.len() == 4
            && matches!(t[0], b's' | b'S' | b'f' | b'F')
            && t[1..].iter().all(u8::is_ascii_digit);
    }
    false
}

/// A CID as descriptors write it: eight lower-case hex digits.
fn hex8(v: u32) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..8)
        .rev()
        .map(|k| char::from(HEX[(v >> (4 * k)) as usize & 0xF]))
        .collect()
}

fn format_of(path: &str) -> &'static str {
    match ext_of(path).as_bytes() {
        b"vhd" | b"avhd" | b"vud" => "vhd",
        b"vhdx" | b"avhdx" => "vhdx",
        _ => "vmdk",
    }
}

/// A role from the file name alone.
fn role_by_name(name: &str) -> Role {
    let ext = ext_of(name);
    if ends_with_ignore_ascii_case(name, "-ctk.vmdk") || ext == "rct" || ext == "mrt" {
        return Role::Cbt;
    }
    match ext.as_bytes() {
        b"vmx" | b"vmtx" | b"vmxf" | b"vmcx" | b"vmc" => Role::Config,
        b"nvram" | b"vmgs" => Role::Nvram,
        b"vmsd" | b"vmsn" => Role::SnapshotMetadata,
        b"vswp" => Role::Swap,
        b"log" => Role::Log,
        b"lck" => Role::Lock,
        b"avhd" | b"avhdx" | b"vud" => Role::SnapshotDelta,
        b"vhd" | b"vhdx" => Role::DiskExtent,
        b"vmdk" if is_extent_name(name) => {
            if contains_ignore_ascii_case(name, "-delta")
                || contains_ignore_ascii_case(name, "-sesparse")
            {
                Role::SnapshotDelta
            } else {
                Role::DiskExtent
            }
        }
        b"vmdk" => Role::DiskDescriptor,
        _ => Role::Other,
    }
}

/// RFC 4648 base32, lower case, no padding: URL-safe ids.
fn base32(bytes: &[u8]) -> String {
    const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(A[((acc >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn extensions_are_lower_case_and_short() {
        assert_eq!(ext_of("Disk.VMDK").as_str(), "vmdk");
        assert_eq!(ext_of("a.b.vmx"), "vmx");
        assert_eq!(ext_of("noext").as_str(), "");
        assert_eq!(ext_of("trailing.").as_str(), "");
        assert_eq!(ext_of("x.vmxbackup").as_str(), "");
        assert_eq!(ext_of("x.vmx~").as_str(), "vmx~");
        assert_eq!(ext_of("x.vmdké").as_str(), "");
    }

    #[test]
    fn classify_references() {
        assert_eq!(classify("disk.vmdk"), RefKind::Relative("disk.vmdk"));
        assert_eq!(
            classify("/vmfs/volumes/5f1c-aa/vm/disk.vmdk"),
            RefKind::VmfsVolume {
                volume: "5f1c-aa",
                rest: "vm/disk.vmdk"
            }
        );
        assert_eq!(
            classify("C:\\ClusterStorage\\Volume1\\a.vhdx"),
            RefKind::Foreign {
                root: "C:".into(),
                comps: vec!["ClusterStorage", "Volume1", "a.vhdx"]
            }
        );
        assert_eq!(
            classify("\\\\?\\Volume{1234}\\vm\\a.vhdx"),
            RefKind::Foreign {
                root: "Volume{1234}".into(),
                comps: vec!["vm", "a.vhdx"]
            }
        );
        assert_eq!(
            classify("\\\\filer\\vms\\x\\a.vhd"),
            RefKind::Foreign {
                root: "\\\\filer\\vms".into(),
                comps: vec!["x", "a.vhd"]
            }
        );
        assert!(matches!(
            classify("/vmfs/devices/disks/naa.600"),
            RefKind::Device(_)
        ));
        assert!(matches!(
            classify("\\\\.\\PhysicalDrive1"),
            RefKind::Device(_)
        ));
        // Multi-byte characters where the volume prefix would be: no slicing panic.
        assert!(matches!(
            classify("\\\\?\\Välume{x}\\a.vhdx"),
            RefKind::Foreign { .. }
        ));
        assert!(matches!(classify("\\\\?\\東京"), RefKind::Foreign { .. }));
        assert_eq!(
            classify("\\\\?\\D:\\vm\\a.vhdx"),
            RefKind::Foreign {
                root: "D:".into(),
                comps: vec!["vm", "a.vhdx"]
            }
        );
        assert_eq!(join("/a/b", "..\\c/./d.vmdk"), "/a/c/d.vmdk");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/", "../../x"), "/x");
        assert_eq!(join("/a", ".."), "/");
    }

    /// Word-wise lower-casing agrees with the standard library's on every byte value, at every
    /// position of a word.
    #[test]
    fn word_lowercasing_is_ascii_lowercasing() {
        for start in 0..=255u8 {
            let bytes: Vec<u8> = (0..8).map(|k| start.wrapping_add(k * 13)).collect();
            let mut want = bytes.clone();
            want.make_ascii_lowercase();
            let got = ascii_lower_word(word_at(&bytes, 0)).to_le_bytes();
            assert_eq!(got.as_slice(), want, "from {start}");
        }
    }

    /// Names the case-insensitive comparison finds equal hash alike, whatever their length
    /// (across hash words) and script, so the index and a VM's file names find them.
    #[test]
    fn case_folded_names_hash_alike() {
        let long = "A".repeat(8 * 4 * 2 + 5);
        let pairs = [
            ("VM.VMX", "vm.vmx"),
            (long.as_str(), &long.to_lowercase()),
            ("\u{212A}elvin.vmdk", "kelvin.vmdk"),
            ("ÄÖÜ-Disk.vmdk", "äöü-disk.VMDK"),
            (&format!("{long}É"), &format!("{}é", long.to_lowercase())),
            // `str::to_lowercase` would make the last one a final sigma (ς).
            ("ΑΣ", "Ασ"),
            ("abcdefgh", "ABCDEFGH"),
            ("abcdefghi", "ABCDEFGHI"),
            ("", ""),
        ];
        for (a, b) in pairs {
            assert!(name_eq(a, b, true), "{a} {b}");
            assert_eq!(name_hash(7, a, true), name_hash(7, b, true), "{a} {b}");
        }
        assert!(!name_eq("a.vmx", "A.VMX", false));
        let mut b = Build::new();
        let mut add = |base: &str, parent: &str| {
            let name = b.unique_name(base, parent);
            b.files.push(VmFile {
                name: name.clone(),
                path: format!("{parent}/{base}"),
                lun: None,
                role: Role::Other,
                size: 0,
                allocated: 0,
                missing: false,
                needs_datastore: None,
                file_id: None,
            });
            name
        };
        assert_eq!(add("vm.vmdk", "/a"), "vm.vmdk");
        assert_eq!(add("VM.vmdk", "/b"), "b~VM.vmdk");
        assert_eq!(add("vm.VMDK", "/b"), "2~vm.VMDK");
        assert_eq!(add("x/y", "/c"), "x~y");
        assert_eq!(add("\u{212A}.log", "/c"), "\u{212A}.log");
        assert_eq!(add("k.log", "/d"), "d~k.log");
    }

    #[test]
    fn extent_names_and_ids() {
        assert!(is_extent_name("a-flat.vmdk"));
        assert!(is_extent_name("a-s001.vmdk"));
        assert!(is_extent_name("a-000001-delta.vmdk"));
        assert!(!is_extent_name("a-000001.vmdk"));
        assert!(!is_extent_name("a.vmdk"));
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
    }

    /// A filesystem whose opened files record the read-ahead hints they get. Its listing
    /// brings no file bytes but resident ones (none here), as a listing that cannot read
    /// files in bulk would: the assembly then reads each configuration itself.
    struct Hinted {
        inner: crate::memfs::MemFs,
        hints: Arc<Mutex<Vec<String>>>,
        /// What its files say to `is_cached`.
        cached: Option<bool>,
    }

    struct HintSource {
        inner: lun::Source,
        hints: Arc<Mutex<Vec<String>>>,
        cached: Option<bool>,
    }

    impl ReadAt for HintSource {
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
            self.inner.read_exact_at(offset, buf)
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn will_need(&self, offset: u64, len: u64) {
            assert_eq!((offset, len), (0, self.size()));
            self.hints
                .lock()
                .unwrap()
                .push(self.inner.name().to_string());
        }
        fn is_cached(&self, _: u64, _: usize) -> Option<bool> {
            self.cached
        }
    }

    impl Filesystem for Hinted {
        fn info(&self) -> VolumeInfo {
            self.inner.info()
        }
        fn root(&self) -> FileId {
            self.inner.root()
        }
        fn list_tree(&self, limits: &TreeLimits) -> fscore::Tree {
            fscore::walk_tree(
                self,
                &TreeLimits {
                    inline_extensions: &[],
                    ..*limits
                },
            )
        }
        fn read_dir(&self, dir: &FileId) -> fscore::Result<Vec<fscore::DirEntry>> {
            self.inner.read_dir(dir)
        }
        fn metadata(&self, id: &FileId) -> fscore::Result<fscore::Metadata> {
            self.inner.metadata(id)
        }
        fn open(&self, id: &FileId) -> fscore::Result<lun::Source> {
            Ok(Arc::new(HintSource {
                inner: self.inner.open(id)?,
                hints: self.hints.clone(),
                cached: self.cached,
            }))
        }
        fn extents(&self, id: &FileId) -> fscore::Result<fscore::FileMapping> {
            self.inner.extents(id)
        }
        fn device(&self) -> lun::Source {
            self.inner.device()
        }
    }

    #[test]
    fn read_ahead_announces_configurations_and_descriptors_only_on_a_cold_lun() {
        for cached in [None, Some(false), Some(true)] {
            read_ahead_case(cached);
        }
    }

    fn read_ahead_case(cached: Option<bool>) {
        let mut b = crate::memfs::MemFs::builder(FsKind::Vmfs6, "ds", "5f1c-aa");
        let vms = READ_AHEAD_MIN_ENTRIES / 5;
        for n in 0..vms {
            let d = format!("/vm{n}");
            b.file(
                &format!("{d}/vm{n}.vmx"),
                format!("displayName = \"vm{n}\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"vm{n}.vmdk\"\n"),
            );
            b.file(
                &format!("{d}/vm{n}.vmdk"),
                format!("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\nRW 2048 VMFS \"vm{n}-flat.vmdk\"\n"),
            );
            b.sparse_file(&format!("{d}/vm{n}-flat.vmdk"), b"boot", 1 << 20, 4096);
            b.file(&format!("{d}/vm{n}.vmsd"), ".encoding = \"UTF-8\"\n");
            b.file(&format!("{d}/vmware.log"), "log\n");
        }
        let hints = Arc::new(Mutex::new(Vec::new()));
        let fs = Hinted {
            inner: b.build(),
            hints: hints.clone(),
            cached,
        };
        let mut want: Vec<String> = (0..vms)
            .flat_map(|n| ["vmx", "vmdk", "vmsd"].map(|e| format!("/vm{n}/vm{n}.{e}")))
            .map(|p| format!("memfs#{}", fs.inner.lookup(&p).unwrap().ino))
            .collect();
        want.sort();
        let inv = scan(&[Datastore::new("lun0", Arc::new(fs))]);
        assert_eq!(inv.vms.len(), vms);
        assert!(inv.vms.iter().all(|v| v.problems.is_empty()));
        let mut got = hints.lock().unwrap().clone();
        got.sort();
        if cached == Some(true) {
            // A warm LUN: only the probe's opens, no hints.
            assert!(got.is_empty(), "{} hints on a warm LUN", got.len());
        } else {
            assert_eq!(got, want, "cached: {cached:?}");
        }
    }
}
