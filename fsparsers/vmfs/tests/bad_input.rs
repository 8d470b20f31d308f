//! Hostile and corrupt input: hand-made pointer-block cycles, addresses past the device, a
//! directory containing itself, and random mutations of the LVM header, FS3 descriptor, FDs,
//! resource metadata and directories of the ESXi sample volumes. Every case must end in a
//! clear error (or a valid read), never a panic, a hang or an unbounded allocation.

mod common;

use std::sync::{Arc, OnceLock};

use fscore::{FileId, Filesystem};
use lun::{ReadAt, Source, Window};
use proptest::prelude::*;
use vmfs::Vmfs;

use common::{Overlay, exercise, source, walk};

struct Sample {
    base: Source,
    vmfs6: bool,
    dir: FileId,
    file5: FileId,
    /// (device offset, length) of the structures worth mutating.
    regions: Vec<(u64, u64)>,
    fd_file5: u64,
    dir_bytes: Vec<(u64, u64)>,
}

fn sample(name: &str) -> Option<&'static Sample> {
    static V5: OnceLock<Option<Sample>> = OnceLock::new();
    static V6: OnceLock<Option<Sample>> = OnceLock::new();
    let cell = if name == "vmfs5-esxi" { &V5 } else { &V6 };
    cell.get_or_init(|| {
        let img = testkit::real_image("bad_input", name)?;
        let base = source(&img);
        let fs = Vmfs::open(vec![base.clone()]).expect("clean open");
        let vmfs6 = fs.descriptor().is_vmfs6();
        let tree = walk(&fs, true);
        let dir = tree["/directory"].1.clone();
        let file5 = tree["/directory/file5"].1.clone();
        let mut regions = vec![
            (0x10_0000, 0x100),
            (0x10_0000 + if vmfs6 { 4096 } else { 512 }, 0xa0),
        ];
        let data = 0x110_0000u64;
        regions.push((data + 0x20_0000, 0x170));
        let fd_size = if vmfs6 { 8192 } else { 2048 };
        let mut fd_file5 = 0;
        for p in [
            "/directory",
            "/directory/file4",
            "/directory/file5",
            "/directory/symlink",
            "/.sbc.sf",
            "/.fdc.sf",
        ] {
            let addr = tree[p].1.ino as u32;
            let (_, off) = fs.fd_location(addr).unwrap();
            regions.push((off, fd_size));
            if p.ends_with("file5") {
                fd_file5 = off;
            }
        }
        let root_fd = fs.fd_location(4).unwrap().1;
        regions.push((root_fd, fd_size));
        let mut dir_bytes = Vec::new();
        for id in [&dir, &fs.root()] {
            if let Some(map) = fs.data_extents(id).unwrap() {
                for e in map.extents().iter().take(4) {
                    if let Some(p) = e.physical {
                        dir_bytes.push((p, e.length.min(0x1_2000)));
                    }
                }
            }
        }
        regions.extend(dir_bytes.iter().copied());
        for p in ["/.sbc.sf", "/.fdc.sf"] {
            let map = fs.data_extents(&tree[p].1).unwrap().unwrap();
            regions.push((map.extents()[0].physical.unwrap(), 0x60));
        }
        Some(Sample {
            base,
            vmfs6,
            dir,
            file5,
            regions,
            fd_file5,
            dir_bytes,
        })
    })
    .as_ref()
}

fn fd_meta(s: &Sample) -> u64 {
    s.fd_file5 + if s.vmfs6 { 4096 } else { 512 }
}

fn fd_addrs(s: &Sample) -> u64 {
    s.fd_file5 + if s.vmfs6 { 8192 - 2560 } else { 1024 }
}

/// Rewrites file5's FD: zero-level address type, length, block size, first address.
fn patch_fd(o: &mut Overlay, s: &Sample, zla: u32, len: u64, bs: u64, addr0: u64) {
    let m = fd_meta(s);
    o.patch(m + 0x44, &zla.to_le_bytes());
    o.patch(m + 0x14, &len.to_le_bytes());
    o.patch(m + 0x1c, &bs.to_le_bytes());
    if s.vmfs6 {
        o.patch(fd_addrs(s), &addr0.to_le_bytes());
    } else {
        o.patch(fd_addrs(s), &(addr0 as u32).to_le_bytes());
    }
}

