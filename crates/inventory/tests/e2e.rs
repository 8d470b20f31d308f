//! End to end: datastores built by the real tools (VMFS through `mkvmfs`, NTFS through mkntfs
//! and an ntfs-3g mount, virtual disks through qemu-img), opened by the project's own VMFS and
//! NTFS readers, inventoried together. Sizes are checked against the source tree (VMFS) and a
//! read-only ntfs-3g mount (NTFS).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use fscore::Filesystem;
use inventory::{ConsistencyState, Datastore, Platform, Role, VmFile, scan, synth};
use lun::{DevicePath, Source};
use testkit::ntfs::FuseMount;

/// Bump when a builder below changes, so cached images are rebuilt.
const VERSION: &str = "inv1";

/// The project's VMFS writer: a built binary, or built now with the cargo running this test.
fn mkvmfs() -> Option<PathBuf> {
    let root = testkit::workspace_root();
    let find = || {
        ["target/release/mkvmfs", "target/debug/mkvmfs"]
            .iter()
            .map(|p| root.join(p))
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "-q", "-p", "mkvmfs", "--bin", "mkvmfs"])
        .current_dir(&root)
        .status()
        .is_ok_and(|s| s.success());
    if built { find() } else { None }
}

fn open_source(img: &Path) -> Source {
    Arc::new(DevicePath::open(img).expect("open image"))
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// A file of `len` bytes whose data is mostly a hole (thin on every filesystem).
fn sparse(path: &Path, len: u64, head: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = fs::File::create(path).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(head, 0).unwrap();
    f.set_len(len).unwrap();
}

/// A VMFS descriptor `{dir}/{stem}.vmdk` for a thin flat extent of `mib` MiB starting with
/// `head`.
fn flat_vmdk(dir: &Path, stem: &str, cid: u32, mib: u64, head: &[u8]) {
    let flat = format!("{stem}-flat.vmdk");
    write(
        &dir.join(format!("{stem}.vmdk")),
        vmfs_descriptor(cid, &flat, mib << 11),
    );
    sparse(&dir.join(flat), mib << 20, head);
}

/// Asserts that every file of `files` has the size a host mount at `root` shows.
fn assert_sizes_as_mounted<'a>(
    root: &Path,
    files: impl IntoIterator<Item = &'a VmFile>,
    reader: &str,
) -> usize {
    let mut checked = 0;
    for f in files {
        let host = root.join(f.path.trim_start_matches('/'));
        assert_eq!(
            f.size,
            fs::metadata(&host).unwrap().len(),
            "{reader}: {}",
            f.path
        );
        checked += 1;
    }
    checked
}

/// Datastore 2: the second disk of `sql`, referenced from datastore 1 by UUID and label.
fn ds2_tree(root: &Path) {
    let sql = root.join("sql");
    flat_vmdk(&sql, "sql_1", 0x51, 64, b"data");
    flat_vmdk(&sql, "sql_2", 0x52, 16, b"data");
}

/// Datastore 1: VMs with 1-3 disks, a snapshot chain, a running VM, an orphan disk,
/// Unicode names, and `sql` with disks on datastore 2.
fn ds1_tree(root: &Path, ds2_uuid: &str) {
    let vm = |dir: &str, name: &str, disks: &[u64]| {
        let d = root.join(dir);
        let mut refs = Vec::new();
        for (n, &mib) in disks.iter().enumerate() {
            let stem = disk_stem(name, n);
            flat_vmdk(&d, &stem, 0x100 + n as u32, mib, b"MBR!");
            refs.push((format!("scsi0:{n}"), format!("{stem}.vmdk")));
        }
        write(
            &d.join(format!("{name}.vmx")),
            vmx(
                name,
                "ubuntu-64",
                2,
                2048,
                &str_pairs(&refs),
                &format!("nvram = \"{name}.nvram\"\n"),
            ),
        );
        write(&d.join(format!("{name}.nvram")), vec![3u8; 8684]);
        write(&d.join("vmware.log"), "log\n");
        d
    };
    vm("web01", "web01", &[32]);
    vm("db01", "db01", &[16, 8, 4]);
    let live = vm("live", "live", &[8]);
    sparse(&live.join("live-3f2a1b4c.vswp"), 2 << 30, b"");
    sparse(&live.join("vmx-live-1056789012-1.vswp"), 100 << 20, b"");

    let app = vm("app", "app", &[16]);
    write(
        &app.join("app-000001.vmdk"),
        delta_descriptor(
            0x200,
            0x100,
            "app.vmdk",
            "app-000001-sesparse.vmdk",
            16 << 11,
            true,
        ),
    );
    sparse(
        &app.join("app-000001-sesparse.vmdk"),
        4 << 20,
        &0xcafebabe_u64.to_le_bytes(),
    );
    write(&app.join("app-Snapshot1.vmsn"), vec![1u8; 5000]);
    write(
        &app.join("app.vmsd"),
        ".encoding = \"UTF-8\"\nsnapshot.lastUID = \"1\"\nsnapshot.current = \"1\"\nsnapshot0.uid = \"1\"\nsnapshot0.filename = \"app-Snapshot1.vmsn\"\nsnapshot0.displayName = \"before upgrade\"\nsnapshot0.numDisks = \"1\"\nsnapshot0.disk0.fileName = \"app.vmdk\"\nsnapshot0.disk0.node = \"scsi0:0\"\nsnapshot.numSnapshots = \"1\"\n",
    );
    write(&app.join("app.vmx"), app_vmx("app-000001.vmdk"));

    let sql = vm("sql", "sql", &[8]);
    write(
        &sql.join("sql.vmx"),
        sql_vmx(ds2_uuid, "scsi0:2", "nvram = \"sql.nvram\"\n"),
    );

    let uni = root.join("Café 東京");
    flat_vmdk(&uni, "東京 disk", 7, 8, b"");
    write(&uni.join("café.vmx"), tokyo_vmx("Café \"Tokyo\" 東京"));

    flat_vmdk(&root.join("lost"), "data", 9, 4, b"");
}

