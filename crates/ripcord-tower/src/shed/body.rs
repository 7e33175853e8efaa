//! The response body of the shedding service.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use ripcord::{Outcome, OwnedPermit};

pin_project! {
    /// The response body of [`ShedService`](super::ShedService): the
    /// handler's body unchanged. For a gRPC handler's normal response (the
    /// status comes in the trailers), it records the call on the breaker
    /// when the stream ends: by the `grpc-status` trailer, as a failure if
    /// the body fails or ends without a status, as ignored if it is dropped
    /// first.
    #[derive(Debug, Default)]
    pub struct ShedBody<B> {
        #[pin]
        inner: B,
        pending: Option<OwnedPermit>,
    }
}

impl<B> ShedBody<B> {
    pub(super) fn new(inner: B, pending: Option<OwnedPermit>) -> Self {
        ShedBody { inner, pending }
    }

    /// Unwraps the inner body (a call still pending then counts as ignored).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// The outcome a gRPC response's trailers give.
fn trailers_outcome(trailers: &HeaderMap) -> Outcome {
    #[cfg(feature = "grpc")]
    {
        crate::grpc::grpc_status(trailers).map_or(Outcome::Failure, crate::grpc::classify_code)
    }
    #[cfg(not(feature = "grpc"))]
    {
        let _ = trailers;
        Outcome::Success
    }
}

impl<B: Body> Body for ShedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.pending.is_some() {
            let verdict = match &frame {
                Some(Ok(f)) => f.trailers_ref().map(trailers_outcome),
                Some(Err(_)) | None => Some(Outcome::Failure),
            };
            if let Some(outcome) = verdict {
                if let Some(permit) = this.pending.take() {
                    permit.record(outcome);
                }
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
