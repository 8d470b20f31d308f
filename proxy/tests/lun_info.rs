//! End-to-end tests of `lunproxy lun info` on images partitioned by sgdisk and sfdisk, formatted
//! by mkntfs, through image files and read-only loop devices.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use testkit::{LoopDevice, cached_fixture, fixture_dir, have_tool, real_images_dir, run, skip};

const MIB: u64 = 1 << 20;

fn lunproxy(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lunproxy"));
    for a in args {
        cmd.arg(a);
    }
    cmd.stdin(Stdio::null()).output().expect("run lunproxy")
}

fn info_json(paths: &[&Path]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lunproxy"));
    cmd.args(["lun", "info", "--json"]).args(paths);
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "lun info {paths:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn tools(test: &str, names: &[&str]) -> bool {
    for t in names {
        if !have_tool(t) {
            skip(test, &format!("{t} is not installed"));
            return false;
        }
    }
    true
}

/// A sparse image of `size` bytes.
fn sparse(path: &Path, size: u64) {
    File::create(path).unwrap().set_len(size).unwrap();
}

/// An NTFS volume made by mkntfs, copied into `img` at `offset`.
fn put_ntfs(img: &Path, offset: u64, size: u64) {
    let vol = img.with_extension("ntfs-part");
    sparse(&vol, size);
    run(Command::new("mkntfs")
        .args(["-F", "-q", "-f", "-L", "part"])
        .arg(&vol));
    let data = fs::read(&vol).unwrap();
    File::options()
        .write(true)
        .open(img)
        .unwrap()
        .write_all_at(&data, offset)
        .unwrap();
    fs::remove_file(vol).unwrap();
}

/// The first 2 MiB of the VMFS5 volume ESXi wrote (LVM header at 1 MiB) when the real images
/// are present; otherwise just the LVM magic number, which is all identification looks at.
fn put_vmfs_head(img: &Path, offset: u64) {
    let head = match real_images_dir() {
        Some(dir) => {
            let mut gz = gzip_head(&dir.join("vmfs5-esxi.bin.gz"));
            gz.truncate(2 * MIB as usize);
            gz
        }
        None => {
            let mut h = vec![0u8; 2 * MIB as usize];
            h[MIB as usize..MIB as usize + 4].copy_from_slice(&0xC001_D00Du32.to_le_bytes());
            h
        }
    };
    File::options()
        .write(true)
        .open(img)
        .unwrap()
        .write_all_at(&head, offset)
        .unwrap();
}

/// The first 2 MiB of a gzip file, unpacked with the system's gzip (the proxy crate has no
/// gzip dependency).
fn gzip_head(gz: &Path) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' | head -c {}", gz.display(), 2 * MIB))
        .output()
        .unwrap();
    out.stdout
}

/// A 64 MiB GPT image: partition 1 VMFS (type fb00, "datastore1") at 1 MiB, partition 2
/// Microsoft basic data holding an NTFS volume, partition 3 Linux with nothing in it.
fn gpt_image(test: &str) -> Option<PathBuf> {
    if !tools(test, &["sgdisk", "mkntfs"]) {
        return None;
    }
    Some(cached_fixture(
        &fixture_dir("lun-info").join("gpt.img"),
        |p| {
            sparse(p, 64 * MIB);
            run(Command::new("sgdisk")
                .args(["-n1:2048:+20M", "-t1:fb00", "-c1:datastore1"])
                .args(["-n2:0:+24M", "-t2:0700", "-c2:windows data"])
                .args(["-n3:0:0", "-t3:8300"])
                .arg(p));
            put_vmfs_head(p, MIB);
            put_ntfs(p, 21 * MIB, 24 * MIB);
        },
    ))
}

