//! Builders of VM folders inside an in-memory datastore, shaped as ESXi, Workstation,
//! Hyper-V and Virtual Server write them.
#![allow(dead_code)]

pub mod qemu;

use std::sync::Arc;

use fscore::FsKind;
use inventory::memfs::{MemFs, MemFsBuilder};
use inventory::{Datastore, Disk, Inventory, Problem, Vm};

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

/// The file stem of a VM's `n`th disk as ESXi names it: `name`, then `name_1`, `name_2`...
pub fn disk_stem(name: &str, n: usize) -> String {
    if n == 0 {
        name.to_string()
    } else {
        format!("{name}_{n}")
    }
}

/// Borrows owned `(device, fileName)` pairs as [`vmx`] takes them.
pub fn str_pairs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

/// A `.vmx` of a one-vCPU, 64 MiB VM with a guest OS of "other" and nothing extra.
pub fn small_vmx(display: &str, disks: &[(&str, &str)]) -> String {
    vmx(display, "other", 1, 64, disks, "")
}

/// The `.vmx` of a Debian VM shown as `display`, whose one disk is `東京 disk.vmdk` beside it.
pub fn tokyo_vmx(display: &str) -> String {
    vmx(
        display,
        "debian10-64",
        1,
        1024,
        &[("scsi0:0", "東京 disk.vmdk")],
        "",
    )
}

/// The `.vmx` of the Workstation VM `Build Box` (Windows 10), one disk `disk` on `device`.
pub fn build_box_vmx(device: &str, disk: &str) -> String {
    vmx("Build Box", "windows9-64", 2, 4096, &[(device, disk)], "")
}

/// The `.vmx` of the Windows VM `app`, whose one disk opens at `top_layer` (a snapshot delta).
pub fn app_vmx(top_layer: &str) -> String {
    vmx(
        "app",
        "windows2019srv-64",
        4,
        8192,
        &[("scsi0:0", top_layer)],
        "nvram = \"app.nvram\"\n",
    )
}

/// The `.vmx` of the Windows VM `sql`: its first disk beside it, the second on another
/// datastore named by its UUID `other_uuid`, the third (as `third_device`) on that datastore
/// named by its label `datastore2`.
pub fn sql_vmx(other_uuid: &str, third_device: &str, extra: &str) -> String {
    let by_uuid = format!("/vmfs/volumes/{other_uuid}/sql/sql_1.vmdk");
    vmx(
        "sql",
        "windows2019srv-64",
        8,
        32768,
        &[
            ("scsi0:0", "sql.vmdk"),
            ("scsi0:1", &by_uuid),
            (third_device, "/vmfs/volumes/datastore2/sql/sql_2.vmdk"),
        ],
        extra,
    )
}

/// Adds `{dir}/{stem}.vmdk` (a VMFS descriptor of `sectors`) and its flat extent of
/// `flat_len` zero bytes.
pub fn flat_vmdk(
    b: &mut MemFsBuilder,
    dir: &str,
    stem: &str,
    cid: u32,
    sectors: u64,
    flat_len: usize,
) {
    let flat = format!("{stem}-flat.vmdk");
    b.file(
        &format!("{dir}/{stem}.vmdk"),
        vmfs_descriptor(cid, &flat, sectors),
    );
    b.file(&format!("{dir}/{flat}"), vec![0u8; flat_len]);
}

/// Adds `{dir}/{stem}.vmdk` (a VMFS descriptor of `size` bytes) and its thin flat extent with
/// `allocated` bytes allocated.
pub fn thin_vmdk(b: &mut MemFsBuilder, dir: &str, stem: &str, cid: u32, size: u64, allocated: u64) {
    let flat = format!("{stem}-flat.vmdk");
    b.file(
        &format!("{dir}/{stem}.vmdk"),
        vmfs_descriptor(cid, &flat, size / 512),
    );
    b.sparse_file(&format!("{dir}/{flat}"), Vec::new(), size, allocated);
}

/// Adds an ESXi VM folder: `.vmx`, `.nvram`, `.vmsd` (empty), logs, one thin disk per entry
/// of `disk_gib`. Returns the folder path.
pub fn esxi_vm(b: &mut MemFsBuilder, dir: &str, name: &str, disk_gib: &[u64]) -> String {
    let mut disks = Vec::new();
    for (n, gib) in disk_gib.iter().enumerate() {
        let stem = disk_stem(name, n);
        thin_vmdk(b, dir, &stem, 0x1000 + n as u32, gib * GIB, gib * GIB / 4);
        disks.push((format!("scsi0:{n}"), format!("{stem}.vmdk")));
    }
    b.file(
        &format!("{dir}/{name}.vmx"),
        vmx(
            name,
            "ubuntu-64",
            2,
            4096,
            &str_pairs(&disks),
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
    let vm = inv.vms.iter().find(|v| v.name == name).unwrap_or_else(|| {
        panic!(
            "no VM {name:?} in {:?}",
            inv.vms.iter().map(|v| &v.name).collect::<Vec<_>>()
        )
    });
    assert_json_as_serde(vm);
    vm
}

/// `Vm::write_json` writes what serde_json writes from the model's derives: every VM a test
/// looks at is checked.
pub fn assert_json_as_serde(vm: &Vm) {
    let mut ours = Vec::new();
    vm.write_json(&mut ours);
    assert_eq!(
        String::from_utf8(ours).unwrap(),
        serde_json::to_string(vm).unwrap(),
        "JSON of VM {}",
        vm.name
    );
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

/// UTF-16 LE bytes after a byte-order mark, as Hyper-V and Virtual Server write XML.
pub fn utf16le_with_bom(s: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(utf16le(s));
    bytes
}

/// The paths of a disk's chain, newest layer first.
pub fn chain_paths(disk: &Disk) -> Vec<&str> {
    disk.chain.iter().map(|l| l.path.as_str()).collect()
}

/// The paths of the inventory's orphan disks.
pub fn orphan_paths(inv: &Inventory) -> Vec<&str> {
    inv.orphan_disks.iter().map(|o| o.path.as_str()).collect()
}

/// Scans one datastore built by `b`, registered as LUN "l".
pub fn scan_one(b: MemFsBuilder) -> Inventory {
    inventory::scan(&[ds("l", b)])
}

/// Asserts that `problems` holds one of `kind` (printing them all when not).
pub fn assert_problem(problems: &[Problem], kind: &str) {
    assert!(
        problems.iter().any(|p| p.kind == kind),
        "no {kind:?} in {problems:?}"
    );
}

/// The parent locator of `sql01`'s Hyper-V checkpoint, as Windows writes it on a CSV.
pub const SQL01_AVHDX_PARENT: &[(&str, &str)] = &[
    ("parent_linkage", "{0c1d2e3f-0000-1111-2222-333344445555}"),
    ("relative_path", ".\\sql01.vhdx"),
    (
        "absolute_win32_path",
        "C:\\ClusterStorage\\Volume1\\Hyper-V\\SQL 01\\Virtual Hard Disks\\sql01.vhdx",
    ),
];
