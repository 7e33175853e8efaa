//! The deadline of the current task, shared by nested policies.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;

use tokio::time::Instant;

std::thread_local! {
    /// The deadline of the future being polled on this thread: set around
    /// each poll of a scoped future (so it follows the task, like a tokio
    /// task-local, but costs a plain load and store per poll).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Puts the previous deadline back when the poll ends (or unwinds).
struct Restore(Option<Instant>);

impl Drop for Restore {
    #[inline]
    fn drop(&mut self) {
        let prev = self.0;
        let _ = DEADLINE.try_with(|d| d.set(prev));
    }
}

/// The deadline that encloses the current task, if any: the earliest of the
/// deadlines set by enclosing [`TimeoutPolicy`](crate::TimeoutPolicy) calls
/// and [`with_deadline`] scopes.
///
/// Policies read it: a timeout inside never waits past it, and a retry inside
/// never schedules an attempt that would start at or after it.
///
/// ```
/// use ripcord::timeout::{current_deadline, with_deadline};
/// use tokio::time::{Duration, Instant};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(current_deadline(), None);
/// let soon = Instant::now() + Duration::from_secs(1);
/// with_deadline(soon, async {
///     assert_eq!(current_deadline(), Some(soon));
///     // An inner, later deadline does not extend the outer one.
///     with_deadline(soon + Duration::from_secs(5), async {
///         assert_eq!(current_deadline(), Some(soon));
///     })
///     .await;
/// })
/// .await;
/// # }
/// ```
pub fn current_deadline() -> Option<Instant> {
    DEADLINE.try_with(Cell::get).ok().flatten()
}

/// Runs `fut` with `deadline` as the task's deadline (or the enclosing one,
/// if that is earlier), so that the policies inside respect it.
///
/// This only *informs* the policies inside: it does not cancel `fut` at the
/// deadline. To cancel, use a [`TimeoutPolicy`](crate::TimeoutPolicy) (its
/// [`execute_with_deadline`](crate::TimeoutPolicy::execute_with_deadline)
/// takes an explicit deadline).
pub async fn with_deadline<F: Future>(deadline: Instant, fut: F) -> F::Output {
    scope(earliest(deadline), fut).await
}

/// `deadline`, capped by the enclosing deadline.
pub(crate) fn earliest(deadline: Instant) -> Instant {
    match current_deadline() {
        Some(outer) if outer < deadline => outer,
        _ => deadline,
    }
}

/// Runs `fut` with `deadline` (already capped) as the task's deadline.
pub(crate) async fn scope<F: Future>(deadline: Instant, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    poll_fn(|cx| sync_scope(deadline, || fut.as_mut().poll(cx))).await
}

/// Runs `f` with `deadline` (already capped) as the task's deadline: for a
/// future polled by hand inside it.
#[inline]
pub(crate) fn sync_scope<R>(deadline: Instant, f: impl FnOnce() -> R) -> R {
    // During a thread's teardown the deadline is gone: run `f` without it.
    let Ok(prev) = DEADLINE.try_with(|d| d.replace(Some(deadline))) else {
        return f();
    };
    let _restore = Restore(prev);
    f()
}
