//! Reads a whole LUN (image file or block device) through `ReadAt` in large sequential chunks
//! and prints the throughput: the lunproxy side of tests/bench/lun-read.sh, which runs it next
//! to `dd bs=4M` on the same bytes.
//!
//! Usage: `lun_read PATH [PATH...] [--direct] [--chunk BYTES]` (several paths = multipath).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use lun::{AlignedBuf, Lun, MultipathPolicy, OpenOptions, ReadAt};

fn main() -> ExitCode {
    let mut paths = Vec::new();
    let mut direct = false;
    let mut chunk: usize = 4 << 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--direct" => direct = true,
            "--chunk" => match args.next().and_then(|v| v.parse().ok()) {
                Some(c) if c > 0 => chunk = c,
                _ => return usage("--chunk needs a positive byte count"),
            },
            "-h" | "--help" => return usage(""),
            _ if a.starts_with("--") => return usage(&format!("unknown option {a}")),
            _ => paths.push(PathBuf::from(a)),
        }
    }
    if paths.is_empty() {
        return usage("no path given");
    }
    let lun = match Lun::open(
        "bench",
        &paths,
        OpenOptions { direct },
        MultipathPolicy::default(),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // An aligned buffer lets O_DIRECT reads land in it without a bounce copy.
    let mut buf = AlignedBuf::new(chunk, 4096);
    let size = lun.size();
    let started = Instant::now();
    let mut offset = 0u64;
    let mut checksum = 0u64;
    while offset < size {
        let n = (size - offset).min(chunk as u64) as usize;
        if let Err(e) = lun.read_exact_at(offset, &mut buf[..n]) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        // Touch the data once so the read cannot be optimised into nothing.
        checksum = checksum.wrapping_add(u64::from(buf[n - 1]));
        offset += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "bytes={size} seconds={secs:.3} MB/s={:.1} direct={direct} chunk={chunk} checksum={checksum}",
        size as f64 / secs / 1e6
    );
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!("usage: lun_read PATH [PATH...] [--direct] [--chunk BYTES]");
    if problem.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
