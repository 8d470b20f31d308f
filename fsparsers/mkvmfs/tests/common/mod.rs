//! Shared helpers of the mkvmfs integration tests: source trees generated at test time,
//! cached images, byte readers, and the other implementations that judge the images
//! (FUSE mounts and `debugvmfs` in [`mount`], dissect.vmfs in [`dissect`]).

#![allow(dead_code)]

pub mod dissect;
pub mod mount;
pub mod v5check;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Deterministic pseudo-random bytes (xorshift64*), seeded per file: the NTFS fixtures'
/// generator, so both writers' tests fill files the same way.
pub use testkit::ntfs::noise as pattern;

/// One MiB.
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;

/// The mkvmfs binary under test.
pub fn mkvmfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mkvmfs"))
}

/// A stamp of the binary (size and mtime), so cached images are rebuilt when the writer
/// changes.
pub fn writer_stamp() -> String {
    testkit::stamp::file_stamp(&mkvmfs_bin())
}

/// Runs mkvmfs with `args` (source and image included) and returns its output, whatever the
/// exit status.
pub fn mkvmfs_output<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(mkvmfs_bin())
        .args(args)
        .output()
        .expect("run mkvmfs")
}

/// Runs mkvmfs and panics with its stderr on failure.
pub fn mkvmfs(args: &[&str], src: &Path, image: &Path) {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.extend([src.as_os_str(), image.as_os_str()]);
    let out = mkvmfs_output(&all);
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
    testkit::stamp::remove_stale(&dir, &format!("{name}-"), ".img", &stamp);
    let path = dir.join(format!("{name}-{stamp}.img"));
    testkit::cached_fixture(&path, |tmp| mkvmfs(args, src, tmp))
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

/// A VM folder `VMs/<name>` as ESXi lays it out: `<name>.vmx` naming the disk, a text
/// descriptor, and the thin flat disk of `disk_size` bytes holding `pieces` (offset, seed,
/// len). Returns the folder.
pub fn vm_folder(root: &Path, name: &str, disk_size: u64, pieces: &[(u64, u64, usize)]) -> PathBuf {
    let vm = root.join("VMs").join(name);
    fs::create_dir_all(&vm).unwrap();
    fs::write(
        vm.join(format!("{name}.vmx")),
        format!("displayName = \"{name}\"\nscsi0:0.fileName = \"{name}.vmdk\"\n"),
    )
    .unwrap();
    fs::write(
        vm.join(format!("{name}.vmdk")),
        format!(
            "# Disk DescriptorFile\nversion=1\ncreateType=\"vmfs\"\nRW {} VMFS \"{name}-flat.vmdk\"\n",
            disk_size / 512
        ),
    )
    .unwrap();
    thin_file(&vm.join(format!("{name}-flat.vmdk")), disk_size, pieces);
    vm
}

/// The folder `VMs/vm-a` both writers' datastore trees start with: a [`vm_folder`] with a
/// 64 MiB thin disk with an interior hole, nvram, an empty `.vmsd` and a log. Returns the
/// folder.
pub fn vm_a_folder(root: &Path) -> PathBuf {
    let vm_a = vm_folder(
        root,
        "vm-a",
        64 * MIB,
        &[
            (0, 1, 65536),
            (10 * MIB + 3, 2, MIB as usize + 3),
            (63 * MIB, 3, MIB as usize),
        ],
    );
    fs::write(vm_a.join("vm-a.nvram"), pattern(4, 8684)).unwrap();
    fs::write(vm_a.join("vm-a.vmsd"), b"").unwrap();
    fs::write(vm_a.join("vmware.log"), pattern(5, 30_000)).unwrap();
    vm_a
}

/// Reads `len` bytes at `offset` of a file (short at the end of the file).
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

/// Reads exactly `len` bytes at `offset` of a file (an image's structures, never short).
pub fn read_exact(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let buf = read_at(path, offset, len);
    assert_eq!(
        buf.len(),
        len,
        "{} ends before {offset} + {len}",
        path.display()
    );
    buf
}

/// The little-endian u32 at `o` of an on-disk structure.
pub fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// The little-endian u64 at `o` of an on-disk structure.
pub fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
