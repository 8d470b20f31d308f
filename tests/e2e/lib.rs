//! Helpers for the end-to-end tests: locate the release binaries, run them, build datastore
//! images with mkvmfs, wrap partition images in GPT or MBR partition tables.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of a release binary of the workspace (`tests/run` builds them before the tests).
pub fn release_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join("target"));
    let p = target.join("release").join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build --release` (tests/run does)",
        p.display()
    );
    p
}

/// Runs `lunproxy ARGS…` and returns its output, whatever the exit status.
pub fn lunproxy(args: &[&str]) -> Output {
    Command::new(release_bin("lunproxy"))
        .args(args)
        .output()
        .expect("start lunproxy")
}

/// Runs `lunproxy ARGS…`, asserts success, and returns stdout.
pub fn lunproxy_ok(args: &[&str]) -> Vec<u8> {
    let out = lunproxy(args);
    assert!(
        out.status.success(),
        "lunproxy {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A stamp of the release mkvmfs (size and mtime): part of the name of every image it built,
/// so images are rebuilt when the writer changes.
pub fn mkvmfs_stamp() -> String {
    testkit::stamp::file_stamp(&release_bin("mkvmfs"))
}

/// Runs the release `mkvmfs ARGS…` and panics with its stderr on failure.
pub fn mkvmfs<S: AsRef<OsStr>>(args: &[S]) {
    testkit::run(Command::new(release_bin("mkvmfs")).args(args));
}

/// Deterministic, incompressible bytes (splitmix64), seeded per file, so the source trees of
/// the images are reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Parses JSON Lines output.
pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Partition table kinds a LUN image can be wrapped in.
#[derive(Clone, Copy, Debug)]
pub enum Wrap {
    /// GPT with the partition at sector 2048.
    Gpt,
    /// MBR with the partition at sector 2048.
    Mbr,
}

/// Byte offset at which [`wrap_partition`] places the partition (sector 2048, as ESXi and
/// Windows do).
pub const PARTITION_START: u64 = 2048 * 512;

/// Builds `out`: a sparse LUN image with a GPT or MBR whose one partition, at sector 2048, holds
/// a copy of `partition` of type `gpt_type` / `mbr_type`. Uses sgdisk and sfdisk, so the table
/// is written by tools nobody here wrote.
pub fn wrap_partition(partition: &Path, out: &Path, wrap: Wrap, gpt_type: &str, mbr_type: &str) {
    let len = std::fs::metadata(partition).expect("partition image").len();
    let sectors = len.div_ceil(512);
    let total = PARTITION_START + sectors * 512 + (1 << 20);
    let f = std::fs::File::create(out).expect("create wrapped image");
    f.set_len(total).expect("size wrapped image");
    drop(f);
    match wrap {
        Wrap::Gpt => {
            testkit::run(Command::new("sgdisk").arg("-o").arg(out));
            testkit::run(
                Command::new("sgdisk")
                    .arg(format!("-n1:2048:+{sectors}"))
                    .arg(format!("-t1:{gpt_type}"))
                    .arg(out),
            );
        }
        Wrap::Mbr => {
            let mut child = Command::new("sfdisk")
                .arg("--no-reread")
                .arg("--no-tell-kernel")
                .arg("-q")
                .arg(out)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start sfdisk");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(
                    format!("label: dos\nstart=2048, size={sectors}, type={mbr_type}\n").as_bytes(),
                )
                .expect("feed sfdisk");
            assert!(child.wait().expect("sfdisk").success(), "sfdisk failed");
        }
    }
    testkit::run(
        Command::new("dd")
            .arg(format!("if={}", partition.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]),
    );
}
