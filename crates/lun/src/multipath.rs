use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::source::check_range;
use crate::{DevicePath, LunError, OpenOptions, ReadAt, Result};

/// How a multipath LUN treats failing paths.
#[derive(Clone, Copy, Debug)]
pub struct MultipathPolicy {
    /// How long a path stays down before a read is tried on it again.
    pub retry_after: Duration,
    /// Bytes compared in each sampled region when checking that all paths show one LUN.
    pub sample_len: usize,
}

impl Default for MultipathPolicy {
    fn default() -> Self {
        MultipathPolicy {
            retry_after: Duration::from_secs(5),
            sample_len: 64 << 10,
        }
    }
}

/// Health of one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathHealth {
    /// Serving reads.
    Up,
    /// Failed; tried again after the back-off.
    Down,
}

/// A snapshot of one path's state, as the CLI and API show it.
#[derive(Clone, Debug, Serialize)]
pub struct PathStatus {
    /// Path name (device node or image file).
    pub path: String,
    /// Up or down.
    pub state: PathHealth,
    /// I/O errors seen on this path since the LUN was opened.
    pub errors: u64,
    /// The last error seen, if any.
    pub last_error: Option<String>,
    /// True for the path reads currently go to first.
    pub preferred: bool,
}

struct PathSlot {
    device: Box<dyn ReadAt>,
    up: AtomicBool,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// When the path last failed or was last probed; the next probe is due `retry_after` later.
    /// Resetting it is also how one reader claims a probe, so concurrent readers never probe the
    /// same down path at once.
    last_attempt: Mutex<Option<Instant>>,
}

impl PathSlot {
    fn mark_down(&self, err: &LunError) {
        // The time is set before the flag so that a reader seeing "down" never sees a stale
        // probe time and probes a path that failed a moment ago.
        *lock(&self.last_attempt) = Some(Instant::now());
        self.up.store(false, Ordering::SeqCst);
        self.errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(err.to_string());
    }

