//! Opens whatever filesystem a LUN holds: partition tables, then NTFS or VMFS.
