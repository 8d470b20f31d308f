//! Datastore scenarios over the in-memory filesystem: what a backup proxy meets on real
//! VMFS and NTFS datastores.

mod common;

use common::*;
use inventory::{ConsistencyState, Platform, Role, scan, synth};

const UUID_A: &str = "5f9a1c2e-7d3b4a10-1e2f-000c29aabbcc";
const UUID_B: &str = "61137dd5-df6bc2c8-f0e7-000c29801686";

#[test]
fn vms_with_one_to_three_disks() {
    let mut b = vmfs("datastore1", UUID_A);
    esxi_vm(&mut b, "/web01", "web01", &[40]);
    esxi_vm(&mut b, "/db01", "db01", &[40, 200, 10]);
    let inv = scan(&[ds("lun-a", b)]);
    assert_eq!(inv.vms.len(), 2);
    assert!(inv.orphan_disks.is_empty(), "{:?}", inv.orphan_disks);
    let web = vm(&inv, "web01");
    assert_eq!(web.platform, Platform::Vmware);
    assert_eq!(web.config, "/web01/web01.vmx");
    assert_eq!(web.cpus, Some(2));
    assert_eq!(web.memory_mb, Some(4096));
    assert_eq!(web.guest_os.as_deref(), Some("ubuntu-64"));
    assert_eq!(
        roles(web),
        vec![
            ("vmware-1.log".into(), "log".into()),
            ("vmware.log".into(), "log".into()),
            ("web01-flat.vmdk".into(), "disk-extent".into()),
            ("web01.nvram".into(), "nvram".into()),
            ("web01.vmdk".into(), "disk-descriptor".into()),
            ("web01.vmsd".into(), "snapshot-metadata".into()),
            ("web01.vmx".into(), "config".into()),
        ]
    );
    let flat = web.file("web01-flat.vmdk").unwrap();
    assert_eq!((flat.size, flat.allocated), (40 * GIB, 10 * GIB));
    assert_eq!(web.consistency.state, ConsistencyState::PoweredOff);
    assert!(web.problems.is_empty(), "{:?}", web.problems);
    let db = vm(&inv, "db01");
    assert_eq!(db.disks.len(), 3);
    assert_eq!(db.disks[1].device, "scsi0:1");
    assert_eq!(db.disks[1].capacity, Some(200 * GIB));
    assert_eq!(
        db.disks[2].chain[0].extents[0].file.as_deref(),
        Some("db01_2-flat.vmdk")
    );
    assert!(db.problems.is_empty(), "{:?}", db.problems);
}

#[test]
fn snapshot_chain_resolves_to_base() {
    let mut b = vmfs("datastore1", UUID_A);
    esxi_vm(&mut b, "/app", "app", &[]);
    thin_vmdk(&mut b, "/app", "app", 0x1111, 40 * GIB, 40 * GIB);
    b.file(
        "/app/app-000001.vmdk",
        delta_descriptor(
            0x2222,
            0x1111,
            "app.vmdk",
            "app-000001-delta.vmdk",
            40 * GIB / 512,
            false,
        ),
    );
    b.sparse_file("/app/app-000001-delta.vmdk", Vec::new(), 1 << 30, 1 << 30);
    b.file(
        "/app/app-000002.vmdk",
        delta_descriptor(
            0x3333,
            0x2222,
            "app-000001.vmdk",
            "app-000002-sesparse.vmdk",
            40 * GIB / 512,
            true,
        ),
    );
    b.sparse_file(
        "/app/app-000002-sesparse.vmdk",
        Vec::new(),
        1 << 28,
        1 << 28,
    );
    b.file("/app/app-ctk.vmdk", vec![0u8; 2048]);
    b.file("/app/app-000002-ctk.vmdk", vec![0u8; 2048]);
    b.file("/app/app-Snapshot1.vmsn", vec![1u8; 100]);
    b.file("/app/app-Snapshot2.vmsn", vec![1u8; 100]);
    b.file(
        "/app/app.vmsd",
        ".encoding = \"UTF-8\"\nsnapshot.lastUID = \"2\"\nsnapshot.current = \"2\"\nsnapshot0.uid = \"1\"\nsnapshot0.filename = \"app-Snapshot1.vmsn\"\nsnapshot0.displayName = \"before upgrade\"\nsnapshot0.numDisks = \"1\"\nsnapshot0.disk0.fileName = \"app.vmdk\"\nsnapshot0.disk0.node = \"scsi0:0\"\nsnapshot.numSnapshots = \"2\"\nsnapshot1.uid = \"2\"\nsnapshot1.parent = \"1\"\nsnapshot1.filename = \"app-Snapshot2.vmsn\"\nsnapshot1.displayName = \"after\"\n",
    );
    b.file("/app/app.vmx", app_vmx("app-000002.vmdk"));
    let inv = scan(&[ds("lun-a", b)]);
    let app = vm(&inv, "app");
    assert_eq!(
        chain_paths(&app.disks[0]),
        vec![
            "/app/app-000002.vmdk",
            "/app/app-000001.vmdk",
            "/app/app.vmdk"
        ]
    );
    assert_eq!(
        app.disks[0].chain[0].create_type.as_deref(),
        Some("seSparse")
    );
    assert_eq!(
        app.file("app-000002-sesparse.vmdk").unwrap().role,
        Role::SnapshotDelta
    );
    assert_eq!(
        app.file("app-000001-delta.vmdk").unwrap().role,
        Role::SnapshotDelta
    );
    assert_eq!(app.file("app-flat.vmdk").unwrap().role, Role::DiskExtent);
    assert_eq!(app.file("app-ctk.vmdk").unwrap().role, Role::Cbt);
    assert_eq!(app.file("app-000002-ctk.vmdk").unwrap().role, Role::Cbt);
    assert_eq!(
        app.file("app-Snapshot2.vmsn").unwrap().role,
        Role::SnapshotMetadata
    );
    assert_eq!(app.snapshots.len(), 2);
    assert!(app.snapshots[1].current);
    assert!(
        app.notes.iter().any(|n| n.contains("3-layer chain")),
        "{:?}",
        app.notes
    );
    assert!(app.problems.is_empty(), "{:?}", app.problems);
    assert!(inv.orphan_disks.is_empty(), "{:?}", inv.orphan_disks);
}

