//! Forwarding one request: the route's policies, the upstream call, the
//! header rules of a proxy, and the responses the proxy makes itself.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ripcord::pipeline::Admitted;
use ripcord::{Error, Outcome};
use ripcord_tower::body::{BodyEnd, RecordedBody};
use ripcord_tower::grpc::{self, FailureCodes};
use ripcord_tower::http::{classify_status, is_idempotent, Refusal};
use tokio::time::Instant;
use tower::BoxError;

use super::config::UpstreamProtocol;
use super::h1::{H1Body, H1Conn};
use super::h2::{H2Pool, Stream as H2Stream};
use super::policy::{RoutePolicies, Routed};
use super::stream::UpstreamStream;

/// The HTTP client the proxy forwards with: a pool of HTTP/1.1
/// connections to the upstreams' addresses, and one of multiplexed HTTP/2
/// connections ([`H2Pool`]), owned by one worker (its connections run on
/// the worker's runtime).
///
/// A request without a body goes over the proxy's own connection type
/// ([`H1Conn`]: written and answered in the request's task); one with a
/// body goes through hyper's client, which reads an early response while the
/// upload goes on. Each kind has its own idle connections.
///
/// A connection goes back to the pool when the response body it carried
/// has been read to its end; one whose body was abandoned is closed. The
/// most recently used idle connection is taken first. A request that a
/// pooled connection could not send (the upstream had closed it) is sent
/// once more on a new connection; so is a bodiless request with an
/// idempotent method when a reused connection closed before any byte of a
/// response.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamClient {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    idle: Mutex<IdleMap<SendRequest<ProxyBody>>>,
    h1: Mutex<IdleMap<H1Conn>>,
    h2: H2Pool,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
}

/// Idle connections by address (`host:port` as configured; a few
/// addresses, looked up twice per request: plain string keys and FNV rather
/// than `Authority`'s case-folding hash and comparison).
type IdleMap<C> = HashMap<Box<str>, Vec<Idle<C>>, BuildHasherDefault<Fnv>>;

/// The FNV-1a hash.
#[derive(Debug)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[derive(Debug)]
struct Idle<C> {
    conn: C,
    /// When it was pooled.
    since: std::time::Instant,
}

/// A pooled connection on loan: given back when its response body ends
/// (hyper's HTTP/1.1 sender is held here; the proxy's own connection is
/// held by the body it reads; an HTTP/2 call holds its stream's lease).
#[derive(Debug)]
struct Loan {
    pool: Arc<Pool>,
    addr: Arc<Target>,
    sender: Option<SendRequest<ProxyBody>>,
    /// The lease on an HTTP/2 connection, released with the loan.
    stream: Option<H2Stream>,
}

impl Loan {
    fn give_back(self, body: &mut Received) {
        match body {
            Either::Left(_) => {
                if let Some(sender) = self.sender {
                    self.pool.put(self.addr, sender);
                }
            }
            Either::Right(body) => {
                if let Some(conn) = body.take_idle() {
                    self.pool.put_h1(self.addr, conn);
                }
            }
        }
    }
}

/// A response body as the upstream connection gives it: hyper's client's
/// (`Left`, requests with a body) or the proxy's own connection's (`Right`,
/// requests without one).
type Received = Either<Incoming, H1Body>;

/// A connection to an upstream address could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {addr}")]
struct ConnectError {
    addr: http::uri::Authority,
    #[source]
    source: BoxError,
}

/// Locks a pool's map (a panic while it was held leaves it usable).
fn lock<C>(map: &Mutex<IdleMap<C>>) -> std::sync::MutexGuard<'_, IdleMap<C>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds an idle connection to `addr`'s list unless the list is full.
fn push_idle<C>(map: &Mutex<IdleMap<C>>, max_idle: usize, addr: &Target, conn: C) {
    let mut idle = lock(map);
    let list = match idle.get_mut(addr.key()) {
        Some(list) => list,
        None => idle.entry(addr.key().into()).or_default(),
    };
    if list.len() < max_idle {
        list.push(Idle {
            conn,
            since: std::time::Instant::now(),
        });
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleMap<SendRequest<ProxyBody>>> {
        lock(&self.idle)
    }

    fn put(&self, addr: Arc<Target>, sender: SendRequest<ProxyBody>) {
        if self.max_idle > 0 && !sender.is_closed() {
            push_idle(&self.idle, self.max_idle, &addr, sender);
        }
    }

    fn put_h1(&self, addr: Arc<Target>, conn: H1Conn) {
        if self.max_idle > 0 {
            push_idle(&self.h1, self.max_idle, &addr, conn);
        }
    }

    /// The most recently used idle connection of the proxy's own kind to
    /// `addr` that the upstream has not closed and that has settled (see
    /// [`H1Conn::settled`]; one that has not stays pooled).
    fn take_h1(&self, addr: &Arc<Target>) -> Option<H1Conn> {
        let mut idle = lock(&self.h1);
        let list = idle.get_mut(addr.key())?;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let conn = &mut list[i].conn;
            if conn.is_stale() {
                list.remove(i);
                continue;
            }
            match conn.settled() {
                Some(true) => return Some(list.remove(i).conn),
                Some(false) => {}
                None => {
                    list.remove(i);
                }
            }
        }
        None
    }

    /// The most recently used idle connection to `addr` if it is ready to
    /// send (else it stays pooled for [`take`](Self::take)).
    fn take_ready(&self, addr: &Arc<Target>) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.lock();
        let list = idle.get_mut(addr.key())?;
        while let Some(i) = list.pop() {
            if i.conn.is_closed() {
                continue;
            }
            if i.conn.is_ready() {
                return Some(i.conn);
            }
            list.push(i);
            break;
        }
        None
    }

    /// The most recently used live idle connection to `addr`.
    fn take(&self, addr: &Arc<Target>) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.lock();
        let list = idle.get_mut(addr.key())?;
        while let Some(i) = list.pop() {
            // Staleness is left to `reap`: no clock read per request.
            if !i.conn.is_closed() {
                return Some(i.conn);
            }
        }
        None
    }
}

