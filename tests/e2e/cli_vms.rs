//! Issue 6 end to end: `lunproxy vms … --json` on datastores built at test time, the way
//! ESXi, VMware Workstation, Hyper-V and Virtual Server lay VMs out.
//!
//! * `ds-a`: VMFS5 written by `mkvmfs`: a powered-off VM with two thin disks and CBT, a running
//!   VM with a Unicode name, three disks and a VMFSSPARSE snapshot, a VM whose second disk is on
//!   `ds-b`, an orphan disk, and the bad inputs (garbage `.vmx`, a 1 GiB `.vmx`, a descriptor of
//!   10,000 extents, a parent chain that loops).
//! * `ds-b`: VMFS6 written by `mkvmfs`: a running VM with an SESPARSE snapshot, and the second
//!   disk of the spanning VM.
//! * `hvstore`: NTFS made by mkntfs and filled through ntfs-3g: a VMware Workstation VM with
//!   Windows paths and qemu-img sparse disks, a Hyper-V VM (`.vmcx`/`.vmrs`/`.vmgs`, a
//!   qemu-img `.vhdx` and a differencing `.avhdx`), a 2012-era Hyper-V XML VM, and a Virtual
//!   Server 2005 `.vmc` (UTF-16LE with BOM) with a qemu-img `.vhd`.
//!
//! Sizes are checked against `lunproxy fs ls --json` and the source files; ids against a
//! second run and a read-only loop device.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use e2e::{json_lines, lunproxy, lunproxy_ok, mkvmfs_stamp, noise};
use serde_json::Value;
use testkit::{LoopDevice, cached_fixture, fixture_dir, have_tool, skip};

/// Bump when a source tree below changes, so cached images are rebuilt.
const VERSION: &str = "v2";
const MIB: u64 = 1 << 20;
/// Virtual size of every VMware disk: `RW 8388608` sectors, 4 GiB.
const DISK_SECTORS: u64 = 8_388_608;
const DISK_BYTES: u64 = DISK_SECTORS * 512;

const DB: &str = "db 01 Ünïcødé";
const APP: &str = "app server ☃";
const XP: &str = "WinXP Pro";
const HV_GUID: &str = "8F2A6C1E-3B4D-4E5F-9A0B-1C2D3E4F5A6B";
const HV_XML_GUID: &str = "5D7E9F01-2345-4678-89AB-CDEF01234567";

/// A sparse file of `len` bytes with a little data at a few offsets.
fn thin(path: &Path, len: u64, seed: u64) {
    let f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (k, at) in [0, len / 3, len - 64 * 1024].into_iter().enumerate() {
        f.write_all_at(&noise(seed + k as u64, 64 * 1024), at)
            .unwrap();
    }
}

fn write(path: &Path, text: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A `.vmx` as ESXi 7 writes it, with the given extra lines (disks, nvram…).
fn vmx(name: &str, cpus: u32, mem: u32, uuid_seed: u8, extra: &str) -> String {
    let u = |s: u8| {
        (0..16)
            .map(|i| format!("{:02x}", s.wrapping_mul(31).wrapping_add(i * 7)))
            .collect::<Vec<_>>()
            .chunks(8)
            .map(|c| c.join(" "))
            .collect::<Vec<_>>()
            .join("-")
    };
    format!(
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n\
         vmci0.present = \"TRUE\"\nfloppy0.present = \"FALSE\"\nnumvcpus = \"{cpus}\"\n\
         memSize = \"{mem}\"\nbios.bootRetry.delay = \"10\"\nsched.cpu.units = \"mhz\"\n\
         powerType.suspend = \"soft\"\ntools.upgrade.policy = \"manual\"\n\
         scsi0.virtualDev = \"pvscsi\"\nscsi0.present = \"TRUE\"\n\
         ide1:0.deviceType = \"atapi-cdrom\"\nide1:0.fileName = \"CD/DVD drive 0\"\n\
         ide1:0.present = \"TRUE\"\n\
         ethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"VM Network\"\n\
         ethernet0.addressType = \"vpx\"\nethernet0.generatedAddress = \"00:50:56:9a:3c:{uuid_seed:02x}\"\n\
         ethernet0.present = \"TRUE\"\ndisplayName = \"{name}\"\nguestOS = \"windows2019srv-64\"\n\
         toolScripts.afterPowerOn = \"TRUE\"\nuuid.bios = \"{}\"\nvc.uuid = \"{}\"\n\
         migrate.hostLog = \"./vm-{uuid_seed}.hlog\"\nsched.swap.derivedName = \"/vmfs/volumes/x/vm.vswp\"\n\
         {extra}",
        u(uuid_seed),
        u(uuid_seed ^ 0x5a)
    )
}

/// The folder `<root>/<name>` of a VMware VM holding `<name>.vmx` as ESXi 7 writes it (see
/// [`vmx`]). Returns the folder.
fn vm_dir(root: &Path, name: &str, cpus: u32, mem: u32, uuid_seed: u8, extra: &str) -> PathBuf {
    let d = root.join(name);
    write(
        &d.join(format!("{name}.vmx")),
        vmx(name, cpus, mem, uuid_seed, extra),
    );
    d
}

/// A text descriptor as ESXi writes it.
fn descriptor(
    cid: &str,
    parent_cid: &str,
    create_type: &str,
    extents: &str,
    hint: Option<&str>,
) -> String {
    let hint = hint
        .map(|h| format!("parentFileNameHint=\"{h}\"\n"))
        .unwrap_or_default();
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid}\nparentCID={parent_cid}\n\
         createType=\"{create_type}\"\n{hint}\n# Extent description\n{extents}\n\
         # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"522\"\nddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\nddb.longContentID = \"8a2b1c{cid}0000000000000000{cid}\"\n\
         ddb.thinProvisioned = \"1\"\nddb.uuid = \"60 00 C2 9a 1b 2c 3d 4e-5f 60 71 82 93 a4 b5 c6\"\n\
         ddb.virtualHWVersion = \"19\"\n"
    )
}

/// The content ID of the base disk made with `seed`.
fn base_cid(seed: u64) -> String {
    format!("{:08x}", 0x1000_0000 + seed)
}

