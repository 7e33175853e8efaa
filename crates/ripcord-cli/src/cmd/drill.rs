//! `ripcord drill`: a chaos drill against a running proxy, or in-process
//! with no setup (a healthy upstream and a proxy on loopback, like the
//! demo), judged against SLOs with an exit code for CI.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ripcord_cli::drill::{self, parse_schedule, parse_slo, parse_slo_file, DrillError, Target};
use ripcord_proxy::config::ProxyConfig;
use ripcord_proxy::server::{Proxy, RunningProxy};
use ripcord_proxy::upstream::{Behavior, Upstream};
use ripcord_redis::relay::Relay;

/// The schedule of a drill without `--schedule`.
pub(crate) const DEFAULT_SCHEDULE: &str =
    "ok 10s, fail 15s @ 60%, ok 15s, slow 10s @ 1500ms, ok 15s";

/// The in-process route's pipeline without `--pipeline`.
const DEFAULT_PIPELINE: &str = r#"
timeout = "1s"
circuit_breaker = { failure_rate = 0.5, minimum_calls = 20, window = { time = "2s" }, open_for = "2s", half_open_calls = 5 }
"#;

/// Options of `ripcord drill`.
#[derive(Debug, clap::Args)]
pub(crate) struct DrillArgs {
    /// The phases: `KIND DURATION [@ …]`, comma-separated. Kinds: `ok`,
    /// `fail D @ SHARE` (aborts, 503), `error D @ SHARE` (500), `slow D @
    /// LATENCY [@ SHARE]`, `stall D @ SHARE`, `reset D @ SHARE`, `cut D`
    /// (the proxy's store connection cut; in-process with --store).
    #[arg(long, default_value = DEFAULT_SCHEDULE, value_name = "PHASES")]
    schedule: String,
    /// A service-level objective, `[SCOPE.]METRIC=BOUND` (repeatable):
    /// metrics p50, p90, p99, max, errors, trip, recover; a scope (`ok`,
    /// `fail`, …) judges each phase of that kind, none the whole run.
    #[arg(long = "slo", value_name = "SLO")]
    slos: Vec<String>,
    /// A file of SLOs, one per line (`#` comments).
    #[arg(long, value_name = "FILE")]
    slo_file: Option<PathBuf>,
    /// Requests per second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// How long each request may take before it counts as failed.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Seed of the injected faults: the same seed hits the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A URL through a running proxy, on the route to drill (with --admin
    /// and --route); without it, the drill runs in-process.
    #[arg(long, value_name = "URL", requires_all = ["admin", "route"])]
    target: Option<String>,
    /// The running proxy's admin listener, e.g. `http://127.0.0.1:9090`.
    #[arg(long, value_name = "URL")]
    admin: Option<String>,
    /// The route to inject faults on.
    #[arg(long, value_name = "NAME")]
    route: Option<String>,
    /// The admin token (default: the RIPCORD_ADMIN_TOKEN environment variable).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// A breaker to watch (repeatable; default: the route's name, in-process
    /// every breaker).
    #[arg(long = "breaker", value_name = "NAME")]
    breakers: Vec<String>,
    /// In-process: the route's pipeline, from a TOML file (the keys of a
    /// route's `pipeline` table).
    #[arg(long, value_name = "FILE", conflicts_with = "target")]
    pipeline: Option<PathBuf>,
    /// In-process: share the route's breaker through this Redis store
    /// (`redis://host:port[/db]`), behind a relay that `cut` phases
    /// partition; keys under a prefix of the drill's own.
    #[arg(long, value_name = "URL", conflicts_with = "target")]
    store: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the timeline as an SVG chart.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() && d <= Duration::from_secs(3600) => Ok(d),
        Ok(_) => Err("expected a duration above zero and at most an hour".into()),
        Err(e) => Err(format!("{e}; e.g. `2s` or `500ms`")),
    }
}

/// Why `ripcord drill` stopped: a usage error (exit 2) or a failed run
/// (exit 1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// A bad argument, schedule, SLO or file.
    #[error("{0}")]
    Usage(String),
    /// The drill could not run.
    #[error("{0}")]
    Run(String),
}

impl Failure {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Run(_) => 1,
        }
    }
}

/// What the in-process drill runs on; stopped when dropped.
struct InProcess {
    proxy: Option<RunningProxy>,
    _upstream: Upstream,
    /// The relay in front of the store, with `--store`.
    relay: Option<Relay>,
}

/// The `host:port` of a `redis://` URL (user and password, database and
/// query left out).
fn store_address(url: &str) -> Result<String, Failure> {
    let bad = || {
        Failure::Usage(format!(
            "--store `{}` is not a redis:// URL (`redis://[user[:password]@]host[:port][/db]`)",
            crate::cmd::fleet::redact_url(url)
        ))
    };
    let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() {
        return Err(bad());
    }
    Ok(if host.contains(':') && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:6379")
    })
}

/// `url` with its `host:port` replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let user = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    format!("redis://{user}{addr}{tail}")
}

/// A token for the in-process admin listener.
fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("drill-{:x}-{nanos:x}", std::process::id())
}