    /// True for exactly one caller per back-off interval while the path is down.
    fn claim_probe(&self, after: Duration) -> bool {
        if self.up.load(Ordering::SeqCst) {
            return false;
        }
        let mut last = lock(&self.last_attempt);
        if last.is_some_and(|t| t.elapsed() < after) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned mutex only means another reader panicked while holding a status string.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One LUN reached through one or more device paths.
///
/// Reads go to the preferred path. When a read fails with a path error (EIO, ENXIO, ENOTCONN…,
/// see [`LunError::is_path_failure`]) the path is marked down and the same read is retried on
/// the next path that is up; the path that served it becomes preferred. A down path is probed
/// again once its back-off ([`MultipathPolicy::retry_after`]) has elapsed, by one reader only:
/// the probe reads a reference region recorded at open time and the path comes back up only if
/// the bytes match. There is no automatic failback: the preferred path changes only on failure.
pub struct Lun {
    name: String,
    paths: Vec<PathSlot>,
    preferred: AtomicUsize,
    size: u64,
    sector_size: u32,
    policy: MultipathPolicy,
    /// Offset and bytes of the region a recovering path must reproduce before it is used again.
    reference: (u64, Vec<u8>),
}

/// Bytes a recovering path must read back identically (one 4 KiB page, the smallest O_DIRECT
/// unit every path accepts).
const PROBE_LEN: u64 = 4096;

impl Lun {
    /// Opens every path read-only and checks that they all show the same LUN.
    pub fn open(
        name: impl Into<String>,
        paths: &[PathBuf],
        opts: OpenOptions,
        policy: MultipathPolicy,
    ) -> Result<Self> {
        let name = name.into();
        let mut devices: Vec<Box<dyn ReadAt>> = Vec::with_capacity(paths.len());
        let mut sector_size = 512;
        for p in paths {
            let d = DevicePath::open_with(p, opts)?;
            sector_size = sector_size.max(d.sector_size());
            devices.push(Box::new(d));
        }
        let mut lun = Self::from_devices(name, devices, policy)?;
        lun.sector_size = sector_size;
        Ok(lun)
    }

    /// Builds a LUN from already opened path devices (used for fault-injection tests and
    /// layered paths). Checks size and sampled bytes for equality.
    pub fn from_devices(
        name: impl Into<String>,
        devices: Vec<Box<dyn ReadAt>>,
        policy: MultipathPolicy,
    ) -> Result<Self> {
        let name = name.into();
        let Some(first) = devices.first() else {
            return Err(LunError::PathMismatch {
                lun: name,
                detail: "no path given".into(),
            });
        };
        let size = first.size();
        for d in &devices[1..] {
            if d.size() != size {
                return Err(LunError::PathMismatch {
                    lun: name,
                    detail: format!(
                        "{} has {} bytes but {} has {}: they are not the same LUN",
                        first.name(),
                        size,
                        d.name(),
                        d.size()
                    ),
                });
            }
        }
        if devices.len() > 1 {
            check_same_bytes(&name, &devices, policy.sample_len)?;
        }
        let mut reference = vec![0u8; PROBE_LEN.min(size) as usize];
        first.read_exact_at(0, &mut reference)?;
        let paths = devices
            .into_iter()
            .map(|device| PathSlot {
                device,
                up: AtomicBool::new(true),
                errors: AtomicU64::new(0),
                last_error: Mutex::new(None),
                last_attempt: Mutex::new(None),
            })
            .collect();
        Ok(Lun {
            name,
            paths,
            preferred: AtomicUsize::new(0),
            size,
            sector_size: 512,
            policy,
            reference: (0, reference),
        })
    }

    /// Logical sector size (the largest of its paths).
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// Number of paths.
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// State of each path.
    pub fn path_status(&self) -> Vec<PathStatus> {
        let preferred = self.preferred.load(Ordering::Relaxed);
        self.paths
            .iter()
            .enumerate()
            .map(|(i, p)| PathStatus {
                path: p.device.name().to_string(),
                state: if p.up.load(Ordering::SeqCst) {
                    PathHealth::Up
                } else {
                    PathHealth::Down
                },
                errors: p.errors.load(Ordering::Relaxed),
                last_error: lock(&p.last_error).clone(),
                preferred: i == preferred,
            })
            .collect()
    }

    /// Probes every down path whose back-off has elapsed and that no other reader is probing.
    fn probe_due_paths(&self) {
        for slot in &self.paths {
            if !slot.claim_probe(self.policy.retry_after) {
                continue;
            }
            let (offset, expected) = &self.reference;
            let mut got = vec![0u8; expected.len()];
            match slot.device.read_exact_at(*offset, &mut got) {
                Ok(()) if got == *expected => {
                    slot.up.store(true, Ordering::SeqCst);
                    tracing::info!(lun = %self.name, path = slot.device.name(), "path is back up");
                }
                Ok(()) => slot.mark_down(&LunError::PathMismatch {
                    lun: self.name.clone(),
                    detail: format!(
                        "{} reads back different bytes at offset {offset} than when the LUN was \
                         opened; keeping it down",
                        slot.device.name()
                    ),
                }),
                Err(e) => {
                    tracing::debug!(lun = %self.name, path = slot.device.name(), error = %e, "path still down");
                    slot.mark_down(&e);
                }
            }
        }
    }
}

/// Compares a few regions across all paths: the start (partition tables), 1 MiB (the VMFS LVM
/// header and volume UUID), the end, and evenly spaced regions in between.
fn check_same_bytes(name: &str, devices: &[Box<dyn ReadAt>], sample_len: usize) -> Result<()> {
    let size = devices[0].size();
    let len = (sample_len as u64).min(size);
    let mut offsets = vec![0, 1 << 20, size.saturating_sub(len)];
    offsets.extend((1..8).map(|k| size / 8 * k));
    offsets.retain(|&o| o + len <= size);
    offsets.sort_unstable();
    offsets.dedup();
    let mut reference = vec![0u8; len as usize];
    let mut other = vec![0u8; len as usize];
    for off in offsets {
        devices[0].read_exact_at(off, &mut reference)?;
        for d in &devices[1..] {
            d.read_exact_at(off, &mut other)?;
            if reference != other {
                return Err(LunError::PathMismatch {
                    lun: name.to_string(),
                    detail: format!(
                        "{} and {} differ in the {len} bytes at offset {off}: they are not the same LUN",
                        devices[0].name(),
                        d.name()
                    ),
                });
            }
        }
    }
    Ok(())
}

impl ReadAt for Lun {
    fn is_cached(&self, offset: u64, len: usize) -> Option<bool> {
        let slot = self.paths.get(self.preferred.load(Ordering::Relaxed))?;
        if !slot.up.load(Ordering::SeqCst) {
            return None;
        }
        slot.device.is_cached(offset, len)
    }
    fn will_need(&self, offset: u64, len: u64) {
        let i = self.preferred.load(Ordering::Relaxed);
        if let Some(slot) = self.paths.get(i)
            && slot.up.load(Ordering::SeqCst)
        {
            slot.device.will_need(offset, len);
        }
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.name, offset, buf.len(), self.size)?;
        self.probe_due_paths();
        let n = self.paths.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last: Option<LunError> = None;
        // Paths this read found failing. A second pass tries the others once more: while this
        // read failed on one path, another reader may have probed a second one back up, and
        // a read must not fail when at every moment some path worked.
        let mut failed_here: Vec<bool> = Vec::new();
        for pass in 0..2 {
            for k in 0..n {
                let i = (start + k) % n;
                let slot = &self.paths[i];
                if !slot.up.load(Ordering::SeqCst)
                    || (pass == 1 && failed_here.get(i).copied().unwrap_or(false))
                {
                    continue;
                }
                match slot.device.read_exact_at(offset, buf) {
                    Ok(()) => {
                        if i != start {
                            // Only the reader that saw the failure moves the preference, so a
                            // slow reader cannot undo a newer failover.
                            let _ = self.preferred.compare_exchange(
                                start,
                                i,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                        return Ok(());
                    }
                    Err(e) if e.is_path_failure() => {
                        tracing::warn!(lun = %self.name, path = slot.device.name(), error = %e, "path failed; trying the next one");
                        slot.mark_down(&e);
                        failed_here.resize(n, false);
                        failed_here[i] = true;
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            let untried_up = (0..n).any(|i| {
                self.paths[i].up.load(Ordering::SeqCst)
                    && !failed_here.get(i).copied().unwrap_or(false)
            });
            if !untried_up {
                break;
            }
        }
        let last = last.unwrap_or_else(|| {
            let known = self
                .paths
                .iter()
                .filter_map(|p| lock(&p.last_error).clone())
                .last()
                .unwrap_or_default();
            LunError::Read {
                name: self.name.clone(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::other(format!(
                    "every path is down and waiting for its back-off ({} s); last path error: {known}",
                    self.policy.retry_after.as_secs_f64()
                )),
            }
        });
        Err(LunError::AllPathsDown {
            lun: self.name.clone(),
            paths: n,
            last: Box::new(last),
        })
    }
    fn splice_to_pipe(&self, offset: u64, len: usize, pipe: BorrowedFd<'_>) -> usize {
        if check_range(&self.name, offset, len, self.size).is_err() {
            return 0;
        }
        // Only the preferred path, and only while it is up: a failure shows as a short count,
        // and the read of the rest goes through the failover logic of `read_exact_at`.
        let slot = &self.paths[self.preferred.load(Ordering::Relaxed) % self.paths.len()];
        if !slot.up.load(Ordering::SeqCst) {
            return 0;
        }
        slot.device.splice_to_pipe(offset, len, pipe)
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::MemSource;

    /// A path that fails with EIO while `broken` is set, and returns flipped bytes while
    /// `corrupt` is set (a path that silently shows another LUN).
    struct Flaky {
        inner: MemSource,
        ctl: Arc<Ctl>,
    }

    #[derive(Default)]
    struct Ctl {
        broken: AtomicBool,
        corrupt: AtomicBool,
        reads: AtomicU64,
        /// Runs when a read fails: what another reader does meanwhile.
        on_failure: std::sync::Mutex<Option<Box<dyn Fn() + Send>>>,
    }

    impl ReadAt for Flaky {
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.ctl.reads.fetch_add(1, Ordering::SeqCst);
            if self.ctl.broken.load(Ordering::SeqCst) {
                if let Some(meanwhile) = &*self.ctl.on_failure.lock().unwrap() {
                    meanwhile();
                }
                return Err(LunError::Read {
                    name: self.inner.name().into(),
                    offset,
                    len: buf.len() as u64,
                    source: std::io::Error::from_raw_os_error(libc::EIO),
                });
            }
            self.inner.read_exact_at(offset, buf)?;
            if self.ctl.corrupt.load(Ordering::SeqCst) {
                buf.iter_mut().for_each(|b| *b = !*b);
            }
            Ok(())
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn name(&self) -> &str {
            self.inner.name()
        }
    }

    fn flaky(name: &str, data: &[u8]) -> (Box<dyn ReadAt>, Arc<Ctl>) {
        let ctl = Arc::new(Ctl::default());
        let f = Flaky {
            inner: MemSource::new(name, data.to_vec()),
            ctl: ctl.clone(),
        };
        (Box::new(f), ctl)
    }

    fn pattern(len: u32) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn fast_policy(ms: u64) -> MultipathPolicy {
        MultipathPolicy {
            retry_after: Duration::from_millis(ms),
            ..Default::default()
        }
    }

    #[test]
    fn fails_over_and_recovers_when_all_paths_were_down() {
        let data = pattern(4 << 20);
        let (a, a_ctl) = flaky("pathA", &data);
        let (b, b_ctl) = flaky("pathB", &data);
        let lun = Lun::from_devices("lun0", vec![a, b], fast_policy(50)).unwrap();
        let b_open_reads = b_ctl.reads.load(Ordering::SeqCst);
        let mut buf = [0u8; 16];
        lun.read_exact_at(100, &mut buf).unwrap();
        assert_eq!(
            b_ctl.reads.load(Ordering::SeqCst),
            b_open_reads,
            "reads go to A"
        );

        a_ctl.broken.store(true, Ordering::SeqCst);
        lun.read_exact_at(200, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[200..216]);
        let st = lun.path_status();
        assert_eq!(st[0].state, PathHealth::Down);
        assert_eq!(st[0].errors, 1);
        assert!(st[0].last_error.as_deref().unwrap().contains("pathA"));
        assert!(st[1].preferred);

        b_ctl.broken.store(true, Ordering::SeqCst);
        let e = lun.read_exact_at(0, &mut buf).unwrap_err();
        assert!(matches!(e, LunError::AllPathsDown { paths: 2, .. }), "{e}");
        assert!(e.to_string().contains("Input/output error"), "{e}");

        a_ctl.broken.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(60));
        lun.read_exact_at(300, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[300..316]);
        assert_eq!(lun.path_status()[0].state, PathHealth::Up);
        assert_eq!(lun.path_status()[1].state, PathHealth::Down);
    }

    #[test]
    fn a_path_brought_back_up_while_a_read_fails_serves_that_read() {
        let data = pattern(1 << 20);
        let (a, a_ctl) = flaky("pathA", &data);
        let (b, b_ctl) = flaky("pathB", &data);
        let lun = Arc::new(Lun::from_devices("lun0", vec![a, b], fast_policy(60_000)).unwrap());
        let mut buf = [0u8; 64];
        // B goes down and, with a long back-off, is not probed by this reader again.
        b_ctl.broken.store(true, Ordering::SeqCst);
        lun.preferred.store(1, Ordering::SeqCst);
        lun.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(lun.path_status()[1].state, PathHealth::Down);
        b_ctl.broken.store(false, Ordering::SeqCst);
        // A breaks. This read looks at B first (still down: skipped), then fails on A; meanwhile
        // another reader's probe brings B back up.
        lun.preferred.store(1, Ordering::SeqCst);
        a_ctl.broken.store(true, Ordering::SeqCst);
        let other_reader = Arc::downgrade(&lun);
        *a_ctl.on_failure.lock().unwrap() = Some(Box::new(move || {
            if let Some(lun) = other_reader.upgrade() {
                lun.paths[1].up.store(true, Ordering::SeqCst);
            }
        }));
        lun.read_exact_at(100, &mut buf)
            .expect("B was up again before the read gave up");
        assert_eq!(&buf[..], &data[100..164]);
        let st = lun.path_status();
        assert_eq!(st[0].state, PathHealth::Down, "{st:?}");
        assert_eq!(st[1].state, PathHealth::Up, "{st:?}");
        // With both broken for good, the read still fails, after one more try of each.
        b_ctl.broken.store(true, Ordering::SeqCst);
        *a_ctl.on_failure.lock().unwrap() = None;
        let e = lun.read_exact_at(0, &mut buf).unwrap_err();
        assert!(matches!(e, LunError::AllPathsDown { paths: 2, .. }), "{e}");
    }

    #[test]
    fn a_down_path_comes_back_while_another_path_serves() {
        let data = pattern(1 << 20);
        let (a, a_ctl) = flaky("pathA", &data);
        let (b, _) = flaky("pathB", &data);
        let lun = Lun::from_devices("lun0", vec![a, b], fast_policy(30)).unwrap();
        a_ctl.broken.store(true, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        lun.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(lun.path_status()[0].state, PathHealth::Down);
        a_ctl.broken.store(false, Ordering::SeqCst);
        // Before the back-off nothing touches A.
        let before = a_ctl.reads.load(Ordering::SeqCst);
        lun.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(a_ctl.reads.load(Ordering::SeqCst), before);
        std::thread::sleep(Duration::from_millis(40));
        lun.read_exact_at(0, &mut buf).unwrap();
        let st = lun.path_status();
        assert_eq!(st[0].state, PathHealth::Up, "{st:?}");
        assert!(st[1].preferred, "no automatic failback");
    }

    #[test]
    fn a_path_that_comes_back_with_other_bytes_stays_down() {
        let data = pattern(1 << 20);
        let (a, a_ctl) = flaky("pathA", &data);
        let (b, _) = flaky("pathB", &data);
        let lun = Lun::from_devices("lun0", vec![a, b], fast_policy(10)).unwrap();
        a_ctl.broken.store(true, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        lun.read_exact_at(0, &mut buf).unwrap();
        a_ctl.broken.store(false, Ordering::SeqCst);
        a_ctl.corrupt.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        lun.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[..64]);
        let st = lun.path_status();
        assert_eq!(st[0].state, PathHealth::Down);
        assert!(
            st[0]
                .last_error
                .as_deref()
                .unwrap()
                .contains("different bytes"),
            "{st:?}"
        );
    }

    /// Many readers while paths break and heal underneath them: every read returns the right
    /// bytes as long as one path works, and a down path is probed at most once per back-off.
    #[test]
    fn concurrent_readers_see_correct_bytes_through_failures() {
        let data = Arc::new(pattern(2 << 20));
        let (a, a_ctl) = flaky("pathA", &data);
        let (b, b_ctl) = flaky("pathB", &data);
        let retry = Duration::from_millis(20);
        let lun = Arc::new(Lun::from_devices("lun0", vec![a, b], fast_policy(20)).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..8u64)
            .map(|t| {
                let (lun, data, stop) = (lun.clone(), data.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    let mut buf = vec![0u8; 4096];
                    while !stop.load(Ordering::SeqCst) {
                        let off = (t * 7919 + n * 104_729) % (data.len() as u64 - 4096);
                        lun.read_exact_at(off, &mut buf)
                            .expect("one path always works");
                        assert_eq!(&buf[..], &data[off as usize..off as usize + 4096]);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let wait_for = |path: usize, state: PathHealth| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while lun.path_status()[path].state != state {
                assert!(
                    Instant::now() < deadline,
                    "path {path} never became {state:?}"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        // Alternate which path is broken, never both: heal one, wait until readers have probed
        // it back up, then break the other and wait until readers have noticed.
        for round in 0..10 {
            let (broken, healthy) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
            let ctl = |i: usize| if i == 0 { &a_ctl } else { &b_ctl };
            ctl(healthy).broken.store(false, Ordering::SeqCst);
            wait_for(healthy, PathHealth::Up);
            ctl(broken).broken.store(true, Ordering::SeqCst);
            wait_for(broken, PathHealth::Down);
        }
        // Probe accounting: while A is down and nothing else changes, A is read at most once
        // per back-off no matter how many readers run.
        b_ctl.broken.store(false, Ordering::SeqCst);
        wait_for(1, PathHealth::Up);
        a_ctl.broken.store(true, Ordering::SeqCst);
        wait_for(0, PathHealth::Down);
        // Readers that were already inside a read of A may still fail on it once each.
        std::thread::sleep(retry);
        let before = a_ctl.reads.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        let probes = a_ctl.reads.load(Ordering::SeqCst) - before;
        stop.store(true, Ordering::SeqCst);
        let total: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(total > 100, "readers made progress ({total} reads)");
        assert!(
            probes <= 200 / 20 + 1,
            "{probes} probes of a down path in 200 ms"
        );
        assert_eq!(lun.path_status()[0].state, PathHealth::Down);
    }

    #[test]
    fn refuses_paths_of_different_luns() {
        let a = MemSource::new("a", vec![0u8; 2 << 20]);
        let mut other = vec![0u8; 2 << 20];
        other[(1 << 20) + 5] = 1;
        let b = MemSource::new("b", other);
        let e = Lun::from_devices("x", vec![Box::new(a), Box::new(b)], Default::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("not the same LUN"), "{e}");
        let c = MemSource::new("c", vec![0u8; 10]);
        let d = MemSource::new("d", vec![0u8; 11]);
        let e = Lun::from_devices("x", vec![Box::new(c), Box::new(d)], Default::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("bytes"), "{e}");
        let e = Lun::from_devices("x", vec![], Default::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("no path"), "{e}");
    }

    #[test]
    fn out_of_range_is_not_a_path_failure() {
        let (a, _) = flaky("a", &[0u8; 100]);
        let lun = Lun::from_devices("x", vec![a], Default::default()).unwrap();
        let mut buf = [0u8; 10];
        let e = lun.read_exact_at(95, &mut buf).unwrap_err();
        assert!(
            matches!(e, LunError::OutOfRange { ref name, .. } if name == "x"),
            "{e}"
        );
        assert_eq!(lun.path_status()[0].state, PathHealth::Up);
    }
}
