//! `ripcord`, the command-line face of the ripcord resilience toolkit.
//!
//! `ripcord demo` shows the proxy's circuit breaker protecting a crowd of
//! callers from a flaky upstream, live, in-process; `ripcord simulate` replays
//! a traffic trace through breaker configurations; `ripcord proxy` and
//! `ripcord check` run and validate the resilience proxy; `ripcord fleet`
//! sees and steers a fleet's breakers through its Redis store.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod proxy;

/// Resilience for the calls your service makes: circuit breakers you can watch.
#[derive(Debug, Parser)]
#[command(name = "ripcord", version, about, propagate_version = true)]
struct Cli {
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands of `ripcord`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Watch the proxy's circuit breaker shield callers from a flaky upstream that
    /// fails, slows down and recovers, live in the terminal and on the dashboard
    /// (all in-process on loopback; `--store` shares it between two proxies).
    Demo(demo::DemoArgs),
    /// Replay a traffic trace (CSV, JSON Lines or a synthetic scenario) through
    /// one or more breaker configurations: when each trips and recovers, what
    /// it lets through and what it rejects, as a table, JSON or a chart.
    Simulate(ripcord_cli::simulate::SimulateArgs),
    /// See and steer the breakers of a whole fleet through its Redis store:
    /// `status`, `open`, `disable`, `reset`.
    Fleet(ripcord_cli::fleet::FleetArgs),
    /// Run the reverse proxy: routes, upstreams and a pipeline (timeout, retry,
    /// breaker, bulkhead, rate limit, fallback) per route or upstream, from a
    /// TOML file; SIGHUP reloads it, SIGTERM drains and stops.
    Proxy(proxy::ProxyArgs),
    /// Validate a proxy configuration file without starting anything: a
    /// summary (exit 0) or every problem with its key path (exit 2).
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
        eprintln!("ripcord proxy: warning: cannot raise the file-descriptor limit: {e}");
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            match runtime.block_on(demo::run(args)) {
                Ok(code) => Ok(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Simulate(args) => {
            let text = ripcord_cli::simulate::run(&args)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Proxy(args) => {
            raise_fd_limit();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(ripcord_proxy::run(args.into_options())))
        }
        Command::Check(args) => Ok(ripcord_proxy::check(
            &args.config,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )),
        Command::Fleet(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut out = std::io::stdout().lock();
            match runtime.block_on(ripcord_cli::fleet::run(&args, &mut out)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    let code = e.exit_code();
                    eprintln!("error: {:#}", anyhow::Error::new(e));
                    Ok(ExitCode::from(code))
                }
            }
        }
    }
}
