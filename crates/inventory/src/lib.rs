//! VM inventory: which files on a LUN make up each VM (VMware, Hyper-V, Virtual Server).
//!
//! [`scan`] walks every registered datastore once through the [`fscore::Filesystem`] trait,
//! reads the VM configurations, disk descriptors and virtual disk headers (never disk
//! contents), and returns every VM with its files, disk chains and a consistency verdict.
//! A broken VM never fails the scan: it carries [`Problem`]s. Disks that no VM references
//! are listed as orphans.
//!
//! The parsers are public modules of their own: [`vmx`], [`vmdk`], [`vmsd`], [`vhd`],
//! [`vhdx`], [`hyperv`], [`vmc`].

mod error;
pub mod hyperv;
mod json;
pub mod memfs;
mod model;
mod pipeline;
mod scan;
pub mod synth;
pub mod text;
pub mod vhd;
pub mod vhdx;
pub mod vmc;
pub mod vmdk;
pub mod vmsd;
pub mod vmx;

pub use error::InventoryError;
pub use model::*;
pub use scan::{Datastore, Findings, Limits, scan, scan_each, scan_with};
