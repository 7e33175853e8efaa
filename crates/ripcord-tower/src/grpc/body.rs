//! The response body that records a gRPC call's outcome at its end.

use std::pin::Pin;

use http::HeaderMap;
use ripcord::{Outcome, OwnedPermit};

use super::trailers_outcome;
use crate::body::{BodyEnd, RecordedBody};

/// A gRPC response body that records the call on its breaker when the
/// stream ends: from the `grpc-status` trailer, as a failure if the body
/// fails or ends without a status, as ignored if it is dropped first (see
/// [`GrpcEnd`]).
pub type GrpcBody<B> = RecordedBody<B, Option<GrpcEnd>>;

/// A breaker permit for a gRPC call whose status comes in the trailers
/// (the head did not decide), for a [`RecordedBody`]:
///
/// | ending | outcome |
/// |---|---|
/// | end with a `grpc-status` trailer | the code's outcome by `classify` ([`classify_code`](super::classify_code) by default) |
/// | end without a status | **Failure** |
/// | a body error | **Failure** |
/// | dropped before its end | Ignored: the stream was cancelled (as `CANCELLED` is), and nothing judged it yet |
#[derive(Debug)]
pub struct GrpcEnd {
    permit: OwnedPermit,
    classify: fn(i32) -> Outcome,
}

impl GrpcEnd {
    /// Records on `permit`, judging the status code with `classify`.
    pub fn new(permit: OwnedPermit, classify: fn(i32) -> Outcome) -> Self {
        GrpcEnd { permit, classify }
    }
}

impl<B: ?Sized> BodyEnd<B> for GrpcEnd {
    #[inline]
    fn end(self, _body: Pin<&mut B>, trailers: Option<&HeaderMap>) {
        self.permit
            .record(trailers_outcome(trailers, self.classify));
    }

    #[inline]
    fn error(self) {
        self.permit.record(Outcome::Failure);
    }

    #[inline]
    fn dropped(self) {
        self.permit.record(Outcome::Ignored);
    }
}