impl UpstreamClient {
    /// A pool with these limits (see `[limits]` in the configuration).
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        UpstreamClient {
            pool: Arc::new(Pool {
                idle: Mutex::new(IdleMap::default()),
                h1: Mutex::new(IdleMap::default()),
                // No idle connection kept: let go at the next reap.
                h2: H2Pool::new(if max_idle == 0 {
                    Duration::ZERO
                } else {
                    idle_timeout
                }),
                connect_timeout,
                idle_timeout,
                max_idle,
            }),
        }
    }

    /// How often [`reap`](Self::reap) should run.
    pub(crate) fn reap_period(&self) -> Duration {
        (self.pool.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// Closes the idle connections older than the idle timeout, or closed
    /// by their upstream.
    pub(crate) fn reap(&self) {
        let timeout = self.pool.idle_timeout;
        let fresh = |since: std::time::Instant| since.elapsed() < timeout;
        self.pool.lock().retain(|_, list| {
            list.retain(|i| !i.conn.is_closed() && fresh(i.since));
            !list.is_empty()
        });
        lock(&self.pool.h1).retain(|_, list| {
            list.retain_mut(|i| !i.conn.is_stale() && fresh(i.since));
            !list.is_empty()
        });
        self.pool.h2.reap();
    }

    /// A ready pooled connection to `addr`, if there is one.
    async fn pooled(&self, addr: &Arc<Target>) -> Option<SendRequest<ProxyBody>> {
        while let Some(mut sender) = self.pool.take(addr) {
            if sender.is_ready() {
                return Some(sender);
            }
            // Its last response has just ended: the connection is about to
            // take the next request.
            let wait = self.pool.connect_timeout;
            if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
                return Some(sender);
            }
        }
        None
    }

    /// A new HTTP/1.1 connection to `addr` (see [`Self::connect_stream`]).
    async fn connect_tcp(&self, addr: &Arc<Target>) -> Result<UpstreamStream, ConnectError> {
        self.connect_stream(addr, false).await
    }

    /// A new connection to `addr`, its TLS handshake done if it has TLS
    /// (offering `h2` by ALPN when `h2`, else `http/1.1`), within the connect
    /// timeout.
    async fn connect_stream(
        &self,
        addr: &Arc<Target>,
        h2: bool,
    ) -> Result<UpstreamStream, ConnectError> {
        let fail = |source: BoxError| ConnectError {
            addr: addr.addr.clone(),
            source,
        };
        let connect = async {
            let stream = tokio::net::TcpStream::connect(addr.addr.as_str()).await?;
            let _ = stream.set_nodelay(true);
            #[cfg(not(feature = "tls"))]
            let _ = h2;
            #[cfg(feature = "tls")]
            if let Some(tls) = if h2 { &addr.tls_h2 } else { &addr.tls } {
                let stream = tls.connect(stream).await?;
                return Ok(UpstreamStream::Tls(Box::new(stream)));
            }
            Ok::<_, std::io::Error>(UpstreamStream::Plain(stream))
        };
        match tokio::time::timeout(self.pool.connect_timeout, connect).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(fail(Box::new(e))),
            Err(_) => Err(fail(
                format!("no connection within {:?}", self.pool.connect_timeout).into(),
            )),
        }
    }

    /// A new connection to `addr` through hyper's client, its connection
    /// task running on this worker.
    async fn connect(&self, addr: &Arc<Target>) -> Result<SendRequest<ProxyBody>, ConnectError> {
        let stream = self.connect_tcp(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError {
                addr: addr.addr.clone(),
                source: Box::new(e),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends `req` (origin-form URI) to `addr` on a pooled or new
    /// connection.
    async fn send(
        &self,
        addr: &Arc<Target>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Received>, Loan), BoxError> {
        if req.body().is_end_stream() {
            let (head, _) = req.into_parts();
            let response = self.send_h1(addr, &head).await?;
            return Ok((response.map(Either::Right), self.loan(addr, None)));
        }
        // On the heap: the future of a bodiless request stays small (it is
        // moved a few times on its way).
        let (response, sender) = Box::pin(self.send_hyper(addr, req)).await?;
        Ok((response.map(Either::Left), self.loan(addr, Some(sender))))
    }

    /// Sends a bodiless request on the proxy's own connection: a pooled one
    /// (the usual case, whose future stays small) or a new one.
    async fn send_h1(
        &self,
        addr: &Arc<Target>,
        head: &http::request::Parts,
    ) -> Result<Response<H1Body>, BoxError> {
        if let Some(conn) = self.pool.take_h1(addr) {
            match conn.send(head).await {
                Ok(response) => return Ok(response),
                // The upstream closed the idle connection as the request
                // went out: it was not handled.
                Err(e) if e.nothing_received && (!e.written || is_idempotent(&head.method)) => {}
                Err(e) => return Err(Box::new(e.error)),
            }
        }
        Box::pin(async {
            let conn = H1Conn::new(self.connect_tcp(addr).await?);
            conn.send(head)
                .await
                .map_err(|e| -> BoxError { Box::new(e.error) })
        })
        .await
    }

    /// Sends a request with a body through hyper's client.
    ///
    /// The usual case (a ready pooled connection) keeps its future small;
    /// the others run on the heap.
    async fn send_hyper(
        &self,
        addr: &Arc<Target>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, SendRequest<ProxyBody>), BoxError> {
        let Some(mut sender) = self.pool.take_ready(addr) else {
            return Box::pin(self.send_slow(addr, req)).await;
        };
        let response = match sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                // Not sent: the upstream closed the idle connection.
                Some(req) => {
                    drop(e);
                    return Box::pin(self.send_fresh(addr, req)).await;
                }
                None => return Err(Box::new(e.into_error())),
            },
        };
        Ok((response, sender))
    }

    /// [`send_hyper`](Self::send_hyper) when no pooled connection is ready
    /// now.
    async fn send_slow(
        &self,
        addr: &Arc<Target>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, SendRequest<ProxyBody>), BoxError> {
        let Some(mut sender) = self.pooled(addr).await else {
            return self.send_fresh(addr, req).await;
        };
        let response = match sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    drop(e);
                    return self.send_fresh(addr, req).await;
                }
                None => return Err(Box::new(e.into_error())),
            },
        };
        Ok((response, sender))
    }

    /// Sends `req` on a new connection to `addr`.
    async fn send_fresh(
        &self,
        addr: &Arc<Target>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, SendRequest<ProxyBody>), BoxError> {
        let mut sender = self.connect(addr).await?;
        let response = sender.send_request(req).await?;
        Ok((response, sender))
    }

    /// Sends `req` (absolute URI, HTTP/2) to `addr` on its HTTP/2
    /// connection, made if there is none (TLS offering `h2` by ALPN when the
    /// upstream has TLS).
    async fn send_h2(
        &self,
        addr: &Arc<Target>,
        req: Request<ProxyBody>,
    ) -> Result<(Response<Received>, Loan), BoxError> {
        let connect = || async {
            self.connect_stream(addr, true)
                .await
                .map_err(|e| -> BoxError { Box::new(e) })
        };
        let (response, stream) = self.pool.h2.send(addr.key(), req, connect).await?;
        let mut loan = self.loan(addr, None);
        loan.stream = Some(stream);
        Ok((response.map(Either::Left), loan))
    }

    fn loan(&self, addr: &Arc<Target>, sender: Option<SendRequest<ProxyBody>>) -> Loan {
        Loan {
            pool: Arc::clone(&self.pool),
            addr: addr.clone(),
            sender,
            stream: None,
        }
    }
}

