//! Busy polling: a worker that keeps polling its sockets for a short while
//! after each request instead of sleeping in the kernel (`limits.busy_poll`).
//!
//! A worker that sleeps between requests is woken by the kernel when the
//! next request (or the upstream's response) arrives. On a machine with idle
//! cores that wake-up is cheap, but on many virtual machines an idle vCPU
//! is halted, and waking it costs tens of microseconds, twice per proxied
//! request (once for the request, once for the upstream's response). With
//! busy polling, a worker that served a request in the last `busy_poll`
//! keeps asking the kernel for ready sockets without blocking, so it sees
//! the next event at once. It costs CPU: a busy worker's thread stays
//! runnable until it has seen no request start or end for `busy_poll`: an
//! idle proxy sleeps as usual, and so does a worker waiting on a slow
//! upstream. While it polls with nothing to do, it yields its core to any
//! other thread that wants it; while it is still serving requests, it does
//! not (giving the core away then would cost throughput under load).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One worker's busy-poll state: a count of request starts and ends, and the
/// spinner's wake-up when it is asleep.
///
/// A request only bumps the count (no clock read on its path); the spinner,
/// which runs between the runtime's turns anyway, reads the clock and
/// notices when the count moved.
#[derive(Debug)]
pub(super) struct BusyPoll {
    window: Duration,
    activity: AtomicU64,
    resume: Notify,
}

impl BusyPoll {
    /// A busy-poll state for one worker, or `None` when `window` is zero.
    pub(super) fn new(window: Duration) -> Option<Arc<BusyPoll>> {
        (!window.is_zero()).then(|| {
            Arc::new(BusyPoll {
                window,
                activity: AtomicU64::new(0),
                resume: Notify::new(),
            })
        })
    }

    /// Notes a request's start or end: the worker keeps polling for
    /// `window` from now.
    pub(super) fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        self.resume.notify_one();
    }

    /// Runs on the worker's runtime until aborted: while the worker saw a
    /// request start or end in the last `window`, it yields to the runtime
    /// after every turn, so the runtime polls its sockets without blocking;
    /// otherwise it waits for the next [`BusyPoll::touch`].
    pub(super) async fn run(self: Arc<Self>) {
        let mut seen = self.activity.load(Ordering::Relaxed);
        let mut active_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let count = self.activity.load(Ordering::Relaxed);
            let busy = count != seen;
            if busy {
                seen = count;
                active_at = Some(now);
            }
            match active_at {
                Some(at) if now.duration_since(at) < self.window => {
                    // With nothing served since the last turn, let any other
                    // thread that wants this core run first; a worker still
                    // serving has no time to give away (and under load the
                    // system call and the switches would cost throughput).
                    if !busy {
                        std::thread::yield_now();
                    }
                    tokio::task::yield_now().await;
                }
                _ => {
                    active_at = None;
                    self.resume.notified().await;
                }
            }
        }
    }
}
