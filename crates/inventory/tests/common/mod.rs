//! Builders of VM folders inside an in-memory datastore, shaped as ESXi, Workstation,
//! Hyper-V and Virtual Server write them.
#![allow(dead_code)]

use std::sync::Arc;

use fscore::FsKind;
use inventory::memfs::{MemFs, MemFsBuilder};
use inventory::{Datastore, Inventory, Vm};

pub const GIB: u64 = 1 << 30;

/// A text descriptor as ESXi writes it for a thin/thick disk on VMFS.
pub fn vmfs_descriptor(cid: u32, flat: &str, sectors: u64) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW {sectors} VMFS \"{flat}\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.thinProvisioned = \"1\"\nddb.virtualHWVersion = \"19\"\n"
    )
}

/// A snapshot delta descriptor (VMFS5 vmfsSparse, or seSparse when `se`).
pub fn delta_descriptor(
    cid: u32,
    parent_cid: u32,
    parent: &str,
    delta: &str,
    sectors: u64,
    se: bool,
) -> String {
    let (ct, kind) = if se {
        ("seSparse", "SESPARSE")
    } else {
        ("vmfsSparse", "VMFSSPARSE")
    };
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID={parent_cid:08x}\nisNativeSnapshot=\"no\"\ncreateType=\"{ct}\"\nparentFileNameHint=\"{parent}\"\n# Extent description\nRW {sectors} {kind} \"{delta}\"\n\n# The Disk Data Base\n#DDB\n\nddb.longContentID = \"0123456789abcdef0123456789abcdef\"\n"
    )
}

/// Escapes a value as VMware does in `.vmx` files.
pub fn vmx_escape(v: &str) -> String {
    v.replace('|', "|7C").replace('"', "|22")
}

/// A `.vmx` as ESXi 7 writes it, with the given disks (`(device, fileName)`).
pub fn vmx(
    display: &str,
    guest: &str,
    cpus: u32,
    mem: u32,
    disks: &[(&str, &str)],
    extra: &str,
) -> String {
    let mut s = String::from(
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\npciBridge0.present = \"TRUE\"\nfloppy0.present = \"FALSE\"\n",
    );
    s += &format!(
        "numvcpus = \"{cpus}\"\nmemSize = \"{mem}\"\nscsi0.virtualDev = \"pvscsi\"\nscsi0.present = \"TRUE\"\n"
    );
    s += "sata0.present = \"TRUE\"\nsata0:0.deviceType = \"cdrom-image\"\nsata0:0.fileName = \"/vmfs/volumes/5f9a1c2e-7d3b4a10-1e2f-000c29aabbcc/iso/ubuntu.iso\"\nsata0:0.present = \"TRUE\"\n";
    for (dev, file) in disks {
        s += &format!(
            "{dev}.deviceType = \"scsi-hardDisk\"\n{dev}.fileName = \"{}\"\n{dev}.present = \"TRUE\"\n",
            vmx_escape(file)
        );
    }
    s += &format!(
        "displayName = \"{}\"\nguestOS = \"{guest}\"\n",
        vmx_escape(display)
    );
    s += "uuid.bios = \"56 4d 1c 3a 9b 2e 4f 10-8a 77 c1 d2 e3 f4 05 16\"\nvc.uuid = \"52 9f 11 22 33 44 55 66-77 88 99 aa bb cc dd ee\"\n";
    s += extra;
    s
}

/// Adds an ESXi VM folder: `.vmx`, `.nvram`, `.vmsd` (empty), logs, one thin disk per entry
/// of `disk_gib`. Returns the folder path.
pub fn esxi_vm(b: &mut MemFsBuilder, dir: &str, name: &str, disk_gib: &[u64]) -> String {
    let mut disks = Vec::new();
    for (n, gib) in disk_gib.iter().enumerate() {
        let base = if n == 0 {
            name.to_string()
        } else {
            format!("{name}_{n}")
        };
        let desc = format!("{dir}/{base}.vmdk");
        let flat = format!("{base}-flat.vmdk");
        b.file(
            &desc,
            vmfs_descriptor(0x1000 + n as u32, &flat, gib * GIB / 512),
        );
        b.sparse_file(
            &format!("{dir}/{flat}"),
            Vec::new(),
            gib * GIB,
            gib * GIB / 4,
        );
        disks.push((format!("scsi0:{n}"), format!("{base}.vmdk")));
    }
    let refs: Vec<(&str, &str)> = disks
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    b.file(
        &format!("{dir}/{name}.vmx"),
        vmx(
            name,
            "ubuntu-64",
            2,
            4096,
            &refs,
            &format!("nvram = \"{name}.nvram\"\n"),
        ),
    );
    b.file(&format!("{dir}/{name}.nvram"), vec![7u8; 8684]);
    b.file(&format!("{dir}/{name}.vmsd"), "");
    b.file(
        &format!("{dir}/vmware.log"),
        "2024-01-01T00:00:00.000Z In(05) vmx Log for VMware ESX\n",
    );
    b.file(&format!("{dir}/vmware-1.log"), "old log\n");
    dir.to_string()
}

/// A VMFS datastore builder.
pub fn vmfs(label: &str, uuid: &str) -> MemFsBuilder {
    MemFs::builder(FsKind::Vmfs6, label, uuid)
}

/// An NTFS datastore builder.
pub fn ntfs(label: &str, serial: &str) -> MemFsBuilder {
    MemFs::builder(FsKind::Ntfs, label, serial)
}

/// A datastore around a built filesystem.
pub fn ds(lun: &str, mut b: MemFsBuilder) -> Datastore {
    Datastore::new(lun, Arc::new(b.build()))
}

/// The VM of that name (panics with the list when absent).
pub fn vm<'a>(inv: &'a Inventory, name: &str) -> &'a Vm {
    inv.vms.iter().find(|v| v.name == name).unwrap_or_else(|| {
        panic!(
            "no VM {name:?} in {:?}",
            inv.vms.iter().map(|v| &v.name).collect::<Vec<_>>()
        )
    })
}

/// `(file name, role)` of a VM, sorted.
pub fn roles(vm: &Vm) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vm
        .files
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                serde_json::to_value(f.role)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// UTF-16 LE bytes.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}
