//! Times the whole-tree listing of an NTFS image both ways: `walk_tree` (read_dir plus
//! metadata per entry) and the $MFT pass of `Ntfs::list_tree`, warm cache, and checks that
//! both give the same tree.
//!
//! ```text
//! cargo run --release -p ntfs --example list_tree_bench [IMAGE] [ROUNDS] [list-only|walk-only|open-only|open-read]
//! ```
//! IMAGE defaults to target/bench/inventory/ntfs-1000.img (1,000 VM directories).
//!
//! `open-read` times what an inventory does after the listing: `open()` and a whole read of
//! every file of at most 64 KiB, in listing order, on a freshly opened volume per round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fscore::{Filesystem, Tree, TreeLimits, walk_tree};
use lun::{DevicePath, ReadAtExt, Source};

fn open(image: &str) -> ntfs::Ntfs {
    let dev = DevicePath::open(image).unwrap_or_else(|e| panic!("{image}: {e}"));
    let src: Source = Arc::new(dev);
    ntfs::Ntfs::open(src).unwrap_or_else(|e| panic!("{image}: {e}"))
}

/// Minimum and median of `rounds` runs of `f`, each on a freshly opened volume (so the
/// reader's own caches start cold; the page cache is warm after the first round).
fn time(image: &str, rounds: usize, f: impl Fn(&ntfs::Ntfs) -> Tree) -> (Duration, Duration, Tree) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..rounds {
        let fs = open(image);
        let t = Instant::now();
        let tree = f(&fs);
        times.push(t.elapsed());
        last = Some(tree);
    }
    times.sort();
    (
        times[0],
        times[times.len() / 2],
        last.expect("at least one round"),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args().skip(1);
    let image = args
        .next()
        .unwrap_or_else(|| "target/bench/inventory/ntfs-1000.img".into());
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(20);
    let limits = TreeLimits::default();
    let mode = args.next();
    if mode.as_deref() == Some("open-only") {
        // Baseline for CPU-time measurements (perf stat): opening alone.
        let (min, med, _) = time(&image, rounds, |_| Tree::default());
        println!("open: min {:.2} ms, median {:.2} ms", ms(min), ms(med));
        return;
    }
    if mode.as_deref() == Some("open-read") {
        open_read(&image, rounds, &limits);
        return;
    }
    if mode.as_deref() == Some("walk-only") {
        // The recursive walk alone (read_dir and metadata per entry), for perf stat.
        let (min, med, _) = time(&image, rounds, |fs| walk_tree(fs, &limits));
        println!("walk_tree: min {:.2} ms, median {:.2} ms", ms(min), ms(med));
        return;
    }
    if mode.as_deref() == Some("list-only") {
        // For profilers: the $MFT pass alone.
        let (min, med, _) = time(&image, rounds, |fs| fs.list_tree(&limits));
        println!("list_tree: min {:.2} ms, median {:.2} ms", ms(min), ms(med));
        return;
    }
    // One untimed pass brings the image into the page cache.
    let _ = walk_tree(&open(&image), &limits);
    let (wmin, wmed, walked) = time(&image, rounds, |fs| walk_tree(fs, &limits));
    let (lmin, lmed, listed) = time(&image, rounds, |fs| fs.list_tree(&limits));
    println!(
        "{image}: {} entries, {} problems",
        listed.entries.len(),
        listed.problems.len()
    );
    println!(
        "walk_tree: min {:.2} ms, median {:.2} ms",
        ms(wmin),
        ms(wmed)
    );
    println!(
        "list_tree: min {:.2} ms, median {:.2} ms",
        ms(lmin),
        ms(lmed)
    );
    println!("speed-up (median): {:.1}x", ms(wmed) / ms(lmed));
    assert_eq!(
        walked.entries, listed.entries,
        "list_tree differs from walk_tree"
    );
    assert_eq!(walked.problems.len(), listed.problems.len());
}

/// Largest file `open-read` reads (the inventory reads small descriptors whole).
const SMALL_FILE: u64 = 64 << 10;

/// Times `open()` plus a whole read of every small file of the listing, per round on a fresh
/// volume (cold record cache). An untimed first round warms the page cache and checksums what
/// it reads, so a before/after comparison can check the bytes are the same.
fn open_read(image: &str, rounds: usize, limits: &TreeLimits) {
    let mut times = Vec::new();
    let mut files = 0usize;
    let mut bytes = 0u64;
    let mut sum = 0u64;
    for round in 0..=rounds {
        let fs = open(image);
        let tree = fs.list_tree(limits);
        let small: Vec<_> = tree
            .entries
            .iter()
            .filter(|e| e.entry.file_type == fscore::FileType::File && e.size <= SMALL_FILE)
            .map(|e| e.entry.id.clone())
            .collect();
        files = small.len();
        let t = Instant::now();
        for id in &small {
            let src = fs.open(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
            let data = src
                .read_vec(0, src.size() as usize)
                .unwrap_or_else(|e| panic!("{id:?}: {e}"));
            if round == 0 {
                bytes += data.len() as u64;
                sum = data
                    .iter()
                    .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
            }
        }
        if round > 0 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    let (min, med) = (times[0], times[times.len() / 2]);
    println!("{image}: {files} files <= 64 KiB, {bytes} bytes, checksum {sum:016x}");
    println!(
        "open+read: min {:.2} ms, median {:.2} ms, {:.2} us/file (median)",
        ms(min),
        ms(med),
        med.as_secs_f64() * 1e6 / files.max(1) as f64
    );
}
