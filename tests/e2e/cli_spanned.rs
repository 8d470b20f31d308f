//! VMFS5 and VMFS6 datastores spanning two LUNs (written by `mkvmfs --extent`, whose images
//! vmfs-tools, vmfs6-tools and dissect.vmfs read back in the mkvmfs tests): `lunproxy fs` and `lunproxy vms` assemble
//! it from both LUNs in either order, report extents on the right LUN, and refuse clearly when
//! an extent is missing.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use e2e::{json_lines, lunproxy, lunproxy_ok, mkvmfs, mkvmfs_stamp, noise};
use testkit::{cached_fixture, fixture_dir, sha256_hex, sha256_reader};

const MIB: u64 = 1 << 20;
/// Blocks of the thin disk: more than one 256 MiB extent holds.
const DISK_BLOCKS: u64 = 400;

/// The source tree: one VM whose thin disk has a 4 KiB piece across every 1 MiB boundary (so
/// it allocates 400 blocks and crosses the extent boundary, while images stay small), a file
/// allocated after it (on the second extent), a resident file and a symlink.
fn source_tree() -> PathBuf {
    let path = fixture_dir("e2e").join("src-spanned-v1");
    cached_fixture(&path, |d| {
        let vm = d.join("span-vm");
        fs::create_dir_all(&vm).unwrap();
        fs::write(
            vm.join("span-vm.vmx"),
            "config.version = \"8\"\nvirtualHW.version = \"14\"\ndisplayName = \"span-vm\"\n\
             guestOS = \"other\"\nscsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\n\
             scsi0:0.fileName = \"span-vm.vmdk\"\n",
        )
        .unwrap();
        fs::write(
            vm.join("span-vm.vmdk"),
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                 createType=\"vmfs\"\n\n# Extent description\nRW {} VMFS \"span-vm-flat.vmdk\"\n",
                DISK_BLOCKS * MIB / 512
            ),
        )
        .unwrap();
        let disk = File::create(vm.join("span-vm-flat.vmdk")).unwrap();
        disk.set_len(DISK_BLOCKS * MIB).unwrap();
        disk.write_all_at(&noise(1, 2048), 0).unwrap();
        for i in 1..DISK_BLOCKS {
            disk.write_all_at(&noise(1 + i, 4096), i * MIB - 2048)
                .unwrap();
        }
        fs::write(vm.join("vmware.log"), noise(999, 70_000)).unwrap();
        fs::write(
            d.join("zz-after-the-disk.bin"),
            noise(777, 3 * MIB as usize + 5),
        )
        .unwrap();
        fs::write(d.join("resident.txt"), b"lives in its file descriptor\n").unwrap();
        std::os::unix::fs::symlink("span-vm/span-vm.vmx", d.join("config-link")).unwrap();
    })
}

/// Image size that leaves one 256 MiB PE (plus the 17 MiB LVM header) per LUN with `layout`.
/// mkvmfs sizes a VMFS6 volume with slack for its metadata, which would put the whole tree on
/// the head extent; one PE per LUN makes the thin disk cross onto the second.
fn one_pe_image(layout: &str) -> u64 {
    if layout == "bare" {
        273 * MIB
    } else {
        275 * MIB
    }
}

/// `lun1.img` (head extent) and `lun2.img` of one VMFS `vmfs` ("5" or "6") volume, for the
/// given `--layout`, rebuilt when the mkvmfs binary changes.
fn spanned_luns(vmfs: &str, layout: &str) -> [PathBuf; 2] {
    let stamp = mkvmfs_stamp();
    let root = fixture_dir("e2e");
    // VMFS5 keeps its original fixture name.
    let prefix = match vmfs {
        "5" => format!("spanned-{layout}-"),
        _ => format!("spanned{vmfs}-{layout}-"),
    };
    testkit::stamp::remove_stale(&root, &prefix, "", &stamp);
    let src = source_tree();
    let dir = cached_fixture(&root.join(format!("{prefix}{stamp}")), |tmp| {
        fs::create_dir_all(tmp).unwrap();
        let size = one_pe_image(layout).to_string();
        let mut args = vec!["--vmfs", vmfs, "--label", "spanned", "--layout", layout];
        if vmfs == "6" {
            args.extend(["--size", &size]);
        }
        let mut args: Vec<&OsStr> = args.into_iter().map(OsStr::new).collect();
        let (lun1, lun2) = (tmp.join("lun1.img"), tmp.join("lun2.img"));
        args.extend([
            OsStr::new("--extent"),
            lun2.as_os_str(),
            src.as_os_str(),
            lun1.as_os_str(),
        ]);
        mkvmfs(&args);
    });
    [dir.join("lun1.img"), dir.join("lun2.img")]
}

