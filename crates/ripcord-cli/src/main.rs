//! `ripcord`, the command-line face of the ripcord resilience toolkit.
//!
//! `ripcord demo` shows the proxy's circuit breaker protecting a crowd of
//! callers from a flaky upstream, live, in-process; `ripcord simulate` replays
//! a traffic trace through breaker configurations; `ripcord proxy` and
//! `ripcord check` run and validate the resilience proxy; `ripcord fleet`
//! sees and steers a fleet's breakers through its Redis store.
//!
//! Every subcommand prints its errors on stderr as `error: …`, and exits
//! with one of these codes (documented in `ripcord --help` too):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a failure: a `ripcord drill` SLO was missed, or the command could not start (a port is taken, the store is unreachable for the demo) or a run failed (a file could not be written, `fleet` names an unknown breaker) |
//! | 2 | a usage or configuration error: a bad flag or value (clap's own errors), a configuration or trace file that cannot be read or is refused |
//! | 130 | `ripcord demo` ended early by ctrl-c |

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod demo;
mod logging;
mod proxy;

/// The top-level long help: what ripcord does, how errors look, the exit
/// codes.
const TOP_LONG_ABOUT: &str = "\
Resilience for the calls your service makes: circuit breakers you can watch.

Runs ripcord's resilience proxy in front of any HTTP upstream, validates its
configuration, steers a fleet's breakers through their shared store, replays
traffic traces through breaker configurations, and shows it all in a live
demo. `ripcord help SUBCOMMAND` (or `ripcord SUBCOMMAND --help`) says more
about each.

Errors are printed on stderr as `error: …`.

Exit codes:
  0    success
  1    failure: an SLO of `ripcord drill` was missed, or the command could not start (a listener cannot be bound, the
       demo's store does not answer), or a run failed (an output file cannot
       be written, `fleet` names a breaker the store does not know)
  2    usage or configuration error: a bad flag or value, a configuration or
       trace file that cannot be read or is refused, a fleet store that
       cannot be used
  130  `ripcord demo` interrupted by ctrl-c";

/// The top-level help's examples.
const TOP_EXAMPLES: &str = "\
Examples:
  ripcord demo                               # watch a breaker trip and recover
  ripcord check --config ripcord.toml        # validate a proxy configuration
  ripcord proxy --config ripcord.toml        # run the proxy (SIGHUP reloads)";

/// `ripcord demo --help`'s examples.
const DEMO_EXAMPLES: &str = "\
Examples:
  ripcord demo
  ripcord demo --duration 1m --callers 64 --seed 7
  ripcord demo --store redis://127.0.0.1:6379      # two proxies share the breaker";

/// `ripcord simulate --help`'s examples.
const SIMULATE_EXAMPLES: &str = "\
Examples:
  ripcord simulate traffic.csv --config eager.toml --config patient.toml
  ripcord simulate --scenario \"ok 60s, fail 30s @ 80%, ok 60s\" --json
  ripcord simulate calls.jsonl --plot chart.svg";

/// `ripcord drill --help`'s examples.
const DRILL_EXAMPLES: &str = "\
Examples:
  ripcord drill                                      # in-process: upstream, proxy, traffic
  ripcord drill --schedule \"ok 5s, fail 10s @ 60%, ok 10s\" --slo ok.errors=1% --slo recover=5s
  ripcord drill --target http://127.0.0.1:8080/api --admin http://127.0.0.1:9090 \\
      --route api --token $TOKEN --slo p99=250ms --json --plot drill.svg";

/// `ripcord fleet --help`'s examples.
const FLEET_EXAMPLES: &str = "\
Examples:
  ripcord fleet status --store redis://127.0.0.1:6379
  ripcord fleet open payments --config ripcord.toml --expires 10m
  ripcord fleet reset payments --config ripcord.toml
  ripcord fleet fault set checkout --abort 60% --expires 5m --config ripcord.toml   # a fleet-wide drill";

/// `ripcord proxy --help`'s examples.
const PROXY_EXAMPLES: &str = "\
Examples:
  ripcord proxy                                     # reads ./ripcord.toml
  ripcord proxy --config /etc/ripcord/proxy.toml --drain-deadline 30s
  ripcord proxy --log-format json --log warn,ripcord::access=info   # JSON lines, access log only
  kill -HUP $(pidof ripcord)                        # reload the file";

/// `ripcord check --help`'s examples.
const CHECK_EXAMPLES: &str = "\
Examples:
  ripcord check                                     # checks ./ripcord.toml
  ripcord check --config proxy.toml
  ripcord check --config proxy.toml --json | jq .routes";

