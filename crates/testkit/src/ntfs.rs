//! NTFS fixture images built with `mkntfs` and filled through an `ntfs-3g` FUSE mount, plus the
//! oracle answers of three independent readers for each image, cached beside it:
//!
//! * `ntfs3g.tsv`: every file, directory, symlink and named stream as a read-only ntfs-3g mount
//!   shows it (type, size, inode = MFT record number, link count, SHA-256, symlink target), and
//!   the SHA-256 of the same file as `ntfscat` prints it;
//! * `fls.txt`: sleuthkit's `fls -r -p` listing of the image;
//! * `reparse.tsv`: Windows reparse points the builder planted, with the target as stored.
//!
//! A fixture is a directory under `target/fixtures/ntfs/` whose name carries
//! [`FIXTURE_VERSION`], so changing a builder and bumping the version rebuilds it. Multi-GiB
//! files are sparse both inside the volume and on the host.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Re-exported so tests can hash incrementally without their own sha2 dependency.
pub use sha2::{Digest, Sha256};

use crate::{cached_fixture, fixture_dir, have_tool, is_root, run, sha256_reader, skip};

/// Lower-case hex of a finished SHA-256.
pub fn hex_digest(h: Sha256) -> String {
    hex::encode(h.finalize())
}

/// Bump when any builder below changes, so cached images are rebuilt.
pub const FIXTURE_VERSION: &str = "v3";

/// The tools the builders and oracles shell out to.
const TOOLS: &[&str] = &[
    "mkntfs", "ntfs-3g", "ntfscat", "fls", "setfattr", "getfattr", "umount", "losetup", "filefrag",
];

/// Returns true when everything needed to build and check NTFS fixtures is present; otherwise
/// reports a skip (a failure under CI) and returns false.
pub fn tools_ready(test: &str) -> bool {
    if !is_root() {
        skip(test, "NTFS fixtures need root (FUSE mounts, loop devices)");
        return false;
    }
    if let Some(t) = TOOLS.iter().find(|t| !have_tool(t)) {
        skip(
            test,
            &format!("{t} is missing (packages ntfs-3g, sleuthkit, attr, e2fsprogs)"),
        );
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        skip(test, "/dev/fuse is missing");
        return false;
    }
    true
}

static MOUNT_SEQ: AtomicU64 = AtomicU64::new(0);

/// An ntfs-3g FUSE mount, unmounted (and its loop device released) when dropped, so a failing
/// test never leaves a mount behind.
pub struct FuseMount {
    dir: PathBuf,
    loop_dev: Option<PathBuf>,
    mounted: bool,
}

impl FuseMount {
    /// Mounts `image` with ntfs-3g and the given `-o` options (e.g. `["ro"]`,
    /// `["compression"]`).
    pub fn ntfs3g(image: &Path, options: &[&str]) -> io::Result<FuseMount> {
        let mut m = FuseMount::new_dir()?;
        m.mount(image, options)?;
        Ok(m)
    }

    /// Mounts `image` through a read-write loop device with `-o blkdev`, so that FIBMAP
    /// (`filefrag`) reports the clusters of files: the fragmenting builder needs it.
    pub fn ntfs3g_blkdev(image: &Path, options: &[&str]) -> io::Result<FuseMount> {
        let mut m = FuseMount::new_dir()?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "losetup {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        m.loop_dev = Some(dev.clone());
        let mut opts = vec!["blkdev"];
        opts.extend_from_slice(options);
        m.mount(&dev, &opts)?;
        Ok(m)
    }

