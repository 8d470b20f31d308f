//! VMFS block addresses: opaque integers whose low three bits give the kind of resource they
//! name. VMFS5 packs them into 32 bits, VMFS6 into 64 bits with different field positions; both
//! decode into one [`Addr`] so the addressing code above stays version-neutral.

/// FS3 address type of the low three bits (`FS3_AddrType`).
pub mod kind {
    /// File block (VMFS5) or small file block (VMFS6).
    pub const FILE_BLOCK: u8 = 1;
    /// Sub-block, stored in `.sbc.sf`.
    pub const SUB_BLOCK: u8 = 2;
    /// Pointer block, stored in `.pbc.sf`.
    pub const POINTER_BLOCK: u8 = 3;
    /// File descriptor, stored in `.fdc.sf`.
    pub const FILE_DESCRIPTOR: u8 = 4;
    /// Secondary pointer block, stored in `.pb2.sf`.
    pub const POINTER2_BLOCK: u8 = 5;
    /// Journal block (VMFS6 `.jbc.sf`).
    pub const JOURNAL_BLOCK: u8 = 6;
    /// Large file block (VMFS6).
    pub const LARGE_FILE_BLOCK: u8 = 7;
}

/// A decoded address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// Zero: nothing allocated (a hole).
    Null,
    /// A file block by absolute number (VMFS5 FB). `tbz`: to be zeroed.
    FileBlock {
        /// Block number on the volume.
        block: u64,
        /// To-be-zeroed flag.
        tbz: bool,
    },
    /// A VMFS6 small file block: cluster and resource inside `.fbb.sf`'s SFB child.
    SmallFileBlock {
        /// SFB cluster.
        cluster: u64,
        /// SFB inside the cluster.
        resource: u64,
        /// Any TBZ bit set.
        tbz: bool,
    },
    /// A VMFS6 large file block by absolute number.
    LargeFileBlock {
        /// LFB number on the volume.
        block: u64,
        /// Any TBZ bit set.
        tbz: bool,
    },
    /// A resource inside a resource file (sub-block, pointer block, pointer block 2, FD).
    Resource {
        /// Address kind ([`kind`]).
        kind: u8,
        /// Cluster number.
        cluster: u64,
        /// Resource inside the cluster.
        resource: u64,
    },
    /// A kind this reader does not expect in that place (journal block, invalid types).
    Other {
        /// The low three bits.
        kind: u8,
    },
}

impl Addr {
    /// Decodes a VMFS5 (32-bit) address. `dense_sb`: the FS3 descriptor's DenseSBPerCluster flag,
    /// which gives sub-block addresses two more resource bits.
    pub fn decode5(raw: u32, dense_sb: bool) -> Addr {
        let raw = raw as u64;
        if raw == 0 {
            return Addr::Null;
        }
        let k = (raw & 7) as u8;
        match k {
            kind::FILE_BLOCK => Addr::FileBlock {
                block: (raw >> 6) & 0x3FF_FFFF,
                tbz: raw & 0x20 != 0,
            },
            kind::SUB_BLOCK => {
                let mut resource = (raw >> 28) & 0xF;
                if dense_sb {
                    resource |= (raw & 0b11000) << 1;
                }
                Addr::Resource {
                    kind: k,
                    cluster: (raw >> 6) & 0x3F_FFFF,
                    resource,
                }
            }
            kind::POINTER_BLOCK | kind::POINTER2_BLOCK => Addr::Resource {
                kind: k,
                cluster: (raw >> 6) & 0x3F_FFFF,
                resource: (raw >> 28) & 0xF,
            },
            kind::FILE_DESCRIPTOR => Addr::Resource {
                kind: k,
                cluster: (raw >> 6) & 0xFFFF,
                resource: (raw >> 22) & 0x3FF,
            },
            _ => Addr::Other { kind: k },
        }
    }

    /// Decodes a VMFS6 (64-bit) address.
    pub fn decode6(raw: u64) -> Addr {
        if raw == 0 {
            return Addr::Null;
        }
        let k = (raw & 7) as u8;
        let tbz = (raw >> 7) & 0xFF != 0;
        match k {
            kind::FILE_BLOCK => Addr::SmallFileBlock {
                cluster: (raw >> 15) & 0x7FFF_FFFF,
                resource: (raw >> 51) & 0x1FFF,
                tbz,
            },
            kind::LARGE_FILE_BLOCK => Addr::LargeFileBlock {
                block: (raw >> 15) & 0x7FFF_FFFF,
                tbz,
            },
            kind::SUB_BLOCK | kind::POINTER_BLOCK | kind::POINTER2_BLOCK => Addr::Resource {
                kind: k,
                cluster: (raw >> 6) & 0xF_FFFF_FFFF,
                resource: (raw >> 56) & 0xFF,
            },
            // FD addresses stay 32-bit on VMFS6.
            kind::FILE_DESCRIPTOR => Addr::decode5(raw as u32, false),
            _ => Addr::Other { kind: k },
        }
    }
}

/// Splits a file descriptor address into (cluster, resource).
pub fn fd_parts(addr: u32) -> (u64, u64) {
    (((addr >> 6) & 0xFFFF) as u64, ((addr >> 22) & 0x3FF) as u64)
}

/// Builds a file descriptor address from (cluster, resource).
pub fn fd_make(cluster: u32, resource: u32) -> u32 {
    kind::FILE_DESCRIPTOR as u32 | ((cluster & 0xFFFF) << 6) | ((resource & 0x3FF) << 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_vmfs5_addresses() {
        assert_eq!(Addr::decode5(0, false), Addr::Null);
        // FB 5 with TBZ.
        let fb = 1 | 0x20 | (5 << 6);
        assert_eq!(
            Addr::decode5(fb, false),
            Addr::FileBlock {
                block: 5,
                tbz: true
            }
        );
        let sb = 2 | (7 << 6) | (3 << 28) | 0b01000;
        assert_eq!(
            Addr::decode5(sb, true),
            Addr::Resource {
                kind: 2,
                cluster: 7,
                resource: 3 | 0x10
            }
        );
        assert_eq!(
            Addr::decode5(sb, false),
            Addr::Resource {
                kind: 2,
                cluster: 7,
                resource: 3
            }
        );
        assert_eq!(fd_parts(0x0180_0004), (0, 6));
        assert_eq!(fd_make(0, 6), 0x0180_0004);
    }

    #[test]
    fn decodes_vmfs6_addresses() {
        let sfb = 1u64 | (0xFF << 7) | (9 << 15) | (17 << 51);
        assert_eq!(
            Addr::decode6(sfb),
            Addr::SmallFileBlock {
                cluster: 9,
                resource: 17,
                tbz: true
            }
        );
        let lfb = 7u64 | (3 << 15);
        assert_eq!(
            Addr::decode6(lfb),
            Addr::LargeFileBlock {
                block: 3,
                tbz: false
            }
        );
        let sb = 2u64 | (0x1234 << 6) | (5 << 56);
        assert_eq!(
            Addr::decode6(sb),
            Addr::Resource {
                kind: 2,
                cluster: 0x1234,
                resource: 5
            }
        );
        assert_eq!(Addr::decode6(6), Addr::Other { kind: 6 });
    }
}