#[test]
fn gpt_partitions_and_what_they_hold() {
    let test = "gpt_partitions_and_what_they_hold";
    let Some(img) = gpt_image(test) else { return };
    let v = info_json(&[&img]);
    assert_eq!(v["size"], 64 * MIB);
    assert_eq!(v["sector_size"], 512);
    assert_eq!(v["paths"][0]["state"], "up");
    let c = &v["content"];
    assert_eq!(c["kind"], "gpt", "{v}");
    assert_eq!(c["sector_size"], 512);
    let parts = c["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{v}");
    assert_eq!(parts[0]["index"], 1);
    assert_eq!(parts[0]["start_byte"], MIB);
    assert_eq!(parts[0]["length_bytes"], 20 * MIB);
    assert_eq!(parts[0]["type"], "aa31e02a-400f-11db-9590-000c2911d1b8");
    assert_eq!(parts[0]["name"], "datastore1");
    assert_eq!(parts[0]["content"]["kind"], "vmfs-lvm");
    assert_eq!(parts[1]["start_byte"], 21 * MIB);
    assert_eq!(parts[1]["type"], "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7");
    assert_eq!(parts[1]["name"], "windows data");
    assert_eq!(parts[1]["content"]["kind"], "ntfs");
    assert_eq!(parts[2]["type"], "0fc63daf-8483-4772-8e79-3d69d8477de4");
    assert_eq!(parts[2]["content"]["kind"], "unknown");
    // The same bytes sgdisk reports.
    let listing = String::from_utf8(run(Command::new("sgdisk").arg("-p").arg(&img))).unwrap();
    let rows: Vec<(u64, u64)> = listing
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    let ours: Vec<(u64, u64)> = parts
        .iter()
        .map(|p| {
            let start = p["start_byte"].as_u64().unwrap() / 512;
            (start, start + p["length_bytes"].as_u64().unwrap() / 512 - 1)
        })
        .collect();
    assert_eq!(ours, rows, "{listing}");

    let out = lunproxy(&[&"lun", &"info", &img]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("GPT partition table"), "{text}");
    assert!(
        text.contains("VMware VMFS") && text.contains("VMFS LVM device header"),
        "{text}"
    );
    assert!(text.contains("NTFS boot sector"), "{text}");
}

