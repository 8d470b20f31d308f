//! What the inventory reports. Field names are the JSON names of `lunproxy vms --json` and
//! of `GET /api/v1/vms`.

use serde::Serialize;

/// The whole inventory of a set of datastores.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Inventory {
    /// VMs, ordered by LUN then config path.
    pub vms: Vec<Vm>,
    /// Virtual disks no VM references.
    pub orphan_disks: Vec<OrphanDisk>,
    /// Problems not tied to one VM (an unreadable directory, a walk limit).
    pub problems: Vec<Problem>,
}

impl Inventory {
    /// The VM with that id.
    pub fn vm(&self, id: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.id == id)
    }
}

/// Which hypervisor wrote the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// VMware ESXi, Workstation, Server, Fusion (`.vmx`).
    Vmware,
    /// Microsoft Hyper-V (`.vmcx` or 2012-era `.xml`).
    Hyperv,
    /// Microsoft Virtual Server 2005 / Virtual PC (`.vmc`).
    VirtualServer,
}

impl Platform {
    /// The name it has in JSON (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Vmware => "vmware",
            Platform::Hyperv => "hyperv",
            Platform::VirtualServer => "virtual-server",
        }
    }
}

/// What a file is to its VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The VM configuration (`.vmx`, `.vmxf`, `.vmcx`, `.xml`, `.vmc`).
    Config,
    /// Firmware variables (`.nvram`, Hyper-V `.vmgs`).
    Nvram,
    /// A text disk descriptor (`.vmdk`).
    DiskDescriptor,
    /// Data of a base disk (`-flat.vmdk`, `-sNNN.vmdk`, monolithic sparse `.vmdk`, `.vhd`,
    /// `.vhdx`).
    DiskExtent,
    /// Data of a snapshot layer (`-delta.vmdk`, `-sesparse.vmdk`, `.avhdx`, differencing
    /// `.vhd`).
    SnapshotDelta,
    /// Snapshot list and state (`.vmsd`, `.vmsn`).
    SnapshotMetadata,
    /// Swap of a running VM (`.vswp`).
    Swap,
    /// A log (`vmware.log`).
    Log,
    /// A lock (`.lck`).
    Lock,
    /// Changed block tracking (`-ctk.vmdk`, Hyper-V `.rct`/`.mrt`).
    Cbt,
    /// Anything else in the VM's folder.
    Other,
}

impl Role {
    /// Every role, for tests that go through them all.
    #[cfg(test)]
    pub(crate) const ALL: [Role; 11] = [
        Role::Config,
        Role::Nvram,
        Role::DiskDescriptor,
        Role::DiskExtent,
        Role::SnapshotDelta,
        Role::SnapshotMetadata,
        Role::Swap,
        Role::Log,
        Role::Lock,
        Role::Cbt,
        Role::Other,
    ];

    /// The name it has in JSON (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Config => "config",
            Role::Nvram => "nvram",
            Role::DiskDescriptor => "disk-descriptor",
            Role::DiskExtent => "disk-extent",
            Role::SnapshotDelta => "snapshot-delta",
            Role::SnapshotMetadata => "snapshot-metadata",
            Role::Swap => "swap",
            Role::Log => "log",
            Role::Lock => "lock",
            Role::Cbt => "cbt",
            Role::Other => "other",
        }
    }
}

/// One file of a VM.
#[derive(Clone, Debug, Serialize)]
pub struct VmFile {
    /// Unique within the VM; the `{name}` of `/vms/{vm}/files/{name}`.
    pub name: String,
    /// Absolute path on its LUN's filesystem (`/` separators); for a missing file, the path
    /// as the configuration gives it.
    pub path: String,
    /// The LUN holding it (shared by all the files on it); `None` when missing.
    pub lun: Option<std::sync::Arc<str>>,
    /// What it is.
    pub role: Role,
    /// Logical size in bytes (0 when missing).
    pub size: u64,
    /// Bytes allocated on the LUN (0 when missing).
    pub allocated: u64,
    /// The file is referenced but not found on any registered LUN.
    pub missing: bool,
    /// For a missing file: the datastore (VMFS UUID or label, Windows drive) it lives on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_datastore: Option<String>,
    /// The file on its LUN's filesystem, so streaming needs no second path lookup.
    #[serde(skip)]
    pub file_id: Option<fscore::FileId>,
}

/// One extent of a disk layer.
#[derive(Clone, Debug, Serialize)]
pub struct DiskExtent {
    /// `RW`, `RDONLY`, `NOACCESS`.
    pub access: String,
    /// Extent type (`VMFS`, `FLAT`, `SPARSE`, `VMFSSPARSE`, `SESPARSE`, `VMFSRDM`, `ZERO`…).
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Offset in bytes inside the extent file.
    pub offset: u64,
    /// The file in [`Vm::files`] (by name); `None` for ZERO extents.
    pub file: Option<String>,
}

/// One layer of a disk chain.
#[derive(Clone, Debug, Serialize)]
pub struct DiskLayer {
    /// The layer's entry file in [`Vm::files`] (descriptor or self-describing image).
    pub file: String,
    /// Its path.
    pub path: String,
    /// Container format (`vmdk`, `vhd`, `vhdx`).
    pub format: &'static str,
    /// VMDK `createType`, VHD disk type, or `vhdx`/`vhdx-differencing`.
    pub create_type: Option<String>,
    /// Virtual size in bytes.
    pub capacity: Option<u64>,
    /// VMDK `CID` (hex).
    pub cid: Option<String>,
    /// VMDK `parentCID` (hex).
    pub parent_cid: Option<String>,
    /// The data files.
    pub extents: Vec<DiskExtent>,
    /// The layer's file was not found.
    pub missing: bool,
}

