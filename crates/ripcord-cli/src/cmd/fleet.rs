//! `ripcord fleet`: see and steer the breakers of a whole fleet from a
//! terminal, through the Redis store the fleet shares.
//!
//! - `ripcord fleet status [NAME] --store redis://…` lists every breaker the
//!   store knows (or just `NAME`): fleet-wide state, epoch, live instances,
//!   window figures, open time left and any manual override.
//! - `ripcord fleet open|disable|reset NAME --store redis://…` sets a breaker's
//!   state for every instance at once (a compare-and-set-free override that
//!   every instance applies within one sync interval, or at once by pub/sub).
//!   `--expires 10m` lets an `open` or `disable` lapse back to closed by itself.
//!
//! - `ripcord fleet fault set ROUTE --abort 60% --expires 5m` starts a drill on
//!   a route of every proxy sharing the store (`clear`, `list` and `audit`
//!   too); it lapses by itself.
//!
//! The command talks to the store directly; it never links a breaker of its
//! own, so it leaves no window report behind.

use std::io::Write;
use std::time::Duration;

use ripcord::store::{FleetView, StateStore, StoreError, TransitionRequest};
use ripcord::State;
use ripcord_redis::{BuildError, RedisStore};

use ripcord_proxy::state::Control;

/// Options of `ripcord fleet`.
#[derive(Debug, clap::Args)]
pub(crate) struct FleetArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) action: FleetAction,
}

/// The actions of `ripcord fleet`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FleetAction {
    /// List the fleet's breakers (or just NAME) and their states.
    ///
    /// Every breaker of the fleet (or just NAME): state, epoch, live
    /// instances, window calls and failures, open time left, override expiry.
    Status {
        /// Only this breaker (exit code 1 when the store does not know it).
        name: Option<String>,
        /// Where the fleet keeps its state.
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Force a breaker open on every instance.
    ///
    /// Every call is rejected until a reset (or until `--expires`).
    Open(MutateArgs),
    /// Disable a breaker on every instance.
    ///
    /// Every call passes and nothing is recorded, until a reset (or until
    /// `--expires`).
    Disable(MutateArgs),
    /// Put a breaker back to closed, with an empty window, on every instance.
    Reset(ResetArgs),
    /// Start, list and stop fleet-wide drills: faults on a route of every
    /// proxy sharing the store.
    ///
    /// A fault set here reaches every proxy on the store within a second,
    /// lapses by itself at `--expires`, and is kept in the store's audit.
    #[command(subcommand)]
    Fault(FaultAction),
}

/// The actions of `ripcord fleet fault`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FaultAction {
    /// Inject faults into a route on every proxy, until `--expires`.
    Set(FaultSetArgs),
    /// Stop the fleet's faults on a route.
    Clear {
        /// The route.
        route: String,
        /// Where the fleet keeps its state.
        #[command(flatten)]
        store: StoreArgs,
        /// Who is acting, for the audit (default: `$USER via ripcord fleet`).
        #[arg(long, value_name = "NAME")]
        actor: Option<String>,
    },
    /// List the routes with a fleet fault, and the time each has left.
    List {
        /// Where the fleet keeps its state.
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show who set and cleared which faults, newest first.
    Audit {
        /// Where the fleet keeps its state.
        #[command(flatten)]
        store: StoreArgs,
        /// At most this many entries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `ripcord fleet fault set`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FaultSetArgs {
    /// The route (its name in the proxies' configuration).
    pub(crate) route: String,
    /// Where the fleet keeps its state.
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Share of requests aborted (`60%` or `0.6`), answered `--status`.
    #[arg(long, value_parser = parse_share, value_name = "SHARE")]
    pub(crate) abort: Option<f64>,
    /// The status aborted requests are answered with (default 503).
    #[arg(long, value_name = "CODE")]
    pub(crate) status: Option<u16>,
    /// Share of requests answered 500.
    #[arg(long, value_parser = parse_share, value_name = "SHARE")]
    pub(crate) error: Option<f64>,
    /// Share of requests answered as a reset connection (502).
    #[arg(long, value_parser = parse_share, value_name = "SHARE")]
    pub(crate) reset: Option<f64>,
    /// Share of requests stalled until the route's timeout (504).
    #[arg(long, value_parser = parse_share, value_name = "SHARE")]
    pub(crate) stall: Option<f64>,
    /// A latency injected before the request (e.g. `1500ms`), into
    /// `--latency-share` of them (default all).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) latency: Option<Duration>,
    /// Share of requests delayed by `--latency`.
    #[arg(long, value_parser = parse_share, value_name = "SHARE", requires = "latency")]
    pub(crate) latency_share: Option<f64>,
    /// Seed of the draws (default: each proxy its own).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// How long the drill lasts (1s to 1 day).
    #[arg(long, value_parser = parse_fault_expiry, value_name = "DURATION")]
    pub(crate) expires: Duration,
    /// Who is acting, for the audit (default: `$USER via ripcord fleet`).
    #[arg(long, value_name = "NAME")]
    pub(crate) actor: Option<String>,
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.trim().parse::<f64>(),
    };
    match v {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a share from 0 to 100% (e.g. `60%` or `0.6`)"
        )),
    }
}

