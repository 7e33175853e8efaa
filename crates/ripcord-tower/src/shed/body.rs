//! The response body of the shedding service.

use std::pin::Pin;

use http::HeaderMap;

use crate::body::{BodyEnd, RecordedBody};

/// The response body of [`ShedService`](super::ShedService): the handler's
/// body unchanged (or a refusal's). For a gRPC handler's normal response
/// (the status comes in the trailers), it records the call on the breaker
/// when the stream ends, as `grpc::GrpcEnd` does: by the `grpc-status`
/// trailer, as a failure if the body fails or ends without a status, as
/// ignored if it is dropped first. An HTTP response is judged at its head
/// and its body records nothing.
pub type ShedBody<B> = RecordedBody<B, Option<ShedEnd>>;

/// What a [`ShedBody`] records at its end: the breaker permit of a gRPC
/// call whose status comes in the trailers (feature `grpc`; without it
/// there is never one).
#[derive(Debug)]
pub struct ShedEnd {
    inner: Inner,
}

#[cfg(feature = "grpc")]
type Inner = crate::grpc::GrpcEnd;

#[cfg(not(feature = "grpc"))]
#[derive(Debug)]
enum Inner {}

#[cfg(feature = "grpc")]
impl ShedEnd {
    pub(super) fn grpc(permit: ripcord::OwnedPermit) -> Self {
        ShedEnd {
            inner: crate::grpc::GrpcEnd::new(permit, crate::grpc::classify_code),
        }
    }
}

#[cfg(feature = "grpc")]
impl<B: ?Sized> BodyEnd<B> for ShedEnd {
    #[inline]
    fn end(self, body: Pin<&mut B>, trailers: Option<&HeaderMap>) {
        self.inner.end(body, trailers);
    }

    #[inline]
    fn error(self) {
        BodyEnd::<B>::error(self.inner);
    }

    #[inline]
    fn dropped(self) {
        BodyEnd::<B>::dropped(self.inner);
    }
}

#[cfg(not(feature = "grpc"))]
impl<B: ?Sized> BodyEnd<B> for ShedEnd {
    fn end(self, _body: Pin<&mut B>, _trailers: Option<&HeaderMap>) {
        match self.inner {}
    }

    fn error(self) {
        match self.inner {}
    }

    fn dropped(self) {
        match self.inner {}
    }
}
