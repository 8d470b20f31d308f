//! Times whole-tree listings of a VMFS partition image, warm cache: the reference
//! [`fscore::walk_tree`] (read_dir + metadata per entry) against [`Filesystem::list_tree`], and
//! `metadata` of every `-flat.vmdk` alone (`vmfs_tree_bench [--verify] IMAGE [ROUNDS]`;
//! `--verify` first checks the map-free allocation count against the extent map's for every
//! entry).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fscore::{Filesystem, TreeLimits, walk_tree};
use lun::{DevicePath, Source};

/// CPU time of this thread (user + system): steadier than wall time on a shared machine.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Best wall and best CPU time of `rounds` runs of `f`, after one warm-up run.
fn best<T>(rounds: usize, mut f: impl FnMut() -> T) -> ((Duration, Duration), T) {
    let mut out = f();
    let (mut wall, mut cpu) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), thread_cpu());
        out = f();
        wall = wall.min(t.elapsed());
        cpu = cpu.min(thread_cpu() - c);
    }
    ((wall, cpu), out)
}

/// "wall ms (cpu ms)".
fn ms((wall, cpu): (Duration, Duration)) -> String {
    format!(
        "{:>8.2} ms wall {:>8.2} ms cpu",
        wall.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3
    )
}

/// Compares, for every entry (system files included), the allocation counted without an
/// extent map with the map's count. Returns how many entries were compared.
fn verify(fs: &vmfs::Vmfs) -> Result<usize, Box<dyn std::error::Error>> {
    let all = TreeLimits {
        include_hidden: true,
        ..TreeLimits::default()
    };
    let tree = walk_tree(fs, &all);
    for (i, e) in tree.entries.iter().enumerate() {
        let fd = fs.read_fd(e.entry.id.ino as u32)?;
        match fs.allocated_by_map_and_scan(&fd) {
            (Ok(a), Ok(b)) if a == b => {}
            (a, b) => {
                return Err(format!("{}: map {a:?}, scan {b:?}", tree.path(i as u32)).into());
            }
        }
    }
    Ok(tree.entries.len())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--verify");
    args.retain(|a| a != "--verify");
    let image = args
        .first()
        .ok_or("usage: vmfs_tree_bench [--verify] IMAGE [ROUNDS]")?;
    let rounds: usize = args.get(1).map(|r| r.parse()).transpose()?.unwrap_or(5);
    let lun: Source = Arc::new(DevicePath::open(image)?);
    let fs = vmfs::Vmfs::open(vec![lun])?;
    if check {
        println!(
            "{image}: allocation scan == map for {} entries",
            verify(&fs)?
        );
    }
    let limits = TreeLimits::default();

    let (t_walk, walked) = best(rounds, || walk_tree(&fs, &limits));
    let (t_list, listed) = best(rounds, || fs.list_tree(&limits));
    let same = walked.entries == listed.entries && walked.problems.len() == listed.problems.len();

    let flats: Vec<_> = listed
        .entries
        .iter()
        .filter(|e| e.entry.name.ends_with("-flat.vmdk"))
        .map(|e| e.entry.id.clone())
        .collect();
    let (t_meta, allocated) = best(rounds, || {
        flats
            .iter()
            .map(|id| fs.metadata(id).map_or(0, |m| m.allocated))
            .sum::<u64>()
    });

    let files = listed.entries.len();
    println!(
        "{image}: {files} entries, {} problems",
        listed.problems.len()
    );
    println!("  walk_tree {}", ms(t_walk));
    println!("  list_tree {}  (same as walk_tree: {same})", ms(t_list));
    println!(
        "  metadata of {} -flat.vmdk {}  ({allocated} bytes allocated)",
        flats.len(),
        ms(t_meta)
    );
    if !same {
        return Err("list_tree differs from walk_tree".into());
    }
    Ok(())
}
