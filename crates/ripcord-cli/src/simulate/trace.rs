//! Reading a traffic trace: one call per line, streamed, in CSV or JSON Lines.
//!
//! # CSV
//!
//! A header line names the columns; `time`, `latency` and `outcome` are
//! required (in any order), other columns are ignored. Fields are separated by
//! commas and are not quoted. Blank lines and lines starting with `#` are
//! skipped.
//!
//! ```csv
//! time,latency,outcome
//! 0.000,42ms,success
//! 0.005,800ms,503
//! 0.010,12,UNAVAILABLE
//! ```
//!
//! - `time`: when the call started, as an offset from the start of the trace
//!   (a bare number is seconds, or give a unit: `1500ms`, `1.5s`, `250us`), or
//!   an RFC 3339 timestamp (`2026-11-24T23:00:00.250Z`; offsets are then taken
//!   from the first line's timestamp). A header named `time_ms` makes bare
//!   numbers milliseconds. Start times must not decrease.
//! - `latency`: how long the call took (a bare number is milliseconds, or give
//!   a unit: `800ms`, `1.5s`). A header named `latency_s` makes bare numbers
//!   seconds.
//! - `outcome`: `success` (or `ok`), `failure` (or `fail`, `error`), `ignored`;
//!   an HTTP status, classified as the proxy classifies it (1xx, 2xx and 3xx
//!   succeed, 429 and 5xx fail, other 4xx — 408 included — are ignored: the
//!   caller's fault, not the dependency's); or a gRPC code name, classified as
//!   the gRPC layer classifies it (`OK` succeeds; `UNAVAILABLE`,
//!   `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN` and `RESOURCE_EXHAUSTED` fail;
//!   the others, such as `NOT_FOUND` or `CANCELLED`, are ignored). Case does
//!   not matter.
//!
//! # JSON Lines
//!
//! One object per line with the same three fields; numbers may be JSON numbers
//! or strings: `{"time": 0.005, "latency": "800ms", "outcome": 503}`.

use std::io::BufRead;

use ripcord::Outcome;
use ripcord_tower::grpc::classify_code;
use ripcord_tower::http::classify_status;

/// One call of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// When it started, in nanoseconds from the start of the trace.
    pub start: u64,
    /// How long it took, in nanoseconds.
    pub latency: u64,
    /// How it went.
    pub outcome: Outcome,
}

/// A trace that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A line did not say what was expected.
    #[error("line {line}, column {column}: expected {expected}, found `{found}`")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// 1-based column (character) where the bad field starts.
        column: usize,
        /// What the field should have been.
        expected: String,
        /// What it was (cut to 40 characters).
        found: String,
    },
    /// Reading the file failed.
    #[error("reading the trace failed at line {line}")]
    Io {
        /// The line being read.
        line: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Which format a trace is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl std::str::FromStr for TraceFormat {
    type Err = String;

    /// `csv` or `jsonl` (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("csv") {
            Ok(TraceFormat::Csv)
        } else if s.eq_ignore_ascii_case("jsonl") {
            Ok(TraceFormat::Jsonl)
        } else {
            Err(format!("unknown trace format `{s}`: use csv or jsonl"))
        }
    }
}

/// How bare numbers in a column are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Millis,
}

impl Unit {
    fn nanos(self) -> f64 {
        match self {
            Unit::Seconds => 1e9,
            Unit::Millis => 1e6,
        }
    }
}

/// Column positions of a CSV trace.
#[derive(Debug, Clone, Copy)]
struct Columns {
    time: usize,
    time_unit: Unit,
    latency: usize,
    latency_unit: Unit,
    outcome: usize,
    count: usize,
}

/// Streams the calls of a trace, one line at a time, reusing one buffer.
#[derive(Debug)]
pub struct TraceReader<R> {
    input: R,
    format: TraceFormat,
    buf: String,
    line: u64,
    columns: Option<Columns>,
    /// The first RFC 3339 timestamp seen, in nanoseconds since the Unix epoch.
    epoch: Option<i128>,
    last_start: u64,
    done: bool,
}

impl<R: BufRead> TraceReader<R> {
    /// A reader of `input` in `format`.
    pub fn new(input: R, format: TraceFormat) -> Self {
        TraceReader {
            input,
            format,
            buf: String::with_capacity(128),
            line: 0,
            columns: None,
            epoch: None,
            last_start: 0,
            done: false,
        }
    }

