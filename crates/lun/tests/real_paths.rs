//! Multipath and restore-target behaviour on real files, loop devices and a FUSE mount whose
//! daemon dies while reads are in flight (see ../shared/design/fixtures.md, "Block devices").

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lun::{
    DeviceKind, DevicePath, Extent, ExtentMap, Lun, LunError, MultipathPolicy, OpenOptions,
    PathHealth, ReadAt, RestoreTarget,
};
use testkit::{LoopDevice, Ntfs3gMount, cached_fixture, fixture_dir, have_tool, run, skip};

const LUN_SIZE: u64 = 64 << 20;

/// The byte pattern of the test LUN: every 8-byte word holds a hash of its offset, so any
/// misplaced or stale read shows.
fn expected(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let pos = offset + i as u64;
        let word = (pos / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        *b = word.to_le_bytes()[(pos % 8) as usize];
    }
}

fn write_pattern(path: &Path, size: u64) {
    let mut f = File::create(path).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        let n = chunk.len().min((size - off) as usize);
        expected(off, &mut chunk[..n]);
        f.write_all(&chunk[..n]).unwrap();
        off += n as u64;
    }
    f.sync_all().unwrap();
}

/// A plain copy of the LUN and an NTFS volume holding another copy (`/lun.img`), built once.
fn fixture(test: &str) -> Option<(PathBuf, PathBuf)> {
    for tool in ["mkntfs", "ntfs-3g", "losetup"] {
        if !have_tool(tool) {
            skip(test, &format!("{tool} is not installed"));
            return None;
        }
    }
    let dir = fixture_dir("lun");
    let plain = cached_fixture(&dir.join("pattern-64m.img"), |p| write_pattern(p, LUN_SIZE));
    let mut skipped = false;
    let ntfs = cached_fixture(&dir.join("ntfs-holding-lun.img"), |p| {
        File::create(p)
            .unwrap()
            .set_len(LUN_SIZE + (48 << 20))
            .unwrap();
        run(Command::new("mkntfs")
            .args(["-F", "-q", "-f", "-L", "lunholder"])
            .arg(p));
        let Some(m) = Ntfs3gMount::mount(test, p, &fixture_dir("mnt"), "") else {
            skipped = true;
            return;
        };
        fs::copy(&plain, m.dir().join("lun.img")).unwrap();
        m.unmount();
    });
    if skipped {
        let _ = fs::remove_file(&ntfs);
        return None;
    }
    Some((plain, ntfs))
}