/// A base disk `<stem>.vmdk` + thin `<stem>-flat.vmdk`, optionally with `<stem>-ctk.vmdk`.
fn base_disk(dir: &Path, stem: &str, seed: u64, ctk: bool) {
    write(
        &dir.join(format!("{stem}.vmdk")),
        descriptor(
            &base_cid(seed),
            "ffffffff",
            "vmfs",
            &format!("RW {DISK_SECTORS} VMFS \"{stem}-flat.vmdk\""),
            None,
        ),
    );
    thin(&dir.join(format!("{stem}-flat.vmdk")), DISK_BYTES, seed);
    if ctk {
        // A CBT file starts with its own header; a little noise is enough for the inventory.
        let mut b = b"\x0c\x0c\xcc\xcc".to_vec();
        b.extend(noise(seed ^ 0xc7, 64 * 1024 - 4));
        write(&dir.join(format!("{stem}-ctk.vmdk")), b);
    }
}

/// A snapshot layer `<stem>-000001.vmdk` over `<stem>.vmdk`, its data in `data_file`.
fn snapshot_layer(dir: &Path, stem: &str, parent_cid: &str, kind: &str, data_file: &str) {
    let create = if kind == "SESPARSE" {
        "seSparse"
    } else {
        "vmfsSparse"
    };
    write(
        &dir.join(format!("{stem}-000001.vmdk")),
        descriptor(
            "2c3d4e5f",
            parent_cid,
            create,
            &format!("RW {DISK_SECTORS} {kind} \"{data_file}\""),
            Some(&format!("{stem}.vmdk")),
        ),
    );
    let f = File::create(dir.join(data_file)).unwrap();
    f.set_len(16 * MIB).unwrap();
    let magic: &[u8] = if kind == "SESPARSE" {
        &[0xbe, 0xba, 0xfe, 0xca, 0, 0, 0, 0]
    } else {
        b"COWD\x01\x00\x00\x00"
    };
    f.write_all_at(magic, 0).unwrap();
    f.write_all_at(&noise(77, 4096), 2 * MIB).unwrap();
}

/// A base disk (`seed`, with CBT if `ctk`) under a `kind` snapshot layer whose data is
/// `<stem>-000001-<data_suffix>.vmdk`.
fn snapshotted_disk(dir: &Path, stem: &str, seed: u64, ctk: bool, kind: &str, data_suffix: &str) {
    base_disk(dir, stem, seed, ctk);
    let data_file = format!("{stem}-000001-{data_suffix}.vmdk");
    snapshot_layer(dir, stem, &base_cid(seed), kind, &data_file);
}

/// The nvram (noise from `seed`) of a VM with one snapshot named `snapshot` over its first
/// disk, its `.vmsd` and its `.vmsn` (`vmsn_len` bytes of noise from `seed + 1`).
fn snapshot_files(dir: &Path, stem: &str, snapshot: &str, seed: u64, vmsn_len: usize) {
    write(&dir.join(format!("{stem}.nvram")), noise(seed, 8684));
    write(
        &dir.join(format!("{stem}.vmsd")),
        vmsd(
            snapshot,
            &format!("{stem}-000001.vmdk"),
            &format!("{stem}.vmdk"),
            &format!("{stem}-Snapshot1.vmsn"),
        ),
    );
    write(
        &dir.join(format!("{stem}-Snapshot1.vmsn")),
        noise(seed + 1, vmsn_len),
    );
}

fn vmsd(snapshot: &str, vmdk_top: &str, vmdk_base: &str, vmsn: &str) -> String {
    format!(
        ".encoding = \"UTF-8\"\nsnapshot.lastUID = \"1\"\nsnapshot.current = \"1\"\n\
         snapshot0.uid = \"1\"\nsnapshot0.filename = \"{vmsn}\"\nsnapshot0.displayName = \"{snapshot}\"\n\
         snapshot0.description = \"taken by the e2e test\"\nsnapshot0.createTimeHigh = \"398457\"\n\
         snapshot0.createTimeLow = \"-1398475392\"\nsnapshot0.numDisks = \"1\"\n\
         snapshot0.disk0.fileName = \"{vmdk_base}\"\nsnapshot0.disk0.node = \"scsi0:0\"\n\
         snapshot.numSnapshots = \"1\"\n# top {vmdk_top}\n"
    )
}

