//! A flaky HTTP upstream whose behaviour can be switched while it runs: the
//! service `ripcord demo` puts behind the proxy, and the one the load test and
//! the proxy benchmark hit.
//!
//! It serves HTTP/1.1 (and HTTP/2 with prior knowledge) on a listener it is
//! given. Every response follows the current [`Behavior`]: a share of failures
//! with a chosen status, a latency before the headers, and how the body is
//! sent (all at once, streamed in chunks, cut off mid-body, or the request's
//! own body echoed back). Failures are drawn from a seeded generator, so a run
//! with the same seed and the same request order answers the same way.
//!
//! ```no_run
//! use std::time::Duration;
//! use ripcord_proxy::upstream::{Behavior, Upstream};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let upstream = Upstream::start(listener, 7)?;
//! println!("upstream on http://{}", upstream.addr());
//! upstream.set(Behavior::failing(503, 0.8));
//! upstream.set(Behavior::healthy().latency(Duration::from_millis(300)));
//! # Ok(()) }
//! ```
//!
//! Every response carries `x-upstream: ripcord-test-upstream`, the request's
//! path in `x-upstream-path`, and the `X-Forwarded-For` it received (if any) in
//! `x-upstream-forwarded-for`, so a test can tell the upstream's own answers
//! from a proxy's and check what the proxy forwarded.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The body of an upstream response.
pub type UpstreamBody = UnsyncBoxBody<Bytes, io::Error>;

/// How the body of a successful response is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyMode {
    /// The body in one piece, with a `Content-Length`.
    Full,
    /// The body in `chunks` pieces, `interval` apart, without a
    /// `Content-Length` (chunked on HTTP/1.1).
    Streaming {
        /// How many pieces.
        chunks: u32,
        /// The pause before each piece after the first.
        interval: Duration,
    },
    /// Announces the full `Content-Length`, sends the first half of the body,
    /// then closes the connection.
    CloseMidBody,
    /// Streams the request's body back as it arrives.
    Echo,
}

/// What the upstream does with each request.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Share of requests answered with `failure_status` (0 to 1).
    pub failure_share: f64,
    /// The status of a failed request (e.g. 500, 503).
    pub failure_status: u16,
    /// Wait before sending the response headers.
    pub latency: Duration,
    /// Spread of that wait: each request waits `latency × (1 ± jitter)`,
    /// drawn uniformly (0 to 1).
    pub jitter: f64,
    /// How a successful response's body is sent.
    pub body: BodyMode,
    /// The body of a successful response (ignored by [`BodyMode::Echo`]).
    pub payload: Bytes,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior::healthy()
    }
}

impl Behavior {
    /// Answers every request at once with 200 and a short body.
    pub fn healthy() -> Self {
        Behavior {
            failure_share: 0.0,
            failure_status: 503,
            latency: Duration::ZERO,
            jitter: 0.0,
            body: BodyMode::Full,
            payload: Bytes::from_static(b"ok\n"),
        }
    }

    /// Answers a `share` (0 to 1, clamped) of requests with `status`, the rest
    /// like [`healthy`](Self::healthy).
    pub fn failing(status: u16, share: f64) -> Self {
        Behavior {
            failure_share: clamp_share(share),
            failure_status: status,
            ..Behavior::healthy()
        }
    }

    /// The same, waiting `latency` before every response.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The same, spreading each wait uniformly over `latency × (1 ± jitter)`
    /// (`jitter` clamped to 0 to 1).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = clamp_share(jitter);
        self
    }

    /// The same, with `payload` as the body of successful responses.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
        self
    }

    /// The same, streaming successful bodies in `chunks` pieces `interval`
    /// apart.
    pub fn streaming(mut self, chunks: u32, interval: Duration) -> Self {
        self.body = BodyMode::Streaming {
            chunks: chunks.max(1),
            interval,
        };
        self
    }

    /// The same, closing the connection halfway through every successful body.
    pub fn close_mid_body(mut self) -> Self {
        self.body = BodyMode::CloseMidBody;
        self
    }

    /// The same, echoing request bodies back.
    pub fn echo(mut self) -> Self {
        self.body = BodyMode::Echo;
        self
    }
}

fn clamp_share(share: f64) -> f64 {
    if share.is_nan() {
        0.0
    } else {
        share.clamp(0.0, 1.0)
    }
}

/// Counters of what the upstream answered.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    connections_open: AtomicUsize,
    connections_total: AtomicU64,
}

/// What a request handler needs.
#[derive(Debug)]
struct Shared {
    behavior: RwLock<Arc<Behavior>>,
    counters: Counters,
    seed: u64,
    draws: AtomicU64,
}