#[test]
fn parent_cid_mismatch_is_reported() {
    let mut b = vmfs("ds", UUID_A);
    flat_vmdk(&mut b, "/v", "v", 0xAAAA, 2048, 4096);
    b.file(
        "/v/v-000001.vmdk",
        delta_descriptor(2, 0xBBBB, "v.vmdk", "v-000001-delta.vmdk", 2048, false),
    );
    b.file("/v/v-000001-delta.vmdk", vec![0; 4096]);
    b.file(
        "/v/v.vmx",
        vmx("v", "other", 1, 512, &[("scsi0:0", "v-000001.vmdk")], ""),
    );
    let inv = scan_one(b);
    let v = vm(&inv, "v");
    assert_problem(&v.problems, "parent-cid-mismatch");
    assert_eq!(v.disks[0].chain.len(), 2);
}

#[test]
fn second_disk_on_another_lun() {
    let build_a = || {
        let mut a = vmfs("datastore1", UUID_A);
        esxi_vm(&mut a, "/sql", "sql", &[40]);
        // Re-write the .vmx with disks on datastore2, named by UUID and by label.
        a.file(
            "/sql/sql.vmx",
            sql_vmx(UUID_B, "scsi1:0", "scsi1.present = \"TRUE\"\n"),
        );
        a
    };
    let mut b = vmfs("datastore2", UUID_B);
    thin_vmdk(&mut b, "/sql", "sql_1", 5, 100 * GIB, 100 * GIB);
    thin_vmdk(&mut b, "/sql", "sql_2", 6, 10 * GIB, GIB);

    let inv = scan(&[ds("lun-a", build_a()), ds("lun-b", b)]);
    let sql = vm(&inv, "sql");
    // The VMX is listed twice in esxi_vm + rewrite: the last write wins in the listing order,
    // so look the disks up by device.
    assert_eq!(sql.disks.len(), 3);
    let f1 = sql.file("sql_1-flat.vmdk").unwrap();
    assert_eq!(f1.lun.as_deref(), Some("lun-b"));
    assert!(!f1.missing);
    let f2 = sql.file("sql_2.vmdk").unwrap();
    assert_eq!(
        f2.lun.as_deref(),
        Some("lun-b"),
        "resolved through the label"
    );
    assert!(inv.orphan_disks.is_empty(), "{:?}", inv.orphan_disks);

    // Without datastore2 registered, those files are missing and say what they need.
    let inv = scan(&[ds("lun-a", build_a())]);
    let sql = vm(&inv, "sql");
    let m = sql.file("sql_1.vmdk").unwrap();
    assert!(m.missing);
    assert_eq!(m.lun, None);
    assert_eq!(m.needs_datastore.as_deref(), Some(UUID_B));
    let m2 = sql.file("sql_2.vmdk").unwrap();
    assert_eq!(m2.needs_datastore.as_deref(), Some("datastore2"));
    assert!(
        sql.problems
            .iter()
            .filter(|p| p.kind == "disk-missing")
            .count()
            == 2,
        "{:?}",
        sql.problems
    );
    // The local disk is still there.
    assert!(!sql.file("sql-flat.vmdk").unwrap().missing);
}

