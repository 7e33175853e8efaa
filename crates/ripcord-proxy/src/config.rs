//! The proxy's configuration file (`ripcord.toml`), and its validation.
//!
//! ```toml
//! store = "redis://127.0.0.1:6379"     # optional: share breakers and rate limits
//! store_prefix = "ripcord"             # optional key prefix in the store
//!
//! [admin]
//! listen = "127.0.0.1:9901"            # default; /metrics, the admin API, the dashboard
//! token_env = "RIPCORD_ADMIN_TOKEN"    # default; or `token = "…"`
//!
//! [limits]
//! max_header_bytes = 65536             # larger request heads get 431
//! default_timeout = "30s"              # for routes whose pipelines set none
//! drain_deadline = "30s"               # how long shutdown waits for in-flight requests
//! workers = 2                          # worker threads; default: one per CPU
//! busy_poll = "0s"                     # poll without sleeping this long after a request
//! header_read_timeout = "30s"          # a request head; a new connection's first request
//! idle_timeout = "60s"                 # connections with nothing in flight
//! body_read_timeout = "30s"            # the longest pause inside a request body
//! upgrade_idle_timeout = "60s"         # a WebSocket (any 101 tunnel) with no traffic
//! max_connections = 10000              # client connections at once
//! max_connections_per_peer = 1024      # from one IP address
//!
//! [[listeners]]
//! listen = "127.0.0.1:8080"            # HTTP/1.1 and h2c
//!
//! [upstreams.api]
//! addresses = ["127.0.0.1:3000", "127.0.0.1:3001"]   # round robin
//! pipeline.circuit_breaker = { failure_rate = 0.5, minimum_calls = 20, open_for = "10s" }
//!
//! [upstreams.greeter]
//! addresses = ["127.0.0.1:50051"]
//! protocol = "h2c"                     # "http1" (default), "h2c", or "auto"
//! grpc.failure_codes = ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNKNOWN"]
//! pipeline.circuit_breaker = { consecutive_failures = 5, open_for = "10s" }
//!
//! [[routes]]
//! name = "api"
//! path_prefix = "/api"
//! upstream = "api"
//! pipeline = { timeout = "2s", retry = { max_attempts = 2 }, rate_limiter = { rate = 100, period = "1s" } }
//! # fault = { abort_rate = 0.2, abort_status = 503, expires_after = "10m" }   # a drill
//! ```
//!
//! # Drills
//!
//! A route's `fault` table ([`ChaosConfig`](ripcord::ChaosConfig)) injects
//! faults into its requests inside its policies, where the upstream's own
//! failures would be, so its breaker, retries and fallback act on them:
//! `latency_rate` + `latency` (`"1.5s"`, `{ min, max }` or `{ mean, max }`),
//! `abort_rate` (answered `abort_status`, default 503), `error_rate` (500),
//! `reset_rate` (502), `stall_rate` (waits for the route's timeout: 504),
//! each a share of requests; `seed`, `enabled` and `expires_after` as in the
//! core. Injected answers carry `x-ripcord-policy: chaos`. The admin API
//! starts, changes and stops a drill on any route at runtime
//! (`PUT`/`DELETE /api/faults/{route}`, with the token and an expiry), and
//! with `store`, a fault set in the store (`ripcord fleet fault`) reaches
//! every proxy sharing it within a second and lapses by itself.
//!
//! # Pipelines
//!
//! A `pipeline` table (on an upstream, on a route, or both) is a ripcord
//! [`PipelineConfig`]: policies, each with the core's own configuration type
//! and defaults — `timeout` ([`TimeoutConfig`](ripcord::TimeoutConfig), or
//! just the duration), `retry` ([`RetryConfig`](ripcord::RetryConfig)),
//! `circuit_breaker` ([`CircuitBreakerConfig`]), `bulkhead`
//! ([`BulkheadConfig`](ripcord::BulkheadConfig)), `rate_limiter`
//! ([`RateLimiterConfig`](ripcord::RateLimiterConfig)), `hedge`
//! ([`HedgeConfig`](ripcord::HedgeConfig)) and `fallback`
//! ([`StaticFallback`]: the core's triggers and the response the proxy
//! makes) — in either of its forms: one key per policy, placed by
//! `order = [...]` or else in the default order `fallback → rate_limiter →
//! retry → hedge → circuit_breaker → bulkhead → timeout`; or
//! `[[…pipeline.policy]]` tables, each with its `kind`, outermost first.
//! A table holds at most one breaker, one bulkhead and one rate limiter
//! (they are named after its route or upstream).
//!
//! A request through a route runs, outermost first, the route's policies,
//! then the upstream's, then the upstream call; where both pipelines have a
//! timeout, a retry, a hedge or a fallback, only the route's applies, and a
//! route with no timeout in either gets `limits.default_timeout`, innermost.
//! With the default order: fallback → the route's rate limiter → retry →
//! the route's breaker → its bulkhead → timeout → the upstream's rate
//! limiter, breaker and bulkhead → the upstream call.
//!
//! - A **timeout** bounds what runs inside it until the response head
//!   arrives (the body then streams without a deadline).
//! - **Retries** and **hedged** attempts happen only for idempotent methods
//!   (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) whose request has no body,
//!   on what ripcord-tower's HTTP rules call a failure (5xx, 429, connect
//!   errors, timeouts), waiting at least what a `Retry-After` header asks;
//!   unless the retry sets `max_total_time`, no retry starts later than the
//!   innermost timeout × `max_attempts` after the request arrived, and a
//!   refusal by a breaker or a bulkhead inside the retry is answered at once
//!   rather than waited for. Other requests make one attempt through the
//!   same policies.
//! - A **breaker** is named after what holds its pipeline: the route's name
//!   for a route's pipeline, the upstream's name for an upstream's. Names
//!   must therefore be unique across routes and upstreams that have
//!   breakers. 5xx, 429, connect errors, timeouts and response bodies that
//!   fail mid-stream count as failures; other 4xx are ignored. A breaker
//!   inside the route's retry, hedge and fallback (where the default order
//!   puts it) judges a successful head when its body ends, and a body the
//!   client abandons counts as a success; one placed outside them judges the
//!   response head. A **bulkhead** inside them holds its slot until the
//!   response body ends.
//! - A **fallback** answers instead of the proxy's own error responses
//!   (open breaker, rate limited, bulkhead full, timeout, upstream
//!   unreachable), as its triggers say; upstream responses pass unchanged.
//! - With `store`, every breaker is shared with the other proxies on the same
//!   store and prefix, and so is every rate limiter (one Redis round trip
//!   per request).
//!
//! # gRPC and HTTP/2 upstreams
//!
//! An upstream's `protocol` says how the proxy talks to it: `http1` (the
//! default), `h2c` (HTTP/2 over cleartext TCP with prior knowledge, for
//! every request), or `auto` (HTTP/2 for a gRPC call that came over HTTP/2,
//! HTTP/1.1 for the rest). HTTP/2 connections are multiplexed: one per
//! address and worker carries every concurrent call, and one with no call in
//! flight for `limits.pool_idle_timeout` is closed. Trailers pass both ways.
//!
//! A request whose `content-type` is `application/grpc` (or
//! `application/grpc+…`) is a gRPC call, whatever the protocol:
//!
//! - its outcome is its `grpc-status`, read from the response head (a
//!   trailers-only response) or from the trailers when the stream ends, so a
//!   streaming call is judged when it ends: `OK` is a success, the codes of
//!   the upstream's `grpc.failure_codes` are failures (by default
//!   `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`,
//!   `UNKNOWN`), any other code is ignored; a stream that ends without a
//!   status, a body error and a non-200 HTTP status are failures, and a
//!   stream the client cancels is ignored;
//! - its `grpc-timeout` bounds the call until the response head (with the
//!   pipeline's timeout: the earlier wins), and the upstream gets what is
//!   left of it as its own `grpc-timeout`;
//! - the answers the proxy makes itself are gRPC statuses (HTTP 200,
//!   `grpc-status` in the head): `UNAVAILABLE` with
//!   `grpc-retry-pushback-ms` (the time to the next probe) for an open
//!   breaker, `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms` for a rate
//!   limit, `DEADLINE_EXCEEDED` for a timeout or the caller's deadline,
//!   `UNAVAILABLE` for a full bulkhead or an unreachable upstream.
//!
//! A gRPC call has a body, so it is never retried or hedged.
//!
//! # Errors
//!
//! [`ProxyConfig::parse`] reports every problem it finds, each with the
//! file, the line and column where known, the key path (e.g.
//! `routes[2].pipeline.circuit_breaker.failure_rate`) and what is allowed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ripcord::pipeline::{FallbackEntry, PolicyConfig};
use ripcord::{CircuitBreakerConfig, FallbackConfig, PipelineConfig, PolicyKind};
use serde::Deserialize;

