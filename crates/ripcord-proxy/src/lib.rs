//! ripcord's reverse proxy: it puts ripcord's pipelines in front of any HTTP
//! upstream, with an admin API, `/metrics` and a live dashboard. The
//! `ripcord proxy` and `ripcord check` commands are thin shells over [`run`]
//! and [`check`].
//!
//! - [`config`]: the TOML file, its validation and error messages
//!   (`ripcord check`).
//! - [`server`]: [`Proxy::start`](server::Proxy::start), reload and graceful
//!   shutdown.
//! - `admin` (feature `admin`) and [`state`]: the admin listener and what
//!   it sees.
//! - `tls` (feature `tls`): certificates, keys and the rustls
//!   configurations of listeners and upstreams.
//!
//! # Upgrades (WebSockets)
//!
//! An HTTP/1.1 request without a body that asks to switch protocols
//! (`Connection: upgrade`, `Upgrade: websocket`) is forwarded once, with
//! those two fields, through the route's policies; the breaker counts the
//! upgrade response (a `101` is a success). After a `101` the client's and
//! the upstream's connections are joined byte for byte until either side
//! closes, or until neither sends anything for
//! `limits.upgrade_idle_timeout` (default 60 s). A tunnel keeps its place
//! under `limits.max_connections`, and shutdown cuts it at the drain
//! deadline.
//!
//! # Logs
//!
//! The proxy speaks through `tracing`; nothing is printed unless a
//! subscriber is installed (the `ripcord` binary installs one, text or JSON
//! on stdout). Its events: at [`LOG_TARGET`] start, reload and stop (INFO),
//! warnings (WARN) and failed upstream requests (DEBUG); at `ripcord`
//! breaker transitions (WARN when a breaker opens, INFO otherwise); at
//! [`ACCESS_TARGET`] one INFO event per request on a listener with
//! `access_log = true`, when its response ends, with the fields `method`,
//! `path`, `version`, `peer`, `status`, `route`, `upstream`, `policy` (an
//! answer the proxy made itself), `breaker` (the route's breaker state
//! then), `duration_ms`, `bytes` and `complete`. With no subscriber
//! interested in access events, none is built.
//!
//! What happens to one request (its head checked, its route found, its
//! policies run, its headers rewritten, the answers the proxy makes itself)
//! is internal: the configuration is the interface.
//!
//! # Example
//!
//! A configuration from a TOML string, a proxy started on it (port 0
//! picks free ports), one request through it, and a graceful stop:
//!
//! ```
//! use std::time::Duration;
//!
//! use ripcord_proxy::config::ProxyConfig;
//! use ripcord_proxy::server::Proxy;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ProxyConfig::parse(
//!     r#"
//!     [[listeners]]
//!     listen = "127.0.0.1:0"
//!
//!     [admin]
//!     listen = "127.0.0.1:0"
//!
//!     [upstreams.api]
//!     addresses = ["127.0.0.1:9"]
//!     pipeline.circuit_breaker = { consecutive_failures = 5, open_for = "10s" }
//!
//!     [[routes]]
//!     name = "api"
//!     path_prefix = "/api"
//!     upstream = "api"
//!     "#,
//!     "example.toml",
//! )?;
//! print!("{}", config.summary());
//!
//! let proxy = Proxy::start(config).await?;
//! let addr = proxy.listen_addrs()[0];
//! #[cfg(feature = "admin")]
//! println!("proxy on http://{addr}, admin on http://{}", proxy.admin_addr());
//!
//! // No route matches `/`: the proxy answers 404 itself.
//! let mut conn = tokio::net::TcpStream::connect(addr).await?;
//! conn.write_all(b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
//!     .await?;
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
//!
//! let report = proxy.shutdown(Duration::from_secs(5)).await;
//! assert!(report.drained);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! - `admin` (default): the admin listener — `/metrics`, the admin API
//!   (breaker states, manual control, reload) and the live dashboard. A
//!   proxy built without it binds no admin listener and ignores `[admin]`.
//! - `testkit`: `upstream`, a flaky HTTP upstream whose behaviour can be
//!   switched while it runs, and `loadgen`, an HTTP load generator
//!   (open-loop at a fixed rate or closed-loop), which the demo, the load
//!   tests and the proxy benchmark drive.
//! - `tls`: TLS with rustls (`ring` provider; no C toolchain beyond the C
//!   compiler `ring` builds with): listeners with a certificate and key,
//!   read again on reload, and optional client-certificate verification
//!   (mTLS); upstreams over TLS with SNI, a CA bundle or the system's roots,
//!   and an optional client certificate (see the `tls` module and
//!   [`config`]). Off by default, so that a library user who needs no TLS
//!   builds no TLS stack; the `ripcord` binary turns it on. Without it, a
//!   file with `tls` tables is refused by [`check`] and [`run`].
//! - `fuzzing`: unstable, not for users: the bodies of the proxy's fuzz
//!   targets (`fuzzing`), for the fuzzers under `fuzz/` and the
//!   corpus-replay tests.