#[test]
fn running_vm_is_crash_consistent() {
    // VMware Workstation on an NTFS volume: lock directories and a .vmem while running.
    let mut b = ntfs("VMs", "1C2D3E4F5A6B7C8D");
    b.file(
        "/VMs/Build Box/Build Box.vmx",
        build_box_vmx("nvme0:0", "Build Box.vmdk"),
    );
    b.file("/VMs/Build Box/Build Box.vmdk", "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n\n# Extent description\nRW 4192256 SPARSE \"Build Box-s001.vmdk\"\nRW 4192256 SPARSE \"Build Box-s002.vmdk\"\n");
    b.file("/VMs/Build Box/Build Box-s001.vmdk", vec![0u8; 65536]);
    b.file("/VMs/Build Box/Build Box-s002.vmdk", vec![0u8; 65536]);
    b.file("/VMs/Build Box/Build Box.vmx.lck/M31415.lck", "lock");
    b.file("/VMs/Build Box/Build Box.vmdk.lck/M27182.lck", "lock");
    b.sparse_file(
        "/VMs/Build Box/564d1c3a-9b2e.vmem",
        Vec::new(),
        4 * GIB,
        4 * GIB,
    );
    b.file("/VMs/Build Box/vmware.log", "log");
    let mut e = vmfs("esx", UUID_A);
    esxi_vm(&mut e, "/live", "live", &[20]);
    e.sparse_file("/live/live-3f2a1b4c.vswp", Vec::new(), 4 * GIB, 4 * GIB);
    e.sparse_file(
        "/live/vmx-live-1056789012-1.vswp",
        Vec::new(),
        100 << 20,
        100 << 20,
    );
    esxi_vm(&mut e, "/idle", "idle", &[20]);
    let inv = scan(&[ds("ws", b), ds("esx", e)]);
    let bb = vm(&inv, "Build Box");
    assert_eq!(bb.consistency.state, ConsistencyState::CrashConsistent);
    assert!(
        bb.consistency.evidence.iter().any(|e| e.contains(".lck")),
        "{:?}",
        bb.consistency.evidence
    );
    assert_eq!(bb.file("M31415.lck").unwrap().role, Role::Lock);
    assert_eq!(bb.file("564d1c3a-9b2e.vmem").unwrap().role, Role::Other);
    assert_eq!(bb.disks[0].chain[0].extents.len(), 2);
    let live = vm(&inv, "live");
    assert_eq!(live.consistency.state, ConsistencyState::CrashConsistent);
    assert_eq!(
        live.files.iter().filter(|f| f.role == Role::Swap).count(),
        2
    );
    assert_eq!(
        vm(&inv, "idle").consistency.state,
        ConsistencyState::PoweredOff
    );
}

#[test]
fn suspended_vm() {
    let mut e = vmfs("esx", UUID_A);
    esxi_vm(&mut e, "/s", "s", &[1]);
    e.file("/s/s-5a6b7c8d.vmss", vec![0u8; 1000]);
    e.file("/s/s-5a6b7c8d.vmem", vec![0u8; 1000]);
    let inv = scan(&[ds("esx", e)]);
    assert_eq!(vm(&inv, "s").consistency.state, ConsistencyState::Suspended);
}

#[test]
fn orphan_disks_are_listed() {
    let mut b = vmfs("ds", UUID_A);
    esxi_vm(&mut b, "/web", "web", &[10]);
    // A detached disk beside the VM, and a lone folder with a disk.
    flat_vmdk(&mut b, "/web", "web_old", 9, 2048, 1 << 20);
    flat_vmdk(&mut b, "/lost", "data", 9, 2048, 1 << 20);
    b.file("/lost/stray-flat.vmdk", vec![0; 1 << 20]);
    // An orphan snapshot chain is one orphan (its base is inside it).
    flat_vmdk(&mut b, "/lost", "c", 1, 2048, 1 << 20);
    b.file(
        "/lost/c-000001.vmdk",
        delta_descriptor(2, 1, "c.vmdk", "c-000001-delta.vmdk", 2048, false),
    );
    b.file("/lost/c-000001-delta.vmdk", vec![0; 1 << 20]);
    let inv = scan_one(b);
    assert_eq!(
        orphan_paths(&inv),
        vec![
            "/lost/c-000001.vmdk",
            "/lost/data.vmdk",
            "/lost/stray-flat.vmdk",
            "/web/web_old.vmdk"
        ]
    );
    assert_eq!(inv.orphan_disks[0].disk.chain.len(), 2);
    assert!(
        inv.orphan_disks[2]
            .problems
            .iter()
            .any(|p| p.kind == "descriptor-missing")
    );
    let web = vm(&inv, "web");
    assert!(
        web.file("web_old.vmdk").is_none(),
        "unreferenced disks are not the VM's"
    );
}