/// A body the proxy sends or receives: streamed from a peer, or made whole by
/// the proxy.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// A request body streaming from the client to the upstream.
    Incoming(RequestBody),
    /// A response body streaming from the upstream, holding its call's
    /// breaker permits and bulkhead slots until it ends.
    Upstream(UpstreamBody),
    /// A body the proxy made (empty when `None`).
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// An empty body.
    pub(crate) fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// A body of `text`.
    pub(crate) fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Incoming(b) => b.is_end_stream(),
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Incoming(b) => b.size_hint(),
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// A client's request body on its way to the upstream: a pause longer than
/// `limits.body_read_timeout` while the upstream waits for more ends it
/// with an error (the upload is cut off, the client gets 400). The time
/// the upstream takes to read is not counted: the deadline runs only while
/// the body is being waited for.
#[derive(Debug)]
pub(crate) struct RequestBody {
    inner: Incoming,
    timeout: Duration,
    /// Made at the first wait; reset at the start of each wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `timer` runs for the current wait.
    waiting: bool,
}

/// The client paused its request body longer than the body deadline.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no more of its request body within {0:?}")]
struct BodyTimeout(Duration);

impl RequestBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        RequestBody {
            inner,
            timeout,
            timer: None,
            waiting: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = tokio::time::Instant::now() + this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.waiting {
            timer.as_mut().reset(deadline);
            this.waiting = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What an attempt's policies handed out (breaker permits, bulkhead
/// slots), kept while its response body streams, and the verdict already
/// given by the head if it was not a success.
#[derive(Debug)]
struct Verdict {
    admitted: Admitted<Response<ProxyBody>, BoxError>,
    /// The head's outcome when it was not a success (or, for a gRPC call,
    /// when the head carried the status): it stands whatever the body does.
    fixed: Option<Outcome>,
    /// For a gRPC call, its failure codes: the stream's end is judged by
    /// its `grpc-status` trailer, and a stream dropped before its end is
    /// ignored (ripcord-tower's gRPC rules).
    grpc: Option<FailureCodes>,
}

impl Verdict {
    fn record(self, body: Outcome) {
        self.admitted.record_outcome(self.fixed.unwrap_or(body));
    }

    fn end(self, trailers: Option<&HeaderMap>) {
        let outcome = match self.grpc {
            Some(codes) => grpc::trailers_outcome(trailers, |c| codes.outcome(c)),
            None => Outcome::Success,
        };
        self.record(outcome);
    }

    fn dropped(self) {
        let outcome = match self.grpc {
            Some(_) => Outcome::Ignored,
            None => Outcome::Success,
        };
        self.record(outcome);
    }
}

/// An upstream response body. ripcord-tower's body-end recorder
/// ([`RecordedBody`]) tells the attempt's policies how it ended: a body
/// error is a failure of every breaker of the attempt, its end a success,
/// and so is a body the client abandoned (the upstream answered and was
/// sending); the bulkhead slots are released at any ending, and the
/// connection goes back to its pool at the end.
#[derive(Debug)]
pub(crate) struct UpstreamBody(RecordedBody<Trailers, Box<Held>>);

/// What an upstream response body holds until it ends (on the heap: every
/// request and response the proxy moves around carries a body, so bodies
/// stay small).
#[derive(Debug)]
struct Held {
    verdict: Option<Verdict>,
    /// The connection, given back to the pool at the body's end.
    loan: Option<Loan>,
}

impl BodyEnd<Trailers> for Held {
    fn end(self, body: Pin<&mut Trailers>, trailers: Option<&HeaderMap>) {
        if let Some(v) = self.verdict {
            v.end(trailers);
        }
        if let Some(loan) = self.loan {
            loan.give_back(&mut body.get_mut().inner);
        }
    }

    fn error(self) {
        if let Some(v) = self.verdict {
            v.record(Outcome::Failure);
        }
        // The connection is broken: it closes with its loan.
    }

    fn dropped(self) {
        if let Some(v) = self.verdict {
            v.dropped();
        }
    }
}

/// `inner`, whose ending `verdict` hears, given back to the pool by `loan`
/// at its end; its trailers reach the client if it asked for them.
fn upstream_body(
    inner: Received,
    verdict: Option<Verdict>,
    loan: Option<Loan>,
    trailers: bool,
) -> UpstreamBody {
    UpstreamBody(RecordedBody::new(
        Trailers { inner, trailers },
        Box::new(Held { verdict, loan }),
    ))
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// An upstream body with its trailers filtered ([`filter_trailers`]), or
/// dropped when the client did not ask for them (`TE: trailers`): a
/// trailers frame left empty is not sent, and the body ends there.
#[derive(Debug)]
struct Trailers {
    inner: Received,
    trailers: bool,
}

impl Body for Trailers {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let mut frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
            if let Some(Ok(f)) = &mut frame {
                if let Some(trailers) = f.trailers_mut() {
                    if this.trailers {
                        filter_trailers(trailers);
                    } else {
                        trailers.clear();
                    }
                    if trailers.is_empty() {
                        // Nothing left to send: the body ends here (or goes
                        // on, for a body that is not at its end).
                        if this.inner.is_end_stream() {
                            return Poll::Ready(None);
                        }
                        continue;
                    }
                }
            }
            return Poll::Ready(frame);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a trailer field may reach the client (RFC 9110 §6.5.1): not
/// one that frames the message or is hop-by-hop, routes it, authenticates,
/// controls caching or the request, describes the content, or sets cookies;
/// these must be in the header section to mean anything, and a client or an
/// HTTP/2 peer may act on them (HTTP/2 resets a stream whose trailers carry
/// a connection-specific field).
fn trailer_allowed(name: &HeaderName) -> bool {
    let name = name.as_str();
    !(name.starts_with("proxy-")
        || hop_by_hop_index(name).is_some()
        || matches!(
            name,
            "content-length"
                | "content-type"
                | "content-encoding"
                | "content-range"
                | "content-location"
                | "content-language"
                | "host"
                | "authorization"
                | "www-authenticate"
                | "authentication-info"
                | "cookie"
                | "set-cookie"
                | "cache-control"
                | "expect"
                | "max-forwards"
                | "pragma"
                | "range"
                | "if-match"
                | "if-none-match"
                | "if-modified-since"
                | "if-unmodified-since"
                | "if-range"
                | "age"
                | "date"
                | "expires"
                | "location"
                | "retry-after"
                | "vary"
                | "warning"
                | "alt-svc"
                | "strict-transport-security"
        ))
}

/// Removes the trailer fields a proxy does not pass on (see
/// [`trailer_allowed`]).
fn filter_trailers(trailers: &mut HeaderMap) {
    if trailers.keys().all(trailer_allowed) {
        return;
    }
    let names: Vec<HeaderName> = trailers
        .keys()
        .filter(|k| !trailer_allowed(k))
        .cloned()
        .collect();
    for n in names {
        trailers.remove(n);
    }
}

/// Whether a request's `TE` says the client accepts trailers.
fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        })
    })
}

