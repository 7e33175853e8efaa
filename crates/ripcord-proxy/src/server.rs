//! Starting, reloading and stopping the proxy.
//!
//! ```no_run
//! use ripcord_proxy::config::ProxyConfig;
//! use ripcord_proxy::server::Proxy;
//! use std::time::Duration;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ProxyConfig::load("ripcord.toml")?;
//! let proxy = Proxy::start(config).await?;
//! println!("proxy on {:?}, admin on {}", proxy.listen_addrs(), proxy.admin_addr());
//! // … later:
//! let report = proxy.shutdown(Duration::from_secs(30)).await;
//! println!("drained: {}", report.drained);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use ripcord::pipeline::PolicyConfig;
use ripcord::store::Fleet;
use ripcord::{
    Bulkhead, BulkheadConfig, Chaos, ChaosConfig, CircuitBreaker, CircuitBreakerConfig,
    RateLimiter, RateLimiterConfig,
};
use ripcord_metrics::Metrics;
use ripcord_redis::RedisStore;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::access::Access;
use super::busy_poll::BusyPoll;
use super::config::{redact_url, PipelineTable, ProxyConfig};
use super::conn::{Activity, Admission, Deadlines, Permit, Tracked, Watched};
use super::forward::{self, Peer, ProxyBody, Upstream};
use super::policy::{table_policies, Limiter, Made, Owned, RoutePolicies};
use super::route::RouteTable;
use super::state::{AdminAccess, BreakerEntry, FaultEntry, ProxyState};
use super::stream::ClientStream;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An address could not be bound.
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        /// The address.
        addr: String,
        /// Which listener (`listeners[0]`, `admin`).
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be set up.
    #[error("cannot use the store {url}")]
    Store {
        /// The store's URL, without password.
        url: String,
        /// Why.
        #[source]
        source: ripcord_redis::BuildError,
    },
    /// A policy could not be built (the configuration was not validated).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener's TLS settings cannot be used.
    #[cfg(feature = "tls")]
    #[error("`listeners[{index}].tls`: cannot use its certificate")]
    Tls {
        /// Which listener (0-based).
        index: usize,
        /// Why.
        #[source]
        source: Box<super::tls::TlsError>,
    },
    /// A worker thread or its runtime could not be started.
    #[error("cannot start proxy worker {index}")]
    Worker {
        /// Which worker (0-based).
        index: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A policy of the configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("`{path}`: cannot build the policy")]
pub struct BuildError {
    /// The key path of the policy, e.g. `routes[0].pipeline.circuit_breaker`.
    pub path: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// A policy of the new configuration could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener's new certificate, key or client authorities cannot be
    /// used: every listener keeps the ones it has.
    #[cfg(feature = "tls")]
    #[error("`listeners[{index}].tls`: the new certificate cannot be used")]
    Tls {
        /// Which listener (0-based).
        index: usize,
        /// Why.
        #[source]
        source: Box<super::tls::TlsError>,
    },
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Routes now served, in matching order.
    pub routes: Vec<String>,
    /// Breakers kept with their state (same name, same configuration).
    pub kept_breakers: Vec<String>,
    /// Breakers built anew (new name or changed configuration).
    pub new_breakers: Vec<String>,
    /// Breakers gone.
    pub removed_breakers: Vec<String>,
    /// Settings that changed but need a restart (listeners, admin, store,
    /// connection limits); the running values stay.
    pub restart_needed: Vec<String>,
    /// TLS listeners whose certificate, key and client authorities were
    /// read again (`listeners[0]`, …): connections accepted from now on use
    /// them; open ones keep theirs.
    pub certificates_reloaded: Vec<String>,
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every in-flight request finished before the deadline.
    pub drained: bool,
    /// Connections cut at the deadline.
    pub aborted: usize,
}

/// The entry point: [`Proxy::start`].
#[derive(Debug)]
pub struct Proxy;

/// A proxy's routing state, swapped whole on reload.
#[derive(Debug)]
struct Table {
    routes: RouteTable,
    /// Breakers by name, with the configuration they were built from (to
    /// tell an unchanged configuration on reload).
    breakers: Kept<CircuitBreakerConfig, CircuitBreaker>,
    /// Bulkheads by scope (`route:NAME`, `upstream:NAME`), likewise.
    bulkheads: Kept<BulkheadConfig, Bulkhead>,
    /// Rate limiters by scope, likewise.
    limiters: Kept<RateLimiterConfig, Limiter>,
    /// Fault injections by route name, with the route's `fault` table: a
    /// drill started through the admin API survives a reload that leaves
    /// the table as it was.
    faults: Kept<Option<ChaosConfig>, Chaos>,
}

/// The admin's breaker list and the routes' fault injections.
type Entries = (Vec<BreakerEntry>, Vec<FaultEntry>);

/// The policies a reload may keep, by key, with the configuration each was
/// built from.
type Kept<C, T> = HashMap<String, (C, T)>;

/// The policy under `key` in `old` if its configuration is unchanged.
fn keep<C: PartialEq, T: Clone>(old: Option<&Kept<C, T>>, key: &str, config: &C) -> Option<T> {
    old?.get(key)
        .filter(|(c, _)| c == config)
        .map(|(_, p)| p.clone())
}

/// What every worker shares: the routing table in force.
#[derive(Debug)]
struct Shared {
    table: RwLock<Arc<Table>>,
}