#[test]
fn names_with_spaces_and_unicode() {
    let mut b = vmfs("Datastore Ünïcode", UUID_A);
    let name = "Café Ser\"ver | 東京 01";
    let dir = "/Café Server 東京";
    flat_vmdk(&mut b, dir, "東京 disk", 1, 2048, 4096);
    b.file(&format!("{dir}/café.vmx"), tokyo_vmx(name));
    let inv = scan_one(b);
    let v = vm(&inv, name);
    assert_eq!(
        v.disks[0].chain[0].extents[0].file.as_deref(),
        Some("東京 disk-flat.vmdk")
    );
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert!(
        v.id.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
}

#[test]
fn ntfs_names_match_case_insensitively_and_windows_paths_resolve() {
    let mut b = ntfs("VMSTORE", "00AA11BB22CC33DD");
    b.file("/Virtual Machines/XP/xp.vmdk", "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"XP-FLAT.VMDK\" 0\n");
    b.file("/Virtual Machines/XP/xp-flat.vmdk", vec![0; 1 << 20]);
    b.file("/Virtual Machines/XP/Data.vmdk", "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"data-flat.vmdk\" 0\n");
    b.file("/Virtual Machines/XP/data-flat.vmdk", vec![0; 1 << 20]);
    b.file(
        "/Virtual Machines/XP/XP.vmx",
        vmx(
            "XP",
            "winxppro",
            1,
            512,
            &[
                ("ide0:0", "XP.VMDK"),
                ("ide0:1", "E:\\Virtual Machines\\XP\\data.vmdk"),
            ],
            "",
        ),
    );
    let inv = scan_one(b);
    let xp = vm(&inv, "XP");
    assert!(xp.problems.is_empty(), "{:?}", xp.problems);
    assert_eq!(xp.disks.len(), 2);
    assert!(xp.files.iter().all(|f| !f.missing));
    assert!(xp.file("xp-flat.vmdk").is_some());
}

#[test]
fn hyperv_2016_folders() {
    let mut b = ntfs("HV", "1122334455667788");
    let guid = "6F1C3E2A-0B4D-4E5F-9A8B-7C6D5E4F3A2B";
    let vmdir = "/Hyper-V/SQL 01";
    let mut vmcx = vec![0x12u8, 0x00, 0xFE, 0x01, 0x33];
    vmcx.extend(utf16le("C:\\ClusterStorage\\Volume1\\Hyper-V\\SQL 01\\Virtual Hard Disks\\sql01_6A1F2E3D-1111-2222-3333-444455556666.avhdx"));
    vmcx.extend([0, 0, 9, 0]);
    vmcx.extend(utf16le(
        "C:\\ClusterStorage\\Volume1\\Hyper-V\\SQL 01\\Virtual Hard Disks\\sql01-data.vhdx",
    ));
    vmcx.extend([0, 0, 1, 2, 3]);
    vmcx.extend(utf16le("C:\\iso\\server.iso"));
    vmcx.resize(60 * 1024, 0);
    b.file(&format!("{vmdir}/Virtual Machines/{guid}.vmcx"), vmcx);
    b.file(
        &format!("{vmdir}/Virtual Machines/{guid}.vmgs"),
        vec![0u8; 4096],
    );
    b.sparse_file(
        &format!("{vmdir}/Virtual Machines/{guid}.VMRS"),
        Vec::new(),
        8 * GIB,
        8 * GIB,
    );
    let vhd = format!("{vmdir}/Virtual Hard Disks");
    b.file(
        &format!("{vhd}/sql01.vhdx"),
        synth::vhdx(127 * GIB, None, false),
    );
    b.file(&format!("{vhd}/sql01.vhdx.rct"), vec![0u8; 512]);
    b.file(
        &format!("{vhd}/sql01_6A1F2E3D-1111-2222-3333-444455556666.avhdx"),
        synth::vhdx(127 * GIB, Some(SQL01_AVHDX_PARENT), true),
    );
    b.file(
        &format!("{vhd}/sql01-data.vhdx"),
        synth::vhdx(GIB, None, false),
    );
    let snap = "0A0B0C0D-1111-2222-3333-444455556666";
    b.file(&format!("{vmdir}/Snapshots/{snap}.vmcx"), vec![1u8; 1000]);
    b.file(&format!("{vmdir}/Snapshots/{snap}.vmrs"), vec![1u8; 1000]);
    let inv = scan(&[ds("hv", b)]);
    let v = vm(&inv, "SQL 01");
    assert_eq!(v.platform, Platform::Hyperv);
    assert_eq!(v.instance_uuid.as_deref(), Some(guid));
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.disks.len(), 2);
    assert_eq!(
        chain_paths(&v.disks[0]),
        vec![
            "/Hyper-V/SQL 01/Virtual Hard Disks/sql01_6A1F2E3D-1111-2222-3333-444455556666.avhdx",
            "/Hyper-V/SQL 01/Virtual Hard Disks/sql01.vhdx"
        ]
    );
    assert_eq!(v.disks[0].capacity, Some(127 * GIB));
    assert_eq!(v.file("sql01.vhdx.rct").unwrap().role, Role::Cbt);
    assert_eq!(v.file(&format!("{guid}.vmgs")).unwrap().role, Role::Nvram);
    assert_eq!(
        v.file(&format!("{snap}.vmcx")).unwrap().role,
        Role::SnapshotMetadata
    );
    assert_eq!(v.snapshots.len(), 1);
    assert_eq!(v.consistency.state, ConsistencyState::CrashConsistent);
    assert!(inv.orphan_disks.is_empty(), "{:?}", inv.orphan_disks);
}

