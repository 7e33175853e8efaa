//! The access log: one `tracing` event per request on a listener with
//! `access_log = true`, at target [`TARGET`], level INFO, written when the
//! response ends (or the client goes away first).
//!
//! The event's fields: `method`, `path`, `version`, `peer` (the client's
//! address), `status`, `route` and `upstream` (absent when no route
//! matched), `policy` (the `x-ripcord-policy` of an answer the proxy made
//! itself, absent when the upstream answered), `breaker` (the state of the
//! route's breaker once the response ended, this request's outcome counted;
//! absent without one),
//! `duration_ms` (from the request head to the response's end), `bytes`
//! (the response body bytes sent) and `complete` (false when the body was
//! cut short).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Response, Version};
use tokio::time::Instant;

use super::forward::ProxyBody;
use super::policy::RoutePolicies;

/// The access log's `tracing` target.
pub(crate) const TARGET: &str = crate::ACCESS_TARGET;

/// One request's access log line, filled in as it is answered.
#[derive(Debug)]
pub(crate) struct Access {
    started: Instant,
    method: Method,
    path: Box<str>,
    version: Version,
    peer: SocketAddr,
    status: u16,
    route: Option<Arc<RoutePolicies>>,
    policy: Option<Box<str>>,
    bytes: u64,
}

/// Whether access log events are wanted by the subscriber at all.
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

impl Access {
    /// A request's line, before it is answered.
    pub(crate) fn new(method: &Method, path: &str, version: Version, peer: SocketAddr) -> Self {
        Access {
            started: Instant::now(),
            method: method.clone(),
            path: path.into(),
            version,
            peer,
            status: 0,
            route: None,
            policy: None,
            bytes: 0,
        }
    }

    /// The answer's head, and the route that made it (if one matched).
    pub(crate) fn answered(
        &mut self,
        response: &Response<ProxyBody>,
        route: Option<Arc<RoutePolicies>>,
    ) {
        self.status = response.status().as_u16();
        self.policy = response
            .headers()
            .get(ripcord_tower::http::POLICY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(Into::into);
        self.route = route;
    }

    /// `n` more body bytes sent.
    pub(crate) fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    /// Writes the line; `complete` when the whole body was sent.
    pub(crate) fn finish(self, complete: bool) {
        let elapsed = self.started.elapsed();
        let duration_ms = (elapsed.as_micros() as f64) / 1000.0;
        let route = self.route.as_deref().map(|r| r.name.as_str());
        let upstream = self.route.as_deref().map(|r| r.upstream.name.as_str());
        let breaker = self
            .route
            .as_deref()
            .and_then(|r| r.breaker.as_ref())
            .map(|b| b.state().as_str());
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = &*self.path,
            version = ?self.version,
            peer = %self.peer,
            status = self.status,
            route,
            upstream,
            policy = self.policy.as_deref(),
            breaker,
            duration_ms,
            bytes = self.bytes,
            complete,
        );
    }
}
