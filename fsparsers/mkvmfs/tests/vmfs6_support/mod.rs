//! vmfs6-tools mounts for the VMFS6 writer tests, unmounted when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Reports a skip when vmfs6-tools, FUSE or root are missing.
pub fn can_mount6(test: &str) -> bool {
    if !testkit::is_root() {
        testkit::skip(test, "FUSE mounts need root");
        return false;
    }
    for t in ["vmfs6-fuse", "debugvmfs6"] {
        if !testkit::have_tool(t) {
            testkit::skip(
                test,
                &format!("{t} (Debian package vmfs6-tools) is not installed"),
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

/// A read-only vmfs6-fuse mount (vmfs6-tools never opens VMFS6 read-write), unmounted when
/// dropped.
pub struct Fuse6 {
    dir: tempfile::TempDir,
}

impl Fuse6 {
    /// Mounts `device` (an image file or a loop device) with vmfs6-fuse.
    pub fn mount(device: &Path) -> Fuse6 {
        let dir = tempfile::Builder::new()
            .prefix("mkvmfs6-mnt-")
            .tempdir()
            .unwrap();
        let out = Command::new("vmfs6-fuse")
            .arg(device)
            .arg(dir.path())
            .output()
            .expect("run vmfs6-fuse");
        let m = Fuse6 { dir };
        assert!(
            out.status.success() && m.is_mounted(),
            "vmfs6-fuse {} failed: {}{}",
            device.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        m
    }

    fn is_mounted(&self) -> bool {
        let want = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
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

impl Drop for Fuse6 {
    fn drop(&mut self) {
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

/// Reads `len` bytes at `offset` of a file (short at the end of the file).
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        let r = f.read_at(&mut buf[n..], offset + n as u64).unwrap();
        if r == 0 {
            break;
        }
        n += r;
    }
    buf.truncate(n);
    buf
}