#[test]
fn hyperv_2012_xml_config() {
    let mut b = ntfs("HV", "1122334455667788");
    let guid = "11111111-2222-3333-4444-555555555555";
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-16\" standalone=\"yes\"?>\n<configuration>\n <properties><name type=\"string\">Legacy DC</name></properties>\n <settings><processors><count type=\"integer\">2</count></processors><memory><bank><size type=\"integer\">2048</size></bank></memory></settings>\n <_83f8638b-8dca-4152-9eda-2ca8b33039b4_><controller0><drive0><pathname type=\"string\">D:\\VMs\\Legacy DC\\Virtual Hard Disks\\dc.vhd</pathname><type type=\"string\">VHD</type></drive0></controller0></_83f8638b-8dca-4152-9eda-2ca8b33039b4_>\n</configuration>";
    b.file(
        &format!("/VMs/Legacy DC/Virtual Machines/{guid}.xml"),
        utf16le_with_bom(xml),
    );
    b.sparse_file(
        &format!("/VMs/Legacy DC/Virtual Machines/{guid}/{guid}.bin"),
        Vec::new(),
        2 * GIB,
        2 * GIB,
    );
    b.file(
        &format!("/VMs/Legacy DC/Virtual Machines/{guid}/{guid}.vsv"),
        vec![0u8; 4096],
    );
    // A fixed VHD: the raw disk plus the footer qemu-img -f vpc writes.
    let mut vhd = vec![0u8; 1 << 20];
    vhd.extend(fixed_vhd_footer(1 << 20));
    b.file("/VMs/Legacy DC/Virtual Hard Disks/dc.vhd", vhd);
    let inv = scan(&[ds("hv", b)]);
    let v = vm(&inv, "Legacy DC");
    assert_eq!((v.cpus, v.memory_mb), (Some(2), Some(2048)));
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.disks[0].chain[0].create_type.as_deref(), Some("fixed"));
    assert_eq!(v.consistency.state, ConsistencyState::CrashConsistent);
}

