//! An ordered pipeline over `n` jobs: each job is *prepared* on any thread, *finished* on the
//! calling thread strictly in job order (the step that depends on the jobs before it), then
//! *mapped* on any thread, and the results are *delivered* on the calling thread in job order.
//!
//! The calling thread takes part: it delivers, finishes, and in between maps and prepares like
//! the other threads, so one core is never left waiting for another. Memory holds only the
//! jobs between their preparing and their delivery.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The steps of a pipeline run: see the module documentation.
pub(crate) struct Steps<'a, P, V, T> {
    /// Work of job `i` that may run on any thread, before its finishing.
    pub prepare: &'a (dyn Fn(usize) -> P + Sync),
    /// The order-dependent end of job `i`, on the calling thread; `None` drops the job.
    pub finish: &'a mut dyn FnMut(usize, P) -> Option<V>,
    /// Work on a finished job that may run on any thread.
    pub map: &'a (dyn Fn(V) -> T + Sync),
    /// Takes the results in job order; [`ControlFlow::Break`] stops the run.
    pub deliver: &'a mut dyn FnMut(T) -> ControlFlow<()>,
}

/// What the threads share, behind one lock.
struct State<P, V, T> {
    /// Per job: prepared, not yet finished.
    prepared: Vec<Option<P>>,
    /// Finished jobs waiting for their mapping, oldest first.
    to_map: VecDeque<(usize, V)>,
    /// Per job: `Some(None)` when finishing dropped it, `Some(Some(_))` once mapped.
    mapped: Vec<Option<Option<T>>>,
    /// The first job no thread has taken to prepare.
    next_prepare: usize,
    /// Every job is finished: once `to_map` is empty, nothing is left for other threads.
    all_finished: bool,
    /// The run is over (stopped, done, or the calling thread unwinds): threads leave.
    stop: bool,
    /// A thread panicked: what it held will never arrive.
    failed: bool,
    /// Threads waiting on `changed`: waking is a system call, made only when someone waits.
    waiting: usize,
}

impl<P, V, T> State<P, V, T> {
    /// Takes the next `grain` jobs (at most) no thread has taken to prepare, out of `n`.
    fn take_to_prepare(&mut self, n: usize, grain: usize) -> Option<std::ops::Range<usize>> {
        let from = self.next_prepare;
        (from < n).then(|| {
            self.next_prepare = (from + grain).min(n);
            from..self.next_prepare
        })
    }

    /// Stores the prepared jobs of `range`.
    fn store_prepared(&mut self, range: std::ops::Range<usize>, done: Vec<P>) {
        for (i, p) in range.zip(done) {
            self.prepared[i] = Some(p);
        }
    }
}

struct Shared<P, V, T> {
    state: Mutex<State<P, V, T>>,
    changed: Condvar,
}

impl<P, V, T> Shared<P, V, T> {
    fn lock(&self) -> MutexGuard<'_, State<P, V, T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'g>(&self, mut g: MutexGuard<'g, State<P, V, T>>) -> MutexGuard<'g, State<P, V, T>> {
        g.waiting += 1;
        let mut g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        g.waiting -= 1;
        g
    }

    /// Unlocks `g` and wakes the waiting threads, if any. A thread about to wait counts itself
    /// under the lock before it sleeps, and checks the state under the lock first, so a change
    /// made under the lock is never missed.
    fn release_and_wake(&self, g: MutexGuard<'_, State<P, V, T>>) {
        let wake = g.waiting > 0;
        drop(g);
        if wake {
            self.changed.notify_all();
        }
    }
}

/// Ends the run for every thread when dropped: a helper thread drops it only when panicking
/// (`failed`), the calling thread always (`stop`), so nobody waits for work that will not come.
struct Leave<'a, P, V, T> {
    shared: &'a Shared<P, V, T>,
    failed: bool,
}

impl<P, V, T> Drop for Leave<'_, P, V, T> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if self.failed {
            st.failed = true;
        } else {
            st.stop = true;
        }
        drop(st);
        self.shared.changed.notify_all();
    }
}

/// What a helper thread does next.
enum Task<V> {
    Map(usize, V),
    Prepare(std::ops::Range<usize>),
}