    /// Reads the next non-blank line into `buf`; false at the end.
    fn next_line(&mut self) -> Result<bool, TraceError> {
        loop {
            self.buf.clear();
            self.line += 1;
            let n = self
                .input
                .read_line(&mut self.buf)
                .map_err(|source| TraceError::Io {
                    line: self.line,
                    source,
                })?;
            if n == 0 {
                return Ok(false);
            }
            let t = self.buf.trim();
            if !t.is_empty() && !t.starts_with('#') {
                return Ok(true);
            }
        }
    }

    fn read_header(&mut self) -> Result<Columns, TraceError> {
        if !self.next_line()? {
            return Err(malformed(
                self.line,
                1,
                "a header line such as `time,latency,outcome`",
                "end of file",
            ));
        }
        let (mut time, mut latency, mut outcome) = (None, None, None);
        let (mut time_unit, mut latency_unit) = (Unit::Seconds, Unit::Millis);
        let mut count = 0;
        for (i, (_, name)) in fields(self.buf.trim_end_matches(['\r', '\n'])).enumerate() {
            count = i + 1;
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "time" | "time_s" | "timestamp" | "start" => time = Some(i),
                "time_ms" => {
                    time = Some(i);
                    time_unit = Unit::Millis;
                }
                "latency" | "latency_ms" | "duration" => latency = Some(i),
                "latency_s" => {
                    latency = Some(i);
                    latency_unit = Unit::Seconds;
                }
                "outcome" | "status" => outcome = Some(i),
                _ => {}
            }
        }
        let missing = |what: &str| {
            malformed(
                self.line,
                1,
                &format!("a header with a `{what}` column (`time,latency,outcome`)"),
                self.buf.trim(),
            )
        };
        Ok(Columns {
            time: time.ok_or_else(|| missing("time"))?,
            time_unit,
            latency: latency.ok_or_else(|| missing("latency"))?,
            latency_unit,
            outcome: outcome.ok_or_else(|| missing("outcome"))?,
            count,
        })
    }

    fn parse_csv(&mut self, cols: Columns) -> Result<Call, TraceError> {
        let buf = std::mem::take(&mut self.buf);
        let result = self.parse_csv_line(cols, &buf);
        self.buf = buf;
        result
    }

    fn parse_csv_line(&mut self, cols: Columns, buf: &str) -> Result<Call, TraceError> {
        let line = self.line;
        let text = buf.trim_end_matches(['\r', '\n']);
        let (mut time, mut latency, mut outcome) = (None, None, None);
        let mut n = 0;
        for (i, field) in fields(text).enumerate() {
            n = i + 1;
            if i == cols.time {
                time = Some(field);
            } else if i == cols.latency {
                latency = Some(field);
            } else if i == cols.outcome {
                outcome = Some(field);
            }
        }
        let (Some(time), Some(latency), Some(outcome)) = (time, latency, outcome) else {
            let column = text.chars().count() + 1;
            return Err(malformed(
                line,
                column,
                &format!("{} comma-separated fields", cols.count),
                &format!("{n} fields"),
            ));
        };
        let start = self.start_of(line, time.0, time.1, cols.time_unit)?;
        let latency = parse_latency(line, latency.0, latency.1, cols.latency_unit)?;
        let outcome = parse_outcome(outcome.1.trim())
            .ok_or_else(|| malformed(line, outcome.0, OUTCOME_EXPECTED, outcome.1.trim()))?;
        Ok(Call {
            start,
            latency,
            outcome,
        })
    }

    fn parse_json(&mut self) -> Result<Call, TraceError> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Field<'a> {
            Number(f64),
            #[serde(borrow)]
            Text(std::borrow::Cow<'a, str>),
        }
        #[derive(serde::Deserialize)]
        struct Line<'a> {
            #[serde(borrow)]
            time: Field<'a>,
            #[serde(borrow)]
            latency: Field<'a>,
            #[serde(borrow)]
            outcome: Field<'a>,
        }
        let line = self.line;
        let text = std::mem::take(&mut self.buf);
        let result = (|| {
            let parsed: Line<'_> = serde_json::from_str(text.trim()).map_err(|e| {
                let expected = format!(
                    "a JSON object with `time`, `latency` and `outcome` ({})",
                    strip_position(&e.to_string())
                );
                // serde_json counts bytes of the trimmed text from 1.
                let lead = text.len() - text.trim_start().len();
                let at = lead + e.column().saturating_sub(1);
                malformed(line, char_column(&text, at), &expected, text.trim())
            })?;
            let column = |name: &str| {
                text.find(&format!("\"{name}\""))
                    .map_or(1, |i| char_column(&text, i))
            };
            let start = match &parsed.time {
                Field::Number(v) => self.offset(line, column("time"), *v, Unit::Seconds)?,
                Field::Text(s) => self.start_of(line, column("time"), s, Unit::Seconds)?,
            };
            let latency = match &parsed.latency {
                Field::Number(v) => number_nanos(*v, Unit::Millis).ok_or_else(|| {
                    malformed(line, column("latency"), LATENCY_EXPECTED, &v.to_string())
                })?,
                Field::Text(s) => parse_latency(line, column("latency"), s, Unit::Millis)?,
            };
            let outcome = match &parsed.outcome {
                Field::Number(v) => parse_outcome(&v.to_string()),
                Field::Text(s) => parse_outcome(s.trim()),
            }
            .ok_or_else(|| {
                let found = match &parsed.outcome {
                    Field::Number(v) => v.to_string(),
                    Field::Text(s) => s.to_string(),
                };
                malformed(line, column("outcome"), OUTCOME_EXPECTED, &found)
            })?;
            Ok(Call {
                start,
                latency,
                outcome,
            })
        })();
        self.buf = text;
        result
    }

    /// The start offset of a call from its `time` field.
    fn start_of(
        &mut self,
        line: u64,
        column: usize,
        field: &str,
        unit: Unit,
    ) -> Result<u64, TraceError> {
        let s = field.trim();
        if looks_like_timestamp(s) {
            let at = parse_rfc3339(s).ok_or_else(|| {
                malformed(
                    line,
                    column,
                    "an RFC 3339 timestamp such as `2026-11-24T23:00:00.250Z`",
                    s,
                )
            })?;
            let epoch = *self.epoch.get_or_insert(at);
            let offset = at - epoch;
            if offset < 0 {
                return Err(malformed(
                    line,
                    column,
                    "a time no earlier than the previous line's",
                    s,
                ));
            }
            return self.check_order(line, column, s, offset as u64);
        }
        let nanos = parse_duration_nanos(s, unit).ok_or_else(|| {
            malformed(
                line,
                column,
                "a start time: an offset such as `1.5`, `1500ms` or an RFC 3339 timestamp",
                s,
            )
        })?;
        self.check_order(line, column, s, nanos)
    }

    fn offset(&mut self, line: u64, column: usize, v: f64, unit: Unit) -> Result<u64, TraceError> {
        let nanos = number_nanos(v, unit).ok_or_else(|| {
            malformed(
                line,
                column,
                "a start offset of zero or more",
                &v.to_string(),
            )
        })?;
        self.check_order(line, column, &v.to_string(), nanos)
    }

    fn check_order(
        &mut self,
        line: u64,
        column: usize,
        found: &str,
        start: u64,
    ) -> Result<u64, TraceError> {
        if start < self.last_start {
            return Err(malformed(
                line,
                column,
                "a time no earlier than the previous line's (traces are sorted by start time)",
                found,
            ));
        }
        self.last_start = start;
        Ok(start)
    }
}

