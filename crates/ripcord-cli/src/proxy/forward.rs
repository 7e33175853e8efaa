//! Forwarding one request: the route's policies, the upstream call, the
//! header rules of a proxy, and the responses the proxy makes itself.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use ripcord::retry::RetryStep;
use ripcord::{
    Bulkhead, CircuitBreaker, Error, Outcome, OwnedBulkheadPermit, OwnedPermit, PolicyKind,
    RateLimited, RateLimiter, Retry, Timeout,
};
use ripcord_redis::RedisRateLimiter;
use ripcord_tower::http::{classify_status, is_idempotent};
use ripcord_tower::shed::POLICY_HEADER;
use tower::BoxError;

use super::config::StaticFallback;

/// The HTTP client the proxy forwards with (a pooled HTTP/1.1 client).
pub(crate) type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// A body the proxy sends or receives: streamed from a peer, or made whole by
/// the proxy.
#[derive(Debug)]
pub enum ProxyBody {
    /// A request body streaming from the client to the upstream.
    Incoming(Incoming),
    /// A response body streaming from the upstream, holding its call's
    /// breaker permits and bulkhead slots until it ends.
    Upstream(UpstreamBody),
    /// A body the proxy made (empty when `None`).
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// A body of `text`.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(text.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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

/// What a call holds while its response body streams: the permits of
/// breakers that found the head successful (their verdict waits for the
/// body) and the bulkhead slots.
#[derive(Debug, Default)]
pub struct CallGuard {
    permits: [Option<OwnedPermit>; 2],
    slots: [Option<OwnedBulkheadPermit>; 2],
    /// The response head arrived and was a success: the verdict waits for
    /// the body.
    head_ok: bool,
}

impl CallGuard {
    fn record(&mut self, outcome: Outcome) {
        for p in &mut self.permits {
            if let Some(p) = p.take() {
                p.record(outcome);
            }
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        // A body dropped before its end (the client went away) is not the
        // upstream's fault; a call dropped before its head (cancelled) says
        // nothing about it.
        self.record(if self.head_ok {
            Outcome::Success
        } else {
            Outcome::Ignored
        });
    }
}

/// An upstream response body: a body error counts as a failure of every
/// breaker of the call, its end as a success.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    guard: CallGuard,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Err(_)) => this.guard.record(Outcome::Failure),
            None => {
                this.guard.record(Outcome::Success);
                this.guard.slots = Default::default();
            }
            Some(Ok(_)) => {}
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

/// A rate limiter in memory or shared through the store.
#[derive(Debug, Clone)]
pub(crate) enum Limiter {
    Local(RateLimiter),
    Shared(RedisRateLimiter),
}

impl Limiter {
    async fn acquire(&self) -> Result<(), RateLimited> {
        match self {
            Limiter::Local(l) => l.acquire().await,
            Limiter::Shared(l) => l.acquire().await,
        }
    }
}

/// An upstream: its addresses, used in turn.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    addresses: Vec<http::uri::Authority>,
    next: AtomicUsize,
}

impl Upstream {
    pub(crate) fn new(name: &str, addresses: Vec<http::uri::Authority>) -> Self {
        Upstream {
            name: name.to_string(),
            addresses,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &http::uri::Authority {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.addresses[i % self.addresses.len()]
    }
}

/// The policies of one pipeline table, built.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parts {
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) bulkhead: Option<Bulkhead>,
    pub(crate) limiter: Option<Limiter>,
    pub(crate) retry: Option<Retry>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) fallback: Option<Arc<StaticFallback>>,
}

/// Everything a request through one route needs.
#[derive(Debug)]
pub(crate) struct RoutePolicies {
    pub(crate) name: String,
    pub(crate) upstream: Arc<Upstream>,
    limiters: [Option<Limiter>; 2],
    breakers: [Option<CircuitBreaker>; 2],
    bulkheads: [Option<Bulkhead>; 2],
    retry: Option<Retry>,
    timeout: Duration,
    fallback: Option<Arc<StaticFallback>>,
}

