//! The response future of the shedding service.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use ripcord::{OwnedBulkheadPermit, OwnedPermit};

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

fn classify<B>(grpc: bool, response: &Response<B>) -> ripcord::Outcome {
    #[cfg(feature = "grpc")]
    if grpc && response.status() == http::StatusCode::OK {
        return crate::grpc::grpc_status(response.headers())
            .map_or(ripcord::Outcome::Success, crate::grpc::classify_code);
    }
    let _ = grpc;
    classify_status(response.status())
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                slot,
                grpc,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(match &result {
                        Ok(response) => classify(*grpc, response),
                        Err(_) => ripcord::Outcome::Failure,
                    });
                }
                drop(slot.take());
                Poll::Ready(result)
            }
            KindProj::Shed { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