impl<R: BufRead> Iterator for TraceReader<R> {
    type Item = Result<Call, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = (|| {
            if self.format == TraceFormat::Csv && self.columns.is_none() {
                self.columns = Some(self.read_header()?);
            }
            if !self.next_line()? {
                return Ok(None);
            }
            match (self.format, self.columns) {
                (TraceFormat::Csv, Some(cols)) => self.parse_csv(cols).map(Some),
                _ => self.parse_json().map(Some),
            }
        })();
        match result {
            Ok(Some(call)) => Some(Ok(call)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

const OUTCOME_EXPECTED: &str =
    "an outcome: success, failure, ignored, an HTTP status (200, 503) or a gRPC code (OK, UNAVAILABLE)";
const LATENCY_EXPECTED: &str = "a latency such as `42`, `42ms` or `1.5s`";

fn malformed(line: u64, column: usize, expected: &str, found: &str) -> TraceError {
    let found: String = if found.chars().count() > 40 {
        found.chars().take(40).chain("…".chars()).collect()
    } else {
        found.to_owned()
    };
    TraceError::Malformed {
        line,
        column,
        expected: expected.to_owned(),
        found,
    }
}

/// The 1-based character column of byte offset `at` of `line` (offsets
/// past the end, or inside a character, count to the character before).
fn char_column(line: &str, at: usize) -> usize {
    let mut at = at.min(line.len());
    while !line.is_char_boundary(at) {
        at -= 1;
    }
    line[..at].chars().count() + 1
}

/// serde_json's messages end in " at line L column C"; we give our own.
fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// The fields of a CSV line with their 1-based starting columns (characters).
fn fields(line: &str) -> impl Iterator<Item = (usize, &str)> {
    let ascii = line.is_ascii();
    let mut offset = 0;
    line.split(',').map(move |f| {
        let col = if ascii {
            offset + 1
        } else {
            line[..offset].chars().count() + 1
        };
        offset += f.len() + 1;
        (col, f)
    })
}

fn parse_latency(line: u64, column: usize, field: &str, unit: Unit) -> Result<u64, TraceError> {
    let s = field.trim();
    parse_duration_nanos(s, unit).ok_or_else(|| malformed(line, column, LATENCY_EXPECTED, s))
}

fn number_nanos(v: f64, unit: Unit) -> Option<u64> {
    let n = v * unit.nanos();
    (v.is_finite() && v >= 0.0 && n < u64::MAX as f64).then(|| n.round() as u64)
}

/// `12`, `12.5` (in `unit`), or with a unit: `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
pub(crate) fn parse_duration_nanos(s: &str, unit: Unit) -> Option<u64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') && num.len() == 1 {
        return None;
    }
    let v: f64 = if let Ok(i) = num.parse::<u64>() {
        i as f64
    } else {
        num.parse().ok()?
    };
    let scale = match suffix.trim() {
        "" => unit.nanos(),
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        _ => return None,
    };
    let n = v * scale;
    (n.is_finite() && n < u64::MAX as f64).then(|| n.round() as u64)
}

/// How a trace's outcome field classifies the call. Statuses and gRPC codes
/// are classified by the same functions the proxy and the tower layers use
/// ([`classify_status`], [`classify_code`]), so a replay counts a call as the
/// live breaker would.
pub fn parse_outcome(s: &str) -> Option<Outcome> {
    if let Ok(code) = s.parse::<u16>() {
        return match code {
            100..=599 => http::StatusCode::from_u16(code).ok().map(classify_status),
            _ => None,
        };
    }
    let lower = s.to_ascii_lowercase();
    Some(match lower.as_str() {
        "success" | "ok" | "succeeded" => Outcome::Success,
        "failure" | "fail" | "failed" | "error" => Outcome::Failure,
        "ignored" | "ignore" => Outcome::Ignored,
        name => classify_code(grpc_code(name)?),
    })
}

/// The number of a gRPC status code name (lower case).
fn grpc_code(name: &str) -> Option<i32> {
    const NAMES: [&str; 17] = [
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    ];
    match name {
        "canceled" => Some(1),
        _ => NAMES.iter().position(|n| *n == name).map(|i| i as i32),
    }
}

fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-'
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → nanoseconds since the Unix epoch.
fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_nanos: i128 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut scale = 100_000_000i128;
        for d in digits.bytes().take(9) {
            frac_nanos += i128::from(d - b'0') * scale;
            scale /= 10;
        }
    }
    let offset_secs: i64 = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && (tz.starts_with('+') || tz.starts_with('-'))
            && tz.as_bytes()[3] == b':' =>
        {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + frac_nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-24T23:00:00.250+01:00"),
            Some((1_795_561_200 - 3600) as i128 * 1_000_000_000 + 250_000_000)
        );
        assert_eq!(parse_rfc3339("2026-13-24T23:00:00Z"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration_nanos("800ms", Unit::Millis),
            Some(800_000_000)
        );
        assert_eq!(
            parse_duration_nanos("1.5", Unit::Seconds),
            Some(1_500_000_000)
        );
        assert_eq!(parse_duration_nanos("12", Unit::Millis), Some(12_000_000));
        assert_eq!(parse_duration_nanos("x", Unit::Millis), None);
        assert_eq!(parse_duration_nanos("-1", Unit::Millis), None);
    }

    #[test]
    fn json_error_columns_count_characters() {
        let column = |text: &str| {
            let mut reader = TraceReader::new(text.as_bytes(), TraceFormat::Jsonl);
            match reader.next() {
                Some(Err(TraceError::Malformed { column, .. })) => column,
                other => panic!("expected an error, got {other:?}"),
            }
        };
        // A field after multi-byte characters (found by the trace_jsonl fuzz target).
        let line = r#"{"time":0,"latency":1,"x":"€€€€€€€€€€","outcome":"zz"}"#;
        assert_eq!(column(line), line.find("\"outcome\"").unwrap() - 20 + 1);
        // A syntax error after leading blanks and multi-byte characters.
        assert_eq!(column("  {\"x\":\"€€\" ?"), 13);
    }

    #[test]
    fn outcomes() {
        assert_eq!(parse_outcome("503"), Some(Outcome::Failure));
        assert_eq!(parse_outcome("404"), Some(Outcome::Ignored));
        assert_eq!(parse_outcome("UNAVAILABLE"), Some(Outcome::Failure));
        assert_eq!(parse_outcome("Ok"), Some(Outcome::Success));
        assert_eq!(parse_outcome("maybe"), None);
    }
}
