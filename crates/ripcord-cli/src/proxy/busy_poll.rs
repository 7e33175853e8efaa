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
//! runnable (it yields to any other thread that wants its core) until it has
//! seen no request start or end for `busy_poll`: an idle proxy sleeps as
//! usual, and so does a worker waiting on a slow upstream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One worker's busy-poll state: when it last saw a request, and the
/// spinner's wake-up when it is asleep.
#[derive(Debug)]
pub(super) struct BusyPoll {
    window: Duration,
    origin: Instant,
    /// Nanoseconds from `origin` to the last request's start or end.
    last: AtomicU64,
    resume: Notify,
}

impl BusyPoll {
    /// A busy-poll state for one worker, or `None` when `window` is zero.
    pub(super) fn new(window: Duration) -> Option<Arc<BusyPoll>> {
        (!window.is_zero()).then(|| {
            Arc::new(BusyPoll {
                window,
                origin: Instant::now(),
                last: AtomicU64::new(0),
                resume: Notify::new(),
            })
        })
    }

    fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Notes activity: the worker keeps polling for `window` from now.
    pub(super) fn touch(&self) {
        self.last.store(self.elapsed_nanos(), Ordering::Relaxed);
        self.resume.notify_one();
    }

    /// Runs on the worker's runtime until aborted: while the worker saw a
    /// request in the last `window`, it yields to the runtime after every
    /// turn, so the runtime polls its sockets without blocking; otherwise it
    /// waits for the next [`BusyPoll::touch`].
    pub(super) async fn run(self: Arc<Self>) {
        let window = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        loop {
            let idle = self
                .elapsed_nanos()
                .saturating_sub(self.last.load(Ordering::Relaxed));
            if idle < window {
                // Let any other thread that wants this core run first.
                std::thread::yield_now();
                tokio::task::yield_now().await;
            } else {
                self.resume.notified().await;
            }
        }
    }
}
