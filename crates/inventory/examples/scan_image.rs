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
    let (mut scan, mut fls) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let src: lun::Source = Arc::new(lun::DevicePath::open(&img).expect("open image"));
        let fs = Arc::new(ntfs::Ntfs::open(src).expect("NTFS"));
        let inv = inventory::scan(&[inventory::Datastore::new("bench", fs)]);
        scan.push(t.elapsed());
        let files: usize = inv.vms.iter().map(|v| v.files.len()).sum();
        assert!(!inv.vms.is_empty() || files == 0);
        drop(inv);
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
    let (s, f) = (median(&mut scan), median(&mut fls));
    println!(
        "runs {runs}: open+scan median {s:?} (min {:?}), fls -r median {f:?} (min {:?}), speed-up {:.1}x",
        scan[0],
        fls[0],
        f.as_secs_f64() / s.as_secs_f64()
    );
}