fn with(o: Overlay) -> Vmfs {
    let src: Source = Arc::new(o);
    Vmfs::open(vec![src]).expect("open patched")
}

#[test]
fn pointer_block_cycle_is_detected() {
    for name in ["vmfs5-esxi", "vmfs6-esxi"] {
        let Some(s) = sample(name) else { return };
        let fs = Vmfs::open(vec![s.base.clone()]).unwrap();
        // A double-indirect file whose first pointer block names itself.
        let (pb_raw, kind, cluster, resource) = if s.vmfs6 {
            (2u64 | (1 << 6) | (3 << 56), 2u8, 1u64, 3u64)
        } else {
            (3u64, 3u8, 0, 0)
        };
        let (_, pb_off) = fs.resource_location(kind, cluster, resource).unwrap();
        let mut o = Overlay::new(s.base.clone());
        patch_fd(&mut o, s, 0x10D0, 4 << 30, 1 << 20, pb_raw);
        if s.vmfs6 {
            o.patch(pb_off, &pb_raw.to_le_bytes());
        } else {
            o.patch(pb_off, &(pb_raw as u32).to_le_bytes());
        }
        let fs = with(o);
        let err = fs.extents(&s.file5).unwrap_err().to_string();
        assert!(err.contains("referenced twice"), "{name}: {err}");
        assert!(fs.open(&s.file5).is_err());
        // metadata counts allocation without a map: the same loop is caught there, and the
        // tree listing reports the file as unreadable, as the reference walk does.
        let err = fs.metadata(&s.file5).unwrap_err().to_string();
        assert!(err.contains("referenced twice"), "{name}: metadata: {err}");
        common::check_list_tree(&fs, &common::tree_limits());
        let tree = fs.list_tree(&fscore::TreeLimits::default());
        assert!(
            tree.problems.iter().any(|p| matches!(
                p,
                fscore::TreeProblem::UnreadableFile { entry, .. }
                    if tree.entries[*entry as usize].entry.id == s.file5
            )),
            "{name}: {:?}",
            common::problems(&tree)
        );
        // Single-indirect: the same pointer block twice in the FD is a cross-link.
        let mut o = Overlay::new(s.base.clone());
        patch_fd(&mut o, s, 3, 32 << 30, 1 << 20, pb_raw);
        let second = fd_addrs(s) + if s.vmfs6 { 8 } else { 4 };
        if s.vmfs6 {
            o.patch(second, &pb_raw.to_le_bytes());
            o.patch(pb_off, &[0; 8]);
        } else {
            o.patch(second, &(pb_raw as u32).to_le_bytes());
            o.patch(pb_off, &[0; 4]);
        }
        let fs = with(o);
        let err = fs.extents(&s.file5).unwrap_err().to_string();
        assert!(err.contains("referenced twice"), "{name}: {err}");
        let err = fs.metadata(&s.file5).unwrap_err().to_string();
        assert!(err.contains("referenced twice"), "{name}: metadata: {err}");
    }
}

#[test]
fn address_past_the_device_is_refused() {
    for name in ["vmfs5-esxi", "vmfs6-esxi"] {
        let Some(s) = sample(name) else { return };
        let far = if s.vmfs6 {
            7u64 | (0x7FFF_FFFF << 15)
        } else {
            1u64 | (0x3FF_FFFF << 6)
        };
        let mut o = Overlay::new(s.base.clone());
        patch_fd(&mut o, s, 1, 8193, 1 << 20, far);
        let fs = with(o);
        let err = fs.extents(&s.file5).unwrap_err().to_string();
        assert!(err.contains("past the end"), "{name}: {err}");
        assert!(
            err.contains(&format!("{:#x}", s.file5.ino)),
            "{name}: error names the FD: {err}"
        );
        let err = fs.metadata(&s.file5).unwrap_err().to_string();
        assert!(err.contains("past the end"), "{name}: metadata: {err}");
        common::check_list_tree(&fs, &common::tree_limits());
        // An absurd length with a plain block map is refused too.
        let mut o = Overlay::new(s.base.clone());
        patch_fd(&mut o, s, 1, u64::MAX / 2, 1 << 20, 0);
        assert!(
            with(o)
                .metadata(&s.file5)
                .unwrap_err()
                .to_string()
                .contains("absurd")
        );
    }
}

