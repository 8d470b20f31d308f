//! `mkvmfs`: writes VMFS5 and VMFS6 test images holding a copy of a host directory tree.
//!
//! No mkfs for VMFS exists outside ESXi, so lunproxy's tests build their VMFS fixtures with
//! this crate. Every image it writes is checked by an independent reader (vmfs-tools), never
//! only by lunproxy's own.
//!
//! The pieces: [`tree`] scans the host directory (holes included), [`layout`] creates the sparse
//! image with its partition table, and [`v5`] / [`v6`] lay out the filesystem.

pub mod layout;
pub mod lvm;
pub mod tree;
pub mod v5;
pub mod v5_format;
pub mod v6;
pub mod v6_check;
pub mod v6_dir;
pub mod v6_format;

use std::path::PathBuf;

pub use layout::Layout;

/// Default file block size (1 MiB, what ESXi uses).
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// VMFS major version: 5 or 6.
    pub vmfs: u8,
    /// File block size in bytes.
    pub block_size: u64,
    /// Total image size in bytes; `None` picks a size that fits the tree.
    pub size: Option<u64>,
    /// Volume label.
    pub label: String,
    /// Partition layout of the image.
    pub layout: Layout,
    /// Patterns (relative to the source directory) of files written lazy-zeroed thick.
    pub lazy_zeroed: Vec<String>,
    /// The source directory.
    pub src: PathBuf,
    /// The image to create: the head extent of a spanned volume.
    pub image: PathBuf,
    /// Further images of a volume spanning several LUNs, in volume order.
    pub extents: Vec<PathBuf>,
    /// Image size in bytes of each further extent; `None` splits the volume evenly (or, with
    /// `size`, makes them as large as the first image).
    pub extent_size: Option<u64>,
}

impl Options {
    /// Partition length for an explicit `--size`, if one was given.
    pub fn partition_len(&self) -> anyhow::Result<Option<u64>> {
        self.size.map(|s| self.layout.partition_len(s)).transpose()
    }

    /// Partition length of each further extent, when sizes were given.
    pub fn extent_partition_len(&self) -> anyhow::Result<Option<u64>> {
        self.extent_size
            .or(self.size)
            .map(|s| self.layout.partition_len(s))
            .transpose()
    }
}

/// Scans the source tree and writes the image described by `opts`.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    refuse_image_inside_source(opts)?;
    if opts.extents.is_empty() && opts.extent_size.is_some() {
        anyhow::bail!("--extent-size needs at least one --extent IMAGE");
    }
    let mut tree = tree::Tree::scan(&opts.src)?;
    tree.mark_lazy_zeroed(&opts.lazy_zeroed);
    match opts.vmfs {
        5 => v5::write(opts, &tree, &opts.image),
        6 => v6::write(opts, &tree, &opts.image),
        v => anyhow::bail!("VMFS version {v} is not supported (use 5 or 6)"),
    }
}

/// An image inside the source tree would be copied into itself; an image named twice would
/// be overwritten by its second extent.
fn refuse_image_inside_source(opts: &Options) -> anyhow::Result<()> {
    let src = std::fs::canonicalize(&opts.src)
        .map_err(|e| anyhow::anyhow!("source directory {}: {e}", opts.src.display()))?;
    let mut seen = Vec::new();
    for image in std::iter::once(&opts.image).chain(&opts.extents) {
        let parent = match image.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Ok(dir) = std::fs::canonicalize(&parent) {
            if dir.starts_with(&src) {
                anyhow::bail!(
                    "image {} lies inside the source directory {}",
                    image.display(),
                    opts.src.display()
                );
            }
            let full = dir.join(image.file_name().unwrap_or_default());
            if seen.contains(&full) {
                anyhow::bail!("image {} is named twice", image.display());
            }
            seen.push(full);
        }
    }
    Ok(())
}

/// A pseudo-random number for UUIDs and garbage fill: not cryptographic, only unlikely to
/// repeat between images (time, process id and a counter, mixed by splitmix64).
pub fn random_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    splitmix64(seed)
}

/// One step of splitmix64: a cheap, well-mixed 64-bit hash.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