/// Makes a response's `Content-Length` one value: `5, 5` or two equal
/// fields become `5` (RFC 9110 §8.6). Differing values are an error (the
/// upstream clients refuse them before this).
fn normalize_content_length(headers: &mut HeaderMap) -> Result<(), ()> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    let single = values.next().is_none() && !first.as_bytes().contains(&b',');
    if single {
        return Ok(());
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().map_err(|_| ())?.split(',') {
            let n: u64 = part.trim().parse().map_err(|_| ())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    let n = length.ok_or(())?;
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    Ok(())
}

/// An upstream: its addresses, used in turn, the protocol spoken to it,
/// and how its gRPC calls are judged.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    addresses: Vec<Arc<Target>>,
    next: AtomicUsize,
    protocol: UpstreamProtocol,
    grpc_failures: FailureCodes,
}

/// One address of an upstream, and how to connect to it.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host:port` as configured.
    addr: http::uri::Authority,
    /// Its connections' key in the pools: the address, and for TLS the
    /// upstream's name too (its TLS settings are the upstream's).
    key: Box<str>,
    /// TLS to it, when the upstream has `tls`.
    #[cfg(feature = "tls")]
    tls: Option<super::tls::Connector>,
    /// TLS to it for HTTP/2 connections (ALPN `h2`).
    #[cfg(feature = "tls")]
    tls_h2: Option<super::tls::Connector>,
}

impl Target {
    /// Plain TCP to `addr`.
    pub(crate) fn plain(addr: http::uri::Authority) -> Arc<Self> {
        Arc::new(Target {
            key: addr.as_str().into(),
            addr,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_h2: None,
        })
    }

    /// TLS to `addr`, for the upstream `upstream`: `h1` for HTTP/1.1
    /// connections, `h2` for HTTP/2 ones.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(
        addr: http::uri::Authority,
        upstream: &str,
        h1: super::tls::Connector,
        h2: super::tls::Connector,
    ) -> Arc<Self> {
        Arc::new(Target {
            key: format!("{addr} tls {upstream}").into(),
            addr,
            tls: Some(h1),
            tls_h2: Some(h2),
        })
    }

    /// The pools' key.
    fn key(&self) -> &str {
        &self.key
    }

    /// The scheme of its absolute URIs (HTTP/2 requests).
    fn scheme(&self) -> http::uri::Scheme {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return http::uri::Scheme::HTTPS;
        }
        http::uri::Scheme::HTTP
    }
}

impl Upstream {
    pub(crate) fn new(
        name: &str,
        addresses: Vec<Arc<Target>>,
        protocol: UpstreamProtocol,
        grpc_failures: FailureCodes,
    ) -> Self {
        Upstream {
            name: name.to_string(),
            addresses,
            next: AtomicUsize::new(0),
            protocol,
            grpc_failures,
        }
    }

    fn pick(&self) -> &Arc<Target> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.addresses[i % self.addresses.len()]
    }
}

/// Where a request came from, for the `X-Forwarded-*` headers (made once
/// per client connection).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The client's IP address, as a header value.
    ip: HeaderValue,
    /// `X-Forwarded-Proto`: `https` on a TLS listener, else `http`.
    proto: HeaderValue,
}

impl Peer {
    /// The peer at `remote`, on a TLS listener if `tls`.
    pub(crate) fn new(remote: SocketAddr, tls: bool) -> Self {
        let ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        Peer { ip, proto }
    }
}

/// Headers a proxy never forwards (RFC 9110 §7.6.1), besides those named by
/// `Connection` and any `Proxy-*` (`Connection` first).
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The names of [`HOP_BY_HOP`], for matching `Connection` tokens.
const HOP_BY_HOP_NAMES: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The position of a (lower-case) header name in [`HOP_BY_HOP`].
fn hop_by_hop_index(name: &str) -> Option<usize> {
    match name {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "te" => Some(2),
        "trailer" => Some(3),
        "transfer-encoding" => Some(4),
        "upgrade" => Some(5),
        _ => None,
    }
}

/// Removes the hop-by-hop headers: those `Connection` names, the fixed
/// list, and every `Proxy-*` header.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the headers (most heads carry none of them, or only
    // `Connection: keep-alive`), no lookups.
    let (mut hop, mut proxy) = ([false; HOP_BY_HOP.len()], false);
    // What `Connection` names besides the fixed list (which goes anyway):
    // allocated only when there is any.
    let mut named: Vec<HeaderName> = Vec::new();
    for (k, v) in headers.iter() {
        let k = k.as_str();
        match hop_by_hop_index(k) {
            Some(i) => {
                hop[i] = true;
                if i == 0 {
                    connection_names(v, &mut named);
                }
            }
            None => proxy |= k.starts_with("proxy-"),
        }
    }
    for n in &named {
        headers.remove(n);
    }
    for (n, present) in HOP_BY_HOP.iter().zip(hop) {
        if present {
            headers.remove(n);
        }
    }
    if proxy {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for n in names {
            headers.remove(n);
        }
    }
}