/// What the connections of one worker share: the routing table and the
/// worker's own upstream connection pool (its connections run on the
/// worker's thread, next to the client connections that use them).
#[derive(Debug)]
struct WorkerCtx {
    shared: Arc<Shared>,
    client: forward::UpstreamClient,
    /// Set when `limits.busy_poll` is not zero.
    busy: Option<Arc<BusyPoll>>,
    /// The client connections' deadlines.
    deadlines: Deadlines,
    /// How long a forwarded request body may pause.
    body_read_timeout: Duration,
    /// How long a tunnel may carry nothing either way.
    upgrade_idle_timeout: Duration,
}

/// What the requests of one client connection share.
struct ConnCtx {
    worker: Arc<WorkerCtx>,
    peer: Peer,
    /// A tunnel the connection becomes once its HTTP part ends (after a
    /// `101`).
    tunnel: Mutex<Option<super::tunnel::Tunnel>>,
}

impl std::fmt::Debug for ConnCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnCtx")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// What the connections of one listener share: its TLS, if any, and
/// whether it writes access log lines (switched by a reload).
#[derive(Debug, Default)]
struct Front {
    #[cfg(feature = "tls")]
    tls: Option<Arc<super::tls::ServerTls>>,
    access_log: std::sync::atomic::AtomicBool,
}

impl Front {
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// A connection accepted by a listener, on its way to a worker, with its
/// place under the connection caps and its listener's settings.
type Accepted = (std::net::TcpStream, SocketAddr, Permit, Arc<Front>);

/// Descriptors kept for everything but client and upstream connections
/// (listeners, the admin listener's connections, the store, the runtime).
#[cfg(feature = "admin")]
const RESERVED_FDS: u64 = super::admin::MAX_CONNECTIONS as u64 + 64;
#[cfg(not(feature = "admin"))]
const RESERVED_FDS: u64 = 64;

/// `max` client connections, or fewer when the process's file-descriptor
/// limit has no room for them: each may need two descriptors (its own and
/// an upstream connection), beside [`RESERVED_FDS`].
fn connection_room(max: usize) -> usize {
    #[cfg(unix)]
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        let room = soft.saturating_sub(RESERVED_FDS) / 2;
        return max.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1);
    }
    max
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A running proxy: its addresses, its state, reload and shutdown.
#[derive(Debug)]
pub struct RunningProxy {
    listen_addrs: Vec<SocketAddr>,
    #[cfg(feature = "admin")]
    admin_addr: SocketAddr,
    state: Arc<ProxyState>,
    shared: Arc<Shared>,
    config: Mutex<ProxyConfig>,
    metrics: Metrics,
    fleet: Option<Fleet>,
    store: Option<RedisStore>,
    stop: watch::Sender<Option<Duration>>,
    /// The connection caps in force.
    admission: Arc<Admission>,
    /// `limits.max_connections`, or fewer (see [`connection_room`]).
    max_connections: usize,
    /// Each listener's settings, in configuration order (for reload).
    fronts: Vec<Arc<Front>>,
    listeners: Vec<JoinHandle<()>>,
    workers: Vec<oneshot::Receiver<ShutdownReport>>,
    admin: Option<JoinHandle<std::io::Result<()>>>,
}

/// Dropping a running proxy stops it at once (no drain); call
/// [`RunningProxy::shutdown`] to drain.
impl Drop for RunningProxy {
    fn drop(&mut self) {
        if self.stop.borrow().is_none() {
            let _ = self.stop.send(Some(Duration::ZERO));
        }
    }
}

/// What building policies needs.
struct Builder<'a> {
    metrics: &'a Metrics,
    fleet: Option<&'a Fleet>,
    store: Option<&'a RedisStore>,
    old: Option<&'a Table>,
}

/// The policies a table is being built with.
#[derive(Default)]
struct Built {
    breakers: Kept<CircuitBreakerConfig, CircuitBreaker>,
    bulkheads: Kept<BulkheadConfig, Bulkhead>,
    limiters: Kept<RateLimiterConfig, Limiter>,
    faults: Kept<Option<ChaosConfig>, Chaos>,
}

fn build_err(path: String, e: impl std::error::Error + Send + Sync + 'static) -> BuildError {
    BuildError {
        path,
        source: Box::new(e),
    }
}

