//! The response future shared by the admission services —
//! [`BulkheadService`](crate::BulkheadService) and
//! [`RateLimitService`](crate::RateLimitService): the call admitted at once,
//! the call waiting for admission (a bounded queue), or a refusal. Public as
//! `bulkhead::future::ResponseFuture` and `rate_limit::future::ResponseFuture`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use ripcord::OwnedBulkheadPermit;
use tower::{BoxError, Service};

/// A wait for admission: a bulkhead slot (if the policy hands one out) or
/// the policy's refusal.
pub(crate) type Wait =
    Pin<Box<dyn Future<Output = Result<Option<OwnedBulkheadPermit>, BoxError>> + Send>>;

pin_project! {
    /// The response future of [`BulkheadService`](crate::BulkheadService) and
    /// [`RateLimitService`](crate::RateLimitService). A bulkhead slot, if
    /// any, is held until the inner call's future completes or is dropped.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req>,
        slot: Option<OwnedBulkheadPermit>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req>
    where
        S: Service<Req>,
    {
        Called {
            #[pin]
            future: S::Future,
        },
        Waiting {
            wait: Wait,
            svc: Option<S>,
            req: Option<Req>,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Waiting { .. } => "waiting",
            Kind::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn called(future: S::Future, slot: Option<OwnedBulkheadPermit>) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            slot,
        }
    }

    /// Waits for `wait`, then calls `svc` (already ready) with `req`.
    pub(crate) fn waiting(wait: Wait, svc: S, req: Req) -> Self {
        ResponseFuture {
            kind: Kind::Waiting {
                wait,
                svc: Some(svc),
                req: Some(req),
            },
            slot: None,
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
            slot: None,
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    drop(this.slot.take());
                    return Poll::Ready(result.map_err(Into::into));
                }
                KindProj::Waiting { wait, svc, req } => {
                    let admitted = ready!(wait.as_mut().poll(cx));
                    let next = match (admitted, svc.take(), req.take()) {
                        (Ok(slot), Some(mut svc), Some(req)) => {
                            *this.slot = slot;
                            Kind::Called {
                                future: svc.call(req),
                            }
                        }
                        (Err(e), _, _) => Kind::Refused { error: Some(e) },
                        (Ok(_), _, _) => Kind::Refused { error: None },
                    };
                    this.kind.set(next);
                }
                KindProj::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("ResponseFuture polled after completion")))
                }
            }
        }
    }
}
