//! NTFS reader: every file of a Windows- or mkntfs-written volume, with its extents.