impl RoutePolicies {
    /// Combines a route's parts with its upstream's (see the config docs).
    pub(crate) fn new(
        name: &str,
        upstream: Arc<Upstream>,
        route: Parts,
        up: Parts,
        default_timeout: Duration,
    ) -> Self {
        RoutePolicies {
            name: name.to_string(),
            upstream,
            limiters: [route.limiter, up.limiter],
            breakers: [route.breaker, up.breaker],
            bulkheads: [route.bulkhead, up.bulkhead],
            retry: route.retry.or(up.retry),
            timeout: route.timeout.or(up.timeout).unwrap_or(default_timeout),
            fallback: route.fallback.or(up.fallback),
        }
    }
}

/// Where a request came from, for the `X-Forwarded-*` headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) remote: SocketAddr,
}

/// Headers a proxy never forwards (RFC 9110 §7.6.1), besides those named by
/// `Connection` and any `Proxy-*`.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers: those `Connection` names, the fixed
/// list, and every `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for n in proxy {
        headers.remove(n);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request's host, without port, lower-case: the `Host` header or the
/// URI's authority (HTTP/2).
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    let host = match raw.parse::<http::uri::Authority>() {
        Ok(a) => a.host().to_string(),
        Err(_) => raw.to_string(),
    };
    Some(host.to_ascii_lowercase())
}

/// Makes the upstream request head from the client's.
fn upstream_head(parts: &mut http::request::Parts, peer: Peer) {
    // An HTTP/2 request carries its host in the URI only.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    strip_hop_by_hop(&mut parts.headers);
    let ip = peer.remote.ip().to_string();
    let xff = match parts
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
        _ => ip,
    };
    parts.headers.remove(&X_FORWARDED_FOR);
    if let Ok(v) = HeaderValue::from_str(&xff) {
        parts.headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !parts.headers.contains_key(&X_FORWARDED_PROTO) {
        parts
            .headers
            .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !parts.headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(h) = parts.headers.get(header::HOST).cloned() {
            parts.headers.insert(X_FORWARDED_HOST.clone(), h);
        }
    }
    parts.version = Version::HTTP_11;
}

fn upstream_uri(authority: &http::uri::Authority, original: &Uri) -> Uri {
    let pq = original.path_and_query().map_or("/", |pq| pq.as_str());
    Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(pq)
        .build()
        .unwrap_or_else(|_| Uri::from_static("http://invalid/"))
}

/// Forwards one request through the route's policies.
pub(crate) async fn forward(
    client: &UpstreamClient,
    route: &RoutePolicies,
    req: Request<Incoming>,
    peer: Peer,
) -> Response<ProxyBody> {
    for limiter in route.limiters.iter().flatten() {
        if let Err(limited) = limiter.acquire().await {
            return refusal(route, &Error::<BoxError>::RateLimited(limited));
        }
    }
    let (mut parts, body) = req.into_parts();
    upstream_head(&mut parts, peer);
    let replayable = route.retry.is_some() && is_idempotent(&parts.method) && body.is_end_stream();
    let result = match (&route.retry, replayable) {
        (Some(retry), true) => {
            drop(body);
            let mut run = retry.start();
            // No retry starts later than this, whatever a `Retry-After` asks.
            let budget = route.timeout.saturating_mul(retry.max_attempts());
            run.set_deadline(tokio::time::Instant::now() + budget);
            loop {
                run.begin_attempt();
                let req = Request::from_parts(clone_parts(&parts), ProxyBody::empty());
                let result = attempt(client, route, req).await;
                // A refusal by the route's own breaker or bulkhead is
                // answered at once: waiting for a probe slot would hold the
                // client for the breaker's whole open time.
                if let Err(Error::Rejected(_) | Error::BulkheadFull(_)) = &result {
                    break result;
                }
                match run.next_composed(result) {
                    RetryStep::Done(r) => break r,
                    RetryStep::Retry { after } => tokio::time::sleep(after).await,
                }
            }
        }
        _ => {
            let body = if body.is_end_stream() {
                ProxyBody::empty()
            } else {
                ProxyBody::Incoming(body)
            };
            attempt(client, route, Request::from_parts(parts, body)).await
        }
    };
    match result {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, ProxyBody::Upstream(body))
        }
        Err(e) => refusal(route, &e),
    }
}

fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

