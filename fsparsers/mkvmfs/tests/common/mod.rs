//! Shared helpers of the mkvmfs integration tests: source trees generated at test time,
//! cached images, vmfs-fuse mounts that always unmount, and a byte-for-byte tree comparison.

#![allow(dead_code)]

pub mod v5check;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The mkvmfs binary under test.
pub fn mkvmfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mkvmfs"))
}

/// A stamp of the binary (size and mtime), so cached images are rebuilt when the writer
/// changes.
pub fn writer_stamp() -> String {
    let m = fs::metadata(mkvmfs_bin()).expect("mkvmfs binary");
    format!("{:x}-{:x}", m.len(), m.mtime())
}

/// Runs mkvmfs and panics with its stderr on failure.
pub fn mkvmfs(args: &[&str], src: &Path, image: &Path) {
    let out = Command::new(mkvmfs_bin())
        .args(args)
        .arg(src)
        .arg(image)
        .output()
        .expect("run mkvmfs");
    assert!(
        out.status.success(),
        "mkvmfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cached image for `src`, named `<name>-<writer stamp>-<hash of source name and options>.img`;
/// images of other stamps are removed.
pub fn cached_image(name: &str, src: &Path, args: &[&str]) -> PathBuf {
    let dir = testkit::fixture_dir("mkvmfs");
    // The key covers the writer, the source tree's (versioned) name and the options.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let src_name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for b in args
        .iter()
        .chain([&src_name.as_str()])
        .flat_map(|a| a.bytes().chain([0]))
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let stamp = format!("{}-{:08x}", writer_stamp(), h as u32);
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.starts_with(&format!("{name}-")) && f.ends_with(".img") && !f.contains(&stamp) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let path = dir.join(format!("{name}-{stamp}.img"));
    testkit::cached_fixture(&path, |tmp| mkvmfs(args, src, tmp))
}

/// Deterministic pseudo-random bytes (xorshift64*), seeded per file.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` at `offset` into `path`, creating the file if needed.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    f.write_all_at(data, offset).unwrap();
}

/// A thin file of `size` bytes holding `pieces` (offset, seed, len).
pub fn thin_file(path: &Path, size: u64, pieces: &[(u64, u64, usize)]) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for &(off, seed, len) in pieces {
        f.write_all_at(&pattern(seed, len), off).unwrap();
    }
}

/// Reports a skip when a tool is missing or we are not root (FUSE mounts need both).
pub fn can_mount(test: &str) -> bool {
    if !testkit::is_root() {
        testkit::skip(test, "FUSE mounts need root");
        return false;
    }
    for t in ["vmfs-fuse", "debugvmfs"] {
        if !testkit::have_tool(t) {
            testkit::skip(
                test,
                &format!("{t} (Debian package vmfs-tools) is not installed"),
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

/// A read-only vmfs-fuse mount, unmounted when dropped.
pub struct FuseMount {
    dir: tempfile::TempDir,
}

impl FuseMount {
    /// Mounts `device` (an image or a loop device) with vmfs-fuse.
    pub fn mount(device: &Path) -> FuseMount {
        let dir = tempfile::Builder::new()
            .prefix("mkvmfs-mnt-")
            .tempdir()
            .unwrap();
        let out = Command::new("vmfs-fuse")
            .arg(device)
            .arg(dir.path())
            .output()
            .expect("run vmfs-fuse");
        assert!(
            out.status.success(),
            "vmfs-fuse {} failed: {}",
            device.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        FuseMount { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        for _ in 0..20 {
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
