//! Helpers shared by the tests of every crate: where fixtures are cached, the real sample images
//! written by ESXi and Windows, loop devices, and loud skips.
//!
//! Fixtures are built at test time into `target/fixtures/` and reused by later runs. Builders
//! take a cross-process lock ([`FixtureLock`]) so that parallel test binaries do not build the
//! same image twice.

use std::fs::{self, File};
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

pub mod ntfs;
pub mod stamp;

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// `target/fixtures/<sub>` under the workspace, created on demand.
pub fn fixture_dir(sub: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("fixtures").join(sub);
    fs::create_dir_all(&dir).expect("create fixture dir");
    dir
}

/// True when running under CI, where every optional tool and image must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports a skipped test loudly. Under CI a skip is a failure, because CI installs every tool
/// the tests need; on a newcomer's machine it is a printed notice.
pub fn skip(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: cannot run under CI: {reason}");
    }
    let msg = format!("SKIPPED {test}: {reason}\n");
    let _ = io::stderr().write_all(msg.as_bytes());
    let _ = io::stdout().write_all(msg.as_bytes());
}

/// True when `tool` is found on PATH (or under /sbin, /usr/sbin, where root tools live).
pub fn have_tool(tool: &str) -> bool {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/sbin", "/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.iter().any(|d| d.join(tool).is_file())
}

/// True when the process runs as root (loop devices and FUSE mounts need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a command and returns its stdout, panicking with its stderr on failure.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

/// A cross-process exclusive lock on a fixture name, held until dropped.
pub struct FixtureLock {
    _file: File,
}

impl FixtureLock {
    /// Takes the lock `target/fixtures/locks/<name>.lock`, waiting for other holders.
    pub fn take(name: &str) -> FixtureLock {
        let path = fixture_dir("locks").join(format!("{name}.lock"));
        let file = File::create(&path).expect("create lock file");
        file.lock().expect("lock fixture");
        FixtureLock { _file: file }
    }
}

/// Builds `path` once with `build` (which writes a temporary path), under a lock, and returns
/// it. A fixture whose build failed half-way is never seen by later runs, because the builder
/// writes to `<path>.partial` and only a finished build is renamed into place.
pub fn cached_fixture(path: &Path, build: impl FnOnce(&Path)) -> PathBuf {
    let name = path
        .file_name()
        .expect("fixture has a file name")
        .to_string_lossy()
        .into_owned();
    let _lock = FixtureLock::take(&name);
    if !path.exists() {
        let partial = path.with_extension("partial");
        let _ = fs::remove_file(&partial);
        let _ = fs::remove_dir_all(&partial);
        build(&partial);
        fs::rename(&partial, path).expect("publish fixture");
    }
    path.to_path_buf()
}

/// The folder of real sample images (`../shared/real-images` beside the checkout), if present.
pub fn real_images_dir() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared/real-images");
    dir.is_dir().then_some(dir)
}

/// Unpacks `<name>.bin.gz` from the real images into the fixture cache and returns its path,
/// or reports a skip (failure under CI) and returns `None` when the folder is absent.
pub fn real_image(test: &str, name: &str) -> Option<PathBuf> {
    let Some(dir) = real_images_dir() else {
        skip(
            test,
            "../shared/real-images is absent (it holds the ESXi and Windows sample images)",
        );
        return None;
    };
    let gz = dir.join(format!("{name}.bin.gz"));
    let out = fixture_dir("real").join(format!("{name}.bin"));
    Some(cached_fixture(&out, |tmp| {
        let mut dec = flate2::read::GzDecoder::new(File::open(&gz).expect("open real image"));
        let mut f = File::create(tmp).expect("create unpacked image");
        io::copy(&mut dec, &mut f).expect("unpack real image");
    }))
}

/// One line of a real image's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// `f` (regular file) or `l` (symlink).
    pub kind: char,
    /// Size in bytes (the target length for symlinks).
    pub size: u64,
    /// Absolute path inside the volume.
    pub path: String,
    /// SHA-256 of the contents, or the symlink target.
    pub digest_or_target: String,
}