impl Shared {
    fn behavior(&self) -> Arc<Behavior> {
        Arc::clone(&self.behavior.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// A uniform draw in `[0, 1)`: the next value of a SplitMix64 sequence
    /// started at the seed.
    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A running upstream. Dropping it stops the server and closes its
/// connections.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Serves on `listener` (call inside a tokio runtime), healthy at first,
    /// drawing failures from `seed`.
    pub fn start(listener: TcpListener, seed: u64) -> io::Result<Upstream> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            behavior: RwLock::new(Arc::new(Behavior::healthy())),
            counters: Counters::default(),
            seed,
            draws: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, Arc::clone(&shared)));
        Ok(Upstream { addr, shared, task })
    }

    /// Binds `127.0.0.1` on a free port and serves there.
    pub async fn bind(seed: u64) -> io::Result<Upstream> {
        Upstream::start(TcpListener::bind("127.0.0.1:0").await?, seed)
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the behaviour for requests from now on.
    pub fn set(&self, behavior: Behavior) {
        *self
            .shared
            .behavior
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(behavior);
    }

    /// The current behaviour.
    pub fn behavior(&self) -> Behavior {
        (*self.shared.behavior()).clone()
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.counters.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with the failure status so far.
    pub fn failures(&self) -> u64 {
        self.shared.counters.failures.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared
            .counters
            .connections_open
            .load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared
            .counters
            .connections_total
            .load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections until aborted; aborting drops the set of connection
/// tasks, which closes them all.
async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors or similar: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let counters = &shared.counters;
                    counters.connections_open.fetch_add(1, Ordering::Relaxed);
                    counters.connections_total.fetch_add(1, Ordering::Relaxed);
                    let service = hyper::service::service_fn({
                        let shared = Arc::clone(&shared);
                        move |request| respond(Arc::clone(&shared), request)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    counters.connections_open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, io::Error>> + Send>>;

async fn respond(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<UpstreamBody>, Infallible> {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let behavior = shared.behavior();
    if !behavior.latency.is_zero() {
        let spread = if behavior.jitter > 0.0 {
            1.0 - behavior.jitter + 2.0 * behavior.jitter * shared.draw()
        } else {
            1.0
        };
        tokio::time::sleep(behavior.latency.mul_f64(spread)).await;
    }
    let failed = behavior.failure_share > 0.0 && shared.draw() < behavior.failure_share;
    let mut builder = Response::builder()
        .header("x-upstream", "ripcord-test-upstream")
        .header("x-upstream-path", request.uri().path());
    if let Some(xff) = request.headers().get("x-forwarded-for") {
        builder = builder.header("x-upstream-forwarded-for", xff);
    }
    if failed {
        shared.counters.failures.fetch_add(1, Ordering::Relaxed);
        let status = StatusCode::from_u16(behavior.failure_status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = Full::new(Bytes::from(format!(
            "upstream failure {}\n",
            status.as_u16()
        )))
        .map_err(|never| match never {})
        .boxed_unsync();
        return Ok(builder
            .status(status)
            .body(body)
            .unwrap_or_else(|_| fallback()));
    }
    let payload = behavior.payload.clone();
    let response = match &behavior.body {
        BodyMode::Full => builder
            .header(http::header::CONTENT_LENGTH, payload.len())
            .body(
                Full::new(payload)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            ),
        BodyMode::Streaming { chunks, interval } => {
            let pieces = split(&payload, *chunks);
            let interval = *interval;
            let body: ChunkStream = Box::pin(stream::iter(pieces.into_iter().enumerate()).then(
                move |(i, piece)| async move {
                    if i > 0 && !interval.is_zero() {
                        tokio::time::sleep(interval).await;
                    }
                    Ok(Frame::data(piece))
                },
            ));
            builder.body(BodyExt::boxed_unsync(StreamBody::new(body)))
        }
        BodyMode::CloseMidBody => {
            let half = payload.slice(..payload.len() / 2);
            let body: ChunkStream = Box::pin(
                stream::iter([
                    Ok(Frame::data(half)),
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the upstream closes mid-body",
                    )),
                ])
                .then(|item| async move {
                    // Let the first half reach the socket before the error.
                    tokio::task::yield_now().await;
                    item
                }),
            );
            builder
                .header(http::header::CONTENT_LENGTH, payload.len())
                .body(BodyExt::boxed_unsync(StreamBody::new(body)))
        }
        BodyMode::Echo => {
            let body = request.into_body().map_err(io::Error::other).boxed_unsync();
            builder.body(body)
        }
    };
    Ok(response.unwrap_or_else(|_| fallback()))
}

/// `payload` cut into `n` pieces (the last one takes the rest; never fewer
/// than one byte per piece unless the payload is shorter than `n`).
fn split(payload: &Bytes, n: u32) -> Vec<Bytes> {
    let n = (n.max(1) as usize).min(payload.len().max(1));
    let size = payload.len() / n;
    (0..n)
        .map(|i| {
            let start = i * size;
            let end = if i + 1 == n {
                payload.len()
            } else {
                start + size
            };
            payload.slice(start..end)
        })
        .collect()
}

/// A 500 for the (unreachable in practice) case of a response that cannot be
/// built from its parts.
fn fallback() -> Response<UpstreamBody> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_split_into_pieces() {
        let p = Bytes::from_static(b"abcdefghij");
        let pieces = split(&p, 3);
        assert_eq!(pieces, vec!["abc", "def", "ghij"]);
        assert_eq!(split(&p, 1), vec!["abcdefghij"]);
        assert_eq!(split(&Bytes::from_static(b"ab"), 5), vec!["a", "b"]);
        assert_eq!(split(&Bytes::new(), 4).len(), 1);
    }

    #[test]
    fn draws_are_uniform_and_seeded() {
        let shared = |seed| Shared {
            behavior: RwLock::new(Arc::new(Behavior::healthy())),
            counters: Counters::default(),
            seed,
            draws: AtomicU64::new(0),
        };
        let (a, b, c) = (shared(1), shared(1), shared(2));
        let xs: Vec<f64> = (0..1000).map(|_| a.draw()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.draw()).collect();
        let zs: Vec<f64> = (0..1000).map(|_| c.draw()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let below = xs.iter().filter(|&&x| x < 0.3).count();
        assert!((240..360).contains(&below), "{below} of 1000 below 0.3");
    }

    #[test]
    fn shares_are_clamped() {
        assert_eq!(Behavior::failing(503, 2.0).failure_share, 1.0);
        assert_eq!(Behavior::failing(503, -1.0).failure_share, 0.0);
        assert_eq!(Behavior::failing(503, f64::NAN).failure_share, 0.0);
    }
}
