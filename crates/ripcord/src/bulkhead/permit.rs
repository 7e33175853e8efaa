//! Bulkhead permits: a slot, given back on drop.

use std::fmt;
use std::sync::Arc;

use super::Inner;

/// A bulkhead slot, borrowed from the bulkhead; given back when dropped
/// (whether the call finished, failed, panicked or was cancelled).
///
/// ```
/// use ripcord::Bulkhead;
///
/// let bulkhead = Bulkhead::builder("db").max_concurrent(1).build()?;
/// let permit = bulkhead.try_acquire()?;
/// assert!(bulkhead.try_acquire().is_err()); // full
/// drop(permit);
/// assert!(bulkhead.try_acquire().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct BulkheadPermit<'a> {
    inner: &'a Inner,
}

impl<'a> BulkheadPermit<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        BulkheadPermit { inner }
    }
}

impl Drop for BulkheadPermit<'_> {
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl fmt::Debug for BulkheadPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit")
            .field("bulkhead", &self.inner.name)
            .finish()
    }
}

/// A bulkhead slot that owns a handle to the bulkhead, so it can move into a
/// `'static` future or task; given back when dropped.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct OwnedBulkheadPermit {
    inner: Arc<Inner>,
}

impl OwnedBulkheadPermit {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        OwnedBulkheadPermit { inner }
    }
}

impl Drop for OwnedBulkheadPermit {
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl fmt::Debug for OwnedBulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedBulkheadPermit")
            .field("bulkhead", &self.inner.name)
            .finish()
    }
}