/// sgdisk's GPT with the primary header wiped: the backup header at the end is used, the
/// partitions are the same, and a warning says so.
#[test]
fn gpt_backup_header_is_used_when_the_primary_is_damaged() {
    let test = "gpt_backup_header_is_used_when_the_primary_is_damaged";
    let Some(img) = gpt_image(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("damaged.img");
    fs::copy(&img, &copy).unwrap();
    File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .write_all_at(&[0u8; 512], 512)
        .unwrap();
    let good = info_json(&[&img]);
    let v = info_json(&[&copy]);
    assert_eq!(v["content"]["partitions"], good["content"]["partitions"]);
    let warning = v["content"]["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("backup header"), "{v}");
}

#[test]
fn mbr_with_logical_partitions() {
    let test = "mbr_with_logical_partitions";
    if !tools(test, &["sfdisk", "mkntfs"]) {
        return;
    }
    let img = cached_fixture(&fixture_dir("lun-info").join("mbr.img"), |p| {
        sparse(p, 64 * MIB);
        let mut sfdisk = Command::new("sfdisk")
            .arg("-q")
            .arg(p)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\n2048,20480,fb\n22528,16384,7\n40960,,5\n43008,4096,83\n49152,8192,7\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        put_vmfs_head(p, MIB);
        put_ntfs(p, 22528 * 512, 8 * MIB);
        put_ntfs(p, 49152 * 512, 4 * MIB);
    });
    let v = info_json(&[&img]);
    let c = &v["content"];
    assert_eq!(c["kind"], "mbr", "{v}");
    let got: Vec<(u64, u64, u64, String, String)> = c["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap(),
                p["start_byte"].as_u64().unwrap() / 512,
                p["length_bytes"].as_u64().unwrap() / 512,
                p["type"].as_str().unwrap().to_string(),
                p["content"]["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        (1, 2048, 20480, "0xfb", "vmfs-lvm"),
        (2, 22528, 16384, "0x07", "ntfs"),
        (5, 43008, 4096, "0x83", "unknown"),
        (6, 49152, 8192, "0x07", "ntfs"),
    ]
    .map(|(i, s, l, t, k)| (i, s, l, t.to_string(), k.to_string()));
    assert_eq!(got, want, "{v}");
    // sfdisk agrees on the partition starts.
    let dump = String::from_utf8(run(Command::new("sfdisk").arg("-d").arg(&img))).unwrap();
    for start in [
        "start=        2048",
        "start=       43008",
        "start=       49152",
    ] {
        assert!(dump.contains(start), "{dump}");
    }
}

#[test]
fn bare_volumes_are_identified() {
    let test = "bare_volumes_are_identified";
    if !tools(test, &["mkntfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ntfs = dir.path().join("ntfs.img");
    sparse(&ntfs, 16 * MIB);
    run(Command::new("mkntfs").args(["-F", "-q", "-f"]).arg(&ntfs));
    assert_eq!(info_json(&[&ntfs])["content"]["kind"], "ntfs");
    let zeros = dir.path().join("zeros.img");
    sparse(&zeros, 4 * MIB);
    assert_eq!(info_json(&[&zeros])["content"]["kind"], "unknown");
    if let Some(vmfs) = testkit::real_image(test, "vmfs5-esxi") {
        assert_eq!(info_json(&[&vmfs])["content"]["kind"], "vmfs-lvm");
    }
}

/// Through block devices: a read-only loop device (512-byte sectors), the loop device and the
/// image file together as two paths of one LUN, and a 4096-byte-sector loop device carrying a
/// GPT that sgdisk wrote in 4 KiB sectors.
#[test]
fn through_read_only_loop_devices() {
    let test = "through_read_only_loop_devices";
    let Some(img) = gpt_image(test) else { return };
    let Some(dev) = LoopDevice::attach(test, &img) else {
        return;
    };
    let v = info_json(&[dev.path()]);
    assert_eq!(v["size"], 64 * MIB);
    assert_eq!(
        v["content"]["partitions"][1]["content"]["kind"], "ntfs",
        "{v}"
    );
    let out = lunproxy(&[&"lun", &"info", &"--json", &"--direct", &dev.path(), &img]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let paths = v["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 2);
    assert!(paths.iter().all(|p| p["state"] == "up"), "{v}");
    assert_eq!(v["content"]["partitions"][0]["content"]["kind"], "vmfs-lvm");

    // 4Kn: sgdisk writes through a writable 4096-byte-sector loop device.
    let dir = tempfile::tempdir().unwrap();
    let img4k = dir.path().join("4k.img");
    sparse(&img4k, 64 * MIB);
    {
        let Some(rw) = LoopDevice::attach_with(test, &img4k, &["--sector-size", "4096"]) else {
            return;
        };
        run(Command::new("sgdisk")
            .args(["-n1:256:+16M", "-t1:fb00", "-c1:vmfs4k"])
            .arg(rw.path()));
    }
    put_vmfs_head(&img4k, MIB);
    let Some(ro) = LoopDevice::attach_with(test, &img4k, &["-r", "--sector-size", "4096"]) else {
        return;
    };
    let v = info_json(&[ro.path()]);
    assert_eq!(v["sector_size"], 4096, "{v}");
    assert_eq!(v["content"]["kind"], "gpt", "{v}");
    assert_eq!(v["content"]["sector_size"], 4096);
    let p = &v["content"]["partitions"][0];
    assert_eq!(p["start_byte"], MIB);
    assert_eq!(p["length_bytes"], 16 * MIB);
    assert_eq!(p["content"]["kind"], "vmfs-lvm");
    // The image file alone does not say its sector size; the GPT is still found at 4 KiB.
    let v = info_json(&[&img4k]);
    assert_eq!(v["sector_size"], 512);
    assert_eq!(v["content"]["sector_size"], 4096, "{v}");
}

fn assert_one_error_line(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.img");
    assert_one_error_line(&lunproxy(&[&"lun", &"info", &missing]), "missing.img");
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    fs::write(&a, vec![1u8; 1 << 20]).unwrap();
    fs::write(&b, vec![2u8; 1 << 20]).unwrap();
    assert_one_error_line(
        &lunproxy(&[&"lun", &"info", &a, &b, &"--json"]),
        "not the same LUN",
    );
    let c = dir.path().join("c.img");
    fs::write(&c, vec![1u8; 2 << 20]).unwrap();
    assert_one_error_line(&lunproxy(&[&"lun", &"info", &a, &c]), "bytes");
    assert_one_error_line(
        &lunproxy(&[&"lun", &"info", &"/dev/null"]),
        "not a regular file",
    );
    // A protective MBR without any GPT header is a corrupt table, named as such.
    let mut bad = vec![0u8; 1 << 20];
    bad[446 + 4] = 0xee;
    bad[510] = 0x55;
    bad[511] = 0xaa;
    let bad_img = dir.path().join("bad-gpt.img");
    fs::write(&bad_img, bad).unwrap();
    assert_one_error_line(&lunproxy(&[&"lun", &"info", &bad_img]), "GPT header");
}
