//! The response body of the shedding service.

use std::pin::Pin;

use http::HeaderMap;
use ripcord::OwnedPermit;

use crate::body::{BodyEnd, RecordedBody};

/// The response body of [`ShedService`](super::ShedService): the handler's
/// body unchanged (or a refusal's), recording the handler's call on the
/// breaker when it ends if its head did not (see [`ShedEnd`]).
pub type ShedBody<B> = RecordedBody<B, Option<ShedEnd>>;

/// What a [`ShedBody`] records at its end, for a handler's call whose
/// head was a success or, for gRPC, whose status comes in the trailers:
///
/// | ending | after a successful head | after a gRPC head without a status (feature `grpc`) |
/// |---|---|---|
/// | end | Success | the `grpc-status` trailer's outcome; **Failure** without one |
/// | error | **Failure** | **Failure** |
/// | dropped before its end | **Success** | Ignored (a cancelled call) |
///
/// These are [`OwnedPermit`]'s and `grpc::GrpcEnd`'s rules; see
/// [`body`](crate::body#what-a-breaker-records).
#[derive(Debug)]
pub struct ShedEnd(Kind);

#[derive(Debug)]
enum Kind {
    Success(OwnedPermit),
    #[cfg(feature = "grpc")]
    Trailers(crate::grpc::GrpcEnd),
}

impl ShedEnd {
    /// The head was a success: the body may still fail.
    pub(super) fn success(permit: OwnedPermit) -> Self {
        ShedEnd(Kind::Success(permit))
    }

    /// The status comes in the trailers.
    #[cfg(feature = "grpc")]
    pub(super) fn trailers(permit: OwnedPermit) -> Self {
        ShedEnd(Kind::Trailers(crate::grpc::GrpcEnd::new(
            permit,
            crate::grpc::classify_code,
        )))
    }

    /// Without gRPC every head decides; this is never called.
    #[cfg(not(feature = "grpc"))]
    pub(super) fn trailers(permit: OwnedPermit) -> Self {
        ShedEnd(Kind::Success(permit))
    }
}

impl<B: ?Sized> BodyEnd<B> for ShedEnd {
    #[inline]
    fn end(self, body: Pin<&mut B>, trailers: Option<&HeaderMap>) {
        match self.0 {
            Kind::Success(p) => p.end(body, trailers),
            #[cfg(feature = "grpc")]
            Kind::Trailers(g) => g.end(body, trailers),
        }
    }

    #[inline]
    fn error(self) {
        match self.0 {
            Kind::Success(p) => BodyEnd::<B>::error(p),
            #[cfg(feature = "grpc")]
            Kind::Trailers(g) => BodyEnd::<B>::error(g),
        }
    }

    #[inline]
    fn dropped(self) {
        match self.0 {
            Kind::Success(p) => BodyEnd::<B>::dropped(p),
            #[cfg(feature = "grpc")]
            Kind::Trailers(g) => BodyEnd::<B>::dropped(g),
        }
    }
}