#[test]
fn a_real_path_failing_during_concurrent_reads_fails_over() {
    let test = "a_real_path_failing_during_concurrent_reads_fails_over";
    let Some((plain, ntfs)) = fixture(test) else {
        return;
    };
    let scratch = tempfile::tempdir_in(fixture_dir("mnt")).unwrap();
    // A fresh read-only mount: nothing of lun.img is in its page cache yet.
    let Some(mut mount) = Ntfs3gMount::mount(test, &ntfs, scratch.path(), "ro") else {
        return;
    };
    // Direct I/O from the loop device into the FUSE file, so the loop device cannot be served
    // from the FUSE page cache after the daemon is gone.
    let Some(fuse_path) = LoopDevice::attach_with(
        test,
        &mount.dir().join("lun.img"),
        &["-r", "--direct-io=on"],
    ) else {
        return;
    };
    let Some(plain_path) = LoopDevice::attach(test, &plain) else {
        return;
    };
    let policy = MultipathPolicy {
        retry_after: Duration::from_millis(100),
        ..Default::default()
    };
    let lun = Arc::new(
        Lun::open(
            "lun0",
            &[
                fuse_path.path().to_path_buf(),
                plain_path.path().to_path_buf(),
            ],
            OpenOptions { direct: true },
            policy,
        )
        .unwrap(),
    );
    assert_eq!(lun.size(), LUN_SIZE);
    assert!(lun.path_status()[0].preferred);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4u64)
        .map(|t| {
            let (lun, stop, reads) = (lun.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let chunk = 256u64 << 10;
                let chunks = LUN_SIZE / chunk;
                let (mut got, mut want) = (vec![0u8; chunk as usize], vec![0u8; chunk as usize]);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // Each reader walks the LUN in its own order, odd-sized so reads straddle
                    // sectors and O_DIRECT needs the bounce buffer too.
                    let off = ((t * 61 + n * 37) % chunks) * chunk + t * 512;
                    let len = (chunk - t * 512 - 4096 * (n % 3)) as usize;
                    lun.read_exact_at(off, &mut got[..len])
                        .unwrap_or_else(|e| panic!("reader {t} read {n}: {e}"));
                    expected(off, &mut want[..len]);
                    assert!(
                        got[..len] == want[..len],
                        "reader {t}: wrong bytes at {off}"
                    );
                    n += 1;
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let wait_reads = |count: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while reads.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "readers stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_reads(16);
    assert_eq!(lun.path_status()[0].state, PathHealth::Up);
    mount.kill_daemon();
    let at_kill = reads.load(Ordering::SeqCst);
    wait_reads(at_kill + 400);
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("a reader saw an error or wrong bytes");
    }
    let st = lun.path_status();
    assert_eq!(st[0].state, PathHealth::Down, "{st:?}");
    assert!(st[0].errors >= 1);
    let err = st[0].last_error.as_deref().unwrap_or_default();
    assert!(
        err.contains(&fuse_path.path().display().to_string()),
        "{err}"
    );
    assert!(
        err.contains("Input/output error") || err.contains("not connected"),
        "{err}"
    );
    assert_eq!(st[1].state, PathHealth::Up);
    assert!(st[1].preferred);
    // Probes after the back-off keep failing: the path stays down.
    std::thread::sleep(Duration::from_millis(150));
    let mut buf = vec![0u8; 4096];
    lun.read_exact_at(0, &mut buf).unwrap();
    assert_eq!(lun.path_status()[0].state, PathHealth::Down);
    drop(fuse_path);
    drop(mount);
}

#[test]
fn image_files_of_different_luns_are_refused() {
    let dir = tempfile::tempdir_in(fixture_dir("mnt")).unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let c = dir.path().join("c.img");
    write_pattern(&a, 8 << 20);
    fs::copy(&a, &b).unwrap();
    write_pattern(&c, (8 << 20) + 4096);
    // Same LUN through two files: accepted.
    let lun = Lun::open(
        "ok",
        &[a.clone(), b.clone()],
        OpenOptions::default(),
        Default::default(),
    )
    .unwrap();
    assert_eq!(lun.path_count(), 2);
    // Different size.
    let e = Lun::open(
        "x",
        &[a.clone(), c],
        OpenOptions::default(),
        Default::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(e, LunError::PathMismatch { .. }), "{e}");
    // Same size, one byte different in the middle of the LUN (a region the check samples).
    let f = fs::OpenOptions::new().write(true).open(&b).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xAA], 4 << 20).unwrap();
    drop(f);
    let e = Lun::open(
        "x",
        &[a.clone(), b.clone()],
        OpenOptions { direct: true },
        Default::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("not the same LUN"), "{e}");
    assert!(e.to_string().contains("b.img"), "{e}");
    // The same check through block devices.
    let test = "image_files_of_different_luns_are_refused";
    let (Some(la), Some(lb)) = (LoopDevice::attach(test, &a), LoopDevice::attach(test, &b)) else {
        return;
    };
    let e = Lun::open(
        "x",
        &[la.path().to_path_buf(), lb.path().to_path_buf()],
        OpenOptions::default(),
        Default::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("not the same LUN"), "{e}");
    let la2 = LoopDevice::attach(test, &a).unwrap();
    let lun = Lun::open(
        "ok",
        &[la.path().to_path_buf(), la2.path().to_path_buf()],
        OpenOptions { direct: true },
        Default::default(),
    )
    .unwrap();
    assert_eq!(lun.sector_size(), 512);
    let mut buf = vec![0u8; 10_000];
    let mut want = vec![0u8; 10_000];
    lun.read_exact_at(12_345, &mut buf).unwrap();
    expected(12_345, &mut want);
    assert_eq!(buf, want);
}