impl Builder<'_> {
    /// The policies of one pipeline table, in its order: breakers,
    /// bulkheads and rate limiters built (or kept from the running table),
    /// the others as configured.
    fn policies(
        &self,
        name: &str,
        scope: &str,
        path: &str,
        table: Option<&PipelineTable>,
        built: &mut Built,
    ) -> Result<Vec<Owned>, BuildError> {
        table_policies(name, path, table, |c| {
            Ok(Some(match c {
                PolicyConfig::CircuitBreaker(c) => {
                    let reused = keep(self.old.map(|t| &t.breakers), name, c);
                    let breaker = match reused {
                        Some(b) => b,
                        None => {
                            let mut b = CircuitBreaker::builder(name).config(c.clone());
                            if let Some(f) = self.fleet {
                                b = b.fleet(f);
                            }
                            // Exported with its events; its gauges are read
                            // through the live table (see `LiveTable`), so a
                            // breaker dropped by a reload leaves the metrics
                            // too.
                            self.metrics
                                .instrument(b)
                                .build()
                                .map_err(|e| build_err(format!("{path}.circuit_breaker"), e))?
                        }
                    };
                    built
                        .breakers
                        .insert(name.to_string(), (c.clone(), breaker.clone()));
                    Made::Breaker(breaker)
                }
                PolicyConfig::Bulkhead(c) => {
                    let b = match keep(self.old.map(|t| &t.bulkheads), scope, c) {
                        Some(b) => b,
                        None => self
                            .metrics
                            .instrument(Bulkhead::builder(name).config(c.clone()))
                            .build()
                            .map_err(|e| build_err(format!("{path}.bulkhead"), e))?,
                    };
                    built
                        .bulkheads
                        .insert(scope.to_string(), (c.clone(), b.clone()));
                    Made::Bulkhead(b)
                }
                PolicyConfig::RateLimiter(c) => {
                    let reused = keep(self.old.map(|t| &t.limiters), scope, c);
                    let limiter = match (reused, self.store) {
                        (Some(l), _) => l,
                        (None, Some(store)) => Limiter::Shared(
                            ripcord_redis::RedisRateLimiter::builder(store, name)
                                .config(c.clone())
                                .build()
                                .map_err(|e| build_err(format!("{path}.rate_limiter"), e))?,
                        ),
                        (None, None) => Limiter::Local(
                            self.metrics
                                .instrument(RateLimiter::builder(name).config(c.clone()))
                                .build()
                                .map_err(|e| build_err(format!("{path}.rate_limiter"), e))?,
                        ),
                    };
                    built
                        .limiters
                        .insert(scope.to_string(), (c.clone(), limiter.clone()));
                    Made::Limiter(limiter)
                }
                other => {
                    return Err(build_err(
                        format!("{path}.{}", other.kind().as_str()),
                        std::io::Error::other("a policy the proxy does not run"),
                    ))
                }
            }))
        })
    }

    /// The fault injection of route `name`, with its `fault` table (kept
    /// from the running table when the table is unchanged).
    fn fault(
        &self,
        name: &str,
        path: &str,
        config: &Option<ChaosConfig>,
        built: &mut Built,
    ) -> Result<Chaos, BuildError> {
        let chaos = match keep(self.old.map(|t| &t.faults), name, config) {
            Some(c) => c,
            None => {
                let c = config.clone().unwrap_or(ChaosConfig {
                    enabled: false,
                    ..ChaosConfig::default()
                });
                Chaos::builder(name)
                    .config(c)
                    .build()
                    .map_err(|e| build_err(format!("{path}.fault"), e))?
            }
        };
        built
            .faults
            .insert(name.to_string(), (config.clone(), chaos.clone()));
        Ok(chaos)
    }

    /// Builds the routing table, the admin's breaker list and the routes'
    /// fault injections.
    fn table(&self, config: &ProxyConfig) -> Result<(Table, Entries), BuildError> {
        let mut built = Built::default();
        let mut entries = Vec::new();
        let mut upstreams = HashMap::new();
        for (name, u) in &config.upstreams {
            let path = format!("upstreams.{name}");
            let addresses = targets(name, u, &path)?;
            if addresses.is_empty() {
                return Err(build_err(
                    format!("{path}.addresses"),
                    std::io::Error::other("no address"),
                ));
            }
            let policies = self.policies(
                name,
                &format!("upstream:{name}"),
                &format!("{path}.pipeline"),
                u.pipeline.as_ref(),
                &mut built,
            )?;
            entries.extend(breakers_of(&policies, &format!("upstream:{name}")));
            upstreams.insert(
                name.clone(),
                (
                    Arc::new(Upstream::new(
                        name,
                        addresses,
                        u.protocol,
                        u.grpc.codes().unwrap_or_default(),
                    )),
                    policies,
                ),
            );
        }
        let mut routes = Vec::new();
        let mut faults = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            let Some((upstream, up_policies)) = upstreams.get(&r.upstream) else {
                return Err(build_err(
                    format!("{path}.upstream"),
                    std::io::Error::other(format!("no upstream named `{}`", r.upstream)),
                ));
            };
            let policies = self.policies(
                &r.name,
                &format!("route:{}", r.name),
                &format!("{path}.pipeline"),
                r.pipeline.as_ref(),
                &mut built,
            )?;
            entries.extend(breakers_of(&policies, &format!("route:{}", r.name)));
            let fault = self.fault(&r.name, &path, &r.fault, &mut built)?;
            faults.push(FaultEntry {
                route: r.name.clone(),
                chaos: fault.clone(),
            });
            let policies = RoutePolicies::new(
                &r.name,
                Arc::clone(upstream),
                policies,
                up_policies.clone(),
                config.limits.default_timeout,
                fault,
                self.metrics,
            )
            .map_err(|e| build_err(e.path.clone(), e))?;
            routes.push((r.host.clone(), r.prefix().to_string(), Arc::new(policies)));
        }
        Ok((
            Table {
                routes: RouteTable::new(routes),
                breakers: built.breakers,
                bulkheads: built.bulkheads,
                limiters: built.limiters,
                faults: built.faults,
            },
            (entries, faults),
        ))
    }
}

