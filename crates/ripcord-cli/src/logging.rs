//! `ripcord proxy`'s logs: a `tracing` subscriber writing one line per
//! event on stdout, as text or JSON, filtered by `RUST_LOG`-style
//! directives.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// `2026-12-04T18:40:03.123456Z  INFO ripcord::proxy: listening on …`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, and the
    /// event's fields (`message` among them) at the top level.
    Json,
}

/// The filter: `directives` if given, else `RUST_LOG` if set, else `info`.
fn filter(directives: Option<&str>) -> Result<EnvFilter, String> {
    let (source, text) = match directives {
        Some(d) => ("--log", d.to_string()),
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => ("RUST_LOG", v),
            _ => return Ok(EnvFilter::new("info")),
        },
    };
    EnvFilter::builder().parse(&text).map_err(|e| {
        format!(
            "{source} `{text}` is not a log filter ({e}); give comma-separated directives \
             such as `info`, `ripcord::access=off` or `warn,ripcord::proxy=debug`"
        )
    })
}

/// Installs the subscriber for the process.
pub(crate) fn install(directives: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = filter(directives)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_with_the_flag_named() {
        let e = filter(Some("ripcord=loud")).unwrap_err();
        assert!(
            e.starts_with("--log `ripcord=loud` is not a log filter"),
            "{e}"
        );
        assert!(filter(Some("warn,ripcord::access=info")).is_ok());
    }
}
