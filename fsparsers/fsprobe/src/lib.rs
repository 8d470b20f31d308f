//! Opens whatever filesystem a set of LUNs holds.
//!
//! A LUN clone may carry a GPT, an MBR, or a bare filesystem; a VMFS volume may span several
//! LUNs. This crate finds the filesystem partitions on each LUN, groups VMFS extents into
//! volumes, and opens them with the right reader, keeping track of where each filesystem device
//! lies on its LUN so that extent maps can be reported as offsets on the LUN itself.

use std::path::PathBuf;
use std::sync::Arc;

use fscore::{Filesystem, FsError, FsKind};
use lun::{Lun, MultipathPolicy, OpenOptions, ReadAt, ReadAtExt, Source, Window};
use serde::Serialize;

/// Errors of opening LUNs and filesystems.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A LUN could not be opened.
    #[error("cannot open LUN {lun}: {source}")]
    Lun {
        /// The LUN as given.
        lun: String,
        /// Why.
        #[source]
        source: lun::LunError,
    },
    /// A filesystem could not be opened or probed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Nothing readable was found.
    #[error("{lun}: no NTFS or VMFS filesystem found ({detail})")]
    NothingFound {
        /// The LUN.
        lun: String,
        /// What the LUN starts with.
        detail: String,
    },
    /// The LUNs hold more than one filesystem and the caller did not say which.
    #[error("the given LUNs hold {count} filesystems ({list}); choose one with a partition number")]
    Ambiguous {
        /// How many.
        count: usize,
        /// Their descriptions.
        list: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = ProbeError> = std::result::Result<T, E>;

/// A LUN named on the command line: one path, or several comma-separated paths to the same LUN
/// (multipath).
#[derive(Clone, Debug)]
pub struct LunSpec {
    /// Display name (the argument as given).
    pub name: String,
    /// Device paths.
    pub paths: Vec<PathBuf>,
}

impl LunSpec {
    /// Parses `PATH[,PATH…]`.
    pub fn parse(arg: &str) -> LunSpec {
        LunSpec {
            name: arg.to_string(),
            paths: arg
                .split(',')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
        }
    }

    /// Opens every path read-only as one multipath LUN.
    pub fn open(&self, opts: OpenOptions) -> Result<Arc<Lun>> {
        Lun::open(&self.name, &self.paths, opts, MultipathPolicy::default())
            .map(Arc::new)
            .map_err(|source| ProbeError::Lun {
                lun: self.name.clone(),
                source,
            })
    }
}

/// The filesystem formats as found on a device, before opening.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Found {
    /// An NTFS boot sector.
    Ntfs,
    /// A VMFS LVM device header.
    Vmfs,
}

/// One filesystem device found on a LUN.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// Index of the LUN in the list given.
    pub lun: usize,
    /// Partition number (1-based as in GPT/MBR), `None` for a bare filesystem.
    pub partition: Option<u32>,
    /// Byte offset of the filesystem device on the LUN.
    pub start: u64,
    /// Length of the filesystem device.
    pub length: u64,
    /// What it holds.
    pub found: Found,
    /// VMFS volume UUID (to group the extents of a spanned volume).
    pub volume: Option<String>,
}

/// Byte offset of the VMFS LVM device header inside a VMFS partition.
const LVM_HEADER_OFFSET: u64 = 0x10_0000;
/// Magic number of the LVM device header.
const LVM_MAGIC: u32 = 0xC001_D00D;

/// What the first bytes of a device are, when it is a filesystem lunproxy reads.
pub fn detect(device: &dyn ReadAt) -> Result<Option<Found>> {
    if device.size() >= 512 {
        let boot = device.read_vec(0, 512).map_err(FsError::from)?;
        if &boot[3..11] == b"NTFS    " && boot[510..512] == [0x55, 0xaa] {
            return Ok(Some(Found::Ntfs));
        }
    }
    if device.size() >= LVM_HEADER_OFFSET + 512 {
        let hdr = device
            .read_vec(LVM_HEADER_OFFSET, 4)
            .map_err(FsError::from)?;
        if fscore::le::u32_at(&hdr, 0) == Some(LVM_MAGIC) {
            return Ok(Some(Found::Vmfs));
        }
    }
    Ok(None)
}