fn parse_fault_expiry(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d > ripcord::chaos::MAX_FAULT_DURATION {
        return Err(format!("`{s}` is out of range: from 1s to 1day"));
    }
    Ok(d)
}

impl FaultSetArgs {
    /// The fault table the options describe.
    fn config(&self) -> ripcord::ChaosConfig {
        ripcord::ChaosConfig {
            seed: self.seed,
            abort_rate: self.abort.unwrap_or(0.0),
            abort_status: self.status,
            error_rate: self.error.unwrap_or(0.0),
            reset_rate: self.reset.unwrap_or(0.0),
            stall_rate: self.stall.unwrap_or(0.0),
            latency_rate: match self.latency {
                Some(_) => self.latency_share.unwrap_or(1.0),
                None => 0.0,
            },
            latency: self.latency.map(ripcord::chaos::Latency::fixed),
            ..ripcord::ChaosConfig::default()
        }
    }
}

/// Where the fleet's state lives.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// The fleet's Redis store (`redis://[user[:password]@]host[:port][/db]`).
    #[arg(long, value_name = "URL", required_unless_present = "config")]
    pub(crate) store: Option<String>,
    /// Take the store and its prefix from a `ripcord proxy` configuration file
    /// (its `store` and `store_prefix`); `--store` and `--prefix` override them.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<std::path::PathBuf>,
    /// The key prefix the fleet's breakers use (the `key_prefix` of its store;
    /// default `ripcord`).
    #[arg(long, value_name = "P")]
    pub(crate) prefix: Option<String>,
    /// How long to wait for the store to connect and to answer.
    #[arg(long, default_value = "2s", value_parser = parse_timeout, value_name = "DURATION")]
    pub(crate) timeout: Duration,
}

impl StoreArgs {
    /// The store URL and key prefix: from the options, else from the
    /// configuration file, else the default prefix `ripcord`.
    fn resolve(&self) -> Result<(String, String), FleetError> {
        let config = match &self.config {
            Some(path) => Some((
                path.display().to_string(),
                ripcord_proxy::config::ProxyConfig::load(path).map_err(FleetError::Config)?,
            )),
            None => None,
        };
        let store = match (&self.store, &config) {
            (Some(url), _) => url.clone(),
            (None, Some((file, c))) => c
                .store
                .clone()
                .ok_or_else(|| FleetError::NoStore(file.clone()))?,
            (None, None) => return Err(FleetError::NoStore("the command line".to_string())),
        };
        let prefix = self
            .prefix
            .clone()
            .or_else(|| config.and_then(|(_, c)| c.store_prefix))
            .unwrap_or_else(|| "ripcord".to_string());
        Ok((store, prefix))
    }
}