/// Parses `<name>.manifest` of the real images (`TYPE SIZE PATH SHA256`, or
/// `l SIZE PATH -> TARGET`). Paths may contain spaces.
pub fn real_manifest(name: &str) -> Vec<ManifestEntry> {
    let dir = real_images_dir().expect("real images present");
    let f = File::open(dir.join(format!("{name}.manifest"))).expect("open manifest");
    io::BufReader::new(f)
        .lines()
        .map(|l| l.expect("read manifest"))
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let kind = line.chars().next().expect("type");
            let rest = &line[2..];
            let (size, rest) = rest.split_once(' ').expect("size");
            let (path, digest) = if kind == 'l' {
                let (p, t) = rest.rsplit_once(" -> ").expect("symlink target");
                (p, t)
            } else {
                rest.rsplit_once(' ').expect("digest")
            };
            ManifestEntry {
                kind,
                size: size.parse().expect("size number"),
                path: path.to_string(),
                digest_or_target: digest.to_string(),
            }
        })
        .collect()
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of everything `r` yields, lower-case hex.
pub fn sha256_reader(mut r: impl Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).expect("read for hashing");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A read-only loop device over an image, detached when dropped.
pub struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches `image` read-only (`losetup -f --show -r`). Returns `None` and reports a skip
    /// when loop devices are unavailable (not root, no losetup, no free device).
    pub fn attach(test: &str, image: &Path) -> Option<LoopDevice> {
        Self::attach_with(test, image, &["-r"])
    }

    /// Attaches `image` with the given losetup options (`losetup -f --show OPTS IMAGE`), for
    /// example `["-r", "--direct-io=on"]`, or `[]` for a writable device. Returns `None` and
    /// reports a skip when loop devices are unavailable.
    pub fn attach_with(test: &str, image: &Path, opts: &[&str]) -> Option<LoopDevice> {
        if !is_root() || !have_tool("losetup") {
            skip(test, "loop devices need root and losetup");
            return None;
        }
        // `losetup -f` races with other test processes attaching at the same time (EBUSY on
        // the device it picked): try again a few times before calling it unavailable.
        let mut out = Command::new("losetup")
            .args(["-f", "--show"])
            .args(opts)
            .arg(image)
            .output();
        for attempt in 1..10 {
            match &out {
                Ok(o) if !o.status.success() => {
                    std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
                    out = Command::new("losetup")
                        .args(["-f", "--show"])
                        .args(opts)
                        .arg(image)
                        .output();
                }
                _ => break,
            }
        }
        match out {
            Ok(o) if o.status.success() => Some(LoopDevice {
                path: PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            }),
            Ok(o) => {
                skip(
                    test,
                    &format!(
                        "losetup {opts:?} failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                );
                None
            }
            Err(e) => {
                skip(test, &format!("cannot run losetup: {e}"));
                None
            }
        }
    }

    /// The device node, e.g. /dev/loop3.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// An ntfs-3g FUSE mount of an image, run in the foreground (`-o no_detach`) so that the test
/// owns the daemon's process: it can kill it to make every read through the mount fail, which is
/// how the multipath tests get a real path failure. Unmounted (lazily, so a dead daemon cannot
/// block it) and the daemon reaped when dropped.
pub struct Ntfs3gMount {
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl Ntfs3gMount {
    /// Mounts `image` on a fresh directory under `parent` with extra ntfs-3g options (for
    /// example `"ro"`). Returns `None` and reports a skip when FUSE or ntfs-3g is unavailable.
    pub fn mount(test: &str, image: &Path, parent: &Path, opts: &str) -> Option<Ntfs3gMount> {
        if !is_root() || !have_tool("ntfs-3g") || !Path::new("/dev/fuse").exists() {
            skip(test, "FUSE mounts need root, /dev/fuse and ntfs-3g");
            return None;
        }
        let dir = parent.join(format!("ntfs3g-{}", std::process::id()));
        let dir = (0..)
            .map(|k| dir.with_extension(k.to_string()))
            .find(|d| fs::create_dir(d).is_ok())
            .expect("a free mount point name");
        let opts = if opts.is_empty() {
            "no_detach".to_string()
        } else {
            format!("{opts},no_detach")
        };
        let child = Command::new("ntfs-3g")
            .args(["-o", &opts])
            .arg(image)
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut mount = match child {
            Ok(c) => Ntfs3gMount {
                dir,
                child: Some(c),
            },
            Err(e) => {
                skip(test, &format!("cannot start ntfs-3g: {e}"));
                let _ = fs::remove_dir(&dir);
                return None;
            }
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !mount.is_mounted() {
            let exited = mount
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || std::time::Instant::now() > deadline {
                skip(test, &format!("ntfs-3g did not mount {}", image.display()));
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(mount)
    }

    fn is_mounted(&self) -> bool {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        let dir = self.dir.to_string_lossy();
        info.lines()
            .any(|l| l.split(' ').nth(4).is_some_and(|m| m == dir))
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Process id of the FUSE daemon.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Kills the FUSE daemon (SIGKILL) without unmounting: from now on reads through the mount
    /// fail (ENOTCONN on the mount, EIO on a loop device over a file in it).
    pub fn kill_daemon(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Unmounts cleanly and waits for the daemon to finish writing.
    pub fn unmount(mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

impl Drop for Ntfs3gMount {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_is_the_known_value() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(sha256_reader(&b""[..]), sha256_hex(b""));
    }
}
