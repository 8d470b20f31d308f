//! `mkvmfs`: writes a VMFS5 or VMFS6 image holding a copy of a host directory tree.

fn main() {}