fn fixed_vhd_footer(size: u64) -> Vec<u8> {
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    let sum = f.iter().fold(0u32, |a, &b| a.wrapping_add(b as u32));
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

#[test]
fn virtual_server_vmc_with_differencing_vhd() {
    let mut b = ntfs("OLD", "0102030405060708");
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<preferences><hardware><memory><ram_size type=\"integer\">256</ram_size></memory><pci_bus><ide_adapter><ide_controller id=\"0\"><location id=\"0\"><drive_type type=\"integer\">1</drive_type><pathname><absolute type=\"string\">E:\\VS\\NT4 Box\\NT4 Box.vhd</absolute><relative type=\"string\">.\\NT4 Box.vhd</relative></pathname></location><location id=\"1\"><drive_type type=\"integer\">2</drive_type><pathname><absolute type=\"string\">E:\\iso\\nt4.iso</absolute></pathname></location></ide_controller></ide_adapter></pci_bus></hardware></preferences>";
    b.file("/VS/NT4 Box/NT4 Box.vmc", utf16le_with_bom(xml));
    b.file(
        "/VS/NT4 Box/NT4 Box.vhd",
        synth::vhd_differencing(
            4 * GIB,
            "base.vhd",
            "..\\Bases\\base.vhd",
            "E:\\VS\\Bases\\base.vhd",
        ),
    );
    let mut base = vec![0u8; 4096];
    base.extend(fixed_vhd_footer(4096));
    b.file("/VS/Bases/base.vhd", base);
    let inv = scan(&[ds("old", b)]);
    let v = vm(&inv, "NT4 Box");
    assert_eq!(v.platform, Platform::VirtualServer);
    assert_eq!(v.memory_mb, Some(256));
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(
        chain_paths(&v.disks[0]),
        vec!["/VS/NT4 Box/NT4 Box.vhd", "/VS/Bases/base.vhd"]
    );
    assert_eq!(v.file("NT4 Box.vhd").unwrap().role, Role::SnapshotDelta);
    assert!(inv.orphan_disks.is_empty());
}

#[test]
fn ids_are_stable_and_independent_of_the_lun_name() {
    let build = || {
        let mut b = vmfs("ds", UUID_A);
        esxi_vm(&mut b, "/a", "a", &[1]);
        esxi_vm(&mut b, "/b", "b", &[1]);
        b
    };
    let one = scan(&[ds("/dev/sdb", build())]);
    let two = scan(&[ds("/dev/sdq", build())]);
    let ids = |i: &inventory::Inventory| i.vms.iter().map(|v| v.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&one), ids(&two));
    assert_ne!(one.vms[0].id, one.vms[1].id);
    // The same clone registered twice still gives distinct ids.
    let both = scan(&[ds("x", build()), ds("y", build())]);
    let mut all = ids(&both);
    all.dedup();
    assert_eq!(all.len(), 4);
}

#[test]
fn json_meets_the_cli_contract() {
    let mut b = vmfs("ds", UUID_A);
    esxi_vm(&mut b, "/a", "a", &[1]);
    let inv = scan_one(b);
    let j = serde_json::to_value(&inv.vms[0]).unwrap();
    for k in [
        "id",
        "name",
        "config",
        "files",
        "lun",
        "platform",
        "disks",
        "consistency",
        "problems",
    ] {
        assert!(j.get(k).is_some(), "missing {k} in {j}");
    }
    for f in j["files"].as_array().unwrap() {
        assert!(
            f["path"].is_string()
                && f["role"].is_string()
                && f["size"].is_u64()
                && f["name"].is_string()
        );
    }
    assert_eq!(j["platform"], "vmware");
    assert_eq!(j["consistency"]["state"], "powered-off");
}

// ---- Bad input: each gives a VM with a clear problem, never a failed scan. ----

