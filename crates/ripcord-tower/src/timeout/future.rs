//! The response future of the timeout service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use ripcord::TimeoutPolicy;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

pin_project! {
    /// The response future of [`TimeoutService`](super::TimeoutService):
    /// the inner call, or [`ripcord::Timeout`] (boxed) at the deadline. The
    /// timer is created only if the call is still pending at its first poll.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        deadline: Instant,
        after: Duration,
        policy: TimeoutPolicy,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        deadline: Instant,
        after: Duration,
        policy: &TimeoutPolicy,
    ) -> Self {
        ResponseFuture {
            inner,
            sleep: None,
            deadline,
            after,
            policy: policy.clone(),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        if this.sleep.is_none() {
            this.sleep
                .set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                // The time the call was given: from `call` to the deadline.
                return Poll::Ready(Err(Box::new(this.policy.timed_out(*this.after))));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use ripcord::{EventKind, TimeoutPolicy};
    use tower::{service_fn, Layer, ServiceExt};

    use crate::TimeoutLayer;

    #[tokio::test]
    async fn a_cut_call_emits_timed_out_with_the_time_it_was_given() {
        let policy = TimeoutPolicy::builder("api")
            .timeout(Duration::from_millis(20))
            .build()
            .unwrap();
        let mut events = policy.subscribe();
        let svc = TimeoutLayer::new(policy).layer(service_fn(|()| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, Infallible>(())
        }));
        let err = svc.oneshot(()).await.unwrap_err();
        let timeout = err.downcast_ref::<ripcord::Timeout>().expect("a timeout");
        assert_eq!(timeout.name(), "api");
        assert_eq!(timeout.elapsed(), Duration::from_millis(20));
        let event = events.try_recv().expect("a TimedOut event");
        let EventKind::TimedOut { elapsed } = event.kind else {
            panic!("{:?}", event.kind)
        };
        assert_eq!(elapsed, timeout.elapsed());
    }
}
