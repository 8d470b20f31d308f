use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

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
    down_since: Mutex<Option<Instant>>,
}

impl PathSlot {
    fn mark_down(&self, err: &LunError) {
        self.up.store(false, Ordering::SeqCst);
        self.errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(err.to_string());
        *lock(&self.down_since) = Some(Instant::now());
    }

    fn retry_due(&self, after: Duration) -> bool {
        lock(&self.down_since).is_none_or(|t| t.elapsed() >= after)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned mutex only means another reader panicked while holding a status string.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One LUN reached through one or more device paths. Reads go to a preferred healthy path; on a
/// path failure the same read is retried on the next path and the failed path is marked down
/// until a later read succeeds on it after the back-off.
pub struct Lun {
    name: String,
    paths: Vec<PathSlot>,
    preferred: AtomicUsize,
    size: u64,
    sector_size: u32,
    policy: MultipathPolicy,
}

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
                        "{} has {} bytes but {} has {}",
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
        let paths = devices
            .into_iter()
            .map(|device| PathSlot {
                device,
                up: AtomicBool::new(true),
                errors: AtomicU64::new(0),
                last_error: Mutex::new(None),
                down_since: Mutex::new(None),
            })
            .collect();
        Ok(Lun {
            name,
            paths,
            preferred: AtomicUsize::new(0),
            size,
            sector_size: 512,
            policy,
        })
    }

    /// Logical sector size (the largest of its paths).
    pub fn sector_size(&self) -> u32 {
        self.sector_size
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
}

/// Compares a few regions (start, 1 MiB, middle, end) across all paths.
fn check_same_bytes(name: &str, devices: &[Box<dyn ReadAt>], sample_len: usize) -> Result<()> {
    let size = devices[0].size();
    let len = (sample_len as u64).min(size);
    let mut offsets = vec![0, 1 << 20, size / 2, size.saturating_sub(len)];
    offsets.retain(|&o| o + len <= size);
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
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let n = self.paths.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last: Option<LunError> = None;
        // First pass: healthy paths in order from the preferred one. Second pass: down paths
        // whose back-off has elapsed, so a repaired path comes back.
        for pass in 0..2 {
            for k in 0..n {
                let i = (start + k) % n;
                let slot = &self.paths[i];
                let up = slot.up.load(Ordering::SeqCst);
                if (pass == 0) != up || (!up && !slot.retry_due(self.policy.retry_after)) {
                    continue;
                }
                match slot.device.read_exact_at(offset, buf) {
                    Ok(()) => {
                        if !up {
                            slot.up.store(true, Ordering::SeqCst);
                            *lock(&slot.down_since) = None;
                            tracing::info!(lun = %self.name, path = slot.device.name(), "path is back up");
                        }
                        if i != start {
                            self.preferred.store(i, Ordering::Relaxed);
                        }
                        return Ok(());
                    }
                    Err(e) if e.is_path_failure() => {
                        tracing::warn!(lun = %self.name, path = slot.device.name(), error = %e, "path failed; trying the next one");
                        slot.mark_down(&e);
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(LunError::AllPathsDown {
            lun: self.name.clone(),
            paths: n,
            last: Box::new(last.unwrap_or_else(|| LunError::Read {
                name: self.name.clone(),
                offset,
                len: buf.len() as u64,
                source: std::io::Error::other("every path is down and waiting for its back-off"),
            })),
        })
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

    /// A path that fails with EIO while `broken` is set.
    struct Flaky {
        inner: MemSource,
        broken: Arc<AtomicBool>,
        reads: Arc<AtomicU64>,
    }

    impl ReadAt for Flaky {
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.broken.load(Ordering::SeqCst) {
                return Err(LunError::Read {
                    name: self.inner.name().into(),
                    offset,
                    len: buf.len() as u64,
                    source: std::io::Error::from_raw_os_error(libc::EIO),
                });
            }
            self.inner.read_exact_at(offset, buf)
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn name(&self) -> &str {
            self.inner.name()
        }
    }

    fn flaky(name: &str, data: &[u8]) -> (Box<dyn ReadAt>, Arc<AtomicBool>, Arc<AtomicU64>) {
        let broken = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let f = Flaky {
            inner: MemSource::new(name, data.to_vec()),
            broken: broken.clone(),
            reads: reads.clone(),
        };
        (Box::new(f), broken, reads)
    }

    #[test]
    fn fails_over_and_recovers() {
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (a, a_broken, _) = flaky("pathA", &data);
        let (b, b_broken, b_reads) = flaky("pathB", &data);
        let policy = MultipathPolicy {
            retry_after: Duration::from_millis(50),
            ..Default::default()
        };
        let lun = Lun::from_devices("lun0", vec![a, b], policy).unwrap();
        let mut buf = [0u8; 16];
        lun.read_exact_at(100, &mut buf).unwrap();
        assert_eq!(b_reads.load(Ordering::SeqCst), 4, "only the open-time samples hit B");

        a_broken.store(true, Ordering::SeqCst);
        lun.read_exact_at(200, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[200..216]);
        let st = lun.path_status();
        assert_eq!(st[0].state, PathHealth::Down);
        assert_eq!(st[0].errors, 1);
        assert!(st[0].last_error.as_deref().unwrap().contains("pathA"));
        assert!(st[1].preferred);

        b_broken.store(true, Ordering::SeqCst);
        let e = lun.read_exact_at(0, &mut buf).unwrap_err();
        assert!(matches!(e, LunError::AllPathsDown { paths: 2, .. }), "{e}");

        a_broken.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(60));
        lun.read_exact_at(300, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[300..316]);
        assert_eq!(lun.path_status()[0].state, PathHealth::Up);
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
    }

    #[test]
    fn out_of_range_is_not_a_path_failure() {
        let (a, _, _) = flaky("a", &[0u8; 100]);
        let lun = Lun::from_devices("x", vec![a], Default::default()).unwrap();
        let mut buf = [0u8; 10];
        assert!(matches!(
            lun.read_exact_at(95, &mut buf),
            Err(LunError::OutOfRange { .. })
        ));
        assert_eq!(lun.path_status()[0].state, PathHealth::Up);
    }
}
