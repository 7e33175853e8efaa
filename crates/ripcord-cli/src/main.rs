//! `ripcord`, the command-line face of the ripcord resilience toolkit.
//!
//! Today it has one subcommand, `ripcord demo`, which shows a circuit breaker
//! protecting a crowd of callers from a flaky dependency, live, in-process.
//! `proxy`, `simulate` and `fleet` come later.

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
    }
}
