//! Writing an inventory-shaped value (many short paths) as JSON: this crate against
//! serde_json, which it must equal byte for byte.
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;

#[derive(Serialize)]
struct File {
    name: String,
    path: String,
    lun: String,
    role: &'static str,
    size: u64,
    allocated: u64,
    missing: bool,
}

fn files() -> Vec<File> {
    (0..10_000)
        .map(|n| File {
            name: format!("vm{:04}_{}.vmdk", n / 10, n % 10),
            path: format!("/vm{:04}/vm{:04}_{}.vmdk", n / 10, n / 10, n % 10),
            lun: "/dev/disk/by-id/wwn-0x600a098038303053453f463045727a56".into(),
            role: "disk-descriptor",
            size: 42_949_672_960 + n,
            allocated: 4096 * n,
            missing: false,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let files = files();
    let len = serde_json::to_vec(&files).unwrap().len() as u64;
    assert_eq!(
        jsonline::to_vec(&files).unwrap(),
        serde_json::to_vec(&files).unwrap()
    );
    let mut g = c.benchmark_group("10,000 inventory files as JSON");
    g.throughput(Throughput::Bytes(len));
    let mut out = Vec::with_capacity(len as usize);
    g.bench_function("jsonline", |b| {
        b.iter(|| {
            out.clear();
            jsonline::to_vec_into(&mut out, &files).unwrap();
        })
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| {
            out.clear();
            serde_json::to_writer(&mut out, &files).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