/// The addresses of the upstream `name` (at `path`), with their TLS
/// settings.
fn targets(
    name: &str,
    u: &super::config::UpstreamConfig,
    path: &str,
) -> Result<Vec<Arc<forward::Target>>, BuildError> {
    #[cfg(feature = "tls")]
    let tls = match &u.tls {
        Some(t) => Some((
            t,
            super::tls::client_config(t, &[super::tls::H1_ALPN])
                .map_err(|e| build_err(format!("{path}.tls"), e))?,
            super::tls::client_config(t, &[super::tls::H2_ALPN])
                .map_err(|e| build_err(format!("{path}.tls"), e))?,
        )),
        None => None,
    };
    #[cfg(not(feature = "tls"))]
    if u.tls.is_some() {
        return Err(build_err(
            format!("{path}.tls"),
            std::io::Error::other("this build has no TLS (feature `tls`)"),
        ));
    }
    let _ = name;
    u.addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let addr = a
                .parse::<http::uri::Authority>()
                .map_err(|e| build_err(format!("{path}.addresses[{i}]"), e))?;
            #[cfg(feature = "tls")]
            if let Some((t, h1, h2)) = &tls {
                let server_name = super::tls::server_name(t, addr.host())
                    .map_err(|e| build_err(format!("{path}.addresses[{i}]"), e))?;
                let h1 = super::tls::Connector::new(Arc::clone(h1), server_name.clone());
                let h2 = super::tls::Connector::new(Arc::clone(h2), server_name);
                return Ok(forward::Target::tls(addr, name, h1, h2));
            }
            Ok(forward::Target::plain(addr))
        })
        .collect()
}

/// The admin's entries for the breakers among `policies`.
fn breakers_of<'a>(
    policies: &'a [Owned],
    scope: &'a str,
) -> impl Iterator<Item = BreakerEntry> + 'a {
    policies.iter().filter_map(move |p| match &p.made {
        Made::Breaker(b) => Some(BreakerEntry {
            scope: scope.to_string(),
            breaker: b.clone(),
        }),
        _ => None,
    })
}

/// The metrics' view of the breakers and bulkheads in force: read from
/// the current table at each scrape, so reloads add and remove them.
struct LiveTable(std::sync::Weak<Shared>);

impl ripcord_metrics::Watch for LiveTable {
    fn for_each_breaker(&self, f: &mut dyn FnMut(&CircuitBreaker)) {
        if let Some(shared) = self.0.upgrade() {
            for (_, b) in shared.table().breakers.values() {
                f(b);
            }
        }
    }

    fn for_each_bulkhead(&self, f: &mut dyn FnMut(&Bulkhead)) {
        if let Some(shared) = self.0.upgrade() {
            for (_, b) in shared.table().bulkheads.values() {
                f(b);
            }
        }
    }
}

impl Proxy {
    /// Binds every listener and the admin listener (port 0 picks free
    /// ports), connects the store if the configuration names one, builds
    /// every policy and starts serving. Give it a validated configuration
    /// ([`ProxyConfig::load`] or [`ProxyConfig::parse`]).
    pub async fn start(config: ProxyConfig) -> Result<RunningProxy, StartError> {
        let metrics = Metrics::new();
        let (store, fleet) = match &config.store {
            Some(url) => {
                let prefix = config.store_prefix.as_deref().unwrap_or("ripcord");
                // Lazily: a proxy whose store is down still starts, and its
                // breakers decide alone until the store answers.
                let store = RedisStore::builder(url)
                    .key_prefix(prefix)
                    .connect_lazily()
                    .build()
                    .await
                    .map_err(|source| StartError::Store {
                        url: redact_url(url),
                        source,
                    })?;
                let fleet = metrics
                    .fleet(Fleet::builder(store.clone()))
                    .build()
                    .map_err(|e| build_err("store".into(), e))?;
                (Some(store), Some(fleet))
            }
            None => (None, None),
        };
        let builder = Builder {
            metrics: &metrics,
            fleet: fleet.as_ref(),
            store: store.as_ref(),
            old: None,
        };
        let (table, (entries, faults)) = builder.table(&config)?;
        if let Some(f) = &fleet {
            f.sync_now().await;
        }

        let fronts = fronts(&config)?;
        let mut bound = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let listener =
                TcpListener::bind(&l.listen)
                    .await
                    .map_err(|source| StartError::Bind {
                        addr: l.listen.clone(),
                        what: format!("listeners[{i}]"),
                        source,
                    })?;
            bound.push(listener);
        }
        #[cfg(feature = "admin")]
        let admin_listener = TcpListener::bind(&config.admin.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.admin.listen.clone(),
                what: "admin".into(),
                source,
            })?;
        #[cfg(feature = "admin")]
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.admin.listen.clone(),
                what: "admin".into(),
                source,
            })?;

        let limits = &config.limits;
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(table)),
        });
        metrics.watch(LiveTable(Arc::downgrade(&shared)));
        let access = AdminAccess {
            allowed_hosts: config
                .admin
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            max_streams_per_peer: config.admin.max_streams_per_peer,
        };
        let state = Arc::new(
            ProxyState::new(
                entries,
                fleet.clone(),
                metrics.clone(),
                config.admin_token(),
            )
            .with_access(access),
        );
        state.replace_faults(faults);

        let (stop, _) = watch::channel(None::<Duration>);
        if let Some(store) = &store {
            tokio::spawn(fleet_faults(
                store.clone(),
                Arc::clone(&state),
                stop.subscribe(),
            ));
        }
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size(limits.max_header_bytes)
            .header_read_timeout(limits.header_read_timeout);
        server
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));

        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for index in 0..config.limits.worker_count() {
            let (conns_tx, conns_rx) = mpsc::unbounded_channel();
            let (done_tx, done_rx) = oneshot::channel();
            let ctx = Arc::new(WorkerCtx {
                shared: Arc::clone(&shared),
                client: forward::UpstreamClient::new(
                    limits.connect_timeout,
                    limits.pool_idle_timeout,
                    limits.pool_max_idle_per_host,
                ),
                busy: BusyPoll::new(limits.busy_poll),
                deadlines: Deadlines {
                    header: limits.header_read_timeout,
                    idle: limits.idle_timeout,
                },
                body_read_timeout: limits.body_read_timeout,
                upgrade_idle_timeout: limits.upgrade_idle_timeout,
            });
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| StartError::Worker { index, source })?;
            let (server, stop) = (server.clone(), stop.subscribe());
            std::thread::Builder::new()
                .name(format!("ripcord-proxy-{index}"))
                .spawn(move || {
                    let report = runtime.block_on(worker_loop(ctx, conns_rx, server, stop));
                    let _ = done_tx.send(report);
                })
                .map_err(|source| StartError::Worker { index, source })?;
            senders.push(conns_tx);
            workers.push(done_rx);
        }
        let senders: Arc<[mpsc::UnboundedSender<Accepted>]> = senders.into();
        let max_connections = connection_room(limits.max_connections);
        let admission = Admission::new(max_connections, limits.max_connections_per_peer);
        let next = Arc::new(AtomicUsize::new(0));
        let mut listen_addrs = Vec::new();
        let mut listeners = Vec::new();
        for (i, listener) in bound.into_iter().enumerate() {
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                addr: config.listeners[i].listen.clone(),
                what: format!("listeners[{i}]"),
                source,
            })?;
            listen_addrs.push(addr);
            listeners.push(tokio::spawn(accept_loop(
                listener,
                Arc::clone(&fronts[i]),
                Arc::clone(&senders),
                Arc::clone(&next),
                Arc::clone(&admission),
                stop.subscribe(),
            )));
        }
        #[cfg(feature = "admin")]
        let admin = {
            let mut admin_stop = stop.subscribe();
            Some(tokio::spawn(super::admin::serve(
                admin_listener,
                Arc::clone(&state),
                async move {
                    let _ = admin_stop.wait_for(Option::is_some).await;
                },
            )))
        };
        #[cfg(not(feature = "admin"))]
        let admin = None;
        Ok(RunningProxy {
            listen_addrs,
            #[cfg(feature = "admin")]
            admin_addr,
            state,
            shared,
            config: Mutex::new(config),
            metrics,
            fleet,
            store,
            stop,
            admission,
            max_connections,
            fronts,
            listeners,
            workers,
            admin,
        })
    }
}

