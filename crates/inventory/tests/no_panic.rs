//! Property tests: no parser panics, hangs or over-allocates on arbitrary bytes.

mod common;

use inventory::{hyperv, vhd, vhdx, vmc, vmdk, vmsd, vmx};
use lun::MemSource;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn text_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = vmx::Vmx::parse(&bytes).map(|v| v.disks());
        let _ = vmdk::parse_descriptor(&bytes);
        let _ = vmdk::probe(&bytes);
        let _ = vmsd::parse(&bytes);
        let _ = hyperv::parse_xml(&bytes);
        let _ = hyperv::scan_vmcx(&bytes);
        let _ = vmc::parse(&bytes);
    }

    #[test]
    fn vmx_like_lines_never_panic(lines in proptest::collection::vec("[a-zA-Z0-9:._ ]{0,20}( ?= ?)\"?[|a-fA-F0-9 \\\\/:.\"]{0,30}", 0..50)) {
        let text = lines.join("\n");
        let _ = vmx::Vmx::parse(text.as_bytes()).map(|v| v.disks());
        let _ = vmdk::parse_descriptor(text.as_bytes());
    }

    #[test]
    fn sparse_headers_are_bounded(mut head in proptest::collection::vec(any::<u8>(), 512..=512), size in any::<u64>()) {
        head[..4].copy_from_slice(b"KDMV");
        if let vmdk::Probe::Sparse(h) = vmdk::probe(&head)
            && let Ok(Some((off, len))) = h.descriptor_range(size)
        {
            prop_assert!(len <= vmdk::MAX_DESCRIPTOR_BYTES);
            prop_assert!(off + len <= size);
        }
    }

    #[test]
    fn disk_headers_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        tail_cookie in any::<bool>(),
    ) {
        let mut b = bytes;
        if tail_cookie && b.len() >= 512 {
            let n = b.len();
            b[n - 512..n - 504].copy_from_slice(b"conectix");
            b[n - 512 + 60..n - 512 + 64].copy_from_slice(&4u32.to_be_bytes());
        }
        let _ = vhd::read(&MemSource::new("x", b.clone()));
        let _ = vhdx::read(&MemSource::new("x", b));
    }

    #[test]
    fn corrupted_vhdx_never_panics(flips in proptest::collection::vec((prop_oneof![0usize..(320 << 10), (1usize << 20)..((1 << 20) + (80 << 10))], any::<u8>()), 1..64)) {
        let mut img = inventory::synth::vhdx(1 << 30, Some(&[("relative_path", ".\\p.vhdx")]), false);
        for (at, v) in flips {
            img[at] = v;
        }
        let _ = vhdx::read(&MemSource::new("x", img));
    }

    #[test]
    fn any_disk_reference_scans(paths in proptest::collection::vec("\\PC{0,40}", 1..4), ntfs in any::<bool>()) {
        let mut b = if ntfs { common::ntfs("n", "0011") } else { common::vmfs("v", "5f9a1c2e-7d3b4a10-1e2f-000c29aabbcc") };
        let disks: Vec<(String, String)> = paths.iter().enumerate().map(|(n, p)| (format!("scsi0:{n}"), p.clone())).collect();
        b.file("/vm/vm.vmx", common::small_vmx("vm", &common::str_pairs(&disks)));
        b.file("/vm/vm.vmdk", common::delta_descriptor(1, 2, &paths[0], &paths[0], 8, false));
        let inv = inventory::scan(&[common::ds("l", b)]);
        prop_assert_eq!(inv.vms.len(), 1);
    }
}