/// The VMFS5 datastore `ds-a`.
fn tree_vmfs5(root: &Path) {
    // web01: powered off, two thin disks with CBT, a CD-ROM and an absent disk to skip.
    let d = vm_dir(
        root,
        "web01",
        2,
        4096,
        1,
        "nvram = \"web01.nvram\"\nscsi0:0.fileName = \"web01.vmdk\"\nscsi0:0.present = \"TRUE\"\n\
             scsi0:0.ctkEnabled = \"TRUE\"\nscsi0:1.fileName = \"web01_1.vmdk\"\n\
             scsi0:1.present = \"TRUE\"\nscsi0:1.mode = \"persistent\"\n\
             scsi0:2.fileName = \"gone.vmdk\"\nscsi0:2.present = \"FALSE\"\nctkEnabled = \"TRUE\"\n",
    );
    write(&d.join("web01.nvram"), noise(11, 8684));
    write(&d.join("web01.vmsd"), "");
    write(
        &d.join("web01.vmxf"),
        "<?xml version=\"1.0\"?>\n<Foundry>\n<VM>\n<VMId type=\"string\">52 1a</VMId>\n\
         <ClientMetaData>\n<clientMetaDataAttributes/>\n</ClientMetaData>\n\
         <vmxPathName type=\"string\">web01.vmx</vmxPathName></VM></Foundry>\n",
    );
    write(&d.join("vmware.log"), noise(12, 300_000));
    write(&d.join("vmware-1.log"), noise(13, 120_000));
    base_disk(&d, "web01", 100, true);
    base_disk(&d, "web01_1", 200, true);

    // The running VM with a Unicode name, three disks, scsi0:0 on a snapshot.
    let d = vm_dir(
        root,
        DB,
        4,
        16384,
        2,
        &format!(
            "nvram = \"{DB}.nvram\"\nscsi0:0.fileName = \"{DB}-000001.vmdk\"\nscsi0:0.present = \"TRUE\"\n\
                 scsi0:1.fileName = \"{DB}_1.vmdk\"\nscsi0:1.present = \"TRUE\"\n\
                 sata0.present = \"TRUE\"\nsata0:0.fileName = \"{DB}_2.vmdk\"\nsata0:0.present = \"TRUE\"\n\
                 ide1:1.deviceType = \"cdrom-image\"\nide1:1.fileName = \"/vmfs/volumes/iso/w2019.iso\"\n\
                 ide1:1.present = \"TRUE\"\n"
        ),
    );
    snapshot_files(&d, DB, "before patch", 21, 40_000);
    write(&d.join("vmware.log"), noise(23, 50_000));
    snapshotted_disk(&d, DB, 300, false, "VMFSSPARSE", "delta");
    base_disk(&d, &format!("{DB}_1"), 400, false);
    base_disk(&d, &format!("{DB}_2"), 500, false);
    thin(&d.join(format!("{DB}-3f2a1b.vswp")), 64 * MIB, 24);
    thin(&d.join(format!("vmx-{DB}-1234567-1.vswp")), 8 * MIB, 25);
    write(&d.join(format!("{DB}.vmx.lck/M58419.lck")), noise(26, 512));

    // A VM whose second disk lives on ds-b.
    let d = vm_dir(
        root,
        "span",
        1,
        1024,
        3,
        "scsi0:0.fileName = \"span.vmdk\"\nscsi0:0.present = \"TRUE\"\n\
             scsi0:1.fileName = \"/vmfs/volumes/ds-b/span/span_1.vmdk\"\nscsi0:1.present = \"TRUE\"\n",
    );
    base_disk(&d, "span", 600, false);

    // A disk nobody references.
    base_disk(&root.join("orphans"), "lost", 700, false);

    // Bad inputs.
    let mut garbage = noise(31, 6000);
    garbage[100] = 0;
    write(&root.join("garbage/garbage.vmx"), garbage);
    let big = root.join("big/big.vmx");
    write(&big, "displayName = \"big\"\n");
    File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let d = vm_dir(
        root,
        "manyext",
        1,
        512,
        4,
        "scsi0:0.fileName = \"manyext.vmdk\"\nscsi0:0.present = \"TRUE\"\n",
    );
    let extents: String = (0..10_000u64)
        .map(|k| format!("RW 2048 FLAT \"manyext-flat.vmdk\" {}\n", k * 2048))
        .collect();
    write(
        &d.join("manyext.vmdk"),
        descriptor("3a3a3a3a", "ffffffff", "vmfs", &extents, None),
    );
    thin(&d.join("manyext-flat.vmdk"), 10_000 * 2048 * 512, 800);
    let d = vm_dir(
        root,
        "loop",
        1,
        512,
        5,
        "scsi0:0.fileName = \"loop-000001.vmdk\"\nscsi0:0.present = \"TRUE\"\n",
    );
    for (me, parent) in [
        ("loop-000001", "loop-000002"),
        ("loop-000002", "loop-000001"),
    ] {
        write(
            &d.join(format!("{me}.vmdk")),
            descriptor(
                "4b4b4b4b",
                "4b4b4b4b",
                "vmfsSparse",
                &format!("RW {DISK_SECTORS} VMFSSPARSE \"{me}-delta.vmdk\""),
                Some(&format!("{parent}.vmdk")),
            ),
        );
        write(&d.join(format!("{me}-delta.vmdk")), b"COWD\x01\x00\x00\x00");
    }
}

/// The VMFS6 datastore `ds-b`.
fn tree_vmfs6(root: &Path) {
    let d = vm_dir(
        root,
        APP,
        8,
        32768,
        6,
        &format!(
            "nvram = \"{APP}.nvram\"\nscsi0:0.fileName = \"{APP}-000001.vmdk\"\nscsi0:0.present = \"TRUE\"\n"
        ),
    );
    snapshot_files(&d, APP, "pre-upgrade", 41, 30_000);
    write(&d.join("vmware.log"), noise(43, 20_000));
    snapshotted_disk(&d, APP, 900, true, "SESPARSE", "sesparse");
    thin(&d.join(format!("{APP}-9e8d7c.vswp")), 32 * MIB, 44);
    write(&d.join(format!("{APP}.vmx.lck")), noise(45, 512));

    base_disk(&root.join("span"), "span_1", 1000, false);
}

fn utf16le_bom(text: &str) -> Vec<u8> {
    let mut b = vec![0xff, 0xfe];
    for u in text.encode_utf16() {
        b.extend_from_slice(&u.to_le_bytes());
    }
    b
}

/// `qemu-img create -q -f FORMAT OPTIONS… PATH SIZE`: disks made by a tool nobody here wrote.
fn qemu_img_create(format: &str, options: &[&str], path: &Path, size: &str) {
    testkit::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", format])
            .args(options)
            .arg(path)
            .arg(size),
    );
}