/// `ripcord`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "ripcord",
    version,
    propagate_version = true,
    about = "Resilience for the calls your service makes: circuit breakers you can watch",
    long_about = TOP_LONG_ABOUT,
    after_long_help = TOP_EXAMPLES
)]
struct Cli {
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands of `ripcord`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Watch a circuit breaker shield callers from a flaky upstream, live.
    ///
    /// The proxy's circuit breaker shields a crowd of callers from a flaky
    /// upstream that fails, slows down and recovers, live in the terminal and
    /// on the dashboard (all in-process on loopback; `--store` shares the
    /// breaker between two proxies through Redis). Exit 0 at the end, 1 when
    /// it cannot start, 130 when interrupted.
    #[command(after_long_help = DEMO_EXAMPLES)]
    Demo(demo::DemoArgs),
    /// Replay a traffic trace through breaker configurations.
    ///
    /// Replays a traffic trace (CSV, JSON Lines or a synthetic scenario)
    /// through one or more breaker configurations: when each trips and
    /// recovers, what it lets through and what it rejects, as a table, JSON
    /// or a chart. Exit 2 for a bad argument, trace or configuration file, 1
    /// when the chart or trace cannot be written.
    #[command(after_long_help = SIMULATE_EXAMPLES)]
    Simulate(cmd::simulate::SimulateArgs),
    /// See and steer a fleet's breakers through its Redis store.
    ///
    /// Reads and changes the breakers of a whole fleet through its Redis
    /// store: `status`, `open`, `disable`, `reset`, and fleet-wide drills
    /// (`fault set|clear|list|audit`). Exit 2 when the store
    /// cannot be used or the configuration file is refused, 1 for an unknown
    /// breaker.
    #[command(after_long_help = FLEET_EXAMPLES)]
    Fleet(cmd::fleet::FleetArgs),
    /// Run a chaos drill and judge it against SLOs.
    ///
    /// Sends steady traffic through a proxy route while faults follow a
    /// schedule (aborts, errors, latency, stalls, resets, a store cut),
    /// scraping the proxy's /metrics for its breakers: time to trip, time to
    /// recover, errors and latency per phase, against SLOs. In-process by
    /// default (a healthy upstream and a proxy on loopback); --target,
    /// --admin and --route drill a running proxy. Exit 0 when every SLO
    /// held, 1 when one was missed or the drill could not run, 2 for a bad
    /// argument.
    #[command(after_long_help = DRILL_EXAMPLES)]
    Drill(cmd::drill::DrillArgs),
    /// Run the reverse proxy from a TOML configuration file.
    ///
    /// Runs the reverse proxy: routes, upstreams and a pipeline (timeout,
    /// retry, breaker, bulkhead, rate limit, fallback) per route or upstream,
    /// from a TOML file; SIGHUP reloads it, SIGTERM drains and stops. Exit 0
    /// after a stop, 2 when the file is refused, 1 when it cannot start (a
    /// listener cannot be bound, say).
    #[command(after_long_help = PROXY_EXAMPLES)]
    Proxy(proxy::ProxyArgs),
    /// Validate a proxy configuration file without starting anything.
    ///
    /// Reads and validates a proxy configuration file, binding nothing: a
    /// summary on stdout (exit 0), or every problem with its line, column
    /// and key path on stderr (exit 2). `--json` prints either as one JSON
    /// object on stdout instead, with the same exit codes.
    #[command(after_long_help = CHECK_EXAMPLES)]
    Check(proxy::CheckArgs),
}

/// Raises the file-descriptor soft limit to the hard limit: each client
/// connection the proxy holds takes a descriptor (two with its upstream
/// connection), and the usual soft limit of 1,024 is soon reached. Where it
/// cannot be raised, the proxy lowers its connection cap to fit (and says
/// so at start).
fn raise_fd_limit() {
    #[cfg(unix)]
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(
            target: ripcord_proxy::LOG_TARGET,
            "cannot raise the file-descriptor limit: {e}"
        );
    }
}

/// Prints an error on stderr, each of its lines (a refused configuration
/// has one per problem) as `error: …`.
fn print_error(message: &str) {
    let mut text = String::new();
    for line in message.lines() {
        text.push_str("error: ");
        text.push_str(line);
        text.push('\n');
    }
    eprint!("{text}");
}

/// A tokio runtime (multi-threaded or current-thread); when none can be
/// built, the error is printed and the exit code returned.
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => {
            let runtime = match runtime(true) {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(demo::run(args)) {
                Ok(code) => code,
                Err(e) => {
                    print_error(&format!("{e:#}"));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Simulate(args) => match cmd::simulate::run(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                let code = e.exit_code();
                print_error(&format!("{:#}", anyhow::Error::new(e)));
                ExitCode::from(code)
            }
        },
        Command::Proxy(args) => {
            if let Err(e) = logging::install(args.log.as_deref(), args.log_format) {
                print_error(&e);
                return ExitCode::from(2);
            }
            raise_fd_limit();
            match runtime(true) {
                Ok(runtime) => runtime.block_on(ripcord_proxy::run(args.options())),
                Err(code) => code,
            }
        }
        Command::Check(args) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            if args.json {
                proxy::check_json(&args.config, &mut out)
            } else {
                ripcord_proxy::check(&args.config, &mut out, &mut err)
            }
        }
        Command::Drill(args) => {
            let runtime = match runtime(true) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let mut out = std::io::stdout().lock();
            match runtime.block_on(cmd::drill::run(&args, &mut out)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    let code = e.exit_code();
                    print_error(&e.to_string());
                    ExitCode::from(code)
                }
            }
        }
        Command::Fleet(args) => {
            let runtime = match runtime(false) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let mut out = std::io::stdout().lock();
            match runtime.block_on(cmd::fleet::run(&args, &mut out)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let code = e.exit_code();
                    print_error(&format!("{:#}", anyhow::Error::new(e)));
                    ExitCode::from(code)
                }
            }
        }
    }
}
