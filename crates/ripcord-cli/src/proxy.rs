//! The arguments of `ripcord proxy` and `ripcord check`; both run
//! [`ripcord_proxy`].

use std::path::PathBuf;
use std::time::Duration;

/// `ripcord proxy`: run the reverse proxy.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProxyArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "ripcord.toml")]
    pub(crate) config: PathBuf,
    /// How long shutdown waits for in-flight requests (default: the file's
    /// `limits.drain_deadline`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) drain_deadline: Option<Duration>,
}

impl ProxyArgs {
    /// What [`ripcord_proxy::run`] is to run.
    pub(crate) fn into_options(self) -> ripcord_proxy::RunOptions {
        ripcord_proxy::RunOptions {
            config: self.config,
            drain_deadline: self.drain_deadline,
        }
    }
}

/// `ripcord check`: validate a configuration file without starting.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CheckArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "ripcord.toml")]
    pub(crate) config: PathBuf,
}
