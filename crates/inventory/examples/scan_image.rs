//! Times `ntfs::Ntfs::open` + `inventory::scan` of an NTFS image against `fls -r` on the same
//! image, interleaved in one run so both sides see the same machine load.
//!
//! `cargo run --release -p inventory --example scan_image -- IMAGE [RUNS]`

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let img = args.next().expect("usage: scan_image IMAGE [RUNS]");
    let runs: usize = args.next().map(|r| r.parse().expect("RUNS")).unwrap_or(11);
    let (mut scan, mut single, mut fls) = (Vec::new(), Vec::new(), Vec::new());
    let one_thread = inventory::Limits {
        threads: 1,
        ..Default::default()
    };
    // One assembly thread per core (at most 4).
    let per_core = inventory::Limits {
        threads: 0,
        ..Default::default()
    };
    for _ in 0..runs {
        for (limits, out) in [
            (per_core.clone(), &mut scan),
            (one_thread.clone(), &mut single),
        ] {
            let t = Instant::now();
            let src: lun::Source = Arc::new(lun::DevicePath::open(&img).expect("open image"));
            let fs = Arc::new(ntfs::Ntfs::open(src).expect("NTFS"));
            let inv = inventory::scan_with(&[inventory::Datastore::new("bench", fs)], &limits);
            out.push(t.elapsed());
            let files: usize = inv.vms.iter().map(|v| v.files.len()).sum();
            assert!(!inv.vms.is_empty() || files == 0);
        }
        let t = Instant::now();
        let ok = Command::new("fls")
            .arg("-r")
            .arg(&img)
            .stdout(Stdio::null())
            .status()
            .expect("fls")
            .success();
        fls.push(t.elapsed());
        assert!(ok, "fls -r failed");
    }
    let (s, o, f) = (median(&mut scan), median(&mut single), median(&mut fls));
    println!(
        "runs {runs}: open+scan per-core threads {s:?} (min {:?}), one thread {o:?} (min {:?}), \
         fls -r median {f:?} (min {:?}), speed-up per-core {:.1}x, one thread {:.1}x",
        scan[0],
        single[0],
        fls[0],
        f.as_secs_f64() / s.as_secs_f64(),
        f.as_secs_f64() / o.as_secs_f64()
    );
}