/// The NTFS datastore `hvstore`, as a host directory to copy in.
fn tree_ntfs(root: &Path) {
    // VMware Workstation: Windows paths, qemu-img monolithicSparse and twoGbMaxExtentSparse.
    let d = root.join("VMs").join(XP);
    fs::create_dir_all(&d).unwrap();
    write(
        &d.join(format!("{XP}.vmx")),
        format!(
            ".encoding = \"windows-1252\"\nconfig.version = \"8\"\nvirtualHW.version = \"16\"\n\
             displayName = \"{XP}\"\nguestOS = \"winxppro\"\nmemsize = \"1024\"\nnumvcpus = \"1\"\n\
             nvram = \"{XP}.nvram\"\nscsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\n\
             scsi0:0.fileName = \"D:\\VMs\\{XP}\\{XP}.vmdk\"\nide0:1.present = \"TRUE\"\n\
             ide0:1.fileName = \"{XP}-1.vmdk\"\nide1:0.present = \"TRUE\"\n\
             ide1:0.fileName = \"auto detect\"\nide1:0.deviceType = \"cdrom-raw\"\n\
             uuid.bios = \"56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc\"\n"
        ),
    );
    write(&d.join(format!("{XP}.nvram")), noise(51, 8684));
    write(&d.join("vmware.log"), noise(52, 10_000));
    qemu_img_create("vmdk", &[], &d.join(format!("{XP}.vmdk")), "64M");
    qemu_img_create(
        "vmdk",
        &["-o", "subformat=twoGbMaxExtentSparse"],
        &d.join(format!("{XP}-1.vmdk")),
        "32M",
    );

    // Hyper-V (2016+): binary .vmcx/.vmrs/.vmgs grouped by GUID, a qemu-img base VHDX and a
    // differencing AVHDX. qemu-img cannot create differencing VHDX files ("Backing file not
    // supported for file format 'vhdx'"), so the child is the inventory's synthetic header.
    let vm = root.join("Hyper-V/SQL 02");
    let vhds = vm.join("Virtual Hard Disks");
    fs::create_dir_all(&vhds).unwrap();
    qemu_img_create("vhdx", &[], &vhds.join("sql02.vhdx"), "128M");
    let child = format!("sql02_{HV_GUID}.avhdx");
    let win = "C:\\ClusterStorage\\Volume1\\Hyper-V\\SQL 02\\Virtual Hard Disks";
    write(
        &vhds.join(&child),
        inventory::synth::vhdx(
            128 * MIB,
            Some(&[
                ("parent_linkage", "{83ff2a0b-2a6e-4b1f-9d1e-2c1f0a6b3c11}"),
                ("relative_path", ".\\sql02.vhdx"),
                ("absolute_win32_path", &format!("{win}\\sql02.vhdx")),
            ]),
            false,
        ),
    );
    let mut vmcx = noise(61, 4096);
    vmcx.extend(utf16le_bom(&format!("{win}\\{child}"))[2..].iter().copied());
    vmcx.extend([0, 0]);
    vmcx.extend(noise(62, 4096));
    let vmdir = vm.join("Virtual Machines");
    write(&vmdir.join(format!("{HV_GUID}.vmcx")), vmcx);
    write(&vmdir.join(format!("{HV_GUID}.vmrs")), noise(63, 20_480));
    write(
        &vmdir.join(format!("{HV_GUID}.VMGS")),
        noise(64, 4 * MIB as usize),
    );

    // Hyper-V 2012: XML configuration (UTF-16LE with BOM) naming its disk.
    let vm = root.join("Hyper-V/Legacy");
    fs::create_dir_all(vm.join("Virtual Hard Disks")).unwrap();
    qemu_img_create(
        "vhdx",
        &[],
        &vm.join("Virtual Hard Disks/legacy.vhdx"),
        "64M",
    );
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\r\n<configuration>\r\n\
         <properties><name type=\"string\">Legacy 2012</name></properties>\r\n<settings>\r\n\
         <processors><count type=\"integer\">2</count></processors>\r\n\
         <memory><bank><size type=\"integer\">2048</size></bank></memory>\r\n</settings>\r\n\
         <_83f8638b-8dca-4152-9eda-2ca8b33039b4_><controller0><drive0>\
         <pathname type=\"string\">E:\\Hyper-V\\Legacy\\Virtual Hard Disks\\legacy.vhdx</pathname>\
         <type type=\"string\">VHD</type></drive0><drive1><pathname type=\"string\">E:\\iso\\x.iso</pathname>\
         <type type=\"string\">ISO</type></drive1></controller0></_83f8638b-8dca-4152-9eda-2ca8b33039b4_>\r\n\
         </configuration>\r\n";
    write(
        &vm.join(format!("Virtual Machines/{HV_XML_GUID}.xml")),
        utf16le_bom(xml),
    );

    // Virtual Server 2005: .vmc in UTF-16LE with BOM, a qemu-img dynamic VHD.
    let d = root.join("Virtual Server/W2K3 DC");
    fs::create_dir_all(&d).unwrap();
    qemu_img_create("vpc", &[], &d.join("W2K3 DC.vhd"), "48M");
    let vmc = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\r\n<preferences>\r\n\
        <version type=\"string\">2.0</version>\r\n<hardware><memory><ram_size type=\"integer\">768</ram_size></memory>\r\n\
        <pci_bus><ide_adapter><ide_controller id=\"0\"><location id=\"0\">\
        <drive_type type=\"integer\">1</drive_type><pathname>\
        <absolute type=\"string\">D:\\Virtual Server\\W2K3 DC\\W2K3 DC.vhd</absolute>\
        <relative type=\"string\">.\\W2K3 DC.vhd</relative></pathname></location>\
        <location id=\"1\"><drive_type type=\"integer\">2</drive_type><pathname>\
        <absolute type=\"string\">D:\\iso\\w2k3.iso</absolute></pathname></location>\
        </ide_controller></ide_adapter></pci_bus></hardware>\r\n\
        <properties><name type=\"string\">W2K3 DC</name></properties>\r\n</preferences>\r\n";
    write(&d.join("W2K3 DC.vmc"), utf16le_bom(vmc));
}

/// The three datastore images.
struct Stores {
    vmfs5: PathBuf,
    vmfs6: PathBuf,
    ntfs: PathBuf,
}

fn mkvmfs(version: &str, label: &str, tree: fn(&Path)) -> PathBuf {
    let stamp = format!("{VERSION}-{}", mkvmfs_stamp());
    let dir = fixture_dir("e2e-vms");
    // Images of an older mkvmfs or tree version are stale: drop them so the cache stays small.
    let prefix = format!("{label}-vmfs{version}-");
    testkit::stamp::remove_stale(&dir, &prefix, ".img", &stamp);
    let src = cached_fixture(&dir.join(format!("src-{label}-{VERSION}")), |tmp| {
        fs::create_dir_all(tmp).unwrap();
        tree(tmp);
    });
    cached_fixture(
        &dir.join(format!("{label}-vmfs{version}-{stamp}.img")),
        |tmp| {
            let args = ["--vmfs", version, "--label", label].map(OsStr::new);
            e2e::mkvmfs(&[&args[..], &[src.as_os_str(), tmp.as_os_str()]].concat());
        },
    )
}

/// The source tree a datastore image was made of.
fn src(label: &str) -> PathBuf {
    fixture_dir("e2e-vms").join(format!("src-{label}-{VERSION}"))
}