/// The environment variable read for the admin token when neither `token`
/// nor `token_env` is set.
pub const DEFAULT_TOKEN_ENV: &str = "RIPCORD_ADMIN_TOKEN";

/// The smallest `limits.max_header_bytes` (the HTTP/1 parser needs 8 KiB).
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
/// The largest `limits.max_header_bytes`.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// A `redis://` or `rediss://` URL: breakers and rate limits are shared
    /// with every proxy on the same store and prefix. Memory only when
    /// absent.
    #[serde(default)]
    pub store: Option<String>,
    /// The key prefix in the store (default `ripcord`).
    #[serde(default)]
    pub store_prefix: Option<String>,
    /// The admin listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Limits and defaults.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where the proxy accepts requests (one or more).
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Upstreams by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched by host and the longest path prefix.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `[admin]`: the listener of `/metrics`, the admin API and the dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The address to bind (default `127.0.0.1:9901`; port 0 picks one).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// The bearer token of mutating admin calls.
    #[serde(default)]
    pub token: Option<String>,
    /// The environment variable holding the token (default
    /// `RIPCORD_ADMIN_TOKEN`, read when `token` is not set). A token has
    /// at least [`MIN_TOKEN_CHARS`] characters.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Host names the admin API and `/metrics` answer to besides IP
    /// addresses, `localhost` and names without a dot (default none): a
    /// guard against DNS rebinding, which reaches the listener under a name
    /// of the attacker's.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Event streams (`/api/events`, a dashboard tab each) one peer address
    /// may hold at once (1 to [`MAX_STREAMS_PER_PEER`], default 16).
    #[serde(default = "default_streams_per_peer")]
    pub max_streams_per_peer: usize,
}

fn default_streams_per_peer() -> usize {
    16
}

fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_string()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token: None,
            token_env: None,
            allowed_hosts: Vec::new(),
            max_streams_per_peer: default_streams_per_peer(),
        }
    }
}

impl AdminConfig {
    /// The token: `token`, else the variable `token_env` (or
    /// `RIPCORD_ADMIN_TOKEN`) names. `None` when unset or empty.
    pub fn resolve_token(&self) -> Option<String> {
        if let Some(t) = &self.token {
            return Some(t.clone()).filter(|t| !t.is_empty());
        }
        let var = self.token_env.as_deref().unwrap_or(DEFAULT_TOKEN_ENV);
        std::env::var(var).ok().filter(|t| !t.is_empty())
    }
}

/// `[limits]`: limits and defaults of the whole proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The largest request head accepted; larger ones get 431 (8 KiB to
    /// 1 MiB, default 64 KiB).
    pub max_header_bytes: usize,
    /// The timeout of routes whose pipelines set none (default 30 s).
    #[serde(with = "ripcord::duration")]
    pub default_timeout: Duration,
    /// How long shutdown waits for in-flight requests (default 30 s).
    #[serde(with = "ripcord::duration")]
    pub drain_deadline: Duration,
    /// How long to wait for a TCP connection to an upstream (default 5 s).
    #[serde(with = "ripcord::duration")]
    pub connect_timeout: Duration,
    /// How long an idle upstream connection stays pooled (default 90 s).
    #[serde(with = "ripcord::duration")]
    pub pool_idle_timeout: Duration,
    /// Idle upstream connections kept per address (default 64).
    pub pool_max_idle_per_host: usize,
    /// How long a client may take to send a request head (default 30 s).
    /// It also bounds a new connection's first request as a whole,
    /// protocol detection and the HTTP/2 preface included: a connection
    /// that has sent no complete request head this long after it was
    /// accepted is closed, and so is one that starts a new head while idle
    /// and has not finished it this long after.
    #[serde(with = "ripcord::duration")]
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight that sends nothing
    /// stays open (HTTP/1.1 keep-alive and HTTP/2 alike; default 60 s). It
    /// is closed within a quarter of this after the deadline.
    #[serde(with = "ripcord::duration")]
    pub idle_timeout: Duration,
    /// How long the proxy waits for the next piece of a request body it
    /// forwards (default 30 s); past it the upload is cut off and the
    /// client gets 400. Time the upstream takes to read is not counted.
    #[serde(with = "ripcord::duration")]
    pub body_read_timeout: Duration,
    /// How long a tunnel (a connection that switched protocols with
    /// `101`, such as a WebSocket) stays open while neither side sends
    /// anything (default 60 s). It is cut within a quarter of this after
    /// the deadline.
    #[serde(with = "ripcord::duration")]
    pub upgrade_idle_timeout: Duration,
    /// The most client connections open at once (1 to
    /// [`MAX_CONNECTIONS`], default 10,000); past it new connections are
    /// closed at once. Lowered at start when the file-descriptor limit has
    /// no room for it (each connection may need two descriptors).
    pub max_connections: usize,
    /// The most client connections open at once from one IP address (1 to
    /// `max_connections`, default 1,024). Behind a load balancer, or as a
    /// sidecar, every connection comes from one address: set it to
    /// `max_connections` there.
    pub max_connections_per_peer: usize,
    /// How many worker threads serve client connections (1 to
    /// [`MAX_WORKERS`]; default: one per CPU). Each worker runs its own
    /// single-threaded runtime and its own pool of upstream connections
    /// (`pool_max_idle_per_host` each); accepted connections are handed to
    /// the workers in turn.
    pub workers: Option<usize>,
    /// How long a worker keeps polling its sockets without sleeping after
    /// its last request (0 s to [`MAX_BUSY_POLL`]; default 0 s: off). On
    /// virtual machines, where waking an idle vCPU is slow, this takes the
    /// wake-ups off a proxied request's latency, at the price of CPU time
    /// while requests keep coming.
    #[serde(with = "ripcord::duration")]
    pub busy_poll: Duration,
}

