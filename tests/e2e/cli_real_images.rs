//! The `lunproxy fs` commands on volumes written by ESXi and Windows, compared with their
//! manifests (made by vmfs-fuse, vmfs6-fuse and ntfs-3g): bare, wrapped in GPT and MBR, and
//! through a read-only loop device.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use e2e::{PARTITION_START, Wrap, json_lines, lunproxy, lunproxy_ok, wrap_partition};
use testkit::{ManifestEntry, cached_fixture, fixture_dir, real_image, real_manifest, sha256_hex};

const VMFS_GPT: &str = "AA31E02A-400F-11DB-9590-000C2911D1B8";
const NTFS_GPT: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";

fn wrapped(name: &str, image: &Path, wrap: Wrap) -> PathBuf {
    let (gpt, mbr) = if name.starts_with("ntfs") {
        (NTFS_GPT, "7")
    } else {
        (VMFS_GPT, "fb")
    };
    let out = fixture_dir("e2e").join(format!("{name}-{wrap:?}.img").to_lowercase());
    cached_fixture(&out, |tmp| wrap_partition(image, tmp, wrap, gpt, mbr))
}

/// Checks listing, contents and extents of every manifest entry on `source`, whose filesystem
/// starts `fs_start` bytes into the LUN image `lun_image`.
fn check_volume(
    source: &str,
    lun_image: &Path,
    fs_start: u64,
    manifest: &[ManifestEntry],
    fs: &str,
) {
    let info = json_lines(&lunproxy_ok(&["fs", "info", source, "--json"]));
    assert_eq!(info[0]["fs"], fs, "{source}");
    assert_eq!(info[0]["devices"][0]["start"], fs_start, "{source}");

    let listing = json_lines(&lunproxy_ok(&["fs", "ls", source, "/", "-r", "--json"]));
    let by_path: BTreeMap<String, &serde_json::Value> = listing
        .iter()
        .map(|v| (v["path"].as_str().expect("path").to_string(), v))
        .collect();
    let listed_files: Vec<&String> = by_path
        .iter()
        .filter(|(_, v)| v["type"] != "dir")
        .map(|(p, _)| p)
        .collect();
    let manifest_paths: Vec<&String> = manifest.iter().map(|m| &m.path).collect();
    assert_eq!(
        listed_files, manifest_paths,
        "{source}: the files listed are not the manifest's (deleted or metadata files shown, or files missing)"
    );

    let image = File::open(lun_image).expect("open image");
    for m in manifest {
        let entry = by_path[&m.path];
        assert_eq!(entry["size"], m.size, "{source}: size of {}", m.path);
        if m.kind == 'l' {
            assert_eq!(entry["type"], "symlink", "{}", m.path);
            assert_eq!(entry["target"], m.digest_or_target.as_str(), "{}", m.path);
            continue;
        }
        let bytes = lunproxy_ok(&["fs", "cat", source, &m.path]);
        assert_eq!(
            sha256_hex(&bytes),
            m.digest_or_target,
            "{source}: contents of {}",
            m.path
        );

        let map = json_lines(&lunproxy_ok(&["fs", "extents", source, &m.path, "--json"]));
        assert_eq!(map[0]["size"], m.size);
        let Some(extents) = map[0]["extents"].as_array() else {
            assert!(
                map[0]["not_mappable"].is_string(),
                "{}: {:?}",
                m.path,
                map[0]
            );
            continue;
        };
        // The bytes at the reported LUN offsets are the file's bytes.
        let mut rebuilt = Vec::with_capacity(m.size as usize);
        for e in extents {
            let len = e["length"].as_u64().expect("length") as usize;
            match e["physical"].as_u64() {
                Some(p) => {
                    let mut buf = vec![0u8; len];
                    image
                        .read_exact_at(&mut buf, p)
                        .expect("read image at extent");
                    rebuilt.extend_from_slice(&buf);
                }
                None => rebuilt.resize(rebuilt.len() + len, 0),
            }
        }
        assert_eq!(
            sha256_hex(&rebuilt),
            m.digest_or_target,
            "{source}: extents of {}",
            m.path
        );
    }
}

fn check_real(name: &str, fs: &str) {
    let test = format!("cli_real_images::{name}");
    let Some(image) = real_image(&test, name) else {
        return;
    };
    let manifest = real_manifest(name);
    check_volume(image.to_str().unwrap(), &image, 0, &manifest, fs);
    for wrap in [Wrap::Gpt, Wrap::Mbr] {
        let lun = wrapped(name, &image, wrap);
        check_volume(lun.to_str().unwrap(), &lun, PARTITION_START, &manifest, fs);
    }
    if let Some(dev) = testkit::LoopDevice::attach(&test, &wrapped(name, &image, Wrap::Gpt)) {
        let dev_path = dev.path().to_str().unwrap().to_string();
        check_volume(&dev_path, dev.path(), PARTITION_START, &manifest, fs);
        // Two paths to one LUN (the loop device and the image file it reads) form one
        // multipath LUN.
        let lun = wrapped(name, &image, Wrap::Gpt);
        let multipath = format!("{dev_path},{}", lun.display());
        let info = json_lines(&lunproxy_ok(&["fs", "info", &multipath, "--json"]));
        assert_eq!(info[0]["fs"], fs);
    }
}

#[test]
fn vmfs5_written_by_esxi() {
    check_real("vmfs5-esxi", "vmfs5");
}

#[test]
fn vmfs6_written_by_esxi() {
    check_real("vmfs6-esxi", "vmfs6");
}

#[test]
fn ntfs_written_by_windows() {
    check_real("ntfs-windows", "ntfs");
}

#[test]
fn bad_sources_give_one_error_line() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["fs", "info", "/nonexistent/lun.img"],
            "/nonexistent/lun.img",
        ),
        (vec!["fs", "ls", "/dev/null"], "/dev/null"),
    ];
    for (args, needle) in cases {
        let out = lunproxy(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("error: "), "{err}");
        assert!(lines[0].contains(needle), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A zero-filled image: nothing to recognise, and the error says so.
    let zeros = fixture_dir("e2e").join("zeros.img");
    let f = File::create(&zeros).unwrap();
    f.set_len(4 << 20).unwrap();
    let out = lunproxy(&["fs", "info", zeros.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no NTFS or VMFS filesystem found"), "{err}");

    // Paths that do not exist inside a real volume.
    if let Some(image) = real_image("bad_sources", "vmfs5-esxi") {
        let out = lunproxy(&["fs", "cat", image.to_str().unwrap(), "/no/such/file"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.starts_with("error: ") && err.contains("/no/such/file"),
            "{err}"
        );
    }
}