fn mk_ntfs() -> PathBuf {
    let dir = fixture_dir("e2e-vms");
    let src = cached_fixture(&dir.join(format!("src-hvstore-{VERSION}")), |tmp| {
        fs::create_dir_all(tmp).unwrap();
        tree_ntfs(tmp);
    });
    cached_fixture(&dir.join(format!("hvstore-ntfs-{VERSION}.img")), |tmp| {
        File::create(tmp).unwrap().set_len(256 * MIB).unwrap();
        testkit::run(
            Command::new("mkntfs")
                .args(["-F", "-q", "-f", "-c", "4096", "-L", "hvstore"])
                .arg(tmp),
        );
        let mnt = testkit::ntfs::FuseMount::ntfs3g(tmp, &[]).expect("mount the new NTFS volume");
        testkit::run(
            Command::new("cp")
                .args(["-r", "--sparse=always"])
                .arg(src.join("."))
                .arg(mnt.path()),
        );
        drop(mnt);
    })
}

/// Builds (once per process, cached across runs) the three datastores, or reports a skip.
fn stores(test: &str) -> Option<&'static Stores> {
    static STORES: OnceLock<Option<Stores>> = OnceLock::new();
    let built = STORES.get_or_init(|| {
        for t in ["qemu-img", "mkntfs", "ntfs-3g"] {
            if !have_tool(t) {
                return None;
            }
        }
        if !testkit::is_root() || !Path::new("/dev/fuse").exists() {
            return None;
        }
        Some(Stores {
            vmfs5: mkvmfs("5", "ds-a", tree_vmfs5),
            vmfs6: mkvmfs("6", "ds-b", tree_vmfs6),
            ntfs: mk_ntfs(),
        })
    });
    if built.is_none() {
        skip(test, "needs root, /dev/fuse, qemu-img, mkntfs and ntfs-3g");
    }
    built.as_ref()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `lunproxy vms SOURCES --json [--orphans]`: the VM lines and the orphan lines.
fn vms(sources: &[&str], orphans: bool) -> (Vec<Value>, Vec<Value>) {
    let mut args = vec!["vms"];
    args.extend_from_slice(sources);
    args.push("--json");
    if orphans {
        args.push("--orphans");
    }
    let lines = json_lines(&lunproxy_ok(&args));
    let (o, v): (Vec<Value>, Vec<Value>) = lines
        .into_iter()
        .partition(|l| l.get("orphan_disk").is_some());
    (v, o.into_iter().map(|l| l["orphan_disk"].clone()).collect())
}

fn by_name<'a>(vms: &'a [Value], name: &str) -> &'a Value {
    vms.iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("VM {name:?} not listed; got {:?}", names(vms)))
}

