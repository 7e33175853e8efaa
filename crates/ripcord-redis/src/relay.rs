//! A loopback TCP relay for fault drills and tests: placed in front of Redis
//! (or any TCP server), it forwards bytes both ways and, when told to at
//! runtime, delays them, drops them, cuts connections or refuses new ones.
//!
//! Clients connect to [`Relay::addr`]; each accepted connection gets its own
//! connection to the upstream address. A [`Relay`] is a cheap handle (clones
//! share one relay), so a test or a drill can steer it while traffic flows.
//!
//! | fault | what clients see |
//! | --- | --- |
//! | [`set_latency`](Relay::set_latency) | every chunk, in either direction, arrives this much later; order is kept and chunks are delayed independently (a queue per direction, so throughput does not fall to one chunk per latency) |
//! | [`set_dropping`](Relay::set_dropping) | connections stay open, nothing gets through either way (read and discarded): a network partition |
//! | [`cut`](Relay::cut) | every connection open now is reset; new ones are accepted as usual |
//! | [`set_refusing`](Relay::set_refusing) | new connections are accepted and closed at once |
//! | [`heal`](Relay::heal) | no latency, not dropping, not refusing |
//!
//! Every task the relay starts ends with it: [`shutdown`](Relay::shutdown)
//! closes the listener and every connection and waits for their tasks;
//! dropping the last handle does the same without waiting (the tasks are
//! aborted and end at their next poll).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ripcord_redis::relay::Relay;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // A tiny echo server to stand in for Redis.
//! let echo = TcpListener::bind("127.0.0.1:0").await?;
//! let upstream = echo.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut s, _)) = echo.accept().await {
//!         tokio::spawn(async move {
//!             let mut buf = [0u8; 1024];
//!             while let Ok(n @ 1..) = s.read(&mut buf).await {
//!                 if s.write_all(&buf[..n]).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!     }
//! });
//!
//! let relay = Relay::start(upstream)?;
//! relay.set_latency(Duration::from_millis(50));
//!
//! let mut client = TcpStream::connect(relay.addr()).await?;
//! let started = Instant::now();
//! client.write_all(b"ping").await?;
//! let mut reply = [0u8; 4];
//! client.read_exact(&mut reply).await?;
//! assert_eq!(&reply, b"ping");
//! assert!(started.elapsed() >= Duration::from_millis(100)); // 50 ms each way
//!
//! relay.cut(); // the client's connection is reset
//! assert!(matches!(client.read(&mut reply).await, Ok(0) | Err(_)));
//!
//! relay.shutdown().await;
//! assert_eq!(relay.connections(), 0);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The most bytes one read takes: the unit a latency applies to.
pub const CHUNK: usize = 16 * 1024;

/// Chunks in flight per direction of one connection (at most
/// `QUEUE * CHUNK` bytes); a full queue stops reading from that side.
const QUEUE: usize = 256;

/// How long a connection to the upstream may take before the client's
/// connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest latency a relay adds (longer settings are cut to it).
pub const MAX_LATENCY: Duration = Duration::from_secs(24 * 3600);

/// The pause after a failed `accept` (e.g. out of file descriptors) before
/// the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// A running relay; clones steer the same one. See the [module docs](self).
#[derive(Clone)]
pub struct Relay {
    handle: Arc<Handle>,
}

/// Owned by the handles only: dropping the last one stops the relay.
struct Handle {
    state: Arc<State>,
    accept: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

/// Shared with every task.
struct State {
    addr: SocketAddr,
    upstream: SocketAddr,
    latency_ns: AtomicU64,
    dropping: AtomicBool,
    refusing: AtomicBool,
    connections: AtomicUsize,
    bytes: AtomicU64,
    /// Bumped by every `cut`: each connection watches it from its start.
    cuts: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

impl State {
    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_ns.load(Ordering::Relaxed))
    }

    fn dropping(&self) -> bool {
        self.dropping.load(Ordering::Relaxed)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.state.stop.send_replace(true);
        // Aborting the accept task drops its set of connection tasks, which
        // aborts them too.
        if let Some(task) = self.accept.get_mut().take() {
            task.abort();
        }
    }
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.handle.state;
        f.debug_struct("Relay")
            .field("addr", &s.addr)
            .field("upstream", &s.upstream)
            .field("latency", &s.latency())
            .field("dropping", &s.dropping())
            .field("refusing", &s.refusing.load(Ordering::Relaxed))
            .field("connections", &self.connections())
            .field("bytes_forwarded", &self.bytes_forwarded())
            .finish()
    }
}