/// The largest `limits.busy_poll`.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(100);

/// The largest `limits.workers`.
pub const MAX_WORKERS: usize = 1024;

/// The largest `limits.max_connections`.
pub const MAX_CONNECTIONS: usize = 1_000_000;

/// The shortest admin token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The largest `admin.max_streams_per_peer` (the admin listener's cap on
/// event streams in all).
pub const MAX_STREAMS_PER_PEER: usize = 64;

impl LimitsConfig {
    /// The number of worker threads: `workers`, or one per CPU.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .clamp(1, MAX_WORKERS)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: 64 * 1024,
            default_timeout: Duration::from_secs(30),
            drain_deadline: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            upgrade_idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_connections_per_peer: 1_024,
            workers: None,
            busy_poll: Duration::ZERO,
        }
    }
}

/// `[[listeners]]`: one address the proxy accepts requests on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// The address to bind, e.g. `127.0.0.1:8080` (port 0 picks one).
    pub listen: String,
    /// TLS on this listener (feature `tls`); plain HTTP/1.1 and h2c when
    /// absent.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Whether each request on this listener writes an access log line (a
    /// `tracing` event at target `ripcord::access`, level INFO, when its
    /// response ends); off by default. A reload switches it.
    #[serde(default)]
    pub access_log: bool,
}

/// `[listeners.tls]`: the listener's certificate and key, and whether it
/// asks clients for certificates (mTLS). ALPN offers `h2` and `http/1.1`.
/// The files are read at start and again on each reload (a reload whose
/// files are missing or invalid is refused: the certificate in use stays).
/// Relative paths are relative to the proxy's working directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// The certificate chain (PEM), the listener's own certificate first.
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The certificate authorities (PEM) that client certificates must
    /// chain to; setting it asks every client for a certificate.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client without a certificate is refused
    /// (`required`, the default) or served (`optional`; a certificate it
    /// does send must still be valid).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether a TLS listener with `client_ca` refuses clients without a
/// certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Refused: the handshake fails.
    #[default]
    Required,
    /// Served.
    Optional,
}

/// `[upstreams.NAME.tls]`: connections to the upstream's addresses use
/// TLS (feature `tls`). ALPN offers `http/1.1`. The files are read at
/// start and on each reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// The certificate authorities (PEM) the upstream's certificate must
    /// chain to; the system's roots when absent.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and checked against the upstream's certificate;
    /// by default the host of each address (an IP address is checked
    /// against the certificate's IP addresses, and sends no SNI).
    #[serde(default)]
    pub server_name: Option<String>,
    /// A client certificate chain (PEM) to present, with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// `[upstreams.NAME]`: where requests go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` addresses, used in turn (round robin).
    pub addresses: Vec<String>,
    /// The protocol the proxy speaks to the upstream (default `http1`).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// How gRPC calls to this upstream are judged.
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// The upstream's pipeline; its breaker is named after the upstream.
    #[serde(default)]
    pub pipeline: Option<PipelineTable>,
    /// TLS to the upstream (feature `tls`); plain TCP when absent.
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
}

/// An upstream's `protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 for every request (the default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, for every request: one multiplexed
    /// connection per address and worker, over cleartext TCP, or over TLS
    /// offering `h2` by ALPN when the upstream has `tls`.
    H2c,
    /// HTTP/2 (as `h2c`) for a gRPC call that came over HTTP/2 (a
    /// `content-type` of `application/grpc`, `application/grpc+…`), HTTP/1.1
    /// for every other request.
    Auto,
}

impl UpstreamProtocol {
    /// The name written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Auto => "auto",
        }
    }
}

/// An upstream's `grpc` table: how the policies judge gRPC calls (requests
/// whose `content-type` is `application/grpc…`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// The status codes that count as failures, by name (default
    /// `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`,
    /// `UNKNOWN`); `OK` is a success and any other code is ignored.
    #[serde(default = "default_failure_codes")]
    pub failure_codes: Vec<String>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            failure_codes: default_failure_codes(),
        }
    }
}

fn default_failure_codes() -> Vec<String> {
    [
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "INTERNAL",
        "UNKNOWN",
    ]
    .map(String::from)
    .to_vec()
}

impl GrpcConfig {
    /// The failure codes as a set; `None` when a name is not a failure
    /// code (validation reports it).
    pub fn codes(&self) -> Option<ripcord_tower::grpc::FailureCodes> {
        ripcord_tower::grpc::FailureCodes::from_names(self.failure_codes.iter().map(String::as_str))
            .ok()
    }
}

/// `[[routes]]`: which requests go to which upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name (unique; its breaker's name).
    pub name: String,
    /// The path prefix it matches (default `/`): `/api` matches `/api`,
    /// `/api/…` and `/api?…`, not `/apix`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The host it matches (the `Host` header or the URI's authority, port
    /// ignored, case-insensitive); any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    /// The upstream's name.
    pub upstream: String,
    /// The route's pipeline; its breaker is named after the route.
    #[serde(default)]
    pub pipeline: Option<PipelineTable>,
    /// Faults injected into the route's requests, inside its policies, where
    /// the upstream's own failures would be: latency, aborts (answered with
    /// `abort_status`, default 503), errors (500), resets (502) and stalls
    /// (cut off by the route's timeout: 504). The admin API starts, changes
    /// and stops a drill on any route, with or without this table.
    #[serde(default)]
    pub fault: Option<ripcord::ChaosConfig>,
}