/// How often a proxy with a store reads the fleet's faults.
pub const FLEET_FAULT_POLL: Duration = Duration::from_secs(1);

/// Applies the faults set in the store (`ripcord fleet fault`) to the
/// routes of the same name, every [`FLEET_FAULT_POLL`], until the proxy
/// stops: a fault set (or changed) there starts on the route with the time
/// left as its expiry, so it lapses here too when the store cannot be
/// reached; one cleared there stops here, unless the route's drill was
/// replaced locally (admin API) since. A store that does not answer changes
/// nothing.
async fn fleet_faults(
    store: RedisStore,
    state: Arc<ProxyState>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    // Per route: the fleet's fault this proxy applies.
    let mut applied: HashMap<String, ChaosConfig> = HashMap::new();
    let mut tick = tokio::time::interval(FLEET_FAULT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(Option::is_some) => return,
        }
        let entries = state.faults();
        let names: Vec<&str> = entries.iter().map(|e| e.route.as_str()).collect();
        let Ok(found) = store.faults(&names).await else {
            continue;
        };
        for (entry, fleet) in entries.iter().zip(found) {
            apply_fleet_fault(entry, fleet, &mut applied);
        }
    }
}

/// One route's step of [`fleet_faults`].
fn apply_fleet_fault(
    entry: &FaultEntry,
    fleet: Option<ripcord_redis::FleetFault>,
    applied: &mut HashMap<String, ChaosConfig>,
) {
    match fleet {
        Some(f) => {
            let expiry = f.expires_in.max(Duration::from_millis(1));
            let fresh = applied.get(&entry.route) != Some(&f.config);
            // Set again with a new expiry: the route follows it.
            let moved = entry
                .chaos
                .expires_in()
                .is_none_or(|left| left.abs_diff(expiry) > FLEET_FAULT_POLL * 2);
            if !fresh && !moved {
                return;
            }
            let config = ChaosConfig {
                enabled: true,
                expires_after: Some(expiry),
                ..f.config.clone()
            };
            match entry.chaos.reconfigure(config.clone()) {
                Ok(()) => {
                    if fresh {
                        tracing::info!(target: crate::LOG_TARGET, route = %entry.route, expires_in = ?expiry, "a fleet drill started on the route");
                    }
                    applied.insert(entry.route.clone(), f.config);
                }
                Err(e) => {
                    tracing::warn!(target: crate::LOG_TARGET, route = %entry.route, error = %e, "the fleet's fault for the route is refused");
                }
            }
        }
        None => {
            let Some(was) = applied.remove(&entry.route) else {
                return;
            };
            // Still the fleet's (not replaced by a local drill since).
            let now = entry.chaos.config();
            let same = ChaosConfig {
                enabled: true,
                expires_after: now.expires_after,
                ..was
            } == now;
            if same {
                entry.chaos.disable();
                tracing::info!(target: crate::LOG_TARGET, route = %entry.route, "the fleet drill on the route stopped");
            }
        }
    }
}