/// Options of `open` and `disable`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MutateArgs {
    /// The breaker.
    pub(crate) name: String,
    /// Where the fleet keeps its state.
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Lapse back to closed by itself after this long (e.g. `10m`; 1s to 30
    /// days); without it, the override holds until a reset.
    #[arg(long, value_parser = parse_expires, value_name = "DURATION")]
    pub(crate) expires: Option<Duration>,
    /// Who is acting, for the audit event every instance reports (default:
    /// `$USER via ripcord fleet`).
    #[arg(long, value_name = "NAME")]
    pub(crate) actor: Option<String>,
    /// Apply even if the store does not know the breaker yet (instances that
    /// start later begin in this state).
    #[arg(long)]
    pub(crate) create: bool,
    /// How long the breaker's keys live without any report; use the fleet's
    /// own `ttl` (1s to 30 days).
    #[arg(long, default_value = "10m", value_parser = parse_expires, value_name = "DURATION")]
    pub(crate) ttl: Duration,
    /// Print the breaker's new view as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `reset`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ResetArgs {
    /// The breaker.
    pub(crate) name: String,
    /// Where the fleet keeps its state.
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Who is acting, for the audit event every instance reports (default:
    /// `$USER via ripcord fleet`).
    #[arg(long, value_name = "NAME")]
    pub(crate) actor: Option<String>,
    /// How long the breaker's keys live without any report; use the fleet's
    /// own `ttl` (1s to 30 days).
    #[arg(long, default_value = "10m", value_parser = parse_expires, value_name = "DURATION")]
    pub(crate) ttl: Duration,
    /// Print the breaker's new view as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Longest `--expires` and `--ttl`.
const MAX_EXPIRES: Duration = Duration::from_secs(30 * 24 * 3600);

fn parse_expires(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) || d > MAX_EXPIRES {
        return Err(format!("`{s}` is out of range: from 1s to 30days"));
    }
    Ok(d)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(60) {
        return Err(format!("`{s}` is out of range: from 10ms to 60s"));
    }
    Ok(d)
}

/// Why `ripcord fleet` failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    /// The store could not be reached (connection refused, timed out, scripts
    /// not loadable).
    #[error("cannot reach the state store at {url}")]
    Unreachable {
        /// The store's URL, password hidden.
        url: String,
        /// What failed.
        #[source]
        source: BuildError,
    },
    /// The URL or the key prefix is not valid.
    #[error("invalid state store `{url}` (expected redis://[user[:password]@]host[:port][/db] and a prefix without braces or whitespace)")]
    InvalidStore {
        /// The store's URL, password hidden.
        url: String,
        /// What was wrong.
        #[source]
        source: BuildError,
    },
    /// The store answered with an error, or not in time.
    #[error("the state store at {url} failed")]
    Store {
        /// The store's URL, password hidden.
        url: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The configuration file named with `--config` could not be used.
    #[error("cannot take the store from the configuration")]
    Config(#[source] ripcord_proxy::config::ConfigError),
    /// The configuration file names no store.
    #[error("{0} has no `store`: pass --store redis://… or add `store = \"redis://…\"` to it")]
    NoStore(String),
    /// No breaker of that name in the store.
    #[error(
        "no breaker named `{name}` in the store at {url} under prefix `{prefix}` ({known}){hint}"
    )]
    UnknownBreaker {
        /// The name asked for.
        name: String,
        /// The store's URL, password hidden.
        url: String,
        /// The key prefix.
        prefix: String,
        /// The names the store knows, for the message.
        known: String,
        /// What to do instead, for the message.
        hint: &'static str,
    },
    /// The fault asked for is not valid.
    #[error("the fault is refused: {0}")]
    BadFault(String),
    /// Writing the output failed.
    #[error("could not write the output")]
    Output(#[from] std::io::Error),
}

impl FleetError {
    /// The process exit code for this error: 2 when the store cannot be used
    /// at all, 1 otherwise.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            FleetError::Unreachable { .. }
            | FleetError::InvalidStore { .. }
            | FleetError::Store { .. }
            | FleetError::Config(_)
            | FleetError::NoStore(_) => 2,
            FleetError::BadFault(_) => 2,
            FleetError::UnknownBreaker { .. } | FleetError::Output(_) => 1,
        }
    }
}

/// `url` with any password replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// An open connection to the fleet's store.
struct Store {
    store: RedisStore,
    url: String,
    prefix: String,
}

impl Store {
    async fn connect(args: &StoreArgs) -> Result<Store, FleetError> {
        let (store, prefix) = args.resolve()?;
        let url = redact_url(&store);
        let built = RedisStore::builder(&store)
            .key_prefix(&prefix)
            .pubsub(false)
            .connect_timeout(args.timeout)
            .response_timeout(args.timeout)
            .build()
            .await;
        match built {
            Ok(store) => Ok(Store { store, url, prefix }),
            Err(
                source @ (BuildError::InvalidUrl { .. }
                | BuildError::InvalidPrefix(_)
                | BuildError::TlsDisabled { .. }
                | BuildError::InvalidOption { .. }),
            ) => Err(FleetError::InvalidStore { url, source }),
            Err(source) => Err(FleetError::Unreachable { url, source }),
        }
    }