#![cfg_attr(docsrs, feature(doc_cfg))]

//!
//! # Responses the proxy makes
//!
//! | when | status | `x-ripcord-policy` | `Retry-After` |
//! |---|---|---|---|
//! | no route matches | 404 | — | — |
//! | a breaker is open | 503 | `circuit_breaker` | time to the next probe (≥ 1 s) |
//! | a rate limiter refuses | 429 | `rate_limiter` | time to the next permit (≥ 1 s) |
//! | a bulkhead is full | 503 | `bulkhead` | 1 |
//! | no response head within the timeout | 504 | `timeout` | — |
//! | the upstream cannot be reached (or fails before its head) | 502 | `upstream` | — |
//! | any of these, with a `fallback` | the fallback's | `fallback` (and `x-ripcord-fallback-for`) | — |
//! | a request head over `limits.max_header_bytes` | 431 (hyper) | — | — |
//!
//! An upstream that fails mid-body aborts the client's response (HTTP/1.1:
//! the connection is closed before the body's end) and counts as a failure.
//!
//! # Upstream connections
//!
//! Each worker keeps its own pool of HTTP/1.1 keep-alive connections to
//! each upstream address (`limits.pool_max_idle_per_host`, closed after
//! `limits.pool_idle_timeout`). A request without a body, the usual case,
//! goes over the proxy's own HTTP/1.1 client: the request's task writes the
//! head, parses the response head and reads the body straight from the
//! socket. A request with a body goes through hyper's client, which reads
//! an early answer (a 413, say) while the upload is still going.
//!
//! - A connection is reused only when its response was read to its exact
//!   end and the upstream did not ask to close it (`Connection: close`,
//!   HTTP/1.0 without keep-alive, a body delimited by the close), and no
//!   byte followed its end. After a response without a body by rule (to
//!   `HEAD`, 204, 304) it waits 50 ms and is read once before reuse, so
//!   that a body the upstream sends anyway is not taken for the next
//!   request's response; a 204 with `Content-Length` or
//!   `Transfer-Encoding` closes it.
//! - A pooled connection the upstream has closed is replaced before use.
//!   When one closes as a request goes out, before any byte of an answer,
//!   the request is sent again on a new connection if its method is
//!   idempotent (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`, `TRACE`); a
//!   `POST` gets 502, since the upstream may have acted on it.
//! - Response framing follows RFC 9112: chunked bodies (with trailers),
//!   `Content-Length`, or until the connection closes; 1xx interim answers
//!   are skipped; a `Content-Length` beside `Transfer-Encoding` is dropped,
//!   and a repeated one (`5, 5`) reaches the client as one value.
//! - Trailers reach the client only when it asked for them (`TE:
//!   trailers`), and never the fields RFC 9110 §6.5.1 keeps out of trailers
//!   (framing and hop-by-hop fields, `Host`, authentication, cookies, cache
//!   and request controls, content metadata).
//!   A malformed or oversized (256 KiB) response head is a 502.
//!
//! An upstream with `protocol = "h2c"` (or `"auto"`, for gRPC calls that came
//! over HTTP/2) is reached over HTTP/2 with prior knowledge: each worker
//! keeps one multiplexed connection per address, which every concurrent call
//! shares; a call holds its connection until its response body ends, and a
//! connection with no call for `limits.pool_idle_timeout` is closed (at
//! once, with `limits.pool_max_idle_per_host = 0`). The connection pings
//! its upstream every 30 s while calls are in flight and closes when a ping
//! goes unanswered for 20 s. A request a pooled connection could not send
//! (the upstream had closed it) goes once more on a new one. Trailers pass
//! both ways, and a gRPC call gets `TE: trailers` whatever the client sent.
//!
//! # gRPC
//!
//! A request whose `content-type` is `application/grpc…` is judged the
//! gRPC way (see the [config docs](config#grpc-and-http2-upstreams)): by
//! its `grpc-status`, at the head or when the stream ends, its
//! `grpc-timeout` bounding the call and forwarded less the time spent, and
//! the proxy's own answers given as gRPC statuses (HTTP 200, `grpc-status`
//! in the head) rather than the table above:
//!
//! | what happened | `grpc-status` | `x-ripcord-policy` | `grpc-retry-pushback-ms` |
//! |---|---|---|---|
//! | the breaker is open | `UNAVAILABLE` (14) | `circuit_breaker` | time to the next probe |
//! | a rate limiter refuses | `RESOURCE_EXHAUSTED` (8) | `rate_limiter` | time to the next permit |
//! | a bulkhead is full, the upstream cannot be reached | `UNAVAILABLE` (14) | `bulkhead`, `upstream` | — |
//! | a timeout, or the caller's `grpc-timeout`, passed before the head | `DEADLINE_EXCEEDED` (4) | `timeout` | — |
//!
//! # Latency and `limits.busy_poll`
//!
//! Each worker thread serves its connections on a single-threaded runtime
//! and sleeps in the kernel when it has nothing to do. A proxied request
//! wakes it twice: when the request arrives and when the upstream answers.
//! On bare metal a wake-up costs a few microseconds; on a virtual machine
//! whose idle vCPUs halt, it can cost 50 µs or more, and that, not the
//! proxy's own work, is most of what a proxy hop adds there. With
//! `limits.busy_poll = "5ms"`, a worker that served a request in the last
//! 5 ms polls its sockets without sleeping (yielding its core to any other
//! thread that wants it whenever it has nothing to do), so it sees the next
//! event at once. The price is CPU: while requests keep coming at least
//! every 5 ms, every worker that gets them keeps a core busy. An idle proxy
//! sleeps as usual, and under saturation there is nothing to poll for, so
//! throughput stays the same.

