//! The response future of the judged breaker service.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use ripcord::{Outcome, OwnedPermit};
use tower::BoxError;

use super::{Judge, Verdict};

pin_project! {
    /// The response future of [`JudgedBreakerService`](super::JudgedBreakerService):
    /// the inner call, whose head is judged when it arrives, or a refusal,
    /// ready at once. Dropped before it completes, the call counts as
    /// ignored.
    #[derive(Debug)]
    pub struct ResponseFuture<F, J> {
        #[pin]
        kind: Kind<F, J>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, J> {
        Called {
            #[pin]
            future: F,
            permit: Option<OwnedPermit>,
            judge: J,
        },
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<F, J> ResponseFuture<F, J> {
    pub(crate) fn called(future: F, permit: OwnedPermit, judge: J) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                judge,
            },
        }
    }

    pub(crate) fn refused(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F, J, B, E> Future for ResponseFuture<F, J>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    J: Judge<B>,
{
    type Output = Result<Response<J::Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                judge,
            } => {
                let result = ready!(future.poll(cx));
                let permit = permit.take();
                match result {
                    Ok(response) => {
                        let pending = match judge.head(&response) {
                            Verdict::AtEnd => permit,
                            Verdict::Now(outcome) => {
                                if let Some(p) = permit {
                                    p.record(outcome);
                                }
                                None
                            }
                        };
                        Poll::Ready(Ok(response.map(|b| judge.body(b, pending))))
                    }
                    Err(e) => {
                        if let Some(p) = permit {
                            p.record(Outcome::Failure);
                        }
                        Poll::Ready(Err(e.into()))
                    }
                }
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
