//! The bulkhead's core: a slot counter (lock-free while slots are free) and a
//! FIFO queue of waiters (behind a mutex, touched only when full).

// Without tokio there is no waiting, so the queue is never used.
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{lock, AtomicU64, CachePadded, Mutex, Ordering};

/// `queued << 32 | in_use`.
fn pack(in_use: u32, queued: u32) -> u64 {
    (u64::from(queued) << 32) | u64::from(in_use)
}

fn unpack(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// Slots and waiters.
///
/// Invariants: `queued` (in the word) changes only under the queue lock and
/// always equals the queue's length there; a released slot goes to the
/// oldest waiter, if there is one, without passing through the counter, so
/// a newcomer can never overtake a waiter (FIFO).
pub(super) struct Slots {
    word: CachePadded<AtomicU64>,
    max_concurrent: u32,
    max_queued: u32,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    /// Ordered by id (ids only grow), so a waiter is found by binary search.
    waiters: VecDeque<Waiter>,
}

struct Waiter {
    id: u64,
    waker: Option<Waker>,
}

/// The outcome of asking for a slot with permission to wait.
pub(super) enum Enqueued {
    /// A slot was free after all.
    Acquired,
    /// The queue is full.
    Full,
    /// Waiting, with this ticket number.
    Queued(u64),
}

impl Slots {
    pub(super) fn new(max_concurrent: u32, max_queued: u32) -> Self {
        Slots {
            word: CachePadded(AtomicU64::new(0)),
            max_concurrent,
            max_queued,
            queue: Mutex::new(Queue::default()),
        }
    }

    /// `(in_use, queued)`.
    pub(super) fn counts(&self) -> (u32, u32) {
        unpack(self.word.load(Ordering::Acquire))
    }

    /// Takes a slot if one is free and nobody waits for it. Lock-free.
    #[inline]
    pub(super) fn try_acquire(&self) -> bool {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let (in_use, queued) = unpack(cur);
            if queued != 0 || in_use >= self.max_concurrent {
                return false;
            }
            match self.word.compare_exchange_weak(
                cur,
                pack(in_use + 1, queued),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes a slot, or a place in the queue, or neither.
    pub(super) fn enqueue(&self) -> Enqueued {
        let mut q = lock(&self.queue);
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let (in_use, queued) = unpack(cur);
            let (next, outcome) = if queued == 0 && in_use < self.max_concurrent {
                (pack(in_use + 1, 0), Enqueued::Acquired)
            } else if queued >= self.max_queued {
                return Enqueued::Full;
            } else {
                (pack(in_use, queued + 1), Enqueued::Queued(q.next_id))
            };
            match self
                .word
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if let Enqueued::Queued(id) = outcome {
                        q.next_id += 1;
                        q.waiters.push_back(Waiter { id, waker: None });
                    }
                    return outcome;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives a slot back: to the oldest waiter if there is one, else to the
    /// counter.
    #[inline]
    pub(super) fn release(&self) {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let (in_use, queued) = unpack(cur);
            if queued != 0 {
                return self.hand_over();
            }
            match self.word.compare_exchange_weak(
                cur,
                pack(in_use.saturating_sub(1), 0),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    #[cold]
    fn hand_over(&self) {
        let mut q = lock(&self.queue);
        let mut cur = self.word.load(Ordering::Relaxed);
        let waker = loop {
            let (in_use, queued) = unpack(cur);
            let (next, hand_over) = if queued == 0 {
                // The waiters left meanwhile.
                (pack(in_use.saturating_sub(1), 0), false)
            } else {
                (pack(in_use, queued - 1), true)
            };
            match self
                .word
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if hand_over => {
                    break q.waiters.pop_front().and_then(|w| w.waker);
                }
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        };
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether ticket `id` has been given a slot; if not, remembers `waker`.
    fn poll_ticket(&self, id: u64, waker: &Waker) -> bool {
        let mut q = lock(&self.queue);
        match q.waiters.binary_search_by_key(&id, |w| w.id) {
            Ok(i) => {
                let w = &mut q.waiters[i];
                match &w.waker {
                    Some(old) if old.will_wake(waker) => {}
                    _ => w.waker = Some(waker.clone()),
                }
                false
            }
            Err(_) => true,
        }
    }

    /// Leaves the queue. Returns whether the ticket had been given a slot
    /// already (which the caller then owns).
    fn leave(&self, id: u64) -> bool {
        let mut q = lock(&self.queue);
        let Ok(i) = q.waiters.binary_search_by_key(&id, |w| w.id) else {
            return true;
        };
        q.waiters.remove(i);
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let (in_use, queued) = unpack(cur);
            match self.word.compare_exchange_weak(
                cur,
                pack(in_use, queued - 1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return false,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// A place in the queue. Resolves when the ticket has been given a slot;
/// dropped before that, it leaves the queue (or gives back the slot it got
/// meanwhile).
pub(super) struct Ticket<'a> {
    slots: &'a Slots,
    id: u64,
    done: bool,
}

impl<'a> Ticket<'a> {
    pub(super) fn new(slots: &'a Slots, id: u64) -> Self {
        Ticket {
            slots,
            id,
            done: false,
        }
    }

    /// Stops waiting. Returns whether a slot had been given already (the
    /// caller then owns it).
    pub(super) fn give_up(mut self) -> bool {
        self.done = true;
        self.slots.leave(self.id)
    }
}

impl Future for Ticket<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        if self.slots.poll_ticket(self.id, cx.waker()) {
            self.done = true;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done && self.slots.leave(self.id) {
            self.slots.release();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Enqueued, Slots};

    /// `enqueue` takes a free slot itself when one came free after the
    /// caller's lock-free attempt failed (a race the policy tests cannot
    /// aim at).
    #[test]
    fn enqueue_takes_a_free_slot_then_queues_then_refuses() {
        let slots = Slots::new(1, 1);
        assert!(matches!(slots.enqueue(), Enqueued::Acquired));
        assert_eq!(slots.counts(), (1, 0));
        assert!(matches!(slots.enqueue(), Enqueued::Queued(0)));
        assert_eq!(slots.counts(), (1, 1));
        assert!(matches!(slots.enqueue(), Enqueued::Full));
        assert_eq!(slots.counts(), (1, 1));
    }
}