#[test]
fn directory_containing_itself_is_refused() {
    for name in ["vmfs5-esxi", "vmfs6-esxi"] {
        let Some(s) = sample(name) else { return };
        let fs = Vmfs::open(vec![s.base.clone()]).unwrap();
        let map = fs.data_extents(&s.dir).unwrap().unwrap();
        let name_off = if s.vmfs6 { 0x18 } else { 0x0c };
        // Find the dirent of file1 on the device.
        let mut hit = None;
        for e in map.extents() {
            let Some(p) = e.physical else { continue };
            let mut b = vec![0; e.length.min(1 << 20) as usize];
            s.base.read_exact_at(p, &mut b).unwrap();
            if let Some(i) = b.windows(6).position(|w| w == b"file1\0") {
                hit = Some(p + i as u64 - name_off + 4);
                break;
            }
        }
        let addr_off = hit.expect("dirent of file1");
        for target in [s.dir.ino as u32, 4u32] {
            let mut o = Overlay::new(s.base.clone());
            o.patch(addr_off, &target.to_le_bytes());
            let fs = with(o);
            let err = fs.read_dir(&s.dir).unwrap_err().to_string();
            assert!(err.contains("contains itself"), "{name}: {err}");
        }
    }
}

#[test]
fn truncated_and_empty_devices_fail_cleanly() {
    for name in ["vmfs5-esxi", "vmfs6-esxi"] {
        let Some(s) = sample(name) else { return };
        for len in [
            0u64, 4096, 0x10_0000, 0x10_0200, 0x110_0000, 0x130_0000, 0x200_0000,
        ] {
            let w: Source = Arc::new(Window::new(s.base.clone(), 0, len, "cut").unwrap());
            let err = Vmfs::open(vec![w]).unwrap_err().to_string();
            assert!(!err.is_empty());
        }
    }
    assert!(Vmfs::open(vec![]).is_err());
}

fn mutate(name: &str, picks: &[(usize, u64, u8)]) {
    let Some(s) = sample(name) else { return };
    let mut o = Overlay::new(s.base.clone());
    for &(r, off, val) in picks {
        let (start, len) = s.regions[r % s.regions.len()];
        o.patch(start + off % len, &[val]);
    }
    let _ = exercise(vec![Arc::new(o)]);
}

fn dir_mutate(name: &str, picks: &[(u64, u32)]) {
    let Some(s) = sample(name) else { return };
    let mut o = Overlay::new(s.base.clone());
    for &(off, val) in picks {
        let (start, len) = s.dir_bytes[(off % s.dir_bytes.len() as u64) as usize];
        o.patch(
            start + (off / 7) % len.saturating_sub(4).max(1),
            &val.to_le_bytes(),
        );
    }
    let _ = exercise(vec![Arc::new(o)]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn vmfs5_mutations_never_panic(picks in proptest::collection::vec((0usize..64, 0u64..1 << 20, any::<u8>()), 1..12)) {
        mutate("vmfs5-esxi", &picks);
    }

    #[test]
    fn vmfs6_mutations_never_panic(picks in proptest::collection::vec((0usize..64, 0u64..1 << 20, any::<u8>()), 1..12)) {
        mutate("vmfs6-esxi", &picks);
    }

    #[test]
    fn directory_word_mutations_never_panic(
        picks in proptest::collection::vec((0u64..1 << 24, any::<u32>()), 1..6),
        v6 in any::<bool>(),
    ) {
        dir_mutate(if v6 { "vmfs6-esxi" } else { "vmfs5-esxi" }, &picks);
    }
}