fn names(vms: &[Value]) -> BTreeSet<String> {
    vms.iter()
        .map(|v| v["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// path -> role of a VM's files.
fn roles(vm: &Value) -> BTreeMap<String, String> {
    vm["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["role"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Asserts a VM's configuration file, vCPUs and memory.
fn expect_config(vm: &Value, config: &str, cpus: u32, memory_mb: u32) {
    assert_eq!(vm["config"], config, "VM {}", vm["name"]);
    assert_eq!(vm["cpus"], cpus, "VM {}", vm["name"]);
    assert_eq!(vm["memory_mb"], memory_mb, "VM {}", vm["name"]);
}

/// Asserts a VMware VM's configuration `<dir>/<stem>.vmx`, vCPUs and memory, and the roles of
/// its configuration, nvram and log.
fn expect_vm(vm: &Value, dir: &str, stem: &str, cpus: u32, memory_mb: u32) {
    expect_config(vm, &format!("{dir}/{stem}.vmx"), cpus, memory_mb);
    expect_stem_roles(vm, dir, stem, &[(".vmx", "config"), (".nvram", "nvram")]);
    expect_roles(vm, &[(&format!("{dir}/vmware.log"), "log")]);
}

/// Asserts the role of each file `<dir>/<stem><suffix>` of `vm`, for each (suffix, role).
fn expect_stem_roles(vm: &Value, dir: &str, stem: &str, want: &[(&str, &str)]) {
    let paths: Vec<String> = want
        .iter()
        .map(|(suffix, _)| format!("{dir}/{stem}{suffix}"))
        .collect();
    let want: Vec<(&str, &str)> = paths
        .iter()
        .zip(want)
        .map(|(p, (_, role))| (p.as_str(), *role))
        .collect();
    expect_roles(vm, &want);
}

fn expect_roles(vm: &Value, want: &[(&str, &str)]) {
    let got = roles(vm);
    for (path, role) in want {
        assert_eq!(
            got.get(*path).map(String::as_str),
            Some(*role),
            "VM {}: file {path} should have role {role}; files: {got:#?}",
            vm["name"]
        );
    }
}

/// Every found file of every VM has the size `lunproxy fs ls` gives for it on its LUN, and the
/// size of the source file it was copied from (`sources`: the trees the images were made of).
fn check_sizes(vms: &[Value], images: &[&Path], sources: &[PathBuf], min_checked: usize) {
    let mut listing: BTreeMap<String, u64> = BTreeMap::new();
    for img in images {
        for e in json_lines(&lunproxy_ok(&["fs", "ls", s(img), "/", "-r", "--json"])) {
            if e["type"] == "file" {
                listing.insert(
                    e["path"].as_str().unwrap().to_string(),
                    e["size"].as_u64().unwrap(),
                );
            }
        }
    }
    let mut checked = 0;
    for vm in vms {
        for f in vm["files"].as_array().unwrap() {
            if f["missing"] == true {
                continue;
            }
            let path = f["path"].as_str().unwrap();
            // Paths are unique across the datastores of one test, so the listing needs no LUN.
            if let Some(&size) = listing.get(path) {
                assert_eq!(
                    f["size"].as_u64(),
                    Some(size),
                    "VM {}: size of {path}",
                    vm["name"]
                );
                let src = sources
                    .iter()
                    .map(|r| r.join(path.trim_start_matches('/')))
                    .find(|p| p.exists())
                    .unwrap_or_else(|| panic!("{path} is in no source tree"));
                assert_eq!(
                    fs::metadata(&src).unwrap().len(),
                    size,
                    "source size of {path}"
                );
                checked += 1;
            } else {
                panic!(
                    "VM {}: file {path} is not in `fs ls -r` of its LUN",
                    vm["name"]
                );
            }
        }
    }
    assert!(checked >= min_checked, "only {checked} file sizes checked");
}

/// The disk of `vm` attached at `device`.
fn disk<'a>(vm: &'a Value, device: &str) -> &'a Value {
    vm["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == device)
        .unwrap_or_else(|| panic!("VM {}: no disk {device}: {:#}", vm["name"], vm["disks"]))
}

fn problem_kinds(vm: &Value) -> Vec<String> {
    vm["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn url_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn ids(vms: &[Value]) -> BTreeMap<String, String> {
    vms.iter()
        .map(|v| {
            (
                v["config"].as_str().unwrap().to_string(),
                v["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn vmware_on_vmfs5_and_vmfs6() {
    let Some(st) = stores("vmware_on_vmfs5_and_vmfs6") else {
        return;
    };
    let (vms, _) = vms(&[s(&st.vmfs5), s(&st.vmfs6)], false);
    let want: BTreeSet<String> = ["web01", DB, "span", "manyext", "loop", APP]
        .into_iter()
        .map(String::from)
        .collect();
    let got = names(&vms);
    assert!(
        want.is_subset(&got),
        "VMs: want at least {want:?}, got {got:?}"
    );
    // The bad .vmx files still give a VM each (their names come from the file).
    assert_eq!(vms.len(), want.len() + 2, "VMs listed: {got:?}");
    for v in &vms {
        assert_eq!(v["platform"], "vmware", "{}", v["name"]);
        assert!(
            url_safe(v["id"].as_str().unwrap()),
            "id {} not URL-safe",
            v["id"]
        );
    }
    let id_set: BTreeSet<&str> = vms.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(id_set.len(), vms.len(), "ids are unique");

    let web = by_name(&vms, "web01");
    expect_config(web, "/web01/web01.vmx", 2, 4096);
    assert_eq!(web["guest_os"], "windows2019srv-64");
    assert_eq!(web["datastore"], "ds-a");
    expect_roles(
        web,
        &[
            ("/web01/web01.vmx", "config"),
            ("/web01/web01.vmxf", "config"),
            ("/web01/web01.nvram", "nvram"),
            ("/web01/web01.vmsd", "snapshot-metadata"),
            ("/web01/vmware.log", "log"),
            ("/web01/vmware-1.log", "log"),
            ("/web01/web01.vmdk", "disk-descriptor"),
            ("/web01/web01-flat.vmdk", "disk-extent"),
            ("/web01/web01-ctk.vmdk", "cbt"),
            ("/web01/web01_1.vmdk", "disk-descriptor"),
            ("/web01/web01_1-flat.vmdk", "disk-extent"),
            ("/web01/web01_1-ctk.vmdk", "cbt"),
        ],
    );
    assert_eq!(
        web["files"].as_array().unwrap().len(),
        12,
        "web01 files: {:#?}",
        roles(web)
    );
    let disks = web["disks"].as_array().unwrap();
    assert_eq!(
        disks.len(),
        2,
        "CD-ROM and the absent scsi0:2 are skipped: {disks:#?}"
    );
    assert_eq!(disk(web, "scsi0:0")["capacity"], DISK_BYTES);
    assert_eq!(
        disk(web, "scsi0:1")["chain"][0]["extents"][0]["kind"],
        "VMFS"
    );
    assert_eq!(web["consistency"]["state"], "powered-off");
    // Powered off: the evidence says what was looked for and not found, and names no file.
    let evidence = web["consistency"]["evidence"].to_string();
    assert!(!evidence.contains("/web01/"), "evidence: {evidence}");
    assert!(
        web["problems"].as_array().unwrap().is_empty(),
        "{:#?}",
        web["problems"]
    );
    let flat = web["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/web01/web01-flat.vmdk")
        .unwrap();
    assert_eq!(flat["size"], DISK_BYTES);
    assert!(
        flat["allocated"].as_u64().unwrap() < 16 * MIB,
        "thin disk stays thin: {flat}"
    );

    // Running, Unicode name, three disks, the first one on a snapshot.
    let db = by_name(&vms, DB);
    let dir = format!("/{DB}");
    expect_vm(db, &dir, DB, 4, 16384);
    expect_stem_roles(
        db,
        &dir,
        DB,
        &[
            (".vmsd", "snapshot-metadata"),
            ("-Snapshot1.vmsn", "snapshot-metadata"),
            ("-000001.vmdk", "disk-descriptor"),
            ("-000001-delta.vmdk", "snapshot-delta"),
            (".vmdk", "disk-descriptor"),
            ("-flat.vmdk", "disk-extent"),
            ("_1-flat.vmdk", "disk-extent"),
            ("_2-flat.vmdk", "disk-extent"),
            ("-3f2a1b.vswp", "swap"),
            (".vmx.lck/M58419.lck", "lock"),
        ],
    );
    expect_roles(db, &[(&format!("{dir}/vmx-{DB}-1234567-1.vswp"), "swap")]);
    let disks = db["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 3, "{disks:#?}");
    let devs: Vec<&str> = disks
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    let devs: BTreeSet<&str> = devs.into_iter().collect();
    assert_eq!(devs, BTreeSet::from(["scsi0:0", "scsi0:1", "sata0:0"]));
    let chain = disk(db, "scsi0:0")["chain"].as_array().unwrap();
    assert_eq!(
        chain.len(),
        2,
        "snapshot chain resolves to its base: {chain:#?}"
    );
    assert_eq!(chain[0]["path"], format!("{dir}/{DB}-000001.vmdk"));
    assert_eq!(chain[1]["path"], format!("{dir}/{DB}.vmdk"));
    assert_eq!(chain[0]["parent_cid"], chain[1]["cid"]);
    assert_eq!(chain[0]["extents"][0]["kind"], "VMFSSPARSE");
    assert_eq!(db["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(db["snapshots"][0]["name"], "before patch");
    assert_eq!(db["consistency"]["state"], "crash-consistent");
    let evidence = db["consistency"]["evidence"].to_string();
    assert!(
        evidence.contains(".vswp") && evidence.contains(".lck"),
        "evidence: {evidence}"
    );

    // VMFS6, SESPARSE snapshot, running with a .vmx.lck file.
    let app = by_name(&vms, APP);
    let dir = format!("/{APP}");
    assert_eq!(app["datastore"], "ds-b");
    assert_eq!(app["cpus"], 8);
    assert_eq!(app["memory_mb"], 32768);
    expect_stem_roles(
        app,
        &dir,
        APP,
        &[
            ("-000001-sesparse.vmdk", "snapshot-delta"),
            ("-flat.vmdk", "disk-extent"),
            ("-ctk.vmdk", "cbt"),
            ("-9e8d7c.vswp", "swap"),
            (".vmx.lck", "lock"),
        ],
    );
    let chain = app["disks"][0]["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "{chain:#?}");
    assert_eq!(chain[0]["extents"][0]["kind"], "SESPARSE");
    assert_eq!(chain[1]["path"], format!("{dir}/{APP}.vmdk"));
    assert_eq!(app["consistency"]["state"], "crash-consistent");

    // The second disk on ds-b resolves through the datastore label.
    let span = by_name(&vms, "span");
    let f = span["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/span/span_1-flat.vmdk");
    let f = f.unwrap_or_else(|| {
        panic!(
            "span_1-flat.vmdk not resolved on ds-b: {:#?}",
            span["files"]
        )
    });
    assert_eq!(f["missing"], false);
    assert_ne!(f["lun"], span["lun"], "the file is on the other LUN");
    assert!(
        span["problems"].as_array().unwrap().is_empty(),
        "{:#?}",
        span["problems"]
    );

    check_sizes(
        &vms,
        &[&st.vmfs5, &st.vmfs6],
        &[src("ds-a"), src("ds-b")],
        50,
    );
}

#[test]
fn a_disk_on_an_unregistered_datastore_is_missing_with_the_datastore_it_needs() {
    let Some(st) = stores("a_disk_on_an_unregistered_datastore_is_missing") else {
        return;
    };
    let (vms, _) = vms(&[s(&st.vmfs5)], false);
    let span = by_name(&vms, "span");
    let missing: Vec<&Value> = span["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["missing"] == true)
        .collect();
    assert_eq!(missing.len(), 1, "{:#?}", span["files"]);
    assert_eq!(missing[0]["path"], "/vmfs/volumes/ds-b/span/span_1.vmdk");
    assert_eq!(missing[0]["needs_datastore"], "ds-b");
    assert_eq!(missing[0]["lun"], Value::Null);
    assert!(
        problem_kinds(span).contains(&"disk-missing".to_string()),
        "{:#?}",
        span["problems"]
    );
    // The local disk is still there.
    expect_roles(span, &[("/span/span-flat.vmdk", "disk-extent")]);
    assert!(vms.iter().any(|v| v["name"] == "web01"));
}

#[test]
fn orphan_disks_are_listed_with_orphans() {
    let Some(st) = stores("orphan_disks_are_listed_with_orphans") else {
        return;
    };
    let (vms_both, orphans) = vms(&[s(&st.vmfs5), s(&st.vmfs6)], true);
    let paths: BTreeSet<&str> = orphans
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains("/orphans/lost.vmdk"), "orphans: {paths:?}");
    assert!(
        !paths.contains("/span/span_1.vmdk"),
        "span_1 belongs to the span VM: {paths:?}"
    );
    let lost = orphans
        .iter()
        .find(|o| o["path"] == "/orphans/lost.vmdk")
        .unwrap();
    assert!(url_safe(lost["id"].as_str().unwrap()));
    let files: BTreeSet<&str> = lost["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains("/orphans/lost-flat.vmdk"), "{files:?}");
    // Without --orphans, no orphan lines; the VMs are the same.
    let (vms_plain, none) = vms(&[s(&st.vmfs5), s(&st.vmfs6)], false);
    assert!(none.is_empty());
    assert_eq!(ids(&vms_plain), ids(&vms_both));
    // Only ds-b registered: span_1 has no VM and is an orphan there.
    let (_, orphans_b) = vms(&[s(&st.vmfs6)], true);
    assert!(
        orphans_b.iter().any(|o| o["path"] == "/span/span_1.vmdk"),
        "{orphans_b:#?}"
    );
}

#[test]
fn bad_inputs_give_problems_and_the_other_vms_are_still_listed() {
    let Some(st) = stores("bad_inputs_give_problems") else {
        return;
    };
    let started = std::time::Instant::now();
    let (vms, _) = vms(&[s(&st.vmfs5)], false);
    let elapsed = started.elapsed();
    // A hang guard (the bad inputs must not make the scan loop or read 1 GiB), not a
    // performance measure: tests/bench/inventory.sh measures speed.
    assert!(elapsed.as_secs() < 120, "inventory took {elapsed:?}");
    let by_config = |c: &str| {
        vms.iter()
            .find(|v| v["config"] == c)
            .unwrap_or_else(|| panic!("no VM for {c}: {:?}", ids(&vms).keys()))
    };
    let garbage = by_config("/garbage/garbage.vmx");
    assert!(
        !problem_kinds(garbage).is_empty(),
        "a garbage .vmx gives a problem: {garbage:#}"
    );
    let big = by_config("/big/big.vmx");
    assert!(
        problem_kinds(big).contains(&"config-too-large".to_string()),
        "{:#?}",
        big["problems"]
    );
    let many = by_config("/manyext/manyext.vmx");
    let kinds = problem_kinds(many);
    assert!(
        kinds
            .iter()
            .any(|k| k == "extents-capped" || k == "descriptor-too-large"),
        "10,000 extents: {:#?}",
        many["problems"]
    );
    let looped = by_config("/loop/loop.vmx");
    assert!(
        problem_kinds(looped).contains(&"chain-loop".to_string()),
        "{:#?}",
        looped["problems"]
    );
    let chain = looped["disks"][0]["chain"].as_array().unwrap();
    assert!(chain.len() <= 2, "a loop is cut: {chain:#?}");
    // The healthy VMs are unaffected.
    assert!(
        by_name(&vms, "web01")["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(by_name(&vms, DB)["disks"].as_array().unwrap().len(), 3);
}

#[test]
fn ntfs_workstation_hyperv_and_virtual_server() {
    let Some(st) = stores("ntfs_workstation_hyperv_and_virtual_server") else {
        return;
    };
    let (vms, _) = vms(&[s(&st.ntfs)], false);
    let got = names(&vms);
    let want: BTreeSet<String> = [XP, "SQL 02", "Legacy 2012", "W2K3 DC"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want, "VMs on the NTFS datastore");

    let xp = by_name(&vms, XP);
    let dir = format!("/VMs/{XP}");
    assert_eq!(xp["platform"], "vmware");
    expect_vm(xp, &dir, XP, 1, 1024);
    expect_stem_roles(
        xp,
        &dir,
        XP,
        &[
            // monolithicSparse: the descriptor is embedded, the file is the extent.
            (".vmdk", "disk-extent"),
            ("-1.vmdk", "disk-descriptor"),
            ("-1-s001.vmdk", "disk-extent"),
        ],
    );
    let disks = xp["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{disks:#?}");
    assert_eq!(disk(xp, "scsi0:0")["capacity"], 64 * MIB);
    assert_eq!(disk(xp, "ide0:1")["capacity"], 32 * MIB);
    assert!(
        xp["problems"].as_array().unwrap().is_empty(),
        "{:#?}",
        xp["problems"]
    );
    assert_eq!(xp["consistency"]["state"], "powered-off");

    let hv = by_name(&vms, "SQL 02");
    let base = "/Hyper-V/SQL 02";
    assert_eq!(hv["platform"], "hyperv");
    assert_eq!(
        hv["config"],
        format!("{base}/Virtual Machines/{HV_GUID}.vmcx")
    );
    assert_eq!(hv["instance_uuid"], HV_GUID);
    expect_roles(
        hv,
        &[
            (&format!("{base}/Virtual Machines/{HV_GUID}.vmcx"), "config"),
            (&format!("{base}/Virtual Machines/{HV_GUID}.VMGS"), "nvram"),
            (&format!("{base}/Virtual Machines/{HV_GUID}.vmrs"), "other"),
            (
                &format!("{base}/Virtual Hard Disks/sql02_{HV_GUID}.avhdx"),
                "snapshot-delta",
            ),
            (
                &format!("{base}/Virtual Hard Disks/sql02.vhdx"),
                "disk-extent",
            ),
        ],
    );
    let chain = hv["disks"][0]["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "avhdx resolves to its base: {chain:#?}");
    assert_eq!(
        chain[1]["path"],
        format!("{base}/Virtual Hard Disks/sql02.vhdx")
    );
    assert_eq!(chain[1]["capacity"], 128 * MIB);

    let legacy = by_name(&vms, "Legacy 2012");
    assert_eq!(legacy["platform"], "hyperv");
    assert_eq!(legacy["cpus"], 2);
    assert_eq!(legacy["memory_mb"], 2048);
    expect_roles(
        legacy,
        &[
            (
                &format!("/Hyper-V/Legacy/Virtual Machines/{HV_XML_GUID}.xml"),
                "config",
            ),
            (
                "/Hyper-V/Legacy/Virtual Hard Disks/legacy.vhdx",
                "disk-extent",
            ),
        ],
    );
    assert_eq!(
        legacy["disks"].as_array().unwrap().len(),
        1,
        "the ISO is not a disk"
    );

    let vs = by_name(&vms, "W2K3 DC");
    assert_eq!(vs["platform"], "virtual-server");
    assert_eq!(vs["config"], "/Virtual Server/W2K3 DC/W2K3 DC.vmc");
    assert_eq!(vs["memory_mb"], 768);
    expect_roles(
        vs,
        &[("/Virtual Server/W2K3 DC/W2K3 DC.vhd", "disk-extent")],
    );
    assert_eq!(vs["disks"].as_array().unwrap().len(), 1);
    assert_eq!(
        vs["disks"][0]["capacity"].as_u64().map(|c| c >= 48 * MIB),
        Some(true)
    );

    for v in &vms {
        assert!(url_safe(v["id"].as_str().unwrap()));
        assert!(
            v["problems"].as_array().unwrap().is_empty(),
            "{}: {:#?}",
            v["name"],
            v["problems"]
        );
    }
    check_sizes(&vms, &[&st.ntfs], &[src("hvstore")], 15);
}

#[test]
fn ids_are_stable_across_runs_loop_devices_and_multipath() {
    let test = "ids_are_stable_across_runs_loop_devices_and_multipath";
    let Some(st) = stores(test) else { return };
    let all = [s(&st.vmfs5), s(&st.vmfs6), s(&st.ntfs)];
    let (first, _) = vms(&all, false);
    let (second, _) = vms(&all, false);
    assert_eq!(ids(&first), ids(&second), "same images, same ids");
    assert_eq!(first.len(), 12, "{:?}", names(&first));
    let Some(l5) = LoopDevice::attach(test, &st.vmfs5) else {
        return;
    };
    let Some(l6) = LoopDevice::attach(test, &st.vmfs6) else {
        return;
    };
    let Some(ln) = LoopDevice::attach(test, &st.ntfs) else {
        return;
    };
    let (looped, _) = vms(&[s(l5.path()), s(l6.path()), s(ln.path())], false);
    assert_eq!(
        ids(&looped),
        ids(&first),
        "a loop device over the same image gives the same ids"
    );
    // The cross-datastore disk still resolves when the LUNs are block devices.
    let span = by_name(&looped, "span");
    assert!(
        span["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["missing"] == false)
    );
    // Multipath: the file and the loop device are two paths to one LUN.
    let mp5 = format!("{},{}", s(&st.vmfs5), s(l5.path()));
    let mpn = format!("{},{}", s(ln.path()), s(&st.ntfs));
    let (multi, _) = vms(&[&mp5, s(&st.vmfs6), &mpn], false);
    assert_eq!(ids(&multi), ids(&first), "multipath A,B gives the same VMs");
    let files = |v: &[Value]| -> BTreeMap<String, BTreeSet<String>> {
        v.iter()
            .map(|vm| {
                (
                    vm["id"].as_str().unwrap().to_string(),
                    vm["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f["path"].as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect()
    };
    assert_eq!(files(&multi), files(&first));
    // The order of the sources does not change an id.
    let (reversed, _) = vms(&[s(&st.ntfs), s(&st.vmfs6), s(&st.vmfs5)], false);
    assert_eq!(ids(&reversed), ids(&first));
    // A LUN that cannot be opened fails clearly, without a panic.
    let out = lunproxy(&["vms", "/nonexistent/lun.img", "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error:") && !err.contains("panicked"),
        "{err}"
    );
}
