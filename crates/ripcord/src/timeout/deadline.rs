//! The deadline of the current task, shared by nested policies.

use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
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
    DEADLINE.try_with(|d| *d).ok()
}

/// Runs `fut` with `deadline` as the task's deadline (or the enclosing one,
/// if that is earlier), so that the policies inside respect it.
///
/// This only *informs* the policies inside: it does not cancel `fut` at the
/// deadline. To cancel, use a [`TimeoutPolicy`](crate::TimeoutPolicy) (its
/// [`execute_with_deadline`](crate::TimeoutPolicy::execute_with_deadline)
/// takes an explicit deadline).
pub async fn with_deadline<F: Future>(deadline: Instant, fut: F) -> F::Output {
    DEADLINE.scope(earliest(deadline), fut).await
}

/// `deadline`, capped by the enclosing deadline.
pub(crate) fn earliest(deadline: Instant) -> Instant {
    match current_deadline() {
        Some(outer) if outer < deadline => outer,
        _ => deadline,
    }
}

/// Runs `fut` with `deadline` (already capped) as the task's deadline.
pub(crate) fn scope<F: Future>(deadline: Instant, fut: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(deadline, fut)
}
