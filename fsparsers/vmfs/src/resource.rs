//! Resource files (`.fdc.sf`, `.sbc.sf`, `.pbc.sf`, `.pb2.sf`, `.fbb.sf`, `.jbc.sf`): a
//! `FS3_ResFileMetadata` header, then cluster groups. Each group starts with one lock and one
//! metadata block per cluster, followed by the resources of its clusters.

use fscore::le::u32_at;

use crate::error::{Result, VmfsError};

/// `FS3_RFMD_SIGNATURE` ("rfmd"), present on VMFS6.
pub const RFMD_SIGNATURE: u32 = 0x7266_6D64;
/// Size of `FS3_ResFileMetadata` as read here.
pub const RES_META_SIZE: usize = 0x58;

/// The decoded `FS3_ResFileMetadata`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResMeta {
    /// `resourcesPerCluster` (0x00).
    pub resources_per_cluster: u64,
    /// `clustersPerGroup` (0x04).
    pub clusters_per_group: u64,
    /// `clusterGroupOffset` (0x08): offset of group 0 in the file.
    pub cluster_group_offset: u64,
    /// `resourceSize` (0x0c).
    pub resource_size: u64,
    /// `clusterGroupSize` (0x10).
    pub cluster_group_size: u64,
    /// `numResourcesLo | numResourcesHi << 32` (0x14, 0x1c).
    pub num_resources: u64,
    /// `numClusterGroups` (0x18).
    pub num_cluster_groups: u64,
    /// `signature` (0x20).
    pub signature: u32,
    /// `flags` (0x28).
    pub flags: u32,
    /// `childMetaOffset` (0x34): VMFS6 `.fbb.sf` keeps the SFB metadata there.
    pub child_meta_offset: u64,
    /// Per-cluster header bytes (lock + metadata block): 1 KiB on VMFS5, 2 × mdAlignment on
    /// VMFS6.
    pub cluster_header_size: u64,
}

impl ResMeta {
    /// Decodes and sanity-checks the header. `what` names the file in errors.
    pub fn parse(
        b: &[u8],
        vmfs6: bool,
        cluster_header_size: u64,
        what: &str,
        device: &str,
        offset: u64,
    ) -> Result<ResMeta> {
        let bad = |detail: String| VmfsError::Corrupt {
            structure: format!("resource metadata of {what}"),
            device: device.to_string(),
            offset,
            detail,
        };
        let f = |o| {
            u32_at(b, o)
                .map(u64::from)
                .ok_or_else(|| bad("truncated".into()))
        };
        let m = ResMeta {
            resources_per_cluster: f(0x00)?,
            clusters_per_group: f(0x04)?,
            cluster_group_offset: f(0x08)?,
            resource_size: f(0x0c)?,
            cluster_group_size: f(0x10)?,
            num_resources: f(0x14)? | f(0x1c)? << 32,
            num_cluster_groups: f(0x18)?,
            signature: f(0x20)? as u32,
            flags: f(0x28)? as u32,
            child_meta_offset: f(0x34)?,
            cluster_header_size,
        };
        if vmfs6 && m.signature != RFMD_SIGNATURE {
            return Err(bad(format!("signature {:#x} is not 'rfmd'", m.signature)));
        }
        let in_range = |v: u64, lo: u64, hi: u64| (lo..=hi).contains(&v);
        if !in_range(m.resources_per_cluster, 1, 1 << 20)
            || !in_range(m.clusters_per_group, 1, 1 << 20)
            || !in_range(m.resource_size, 1, 1 << 32)
            || m.num_cluster_groups > 1 << 32
        {
            return Err(bad(format!(
                "implausible geometry: {} resources/cluster, {} clusters/group, resource size {}, \
                 {} groups",
                m.resources_per_cluster,
                m.clusters_per_group,
                m.resource_size,
                m.num_cluster_groups
            )));
        }
        let needed = m
            .clusters_per_group
            .checked_mul(m.cluster_header_size)
            .and_then(|h| {
                m.clusters_per_group
                    .checked_mul(m.resources_per_cluster)?
                    .checked_mul(m.resource_size)?
                    .checked_add(h)
            });
        if needed.is_none_or(|n| n > m.cluster_group_size) {
            return Err(bad(format!(
                "cluster group size {} cannot hold {} clusters of {} resources of {} bytes",
                m.cluster_group_size,
                m.clusters_per_group,
                m.resources_per_cluster,
                m.resource_size
            )));
        }
        Ok(m)
    }

    /// Byte offset inside the resource file of resource `resource` of cluster `cluster`, or
    /// `None` when the pair lies outside the file's geometry.
    pub fn resource_offset(&self, cluster: u64, resource: u64) -> Option<u64> {
        if resource >= self.resources_per_cluster {
            return None;
        }
        let group = cluster / self.clusters_per_group;
        if self.num_cluster_groups != 0 && group >= self.num_cluster_groups {
            return None;
        }
        let in_group = cluster % self.clusters_per_group;
        let cluster_size = self.resources_per_cluster * self.resource_size;
        self.cluster_group_offset
            .checked_add(group.checked_mul(self.cluster_group_size)?)?
            .checked_add(self.clusters_per_group * self.cluster_header_size)?
            .checked_add(in_group.checked_mul(cluster_size)?)?
            .checked_add(resource * self.resource_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_bytes(rpc: u32, cpg: u32, cgo: u32, rs: u32, cgs: u32, ncg: u32) -> Vec<u8> {
        let mut b = vec![0u8; RES_META_SIZE];
        for (o, v) in [
            (0, rpc),
            (4, cpg),
            (8, cgo),
            (0xc, rs),
            (0x10, cgs),
            (0x18, ncg),
            (0x20, RFMD_SIGNATURE),
        ] {
            b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn computes_offsets_and_rejects_bad_geometry() {
        let b = meta_bytes(4, 2, 0x1000, 0x800, 2 * 1024 + 2 * 4 * 0x800, 3);
        let m = ResMeta::parse(&b, true, 1024, "t", "d", 0).unwrap();
        assert_eq!(m.resource_offset(0, 0), Some(0x1000 + 2048));
        assert_eq!(
            m.resource_offset(1, 1),
            Some(0x1000 + 2048 + 4 * 0x800 + 0x800)
        );
        assert_eq!(
            m.resource_offset(2, 0),
            Some(0x1000 + m.cluster_group_size + 2048)
        );
        assert_eq!(m.resource_offset(0, 4), None);
        assert_eq!(m.resource_offset(6, 0), None);
        let bad = meta_bytes(4, 2, 0, 0x800, 100, 1);
        assert!(ResMeta::parse(&bad, true, 1024, "t", "d", 0).is_err());
        let zero = meta_bytes(0, 2, 0, 0x800, 1 << 20, 1);
        assert!(ResMeta::parse(&zero, true, 1024, "t", "d", 0).is_err());
    }
}