impl RouteConfig {
    /// The path prefix, `/` when absent.
    pub fn prefix(&self) -> &str {
        self.path_prefix.as_deref().unwrap_or("/")
    }
}

/// A `pipeline` table: the policies of a route or an upstream, as ripcord's
/// [`PipelineConfig`], whose `fallback` entry also says what the proxy
/// answers ([`StaticFallback`]). See the [module docs](self).
pub type PipelineTable = PipelineConfig<StaticFallback>;

/// One policy of a [`PipelineTable`].
pub type PolicyTable = PolicyConfig<StaticFallback>;

/// A pipeline's `fallback = { status, body, content_type }`: what the proxy
/// answers instead of its own error responses (open breaker, rate limited,
/// bulkhead full, timeout, upstream unreachable), and on which of them (the
/// core's [`FallbackConfig`] triggers, all on by default). Upstream
/// responses pass unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFallback {
    /// The status code (100 to 599, default 200).
    #[serde(default = "default_fallback_status")]
    pub status: u16,
    /// The body (default empty).
    #[serde(default)]
    pub body: String,
    /// The `Content-Type` (default `text/plain; charset=utf-8`).
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Answer when a circuit breaker refused the request (default true).
    #[serde(default = "yes")]
    pub on_rejected: bool,
    /// Answer when a bulkhead or a rate limiter refused it (default true).
    #[serde(default = "yes")]
    pub on_refused: bool,
    /// Answer when the upstream failed, timed out or could not be reached
    /// (default true).
    #[serde(default = "yes")]
    pub on_failure: bool,
}

impl Default for StaticFallback {
    fn default() -> Self {
        StaticFallback {
            status: default_fallback_status(),
            body: String::new(),
            content_type: default_content_type(),
            on_rejected: true,
            on_refused: true,
            on_failure: true,
        }
    }
}