/// The kernel holds a mounted block device exclusively, so `O_EXCL` refuses it; once unmounted
/// the same device opens and accepts writes inside the map only.
#[test]
fn restore_target_refuses_a_mounted_block_device() {
    let test = "restore_target_refuses_a_mounted_block_device";
    if !have_tool("mkfs.ext4") {
        skip(test, "mkfs.ext4 (e2fsprogs) is not installed");
        return;
    }
    let dir = tempfile::tempdir_in(fixture_dir("mnt")).unwrap();
    let img = dir.path().join("ext4.img");
    File::create(&img).unwrap().set_len(32 << 20).unwrap();
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    let Some(dev) = LoopDevice::attach_with(test, &img, &[]) else {
        return;
    };
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let map = ExtentMap::new(
        "restored-file",
        8192,
        vec![
            Extent {
                logical: 0,
                length: 4096,
                physical: Some(16 << 20),
            },
            Extent {
                logical: 4096,
                length: 4096,
                physical: None,
            },
        ],
        32 << 20,
    )
    .unwrap();
    let mounted = Command::new("mount").arg(dev.path()).arg(&mnt).status();
    if !mounted.is_ok_and(|s| s.success()) {
        skip(test, "cannot mount an ext4 loop device here");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let guard = Unmount(&mnt);
    let e = RestoreTarget::open(dev.path(), map.clone()).unwrap_err();
    assert!(
        matches!(&e, LunError::Busy { source, .. } if source.raw_os_error() == Some(libc::EBUSY)),
        "{e}"
    );
    assert!(e.to_string().contains("mounted"), "{e}");
    drop(guard);

    let target = RestoreTarget::open(dev.path(), map).unwrap();
    assert_eq!(target.kind(), DeviceKind::BlockDevice);
    assert_eq!(target.size(), 32 << 20);
    // While the target holds the device, the kernel cannot mount it either.
    let remount = Command::new("mount")
        .arg(dev.path())
        .arg(&mnt)
        .output()
        .unwrap();
    if remount.status.success() {
        let _ = Command::new("umount").arg(&mnt).status();
        panic!("the kernel mounted a device held by a restore target");
    }
    target.write_at(0, &[0x5A; 4096]).unwrap();
    assert!(target.write_at(4000, &[0x5A; 200]).is_err());
    assert!(target.write_physical((16 << 20) - 1, &[0x5A; 2]).is_err());
    target.sync().unwrap();
    drop(target);
    let reader = DevicePath::open_with(dev.path(), OpenOptions { direct: true }).unwrap();
    let mut buf = vec![0u8; 4098];
    reader.read_exact_at((16 << 20) - 1, &mut buf).unwrap();
    assert_eq!(buf[0], 0);
    assert!(buf[1..4097].iter().all(|&b| b == 0x5A));
    assert_eq!(buf[4097], 0);
}

/// Pages of `file` in `[offset, offset + len)` that sit in the page cache (mincore).
fn resident_pages(file: &File, offset: u64, len: u64) -> usize {
    use std::os::fd::AsRawFd;
    let page = 4096u64;
    // SAFETY: a read-only shared mapping of a file we hold open, unmapped before returning;
    // mincore only writes into `vec`, which has one byte per page of the mapping.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        );
        assert_ne!(addr, libc::MAP_FAILED, "mmap");
        let mut vec = vec![0u8; len.div_ceil(page) as usize];
        let rc = libc::mincore(addr, len as usize, vec.as_mut_ptr());
        libc::munmap(addr, len as usize);
        assert_eq!(rc, 0, "mincore");
        vec.iter().filter(|&&v| v & 1 == 1).count()
    }
}

/// `will_need` starts reading the announced range into the page cache (a cold LUN then serves
/// many small reads as one deep queue); O_DIRECT paths leave the cache alone.
#[test]
fn will_need_reads_ahead_into_the_page_cache() {
    use std::os::fd::AsRawFd;
    let dir = fixture_dir("lun-will-need");
    let path = dir.join("cold.img");
    write_pattern(&path, 8 << 20);
    let file = File::open(&path).unwrap();
    let evict = || {
        // SAFETY: plain syscall on a file descriptor we own.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    };
    evict();
    if resident_pages(&file, 0, 8 << 20) > 16 {
        skip(
            "will_need_reads_ahead_into_the_page_cache",
            "the page cache does not drop this file's pages (tmpfs?)",
        );
        return;
    }
    let direct = DevicePath::open_with(&path, OpenOptions { direct: true });
    if let Ok(direct) = direct {
        assert_eq!(direct.is_cached(0, 4096), None, "O_DIRECT cannot tell");
        direct.will_need(2 << 20, 1 << 20);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            resident_pages(&file, 2 << 20, 1 << 20) < 16,
            "O_DIRECT path read ahead"
        );
    }
    let dev = DevicePath::open(&path).unwrap();
    // The probe is a read that must not wait (RWF_NOWAIT). It may start the kernel's read-ahead,
    // and on a fast device that read can finish within the call: the page was then readable
    // without waiting after all, and is resident now. Anything else is a wrong answer.
    let probed = |dev: &DevicePath, offset: u64| match dev.is_cached(offset, 4096) {
        Some(true) => resident_pages(&file, offset, 4096) == 1,
        other => other == Some(false),
    };
    assert!(probed(&dev, 2 << 20), "evicted page reported cached");
    dev.will_need(2 << 20, 1 << 20);
    dev.will_need(u64::MAX - 5, 100); // past the end: ignored, no panic
    let deadline = Instant::now() + Duration::from_secs(10);
    while resident_pages(&file, 2 << 20, 1 << 20) < 256 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(resident_pages(&file, 2 << 20, 1 << 20), 256);
    assert_eq!(dev.is_cached(2 << 20, 64 << 10), Some(true));
    assert_eq!(dev.is_cached(8 << 20, 1), None, "past the end");
    // Through a partition window and a mapped file, offsets translate.
    let base: lun::Source = Arc::new(dev);
    let part = lun::Window::new(base, 1 << 20, 4 << 20, "part").unwrap();
    assert_eq!(part.is_cached(1 << 20, 4096), Some(true));
    match part.is_cached(0, 4096) {
        Some(false) => {}
        Some(true) => assert_eq!(
            resident_pages(&file, 1 << 20, 4096),
            1,
            "a page reported cached that is not"
        ),
        None => panic!("a buffered path can tell"),
    }
    evict();
}
