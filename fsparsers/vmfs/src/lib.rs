//! VMFS5 and VMFS6 reader: LVM, file descriptors, addressing, directories, extents.
