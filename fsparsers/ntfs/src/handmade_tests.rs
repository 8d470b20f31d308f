//! Hand-made corruptions of a small mkntfs image: each patches one structure the way a broken
//! or hostile volume would, and checks for a clear error (or correct data), never a hang.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fscore::{FileId, Filesystem, FsError, TreeLimits};
use lun::{MemSource, Source};

use crate::record::{self, AT_ATTRIBUTE_LIST, AT_DATA, AttrBody};
use crate::volume::Ntfs;

/// Unmounts a FUSE mount when dropped, so a failing builder never leaves it behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A 24 MiB volume with 512-byte clusters: `loopdir/{child,sub/}`, `a.txt`, and `frag.bin`,
/// fragmented enough that its run list overflows into an $ATTRIBUTE_LIST.
fn fixture(test: &str) -> Option<PathBuf> {
    if !testkit::have_tool("mkntfs") || !testkit::have_tool("ntfs-3g") || !testkit::is_root() {
        testkit::skip(test, "needs root, mkntfs and ntfs-3g");
        return None;
    }
    let path = testkit::fixture_dir("ntfs-reader").join("handmade-c512-v1.img");
    Some(testkit::cached_fixture(&path, build))
}

fn build(img: &Path) {
    std::fs::File::create(img)
        .and_then(|f| f.set_len(24 << 20))
        .expect("create image");
    testkit::run(
        Command::new("mkntfs")
            .args(["-F", "-q", "-f", "-c", "512", "-L", "HAND"])
            .arg(img),
    );
    let dir = tempfile_dir();
    testkit::run(Command::new("ntfs-3g").arg(img).arg(&dir));
    let mount = Mount(dir.clone());
    std::fs::create_dir_all(dir.join("loopdir/sub")).unwrap();
    std::fs::write(dir.join("loopdir/child"), b"child data").unwrap();
    std::fs::write(dir.join("a.txt"), b"hello").unwrap();
    // Fill the volume with 1 KiB files, free every other one, and write a file into the gaps.
    let stat = nix_free_bytes(&dir);
    let filler = stat.saturating_sub(3 << 20);
    std::fs::write(dir.join("filler"), vec![0x5Au8; filler as usize]).unwrap();
    let mut small = Vec::new();
    for i in 0..4000 {
        let p = dir.join(format!("s{i}"));
        if std::fs::write(&p, [i as u8; 1024]).is_err() {
            let _ = std::fs::remove_file(&p);
            break;
        }
        small.push(p);
    }
    // Name order is not physical order: free every other file in device order (found with
    // this reader's own extent maps) so that free space is chopped into two-cluster gaps.
    drop(mount);
    let fs = open_bytes(std::fs::read(img).unwrap()).unwrap();
    let mut by_offset: Vec<(u64, &PathBuf)> = small
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let id = fs.lookup(&format!("/s{i}")).ok()?;
            match fs.extents(&id).ok()? {
                fscore::FileMapping::Mapped(m) => Some((m.extents().first()?.physical?, p)),
                _ => None,
            }
        })
        .collect();
    by_offset.sort();
    testkit::run(Command::new("ntfs-3g").arg(img).arg(&dir));
    let mount = Mount(dir.clone());
    for (_, p) in by_offset.iter().step_by(2) {
        std::fs::remove_file(p).unwrap();
    }
    // Written piece by piece until the gaps run out: any prefix of the pattern will do.
    let frag: Vec<u8> = (0..small.len() / 2 * 1024)
        .map(|i| (i % 253) as u8)
        .collect();
    let mut f = std::fs::File::create(dir.join("frag.bin")).unwrap();
    for piece in frag.chunks(1024) {
        if std::io::Write::write_all(&mut f, piece).is_err() {
            break;
        }
    }
    drop(f);
    drop(mount);
    let _ = std::fs::remove_dir(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ntfs-handmade-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn nix_free_bytes(dir: &Path) -> u64 {
    let out = testkit::run(Command::new("df").args(["-B1", "--output=avail"]).arg(dir));
    String::from_utf8_lossy(&out)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

fn open_bytes(bytes: Vec<u8>) -> Result<Ntfs, crate::NtfsError> {
    let src: Source = Arc::new(MemSource::new("handmade", bytes));
    Ntfs::open(src)
}

/// Rewrites MFT record `no` of `img`: undoes the fixups, lets `f` edit the plain record, and
/// applies the fixups again so that only the intended change is seen.
pub(crate) fn patch_record(img: &mut [u8], fs: &Ntfs, no: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let rs = fs.boot_sector().mft_record_size as usize;
    let off = fs.record_offset_for_tests(no) as usize;
    let mut rec = img[off..off + rs].to_vec();
    record::apply_fixups(&mut rec).unwrap();
    f(&mut rec);
    let usa = u16::from_le_bytes([rec[4], rec[5]]) as usize;
    for i in 1..rs / 512 + 1 {
        let end = i * 512 - 2;
        rec[usa + 2 * i] = rec[end];
        rec[usa + 2 * i + 1] = rec[end + 1];
        rec[end] = rec[usa];
        rec[end + 1] = rec[usa + 1];
    }
    img[off..off + rs].copy_from_slice(&rec);
}

fn image(test: &str) -> Option<(Vec<u8>, Ntfs)> {
    let path = fixture(test)?;
    let bytes = std::fs::read(path).unwrap();
    let fs = open_bytes(bytes.clone()).unwrap();
    Some((bytes, fs))
}

/// Byte offset inside a record of the index entry named `name` in the $INDEX_ROOT.
fn root_entry_offset(rec: &[u8], name: &str) -> usize {
    let hdr = record::parse_file_header(rec).unwrap();
    let attrs = record::parse_attributes(rec, &hdr, 0, u64::MAX).unwrap();
    let root = attrs.iter().find(|a| a.type_code == 0x90).unwrap();
    let voff = root.offset_in_record
        + u16::from_le_bytes([
            rec[root.offset_in_record + 0x14],
            rec[root.offset_in_record + 0x15],
        ]) as usize;
    let mut e = voff
        + 0x10
        + u32::from_le_bytes(rec[voff + 0x10..voff + 0x14].try_into().unwrap()) as usize;
    let want: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    loop {
        let len = u16::from_le_bytes([rec[e + 8], rec[e + 9]]) as usize;
        assert!(rec[e + 12] & 2 == 0, "no entry {name}");
        let n = rec[e + 0x50] as usize;
        if rec[e + 0x52..e + 0x52 + 2 * n] == want[..] {
            return e;
        }
        e += len;
    }
}

#[test]
fn pristine_fixture_reads_back() {
    let Some((_, fs)) = image("pristine_fixture_reads_back") else {
        return;
    };
    let id = fs.lookup("/loopdir/CHILD").unwrap();
    let src = fs.open(&id).unwrap();
    let mut b = vec![0u8; 10];
    src.read_exact_at(0, &mut b).unwrap();
    assert_eq!(&b, b"child data");
    let frag = fs.lookup("/frag.bin").unwrap();
    let f = fs.load_file(frag.ino).unwrap();
    assert!(
        f.attrs.iter().any(|a| a.type_code == AT_ATTRIBUTE_LIST),
        "frag.bin has no attribute list"
    );
    let src = fs.open(&frag).unwrap();
    let mut data = vec![0u8; src.size() as usize];
    src.read_exact_at(0, &mut data).unwrap();
    assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
}

#[test]
fn directory_that_contains_itself_or_its_parent() {
    let Some((img, fs)) = image("directory_that_contains_itself_or_its_parent") else {
        return;
    };
    let loopdir = fs.lookup("/loopdir").unwrap().ino;
    for (target, is_dir) in [(loopdir, true), (loopdir, false), (5, true)] {
        let mut bytes = img.clone();
        patch_record(&mut bytes, &fs, loopdir, |rec| {
            let e = root_entry_offset(rec, "sub");
            let seq = if target == 5 { 5u64 } else { 1 };
            rec[e..e + 8].copy_from_slice(&(target | (seq << 48)).to_le_bytes());
            let flags = u32::from_le_bytes(rec[e + 0x48..e + 0x4C].try_into().unwrap());
            let flags = if is_dir {
                flags | 0x1000_0000
            } else {
                flags & !0x1000_0000
            };
            rec[e + 0x48..e + 0x4C].copy_from_slice(&flags.to_le_bytes());
        });
        let bad = open_bytes(bytes).unwrap();
        // The index lies, the records do not: the $MFT pass lists loopdir/sub where its
        // $FILE_NAME puts it, once, and terminates.
        let t = bad
            .list_tree_from_mft(&TreeLimits::default())
            .expect("records decode");
        let subs = (0..t.entries.len() as u32)
            .filter(|&i| t.path(i) == "/loopdir/sub")
            .count();
        assert_eq!(subs, 1);
        let r = bad.read_dir(&FileId::new(loopdir));
        if target == loopdir && !is_dir {
            // Listed as a file: no walk can loop through it, and reading it fails clearly.
            let entries = r.unwrap();
            let sub = entries.iter().find(|e| e.name == "sub").unwrap();
            assert!(bad.open(&sub.id).is_err());
        } else {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("corrupt index entry") && e.contains("\"sub\""),
                "{e}"
            );
        }
    }
}

#[test]
fn attribute_list_that_loops() {
    let Some((img, fs)) = image("attribute_list_that_loops") else {
        return;
    };
    let frag = fs.lookup("/frag.bin").unwrap().ino;
    let f = fs.load_file(frag).unwrap();
    let list = f
        .attrs
        .iter()
        .find(|a| a.type_code == AT_ATTRIBUTE_LIST)
        .unwrap()
        .clone();
    let a_txt = fs.lookup("/a.txt").unwrap().ino;
    // Rewrites the $DATA entries of the list (resident in the record, or in its clusters).
    let rewrite = |list: &mut [u8], redirect: u64| {
        let mut o = 0usize;
        while o + 0x18 <= list.len() {
            let t = u32::from_le_bytes(list[o..o + 4].try_into().unwrap());
            let len = u16::from_le_bytes([list[o + 4], list[o + 5]]) as usize;
            if t == 0 || len == 0 {
                break;
            }
            if t == AT_DATA {
                let r = u64::from_le_bytes(list[o + 0x10..o + 0x18].try_into().unwrap());
                let seq = if redirect == frag { r >> 48 } else { 1 };
                list[o + 0x10..o + 0x18].copy_from_slice(&(redirect | (seq << 48)).to_le_bytes());
            }
            o += len;
        }
    };
    // (a) every entry pointing back at the base record: the list loops onto itself and the
    // extents it named are missing; (b) entries naming another file's record.
    for redirect in [frag, a_txt] {
        let mut bytes = img.clone();
        match &list.body {
            AttrBody::Resident(v) => {
                let at = list.offset_in_record;
                patch_record(&mut bytes, &fs, frag, |rec| {
                    let voff = at + u16::from_le_bytes([rec[at + 0x14], rec[at + 0x15]]) as usize;
                    rewrite(&mut rec[voff..voff + v.len()], redirect);
                });
            }
            AttrBody::NonResident(nr) => {
                let cs = fs.boot_sector().cluster_size;
                let run = nr.runs[0];
                let start = (run.lcn.unwrap() * cs) as usize;
                let len = (nr.data_size.min(run.len * cs)) as usize;
                rewrite(&mut bytes[start..start + len], redirect);
            }
        }
        let bad = open_bytes(bytes).unwrap();
        let id = bad.lookup("/frag.bin").unwrap();
        let e: FsError = match bad.open(&id) {
            Ok(src) => {
                // Either an error or, never, wrong data.
                let mut data = vec![0u8; src.size() as usize];
                match src.read_exact_at(0, &mut data) {
                    Ok(()) => panic!("frag.bin read despite a broken attribute list"),
                    Err(e) => e.into(),
                }
            }
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(msg.contains("corrupt"), "{msg}");
        assert!(msg.contains(&format!("MFT record {frag}")), "{msg}");
    }
}

#[test]
fn record_claiming_a_4_gib_attribute_and_runs_past_the_device() {
    let Some((img, fs)) = image("record_claiming_a_4_gib_attribute") else {
        return;
    };
    let child = fs.lookup("/loopdir/child").unwrap().ino;
    let filler = fs.lookup("/filler").unwrap().ino;
    // The child's resident $DATA claims a 4 GiB attribute length, then a 4 GiB value.
    for field in [0x04usize, 0x10] {
        let mut bytes = img.clone();
        patch_record(&mut bytes, &fs, child, |rec| {
            let hdr = record::parse_file_header(rec).unwrap();
            let attrs = record::parse_attributes(rec, &hdr, 0, u64::MAX).unwrap();
            let d = attrs
                .iter()
                .find(|a| a.type_code == AT_DATA)
                .unwrap()
                .offset_in_record;
            rec[d + field..d + field + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        });
        let bad = open_bytes(bytes).unwrap();
        let e = bad
            .open(&FileId::new(child))
            .err()
            .expect("4 GiB attribute accepted");
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
    // The filler's run list moved past the end of the device.
    let mut bytes = img.clone();
    patch_record(&mut bytes, &fs, filler, |rec| {
        let hdr = record::parse_file_header(rec).unwrap();
        let attrs = record::parse_attributes(rec, &hdr, 0, u64::MAX).unwrap();
        let d = attrs
            .iter()
            .find(|a| a.type_code == AT_DATA)
            .unwrap()
            .offset_in_record;
        let mp = d + u16::from_le_bytes([rec[d + 0x20], rec[d + 0x21]]) as usize;
        let len_size = (rec[mp] & 0x0F) as usize;
        // A 4-byte LCN of 0x7fffff00.
        rec[mp] = 0x40 | len_size as u8;
        rec[mp + 1 + len_size..mp + 5 + len_size].copy_from_slice(&0x7fff_ff00u32.to_le_bytes());
        rec[mp + 5 + len_size] = 0;
    });
    let bad = open_bytes(bytes).unwrap();
    let e = bad
        .open(&FileId::new(filler))
        .err()
        .expect("run past the device accepted");
    assert!(e.to_string().contains("past the end of the volume"), "{e}");
}

#[test]
fn torn_mft_record_is_a_clear_error() {
    let Some((mut img, fs)) = image("torn_mft_record_is_a_clear_error") else {
        return;
    };
    let child = fs.lookup("/loopdir/child").unwrap().ino;
    let off = fs.record_offset_for_tests(child) as usize;
    img[off + 1022] ^= 0xFF;
    let bad = open_bytes(img).unwrap();
    let e = bad.metadata(&FileId::new(child)).unwrap_err().to_string();
    assert!(
        e.contains("update sequence mismatch") && e.contains(&format!("MFT record {child}")),
        "{e}"
    );
}

#[test]
fn list_tree_equals_walk_tree_on_the_handmade_volume() {
    // 512-byte clusters (records span clusters), an attribute-listed file, thousands of
    // deleted records.
    let Some((_, fs)) = image("list_tree_equals_walk_tree_on_the_handmade_volume") else {
        return;
    };
    for include_hidden in [false, true] {
        let limits = TreeLimits {
            include_hidden,
            ..TreeLimits::default()
        };
        let walked = fscore::walk_tree(&fs, &limits);
        let listed = fs.list_tree_from_mft(&limits).expect("no fallback");
        assert_eq!(walked.entries, listed.entries);
        assert_eq!(walked.problems.len(), listed.problems.len());
        assert!((0..listed.entries.len() as u32).any(|i| listed.path(i) == "/frag.bin"));
    }
}