/// Lists the filesystem devices on one LUN: the LUN itself when it starts with a filesystem,
/// else each GPT or MBR partition that does.
pub fn candidates(lun_index: usize, lun: &Source) -> Result<Vec<Candidate>> {
    // A bare filesystem wins: an NTFS boot sector occupies sector 0 where a table would be,
    // and a VMFS partition image has no table at all.
    if let Some(c) = candidate_at(lun_index, None, 0, lun)? {
        return Ok(vec![c]);
    }
    let mut out = Vec::new();
    for p in fscore::partition::read_partitions(lun.as_ref())? {
        let win: Source = Arc::new(
            Window::new(
                lun.clone(),
                p.start_byte,
                p.length_bytes,
                format!("{} partition {}", lun.name(), p.index),
            )
            .map_err(FsError::from)?,
        );
        out.extend(candidate_at(lun_index, Some(p.index), p.start_byte, &win)?);
    }
    Ok(out)
}

fn candidate_at(
    lun: usize,
    partition: Option<u32>,
    start: u64,
    dev: &Source,
) -> Result<Option<Candidate>> {
    let Some(found) = detect(dev.as_ref())? else {
        return Ok(None);
    };
    let volume = match found {
        Found::Vmfs => vmfs::lvm_device_info(dev.as_ref())
            .ok()
            .flatten()
            .map(|i| i.volume_uuid),
        Found::Ntfs => None,
    };
    Ok(Some(Candidate {
        lun,
        partition,
        start,
        length: dev.size(),
        found,
        volume,
    }))
}

/// Where one device of an opened filesystem lies.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// Index of the LUN in the list given.
    pub lun: usize,
    /// Partition number, if any.
    pub partition: Option<u32>,
    /// Byte offset of the filesystem device on that LUN.
    pub start: u64,
}

/// An opened filesystem and where its devices lie on the LUNs.
pub struct Volume {
    /// The filesystem.
    pub fs: Arc<dyn Filesystem>,
    /// The filesystem's devices, in the order the reader numbers them.
    pub members: Vec<Member>,
}

impl Volume {
    /// Translates an offset on the filesystem's device to (LUN index, byte offset on the LUN).
    pub fn physical(&self, device_offset: u64) -> (usize, u64) {
        let (dev, off) = self.fs.locate(device_offset);
        match self.members.get(dev) {
            Some(m) => (m.lun, m.start + off),
            None => (dev, off),
        }
    }

    /// Splits `len` bytes at `device_offset` on the filesystem's device into pieces that each
    /// lie contiguously on one LUN: `(LUN index, byte offset on the LUN, length)`. An extent of
    /// a spanned VMFS volume may run from the end of one LUN onto the next, and [`Self::physical`]
    /// translates only its first byte. Pieces are found by bisection over [`Self::physical`],
    /// which assumes a LUN's run is not resumed, at the same offsets, after another LUN's run
    /// (true of LVM volumes, whose PEs never repeat a device range).
    pub fn physical_pieces(&self, device_offset: u64, len: u64) -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        let end = device_offset.saturating_add(len);
        let mut pos = device_offset;
        while pos < end {
            let (lun, start) = self.physical(pos);
            let continues = |n: u64| {
                let (l, o) = self.physical(pos + n - 1);
                l == lun && start.checked_add(n - 1) == Some(o)
            };
            let (mut lo, mut hi) = (1, end - pos);
            if continues(hi) {
                lo = hi;
            }
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if continues(mid) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            out.push((lun, start, lo));
            pos += lo;
        }
        out
    }

    /// The filesystem format.
    pub fn kind(&self) -> FsKind {
        self.fs.info().fs
    }
}

