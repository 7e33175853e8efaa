//! Per-thread counter stripes, for crates built on ripcord that keep hot
//! counters the way ripcord's windows do (ripcord-metrics does).
//!
//! The first `2 × cores` live threads each own a stripe and may update its
//! counters with a plain load and store (no atomic read-modify-write, no
//! cache line shared with another writer); further threads share a few
//! stripes and must use atomic read-modify-writes. A stripe is handed back
//! when its thread exits.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! let counters: Vec<AtomicU64> = (0..ripcord::stripe::count()).map(|_| AtomicU64::new(0)).collect();
//! let s = ripcord::stripe::current();
//! let c = &counters[s.index()];
//! if s.is_exclusive() {
//!     c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
//! } else {
//!     c.fetch_add(1, Ordering::Relaxed);
//! }
//! let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
//! assert_eq!(total, 1);
//! ```

use crate::sync::{exclusive_stripes, stripe_index, EXCLUSIVE, SHARED_STRIPES};

/// The calling thread's stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripe {
    index: usize,
    exclusive: bool,
}

impl Stripe {
    /// Its index, below [`count()`].
    pub fn index(self) -> usize {
        self.index
    }

    /// Whether the calling thread is its only writer (plain stores are safe).
    pub fn is_exclusive(self) -> bool {
        self.exclusive
    }
}

/// The calling thread's stripe.
#[inline]
pub fn current() -> Stripe {
    let v = stripe_index();
    Stripe {
        index: v & !EXCLUSIVE,
        exclusive: v & EXCLUSIVE != 0,
    }
}

/// How many stripes there are (the same for the whole process).
pub fn count() -> usize {
    exclusive_stripes() + SHARED_STRIPES
}