impl FallbackEntry for StaticFallback {
    fn triggers(&self) -> FallbackConfig {
        FallbackConfig {
            on_rejected: self.on_rejected,
            on_refused: self.on_refused,
            on_failure: self.on_failure,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_fallback_status() -> u16 {
    200
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".to_string()
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `routes[2].pipeline.circuit_breaker.failure_rate`
    /// (empty for the file as a whole).
    pub path: String,
    /// Line and column (1-based), where known.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration file")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or breaks a rule; every problem is listed.
    #[error("{}", render(file, problems))]
    Invalid {
        /// The file (or the label given to [`ProxyConfig::parse`]).
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(file);
        if let Some((line, col)) = p.position {
            out.push_str(&format!(":{line}:{col}"));
        }
        if p.path.is_empty() {
            out.push_str(&format!(": {}", p.message));
        } else {
            out.push_str(&format!(": `{}`: {}", p.path, p.message));
        }
    }
    out
}

impl ProxyConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<ProxyConfig, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        ProxyConfig::parse(&text, &file)
    }

    /// Parses and validates `text`; errors name `file_label` as the file.
    pub fn parse(text: &str, file_label: &str) -> Result<ProxyConfig, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            file: file_label.to_string(),
            problems,
        };
        let doc = match toml_edit::Document::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let position = e.span().map(|s| line_col(text, s.start));
                return Err(invalid(vec![Problem {
                    path: String::new(),
                    position,
                    message: format!("invalid TOML: {}", first_line(e.message())),
                }]));
            }
        };
        let keys = KeyIndex::new(&doc);
        let config: ProxyConfig = match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let (path, position) = match e.span() {
                    Some(span) => (keys.path_at(&span), Some(line_col(text, span.start))),
                    None => (String::new(), None),
                };
                let mut message = first_line(e.message()).to_string();
                if message.starts_with("data did not match any variant") {
                    message = untagged_hint(&path);
                }
                // Some messages (untagged enums) do not repeat the value.
                if let Some(found) = e.span().and_then(|s| text.get(s)) {
                    let found = found.trim();
                    if !found.is_empty()
                        && found.len() <= 60
                        && !found.contains('\n')
                        && !message.contains(found)
                    {
                        message.push_str(&format!(" (found `{found}`)"));
                    }
                }
                return Err(invalid(vec![Problem {
                    path,
                    position,
                    message,
                }]));
            }
        };
        let mut problems = Vec::new();
        config.validate(
            &|path| keys.contains(path),
            &mut |path: String, message: String| {
                let position = keys.position_of(&path).map(|o| line_col(text, o));
                problems.push(Problem {
                    path,
                    position,
                    message,
                });
            },
        );
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(invalid(problems))
        }
    }

    /// What a running proxy should warn about at start: an admin listener
    /// reachable from other hosts without a token (its reads are then open
    /// to them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let exposed = self
            .admin
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        if exposed && self.admin_token().is_none() {
            out.push(format!(
                "the admin listener {} is not on loopback and no admin token is set: breaker states, \
                 history and /metrics are readable from other hosts (control calls stay refused); \
                 bind it to 127.0.0.1 or set `[admin] token`",
                self.admin.listen
            ));
        }
        out
    }

    /// The admin token (see [`AdminConfig::resolve_token`]).
    pub fn admin_token(&self) -> Option<String> {
        self.admin.resolve_token()
    }

    /// Every breaker the configuration makes, in order (upstreams by name,
    /// then routes): `(scope, name, config)` with scope `upstream:NAME` or
    /// `route:NAME`.
    pub fn breakers(&self) -> Vec<(String, String, CircuitBreakerConfig)> {
        let mut out = Vec::new();
        for (name, u) in &self.upstreams {
            if let Some(c) = breaker_of(u.pipeline.as_ref()) {
                out.push((format!("upstream:{name}"), name.clone(), c));
            }
        }
        for r in &self.routes {
            if let Some(c) = breaker_of(r.pipeline.as_ref()) {
                out.push((format!("route:{}", r.name), r.name.clone(), c));
            }
        }
        out
    }

    /// A short human-readable summary (what `ripcord check` prints).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|l| {
                let log = if l.access_log { " (access log)" } else { "" };
                match &l.tls {
                    None => format!("{}{log}", l.listen),
                    Some(t) => format!(
                        "{} (TLS{}){log}",
                        l.listen,
                        match (&t.client_ca, t.client_auth) {
                            (None, _) => "",
                            (Some(_), ClientAuth::Required) => ", client certificates required",
                            (Some(_), ClientAuth::Optional) =>
                                ", client certificates checked if sent",
                        }
                    ),
                }
            })
            .collect();
        s.push_str(&format!("listeners: {}\n", listeners.join(", ")));
        let exposed = self
            .admin
            .listen
            .parse::<SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        s.push_str(&format!(
            "admin: {}{} (token {})\n",
            self.admin.listen,
            if exposed {
                ", not loopback: reachable from other hosts"
            } else {
                ""
            },
            if self.admin_token().is_some() {
                "set"
            } else {
                "not set: mutating admin calls are refused"
            }
        ));
        match &self.store {
            Some(url) => s.push_str(&format!(
                "store: {} (prefix `{}`)\n",
                redact_url(url),
                self.store_prefix.as_deref().unwrap_or("ripcord")
            )),
            None => s.push_str("store: none (state in memory)\n"),
        }
        s.push_str(&format!(
            "workers: {}, busy polling: {}\n",
            self.limits.worker_count(),
            if self.limits.busy_poll.is_zero() {
                "off".to_string()
            } else {
                format!(
                    "{} after each request",
                    humantime::format_duration(self.limits.busy_poll)
                )
            }
        ));
        s.push_str(&format!("upstreams: {}\n", self.upstreams.len()));
        for (name, u) in &self.upstreams {
            s.push_str(&format!(
                "  {name}: {} ({}{}){}\n",
                u.addresses.join(", "),
                u.protocol.as_str(),
                if u.tls.is_some() { ", TLS" } else { "" },
                policies_summary(u.pipeline.as_ref())
            ));
        }
        s.push_str(&format!("routes: {}\n", self.routes.len()));
        for r in &self.routes {
            s.push_str(&format!(
                "  {}: host {} prefix {} -> {}{}\n",
                r.name,
                r.host.as_deref().unwrap_or("*"),
                r.prefix(),
                r.upstream,
                policies_summary(r.pipeline.as_ref())
            ));
        }
        let breakers: Vec<String> = self.breakers().into_iter().map(|b| b.1).collect();
        s.push_str(&format!(
            "breakers: {}\n",
            if breakers.is_empty() {
                "none".to_string()
            } else {
                breakers.join(", ")
            }
        ));
        s
    }

    /// Reports every problem; `written` says whether a key path is in the
    /// file (to name a policy by its key or by its place in a list).
    fn validate(&self, written: &dyn Fn(&str) -> bool, report: &mut dyn FnMut(String, String)) {
        if let Some(url) = &self.store {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                report(
                    "store".into(),
                    format!("{url:?} is not a store URL; expected `redis://host:port` or `rediss://host:port`"),
                );
            }
        }
        if let Some(p) = &self.store_prefix {
            if p.is_empty() || p.contains(char::is_whitespace) || p.contains(['{', '}']) {
                report(
                    "store_prefix".into(),
                    format!("{p:?}: expected a non-empty prefix without spaces or braces"),
                );
            }
        }
        check_addr("admin.listen", &self.admin.listen, report);
        if self.admin.token.is_some() && self.admin.token_env.is_some() {
            report(
                "admin.token_env".into(),
                "set either `token` or `token_env`, not both".into(),
            );
        }
        if let Some(var) = &self.admin.token_env {
            if var.is_empty() || var.contains(['=', '\0']) {
                report(
                    "admin.token_env".into(),
                    format!("{var:?}: expected the name of an environment variable"),
                );
            }
        }
        if let Some(token) = self.admin_token() {
            let chars = token.chars().count();
            if chars < MIN_TOKEN_CHARS {
                let (path, whence) = match (&self.admin.token, &self.admin.token_env) {
                    (Some(_), _) => ("admin.token", "the token".to_string()),
                    (None, var) => (
                        "admin.token_env",
                        format!(
                            "the token in ${}",
                            var.as_deref().unwrap_or(DEFAULT_TOKEN_ENV)
                        ),
                    ),
                };
                report(
                    path.into(),
                    format!("{whence} has {chars} characters; expected at least {MIN_TOKEN_CHARS} (a long random string)"),
                );
            }
        }
        for (i, h) in self.admin.allowed_hosts.iter().enumerate() {
            if h.contains(':') || super::request::host_of(h.as_bytes()).is_none() {
                report(
                    format!("admin.allowed_hosts[{i}]"),
                    format!("{h:?}: expected a host name such as `proxy.internal` (no port)"),
                );
            }
        }
        if !(1..=MAX_STREAMS_PER_PEER).contains(&self.admin.max_streams_per_peer) {
            report(
                "admin.max_streams_per_peer".into(),
                format!(
                    "{}: expected 1 to {MAX_STREAMS_PER_PEER} event streams",
                    self.admin.max_streams_per_peer
                ),
            );
        }
        let l = &self.limits;
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&l.max_header_bytes) {
            report(
                "limits.max_header_bytes".into(),
                format!(
                    "{}: expected {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES} bytes",
                    l.max_header_bytes
                ),
            );
        }
        if let Some(w) = l.workers {
            if !(1..=MAX_WORKERS).contains(&w) {
                report(
                    "limits.workers".into(),
                    format!("{w}: expected 1 to {MAX_WORKERS} worker threads"),
                );
            }
        }
        if l.busy_poll > MAX_BUSY_POLL {
            report(
                "limits.busy_poll".into(),
                format!(
                    "{}: expected 0s (off) to {}",
                    humantime::format_duration(l.busy_poll),
                    humantime::format_duration(MAX_BUSY_POLL)
                ),
            );
        }
        if !(1..=MAX_CONNECTIONS).contains(&l.max_connections) {
            report(
                "limits.max_connections".into(),
                format!(
                    "{}: expected 1 to {MAX_CONNECTIONS} connections",
                    l.max_connections
                ),
            );
        }
        if l.max_connections_per_peer == 0 || l.max_connections_per_peer > l.max_connections {
            report(
                "limits.max_connections_per_peer".into(),
                format!(
                    "{}: expected 1 to `limits.max_connections` ({}) connections",
                    l.max_connections_per_peer, l.max_connections
                ),
            );
        }
        for (key, d) in [
            ("default_timeout", l.default_timeout),
            ("drain_deadline", l.drain_deadline),
            ("connect_timeout", l.connect_timeout),
            ("pool_idle_timeout", l.pool_idle_timeout),
            ("header_read_timeout", l.header_read_timeout),
            ("idle_timeout", l.idle_timeout),
            ("body_read_timeout", l.body_read_timeout),
            ("upgrade_idle_timeout", l.upgrade_idle_timeout),
        ] {
            check_duration(&format!("limits.{key}"), d, report);
        }
        if self.listeners.is_empty() {
            report(
                "listeners".into(),
                "at least one `[[listeners]]` table with `listen = \"127.0.0.1:8080\"` is needed"
                    .into(),
            );
        }
        let mut seen_listen: HashMap<&str, usize> = HashMap::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            let path = format!("listeners[{i}].listen");
            check_addr(&path, &listener.listen, report);
            let fixed = |a: &str| a.parse::<SocketAddr>().is_ok_and(|a| a.port() != 0);
            if fixed(&listener.listen) && listener.listen == self.admin.listen {
                report(
                    path.clone(),
                    format!(
                        "{:?} is also `admin.listen`; the admin listener needs an address of its own",
                        listener.listen
                    ),
                );
            }
            if let Some(j) = seen_listen.insert(listener.listen.as_str(), i) {
                report(
                    path,
                    format!("{:?} is already used by listeners[{j}]", listener.listen),
                );
            }
            if let Some(tls) = &listener.tls {
                check_listener_tls(&format!("listeners[{i}].tls"), tls, report);
            }
        }
        for (name, u) in &self.upstreams {
            let base = format!("upstreams.{name}");
            check_name(&base, name, report);
            if u.addresses.is_empty() {
                report(
                    format!("{base}.addresses"),
                    "expected at least one `host:port` address".into(),
                );
            }
            for (i, a) in u.addresses.iter().enumerate() {
                if let Err(why) = check_upstream_address(a) {
                    report(format!("{base}.addresses[{i}]"), why);
                }
            }
            for (i, code) in u.grpc.failure_codes.iter().enumerate() {
                if ripcord_tower::grpc::FailureCodes::from_names([code.as_str()]).is_err() {
                    let names = &ripcord_tower::grpc::CODE_NAMES[1..];
                    report(
                        format!("{base}.grpc.failure_codes[{i}]"),
                        format!(
                            "{code:?} is not a gRPC status code that can be a failure; expected one of {} (OK is always a success)",
                            names.join(", ")
                        ),
                    );
                }
            }
            if let Some(p) = &u.pipeline {
                check_pipeline(&format!("{base}.pipeline"), p, written, report);
            }
            if let Some(tls) = &u.tls {
                check_upstream_tls(&base, u, tls, report);
            }
        }
        if self.routes.is_empty() {
            report(
                "routes".into(),
                "at least one `[[routes]]` table (name, path_prefix and/or host, upstream) is needed"
                    .into(),
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut matches: HashMap<(String, &str), usize> = HashMap::new();
        for (i, r) in self.routes.iter().enumerate() {
            let base = format!("routes[{i}]");
            check_name(&format!("{base}.name"), &r.name, report);
            if let Some(j) = names.insert(r.name.as_str(), i) {
                report(
                    format!("{base}.name"),
                    format!("the route name `{}` is already used by routes[{j}]", r.name),
                );
            }
            if !self.upstreams.contains_key(&r.upstream) {
                let known: Vec<&str> = self.upstreams.keys().map(String::as_str).collect();
                report(
                    format!("{base}.upstream"),
                    format!(
                        "no upstream named `{}`; expected one of the `[upstreams.NAME]` tables ({})",
                        r.upstream,
                        if known.is_empty() {
                            "none is defined".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            if let Some(p) = &r.path_prefix {
                if !p.starts_with('/') || p.contains(['?', '#']) || p.contains(char::is_whitespace)
                {
                    report(
                        format!("{base}.path_prefix"),
                        format!(
                            "{p:?}: expected a path starting with `/`, without `?`, `#` or spaces"
                        ),
                    );
                }
            }
            if let Some(h) = &r.host {
                if h.is_empty()
                    || h.contains(['/', ':', '?', '#', ' '])
                    || h.parse::<http::uri::Authority>().is_err()
                {
                    report(
                        format!("{base}.host"),
                        format!("{h:?}: expected a host name such as `api.example.com` (no scheme, port or path)"),
                    );
                }
            }
            let key = (
                r.host.as_deref().unwrap_or("").to_ascii_lowercase(),
                r.prefix().trim_end_matches('/'),
            );
            if let Some(j) = matches.insert(key, i) {
                report(
                    format!("{base}.path_prefix"),
                    format!("matches exactly the requests routes[{j}] matches (same host and path prefix)"),
                );
            }
            if let Some(p) = &r.pipeline {
                check_pipeline(&format!("{base}.pipeline"), p, written, report);
            }
            if let Some(f) = &r.fault {
                if let Err((field, message)) = check_fault(f) {
                    report(format!("{base}.fault.{field}"), message);
                }
            }
        }
        // Breakers and rate limiters are named after their route or
        // upstream; in a fleet the name is the shared key.
        for (kind, what) in [
            (PolicyKind::CircuitBreaker, "breaker"),
            (PolicyKind::RateLimiter, "rate limiter"),
        ] {
            let mut owners: HashMap<String, String> = HashMap::new();
            for (name, u) in &self.upstreams {
                if u.pipeline.as_ref().is_some_and(|p| has_kind(p, kind)) {
                    owners.insert(name.clone(), format!("upstreams.{name}"));
                }
            }
            for (i, r) in self.routes.iter().enumerate() {
                let Some(p) = r.pipeline.as_ref().filter(|p| has_kind(p, kind)) else {
                    continue;
                };
                if let Some(other) = owners.insert(r.name.clone(), format!("routes[{i}]")) {
                    let path = policy_paths(&format!("routes[{i}].pipeline"), p, written)
                        .into_iter()
                        .find(|(_, c)| c.kind() == kind)
                        .map(|(path, _)| path)
                        .unwrap_or_default();
                    report(
                        path,
                        format!(
                            "the {what} would be named `{}`, like the one of {other}; {what}s are named after their route or upstream, so rename one of them",
                            r.name
                        ),
                    );
                }
            }
        }
    }
}

/// The breaker configuration of a pipeline table, if it has one.
fn breaker_of(p: Option<&PipelineTable>) -> Option<CircuitBreakerConfig> {
    p?.policies.iter().find_map(|c| match c {
        PolicyConfig::CircuitBreaker(c) => Some(c.clone()),
        _ => None,
    })
}

/// Whether a pipeline table has a policy of `kind`.
fn has_kind(p: &PipelineTable, kind: PolicyKind) -> bool {
    p.policies.iter().any(|c| c.kind() == kind)
}

/// Each policy of the table at `base` with its key path: `base.KIND` in the
/// one-key-per-policy form, `base.policy[i]` in the list form.
fn policy_paths<'a>(
    base: &str,
    p: &'a PipelineTable,
    written: &dyn Fn(&str) -> bool,
) -> Vec<(String, &'a PolicyTable)> {
    let listed = written(&format!("{base}.policy"));
    p.policies
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = if listed {
                format!("{base}.policy[{i}]")
            } else {
                format!("{base}.{}", c.kind().as_str())
            };
            (path, c)
        })
        .collect()
}

fn policies_summary(p: Option<&PipelineTable>) -> String {
    let Some(p) = p else {
        return String::new();
    };
    let parts: Vec<String> = p
        .policies
        .iter()
        .map(|c| match c {
            PolicyConfig::Timeout(t) => {
                format!("timeout {}", humantime::format_duration(t.timeout))
            }
            PolicyConfig::Retry(r) => format!("retry x{}", r.max_attempts),
            PolicyConfig::Bulkhead(b) => format!("bulkhead {}", b.max_concurrent),
            PolicyConfig::RateLimiter(r) => format!(
                "rate_limiter {}/{}",
                r.rate,
                humantime::format_duration(r.period)
            ),
            PolicyConfig::Fallback(f) => format!("fallback {}", f.status),
            other => other.kind().as_str().to_string(),
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(", "))
    }
}

/// A store URL without its password.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn check_addr(path: &str, value: &str, report: &mut dyn FnMut(String, String)) {
    if value.parse::<SocketAddr>().is_err() {
        report(
            path.to_string(),
            format!("{value:?}: expected an IP address and port such as `127.0.0.1:8080` (port 0 picks a free one)"),
        );
    }
}

