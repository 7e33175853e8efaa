//! What keeps client connections within bounds: the caps on how many are
//! open ([`Admission`]), and the deadlines of each one ([`watchdog`]).
//!
//! A connection's socket is read through [`Watched`], which counts the
//! reads that brought bytes; each request counts while it is being
//! answered, its response body included ([`Activity::begin`],
//! [`Tracked`]). From these the watchdog tells, without a clock read per
//! request:
//!
//! - a connection that has not sent a whole request head within the header
//!   deadline of being accepted (nothing at all, an HTTP/2 preface alone,
//!   a protocol never detected);
//! - an idle one: no request in flight and nothing received for the idle
//!   deadline;
//! - one that started a new request head while idle and has not finished
//!   it within the header deadline.
//!
//! The deadlines are checked every quarter of the shorter one (at most
//! every 5 s), so a connection closes within that much after its deadline.
//!
//! A connection that switched protocols (a WebSocket) leaves these
//! deadlines with its HTTP part; its tunnel keeps the connection's
//! [`Permit`] and is cut after `limits.upgrade_idle_timeout` without
//! traffic either way ([`idle_cut`]).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::access::Access;

/// The caps on open client connections: in all, and per peer IP address.
#[derive(Debug)]
pub(crate) struct Admission {
    max: usize,
    per_peer: usize,
    open: AtomicUsize,
    peers: Mutex<HashMap<IpAddr, usize>>,
}

/// A place taken under an [`Admission`]'s caps, given back when dropped
/// (with the connection).
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    /// The peer, when its count is kept.
    peer: Option<IpAddr>,
}

impl Admission {
    /// Caps of `max` connections, `per_peer` from one address.
    pub(crate) fn new(max: usize, per_peer: usize) -> Arc<Self> {
        Arc::new(Admission {
            max: max.max(1),
            per_peer: per_peer.max(1),
            open: AtomicUsize::new(0),
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `peer`, unless a cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Permit> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        // A per-peer cap as large as the whole one needs no counting.
        let peer = if self.per_peer < self.max {
            let peer = peer.to_canonical();
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let n = peers.entry(peer).or_insert(0);
            if *n >= self.per_peer {
                drop(peers);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *n += 1;
            Some(peer)
        } else {
            None
        };
        Some(Permit {
            admission: Arc::clone(self),
            peer,
        })
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            let mut peers = self
                .admission
                .peers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = peers.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    peers.remove(&peer);
                }
            }
        }
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection has done, as the watchdog reads it.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Reads of the socket that brought bytes.
    reads: AtomicU64,
    /// Requests received.
    requests: AtomicU64,
    /// Requests being answered (until their response body ends).
    in_flight: AtomicUsize,
}

/// A request being answered: counted until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Activity {
    /// A new connection's activity.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity::default())
    }

    /// Counts a request that has arrived, until the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket whose reads count in its connection's [`Activity`].
#[derive(Debug)]
pub(crate) struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    /// `io`, counted in `activity`.
    pub(crate) fn new(io: T, activity: Arc<Activity>) -> Self {
        Watched { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until it
/// ends or is dropped, and writes its access log line then, if it has one.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    inner: B,
    flight: Option<InFlight>,
    access: Option<Box<Access>>,
    ended: bool,
}

impl<B: Body> Tracked<B> {
    /// `inner`, counted by `flight`, logged by `access`.
    pub(crate) fn new(inner: B, flight: InFlight, access: Option<Box<Access>>) -> Self {
        Tracked {
            // An empty body may never be polled: it is whole from the start.
            ended: inner.is_end_stream(),
            inner,
            flight: Some(flight),
            access,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let (Some(access), Some(Ok(frame))) = (this.access.as_mut(), &frame) {
            if let Some(data) = frame.data_ref() {
                access.sent(bytes::Buf::remaining(data));
            }
        }
        // The server may stop polling at the last frame.
        if frame.is_none() || this.inner.is_end_stream() {
            this.flight = None;
            this.ended = !matches!(frame, Some(Err(_)));
            if let Some(access) = this.access.take() {
                access.finish(this.ended);
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

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Some(access) = self.access.take() {
            // Cut short, or never polled (empty from the start).
            access.finish(self.ended);
        }
    }
}

/// A connection's deadlines (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// For a request head, and for the first request as a whole.
    pub(crate) header: Duration,
    /// For a connection with nothing in flight that sends nothing.
    pub(crate) idle: Duration,
}

/// Ends when the connection `activity` counts has passed a deadline (the
/// caller then closes it).
pub(crate) async fn watchdog(activity: Arc<Activity>, deadlines: Deadlines) {
    let step = (deadlines.header.min(deadlines.idle) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(5));
    let accepted = Instant::now();
    let (mut last_reads, mut last_requests) = (0, 0);
    let mut idle_since = accepted;
    let mut reading_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let reads = activity.reads.load(Ordering::Relaxed);
        let requests = activity.requests.load(Ordering::Relaxed);
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        let next = if busy || requests != last_requests {
            (idle_since, reading_since) = (now, None);
            (last_reads, last_requests) = (reads, requests);
            now + step
        } else if requests == 0 {
            let deadline = accepted + deadlines.header;
            if now >= deadline {
                return;
            }
            deadline.min(now + step)
        } else {
            if reads != last_reads {
                last_reads = reads;
                reading_since.get_or_insert(now);
            }
            let expired = match reading_since {
                Some(since) => now >= since + deadlines.header,
                None => now >= idle_since + deadlines.idle,
            };
            if expired {
                return;
            }
            now + step
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Ends when no read through the sockets `activity` counts has brought
/// bytes for `idle` (checked every quarter of it, at most every 5 s): the
/// deadline of a tunnel, whose traffic both ways is read on one side or
/// the other.
pub(crate) async fn idle_cut(activity: &Activity, idle: Duration) {
    let step = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut last = activity.reads.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(step).await;
        let now = Instant::now();
        let reads = activity.reads.load(Ordering::Relaxed);
        if reads != last {
            (last, since) = (reads, now);
        } else if now >= since + idle {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_in_all_and_per_peer() {
        let a = Admission::new(3, 2);
        let (p, q) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = a.admit(p).expect("room");
        let _second = a.admit(p).expect("room");
        assert!(a.admit(p).is_none(), "per peer");
        let _third = a.admit(q).expect("room");
        assert!(a.admit(q).is_none(), "in all");
        drop(first);
        assert_eq!(a.open(), 2);
        assert!(a.admit(p).is_some(), "a place freed");
        // An IPv4-mapped address is the same peer.
        let b = Admission::new(10, 1);
        let _v4 = b.admit(p).expect("room");
        assert!(b.admit("::ffff:10.0.0.1".parse().unwrap()).is_none());
    }
}
