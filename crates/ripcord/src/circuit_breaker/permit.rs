//! Permits: the right to make one call, and the duty to report how it went.

use std::fmt;
use std::sync::Arc;

use super::{Inner, PermitKind};
use crate::Outcome;

/// Permission to make one call through a breaker, borrowed from it.
///
/// Report the call's outcome with [`record`](Permit::record). A permit dropped
/// without a verdict (a cancelled call, a panic) counts as
/// [`Outcome::Ignored`]: it is not counted, and a half-open probe slot it held
/// is freed for another probe.
///
/// ```
/// use ripcord::{CircuitBreaker, Outcome};
///
/// let breaker = CircuitBreaker::builder("db").build().unwrap();
/// match breaker.try_acquire() {
///     Ok(permit) => {
///         let ok = true; // ... make the call ...
///         permit.record(if ok { Outcome::Success } else { Outcome::Failure });
///     }
///     Err(rejected) => eprintln!("not calling: {rejected}"),
/// };
/// ```
#[must_use = "a permit records its outcome when told; dropping it ignores the call"]
pub struct Permit<'a> {
    inner: &'a Inner,
    epoch: u64,
    kind: PermitKind,
    start: u64,
    done: bool,
}

impl<'a> Permit<'a> {
    #[inline]
    pub(super) fn new(inner: &'a Inner, epoch: u64, kind: PermitKind, start: u64) -> Self {
        Permit {
            inner,
            epoch,
            kind,
            start,
            done: false,
        }
    }

    /// Records the call's outcome.
    #[inline(always)]
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.inner
            .finish(self.epoch, self.kind, self.start, outcome);
    }

    /// Records a success.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success)
    }

    /// Records a failure.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure)
    }

    /// The epoch that admitted this call.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.kind == PermitKind::Probe
    }

    /// The same permit, owning a handle to its breaker.
    pub(super) fn into_owned(self, inner: Arc<Inner>) -> OwnedPermit {
        let this = std::mem::ManuallyDrop::new(self);
        OwnedPermit::new(inner, this.epoch, this.kind, this.start)
    }
}

impl Drop for Permit<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.done {
            self.inner
                .finish(self.epoch, self.kind, self.start, Outcome::Ignored);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.inner.name)
            .field("epoch", &self.epoch)
            .field("probe", &self.is_probe())
            .finish()
    }
}

/// A [`Permit`] that owns a handle to its breaker, for `'static` futures.
#[must_use = "a permit records its outcome when told; dropping it ignores the call"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    epoch: u64,
    kind: PermitKind,
    start: u64,
    done: bool,
}

impl OwnedPermit {
    pub(super) fn new(inner: Arc<Inner>, epoch: u64, kind: PermitKind, start: u64) -> Self {
        OwnedPermit {
            inner,
            epoch,
            kind,
            start,
            done: false,
        }
    }

    /// Records the call's outcome.
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.inner
            .finish(self.epoch, self.kind, self.start, outcome);
    }

    /// The epoch that admitted this call.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.kind == PermitKind::Probe
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if !self.done {
            self.inner
                .finish(self.epoch, self.kind, self.start, Outcome::Ignored);
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.inner.name)
            .field("epoch", &self.epoch)
            .field("probe", &self.is_probe())
            .finish()
    }
}
