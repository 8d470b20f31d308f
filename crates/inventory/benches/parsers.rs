//! Per-file cost of the configuration parsers on inputs shaped exactly as the datastore
//! benchmark (tests/bench/inventory.sh, `make_vm`) writes them: a 30-line ESXi `.vmx`, a
//! 20-line `vmfs` descriptor and a 3-line `.vmsd`, plus a Workstation-style `.vmx` with
//! escapes and a code page to keep the slow paths honest.
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use inventory::{vmdk, vmsd, vmx};

/// The `.vmx` of `make_vm dir vm0007 7`.
fn bench_vmx(n: u32) -> String {
    let name = format!("vm{n:04}");
    let (hi, lo) = (n >> 8, n & 255);
    let uuid = format!("56 4d {hi:02x} {lo:02x} 3a 5b 7c 1d-9e 2f {lo:02x} {hi:02x} 4b 5c 6d 7e");
    let tail = &uuid["56 4d ".len()..];
    format!(
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n\
displayName = \"{name}\"\nguestOS = \"ubuntu-64\"\nmemSize = \"4096\"\nnumvcpus = \"2\"\n\
nvram = \"{name}.nvram\"\nfirmware = \"efi\"\npciBridge0.present = \"TRUE\"\n\
scsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\n\
scsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"{name}.vmdk\"\nscsi0:0.deviceType = \"scsi-hardDisk\"\n\
scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"{name}_1.vmdk\"\nscsi0:1.deviceType = \"scsi-hardDisk\"\n\
ide1:0.present = \"TRUE\"\nide1:0.deviceType = \"cdrom-raw\"\nide1:0.fileName = \"auto detect\"\n\
ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"VM Network\"\n\
ethernet0.addressType = \"vpx\"\nethernet0.generatedAddress = \"00:50:56:01:{hi:02x}:{lo:02x}\"\n\
uuid.bios = \"{uuid}\"\nvc.uuid = \"52 {tail}\"\n\
sched.swap.derivedName = \"/vmfs/volumes/invbench/{name}/{name}-{n:08x}.vswp\"\n\
tools.syncTime = \"FALSE\"\nmigrate.hostLog = \"{name}-{n:08x}.hlog\"\n"
    )
}

/// The first disk descriptor of `make_vm dir vm0007 7`.
fn bench_descriptor(n: u32) -> String {
    let name = format!("vm{n:04}");
    let (hi, lo) = (n >> 8, n & 255);
    let cid = 0x10000 + n * 2;
    let sectors = 40u64 << 21;
    format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID={cid:08x}\nparentCID=ffffffff\n\
createType=\"vmfs\"\n\n# Extent description\nRW {sectors} VMFS \"{name}-flat.vmdk\"\n\n\
# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"5221\"\n\
ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.thinProvisioned = \"1\"\n\
ddb.uuid = \"60 00 C2 91 {hi:02x} {lo:02x} 00 00-1a 2b 3c 4d 5e 6f 70 81\"\n\
ddb.virtualHWVersion = \"19\"\n"
    )
}

const BENCH_VMSD: &str =
    ".encoding = \"UTF-8\"\nsnapshot.lastUID = \"1\"\nsnapshot.needConsolidate = \"FALSE\"\n";

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn bench(c: &mut Criterion) {
    let vmx_text = bench_vmx(7);
    let desc = bench_descriptor(7);
    let v = vmx::Vmx::parse(vmx_text.as_bytes()).unwrap();
    assert_eq!(v.disks().len(), 2);
    assert_eq!(
        vmdk::parse_descriptor(desc.as_bytes())
            .unwrap()
            .extents
            .len(),
        1
    );

    c.bench_function("vmx: Vmx::parse (benchmark .vmx, 30 lines)", |b| {
        b.iter(|| vmx::Vmx::parse(black_box(vmx_text.as_bytes())).unwrap())
    });
    c.bench_function("vmx: parse + accessors + disks() (as scan uses it)", |b| {
        b.iter(|| {
            let v = vmx::Vmx::parse(black_box(vmx_text.as_bytes())).unwrap();
            black_box((
                v.display_name(),
                v.guest_os(),
                v.mem_size_mb(),
                v.num_vcpus(),
                v.uuid_bios(),
                v.vc_uuid(),
                v.nvram(),
                v.extended_config(),
                v.swap_derived_name(),
                v.checkpoint_vm_state(),
                v.working_dir(),
            ));
            v.disks()
        })
    });
    let odd = data("workstation-odd.vmx");
    c.bench_function("vmx: Vmx::parse (workstation-odd.vmx, windows-1252)", |b| {
        b.iter(|| vmx::Vmx::parse(black_box(&odd)).unwrap())
    });
    let esxi = data("esxi7-web01.vmx");
    c.bench_function(
        "vmx: Vmx::parse + disks() (esxi7-web01.vmx, escapes)",
        |b| b.iter(|| vmx::Vmx::parse(black_box(&esxi)).unwrap().disks()),
    );
    c.bench_function(
        "vmdk: parse_descriptor (benchmark descriptor, 20 lines)",
        |b| b.iter(|| vmdk::parse_descriptor(black_box(desc.as_bytes())).unwrap()),
    );
    let mut head = desc.clone().into_bytes();
    head.resize(512, 0);
    c.bench_function("vmdk: probe (first 512 bytes of a descriptor)", |b| {
        b.iter(|| vmdk::probe(black_box(&head)))
    });
    c.bench_function("vmsd: parse (benchmark .vmsd)", |b| {
        b.iter(|| vmsd::parse(black_box(BENCH_VMSD.as_bytes())).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
