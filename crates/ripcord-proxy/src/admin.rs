//! The admin listener: `/metrics`, the admin API and the live dashboard.
//!
//! [`serve`] answers, on a listener of its own (bound to 127.0.0.1 unless
//! configured otherwise):
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | `GET` | `/` | the live dashboard (static HTML, CSS and JS embedded in the binary) |
//! | `GET` | `/metrics` | Prometheus text exposition of every policy |
//! | `GET` | `/api/breakers` | every breaker: state, epoch, window figures, fleet link |
//! | `GET` | `/api/breakers/{name}` | one breaker |
//! | `POST` | `/api/breakers/{name}/{open,disable,reset}` | manual control (bearer token) |
//! | `GET` | `/api/faults` | every route's fault injection: whether a drill runs, its faults, its expiry, requests hit |
//! | `GET` | `/api/faults/{route}` | one route's |
//! | `PUT` | `/api/faults/{route}` | starts or changes a drill (bearer token): a JSON fault table with `expires_after`, e.g. `{"abort_rate": 0.6, "expires_after": "60s"}` |
//! | `DELETE` | `/api/faults/{route}` | stops it (bearer token) |
//! | `GET` | `/api/history` | the last five minutes of one-second samples per breaker |
//! | `GET` | `/api/events` | server-sent events: history on connect, a snapshot every second, each transition at once |
//!
//! Mutating calls need `Authorization: Bearer <token>` with the token from
//! the config (`admin.token`) or the environment (`RIPCORD_ADMIN_TOKEN`),
//! compared in constant time; without a configured token they are refused
//! with 403. Errors are JSON bodies `{"error": "…"}`.
//!
//! The API and `/metrics` answer only requests whose `Host` is an IP
//! address, `localhost`, a name without a dot or one of `[admin]
//! allowed_hosts` (403 otherwise; see [`AdminAccess`](super::state::AdminAccess)):
//! a page on another site that rebinds its DNS name to this listener cannot
//! read them. The listener holds at most [`MAX_CONNECTIONS`] connections
//! (more are closed at once); a connection that sends no whole request head
//! within 10 s, or stays idle 60 s, is closed; a request body must arrive
//! within 10 s (408); one peer address holds at most
//! `admin.max_streams_per_peer` event streams.

mod body;
mod dashboard;
mod events;
mod history;
mod routes;
mod view;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::conn::{watchdog, Activity, Deadlines, Tracked, Watched};
use super::state::ProxyState;

pub use body::AdminBody;
pub use events::MAX_STREAMS;
pub use history::{Sample, HISTORY_SECONDS};
pub use view::{BreakerView, FaultView, FleetView, WindowView};

/// Largest request head (request line and headers) the admin listener reads.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How long a request body may take to arrive.
pub(crate) const BODY_READ_TIMEOUT: Duration = HEADER_READ_TIMEOUT;

/// Largest request body the admin API accepts (mutating calls carry none).
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// How long a client may take to send its request head (or its request
/// body), and a new connection its first request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection with nothing in flight stays open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most connections the admin listener holds at once (event streams
/// included); more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 128;

/// How long open connections get to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the admin API, `/metrics` and the dashboard on `listener` until
/// `shutdown` completes, then lets open connections finish (event streams end
/// at once) for up to five seconds and closes the rest.
///
/// Runs a sampler that records every breaker's state and rates each second
/// (the dashboard's sparklines) and follows each breaker's transitions; the
/// breaker list is re-read every second, so a config reload is picked up.
///
/// Returns an error only when accepting connections fails for good; a bad
/// request or a broken connection only ends that connection.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let hub = events::Hub::start(Arc::clone(&state));
    // Stops the sampler even if this future is dropped before shutdown.
    let hub_guard = events::StopOnDrop(hub.clone());
    let app = Arc::new(routes::App::new(state, hub));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);

    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let result = loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break Ok(()),
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_transient(&e) => {
                    // Out of file descriptors and the like: wait a little
                    // instead of spinning, then keep serving.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => break Err(e),
            },
        };
        if connections.len() >= MAX_CONNECTIONS {
            // Finished ones are reaped first; the rest are open.
            while connections.try_join_next().is_some() {}
            if connections.len() >= MAX_CONNECTIONS {
                drop(stream);
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let activity = Activity::new();
        let counted = Arc::clone(&activity);
        let service = service_fn(move |req| {
            let app = Arc::clone(&app);
            let flight = counted.begin();
            async move {
                let response = app.handle(req, peer).await;
                Ok::<_, std::convert::Infallible>(response.map(|b| Tracked::new(b, flight, None)))
            }
        });
        let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
        let conn = builder.serve_connection(io, service);
        let conn = graceful.watch(conn.into_owned());
        let deadlines = Deadlines {
            header: HEADER_READ_TIMEOUT,
            idle: IDLE_TIMEOUT,
        };
        connections.spawn(async move {
            // A client that sends garbage or goes away only ends its own
            // connection; hyper has already answered what it could. One
            // past a deadline is dropped: closed.
            tokio::select! {
                _ = conn => {}
                () = watchdog(activity, deadlines) => {}
            }
        });
    };

    // Refuse new connections at once; event streams end when the hub stops,
    // so their connections can close.
    drop(listener);
    drop(hub_guard);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    // Whatever is still open after the grace period is cut off.
    connections.shutdown().await;
    result
}

/// Accept errors that concern one connection or a passing shortage, not the
/// listener itself.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut
    ) || matches!(e.raw_os_error(), Some(23 | 24 | 12 | 105)) // ENFILE, EMFILE, ENOMEM, ENOBUFS
}