/// Adds to `out` the headers a `Connection` value names, except those of
/// the fixed list (a name that is not a valid header name matches nothing).
fn connection_names(connection: &HeaderValue, out: &mut Vec<HeaderName>) {
    let Ok(v) = connection.to_str() else {
        return;
    };
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if HOP_BY_HOP_NAMES
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            continue;
        }
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            out.push(n);
        }
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Makes the upstream request head from the client's.
///
/// The head has been through [`prepare`](super::request::prepare): its
/// `Host` is the one it was routed by. `X-Forwarded-Proto` and
/// `X-Forwarded-Host` are the proxy's own (`http`, or `https` on a TLS
/// listener; that host), whatever the client sent; `X-Forwarded-For` gets
/// the client's address appended.
fn upstream_head(parts: &mut http::request::Parts, peer: &Peer) {
    let host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    let xff = match parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) if !prev.trim().is_empty() => {
            let ip = peer.ip.as_bytes();
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
        }
        _ => Some(peer.ip.clone()),
    };
    // `insert` replaces every earlier value.
    match xff {
        Some(v) => {
            parts.headers.insert(&X_FORWARDED_FOR, v);
        }
        None => {
            parts.headers.remove(&X_FORWARDED_FOR);
        }
    }
    parts.headers.insert(&X_FORWARDED_PROTO, peer.proto.clone());
    match host {
        Some(h) => {
            parts.headers.insert(&X_FORWARDED_HOST, h);
        }
        None => {
            parts.headers.remove(&X_FORWARDED_HOST);
        }
    }
    parts.version = Version::HTTP_11;
}

/// The upstream request's URI: `original`'s path and query (moved, not
/// parsed again), in origin form.
fn upstream_uri(original: Uri) -> Uri {
    let pq = original
        .into_parts()
        .path_and_query
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// What one request asks of its attempts besides its head and body.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// The client accepts trailers (`TE: trailers`, or a gRPC call).
    trailers: bool,
    /// For a gRPC call, the upstream's failure codes.
    grpc: Option<FailureCodes>,
    /// The caller's deadline (its `grpc-timeout`), and the budget it set.
    deadline: Option<(Instant, Duration)>,
    /// Over HTTP/2 to the upstream.
    h2: bool,
}

impl Call {
    /// What `parts` (the client's head, before [`upstream_head`]) asks
    /// for, to `upstream`.
    fn of(parts: &http::request::Parts, upstream: &Upstream) -> Call {
        let is_grpc = grpc::is_grpc_request(&parts.headers);
        let h2 = match upstream.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::H2c => true,
            UpstreamProtocol::Auto => is_grpc && parts.version == Version::HTTP_2,
        };
        let deadline = if is_grpc {
            parts
                .headers
                .get(&GRPC_TIMEOUT)
                .and_then(grpc::parse_grpc_timeout)
                .map(|budget| (Instant::now() + budget, budget))
        } else {
            None
        };
        Call {
            trailers: is_grpc || accepts_trailers(&parts.headers),
            grpc: is_grpc.then_some(upstream.grpc_failures),
            deadline,
            h2,
        }
    }
}

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Forwards one request through the route's policies. With `upgrade` (the
/// protocol a bodiless HTTP/1.1 request asks to switch to), the request
/// keeps `Connection: upgrade` and that `Upgrade`, and makes one attempt.
pub(crate) async fn forward(
    client: &UpstreamClient,
    route: &RoutePolicies,
    req: Request<Incoming>,
    peer: &Peer,
    body_read_timeout: Duration,
    upgrade: Option<HeaderValue>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let call = Call::of(&parts, &route.upstream);
    upstream_head(&mut parts, peer);
    let bodiless = body.is_end_stream();
    // An upgrade is not sent twice: a second `101` would be a second
    // tunnel.
    let replay = bodiless && is_idempotent(&parts.method) && upgrade.is_none();
    if let Some(protocol) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    let body = move || {
        if bodiless {
            ProxyBody::empty()
        } else {
            ProxyBody::Incoming(RequestBody::new(body, body_read_timeout))
        }
    };
    let result = match route.around(replay) {
        None => attempt(client, route, Request::from_parts(parts, body()), call).await,
        Some(pipeline) if replay => {
            // On the heap, like every part a route may not have: the
            // future of a request without them stays small.
            Box::pin(pipeline.execute_composed(|| {
                let req = Request::from_parts(clone_parts(&parts), ProxyBody::empty());
                attempt(client, route, req, call)
            }))
            .await
        }
        Some(pipeline) => {
            // Sent once: the body goes with the only attempt.
            let req = Mutex::new(Some(Request::from_parts(parts, body())));
            Box::pin(pipeline.execute_composed(|| {
                let req = req.lock().unwrap_or_else(|e| e.into_inner()).take();
                async move {
                    match req {
                        Some(req) => attempt(client, route, req, call).await,
                        None => Err(Error::Inner("the request was sent already".into())),
                    }
                }
            }))
            .await
        }
    };
    result.unwrap_or_else(|e| refusal(route, &e, call.grpc.is_some()))
}

fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