/// A virtual disk as a chain: `chain[0]` is the layer the VM writes to, the last is the base.
#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    /// Device node (`scsi0:1`, `ide:0:0`, `hyperv:0`).
    pub device: String,
    /// The path as the configuration gives it.
    pub configured_path: String,
    /// VMware disk mode (`persistent`, `independent-persistent`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Virtual size in bytes, from the top layer.
    pub capacity: Option<u64>,
    /// Layers, top first.
    pub chain: Vec<DiskLayer>,
}

/// Whether the VM's disks are consistent as cloned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsistencyState {
    /// No sign that the VM ran when the LUN was cloned.
    PoweredOff,
    /// Suspended: memory saved in a `.vmss`/`.vsv`; disks match that state.
    Suspended,
    /// The VM was running: its disks are as after a power failure.
    CrashConsistent,
}

impl ConsistencyState {
    /// The name it has in JSON (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsistencyState::PoweredOff => "powered-off",
            ConsistencyState::Suspended => "suspended",
            ConsistencyState::CrashConsistent => "crash-consistent",
        }
    }
}

/// The consistency verdict and why.
#[derive(Clone, Debug, Serialize)]
pub struct Consistency {
    /// The verdict.
    pub state: ConsistencyState,
    /// The files and flags that led to it.
    pub evidence: Vec<String>,
}

/// One snapshot (VMware) or checkpoint (Hyper-V).
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotInfo {
    /// Display name.
    pub name: String,
    /// Description, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Creation time, microseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_us: Option<i64>,
    /// The VM runs from this snapshot.
    pub current: bool,
}

/// Something wrong with a VM or the scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Stable kind: `config-unreadable`, `config-too-large`, `config-invalid`,
    /// `disk-missing`, `descriptor-invalid`, `chain-loop`, `chain-too-deep`,
    /// `parent-cid-mismatch`, `extents-capped`, `file-missing`, `io`, `walk-limit`…
    pub kind: String,
    /// The file concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What failed, for people.
    pub detail: String,
}

impl Problem {
    /// A problem of `kind` about `path`.
    pub fn new(kind: &str, path: Option<&str>, detail: impl Into<String>) -> Self {
        Problem {
            kind: kind.to_string(),
            path: path.map(str::to_string),
            detail: detail.into(),
        }
    }
}

/// One VM.
#[derive(Clone, Debug, Serialize)]
pub struct Vm {
    /// Stable, URL-safe id: a hash of the datastore UUID and the config path.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The LUN holding the configuration.
    pub lun: String,
    /// Label of that datastore.
    pub datastore: String,
    /// Path of the configuration file.
    pub config: String,
    /// Hypervisor.
    pub platform: Platform,
    /// A VMware template (`.vmtx`).
    pub template: bool,
    /// Guest OS identifier as the hypervisor records it.
    pub guest_os: Option<String>,
    /// Virtual CPUs.
    pub cpus: Option<u64>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// BIOS UUID (`uuid.bios`).
    pub bios_uuid: Option<String>,
    /// vCenter instance UUID (`vc.uuid`), or the Hyper-V VM GUID.
    pub instance_uuid: Option<String>,
    /// Every file of the VM.
    pub files: Vec<VmFile>,
    /// Disks as chains.
    pub disks: Vec<Disk>,
    /// Snapshots or checkpoints.
    pub snapshots: Vec<SnapshotInfo>,
    /// Running or not at clone time.
    pub consistency: Consistency,
    /// Facts worth knowing before a backup (open snapshots, unconsolidated deltas,
    /// independent disks).
    pub notes: Vec<String>,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

impl Vm {
    /// Appends the VM as compact JSON (no newline): exactly what `serde_json` writes for it,
    /// in about half the time.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        crate::json::write_vm(out, self);
    }

    /// The file with that name.
    pub fn file(&self, name: &str) -> Option<&VmFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// A virtual disk no VM references.
#[derive(Clone, Debug, Serialize)]
pub struct OrphanDisk {
    /// Stable, URL-safe id.
    pub id: String,
    /// The LUN holding it.
    pub lun: String,
    /// Path of its top file.
    pub path: String,
    /// The chain.
    pub disk: Disk,
    /// Its files (descriptors, extents, parents).
    pub files: Vec<VmFile>,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` is the serde name of every variant.
    #[test]
    fn enum_names_are_their_serde_names() {
        let serde_name = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for p in [Platform::Vmware, Platform::Hyperv, Platform::VirtualServer] {
            assert_eq!(p.as_str(), serde_name(serde_json::to_value(p).unwrap()));
        }
        for r in Role::ALL {
            assert_eq!(r.as_str(), serde_name(serde_json::to_value(r).unwrap()));
        }
        for s in [
            ConsistencyState::PoweredOff,
            ConsistencyState::Suspended,
            ConsistencyState::CrashConsistent,
        ] {
            assert_eq!(s.as_str(), serde_name(serde_json::to_value(s).unwrap()));
        }
    }
}