/// Opens the filesystem held by `luns`. With one filesystem in total it is opened; VMFS extents
/// of one volume spread over several LUNs are assembled into that volume. `partition` picks a
/// partition when the first LUN has several filesystems.
pub fn open_volume(luns: &[Source], partition: Option<u32>) -> Result<Volume> {
    let mut all = Vec::new();
    for (i, lun) in luns.iter().enumerate() {
        all.extend(candidates(i, lun)?);
    }
    if let Some(p) = partition {
        all.retain(|c| c.lun != 0 || c.partition == Some(p));
    }
    let Some(first) = all.first().cloned() else {
        let detail = luns
            .first()
            .map(|l| describe_start(l.as_ref()))
            .unwrap_or_else(|| "no LUN given".into());
        return Err(ProbeError::NothingFound {
            lun: luns
                .first()
                .map(|l| l.name().to_string())
                .unwrap_or_default(),
            detail,
        });
    };
    match first.found {
        Found::Ntfs => {
            let others = all.iter().filter(|c| c.lun == first.lun).count();
            if others > 1 && partition.is_none() {
                return Err(ambiguous(&all));
            }
            open_ntfs(luns, &first)
        }
        Found::Vmfs => {
            let same: Vec<Candidate> = all
                .iter()
                .filter(|c| c.found == Found::Vmfs && c.volume == first.volume)
                .cloned()
                .collect();
            let on_first = all.iter().filter(|c| c.lun == first.lun).count();
            let same_on_first = same.iter().filter(|c| c.lun == first.lun).count();
            if on_first > same_on_first && partition.is_none() {
                return Err(ambiguous(&all));
            }
            open_vmfs(luns, &same)
        }
    }
}

/// Opens every filesystem found on `luns`: each NTFS partition on its own, and the VMFS extents
/// of one volume (grouped by volume UUID, across LUNs) together. A LUN or volume that fails does
/// not hide the others: each result stands alone.
pub fn open_all(luns: &[Source]) -> Vec<Result<Volume>> {
    let mut results = Vec::new();
    let mut found = Vec::new();
    for (i, lun) in luns.iter().enumerate() {
        match candidates(i, lun) {
            Ok(c) if c.is_empty() => results.push(Err(ProbeError::NothingFound {
                lun: lun.name().to_string(),
                detail: describe_start(lun.as_ref()),
            })),
            Ok(c) => found.extend(c),
            Err(e) => results.push(Err(e)),
        }
    }
    let mut vmfs_groups: Vec<(Option<String>, Vec<Candidate>)> = Vec::new();
    for c in found {
        match c.found {
            Found::Ntfs => results.push(open_ntfs(luns, &c)),
            Found::Vmfs => match vmfs_groups
                .iter_mut()
                .find(|(v, _)| v.is_some() && *v == c.volume)
            {
                Some((_, group)) => group.push(c),
                None => vmfs_groups.push((c.volume.clone(), vec![c])),
            },
        }
    }
    for (_, group) in vmfs_groups {
        results.push(open_vmfs(luns, &group));
    }
    results
}

fn device_of(luns: &[Source], c: &Candidate) -> Result<Source> {
    let lun = &luns[c.lun];
    let Some(p) = c.partition else {
        return Ok(lun.clone());
    };
    Ok(Arc::new(
        Window::new(
            lun.clone(),
            c.start,
            c.length,
            format!("{} partition {p}", lun.name()),
        )
        .map_err(FsError::from)?,
    ))
}

fn member_of(c: &Candidate) -> Member {
    Member {
        lun: c.lun,
        partition: c.partition,
        start: c.start,
    }
}

fn open_ntfs(luns: &[Source], c: &Candidate) -> Result<Volume> {
    let fs = ntfs::Ntfs::open(device_of(luns, c)?).map_err(FsError::from)?;
    Ok(Volume {
        fs: Arc::new(fs),
        members: vec![member_of(c)],
    })
}

fn open_vmfs(luns: &[Source], group: &[Candidate]) -> Result<Volume> {
    let devices = group
        .iter()
        .map(|c| device_of(luns, c))
        .collect::<Result<Vec<_>>>()?;
    let fs = vmfs::Vmfs::open(devices).map_err(FsError::from)?;
    Ok(Volume {
        fs: Arc::new(fs),
        members: group.iter().map(member_of).collect(),
    })
}

fn ambiguous(all: &[Candidate]) -> ProbeError {
    ProbeError::Ambiguous {
        count: all.len(),
        list: all
            .iter()
            .map(|c| {
                format!(
                    "{:?} on LUN {} partition {}",
                    c.found,
                    c.lun,
                    c.partition.map_or("-".to_string(), |p| p.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A short description of what a device starts with, for "nothing found" errors.
fn describe_start(dev: &dyn ReadAt) -> String {
    let n = dev.size().min(16);
    match dev.read_vec(0, n as usize) {
        Ok(b) if b.iter().all(|&x| x == 0) => format!("the first {n} bytes are zero"),
        Ok(b) => format!(
            "it starts with {}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        Err(e) => format!("its first bytes cannot be read: {e}"),
    }
}