    fn new_dir() -> io::Result<FuseMount> {
        let dir = fixture_dir("mnt").join(format!(
            "ntfs-{}-{}",
            std::process::id(),
            MOUNT_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        Ok(FuseMount {
            dir,
            loop_dev: None,
            mounted: false,
        })
    }

    fn mount(&mut self, what: &Path, options: &[&str]) -> io::Result<()> {
        let mut cmd = Command::new("ntfs-3g");
        if !options.is_empty() {
            cmd.arg("-o").arg(options.join(","));
        }
        let out = cmd.arg(what).arg(&self.dir).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ntfs-3g {}: {}",
                what.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        self.mounted = true;
        Ok(())
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if self.mounted {
            // ntfs-3g may still be flushing right after the last close: retry before giving up
            // to a lazy unmount.
            let mut done = false;
            for _ in 0..50 {
                let ok = Command::new("umount")
                    .arg(&self.dir)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    done = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if !done {
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// One object as the oracles see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OracleEntry {
    /// `f` file, `d` directory, `l` symlink, `s` named stream (`path` is then `FILE:STREAM`).
    pub kind: char,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// ntfs-3g inode number, which is the MFT record number.
    pub ino: u64,
    /// Link count.
    pub nlink: u64,
    /// SHA-256 of the contents as ntfs-3g reads them (`-` for directories and symlinks).
    pub sha256: String,
    /// SHA-256 of `ntfscat` output for the same file or stream (`-` where not applicable).
    pub ntfscat_sha256: String,
    /// Symlink target as ntfs-3g's readlink returns it (`-` otherwise).
    pub target: String,
    /// Absolute path inside the volume, `/` separated.
    pub path: String,
}

/// A built image with its cached oracle answers.
#[derive(Clone, Debug)]
pub struct NtfsImage {
    /// Fixture name (for messages).
    pub name: String,
    /// The volume image (a bare NTFS volume, no partition table).
    pub image: PathBuf,
    /// Everything ntfs-3g and ntfscat see, sorted by path.
    pub entries: Vec<OracleEntry>,
    /// Raw `fls -r -p` output.
    pub fls: String,
    /// Windows reparse points planted by the builder: (path, print name, substitute name).
    pub reparse: Vec<(String, String, String)>,
}

/// Live long names from `fls -r -p` output: `(path, inode)` of every allocated, non-metadata
/// entry, without `$OrphanFiles`, deleted entries (`*`), `$`-prefixed system files at the root,
/// or named streams (`path:stream`, returned separately by [`fls_streams`]).
pub fn fls_live_names(fls: &str) -> Vec<(String, u64)> {
    fls_lines(fls)
        .filter(|(name, _)| !name.contains(':'))
        .collect()
}

/// Named streams in `fls -r -p` output, as `path:stream`, excluding metadata files.
pub fn fls_streams(fls: &str) -> Vec<(String, u64)> {
    fls_lines(fls)
        .filter(|(name, _)| name.contains(':'))
        .collect()
}

fn fls_lines(fls: &str) -> impl Iterator<Item = (String, u64)> + '_ {
    fls.lines().filter_map(|line| {
        let (head, name) = line.split_once('\t')?;
        let mut words = head.split_whitespace();
        let _types = words.next()?;
        let mut addr = words.next()?;
        if addr == "*" {
            return None;
        }
        if let Some(a) = addr.strip_suffix(':') {
            addr = a;
        }
        let ino: u64 = addr.split('-').next()?.parse().ok()?;
        if name.starts_with('$') {
            return None;
        }
        // fls names a directory's own stream `DIR/.:STREAM`.
        let name = name.replace("/.:", ":");
        Some((format!("/{name}"), ino))
    })
}

/// Deterministic, incompressible bytes (xorshift64*), so images are reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic, highly compressible text.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("line {i:08} of fixture {seed}: the quick brown fox jumps\n").as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("create parent dir on the mount");
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all_at(data, offset)
        .unwrap_or_else(|e| panic!("write {} at {offset}: {e}", path.display()));
}

/// A sparse file of `size` bytes with `pieces` of data at the given offsets.
fn sparse_file(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) {
    File::create(path)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
    for (off, data) in pieces {
        write_at(path, *off, data);
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    // Values go through a `setfattr --restore` dump file: a large stream value would not fit on
    // a command line.
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let v = if value.is_empty() {
        "\"\"".to_string()
    } else {
        format!("0x{hex}")
    };
    let p = path.to_str().expect("fixture mount paths are UTF-8");
    assert!(
        p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\'),
        "xattr target paths must need no escaping: {p:?}"
    );
    let dump = fixture_dir("mnt").join(format!(
        "xattr-{}-{}.txt",
        std::process::id(),
        MOUNT_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&dump, format!("# file: {p}\n{name}={v}\n\n")).expect("write xattr dump");
    run(Command::new("setfattr").arg(format!("--restore={}", dump.display())));
    let _ = fs::remove_file(&dump);
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// A Windows symbolic-link reparse buffer (IO_REPARSE_TAG_SYMLINK, MS-FSCC 2.1.2.4).
fn symlink_reparse(subst: &str, print: &str, relative: bool) -> Vec<u8> {
    let (s, p) = (utf16(subst), utf16(print));
    let mut b = Vec::new();
    b.extend_from_slice(&0xA000_000Cu32.to_le_bytes());
    b.extend_from_slice(&((12 + s.len() + p.len()) as u16).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&(s.len() as u16).to_le_bytes());
    b.extend_from_slice(&(s.len() as u16).to_le_bytes());
    b.extend_from_slice(&(p.len() as u16).to_le_bytes());
    b.extend_from_slice(&u32::from(relative).to_le_bytes());
    b.extend_from_slice(&s);
    b.extend_from_slice(&p);
    b
}

/// A junction (mount point) reparse buffer (IO_REPARSE_TAG_MOUNT_POINT, MS-FSCC 2.1.2.5).
fn junction_reparse(subst: &str, print: &str) -> Vec<u8> {
    let (mut s, mut p) = (utf16(subst), utf16(print));
    s.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&[0, 0]);
    let mut b = Vec::new();
    b.extend_from_slice(&0xA000_0003u32.to_le_bytes());
    b.extend_from_slice(&((8 + s.len() + p.len()) as u16).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&((s.len() - 2) as u16).to_le_bytes());
    b.extend_from_slice(&(s.len() as u16).to_le_bytes());
    b.extend_from_slice(&((p.len() - 2) as u16).to_le_bytes());
    b.extend_from_slice(&s);
    b.extend_from_slice(&p);
    b
}

/// What goes into an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Every kind of object: sizes around cluster boundaries, a resident file, empty files,
    /// hard links, Interix and Windows symlinks, a junction, Unicode and 255-character names,
    /// 22 levels of directories, named streams, a small sparse file, deleted files.
    Mixed,
    /// One directory of 5,200 entries with long names (a multi-level index B+tree).
    BigDir,
    /// Files of hundreds of runs in one-cluster gaps ($ATTRIBUTE_LIST), and an $MFT grown into
    /// fragmented free space.
    Fragmented,
    /// Sparse files of several GiB (one over 4 GiB) with a little data.
    Sparse,
    /// LZNT1-compressed files in a directory with the compression flag.
    Compressed,
    /// A small image for the mutation tests: a few files, a directory with an index
    /// allocation, a file whose named streams overflow into an $ATTRIBUTE_LIST, a directory
    /// with one subdirectory.
    Small,
    /// Benchmark: 10,000 files in 100 directories (no oracle).
    Bench10k,
    /// Benchmark: one 1 GiB file of incompressible data (no oracle).
    Bench1GiB,
    /// Benchmark: one 4 GiB file, 1 GiB of it data and the rest holes (no oracle).
    Bench4GiB,
}

/// How to build one image.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Fixture name, part of the cache key.
    pub name: String,
    /// Volume size in bytes (the image file is sparse on the host).
    pub size: u64,
    /// NTFS cluster size in bytes.
    pub cluster: u32,
    /// Contents.
    pub layout: Layout,
}

impl Spec {
    /// The standard spec of a layout.
    pub fn of(layout: Layout, cluster: u32) -> Spec {
        let (base, size) = match layout {
            Layout::Mixed => ("mixed", 64 << 20),
            Layout::BigDir => ("bigdir", 64 << 20),
            Layout::Fragmented => ("fragmented", 24 << 20),
            Layout::Sparse => ("sparse", 64 << 20),
            Layout::Compressed => ("compressed", 64 << 20),
            Layout::Small => ("small", 8 << 20),
            Layout::Bench10k => ("bench10k", 256 << 20),
            Layout::Bench1GiB => ("bench1g", 1100 << 20),
            Layout::Bench4GiB => ("bench4g", 1200 << 20),
        };
        // A per-layout revision, so changing one builder rebuilds only its images.
        let rev = match layout {
            Layout::Fragmented => 2,
            _ => 1,
        };
        Spec {
            name: format!("{base}-c{cluster}-r{rev}"),
            size,
            cluster,
            layout,
        }
    }

    fn has_oracle(&self) -> bool {
        !matches!(
            self.layout,
            Layout::Bench10k | Layout::Bench1GiB | Layout::Bench4GiB
        )
    }
}

/// The mixed tree at a given cluster size (512, 4096 or 65536).
pub fn mixed(test: &str, cluster: u32) -> Option<NtfsImage> {
    image(test, &Spec::of(Layout::Mixed, cluster))
}

/// Builds (or reuses) the image of `spec` with its oracle answers. `None` after a reported skip.
pub fn image(test: &str, spec: &Spec) -> Option<NtfsImage> {
    if !tools_ready(test) {
        return None;
    }
    let dir = fixture_dir("ntfs").join(format!("{}-{FIXTURE_VERSION}", spec.name));
    cached_fixture(&dir, |tmp| build(spec, tmp));
    Some(load(&spec.name, &dir))
}

/// Path of the volume image of `spec`, built on first use, without reading the oracle files.
pub fn image_path(test: &str, spec: &Spec) -> Option<PathBuf> {
    if !tools_ready(test) {
        return None;
    }
    let dir = fixture_dir("ntfs").join(format!("{}-{FIXTURE_VERSION}", spec.name));
    cached_fixture(&dir, |tmp| build(spec, tmp));
    Some(dir.join("volume.img"))
}

fn load(name: &str, dir: &Path) -> NtfsImage {
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    let entries = read("ntfs3g.tsv")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.splitn(8, '\t').collect();
            assert_eq!(c.len(), 8, "bad oracle line {l:?}");
            OracleEntry {
                kind: c[0].chars().next().unwrap_or('?'),
                size: c[1].parse().expect("size"),
                ino: c[2].parse().expect("ino"),
                nlink: c[3].parse().expect("nlink"),
                sha256: c[4].to_string(),
                ntfscat_sha256: c[5].to_string(),
                target: c[6].to_string(),
                path: c[7].to_string(),
            }
        })
        .collect();
    let reparse = read("reparse.tsv")
        .lines()
        .filter_map(|l| {
            let c: Vec<&str> = l.splitn(3, '\t').collect();
            (c.len() == 3).then(|| (c[2].to_string(), c[0].to_string(), c[1].to_string()))
        })
        .collect();
    NtfsImage {
        name: name.to_string(),
        image: dir.join("volume.img"),
        entries,
        fls: read("fls.txt"),
        reparse,
    }
}

fn build(spec: &Spec, tmp: &Path) {
    fs::create_dir_all(tmp).expect("create fixture dir");
    let img = tmp.join("volume.img");
    File::create(&img)
        .and_then(|f| f.set_len(spec.size))
        .expect("create sparse image");
    run(Command::new("mkntfs")
        .args(["-F", "-q", "-f", "-c", &spec.cluster.to_string(), "-L"])
        .arg(format!("lp-{}", spec.name))
        .arg(&img));
    let mut reparse = Vec::new();
    {
        let mount = match spec.layout {
            Layout::Fragmented => FuseMount::ntfs3g_blkdev(&img, &[]),
            Layout::Compressed => FuseMount::ntfs3g(&img, &["compression"]),
            _ => FuseMount::ntfs3g(&img, &[]),
        }
        .expect("mount the new volume read-write");
        let root = mount.path();
        match spec.layout {
            Layout::Mixed => populate_mixed(root, spec.cluster, &mut reparse),
            Layout::BigDir => populate_bigdir(root),
            Layout::Fragmented => populate_fragmented(root),
            Layout::Sparse => populate_sparse(root),
            Layout::Compressed => populate_compressed(root),
            Layout::Small => populate_small(root),
            Layout::Bench10k => populate_bench10k(root),
            Layout::Bench1GiB => {
                let f = File::create(root.join("big.bin")).expect("create big.bin");
                let mut w = io::BufWriter::with_capacity(8 << 20, f);
                for i in 0..256u64 {
                    w.write_all(&noise(i, 4 << 20)).expect("write big.bin");
                }
                w.flush().expect("flush big.bin");
            }
            Layout::Bench4GiB => {
                let p = root.join("big4g.bin");
                File::create(&p)
                    .and_then(|f| f.set_len(4 << 30))
                    .expect("create big4g.bin");
                // 1 GiB of data in 8 pieces of 128 MiB, spread over the 4 GiB.
                let f = OpenOptions::new().write(true).open(&p).expect("open big4g");
                for piece in 0..8u64 {
                    for chunk in 0..32u64 {
                        let off = piece * (512 << 20) + chunk * (4 << 20);
                        f.write_all_at(&noise(piece * 100 + chunk, 4 << 20), off)
                            .expect("write big4g");
                    }
                }
            }
        }
    }
    let rep: String = reparse
        .iter()
        .map(|(p, print, subst): &(String, String, String)| format!("{print}\t{subst}\t{p}\n"))
        .collect();
    fs::write(tmp.join("reparse.tsv"), rep).expect("write reparse.tsv");
    if spec.has_oracle() {
        record_oracles(&img, tmp);
    }
}

fn record_oracles(img: &Path, out: &Path) {
    let mut entries = Vec::new();
    {
        let mount = FuseMount::ntfs3g(img, &["ro"]).expect("mount read-only for the oracle");
        walk_mount(mount.path(), mount.path(), &mut entries);
    }
    for e in &mut entries {
        if e.kind == 'f' || e.kind == 's' {
            e.ntfscat_sha256 = ntfscat_sha(img, &e.path);
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut tsv = String::new();
    for e in &entries {
        assert!(
            !e.path.contains(['\t', '\n']),
            "fixture names must not hold tabs or newlines: {:?}",
            e.path
        );
        tsv.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            e.kind, e.size, e.ino, e.nlink, e.sha256, e.ntfscat_sha256, e.target, e.path
        ));
    }
    fs::write(out.join("ntfs3g.tsv"), tsv).expect("write ntfs3g.tsv");
    let fls = run(Command::new("fls").args(["-r", "-p"]).arg(img));
    fs::write(out.join("fls.txt"), fls).expect("write fls.txt");
}

/// SHA-256 of `ntfscat` output for `path` (`FILE:STREAM` for a named stream).
pub fn ntfscat_sha(img: &Path, path: &str) -> String {
    let (file, stream) = match path.rsplit_once(':') {
        Some((f, s)) if !s.contains('/') => (f, Some(s)),
        _ => (path, None),
    };
    let mut cmd = Command::new("ntfscat");
    if let Some(s) = stream {
        cmd.args(["-a", "0x80", "-n", s]);
    }
    let mut child = cmd
        .arg(img)
        .arg(file.trim_start_matches('/'))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ntfscat");
    let sha = sha256_reader(child.stdout.take().expect("ntfscat stdout"));
    let ok = child.wait().is_ok_and(|s| s.success());
    if ok { sha } else { "ntfscat-failed".into() }
}

fn walk_mount(root: &Path, dir: &Path, out: &mut Vec<OracleEntry>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    for p in names {
        let md = fs::symlink_metadata(&p).expect("lstat on the oracle mount");
        let rel = format!(
            "/{}",
            p.strip_prefix(root).expect("under root").to_string_lossy()
        );
        let ft = md.file_type();
        let mut e = OracleEntry {
            kind: '?',
            size: 0,
            ino: md.ino(),
            nlink: md.nlink(),
            sha256: "-".into(),
            ntfscat_sha256: "-".into(),
            target: "-".into(),
            path: rel.clone(),
        };
        if ft.is_symlink() {
            e.kind = 'l';
            e.target = fs::read_link(&p)
                .expect("readlink")
                .to_string_lossy()
                .into_owned();
            e.size = md.len();
        } else if ft.is_dir() {
            e.kind = 'd';
        } else {
            e.kind = 'f';
            e.size = md.len();
            e.sha256 = sha256_reader(File::open(&p).expect("open on the oracle mount"));
        }
        let is_dir = ft.is_dir();
        let is_link = ft.is_symlink();
        out.push(e);
        if !is_link {
            for stream in list_streams(&p) {
                let value = run(Command::new("getfattr")
                    .args(["--only-values", "-n", &format!("user.{stream}")])
                    .arg(&p));
                out.push(OracleEntry {
                    kind: 's',
                    size: value.len() as u64,
                    ino: md.ino(),
                    nlink: md.nlink(),
                    sha256: crate::sha256_hex(&value),
                    ntfscat_sha256: "-".into(),
                    target: "-".into(),
                    path: format!("{rel}:{stream}"),
                });
            }
        }
        if is_dir {
            walk_mount(root, &p, out);
        }
    }
}

/// Named streams of one file on an ntfs-3g mount (its `user.*` extended attributes).
fn list_streams(p: &Path) -> Vec<String> {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-m", "^user\\."])
        .arg(p)
        .output()
        .expect("run getfattr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("user."))
        .map(str::to_string)
        .collect()
}

fn populate_mixed(root: &Path, cluster: u32, reparse: &mut Vec<(String, String, String)>) {
    let c = cluster as usize;
    let d = root.join("data");
    fs::create_dir_all(&d).expect("mkdir data");
    write(&d.join("empty.bin"), b"");
    write(
        &d.join("resident.txt"),
        b"small enough to live inside the MFT record\n",
    );
    write(&d.join("one_byte"), b"x");
    write(&d.join("cluster_minus_1"), &noise(1, c - 1));
    write(&d.join("cluster_exact"), &noise(2, c));
    write(&d.join("cluster_plus_1"), &noise(3, c + 1));
    write(&d.join("odd_65537"), &noise(4, 65537));
    write(&d.join("one_mib_plus_3"), &noise(5, (1 << 20) + 3));
    write(&d.join("three_mib.bin"), &noise(6, 3 << 20));
    write(&d.join("text_200k.txt"), &text(7, 200_000));
    let empty2 = root.join("Empty Dir");
    fs::create_dir_all(&empty2).expect("mkdir empty dir");
    write(&root.join("zero_len_at_root"), b"");

    // Hard links: one file, three names in three directories.
    write(&d.join("a.bin"), &noise(8, 12345));
    fs::create_dir_all(root.join("links")).expect("mkdir links");
    fs::hard_link(d.join("a.bin"), root.join("links/b.bin")).expect("hard link b");
    fs::hard_link(d.join("a.bin"), root.join("links/c.bin")).expect("hard link c");

    // Interix symlinks (ntfs-3g's default representation).
    std::os::unix::fs::symlink("/etc/hostname", root.join("links/interix_abs"))
        .expect("symlink abs");
    std::os::unix::fs::symlink("../data/a.bin", root.join("links/interix_rel"))
        .expect("symlink rel");
    std::os::unix::fs::symlink("does/not/exist", root.join("links/interix_dangling"))
        .expect("symlink dangling");

    // Windows reparse points, as Windows writes them.
    let plant = |name: &str,
                 buf: Vec<u8>,
                 print: &str,
                 subst: &str,
                 dir: bool,
                 reparse: &mut Vec<(String, String, String)>| {
        let p = root.join("links").join(name);
        if dir {
            fs::create_dir(&p).expect("mkdir junction");
        } else {
            write(&p, b"");
        }
        set_xattr(&p, "system.ntfs_reparse_data", &buf);
        reparse.push((format!("/links/{name}"), print.into(), subst.into()));
    };
    plant(
        "win_rel",
        symlink_reparse("..\\data\\a.bin", "..\\data\\a.bin", true),
        "..\\data\\a.bin",
        "..\\data\\a.bin",
        false,
        reparse,
    );
    plant(
        "win_abs",
        symlink_reparse(
            "\\??\\C:\\Users\\Public\\x.txt",
            "C:\\Users\\Public\\x.txt",
            false,
        ),
        "C:\\Users\\Public\\x.txt",
        "\\??\\C:\\Users\\Public\\x.txt",
        false,
        reparse,
    );
    plant(
        "junction",
        junction_reparse("\\??\\C:\\Windows", "C:\\Windows"),
        "C:\\Windows",
        "\\??\\C:\\Windows",
        true,
        reparse,
    );

    // Names: Unicode in several scripts, emoji (surrogate pairs), combining accents, 255
    // characters, names differing only in case (POSIX namespace).
    let u = root.join("names");
    fs::create_dir_all(&u).expect("mkdir names");
    write(&u.join("日本語のファイル.txt"), &text(9, 3000));
    write(&u.join("emoji_😀🎉.bin"), &noise(10, 5000));
    write(&u.join("cafe\u{301}_combining.txt"), b"e + U+0301\n");
    write(&u.join("café_precomposed.txt"), b"U+00E9\n");
    write(&u.join("Ωμέγα ünïcödé"), &noise(11, 777));
    write(
        &u.join("spaces and (parens) [x] {y} #%&.txt"),
        b"punctuation\n",
    );
    let long = format!("{}.txt", "L".repeat(251));
    write(&u.join(&long), &noise(12, 4097));
    fs::create_dir_all(u.join("D".repeat(255))).expect("255-char dir");
    write(&u.join("CaseTest.txt"), b"upper\n");
    write(&u.join("casetest.txt"), b"lower\n");

    // 22 levels.
    let mut deep = root.join("deep");
    for level in 1..=22 {
        deep = deep.join(format!("level{level:02}"));
    }
    write(&deep.join("leaf.txt"), b"at the bottom\n");

    // A directory whose index needs $INDEX_ALLOCATION at any cluster size.
    let many = root.join("docs");
    fs::create_dir_all(&many).expect("mkdir docs");
    for i in 0..300u64 {
        let len = (i * 37 % 3000) as usize;
        write(&many.join(format!("document-{i:04}.txt")), &text(i, len));
    }

    // Named streams: resident, non-resident, empty, on a directory.
    let s = root.join("streams");
    fs::create_dir_all(&s).expect("mkdir streams");
    let sf = s.join("host.txt");
    write(&sf, b"the unnamed stream\n");
    set_xattr(&sf, "user.small", b"tiny stream");
    set_xattr(&sf, "user.big", &noise(13, 60_000)); // xattr values stop at 64 KiB
    set_xattr(&sf, "user.empty", b"");
    set_xattr(&s, "user.dirstream", b"a stream on a directory");
    let sf2 = s.join("nonresident_host.bin");
    write(&sf2, &noise(14, 100_000));
    set_xattr(
        &sf2,
        "user.Zone.Identifier",
        b"[ZoneTransfer]\r\nZoneId=3\r\n",
    );

    // A small sparse file with data in the middle and at the end.
    let sp = root.join("sparse_small.bin");
    sparse_file(
        &sp,
        10 << 20,
        &[
            (3 << 20, noise(15, 70_000)),
            ((10 << 20) - 5, b"tail!".to_vec()),
        ],
    );

    // Deleted files: their records and index entries linger; they must not be listed.
    let del = root.join("deleted");
    fs::create_dir_all(&del).expect("mkdir deleted");
    for i in 0..20 {
        let p = del.join(format!("gone-{i}.bin"));
        write(&p, &noise(100 + i, 9000));
        if i % 2 == 0 {
            fs::remove_file(&p).expect("delete");
        }
    }
}

fn populate_bigdir(root: &Path) {
    let d = root.join("big");
    fs::create_dir_all(&d).expect("mkdir big");
    for i in 0..5200u64 {
        let name = format!("entry-{i:05}-{}.dat", "padding-to-make-index-entries-long");
        let data = if i % 500 == 0 {
            noise(i, 5000)
        } else {
            format!("{i}\n").into_bytes()
        };
        write(&d.join(name), &data);
    }
    write(&root.join("after.txt"), b"outside the big directory\n");
}

fn populate_fragmented(root: &Path) {
    // ntfs-3g allocates contiguously when it can, so free space must first be chopped into
    // one-cluster gaps: fill the volume with one-cluster files, then delete every other one
    // in physical order (name order is not physical order: the fill directory's own index
    // blocks interleave).
    let fill = root.join("fill");
    fs::create_dir_all(&fill).expect("mkdir fill");
    let block = noise(1, 4096);
    let mut n = 0u64;
    while fs::write(fill.join(format!("f{n:05}")), &block).is_ok() {
        n += 1;
    }
    let _ = fs::remove_file(fill.join(format!("f{n:05}")));
    let names: Vec<PathBuf> = (0..n).map(|i| fill.join(format!("f{i:05}"))).collect();
    let mut by_lcn: Vec<(u64, PathBuf)> = Vec::new();
    for chunk in names.chunks(500) {
        let out = Command::new("filefrag")
            .args(["-b4096", "-e"])
            .args(chunk)
            .output()
            .expect("run filefrag");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut current: Option<PathBuf> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("File size of ") {
                current = rest.split(" is ").next().map(PathBuf::from);
            } else if let (Some(f), Some(phys)) = (&current, line.trim().strip_prefix("0:")) {
                // "0:        0..       0:       4609..      4609:      1:"
                let lcn = phys
                    .split(':')
                    .nth(1)
                    .and_then(|p| p.trim().split("..").next())
                    .and_then(|p| p.trim().parse().ok());
                if let Some(lcn) = lcn {
                    by_lcn.push((lcn, f.clone()));
                }
                current = None;
            }
        }
    }
    by_lcn.sort();
    for (i, (_, p)) in by_lcn.iter().enumerate() {
        if i % 2 == 0 {
            fs::remove_file(p).expect("delete every other fill file");
        }
    }
    // Many new MFT records: the $MFT grows into the gaps, cluster by cluster.
    let many = root.join("many");
    fs::create_dir_all(&many).expect("mkdir many");
    // ntfs-3g grows the $MFT 16 records at a time; ~5,000 records give ~300 runs, more than its
    // base record holds, so the $MFT's own run list spills into an $ATTRIBUTE_LIST.
    for i in 0..5000u64 {
        if fs::write(many.join(format!("m{i:05}")), format!("{i}")).is_err() {
            break;
        }
    }
    // Large files into what is left: hundreds of one-cluster runs each.
    let frag = root.join("frag");
    fs::create_dir_all(&frag).expect("mkdir frag");
    write(&frag.join("runs_a.bin"), &noise(2, 1_500_000));
    write(&frag.join("runs_b.bin"), &noise(3, 1_000_003));
    // A sparse tail on a fragmented file: runs then a hole.
    let c = frag.join("runs_then_hole.bin");
    write(&c, &noise(4, 600_000));
    OpenOptions::new()
        .write(true)
        .open(&c)
        .and_then(|f| f.set_len(5 << 20))
        .expect("extend with a hole");
}

fn populate_sparse(root: &Path) {
    let gib: u64 = 1 << 30;
    sparse_file(
        &root.join("sparse_6g.bin"),
        6 * gib,
        &[
            (0, noise(1, 4096)),
            (gib + 123, noise(2, 100_000)),
            (4 * gib - 50, noise(3, 100)), // straddles the 4 GiB boundary
            (5 * gib, noise(4, 1 << 20)),
            (6 * gib - 10, b"0123456789".to_vec()),
        ],
    );
    sparse_file(
        &root.join("sparse_3g_holes_only_tail.bin"),
        3 * gib,
        &[(3 * gib - 4096, noise(5, 4096))],
    );
    sparse_file(&root.join("all_hole_1g.bin"), gib, &[]);
    write(&root.join("dense.bin"), &noise(6, 300_000));
}

fn populate_compressed(root: &Path) {
    let d = root.join("compressed");
    fs::create_dir_all(&d).expect("mkdir compressed");
    set_xattr(&d, "system.ntfs_attrib_be", &[0, 0, 0x08, 0]);
    let cu = 64 * 1024;
    write(&d.join("text_300k.txt"), &text(1, 300_000 + 123));
    write(&d.join("random_200k.bin"), &noise(2, 200_000 + 5));
    write(&d.join("exact_unit.txt"), &text(3, cu));
    write(&d.join("tiny.txt"), b"resident even when compressed\n");
    write(&d.join("empty.txt"), b"");
    let mut mixed = text(4, 5 * cu / 2);
    mixed.extend_from_slice(&noise(5, 3 * cu / 2 + 77));
    mixed.extend_from_slice(&text(6, cu + 1));
    write(&d.join("mixed.bin"), &mixed);
    // Zeros compress to almost nothing; a unit of all zeros may be stored as a hole.
    let mut zeros_then_text = vec![0u8; 3 * cu];
    zeros_then_text.extend_from_slice(&text(7, 10_000));
    write(&d.join("zeros_then_text.bin"), &zeros_then_text);
    sparse_file(
        &d.join("sparse_compressed.bin"),
        4 << 20,
        &[
            (cu as u64 + 100, text(8, 50_000)),
            ((3 << 20) + 7, noise(9, 70_000)),
        ],
    );
    let sub = d.join("sub");
    fs::create_dir_all(&sub).expect("mkdir sub");
    write(&sub.join("inherits.txt"), &text(10, 140_000));
    write(&root.join("uncompressed_neighbour.txt"), &text(11, 140_000));
}

fn populate_small(root: &Path) {
    write(&root.join("hello.txt"), b"hello, world\n");
    write(&root.join("data.bin"), &noise(1, 40_000));
    let idx = root.join("indexed");
    fs::create_dir_all(&idx).expect("mkdir indexed");
    for i in 0..60u64 {
        write(
            &idx.join(format!("file-with-a-longish-name-{i:03}.txt")),
            &text(i, 2000),
        );
    }
    let loopdir = root.join("loopdir");
    fs::create_dir_all(loopdir.join("child")).expect("mkdir loopdir/child");
    write(&loopdir.join("child/inner.txt"), b"inner\n");
    // Enough named streams to overflow the base record into an $ATTRIBUTE_LIST.
    let al = root.join("attrlist.txt");
    write(&al, &noise(2, 9000));
    for i in 0..40 {
        set_xattr(&al, &format!("user.stream{i:02}"), &text(i, 100));
    }
}

fn populate_bench10k(root: &Path) {
    for d in 0..100u64 {
        let dir = root.join(format!("dir{d:03}"));
        fs::create_dir_all(&dir).expect("mkdir bench dir");
        for f in 0..100u64 {
            write(
                &dir.join(format!("file{f:03}.dat")),
                format!("{d}/{f}\n").as_bytes(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fls_parsing_keeps_live_long_names() {
        let fls = "r/r 4-128-1:\t$AttrDef\nr/r 66-128-2:\tbig\nr/r 66-128-4:\tbig:s1\n\
                   d/d 64-144-2:\td\nr/r * 70-128-2:\td/gone\nV/V 69:\t$OrphanFiles\n\
                   -/r * 16:\t$OrphanFiles/OrphanFile-16\n";
        assert_eq!(
            fls_live_names(fls),
            vec![("/big".to_string(), 66), ("/d".to_string(), 64)]
        );
        assert_eq!(fls_streams(fls), vec![("/big:s1".to_string(), 66)]);
    }

    #[test]
    fn reparse_buffers_have_consistent_lengths() {
        let b = symlink_reparse("a", "a", true);
        assert_eq!(u16::from_le_bytes([b[4], b[5]]) as usize, b.len() - 8);
        let j = junction_reparse("\\??\\C:\\x", "C:\\x");
        assert_eq!(u16::from_le_bytes([j[4], j[5]]) as usize, j.len() - 8);
    }
}