/// Regular files and symlinks of the source: relative path -> (type, size, sha256 or target).
fn source_files(root: &Path) -> BTreeMap<String, (String, u64, String)> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, (String, u64, String)>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = format!("{rel}/{}", e.file_name().to_string_lossy());
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                out.insert(p.clone(), ("dir".into(), 0, String::new()));
                walk(&e.path(), &p, out);
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(e.path()).unwrap();
                out.insert(p, ("symlink".into(), m.len(), t.to_string_lossy().into()));
            } else {
                let sha = sha256_reader(File::open(e.path()).unwrap());
                out.insert(p, ("file".into(), m.len(), sha));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// `fs ls`, `fs cat` and `fs extents` on the volume given as `luns` (first LUN positional, the
/// others as --extent-lun), which must be of type `fs` ("vmfs5" or "vmfs6").
fn check_spanned(fs: &str, luns: &[&Path]) {
    let src = source_tree();
    let want = source_files(&src);
    let mut base: Vec<String> = vec![luns[0].to_string_lossy().into_owned()];
    for l in &luns[1..] {
        base.push("--extent-lun".into());
        base.push(l.to_string_lossy().into_owned());
    }
    let with = |cmd: &str, rest: &[&str]| -> Vec<String> {
        let mut v = vec!["fs".to_string(), cmd.to_string()];
        v.extend(base.iter().cloned());
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let run_ok = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lunproxy_ok(&refs)
    };

    let info = json_lines(&run_ok(with("info", &["--json"])));
    assert_eq!(info[0]["fs"], fs, "{luns:?}");
    assert_eq!(info[0]["label"], "spanned");

    let listing = json_lines(&run_ok(with("ls", &["/", "-r", "--json"])));
    let got: BTreeMap<String, (String, u64)> = listing
        .iter()
        .map(|v| {
            (
                v["path"].as_str().unwrap().to_string(),
                (
                    v["type"].as_str().unwrap().to_string(),
                    v["size"].as_u64().unwrap(),
                ),
            )
        })
        .filter(|(_, (t, _))| t != "dir")
        .collect();
    let want_files: BTreeMap<String, (String, u64)> = want
        .iter()
        .filter(|(_, (t, _, _))| t != "dir")
        .map(|(p, (t, s, _))| (p.clone(), (t.clone(), *s)))
        .collect();
    assert_eq!(got, want_files, "{luns:?}: fs ls");

    let images: Vec<File> = luns.iter().map(|l| File::open(l).unwrap()).collect();
    let mut bytes_on = vec![0u64; luns.len()];
    for (path, (kind, size, digest)) in &want {
        if kind != "file" {
            continue;
        }
        let bytes = run_ok(with("cat", &[path]));
        assert_eq!(bytes.len() as u64, *size, "{luns:?}: size of {path}");
        assert_eq!(&sha256_hex(&bytes), digest, "{luns:?}: fs cat {path}");

        let map = json_lines(&run_ok(with("extents", &[path, "--json"])));
        assert_eq!(map[0]["size"], *size);
        let Some(extents) = map[0]["extents"].as_array() else {
            assert!(map[0]["not_mappable"].is_string(), "{path}: {:?}", map[0]);
            continue;
        };
        let mut rebuilt = Vec::with_capacity(*size as usize);
        for e in extents {
            let len = e["length"].as_u64().unwrap() as usize;
            match e["physical"].as_u64() {
                Some(p) => {
                    let lun = e["lun"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{path}: extent without a lun: {e}"))
                        as usize;
                    let mut buf = vec![0u8; len];
                    images[lun]
                        .read_exact_at(&mut buf, p)
                        .unwrap_or_else(|err| {
                            panic!(
                                "{path}: extent {e} lies outside {}: {err}",
                                luns[lun].display()
                            )
                        });
                    bytes_on[lun] += len as u64;
                    rebuilt.extend_from_slice(&buf);
                }
                None => rebuilt.resize(rebuilt.len() + len, 0),
            }
        }
        assert_eq!(&sha256_hex(&rebuilt), digest, "{luns:?}: extents of {path}");
    }
    assert!(
        bytes_on.iter().all(|&n| n > 16 * MIB),
        "{luns:?}: file data per LUN {bytes_on:?}; each extent should hold some"
    );
}

/// Two tests, `$v5` and `$v6`, running `$check` on the VMFS5 and the VMFS6 datastore.
macro_rules! vmfs5_and_vmfs6_tests {
    ($check:ident: $v5:ident, $v6:ident) => {
        #[test]
        fn $v5() {
            $check("5");
        }

        #[test]
        fn $v6() {
            $check("6");
        }
    };
}

vmfs5_and_vmfs6_tests!(
    check_fs_commands: fs_commands_assemble_a_volume_spanning_two_luns_in_either_order,
    fs_commands_assemble_a_vmfs6_volume_spanning_two_luns_in_either_order
);
vmfs5_and_vmfs6_tests!(
    check_vms_lists_once: vms_lists_the_spanned_datastore_once,
    vms_lists_the_spanned_vmfs6_datastore_once
);
vmfs5_and_vmfs6_tests!(
    check_missing_extent: a_missing_extent_is_one_clear_error,
    a_missing_vmfs6_extent_is_one_clear_error
);

/// The `fs` commands on the VMFS `vmfs` datastore, bare and in a GPT, with its LUNs given in
/// either order.
fn check_fs_commands(vmfs: &str) {
    for layout in ["bare", "gpt"] {
        let [a, b] = spanned_luns(vmfs, layout);
        let fs = format!("vmfs{vmfs}");
        check_spanned(&fs, &[&a, &b]);
        check_spanned(&fs, &[&b, &a]);
    }
}

/// `lunproxy vms LUN1 LUN2`, in either order, lists the one VM of the VMFS `vmfs` spanned
/// datastore once.
fn check_vms_lists_once(vmfs: &str) {
    let [a, b] = spanned_luns(vmfs, "bare");
    for order in [[&a, &b], [&b, &a]] {
        let args: Vec<&str> = std::iter::once("vms")
            .chain(order.iter().map(|p| p.to_str().unwrap()))
            .chain(["--json"])
            .collect();
        let vms = json_lines(&lunproxy_ok(&args));
        assert_eq!(vms.len(), 1, "{order:?}: {vms:?}");
        assert_eq!(vms[0]["name"], "span-vm");
        assert_eq!(vms[0]["config"], "/span-vm/span-vm.vmx");
        let files = vms[0]["files"].as_array().unwrap();
        let disk = files
            .iter()
            .find(|f| f["path"] == "/span-vm/span-vm-flat.vmdk")
            .unwrap_or_else(|| panic!("no flat disk in {files:?}"));
        assert_eq!(disk["size"], DISK_BLOCKS * MIB);
    }
}

/// The volume UUID as stored in the LVM header (the volume name ESXi writes there). The volume
/// table follows the 512-byte device metadata on LVM5, the 4 KiB-aligned one on LVM6.
fn volume_uuid(image: &Path) -> String {
    let file = File::open(image).unwrap();
    let mut major = [0u8; 4];
    file.read_exact_at(&mut major, 0x10_0000 + 4).unwrap();
    let vol_table = match u32::from_le_bytes(major) {
        6 => 0x1000,
        _ => 0x200,
    };
    let mut name = [0u8; 64];
    file.read_exact_at(&mut name, 0x10_0000 + vol_table + 0x14)
        .unwrap();
    let end = name.iter().position(|&b| b == 0).unwrap_or(64);
    String::from_utf8(name[..end].to_vec()).unwrap()
}

/// Every command given only one LUN of the two of the VMFS `vmfs` datastore fails with one
/// error line naming the volume UUID (and, from the head extent, the missing image).
fn check_missing_extent(vmfs: &str) {
    let [a, b] = spanned_luns(vmfs, "bare");
    let uuid = volume_uuid(&a);
    assert_eq!(uuid.len(), 35, "{uuid}");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["fs", "ls", a, "-r", "--json"], Some("lun2.img")),
        (
            vec!["fs", "cat", a, "/span-vm/span-vm-flat.vmdk"],
            Some("lun2.img"),
        ),
        (vec!["fs", "info", b], None),
        (vec!["fs", "ls", b, "/"], None),
        (vec!["vms", a], Some("lun2.img")),
    ];
    for (args, names) in cases {
        let out = lunproxy(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {} bytes",
            out.stdout.len()
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error: ")).count(),
            1,
            "{args:?}: {err}"
        );
        assert!(
            last.contains(&uuid),
            "{args:?}: the error does not name volume {uuid}: {err}"
        );
        assert!(
            last.contains("extent"),
            "{args:?}: the error does not speak of the missing extent: {err}"
        );
        if let Some(n) = names {
            assert!(
                last.contains(n),
                "{args:?}: the error does not name {n}: {err}"
            );
        }
    }
}