impl Relay {
    /// Starts a relay on `127.0.0.1` (a port the OS picks) to `upstream`.
    ///
    /// Must be called inside a Tokio runtime (an error otherwise), whose
    /// tasks run the relay.
    pub fn start(upstream: SocketAddr) -> io::Result<Relay> {
        Relay::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream)
    }

    /// Starts a relay listening on `listen` (port 0: one the OS picks) to
    /// `upstream`, inside the current Tokio runtime (an error outside one).
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Relay> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("a relay needs a Tokio runtime: {e}")))?;
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(std_listener)?
        };
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            addr,
            upstream,
            latency_ns: AtomicU64::new(0),
            dropping: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            cuts: watch::Sender::new(0),
            stop: watch::Sender::new(false),
        });
        let task = runtime.spawn(accept_loop(listener, state.clone()));
        Ok(Relay {
            handle: Arc::new(Handle {
                state,
                accept: tokio::sync::Mutex::new(Some(task)),
            }),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.handle.state.addr
    }

    /// The address connections are relayed to.
    pub fn upstream(&self) -> SocketAddr {
        self.handle.state.upstream
    }

    /// Delays every chunk read from then on, in either direction, by
    /// `latency` (a chunk read at *t* is written at *t* + `latency`; zero:
    /// forwarded at once; at most [`MAX_LATENCY`], longer is cut to it).
    /// Chunks already on their way keep their delay.
    pub fn set_latency(&self, latency: Duration) {
        let ns = u64::try_from(latency.min(MAX_LATENCY).as_nanos()).unwrap_or(u64::MAX);
        self.handle.state.latency_ns.store(ns, Ordering::Relaxed);
    }

    /// The latency added to every chunk.
    pub fn latency(&self) -> Duration {
        self.handle.state.latency()
    }

    /// Whether to blackhole: connections stay open but every byte read from
    /// either side is discarded (including chunks still delayed).
    pub fn set_dropping(&self, dropping: bool) {
        self.handle
            .state
            .dropping
            .store(dropping, Ordering::Relaxed);
    }

    /// Whether bytes are being discarded.
    pub fn is_dropping(&self) -> bool {
        self.handle.state.dropping()
    }

    /// Whether new connections are accepted and closed at once (connections
    /// already open are kept).
    pub fn set_refusing(&self, refusing: bool) {
        self.handle
            .state
            .refusing
            .store(refusing, Ordering::Relaxed);
    }

    /// Whether new connections are being refused.
    pub fn is_refusing(&self) -> bool {
        self.handle.state.refusing.load(Ordering::Relaxed)
    }

    /// Resets every connection open now, both its client and its upstream
    /// side (a TCP reset: queued bytes are lost). New connections are
    /// accepted as usual.
    pub fn cut(&self) {
        self.handle
            .state
            .cuts
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Back to a plain relay: no latency, not dropping, not refusing.
    pub fn heal(&self) {
        self.set_latency(Duration::ZERO);
        self.set_dropping(false);
        self.set_refusing(false);
    }

    /// Connections being relayed now.
    pub fn connections(&self) -> usize {
        self.handle.state.connections.load(Ordering::Relaxed)
    }

    /// Bytes written to either side so far.
    pub fn bytes_forwarded(&self) -> u64 {
        self.handle.state.bytes.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection and waits until every task
    /// of the relay has ended. Idempotent; the other handles see a relay with
    /// no connections whose address refuses connections.
    pub async fn shutdown(&self) {
        self.handle.state.stop.send_replace(true);
        let mut accept = self.handle.accept.lock().await;
        if let Some(task) = accept.take() {
            // The accept task ends its connections' tasks before it returns.
            let _ = task.await;
        }
    }
}

/// Counts a connection while its task (or the future of a task not yet
/// started) exists.
struct Counted(Arc<State>);

impl Counted {
    fn new(state: &Arc<State>) -> Self {
        state.connections.fetch_add(1, Ordering::Relaxed);
        Counted(state.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut stop = state.stop.subscribe();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    if state.refusing.load(Ordering::Relaxed) {
                        drop(client);
                        continue;
                    }
                    let cuts = state.cuts.subscribe();
                    let counted = Counted::new(&state);
                    conns.spawn(connection(client, cuts, counted));
                }
                Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
            },
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Relays one client until either side closes or fails, or a cut.
async fn connection(mut client: TcpStream, mut cuts: watch::Receiver<u64>, counted: Counted) {
    let state = &*counted.0;
    let upstream = tokio::select! {
        _ = cuts.changed() => None,
        c = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(state.upstream)) => {
            c.ok().and_then(Result::ok)
        }
    };
    let Some(mut upstream) = upstream else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let was_cut = {
        let (client_r, client_w) = client.split();
        let (upstream_r, upstream_w) = upstream.split();
        let pump = async {
            tokio::try_join!(
                direction(client_r, upstream_w, state),
                direction(upstream_r, client_w, state),
            )
        };
        tokio::select! {
            _ = pump => false,
            _ = cuts.changed() => true,
        }
    };
    if was_cut {
        reset(&client);
        reset(&upstream);
    }
}

/// Makes the close of `s` a TCP reset.
fn reset(s: &TcpStream) {
    // A zero linger never blocks the close (only a non-zero one would,
    // which is why tokio deprecates the general setter).
    #[allow(deprecated)]
    let _ = s.set_linger(Some(Duration::ZERO));
}

/// Forwards `from` to `to` through a queue of chunks, each written when its
/// delay is over; at the end of `from`, shuts down the write side of `to`.
async fn direction(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, state: &State) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            if state.dropping() {
                continue;
            }
            let due = Instant::now() + state.latency();
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if state.dropping() {
                continue;
            }
            to.write_all(&chunk).await?;
            state.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        to.shutdown().await
    };
    tokio::try_join!(reader, writer).map(|_| ())
}
