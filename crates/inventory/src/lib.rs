//! VM inventory: which files on a LUN make up each VM (VMware, Hyper-V, Virtual Server).