#[test]
fn garbage_vmx() {
    let mut b = vmfs("ds", UUID_A);
    b.file(
        "/junk/junk.vmx",
        (0..5000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    b.file(
        "/text/text.vmx",
        "Dear diary,\ntoday I renamed a letter to .vmx\n",
    );
    esxi_vm(&mut b, "/good", "good", &[1]);
    let inv = scan_one(b);
    assert_eq!(inv.vms.len(), 3);
    for n in ["junk", "text"] {
        let v = vm(&inv, n);
        assert_problem(&v.problems, "config-invalid");
        assert_eq!(v.files.len(), 1);
    }
    assert!(vm(&inv, "good").problems.is_empty());
}

#[test]
fn one_gib_vmx_is_not_read() {
    let mut b = vmfs("ds", UUID_A);
    b.sparse_file(
        "/big/big.vmx",
        b"displayName = \"big\"\n".to_vec(),
        GIB,
        GIB,
    );
    let t = std::time::Instant::now();
    let inv = scan_one(b);
    // A hang guard, not a performance measure (that is benches/): reading the whole GiB would
    // still finish, so the problem kind below is what proves it was not parsed.
    assert!(t.elapsed().as_secs_f64() < 30.0);
    let v = vm(&inv, "big");
    assert_problem(&v.problems, "config-too-large");
    assert_eq!(v.file("big.vmx").unwrap().size, GIB);
}

#[test]
fn ten_thousand_extents() {
    let mut b = vmfs("ds", UUID_A);
    let mut d = String::from(
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n",
    );
    for n in 1..=10_000 {
        d += &format!("RW 4 FLAT \"many-f{n:05}.vmdk\" 0\n");
    }
    b.file("/many/many.vmdk", d);
    for n in 1..=10_000 {
        b.file(&format!("/many/many-f{n:05}.vmdk"), vec![0u8; 2048]);
    }
    b.file(
        "/many/many.vmx",
        small_vmx("many", &[("scsi0:0", "many.vmdk")]),
    );
    let t = std::time::Instant::now();
    let inv = scan_one(b);
    let secs = t.elapsed().as_secs_f64();
    let v = vm(&inv, "many");
    assert_eq!(v.disks[0].chain[0].extents.len(), 10_000);
    assert_eq!(v.files.len(), 10_002);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    // A hang guard against quadratic work, not a performance measure (that is benches/).
    assert!(secs < 60.0, "{secs} s");
}

#[test]
fn too_many_extents_are_capped() {
    let mut b = vmfs("ds", UUID_A);
    let mut d = String::from(
        "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"custom\"\n",
    );
    for _ in 0..(inventory::vmdk::MAX_EXTENTS + 10) {
        d += "RW 1 ZERO\n";
    }
    b.file("/z/z.vmdk", d);
    b.file("/z/z.vmx", small_vmx("z", &[("scsi0:0", "z.vmdk")]));
    let inv = scan_one(b);
    let v = vm(&inv, "z");
    assert_problem(&v.problems, "extents-capped");
}

#[test]
fn looping_parent_chain() {
    let mut b = vmfs("ds", UUID_A);
    b.file(
        "/loop/a.vmdk",
        delta_descriptor(1, 2, "b.vmdk", "a-delta.vmdk", 2048, false),
    );
    b.file(
        "/loop/b.vmdk",
        delta_descriptor(2, 1, "a.vmdk", "b-delta.vmdk", 2048, false),
    );
    b.file(
        "/loop/self.vmdk",
        delta_descriptor(3, 3, "self.vmdk", "self-delta.vmdk", 2048, false),
    );
    b.file(
        "/loop/loop.vmx",
        small_vmx("loop", &[("scsi0:0", "a.vmdk"), ("scsi0:1", "self.vmdk")]),
    );
    let inv = scan_one(b);
    let v = vm(&inv, "loop");
    assert_eq!(
        v.problems.iter().filter(|p| p.kind == "chain-loop").count(),
        2,
        "{:?}",
        v.problems
    );
    assert_eq!(v.disks[0].chain.len(), 2);
    assert_eq!(v.disks[1].chain.len(), 1);
    // Missing delta extents are problems too, but nothing panics or hangs.
    assert_problem(&v.problems, "file-missing");
}

#[test]
fn descriptor_garbage_and_huge_descriptors() {
    let mut b = vmfs("ds", UUID_A);
    b.file("/g/g.vmdk", vec![0xABu8; 4096]);
    b.sparse_file(
        "/g/huge.vmdk",
        b"# Disk DescriptorFile\nversion=1\n".to_vec(),
        3 << 20,
        3 << 20,
    );
    b.file(
        "/g/g.vmx",
        small_vmx(
            "g",
            &[
                ("scsi0:0", "g.vmdk"),
                ("scsi0:1", "huge.vmdk"),
                ("scsi0:2", "gone.vmdk"),
            ],
        ),
    );
    let inv = scan_one(b);
    let v = vm(&inv, "g");
    let kinds: Vec<&str> = v.problems.iter().map(|p| p.kind.as_str()).collect();
    assert!(kinds.contains(&"descriptor-invalid"), "{kinds:?}");
    assert!(kinds.contains(&"descriptor-too-large"), "{kinds:?}");
    assert!(kinds.contains(&"disk-missing"), "{kinds:?}");
    assert!(v.file("gone.vmdk").unwrap().missing);
}

#[test]
fn unreadable_directory_is_an_inventory_problem() {
    let mut b = vmfs("ds", UUID_A);
    esxi_vm(&mut b, "/ok", "ok", &[1]);
    b.broken_dir("/bad");
    let inv = scan_one(b);
    assert_eq!(inv.vms.len(), 1);
    assert!(
        inv.problems
            .iter()
            .any(|p| p.kind == "io" && p.path.as_deref() == Some("/bad"))
    );
}

#[test]
fn templates_rdms_and_independent_disks() {
    let mut b = vmfs("ds", UUID_A);
    flat_vmdk(&mut b, "/t", "t", 1, 2048, 4096);
    b.file(
        "/t/t.vmtx",
        vmx(
            "gold image",
            "rhel8-64",
            2,
            2048,
            &[("scsi0:0", "t.vmdk")],
            "",
        ),
    );
    flat_vmdk(&mut b, "/r", "r", 1, 2048, 4096);
    b.file("/r/r_1.vmdk", "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfsPassthroughRawDeviceMap\"\n\nRW 2147483648 VMFSRDM \"r_1-rdmp.vmdk\"\n");
    b.sparse_file("/r/r_1-rdmp.vmdk", Vec::new(), 1 << 40, 0);
    b.file(
        "/r/r.vmx",
        vmx(
            "r",
            "other",
            1,
            64,
            &[("scsi0:0", "r.vmdk"), ("scsi0:1", "r_1.vmdk")],
            "scsi0:1.mode = \"independent-persistent\"\n",
        ),
    );
    let inv = scan_one(b);
    let t = vm(&inv, "gold image");
    assert!(t.template);
    let r = vm(&inv, "r");
    assert!(
        r.notes.iter().any(|n| n.contains("raw device mapping")),
        "{:?}",
        r.notes
    );
    assert!(
        r.notes.iter().any(|n| n.contains("independent-persistent")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.disks[1].mode.as_deref(), Some("independent-persistent"));
}

/// Assembling VMs on several threads gives exactly the one-thread inventory, including a
/// broken VM, a shared disk (claimed by the first VM only) and a folder with two
/// configurations; enough VMs that four threads all get work.
#[test]
fn assembly_threads_give_the_same_inventory() {
    let mut b = common::vmfs("par", "5f9a1c2e-7d3b4a10-1e2f-000c29aabb01");
    for n in 0..130 {
        let name = format!("vm{n:02}");
        let dir = common::esxi_vm(&mut b, &format!("/{name}"), &name, &[1, 2]);
        b.file(&format!("{dir}/vmware-1.log"), "log\n");
    }
    b.file(
        "/vm00/second.vmx",
        "displayName = \"second\"\nscsi0:0.fileName = \"vm00.vmdk\"\n",
    );
    b.file("/broken/broken.vmx", vec![0xFFu8; 300]);
    let ds = common::ds("par", b);
    let run = |threads| {
        let limits = inventory::Limits {
            threads,
            ..Default::default()
        };
        serde_json::to_string(&inventory::scan_with(std::slice::from_ref(&ds), &limits)).unwrap()
    };
    let one = run(1);
    assert!(one.contains("\"broken\""));
    assert_eq!(run(2), one);
    assert_eq!(run(4), one);
}

/// `scan_each` hands over exactly `scan_with`'s VMs, in its order, whatever the number of
/// threads; stopping after a few VMs stops the scan (no more VMs, no orphan disks), also when
/// other threads are still preparing the ones after.
#[test]
fn streamed_vms_come_in_inventory_order_and_stop_on_request() {
    use std::ops::ControlFlow;
    let mut b = common::vmfs("stream", "5f9a1c2e-7d3b4a10-1e2f-000c29aabb02");
    // Names that sort differently by path than by directory listing ("a b" < "a/" bytewise).
    for n in (0..90).rev() {
        let name = if n % 3 == 0 {
            format!("a b{n:02}")
        } else {
            format!("a{n:02}")
        };
        common::esxi_vm(&mut b, &format!("/{name}"), &name, &[1]);
    }
    b.file("/orphans/lost.vmdk", "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfs\"\nRW 2048 VMFS \"lost-flat.vmdk\"\n");
    let ds = common::ds("stream", b);
    let all = inventory::scan(std::slice::from_ref(&ds));
    assert_eq!(all.vms.len(), 90);
    assert!(
        all.vms
            .windows(2)
            .all(|w| (&w[0].lun, &w[0].config) < (&w[1].lun, &w[1].config))
    );
    assert!(!all.orphan_disks.is_empty());
    let want = serde_json::to_string(&all.vms).unwrap();
    for threads in [1, 2, 4] {
        let limits = inventory::Limits {
            threads,
            ..Default::default()
        };
        let mut got = Vec::new();
        let found = inventory::scan_each(
            std::slice::from_ref(&ds),
            &limits,
            |vm| vm,
            |vm| {
                got.push(vm);
                ControlFlow::Continue(())
            },
        );
        assert_eq!(
            serde_json::to_string(&got).unwrap(),
            want,
            "{threads} threads"
        );
        assert_eq!(found.orphan_disks.len(), all.orphan_disks.len());

        let mut first = Vec::new();
        let found = inventory::scan_each(
            std::slice::from_ref(&ds),
            &limits,
            |vm| vm.id,
            |id| {
                first.push(id);
                if first.len() == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        let want_ids: Vec<_> = all.vms[..3].iter().map(|v| v.id.clone()).collect();
        assert_eq!(first, want_ids, "{threads} threads");
        assert!(found.orphan_disks.is_empty());
    }
}
