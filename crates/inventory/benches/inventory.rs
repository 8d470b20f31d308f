//! Inventory of a datastore with 1,000 VMs and 10,000 files, over the in-memory filesystem
//! (the parse and assembly cost without device I/O).
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, criterion_group, criterion_main};

/// 1,000 ESXi VM folders of 10 files each: .vmx, .nvram, .vmsd, 3 logs, 2 disks
/// (descriptor + flat extent).
fn datastore() -> inventory::Datastore {
    let mut b = common::vmfs("bench", "5f9a1c2e-7d3b4a10-1e2f-000c29aabbcc");
    for n in 0..1000 {
        let name = format!("vm{n:04}");
        let dir = common::esxi_vm(&mut b, &format!("/{name}"), &name, &[40, 100]);
        b.file(&format!("{dir}/vmware-2.log"), "older log\n");
    }
    common::ds("bench", b)
}

fn bench(c: &mut Criterion) {
    let ds = datastore();
    let inv = inventory::scan(std::slice::from_ref(&ds));
    assert_eq!(inv.vms.len(), 1000);
    assert_eq!(inv.vms.iter().map(|v| v.files.len()).sum::<usize>(), 10_000);
    c.bench_function("scan 1000 VMs / 10000 files (memfs)", |b| {
        b.iter(|| inventory::scan(std::slice::from_ref(&ds)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