/// Runs `n` jobs through `steps` on `threads` threads (the calling one included), taking
/// `grain` jobs at a time to prepare. Returns [`ControlFlow::Break`] when `deliver` stopped
/// the run, or when a helper thread panicked (its panic then surfaces as this function
/// returns). Whatever the number of threads, `finish` and `deliver` see the same jobs in the
/// same order.
pub(crate) fn run_ordered<P: Send, V: Send, T: Send>(
    n: usize,
    threads: usize,
    grain: usize,
    steps: Steps<'_, P, V, T>,
) -> ControlFlow<()> {
    let Steps {
        prepare,
        finish,
        map,
        deliver,
    } = steps;
    if threads <= 1 || n == 0 {
        for i in 0..n {
            if let Some(v) = finish(i, prepare(i)) {
                deliver(map(v))?;
            }
        }
        return ControlFlow::Continue(());
    }
    let grain = grain.max(1);
    let shared = Shared {
        state: Mutex::new(State {
            prepared: (0..n).map(|_| None).collect(),
            to_map: VecDeque::new(),
            mapped: (0..n).map(|_| None).collect(),
            next_prepare: 0,
            all_finished: false,
            stop: false,
            failed: false,
            waiting: 0,
        }),
        changed: Condvar::new(),
    };
    let shared = &shared;
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(move || helper(shared, n, grain, prepare, map));
        }
        let _leave = Leave {
            shared,
            failed: false,
        };
        let (mut deliver_at, mut finish_at) = (0, 0);
        let mut st = shared.lock();
        loop {
            if deliver_at == n {
                return ControlFlow::Continue(());
            }
            if let Some(slot) = st.mapped[deliver_at].take() {
                drop(st);
                deliver_at += 1;
                if let Some(t) = slot {
                    deliver(t)?;
                }
                st = shared.lock();
                continue;
            }
            if st.failed {
                return ControlFlow::Break(());
            }
            if finish_at < n
                && let Some(p) = st.prepared[finish_at].take()
            {
                drop(st);
                let v = finish(finish_at, p);
                st = shared.lock();
                match v {
                    Some(v) => st.to_map.push_back((finish_at, v)),
                    None => st.mapped[finish_at] = Some(None),
                }
                finish_at += 1;
                st.all_finished = finish_at == n;
                shared.release_and_wake(st);
                st = shared.lock();
                continue;
            }
            if let Some((i, v)) = st.to_map.pop_front() {
                drop(st);
                let t = map(v);
                st = shared.lock();
                st.mapped[i] = Some(Some(t));
                continue;
            }
            if let Some(range) = st.take_to_prepare(n, grain) {
                drop(st);
                let done: Vec<P> = range.clone().map(prepare).collect();
                st = shared.lock();
                st.store_prepared(range, done);
                continue;
            }
            st = shared.wait(st);
        }
    })
}

/// A helper thread: maps finished jobs first (they hold the output back), else prepares the
/// next jobs, until the run is over.
fn helper<P: Send, V: Send, T: Send>(
    shared: &Shared<P, V, T>,
    n: usize,
    grain: usize,
    prepare: &(dyn Fn(usize) -> P + Sync),
    map: &(dyn Fn(V) -> T + Sync),
) {
    let leave = Leave {
        shared,
        failed: true,
    };
    loop {
        let task = {
            let mut st = shared.lock();
            loop {
                if st.stop || st.failed {
                    break None;
                }
                if let Some((i, v)) = st.to_map.pop_front() {
                    break Some(Task::Map(i, v));
                }
                if let Some(range) = st.take_to_prepare(n, grain) {
                    break Some(Task::Prepare(range));
                }
                if st.all_finished {
                    break None;
                }
                st = shared.wait(st);
            }
        };
        match task {
            None => break,
            Some(Task::Map(i, v)) => {
                let t = map(v);
                let mut st = shared.lock();
                st.mapped[i] = Some(Some(t));
                shared.release_and_wake(st);
            }
            Some(Task::Prepare(range)) => {
                let done: Vec<P> = range.clone().map(prepare).collect();
                let mut st = shared.lock();
                st.store_prepared(range, done);
                shared.release_and_wake(st);
            }
        }
    }
    std::mem::forget(leave);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Runs `n` jobs whose finishing depends on the ones before (a running sum), mapping to
    /// strings; returns what was delivered.
    fn sums(n: usize, threads: usize, stop_after: Option<usize>) -> Vec<String> {
        let mut total = 0u64;
        let mut out = Vec::new();
        let flow = run_ordered(
            n,
            threads,
            3,
            Steps {
                prepare: &|i| (i as u64) * 2,
                finish: &mut |i, p| {
                    total += p;
                    // Every fifth job is dropped at its finishing.
                    (i % 5 != 4).then_some(total)
                },
                map: &|v| format!("{v}"),
                deliver: &mut |t| {
                    out.push(t);
                    if stop_after == Some(out.len()) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            },
        );
        assert_eq!(flow.is_break(), stop_after.is_some_and(|s| s <= out.len()));
        out
    }

    #[test]
    fn every_thread_count_delivers_the_same_in_order() {
        for n in [0, 1, 2, 7, 100, 1001] {
            let one = sums(n, 1, None);
            assert_eq!(one.len(), n - n / 5);
            for threads in [2, 3, 4, 8] {
                assert_eq!(sums(n, threads, None), one, "{n} jobs, {threads} threads");
            }
        }
    }

    #[test]
    fn a_break_stops_the_run_and_every_thread() {
        for threads in [1, 2, 4] {
            let got = sums(500, threads, Some(10));
            assert_eq!(got, sums(500, 1, None)[..10].to_vec());
        }
    }

    /// A helper's panic reaches the caller instead of leaving it waiting for the job it held.
    #[test]
    fn a_panicking_step_surfaces_and_nobody_hangs() {
        let prepared = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_ordered(
                200,
                3,
                1,
                Steps {
                    prepare: &|i| {
                        prepared.fetch_add(1, Ordering::Relaxed);
                        assert!(i != 150, "job 150 is broken");
                        i
                    },
                    finish: &mut |_, p| Some(p),
                    map: &|v| v,
                    deliver: &mut |_| ControlFlow::Continue(()),
                },
            )
        }));
        assert!(r.is_err());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_ordered(
                200,
                3,
                2,
                Steps {
                    prepare: &|i| i,
                    finish: &mut |i, p| {
                        assert!(i != 120, "finishing job 120 fails");
                        Some(p)
                    },
                    map: &|v| v,
                    deliver: &mut |_| ControlFlow::Continue(()),
                },
            )
        }));
        assert!(r.is_err());
    }
}
