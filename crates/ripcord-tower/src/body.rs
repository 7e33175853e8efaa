//! Recording a call when its response body ends (feature `http`).
//!
//! A response head can look fine and its body still fail while it streams
//! (the connection reset mid-body, a truncated chunked body), and a gRPC
//! stream's status only comes in its trailers. [`RecordedBody`] wraps such a
//! body and tells a [`BodyEnd`] how it ended, **exactly once**:
//!
//! | the body … | call |
//! |---|---|
//! | returns `None` from `poll_frame` | [`BodyEnd::end`] (no trailers) |
//! | returns its last data frame and then reports [`is_end_stream`](Body::is_end_stream) (no further poll is needed) | [`BodyEnd::end`] (no trailers) |
//! | returns a trailers frame (always the last frame) | [`BodyEnd::end`] with the trailers |
//! | returns an error | [`BodyEnd::error`] |
//! | is dropped (or [unwrapped](RecordedBody::into_inner)) before any of these | [`BodyEnd::dropped`] |
//!
//! Whatever comes after the first of these (another poll after the end, the
//! drop of an ended or failed body) records nothing more.
//!
//! # What a breaker records
//!
//! The recorders of this crate's layers hold a breaker permit whose verdict
//! waits for the body:
//!
//! | ending | after a head judged a success ([`OwnedPermit`]: HTTP) | after a head that did not decide (gRPC, the status in the trailers: `grpc::GrpcEnd`) |
//! |---|---|---|
//! | end | Success | the trailers' `grpc-status`; **Failure** if there is none |
//! | error | **Failure** | **Failure** |
//! | dropped before its end | **Success** | Ignored (a cancelled call, as `CANCELLED` is) |
//!
//! The rule for a body dropped early: once the classifier judged the head
//! a success, the dependency answered and was sending, so a body dropped
//! before its end (its reader went away) is a **success**; a failure while
//! it streams shows as a body error, which is a failure. Counting early drops
//! as ignored would leave a failure-rate breaker blind to the successes of
//! every stream its clients abandon. A gRPC stream dropped before its
//! trailers has no verdict yet: its head said nothing, and dropping it
//! cancels the call, which the gRPC rules ignore.
//!
//! # Your own recorder
//!
//! Implement [`BodyEnd`] for what a call holds while its body streams:
//! permits, bulkhead slots ([`OwnedBulkheadPermit`] releases its slot at
//! any ending), a pooled connection to give back at the end ([`end`](BodyEnd::end)
//! gets the inner body). Tuples, arrays, [`Option`] and [`Box`] of
//! recorders are recorders: each part hears the same ending, in order.
//! Boxing keeps a body one pointer larger than its inner body.
//!
//! ```
//! use std::pin::Pin;
//! use http_body_util::{BodyExt, Full};
//! use ripcord::{CircuitBreaker, Outcome, OwnedPermit};
//! use ripcord_tower::body::{BodyEnd, RecordedBody};
//!
//! /// Records the permit and counts the bodies read to their end.
//! struct Counted(OwnedPermit, std::sync::Arc<std::sync::atomic::AtomicU32>);
//!
//! impl<B> BodyEnd<B> for Counted {
//!     fn end(self, _body: Pin<&mut B>, _trailers: Option<&http::HeaderMap>) {
//!         self.0.record(Outcome::Success);
//!         self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!     }
//!     fn error(self) {
//!         self.0.record(Outcome::Failure);
//!     }
//!     fn dropped(self) {
//!         self.0.record(Outcome::Success);
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder("api").build()?;
//! let ended = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let permit = breaker.try_acquire_owned()?;
//! let body = RecordedBody::new(Full::new(bytes::Bytes::from("hello")), Counted(permit, ended.clone()));
//! assert_eq!(body.collect().await?.to_bytes(), "hello");
//! assert_eq!(ended.load(std::sync::atomic::Ordering::Relaxed), 1);
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use ripcord::{Outcome, OwnedBulkheadPermit, OwnedPermit};

/// What a call does when its response body ends, one method per ending;
/// [`RecordedBody`] calls exactly one of them, once (each takes `self`).
/// See the [module docs](self).
pub trait BodyEnd<B: ?Sized>: Sized {
    /// The body ended: `poll_frame` returned `None`, or the inner body
    /// reported [`is_end_stream`](Body::is_end_stream) after a data frame,
    /// or it returned a trailers frame (`trailers` is then `Some`). `body`
    /// is the inner body, at its end (e.g. to give its connection back to a
    /// pool).
    fn end(self, body: Pin<&mut B>, trailers: Option<&HeaderMap>);

    /// The body returned an error before its end.
    fn error(self);

    /// The body was dropped (or unwrapped) before its end and before any
    /// error.
    fn dropped(self);
}

/// A breaker permit whose head was judged a success: **Success** at the
/// end, **Failure** on a body error, **Success** if dropped before its end.
impl<B: ?Sized> BodyEnd<B> for OwnedPermit {
    #[inline]
    fn end(self, _body: Pin<&mut B>, _trailers: Option<&HeaderMap>) {
        self.record(Outcome::Success);
    }

    #[inline]
    fn error(self) {
        self.record(Outcome::Failure);
    }

    #[inline]
    fn dropped(self) {
        self.record(Outcome::Success);
    }
}

/// A bulkhead slot: released at any ending.
impl<B: ?Sized> BodyEnd<B> for OwnedBulkheadPermit {
    #[inline]
    fn end(self, _body: Pin<&mut B>, _trailers: Option<&HeaderMap>) {}

    #[inline]
    fn error(self) {}

    #[inline]
    fn dropped(self) {}
}

