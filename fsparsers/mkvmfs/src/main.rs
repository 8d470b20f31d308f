//! `mkvmfs`: writes a VMFS5 or VMFS6 image holding a copy of a host directory tree.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mkvmfs::{DEFAULT_BLOCK_SIZE, Layout, Options};

/// Write a VMFS5 or VMFS6 image holding a copy of SRC_DIR. Holes in source files stay
/// unallocated, and the image itself stays sparse on the host.
#[derive(Parser, Debug)]
#[command(name = "mkvmfs", version)]
struct Cli {
    /// VMFS major version (5 or 6).
    #[arg(long, value_parser = clap::value_parser!(u8).range(5..=6))]
    vmfs: u8,
    /// File block size in bytes.
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE)]
    block_size: u64,
    /// Image size in bytes (default: enough for the tree; holes do not count).
    #[arg(long)]
    size: Option<u64>,
    /// Volume label.
    #[arg(long, default_value = "mkvmfs")]
    label: String,
    /// Partition layout: the bare VMFS partition, or one behind a GPT or MBR at sector 2048.
    #[arg(long, value_enum, default_value_t = Layout::Bare)]
    layout: Layout,
    /// Write files whose path (relative to SRC_DIR) matches GLOB lazy-zeroed thick: every block
    /// allocated, blocks past the data marked to-be-zeroed over non-zero garbage. `*` stays in
    /// one path component, `**` crosses them; a pattern without `/` also matches base names.
    #[arg(long, value_name = "GLOB")]
    lazy_zeroed: Vec<String>,
    /// Another image of the same VMFS volume (repeatable): the volume spans IMAGE and every
    /// --extent, in that order, each a separate LVM device with the layout of --layout.
    #[arg(long = "extent", value_name = "IMAGE")]
    extents: Vec<PathBuf>,
    /// Size in bytes of each --extent image (default: as large as --size, or without --size
    /// the volume is split evenly over the images).
    #[arg(long)]
    extent_size: Option<u64>,
    /// Directory to copy into the volume.
    src_dir: PathBuf,
    /// Image file to create (overwritten).
    image: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = Options {
        vmfs: cli.vmfs,
        block_size: cli.block_size,
        size: cli.size,
        label: cli.label,
        layout: cli.layout,
        lazy_zeroed: cli.lazy_zeroed,
        src: cli.src_dir,
        image: cli.image,
        extents: cli.extents,
        extent_size: cli.extent_size,
    };
    match mkvmfs::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
