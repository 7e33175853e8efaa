//! `ripcord simulate`'s command line: its options, reading the
//! configurations and the trace, and printing or writing the results. The
//! replay engine is the library's [`ripcord_cli::simulate`].

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ripcord::CircuitBreakerConfig;
use ripcord_cli::simulate::{
    chart, parse_config, replay, table, Call, NamedConfig, OutageRule, ReplayError, ReplayOptions,
    Scenario, TraceError, TraceFormat, TraceReader,
};

/// Options of `ripcord simulate`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["trace", "scenario"])))]
pub(crate) struct SimulateArgs {
    /// The trace to replay (CSV with a `time,latency,outcome` header, or JSON
    /// Lines; `-` reads standard input).
    pub(crate) trace: Option<PathBuf>,

    /// The trace's format (default: from the extension, `.jsonl`/`.ndjson` are
    /// JSON Lines, anything else CSV).
    #[arg(long, value_name = "csv|jsonl")]
    pub(crate) format: Option<TraceFormat>,

    /// A synthetic trace instead of a file, e.g.
    /// "ok 60s, fail 30s @ 80%, slow 20s @ 1.5s, ok 60s".
    #[arg(long, conflicts_with = "trace")]
    pub(crate) scenario: Option<Scenario>,

    /// Calls per second of the scenario.
    #[arg(long, default_value_t = 200.0)]
    pub(crate) rps: f64,

    /// Seed of the scenario and of the breakers' jitter.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,

    /// A breaker configuration (TOML: a bare circuit breaker table, or a
    /// pipeline with a circuit_breaker policy); repeat to compare. Default:
    /// the breaker's defaults.
    #[arg(long = "config", value_name = "FILE")]
    pub(crate) configs: Vec<PathBuf>,

    /// Print the results as JSON.
    #[arg(long)]
    pub(crate) json: bool,

    /// Draw the chart to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PathBuf>,

    /// Trailing window over which a trace's failure rate defines an outage
    /// (over 50 % is an outage).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) outage_window: Duration,

    /// Fewest calls in that window to call an outage.
    #[arg(long, default_value_t = 10)]
    pub(crate) outage_min_calls: u32,

    /// Calls at least this slow count as bad when finding outages (default:
    /// the shortest slow-call threshold among the configurations, if any).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) slow: Option<Duration>,

    /// Write the scenario's calls to this CSV file and stop (to replay them
    /// later, or elsewhere).
    #[arg(long, value_name = "FILE.csv", requires = "scenario")]
    pub(crate) write_trace: Option<PathBuf>,
}

/// Why `ripcord simulate` failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SimulateError {
    /// The replay failed (bad trace line or configuration).
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A configuration file could not be read or parsed.
    #[error("configuration {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A trace or configuration file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The chart (`--plot`) or the trace (`--write-trace`) could not be
    /// written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--plot` names a file that is not `.svg`.
    #[error("--plot draws SVG only: give a file name ending in .svg (found {0})")]
    PlotFormat(PathBuf),
    /// `--rps` is not a positive number.
    #[error("--rps must be a positive number of calls per second")]
    Rate,
}

impl SimulateError {
    /// The process exit code for this error: 1 when the run failed (an
    /// output file could not be written, the trace could not be read to its
    /// end), 2 for a bad argument, trace line or configuration file.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            SimulateError::Write { .. }
            | SimulateError::Replay(ReplayError::Trace(TraceError::Io { .. })) => 1,
            SimulateError::Replay(_)
            | SimulateError::Config { .. }
            | SimulateError::Io { .. }
            | SimulateError::PlotFormat(_)
            | SimulateError::Rate => 2,
        }
    }
}

fn load_configs(paths: &[PathBuf]) -> Result<Vec<NamedConfig>, SimulateError> {
    if paths.is_empty() {
        return Ok(vec![NamedConfig {
            name: "default".to_owned(),
            config: CircuitBreakerConfig::default(),
        }]);
    }
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|source| SimulateError::Io {
                path: path.clone(),
                source,
            })?;
            let config = parse_config(&text).map_err(|message| SimulateError::Config {
                path: path.clone(),
                message: message.trim().to_owned(),
            })?;
            let name = path.file_stem().map_or_else(
                || path.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            );
            Ok(NamedConfig { name, config })
        })
        .collect()
}

fn format_of(path: &Path, given: Option<TraceFormat>) -> TraceFormat {
    given.unwrap_or_else(|| match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson") => TraceFormat::Jsonl,
        _ => TraceFormat::Csv,
    })
}

/// Runs `ripcord simulate`: the text to print (a table, or JSON with
/// `--json`); draws the chart when asked.
pub(crate) fn run(args: &SimulateArgs) -> Result<String, SimulateError> {
    if !(args.rps.is_finite() && args.rps > 0.0) {
        return Err(SimulateError::Rate);
    }
    if let Some(plot) = &args.plot {
        let svg = plot
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        if !svg {
            return Err(SimulateError::PlotFormat(plot.clone()));
        }
    }
    let configs = load_configs(&args.configs)?;
    let slow = args.slow.or_else(|| {
        configs
            .iter()
            .filter_map(|c| c.config.slow_calls.map(|s| s.duration))
            .min()
    });
    let report = if let Some(scenario) = &args.scenario {
        if let Some(path) = &args.write_trace {
            write_trace(path, scenario.calls(args.rps, args.seed))?;
            return Ok(format!(
                "wrote the scenario's calls to {}\n",
                path.display()
            ));
        }
        let options = ReplayOptions {
            outages: OutageRule::Known(scenario.outages()),
            seed: args.seed,
        };
        replay(
            scenario.calls(args.rps, args.seed).map(Ok),
            &configs,
            &options,
        )?
    } else {
        let path = args.trace.clone().unwrap_or_else(|| PathBuf::from("-"));
        let options = ReplayOptions {
            outages: OutageRule::Trailing {
                window: args.outage_window,
                min_calls: args.outage_min_calls.max(1),
                slow,
            },
            seed: args.seed,
        };
        let format = format_of(&path, args.format);
        let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(BufReader::with_capacity(1 << 16, std::io::stdin().lock()))
        } else {
            let file = File::open(&path).map_err(|source| SimulateError::Io {
                path: path.clone(),
                source,
            })?;
            Box::new(BufReader::with_capacity(1 << 16, file))
        };
        replay(TraceReader::new(input, format), &configs, &options)?
    };
    if let Some(plot) = &args.plot {
        std::fs::write(plot, chart::render(&report)).map_err(|source| SimulateError::Write {
            path: plot.clone(),
            source,
        })?;
    }
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
        s.push('\n');
        s
    } else {
        table(&report)
    };
    Ok(text)
}

/// Writes calls as a CSV trace.
fn write_trace(path: &Path, calls: impl Iterator<Item = Call>) -> Result<(), SimulateError> {
    let io = |source| SimulateError::Write {
        path: path.to_owned(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    writeln!(out, "time,latency,outcome").map_err(io)?;
    for c in calls {
        let outcome = match c.outcome {
            ripcord::Outcome::Success => "success",
            ripcord::Outcome::Failure => "failure",
            _ => "ignored",
        };
        writeln!(
            out,
            "{}.{:06},{}.{:03},{outcome}",
            c.start / 1_000_000_000,
            c.start % 1_000_000_000 / 1_000,
            c.latency / 1_000_000,
            c.latency % 1_000_000 / 1_000
        )
        .map_err(io)?;
    }
    out.flush().map_err(io)
}