async fn in_process(args: &DrillArgs) -> Result<(InProcess, Target), Failure> {
    let pipeline = match &args.pipeline {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?,
        None => DEFAULT_PIPELINE.to_string(),
    };
    let pipeline: toml::Table = toml::from_str(&pipeline)
        .map_err(|e| Failure::Usage(format!("the pipeline is not a TOML table: {e}")))?;
    let relay = match &args.store {
        Some(url) => {
            let addr = store_address(url)?;
            let upstream = tokio::net::lookup_host(&addr)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| Failure::Run(format!("cannot resolve the store address {addr}")))?;
            let relay = Relay::start(upstream)
                .map_err(|e| Failure::Run(format!("cannot start the store relay: {e}")))?;
            Some((via(url, relay.addr()), relay))
        }
        None => None,
    };
    let upstream = Upstream::bind(args.seed)
        .await
        .map_err(|e| Failure::Run(format!("cannot start the upstream: {e}")))?;
    upstream.set(Behavior::healthy().latency(Duration::from_millis(2)));
    let token = token();
    let store = match &relay {
        Some((url, _)) => format!("store = \"{url}\"\nstore_prefix = \"ripcord-{token}\"\n"),
        None => String::new(),
    };
    let text = format!(
        r#"{store}
[admin]
listen = "127.0.0.1:0"
token = "{token}"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.app]
addresses = ["{addr}"]

[[routes]]
name = "app"
path_prefix = "/"
upstream = "app"
"#,
        addr = upstream.addr()
    );
    let mut config: toml::Table = toml::from_str(&text).map_err(|e| Failure::Run(e.to_string()))?;
    if let Some(toml::Value::Array(routes)) = config.get_mut("routes") {
        if let Some(toml::Value::Table(route)) = routes.first_mut() {
            route.insert("pipeline".into(), toml::Value::Table(pipeline));
        }
    }
    let text = toml::to_string(&config).map_err(|e| Failure::Run(e.to_string()))?;
    let config = ProxyConfig::parse(&text, "the drill's pipeline")
        .map_err(|e| Failure::Usage(format!("{e}")))?;
    let proxy = Proxy::start(config)
        .await
        .map_err(|e| Failure::Run(format!("cannot start the proxy: {e}")))?;
    let target = Target {
        url: format!("http://{}/drill", proxy.listen_addrs()[0])
            .parse()
            .map_err(|e| Failure::Run(format!("{e}")))?,
        admin: format!("http://{}", proxy.admin_addr())
            .parse()
            .map_err(|e| Failure::Run(format!("{e}")))?,
        token,
        route: "app".into(),
        breakers: args.breakers.clone(),
    };
    Ok((
        InProcess {
            proxy: Some(proxy),
            _upstream: upstream,
            relay: relay.map(|(_, r)| r),
        },
        target,
    ))
}

/// Runs the drill; the report (table or JSON) goes to `out`. `Ok(false)`
/// when an SLO was missed.
pub(crate) async fn run(args: &DrillArgs, out: &mut impl std::io::Write) -> Result<bool, Failure> {
    let schedule = parse_schedule(&args.schedule).map_err(|e| Failure::Usage(e.to_string()))?;
    let mut slos = Vec::new();
    for s in &args.slos {
        slos.push(parse_slo(s).map_err(|e| Failure::Usage(e.to_string()))?);
    }
    if let Some(path) = &args.slo_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
        slos.extend(
            parse_slo_file(&text)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?,
        );
    }
    if args.store.is_none() && schedule.iter().any(|p| p.fault == drill::Fault::Cut) {
        return Err(Failure::Usage(DrillError::NoStoreCut.to_string()));
    }
    let (mut local, target) = match (&args.target, &args.admin, &args.route) {
        (Some(url), Some(admin), Some(route)) => {
            let bad = |what: &str, v: &str, e: http::uri::InvalidUri| {
                Failure::Usage(format!("--{what} `{v}` is not a URL: {e}"))
            };
            let token = args
                .token
                .clone()
                .or_else(|| std::env::var("RIPCORD_ADMIN_TOKEN").ok())
                .unwrap_or_default();
            let breakers = if args.breakers.is_empty() {
                vec![route.clone()]
            } else {
                args.breakers.clone()
            };
            let target = Target {
                url: url.parse().map_err(|e| bad("target", url, e))?,
                admin: admin.parse().map_err(|e| bad("admin", admin, e))?,
                token,
                route: route.clone(),
                breakers,
            };
            (None, target)
        }
        _ => {
            let (local, target) = in_process(args).await?;
            (Some(local), target)
        }
    };
    let options = drill::Options {
        rate: args.rate,
        deadline: args.timeout,
        seed: args.seed,
        slos,
    };
    let quiet = args.quiet;
    // A `cut` phase partitions the proxy from its store: connections open
    // now are cut and new ones hang, until the phase ends.
    let cut: Option<drill::StoreCut> = local.as_ref().and_then(|l| l.relay.clone()).map(|relay| {
        Arc::new(move |on: bool| {
            if on {
                relay.set_dropping(true);
                relay.cut();
            } else {
                relay.heal();
            }
        }) as drill::StoreCut
    });
    let report = drill::run(&target, &schedule, &options, cut, |p| {
        if !quiet {
            eprintln!(
                "[{}/{}] {} ({} left)",
                p.phase + 1,
                p.phases,
                p.text,
                humantime::format_duration(p.lasts)
            );
        }
    })
    .await;
    if let Some(local) = &mut local {
        if let Some(proxy) = local.proxy.take() {
            proxy.shutdown(Duration::from_secs(2)).await;
        }
    }
    let report = report.map_err(|e| match e {
        DrillError::NoStoreCut => Failure::Usage(e.to_string()),
        other => Failure::Run(other.to_string()),
    })?;
    if let Some(path) = &args.plot {
        std::fs::write(path, drill::svg(&report))
            .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
    }
    let text = if args.json {
        let mut j =
            serde_json::to_string_pretty(&report).map_err(|e| Failure::Run(e.to_string()))?;
        j.push('\n');
        j
    } else {
        report.table()
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Failure::Run(format!("cannot write the report: {e}")))?;
    Ok(report.passed)
}
