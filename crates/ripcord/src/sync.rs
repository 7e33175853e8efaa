//! Synchronisation primitives, swapped for loom's under `cfg(loom)` so the lock-free
//! core can be model-checked.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Mutex;

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
///
/// Breaker state stays consistent under poisoning because every critical section
/// publishes its result with a single atomic store at its end.
#[cfg(not(loom))]
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(loom)]
pub(crate) fn lock<T>(m: &Mutex<T>) -> loom::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pads and aligns a value to its own cache-line pair so that writers on
/// different cores never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Marks a stripe index that the current thread owns alone: it may update
/// that stripe's counters with a plain load and store instead of an atomic
/// read-modify-write.
pub(crate) const EXCLUSIVE: usize = 1 << (usize::BITS - 1);

/// Stripes shared (with atomic read-modify-writes) by the threads that did not
/// get an exclusive one.
pub(crate) const SHARED_STRIPES: usize = 2;

/// Exclusive stripes per window: twice the cores, at most 62.
#[cfg(not(loom))]
pub(crate) fn exclusive_stripes() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        (cores * 2).clamp(1, 62)
    })
}

#[cfg(loom)]
pub(crate) fn exclusive_stripes() -> usize {
    0
}

#[cfg(not(loom))]
mod stripes {
    use super::{exclusive_stripes, EXCLUSIVE, SHARED_STRIPES};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// Free exclusive stripes, one bit each.
    static FREE: AtomicU64 = AtomicU64::new(u64::MAX);
    static NEXT_SHARED: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        /// This thread's stripe (with [`EXCLUSIVE`] set if it owns it alone).
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
        /// Gives an exclusive stripe back when the thread exits.
        static GUARD: Guard = const { Guard };
    }

    struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = STRIPE.try_with(|s| {
                let v = s.get();
                if v != usize::MAX && v & EXCLUSIVE != 0 {
                    // Later records from this thread's other destructors go
                    // to a shared stripe; then the stripe is free again.
                    s.set(shared());
                    FREE.fetch_or(1 << (v & !EXCLUSIVE), Ordering::AcqRel);
                }
            });
        }
    }

    fn shared() -> usize {
        exclusive_stripes() + NEXT_SHARED.fetch_add(1, Ordering::Relaxed) % SHARED_STRIPES
    }

    #[cold]
    fn assign() -> usize {
        let n = exclusive_stripes();
        let mask = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut free = FREE.load(Ordering::Acquire);
        let v = loop {
            let avail = free & mask;
            if avail == 0 {
                break shared();
            }
            let i = avail.trailing_zeros() as usize;
            match FREE.compare_exchange_weak(
                free,
                free & !(1 << i),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // Register the guard so the stripe comes back on exit.
                    if GUARD.try_with(|_| ()).is_err() {
                        FREE.fetch_or(1 << i, Ordering::AcqRel);
                        break shared();
                    }
                    break i | EXCLUSIVE;
                }
                Err(actual) => free = actual,
            }
        };
        STRIPE.with(|s| s.set(v));
        v
    }

    /// This thread's stripe, with [`EXCLUSIVE`] set if it owns it alone.
    #[inline]
    pub(crate) fn current() -> usize {
        let v = STRIPE.with(Cell::get);
        if v != usize::MAX {
            v
        } else {
            assign()
        }
    }
}

/// The counter stripe the current thread writes to, with [`EXCLUSIVE`] set
/// when the thread owns it alone.
///
/// The first `2 × cores` live threads each own one stripe; the others share
/// [`SHARED_STRIPES`] stripes. Concurrent callers on different cores thus
/// write different cache lines, and most never need an atomic
/// read-modify-write.
#[cfg(not(loom))]
#[inline]
pub(crate) fn stripe_index() -> usize {
    stripes::current()
}

/// Under loom every caller shares stripe 0, so the model checks the atomic
/// read-modify-write paths.
#[cfg(loom)]
pub(crate) fn stripe_index() -> usize {
    0
}