/// One attempt: the policies of the attempt admit it (see
/// [`policy`](super::policy)), the call runs within their deadline (and the
/// caller's `grpc-timeout`) until the response head, and the response body
/// keeps what they handed out until it ends.
async fn attempt(
    client: &UpstreamClient,
    route: &RoutePolicies,
    mut req: Request<ProxyBody>,
    call: Call,
) -> Routed {
    let admitted = match route.attempt.admit() {
        Some(admitted) => admitted?,
        // A policy that may wait (a bulkhead's queue, a rate limiter's
        // wait, a limiter in the store): off the fast path.
        None => match Box::pin(route.attempt.admit_waiting()).await {
            Some(admitted) => admitted?,
            None => {
                return Err(Error::Inner(
                    "the attempt's policies cannot admit it".into(),
                ))
            }
        },
    };
    // A drill's faults, inside the policies (off the fast path: one load
    // when none runs).
    let admitted = match route.fault.decide() {
        None => admitted,
        Some(injection) => Box::pin(admitted.inject(&route.fault, injection)).await?,
    };
    let addr = route.upstream.pick();
    // The caller's deadline when it comes before the policies': what is
    // left of it goes to the upstream as its `grpc-timeout`.
    let caller = match (call.deadline, admitted.deadline()) {
        (Some((at, budget)), Some(policies)) if at < policies => Some((at, budget)),
        (Some(d), None) => Some(d),
        _ => None,
    };
    if let Some((at, budget)) = call.deadline {
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            admitted.record_outcome(Outcome::Failure);
            return Err(Error::Timeout(ripcord::Timeout::new(
                "grpc-timeout",
                budget,
            )));
        }
        req.headers_mut()
            .insert(&GRPC_TIMEOUT, grpc::format_grpc_timeout(left));
    }
    let uri = std::mem::take(req.uri_mut());
    if call.h2 {
        h2_head(&mut req, uri, addr, call.trailers);
    } else {
        *req.uri_mut() = upstream_uri(uri);
        // A request without `Host` (HTTP/1.0) names the upstream.
        if !req.headers().contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(addr.addr.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
    }
    let sent = if call.h2 {
        // On the heap: HTTP/1.1 requests keep a small future.
        let send = Box::pin(client.send_h2(addr, req));
        within(&admitted, caller, send).await
    } else {
        within(&admitted, caller, client.send(addr, req)).await
    };
    let sent = match sent {
        Some(sent) => sent,
        None => {
            return Err(match caller {
                Some((_, budget)) => {
                    admitted.record_outcome(Outcome::Failure);
                    Error::Timeout(ripcord::Timeout::new("grpc-timeout", budget))
                }
                None => admitted.timed_out(),
            })
        }
    };
    match sent {
        Err(e) if request_body_failed(&*e) => {
            // The client's upload broke off: not the upstream's fault.
            admitted.record_outcome(Outcome::Ignored);
            Err(Error::Inner(Box::new(RequestBodyFailed(e))))
        }
        Err(e) => {
            admitted.record_outcome(Outcome::Failure);
            tracing::debug!(
                target: crate::LOG_TARGET,
                upstream = %route.upstream.name,
                address = %addr.addr,
                error = %crate::error_chain(&*e),
                "the upstream request failed"
            );
            Err(Error::Inner(e))
        }
        Ok((response, loan)) => {
            let (mut head, mut inner) = response.into_parts();
            // A `101` names the protocol switched to, for the client too.
            let switched = (head.status == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| head.headers.get(header::UPGRADE).cloned())
                .flatten();
            strip_hop_by_hop(&mut head.headers);
            if let Some(protocol) = switched {
                head.headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                head.headers.insert(header::UPGRADE, protocol);
            }
            if normalize_content_length(&mut head.headers).is_err() {
                // The connection (its loan dropped) closes.
                admitted.record_outcome(Outcome::Failure);
                return Err(Error::Inner(
                    "the upstream's response has differing `Content-Length` values".into(),
                ));
            }
            let fixed = match call.grpc {
                // The status in the head (trailers-only), or at the end.
                Some(codes) => grpc::head_outcome(head.status, &head.headers, |c| codes.outcome(c)),
                None => {
                    let outcome = classify_status(head.status);
                    (outcome != Outcome::Success).then_some(outcome)
                }
            };
            let verdict = Verdict {
                admitted,
                fixed,
                grpc: call.grpc,
            };
            // A response without a body (HEAD, 204, 304, an empty one)
            // frees its connection now: the body may never be polled.
            let loan = if inner.is_end_stream() {
                loan.give_back(&mut inner);
                None
            } else {
                Some(loan)
            };
            let body = upstream_body(inner, Some(verdict), loan, call.trailers);
            Ok(Response::from_parts(head, ProxyBody::Upstream(body)))
        }
    }
}

/// `send` within the policies' deadline, or the caller's when it is given
/// (it comes first); `None` when the deadline passed.
async fn within<F: Future>(
    admitted: &Admitted<Response<ProxyBody>, BoxError>,
    caller: Option<(Instant, Duration)>,
    send: F,
) -> Option<F::Output> {
    match caller.map(|(at, _)| at).or(admitted.deadline()) {
        Some(at) => tokio::time::timeout_at(at, send).await.ok(),
        None => Some(send.await),
    }
}