#![doc(test(attr(deny(warnings))))]

mod access;
#[cfg(feature = "admin")]
pub mod admin;
mod busy_poll;
pub mod config;
mod conn;
mod forward;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod h1;
pub(crate) mod h2;
#[cfg(feature = "testkit")]
pub mod loadgen;
mod policy;
mod request;
mod route;
pub mod server;
pub mod state;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
mod tunnel;
#[cfg(any(test, feature = "testkit"))]
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use self::config::ProxyConfig;
use self::server::Proxy;

/// What [`run`] runs: the values of `ripcord proxy`'s arguments.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The configuration file, read at start and again on each SIGHUP.
    pub config: PathBuf,
    /// How long shutdown waits for in-flight requests (`None`: the file's
    /// `limits.drain_deadline`).
    pub drain_deadline: Option<Duration>,
}

/// Validates the file at `config`: the summary on `out` on success (exit 0),
/// every problem on `err` on failure (exit 2), one `error: …` line each.
/// Binds nothing.
pub fn check(
    config: &Path,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> ExitCode {
    match ProxyConfig::load(config) {
        Ok(c) => {
            let _ = writeln!(out, "{}: ok", config.display());
            let _ = write!(out, "{}", c.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = write!(err, "{}", error_lines(&e));
            ExitCode::from(2)
        }
    }
}

/// A configuration error as `error: …` lines, one per problem.
fn error_lines(e: &config::ConfigError) -> String {
    error_chain(e)
        .lines()
        .map(|line| format!("error: {line}\n"))
        .collect()
}

/// An error and its causes, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

/// The `tracing` target of the proxy's own events: start, reload, stop,
/// and upstream failures (at DEBUG).
pub const LOG_TARGET: &str = "ripcord::proxy";

/// The `tracing` target of the access log (see [`config::ListenerConfig::access_log`]).
pub const ACCESS_TARGET: &str = "ripcord::access";

macro_rules! info {
    ($($t:tt)*) => { tracing::info!(target: LOG_TARGET, $($t)*) };
}

macro_rules! warn {
    ($($t:tt)*) => { tracing::warn!(target: LOG_TARGET, $($t)*) };
}

/// Runs the proxy until SIGTERM or ctrl-c; reloads the file on SIGHUP.
/// Exit 2 on a bad configuration, 1 when it cannot start; either error is
/// printed on stderr as `error: …`. Everything else it says (listening,
/// warnings, reloads, stopping) is a `tracing` event at [`LOG_TARGET`]:
/// install a subscriber to see it (the `ripcord` binary does).
pub async fn run(args: RunOptions) -> ExitCode {
    let config = match ProxyConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{}", error_lines(&e));
            return ExitCode::from(2);
        }
    };
    let drain = args.drain_deadline.unwrap_or(config.limits.drain_deadline);
    let proxy = match Proxy::start(config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: ripcord proxy cannot start: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    for warning in proxy.config().warnings() {
        warn!("{warning}");
    }
    let configured = proxy.config().limits.max_connections;
    if proxy.max_connections() < configured {
        warn!(
            "the file-descriptor limit leaves room for {} client connections, \
             not `limits.max_connections` = {configured}; raise the hard limit (`ulimit -Hn`) for more",
            proxy.max_connections()
        );
    }
    let listeners = proxy.config().listeners;
    for (addr, l) in proxy.listen_addrs().iter().zip(&listeners) {
        let scheme = if l.tls.is_some() { "https" } else { "http" };
        info!("listening on {scheme}://{addr}");
    }
    #[cfg(feature = "admin")]
    info!(
        "admin, /metrics and dashboard on http://{}",
        proxy.admin_addr()
    );
    let breakers: Vec<String> = proxy
        .state()
        .breakers()
        .iter()
        .map(|e| e.breaker.name().to_string())
        .collect();
    info!(
        "breakers: {}",
        if breakers.is_empty() {
            "none".to_string()
        } else {
            breakers.join(", ")
        }
    );
    if let Some(store) = proxy.store() {
        match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
            Ok(Ok(rtt)) => info!("store answered in {rtt:?}"),
            Ok(Err(e)) => warn!(
                "the store does not answer ({}); breakers decide alone until it does",
                error_chain(&e)
            ),
            Err(_) => {
                warn!("the store did not answer within 2s; breakers decide alone until it does")
            }
        }
    }
    wait_for_signals(&proxy, &args).await;
    info!("draining in-flight requests (up to {drain:?})");
    let report = proxy.shutdown(drain).await;
    if report.drained {
        info!("stopped");
    } else {
        info!(
            "stopped; {} connection(s) cut at the drain deadline",
            report.aborted
        );
    }
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signals(proxy: &server::RunningProxy, args: &RunOptions) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; stop with ctrl-c");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => reload(proxy, args).await,
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(_proxy: &server::RunningProxy, _args: &RunOptions) {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(unix)]
async fn reload(proxy: &server::RunningProxy, args: &RunOptions) {
    let config = match ProxyConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            warn!(
                "reload refused, the running configuration stays: {}",
                error_chain(&e)
            );
            return;
        }
    };
    match proxy.reload(config).await {
        Ok(s) => {
            info!(
                "reloaded; routes: {}; breakers kept: {}; new: {}; removed: {}",
                s.routes.join(", "),
                s.kept_breakers.join(", "),
                s.new_breakers.join(", "),
                s.removed_breakers.join(", ")
            );
            if !s.certificates_reloaded.is_empty() {
                info!(
                    "certificates read again for {}",
                    s.certificates_reloaded.join(", ")
                );
            }
            if !s.restart_needed.is_empty() {
                info!(
                    "changes to {} need a restart; the running values stay",
                    s.restart_needed.join(", ")
                );
            }
        }
        Err(e) => warn!(
            "reload refused, the running configuration stays: {}",
            error_chain(&e)
        ),
    }
}