fn check_duration(path: &str, d: Duration, report: &mut dyn FnMut(String, String)) {
    if d.is_zero() || d > Duration::from_secs(24 * 3600) {
        report(
            path.to_string(),
            format!(
                "{}: expected a duration greater than zero and at most 24h",
                humantime::format_duration(d)
            ),
        );
    }
}

fn check_name(path: &str, name: &str, report: &mut dyn FnMut(String, String)) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        report(
            path.to_string(),
            format!("{name:?}: expected 1 to 64 characters from A-Z, a-z, 0-9, `-`, `_`, `.`"),
        );
    }
}

/// Checks an upstream address: `host:port`, no scheme, no path.
fn check_upstream_address(a: &str) -> Result<(), String> {
    let hint = "expected `host:port` such as `127.0.0.1:3000` or `api.internal:80`";
    if a.contains("://") {
        return Err(format!("{a:?}: {hint}, without a scheme"));
    }
    let authority: http::uri::Authority = a
        .parse()
        .map_err(|_| format!("{a:?} is not an address: {hint}"))?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(format!("{a:?}: {hint}"));
    }
    match authority.port_u16() {
        Some(p) if p != 0 => Ok(()),
        _ => Err(format!("{a:?} has no port (or port 0): {hint}")),
    }
}

/// What a `tls` table reports in a build without the `tls` feature.
#[cfg(not(feature = "tls"))]
const NO_TLS: &str =
    "TLS needs ripcord-proxy's `tls` feature, which this build lacks (the `ripcord` binary has it)";