/// Each listener's settings: its TLS configuration read from its files.
fn fronts(config: &ProxyConfig) -> Result<Vec<Arc<Front>>, StartError> {
    config
        .listeners
        .iter()
        .enumerate()
        .map(|(index, l)| {
            #[cfg(feature = "tls")]
            if let Some(tls) = &l.tls {
                let tls = super::tls::ServerTls::new(tls).map_err(|source| StartError::Tls {
                    index,
                    source: Box::new(source),
                })?;
                return Ok(Arc::new(Front {
                    tls: Some(tls),
                    access_log: l.access_log.into(),
                }));
            }
            #[cfg(not(feature = "tls"))]
            if l.tls.is_some() {
                return Err(StartError::Build(build_err(
                    format!("listeners[{index}].tls"),
                    std::io::Error::other("this build has no TLS (feature `tls`)"),
                )));
            }
            let front = Front::default();
            front.access_log.store(l.access_log, Ordering::Relaxed);
            Ok(Arc::new(front))
        })
        .collect()
}

/// Accepts connections until told to stop and hands them to the workers
/// in turn; a connection past the caps is closed at once.
async fn accept_loop(
    listener: TcpListener,
    front: Arc<Front>,
    workers: Arc<[mpsc::UnboundedSender<Accepted>]>,
    next: Arc<AtomicUsize>,
    admission: Arc<Admission>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || stop.borrow_and_update().is_some() {
                    return;
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, remote)) = accepted else {
                    // Out of descriptors or a reset before accept: go on.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let Some(permit) = admission.admit(remote.ip()) else {
                    // Past a cap: closed at once.
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let i = next.fetch_add(1, Ordering::Relaxed) % workers.len();
                // A worker that is gone has stopped: the connection closes.
                let _ = workers[i].send((stream, remote, permit, Arc::clone(&front)));
            }
        }
    }
}

/// The longest time between two ticks of a worker's reaper (see
/// [`worker_loop`]).
const TIMER_FLOOR: Duration = Duration::from_millis(500);

/// A worker: serves the connections it is handed on its own thread and
/// single-threaded runtime (no cross-thread wake-ups per request) until told
/// to stop, then drains them up to the deadline it is given.
async fn worker_loop(
    ctx: Arc<WorkerCtx>,
    mut conns: mpsc::UnboundedReceiver<Accepted>,
    server: auto::Builder<TokioExecutor>,
    mut stop: watch::Receiver<Option<Duration>>,
) -> ShutdownReport {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let spinner = ctx.busy.clone().map(|b| tokio::spawn(b.run()));
    let mut open = true;
    // The reaper ticks at least every TIMER_FLOOR: besides closing stale
    // upstream connections, its next tick keeps the runtime's timer driver
    // due to wake up before the deadline of any request timeout longer than
    // that, so arming such a timeout does not have to interrupt the driver
    // (tokio then writes to the runtime's eventfd: a system call per
    // request).
    let mut reap = tokio::time::interval(ctx.client.reap_period().min(TIMER_FLOOR));
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = loop {
        tokio::select! {
            _ = reap.tick() => ctx.client.reap(),
            changed = stop.changed() => {
                if changed.is_err() {
                    break Duration::ZERO;
                }
                let deadline = *stop.borrow_and_update();
                if let Some(d) = deadline {
                    break d;
                }
            }
            accepted = conns.recv(), if open => {
                let Some((stream, remote, permit, front)) = accepted else {
                    // The listeners are gone: wait for the stop signal.
                    open = false;
                    continue;
                };
                let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                    continue;
                };
                let conn = serve(&ctx, &server, graceful.watcher(), stream, remote, front);
                connections.spawn(async move {
                    conn.await;
                    drop(permit);
                });
                // Reap finished connections so the set stays small.
                while connections.try_join_next().is_some() {}
            }
        }
    };
    drop(conns);
    if let Some(spinner) = spinner {
        spinner.abort();
    }
    // HTTP connections close once their requests are answered; tunnels
    // and connections still in their TLS handshake run to the deadline.
    let drained = tokio::time::timeout(deadline, async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    let aborted = connections.len();
    if !drained {
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
    ShutdownReport {
        drained,
        aborted: if drained { 0 } else { aborted },
    }
}

/// One client connection: its TLS handshake if its listener has TLS, its
/// HTTP exchanges within the connection deadlines, then the tunnel a `101`
/// made of it, if any.
fn serve(
    ctx: &Arc<WorkerCtx>,
    server: &auto::Builder<TokioExecutor>,
    graceful: hyper_util::server::graceful::Watcher,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    front: Arc<Front>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let conn_ctx = Arc::new(ConnCtx {
        worker: Arc::clone(ctx),
        peer: Peer::new(remote, front.is_tls()),
        tunnel: Mutex::new(None),
    });
    let activity = Activity::new();
    let counted = Arc::clone(&activity);
    let served = Arc::clone(&conn_ctx);
    let logs = Arc::clone(&front);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let conn_ctx = Arc::clone(&served);
        let flight = counted.begin();
        let mut access = (logs.access_log.load(Ordering::Relaxed) && super::access::enabled())
            .then(|| {
                Box::new(Access::new(
                    req.method(),
                    req.uri().path(),
                    req.version(),
                    remote,
                ))
            });
        async move {
            let busy = conn_ctx.worker.busy.as_deref();
            busy.inspect(|b| b.touch());
            let (response, route) = handle(&conn_ctx, req).await;
            busy.inspect(|b| b.touch());
            if let Some(a) = access.as_mut() {
                a.answered(&response, route);
            }
            Ok::<_, Infallible>(response.map(|b| Tracked::new(b, flight, access)))
        }
    });
    let server = server.clone();
    let deadlines = ctx.deadlines;
    async move {
        let http = async {
            let io = match client_stream(&front, stream).await {
                Some(io) => io,
                None => return,
            };
            let io = TokioIo::new(Watched::new(io, Arc::clone(&activity)));
            let conn = server
                .serve_connection_with_upgrades(io, service)
                .into_owned();
            let _ = graceful.watch(conn).await;
        };
        // Past a deadline the connection is dropped: closed. The TLS
        // handshake counts in the header deadline.
        tokio::select! {
            () = http => {}
            () = super::conn::watchdog(Arc::clone(&activity), deadlines) => {}
        }
        let tunnel = conn_ctx
            .tunnel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tunnel) = tunnel {
            tunnel.await;
        }
    }
}

