//! `ripcord`, the command-line face of the ripcord resilience toolkit.
//!
//! `ripcord demo` shows a circuit breaker protecting a crowd of callers from a
//! flaky dependency, live, in-process; `ripcord simulate` replays a traffic
//! trace through breaker configurations. `proxy` and `fleet` come later.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

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
    /// Watch one circuit breaker shield callers from a dependency that fails, slows
    /// down and recovers (in-process: no network, no Redis).
    Demo(demo::DemoArgs),
    /// Replay a traffic trace (CSV, JSON Lines or a synthetic scenario) through
    /// one or more breaker configurations: when each trips and recovers, what
    /// it lets through and what it rejects, as a table, JSON or a chart.
    Simulate(ripcord_cli::simulate::SimulateArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(demo::run(args))
        }
        Command::Simulate(args) => {
            let text = ripcord_cli::simulate::run(&args)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