#[cfg(not(feature = "tls"))]
fn check_listener_tls(
    base: &str,
    _tls: &ListenerTlsConfig,
    report: &mut dyn FnMut(String, String),
) {
    report(base.to_string(), NO_TLS.into());
}

/// Builds the listener's TLS configuration from its files, as the proxy
/// will: each problem at the key naming the file.
#[cfg(feature = "tls")]
fn check_listener_tls(base: &str, tls: &ListenerTlsConfig, report: &mut dyn FnMut(String, String)) {
    if tls.client_ca.is_none() && tls.client_auth != ClientAuth::default() {
        report(
            format!("{base}.client_auth"),
            "needs `client_ca`, the authorities client certificates are checked against".into(),
        );
    }
    if let Err(e) = super::tls::server_config(tls) {
        report(tls_path(base, e.key()), crate::error_chain(&e));
    }
}

#[cfg(not(feature = "tls"))]
fn check_upstream_tls(
    base: &str,
    _u: &UpstreamConfig,
    _tls: &UpstreamTlsConfig,
    report: &mut dyn FnMut(String, String),
) {
    report(format!("{base}.tls"), NO_TLS.into());
}

/// Builds the upstream's TLS configuration from its files and checks the
/// names its certificates will be checked against.
#[cfg(feature = "tls")]
fn check_upstream_tls(
    base: &str,
    u: &UpstreamConfig,
    tls: &UpstreamTlsConfig,
    report: &mut dyn FnMut(String, String),
) {
    if let Err(e) = super::tls::client_config(tls, &[super::tls::H1_ALPN]) {
        report(
            tls_path(&format!("{base}.tls"), e.key()),
            crate::error_chain(&e),
        );
    }
    if tls.server_name.is_some() {
        if let Err(e) = super::tls::server_name(tls, "") {
            report(format!("{base}.tls.server_name"), e.to_string());
        }
        return;
    }
    for (i, a) in u.addresses.iter().enumerate() {
        let Ok(authority) = a.parse::<http::uri::Authority>() else {
            continue;
        };
        if let Err(e) = super::tls::server_name(tls, authority.host()) {
            report(
                format!("{base}.addresses[{i}]"),
                format!("{e}: the host is the name TLS checks the certificate against; set `tls.server_name` otherwise"),
            );
        }
    }
}

