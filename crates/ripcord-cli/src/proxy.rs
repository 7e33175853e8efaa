//! The arguments of `ripcord proxy` and `ripcord check`; both run
//! [`ripcord_proxy`]. `ripcord check --json` is [`check_json`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::logging::LogFormat;
use ripcord_proxy::config::{ConfigError, PipelineTable, ProxyConfig};
use serde_json::{json, Value};

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
    /// Which events to log, as `RUST_LOG` directives (`info`,
    /// `warn,ripcord::access=info`, `ripcord::proxy=debug`); default:
    /// `RUST_LOG`, else `info`.
    #[arg(long, value_name = "FILTER")]
    pub(crate) log: Option<String>,
    /// How log lines are written on stdout: `text`, or `json` (one object
    /// per line, the event's fields at the top level).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

impl ProxyArgs {
    /// What [`ripcord_proxy::run`] is to run.
    pub(crate) fn options(&self) -> ripcord_proxy::RunOptions {
        ripcord_proxy::RunOptions {
            config: self.config.clone(),
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
    /// Print the result as one JSON object on stdout (`"ok": true` with the
    /// listeners, upstreams, routes, breakers and warnings, or `"ok": false`
    /// with the problems); the exit codes stay the same.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `ripcord check --json`: validates the file at `config` and prints one
/// JSON object on `out`: on success (exit 0)
/// `{"ok": true, "file", "listeners", "admin": {"listen", "token_set"},
/// "upstreams": [{"name", "addresses", "protocol", "grpc_failure_codes",
/// "tls", "policies"}], "routes": [{"name",
/// "host", "prefix", "upstream", "policies"}], "breakers": [{"name",
/// "scope"}], "warnings"}` (policies by kind, in order), on a refused or unreadable file (exit 2)
/// `{"ok": false, "file", "problems": [{"path", "line", "column",
/// "message"}]}` (`line` and `column` are null where unknown; a file that
/// cannot be read has one problem with an empty path).
pub(crate) fn check_json(config: &Path, out: &mut dyn Write) -> ExitCode {
    let file = config.display().to_string();
    let (value, code) = match ProxyConfig::load(config) {
        Ok(c) => (accepted(&file, &c), ExitCode::SUCCESS),
        Err(e) => (refused(&file, &e), ExitCode::from(2)),
    };
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("error: cannot write the result: {e}");
        return ExitCode::FAILURE;
    }
    code
}

/// The kinds of a pipeline's policies, in order (`[]` without a pipeline).
fn policies(p: Option<&PipelineTable>) -> Vec<&'static str> {
    p.map(|p| p.policies.iter().map(|c| c.kind().as_str()).collect())
        .unwrap_or_default()
}

/// The JSON of an accepted configuration.
fn accepted(file: &str, c: &ProxyConfig) -> Value {
    let listeners: Vec<&str> = c.listeners.iter().map(|l| l.listen.as_str()).collect();
    let upstreams: Vec<Value> = c
        .upstreams
        .iter()
        .map(|(name, u)| {
            json!({
                "name": name,
                "addresses": u.addresses,
                "protocol": u.protocol.as_str(),
                "grpc_failure_codes": u.grpc.failure_codes,
                "tls": u.tls.is_some(),
                "policies": policies(u.pipeline.as_ref()),
            })
        })
        .collect();
    let routes: Vec<Value> = c
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "host": r.host,
                "prefix": r.prefix(),
                "upstream": r.upstream,
                "policies": policies(r.pipeline.as_ref()),
            })
        })
        .collect();
    let breakers: Vec<Value> = c
        .breakers()
        .into_iter()
        .map(|(scope, name, _)| json!({ "name": name, "scope": scope }))
        .collect();
    json!({
        "ok": true,
        "file": file,
        "listeners": listeners,
        "admin": {
            "listen": c.admin.listen,
            "token_set": c.admin_token().is_some(),
        },
        "upstreams": upstreams,
        "routes": routes,
        "breakers": breakers,
        "warnings": c.warnings(),
    })
}

/// The JSON of a refused (or unreadable) configuration.
fn refused(file: &str, e: &ConfigError) -> Value {
    let problems: Vec<Value> = match e {
        ConfigError::Read { source, .. } => vec![json!({
            "path": "",
            "line": null,
            "column": null,
            "message": format!("cannot read the configuration file: {source}"),
        })],
        ConfigError::Invalid { problems, .. } => problems
            .iter()
            .map(|p| {
                json!({
                    "path": p.path,
                    "line": p.position.map(|(line, _)| line),
                    "column": p.position.map(|(_, column)| column),
                    "message": p.message,
                })
            })
            .collect(),
    };
    json!({ "ok": false, "file": file, "problems": problems })
}
