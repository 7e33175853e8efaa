//! The response body that records a gRPC call's outcome at its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use ripcord::{Outcome, OwnedPermit};

use super::grpc_status;

pin_project! {
    /// A gRPC response body that records the call on its breaker when the
    /// stream ends: from the `grpc-status` trailer, as a failure if the body
    /// fails or ends without a status, as ignored if it is dropped first.
    #[derive(Debug)]
    pub struct GrpcBody<B> {
        #[pin]
        inner: B,
        permit: Option<OwnedPermit>,
        classify: fn(i32) -> Outcome,
    }
}

impl<B> GrpcBody<B> {
    pub(super) fn new(inner: B, permit: Option<OwnedPermit>, classify: fn(i32) -> Outcome) -> Self {
        GrpcBody {
            inner,
            permit,
            classify,
        }
    }

    /// Unwraps the inner body (the call then goes unrecorded: ignored).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for GrpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let verdict = match &frame {
            Some(Ok(f)) => f
                .trailers_ref()
                .map(|t| grpc_status(t).map_or(Outcome::Failure, *this.classify)),
            Some(Err(_)) => Some(Outcome::Failure),
            None => Some(Outcome::Failure),
        };
        if let Some(outcome) = verdict {
            if let Some(permit) = this.permit.take() {
                permit.record(outcome);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