/// Nothing to record.
impl<B: ?Sized> BodyEnd<B> for () {
    #[inline]
    fn end(self, _body: Pin<&mut B>, _trailers: Option<&HeaderMap>) {}

    #[inline]
    fn error(self) {}

    #[inline]
    fn dropped(self) {}
}

/// The recorder, if there is one.
impl<B: ?Sized, R: BodyEnd<B>> BodyEnd<B> for Option<R> {
    #[inline]
    fn end(self, body: Pin<&mut B>, trailers: Option<&HeaderMap>) {
        if let Some(r) = self {
            r.end(body, trailers);
        }
    }

    #[inline]
    fn error(self) {
        if let Some(r) = self {
            r.error();
        }
    }

    #[inline]
    fn dropped(self) {
        if let Some(r) = self {
            r.dropped();
        }
    }
}

/// The recorder on the heap (a body then grows by one pointer only).
impl<B: ?Sized, R: BodyEnd<B>> BodyEnd<B> for Box<R> {
    #[inline]
    fn end(self, body: Pin<&mut B>, trailers: Option<&HeaderMap>) {
        (*self).end(body, trailers);
    }

    #[inline]
    fn error(self) {
        (*self).error();
    }

    #[inline]
    fn dropped(self) {
        (*self).dropped();
    }
}

/// Each recorder of the array, first to last.
impl<B: ?Sized, R: BodyEnd<B>, const N: usize> BodyEnd<B> for [R; N] {
    #[inline]
    fn end(self, mut body: Pin<&mut B>, trailers: Option<&HeaderMap>) {
        for r in self {
            r.end(body.as_mut(), trailers);
        }
    }

    #[inline]
    fn error(self) {
        self.into_iter().for_each(BodyEnd::<B>::error);
    }

    #[inline]
    fn dropped(self) {
        self.into_iter().for_each(BodyEnd::<B>::dropped);
    }
}

macro_rules! tuple_body_end {
    ($($r:ident),+) => {
        /// Each recorder of the tuple, first to last.
        impl<B: ?Sized, $($r: BodyEnd<B>),+> BodyEnd<B> for ($($r,)+) {
            #[inline]
            #[allow(non_snake_case)]
            fn end(self, mut body: Pin<&mut B>, trailers: Option<&HeaderMap>) {
                let ($($r,)+) = self;
                $($r.end(body.as_mut(), trailers);)+
            }

            #[inline]
            #[allow(non_snake_case)]
            fn error(self) {
                let ($($r,)+) = self;
                $($r.error();)+
            }

            #[inline]
            #[allow(non_snake_case)]
            fn dropped(self) {
                let ($($r,)+) = self;
                $($r.dropped();)+
            }
        }
    };
}

tuple_body_end!(R1, R2);
tuple_body_end!(R1, R2, R3);
tuple_body_end!(R1, R2, R3, R4);

/// The recorder until an ending reaches it; told [`BodyEnd::dropped`] if
/// it is dropped first.
struct Pending<B: ?Sized, R: BodyEnd<B>> {
    recorder: Option<R>,
    _body: PhantomData<fn(Pin<&mut B>)>,
}

impl<B: ?Sized, R: BodyEnd<B>> Pending<B, R> {
    #[inline]
    fn take(&mut self) -> Option<R> {
        self.recorder.take()
    }
}

impl<B: ?Sized, R: BodyEnd<B>> Drop for Pending<B, R> {
    #[inline]
    fn drop(&mut self) {
        if let Some(r) = self.recorder.take() {
            r.dropped();
        }
    }
}

impl<B: ?Sized, R: BodyEnd<B> + std::fmt::Debug> std::fmt::Debug for Pending<B, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.recorder.fmt(f)
    }
}

pin_project! {
    /// A response body that tells its [`BodyEnd`] how it ended, exactly
    /// once; the frames pass through unchanged. See the
    /// [module docs](self).
    #[derive(Debug)]
    pub struct RecordedBody<B, R>
    where
        R: BodyEnd<B>,
    {
        #[pin]
        inner: B,
        pending: Pending<B, R>,
    }
}

impl<B, R: BodyEnd<B>> RecordedBody<B, R> {
    /// Wraps `inner`; `recorder` hears how it ends.
    #[inline]
    pub fn new(inner: B, recorder: R) -> Self {
        RecordedBody {
            inner,
            pending: Pending {
                recorder: Some(recorder),
                _body: PhantomData,
            },
        }
    }

    /// Whether the recorder still waits for the ending.
    pub fn is_pending(&self) -> bool {
        self.pending.recorder.is_some()
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the inner body; a recorder still waiting is told
    /// [`BodyEnd::dropped`].
    pub fn into_inner(self) -> B {
        let RecordedBody { inner, pending } = self;
        drop(pending);
        inner
    }
}

/// An empty body with nothing to record (as the shedding layer's body was).
impl<B: Default, R> Default for RecordedBody<B, Option<R>>
where
    R: BodyEnd<B>,
{
    fn default() -> Self {
        RecordedBody::new(B::default(), None)
    }
}

impl<B: Body, R: BodyEnd<B>> Body for RecordedBody<B, R> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if this.pending.recorder.is_some() {
            match &frame {
                None => {
                    if let Some(r) = this.pending.take() {
                        r.end(this.inner, None);
                    }
                }
                Some(Err(_)) => {
                    if let Some(r) = this.pending.take() {
                        r.error();
                    }
                }
                Some(Ok(f)) => {
                    let trailers = f.trailers_ref();
                    if trailers.is_some() || this.inner.is_end_stream() {
                        if let Some(r) = this.pending.take() {
                            r.end(this.inner, trailers);
                        }
                    }
                }
            }
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
pub(crate) mod tests;
