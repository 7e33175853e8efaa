//! Per-thread counter stripes, the scheme ripcord's breaker window uses: the
//! first `2 × cores` live threads each own a stripe and update it with a plain
//! load and store (no atomic read-modify-write, no cache line shared with
//! another writer); further threads share [`SHARED`] stripes with
//! `fetch_add`. A stripe is handed back when its thread exits, and its next
//! owner goes on from its counts (the hand-over is ordered by [`FREE`]).
//!
//! A [`Striped`] set of counters allocates a stripe's counters only when a
//! thread first writes to it, so an idle series costs one stripe at most.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Marks a stripe index that the current thread owns alone.
const EXCLUSIVE: usize = 1 << (usize::BITS - 1);

/// Stripes shared (with atomic read-modify-writes) by the threads that did
/// not get one of their own.
const SHARED: usize = 2;

/// Exclusive stripes: twice the cores, at most 62.
fn exclusive() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        (cores * 2).clamp(1, 62)
    })
}

/// Every stripe, exclusive and shared.
pub(crate) fn count() -> usize {
    exclusive() + SHARED
}

/// Free exclusive stripes, one bit each.
static FREE: AtomicU64 = AtomicU64::new(u64::MAX);
static NEXT_SHARED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe (with [`EXCLUSIVE`] if it owns it alone).
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
                // Later writes from this thread's other destructors go to a
                // shared stripe; then the stripe is free again.
                s.set(shared());
                FREE.fetch_or(1 << (v & !EXCLUSIVE), Ordering::AcqRel);
            }
        });
    }
}

fn shared() -> usize {
    exclusive() + NEXT_SHARED.fetch_add(1, Ordering::Relaxed) % SHARED
}

#[cold]
fn assign() -> usize {
    let n = exclusive();
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
                if GUARD.try_with(|_| ()).is_err() {
                    FREE.fetch_or(1 << i, Ordering::AcqRel);
                    break shared();
                }
                break i | EXCLUSIVE;
            }
            Err(actual) => free = actual,
        }
    };
    // A thread being torn down has no slot left: it uses a shared stripe.
    let _ = STRIPE.try_with(|s| s.set(v));
    v
}

/// This thread's stripe, with [`EXCLUSIVE`] if it owns it alone.
#[inline]
fn current() -> usize {
    match STRIPE.try_with(Cell::get) {
        Ok(v) if v != usize::MAX => v,
        Ok(_) => assign(),
        Err(_) => exclusive(), // thread-local storage destroyed: first shared stripe
    }
}

/// Words of padding before and after a stripe's counters, so that two
/// stripes' counters never share a cache line (128 bytes: adjacent-line
/// prefetching pairs lines).
const PAD: usize = 16;

/// `len` counters per stripe, each stripe allocated on first write.
pub(crate) struct Striped {
    stripes: Box<[OnceLock<Box<[AtomicU64]>>]>,
    len: usize,
}

/// The current thread's stripe of a [`Striped`].
pub(crate) struct Stripe<'a> {
    words: &'a [AtomicU64],
    exclusive: bool,
}

impl Stripe<'_> {
    /// Adds `v` to counter `i`.
    #[inline]
    pub(crate) fn add(&self, i: usize, v: u64) {
        if let Some(c) = self.words.get(PAD + i) {
            if self.exclusive {
                c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
            } else {
                c.fetch_add(v, Ordering::Relaxed);
            }
        }
    }
}

impl Striped {
    pub(crate) fn new(len: usize) -> Self {
        Striped {
            stripes: (0..count()).map(|_| OnceLock::new()).collect(),
            len,
        }
    }

    /// The current thread's stripe.
    #[inline]
    pub(crate) fn stripe(&self) -> Stripe<'_> {
        let s = current();
        let index = s & !EXCLUSIVE;
        let words: &[AtomicU64] = match self.stripes.get(index) {
            Some(slot) => {
                slot.get_or_init(|| (0..self.len + 2 * PAD).map(|_| AtomicU64::new(0)).collect())
            }
            None => &[],
        };
        Stripe {
            words,
            exclusive: s & EXCLUSIVE != 0,
        }
    }

    /// Counter `i`, summed over the stripes.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.stripes
            .iter()
            .filter_map(OnceLock::get)
            .filter_map(|w| w.get(PAD + i))
            .fold(0u64, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_from_many_threads_add_up() {
        let s = Arc::new(Striped::new(3));
        let threads: Vec<_> = (0..3 * count())
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let st = s.stripe();
                        st.add(0, 1);
                        st.add(2, 5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.get(0), 3000 * count() as u64);
        assert_eq!(s.get(1), 0);
        assert_eq!(s.get(2), 15000 * count() as u64);
    }
}
