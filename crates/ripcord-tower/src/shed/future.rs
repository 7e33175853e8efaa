//! The response future of the shedding service.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use ripcord::{Outcome, OwnedBulkheadPermit, OwnedPermit};

use super::body::{ShedBody, ShedEnd};
use crate::http::classify_status;

pin_project! {
    /// The response future of [`ShedService`](super::ShedService): the
    /// handler's response, or a refusal ready at once.
    #[derive(Debug)]
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, B> {
        Called {
            #[pin]
            future: F,
            permit: Option<OwnedPermit>,
            slot: Option<OwnedBulkheadPermit>,
            grpc: bool,
        },
        Shed {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn called(
        future: F,
        permit: Option<OwnedPermit>,
        slot: Option<OwnedBulkheadPermit>,
        grpc: bool,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit,
                slot,
                grpc,
            },
        }
    }

    pub(super) fn shed(response: Response<B>) -> Self {
        ResponseFuture {
            kind: Kind::Shed {
                response: Some(response),
            },
        }
    }
}

/// The outcome of a handler's response head, or `None` when the status
/// comes in the trailers (a gRPC response that is not trailers-only).
fn classify<B>(grpc: bool, response: &Response<B>) -> Option<Outcome> {
    #[cfg(feature = "grpc")]
    if grpc && response.status() == http::StatusCode::OK {
        return crate::grpc::grpc_status(response.headers()).map(crate::grpc::classify_code);
    }
    let _ = grpc;
    Some(classify_status(response.status()))
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ShedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                slot,
                grpc,
            } => {
                let result = ready!(future.poll(cx));
                drop(slot.take());
                let permit = permit.take();
                Poll::Ready(match result {
                    Ok(response) => {
                        let pending = match (permit, classify(*grpc, &response)) {
                            // A success waits for the body: it may still fail.
                            (Some(p), Some(Outcome::Success)) => Some(ShedEnd::success(p)),
                            (Some(p), Some(outcome)) => {
                                p.record(outcome);
                                None
                            }
                            (Some(p), None) => Some(ShedEnd::trailers(p)),
                            (None, _) => None,
                        };
                        Ok(response.map(|b| ShedBody::new(b, pending)))
                    }
                    Err(e) => {
                        if let Some(p) = permit {
                            p.record(Outcome::Failure);
                        }
                        Err(e)
                    }
                })
            }
            KindProj::Shed { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion")
                .map(|b| ShedBody::new(b, None)))),
        }
    }
}