fn build_vmfs(name: &str, label: &str, vmfs_version: &str, tree: impl FnOnce(&Path)) -> PathBuf {
    let bin = mkvmfs().expect("checked by the caller");
    let path = testkit::fixture_dir("inventory").join(format!("{name}-{VERSION}.img"));
    testkit::cached_fixture(&path, |out| {
        let src = tempfile::tempdir().unwrap();
        tree(src.path());
        testkit::run(
            Command::new(&bin)
                .args([
                    "--vmfs",
                    vmfs_version,
                    "--label",
                    label,
                    "--size",
                    &(2u64 << 30).to_string(),
                    "--layout",
                    "bare",
                ])
                .arg(src.path())
                .arg(out),
        );
    })
}

/// A read-only vmfs-tools FUSE mount, unmounted when dropped.
struct VmfsFuse {
    dir: tempfile::TempDir,
}

impl VmfsFuse {
    fn mount(tool: &str, img: &Path) -> Option<VmfsFuse> {
        if !testkit::is_root() || !testkit::have_tool(tool) || !Path::new("/dev/fuse").exists() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new(tool)
            .arg(img)
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(VmfsFuse { dir })
    }
}

impl Drop for VmfsFuse {
    fn drop(&mut self) {
        for _ in 0..50 {
            if Command::new("umount")
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success())
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn vmfs_datastores_end_to_end() {
    let test = "vmfs_datastores_end_to_end";
    let Some(_) = mkvmfs() else {
        testkit::skip(
            test,
            "mkvmfs is not built and `cargo build -p mkvmfs` failed",
        );
        return;
    };
    let img2 = build_vmfs("ds2", "datastore2", "5", ds2_tree);
    let fs2 = Arc::new(vmfs::Vmfs::open(vec![open_source(&img2)]).expect("open datastore2"));
    let uuid2 = fs2.info().uuid;
    let tree1 = |p: &Path| ds1_tree(p, &uuid2);
    let img1 = build_vmfs(
        &format!("ds1-{}", uuid2.replace('-', "")),
        "datastore1",
        "6",
        tree1,
    );
    let fs1 = Arc::new(vmfs::Vmfs::open(vec![open_source(&img1)]).expect("open datastore1"));
    let ds = [Datastore::new("lun-1", fs1), Datastore::new("lun-2", fs2)];

    // The source tree is the oracle for names and sizes.
    let oracle = tempfile::tempdir().unwrap();
    ds1_tree(oracle.path(), &uuid2);

    let t = std::time::Instant::now();
    let inv = scan(&ds);
    eprintln!("vmfs inventory: {} VMs in {:?}", inv.vms.len(), t.elapsed());
    assert!(inv.problems.is_empty(), "{:?}", inv.problems);
    let mut names: Vec<&str> = inv.vms.iter().map(|v| v.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec!["Café \"Tokyo\" 東京", "app", "db01", "live", "sql", "web01"]
    );
    for v in &inv.vms {
        assert_eq!(v.platform, Platform::Vmware);
        let on_lun1 = v.files.iter().filter(|f| f.lun.as_deref() == Some("lun-1"));
        assert_sizes_as_mounted(oracle.path(), on_lun1, "source tree");
        if v.name != "sql" {
            assert!(v.problems.is_empty(), "{}: {:?}", v.name, v.problems);
        }
    }
    // vmfs-tools as an independent reader of the images: same names, same sizes.
    for (img, lun, tool) in [
        (&img1, "lun-1", "vmfs6-fuse"),
        (&img2, "lun-2", "vmfs-fuse"),
    ] {
        let Some(m) = VmfsFuse::mount(tool, img) else {
            testkit::skip(
                test,
                &format!("{tool} is not usable here (package vmfs6-tools / vmfs-tools)"),
            );
            continue;
        };
        let on_lun = inv
            .vms
            .iter()
            .flat_map(|v| &v.files)
            .filter(|f| f.lun.as_deref() == Some(lun));
        let checked = assert_sizes_as_mounted(m.dir.path(), on_lun, tool);
        assert!(checked > 0, "{tool}: no file of {lun} checked");
    }
    assert_eq!(vm(&inv, "db01").disks.len(), 3);
    let app = vm(&inv, "app");
    assert_eq!(app.disks[0].chain.len(), 2);
    assert_eq!(
        app.file("app-000001-sesparse.vmdk").unwrap().role,
        Role::SnapshotDelta
    );
    assert_eq!(app.snapshots.len(), 1);
    let live = vm(&inv, "live");
    assert_eq!(live.consistency.state, ConsistencyState::CrashConsistent);
    let web = vm(&inv, "web01");
    assert_eq!(web.consistency.state, ConsistencyState::PoweredOff);
    let flat = web.file("web01-flat.vmdk").unwrap();
    assert!(
        flat.allocated < flat.size,
        "thin flat extent: {} of {}",
        flat.allocated,
        flat.size
    );
    let sql = vm(&inv, "sql");
    assert!(sql.problems.is_empty(), "{:?}", sql.problems);
    assert_eq!(
        sql.file("sql_1-flat.vmdk").unwrap().lun.as_deref(),
        Some("lun-2")
    );
    assert_eq!(
        sql.file("sql_2-flat.vmdk").unwrap().lun.as_deref(),
        Some("lun-2")
    );
    assert_eq!(orphan_paths(&inv), vec!["/lost/data.vmdk"]);

    // Datastore 2 not registered: sql's second and third disks are missing and say why.
    let fs1 = ds[0].clone();
    let inv = scan(&[fs1]);
    let sql = vm(&inv, "sql");
    assert!(sql.file("sql_1.vmdk").unwrap().missing);
    assert_eq!(
        sql.file("sql_1.vmdk").unwrap().needs_datastore.as_deref(),
        Some(uuid2.as_str())
    );
    assert_eq!(
        sql.file("sql_2.vmdk").unwrap().needs_datastore.as_deref(),
        Some("datastore2")
    );
    // Ids do not depend on which LUNs are registered or what they are called.
    let again = scan(&[Datastore::new("other-name", ds[0].fs.clone())]);
    assert_eq!(vm(&again, "sql").id, sql.id);
}

/// The NTFS datastore: Hyper-V 2016 and 2012 VMs, a Virtual Server VM, a running Workstation
/// VM and an orphan VHDX, written through ntfs-3g.
fn ntfs_tree(mnt: &Path) {
    let guid = "6F1C3E2A-0B4D-4E5F-9A8B-7C6D5E4F3A2B";
    let vmdir = mnt.join("Hyper-V/SQL 01");
    let vhds = vmdir.join("Virtual Hard Disks");
    fs::create_dir_all(&vhds).unwrap();
    qemu::create(&vhds, "vhdx", None, "sql01.vhdx", "2G");
    qemu::create(&vhds, "vhdx", None, "sql01-data.vhdx", "1G");
    write(
        &vhds.join("sql01_6A1F2E3D-1111-2222-3333-444455556666.avhdx"),
        synth::vhdx(2 << 30, Some(SQL01_AVHDX_PARENT), false),
    );
    let mut vmcx = vec![0x12u8, 0, 0xFE, 1, 0x33];
    for p in [
        "C:\\ClusterStorage\\Volume1\\Hyper-V\\SQL 01\\Virtual Hard Disks\\sql01_6A1F2E3D-1111-2222-3333-444455556666.avhdx",
        "C:\\ClusterStorage\\Volume1\\Hyper-V\\SQL 01\\Virtual Hard Disks\\sql01-data.vhdx",
    ] {
        vmcx.extend(utf16le(p));
        vmcx.extend([0, 0, 5, 0]);
    }
    vmcx.resize(48 * 1024, 0);
    write(&vmdir.join(format!("Virtual Machines/{guid}.vmcx")), vmcx);
    write(
        &vmdir.join(format!("Virtual Machines/{guid}.vmgs")),
        vec![0u8; 4096],
    );
    write(
        &vmdir.join(format!("Virtual Machines/{guid}.vmrs")),
        vec![0u8; 28 * 1024],
    );

    let vs = mnt.join("VS/NT4 Box");
    fs::create_dir_all(&vs).unwrap();
    qemu::create(&vs, "vpc", None, "NT4 Box.vhd", "512M");
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<preferences><hardware><memory><ram_size type=\"integer\">256</ram_size></memory><pci_bus><ide_adapter><ide_controller id=\"0\"><location id=\"0\"><drive_type type=\"integer\">1</drive_type><pathname><absolute type=\"string\">E:\\VS\\NT4 Box\\NT4 Box.vhd</absolute><relative type=\"string\">.\\NT4 Box.vhd</relative></pathname></location></ide_controller></ide_adapter></pci_bus></hardware></preferences>";
    write(&vs.join("NT4 Box.vmc"), utf16le_with_bom(xml));

    let ws = mnt.join("VMs/Build Box");
    fs::create_dir_all(&ws).unwrap();
    qemu::create(
        &ws,
        "vmdk",
        Some("twoGbMaxExtentSparse"),
        "Build Box.vmdk",
        "3G",
    );
    write(
        &ws.join("Build Box.vmx"),
        build_box_vmx("sata0:0", "D:\\VMs\\Build Box\\Build Box.vmdk"),
    );
    write(&ws.join("Build Box.vmx.lck/M31415.lck"), "lock");
    write(&ws.join("vmware.log"), "log");

    let spare = mnt.join("Spare");
    fs::create_dir_all(&spare).unwrap();
    qemu::create(&spare, "vhdx", None, "spare.vhdx", "1G");
}

#[test]
fn ntfs_datastore_end_to_end() {
    let test = "ntfs_datastore_end_to_end";
    if !testkit::is_root() || !Path::new("/dev/fuse").exists() {
        testkit::skip(test, "needs root and /dev/fuse for ntfs-3g");
        return;
    }
    if let Some(t) = ["mkntfs", "ntfs-3g", "qemu-img"]
        .iter()
        .find(|t| !testkit::have_tool(t))
    {
        testkit::skip(
            test,
            &format!("{t} is missing (packages ntfs-3g, qemu-utils)"),
        );
        return;
    }
    let path = testkit::fixture_dir("inventory").join(format!("hv-ntfs-{VERSION}.img"));
    let img = testkit::cached_fixture(&path, |out| {
        fs::File::create(out).unwrap().set_len(256 << 20).unwrap();
        testkit::run(
            Command::new("mkntfs")
                .args(["-F", "-q", "-f", "-c", "4096", "-L", "HV"])
                .arg(out),
        );
        let m = FuseMount::ntfs3g(out, &[]).expect("mount");
        ntfs_tree(m.path());
    });
    let fs = Arc::new(ntfs::Ntfs::open(open_source(&img)).expect("open NTFS"));
    let inv = scan(&[Datastore::new("hv", fs)]);
    assert!(inv.problems.is_empty(), "{:?}", inv.problems);

    let sql = vm(&inv, "SQL 01");
    assert_eq!(sql.platform, Platform::Hyperv);
    assert!(sql.problems.is_empty(), "{:?}", sql.problems);
    assert_eq!(sql.disks.len(), 2);
    assert_eq!(sql.disks[0].chain.len(), 2);
    assert_eq!(
        sql.disks[0].chain[1].capacity,
        Some(2 << 30),
        "qemu-made base VHDX"
    );
    assert_eq!(sql.consistency.state, ConsistencyState::PoweredOff);

    let nt4 = vm(&inv, "NT4 Box");
    assert_eq!(nt4.platform, Platform::VirtualServer);
    assert!(nt4.problems.is_empty(), "{:?}", nt4.problems);
    assert_eq!(
        nt4.disks[0].chain[0].create_type.as_deref(),
        Some("dynamic")
    );

    let bb = vm(&inv, "Build Box");
    assert!(bb.problems.is_empty(), "{:?}", bb.problems);
    assert_eq!(bb.consistency.state, ConsistencyState::CrashConsistent);
    assert_eq!(bb.disks[0].chain[0].extents.len(), 2);
    assert_eq!(bb.file("M31415.lck").unwrap().role, Role::Lock);

    assert_eq!(orphan_paths(&inv), vec!["/Spare/spare.vhdx"]);

    // Sizes as a read-only ntfs-3g mount shows them.
    let m = FuseMount::ntfs3g(&img, &["ro"]).expect("mount ro");
    let files = inv.vms.iter().flat_map(|v| &v.files);
    assert_sizes_as_mounted(m.path(), files, "ntfs-3g");
}