    fn failed(&self, source: StoreError) -> FleetError {
        FleetError::Store {
            url: self.url.clone(),
            source,
        }
    }

    async fn list(&self) -> Result<Vec<FleetView>, FleetError> {
        self.store.list().await.map_err(|e| self.failed(e))
    }

    /// The view of `name`, or the error naming what the store knows.
    async fn find(&self, name: &str, hint: &'static str) -> Result<FleetView, FleetError> {
        let views = self.list().await?;
        if let Some(v) = views.iter().find(|v| v.name == name) {
            return Ok(v.clone());
        }
        let known = if views.is_empty() {
            "it knows no breaker at all".to_string()
        } else {
            let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
            format!("it knows: {}", names.join(", "))
        };
        Err(FleetError::UnknownBreaker {
            name: name.to_string(),
            url: self.url.clone(),
            prefix: self.prefix.clone(),
            known,
            hint,
        })
    }

    async fn set(
        &self,
        name: &str,
        to: State,
        expires_in: Option<Duration>,
        actor: &str,
        ttl: Duration,
    ) -> Result<FleetView, FleetError> {
        let request = TransitionRequest {
            name: name.to_string(),
            from_epoch: None,
            from_state: None,
            quorum: 0,
            to,
            open_for: Duration::ZERO,
            expires_in,
            actor: actor.to_string(),
            reason: format!("manual override to {to}"),
            ttl,
        };
        let result = self
            .store
            .transition(&request)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(result.view)
    }
}

/// The default actor: `$USER via ripcord fleet`.
fn default_actor() -> String {
    match std::env::var("USER") {
        Ok(user) if !user.is_empty() => format!("{user} via ripcord fleet"),
        _ => "ripcord fleet".to_string(),
    }
}

