//! The response future of the pipeline services.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use ripcord::pipeline::Admitted;
use tokio::time::Sleep;
use tower::BoxError;

use super::into_box_error;

/// A boxed pipeline run, for pipelines with a policy that may wait or call
/// again.
type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`PipelineService`](super::PipelineService)
    /// and [`KeyedPipelineService`](crate::keyed::KeyedPipelineService).
    ///
    /// For a pipeline whose policies all decide at once (timeouts, breakers,
    /// bulkheads without a queue, rate limiters that never wait; see
    /// [`Pipeline::admit`](ripcord::Pipeline::admit)), it is the inner
    /// call's own future, polled inside the pipeline's deadline and raced
    /// against it, or a refusal, ready at once: nothing is allocated (for up
    /// to two breakers and bulkheads in the pipeline), and
    /// the deadline's timer is created only if the call is still pending at
    /// its first poll. A pipeline with a retry, a hedge, a fallback or a
    /// policy that may wait runs boxed.
    ///
    /// Dropping it before it completes cancels the call: the breakers count
    /// it as ignored and slots are released.
    pub struct ResponseFuture<F, T> {
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T> {
        Admitted {
            #[pin]
            future: F,
            #[pin]
            sleep: Option<Sleep>,
            admitted: Option<Admitted<T, BoxError>>,
        },
        Refused {
            error: Option<BoxError>,
        },
        Boxed {
            future: Boxed<T>,
        },
    }
}

impl<F, T> ResponseFuture<F, T> {
    /// `future`, the call admitted by `admitted`.
    #[inline]
    pub(crate) fn admitted(future: F, admitted: Admitted<T, BoxError>) -> Self {
        ResponseFuture {
            kind: Kind::Admitted {
                future,
                sleep: None,
                admitted: Some(admitted),
            },
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }

    pub(crate) fn boxed(future: Boxed<T>) -> Self {
        ResponseFuture {
            kind: Kind::Boxed { future },
        }
    }
}

const DONE: &str = "pipeline ResponseFuture polled after completion";

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    T: 'static,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        let admitted = match kind.as_mut().project() {
            KindProj::Admitted {
                future,
                sleep,
                admitted,
            } => {
                let Some(call) = admitted.as_ref() else {
                    panic!("{DONE}")
                };
                let Some(at) = call.deadline() else {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    if let Some(call) = admitted.take() {
                        call.record(&result);
                    }
                    return Poll::Ready(result);
                };
                // The result is written out of the deadline's scope rather
                // than returned through it: a response is large to move.
                let mut ready = None;
                call.in_scope(|| {
                    if let Poll::Ready(result) = future.poll(cx) {
                        ready = Some(result);
                    }
                });
                if let Some(result) = ready {
                    let result = result.map_err(Into::into);
                    if let Some(call) = admitted.take() {
                        call.record(&result);
                    }
                    return Poll::Ready(result);
                }
                let mut sleep = sleep;
                if sleep.is_none() {
                    sleep.set(Some(tokio::time::sleep_until(at)));
                }
                if let Some(s) = sleep.as_pin_mut() {
                    if s.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                admitted.take()
            }
            KindProj::Refused { error } => return Poll::Ready(Err(error.take().expect(DONE))),
            KindProj::Boxed { future } => return future.as_mut().poll(cx),
        };
        // The deadline passed: drop the call first, then report the timeout.
        kind.set(Kind::Refused { error: None });
        match admitted {
            Some(call) => Poll::Ready(Err(into_box_error(call.timed_out()))),
            None => panic!("{DONE}"),
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Admitted { .. } => "admitted",
            Kind::Refused { .. } => "refused",
            Kind::Boxed { .. } => "boxed",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ripcord::timeout::current_deadline;
    use ripcord::{Bulkhead, CircuitBreaker, Pipeline};
    use tokio::time::Instant;
    use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

    use crate::PipelineLayer;

    /// Sets its flag when dropped.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_admitted_call_sees_the_deadline_and_is_dropped_at_it() {
        let breaker = CircuitBreaker::builder("b").build().unwrap();
        let pipeline: Pipeline<(), BoxError> = Pipeline::builder()
            .timeout(Duration::from_millis(30))
            .circuit_breaker(breaker.clone())
            .build_named("api")
            .unwrap();
        let seen = Arc::new(Mutex::new(None));
        let dropped = Arc::new(AtomicBool::new(false));
        let (s, d) = (seen.clone(), dropped.clone());
        let svc = PipelineLayer::new(pipeline).layer(service_fn(move |()| {
            let (s, d) = (s.clone(), d.clone());
            async move {
                let _guard = Dropped(d);
                *s.lock().unwrap() = current_deadline();
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, Infallible>(())
            }
        }));
        let start = Instant::now();
        let err = svc.oneshot(()).await.unwrap_err();
        let timeout = err.downcast_ref::<ripcord::Timeout>().expect("a timeout");
        assert_eq!(timeout.name(), "api");
        assert!(timeout.elapsed() >= Duration::from_millis(30));
        let deadline = seen.lock().unwrap().expect("the call saw the deadline");
        assert!(deadline >= start + Duration::from_millis(30));
        assert!(deadline <= Instant::now());
        assert!(dropped.load(Ordering::SeqCst), "the call was dropped");
        assert_eq!(breaker.stats().failures(), 1);
        // Outside the call, no deadline is left behind.
        assert_eq!(current_deadline(), None);
    }

    #[tokio::test]
    async fn a_dropped_future_ignores_the_call_and_frees_its_slot() {
        let breaker = CircuitBreaker::builder("b").build().unwrap();
        let bulkhead = Bulkhead::builder("k").max_concurrent(1).build().unwrap();
        let pipeline: Pipeline<u32, BoxError> = Pipeline::builder()
            .circuit_breaker(breaker.clone())
            .bulkhead(bulkhead.clone())
            .build()
            .unwrap();
        let mut svc = PipelineLayer::new(pipeline).layer(service_fn(|n: u32| async move {
            Ok::<_, Infallible>(n + 1)
        }));
        let pending = svc.ready().await.unwrap().call(1);
        assert_eq!(bulkhead.in_use(), 1);
        assert!(format!("{pending:?}").contains("admitted"));
        // The slot is taken: a second call is refused at once.
        let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
        assert!(err.is::<ripcord::BulkheadFull>(), "{err}");
        drop(pending);
        assert_eq!(bulkhead.in_use(), 0);
        assert_eq!(breaker.stats().calls(), 0);
        assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 3);
        assert_eq!(breaker.stats().successes(), 1);
    }
}