/// Makes `req` an HTTP/2 request: the absolute URI (`http`, or `https` to
/// a TLS upstream; the routed
/// `Host` or else the upstream's address as its authority, `uri`'s path and
/// query), no `Host` header (HTTP/2 carries it as `:authority`), and
/// `TE: trailers` when the client accepts them (gRPC servers ask for it).
fn h2_head(req: &mut Request<ProxyBody>, uri: Uri, addr: &Target, trailers: bool) {
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| addr.addr.clone());
    let mut parts = uri.into_parts();
    parts.scheme = Some(addr.scheme());
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
    *req.version_mut() = Version::HTTP_2;
    if trailers {
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The client's request body failed while it was forwarded.
#[derive(Debug, thiserror::Error)]
#[error("the request body from the client broke off")]
pub(crate) struct RequestBodyFailed(#[source] BoxError);

/// Whether a client error comes from the request body the proxy was
/// sending (hyper reports a failing outgoing body as a user error).
fn request_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// What the proxy answers when a policy refused or the upstream failed (and
/// no fallback answered): a status naming the policy, or for a gRPC call
/// (`grpc`) the gRPC status ([`Refusal::grpc_response`]: `UNAVAILABLE`
/// with `grpc-retry-pushback-ms` for an open breaker, `RESOURCE_EXHAUSTED`
/// for a rate limit, `DEADLINE_EXCEEDED` for a timeout).
fn refusal(route: &RoutePolicies, e: &Error<BoxError>, grpc: bool) -> Response<ProxyBody> {
    // Status, `Retry-After` and policy header: ripcord-tower's one mapping.
    let mut answer = Refusal::of(e);
    if grpc {
        return answer.grpc_response(ProxyBody::empty());
    }
    let text = match e {
        Error::Rejected(r) => format!(
            "circuit breaker `{}` is {}: upstream `{}` is not called for now\n",
            r.name(),
            r.state(),
            route.upstream.name
        ),
        Error::RateLimited(r) => format!("rate limiter `{}`: too many requests\n", r.name()),
        Error::BulkheadFull(b) => format!(
            "bulkhead `{}` is full ({} concurrent calls)\n",
            b.name(),
            b.max_concurrent()
        ),
        Error::Timeout(t) => format!(
            "upstream `{}` did not answer within {:?}\n",
            route.upstream.name,
            t.elapsed()
        ),
        Error::Injected(i) => format!("{i}: a drill on route `{}`\n", route.name),
        Error::Inner(e) if e.is::<RequestBodyFailed>() => {
            // The client's fault, not the upstream's.
            answer.status = StatusCode::BAD_REQUEST;
            answer.retry_after = None;
            "the request body broke off before its end\n".to_string()
        }
        _ => format!("upstream `{}` is unreachable\n", route.upstream.name),
    };
    let mut r = proxy_response(answer.status, text);
    answer.write_headers(r.headers_mut());
    r
}

/// A short plain-text response made by the proxy.
pub(crate) fn proxy_response(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::text(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::upstream::{Behavior, Upstream as TestUpstream};

    fn client() -> UpstreamClient {
        UpstreamClient::new(Duration::from_secs(2), Duration::from_secs(30), 8)
    }

    /// The two kinds of request, which take different connections: a
    /// bodiless GET (the proxy's own) and a POST with a body (hyper's).
    const KINDS: [bool; 2] = [false, true];

    fn request(with_body: bool) -> Request<ProxyBody> {
        let builder = Request::builder().uri("/").header(header::HOST, "upstream");
        let (builder, body) = match with_body {
            false => (builder.method("GET"), ProxyBody::empty()),
            true => (builder.method("POST"), ProxyBody::text("x")),
        };
        builder.body(body).expect("a valid request")
    }

    /// Idle connections to `addr`, of both kinds.
    fn idle(client: &UpstreamClient, addr: &Arc<Target>) -> usize {
        let hyper = client.pool.lock().get(addr.key()).map_or(0, Vec::len);
        let own = lock(&client.pool.h1).get(addr.key()).map_or(0, Vec::len);
        hyper + own
    }

    /// Sends a request and reads the body through an [`UpstreamBody`], as
    /// the proxy does.
    async fn call(client: &UpstreamClient, addr: &Arc<Target>, with_body: bool) -> Bytes {
        let (response, loan) = client
            .send(addr, request(with_body))
            .await
            .expect("a response");
        assert_eq!(response.status(), StatusCode::OK);
        let body = upstream_body(response.into_body(), None, Some(loan), false);
        body.collect().await.expect("the whole body").to_bytes()
    }

    fn authority(addr: SocketAddr) -> Arc<Target> {
        Target::plain(addr.to_string().parse().expect("an authority"))
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_has_been_read() {
        for with_body in KINDS {
            let upstream = TestUpstream::bind(1).await.expect("an upstream");
            let (client, addr) = (client(), authority(upstream.addr()));
            for _ in 0..5 {
                let body = call(&client, &addr, with_body).await;
                assert_eq!(body, Bytes::from_static(b"ok\n"));
            }
            assert_eq!(upstream.requests(), 5);
            assert_eq!(upstream.connections(), 1, "with a body: {with_body}");
        }
    }

    #[tokio::test]
    async fn a_bodyless_response_frees_its_connection_at_once() {
        for with_body in KINDS {
            let upstream = TestUpstream::bind(2).await.expect("an upstream");
            upstream.set(Behavior::healthy().payload(""));
            let (client, addr) = (client(), authority(upstream.addr()));
            for _ in 0..3 {
                let (mut response, loan) = client
                    .send(&addr, request(with_body))
                    .await
                    .expect("a response");
                assert!(response.body().is_end_stream());
                // What `attempt` does with an empty body: the body is
                // dropped unread.
                loan.give_back(response.body_mut());
                drop(response);
            }
            assert_eq!(upstream.connections(), 1, "with a body: {with_body}");
        }
    }

    #[tokio::test]
    async fn an_abandoned_body_closes_its_connection() {
        for with_body in KINDS {
            let upstream = TestUpstream::bind(3).await.expect("an upstream");
            upstream.set(Behavior::healthy().streaming(5, Duration::from_millis(50)));
            let (client, addr) = (client(), authority(upstream.addr()));
            let (response, loan) = client
                .send(&addr, request(with_body))
                .await
                .expect("a response");
            let mut body = upstream_body(response.into_body(), None, Some(loan), false);
            let first = body.frame().await.expect("a frame").expect("data");
            assert!(first.is_data());
            drop(body);
            assert_eq!(idle(&client, &addr), 0);
            upstream.set(Behavior::healthy());
            let body = call(&client, &addr, with_body).await;
            assert_eq!(body, Bytes::from_static(b"ok\n"));
            assert_eq!(upstream.connections(), 2, "with a body: {with_body}");
        }
    }

    /// An upstream that answers one request per connection, then closes it
    /// without saying so (`Connection: close` absent).
    async fn one_shot_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                    .await;
                let _ = s.shutdown().await;
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_replaced() {
        for with_body in KINDS {
            let (addr, task) = one_shot_upstream().await;
            let (client, addr) = (client(), authority(addr));
            for _ in 0..4 {
                let body = call(&client, &addr, with_body).await;
                assert_eq!(body, Bytes::from_static(b"ok\n"));
                // Give the upstream's close time to arrive or not: both
                // orders must work.
                tokio::task::yield_now().await;
            }
            task.abort();
        }
    }

    /// An upstream that answers the first request of each connection and
    /// closes the connection, unanswered, on the second; with the count of
    /// requests it read.
    async fn drops_second_requests() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let addr = listener.local_addr().expect("its address");
        let seen = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for nth in 0.. {
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        if nth > 0 {
                            return;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen, task)
    }

    #[tokio::test]
    async fn a_request_lost_with_its_connection_is_resent_only_if_idempotent() {
        let (addr, seen, task) = drops_second_requests().await;
        let (client, addr) = (client(), authority(addr));
        assert_eq!(
            call(&client, &addr, false).await,
            Bytes::from_static(b"ok\n")
        );
        // The pooled connection takes it and closes unanswered: the GET goes
        // again on a new connection.
        assert_eq!(
            call(&client, &addr, false).await,
            Bytes::from_static(b"ok\n")
        );
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        // A bodiless POST is not sent twice: the upstream may have acted on
        // it.
        let post = Request::post("/")
            .header(header::HOST, "upstream")
            .body(ProxyBody::empty())
            .expect("a request");
        let err = client.send(&addr, post).await.expect_err("lost");
        assert!(err.to_string().contains("before responding"), "{err}");
        assert_eq!(seen.load(Ordering::SeqCst), 4);
        task.abort();
    }

    #[tokio::test]
    async fn an_unreachable_address_is_a_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a listener");
        let addr = authority(listener.local_addr().expect("its address"));
        drop(listener);
        for with_body in KINDS {
            let err = client()
                .send(&addr, request(with_body))
                .await
                .expect_err("no upstream");
            assert!(err.is::<ConnectError>(), "{err}");
            assert!(err.to_string().contains(addr.addr.as_str()), "{err}");
        }
    }

    #[tokio::test]
    async fn reaping_drops_connections_idle_too_long() {
        let upstream = TestUpstream::bind(4).await.expect("an upstream");
        let client = UpstreamClient::new(Duration::from_secs(2), Duration::from_millis(50), 8);
        let addr = authority(upstream.addr());
        for with_body in KINDS {
            call(&client, &addr, with_body).await;
        }
        assert_eq!(idle(&client, &addr), 2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        client.reap();
        assert_eq!(idle(&client, &addr), 0);
        call(&client, &addr, false).await;
        assert_eq!(upstream.connections(), 3);
    }

    fn h2_request(addr: &Target) -> Request<ProxyBody> {
        let mut req = Request::get("/")
            .header(header::HOST, "upstream")
            .body(ProxyBody::empty())
            .expect("a request");
        let uri = std::mem::take(req.uri_mut());
        h2_head(&mut req, uri, addr, true);
        req
    }

    #[tokio::test]
    async fn h2_calls_share_one_connection_and_an_idle_one_is_let_go() {
        let upstream = TestUpstream::bind(5).await.expect("an upstream");
        let client = UpstreamClient::new(Duration::from_secs(2), Duration::from_millis(50), 8);
        let addr = authority(upstream.addr());
        let (first, first_loan) = client
            .send_h2(&addr, h2_request(&addr))
            .await
            .expect("a response");
        // Concurrent calls while the first one's body is still unread.
        let calls = (0..4).map(|_| client.send_h2(&addr, h2_request(&addr)));
        let responses = futures_util::future::join_all(calls).await;
        for r in responses {
            let (response, loan) = r.expect("a response");
            assert_eq!(response.version(), Version::HTTP_2);
            let body = upstream_body(response.into_body(), None, Some(loan), true);
            let bytes = body.collect().await.expect("the body").to_bytes();
            assert_eq!(bytes, Bytes::from_static(b"ok\n"));
        }
        assert_eq!(upstream.connections(), 1, "one multiplexed connection");
        // A call in flight keeps the connection, however long it lasts.
        tokio::time::sleep(Duration::from_millis(80)).await;
        client.reap();
        assert_eq!(client.pool.h2.len(), 1);
        let body = upstream_body(first.into_body(), None, Some(first_loan), true);
        body.collect().await.expect("the body");
        // Idle past the timeout: let go, and the next call connects anew.
        tokio::time::sleep(Duration::from_millis(80)).await;
        client.reap();
        assert_eq!(client.pool.h2.len(), 0);
        // Its last handle gone, the connection closes.
        let closed = async {
            while upstream.open_connections() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the idle connection closed");
        let (response, _loan) = client
            .send_h2(&addr, h2_request(&addr))
            .await
            .expect("a response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(upstream.connections(), 2);
    }

    #[test]
    fn auto_takes_h2_only_for_grpc_over_h2_and_grpc_timeout_only_for_grpc() {
        let head = |version: Version, content_type: &str| {
            let req = Request::post("/pkg.Svc/Call")
                .version(version)
                .header(header::CONTENT_TYPE, content_type)
                .header("grpc-timeout", "250m")
                .body(())
                .expect("a request");
            req.into_parts().0
        };
        let upstream = |protocol| {
            Upstream::new(
                "u",
                vec![Target::plain("127.0.0.1:1".parse().expect("an authority"))],
                protocol,
                FailureCodes::DEFAULT,
            )
        };
        let (auto, h1, h2c) = (
            upstream(UpstreamProtocol::Auto),
            upstream(UpstreamProtocol::Http1),
            upstream(UpstreamProtocol::H2c),
        );
        let grpc_h2 = head(Version::HTTP_2, "application/grpc+proto");
        let call = Call::of(&grpc_h2, &auto);
        assert!(call.h2 && call.trailers && call.grpc.is_some());
        assert_eq!(
            call.deadline.map(|(_, budget)| budget),
            Some(Duration::from_millis(250))
        );
        assert!(!Call::of(&grpc_h2, &h1).h2);
        assert!(!Call::of(&head(Version::HTTP_11, "application/grpc"), &auto).h2);
        let json = Call::of(&head(Version::HTTP_2, "application/json"), &auto);
        assert!(!json.h2 && json.grpc.is_none() && json.deadline.is_none());
        assert!(Call::of(&head(Version::HTTP_11, "text/plain"), &h2c).h2);
    }

    #[test]
    fn an_h2_head_carries_the_authority_in_the_uri() {
        let addr = Target::plain("10.0.0.1:50051".parse().expect("an authority"));
        let mut req = Request::post("/pkg.Svc/Call?x=1")
            .header(header::HOST, "api.example.com")
            .body(ProxyBody::empty())
            .expect("a request");
        let uri = std::mem::take(req.uri_mut());
        h2_head(&mut req, uri, &addr, true);
        assert_eq!(req.uri(), "http://api.example.com/pkg.Svc/Call?x=1");
        assert!(!req.headers().contains_key(header::HOST));
        assert_eq!(req.headers()[header::TE], "trailers");
        assert_eq!(req.version(), Version::HTTP_2);
        // Without `Host`, the upstream's address.
        let mut req = Request::post("/a")
            .body(ProxyBody::empty())
            .expect("a request");
        let uri = std::mem::take(req.uri_mut());
        h2_head(&mut req, uri, &addr, false);
        assert_eq!(req.uri(), "http://10.0.0.1:50051/a");
        assert!(!req.headers().contains_key(header::TE));
    }

    #[test]
    fn hop_by_hop_names_match_the_fixed_list() {
        for (i, (name, text)) in HOP_BY_HOP.iter().zip(HOP_BY_HOP_NAMES).enumerate() {
            assert_eq!(name.as_str(), text);
            assert_eq!(hop_by_hop_index(text), Some(i));
        }
        assert_eq!(hop_by_hop_index("x-te"), None);
    }

    #[test]
    fn strip_hop_by_hop_removes_what_connection_names_in_any_case() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Hop"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" close ,, Upgrade"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("close", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("proxy-connection", HeaderValue::from_static("x"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept"]);

        // A name that is not a header name matches nothing.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("bad name, x-a"),
        );
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-b"]);
    }
}