/// The client's stream: as accepted, or after its TLS handshake (`None`
/// when the handshake fails).
async fn client_stream(front: &Front, stream: tokio::net::TcpStream) -> Option<ClientStream> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &front.tls {
        return tls
            .accept(stream)
            .await
            .ok()
            .map(|s| ClientStream::Tls(Box::new(s)));
    }
    let _ = front;
    Some(ClientStream::Plain(stream))
}

/// Answers one request: the response, and the route that made it (`None`
/// when no route matched).
async fn handle(
    conn: &ConnCtx,
    req: Request<Incoming>,
) -> (Response<ProxyBody>, Option<Arc<RoutePolicies>>) {
    if req.method() == http::Method::CONNECT {
        return (
            forward::proxy_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: this is a reverse proxy\n".to_string(),
            ),
            None,
        );
    }
    let mut req = req;
    let upgrade = super::tunnel::upgrade_of(&mut req);
    let (mut parts, body) = req.into_parts();
    let host = match super::request::prepare(&mut parts) {
        Ok(host) => host,
        Err(e) => {
            return (
                forward::proxy_response(StatusCode::BAD_REQUEST, format!("{e}\n")),
                None,
            );
        }
    };
    let table = conn.worker.shared.table();
    let Some(route) = table.routes.find(host.as_deref(), parts.uri.path()) else {
        let response = forward::proxy_response(
            StatusCode::NOT_FOUND,
            format!(
                "no route matches host `{}` and path `{}`\n",
                host.as_deref().unwrap_or(""),
                parts.uri.path()
            ),
        );
        return (response, None);
    };
    let route = Arc::clone(route);
    drop(table);
    let req = Request::from_parts(parts, body);
    let (protocol, client_side) = match upgrade {
        Some((protocol, client_side)) => (Some(protocol), Some(client_side)),
        None => (None, None),
    };
    let mut response = forward::forward(
        &conn.worker.client,
        &route,
        req,
        &conn.peer,
        conn.worker.body_read_timeout,
        protocol,
    )
    .await;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return (response, Some(route));
    }
    let upstream = response
        .extensions_mut()
        .remove::<super::h1::Switched>()
        .and_then(|s| s.take());
    match (client_side, upstream) {
        (Some(client_side), Some((io, early))) => {
            let tunnel =
                super::tunnel::tunnel(client_side, io, early, conn.worker.upgrade_idle_timeout);
            *conn.tunnel.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
            (response, Some(route))
        }
        _ => (
            forward::proxy_response(
                StatusCode::BAD_GATEWAY,
                "the upstream switched protocols on a request that did not ask for it\n"
                    .to_string(),
            ),
            Some(route),
        ),
    }
}