/// A fault in words: `abort 60% (503), latency 1.5s (100%)`.
fn fault_words(c: &ripcord::ChaosConfig) -> String {
    let pct = |r: f64| format!("{}%", (r * 1000.0).round() / 10.0);
    let mut parts = Vec::new();
    if let Some(l) = c.latency.filter(|_| c.latency_rate > 0.0) {
        parts.push(format!("latency {l} ({})", pct(c.latency_rate)));
    }
    if c.abort_rate > 0.0 {
        parts.push(format!(
            "abort {} ({})",
            pct(c.abort_rate),
            c.abort_status.unwrap_or(503)
        ));
    }
    for (r, what) in [
        (c.error_rate, "error"),
        (c.reset_rate, "reset"),
        (c.stall_rate, "stall"),
    ] {
        if r > 0.0 {
            parts.push(format!("{what} {}", pct(r)));
        }
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// Runs `ripcord fleet fault …`.
async fn fault(action: &FaultAction, out: &mut impl Write) -> Result<(), FleetError> {
    match action {
        FaultAction::Set(a) => {
            let config = a.config();
            if !config.injects() {
                return Err(FleetError::BadFault(
                    "no fault given: pass --abort, --error, --reset, --stall or --latency".into(),
                ));
            }
            if let Err((field, message)) = ripcord_proxy::config::check_fault(&config) {
                return Err(FleetError::BadFault(format!("`{field}`: {message}")));
            }
            let store = Store::connect(&a.store).await?;
            let actor = a.actor.clone().unwrap_or_else(default_actor);
            store
                .store
                .set_fault(&a.route, &config, a.expires, &actor)
                .await
                .map_err(|e| match e {
                    ripcord_redis::FaultError::Store(e) => store.failed(e),
                    other => FleetError::BadFault(other.to_string()),
                })?;
            writeln!(
                out,
                "route {}: {} on every proxy for {}",
                a.route,
                fault_words(&config),
                humantime::format_duration(a.expires)
            )?;
        }
        FaultAction::Clear {
            route,
            store,
            actor,
        } => {
            let store = Store::connect(store).await?;
            let actor = actor.clone().unwrap_or_else(default_actor);
            let was = store
                .store
                .clear_fault(route, &actor)
                .await
                .map_err(|e| store.failed(e))?;
            if was {
                writeln!(out, "route {route}: the fleet's fault is cleared")?;
            } else {
                writeln!(out, "route {route}: no fleet fault was set")?;
            }
        }
        FaultAction::List { store, json } => {
            let store = Store::connect(store).await?;
            let faults = store
                .store
                .list_faults()
                .await
                .map_err(|e| store.failed(e))?;
            if *json {
                let rows: Vec<serde_json::Value> = faults
                    .iter()
                    .map(|(route, f)| {
                        serde_json::json!({
                            "route": route,
                            "expires_in_ms": u64::try_from(f.expires_in.as_millis()).unwrap_or(u64::MAX),
                            "fault": f.config,
                        })
                    })
                    .collect();
                writeln!(out, "{:#}", serde_json::Value::Array(rows))?;
            } else if faults.is_empty() {
                writeln!(
                    out,
                    "no fleet fault in the store at {} under prefix `{}`",
                    store.url, store.prefix
                )?;
            } else {
                for (route, f) in &faults {
                    let left = Duration::from_secs(f.expires_in.as_secs());
                    writeln!(
                        out,
                        "{route}: {} ({} left)",
                        fault_words(&f.config),
                        humantime::format_duration(left)
                    )?;
                }
            }
        }
        FaultAction::Audit { store, limit, json } => {
            let store = Store::connect(store).await?;
            let entries = store
                .store
                .fault_audit(*limit)
                .await
                .map_err(|e| store.failed(e))?;
            for e in &entries {
                let at =
                    e.at.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0);
                if *json {
                    let v = serde_json::json!({
                        "at_ms": at,
                        "route": e.scope,
                        "actor": e.actor,
                        "action": e.action.as_str(),
                        "fault": e.config,
                        "ttl_ms": e.ttl.map(|t| t.as_millis() as u64),
                    });
                    writeln!(out, "{v}")?;
                } else {
                    let what = match &e.config {
                        Some(c) => format!(" {}", fault_words(c)),
                        None => String::new(),
                    };
                    writeln!(
                        out,
                        "{} {} {}{} by {}",
                        humantime::format_rfc3339_seconds(e.at),
                        e.action.as_str(),
                        e.scope,
                        what,
                        e.actor
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Runs `ripcord fleet` and writes its output to `out`.
pub(crate) async fn run(args: &FleetArgs, out: &mut impl Write) -> Result<(), FleetError> {
    match &args.action {
        FleetAction::Fault(action) => fault(action, out).await?,
        FleetAction::Status { name, store, json } => {
            let store = Store::connect(store).await?;
            let views = match name {
                Some(name) => vec![store.find(name, "").await?],
                None => store.list().await?,
            };
            if *json {
                let rows: Vec<serde_json::Value> = views.iter().map(view_json).collect();
                let value = match name {
                    Some(_) => rows.into_iter().next().unwrap_or_default(),
                    None => serde_json::Value::Array(rows),
                };
                writeln!(out, "{value:#}")?;
            } else if views.is_empty() {
                writeln!(
                    out,
                    "no breakers in the store at {} under prefix `{}`",
                    store.url, store.prefix
                )?;
            } else {
                write!(out, "{}", table(&views))?;
            }
        }
        FleetAction::Open(a) | FleetAction::Disable(a) => {
            let control = match &args.action {
                FleetAction::Open(_) => Control::ForceOpen,
                _ => Control::Disable,
            };
            let store = Store::connect(&a.store).await?;
            if !a.create {
                store
                    .find(&a.name, "; pass --create to set it anyway")
                    .await?;
            }
            let actor = a.actor.clone().unwrap_or_else(default_actor);
            let view = store
                .set(&a.name, control.target(), a.expires, &actor, a.ttl)
                .await?;
            print_change(out, &view, a.json)?;
        }
        FleetAction::Reset(a) => {
            let store = Store::connect(&a.store).await?;
            store.find(&a.name, "").await?;
            let actor = a.actor.clone().unwrap_or_else(default_actor);
            let view = store
                .set(&a.name, Control::Reset.target(), None, &actor, a.ttl)
                .await?;
            print_change(out, &view, a.json)?;
        }
    }
    Ok(())
}

fn print_change(out: &mut impl Write, view: &FleetView, json: bool) -> Result<(), FleetError> {
    if json {
        writeln!(out, "{:#}", view_json(view))?;
    } else {
        writeln!(
            out,
            "{}: {} fleet-wide (epoch {}), {}",
            view.name,
            view.state,
            view.epoch,
            override_text(view)
        )?;
    }
    Ok(())
}

/// Whether a state is one only a manual override puts a breaker in.
fn is_manual(state: State) -> bool {
    matches!(
        state,
        State::ForcedOpen | State::Disabled | State::MetricsOnly
    )
}

/// How long the view's override holds, in words.
fn override_text(view: &FleetView) -> String {
    match (view.override_expires_in, is_manual(view.state)) {
        (Some(d), _) => format!("lapses to closed in {}", human(d)),
        (None, true) => "until reset".to_string(),
        (None, false) => "no override".to_string(),
    }
}

/// A duration rounded to what a person reads: `4m 59s`, `850ms`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs_f64().round() as u64)).to_string()
    }
}

fn failure_rate(view: &FleetView) -> Option<f64> {
    (view.window.calls > 0).then(|| view.window.failures as f64 / view.window.calls as f64)
}

fn view_json(view: &FleetView) -> serde_json::Value {
    serde_json::json!({
        "name": view.name,
        "state": view.state.as_str(),
        "epoch": view.epoch,
        "instances": view.instances,
        "window": {
            "calls": view.window.calls,
            "failures": view.window.failures,
            "slow": view.window.slow,
        },
        "failure_rate": failure_rate(view),
        "open_remaining_ms": u64::try_from(view.open_remaining.as_millis()).unwrap_or(u64::MAX),
        "override": is_manual(view.state) || view.override_expires_in.is_some(),
        "override_expires_in_ms": view
            .override_expires_in
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// The status table, one row per breaker.
fn table(views: &[FleetView]) -> String {
    let header = [
        "NAME",
        "STATE",
        "EPOCH",
        "INSTANCES",
        "CALLS",
        "FAILURES",
        "FAIL%",
        "OPEN LEFT",
        "OVERRIDE",
    ];
    let rows: Vec<[String; 9]> = views
        .iter()
        .map(|v| {
            [
                v.name.clone(),
                v.state.to_string(),
                v.epoch.to_string(),
                v.instances.to_string(),
                v.window.calls.to_string(),
                v.window.failures.to_string(),
                failure_rate(v).map_or_else(|| "-".to_string(), |r| format!("{:.1}", r * 100.0)),
                if v.open_remaining.is_zero() {
                    "-".to_string()
                } else {
                    human(v.open_remaining)
                },
                match (v.override_expires_in, is_manual(v.state)) {
                    (Some(d), _) => format!("lapses in {}", human(d)),
                    (None, true) => "until reset".to_string(),
                    (None, false) => "-".to_string(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[String]| {
        let mut parts = Vec::with_capacity(cells.len());
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Text columns left-aligned, figures right-aligned.
            if i < 2 || i == 8 {
                parts.push(format!("{cell:<w$}"));
            } else {
                parts.push(format!("{cell:>w$}"));
            }
        }
        text.push_str(parts.join("  ").trim_end());
        text.push('\n');
    };
    line(&header.map(str::to_string));
    for row in &rows {
        line(row);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use ripcord::store::WindowTotals;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact_url("redis://app:secret@cache:6379/0"),
            "redis://app:***@cache:6379/0"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("redis://app@cache"), "redis://app@cache");
    }

    #[test]
    fn the_table_shows_state_window_and_override() {
        let mut open = FleetView::new_closed("payments");
        open.state = State::ForcedOpen;
        open.epoch = 4;
        open.instances = 2;
        open.window = WindowTotals {
            calls: 40,
            failures: 10,
            slow: 0,
        };
        open.override_expires_in = Some(Duration::from_secs(600));
        let text = table(&[open, FleetView::new_closed("search")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(lines[1].contains("forced_open"), "{text}");
        assert!(lines[1].contains("25.0"), "{text}");
        assert!(lines[1].contains("lapses in 10m"), "{text}");
        assert!(lines[2].contains("closed"), "{text}");
    }

    #[test]
    fn durations_out_of_range_are_refused() {
        assert!(parse_expires("10m").is_ok());
        assert!(parse_expires("10ms")
            .unwrap_err()
            .contains("from 1s to 30days"));
        assert!(parse_expires("365days").is_err());
        assert!(parse_timeout("1h")
            .unwrap_err()
            .contains("from 10ms to 60s"));
    }
}