/// One attempt: breakers, bulkheads, the call bounded by the timeout.
async fn attempt(
    client: &UpstreamClient,
    route: &RoutePolicies,
    mut req: Request<ProxyBody>,
) -> Result<Response<UpstreamBody>, Error<BoxError>> {
    let mut guard = CallGuard::default();
    for i in 0..2 {
        if let Some(b) = &route.breakers[i] {
            match b.try_acquire_owned() {
                Ok(p) => guard.permits[i] = Some(p),
                Err(rejected) => {
                    // Permits taken so far: the call never ran.
                    guard.record(Outcome::Ignored);
                    return Err(Error::Rejected(rejected));
                }
            }
        }
    }
    for i in 0..2 {
        if let Some(b) = &route.bulkheads[i] {
            match b.acquire_owned().await {
                Ok(s) => guard.slots[i] = Some(s),
                Err(full) => {
                    guard.record(Outcome::Ignored);
                    return Err(Error::BulkheadFull(full));
                }
            }
        }
    }
    *req.uri_mut() = upstream_uri(route.upstream.pick(), req.uri());
    let call = client.request(req);
    match tokio::time::timeout(route.timeout, call).await {
        Err(_) => {
            guard.record(Outcome::Failure);
            Err(Error::Timeout(Timeout::new(&route.name, route.timeout)))
        }
        Ok(Err(e)) if request_body_failed(&e) => {
            // The client's upload broke off: not the upstream's fault.
            guard.record(Outcome::Ignored);
            Err(Error::Inner(Box::new(RequestBodyFailed(Box::new(e)))))
        }
        Ok(Err(e)) => {
            guard.record(Outcome::Failure);
            Err(Error::Inner(Box::new(e)))
        }
        Ok(Ok(response)) => {
            let outcome = classify_status(response.status());
            if outcome == Outcome::Success {
                guard.head_ok = true;
            } else {
                guard.record(outcome);
            }
            Ok(response.map(|inner| UpstreamBody { inner, guard }))
        }
    }
}

/// The client's request body failed while it was forwarded.
#[derive(Debug, thiserror::Error)]
#[error("the request body from the client broke off")]
struct RequestBodyFailed(#[source] BoxError);

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

/// What the proxy answers when a policy refused or the upstream failed: the
/// route's fallback, or a status naming the policy.
fn refusal(route: &RoutePolicies, e: &Error<BoxError>) -> Response<ProxyBody> {
    let policy = e.policy();
    let policy_name = policy.map_or("upstream", PolicyKind::as_str);
    if let Some(f) = &route.fallback {
        let mut r = Response::new(ProxyBody::text(f.body.clone()));
        *r.status_mut() = StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK);
        if let Ok(v) = HeaderValue::from_str(&f.content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r.headers_mut()
            .insert(POLICY_HEADER, HeaderValue::from_static("fallback"));
        if let Ok(v) = HeaderValue::from_str(policy_name) {
            r.headers_mut()
                .insert(HeaderName::from_static("x-ripcord-fallback-for"), v);
        }
        return r;
    }
    let (status, retry_after, text) = match e {
        Error::Rejected(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(r.retry_after()),
            format!(
                "circuit breaker `{}` is {}: upstream `{}` is not called for now\n",
                r.name(),
                r.state(),
                route.upstream.name
            ),
        ),
        Error::RateLimited(r) => (
            StatusCode::TOO_MANY_REQUESTS,
            Some(r.retry_after()),
            format!("rate limiter `{}`: too many requests\n", r.name()),
        ),
        Error::BulkheadFull(b) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
            format!(
                "bulkhead `{}` is full ({} concurrent calls)\n",
                b.name(),
                b.max_concurrent()
            ),
        ),
        Error::Timeout(t) => (
            StatusCode::GATEWAY_TIMEOUT,
            None,
            format!(
                "upstream `{}` did not answer within {:?}\n",
                route.upstream.name,
                t.elapsed()
            ),
        ),
        Error::Inner(e) if e.is::<RequestBodyFailed>() => (
            StatusCode::BAD_REQUEST,
            None,
            "the request body broke off before its end\n".to_string(),
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            None,
            format!("upstream `{}` is unreachable\n", route.upstream.name),
        ),
    };
    let mut r = proxy_response(status, text);
    if let Some(wait) = retry_after {
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Ok(v) = HeaderValue::from_str(policy_name) {
        r.headers_mut().insert(POLICY_HEADER, v);
    }
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