impl RunningProxy {
    /// The bound address of every listener, in configuration order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The bound address of the admin listener (feature `admin`).
    #[cfg(feature = "admin")]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The most client connections open at once: `limits.max_connections`,
    /// or fewer when the file-descriptor limit has no room for them (each
    /// may need two descriptors, and some are kept for the admin listener
    /// and the rest).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.admission.open()
    }

    /// The state the admin API sees (breakers, fleet link, metrics).
    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    /// The shared store, when the configuration names one.
    pub fn store(&self) -> Option<&RedisStore> {
        self.store.as_ref()
    }

    /// The metrics every policy reports to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The breaker named `name`.
    pub fn breaker(&self, name: &str) -> Option<CircuitBreaker> {
        self.state.breaker(name)
    }

    /// The configuration in force.
    pub fn config(&self) -> ProxyConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps routes, upstreams and pipelines for those of `new`. A breaker
    /// whose name and configuration are unchanged is kept as it is (state,
    /// window, fleet link), and so are unchanged rate limiters (their
    /// permits) and bulkheads (their calls in flight); others are built
    /// anew. Listeners, the admin
    /// listener, the store and connection limits stay as they are (listed in
    /// [`ReloadSummary::restart_needed`] when they differ), except that a
    /// TLS listener kept at the same address with TLS reads its
    /// certificate, key and client authorities again (from the paths `new`
    /// gives): connections accepted from then on use them, open ones keep
    /// theirs. Upstreams' TLS files are read again with the upstreams. On
    /// error (a certificate that cannot be used included) nothing changes.
    pub async fn reload(&self, new: ProxyConfig) -> Result<ReloadSummary, ReloadError> {
        let old_table = self.shared.table();
        let builder = Builder {
            metrics: &self.metrics,
            fleet: self.fleet.as_ref(),
            store: self.store.as_ref(),
            old: Some(&old_table),
        };
        let (table, (entries, faults)) = builder.table(&new)?;
        let mut summary = ReloadSummary {
            routes: table.routes.names().map(str::to_string).collect(),
            ..ReloadSummary::default()
        };
        for e in &entries {
            let name = e.breaker.name().to_string();
            match old_table.breakers.get(&name) {
                Some((_, old)) if old.same_as(&e.breaker) => summary.kept_breakers.push(name),
                _ => summary.new_breakers.push(name),
            }
        }
        let mut removed: Vec<String> = old_table
            .breakers
            .keys()
            .filter(|n| !table.breakers.contains_key(*n))
            .cloned()
            .collect();
        removed.sort();
        summary.removed_breakers = removed;
        // New certificates are read before anything changes: one that
        // cannot be used refuses the whole reload.
        #[cfg(feature = "tls")]
        let certificates = self.read_certificates(&new)?;
        {
            let old = self.config.lock().unwrap_or_else(|e| e.into_inner());
            let listeners = |c: &ProxyConfig| {
                c.listeners
                    .iter()
                    .map(|l| (l.listen.clone(), l.tls.is_some()))
                    .collect::<Vec<_>>()
            };
            if listeners(&old) != listeners(&new) {
                summary.restart_needed.push("listeners".into());
            }
            if old.admin.listen != new.admin.listen
                || old.admin.token != new.admin.token
                || old.admin.token_env != new.admin.token_env
                || old.admin.allowed_hosts != new.admin.allowed_hosts
                || old.admin.max_streams_per_peer != new.admin.max_streams_per_peer
            {
                summary.restart_needed.push("admin".into());
            }
            if old.store != new.store || old.store_prefix != new.store_prefix {
                summary.restart_needed.push("store".into());
            }
            let l = (&old.limits, &new.limits);
            if l.0.max_header_bytes != l.1.max_header_bytes
                || l.0.connect_timeout != l.1.connect_timeout
                || l.0.pool_idle_timeout != l.1.pool_idle_timeout
                || l.0.pool_max_idle_per_host != l.1.pool_max_idle_per_host
                || l.0.header_read_timeout != l.1.header_read_timeout
                || l.0.idle_timeout != l.1.idle_timeout
                || l.0.body_read_timeout != l.1.body_read_timeout
                || l.0.upgrade_idle_timeout != l.1.upgrade_idle_timeout
                || l.0.max_connections != l.1.max_connections
                || l.0.max_connections_per_peer != l.1.max_connections_per_peer
                || l.0.worker_count() != l.1.worker_count()
                || l.0.busy_poll != l.1.busy_poll
            {
                summary.restart_needed.push("limits".into());
            }
        }
        *self.shared.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.state.replace_breakers(entries);
        self.state.replace_faults(faults);
        let mut listeners_now = self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listeners
            .clone();
        // The access log switches on the listeners that stay.
        for ((now, front), new) in listeners_now
            .iter_mut()
            .zip(&self.fronts)
            .zip(&new.listeners)
        {
            if now.listen == new.listen {
                now.access_log = new.access_log;
                front.access_log.store(new.access_log, Ordering::Relaxed);
            }
        }
        #[cfg(feature = "tls")]
        for (index, server_config) in certificates {
            if let Some(tls) = &self.fronts[index].tls {
                tls.replace(server_config);
            }
            listeners_now[index].tls = new.listeners[index].tls.clone();
            summary
                .certificates_reloaded
                .push(format!("listeners[{index}]"));
        }
        if let Some(f) = &self.fleet {
            f.sync_now().await;
        }
        let mut config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let listeners = listeners_now;
        let (admin, store, store_prefix, limits) = (
            config.admin.clone(),
            config.store.clone(),
            config.store_prefix.clone(),
            config.limits.clone(),
        );
        *config = ProxyConfig {
            listeners,
            admin,
            store,
            store_prefix,
            limits: super::config::LimitsConfig {
                default_timeout: new.limits.default_timeout,
                drain_deadline: new.limits.drain_deadline,
                ..limits
            },
            ..new
        };
        Ok(summary)
    }

    /// The TLS configurations of the running TLS listeners that `new`
    /// keeps at the same address with TLS, read from `new`'s files.
    #[cfg(feature = "tls")]
    fn read_certificates(
        &self,
        new: &ProxyConfig,
    ) -> Result<Vec<(usize, Arc<rustls::ServerConfig>)>, ReloadError> {
        let old = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (index, (was, now)) in old.listeners.iter().zip(&new.listeners).enumerate() {
            let (true, Some(tls)) = (was.listen == now.listen && was.tls.is_some(), &now.tls)
            else {
                continue;
            };
            let config = super::tls::server_config(tls).map_err(|source| ReloadError::Tls {
                index,
                source: Box::new(source),
            })?;
            out.push((index, config));
        }
        Ok(out)
    }

    /// Stops accepting connections, lets in-flight requests finish up to
    /// `drain_deadline` (then cuts the connections left), and stops the
    /// admin listener.
    pub async fn shutdown(mut self, drain_deadline: Duration) -> ShutdownReport {
        let _ = self.stop.send(Some(drain_deadline));
        let mut report = ShutdownReport {
            drained: true,
            aborted: 0,
        };
        for l in std::mem::take(&mut self.listeners) {
            let _ = l.await;
        }
        for w in std::mem::take(&mut self.workers) {
            if let Ok(r) = w.await {
                report.drained &= r.drained;
                report.aborted += r.aborted;
            }
        }
        // The admin listener stops at the same signal; a slow event stream
        // does not hold the shutdown up for long.
        if let Some(mut admin) = self.admin.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut admin)
                .await
                .is_err()
            {
                admin.abort();
            }
        }
        report
    }
}