/// The key path of a `tls` table's key (`key` empty: the table).
#[cfg(feature = "tls")]
fn tls_path(base: &str, key: &str) -> String {
    if key.is_empty() {
        base.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// Checks a route's fault table; the error names its field and says what
/// is wrong. Also what the admin API checks a drill with.
pub fn check_fault(f: &ripcord::ChaosConfig) -> Result<(), (&'static str, String)> {
    if let Err(e) = f.validate() {
        return Err((
            e.field(),
            format!("{}: expected {}", e.value(), e.expected()),
        ));
    }
    if f.outcome_rate > 0.0 {
        return Err((
            "outcome_rate",
            format!(
                "{}: the proxy injects latency, aborts, errors, resets and stalls; a forced \
                 outcome is for pipelines in code (expected 0)",
                f.outcome_rate
            ),
        ));
    }
    Ok(())
}

fn check_pipeline(
    base: &str,
    p: &PipelineTable,
    written: &dyn Fn(&str) -> bool,
    report: &mut dyn FnMut(String, String),
) {
    let mut seen: Vec<PolicyKind> = Vec::new();
    for (path, c) in policy_paths(base, p, written) {
        let kind = c.kind();
        // Breakers, bulkheads and rate limiters are named and kept by
        // their route or upstream: one of each per table.
        let keyed = matches!(
            kind,
            PolicyKind::CircuitBreaker | PolicyKind::Bulkhead | PolicyKind::RateLimiter
        );
        if keyed && seen.contains(&kind) {
            report(
                path,
                format!(
                    "a second `{kind}`: a proxy pipeline holds at most one breaker, one bulkhead and one rate limiter (they are named after the route or upstream)"
                ),
            );
            continue;
        }
        seen.push(kind);
        let result = match c {
            PolicyConfig::Chaos(_) => {
                report(
                    path,
                    "fault injection on a route is its `fault` table (e.g. `[routes.fault]`), \
                     placed inside its policies; a pipeline does not hold one"
                        .into(),
                );
                continue;
            }
            // Bare or in a table, it is written at `path`.
            PolicyConfig::Timeout(t) => {
                check_duration(&path, t.timeout, report);
                continue;
            }
            PolicyConfig::Fallback(f) => {
                if !(100..=599).contains(&f.status) {
                    report(
                        format!("{path}.status"),
                        format!("{}: expected an HTTP status code from 100 to 599", f.status),
                    );
                }
                if http::HeaderValue::from_str(&f.content_type).is_err() {
                    report(
                        format!("{path}.content_type"),
                        format!(
                            "{:?}: expected a header value such as `application/json`",
                            f.content_type
                        ),
                    );
                }
                f.triggers().validate()
            }
            other => other.validate(),
        };
        if let Err(e) = result {
            report(
                format!("{path}.{}", e.field()),
                format!("{}: expected {}", e.value(), e.expected()),
            );
        }
    }
}

/// What a key written in one of several forms accepts (the reader only
/// says that no form matched).
fn untagged_hint(path: &str) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    let forms = match key {
        "open_for" | "backoff" => {
            "a duration such as \"5s\", or a table such as { kind = \"exponential\", base = \"1s\", max = \"1m\" }"
        }
        "window" => "a table such as { count = 100 } or { time = \"10s\" }",
        _ => "one of the forms this key accepts",
    };
    format!("invalid value; expected {forms}")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Every key of the document with its path and where it is written: to
/// name the key of an error the TOML reader reports by position, and to give
/// the position of a key path found wrong by validation.
struct KeyIndex {
    entries: Vec<KeyEntry>,
}

/// A key path, where its key is written and where its value is.
type KeyEntry = (String, Option<Range<usize>>, Option<Range<usize>>);

impl KeyIndex {
    fn new(doc: &toml_edit::Document<&str>) -> Self {
        let mut index = KeyIndex {
            entries: Vec::new(),
        };
        index.walk_table(doc.as_table(), "");
        index
    }

    fn walk_table(&mut self, table: &dyn toml_edit::TableLike, base: &str) {
        for (key, item) in table.iter() {
            let path = if base.is_empty() {
                key.to_string()
            } else {
                format!("{base}.{key}")
            };
            let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
            self.walk_item(item, path, key_span);
        }
    }

    fn walk_item(&mut self, item: &toml_edit::Item, path: String, key_span: Option<Range<usize>>) {
        self.entries.push((path.clone(), key_span, item.span()));
        match item {
            toml_edit::Item::Table(t) => self.walk_table(t, &path),
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.entries.push((p.clone(), None, t.span()));
                    self.walk_table(t, &p);
                }
            }
            toml_edit::Item::Value(v) => self.walk_value(v, &path),
            toml_edit::Item::None => {}
        }
    }

    fn walk_value(&mut self, v: &toml_edit::Value, path: &str) {
        match v {
            toml_edit::Value::InlineTable(t) => self.walk_table(t, path),
            toml_edit::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.entries.push((p.clone(), None, v.span()));
                    self.walk_value(v, &p);
                }
            }
            _ => {}
        }
    }

    /// The path of the innermost key or value at `span`.
    fn path_at(&self, span: &Range<usize>) -> String {
        let contains = |r: &Option<Range<usize>>| {
            r.as_ref()
                .is_some_and(|r| r.start <= span.start && span.start < r.end.max(r.start + 1))
        };
        let mut best: Option<(&str, usize)> = None;
        for (path, key, value) in &self.entries {
            for r in [key, value] {
                if contains(r) {
                    let len = r.as_ref().map_or(usize::MAX, |r| r.end - r.start);
                    if best.is_none_or(|(_, l)| len <= l) {
                        best = Some((path, len));
                    }
                }
            }
        }
        best.map(|(p, _)| p.to_string()).unwrap_or_default()
    }

    /// Whether the key `path` is written in the document.
    fn contains(&self, path: &str) -> bool {
        self.entries.iter().any(|(p, _, _)| p == path)
    }

    /// Where the key `path` (or its nearest written ancestor) is written.
    fn position_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some((_, key, value)) = self.entries.iter().find(|(q, _, _)| q == p) {
                if let Some(r) = key.as_ref().or(value.as_ref()) {
                    return Some(r.start);
                }
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((l, c)) = self.position {
            write!(f, "{l}:{c}: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[listeners]]
listen = "127.0.0.1:0"
[upstreams.app]
addresses = ["127.0.0.1:3000"]
[[routes]]
name = "all"
upstream = "app"
"#;

    #[test]
    fn workers_default_to_one_per_cpu_and_are_bounded() {
        let c = ProxyConfig::parse(BASE, "t.toml").expect("valid");
        assert_eq!(c.limits.workers, None);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(c.limits.worker_count(), cpus.min(MAX_WORKERS));

        let c =
            ProxyConfig::parse(&format!("[limits]\nworkers = 3\n{BASE}"), "t.toml").expect("valid");
        assert_eq!(c.limits.worker_count(), 3);

        for bad in [0, MAX_WORKERS + 1] {
            let text = format!("[limits]\nworkers = {bad}\n{BASE}");
            let err = ProxyConfig::parse(&text, "t.toml")
                .expect_err("out of range")
                .to_string();
            assert!(err.contains("t.toml"), "{err}");
            assert!(err.contains("limits.workers"), "{err}");
            assert!(
                err.contains(&format!("expected 1 to {MAX_WORKERS}")),
                "{err}"
            );
        }
    }
}
