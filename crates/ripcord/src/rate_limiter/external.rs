//! Rate limits decided outside the process, as policies of a pipeline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::RateLimited;

/// The future of [`ExternalLimiter::acquire`]: boxed, because a limiter in
/// a store waits for the store's answer.
pub type AcquireFuture<'a> = Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send + 'a>>;

/// A rate limit decided outside this process — by a store that a whole fleet
/// shares (ripcord-redis's `RedisRateLimiter` is one) — so that a
/// [`Pipeline`](crate::Pipeline) can run it as one of its policies, in its
/// place in the pipeline's order, like an in-process [`RateLimiter`](super::RateLimiter).
///
/// A pipeline runs it as a rate limiter: [`PolicyKind::RateLimiter`](crate::PolicyKind),
/// its refusals are [`Error::RateLimited`](crate::Error::RateLimited), and a
/// breaker outside it counts a refusal as ignored. Asking it takes a round
/// trip, so a pipeline holding one is not
/// [direct](crate::Pipeline::admit).
///
/// ```
/// use ripcord::rate_limiter::{AcquireFuture, ExternalLimiter};
/// use ripcord::{Pipeline, RateLimited};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// /// Admits the first `n` calls, then none (a stand-in for a store).
/// #[derive(Debug)]
/// struct FirstN(AtomicU32);
///
/// impl ExternalLimiter for FirstN {
///     fn name(&self) -> &str {
///         "first-n"
///     }
///     fn acquire(&self) -> AcquireFuture<'_> {
///         let left = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
///         Box::pin(async move {
///             left.map(|_| ()).map_err(|_| RateLimited::new("first-n", Duration::from_secs(1)))
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ripcord::ConfigError> {
/// let pipeline = Pipeline::<u32, std::io::Error>::builder()
///     .external_rate_limiter(FirstN(AtomicU32::new(1)))
///     .build()?;
/// assert_eq!(pipeline.execute(|| async { Ok(7) }).await.unwrap(), 7);
/// let refused = pipeline.execute(|| async { Ok(7) }).await.unwrap_err();
/// assert_eq!(refused.policy(), Some(ripcord::PolicyKind::RateLimiter));
/// # Ok(()) }
/// ```
pub trait ExternalLimiter: fmt::Debug + Send + Sync + 'static {
    /// The limiter's name (in its refusals and events).
    fn name(&self) -> &str;

    /// Takes a permit, waiting as the limiter is configured to (for the
    /// store's answer, and for a permit due soon if it reserves ahead);
    /// [`RateLimited`] when refused.
    fn acquire(&self) -> AcquireFuture<'_>;
}
