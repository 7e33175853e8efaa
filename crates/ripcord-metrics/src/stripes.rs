//! Per-thread counter stripes, on the same per-thread stripe assignment as
//! ripcord's breaker windows ([`ripcord::stripe`]): the first `2 × cores` live
//! threads each own a stripe and update it with a plain load and store (no
//! atomic read-modify-write, no cache line shared with another writer);
//! further threads share a few stripes with `fetch_add`. A stripe is handed
//! back when its thread exits, and its next owner goes on from its counts.
//!
//! A [`Striped`] set of counters allocates a stripe's counters only when a
//! thread first writes to it, so an idle series costs one stripe at most.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use ripcord::stripe::{count, current};

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
        let index = s.index();
        let words: &[AtomicU64] = match self.stripes.get(index) {
            Some(slot) => {
                slot.get_or_init(|| (0..self.len + 2 * PAD).map(|_| AtomicU64::new(0)).collect())
            }
            None => &[],
        };
        Stripe {
            words,
            exclusive: s.is_exclusive(),
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
