//! The FUSE readers of vmfs-tools and vmfs6-tools (mounts that always unmount), `debugvmfs`,
//! and the byte-for-byte comparison of a mounted tree with its source.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Reports a skip unless we are root, every one of `tools` (from the Debian package `package`)
/// is installed and /dev/fuse exists: FUSE mounts need all three.
pub fn fuse_tools_ready(test: &str, tools: &[&str], package: &str) -> bool {
    if !testkit::is_root() {
        testkit::skip(test, "FUSE mounts need root");
        return false;
    }
    for t in tools {
        if !testkit::have_tool(t) {
            testkit::skip(
                test,
                &format!("{t} (Debian package {package}) is not installed"),
            );
            return false;
        }
    }
    if !Path::new("/dev/fuse").exists() {
        testkit::skip(test, "/dev/fuse is missing");
        return false;
    }
    true
}

/// True when vmfs-tools can mount and inspect VMFS5 images; else the test is skipped.
pub fn can_mount(test: &str) -> bool {
    fuse_tools_ready(test, &["vmfs-fuse", "debugvmfs"], "vmfs-tools")
}

/// True when vmfs6-tools can mount and inspect VMFS6 images; else the test is skipped.
pub fn can_mount6(test: &str) -> bool {
    fuse_tools_ready(test, &["vmfs6-fuse", "debugvmfs6"], "vmfs6-tools")
}

/// A read-only FUSE mount of a VMFS volume (vmfs-fuse, or vmfs6-fuse, which never opens VMFS6
/// read-write), unmounted when dropped.
pub struct FuseMount {
    dir: tempfile::TempDir,
}

impl FuseMount {
    /// Mounts `device` (an image or a loop device) with vmfs-fuse.
    pub fn mount(device: &Path) -> FuseMount {
        FuseMount::mount_with("vmfs-fuse", &[device])
    }

    /// Mounts `device` (an image or a loop device) with vmfs6-fuse.
    pub fn mount6(device: &Path) -> FuseMount {
        FuseMount::mount_with("vmfs6-fuse", &[device])
    }

    /// Mounts the volume on `devices` (all its extents, in the order given) with `tool`
    /// (vmfs-fuse or vmfs6-fuse), asserting that the mount is in place.
    pub fn mount_with(tool: &str, devices: &[&Path]) -> FuseMount {
        let dir = tempfile::Builder::new()
            .prefix("mkvmfs-mnt-")
            .tempdir()
            .unwrap();
        let out = Command::new(tool)
            .args(devices)
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        let m = FuseMount { dir };
        assert!(
            out.status.success() && m.is_mounted(),
            "{tool} {devices:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        m
    }

    fn is_mounted(&self) -> bool {
        let want = self.dir.path().to_string_lossy().into_owned();
        fs::read_to_string("/proc/mounts").is_ok_and(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the mount.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        // The FUSE daemon may still hold the mount busy right after the last close: retry
        // before giving up to a lazy unmount.
        for _ in 0..20 {
            if !self.is_mounted() {
                return;
            }
            let ok = Command::new("umount")
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Runs `debugvmfs IMAGES… ARGS…` (all extents of one volume) and returns its output.
pub fn debugvmfs<P: AsRef<OsStr>>(images: &[P], args: &[&str]) -> Output {
    Command::new("debugvmfs")
        .args(images)
        .args(args)
        .output()
        .expect("run debugvmfs")
}

/// Asserts that `debugvmfs IMAGES… check_vol_bitmaps` finds no error.
pub fn debugvmfs_bitmaps_ok<P: AsRef<OsStr>>(images: &[P]) {
    let out = debugvmfs(images, &["check_vol_bitmaps"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Total errors: 0"),
        "debugvmfs check_vol_bitmaps: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compares two files byte for byte in 1 MiB chunks.
fn same_contents(a: &Path, b: &Path) -> Result<(), String> {
    let mut fa = File::open(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let mut fb = File::open(b).map_err(|e| format!("{}: {e}", b.display()))?;
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| format!("{}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| format!("{}: {e}", b.display()))?;
        if na != nb || ba[..na] != bb[..nb] {
            let first = ba[..na.min(nb)]
                .iter()
                .zip(&bb[..na.min(nb)])
                .position(|(x, y)| x != y);
            return Err(format!(
                "{} differs near byte {}",
                b.display(),
                pos + first.unwrap_or(na.min(nb)) as u64
            ));
        }
        if na == 0 {
            return Ok(());
        }
        pos += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

/// Compares the tree under `src` with the one under `mnt`: the same names, kinds, sizes,
/// contents and symlink targets, and nothing extra (the root's `.sf` system files aside).
/// `skip_contents` lists relative paths whose contents are not read (only their size).
pub fn compare_trees(src: &Path, mnt: &Path, skip_contents: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    compare_dir(src, mnt, "", skip_contents, &mut errors);
    errors
}

/// Asserts that [`compare_trees`] finds no difference; `context` names the reader (and the
/// layout or extent order) in the failure.
pub fn assert_same_tree(src: &Path, mnt: &Path, skip_contents: &[&str], context: &str) {
    let errors = compare_trees(src, mnt, skip_contents);
    assert!(
        errors.is_empty(),
        "{context} sees a different tree:\n{}",
        errors.join("\n")
    );
}

fn compare_dir(src: &Path, mnt: &Path, rel: &str, skip: &[&str], errors: &mut Vec<String>) {
    let names = |p: &Path, root: bool| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !(root && n.starts_with('.') && n.ends_with(".sf")))
            .collect();
        v.sort();
        v
    };
    let (a, b) = (names(src, false), names(mnt, rel.is_empty()));
    if a != b {
        errors.push(format!(
            "/{rel}: entries differ: source has {} entries, volume {}",
            a.len(),
            b.len()
        ));
        let only_a: Vec<_> = a.iter().filter(|n| !b.contains(n)).take(5).collect();
        let only_b: Vec<_> = b.iter().filter(|n| !a.contains(n)).take(5).collect();
        errors.push(format!(
            "  only in source: {only_a:?}; only in volume: {only_b:?}"
        ));
        return;
    }
    for n in a {
        let r = if rel.is_empty() {
            n.clone()
        } else {
            format!("{rel}/{n}")
        };
        let (sp, mp) = (src.join(&n), mnt.join(&n));
        let (sm, mm) = (
            fs::symlink_metadata(&sp).unwrap(),
            fs::symlink_metadata(&mp).unwrap(),
        );
        let (st, mt) = (sm.file_type(), mm.file_type());
        if st.is_dir() != mt.is_dir()
            || st.is_symlink() != mt.is_symlink()
            || st.is_file() != mt.is_file()
        {
            errors.push(format!("{r}: kind differs"));
        } else if st.is_dir() {
            compare_dir(&sp, &mp, &r, skip, errors);
        } else if st.is_symlink() {
            let (ta, tb) = (fs::read_link(&sp).unwrap(), fs::read_link(&mp).unwrap());
            if ta != tb {
                errors.push(format!("{r}: symlink target {ta:?} vs {tb:?}"));
            }
        } else if sm.len() != mm.len() {
            errors.push(format!("{r}: size {} vs {}", sm.len(), mm.len()));
        } else if !skip.contains(&r.as_str())
            && let Err(e) = same_contents(&sp, &mp)
        {
            errors.push(format!("{r}: {e}"));
        }
    }
}
