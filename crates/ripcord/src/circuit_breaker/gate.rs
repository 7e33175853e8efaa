//! A cap on the share of a registry's breakers that may be open at once.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Shared by every breaker of one registry. A breaker takes a slot before it
/// trips and gives it back when it closes; past the cap, it stays closed and
/// reports the suppressed trip (the registry *fails open*, so an outage of the
/// breakers' own making cannot cut off every key).
///
/// The cap is `max(1, floor(max_share × members))`: it rounds down, but always
/// allows one open breaker, so a small registry (one key with a share of 0.5,
/// three keys with 0.3) can still trip.
#[derive(Debug)]
pub(crate) struct OpenGate {
    max_share: f64,
    open: AtomicUsize,
    members: AtomicUsize,
}

impl OpenGate {
    pub(crate) fn new(max_share: f64) -> Self {
        OpenGate {
            max_share,
            open: AtomicUsize::new(0),
            members: AtomicUsize::new(0),
        }
    }

    pub(crate) fn try_take(&self) -> bool {
        let members = self.members.load(Ordering::Acquire).max(1);
        let allowed = cap(self.max_share, members);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < allowed).then_some(open + 1)
            })
            .is_ok()
    }

    pub(crate) fn release(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1));
    }

    pub(crate) fn joined(&self) {
        self.members.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn left(&self) {
        let _ = self
            .members
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| m.checked_sub(1));
    }

    pub(crate) fn open_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// How many of `members` breakers may be open: the share rounded down, at
/// least one.
fn cap(max_share: f64, members: usize) -> usize {
    ((max_share * members as f64).floor() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::cap;

    #[test]
    fn the_cap_rounds_down_but_allows_one() {
        assert_eq!(cap(0.5, 1), 1);
        assert_eq!(cap(0.3, 3), 1);
        assert_eq!(cap(0.3, 10), 3);
        assert_eq!(cap(0.5, 5), 2);
        assert_eq!(cap(1.0, 7), 7);
    }
}
