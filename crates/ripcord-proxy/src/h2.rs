//! The proxy's HTTP/2 upstream connections (`protocol = "h2c"`, or `auto`
//! for gRPC): hyper's HTTP/2 client over cleartext TCP with prior
//! knowledge, one multiplexed connection per address carrying every
//! concurrent call.
//!
//! Each call holds a [`Stream`] lease on its connection until its response
//! body ends (or is dropped). A connection with no lease for the pool's idle
//! timeout is let go by [`H2Pool::reap`]: dropping the pool's handle, the
//! last one, closes it, so an idle HTTP/2 connection never stays open for
//! ever. One the upstream closed (a `GOAWAY`, a broken socket, missed
//! keep-alive pings) is let go at the next call or reap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::BoxError;

use super::forward::ProxyBody;
use super::stream::UpstreamStream;

/// How often a connection with calls in flight pings its upstream; a ping
/// unanswered within [`PING_TIMEOUT`] closes the connection (its calls
/// fail).
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTP/2 connections of one worker, by address.
#[derive(Debug)]
pub(crate) struct H2Pool {
    conns: Mutex<HashMap<Box<str>, Vec<Conn>>>,
    /// The instant `Conn::last_used` counts from.
    epoch: Instant,
    idle_timeout: Duration,
}

/// One connection: the handle calls clone, and what tells whether it is
/// idle.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<ProxyBody>,
    use_: Arc<Use>,
}

/// The calls on one connection and when the last one ended.
#[derive(Debug, Default)]
struct Use {
    streams: AtomicUsize,
    /// Milliseconds since the pool's epoch.
    last_used: AtomicU64,
}

/// A call's hold on its connection: the connection counts as in use until
/// it is dropped (at the end of the response body).
#[derive(Debug)]
pub(crate) struct Stream {
    use_: Arc<Use>,
    epoch: Instant,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.use_.last_used.store(now, Ordering::Relaxed);
        self.use_.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl H2Pool {
    /// A pool whose connections close after `idle_timeout` without a call.
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        H2Pool {
            conns: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Vec<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self, use_: &Arc<Use>) -> Stream {
        use_.streams.fetch_add(1, Ordering::AcqRel);
        Stream {
            use_: Arc::clone(use_),
            epoch: self.epoch,
        }
    }

    /// A live connection to `addr`, if there is one (the newest).
    fn take(&self, addr: &str) -> Option<(SendRequest<ProxyBody>, Stream)> {
        let mut conns = self.lock();
        let list = conns.get_mut(addr)?;
        list.retain(|c| !c.sender.is_closed());
        let c = list.last()?;
        Some((c.sender.clone(), self.lease(&c.use_)))
    }

    /// Connects over `stream` and pools the connection.
    async fn connect(
        &self,
        addr: &str,
        stream: UpstreamStream,
    ) -> Result<(SendRequest<ProxyBody>, Stream), hyper::Error> {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let use_ = Arc::new(Use::default());
        let stream = self.lease(&use_);
        self.lock().entry(addr.into()).or_default().push(Conn {
            sender: sender.clone(),
            use_,
        });
        Ok((sender, stream))
    }

    /// Sends `req` (absolute URI) on the connection to `addr`, making one
    /// with `connect` when there is none; a request that a pooled
    /// connection could not send (the upstream had closed it) goes once more
    /// on a new connection.
    pub(crate) async fn send<F, Fut>(
        &self,
        addr: &str,
        req: Request<ProxyBody>,
        connect: F,
    ) -> Result<(Response<Incoming>, Stream), BoxError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<UpstreamStream, BoxError>>,
    {
        let req = match self.take(addr) {
            Some((mut sender, lease)) => match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, lease)),
                Err(mut e) => match e.take_message() {
                    Some(req) => req,
                    None => return Err(Box::new(e.into_error())),
                },
            },
            None => req,
        };
        let (mut sender, lease) = self.connect(addr, connect().await?).await?;
        let response = sender.send_request(req).await?;
        Ok((response, lease))
    }

    /// Lets go of the connections the upstream closed and of those with no
    /// call for the idle timeout.
    pub(crate) fn reap(&self) {
        let now = self.epoch.elapsed();
        let idle = |u: &Use| {
            u.streams.load(Ordering::Acquire) == 0
                && now.saturating_sub(Duration::from_millis(u.last_used.load(Ordering::Relaxed)))
                    >= self.idle_timeout
        };
        self.lock().retain(|_, list| {
            list.retain(|c| !c.sender.is_closed() && !idle(&c.use_));
            !list.is_empty()
        });
    }

    /// Connections pooled now (live or not yet reaped).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}
